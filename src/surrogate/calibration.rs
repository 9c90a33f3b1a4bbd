//! An error indicator's calibration, stored with the model: the indicator values and true
//! window errors (relative L2 over the window's frames) of a calibration split, and the
//! rule that turns the user's tolerance, in error units, into a threshold on the indicator.
//!
//! The rule (a one-sided, distribution-free bound on the calibration windows): the threshold
//! for a tolerance `τ` is the largest indicator value `s` such that, among the calibration
//! windows scoring at most `s`, no more than the fraction `risk` have an error above `τ`. A
//! hybrid run accepts a window whose indicator is below it. Nothing above the largest
//! calibration score is ever accepted, and a tolerance no window's error is below accepts none.
//!
//! Out of the trained ranges the windows are also kept by regime — the scenario parameters
//! their source lies outside — because a scenario's windows move together and two regimes
//! pooled give a threshold one of them does not bear (measured on the fine model: a
//! frequency above the trained range took 44.5 % of its accepted windows above a tolerance
//! of 0.1 under the pooled threshold, against the 0.1 risk). A run outside the ranges takes
//! its own regime's threshold, see [`Calibration::threshold_outside`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The indicator's name (as `coupling.indicator` spells it).
    pub indicator: String,
    /// The fraction of accepted calibration windows allowed above the tolerance.
    pub risk: f64,
    /// Indicator values and true errors of the calibration windows, by increasing value.
    pub scores: Vec<f64>,
    pub errors: Vec<f64>,
    /// The fitted error model of a learned indicator (`grid_learned`), whose predictions are
    /// the scores; none for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<crate::coupling::error_model::ErrorModel>,
    /// The same indicator (and error model) calibrated on scenarios outside the model's
    /// trained ranges (`wavecp calibrate --out-of-range`): the threshold of a run whose source
    /// lies outside them with `coupling.out_of_range = "trust"`. A new calibration in range
    /// drops it (its error model may differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<Box<Calibration>>,
    /// In a calibration out of range: its windows again, by regime — the parameters their
    /// scenario lies clearly outside the trained ranges in ([`Conditioning::regime`]).
    /// Windows sampled before regimes were kept (which also held scenarios inside or just
    /// outside the ranges) are in the pooled `scores` only.
    ///
    /// [`Conditioning::regime`]: crate::surrogate::condition::Conditioning::regime
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regimes: Vec<Regime>,
}

/// The calibration windows of the scenarios outside the trained ranges in the same
/// parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regime {
    /// The parameters outside (names as the model's conditioning channels), sorted.
    pub outside: Vec<String>,
    /// Indicator values and true errors, by increasing value.
    pub scores: Vec<f64>,
    pub errors: Vec<f64>,
}

impl Regime {
    /// `outside` joined with `+` (`frequency`, `frequency+source_x`).
    pub fn name(&self) -> String {
        self.outside.join("+")
    }
}

/// Which windows a threshold out of range came from ([`Calibration::threshold_outside`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    /// The regime of the run's own parameters outside.
    Regime(String),
    /// The smallest of the pooled threshold and those of the regimes named, each outside in
    /// part of the run's parameters (none in all of them).
    Smallest(Vec<String>),
    /// All the windows out of range (no regime shares a parameter set with the run's).
    Pooled,
}

impl Basis {
    /// As a run reports it (`indicator_calibration`): `out_of_range:<regime>`,
    /// `out_of_range:smallest:pooled,<regimes>` or `out_of_range:pooled`.
    pub fn label(&self) -> String {
        match self {
            Basis::Regime(r) => format!("out_of_range:{r}"),
            Basis::Smallest(rs) => format!("out_of_range:smallest:pooled,{}", rs.join(",")),
            Basis::Pooled => "out_of_range:pooled".into(),
        }
    }
}

/// One window sampled out of range: its scenario's regime (sorted; empty: none), its
/// indicator value and its true error.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedWindow {
    pub outside: Vec<String>,
    pub score: f64,
    pub error: f64,
}

impl Calibration {
    /// From `(indicator value, true error)` pairs; refuses non-finite pairs, an empty set and
    /// a risk outside `[0, 1)`.
    pub fn new(indicator: &str, risk: f64, pairs: &[(f64, f64)]) -> Result<Self, String> {
        if pairs.is_empty() {
            return Err("no calibration windows".into());
        }
        if !(0.0..1.0).contains(&risk) {
            return Err(format!("risk {risk} is not in [0, 1)"));
        }
        if let Some(p) = pairs
            .iter()
            .find(|p| !p.0.is_finite() || !p.1.is_finite() || p.0 < 0.0)
        {
            return Err(format!(
                "a calibration window has indicator {} and error {}",
                p.0, p.1
            ));
        }
        let mut p = pairs.to_vec();
        p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        Ok(Calibration {
            indicator: indicator.into(),
            risk,
            scores: p.iter().map(|x| x.0).collect(),
            errors: p.iter().map(|x| x.1).collect(),
            estimator: None,
            out_of_range: None,
            regimes: vec![],
        })
    }

