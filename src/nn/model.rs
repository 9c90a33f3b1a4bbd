//! Models written in TOML (a U-Net is a list of layers with `save` / `concat` / `add` skips),
//! built with the factor-aware initialisation, run forward and backward as one network.

use super::conv::Geom;
use super::layers::{ConvCore, ConvTranspose, CpConv, DenseConv, Layer, PairConv, Param};
use super::ops::{ActKind, Activation, Pool, PoolKind, Upsample};
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

/// One step of a model's graph, in order.
pub enum Node {
    Layer(Box<dyn Layer>),
    /// Keeps the current tensor under a name.
    Save(String),
    /// Appends the saved tensor's channels.
    Concat(String),
    /// Adds the saved tensor.
    Add(String),
}

/// A built network.
pub struct Model {
    pub spec: ModelSpec,
    nodes: Vec<Node>,
    /// Output channels.
    pub out_channels: usize,
    saved: HashMap<String, Tensor>,
    concat_split: Vec<usize>,
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
        let h = &spec.model;
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
        let mut rng = ChaCha8Rng::seed_from_u64(h.seed);
        let axes: Vec<usize> = if h.dims == 2 {
            vec![1, 2]
        } else {
            vec![0, 1, 2]
        };
        if h.in_channels > MAX_CHANNELS {
            return Err(NnError::Model(format!(
                "model.in_channels = {} is more than the limit of {MAX_CHANNELS}",
                h.in_channels
            )));
        }
        let mut ch = h.in_channels;
        let mut saved_ch: HashMap<String, usize> = HashMap::new();
        let mut nodes = Vec::new();
        // Parameters so far, checked against memory before each layer allocates its own.
        let mut params = 0f64;
        let avail = crate::limits::available_memory();
        for (i, l) in spec.layer.iter().enumerate() {
            let key = |k: &str| format!("layer[{i}].{k}");
            let node = match l {
                LayerSpec::Conv {
                    out,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    kind,
                    rank,
                    bias,
                } => {
                    let g = Geom {
                        k: kernel.resolve(h.dims, 1, &key("kernel"))?,
                        stride: stride.resolve(h.dims, 1, &key("stride"))?,
                        pad: padding.resolve(h.dims, 0, &key("padding"))?,
                        dil: dilation.resolve(h.dims, 1, &key("dilation"))?,
                    };
                    if g.k.contains(&0) || g.stride.contains(&0) || g.dil.contains(&0) || *out == 0
                    {
                        return Err(NnError::Model(format!(
                            "layer[{i}]: kernel, stride, dilation and out must be positive"
                        )));
                    }
                    check_padding(i, &g, "dilation · (kernel − 1)", |a| {
                        g.dil[a] * (g.k[a] - 1)
                    })?;
                    let r = rank.unwrap_or(h.rank);
                    let ksum: f64 = axes.iter().map(|&a| g.k[a] as f64).sum();
                    let (o, c, rf) = (*out as f64, ch as f64, r as f64);
                    params += match kind.unwrap_or(h.kind) {
                        ConvKind::Dense => o * c * g.kvol() as f64,
                        ConvKind::Pair => o * c * rf * ksum,
                        ConvKind::Cp => rf * (c + ksum + o),
                    };
                    check_size(i, *out, params, avail)?;
                    let core = ConvCore {
                        ci: ch,
                        co: *out,
                        g,
                    };
                    let std = kaiming_std(ch * g.kvol());
                    let layer: Box<dyn Layer> = match kind.unwrap_or(h.kind) {
                        ConvKind::Dense => Box::new(DenseConv::new(
                            core,
                            Tensor::randn(&[out * ch * g.kvol()], std, &mut rng).data,
                            *bias,
                        )),
                        ConvKind::Pair => {
                            let s = factor_std(std, r, axes.len());
                            let f = axes
                                .iter()
                                .map(|&a| Tensor::randn(&[out * ch * r * g.k[a]], s, &mut rng).data)
                                .collect();
                            Box::new(PairConv::new(core, r, axes.clone(), f, *bias))
                        }
                        ConvKind::Cp => {
                            let s = factor_std(std, r, axes.len() + 2);
                            let v = Tensor::randn(&[r * ch], s, &mut rng).data;
                            let a = axes
                                .iter()
                                .map(|&ax| Tensor::randn(&[r * g.k[ax]], s, &mut rng).data)
                                .collect();
                            let u = Tensor::randn(&[out * r], s, &mut rng).data;
                            let mut l = CpConv::new(ch, *out, r, g, axes.clone(), v, a, u, *bias);
                            l.recompute = h.recompute;
                            Box::new(l)
                        }
                    };
                    ch = *out;
                    Node::Layer(layer)
                }
                LayerSpec::ConvTranspose {
                    out,
                    kernel,
                    stride,
                    padding,
                    output_padding,
                    bias,
                } => {
                    let g = Geom {
                        k: kernel.resolve(h.dims, 1, &key("kernel"))?,
                        stride: stride.resolve(h.dims, 1, &key("stride"))?,
                        pad: padding.resolve(h.dims, 0, &key("padding"))?,
                        dil: [1; 3],
                    };
                    let op = output_padding.resolve(h.dims, 0, &key("output_padding"))?;
                    if g.k.contains(&0) || g.stride.contains(&0) || *out == 0 {
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
                    params += (ch * *out) as f64 * g.kvol() as f64;
                    check_size(i, *out, params, avail)?;
                    let std =
                        kaiming_std(ch * g.kvol() / g.stride.iter().product::<usize>().max(1));
                    let w = Tensor::randn(&[ch * out * g.kvol()], std, &mut rng).data;
                    let layer = ConvTranspose::new(ch, *out, g, op, w, *bias);
                    ch = *out;
                    Node::Layer(Box::new(layer))
                }
                LayerSpec::Relu => Node::Layer(Box::new(Activation::new(ActKind::Relu))),
                LayerSpec::Gelu => Node::Layer(Box::new(Activation::new(ActKind::Gelu))),
                LayerSpec::Tanh => Node::Layer(Box::new(Activation::new(ActKind::Tanh))),
                LayerSpec::Pool { mode, kernel } => Node::Layer(Box::new(Pool::new(
                    *mode,
                    positive(i, "kernel", kernel.resolve(h.dims, 1, &key("kernel"))?)?,
                ))),
                LayerSpec::Upsample { scale } => Node::Layer(Box::new(Upsample::new(positive(
                    i,
                    "scale",
                    scale.resolve(h.dims, 1, &key("scale"))?,
                )?))),
                LayerSpec::Save { name } => {
                    saved_ch.insert(name.clone(), ch);
                    Node::Save(name.clone())
                }
                LayerSpec::Concat { name } => {
                    let c = saved_ch.get(name).ok_or_else(|| {
                        NnError::Model(format!(
                            "layer[{i}]: concat of `{name}`, which no earlier layer saved"
                        ))
                    })?;
                    ch += c;
                    Node::Concat(name.clone())
                }
                LayerSpec::Add { name } => {
                    let c = saved_ch.get(name).ok_or_else(|| {
                        NnError::Model(format!(
                            "layer[{i}]: add of `{name}`, which no earlier layer saved"
                        ))
                    })?;
                    if *c != ch {
                        return Err(NnError::Model(format!(
                            "layer[{i}]: add of `{name}` with {c} channels to {ch} channels"
                        )));
                    }
                    Node::Add(name.clone())
                }
            };
            nodes.push(node);
        }
        Ok(Model {
            spec,
            nodes,
            out_channels: ch,
            saved: HashMap::new(),
            concat_split: vec![],
        })
    }

