//! A submodel job (`[coupling] mode = "submodel"`) stepped through the C ABI: the shipped job
//! (jobs/submodel.toml, its trained network) at 200 × 200 outer cells. The host writes output
//! where `wavecp solve` does (every 46 steps) while advancing in uneven pieces (7 steps, cut
//! at the output steps): every output step of its file is bitwise `wavecp solve`'s, the window
//! count is the run's, and a state saved mid-run (at the first piece's end past step 150)
//! continues bit for bit in a second simulation, in one advance. The host sees the zone's 51 × 51 nodes; the boundary is the
//! network's, so boundary calls are refused.

use std::ffi::CString;
use wavecp::comm::Serial;
use wavecp_c::*;

mod common;
use common::{python, repo, same_bits, steps_of};

fn field(s: *mut wavecp_sim) -> Vec<f64> {
    let mut n = 0;
    // SAFETY: valid pointers (the header's contract).
    unsafe {
        assert_eq!(wavecp_sim_num_nodes(s, &mut n), WAVECP_OK);
        let mut u = vec![0.0; n as usize];
        assert_eq!(wavecp_sim_get_field(s, u.as_mut_ptr(), n), WAVECP_OK);
        u
    }
}

#[test]
fn a_submodel_job_stepped_by_a_host_is_wavecp_solve_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let job = repo().join("jobs/submodel.toml");
    let small = ["mesh.generate.nx=200", "mesh.generate.ny=200"];
    let out = d.join("solve.vtkhdf");
    let mut sets: Vec<String> = small.iter().map(|s| s.to_string()).collect();
    sets.push(format!("output.path=\"{}\"", out.display()));
    let cfg = wavecp::config::Config::load(&job, &sets).unwrap();
    let opts = wavecp::coupling::subrun::SubmodelOptions::default();
    let sum = wavecp::coupling::subrun::run_submodel(&cfg, job.parent().unwrap(), &opts, &Serial)
        .unwrap();
    let reference = steps_of(&out);

    let cjob = CString::new(job.to_str().unwrap()).unwrap();
    let host_out = d.join("host.vtkhdf");
    let mut host_sets: Vec<CString> = small.iter().map(|s| CString::new(*s).unwrap()).collect();
    host_sets.push(CString::new(format!("output.path=\"{}\"", host_out.display())).unwrap());
    let make = |sets: &[CString]| {
        let mut s = std::ptr::null_mut();
        // SAFETY: valid pointers (the header's contract), here and below.
        unsafe {
            assert_eq!(wavecp_sim_create(cjob.as_ptr(), &mut s), WAVECP_OK);
            for kv in sets {
                assert_eq!(wavecp_sim_set(s, kv.as_ptr()), WAVECP_OK);
            }
        }
        s
    };
    let a = make(&host_sets);
    let (mut last, mut n) = (0i64, 0i64);
    let (mut saved, mut saved_at) = (Vec::new(), 0i64);
    unsafe {
        assert_eq!(wavecp_sim_num_steps(a, &mut last), WAVECP_OK);
        assert_eq!(last as usize, sum.steps);
        assert_eq!(wavecp_sim_num_nodes(a, &mut n), WAVECP_OK);
        assert_eq!(n, 51 * 51);
        let tag = CString::new("left").unwrap();
        let mut nb = 0;
        let rc = wavecp_sim_boundary_nodes(a, tag.as_ptr(), std::ptr::null_mut(), 0, &mut nb);
        assert_eq!(rc, WAVECP_ERR_ARG);
        assert_eq!(wavecp_sim_write_output(a), WAVECP_OK);
        let mut step = 0i64;
        while step < last {
            let next_out = (step / 46 + 1) * 46;
            let k = 7.min(next_out - step).min(last - step);
            assert_eq!(wavecp_sim_advance(a, k), WAVECP_OK);
            step += k;
            if step % 46 == 0 {
                assert_eq!(wavecp_sim_write_output(a), WAVECP_OK);
            }
            if saved.is_empty() && step >= 150 {
                let mut b = 0;
                assert_eq!(wavecp_sim_state_size(a, &mut b), WAVECP_OK);
                saved = vec![0u8; b as usize];
                assert_eq!(wavecp_sim_save_state(a, saved.as_mut_ptr(), b), WAVECP_OK);
                saved_at = step;
            }
        }
        let (mut w, mut ind) = (0i64, 0.0);
        assert_eq!(wavecp_sim_submodel_windows(a, &mut w, &mut ind), WAVECP_OK);
        assert_eq!(w as usize, sum.windows);
        assert!(ind.is_finite() && ind > 0.0, "latest indicator {ind}");
        let mut n = 0i64;
        assert_eq!(
            wavecp_sim_summary_json(a, std::ptr::null_mut(), 0, &mut n),
            WAVECP_OK
        );
        let mut buf = vec![0u8; n as usize + 1];
        assert_eq!(
            wavecp_sim_summary_json(a, buf.as_mut_ptr().cast(), n + 1, &mut n),
            WAVECP_OK
        );
        let v: serde_json::Value = serde_json::from_slice(&buf[..n as usize]).unwrap();
        assert_eq!(v["mode"], "submodel");
        assert_eq!(v["submodel"]["windows"].as_u64(), Some(w as u64));
        let si = v["submodel"]["indicator"].as_f64().unwrap();
        assert!((si - ind).abs() <= 1e-14 * ind, "{si} vs {ind}");
        assert_eq!(wavecp_sim_finish(a), WAVECP_OK);
    }
    assert!(
        same_bits(&steps_of(&host_out), &reference),
        "the host's output steps differ from wavecp solve's"
    );
    let final_a = field(a);
    // From the state saved inside a window, in one advance, in a second simulation.
    let b = make(
        &small
            .iter()
            .map(|s| CString::new(*s).unwrap())
            .chain([CString::new("output.path=\"\"").unwrap()])
            .collect::<Vec<_>>(),
    );
    unsafe {
        let rc = wavecp_sim_load_state(b, saved.as_ptr(), saved.len() as i64);
        assert_eq!(rc, WAVECP_OK);
        assert_eq!(wavecp_sim_advance(b, last - saved_at), WAVECP_OK);
    }
    assert!(
        same_bits(&field(b), &final_a),
        "the restored submodel run differs"
    );
    unsafe {
        wavecp_sim_destroy(a);
        wavecp_sim_destroy(b);
    }
}

