//! The integration-test binary (one binary keeps link time down): every test module is listed here.
//! Modules that need HDF5 or MPI are left out of builds without those features (the GPU bundle
//! of `scripts/gpu-check` is built with `--no-default-features --features cuda`).

mod alloc;
mod audit;
mod common;
#[cfg(feature = "hdf5")]
mod condition;
#[cfg(feature = "hdf5")]
mod conditioned;
mod config;
mod convergence;
mod coupling;
mod cubic;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "hdf5")]
mod dataset;
mod energy;
mod energy_source;
mod fuzz;
mod grid_learned;
mod grid_seam;
mod handback;
mod handback_budget;
mod handback_check;
mod mesh;
#[cfg(feature = "hdf5")]
mod model_info;
#[cfg(all(feature = "mpi", feature = "hdf5"))]
mod mpi;
mod nn;
mod nn_model;
#[cfg(feature = "hdf5")]
mod out_of_range_cal;
#[cfg(feature = "hdf5")]
mod output;
#[cfg(feature = "hdf5")]
mod pareto;
mod probe_short;
mod retake;
mod scale;
#[cfg(feature = "hdf5")]
mod scenario_rule;
mod sim;
mod solver;
mod source;
mod submodel;
#[cfg(feature = "hdf5")]
mod submodel_loop;
#[cfg(feature = "hdf5")]
mod surrogate;
mod transfer_blocks;
