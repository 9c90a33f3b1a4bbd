//! Several simulations in one process, used from several threads at once: each gives the bits
//! it gives alone, and a failure's message belongs to the thread that failed (another thread's
//! `wavecp_last_error` does not see it).

use std::ffi::{CStr, CString};
use wavecp_c::*;

fn job(dir: &std::path::Path, nx: usize) -> CString {
    let p = dir.join(format!("job{nx}.toml"));
    std::fs::write(
        &p,
        format!(
            "[mesh.generate]\nshape = \"tri\"\nnx = {nx}\nny = {nx}\n\
             [[source]]\nposition = [0.4, 0.5]\nfrequency = 4.0\n\
             [time]\nend = 0.5\n[output]\npath = \"\"\n"
        ),
    )
    .unwrap();
    CString::new(p.to_str().unwrap()).unwrap()
}

/// Runs a job to its end through the C ABI; its final field.
fn run(job: &CStr) -> Vec<f64> {
    let mut s = std::ptr::null_mut();
    // SAFETY: every pointer passed is valid for the length given (the header's contract).
    unsafe {
        assert_eq!(wavecp_sim_create(job.as_ptr(), &mut s), WAVECP_OK);
        let (mut steps, mut n) = (0i64, 0i64);
        assert_eq!(wavecp_sim_num_steps(s, &mut steps), WAVECP_OK);
        assert_eq!(wavecp_sim_num_nodes(s, &mut n), WAVECP_OK);
        for _ in 0..steps {
            assert_eq!(wavecp_sim_advance(s, 1), WAVECP_OK);
        }
        let mut u = vec![0.0; n as usize];
        assert_eq!(wavecp_sim_get_field(s, u.as_mut_ptr(), n), WAVECP_OK);
        wavecp_sim_destroy(s);
        u
    }
}

fn last_error() -> String {
    // SAFETY: wavecp_last_error returns a NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(wavecp_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn simulations_in_threads_give_their_serial_bits_and_errors_stay_in_their_thread() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = [
        job(dir.path(), 24),
        job(dir.path(), 32),
        job(dir.path(), 24),
    ];
    let alone: Vec<Vec<f64>> = jobs.iter().map(|j| run(j)).collect();
    assert!(
        alone[0].iter().any(|v| v.abs() > 1e-4),
        "the source made no wave"
    );
    let together: Vec<Vec<f64>> = std::thread::scope(|sc| {
        let hs: Vec<_> = jobs.iter().map(|j| sc.spawn(move || run(j))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in alone.iter().zip(&together) {
        assert!(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    // A failure in one thread: its message there, nothing in a fresh thread.
    // SAFETY: NULL is a legal handle to pass: the call refuses it.
    let rc = unsafe { wavecp_sim_advance(std::ptr::null_mut(), 1) };
    assert_eq!(rc, WAVECP_ERR_NULL);
    assert!(last_error().contains("NULL"), "{}", last_error());
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "");
}
