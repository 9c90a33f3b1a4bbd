//! A submesh cut from a mesh: the cells inside a rectangle, numbered in the outer mesh's order,
//! with a new `interface` boundary where the cut crosses the outer mesh.

use super::{BoundaryEdge, Mesh, MeshError};
use std::collections::{BTreeMap, HashMap};

/// The name of the boundary a cut opens (tag: one past the outer mesh's largest boundary tag).
pub const INTERFACE: &str = "interface";

/// Cells of an outer mesh inside a zone, as a mesh of their own.
#[derive(Debug, Clone)]
pub struct Submesh {
    /// The cut: cells in the outer order (triangles, then quads), nodes renumbered in
    /// increasing outer number, outer boundary edges kept with their tags, and the edges the cut
    /// opens tagged [`Submesh::interface_tag`].
    pub mesh: Mesh,
    /// Outer node number of each submesh node (increasing).
    pub outer_node: Vec<u32>,
    /// Outer cell number (triangles, then quads) of each submesh cell.
    pub outer_cell: Vec<u32>,
    pub interface_tag: i32,
}

impl Submesh {
    /// The cells whose nodes all lie in `[x0, x1] × [y0, y1]` (closed, to a relative
    /// `1e-9` of the zone's size, so a zone on mesh lines keeps the cells along them).
    ///
    /// Keeping the outer order of cells and nodes is what makes the submodel's sums the outer
    /// model's sums, term for term: a node inside the cut has all its cells in it, so its mass,
    /// stiffness row and update are the same bits.
    pub fn cut(outer: &Mesh, x: [f64; 2], y: [f64; 2]) -> Result<Submesh, MeshError> {
        if !(x[0] < x[1] && y[0] < y[1]) {
            return Err(MeshError::Generate(format!(
                "empty zone x = {x:?}, y = {y:?}"
            )));
        }
        let tol = 1e-9 * (x[1] - x[0]).max(y[1] - y[0]);
        let inside: Vec<bool> = outer
            .coords
            .iter()
            .map(|p| {
                p[0] >= x[0] - tol && p[0] <= x[1] + tol && p[1] >= y[0] - tol && p[1] <= y[1] + tol
            })
            .collect();
        let keep = |cell: &[u32]| cell.iter().all(|v| inside[*v as usize]);
        let mut used = vec![false; outer.num_nodes()];
        let mut outer_cell = Vec::new();
        for (c, cell) in outer
            .tris
            .iter()
            .map(|t| &t[..])
            .chain(outer.quads.iter().map(|q| &q[..]))
            .enumerate()
        {
            if keep(cell) {
                outer_cell.push(c as u32);
                for v in cell {
                    used[*v as usize] = true;
                }
            }
        }
        if outer_cell.is_empty() {
            return Err(MeshError::Generate(format!(
                "no cell of the mesh lies inside the zone x = {x:?}, y = {y:?} (a zone must hold whole cells)"
            )));
        }
        let mut new_id = vec![u32::MAX; outer.num_nodes()];
        let mut outer_node = Vec::new();
        for (v, u) in used.iter().enumerate() {
            if *u {
                new_id[v] = outer_node.len() as u32;
                outer_node.push(v as u32);
            }
        }
        let mut mesh = Mesh {
            coords: outer_node
                .iter()
                .map(|v| outer.coords[*v as usize])
                .collect(),
            names: outer.names.clone(),
            ..Mesh::default()
        };
        let renum =
            |cell: &[u32]| -> Vec<u32> { cell.iter().map(|v| new_id[*v as usize]).collect() };
        let nt = outer.tris.len() as u32;
        for c in &outer_cell {
            if *c < nt {
                let t = renum(&outer.tris[*c as usize]);
                mesh.tris.push([t[0], t[1], t[2]]);
                mesh.tri_tags.push(outer.tri_tags[*c as usize]);
            } else {
                let i = (*c - nt) as usize;
                let q = renum(&outer.quads[i]);
                mesh.quads.push([q[0], q[1], q[2], q[3]]);
                mesh.quad_tags.push(outer.quad_tags[i]);
            }
        }
        let interface_tag = outer
            .boundary
            .iter()
            .map(|e| e.tag)
            .max()
            .unwrap_or(0)
            .max(0)
            + 1;
        mesh.boundary = cut_boundary(outer, &mesh, &new_id, interface_tag);
        mesh.names.insert((1, interface_tag), INTERFACE.into());
        // Tags whose edges all fell outside the cut no longer name anything in it.
        let present: std::collections::BTreeSet<i32> =
            mesh.boundary.iter().map(|e| e.tag).collect();
        mesh.names
            .retain(|(d, t), _| *d != 1 || present.contains(t));
        Ok(Submesh {
            mesh,
            outer_node,
            outer_cell,
            interface_tag,
        })
    }

    /// Submesh nodes on the interface (the edges the cut opened), in increasing number.
    pub fn interface_nodes(&self) -> Vec<u32> {
        let mut on = vec![false; self.mesh.num_nodes()];
        for e in self
            .mesh
            .boundary
            .iter()
            .filter(|e| e.tag == self.interface_tag)
        {
            on[e.nodes[0] as usize] = true;
            on[e.nodes[1] as usize] = true;
        }
        (0..on.len() as u32).filter(|v| on[*v as usize]).collect()
    }
}

/// Boundary edges of the cut: the outer boundary edges it holds, with their tags, then the
/// edges of exactly one cut cell that were not on the outer boundary, tagged `interface`.
fn cut_boundary(outer: &Mesh, cut: &Mesh, new_id: &[u32], interface: i32) -> Vec<BoundaryEdge> {
    let key = |a: u32, b: u32| (a.min(b), a.max(b));
    let mut count: BTreeMap<(u32, u32), (u32, [u32; 2])> = BTreeMap::new();
    let cells = cut
        .tris
        .iter()
        .map(|t| &t[..])
        .chain(cut.quads.iter().map(|q| &q[..]));
    for cell in cells {
        for k in 0..cell.len() {
            let (a, b) = (cell[k], cell[(k + 1) % cell.len()]);
            count.entry(key(a, b)).or_insert((0, [a, b])).0 += 1;
        }
    }
    let mut outer_edges: HashMap<(u32, u32), i32> = HashMap::new();
    let mut edges = Vec::new();
    for e in &outer.boundary {
        let (a, b) = (new_id[e.nodes[0] as usize], new_id[e.nodes[1] as usize]);
        if a != u32::MAX && b != u32::MAX && count.get(&key(a, b)).is_some_and(|c| c.0 == 1) {
            outer_edges.insert(key(a, b), e.tag);
            edges.push(BoundaryEdge {
                nodes: [a, b],
                tag: e.tag,
            });
        }
    }
    for (k, (n, nodes)) in &count {
        if *n == 1 && !outer_edges.contains_key(k) {
            edges.push(BoundaryEdge {
                nodes: *nodes,
                tag: interface,
            });
        }
    }
    edges
}
