//! Finding the cell that holds a point and the shape-function weights there (sources, receivers,
//! sampling grids), by brute force for a few points or through a bucket grid for many.

use super::Mesh;
use crate::fem::{q1_inverse_map, q1_shape};

/// Interpolation stencil of a point: `value = Σ weights[k] · u[nodes[k]]` over `len` nodes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PointLocation {
    pub nodes: [u32; 4],
    pub weights: [f64; 4],
    pub len: usize,
}

impl PointLocation {
    pub fn interpolate(&self, u: &[f64]) -> f64 {
        (0..self.len)
            .map(|k| self.weights[k] * u[self.nodes[k] as usize])
            .sum()
    }
}

/// Relative tolerance for "on the cell boundary".
const EPS: f64 = 1e-10;

impl Mesh {
    /// Locates `p` by testing every cell; `None` if no cell holds it. For many points use
    /// [`Mesh::locator`].
    pub fn locate(&self, p: [f64; 2]) -> Option<PointLocation> {
        (0..self.num_cells()).find_map(|c| self.locate_in_cell(c, p))
    }

    /// The stencil of `p` in cell `c` (output order) if the cell holds it.
    pub fn locate_in_cell(&self, c: usize, p: [f64; 2]) -> Option<PointLocation> {
        if c < self.tris.len() {
            let t = &self.tris[c];
            let [a, b, cc] = t.map(|v| self.coords[v as usize]);
            let det = (b[0] - a[0]) * (cc[1] - a[1]) - (cc[0] - a[0]) * (b[1] - a[1]);
            let l1 = ((p[0] - a[0]) * (cc[1] - a[1]) - (cc[0] - a[0]) * (p[1] - a[1])) / det;
            let l2 = ((b[0] - a[0]) * (p[1] - a[1]) - (p[0] - a[0]) * (b[1] - a[1])) / det;
            let l0 = 1.0 - l1 - l2;
            return (l0 >= -EPS && l1 >= -EPS && l2 >= -EPS).then_some(snap(PointLocation {
                nodes: [t[0], t[1], t[2], 0],
                weights: [l0, l1, l2, 0.0],
                len: 3,
            }));
        }
        let q = &self.quads[c - self.tris.len()];
        let x = q.map(|v| self.coords[v as usize]);
        let (lo, hi) = bbox(&x);
        let tol = EPS * (hi[0] - lo[0]).max(hi[1] - lo[1]);
        if p[0] < lo[0] - tol || p[0] > hi[0] + tol || p[1] < lo[1] - tol || p[1] > hi[1] + tol {
            return None;
        }
        let xi = q1_inverse_map(&x, p)?;
        (xi[0].abs() <= 1.0 + EPS && xi[1].abs() <= 1.0 + EPS).then_some(snap(PointLocation {
            nodes: *q,
            weights: q1_shape(xi),
            len: 4,
        }))
    }

    /// A bucket grid over the cells' bounding boxes for locating many points.
    pub fn locator(&self) -> CellLocator<'_> {
        CellLocator::new(self)
    }
}

/// A point on a node takes that node's value exactly (weights 1 and 0, not 1 − 1e-17 and 1e-17).
fn snap(mut loc: PointLocation) -> PointLocation {
    if let Some(k) = (0..loc.len).find(|&k| loc.weights[k] > 1.0 - 1e-12) {
        loc.weights = [0.0; 4];
        loc.weights[k] = 1.0;
    }
    loc
}

fn bbox(x: &[[f64; 2]]) -> ([f64; 2], [f64; 2]) {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for p in x {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    (lo, hi)
}

/// Uniform buckets (about one cell each) listing the cells whose bounding box meets them.
pub struct CellLocator<'a> {
    mesh: &'a Mesh,
    lo: [f64; 2],
    size: [f64; 2],
    n: [usize; 2],
    ptr: Vec<u32>,
    cells: Vec<u32>,
}

impl<'a> CellLocator<'a> {
    fn new(mesh: &'a Mesh) -> Self {
        let b = mesh.bbox();
        let nc = mesh.num_cells().max(1);
        let (w, h) = ((b[2] - b[0]).max(1e-300), (b[3] - b[1]).max(1e-300));
        let per_side = (nc as f64).sqrt();
        let n = [
            ((per_side * (w / h).sqrt()).ceil() as usize).clamp(1, 4096),
            ((per_side * (h / w).sqrt()).ceil() as usize).clamp(1, 4096),
        ];
        let size = [w / n[0] as f64, h / n[1] as f64];
        let lo = [b[0], b[1]];
        let range = |c: usize| -> ([usize; 2], [usize; 2]) {
            let nodes: Vec<[f64; 2]> = if c < mesh.tris.len() {
                mesh.tris[c]
                    .iter()
                    .map(|&v| mesh.coords[v as usize])
                    .collect()
            } else {
                mesh.quads[c - mesh.tris.len()]
                    .iter()
                    .map(|&v| mesh.coords[v as usize])
                    .collect()
            };
            let (a, z) = bbox(&nodes);
            let idx = |x: f64, d: usize| {
                (((x - lo[d]) / size[d]).floor().max(0.0) as usize).min(n[d] - 1)
            };
            ([idx(a[0], 0), idx(a[1], 1)], [idx(z[0], 0), idx(z[1], 1)])
        };
        let mut count = vec![0u32; n[0] * n[1] + 1];
        for c in 0..mesh.num_cells() {
            let (a, z) = range(c);
            for j in a[1]..=z[1] {
                for i in a[0]..=z[0] {
                    count[j * n[0] + i + 1] += 1;
                }
            }
        }
        for k in 0..n[0] * n[1] {
            count[k + 1] += count[k];
        }
        let mut fill = count.clone();
        let mut cells = vec![0u32; count[n[0] * n[1]] as usize];
        for c in 0..mesh.num_cells() {
            let (a, z) = range(c);
            for j in a[1]..=z[1] {
                for i in a[0]..=z[0] {
                    let k = j * n[0] + i;
                    cells[fill[k] as usize] = c as u32;
                    fill[k] += 1;
                }
            }
        }
        CellLocator {
            mesh,
            lo,
            size,
            n,
            ptr: count,
            cells,
        }
    }

    /// Same answer as [`Mesh::locate`] (first holding cell in output order among candidates).
    pub fn locate(&self, p: [f64; 2]) -> Option<PointLocation> {
        let f = |x: f64, d: usize| (x - self.lo[d]) / self.size[d];
        let (fx, fy) = (f(p[0], 0), f(p[1], 1));
        // Points on a bucket edge may belong to either neighbour: look at both.
        let tol = 1e-9;
        let span = |v: f64, n: usize| -> Option<(usize, usize)> {
            if v < -tol || v > n as f64 + tol {
                return None;
            }
            let a = ((v - tol).floor().max(0.0) as usize).min(n - 1);
            let b = ((v + tol).floor().max(0.0) as usize).min(n - 1);
            Some((a, b))
        };
        let (x0, x1) = span(fx, self.n[0])?;
        let (y0, y1) = span(fy, self.n[1])?;
        let mut best: Option<(u32, PointLocation)> = None;
        for j in y0..=y1 {
            for i in x0..=x1 {
                let k = j * self.n[0] + i;
                for &c in &self.cells[self.ptr[k] as usize..self.ptr[k + 1] as usize] {
                    if best.is_some_and(|(b, _)| b <= c) {
                        continue;
                    }
                    if let Some(loc) = self.mesh.locate_in_cell(c as usize, p) {
                        best = Some((c, loc));
                    }
                }
            }
        }
        best.map(|(_, l)| l)
    }
}
