//! VTKHDF 2.0 `UnstructuredGrid` time-series writer (static mesh, `u` appended per output step).
//!
//! Layout (what `vtkHDFReader` reads): `/VTKHDF` with `Version = [2, 0]`, `Type`, the mesh
//! (`Points`, `Connectivity`, `Offsets`, `Types`, counts), `PointData/u` holding all steps back to
//! back, `CellData/region`, and `Steps` with `Values` (times), offsets per step and the `NSteps`
//! attribute. Receivers and energy live under `/wavecp` (outside the VTK data model) and, for
//! ParaView, in two CSV tables beside the file (`NAME.receivers.csv`, `NAME.energy.csv`).
//! Every dataset carries `units` and `description` attributes. A coupled run adds point fields
//! beside `u` (`PointData/NAME`, with their `PointDataOffsets`) and one value per output step
//! (`/wavecp/steps/NAME`, also columns of the energy table): [`StepExtras`]. The file layout
//! itself is built in `layout.rs`.
//!
//! The run writes `NAME.running.vtkhdf` (claimed with a lock before anything truncates it) and
//! renames it to `NAME.vtkhdf` when it completes (`finish`): a finished file is only replaced by
//! a complete one. HDF5's file locking is off for the writer so that readers can open the file
//! while the run goes on. After every output step the data is written first, `NSteps` last,
//! then the file is flushed, so a reader (or a run killed between steps) sees whole steps.

mod layout;

use crate::mesh::Mesh;
use crate::output::target::{check_replaceable, running_path, sibling, FileLock};
use crate::output::{OutputError, ReceiverInfo, StepExtras, XdmfLayout, XdmfSeries};
use hdf5::types::{FixedAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group};
use layout::{
    create_extras, create_steps, create_wavecp, reopen_extras, reopen_steps, write_grid, Cells,
    PerStep,
};
use ndarray::s;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// An open VTKHDF output file.
pub struct VtkHdfWriter {
    file: File,
    /// The file being written (`NAME.running.vtkhdf`).
    path: PathBuf,
    /// Where it goes when the run completes.
    final_path: PathBuf,
    xdmf: Option<XdmfSeries>,
    layout: XdmfLayout,
    times: Vec<f64>,
    h: Handles,
    rec_rows: usize,
    nrec: usize,
    extras: StepExtras,
    csv: Tables,
    _lock: FileLock,
}

/// The receiver and energy tables as CSV, for ParaView's spreadsheet and line-chart views.
struct Tables {
    receivers: std::io::BufWriter<std::fs::File>,
    energy: std::io::BufWriter<std::fs::File>,
}

