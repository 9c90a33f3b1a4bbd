//! `wavecp_sim_*`: a job's simulation behind a handle. Created from a job file (serially or on
//! the host's MPI communicator), configured with `wavecp_sim_set` until it is built (by the
//! first call that needs the mesh), then stepped, read and written by the host; finished and
//! destroyed.

use crate::registry::{lock, Registry};
use crate::status::*;
use std::ffi::{c_char, c_int, CStr};
use std::path::{Path, PathBuf};
use wavecp::comm::{Comm, Serial};
use wavecp::config::Config;
use wavecp::coupling::hosted::{self, HostedRun};

/// A simulation, opaque to the host: only pointers to it are passed around.
#[allow(non_camel_case_types)]
pub struct wavecp_sim {
    _private: [u8; 0],
}

static SIMS: Registry<Sim> = Registry::new("wavecp_sim");

/// What a handle stands for: the job (file and overrides) and, once built, its simulation on
/// its communicator.
struct Sim {
    job: PathBuf,
    overrides: Vec<String>,
    /// Leaked for the life of the handle, since the simulation borrows it; freed in `drop`
    /// after the simulation.
    comm: &'static dyn Comm,
    /// The job's FE model, hybrid run or submodel run (`coupling::hosted::open`).
    hosted: Option<Box<dyn HostedRun + 'static>>,
}

// SAFETY: a `Sim` is reached only through its registry mutex, one thread at a time. What it
// holds is plain data, rayon's pool, the HDF5 writer (hdf5-metno serialises every HDF5 call
// through its own global lock) and a communicator (`Comm: Sync`; an MPI communicator is used
// under the thread level the host initialised MPI with: the header says so).
unsafe impl Send for Sim {}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut h) = self.hosted.take() {
            // Whatever was written stays readable under its final name; an error here has no
            // caller to go to but the log.
            if let Err(e) = h.finish() {
                tracing::error!("wavecp_sim_destroy: closing the output: {e}");
            }
        }
        let p = self.comm as *const dyn Comm as *mut dyn Comm;
        // SAFETY: `comm` came from `Box::leak` in `Sim::new`, the simulation that borrowed it
        // was dropped above, and nothing else holds it.
        drop(unsafe { Box::from_raw(p) });
    }
}

impl Sim {
    fn new(job: &Path, comm: Box<dyn Comm>) -> Result<Self, Failure> {
        init_logging();
        // Read and checked now, so a bad job is reported by the create call itself.
        check_job(job, &[])?;
        Ok(Sim {
            job: job.to_path_buf(),
            overrides: Vec::new(),
            comm: Box::leak(comm),
            hosted: None,
        })
    }

    /// The simulation, built on first use (collective on a communicator).
    fn built(&mut self) -> Result<&mut (dyn HostedRun + 'static), Failure> {
        if self.hosted.is_none() {
            let cfg = Config::load(&self.job, &self.overrides)
                .map_err(|e| Failure::new(WAVECP_ERR_JOB, e.to_string()))?;
            let base = self.job.parent().unwrap_or(Path::new("."));
            self.hosted = Some(hosted::open(&cfg, base, Some(&self.job), self.comm)?);
        }
        match self.hosted.as_deref_mut() {
            Some(h) => Ok(h),
            None => Err(Failure::new(
                WAVECP_ERR_INTERNAL,
                "simulation missing after build",
            )),
        }
    }

    /// The built simulation for a call that changes it: refused after `wavecp_sim_finish`.
    fn open(&mut self, call: &str) -> Result<&mut (dyn HostedRun + 'static), Failure> {
        let h = self.built()?;
        if h.is_finished() {
            return Err(Failure::new(
                WAVECP_ERR_ORDER,
                format!(
                    "{call} after wavecp_sim_finish: the simulation is finished; create a new one"
                ),
            ));
        }
        Ok(h)
    }
}

