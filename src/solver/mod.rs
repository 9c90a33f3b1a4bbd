//! The explicit wave solver: lumped mass, central differences, boundary damping, point sources.
//!
//! Scheme (`M`, `C` diagonal): `M (u⁺ − 2u + u⁻)/dt² + C (u⁺ − u⁻)/(2dt) + K u = F(t)`, solved
//! for `u⁺` node by node in one fused pass that also computes `(K u)_i`. Stable iff
//! `dt² λ_max(M⁻¹K) < 4`: the centred damping term only removes energy (it adds
//! `−dt (u⁺−u⁻)ᵀC(u⁺−u⁻)/(4dt²)` per step), so the boundary damping does not tighten the limit.

mod frames;
mod nodal;

pub use nodal::NodalValues;

use crate::comm::{repro_sum, Comm, Serial};
use crate::fem::{
    assemble_csr, boundary_damping, element_matrices, Csr, ElementByElement, RowOperator, WaveSpeed,
};
use crate::mesh::Mesh;
use crate::partition::Layout;
use crate::sources::{PointSource, TimeFunction};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors of setting up or running the solver.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    #[error("time step dt = {dt:.6e} exceeds the stability limit {limit:.6e} (CFL: dt < 2/sqrt(λ_max(M⁻¹K)), λ_max ≈ {lambda:.6e}); use a smaller dt or drop `time.dt` to let wavecp choose one")]
    Unstable { dt: f64, limit: f64, lambda: f64 },
    #[error("invalid time step dt = {0}: must be positive and finite")]
    BadDt(f64),
    #[error("solution is not finite (NaN or Inf) at step {step}, t = {time:.6e}")]
    NonFinite { step: usize, time: f64 },
    #[error("{what}: expected {expected} values, found {found}")]
    Shape {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("wave speed must be positive and finite everywhere (found {0})")]
    BadSpeed(f64),
    #[error("{what}: {value} is not a finite number")]
    NonFiniteInput { what: &'static str, value: f64 },
}

/// How the stiffness is applied in the time loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorKind {
    /// Assembled CSR matrix (the faster one on this machine: see docs/benchmarks.md).
    #[default]
    Csr,
    /// Stored element matrices, gathered per node.
    Ebe,
}

/// Boundary condition on the edges with one physical tag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BoundaryKind {
    Dirichlet(TimeFunction),
    /// Dirichlet values given node by node, each step, by whoever drives the solver (a
    /// submodel, a coupled code): see [`WaveSolver::set_nodal_dirichlet`].
    DirichletNodal,
    /// As `DirichletNodal`, but each node follows the function until its value is first set
    /// (a host program's boundary: `wavecp solve` runs it as `Dirichlet`).
    External(TimeFunction),
    Neumann,
    Absorbing,
}

/// Where a prescribed row's value comes from.
#[derive(Debug, Clone, Copy)]
enum Prescribed {
    /// A function of time.
    Function(TimeFunction),
    /// Slot `k` of the node-by-node values.
    Slot(u32),
}

/// Everything that defines the discrete problem except the time step and initial state.
pub struct Problem {
    pub mesh: Mesh,
    pub speed: WaveSpeed,
    /// `(boundary tag, condition)`; edges whose tag is not listed are homogeneous Neumann.
    pub boundaries: Vec<(i32, BoundaryKind)>,
    pub sources: Vec<PointSource>,
    pub operator: OperatorKind,
}

enum Stiffness {
    Csr(Csr),
    Ebe(ElementByElement),
}

