//! wavecp: explicit finite-element acoustic wave solver (the foundation of the surrogate work).
//!
//! Data flow: [`config::Config`] (TOML job) → [`mesh::Mesh`] (generated or Gmsh) →
//! [`fem`] (lumped mass, stiffness, boundary damping) → [`solver::WaveSolver`]
//! (central differences) → [`output`] (VTKHDF + XDMF, receivers, energy).

pub mod bench;
pub mod comm;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "hdf5")]
pub mod dataset;
pub mod driver;
pub mod fem;
pub mod limits;
pub mod mesh;
pub mod nn;
pub mod output;
pub mod partition;
pub mod progress;
pub mod solver;
pub mod sources;
#[cfg(feature = "hdf5")]
pub mod surrogate;
pub mod threads;
