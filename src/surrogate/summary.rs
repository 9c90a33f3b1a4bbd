//! What a model file holds, for `wavecp model info`: its layers, windows, grid, training
//! record, the ranges of the scenarios it was trained on and its calibrations (as thresholds at
//! a few tolerances, not the calibration windows themselves).

use super::calibration::{Basis, Calibration};
use super::modelfile::Loaded;
use serde::Serialize;

/// The tolerances at which a summary lists each calibration's thresholds.
pub const TOLERANCES: [f64; 5] = [0.01, 0.02, 0.03, 0.05, 0.1];

/// A model file, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub layers: Vec<String>,
    pub dims: usize,
    pub trainable_params: usize,
    pub weight_bytes: usize,
    pub out_channels: usize,
    pub t_in: usize,
    pub t_out: usize,
    /// `[ny, nx]`.
    pub grid: [usize; 2],
    /// `[x0, x1, y0, y1]` (unknown in older files).
    pub zone: Option<[f64; 4]>,
    pub frame_dt: f64,
    pub mean: f64,
    pub std: f64,
    pub training: Training,
    pub conditioning: Option<Conditioned>,
    pub calibrations: Vec<CalibrationSummary>,
}

/// The training record a model carries.
#[derive(Debug, Clone, Serialize)]
pub struct Training {
    pub dataset: String,
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub epoch_s: f64,
    pub peak_rss_mb: f64,
    /// The file is a training checkpoint (it holds the optimiser's moments).
    pub checkpoint: bool,
}

/// The scenario channels of a conditioned model.
#[derive(Debug, Clone, Serialize)]
pub struct Conditioned {
    pub channels: Vec<String>,
    pub params: Vec<ParamRange>,
    /// The prior's wave speed, with a prior channel.
    pub prior_speed: Option<f64>,
    /// The absorbing rectangle whose reflections the prior adds.
    pub prior_walls: Option<[f64; 4]>,
}

/// One scenario parameter: the range its training runs spanned and, where the dataset
/// recorded it, the range they were drawn from.
#[derive(Debug, Clone, Serialize)]
pub struct ParamRange {
    pub name: String,
    /// The training runs' extremes (both the one value where it never varied).
    pub trained: [f64; 2],
    pub varied: bool,
    pub sampled: Option<[f64; 2]>,
}

/// One indicator's calibration.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    pub indicator: String,
    pub risk: f64,
    pub windows: usize,
    /// 0 where the calibration predates keeping them (the windows' rule alone).
    pub scenarios: usize,
    /// A learned indicator carries its fitted error model.
    pub learned: bool,
    /// `[tolerance, threshold]` at each of [`TOLERANCES`].
    pub thresholds: Vec<[f64; 2]>,
    pub out_of_range: Option<OutOfRange>,
}

/// A calibration on scenarios outside the trained ranges.
#[derive(Debug, Clone, Serialize)]
pub struct OutOfRange {
    pub windows: usize,
    pub scenarios: usize,
    /// The pooled windows' thresholds.
    pub thresholds: Vec<[f64; 2]>,
    pub regimes: Vec<RegimeSummary>,
}

/// The windows of the scenarios outside in the same parameters.
#[derive(Debug, Clone, Serialize)]
pub struct RegimeSummary {
    pub name: String,
    pub windows: usize,
    pub scenarios: usize,
    pub thresholds: Vec<[f64; 2]>,
}

fn at(f: impl Fn(f64) -> f64) -> Vec<[f64; 2]> {
    TOLERANCES.iter().map(|&t| [t, f(t)]).collect()
}

fn calibration(c: &Calibration) -> CalibrationSummary {
    let out_of_range = c.out_of_range.as_deref().map(|o| OutOfRange {
        windows: o.windows_behind(&Basis::Pooled),
        scenarios: o.scenarios_behind(&Basis::Pooled),
        thresholds: at(|t| o.threshold(t)),
        regimes: (o.regimes.iter())
            .map(|r| {
                let basis = Basis::Regime(r.name());
                RegimeSummary {
                    name: r.name(),
                    windows: o.windows_behind(&basis),
                    scenarios: o.scenarios_behind(&basis),
                    thresholds: at(|t| o.threshold_outside(&r.outside, t).0),
                }
            })
            .collect(),
    });
    CalibrationSummary {
        indicator: c.indicator.clone(),
        risk: c.risk,
        windows: c.windows_behind(&Basis::Pooled),
        scenarios: c.scenario_count(),
        learned: c.estimator.is_some(),
        thresholds: at(|t| c.threshold(t)),
        out_of_range,
    }
}

impl ModelSummary {
    pub fn of(l: &Loaded) -> ModelSummary {
        let m = &l.meta;
        let conditioning = m.conditioning.as_ref().map(|c| Conditioned {
            channels: c.channels.clone(),
            params: (0..c.nparams())
                .map(|k| {
                    let varied = c.varied(k);
                    ParamRange {
                        name: c.channels[3 + k].clone(),
                        trained: match varied {
                            true => c.trained_range(k),
                            false => [c.center[3 + k]; 2],
                        },
                        varied,
                        sampled: c.sampled_range(k),
                    }
                })
                .collect(),
            prior_speed: c.prior_speed,
            prior_walls: c.prior_walls,
        });
        let calibrations = (m.calibrations.indicators().iter())
            .filter_map(|i| m.calibrations.get(i))
            .map(calibration)
            .collect();
        ModelSummary {
            layers: l.model.summary(),
            dims: l.model.spec.model.dims,
            trainable_params: l.model.num_params(),
            weight_bytes: 4 * l.model.num_params(),
            out_channels: l.model.out_channels,
            t_in: m.t_in,
            t_out: m.t_out,
            grid: [m.ny, m.nx],
            zone: m.zone,
            frame_dt: m.frame_dt,
            mean: m.mean,
            std: m.std,
            training: Training {
                dataset: m.dataset.clone(),
                epoch: m.epoch,
                train_loss: m.train_loss,
                val_loss: m.val_loss,
                epoch_s: m.epoch_s,
                peak_rss_mb: m.peak_rss_mb,
                checkpoint: l.train.is_some(),
            },
            conditioning,
            calibrations,
        }
    }
}