/// The time stepper. Owns every buffer; [`WaveSolver::step`] does not allocate.
pub struct WaveSolver {
    k: Stiffness,
    mass: Vec<f64>,
    damp: Vec<f64>,
    /// `1 / (M/dt² + C/(2dt))`
    inv: Vec<f64>,
    /// `(M/dt² − C/(2dt)) · inv`; then `u⁺ = (1+b) u − b u⁻ − inv (K u − F)`.
    b: Vec<f64>,
    u_prev: Vec<f64>,
    u: Vec<f64>,
    u_next: Vec<f64>,
    /// Prescribed rows among the owned ones; `[rows < n_send, the rest]`.
    dirichlet: [Vec<(u32, Prescribed)>; 2],
    /// Owned rows with node-by-node values (`DirichletNodal`), in slot order.
    nodal_rows: Vec<u32>,
    /// Their values at the time level the next step computes.
    nodal_next: Vec<f64>,
    /// Their values at t = 0 and t = −dt for the next `set_initial`, when given.
    nodal_start: Option<(Vec<f64>, Vec<f64>)>,
    /// The function a slot follows until its value is set (`External` rows), else `None`;
    /// and whether it has been set.
    nodal_fallback: Vec<Option<TimeFunction>>,
    nodal_taken: Vec<bool>,
    sources: Vec<PointSource>,
    /// `(owned row, weight, source)` in the serial order (source, then stencil node), split as
    /// `dirichlet`; `wavelet` holds each source's value at the current time.
    forcing: [Vec<(u32, f64, u32)>; 2],
    wavelet: Vec<f64>,
    layout: Layout,
    send_buf: Vec<Vec<f64>>,
    recv_buf: Vec<Vec<f64>>,
    wait: std::time::Duration,
    dt: f64,
    step: usize,
    lambda_max: f64,
}

impl WaveSolver {
    /// Builds operators and estimates `λ_max(M⁻¹K)`. The time step must be set before stepping.
    pub fn new(p: &Problem) -> Result<Self, SolverError> {
        Self::new_on(p, Layout::serial(p.mesh.num_nodes()), &Serial)
    }

    /// As [`WaveSolver::new`] for one part of a decomposed problem: `p.mesh` is the part's
    /// local mesh (owned cells and ghost layer) numbered as `layout` says. Collective.
    pub fn new_on(p: &Problem, layout: Layout, comm: &dyn Comm) -> Result<Self, SolverError> {
        let n = p.mesh.num_nodes();
        if layout.global.len() != n {
            return Err(SolverError::Shape {
                what: "local-to-global node map",
                expected: n,
                found: layout.global.len(),
            });
        }
        let expect = match &p.speed {
            WaveSpeed::PerCell(v) => (v, p.mesh.num_cells(), "wave speed per cell"),
            WaveSpeed::Nodal(v) => (v, n, "wave speed per node"),
        };
        if expect.0.len() != expect.1 {
            return Err(SolverError::Shape {
                what: expect.2,
                expected: expect.1,
                found: expect.0.len(),
            });
        }
        if let Some(bad) = expect.0.iter().find(|c| !(c.is_finite() && **c > 0.0)) {
            return Err(SolverError::BadSpeed(*bad));
        }
        let em = element_matrices(&p.mesh, &p.speed);
        let absorbing: Vec<i32> = p
            .boundaries
            .iter()
            .filter(|(_, k)| *k == BoundaryKind::Absorbing)
            .map(|(t, _)| *t)
            .collect();
        let damp = boundary_damping(&p.mesh, &p.speed, &absorbing);
        let k = match p.operator {
            OperatorKind::Csr => {
                let mut k = assemble_csr(&p.mesh, &em);
                if !layout.is_serial() {
                    // Columns in global order, so each row is summed as in the serial run.
                    k.sort_rows_by(&layout.global);
                }
                Stiffness::Csr(k)
            }
            OperatorKind::Ebe => Stiffness::Ebe(ElementByElement::new(&p.mesh, &em)),
        };
        // Dirichlet nodes: a node on several Dirichlet tags takes the last one listed. `None`
        // inside: values given node by node, with the function they follow until then.
        let mut dir_of: Vec<Option<Result<TimeFunction, Option<TimeFunction>>>> = vec![None; n];
        for (tag, kind) in &p.boundaries {
            let f = match kind {
                BoundaryKind::Dirichlet(f) => Ok(*f),
                BoundaryKind::DirichletNodal => Err(None),
                BoundaryKind::External(f) => Err(Some(*f)),
                _ => continue,
            };
            for e in p.mesh.boundary.iter().filter(|e| e.tag == *tag) {
                for v in e.nodes {
                    dir_of[v as usize] = Some(f);
                }
            }
        }
        let ns = layout.n_send;
        let mut dirichlet: [Vec<(u32, Prescribed)>; 2] = Default::default();
        let mut nodal_rows = Vec::new();
        let mut nodal_fallback = Vec::new();
        for (i, f) in dir_of.iter().enumerate().take(layout.n_owned) {
            let value = match f {
                None => continue,
                Some(Ok(f)) => Prescribed::Function(*f),
                Some(Err(fallback)) => {
                    nodal_rows.push(i as u32);
                    nodal_fallback.push(*fallback);
                    Prescribed::Slot(nodal_rows.len() as u32 - 1)
                }
            };
            dirichlet[usize::from(i >= ns)].push((i as u32, value));
        }
        let mut forcing: [Vec<(u32, f64, u32)>; 2] = Default::default();
        for (si, s) in p.sources.iter().enumerate() {
            for k in 0..s.location.len {
                let i = s.location.nodes[k] as usize;
                if i < layout.n_owned {
                    forcing[usize::from(i >= ns)].push((
                        i as u32,
                        s.location.weights[k],
                        si as u32,
                    ));
                }
            }
        }
        let send_buf = layout.send.iter().map(|l| vec![0.0; l.len()]).collect();
        let recv_buf = layout.recv.iter().map(|l| vec![0.0; l.len()]).collect();
        let mut s = WaveSolver {
            k,
            mass: em.mass,
            damp,
            inv: vec![0.0; n],
            b: vec![0.0; n],
            u_prev: vec![0.0; n],
            u: vec![0.0; n],
            u_next: vec![0.0; n],
            dirichlet,
            nodal_next: vec![0.0; nodal_rows.len()],
            nodal_rows,
            nodal_start: None,
            nodal_taken: vec![false; nodal_fallback.len()],
            nodal_fallback,
            sources: p.sources.clone(),
            forcing,
            wavelet: vec![0.0; p.sources.len()],
            layout,
            send_buf,
            recv_buf,
            wait: std::time::Duration::ZERO,
            dt: 0.0,
            step: 0,
            lambda_max: 0.0,
        };
        s.lambda_max = s.estimate_lambda_max(80, comm);
        Ok(s)
    }

