//! What a coupling asks of the solver between its own steps: continuing from a field and a
//! velocity at any step (a forecast handed back), and the residual, energy and power of three
//! frames `Δ` apart (the hybrid stepping's error indicators).

use super::{Prescribed, SolverError, WaveSolver};
use crate::comm::{repro_sum, Comm};
use rayon::prelude::*;

impl WaveSolver {
    /// Continues from a field `u` and its velocity `v` (owned values, local order) at step
    /// `step`, as when a forecast hands the field back: the leap-frog needs two levels `dt`
    /// apart, so `uⁿ = u` and `uⁿ⁻¹ = u − dt·v + ½dt²·a` (the second-order Taylor start of
    /// [`WaveSolver::set_initial`]) with `a` from the equation at `t = step·dt` (stiffness,
    /// damping, sources). Rows with a Dirichlet time function take it at `t` and `t − dt`;
    /// node-by-node Dirichlet rows keep `u` and their Taylor value. Collective.
    pub fn start_from_on(
        &mut self,
        u: &[f64],
        v: &[f64],
        step: usize,
        comm: &dyn Comm,
    ) -> Result<(), SolverError> {
        let no = self.layout.n_owned;
        for (what, x) in [("hand-back field", u), ("hand-back velocity", v)] {
            if x.len() != no {
                return Err(SolverError::Shape {
                    what,
                    expected: no,
                    found: x.len(),
                });
            }
            // In parallel: a serial pass over both fields was a fifth of a hand-back.
            let bad = x
                .par_chunks(1 << 14)
                .any(|c| c.iter().any(|x| !x.is_finite()));
            let first = bad.then(|| x.iter().find(|x| !x.is_finite())).flatten();
            if let Some(&value) = first {
                return Err(SolverError::NonFiniteInput { what, value });
            }
        }
        if self.dt <= 0.0 {
            return Err(SolverError::BadDt(self.dt));
        }
        let (dt, t) = (self.dt, step as f64 * self.dt);
        let mut a = std::mem::take(&mut self.u);
        a[..no].copy_from_slice(u);
        for (i, p) in self.dirichlet.iter().flatten() {
            if let Prescribed::Function(f) = p {
                a[*i as usize] = f.eval(t);
            }
        }
        self.fill_ghosts(&mut a, comm);
        self.u = a;
        self.taylor_previous(v, t);
        for (i, p) in self.dirichlet.iter().flatten() {
            if let Prescribed::Function(f) = p {
                self.u_prev[*i as usize] = f.eval(t - dt);
            }
        }
        let mut up = std::mem::take(&mut self.u_prev);
        self.fill_ghosts(&mut up, comm);
        self.u_prev = up;
        self.step = step;
        Ok(())
    }

    /// How far three frames `Δ` apart (owned values of `u` at `t − Δ`, `t`, `t + Δ`) are from
    /// the semi-discrete equation `M ü + C u̇ + K u = f(t)` at `t`, with the difference
    /// quotients `ü ≈ (u₊ − 2u₀ + u₋)/Δ²`, `u̇ ≈ (u₊ − u₋)/(2Δ)`: `(‖r‖, ‖M ü‖ + ‖K u₀‖)` in
    /// the `M⁻¹` norm over the rows without a Dirichlet condition. Frames of the FE run itself
    /// leave an `O(Δ²)` residual (the quotients' error); a forecast's error adds to it.
    /// Collective (the same bits on any rank count); allocates.
    pub fn frame_residual_on(
        &mut self,
        frames: [&[f64]; 3],
        delta: f64,
        t: f64,
        comm: &dyn Comm,
    ) -> Result<(f64, f64), SolverError> {
        self.check_frames(frames, delta, "residual frame")?;
        let no = self.layout.n_owned;
        let [um, u0, up] = frames;
        let x = self.with_ghosts(u0, comm);
        let ku = self.stiffness_less_forcing(&x, t);
        let mut fixed = vec![false; no];
        for (i, _) in self.dirichlet.iter().flatten() {
            fixed[*i as usize] = true;
        }
        let (mut rr, mut aa, mut kk) = (vec![0.0; no], vec![0.0; no], vec![0.0; no]);
        for i in (0..no).filter(|&i| !fixed[i]) {
            let m = self.mass[i];
            let acc = m * (up[i] - 2.0 * u0[i] + um[i]) / (delta * delta);
            let r = acc + self.damp[i] * (up[i] - um[i]) / (2.0 * delta) + ku[i];
            rr[i] = r * r / m;
            aa[i] = acc * acc / m;
            kk[i] = ku[i] * ku[i] / m;
        }
        let norm = |v: &[f64]| repro_sum(comm, v).sqrt();
        Ok((norm(&rr), norm(&aa) + norm(&kk)))
    }

