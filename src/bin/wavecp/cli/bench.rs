//! `wavecp bench …`: the FE time loop, convolution layers, training steps and GPU kernels, each
//! printing JSON on stdout.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use wavecp::solver::OperatorKind;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Milliseconds per forward and forward+backward pass of one convolution layer.
    Conv(ConvArgs),
    /// Milliseconds per training step (forward, MSE, backward, clipped AdamW) of model files.
    Train(TrainArgs),
    /// Each GPU kernel family alone (GEMMs, implicit convolution, fused CP chain, GELU, batch
    /// gather) at the paper model's sizes, with achieved TFLOP/s or GB/s and the fraction of
    /// the device's roofline (CUDA only).
    Kernels(KernelsArgs),
    /// Time-loop throughput on Q1 and P1 squares of about `--nodes` nodes.
    Fe(FeArgs),
    /// Hybrid stepping against the FE alone over the FE node count, every window accepted,
    /// with the cost model's predicted speed-up beside the measured one; with `--job`, the
    /// speed-up–error curve of a hybrid job over `--tolerances` (trained weights, each point
    /// measured against the FE-only reference).
    Couple(CoupleArgs),
    /// A submodel job (`[coupling] mode = "submodel"`) over the outer mesh's size: at each
    /// `--cells` (cells a side of its generated mesh, `time.dt` from `time.safety`) the
    /// submodel beside the whole model, the cost ratio and the zone error.
    Submodel(SubmodelBenchArgs),
    /// One rank count of `bench fe --ranks` (run under mpirun by it).
    #[command(hide = true)]
    FeRanks(FeRanksArgs),
}

#[derive(clap::Args)]
pub struct ConvArgs {
    /// dense, pair or cp (comma-separated for several).
    #[arg(long, value_delimiter = ',', default_value = "dense,pair,cp")]
    pub kind: Vec<String>,
    #[arg(long, default_value_t = 3)]
    pub dims: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub cin: usize,
    #[arg(long, default_value_t = 32)]
    pub cout: usize,
    /// Input extent t,y,x (2-D ignores t).
    #[arg(long, value_delimiter = ',', default_value = "8,32,32")]
    pub size: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub kernel: usize,
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub threads: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// cpu, or cuda (device 0) or cuda:N (--threads is ignored there).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Model files (TOML), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "models/paper_dense.toml,models/paper_pair.toml,models/paper_cp.toml"
    )]
    pub model: Vec<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Input extent t,y,x (2-D models ignore t).
    #[arg(long, value_delimiter = ',', default_value = "8,64,64")]
    pub size: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub threads: Vec<usize>,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// cpu, or cuda (device 0) or cuda:N (--threads is ignored there).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(clap::Args)]
pub struct KernelsArgs {
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Divides the spatial extents (a quick run, e.g. on the CUDA emulator).
    #[arg(long, default_value_t = 1)]
    pub scale: usize,
    /// `cuda` or `cuda:N`: the kernels are GPU kernels.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Instead: every GEMM tile height and k split on the dense layer's three implicit
    /// GEMMs, and every fused CP chain tile, at each U-Net level of the paper models, the
    /// variant the rules choose marked `(chosen)`.
    #[arg(long)]
    pub sweep: bool,
}

#[derive(clap::Args)]
pub struct FeArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub nodes: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "csr,ebe")]
    pub operators: Vec<String>,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 7)]
    pub samples: usize,
    /// Rank counts to compare (e.g. `1,2`): each runs under `mpirun -np N` with one thread
    /// per rank, and the report gives the parallel efficiency against the first.
    #[arg(long, value_delimiter = ',')]
    pub ranks: Vec<usize>,
}

