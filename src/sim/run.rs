//! `wavecp solve`: a [`Simulation`] and its observers from a job, run to the end (or to a stop
//! signal), and what the run reports.

use super::checkpoint::{checkpoint_exists_on, restore};
use super::distribute::distribute;
use super::observers::{Checkpoints, Crash, Io, Output, ShowProgress};
use super::setup::{time_step, DriverError};
use super::{Control, Observer, Simulation};
use crate::comm::{Comm, Serial};
use crate::config::Config;
use crate::partition::LocalPart;
use crate::progress::Progress;
use crate::solver::{Problem, WaveSolver};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a run reports (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub nodes: usize,
    pub cells: usize,
    /// MPI ranks (1 for a serial run).
    pub ranks: usize,
    /// Steps of the whole run, and how many this invocation ran (fewer after a restart or a stop).
    pub steps: usize,
    pub steps_run: usize,
    pub dt: f64,
    pub dt_limit: f64,
    pub end_time: f64,
    pub wall_s: f64,
    /// Time in the time-stepping kernel (rank 0), including the halo exchange.
    pub compute_s: f64,
    /// Part of `compute_s` spent waiting for neighbours after the overlapped work (rank 0).
    pub exchange_wait_s: f64,
    pub output_s: f64,
    pub dof_updates_per_s: f64,
    /// Node values sent between ranks per step, all ranks together.
    pub halo_values_per_step: usize,
    /// Cells held as ghosts, all ranks together.
    pub ghost_cells: usize,
    pub initial_energy: f64,
    pub final_energy: f64,
    pub output_steps: usize,
    pub checkpoints: usize,
    pub restarted: bool,
    /// Stopped early by SIGTERM/SIGUSR1 (after writing a checkpoint when one is configured).
    pub interrupted: bool,
    pub output: Option<PathBuf>,
    pub xdmf: Option<PathBuf>,
    pub receivers: usize,
}

/// Options that are not part of the job.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// Test hook: abort the process (no clean-up, as a crash would) after this many output steps.
    pub abort_after_outputs: Option<usize>,
    /// Continue from the job's checkpoint when there is one.
    pub restart: bool,
    /// Checkpoint and stop on SIGTERM / SIGUSR1 (installs signal handlers).
    pub signals: bool,
    /// Test hook: behave as if a stop signal arrived after this step.
    pub stop_after_steps: Option<usize>,
    /// Test hook: `(rank, step)`: that rank exits at once after that step, as a crash would.
    pub fail_rank_at: Option<(usize, usize)>,
    /// Test hook: SIGKILL the process after this step (after its output and checkpoint).
    pub kill_at_step: Option<usize>,
    /// Test hook: after this many output steps, create `RUNNING.paused` beside the running
    /// output file and wait until it is removed (a reader looks at the file meanwhile).
    pub pause_after_outputs: Option<usize>,
    /// The job file, so no output or checkpoint path may name it.
    pub job_file: Option<PathBuf>,
    /// Point fields and values written beside `u` at each output step (a coupled run's); the
    /// run's [`Coupled::extras`] gives them.
    pub extras: crate::output::StepExtras,
    /// A coupled run also runs the FE-only simulation beside it and writes the difference.
    pub reference: bool,
}

/// Runs a job to the end on one rank; writes output when `output.path` is not empty.
pub fn run(cfg: &Config, base: &Path, opts: &RunOptions) -> Result<RunSummary, DriverError> {
    run_on(cfg, base, opts, &Serial)
}

/// Runs a job over the ranks of `comm` (collective). Rank 0 reads the mesh, partitions it and
/// sends each rank its part; the result is the same to the last bit for any number of ranks.
pub fn run_on(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<RunSummary, DriverError> {
    run_on_with(cfg, base, opts, comm, None)
}

/// A run's observers as one call after a step: `Ok(true)` asks the run to stop.
pub type AfterStep<'a> = dyn FnMut(&Simulation<'_>) -> Result<bool, DriverError> + 'a;

/// What advances a run to its last step in place of [`Simulation::run`] (a coupling's time
/// loop): given the simulation, the last step and the observers, it returns whether they
/// stopped it.
pub type Drive<'a> = dyn FnMut(&mut Simulation<'_>, usize, &mut AfterStep<'_>) -> Result<bool, DriverError>
    + Send
    + 'a;

/// A coupled run's time loop and what it shares with the run's observers: before each output
/// step (the initial one included) it sets `extras.at` to the fields and values
/// [`RunOptions::extras`] names; it keeps `extras.state` current for checkpoints, and finds
/// there, on a restart, the state the checkpoint held.
pub struct Coupled<'a, 'b> {
    pub drive: &'a mut Drive<'b>,
    pub extras: super::extras::SharedExtras,
}

