//! Kernel compilation without a device: NVRTC for every architecture, machine code, the
//! on-disk cache, the device report, and the registry against the compiled PTX.

use super::*;

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
