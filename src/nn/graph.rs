//! The model graph and its one walker. A network is a list of [`Node`]s: layers, and the named
//! skips that connect them (save, concat, add). [`Graph::forward`] and [`Graph::backward`] walk
//! that list for every backend; a backend says only how to run one layer and how to copy,
//! join, split and add its tensors ([`Exec`]). The CPU model and the GPU model therefore share
//! the skip bookkeeping (saved tensors, concat splits, pending skip gradients) instead of each
//! keeping a copy of it.

use super::tensor::NnError;
use std::collections::HashMap;

/// One step of a model's graph, in order.
#[derive(Debug, Clone)]
pub enum Node<L> {
    Layer(L),
    /// Keeps the current tensor under a name.
    Save(String),
    /// Appends the saved tensor's channels.
    Concat(String),
    /// Adds the saved tensor.
    Add(String),
}

/// What a backend does for the walker: the narrow execution interface.
pub trait Exec {
    /// The backend's layer (a closed enum of the layer kinds).
    type Layer;
    /// A tensor with its shape.
    type Value;
    type Error: From<NnError>;
    /// What a layer is told about the node after it (the GPU runs an activation in the
    /// epilogue of the convolution before it).
    type Hint: Copy;

    fn hint(next: Option<&Node<Self::Layer>>) -> Self::Hint;
    fn forward(
        &mut self,
        layer: &mut Self::Layer,
        x: Self::Value,
        next: Self::Hint,
    ) -> Result<Self::Value, Self::Error>;
    /// Adds the layer's weight gradients and returns `dx`.
    fn backward(
        &mut self,
        layer: &mut Self::Layer,
        dy: Self::Value,
    ) -> Result<Self::Value, Self::Error>;
    fn channels(v: &Self::Value) -> usize;
    fn duplicate(&mut self, v: &Self::Value) -> Result<Self::Value, Self::Error>;
    /// `[B, Ca, ...] ++ [B, Cb, ...]`; `name` is the skip's, for errors.
    fn concat(
        &mut self,
        main: Self::Value,
        skip: &Self::Value,
        name: &str,
    ) -> Result<Self::Value, Self::Error>;
    /// The first `c` channels and the rest.
    fn split(
        &mut self,
        v: Self::Value,
        c: usize,
    ) -> Result<(Self::Value, Self::Value), Self::Error>;
    /// `acc + other` (same shape, else an error naming `what`).
    fn add(
        &mut self,
        acc: Self::Value,
        other: &Self::Value,
        what: &str,
    ) -> Result<Self::Value, Self::Error>;
}

/// The nodes of a network and what the last forward pass left for the backward pass.
pub struct Graph<L, V> {
    nodes: Vec<Node<L>>,
    saved: HashMap<String, V>,
    /// Channels of the main part at each concat of the last forward pass.
    splits: Vec<usize>,
}

fn missing(name: &str) -> NnError {
    NnError::Model(format!("`{name}` not saved"))
}

impl<L, V> Graph<L, V> {
    pub fn new(nodes: Vec<Node<L>>) -> Self {
        Graph {
            nodes,
            saved: HashMap::new(),
            splits: vec![],
        }
    }

    pub fn nodes(&self) -> &[Node<L>] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [Node<L>] {
        &mut self.nodes
    }

    /// The layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = &L> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Layer(l) => Some(l),
            _ => None,
        })
    }

    pub fn layers_mut(&mut self) -> impl Iterator<Item = &mut L> {
        self.nodes.iter_mut().filter_map(|n| match n {
            Node::Layer(l) => Some(l),
            _ => None,
        })
    }

    /// Runs the nodes in order on `x`, keeping what [`Graph::backward`] needs.
    pub fn forward<E>(&mut self, exec: &mut E, x: V) -> Result<V, E::Error>
    where
        E: Exec<Layer = L, Value = V>,
    {
        self.saved.clear();
        self.splits.clear();
        let mut cur = x;
        for i in 0..self.nodes.len() {
            let hint = E::hint(self.nodes.get(i + 1));
            cur = match &mut self.nodes[i] {
                Node::Layer(l) => exec.forward(l, cur, hint)?,
                Node::Save(name) => {
                    let copy = exec.duplicate(&cur)?;
                    self.saved.insert(name.clone(), copy);
                    cur
                }
                Node::Concat(name) => {
                    let s = self.saved.get(name).ok_or_else(|| missing(name))?;
                    self.splits.push(E::channels(&cur));
                    exec.concat(cur, s, name)?
                }
                Node::Add(name) => {
                    let s = self.saved.get(name).ok_or_else(|| missing(name))?;
                    exec.add(cur, s, &format!("skip `{name}` (add)"))?
                }
            };
        }
        Ok(cur)
    }

    /// Backpropagates `dy` of the last forward pass: every layer adds its weight gradients;
    /// returns `dx`. Skip gradients wait at their save node.
    pub fn backward<E>(&mut self, exec: &mut E, dy: V) -> Result<V, E::Error>
    where
        E: Exec<Layer = L, Value = V>,
    {
        let mut cur = dy;
        let mut pending: HashMap<String, V> = HashMap::new();
        let mut splits = self.splits.clone();
        for node in self.nodes.iter_mut().rev() {
            cur = match node {
                Node::Layer(l) => exec.backward(l, cur)?,
                Node::Concat(name) => {
                    let c = splits.pop().ok_or_else(|| {
                        NnError::Model("concat split missing: backward before forward".into())
                    })?;
                    let (main, skip) = exec.split(cur, c)?;
                    accumulate(exec, &mut pending, name, skip)?;
                    main
                }
                Node::Add(name) => {
                    let copy = exec.duplicate(&cur)?;
                    accumulate(exec, &mut pending, name, copy)?;
                    cur
                }
                Node::Save(name) => match pending.remove(name.as_str()) {
                    Some(g) => exec.add(cur, &g, &format!("gradient of skip `{name}`"))?,
                    None => cur,
                },
            };
        }
        Ok(cur)
    }
}

fn accumulate<E: Exec>(
    exec: &mut E,
    pending: &mut HashMap<String, E::Value>,
    name: &str,
    g: E::Value,
) -> Result<(), E::Error> {
    let sum = match pending.remove(name) {
        Some(acc) => exec.add(acc, &g, &format!("gradient of skip `{name}`"))?,
        None => g,
    };
    pending.insert(name.to_string(), sum);
    Ok(())
}