/// Reads and checks a job with its overrides.
fn check_job(job: &Path, overrides: &[String]) -> Result<(), Failure> {
    Config::load(job, overrides).map_err(|e| Failure::new(WAVECP_ERR_JOB, e.to_string()))?;
    Ok(())
}

/// `WAVECP_LOG=info` (any tracing filter) shows wavecp's log on stderr; silent otherwise.
fn init_logging() {
    if let Ok(filter) = std::env::var("WAVECP_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
}

/// Runs `f` on the simulation behind `s`.
fn with_sim(s: *const wavecp_sim, f: impl FnOnce(&mut Sim) -> Result<(), Failure>) -> c_int {
    guard(|| {
        let arc = SIMS.get(s as u64)?;
        let mut g = lock(&arc)?;
        if test_panic() {
            // The test hook's panic, inside the lock as a bug in `f` would be.
            panic!("WAVECP_TEST_PANIC is set");
        }
        f(&mut g)
    })
}

/// Test hook: with `WAVECP_TEST_PANIC=1` in the environment at the first call, every call on a
/// simulation panics inside wavecp (capi/tests/panic.rs checks the panic stays inside).
fn test_panic() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("WAVECP_TEST_PANIC").is_some_and(|v| v == "1"))
}

/// One value of the built simulation into `*out`.
fn query<T>(
    s: *const wavecp_sim,
    out: *mut T,
    what: &str,
    f: impl FnOnce(&dyn HostedRun) -> T,
) -> c_int {
    with_sim(s, |sim| {
        let v = f(sim.built()?);
        // SAFETY: `out` is NULL (refused) or a writable `T` (header contract).
        unsafe { put(out, v, what) }
    })
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::new(WAVECP_ERR_NULL, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|_| Failure::new(WAVECP_ERR_ARG, format!("{what} is not UTF-8")))
}

/// The length `n` a host passed, checked against what the call needs.
pub(crate) fn length(n: i64, expected: usize, what: &str) -> Result<usize, Failure> {
    if n < 0 {
        return Err(Failure::new(
            WAVECP_ERR_ARG,
            format!("{what}: negative length {n}"),
        ));
    }
    if n as u64 != expected as u64 {
        return Err(Failure::new(
            WAVECP_ERR_SIZE,
            format!("{what}: length {n} given, {expected} expected"),
        ));
    }
    Ok(expected)
}

/// A host array of `n` values to write.
///
/// # Safety
/// `p` is NULL or points to `n` writable values.
pub(crate) unsafe fn out_slice<'a, T>(
    p: *mut T,
    n: usize,
    what: &str,
) -> Result<&'a mut [T], Failure> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::new(WAVECP_ERR_NULL, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, `n` writable values by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// A host array of `n` values to read.
///
/// # Safety
/// `p` is NULL or points to `n` readable values.
pub(crate) unsafe fn in_slice<'a, T>(
    p: *const T,
    n: usize,
    what: &str,
) -> Result<&'a [T], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::new(WAVECP_ERR_NULL, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, `n` readable values by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// One value to write back.
///
/// # Safety
/// `p` is NULL or points to a writable `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::new(WAVECP_ERR_NULL, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

fn create(job: *const c_char, out: *mut *mut wavecp_sim, comm: Option<c_int>) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(Failure::new(WAVECP_ERR_NULL, "out is NULL"));
        }
        // SAFETY: `job` is a NUL-terminated string (header contract).
        let job = unsafe { text(job, "job_toml_path") }?;
        let comm: Box<dyn Comm> = match comm {
            None => Box::new(Serial),
            Some(f) => wavecp::comm::adopt(f).map_err(|e| Failure::new(WAVECP_ERR_MPI, e))?,
        };
        let sim = Sim::new(Path::new(job), comm)?;
        let id = SIMS.insert(sim);
        // SAFETY: `out` is non-NULL (checked) and writable (header contract).
        unsafe { put(out, id as *mut wavecp_sim, "out") }
    })
}

