//! Finite-element building blocks: P1/Q1 reference elements, lumped mass, stiffness, boundary damping.
//!
//! The stiffness `K_ij = ∫ c² ∇φ_i·∇φ_j` is available two ways, both applied row by row so the
//! time loop can fuse `K u` with the update: an assembled CSR matrix ([`Csr`]) and stored element
//! matrices gathered per node ([`ElementByElement`]). `wavecp bench fe` measures both.

use crate::mesh::Mesh;
use rayon::prelude::*;
use std::collections::HashMap;

/// Wave speed given per cell (triangles then quads) or per node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WaveSpeed {
    PerCell(Vec<f64>),
    Nodal(Vec<f64>),
}

impl WaveSpeed {
    /// Speed at a point of cell `cell` whose shape-function values over `nodes` are `phi`.
    fn at(&self, cell: usize, nodes: &[u32], phi: &[f64]) -> f64 {
        match self {
            WaveSpeed::PerCell(c) => c[cell],
            WaveSpeed::Nodal(c) => nodes.iter().zip(phi).map(|(&n, p)| c[n as usize] * p).sum(),
        }
    }

    pub fn max(&self) -> f64 {
        let v = match self {
            WaveSpeed::PerCell(c) | WaveSpeed::Nodal(c) => c,
        };
        v.iter().copied().fold(0.0, f64::max)
    }
}

/// Bilinear shape functions on `[-1, 1]²`, nodes counter-clockwise from `(-1, -1)`.
pub fn q1_shape(xi: [f64; 2]) -> [f64; 4] {
    let (s, t) = (xi[0], xi[1]);
    [
        0.25 * (1.0 - s) * (1.0 - t),
        0.25 * (1.0 + s) * (1.0 - t),
        0.25 * (1.0 + s) * (1.0 + t),
        0.25 * (1.0 - s) * (1.0 + t),
    ]
}

/// Reference gradients `[dφ/ds, dφ/dt]` of the Q1 shape functions.
pub fn q1_grad(xi: [f64; 2]) -> [[f64; 2]; 4] {
    let (s, t) = (xi[0], xi[1]);
    [
        [-0.25 * (1.0 - t), -0.25 * (1.0 - s)],
        [0.25 * (1.0 - t), -0.25 * (1.0 + s)],
        [0.25 * (1.0 + t), 0.25 * (1.0 + s)],
        [-0.25 * (1.0 + t), 0.25 * (1.0 - s)],
    ]
}

/// Physical gradients of the Q1 shape functions at `xi` and `det J`.
fn q1_phys_grad(x: &[[f64; 2]; 4], xi: [f64; 2]) -> ([[f64; 2]; 4], f64) {
    let g = q1_grad(xi);
    let mut j = [[0.0; 2]; 2];
    for a in 0..4 {
        for d in 0..2 {
            j[d][0] += x[a][d] * g[a][0];
            j[d][1] += x[a][d] * g[a][1];
        }
    }
    let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
    let inv = [
        [j[1][1] / det, -j[0][1] / det],
        [-j[1][0] / det, j[0][0] / det],
    ];
    let mut out = [[0.0; 2]; 4];
    for a in 0..4 {
        for d in 0..2 {
            out[a][d] = g[a][0] * inv[0][d] + g[a][1] * inv[1][d];
        }
    }
    (out, det)
}

