//! Convolution kernels (depthwise, im2col) and the GPU convolution layers against the CPU ones.

use super::*;

#[test]
fn depthwise_kernels_match_the_cpu_twins() {
    let Some(gpu) = open_gpu() else {
        return;
    };
    let (batch, c) = (3usize, 5usize);
    let ind = [7usize, 9, 11];
    for axis in 0..3 {
        for (k, stride, pad, dil) in [(3, 1, 1, 1), (3, 2, 0, 1), (3, 1, 2, 2), (1, 1, 0, 1)] {
            let a = AxisConv {
                axis,
                k,
                stride,
                pad,
                dil,
            };
            let span = (k - 1) * dil + 1;
            let mut outd = ind;
            outd[axis] = (ind[axis] + 2 * pad - span) / stride + 1;
            let sh = DwShape { c, ind, outd };
            let (nin, nout) = (
                ind.iter().product::<usize>(),
                outd.iter().product::<usize>(),
            );
            let x = inputs(batch * c * nin, 1 + axis as u64);
            let w = inputs(c * k, 2 + k as u64);
            let dy = inputs(batch * c * nout, 3 + stride as u64);
            // CPU reference, sample by sample; and the same with |x|, |w|, |dy| for the scale of
            // each sum (the GPU adds in another order: error ≤ n ε Σ|terms|).
            let mut y = vec![0.0f32; batch * c * nout];
            let (mut dx, mut dw) = (vec![0.0f32; x.len()], vec![0.0f32; w.len()]);
            let (mut dxa, mut dwa) = (vec![0.0f32; x.len()], vec![0.0f32; w.len()]);
            let abs = |v: &[f32]| v.iter().map(|t| t.abs()).collect::<Vec<f32>>();
            let (xa, wa, ga) = (abs(&x), abs(&w), abs(&dy));
            let mut ya = vec![0.0f32; y.len()];
            for b in 0..batch {
                let (xi, yo) = (
                    b * c * nin..(b + 1) * c * nin,
                    b * c * nout..(b + 1) * c * nout,
                );
                depthwise_axis(&x[xi.clone()], sh, &a, &w, &mut y[yo.clone()]);
                depthwise_axis(&xa[xi.clone()], sh, &a, &wa, &mut ya[yo.clone()]);
                depthwise_axis_backward(
                    &x[xi.clone()],
                    &dy[yo.clone()],
                    sh,
                    &a,
                    &w,
                    &mut dx[xi.clone()],
                    &mut dw,
                );
                depthwise_axis_backward(
                    &xa[xi.clone()],
                    &ga[yo.clone()],
                    sh,
                    &a,
                    &wa,
                    &mut dxa[xi],
                    &mut dwa,
                );
            }
            let yg = gpu.dw_axis_forward(&x, batch, sh, &a, &w).unwrap();
            let (dxg, dwg) = gpu.dw_axis_backward(&x, &dy, batch, sh, &a, &w).unwrap();
            let check = |what: &str, g: &[f32], cpu: &[f32], scale: &[f32], terms: f32| {
                for i in 0..g.len() {
                    let tol = 4.0 * terms * f32::EPSILON * scale[i] + 1e-7;
                    assert!(
                        (g[i] - cpu[i]).abs() <= tol,
                        "{what} axis {axis} k {k} s {stride} p {pad} d {dil} i {i}: {} vs {}",
                        g[i],
                        cpu[i]
                    );
                }
            };
            check("forward", &yg, &y, &ya, k as f32);
            check("input gradient", &dxg, &dx, &dxa, k as f32);
            check("weight gradient", &dwg, &dw, &dwa, (batch * nout) as f32);
        }
    }
}

