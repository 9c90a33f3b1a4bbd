//! Moving a field between the FE mesh and the surrogate's zone grid, both ways.
//!
//! - **mesh → grid**: each grid point takes the FE interpolant at that point (the element's
//!   shape functions: exact for the P1/Q1 field itself). Grid points outside the mesh (a
//!   non-rectangular mesh inside its bounding zone) are masked: they read 0 and the mask says
//!   so. This is what `wavecp dataset` records, so a network sees the same frames in a coupled
//!   run as in training.
//! - **grid → mesh**: each mesh node inside the zone takes the bilinear interpolant of the four
//!   grid points around it, over those of them that are not masked (weights renormalised); a
//!   node with no unmasked neighbour, or outside the zone, is left as it was. With
//!   [`Interpolation::Cubic`] a node whose 4 × 4 surrounding grid points are all unmasked takes
//!   their tensor-product cubic Lagrange interpolant instead (fourth-order; the stencil shifted
//!   inward at the zone's edges), the others the bilinear one: a field resolved by a few points
//!   a wavelength comes back far closer (measured in docs/coupling.md).
//!
//! On a decomposed mesh ([`ZoneTransfer::distribute`]) rank 0 keeps the grid points'
//! locations in the whole mesh: mesh → grid gathers the owned values there, applies the
//! serial map and broadcasts the grid; grid → mesh runs on every rank for its own nodes with
//! the stencils rank 0 computed. Both give the serial transfer's bits on any rank count.
//!
//! On a smooth field both are second-order accurate in their spacing (the grid's for grid →
//! mesh, the mesh's for mesh → grid), and so is the round trip mesh → grid → mesh; the cubic
//! grid → mesh is fourth-order. The tests state the measured errors and rates.

use crate::comm::Comm;
use crate::mesh::{Mesh, PointLocation};
use crate::partition::Layout;

/// A rectangular grid of `nx × ny` points spanning `[x0, x1] × [y0, y1]`, row by row (x
/// fastest), as the dataset's zone.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// What rank 0 sent could not be read (a message damaged between ranks).
    #[error("transfer set-up between ranks: {0}")]
    Ranks(String),
}

/// How grid → mesh interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Interpolation {
    /// The four grid points around a node (second-order; masked points left out).
    #[default]
    Bilinear,
    /// The 4 × 4 grid points around a node, tensor-product cubic Lagrange (fourth-order);
    /// bilinear where one of them is masked or the grid has fewer than 4 points a side.
    Cubic,
}

impl std::str::FromStr for Interpolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bilinear" => Ok(Self::Bilinear),
            "cubic" => Ok(Self::Cubic),
            other => Err(format!(
                "unknown interpolation {other:?}: use \"bilinear\" or \"cubic\""
            )),
        }
    }
}

/// One mesh node's bilinear stencil on the grid: the node, four grid indices, their weights.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct NodeStencil {
    node: u32,
    points: [u32; 4],
    weights: [f64; 4],
}

/// One mesh node's cubic stencil: the grid index of its 4 × 4 block's first point and the
/// weights along x and y (the value is `Σ wx[a] wy[b] g[first + b nx + a]`).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct CubicStencil {
    node: u32,
    first: u32,
    wx: [f64; 4],
    wy: [f64; 4],
}

/// The cubic Lagrange weights at continuous index `s` in `0..=n-1` over four consecutive
/// points, and the first of them (`n ≥ 4`): the block around `s`'s cell, shifted inward at the
/// ends.
fn cubic_weights(s: f64, n: usize) -> (usize, [f64; 4]) {
    let cell = (s.floor() as usize).min(n - 2);
    let first = cell.saturating_sub(1).min(n - 4);
    let x = s - first as f64;
    let mut w = [0.0; 4];
    for (k, wk) in w.iter_mut().enumerate() {
        *wk = (0..4)
            .filter(|&m| m != k)
            .map(|m| (x - m as f64) / (k as f64 - m as f64))
            .product();
    }
    (first, w)
}

