//! The grid ↔ mesh passes as a run uses them: grid → mesh over blocks of nodes in parallel,
//! a hand-back's two fields in one pass, and mesh → grid on a distributed transfer reading
//! only the nodes the grid's stencils need — each the same bits as the plain pass.

use crate::coupling::{max_diff, nodal, on_grid, unit};
use std::path::Path;
use wavecp::comm::Serial;
use wavecp::coupling::transfer::{Interpolation, ZoneGrid, ZoneTransfer};
use wavecp::mesh::{read_msh, rectangle, CellShape, Mesh};
use wavecp::partition::Layout;

fn bicubic(x: f64, y: f64) -> f64 {
    1.0 - x + 2.0 * y * y - 3.0 * x.powi(3) * y.powi(3) + 0.5 * x * x * y + y.powi(3)
}

/// Every node of a mesh of several parallel blocks (16 384 nodes each) is written, and
/// written right: the cubic pass is exact on a bicubic field at all 60 501 nodes.
#[test]
fn grid_to_mesh_writes_every_block() {
    let mesh = rectangle(CellShape::Quad, 300, 200, [0.0, 1.0], [0.0, 1.0]).unwrap();
    assert!(mesh.num_nodes() > 3 * (1 << 14), "{}", mesh.num_nodes());
    let g = unit(11);
    let t = ZoneTransfer::with_interpolation(&mesh, g, Interpolation::Cubic).unwrap();
    let mut back = vec![f64::NAN; mesh.num_nodes()];
    t.to_mesh(&on_grid(&g, bicubic), &mut back).unwrap();
    let err = max_diff(&back, &nodal(&mesh, bicubic));
    assert!(err < 1e-12, "{err}");
    assert!(back.iter().all(|v| v.is_finite()));
}

/// `to_mesh_pair` is `to_mesh` twice, bit for bit, with cubic and bilinear stencils mixed (the
/// L-shaped mesh: bilinear next to the masked quadrant) and on a mesh of several blocks.
#[test]
fn a_pair_of_fields_in_one_pass_is_two_passes() {
    let l = read_msh(Path::new("meshes/lshape.msh")).unwrap();
    let lg = ZoneGrid {
        x: [0.0, 2.0],
        y: [0.0, 2.0],
        nx: 41,
        ny: 41,
    };
    let big = rectangle(CellShape::Tri, 250, 200, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let cases: [(&Mesh, ZoneGrid, Interpolation); 3] = [
        (&l, lg, Interpolation::Cubic),
        (&big, unit(16), Interpolation::Cubic),
        (&big, unit(16), Interpolation::Bilinear),
    ];
    for (mesh, g, interp) in cases {
        let t = ZoneTransfer::with_interpolation(mesh, g, interp).unwrap();
        let a = on_grid(&g, |x, y| (3.0 * x).sin() * (2.0 * y).cos());
        let b = on_grid(&g, |x, y| x * x - y + 0.25);
        // Nodes the grid does not write keep what the fields held.
        let start: Vec<f64> = (0..mesh.num_nodes()).map(|i| i as f64).collect();
        let (mut u1, mut v1) = (start.clone(), start.clone());
        t.to_mesh(&a, &mut u1).unwrap();
        t.to_mesh(&b, &mut v1).unwrap();
        let (mut u2, mut v2) = (start.clone(), start);
        t.to_mesh_pair([&a, &b], [&mut u2, &mut v2]).unwrap();
        let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&u1),
            bits(&u2),
            "{interp:?}, {} nodes",
            mesh.num_nodes()
        );
        assert_eq!(
            bits(&v1),
            bits(&v2),
            "{interp:?}, {} nodes",
            mesh.num_nodes()
        );
        // A wrong length is refused, naming the field.
        let e = t
            .to_mesh_pair([&a, &b[1..]], [&mut u2, &mut v2])
            .unwrap_err();
        assert!(e.to_string().contains("grid field"), "{e}");
    }
}

/// A distributed transfer (here over one rank) maps mesh → grid from the few nodes its
/// stencils read, with the bits of the whole transfer's map.
#[test]
fn a_distributed_mesh_to_grid_reads_only_what_the_grid_needs() {
    let mesh = rectangle(CellShape::Tri, 120, 90, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let g = unit(16);
    let whole = ZoneTransfer::with_interpolation(&mesh, g, Interpolation::Cubic).unwrap();
    let u = nodal(&mesh, |x, y| (4.0 * x).sin() + y * y * x);
    let mut expected = vec![0.0; g.nx * g.ny];
    whole.to_grid(&u, &mut expected).unwrap();
    let layout = Layout::serial(mesh.num_nodes());
    let d = ZoneTransfer::distribute(Some(whole), &layout, &Serial).unwrap();
    let mut got = vec![f64::NAN; g.nx * g.ny];
    d.to_grid_on(&u, &mut got, &Serial).unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // The plain map is refused on a distributed transfer (it has no whole field).
    assert!(d.to_grid(&u, &mut got).is_err());
}
