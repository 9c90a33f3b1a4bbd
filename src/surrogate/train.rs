//! `wavecp train`: mini-batch training on dataset windows, with validation, checkpoints,
//! `--resume`, the best model kept, and a NaN guard.
//!
//! Deterministic: batches are shuffled with a ChaCha8 stream seeded by `(seed, epoch)`, and every
//! reduction runs in a fixed order, so a resumed run ends with the same weights as an
//! uninterrupted one.

use super::condition::Conditioning;
use super::data::{FrameSet, WindowSpec};
use super::engine::{PendingLoss, Slot};
use super::modelfile::{self, ModelMeta, TrainState};
use super::{file_err, SurrogateError};
use crate::nn::model::ModelSpec;
use crate::nn::train::{loss, Adam, AdamConfig, LossKind};
use crate::nn::Model;
use crate::progress::Progress;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A training job (see the README for every key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    pub data: DataConfig,
    pub model: ModelRef,
    pub train: TrainConfig,
    pub optimizer: AdamConfig,
    pub output: TrainOutput,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset file (from `wavecp dataset`), relative to the job file.
    pub train: PathBuf,
    pub t_in: usize,
    pub t_out: usize,
    /// Frames between window starts.
    #[serde(default = "one")]
    pub window_stride: usize,
    /// Fraction of the samples held out for validation (the last ones).
    #[serde(default = "val")]
    pub validation: f64,
    /// `"scenario"`: the grid coordinates, the frames' times and the dataset's sampled
    /// parameters as input channels beside the frames (3-D models; `in_channels` = 1 + 3 +
    /// the parameters). What a network needs to forecast waves that enter its zone.
    /// `"prior"`: those and one more, the source's free-space response at the frames to
    /// forecast (`in_channels` one more).
    #[serde(default)]
    pub conditioning: ConditioningKind,
    /// Gaussian noise of this standard deviation (in units of the dataset's std) added to the
    /// input frames of training batches (not to validation's, nor to conditioning channels):
    /// a network whose input is its own earlier output downstream (a submodel's closed loop)
    /// learns not to amplify small errors in it. 0 (default): none.
    #[serde(default)]
    pub input_noise: f64,
}

/// A training batch, its input frames noised by `data.input_noise`.
fn noisy_batch(
    job: &TrainJob,
    d: &Data,
    chunk: &[(usize, usize)],
    (epoch, bi): (usize, usize),
) -> (crate::nn::Tensor, crate::nn::Tensor) {
    let (fs, ws) = (&d.fs, &d.ws);
    let (mut x, y) = ws.batch(fs, chunk, fs.mean, fs.std);
    let sigma = job.data.input_noise;
    if sigma > 0.0 {
        let per = ws.t_in * fs.ny * fs.nx;
        add_input_noise(
            &mut x.data,
            chunk.len(),
            per,
            sigma,
            (job.train.seed, epoch, bi),
        );
    }
    (x, y)
}

/// Adds `sigma`-Gaussian noise to the first `per` values of each of `windows` blocks of `x`
/// (the frames' channel), from a stream fixed by `(seed, epoch, batch)`.
fn add_input_noise(x: &mut [f32], windows: usize, per: usize, sigma: f64, at: (u64, usize, usize)) {
    use rand_distr::Distribution;
    let mut rng = ChaCha8Rng::seed_from_u64(at.0 ^ 0x6e6f_6973_6500);
    rng.set_stream(((at.1 as u64) << 32) | at.2 as u64);
    let Ok(n) = rand_distr::Normal::new(0.0f32, sigma as f32) else {
        return;
    };
    let block = x.len() / windows.max(1);
    for w in x.chunks_mut(block) {
        for v in &mut w[..per.min(block)] {
            *v += n.sample(&mut rng);
        }
    }
}

/// What a model reads besides the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditioningKind {
    #[default]
    None,
    Scenario,
    /// `Scenario` and the prior: the scenario's source in free space at the forecast frames.
    Prior,
}

fn one() -> usize {
    1
}
fn val() -> f64 {
    0.2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Model file (TOML architecture), relative to the job file.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    #[serde(default = "mse")]
    pub loss: LossKind,
    #[serde(default)]
    pub seed: u64,
    /// Threads (0: all cores or RAYON_NUM_THREADS).
    #[serde(default)]
    pub threads: usize,
}

