//! Parameter-free layers: activations, pooling, nearest up-sampling.

use super::layers::Layer;
use super::tensor::{NnError, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Element-wise activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActKind {
    Relu,
    /// GELU, tanh approximation (PyTorch `approximate="tanh"`).
    Gelu,
    Tanh,
}

pub struct Activation {
    pub kind: ActKind,
    x: Option<Tensor>,
}

impl Activation {
    pub fn new(kind: ActKind) -> Self {
        Activation { kind, x: None }
    }
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/π)

/// `tanh` as a branch-free rational function (the 13/6 minimax form Eigen uses for `float`),
/// within 2e-7 of libm's `tanhf` (tested) and vectorisable, where the libm call was 20 % of a
/// training step's time.
#[inline]
pub fn fast_tanh(x: f32) -> f32 {
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347e-4, 1.198_258_4e-6];
    // Beyond ±7.9 tanh is ±1 to f32 precision, and the polynomial would overflow.
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = x2 * (x2 * (x2 * (x2 * (x2 * (x2 * A[6] + A[5]) + A[4]) + A[3]) + A[2]) + A[1]) + A[0];
    let q = x2 * (x2 * (x2 * B[3] + B[2]) + B[1]) + B[0];
    x * p / q
}

/// The activation of one value (the CPU twin of `act_forward_f32` in kernels/elementwise.cu).
#[inline]
pub fn act(kind: ActKind, v: f32) -> f32 {
    match kind {
        ActKind::Relu => v.max(0.0),
        ActKind::Tanh => fast_tanh(v),
        ActKind::Gelu => 0.5 * v * (1.0 + fast_tanh(GELU_C * (v + 0.044715 * v * v * v))),
    }
}

/// Its derivative (the CPU twin of `act_backward_f32`, which multiplies by `dy`).
#[inline]
pub fn dact(kind: ActKind, v: f32) -> f32 {
    match kind {
        ActKind::Relu => {
            if v > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        ActKind::Tanh => 1.0 - fast_tanh(v).powi(2),
        ActKind::Gelu => {
            let u = GELU_C * (v + 0.044715 * v * v * v);
            let t = fast_tanh(u);
            0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * v * v)
        }
    }
}

/// Values per parallel task of the element-wise passes (16 KiB: big enough to amortise the task,
/// small enough to balance).
const CHUNK: usize = 4096;

/// `y = act(x)` over a slice. The kind is matched once, outside the loop, so each loop is
/// branch-free and vectorises (a `match` per element kept it scalar: 10 % of a CP training step).
fn act_slice(kind: ActKind, x: &[f32], y: &mut [f32]) {
    match kind {
        ActKind::Relu => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = act(ActKind::Relu, v)),
        ActKind::Tanh => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = act(ActKind::Tanh, v)),
        ActKind::Gelu => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = act(ActKind::Gelu, v)),
    }
}

/// `dx = act'(x) · dy` over slices, in the same form as [`act_slice`].
fn dact_slice(kind: ActKind, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let it = dx.iter_mut().zip(x.iter().zip(dy));
    match kind {
        ActKind::Relu => it.for_each(|(o, (&v, &g))| *o = dact(ActKind::Relu, v) * g),
        ActKind::Tanh => it.for_each(|(o, (&v, &g))| *o = dact(ActKind::Tanh, v) * g),
        ActKind::Gelu => it.for_each(|(o, (&v, &g))| *o = dact(ActKind::Gelu, v) * g),
    }
}

impl Layer for Activation {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        let mut data = super::tensor::zeroed(x.data.len());
        data.par_chunks_mut(CHUNK)
            .zip(x.data.par_chunks(CHUNK))
            .for_each(|(yc, xc)| act_slice(self.kind, xc, yc));
        let y = Tensor {
            shape: x.shape.clone(),
            data,
        };
        self.x = Some(x);
        Ok(y)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        let x = self
            .x
            .as_ref()
            .ok_or_else(|| NnError::Model("activation: backward before forward".into()))?;
        if dy.shape != x.shape {
            return Err(NnError::Shape {
                what: "activation output gradient".into(),
                expected: x.shape.clone(),
                found: dy.shape.clone(),
            });
        }
        let mut data = super::tensor::zeroed(x.data.len());
        data.par_chunks_mut(CHUNK)
            .zip(x.data.par_chunks(CHUNK).zip(dy.data.par_chunks(CHUNK)))
            .for_each(|(dc, (xc, gc))| dact_slice(self.kind, xc, gc, dc));
        Ok(Tensor {
            shape: x.shape.clone(),
            data,
        })
    }
    fn describe(&self) -> String {
        format!("{:?}", self.kind).to_lowercase()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    Max,
    Avg,
}

/// Non-overlapping pooling with window = stride = `k` per axis (trailing remainders dropped).
pub struct Pool {
    pub kind: PoolKind,
    pub k: [usize; 3],
    x_shape: Vec<usize>,
    /// For max pooling: the input index that won each output.
    argmax: Vec<usize>,
}

impl Pool {
    pub fn new(kind: PoolKind, k: [usize; 3]) -> Self {
        Pool {
            kind,
            k,
            x_shape: vec![],
            argmax: vec![],
        }
    }

    fn out(&self, d: [usize; 5]) -> Result<[usize; 3], NnError> {
        let o = [d[2] / self.k[0], d[3] / self.k[1], d[4] / self.k[2]];
        if o.contains(&0) {
            return Err(NnError::Shape {
                what: format!("pooling window {:?}", self.k),
                expected: self.k.to_vec(),
                found: d[2..].to_vec(),
            });
        }
        Ok(o)
    }
}

