//! f32 tensors, row-major and contiguous: `[batch, channel, time, y, x]` for the network.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Errors of the network engine: shapes that do not fit, bad model files.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("model: {0}")]
    Model(String),
}

/// A dense tensor. The network uses rank 5, `[B, C, T, Y, X]`; 2-D layers see `T = 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `n` zeros, written in parallel rather than taken as lazily zeroed pages from `calloc`.
///
/// A large `vec![0.0; n]` comes straight from `mmap` as copy-on-write views of the kernel's zero
/// page; the `+=` passes that follow then take two faults per page, and every copy-on-write
/// replacement flushes the other cores' TLBs. In the CP layer's backward pass that cost 8× the
/// arithmetic on 2 cores (measured with perf). Writing the zeros first maps each page once.
pub fn zeroed(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    // Below 1 MiB the block comes from the heap, not from `mmap`: plain zeroing, no thread hop.
    if n < 1 << 18 {
        return vec![0.0; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    // Keeps the optimiser from fusing the allocation and the fill back into a `calloc`.
    std::hint::black_box(&mut v);
    v.par_extend(rayon::iter::repeat_n(0.0f32, n));
    v
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: zeroed(shape.iter().product()),
        }
    }

    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self, NnError> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(NnError::Shape {
                what: "tensor data".into(),
                expected: shape.to_vec(),
                found: vec![data.len()],
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// Standard normal entries times `std`.
    pub fn randn(shape: &[usize], std: f32, rng: &mut impl Rng) -> Self {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| std * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng))
            .collect();
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// `[B, C, T, Y, X]` as five numbers; errors name `what` when the rank is not 5.
    pub fn dims5(&self, what: &str) -> Result<[usize; 5], NnError> {
        match self.shape[..] {
            [b, c, t, y, x] => Ok([b, c, t, y, x]),
            _ => Err(NnError::Shape {
                what: format!("{what} (rank-5 [B, C, T, Y, X])"),
                expected: vec![],
                found: self.shape.clone(),
            }),
        }
    }

    pub fn dot(&self, other: &Tensor) -> f64 {
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
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