/// Every node's grid → mesh stencil: cubic where `interp` asks for it and its 4 × 4 block is
/// unmasked, bilinear (masked points left out, weights renormalised) otherwise; nodes outside
/// the zone or with no unmasked neighbour get none.
fn node_stencils(
    coords: &[[f64; 2]],
    grid: &ZoneGrid,
    mask: &[bool],
    interp: Interpolation,
) -> (Vec<NodeStencil>, Vec<CubicStencil>) {
    let (hx, hy) = (
        (grid.x[1] - grid.x[0]) / (grid.nx - 1) as f64,
        (grid.y[1] - grid.y[0]) / (grid.ny - 1) as f64,
    );
    let (smax, tmax) = ((grid.nx - 1) as f64, (grid.ny - 1) as f64);
    let cubic_ok = interp == Interpolation::Cubic && grid.nx >= 4 && grid.ny >= 4;
    // A node a rounding error outside the zone still belongs to its edge.
    let tol = 1e-9;
    let (mut bilinear, mut cubic) = (Vec::new(), Vec::new());
    for (v, p) in coords.iter().enumerate() {
        let (s, t) = ((p[0] - grid.x[0]) / hx, (p[1] - grid.y[0]) / hy);
        if !(s >= -tol && s <= smax + tol && t >= -tol && t <= tmax + tol) {
            continue;
        }
        let (s, t) = (s.clamp(0.0, smax), t.clamp(0.0, tmax));
        if cubic_ok {
            let ((i0, wx), (j0, wy)) = (cubic_weights(s, grid.nx), cubic_weights(t, grid.ny));
            let first = j0 * grid.nx + i0;
            if (0..4).all(|b| (0..4).all(|a| mask[first + b * grid.nx + a])) {
                cubic.push(CubicStencil {
                    node: v as u32,
                    first: first as u32,
                    wx,
                    wy,
                });
                continue;
            }
        }
        let (i, j) = (
            (s.floor() as usize).min(grid.nx - 2),
            (t.floor() as usize).min(grid.ny - 2),
        );
        let (a, b) = (s - i as f64, t - j as f64);
        let idx = |di: usize, dj: usize| ((j + dj) * grid.nx + i + di) as u32;
        let points = [idx(0, 0), idx(1, 0), idx(0, 1), idx(1, 1)];
        let mut weights = [(1.0 - a) * (1.0 - b), a * (1.0 - b), (1.0 - a) * b, a * b];
        for (w, &q) in weights.iter_mut().zip(&points) {
            if !mask[q as usize] {
                *w = 0.0;
            }
        }
        let sum: f64 = weights.iter().sum();
        if sum <= 1e-12 {
            continue;
        }
        weights.iter_mut().for_each(|w| *w /= sum);
        bilinear.push(NodeStencil {
            node: v as u32,
            points,
            weights,
        });
    }
    (bilinear, cubic)
}

impl NodeStencil {
    fn value(&self, g: &[f64]) -> f64 {
        self.points
            .iter()
            .zip(&self.weights)
            .map(|(&q, &w)| w * g[q as usize])
            .sum()
    }
}

impl CubicStencil {
    fn value(&self, nx: usize, g: &[f64]) -> f64 {
        let f = self.first as usize;
        (0..4)
            .map(|b| {
                let row = &g[f + b * nx..f + b * nx + 4];
                self.wy[b] * (0..4).map(|a| self.wx[a] * row[a]).sum::<f64>()
            })
            .sum()
    }
}

/// Nodes per block of a parallel grid → mesh pass: large enough that a block's stencils
/// (72 bytes a node) amortise the task, small enough to share 10⁶ nodes among many threads.
const APPLY_BLOCK: usize = 1 << 14;

