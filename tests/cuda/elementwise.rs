//! Element-wise, pooling, data-movement, loss and optimiser kernels against their CPU twins.

use super::*;

#[test]
fn activation_kernels_match_the_cpu_twins() {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            assert!(
                !required("WAVECP_REQUIRE_CUDA"),
                "WAVECP_REQUIRE_CUDA=1 but: {e}"
            );
            skipped(&format!("no CUDA device ({e})"));
            return;
        }
    };
    eprintln!("device: {:?}", gpu.info);
    for n in [1usize, 255, 257, 100_003, 17_000_000] {
        let x = inputs(n, n as u64);
        let dy = inputs(n, 7 + n as u64);
        for kind in [ActKind::Relu, ActKind::Gelu, ActKind::Tanh] {
            let y = gpu.act_forward(kind, &x).unwrap();
            let dx = gpu.act_backward(kind, &x, &dy).unwrap();
            // Same formulas; the GPU may contract a·b + c into one FMA and rounds the division
            // as IEEE does: a few ulps of values of size ≤ 9 (forward) and ≤ 9·1.13 (backward).
            let tol = if kind == ActKind::Relu { 0.0 } else { 4e-6 };
            for i in 0..n {
                let (yc, dc) = (act(kind, x[i]), dy[i] * dact(kind, x[i]));
                assert!(
                    (y[i] - yc).abs() <= tol * yc.abs().max(1.0),
                    "{kind:?} forward n={n} i={i}: {} vs {yc}",
                    y[i]
                );
                // GELU's derivative is 0.5(1 + t) + 0.5·v·(1 − t²)·C·(1 + 0.134·v²) with
                // t = tanh(C·(v + 0.0447·v³)): an error δt in t moves it by
                // (0.5 + |v|·C·(1 + 0.134·v²))·δt, up to 86·δt at |v| = 9, where t ≈ ±1 and the
                // value itself is ≈ 0 (so a relative bound cannot hold). The rational tanh with
                // every a·b + c contracted to an FMA differs from the uncontracted one by at most
                // 4ε (scanned over [−8, 8] in steps of 1e-5; worst at |u| ≈ 5.9); 6ε leaves room
                // for the rounding of u. Found by the CUDA emulator (4.2e-6 at v ≈ −9 where the
                // CPU gives −0; 1.2e-5 at v = −4.2).
                let v = x[i];
                // tanh's derivative 1 − t² moves by 2|t|·δt ≤ 2·δt in the same way.
                let sens = match kind {
                    ActKind::Gelu => {
                        (0.5 + v.abs() * 0.797_884_6 * (1.0 + 0.134_145 * v * v))
                            * 6.0
                            * f32::EPSILON
                    }
                    ActKind::Tanh => 2.0 * 6.0 * f32::EPSILON,
                    ActKind::Relu => 0.0,
                };
                assert!(
                    (dx[i] - dc).abs() <= tol * dc.abs().max(1.0) + dy[i].abs() * sens,
                    "{kind:?} backward n={n} i={i} (x = {v}): {} vs {dc}",
                    dx[i]
                );
            }
        }
    }
    assert!(matches!(
        gpu.act_backward(ActKind::Relu, &[1.0, 2.0], &[1.0]),
        Err(CudaError::Shape { .. })
    ));
}

