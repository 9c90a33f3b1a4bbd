//! Whole models: a U-Net from TOML checked against finite differences end to end (input and every
//! parameter array), the factor-aware initialisation, losses and the optimiser.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wavecp::nn::model::{factor_std, kaiming_std, ModelSpec};
use wavecp::nn::train::{loss, Adam, AdamConfig, LossKind, Schedule};
use wavecp::nn::{Model, Tensor};

const UNET: &str = r#"
[model]
dims = DIMS
in_channels = 2
kind = "pair"
rank = 2
seed = 7

[[layer]]
type = "conv"
out = 4
kernel = 3
padding = 1
[[layer]]
type = "gelu"
[[layer]]
type = "save"
name = "e1"
[[layer]]
type = "pool"
mode = "avg"
kernel = POOL
[[layer]]
type = "conv"
kind = "cp"
rank = 3
out = 6
kernel = 3
padding = 1
[[layer]]
type = "tanh"
[[layer]]
type = "conv_transpose"
out = 4
kernel = POOL
stride = POOL
[[layer]]
type = "add"
name = "e1"
[[layer]]
type = "upsample"
scale = 1
[[layer]]
type = "concat"
name = "e1"
[[layer]]
type = "conv"
kind = "dense"
out = 1
kernel = 1
"#;

fn unet(dims: usize) -> Model {
    let pool = if dims == 2 { "[2, 2]" } else { "[1, 2, 2]" };
    let text = UNET
        .replace("DIMS", &dims.to_string())
        .replace("POOL", pool);
    Model::new(ModelSpec::from_toml(&text).unwrap()).unwrap()
}

/// End-to-end gradient check of `L = mse(model(x), target)`. Tolerance 2e-3 as in tests/nn.rs;
/// ε = 3e-3 here because a 3-D pair kernel is cubic in its factors and the network stacks
/// GELU and tanh on top: with ε = 1e-2 the O(ε²) truncation term alone reached 5e-3.
#[test]
fn a_small_unet_passes_the_gradient_check() {
    for dims in [2, 3] {
        let mut m = unet(dims);
        let mut r = ChaCha8Rng::seed_from_u64(dims as u64);
        let t = if dims == 2 { 1 } else { 3 };
        let x = Tensor::randn(&[2, 2, t, 8, 8], 1.0, &mut r);
        let y = m.forward(&x).unwrap();
        assert_eq!(y.shape, vec![2, 1, t, 8, 8]);
        let target = Tensor::randn(&y.shape, 1.0, &mut r);
        m.zero_grad();
        let (_, dy) = loss(LossKind::Mse, &y, &target).unwrap();
        let dx = m.backward(&dy).unwrap();
        let eval = |m: &mut Model, x: &Tensor| {
            loss(LossKind::Mse, &m.forward(x).unwrap(), &target)
                .unwrap()
                .0
        };
        let eps = 3e-3f32;
        let v = Tensor::randn(&x.shape, 1.0, &mut r);
        let sh = |s: f32| Tensor {
            shape: x.shape.clone(),
            data: x.data.iter().zip(&v.data).map(|(a, b)| a + s * b).collect(),
        };
        let fd = (eval(&mut m, &sh(eps)) - eval(&mut m, &sh(-eps))) / (2.0 * eps as f64);
        let an = dx.dot(&v);
        // Absolute floor 1e-4: f32 round-off in L (~1e-6 · L ≈ 1e-6) divided by 2ε.
        assert!(
            (fd - an).abs() < 2e-3 * an.abs().max(fd.abs()) + 1e-4,
            "{dims}-D input: {an} vs {fd}"
        );
        let grads: Vec<Vec<f32>> = m.params().iter().map(|p| p.grad.clone()).collect();
        for (k, g) in grads.iter().enumerate() {
            let dir = Tensor::randn(&[g.len()], 1.0, &mut r).data;
            let shift = |m: &mut Model, s: f32| {
                m.params_mut()[k]
                    .value
                    .iter_mut()
                    .zip(&dir)
                    .for_each(|(w, d)| *w += s * d)
            };
            shift(&mut m, eps);
            let lp = eval(&mut m, &x);
            shift(&mut m, -2.0 * eps);
            let lm = eval(&mut m, &x);
            shift(&mut m, eps);
            let fd = (lp - lm) / (2.0 * eps as f64);
            let an: f64 = g.iter().zip(&dir).map(|(a, b)| *a as f64 * *b as f64).sum();
            let name = m.params()[k].name.clone();
            assert!(
                (fd - an).abs() < 2e-3 * an.abs().max(fd.abs()) + 1e-4,
                "{dims}-D param {k} ({name}): {an} vs {fd}"
            );
        }
    }
}