    /// The energy `½ u̇ᵀM u̇ + ½ u₀ᵀK u₀` at the middle of three frames `Δ` apart (owned
    /// values), with `u̇ ≈ (u₊ − u₋)/(2Δ)`: the frame-level counterpart of
    /// [`WaveSolver::energy_on`]. Collective (the same bits on any rank count); allocates.
    pub fn frame_energy_on(
        &mut self,
        frames: [&[f64]; 3],
        delta: f64,
        comm: &dyn Comm,
    ) -> Result<f64, SolverError> {
        self.check_frames(frames, delta, "energy frame")?;
        let no = self.layout.n_owned;
        let [um, u0, up] = frames;
        let x = self.with_ghosts(u0, comm);
        let mut ku = vec![0.0; x.len()];
        self.apply_k(&x, &mut ku);
        let terms: Vec<f64> = (0..no)
            .map(|i| {
                let v = (up[i] - um[i]) / (2.0 * delta);
                0.5 * self.mass[i] * v * v + 0.5 * u0[i] * ku[i]
            })
            .collect();
        Ok(repro_sum(comm, &terms))
    }

    /// The energy's rate of change at the middle of three frames `Δ` apart (owned values) as
    /// the equation gives it: `dE/dt = u̇ᵀ f(t) − u̇ᵀ C u̇`, the sources' power less what the
    /// absorbing boundary takes, with `u̇ ≈ (u₊ − u₋)/(2Δ)`. Collective; allocates.
    pub fn frame_power_on(
        &self,
        frames: [&[f64]; 3],
        delta: f64,
        t: f64,
        comm: &dyn Comm,
    ) -> Result<f64, SolverError> {
        self.check_frames(frames, delta, "power frame")?;
        let no = self.layout.n_owned;
        let [um, _, up] = frames;
        let v = |i: usize| (up[i] - um[i]) / (2.0 * delta);
        let mut terms: Vec<f64> = (0..no).map(|i| -self.damp[i] * v(i) * v(i)).collect();
        let wavelet: Vec<f64> = self.sources.iter().map(|s| s.wavelet.eval(t)).collect();
        for &(i, w, si) in self.forcing.iter().flatten() {
            terms[i as usize] += v(i as usize) * w * wavelet[si as usize];
        }
        Ok(repro_sum(comm, &terms))
    }

    /// Three frames of owned values and a positive spacing, or the error naming `what`.
    fn check_frames(
        &self,
        frames: [&[f64]; 3],
        delta: f64,
        what: &'static str,
    ) -> Result<(), SolverError> {
        let no = self.layout.n_owned;
        if let Some(f) = frames.iter().find(|f| f.len() != no) {
            return Err(SolverError::Shape {
                what,
                expected: no,
                found: f.len(),
            });
        }
        if delta.is_nan() || delta <= 0.0 {
            return Err(SolverError::BadDt(delta));
        }
        Ok(())
    }

    /// Owned values `u` as a local vector, their ghosts fetched. Collective; allocates.
    fn with_ghosts(&mut self, u: &[f64], comm: &dyn Comm) -> Vec<f64> {
        let mut x = vec![0.0; self.mass.len()];
        x[..u.len()].copy_from_slice(u);
        self.fill_ghosts(&mut x, comm);
        x
    }
}
