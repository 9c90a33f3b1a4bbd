//! Solver details: nodal wave speeds, time-dependent Dirichlet data, the two stiffness operators
//! agreeing, and NaN detection.

use crate::common::{pulse_solver, square};
use wavecp::fem::WaveSpeed;
use wavecp::mesh::CellShape;
use wavecp::solver::{BoundaryKind, OperatorKind, SolverError, WaveSolver};
use wavecp::sources::TimeFunction;

/// A nodal speed field that is constant must reproduce the per-cell constant run to round-off;
/// a varying one must still conserve energy.
#[test]
fn nodal_wave_speed_matches_per_cell_and_conserves_energy() {
    let mut a = square(CellShape::Tri, 30, 1.5, None);
    let mut s1 = pulse_solver(&a, 0.9, [0.5, 0.5], 0.1);
    a.speed = WaveSpeed::Nodal(vec![1.5; a.mesh.num_nodes()]);
    let mut s2 = pulse_solver(&a, 0.9, [0.5, 0.5], 0.1);
    assert!((s1.dt() - s2.dt()).abs() < 1e-15);
    for _ in 0..200 {
        s1.step();
        s2.step();
    }
    let d = s1
        .u()
        .iter()
        .zip(s2.u())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-12, "nodal constant speed differs by {d}");
    a.speed = WaveSpeed::Nodal(a.mesh.coords.iter().map(|p| 1.0 + p[0] * p[1]).collect());
    let mut s = pulse_solver(&a, 0.95, [0.3, 0.6], 0.1);
    let e0 = s.energy();
    for _ in 0..500 {
        s.step();
    }
    assert!((s.energy() - e0).abs() / e0 < 1e-10);
}

#[test]
fn time_dependent_dirichlet_values_are_imposed_at_every_step() {
    let g = TimeFunction::Sine {
        amplitude: 0.3,
        frequency: 2.0,
    };
    let mut p = square(CellShape::Quad, 20, 1.0, Some(BoundaryKind::Neumann));
    p.boundaries = vec![
        (4, BoundaryKind::Dirichlet(g)),
        (2, BoundaryKind::Absorbing),
    ];
    let left: Vec<usize> = (0..p.mesh.num_nodes())
        .filter(|i| p.mesh.coords[*i][0] == 0.0)
        .collect();
    let mut s = WaveSolver::new(&p).unwrap();
    s.set_dt(0.9 * s.dt_limit()).unwrap();
    let z = vec![0.0; p.mesh.num_nodes()];
    s.set_initial(&z, &z).unwrap();
    for _ in 0..100 {
        s.step();
        for &i in &left {
            assert_eq!(s.u()[i], g.eval(s.time()));
        }
    }
    // The wave entered the domain.
    let mid = p.mesh.locate([0.3, 0.5]).unwrap().interpolate(s.u());
    assert!(
        mid.abs() > 1e-3,
        "nothing propagated from the Dirichlet side: {mid}"
    );
}

/// CSR and element-by-element are two evaluations of the same K: same trajectory to round-off.
#[test]
fn csr_and_element_by_element_agree() {
    let mut p = square(CellShape::Quad, 25, 1.0, Some(BoundaryKind::Absorbing));
    let mut a = pulse_solver(&p, 0.9, [0.4, 0.4], 0.1);
    p.operator = OperatorKind::Ebe;
    let mut b = pulse_solver(&p, 0.9, [0.4, 0.4], 0.1);
    for _ in 0..300 {
        a.step();
        b.step();
    }
    let d = a
        .u()
        .iter()
        .zip(b.u())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-12, "operators differ by {d}");
    assert!((a.lambda_max() - b.lambda_max()).abs() < 1e-9 * a.lambda_max());
}