impl Layer for Pool {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        let d = x.dims5("pool")?;
        let o = self.out(d)?;
        let [kt, ky, kx] = self.k;
        let mut y = Tensor::zeros(&[d[0], d[1], o[0], o[1], o[2]]);
        self.argmax = vec![0; y.len()];
        let inv = 1.0 / (kt * ky * kx) as f32;
        let (nin, nout) = (d[2] * d[3] * d[4], o[0] * o[1] * o[2]);
        let kind = self.kind;
        // One (sample, channel) block per task; within it the CPU order of old.
        y.data
            .par_chunks_mut(nout.max(1))
            .zip(self.argmax.par_chunks_mut(nout.max(1)))
            .enumerate()
            .for_each(|(bc, (yb, ab))| {
                let mut yi = 0;
                for t in 0..o[0] {
                    for a in 0..o[1] {
                        for b in 0..o[2] {
                            let (mut best, mut arg, mut sum) = (f32::NEG_INFINITY, 0, 0.0f32);
                            for p in 0..kt {
                                for q in 0..ky {
                                    for s in 0..kx {
                                        let i =
                                            ((t * kt + p) * d[3] + a * ky + q) * d[4] + b * kx + s;
                                        let v = x.data[bc * nin + i];
                                        sum += v;
                                        if v > best {
                                            best = v;
                                            arg = bc * nin + i;
                                        }
                                    }
                                }
                            }
                            yb[yi] = match kind {
                                PoolKind::Max => best,
                                PoolKind::Avg => sum * inv,
                            };
                            ab[yi] = arg;
                            yi += 1;
                        }
                    }
                }
            });
        self.x_shape = x.shape.clone();
        Ok(y)
    }

    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        if dy.len() != self.argmax.len() {
            return Err(NnError::Shape {
                what: "pool output gradient".into(),
                expected: vec![self.argmax.len()],
                found: dy.shape.clone(),
            });
        }
        let mut dx = Tensor::zeros(&self.x_shape);
        let d = &self.x_shape;
        let [kt, ky, kx] = self.k;
        let o = [d[2] / kt, d[3] / ky, d[4] / kx];
        let (nin, nout) = (d[2] * d[3] * d[4], o[0] * o[1] * o[2]);
        let inv = 1.0 / (kt * ky * kx) as f32;
        // Windows do not overlap: every input value receives at most one contribution, so the
        // blocks are independent and the result is the serial one bit for bit.
        dx.data
            .par_chunks_mut(nin.max(1))
            .enumerate()
            .for_each(|(bc, xb)| {
                let (gb, ab) = (
                    &dy.data[bc * nout..(bc + 1) * nout],
                    &self.argmax[bc * nout..(bc + 1) * nout],
                );
                match self.kind {
                    PoolKind::Max => {
                        for (g, &i) in gb.iter().zip(ab) {
                            xb[i - bc * nin] += g;
                        }
                    }
                    PoolKind::Avg => {
                        let mut oi = 0;
                        for t in 0..o[0] {
                            for a in 0..o[1] {
                                for b in 0..o[2] {
                                    let g = gb[oi] * inv;
                                    oi += 1;
                                    for p in 0..kt {
                                        for q in 0..ky {
                                            for s in 0..kx {
                                                xb[((t * kt + p) * d[3] + a * ky + q) * d[4]
                                                    + b * kx
                                                    + s] += g;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok(dx)
    }
    fn describe(&self) -> String {
        format!("{:?} pool {:?}", self.kind, self.k).to_lowercase()
    }
}

/// Nearest-neighbour up-sampling by integer factors per axis.
pub struct Upsample {
    pub scale: [usize; 3],
    x_shape: Vec<usize>,
}

impl Upsample {
    pub fn new(scale: [usize; 3]) -> Self {
        Upsample {
            scale,
            x_shape: vec![],
        }
    }
}

impl Layer for Upsample {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        let d = x.dims5("upsample")?;
        let [st, sy, sx] = self.scale;
        let o = [d[2] * st, d[3] * sy, d[4] * sx];
        let mut y = Tensor::zeros(&[d[0], d[1], o[0], o[1], o[2]]);
        let mut yi = 0;
        for bc in 0..d[0] * d[1] {
            for t in 0..o[0] {
                for a in 0..o[1] {
                    for b in 0..o[2] {
                        y.data[yi] = x.data[((bc * d[2] + t / st) * d[3] + a / sy) * d[4] + b / sx];
                        yi += 1;
                    }
                }
            }
        }
        self.x_shape = x.shape.clone();
        Ok(y)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        let d = &self.x_shape;
        let mut dx = Tensor::zeros(d);
        let [st, sy, sx] = self.scale;
        let o = [d[2] * st, d[3] * sy, d[4] * sx];
        if dy.len() != d[0] * d[1] * o.iter().product::<usize>() {
            return Err(NnError::Shape {
                what: "upsample output gradient".into(),
                expected: vec![d[0], d[1], o[0], o[1], o[2]],
                found: dy.shape.clone(),
            });
        }
        let mut yi = 0;
        for bc in 0..d[0] * d[1] {
            for t in 0..o[0] {
                for a in 0..o[1] {
                    for b in 0..o[2] {
                        dx.data[((bc * d[2] + t / st) * d[3] + a / sy) * d[4] + b / sx] +=
                            dy.data[yi];
                        yi += 1;
                    }
                }
            }
        }
        Ok(dx)
    }
    fn describe(&self) -> String {
        format!("upsample {:?}", self.scale)
    }
}
