//! Network engine: each convolution kind against a direct reference, factorised kinds against
//! their rebuilt dense kernels, the transposed convolution as the adjoint, and a central-
//! finite-difference gradient check of every layer (input and weights).
//!
//! Gradient checks compare directional derivatives `⟨∇L, v⟩` with `(L(θ+εv) − L(θ−εv))/2ε` for
//! `L = ⟨r, f(x)⟩` with random `r`, `v`. In f32 with ε = 1e-2 the truncation error is ~1e-4 of
//! the value and round-off ~1e-5, so a relative tolerance of 2e-3 separates right from wrong
//! (a wrong gradient is off by O(1)).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wavecp::nn::conv::Geom;
use wavecp::nn::layers::{ConvCore, ConvTranspose, CpConv, CpFactors, DenseConv, PairConv};
use wavecp::nn::ops::{ActKind, Activation, Pool, PoolKind, Upsample};
use wavecp::nn::{Layer, Tensor};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randv(n: usize, r: &mut ChaCha8Rng) -> Vec<f32> {
    Tensor::randn(&[n], 1.0, r).data
}

fn geom(k: [usize; 3], stride: [usize; 3], pad: [usize; 3], dil: [usize; 3]) -> Geom {
    Geom {
        k,
        stride,
        pad,
        dil,
    }
}

