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
//! ```sh
//! wavecp dataset examples/indicator_study/dataset.toml
//! wavecp train examples/indicator_study/train.toml
//! cargo run --release --example indicator_study -- out/indicator_study/model/best.safetensors \
//!     examples/indicator_study/dataset.toml 40 1.0
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Instant;
use wavecp::comm::Serial;
use wavecp::config::SourceConfig;
use wavecp::coupling::hybrid::{
    EnergyBalance, EnergyChange, FeProbe, Forecaster, Indicator, Residual, WindowView,
};
use wavecp::coupling::network::NetworkForecaster;
use wavecp::coupling::transfer::{ZoneGrid, ZoneTransfer};
use wavecp::dataset::DatasetJob;
use wavecp::nn::Device;

/// Ranks of `v` (1-based; ties share their mean rank).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

fn rel_l2(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mut d, mut r) = (0.0, 0.0);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        d += (x - y) * (x - y);
        r += y * y;
    }
    (d / r.max(f64::MIN_POSITIVE)).sqrt()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        anyhow::bail!("usage: indicator_study MODEL DATASET_JOB [SCENARIOS] [FREQUENCY_FACTOR]");
    }
    let (model, job_path) = (Path::new(&args[1]), Path::new(&args[2]));
    let scenarios: usize = args.get(3).map_or(Ok(40), |s| s.parse())?;
    let factor: f64 = args.get(4).map_or(Ok(1.0), |s| s.parse())?;
    let job = DatasetJob::load(job_path, &[])?;
    let base = job_path.parent().unwrap_or(Path::new("."));
    let z = &job.zone;
    let grid = ZoneGrid {
        x: z.x,
        y: z.y,
        nx: z.nx,
        ny: z.ny,
    };
    let (stride, start, count) = (job.frames.stride, job.frames.start, job.frames.count);
    let mut rng = ChaCha8Rng::seed_from_u64(1234);
    let mut pick = |r: [f64; 2]| rng.random_range(r[0]..=r[1]);
    let names = ["residual", "energy_change", "energy_balance", "fe_probe"];
    let (mut truth, mut scores) = (vec![], vec![vec![]; 4]);
    let (mut inference_s, mut cost_s) = (0.0, [0.0; 4]);
    for _ in 0..scenarios {
        let s = &job.sampling;
        let source = SourceConfig {
            position: [pick(s.source_x), pick(s.source_y)],
            frequency: factor * pick(s.frequency),
            amplitude: pick(s.amplitude),
            delay: s.delay.map(&mut pick),
        };
        let end = (start + (count - 1) * stride) as f64 * job.time.dt.unwrap_or(1.0);
        let cfg = job.fe_config(end, vec![source]);
        let (mut sim, _) = wavecp::sim::from_job(&cfg, base, &Serial)?;
        // One rank: the simulation's numbering is the mesh's.
        let mesh = wavecp::sim::load_mesh(&cfg.mesh, base)?;
        let transfer = ZoneTransfer::new(&mesh, grid)?;
        let frame_dt = stride as f64 * sim.dt();
        let mut net = NetworkForecaster::open(model, Device::Cpu, &transfer, frame_dt)?;
        let (t_in, t_out) = (net.t_in(), net.t_out());
        sim.advance(start);
        let (mut frames, mut states) = (vec![], vec![]);
        for k in 0..count {
            if k > 0 {
                sim.advance(stride);
            }
            let mut g = vec![0.0; z.nx * z.ny];
            transfer.to_grid(sim.u(), &mut g)?;
            frames.push(g);
            states.push(sim.state());
        }
        for k in t_in - 1..count - t_out {
            let past: Vec<&[f64]> = frames[k + 1 - t_in..=k].iter().map(|f| &f[..]).collect();
            let t0 = Instant::now();
            let forecast = net.forecast(&past)?;
            inference_s += t0.elapsed().as_secs_f64();
            truth.push(rel_l2(&forecast, &frames[k + 1..=k + t_out]));
            let inds: [&mut dyn Indicator; 4] = [
                &mut Residual,
                &mut EnergyChange,
                &mut EnergyBalance,
                &mut FeProbe,
            ];
            for (i, ind) in inds.into_iter().enumerate() {
                sim.restore(&states[k])?;
                let t0 = Instant::now();
                let score = ind.score(WindowView {
                    sim: &mut sim,
                    transfer: &transfer,
                    past: &past,
                    forecast: &forecast,
                    stride,
                })?;
                cost_s[i] += t0.elapsed().as_secs_f64();
                scores[i].push(score);
            }
        }
    }
    let n = truth.len();
    let mut sorted = truth.clone();
    sorted.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "model": model.display().to_string(),
        "scenarios": scenarios,
        "frequency_factor": factor,
        "windows": n,
        "true_error": {"min": sorted[0], "median": sorted[n / 2], "max": sorted[n - 1]},
        "inference_ms_per_window": 1e3 * inference_s / n as f64,
        "indicators": names.iter().enumerate().map(|(i, name)| serde_json::json!({
            "name": name,
            "spearman": spearman(&scores[i], &truth),
            "ms_per_window": 1e3 * cost_s[i] / n as f64,
            "cost_share_of_inference": cost_s[i] / inference_s,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
