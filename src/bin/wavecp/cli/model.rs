//! `wavecp model`: what an architecture or a trained model file holds, and the sampling ranges
//! recorded in one.

use anyhow::{Context, Result};
use std::path::Path;

/// Four significant digits, without a trailing exponent for everyday magnitudes.
#[cfg(feature = "hdf5")]
fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-3..5).contains(&mag) {
        return format!("{v:.3e}");
    }
    let s = format!("{v:.*}", (3 - mag).max(0) as usize);
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    }
}

#[cfg(feature = "hdf5")]
fn thresholds(t: &[[f64; 2]]) -> String {
    t.iter().map(|p| sig(p[1])).collect::<Vec<_>>().join(" / ")
}

pub fn info(file: &Path, json: bool) -> Result<()> {
    let toml = file.extension().is_some_and(|e| e == "toml");
    if toml {
        return architecture(file, json);
    }
    model_file(file, json)
}

fn architecture(file: &Path, json: bool) -> Result<()> {
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

#[cfg(not(feature = "hdf5"))]
fn model_file(file: &Path, _: bool) -> Result<()> {
    anyhow::bail!(
        "{}: this wavecp was built without the `hdf5` feature, which model files need (a TOML architecture, *.toml, reads without it)",
        file.display()
    )
}

#[cfg(feature = "hdf5")]
fn model_file(file: &Path, json: bool) -> Result<()> {
    use wavecp::surrogate::{modelfile, summary::ModelSummary, summary::TOLERANCES};
    let loaded = modelfile::load(file)?;
    let s = ModelSummary::of(&loaded);
    if json {
        let mut v = serde_json::to_value(&s)?;
        v["file"] = serde_json::json!(file);
        println!("{v}");
        return Ok(());
    }
    let zone = s.zone.map_or(String::new(), |z| {
        format!(" over [{}, {}] × [{}, {}]", z[0], z[1], z[2], z[3])
    });
    println!(
        "{}: a {}-D model, {} frames in, {} out, on a {} × {} grid{zone}, frames {} s apart",
        file.display(),
        s.dims,
        s.t_in,
        s.t_out,
        s.grid[0],
        s.grid[1],
        sig(s.frame_dt)
    );
    for l in &s.layers {
        println!("    {l}");
    }
    println!(
        "  {} trainable parameters ({} weight bytes), {} output channels",
        s.trainable_params, s.weight_bytes, s.out_channels
    );
    let t = &s.training;
    println!(
        "  trained on {}: epoch {}, training loss {}, validation loss {} ({} s an epoch, peak {} MiB){}",
        t.dataset,
        t.epoch,
        sig(t.train_loss),
        sig(t.val_loss),
        sig(t.epoch_s),
        sig(t.peak_rss_mb),
        if t.checkpoint { "; a training checkpoint" } else { "" }
    );
    println!(
        "  frames normalised by mean {}, std {}",
        sig(s.mean),
        sig(s.std)
    );
    match &s.conditioning {
        None => println!("  not conditioned on its scenario: it reads its frames only"),
        Some(c) => {
            println!("  conditioned on: {}", c.channels.join(", "));
            for p in &c.params {
                let drawn = p.sampled.map_or(
                    "drawn from: not recorded (wavecp model sampling)".to_string(),
                    |r| format!("drawn from [{}, {}]", sig(r[0]), sig(r[1])),
                );
                let trained = match p.varied {
                    true => format!(
                        "trained over [{}, {}]",
                        sig(p.trained[0]),
                        sig(p.trained[1])
                    ),
                    false => format!("trained at {} only", sig(p.trained[0])),
                };
                println!("    {:<10} {trained}, {drawn}", p.name);
            }
            if let Some(v) = c.prior_speed {
                let walls = c.prior_walls.map_or(String::new(), |w| {
                    format!(
                        " and the reflections of [{}, {}] × [{}, {}]",
                        w[0], w[1], w[2], w[3]
                    )
                });
                println!("    prior: the source's free-space wave at speed {v}{walls}");
            }
        }
    }
    if s.calibrations.is_empty() {
        println!("  no calibration: a hybrid run's tolerance bounds the indicator's raw value");
        return Ok(());
    }
    let tols: Vec<String> = TOLERANCES.iter().map(|t| t.to_string()).collect();
    println!(
        "  calibrations: indicator thresholds at a tolerance of {}",
        tols.join(" / ")
    );
    for c in &s.calibrations {
        let of = |n: usize| match n {
            0 => "(scenarios not kept)".to_string(),
            n => format!("of {n} scenarios"),
        };
        println!(
            "    {}{}: {} windows {}, risk {}: {}",
            c.indicator,
            if c.learned { " (learned)" } else { "" },
            c.windows,
            of(c.scenarios),
            c.risk,
            thresholds(&c.thresholds)
        );
        if let Some(o) = &c.out_of_range {
            println!(
                "      out of range, pooled: {} windows {}: {}",
                o.windows,
                of(o.scenarios),
                thresholds(&o.thresholds)
            );
            for r in &o.regimes {
                println!(
                    "      outside in {}: {} windows {}: {}",
                    r.name,
                    r.windows,
                    of(r.scenarios),
                    thresholds(&r.thresholds)
                );
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub fn sampling(_: &Path, _: &Path) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: model files need it")
}

#[cfg(feature = "hdf5")]
pub fn sampling(model: &Path, job: &Path) -> Result<()> {
    let j = wavecp::dataset::DatasetJob::load(job, &[]).map_err(|e| {
        anyhow::anyhow!(
            "{} (--job is the dataset job the model's training data came from)",
            e.to_string().trim_end()
        )
    })?;
    let c = wavecp::surrogate::modelfile::record_sampling(model, &j.sampling.ranges())?;
    for k in 0..c.nparams() {
        if let Some(r) = c.sampled_range(k) {
            let t = c.trained_range(k);
            tracing::info!(
                "{}: drawn from [{}, {}] (training saw [{}, {}])",
                c.channels[3 + k],
                r[0],
                r[1],
                sig(t[0]),
                sig(t[1])
            );
        }
    }
    tracing::info!(
        "{}: the sampling ranges of {} recorded",
        model.display(),
        job.display()
    );
    Ok(())
}