/// Direct 3-D convolution, the textbook loop.
fn reference_conv(x: &Tensor, w: &[f32], co: usize, g: &Geom) -> Tensor {
    let d = x.dims5("x").unwrap();
    let o = g.out_dims([d[2], d[3], d[4]]).unwrap();
    let mut y = Tensor::zeros(&[d[0], co, o[0], o[1], o[2]]);
    let k = g.k;
    for b in 0..d[0] {
        for oc in 0..co {
            for t in 0..o[0] {
                for a in 0..o[1] {
                    for c in 0..o[2] {
                        let mut acc = 0.0f64;
                        for ic in 0..d[1] {
                            for p in 0..k[0] {
                                for q in 0..k[1] {
                                    for s in 0..k[2] {
                                        let it = (t * g.stride[0] + p * g.dil[0]) as isize
                                            - g.pad[0] as isize;
                                        let iy = (a * g.stride[1] + q * g.dil[1]) as isize
                                            - g.pad[1] as isize;
                                        let ix = (c * g.stride[2] + s * g.dil[2]) as isize
                                            - g.pad[2] as isize;
                                        if it < 0
                                            || iy < 0
                                            || ix < 0
                                            || it as usize >= d[2]
                                            || iy as usize >= d[3]
                                            || ix as usize >= d[4]
                                        {
                                            continue;
                                        }
                                        let xv = x.data[(((b * d[1] + ic) * d[2] + it as usize)
                                            * d[3]
                                            + iy as usize)
                                            * d[4]
                                            + ix as usize];
                                        let wv = w
                                            [(((oc * d[1] + ic) * k[0] + p) * k[1] + q) * k[2] + s];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        y.data[(((b * co + oc) * o[0] + t) * o[1] + a) * o[2] + c] = acc as f32;
                    }
                }
            }
        }
    }
    y
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    let scale = b
        .data
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max)
        .max(1e-20) as f64;
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
        / scale
}

/// (kernel, stride, padding, dilation) along (t, y, x).
type GeomSpec = ([usize; 3], [usize; 3], [usize; 3], [usize; 3]);

const GEOMS: [GeomSpec; 7] = [
    ([3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1]),
    // Stride 1 with dilation and unequal padding: the input gradient runs as the adjoint
    // (flipped-kernel) convolution with padding d(k − 1) − p per axis.
    ([2, 3, 3], [1, 1, 1], [1, 2, 0], [1, 2, 1]),
    // Stride 1 with padding beyond d(k − 1) on y: no adjoint convolution, im2col adjoint.
    ([1, 3, 3], [1, 1, 1], [0, 3, 1], [1, 1, 1]),
    ([3, 3, 3], [1, 2, 2], [1, 1, 1], [1, 1, 1]),
    ([2, 3, 3], [2, 1, 1], [0, 2, 2], [1, 2, 2]),
    ([1, 3, 3], [1, 2, 1], [0, 0, 1], [1, 1, 1]),
    // Stride, padding and dilation in time together (the time-split GEMMs, one per slice).
    ([3, 3, 2], [2, 1, 2], [2, 1, 0], [2, 1, 1]),
];

#[test]
fn dense_convolution_matches_the_direct_loop() {
    let mut r = rng(1);
    for (k, s, p, d) in GEOMS {
        let g = geom(k, s, p, d);
        let x = Tensor::randn(&[2, 3, 5, 7, 6], 1.0, &mut r);
        let w = randv(4 * 3 * g.kvol(), &mut r);
        let mut layer = DenseConv::new(ConvCore { ci: 3, co: 4, g }, w.clone(), false);
        let y = layer.forward(&x).unwrap();
        let e = max_rel(&y, &reference_conv(&x, &w, 4, &g));
        assert!(e < 1e-5, "geometry {g:?}: {e}");
    }
}

/// The direct AVX-512 kernel and the im2col + GEMM path against the textbook loop, at shapes
/// that leave partial tiles (flat planes not a multiple of 48), output-channel counts that need
/// blocks of 8, 4, 2 and 1, a 2-D case, kernels 1, 3 and 5, and paddings 0 to 2. Tolerance
/// 1e-5 of the largest output: both sum up to 3·27 = 81 (or 125) f32 products per output in
/// different orders, an error of a few ulps of the largest partial sum.
#[test]
fn direct_and_gemm_convolutions_agree_with_the_loop() {
    use wavecp::nn::direct::cpu_has_avx512;
    use wavecp::nn::layers::ConvAlgo;
    if !cpu_has_avx512() {
        eprintln!(
            "skipped: the direct kernel needs AVX-512F, which this CPU lacks (GEMM path only)"
        );
    }
    let mut r = rng(11);
    // (ci, co, input [t, y, x], kernel, padding)
    // The weight gradient tiles 6 taps (ci·kvol of them) × 4 output channels: the cases
    // leave 3, 5, 4, 2, 3, 0, 0, 1 and 0 taps in the last tile, and blocks of 4, 2 and 1
    // channels; the forward pass blocks channels by 8, 4, 2 and 1 (13 = 8 + 4 + 1).
    type Case = (usize, usize, [usize; 3], [usize; 3], [usize; 3]);
    let cases: [Case; 9] = [
        (3, 13, [4, 7, 37], [3, 3, 3], [1, 1, 1]),
        (5, 6, [2, 5, 9], [1, 1, 1], [0, 0, 0]),
        (2, 3, [3, 4, 17], [1, 1, 2], [0, 0, 1]),
        (1, 5, [2, 3, 19], [1, 2, 1], [0, 1, 0]),
        (5, 8, [3, 6, 5], [3, 3, 3], [0, 0, 0]),
        (2, 7, [1, 9, 11], [1, 3, 3], [0, 1, 1]),
        (4, 3, [5, 8, 8], [3, 5, 5], [1, 2, 2]),
        (1, 16, [2, 4, 20], [1, 1, 1], [0, 0, 0]),
        (6, 9, [3, 10, 3], [2, 3, 3], [1, 2, 0]),
    ];
    for (ci, co, ind, k, pad) in cases {
        let g = geom(k, [1; 3], pad, [1; 3]);
        let x = Tensor::randn(&[2, ci, ind[0], ind[1], ind[2]], 1.0, &mut r);
        let w = randv(co * ci * g.kvol(), &mut r);
        let bias = randv(co, &mut r);
        let core = ConvCore { ci, co, g };
        let mut reference = reference_conv(&x, &w, co, &g);
        let n = reference.data.len() / (2 * co);
        for (i, v) in reference.data.iter_mut().enumerate() {
            *v += bias[(i / n) % co];
        }
        for algo in [ConvAlgo::Direct, ConvAlgo::Gemm] {
            let y = core.forward_with(algo, &x, &w, Some(&bias)).unwrap();
            let e = max_rel(&y, &reference);
            assert!(
                e < 1e-5,
                "{algo:?}, ci {ci} co {co} input {ind:?} kernel {k:?} pad {pad:?}: {e}"
            );
        }
        // Weight gradients: the GEMM path is checked against finite differences in
        // `gradient_check_convolutions`; here the direct kernel must match it. Each entry sums
        // 2·T'·Y'·X' products (up to 1 200), hence 1e-5 of the largest entry again.
        let dy = Tensor::randn(&reference.shape, 1.0, &mut r);
        let (dw_d, db_d) = core
            .backward_weights_with(ConvAlgo::Direct, &x, &dy)
            .unwrap();
        let (dw_g, db_g) = core.backward_weights_with(ConvAlgo::Gemm, &x, &dy).unwrap();
        let as_t = |v: Vec<f32>| Tensor::from_vec(&[v.len()], v).unwrap();
        let e = max_rel(&as_t(dw_d), &as_t(dw_g));
        assert!(
            e < 1e-5,
            "dW, ci {ci} co {co} input {ind:?} kernel {k:?} pad {pad:?}: {e}"
        );
        assert_eq!(db_d, db_g);
    }
}

#[test]
fn pair_and_cp_equal_dense_convolution_with_their_rebuilt_kernels() {
    let mut r = rng(2);
    for (k, s, p, d) in GEOMS {
        let g = geom(k, s, p, d);
        let x = Tensor::randn(&[2, 3, 5, 7, 6], 1.0, &mut r);
        let rank = 2;
        let axes: Vec<usize> = if k[0] == 1 { vec![1, 2] } else { vec![0, 1, 2] };
        let factors: Vec<Vec<f32>> = axes
            .iter()
            .map(|&a| randv(4 * 3 * rank * k[a], &mut r))
            .collect();
        let mut pair = PairConv::new(
            ConvCore { ci: 3, co: 4, g },
            rank,
            axes.clone(),
            factors,
            false,
        );
        let y = pair.forward(&x).unwrap();
        let e = max_rel(&y, &reference_conv(&x, pair.dense_kernel(), 4, &g));
        assert!(e < 1e-5, "pair {g:?}: {e}");
        let a: Vec<Vec<f32>> = axes.iter().map(|&ax| randv(rank * k[ax], &mut r)).collect();
        let mut cp = CpConv::new(
            ConvCore { ci: 3, co: 4, g },
            axes,
            CpFactors {
                rank,
                v: randv(rank * 3, &mut r),
                a,
                u: randv(4 * rank, &mut r),
            },
            false,
        );
        let y = cp.forward(&x).unwrap();
        let e = max_rel(&y, &reference_conv(&x, &cp.dense_kernel(), 4, &g));
        assert!(e < 1e-5, "cp {g:?}: {e}");
    }
}

/// ⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ with the same weights.
#[test]
fn transposed_convolution_is_the_adjoint() {
    let mut r = rng(3);
    for (k, s, p, d) in GEOMS {
        let g = geom(k, s, p, d);
        let x = Tensor::randn(&[2, 3, 5, 7, 6], 1.0, &mut r);
        let w = randv(4 * 3 * g.kvol(), &mut r);
        let mut conv = DenseConv::new(ConvCore { ci: 3, co: 4, g }, w.clone(), false);
        let cx = conv.forward(&x).unwrap();
        let y = Tensor::randn(&cx.shape, 1.0, &mut r);
        // Output padding so the transposed output has x's extent again.
        let o = g.out_dims([5, 7, 6]).unwrap();
        let op: Vec<usize> = (0..3)
            .map(|a| [5, 7, 6][a] + 2 * p[a] - ((o[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1))
            .collect();
        let mut tr = ConvTranspose::new(4, 3, g, [op[0], op[1], op[2]], w, false);
        let ty = tr.forward(&y).unwrap();
        assert_eq!(ty.shape, x.shape);
        let (lhs, rhs) = (cx.dot(&y), x.dot(&ty));
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{g:?}: {lhs} vs {rhs}"
        );
    }
}

/// Loss `⟨r, f(x)⟩` in f64.
fn loss(layer: &mut dyn Layer, x: &Tensor, r: &Tensor) -> f64 {
    layer.forward(x).unwrap().dot(r)
}

fn grad_check(name: &str, layer: &mut dyn Layer, x: &Tensor, seed: u64) {
    let mut g = rng(seed);
    let eps = 1e-2f32;
    let y = layer.forward(x).unwrap();
    let r = Tensor::randn(&y.shape, 1.0, &mut g);
    let dx = layer.backward_input(&r).unwrap();
    for p in layer.params_mut() {
        p.grad.iter_mut().for_each(|v| *v = 0.0);
    }
    layer.backward_weights(&r).unwrap();
    // Input direction.
    let v = Tensor::randn(&x.shape, 1.0, &mut g);
    let shifted = |s: f32| Tensor {
        shape: x.shape.clone(),
        data: x.data.iter().zip(&v.data).map(|(a, b)| a + s * b).collect(),
    };
    let fd =
        (loss(layer, &shifted(eps), &r) - loss(layer, &shifted(-eps), &r)) / (2.0 * eps as f64);
    let an = dx.dot(&v);
    assert!(
        (fd - an).abs() <= 2e-3 * an.abs().max(fd.abs()).max(1e-3),
        "{name}: input gradient {an} vs finite difference {fd}"
    );
    // Each parameter along its own random direction.
    let nparams = layer.params().len();
    for k in 0..nparams {
        let (grad, len, pname) = {
            let p = &layer.params()[k];
            (p.grad.clone(), p.value.len(), p.name.clone())
        };
        let dir = randv(len, &mut g);
        let set = |layer: &mut dyn Layer, s: f32| {
            let p = &mut layer.params_mut()[k];
            for (v, d) in p.value.iter_mut().zip(&dir) {
                *v += s * d;
            }
        };
        set(layer, eps);
        let lp = loss(layer, x, &r);
        set(layer, -2.0 * eps);
        let lm = loss(layer, x, &r);
        set(layer, eps);
        let fd = (lp - lm) / (2.0 * eps as f64);
        let an: f64 = grad
            .iter()
            .zip(&dir)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (fd - an).abs() <= 2e-3 * an.abs().max(fd.abs()).max(1e-3),
            "{name}: gradient of `{pname}` {an} vs finite difference {fd}"
        );
    }
}

#[test]
fn gradient_check_convolutions() {
    let mut r = rng(4);
    for (i, (k, s, p, d)) in GEOMS.into_iter().enumerate() {
        let g = geom(k, s, p, d);
        let axes: Vec<usize> = if k[0] == 1 { vec![1, 2] } else { vec![0, 1, 2] };
        let x = Tensor::randn(&[2, 3, 5, 7, 6], 1.0, &mut r);
        let mut dense = DenseConv::new(
            ConvCore { ci: 3, co: 4, g },
            randv(12 * g.kvol(), &mut r),
            true,
        );
        grad_check(&format!("dense {g:?}"), &mut dense, &x, 10 + i as u64);
        let f: Vec<Vec<f32>> = axes.iter().map(|&a| randv(12 * 3 * k[a], &mut r)).collect();
        let mut pair = PairConv::new(ConvCore { ci: 3, co: 4, g }, 3, axes.clone(), f, true);
        grad_check(&format!("pair {g:?}"), &mut pair, &x, 20 + i as u64);
        let a: Vec<Vec<f32>> = axes.iter().map(|&ax| randv(3 * k[ax], &mut r)).collect();
        let mut cp = CpConv::new(
            ConvCore { ci: 3, co: 4, g },
            axes,
            CpFactors {
                rank: 3,
                v: randv(9, &mut r),
                a,
                u: randv(12, &mut r),
            },
            true,
        );
        grad_check(&format!("cp {g:?}"), &mut cp, &x, 30 + i as u64);
    }
    let g = geom([3, 3, 3], [1, 2, 2], [1, 1, 1], [1, 1, 1]);
    let x = Tensor::randn(&[2, 4, 3, 4, 4], 1.0, &mut r);
    let mut tr = ConvTranspose::new(4, 3, g, [0, 1, 1], randv(12 * 27, &mut r), true);
    grad_check("transposed", &mut tr, &x, 40);
}

#[test]
fn gradient_check_activations_pooling_upsampling() {
    let mut r = rng(5);
    // Keep inputs away from ReLU's kink and from max-pool ties.
    let x = Tensor::randn(&[2, 3, 4, 6, 6], 1.0, &mut r);
    let x = Tensor {
        shape: x.shape.clone(),
        data: x
            .data
            .iter()
            .map(|v| {
                if v.abs() < 0.1 {
                    v + 0.2f32.copysign(*v)
                } else {
                    *v
                }
            })
            .collect(),
    };
    for kind in [ActKind::Relu, ActKind::Gelu, ActKind::Tanh] {
        grad_check(&format!("{kind:?}"), &mut Activation::new(kind), &x, 50);
    }
    // Max pooling: distinct values 0.2 apart, so ±ε steps never change a window's winner.
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|a, b| x.data[*a].total_cmp(&x.data[*b]));
    let mut spaced = x.clone();
    for (rank, &i) in order.iter().enumerate() {
        spaced.data[i] = 0.2 * rank as f32;
    }
    grad_check(
        "max pool",
        &mut Pool::new(PoolKind::Max, [2, 2, 2]),
        &spaced,
        51,
    );
    grad_check("avg pool", &mut Pool::new(PoolKind::Avg, [1, 2, 3]), &x, 52);
    grad_check("upsample", &mut Upsample::new([2, 2, 1]), &x, 53);
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let mut r = rng(6);
    let g = geom([3, 3, 3], [1, 1, 1], [0, 0, 0], [1, 1, 1]);
    let mut c = DenseConv::new(ConvCore { ci: 3, co: 2, g }, randv(6 * 27, &mut r), false);
    assert!(
        c.forward(&Tensor::zeros(&[1, 2, 5, 5, 5])).is_err(),
        "channel mismatch"
    );
    assert!(
        c.forward(&Tensor::zeros(&[1, 3, 2, 5, 5])).is_err(),
        "input smaller than the kernel"
    );
    assert!(c.forward(&Tensor::zeros(&[3, 5, 5])).is_err(), "rank 3");
    assert!(
        c.backward_input(&Tensor::zeros(&[1, 2, 3, 3, 3])).is_err(),
        "backward before forward"
    );
}

#[test]
fn fast_tanh_matches_libm() {
    use wavecp::nn::ops::fast_tanh;
    let mut worst = 0.0f64;
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4; // [-20, 20], covering the clamp
        let e = (fast_tanh(x) as f64 - (x as f64).tanh()).abs();
        worst = worst.max(e);
    }
    assert!(worst < 5e-7, "max |fast_tanh − tanh| = {worst:e}");
    assert_eq!(fast_tanh(0.0), 0.0);
    assert!(fast_tanh(f32::INFINITY) == 1.0 && fast_tanh(-1e30) == -1.0);
    assert!(
        fast_tanh(f32::NAN).is_nan(),
        "NaN must propagate for the training NaN guard"
    );
}