#[test]
fn a_blow_up_is_reported_with_its_step() {
    let p = square(CellShape::Quad, 10, 1.0, None);
    let mut s = WaveSolver::new(&p).unwrap();
    s.set_dt_unchecked(3.0 * s.dt_limit());
    let n = p.mesh.num_nodes();
    s.set_initial(
        &(0..n).map(|i| (i % 3) as f64).collect::<Vec<_>>(),
        &vec![0.0; n],
    )
    .unwrap();
    let mut failed = None;
    for _ in 0..5000 {
        s.step();
        if let Err(e) = s.check_finite() {
            failed = Some(e);
            break;
        }
    }
    match failed {
        Some(SolverError::NonFinite { step, .. }) => assert!(step > 0),
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
}

#[test]
fn bad_speeds_and_shapes_are_errors() {
    let mut p = square(CellShape::Quad, 4, 1.0, None);
    p.speed = WaveSpeed::PerCell(vec![1.0; 3]);
    assert!(matches!(
        WaveSolver::new(&p),
        Err(SolverError::Shape { .. })
    ));
    p.speed = WaveSpeed::PerCell(vec![-1.0; 16]);
    assert!(matches!(WaveSolver::new(&p), Err(SolverError::BadSpeed(_))));
    p.speed = WaveSpeed::PerCell(vec![1.0; 16]);
    let mut s = WaveSolver::new(&p).unwrap();
    s.set_dt(0.5 * s.dt_limit()).unwrap();
    assert!(matches!(
        s.set_initial(&[0.0; 3], &[0.0; 3]),
        Err(SolverError::Shape { .. })
    ));
}

/// Dirichlet values given node by node each step (`DirichletNodal`, what a submodel or a
/// coupled code will use) from the same analytic g(t) as the `Dirichlet(g)` path: bitwise the
/// same field after 200 steps, starting values included; wrong lengths and NaN are errors.
#[test]
fn node_by_node_dirichlet_values_equal_the_time_function_path_bitwise() {
    let g = TimeFunction::Ricker {
        amplitude: 0.5,
        frequency: 3.0,
        delay: 0.1,
    };
    let make = |left: BoundaryKind| {
        let mut p = square(CellShape::Tri, 16, 1.0, Some(BoundaryKind::Neumann));
        p.boundaries = vec![(4, left), (2, BoundaryKind::Absorbing)];
        let mut s = WaveSolver::new(&p).unwrap();
        s.set_dt(0.9 * s.dt_limit()).unwrap();
        (p, s)
    };
    let (p, mut a) = make(BoundaryKind::Dirichlet(g));
    let (_, mut b) = make(BoundaryKind::DirichletNodal);
    let rows = b.nodal_dirichlet_rows().to_vec();
    let on_left = (0..p.mesh.num_nodes())
        .filter(|&i| p.mesh.coords[i][0] == 0.0)
        .count();
    assert_eq!(rows.len(), on_left, "one slot per node of the left side");
    // A bump away from the boundary, so the interior moves from the start.
    let u0: Vec<f64> = p
        .mesh
        .coords
        .iter()
        .map(|q| (-((q[0] - 0.6).powi(2) + (q[1] - 0.5).powi(2)) / 0.01).exp())
        .collect();
    let v0 = vec![0.0; u0.len()];
    let dt = b.dt();
    let at = |t: f64| vec![g.eval(t); rows.len()];
    b.set_nodal_dirichlet_start(&at(0.0), &at(-dt)).unwrap();
    a.set_initial(&u0, &v0).unwrap();
    b.set_initial(&u0, &v0).unwrap();
    let bits = |s: &WaveSolver| s.u().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    for n in 1..=200 {
        // The value at the new time level, computed as the solver computes t_next.
        b.set_nodal_dirichlet(&at(n as f64 * dt)).unwrap();
        a.step();
        b.step();
        assert_eq!(bits(&a), bits(&b), "step {n}");
    }
    assert!(a.u().iter().any(|v| *v != 0.0));
    // Each node takes its own value, in the order of nodal_dirichlet_rows.
    let own: Vec<f64> = rows.iter().map(|&r| p.mesh.coords[r as usize][1]).collect();
    b.set_nodal_dirichlet(&own).unwrap();
    b.step();
    for (k, &r) in rows.iter().enumerate() {
        assert_eq!(b.u()[r as usize], own[k], "row {r}");
    }
    let e = b.set_nodal_dirichlet(&[0.0]).unwrap_err().to_string();
    assert!(e.contains(&format!("expected {}", rows.len())), "{e}");
    let mut nan = at(0.0);
    nan[0] = f64::NAN;
    assert!(b.set_nodal_dirichlet(&nan).is_err());
}
