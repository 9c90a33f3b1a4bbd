//! An error indicator's calibration, stored with the model: the indicator values and true
//! window errors (relative L2 over the window's frames) of a calibration split, and the
//! rule that turns the user's tolerance, in error units, into a threshold on the indicator.
//!
//! The rule (a one-sided, distribution-free bound on the calibration windows): the threshold
//! for a tolerance `τ` is the largest indicator value `s` such that, among the calibration
//! windows scoring at most `s`, no more than the fraction `risk` have an error above `τ`. A
//! hybrid run accepts a window whose indicator is below it. Nothing above the largest
//! calibration score is ever accepted, and a tolerance no window's error is below accepts none.

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
        })
    }

    /// The indicator threshold for `tolerance` (error units): windows scoring below it are
    /// accepted. 0 when no prefix of the calibration windows meets the risk.
    pub fn threshold(&self, tolerance: f64) -> f64 {
        let mut over = 0usize;
        let mut best = 0.0;
        for (k, (&s, &e)) in self.scores.iter().zip(&self.errors).enumerate() {
            if e > tolerance {
                over += 1;
            }
            let n = k + 1;
            // Ties: a threshold can only fall between distinct values.
            let distinct = self.scores.get(n).is_none_or(|&next| next > s);
            if distinct && over as f64 <= self.risk * n as f64 {
                // Just above `s`, so that the window scoring `s` is accepted.
                best = next_up(s);
            }
        }
        best
    }
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
