//! Steps 1–2 on rank 0 and the hand-out: the global problem, its partition and the output
//! file; the paths refused before anything is written; every rank's part.

use super::checkpoint::job_digest;
use super::run::RunOptions;
use super::setup::{invalid, setup, DriverError};
use crate::comm::Comm;
use crate::config::Config;
use crate::mesh::{Mesh, PointLocation};
use crate::output::ReceiverInfo;
use crate::partition::{build_parts, partition_cells, GlobalPieces, Layout, LocalPart};
use crate::solver::BoundaryKind;
use std::path::{Path, PathBuf};

/// What only rank 0 holds: the output file and how gathered vectors map to global order.
pub(crate) struct RootIo {
    pub writer: Option<Writer>,
    pub nodes: usize,
    pub cells: usize,
    /// Owned global node ids of every rank, concatenated in rank order, and their counts.
    pub owned_ids: Vec<u64>,
    pub owned_counts: Vec<usize>,
    /// Receivers per rank and their job indices, concatenated in rank order.
    pub rec_counts: Vec<u64>,
    pub rec_ids: Vec<u64>,
    pub nrec: usize,
    pub rec_t: Vec<f64>,
    pub rec_rows_written: usize,
    pub ghost_cells: usize,
    /// `job_digest` of this job (zeros when no checkpoint is configured).
    pub job: [u8; 32],
}

#[cfg(feature = "hdf5")]
pub(crate) type Writer = crate::output::VtkHdfWriter;
#[cfg(not(feature = "hdf5"))]
pub(crate) type Writer = ();

