//! `wavecp dataset`: FE simulations with sampled sources (and inclusion speeds), recorded on a
//! zone-of-interest grid, written to one HDF5 file per split, resumable.
//!
//! Parameters of sample `i` come from a ChaCha8 stream seeded with `(seed, i)`, so the file does
//! not depend on the number of threads or on how the work was interrupted and resumed.

use crate::config::{
    BoundaryConfig, Config, MaterialConfig, MeshConfig, SolverConfig, SourceConfig, TimeConfig,
};
use crate::sim::DriverError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod file;
mod generate;

pub use generate::{generate, generate_on};

/// A dataset job: the FE model (same keys as a solve job) plus zone, frames, sampling, splits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetJob {
    pub mesh: MeshConfig,
    #[serde(default)]
    pub material: MaterialConfig,
    #[serde(default)]
    pub boundary: Vec<BoundaryConfig>,
    #[serde(default)]
    pub time: StepConfig,
    #[serde(default)]
    pub solver: SolverConfig,
    pub zone: ZoneConfig,
    pub frames: FramesConfig,
    pub sampling: SamplingConfig,
    pub train: SplitConfig,
    pub test: Option<SplitConfig>,
}

/// Time step of every simulation of the dataset (one `dt` for the whole file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub dt: Option<f64>,
    #[serde(default = "crate::config::default_safety")]
    pub safety: f64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            dt: None,
            safety: crate::config::default_safety(),
        }
    }
}

/// The zone of interest: a rectangle sampled on an `nx × ny` vertex grid (edges included).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub x: [f64; 2],
    pub y: [f64; 2],
    pub nx: usize,
    pub ny: usize,
}

/// Frame `k` is the field at solver step `start + k · stride`, `k = 0 … count − 1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramesConfig {
    pub stride: usize,
    pub count: usize,
    #[serde(default)]
    pub start: usize,
}

/// Uniform ranges `[min, max]` of the sampled parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    pub source_x: [f64; 2],
    pub source_y: [f64; 2],
    pub frequency: [f64; 2],
    #[serde(default = "unit_amp")]
    pub amplitude: [f64; 2],
    /// Time of the Ricker peak; default `[1.2/f, 1.2/f]` per sample when absent.
    pub delay: Option<[f64; 2]>,
    /// Optionally sample the wave speed of one region.
    pub inclusion: Option<InclusionSampling>,
    /// Draw sources only at least this far outside the zone (a submodel's dataset, whose
    /// waves all enter the zone through its sides).
    pub outside_zone: Option<f64>,
}

fn unit_amp() -> [f64; 2] {
    [1.0, 1.0]
}

