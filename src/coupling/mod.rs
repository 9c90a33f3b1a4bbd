//! The seam the coupling plugs into: a [`TimeStepper`] is anything that advances in time and
//! can be saved and restored (MFEM's `ODESolver::Step`, FMI's get/set FMU state), so that a
//! scheduler can drive the FE solver, the surrogate or a submodel alike, try a step and take it
//! back. The FE [`Simulation`] is the first implementation; the surrogate stepper, the hybrid
//! scheduler and the submodel driver come next (issues 18–20).

#[cfg(feature = "hdf5")]
pub mod bench;
#[cfg(feature = "hdf5")]
pub mod calibrate;
#[cfg(feature = "hdf5")]
mod calibrate_split;
#[cfg(feature = "hdf5")]
mod demo;
pub mod error_model;
pub mod grid_indicators;
pub mod handback;
#[cfg(feature = "hdf5")]
pub mod hosted;
pub mod hybrid;
pub mod indicators;
#[cfg(feature = "hdf5")]
pub mod network;
#[cfg(feature = "hdf5")]
pub mod pareto;
#[cfg(feature = "hdf5")]
pub mod points;
#[cfg(feature = "hdf5")]
pub mod solve;
#[cfg(feature = "hdf5")]
mod subcheck;
#[cfg(feature = "hdf5")]
pub mod subhost;
pub mod submodel;
#[cfg(feature = "hdf5")]
pub mod subrun;
pub mod transfer;

use crate::sim::{DriverError, Simulation, State};

/// Any failure of a coupled step.
#[derive(Debug, thiserror::Error)]
pub enum CouplingError {
    #[error(transparent)]
    Simulation(#[from] DriverError),
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
    /// The pieces of a coupled run do not fit together (both sides named).
    #[error("coupling: {0}")]
    Setup(String),
}

/// Advances in time by whole steps of a fixed `dt`; `state` and `restore` continue bit for bit.
///
/// `advance` is collective when the stepper spans several ranks: every rank calls it with the
/// same `n`. `restore` takes a state this stepper (or one of the same problem and layout)
/// produced.
pub trait TimeStepper {
    /// Everything needed to continue bit for bit.
    type State: Clone;

    /// The time of the current field: `steps_done() · dt()` from the stepper's start.
    fn time(&self) -> f64;
    fn dt(&self) -> f64;
    fn steps_done(&self) -> usize;
    fn advance(&mut self, n: usize) -> Result<(), CouplingError>;
    fn state(&self) -> Self::State;
    fn restore(&mut self, state: &Self::State) -> Result<(), CouplingError>;
}

impl TimeStepper for Simulation<'_> {
    type State = State;

    fn time(&self) -> f64 {
        Simulation::time(self)
    }

    fn dt(&self) -> f64 {
        Simulation::dt(self)
    }

    fn steps_done(&self) -> usize {
        Simulation::steps_done(self)
    }

    fn advance(&mut self, n: usize) -> Result<(), CouplingError> {
        Simulation::advance(self, n);
        Ok(())
    }

    fn state(&self) -> State {
        Simulation::state(self)
    }

    fn restore(&mut self, state: &State) -> Result<(), CouplingError> {
        Ok(Simulation::restore(self, state)?)
    }
}
