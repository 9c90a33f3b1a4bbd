//! Models written in TOML (a U-Net is a list of layers with `save` / `concat` / `add` skips),
//! built with the factor-aware initialisation, run forward and backward as one network.

use super::conv::Geom;
use super::graph::Graph;
pub use super::graph::Node;
use super::layers::{
    AnyLayer, ConvCore, ConvTranspose, CpConv, CpFactors, CpuExec, DenseConv, Layer, PairConv,
    Param,
};
use super::ops::{ActKind, Activation, Pool, PoolKind, Upsample};
pub use super::tensor::{concat_channels, split_channels};
use super::tensor::{NnError, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Convolution kinds (see [`super::layers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvKind {
    Dense,
    Pair,
    Cp,
}

/// A size given once for every axis or per axis (`[y, x]` in 2-D, `[t, y, x]` in 3-D).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Axes {
    One(usize),
    Each(Vec<usize>),
}

impl Axes {
    /// `(t, y, x)`; in 2-D the time entry is `inactive`.
    fn resolve(&self, dims: usize, inactive: usize, key: &str) -> Result<[usize; 3], NnError> {
        match (self, dims) {
            (Axes::One(v), 2) => Ok([inactive, *v, *v]),
            (Axes::One(v), _) => Ok([*v; 3]),
            (Axes::Each(v), 2) if v.len() == 2 => Ok([inactive, v[0], v[1]]),
            (Axes::Each(v), 3) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
            (Axes::Each(v), _) => Err(NnError::Model(format!(
                "`{key}` has {} entries; a {dims}-D model takes {dims}",
                v.len()
            ))),
        }
    }
}

/// Most channels one layer may have: far above any wave surrogate, and small enough that a
/// mistyped `out` is refused instead of allocating until the process is killed.
pub const MAX_CHANNELS: usize = 65_536;

/// Extents of a pooling or up-sampling layer: each at least 1 (a zero would divide by zero).
fn positive(i: usize, what: &str, v: [usize; 3]) -> Result<[usize; 3], NnError> {
    if v.contains(&0) {
        return Err(NnError::Model(format!(
            "layer[{i}]: {what} {v:?} must be positive in every direction"
        )));
    }
    Ok(v)
}

/// Padding past what the kernel reaches only adds outputs that see nothing but zeros (and, far
/// past it, allocates without bound).
fn check_padding(
    i: usize,
    g: &Geom,
    reach_name: &str,
    reach: impl Fn(usize) -> usize,
) -> Result<(), NnError> {
    for a in 0..3 {
        if g.pad[a] > reach(a) {
            return Err(NnError::Model(format!(
                "layer[{i}]: padding {:?} exceeds {reach_name} = {} along axis {a}",
                g.pad,
                reach(a)
            )));
        }
    }
    Ok(())
}

/// Channels within `MAX_CHANNELS`, and the parameters so far (values, gradients and the two
/// AdamW moments, 4 bytes each) within the memory available.
fn check_size(i: usize, out: usize, params: f64, avail: Option<u64>) -> Result<(), NnError> {
    if out > MAX_CHANNELS {
        return Err(NnError::Model(format!(
            "layer[{i}]: out = {out} channels is more than the limit of {MAX_CHANNELS}"
        )));
    }
    crate::limits::check_memory_within(16.0 * params, avail, &format!("the model up to layer[{i}]"))
        .map_err(|m| NnError::Model(format!("layer[{i}]: {m}")))
}

fn one() -> Axes {
    Axes::One(1)
}
fn zero() -> Axes {
    Axes::One(0)
}
fn yes() -> bool {
    true
}

/// One entry of `[[layer]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv {
        out: usize,
        kernel: Axes,
        #[serde(default = "one")]
        stride: Axes,
        #[serde(default = "zero")]
        padding: Axes,
        #[serde(default = "one")]
        dilation: Axes,
        /// Defaults to `model.kind`.
        kind: Option<ConvKind>,
        /// Defaults to `model.rank`.
        rank: Option<usize>,
        #[serde(default = "yes")]
        bias: bool,
    },
    ConvTranspose {
        out: usize,
        kernel: Axes,
        #[serde(default = "one")]
        stride: Axes,
        #[serde(default = "zero")]
        padding: Axes,
        #[serde(default = "zero")]
        output_padding: Axes,
        #[serde(default = "yes")]
        bias: bool,
    },
    Relu,
    Gelu,
    Tanh,
    Pool {
        mode: PoolKind,
        kernel: Axes,
    },
    Upsample {
        scale: Axes,
    },
    /// Remembers the current tensor under `name`.
    Save {
        name: String,
    },
    /// Concatenates the tensor saved as `name` after the current channels.
    Concat {
        name: String,
    },
    /// Adds the tensor saved as `name`.
    Add {
        name: String,
    },
}

/// The `[model]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelHeader {
    /// 2: `[B, C, 1, Y, X]` (time frames as channels); 3: `[B, C, T, Y, X]`.
    pub dims: usize,
    pub in_channels: usize,
    #[serde(default = "default_kind")]
    pub kind: ConvKind,
    #[serde(default = "default_rank")]
    pub rank: usize,
    #[serde(default)]
    pub seed: u64,
    /// CP layers keep only their input and recompute the chain's intermediates in the backward
    /// pass: less training memory (the intermediates are `R` channels each, often wider than the
    /// layer) for about a sixth more CP time. Results are bit-for-bit the same.
    #[serde(default)]
    pub recompute: bool,
}

fn default_kind() -> ConvKind {
    ConvKind::Dense
}
fn default_rank() -> usize {
    4
}

/// A whole model file: `[model]` and `[[layer]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub model: ModelHeader,
    pub layer: Vec<LayerSpec>,
}

impl ModelSpec {
    pub fn from_toml(text: &str) -> Result<Self, NnError> {
        toml::from_str(text).map_err(|e| NnError::Model(e.to_string()))
    }
}

/// A built network: its spec and the graph of its layers.
pub struct Model {
    pub spec: ModelSpec,
    graph: Graph<AnyLayer, Tensor>,
    /// Output channels.
    pub out_channels: usize,
}

/// Kaiming-normal standard deviation for ReLU networks: `sqrt(2 / fan_in)`.
pub fn kaiming_std(fan_in: usize) -> f32 {
    (2.0 / fan_in.max(1) as f32).sqrt()
}

/// Per-factor standard deviation that gives a kernel built as a sum of `rank` products of
/// `order` independent zero-mean factors the variance `std²`: `(std / √R)^(1/order)`.
pub fn factor_std(std: f32, rank: usize, order: usize) -> f32 {
    (std / (rank as f32).sqrt()).powf(1.0 / order as f32)
}

impl Model {
    pub fn new(spec: ModelSpec) -> Result<Self, NnError> {
        let mut b = Builder::new(&spec.model)?;
        let mut nodes = Vec::with_capacity(spec.layer.len());
        for (i, l) in spec.layer.iter().enumerate() {
            nodes.push(b.node(i, l)?);
        }
        Ok(Model {
            out_channels: b.ch,
            spec,
            graph: Graph::new(nodes),
        })
    }

    /// # Shapes
    /// `x: [B, in_channels, T, Y, X]` (2-D: `T = 1`) → `[B, out_channels, T', Y', X']`.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }

    /// [`Model::forward`] on an input the caller gives up (no copy of it is made).
    pub fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        self.graph.forward(&mut CpuExec, x)
    }

    /// Backpropagates `dy = ∂L/∂y` of the last forward pass: adds every weight gradient into
    /// its parameter and returns `∂L/∂x`.
    pub fn backward(&mut self, dy: &Tensor) -> Result<Tensor, NnError> {
        self.backward_owned(dy.clone())
    }

    /// [`Model::backward`] on a gradient the caller gives up.
    pub fn backward_owned(&mut self, dy: Tensor) -> Result<Tensor, NnError> {
        self.graph.backward(&mut CpuExec, dy)
    }

    /// The graph, in execution order (for building the GPU executor).
    pub fn nodes(&self) -> &[Node<AnyLayer>] {
        self.graph.nodes()
    }

    /// The graph, mutably (benchmarks time single layers' passes through it).
    pub fn nodes_mut(&mut self) -> &mut [Node<AnyLayer>] {
        self.graph.nodes_mut()
    }

    pub fn params(&self) -> Vec<&Param> {
        self.graph.layers().flat_map(|l| l.params()).collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.graph
            .layers_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.value.len()).sum()
    }

    pub fn zero_grad(&mut self) {
        for p in self.params_mut() {
            p.grad.iter_mut().for_each(|g| *g = 0.0);
        }
    }

    /// One line per layer, for logs.
    pub fn summary(&self) -> Vec<String> {
        self.graph
            .nodes()
            .iter()
            .map(|n| match n {
                Node::Layer(l) => {
                    let np: usize = l.params().iter().map(|p| p.value.len()).sum();
                    format!("{} ({np} params)", l.describe())
                }
                Node::Save(s) => format!("save {s}"),
                Node::Concat(s) => format!("concat {s}"),
                Node::Add(s) => format!("add {s}"),
            })
            .collect()
    }
}

