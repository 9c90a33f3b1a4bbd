//! Status codes, the calling thread's last error message, and the guard every entry point
//! runs in: a Rust panic becomes `WAVECP_ERR_INTERNAL` with its message, never an unwind
//! into C.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const WAVECP_OK: c_int = 0;
/// A pointer argument is NULL.
pub const WAVECP_ERR_NULL: c_int = 1;
/// The handle is not a live simulation (never created, or destroyed).
pub const WAVECP_ERR_HANDLE: c_int = 2;
/// The call is not allowed now (e.g. `wavecp_sim_set` after the simulation was built, or any
/// change after `wavecp_sim_finish`).
pub const WAVECP_ERR_ORDER: c_int = 3;
/// A length does not match (a buffer too small, a field of the wrong size).
pub const WAVECP_ERR_SIZE: c_int = 4;
/// A bad argument: a negative count, an unknown boundary tag, a string that is not UTF-8, a
/// value that is not finite, a saved state of another job.
pub const WAVECP_ERR_ARG: c_int = 5;
/// The job is invalid (unknown key, impossible value, unreadable mesh...): the message names the
/// key.
pub const WAVECP_ERR_JOB: c_int = 6;
/// MPI is unavailable: not initialised by the host, a bad communicator, or a library built
/// without MPI.
pub const WAVECP_ERR_MPI: c_int = 7;
/// The simulation failed: the field is not finite, the energy overflows, an output file could
/// not be written.
pub const WAVECP_ERR_RUN: c_int = 8;
/// A bug in wavecp (a caught panic); the handle it happened in may no longer be used.
pub const WAVECP_ERR_INTERNAL: c_int = 9;

/// A failed call: its status code and message.
pub(crate) struct Failure {
    pub code: c_int,
    pub msg: String,
}

impl Failure {
    pub fn new(code: c_int, msg: impl Into<String>) -> Self {
        Failure {
            code,
            msg: msg.into(),
        }
    }
}

impl From<wavecp::sim::DriverError> for Failure {
    fn from(e: wavecp::sim::DriverError) -> Self {
        use wavecp::sim::DriverError as E;
        let code = match &e {
            E::Config(_) | E::Mesh(_) | E::Partition(_) | E::Threads(_) => WAVECP_ERR_JOB,
            E::Invalid { .. } => WAVECP_ERR_ARG,
            E::Solver(_) | E::Output(_) | E::EnergyOverflow { .. } | E::OtherRank(_) => {
                WAVECP_ERR_RUN
            }
        };
        Failure::new(code, e.to_string())
    }
}

impl From<wavecp::coupling::CouplingError> for Failure {
    fn from(e: wavecp::coupling::CouplingError) -> Self {
        match e {
            wavecp::coupling::CouplingError::Simulation(d) => d.into(),
            other => Failure::new(WAVECP_ERR_ARG, other.to_string()),
        }
    }
}

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

fn remember(msg: &str) {
    // A message with an interior NUL keeps what comes before it.
    let end = msg.find('\0').unwrap_or(msg.len());
    let c = CString::new(&msg[..end]).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = c);
}

/// Runs an entry point's body: its status code, with the message of a failure (or of a
/// panic, caught here) kept for `wavecp_last_error`.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Failure>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => WAVECP_OK,
        Ok(Err(e)) => {
            remember(&e.msg);
            e.code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            remember(&format!("internal error in wavecp (please report): {what}"));
            WAVECP_ERR_INTERNAL
        }
    }
}

/// The message of the calling thread's last failed call (an empty string if none failed).
/// The pointer stays valid until the next failing call on this thread. Thread-safe.
#[no_mangle]
pub extern "C" fn wavecp_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

/// The name of a status code (`"WAVECP_ERR_ORDER"`), or `"unknown status"`: a static string.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn wavecp_status_name(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        WAVECP_OK => c"WAVECP_OK",
        WAVECP_ERR_NULL => c"WAVECP_ERR_NULL",
        WAVECP_ERR_HANDLE => c"WAVECP_ERR_HANDLE",
        WAVECP_ERR_ORDER => c"WAVECP_ERR_ORDER",
        WAVECP_ERR_SIZE => c"WAVECP_ERR_SIZE",
        WAVECP_ERR_ARG => c"WAVECP_ERR_ARG",
        WAVECP_ERR_JOB => c"WAVECP_ERR_JOB",
        WAVECP_ERR_MPI => c"WAVECP_ERR_MPI",
        WAVECP_ERR_RUN => c"WAVECP_ERR_RUN",
        WAVECP_ERR_INTERNAL => c"WAVECP_ERR_INTERNAL",
        _ => c"unknown status",
    };
    s.as_ptr()
}