    /// Fills the ghost entries of `v` from their owners.
    fn fill_ghosts(&mut self, v: &mut [f64], comm: &dyn Comm) {
        if self.layout.neighbours.is_empty() {
            return;
        }
        pack(&self.layout, v, &mut self.send_buf);
        comm.exchange(
            &self.layout.neighbours,
            &self.send_buf,
            &mut self.recv_buf,
            &mut || {},
        );
        unpack(&self.layout, &self.recv_buf, v);
    }

    /// Owned part of the local vectors: the rows this rank computes.
    pub fn owned(&self) -> std::ops::Range<usize> {
        0..self.layout.n_owned
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Estimates `λ_max(M⁻¹K)` on the unconstrained nodes (Dirichlet values are prescribed, so
    /// those rows take no part in the dynamics) by Lanczos iteration on the symmetric
    /// `M^{-1/2} K M^{-1/2}`: the power iteration's Krylov space, but taking its best Ritz value
    /// instead of the last Rayleigh quotient, which matters when the top of the spectrum is
    /// clustered (uniform grids). The largest Ritz value approaches `λ_max` from below.
    fn estimate_lambda_max(&mut self, iters: usize, comm: &dyn Comm) -> f64 {
        let n = self.mass.len();
        let no = self.layout.n_owned;
        let mut free = vec![1.0; n];
        for (i, _) in self.dirichlet.iter().flatten() {
            free[*i as usize] = 0.0;
        }
        // Dot products over owned rows, summed so every rank count gets the same bits.
        let dot = |a: &[f64], b: &[f64]| -> f64 {
            let t: Vec<f64> = a[..no].iter().zip(&b[..no]).map(|(x, y)| x * y).collect();
            repro_sum(comm, &t)
        };
        let mut n_global = [no as u64];
        comm.sum_u64(&mut n_global);
        let scale: Vec<f64> = self
            .mass
            .iter()
            .zip(&free)
            .map(|(m, f)| f / m.sqrt())
            .collect();
        // A deterministic start vector rich in every frequency (hash of the node index).
        let mut q: Vec<f64> = (0..n)
            .map(|i| {
                let h = self.layout.global[i]
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(17)
                    ^ 0xD1B5_4A32_D192_ED03;
                free[i] * ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            })
            .collect();
        let norm = dot(&q, &q).sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        q.iter_mut().for_each(|v| *v /= norm);
        let mut q_prev = vec![0.0; n];
        let mut x = vec![0.0; n];
        let mut y = vec![0.0; n];
        let (mut alpha, mut beta) = (Vec::new(), Vec::new());
        let mut b_prev = 0.0;
        for _ in 0..iters.min(n_global[0] as usize) {
            // y = S K S q with S = M^{-1/2} on free nodes, 0 on fixed ones.
            for i in 0..n {
                x[i] = scale[i] * q[i];
            }
            self.fill_ghosts(&mut x, comm);
            self.apply_k(&x, &mut y);
            for i in 0..n {
                y[i] *= scale[i];
            }
            let a: f64 = dot(&q, &y);
            for i in 0..n {
                y[i] -= a * q[i] + b_prev * q_prev[i];
            }
            alpha.push(a);
            let b = dot(&y, &y).sqrt();
            if b <= 1e-12 * a.abs() {
                break;
            }
            beta.push(b);
            for i in 0..n {
                q_prev[i] = q[i];
                q[i] = y[i] / b;
            }
            b_prev = b;
        }
        beta.truncate(alpha.len().saturating_sub(1));
        largest_tridiagonal_eigenvalue(&alpha, &beta)
    }

    /// `K x − f(t)` (local length) for local values `x`: the stiffness's pull less the
    /// sources' push at `t`. Allocates.
    fn stiffness_less_forcing(&self, x: &[f64], t: f64) -> Vec<f64> {
        let mut ku = vec![0.0; x.len()];
        self.apply_k(x, &mut ku);
        self.subtract_forcing(&mut ku, t);
        ku
    }

    /// `y_i −= f_i(t)` for the rows of `y` (the first `y.len()` local rows).
    fn subtract_forcing(&self, y: &mut [f64], t: f64) {
        for &(i, w, si) in self.forcing.iter().flatten() {
            if let Some(yi) = y.get_mut(i as usize) {
                *yi -= w * self.sources[si as usize].wavelet.eval(t);
            }
        }
    }

    /// The second-order Taylor start from the current `u` and the velocity `v` at time `t`:
    /// `uⁿ⁻¹ = u − dt·v + ½dt²·a` over the first `v.len()` rows, with `a` from the equation
    /// (stiffness, damping, sources).
    ///
    /// `K u − f` goes into `uⁿ⁻¹`'s own rows first, then each row becomes its Taylor value in
    /// one parallel pass: no allocation (a hand-back at 10⁶ nodes took a fresh 8 MB vector and
    /// a serial pass), the same arithmetic as [`Self::stiffness_less_forcing`].
    fn taylor_previous(&mut self, v: &[f64], t: f64) {
        let n = v.len();
        let mut up = std::mem::take(&mut self.u_prev);
        self.apply_k(&self.u, &mut up[..n]);
        self.subtract_forcing(&mut up[..n], t);
        // In chunks with a plain inner loop: per-element parallel items ran 30–50 % slower.
        const CH: usize = 4096;
        let (u, dt, damp, mass) = (&self.u, self.dt, &self.damp, &self.mass);
        up[..n]
            .par_chunks_mut(CH)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (j, o) in chunk.iter_mut().enumerate() {
                    let i = c * CH + j;
                    let acc = -(*o + damp[i] * v[i]) / mass[i];
                    *o = u[i] - dt * v[i] + 0.5 * dt * dt * acc;
                }
            });
        self.u_prev = up;
    }

