//! The FE submodel of issue 19: the zone of interest cut from the outer model, its interface
//! held node by node at values given as frames (the outer model's own, or a network's forecast)
//! and interpolated in time at every step.

use super::CouplingError;
use crate::fem::WaveSpeed;
use crate::mesh::{PointLocation, Submesh};
use crate::sim::{DriverError, Setup, Simulation};
use crate::solver::{BoundaryKind, Problem, WaveSolver};
use crate::sources::PointSource;

/// The outer problem restricted to a zone, ready to build a solver on.
pub struct SubProblem {
    pub problem: Problem,
    pub u0: Vec<f64>,
    pub v0: Vec<f64>,
    pub submesh: Submesh,
    /// Outer sources left out: their cell is not in the zone, so they act through the interface.
    pub sources_outside: usize,
}

/// The outer problem of `outer` (a serial set-up) on the cells inside `[x0, x1] × [y0, y1]`: the
/// wave speed, the outer boundary conditions on what is left of their edges, the sources whose
/// cell is in the zone, the initial fields, and node-by-node Dirichlet values on the interface.
pub fn restrict(outer: &Setup, x: [f64; 2], y: [f64; 2]) -> Result<SubProblem, CouplingError> {
    let p = &outer.problem;
    let submesh = Submesh::cut(&p.mesh, x, y).map_err(DriverError::from)?;
    if submesh.interface_nodes().is_empty() {
        return Err(CouplingError::Setup(format!(
            "the zone x = {x:?}, y = {y:?} holds the whole mesh: a submodel needs an interface"
        )));
    }
    let speed = match &p.speed {
        WaveSpeed::PerCell(c) => {
            WaveSpeed::PerCell(submesh.outer_cell.iter().map(|k| c[*k as usize]).collect())
        }
        WaveSpeed::Nodal(c) => {
            WaveSpeed::Nodal(submesh.outer_node.iter().map(|k| c[*k as usize]).collect())
        }
    };
    let mut boundaries: Vec<(i32, BoundaryKind)> = p
        .boundaries
        .iter()
        .filter(|(t, _)| submesh.mesh.boundary.iter().any(|e| e.tag == *t))
        .copied()
        .collect();
    boundaries.push((submesh.interface_tag, BoundaryKind::DirichletNodal));
    let mut local = vec![u32::MAX; p.mesh.num_nodes()];
    for (i, v) in submesh.outer_node.iter().enumerate() {
        local[*v as usize] = i as u32;
    }
    let mut sources = Vec::new();
    for s in &p.sources {
        let loc = &s.location;
        let nodes: Vec<u32> = loc.nodes[..loc.len]
            .iter()
            .map(|v| local[*v as usize])
            .collect();
        if nodes.iter().all(|v| *v != u32::MAX) {
            let mut location = PointLocation {
                nodes: [0; 4],
                ..*loc
            };
            location.nodes[..loc.len].copy_from_slice(&nodes);
            sources.push(PointSource {
                location,
                wavelet: s.wavelet,
            });
        }
    }
    let pick =
        |v: &[f64]| -> Vec<f64> { submesh.outer_node.iter().map(|k| v[*k as usize]).collect() };
    Ok(SubProblem {
        u0: pick(&outer.u0),
        v0: pick(&outer.v0),
        sources_outside: p.sources.len() - sources.len(),
        problem: Problem {
            mesh: submesh.mesh.clone(),
            speed,
            boundaries,
            sources,
            operator: p.operator,
        },
        submesh,
    })
}

/// How interface values between two frames are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeInterp {
    /// Between the two frames around the step: error `Δt²/8 · max|u_tt|` (`Δt` the frame spacing).
    Linear,
    /// Through the four frames around the step (one-sided at the ends of what is known):
    /// fourth order in the frame spacing.
    #[default]
    Cubic,
}

/// Interface values known at frame times (increasing, evenly spaced or not), one value per
/// interface node in each.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    times: Vec<f64>,
    frames: Vec<Vec<f64>>,
}

impl Trace {
    /// Appends a frame at `t` (after every frame held).
    pub fn push(&mut self, t: f64, values: Vec<f64>) -> Result<(), CouplingError> {
        if let (Some(last), Some(f)) = (self.times.last(), self.frames.first()) {
            if t <= *last || values.len() != f.len() {
                return Err(CouplingError::Setup(format!(
                    "trace frame at t = {t:e} with {} values after one at t = {last:e} with {}: frames go forward in time, all of one size",
                    values.len(),
                    f.len()
                )));
            }
        }
        self.times.push(t);
        self.frames.push(values);
        Ok(())
    }