/// Inverse bilinear map by Newton's method; `None` if it does not converge.
pub fn q1_inverse_map(x: &[[f64; 2]; 4], p: [f64; 2]) -> Option<[f64; 2]> {
    let mut xi = [0.0, 0.0];
    for _ in 0..30 {
        let phi = q1_shape(xi);
        let g = q1_grad(xi);
        let mut r = [-p[0], -p[1]];
        let mut j = [[0.0; 2]; 2];
        for a in 0..4 {
            for d in 0..2 {
                r[d] += phi[a] * x[a][d];
                j[d][0] += x[a][d] * g[a][0];
                j[d][1] += x[a][d] * g[a][1];
            }
        }
        let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
        if det.abs() < 1e-300 {
            return None;
        }
        let d0 = (j[1][1] * r[0] - j[0][1] * r[1]) / det;
        let d1 = (-j[1][0] * r[0] + j[0][0] * r[1]) / det;
        xi = [xi[0] - d0, xi[1] - d1];
        // xi is O(1); the residual's round-off is amplified by 1/det J (≈ 1/h), so an absolute
        // 1e-14 may never be reached on small cells far from the origin. 1e-12 is far below any
        // use of xi and well above that noise.
        if d0.abs() + d1.abs() < 1e-12 {
            return Some(xi);
        }
        if xi[0].abs() > 10.0 || xi[1].abs() > 10.0 {
            return None;
        }
    }
    None
}

const GAUSS2: [f64; 2] = [-0.577_350_269_189_625_8, 0.577_350_269_189_625_8];

/// Element stiffness and lumped mass of every cell, in output order (triangles, then quads).
pub struct ElementMatrices {
    /// Row-major 3×3 blocks, one per triangle.
    pub tri_k: Vec<[f64; 9]>,
    /// Row-major 4×4 blocks, one per quad.
    pub quad_k: Vec<[f64; 16]>,
    /// Lumped (row-sum) mass per node.
    pub mass: Vec<f64>,
}

/// Computes element stiffness matrices and the lumped mass.
pub fn element_matrices(mesh: &Mesh, c: &WaveSpeed) -> ElementMatrices {
    let mut mass = vec![0.0; mesh.num_nodes()];
    let tri_k: Vec<[f64; 9]> = mesh
        .tris
        .iter()
        .enumerate()
        .map(|(e, t)| {
            let x = t.map(|v| mesh.coords[v as usize]);
            let det = (x[1][0] - x[0][0]) * (x[2][1] - x[0][1])
                - (x[2][0] - x[0][0]) * (x[1][1] - x[0][1]);
            let area = 0.5 * det;
            // ∇λ_a = perp(opposite edge) / (2 area)
            let g = [
                [(x[1][1] - x[2][1]) / det, (x[2][0] - x[1][0]) / det],
                [(x[2][1] - x[0][1]) / det, (x[0][0] - x[2][0]) / det],
                [(x[0][1] - x[1][1]) / det, (x[1][0] - x[0][0]) / det],
            ];
            // c² integrated with the 3-point edge-midpoint rule (exact for quadratic c²).
            let mids = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]];
            let c2: f64 = mids.iter().map(|phi| c.at(e, t, phi).powi(2)).sum::<f64>() / 3.0;
            let mut k = [0.0; 9];
            for a in 0..3 {
                for b in 0..3 {
                    k[3 * a + b] = area * c2 * (g[a][0] * g[b][0] + g[a][1] * g[b][1]);
                }
            }
            k
        })
        .collect();
    for t in &mesh.tris {
        let area = crate::mesh::signed_area(&mesh.coords, t);
        for &v in t {
            mass[v as usize] += area / 3.0;
        }
    }
    let ntri = mesh.tris.len();
    let quad_k: Vec<[f64; 16]> = mesh
        .quads
        .iter()
        .enumerate()
        .map(|(e, q)| {
            let x = q.map(|v| mesh.coords[v as usize]);
            let mut k = [0.0; 16];
            for &s in &GAUSS2 {
                for &t in &GAUSS2 {
                    let (g, det) = q1_phys_grad(&x, [s, t]);
                    let c2 = c.at(ntri + e, q, &q1_shape([s, t])).powi(2);
                    for a in 0..4 {
                        for b in 0..4 {
                            k[4 * a + b] += det * c2 * (g[a][0] * g[b][0] + g[a][1] * g[b][1]);
                        }
                    }
                }
            }
            k
        })
        .collect();
    for q in &mesh.quads {
        let x = q.map(|v| mesh.coords[v as usize]);
        for &s in &GAUSS2 {
            for &t in &GAUSS2 {
                let (_, det) = q1_phys_grad(&x, [s, t]);
                let phi = q1_shape([s, t]);
                for a in 0..4 {
                    mass[q[a] as usize] += det * phi[a];
                }
            }
        }
    }
    ElementMatrices {
        tri_k,
        quad_k,
        mass,
    }
}

