//! Network layers with forward, input-gradient and weight-gradient passes, one file per kind.
//!
//! # Shapes
//! Every layer maps `x: [B, Ci, T, Y, X]` to `y: [B, Co, T', Y', X']` (2-D layers: `T = T' = 1`).
//! `backward_input(dy)` returns `dx` with the shape of the last `x`; `backward_weights(dy)` adds
//! the weight gradients of the last forward pass into each [`Param::grad`].

use super::conv::{
    col2im, depthwise_axis, depthwise_axis_backward, gemm, gemm_view, im2col, sum8, view, view_at,
    view_at_mut, AxisConv, DwShape, Geom, Scratch,
};
use super::direct::Direct;
use super::graph::{Exec, Node};
use super::ops::{Activation, Pool, Upsample};
use super::tensor::{concat_channels, split_channels};
use super::tensor::{zeroed, NnError, Tensor};
use rayon::prelude::*;

/// A trainable array and its gradient.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
}

impl Param {
    pub fn new(name: impl Into<String>, shape: &[usize], value: Vec<f32>) -> Self {
        let n = value.len();
        Param {
            name: name.into(),
            shape: shape.to_vec(),
            value,
            grad: vec![0.0; n],
        }
    }
}

/// A layer of the network. See the module docs for shapes.
pub trait Layer: Send + Sync {
    /// `x: [B, Ci, T, Y, X] → y: [B, Co, T', Y', X']`; keeps what the backward passes need.
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError>;
    /// [`Layer::forward`] on an input the caller gives up: layers that keep `x` for the backward
    /// passes keep it without a copy.
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        self.forward(&x)
    }
    /// `dy: [B, Co, T', Y', X'] → dx: [B, Ci, T, Y, X]`.
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError>;
    /// Adds `∂L/∂θ` for `dy = ∂L/∂y` into the parameters' gradients.
    fn backward_weights(&mut self, _dy: &Tensor) -> Result<(), NnError> {
        Ok(())
    }
    /// Both passes of training: adds the weight gradients and returns `dx`. Layers whose two
    /// passes share work (CP's chain) do it once here.
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor, NnError> {
        let dx = self.backward_input(dy)?;
        self.backward_weights(dy)?;
        Ok(dx)
    }
    fn params(&self) -> Vec<&Param> {
        vec![]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![]
    }
    fn describe(&self) -> String;
}

/// `g` reduced to axis `ax` (kernel 1, stride 1, no padding elsewhere): the geometry of CP's
/// depthwise pass along that axis (the CPU and GPU layers share it).
pub fn axis_geom(g: &Geom, ax: usize) -> Geom {
    let mut a = Geom {
        k: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dil: [1; 3],
    };
    a.k[ax] = g.k[ax];
    a.stride[ax] = g.stride[ax];
    a.pad[ax] = g.pad[ax];
    a.dil[ax] = g.dil[ax];
    a
}

/// The 1-D pass of `g` along axis `ax` (for the depthwise passes of CP).
pub fn axis_conv(g: &Geom, ax: usize) -> AxisConv {
    AxisConv {
        axis: ax,
        k: g.k[ax],
        stride: g.stride[ax],
        pad: g.pad[ax],
        dil: g.dil[ax],
    }
}

fn saved<'a>(x: &'a Option<Tensor>, what: &str) -> Result<&'a Tensor, NnError> {
    x.as_ref()
        .ok_or_else(|| NnError::Model(format!("{what}: backward before forward")))
}

fn check_channels(x: &Tensor, c: usize, what: &str) -> Result<[usize; 5], NnError> {
    let d = x.dims5(what)?;
    if d[1] != c {
        return Err(NnError::Shape {
            what: format!("{what} input channels"),
            expected: vec![c],
            found: vec![d[1]],
        });
    }
    Ok(d)
}

fn check_same(a: &Tensor, shape: &[usize], what: &str) -> Result<(), NnError> {
    if a.shape != shape {
        return Err(NnError::Shape {
            what: what.into(),
            expected: shape.to_vec(),
            found: a.shape.clone(),
        });
    }
    Ok(())
}

