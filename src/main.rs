//! The `wavecp` command line: solve, demo, mesh info, bench.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wavecp::config::Config;
use wavecp::driver::{self, RunOptions};
use wavecp::solver::OperatorKind;

#[derive(Parser)]
#[command(
    name = "wavecp",
    version,
    about = "Explicit FE acoustic wave solver (and, later, its CNN surrogate)"
)]
struct Cli {
    /// Log filter (also WAVECP_LOG), e.g. `info`, `debug`, `warn`.
    #[arg(long, global = true, env = "WAVECP_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a job file.
    Solve {
        job: PathBuf,
        /// Override a job key, e.g. `--set time.end=0.5 --set source.0.frequency=6`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Continue from the job's checkpoint (`checkpoint.path`) if it exists, else start at t = 0.
        #[arg(long)]
        restart: bool,
        /// Testing aid: abort (as a crash would) after this many output steps.
        #[arg(long, hide = true)]
        abort_after_outputs: Option<usize>,
        /// Testing aid: behave as if SIGTERM arrived after this step.
        #[arg(long, hide = true)]
        stop_after_steps: Option<usize>,
        /// Testing aid: `RANK:STEP`: that rank exits at once after that step.
        #[arg(long, hide = true)]
        fail_rank_at: Option<String>,
        /// Testing aid: SIGKILL itself after this step (its output and checkpoint included).
        #[arg(long, hide = true)]
        kill_at_step: Option<usize>,
        /// Testing aid: after this many output steps, create `FILE.paused` next to the running
        /// output and wait until it is removed.
        #[arg(long, hide = true)]
        pause_after_outputs: Option<usize>,
    },
    /// Run the built-in default case (no files needed).
    Demo {
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Generate a surrogate training/test dataset from FE simulations (HDF5).
    Dataset {
        job: PathBuf,
        /// Which split(s) of the job to generate.
        #[arg(long, value_parser = ["train", "test", "all"], default_value = "all")]
        split: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Replace an existing file that was made from a different job.
        #[arg(long)]
        overwrite: bool,
        #[arg(long)]
        json: bool,
        /// Testing aid: abort (as a crash would) after this many samples were written.
        #[arg(long, hide = true)]
        abort_after_samples: Option<usize>,
    },
    /// Train a surrogate model on a dataset.
    Train {
        job: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue from `<output.dir>/checkpoint.safetensors`.
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        json: bool,
        /// auto (CUDA device 0 if it opens, else the CPU, saying why), cpu, cuda (device 0) or
        /// cuda:N.
        #[arg(long, default_value = "cpu")]
        device: wavecp::nn::Device,
        /// Testing aid: stop after this many epochs (as a time limit would).
        #[arg(long, hide = true)]
        stop_after_epochs: Option<usize>,
    },
    /// Relative L2 error of a model on a dataset: per predicted frame and over rollouts.
    Eval {
        model: PathBuf,
        dataset: PathBuf,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long)]
        json: bool,
        /// auto, cpu, cuda or cuda:N (see `train --device`).
        #[arg(long, default_value = "cpu")]
        device: wavecp::nn::Device,
    },
    /// Compare models on one test set (the first is the reference): parameters, memory, time, errors.
    Compare {
        test: PathBuf,
        models: Vec<PathBuf>,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long)]
        json: bool,
        /// auto, cpu, cuda or cuda:N (see `train --device`).
        #[arg(long, default_value = "cpu")]
        device: wavecp::nn::Device,
    },
    /// Predict the frames after the first t_in frames of each sample of an HDF5 file.
    Predict {
        model: PathBuf,
        input: PathBuf,
        #[arg(long, short, default_value = "prediction.h5")]
        output: PathBuf,
        /// auto, cpu, cuda or cuda:N (see `train --device`).
        #[arg(long, default_value = "cpu")]
        device: wavecp::nn::Device,
    },
    /// Model files: layer list and trainable parameters of a TOML architecture.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// What this machine offers for the CUDA path: driver, NVRTC, devices.
    Device {
        #[arg(long)]
        json: bool,
        /// Also compile every kernel with NVRTC (no GPU needed) and write DIR/<file>.ptx, for
        /// `ptxas -v` register and spill reports (scripts/ptxas-report).
        #[arg(long, value_name = "DIR")]
        emit_ptx: Option<std::path::PathBuf>,
        /// Architecture for --emit-ptx.
        #[arg(long, default_value = "compute_90")]
        arch: String,
    },
    /// Mesh tools.
    Mesh {
        #[command(subcommand)]
        cmd: MeshCmd,
    },
    /// Benchmarks (JSON on stdout).
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Layers, output channels and trainable parameters (TOML architecture or .safetensors model).
    Info {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MeshCmd {
    /// Summary of a Gmsh MSH 4.1 file: counts, tags, names, bounding box, edge lengths.
    Info {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Milliseconds per forward and forward+backward pass of one convolution layer.
    Conv {
        /// dense, pair or cp (comma-separated for several).
        #[arg(long, value_delimiter = ',', default_value = "dense,pair,cp")]
        kind: Vec<String>,
        #[arg(long, default_value_t = 3)]
        dims: usize,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 32)]
        cin: usize,
        #[arg(long, default_value_t = 32)]
        cout: usize,
        /// Input extent t,y,x (2-D ignores t).
        #[arg(long, value_delimiter = ',', default_value = "8,32,32")]
        size: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        kernel: usize,
        #[arg(long, default_value_t = 4)]
        rank: usize,
        #[arg(long, value_delimiter = ',', default_value = "2")]
        threads: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// cpu, or cuda (device 0) or cuda:N (--threads is ignored there).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Milliseconds per training step (forward, MSE, backward, clipped AdamW) of model files.
    Train {
        /// Model files (TOML), comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "models/paper_dense.toml,models/paper_pair.toml,models/paper_cp.toml"
        )]
        model: Vec<PathBuf>,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Input extent t,y,x (2-D models ignore t).
        #[arg(long, value_delimiter = ',', default_value = "8,64,64")]
        size: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "2")]
        threads: Vec<usize>,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// cpu, or cuda (device 0) or cuda:N (--threads is ignored there).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Each GPU kernel family alone (GEMMs, implicit convolution, fused CP chain, GELU, batch
    /// gather) at the paper model's sizes, with achieved TFLOP/s or GB/s and the fraction of
    /// the device's roofline (CUDA only).
    Kernels {
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// Divides the spatial extents (a quick run, e.g. on the CUDA emulator).
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// `cuda` or `cuda:N`: the kernels are GPU kernels.
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Instead: every GEMM tile height and k split on the dense layer's three implicit
        /// GEMMs, and every fused CP chain tile, at each U-Net level of the paper models, the
        /// variant the rules choose marked `(chosen)`.
        #[arg(long)]
        sweep: bool,
    },
    /// Time-loop throughput on Q1 and P1 squares of about `--nodes` nodes.
    Fe {
        #[arg(long, default_value_t = 1_000_000)]
        nodes: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "csr,ebe")]
        operators: Vec<String>,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 7)]
        samples: usize,
        /// Rank counts to compare (e.g. `1,2`): each runs under `mpirun -np N` with one thread
        /// per rank, and the report gives the parallel efficiency against the first.
        #[arg(long, value_delimiter = ',')]
        ranks: Vec<usize>,
    },
    /// One rank count of `bench fe --ranks` (run under mpirun by it).
    #[command(hide = true)]
    FeRanks {
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        steps: usize,
        #[arg(long)]
        samples: usize,
    },
}