/// Lumped boundary damping `C_ii = Σ_edges c · |edge| / 2` over edges with an absorbing tag.
pub fn boundary_damping(mesh: &Mesh, c: &WaveSpeed, absorbing: &[i32]) -> Vec<f64> {
    let mut damp = vec![0.0; mesh.num_nodes()];
    if absorbing.is_empty() {
        return damp;
    }
    // The speed on a boundary edge is that of the cell it bounds.
    let mut edge_cell: HashMap<(u32, u32), usize> = HashMap::new();
    let key = |a: u32, b: u32| (a.min(b), a.max(b));
    for (e, t) in mesh.tris.iter().enumerate() {
        for k in 0..3 {
            edge_cell.insert(key(t[k], t[(k + 1) % 3]), e);
        }
    }
    for (e, q) in mesh.quads.iter().enumerate() {
        for k in 0..4 {
            edge_cell.insert(key(q[k], q[(k + 1) % 4]), mesh.tris.len() + e);
        }
    }
    for edge in mesh.boundary.iter().filter(|e| absorbing.contains(&e.tag)) {
        let [a, b] = edge.nodes;
        let (p, q) = (mesh.coords[a as usize], mesh.coords[b as usize]);
        let len = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
        let (ca, cb) = match c {
            WaveSpeed::Nodal(v) => (v[a as usize], v[b as usize]),
            WaveSpeed::PerCell(v) => {
                let cell = edge_cell.get(&key(a, b)).copied().unwrap_or(0);
                (v[cell], v[cell])
            }
        };
        // Row sums of ∫_edge c φ_a φ_b with c linear along the edge.
        damp[a as usize] += len * (2.0 * ca + cb) / 6.0;
        damp[b as usize] += len * (ca + 2.0 * cb) / 6.0;
    }
    damp
}

/// A symmetric operator applied one row at a time: `(K u)_i = row_dot(i, u)`.
pub trait RowOperator: Sync {
    fn nrows(&self) -> usize;
    fn row_dot(&self, i: usize, u: &[f64]) -> f64;
    /// Bytes moved per application (matrix data and indices, not vectors), for bandwidth figures.
    fn bytes(&self) -> usize;
    /// `y = A x`, in parallel over rows.
    fn apply(&self, x: &[f64], y: &mut [f64]) {
        y.par_iter_mut()
            .enumerate()
            .with_min_len(4096)
            .for_each(|(i, yi)| *yi = self.row_dot(i, x));
    }
}

/// Compressed sparse rows.
#[derive(Debug, Clone)]
pub struct Csr {
    pub row_ptr: Vec<u32>,
    pub cols: Vec<u32>,
    pub vals: Vec<f64>,
}

impl Csr {
    /// Reorders each row's entries by `key[column]` (the values themselves are untouched).
    pub fn sort_rows_by(&mut self, key: &[u64]) {
        let mut tmp: Vec<(u64, u32, f64)> = Vec::new();
        for r in 0..self.row_ptr.len() - 1 {
            let (a, b) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
            tmp.clear();
            tmp.extend((a..b).map(|p| (key[self.cols[p] as usize], self.cols[p], self.vals[p])));
            tmp.sort_by_key(|e| e.0);
            for (p, e) in (a..b).zip(&tmp) {
                self.cols[p] = e.1;
                self.vals[p] = e.2;
            }
        }
    }
}

impl RowOperator for Csr {
    fn nrows(&self) -> usize {
        self.row_ptr.len() - 1
    }
    #[inline]
    fn row_dot(&self, i: usize, u: &[f64]) -> f64 {
        let (a, b) = (self.row_ptr[i] as usize, self.row_ptr[i + 1] as usize);
        let mut s = 0.0;
        for (c, v) in self.cols[a..b].iter().zip(&self.vals[a..b]) {
            s += v * u[*c as usize];
        }
        s
    }
    fn bytes(&self) -> usize {
        self.row_ptr.len() * 4 + self.cols.len() * 12
    }
}

