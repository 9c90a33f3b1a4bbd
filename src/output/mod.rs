//! Output: VTKHDF time series (ParaView ≥ 5.12) with an XDMF sidecar (ParaView 5.10/5.11),
//! receiver traces and the energy history, all in one HDF5 file.

#[cfg(feature = "hdf5")]
mod vtkhdf;
mod xdmf;

#[cfg(feature = "hdf5")]
pub use vtkhdf::VtkHdfWriter;
pub use xdmf::write_xdmf;

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
    #[error("this wavecp was built without the `hdf5` feature: field output is unavailable (set output.path = \"\" or rebuild with default features)")]
    NoHdf5,
}

/// A receiver as written to the output.
#[derive(Debug, Clone)]
pub struct ReceiverInfo {
    pub name: String,
    pub position: [f64; 2],
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash leaves
/// either the old file or the new one, never half of one.
pub fn write_atomic(path: &std::path::Path, contents: &[u8]) -> Result<(), OutputError> {
    let io = |source| OutputError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
