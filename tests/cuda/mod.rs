//! The CUDA path where the CPU can check it: every kernel compiles with NVRTC (the PyPI wheel on
//! CPU-only machines), a broken one is a readable error, and the device report is clear without
//! a GPU. The kernel-vs-CPU parity tests need a device: without one they print
//! "skipped: no CUDA device" and pass, unless WAVECP_REQUIRE_CUDA=1 makes that a failure.

mod bench;
mod compile;
mod conv;
mod elementwise;
mod gemm;
mod host;
#[cfg(feature = "hdf5")]
mod hybrid;
mod training;

use host::HostOps;
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

/// Error bound of a sum of `terms` products evaluated in two different orders (both within
/// `terms·ε·Σ|a·b|` of the exact value), plus a floor for sums that cancel to zero.
fn order_tol(terms: usize, abs_sum: f64) -> f64 {
    2.0 * terms as f64 * f32::EPSILON as f64 * abs_sum + 1e-30
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