    fn apply_k(&self, x: &[f64], y: &mut [f64]) {
        match &self.k {
            Stiffness::Csr(k) => k.apply(x, y),
            Stiffness::Ebe(k) => k.apply(x, y),
        }
    }

    /// Estimated `λ_max(M⁻¹K)`.
    pub fn lambda_max(&self) -> f64 {
        self.lambda_max
    }

    /// Largest stable time step, `2 / sqrt(λ_max)`.
    pub fn dt_limit(&self) -> f64 {
        2.0 / self.lambda_max.sqrt()
    }

    /// Sets the time step; refuses one above the stability limit.
    pub fn set_dt(&mut self, dt: f64) -> Result<(), SolverError> {
        if !(dt.is_finite() && dt > 0.0) {
            return Err(SolverError::BadDt(dt));
        }
        if dt > self.dt_limit() {
            return Err(SolverError::Unstable {
                dt,
                limit: self.dt_limit(),
                lambda: self.lambda_max,
            });
        }
        self.set_dt_unchecked(dt);
        Ok(())
    }

    /// Sets `dt` without the stability check (for tests that show the limit is real).
    pub fn set_dt_unchecked(&mut self, dt: f64) {
        self.dt = dt;
        for i in 0..self.mass.len() {
            let m = self.mass[i] / (dt * dt);
            let d = self.damp[i] / (2.0 * dt);
            self.inv[i] = 1.0 / (m + d);
            self.b[i] = (m - d) * self.inv[i];
        }
    }