#[test]
fn pooling_upsampling_and_concat_kernels_match_the_cpu_twins() {
    use wavecp::nn::layers::Layer;
    use wavecp::nn::model::{concat_channels, split_channels};
    use wavecp::nn::ops::{Pool, PoolKind, Upsample};
    use wavecp::nn::Tensor;
    let Some(gpu) = open_gpu() else {
        return;
    };
    // 5 × 7 × 9 leaves trailing remainders for every window below.
    let shape = [2usize, 3, 5, 7, 9];
    let n = shape[0] * shape[1];
    let ind = [shape[2], shape[3], shape[4]];
    let x = Tensor::from_vec(&shape, inputs(shape.iter().product(), 31)).unwrap();
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for k in [[1usize, 2, 2], [2, 2, 2], [1, 3, 4]] {
            let mut pool = Pool::new(kind, k);
            let y = pool.forward(&x).unwrap();
            let dy = Tensor::from_vec(&y.shape, inputs(y.len(), 32)).unwrap();
            let dx = pool.backward_input(&dy).unwrap();
            let (yg, arg) = gpu.pool_forward(kind, &x.data, n, ind, k).unwrap();
            let dxg = gpu.pool_backward(kind, &dy.data, &arg, n, ind, k).unwrap();
            // Same additions in the same order (average) or a selection (max): bit for bit.
            assert_eq!(yg, y.data, "{kind:?} {k:?} forward");
            assert_eq!(dxg, dx.data, "{kind:?} {k:?} backward");
        }
    }
    for scale in [[1usize, 2, 2], [2, 1, 3]] {
        let mut up = Upsample::new(scale);
        let y = up.forward(&x).unwrap();
        let dy = Tensor::from_vec(&y.shape, inputs(y.len(), 33)).unwrap();
        let dx = up.backward_input(&dy).unwrap();
        assert_eq!(gpu.upsample(true, &x.data, n, ind, scale).unwrap(), y.data);
        // The children of an input are summed in the CPU's (t, y, x) order from zero.
        assert_eq!(
            gpu.upsample(false, &dy.data, n, ind, scale).unwrap(),
            dx.data
        );
    }
    let s = Tensor::from_vec(&[2, 5, 5, 7, 9], inputs(2 * 5 * 315, 34)).unwrap();
    let joined = concat_channels(&x, &s).unwrap();
    let (la, ls) = (3 * 315, 5 * 315);
    assert_eq!(
        gpu.concat(&x.data, &s.data, 2, la, ls).unwrap(),
        joined.data
    );
    let (a, b) = split_channels(&joined, 3).unwrap();
    let (ag, bg) = gpu.split(&joined.data, 2, la, ls).unwrap();
    assert_eq!((ag, bg), (a.data, b.data));
}

