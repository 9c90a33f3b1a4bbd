//! Losses and optimisers: MSE and relative L2; Adam/AdamW with warm-up, cosine or step decay,
//! and global-norm gradient clipping.

use super::layers::Param;
use super::tensor::{NnError, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Mse,
    RelL2,
}

/// `(loss, ∂loss/∂pred)`. MSE: `mean((p − t)²)`. Relative L2: the batch mean of
/// `‖p_b − t_b‖ / ‖t_b‖` (a sample whose target is zero uses `‖t_b‖ = 1`).
pub fn loss(kind: LossKind, pred: &Tensor, target: &Tensor) -> Result<(f64, Tensor), NnError> {
    if pred.shape != target.shape {
        return Err(NnError::Shape {
            what: "prediction vs target".into(),
            expected: target.shape.clone(),
            found: pred.shape.clone(),
        });
    }
    let n = pred.len().max(1);
    let mut grad = Tensor::zeros(&pred.shape);
    match kind {
        LossKind::Mse => {
            let mut s = 0.0f64;
            for ((g, p), t) in grad.data.iter_mut().zip(&pred.data).zip(&target.data) {
                let d = (p - t) as f64;
                s += d * d;
                *g = (2.0 * d / n as f64) as f32;
            }
            Ok((s / n as f64, grad))
        }
        LossKind::RelL2 => {
            let b = pred.shape.first().copied().unwrap_or(1).max(1);
            let per = n / b;
            let mut total = 0.0;
            for s in 0..b {
                let r = s * per..(s + 1) * per;
                let diff: f64 = pred.data[r.clone()]
                    .iter()
                    .zip(&target.data[r.clone()])
                    .map(|(p, t)| ((p - t) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let tn = target.data[r.clone()]
                    .iter()
                    .map(|t| (*t as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let tn = if tn > 0.0 { tn } else { 1.0 };
                total += diff / tn;
                if diff > 0.0 {
                    for i in r {
                        grad.data[i] = ((pred.data[i] - target.data[i]) as f64
                            / (diff * tn * b as f64)) as f32;
                    }
                }
            }
            Ok((total / b as f64, grad))
        }
    }
}

/// Learning-rate schedule after a linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    Constant,
    /// Cosine from `lr` to `min_lr` over `total` steps.
    Cosine {
        total: usize,
        min_lr: f64,
    },
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: usize,
        gamma: f64,
    },
}

/// Adam with decoupled weight decay (AdamW; `weight_decay = 0` is Adam).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    #[serde(default = "b1")]
    pub beta1: f64,
    #[serde(default = "b2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub warmup: usize,
    #[serde(default = "constant")]
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value (0: no clipping).
    #[serde(default)]
    pub clip_norm: f64,
}

impl AdamConfig {
    /// `Err(what is wrong)` for settings AdamW cannot use (checked on a job and on a checkpoint
    /// to resume, whose stored settings may be damaged).
    pub fn check(&self) -> Result<(), String> {
        let ok = self.lr > 0.0
            && self.lr.is_finite()
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.eps.is_finite()
            && self.weight_decay >= 0.0
            && self.weight_decay.is_finite()
            && self.clip_norm >= 0.0
            && self.clip_norm.is_finite();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "AdamW needs lr > 0, beta1 and beta2 in [0, 1), eps > 0, weight_decay >= 0 and clip_norm >= 0, all finite; found lr = {}, betas = ({}, {}), eps = {}, weight_decay = {}, clip_norm = {}",
                self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.clip_norm
            ))
        }
    }
}

fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn constant() -> Schedule {
    Schedule::Constant
}

impl AdamConfig {
    /// Adam at learning rate `lr` with the defaults of a job file: β = (0.9, 0.999), ε = 1e-8, no
    /// decay, no warm-up, constant schedule, no clipping.
    pub fn new(lr: f64) -> Self {
        AdamConfig {
            lr,
            beta1: b1(),
            beta2: b2(),
            eps: eps(),
            weight_decay: 0.0,
            warmup: 0,
            schedule: constant(),
            clip_norm: 0.0,
        }
    }
}

/// The scalars of one AdamW step, the same for every parameter (and for the GPU's update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// Gradient clipping factor (1: none).
    pub scale: f64,
    pub lr: f64,
    /// Bias corrections `1 − β₁ᵗ`, `1 − β₂ᵗ`.
    pub c1: f64,
    pub c2: f64,
}

impl AdamConfig {
    /// Learning rate of step `t` (1-based): the warm-up, then the schedule.
    pub fn lr_at(&self, t: usize) -> f64 {
        if self.warmup > 0 && t <= self.warmup {
            return self.lr * t as f64 / self.warmup as f64;
        }
        let s = t - self.warmup.min(t);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine { total, min_lr } => {
                let f = (s as f64 / total.max(1) as f64).min(1.0);
                min_lr + 0.5 * (self.lr - min_lr) * (1.0 + (std::f64::consts::PI * f).cos())
            }
            Schedule::Step { every, gamma } => self.lr * gamma.powi((s / every.max(1)) as i32),
        }
    }

    /// The scalars of step `t` (1-based) for a global gradient norm `norm`.
    pub fn step_scalars(&self, t: usize, norm: f64) -> StepScalars {
        StepScalars {
            scale: if self.clip_norm > 0.0 && norm > self.clip_norm {
                self.clip_norm / norm
            } else {
                1.0
            },
            lr: self.lr_at(t),
            c1: 1.0 - self.beta1.powi(t as i32),
            c2: 1.0 - self.beta2.powi(t as i32),
        }
    }
}

/// Optimiser state (first and second moments per parameter, step count).
#[derive(Debug, Clone)]
pub struct Adam {
    pub cfg: AdamConfig,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub step: usize,
}

impl Adam {
    pub fn new(cfg: AdamConfig) -> Self {
        Adam {
            cfg,
            m: vec![],
            v: vec![],
            step: 0,
        }
    }

    /// Learning rate of step `t` (1-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        self.cfg.lr_at(t)
    }

    /// Applies one update from the gradients in `params`; returns the gradient norm before clipping.
    pub fn update(&mut self, params: &mut [&mut Param]) -> f64 {
        if self.m.len() != params.len() {
            self.m = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
            self.v = self.m.clone();
        }
        let norm = params
            .iter()
            .flat_map(|p| p.grad.iter())
            .map(|g| (*g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        self.step += 1;
        let StepScalars { scale, lr, c1, c2 } = self.cfg.step_scalars(self.step, norm);
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        for (k, p) in params.iter_mut().enumerate() {
            let (m, v) = (&mut self.m[k], &mut self.v[k]);
            for i in 0..p.value.len() {
                let g = p.grad[i] as f64 * scale;
                m[i] = (b1 * m[i] as f64 + (1.0 - b1) * g) as f32;
                v[i] = (b2 * v[i] as f64 + (1.0 - b2) * g * g) as f32;
                let mhat = m[i] as f64 / c1;
                let vhat = v[i] as f64 / c2;
                let w = p.value[i] as f64;
                p.value[i] = (w - lr
                    * (mhat / (vhat.sqrt() + self.cfg.eps) + self.cfg.weight_decay * w))
                    as f32;
            }
        }
        norm
    }
}
