//! Domain decomposition: cells split into one part per rank (METIS, or recursive coordinate
//! bisection), and each part's local problem with its ghost layer and neighbour lists.
//!
//! Ownership: a cell belongs to the part METIS gives it; a node belongs to the lowest part among
//! its cells. A rank keeps every cell that touches a node it owns (its own cells and a one-cell
//! ghost layer), so it can compute whole rows of the stiffness, mass and damping for its nodes,
//! summed in the same cell order as the serial code: the field is bitwise the same for any
//! number of ranks. Per step a rank sends the new values of its interface nodes to the ranks
//! that hold them as ghosts.
//!
//! Local node numbering: `[owned nodes that some neighbour needs | other owned nodes | ghosts]`,
//! each block in ascending global order, so the first block can be computed and sent before the
//! second is computed (overlap), and owned values are one contiguous slice.

use crate::fem::WaveSpeed;
use crate::mesh::{BoundaryEdge, Mesh, PointLocation};
use crate::sources::PointSource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How cells are split between ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMethod {
    /// METIS k-way on the dual graph (cells sharing a node), the default.
    #[default]
    Metis,
    /// Recursive coordinate bisection of cell centroids.
    Rcb,
}

/// Errors of partitioning.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot split {cells} cells over {parts} ranks: use at most {cells} ranks")]
    TooManyParts { parts: usize, cells: usize },
    #[error("METIS could not split the mesh into {parts} parts ({msg}); try `solver.partition = \"rcb\"`")]
    Metis { parts: usize, msg: String },
    #[error("partition {method:?} left rank {part} without cells ({cells} cells, {parts} ranks); use fewer ranks or `solver.partition = \"rcb\"`")]
    EmptyPart {
        method: PartitionMethod,
        part: usize,
        cells: usize,
        parts: usize,
    },
}

/// The part of cell `c` (output order: triangles, then quads) for every cell.
pub fn partition_cells(
    mesh: &Mesh,
    parts: usize,
    method: PartitionMethod,
) -> Result<Vec<u32>, PartitionError> {
    let nc = mesh.num_cells();
    if parts > nc || parts == 0 {
        return Err(PartitionError::TooManyParts { parts, cells: nc });
    }
    if parts == 1 {
        return Ok(vec![0; nc]);
    }
    let part = match method {
        PartitionMethod::Metis => metis_parts(mesh, parts)?,
        PartitionMethod::Rcb => rcb_parts(mesh, parts),
    };
    let mut count = vec![0usize; parts];
    for &p in &part {
        count[p as usize] += 1;
    }
    if let Some(empty) = count.iter().position(|&c| c == 0) {
        return Err(PartitionError::EmptyPart {
            method,
            part: empty,
            cells: nc,
            parts,
        });
    }
    Ok(part)
}

fn cell_nodes(mesh: &Mesh, c: usize) -> &[u32] {
    let nt = mesh.tris.len();
    if c < nt {
        &mesh.tris[c]
    } else {
        &mesh.quads[c - nt]
    }
}

fn metis_parts(mesh: &Mesh, parts: usize) -> Result<Vec<u32>, PartitionError> {
    let nc = mesh.num_cells();
    let mut eptr: Vec<metis::Idx> = Vec::with_capacity(nc + 1);
    let mut eind: Vec<metis::Idx> = Vec::with_capacity(4 * nc);
    eptr.push(0);
    for c in 0..nc {
        eind.extend(cell_nodes(mesh, c).iter().map(|&v| v as metis::Idx));
        eptr.push(eind.len() as metis::Idx);
    }
    let err = |e: &dyn std::fmt::Display| PartitionError::Metis {
        parts,
        msg: e.to_string(),
    };
    let mut epart = vec![0 as metis::Idx; nc];
    let mut npart = vec![0 as metis::Idx; mesh.num_nodes()];
    metis::Mesh::new(parts as metis::Idx, &eptr, &eind)
        .map_err(|e| err(&e))?
        .set_option(metis::option::Seed(7))
        .part_dual(&mut epart, &mut npart)
        .map_err(|e| err(&e))?;
    Ok(epart.into_iter().map(|p| p as u32).collect())
}

