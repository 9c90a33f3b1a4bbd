//! `wavecp eval` and `wavecp predict`: relative L2 error per predicted frame, autoregressive
//! rollouts, and predictions written to HDF5 for scripts.

use super::data::{FrameSet, WindowSpec};
use super::engine::Runner;
use super::modelfile::{self, ModelMeta};
use super::{file_err, SurrogateError};
use crate::nn::{Device, Model, Tensor};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Evaluation report. Errors are `‖pred − true‖₂ / ‖true‖₂` per frame, in physical units,
/// averaged over windows (frames whose truth is zero are skipped).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub windows: usize,
    pub rel_l2_per_frame: Vec<f64>,
    pub rel_l2_mean: f64,
    /// Rollout error per predicted window (window k predicts frames `t_in + k·t_out …`).
    pub rollout_rel_l2: Vec<f64>,
    pub rollout_windows: usize,
    pub inference_ms_per_sample: f64,
    pub trainable_params: usize,
}

pub(crate) fn check_grid(
    meta: &ModelMeta,
    fs: &FrameSet,
    model_path: &Path,
) -> Result<(), SurrogateError> {
    if (meta.ny, meta.nx) != (fs.ny, fs.nx) {
        return Err(SurrogateError::Mismatch(format!(
            "{} was trained on a {}×{} grid; {} has {}×{}",
            model_path.display(),
            meta.ny,
            meta.nx,
            fs.path.display(),
            fs.ny,
            fs.nx
        )));
    }
    if meta.t_in + meta.t_out > fs.nframes {
        return Err(SurrogateError::Mismatch(format!(
            "{} needs windows of {} + {} frames; {} has {} frames per sample",
            model_path.display(),
            meta.t_in,
            meta.t_out,
            fs.path.display(),
            fs.nframes
        )));
    }
    Ok(())
}

/// The network's output must have the shape the windows need; a model whose layers do not
/// give `t_out` frames on this grid is refused here instead of being read out of bounds.
fn check_output(p: &Tensor, want: &[usize], model_path: &Path) -> Result<(), SurrogateError> {
    if p.shape != want {
        return Err(SurrogateError::Mismatch(format!(
            "{} maps a window to {:?}; its metadata promises {want:?}",
            model_path.display(),
            p.shape
        )));
    }
    Ok(())
}

fn rel_l2(a: &[f32], b: &[f32]) -> Option<f64> {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    (n > 0.0).then(|| d / n)
}

/// Denormalised frames of a window tensor, frame by frame.
fn frames_of(t: &Tensor, b: usize, nt: usize, n: usize, mean: f64, std: f64) -> Vec<Vec<f32>> {
    (0..nt)
        .map(|k| {
            t.data[(b * nt + k) * n..(b * nt + k + 1) * n]
                .iter()
                .map(|v| (*v as f64 * std + mean) as f32)
                .collect()
        })
        .collect()
}

pub fn evaluate(
    model_path: &Path,
    data_path: &Path,
    batch: usize,
) -> Result<EvalReport, SurrogateError> {
    evaluate_on(model_path, data_path, batch, Device::Cpu)
}

