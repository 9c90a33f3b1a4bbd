//! The CUDA path where the CPU can check it: every kernel compiles with NVRTC (the PyPI wheel on
//! CPU-only machines), a broken one is a readable error, and the device report is clear without
//! a GPU. The kernel-vs-CPU parity tests need a device: without one they print
//! "skipped: no CUDA device" and pass, unless WAVECP_REQUIRE_CUDA=1 makes that a failure.

use std::process::Command;
use wavecp::cuda::{adam_rows, compile, nvrtc_present, Chain, CudaError, Gpu, Kernel, KERNELS};
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
                .map(|rest| {
                    // `__launch_bounds__(n)` may stand between `void` and the name.
                    let rest = rest.trim_start();
                    let rest = match rest.strip_prefix("__launch_bounds__") {
                        Some(r) => &r[r.find(')').unwrap() + 1..],
                        None => rest,
                    };
                    rest.split('(').next().unwrap().trim()
                })
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

/// What NVRTC is asked for: the device's own machine code where NVRTC knows its
/// architecture, else PTX for the newest architecture below it (which the driver compiles),
/// and a clear error for a device older than all of them.
#[test]
fn kernels_are_compiled_to_the_devices_machine_code_else_to_older_ptx() {
    use wavecp::cuda::kernel_target;
    let archs = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];
    assert_eq!(kernel_target((9, 0), &archs, false).unwrap(), "sm_90");
    assert_eq!(kernel_target((8, 0), &archs, false).unwrap(), "sm_80");
    assert_eq!(kernel_target((9, 0), &archs, true).unwrap(), "compute_90");
    // A device newer than NVRTC: PTX for the newest architecture NVRTC has below it.
    assert_eq!(kernel_target((9, 5), &archs, false).unwrap(), "compute_90");
    assert_eq!(
        kernel_target((13, 0), &archs, false).unwrap(),
        "compute_121"
    );
    let e = kernel_target((7, 0), &archs, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("7.0") && e.contains("older"), "{e}");
    assert!(kernel_target((9, 0), &[], false).is_err());
}

