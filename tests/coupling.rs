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

pub(crate) fn unit(n: usize) -> ZoneGrid {
    ZoneGrid {
        x: [0.0, 1.0],
        y: [0.0, 1.0],
        nx: n,
        ny: n,
    }
}

pub(crate) fn nodal(mesh: &Mesh, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    mesh.coords.iter().map(|p| f(p[0], p[1])).collect()
}

pub(crate) fn on_grid(g: &ZoneGrid, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    (0..g.ny)
        .flat_map(|j| (0..g.nx).map(move |i| (i, j)))
        .map(|(i, j)| {
            let p = g.point(i, j);
            f(p[0], p[1])
        })
        .collect()
}

pub(crate) fn max_diff(a: &[f64], b: &[f64]) -> f64 {
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

pub(crate) fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (d / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

/// The FE run's own frames standing in for a perfect forecast: a Gaussian pulse in a square
/// with absorbing sides, every step from `N − 16` to `N − 16 + count`, and the run at `N + M`.
pub(crate) struct HandBackCase {
    p: wavecp::solver::Problem,
    pub(crate) dt: f64,
    /// `frames[16]` is the field at step `N`.
    pub(crate) frames: Vec<Vec<f64>>,
    want: Vec<f64>,
}

impl HandBackCase {
    pub(crate) const N: usize = 40;
    pub(crate) const M: usize = 20;

    pub(crate) fn new(count: usize) -> Self {
        let p = square(CellShape::Quad, 64, 1.0, Some(BoundaryKind::Absorbing));
        let mut reference = Simulation::serial(Self::solver(&p)).unwrap();
        let dt = reference.dt();
        reference.advance(Self::N - 16);
        let mut frames = vec![reference.u().to_vec()];
        for _ in 0..count {
            reference.advance(1);
            frames.push(reference.u().to_vec());
        }
        let mut ahead = Simulation::serial(Self::solver(&p)).unwrap();
        ahead.advance(Self::N + Self::M);
        let want = ahead.u().to_vec();
        HandBackCase {
            p,
            dt,
            frames,
            want,
        }
    }

    fn solver(p: &wavecp::solver::Problem) -> wavecp::solver::WaveSolver {
        pulse_solver(p, 0.5, [0.5, 0.5], 0.3)
    }

    /// The pulse's simulation at step 0.
    fn fresh(&self) -> Simulation<'static> {
        Simulation::serial(Self::solver(&self.p)).unwrap()
    }

    /// The relative L2 error `M` steps after handing back the field at step `N` with
    /// velocity `v`, against the uninterrupted run.
    pub(crate) fn error_after(&self, v: &[f64]) -> f64 {
        let mut sim = self.fresh();
        sim.start_from(&self.frames[16], v, Self::N).unwrap();
        assert_eq!(sim.steps_done(), Self::N);
        assert_eq!(sim.time().to_bits(), (Self::N as f64 * self.dt).to_bits());
        sim.advance(Self::M);
        rel_l2(sim.u(), &self.want)
    }
}

#[test]
fn a_handed_back_field_continues_the_fe_run_at_the_order_of_its_velocity_estimate() {
    // A Gaussian pulse in a square with absorbing sides. The FE run's own frames stand in for
    // a perfect forecast at step n: what is measured is the hand-back alone (field plus a
    // velocity from frames `stride` steps apart, Taylor start), m steps later.
    let case = HandBackCase::new(16);
    let (dt, frames, m) = (case.dt, &case.frames, HandBackCase::M);
    let mut by_est = vec![];
    for est in [VelocityEstimate::TwoFrames, VelocityEstimate::Bdf2] {
        let mut errs = vec![];
        for stride in [8, 4, 2, 1] {
            let picked: Vec<&[f64]> = (0..est.frames())
                .rev()
                .map(|k| frames[16 - k * stride].as_slice())
                .collect();
            let v = est.velocity(&picked, stride as f64 * dt).unwrap();
            errs.push(case.error_after(&v));
        }
        eprintln!("hand-back {est:?} (dt = {dt:.4e}): relative L2 error {m} steps later, frames 8, 4, 2, 1 steps apart: {errs:?}");
        // The order shows between frame spacings 8, 4 and 2; at 1 the Taylor start's own
        // O(dt²) error is of the same size.
        let (lo, hi) = match est {
            VelocityEstimate::TwoFrames => (0.8, 1.2),
            VelocityEstimate::Bdf2 | VelocityEstimate::Fit(_) => (1.7, 2.4),
            VelocityEstimate::Central4 => unreachable!("tests/handback.rs measures it"),
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
    // The least-squares slope: through 3 frames it is BDF2; through more it is exact for
    // quadratics and weighs each frame less (less of a forecast's frame noise gets through).
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
    assert!(close(
        &VelocityEstimate::Fit(3).weights(),
        &VelocityEstimate::Bdf2.weights()
    ));
    let norm = |w: &[f64]| w.iter().map(|x| x * x).sum::<f64>().sqrt();
    for k in [4, 6, 8] {
        let w = VelocityEstimate::Fit(k).weights();
        let tau = |j: usize| j as f64 - (k - 1) as f64;
        let moment = |p: i32| {
            w.iter()
                .enumerate()
                .map(|(j, w)| w * tau(j).powi(p))
                .sum::<f64>()
        };
        assert!(
            moment(0).abs() < 1e-12 && (moment(1) - 1.0).abs() < 1e-12 && moment(2).abs() < 1e-12
        );
        assert!(
            norm(&w) < norm(&VelocityEstimate::Bdf2.weights()),
            "{k}: {w:?}"
        );
    }
    // Too few frames, or frames of different lengths, give no estimate; bad input to the
    // solver is an error.
    let one = [frames[0].as_slice()];
    assert!(VelocityEstimate::Bdf2.velocity(&one, dt).is_none());
    let short = [frames[0].as_slice(), &frames[1][..5]];
    assert!(VelocityEstimate::TwoFrames.velocity(&short, dt).is_none());
    let mut sim = case.fresh();
    assert!(sim.start_from(&frames[0][..5], &frames[0], 3).is_err());
    let mut nan = frames[0].clone();
    nan[7] = f64::NAN;
    assert!(sim.start_from(&nan, &frames[0], 3).is_err());
}

pub(crate) mod hybrid {
    use super::{rel_l2, unit};
    use crate::common::{pulse_solver, square};
    use wavecp::coupling::handback::VelocityEstimate;
    use wavecp::coupling::hybrid::{
        EnergyBalance, EnergyChange, ErrorScale, FeProbe, Forecaster, Hybrid, HybridConfig,
        Indicator, Residual, WindowView,
    };
    use wavecp::coupling::transfer::ZoneTransfer;
    use wavecp::coupling::CouplingError;
    use wavecp::mesh::CellShape;
    use wavecp::sim::Simulation;
    use wavecp::solver::{BoundaryKind, Problem};

    pub(crate) const STRIDE: usize = 2;

    pub(crate) fn problem() -> Problem {
        square(CellShape::Quad, 64, 1.0, Some(BoundaryKind::Absorbing))
    }

    pub(crate) fn sim(p: &Problem) -> Simulation<'static> {
        Simulation::serial(pulse_solver(p, 0.5, [0.5, 0.5], 0.3)).unwrap()
    }

    /// The FE-only run's frames on the grid every `STRIDE` steps up to `last`, and its final
    /// field.
    pub(crate) fn reference(
        p: &Problem,
        t: &ZoneTransfer,
        last: usize,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut s = sim(p);
        let mut frames = vec![];
        loop {
            let mut g = vec![0.0; 65 * 65];
            t.to_grid(s.u(), &mut g).unwrap();
            frames.push(g);
            if s.steps_done() + STRIDE > last {
                break;
            }
            s.advance(STRIDE);
        }
        s.advance(last - s.steps_done());
        (frames, s.u().to_vec())
    }

    /// Forecasts the FE run's own frames, window after window (every window must be accepted
    /// for its count to stay in step).
    pub(crate) struct Oracle {
        pub(crate) frames: Vec<Vec<f64>>,
        pub(crate) t_in: usize,
        pub(crate) t_out: usize,
        pub(crate) calls: usize,
    }

    impl Forecaster for Oracle {
        fn t_in(&self) -> usize {
            self.t_in
        }
        fn t_out(&self) -> usize {
            self.t_out
        }
        fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
            assert_eq!(past.len(), self.t_in);
            let first = self.t_in + self.calls * self.t_out;
            self.calls += 1;
            Ok(self.frames[first..first + self.t_out].to_vec())
        }
    }

    /// Repeats the last frame; or refuses to be called at all.
    pub(crate) struct Persistence {
        pub(crate) callable: bool,
    }

    impl Forecaster for Persistence {
        fn t_in(&self) -> usize {
            3
        }
        fn t_out(&self) -> usize {
            2
        }
        fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
            assert!(
                self.callable,
                "a tolerance of 0 must not run the forecaster"
            );
            Ok(vec![past[past.len() - 1].to_vec(); 2])
        }
    }

    /// Accepts everything.
    pub(crate) struct Trusting;

    impl Indicator for Trusting {
        fn score(&mut self, _: WindowView<'_, '_>) -> Result<f64, CouplingError> {
            Ok(0.0)
        }
    }

    pub(crate) fn cfg(tolerance: f64, max_consecutive: usize) -> HybridConfig {
        HybridConfig {
            stride: STRIDE,
            tolerance,
            max_consecutive,
            velocity: VelocityEstimate::Bdf2,
            error_scale: ErrorScale::Window,
            audit_every: 0,
            handback_limit: None,
            retake_velocity: None,
        }
    }

    #[test]
    fn tolerance_zero_is_the_fe_only_run_bit_for_bit() {
        let p = problem();
        let mut plain = sim(&p);
        plain.advance(101);
        let mut s = sim(&p);
        let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
        let f = Persistence { callable: false };
        let mut h = Hybrid::new(&mut s, &t, f, Residual, cfg(0.0, 0)).unwrap();
        let sum = h.run(101).unwrap();
        // Warm-up: frames at steps 0, 2, 4; then windows of 2 frames (4 steps) while they fit.
        assert_eq!(sum.windows_rejected, (101 - 4) / 4);
        assert_eq!((sum.windows_accepted, sum.steps_surrogate), (0, 0));
        assert_eq!(sum.steps_total, 101);
        assert!(sum.windows.iter().all(|w| *w == (None, false)));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(s.u()), bits(plain.u()));
        assert_eq!(bits(s.u_prev()), bits(plain.u_prev()));
        assert_eq!(s.steps_done(), 101);
    }

    #[test]
    fn accepted_windows_of_a_perfect_forecast_cost_only_the_hand_back() {
        let p = problem();
        let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
        let last = 4 + 10 * 4;
        // The hand-back's error shows once the FE steps on from a handed-back state.
        let (frames, want) = reference(&p, &t, last + 20);
        let last_frame = frames[last / STRIDE].clone();
        let mut s = sim(&p);
        let oracle = Oracle {
            frames,
            t_in: 3,
            t_out: 2,
            calls: 0,
        };
        let mut h = Hybrid::new(&mut s, &t, oracle, Trusting, cfg(f64::INFINITY, 0)).unwrap();
        let sum = h.run(last).unwrap();
        assert_eq!((sum.windows_accepted, sum.windows_rejected), (10, 0));
        assert_eq!((sum.steps_surrogate, sum.steps_total), (40, last));
        assert_eq!(s.steps_done(), last);
        // The grid holds the mesh nodes: the last frame comes back exactly.
        let mut g = vec![0.0; 65 * 65];
        t.to_grid(s.u(), &mut g).unwrap();
        assert_eq!(g, last_frame);
        s.advance(20);
        let err = rel_l2(s.u(), &want);
        eprintln!("hybrid, 10 windows of a perfect forecast (frames {STRIDE} steps apart, BDF2 hand-back), then 20 FE steps: relative L2 error {err:.3e}");
        assert!(err > 0.0 && err < 0.02, "{err}");
    }

    #[test]
    fn the_cap_on_accepted_windows_gives_the_fe_every_third_window() {
        let p = problem();
        let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
        let mut s = sim(&p);
        let f = Persistence { callable: true };
        let mut h = Hybrid::new(&mut s, &t, f, Trusting, cfg(1.0, 2)).unwrap();
        let sum = h.run(4 + 9 * 4).unwrap();
        let pattern: Vec<bool> = sum.windows.iter().map(|w| w.1).collect();
        assert_eq!(
            pattern,
            [true, true, false, true, true, false, true, true, false]
        );
        assert!(sum.windows.iter().all(|w| w.1 == w.0.is_some()));
    }

    #[test]
    fn the_residual_indicator_grows_with_the_forecast_error() {
        let p = problem();
        let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
        let (frames, _) = reference(&p, &t, 40);
        // At step 20 (frame 10): past frames 8..=10, the true next two frames 11 and 12, and
        // the same with a smooth bump of growing size added.
        let mut s = sim(&p);
        s.advance(20);
        let past: Vec<&[f64]> = frames[8..=10].iter().map(|f| &f[..]).collect();
        let g = *t.grid();
        let bump: Vec<f64> = (0..g.ny)
            .flat_map(|j| (0..g.nx).map(move |i| (i, j)))
            .map(|(i, j)| {
                let q = g.point(i, j);
                (-((q[0] - 0.3).powi(2) + (q[1] - 0.6).powi(2)) / 0.02).exp()
            })
            .collect();
        let mut scores = vec![];
        for eps in [0.0, 1e-4, 1e-3, 1e-2, 1e-1] {
            let forecast: Vec<Vec<f64>> = frames[11..=12]
                .iter()
                .map(|f| f.iter().zip(&bump).map(|(a, b)| a + eps * b).collect())
                .collect();
            let score = Residual
                .score(WindowView {
                    sim: &mut s,
                    transfer: &t,
                    past: &past,
                    forecast: &forecast,
                    stride: STRIDE,
                    reads_forecast: false,
                })
                .unwrap();
            scores.push(score);
        }
        eprintln!("residual indicator for a bump of 0, 1e-4, 1e-3, 1e-2, 1e-1 added to the true frames: {scores:?}");
        assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
        // The truth sits at the floor of the frames' own O(Δ²) residual.
        assert!(scores[0] < 0.05, "{scores:?}");
        // The indicator leaves the state alone.
        assert_eq!(s.steps_done(), 20);
    }

    #[test]
    fn every_indicator_grows_with_an_amplitude_error_of_the_forecast() {
        let p = problem();
        let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
        let (frames, _) = reference(&p, &t, 40);
        let mut s = sim(&p);
        s.advance(20);
        let past: Vec<&[f64]> = frames[8..=10].iter().map(|f| &f[..]).collect();
        let (mut energy, mut residual, mut probe, mut balance) = (vec![], vec![], vec![], vec![]);
        for eps in [0.0, 1e-3, 1e-2, 1e-1] {
            let forecast: Vec<Vec<f64>> = frames[11..=12]
                .iter()
                .map(|f| f.iter().map(|a| a * (1.0 + eps)).collect())
                .collect();
            for (ind, out) in [
                (&mut EnergyChange as &mut dyn Indicator, &mut energy),
                (&mut Residual, &mut residual),
                (&mut FeProbe, &mut probe),
                (&mut EnergyBalance, &mut balance),
            ] {
                out.push(
                    ind.score(WindowView {
                        sim: &mut s,
                        transfer: &t,
                        past: &past,
                        forecast: &forecast,
                        stride: STRIDE,
                        reads_forecast: false,
                    })
                    .unwrap(),
                );
            }
        }
        eprintln!("forecast scaled by 1 + 0, 1e-3, 1e-2, 1e-1: energy change {energy:?}, energy balance {balance:?}, residual {residual:?}, FE probe {probe:?}");
        for scores in [&energy, &residual, &probe, &balance] {
            assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
        }
        // The truth: the energy falls by what the absorbing sides let out, a few % in two frames.
        assert!(energy[0] > 0.0 && energy[0] < 0.05, "{energy:?}");
        assert!(energy[3] > 3.0 * energy[0], "{energy:?}");
        // With the boundary's loss accounted for, the truth's imbalance is far below the loss.
        assert!(balance[0] < energy[0] / 3.0, "{balance:?} vs {energy:?}");
        // The probe measures the first frame's error itself: 0 for the truth, ε for 1 + ε
        // (the grid holds the mesh nodes), and it leaves the state as it found it.
        assert_eq!(probe[0], 0.0);
        for (p, eps) in probe[1..].iter().zip([1e-3, 1e-2, 1e-1]) {
            assert!((p / eps - 1.0).abs() < 1e-6, "{probe:?}");
        }
        assert_eq!(s.steps_done(), 20);
        let mut g = vec![0.0; 65 * 65];
        t.to_grid(s.u(), &mut g).unwrap();
        assert_eq!(g, frames[10]);
    }

    #[test]
    fn pieces_that_do_not_fit_are_refused() {
        let p = problem();
        let mut s = sim(&p);
        let half = wavecp::coupling::transfer::ZoneGrid {
            x: [0.0, 0.5],
            y: [0.0, 1.0],
            nx: 9,
            ny: 17,
        };
        let t = ZoneTransfer::new(&p.mesh, half).unwrap();
        let f = Persistence { callable: true };
        let e = Hybrid::new(&mut s, &t, f, Trusting, cfg(1.0, 0))
            .err()
            .unwrap();
        assert!(e.to_string().contains("must cover the mesh"), "{e}");
        let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
        for (stride, tol) in [(0, 1.0), (2, -1.0), (2, f64::NAN)] {
            let c = HybridConfig {
                stride,
                tolerance: tol,
                ..cfg(1.0, 0)
            };
            let f = Persistence { callable: true };
            assert!(Hybrid::new(&mut s, &t, f, Trusting, c).is_err());
        }
    }

    /// The metadata of a test model: 8 frames of 16 × 16 in and out on the unit square, frames
    /// `frame_dt` apart, never trained, no calibration or conditioning.
    #[cfg(feature = "hdf5")]
    pub(crate) fn test_meta(
        model: &wavecp::nn::Model,
        frame_dt: f64,
    ) -> wavecp::surrogate::modelfile::ModelMeta {
        wavecp::surrogate::modelfile::ModelMeta {
            t_in: 8,
            t_out: 8,
            ny: 16,
            nx: 16,
            mean: 0.0,
            std: 0.05,
            frame_dt,
            dataset: "none".into(),
            epoch: 0,
            train_loss: 1.0,
            val_loss: 1.0,
            trainable_params: model.num_params(),
            peak_rss_mb: 0.0,
            epoch_s: 0.0,
            zone: Some([0.0, 1.0, 0.0, 1.0]),
            calibrations: Default::default(),
            conditioning: None,
        }
    }

    /// The untrained small CP model (8 frames of 16 × 16 in and out) as a model file made for
    /// frames `frame_dt` apart on the unit square.
    #[cfg(feature = "hdf5")]
    pub(crate) fn untrained(dir: &std::path::Path, frame_dt: f64) -> std::path::PathBuf {
        use wavecp::surrogate::modelfile::save;
        let spec = std::fs::read_to_string(crate::common::repo("models/small_cp.toml")).unwrap();
        let model = wavecp::nn::Model::new(wavecp::nn::model::ModelSpec::from_toml(&spec).unwrap())
            .unwrap();
        let meta = test_meta(&model, frame_dt);
        let path = dir.join("untrained.safetensors");
        save(&path, &model, &meta, None).unwrap();
        path
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn the_network_is_checked_against_the_run_and_its_untrained_forecasts_are_refused() {
        use wavecp::coupling::network::NetworkForecaster;
        use wavecp::nn::Device;
        let p = square(CellShape::Quad, 15, 1.0, Some(BoundaryKind::Absorbing));
        let dir = tempfile::tempdir().unwrap();
        let t = ZoneTransfer::new(&p.mesh, unit(16)).unwrap();
        let frame_dt = STRIDE as f64 * sim(&p).dt();
        let model = untrained(dir.path(), frame_dt);
        // Another frame spacing, grid size or zone: refused, both sides named.
        let e = NetworkForecaster::open(&model, Device::Cpu, &t, 1.5 * frame_dt)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("frames") && e.to_string().contains("stride"),
            "{e}"
        );
        let t17 = ZoneTransfer::new(&p.mesh, unit(17)).unwrap();
        let e = NetworkForecaster::open(&model, Device::Cpu, &t17, frame_dt)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("16 x 16") && e.to_string().contains("17 x 17"),
            "{e}"
        );
        let shifted = wavecp::coupling::transfer::ZoneGrid {
            x: [0.0, 0.9],
            ..unit(16)
        };
        let ts = ZoneTransfer::new(&p.mesh, shifted).unwrap();
        let e = NetworkForecaster::open(&model, Device::Cpu, &ts, frame_dt)
            .err()
            .unwrap();
        assert!(e.to_string().contains("zone"), "{e}");
        // Warm-up of 8 frames (14 steps), then three windows of 8 frames (16 steps each).
        let last = 14 + 3 * 16;
        let mut plain = sim(&p);
        plain.advance(last);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // The residual indicator refuses the untrained network's windows: the FE runs them,
        // and the run is the FE-only one bit for bit.
        let mut s = sim(&p);
        let net = NetworkForecaster::open(&model, Device::Cpu, &t, frame_dt).unwrap();
        let mut h = Hybrid::new(&mut s, &t, net, Residual, cfg(0.05, 0)).unwrap();
        let sum = h.run(last).unwrap();
        assert_eq!((sum.windows_accepted, sum.windows_rejected), (0, 3));
        assert!(
            sum.windows.iter().all(|w| w.0.unwrap() > 0.05),
            "{:?}",
            sum.windows
        );
        assert!(sum.inference_s > 0.0 && sum.indicator_s > 0.0);
        assert_eq!(bits(s.u()), bits(plain.u()));
        // Trusted blindly, its windows replace 48 of the 62 steps.
        let mut s = sim(&p);
        let net = NetworkForecaster::open(&model, Device::Cpu, &t, frame_dt).unwrap();
        let mut h = Hybrid::new(&mut s, &t, net, Trusting, cfg(f64::INFINITY, 0)).unwrap();
        let sum = h.run(last).unwrap();
        assert_eq!(
            (sum.windows_accepted, sum.steps_surrogate, sum.steps_total),
            (3, 48, last)
        );
        assert!(s.u().iter().all(|v| v.is_finite()));
    }

    /// A solve job on the unit square (15 × 15 Q1, absorbing, a Ricker source, dt = 0.01,
    /// output every 10 steps) with `[coupling]` on `model`.
    #[cfg(feature = "hdf5")]
    pub(crate) fn hybrid_job(
        dir: &std::path::Path,
        model: &std::path::Path,
        tolerance: f64,
    ) -> wavecp::config::Config {
        let text = hybrid_job_text(dir, model, tolerance);
        wavecp::config::Config::from_toml(&text, "hybrid job", &[]).unwrap()
    }

    /// [`hybrid_job`] as TOML.
    #[cfg(feature = "hdf5")]
    pub(crate) fn hybrid_job_text(
        dir: &std::path::Path,
        model: &std::path::Path,
        tolerance: f64,
    ) -> String {
        format!(
            "[mesh.generate]\nshape = \"quad\"\nnx = 15\nny = 15\n[material]\nc = 1.0\n\
             [[boundary]]\ntags = [\"left\", \"right\", \"top\", \"bottom\"]\nkind = \"absorbing\"\n\
             [[source]]\nposition = [0.45, 0.55]\nfrequency = 2.0\ndelay = 0.2\n\
             [time]\nend = 0.8\ndt = 0.01\n[[receiver]]\nposition = [0.3, 0.3]\n\
             [output]\npath = \"{}\"\nevery = 10\n\
             [coupling]\nmodel = \"{}\"\ntolerance = {tolerance}\nindicator = \"fe_probe\"\n",
            dir.join(format!("out-{tolerance}.vtkhdf")).display(),
            model.display()
        )
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn a_solve_job_with_coupling_at_tolerance_zero_writes_the_fe_only_files() {
        use wavecp::coupling::solve::run_hybrid;
        use wavecp::sim::{run_on, RunOptions};
        let dir = tempfile::tempdir().unwrap();
        let model = untrained(dir.path(), 2.0 * 0.01);
        let base = std::path::Path::new(".");
        let opts = RunOptions::default();
        let cfg = hybrid_job(dir.path(), &model, 0.0);
        let (run, h) = run_hybrid(&cfg, base, &opts, &wavecp::comm::Serial).unwrap();
        assert_eq!((h.windows_accepted, h.steps_total), (0, 80));
        assert!(h.windows_rejected > 0);
        let mut plain = cfg.clone();
        plain.coupling = None;
        plain.output.path = dir.path().join("plain.vtkhdf");
        let fe = run_on(&plain, base, &opts, &wavecp::comm::Serial).unwrap();
        assert_eq!(run.final_energy.to_bits(), fe.final_energy.to_bits());
        assert_eq!(run.output_steps, fe.output_steps);
        let u = |p: &std::path::Path| -> Vec<f64> {
            let f = hdf5::File::open(p).unwrap();
            f.dataset("VTKHDF/PointData/u").unwrap().read_raw().unwrap()
        };
        let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(u(run.output.as_ref().unwrap())),
            bits(u(fe.output.as_ref().unwrap()))
        );
        // Accepting windows: fewer steps by the FE; the output steps inside accepted windows
        // (all on frames here) are written from the forecast, their energy unknown (NaN).
        let cfg = hybrid_job(dir.path(), &model, f64::INFINITY);
        let (run, h) = run_hybrid(&cfg, base, &opts, &wavecp::comm::Serial).unwrap();
        assert!(h.windows_accepted > 0 && h.steps_surrogate > 0, "{h:?}");
        assert_eq!(h.steps_total, 80);
        assert_eq!(run.output_steps, fe.output_steps);
        let f = hdf5::File::open(run.output.as_ref().unwrap()).unwrap();
        let energy: Vec<f64> = f.dataset("wavecp/energy").unwrap().read_raw().unwrap();
        assert!(energy.iter().any(|e| e.is_nan()) && energy[0].is_finite());
        // What does not fit is refused, naming the key.
        let mut bad = hybrid_job(dir.path(), &model, 0.1);
        bad.time.dt = Some(0.015);
        let e = run_hybrid(&bad, base, &opts, &wavecp::comm::Serial)
            .unwrap_err()
            .to_string();
        assert!(e.contains("coupling") && e.contains("whole number"), "{e}");
        // A stop request (SIGTERM, here its test hook) ends a hybrid run at the step it is
        // seen, without a checkpoint when none is set.
        let stop = RunOptions {
            stop_after_steps: Some(30),
            ..RunOptions::default()
        };
        let zero = hybrid_job(dir.path(), &model, 0.0);
        let (run, h) = run_hybrid(&zero, base, &stop, &wavecp::comm::Serial).unwrap();
        assert!(run.interrupted && run.checkpoints == 0, "{run:?}");
        assert_eq!(h.steps_total, 30);
        let text = |extra: &str| {
            format!(
                "[mesh.generate]\nshape = \"quad\"\nnx = 4\nny = 4\n[time]\nend = 0.1\n[coupling]\nmodel = \"m\"\ntolerance = 0.1\n{extra}"
            )
        };
        for (extra, key) in [
            ("indicator = \"oracle\"\n", "coupling.indicator"),
            ("velocity = \"euler\"\n", "coupling.velocity"),
            ("device = \"tpu\"\n", "coupling.device"),
            ("error_scale = \"global\"\n", "coupling.error_scale"),
            ("retake_velocity = \"bdf2\"\n", "coupling.retake_velocity"),
        ] {
            let e = wavecp::config::Config::from_toml(&text(extra), "job", &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e =
            wavecp::config::Config::from_toml(&text(""), "job", &["coupling.tolerance=-1".into()])
                .unwrap_err()
                .to_string();
        assert!(e.contains("coupling.tolerance"), "{e}");
        let ok = wavecp::config::Config::from_toml(
            &text(""),
            "job",
            &["coupling.tolerance=0.03".into()],
        )
        .unwrap();
        assert_eq!(ok.coupling.unwrap().tolerance, 0.03);
    }

    /// Every dataset of a run's output that a hybrid run adds or changes, as bits.
    #[cfg(feature = "hdf5")]
    fn hybrid_datasets(p: &std::path::Path) -> Vec<(String, Vec<u64>)> {
        let f = hdf5::File::open(p).unwrap();
        let names = [
            "VTKHDF/PointData/u",
            "VTKHDF/PointData/u_ref",
            "VTKHDF/PointData/u_diff",
            "VTKHDF/PointData/stepper",
            "VTKHDF/Steps/Values",
            "wavecp/steps/indicator",
            "wavecp/energy",
            "wavecp/receivers/u",
        ];
        names
            .iter()
            .filter_map(|n| {
                let d = f.dataset(n).ok()?;
                let v: Vec<f64> = d.read_raw().unwrap();
                Some((n.to_string(), v.iter().map(|x| x.to_bits()).collect()))
            })
            .collect()
    }

    /// The hybrid job of [`hybrid_job`] with `--reference`'s fields, at most one accepted
    /// window in a row (windows of 16 steps from step 14: accepted, rejected, accepted,
    /// rejected) and a checkpoint path.
    #[cfg(feature = "hdf5")]
    fn alternating_job(
        dir: &std::path::Path,
        model: &std::path::Path,
        name: &str,
    ) -> wavecp::config::Config {
        let mut cfg = hybrid_job(dir, model, f64::INFINITY);
        cfg.output.path = dir.join(format!("{name}.vtkhdf"));
        cfg.checkpoint.path = dir.join(format!("{name}.ckpt"));
        cfg.coupling.as_mut().unwrap().max_consecutive = 1;
        cfg
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn reference_writes_u_ref_and_the_difference_and_reports_the_error_and_who_stepped() {
        use wavecp::coupling::solve::run_hybrid;
        use wavecp::sim::RunOptions;
        let dir = tempfile::tempdir().unwrap();
        let model = untrained(dir.path(), 2.0 * 0.01);
        let base = std::path::Path::new(".");
        let opts = RunOptions {
            reference: true,
            ..RunOptions::default()
        };
        // Tolerance 0: the hybrid run is the FE run, so the error is exactly 0.
        let cfg = hybrid_job(dir.path(), &model, 0.0);
        let (run, h) = run_hybrid(&cfg, base, &opts, &wavecp::comm::Serial).unwrap();
        assert_eq!(h.windows_accepted, 0);
        assert_eq!(h.max_rel_l2_error, Some(0.0));
        assert!(
            h.reference_wall_s.unwrap() > 0.0 && h.speedup.unwrap() > 0.0,
            "{h:?}"
        );
        let d = hybrid_datasets(run.output.as_ref().unwrap());
        let get = |d: &[(String, Vec<u64>)], n: &str| {
            d.iter().find(|x| x.0.ends_with(n)).unwrap().1.clone()
        };
        assert_eq!(get(&d, "PointData/u"), get(&d, "PointData/u_ref"));
        assert!(get(&d, "u_diff")
            .iter()
            .chain(&get(&d, "stepper"))
            .all(|&b| b == 0));
        assert_eq!(get(&d, "steps/indicator").len(), run.output_steps);
        // Accepting windows (one in two): the error is that of the state handed back; the
        // output steps where a window landed say so, the others are the FE's.
        let cfg = alternating_job(dir.path(), &model, "alt");
        let (run, h) = run_hybrid(&cfg, base, &opts, &wavecp::comm::Serial).unwrap();
        let decided: Vec<bool> = h.windows.iter().map(|w| w.1).collect();
        assert_eq!(decided, [true, false, true, false]);
        let e = h.max_rel_l2_error.unwrap();
        assert!(e > 0.0 && e.is_finite(), "{h:?}");
        let f = hdf5::File::open(run.output.as_ref().unwrap()).unwrap();
        let times: Vec<f64> = f
            .dataset("VTKHDF/Steps/Values")
            .unwrap()
            .read_raw()
            .unwrap();
        let steps: Vec<usize> = times.iter().map(|t| (t / 0.01).round() as usize).collect();
        // Windows at 14, 30, 46, 62 (accepted, rejected, accepted, rejected): every output step
        // is written; 20, 50 and 60 lie inside accepted windows (forecast frames), 30 is where
        // the first landed.
        assert_eq!(steps, [0, 10, 20, 30, 40, 50, 60, 70, 80]);
        let n = run.nodes;
        let stepper: Vec<f64> = f
            .dataset("VTKHDF/PointData/stepper")
            .unwrap()
            .read_raw()
            .unwrap();
        let per_step: Vec<f64> = stepper.chunks(n).map(|c| c[0]).collect();
        assert_eq!(per_step, [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let u: Vec<f64> = f.dataset("VTKHDF/PointData/u").unwrap().read_raw().unwrap();
        let u_ref: Vec<f64> = f
            .dataset("VTKHDF/PointData/u_ref")
            .unwrap()
            .read_raw()
            .unwrap();
        let diff: Vec<f64> = f
            .dataset("VTKHDF/PointData/u_diff")
            .unwrap()
            .read_raw()
            .unwrap();
        for i in 0..u.len() {
            assert_eq!(diff[i].to_bits(), (u[i] - u_ref[i]).abs().to_bits());
        }
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let max_d = diff.chunks(n).map(norm).fold(0.0, f64::max);
        let max_r = u_ref.chunks(n).map(norm).fold(0.0, f64::max);
        approx::assert_relative_eq!(e, max_d / max_r, max_relative = 1e-12);
        // The indicator of the window each step lies in: none before the first window.
        let ind: Vec<f64> = f
            .dataset("wavecp/steps/indicator")
            .unwrap()
            .read_raw()
            .unwrap();
        assert!(
            ind[0].is_nan() && ind[1].is_nan() && ind[2].is_finite(),
            "{ind:?}"
        );
        // Without a coupling, --reference has nothing to compare.
        let text =
            std::fs::read_to_string(run.output.as_ref().unwrap().with_extension("xdmf")).unwrap();
        assert!(text.contains("PointData/u_ref") && text.contains("PointData/stepper"));
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn a_hybrid_run_stopped_and_restarted_is_bitwise_the_uninterrupted_one() {
        use wavecp::coupling::solve::run_hybrid;
        use wavecp::sim::RunOptions;
        let dir = tempfile::tempdir().unwrap();
        let model = untrained(dir.path(), 2.0 * 0.01);
        let base = std::path::Path::new(".");
        let opts = |restart: bool, stop: Option<usize>| RunOptions {
            reference: true,
            restart,
            stop_after_steps: stop,
            ..RunOptions::default()
        };
        // With the run's error scale the window scores depend on the largest frame so far,
        // which the checkpoint must carry; with it the hand-back check too (its losses, and
        // the one in force after an accepted window).
        for scale in ["window", "run"] {
            let mut whole = alternating_job(dir.path(), &model, &format!("whole-{scale}"));
            whole.coupling.as_mut().unwrap().error_scale = scale.into();
            whole.coupling.as_mut().unwrap().handback_check = scale == "run";
            let (run, h) =
                run_hybrid(&whole, base, &opts(false, None), &wavecp::comm::Serial).unwrap();
            assert!(!run.interrupted && h.windows_accepted == 2);
            // Stopped at step 33 (inside the rejected window 30–46, between two frames), then at
            // 62 (where the accepted window 46–62 lands), then run to the end.
            let mut parts = alternating_job(dir.path(), &model, &format!("parts-{scale}"));
            parts.coupling.as_mut().unwrap().error_scale = scale.into();
            parts.coupling.as_mut().unwrap().handback_check = scale == "run";
            let (r1, _) =
                run_hybrid(&parts, base, &opts(false, Some(33)), &wavecp::comm::Serial).unwrap();
            assert!(r1.interrupted && r1.checkpoints == 1, "{r1:?}");
            let (r2, _) =
                run_hybrid(&parts, base, &opts(true, Some(62)), &wavecp::comm::Serial).unwrap();
            assert!(r2.interrupted && r2.restarted, "{r2:?}");
            let (r3, h3) =
                run_hybrid(&parts, base, &opts(true, None), &wavecp::comm::Serial).unwrap();
            assert!(!r3.interrupted && r3.restarted);
            assert_eq!(h3.windows, h.windows);
            assert_eq!(h3.handback_losses, h.handback_losses);
            assert_eq!(h.handback_losses.is_empty(), scale == "window");
            assert_eq!(h3.steps_surrogate, h.steps_surrogate);
            // The FE retakes each capped window after an accepted one (a forecast made for it).
            assert!(h.retakes > 0);
            assert_eq!(h3.retakes, h.retakes);
            assert_eq!(
                h3.max_rel_l2_error.unwrap().to_bits(),
                h.max_rel_l2_error.unwrap().to_bits()
            );
            assert_eq!(r3.final_energy.to_bits(), run.final_energy.to_bits());
            let (a, b) = (
                hybrid_datasets(run.output.as_ref().unwrap()),
                hybrid_datasets(r3.output.as_ref().unwrap()),
            );
            assert_eq!(a.len(), 8);
            assert_eq!(a, b);
        }
        let parts = alternating_job(dir.path(), &model, "parts-window");
        // A checkpoint of a hybrid run does not continue without the coupling, nor without
        // --reference when it was taken with it.
        let (_, _) =
            run_hybrid(&parts, base, &opts(false, Some(33)), &wavecp::comm::Serial).unwrap();
        let no_ref = RunOptions {
            restart: true,
            ..RunOptions::default()
        };
        let e = run_hybrid(&parts, base, &no_ref, &wavecp::comm::Serial)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--reference"), "{e}");
        let mut plain = parts.clone();
        plain.coupling = None;
        let e = wavecp::sim::run_on(&plain, base, &no_ref, &wavecp::comm::Serial)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hybrid run"), "{e}");
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn bench_couple_covers_the_same_steps_both_ways_and_its_model_adds_up() {
        use wavecp::coupling::bench::{run, CoupleBench};
        let b = CoupleBench {
            nodes: vec![400, 1600],
            model: crate::common::repo("models/small_cp.toml"),
            grid: 16,
            t_in: 8,
            t_out: 8,
            frame_dt: 0.04,
            windows: 2,
            indicator: "energy_change".into(),
            device: wavecp::nn::Device::Cpu,
        };
        let r = run(&b).unwrap();
        assert_eq!(r.cases.len(), 2);
        for c in &r.cases {
            // The step divides the frame spacing and is stable; every window was accepted.
            assert!((c.dt * c.stride as f64 - 0.04).abs() < 1e-12, "{c:?}");
            assert_eq!(c.window_steps, 8 * c.stride);
            assert_eq!(c.steps, 7 * c.stride + 2 * c.window_steps);
            assert_eq!(c.windows_accepted, 2);
            // The hybrid's FE ran the warm-up only (the step counts above say so; wall times
            // are not compared here: a loaded machine reorders them).
            assert!(c.fe_s > 0.0 && c.fe_only_s > 0.0, "{c:?}");
            assert!(c.speedup > 0.0 && c.predicted_speedup > 0.0);
            approx::assert_relative_eq!(
                c.prediction_error,
                c.predicted_speedup / c.speedup - 1.0,
                max_relative = 1e-12
            );
        }
        // A finer mesh takes more FE steps a frame (dt shrinks with the cells).
        assert!(r.cases[1].stride > r.cases[0].stride);
        assert!(r.inference_per_window_s > 0.0);
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn a_calibration_turns_a_tolerance_into_the_threshold_its_risk_allows() {
        use wavecp::surrogate::calibration::Calibration;
        // Error = score / 100 exactly: with no risk the threshold admits exactly the windows
        // within the tolerance; a risk of 10 % admits a few more.
        let pairs: Vec<(f64, f64)> = (0..100)
            .map(|k| (k as f64, k as f64 / 100.0))
            .rev()
            .collect();
        let c = Calibration::new("fe_probe", 0.0, &pairs).unwrap();
        let t = c.threshold(0.5);
        assert!(t > 50.0 && t <= 50.0 + 1e-12, "{t}");
        let c = Calibration::new("fe_probe", 0.1, &pairs).unwrap();
        // Prefix of n windows (scores 0..n-1) has n - 51 above 0.5: n - 51 <= 0.1 n up to n = 56.
        let t = c.threshold(0.5);
        assert!(t > 55.0 && t < 56.0, "{t}");
        // Nothing qualifies below every error; everything at a tolerance above them all, but
        // never past the largest calibrated score.
        assert_eq!(c.threshold(-1.0), 0.0);
        let all = c.threshold(2.0);
        assert!(all > 99.0 && all < 99.0 + 1e-9);
        // Monotone in the tolerance.
        let ts: Vec<f64> = (0..=20).map(|k| c.threshold(k as f64 / 20.0)).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
        // Bad input is refused.
        assert!(Calibration::new("x", 0.1, &[]).is_err());
        assert!(Calibration::new("x", 1.0, &pairs).is_err());
        assert!(Calibration::new("x", 0.1, &[(f64::NAN, 0.1)]).is_err());
        assert!(Calibration::new("x", 0.1, &[(-1.0, 0.1)]).is_err());
        // On noisy pairs the held-out exceedance stays near the risk: calibrate on one half of
        // error = score * (1 + noise), check on the other.
        let mut state = 7u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let draw = |n: usize, noise: &mut dyn FnMut() -> f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|_| {
                    let s = noise();
                    (s, s * (0.5 + noise()))
                })
                .collect()
        };
        let cal = Calibration::new("fe_probe", 0.1, &draw(4000, &mut noise)).unwrap();
        let test = draw(4000, &mut noise);
        let t = cal.threshold(0.3);
        let acc: Vec<_> = test.iter().filter(|p| p.0 < t).collect();
        let over = acc.iter().filter(|p| p.1 > 0.3).count() as f64 / acc.len() as f64;
        assert!(
            acc.len() > 1000 && (over - 0.1).abs() < 0.03,
            "{} accepted, {over}",
            acc.len()
        );
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn calibrate_stores_the_calibration_and_a_hybrid_run_states_its_tolerance_in_error_units() {
        use wavecp::coupling::calibrate::{calibrate, Sampling};
        use wavecp::coupling::solve::run_hybrid;
        use wavecp::sim::RunOptions;
        use wavecp::surrogate::modelfile;
        let dir = tempfile::tempdir().unwrap();
        let model = untrained(dir.path(), 2.0 * 0.01);
        let s = Sampling {
            model: model.clone(),
            job: crate::common::repo("examples/indicator_study/dataset.toml"),
            indicators: vec!["fe_probe".into()],
            scenarios: 4,
            seed: 5,
            frequency_factor: 1.0,
            source_box: None,
            rollout: 0,
        };
        let tols = [0.5, 1.0, 2.0];
        let check = wavecp::coupling::calibrate::Check {
            frequency_factor: 1.0,
            source_box: None,
        };
        let (c, r) = calibrate(
            &s,
            wavecp::coupling::calibrate::Plan {
                risk: 0.1,
                holdout: 0.5,
                check,
                fit_scenarios: 0,
                fit_rollout: 0,
            },
            &tols,
        )
        .unwrap();
        // 40 frames a scenario, 8 in and 8 out: 25 windows each, 2 scenarios a side.
        assert_eq!((r.calibration_windows, r.held_out_windows), (50, 50));
        assert_eq!(c.scores.len(), 50);
        assert!(c.scores.windows(2).all(|w| w[0] <= w[1]));
        for h in &r.held_out {
            assert_eq!(h.threshold, c.threshold(h.tolerance));
            assert!(h.accepted <= 50 && (0.0..=1.0).contains(&h.exceeded_fraction));
        }
        // Stored with the model; a hybrid job with that indicator reads its tolerance as a
        // window error, and one with another indicator as the raw value.
        let mut l = modelfile::load(&model).unwrap();
        l.meta.calibrations.set(c.clone());
        let calibrated = dir.path().join("calibrated.safetensors");
        modelfile::save(&calibrated, &l.model, &l.meta, None).unwrap();
        assert_eq!(
            modelfile::load(&calibrated)
                .unwrap()
                .meta
                .calibrations
                .get(&c.indicator),
            Some(&c)
        );
        let base = std::path::Path::new(".");
        let mut cfg = hybrid_job(dir.path(), &calibrated, 1.0);
        let (_, h) = run_hybrid(&cfg, base, &RunOptions::default(), &wavecp::comm::Serial).unwrap();
        let t = c.threshold(1.0);
        assert_eq!(h.indicator_threshold, Some(t));
        for (score, accepted) in &h.windows {
            if let Some(v) = score {
                assert_eq!(*accepted, *v < t, "{v} against {t}");
            }
        }
        cfg.coupling.as_mut().unwrap().indicator = "residual".into();
        let (_, h) = run_hybrid(&cfg, base, &RunOptions::default(), &wavecp::comm::Serial).unwrap();
        assert_eq!(h.indicator_threshold, None);
        // Tolerance 0 stays the FE-only run: nothing is accepted.
        let cfg = hybrid_job(dir.path(), &calibrated, 0.0);
        let (_, h) = run_hybrid(&cfg, base, &RunOptions::default(), &wavecp::comm::Serial).unwrap();
        assert_eq!((h.windows_accepted, h.indicator_threshold), (0, Some(0.0)));
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn the_demo_runs_the_hybrid_beside_the_reference_and_its_model_script_regenerates_it() {
        use std::process::Command;
        let bin = env!("CARGO_BIN_EXE_wavecp");
        let dir = tempfile::tempdir().unwrap();
        let demo = |args: &[&str]| -> serde_json::Value {
            let out = Command::new(bin)
                .current_dir(dir.path())
                .args(["--log", "warn", "demo", "--json"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let v = demo(&[]);
        let h = &v["hybrid"];
        for key in [
            "windows_accepted",
            "windows_rejected",
            "steps_total",
            "steps_surrogate",
            "wall_s",
            "fe_s",
            "inference_s",
            "transfer_s",
            "indicator_s",
            "reference_wall_s",
            "speedup",
            "max_rel_l2_error",
            "indicator_threshold",
        ] {
            assert!(
                h[key].is_number(),
                "the demo's hybrid object lacks `{key}`: {h}"
            );
        }
        assert_eq!(h["steps_total"], 100);
        // The shipped model is trained: at the demo's calibrated tolerance it takes windows
        // over and the run stays near the reference (docs/coupling.md: 3 of 5, 8.1 % with the
        // central hand-back; BDF2's 15 % would fail here).
        assert!(h["windows_accepted"].as_u64().unwrap() >= 2, "{h}");
        assert!(h["max_rel_l2_error"].as_f64().unwrap() < 0.13, "{h}");
        let f = hdf5::File::open(dir.path().join("wavecp_demo.vtkhdf")).unwrap();
        for field in ["u", "u_ref", "u_diff", "stepper"] {
            assert!(
                f.dataset(&format!("VTKHDF/PointData/{field}")).is_ok(),
                "{field}"
            );
        }
        // Tolerance 0: nothing accepted, the reference's error exactly 0.
        let v = demo(&["--set", "coupling.tolerance=0"]);
        assert_eq!(v["hybrid"]["windows_accepted"], 0);
        assert_eq!(v["hybrid"]["max_rel_l2_error"].as_f64(), Some(0.0));
        // The shipped model's script, at a small size, makes a calibrated model the demo runs.
        let small = dir.path().join("small.safetensors");
        let out = Command::new("bash")
            .arg(crate::common::repo("scripts/make-demo-model"))
            .arg(dir.path().join("work"))
            .env("WAVECP", bin)
            .env("DEMO_SAMPLES", "4")
            .env("DEMO_EPOCHS", "1")
            .env("DEMO_SCENARIOS", "2")
            .env("DEMO_TARGET", &small)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = wavecp::surrogate::modelfile::load(&small).unwrap();
        let c = l
            .meta
            .calibrations
            .get("fe_probe")
            .cloned()
            .expect("the script calibrates the model");
        assert_eq!((c.indicator.as_str(), c.scores.len()), ("fe_probe", 25));
        let v = demo(&["--set", &format!("coupling.model=\"{}\"", small.display())]);
        assert_eq!(v["hybrid"]["steps_total"], 100);
    }
}
