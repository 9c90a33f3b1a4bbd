//! Conditioning channels: what a network needs besides the zone's own frames to forecast waves
//! that enter the zone from outside (issue 19): the grid coordinates, the frame times and the
//! scenario's parameters, each an input channel beside the frames, scaled to about [−1, 1].

use serde::{Deserialize, Serialize};

/// Names of a dataset's sampled parameters, in the order `wavecp dataset` stores them.
pub const PARAMS: [&str; 6] = [
    "source_x",
    "source_y",
    "frequency",
    "amplitude",
    "delay",
    "speed",
];

/// The extra input channels of a conditioned model, after the frames' channel: `x`, `y` (grid
/// coordinates), `t` (each input frame's time), then the scenario parameters ([`PARAMS`]).
/// Channel `k` is fed as `(v − center[k]) / half_width[k]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conditioning {
    pub channels: Vec<String>,
    pub center: Vec<f64>,
    pub half_width: Vec<f64>,
}

/// What one window's conditioning is made from.
#[derive(Debug, Clone, Copy)]
pub struct WindowCond<'a> {
    /// The zone `[x0, x1, y0, y1]` and its grid `ny × nx`.
    pub zone: [f64; 4],
    pub ny: usize,
    pub nx: usize,
    /// Times of the input frames: `t0 + k · frame_dt`.
    pub t0: f64,
    pub frame_dt: f64,
    pub t_in: usize,
    /// The scenario's parameters, in [`PARAMS`] order.
    pub params: &'a [f64],
}

impl Conditioning {
    /// Channels for `nparams` dataset parameters, scaled to the ranges seen in training:
    /// coordinates over the zone, times over `times`, each parameter over `params` (rows of
    /// `nparams`); a parameter that never varies gets a unit half-width (its channel is 0).
    pub fn fit(zone: [f64; 4], times: [f64; 2], params: &[f64], nparams: usize) -> Conditioning {
        let mut channels = vec!["x".to_string(), "y".into(), "t".into()];
        let mid = |a: f64, b: f64| ((a + b) / 2.0, if b > a { (b - a) / 2.0 } else { 1.0 });
        let mut cw = vec![
            mid(zone[0], zone[1]),
            mid(zone[2], zone[3]),
            mid(times[0], times[1]),
        ];
        for k in 0..nparams {
            let col = params.chunks(nparams).map(|r| r[k]);
            let lo = col.clone().fold(f64::INFINITY, f64::min);
            let hi = col.fold(f64::NEG_INFINITY, f64::max);
            channels.push(PARAMS.get(k).copied().unwrap_or("param").to_string());
            cw.push(mid(lo, hi));
        }
        Conditioning {
            channels,
            center: cw.iter().map(|c| c.0).collect(),
            half_width: cw.iter().map(|c| c.1).collect(),
        }
    }

    /// Extra channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// How many scenario parameters the model reads.
    pub fn nparams(&self) -> usize {
        self.len().saturating_sub(3)
    }

    /// Appends one window's channels, `[channel, t_in, ny, nx]`, to `out`.
    pub fn append(&self, w: &WindowCond, out: &mut Vec<f32>) {
        let n = w.ny * w.nx;
        let scale = |k: usize, v: f64| ((v - self.center[k]) / self.half_width[k]) as f32;
        let frac = |i: usize, m: usize| i as f64 / (m.max(2) - 1) as f64;
        for k in 0..self.len() {
            for f in 0..w.t_in {
                match k {
                    0 => {
                        for _ in 0..w.ny {
                            for i in 0..w.nx {
                                let x = w.zone[0] + (w.zone[1] - w.zone[0]) * frac(i, w.nx);
                                out.push(scale(0, x));
                            }
                        }
                    }
                    1 => {
                        for j in 0..w.ny {
                            let y = w.zone[2] + (w.zone[3] - w.zone[2]) * frac(j, w.ny);
                            out.extend(std::iter::repeat_n(scale(1, y), w.nx));
                        }
                    }
                    2 => {
                        let t = w.t0 + f as f64 * w.frame_dt;
                        out.extend(std::iter::repeat_n(scale(2, t), n));
                    }
                    _ => {
                        let v = w.params.get(k - 3).copied().unwrap_or(f64::NAN);
                        out.extend(std::iter::repeat_n(scale(k, v), n));
                    }
                }
            }
        }
    }
}