#[test]
fn loss_norm_and_adamw_kernels_match_the_cpu_twins() {
    use wavecp::cuda::AdamStep;
    use wavecp::nn::layers::Param;
    use wavecp::nn::train::{loss, Adam, AdamConfig, LossKind, Schedule};
    use wavecp::nn::Tensor;
    let Some(gpu) = open_gpu() else {
        return;
    };
    for n in [1usize, 255, 100_003, 3_000_001] {
        let p = Tensor::from_vec(&[n], inputs(n, 41)).unwrap();
        let t = Tensor::from_vec(&[n], inputs(n, 42)).unwrap();
        let (l, g) = loss(LossKind::Mse, &p, &t).unwrap();
        let (lg, gg) = gpu.mse(&p.data, &t.data).unwrap();
        // f64 sums of n squares in another order: relative n·2⁻⁵² at most.
        assert!(
            (lg - l).abs() <= 1e-15 * n as f64 * l.abs() + 1e-300,
            "{lg} vs {l}"
        );
        // The gradient is the same f32 difference, then the same f64 division.
        assert_eq!(gg, g.data);
        // Relative L2 over a batch of up to 3 samples (the last sample exact: zero gradient).
        let b = 3.min(n);
        let per = n / b;
        let (pb, mut tb) = (
            Tensor::from_vec(&[b, per], p.data[..b * per].to_vec()).unwrap(),
            Tensor::from_vec(&[b, per], t.data[..b * per].to_vec()).unwrap(),
        );
        if b > 1 {
            tb.data[(b - 1) * per..].copy_from_slice(&pb.data[(b - 1) * per..]);
        }
        let (lr, gr) = loss(LossKind::RelL2, &pb, &tb).unwrap();
        let (lrg, grg) = gpu.rel_l2(&pb.data, &tb.data, b).unwrap();
        assert!((lrg - lr).abs() <= 1e-12 * lr.abs(), "rel_l2 {lrg} vs {lr}");
        // The same f32 differences over denominators that differ in the last f64 bits.
        for (x, y) in grg.iter().zip(&gr.data) {
            assert!(
                (x - y).abs() <= 2.0 * f32::EPSILON * y.abs(),
                "rel_l2 gradient {x} vs {y}"
            );
        }
        let ss: f64 = p.data.iter().map(|v| (*v as f64).powi(2)).sum();
        let ssg = gpu.sumsq(&p.data).unwrap();
        assert!((ssg - ss).abs() <= 1e-15 * n as f64 * ss, "{ssg} vs {ss}");
    }
    // Two AdamW steps with clipping and decay, against the CPU optimiser.
    let n = 100_003;
    let cfg = AdamConfig {
        weight_decay: 0.01,
        clip_norm: 1.0,
        warmup: 1,
        schedule: Schedule::Cosine {
            total: 10,
            min_lr: 1e-5,
        },
        ..AdamConfig::new(1e-3)
    };
    let mut adam = Adam::new(cfg.clone());
    let mut param = Param::new("w", &[n], inputs(n, 43));
    let (mut w, mut m, mut v) = (param.value.clone(), vec![0.0f32; n], vec![0.0f32; n]);
    for step in 1..=2usize {
        param.grad = inputs(n, 44 + step as u64);
        let norm = gpu.sumsq(&param.grad).unwrap().sqrt();
        let scale = if norm > cfg.clip_norm {
            cfg.clip_norm / norm
        } else {
            1.0
        };
        let s = AdamStep {
            scale,
            lr: adam.lr_at(step),
            b1: cfg.beta1,
            b2: cfg.beta2,
            c1: 1.0 - cfg.beta1.powi(step as i32),
            c2: 1.0 - cfg.beta2.powi(step as i32),
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        };
        let cpu_norm = adam.update(&mut [&mut param]);
        assert!((norm - cpu_norm).abs() <= 1e-12 * cpu_norm);
        (w, m, v) = gpu.adamw(&w, &param.grad, &m, &v, &s).unwrap();
        // The same f64 formulas; FMA contraction may move a result by one f32 rounding step.
        let close = |a: &[f32], b: &[f32], what: &str| {
            for i in 0..n {
                assert!(
                    (a[i] - b[i]).abs() <= 2.0 * f32::EPSILON * b[i].abs() + 1e-30,
                    "step {step} {what}[{i}]: {} vs {}",
                    a[i],
                    b[i]
                );
            }
        };
        close(&w, &param.value, "w");
        close(&m, &adam.m[0], "m");
        close(&v, &adam.v[0], "v");
    }
}

