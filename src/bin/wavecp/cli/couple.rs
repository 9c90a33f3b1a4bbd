//! `wavecp calibrate`: an error indicator calibrated on held-out scenarios and stored with the
//! model, so that a hybrid run's tolerance is in error units.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// The trained model file (its best weights, not a training checkpoint).
    pub model: PathBuf,
    /// The dataset job it was trained on: its mesh, zone, frames and scenario ranges.
    pub job: PathBuf,
    /// The indicator to calibrate (fe_probe, fe_probe_short, grid_seam, grid_learned,
    /// energy_balance, energy_change, residual).
    #[arg(long, default_value = "fe_probe")]
    pub indicator: String,
    /// A learned indicator (grid_learned) fits its error model first on this many more
    /// scenarios (seed + 2); default 24 for it, refused for the others.
    #[arg(long)]
    pub fit_scenarios: Option<usize>,
    /// Fit the learned error model on the windows of hybrid runs of the fit scenarios too,
    /// each accepting up to N windows in a row (as --rollout), reading whether a window
    /// follows an accepted one. 0 (default): exact FE starts only.
    #[arg(long, default_value_t = 0)]
    pub fit_rollout: usize,
    /// Scenarios drawn (the first `1 - holdout` of them calibrate, the rest check).
    #[arg(long, default_value_t = 40)]
    pub scenarios: usize,
    #[arg(long, default_value_t = 0.5)]
    pub holdout: f64,
    /// Fraction of accepted calibration windows allowed above the tolerance.
    #[arg(long, default_value_t = 0.1)]
    pub risk: f64,
    /// Seed of the scenarios (not the dataset's, so that they are held out).
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Multiplies the drawn source frequencies of the calibration scenarios.
    #[arg(long, default_value_t = 1.0)]
    pub frequency_factor: f64,
    /// The same for the held-out scenarios (> 1: out of the trained range); default: as
    /// --frequency-factor.
    #[arg(long)]
    pub check_frequency_factor: Option<f64>,
    /// Draw the calibration sources in this box instead of the job's ranges, `x0,x1,y0,y1`
    /// (with --out-of-range: sources where none was in training).
    #[arg(long, value_delimiter = ',')]
    pub source_box: Option<Vec<f64>>,
    /// Draw the held-out sources in this box instead, `x0,x1,y0,y1` (outside the trained
    /// ranges: sources where none was in training); default: as --source-box.
    #[arg(long, value_delimiter = ',')]
    pub check_source_box: Option<Vec<f64>>,
    /// Calibrate the model's calibration of --indicator again on scenarios outside its
    /// trained ranges (--frequency-factor, --source-box), with its error model, and store it
    /// beside the one in range: what a run whose source lies outside them uses with
    /// `coupling.out_of_range = "trust"`. The calibration in range is kept, and so are the
    /// windows of earlier --out-of-range calls: each window is filed under the parameters its
    /// scenario lies clearly outside the trained ranges in (its regime; more than 0.25
    /// half-widths out), and a run takes its own regime's threshold. Windows of a scenario
    /// inside the ranges or only just outside are left to the calibration in range.
    #[arg(long)]
    pub out_of_range: bool,
    /// With --out-of-range: drop the windows of earlier --out-of-range calls first (start
    /// the calibration out of range afresh).
    #[arg(long, requires = "out_of_range")]
    pub fresh: bool,
    /// Tolerances (relative L2 window errors) to check on the held-out windows.
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2,0.3,0.5")]
    pub tolerances: Vec<f64>,
    /// Where the calibrated model goes (default: replaces MODEL). A calibration of another
    /// indicator the model holds is kept; one of the same indicator is replaced.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only report; write nothing (but --windows).
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the windows this call sampled, one JSON object a line: `held_out`,
    /// `scenario` (numbered per side), `outside` (its scenario's regime: the parameters
    /// clearly outside the trained ranges; empty inside them or only just outside, such a
    /// window left out of a calibration out of range), `score` (the indicator) and `error`
    /// (the true one).
    #[arg(long)]
    pub windows: Option<PathBuf>,
    /// Sample the windows a hybrid run sees: each scenario runs accepting up to N windows in
    /// a row (BDF2 hand-back; then the FE runs one), the FE re-running each accepted window
    /// for its true error, so all but the first of a run start from the previous window's
    /// hand-back. 0 (default): windows from the FE's exact states, one every frame.
    #[arg(long, default_value_t = 0)]
    pub rollout: usize,
}

