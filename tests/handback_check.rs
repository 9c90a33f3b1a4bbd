//! The hand-back's own loss (`coupling.handback_check`): what handing the FE field to the grid
//! and back loses, measured on a sample of nodes, against the same measured on every node; zero
//! for what the grid holds; and the hybrid rule built on it — a window the indicator trusts is
//! refused when the loss in force (measured where the FE computed the state) reaches the limit.

use crate::common::pulse_solver;
use crate::coupling::hybrid::{cfg, problem, Oracle, Trusting, STRIDE};
use crate::coupling::{nodal, rel_l2, unit};
use wavecp::comm::Serial;
use wavecp::coupling::handback::loss;
use wavecp::coupling::hybrid::{Hybrid, HybridSummary};
use wavecp::coupling::transfer::{Interpolation, ZoneTransfer};
use wavecp::mesh::{rectangle, CellShape};
use wavecp::sim::Simulation;

/// ‖u − P(R u)‖ / ‖u‖ over every node.
fn full_loss(t: &ZoneTransfer, u: &[f64]) -> f64 {
    let mut g = vec![0.0; t.points()];
    t.to_grid(u, &mut g).unwrap();
    let mut back = u.to_vec();
    t.to_mesh(&g, &mut back).unwrap();
    rel_l2(&back, u)
}

#[test]
fn the_sampled_loss_is_the_whole_mesh_s_and_zero_for_what_the_grid_holds() {
    // 201 × 201 nodes: a sample of every third node (the stride keeps about 2^14 of them).
    let mesh = rectangle(CellShape::Quad, 200, 200, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let pi = std::f64::consts::PI;
    let smooth = |x: f64, y: f64| (pi * x).sin() * (2.0 * y).cos();
    let sharp = |x: f64, y: f64| {
        smooth(x, y) + 2.0 * (-((x - 0.41).powi(2) + (y - 0.57).powi(2)) / 0.03f64.powi(2)).exp()
    };
    let mut smooth_losses = vec![];
    for interp in [Interpolation::Bilinear, Interpolation::Cubic] {
        for n in [9, 17, 33] {
            let t = ZoneTransfer::with_interpolation(&mesh, unit(n), interp).unwrap();
            for (name, f) in [
                ("smooth", &smooth as &dyn Fn(f64, f64) -> f64),
                ("sharp", &sharp),
            ] {
                let u = nodal(&mesh, f);
                let mut g = vec![0.0; t.points()];
                t.to_grid(&u, &mut g).unwrap();
                let (sampled, full) = (loss(&t, &u, &g, &Serial).unwrap(), full_loss(&t, &u));
                assert!(
                    (sampled / full - 1.0).abs() < 0.1,
                    "{interp:?} {n} {name}: sampled {sampled:.4e}, every node {full:.4e}"
                );
                if name == "smooth" {
                    smooth_losses.push(sampled);
                } else {
                    // A bump of width 0.03 is below every one of these grids' spacing.
                    let smooth = smooth_losses[smooth_losses.len() - 1];
                    assert!(
                        sampled > 5.0 * smooth,
                        "{interp:?} {n}: {sampled}, {smooth}"
                    );
                }
            }
            // A field the grid holds (any grid field taken to the mesh) loses nothing.
            let h: Vec<f64> = (0..t.points())
                .map(|k| ((k * 37 % 101) as f64).sin())
                .collect();
            let mut u = vec![0.0; mesh.num_nodes()];
            t.to_mesh(&h, &mut u).unwrap();
            assert!(loss(&t, &u, &h, &Serial).unwrap() < 1e-13);
            assert_eq!(loss(&t, &vec![0.0; u.len()], &h, &Serial).unwrap(), 0.0);
            assert!(loss(&t, &u[1..], &h, &Serial).is_err());
            assert!(loss(&t, &u, &h[1..], &Serial).is_err());
        }
    }
    // On the smooth field it falls with the grid's spacing: ≥ 3x a halving bilinear (measured
    // 3.9-4.0), ≥ 8x cubic from 9 to 17 points (9.5; at 33 the mesh's own interpolation,
    // 1/200, is the floor).
    let s = &smooth_losses;
    assert!(
        s[0] / s[1] > 3.0 && s[1] / s[2] > 3.0 && s[3] / s[4] > 8.0,
        "{s:?}"
    );
}

/// A hybrid run of a perfect forecast (every window trusted) of a sharp pulse on a 9 × 9 grid,
/// with the hand-back limit `limit` and at most `cap` windows accepted in a row.
fn run(limit: Option<f64>, cap: usize, grid: usize) -> (HybridSummary, Vec<f64>) {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(grid)).unwrap();
    let last = 4 + 12 * 4;
    let frames = frames_of(&p, &t, last);
    let mut s = start(&p);
    let oracle = Oracle {
        frames,
        t_in: 3,
        t_out: 2,
        calls: 0,
    };
    let mut c = cfg(f64::INFINITY, cap);
    c.handback_limit = limit;
    let mut h = Hybrid::new(&mut s, &t, oracle, Trusting, c).unwrap();
    let sum = h.run(last).unwrap();
    (sum, s.u().to_vec())
}

