//! Finding the cell that holds a point and the shape-function weights there (sources, receivers).

use super::Mesh;
use crate::fem::{q1_inverse_map, q1_shape};

/// Interpolation stencil of a point: `value = Σ weights[k] · u[nodes[k]]` over `len` nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
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

impl Mesh {
    /// Locates `p`; `None` if no cell holds it (within a relative tolerance of 1e-10).
    pub fn locate(&self, p: [f64; 2]) -> Option<PointLocation> {
        let (_, h) = self.edge_length_range();
        let eps = 1e-10;
        for t in &self.tris {
            let [a, b, c] = t.map(|v| self.coords[v as usize]);
            let det = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]);
            let l1 = ((p[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (p[1] - a[1])) / det;
            let l2 = ((b[0] - a[0]) * (p[1] - a[1]) - (p[0] - a[0]) * (b[1] - a[1])) / det;
            let l0 = 1.0 - l1 - l2;
            if l0 >= -eps && l1 >= -eps && l2 >= -eps {
                return Some(PointLocation {
                    nodes: [t[0], t[1], t[2], 0],
                    weights: [l0, l1, l2, 0.0],
                    len: 3,
                });
            }
        }
        for q in &self.quads {
            let x = q.map(|v| self.coords[v as usize]);
            // Cheap bounding-box rejection before the Newton inverse map.
            let (xmin, xmax) = x
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
                    (lo.min(c[0]), hi.max(c[0]))
                });
            let (ymin, ymax) = x
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
                    (lo.min(c[1]), hi.max(c[1]))
                });
            let tol = eps * h;
            if p[0] < xmin - tol || p[0] > xmax + tol || p[1] < ymin - tol || p[1] > ymax + tol {
                continue;
            }
            if let Some(xi) = q1_inverse_map(&x, p) {
                if xi[0].abs() <= 1.0 + eps && xi[1].abs() <= 1.0 + eps {
                    return Some(PointLocation {
                        nodes: *q,
                        weights: q1_shape(xi),
                        len: 4,
                    });
                }
            }
        }
        None
    }
}
