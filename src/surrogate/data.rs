//! Datasets in memory and the windows cut from them: `t_in` frames in, the next `t_out` out.

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
        Ok(FrameSet {
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
            self.stack(fs, wins, 0, self.t_in, mean, std),
            self.stack(fs, wins, self.t_in, self.t_out, mean, std),
        )
    }
}
