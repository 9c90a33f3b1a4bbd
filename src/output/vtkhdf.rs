//! VTKHDF 2.0 `UnstructuredGrid` time-series writer (static mesh, `u` appended per output step).
//!
//! Layout (what `vtkHDFReader` reads): `/VTKHDF` with `Version = [2, 0]`, `Type`, the mesh
//! (`Points`, `Connectivity`, `Offsets`, `Types`, counts), `PointData/u` holding all steps back to
//! back, `CellData/region`, and `Steps` with `Values` (times), offsets per step and the `NSteps`
//! attribute. Receivers and energy live under `/wavecp` (outside the VTK data model) and, for
//! ParaView, in two CSV tables beside the file (`NAME.receivers.csv`, `NAME.energy.csv`).
//! Every dataset carries `units` and `description` attributes.
//!
//! The run writes `NAME.running.vtkhdf` (claimed with a lock before anything truncates it) and
//! renames it to `NAME.vtkhdf` when it completes (`finish`): a finished file is only replaced by
//! a complete one. HDF5's file locking is off for the writer so that readers can open the file
//! while the run goes on. After every output step the data is written first, `NSteps` last,
//! then the file is flushed, so a reader (or a run killed between steps) sees whole steps.

use super::target::{check_replaceable, running_path, sibling, FileLock};
use super::{OutputError, ReceiverInfo, XdmfLayout, XdmfSeries};
use crate::mesh::Mesh;
use hdf5::types::{FixedAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group, Location};
use ndarray::s;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const VTK_TRIANGLE: u8 = 5;
const VTK_QUAD: u8 = 9;
const XDMF_TRIANGLE: i64 = 4;
const XDMF_QUAD: i64 = 5;

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
    per_step: Vec<(Dataset, i64)>,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> OutputError {
    let path = path.to_path_buf();
    move |e| OutputError::Hdf5 {
        file: path.clone(),
        msg: e.to_string(),
    }
}

fn extensible<T: hdf5::H5Type>(g: &Group, name: &str, chunk: usize) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>()
        .chunk(chunk.max(1))
        .shape(0..)
        .create(name)
}

