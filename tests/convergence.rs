//! Convergence of the standing mode `u = cos(√2 π c t) sin(πx) sin(πy)` with `u = 0` on the boundary.
//!
//! Lumped mass + central differences with `dt ∝ h` are second order in space and time, so the L2
//! error at a fixed time must fall like h². Measured here (h = 1/8 … 1/64, t = 0.6, c = 1):
//! triangles ≈ 2.00, quads ≈ 2.00 (least-squares slope; the test accepts 1.9 – 2.1).

use crate::common::{rate, square};
use std::f64::consts::PI;
use wavecp::fem::l2_error;
use wavecp::mesh::CellShape;
use wavecp::solver::{BoundaryKind, WaveSolver};
use wavecp::sources::TimeFunction;

fn mode_error(shape: CellShape, n: usize) -> f64 {
    let c = 1.0;
    let t_end = 0.6;
    let p = square(
        shape,
        n,
        c,
        Some(BoundaryKind::Dirichlet(TimeFunction::Constant(0.0))),
    );
    let mut s = WaveSolver::new(&p).unwrap();
    // dt ∝ h, well inside the stability limit; a whole number of steps lands on t_end.
    let h = 1.0 / n as f64;
    let steps = (t_end / (0.25 * h)).ceil() as usize;
    s.set_dt(t_end / steps as f64).unwrap();
    let u0: Vec<f64> = p
        .mesh
        .coords
        .iter()
        .map(|x| (PI * x[0]).sin() * (PI * x[1]).sin())
        .collect();
    s.set_initial(&u0, &vec![0.0; u0.len()]).unwrap();
    for _ in 0..steps {
        s.step();
    }
    let w = (2.0f64).sqrt() * PI * c;
    l2_error(&p.mesh, s.u(), |x| {
        (w * t_end).cos() * (PI * x[0]).sin() * (PI * x[1]).sin()
    })
}

fn check(shape: CellShape) {
    let ns = [8, 16, 32, 64];
    let h: Vec<f64> = ns.iter().map(|n| 1.0 / *n as f64).collect();
    let e: Vec<f64> = ns.iter().map(|n| mode_error(shape, *n)).collect();
    let r = rate(&h, &e);
    eprintln!("{shape:?}: errors {e:?}, rate {r:.3}");
    assert!(
        (1.9..=2.1).contains(&r),
        "{shape:?}: L2 convergence rate {r:.3} (errors {e:?}), expected ≈ 2"
    );
    // Each refinement must gain close to a factor 4.
    for w in e.windows(2) {
        assert!(
            w[0] / w[1] > 3.5,
            "{shape:?}: error ratio {:.2} under refinement",
            w[0] / w[1]
        );
    }
}

#[test]
fn triangles_converge_at_second_order() {
    check(CellShape::Tri);
}

#[test]
fn quads_converge_at_second_order() {
    check(CellShape::Quad);
}

/// The same mode started from rest displacement and a velocity, `u = sin(√2πt)/(√2π) sin πx sin πy`:
/// checks the second-order start `u⁻¹ = u⁰ − dt v⁰ + dt²/2 a⁰` through the convergence rate.
#[test]
fn initial_velocity_converges_at_second_order() {
    let w = (2.0f64).sqrt() * PI;
    let t_end = 0.6;
    let err = |n: usize| {
        let p = square(
            CellShape::Quad,
            n,
            1.0,
            Some(BoundaryKind::Dirichlet(TimeFunction::Constant(0.0))),
        );
        let mut s = WaveSolver::new(&p).unwrap();
        let steps = (t_end / (0.25 / n as f64)).ceil() as usize;
        s.set_dt(t_end / steps as f64).unwrap();
        let v0: Vec<f64> = p
            .mesh
            .coords
            .iter()
            .map(|x| (PI * x[0]).sin() * (PI * x[1]).sin())
            .collect();
        s.set_initial(&vec![0.0; v0.len()], &v0).unwrap();
        for _ in 0..steps {
            s.step();
        }
        l2_error(&p.mesh, s.u(), |x| {
            (w * t_end).sin() / w * (PI * x[0]).sin() * (PI * x[1]).sin()
        })
    };
    let e: Vec<f64> = [8, 16, 32].iter().map(|n| err(*n)).collect();
    let r = rate(&[1.0 / 8.0, 1.0 / 16.0, 1.0 / 32.0], &e);
    eprintln!("initial velocity: errors {e:?}, rate {r:.3}");
    assert!((1.9..=2.1).contains(&r), "rate {r} (errors {e:?})");
}