/// `u[k][node] = stencil · g[k]` for every stencil and field `k`, the fields in one pass over
/// the stencils (a hand-back maps its displacement and velocity with the same ones), in
/// parallel over blocks of nodes. Both stencil lists are sorted by node (they are built in
/// node order), so each block's stencils are a run of each list and each block writes its own
/// slice of every field. Each value is computed as by one pass alone: same bits.
fn apply(
    bilinear: &[NodeStencil],
    cubic: &[CubicStencil],
    nx: usize,
    g: &[&[f64]],
    u: Vec<&mut [f64]>,
) {
    use rayon::prelude::*;
    debug_assert!(bilinear.is_sorted_by_key(|s| s.node) && cubic.is_sorted_by_key(|s| s.node));
    let mut chunks: Vec<_> = u.into_iter().map(|f| f.chunks_mut(APPLY_BLOCK)).collect();
    let mut blocks = Vec::new();
    while let Some(b) = chunks
        .iter_mut()
        .map(Iterator::next)
        .collect::<Option<Vec<_>>>()
    {
        blocks.push(b);
    }
    blocks.into_par_iter().enumerate().for_each(|(k, mut out)| {
        let lo = k * APPLY_BLOCK;
        let hi = lo + out.first().map_or(0, |o| o.len());
        let run = |node: u32| (node as usize) < lo;
        let end = |node: u32| (node as usize) < hi;
        let b =
            bilinear.partition_point(|s| run(s.node))..bilinear.partition_point(|s| end(s.node));
        for s in &bilinear[b] {
            for (o, g) in out.iter_mut().zip(g) {
                o[s.node as usize - lo] = s.value(g);
            }
        }
        let c = cubic.partition_point(|s| run(s.node))..cubic.partition_point(|s| end(s.node));
        for s in &cubic[c] {
            for (o, g) in out.iter_mut().zip(g) {
                o[s.node as usize - lo] = s.value(nx, g);
            }
        }
    });
}

/// Grid → a fixed list of points in the zone (a submodel's interface nodes), by the stencils
/// grid → mesh uses.
#[derive(Debug, Clone)]
pub struct GridSampler {
    bilinear: Vec<NodeStencil>,
    cubic: Vec<CubicStencil>,
    grid: ZoneGrid,
    points: usize,
}

impl GridSampler {
    /// Refuses a point outside the zone (every point gets a value).
    pub fn new(
        grid: ZoneGrid,
        points: &[[f64; 2]],
        interp: Interpolation,
    ) -> Result<Self, TransferError> {
        grid.check()?;
        let mask = vec![true; grid.nx * grid.ny];
        let (bilinear, cubic) = node_stencils(points, &grid, &mask, interp);
        if bilinear.len() + cubic.len() != points.len() {
            let mut has = vec![false; points.len()];
            for v in bilinear
                .iter()
                .map(|s| s.node)
                .chain(cubic.iter().map(|s| s.node))
            {
                has[v as usize] = true;
            }
            let k = has.iter().position(|h| !h).unwrap_or(0);
            return Err(TransferError::Grid(format!(
                "point {:?} lies outside the zone [{}, {}] x [{}, {}]",
                points[k], grid.x[0], grid.x[1], grid.y[0], grid.y[1]
            )));
        }
        Ok(GridSampler {
            bilinear,
            cubic,
            grid,
            points: points.len(),
        })
    }

    /// The grid field `g` at the points.
    pub fn sample(&self, g: &[f64], out: &mut [f64]) -> Result<(), TransferError> {
        let n = self.grid.nx * self.grid.ny;
        for (what, expected, found) in [
            ("grid field", n, g.len()),
            ("point values", self.points, out.len()),
        ] {
            if expected != found {
                return Err(TransferError::Length {
                    what,
                    expected,
                    found,
                });
            }
        }
        apply(&self.bilinear, &self.cubic, self.grid.nx, &[g], vec![out]);
        Ok(())
    }
}