/// The dense kernel of a single-conv model (16 → 16 channels, 3×3×3), rebuilt from its factors.
fn kernel_of(kind: &str, rank: usize, seed: u64) -> Vec<f32> {
    let c = 16;
    let text = format!("[model]\ndims = 3\nin_channels = {c}\nkind = \"{kind}\"\nrank = {rank}\nseed = {seed}\n[[layer]]\ntype = \"conv\"\nout = {c}\nkernel = 3\nbias = false\n");
    let m = Model::new(ModelSpec::from_toml(&text).unwrap()).unwrap();
    let p: Vec<&[f32]> = m.params().iter().map(|p| &p.value[..]).collect();
    let mut w = vec![0.0f32; c * c * 27];
    for o in 0..c {
        for i in 0..c {
            for k in 0..27 {
                let (t, y, x) = (k / 9, (k / 3) % 3, k % 3);
                let oi = o * c + i;
                w[oi * 27 + k] = match kind {
                    "dense" => p[0][oi * 27 + k],
                    "pair" => (0..rank)
                        .map(|r| {
                            p[0][(oi * rank + r) * 3 + t]
                                * p[1][(oi * rank + r) * 3 + y]
                                * p[2][(oi * rank + r) * 3 + x]
                        })
                        .sum(),
                    _ => (0..rank)
                        .map(|r| {
                            p[4][o * rank + r]
                                * p[0][r * c + i]
                                * p[1][r * 3 + t]
                                * p[2][r * 3 + y]
                                * p[3][r * 3 + x]
                        })
                        .sum(),
                };
            }
        }
    }
    w
}

/// Factor-built kernels get, in expectation, the variance of a Kaiming-initialised dense kernel
/// (`2 / fan_in`): the mean of `mean(W²) / (2 / fan_in)` over 200 seeds must be 1 within 10 %
/// (CP within 25 %: its few shared factors make each draw's variance heavy-tailed).
#[test]
fn factorised_kernels_start_with_kaiming_variance() {
    let want = (kaiming_std(16 * 27) as f64).powi(2);
    for (kind, rank, tol) in [("dense", 1, 0.1), ("pair", 4, 0.1), ("cp", 8, 0.25)] {
        let seeds = 200;
        let ratio: f64 = (0..seeds)
            .map(|s| {
                let w = kernel_of(kind, rank, s);
                w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64 / want
            })
            .sum::<f64>()
            / seeds as f64;
        eprintln!("{kind}: mean variance ratio {ratio:.3}");
        assert!((ratio - 1.0).abs() < tol, "{kind}: variance ratio {ratio}");
    }
    // (std/√R)^(1/order) for std = 0.5, R = 4, order = 2: (0.25)^(1/2) = 0.5.
    assert!((factor_std(0.5, 4, 2) - 0.5).abs() < 1e-7);
}

#[test]
fn loss_gradients_match_finite_differences() {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let p = Tensor::randn(&[3, 1, 2, 4, 4], 1.0, &mut r);
    let t = Tensor::randn(&p.shape, 1.0, &mut r);
    for kind in [LossKind::Mse, LossKind::RelL2] {
        let (_, g) = loss(kind, &p, &t).unwrap();
        let v = Tensor::randn(&p.shape, 1.0, &mut r);
        let e = 1e-3f32;
        let sh = |s: f32| Tensor {
            shape: p.shape.clone(),
            data: p.data.iter().zip(&v.data).map(|(a, b)| a + s * b).collect(),
        };
        let fd = (loss(kind, &sh(e), &t).unwrap().0 - loss(kind, &sh(-e), &t).unwrap().0)
            / (2.0 * e as f64);
        let an = g.dot(&v);
        assert!(
            (fd - an).abs() < 1e-3 * an.abs().max(1e-3),
            "{kind:?}: {an} vs {fd}"
        );
    }
    assert!(loss(LossKind::Mse, &p, &Tensor::zeros(&[3, 1, 2, 4, 3])).is_err());
}

