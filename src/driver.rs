//! Runs a job: 1. mesh, 2. materials and boundaries, 3. solver and time step, 4. initial state,
//! 5. time loop with receivers and output, 6. summary.

use crate::comm::{Comm, Serial};
use crate::config::{
    BoundaryKindConfig, Config, ConfigError, GenerateConfig, MeshConfig, ReceiverConfig,
    SourceConfig, TimeConfig, TimeFunctionKind,
};
use crate::fem::WaveSpeed;
use crate::mesh::{self, CellShape, Mesh, MeshError, PointLocation};
use crate::output::{OutputError, ReceiverInfo};
use crate::partition::{
    build_parts, partition_cells, GlobalPieces, Layout, LocalPart, PartitionError,
};
use crate::progress::Progress;
use crate::solver::{BoundaryKind, Problem, SolverError, WaveSolver};
use crate::sources::{Gaussian, PointSource, TimeFunction};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any failure of a run, with the layer it came from.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Solver(#[from] SolverError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("job key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
    #[error("cannot build a thread pool: {0}")]
    Threads(String),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("the discrete energy is not a finite number at t = {time:e} (step {step}): the field overflows; check the amplitudes of the sources, the initial state and the boundary values")]
    EnergyOverflow { step: usize, time: f64 },
    /// A failure reported by rank 0 (reading the job, the mesh or a checkpoint) to the others.
    #[error("{0}")]
    OtherRank(String),
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> DriverError {
    DriverError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

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
}

/// The discrete problem and its initial state built from a job.
pub struct Setup {
    pub problem: Problem,
    pub u0: Vec<f64>,
    pub v0: Vec<f64>,
    pub receivers: Vec<(ReceiverInfo, PointLocation)>,
}

/// Reads or generates the mesh of a job; `base` is the job file's folder.
pub fn load_mesh(m: &MeshConfig, base: &Path) -> Result<Mesh, DriverError> {
    match (&m.file, &m.generate) {
        (Some(f), None) => Ok(mesh::read_msh(&base.join(f))?),
        (None, Some(g)) => Ok(mesh::rectangle(g.shape, g.nx, g.ny, g.x, g.y)?),
        _ => Err(invalid("mesh", "give either `file` or `generate`")),
    }
}

/// Steps 1–2: mesh, materials, boundaries, sources, initial fields, receivers.
pub fn setup(cfg: &Config, base: &Path) -> Result<Setup, DriverError> {
    let mesh = load_mesh(&cfg.mesh, base)?;
    let speed = wave_speed(cfg, &mesh, base)?;
    let mut boundaries = Vec::new();
    for (i, b) in cfg.boundary.iter().enumerate() {
        let kind = match b.kind {
            BoundaryKindConfig::Neumann => BoundaryKind::Neumann,
            BoundaryKindConfig::Absorbing => BoundaryKind::Absorbing,
            BoundaryKindConfig::Dirichlet => BoundaryKind::Dirichlet(match b.time_function {
                TimeFunctionKind::Constant => TimeFunction::Constant(b.value),
                TimeFunctionKind::Sine => TimeFunction::Sine {
                    amplitude: b.value,
                    frequency: b.frequency.unwrap_or(0.0),
                },
                TimeFunctionKind::Ricker => {
                    let f = b.frequency.unwrap_or(1.0);
                    TimeFunction::Ricker {
                        amplitude: b.value,
                        frequency: f,
                        delay: b.delay.unwrap_or(1.2 / f),
                    }
                }
            }),
        };
        for t in &b.tags {
            let tag = mesh.resolve_tag(1, &t.to_string()).ok_or_else(|| {
                let known: Vec<String> = mesh
                    .boundary_tags()
                    .keys()
                    .map(|k| match mesh.names.get(&(1, *k)) {
                        Some(n) => format!("{k} ({n})"),
                        None => k.to_string(),
                    })
                    .collect();
                invalid(
                    format!("boundary[{i}].tags"),
                    format!(
                        "no boundary `{t}` in the mesh; it has: {}",
                        known.join(", ")
                    ),
                )
            })?;
            if !mesh.boundary.iter().any(|e| e.tag == tag) {
                return Err(invalid(
                    format!("boundary[{i}].tags"),
                    format!("boundary `{t}` has no edges in the mesh, so the condition would apply nowhere"),
                ));
            }
            boundaries.push((tag, kind));
        }
    }
    let mut sources = Vec::new();
    for (i, s) in cfg.source.iter().enumerate() {
        sources.push(point_source(&mesh, s).ok_or_else(|| {
            invalid(
                format!("source[{i}].position"),
                format!("{:?} is outside the mesh", s.position),
            )
        })?);
    }
    let sum = |list: &[Gaussian]| -> Vec<f64> {
        mesh.coords
            .iter()
            .map(|p| list.iter().map(|g| g.eval(*p)).sum())
            .collect()
    };
    let u0 = sum(&cfg.initial.displacement);
    let v0 = sum(&cfg.initial.velocity);
    let mut receivers = Vec::new();
    for (i, r) in cfg.receiver.iter().enumerate() {
        let loc = mesh.locate(r.position).ok_or_else(|| {
            invalid(
                format!("receiver[{i}].position"),
                format!("{:?} is outside the mesh", r.position),
            )
        })?;
        let name = r.name.clone().unwrap_or_else(|| format!("r{i}"));
        receivers.push((
            ReceiverInfo {
                name,
                position: r.position,
            },
            loc,
        ));
    }
    Ok(Setup {
        problem: Problem {
            mesh,
            speed,
            boundaries,
            sources,
            operator: cfg.solver.operator,
        },
        u0,
        v0,
        receivers,
    })
}