/// The stencils of `all` (numbered by whole-mesh node) for the nodes one rank owns (`mine`:
/// their whole-mesh numbers, in the rank's order), renumbered to the rank's nodes.
fn for_rank<S: Copy>(
    all: &[S],
    mine: &[u64],
    whole_nodes: usize,
    node: impl Fn(&mut S) -> &mut u32,
) -> Vec<S> {
    let mut at = vec![u32::MAX; whole_nodes];
    for (k, st) in all.iter().enumerate() {
        let mut st = *st;
        at[*node(&mut st) as usize] = k as u32;
    }
    mine.iter()
        .enumerate()
        .filter_map(|(local, &g)| {
            let k = *at.get(g as usize)?;
            (k != u32::MAX).then(|| {
                let mut st = all[k as usize];
                *node(&mut st) = local as u32;
                st
            })
        })
        .collect()
}

/// The two maps between a mesh and a zone grid, set up once.
#[derive(Debug, Clone)]
pub struct ZoneTransfer {
    grid: ZoneGrid,
    /// Per grid point: its stencil on the mesh, `None` where it lies outside (masked).
    to_grid: Vec<Option<PointLocation>>,
    /// The mesh nodes inside the zone with at least one unmasked grid neighbour, less those
    /// in `cubic`.
    to_mesh: Vec<NodeStencil>,
    /// The mesh nodes interpolated by cubic stencils ([`Interpolation::Cubic`]).
    cubic: Vec<CubicStencil>,
    /// The nodes a field has (this rank's owned nodes on a decomposed mesh).
    num_nodes: usize,
    /// Per grid point, whether it lies in the mesh.
    mask: Vec<bool>,
    /// The whole mesh's node count and how many of them the grid covers.
    mesh_nodes: usize,
    mesh_covered: usize,
    /// On a decomposed mesh: this rank's owned nodes that the grid points' stencils read, in
    /// the order rank 0 gathers them; rank 0's `to_grid` stencils then index the gathered
    /// values (the other ranks hold no `to_grid` locations). Hundreds of values a frame where
    /// the whole field would be millions.
    sample: Option<Vec<u32>>,
    /// The stencils of the covered nodes whose whole-mesh number is a multiple of
    /// [`probe_stride`] (this rank's): where [`ZoneTransfer::handback_terms`] looks.
    probe: Vec<NodeStencil>,
    probe_cubic: Vec<CubicStencil>,
}

/// Every how many covered nodes (by whole-mesh number) the hand-back's loss is sampled: about
/// 2¹⁴ of them, all of a small mesh. Odd, so that it does not follow a structured mesh's rows
/// (a row of 1 000 nodes would put an even stride's samples in the same columns).
fn probe_stride(covered: usize) -> usize {
    let k = (covered >> 14).max(1);
    if k > 1 && k.is_multiple_of(2) {
        k + 1
    } else {
        k
    }
}

/// The stencils of `all` whose node is a multiple of `every`.
fn sampled<S: Copy>(all: &[S], every: usize, node: impl Fn(&S) -> u32) -> Vec<S> {
    all.iter()
        .filter(|s| (node(s) as usize).is_multiple_of(every))
        .copied()
        .collect()
}

/// What rank 0 sends each rank of a decomposed mesh.
#[derive(serde::Serialize, serde::Deserialize)]
struct RankPart {
    grid: ZoneGrid,
    mask: Vec<bool>,
    mesh_nodes: usize,
    mesh_covered: usize,
    stencils: Vec<NodeStencil>,
    cubic: Vec<CubicStencil>,
    probe: Vec<NodeStencil>,
    probe_cubic: Vec<CubicStencil>,
    sample: Vec<u32>,
}

/// Of the mesh nodes the grid points' stencils read (`needed`, by whole-mesh number), those a
/// rank owns (`mine`: its owned nodes' whole-mesh numbers), as its local indices.
fn sample_of(mine: &[u64], needed: &[bool]) -> Vec<u32> {
    mine.iter()
        .enumerate()
        .filter(|&(_, &g)| needed.get(g as usize) == Some(&true))
        .map(|(l, _)| l as u32)
        .collect()
}

