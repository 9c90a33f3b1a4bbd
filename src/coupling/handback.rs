//! Handing a forecast back to the FE solver. A forecast gives frames `stride` steps apart; the
//! leap-frog needs two time levels `dt` apart. The velocity at the last frame is estimated from
//! the last frames by a backward difference, and the solver continues from the field and that
//! velocity with its second-order Taylor start ([`crate::sim::Simulation::start_from`]).
//!
//! With frames `Δ = stride·dt` apart the two-frame difference is first-order in `Δ` and the
//! three-frame one (BDF2) second-order; the tests measure the hand-back error of each against
//! the uninterrupted FE run. The central difference ([`VelocityEstimate::Central4`]) is
//! fourth-order but needs two frames after the one handed back: the forecast is then handed
//! back two frames before its end and the FE runs those two frames itself.

/// Which backward difference forms the velocity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VelocityEstimate {
    /// `(F₂ − F₁)/Δ` from the last two frames: first order.
    TwoFrames,
    /// `(3F₂ − 4F₁ + F₀)/(2Δ)` from the last three frames: second order.
    Bdf2,
    /// The slope at the last frame of the least-squares quadratic through the last `n ≥ 3`
    /// frames: second order for smooth fields, and less amplification of a forecast's frame
    /// noise than BDF2 (its weights are smaller).
    Fit(usize),
    /// `(F₋₂ − 8F₋₁ + 8F₁ − F₂)/(12Δ)` around the frame handed back, from the two frames on
    /// either side: fourth order, and smaller weights than BDF2 (Σ|w| = 1.5 against 4); the
    /// frame handed back is [`VelocityEstimate::lag`] = 2 frames before the last.
    Central4,
}

impl VelocityEstimate {
    /// Frames the estimate reads.
    pub fn frames(self) -> usize {
        match self {
            VelocityEstimate::TwoFrames => 2,
            VelocityEstimate::Bdf2 => 3,
            VelocityEstimate::Fit(n) => n.max(3),
            VelocityEstimate::Central4 => 5,
        }
    }

    /// Frames read after the one whose velocity is estimated (the last of those read, but
    /// for the central difference).
    pub fn lag(self) -> usize {
        match self {
            VelocityEstimate::Central4 => 2,
            _ => 0,
        }
    }

    /// The velocity at the frame [`Self::lag`] before the last of `frames` (oldest first, each
    /// `frame_dt` after the one before, all of one length), or `None` when fewer frames than
    /// [`Self::frames`] are given or their lengths differ.
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
        let w = self.weights();
        Some(
            (0..n)
                .map(|i| w.iter().zip(last).map(|(w, f)| w * f[i]).sum::<f64>() / frame_dt)
                .collect(),
        )
    }

    /// The velocity as `Σ w_j F_j / Δ` over the frames read, oldest first.
    pub fn weights(self) -> Vec<f64> {
        match self {
            VelocityEstimate::TwoFrames => vec![-1.0, 1.0],
            VelocityEstimate::Bdf2 => vec![0.5, -2.0, 1.5],
            VelocityEstimate::Central4 => {
                vec![1.0 / 12.0, -8.0 / 12.0, 0.0, 8.0 / 12.0, -1.0 / 12.0]
            }
            VelocityEstimate::Fit(_) => {
                // Least squares u(τ) ≈ a + bτ + cτ² at τ_j = j − (k − 1) (frame spacings, the
                // last frame at 0): b = e₁ᵀ (AᵀA)⁻¹ Aᵀ F, so w = A (AᵀA)⁻¹ e₁.
                let k = self.frames();
                let taus: Vec<f64> = (0..k).map(|j| j as f64 - (k - 1) as f64).collect();
                let mut ata = [[0.0f64; 3]; 3];
                for &t in &taus {
                    let row = [1.0, t, t * t];
                    for r in 0..3 {
                        for c in 0..3 {
                            ata[r][c] += row[r] * row[c];
                        }
                    }
                }
                let col = solve3(ata, [0.0, 1.0, 0.0]);
                taus.iter()
                    .map(|&t| col[0] + col[1] * t + col[2] * t * t)
                    .collect()
            }
        }
    }
}

/// `x` with `m x = b` (Cramer's rule; `m` symmetric positive definite here).
fn solve3(m: [[f64; 3]; 3], b: [f64; 3]) -> [f64; 3] {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(m);
    let mut x = [0.0; 3];
    for (c, xc) in x.iter_mut().enumerate() {
        let mut mc = m;
        for r in 0..3 {
            mc[r][c] = b[r];
        }
        *xc = det(mc) / d;
    }
    x
}

/// What handing the grid frame `g` of the FE field `u` (this rank's owned values) back to the
/// mesh loses: ‖u − P g‖ / ‖u‖ over a fixed sample of the covered nodes
/// ([`super::transfer::ZoneTransfer::handback_terms`]), `P` the run's grid → mesh map; 0 for a
/// zero field. Collective; the same bits on any number of ranks. A forecast handed back can be
/// no closer to the FE's field than this: the part of the field the grid does not hold (a
/// source's near field, a front sharper than the grid) is lost whatever the network does.
pub fn loss(
    transfer: &super::transfer::ZoneTransfer,
    u: &[f64],
    g: &[f64],
    comm: &dyn crate::comm::Comm,
) -> Result<f64, super::CouplingError> {
    let (diff, norm) = transfer.handback_terms(u, g)?;
    let (d, n) = (
        crate::comm::repro_sum(comm, &diff),
        crate::comm::repro_sum(comm, &norm),
    );
    Ok(if n > 0.0 { (d / n).sqrt() } else { 0.0 })
}
