//! Datasets in memory and the windows cut from them: `t_in` frames in, the next `t_out` out.

use super::condition::{Conditioning, WindowCond};
use super::{file_err, SurrogateError};
use crate::nn::Tensor;
use std::path::{Path, PathBuf};

/// A dataset file read whole: `frames [samples, frames, ny, nx]` and its statistics.
#[derive(Debug, Clone)]
pub struct FrameSet {
    pub path: PathBuf,
    pub frames: Vec<f32>,
    pub samples: usize,
    pub nframes: usize,
    pub ny: usize,
    pub nx: usize,
    pub mean: f64,
    pub std: f64,
    pub frame_dt: f64,
    /// The zone grid's extent `[x0, x1, y0, y1]` (from `/grid/x`, `/grid/y`; `None` in files
    /// without them).
    pub zone: Option<[f64; 4]>,
    /// Each sample's parameters and, for a conditioned model, its extra input channels.
    pub scenarios: Scenarios,
}

/// The sampled parameters of a frame set and the conditioning its windows are fed with.
#[derive(Debug, Clone, Default)]
pub struct Scenarios {
    /// `[samples, nparams]` (`/params` of the file; empty in files without it).
    pub params: Vec<f64>,
    pub nparams: usize,
    /// Time of frame 0 (`start · dt`; 0 in files without them).
    pub frame_t0: f64,
    /// When set, [`WindowSpec::batch`] feeds these channels beside the frames.
    pub cond: Option<Conditioning>,
    /// The dataset job's `material.c` (1 when absent).
    pub speed: f64,
    /// The dataset job's generated rectangle, when all four of its sides are absorbing.
    pub walls: Option<[f64; 4]>,
    /// With a prior channel: the prior at every frame, `[samples, frames, ny, nx]`.
    pub prior: Vec<f32>,
    /// The ranges the dataset job drew the parameters from (its `[sampling]`, from the job
    /// text the file keeps), one per column of `params`.
    pub sampled: Option<Vec<[f64; 2]>>,
}

impl FrameSet {
    /// Reads `/frames` (and its `mean`/`std` attributes) of a `wavecp dataset` file. Samples not
    /// marked done (an interrupted generation) are refused.
    pub fn load(path: &Path) -> Result<Self, SurrogateError> {
        let e = |m: hdf5::Error| file_err(path, format!("not a wavecp dataset ({m})"));
        let f = hdf5::File::open(path).map_err(e)?;
        let ds = f.dataset("frames").map_err(e)?;
        let sh = ds.shape();
        if sh.len() != 4 {
            return Err(file_err(
                path,
                format!("/frames has shape {sh:?}, expected [samples, frames, ny, nx]"),
            ));
        }
        // Sizes before reading: a damaged dimension must not become an allocation of exabytes.
        if sh.contains(&0) {
            return Err(file_err(
                path,
                format!("/frames has shape {sh:?}: the dataset is empty"),
            ));
        }
        let values = sh.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some(values) = values.filter(|v| v.checked_mul(4).is_some()) else {
            return Err(file_err(
                path,
                format!("/frames has shape {sh:?}, too large to be real (a damaged file?)"),
            ));
        };
        crate::limits::check_memory(4.0 * values as f64, &format!("/frames {sh:?}"))
            .map_err(|m| file_err(path, m))?;
        if let Ok(done) = f.dataset("done").and_then(|d| d.read_raw::<u8>()) {
            if let Some(i) = done.iter().position(|d| *d == 0) {
                return Err(file_err(path, format!("sample {i} was never generated (interrupted run): rerun `wavecp dataset` to finish it")));
            }
        }
        let frames: Vec<f32> = ds.read_raw().map_err(e)?;
        let mean = ds
            .attr("mean")
            .and_then(|a| a.read_scalar::<f64>())
            .map_err(|_| {
                file_err(
                    path,
                    "/frames has no `mean` attribute (generation did not finish)",
                )
            })?;
        let std = ds
            .attr("std")
            .and_then(|a| a.read_scalar::<f64>())
            .map_err(e)?;
        let frame_dt = f
            .attr("frame_dt")
            .and_then(|a| a.read_scalar::<f64>())
            .unwrap_or(f64::NAN);
        if frames.iter().any(|v| !v.is_finite()) {
            return Err(file_err(path, "frames contain NaN or Inf"));
        }
        if !mean.is_finite() || !std.is_finite() || std < 0.0 {
            return Err(file_err(
                path,
                format!("/frames has mean = {mean}, std = {std}: damaged statistics"),
            ));
        }
        if std == 0.0 {
            return Err(file_err(
                path,
                format!("/frames has std = 0: every value equals the mean {mean}, so there is nothing to learn or compare (did the waves reach the zone?)"),
            ));
        }
        let ends = |name: &str| -> Option<[f64; 2]> {
            let v = f.dataset(name).and_then(|d| d.read_raw::<f64>()).ok()?;
            Some([*v.first()?, *v.last()?])
        };
        let zone = ends("grid/x")
            .zip(ends("grid/y"))
            .map(|(x, y)| [x[0], x[1], y[0], y[1]]);
        let scenarios = Scenarios::read(&f, sh[0]);
        Ok(FrameSet {
            scenarios,
            path: path.to_path_buf(),
            frames,
            samples: sh[0],
            nframes: sh[1],
            ny: sh[2],
            nx: sh[3],
            mean,
            std,
            frame_dt,
            zone,
        })
    }

