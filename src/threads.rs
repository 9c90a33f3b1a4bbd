//! Running work on a rayon pool of a chosen size (0: the global pool: all cores or RAYON_NUM_THREADS).

/// Runs `f` with `threads` worker threads; `Err` carries rayon's message if no pool can be built.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R, String> {
    if threads == 0 {
        return Ok(f());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(pool.install(f))
}
