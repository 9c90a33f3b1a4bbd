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
//! Windows of one scenario move together (a source the network renders a little off does
//! so in every window), so a calibration that knows each window's scenario also bounds the
//! risk scenario by scenario: each calibration scenario has its own threshold — the rule
//! above over its windows alone, or its smallest indicator value when no prefix of them meets
//! the risk (it accepts nothing then) — and the calibration's threshold is at most the `k`-th
//! smallest of the `n` scenario thresholds, `k = ⌊risk · (n + 1)⌋` (a scenario whose windows
//! all together meet the risk has none: it bounds nothing). For a scenario drawn as
//! the calibration ones were, the chance that its own threshold lies below that one is then at
//! most `k / (n + 1) ≤ risk` (the split-conformal bound, over scenarios rather than windows);
//! with fewer than `1 / risk − 1` scenarios it accepts nothing. Measured on the fine model out
//! of range, a frequency above the trained range took 47.6 % of its held-out accepted windows
//! above a tolerance of 0.1 under the windows' rule alone and 8.9 % under both.
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
    /// The scenario of each window (numbers only tell scenarios apart), which brings in the
    /// rule by scenario of the module doc; empty in calibrations sampled before scenarios were
    /// kept, which have the windows' rule only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<u32>,
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
    /// Indicator values and true errors, by increasing value, and the windows' scenarios
    /// (numbered as in the pooled windows; empty as there).
    pub scores: Vec<f64>,
    pub errors: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<u32>,
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

/// How a run turns a tolerance into an indicator threshold, kept whole so that a window can
/// be held to less than the run's tolerance: what the hand-back's loss leaves of it
/// (`coupling.handback_budget`). Monotone: a smaller tolerance never gets a larger threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ThresholdRule {
    /// No calibration of the indicator: the tolerance bounds its raw value.
    Raw,
    /// The calibration in range.
    InRange(Calibration),
    /// A calibration out of range, for a run outside in the parameters `outside`
    /// ([`Calibration::threshold_outside`]).
    Outside {
        calibration: Calibration,
        outside: Vec<String>,
    },
}

impl ThresholdRule {
    /// The threshold for `tolerance` (0 for a tolerance of 0 or below).
    pub fn at(&self, tolerance: f64) -> f64 {
        if tolerance <= 0.0 {
            return 0.0;
        }
        match self {
            ThresholdRule::Raw => tolerance,
            ThresholdRule::InRange(c) => c.threshold(tolerance),
            ThresholdRule::Outside {
                calibration,
                outside,
            } => calibration.threshold_outside(outside, tolerance).0,
        }
    }
}

/// One window sampled out of range: its scenario's regime (sorted; empty: none), its
/// indicator value, its true error and its scenario (numbered within the call).
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedWindow {
    pub outside: Vec<String>,
    pub score: f64,
    pub error: f64,
    pub scenario: u32,
}

/// A window as a calibration stores it: indicator value, true error, scenario if known.
type Kept = (f64, f64, Option<u32>);

/// Sorted by indicator value (then error), as the calibration's fields: scores, errors, and
/// the scenarios when every window has one (else none: the windows' rule only).
fn columns(mut w: Vec<Kept>) -> (Vec<f64>, Vec<f64>, Vec<u32>) {
    w.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let scenarios = w.iter().map(|x| x.2).collect::<Option<Vec<u32>>>();
    (
        w.iter().map(|x| x.0).collect(),
        w.iter().map(|x| x.1).collect(),
        scenarios.unwrap_or_default(),
    )
}

/// The stored windows of parallel columns (scenarios, if any, alongside).
fn kept(scores: &[f64], errors: &[f64], scenarios: &[u32]) -> Vec<Kept> {
    (0..scores.len())
        .map(|i| (scores[i], errors[i], scenarios.get(i).copied()))
        .collect()
}

