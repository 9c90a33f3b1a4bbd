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

/// A receiver as written to the output.
#[derive(Debug, Clone)]
pub struct ReceiverInfo {
    pub name: String,
    pub position: [f64; 2],
}

/// Writes `contents` to `path` through a temporary file in the same folder, flushed to disk,
/// and a rename, so a crash leaves either the old file or the new one, never half of one. A
/// failed write removes the temporary file; a path naming something other than a regular file
/// (a device, a FIFO, a folder) is refused rather than replaced.
pub fn write_atomic(path: &std::path::Path, contents: &[u8]) -> Result<(), OutputError> {
    use std::io::Write;
    target::check_replaceable(path, "output")?;
    let io = |source| OutputError::Io {
        file: path.to_path_buf(),
        source,
    };
    let tmp = temp_sibling(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    };
    if let Err(e) = write().and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// `.NAME.PID.N.tmp` beside `path`: unique per process and call, hidden from `ls`.
pub fn temp_sibling(path: &std::path::Path) -> std::path::PathBuf {
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

/// Writes an HDF5 file as a whole: `fill` writes into a temporary file beside `path`, which is
/// flushed, closed (each checked: a full disk fails here, not silently later) and renamed over
/// `path`. On any failure the temporary file is removed and `path` is untouched.
#[cfg(feature = "hdf5")]
pub fn write_h5_atomic(
    path: &std::path::Path,
    fill: impl FnOnce(&hdf5::File) -> hdf5::Result<()>,
) -> Result<(), OutputError> {
    target::check_replaceable(path, "output")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
            file: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = temp_sibling(path);
    let written = (|| -> hdf5::Result<()> {
        let f = hdf5::File::create(&tmp)?;
        fill(&f)?;
        f.flush()?;
        f.close()
    })();
    let done = match written {
        Ok(()) => std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| OutputError::Io {
                file: path.to_path_buf(),
                source,
            }),
        Err(e) => Err(OutputError::Hdf5 {
            file: path.to_path_buf(),
            msg: e.to_string(),
        }),
    };
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}