/// `to_grid`'s stencils made to index the gathered samples (`order`: their whole-mesh
/// numbers in gather order) instead of the whole mesh; `None` when a node is in no rank's
/// sample (owned by none).
fn onto_samples(
    to_grid: Vec<Option<PointLocation>>,
    order: &[u64],
    nodes: usize,
) -> Option<Vec<Option<PointLocation>>> {
    let mut at = vec![u32::MAX; nodes];
    for (k, &g) in order.iter().enumerate() {
        *at.get_mut(g as usize)? = k as u32;
    }
    to_grid
        .into_iter()
        .map(|s| match s {
            None => Some(None),
            Some(mut s) => {
                for n in &mut s.nodes[..s.len] {
                    *n = *at.get(*n as usize).filter(|&&k| k != u32::MAX)?;
                }
                Some(Some(s))
            }
        })
        .collect()
}

impl ZoneTransfer {
    /// Locates every grid point in `mesh` and every mesh node in the grid; grid → mesh is
    /// bilinear.
    pub fn new(mesh: &Mesh, grid: ZoneGrid) -> Result<Self, TransferError> {
        Self::with_interpolation(mesh, grid, Interpolation::Bilinear)
    }

    /// [`ZoneTransfer::new`] with grid → mesh by `interp`.
    pub fn with_interpolation(
        mesh: &Mesh,
        grid: ZoneGrid,
        interp: Interpolation,
    ) -> Result<Self, TransferError> {
        grid.check()?;
        let locator = mesh.locator();
        let to_grid: Vec<Option<PointLocation>> = (0..grid.ny)
            .flat_map(|j| (0..grid.nx).map(move |i| (i, j)))
            .map(|(i, j)| locator.locate(grid.point(i, j)))
            .collect();
        if to_grid.iter().all(Option::is_none) {
            return Err(TransferError::NoOverlap);
        }
        let mask: Vec<bool> = to_grid.iter().map(Option::is_some).collect();
        let (to_mesh, cubic) = node_stencils(&mesh.coords, &grid, &mask, interp);
        let every = probe_stride(to_mesh.len() + cubic.len());
        Ok(ZoneTransfer {
            grid,
            to_grid,
            mesh_covered: to_mesh.len() + cubic.len(),
            probe: sampled(&to_mesh, every, |s| s.node),
            probe_cubic: sampled(&cubic, every, |s| s.node),
            to_mesh,
            cubic,
            num_nodes: mesh.num_nodes(),
            mask,
            mesh_nodes: mesh.num_nodes(),
            sample: None,
        })
    }

