//! The command line: the arguments (clap) and the dispatch to one module per group of
//! subcommands. Nothing here computes; each module calls the library and prints.

mod bench;
mod couple;
mod device;
mod model;
mod solve;
mod surrogate;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "wavecp",
    version,
    about = "Explicit FE acoustic wave solver, its compressed CNN surrogate, and hybrid runs of both"
)]
pub struct Cli {
    /// Log filter (also WAVECP_LOG), e.g. `info`, `debug`, `warn`.
    #[arg(long, global = true, env = "WAVECP_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a job file.
    Solve(solve::SolveArgs),
    /// Run the built-in default case (no files needed).
    Demo(solve::DemoArgs),
    /// Generate a surrogate training/test dataset from FE simulations (HDF5).
    Dataset(surrogate::DatasetArgs),
    /// Train a surrogate model on a dataset.
    Train(surrogate::TrainArgs),
    /// Relative L2 error of a model on a dataset: per predicted frame and over rollouts.
    Eval(surrogate::EvalArgs),
    /// Compare models on one test set (the first is the reference): parameters, memory, time, errors.
    Compare(surrogate::CompareArgs),
    /// Calibrate a model's error indicator on held-out scenarios (hybrid tolerance in error
    /// units) and store it in the model file.
    Calibrate(couple::CalibrateArgs),
    /// Predict the frames after the first t_in frames of each sample of an HDF5 file.
    Predict(surrogate::PredictArgs),
    /// Model files: layer list and trainable parameters of a TOML architecture.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// What this machine offers for the CUDA path: driver, NVRTC, devices.
    Device(device::DeviceArgs),
    /// Mesh tools.
    Mesh {
        #[command(subcommand)]
        cmd: MeshCmd,
    },
    /// Benchmarks (JSON on stdout).
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// What a model holds: a TOML architecture's layers and trainable parameters; a trained
    /// model file's (.safetensors) besides its windows, grid, training record, the ranges of
    /// the scenarios it was trained on and its calibrations' thresholds.
    Info {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Records in a model file the ranges its dataset job drew the scenarios from, for a model
    /// trained before wavecp recorded them: a source is then reported out of range exactly
    /// when it lies outside them (rather than outside its training runs' extremes).
    Sampling {
        /// The model file (.safetensors), rewritten in place.
        model: PathBuf,
        /// The dataset job the model's training data came from.
        #[arg(long)]
        job: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum MeshCmd {
    /// Summary of a Gmsh MSH 4.1 file: counts, tags, names, bounding box, edge lengths.
    Info {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one command; `Ok(false)` when a run stopped early on a signal (exit status 3).
pub fn run(cmd: Cmd, comm: &dyn wavecp::comm::Comm) -> Result<bool> {
    let done = match cmd {
        Cmd::Solve(a) => return solve::solve(a, comm),
        Cmd::Demo(a) => return solve::demo(a, comm),
        Cmd::Dataset(a) => surrogate::dataset(a, comm),
        Cmd::Train(a) => surrogate::train(a),
        Cmd::Eval(a) => surrogate::eval(a),
        Cmd::Compare(a) => surrogate::compare(a),
        Cmd::Predict(a) => surrogate::predict(a),
        Cmd::Calibrate(a) => couple::calibrate(a),
        Cmd::Model {
            cmd: ModelCmd::Info { file, json },
        } => model::info(&file, json),
        Cmd::Model {
            cmd: ModelCmd::Sampling { model, job },
        } => model::sampling(&model, &job),
        Cmd::Device(a) => device::run(a),
        Cmd::Mesh {
            cmd: MeshCmd::Info { file, json },
        } => solve::mesh_info(&file, json),
        Cmd::Bench { cmd } => bench::run(cmd, comm),
    };
    done.map(|()| true)
}