    /// A calibration out of range: the windows of `earlier` (one, or none) and `windows`,
    /// pooled and by regime.
    pub fn out_of_range(
        earlier: Option<&Calibration>,
        indicator: &str,
        risk: f64,
        windows: &[TaggedWindow],
    ) -> Result<Self, String> {
        let mut all: Vec<(f64, f64)> = earlier.map_or(vec![], |e| pairs(&e.scores, &e.errors));
        all.extend(windows.iter().map(|w| (w.score, w.error)));
        let mut c = Calibration::new(indicator, risk, &all)?;
        let mut by: std::collections::BTreeMap<Vec<String>, Vec<(f64, f64)>> = earlier
            .map_or(vec![], |e| e.regimes.clone())
            .into_iter()
            .map(|r| (r.outside, pairs(&r.scores, &r.errors)))
            .collect();
        for w in windows.iter().filter(|w| !w.outside.is_empty()) {
            let mut key = w.outside.clone();
            key.sort();
            by.entry(key).or_default().push((w.score, w.error));
        }
        c.regimes = by
            .into_iter()
            .map(|(outside, mut p)| {
                p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
                Regime {
                    outside,
                    scores: p.iter().map(|x| x.0).collect(),
                    errors: p.iter().map(|x| x.1).collect(),
                }
            })
            .collect();
        Ok(c)
    }

    /// The indicator threshold for `tolerance` (error units): windows scoring below it are
    /// accepted. 0 when no prefix of the calibration windows meets the risk.
    pub fn threshold(&self, tolerance: f64) -> f64 {
        threshold(&self.scores, &self.errors, self.risk, tolerance)
    }

    /// The windows behind a threshold of [`Self::threshold_outside`]: its regime's, else all.
    pub fn windows_behind(&self, basis: &Basis) -> usize {
        match basis {
            Basis::Regime(r) => {
                (self.regimes.iter().find(|x| &x.name() == r)).map_or(0, |x| x.scores.len())
            }
            _ => self.scores.len(),
        }
    }

    /// In a calibration out of range, the threshold for `tolerance` of a run whose source
    /// lies outside the trained ranges in the parameters `outside`: its regime's when there
    /// is one; else the smallest of the pooled one and those of the regimes outside in part
    /// of `outside` (each bears some of what the run does not share with training); else
    /// the pooled one.
    pub fn threshold_outside(&self, outside: &[String], tolerance: f64) -> (f64, Basis) {
        let mut key = outside.to_vec();
        key.sort();
        let of = |r: &Regime| threshold(&r.scores, &r.errors, self.risk, tolerance);
        if let Some(r) = self.regimes.iter().find(|r| r.outside == key) {
            return (of(r), Basis::Regime(r.name()));
        }
        let part: Vec<&Regime> = (self.regimes.iter())
            .filter(|r| r.outside.iter().all(|p| key.contains(p)))
            .collect();
        if part.is_empty() {
            return (self.threshold(tolerance), Basis::Pooled);
        }
        let t = part
            .iter()
            .map(|r| of(r))
            .fold(self.threshold(tolerance), f64::min);
        (t, Basis::Smallest(part.iter().map(|r| r.name()).collect()))
    }
}

/// `(score, error)` pairs of parallel slices.
fn pairs(scores: &[f64], errors: &[f64]) -> Vec<(f64, f64)> {
    scores.iter().copied().zip(errors.iter().copied()).collect()
}

/// The rule of the module doc over windows sorted by score.
fn threshold(scores: &[f64], errors: &[f64], risk: f64, tolerance: f64) -> f64 {
    let mut over = 0usize;
    let mut best = 0.0;
    for (k, (&s, &e)) in scores.iter().zip(errors).enumerate() {
        if e > tolerance {
            over += 1;
        }
        let n = k + 1;
        // Ties: a threshold can only fall between distinct values.
        let distinct = scores.get(n).is_none_or(|&next| next > s);
        if distinct && over as f64 <= risk * n as f64 {
            // Just above `s`, so that the window scoring `s` is accepted.
            best = next_up(s);
        }
    }
    best
}

/// The calibrations a model carries, one per indicator. Stored as a list; files written when
/// a model held one read as that one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calibrations(Vec<Calibration>);

impl Calibrations {
    /// The calibration of `indicator`, if the model has one.
    pub fn get(&self, indicator: &str) -> Option<&Calibration> {
        self.0.iter().find(|c| c.indicator == indicator)
    }

    /// Adds `c`, replacing the calibration of the same indicator.
    pub fn set(&mut self, c: Calibration) {
        match self.0.iter_mut().find(|o| o.indicator == c.indicator) {
            Some(old) => *old = c,
            None => self.0.push(c),
        }
    }

    /// The indicators calibrated, in the order they were added.
    pub fn indicators(&self) -> Vec<&str> {
        self.0.iter().map(|c| c.indicator.as_str()).collect()
    }
}