    /// The conditioning of window `(s, t0)`: its input frames' times and sample `s`'s parameters.
    pub fn window_cond(&self, s: usize, t0: usize, t_in: usize) -> WindowCond<'_> {
        let sc = &self.scenarios;
        let p = sc.nparams;
        WindowCond {
            zone: self.zone.unwrap_or([0.0, 1.0, 0.0, 1.0]),
            ny: self.ny,
            nx: self.nx,
            t0: sc.frame_t0 + t0 as f64 * self.frame_dt,
            frame_dt: self.frame_dt,
            t_in,
            params: sc.params.get(s * p..(s + 1) * p).unwrap_or(&[]),
            prior: {
                let (n, at) = (self.ny * self.nx, s * self.nframes + t0 + t_in);
                (t0 + 2 * t_in <= self.nframes)
                    .then(|| sc.prior.get(at * n..(at + t_in) * n))
                    .flatten()
            },
        }
    }

    /// Computes the prior at every frame of every sample, when the conditioning has one.
    pub fn fill_prior(&mut self) {
        use rayon::prelude::*;
        let Some(cond) = &self.scenarios.cond else {
            return;
        };
        if cond.prior_speed.is_none() {
            return;
        }
        let per: Vec<Vec<f32>> = (0..self.samples)
            .into_par_iter()
            .map(|s| {
                let w = self.window_cond(s, 0, 1);
                let mut v = Vec::with_capacity(self.nframes * self.ny * self.nx);
                for k in 0..self.nframes {
                    let t = self.scenarios.frame_t0 + k as f64 * self.frame_dt;
                    cond.prior_frame(&w, t, &mut v);
                }
                v
            })
            .collect();
        self.scenarios.prior = per.concat();
    }

    fn frame(&self, s: usize, t: usize) -> &[f32] {
        let n = self.ny * self.nx;
        let o = (s * self.nframes + t) * n;
        &self.frames[o..o + n]
    }
}

/// A frame value as the network sees it: `(v − mean) / std` in f64, rounded to f32. The CPU
/// batches and the frame set kept on the GPU both go through it, so they are the same bits.
pub fn normalise(v: f32, mean: f64, std: f64) -> f32 {
    ((v as f64 - mean) / std) as f32
}

/// How windows become tensors for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub t_in: usize,
    pub t_out: usize,
    /// 2: frames as channels `[B, t, 1, ny, nx]`; 3: `[B, 1, t, ny, nx]`.
    pub dims: usize,
}

impl WindowSpec {
    /// Window starts `(sample, t0)` over `samples`, `stride` frames apart.
    pub fn windows(&self, fs: &FrameSet, samples: &[usize], stride: usize) -> Vec<(usize, usize)> {
        let span = self.t_in + self.t_out;
        let mut v = vec![];
        for &s in samples {
            let mut t0 = 0;
            while t0 + span <= fs.nframes {
                v.push((s, t0));
                t0 += stride.max(1);
            }
        }
        v
    }

    pub fn shape(&self, b: usize, t: usize, ny: usize, nx: usize) -> Vec<usize> {
        if self.dims == 2 {
            vec![b, t, 1, ny, nx]
        } else {
            vec![b, 1, t, ny, nx]
        }
    }

    /// Normalised frames `t0 .. t0 + t` of each window, stacked (same memory layout for 2-D and 3-D).
    pub fn stack(
        &self,
        fs: &FrameSet,
        wins: &[(usize, usize)],
        offset: usize,
        t: usize,
        mean: f64,
        std: f64,
    ) -> Tensor {
        let mut data = Vec::with_capacity(wins.len() * t * fs.ny * fs.nx);
        for &(s, t0) in wins {
            for k in 0..t {
                data.extend(
                    fs.frame(s, t0 + offset + k)
                        .iter()
                        .map(|&v| normalise(v, mean, std)),
                );
            }
        }
        Tensor {
            shape: self.shape(wins.len(), t, fs.ny, fs.nx),
            data,
        }
    }