impl Calibration {
    /// From `(indicator value, true error)` pairs; refuses non-finite pairs, an empty set and
    /// a risk outside `[0, 1)`.
    pub fn new(indicator: &str, risk: f64, pairs: &[(f64, f64)]) -> Result<Self, String> {
        let w: Vec<Kept> = pairs.iter().map(|p| (p.0, p.1, None)).collect();
        Self::of(indicator, risk, w)
    }

    /// From `(indicator value, true error, scenario)` windows: the rule by scenario applies
    /// besides the windows' (module doc).
    pub fn by_scenario(
        indicator: &str,
        risk: f64,
        windows: &[(f64, f64, u32)],
    ) -> Result<Self, String> {
        let w: Vec<Kept> = windows.iter().map(|p| (p.0, p.1, Some(p.2))).collect();
        Self::of(indicator, risk, w)
    }

    fn of(indicator: &str, risk: f64, pairs: Vec<Kept>) -> Result<Self, String> {
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
        let (scores, errors, scenarios) = columns(pairs);
        Ok(Calibration {
            indicator: indicator.into(),
            risk,
            scores,
            errors,
            scenarios,
            estimator: None,
            out_of_range: None,
            regimes: vec![],
        })
    }

    /// A calibration out of range: the windows of `earlier` (one, or none) and `windows`,
    /// pooled and by regime. The scenarios of `windows` are numbered after the earlier ones;
    /// an earlier calibration without scenarios leaves the whole without them.
    pub fn out_of_range(
        earlier: Option<&Calibration>,
        indicator: &str,
        risk: f64,
        windows: &[TaggedWindow],
    ) -> Result<Self, String> {
        let mut all: Vec<Kept> =
            earlier.map_or(vec![], |e| kept(&e.scores, &e.errors, &e.scenarios));
        let first = (all.iter().filter_map(|w| w.2).max()).map_or(0, |m| m + 1);
        let tagged = |w: &TaggedWindow| (w.score, w.error, Some(first + w.scenario));
        all.extend(windows.iter().map(tagged));
        let mut c = Self::of(indicator, risk, all)?;
        let mut by: std::collections::BTreeMap<Vec<String>, Vec<Kept>> = earlier
            .map_or(vec![], |e| e.regimes.clone())
            .into_iter()
            .map(|r| (r.outside, kept(&r.scores, &r.errors, &r.scenarios)))
            .collect();
        for w in windows.iter().filter(|w| !w.outside.is_empty()) {
            let mut key = w.outside.clone();
            key.sort();
            by.entry(key).or_default().push(tagged(w));
        }
        let keep = !c.scenarios.is_empty();
        c.regimes = by
            .into_iter()
            .map(|(outside, p)| {
                let (scores, errors, scenarios) = columns(p);
                Regime {
                    outside,
                    scores,
                    errors,
                    scenarios: if keep { scenarios } else { vec![] },
                }
            })
            .collect();
        Ok(c)
    }

    /// The same windows without their scenarios (the windows' rule alone), to show what the
    /// rule by scenario changes.
    pub fn windows_rule_only(&self) -> Calibration {
        let mut c = self.clone();
        c.scenarios.clear();
        c.regimes.iter_mut().for_each(|r| r.scenarios.clear());
        c.out_of_range = (c.out_of_range.as_deref()).map(|o| Box::new(o.windows_rule_only()));
        c
    }

    /// Calibration scenarios behind a threshold of [`Self::threshold_outside`] (0: the
    /// windows' rule alone).
    pub fn scenarios_behind(&self, basis: &Basis) -> usize {
        count_distinct(self.behind(basis).1)
    }

    /// The indicator values and scenarios of the windows behind `basis`: its regime's (none
    /// if the calibration has no such regime), else all.
    fn behind(&self, basis: &Basis) -> (&[f64], &[u32]) {
        match basis {
            Basis::Regime(r) => (self.regimes.iter().find(|x| &x.name() == r))
                .map_or((&[][..], &[][..]), |x| (&x.scores, &x.scenarios)),
            _ => (&self.scores, &self.scenarios),
        }
    }

