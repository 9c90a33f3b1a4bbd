//! wavecp: an explicit finite-element acoustic wave solver and an a-priori compressed CNN
//! surrogate of it.
//!
//! # Crate map
//!
//! ```text
//! config     TOML job, --set overrides, errors that name the key
//! mesh       generated rectangles, Gmsh MSH 4.1, point location
//! comm       serial | MPI, reproducible sums;  partition: METIS/RCB parts with halos
//! fem        elements, lumped mass, CSR stiffness, absorbing damping;  sources
//! solver     WaveSolver: central differences, Lanczos stability limit, energy
//! output     VTKHDF + XDMF + CSV tables, the running-file lock, atomic writes
//! sim        Simulation (advance, state, restore) + observers: output, checkpoints, signals;
//!            the job driver (setup, distribute, restart)
//! coupling   TimeStepper: what schedulers drive (the FE simulation today); mesh ↔ zone-grid
//!            transfers; the hand-back of a forecast to the solver
//! dataset    solver runs sampled into frames on a zone grid
//! nn         the network on the CPU (the reference);  cuda: the same ops as NVRTC kernels;
//!            one graph walker (nn::graph) runs a model on either
//! surrogate  windows, training, model files, evaluation and prediction
//! ```
//!
//! **The layer rule** (the aim): a module uses only modules above it in this list; `limits`,
//! `progress` and `threads` are utilities anyone may use, and `bench` times the others. Today
//! three exceptions remain: `config` names enums defined below it (cell shape, partition
//! method, operator kind), `mesh` and `fem` use each other, and `cuda` borrows `bench`'s timing
//! helpers. Solver and network code never name `cudarc` or `mpi` types: they see
//! `comm::Comm` and the backend. Physics is f64, the network f32.
//!
//! **Features**: `hdf5` (output, datasets, the surrogate's files), `mpi` (rsmpi), `cuda`
//! (cudarc, loaded at run time); all on by default, and every subset builds.

pub mod bench;
pub mod comm;
pub mod config;
pub mod coupling;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "hdf5")]
pub mod dataset;
pub mod fem;
pub mod limits;
pub mod mesh;
pub mod nn;
pub mod output;
pub mod partition;
pub mod progress;
pub mod sim;
pub mod solver;
pub mod sources;
#[cfg(feature = "hdf5")]
pub mod surrogate;
pub mod threads;