/// Runs `f(b, out_slice)` for every sample in parallel and stacks the results.
fn per_sample(b: usize, each: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let mut out = zeroed(b * each);
    out.par_chunks_mut(each.max(1))
        .enumerate()
        .for_each(|(i, o)| f(i, o));
    out
}

/// Sums per-sample gradient contributions in sample order (deterministic for any thread count).
fn sum_per_sample(b: usize, len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let parts = per_sample(b, len, f);
    let mut acc = zeroed(len);
    for p in parts.chunks(len.max(1)) {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

mod core;
mod cp;
mod dense;
mod pair;
mod transpose;

pub use self::core::{ConvAlgo, ConvCore};
pub use cp::{CpConv, CpFactors};
pub use dense::DenseConv;
pub use pair::PairConv;
pub use transpose::{transposed_out_dims, ConvTranspose};

/// The closed set of layer kinds. A backend builds its own layer from each variant by an
/// exhaustive `match` (see `cuda::layers`), so a new kind does not compile until every backend
/// runs it: one file per backend, no down-casts.
pub enum AnyLayer {
    Dense(DenseConv),
    Pair(PairConv),
    Cp(CpConv),
    ConvTranspose(ConvTranspose),
    Activation(Activation),
    Pool(Pool),
    Upsample(Upsample),
}

/// Calls `$e` on the layer inside any variant.
macro_rules! each_kind {
    ($self:expr, $l:ident => $e:expr) => {
        match $self {
            AnyLayer::Dense($l) => $e,
            AnyLayer::Pair($l) => $e,
            AnyLayer::Cp($l) => $e,
            AnyLayer::ConvTranspose($l) => $e,
            AnyLayer::Activation($l) => $e,
            AnyLayer::Pool($l) => $e,
            AnyLayer::Upsample($l) => $e,
        }
    };
}

impl Layer for AnyLayer {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        each_kind!(self, l => l.forward(x))
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        each_kind!(self, l => l.forward_owned(x))
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        each_kind!(self, l => l.backward_input(dy))
    }
    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        each_kind!(self, l => l.backward_weights(dy))
    }
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor, NnError> {
        each_kind!(self, l => l.backward(dy))
    }
    fn params(&self) -> Vec<&Param> {
        each_kind!(self, l => l.params())
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        each_kind!(self, l => l.params_mut())
    }
    fn describe(&self) -> String {
        each_kind!(self, l => l.describe())
    }
}

/// The CPU backend of the graph walker ([`crate::nn::graph`]).
pub struct CpuExec;

impl Exec for CpuExec {
    type Layer = AnyLayer;
    type Value = Tensor;
    type Error = NnError;
    type Hint = ();

    fn hint(_: Option<&Node<AnyLayer>>) {}
    fn forward(&mut self, layer: &mut AnyLayer, x: Tensor, _: ()) -> Result<Tensor, NnError> {
        layer.forward_owned(x)
    }
    fn backward(&mut self, layer: &mut AnyLayer, dy: Tensor) -> Result<Tensor, NnError> {
        layer.backward(&dy)
    }
    fn channels(v: &Tensor) -> usize {
        v.shape.get(1).copied().unwrap_or(0)
    }
    fn duplicate(&mut self, v: &Tensor) -> Result<Tensor, NnError> {
        Ok(v.clone())
    }
    fn concat(&mut self, main: Tensor, skip: &Tensor, _: &str) -> Result<Tensor, NnError> {
        concat_channels(&main, skip)
    }
    fn split(&mut self, v: Tensor, c: usize) -> Result<(Tensor, Tensor), NnError> {
        split_channels(&v, c)
    }
    fn add(&mut self, mut acc: Tensor, other: &Tensor, what: &str) -> Result<Tensor, NnError> {
        check_same(other, &acc.shape, what)?;
        acc.data
            .iter_mut()
            .zip(&other.data)
            .for_each(|(a, b)| *a += b);
        Ok(acc)
    }
}