/// Adam's first step moves every weight by `lr` against its gradient's sign (bias-corrected
/// moments: m̂ = g, v̂ = g²); the schedule and clipping behave as documented.
#[test]
fn adam_first_step_schedule_and_clipping() {
    let mut p = wavecp::nn::Param::new("w", &[3], vec![1.0, -2.0, 0.5]);
    p.grad = vec![0.3, -4.0, 0.0];
    let cfg = AdamConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-12,
        weight_decay: 0.0,
        warmup: 0,
        schedule: Schedule::Constant,
        clip_norm: 0.0,
    };
    let mut opt = Adam::new(cfg.clone());
    let norm = opt.update(&mut [&mut p]);
    assert!((norm - (0.09f64 + 16.0).sqrt()).abs() < 1e-6);
    assert!(
        (p.value[0] - 0.9).abs() < 1e-6 && (p.value[1] + 1.9).abs() < 1e-6 && p.value[2] == 0.5,
        "{:?}",
        p.value
    );
    let sched = Adam::new(AdamConfig {
        warmup: 10,
        schedule: Schedule::Cosine {
            total: 100,
            min_lr: 0.0,
        },
        ..cfg.clone()
    });
    assert!((sched.lr_at(5) - 0.05).abs() < 1e-12);
    assert!(
        (sched.lr_at(60) - 0.05).abs() < 1e-12,
        "half-way through the cosine: lr/2"
    );
    assert!(sched.lr_at(110).abs() < 1e-12);
    let step = Adam::new(AdamConfig {
        schedule: Schedule::Step {
            every: 10,
            gamma: 0.5,
        },
        ..cfg.clone()
    });
    assert!((step.lr_at(25) - 0.025).abs() < 1e-12);
    // AdamW decay pulls a zero-gradient weight toward 0 by lr·wd·w.
    let mut q = wavecp::nn::Param::new("w", &[1], vec![2.0]);
    let mut w = Adam::new(AdamConfig {
        weight_decay: 0.1,
        ..cfg
    });
    w.update(&mut [&mut q]);
    assert!((q.value[0] - (2.0 - 0.1 * 0.1 * 2.0)).abs() < 1e-6);
}

#[test]
fn training_reduces_the_loss_of_a_small_model() {
    let mut m = unet(2);
    let mut r = ChaCha8Rng::seed_from_u64(9);
    let x = Tensor::randn(&[4, 2, 1, 8, 8], 1.0, &mut r);
    // Target: a fixed smooth function of the input (learnable by a conv net).
    let target = Tensor {
        shape: vec![4, 1, 1, 8, 8],
        data: (0..4 * 64)
            .map(|i| {
                0.5 * x.data[(i / 64) * 128 + i % 64] - 0.25 * x.data[(i / 64) * 128 + 64 + i % 64]
            })
            .collect(),
    };
    let mut opt = Adam::new(AdamConfig {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        warmup: 0,
        schedule: Schedule::Constant,
        clip_norm: 1.0,
    });
    let mut first = 0.0;
    let mut last = 0.0;
    for it in 0..150 {
        let y = m.forward(&x).unwrap();
        let (l, dy) = loss(LossKind::Mse, &y, &target).unwrap();
        if it == 0 {
            first = l;
        }
        last = l;
        m.zero_grad();
        m.backward(&dy).unwrap();
        let mut ps = m.params_mut();
        opt.update(&mut ps);
    }
    eprintln!("loss {first:.4} -> {last:.4}");
    assert!(
        last < 0.1 * first,
        "training did not reduce the loss enough: {first} -> {last}"
    );
}

#[test]
fn bad_model_files_are_errors() {
    for (text, needle) in [
        ("[model]\ndims = 4\nin_channels = 1\n[[layer]]\ntype = \"relu\"\n", "dims"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"concat\"\nname = \"x\"\n", "no earlier layer saved"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"conv\"\nout = 2\nkernel = [3, 3, 3]\n", "entries"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"convolution\"\n", "convolution"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"conv\"\nout = 2\nkernel = 3\nsize = 3\n", "size"),
        // Sizes and extents that used to pass `model info` and then divide by zero, or
        // allocate until the process was killed.
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"pool\"\nmode = \"avg\"\nkernel = [0, 2]\n", "must be positive"),
        ("[model]\ndims = 3\nin_channels = 1\n[[layer]]\ntype = \"upsample\"\nscale = [1, 0, 2]\n", "must be positive"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"conv\"\nout = 1000000000\nkernel = 3\n", "limit of 65536"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"conv\"\nout = 2\nkernel = 3\npadding = 1000\n", "padding"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"conv_transpose\"\nout = 2\nkernel = 2\nstride = 2\npadding = 5\n", "padding"),
        ("[model]\ndims = 2\nin_channels = 1\n[[layer]]\ntype = \"conv_transpose\"\nout = 2\nkernel = 2\nstride = 2\noutput_padding = 2\n", "output_padding"),
        ("[model]\ndims = 2\nin_channels = 1\nkind = \"dense\"\n[[layer]]\ntype = \"conv\"\nout = 60000\nkernel = 3\n[[layer]]\ntype = \"conv\"\nout = 60000\nkernel = 99\n", "GiB"),
    ] {
        let e = ModelSpec::from_toml(text).map_err(|e| e.to_string()).and_then(|s| Model::new(s).map(|_| ()).map_err(|e| e.to_string()));
        let e = e.unwrap_err();
        assert!(e.contains(needle), "`{e}` does not mention `{needle}`");
    }
}