    /// Sets `u(0) = u0`, `u_t(0) = v0` and the step counter to 0. Builds `u(−dt)` from a
    /// second-order Taylor expansion with `u_tt(0) = M⁻¹(F(0) − K u0 − C v0)`.
    pub fn set_initial(&mut self, u0: &[f64], v0: &[f64]) -> Result<(), SolverError> {
        self.set_initial_on(u0, v0, &Serial)
    }

    /// As [`WaveSolver::set_initial`] with local vectors (ghosts included). Collective.
    pub fn set_initial_on(
        &mut self,
        u0: &[f64],
        v0: &[f64],
        comm: &dyn Comm,
    ) -> Result<(), SolverError> {
        let n = self.mass.len();
        for (what, v) in [("initial displacement", u0), ("initial velocity", v0)] {
            if v.len() != n {
                return Err(SolverError::Shape {
                    what,
                    expected: n,
                    found: v.len(),
                });
            }
        }
        if self.dt <= 0.0 {
            return Err(SolverError::BadDt(self.dt));
        }
        let dt = self.dt;
        let mut u = std::mem::take(&mut self.u);
        u.copy_from_slice(u0);
        for (i, v) in self.dirichlet.iter().flatten() {
            match v {
                Prescribed::Function(f) => u[*i as usize] = f.eval(0.0),
                Prescribed::Slot(k) => {
                    if let Some((at0, _)) = &self.nodal_start {
                        u[*i as usize] = at0[*k as usize];
                    } else if let (Some(f), false) = (
                        self.nodal_fallback[*k as usize],
                        self.nodal_taken[*k as usize],
                    ) {
                        u[*i as usize] = f.eval(0.0);
                    }
                }
            }
        }
        self.fill_ghosts(&mut u, comm);
        self.u = u;
        self.taylor_previous(v0, 0.0);
        for (i, v) in self.dirichlet.iter().flatten() {
            match v {
                Prescribed::Function(f) => self.u_prev[*i as usize] = f.eval(-dt),
                Prescribed::Slot(k) => {
                    if let Some((_, before)) = &self.nodal_start {
                        self.u_prev[*i as usize] = before[*k as usize];
                    } else if let (Some(f), false) = (
                        self.nodal_fallback[*k as usize],
                        self.nodal_taken[*k as usize],
                    ) {
                        self.u_prev[*i as usize] = f.eval(-dt);
                    }
                }
            }
        }
        let mut up = std::mem::take(&mut self.u_prev);
        self.fill_ghosts(&mut up, comm);
        self.u_prev = up;
        self.step = 0;
        Ok(())
    }

    /// Sets the state from owned values (`uⁿ`, `uⁿ⁻¹`, in local order) and the step counter,
    /// as a restart does; ghosts are fetched from their owners. Collective.
    pub fn restore_on(
        &mut self,
        u: &[f64],
        u_prev: &[f64],
        step: usize,
        comm: &dyn Comm,
    ) -> Result<(), SolverError> {
        let no = self.layout.n_owned;
        for (what, v) in [("checkpoint u", u), ("checkpoint u_prev", u_prev)] {
            if v.len() != no {
                return Err(SolverError::Shape {
                    what,
                    expected: no,
                    found: v.len(),
                });
            }
        }
        let mut a = std::mem::take(&mut self.u);
        a[..no].copy_from_slice(u);
        self.fill_ghosts(&mut a, comm);
        self.u = a;
        let mut b = std::mem::take(&mut self.u_prev);
        b[..no].copy_from_slice(u_prev);
        self.fill_ghosts(&mut b, comm);
        self.u_prev = b;
        self.step = step;
        Ok(())
    }