#[cfg(feature = "hdf5")]
pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    use wavecp::surrogate::modelfile;
    anyhow::ensure!(a.scenarios >= 2, "--scenarios must be at least 2");
    anyhow::ensure!(
        wavecp::config::INDICATORS.contains(&a.indicator.as_str()),
        "--indicator: `{}` is none of {}",
        a.indicator,
        wavecp::config::INDICATORS.join(", ")
    );
    anyhow::ensure!(
        a.frequency_factor.is_finite() && a.frequency_factor > 0.0,
        "--frequency-factor must be a positive number"
    );
    let loaded = modelfile::load(&a.model)?;
    if let Some(path) = &a.windows {
        // Before the scenarios run (minutes to an hour), not after them.
        std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("--windows: cannot write {}: {e}", path.display()))?;
    }
    anyhow::ensure!(
        loaded.train.is_none(),
        "{} is a training checkpoint: calibrate the best model (best.safetensors)",
        a.model.display()
    );
    let source_box = boxed("--source-box", a.source_box.as_deref())?;
    let s = wavecp::coupling::calibrate::Sampling {
        model: a.model.clone(),
        job: a.job.clone(),
        indicators: vec![a.indicator.clone()],
        scenarios: a.scenarios,
        seed: a.seed,
        frequency_factor: a.frequency_factor,
        source_box,
        rollout: a.rollout,
    };
    let check = a.check_frequency_factor.unwrap_or(a.frequency_factor);
    anyhow::ensure!(
        check.is_finite() && check > 0.0,
        "--check-frequency-factor must be a positive number"
    );
    let check = wavecp::coupling::calibrate::Check {
        frequency_factor: check,
        source_box: boxed("--check-source-box", a.check_source_box.as_deref())?.or(source_box),
    };
    if a.out_of_range {
        return out_of_range(&a, loaded, &s, check);
    }
    let learned = wavecp::coupling::calibrate::is_learned(&a.indicator);
    let plan = wavecp::coupling::calibrate::Plan {
        risk: a.risk,
        holdout: a.holdout,
        check,
        fit_scenarios: a.fit_scenarios.unwrap_or(if learned { 24 } else { 0 }),
        fit_rollout: a.fit_rollout,
    };
    anyhow::ensure!(
        learned || a.fit_rollout == 0,
        "--fit-rollout: `{}` fits nothing (only grid_learned does)",
        a.indicator
    );
    anyhow::ensure!(
        !learned || plan.fit_scenarios >= 2,
        "--fit-scenarios: `{}` fits its error model on two or more scenarios",
        a.indicator
    );
    let (c, report) = wavecp::coupling::calibrate::calibrate(&s, plan, &a.tolerances)?;
    store(&a, loaded, c, &report)
}