fn rcb_parts(mesh: &Mesh, parts: usize) -> Vec<u32> {
    let centroid = |c: usize| {
        let nodes = cell_nodes(mesh, c);
        let mut s = [0.0, 0.0];
        for &v in nodes {
            s[0] += mesh.coords[v as usize][0];
            s[1] += mesh.coords[v as usize][1];
        }
        [s[0] / nodes.len() as f64, s[1] / nodes.len() as f64]
    };
    let cents: Vec<[f64; 2]> = (0..mesh.num_cells()).map(centroid).collect();
    let mut part = vec![0u32; cents.len()];
    let mut ids: Vec<usize> = (0..cents.len()).collect();
    fn split(ids: &mut [usize], cents: &[[f64; 2]], first: u32, n: usize, part: &mut [u32]) {
        if n == 1 {
            for &i in ids.iter() {
                part[i] = first;
            }
            return;
        }
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for &i in ids.iter() {
            for d in 0..2 {
                lo[d] = lo[d].min(cents[i][d]);
                hi[d] = hi[d].max(cents[i][d]);
            }
        }
        let axis = usize::from(hi[1] - lo[1] > hi[0] - lo[0]);
        ids.sort_by(|&a, &b| cents[a][axis].total_cmp(&cents[b][axis]).then(a.cmp(&b)));
        let left = n / 2;
        let cut = ids.len() * left / n;
        let (l, r) = ids.split_at_mut(cut);
        split(l, cents, first, left, part);
        split(r, cents, first + left as u32, n - left, part);
    }
    split(&mut ids, &cents, 0, parts, &mut part);
    part
}

/// What one rank needs to run its part: the local mesh with its ghost layer, how local nodes map
/// to global ones, the neighbour lists, and the part's sources, receivers and initial state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalPart {
    pub rank: usize,
    pub mesh: Mesh,
    pub speed: WaveSpeed,
    pub layout: Layout,
    pub sources: Vec<PointSource>,
    /// `(receiver index in the job, stencil in local nodes)` for the receivers this rank records.
    pub receivers: Vec<(usize, PointLocation)>,
    pub u0: Vec<f64>,
    pub v0: Vec<f64>,
    /// Cells this rank owns (METIS part), for the work balance report.
    pub owned_cells: usize,
}

/// Local numbering and neighbour lists of one part; the trivial one for a serial run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Layout {
    /// Global index of every local node.
    pub global: Vec<u64>,
    /// Owned nodes that some neighbour holds as ghosts: local `0..n_send`.
    pub n_send: usize,
    /// All owned nodes: local `0..n_owned`; ghosts are `n_owned..`.
    pub n_owned: usize,
    /// Neighbour ranks, ascending.
    pub neighbours: Vec<u32>,
    /// Per neighbour: local indices of the owned nodes it needs, in ascending global order.
    pub send: Vec<Vec<u32>>,
    /// Per neighbour: local indices of the ghosts it owns, in ascending global order.
    pub recv: Vec<Vec<u32>>,
}

impl Layout {
    /// One rank owns everything.
    pub fn serial(n: usize) -> Self {
        Layout {
            global: (0..n as u64).collect(),
            n_send: 0,
            n_owned: n,
            ..Default::default()
        }
    }

    pub fn is_serial(&self) -> bool {
        self.neighbours.is_empty() && self.n_owned == self.global.len()
    }

    /// Local index of global node `g`, if this part holds it.
    pub fn local_of(&self, g: u64) -> Option<u32> {
        let blocks = [
            0..self.n_send,
            self.n_send..self.n_owned,
            self.n_owned..self.global.len(),
        ];
        blocks.into_iter().find_map(|b| {
            let s = &self.global[b.clone()];
            s.binary_search(&g).ok().map(|k| (b.start + k) as u32)
        })
    }

    /// Values exchanged per step by this rank (sent + received).
    pub fn halo_values(&self) -> (usize, usize) {
        (
            self.send.iter().map(Vec::len).sum(),
            self.recv.iter().map(Vec::len).sum(),
        )
    }
}

/// Node → incident cells in CSR form.
fn node_cells(mesh: &Mesh) -> (Vec<u32>, Vec<u32>) {
    let n = mesh.num_nodes();
    let mut ptr = vec![0u32; n + 1];
    for c in 0..mesh.num_cells() {
        for &v in cell_nodes(mesh, c) {
            ptr[v as usize + 1] += 1;
        }
    }
    for i in 0..n {
        ptr[i + 1] += ptr[i];
    }
    let mut fill = ptr.clone();
    let mut cells = vec![0u32; ptr[n] as usize];
    for c in 0..mesh.num_cells() {
        for &v in cell_nodes(mesh, c) {
            cells[fill[v as usize] as usize] = c as u32;
            fill[v as usize] += 1;
        }
    }
    (ptr, cells)
}

/// The global problem pieces a part is cut from.
pub struct GlobalPieces<'a> {
    pub mesh: &'a Mesh,
    pub speed: &'a WaveSpeed,
    pub sources: &'a [PointSource],
    pub receivers: &'a [PointLocation],
    pub u0: &'a [f64],
    pub v0: &'a [f64],
}