/// A Ricker point source located in the mesh, `None` when the point is outside.
pub fn point_source(mesh: &Mesh, s: &SourceConfig) -> Option<PointSource> {
    let location = mesh.locate(s.position)?;
    let wavelet = TimeFunction::Ricker {
        amplitude: s.amplitude,
        frequency: s.frequency,
        delay: s.delay.unwrap_or(1.2 / s.frequency),
    };
    Some(PointSource { location, wavelet })
}

fn wave_speed(cfg: &Config, mesh: &Mesh, base: &Path) -> Result<WaveSpeed, DriverError> {
    let m = &cfg.material;
    if let Some(regions) = &m.regions {
        let mut per_tag = std::collections::BTreeMap::new();
        for (k, c) in regions {
            let tag = mesh.resolve_tag(2, k).ok_or_else(|| {
                invalid(
                    format!("material.regions.{k}"),
                    "no such region (physical surface) in the mesh",
                )
            })?;
            per_tag.insert(tag, *c);
        }
        let tags = mesh.cell_tags();
        let mut c = Vec::with_capacity(tags.len());
        for t in tags {
            let v = per_tag.get(&t).ok_or_else(|| {
                let name = mesh
                    .names
                    .get(&(2, t))
                    .cloned()
                    .unwrap_or_else(|| t.to_string());
                invalid(
                    "material.regions",
                    format!("region `{name}` has cells but no wave speed"),
                )
            })?;
            c.push(*v);
        }
        return Ok(WaveSpeed::PerCell(c));
    }
    if let Some(f) = &m.nodal_file {
        let path = base.join(f);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid("material.nodal_file", format!("{}: {e}", path.display())))?;
        let vals: Result<Vec<f64>, _> = text.split_whitespace().map(str::parse::<f64>).collect();
        let vals =
            vals.map_err(|e| invalid("material.nodal_file", format!("{}: {e}", path.display())))?;
        if vals.len() != mesh.num_nodes() {
            return Err(invalid(
                "material.nodal_file",
                format!(
                    "{}: {} values for {} nodes",
                    path.display(),
                    vals.len(),
                    mesh.num_nodes()
                ),
            ));
        }
        return Ok(WaveSpeed::Nodal(vals));
    }
    Ok(WaveSpeed::PerCell(vec![
        m.c.unwrap_or(1.0);
        mesh.num_cells()
    ]))
}

/// Step 3: chooses the time step and the number of steps. With no `dt` given, takes
/// `safety × limit`, then shrinks it so a whole number of steps lands on `end`.
pub fn time_step(t: &TimeConfig, solver: &mut WaveSolver) -> Result<usize, DriverError> {
    let steps = match t.dt {
        Some(dt) => (t.end / dt - 1e-9).ceil().max(1.0),
        None => (t.end / (t.safety * solver.dt_limit())).ceil().max(1.0),
    };
    // Far beyond any run that ends (10^12 steps of the smallest mesh take weeks), and well
    // inside the integers the step counter and f64 times hold exactly.
    if steps.is_nan() || steps > MAX_STEPS {
        return Err(invalid(
            if t.dt.is_some() { "time.dt" } else { "time.safety" },
            format!(
                "reaching time.end = {:e} takes {steps:.3e} steps, more than the limit of {MAX_STEPS:e} (check time.end, time.dt and time.safety)",
                t.end
            ),
        ));
    }
    let n = steps as usize;
    let dt = match t.dt {
        Some(dt) => dt,
        None => t.end / n as f64,
    };
    solver.set_dt(dt)?;
    Ok(n)
}

/// Most time steps one run may take.
pub const MAX_STEPS: f64 = 1e12;

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
    crate::threads::with_threads(cfg.solver.threads, || run_inner(cfg, base, opts, comm))
        .map_err(DriverError::Threads)?
}

/// What only rank 0 holds: the output file and how gathered vectors map to global order.
struct RootIo {
    writer: Option<Writer>,
    nodes: usize,
    cells: usize,
    /// Owned global node ids of every rank, concatenated in rank order, and their counts.
    owned_ids: Vec<u64>,
    owned_counts: Vec<usize>,
    /// Receivers per rank and their job indices, concatenated in rank order.
    rec_counts: Vec<u64>,
    rec_ids: Vec<u64>,
    nrec: usize,
    rec_t: Vec<f64>,
    rec_rows_written: usize,
    ghost_cells: usize,
    /// `job_digest` of this job (zeros when no checkpoint is configured).
    job: [u8; 32],
}

#[cfg(feature = "hdf5")]
type Writer = crate::output::VtkHdfWriter;
#[cfg(not(feature = "hdf5"))]
type Writer = ();