    /// Drops all but the last `keep` frames (what the interpolation still needs).
    pub fn keep_last(&mut self, keep: usize) {
        let drop = self.times.len().saturating_sub(keep);
        self.times.drain(..drop);
        self.frames.drain(..drop);
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The time of the last frame.
    pub fn end(&self) -> Option<f64> {
        self.times.last().copied()
    }

    /// The values at `t` (within the frames held) into `out`.
    pub fn eval(&self, t: f64, how: TimeInterp, out: &mut [f64]) -> Result<(), CouplingError> {
        let n = self.times.len();
        let (first, last) = match (self.times.first(), self.times.last()) {
            (Some(a), Some(b)) if n >= 2 || (n == 1 && t == *a) => (*a, *b),
            _ => return Err(self.outside(t)),
        };
        let slack = 1e-9 * (last - first).max(f64::MIN_POSITIVE);
        if t < first - slack || t > last + slack {
            return Err(self.outside(t));
        }
        if n == 1 {
            out.copy_from_slice(&self.frames[0]);
            return Ok(());
        }
        // The interval [k, k+1] holding t.
        let k = self.times[1..n - 1].partition_point(|s| *s <= t);
        // The frames the interpolant goes through (a range: no allocation in the time step).
        let idx = match how {
            TimeInterp::Linear => k..k + 2,
            TimeInterp::Cubic => {
                let lo = k.saturating_sub(1).min(n.saturating_sub(4));
                lo..(lo + 4).min(n)
            }
        };
        out.fill(0.0);
        for i in idx.clone() {
            let mut w = 1.0;
            for j in idx.clone() {
                if j != i {
                    w *= (t - self.times[j]) / (self.times[i] - self.times[j]);
                }
            }
            for (o, v) in out.iter_mut().zip(&self.frames[i]) {
                *o += w * v;
            }
        }
        Ok(())
    }

    fn outside(&self, t: f64) -> CouplingError {
        CouplingError::Setup(format!(
            "interface values wanted at t = {t:e} but the trace holds frames from {:?} to {:?}",
            self.times.first(),
            self.times.last()
        ))
    }
}

/// The FE submodel: a serial simulation of the zone whose interface follows a [`Trace`].
pub struct Submodel {
    sim: Simulation<'static>,
    submesh: Submesh,
    /// Submesh node of each node-by-node Dirichlet row (the interface), in row order.
    interface: Vec<u32>,
    interp: TimeInterp,
    buf: Vec<f64>,
}

impl Submodel {
    /// The submodel of `sp` with time step `dt`, starting from its initial fields; the interface
    /// starts at `at_0` (t = 0) and `at_minus_dt` (t = −dt), one value per interface node.
    pub fn new(
        sp: SubProblem,
        dt: f64,
        interp: TimeInterp,
        at_0: &[f64],
        at_minus_dt: &[f64],
    ) -> Result<Self, CouplingError> {
        let mut solver = WaveSolver::new(&sp.problem).map_err(DriverError::from)?;
        solver.set_dt(dt).map_err(DriverError::from)?;
        solver
            .set_nodal_dirichlet_start(at_0, at_minus_dt)
            .map_err(DriverError::from)?;
        solver
            .set_initial(&sp.u0, &sp.v0)
            .map_err(DriverError::from)?;
        let interface = solver.nodal_dirichlet_rows().to_vec();
        let n = interface.len();
        Ok(Submodel {
            sim: Simulation::serial(solver)?,
            submesh: sp.submesh,
            interface,
            interp,
            buf: vec![0.0; n],
        })
    }

    /// Outer node numbers of the interface nodes, in the order the trace's values take.
    pub fn interface_outer(&self) -> Vec<u32> {
        self.interface
            .iter()
            .map(|v| self.submesh.outer_node[*v as usize])
            .collect()
    }

    /// Coordinates of the interface nodes, in the order the trace's values take.
    pub fn interface_coords(&self) -> Vec<[f64; 2]> {
        self.interface
            .iter()
            .map(|v| self.submesh.mesh.coords[*v as usize])
            .collect()
    }

    pub fn interp(&self) -> TimeInterp {
        self.interp
    }

    pub fn submesh(&self) -> &Submesh {
        &self.submesh
    }

    pub fn sim(&self) -> &Simulation<'static> {
        &self.sim
    }

    pub fn sim_mut(&mut self) -> &mut Simulation<'static> {
        &mut self.sim
    }

    /// One step with the interface at `values` at the new time level.
    pub fn step_with(&mut self, values: &[f64]) -> Result<(), CouplingError> {
        self.sim
            .solver_mut()
            .set_nodal_dirichlet(values)
            .map_err(DriverError::from)?;
        self.sim.advance(1);
        Ok(())
    }

    /// `n` steps with the interface interpolated in time from `trace`, which must reach the
    /// last of them.
    pub fn advance_along(&mut self, trace: &Trace, n: usize) -> Result<(), CouplingError> {
        let dt = self.sim.dt();
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..n {
            let t = (self.sim.steps_done() + 1) as f64 * dt;
            let r = trace
                .eval(t, self.interp, &mut buf)
                .and_then(|_| self.step_with(&buf));
            if let Err(e) = r {
                self.buf = buf;
                return Err(e);
            }
        }
        self.buf = buf;
        Ok(())
    }
}
