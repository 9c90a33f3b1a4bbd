//! Handing a forecast back to the FE solver. A forecast gives frames `stride` steps apart; the
//! leap-frog needs two time levels `dt` apart. The velocity at the last frame is estimated from
//! the last frames by a backward difference, and the solver continues from the field and that
//! velocity with its second-order Taylor start ([`crate::sim::Simulation::start_from`]).
//!
//! With frames `Δ = stride·dt` apart the two-frame difference is first-order in `Δ` and the
//! three-frame one (BDF2) second-order; the tests measure the hand-back error of each against
//! the uninterrupted FE run.

/// Which backward difference forms the velocity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VelocityEstimate {
    /// `(F₂ − F₁)/Δ` from the last two frames: first order.
    TwoFrames,
    /// `(3F₂ − 4F₁ + F₀)/(2Δ)` from the last three frames: second order.
    Bdf2,
}

impl VelocityEstimate {
    /// Frames the estimate reads.
    pub fn frames(self) -> usize {
        match self {
            VelocityEstimate::TwoFrames => 2,
            VelocityEstimate::Bdf2 => 3,
        }
    }

    /// The velocity at the last of `frames` (oldest first, each `frame_dt` after the one
    /// before, all of one length), or `None` when fewer frames than [`Self::frames`] are given
    /// or their lengths differ.
    pub fn velocity(self, frames: &[&[f64]], frame_dt: f64) -> Option<Vec<f64>> {
        let k = self.frames();
        if frames.len() < k || frame_dt.is_nan() || frame_dt <= 0.0 {
            return None;
        }
        let last = &frames[frames.len() - k..];
        let n = last[0].len();
        if last.iter().any(|f| f.len() != n) {
            return None;
        }
        Some(match self {
            VelocityEstimate::TwoFrames => (0..n)
                .map(|i| (last[1][i] - last[0][i]) / frame_dt)
                .collect(),
            VelocityEstimate::Bdf2 => (0..n)
                .map(|i| (3.0 * last[2][i] - 4.0 * last[1][i] + last[0][i]) / (2.0 * frame_dt))
                .collect(),
        })
    }
}