/// What building the layers in order needs to know: channels so far, saved channels, the
/// random stream of the initialisation and the parameter count against memory.
struct Builder<'h> {
    h: &'h ModelHeader,
    rng: ChaCha8Rng,
    axes: Vec<usize>,
    ch: usize,
    saved_ch: HashMap<String, usize>,
    /// Parameters so far, checked against memory before each layer allocates its own.
    params: f64,
    avail: Option<u64>,
}

impl<'h> Builder<'h> {
    fn new(h: &'h ModelHeader) -> Result<Self, NnError> {
        if h.dims != 2 && h.dims != 3 {
            return Err(NnError::Model(format!(
                "model.dims must be 2 or 3, found {}",
                h.dims
            )));
        }
        if h.in_channels == 0 || h.rank == 0 {
            return Err(NnError::Model(
                "model.in_channels and model.rank must be positive".into(),
            ));
        }
        if h.in_channels > MAX_CHANNELS {
            return Err(NnError::Model(format!(
                "model.in_channels = {} is more than the limit of {MAX_CHANNELS}",
                h.in_channels
            )));
        }
        Ok(Builder {
            h,
            rng: ChaCha8Rng::seed_from_u64(h.seed),
            axes: if h.dims == 2 {
                vec![1, 2]
            } else {
                vec![0, 1, 2]
            },
            ch: h.in_channels,
            saved_ch: HashMap::new(),
            params: 0.0,
            avail: crate::limits::available_memory(),
        })
    }