impl SamplingConfig {
    /// The ranges each column of `/params` is drawn from, in its order
    /// ([`DatasetJob::param_names`]); the delay's, when it follows the frequency (`1.2/f`),
    /// is the one that makes.
    pub fn ranges(&self) -> Vec<[f64; 2]> {
        let [f0, f1] = self.frequency;
        let delay = (self.delay).unwrap_or([f1, f0].map(crate::sources::ricker_default_delay));
        let mut v = vec![
            self.source_x,
            self.source_y,
            self.frequency,
            self.amplitude,
            delay,
        ];
        if let Some(inc) = &self.inclusion {
            v.push(inc.speed);
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionSampling {
    pub region: String,
    pub speed: [f64; 2],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    pub samples: usize,
    pub seed: u64,
    /// HDF5 file, relative to the working directory.
    pub path: PathBuf,
}

/// What a generation reports.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub path: PathBuf,
    pub samples: usize,
    pub generated: usize,
    pub resumed: usize,
    pub frames: usize,
    pub nx: usize,
    pub ny: usize,
    pub dt: f64,
    pub frame_dt: f64,
    pub mean: f64,
    pub std: f64,
    pub wall_s: f64,
}

/// Options that are not part of the job.
#[derive(Debug, Clone, Default)]
pub struct DatasetOptions {
    pub progress: bool,
    /// Replace an existing file made from a different job instead of refusing.
    pub overwrite: bool,
    /// Test hook: abort the process after this many samples were committed.
    pub abort_after_samples: Option<usize>,
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> DriverError {
    DriverError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

fn range_ok(key: &str, r: [f64; 2], positive: bool) -> Result<(), DriverError> {
    if !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1]) || (positive && r[0] <= 0.0) {
        return Err(invalid(
            key,
            format!(
                "[{}, {}] is not a valid{} range",
                r[0],
                r[1],
                if positive { " positive" } else { "" }
            ),
        ));
    }
    Ok(())
}

impl DatasetJob {
    /// Reads a dataset job with `--set` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, DriverError> {
        let job: DatasetJob = crate::config::load_with_overrides(path, overrides)?;
        job.validate()?;
        job.check_paths(path)?;
        Ok(job)
    }

    /// Refuses a dataset path that would overwrite an input (the job file, the mesh, the nodal
    /// speeds) or the other split, or that names something other than a regular file.
    pub fn check_paths(&self, job_file: &Path) -> Result<(), DriverError> {
        use crate::output::target::{check_replaceable, same_file, which_of};
        let base = job_file.parent().unwrap_or(Path::new(""));
        let inputs = crate::config::input_files(&self.mesh, &self.material, base, Some(job_file));
        let splits = [("train", Some(&self.train)), ("test", self.test.as_ref())];
        for (k, sp) in splits {
            let Some(sp) = sp else { continue };
            let key = format!("{k}.path");
            check_replaceable(&sp.path, "dataset").map_err(|e| invalid(&key, e.to_string()))?;
            if let Some(what) = which_of(&sp.path, &inputs) {
                return Err(invalid(
                    &key,
                    format!("{} is {what}; it would be overwritten", sp.path.display()),
                ));
            }
        }
        if let Some(t) = &self.test {
            if same_file(&t.path, &self.train.path) {
                return Err(invalid("test.path", "is the same file as train.path"));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), DriverError> {
        self.fe_config(0.0, vec![]).validate()?;
        let z = &self.zone;
        if z.nx < 2 || z.ny < 2 {
            return Err(invalid(
                "zone.nx/ny",
                "the grid needs at least 2 × 2 points",
            ));
        }
        range_ok("zone.x", z.x, false)?;
        range_ok("zone.y", z.y, false)?;
        if self.frames.stride == 0 || self.frames.count == 0 {
            return Err(invalid("frames.stride/count", "must be at least 1"));
        }
        // Sizes before anything is allocated or run: the steps to the last frame, one sample's
        // frames in memory, and the whole file.
        let f = &self.frames;
        let steps = f.start as f64 + f.count as f64 * f.stride as f64;
        if steps > crate::sim::MAX_STEPS {
            return Err(invalid(
                "frames.start/count/stride",
                format!(
                    "the last frame is {steps:.3e} steps away, more than the limit of {:e}",
                    crate::sim::MAX_STEPS
                ),
            ));
        }
        let frame_bytes = 4.0 * z.nx as f64 * z.ny as f64;
        crate::limits::check_memory(2.0 * frame_bytes * f.count as f64, "one sample's frames")
            .map_err(|m| invalid("zone.nx/ny, frames.count", m))?;
        for (k, sp) in [("train", Some(&self.train)), ("test", self.test.as_ref())] {
            let Some(sp) = sp else { continue };
            let file = frame_bytes * f.count as f64 * sp.samples as f64;
            // One pebibyte: beyond any disk a dataset job is meant for, and beyond what the
            // sample counters and HDF5 dimensions are tested with.
            if file > f64::from(1u32 << 25) * f64::from(1u32 << 25) {
                return Err(invalid(
                    format!("{k}.samples"),
                    format!(
                        "the file would hold {:.3e} bytes of frames (more than 1 PiB)",
                        file
                    ),
                ));
            }
        }
        let s = &self.sampling;
        range_ok("sampling.source_x", s.source_x, false)?;
        if let Some(m) = s.outside_zone.filter(|m| !(m.is_finite() && *m >= 0.0)) {
            return Err(invalid(
                "sampling.outside_zone",
                format!("{m} is not a distance (finite, at least 0)"),
            ));
        }
        range_ok("sampling.source_y", s.source_y, false)?;
        range_ok("sampling.frequency", s.frequency, true)?;
        range_ok("sampling.amplitude", s.amplitude, false)?;
        if let Some(d) = s.delay {
            range_ok("sampling.delay", d, false)?;
        }
        if let Some(inc) = &s.inclusion {
            range_ok("sampling.inclusion.speed", inc.speed, true)?;
            if self.material.regions.is_none() {
                return Err(invalid(
                    "sampling.inclusion",
                    "needs per-region speeds in [material.regions]",
                ));
            }
        }
        for (k, sp) in [("train", Some(&self.train)), ("test", self.test.as_ref())] {
            if let Some(sp) = sp {
                if sp.samples == 0 {
                    return Err(invalid(format!("{k}.samples"), "must be at least 1"));
                }
            }
        }
        if let Some(t) = &self.test {
            if t.seed == self.train.seed {
                return Err(invalid(
                    "test.seed",
                    "must differ from train.seed (same seed, same samples)",
                ));
            }
        }
        Ok(())
    }

    /// The FE job of one sample: the model with the given sources, run to `end` (with
    /// [`crate::sim::from_job`], a simulation of one of this dataset's scenarios).
    pub fn fe_config(&self, end: f64, source: Vec<SourceConfig>) -> Config {
        Config {
            mesh: self.mesh.clone(),
            material: self.material.clone(),
            boundary: self.boundary.clone(),
            source,
            checkpoint: Default::default(),
            initial: Default::default(),
            time: TimeConfig {
                end: if end > 0.0 { end } else { 1.0 },
                dt: self.time.dt,
                safety: self.time.safety,
            },
            receiver: vec![],
            output: crate::config::OutputConfig {
                path: PathBuf::new(),
                every: 1,
                xdmf: false,
            },
            solver: self.solver.clone(),
            coupling: None,
        }
    }

    /// Names of the columns of `/params`.
    pub fn param_names(&self) -> Vec<&'static str> {
        let mut v = vec!["source_x", "source_y", "frequency", "amplitude", "delay"];
        if self.sampling.inclusion.is_some() {
            v.push("inclusion_speed");
        }
        v
    }

    fn steps(&self) -> usize {
        self.frames.start + (self.frames.count - 1) * self.frames.stride
    }
}
