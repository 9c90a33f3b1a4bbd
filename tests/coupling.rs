//! The pieces of the coming hybrid stepping. The mesh ↔ zone-grid transfers: exactness on the
//! fields each interpolant reproduces, second-order convergence on a smooth field, masking
//! outside a non-rectangular mesh, clear errors. The hand-back of a forecast to the FE solver:
//! its error against the uninterrupted run, at the order of the velocity estimate.

use crate::common::{pulse_solver, square};
use std::path::Path;
use wavecp::coupling::handback::VelocityEstimate;
use wavecp::coupling::transfer::{TransferError, ZoneGrid, ZoneTransfer};
use wavecp::mesh::{read_msh, rectangle, CellShape, Mesh};
use wavecp::sim::Simulation;
use wavecp::solver::BoundaryKind;

fn unit(n: usize) -> ZoneGrid {
    ZoneGrid {
        x: [0.0, 1.0],
        y: [0.0, 1.0],
        nx: n,
        ny: n,
    }
}

fn nodal(mesh: &Mesh, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    mesh.coords.iter().map(|p| f(p[0], p[1])).collect()
}

fn on_grid(g: &ZoneGrid, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    (0..g.ny)
        .flat_map(|j| (0..g.nx).map(move |i| (i, j)))
        .map(|(i, j)| {
            let p = g.point(i, j);
            f(p[0], p[1])
        })
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn transfers_reproduce_the_fields_their_interpolants_hold() {
    // Q1 mesh: bilinear fields both ways; P1 mesh: linear ones (a grid not aligned with the
    // mesh, so the points fall inside cells).
    let bilinear = |x: f64, y: f64| 1.0 + 2.0 * x - 3.0 * y + 0.5 * x * y;
    let linear = |x: f64, y: f64| 1.0 + 2.0 * x - 3.0 * y;
    for (shape, f) in [
        (CellShape::Quad, &bilinear as &dyn Fn(f64, f64) -> f64),
        (CellShape::Tri, &linear),
    ] {
        let mesh = rectangle(shape, 37, 29, [0.0, 1.0], [0.0, 1.0]).unwrap();
        let g = unit(23);
        let t = ZoneTransfer::new(&mesh, g).unwrap();
        assert!(t.mask().iter().all(|&m| m));
        assert_eq!(t.covered_nodes(), mesh.num_nodes());
        let u = nodal(&mesh, f);
        let mut grid = vec![0.0; 23 * 23];
        t.to_grid(&u, &mut grid).unwrap();
        assert!(
            max_diff(&grid, &on_grid(&g, f)) < 1e-12,
            "{shape:?} mesh -> grid"
        );
        let mut back = vec![f64::NAN; mesh.num_nodes()];
        t.to_mesh(&on_grid(&g, f), &mut back).unwrap();
        assert!(max_diff(&back, &u) < 1e-12, "{shape:?} grid -> mesh");
    }
}

#[test]
fn grid_to_mesh_and_the_round_trip_converge_at_second_order() {
    let f = |x: f64, y: f64| (std::f64::consts::PI * x).sin() * (2.0 * y).cos();
    let mesh = rectangle(CellShape::Tri, 250, 250, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let u = nodal(&mesh, f);
    let (mut to_mesh, mut round) = (vec![], vec![]);
    for n in [9, 17, 33, 65] {
        let g = unit(n);
        let t = ZoneTransfer::new(&mesh, g).unwrap();
        let mut back = vec![0.0; mesh.num_nodes()];
        t.to_mesh(&on_grid(&g, f), &mut back).unwrap();
        to_mesh.push(max_diff(&back, &u));
        let mut grid = vec![0.0; n * n];
        t.to_grid(&u, &mut grid).unwrap();
        t.to_mesh(&grid, &mut back).unwrap();
        round.push(max_diff(&back, &u));
    }
    eprintln!("max error grid -> mesh {to_mesh:?}, round trip {round:?} (grids 9..65)");
    for errs in [&to_mesh, &round] {
        for w in errs.windows(2) {
            let rate = (w[0] / w[1]).log2();
            assert!(
                (1.8..2.3).contains(&rate),
                "errors {errs:?}: rate {rate} per halving of the grid spacing"
            );
        }
    }
    // Mesh -> grid, in the mesh spacing: P1 meshes of 30, 60, 120 cells a side (never
    // aligned with the 17 x 17 grid).
    let g = unit(17);
    let mut to_grid = vec![];
    for n in [30, 60, 120] {
        let mesh = rectangle(CellShape::Tri, n, n, [0.0, 1.0], [0.0, 1.0]).unwrap();
        let t = ZoneTransfer::new(&mesh, g).unwrap();
        let mut grid = vec![0.0; 17 * 17];
        t.to_grid(&nodal(&mesh, f), &mut grid).unwrap();
        to_grid.push(max_diff(&grid, &on_grid(&g, f)));
    }
    eprintln!("max error mesh -> grid {to_grid:?} (P1 meshes 30..120)");
    for w in to_grid.windows(2) {
        let rate = (w[0] / w[1]).log2();
        assert!(
            (1.7..2.3).contains(&rate),
            "mesh -> grid errors {to_grid:?}"
        );
    }
    // The grid of the paper's network (64 × 64 over the zone) on a smooth field of one
    // wavelength: a round trip costs well under 1 % of the field's amplitude.
    assert!(round[3] < 2e-3, "round trip at 65 x 65: {}", round[3]);
}

#[test]
fn grid_points_outside_a_non_rectangular_mesh_are_masked() {
    // The L of meshes/lshape.msh: [0, 2]² without [1, 2] × (1, 2].
    let mesh = read_msh(Path::new("meshes/lshape.msh")).unwrap();
    let linear = |x: f64, y: f64| 0.5 + x - 2.0 * y;
    let u = nodal(&mesh, linear);
    // 41 points: grid lines on the re-entrant edges x = 1 and y = 1, so no grid cell around
    // a node of the L has a corner outside it; 40 points: cells straddle the edges, and the
    // nodes there interpolate from the corners inside only.
    for n in [41, 40] {
        let g = ZoneGrid {
            x: [0.0, 2.0],
            y: [0.0, 2.0],
            nx: n,
            ny: n,
        };
        let t = ZoneTransfer::new(&mesh, g).unwrap();
        let mask = t.mask();
        let outside = mask.iter().filter(|&&m| !m).count();
        assert_eq!(outside, 400, "{n} x {n}: points in the missing quadrant");
        let mut grid = vec![f64::NAN; mask.len()];
        t.to_grid(&u, &mut grid).unwrap();
        let want = on_grid(&g, linear);
        for (k, (&m, (&got, &w))) in mask.iter().zip(grid.iter().zip(&want)).enumerate() {
            if m {
                assert!((got - w).abs() < 1e-9, "point {k}: {got} vs {w}");
            } else {
                assert_eq!(got, 0.0, "masked point {k}");
            }
        }
        assert_eq!(t.covered_nodes(), mesh.num_nodes());
        let mut back = vec![f64::NAN; mesh.num_nodes()];
        t.to_mesh(&grid, &mut back).unwrap();
        let err = max_diff(&back, &u);
        let h = 2.0 / (n - 1) as f64;
        eprintln!("L-shape, {n} x {n} grid: {outside} points masked; a linear field back on the mesh: max error {err:.3e} (h = {h:.4})");
        if n == 41 {
            assert!(err < 1e-9, "{err}");
        } else {
            // Renormalised bilinear weights: off by at most the gradient (√5) times h.
            assert!(err > 1e-6 && err < 5f64.sqrt() * h, "{err}");
        }
    }
}

#[test]
fn bad_grids_and_lengths_are_errors() {
    let mesh = rectangle(CellShape::Quad, 8, 8, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let zone = |x: [f64; 2], nx: usize| ZoneGrid {
        x,
        y: [0.0, 1.0],
        nx,
        ny: 4,
    };
    assert!(matches!(
        ZoneTransfer::new(&mesh, zone([0.0, 1.0], 1)),
        Err(TransferError::Grid(_))
    ));
    assert!(matches!(
        ZoneTransfer::new(&mesh, zone([1.0, 1.0], 4)),
        Err(TransferError::Grid(_))
    ));
    assert!(matches!(
        ZoneTransfer::new(&mesh, zone([2.0, 3.0], 4)),
        Err(TransferError::NoOverlap)
    ));
    let t = ZoneTransfer::new(&mesh, zone([0.0, 1.0], 4)).unwrap();
    let mut grid = vec![0.0; 16];
    let e = t.to_grid(&[0.0; 5], &mut grid).unwrap_err();
    assert!(e.to_string().contains("81"), "{e}");
    assert!(t.to_mesh(&[0.0; 15], &mut [0.0; 81]).is_err());
}

fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (d / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

#[test]
fn a_handed_back_field_continues_the_fe_run_at_the_order_of_its_velocity_estimate() {
    // A Gaussian pulse in a square with absorbing sides. The FE run's own frames stand in for
    // a perfect forecast at step n: what is measured is the hand-back alone (field plus a
    // velocity from frames `stride` steps apart, Taylor start), m steps later.
    let p = square(CellShape::Quad, 64, 1.0, Some(BoundaryKind::Absorbing));
    let solver = || pulse_solver(&p, 0.5, [0.5, 0.5], 0.3);
    let (n, m) = (40, 20);
    let mut reference = Simulation::serial(solver()).unwrap();
    let dt = reference.dt();
    reference.advance(n - 16);
    let mut frames = vec![reference.u().to_vec()];
    for _ in 0..16 {
        reference.advance(1);
        frames.push(reference.u().to_vec());
    }
    reference.advance(m);
    let want = reference.u().to_vec();
    let mut by_est = vec![];
    for est in [VelocityEstimate::TwoFrames, VelocityEstimate::Bdf2] {
        let mut errs = vec![];
        for stride in [8, 4, 2, 1] {
            let picked: Vec<&[f64]> = (0..est.frames())
                .rev()
                .map(|k| frames[16 - k * stride].as_slice())
                .collect();
            let v = est.velocity(&picked, stride as f64 * dt).unwrap();
            let mut sim = Simulation::serial(solver()).unwrap();
            sim.start_from(&frames[16], &v, n).unwrap();
            assert_eq!(sim.steps_done(), n);
            assert_eq!(sim.time().to_bits(), (n as f64 * dt).to_bits());
            sim.advance(m);
            errs.push(rel_l2(sim.u(), &want));
        }
        eprintln!("hand-back {est:?} (dt = {dt:.4e}): relative L2 error {m} steps later, frames 8, 4, 2, 1 steps apart: {errs:?}");
        // The order shows between frame spacings 8, 4 and 2; at 1 the Taylor start's own
        // O(dt²) error is of the same size.
        let (lo, hi) = match est {
            VelocityEstimate::TwoFrames => (0.8, 1.2),
            VelocityEstimate::Bdf2 => (1.7, 2.4),
        };
        for w in errs[..3].windows(2) {
            let rate = (w[0] / w[1]).log2();
            assert!((lo..hi).contains(&rate), "{est:?}: errors {errs:?}");
        }
        by_est.push(errs);
    }
    for (two, bdf2) in by_est[0].iter().zip(&by_est[1]) {
        assert!(bdf2 * 2.5 < *two, "BDF2 {bdf2} against two frames {two}");
    }
    // Too few frames, or frames of different lengths, give no estimate; bad input to the
    // solver is an error.
    let one = [frames[0].as_slice()];
    assert!(VelocityEstimate::Bdf2.velocity(&one, dt).is_none());
    let short = [frames[0].as_slice(), &frames[1][..5]];
    assert!(VelocityEstimate::TwoFrames.velocity(&short, dt).is_none());
    let mut sim = Simulation::serial(solver()).unwrap();
    assert!(sim.start_from(&frames[0][..5], &frames[0], 3).is_err());
    let mut nan = frames[0].clone();
    nan[7] = f64::NAN;
    assert!(sim.start_from(&nan, &frames[0], 3).is_err());
}