/// How the global problem is cut: each node's owner, each part's cells and nodes, and the
/// ghost lists between parts.
struct Cut<'a> {
    g: &'a GlobalPieces<'a>,
    /// Owner of a node: the lowest part among its cells (orphan nodes go to part 0).
    owner: Vec<u32>,
    /// Local cells of each part: every cell touching a node it owns, in global cell order.
    cells_of: Vec<Vec<u32>>,
    /// Local nodes of each part, ascending.
    nodes_of: Vec<Vec<u64>>,
    /// `send_to[p][q]`: global ids `p` sends to `q`; `recv_from[q][p]` the same list.
    send_to: Vec<BTreeMap<u32, Vec<u64>>>,
    recv_from: Vec<BTreeMap<u32, Vec<u64>>>,
    /// Cells each part owns (by `cell_part`).
    ncells_owned: Vec<usize>,
}

impl<'a> Cut<'a> {
    fn new(g: &'a GlobalPieces<'a>, cell_part: &[u32], parts: usize) -> Self {
        let mesh = g.mesh;
        let n = mesh.num_nodes();
        let (ptr, inc) = node_cells(mesh);
        let owner: Vec<u32> = (0..n)
            .map(|v| {
                inc[ptr[v] as usize..ptr[v + 1] as usize]
                    .iter()
                    .map(|&c| cell_part[c as usize])
                    .min()
                    .unwrap_or(0)
            })
            .collect();
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(inc.len());
        for v in 0..n {
            for &c in &inc[ptr[v] as usize..ptr[v + 1] as usize] {
                pairs.push((owner[v], c));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut cells_of: Vec<Vec<u32>> = vec![Vec::new(); parts];
        for (p, c) in pairs {
            cells_of[p as usize].push(c);
        }
        let mut nodes_of: Vec<Vec<u64>> = Vec::with_capacity(parts);
        for (p, cells) in cells_of.iter().enumerate() {
            let mut v: Vec<u64> = cells
                .iter()
                .flat_map(|&c| cell_nodes(mesh, c as usize).iter().map(|&x| x as u64))
                .collect();
            // Orphan nodes (in no cell) stay with part 0 so global vectors stay complete.
            if p == 0 {
                v.extend((0..n).filter(|&i| ptr[i] == ptr[i + 1]).map(|i| i as u64));
            }
            v.sort_unstable();
            v.dedup();
            nodes_of.push(v);
        }
        let mut recv_from: Vec<BTreeMap<u32, Vec<u64>>> = vec![Default::default(); parts];
        let mut send_to: Vec<BTreeMap<u32, Vec<u64>>> = vec![Default::default(); parts];
        for (q, nodes) in nodes_of.iter().enumerate() {
            for &gid in nodes {
                let o = owner[gid as usize];
                if o as usize != q {
                    recv_from[q].entry(o).or_default().push(gid);
                    send_to[o as usize].entry(q as u32).or_default().push(gid);
                }
            }
        }
        let mut ncells_owned = vec![0usize; parts];
        for &p in cell_part {
            ncells_owned[p as usize] += 1;
        }
        Cut {
            g,
            owner,
            cells_of,
            nodes_of,
            send_to,
            recv_from,
            ncells_owned,
        }
    }

    /// Part `p`'s numbering: owned nodes that neighbours need first, then the other owned
    /// nodes, then the ghosts; and its neighbour lists.
    fn layout(&self, p: usize) -> Layout {
        let (nodes, owner) = (&self.nodes_of[p], &self.owner);
        let mut is_send = std::collections::HashSet::new();
        for list in self.send_to[p].values() {
            is_send.extend(list.iter().copied());
        }
        let mut global: Vec<u64> = nodes
            .iter()
            .copied()
            .filter(|g| owner[*g as usize] as usize == p && is_send.contains(g))
            .collect();
        let n_send = global.len();
        global.extend(
            nodes
                .iter()
                .copied()
                .filter(|g| owner[*g as usize] as usize == p && !is_send.contains(g)),
        );
        let n_owned = global.len();
        global.extend(
            nodes
                .iter()
                .copied()
                .filter(|g| owner[*g as usize] as usize != p),
        );
        let mut layout = Layout {
            global,
            n_send,
            n_owned,
            ..Default::default()
        };
        let to_local = |list: &[u64], l: &Layout| -> Vec<u32> {
            list.iter()
                .map(|g| l.local_of(*g).expect("listed node is local"))
                .collect()
        };
        let (send_to, recv_from) = (&self.send_to[p], &self.recv_from[p]);
        let mut neighbours: Vec<u32> = send_to.keys().chain(recv_from.keys()).copied().collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        let lists = |m: &BTreeMap<u32, Vec<u64>>, l: &Layout| -> Vec<Vec<u32>> {
            neighbours
                .iter()
                .map(|q| m.get(q).map_or(Vec::new(), |list| to_local(list, l)))
                .collect()
        };
        let send = lists(send_to, &layout);
        let recv = lists(recv_from, &layout);
        layout.neighbours = neighbours;
        layout.send = send;
        layout.recv = recv;
        layout
    }

    /// Part `p`'s mesh (cells in global order, triangles first, renumbered; the boundary
    /// edges at its owned nodes) and the speeds of its cells when the speed is per cell.
    fn local_mesh(&self, p: usize, layout: &Layout) -> (Mesh, Vec<f64>) {
        let (mesh, g) = (self.g.mesh, self.g);
        let loc = |g: u32| layout.local_of(g as u64).expect("cell node is local");
        let nt = mesh.tris.len();
        let mut lm = Mesh {
            coords: layout
                .global
                .iter()
                .map(|&g| mesh.coords[g as usize])
                .collect(),
            names: mesh.names.clone(),
            ..Default::default()
        };
        let mut cell_speed = Vec::new();
        for &c in &self.cells_of[p] {
            let c = c as usize;
            if c < nt {
                lm.tris.push(mesh.tris[c].map(loc));
                lm.tri_tags.push(mesh.tri_tags[c]);
            } else {
                lm.quads.push(mesh.quads[c - nt].map(loc));
                lm.quad_tags.push(mesh.quad_tags[c - nt]);
            }
            if let WaveSpeed::PerCell(v) = g.speed {
                cell_speed.push(v[c]);
            }
        }
        lm.boundary = mesh
            .boundary
            .iter()
            .filter(|e| {
                e.nodes
                    .iter()
                    .any(|&v| self.owner[v as usize] as usize == p)
            })
            .filter_map(|e| {
                Some(BoundaryEdge {
                    nodes: [
                        layout.local_of(e.nodes[0] as u64)?,
                        layout.local_of(e.nodes[1] as u64)?,
                    ],
                    tag: e.tag,
                })
            })
            .collect();
        (lm, cell_speed)
    }

    /// Part `p`, everything in its local numbering.
    fn part(&self, p: usize) -> LocalPart {
        let g = self.g;
        let layout = self.layout(p);
        let (mesh, cell_speed) = self.local_mesh(p, &layout);
        let speed = match g.speed {
            WaveSpeed::PerCell(_) => WaveSpeed::PerCell(cell_speed),
            WaveSpeed::Nodal(v) => {
                WaveSpeed::Nodal(layout.global.iter().map(|&i| v[i as usize]).collect())
            }
        };
        let sources = g
            .sources
            .iter()
            .map(|s| PointSource {
                location: restrict(&s.location, &layout),
                wavelet: s.wavelet,
            })
            .collect();
        let receivers = g
            .receivers
            .iter()
            .enumerate()
            .filter(|(_, r)| r.len > 0 && self.owner[r.nodes[0] as usize] as usize == p)
            .map(|(i, r)| (i, restrict(r, &layout)))
            .collect();
        let pick =
            |v: &[f64]| -> Vec<f64> { layout.global.iter().map(|&i| v[i as usize]).collect() };
        LocalPart {
            rank: p,
            u0: pick(g.u0),
            v0: pick(g.v0),
            mesh,
            speed,
            sources,
            receivers,
            owned_cells: self.ncells_owned[p],
            layout,
        }
    }
}

/// Cuts the global problem into one [`LocalPart`] per part (run on rank 0 before distribution).
pub fn build_parts(g: &GlobalPieces, cell_part: &[u32], parts: usize) -> Vec<LocalPart> {
    let cut = Cut::new(g, cell_part, parts);
    (0..parts).map(|p| cut.part(p)).collect()
}

/// A stencil in local numbering, keeping the nodes this part holds (in their original order).
/// The solver applies sources to owned rows only; a receiver is only given to the owner of its
/// first node, which holds the whole cell, so nothing is dropped for it.
fn restrict(loc: &PointLocation, l: &Layout) -> PointLocation {
    let mut out = PointLocation {
        nodes: [0; 4],
        weights: [0.0; 4],
        len: 0,
    };
    for k in 0..loc.len {
        if let Some(i) = l.local_of(loc.nodes[k] as u64) {
            out.nodes[out.len] = i;
            out.weights[out.len] = loc.weights[k];
            out.len += 1;
        }
    }
    out
}