    /// The transfer of a decomposed simulation whose rank holds the owned nodes of `layout`,
    /// from the whole mesh's transfer on rank 0 (`whole`: `Some` there, ignored elsewhere).
    /// Collective. Fields are then this rank's owned values; use the `_on` methods.
    pub fn distribute(
        whole: Option<ZoneTransfer>,
        layout: &Layout,
        comm: &dyn Comm,
    ) -> Result<ZoneTransfer, TransferError> {
        let no = layout.n_owned;
        let ids = comm.gather_u64(&layout.global[..no]);
        let counts = comm.gather_u64(&[no as u64]);
        let (parts, whole) = match (ids, counts, whole) {
            (Some(ids), Some(counts), Some(w)) => {
                let mut needed = vec![false; w.num_nodes];
                for s in w.to_grid.iter().flatten() {
                    for &n in &s.nodes[..s.len] {
                        needed[n as usize] = true;
                    }
                }
                let mut mine = Vec::with_capacity(counts.len());
                let mut off = 0usize;
                for &c in &counts {
                    mine.push(&ids[off..off + c as usize]);
                    off += c as usize;
                }
                let samples: Vec<Vec<u32>> = mine.iter().map(|m| sample_of(m, &needed)).collect();
                let order: Vec<u64> = (mine.iter().zip(&samples))
                    .flat_map(|(m, s)| s.iter().map(|&l| m[l as usize]))
                    .collect();
                let to_grid = onto_samples(w.to_grid.clone(), &order, w.num_nodes)
                    .ok_or_else(|| "a mesh node the grid reads is owned by no rank".to_string());
                let parts = (mine.iter().zip(samples))
                    .map(|(m, sample)| {
                        let part = to_grid.as_ref().map(|_| RankPart {
                            grid: w.grid,
                            mask: w.mask.clone(),
                            mesh_nodes: w.mesh_nodes,
                            mesh_covered: w.mesh_covered,
                            stencils: for_rank(&w.to_mesh, m, w.num_nodes, |s| &mut s.node),
                            cubic: for_rank(&w.cubic, m, w.num_nodes, |s| &mut s.node),
                            probe: for_rank(&w.probe, m, w.num_nodes, |s| &mut s.node),
                            probe_cubic: for_rank(&w.probe_cubic, m, w.num_nodes, |s| &mut s.node),
                            sample,
                        });
                        crate::comm::to_bytes(&part.map_err(Clone::clone))
                    })
                    .collect();
                (Some(parts), to_grid.ok())
            }
            _ => (None, None),
        };
        // Every rank gets its part or rank 0's error, so that all return together.
        let mine = comm.scatter_bytes(parts);
        let p: Result<RankPart, String> =
            bincode::deserialize(&mine).map_err(|e| TransferError::Ranks(e.to_string()))?;
        let p = p.map_err(TransferError::Ranks)?;
        let to_grid = whole.unwrap_or_default();
        Ok(ZoneTransfer {
            grid: p.grid,
            to_grid,
            to_mesh: p.stencils,
            cubic: p.cubic,
            num_nodes: no,
            mask: p.mask,
            mesh_nodes: p.mesh_nodes,
            mesh_covered: p.mesh_covered,
            sample: Some(p.sample),
            probe: p.probe,
            probe_cubic: p.probe_cubic,
        })
    }

    pub fn grid(&self) -> &ZoneGrid {
        &self.grid
    }

    /// Grid points (`nx · ny`): the length of a grid field.
    pub fn points(&self) -> usize {
        self.mask.len()
    }