/// [`run_on`] with the time loop given by `drive` (the FE loop when `None`); output,
/// checkpoints and signals, progress and the crash hooks observe it as they observe the FE
/// loop (a coupling whose own state a checkpoint would not hold refuses checkpoint paths in
/// its job's validation, so a signal then stops the run without one).
pub fn run_on_with(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
    coupled: Option<Coupled<'_, '_>>,
) -> Result<RunSummary, DriverError> {
    crate::threads::with_threads(cfg.solver.threads, || solve(cfg, base, opts, comm, coupled))
        .map_err(DriverError::Threads)?
}

/// Steps 1–6 of a run: part, simulation, initial output or restart, the time loop with its
/// observers, the summary.
fn solve(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
    coupled: Option<Coupled<'_, '_>>,
) -> Result<RunSummary, DriverError> {
    let wall = Instant::now();
    // 1–2. Mesh, problem and partition on rank 0; each rank receives its part.
    let (part, boundaries, root) = distribute(cfg, base, opts, comm)?;
    let receivers: Vec<_> = part.receivers.iter().map(|r| r.1).collect();
    let rec_ids: Vec<u64> = part.receivers.iter().map(|r| r.0 as u64).collect();
    // 3–4. Operators, time step, initial state.
    let (mut sim, nsteps, halo) = simulation(cfg, part, boundaries, comm)?;
    // Receiver rows are buffered between output steps: no more rows than steps.
    let rows = cfg.output.every.min(nsteps) + 1;
    let mut io = Io {
        extras: coupled.as_ref().map(|c| c.extras.clone()),
        root,
        rec_u: Vec::with_capacity(rows * receivers.len()),
        receivers,
        outputs: 0,
        // Set again below, once a restart has restored the initial energy.
        energy: sim.initial_energy(),
        time: Duration::ZERO,
    };
    io.learn_layout(sim.layout(), &rec_ids, comm);
    let restarted = opts.restart && checkpoint_exists_on(cfg, comm);
    if restarted {
        restore(cfg, &mut sim, nsteps, &mut io)?;
        tracing::info!(
            "restarted from {} at step {} (t = {:.4e}), {} output steps kept",
            cfg.checkpoint.path.display(),
            sim.steps_done(),
            sim.time(),
            io.outputs
        );
    } else {
        if opts.restart {
            tracing::info!("--restart: no checkpoint yet, starting from t = 0");
        }
        let t0 = Instant::now();
        io.record(&sim);
        io.write(&sim, sim.initial_energy())?;
        io.outputs = 1;
        io.time += t0.elapsed();
    }
    io.energy = sim.initial_energy();
    // 5. The time loop: the simulation advanced with its observers.
    let mut output = Output {
        every: cfg.output.every,
        last: nsteps,
        abort_after: opts.abort_after_outputs,
        pause_after: opts.pause_after_outputs,
    };
    let mut checkpoints = Checkpoints::new(cfg, nsteps, opts.signals, opts.stop_after_steps)?;
    let show = opts.progress && comm.rank() == 0;
    let mut progress = ShowProgress(Progress::new(
        "solve",
        nsteps as u64,
        show,
        Duration::from_secs(10),
    ));
    progress.0.set(sim.steps_done() as u64);
    let mut fail = opts.fail_rank_at.map(|(r, s)| Crash::RankExits(r, s));
    let mut kill = opts.kill_at_step.map(Crash::Kill);
    let mut observers: Vec<&mut dyn Observer<Io>> = Vec::new();
    if let Some(f) = fail.as_mut() {
        observers.push(f);
    }
    observers.push(&mut output);
    observers.push(&mut checkpoints);
    observers.push(&mut progress);
    if let Some(k) = kill.as_mut() {
        observers.push(k);
    }
    let interrupted = match coupled {
        None => sim.run(nsteps, &mut io, &mut observers)?,
        Some(Coupled { drive, .. }) => {
            let mut after = |s: &Simulation<'_>| -> Result<bool, DriverError> {
                let mut ctl = Control::default();
                for o in observers.iter_mut() {
                    o.after_step(s, &mut io, &mut ctl)?;
                }
                Ok(ctl.stop)
            };
            drive(&mut sim, nsteps, &mut after)?
        }
    };
    drop(observers);
    progress.0.finish();
    // 6. Summary; a complete run's output moves to its final name.
    let end = End {
        nsteps,
        halo,
        restarted,
        interrupted,
        checkpoints: checkpoints.written,
        wall,
    };
    summary(cfg, &sim, &mut io, end)
}

/// How a run ended, for its summary.
struct End {
    nsteps: usize,
    halo: usize,
    restarted: bool,
    interrupted: bool,
    checkpoints: usize,
    wall: Instant,
}

