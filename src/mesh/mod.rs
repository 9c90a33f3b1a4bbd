//! Unstructured 2-D meshes of P1 triangles and Q1 quadrilaterals with tagged regions and boundaries.

mod generate;
mod gmsh;
mod locate;
mod submesh;

pub use generate::{rectangle, CellShape};
pub use gmsh::{parse as gmsh_parse, read_msh};
pub use locate::{CellLocator, PointLocation};
pub use submesh::{Submesh, INTERFACE};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Errors from building, reading or checking a mesh. Each names the file (if any) and the fault.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Parse { file: PathBuf, msg: String },
    #[error("{file}: cell {cell} ({kind}) is {what} (signed area {area:.3e}); cells must be counter-clockwise and non-degenerate")]
    BadCell {
        file: PathBuf,
        cell: usize,
        kind: &'static str,
        what: &'static str,
        area: f64,
    },
    #[error("invalid generated mesh: {0}")]
    Generate(String),
}

/// A boundary edge (two nodes) carrying the physical tag of the curve it lies on.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundaryEdge {
    pub nodes: [u32; 2],
    pub tag: i32,
}

/// A mesh: node coordinates, triangles and quadrilaterals (0-based node indices, counter-clockwise),
/// a region tag per cell, and tagged boundary edges. Cells are ordered triangles first, then quads.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Mesh {
    pub coords: Vec<[f64; 2]>,
    pub tris: Vec<[u32; 3]>,
    pub tri_tags: Vec<i32>,
    pub quads: Vec<[u32; 4]>,
    pub quad_tags: Vec<i32>,
    pub boundary: Vec<BoundaryEdge>,
    /// Physical names: `(dim, tag) → name` (dim 2: regions, dim 1: boundaries).
    pub names: BTreeMap<(i32, i32), String>,
}

impl Mesh {
    pub fn num_nodes(&self) -> usize {
        self.coords.len()
    }

    pub fn num_cells(&self) -> usize {
        self.tris.len() + self.quads.len()
    }

    /// Region tag of every cell, in output order (triangles, then quads).
    pub fn cell_tags(&self) -> Vec<i32> {
        self.tri_tags
            .iter()
            .chain(&self.quad_tags)
            .copied()
            .collect()
    }

    /// Resolves a region or boundary given by name or by number to its tag.
    pub fn resolve_tag(&self, dim: i32, key: &str) -> Option<i32> {
        if let Some(((_, t), _)) = self.names.iter().find(|((d, _), n)| *d == dim && *n == key) {
            return Some(*t);
        }
        let t: i32 = key.parse().ok()?;
        let used = match dim {
            1 => self.boundary.iter().any(|e| e.tag == t),
            _ => self.tri_tags.contains(&t) || self.quad_tags.contains(&t),
        };
        used.then_some(t)
    }

