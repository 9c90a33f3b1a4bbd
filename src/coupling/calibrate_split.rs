//! The split of a calibration (`wavecp calibrate`): the calibration scenarios make the
//! [`Calibration`], the held-out ones check it at each tolerance, and each calibration scenario
//! left out in turn checks it again; and the report of all three.

use super::calibrate::{sample_fitted, setup, spearman, Check, FitReport, Sampling, Windows};
use super::error_model::ErrorModel;
use super::CouplingError;
use crate::surrogate::calibration::{scenarios_needed, Basis, Calibration, TaggedWindow};
use serde::Serialize;

/// How a calibration holds on the held-out windows at one tolerance.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    pub tolerance: f64,
    /// The indicator threshold the tolerance becomes.
    pub threshold: f64,
    /// Held-out windows accepted (indicator below the threshold), and of those the fraction
    /// whose true error exceeds the tolerance.
    pub accepted: usize,
    pub accepted_fraction: f64,
    pub exceeded_fraction: f64,
    /// Held-out windows whose true error is within the tolerance (what a perfect indicator
    /// would accept).
    pub within: usize,
    /// Per held-out scenario, its windows accepted and of those the ones above the
    /// tolerance: windows of one scenario move together, so the pooled fraction hides how
    /// unevenly the risk falls (a regime sampled by few scenarios shows it here).
    pub per_scenario: Vec<[usize; 2]>,
    /// The same check under the windows' rule alone (the calibration's scenarios set aside):
    /// what the rule by scenario changed.
    pub windows_rule: WindowsRule,
}

/// A held-out check under the windows' rule alone ([`HeldOut::windows_rule`]).
#[derive(Debug, Clone, Serialize)]
pub struct WindowsRule {
    pub threshold: f64,
    pub accepted: usize,
    pub exceeded_fraction: f64,
}

/// Per window of `test`, its threshold at `tol` under `rule` from `c` (once per regime: it
/// depends on nothing else); the windows accepted and of those the ones above `tol`.
fn held_out_at(
    rule: Rule<'_>,
    c: &Calibration,
    test: &[&SampledWindow],
    tol: f64,
) -> (Vec<f64>, usize, usize) {
    let mut known: Vec<(&[String], f64)> = vec![];
    let t: Vec<f64> = (test.iter())
        .map(
            |w| match known.iter().find(|k| k.0 == w.outside.as_slice()) {
                Some(k) => k.1,
                None => {
                    let t = rule.threshold(c, &w.outside, tol);
                    known.push((&w.outside, t));
                    t
                }
            },
        )
        .collect();
    let (acc, over) = (test.iter().zip(&t))
        .filter(|(w, &t)| w.score < t)
        .fold((0, 0), |(a, o), (w, _)| {
            (a + 1, o + usize::from(w.error > tol))
        });
    (t, acc, over)
}

/// The calibration rule checked on each calibration scenario in turn, fitted without it.
#[derive(Debug, Clone, Serialize)]
pub struct LeftOut {
    pub tolerance: f64,
    /// Windows accepted over all the folds, and of those the fraction above the tolerance.
    pub accepted: usize,
    pub exceeded_fraction: f64,
    /// Scenarios with a window accepted, and the largest fraction above the tolerance among
    /// them (one scenario's accepted windows all above it: 1).
    pub scenarios_accepting: usize,
    pub worst_scenario_exceeded_fraction: f64,
}