/// Creates a simulation of the job file `job_toml_path` on this process alone; `*out` gets
/// its handle. The job is read and checked now; the mesh is built by the first call that needs
/// it, so `wavecp_sim_set` may change the job until then.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_create(
    job_toml_path: *const c_char,
    out: *mut *mut wavecp_sim,
) -> c_int {
    create(job_toml_path, out, None)
}

/// As `wavecp_sim_create`, on the ranks of the host's MPI communicator `fortran_comm` (from C:
/// `MPI_Comm_c2f(comm)`). The host initialises MPI before and finalises it after destroying
/// every simulation; wavecp talks on a private duplicate of the communicator. Collective over
/// it, like every call marked collective below.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_create_mpi(
    job_toml_path: *const c_char,
    fortran_comm: c_int,
    out: *mut *mut wavecp_sim,
) -> c_int {
    create(job_toml_path, out, Some(fortran_comm))
}

/// Overrides one job key as `wavecp --set` does (`"time.end=0.5"`,
/// `"boundary.0.kind=external"`); only before the simulation is built (by the first advance,
/// query or output call). A bad key or value is refused and not kept.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_set(
    s: *mut wavecp_sim,
    key_equals_value: *const c_char,
) -> c_int {
    with_sim(s, |sim| {
        // SAFETY: a NUL-terminated string (header contract).
        let kv = unsafe { text(key_equals_value, "key_equals_value") }?;
        if sim.hosted.is_some() {
            return Err(Failure::new(
                WAVECP_ERR_ORDER,
                format!("wavecp_sim_set(\"{kv}\") after the simulation was built: set every key before the first advance, query or output call"),
            ));
        }
        let mut all = sim.overrides.clone();
        all.push(kv.to_string());
        check_job(&sim.job, &all)?;
        sim.overrides = all;
        Ok(())
    })
}

/// Advances `steps` time steps (collective).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_advance(s: *mut wavecp_sim, steps: i64) -> c_int {
    with_sim(s, |sim| {
        if steps < 0 {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                format!("steps = {steps} is negative"),
            ));
        }
        sim.open("wavecp_sim_advance")?.advance(steps as usize)?;
        Ok(())
    })
}

/// The simulated time now.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_time(s: *const wavecp_sim, t: *mut f64) -> c_int {
    query(s, t, "t", |h| h.simulation().time())
}

/// The time step.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_dt(s: *const wavecp_sim, dt: *mut f64) -> c_int {
    query(s, dt, "dt", |h| h.simulation().dt())
}

/// Steps done so far (`time = step * dt`).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_step(s: *const wavecp_sim, step: *mut i64) -> c_int {
    query(s, step, "step", |h| h.simulation().steps_done() as i64)
}

/// The job's number of steps (to `time.end`); the host may advance further.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_num_steps(s: *const wavecp_sim, n: *mut i64) -> c_int {
    query(s, n, "n", |h| h.job_steps() as i64)
}

/// Nodes owned by this rank: the length of every field array.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_num_nodes(s: *const wavecp_sim, n: *mut i64) -> c_int {
    query(s, n, "n", |h| h.node_ids().len() as i64)
}

/// The global (mesh file, 0-based) numbers of this rank's nodes, in field order.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_node_ids(s: *const wavecp_sim, ids: *mut i64, n: i64) -> c_int {
    with_sim(s, |sim| {
        let g = sim.built()?.node_ids();
        let n = length(n, g.len(), "node_ids")?;
        // SAFETY: `n` writable int64 (header contract).
        let out = unsafe { out_slice(ids, n, "ids") }?;
        for (o, &i) in out.iter_mut().zip(g) {
            *o = i as i64;
        }
        Ok(())
    })
}

