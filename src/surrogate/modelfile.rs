//! Model files: one safetensors file with the weights (f32, names `NNN.param`, loadable by
//! PyTorch's `safetensors.torch.load_file`) and, in its metadata, the architecture (TOML), the
//! window sizes, grid, normalisation and training record (JSON). Checkpoints add the optimiser
//! moments. Files are written to a temporary name and renamed.

use super::{file_err, SurrogateError};
use crate::nn::model::ModelSpec;
use crate::nn::train::Adam;
use crate::nn::Model;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Everything besides weights that a model needs to be used on new data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelMeta {
    pub t_in: usize,
    pub t_out: usize,
    pub ny: usize,
    pub nx: usize,
    pub mean: f64,
    pub std: f64,
    pub frame_dt: f64,
    pub dataset: String,
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub trainable_params: usize,
    /// Peak resident memory of the training process so far (MiB).
    #[serde(default)]
    pub peak_rss_mb: f64,
    /// Mean wall time of the epochs so far (s).
    #[serde(default)]
    pub epoch_s: f64,
    /// The zone grid the model was trained on, `[x0, x1, y0, y1]` (older files: unknown).
    #[serde(default)]
    pub zone: Option<[f64; 4]>,
    /// The error indicators' calibrations (`wavecp calibrate`, one per indicator): the
    /// tolerance of a hybrid run with a calibrated indicator is in error units. (Files written
    /// when a model held one calibration call the key `calibration`.)
    #[serde(default, alias = "calibration")]
    pub calibrations: super::calibration::Calibrations,
    /// The extra input channels of a model conditioned on the scenario (`None`: frames only).
    #[serde(default)]
    pub conditioning: Option<super::condition::Conditioning>,
}

