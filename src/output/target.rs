//! Where a run's files go and who may touch them: the running file, its lock, and the checks
//! that keep a path from naming something it must not replace.
//!
//! A run writes `NAME.running.EXT` and renames it to `NAME.EXT` when it completes, so a finished
//! file is only ever replaced by a complete new one. The running file is claimed with an
//! open-file-description lock (`fcntl(F_OFD_SETLK)`) *before* anything truncates it: a second
//! run on the same path fails with a message and leaves the first one's file alone. HDF5's own
//! `flock` is switched off for the writer, so readers (ParaView, h5py) can open the running
//! file while the run goes on; on Linux `flock` and OFD locks do not see each other.

use super::OutputError;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `NAME.running.EXT` next to `NAME.EXT` (`NAME.running` without an extension).
pub fn running_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.running.{}", ext.to_string_lossy()),
        None => format!("{stem}.running"),
    };
    path.with_file_name(name)
}

/// A file beside `path`: `NAME.SUFFIX` for `NAME.EXT`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.{suffix}"))
}

/// Refuses a path that exists and is not a regular file (a device, a FIFO, a folder, a socket):
/// writing through a rename would replace it with a regular file.
pub fn check_replaceable(path: &Path, what: &str) -> Result<(), OutputError> {
    match std::fs::metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(OutputError::Refused {
            file: path.to_path_buf(),
            msg: format!(
                "the {what} path exists and is not a regular file ({}); give a new path or a regular file",
                kind(&m)
            ),
        }),
        _ => Ok(()),
    }
}

fn kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The same file, whether or not both exist yet: canonical parent + file name.
pub fn same_file(a: &Path, b: &Path) -> bool {
    fn canon(p: &Path) -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    }
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        use std::os::unix::fs::MetadataExt;
        if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
            return true;
        }
    }
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// The name of the entry of `files` that `path` is (the same file), if any.
pub fn which_of<'a>(path: &Path, files: &'a [(&'a str, PathBuf)]) -> Option<&'a str> {
    files
        .iter()
        .find(|(_, f)| same_file(path, f))
        .map(|(what, _)| *what)
}

/// An exclusive claim on a file, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    // Closing the descriptor releases the lock.
    _file: std::fs::File,
}

impl FileLock {
    /// Opens (creating, never truncating) `path` and locks it for writing, or says who has it.
    pub fn claim(path: &Path) -> Result<Self, OutputError> {
        check_replaceable(path, "output")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
                file: dir.to_path_buf(),
                source,
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| OutputError::Io {
                file: path.to_path_buf(),
                source,
            })?;
        // SAFETY: `flock` is a plain C struct for which all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        // SAFETY: the descriptor is open for the lifetime of `file`, and `fl` is a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => Err(OutputError::Refused {
                    file: path.to_path_buf(),
                    msg: "is being written by another wavecp run; wait for it to end or choose another output path".into(),
                }),
                // Some cluster file systems (Lustre mounted without flock, old NFS) have no
                // locks at all: run unprotected rather than not at all, as HDF5 does with
                // HDF5_USE_FILE_LOCKING=FALSE, and say so.
                Some(libc::ENOLCK) | Some(libc::EINVAL) | Some(libc::ENOSYS)
                | Some(libc::EOPNOTSUPP) => {
                    tracing::warn!(
                        "{}: this file system does not support file locks ({e}); a second run on the same output would not be detected",
                        path.display()
                    );
                    Ok(FileLock { _file: file })
                }
                _ => Err(OutputError::Io {
                    file: path.to_path_buf(),
                    source: e,
                }),
            };
        }
        Ok(FileLock { _file: file })
    }
}