/// Datasets kept open for appending.
struct Handles {
    steps: Group,
    u: Dataset,
    rec_u: Dataset,
    rec_t: Dataset,
    energy: Dataset,
    energy_t: Dataset,
    per_step: PerStep,
    /// The extra point fields and per-step values, in `StepExtras` order.
    fields: Vec<Dataset>,
    values: Vec<Dataset>,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> OutputError {
    let path = path.to_path_buf();
    move |e| OutputError::Hdf5 {
        file: path.clone(),
        msg: e.to_string(),
    }
}

/// Opens an HDF5 file with HDF5's own `flock` off (see the module doc).
fn h5_open(path: &Path, create: bool) -> hdf5::Result<File> {
    let mut b = File::with_options();
    b.with_fapl(|p| p.file_locking(false));
    if create {
        b.create(path)
    } else {
        b.open_rw(path)
    }
}

fn csv_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Tables {
    /// New tables beside `h5` (truncating any old ones: the caller holds the lock).
    fn create(h5: &Path, receivers: &[String], values: &[String]) -> Result<Self, OutputError> {
        let open = |suffix: &str, head: String| -> Result<_, OutputError> {
            let p = sibling(h5, suffix);
            check_replaceable(&p, "table")?;
            let io = |source| OutputError::Io {
                file: p.clone(),
                source,
            };
            let mut w = std::io::BufWriter::new(std::fs::File::create(&p).map_err(io)?);
            writeln!(w, "{head}").map_err(io)?;
            Ok(w)
        };
        let mut head = String::from("time");
        for r in receivers {
            head.push(',');
            head.push_str(&csv_name(r));
        }
        let mut per_step = String::from("time,energy");
        for v in values {
            per_step.push(',');
            per_step.push_str(&csv_name(v));
        }
        Ok(Tables {
            receivers: open("receivers.csv", head)?,
            energy: open("energy.csv", per_step)?,
        })
    }

    fn flush(&mut self, h5: &Path) -> Result<(), OutputError> {
        for (w, suffix) in [
            (&mut self.receivers, "receivers.csv"),
            (&mut self.energy, "energy.csv"),
        ] {
            w.flush().map_err(|source| OutputError::Io {
                file: sibling(h5, suffix),
                source,
            })?;
        }
        Ok(())
    }
}

fn rows(
    w: &mut impl std::io::Write,
    times: &[f64],
    values: &[f64],
    width: usize,
) -> std::io::Result<()> {
    for (r, t) in times.iter().enumerate() {
        write!(w, "{t:e}")?;
        for v in &values[r * width..(r + 1) * width] {
            write!(w, ",{v:e}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

fn append<T: hdf5::H5Type + Copy>(ds: &Dataset, data: &[T]) -> hdf5::Result<()> {
    let n = ds.shape()[0];
    ds.resize(n + data.len())?;
    ds.write_slice(data, s![n..n + data.len()])
}

/// Claims `NAME.running.EXT` for `path` to continue a run: the running file as the dead run
/// left it, or a copy of `path` when that run had completed.
fn claim_to_continue(path: &Path) -> Result<(PathBuf, FileLock), OutputError> {
    let (running, lock) = claim(path)?;
    // Empty: just created by the claim (or left so by a run that died before writing).
    let empty = std::fs::metadata(&running).map_or(true, |m| m.len() == 0);
    if empty && path.exists() {
        std::fs::copy(path, &running).map_err(|source| OutputError::Io {
            file: running.clone(),
            source,
        })?;
    } else if empty {
        return Err(OutputError::Refused {
            file: running,
            msg: "is missing, so the run cannot continue from the checkpoint (start it anew without --restart)".into(),
        });
    }
    Ok((running, lock))
}

/// The CSV tables rebuilt from the receiver rows and energy series the file keeps.
fn rebuild_tables(
    running: &Path,
    h: &Handles,
    (names, nrec): (&[String], usize),
    (times, value_names): (&[f64], &[String]),
) -> Result<Tables, OutputError> {
    let e = h5err(running);
    let mut csv = Tables::create(running, names, value_names)?;
    let read = || -> hdf5::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let energy = h.energy.read_raw::<f64>()?;
        let cols = h
            .values
            .iter()
            .map(|d| d.read_raw::<f64>())
            .collect::<hdf5::Result<Vec<_>>>()?;
        // One row per output step: the energy, then each value.
        let per_step = (0..energy.len())
            .flat_map(|k| std::iter::once(energy[k]).chain(cols.iter().map(move |c| c[k])))
            .collect();
        Ok((
            h.rec_t.read_raw::<f64>()?,
            h.rec_u.read_raw::<f64>()?,
            per_step,
        ))
    };
    let (rec_t, rec_u, per_step) = read().map_err(&e)?;
    let csv_io = |suffix: &str| {
        let file = sibling(running, suffix);
        move |source| OutputError::Io { file, source }
    };
    if nrec > 0 {
        rows(&mut csv.receivers, &rec_t, &rec_u, nrec).map_err(csv_io("receivers.csv"))?;
    }
    rows(&mut csv.energy, times, &per_step, 1 + value_names.len()).map_err(csv_io("energy.csv"))?;
    csv.flush(running)?;
    Ok(csv)
}

impl VtkHdfWriter {
    /// Claims `NAME.running.EXT` for `path` (`NAME.EXT`), creates it (replacing a stale one left
    /// by a dead run), writes the mesh, region tags and the rank that owns each cell
    /// (`partition`; all 0 when `None`). `path` itself is untouched until `finish`.
    pub fn create(
        path: &Path,
        mesh: &Mesh,
        receivers: &[ReceiverInfo],
        xdmf: bool,
        partition: Option<&[u32]>,
        extras: &StepExtras,
    ) -> Result<Self, OutputError> {
        let (running, lock) = claim(path)?;
        let e = h5err(&running);
        let file = h5_open(&running, true).map_err(&e)?;
        let root = file.create_group("VTKHDF").map_err(&e)?;
        root.new_attr::<i64>()
            .shape(2)
            .create("Version")
            .and_then(|a| a.write(&[2i64, 0]))
            .map_err(&e)?;
        let ty =
            FixedAscii::<16>::from_ascii(b"UnstructuredGrid").map_err(|x| OutputError::Hdf5 {
                file: running.clone(),
                msg: x.to_string(),
            })?;
        root.new_attr::<FixedAscii<16>>()
            .create("Type")
            .and_then(|a| a.write_scalar(&ty))
            .map_err(&e)?;

        let cells = Cells::of(mesh);
        let write = || -> hdf5::Result<Handles> {
            let u = write_grid(&root, mesh, &cells, partition)?;
            let (steps, per_step) = create_steps(&root, mesh.num_nodes(), &extras.fields)?;
            let (rec_u, rec_t, energy, energy_t) =
                create_wavecp(&file, &cells.xdmf_topo, receivers)?;
            let (fields, values) = create_extras(&root, &file, mesh.num_nodes(), extras)?;
            Ok(Handles {
                steps,
                u,
                rec_u,
                rec_t,
                energy,
                energy_t,
                per_step,
                fields,
                values,
            })
        };
        let h = write().map_err(&e)?;
        file.flush().map_err(&e)?;
        let layout = XdmfLayout {
            h5_name: file_name(&running),
            num_nodes: mesh.num_nodes(),
            num_cells: mesh.num_cells(),
            topology_len: cells.xdmf_topo.len(),
            fields: extras.fields.clone(),
        };
        let xdmf = sidecar(xdmf, &running, &layout, &[])?;
        let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
        let csv = Tables::create(&running, &names, &extras.values)?;
        Ok(VtkHdfWriter {
            file,
            path: running,
            final_path: path.to_path_buf(),
            xdmf,
            layout,
            times: Vec::new(),
            h,
            rec_rows: 0,
            nrec: receivers.len(),
            extras: extras.clone(),
            csv,
            _lock: lock,
        })
    }

    /// Appends receiver samples: `times.len()` rows of `nrec` values each (row-major).
    pub fn append_receivers(&mut self, times: &[f64], values: &[f64]) -> Result<(), OutputError> {
        if times.is_empty() || self.nrec == 0 {
            return Ok(());
        }
        let e = h5err(&self.path);
        let rows_n = times.len();
        let (r0, r1) = (self.rec_rows, self.rec_rows + rows_n);
        self.h.rec_u.resize((r1, self.nrec)).map_err(&e)?;
        let view = ndarray::ArrayView2::from_shape((rows_n, self.nrec), values).map_err(|x| {
            OutputError::Hdf5 {
                file: self.path.clone(),
                msg: x.to_string(),
            }
        })?;
        self.h.rec_u.write_slice(view, s![r0..r1, ..]).map_err(&e)?;
        append(&self.h.rec_t, times).map_err(&e)?;
        rows(&mut self.csv.receivers, times, values, self.nrec).map_err(|source| {
            OutputError::Io {
                file: sibling(&self.path, "receivers.csv"),
                source,
            }
        })?;
        self.rec_rows = r1;
        Ok(())
    }

    /// Appends one output step (time, field, energy), then commits it (NSteps, flush, XDMF).
    /// A file created with [`StepExtras`] takes [`VtkHdfWriter::write_step_with`].
    pub fn write_step(&mut self, time: f64, u: &[f64], energy: f64) -> Result<(), OutputError> {
        self.write_step_with(time, u, energy, &[], &[])
    }

    /// [`VtkHdfWriter::write_step`] with the extra point fields and values the file was
    /// created with, in [`StepExtras`] order.
    pub fn write_step_with(
        &mut self,
        time: f64,
        u: &[f64],
        energy: f64,
        fields: &[&[f64]],
        values: &[f64],
    ) -> Result<(), OutputError> {
        let e = h5err(&self.path);
        let n = self.layout.num_nodes;
        if fields.len() != self.extras.fields.len()
            || values.len() != self.extras.values.len()
            || u.len() != n
            || fields.iter().any(|f| f.len() != n)
        {
            return Err(OutputError::Refused {
                file: self.path.clone(),
                msg: format!(
                    "an output step of {} values, {} extra fields and {} extra values; the file holds {n} nodes and {:?}",
                    u.len(),
                    fields.len(),
                    values.len(),
                    self.extras
                ),
            });
        }
        let k = self.times.len() as i64;
        append(&self.h.u, u).map_err(&e)?;
        for (ds, f) in self.h.fields.iter().zip(fields) {
            append(ds, f).map_err(&e)?;
        }
        for (ds, v) in self.h.values.iter().zip(values) {
            append(ds, &[*v]).map_err(&e)?;
        }
        append(&self.h.energy, &[energy]).map_err(&e)?;
        append(&self.h.energy_t, &[time]).map_err(&e)?;
        for (i, (ds, per)) in self.h.per_step.iter().enumerate() {
            if i == 0 {
                append(ds, &[time]).map_err(&e)?;
            } else {
                let v = if *per < 0 { 1 } else { per * k };
                append(ds, &[v]).map_err(&e)?;
            }
        }
        self.times.push(time);
        self.h
            .steps
            .attr("NSteps")
            .and_then(|a| a.write_scalar(&(k + 1)))
            .map_err(&e)?;
        let mut row = vec![energy];
        row.extend_from_slice(values);
        let width = row.len();
        rows(&mut self.csv.energy, &[time], &row, width).map_err(|source| OutputError::Io {
            file: sibling(&self.path, "energy.csv"),
            source,
        })?;
        self.flush()?;
        if let Some(x) = &mut self.xdmf {
            x.append(time)?;
        }
        Ok(())
    }

    /// Pushes everything written so far to the files (before a checkpoint records how much of
    /// them it covers).
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.file.flush().map_err(h5err(&self.path))?;
        self.csv.flush(&self.path)
    }

    /// Reopens the file of an interrupted run of `path`, keeping its first `steps` output steps
    /// and `rec_rows` receiver rows and dropping anything written after them (a restart from a
    /// checkpoint taken at that point). When the run had completed (only `path` is left), the
    /// file is copied and the copy continued; `path` is replaced when the new run completes.
    pub fn reopen(
        path: &Path,
        steps: usize,
        rec_rows: usize,
        xdmf: bool,
    ) -> Result<Self, OutputError> {
        let (running, lock) = claim_to_continue(path)?;
        let e = h5err(&running);
        let file = h5_open(&running, false).map_err(&e)?;
        type Reopened = (
            Handles,
            usize,
            usize,
            usize,
            Vec<f64>,
            usize,
            Vec<String>,
            StepExtras,
        );
        let open = || -> hdf5::Result<Reopened> {
            let root = file.group("VTKHDF")?;
            let n = root.dataset("NumberOfPoints")?.read_raw::<i64>()?[0] as usize;
            let nc = root.dataset("NumberOfCells")?.read_raw::<i64>()?[0] as usize;
            let steps_g = root.group("Steps")?;
            let have = steps_g.attr("NSteps")?.read_scalar::<i64>()?;
            if steps as i64 > have {
                return Err(hdf5::Error::from(
                    format!("the file has {have} output steps, the checkpoint expects {steps}")
                        .as_str(),
                ));
            }
            let pd = root.group("PointData")?;
            let u = pd.dataset("u")?;
            u.resize(steps * n)?;
            let (extras, fields, step_values) = reopen_extras(&pd, &file, steps, n)?;
            let (per_step, times) = reopen_steps(&steps_g, n, steps, &extras.fields)?;
            let w = file.group("wavecp")?;
            let topology_len = w.dataset("xdmf_topology")?.shape()[0];
            let rg = w.group("receivers")?;
            let rec_u = rg.dataset("u")?;
            let nrec = rec_u.shape()[1];
            if rec_rows > rec_u.shape()[0] {
                return Err(hdf5::Error::from(
                    format!(
                        "the file has {} receiver rows, the checkpoint expects {rec_rows}",
                        rec_u.shape()[0]
                    )
                    .as_str(),
                ));
            }
            rec_u.resize((rec_rows, nrec))?;
            let rec_t = rg.dataset("time")?;
            rec_t.resize(rec_rows)?;
            let names: Vec<String> = rg
                .dataset("names")?
                .read_raw::<VarLenUnicode>()?
                .iter()
                .map(|s| s.as_str().to_string())
                .collect();
            let energy = w.dataset("energy")?;
            energy.resize(steps)?;
            let energy_t = w.dataset("energy_time")?;
            energy_t.resize(steps)?;
            let h = Handles {
                steps: steps_g,
                u,
                rec_u,
                rec_t,
                energy,
                energy_t,
                per_step,
                fields,
                values: step_values,
            };
            Ok((h, n, nc, topology_len, times, nrec, names, extras))
        };
        let (h, n, nc, topology_len, times, nrec, names, extras) = open().map_err(&e)?;
        file.flush().map_err(&e)?;
        let csv = rebuild_tables(&running, &h, (&names, nrec), (&times, &extras.values))?;
        let layout = XdmfLayout {
            h5_name: file_name(&running),
            num_nodes: n,
            num_cells: nc,
            topology_len,
            fields: extras.fields.clone(),
        };
        let xdmf = sidecar(xdmf, &running, &layout, &times)?;
        Ok(VtkHdfWriter {
            file,
            path: running,
            final_path: path.to_path_buf(),
            xdmf,
            layout,
            times,
            h,
            rec_rows,
            nrec,
            extras,
            csv,
            _lock: lock,
        })
    }

    /// The run is complete: closes the file and moves it, its tables and its XDMF sidecar
    /// (rewritten to point at the new name) to their final names. Returns the final path.
    pub fn finish(mut self) -> Result<PathBuf, OutputError> {
        self.flush()?;
        let VtkHdfWriter {
            file,
            path: running,
            final_path,
            xdmf,
            layout,
            times,
            h,
            csv,
            _lock,
            ..
        } = self;
        drop(h);
        drop(csv);
        file.close().map_err(h5err(&running))?;
        let io = |file: &Path| {
            let file = file.to_path_buf();
            move |source| OutputError::Io { file, source }
        };
        if let Some(x) = xdmf {
            let layout = XdmfLayout {
                h5_name: file_name(&final_path),
                ..layout
            };
            let target = final_path.with_extension("xdmf");
            super::write_atomic(&target, super::xdmf_text(&layout, &times).as_bytes())?;
            let old = x.path().to_path_buf();
            drop(x);
            std::fs::remove_file(&old).map_err(io(&old))?;
        }
        for suffix in ["receivers.csv", "energy.csv"] {
            let (from, to) = (sibling(&running, suffix), sibling(&final_path, suffix));
            check_replaceable(&to, "table")?;
            std::fs::rename(&from, &to).map_err(io(&to))?;
        }
        std::fs::rename(&running, &final_path).map_err(io(&final_path))?;
        Ok(final_path)
    }

    /// Receiver rows written so far.
    pub fn receiver_rows(&self) -> usize {
        self.rec_rows
    }

    /// The file being written (`NAME.running.EXT` until `finish`).
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn xdmf_path(&self) -> Option<&Path> {
        self.xdmf.as_ref().map(|x| x.path())
    }
    pub fn steps_written(&self) -> usize {
        self.times.len()
    }
}

/// Claims `NAME.running.EXT` for the output `path` (`NAME.EXT`).
fn claim(path: &Path) -> Result<(PathBuf, FileLock), OutputError> {
    check_replaceable(path, "output")?;
    let running = running_path(path);
    let lock = FileLock::claim(&running)?;
    Ok((running, lock))
}

/// The XDMF sidecar of the running file with the steps `times`, when one is wanted.
fn sidecar(
    wanted: bool,
    running: &Path,
    layout: &XdmfLayout,
    times: &[f64],
) -> Result<Option<XdmfSeries>, OutputError> {
    wanted
        .then(|| XdmfSeries::create(&running.with_extension("xdmf"), layout.clone(), times))
        .transpose()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