#[derive(clap::Args)]
pub struct CoupleArgs {
    /// Approximate FE node counts, smallest first (the cost model is fitted on the first).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub nodes: Vec<usize>,
    /// The network's architecture (its initial weights: the cost does not depend on them).
    #[arg(long, default_value = "models/paper_cp.toml")]
    pub model: PathBuf,
    /// Network grid side (points).
    #[arg(long, default_value_t = 64)]
    pub grid: usize,
    #[arg(long, default_value_t = 8)]
    pub t_in: usize,
    #[arg(long, default_value_t = 8)]
    pub t_out: usize,
    /// Time between frames.
    #[arg(long, default_value_t = 0.02)]
    pub frame_dt: f64,
    /// Windows after the warm-up.
    #[arg(long, default_value_t = 4)]
    pub windows: usize,
    /// residual, energy_change, energy_balance or fe_probe.
    #[arg(long, default_value = "residual")]
    pub indicator: String,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// cpu, cuda or cuda:N: where the network runs.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A hybrid job (with `[coupling]`): measure its speed-up and error at each of
    /// `--tolerances` instead of the cost sweep (the sweep's options are then ignored, save
    /// `--threads`).
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// Tolerances for `--job`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.03,0.05,0.1,0.2")]
    pub tolerances: Vec<f64>,
    /// Overrides of `--job`'s keys, as `wavecp solve --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(clap::Args)]
pub struct SubmodelBenchArgs {
    #[arg(long)]
    pub job: PathBuf,
    /// Cells a side of the outer mesh, comma-separated (each a multiple of the zone's cut).
    #[arg(long, value_delimiter = ',', default_value = "200,400,600,800,1000")]
    pub cells: Vec<usize>,
    /// Overrides of the job's keys, as `wavecp solve --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(clap::Args)]
pub struct FeRanksArgs {
    #[arg(long)]
    pub nodes: usize,
    #[arg(long)]
    pub steps: usize,
    #[arg(long)]
    pub samples: usize,
}

/// Runs one benchmark.
pub fn run(cmd: BenchCmd, comm: &dyn wavecp::comm::Comm) -> Result<()> {
    match cmd {
        BenchCmd::Conv(a) => conv(a),
        BenchCmd::Train(a) => train(a),
        BenchCmd::Kernels(a) => kernels(a),
        BenchCmd::Fe(a) if !a.ranks.is_empty() => fe_ranks(&a.ranks, a.nodes, a.steps, a.samples),
        BenchCmd::Fe(a) => fe(a),
        BenchCmd::Couple(a) => couple(a),
        BenchCmd::Submodel(a) => submodel(a, comm),
        BenchCmd::FeRanks(a) => fe_one_rank_count(a, comm),
    }
}

fn conv(a: ConvArgs) -> Result<()> {
    let ConvArgs {
        kind,
        dims,
        batch,
        cin,
        cout,
        size,
        kernel,
        rank,
        threads,
        samples,
        device,
    } = a;
    let size = bench_size(&size, &threads, batch, samples, "samples")?;
    let gpu = bench_device(&device)?;
    let mut out = vec![];
    for k in &kind {
        let kind = match k.as_str() {
            "dense" => wavecp::nn::model::ConvKind::Dense,
            "pair" => wavecp::nn::model::ConvKind::Pair,
            "cp" => wavecp::nn::model::ConvKind::Cp,
            other => anyhow::bail!("unknown convolution kind `{other}` (dense, pair, cp)"),
        };
        let shape = wavecp::bench::ConvShape {
            kind,
            dims,
            batch,
            cin,
            cout,
            size,
            kernel,
            rank,
        };
        if let Some(ordinal) = gpu {
            out.push(bench_conv_cuda(&shape, samples, ordinal)?);
            continue;
        }
        for &t in &threads {
            out.push(serde_json::to_value(wavecp::bench::run_conv(
                &shape, t, samples,
            )?)?);
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let TrainArgs {
        model,
        batch,
        size,
        threads,
        steps,
        warmup,
        device,
    } = a;
    let size = bench_size(&size, &threads, batch, steps, "steps")?;
    let gpu = bench_device(&device)?;
    let mut out = vec![];
    for m in &model {
        if let Some(ordinal) = gpu {
            out.push(bench_train_cuda(m, batch, size, steps, warmup, ordinal)?);
            continue;
        }
        for &t in &threads {
            out.push(serde_json::to_value(wavecp::bench::run_train(
                m, batch, size, t, steps, warmup,
            )?)?);
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn kernels(a: KernelsArgs) -> Result<()> {
    let KernelsArgs {
        samples,
        scale,
        device,
        sweep,
    } = a;
    let Some(ordinal) = bench_device(&device)? else {
        anyhow::bail!("bench kernels times GPU kernels: --device cuda (got `{device}`)");
    };
    if samples == 0 || scale == 0 || scale > 16 {
        anyhow::bail!("--samples must be at least 1 and --scale 1..=16");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&bench_kernels_cuda(samples, scale, sweep, ordinal)?)?
    );
    Ok(())
}

fn fe(a: FeArgs) -> Result<()> {
    let FeArgs {
        nodes,
        threads,
        operators,
        steps,
        samples,
        ..
    } = a;
    let ops = operators
        .iter()
        .map(|o| match o.as_str() {
            "csr" => Ok(OperatorKind::Csr),
            "ebe" => Ok(OperatorKind::Ebe),
            other => Err(anyhow::anyhow!("unknown operator `{other}` (csr or ebe)")),
        })
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(
        steps > 0 && samples > 0 && !threads.contains(&0),
        "steps, samples and thread counts must be positive"
    );
    let report = wavecp::bench::run_fe(nodes, &threads, &ops, steps, samples)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(feature = "hdf5")]
fn couple(a: CoupleArgs) -> Result<()> {
    let CoupleArgs {
        nodes,
        model,
        grid,
        t_in,
        t_out,
        frame_dt,
        windows,
        indicator,
        threads,
        device,
        job,
        tolerances,
        set,
    } = a;
    if let Some(job) = job {
        return pareto(&job, &tolerances, &set, threads);
    }
    anyhow::ensure!(
        !nodes.is_empty() && nodes.iter().all(|&n| n >= 9),
        "--nodes takes node counts of at least 9"
    );
    anyhow::ensure!(
        grid >= 2 && t_in >= 2 && t_out >= 1 && windows >= 1 && threads >= 1,
        "--grid must be at least 2, --t-in 2, --t-out, --windows and --threads 1"
    );
    anyhow::ensure!(
        frame_dt.is_finite() && frame_dt > 0.0,
        "--frame-dt must be a positive number"
    );
    let b = wavecp::coupling::bench::CoupleBench {
        nodes,
        model,
        grid,
        t_in,
        t_out,
        frame_dt,
        windows,
        indicator,
        device: device
            .parse()
            .map_err(|e| anyhow::anyhow!("--device: {e}"))?,
    };
    let report = wavecp::threads::with_threads(threads, || wavecp::coupling::bench::run(&b))
        .map_err(|e| anyhow::anyhow!(e))??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `bench couple --job`: the hybrid job's speed-up and error over the tolerances.
#[cfg(feature = "hdf5")]
fn pareto(job: &std::path::Path, tolerances: &[f64], set: &[String], threads: usize) -> Result<()> {
    anyhow::ensure!(
        !tolerances.is_empty() && tolerances.iter().all(|t| t.is_finite() && *t >= 0.0),
        "--tolerances takes non-negative numbers"
    );
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    let cfg = wavecp::config::Config::load(job, set)?;
    let base = job.parent().map(PathBuf::from).unwrap_or_default();
    let name = job.display().to_string();
    let report = wavecp::threads::with_threads(threads, || {
        wavecp::coupling::pareto::pareto(&cfg, &base, &name, tolerances)
    })
    .map_err(|e| anyhow::anyhow!(e))??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn couple(_: CoupleArgs) -> Result<()> {
    anyhow::bail!("bench couple needs the surrogate's model files: build with the `hdf5` feature")
}

fn fe_one_rank_count(a: FeRanksArgs, comm: &dyn wavecp::comm::Comm) -> Result<()> {
    let FeRanksArgs {
        nodes,
        steps,
        samples,
    } = a;
    let case = wavecp::bench::run_fe_ranks(nodes, steps, samples, comm)?;
    if comm.rank() == 0 {
        println!("{}", serde_json::to_string(&case)?);
    }
    Ok(())
}

/// Checks the arguments shared by `bench conv` and `bench train`; returns `--size` as `[t, y, x]`.
fn bench_size(
    size: &[usize],
    threads: &[usize],
    batch: usize,
    count: usize,
    count_name: &str,
) -> Result<[usize; 3]> {
    anyhow::ensure!(
        count > 0 && batch > 0 && !threads.contains(&0),
        "{count_name}, batch and threads must be positive"
    );
    size.try_into()
        .map_err(|_| anyhow::anyhow!("--size takes t,y,x"))
}

/// A benchmark's `--device`: `cpu` (None) or the CUDA device's ordinal (`cuda`, `cuda:N`).
fn bench_device(device: &str) -> Result<Option<usize>> {
    match device.parse::<wavecp::nn::Device>() {
        Ok(wavecp::nn::Device::Cpu) => Ok(None),
        Ok(wavecp::nn::Device::Cuda(n)) => Ok(Some(n)),
        _ => anyhow::bail!("unknown --device `{device}` (cpu, cuda, cuda:N)"),
    }
}

/// `bench fe --ranks`: one `mpirun` per rank count, efficiencies against the first count.
fn fe_ranks(ranks: &[usize], nodes: usize, steps: usize, samples: usize) -> Result<()> {
    anyhow::ensure!(
        !ranks.contains(&0) && steps > 0 && samples > 0,
        "--ranks, --steps and --samples must be positive"
    );
    let exe = std::env::current_exe().context("path of this wavecp")?;
    let mut cases: Vec<wavecp::bench::FeRanksCase> = Vec::new();
    let launcher = std::env::var("WAVECP_MPIRUN").unwrap_or_else(|_| "mpirun".into());
    for &r in ranks {
        let mut cmd = std::process::Command::new(&launcher);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Open MPI refuses root unless told twice; CI containers run as root.
            cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        }
        // Pinned when every rank has a core of its own; oversubscribed runs float.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bind = if r <= cores { "core" } else { "none" };
        let out = cmd
            .args(["--oversubscribe", "--bind-to", bind, "-np", &r.to_string()])
            .arg(&exe)
            .args(["--log", "warn", "bench", "fe-ranks"])
            .args(["--nodes", &nodes.to_string()])
            .args(["--steps", &steps.to_string()])
            .args(["--samples", &samples.to_string()])
            .output()
            .context("cannot start mpirun (install Open MPI: bash scripts/setup)")?;
        anyhow::ensure!(
            out.status.success(),
            "mpirun -np {r} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let case = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading the report of {r} rank(s)"))?;
        cases.push(case);
    }
    let base = cases[0].dof_updates_per_s / cases[0].ranks as f64;
    let eff: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "ranks": c.ranks,
                "speedup": c.dof_updates_per_s / cases[0].dof_updates_per_s,
                "parallel_efficiency": c.dof_updates_per_s / (base * c.ranks as f64),
                "halo_over_ideal": if c.ideal_halo_values_per_step > 0 {
                    c.halo_values_per_step as f64 / c.ideal_halo_values_per_step as f64
                } else { f64::NAN },
            })
        })
        .collect();
    let report = serde_json::json!({ "cases": cases, "scaling": eff });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(feature = "cuda")]
fn bench_conv_cuda(
    shape: &wavecp::bench::ConvShape,
    samples: usize,
    ordinal: usize,
) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(wavecp::cuda::bench::run_conv(
        shape, samples, ordinal,
    )?)?)
}