/// What `wavecp calibrate` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub model: String,
    pub indicator: String,
    /// `in_range`, or `out_of_range` (`wavecp calibrate --out-of-range`).
    pub regime: &'static str,
    pub risk: f64,
    pub scenarios: usize,
    /// The frequency factor and source box of the calibration scenarios.
    pub frequency_factor: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_box: Option<[f64; 4]>,
    /// The frequency factor and source box of the held-out scenarios.
    pub held_out_frequency_factor: f64,
    pub held_out_source_box: Option<[f64; 4]>,
    pub calibration_windows: usize,
    /// The scenarios behind them (all calls' out of range; 0 when an earlier calibration
    /// did not keep its windows' scenarios, which leaves the windows' rule alone).
    pub calibration_scenarios: usize,
    /// The fewest scenarios (of the calibration, or of a regime) with which the rule by
    /// scenario accepts anything at this risk ([`scenarios_needed`]).
    pub scenarios_needed: usize,
    pub held_out_windows: usize,
    /// Out of range: the windows sampled (both sides) whose scenario lies inside the trained
    /// ranges or only just outside (no regime), left to the calibration in range.
    pub windows_without_regime: usize,
    pub spearman_calibration: f64,
    pub spearman_held_out: f64,
    pub median_error: f64,
    pub indicator_cost_share_of_inference: f64,
    pub held_out: Vec<HeldOut>,
    /// The calibration scenarios of this call left out one at a time (the rule fitted on the
    /// others and the earlier windows, checked on it): a second estimate of the risk, from
    /// as many checks as scenarios, where the held-out split gives one.
    pub leave_one_scenario_out: Vec<LeftOut>,
    /// Out of range: the calibration's regimes after this call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regimes: Vec<RegimeSummary>,
    /// A learned indicator's fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitReport>,
    /// The windows sampled by this call (not the earlier ones), for `--windows`.
    #[serde(skip)]
    pub windows: Vec<SampledWindow>,
}

/// One window sampled by a calibration: which side of the split, its scenario (numbered per
/// side) and that scenario's regime ([`Windows::outside`]), the indicator's value and the
/// true error.
#[derive(Debug, Clone, Serialize)]
pub struct SampledWindow {
    pub held_out: bool,
    pub scenario: usize,
    pub outside: Vec<String>,
    pub score: f64,
    pub error: f64,
}

/// A regime of a calibration out of range after the call: its parameters outside, its
/// windows and their scenarios (all calls'), and its thresholds at the report's tolerances.
#[derive(Debug, Clone, Serialize)]
pub struct RegimeSummary {
    pub outside: Vec<String>,
    pub windows: usize,
    pub scenarios: usize,
    pub thresholds: Vec<f64>,
}

/// How the windows of a call become a calibration, and which threshold a window meets.
#[derive(Clone, Copy)]
pub(super) enum Rule<'a> {
    /// One calibration over all windows.
    InRange,
    /// Pooled and by regime, after the windows of an earlier calibration out of range;
    /// a window meets its regime's threshold ([`Calibration::threshold_outside`]).
    OutOfRange(Option<&'a Calibration>),
}

impl Rule<'_> {
    /// Whether `w` belongs to the calibration: out of range, only windows with a regime (a
    /// scenario inside the trained ranges or just outside is the calibration in range's, which
    /// a run there uses).
    fn keeps(self, w: &SampledWindow) -> bool {
        matches!(self, Rule::InRange) || !w.outside.is_empty()
    }

    fn fit(
        self,
        (indicator, risk): (&str, f64),
        windows: &[&SampledWindow],
    ) -> Result<Calibration, CouplingError> {
        match self {
            Rule::InRange => {
                let p: Vec<(f64, f64, u32)> = (windows.iter())
                    .map(|w| (w.score, w.error, w.scenario as u32))
                    .collect();
                Calibration::by_scenario(indicator, risk, &p)
            }
            Rule::OutOfRange(earlier) => {
                let tagged: Vec<TaggedWindow> = (windows.iter())
                    .map(|w| TaggedWindow {
                        outside: w.outside.clone(),
                        score: w.score,
                        error: w.error,
                        scenario: w.scenario as u32,
                    })
                    .collect();
                Calibration::out_of_range(earlier, indicator, risk, &tagged)
            }
        }
        .map_err(setup)
    }

    fn threshold(self, c: &Calibration, outside: &[String], tol: f64) -> f64 {
        match self {
            Rule::InRange => c.threshold(tol),
            Rule::OutOfRange(_) => c.threshold_outside(outside, tol).0,
        }
    }
}

