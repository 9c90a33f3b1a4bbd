//! The FE run as parts: a [`Simulation`] owns the solver and its state and is advanced from
//! outside; [`Observer`]s act after each step (output, checkpoints, signals, progress); the job
//! driver ([`run`], [`run_on`]) builds one from a job file and runs it with its observers.
//!
//! This is the code base's one time loop: `wavecp solve`, `wavecp dataset` and `wavecp bench
//! fe` all advance a `Simulation`, and so will the coupling's steppers.
//!
//! ```text
//! setup.rs       job → mesh, discrete problem, time step (steps 1–3), DriverError, demo job
//! distribute.rs  rank 0 builds and partitions; each rank gets its part; path checks
//! checkpoint.rs  the restart file: written, checked, restored into a Simulation
//! extras.rs      what a coupled run adds to output steps and checkpoints
//! hosted.rs      a simulation a host program steps (the C ABI, Fortran, Python)
//! observers.rs   output + receivers, checkpoints + signals, progress, crash hooks
//! run.rs         run / run_on: a Simulation and its observers from a job; the summary
//! ```

mod checkpoint;
mod distribute;
pub mod extras;
mod hosted;
mod observers;
mod run;
mod setup;

pub use hosted::Hosted;
pub use run::{
    from_job, run, run_on, run_on_with, AfterStep, Coupled, Drive, RunOptions, RunSummary,
};
pub use setup::{
    demo_config, load_mesh, point_source, setup, time_function, time_step, DriverError, Setup,
    MAX_STEPS,
};

use crate::comm::{Comm, Serial};
use crate::partition::Layout;
use crate::solver::WaveSolver;
use std::time::{Duration, Instant};

/// An FE simulation that can be advanced, inspected, saved and restored from outside: the
/// solver (both time levels, the step), the communicator it runs on, and the energy of its
/// initial state (the reference the summary and the energy checks compare against).
///
/// Field accessors return this rank's owned values in its local layout ([`Simulation::layout`]
/// maps them to global node ids). `advance` is collective on a decomposed problem: every rank
/// advances by the same number of steps.
pub struct Simulation<'c> {
    solver: WaveSolver,
    comm: &'c dyn Comm,
    initial_energy: f64,
    compute: Duration,
    steps_run: usize,
}

/// Everything needed to continue a [`Simulation`] bit for bit on the same layout: the step,
/// both time levels (this rank's owned values) and the initial energy. What a run has written
/// (output steps, receiver rows) belongs to the observers that wrote it: a checkpoint file
/// stores it beside the state, and a coupling that rolls a step back keeps its output as is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub step: usize,
    pub u: Vec<f64>,
    pub u_prev: Vec<f64>,
    pub initial_energy: f64,
}

/// What observers tell the loop after a step.
#[derive(Debug, Default)]
pub struct Control {
    /// End the run after this step (a stop signal, a coupling's decision).
    pub stop: bool,
}

/// Acts after each step of [`Simulation::run`]: writes output, checkpoints, shows progress,
/// decides to stop. `C` is what the observers of one run share (the output position for
/// `wavecp solve`), so that, say, a checkpoint records exactly what the output file holds.
pub trait Observer<C = ()> {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        shared: &mut C,
        ctl: &mut Control,
    ) -> Result<(), DriverError>;
}

impl<'c> Simulation<'c> {
    /// A simulation of `solver`, whose initial state (and time step) is set, on the ranks of
    /// `comm`. Computes the initial energy (collective) and refuses one that is not finite.
    pub fn new(solver: WaveSolver, comm: &'c dyn Comm) -> Result<Self, DriverError> {
        let initial_energy = solver.energy_on(comm);
        if !initial_energy.is_finite() {
            return Err(DriverError::EnergyOverflow {
                step: solver.steps_done(),
                time: solver.time(),
            });
        }
        Ok(Simulation {
            solver,
            comm,
            initial_energy,
            compute: Duration::ZERO,
            steps_run: 0,
        })
    }

    /// Advances `n` steps. Collective; allocation-free.
    pub fn advance(&mut self, n: usize) {
        let t = Instant::now();
        for _ in 0..n {
            self.solver.step_on(self.comm);
        }
        self.compute += t.elapsed();
        self.steps_run += n;
    }

    /// Advances to step `last`, calling each observer in order after every step, and stops
    /// when one sets [`Control::stop`]. Returns whether one did (also at `last` itself, so a
    /// caller running a long loop in segments does not lose a stop request at a segment's
    /// end). Collective.
    pub fn run<C>(
        &mut self,
        last: usize,
        shared: &mut C,
        observers: &mut [&mut dyn Observer<C>],
    ) -> Result<bool, DriverError> {
        while self.steps_done() < last {
            self.advance(1);
            let mut ctl = Control::default();
            for o in observers.iter_mut() {
                o.after_step(self, shared, &mut ctl)?;
            }
            if ctl.stop {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn time(&self) -> f64 {
        self.solver.time()
    }

    pub fn dt(&self) -> f64 {
        self.solver.dt()
    }

    pub fn steps_done(&self) -> usize {
        self.solver.steps_done()
    }

    /// This rank's owned values of the field at `time()`.
    pub fn u(&self) -> &[f64] {
        &self.solver.u()[self.solver.owned()]
    }

    /// This rank's owned values one step earlier.
    pub fn u_prev(&self) -> &[f64] {
        &self.solver.u_prev()[self.solver.owned()]
    }

    /// Which global nodes this rank owns and holds as ghosts.
    pub fn layout(&self) -> &Layout {
        self.solver.layout()
    }

    pub fn comm(&self) -> &'c dyn Comm {
        self.comm
    }

    pub fn solver(&self) -> &WaveSolver {
        &self.solver
    }

    /// Continues from the field `u` and velocity `v` (this rank's owned values) at step
    /// `step`: how a forecast hands the field back (see [`WaveSolver::start_from_on`]). The
    /// initial energy is kept. Collective.
    pub fn start_from(&mut self, u: &[f64], v: &[f64], step: usize) -> Result<(), DriverError> {
        self.solver.start_from_on(u, v, step, self.comm)?;
        Ok(())
    }

    /// The solver, for what changes between steps (node-by-node boundary values).
    pub fn solver_mut(&mut self) -> &mut WaveSolver {
        &mut self.solver
    }

    /// The discrete energy now. Collective.
    pub fn energy(&self) -> f64 {
        self.solver.energy_on(self.comm)
    }

    pub fn initial_energy(&self) -> f64 {
        self.initial_energy
    }

    /// Time spent advancing (the halo exchange included), and the steps it took.
    pub fn compute_time(&self) -> Duration {
        self.compute
    }

    pub fn steps_run(&self) -> usize {
        self.steps_run
    }

    pub fn state(&self) -> State {
        State {
            step: self.steps_done(),
            u: self.u().to_vec(),
            u_prev: self.u_prev().to_vec(),
            initial_energy: self.initial_energy,
        }
    }

    /// Continues from `s` (taken on this layout, or scattered to it from a checkpoint).
    /// Collective: ghosts are filled from the neighbours.
    pub fn restore(&mut self, s: &State) -> Result<(), DriverError> {
        self.solver.restore_on(&s.u, &s.u_prev, s.step, self.comm)?;
        self.initial_energy = s.initial_energy;
        Ok(())
    }
}

impl Simulation<'static> {
    /// A simulation on one rank.
    pub fn serial(solver: WaveSolver) -> Result<Self, DriverError> {
        static SERIAL: Serial = Serial;
        Simulation::new(solver, &SERIAL)
    }
}
