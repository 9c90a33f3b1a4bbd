//! The C ABI of wavecp (`libwavecp_c`, declared by `include/wavecp.h`, which cbindgen
//! generates from this crate): simulations behind opaque handles that a host program (C, C++,
//! Fortran through `include/wavecp.f90`, Python through `python/wavecp`) creates from a job
//! file, steps, reads and writes.
//!
//! ```text
//! status.rs    the status codes, the calling thread's last error, no panic across the boundary
//! registry.rs  live handles by id (a destroyed or forged handle is an error, not a crash)
//! sim.rs       wavecp_sim_*: create (serial or on the host's MPI communicator), set, advance,
//!              fields, boundary values, receivers, saved states, output
//! net.rs       wavecp_net_*: a trained network forecasting frames at the host's vertices
//! ```
//!
//! Every function returns a status code (`WAVECP_OK` = 0) except `wavecp_abi_version`,
//! `wavecp_last_error`, `wavecp_status_name` and `wavecp_sim_destroy`. The contract (call
//! order, collectives, thread safety) is written in the header's preamble
//! (`capi/cbindgen.toml`) and in the README ("Calling wavecp from your code").

// Every entry point takes raw pointers whose contract (NULL or valid for the length given) the
// header states once, in its preamble; the helpers in sim.rs check NULL and lengths.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

mod net;
mod registry;
mod sim;
mod status;

pub use net::*;
pub use sim::*;
pub use status::*;

/// The ABI's major version: changes when a declaration changes incompatibly.
pub const WAVECP_ABI_MAJOR: u32 = 1;
/// The ABI's minor version: changes when functions are added.
pub const WAVECP_ABI_MINOR: u32 = 0;
/// The ABI's patch version.
pub const WAVECP_ABI_PATCH: u32 = 0;

/// The ABI version of the loaded library as `major * 10000 + minor * 100 + patch`: a host
/// compiled against `WAVECP_ABI_MAJOR` checks `wavecp_abi_version() / 10000` equals it.
#[no_mangle]
pub extern "C" fn wavecp_abi_version() -> u32 {
    WAVECP_ABI_MAJOR * 10000 + WAVECP_ABI_MINOR * 100 + WAVECP_ABI_PATCH
}
