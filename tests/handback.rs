//! The central (fourth-order) hand-back: exact on quartics, its order on a wave run, and a
//! hybrid run that hands a forecast back two frames before its end and lets the FE run those.

use crate::coupling::hybrid::{
    self, problem, reference, sim, Oracle, Persistence, Trusting, STRIDE,
};
use crate::coupling::{rel_l2, unit, HandBackCase};
use wavecp::coupling::handback::VelocityEstimate;
use wavecp::coupling::hybrid::{Hybrid, HybridConfig, Residual};
use wavecp::coupling::transfer::ZoneTransfer;

/// `p(t)` at the frames `t = t0 + j·Δ`, two values per frame (a field of two nodes).
fn frames_of(p: impl Fn(f64) -> f64, t0: f64, delta: f64, n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|j| {
            let t = t0 + j as f64 * delta;
            vec![p(t), -2.0 * p(t)]
        })
        .collect()
}

#[test]
fn the_central_difference_is_exact_up_to_quartics_and_fourth_order_beyond() {
    let est = VelocityEstimate::Central4;
    assert_eq!((est.frames(), est.lag()), (5, 2));
    for e in [VelocityEstimate::TwoFrames, VelocityEstimate::Bdf2] {
        assert_eq!(e.lag(), 0);
    }
    let (t0, delta): (f64, f64) = (0.3, 0.125);
    // The velocity is read at the middle frame, t0 + 2Δ.
    let tm = t0 + 2.0 * delta;
    for degree in 0..=4 {
        let p = |t: f64| (t - 0.1).powi(degree) + 0.5 * t;
        let dp = degree as f64 * (tm - 0.1).powi(degree - 1) + 0.5;
        let f = frames_of(p, t0, delta, 5);
        let refs: Vec<&[f64]> = f.iter().map(|x| x.as_slice()).collect();
        let v = est.velocity(&refs, delta).unwrap();
        assert!(
            (v[0] - dp).abs() < 1e-12 * dp.abs().max(1.0),
            "degree {degree}: {v:?} against {dp}"
        );
        assert!(
            (v[1] + 2.0 * dp).abs() < 2e-12 * dp.abs().max(1.0),
            "degree {degree}"
        );
    }
    // sin: the error falls as Δ⁴ (ratio 16 a halving).
    let errs: Vec<f64> = [0.2, 0.1, 0.05]
        .iter()
        .map(|&d| {
            let f = frames_of(f64::sin, 1.0 - 2.0 * d, d, 5);
            let refs: Vec<&[f64]> = f.iter().map(|x| x.as_slice()).collect();
            (est.velocity(&refs, d).unwrap()[0] - 1f64.cos()).abs()
        })
        .collect();
    for w in errs.windows(2) {
        let rate = (w[0] / w[1]).log2();
        assert!((3.8..4.2).contains(&rate), "errors {errs:?}");
    }
    // Too few frames.
    let f = frames_of(f64::sin, 0.0, 0.1, 4);
    let refs: Vec<&[f64]> = f.iter().map(|x| x.as_slice()).collect();
    assert!(est.velocity(&refs, 0.1).is_none());
}

#[test]
fn a_central_hand_back_continues_the_fe_run_closer_than_bdf2() {
    // As the BDF2 test of tests/coupling.rs: the FE run's own frames stand in for a perfect
    // forecast; the field handed back is frame 16, the central difference reads two frames on
    // either side, BDF2 two before it.
    let case = HandBackCase::new(32);
    let m = HandBackCase::M;
    let err = |est: VelocityEstimate, stride: usize| {
        let picked: Vec<&[f64]> = (0..est.frames())
            .map(|j| {
                case.frames[16 + (j + est.lag()) * stride - (est.frames() - 1) * stride].as_slice()
            })
            .collect();
        case.error_after(&est.velocity(&picked, stride as f64 * case.dt).unwrap())
    };
    let mut lines = vec![];
    for stride in [8, 4, 2] {
        let (c4, b2) = (
            err(VelocityEstimate::Central4, stride),
            err(VelocityEstimate::Bdf2, stride),
        );
        lines.push((stride, c4, b2));
        assert!(
            c4 * 3.0 < b2,
            "stride {stride}: central {c4:.3e}, BDF2 {b2:.3e}"
        );
    }
    // Measured: the central error falls at about 1.5 a halving only, the Taylor start's own
    // error (the same for both) being its floor at these spacings; BDF2's at 2.
    eprintln!("hand-back {m} steps later (stride, central4, bdf2): {lines:?}");
}