    /// Scenarios in the pooled windows (0 without them).
    pub fn scenario_count(&self) -> usize {
        count_distinct(&self.scenarios)
    }

    /// Refuses a calibration whose columns disagree in length (a file edited by hand, or
    /// corrupt), before a threshold reads past them.
    pub fn check(&self) -> Result<(), String> {
        let cols = |what: &str, s: &[f64], e: &[f64], n: &[u32]| {
            if s.len() != e.len() || !(n.is_empty() || n.len() == s.len()) {
                Err(format!(
                    "the calibration of `{}` ({what}) has {} indicator values, {} errors and {} scenarios",
                    self.indicator,
                    s.len(),
                    e.len(),
                    n.len()
                ))
            } else {
                Ok(())
            }
        };
        cols("pooled", &self.scores, &self.errors, &self.scenarios)?;
        for r in &self.regimes {
            cols(&r.name(), &r.scores, &r.errors, &r.scenarios)?;
        }
        self.out_of_range
            .as_deref()
            .map_or(Ok(()), Calibration::check)
    }

    /// The indicator threshold for `tolerance` (error units): windows scoring below it are
    /// accepted. 0 when no prefix of the calibration windows meets the risk.
    pub fn threshold(&self, tolerance: f64) -> f64 {
        threshold(
            &self.scores,
            &self.errors,
            &self.scenarios,
            self.risk,
            tolerance,
        )
    }

    /// The windows behind a threshold of [`Self::threshold_outside`]: its regime's, else all.
    pub fn windows_behind(&self, basis: &Basis) -> usize {
        self.behind(basis).0.len()
    }