    /// Distinct boundary tags with their names (if any) and edge counts.
    pub fn boundary_tags(&self) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for e in &self.boundary {
            *m.entry(e.tag).or_insert(0) += 1;
        }
        m
    }

    /// Distinct region tags with cell counts.
    pub fn region_tags(&self) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for t in self.tri_tags.iter().chain(&self.quad_tags) {
            *m.entry(*t).or_insert(0) += 1;
        }
        m
    }

    /// Axis-aligned bounding box `[xmin, ymin, xmax, ymax]`.
    pub fn bbox(&self) -> [f64; 4] {
        let mut b = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for p in &self.coords {
            b[0] = b[0].min(p[0]);
            b[1] = b[1].min(p[1]);
            b[2] = b[2].max(p[0]);
            b[3] = b[3].max(p[1]);
        }
        b
    }

    /// Smallest and largest edge length over all cells.
    pub fn edge_length_range(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi: f64 = 0.0;
        let mut edge = |a: u32, b: u32| {
            let (p, q) = (self.coords[a as usize], self.coords[b as usize]);
            let l = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
            lo = lo.min(l);
            hi = hi.max(l);
        };
        for t in &self.tris {
            for k in 0..3 {
                edge(t[k], t[(k + 1) % 3]);
            }
        }
        for q in &self.quads {
            for k in 0..4 {
                edge(q[k], q[(k + 1) % 4]);
            }
        }
        (lo, hi)
    }

    /// Checks indices, orientation and degeneracy; `file` names the source in errors.
    pub fn check(&self, file: &std::path::Path) -> Result<(), MeshError> {
        let n = self.coords.len() as u32;
        let parse = |msg: String| MeshError::Parse {
            file: file.to_path_buf(),
            msg,
        };
        if self.num_cells() == 0 {
            return Err(parse(
                "mesh has no 2-D cells (triangles or quadrilaterals)".into(),
            ));
        }
        if let Some(p) = self
            .coords
            .iter()
            .find(|p| !p[0].is_finite() || !p[1].is_finite())
        {
            return Err(parse(format!("node coordinate is not finite: {p:?}")));
        }
        let all = self
            .tris
            .iter()
            .map(|t| &t[..])
            .chain(self.quads.iter().map(|q| &q[..]));
        for (c, cell) in all.enumerate() {
            if let Some(&bad) = cell.iter().find(|&&v| v >= n) {
                return Err(parse(format!(
                    "cell {c} refers to node index {bad} but there are {n} nodes"
                )));
            }
        }
        for e in &self.boundary {
            if e.nodes.iter().any(|&v| v >= n) {
                return Err(parse(format!(
                    "boundary edge {:?} refers to a node that does not exist",
                    e.nodes
                )));
            }
        }
        let (_, hmax) = self.edge_length_range();
        let tol = 1e-12 * hmax * hmax;
        for (c, t) in self.tris.iter().enumerate() {
            let a = signed_area(&self.coords, t);
            self.check_area(file, c, "triangle", a, tol)?;
        }
        for (c, q) in self.quads.iter().enumerate() {
            // A bilinear map is invertible iff all four corner Jacobians share a sign.
            for k in 0..4 {
                let tri = [q[(k + 3) % 4], q[k], q[(k + 1) % 4]];
                let a = signed_area(&self.coords, &tri);
                self.check_area(file, self.tris.len() + c, "quadrilateral", a, tol)?;
            }
        }
        Ok(())
    }

    fn check_area(
        &self,
        file: &std::path::Path,
        cell: usize,
        kind: &'static str,
        a: f64,
        tol: f64,
    ) -> Result<(), MeshError> {
        let what = if a.abs() <= tol {
            "degenerate"
        } else if a < 0.0 {
            "inverted (clockwise)"
        } else {
            return Ok(());
        };
        Err(MeshError::BadCell {
            file: file.to_path_buf(),
            cell,
            kind,
            what,
            area: a,
        })
    }

    /// Removes nodes no cell uses (Gmsh files can carry geometry points) and renumbers.
    pub(crate) fn drop_unused_nodes(&mut self) {
        let mut used = vec![false; self.coords.len()];
        for v in self
            .tris
            .iter()
            .flatten()
            .chain(self.quads.iter().flatten())
        {
            used[*v as usize] = true;
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut map = vec![u32::MAX; self.coords.len()];
        let mut coords = Vec::with_capacity(self.coords.len());
        for (i, p) in self.coords.iter().enumerate() {
            if used[i] {
                map[i] = coords.len() as u32;
                coords.push(*p);
            }
        }
        self.coords = coords;
        for v in self
            .tris
            .iter_mut()
            .flatten()
            .chain(self.quads.iter_mut().flatten())
        {
            *v = map[*v as usize];
        }
        self.boundary
            .retain(|e| e.nodes.iter().all(|v| used[*v as usize]));
        for e in &mut self.boundary {
            e.nodes = [map[e.nodes[0] as usize], map[e.nodes[1] as usize]];
        }
    }
}

/// Signed area of a triangle (positive when counter-clockwise).
pub fn signed_area(coords: &[[f64; 2]], t: &[u32; 3]) -> f64 {
    let (a, b, c) = (
        coords[t[0] as usize],
        coords[t[1] as usize],
        coords[t[2] as usize],
    );
    0.5 * ((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]))
}
