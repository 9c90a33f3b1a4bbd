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
    /// `wavecp_sim_summary_json`, asked for its size first.
    fn summary(&self) -> serde_json::Value {
        let mut n = -1;
        let rc = unsafe { wavecp_sim_summary_json(self.0, std::ptr::null_mut(), 0, &mut n) };
        assert_eq!(rc, WAVECP_OK);
        let mut buf = vec![0u8; n as usize + 1];
        let mut m = -1;
        let rc = unsafe { wavecp_sim_summary_json(self.0, buf.as_mut_ptr().cast(), n + 1, &mut m) };
        assert_eq!((rc, m), (WAVECP_OK, n));
        assert_eq!(buf[n as usize], 0);
        serde_json::from_slice(&buf[..n as usize]).unwrap()
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
    summary_is_solves(&whole.summary(), &hy, last);

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

/// The JSON summary of a hosted hybrid run advanced to the end against `wavecp solve`'s: the
/// same windows with the same scores, threshold and out-of-range list.
fn summary_is_solves(
    v: &serde_json::Value,
    hy: &wavecp::coupling::hybrid::HybridSummary,
    last: i64,
) {
    assert_eq!(v["mode"], "hybrid");
    assert_eq!(
        (v["step"].as_i64(), v["job_steps"].as_i64()),
        (Some(last), Some(last))
    );
    assert_eq!(v["finished"], false);
    let h = &v["hybrid"];
    let count = |k: &str| h[k].as_u64().unwrap() as usize;
    assert_eq!(
        (
            count("windows_accepted"),
            count("windows_rejected"),
            count("steps_surrogate")
        ),
        (hy.windows_accepted, hy.windows_rejected, hy.steps_surrogate)
    );
    let windows = h["windows"].as_array().unwrap();
    assert_eq!(windows.len(), hy.windows.len());
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-14 * b.abs();
    for (w, (score, accepted)) in windows.iter().zip(&hy.windows) {
        assert_eq!(w[1].as_bool(), Some(*accepted));
        match score {
            Some(s) => assert!(near(w[0].as_f64().unwrap(), *s), "{w} vs {s}"),
            None => assert!(w[0].is_null()),
        }
    }
    match hy.indicator_threshold {
        Some(t) => assert!(near(h["indicator_threshold"].as_f64().unwrap(), t)),
        None => assert!(h["indicator_threshold"].is_null()),
    }
    // Absent when empty, as in `wavecp solve --json`.
    let listed = h
        .get("out_of_range")
        .map_or(0, |o| o.as_array().unwrap().len());
    assert_eq!(listed, hy.out_of_range.len());
}

/// The demo's job on a 31 × 31 mesh at a tolerance of 0.1 with the hand-back check, where the
/// hand-back loses 7-10 % of the field: a host charges the loss to the tolerance as `wavecp
/// solve` does (the same windows, scores and field), and `coupling.handback_budget = false`
/// set through the ABI decides otherwise.
#[test]
fn a_host_charges_the_hand_back_loss_as_wavecp_solve_does() {
    let dir = tempfile::tempdir().unwrap();
    let sets: Vec<String> = [
        "output.path=\"\"",
        "mesh.generate.nx=30",
        "mesh.generate.ny=30",
        "coupling.tolerance=0.1",
        "coupling.handback_check=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = wavecp::coupling::solve::demo_config(&model(), &sets).unwrap();
    let p = dir.path().join("fine.toml");
    std::fs::write(&p, toml::to_string(&cfg).unwrap()).unwrap();
    let cfg = wavecp::config::Config::load(&p, &[]).unwrap();
    let (run, hy) =
        wavecp::coupling::solve::run_hybrid(&cfg, dir.path(), &Default::default(), &Serial)
            .unwrap();
    assert!(hy.handback_refused > 0, "{:?}", hy.handback_losses);
    let host = Host::new(&p, &[]);
    let last = host.steps();
    assert_eq!(last as usize, run.steps);
    host.advance(last);
    summary_is_solves(&host.summary(), &hy, last);
    let unbudgeted = Host::new(&p, &["coupling.handback_budget=false"]);
    unbudgeted.advance(last);
    let (v, w) = (unbudgeted.summary(), host.summary());
    assert_ne!(v["hybrid"]["windows"], w["hybrid"]["windows"]);
    assert!(!same_bits(&unbudgeted.field(), &host.field()));
}

/// `wavecp_sim_summary_json` on a job without `[coupling]` and with a buffer too small.
#[test]
fn the_summary_names_the_mode_and_refuses_a_short_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        wavecp::coupling::solve::demo_config(&model(), &["output.path=\"\"".into()]).unwrap();
    cfg.coupling = None;
    let p = dir.path().join("fe.toml");
    std::fs::write(&p, toml::to_string(&cfg).unwrap()).unwrap();
    let fe = Host::new(&p, &[]);
    fe.advance(10);
    let v = fe.summary();
    assert_eq!(
        (v["mode"].as_str(), v["step"].as_i64()),
        (Some("fe"), Some(10))
    );
    let t = v["time"].as_f64().unwrap();
    assert!((t - 10.0 * v["dt"].as_f64().unwrap()).abs() < 1e-12, "{v}");
    assert!(
        v.get("hybrid").is_none() && v.get("submodel").is_none(),
        "{v}"
    );
    let mut n = -1;
    let mut buf = [7u8; 8];
    // SAFETY: 8 writable bytes and an int64.
    let rc = unsafe { wavecp_sim_summary_json(fe.0, buf.as_mut_ptr().cast(), 8, &mut n) };
    assert_eq!(rc, WAVECP_ERR_ARG);
    assert!(n > 8 && buf == [7u8; 8], "{n} {buf:?}");
    let msg = unsafe { std::ffi::CStr::from_ptr(wavecp_last_error()) }.to_string_lossy();
    assert!(msg.contains("capacity = 8"), "{msg}");
    let rc = unsafe { wavecp_sim_summary_json(fe.0, buf.as_mut_ptr().cast(), -1, &mut n) };
    assert_eq!(rc, WAVECP_ERR_ARG);
    let rc =
        unsafe { wavecp_sim_summary_json(fe.0, buf.as_mut_ptr().cast(), 8, std::ptr::null_mut()) };
    assert_eq!(rc, WAVECP_ERR_NULL);
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
    // Its summary's counts are the C call's.
    let sm = &v["summary"]["hybrid"];
    assert_eq!(
        (
            sm["windows_accepted"].as_i64(),
            sm["windows_rejected"].as_i64()
        ),
        (Some(a), Some(r))
    );
    assert_eq!(v["summary"]["mode"], "hybrid");
    let pn = v["norm"].as_f64().unwrap();
    assert!((pn - norm).abs() <= 1e-12 * norm, "{pn} vs {norm}");
}