fn mse() -> LossKind {
    LossKind::Mse
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOutput {
    /// Folder for `best.safetensors`, `checkpoint.safetensors`, `history.json` (relative to the
    /// working directory).
    pub dir: PathBuf,
    /// Write a checkpoint every this many epochs.
    #[serde(default = "one")]
    pub checkpoint_every: usize,
}

impl TrainJob {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, SurrogateError> {
        let job: TrainJob =
            crate::config::load_with_overrides(path, overrides).map_err(|e| file_err(path, e))?;
        job.validate()?;
        Ok(job)
    }

    pub fn validate(&self) -> Result<(), SurrogateError> {
        let bad = |k: &str, m: &str| {
            Err(SurrogateError::Invalid {
                key: k.into(),
                msg: m.into(),
            })
        };
        if self.data.t_in == 0 || self.data.t_out == 0 {
            return bad("data.t_in/t_out", "must be at least 1");
        }
        if !(self.data.input_noise.is_finite() && self.data.input_noise >= 0.0) {
            return bad("data.input_noise", "must be a number >= 0");
        }
        if !(0.0..1.0).contains(&self.data.validation) {
            return bad("data.validation", "must be in [0, 1)");
        }
        if self.train.epochs == 0 || self.train.batch == 0 {
            return bad("train.epochs/batch", "must be at least 1");
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad("optimizer.lr", "must be a positive number");
        }
        if let Err(m) = self.optimizer.check() {
            return bad("optimizer", &m);
        }
        let max_threads = 16 * std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.train.threads > max_threads {
            return bad(
                "train.threads",
                &format!("is more than 16 per core of this machine ({max_threads}); use 0 for one per core"),
            );
        }
        if self.output.checkpoint_every == 0 {
            return bad("output.checkpoint_every", "must be at least 1");
        }
        Ok(())
    }
}

/// What a training run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub epochs: usize,
    pub resumed_from: Option<usize>,
    pub trainable_params: usize,
    pub weight_bytes: usize,
    pub train_windows: usize,
    pub val_windows: usize,
    pub best_val_loss: f64,
    pub final_train_loss: f64,
    pub mean_epoch_s: f64,
    pub peak_rss_mb: f64,
    /// On a GPU: the most device memory this run's allocations held at once (MiB), where the
    /// device's memory pool reports it.
    pub gpu_peak_mib: Option<f64>,
    pub best_model: PathBuf,
    pub history: Vec<(usize, f64, f64, f64)>,
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB; NaN elsewhere.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub use crate::nn::Device;

/// Options that are not part of the job.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub progress: bool,
    pub resume: bool,
    pub device: Device,
    /// Test hook: stop (cleanly, as after a time limit) once this many epochs are done.
    pub stop_after_epochs: Option<usize>,
}

/// Trains; `base` is the job file's folder.
pub fn run(
    job: &TrainJob,
    base: &Path,
    opts: &TrainOptions,
) -> Result<TrainSummary, SurrogateError> {
    crate::threads::with_threads(job.train.threads, || run_inner(job, base, opts))
        .map_err(SurrogateError::Mismatch)?
}

/// The dataset, cut into training and validation windows, and the model's description.
struct Data {
    fs: FrameSet,
    ws: WindowSpec,
    train_w: Vec<(usize, usize)>,
    val_w: Vec<(usize, usize)>,
    spec: ModelSpec,
    model_path: PathBuf,
}