#[test]
fn im2col_kernels_match_the_cpu_twins() {
    use wavecp::nn::conv::{col2im, im2col, Geom};
    let Some(gpu) = open_gpu() else {
        return;
    };
    let (batch, c, ind) = (2usize, 3usize, [5usize, 7, 6]);
    let geoms = [
        ([3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1]),
        ([3, 3, 3], [1, 2, 2], [1, 1, 1], [1, 1, 1]),
        ([2, 3, 3], [2, 1, 1], [0, 2, 2], [1, 2, 2]),
        ([1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]),
        ([3, 3, 2], [2, 1, 2], [2, 1, 0], [2, 1, 1]),
    ];
    for (k, stride, pad, dil) in geoms {
        let g = Geom {
            k,
            stride,
            pad,
            dil,
        };
        let outd = g.out_dims(ind).unwrap();
        let (nin, nout, kv) = (
            ind.iter().product::<usize>(),
            outd.iter().product::<usize>(),
            g.kvol(),
        );
        let x = inputs(batch * c * nin, 21);
        let dcol = inputs(batch * c * kv * nout, 22);
        let (mut col, mut dx, mut dxa) = (
            vec![0.0f32; dcol.len()],
            vec![0.0f32; x.len()],
            vec![0.0f32; x.len()],
        );
        let dcola: Vec<f32> = dcol.iter().map(|v| v.abs()).collect();
        for b in 0..batch {
            let (xs, cs) = (
                b * c * nin..(b + 1) * c * nin,
                b * c * kv * nout..(b + 1) * c * kv * nout,
            );
            im2col(&x[xs.clone()], c, ind, &g, outd, &mut col[cs.clone()]);
            col2im(&dcol[cs.clone()], c, ind, &g, outd, &mut dx[xs.clone()]);
            col2im(&dcola[cs], c, ind, &g, outd, &mut dxa[xs]);
        }
        // im2col copies values: equal bit for bit.
        assert_eq!(
            gpu.im2col(&x, batch, c, ind, &g, outd).unwrap(),
            col,
            "{g:?}"
        );
        let dxg = gpu.col2im(&dcol, batch, c, ind, &g, outd).unwrap();
        for i in 0..x.len() {
            assert!(
                ((dxg[i] - dx[i]) as f64).abs() <= order_tol(kv, dxa[i] as f64),
                "col2im {g:?} i {i}: {} vs {}",
                dxg[i],
                dx[i]
            );
        }
    }
}

/// One CPU convolution layer of `kind` with seeded weights and bias (absolute values when
/// `abs`, for the scale of every sum), and its GPU copy.
fn conv_pair(
    gpu: &Gpu,
    kind: &str,
    g: wavecp::nn::conv::Geom,
    (ci, co, rank): (usize, usize, usize),
    abs: bool,
) -> (Box<dyn wavecp::nn::Layer>, wavecp::cuda::GpuConv) {
    use wavecp::cuda::GpuConv;
    use wavecp::nn::layers::{ConvCore, CpConv, CpFactors, DenseConv, PairConv};
    let f = |n: usize, seed: u64| -> Vec<f32> {
        inputs(n, seed)
            .into_iter()
            .map(|v| if abs { v.abs() / 9.0 } else { v / 9.0 })
            .collect()
    };
    let bias = f(co, 99);
    // A filter of length 1 along t is a 2-D layer: its factors run along y and x only.
    let axes = if g.k[0] == 1 {
        vec![1usize, 2]
    } else {
        vec![0usize, 1, 2]
    };
    let core = ConvCore { ci, co, g };
    match kind {
        "dense" | "dense-im2col" | "dense-forced" => {
            let mk = || {
                let mut l = DenseConv::new(core.clone(), f(co * ci * g.kvol(), 51), true);
                l.b.as_mut().unwrap().value = bias.clone();
                l
            };
            let l = mk();
            (Box::new(mk()), GpuConv::from_dense(gpu, &l).unwrap())
        }
        "pair" | "pair-im2col" => {
            let mk = || {
                let factors = axes
                    .iter()
                    .map(|&ax| f(co * ci * rank * g.k[ax], 52 + ax as u64))
                    .collect();
                let mut l = PairConv::new(core.clone(), rank, axes.clone(), factors, true);
                l.b.as_mut().unwrap().value = bias.clone();
                l
            };
            (Box::new(mk()), GpuConv::from_pair(gpu, &mk()).unwrap())
        }
        _ => {
            let mk = || {
                let a = axes
                    .iter()
                    .map(|&ax| f(rank * g.k[ax], 56 + ax as u64))
                    .collect();
                let mut l = CpConv::new(
                    ConvCore { ci, co, g },
                    axes.clone(),
                    CpFactors {
                        rank,
                        v: f(rank * ci, 54),
                        a,
                        u: f(co * rank, 55),
                    },
                    true,
                );
                l.b.as_mut().unwrap().value = bias.clone();
                l
            };
            let mut gconv = GpuConv::from_cp(gpu, &mk()).unwrap();
            gconv.set_fused(kind != "cp-unfused");
            (Box::new(mk()), gconv)
        }
    }
}