/// From Python: the same windows after the same steps as through the C ABI directly.
#[test]
fn the_python_bindings_report_the_submodels_windows() {
    let job = repo().join("jobs/submodel.toml");
    let sets = [
        "mesh.generate.nx=200",
        "mesh.generate.ny=200",
        "output.path=\"\"",
    ];
    let cjob = CString::new(job.to_str().unwrap()).unwrap();
    let mut s = std::ptr::null_mut();
    let (mut w, mut ind) = (0i64, 0.0);
    // SAFETY: valid pointers (the header's contract).
    unsafe {
        assert_eq!(wavecp_sim_create(cjob.as_ptr(), &mut s), WAVECP_OK);
        for kv in sets {
            let kv = CString::new(kv).unwrap();
            assert_eq!(wavecp_sim_set(s, kv.as_ptr()), WAVECP_OK);
        }
        assert_eq!(wavecp_sim_advance(s, 100), WAVECP_OK);
        assert_eq!(wavecp_sim_submodel_windows(s, &mut w, &mut ind), WAVECP_OK);
        wavecp_sim_destroy(s);
    }
    let code = format!(
        "import wavecp\ns = wavecp.Sim({:?}, set={:?})\ns.advance(100)\nw, i = s.submodel_windows()\nprint(w, repr(i))",
        job.to_str().unwrap(),
        sets
    );
    let out = python().args(["-c", &code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    assert_eq!(it.next().unwrap().parse::<i64>().unwrap(), w);
    assert!(w >= 1);
    // repr() writes the shortest string that reads back to the same double.
    let v: f64 = it.next().unwrap().parse().unwrap();
    assert_eq!(v.to_bits(), ind.to_bits(), "indicator {v} vs {ind}");
}