#[test]
fn multi_tensor_norm_and_adamw_match_one_launch_per_array() {
    use wavecp::cuda::AdamStep;
    let Some(gpu) = open_gpu() else {
        return;
    };
    // A one-value array, partial blocks, and one past the 1 024 reduction blocks (its blocks
    // stride over it).
    let sizes = [1usize, 300, 70_000, 262_145];
    let gs: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| inputs(n, 90 + i as u64))
        .collect();
    let gd: Vec<_> = gs.iter().map(|g| gpu.to_device(g).unwrap()).collect();
    let refs: Vec<&_> = gd.iter().collect();
    let all = gpu.sumsq_all_dev(&refs).unwrap();
    let exact: f64 = gs.iter().flatten().map(|&v| (v as f64) * (v as f64)).sum();
    assert!((all - exact).abs() <= 1e-12 * exact, "{all} vs {exact}");
    assert_eq!(gpu.sumsq_all_dev(&[]).unwrap(), 0.0);

    let step = AdamStep {
        scale: 0.5,
        lr: 1e-2,
        b1: 0.9,
        b2: 0.999,
        c1: 0.1,
        c2: 0.001,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let state = |seed: u64| -> Vec<Vec<f32>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| inputs(n, seed + i as u64).iter().map(|v| v.abs()).collect())
            .collect()
    };
    let (w0, m0, v0) = (state(100), state(110), state(120));
    // One launch per array: the reference.
    let mut one = Vec::new();
    for i in 0..sizes.len() {
        one.push(gpu.adamw(&w0[i], &gs[i], &m0[i], &v0[i], &step).unwrap());
    }
    // All arrays in one launch: the same formula on every element, so the same bits.
    let up =
        |v: &Vec<Vec<f32>>| -> Vec<_> { v.iter().map(|a| gpu.to_device(a).unwrap()).collect() };
    let (mut wd, mut md, mut vd) = (up(&w0), up(&m0), up(&v0));
    let mut params = adam_rows(&mut wd, &gd, &mut md, &mut vd);
    gpu.adamw_all_dev(&mut params, &step, None).unwrap();
    for i in 0..sizes.len() {
        let n = sizes[i];
        assert_eq!(gpu.to_host(&wd[i], n).unwrap(), one[i].0, "w of array {i}");
        assert_eq!(gpu.to_host(&md[i], n).unwrap(), one[i].1, "m of array {i}");
        assert_eq!(gpu.to_host(&vd[i], n).unwrap(), one[i].2, "v of array {i}");
    }

    // Clipping on the device: the norm, the factor `AdamConfig::step_scalars` would give
    // for it, and an update with that factor read on the device = the same update with the
    // factor passed from the host, bit for bit.
    let norm = exact.sqrt();
    for (clip, clips) in [(0.5 * norm, true), (2.0 * norm, false), (0.0, false)] {
        let c = gpu.clip_dev(&refs, clip).unwrap();
        let got = gpu.to_host_f64(&c).unwrap();
        assert!(
            (got[0] - norm).abs() <= 1e-12 * norm,
            "norm {} vs {norm}",
            got[0]
        );
        let cfg = wavecp::nn::train::AdamConfig {
            clip_norm: clip,
            ..wavecp::nn::train::AdamConfig::new(1e-2)
        };
        assert_eq!(got[1], cfg.step_scalars(1, got[0]).scale, "clip {clip}");
        assert_eq!(got[1] < 1.0, clips, "clip {clip}: factor {}", got[1]);
        let host = AdamStep {
            scale: got[1],
            ..step
        };
        let ignored = AdamStep { scale: 7.0, ..step };
        let (mut wa, mut ma, mut va) = (up(&w0), up(&m0), up(&v0));
        let (mut wb, mut mb, mut vb) = (up(&w0), up(&m0), up(&v0));
        let mut pa = adam_rows(&mut wa, &gd, &mut ma, &mut va);
        gpu.adamw_all_dev(&mut pa, &host, None).unwrap();
        let mut pb = adam_rows(&mut wb, &gd, &mut mb, &mut vb);
        gpu.adamw_all_dev(&mut pb, &ignored, Some(&c)).unwrap();
        for i in 0..sizes.len() {
            let n = sizes[i];
            assert_eq!(
                gpu.to_host(&wa[i], n).unwrap(),
                gpu.to_host(&wb[i], n).unwrap(),
                "clip {clip}: w of array {i}"
            );
            assert_eq!(
                gpu.to_host(&va[i], n).unwrap(),
                gpu.to_host(&vb[i], n).unwrap(),
                "clip {clip}: v of array {i}"
            );
        }
    }
    // No gradients: a zero norm, never clipped.
    let c = gpu.clip_dev(&[], 1.0).unwrap();
    assert_eq!(gpu.to_host_f64(&c).unwrap(), vec![0.0, 1.0]);
    // A moment shorter than its value is an error before any launch.
    let mut short = gpu.to_device(&[0.0; 1]).unwrap();
    let (mut w, mut v) = (
        gpu.to_device(&w0[1]).unwrap(),
        gpu.to_device(&v0[1]).unwrap(),
    );
    assert!(gpu
        .adamw_all_dev(&mut [(&mut w, &gd[1], &mut short, &mut v)], &step, None)
        .is_err());
}
