//! The integration-test binary (one binary keeps link time down): every test module is listed here.

mod alloc;
mod common;
mod config;
mod convergence;
mod dataset;
mod energy;
mod mesh;
mod mpi;
mod nn;
mod nn_model;
mod output;
mod solver;
mod source;
mod surrogate;
