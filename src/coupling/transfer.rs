//! Moving a field between the FE mesh and the surrogate's zone grid, both ways.
//!
//! - **mesh → grid**: each grid point takes the FE interpolant at that point (the element's
//!   shape functions: exact for the P1/Q1 field itself). Grid points outside the mesh (a
//!   non-rectangular mesh inside its bounding zone) are masked: they read 0 and the mask says
//!   so. This is what `wavecp dataset` records, so a network sees the same frames in a coupled
//!   run as in training.
//! - **grid → mesh**: each mesh node inside the zone takes the bilinear interpolant of the four
//!   grid points around it, over those of them that are not masked (weights renormalised); a
//!   node with no unmasked neighbour, or outside the zone, is left as it was.
//!
//! On a smooth field both are second-order accurate in their spacing (the grid's for grid →
//! mesh, the mesh's for mesh → grid), and so is the round trip mesh → grid → mesh; the tests
//! state the measured errors and rates.

use crate::mesh::{Mesh, PointLocation};

/// A rectangular grid of `nx × ny` points spanning `[x0, x1] × [y0, y1]`, row by row (x
/// fastest), as the dataset's zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneGrid {
    pub x: [f64; 2],
    pub y: [f64; 2],
    pub nx: usize,
    pub ny: usize,
}

impl ZoneGrid {
    /// The coordinates of point `(i, j)` (column `i`, row `j`).
    pub fn point(&self, i: usize, j: usize) -> [f64; 2] {
        let at = |r: [f64; 2], k: usize, n: usize| r[0] + (r[1] - r[0]) * k as f64 / (n - 1) as f64;
        [at(self.x, i, self.nx), at(self.y, j, self.ny)]
    }

    fn check(&self) -> Result<(), TransferError> {
        if self.nx < 2 || self.ny < 2 {
            return Err(TransferError::Grid(format!(
                "{} x {} points: a zone grid needs at least 2 x 2",
                self.nx, self.ny
            )));
        }
        if !(self.x[0] < self.x[1] && self.y[0] < self.y[1]) {
            return Err(TransferError::Grid(format!(
                "the zone [{}, {}] x [{}, {}] is empty",
                self.x[0], self.x[1], self.y[0], self.y[1]
            )));
        }
        Ok(())
    }
}

/// Why a transfer cannot be set up or applied.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("zone grid: {0}")]
    Grid(String),
    #[error("{what}: {found} values where {expected} were expected")]
    Length {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("the zone grid and the mesh do not overlap: every grid point lies outside the mesh")]
    NoOverlap,
}

/// One mesh node's bilinear stencil on the grid: the node, four grid indices, their weights.
#[derive(Debug, Clone, Copy)]
struct NodeStencil {
    node: u32,
    points: [u32; 4],
    weights: [f64; 4],
}

/// The two maps between a mesh and a zone grid, set up once.
#[derive(Debug, Clone)]
pub struct ZoneTransfer {
    grid: ZoneGrid,
    /// Per grid point: its stencil on the mesh, `None` where it lies outside (masked).
    to_grid: Vec<Option<PointLocation>>,
    /// The mesh nodes inside the zone with at least one unmasked grid neighbour.
    to_mesh: Vec<NodeStencil>,
    num_nodes: usize,
}