/// `recompute = true` keeps only each CP layer's input and rebuilds the chain in the backward
/// pass: the same operations in the same order, so outputs and every gradient are bit-for-bit
/// those of the model that keeps its intermediates.
#[test]
fn cp_recompute_gives_identical_results() {
    for dims in [2, 3] {
        let pool = if dims == 2 { "[2, 2]" } else { "[1, 2, 2]" };
        let text = UNET
            .replace("DIMS", &dims.to_string())
            .replace("POOL", pool)
            .replace("kind = \"pair\"", "kind = \"cp\"");
        let mut keep = Model::new(ModelSpec::from_toml(&text).unwrap()).unwrap();
        let mut again = Model::new(
            ModelSpec::from_toml(&text.replace("seed = 7", "seed = 7\nrecompute = true")).unwrap(),
        )
        .unwrap();
        let mut r = ChaCha8Rng::seed_from_u64(11);
        let t = if dims == 2 { 1 } else { 3 };
        let x = Tensor::randn(&[2, 2, t, 8, 8], 1.0, &mut r);
        for step in 0..2 {
            let (y1, y2) = (keep.forward(&x).unwrap(), again.forward(&x).unwrap());
            assert_eq!(y1, y2, "{dims}-D step {step}: outputs");
            let dy = Tensor::randn(&y1.shape, 1.0, &mut r);
            keep.zero_grad();
            again.zero_grad();
            assert_eq!(
                keep.backward(&dy).unwrap(),
                again.backward(&dy).unwrap(),
                "{dims}-D: input gradients"
            );
            for (p, q) in keep.params().iter().zip(again.params()) {
                assert_eq!(p.grad, q.grad, "{dims}-D: gradient of {}", p.name);
            }
            // Change the weights between steps, so a stale recomputation would show.
            for m in [&mut keep, &mut again] {
                for p in m.params_mut() {
                    p.value.iter_mut().for_each(|v| *v *= 0.9);
                }
            }
        }
    }
}

/// A model file read and written again holds the same metadata, byte for byte: every stored
/// number (a calibration's windows, an error model's coefficients) parses to the bits it was
/// written from. Cargo gives the tests the library's own serde_json features (no
/// dev-dependency adds any), so this checks what the shipped binary does.
#[cfg(feature = "hdf5")]
#[test]
fn a_model_file_read_and_written_again_keeps_its_metadata_bits() {
    use wavecp::surrogate::modelfile;
    let meta_json = |p: &std::path::Path| -> String {
        let buf = std::fs::read(p).unwrap();
        let (_, h) = safetensors::SafeTensors::read_metadata(&buf).unwrap();
        h.metadata().as_ref().unwrap()["wavecp.meta"].clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let again = |src: &std::path::Path, out: &str| {
        let l = modelfile::load(src).unwrap();
        let out = dir.path().join(out);
        modelfile::save(&out, &l.model, &l.meta, None).unwrap();
        out
    };
    // Written by wavecp in the current format (stored calibration windows, an error model).
    let src = crate::common::repo("models/fine_prior_cp.safetensors");
    assert!(meta_json(&src) == meta_json(&again(&src, "a.safetensors")));
    // An older format (one calibration) is written in the current one, then kept.
    let src = crate::common::repo("models/demo_cp.safetensors");
    let once = again(&src, "b.safetensors");
    assert!(meta_json(&src) != meta_json(&once));
    assert!(meta_json(&once) == meta_json(&again(&once, "c.safetensors")));
}