#[cfg(not(feature = "cuda"))]
fn bench_conv_cuda(_: &wavecp::bench::ConvShape, _: usize, _: usize) -> Result<serde_json::Value> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

#[cfg(feature = "cuda")]
fn bench_train_cuda(
    m: &std::path::Path,
    batch: usize,
    size: [usize; 3],
    steps: usize,
    warmup: usize,
    ordinal: usize,
) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(wavecp::cuda::bench::run_train(
        m, batch, size, steps, warmup, ordinal,
    )?)?)
}

#[cfg(not(feature = "cuda"))]
fn bench_train_cuda(
    _: &std::path::Path,
    _: usize,
    _: [usize; 3],
    _: usize,
    _: usize,
    _: usize,
) -> Result<serde_json::Value> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

#[cfg(feature = "cuda")]
fn bench_kernels_cuda(
    samples: usize,
    scale: usize,
    sweep: bool,
    ordinal: usize,
) -> Result<serde_json::Value> {
    use wavecp::cuda::bench::{run_kernels, run_sweep};
    Ok(serde_json::to_value(if sweep {
        run_sweep(samples, scale, ordinal)?
    } else {
        run_kernels(samples, scale, ordinal)?
    })?)
}

#[cfg(not(feature = "cuda"))]
fn bench_kernels_cuda(_: usize, _: usize, _: bool, _: usize) -> Result<serde_json::Value> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