/// [`LeftOut`] at each tolerance over the calibration side of `windows`, fitted by `rule`
/// (after its earlier windows, always among the fitted ones).
fn left_out(
    rule: Rule<'_>,
    (indicator, risk): (&str, f64),
    windows: &[SampledWindow],
    tolerances: &[f64],
) -> Result<Vec<LeftOut>, CouplingError> {
    let cal: Vec<&SampledWindow> = (windows.iter())
        .filter(|w| !w.held_out && rule.keeps(w))
        .collect();
    // The scenarios with windows kept (out of range, one with no regime has none to check).
    let mut ids: Vec<usize> = cal.iter().map(|w| w.scenario).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut folds = vec![];
    for k in ids {
        let rest: Vec<&SampledWindow> = cal.iter().copied().filter(|w| w.scenario != k).collect();
        let c = match rule.fit((indicator, risk), &rest) {
            Ok(c) => c,
            // One scenario and nothing earlier: no fold to fit.
            Err(_) if rest.is_empty() => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mine: Vec<&SampledWindow> = cal.iter().copied().filter(|w| w.scenario == k).collect();
        folds.push((c, mine));
    }
    Ok(tolerances
        .iter()
        .map(|&tol| {
            let per: Vec<[usize; 2]> = folds
                .iter()
                .map(|(c, mine)| {
                    let (_, acc, over) = held_out_at(rule, c, mine, tol);
                    [acc, over]
                })
                .collect();
            let (acc, over) = per.iter().fold((0, 0), |a, p| (a.0 + p[0], a.1 + p[1]));
            let taking: Vec<f64> = (per.iter().filter(|p| p[0] > 0))
                .map(|p| p[1] as f64 / p[0] as f64)
                .collect();
            LeftOut {
                tolerance: tol,
                accepted: acc,
                exceeded_fraction: share(over, acc),
                scenarios_accepting: taking.len(),
                worst_scenario_exceeded_fraction: taking.iter().copied().fold(0.0, f64::max),
            }
        })
        .collect())
}

/// `part / whole`, 0 when there is no whole (no window accepted: none above the tolerance).
fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Per scenario (numbered from 0), the windows scoring below their threshold and of those the
/// ones with an error above `tol`.
fn per_scenario(windows: &[&SampledWindow], thresholds: &[f64], tol: f64) -> Vec<[usize; 2]> {
    let n = windows.iter().map(|w| w.scenario + 1).max().unwrap_or(0);
    let mut out = vec![[0, 0]; n];
    for (w, &t) in windows.iter().zip(thresholds) {
        if w.score < t {
            out[w.scenario][0] += 1;
            out[w.scenario][1] += usize::from(w.error > tol);
        }
    }
    out
}

/// The indicator `s` samples first, once the holdout is known to leave both sides (checked
/// before any scenario runs).
pub(super) fn checked(s: &Sampling, holdout: f64) -> Result<&String, CouplingError> {
    if !(holdout > 0.0 && holdout < 1.0) {
        return Err(setup(format!("holdout {holdout} is not in (0, 1)")));
    }
    s.indicators
        .first()
        .ok_or_else(|| setup("no indicator to calibrate"))
}

/// The windows of `x` as one side of the split.
fn sampled(x: &Windows, held_out: bool) -> impl Iterator<Item = SampledWindow> + '_ {
    (0..x.errors.len()).map(move |i| SampledWindow {
        held_out,
        scenario: x.scenario[i],
        outside: x.outside[x.scenario[i]].clone(),
        score: x.scores[0][i],
        error: x.errors[i],
    })
}

