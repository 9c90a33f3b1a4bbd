//! No panic crosses the C ABI: with the test hook `WAVECP_TEST_PANIC=1` every call on a
//! simulation panics inside wavecp; the host gets WAVECP_ERR_INTERNAL with the panic's message,
//! the handle is refused afterwards (its state may be half-updated), and the process lives on
//! to create and use nothing else wrongly. (Its own test binary: the hook is read once per
//! process.)

use std::ffi::{CStr, CString};
use wavecp_c::*;

#[test]
fn a_panic_inside_wavecp_is_an_error_code_not_an_unwind_into_the_host() {
    std::env::set_var("WAVECP_TEST_PANIC", "1");
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[mesh.generate]\nshape = \"quad\"\nnx = 4\nny = 4\n[time]\nend = 0.1\n[output]\npath = \"\"\n",
    )
    .unwrap();
    let job = CString::new(job.to_str().unwrap()).unwrap();
    let mut s = std::ptr::null_mut();
    // SAFETY: valid pointers throughout (the header's contract).
    unsafe {
        assert_eq!(wavecp_sim_create(job.as_ptr(), &mut s), WAVECP_OK);
        assert_eq!(wavecp_sim_advance(s, 1), WAVECP_ERR_INTERNAL);
        let msg = CStr::from_ptr(wavecp_last_error())
            .to_string_lossy()
            .into_owned();
        assert!(
            msg.contains("internal error") && msg.contains("WAVECP_TEST_PANIC"),
            "{msg}"
        );
        // The lock it panicked under is poisoned: the handle is refused, not trusted.
        let mut t = 0.0;
        std::env::remove_var("WAVECP_TEST_PANIC");
        assert_eq!(wavecp_sim_time(s, &mut t), WAVECP_ERR_INTERNAL);
        let msg = CStr::from_ptr(wavecp_last_error())
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains("destroy it"), "{msg}");
        wavecp_sim_destroy(s);
        assert_eq!(wavecp_sim_time(s, &mut t), WAVECP_ERR_HANDLE);
    }
}