fn cfg(velocity: VelocityEstimate) -> HybridConfig {
    HybridConfig {
        velocity,
        ..hybrid::cfg(f64::INFINITY, 0)
    }
}

#[test]
fn a_hybrid_run_hands_back_two_frames_early_and_the_fe_runs_them() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    // Warm-up: 5 frames (8 steps); windows of 4 frames (8 steps), of which the surrogate
    // takes 2 frames and the FE the last 2.
    let (t_in, t_out, windows) = (5, 4, 8);
    let last = (t_in - 1) * STRIDE + windows * t_out * STRIDE;
    let (frames, want) = reference(&p, &t, last + 20);
    let run = |velocity: VelocityEstimate| {
        let mut s = sim(&p);
        let oracle = Oracle {
            frames: frames.clone(),
            t_in,
            t_out,
            calls: 0,
        };
        let mut h = Hybrid::new(&mut s, &t, oracle, Trusting, cfg(velocity)).unwrap();
        let sum = h.run(last).unwrap();
        assert_eq!(s.steps_done(), last);
        s.advance(20);
        (sum, rel_l2(s.u(), &want))
    };
    let (c4, c4_err) = run(VelocityEstimate::Central4);
    assert_eq!((c4.windows_accepted, c4.windows_rejected), (windows, 0));
    assert_eq!(c4.steps_surrogate, windows * (t_out - 2) * STRIDE);
    assert_eq!(c4.steps_total, last);
    let (b2, b2_err) = run(VelocityEstimate::Bdf2);
    // Windows cover t_out frames either way: the FE runs the central one's last two.
    assert_eq!(b2.windows_accepted, windows);
    assert_eq!(b2.steps_surrogate, windows * t_out * STRIDE);
    eprintln!(
        "oracle hybrid, then 20 FE steps: central4 {c4_err:.3e} ({} surrogate steps), bdf2 {b2_err:.3e} ({})",
        c4.steps_surrogate, b2.steps_surrogate
    );
    assert!(
        c4_err > 0.0 && c4_err * 2.0 < b2_err,
        "{c4_err} against {b2_err}"
    );
}

#[test]
fn a_central_hand_back_needs_more_output_frames_than_its_lag_and_tolerance_zero_stays_exact() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let mut s = sim(&p);
    // Persistence forecasts 2 frames: all of them would lie after the frame handed back.
    let f = Persistence { callable: false };
    let mut c = cfg(VelocityEstimate::Central4);
    let e = Hybrid::new(&mut s, &t, f, Residual, c)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("2 frames"), "{e}");
    // Tolerance 0 with a forecast long enough: no window runs the network, bitwise FE-only.
    let mut plain = sim(&p);
    plain.advance(61);
    let oracle = Oracle {
        frames: vec![],
        t_in: 5,
        t_out: 4,
        calls: 0,
    };
    c.tolerance = 0.0;
    let mut h = Hybrid::new(&mut s, &t, oracle, Residual, c).unwrap();
    let sum = h.run(61).unwrap();
    assert_eq!((sum.windows_accepted, sum.steps_surrogate), (0, 0));
    assert!(sum.windows_rejected > 0);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(s.u()), bits(plain.u()));
    assert_eq!(bits(s.u_prev()), bits(plain.u_prev()));
}