    /// Per grid point, whether it lies in the mesh (`false`: masked).
    pub fn inside(&self) -> impl Iterator<Item = bool> + '_ {
        self.mask.iter().copied()
    }

    /// [`ZoneTransfer::inside`] collected.
    pub fn mask(&self) -> Vec<bool> {
        self.mask.clone()
    }

    /// Mesh nodes that [`ZoneTransfer::to_mesh`] writes (on this rank).
    pub fn covered_nodes(&self) -> usize {
        self.to_mesh.len() + self.cubic.len()
    }

    /// Of [`ZoneTransfer::covered_nodes`], those interpolated by cubic stencils.
    pub fn cubic_nodes(&self) -> usize {
        self.cubic.len()
    }

    /// The length of a mesh field this transfer takes (this rank's owned nodes on a
    /// decomposed mesh).
    pub fn field_len(&self) -> usize {
        self.num_nodes
    }

    /// Whether the grid covers every node of the whole mesh (all ranks together).
    pub fn covers_mesh(&self) -> bool {
        self.mesh_covered == self.mesh_nodes
    }

    /// The whole mesh's nodes and how many of them the grid covers.
    pub fn mesh_coverage(&self) -> (usize, usize) {
        (self.mesh_covered, self.mesh_nodes)
    }

    /// The FE field `u` (one value per mesh node) at the grid points; masked points get 0.
    /// A transfer of a decomposed mesh takes [`ZoneTransfer::to_grid_on`].
    pub fn to_grid(&self, u: &[f64], out: &mut [f64]) -> Result<(), TransferError> {
        if self.sample.is_some() {
            return Err(TransferError::Ranks(
                "a transfer of a decomposed mesh maps to the grid collectively (to_grid_on)".into(),
            ));
        }
        self.check_len("mesh field", self.num_nodes, u.len())?;
        self.check_len("grid field", self.to_grid.len(), out.len())?;
        for (o, s) in out.iter_mut().zip(&self.to_grid) {
            *o = s.as_ref().map_or(0.0, |s| s.interpolate(u));
        }
        Ok(())
    }

    /// [`ZoneTransfer::to_grid`] of a field spread over the ranks of `comm` (this rank's owned
    /// values; collective): the grid on every rank, the serial map's bits.
    pub fn to_grid_on(
        &self,
        u: &[f64],
        out: &mut [f64],
        comm: &dyn Comm,
    ) -> Result<(), TransferError> {
        let Some(sample) = &self.sample else {
            return self.to_grid(u, out);
        };
        self.check_len("mesh field", self.num_nodes, u.len())?;
        self.check_len("grid field", self.mask.len(), out.len())?;
        let mine: Vec<f64> = sample.iter().map(|&l| u[l as usize]).collect();
        let mut bytes = Vec::new();
        // The same weights on the same values in the same order as on the whole field: the
        // serial map's bits.
        if let Some(g) = comm.gather_f64(&mine) {
            for (o, s) in out.iter_mut().zip(&self.to_grid) {
                *o = s.as_ref().map_or(0.0, |s| s.interpolate(&g));
            }
            bytes = crate::comm::to_bytes(&*out);
        }
        comm.broadcast_bytes(&mut bytes);
        if comm.rank() != 0 {
            let g: Vec<f64> =
                bincode::deserialize(&bytes).map_err(|e| TransferError::Ranks(e.to_string()))?;
            self.check_len("grid field from rank 0", out.len(), g.len())?;
            out.copy_from_slice(&g);
        }
        Ok(())
    }

    /// Writes the grid field `g` into `u` at the mesh nodes the grid covers; the other nodes
    /// keep their values.
    pub fn to_mesh(&self, g: &[f64], u: &mut [f64]) -> Result<(), TransferError> {
        self.check_len("grid field", self.mask.len(), g.len())?;
        self.check_len("mesh field", self.num_nodes, u.len())?;
        apply(&self.to_mesh, &self.cubic, self.grid.nx, &[g], vec![u]);
        Ok(())
    }

    /// [`ZoneTransfer::to_mesh`] of two grid fields at once (a hand-back's displacement and
    /// velocity): one pass over the stencils, the same values.
    pub fn to_mesh_pair(
        &self,
        g: [&[f64]; 2],
        [u, v]: [&mut [f64]; 2],
    ) -> Result<(), TransferError> {
        for (f, m) in g.iter().zip([&*u, &*v]) {
            self.check_len("grid field", self.mask.len(), f.len())?;
            self.check_len("mesh field", self.num_nodes, m.len())?;
        }
        apply(&self.to_mesh, &self.cubic, self.grid.nx, &g, vec![u, v]);
        Ok(())
    }

    /// What a hand-back of the grid field `g` loses of the mesh field `u` (this rank's owned
    /// values), at a fixed sample of the covered nodes (about 2¹⁴ of the whole mesh's, the
    /// same ones on any number of ranks): per sampled node `(u − P g)²` and `u²`, `P` the
    /// grid → mesh map. Summed over the ranks they give ‖u − P g‖ / ‖u‖ on the sample; for
    /// `g` the frame of `u` itself, what the grid does not hold of `u`.
    pub fn handback_terms(
        &self,
        u: &[f64],
        g: &[f64],
    ) -> Result<(Vec<f64>, Vec<f64>), TransferError> {
        self.check_len("grid field", self.mask.len(), g.len())?;
        self.check_len("mesh field", self.num_nodes, u.len())?;
        let value = |node: u32, b: f64| {
            let v = u[node as usize];
            ((v - b) * (v - b), v * v)
        };
        let bilinear = self.probe.iter().map(|s| value(s.node, s.value(g)));
        let nx = self.grid.nx;
        let cubic = self
            .probe_cubic
            .iter()
            .map(|s| value(s.node, s.value(nx, g)));
        Ok(bilinear.chain(cubic).unzip())
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
