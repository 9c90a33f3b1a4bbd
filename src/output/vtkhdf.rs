//! VTKHDF 2.0 `UnstructuredGrid` time-series writer (static mesh, `u` appended per output step).
//!
//! Layout (what `vtkHDFReader` reads): `/VTKHDF` with `Version = [2, 0]`, `Type`, the mesh
//! (`Points`, `Connectivity`, `Offsets`, `Types`, counts), `PointData/u` holding all steps back to
//! back, `CellData/region`, and `Steps` with `Values` (times), offsets per step and the `NSteps`
//! attribute. Receivers and energy live under `/wavecp` (outside the VTK data model).
//! After every output step the data is written first, `NSteps` last, then the file is flushed,
//! so a run killed between steps leaves a file that opens with the steps already written.

use super::{write_xdmf, OutputError, ReceiverInfo};
use crate::mesh::Mesh;
use hdf5::types::{FixedAscii, VarLenUnicode};
use hdf5::{Dataset, File, Group};
use ndarray::s;
use std::path::{Path, PathBuf};

const VTK_TRIANGLE: u8 = 5;
const VTK_QUAD: u8 = 9;
const XDMF_TRIANGLE: i64 = 4;
const XDMF_QUAD: i64 = 5;

/// An open VTKHDF output file.
pub struct VtkHdfWriter {
    file: File,
    path: PathBuf,
    xdmf: Option<PathBuf>,
    num_nodes: usize,
    num_cells: usize,
    topology_len: usize,
    times: Vec<f64>,
    h: Handles,
    rec_rows: usize,
    nrec: usize,
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

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> OutputError + '_ {
    move |e| OutputError::Hdf5 {
        file: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn extensible<T: hdf5::H5Type>(g: &Group, name: &str, chunk: usize) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>()
        .chunk(chunk.max(1))
        .shape(0..)
        .create(name)
}

fn append<T: hdf5::H5Type + Copy>(ds: &Dataset, data: &[T]) -> hdf5::Result<()> {
    let n = ds.shape()[0];
    ds.resize(n + data.len())?;
    ds.write_slice(data, s![n..n + data.len()])
}

impl VtkHdfWriter {
    /// Creates the file (replacing any old one), writes the mesh, region tags and the rank that
    /// owns each cell (`partition`; all 0 when `None`).
    pub fn create(
        path: &Path,
        mesh: &Mesh,
        receivers: &[ReceiverInfo],
        xdmf: bool,
        partition: Option<&[u32]>,
    ) -> Result<Self, OutputError> {
        let e = h5err(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
                file: dir.to_path_buf(),
                source,
            })?;
        }
        let file = File::create(path).map_err(&e)?;
        let root = file.create_group("VTKHDF").map_err(&e)?;
        root.new_attr::<i64>()
            .shape(2)
            .create("Version")
            .and_then(|a| a.write(&[2i64, 0]))
            .map_err(&e)?;
        let ty =
            FixedAscii::<16>::from_ascii(b"UnstructuredGrid").map_err(|x| OutputError::Hdf5 {
                file: path.to_path_buf(),
                msg: x.to_string(),
            })?;
        root.new_attr::<FixedAscii<16>>()
            .create("Type")
            .and_then(|a| a.write_scalar(&ty))
            .map_err(&e)?;