impl Data {
    fn load(job: &TrainJob, base: &Path) -> Result<Self, SurrogateError> {
        let mut fs = FrameSet::load(&base.join(&job.data.train))?;
        let model_path = base.join(&job.model.file);
        let spec_text =
            std::fs::read_to_string(&model_path).map_err(|e| file_err(&model_path, e))?;
        let spec = ModelSpec::from_toml(&spec_text).map_err(|e| file_err(&model_path, e))?;
        let ws = WindowSpec {
            t_in: job.data.t_in,
            t_out: job.data.t_out,
            dims: spec.model.dims,
        };
        if job.data.t_in + job.data.t_out > fs.nframes {
            return Err(SurrogateError::Invalid {
                key: "data.t_in/t_out".into(),
                msg: format!(
                    "a window of {} frames does not fit in {} frames per sample",
                    job.data.t_in + job.data.t_out,
                    fs.nframes
                ),
            });
        }
        let nval = ((fs.samples as f64 * job.data.validation).round() as usize).min(fs.samples - 1);
        let train_s: Vec<usize> = (0..fs.samples - nval).collect();
        let val_s: Vec<usize> = (fs.samples - nval..fs.samples).collect();
        let train_w = ws.windows(&fs, &train_s, job.data.window_stride);
        let val_w = ws.windows(&fs, &val_s, job.data.window_stride);
        if job.data.conditioning != ConditioningKind::None {
            let mut c = scenario_conditioning(&fs, ws.dims)?;
            if job.data.conditioning == ConditioningKind::Prior {
                c = c.with_prior(fs.scenarios.speed, fs.scenarios.walls, fs.mean, fs.std);
            }
            fs.scenarios.cond = Some(c);
            fs.fill_prior();
        }
        let extra = fs.scenarios.cond.as_ref().map_or(0, |c| c.len());
        let expect_in = if ws.dims == 2 { ws.t_in } else { 1 + extra };
        if spec.model.in_channels != expect_in {
            return Err(SurrogateError::Mismatch(format!(
                "{}: in_channels = {} but a {}-D model on t_in = {} frames needs {expect_in}",
                model_path.display(),
                spec.model.in_channels,
                ws.dims,
                ws.t_in
            )));
        }
        Ok(Data {
            fs,
            ws,
            train_w,
            val_w,
            spec,
            model_path,
        })
    }

    /// Refuses a model whose output is not the shape of a window's targets.
    fn check_output(&self, model: &mut Model) -> Result<(), SurrogateError> {
        let (fs, ws) = (&self.fs, &self.ws);
        let first = &self.train_w[..1.min(self.train_w.len())];
        let probe = model.forward(&ws.batch(fs, first, fs.mean, fs.std).0)?;
        let want = ws.shape(1, ws.t_out, fs.ny, fs.nx);
        if probe.shape != want {
            return Err(SurrogateError::Mismatch(format!(
                "{}: the model maps a window to {:?}, the targets are {want:?}",
                self.model_path.display(),
                probe.shape
            )));
        }
        Ok(())
    }

    /// The model file's metadata after `epoch`.
    fn meta(&self, epoch: usize, (tl, vl): (f64, f64), nparams: usize) -> ModelMeta {
        let fs = &self.fs;
        ModelMeta {
            t_in: self.ws.t_in,
            t_out: self.ws.t_out,
            ny: fs.ny,
            nx: fs.nx,
            mean: fs.mean,
            std: fs.std,
            frame_dt: fs.frame_dt,
            dataset: fs.path.display().to_string(),
            epoch,
            train_loss: tl,
            val_loss: vl,
            trainable_params: nparams,
            peak_rss_mb: peak_rss_mb(),
            epoch_s: 0.0,
            zone: fs.zone,
            // New weights: a calibration of other weights does not hold.
            calibrations: Default::default(),
            conditioning: fs.scenarios.cond.clone(),
        }
    }
}

/// The scenario channels of a frame set, scaled over its zone, frame times and parameters.
fn scenario_conditioning(fs: &FrameSet, dims: usize) -> Result<Conditioning, SurrogateError> {
    let bad = |msg: String| SurrogateError::Invalid {
        key: "data.conditioning".into(),
        msg,
    };
    if dims != 3 {
        return Err(bad(format!(
            "scenario channels need a 3-D model ([B, channels, t, y, x]); this one is {dims}-D"
        )));
    }
    let sc = &fs.scenarios;
    let Some(zone) = fs.zone.filter(|_| sc.nparams > 0) else {
        return Err(bad(format!(
            "{} has no /params or no /grid (written by an older wavecp dataset?)",
            fs.path.display()
        )));
    };
    let last = sc.frame_t0 + (fs.nframes - 1) as f64 * fs.frame_dt;
    let c = Conditioning::fit(zone, [sc.frame_t0, last], &sc.params, sc.nparams);
    match &sc.sampled {
        Some(r) => c
            .with_sampled(r)
            .map_err(|m| bad(format!("{}: {m}", fs.path.display()))),
        None => Ok(c),
    }
}

