//! `wavecp bench kernels`: rates against the roofline and the tiling sweep.

use super::*;

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