/// Refuses output and checkpoint paths that would replace an input, each other, or something
/// that is not a regular file (a device, a FIFO, a folder). Rank 0, before anything is written.
fn check_paths(cfg: &Config, base: &Path, opts: &RunOptions) -> Result<(), DriverError> {
    use crate::output::target::{check_replaceable, running_path, sibling, which_of};
    let inputs =
        crate::config::input_files(&cfg.mesh, &cfg.material, base, opts.job_file.as_deref());
    let mut outputs: Vec<(&str, PathBuf)> = Vec::new();
    let out = &cfg.output.path;
    if !out.as_os_str().is_empty() {
        let run = running_path(out);
        outputs.push(("output.path", out.clone()));
        outputs.push((
            "output.path (its .xdmf sidecar)",
            out.with_extension("xdmf"),
        ));
        for suffix in ["receivers.csv", "energy.csv"] {
            outputs.push(("output.path (its tables)", sibling(out, suffix)));
            outputs.push(("output.path (its tables)", sibling(&run, suffix)));
        }
        outputs.push(("output.path (the running file)", run.clone()));
        outputs.push((
            "output.path (its .xdmf sidecar)",
            run.with_extension("xdmf"),
        ));
    }
    let ck = &cfg.checkpoint.path;
    if !ck.as_os_str().is_empty() {
        check_replaceable(ck, "checkpoint")
            .map_err(|e| invalid("checkpoint.path", e.to_string()))?;
        let all: Vec<_> = inputs.iter().chain(&outputs).cloned().collect();
        if let Some(what) = which_of(ck, &all) {
            return Err(invalid(
                "checkpoint.path",
                format!(
                    "{} is {what}; give the checkpoint a path of its own",
                    ck.display()
                ),
            ));
        }
    }
    for (what, p) in &outputs {
        check_replaceable(p, "output").map_err(|e| invalid("output.path", e.to_string()))?;
        if let Some(input) = which_of(p, &inputs) {
            return Err(invalid(
                "output.path",
                format!(
                    "{} ({what}) is {input}; it would be overwritten",
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) type Boundaries = Vec<(i32, BoundaryKind)>;

/// Steps 1–2 on rank 0: the global problem, its partition, the output file; then every rank
/// gets its part. A failure on rank 0 reaches every rank as an error, so none waits for ever.
pub(crate) fn distribute(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<(LocalPart, Boundaries, Option<RootIo>), DriverError> {
    let size = comm.size();
    let mut root_io = None;
    let mut status = Vec::new();
    let mut parts = None;
    let mut bnd = Vec::new();
    if comm.rank() == 0 {
        let built = build_on_root(cfg, base, opts, size);
        match built {
            Ok((b, io, bd)) => {
                parts = Some(b);
                root_io = Some(io);
                bnd = bd;
                status.push(0u8);
                status.extend(crate::comm::to_bytes(&bnd));
            }
            Err(e) => {
                status.push(1u8);
                status.extend(e.to_string().into_bytes());
                comm.broadcast_bytes(&mut status);
                return Err(e);
            }
        }
    }
    comm.broadcast_bytes(&mut status);
    if status.first() != Some(&0) {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(status.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    if comm.rank() != 0 {
        bnd = bincode::deserialize(&status[1..])
            .map_err(|e| DriverError::OtherRank(e.to_string()))?;
    }
    let bytes = match parts {
        Some(Payload::Whole(part)) => return Ok((*part, bnd, root_io)),
        Some(Payload::Bytes(b)) => comm.scatter_bytes(Some(b)),
        None => comm.scatter_bytes(None),
    };
    let part: LocalPart =
        bincode::deserialize(&bytes).map_err(|e| DriverError::OtherRank(e.to_string()))?;
    Ok((part, bnd, root_io))
}

/// Rank 0's share of [`distribute`]: the path checks, the global problem, its partition into
/// `size` parts (serialised for the other ranks), the output file and the job digest.
fn build_on_root(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    size: usize,
) -> Result<(Payload, RootIo, Boundaries), DriverError> {
    check_paths(cfg, base, opts)?;
    let s = setup(cfg, base)?;
    let job = if cfg.checkpoint.path.as_os_str().is_empty() {
        [0; 32]
    } else {
        job_digest(&s)
    };
    let mesh = &s.problem.mesh;
    tracing::info!(
        "mesh: {} nodes, {} triangles, {} quads; {size} rank(s)",
        mesh.num_nodes(),
        mesh.tris.len(),
        mesh.quads.len()
    );
    let cell_part = partition_cells(mesh, size, cfg.solver.partition)?;
    let info: Vec<ReceiverInfo> = s.receivers.iter().map(|r| r.0.clone()).collect();
    let writer = open_writer(cfg, mesh, &info, &cell_part, opts)?;
    let (nodes, cells) = (mesh.num_nodes(), mesh.num_cells());
    let boundaries = s.problem.boundaries.clone();
    let (payload, ghost_cells) = if size == 1 {
        // One rank: the problem as it is (the part build_parts would make is the same,
        // but a copy of the whole mesh).
        let receivers = s
            .receivers
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.1))
            .collect();
        let whole = LocalPart {
            rank: 0,
            layout: Layout::serial(nodes),
            mesh: s.problem.mesh,
            speed: s.problem.speed,
            sources: s.problem.sources,
            receivers,
            u0: s.u0,
            v0: s.v0,
            owned_cells: cells,
        };
        (Payload::Whole(Box::new(whole)), 0)
    } else {
        let recs: Vec<PointLocation> = s.receivers.iter().map(|r| r.1).collect();
        let pieces = GlobalPieces {
            mesh,
            speed: &s.problem.speed,
            sources: &s.problem.sources,
            receivers: &recs,
            u0: &s.u0,
            v0: &s.v0,
        };
        let local = build_parts(&pieces, &cell_part, size);
        let ghost_cells: usize = local
            .iter()
            .map(|p| p.mesh.num_cells() - p.owned_cells.min(p.mesh.num_cells()))
            .sum();
        let bytes = local.iter().map(crate::comm::to_bytes).collect();
        (Payload::Bytes(bytes), ghost_cells)
    };
    Ok((
        payload,
        RootIo {
            writer,
            nodes,
            cells,
            owned_ids: Vec::new(),
            owned_counts: Vec::new(),
            rec_counts: Vec::new(),
            rec_ids: Vec::new(),
            nrec: info.len(),
            rec_t: Vec::new(),
            rec_rows_written: 0,
            ghost_cells,
            job,
        },
        boundaries,
    ))
}

/// Rank 0's parts: serialised for the other ranks, or the whole problem for a serial run.
enum Payload {
    Bytes(Vec<Vec<u8>>),
    Whole(Box<LocalPart>),
}

#[cfg(feature = "hdf5")]
fn open_writer(
    cfg: &Config,
    mesh: &Mesh,
    info: &[ReceiverInfo],
    cell_part: &[u32],
    opts: &RunOptions,
) -> Result<Option<Writer>, DriverError> {
    if cfg.output.path.as_os_str().is_empty() {
        return Ok(None);
    }
    // On restart the file is reopened once the checkpoint says how much of it to keep.
    if opts.restart && checkpoint_exists(cfg) {
        return Ok(None);
    }
    Ok(Some(crate::output::VtkHdfWriter::create(
        &cfg.output.path,
        mesh,
        info,
        cfg.output.xdmf,
        Some(cell_part),
        &opts.extras,
    )?))
}

#[cfg(not(feature = "hdf5"))]
fn open_writer(
    cfg: &Config,
    _: &Mesh,
    _: &[ReceiverInfo],
    _: &[u32],
    _: &RunOptions,
) -> Result<Option<Writer>, DriverError> {
    if cfg.output.path.as_os_str().is_empty() {
        Ok(None)
    } else {
        Err(crate::output::OutputError::NoHdf5.into())
    }
}

pub(crate) fn checkpoint_exists(cfg: &Config) -> bool {
    !cfg.checkpoint.path.as_os_str().is_empty() && cfg.checkpoint.path.exists()
}

impl super::observers::Io {
    /// Rank 0 learns where every rank's owned values and receivers (`rec_ids`: their indices
    /// in the job) go. Collective.
    pub(crate) fn learn_layout(&mut self, layout: &Layout, rec_ids: &[u64], comm: &dyn Comm) {
        let no = layout.n_owned;
        let owned_ids = comm.gather_u64(&layout.global[..no]);
        let owned_counts = comm.gather_u64(&[no as u64]);
        let rec_counts = comm.gather_u64(&[rec_ids.len() as u64]);
        let rec_ids = comm.gather_u64(rec_ids);
        if let Some(io) = self.root.as_mut() {
            io.owned_ids = owned_ids.unwrap_or_default();
            io.owned_counts = owned_counts
                .unwrap_or_default()
                .into_iter()
                .map(|c| c as usize)
                .collect();
            io.rec_counts = rec_counts.unwrap_or_default();
            io.rec_ids = rec_ids.unwrap_or_default();
        }
    }
}