/// Step 6: a complete run's output moves to its final name; the summary (collective).
fn summary(
    cfg: &Config,
    sim: &Simulation<'_>,
    io: &mut Io,
    end: End,
) -> Result<RunSummary, DriverError> {
    let comm = sim.comm();
    let End {
        nsteps,
        halo,
        restarted,
        interrupted,
        checkpoints,
        wall,
    } = end;
    let (nodes, cells, path, xdmf, ghost_cells) = match &mut io.root {
        Some(root) => {
            let (path, xdmf) = if interrupted {
                (root.writer_path(), root.writer_xdmf())
            } else {
                root.finish()?
            };
            (root.nodes, root.cells, path, xdmf, root.ghost_cells)
        }
        None => (0, 0, None, None, 0),
    };
    let mut counts = [nodes as f64, cells as f64, ghost_cells as f64];
    comm.max_f64(&mut counts);
    let compute = sim.compute_time().as_secs_f64();
    let summary = RunSummary {
        nodes: counts[0] as usize,
        cells: counts[1] as usize,
        ranks: comm.size(),
        steps: nsteps,
        steps_run: sim.steps_run(),
        dt: sim.dt(),
        dt_limit: sim.solver().dt_limit(),
        end_time: sim.time(),
        wall_s: wall.elapsed().as_secs_f64(),
        compute_s: compute,
        exchange_wait_s: sim.solver().exchange_wait().as_secs_f64(),
        output_s: io.time.as_secs_f64(),
        dof_updates_per_s: (sim.steps_run() * counts[0] as usize) as f64 / compute.max(1e-12),
        halo_values_per_step: halo,
        ghost_cells: counts[2] as usize,
        initial_energy: sim.initial_energy(),
        final_energy: io.energy,
        output_steps: io.outputs,
        checkpoints,
        restarted,
        interrupted,
        output: path,
        xdmf,
        receivers: cfg.receiver.len(),
    };
    tracing::info!(
        "done: {} steps in {:.2} s compute + {:.2} s output, {:.3e} DoF-updates/s, energy {:.6e} -> {:.6e}",
        summary.steps_run, summary.compute_s, summary.output_s, summary.dof_updates_per_s,
        summary.initial_energy, summary.final_energy
    );
    Ok(summary)
}

/// The simulation of a job without its output, checkpoints or signals, for a caller that
/// advances it itself (a coupling, a hand-written loop): steps 1–4 of [`run_on`], on the ranks
/// of `comm` (collective). Returns it with the job's number of steps; this rank's owned nodes
/// are `layout().global[..layout().n_owned]`. The same bits as `wavecp solve` at every step.
pub fn from_job<'c>(
    cfg: &Config,
    base: &Path,
    comm: &'c dyn Comm,
) -> Result<(Simulation<'c>, usize), DriverError> {
    let mut cfg = cfg.clone();
    cfg.output.path = PathBuf::new();
    cfg.checkpoint.path = PathBuf::new();
    let (part, boundaries, _) = distribute(&cfg, base, &RunOptions::default(), comm)?;
    let (sim, nsteps, _) = simulation(&cfg, part, boundaries, comm)?;
    Ok((sim, nsteps))
}

/// Steps 3–4 on every rank: the solver of this rank's part, the time step, the initial state;
/// returns the simulation, the number of steps and the halo values sent per step (all ranks).
pub(crate) fn simulation<'c>(
    cfg: &Config,
    part: LocalPart,
    boundaries: Vec<(i32, crate::solver::BoundaryKind)>,
    comm: &'c dyn Comm,
) -> Result<(Simulation<'c>, usize, usize), DriverError> {
    let problem = Problem {
        mesh: part.mesh,
        speed: part.speed,
        boundaries,
        sources: part.sources,
        operator: cfg.solver.operator,
    };
    // The same bits on every rank: see comm::repro_sum.
    let mut solver = WaveSolver::new_on(&problem, part.layout, comm)?;
    let nsteps = time_step(&cfg.time, &mut solver)?;
    let layout = solver.layout();
    let (sent, received) = layout.halo_values();
    let mut stats = [layout.n_owned as f64, sent as f64, received as f64];
    let mut totals = stats;
    comm.sum_f64(&mut totals);
    comm.max_f64(&mut stats);
    tracing::info!(
        "dt = {:.4e} (stability limit {:.4e}), {nsteps} steps to t = {:.4e}",
        solver.dt(),
        solver.dt_limit(),
        nsteps as f64 * solver.dt()
    );
    if comm.size() > 1 {
        tracing::info!(
            "partition ({:?}): at most {} owned nodes per rank (mean {:.0}); halo values per step: {} in all, at most {} sent by one rank",
            cfg.solver.partition,
            stats[0],
            totals[0] / comm.size() as f64,
            totals[1],
            stats[1]
        );
    }
    solver.set_initial_on(&part.u0, &part.v0, comm)?;
    Ok((Simulation::new(solver, comm)?, nsteps, totals[1] as usize))
}
