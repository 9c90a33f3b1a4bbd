//! The cubic grid → mesh interpolation: exact on bicubic polynomials (edges included, where the
//! stencil shifts inward), fourth-order on a smooth field against the bilinear's second, and
//! the bilinear fallback next to masked grid points.

use crate::coupling::{max_diff, nodal, on_grid, unit};
use std::path::Path;
use wavecp::coupling::transfer::{Interpolation, ZoneGrid, ZoneTransfer};
use wavecp::mesh::{read_msh, rectangle, CellShape, Mesh};

fn cubic(mesh: &Mesh, g: ZoneGrid) -> ZoneTransfer {
    ZoneTransfer::with_interpolation(mesh, g, Interpolation::Cubic).unwrap()
}

#[test]
fn cubic_grid_to_mesh_is_exact_on_bicubic_polynomials() {
    let f = |x: f64, y: f64| {
        1.0 - x + 2.0 * y * y - 3.0 * x.powi(3) * y.powi(3) + 0.5 * x * x * y + y.powi(3)
    };
    let mesh = rectangle(CellShape::Tri, 41, 37, [0.0, 1.0], [0.0, 1.0]).unwrap();
    for n in [4, 5, 11] {
        let g = unit(n);
        let t = cubic(&mesh, g);
        assert_eq!(t.cubic_nodes(), mesh.num_nodes(), "{n} x {n}");
        let mut back = vec![f64::NAN; mesh.num_nodes()];
        t.to_mesh(&on_grid(&g, f), &mut back).unwrap();
        let err = max_diff(&back, &nodal(&mesh, f));
        assert!(err < 1e-12, "{n} x {n}: {err}");
        // The bilinear one is not (the field is not bilinear).
        let b = ZoneTransfer::new(&mesh, g).unwrap();
        b.to_mesh(&on_grid(&g, f), &mut back).unwrap();
        assert!(max_diff(&back, &nodal(&mesh, f)) > 1e-3);
    }
}

#[test]
fn cubic_grid_to_mesh_converges_at_fourth_order() {
    let f = |x: f64, y: f64| (std::f64::consts::PI * x).sin() * (2.0 * y).cos();
    let mesh = rectangle(CellShape::Tri, 250, 250, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let u = nodal(&mesh, f);
    let (mut errs, mut bilinear) = (vec![], vec![]);
    for n in [9, 17, 33, 65] {
        let g = unit(n);
        let mut back = vec![0.0; mesh.num_nodes()];
        cubic(&mesh, g).to_mesh(&on_grid(&g, f), &mut back).unwrap();
        errs.push(max_diff(&back, &u));
        ZoneTransfer::new(&mesh, g)
            .unwrap()
            .to_mesh(&on_grid(&g, f), &mut back)
            .unwrap();
        bilinear.push(max_diff(&back, &u));
    }
    eprintln!("max error grid -> mesh, cubic {errs:?}, bilinear {bilinear:?} (grids 9..65)");
    for w in errs.windows(2) {
        let rate = (w[0] / w[1]).log2();
        assert!(
            (3.7..4.4).contains(&rate),
            "errors {errs:?}: rate {rate} per halving"
        );
    }
    // At the 16 × 16 network's spacing the cubic is an order of magnitude closer.
    assert!(errs[1] * 10.0 < bilinear[1], "{errs:?} vs {bilinear:?}");
}

#[test]
fn cubic_falls_back_to_bilinear_next_to_masked_points() {
    // The L of meshes/lshape.msh: [0, 2]² without [1, 2] × (1, 2]. On 41 points the grid lines
    // follow the re-entrant edges; nodes whose 4 × 4 block reaches into the missing quadrant
    // interpolate bilinearly, the rest cubically, and all of them are written.
    let mesh = read_msh(Path::new("meshes/lshape.msh")).unwrap();
    let g = ZoneGrid {
        x: [0.0, 2.0],
        y: [0.0, 2.0],
        nx: 41,
        ny: 41,
    };
    let t = cubic(&mesh, g);
    assert_eq!(t.covered_nodes(), mesh.num_nodes());
    let near_corner = mesh
        .coords
        .iter()
        .filter(|p| p[0] > 0.95 && p[1] > 0.95)
        .count();
    assert!(t.cubic_nodes() > 0 && t.cubic_nodes() + near_corner >= mesh.num_nodes());
    assert!(t.cubic_nodes() < mesh.num_nodes());
    // A linear field: both interpolants reproduce it, masked points (0 on the grid) never
    // reach a node.
    let linear = |x: f64, y: f64| 0.5 + x - 2.0 * y;
    let mut grid = vec![0.0; 41 * 41];
    t.to_grid(&nodal(&mesh, linear), &mut grid).unwrap();
    let mut back = vec![f64::NAN; mesh.num_nodes()];
    t.to_mesh(&grid, &mut back).unwrap();
    let err = max_diff(&back, &nodal(&mesh, linear));
    assert!(err < 1e-9, "{err}");
}

#[test]
fn interpolation_names_parse() {
    assert_eq!("cubic".parse::<Interpolation>(), Ok(Interpolation::Cubic));
    assert_eq!(
        "bilinear".parse::<Interpolation>(),
        Ok(Interpolation::Bilinear)
    );
    let e = "spline".parse::<Interpolation>().unwrap_err();
    assert!(e.contains("bilinear") && e.contains("cubic"), "{e}");
}
