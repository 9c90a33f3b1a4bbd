//! The grid-only indicator (`grid_seam`): the third difference in time across the seam of the
//! recorded and the forecast frames. Its floor on the true frames, its growth with the
//! forecast's error, its blind spot (an error that starts after the seam), and that it reads
//! the grid only.

use crate::coupling::hybrid::{problem, sim};
use crate::coupling::unit;
use wavecp::coupling::grid_indicators::{GridSignal, GridSmoothness};
use wavecp::coupling::hybrid::{Indicator, WindowView};
use wavecp::coupling::transfer::ZoneTransfer;

// Frames one step apart: about 75 across the pulse, as the fine job has 25–50 a period. The
// truth's third difference grows as the cube of the spacing: at 4 steps a frame the floor is
// 1.6 % (measured), as large as the errors to be read.
const STRIDE: usize = 1;

/// The FE's frames of the test pulse on `t`'s grid, every `STRIDE` steps.
pub(crate) fn frames(t: &ZoneTransfer, n: usize) -> Vec<Vec<f64>> {
    let p = problem();
    let mut s = sim(&p);
    (0..n)
        .map(|k| {
            if k > 0 {
                s.advance(STRIDE);
            }
            let mut g = vec![0.0; t.points()];
            t.to_grid(s.u(), &mut g).unwrap();
            g
        })
        .collect()
}

/// `ind`'s score of the window `past` → `f`, shown a simulation `steps` steps in.
pub(crate) fn score_at(
    ind: &mut dyn Indicator,
    t: &ZoneTransfer,
    steps: usize,
    past: &[Vec<f64>],
    f: &[Vec<f64>],
) -> Result<f64, wavecp::coupling::CouplingError> {
    let p = problem();
    let mut s = sim(&p);
    s.advance(steps);
    let past: Vec<&[f64]> = past.iter().map(|f| &f[..]).collect();
    let score = ind.score(WindowView {
        sim: &mut s,
        transfer: t,
        past: &past,
        forecast: f,
        stride: STRIDE,
        reads_forecast: false,
    });
    // It leaves the simulation where it was.
    assert_eq!(s.steps_done(), steps);
    score
}

fn score(ind: &mut GridSmoothness, t: &ZoneTransfer, past: &[Vec<f64>], f: &[Vec<f64>]) -> f64 {
    score_at(ind, t, 0, past, f).unwrap()
}

#[test]
fn the_seam_reads_a_forecasts_error_above_a_small_floor() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let all = frames(&t, 14);
    let (past, truth) = all.split_at(8);
    let mut scores = vec![];
    for eps in [0.0, 1e-3, 1e-2, 1e-1] {
        let forecast: Vec<Vec<f64>> = truth
            .iter()
            .map(|f| f.iter().map(|a| a * (1.0 + eps)).collect())
            .collect();
        scores.push(score(&mut GridSmoothness::seam(), &t, past, &forecast));
    }
    eprintln!("forecast scaled by 1 + 0, 1e-3, 1e-2, 1e-1: grid_seam {scores:?}");
    assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
    // The truth scores the trajectory's own third difference: small against the errors.
    assert!(scores[0] > 0.0 && scores[0] < 2e-3, "{scores:?}");
    // A scaled forecast puts e, −2e, e (about) on the seam's three sequences: the score is
    // about twice the error once above the floor.
    for (s, eps) in scores[2..].iter().zip([1e-2, 1e-1]) {
        let ratio = (s - scores[0]) / eps;
        assert!(ratio > 1.5 && ratio < 2.5, "{eps}: {s} ({scores:?})");
    }
}

#[test]
fn an_error_that_starts_after_the_seam_passes_unseen() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let all = frames(&t, 14);
    let (past, truth) = all.split_at(8);
    let exact = score(&mut GridSmoothness::seam(), &t, past, truth);
    // The first three forecast frames exact (all the seam's sequences hold), the rest 10 % off.
    let late: Vec<Vec<f64>> = truth
        .iter()
        .enumerate()
        .map(|(j, f)| f.iter().map(|a| if j < 3 { *a } else { a * 1.1 }).collect())
        .collect();
    let blind = score(&mut GridSmoothness::seam(), &t, past, &late);
    // The same differences; only the normalisation (the forecast's RMS) moves.
    assert!((blind - exact).abs() < 0.1 * exact, "{exact} {blind}");
    // Inside the forecast the jump shows: the third difference there sees it.
    let mut rough = GridSmoothness {
        signal: GridSignal::Rough(3),
    };
    let (r_exact, r_late) = (
        score(&mut rough, &t, past, truth),
        score(&mut rough, &t, past, &late),
    );
    assert!(r_late > 20.0 * r_exact, "{r_exact} {r_late}");
}

#[test]
fn the_seam_reads_the_grid_only() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let all = frames(&t, 12);
    let (past, truth) = all.split_at(8);
    let values: Vec<f64> = [0, 17]
        .into_iter()
        .map(|steps| score_at(&mut GridSmoothness::seam(), &t, steps, past, truth).unwrap())
        .collect();
    assert_eq!(values[0].to_bits(), values[1].to_bits());
}

#[test]
fn too_few_frames_are_refused_by_name() {
    let p = problem();
    let t = ZoneTransfer::new(&p.mesh, unit(65)).unwrap();
    let all = frames(&t, 4);
    let err = |ind: &mut GridSmoothness, past: &[Vec<f64>], f: &[Vec<f64>]| {
        score_at(ind, &t, 0, past, f).unwrap_err().to_string()
    };
    // Two recorded frames and one forecast: no third difference fits.
    let e = err(&mut GridSmoothness::seam(), &all[..2], &all[2..3]);
    assert!(e.contains("order 3") && e.contains("4 frames"), "{e}");
    let mut rough = GridSmoothness {
        signal: GridSignal::Rough(3),
    };
    let e = err(&mut rough, &all[..1], &all[1..4]);
    assert!(e.contains("forecasts 3"), "{e}");
    // No forecast at all: an error, not a score of 0 that would trust the window.
    let e = err(&mut GridSmoothness::seam(), &all, &[]);
    assert!(e.contains("needs a forecast"), "{e}");
}