/// `bench submodel`: the job's submodel against its whole model over the outer mesh's size.
#[cfg(feature = "hdf5")]
fn submodel(a: SubmodelBenchArgs, comm: &dyn wavecp::comm::Comm) -> Result<()> {
    anyhow::ensure!(a.threads >= 1, "--threads must be at least 1");
    anyhow::ensure!(
        !a.cells.is_empty() && a.cells.iter().all(|&n| n >= 2),
        "--cells takes cell counts of at least 2"
    );
    let base = a.job.parent().map(PathBuf::from).unwrap_or_default();
    let mut points = Vec::new();
    for &n in &a.cells {
        let mut set = a.set.clone();
        set.push(format!("mesh.generate.nx={n}"));
        set.push(format!("mesh.generate.ny={n}"));
        let mut cfg = wavecp::config::Config::load(&a.job, &set)?;
        cfg.output.path = PathBuf::new();
        let opts = wavecp::coupling::subrun::SubmodelOptions {
            reference: true,
            ..Default::default()
        };
        let s = wavecp::threads::with_threads(a.threads, || {
            wavecp::coupling::subrun::run_submodel(&cfg, &base, &opts, comm)
        })
        .map_err(|e| anyhow::anyhow!(e))?
        .with_context(|| format!("{} at {n} x {n} cells", a.job.display()))?;
        tracing::info!(
            "{n} x {n} cells: {} outer nodes, cost ratio {:.2}, zone error {:.3e}",
            s.outer_nodes,
            s.cost_ratio.unwrap_or(f64::NAN),
            s.max_rel_l2_error.unwrap_or(f64::NAN)
        );
        points.push(serde_json::json!({ "cells": n, "submodel": s }));
    }
    let report = serde_json::json!({
        "job": a.job.display().to_string(),
        "threads": a.threads,
        "points": points,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn submodel(_: SubmodelBenchArgs, _: &dyn wavecp::comm::Comm) -> Result<()> {
    anyhow::bail!("bench submodel: this wavecp was built without the `hdf5` feature, which the surrogate's files need")
}
