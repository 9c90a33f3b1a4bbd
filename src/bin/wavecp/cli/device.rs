//! `wavecp device`: what this machine offers for the CUDA path, and the kernels as PTX files.

use anyhow::Result;

#[derive(clap::Args)]
pub struct DeviceArgs {
    #[arg(long)]
    pub json: bool,
    /// Also compile every kernel with NVRTC (no GPU needed) and write DIR/<file>.ptx, for
    /// `ptxas -v` register and spill reports (scripts/ptxas-report).
    #[arg(long, value_name = "DIR")]
    pub emit_ptx: Option<std::path::PathBuf>,
    /// Architecture for --emit-ptx.
    #[arg(long, default_value = "compute_90")]
    pub arch: String,
}

pub fn run(a: DeviceArgs) -> Result<()> {
    match a.emit_ptx {
        Some(dir) => emit_ptx_files(&dir, &a.arch),
        None => device(a.json),
    }
}

#[cfg(feature = "cuda")]
fn device(json: bool) -> Result<()> {
    let r = wavecp::cuda::probe();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "CUDA driver library: {}; NVRTC: {}; driver version: {}",
        if r.driver_library {
            "found"
        } else {
            "not found"
        },
        r.nvrtc_version
            .map_or("not found".into(), |(a, b)| format!("{a}.{b}")),
        r.driver_version
            .map_or("-".into(), |v| format!("{}.{}", v / 1000, (v % 1000) / 10))
    );
    for d in &r.devices {
        let peak = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.1} {unit}"));
        println!(
            "device {}: {} (compute {}.{}, {} MiB; nominal peaks {} FP32, {} DRAM)",
            d.ordinal,
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.memory_mib,
            peak(d.peaks.fp32_tflops, "TFLOP/s"),
            peak(d.peaks.dram_gbs, "GB/s")
        );
        if let Some(k) = &d.kernels {
            let what = if k.starts_with("sm_") {
                "machine code from NVRTC"
            } else {
                "PTX, compiled by the driver on loading"
            };
            println!("  kernels: {k} ({what})");
        }
    }
    println!(
        "kernel cache: {}",
        r.kernel_cache
            .as_deref()
            .unwrap_or("off (WAVECP_KERNEL_CACHE=off, or no HOME)")
    );
    match &r.problem {
        Some(p) => println!("CUDA unusable: {p}"),
        None => println!("CUDA usable"),
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn device(_: bool) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}

#[cfg(feature = "cuda")]
fn emit_ptx_files(dir: &std::path::Path, arch: &str) -> Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let arch: &'static str = Box::leak(arch.to_string().into_boxed_str());
    for (name, src) in wavecp::cuda::KERNELS {
        let ptx = wavecp::cuda::compile(name, src, arch)?;
        let path = dir.join(format!("{name}.ptx"));
        std::fs::write(&path, ptx.to_src())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn emit_ptx_files(_: &std::path::Path, _: &str) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `cuda` feature")
}