    /// Advances one step. Allocation-free.
    pub fn step(&mut self) {
        self.step_on(&Serial)
    }

    /// Advances one step of a decomposed problem: the rows neighbours need are computed first
    /// and sent while the other owned rows are computed. Collective; allocation-free.
    pub fn step_on(&mut self, comm: &dyn Comm) {
        let t = self.step as f64 * self.dt;
        let t_next = (self.step + 1) as f64 * self.dt;
        for (w, s) in self.wavelet.iter_mut().zip(&self.sources) {
            *w = s.wavelet.eval(t);
        }
        let (ns, no) = (self.layout.n_send, self.layout.n_owned);
        let WaveSolver {
            k,
            inv,
            b,
            u_prev,
            u,
            u_next,
            dirichlet,
            nodal_next,
            nodal_fallback,
            nodal_taken,
            forcing,
            wavelet,
            layout,
            send_buf,
            recv_buf,
            ..
        } = self;
        let rows = |range: std::ops::Range<usize>, phase: usize, out: &mut [f64]| {
            match &*k {
                Stiffness::Csr(k) => fused_update(k, u, u_prev, inv, b, out, range),
                Stiffness::Ebe(k) => fused_update(k, u, u_prev, inv, b, out, range),
            }
            for &(i, w, si) in &forcing[phase] {
                let i = i as usize;
                out[i] += inv[i] * w * wavelet[si as usize];
            }
            for (i, v) in &dirichlet[phase] {
                out[*i as usize] = match v {
                    Prescribed::Function(f) => f.eval(t_next),
                    Prescribed::Slot(k) => match nodal_fallback[*k as usize] {
                        Some(f) if !nodal_taken[*k as usize] => f.eval(t_next),
                        _ => nodal_next[*k as usize],
                    },
                };
            }
        };
        rows(0..ns, 0, u_next);
        pack(layout, u_next, send_buf);
        let mut overlapped = None;
        let t0 = std::time::Instant::now();
        comm.exchange(&layout.neighbours, send_buf, recv_buf, &mut || {
            rows(ns..no, 1, u_next);
            overlapped = Some(std::time::Instant::now());
        });
        if !layout.neighbours.is_empty() {
            let t1 = std::time::Instant::now();
            self.wait += t1 - overlapped.unwrap_or(t0);
        }
        unpack(layout, recv_buf, u_next);
        std::mem::swap(&mut self.u_prev, &mut self.u);
        std::mem::swap(&mut self.u, &mut self.u_next);
        self.step += 1;
    }

    /// Discrete energy `½‖(uⁿ⁺¹ − uⁿ)/dt‖²_M + ½ (uⁿ⁺¹)ᵀ K uⁿ` after the last step (exactly
    /// conserved by the scheme without damping, sources or inhomogeneous Dirichlet data).
    pub fn energy(&self) -> f64 {
        self.energy_on(&Serial)
    }

    /// As [`WaveSolver::energy`] over all ranks; the same bits for any rank or thread count
    /// ([`repro_sum`]). Collective.
    pub fn energy_on(&self, comm: &dyn Comm) -> f64 {
        let (u, up, dt) = (&self.u, &self.u_prev, self.dt);
        let terms: Vec<f64> = (0..self.layout.n_owned)
            .into_par_iter()
            .with_min_len(4096)
            .map(|i| {
                let ku = match &self.k {
                    Stiffness::Csr(k) => k.row_dot(i, up),
                    Stiffness::Ebe(k) => k.row_dot(i, up),
                };
                let v = (u[i] - up[i]) / dt;
                0.5 * self.mass[i] * v * v + 0.5 * u[i] * ku
            })
            .collect();
        repro_sum(comm, &terms)
    }

    /// Checks that the current state is finite; the error names the step.
    pub fn check_finite(&self) -> Result<(), SolverError> {
        self.check_finite_on(&Serial)
    }