/// The model, its optimiser and training state: from the checkpoint with `--resume`, else new.
fn start(
    job: &TrainJob,
    opts: &TrainOptions,
    data: &Data,
    ckpt: &Path,
) -> Result<(Model, Adam, TrainState), SurrogateError> {
    if !(opts.resume && ckpt.exists()) {
        let state = TrainState {
            epoch: 0,
            adam_step: 0,
            best_val: f64::INFINITY,
            history: vec![],
        };
        let model = Model::new(data.spec.clone())?;
        return Ok((model, Adam::new(job.optimizer.clone()), state));
    }
    let l = modelfile::load(ckpt)?;
    let ck = l
        .train
        .ok_or_else(|| file_err(ckpt, "holds no training state"))?;
    if toml::to_string(&l.model.spec).ok() != toml::to_string(&data.spec).ok() {
        return Err(SurrogateError::Mismatch(format!(
            "{}: the checkpoint's architecture differs from {}",
            ckpt.display(),
            data.model_path.display()
        )));
    }
    ck.optimizer.check().map_err(|m| {
        file_err(
            ckpt,
            format!("cannot resume: its optimizer settings are damaged ({m})"),
        )
    })?;
    let mut adam = Adam::new(ck.optimizer);
    adam.m = ck.m;
    adam.v = ck.v;
    adam.step = ck.state.adam_step;
    tracing::info!(
        "resuming from {} after epoch {}",
        ckpt.display(),
        ck.state.epoch
    );
    Ok((l.model, adam, ck.state))
}

/// One training run's moving parts: the model and optimiser on the CPU, and the GPU engine
/// (with the frames resident on the device where they fit) when there is one.
struct Trainer<'a> {
    job: &'a TrainJob,
    data: &'a Data,
    model: Model,
    adam: Adam,
    engine: Option<super::engine::GpuTrainer>,
    resident: bool,
    /// The output folder, and the checkpoint and best model in it.
    out_dir: PathBuf,
    ckpt: PathBuf,
    best: PathBuf,
    nparams: usize,
}