    /// In a calibration out of range, the threshold for `tolerance` of a run whose source
    /// lies outside the trained ranges in the parameters `outside`: its regime's when there
    /// is one; else the smallest of the pooled one and those of the regimes outside in part
    /// of `outside` (each bears some of what the run does not share with training); else
    /// the pooled one.
    pub fn threshold_outside(&self, outside: &[String], tolerance: f64) -> (f64, Basis) {
        let mut key = outside.to_vec();
        key.sort();
        let of = |r: &Regime| threshold(&r.scores, &r.errors, &r.scenarios, self.risk, tolerance);
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

/// The fewest calibration scenarios with which the rule by scenario accepts anything at
/// `risk` (`⌊risk · (n + 1)⌋ ≥ 1`: 9 at 0.1, 19 at 0.05); with fewer its threshold is 0.
/// `usize::MAX` at a risk of 0 (or one so small that no count reaches it), which accepts
/// nothing by scenario.
pub fn scenarios_needed(risk: f64) -> usize {
    let guess = (1.0 / risk).ceil() - 1.0;
    if !(risk > 0.0 && guess < 1e12) {
        return usize::MAX;
    }
    // The guess is at most a rounding away from the first count that reaches it.
    let start = (guess as usize).saturating_sub(2).max(1);
    (start..)
        .find(|&n| quantile_rank(risk, n) >= 1)
        .unwrap_or(usize::MAX)
}

/// `k` of the module doc for `n` scenarios. Rounding of `risk · (n + 1)` can only lower it:
/// the bound stays.
fn quantile_rank(risk: f64, n: usize) -> usize {
    (risk * (n + 1) as f64).floor() as usize
}

fn count_distinct(ids: &[u32]) -> usize {
    ids.iter().collect::<std::collections::BTreeSet<_>>().len()
}

/// The rules of the module doc over windows sorted by score: the windows', and by scenario
/// when `scenarios` numbers them.
fn threshold(scores: &[f64], errors: &[f64], scenarios: &[u32], risk: f64, tolerance: f64) -> f64 {
    let pooled = windows_rule(scores, errors, risk, tolerance);
    if scenarios.is_empty() {
        return pooled;
    }
    let mut by: std::collections::BTreeMap<u32, (Vec<f64>, Vec<f64>)> = Default::default();
    for ((&s, &e), &n) in scores.iter().zip(errors).zip(scenarios) {
        let g = by.entry(n).or_default();
        g.0.push(s);
        g.1.push(e);
    }
    let mut own: Vec<f64> = (by.values())
        .map(|(s, e)| {
            // All its windows meet the risk: the scenario bounds no threshold above them.
            let over = e.iter().filter(|&&e| e > tolerance).count();
            if over as f64 <= risk * s.len() as f64 {
                f64::INFINITY
            } else {
                windows_rule(s, e, risk, tolerance).max(s[0])
            }
        })
        .collect();
    own.sort_by(f64::total_cmp);
    match quantile_rank(risk, own.len()).checked_sub(1) {
        Some(i) => pooled.min(own[i]),
        None => 0.0,
    }
}

/// The windows' rule of the module doc over windows sorted by score.
fn windows_rule(scores: &[f64], errors: &[f64], risk: f64, tolerance: f64) -> f64 {
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
        let all = match Option::<Stored>::deserialize(d)? {
            None => Calibrations::default(),
            Some(Stored::Many(v)) => Calibrations(v),
            Some(Stored::One(c)) => Calibrations(vec![*c]),
        };
        for c in &all.0 {
            c.check().map_err(serde::de::Error::custom)?;
        }
        Ok(all)
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
                scenario: 0,
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
        // The windows' rule is the one under test here.
        let c =
            (Calibration::out_of_range(None, "grid_learned", 0.1, &w).unwrap()).windows_rule_only();
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

    /// Nine scenarios of good windows scoring 0.1..1.0 and one whose windows all err, scoring
    /// 0.15..0.6: pooled, one window in ten errs, which the windows' rule lets through.
    fn one_scenario_off() -> Vec<(f64, f64, u32)> {
        let mut w = vec![];
        for n in 0..9u32 {
            w.extend((1..=10).map(|k| (k as f64 / 10.0 + n as f64 * 1e-3, 0.01, n)));
        }
        w.extend((0..10).map(|k| (0.15 + k as f64 * 0.05, 0.5, 9)));
        w
    }

    #[test]
    fn the_rule_by_scenario_stops_below_a_scenario_the_windows_rule_lets_through() {
        let c = Calibration::by_scenario("grid_learned", 0.1, &one_scenario_off()).unwrap();
        assert_eq!(c.scenario_count(), 10);
        let alone = c.windows_rule_only();
        assert!(alone.scenarios.is_empty());
        // The windows' rule: all 100 windows (10 above the tolerance) meet the risk of 0.1.
        assert_eq!(alone.threshold(0.1), next_up(1.0 + 8e-3));
        // By scenario, k = ⌊0.1 · 11⌋ = 1: the smallest scenario threshold, the erring
        // scenario's smallest value (it accepts none of its windows).
        assert_eq!(c.threshold(0.1), 0.15);
        // A tolerance every window meets: both rules accept all (a scenario with all its
        // windows within the risk bounds no threshold).
        assert_eq!(c.threshold(0.6), alone.threshold(0.6));
        assert_eq!(c.threshold(0.6), next_up(1.0 + 8e-3));
    }

    #[test]
    fn too_few_scenarios_for_the_risk_accept_nothing() {
        // Five scenarios: ⌊0.1 · 6⌋ = 0, no scenario quantile bounds a risk of 0.1.
        let few: Vec<(f64, f64, u32)> = (one_scenario_off().into_iter())
            .filter(|w| w.2 < 5)
            .collect();
        let c = Calibration::by_scenario("grid_learned", 0.1, &few).unwrap();
        assert_eq!(c.threshold(0.1), 0.0);
        assert!(c.windows_rule_only().threshold(0.1) > 1.0);
        assert_eq!((scenarios_needed(0.1), scenarios_needed(0.2)), (9, 4));
        assert_eq!(scenarios_needed(0.05), 19);
        assert_eq!((scenarios_needed(0.5), scenarios_needed(0.99)), (1, 1));
        assert_eq!(scenarios_needed(0.0), usize::MAX);
        // A risk of 0.2 (k = 1) accepts again: every scenario meets it up to its last window.
        let c = Calibration::by_scenario("grid_learned", 0.2, &few).unwrap();
        assert_eq!(c.threshold(0.1), next_up(1.0 + 4e-3));
    }

    #[test]
    fn scenarios_out_of_range_are_numbered_after_the_earlier_ones() {
        let with = |n: u32, outside: &[&str]| {
            let mut w = tagged(outside, &windows(2.0, n as f64 * 1e-3));
            w.iter_mut().for_each(|x| x.scenario = n);
            w
        };
        let mut w = with(0, &["frequency"]);
        w.extend(with(1, &["source_x"]));
        let first = Calibration::out_of_range(None, "grid_learned", 0.1, &w).unwrap();
        assert_eq!(first.scenario_count(), 2);
        // The next call numbers its scenarios from 0 again: they stay apart.
        let next = with(0, &["frequency"]);
        let c = Calibration::out_of_range(Some(&first), "grid_learned", 0.1, &next).unwrap();
        assert_eq!(c.scenario_count(), 3);
        assert_eq!(c.scenarios_behind(&Basis::Regime("frequency".into())), 2);
        assert_eq!(c.scenarios_behind(&Basis::Regime("source_x".into())), 1);
        // An earlier calibration without scenarios leaves the whole without them.
        let old = c.windows_rule_only();
        let c = Calibration::out_of_range(Some(&old), "grid_learned", 0.1, &next).unwrap();
        assert_eq!(c.scenario_count(), 0);
        assert!(c.regimes.iter().all(|r| r.scenarios.is_empty()));
        assert_eq!(c.scores.len(), 40);
    }

    #[test]
    fn a_threshold_rule_gives_its_calibrations_thresholds_and_never_more_for_less() {
        let c = Calibration::by_scenario("grid_learned", 0.1, &one_scenario_off()).unwrap();
        let mut w = tagged(&["frequency"], &windows(0.35, 0.0));
        w.extend(tagged(&["source_x"], &windows(0.65, 0.001)));
        // One scenario a regime: the windows' rule (the rule by scenario accepts nothing).
        let o =
            (Calibration::out_of_range(None, "grid_learned", 0.1, &w).unwrap()).windows_rule_only();
        let both = names(&["source_x", "frequency"]);
        let rules = [
            ThresholdRule::Raw,
            ThresholdRule::InRange(c.clone()),
            ThresholdRule::Outside {
                calibration: o.clone(),
                outside: both.clone(),
            },
        ];
        let tols: Vec<f64> = (0..=60).map(|k| k as f64 * 0.01).collect();
        for r in &rules {
            assert_eq!((r.at(0.0), r.at(-0.1)), (0.0, 0.0));
            // Every rank reads the rule back from JSON (the set-up's broadcast).
            let back: ThresholdRule =
                serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
            assert_eq!(&back, r);
            let at: Vec<f64> = tols.iter().map(|&t| r.at(t)).collect();
            assert!(at.windows(2).all(|p| p[0] <= p[1]), "{r:?}: {at:?}");
            assert!(at[60] > at[1], "{r:?}: {at:?}");
        }
        for &t in &tols[1..] {
            assert_eq!(rules[0].at(t), t);
            assert_eq!(rules[1].at(t), c.threshold(t));
            assert_eq!(rules[2].at(t), o.threshold_outside(&both, t).0);
        }
    }

    #[test]
    fn a_calibration_whose_columns_disagree_is_refused_on_reading() {
        let c = Calibration::by_scenario("grid_learned", 0.1, &one_scenario_off()).unwrap();
        let mut v = serde_json::to_value(vec![&c]).unwrap();
        v[0]["scenarios"].as_array_mut().unwrap().pop();
        let e = serde_json::from_value::<Calibrations>(v).unwrap_err();
        assert!(
            e.to_string()
                .contains("100 indicator values, 100 errors and 99 scenarios"),
            "{e}"
        );
    }
}