    /// As [`WaveSolver::check_finite`] over all ranks: every rank returns the same answer.
    /// Collective.
    pub fn check_finite_on(&self, comm: &dyn Comm) -> Result<(), SolverError> {
        let bad = !self.u[..self.layout.n_owned].iter().all(|v| v.is_finite());
        let mut flag = [f64::from(u8::from(bad))];
        comm.max_f64(&mut flag);
        if flag[0] == 0.0 {
            Ok(())
        } else {
            Err(SolverError::NonFinite {
                step: self.step,
                time: self.time(),
            })
        }
    }

    /// Local `uⁿ` (owned values, then ghosts).
    pub fn u(&self) -> &[f64] {
        &self.u
    }
    /// Local `uⁿ⁻¹`.
    pub fn u_prev(&self) -> &[f64] {
        &self.u_prev
    }
    /// Time spent waiting for neighbours' messages after the overlapped rows were done.
    pub fn exchange_wait(&self) -> std::time::Duration {
        self.wait
    }
    pub fn dt(&self) -> f64 {
        self.dt
    }
    pub fn steps_done(&self) -> usize {
        self.step
    }
    pub fn time(&self) -> f64 {
        self.step as f64 * self.dt
    }
    pub fn mass(&self) -> &[f64] {
        &self.mass
    }
    pub fn damping(&self) -> &[f64] {
        &self.damp
    }
    /// Degrees of freedom this rank updates (all of them in a serial run).
    pub fn num_dofs(&self) -> usize {
        self.layout.n_owned
    }
    /// Bytes read and written by one step (operator data plus five vector streams).
    pub fn bytes_per_step(&self) -> usize {
        let op = match &self.k {
            Stiffness::Csr(k) => k.bytes(),
            Stiffness::Ebe(k) => k.bytes(),
        };
        op + 6 * 8 * self.mass.len()
    }
}

/// `u⁺_i = (1+b_i) u_i − b_i u⁻_i − inv_i (K u)_i` for the rows in `range`, in parallel.
fn fused_update<K: RowOperator>(
    k: &K,
    u: &[f64],
    u_prev: &[f64],
    inv: &[f64],
    b: &[f64],
    out: &mut [f64],
    range: std::ops::Range<usize>,
) {
    const CH: usize = 4096;
    let start = range.start;
    out[range]
        .par_chunks_mut(CH)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = start + c * CH;
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = base + j;
                let ku = k.row_dot(i, u);
                *o = (1.0 + b[i]) * u[i] - b[i] * u_prev[i] - inv[i] * ku;
            }
        });
}

/// Copies the values each neighbour needs into its send buffer.
fn pack(l: &Layout, v: &[f64], bufs: &mut [Vec<f64>]) {
    for (list, buf) in l.send.iter().zip(bufs.iter_mut()) {
        for (d, &i) in buf.iter_mut().zip(list) {
            *d = v[i as usize];
        }
    }
}

/// Writes received values into the ghost entries.
fn unpack(l: &Layout, bufs: &[Vec<f64>], v: &mut [f64]) {
    for (list, buf) in l.recv.iter().zip(bufs) {
        for (&i, &x) in list.iter().zip(buf) {
            v[i as usize] = x;
        }
    }
}

/// Largest eigenvalue of the symmetric tridiagonal matrix (diagonal `a`, off-diagonal `b`) by
/// bisection on the Sturm sequence count.
fn largest_tridiagonal_eigenvalue(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    // Gershgorin interval.
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..a.len() {
        let r = b.get(i).map_or(0.0, |v| v.abs()) + if i > 0 { b[i - 1].abs() } else { 0.0 };
        lo = lo.min(a[i] - r);
        hi = hi.max(a[i] + r);
    }
    // Number of eigenvalues below x.
    let count_below = |x: f64| {
        let mut c = 0;
        let mut d = 1.0;
        for i in 0..a.len() {
            let off = if i > 0 { b[i - 1] * b[i - 1] } else { 0.0 };
            d = a[i] - x - if i > 0 { off / d } else { 0.0 };
            if d == 0.0 {
                d = -1e-300;
            }
            if d < 0.0 {
                c += 1;
            }
        }
        c
    };
    let n = a.len();
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if count_below(mid) >= n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}