    /// Input and target tensors of a batch of windows.
    pub fn batch(
        &self,
        fs: &FrameSet,
        wins: &[(usize, usize)],
        mean: f64,
        std: f64,
    ) -> (Tensor, Tensor) {
        (
            self.input(fs, wins, mean, std),
            self.stack(fs, wins, self.t_in, self.t_out, mean, std),
        )
    }

    /// The input tensor of a batch of windows; with conditioning (3-D models) it is
    /// `[B, 1 + channels, t_in, ny, nx]`, the frames first.
    pub fn input(&self, fs: &FrameSet, wins: &[(usize, usize)], mean: f64, std: f64) -> Tensor {
        let x = self.stack(fs, wins, 0, self.t_in, mean, std);
        let Some(cond) = &fs.scenarios.cond else {
            return x;
        };
        let per = self.t_in * fs.ny * fs.nx;
        let mut data = Vec::with_capacity(wins.len() * per * (1 + cond.len()));
        for (w, &(s, t0)) in x.data.chunks(per).zip(wins) {
            data.extend_from_slice(w);
            cond.append(&fs.window_cond(s, t0, self.t_in), &mut data);
        }
        let shape = vec![wins.len(), 1 + cond.len(), self.t_in, fs.ny, fs.nx];
        Tensor { shape, data }
    }
}

impl Scenarios {
    /// `/params` and the `start`, `dt` attributes of a dataset file, where present.
    fn read(f: &hdf5::File, samples: usize) -> Scenarios {
        let params = f
            .dataset("params")
            .and_then(|d| d.read_raw::<f64>())
            .unwrap_or_default();
        let nparams = if samples > 0 && params.len().is_multiple_of(samples) {
            params.len() / samples
        } else {
            0
        };
        let attr_u = |n: &str| f.attr(n).and_then(|a| a.read_scalar::<u64>()).ok();
        let attr_f = |n: &str| f.attr(n).and_then(|a| a.read_scalar::<f64>()).ok();
        let frame_t0 = match (attr_u("start"), attr_f("dt")) {
            (Some(s), Some(dt)) => s as f64 * dt,
            _ => 0.0,
        };
        // The job's wave speed and absorbing rectangle, from the job text the file keeps.
        let job = f
            .attr("job")
            .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
            .ok()
            .and_then(|t| t.as_str().parse::<toml::Table>().ok());
        let speed = job
            .as_ref()
            .and_then(|t| t.get("material")?.get("c")?.as_float())
            .unwrap_or(1.0);
        let walls = job.as_ref().and_then(absorbing_rectangle);
        let sampled = (job.as_ref())
            .and_then(|t| t.get("sampling")?.clone().try_into().ok())
            .map(|s: crate::dataset::SamplingConfig| s.ranges())
            .filter(|r| r.len() == nparams);
        Scenarios {
            sampled,
            params: if nparams > 0 { params } else { vec![] },
            nparams,
            frame_t0,
            cond: None,
            speed,
            walls,
            prior: vec![],
        }
    }
}

/// `[x0, x1, y0, y1]` of a job's generated rectangle when `left`, `right`, `top` and `bottom`
/// are all absorbing.
fn absorbing_rectangle(job: &toml::Table) -> Option<[f64; 4]> {
    let g = job.get("mesh")?.get("generate")?;
    let range = |k: &str| -> Option<[f64; 2]> {
        match g.get(k) {
            None => Some([0.0, 1.0]),
            Some(v) => {
                let a = v.as_array()?;
                let f = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
                Some([f(a.first()?)?, f(a.get(1)?)?])
            }
        }
    };
    let (x, y) = (range("x")?, range("y")?);
    let mut sides = std::collections::BTreeSet::new();
    for b in job.get("boundary")?.as_array()? {
        if b.get("kind")?.as_str()? != "absorbing" {
            continue;
        }
        for t in b.get("tags")?.as_array()? {
            if let Some(name) = t.as_str() {
                sides.insert(name.to_string());
            }
        }
    }
    ["left", "right", "top", "bottom"]
        .iter()
        .all(|s| sides.contains(*s))
        .then_some([x[0], x[1], y[0], y[1]])
}