#[test]
fn gpu_convolution_layers_match_the_cpu_layers() {
    use wavecp::nn::conv::Geom;
    use wavecp::nn::Tensor;
    let Some(gpu_main) = open_gpu() else {
        return;
    };
    // The dense and pair layers run as implicit GEMMs by default; "-im2col" runs them through
    // the stored im2col matrix and the 64 x 64 GEMM (WAVECP_GEMM=basic).
    let mut gpu_im2col = Gpu::new(0).unwrap();
    gpu_im2col.set_basic_gemm(true);
    // "-forced" runs the layers with a GEMM tile height, k split and chain tile variant that
    // the choice rules would not take for the shape (`wavecp bench kernels --sweep` times them
    // all): every variant must compute the same layer.
    let mut gpu_forced = Gpu::new(0).unwrap();
    assert!(gpu_forced.force_gemm_plan(Some((48, 1))).is_err());
    assert!(gpu_forced.force_gemm_plan(Some((64, 0))).is_err());
    assert!(gpu_forced
        .force_chain_tile(Some(Gpu::chain_tiles().len()))
        .is_err());
    let (b, ci, co, rank) = (2usize, 3usize, 5usize, 2usize);
    // The first and the last two geometries take the fused CP chain (kernels/cpchain.cu), one
    // per tile variant: x extent 6 (16 × 8 × 8 tiles), 38 (4 × 8 × 32: several tiles along
    // every axis, unequal filters and paddings) and 20 (4 × 16 × 16, two tiles along y); the
    // second and third take the per-axis passes; "cp-unfused" runs them on every geometry. The
    // last is a 2-D layer (pair and CP factors along y and x only; the fused chain with an
    // identity t filter).
    for (gi, (k, stride, pad, dil, ext)) in [
        ([3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [5, 7, 6]),
        ([3, 3, 3], [1, 2, 2], [1, 1, 1], [1, 1, 1], [5, 7, 6]),
        ([2, 3, 3], [2, 1, 1], [0, 2, 2], [1, 2, 2], [5, 7, 6]),
        ([3, 5, 2], [1, 1, 1], [0, 2, 1], [1, 1, 1], [9, 17, 37]),
        ([3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [5, 19, 20]),
        ([1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 9, 10]),
    ]
    .into_iter()
    .enumerate()
    {
        // Rotate the forced variants over the geometries: every tile height with 1, 2 or 3 k
        // slices, and a chain tile the rules would not pick for the x extent.
        let default_tile = Chain {
            batch: b,
            c: rank,
            ind: ext,
            k,
            pad,
        }
        .tile()
        .ok()
        .map(|t| t.forward);
        let other = (0..Gpu::chain_tiles().len())
            .find(|&t| Some(Gpu::chain_tiles()[(t + gi) % 3].forward) != default_tile)
            .map(|t| (t + gi) % 3);
        gpu_forced
            .force_gemm_plan(Some(([32, 64, 128][gi % 3], 1 + gi % 3)))
            .unwrap();
        gpu_forced.force_chain_tile(other).unwrap();
        let d = [b, ci, ext[0], ext[1], ext[2]];
        let n: usize = d.iter().product();
        let g = Geom {
            k,
            stride,
            pad,
            dil,
        };
        for kind in [
            "dense",
            "pair",
            "cp",
            "cp-unfused",
            "dense-im2col",
            "pair-im2col",
            "dense-forced",
            "cp-forced",
        ] {
            let gpu = if kind.ends_with("-im2col") {
                &gpu_im2col
            } else if kind.ends_with("-forced") {
                &gpu_forced
            } else {
                &gpu_main
            };
            let x = Tensor::from_vec(&d, inputs(n, 61)).unwrap();
            let xa = Tensor::from_vec(&d, x.data.iter().map(|v| v.abs()).collect()).unwrap();
            let (mut cpu, mut gconv) = conv_pair(gpu, kind, g, (ci, co, rank), false);
            let (mut cpu_abs, _) = conv_pair(gpu, kind, g, (ci, co, rank), true);
            let y = cpu.forward(&x).unwrap();
            let ya = cpu_abs.forward(&xa).unwrap();
            let dy = Tensor::from_vec(&y.shape, inputs(y.len(), 62)).unwrap();
            let dya =
                Tensor::from_vec(&y.shape, dy.data.iter().map(|v| v.abs()).collect()).unwrap();
            let dx = cpu.backward(&dy).unwrap();
            let dxa = cpu_abs.backward(&dya).unwrap();

            let (yd, od) = gconv
                .forward(gpu, gpu.to_device(&x.data).unwrap(), d)
                .unwrap();
            assert_eq!(od.to_vec(), y.shape, "{kind} {g:?}");
            let yg = gpu.to_host(&yd, y.len()).unwrap();
            let dxd = gconv
                .backward(gpu, &gpu.to_device(&dy.data).unwrap())
                .unwrap();
            let dxg = gpu.to_host(&dxd, x.len()).unwrap();
            // Every value is a sum of at most max(1 000, b·nin) products (b·nin for the CP
            // input factor's gradient and the dense weight gradient, the longest sums; 420 on
            // the small extents, 11 322 on the large): both sides are within terms·ε·Σ|terms|
            // of the exact sum, and Σ|terms| is the same computation on absolute values.
            let terms = (b * ext.iter().product::<usize>()).max(1000) as f32;
            let check = |what: &str, gv: &[f32], cv: &[f32], av: &[f32]| {
                assert_sum_bound(&format!("{kind} {g:?} {what}"), gv, cv, av, terms)
            };
            check("y", &yg, &y.data, &ya.data);
            // The same forward pass with GELU fused into the GEMM epilogue: the value before
            // the activation is y, after it GELU(y) (within GELU's slope ≤ 1.13 of y's bound).
            {
                let (_, mut fused) = conv_pair(gpu, kind, g, (ci, co, rank), false);
                let xd2 = gpu.to_device(&x.data).unwrap();
                let (post, pre, _) = fused.forward_act(gpu, xd2, d, Some(ActKind::Gelu)).unwrap();
                let pre = gpu.to_host(&pre.unwrap(), y.len()).unwrap();
                let post = gpu.to_host(&post, y.len()).unwrap();
                check("y before the fused GELU", &pre, &y.data, &ya.data);
                let gelu: Vec<f32> = y.data.iter().map(|v| act(ActKind::Gelu, *v)).collect();
                let scale: Vec<f32> = ya.data.iter().map(|v| 1.13 * v + 1e-3).collect();
                check("GELU(y) fused", &post, &gelu, &scale);
            }
            check("dx", &dxg, &dx.data, &dxa.data);
            let gg = gconv.grads(gpu).unwrap();
            let cg: Vec<Vec<f32>> = cpu.params().iter().map(|p| p.grad.clone()).collect();
            let ag: Vec<Vec<f32>> = cpu_abs.params().iter().map(|p| p.grad.clone()).collect();
            assert_eq!(gg.len(), cg.len(), "{kind}: gradient count");
            for (j, ((gv, cv), av)) in gg.iter().zip(&cg).zip(&ag).enumerate() {
                check(&format!("grad {j}"), gv, cv, av);
            }
            // Gradients accumulate over backward passes until zero_grad, as on the CPU.
            gconv
                .backward(gpu, &gpu.to_device(&dy.data).unwrap())
                .unwrap();
            let twice = gconv.grads(gpu).unwrap();
            for (t, o) in twice.iter().zip(&gg) {
                for (a, b1) in t.iter().zip(o) {
                    assert!(
                        (a - 2.0 * b1).abs() <= 1e-5 * b1.abs().max(1.0),
                        "{kind}: accumulation"
                    );
                }
            }
            gconv.zero_grad(gpu).unwrap();
            assert!(gconv
                .grads(gpu)
                .unwrap()
                .iter()
                .flatten()
                .all(|v| *v == 0.0));
        }
    }
}

#[test]
fn gpu_transposed_convolution_matches_the_cpu_layer() {
    use wavecp::cuda::GpuConvT;
    use wavecp::nn::conv::Geom;
    use wavecp::nn::layers::ConvTranspose;
    use wavecp::nn::{Layer, Tensor};
    let Some(gpu_main) = open_gpu() else {
        return;
    };
    // The backward pass runs as implicit GEMMs over dy; "basic" keeps the stored im2col of dy
    // with the 64 x 64 GEMM (WAVECP_GEMM=basic).
    let mut gpu_basic = Gpu::new(0).unwrap();
    gpu_basic.set_basic_gemm(true);
    let (b, ci, co) = (2usize, 3usize, 5usize);
    // The U-Net's up-sampling (kernel = stride), overlapping taps with output padding, and
    // unequal strides and paddings.
    for (k, stride, pad, outpad, ext) in [
        ([1, 2, 2], [1, 2, 2], [0, 0, 0], [0, 0, 0], [3, 5, 7]),
        ([3, 3, 3], [1, 2, 2], [1, 1, 1], [0, 1, 1], [3, 4, 5]),
        ([2, 3, 1], [2, 1, 1], [0, 1, 0], [1, 0, 0], [2, 6, 9]),
    ] {
        let g = Geom {
            k,
            stride,
            pad,
            dil: [1; 3],
        };
        let kvol: usize = k.iter().product();
        let layer = |abs: bool| {
            let f = |v: f32| if abs { v.abs() } else { v } / 9.0;
            let mut l = ConvTranspose::new(
                ci,
                co,
                g,
                outpad,
                inputs(ci * co * kvol, 81).into_iter().map(f).collect(),
                true,
            );
            l.b.as_mut().unwrap().value = inputs(co, 82).into_iter().map(f).collect();
            l
        };
        let d = [b, ci, ext[0], ext[1], ext[2]];
        let n: usize = d.iter().product();
        let x = Tensor::from_vec(&d, inputs(n, 83)).unwrap();
        let xa = Tensor::from_vec(&d, x.data.iter().map(|v| v.abs()).collect()).unwrap();
        let (mut cpu, mut cpu_abs) = (layer(false), layer(true));
        let y = cpu.forward(&x).unwrap();
        let ya = cpu_abs.forward(&xa).unwrap();
        let dy = Tensor::from_vec(&y.shape, inputs(y.len(), 84)).unwrap();
        let dya = Tensor::from_vec(&y.shape, dy.data.iter().map(|v| v.abs()).collect()).unwrap();
        let dx = cpu.backward(&dy).unwrap();
        let dxa = cpu_abs.backward(&dya).unwrap();
        for (name, gpu) in [("implicit", &gpu_main), ("basic", &gpu_basic)] {
            let mut gl = GpuConvT::from_cpu(gpu, &cpu).unwrap();
            let (yd, od) = gl.forward(gpu, gpu.to_device(&x.data).unwrap(), d).unwrap();
            assert_eq!(od.to_vec(), y.shape, "{name} {g:?}");
            let yg = gpu.to_host(&yd, y.len()).unwrap();
            let dxd = gl.backward(gpu, &gpu.to_device(&dy.data).unwrap()).unwrap();
            let dxg = gpu.to_host(&dxd, n).unwrap();
            // Longest sums: the weight gradient's b·nin terms, the bias gradient's b·nout;
            // both sides lie within terms·ε·Σ|terms| of the exact sum (Σ|terms| from the
            // same layer on absolute values).
            let terms = n.max(y.len()).max(1000) as f32;
            let check = |what: &str, gv: &[f32], cv: &[f32], av: &[f32]| {
                assert_sum_bound(&format!("{name} {g:?} {what}"), gv, cv, av, terms)
            };
            check("y", &yg, &y.data, &ya.data);
            check("dx", &dxg, &dx.data, &dxa.data);
            let cp = cpu.params();
            let ap = cpu_abs.params();
            let gp = gl.params_mut();
            assert_eq!(gp.len(), cp.len());
            for (k, (_, gd)) in gp.into_iter().enumerate() {
                let gg = gpu.to_host(gd, cp[k].grad.len()).unwrap();
                check(&cp[k].name, &gg, &cp[k].grad, &ap[k].grad);
            }
        }
    }
}
