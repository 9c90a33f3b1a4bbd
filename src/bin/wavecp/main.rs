//! `wavecp`: parses the command line, sets up logging and the communicator, dispatches to
//! `cli`, and turns the outcome into an exit status. Everything else lives in `cli/` and the
//! library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// Keeps freed memory in the process instead of handing it back to the kernel.
///
/// glibc serves every block over 128 KiB (the network's activations, the im2col matrices) with a
/// fresh `mmap` and unmaps it on `free`, so each training step faulted in and zeroed hundreds of
/// MB of new pages again: 30 % of a CP training step was the kernel clearing pages (perf). With
/// `mmap` off and no trimming, a step reuses the previous step's memory. The peak footprint is
/// unchanged; memory goes back to the system when the process ends.
fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts,
    // and glibc accepts both settings (a failure returns 0 and leaves the default behaviour).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Exit status of a run stopped by SIGTERM/SIGUSR1 after writing its checkpoint (for job
/// scripts: requeue and rerun with `--restart`).
const EXIT_INTERRUPTED: u8 = 3;

fn main() -> ExitCode {
    retain_freed_memory();
    let cli = cli::Cli::parse();
    // MPI first (when started by a launcher), so that only rank 0 logs.
    let comm = wavecp::comm::world();
    let rank = comm.rank();
    let log = if rank == 0 || std::env::var_os("WAVECP_LOG_ALL_RANKS").is_some() {
        cli.log.clone()
    } else {
        "error".to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match cli::run(cli.cmd, comm.as_ref()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            if comm.size() > 1 {
                eprintln!("error (rank {rank} of {}): {e:#}", comm.size());
                // Another rank may be waiting for this one in a collective: end them all.
                comm.abort(1)
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