/// The calibration of `s.indicators[0]` (its error model, if learned, from `fitted`) on the
/// first `1 − holdout` of the scenarios as `rule` fits it, checked on the others.
pub(super) fn split(
    s: &Sampling,
    fitted: &dyn Fn(&str) -> Option<ErrorModel>,
    (risk, holdout, check): (f64, f64, Check),
    tolerances: &[f64],
    rule: Rule<'_>,
) -> Result<(Calibration, CalibrationReport), CouplingError> {
    let indicator = checked(s, holdout)?;
    let run = |s: &Sampling| sample_fitted(s, fitted);
    let split = ((1.0 - holdout) * s.scenarios as f64).round() as usize;
    let mut windows = vec![];
    let mut cost = 0.0;
    if split > 0 && split < s.scenarios {
        let w = run(&Sampling {
            scenarios: split,
            ..s.clone()
        })?;
        let t = run(&Sampling {
            scenarios: s.scenarios - split,
            seed: s.seed.wrapping_add(1),
            frequency_factor: check.frequency_factor,
            source_box: check.source_box,
            ..s.clone()
        })?;
        cost = (w.indicator_s[0] + t.indicator_s[0]) / (w.inference_s + t.inference_s);
        windows.extend(sampled(&w, false).chain(sampled(&t, true)));
    }
    let (cal, test): (Vec<&SampledWindow>, Vec<&SampledWindow>) = (windows.iter())
        .filter(|w| rule.keeps(w))
        .partition(|w| !w.held_out);
    if cal.is_empty() || test.is_empty() {
        return Err(setup(match rule {
            Rule::InRange => format!(
                "{} scenarios split {split} / {} leave a side without windows: take more scenarios",
                s.scenarios,
                s.scenarios - split
            ),
            Rule::OutOfRange(_) => format!(
                "of {} scenarios split {split} / {}, a side has none outside the trained ranges far enough to make a regime (more than {} half-widths past the training runs' extremes): take more scenarios, or go further out",
                s.scenarios,
                s.scenarios - split,
                crate::surrogate::condition::REGIME_MARGIN
            ),
        }));
    }
    let c = rule.fit((indicator, risk), &cal)?;
    let plain = c.windows_rule_only();
    let held_out = tolerances
        .iter()
        .map(|&tol| {
            let (t, acc, over) = held_out_at(rule, &c, &test, tol);
            let (wt, wacc, wover) = held_out_at(rule, &plain, &test, tol);
            HeldOut {
                tolerance: tol,
                threshold: t[0],
                accepted: acc,
                accepted_fraction: acc as f64 / test.len() as f64,
                exceeded_fraction: share(over, acc),
                within: test.iter().filter(|w| w.error <= tol).count(),
                per_scenario: per_scenario(&test, &t, tol),
                windows_rule: WindowsRule {
                    threshold: wt[0],
                    accepted: wacc,
                    exceeded_fraction: share(wover, wacc),
                },
            }
        })
        .collect();
    let corr = |p: &[&SampledWindow]| {
        let (a, b): (Vec<f64>, Vec<f64>) = p.iter().map(|w| (w.score, w.error)).unzip();
        spearman(&a, &b)
    };
    let mut sorted: Vec<f64> = cal.iter().chain(&test).map(|w| w.error).collect();
    sorted.sort_by(f64::total_cmp);
    let regimes = (c.regimes.iter())
        .map(|r| RegimeSummary {
            outside: r.outside.clone(),
            windows: r.scores.len(),
            scenarios: c.scenarios_behind(&Basis::Regime(r.name())),
            thresholds: (tolerances.iter())
                .map(|&t| c.threshold_outside(&r.outside, t).0)
                .collect(),
        })
        .collect();
    let report = CalibrationReport {
        model: s.model.display().to_string(),
        indicator: indicator.clone(),
        regime: "in_range",
        risk,
        scenarios: s.scenarios,
        frequency_factor: s.frequency_factor,
        source_box: s.source_box,
        held_out_frequency_factor: check.frequency_factor,
        held_out_source_box: check.source_box,
        calibration_windows: c.scores.len(),
        calibration_scenarios: c.scenario_count(),
        scenarios_needed: scenarios_needed(risk),
        held_out_windows: test.len(),
        windows_without_regime: windows.len() - cal.len() - test.len(),
        spearman_calibration: corr(&cal),
        spearman_held_out: corr(&test),
        median_error: sorted[sorted.len() / 2],
        indicator_cost_share_of_inference: cost,
        held_out,
        leave_one_scenario_out: left_out(rule, (indicator, risk), &windows, tolerances)?,
        regimes,
        fit: None,
        windows,
    };
    Ok((c, report))
}