    fn resolve(
        &self,
        i: usize,
        key: &str,
        v: &Axes,
        inactive: usize,
    ) -> Result<[usize; 3], NnError> {
        v.resolve(self.h.dims, inactive, &format!("layer[{i}].{key}"))
    }

    fn saved(&self, i: usize, what: &str, name: &str) -> Result<usize, NnError> {
        self.saved_ch.get(name).copied().ok_or_else(|| {
            NnError::Model(format!(
                "layer[{i}]: {what} of `{name}`, which no earlier layer saved"
            ))
        })
    }

    fn node(&mut self, i: usize, l: &LayerSpec) -> Result<Node<AnyLayer>, NnError> {
        let layer = match l {
            LayerSpec::Conv { .. } => self.conv(i, l)?,
            LayerSpec::ConvTranspose { .. } => self.conv_transpose(i, l)?,
            LayerSpec::Relu => AnyLayer::Activation(Activation::new(ActKind::Relu)),
            LayerSpec::Gelu => AnyLayer::Activation(Activation::new(ActKind::Gelu)),
            LayerSpec::Tanh => AnyLayer::Activation(Activation::new(ActKind::Tanh)),
            LayerSpec::Pool { mode, kernel } => AnyLayer::Pool(Pool::new(
                *mode,
                positive(i, "kernel", self.resolve(i, "kernel", kernel, 1)?)?,
            )),
            LayerSpec::Upsample { scale } => AnyLayer::Upsample(Upsample::new(positive(
                i,
                "scale",
                self.resolve(i, "scale", scale, 1)?,
            )?)),
            LayerSpec::Save { name } => {
                self.saved_ch.insert(name.clone(), self.ch);
                return Ok(Node::Save(name.clone()));
            }
            LayerSpec::Concat { name } => {
                self.ch += self.saved(i, "concat", name)?;
                return Ok(Node::Concat(name.clone()));
            }
            LayerSpec::Add { name } => {
                let c = self.saved(i, "add", name)?;
                if c != self.ch {
                    return Err(NnError::Model(format!(
                        "layer[{i}]: add of `{name}` with {c} channels to {} channels",
                        self.ch
                    )));
                }
                return Ok(Node::Add(name.clone()));
            }
        };
        Ok(Node::Layer(layer))
    }