impl Trainer<'_> {
    /// The loss is not finite in `epoch`: the error names the last good checkpoint.
    fn non_finite(&self, epoch: usize) -> SurrogateError {
        let good = if self.ckpt.exists() {
            self.ckpt.display().to_string()
        } else {
            "none (no epoch finished)".into()
        };
        SurrogateError::NonFinite {
            epoch,
            checkpoint: good,
        }
    }

    /// One pass over `order`; the mean training loss. `done` batches precede it in the run's
    /// progress.
    fn train_epoch(
        &mut self,
        epoch: usize,
        order: &[(usize, usize)],
        (progress, done): (&mut Progress, usize),
    ) -> Result<f64, SurrogateError> {
        let (job, d) = (self.job, self.data);
        if let (true, Some(e)) = (self.resident, &mut self.engine) {
            e.set_windows(Slot::Train, order)?;
        }
        let mut sum = 0.0;
        // On the GPU a step is queued whole and its loss is read after the next step has been
        // queued (one wait per step, with the device busy meanwhile); on the CPU the loss is
        // checked before the update.
        let mut pending: Option<(PendingLoss, usize)> = None;
        for (bi, chunk) in order.chunks(job.train.batch).enumerate() {
            let loss_n = match &mut self.engine {
                Some(e) => {
                    let p = if self.resident {
                        let at = bi * job.train.batch;
                        e.queue_step_at(Slot::Train, at, chunk.len(), &mut self.adam)?
                    } else {
                        let (x, y) = noisy_batch(job, d, chunk, (epoch, bi));
                        e.queue_step(x, &y, &mut self.adam)?
                    };
                    match pending.replace((p, chunk.len())) {
                        Some((prev, n)) => Some((e.loss(&prev)?, n)),
                        None => None,
                    }
                }
                None => {
                    let (x, y) = noisy_batch(job, d, chunk, (epoch, bi));
                    let pred = self.model.forward_owned(x)?;
                    let (l, dy) = loss(job.train.loss, &pred, &y)?;
                    if !l.is_finite() {
                        return Err(self.non_finite(epoch));
                    }
                    self.model.zero_grad();
                    self.model.backward_owned(dy)?;
                    let mut ps = self.model.params_mut();
                    self.adam.update(&mut ps);
                    Some((l, chunk.len()))
                }
            };
            if let Some((l, n)) = loss_n {
                if !l.is_finite() {
                    return Err(self.non_finite(epoch));
                }
                sum += l * n as f64;
            }
            progress.set((done + bi + 1) as u64);
        }
        if let (Some(e), Some((prev, n))) = (&self.engine, pending.take()) {
            let l = e.loss(&prev)?;
            if !l.is_finite() {
                return Err(self.non_finite(epoch));
            }
            sum += l * n as f64;
        }
        Ok(sum / order.len().max(1) as f64)
    }

    /// Records a finished epoch in `state` and the log, keeps the model if it is the best so
    /// far, and writes the checkpoint and history when one is due.
    fn end_epoch(
        &mut self,
        state: &mut TrainState,
        epoch: usize,
        (last_train, val_loss): (f64, f64),
        secs: f64,
    ) -> Result<(), SurrogateError> {
        let job = self.job;
        state.epoch = epoch;
        state.adam_step = self.adam.step;
        state.history.push((epoch, last_train, val_loss, secs));
        let remaining = secs * (job.train.epochs - epoch) as f64;
        tracing::info!("epoch {epoch}/{}: loss {last_train:.4e}, validation {val_loss:.4e}, {secs:.1} s (ETA {remaining:.0} s)", job.train.epochs);
        let score = if self.data.val_w.is_empty() {
            last_train
        } else {
            val_loss
        };
        let mut m = self.data.meta(epoch, (last_train, val_loss), self.nparams);
        m.epoch_s = state.history.iter().map(|h| h.3).sum::<f64>() / state.history.len() as f64;
        if score < state.best_val {
            state.best_val = score;
            modelfile::save(&self.best, &self.model, &m, None)?;
        }
        if epoch.is_multiple_of(job.output.checkpoint_every) || epoch == job.train.epochs {
            modelfile::save(&self.ckpt, &self.model, &m, Some((&self.adam, &*state)))?;
            let hist = serde_json::to_string_pretty(&state.history).unwrap_or_default();
            let dir = &self.out_dir;
            crate::output::write_atomic(&dir.join("history.json"), hist.as_bytes())
                .map_err(|e| file_err(dir, e))?;
        }
        Ok(())
    }

    /// The mean loss over the validation windows (NaN without any).
    fn validation_loss(&mut self) -> Result<f64, SurrogateError> {
        let (job, d) = (self.job, self.data);
        let (fs, ws, val_w) = (&d.fs, &d.ws, &d.val_w);
        let Some(e) = &mut self.engine else {
            let b = job.train.batch;
            return evaluate_loss(&mut self.model, ws, fs, val_w, b, job.train.loss);
        };
        // Every batch queued first, the losses read after: one wait per validation.
        let b = job.train.batch.max(1);
        let mut queued = Vec::new();
        for (bi, chunk) in val_w.chunks(b).enumerate() {
            let p = if self.resident {
                e.queue_eval_at(Slot::Validation, bi * b, chunk.len())?
            } else {
                let (x, y) = ws.batch(fs, chunk, fs.mean, fs.std);
                e.queue_eval(x, &y)?
            };
            queued.push((p, chunk.len()));
        }
        let mut s = 0.0;
        for (p, n) in &queued {
            s += e.loss(p)? * *n as f64;
        }
        Ok(if val_w.is_empty() {
            f64::NAN
        } else {
            s / val_w.len() as f64
        })
    }
}