/// Node → incident cells (CSR layout): `(ptr, cell, local index of the node in that cell)`.
fn node_cells(mesh: &Mesh) -> (Vec<u32>, Vec<u32>, Vec<u8>) {
    let n = mesh.num_nodes();
    let mut count = vec![0u32; n + 1];
    let cells = mesh
        .tris
        .iter()
        .map(|t| &t[..])
        .chain(mesh.quads.iter().map(|q| &q[..]));
    for c in cells.clone() {
        for &v in c {
            count[v as usize + 1] += 1;
        }
    }
    for i in 0..n {
        count[i + 1] += count[i];
    }
    let mut fill = count.clone();
    let total = count[n] as usize;
    let mut cell = vec![0u32; total];
    let mut local = vec![0u8; total];
    for (e, c) in cells.enumerate() {
        for (k, &v) in c.iter().enumerate() {
            let p = fill[v as usize] as usize;
            cell[p] = e as u32;
            local[p] = k as u8;
            fill[v as usize] += 1;
        }
    }
    (count, cell, local)
}

/// Assembles the global stiffness as CSR (columns sorted in each row).
pub fn assemble_csr(mesh: &Mesh, em: &ElementMatrices) -> Csr {
    let n = mesh.num_nodes();
    let ntri = mesh.tris.len();
    let (ptr, cell, local) = node_cells(mesh);
    let cell_nodes = |e: usize| -> &[u32] {
        if e < ntri {
            &mesh.tris[e]
        } else {
            &mesh.quads[e - ntri]
        }
    };
    let rows: Vec<(Vec<u32>, Vec<f64>)> = (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| {
            let mut entries: Vec<(u32, f64)> = Vec::with_capacity(16);
            for p in ptr[i] as usize..ptr[i + 1] as usize {
                let e = cell[p] as usize;
                let a = local[p] as usize;
                let nodes = cell_nodes(e);
                for (b, &j) in nodes.iter().enumerate() {
                    let v = if e < ntri {
                        em.tri_k[e][3 * a + b]
                    } else {
                        em.quad_k[e - ntri][4 * a + b]
                    };
                    entries.push((j, v));
                }
            }
            entries.sort_by_key(|x| x.0);
            let mut cols = Vec::with_capacity(entries.len());
            let mut vals: Vec<f64> = Vec::with_capacity(entries.len());
            for (j, v) in entries {
                if let (Some(&last), Some(acc)) = (cols.last(), vals.last_mut()) {
                    if last == j {
                        *acc += v;
                        continue;
                    }
                }
                cols.push(j);
                vals.push(v);
            }
            (cols, vals)
        })
        .collect();
    let mut row_ptr = Vec::with_capacity(n + 1);
    row_ptr.push(0u32);
    let nnz: usize = rows.iter().map(|r| r.0.len()).sum();
    let mut cols = Vec::with_capacity(nnz);
    let mut vals = Vec::with_capacity(nnz);
    for (c, v) in rows {
        cols.extend_from_slice(&c);
        vals.extend_from_slice(&v);
        row_ptr.push(cols.len() as u32);
    }
    Csr {
        row_ptr,
        cols,
        vals,
    }
}

/// Element matrices applied without assembly: row `i` gathers, from every cell that holds node
/// `i`, that cell's matrix row times the cell's nodal values. Conflict-free in parallel and
/// deterministic, at the price of reading each element matrix once per step.
pub struct ElementByElement {
    ptr: Vec<u32>,
    /// Per (node, incident cell): offset of the matrix row in `rows`, and the cell's nodes.
    row_off: Vec<u32>,
    cell_of: Vec<u32>,
    ntri: usize,
    tris: Vec<[u32; 3]>,
    quads: Vec<[u32; 4]>,
    rows: Vec<f64>,
}

