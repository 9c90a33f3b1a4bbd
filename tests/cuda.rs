//! The CUDA path where the CPU can check it: every kernel compiles with NVRTC (the PyPI wheel on
//! CPU-only machines), a broken one is a readable error, and the device report is clear without
//! a GPU. The kernel-vs-CPU parity tests need a device: without one they print
//! "skipped: no CUDA device" and pass, unless WAVECP_REQUIRE_CUDA=1 makes that a failure.

use std::process::Command;
use wavecp::cuda::{compile, nvrtc_present, CudaError, Gpu, KERNELS};
use wavecp::nn::conv::{depthwise_axis, depthwise_axis_backward, AxisConv, DwShape};
use wavecp::nn::ops::{act, dact, ActKind};

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Says that a test was skipped on stderr itself: the harness captures `eprintln!` of passing
/// tests, and a skip must be seen in the log.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

#[test]
fn every_kernel_compiles_with_nvrtc_for_the_gpu_architectures() {
    if !nvrtc_present() {
        assert!(
            !required("WAVECP_REQUIRE_NVRTC"),
            "WAVECP_REQUIRE_NVRTC=1 but libnvrtc.so.13 is not loadable (LD_LIBRARY_PATH?)"
        );
        skipped("NVRTC not found (bash scripts/setup --tests installs the wheel)");
        return;
    }
    // H100/H200 (9.0, the GPU machines) and A100 (8.0).
    for arch in ["compute_90", "compute_80"] {
        for (name, src) in KERNELS {
            let ptx = compile(name, src, arch).unwrap_or_else(|e| panic!("{e}"));
            let text = ptx.to_src();
            // Every `extern "C" __global__` function of the file is in the PTX.
            let entries: Vec<&str> = src
                .split("extern \"C\" __global__ void ")
                .skip(1)
                .map(|rest| rest.split('(').next().unwrap().trim())
                .collect();
            assert!(!entries.is_empty(), "{name}.cu has no kernel");
            for entry in entries {
                assert!(
                    text.contains(&format!(".entry {entry}")),
                    "{name} for {arch} lacks {entry}"
                );
            }
        }
    }
    // A kernel that does not compile is an error carrying NVRTC's log, not a panic.
    let e = match compile(
        "broken",
        "extern \"C\" __global__ void k() { undeclared = 1; }",
        "compute_90",
    ) {
        Ok(_) => panic!("a broken kernel must not compile"),
        Err(e) => e,
    };
    match &e {
        CudaError::Compile { log, .. } => assert!(log.contains("undeclared"), "{log}"),
        other => panic!("expected a compile error, got {other}"),
    }
}

#[test]
fn the_device_report_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_wavecp"))
        .args(["device", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if r["devices"].as_array().unwrap().is_empty() {
        let p = r["problem"].as_str().expect("no device and no reason");
        assert!(p.contains("driver") || p.contains("device"), "{p}");
    }
}

/// Seeded inputs over [-9, 9] (both clamps of the tanh rational), at lengths that leave
/// partial blocks and exceed one grid-stride pass.
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 18.0
        })
        .collect()
}

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
                assert!(
                    (dx[i] - dc).abs() <= tol * dc.abs().max(1.0),
                    "{kind:?} backward n={n} i={i}: {} vs {dc}",
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

fn open_gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            assert!(
                !required("WAVECP_REQUIRE_CUDA"),
                "WAVECP_REQUIRE_CUDA=1 but: {e}"
            );
            skipped(&format!("no CUDA device ({e})"));
            None
        }
    }
}

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