/// [`evaluate`] on `device`.
pub fn evaluate_on(
    model_path: &Path,
    data_path: &Path,
    batch: usize,
    device: Device,
) -> Result<EvalReport, SurrogateError> {
    let l = modelfile::load(model_path)?;
    let (model, meta) = (l.model, l.meta);
    let mut model = Runner::new(model, device)?;
    let mut fs = FrameSet::load(data_path)?;
    check_grid(&meta, &fs, model_path)?;
    attach_conditioning(&mut fs, &meta, model_path)?;
    let ws = WindowSpec {
        t_in: meta.t_in,
        t_out: meta.t_out,
        dims: model.model.spec.model.dims,
    };
    let all: Vec<usize> = (0..fs.samples).collect();
    let wins = ws.windows(&fs, &all, meta.t_out);
    let n = fs.ny * fs.nx;
    let mut per = vec![(0.0, 0usize); meta.t_out];
    let t0 = Instant::now();
    for chunk in wins.chunks(batch.max(1)) {
        let (x, y) = ws.batch(&fs, chunk, meta.mean, meta.std);
        let p = model.forward(x)?;
        check_output(
            &p,
            &ws.shape(chunk.len(), meta.t_out, fs.ny, fs.nx),
            model_path,
        )?;
        for b in 0..chunk.len() {
            let (pf, yf) = (
                frames_of(&p, b, meta.t_out, n, meta.mean, meta.std),
                frames_of(&y, b, meta.t_out, n, meta.mean, meta.std),
            );
            for k in 0..meta.t_out {
                if let Some(e) = rel_l2(&pf[k], &yf[k]) {
                    per[k].0 += e;
                    per[k].1 += 1;
                }
            }
        }
    }
    let infer_ms = t0.elapsed().as_secs_f64() * 1e3 / wins.len().max(1) as f64;
    if per.iter().all(|(_, c)| *c == 0) {
        return Err(SurrogateError::Mismatch(format!(
            "{}: every target frame is zero, so no relative error can be measured",
            fs.path.display()
        )));
    }
    let per: Vec<f64> = per.iter().map(|(s, c)| s / (*c).max(1) as f64).collect();
    // Rollout: from the first t_in frames of each sample, feed predictions back; `batch`
    // samples advance together, window by window (one forward pass per window and group of
    // samples, not per window and sample: on a GPU the difference is the launch latency of
    // the whole network per call).
    let nroll = (fs.nframes - meta.t_in) / meta.t_out;
    let mut roll = vec![(0.0, 0usize); nroll];
    let samples: Vec<usize> = (0..fs.samples).collect();
    for group in samples.chunks(batch.max(1)) {
        let mut hist: Vec<Vec<Vec<f32>>> = group
            .iter()
            .map(|&s| {
                (0..meta.t_in)
                    .map(|k| {
                        fs.frames[(s * fs.nframes + k) * n..(s * fs.nframes + k + 1) * n].to_vec()
                    })
                    .collect()
            })
            .collect();
        for (w, slot) in roll.iter_mut().enumerate() {
            let input: Vec<f32> = hist
                .iter()
                .flat_map(|h| h[h.len() - meta.t_in..].iter())
                .flat_map(|f| {
                    f.iter()
                        .map(|v| ((*v as f64 - meta.mean) / meta.std) as f32)
                })
                .collect();
            let x = Tensor {
                shape: ws.shape(group.len(), meta.t_in, fs.ny, fs.nx),
                data: input,
            };
            let p = model.forward(x)?;
            check_output(
                &p,
                &ws.shape(group.len(), meta.t_out, fs.ny, fs.nx),
                model_path,
            )?;
            let start = meta.t_in + w * meta.t_out;
            for (b, (&s, h)) in group.iter().zip(hist.iter_mut()).enumerate() {
                let pf = frames_of(&p, b, meta.t_out, n, meta.mean, meta.std);
                let truth = &fs.frames
                    [(s * fs.nframes + start) * n..(s * fs.nframes + start + meta.t_out) * n];
                let pred: Vec<f32> = pf.iter().flatten().copied().collect();
                if let Some(e) = rel_l2(&pred, truth) {
                    slot.0 += e;
                    slot.1 += 1;
                }
                h.extend(pf);
            }
        }
    }
    let rel_l2_mean = per.iter().sum::<f64>() / per.len().max(1) as f64;
    if !rel_l2_mean.is_finite() || roll.iter().any(|(s, _)| !s.is_finite()) {
        return Err(SurrogateError::Mismatch(format!(
            "{} predicts values that are not finite numbers on {}: its weights or stored mean/std are broken",
            model_path.display(),
            fs.path.display()
        )));
    }
    Ok(EvalReport {
        windows: wins.len(),
        rel_l2_mean,
        rel_l2_per_frame: per,
        rollout_rel_l2: roll.iter().map(|(s, c)| s / (*c).max(1) as f64).collect(),
        rollout_windows: nroll,
        inference_ms_per_sample: infer_ms,
        trainable_params: model.model.num_params(),
    })
}

/// Predicts the `t_out` frames that follow the first `t_in` frames of every sample of `input`
/// (a dataset file, or any HDF5 file with `/frames [n, ≥ t_in, ny, nx]` and `mean`/`std`
/// attributes) and writes `/prediction [n, t_out, ny, nx]` to `output`.
pub fn predict(model_path: &Path, input: &Path, output: &Path) -> Result<usize, SurrogateError> {
    predict_on(model_path, input, output, Device::Cpu)
}