/// The calibration into the model file (`--out`, else MODEL; not with `--dry-run`), beside the
/// model's calibrations of other indicators; the report on stdout.
#[cfg(feature = "hdf5")]
fn store(
    a: &CalibrateArgs,
    loaded: wavecp::surrogate::modelfile::Loaded,
    c: wavecp::surrogate::calibration::Calibration,
    report: &wavecp::coupling::calibrate::CalibrationReport,
) -> Result<()> {
    if !a.dry_run {
        let out = a.out.as_ref().unwrap_or(&a.model);
        let mut meta = loaded.meta;
        meta.calibrations.set(c);
        wavecp::surrogate::modelfile::save(out, &loaded.model, &meta, None)?;
        tracing::info!(
            "{} calibration of `{}` written to {} (the model's calibrations: {})",
            report.regime,
            a.indicator,
            out.display(),
            meta.calibrations.indicators().join(", ")
        );
    }
    warn_scenarios(report);
    if let Some(path) = &a.windows {
        let mut text = String::new();
        for w in &report.windows {
            text.push_str(&serde_json::to_string(w)?);
            text.push('\n');
        }
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("--windows: cannot write {}: {e}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}

/// Says when the rule by scenario cannot hold (no scenarios kept) or accepts nothing (too
/// few of them for the risk), for the calibration and each regime.
#[cfg(feature = "hdf5")]
fn warn_scenarios(r: &wavecp::coupling::calibrate::CalibrationReport) {
    let need = r.scenarios_needed;
    if r.calibration_scenarios == 0 {
        tracing::warn!(
            "the calibration keeps no scenarios (an earlier calibration out of range did not): it has the windows' rule alone; --fresh starts it afresh"
        );
        return;
    }
    let mut few: Vec<(String, usize)> = vec![];
    if r.regimes.is_empty() && r.calibration_scenarios < need {
        few.push(("the calibration".into(), r.calibration_scenarios));
    }
    for g in r.regimes.iter().filter(|g| g.scenarios < need) {
        few.push((format!("regime {}", g.outside.join("+")), g.scenarios));
    }
    if need == usize::MAX && !few.is_empty() {
        tracing::warn!(
            "at a risk of {} the rule by scenario accepts no window, whatever the tolerance",
            r.risk
        );
        return;
    }
    for (what, n) in few {
        tracing::warn!(
            "{what} has {n} scenarios: at a risk of {} the rule by scenario needs {need} to accept any window (take more scenarios, or a larger --risk)",
            r.risk
        );
    }
}

/// `x0,x1,y0,y1` as a box, if given.
#[cfg(feature = "hdf5")]
fn boxed(flag: &str, b: Option<&[f64]>) -> Result<Option<[f64; 4]>> {
    match b {
        None => Ok(None),
        Some(&[x0, x1, y0, y1]) if x0 <= x1 && y0 <= y1 => Ok(Some([x0, x1, y0, y1])),
        Some(b) => anyhow::bail!("{flag} takes x0,x1,y0,y1 with x0 <= x1, y0 <= y1: {b:?}"),
    }
}

/// `wavecp calibrate --out-of-range`: the model's calibration of the indicator, calibrated
/// again outside the trained ranges and stored beside the one in range.
#[cfg(feature = "hdf5")]
fn out_of_range(
    a: &CalibrateArgs,
    loaded: wavecp::surrogate::modelfile::Loaded,
    s: &wavecp::coupling::calibrate::Sampling,
    check: wavecp::coupling::calibrate::Check,
) -> Result<()> {
    anyhow::ensure!(
        a.fit_scenarios.is_none() && a.fit_rollout == 0 && a.rollout == 0,
        "--out-of-range keeps the calibration's error model and samples exact FE starts: \
         --fit-scenarios, --fit-rollout and --rollout do not go with it"
    );
    let base = loaded.meta.calibrations.get(&a.indicator).ok_or_else(|| {
        anyhow::anyhow!(
            "{} carries no calibration of `{}` to calibrate out of range: run wavecp calibrate \
             --indicator {} first (in range)",
            a.model.display(),
            a.indicator,
            a.indicator
        )
    })?;
    anyhow::ensure!(
        loaded.meta.conditioning.is_some(),
        "--out-of-range: {} is not conditioned on its scenario, so it has no trained ranges for a run to leave (a calibration out of them would never be used)",
        a.model.display()
    );
    let mut base = base.clone();
    if a.fresh {
        base.out_of_range = None;
    }
    let (c, report) = wavecp::coupling::calibrate::calibrate_out_of_range(
        s,
        &base,
        (a.risk, a.holdout, check),
        &a.tolerances,
    )?;
    store(a, loaded, c, &report)
}

#[cfg(not(feature = "hdf5"))]
pub fn calibrate(_: CalibrateArgs) -> Result<()> {
    anyhow::bail!("calibrate needs the datasets' HDF5 support: build with the `hdf5` feature")
}