/// The restart state (`wavecp solve --restart`), written by rank 0 in global node order, so a
/// run may continue on a different number of ranks.
///
/// On disk: `CHECKPOINT_MAGIC`, the SHA-256 of the payload, the payload (bincode). The payload
/// carries a digest of the job's discrete problem, so a checkpoint of another job (another mesh,
/// material, source, boundary, initial state or receiver set) is refused, and the checksum
/// refuses any damaged byte before a value is trusted.
#[derive(Serialize, serde::Deserialize)]
struct Checkpoint {
    job: [u8; 32],
    nodes: u64,
    dt: f64,
    step: u64,
    u: Vec<f64>,
    u_prev: Vec<f64>,
    outputs: u64,
    rec_rows: u64,
    initial_energy: f64,
}
const CHECKPOINT_MAGIC: [u8; 8] = *b"WAVECPC2";
const CHECKPOINT_HEAD: usize = 8 + 32;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// What a checkpoint must match: the SHA-256 of everything that defines the discrete problem
/// (mesh, wave speed, boundaries, sources, initial fields, receivers). Not `time.end`, the
/// output or the solver's threads and partition: a run may be continued longer, with other
/// output settings or on another number of ranks.
fn job_digest(s: &Setup) -> [u8; 32] {
    use sha2::Digest;
    struct H(sha2::Sha256);
    impl std::io::Write for H {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = H(sha2::Sha256::new());
    let recs: Vec<(&[f64; 2], &PointLocation)> =
        s.receivers.iter().map(|r| (&r.0.position, &r.1)).collect();
    // Serialising into a hasher cannot fail; a failure would only weaken the check.
    let _ = bincode::serialize_into(
        &mut h,
        &(
            &s.problem.mesh,
            &s.problem.speed,
            &s.problem.boundaries,
            &s.problem.sources,
            &s.u0,
            &s.v0,
            &recs,
        ),
    );
    h.0.finalize().into()
}

/// Refuses output and checkpoint paths that would replace an input, each other, or something
/// that is not a regular file (a device, a FIFO, a folder). Rank 0, before anything is written.
fn check_paths(cfg: &Config, base: &Path, opts: &RunOptions) -> Result<(), DriverError> {
    use crate::output::target::{check_replaceable, running_path, sibling, which_of};
    let inputs =
        crate::config::input_files(&cfg.mesh, &cfg.material, base, opts.job_file.as_deref());
    let mut outputs: Vec<(&str, PathBuf)> = Vec::new();
    let out = &cfg.output.path;
    if !out.as_os_str().is_empty() {
        let run = running_path(out);
        outputs.push(("output.path", out.clone()));
        outputs.push((
            "output.path (its .xdmf sidecar)",
            out.with_extension("xdmf"),
        ));
        for suffix in ["receivers.csv", "energy.csv"] {
            outputs.push(("output.path (its tables)", sibling(out, suffix)));
            outputs.push(("output.path (its tables)", sibling(&run, suffix)));
        }
        outputs.push(("output.path (the running file)", run.clone()));
        outputs.push((
            "output.path (its .xdmf sidecar)",
            run.with_extension("xdmf"),
        ));
    }
    let ck = &cfg.checkpoint.path;
    if !ck.as_os_str().is_empty() {
        check_replaceable(ck, "checkpoint")
            .map_err(|e| invalid("checkpoint.path", e.to_string()))?;
        let all: Vec<_> = inputs.iter().chain(&outputs).cloned().collect();
        if let Some(what) = which_of(ck, &all) {
            return Err(invalid(
                "checkpoint.path",
                format!(
                    "{} is {what}; give the checkpoint a path of its own",
                    ck.display()
                ),
            ));
        }
    }
    for (what, p) in &outputs {
        check_replaceable(p, "output").map_err(|e| invalid("output.path", e.to_string()))?;
        if let Some(input) = which_of(p, &inputs) {
            return Err(invalid(
                "output.path",
                format!(
                    "{} ({what}) is {input}; it would be overwritten",
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

type Boundaries = Vec<(i32, BoundaryKind)>;

/// Steps between the collective checks for signals and wall-clock checkpoints.
const POLL: usize = 8;

/// Steps 1–2 on rank 0: the global problem, its partition, the output file; then every rank
/// gets its part. A failure on rank 0 reaches every rank as an error, so none waits for ever.
fn distribute(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<(LocalPart, Boundaries, Option<RootIo>), DriverError> {
    let size = comm.size();
    let mut root_io = None;
    let mut status = Vec::new();
    let mut parts = None;
    let mut bnd = Vec::new();
    if comm.rank() == 0 {
        let built = (|| -> Result<(Payload, RootIo, Boundaries), DriverError> {
            check_paths(cfg, base, opts)?;
            let s = setup(cfg, base)?;
            let job = if cfg.checkpoint.path.as_os_str().is_empty() {
                [0; 32]
            } else {
                job_digest(&s)
            };
            let mesh = &s.problem.mesh;
            tracing::info!(
                "mesh: {} nodes, {} triangles, {} quads; {size} rank(s)",
                mesh.num_nodes(),
                mesh.tris.len(),
                mesh.quads.len()
            );
            let cell_part = partition_cells(mesh, size, cfg.solver.partition)?;
            let info: Vec<ReceiverInfo> = s.receivers.iter().map(|r| r.0.clone()).collect();
            let writer = open_writer(cfg, mesh, &info, &cell_part, opts.restart)?;
            let (nodes, cells) = (mesh.num_nodes(), mesh.num_cells());
            let boundaries = s.problem.boundaries.clone();
            let (payload, ghost_cells) = if size == 1 {
                // One rank: the problem as it is (the part build_parts would make is the same,
                // but a copy of the whole mesh).
                let receivers = s
                    .receivers
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i, r.1))
                    .collect();
                let whole = LocalPart {
                    rank: 0,
                    layout: Layout::serial(nodes),
                    mesh: s.problem.mesh,
                    speed: s.problem.speed,
                    sources: s.problem.sources,
                    receivers,
                    u0: s.u0,
                    v0: s.v0,
                    owned_cells: cells,
                };
                (Payload::Whole(Box::new(whole)), 0)
            } else {
                let recs: Vec<PointLocation> = s.receivers.iter().map(|r| r.1).collect();
                let pieces = GlobalPieces {
                    mesh,
                    speed: &s.problem.speed,
                    sources: &s.problem.sources,
                    receivers: &recs,
                    u0: &s.u0,
                    v0: &s.v0,
                };
                let local = build_parts(&pieces, &cell_part, size);
                let ghost_cells: usize = local
                    .iter()
                    .map(|p| p.mesh.num_cells() - p.owned_cells.min(p.mesh.num_cells()))
                    .sum();
                let bytes = local.iter().map(crate::comm::to_bytes).collect();
                (Payload::Bytes(bytes), ghost_cells)
            };
            Ok((
                payload,
                RootIo {
                    writer,
                    nodes,
                    cells,
                    owned_ids: Vec::new(),
                    owned_counts: Vec::new(),
                    rec_counts: Vec::new(),
                    rec_ids: Vec::new(),
                    nrec: info.len(),
                    rec_t: Vec::new(),
                    rec_rows_written: 0,
                    ghost_cells,
                    job,
                },
                boundaries,
            ))
        })();
        match built {
            Ok((b, io, bd)) => {
                parts = Some(b);
                root_io = Some(io);
                bnd = bd;
                status.push(0u8);
                status.extend(crate::comm::to_bytes(&bnd));
            }
            Err(e) => {
                status.push(1u8);
                status.extend(e.to_string().into_bytes());
                comm.broadcast_bytes(&mut status);
                return Err(e);
            }
        }
    }
    comm.broadcast_bytes(&mut status);
    if status.first() != Some(&0) {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(status.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    if comm.rank() != 0 {
        bnd = bincode::deserialize(&status[1..])
            .map_err(|e| DriverError::OtherRank(e.to_string()))?;
    }
    let bytes = match parts {
        Some(Payload::Whole(part)) => return Ok((*part, bnd, root_io)),
        Some(Payload::Bytes(b)) => comm.scatter_bytes(Some(b)),
        None => comm.scatter_bytes(None),
    };
    let part: LocalPart =
        bincode::deserialize(&bytes).map_err(|e| DriverError::OtherRank(e.to_string()))?;
    Ok((part, bnd, root_io))
}

/// Rank 0's parts: serialised for the other ranks, or the whole problem for a serial run.
enum Payload {
    Bytes(Vec<Vec<u8>>),
    Whole(Box<LocalPart>),
}

#[cfg(feature = "hdf5")]
fn open_writer(
    cfg: &Config,
    mesh: &Mesh,
    info: &[ReceiverInfo],
    cell_part: &[u32],
    restart: bool,
) -> Result<Option<Writer>, DriverError> {
    if cfg.output.path.as_os_str().is_empty() {
        return Ok(None);
    }
    // On restart the file is reopened once the checkpoint says how much of it to keep.
    if restart && checkpoint_exists(cfg) {
        return Ok(None);
    }
    Ok(Some(crate::output::VtkHdfWriter::create(
        &cfg.output.path,
        mesh,
        info,
        cfg.output.xdmf,
        Some(cell_part),
    )?))
}

#[cfg(not(feature = "hdf5"))]
fn open_writer(
    cfg: &Config,
    _: &Mesh,
    _: &[ReceiverInfo],
    _: &[u32],
    _: bool,
) -> Result<Option<Writer>, DriverError> {
    if cfg.output.path.as_os_str().is_empty() {
        Ok(None)
    } else {
        Err(OutputError::NoHdf5.into())
    }
}

fn checkpoint_exists(cfg: &Config) -> bool {
    !cfg.checkpoint.path.as_os_str().is_empty() && cfg.checkpoint.path.exists()
}

fn run_inner(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<RunSummary, DriverError> {
    let wall = Instant::now();
    let root = comm.rank() == 0;
    // 1–2. Mesh, problem and partition on rank 0; each rank receives its part.
    let (part, boundaries, mut io) = distribute(cfg, base, opts, comm)?;
    let problem = Problem {
        mesh: part.mesh,
        speed: part.speed,
        boundaries,
        sources: part.sources,
        operator: cfg.solver.operator,
    };
    // 3. Operators and time step (the same bits on every rank: see comm::repro_sum).
    let mut solver = WaveSolver::new_on(&problem, part.layout, comm)?;
    let nsteps = time_step(&cfg.time, &mut solver)?;
    let layout = solver.layout().clone();
    let no = layout.n_owned;
    let (sent, received) = layout.halo_values();
    let mut stats = [no as f64, sent as f64, received as f64];
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
    // Rank 0 learns where every rank's owned values and receivers go.
    let owned_ids = comm.gather_u64(&layout.global[..no]);
    let owned_counts = comm.gather_u64(&[no as u64]);
    let rec_ids_local: Vec<u64> = part.receivers.iter().map(|r| r.0 as u64).collect();
    let rec_counts = comm.gather_u64(&[rec_ids_local.len() as u64]);
    let rec_ids = comm.gather_u64(&rec_ids_local);
    if let Some(io) = io.as_mut() {
        io.owned_ids = owned_ids.unwrap_or_default();
        io.owned_counts = owned_counts
            .unwrap_or_default()
            .into_iter()
            .map(|c| c as usize)
            .collect();
        io.rec_counts = rec_counts.unwrap_or_default();
        io.rec_ids = rec_ids.unwrap_or_default();
    }
    let receivers: Vec<PointLocation> = part.receivers.iter().map(|r| r.1).collect();
    // 4. Initial state, or the state of the checkpoint.
    solver.set_initial_on(&part.u0, &part.v0, comm)?;
    let mut first = 1;
    let mut outputs;
    let mut e0 = solver.energy_on(comm);
    if !e0.is_finite() {
        return Err(DriverError::EnergyOverflow { step: 0, time: 0.0 });
    }
    // Receiver rows are buffered between output steps: no more rows than steps.
    let mut rec_u: Vec<f64> =
        Vec::with_capacity((cfg.output.every.min(nsteps) + 1) * receivers.len());
    let mut output_time = Duration::ZERO;
    let restarted = opts.restart && checkpoint_exists_on(cfg, comm);
    if restarted {
        let (step, outs, energy0) = restore(cfg, &mut solver, nsteps, io.as_mut(), comm)?;
        first = step + 1;
        outputs = outs;
        e0 = energy0;
        tracing::info!(
            "restarted from {} at step {step} (t = {:.4e}), {outs} output steps kept",
            cfg.checkpoint.path.display(),
            solver.time()
        );
    } else {
        if opts.restart {
            tracing::info!("--restart: no checkpoint yet, starting from t = 0");
        }
        let t0 = Instant::now();
        record(&mut io, &mut rec_u, &receivers, &solver);
        write_output(&mut io, &mut rec_u, &solver, e0, comm)?;
        outputs = 1;
        output_time += t0.elapsed();
    }
    // 5. Time loop.
    let stop = Arc::new(AtomicBool::new(false));
    if opts.signals {
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
            signal_hook::flag::register(sig, Arc::clone(&stop))
                .map_err(|e| invalid("signals", format!("cannot install a handler: {e}")))?;
        }
    }
    let mut progress = Progress::new(
        "solve",
        nsteps as u64,
        opts.progress && root,
        Duration::from_secs(10),
    );
    progress.set(first as u64 - 1);
    let mut compute = Duration::ZERO;
    let mut energy = e0;
    let mut checkpoints = 0;
    let mut last_ckpt = Instant::now();
    let mut interrupted = false;
    let mut steps_run = 0;
    for n in first..=nsteps {
        let t = Instant::now();
        solver.step_on(comm);
        compute += t.elapsed();
        steps_run += 1;
        if opts.fail_rank_at == Some((comm.rank(), n)) {
            eprintln!("rank {}: dying at step {n} (test hook)", comm.rank());
            std::process::exit(17);
        }
        let t = Instant::now();
        record(&mut io, &mut rec_u, &receivers, &solver);
        if n % cfg.output.every == 0 || n == nsteps {
            solver.check_finite_on(comm)?;
            energy = solver.energy_on(comm);
            if !energy.is_finite() {
                return Err(DriverError::EnergyOverflow {
                    step: n,
                    time: solver.time(),
                });
            }
            write_output(&mut io, &mut rec_u, &solver, energy, comm)?;
            outputs += 1;
            if opts.abort_after_outputs == Some(outputs) {
                std::process::abort();
            }
            if opts.pause_after_outputs == Some(outputs) {
                if let Some(p) = io.as_ref().and_then(writer_path) {
                    pause_for_reader(&p);
                }
            }
        }
        // One small reduction every POLL steps decides, for all ranks together, whether to
        // checkpoint by time or stop on a signal (a reduction per step would cost more than a
        // step on many ranks with small parts: docs/scaling.md).
        let mut flags = [0.0, 0.0];
        if n % POLL == 0 || n == nsteps || opts.stop_after_steps == Some(n) {
            flags = [
                f64::from(u8::from(
                    stop.load(Ordering::Relaxed) || opts.stop_after_steps == Some(n),
                )),
                f64::from(u8::from(
                    root && cfg.checkpoint.minutes > 0.0
                        && last_ckpt.elapsed().as_secs_f64() >= 60.0 * cfg.checkpoint.minutes,
                )),
            ];
            comm.max_f64(&mut flags);
        }
        let by_steps = cfg.checkpoint.every > 0 && n % cfg.checkpoint.every == 0;
        let halt = flags[0] > 0.0 && n < nsteps;
        if (by_steps || flags[1] > 0.0 || halt) && !cfg.checkpoint.path.as_os_str().is_empty() {
            write_checkpoint(cfg, &solver, &mut io, &mut rec_u, outputs, e0, comm)?;
            checkpoints += 1;
            last_ckpt = Instant::now();
        }
        output_time += t.elapsed();
        progress.set(n as u64);
        if opts.kill_at_step == Some(n) {
            // SAFETY: raise only sends a signal to this process; nothing is shared with it.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        if halt {
            interrupted = true;
            tracing::warn!(
                "stopped at step {n} of {nsteps} on request (signal); {}",
                if cfg.checkpoint.path.as_os_str().is_empty() {
                    "no checkpoint path is set, so the run cannot be continued".to_string()
                } else {
                    format!(
                        "checkpoint {} written: continue with --restart",
                        cfg.checkpoint.path.display()
                    )
                }
            );
            flush_receivers(&mut io, &mut rec_u, comm)?;
            break;
        }
    }
    progress.finish();
    // 6. Summary; a complete run's output moves to its final name.
    let (nodes, cells, path, xdmf, ghost_cells) = match &mut io {
        Some(io) => {
            let (path, xdmf) = if interrupted {
                (writer_path(io), writer_xdmf(io))
            } else {
                finish_output(io)?
            };
            (io.nodes, io.cells, path, xdmf, io.ghost_cells)
        }
        None => (0, 0, None, None, 0),
    };
    let mut counts = [nodes as f64, cells as f64, ghost_cells as f64];
    comm.max_f64(&mut counts);
    let summary = RunSummary {
        nodes: counts[0] as usize,
        cells: counts[1] as usize,
        ranks: comm.size(),
        steps: nsteps,
        steps_run,
        dt: solver.dt(),
        dt_limit: solver.dt_limit(),
        end_time: solver.time(),
        wall_s: wall.elapsed().as_secs_f64(),
        compute_s: compute.as_secs_f64(),
        exchange_wait_s: solver.exchange_wait().as_secs_f64(),
        output_s: output_time.as_secs_f64(),
        dof_updates_per_s: (steps_run * counts[0] as usize) as f64
            / compute.as_secs_f64().max(1e-12),
        halo_values_per_step: totals[1] as usize,
        ghost_cells: counts[2] as usize,
        initial_energy: e0,
        final_energy: energy,
        output_steps: outputs,
        checkpoints,
        restarted,
        interrupted,
        output: path,
        xdmf,
        receivers: cfg.receiver.len(),
    };
    tracing::info!(
        "done: {} steps in {:.2} s compute + {:.2} s output, {:.3e} DoF-updates/s, energy {:.6e} -> {:.6e}",
        summary.steps_run, summary.compute_s, summary.output_s, summary.dof_updates_per_s, e0, energy
    );
    Ok(summary)
}

fn checkpoint_exists_on(cfg: &Config, comm: &dyn Comm) -> bool {
    let mut f = [f64::from(u8::from(
        comm.rank() == 0 && checkpoint_exists(cfg),
    ))];
    comm.max_f64(&mut f);
    f[0] > 0.0
}

/// Test hook: makes `OUT.paused` and waits (up to a minute) for a reader to remove it.
fn pause_for_reader(running: &Path) {
    let marker = crate::output::target::sibling(running, "paused");
    if std::fs::write(&marker, b"").is_err() {
        return;
    }
    let t = Instant::now();
    while marker.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Closes the output of a complete run and moves it to its final name; returns the final paths
/// of the file and its XDMF sidecar.
fn finish_output(io: &mut RootIo) -> Result<(Option<PathBuf>, Option<PathBuf>), DriverError> {
    #[cfg(feature = "hdf5")]
    if let Some(w) = io.writer.take() {
        let xdmf = w.xdmf_path().is_some();
        let path = w.finish()?;
        let x = xdmf.then(|| path.with_extension("xdmf"));
        return Ok((Some(path), x));
    }
    let _ = io;
    Ok((None, None))
}

fn writer_path(io: &RootIo) -> Option<PathBuf> {
    #[cfg(feature = "hdf5")]
    return io.writer.as_ref().map(|w| w.path().to_path_buf());
    #[cfg(not(feature = "hdf5"))]
    {
        let _ = io;
        None
    }
}

fn writer_xdmf(io: &RootIo) -> Option<PathBuf> {
    #[cfg(feature = "hdf5")]
    return io
        .writer
        .as_ref()
        .and_then(|w| w.xdmf_path().map(Path::to_path_buf));
    #[cfg(not(feature = "hdf5"))]
    {
        let _ = io;
        None
    }
}

/// Buffers one receiver row on the ranks that own receivers (no allocation in the loop).
fn record(
    io: &mut Option<RootIo>,
    rec_u: &mut Vec<f64>,
    receivers: &[PointLocation],
    solver: &WaveSolver,
) {
    if let Some(io) = io.as_mut() {
        if io.nrec > 0 {
            io.rec_t.push(solver.time());
        }
    }
    for loc in receivers {
        rec_u.push(loc.interpolate(solver.u()));
    }
}

/// Gathers the buffered receiver rows to rank 0 and appends them to the file. Collective.
fn flush_receivers(
    io: &mut Option<RootIo>,
    rec_u: &mut Vec<f64>,
    comm: &dyn Comm,
) -> Result<(), DriverError> {
    let gathered = comm.gather_f64(rec_u);
    rec_u.clear();
    let Some(io) = io.as_mut() else {
        return Ok(());
    };
    let rows = io.rec_t.len();
    if io.nrec == 0 || rows == 0 {
        io.rec_t.clear();
        return Ok(());
    }
    let g = gathered.unwrap_or_default();
    let mut table = vec![0.0; rows * io.nrec];
    let (mut off, mut id) = (0usize, 0usize);
    for &c in &io.rec_counts {
        let c = c as usize;
        for r in 0..rows {
            for j in 0..c {
                table[r * io.nrec + io.rec_ids[id + j] as usize] = g[off + r * c + j];
            }
        }
        off += rows * c;
        id += c;
    }
    #[cfg(feature = "hdf5")]
    if let Some(w) = &mut io.writer {
        w.append_receivers(&io.rec_t, &table)?;
        io.rec_rows_written = w.receiver_rows();
    }
    io.rec_t.clear();
    Ok(())
}

/// Owned values of every rank in global node order, on rank 0. Collective.
fn gather_global(io: &Option<RootIo>, owned: &[f64], comm: &dyn Comm) -> Option<Vec<f64>> {
    let g = comm.gather_f64(owned)?;
    let io = io.as_ref()?;
    let mut out = vec![0.0; io.nodes];
    for (v, &i) in g.iter().zip(&io.owned_ids) {
        out[i as usize] = *v;
    }
    Some(out)
}

/// Writes one output step (receivers buffered since the last one, the field, the energy).
fn write_output(
    io: &mut Option<RootIo>,
    rec_u: &mut Vec<f64>,
    solver: &WaveSolver,
    energy: f64,
    comm: &dyn Comm,
) -> Result<(), DriverError> {
    flush_receivers(io, rec_u, comm)?;
    let has_writer = io.as_ref().is_some_and(|i| i.writer.is_some());
    let mut flag = [f64::from(u8::from(has_writer))];
    comm.max_f64(&mut flag);
    if flag[0] == 0.0 {
        return Ok(());
    }
    let u = gather_global(io, &solver.u()[solver.owned()], comm);
    #[cfg(feature = "hdf5")]
    if let (Some(io), Some(u)) = (io.as_mut(), u) {
        if let Some(w) = &mut io.writer {
            w.write_step(solver.time(), &u, energy)?;
        }
    }
    #[cfg(not(feature = "hdf5"))]
    let _ = (u, energy);
    Ok(())
}

/// Writes the checkpoint (through a temporary file and a rename). Collective.
fn write_checkpoint(
    cfg: &Config,
    solver: &WaveSolver,
    io: &mut Option<RootIo>,
    rec_u: &mut Vec<f64>,
    outputs: usize,
    e0: f64,
    comm: &dyn Comm,
) -> Result<(), DriverError> {
    // Receivers first, then everything pushed to the file, so the file holds every row the
    // checkpoint says it does even if the process is killed right after.
    flush_receivers(io, rec_u, comm)?;
    #[cfg(feature = "hdf5")]
    let flushed = match io.as_mut().and_then(|io| io.writer.as_mut()) {
        Some(w) => w.flush(),
        None => Ok(()),
    };
    #[cfg(not(feature = "hdf5"))]
    let flushed: Result<(), OutputError> = Ok(());
    let u = gather_global(io, &solver.u()[solver.owned()], comm);
    let up = gather_global(io, &solver.u_prev()[solver.owned()], comm);
    let mut ok = vec![0u8];
    if let Err(e) = flushed {
        ok = vec![1];
        ok.extend(e.to_string().into_bytes());
    } else if let (Some(io), Some(u), Some(u_prev)) = (io.as_ref(), u, up) {
        let ck = Checkpoint {
            job: io.job,
            nodes: io.nodes as u64,
            dt: solver.dt(),
            step: solver.steps_done() as u64,
            u,
            u_prev,
            outputs: outputs as u64,
            rec_rows: io.rec_rows_written as u64,
            initial_energy: e0,
        };
        let payload = crate::comm::to_bytes(&ck);
        let mut bytes = Vec::with_capacity(CHECKPOINT_HEAD + payload.len());
        bytes.extend(CHECKPOINT_MAGIC);
        bytes.extend(sha256(&payload));
        bytes.extend(payload);
        if let Err(e) = crate::output::write_atomic(&cfg.checkpoint.path, &bytes) {
            ok = vec![1];
            ok.extend(e.to_string().into_bytes());
        }
    }
    comm.broadcast_bytes(&mut ok);
    if ok[0] != 0 {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(&ok[1..]).into_owned(),
        ));
    }
    tracing::debug!("checkpoint at step {}", solver.steps_done());
    Ok(())
}

/// Reads and checks a checkpoint written by `write_checkpoint` for this job.
fn read_checkpoint(
    path: &Path,
    io: &RootIo,
    dt: f64,
    nsteps: usize,
    output_every: usize,
) -> Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < CHECKPOINT_HEAD || bytes[..6] != CHECKPOINT_MAGIC[..6] {
        return Err("not a wavecp checkpoint".into());
    }
    if bytes[..8] != CHECKPOINT_MAGIC {
        return Err(format!(
            "written by another version of wavecp (format {}, this one reads {}); start the run anew without --restart",
            String::from_utf8_lossy(&bytes[6..8]),
            String::from_utf8_lossy(&CHECKPOINT_MAGIC[6..8]),
        ));
    }
    let payload = &bytes[CHECKPOINT_HEAD..];
    if sha256(payload)[..] != bytes[8..CHECKPOINT_HEAD] {
        return Err("damaged: its checksum does not match its contents (a truncated or corrupted file); start the run anew without --restart".into());
    }
    let ck: Checkpoint = bincode::deserialize(payload)
        .map_err(|e| format!("damaged, although its checksum matches ({e})"))?;
    if ck.job != io.job {
        return Err("written for another job: the mesh, materials, boundaries, sources, initial state or receivers differ; start the run anew without --restart, or restore the job it was written for".into());
    }
    if ck.nodes as usize != io.nodes || ck.u.len() != io.nodes || ck.u_prev.len() != io.nodes {
        return Err(format!(
            "written for a mesh of {} nodes, this job has {}",
            ck.nodes, io.nodes
        ));
    }
    if ck.dt.to_bits() != dt.to_bits() {
        return Err(format!(
            "written with dt = {:e}, this job has dt = {dt:e} (time.dt, time.safety or time.end changed)",
            ck.dt
        ));
    }
    if ck.step > nsteps as u64 {
        return Err(format!(
            "taken at step {}, past the end of this job ({nsteps} steps)",
            ck.step
        ));
    }
    // Output steps kept: t = 0 and every `output.every`-th step up to the checkpoint's step, at
    // most (the last step is always written, so a run continued longer may have one more).
    let max_outputs = ck.step / output_every as u64 + 2;
    if ck.outputs == 0 || ck.outputs > max_outputs || ck.rec_rows > ck.step + 1 {
        return Err(format!(
            "inconsistent: {} output steps and {} receiver rows at step {}",
            ck.outputs, ck.rec_rows, ck.step
        ));
    }
    if !ck.initial_energy.is_finite() || ck.u.iter().chain(&ck.u_prev).any(|v| !v.is_finite()) {
        return Err("holds values that are not finite numbers".into());
    }
    Ok(ck)
}

/// Reads the checkpoint on rank 0, sends each rank its owned values and reopens the output
/// file at the checkpoint's position. Returns `(step, output steps, initial energy)`. Collective.
fn restore(
    cfg: &Config,
    solver: &mut WaveSolver,
    nsteps: usize,
    io: Option<&mut RootIo>,
    comm: &dyn Comm,
) -> Result<(usize, usize, f64), DriverError> {
    let path = &cfg.checkpoint.path;
    let mut head = Vec::new();
    let mut parts = None;
    if let Some(io) = io {
        let read = read_checkpoint(path, io, solver.dt(), nsteps, cfg.output.every);
        match read {
            Ok(ck) => {
                #[cfg(feature = "hdf5")]
                if !cfg.output.path.as_os_str().is_empty() {
                    let w = crate::output::VtkHdfWriter::reopen(
                        &cfg.output.path,
                        ck.outputs as usize,
                        ck.rec_rows as usize,
                        cfg.output.xdmf,
                    );
                    match w {
                        Ok(w) => {
                            io.writer = Some(w);
                            io.rec_rows_written = ck.rec_rows as usize;
                        }
                        Err(e) => {
                            head.push(1u8);
                            head.extend(e.to_string().into_bytes());
                        }
                    }
                }
                if head.is_empty() {
                    head.push(0u8);
                    head.extend(crate::comm::to_bytes(&(
                        ck.step,
                        ck.outputs,
                        ck.initial_energy,
                    )));
                    let mut per_rank = Vec::with_capacity(comm.size());
                    let mut off = 0usize;
                    for &c in &io.owned_counts {
                        let ids = &io.owned_ids[off..off + c];
                        off += c;
                        let u: Vec<f64> = ids.iter().map(|&i| ck.u[i as usize]).collect();
                        let up: Vec<f64> = ids.iter().map(|&i| ck.u_prev[i as usize]).collect();
                        per_rank.push(crate::comm::to_bytes(&(u, up)));
                    }
                    parts = Some(per_rank);
                }
            }
            Err(msg) => {
                head.push(1u8);
                head.extend(format!("checkpoint {}: {msg}", path.display()).into_bytes());
            }
        }
    }
    comm.broadcast_bytes(&mut head);
    if head.first() != Some(&0) {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(head.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    let (step, outputs, e0): (u64, u64, f64) =
        bincode::deserialize(&head[1..]).map_err(|e| DriverError::OtherRank(e.to_string()))?;
    let mine = comm.scatter_bytes(parts);
    let (u, up): (Vec<f64>, Vec<f64>) =
        bincode::deserialize(&mine).map_err(|e| DriverError::OtherRank(e.to_string()))?;
    solver.restore_on(&u, &up, step as usize, comm)?;
    Ok((step as usize, outputs as usize, e0))
}

/// The built-in demo: a 6 Hz Ricker source in a unit square with absorbing sides, 400 × 400
/// quads (160 801 nodes), three receivers, to t = 1.5, output every 25 steps to `wavecp_demo.vtkhdf`.
pub fn demo_config() -> Config {
    Config {
        mesh: MeshConfig {
            file: None,
            generate: Some(GenerateConfig {
                shape: CellShape::Quad,
                nx: 400,
                ny: 400,
                x: [0.0, 1.0],
                y: [0.0, 1.0],
            }),
        },
        material: crate::config::MaterialConfig {
            c: Some(1.0),
            ..Default::default()
        },
        boundary: vec![crate::config::BoundaryConfig {
            tags: ["bottom", "right", "top", "left"]
                .iter()
                .map(|s| crate::config::TagRef::Name((*s).into()))
                .collect(),
            kind: BoundaryKindConfig::Absorbing,
            value: 0.0,
            time_function: TimeFunctionKind::Constant,
            frequency: None,
            delay: None,
        }],
        source: vec![SourceConfig {
            position: [0.4, 0.45],
            frequency: 6.0,
            amplitude: 1.0,
            delay: None,
        }],
        initial: Default::default(),
        time: TimeConfig {
            end: 1.5,
            dt: None,
            safety: 0.9,
        },
        receiver: [[0.5, 0.75], [0.75, 0.5], [0.9, 0.9]]
            .iter()
            .enumerate()
            .map(|(i, p)| ReceiverConfig {
                position: *p,
                name: Some(format!("r{i}")),
            })
            .collect(),
        output: crate::config::OutputConfig {
            path: "wavecp_demo.vtkhdf".into(),
            every: 25,
            xdmf: true,
        },
        solver: Default::default(),
        checkpoint: Default::default(),
    }
}
