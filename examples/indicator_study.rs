//! How well each error indicator of the hybrid stepping ranks the true error of a window.
//!
//! For held-out scenarios of a dataset job (sources drawn from its sampling ranges with another
//! seed, and optionally a frequency factor to leave the trained range), the FE run records its
//! frames and states; every window of the model (`t_in` frames in, `t_out` out) is forecast
//! from the FE's own past frames, its true error is the relative L2 difference to the FE frames
//! over the window, and each indicator scores it from the state at the window's start. Printed
//! as JSON: per indicator the Spearman rank correlation with the true error and its cost beside
//! the inference.
//!
//! `INDICATORS=a,b,...` picks the indicators (default: every named one but `grid_learned`,
//! which needs a model calibrated for it); besides the names a job takes, `seam:Q`, `rough:Q`, `past:Q` and `extrap:D` are the grid signals of any order.
//! `DUMP=FILE` also writes every window's scenario, true error and scores as JSON; `SEED=N` draws
//! the scenarios with another seed than 1234 (the one `wavecp calibrate` calibrates on).
//! `ROLLOUT=N` samples the windows of hybrid runs accepting up to N in a row instead (the first
//! indicator only, predicting with the model's stored error model; the runs' decisions do not
//! depend on it, so two models see the same windows).
//!
//! ```sh
//! wavecp dataset examples/indicator_study/dataset.toml
//! wavecp train examples/indicator_study/train.toml
//! cargo run --release --example indicator_study -- out/indicator_study/model/best.safetensors \
//!     examples/indicator_study/dataset.toml 40 1.0
//! ```

use std::path::PathBuf;
use wavecp::coupling::calibrate::{sample_with, spearman, Sampling};
use wavecp::coupling::grid_indicators::{GridSignal, GridSmoothness};
use wavecp::coupling::hybrid::Indicator;
use wavecp::surrogate::modelfile::ModelMeta;

/// A job's indicator by name (a learned one with the error model `meta`'s calibration of it
/// carries), or a grid signal of any order: `seam:Q`, `rough:Q`, `past:Q`, `extrap:D` (the
/// variants `grid_seam` was chosen from).
fn indicator(name: &str, meta: &ModelMeta) -> anyhow::Result<Box<dyn Indicator>> {
    use wavecp::coupling::solve;
    let Some((kind, order)) = name.split_once(':') else {
        return Ok(solve::indicator(name, solve::fitted(meta, name))?);
    };
    let q: usize = order.parse()?;
    let signal = match kind {
        "seam" => GridSignal::Seam(q),
        "rough" => GridSignal::Rough(q),
        "past" => GridSignal::Past(q),
        "extrap" => GridSignal::Extrapolate(q),
        other => anyhow::bail!("no grid signal `{other}`"),
    };
    Ok(Box::new(GridSmoothness { signal }))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        anyhow::bail!(
            "usage: indicator_study MODEL DATASET_JOB [SCENARIOS] [FREQUENCY_FACTOR] [X0,X1,Y0,Y1 (source box)]"
        );
    }
    let list = std::env::var("INDICATORS").unwrap_or_else(|_| {
        "residual,energy_change,energy_balance,fe_probe,fe_probe_short,grid_seam".into()
    });
    let names: Vec<&str> = list.split(',').collect();
    let meta = wavecp::surrogate::modelfile::load(std::path::Path::new(&args[1]))?.meta;
    let inds = names
        .iter()
        .map(|n| indicator(n, &meta))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let s = Sampling {
        model: PathBuf::from(&args[1]),
        job: PathBuf::from(&args[2]),
        indicators: names.iter().map(|n| n.to_string()).collect(),
        scenarios: args.get(3).map_or(Ok(40), |s| s.parse())?,
        seed: std::env::var("SEED").map_or(Ok(1234), |s| s.parse())?,
        frequency_factor: args.get(4).map_or(Ok(1.0), |s| s.parse())?,
        source_box: match args.get(5) {
            None => None,
            Some(b) => {
                let v: Vec<f64> = b.split(',').map(str::parse).collect::<Result<_, _>>()?;
                anyhow::ensure!(v.len() == 4, "the source box is x0,x1,y0,y1");
                Some([v[0], v[1], v[2], v[3]])
            }
        },
        rollout: std::env::var("ROLLOUT").map_or(Ok(0), |s| s.parse())?,
    };
    // ROLLOUT=n: the windows of hybrid runs accepting up to n in a row (the first indicator,
    // with the model file's error model), as `wavecp calibrate --rollout`.
    let w = if s.rollout > 0 {
        wavecp::coupling::calibrate::sample(&s)?
    } else {
        sample_with(&s, inds)?
    };
    let n = w.errors.len();
    anyhow::ensure!(n > 0, "no windows: take more scenarios or frames");
    let mut sorted = w.errors.clone();
    sorted.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "model": s.model.display().to_string(),
        "scenarios": s.scenarios,
        "rollout": s.rollout,
        "frequency_factor": s.frequency_factor,
        "source_box": s.source_box,
        "windows": n,
        "true_error": {"min": sorted[0], "median": sorted[n / 2], "max": sorted[n - 1]},
        "inference_ms_per_window": 1e3 * w.inference_s / n as f64,
        "indicators": names.iter().enumerate().map(|(i, name)| serde_json::json!({
            "name": name,
            "spearman": spearman(&w.scores[i], &w.errors),
            "ms_per_window": 1e3 * w.indicator_s[i] / n as f64,
            "cost_share_of_inference": w.indicator_s[i] / w.inference_s,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Ok(path) = std::env::var("DUMP") {
        let raw = serde_json::json!({
            "names": names, "scenario": w.scenario, "errors": w.errors, "scores": w.scores,
        });
        std::fs::write(path, serde_json::to_string(&raw)?)?;
    }
    Ok(())
}
