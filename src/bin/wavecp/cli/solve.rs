//! `wavecp solve`, `wavecp demo` and `wavecp mesh info`: FE runs and what they report.

use anyhow::{Context, Result};
use std::path::PathBuf;
use wavecp::config::Config;
use wavecp::sim::{self, RunOptions};

#[derive(clap::Args)]
pub struct SolveArgs {
    pub job: PathBuf,
    /// Override a job key, e.g. `--set time.end=0.5 --set source.0.frequency=6`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Continue from the job's checkpoint (`checkpoint.path`) if it exists, else start at t = 0.
    #[arg(long)]
    pub restart: bool,
    /// A hybrid job ([coupling]): also run the FE-only simulation beside it, write `u_ref` and
    /// `u_diff = |u - u_ref|` next to `u`, and report the speed-up and the error.
    #[arg(long)]
    pub reference: bool,
    /// Testing aid: abort (as a crash would) after this many output steps.
    #[arg(long, hide = true)]
    pub abort_after_outputs: Option<usize>,
    /// Testing aid: behave as if SIGTERM arrived after this step.
    #[arg(long, hide = true)]
    pub stop_after_steps: Option<usize>,
    /// Testing aid: `RANK:STEP`: that rank exits at once after that step.
    #[arg(long, hide = true)]
    pub fail_rank_at: Option<String>,
    /// Testing aid: SIGKILL itself after this step (its output and checkpoint included).
    #[arg(long, hide = true)]
    pub kill_at_step: Option<usize>,
    /// Testing aid: after this many output steps, create `FILE.paused` next to the running
    /// output and wait until it is removed.
    #[arg(long, hide = true)]
    pub pause_after_outputs: Option<usize>,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long)]
    pub json: bool,
    /// The FE-only demo instead: a 6 Hz Ricker source on 400 x 400 Q1 quads (160 801 nodes).
    #[arg(long)]
    pub fe_only: bool,
}

/// The model the hybrid demo ships (scripts/make-demo-model regenerates it).
#[cfg(feature = "hdf5")]
const DEMO_MODEL: &[u8] = include_bytes!("../../../../models/demo_cp.safetensors");

/// The embedded demo model as a file for the run, removed when dropped.
#[cfg(feature = "hdf5")]
struct DemoModel(PathBuf);

#[cfg(feature = "hdf5")]
impl DemoModel {
    fn write() -> Result<Self> {
        let p = std::env::temp_dir().join(format!(
            "wavecp-demo-model-{}.safetensors",
            std::process::id()
        ));
        std::fs::write(&p, DEMO_MODEL).with_context(|| format!("writing {}", p.display()))?;
        Ok(DemoModel(p))
    }
}

#[cfg(feature = "hdf5")]
impl Drop for DemoModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a job file; `Ok(false)` when a signal stopped it after its checkpoint.
pub fn solve(a: SolveArgs, comm: &dyn wavecp::comm::Comm) -> Result<bool> {
    let SolveArgs {
        job,
        set,
        json,
        restart,
        reference,
        abort_after_outputs,
        stop_after_steps,
        fail_rank_at,
        kill_at_step,
        pause_after_outputs,
    } = a;
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
        reference,
        extras: Default::default(),
    };
    if reference && cfg.coupling.is_none() {
        anyhow::bail!(
            "--reference compares a hybrid run with the FE-only one, and job {} has no [coupling] section",
            job.display()
        );
    }
    if let Some(c) = &cfg.coupling {
        #[cfg(not(feature = "hdf5"))]
        {
            let _ = c;
            anyhow::bail!("[coupling]: this wavecp was built without the `hdf5` feature, which the surrogate's files need");
        }
        #[cfg(feature = "hdf5")]
        {
            let coupled = if c.mode == "submodel" {
                submodel
            } else {
                hybrid
            };
            return coupled(&cfg, &base, &opts, comm, json)
                .with_context(|| format!("job {}", job.display()));
        }
    }
    let summary =
        sim::run_on(&cfg, &base, &opts, comm).with_context(|| format!("job {}", job.display()))?;
    if comm.rank() == 0 {
        report(&summary, json)?;
    }
    Ok(!summary.interrupted)
}

