//! The dataset's HDF5 file: created or resumed, one sample committed at a time.

use super::invalid;
use crate::output::OutputError;
use crate::sim::DriverError;
use hdf5::types::VarLenUnicode;
use ndarray::s;
use std::path::{Path, PathBuf};

/// The dataset HDF5 file: `/frames [samples, frames, ny, nx]` f32, `/params [samples, p]`,
/// `/param_names`, `/done [samples]`, `/grid/x`, `/grid/y`; attributes `dt`, `stride`, `start`,
/// `frame_dt`, `seed`, `job` on the root and `mean`, `std` on `/frames`.
pub(super) struct DatasetFile {
    file: hdf5::File,
    path: PathBuf,
    pub done: Vec<bool>,
    /// Held while the file is written: a second generation on the same path is refused
    /// before `--overwrite` could truncate it.
    _lock: crate::output::target::FileLock,
}

impl DatasetFile {
    /// Opens the file at `path` to resume it when it was made from the job `fingerprint`, else
    /// (only with `overwrite` if it exists) creates it for `/frames` of `shape`
    /// `[samples, frames, ny, nx]` and the parameters `names`.
    pub fn open(
        path: &Path,
        fingerprint: &str,
        overwrite: bool,
        shape: [usize; 4],
        names: &[&str],
    ) -> Result<Self, DriverError> {
        let [samples, frames, ny, nx] = shape;
        let e = |err: hdf5::Error| OutputError::Hdf5 {
            file: path.to_path_buf(),
            msg: err.to_string(),
        };
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let lock = crate::output::target::FileLock::claim(path)?;
        if existed {
            let existing = hdf5::File::open_rw(path).map_err(e)?;
            let same = existing
                .attr("job")
                .and_then(|a| a.read_scalar::<VarLenUnicode>())
                .map(|s| s.as_str() == fingerprint)
                .unwrap_or(false);
            if same {
                let done: Vec<u8> = existing
                    .dataset("done")
                    .and_then(|d| d.read_raw())
                    .map_err(e)?;
                return Ok(DatasetFile {
                    file: existing,
                    path: path.to_path_buf(),
                    done: done.iter().map(|d| *d != 0).collect(),
                    _lock: lock,
                });
            }
            if !overwrite {
                return Err(invalid("output path", format!("{} exists and was made from a different job or split; delete it or pass --overwrite", path.display())));
            }
            drop(existing);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
                file: dir.to_path_buf(),
                source,
            })?;
        }
        let file = hdf5::File::create(path).map_err(e)?;
        let make = || -> hdf5::Result<()> {
            file.new_dataset::<f32>()
                .chunk((1, frames, ny, nx))
                .shape((samples, frames, ny, nx))
                .create("frames")?;
            file.new_dataset::<f64>()
                .shape((samples, names.len()))
                .create("params")?;
            let n: Vec<VarLenUnicode> = names
                .iter()
                .map(|s| s.parse().unwrap_or_default())
                .collect();
            file.new_dataset_builder()
                .with_data(&n)
                .create("param_names")?;
            file.new_dataset_builder()
                .with_data(&vec![0u8; samples])
                .create("done")?;
            let fp: VarLenUnicode = fingerprint.parse().unwrap_or_default();
            file.new_attr::<VarLenUnicode>()
                .create("job")?
                .write_scalar(&fp)?;
            file.flush()
        };
        make().map_err(e)?;
        Ok(DatasetFile {
            file,
            path: path.to_path_buf(),
            done: vec![false; samples],
            _lock: lock,
        })
    }

    fn err(&self) -> impl Fn(hdf5::Error) -> OutputError + '_ {
        move |err| OutputError::Hdf5 {
            file: self.path.clone(),
            msg: err.to_string(),
        }
    }

    pub fn write_meta(
        &mut self,
        gx: &[f64],
        gy: &[f64],
        dt: f64,
        stride: usize,
        start: usize,
        seed: u64,
    ) -> Result<(), DriverError> {
        let f = &self.file;
        let w = || -> hdf5::Result<()> {
            if f.group("grid").is_err() {
                let g = f.create_group("grid")?;
                g.new_dataset_builder().with_data(gx).create("x")?;
                g.new_dataset_builder().with_data(gy).create("y")?;
                f.new_attr::<f64>().create("dt")?.write_scalar(&dt)?;
                f.new_attr::<f64>()
                    .create("frame_dt")?
                    .write_scalar(&(dt * stride as f64))?;
                f.new_attr::<u64>()
                    .create("stride")?
                    .write_scalar(&(stride as u64))?;
                f.new_attr::<u64>()
                    .create("start")?
                    .write_scalar(&(start as u64))?;
                f.new_attr::<u64>().create("seed")?.write_scalar(&seed)?;
            }
            Ok(())
        };
        w().map_err(self.err())?;
        Ok(())
    }

    /// Frames and parameters first, the `done` flag last.
    pub fn write_sample(
        &mut self,
        i: usize,
        params: &[f64],
        frames: &[f32],
    ) -> Result<(), DriverError> {
        let f = &self.file;
        let w = || -> hdf5::Result<()> {
            let ds = f.dataset("frames")?;
            let sh = ds.shape();
            let view = ndarray::ArrayView3::from_shape((sh[1], sh[2], sh[3]), frames)
                .map_err(|x| hdf5::Error::from(x.to_string().as_str()))?;
            ds.write_slice(view, s![i, .., .., ..])?;
            f.dataset("params")?.write_slice(params, s![i, ..])?;
            f.dataset("done")?.write_slice(&[1u8], s![i..i + 1])
        };
        w().map_err(self.err())?;
        self.done[i] = true;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), DriverError> {
        self.file.flush().map_err(self.err())?;
        Ok(())
    }

    /// Mean and standard deviation over every value of every frame, in sample order; stored as
    /// attributes of `/frames`.
    pub fn statistics(&mut self) -> Result<(f64, f64), DriverError> {
        let f = &self.file;
        let w = || -> hdf5::Result<(f64, f64)> {
            let ds = f.dataset("frames")?;
            let n = ds.shape()[0];
            let (mut sum, mut sq, mut count) = (0.0f64, 0.0f64, 0usize);
            for i in 0..n {
                let a: ndarray::Array3<f32> = ds.read_slice(s![i, .., .., ..])?;
                for v in a.iter() {
                    sum += *v as f64;
                    sq += (*v as f64) * (*v as f64);
                }
                count += a.len();
            }
            let mean = sum / count.max(1) as f64;
            let std = (sq / count.max(1) as f64 - mean * mean).max(0.0).sqrt();
            for (name, v) in [("mean", mean), ("std", std)] {
                match ds.attr(name) {
                    Ok(a) => a.write_scalar(&v)?,
                    Err(_) => ds.new_attr::<f64>().create(name)?.write_scalar(&v)?,
                }
            }
            f.flush()?;
            Ok((mean, std))
        };
        Ok(w().map_err(self.err())?)
    }
}