/// `units` and `description` attributes, so a reader does not have to guess.
fn describe(obj: &Location, units: &str, description: &str) -> hdf5::Result<()> {
    for (name, text) in [("units", units), ("description", description)] {
        let v: VarLenUnicode = text
            .parse()
            .map_err(|e: hdf5::types::StringError| hdf5::Error::from(e.to_string().as_str()))?;
        obj.new_attr::<VarLenUnicode>()
            .create(name)?
            .write_scalar(&v)?;
    }
    Ok(())
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
    fn create(h5: &Path, receivers: &[String]) -> Result<Self, OutputError> {
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
        Ok(Tables {
            receivers: open("receivers.csv", head)?,
            energy: open("energy.csv", "time,energy".into())?,
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

/// A mesh's cells as VTK (connectivity, offsets, types) and XDMF mixed topology.
struct Cells {
    conn: Vec<i64>,
    offsets: Vec<i64>,
    types: Vec<u8>,
    xdmf_topo: Vec<i64>,
}

impl Cells {
    fn of(mesh: &Mesh) -> Self {
        let nc = mesh.num_cells();
        let mut conn: Vec<i64> = Vec::with_capacity(3 * mesh.tris.len() + 4 * mesh.quads.len());
        let mut offsets: Vec<i64> = vec![0];
        let mut types: Vec<u8> = Vec::with_capacity(nc);
        let mut xdmf_topo: Vec<i64> = Vec::with_capacity(nc * 5);
        for t in &mesh.tris {
            conn.extend(t.iter().map(|&v| v as i64));
            offsets.push(conn.len() as i64);
            types.push(VTK_TRIANGLE);
            xdmf_topo.push(XDMF_TRIANGLE);
            xdmf_topo.extend(t.iter().map(|&v| v as i64));
        }
        for q in &mesh.quads {
            conn.extend(q.iter().map(|&v| v as i64));
            offsets.push(conn.len() as i64);
            types.push(VTK_QUAD);
            xdmf_topo.push(XDMF_QUAD);
            xdmf_topo.extend(q.iter().map(|&v| v as i64));
        }
        Cells {
            conn,
            offsets,
            types,
            xdmf_topo,
        }
    }
}

/// The VTKHDF grid under `root`: points, cells, the (empty, extensible) `u`, and the region
/// and owning rank of each cell. Returns `u`.
fn write_grid(
    root: &Group,
    mesh: &Mesh,
    cells: &Cells,
    partition: Option<&[u32]>,
) -> hdf5::Result<Dataset> {
    let (n, nc) = (mesh.num_nodes(), mesh.num_cells());
    let points: Vec<f64> = mesh.coords.iter().flat_map(|p| [p[0], p[1], 0.0]).collect();
    let Cells {
        conn,
        offsets,
        types,
        ..
    } = cells;
    root.new_dataset::<i64>()
        .shape(1)
        .create("NumberOfPoints")?
        .write(&[n as i64])?;
    root.new_dataset::<i64>()
        .shape(1)
        .create("NumberOfCells")?
        .write(&[nc as i64])?;
    root.new_dataset::<i64>()
        .shape(1)
        .create("NumberOfConnectivityIds")?
        .write(&[conn.len() as i64])?;
    let pts = root
        .new_dataset_builder()
        .with_data(
            ndarray::ArrayView2::from_shape((n, 3), &points)
                .map_err(|x| hdf5::Error::from(x.to_string().as_str()))?,
        )
        .create("Points")?;
    describe(&pts, "m", "node coordinates x, y, z (z = 0)")?;
    root.new_dataset_builder()
        .with_data(&conn)
        .create("Connectivity")?;
    root.new_dataset_builder()
        .with_data(&offsets)
        .create("Offsets")?;
    root.new_dataset_builder()
        .with_data(&types)
        .create("Types")?;
    let pd = root.create_group("PointData")?;
    let u = extensible::<f64>(&pd, "u", n.clamp(1, 1 << 20))?;
    describe(
        &u,
        "field units",
        "the wave field u at the nodes, all output steps back to back (see Steps)",
    )?;
    let cd = root.create_group("CellData")?;
    let region = cd
        .new_dataset_builder()
        .with_data(&mesh.cell_tags())
        .create("region")?;
    describe(&region, "1", "physical surface tag of each cell")?;
    let part: Vec<i32> = match partition {
        Some(p) => p.iter().map(|&x| x as i32).collect(),
        None => vec![0; nc],
    };
    let pa = cd
        .new_dataset_builder()
        .with_data(&part)
        .create("partition")?;
    describe(&pa, "1", "MPI rank that owns each cell")?;
    Ok(u)
}

/// The VTKHDF `Steps` group and the per-step datasets, each with the value written for the
/// k-th step (`value · k`, or a constant where the value is negative).
fn create_steps(root: &Group, n: usize) -> hdf5::Result<(Group, Vec<(Dataset, i64)>)> {
    let steps = root.create_group("Steps")?;
    steps
        .new_attr::<i64>()
        .create("NSteps")?
        .write_scalar(&0i64)?;
    let mut per_step = Vec::new();
    // (dataset, value written for the k-th step: `value * k`, or constant when value < 0)
    let values = extensible::<f64>(&steps, "Values", 1024)?;
    describe(&values, "s", "time of each output step")?;
    per_step.push((values, 0));
    for name in [
        "PartOffsets",
        "PointOffsets",
        "CellOffsets",
        "ConnectivityIdOffsets",
    ] {
        per_step.push((extensible::<i64>(&steps, name, 1024)?, 0));
    }
    per_step.push((extensible::<i64>(&steps, "NumberOfParts", 1024)?, -1));
    let pdo = steps.create_group("PointDataOffsets")?;
    per_step.push((extensible::<i64>(&pdo, "u", 1024)?, n as i64));
    let cdo = steps.create_group("CellDataOffsets")?;
    per_step.push((extensible::<i64>(&cdo, "region", 1024)?, 0));
    per_step.push((extensible::<i64>(&cdo, "partition", 1024)?, 0));
    Ok((steps, per_step))
}

/// wavecp's own group: the XDMF topology, the receivers (positions, names, extensible `u`
/// and `time`) and the energy series. Returns `(receiver u, receiver time, energy, energy
/// time)`.
fn create_wavecp(
    file: &File,
    xdmf_topo: &[i64],
    receivers: &[ReceiverInfo],
) -> hdf5::Result<(Dataset, Dataset, Dataset, Dataset)> {
    let w = file.create_group("wavecp")?;
    w.new_dataset_builder()
        .with_data(&xdmf_topo)
        .create("xdmf_topology")?;
    let rg = w.create_group("receivers")?;
    let pos: Vec<f64> = receivers.iter().flat_map(|r| r.position).collect();
    let rp = rg
        .new_dataset_builder()
        .with_data(
            ndarray::ArrayView2::from_shape((receivers.len(), 2), &pos)
                .map_err(|x| hdf5::Error::from(x.to_string().as_str()))?,
        )
        .create("positions")?;
    describe(&rp, "m", "receiver positions x, y")?;
    let names: Vec<VarLenUnicode> = receivers
        .iter()
        .map(|r| r.name.parse().unwrap_or_default())
        .collect();
    rg.new_dataset_builder().with_data(&names).create("names")?;
    let nrec = receivers.len().max(1);
    let rec_u = rg
        .new_dataset::<f64>()
        .chunk((256, nrec))
        .shape((0.., receivers.len()..))
        .create("u")?;
    describe(
        &rec_u,
        "field units",
        "u interpolated at each receiver, one row per time step",
    )?;
    let rec_t = extensible::<f64>(&rg, "time", 4096)?;
    describe(&rec_t, "s", "time of each receiver row")?;
    let energy = extensible::<f64>(&w, "energy", 1024)?;
    describe(
        &energy,
        "energy units",
        "discrete energy 1/2 |(u+ - u)/dt|_M^2 + 1/2 u+^T K u at each output step",
    )?;
    let energy_t = extensible::<f64>(&w, "energy_time", 1024)?;
    describe(&energy_t, "s", "time of each energy value")?;
    Ok((rec_u, rec_t, energy, energy_t))
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
    times: &[f64],
) -> Result<Tables, OutputError> {
    let e = h5err(running);
    let mut csv = Tables::create(running, names)?;
    let read = || -> hdf5::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        Ok((
            h.rec_t.read_raw::<f64>()?,
            h.rec_u.read_raw::<f64>()?,
            h.energy.read_raw::<f64>()?,
        ))
    };
    let (rec_t, rec_u, energy) = read().map_err(&e)?;
    let csv_io = |suffix: &str| {
        let file = sibling(running, suffix);
        move |source| OutputError::Io { file, source }
    };
    if nrec > 0 {
        rows(&mut csv.receivers, &rec_t, &rec_u, nrec).map_err(csv_io("receivers.csv"))?;
    }
    rows(&mut csv.energy, times, &energy, 1).map_err(csv_io("energy.csv"))?;
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
            let (steps, per_step) = create_steps(&root, mesh.num_nodes())?;
            let (rec_u, rec_t, energy, energy_t) =
                create_wavecp(&file, &cells.xdmf_topo, receivers)?;
            Ok(Handles {
                steps,
                u,
                rec_u,
                rec_t,
                energy,
                energy_t,
                per_step,
            })
        };
        let h = write().map_err(&e)?;
        file.flush().map_err(&e)?;
        let layout = XdmfLayout {
            h5_name: file_name(&running),
            num_nodes: mesh.num_nodes(),
            num_cells: mesh.num_cells(),
            topology_len: cells.xdmf_topo.len(),
        };
        let xdmf = sidecar(xdmf, &running, &layout, &[])?;
        let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
        let csv = Tables::create(&running, &names)?;
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
    pub fn write_step(&mut self, time: f64, u: &[f64], energy: f64) -> Result<(), OutputError> {
        let e = h5err(&self.path);
        let k = self.times.len() as i64;
        append(&self.h.u, u).map_err(&e)?;
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
        rows(&mut self.csv.energy, &[time], &[energy], 1).map_err(|source| OutputError::Io {
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
        type Reopened = (Handles, usize, usize, usize, Vec<f64>, usize, Vec<String>);
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
            let u = root.group("PointData")?.dataset("u")?;
            u.resize(steps * n)?;
            let mut per_step = Vec::new();
            let values = steps_g.dataset("Values")?;
            values.resize(steps)?;
            let times = values.read_raw::<f64>()?;
            per_step.push((values, 0));
            for name in [
                "PartOffsets",
                "PointOffsets",
                "CellOffsets",
                "ConnectivityIdOffsets",
            ] {
                per_step.push((steps_g.dataset(name)?, 0));
            }
            per_step.push((steps_g.dataset("NumberOfParts")?, -1));
            per_step.push((steps_g.group("PointDataOffsets")?.dataset("u")?, n as i64));
            let cdo = steps_g.group("CellDataOffsets")?;
            per_step.push((cdo.dataset("region")?, 0));
            per_step.push((cdo.dataset("partition")?, 0));
            for (ds, _) in &per_step {
                ds.resize(steps)?;
            }
            steps_g.attr("NSteps")?.write_scalar(&(steps as i64))?;
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
            };
            Ok((h, n, nc, topology_len, times, nrec, names))
        };
        let (h, n, nc, topology_len, times, nrec, names) = open().map_err(&e)?;
        file.flush().map_err(&e)?;
        let csv = rebuild_tables(&running, &h, (&names, nrec), &times)?;
        let layout = XdmfLayout {
            h5_name: file_name(&running),
            num_nodes: n,
            num_cells: nc,
            topology_len,
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