/// A job with a `[coupling]` section: the hybrid run, its summary with a `hybrid` object.
#[cfg(feature = "hdf5")]
fn hybrid(
    cfg: &Config,
    base: &std::path::Path,
    opts: &RunOptions,
    comm: &dyn wavecp::comm::Comm,
    json: bool,
) -> Result<bool> {
    let (summary, h) = wavecp::coupling::solve::run_hybrid(cfg, base, opts, comm)?;
    if comm.rank() == 0 {
        if json {
            let mut v = serde_json::to_value(&summary)?;
            v["hybrid"] = serde_json::to_value(&h)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            report(&summary, false)?;
            println!(
                "hybrid: {} of {} windows accepted, {} of {} steps by the surrogate; wall {:.2} s = FE {:.2} + inference {:.2} (on {}) + transfers {:.2} + indicator {:.2}",
                h.windows_accepted,
                h.windows_accepted + h.windows_rejected,
                h.steps_surrogate,
                h.steps_total,
                h.wall_s,
                h.fe_s,
                h.inference_s,
                h.network_device.as_deref().unwrap_or("cpu"),
                h.transfer_s,
                h.indicator_s
            );
            if h.handback_refused > 0 {
                println!(
                    "hand-back check: {} trusted window(s) refused for their hand-back's loss",
                    h.handback_refused
                );
            }
            if !h.out_of_range.is_empty() {
                println!(
                    "outside the model's trained ranges: {} (coupling.out_of_range)",
                    h.out_of_range.join(", ")
                );
            }
            if let (Some(r), Some(x), Some(e)) = (h.reference_wall_s, h.speedup, h.max_rel_l2_error)
            {
                println!(
                    "reference (FE only): {r:.2} s; speed-up {x:.2}x; max relative L2 error {e:.3e}"
                );
            }
        }
    }
    Ok(!summary.interrupted)
}

/// A job whose `[coupling]` has `mode = "submodel"`: the submodel run, its `submodel` object.
#[cfg(feature = "hdf5")]
fn submodel(
    cfg: &Config,
    base: &std::path::Path,
    opts: &RunOptions,
    comm: &dyn wavecp::comm::Comm,
    json: bool,
) -> Result<bool> {
    let o = wavecp::coupling::subrun::SubmodelOptions {
        reference: opts.reference,
        progress: opts.progress,
        restart: opts.restart,
        stop_after_windows: None,
        signals: true,
    };
    let s = wavecp::coupling::subrun::run_submodel(cfg, base, &o, comm)?;
    if json {
        let v = serde_json::json!({ "submodel": s });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(!s.interrupted);
    }
    println!(
        "submodel: {} nodes ({} on the interface) of the {} of the whole model; {} windows of {} frames after {} warm-up frames, {} steps; wall {:.2} s = FE {:.2} + inference {:.2} + transfers {:.2}",
        s.submodel_nodes, s.interface_nodes, s.outer_nodes, s.windows, s.t_out, s.t_in, s.steps,
        s.wall_s, s.fe_s, s.inference_s, s.transfer_s
    );
    println!(
        "indicator: max {:.3e}, {} of {} windows above the tolerance",
        s.indicator_max, s.windows_above_tolerance, s.windows
    );
    if !s.out_of_range.is_empty() {
        println!(
            "outside the model's trained ranges (run with coupling.out_of_range = \"trust\"): {}",
            s.out_of_range.join(", ")
        );
    }
    if let (Some(r), Some(x), Some(e), Some(o)) = (
        s.reference_wall_s,
        s.cost_ratio,
        s.max_rel_l2_error,
        s.oracle_max_rel_l2_error,
    ) {
        println!(
            "reference (whole model): {r:.2} s; cost ratio {x:.2}x; zone error {e:.3e} (max relative L2); oracle (time interpolation alone) {o:.3e}"
        );
    }
    if let Some(p) = &s.output {
        println!("output: {}", p.display());
    }
    Ok(!s.interrupted)
}

