//! Progress reporting: a bar on a terminal, periodic log lines in a batch log.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress of a loop of `total` steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    label: &'static str,
    start: Instant,
    last_log: Instant,
    every: Duration,
}

impl Progress {
    /// A bar when stderr is a terminal and `enabled`; otherwise a log line every `log_every`.
    pub fn new(label: &'static str, total: u64, enabled: bool, log_every: Duration) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} steps (ETA {eta})",
            ) {
                b.set_style(style);
            }
            b.set_message(label);
            b
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            label,
            start: now,
            last_log: now,
            every: log_every,
        }
    }

    /// Reports that `pos` steps are done (cheap when nothing is due).
    pub fn set(&mut self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            return;
        }
        if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            let el = self.start.elapsed().as_secs_f64();
            let eta = if pos > 0 {
                el * (self.total - pos) as f64 / pos as f64
            } else {
                f64::NAN
            };
            tracing::info!(
                "{}: step {pos}/{} ({:.1}%), elapsed {el:.1} s, ETA {eta:.1} s",
                self.label,
                self.total,
                100.0 * pos as f64 / self.total.max(1) as f64
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A byte count as a person reads it: `512 B`, `12.0 KiB`, `3.4 MiB`, `1.25 GiB`.
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}