/// A pulse of width 0.08: sharper than a 9 × 9 grid's spacing.
pub(crate) fn start(p: &wavecp::solver::Problem) -> Simulation<'static> {
    Simulation::serial(pulse_solver(p, 0.5, [0.37, 0.61], 0.08)).unwrap()
}

/// The FE-only run's frames every `STRIDE` steps up to `last`.
pub(crate) fn frames_of(
    p: &wavecp::solver::Problem,
    t: &ZoneTransfer,
    last: usize,
) -> Vec<Vec<f64>> {
    let mut s = start(p);
    let mut frames = vec![];
    loop {
        let mut g = vec![0.0; t.points()];
        t.to_grid(s.u(), &mut g).unwrap();
        frames.push(g);
        if s.steps_done() + STRIDE > last {
            break;
        }
        s.advance(STRIDE);
    }
    frames
}

#[test]
fn a_trusted_window_is_refused_when_the_hand_back_loss_in_force_reaches_the_limit() {
    // No limit, or an infinite one: the same run bit for bit, one loss measured (window 0:
    // every later window starts from a hand-back).
    let (free, u_free) = run(None, 0, 9);
    let (inf, u_inf) = run(Some(f64::INFINITY), 0, 9);
    assert_eq!(free.windows_accepted, 12);
    assert!(free.handback_losses.is_empty() && free.handback_refused == 0);
    assert_eq!(inf.windows, free.windows);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&u_inf), bits(&u_free));
    assert_eq!(inf.handback_losses.len(), 1);
    // The first loss is the FE state's at window 0's start (step 4), measured directly.
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(9)).unwrap();
    let mut s = start(&p);
    s.advance(4);
    let mut g = vec![0.0; t.points()];
    t.to_grid(s.u(), &mut g).unwrap();
    let direct = loss(&t, s.u(), &g, &Serial).unwrap();
    assert_eq!(inf.handback_losses[0], (0, direct));
    assert!(
        direct > 0.05,
        "a pulse of width 0.08 on a 9 x 9 grid: {direct}"
    );
    // The FE every other window: a loss measured at every window that follows an FE window.
    let (alt, _) = run(Some(f64::INFINITY), 1, 9);
    let measured: Vec<f64> = alt.handback_losses.iter().map(|l| l.1).collect();
    assert_eq!(
        alt.handback_losses.iter().map(|l| l.0).collect::<Vec<_>>(),
        (0..12).step_by(2).collect::<Vec<_>>()
    );
    assert!(measured.iter().all(|&l| l > 0.05), "{measured:?}");
    // A limit just above the first loss (the FE-only run's later ones are larger: the ring
    // steepens on the mesh): each window is accepted exactly when the loss in force (the last measured at or
    // before it) is below the limit, and a loss is measured exactly where the FE computed the
    // window's start (the first window, or after an FE window).
    let limit = 1.01 * direct;
    let (h, _) = run(Some(limit), 2, 9);
    let mut in_force = None;
    let mut next = h.handback_losses.iter().peekable();
    for (w, &(score, accepted)) in h.windows.iter().enumerate() {
        let fe_start = w == 0 || !h.windows[w - 1].1;
        if let Some(&&(at, l)) = next.peek() {
            if at == w {
                in_force = Some(l);
                next.next();
            }
        }
        assert_eq!(
            h.handback_losses.iter().any(|l| l.0 == w),
            fe_start,
            "window {w}: {:?}",
            h.handback_losses
        );
        match score {
            // The cap's window (two accepted before it): the FE's, untried.
            None => assert!(!accepted && w >= 2 && h.windows[w - 1].1 && h.windows[w - 2].1),
            Some(s) => {
                assert_eq!(s, 0.0);
                assert_eq!(accepted, in_force.unwrap() < limit, "window {w}");
            }
        }
    }
    let refused = h.windows.iter().filter(|w| w.0.is_some() && !w.1).count();
    assert_eq!(h.handback_refused, refused);
    assert!(
        refused > 0 && h.windows_accepted > 0,
        "{limit}: {:?}",
        h.handback_losses
    );
    // A grid on the mesh's own nodes holds every FE field: nothing is lost, nothing refused.
    let (exact, _) = run(Some(1e-12), 0, 65);
    assert_eq!(exact.windows_accepted, 12);
    assert!(
        exact.handback_losses[0].1 < 1e-14,
        "{:?}",
        exact.handback_losses
    );
}