/// [`predict`] on `device`.
pub fn predict_on(
    model_path: &Path,
    input: &Path,
    output: &Path,
    device: Device,
) -> Result<usize, SurrogateError> {
    let l = modelfile::load(model_path)?;
    let (model, meta): (Model, ModelMeta) = (l.model, l.meta);
    let mut fs = FrameSet::load(input)?;
    attach_conditioning(&mut fs, &meta, model_path)?;
    if (meta.ny, meta.nx) != (fs.ny, fs.nx) || fs.nframes < meta.t_in {
        return Err(SurrogateError::Mismatch(format!(
            "{} needs {} frames of {}×{}; {} has {} frames of {}×{}",
            model_path.display(),
            meta.t_in,
            meta.ny,
            meta.nx,
            input.display(),
            fs.nframes,
            fs.ny,
            fs.nx
        )));
    }
    let ws = WindowSpec {
        t_in: meta.t_in,
        t_out: meta.t_out,
        dims: model.spec.model.dims,
    };
    let mut model = Runner::new(model, device)?;
    let n = fs.ny * fs.nx;
    let mut out = Vec::with_capacity(fs.samples * meta.t_out * n);
    for s in 0..fs.samples {
        let x = ws.input(&fs, &[(s, 0)], meta.mean, meta.std);
        let p = model.forward(x)?;
        check_output(&p, &ws.shape(1, meta.t_out, fs.ny, fs.nx), model_path)?;
        out.extend(
            frames_of(&p, 0, meta.t_out, n, meta.mean, meta.std)
                .into_iter()
                .flatten(),
        );
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(SurrogateError::Mismatch(format!(
            "{} predicts a value that is not a finite number (sample {}): its weights or its stored mean/std are broken; nothing was written",
            model_path.display(),
            i / (meta.t_out * n)
        )));
    }
    for (what, p) in [("the model", model_path), ("the input", input)] {
        if crate::output::target::same_file(output, p) {
            return Err(file_err(
                output,
                format!("is {what}; give the prediction another path"),
            ));
        }
    }
    let arr = ndarray::ArrayView4::from_shape((fs.samples, meta.t_out, fs.ny, fs.nx), &out)
        .map_err(|m| file_err(output, m))?;
    crate::output::write_h5_atomic(output, |f| {
        f.new_dataset_builder()
            .with_data(arr)
            .create("prediction")
            .map(|_| ())
    })
    .map_err(|m| file_err(output, m))?;
    Ok(fs.samples)
}

/// One row of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub model: String,
    pub trainable_params: usize,
    pub weight_bytes: usize,
    pub peak_train_mb: f64,
    pub epoch_s: f64,
    pub epochs: usize,
    pub inference_ms_per_sample: f64,
    pub test_rel_l2: f64,
    pub rollout_rel_l2: f64,
    /// Parameters of the first model divided by this one's.
    pub param_reduction: f64,
    /// This model's test error divided by the first model's.
    pub error_ratio: f64,
}

/// Evaluates several models on one test set; ratios are relative to the first (the reference).
pub fn compare(
    models: &[std::path::PathBuf],
    test: &Path,
    batch: usize,
) -> Result<Vec<CompareRow>, SurrogateError> {
    compare_on(models, test, batch, Device::Cpu)
}

/// [`compare`] on `device`.
pub fn compare_on(
    models: &[std::path::PathBuf],
    test: &Path,
    batch: usize,
    device: Device,
) -> Result<Vec<CompareRow>, SurrogateError> {
    let mut rows: Vec<CompareRow> = vec![];
    for m in models {
        let meta = modelfile::load(m)?.meta;
        let r = evaluate_on(m, test, batch, device)?;
        let roll = r.rollout_rel_l2.iter().sum::<f64>() / r.rollout_rel_l2.len().max(1) as f64;
        let (p0, e0) = rows
            .first()
            .map_or((r.trainable_params as f64, r.rel_l2_mean), |f| {
                (f.trainable_params as f64, f.test_rel_l2)
            });
        rows.push(CompareRow {
            model: m.display().to_string(),
            trainable_params: r.trainable_params,
            weight_bytes: 4 * r.trainable_params,
            peak_train_mb: meta.peak_rss_mb,
            epoch_s: meta.epoch_s,
            epochs: meta.epoch,
            inference_ms_per_sample: r.inference_ms_per_sample,
            test_rel_l2: r.rel_l2_mean,
            rollout_rel_l2: roll,
            param_reduction: p0 / r.trainable_params as f64,
            error_ratio: r.rel_l2_mean / e0,
        });
    }
    Ok(rows)
}

/// The comparison as a Markdown table.
pub fn compare_markdown(rows: &[CompareRow]) -> String {
    let mut s = String::from("| model | trainable params | weight bytes | peak training memory (MiB) | s / epoch | inference ms / sample | test rel. L2 (one window) | rollout rel. L2 | params ÷ | error × |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.4} | {:.4} | {:.1} | {:.3} |\n",
            r.model,
            r.trainable_params,
            r.weight_bytes,
            r.peak_train_mb,
            r.epoch_s,
            r.inference_ms_per_sample,
            r.test_rel_l2,
            r.rollout_rel_l2,
            r.param_reduction,
            r.error_ratio
        ));
    }
    s
}

/// Feeds a conditioned model's channels with the frame set's parameters; refuses a frame set
/// without as many parameters as the model reads.
pub fn attach_conditioning(
    fs: &mut FrameSet,
    meta: &ModelMeta,
    model_path: &Path,
) -> Result<(), SurrogateError> {
    let Some(c) = &meta.conditioning else {
        return Ok(());
    };
    if fs.scenarios.nparams < c.nparams() {
        return Err(SurrogateError::Mismatch(format!(
            "{} reads {} scenario parameters ({}); {} has {}",
            model_path.display(),
            c.nparams(),
            c.channels[3..].join(", "),
            fs.path.display(),
            fs.scenarios.nparams
        )));
    }
    fs.scenarios.cond = Some(c.clone());
    fs.fill_prior();
    Ok(())
}