impl ElementByElement {
    pub fn new(mesh: &Mesh, em: &ElementMatrices) -> Self {
        let (ptr, cell, local) = node_cells(mesh);
        let ntri = mesh.tris.len();
        let mut rows = Vec::with_capacity(ntri * 9 + mesh.quads.len() * 16);
        for k in &em.tri_k {
            rows.extend_from_slice(k);
        }
        for k in &em.quad_k {
            rows.extend_from_slice(k);
        }
        let row_off = cell
            .iter()
            .zip(&local)
            .map(|(&e, &a)| {
                let e = e as usize;
                if e < ntri {
                    (9 * e + 3 * a as usize) as u32
                } else {
                    (9 * ntri + 16 * (e - ntri) + 4 * a as usize) as u32
                }
            })
            .collect();
        ElementByElement {
            ptr,
            row_off,
            cell_of: cell,
            ntri,
            tris: mesh.tris.clone(),
            quads: mesh.quads.clone(),
            rows,
        }
    }
}

impl RowOperator for ElementByElement {
    fn nrows(&self) -> usize {
        self.ptr.len() - 1
    }
    #[inline]
    fn row_dot(&self, i: usize, u: &[f64]) -> f64 {
        let mut s = 0.0;
        for p in self.ptr[i] as usize..self.ptr[i + 1] as usize {
            let e = self.cell_of[p] as usize;
            let off = self.row_off[p] as usize;
            if e < self.ntri {
                let n = &self.tris[e];
                let r = &self.rows[off..off + 3];
                s += r[0] * u[n[0] as usize] + r[1] * u[n[1] as usize] + r[2] * u[n[2] as usize];
            } else {
                let n = &self.quads[e - self.ntri];
                let r = &self.rows[off..off + 4];
                s += r[0] * u[n[0] as usize]
                    + r[1] * u[n[1] as usize]
                    + r[2] * u[n[2] as usize]
                    + r[3] * u[n[3] as usize];
            }
        }
        s
    }
    fn bytes(&self) -> usize {
        self.ptr.len() * 4
            + self.row_off.len() * 8
            + self.rows.len() * 8
            + self.tris.len() * 12
            + self.quads.len() * 16
    }
}

/// `‖u_h − f‖_{L2}` for a nodal field `u_h`, by 3-point (triangles) and 3×3 Gauss (quads) quadrature.
pub fn l2_error(mesh: &Mesh, u: &[f64], f: impl Fn([f64; 2]) -> f64) -> f64 {
    let mut sum = 0.0;
    // Triangle rule exact for quadratics: weights 1/3 at (1/6, 1/6, 2/3) and permutations.
    let bary = [
        [2.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0],
        [1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0],
        [1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0],
    ];
    for t in &mesh.tris {
        let area = crate::mesh::signed_area(&mesh.coords, t);
        let x = t.map(|v| mesh.coords[v as usize]);
        for l in &bary {
            let p = [
                l[0] * x[0][0] + l[1] * x[1][0] + l[2] * x[2][0],
                l[0] * x[0][1] + l[1] * x[1][1] + l[2] * x[2][1],
            ];
            let uh: f64 = (0..3).map(|k| l[k] * u[t[k] as usize]).sum();
            sum += area / 3.0 * (uh - f(p)).powi(2);
        }
    }
    let g3 = [
        (-0.774_596_669_241_483_4, 5.0 / 9.0),
        (0.0, 8.0 / 9.0),
        (0.774_596_669_241_483_4, 5.0 / 9.0),
    ];
    for q in &mesh.quads {
        let x = q.map(|v| mesh.coords[v as usize]);
        for &(s, ws) in &g3 {
            for &(t, wt) in &g3 {
                let phi = q1_shape([s, t]);
                let (_, det) = q1_phys_grad(&x, [s, t]);
                let p = [
                    (0..4).map(|a| phi[a] * x[a][0]).sum(),
                    (0..4).map(|a| phi[a] * x[a][1]).sum(),
                ];
                let uh: f64 = (0..4).map(|a| phi[a] * u[q[a] as usize]).sum();
                sum += ws * wt * det * (uh - f(p)).powi(2);
            }
        }
    }
    sum.sqrt()
}
