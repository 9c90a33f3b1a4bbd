//! Output: VTKHDF time series (ParaView ≥ 5.12) with an XDMF sidecar (ParaView 5.10/5.11),
//! receiver traces and the energy history, all in one HDF5 file.

pub mod target;
#[cfg(feature = "hdf5")]
mod vtkhdf;
mod xdmf;

#[cfg(feature = "hdf5")]
pub use vtkhdf::VtkHdfWriter;
pub use xdmf::{xdmf_text, XdmfLayout, XdmfSeries};

/// Errors of writing output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{file}: HDF5 error: {msg}")]
    Hdf5 {
        file: std::path::PathBuf,
        msg: String,
    },
    #[error("{file}: {source}")]
    Io {
        file: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Refused {
        file: std::path::PathBuf,
        msg: String,
    },
    #[error("this wavecp was built without the `hdf5` feature: field output is unavailable (set output.path = \"\" or rebuild with default features)")]
    NoHdf5,
}

/// What a run writes beside `u` at each output step (a coupled run's reference field, which
/// stepper produced the step, its indicator): point fields and single values, by name, fixed
/// when the file is created. Kept sorted, so a reopened file lists them in the same order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepExtras {
    pub fields: Vec<String>,
    pub values: Vec<String>,
}

impl StepExtras {
    /// The names sorted (the order the file and its tables use).
    pub fn new(mut fields: Vec<String>, mut values: Vec<String>) -> Self {
        fields.sort();
        values.sort();
        StepExtras { fields, values }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.values.is_empty()
    }
}

/// A receiver as written to the output.
#[derive(Debug, Clone)]
pub struct ReceiverInfo {
    pub name: String,
    pub position: [f64; 2],
}

/// Replaces `path` as a whole: `fill` writes a temporary file beside it, which is flushed to
/// disk and renamed over `path`, so a crash leaves either the old file or the new one, never
/// half of one. On any failure the temporary file is removed and `path` is untouched; a path
/// naming something other than a regular file (a device, a FIFO, a folder) is refused rather
/// than replaced. Missing parent folders are created.
pub fn replace_atomically(
    path: &std::path::Path,
    fill: impl FnOnce(&std::path::Path) -> Result<(), OutputError>,
) -> Result<(), OutputError> {
    target::check_replaceable(path, "output")?;
    let io = |file: &std::path::Path| {
        let file = file.to_path_buf();
        move |source| OutputError::Io { file, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = temp_sibling(path);
    let done = fill(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(io(path))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// [`replace_atomically`] with `contents`.
pub fn write_atomic(path: &std::path::Path, contents: &[u8]) -> Result<(), OutputError> {
    replace_atomically(path, |tmp| {
        std::fs::write(tmp, contents).map_err(|source| OutputError::Io {
            file: path.to_path_buf(),
            source,
        })
    })
}

/// `.NAME.PID.N.tmp` beside `path`: unique per process and call, hidden from `ls`.
fn temp_sibling(path: &std::path::Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// [`replace_atomically`] for an HDF5 file: `fill` writes into it, then it is flushed and
/// closed with each step checked (a full disk fails here, not silently later).
#[cfg(feature = "hdf5")]
pub fn write_h5_atomic(
    path: &std::path::Path,
    fill: impl FnOnce(&hdf5::File) -> hdf5::Result<()>,
) -> Result<(), OutputError> {
    replace_atomically(path, |tmp| {
        (|| -> hdf5::Result<()> {
            let f = hdf5::File::create(tmp)?;
            fill(&f)?;
            f.flush()?;
            f.close()
        })()
        .map_err(|e| OutputError::Hdf5 {
            file: path.to_path_buf(),
            msg: e.to_string(),
        })
    })
}