        let n = mesh.num_nodes();
        let nc = mesh.num_cells();
        let points: Vec<f64> = mesh.coords.iter().flat_map(|p| [p[0], p[1], 0.0]).collect();
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
        let write = || -> hdf5::Result<Handles> {
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
            root.new_dataset_builder()
                .with_data(
                    ndarray::ArrayView2::from_shape((n, 3), &points)
                        .map_err(|x| hdf5::Error::from(x.to_string().as_str()))?,
                )
                .create("Points")?;
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
            let cd = root.create_group("CellData")?;
            cd.new_dataset_builder()
                .with_data(&mesh.cell_tags())
                .create("region")?;
            let part: Vec<i32> = match partition {
                Some(p) => p.iter().map(|&x| x as i32).collect(),
                None => vec![0; nc],
            };
            cd.new_dataset_builder()
                .with_data(&part)
                .create("partition")?;
            let steps = root.create_group("Steps")?;
            steps
                .new_attr::<i64>()
                .create("NSteps")?
                .write_scalar(&0i64)?;
            let mut per_step = Vec::new();
            // (dataset, value written for the k-th step: `value * k`, or constant when value < 0)
            per_step.push((extensible::<f64>(&steps, "Values", 1024)?, 0));
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

            let w = file.create_group("wavecp")?;
            w.new_dataset_builder()
                .with_data(&xdmf_topo)
                .create("xdmf_topology")?;
            let rg = w.create_group("receivers")?;
            let pos: Vec<f64> = receivers.iter().flat_map(|r| r.position).collect();
            rg.new_dataset_builder()
                .with_data(
                    ndarray::ArrayView2::from_shape((receivers.len(), 2), &pos)
                        .map_err(|x| hdf5::Error::from(x.to_string().as_str()))?,
                )
                .create("positions")?;
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
            let rec_t = extensible::<f64>(&rg, "time", 4096)?;
            let energy = extensible::<f64>(&w, "energy", 1024)?;
            let energy_t = extensible::<f64>(&w, "energy_time", 1024)?;
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
        let xdmf = xdmf.then(|| path.with_extension("xdmf"));
        Ok(VtkHdfWriter {
            file,
            path: path.to_path_buf(),
            xdmf,
            num_nodes: n,
            num_cells: nc,
            topology_len: xdmf_topo.len(),
            times: Vec::new(),
            h,
            rec_rows: 0,
            nrec: receivers.len(),
        })
    }

    /// Appends receiver samples: `times.len()` rows of `nrec` values each (row-major).
    pub fn append_receivers(&mut self, times: &[f64], values: &[f64]) -> Result<(), OutputError> {
        if times.is_empty() || self.nrec == 0 {
            return Ok(());
        }
        let e = h5err(&self.path);
        let rows = times.len();
        let (r0, r1) = (self.rec_rows, self.rec_rows + rows);
        self.h.rec_u.resize((r1, self.nrec)).map_err(&e)?;
        let view = ndarray::ArrayView2::from_shape((rows, self.nrec), values).map_err(|x| {
            OutputError::Hdf5 {
                file: self.path.clone(),
                msg: x.to_string(),
            }
        })?;
        self.h.rec_u.write_slice(view, s![r0..r1, ..]).map_err(&e)?;
        append(&self.h.rec_t, times).map_err(&e)?;
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
        self.file.flush().map_err(&e)?;
        if let Some(x) = &self.xdmf {
            let name = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            write_xdmf(
                x,
                &name,
                self.num_nodes,
                self.num_cells,
                self.topology_len,
                &self.times,
            )?;
        }
        Ok(())
    }

    /// Reopens a file this writer made, keeping its first `steps` output steps and `rec_rows`
    /// receiver rows and dropping anything written after them (a restart from a checkpoint
    /// taken at that point).
    pub fn reopen(
        path: &Path,
        steps: usize,
        rec_rows: usize,
        xdmf: bool,
    ) -> Result<Self, OutputError> {
        let e = h5err(path);
        let file = File::open_rw(path).map_err(&e)?;
        let open = || -> hdf5::Result<(Handles, usize, usize, usize, Vec<f64>, usize)> {
            let root = file.group("VTKHDF")?;
            let n = root.dataset("NumberOfPoints")?.read_raw::<i64>()?[0] as usize;
            let nc = root.dataset("NumberOfCells")?.read_raw::<i64>()?[0] as usize;
            let steps_g = root.group("Steps")?;
            let have = steps_g.attr("NSteps")?.read_scalar::<i64>()? as usize;
            if steps > have {
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
            rec_u.resize((rec_rows, nrec))?;
            let rec_t = rg.dataset("time")?;
            rec_t.resize(rec_rows)?;
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
            Ok((h, n, nc, topology_len, times, nrec))
        };
        let (h, n, nc, topology_len, times, nrec) = open().map_err(&e)?;
        file.flush().map_err(&e)?;
        Ok(VtkHdfWriter {
            file,
            path: path.to_path_buf(),
            xdmf: xdmf.then(|| path.with_extension("xdmf")),
            num_nodes: n,
            num_cells: nc,
            topology_len,
            times,
            h,
            rec_rows,
            nrec,
        })
    }

    /// Receiver rows written so far.
    pub fn receiver_rows(&self) -> usize {
        self.rec_rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn xdmf_path(&self) -> Option<&Path> {
        self.xdmf.as_deref()
    }
    pub fn steps_written(&self) -> usize {
        self.times.len()
    }
}
