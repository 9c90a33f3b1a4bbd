//! What a coupled run adds to a run's output steps and checkpoints, shared between its time
//! loop (which knows who stepped, the indicator, the reference field) and the run's observers
//! (which write the file and the checkpoint).

use std::sync::{Arc, Mutex};

/// One extra point field at an output step.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtraField {
    /// This rank's owned values, local order (as [`super::Simulation::u`]).
    Values(Vec<f64>),
    /// The step's `u` itself (the reference at the start, before the runs part).
    SameAsU,
    /// One value at every node (which stepper produced the step).
    Constant(f64),
}

/// The extras of one output step, in [`crate::output::StepExtras`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraStep {
    pub step: usize,
    pub fields: Vec<ExtraField>,
    pub values: Vec<f64>,
}

/// An output step the simulation never stood at (a forecast frame inside an accepted
/// surrogate window): its time, this rank's owned values of `u`, and its extras.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraFrame {
    pub time: f64,
    pub u: Vec<f64>,
    pub extras: ExtraStep,
}

/// The shared part: the next output step's extras, set before the observers see that step,
/// the frames to write before it, and the coupling's own state, which a checkpoint keeps and
/// a restart gives back.
#[derive(Debug, Default)]
pub struct Extras {
    pub at: Option<ExtraStep>,
    /// Written, in order, before the next step the output observer sees (their energy is not
    /// known: NaN; receivers are not sampled there).
    pub frames: Vec<ExtraFrame>,
    /// Opaque bytes; empty when the coupling has none yet.
    pub state: Vec<u8>,
}

/// [`Extras`] as the time loop and the observers hold them.
pub type SharedExtras = Arc<Mutex<Extras>>;

/// Locks the extras; a poisoned lock (a panic elsewhere while holding it) still holds data
/// that was whole before the panic, which is all a checkpoint or an output step reads.
pub fn lock(x: &SharedExtras) -> std::sync::MutexGuard<'_, Extras> {
    x.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
