//! What this machine (or this process's limits) lets a run allocate: checked before building
//! something large, so a job that cannot fit is refused with a number instead of being killed.

/// Bytes this process can still expect to allocate: the smaller of the kernel's `MemAvailable`
/// and the address-space limit (`ulimit -v`). `None` when neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let rlimit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max address space"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        });
    match (meminfo, rlimit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `Err(message)` when `bytes` (what `what` needs) exceeds the memory available.
pub fn check_memory(bytes: f64, what: &str) -> Result<(), String> {
    check_memory_within(bytes, available_memory(), what)
}

/// [`check_memory`] against `available` bytes read once (for checks made in a loop).
pub fn check_memory_within(bytes: f64, available: Option<u64>, what: &str) -> Result<(), String> {
    match available {
        Some(avail) if bytes > avail as f64 => Err(format!(
            "{what} needs about {:.1} GiB, and this machine has {:.1} GiB available",
            bytes / f64::from(1u32 << 30),
            avail as f64 / f64::from(1u32 << 30)
        )),
        _ => Ok(()),
    }
}
