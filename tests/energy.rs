//! Energy: conserved to round-off without damping; decreasing and mostly absorbed with absorbing
//! sides; and the stability limit from the power iteration is the real one.

use crate::common::{problem, pulse_solver, repo, square};
use wavecp::mesh::{read_msh, CellShape};
use wavecp::solver::{BoundaryKind, SolverError, WaveSolver};
use wavecp::sources::TimeFunction;

fn max_drift(s: &mut WaveSolver, steps: usize) -> f64 {
    let e0 = s.energy();
    let mut worst: f64 = 0.0;
    for _ in 0..steps {
        s.step();
        worst = worst.max((s.energy() - e0).abs() / e0);
    }
    worst
}

/// Relative drift over 1000 steps must stay below 1e-10 (the scheme conserves the discrete
/// energy exactly; only round-off remains, measured ≈ 1e-14).
#[test]
fn energy_is_conserved_with_neumann_and_dirichlet() {
    for shape in [CellShape::Quad, CellShape::Tri] {
        for side in [
            None,
            Some(BoundaryKind::Neumann),
            Some(BoundaryKind::Dirichlet(TimeFunction::Constant(0.0))),
        ] {
            let p = square(shape, 40, 1.0, side);
            let mut s = pulse_solver(&p, 0.95, [0.4, 0.55], 0.1);
            let d = max_drift(&mut s, 1000);
            eprintln!("{shape:?} {side:?}: max relative drift {d:.2e}");
            assert!(d < 1e-10, "{shape:?} {side:?}: energy drift {d:.3e}");
        }
    }
}

#[test]
fn energy_is_conserved_on_the_mixed_gmsh_mesh_with_two_speeds() {
    let mut mesh = read_msh(&repo("meshes/lshape.msh")).unwrap();
    mesh.boundary.clear();
    let mut p = problem(mesh, 1.0, None);
    let ntri = p.mesh.tris.len();
    // Triangles twice as fast as quads: a discontinuous coefficient.
    p.speed = wavecp::fem::WaveSpeed::PerCell(
        (0..p.mesh.num_cells())
            .map(|e| if e < ntri { 2.0 } else { 1.0 })
            .collect(),
    );
    let mut s = pulse_solver(&p, 0.95, [0.5, 0.5], 0.15);
    let d = max_drift(&mut s, 1000);
    assert!(d < 1e-10, "energy drift {d:.3e}");
}

/// Pulse at the centre of the unit square, c = 1, run to t = 1.6 (the pulse has crossed every side).
fn remaining_energy(side: BoundaryKind) -> (Vec<f64>, f64) {
    let p = square(CellShape::Quad, 100, 1.0, Some(side));
    let mut s = pulse_solver(&p, 0.9, [0.5, 0.5], 0.05);
    let e0 = s.energy();
    let mut hist = vec![e0];
    while s.time() < 1.6 {
        s.step();
        hist.push(s.energy());
    }
    (hist, e0)
}

/// With absorbing sides the energy never increases, falls strictly once the pulse arrives, and
/// what is left at t = 1.6 (reflections only) is a small fraction; with Neumann sides all of it
/// stays. Measured: absorbing keeps ≈ 0.04 % of the initial energy, Neumann 100 %.
#[test]
fn absorbing_boundary_removes_energy_and_reflects_little() {
    let (abs, e0) = remaining_energy(BoundaryKind::Absorbing);
    for w in abs.windows(2) {
        assert!(
            w[1] <= w[0] * (1.0 + 1e-13),
            "energy increased: {} -> {}",
            w[0],
            w[1]
        );
    }
    // The pulse (width 0.05) reaches the sides at t ≈ 0.35; from 0.5 to 1.0 energy must fall
    // strictly at every step.
    let dt = 1.6 / (abs.len() - 1) as f64;
    let (a, b) = ((0.5 / dt) as usize, (1.0 / dt) as usize);
    for w in abs[a..b].windows(2) {
        assert!(
            w[1] < w[0],
            "energy not strictly decreasing while the pulse leaves"
        );
    }
    let left_abs = abs.last().unwrap() / e0;
    let (neu, e0n) = remaining_energy(BoundaryKind::Neumann);
    let left_neu = neu.last().unwrap() / e0n;
    eprintln!("energy left at t = 1.6: absorbing {left_abs:.4}, Neumann {left_neu:.4}");
    assert!(
        left_abs < 0.01,
        "absorbing boundary leaves {left_abs:.3} of the energy"
    );
    assert!(
        (left_neu - 1.0).abs() < 1e-10,
        "Neumann boundary changed the energy: {left_neu}"
    );
    assert!(left_abs < 0.05 * left_neu);
}

/// The limit 2/sqrt(λ_max) from the power iteration is real: 2 % below it the energy stays
/// bounded; 2 % above it the solution grows without bound (on a structured and on an
/// unstructured mixed mesh, with absorbing boundaries present).
#[test]
fn stability_limit_is_sharp() {
    let structured = square(CellShape::Tri, 30, 1.0, Some(BoundaryKind::Absorbing));
    let mut gmsh = problem(read_msh(&repo("meshes/lshape.msh")).unwrap(), 1.0, None);
    gmsh.boundaries = vec![(11, BoundaryKind::Absorbing)];
    for p in [structured, gmsh] {
        let run = |frac: f64| {
            let mut s = WaveSolver::new(&p).unwrap();
            let dt = frac * s.dt_limit();
            s.set_dt_unchecked(dt);
            let n = p.mesh.num_nodes();
            let u0: Vec<f64> = (0..n)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            s.set_initial(&u0, &vec![0.0; n]).unwrap();
            for _ in 0..3000 {
                s.step();
            }
            s.u()
                .iter()
                .map(|v| {
                    if v.is_finite() {
                        v.abs()
                    } else {
                        f64::INFINITY
                    }
                })
                .fold(0.0, f64::max)
        };
        let below = run(0.98);
        let above = run(1.02);
        eprintln!("max |u| after 3000 steps: 0.98 × limit {below:.3e}, 1.02 × limit {above:.3e}");
        assert!(
            below < 10.0,
            "unstable below the computed limit: max |u| = {below}"
        );
        assert!(
            above > 1e6 || !above.is_finite(),
            "stable above the computed limit: max |u| = {above}"
        );
    }
}

#[test]
fn a_time_step_above_the_limit_is_refused_with_the_limit_in_the_message() {
    let p = square(CellShape::Quad, 20, 1.0, None);
    let mut s = WaveSolver::new(&p).unwrap();
    let limit = s.dt_limit();
    let err = s.set_dt(1.5 * limit).unwrap_err();
    assert!(matches!(err, SolverError::Unstable { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{limit:.6e}")),
        "message does not state the limit: {msg}"
    );
    assert!(s.set_dt(0.99 * limit).is_ok());
    assert!(matches!(s.set_dt(f64::NAN), Err(SolverError::BadDt(_))));
    // Uniform Q1 grid, lumped mass: the symbol of K/M is (8/3 − 2/3 (cos θx + cos θy)
    // − 4/3 cos θx cos θy) c²/h², largest (4 c²/h²) at θ = (π, 0), so dt_limit → h for a large
    // grid (the Neumann sides of this 20 × 20 grid shift it by a little).
    let h = 1.0 / 20.0;
    assert!((limit - h).abs() / h < 0.01, "limit {limit} vs h = {h}");
}
