//! A hybrid job (`[coupling]`) stepped through the C ABI: the demo's job with the shipped
//! network. Advanced in one call, or in calls that end on window boundaries, the host gets
//! bitwise the field `wavecp solve` ends the job with, and the same windows accepted (the
//! demo accepts some: the comparison is not of the FE run with itself); advanced step by step,
//! no window fits in a call, so it is the FE-only run bit for bit; a state saved between
//! windows continues bit for bit in a second simulation.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use wavecp::comm::Serial;
use wavecp_c::*;

mod common;
use common::{python, repo, same_bits};

fn model() -> PathBuf {
    repo().join("models/demo_cp.safetensors")
}

/// The demo's hybrid job, writing its output to `out` ("" for none).
fn job(dir: &Path, name: &str, out: &str, extra: &str) -> PathBuf {
    let cfg = wavecp::coupling::solve::demo_config(&model(), &[format!("output.path=\"{out}\"")])
        .unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("{}{extra}", toml::to_string(&cfg).unwrap())).unwrap();
    p
}

fn c(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

struct Host(*mut wavecp_sim);

impl Host {
    fn new(job: &Path, sets: &[&str]) -> Host {
        let mut s = std::ptr::null_mut();
        // SAFETY: valid pointers (the header's contract), here and below.
        unsafe {
            assert_eq!(wavecp_sim_create(c(job).as_ptr(), &mut s), WAVECP_OK);
            for kv in sets {
                let kv = CString::new(*kv).unwrap();
                assert_eq!(wavecp_sim_set(s, kv.as_ptr()), WAVECP_OK);
            }
        }
        Host(s)
    }
    fn advance(&self, n: i64) {
        assert_eq!(unsafe { wavecp_sim_advance(self.0, n) }, WAVECP_OK);
    }
    fn steps(&self) -> i64 {
        let mut n = 0;
        assert_eq!(unsafe { wavecp_sim_num_steps(self.0, &mut n) }, WAVECP_OK);
        n
    }
    fn field(&self) -> Vec<f64> {
        let mut n = 0;
        assert_eq!(unsafe { wavecp_sim_num_nodes(self.0, &mut n) }, WAVECP_OK);
        let mut u = vec![0.0; n as usize];
        assert_eq!(
            unsafe { wavecp_sim_get_field(self.0, u.as_mut_ptr(), n) },
            WAVECP_OK
        );
        u
    }
    fn windows(&self) -> (i64, i64) {
        let (mut a, mut r, mut s) = (0, 0, 0);
        let rc = unsafe { wavecp_sim_hybrid_windows(self.0, &mut a, &mut r, &mut s) };
        assert_eq!(rc, WAVECP_OK);
        (a, r)
    }
    fn state(&self) -> Vec<u8> {
        let mut n = 0;
        assert_eq!(unsafe { wavecp_sim_state_size(self.0, &mut n) }, WAVECP_OK);
        let mut b = vec![0u8; n as usize];
        assert_eq!(
            unsafe { wavecp_sim_save_state(self.0, b.as_mut_ptr(), n) },
            WAVECP_OK
        );
        b
    }
    fn load(&self, b: &[u8]) {
        let rc = unsafe { wavecp_sim_load_state(self.0, b.as_ptr(), b.len() as i64) };
        assert_eq!(rc, WAVECP_OK);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        unsafe { wavecp_sim_destroy(self.0) };
    }
}

#[test]
fn a_hybrid_job_stepped_by_a_host_is_wavecp_solve_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `wavecp solve` of the job: its last output step is the final field.
    let out = d.join("solve.vtkhdf");
    let solve_job = job(d, "solve.toml", out.to_str().unwrap(), "");
    let cfg = wavecp::config::Config::load(&solve_job, &[]).unwrap();
    let (_, hy) =
        wavecp::coupling::solve::run_hybrid(&cfg, d, &Default::default(), &Serial).unwrap();
    let steps = hdf5::File::open(&out).unwrap();
    let u = steps
        .dataset("VTKHDF/PointData/u")
        .unwrap()
        .read_raw::<f64>()
        .unwrap();
    let reference = &u[u.len() - 256..];
    assert!(
        hy.windows_accepted >= 1,
        "the demo accepted no window: nothing to compare"
    );

    let host_job = job(d, "host.toml", "", "");
    let whole = Host::new(&host_job, &[]);
    let last = whole.steps();
    whole.advance(last);
    assert!(
        same_bits(&whole.field(), reference),
        "one advance: field differs from wavecp solve's"
    );
    assert_eq!(
        whole.windows(),
        (hy.windows_accepted as i64, hy.windows_rejected as i64)
    );

    // Calls ending on window boundaries (warm-up of 14 steps, windows of 16), with the state
    // saved after the second window and continued in another simulation.
    let chunked = Host::new(&host_job, &[]);
    chunked.advance(14);
    chunked.advance(16);
    chunked.advance(16);
    let saved = chunked.state();
    let mut done = 14 + 32;
    while done < last {
        let k = 16.min(last - done);
        chunked.advance(k);
        done += k;
    }
    assert!(
        same_bits(&chunked.field(), reference),
        "window-sized advances differ"
    );
    let resumed = Host::new(&host_job, &[]);
    resumed.load(&saved);
    resumed.advance(last - 46);
    assert!(
        same_bits(&resumed.field(), reference),
        "the restored hybrid run differs"
    );
    assert_eq!(resumed.windows(), whole.windows());

    // Step by step no window fits: the FE-only run.
    let stepped = Host::new(&host_job, &[]);
    for _ in 0..last {
        stepped.advance(1);
    }
    assert_eq!(stepped.windows().0, 0);
    let fe = Host::new(&job(d, "fe.toml", "", ""), &["coupling.tolerance=0"]);
    fe.advance(last);
    assert!(same_bits(&stepped.field(), &fe.field()));
    assert!(
        !same_bits(&stepped.field(), reference),
        "the hybrid run equals the FE one"
    );
}

/// The same from Python (examples/python/hybrid.py, window by window): the window counts and
/// the final field's norm of the C ABI run above.
#[test]
fn the_python_hybrid_host_takes_the_same_windows() {
    let dir = tempfile::tempdir().unwrap();
    let host_job = job(dir.path(), "host.toml", "", "");
    let h = Host::new(&host_job, &[]);
    h.advance(h.steps());
    let norm = h.field().iter().map(|v| v * v).sum::<f64>().sqrt();
    let out = python()
        .arg(repo().join("examples/python/hybrid.py"))
        .arg(&host_job)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (a, r) = h.windows();
    assert_eq!(
        (v["accepted"].as_i64(), v["rejected"].as_i64()),
        (Some(a), Some(r))
    );
    assert!(a >= 1);
    let pn = v["norm"].as_f64().unwrap();
    assert!((pn - norm).abs() <= 1e-12 * norm, "{pn} vs {norm}");
}