/// NVRTC's machine code for the GPU machines' architecture (H100/H200) holds every kernel of
/// each file, and a broken kernel is an error with NVRTC's log.
#[test]
fn every_kernel_compiles_to_machine_code_for_sm_90() {
    use wavecp::cuda::compile_cubin;
    if !nvrtc_present() {
        skipped("NVRTC not found (bash scripts/setup --tests installs the wheel)");
        return;
    }
    for (name, src) in KERNELS {
        let bin = compile_cubin(name, src, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        assert!(bin.starts_with(b"\x7fELF"), "{name}: not an ELF file");
        for entry in src.split("extern \"C\" __global__ void ").skip(1) {
            let entry = entry.trim_start();
            let entry = match entry.strip_prefix("__launch_bounds__") {
                Some(r) => &r[r.find(')').unwrap() + 1..],
                None => entry,
            };
            let k = format!(".text.{}\0", entry.split('(').next().unwrap().trim());
            assert!(
                bin.windows(k.len()).any(|w| w == k.as_bytes()),
                "{name}: no {k} section"
            );
        }
    }
    match compile_cubin(
        "broken",
        "extern \"C\" __global__ void k() { undeclared = 1; }",
        "sm_90",
    ) {
        Err(CudaError::Compile { log, arch, .. }) => {
            assert!(log.contains("undeclared"), "{log}");
            assert_eq!(arch, "sm_90");
        }
        other => panic!("expected a compile error, got {:?}", other.map(|b| b.len())),
    }
}

#[test]
fn the_device_report_says_what_is_missing() {
    let out = Command::new(crate::common::wavecp_bin())
        .args(["device", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if r["devices"].as_array().unwrap().is_empty() {
        let p = r["problem"].as_str().expect("no device and no reason");
        assert!(p.contains("driver") || p.contains("device"), "{p}");
    }
    for d in r["devices"].as_array().unwrap() {
        // With NVRTC, which knows every architecture from 7.5 to 12.x, the kernels for the
        // device are its own machine code.
        if r["nvrtc_library"].as_bool().unwrap() {
            let cc = &d["compute_capability"];
            let sm = format!("sm_{}{}", cc[0], cc[1]);
            assert_eq!(d["kernels"].as_str(), Some(sm.as_str()), "{d}");
        }
        // The emulator reports an H200's attributes: 132 SMs × 128 lanes × 2 × 1.98 GHz, and
        // 2 × 3.201 GHz × 6144 bits / 8.
        if d["name"].as_str().unwrap().contains("cuda-emu") {
            let f = d["peaks"]["fp32_tflops"].as_f64().unwrap();
            let b = d["peaks"]["dram_gbs"].as_f64().unwrap();
            assert!((f - 66.9).abs() < 0.1 && (b - 4916.7).abs() < 0.1, "{d}");
        }
    }
}

/// `wavecp bench kernels` times GPU kernels only: without a device it says why and fails; with
/// one (or the emulator) every entry has a positive time, and its roofline fraction is in
/// (0, 1.5] (the nominal peaks are estimates from the device's clocks, so a little over 1 is
/// possible; far over would mean a wrong FLOP or byte count).
#[test]
fn the_kernel_benchmark_reports_rates_against_the_roofline() {
    // Through PTX (`WAVECP_KERNEL_FORMAT=ptx`), which the driver compiles on loading: the
    // path taken on a device newer than NVRTC, and the fallback when the driver refuses
    // NVRTC's machine code; every other test loads machine code (cubins).
    let stats = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(crate::common::wavecp_bin())
        .args(["bench", "kernels", "--samples", "1", "--scale", "16"])
        .env("WAVECP_KERNEL_FORMAT", "ptx")
        .env("WAVECP_EMU_STATS", stats.path())
        .output()
        .unwrap();
    if let Err(e) = Gpu::new(0) {
        assert!(
            !required("WAVECP_REQUIRE_CUDA"),
            "WAVECP_REQUIRE_CUDA=1 but: {e}"
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("driver") || err.contains("device"), "{err}");
        skipped("no CUDA device for the kernel benchmark");
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = r.as_array().unwrap();
    assert!(rows.len() >= 48, "{} entries", rows.len());
    for e in rows {
        assert!(e["ms"].as_f64().unwrap() > 0.0, "{e}");
        let f = e["fraction_of_roofline"]
            .as_f64()
            .expect("no roofline fraction");
        assert!(f > 0.0 && f <= 1.5, "{e}");
    }
    // On the emulator, which counts what it loads and launches: every kernel file came as
    // PTX, and every kernel a training step of the dense, pair and CP models launches was
    // timed against the roofline (by family: the tile-height, epilogue and chain-tile
    // variants a shape selects are what `bench kernels --sweep` times).
    let counts = std::fs::read_to_string(stats.path()).unwrap_or_default();
    if !counts.is_empty() {
        let c: serde_json::Value = serde_json::from_str(&counts).unwrap();
        assert_eq!(c["PTX modules"].as_u64(), Some(KERNELS.len() as u64), "{c}");
        assert!(c.get("cubin modules").is_none(), "{c}");
        let train_stats = tempfile::NamedTempFile::new().unwrap();
        let models = ["dense", "pair", "cp"].map(|k| {
            crate::common::repo(&format!("models/small_{k}.toml"))
                .display()
                .to_string()
        });
        let t = Command::new(crate::common::wavecp_bin())
            .args([
                "bench", "train", "--device", "cuda", "--size", "4,16,16", "--batch", "1",
            ])
            .args([
                "--steps",
                "1",
                "--warmup",
                "0",
                "--model",
                &models.join(","),
            ])
            .env("WAVECP_EMU_STATS", train_stats.path())
            .output()
            .unwrap();
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
        let families = |text: &str| -> std::collections::BTreeSet<String> {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            v.as_object()
                .unwrap()
                .keys()
                .filter_map(|k| k.strip_prefix("launch "))
                .map(|k| {
                    let k = k.replace("_bias_act", "");
                    // sgemm_t64_f32 → sgemm_f32, cp_chain_forward_t16_f32 → cp_chain_forward_f32
                    match k.rsplit_once("_t") {
                        Some((head, tail)) if tail.starts_with(|ch: char| ch.is_ascii_digit()) => {
                            let rest = tail.trim_start_matches(|ch: char| ch.is_ascii_digit());
                            format!("{head}{rest}")
                        }
                        _ => k,
                    }
                })
                .collect()
        };
        let trained = families(&std::fs::read_to_string(train_stats.path()).unwrap());
        let timed = families(&counts);
        assert!(trained.len() >= 20, "{trained:?}");
        let missing: Vec<_> = trained.difference(&timed).collect();
        assert!(
            missing.is_empty(),
            "launched in training, not timed alone: {missing:?}"
        );
    }
    let cpu = Command::new(crate::common::wavecp_bin())
        .args(["bench", "kernels", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(!cpu.status.success());
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

/// Error bound of a sum of `terms` products evaluated in two different orders (both within
/// `terms·ε·Σ|a·b|` of the exact value), plus a floor for sums that cancel to zero.
fn order_tol(terms: usize, abs_sum: f64) -> f64 {
    2.0 * terms as f64 * f32::EPSILON as f64 * abs_sum + 1e-30
}

#[test]
fn gemm_kernel_matches_the_cpu_gemm() {
    use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
    use wavecp::cuda::GemmDesc;
    use wavecp::nn::conv::gemm_view;
    let Some(mut gpu) = open_gpu() else {
        return;
    };
    // Full tiles, partial tiles on every side, k not a multiple of 16, the CP shapes, every
    // tile height of the tiled kernel (32, 64, 128 rows), and long k on few tiles (split K).
    let shapes = [
        (1usize, 1usize, 1usize),
        (64, 64, 16),
        (65, 63, 17),
        (33, 130, 300),
        (4, 2000, 32),
        (32, 2000, 4),
        (100, 300, 40),
        (5, 7, 3000),
        (200, 129, 1030),
    ];
    let batch = 3usize;
    let mut splits_seen = false;
    for (basic, (si, &(m, n, k))) in [true, false]
        .into_iter()
        .flat_map(|b| shapes.iter().enumerate().map(move |s| (b, s)))
    {
        gpu.set_basic_gemm(basic);
        for (ta, tb, beta) in [
            (false, false, 0.0f32),
            (true, false, 1.0),
            (false, true, 0.5),
            (true, true, 0.0),
        ] {
            // Row-major [m, k] or its transpose stored [k, m]; the same for B.
            let a_st: [i64; 3] = if ta {
                [1, m as i64, (m * k) as i64]
            } else {
                [k as i64, 1, (m * k) as i64]
            };
            let b_st: [i64; 3] = if tb {
                [1, k as i64, (k * n) as i64]
            } else {
                [n as i64, 1, (k * n) as i64]
            };
            let c_st: [i64; 3] = [n as i64, 1, (m * n) as i64];
            let a = inputs(batch * m * k, 11 + si as u64);
            let b = inputs(batch * k * n, 12 + si as u64);
            let c0 = inputs(batch * m * n, 13 + si as u64);
            let d = GemmDesc {
                m: m as u32,
                n: n as u32,
                k: k as u32,
                batch: batch as u32,
                a: a_st,
                b: b_st,
                c: c_st,
                alpha: 0.75,
                beta,
            };
            splits_seen |= gpu.gemm_plan(&d).splits > 1 && !basic;
            let g = gpu.gemm(&d, &a, &b, &c0).unwrap();
            // The epilogue (bias, GELU, the value before it) on the same GEMM.
            let bias = inputs(m, 14 + si as u64);
            let (post, pre) = gpu
                .gemm_bias_act(&d, &a, &b, &c0, &bias, ActKind::Gelu)
                .unwrap();
            let mut cpu = c0.clone();
            for z in 0..batch {
                let av = ArrayView2::from_shape(
                    (m, k).strides((a_st[0] as usize, a_st[1] as usize)),
                    &a[z * m * k..(z + 1) * m * k],
                )
                .unwrap();
                let bv = ArrayView2::from_shape(
                    (k, n).strides((b_st[0] as usize, b_st[1] as usize)),
                    &b[z * k * n..(z + 1) * k * n],
                )
                .unwrap();
                let cv = ArrayViewMut2::from_shape((m, n), &mut cpu[z * m * n..(z + 1) * m * n])
                    .unwrap();
                gemm_view(0.75, av, bv, beta, cv);
                for i in 0..m {
                    for j in 0..n {
                        let abs: f64 = (0..k)
                            .map(|q| (av[[i, q]] as f64 * bv[[q, j]] as f64).abs())
                            .sum::<f64>()
                            * 0.75
                            + (beta as f64 * c0[z * m * n + i * n + j] as f64).abs();
                        let idx = z * m * n + i * n + j;
                        let tol = order_tol(k + 1, abs);
                        assert!(
                            ((g[idx] - cpu[idx]) as f64).abs() <= tol,
                            "gemm {m}x{n}x{k} basic {basic} ta {ta} tb {tb} beta {beta} [{z},{i},{j}]: {} vs {}",
                            g[idx],
                            cpu[idx]
                        );
                        let want = cpu[idx] + bias[i];
                        let tol = tol + 2.0 * f32::EPSILON as f64 * want.abs() as f64;
                        assert!(
                            ((pre[idx] - want) as f64).abs() <= tol,
                            "gemm+bias {m}x{n}x{k} basic {basic} [{z},{i},{j}]: {} vs {want}",
                            pre[idx]
                        );
                        // GELU's slope is at most 1.13; its own rounding a few ulps.
                        let gw = act(ActKind::Gelu, want);
                        assert!(
                            ((post[idx] - gw) as f64).abs()
                                <= 1.13 * tol + 4e-6 * gw.abs().max(1.0) as f64,
                            "gemm+GELU {m}x{n}x{k} basic {basic} [{z},{i},{j}]: {} vs {gw}",
                            post[idx]
                        );
                    }
                }
            }
        }
    }
    assert!(splits_seen, "no shape took the split-K path");
    // Products summed over the batch into one C (the weight gradients), both kernels.
    for basic in [true, false] {
        gpu.set_basic_gemm(basic);
        for &(m, n, k) in &[(5usize, 7usize, 3000usize), (33, 130, 300), (64, 64, 16)] {
            let batch = 3;
            let a = inputs(batch * m * k, 21);
            let b = inputs(batch * k * n, 22);
            let c0 = inputs(m * n, 23);
            let d = GemmDesc {
                m: m as u32,
                n: n as u32,
                k: k as u32,
                batch: batch as u32,
                a: [k as i64, 1, (m * k) as i64],
                b: [n as i64, 1, (k * n) as i64],
                c: [n as i64, 1, 0],
                alpha: 0.5,
                beta: 1.0,
            };
            let g = gpu.gemm_sum_batch(&d, &a, &b, &c0).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let (mut want, mut abs) = (c0[i * n + j] as f64, c0[i * n + j].abs() as f64);
                    for z in 0..batch {
                        for q in 0..k {
                            let t =
                                a[z * m * k + i * k + q] as f64 * b[z * k * n + q * n + j] as f64;
                            want += 0.5 * t;
                            abs += 0.5 * t.abs();
                        }
                    }
                    let got = g[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= order_tol(batch * k + 1, abs),
                        "sum over batch {m}x{n}x{k} basic {basic} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
    gpu.set_basic_gemm(false);
    // Strides that reach past a buffer are refused before the launch.
    let d = GemmDesc {
        m: 4,
        n: 4,
        k: 4,
        batch: 1,
        a: [4, 1, 16],
        b: [4, 1, 16],
        c: [4, 1, 16],
        alpha: 1.0,
        beta: 0.0,
    };
    assert!(gpu.gemm(&d, &[0.0; 15], &[0.0; 16], &[0.0; 16]).is_err());
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

/// GPU values `gv` against the CPU's `cv`, both sums of at most `terms` products: each within
/// the f32 summation-order bound 2·terms·ε·Σ|products| of the other (`av`: the same
/// computation on absolute values), plus 1e-6.
fn assert_sum_bound(label: &str, gv: &[f32], cv: &[f32], av: &[f32], terms: f32) {
    assert_eq!(gv.len(), cv.len(), "{label} length");
    for i in 0..cv.len() {
        let tol = 2.0 * terms * f32::EPSILON * av[i] + 1e-6;
        assert!(
            (gv[i] - cv[i]).abs() <= tol,
            "{label}[{i}]: gpu {} cpu {} (tol {tol})",
            gv[i],
            cv[i]
        );
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

/// A small U-Net with every layer kind the GPU executor supports: pair, CP and dense
/// convolutions, GELU and tanh, average and max pooling, a transposed convolution, an add
/// skip, nearest up-sampling and a concat skip.
const GPU_UNET: &str = r#"
[model]
dims = 3
in_channels = 2
kind = "pair"
rank = 2
seed = 5

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
kernel = [1, 2, 2]
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
kernel = [1, 2, 2]
stride = [1, 2, 2]
[[layer]]
type = "add"
name = "e1"
[[layer]]
type = "pool"
mode = "max"
kernel = [1, 2, 2]
[[layer]]
type = "upsample"
scale = [1, 2, 2]
[[layer]]
type = "concat"
name = "e1"
[[layer]]
type = "conv"
kind = "dense"
out = 1
kernel = 1
"#;

#[test]
fn gpu_training_steps_follow_the_cpu_loss_curve() {
    use wavecp::cuda::model::GpuModel;
    use wavecp::nn::train::{loss, Adam, AdamConfig, LossKind};
    use wavecp::nn::{Model, ModelSpec, Tensor};
    let Some(gpu) = open_gpu() else {
        return;
    };
    let spec = ModelSpec::from_toml(GPU_UNET).unwrap();
    let mut cpu = Model::new(spec.clone()).unwrap();
    let mut gm = GpuModel::from_model(&gpu, &Model::new(spec).unwrap()).unwrap();
    let d = [2usize, 2, 3, 8, 8];
    let x = Tensor::from_vec(
        &d,
        inputs(d.iter().product(), 71)
            .iter()
            .map(|v| v / 9.0)
            .collect(),
    )
    .unwrap();
    let cfg = AdamConfig {
        clip_norm: 1.0,
        weight_decay: 0.01,
        ..AdamConfig::new(3e-3)
    };
    let mut adam = Adam::new(cfg.clone());
    let mut target = None;
    for step in 0..4 {
        let y = cpu.forward(&x).unwrap();
        let t = target
            .get_or_insert_with(|| {
                Tensor::from_vec(
                    &y.shape,
                    inputs(y.len(), 72).iter().map(|v| v / 9.0).collect(),
                )
                .unwrap()
            })
            .clone();
        let (l, dy) = loss(LossKind::Mse, &y, &t).unwrap();
        cpu.zero_grad();
        cpu.backward(&dy).unwrap();
        let norm = adam.update(&mut cpu.params_mut());

        let (yd, od) = gm
            .forward(&gpu, gpu.to_device(&x.data).unwrap(), d)
            .unwrap();
        assert_eq!(od.to_vec(), y.shape);
        let td = gpu.to_device(&t.data).unwrap();
        let mut gd = gpu.device_zeros(y.len()).unwrap();
        let lg = gpu.mse_dev(&yd, &td, y.len(), &mut gd).unwrap();
        gm.zero_grad(&gpu).unwrap();
        gm.backward(&gpu, gd, od).unwrap();
        gm.adam_step(&gpu, &cfg).unwrap();
        let ng = gm
            .grad_norm(&gpu)
            .unwrap()
            .expect("clipping on: the norm is kept");
        // Before the first update both run the same network on the same data: the losses differ
        // by f32 summation order only. Each AdamW step then moves every weight by at most
        // about lr, and a gradient near zero can change sign between the backends, so later
        // losses may drift by O(lr·|∂L/∂θ|): 1e-3 relative covers four steps at lr 3e-3.
        let tol = if step == 0 { 1e-5 } else { 1e-3 };
        assert!(
            (lg - l).abs() <= tol * l.abs(),
            "step {step}: loss gpu {lg} cpu {l}"
        );
        assert!(
            (ng - norm).abs() <= 1e-3 * norm,
            "step {step}: gradient norm gpu {ng} cpu {norm}"
        );
    }
    // The weights after four steps: an AdamW step is at most about lr per weight, so no weight
    // may differ by more than 2 · 4 · lr (opposite moves every step), and all but a few (near-
    // zero gradients) must agree to float rounding.
    let gv = gm.param_values(&gpu).unwrap();
    let cp = cpu.params();
    assert_eq!(gv.len(), cp.len());
    let (mut off, mut total) = (0usize, 0usize);
    for (g, c) in gv.iter().zip(&cp) {
        assert_eq!(g.len(), c.value.len(), "{}", c.name);
        for (a, b) in g.iter().zip(&c.value) {
            assert!((a - b).abs() <= 2.0 * 4.0 * 3e-3, "{}: {a} vs {b}", c.name);
            off += usize::from((a - b).abs() > 1e-4 * b.abs() + 1e-6);
            total += 1;
        }
    }
    assert!(
        off * 100 <= total,
        "{off} of {total} weights differ beyond rounding"
    );
}

/// The calling thread's count of emulated driver call `what`, when the driver is the CUDA
/// emulator (`None` on a real driver, which has no such counter).
#[cfg(feature = "hdf5")]
fn emu_count(what: &str) -> Option<u64> {
    // SAFETY: loads the driver library already loaded by cudarc (dlopen of the same name
    // returns the same handle) and, if it is the emulator, calls its counter, whose signature
    // is `unsigned long long wavecp_emu_count(const char*)` (tests/cuda-emu/driver.cpp).
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let f: libloading::Symbol<unsafe extern "C" fn(*const std::ffi::c_char) -> u64> =
            lib.get(b"wavecp_emu_count\0").ok()?;
        let name = std::ffi::CString::new(what).ok()?;
        Some(f(name.as_ptr()))
    }
}

/// A steady-state GPU training step (resident data, a U-Net with every node kind) through the
/// emulator, counting its driver calls: one copy back (the loss) and no other wait, nothing
/// uploaded, no memset, no kernel lookup, as many frees as allocations.
#[cfg(feature = "hdf5")]
#[test]
fn a_gpu_training_step_waits_once_and_uploads_nothing() {
    use wavecp::nn::train::{Adam, AdamConfig, LossKind};
    use wavecp::nn::{Model, ModelSpec};
    use wavecp::surrogate::data::{FrameSet, WindowSpec};
    use wavecp::surrogate::engine::{GpuTrainer, Slot};
    let Some(gpu) = open_gpu() else { return };
    if emu_count("cuLaunchKernel").is_none() {
        skipped("counting driver calls needs the CUDA emulator");
        return;
    }
    let (samples, nframes, ny, nx) = (2, 9, 8, 8);
    let fs = FrameSet {
        path: "mem".into(),
        frames: inputs(samples * nframes * ny * nx, 43),
        samples,
        nframes,
        ny,
        nx,
        mean: 0.0,
        std: 1.0,
        frame_dt: 0.1,
    };
    let ws = WindowSpec {
        t_in: 3,
        t_out: 3,
        dims: 3,
    };
    // Dense, pair and CP layers, a transposed convolution, both poolings, up-sampling, add
    // and concat skips: every kind of node a step runs.
    let spec =
        ModelSpec::from_toml(&GPU_UNET.replace("in_channels = 2", "in_channels = 1")).unwrap();
    let mut e = GpuTrainer::new(gpu, &Model::new(spec).unwrap(), LossKind::Mse).unwrap();
    assert!(e.keep_frames(&fs, ws).unwrap());
    let wins = ws.windows(&fs, &[0, 1], 1);
    e.set_windows(Slot::Train, &wins).unwrap();
    let mut adam = Adam::new(AdamConfig {
        clip_norm: 1e-3,
        ..AdamConfig::new(1e-3)
    });
    let names = [
        "cuLaunchKernel",
        "cuMemcpyDtoH",
        "bytes DtoH",
        "cuMemcpyHtoD",
        "cuMemset",
        "cuModuleGetFunction",
        "cuStreamSynchronize",
        "cuCtxSynchronize",
        "cuMemAlloc",
        "cuMemFree",
    ];
    let counts = || -> Vec<u64> { names.iter().map(|n| emu_count(n).unwrap()).collect() };
    // The first step looks the kernels up, makes the AdamW moments and uploads the tensor
    // tables; the next ones reuse all of it.
    let mut per_step = vec![];
    for step in 0..3 {
        let before = counts();
        let p = e
            .queue_step_at(Slot::Train, 2 * step % wins.len(), 2, &mut adam)
            .unwrap();
        let l = e.loss(&p).unwrap();
        drop(p);
        assert!(l.is_finite() && l > 0.0);
        let after = counts();
        per_step.push(
            names
                .iter()
                .zip(after.iter().zip(&before))
                .map(|(n, (a, b))| (*n, a - b))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    for (i, c) in per_step.iter().enumerate().skip(1) {
        // One wait per step, the copy of the loss (a handful of f64 partial sums) back; no
        // other synchronisation.
        assert_eq!(c["cuMemcpyDtoH"], 1, "step {i}: {c:?}");
        assert!(c["bytes DtoH"] <= 8 * 1024, "step {i}: {c:?}");
        assert_eq!(
            c["cuStreamSynchronize"] + c["cuCtxSynchronize"],
            0,
            "step {i}: {c:?}"
        );
        // Nothing goes to the device (batches are cut there, tables are reused), nothing is
        // set by memset (gradients are zeroed by one kernel), no kernel is looked up again,
        // and what a step allocates it frees.
        assert_eq!(c["cuMemcpyHtoD"], 0, "step {i}: {c:?}");
        assert_eq!(c["cuMemset"], 0, "step {i}: {c:?}");
        assert_eq!(c["cuModuleGetFunction"], 0, "step {i}: {c:?}");
        assert_eq!(c["cuMemAlloc"], c["cuMemFree"], "step {i}: {c:?}");
        assert_eq!(
            c["cuLaunchKernel"], per_step[1]["cuLaunchKernel"],
            "step {i}"
        );
    }
    assert!(per_step[0]["cuModuleGetFunction"] > 0);
    eprintln!(
        "driver calls per training step after the first: {:?}",
        per_step[2]
    );
}

/// Batches cut on the device from the resident frame set are the same bits as the CPU's
/// `WindowSpec::stack` (a copy: exact), for 2-D and 3-D layouts, inputs and targets, windows in
/// a shuffled order and a last partial batch; windows that would run past the frames are refused.
#[cfg(feature = "hdf5")]
#[test]
fn resident_window_batches_match_the_cpu_stack() {
    use wavecp::surrogate::data::{FrameSet, WindowSpec};
    let Some(gpu) = open_gpu() else { return };
    let (samples, nframes, ny, nx) = (3, 11, 5, 7);
    let frames = inputs(samples * nframes * ny * nx, 41);
    let fs = FrameSet {
        path: "mem".into(),
        frames,
        samples,
        nframes,
        ny,
        nx,
        mean: 0.013,
        std: 0.37,
        frame_dt: 0.1,
    };
    let norm: Vec<f32> = fs
        .frames
        .iter()
        .map(|v| ((*v as f64 - fs.mean) / fs.std) as f32)
        .collect();
    for dims in [2, 3] {
        let ws = WindowSpec {
            t_in: 3,
            t_out: 4,
            dims,
        };
        let mut wins = ws.windows(&fs, &[0, 1, 2], 2);
        wins.reverse();
        wins.swap(1, 4);
        let first: Vec<u32> = wins
            .iter()
            .map(|&(s, t0)| (s * nframes + t0) as u32)
            .collect();
        let span = ws.t_in + ws.t_out;
        let batch = 4;
        for b0 in (0..wins.len()).step_by(batch) {
            let count = batch.min(wins.len() - b0);
            let (x, y) = ws.batch(&fs, &wins[b0..b0 + count], fs.mean, fs.std);
            for (off, t, want) in [(0, ws.t_in, &x), (ws.t_in, ws.t_out, &y)] {
                let got = gpu
                    .gather_windows(&norm, ny * nx, &first, span, b0, count, off, t)
                    .unwrap();
                assert_eq!(got.len(), want.data.len());
                for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "dims {dims} b0 {b0} off {off} i {i}"
                    );
                }
            }
        }
    }
    let past = ((samples * nframes) - 2) as u32;
    assert!(gpu
        .gather_windows(&norm, ny * nx, &[0, past], 7, 0, 2, 0, 3)
        .is_err());
}

#[test]
fn compiled_kernels_are_cached_on_disk_by_source_architecture_and_nvrtc() {
    use wavecp::cuda::{cached_image, KernelCache};
    if !nvrtc_present() {
        skipped("NVRTC not found (bash scripts/setup --tests installs the wheel)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let entries = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let cache = KernelCache::at(dir.path());
    let (name, src) = KERNELS.iter().find(|(n, _)| *n == "elementwise").unwrap();
    let (first, hit) = cached_image(&cache, name, src, "compute_90").unwrap();
    assert!(!hit, "an empty cache cannot hit");
    assert_eq!(entries().len(), 1, "{:?}", entries());
    let (again, hit) = cached_image(&cache, name, src, "compute_90").unwrap();
    assert!(hit, "the second lookup must come from the cache");
    assert_eq!(first, again);
    // Another architecture is another entry; both stay.
    let (other, hit) = cached_image(&cache, name, src, "compute_80").unwrap();
    assert!(!hit);
    assert_ne!(
        first, other,
        "PTX for compute_80 and compute_90 must differ"
    );
    assert_eq!(entries().len(), 2, "{:?}", entries());
    // An edited source misses, and its stale entry for that architecture is removed.
    let edited = format!("{src}\n__device__ float wavecp_cache_probe(float x) {{ return x; }}\n");
    let before = entries();
    let (_, hit) = cached_image(&cache, name, &edited, "compute_90").unwrap();
    assert!(!hit, "an edited source must not hit the old entry");
    let after = entries();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(before, after);
    // A damaged entry (a crash mid-copy by another tool, a full disk) is not trusted: compiled
    // again and rewritten.
    let victim = dir
        .path()
        .join(after.iter().find(|n| n.contains("compute_80")).unwrap());
    std::fs::write(&victim, "garbage").unwrap();
    let (repaired, hit) = cached_image(&cache, name, src, "compute_80").unwrap();
    assert!(!hit, "a damaged entry must not be used");
    assert_eq!(repaired, other);
    assert_eq!(std::fs::read(&victim).unwrap(), other);
    // Machine code is cached the same way, as `.cubin` entries beside the PTX; a damaged one
    // is compiled again.
    let (bin, hit) = cached_image(&cache, name, src, "sm_90").unwrap();
    assert!(!hit && bin.starts_with(b"\x7fELF"));
    let (again, hit) = cached_image(&cache, name, src, "sm_90").unwrap();
    assert!(hit);
    assert_eq!(bin, again);
    let cubin = dir
        .path()
        .join(entries().iter().find(|n| n.ends_with(".cubin")).unwrap());
    std::fs::write(&cubin, b"\x7fELF but cut short").unwrap();
    let (repaired, hit) = cached_image(&cache, name, src, "sm_90").unwrap();
    assert!(!hit, "a damaged cubin must not be used");
    assert_eq!(repaired, bin);
    assert_eq!(entries().len(), 3, "{:?}", entries());
    assert!(
        entries()
            .iter()
            .all(|n| (n.ends_with(".ptx") || n.ends_with(".cubin")) && !n.starts_with('.')),
        "temporary files left: {:?}",
        entries()
    );
    // Off: never hits, writes nothing.
    let off = KernelCache::off();
    assert!(!cached_image(&off, name, src, "compute_90").unwrap().1);
    assert!(!cached_image(&off, name, src, "compute_90").unwrap().1);
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

#[test]
fn the_tiling_sweep_times_every_variant_and_marks_the_chosen_one() {
    let Some(_gpu) = open_gpu() else {
        return;
    };
    let rows = wavecp::cuda::bench::run_sweep(1, 16, 0).unwrap();
    let mut shapes: Vec<&str> = Vec::new();
    for r in &rows {
        if !shapes.contains(&r.shape.as_str()) {
            shapes.push(&r.shape);
        }
    }
    // Four U-Net levels × (three dense GEMMs + the chain's forward and filter gradient).
    assert_eq!(shapes.len(), 20, "{shapes:?}");
    for sh in shapes {
        let here: Vec<_> = rows.iter().filter(|r| r.shape == sh).collect();
        let chosen = here
            .iter()
            .filter(|r| r.kernel.ends_with("(chosen)"))
            .count();
        assert_eq!(chosen, 1, "{sh}: {chosen} variants marked chosen");
        let want = if sh.contains("CP chain") { 3 } else { 4 };
        assert!(here.len() >= want, "{sh}: only {} variants", here.len());
        for r in here {
            assert!(r.ms > 0.0, "{sh} {}", r.kernel);
            let f = r.fraction_of_roofline.unwrap();
            assert!(f > 0.0 && f <= 1.5, "{sh} {}: {f}", r.kernel);
        }
    }
}

#[test]
fn every_kernel_the_host_launches_is_in_the_compiled_ptx() {
    if !nvrtc_present() {
        skipped("NVRTC not found (bash scripts/setup --tests installs the wheel)");
        return;
    }
    // The `.entry` names of each kernel file, compiled as the GPU machines get them.
    let entries: Vec<std::collections::HashSet<String>> = KERNELS
        .iter()
        .map(|(name, src)| {
            let ptx = compile(name, src, "compute_90")
                .unwrap_or_else(|e| panic!("{e}"))
                .to_src();
            ptx.split(".entry ")
                .skip(1)
                .map(|rest| rest.split('(').next().unwrap().trim().to_string())
                .collect()
        })
        .collect();
    // Every kernel the host can launch (the typed registry) is an entry of its own file: a
    // kernel renamed, dropped or moved to another file fails here, not at its first launch.
    let missing: Vec<_> = Kernel::ALL
        .iter()
        .filter(|k| !entries[k.file().index()].contains(k.entry()))
        .map(|k| format!("{k:?} ({} in {}.cu)", k.entry(), k.file().name()))
        .collect();
    assert!(missing.is_empty(), "launched but not compiled: {missing:?}");
    // Distinct entries, and the registry covers every kernel a file defines (none unused).
    let names: std::collections::HashSet<_> = Kernel::ALL.iter().map(|k| k.entry()).collect();
    assert_eq!(names.len(), Kernel::ALL.len());
    let unused: Vec<_> = entries
        .iter()
        .flatten()
        .filter(|e| !names.contains(e.as_str()))
        .collect();
    assert!(unused.is_empty(), "compiled but never launched: {unused:?}");
}

/// The k-split rule against the H200 sweep of 2026-12-04 (`wavecp bench kernels --sweep`,
/// docs/gpu-runs.md): the twelve dense GEMMs of the paper models (forward, weight and input
/// gradients at 32, 64, 128 and 336 channels, batch 4), their times in µs at splits 1, 2, 4,
/// 8 and 16 with the tile height the plan takes. On 132 SMs the rule's split is within 10 %
/// of the fastest on every shape and within 2 % on average. The rule it replaced (enough
/// splits for one wave, rounded up) took 6 splits at 336 channels (0.774 ms against 0.564)
/// and fails this.
#[test]
fn the_k_split_rule_follows_the_h200_sweep() {
    let bm = |m: usize| {
        if m <= 32 {
            32
        } else if m <= 64 {
            64
        } else {
            128
        }
    };
    #[rustfmt::skip]
    let sweep: [(usize, usize, usize, [f64; 5]); 12] = [
        (32, 32768, 864, [551., 576., 576., 602., 671.]),
        (32, 32768, 864, [550., 576., 576., 601., 670.]),
        (32, 864, 32768, [2747., 1382., 695., 512., 515.]),
        (64, 8192, 1728, [368., 385., 387., 403., 429.]),
        (64, 8192, 1728, [369., 386., 387., 402., 428.]),
        (64, 1728, 8192, [857., 433., 334., 338., 313.]),
        (128, 2048, 3456, [702., 365., 290., 295., 315.]),
        (128, 2048, 3456, [702., 365., 291., 295., 315.]),
        (128, 3456, 2048, [342., 281., 286., 273., 297.]),
        (336, 512, 9072, [1834., 927., 731., 590., 564.]),
        (336, 512, 9072, [1835., 928., 732., 590., 563.]),
        (336, 9072, 512, [516., 505., 551., 651., 845.]),
    ];
    let mut ratios = Vec::new();
    for (m, n, k, t) in sweep {
        let tiles = m.div_ceil(bm(m)) * n.div_ceil(128) * 4;
        let s = Gpu::k_splits(tiles, k, 2 * 132);
        let i = [1, 2, 4, 8, 16]
            .iter()
            .position(|&x| x == s)
            .expect("a power of two");
        let best = t.iter().cloned().fold(f64::INFINITY, f64::min);
        ratios.push(t[i] / best);
        assert!(
            t[i] / best < 1.1,
            "m {m} n {n} k {k}: {s} splits, {} µs against {best}",
            t[i]
        );
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    assert!(mean < 1.02, "{ratios:?}");
    // A GEMM of 4 tiles and k = 32 768 (a 1 × 1 projection's weight gradient in a CP layer,
    // 8 × 64 × 64 voxels): one full wave of slices, not 16 (capped at 16, the CP layer's
    // backward pass at 64 channels took 0.75 ms on the H200 against 0.51 ms).
    assert_eq!(Gpu::k_splits(4, 32768, 264), 66);
    // Never a slice under 128 k values; a GEMM that fills the device is not split.
    assert_eq!(Gpu::k_splits(4, 1000, 264), 4);
    assert_eq!(Gpu::k_splits(2000, 1 << 20, 264), 1);
}
