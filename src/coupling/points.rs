//! The network at a host program's own points (what the C ABI's surrogate handle runs): the
//! host gives its vertices and triangles once, preCICE-style; each forecast takes its last
//! `t_in` frames at those vertices, moves them to the model's zone grid (the P1 interpolant at
//! each grid point), runs the network, and moves the `t_out` frames it forecasts back to the
//! vertices (bilinear in the grid; vertices outside the zone keep what the host put there).

use super::network::NetworkForecaster;
use super::transfer::{ZoneGrid, ZoneTransfer};
use super::{hybrid::Forecaster, CouplingError};
use crate::mesh::Mesh;
use crate::nn::Device;
use crate::surrogate::modelfile::Loaded;
use std::path::Path;

/// A model file's network bound to a host's mesh.
pub struct PointNetwork {
    net: NetworkForecaster,
    transfer: ZoneTransfer,
    npoints: usize,
    /// Grid frames of the input, reused between forecasts.
    grid: Vec<Vec<f64>>,
}

fn setup(msg: String) -> CouplingError {
    CouplingError::Setup(msg)
}

impl PointNetwork {
    /// Binds the model `l` (read from `path`) on `device` to the host mesh of `coords` and
    /// triangles `tris` (0-based vertex indices). `zone` `[x0, x1, y0, y1]` places the model's
    /// grid; `None` takes the zone the model file records.
    pub fn new(
        l: Loaded,
        path: &Path,
        device: Device,
        coords: Vec<[f64; 2]>,
        tris: Vec<[u32; 3]>,
        zone: Option<[f64; 4]>,
    ) -> Result<Self, CouplingError> {
        let n = coords.len();
        if let Some(p) = coords
            .iter()
            .find(|p| !(p[0].is_finite() && p[1].is_finite()))
        {
            return Err(setup(format!("a vertex {p:?} is not finite")));
        }
        if let Some(t) = tris.iter().find(|t| t.iter().any(|&v| v as usize >= n)) {
            return Err(setup(format!(
                "triangle {t:?} names a vertex beyond the {n} given"
            )));
        }
        if tris.is_empty() {
            return Err(setup(
                "no triangles: the network's grid is sampled from the host's field through them"
                    .into(),
            ));
        }
        let Some(z) = zone.or(l.meta.zone) else {
            return Err(setup(format!(
                "{} records no zone: give the grid's zone [x0, x1, y0, y1]",
                path.display()
            )));
        };
        let grid = ZoneGrid {
            x: [z[0], z[1]],
            y: [z[2], z[3]],
            nx: l.meta.nx,
            ny: l.meta.ny,
        };
        let mesh = Mesh {
            tri_tags: vec![1; tris.len()],
            coords,
            tris,
            ..Mesh::default()
        };
        let transfer = ZoneTransfer::new(&mesh, grid)?;
        let frame_dt = l.meta.frame_dt;
        let net = NetworkForecaster::from_loaded(l, path, device, &transfer, frame_dt)?;
        let grid = vec![vec![0.0; transfer.points()]; net.t_in()];
        Ok(PointNetwork {
            net,
            transfer,
            npoints: n,
            grid,
        })
    }

    /// Frames a forecast reads and gives.
    pub fn frames(&self) -> (usize, usize) {
        (self.net.t_in(), self.net.t_out())
    }

    /// Time between frames the model was trained on.
    pub fn frame_dt(&self) -> f64 {
        self.net.meta().frame_dt
    }

    /// Host vertices inside the zone (those a forecast writes).
    pub fn covered(&self) -> usize {
        self.transfer.covered_nodes()
    }

    pub fn npoints(&self) -> usize {
        self.npoints
    }

    /// Scenario parameters of a conditioned model.
    pub fn set_scenario(&mut self, params: Vec<f64>) -> Result<(), CouplingError> {
        self.net.set_scenario(params)
    }

    /// The time of the next forecast's first input frame (a model conditioned on time).
    pub fn set_input_time(&mut self, t0: f64) {
        self.net.set_input_time(t0);
    }

    /// `t_out` frames at the vertices into `next` (frame after frame) from the last `t_in`
    /// frames in `past` (oldest first); entries of vertices outside the zone are left as given.
    pub fn forecast(&mut self, past: &[f64], next: &mut [f64]) -> Result<(), CouplingError> {
        let (t_in, t_out, n) = (self.net.t_in(), self.net.t_out(), self.npoints);
        if past.len() != t_in * n || next.len() != t_out * n {
            return Err(setup(format!(
                "a forecast reads {t_in} frames of {n} values and writes {t_out}; given {} and {}",
                past.len(),
                next.len()
            )));
        }
        if let Some(v) = past.iter().find(|v| !v.is_finite()) {
            return Err(setup(format!("an input value is {v}")));
        }
        for (g, f) in self.grid.iter_mut().zip(past.chunks(n)) {
            self.transfer.to_grid(f, g)?;
        }
        let frames: Vec<&[f64]> = self.grid.iter().map(Vec::as_slice).collect();
        let out = self.net.forecast(&frames)?;
        for (g, f) in out.iter().zip(next.chunks_mut(n)) {
            self.transfer.to_mesh(g, f)?;
        }
        Ok(())
    }
}