/// Coordinates of this rank's nodes, `x0, y0, x1, y1, ...`; `n` is the number of nodes.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_coords(s: *const wavecp_sim, xy: *mut f64, n: i64) -> c_int {
    with_sim(s, |sim| {
        let c = sim.built()?.coords();
        let n = length(n, c.len(), "coords (nodes)")?;
        // SAFETY: `2 n` writable doubles (header contract).
        let out = unsafe { out_slice(xy, 2 * n, "xy") }?;
        for (o, p) in out.chunks_exact_mut(2).zip(c) {
            o.copy_from_slice(p);
        }
        Ok(())
    })
}

/// The field now at this rank's nodes.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_get_field(s: *const wavecp_sim, u: *mut f64, n: i64) -> c_int {
    with_sim(s, |sim| {
        let f = sim.built()?.simulation().u();
        let n = length(n, f.len(), "get_field")?;
        // SAFETY: `n` writable doubles (header contract).
        unsafe { out_slice(u, n, "u") }?.copy_from_slice(f);
        Ok(())
    })
}

/// The field one step earlier at this rank's nodes (with `wavecp_sim_get_field`, what
/// `wavecp_sim_set_field` takes).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_get_field_prev(
    s: *const wavecp_sim,
    u_prev: *mut f64,
    n: i64,
) -> c_int {
    with_sim(s, |sim| {
        let f = sim.built()?.simulation().u_prev();
        let n = length(n, f.len(), "get_field_prev")?;
        // SAFETY: `n` writable doubles (header contract).
        unsafe { out_slice(u_prev, n, "u_prev") }?.copy_from_slice(f);
        Ok(())
    })
}

/// Replaces both time levels (now and one step earlier) at this rank's nodes; the step stays.
/// Collective. Values must be finite.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_set_field(
    s: *mut wavecp_sim,
    u: *const f64,
    u_prev: *const f64,
    n: i64,
) -> c_int {
    with_sim(s, |sim| {
        let h = sim.open("wavecp_sim_set_field")?;
        let n = length(n, h.node_ids().len(), "set_field")?;
        // SAFETY: `n` readable doubles each (header contract).
        let (a, b) = unsafe { (in_slice(u, n, "u")?, in_slice(u_prev, n, "u_prev")?) };
        h.set_field(a, b)?;
        Ok(())
    })
}

/// The global ids of this rank's nodes on the boundary `tag` (a name or number of the job's
/// `[[boundary]]` sections). `*n` gets their count; `ids` (room for `cap`) gets them when
/// `cap >= *n` (`ids` may be NULL with `cap` 0 to ask for the count only).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_boundary_nodes(
    s: *const wavecp_sim,
    tag: *const c_char,
    ids: *mut i64,
    cap: i64,
    n: *mut i64,
) -> c_int {
    with_sim(s, |sim| {
        // SAFETY: a NUL-terminated string (header contract).
        let tag = unsafe { text(tag, "tag") }?;
        let nodes = sim.built()?.boundary_nodes(tag)?;
        // SAFETY: a writable int64 (header contract).
        unsafe { put(n, nodes.len() as i64, "n") }?;
        if cap < 0 {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                format!("cap = {cap} is negative"),
            ));
        }
        if cap == 0 && ids.is_null() {
            return Ok(());
        }
        if (cap as u64) < nodes.len() as u64 {
            return Err(Failure::new(
                WAVECP_ERR_SIZE,
                format!(
                    "boundary `{tag}` has {} nodes on this rank; ids has room for {cap}",
                    nodes.len()
                ),
            ));
        }
        // SAFETY: `cap >= nodes.len()` writable int64 (header contract).
        let out = unsafe { out_slice(ids, nodes.len(), "ids") }?;
        for (o, &g) in out.iter_mut().zip(&nodes) {
            *o = g as i64;
        }
        Ok(())
    })
}