impl ZoneTransfer {
    /// Locates every grid point in `mesh` and every mesh node in the grid.
    pub fn new(mesh: &Mesh, grid: ZoneGrid) -> Result<Self, TransferError> {
        grid.check()?;
        let locator = mesh.locator();
        let to_grid: Vec<Option<PointLocation>> = (0..grid.ny)
            .flat_map(|j| (0..grid.nx).map(move |i| (i, j)))
            .map(|(i, j)| locator.locate(grid.point(i, j)))
            .collect();
        if to_grid.iter().all(Option::is_none) {
            return Err(TransferError::NoOverlap);
        }
        let (hx, hy) = (
            (grid.x[1] - grid.x[0]) / (grid.nx - 1) as f64,
            (grid.y[1] - grid.y[0]) / (grid.ny - 1) as f64,
        );
        // A node a rounding error outside the zone still belongs to its edge.
        let tol = 1e-9;
        let mut to_mesh = Vec::new();
        for (v, p) in mesh.coords.iter().enumerate() {
            let (s, t) = ((p[0] - grid.x[0]) / hx, (p[1] - grid.y[0]) / hy);
            let (smax, tmax) = ((grid.nx - 1) as f64, (grid.ny - 1) as f64);
            if !(s >= -tol && s <= smax + tol && t >= -tol && t <= tmax + tol) {
                continue;
            }
            let (s, t) = (s.clamp(0.0, smax), t.clamp(0.0, tmax));
            let (i, j) = (
                (s.floor() as usize).min(grid.nx - 2),
                (t.floor() as usize).min(grid.ny - 2),
            );
            let (a, b) = (s - i as f64, t - j as f64);
            let idx = |di: usize, dj: usize| ((j + dj) * grid.nx + i + di) as u32;
            let points = [idx(0, 0), idx(1, 0), idx(0, 1), idx(1, 1)];
            let mut weights = [(1.0 - a) * (1.0 - b), a * (1.0 - b), (1.0 - a) * b, a * b];
            for (w, &q) in weights.iter_mut().zip(&points) {
                if to_grid[q as usize].is_none() {
                    *w = 0.0;
                }
            }
            let sum: f64 = weights.iter().sum();
            if sum <= 1e-12 {
                continue;
            }
            weights.iter_mut().for_each(|w| *w /= sum);
            to_mesh.push(NodeStencil {
                node: v as u32,
                points,
                weights,
            });
        }
        Ok(ZoneTransfer {
            grid,
            to_grid,
            to_mesh,
            num_nodes: mesh.num_nodes(),
        })
    }

    pub fn grid(&self) -> &ZoneGrid {
        &self.grid
    }

    /// Grid points (`nx · ny`): the length of a grid field.
    pub fn points(&self) -> usize {
        self.to_grid.len()
    }

    /// Per grid point, whether it lies in the mesh (`false`: masked).
    pub fn inside(&self) -> impl Iterator<Item = bool> + '_ {
        self.to_grid.iter().map(Option::is_some)
    }

    /// [`ZoneTransfer::inside`] collected.
    pub fn mask(&self) -> Vec<bool> {
        self.inside().collect()
    }

    /// Mesh nodes that [`ZoneTransfer::to_mesh`] writes.
    pub fn covered_nodes(&self) -> usize {
        self.to_mesh.len()
    }

    /// The FE field `u` (one value per mesh node) at the grid points; masked points get 0.
    pub fn to_grid(&self, u: &[f64], out: &mut [f64]) -> Result<(), TransferError> {
        self.check_len("mesh field", self.num_nodes, u.len())?;
        self.check_len("grid field", self.to_grid.len(), out.len())?;
        for (o, s) in out.iter_mut().zip(&self.to_grid) {
            *o = s.as_ref().map_or(0.0, |s| s.interpolate(u));
        }
        Ok(())
    }

    /// Writes the grid field `g` into `u` at the mesh nodes the grid covers; the other nodes
    /// keep their values.
    pub fn to_mesh(&self, g: &[f64], u: &mut [f64]) -> Result<(), TransferError> {
        self.check_len("grid field", self.to_grid.len(), g.len())?;
        self.check_len("mesh field", self.num_nodes, u.len())?;
        for s in &self.to_mesh {
            u[s.node as usize] = s
                .points
                .iter()
                .zip(&s.weights)
                .map(|(&q, &w)| w * g[q as usize])
                .sum();
        }
        Ok(())
    }

    fn check_len(
        &self,
        what: &'static str,
        expected: usize,
        found: usize,
    ) -> Result<(), TransferError> {
        if expected != found {
            return Err(TransferError::Length {
                what,
                expected,
                found,
            });
        }
        Ok(())
    }
}
