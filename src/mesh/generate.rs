//! Structured rectangle meshes (quads or triangles) with named, tagged sides.

use super::{BoundaryEdge, Mesh, MeshError};
use serde::{Deserialize, Serialize};

/// Cell shape of a generated mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellShape {
    Quad,
    Tri,
}

/// Tags of the generated rectangle: region 1 `domain`; sides 1 `bottom`, 2 `right`, 3 `top`, 4 `left`.
pub const SIDE_NAMES: [&str; 4] = ["bottom", "right", "top", "left"];

/// `[x0, x1] × [y0, y1]` split into `nx × ny` quads (or `2 nx ny` triangles, each quad cut along
/// alternating diagonals so the mesh has no preferred direction).
pub fn rectangle(
    shape: CellShape,
    nx: usize,
    ny: usize,
    x: [f64; 2],
    y: [f64; 2],
) -> Result<Mesh, MeshError> {
    if nx == 0 || ny == 0 {
        return Err(MeshError::Generate(format!(
            "nx and ny must be at least 1 (got {nx} × {ny})"
        )));
    }
    let increasing = |a: [f64; 2]| a[0] < a[1];
    if !increasing(x) || !increasing(y) {
        return Err(MeshError::Generate(format!(
            "empty rectangle x = {x:?}, y = {y:?}"
        )));
    }
    let n_nodes = (nx + 1).saturating_mul(ny + 1);
    if n_nodes > u32::MAX as usize / 2 {
        return Err(MeshError::Generate(format!("{nx} × {ny} is too large")));
    }
    // A lower bound on what a run holds per node (mesh, CSR operator, solver vectors; the demo
    // holds ≈ 700 B a node), checked here because the generator allocates first.
    crate::limits::check_memory(
        n_nodes as f64 * BYTES_PER_NODE,
        &format!("a {nx} × {ny} mesh and its solver"),
    )
    .map_err(MeshError::Generate)?;
    let id = |i: usize, j: usize| (j * (nx + 1) + i) as u32;
    let mut m = Mesh::default();
    m.coords.reserve(n_nodes);
    for j in 0..=ny {
        for i in 0..=nx {
            let px = x[0] + (x[1] - x[0]) * i as f64 / nx as f64;
            let py = y[0] + (y[1] - y[0]) * j as f64 / ny as f64;
            m.coords.push([px, py]);
        }
    }
    for j in 0..ny {
        for i in 0..nx {
            let (a, b, c, d) = (id(i, j), id(i + 1, j), id(i + 1, j + 1), id(i, j + 1));
            match shape {
                CellShape::Quad => m.quads.push([a, b, c, d]),
                CellShape::Tri if (i + j) % 2 == 0 => {
                    m.tris.push([a, b, c]);
                    m.tris.push([a, c, d]);
                }
                CellShape::Tri => {
                    m.tris.push([a, b, d]);
                    m.tris.push([b, c, d]);
                }
            }
        }
    }
    m.tri_tags = vec![1; m.tris.len()];
    m.quad_tags = vec![1; m.quads.len()];
    for i in 0..nx {
        m.boundary.push(BoundaryEdge {
            nodes: [id(i, 0), id(i + 1, 0)],
            tag: 1,
        });
        m.boundary.push(BoundaryEdge {
            nodes: [id(i + 1, ny), id(i, ny)],
            tag: 3,
        });
    }
    for j in 0..ny {
        m.boundary.push(BoundaryEdge {
            nodes: [id(nx, j), id(nx, j + 1)],
            tag: 2,
        });
        m.boundary.push(BoundaryEdge {
            nodes: [id(0, j + 1), id(0, j)],
            tag: 4,
        });
    }
    m.names.insert((2, 1), "domain".into());
    for (k, name) in SIDE_NAMES.iter().enumerate() {
        m.names.insert((1, k as i32 + 1), (*name).into());
    }
    Ok(m)
}

/// Memory a solve holds per mesh node, roughly (see `rectangle`).
const BYTES_PER_NODE: f64 = 300.0;