impl Serialize for Calibrations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Calibrations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Many(Vec<Calibration>),
            One(Box<Calibration>),
        }
        Ok(match Option::<Stored>::deserialize(d)? {
            None => Calibrations::default(),
            Some(Stored::Many(v)) => Calibrations(v),
            Some(Stored::One(c)) => Calibrations(vec![*c]),
        })
    }
}

/// The smallest `f64` above `x` (indicator values are ≥ 0).
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        f64::from_bits(1)
    } else {
        f64::from_bits(x.to_bits() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(outside: &[&str], pairs: &[(f64, f64)]) -> Vec<TaggedWindow> {
        (pairs.iter())
            .map(|&(score, error)| TaggedWindow {
                outside: outside.iter().map(|s| s.to_string()).collect(),
                score,
                error,
            })
            .collect()
    }

    /// Ten windows scoring 0.1..1.0; those scoring above `bad_from` have error 0.5, the
    /// others 0.01.
    fn windows(bad_from: f64, offset: f64) -> Vec<(f64, f64)> {
        (1..=10)
            .map(|k| {
                let s = k as f64 / 10.0 + offset;
                (s, if s > bad_from { 0.5 } else { 0.01 })
            })
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_run_out_of_range_takes_its_own_regimes_threshold() {
        let (freq, pos) = (windows(0.35, 0.0), windows(2.0, 0.001));
        let mut w = tagged(&["frequency"], &freq);
        w.extend(tagged(&["source_x"], &pos));
        // A scenario with no regime (just outside): pooled only.
        w.extend(tagged(&[], &[(0.05, 0.9)]));
        let c = Calibration::out_of_range(None, "grid_learned", 0.1, &w).unwrap();
        assert_eq!(c.scores.len(), 21);
        assert_eq!(c.regimes.len(), 2);
        let alone = |p: &[(f64, f64)]| Calibration::new("grid_learned", 0.1, p).unwrap();
        let tol = 0.1;
        let (tf, tp) = (alone(&freq).threshold(tol), alone(&pos).threshold(tol));
        assert!(tf < tp, "the case does not tell the regimes apart");
        assert_eq!(
            c.threshold_outside(&names(&["frequency"]), tol),
            (tf, Basis::Regime("frequency".into()))
        );
        assert_eq!(
            c.threshold_outside(&names(&["source_x"]), tol),
            (tp, Basis::Regime("source_x".into()))
        );
        // Outside in both (no regime of both): the smallest, the pooled one's included.
        let (t, b) = c.threshold_outside(&names(&["source_x", "frequency"]), tol);
        assert_eq!(t, tf.min(c.threshold(tol)));
        assert_eq!(
            b,
            Basis::Smallest(vec!["frequency".into(), "source_x".into()])
        );
        // Outside in a parameter no regime has: the pooled one.
        assert_eq!(
            c.threshold_outside(&names(&["amplitude"]), tol),
            (c.threshold(tol), Basis::Pooled)
        );
        assert_eq!(
            c.threshold_outside(&[], tol),
            (c.threshold(tol), Basis::Pooled)
        );
    }

    #[test]
    fn a_calibration_out_of_range_adds_to_the_regimes_before_it() {
        let first = Calibration::out_of_range(
            None,
            "grid_learned",
            0.1,
            &tagged(&["frequency"], &windows(0.35, 0.0)),
        )
        .unwrap();
        let mut more = tagged(&["frequency"], &windows(0.65, 0.002));
        more.extend(tagged(&["source_x"], &windows(2.0, 0.001)));
        let both = Calibration::out_of_range(Some(&first), "grid_learned", 0.1, &more).unwrap();
        let counts: Vec<(String, usize)> = (both.regimes.iter())
            .map(|r| (r.name(), r.scores.len()))
            .collect();
        assert_eq!(
            counts,
            vec![("frequency".into(), 20), ("source_x".into(), 10)]
        );
        assert_eq!(both.scores.len(), 30);
        assert!(both.regimes[0].scores.is_sorted());
        // The pooled windows are all of them, as one calibration of them all has them.
        let mut all: Vec<(f64, f64)> = windows(0.35, 0.0);
        all.extend(more.iter().map(|w| (w.score, w.error)));
        let pooled = Calibration::new("grid_learned", 0.1, &all).unwrap();
        assert_eq!(
            (&both.scores, &both.errors),
            (&pooled.scores, &pooled.errors)
        );
        // An earlier calibration without regimes (files written before they were kept)
        // reads, and its windows stay pooled only.
        let mut old = serde_json::to_value(&first).unwrap();
        old.as_object_mut().unwrap().remove("regimes");
        let old: Calibration = serde_json::from_value(old).unwrap();
        assert!(old.regimes.is_empty());
        let c = Calibration::out_of_range(Some(&old), "grid_learned", 0.1, &more).unwrap();
        assert_eq!((c.scores.len(), c.regimes[0].scores.len()), (30, 10));
    }
}