fn run_inner(
    job: &TrainJob,
    base: &Path,
    opts: &TrainOptions,
) -> Result<TrainSummary, SurrogateError> {
    // Device, first: a missing GPU is reported before any data is read.
    let gpu = super::engine::open_device(opts.device, "--device")?;
    let data = Data::load(job, base)?;
    let out_dir = job.output.dir.clone();
    let ckpt = out_dir.join("checkpoint.safetensors");
    let best = out_dir.join("best.safetensors");
    let (mut model, adam, mut state) = start(job, opts, &data, &ckpt)?;
    data.check_output(&mut model)?;
    let (fs, train_w, val_w) = (&data.fs, &data.train_w, &data.val_w);
    let resumed_from = (state.epoch > 0).then_some(state.epoch);
    let nparams = model.num_params();
    tracing::info!(
        "model: {nparams} trainable parameters; {} training and {} validation windows",
        train_w.len(),
        val_w.len()
    );
    for l in model.summary() {
        tracing::debug!("  {l}");
    }
    let engine: Option<super::engine::GpuTrainer> = match gpu {
        #[cfg(feature = "cuda")]
        Some(g) => {
            let mut e = super::engine::GpuTrainer::new(g, &model, job.train.loss)?;
            e.set_adam(&adam)?;
            Some(e)
        }
        #[cfg(not(feature = "cuda"))]
        Some(never) => match never {},
        None => None,
    };
    let mut t = Trainer {
        job,
        data: &data,
        model,
        adam,
        engine,
        resident: false,
        out_dir,
        ckpt,
        best: best.clone(),
        nparams,
    };
    // On the GPU the frames stay on the device for the whole run, each epoch's window order
    // is one small copy, and batches are cut there (no host-to-device copy per batch).
    if let Some(e) = &mut t.engine {
        // Conditioned windows are built on the host (the device copy holds frames only).
        t.resident = fs.scenarios.cond.is_none()
            && job.data.input_noise == 0.0
            && e.keep_frames(fs, data.ws)?;
        if t.resident {
            e.set_windows(Slot::Validation, val_w)?;
        }
        let on_device = format!(
            " (frames resident on the device: {})",
            crate::progress::bytes(4 * fs.frames.len() as u64)
        );
        let where_ = if t.resident { on_device.as_str() } else { "" };
        tracing::info!("training on {}{where_}", e.name());
    }
    let batches_per_epoch = train_w.len().div_ceil(job.train.batch);
    let mut progress = Progress::new(
        "train",
        (batches_per_epoch * job.train.epochs) as u64,
        opts.progress,
        Duration::from_secs(10),
    );
    let mut last_train = f64::NAN;
    for epoch in state.epoch + 1..=job.train.epochs {
        let t0 = Instant::now();
        let mut order = train_w.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(job.train.seed);
        rng.set_stream(epoch as u64);
        order.shuffle(&mut rng);
        let done = (epoch - 1) * batches_per_epoch;
        last_train = t.train_epoch(epoch, &order, (&mut progress, done))?;
        let val_loss = t.validation_loss()?;
        // Model files are written from the CPU model: bring the GPU's weights and moments back.
        if let Some(e) = &mut t.engine {
            e.sync(&mut t.model, &mut t.adam)?;
        }
        t.end_epoch(
            &mut state,
            epoch,
            (last_train, val_loss),
            t0.elapsed().as_secs_f64(),
        )?;
        if opts.stop_after_epochs == Some(epoch) {
            break;
        }
    }
    progress.finish();
    let gpu_peak_mib = t.engine.as_ref().and_then(|e| e.report_memory());
    let mean_epoch_s =
        state.history.iter().map(|h| h.3).sum::<f64>() / state.history.len().max(1) as f64;
    Ok(TrainSummary {
        epochs: state.epoch,
        resumed_from,
        trainable_params: nparams,
        weight_bytes: 4 * nparams,
        train_windows: train_w.len(),
        val_windows: val_w.len(),
        best_val_loss: state.best_val,
        final_train_loss: last_train,
        mean_epoch_s,
        peak_rss_mb: peak_rss_mb(),
        gpu_peak_mib,
        best_model: best,
        history: state.history,
    })
}

/// Mean loss over windows, without gradients.
pub fn evaluate_loss(
    model: &mut Model,
    ws: &WindowSpec,
    fs: &FrameSet,
    wins: &[(usize, usize)],
    batch: usize,
    kind: LossKind,
) -> Result<f64, SurrogateError> {
    let mut sum = 0.0;
    for chunk in wins.chunks(batch.max(1)) {
        let (x, y) = ws.batch(fs, chunk, fs.mean, fs.std);
        let pred = model.forward_owned(x)?;
        sum += loss(kind, &pred, &y)?.0 * chunk.len() as f64;
    }
    Ok(if wins.is_empty() {
        f64::NAN
    } else {
        sum / wins.len() as f64
    })
}