/// Dirichlet values for the next step (and after, until replaced) at this rank's nodes of the
/// `external` boundary `tag`, in the order `wavecp_sim_boundary_nodes` gives. Not collective.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_set_boundary_values(
    s: *mut wavecp_sim,
    tag: *const c_char,
    values: *const f64,
    n: i64,
) -> c_int {
    with_sim(s, |sim| {
        // SAFETY: a NUL-terminated string (header contract).
        let tag = unsafe { text(tag, "tag") }?;
        let h = sim.open("wavecp_sim_set_boundary_values")?;
        let count = h.external_nodes(tag)?;
        let n = length(n, count, "set_boundary_values")?;
        // SAFETY: `n` readable doubles (header contract).
        let v = unsafe { in_slice(values, n, "values") }?;
        h.set_boundary_values(tag, v)?;
        Ok(())
    })
}

/// The number of receivers of the job.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_num_receivers(s: *const wavecp_sim, n: *mut i64) -> c_int {
    query(s, n, "n", |h| h.num_receivers() as i64)
}

/// Every receiver's value now, in job order, on every rank (collective).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_receivers(
    s: *const wavecp_sim,
    values: *mut f64,
    n: i64,
) -> c_int {
    with_sim(s, |sim| {
        let h = sim.built()?;
        let n = length(n, h.num_receivers(), "receivers")?;
        let v = h.receiver_values();
        // SAFETY: `n` writable doubles (header contract).
        unsafe { out_slice(values, n, "values") }?.copy_from_slice(&v);
        Ok(())
    })
}

/// Bytes `wavecp_sim_save_state` needs now on this rank.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_state_size(s: *const wavecp_sim, bytes: *mut i64) -> c_int {
    query(s, bytes, "bytes", |h| h.save_state().len() as i64)
}

/// This rank's state (step, both time levels, the host's boundary values) into `buf` of
/// exactly `wavecp_sim_state_size` bytes. Loaded into a simulation of the same job on the same
/// ranks, it continues bit for bit. The output file is not part of it.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_save_state(
    s: *const wavecp_sim,
    buf: *mut u8,
    bytes: i64,
) -> c_int {
    with_sim(s, |sim| {
        let st = sim.built()?.save_state();
        let n = length(bytes, st.len(), "save_state (bytes)")?;
        // SAFETY: `n` writable bytes (header contract).
        unsafe { out_slice(buf, n, "buf") }?.copy_from_slice(&st);
        Ok(())
    })
}

/// Continues from a state `wavecp_sim_save_state` wrote (collective). One of another job,
/// rank or layout is refused with `WAVECP_ERR_ARG`.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_load_state(
    s: *mut wavecp_sim,
    buf: *const u8,
    bytes: i64,
) -> c_int {
    with_sim(s, |sim| {
        if bytes < 0 {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                format!("bytes = {bytes} is negative"),
            ));
        }
        // SAFETY: `bytes` readable bytes (header contract).
        let b = unsafe { in_slice(buf, bytes as usize, "buf") }?;
        sim.open("wavecp_sim_load_state")?.load_state(b)?;
        Ok(())
    })
}

/// A hybrid job's window counts so far (from the first advance): windows the network's
/// forecast was accepted for and rejected for, and the steps it replaced. `WAVECP_ERR_ARG` for
/// a job without `[coupling]`.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_hybrid_windows(
    s: *const wavecp_sim,
    accepted: *mut i64,
    rejected: *mut i64,
    steps_surrogate: *mut i64,
) -> c_int {
    with_sim(s, |sim| {
        let Some(sm) = sim.built()?.hybrid() else {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                "not a hybrid job ([coupling] mode = \"hybrid\")",
            ));
        };
        // SAFETY: writable int64 values (header contract).
        unsafe {
            put(accepted, sm.windows_accepted as i64, "accepted")?;
            put(rejected, sm.windows_rejected as i64, "rejected")?;
            put(
                steps_surrogate,
                sm.steps_surrogate as i64,
                "steps_surrogate",
            )
        }
    })
}

