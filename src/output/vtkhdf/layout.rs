//! The layout of a VTKHDF file as wavecp writes it: the mesh and its cells (VTK and XDMF
//! numbering), the `Steps` group with its per-step offsets, wavecp's own group (receivers,
//! energy, XDMF topology) and the extra fields and values of a coupled run. Datasets that
//! grow are created empty and extensible here; `super` appends to them.

use crate::mesh::Mesh;
use crate::output::{ReceiverInfo, StepExtras};
use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, Group, Location};

const VTK_TRIANGLE: u8 = 5;
const VTK_QUAD: u8 = 9;
const XDMF_TRIANGLE: i64 = 4;
const XDMF_QUAD: i64 = 5;

pub(super) fn extensible<T: hdf5::H5Type>(
    g: &Group,
    name: &str,
    chunk: usize,
) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>()
        .chunk(chunk.max(1))
        .shape(0..)
        .create(name)
}

/// `units` and `description` attributes, so a reader does not have to guess.
pub(super) fn describe(obj: &Location, units: &str, description: &str) -> hdf5::Result<()> {
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

/// A mesh's cells as VTK (connectivity, offsets, types) and XDMF mixed topology.
pub(super) struct Cells {
    pub conn: Vec<i64>,
    pub offsets: Vec<i64>,
    pub types: Vec<u8>,
    pub xdmf_topo: Vec<i64>,
}

impl Cells {
    pub fn of(mesh: &Mesh) -> Self {
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
pub(super) fn write_grid(
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
pub(super) fn create_steps(
    root: &Group,
    n: usize,
    fields: &[String],
) -> hdf5::Result<(Group, PerStep)> {
    let steps = root.create_group("Steps")?;
    steps
        .new_attr::<i64>()
        .create("NSteps")?
        .write_scalar(&0i64)?;
    for g in ["PointDataOffsets", "CellDataOffsets"] {
        steps.create_group(g)?;
    }
    let mut per_step = Vec::new();
    for (group, name, per) in per_step_layout(n, fields) {
        let g = if group.is_empty() {
            steps.clone()
        } else {
            steps.group(group)?
        };
        let ds = if name == "Values" {
            let v = extensible::<f64>(&g, &name, 1024)?;
            describe(&v, "s", "time of each output step")?;
            v
        } else {
            extensible::<i64>(&g, &name, 1024)?
        };
        per_step.push((ds, per));
    }
    Ok((steps, per_step))
}

/// The datasets written once per output step, each with the value written for the k-th step
/// (`value · k`, or a constant where the value is negative).
pub(super) type PerStep = Vec<(Dataset, i64)>;

/// Where each per-step dataset lives under `Steps` (`""`: `Steps` itself), its name and its
/// value for the k-th step, `Values` (the times) first: what [`create_steps`] makes and
/// [`reopen_steps`] opens.
fn per_step_layout(n: usize, fields: &[String]) -> Vec<(&'static str, String, i64)> {
    let mut v: Vec<(&'static str, String, i64)> = vec![("", "Values".into(), 0)];
    for name in [
        "PartOffsets",
        "PointOffsets",
        "CellOffsets",
        "ConnectivityIdOffsets",
    ] {
        v.push(("", name.into(), 0));
    }
    v.push(("", "NumberOfParts".into(), -1));
    v.push(("PointDataOffsets", "u".into(), n as i64));
    for f in fields {
        v.push(("PointDataOffsets", f.clone(), n as i64));
    }
    v.push(("CellDataOffsets", "region".into(), 0));
    v.push(("CellDataOffsets", "partition".into(), 0));
    v
}

/// The per-step datasets of [`create_steps`] in a file being reopened at output step `steps`,
/// cut back to it (`NSteps` too), and the times of the steps kept.
pub(super) fn reopen_steps(
    steps_g: &Group,
    n: usize,
    steps: usize,
    fields: &[String],
) -> hdf5::Result<(PerStep, Vec<f64>)> {
    let mut per_step = Vec::new();
    for (group, name, per) in per_step_layout(n, fields) {
        let g = if group.is_empty() {
            steps_g.clone()
        } else {
            steps_g.group(group)?
        };
        per_step.push((g.dataset(&name)?, per));
    }
    let values = &per_step[0].0;
    values.resize(steps)?;
    let times = values.read_raw::<f64>()?;
    for (ds, _) in &per_step {
        ds.resize(steps)?;
    }
    steps_g.attr("NSteps")?.write_scalar(&(steps as i64))?;
    Ok((per_step, times))
}

/// wavecp's own group: the XDMF topology, the receivers (positions, names, extensible `u`
/// and `time`) and the energy series. Returns `(receiver u, receiver time, energy, energy
/// time)`.
pub(super) fn create_wavecp(
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

/// The extra point fields (`/VTKHDF/PointData/NAME`, steps back to back like `u`) and per-step
/// values (`/wavecp/steps/NAME`, one per output step) of `extras`.
pub(super) fn create_extras(
    root: &Group,
    file: &File,
    n: usize,
    extras: &StepExtras,
) -> hdf5::Result<(Vec<Dataset>, Vec<Dataset>)> {
    let pd = root.group("PointData")?;
    let fields = extras
        .fields
        .iter()
        .map(|f| {
            let d = extensible::<f64>(&pd, f, n.clamp(1, 1 << 20))?;
            describe(&d, "", "a point field written beside u at each output step")?;
            Ok(d)
        })
        .collect::<hdf5::Result<Vec<_>>>()?;
    let g = file.group("wavecp")?.create_group("steps")?;
    let values = extras
        .values
        .iter()
        .map(|v| {
            let d = extensible::<f64>(&g, v, 1024)?;
            describe(&d, "", "one value per output step (see Steps/Values)")?;
            Ok(d)
        })
        .collect::<hdf5::Result<Vec<_>>>()?;
    Ok((fields, values))
}

/// The extras of a file being reopened at output step `steps`, cut back to it: the point
/// fields other than `u`, and the per-step values (absent in a file of a plain run).
pub(super) fn reopen_extras(
    pd: &Group,
    file: &File,
    steps: usize,
    n: usize,
) -> hdf5::Result<(StepExtras, Vec<Dataset>, Vec<Dataset>)> {
    let mut names: Vec<String> = pd.member_names()?;
    names.retain(|m| m != "u");
    let values: Vec<String> = match file.group("wavecp")?.group("steps") {
        Ok(g) => g.member_names()?,
        Err(_) => vec![],
    };
    let extras = StepExtras::new(names, values);
    let fields = extras
        .fields
        .iter()
        .map(|f| {
            let d = pd.dataset(f)?;
            d.resize(steps * n)?;
            Ok(d)
        })
        .collect::<hdf5::Result<Vec<_>>>()?;
    let values = extras
        .values
        .iter()
        .map(|v| {
            let d = file.dataset(&format!("wavecp/steps/{v}"))?;
            d.resize(steps)?;
            Ok(d)
        })
        .collect::<hdf5::Result<Vec<_>>>()?;
    Ok((extras, fields, values))
}
