//! The energy balance indicator with a source acting inside the window: the FE's own frames
//! gain what the source puts in, and the balance subtracts that work, so they score at the
//! floor of the frames' difference quotients while the plain energy change scores the gain.

use crate::common::square;
use crate::coupling::unit;
use wavecp::coupling::hybrid::{EnergyBalance, EnergyChange, Indicator, WindowView};
use wavecp::coupling::transfer::ZoneTransfer;
use wavecp::mesh::CellShape;
use wavecp::sim::Simulation;
use wavecp::solver::{BoundaryKind, Problem, WaveSolver};
use wavecp::sources::{PointSource, TimeFunction};

const STRIDE: usize = 2;

/// The unit square with absorbing sides, at rest, and a Ricker source (3 Hz, peak at 0.35 s)
/// at (0.43, 0.57); `dt` half the stability limit.
fn with_source(source: bool) -> (Problem, f64) {
    let mut p = square(CellShape::Quad, 64, 1.0, Some(BoundaryKind::Absorbing));
    if source {
        p.sources.push(PointSource {
            location: p.mesh.locate([0.43, 0.57]).unwrap(),
            wavelet: TimeFunction::Ricker {
                amplitude: 1.0,
                frequency: 3.0,
                delay: 0.35,
            },
        });
    }
    let dt = 0.5 * WaveSolver::new(&p).unwrap().dt_limit();
    (p, dt)
}

fn sim(p: &Problem, dt: f64) -> Simulation<'static> {
    let mut s = WaveSolver::new(p).unwrap();
    s.set_dt(dt).unwrap();
    Simulation::serial(s).unwrap()
}

/// The scores of `(EnergyChange, EnergyBalance)` for the window after frame `j` of `frames`
/// (frames every `STRIDE` steps), forecast as the true frames scaled by `1 + eps`, on a
/// simulation of `p` advanced to frame `j`.
fn scores(
    p: &Problem,
    dt: f64,
    t: &ZoneTransfer,
    frames: &[Vec<f64>],
    j: usize,
    eps: f64,
) -> (f64, f64) {
    let mut s = sim(p, dt);
    s.advance(j * STRIDE);
    let past: Vec<&[f64]> = frames[j - 2..=j].iter().map(|f| &f[..]).collect();
    let forecast: Vec<Vec<f64>> = frames[j + 1..=j + 2]
        .iter()
        .map(|f| f.iter().map(|a| a * (1.0 + eps)).collect())
        .collect();
    let mut out = [0.0; 2];
    for (k, ind) in [&mut EnergyChange as &mut dyn Indicator, &mut EnergyBalance]
        .into_iter()
        .enumerate()
    {
        out[k] = ind
            .score(WindowView {
                sim: &mut s,
                transfer: t,
                past: &past,
                forecast: &forecast,
                stride: STRIDE,
                reads_forecast: false,
            })
            .unwrap();
    }
    (out[0], out[1])
}

#[test]
fn the_energy_balance_subtracts_the_work_of_a_source_acting_in_the_window() {
    let (p, dt) = with_source(true);
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let mut s = sim(&p, dt);
    let mut frames = vec![];
    let last = (0.6 / dt) as usize;
    while s.steps_done() + STRIDE <= last {
        let mut g = vec![0.0; 65 * 65];
        t.to_grid(s.u(), &mut g).unwrap();
        frames.push(g);
        s.advance(STRIDE);
    }
    // Windows from 0.15 to 0.4 s: the source (3 Hz, peak at 0.35 s) at work throughout.
    let frame_dt = STRIDE as f64 * dt;
    let (p0, _) = with_source(false);
    for start in [0.15, 0.2, 0.25, 0.3, 0.35, 0.4] {
        let j = (start / frame_dt).round() as usize;
        let (change, balance) = scores(&p, dt, &t, &frames, j, 0.0);
        // The same frames set against a solver that knows of no source: its work unaccounted.
        let (_, blind) = scores(&p0, dt, &t, &frames, j, 0.0);
        let off: Vec<f64> = [1e-2, 1e-1]
            .iter()
            .map(|&e| scores(&p, dt, &t, &frames, j, e).1)
            .collect();
        eprintln!(
            "window from t = {start}: energy change {change:.3e}, balance {balance:.3e}, without the source's work {blind:.3e}; a forecast off by 1 % {:.3e}, by 10 % {:.3e}",
            off[0], off[1]
        );
        // Measured: 0.05-3.9, the energy growing from little.
        assert!(change > 0.05, "the source must change the energy: {change}");
        // Measured: 5.6-51x below the unbalanced score.
        assert!(balance < blind / 5.0, "{balance} vs {blind}");
        // The frames' own floor (0.75-7.8 % of the window's starting energy: the frame
        // energies' O(Δ²) error while the energy grows) is that of a forecast 1 % off; one
        // 10 % off scores 7-30x above it.
        assert!(off[1] > 5.0 * balance, "{balance} {off:?}");
    }
}