/// Runs the built-in demo: the hybrid run beside the FE-only reference, or (`--fe-only`) the
/// FE demo.
pub fn demo(a: DemoArgs, comm: &dyn wavecp::comm::Comm) -> Result<bool> {
    if !a.fe_only {
        return hybrid_demo(a, comm);
    }
    let DemoArgs { set, json, .. } = a;
    let mut table = toml::Table::try_from(sim::demo_config()).context("demo configuration")?;
    for s in &set {
        wavecp::config::apply_override(&mut table, s)?;
    }
    let cfg: Config = table.try_into().context("demo configuration with --set")?;
    cfg.validate()?;
    let summary = sim::run_on(
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
    Ok(!summary.interrupted)
}

/// The hybrid demo: the shipped model on its square, with `--reference`; a short table.
#[cfg(feature = "hdf5")]
fn hybrid_demo(a: DemoArgs, comm: &dyn wavecp::comm::Comm) -> Result<bool> {
    let model = DemoModel::write()?;
    let cfg = wavecp::coupling::solve::demo_config(&model.0, &a.set)?;
    let opts = RunOptions {
        progress: !a.json,
        signals: true,
        reference: true,
        ..Default::default()
    };
    let (summary, h) =
        wavecp::coupling::solve::run_hybrid(&cfg, std::path::Path::new("."), &opts, comm)?;
    if comm.rank() == 0 {
        if a.json {
            let mut v = serde_json::to_value(&summary)?;
            v["hybrid"] = serde_json::to_value(&h)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let windows = h.windows_accepted + h.windows_rejected;
            let c = cfg.coupling.as_ref();
            println!(
                "hybrid demo: {} nodes, {} steps; surrogate models/demo_cp.safetensors (trained and calibrated by scripts/make-demo-model), indicator {}, tolerance {} (window error)",
                summary.nodes,
                summary.steps,
                c.map_or("", |c| c.indicator.as_str()),
                c.map_or(0.0, |c| c.tolerance)
            );
            println!("| windows accepted / rejected | steps by the surrogate | hybrid (s) | FE only (s) | speed-up | max relative L2 error |");
            println!("|---|---|---|---|---|---|");
            println!(
                "| {} / {} of {windows} | {} of {} | {:.4} | {:.4} | {:.2} | {:.3e} |",
                h.windows_accepted,
                h.windows_rejected,
                h.steps_surrogate,
                h.steps_total,
                h.wall_s,
                h.reference_wall_s.unwrap_or(f64::NAN),
                h.speedup.unwrap_or(f64::NAN),
                h.max_rel_l2_error.unwrap_or(f64::NAN)
            );
            println!(
                "On {} nodes the network costs more than the FE steps it replaces: the speed-up needs a mesh of ~3e5 nodes or more (docs/benchmarks.md, `wavecp bench couple`).",
                summary.nodes
            );
            println!(
                "The shipped model (CP encoder-decoder at half the paper's width, 185 k parameters, 16 x 16 grid) has a median window error of 3.9 % on held-out scenarios; the errors of accepted windows compound through the run (docs/coupling.md). `wavecp demo --fe-only`: the FE demo."
            );
            if let Some(p) = &summary.output {
                println!(
                    "output: {} (u, u_ref, u_diff = |u - u_ref|, stepper, indicator){}",
                    p.display(),
                    summary
                        .xdmf
                        .as_ref()
                        .map(|x| format!(" + {}", x.display()))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(!summary.interrupted)
}

#[cfg(not(feature = "hdf5"))]
fn hybrid_demo(_: DemoArgs, _: &dyn wavecp::comm::Comm) -> Result<bool> {
    anyhow::bail!("the hybrid demo needs the surrogate's model files (the `hdf5` feature); `wavecp demo --fe-only` runs the FE demo")
}

fn report(s: &sim::RunSummary, json: bool) -> Result<()> {
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

pub fn mesh_info(file: &std::path::Path, json: bool) -> Result<()> {
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