    /// # Shapes
    /// `x: [B, in_channels, T, Y, X]` (2-D: `T = 1`) → `[B, out_channels, T', Y', X']`.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }

    /// [`Model::forward`] on an input the caller gives up (no copy of it is made).
    pub fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        let mut cur = x;
        self.saved.clear();
        self.concat_split.clear();
        for node in &mut self.nodes {
            cur = match node {
                Node::Layer(l) => l.forward_owned(cur)?,
                Node::Save(name) => {
                    self.saved.insert(name.clone(), cur.clone());
                    cur
                }
                Node::Concat(name) => {
                    let s = self
                        .saved
                        .get(name)
                        .ok_or_else(|| NnError::Model(format!("`{name}` not saved")))?;
                    self.concat_split.push(cur.shape[1]);
                    concat_channels(&cur, s)?
                }
                Node::Add(name) => {
                    let s = self
                        .saved
                        .get(name)
                        .ok_or_else(|| NnError::Model(format!("`{name}` not saved")))?;
                    if s.shape != cur.shape {
                        return Err(NnError::Shape {
                            what: format!("skip `{name}` (add)"),
                            expected: cur.shape.clone(),
                            found: s.shape.clone(),
                        });
                    }
                    Tensor {
                        shape: cur.shape.clone(),
                        data: cur.data.iter().zip(&s.data).map(|(a, b)| a + b).collect(),
                    }
                }
            };
        }
        Ok(cur)
    }

    /// Backpropagates `dy = ∂L/∂y` of the last forward pass: adds every weight gradient into
    /// its parameter and returns `∂L/∂x`.
    pub fn backward(&mut self, dy: &Tensor) -> Result<Tensor, NnError> {
        self.backward_owned(dy.clone())
    }

    /// [`Model::backward`] on a gradient the caller gives up.
    pub fn backward_owned(&mut self, dy: Tensor) -> Result<Tensor, NnError> {
        let mut cur = dy;
        let mut pending: HashMap<String, Tensor> = HashMap::new();
        let mut splits = self.concat_split.clone();
        for node in self.nodes.iter_mut().rev() {
            match node {
                Node::Layer(l) => {
                    cur = l.backward(&cur)?;
                }
                Node::Concat(name) => {
                    let c = splits.pop().ok_or_else(|| {
                        NnError::Model("concat split missing: backward before forward".into())
                    })?;
                    let (main, skip) = split_channels(&cur, c)?;
                    accumulate(&mut pending, name, skip);
                    cur = main;
                }
                Node::Add(name) => accumulate(&mut pending, name, cur.clone()),
                Node::Save(name) => {
                    if let Some(g) = pending.remove(name.as_str()) {
                        cur.data.iter_mut().zip(&g.data).for_each(|(a, b)| *a += b);
                    }
                }
            }
        }
        Ok(cur)
    }

    /// The graph, in execution order (for building the GPU executor).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The graph, mutably (benchmarks time single layers' passes through it).
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    pub fn params(&self) -> Vec<&Param> {
        self.nodes
            .iter()
            .flat_map(|n| {
                if let Node::Layer(l) = n {
                    l.params()
                } else {
                    vec![]
                }
            })
            .collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.nodes
            .iter_mut()
            .flat_map(|n| {
                if let Node::Layer(l) = n {
                    l.params_mut()
                } else {
                    vec![]
                }
            })
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
        self.nodes
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

fn accumulate(pending: &mut HashMap<String, Tensor>, name: &str, g: Tensor) {
    match pending.get_mut(name) {
        Some(p) => p.data.iter_mut().zip(&g.data).for_each(|(a, b)| *a += b),
        None => {
            pending.insert(name.to_string(), g);
        }
    }
}

/// `[B, Ca, ...] ++ [B, Cb, ...] → [B, Ca + Cb, ...]`.
pub fn concat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor, NnError> {
    let (da, db) = (a.dims5("concat")?, b.dims5("concat skip")?);
    if da[0] != db[0] || da[2..] != db[2..] {
        return Err(NnError::Shape {
            what: "concat skip (batch and extents must match)".into(),
            expected: a.shape.clone(),
            found: b.shape.clone(),
        });
    }
    let n = da[2] * da[3] * da[4];
    let mut data = Vec::with_capacity(a.len() + b.len());
    for s in 0..da[0] {
        data.extend_from_slice(&a.data[s * da[1] * n..(s + 1) * da[1] * n]);
        data.extend_from_slice(&b.data[s * db[1] * n..(s + 1) * db[1] * n]);
    }
    Tensor::from_vec(&[da[0], da[1] + db[1], da[2], da[3], da[4]], data)
}

/// Inverse of [`concat_channels`]: the first `ca` channels and the rest.
pub fn split_channels(t: &Tensor, ca: usize) -> Result<(Tensor, Tensor), NnError> {
    let d = t.dims5("split")?;
    let n = d[2] * d[3] * d[4];
    let cb = d[1] - ca;
    let (mut a, mut b) = (
        Vec::with_capacity(d[0] * ca * n),
        Vec::with_capacity(d[0] * cb * n),
    );
    for s in 0..d[0] {
        let base = s * d[1] * n;
        a.extend_from_slice(&t.data[base..base + ca * n]);
        b.extend_from_slice(&t.data[base + ca * n..base + d[1] * n]);
    }
    Ok((
        Tensor::from_vec(&[d[0], ca, d[2], d[3], d[4]], a)?,
        Tensor::from_vec(&[d[0], cb, d[2], d[3], d[4]], b)?,
    ))
}