/// Training state kept in checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    pub epoch: usize,
    pub adam_step: usize,
    pub best_val: f64,
    /// `(epoch, train loss, validation loss, seconds)` per finished epoch.
    pub history: Vec<(usize, f64, f64, f64)>,
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Writes a model (and optionally optimiser state) to `path` atomically.
pub fn save(
    path: &Path,
    model: &Model,
    meta: &ModelMeta,
    train: Option<(&Adam, &TrainState)>,
) -> Result<(), SurrogateError> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .params()
        .iter()
        .enumerate()
        .map(|(k, p)| {
            (
                format!("{k:03}.{}", p.name),
                p.shape.clone(),
                bytes(&p.value),
            )
        })
        .collect();
    let mut info = HashMap::new();
    info.insert("format".to_string(), "wavecp-surrogate-1".to_string());
    info.insert(
        "wavecp.model".to_string(),
        toml::to_string(&model.spec).map_err(|e| file_err(path, e))?,
    );
    info.insert(
        "wavecp.meta".to_string(),
        serde_json::to_string(meta).map_err(|e| file_err(path, e))?,
    );
    if let Some((adam, state)) = train {
        for (k, p) in model.params().iter().enumerate() {
            if let (Some(m), Some(v)) = (adam.m.get(k), adam.v.get(k)) {
                owned.push((format!("adam.m.{k:03}"), p.shape.clone(), bytes(m)));
                owned.push((format!("adam.v.{k:03}"), p.shape.clone(), bytes(v)));
            }
        }
        info.insert(
            "wavecp.train".to_string(),
            serde_json::to_string(state).map_err(|e| file_err(path, e))?,
        );
        info.insert(
            "wavecp.optimizer".to_string(),
            serde_json::to_string(&adam.cfg).map_err(|e| file_err(path, e))?,
        );
    }
    let views: Result<Vec<(String, TensorView)>, _> = owned
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect();
    let buf = safetensors::serialize(views.map_err(|e| file_err(path, e))?, Some(info))
        .map_err(|e| file_err(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    crate::output::write_atomic(path, &buf).map_err(|e| file_err(path, e))
}

/// Training state of a checkpoint: progress, Adam moments per parameter, optimiser settings.
pub struct Checkpoint {
    pub state: TrainState,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub optimizer: crate::nn::train::AdamConfig,
}

/// A loaded model file.
pub struct Loaded {
    pub model: Model,
    pub meta: ModelMeta,
    pub train: Option<Checkpoint>,
}

/// Reads a model file (or checkpoint); every tensor's name and shape is checked against the
/// architecture it declares.
pub fn load(path: &Path) -> Result<Loaded, SurrogateError> {
    let buf = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let corrupt = |m: String| file_err(path, format!("not a wavecp model file: {m}"));
    let (_, header) = SafeTensors::read_metadata(&buf).map_err(|e| corrupt(e.to_string()))?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| corrupt(e.to_string()))?;
    let info = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        info.get(k)
            .ok_or_else(|| corrupt(format!("metadata `{k}` missing")))
    };
    let spec = ModelSpec::from_toml(get("wavecp.model")?).map_err(|e| corrupt(e.to_string()))?;
    let meta: ModelMeta =
        serde_json::from_str(get("wavecp.meta")?).map_err(|e| corrupt(e.to_string()))?;
    let mut model = Model::new(spec)?;
    check_meta(&meta, &model).map_err(corrupt)?;
    let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, SurrogateError> {
        let t = st
            .tensor(name)
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            return Err(corrupt(format!(
                "tensor `{name}` is {:?} {:?}, the architecture needs F32 {shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
        let v = floats(t.data());
        if v.iter().any(|x| !x.is_finite()) {
            return Err(corrupt(format!("tensor `{name}` holds NaN or Inf")));
        }
        Ok(v)
    };
    let mut ms = vec![];
    let mut vs = vec![];
    for (k, p) in model.params_mut().into_iter().enumerate() {
        p.value = read(&format!("{k:03}.{}", p.name), &p.shape)?;
        if info.contains_key("wavecp.train") {
            ms.push(read(&format!("adam.m.{k:03}"), &p.shape)?);
            vs.push(read(&format!("adam.v.{k:03}"), &p.shape)?);
        }
    }
    let train = match (info.get("wavecp.train"), info.get("wavecp.optimizer")) {
        (Some(t), Some(o)) => Some(Checkpoint {
            state: serde_json::from_str(t).map_err(|e| corrupt(e.to_string()))?,
            m: ms,
            v: vs,
            optimizer: serde_json::from_str(o).map_err(|e| corrupt(e.to_string()))?,
        }),
        _ => None,
    };
    Ok(Loaded { model, meta, train })
}

/// Records in the model file at `path` the ranges its dataset job drew the scenarios from
/// (one per parameter, [`crate::dataset::SamplingConfig::ranges`]): for models trained before
/// datasets recorded them. Refused for a model not conditioned on its scenario, a training
/// checkpoint (its optimiser state would be dropped), or ranges that do not hold what training
/// saw. The file is replaced atomically; returns the conditioning written.
pub fn record_sampling(
    path: &Path,
    ranges: &[[f64; 2]],
) -> Result<super::condition::Conditioning, SurrogateError> {
    let mut l = load(path)?;
    if l.train.is_some() {
        return Err(file_err(
            path,
            "a training checkpoint: record the ranges in the model file it leads to",
        ));
    }
    let Some(c) = l.meta.conditioning.take() else {
        return Err(file_err(
            path,
            "the model is not conditioned on its scenario: it reads no parameters to range",
        ));
    };
    let c = c.with_sampled(ranges).map_err(|m| file_err(path, m))?;
    l.meta.conditioning = Some(c.clone());
    save(path, &l.model, &l.meta, None)?;
    Ok(c)
}

/// The metadata a model carries must make sense and fit its layers: `t_in`, `t_out` and the grid
/// at least 1, a finite mean, a positive finite std, and channels that match the frames (2-D:
/// `t_in` in, `t_out` out; 3-D: one in, one out).
fn check_meta(meta: &ModelMeta, model: &Model) -> Result<(), String> {
    if meta.t_in == 0 || meta.t_out == 0 || meta.ny == 0 || meta.nx == 0 {
        return Err(format!(
            "its metadata has t_in = {}, t_out = {}, grid {} × {}; each must be at least 1",
            meta.t_in, meta.t_out, meta.ny, meta.nx
        ));
    }
    if !(meta.mean.is_finite() && meta.std.is_finite() && meta.std > 0.0) {
        return Err(format!(
            "its normalisation mean = {}, std = {} is unusable (std must be positive, both finite)",
            meta.mean, meta.std
        ));
    }
    let h = &model.spec.model;
    let extra = meta.conditioning.as_ref().map_or(0, |c| c.len());
    let (cin, cout) = if h.dims == 2 {
        (meta.t_in, meta.t_out)
    } else {
        (1 + extra, 1)
    };
    if h.in_channels != cin || model.out_channels != cout {
        return Err(format!(
            "its layers take {} channels and give {}, but a {}-D model on t_in = {}, t_out = {} frames with {extra} conditioning channels needs {cin} and {cout}",
            h.in_channels, model.out_channels, h.dims, meta.t_in, meta.t_out
        ));
    }
    Ok(())
}