/// A submodel job's windows done so far and the latest one's indicator (how far the zone's FE
/// frames drifted from the network's forecast of them, on the grid; NaN before the first
/// window ends). `WAVECP_ERR_ARG` for another job.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_submodel_windows(
    s: *const wavecp_sim,
    windows: *mut i64,
    indicator: *mut f64,
) -> c_int {
    with_sim(s, |sim| {
        let Some((w, ind)) = sim.built()?.submodel() else {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                "not a submodel job ([coupling] mode = \"submodel\")",
            ));
        };
        // SAFETY: writable values (header contract).
        unsafe {
            put(windows, w as i64, "windows")?;
            put(indicator, ind, "indicator")
        }
    })
}

/// Where the simulation stands, as one JSON object (UTF-8, NUL-terminated): `mode` (`"fe"`,
/// `"hybrid"` or `"submodel"`), `step`, `time`, `dt`, `job_steps`, `finished`; a hybrid job
/// adds `hybrid` (what `wavecp solve --json` reports of the loop so far: windows accepted and
/// rejected with each window's indicator score, the tolerance's calibrated threshold, the
/// source parameters outside the model's trained ranges, hand-back losses, the wall-clock
/// split), a submodel job `submodel` (`windows`, `indicator`). `*length` receives the JSON's
/// length in bytes, without the NUL; it is written into `buf` when `capacity` exceeds that
/// length. Call with `buf` NULL and `capacity` 0 to learn the size; `WAVECP_ERR_ARG` when
/// `capacity` is too small (nothing is written to `buf`, `*length` is set).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_summary_json(
    s: *const wavecp_sim,
    buf: *mut c_char,
    capacity: i64,
    length: *mut i64,
) -> c_int {
    with_sim(s, |sim| {
        if capacity < 0 {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                format!("capacity = {capacity} is negative"),
            ));
        }
        let text = hosted::summary_json(sim.built()?).to_string();
        let n = text.len();
        // SAFETY: a writable int64 (header contract).
        unsafe { put(length, n as i64, "length") }?;
        if buf.is_null() && capacity == 0 {
            return Ok(());
        }
        if buf.is_null() {
            return Err(Failure::new(
                WAVECP_ERR_NULL,
                format!("buf is NULL with capacity = {capacity}"),
            ));
        }
        if (capacity as u64) <= n as u64 {
            return Err(Failure::new(
                WAVECP_ERR_ARG,
                format!(
                    "capacity = {capacity} bytes does not hold the summary's {} (with its NUL)",
                    n + 1
                ),
            ));
        }
        // SAFETY: `capacity` writable bytes (header contract), of which n + 1 are used.
        let out = unsafe { out_slice(buf.cast::<u8>(), n + 1, "buf") }?;
        out[..n].copy_from_slice(text.as_bytes());
        out[n] = 0;
        Ok(())
    })
}

/// Appends the current step (and the receiver values since the last output step) to the job's
/// `output.path` (VTKHDF + XDMF, as `wavecp solve` writes it; nothing when the job has no
/// output path). Checks the field is finite. Collective.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_write_output(s: *mut wavecp_sim) -> c_int {
    with_sim(s, |sim| {
        sim.open("wavecp_sim_write_output")?.write_output()?;
        Ok(())
    })
}

/// Closes the output file under its final name; afterwards only queries are allowed.
/// Collective. Destroying an unfinished simulation finishes it.
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_finish(s: *mut wavecp_sim) -> c_int {
    with_sim(s, |sim| {
        sim.built()?.finish()?;
        Ok(())
    })
}

/// Frees the simulation (finishing its output first); NULL and already destroyed handles are
/// ignored. Collective on a communicator (it frees wavecp's duplicate of it).
#[no_mangle]
pub unsafe extern "C" fn wavecp_sim_destroy(s: *mut wavecp_sim) {
    let _ = guard(|| {
        if let Some(arc) = SIMS.remove(s as u64) {
            // Waits for a call another thread may be making on it.
            drop(arc.lock().unwrap_or_else(|p| p.into_inner()));
            drop(arc);
        }
        Ok(())
    });
}