/// Keeps freed memory in the process instead of handing it back to the kernel.
///
/// glibc serves every block over 128 KiB (the network's activations, the im2col matrices) with a
/// fresh `mmap` and unmaps it on `free`, so each training step faulted in and zeroed hundreds of
/// MB of new pages again: 30 % of a CP training step was the kernel clearing pages (perf). With
/// `mmap` off and no trimming, a step reuses the previous step's memory. The peak footprint is
/// unchanged; memory goes back to the system when the process ends.
fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts,
    // and glibc accepts both settings (a failure returns 0 and leaves the default behaviour).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
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

/// Exit status of a run stopped by SIGTERM/SIGUSR1 after writing its checkpoint (for job
/// scripts: requeue and rerun with `--restart`).
const EXIT_INTERRUPTED: u8 = 3;

fn main() -> ExitCode {
    retain_freed_memory();
    let cli = Cli::parse();
    // MPI first (when started by a launcher), so that only rank 0 logs.
    let comm = wavecp::comm::world();
    let rank = comm.rank();
    let log = if rank == 0 || std::env::var_os("WAVECP_LOG_ALL_RANKS").is_some() {
        cli.log.clone()
    } else {
        "error".to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(cli.cmd, comm.as_ref()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            if comm.size() > 1 {
                eprintln!("error (rank {rank} of {}): {e:#}", comm.size());
                // Another rank may be waiting for this one in a collective: end them all.
                comm.abort(1)
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; `Ok(false)` when a solve stopped early on a signal.
fn run(cmd: Cmd, comm: &dyn wavecp::comm::Comm) -> Result<bool> {
    let done: Result<()> = match cmd {
        Cmd::Solve {
            job,
            set,
            json,
            restart,
            abort_after_outputs,
            stop_after_steps,
            fail_rank_at,
            kill_at_step,
            pause_after_outputs,
        } => {
            let cfg = Config::load(&job, &set)?;
            let base = job.parent().map(PathBuf::from).unwrap_or_default();
            let fail_rank_at = match fail_rank_at {
                None => None,
                Some(s) => {
                    let (r, n) = s
                        .split_once(':')
                        .context("--fail-rank-at takes RANK:STEP")?;
                    Some((r.parse()?, n.parse()?))
                }
            };
            let opts = RunOptions {
                progress: !json,
                job_file: Some(job.clone()),
                abort_after_outputs,
                restart,
                signals: true,
                stop_after_steps,
                fail_rank_at,
                kill_at_step,
                pause_after_outputs,
            };
            let summary = driver::run_on(&cfg, &base, &opts, comm)
                .with_context(|| format!("job {}", job.display()))?;
            if comm.rank() == 0 {
                report(&summary, json)?;
            }
            return Ok(!summary.interrupted);
        }
        Cmd::Demo { set, json } => {
            let mut table =
                toml::Table::try_from(driver::demo_config()).context("demo configuration")?;
            for s in &set {
                wavecp::config::apply_override(&mut table, s)?;
            }
            let cfg: Config = table.try_into().context("demo configuration with --set")?;
            cfg.validate()?;
            let summary = driver::run_on(
                &cfg,
                std::path::Path::new("."),
                &RunOptions {
                    progress: !json,
                    signals: true,
                    ..Default::default()
                },
                comm,
            )?;
            if comm.rank() == 0 {
                report(&summary, json)?;
            }
            return Ok(!summary.interrupted);
        }
        Cmd::Dataset {
            job,
            split,
            set,
            overwrite,
            json,
            abort_after_samples,
        } => dataset(
            &job,
            &split,
            &set,
            overwrite,
            json,
            abort_after_samples,
            comm,
        ),
        Cmd::Device {
            json,
            emit_ptx,
            arch,
        } => match emit_ptx {
            Some(dir) => emit_ptx_files(&dir, &arch),
            None => device(json),
        },
        Cmd::Train {
            job,
            set,
            resume,
            json,
            device,
            stop_after_epochs,
        } => train(&job, &set, resume, json, device, stop_after_epochs),
        Cmd::Eval {
            model,
            dataset,
            batch,
            json,
            device,
        } => eval(&model, &dataset, batch, json, device),
        Cmd::Predict {
            model,
            input,
            output,
            device,
        } => predict(&model, &input, &output, device),
        Cmd::Compare {
            test,
            models,
            batch,
            json,
            device,
        } => compare(&test, &models, batch, json, device),
        Cmd::Model {
            cmd: ModelCmd::Info { file, json },
        } => model_info(&file, json),
        Cmd::Mesh {
            cmd: MeshCmd::Info { file, json },
        } => mesh_info(&file, json),
        Cmd::Bench {
            cmd:
                BenchCmd::Train {
                    model,
                    batch,
                    size,
                    threads,
                    steps,
                    warmup,
                    device,
                },
        } => {
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
        Cmd::Bench {
            cmd:
                BenchCmd::Kernels {
                    samples,
                    scale,
                    device,
                    sweep,
                },
        } => {
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
        Cmd::Bench {
            cmd:
                BenchCmd::Conv {
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
                },
        } => {
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
        Cmd::Bench {
            cmd:
                BenchCmd::FeRanks {
                    nodes,
                    steps,
                    samples,
                },
        } => {
            let case = wavecp::bench::run_fe_ranks(nodes, steps, samples, comm)?;
            if comm.rank() == 0 {
                println!("{}", serde_json::to_string(&case)?);
            }
            Ok(())
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Fe {
                    nodes,
                    threads: _,
                    operators: _,
                    steps,
                    samples,
                    ranks,
                },
        } if !ranks.is_empty() => bench_fe_ranks(&ranks, nodes, steps, samples),
        Cmd::Bench {
            cmd:
                BenchCmd::Fe {
                    nodes,
                    threads,
                    operators,
                    steps,
                    samples,
                    ranks: _,
                },
        } => {
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
    };
    done.map(|()| true)
}

/// `bench fe --ranks`: one `mpirun` per rank count, efficiencies against the first count.
fn bench_fe_ranks(ranks: &[usize], nodes: usize, steps: usize, samples: usize) -> Result<()> {
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
fn device(json: bool) -> Result<()> {
    let r = wavecp::cuda::probe();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "CUDA driver library: {}; NVRTC: {}; driver version: {}",
        if r.driver_library {
            "found"
        } else {
            "not found"
        },
        r.nvrtc_version
            .map_or("not found".into(), |(a, b)| format!("{a}.{b}")),
        r.driver_version
            .map_or("-".into(), |v| format!("{}.{}", v / 1000, (v % 1000) / 10))
    );
    for d in &r.devices {
        let peak = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.1} {unit}"));
        println!(
            "device {}: {} (compute {}.{}, {} MiB; nominal peaks {} FP32, {} DRAM)",
            d.ordinal,
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.memory_mib,
            peak(d.peaks.fp32_tflops, "TFLOP/s"),
            peak(d.peaks.dram_gbs, "GB/s")
        );
        if let Some(k) = &d.kernels {
            let what = if k.starts_with("sm_") {
                "machine code from NVRTC"
            } else {
                "PTX, compiled by the driver on loading"
            };
            println!("  kernels: {k} ({what})");
        }
    }
    println!(
        "kernel cache: {}",
        r.kernel_cache
            .as_deref()
            .unwrap_or("off (WAVECP_KERNEL_CACHE=off, or no HOME)")
    );
    match &r.problem {
        Some(p) => println!("CUDA unusable: {p}"),
        None => println!("CUDA usable"),
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn emit_ptx_files(dir: &std::path::Path, arch: &str) -> Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let arch: &'static str = Box::leak(arch.to_string().into_boxed_str());
    for (name, src) in wavecp::cuda::KERNELS {
        let ptx = wavecp::cuda::compile(name, src, arch)?;
        let path = dir.join(format!("{name}.ptx"));
        std::fs::write(&path, ptx.to_src())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
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

/// A benchmark's `--device`: `cpu` (None) or the CUDA device's ordinal (`cuda`, `cuda:N`).
fn bench_device(device: &str) -> Result<Option<usize>> {
    match device.parse::<wavecp::nn::Device>() {
        Ok(wavecp::nn::Device::Cpu) => Ok(None),
        Ok(wavecp::nn::Device::Cuda(n)) => Ok(Some(n)),
        _ => anyhow::bail!("unknown --device `{device}` (cpu, cuda, cuda:N)"),
    }
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

#[cfg(not(feature = "cuda"))]
fn bench_conv_cuda(_: &wavecp::bench::ConvShape, _: usize, _: usize) -> Result<serde_json::Value> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

#[cfg(not(feature = "cuda"))]
fn emit_ptx_files(_: &std::path::Path, _: &str) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

#[cfg(not(feature = "cuda"))]
fn device(_: bool) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

fn report(s: &driver::RunSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        println!(
            "{} steps, dt = {:.4e} (limit {:.4e}), {:.2} s wall ({:.2} s compute), {:.3e} DoF-updates/s, final energy {:.6e}",
            s.steps, s.dt, s.dt_limit, s.wall_s, s.compute_s, s.dof_updates_per_s, s.final_energy
        );
        if let Some(p) = &s.output {
            println!(
                "output: {}{}",
                p.display(),
                s.xdmf
                    .as_ref()
                    .map(|x| format!(" (+ {})", x.display()))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn mesh_info(file: &std::path::Path, json: bool) -> Result<()> {
    let m = wavecp::mesh::read_msh(file)?;
    let (hmin, hmax) = m.edge_length_range();
    let name = |d: i32, t: i32| m.names.get(&(d, t)).cloned().unwrap_or_default();
    let regions: Vec<serde_json::Value> = m
        .region_tags()
        .iter()
        .map(|(t, n)| serde_json::json!({"tag": t, "name": name(2, *t), "cells": n}))
        .collect();
    let bounds: Vec<serde_json::Value> = m
        .boundary_tags()
        .iter()
        .map(|(t, n)| serde_json::json!({"tag": t, "name": name(1, *t), "edges": n}))
        .collect();
    let v = serde_json::json!({
        "file": file, "nodes": m.num_nodes(), "triangles": m.tris.len(), "quads": m.quads.len(),
        "bbox": m.bbox(), "edge_length_min": hmin, "edge_length_max": hmax,
        "regions": regions, "boundaries": bounds,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: {} nodes, {} triangles, {} quads",
            file.display(),
            m.num_nodes(),
            m.tris.len(),
            m.quads.len()
        );
        let b = m.bbox();
        println!(
            "bounding box [{}, {}] × [{}, {}], edge length {hmin:.4e} .. {hmax:.4e}",
            b[0], b[2], b[1], b[3]
        );
        for r in &regions {
            println!(
                "region   {:>4} {:<16} {} cells",
                r["tag"],
                r["name"].as_str().unwrap_or(""),
                r["cells"]
            );
        }
        for r in &bounds {
            println!(
                "boundary {:>4} {:<16} {} edges",
                r["tag"],
                r["name"].as_str().unwrap_or(""),
                r["edges"]
            );
        }
    }
    Ok(())
}

#[cfg(feature = "hdf5")]
fn dataset(
    job: &std::path::Path,
    split: &str,
    set: &[String],
    overwrite: bool,
    json: bool,
    abort_after_samples: Option<usize>,
    comm: &dyn wavecp::comm::Comm,
) -> Result<()> {
    use wavecp::dataset::{generate_on, DatasetJob, DatasetOptions};
    let d = DatasetJob::load(job, set)?;
    let base = job.parent().map(PathBuf::from).unwrap_or_default();
    let opts = DatasetOptions {
        progress: !json,
        overwrite,
        abort_after_samples,
    };
    let mut splits = Vec::new();
    if split != "test" {
        splits.push(d.train.clone());
    }
    if split != "train" {
        match &d.test {
            Some(t) => splits.push(t.clone()),
            None if split == "test" => {
                anyhow::bail!("{}: the job has no [test] section", job.display())
            }
            None => {}
        }
    }
    let mut summaries = Vec::new();
    for s in &splits {
        let summary = generate_on(&d, &base, s, &opts, comm)
            .with_context(|| format!("dataset {}", s.path.display()))?;
        if !json && comm.rank() == 0 {
            println!(
                "{}: {} samples ({} generated, {} resumed) of {} frames {}×{}, frame dt {:.4e}, mean {:.3e}, std {:.3e}, {:.1} s",
                summary.path.display(), summary.samples, summary.generated, summary.resumed, summary.frames, summary.ny, summary.nx, summary.frame_dt, summary.mean, summary.std, summary.wall_s
            );
        }
        summaries.push(summary);
    }
    if json && comm.rank() == 0 {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn dataset(
    _: &std::path::Path,
    _: &str,
    _: &[String],
    _: bool,
    _: bool,
    _: Option<usize>,
    _: &dyn wavecp::comm::Comm,
) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: datasets need it")
}

#[cfg(feature = "hdf5")]
fn train(
    job: &std::path::Path,
    set: &[String],
    resume: bool,
    json: bool,
    device: wavecp::nn::Device,
    stop_after_epochs: Option<usize>,
) -> Result<()> {
    use wavecp::surrogate::train::{run, TrainJob, TrainOptions};
    let j = TrainJob::load(job, set)?;
    let base = job.parent().map(PathBuf::from).unwrap_or_default();
    let s = run(
        &j,
        &base,
        &TrainOptions {
            progress: !json,
            resume,
            device,
            stop_after_epochs,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let gpu = s
            .gpu_peak_mib
            .map_or(String::new(), |g| format!(", GPU peak {g:.0} MiB"));
        println!(
            "{} epochs, {} trainable parameters ({} weight bytes), best validation loss {:.4e}, {:.2} s/epoch, peak memory {:.0} MiB{gpu}; best model: {}",
            s.epochs, s.trainable_params, s.weight_bytes, s.best_val_loss, s.mean_epoch_s, s.peak_rss_mb, s.best_model.display()
        );
    }
    Ok(())
}

#[cfg(feature = "hdf5")]
fn eval(
    model: &std::path::Path,
    dataset: &std::path::Path,
    batch: usize,
    json: bool,
    device: wavecp::nn::Device,
) -> Result<()> {
    let r = wavecp::surrogate::eval::evaluate_on(model, dataset, batch, device)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} windows: relative L2 error {:.4} (per frame: {:.4?})",
            r.windows, r.rel_l2_mean, r.rel_l2_per_frame
        );
        println!(
            "rollout over {} windows: {:.4?}",
            r.rollout_windows, r.rollout_rel_l2
        );
        println!(
            "inference {:.3} ms per sample, {} trainable parameters",
            r.inference_ms_per_sample, r.trainable_params
        );
    }
    Ok(())
}

#[cfg(feature = "hdf5")]
fn predict(
    model: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    device: wavecp::nn::Device,
) -> Result<()> {
    let n = wavecp::surrogate::eval::predict_on(model, input, output, device)?;
    println!("{n} predictions written to {}", output.display());
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn train(
    _: &std::path::Path,
    _: &[String],
    _: bool,
    _: bool,
    _: wavecp::nn::Device,
    _: Option<usize>,
) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: training reads HDF5 datasets")
}

#[cfg(not(feature = "hdf5"))]
fn eval(
    _: &std::path::Path,
    _: &std::path::Path,
    _: usize,
    _: bool,
    _: wavecp::nn::Device,
) -> Result<()> {
    anyhow::bail!(
        "this wavecp was built without the `hdf5` feature: evaluation reads HDF5 datasets"
    )
}

#[cfg(not(feature = "hdf5"))]
fn predict(
    _: &std::path::Path,
    _: &std::path::Path,
    _: &std::path::Path,
    _: wavecp::nn::Device,
) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: prediction reads HDF5 files")
}

fn model_info(file: &std::path::Path, json: bool) -> Result<()> {
    use wavecp::nn::{Model, ModelSpec};
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let spec = ModelSpec::from_toml(&text).with_context(|| format!("{}", file.display()))?;
    let m = Model::new(spec).with_context(|| format!("{}", file.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"file": file, "trainable_params": m.num_params(), "weight_bytes": 4 * m.num_params(), "out_channels": m.out_channels, "layers": m.summary()})
        );
    } else {
        for l in m.summary() {
            println!("  {l}");
        }
        println!(
            "{}: {} trainable parameters ({} weight bytes), {} output channels",
            file.display(),
            m.num_params(),
            4 * m.num_params(),
            m.out_channels
        );
    }
    Ok(())
}

#[cfg(feature = "hdf5")]
fn compare(
    test: &std::path::Path,
    models: &[PathBuf],
    batch: usize,
    json: bool,
    device: wavecp::nn::Device,
) -> Result<()> {
    anyhow::ensure!(!models.is_empty(), "give at least one model file");
    let rows = wavecp::surrogate::eval::compare_on(models, test, batch, device)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", wavecp::surrogate::eval::compare_markdown(&rows));
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn compare(
    _: &std::path::Path,
    _: &[PathBuf],
    _: usize,
    _: bool,
    _: wavecp::nn::Device,
) -> Result<()> {
    anyhow::bail!(
        "this wavecp was built without the `hdf5` feature: comparisons read HDF5 datasets"
    )
}
