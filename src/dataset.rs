//! `wavecp dataset`: FE simulations with sampled sources (and inclusion speeds), recorded on a
//! zone-of-interest grid, written to one HDF5 file per split, resumable.
//!
//! Parameters of sample `i` come from a ChaCha8 stream seeded with `(seed, i)`, so the file does
//! not depend on the number of threads or on how the work was interrupted and resumed.

use crate::config::{
    BoundaryConfig, Config, MaterialConfig, MeshConfig, SolverConfig, SourceConfig, TimeConfig,
};
use crate::fem::WaveSpeed;
use crate::mesh::PointLocation;
use crate::output::OutputError;
use crate::progress::Progress;
use crate::sim::{self, DriverError, Simulation};
use crate::solver::WaveSolver;
use hdf5::types::VarLenUnicode;
use ndarray::s;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

fn unit_amp() -> [f64; 2] {
    [1.0, 1.0]
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

    /// The FE job of one sample: the model with the given sources, run to `end`.
    fn fe_config(&self, end: f64, source: Vec<SourceConfig>) -> Config {
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

/// A finished simulation: sample index, parameters, frames `[frames, ny, nx]`.
type Sample = (usize, Vec<f64>, Vec<f32>);

/// One sample's parameters, drawn from its own stream; positions outside the mesh are redrawn.
fn draw(
    job: &DatasetJob,
    seed: u64,
    index: usize,
    inside: impl Fn([f64; 2]) -> bool,
) -> Result<Vec<f64>, DriverError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    let s = &job.sampling;
    let mut u = |r: [f64; 2]| {
        if r[1] > r[0] {
            rng.random_range(r[0]..=r[1])
        } else {
            r[0]
        }
    };
    let mut pos = None;
    for _ in 0..1000 {
        let p = [u(s.source_x), u(s.source_y)];
        if inside(p) {
            pos = Some(p);
            break;
        }
    }
    let p = pos.ok_or_else(|| {
        invalid(
            "sampling.source_x/source_y",
            "1000 draws in this rectangle all fell outside the mesh",
        )
    })?;
    let f = u(s.frequency);
    let a = u(s.amplitude);
    let d = match s.delay {
        Some(r) => u(r),
        None => 1.2 / f,
    };
    let mut v = vec![p[0], p[1], f, a, d];
    if let Some(inc) = &s.inclusion {
        v.push(u(inc.speed));
    }
    Ok(v)
}

/// Generates (or resumes) one split. `base` is the job file's folder.
pub fn generate(
    job: &DatasetJob,
    base: &Path,
    split: &SplitConfig,
    opts: &DatasetOptions,
) -> Result<DatasetSummary, DriverError> {
    generate_on(job, base, split, opts, &crate::comm::Serial)
}

/// As [`generate`] over the ranks of `comm` (collective): each rank runs whole simulations
/// (sample `k` of every batch on rank `k mod ranks`) and rank 0 writes them, in sample order, to
/// the one file, which is the same as the serial one for the same seed.
pub fn generate_on(
    job: &DatasetJob,
    base: &Path,
    split: &SplitConfig,
    opts: &DatasetOptions,
    comm: &dyn crate::comm::Comm,
) -> Result<DatasetSummary, DriverError> {
    let root = comm.rank() == 0;
    let wall = std::time::Instant::now();
    // 1. The model, once: mesh, base speeds, the inclusion's cells.
    let cfg = job.fe_config(1.0, vec![]);
    let setup = sim::setup(&cfg, base)?;
    let mesh = &setup.problem.mesh;
    let base_speed = match &setup.problem.speed {
        WaveSpeed::PerCell(c) => c.clone(),
        WaveSpeed::Nodal(_) => vec![],
    };
    let inclusion_tag = match &job.sampling.inclusion {
        Some(inc) => Some(mesh.resolve_tag(2, &inc.region).ok_or_else(|| {
            invalid(
                "sampling.inclusion.region",
                format!("no region `{}` in the mesh", inc.region),
            )
        })?),
        None => None,
    };
    let cell_tags = mesh.cell_tags();
    let speed_for = |inc: Option<f64>| -> WaveSpeed {
        match (inc, inclusion_tag) {
            (Some(c), Some(tag)) => WaveSpeed::PerCell(
                base_speed
                    .iter()
                    .zip(&cell_tags)
                    .map(|(b, t)| if *t == tag { c } else { *b })
                    .collect(),
            ),
            _ => setup.problem.speed.clone(),
        }
    };
    // 2. One dt for all samples: the limit at the fastest inclusion speed of the range.
    let dt = {
        let worst = crate::solver::Problem {
            mesh: mesh.clone(),
            speed: speed_for(job.sampling.inclusion.as_ref().map(|i| i.speed[1])),
            boundaries: setup.problem.boundaries.clone(),
            sources: vec![],
            operator: job.solver.operator,
        };
        let mut s = WaveSolver::new(&worst)?;
        let dt = job.time.dt.unwrap_or(job.time.safety * s.dt_limit());
        s.set_dt(dt)?;
        dt
    };
    // 3. The zone grid and its interpolation stencils.
    let z = &job.zone;
    let gx: Vec<f64> = (0..z.nx)
        .map(|i| z.x[0] + (z.x[1] - z.x[0]) * i as f64 / (z.nx - 1) as f64)
        .collect();
    let gy: Vec<f64> = (0..z.ny)
        .map(|j| z.y[0] + (z.y[1] - z.y[0]) * j as f64 / (z.ny - 1) as f64)
        .collect();
    let locator = mesh.locator();
    let mut stencils: Vec<PointLocation> = Vec::with_capacity(z.nx * z.ny);
    for &y in &gy {
        for &x in &gx {
            stencils.push(locator.locate([x, y]).ok_or_else(|| {
                invalid("zone", format!("grid point ({x}, {y}) is outside the mesh"))
            })?);
        }
    }
    // 4. The file: new, or resumed when it was made from the same job and split.
    let names = job.param_names();
    let fingerprint = format!(
        "{}\n[split]\nsamples = {}\nseed = {}\n",
        toml::to_string(job).unwrap_or_default(),
        split.samples,
        split.seed
    );
    // Rank 0 owns the file and tells the others which samples are still to do (or its error).
    let mut file = None;
    let mut msg = Vec::new();
    if root {
        let opened = DatasetFile::open(
            &split.path,
            &fingerprint,
            opts.overwrite,
            split.samples,
            job.frames.count,
            z.ny,
            z.nx,
            &names,
        )
        .and_then(|mut f| {
            f.write_meta(
                &gx,
                &gy,
                dt,
                job.frames.stride,
                job.frames.start,
                split.seed,
            )?;
            Ok(f)
        });
        match opened {
            Ok(f) => {
                let pending: Vec<u64> = (0..split.samples)
                    .filter(|i| !f.done[*i])
                    .map(|i| i as u64)
                    .collect();
                msg.push(0u8);
                msg.extend(crate::comm::to_bytes(&pending));
                file = Some(f);
            }
            Err(e) => {
                msg.push(1u8);
                msg.extend(e.to_string().into_bytes());
                comm.broadcast_bytes(&mut msg);
                return Err(e);
            }
        }
    }
    comm.broadcast_bytes(&mut msg);
    if msg.first() != Some(&0) {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    let pending: Vec<usize> = bincode::deserialize::<Vec<u64>>(&msg[1..])
        .map_err(|e| DriverError::OtherRank(e.to_string()))?
        .into_iter()
        .map(|i| i as usize)
        .collect();
    let resumed = split.samples - pending.len();
    if resumed > 0 {
        tracing::info!(
            "{}: resuming, {resumed} of {} samples already done",
            split.path.display(),
            split.samples
        );
    }
    // 5. Simulations in parallel batches; each batch is written and committed before the next.
    let nsteps = job.steps();
    let mut progress = Progress::new(
        "dataset",
        pending.len() as u64,
        opts.progress && root,
        Duration::from_secs(10),
    );
    let (rank, ranks) = (comm.rank(), comm.size());
    let batch = (2 * rayon::current_num_threads()).max(1) * ranks;
    let frame_len = job.frames.count * z.nx * z.ny;
    let mut committed = 0;
    for chunk in pending.chunks(batch) {
        let mine: Vec<usize> = chunk.iter().copied().skip(rank).step_by(ranks).collect();
        let results: Vec<Result<Sample, DriverError>> = mine
            .par_iter()
            .map(|&i| {
                let params = draw(job, split.seed, i, |p| locator.locate(p).is_some())?;
                let src = SourceConfig {
                    position: [params[0], params[1]],
                    frequency: params[2],
                    amplitude: params[3],
                    delay: Some(params[4]),
                };
                let source = sim::point_source(mesh, &src)
                    .ok_or_else(|| invalid("sampling", "source outside the mesh"))?;
                let problem = crate::solver::Problem {
                    mesh: mesh.clone(),
                    speed: speed_for(params.get(5).copied()),
                    boundaries: setup.problem.boundaries.clone(),
                    sources: vec![source],
                    operator: job.solver.operator,
                };
                let mut solver = WaveSolver::new(&problem)?;
                solver.set_dt(dt)?;
                let zero = vec![0.0; mesh.num_nodes()];
                solver.set_initial(&zero, &zero)?;
                let mut sim = Simulation::serial(solver)?;
                // Frame f is the field at step start + f·stride (the last one is step nsteps).
                let mut frames = Vec::with_capacity(job.frames.count * stencils.len());
                for f in 0..job.frames.count {
                    let at = job.frames.start + f * job.frames.stride;
                    sim.advance(at - sim.steps_done());
                    let u = sim.solver().u();
                    frames.extend(stencils.iter().map(|s| s.interpolate(u) as f32));
                }
                debug_assert_eq!(sim.steps_done(), nsteps);
                sim.solver().check_finite()?;
                Ok((i, params, frames))
            })
            .collect();
        // Every rank's samples to rank 0 as one f64 record each: index, parameters, frames
        // (f32 → f64 → f32 is exact).
        let mut records = Vec::with_capacity(mine.len() * (1 + names.len() + frame_len));
        for r in results {
            let (i, params, frames) = r?;
            records.push(i as f64);
            records.extend(&params);
            records.extend(frames.iter().map(|&v| f64::from(v)));
        }
        let Some(all) = comm.gather_f64(&records) else {
            continue;
        };
        let Some(file) = file.as_mut() else {
            continue;
        };
        let rec = 1 + names.len() + frame_len;
        let mut samples: Vec<Sample> = all
            .chunks_exact(rec)
            .map(|r| {
                (
                    r[0] as usize,
                    r[1..1 + names.len()].to_vec(),
                    r[1 + names.len()..].iter().map(|&v| v as f32).collect(),
                )
            })
            .collect();
        samples.sort_by_key(|s| s.0);
        for (i, params, frames) in samples {
            file.write_sample(i, &params, &frames)?;
            committed += 1;
            progress.set(committed as u64);
            if opts.abort_after_samples == Some(committed) {
                file.flush()?;
                std::process::abort();
            }
        }
        file.flush()?;
    }
    progress.finish();
    // 6. Normalisation statistics over all frames, summed in sample order (on rank 0, which
    // shares them so every rank returns the same summary).
    let mut stats = [0.0, 0.0];
    if let Some(f) = file.as_mut() {
        let (m, s) = f.statistics()?;
        stats = [m, s];
    }
    comm.sum_f64(&mut stats);
    let [mean, std] = stats;
    Ok(DatasetSummary {
        path: split.path.clone(),
        samples: split.samples,
        generated: pending.len(),
        resumed,
        frames: job.frames.count,
        nx: z.nx,
        ny: z.ny,
        dt,
        frame_dt: dt * job.frames.stride as f64,
        mean,
        std,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

/// The dataset HDF5 file: `/frames [samples, frames, ny, nx]` f32, `/params [samples, p]`,
/// `/param_names`, `/done [samples]`, `/grid/x`, `/grid/y`; attributes `dt`, `stride`, `start`,
/// `frame_dt`, `seed`, `job` on the root and `mean`, `std` on `/frames`.
struct DatasetFile {
    file: hdf5::File,
    path: PathBuf,
    done: Vec<bool>,
    /// Held while the file is written: a second generation on the same path is refused
    /// before `--overwrite` could truncate it.
    _lock: crate::output::target::FileLock,
}

impl DatasetFile {
    #[allow(clippy::too_many_arguments)]
    fn open(
        path: &Path,
        fingerprint: &str,
        overwrite: bool,
        samples: usize,
        frames: usize,
        ny: usize,
        nx: usize,
        names: &[&str],
    ) -> Result<Self, DriverError> {
        let e = |err: hdf5::Error| OutputError::Hdf5 {
            file: path.to_path_buf(),
            msg: err.to_string(),
        };
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let lock = crate::output::target::FileLock::claim(path)?;
        if existed {
            let existing = hdf5::File::open_rw(path).map_err(e)?;
            let same = existing
                .attr("job")
                .and_then(|a| a.read_scalar::<VarLenUnicode>())
                .map(|s| s.as_str() == fingerprint)
                .unwrap_or(false);
            if same {
                let done: Vec<u8> = existing
                    .dataset("done")
                    .and_then(|d| d.read_raw())
                    .map_err(e)?;
                return Ok(DatasetFile {
                    file: existing,
                    path: path.to_path_buf(),
                    done: done.iter().map(|d| *d != 0).collect(),
                    _lock: lock,
                });
            }
            if !overwrite {
                return Err(invalid("output path", format!("{} exists and was made from a different job or split; delete it or pass --overwrite", path.display())));
            }
            drop(existing);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
                file: dir.to_path_buf(),
                source,
            })?;
        }
        let file = hdf5::File::create(path).map_err(e)?;
        let make = || -> hdf5::Result<()> {
            file.new_dataset::<f32>()
                .chunk((1, frames, ny, nx))
                .shape((samples, frames, ny, nx))
                .create("frames")?;
            file.new_dataset::<f64>()
                .shape((samples, names.len()))
                .create("params")?;
            let n: Vec<VarLenUnicode> = names
                .iter()
                .map(|s| s.parse().unwrap_or_default())
                .collect();
            file.new_dataset_builder()
                .with_data(&n)
                .create("param_names")?;
            file.new_dataset_builder()
                .with_data(&vec![0u8; samples])
                .create("done")?;
            let fp: VarLenUnicode = fingerprint.parse().unwrap_or_default();
            file.new_attr::<VarLenUnicode>()
                .create("job")?
                .write_scalar(&fp)?;
            file.flush()
        };
        make().map_err(e)?;
        Ok(DatasetFile {
            file,
            path: path.to_path_buf(),
            done: vec![false; samples],
            _lock: lock,
        })
    }

    fn err(&self) -> impl Fn(hdf5::Error) -> OutputError + '_ {
        move |err| OutputError::Hdf5 {
            file: self.path.clone(),
            msg: err.to_string(),
        }
    }

    fn write_meta(
        &mut self,
        gx: &[f64],
        gy: &[f64],
        dt: f64,
        stride: usize,
        start: usize,
        seed: u64,
    ) -> Result<(), DriverError> {
        let f = &self.file;
        let w = || -> hdf5::Result<()> {
            if f.group("grid").is_err() {
                let g = f.create_group("grid")?;
                g.new_dataset_builder().with_data(gx).create("x")?;
                g.new_dataset_builder().with_data(gy).create("y")?;
                f.new_attr::<f64>().create("dt")?.write_scalar(&dt)?;
                f.new_attr::<f64>()
                    .create("frame_dt")?
                    .write_scalar(&(dt * stride as f64))?;
                f.new_attr::<u64>()
                    .create("stride")?
                    .write_scalar(&(stride as u64))?;
                f.new_attr::<u64>()
                    .create("start")?
                    .write_scalar(&(start as u64))?;
                f.new_attr::<u64>().create("seed")?.write_scalar(&seed)?;
            }
            Ok(())
        };
        w().map_err(self.err())?;
        Ok(())
    }

    /// Frames and parameters first, the `done` flag last.
    fn write_sample(
        &mut self,
        i: usize,
        params: &[f64],
        frames: &[f32],
    ) -> Result<(), DriverError> {
        let f = &self.file;
        let w = || -> hdf5::Result<()> {
            let ds = f.dataset("frames")?;
            let sh = ds.shape();
            let view = ndarray::ArrayView3::from_shape((sh[1], sh[2], sh[3]), frames)
                .map_err(|x| hdf5::Error::from(x.to_string().as_str()))?;
            ds.write_slice(view, s![i, .., .., ..])?;
            f.dataset("params")?.write_slice(params, s![i, ..])?;
            f.dataset("done")?.write_slice(&[1u8], s![i..i + 1])
        };
        w().map_err(self.err())?;
        self.done[i] = true;
        Ok(())
    }

    fn flush(&self) -> Result<(), DriverError> {
        self.file.flush().map_err(self.err())?;
        Ok(())
    }

    /// Mean and standard deviation over every value of every frame, in sample order; stored as
    /// attributes of `/frames`.
    fn statistics(&mut self) -> Result<(f64, f64), DriverError> {
        let f = &self.file;
        let w = || -> hdf5::Result<(f64, f64)> {
            let ds = f.dataset("frames")?;
            let n = ds.shape()[0];
            let (mut sum, mut sq, mut count) = (0.0f64, 0.0f64, 0usize);
            for i in 0..n {
                let a: ndarray::Array3<f32> = ds.read_slice(s![i, .., .., ..])?;
                for v in a.iter() {
                    sum += *v as f64;
                    sq += (*v as f64) * (*v as f64);
                }
                count += a.len();
            }
            let mean = sum / count.max(1) as f64;
            let std = (sq / count.max(1) as f64 - mean * mean).max(0.0).sqrt();
            for (name, v) in [("mean", mean), ("std", std)] {
                match ds.attr(name) {
                    Ok(a) => a.write_scalar(&v)?,
                    Err(_) => ds.new_attr::<f64>().create(name)?.write_scalar(&v)?,
                }
            }
            f.flush()?;
            Ok((mean, std))
        };
        Ok(w().map_err(self.err())?)
    }
}