    fn conv(&mut self, i: usize, l: &LayerSpec) -> Result<AnyLayer, NnError> {
        let LayerSpec::Conv {
            out,
            kernel,
            stride,
            padding,
            dilation,
            kind,
            rank,
            bias,
        } = l
        else {
            unreachable!("conv() is called on conv layers only")
        };
        let (h, ch, out) = (self.h, self.ch, *out);
        let g = Geom {
            k: self.resolve(i, "kernel", kernel, 1)?,
            stride: self.resolve(i, "stride", stride, 1)?,
            pad: self.resolve(i, "padding", padding, 0)?,
            dil: self.resolve(i, "dilation", dilation, 1)?,
        };
        if g.k.contains(&0) || g.stride.contains(&0) || g.dil.contains(&0) || out == 0 {
            return Err(NnError::Model(format!(
                "layer[{i}]: kernel, stride, dilation and out must be positive"
            )));
        }
        check_padding(i, &g, "dilation · (kernel − 1)", |a| {
            g.dil[a] * (g.k[a] - 1)
        })?;
        let r = rank.unwrap_or(h.rank);
        let axes = self.axes.clone();
        let ksum: f64 = axes.iter().map(|&a| g.k[a] as f64).sum();
        let (o, c, rf) = (out as f64, ch as f64, r as f64);
        let kind = kind.unwrap_or(h.kind);
        self.params += match kind {
            ConvKind::Dense => o * c * g.kvol() as f64,
            ConvKind::Pair => o * c * rf * ksum,
            ConvKind::Cp => rf * (c + ksum + o),
        };
        check_size(i, out, self.params, self.avail)?;
        let core = ConvCore { ci: ch, co: out, g };
        let std = kaiming_std(ch * g.kvol());
        let rng = &mut self.rng;
        let layer = match kind {
            ConvKind::Dense => AnyLayer::Dense(DenseConv::new(
                core,
                Tensor::randn(&[out * ch * g.kvol()], std, rng).data,
                *bias,
            )),
            ConvKind::Pair => {
                let s = factor_std(std, r, axes.len());
                let f = axes
                    .iter()
                    .map(|&a| Tensor::randn(&[out * ch * r * g.k[a]], s, rng).data)
                    .collect();
                AnyLayer::Pair(PairConv::new(core, r, axes, f, *bias))
            }
            ConvKind::Cp => {
                let s = factor_std(std, r, axes.len() + 2);
                let v = Tensor::randn(&[r * ch], s, rng).data;
                let a = axes
                    .iter()
                    .map(|&ax| Tensor::randn(&[r * g.k[ax]], s, rng).data)
                    .collect();
                let u = Tensor::randn(&[out * r], s, rng).data;
                let f = CpFactors { rank: r, v, a, u };
                let mut l = CpConv::new(core, axes, f, *bias);
                l.recompute = h.recompute;
                AnyLayer::Cp(l)
            }
        };
        self.ch = out;
        Ok(layer)
    }

    fn conv_transpose(&mut self, i: usize, l: &LayerSpec) -> Result<AnyLayer, NnError> {
        let LayerSpec::ConvTranspose {
            out,
            kernel,
            stride,
            padding,
            output_padding,
            bias,
        } = l
        else {
            unreachable!("conv_transpose() is called on conv_transpose layers only")
        };
        let (ch, out) = (self.ch, *out);
        let g = Geom {
            k: self.resolve(i, "kernel", kernel, 1)?,
            stride: self.resolve(i, "stride", stride, 1)?,
            pad: self.resolve(i, "padding", padding, 0)?,
            dil: [1; 3],
        };
        let op = self.resolve(i, "output_padding", output_padding, 0)?;
        if g.k.contains(&0) || g.stride.contains(&0) || out == 0 {
            return Err(NnError::Model(format!(
                "layer[{i}]: kernel, stride and out must be positive"
            )));
        }
        check_padding(i, &g, "kernel − 1", |a| g.k[a] - 1)?;
        if (0..3).any(|a| op[a] >= g.stride[a].max(1) && op[a] > 0) {
            return Err(NnError::Model(format!(
                "layer[{i}]: output_padding {op:?} must be smaller than the stride {:?}",
                g.stride
            )));
        }
        self.params += (ch * out) as f64 * g.kvol() as f64;
        check_size(i, out, self.params, self.avail)?;
        let std = kaiming_std(ch * g.kvol() / g.stride.iter().product::<usize>().max(1));
        let w = Tensor::randn(&[ch * out * g.kvol()], std, &mut self.rng).data;
        self.ch = out;
        Ok(AnyLayer::ConvTranspose(ConvTranspose::new(
            ch, out, g, op, w, *bias,
        )))
    }
}
