//! A simulation stepped by a host program (the C ABI, Fortran, Python): built from a job,
//! advanced when the host says, its field, boundary values and state read and written from
//! outside, output steps written when the host asks. Same bits as `wavecp solve` when the host
//! does what `wavecp solve` does.

use super::distribute::distribute;
use super::observers::Io;
use super::run::{simulation, RunOptions};
use super::setup::{invalid, DriverError};
use super::{Simulation, State};
use crate::comm::Comm;
use crate::config::Config;
use crate::mesh::PointLocation;
use crate::solver::NodalValues;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Tells a saved state from any other bytes.
const STATE_MAGIC: [u8; 8] = *b"WAVECPST";
/// Bumped when the saved state's layout changes.
const STATE_VERSION: u32 = 1;

/// One boundary tag of the job as the host sees it: its owned nodes and, where the host may set
/// values (an `external` boundary), each node's slot among the solver's node-by-node rows.
#[derive(Debug, Clone)]
struct HostTag {
    /// As written in the job (a physical name or a number), and the mesh's tag number.
    name: String,
    tag: i32,
    /// Owned local rows on edges with this tag, ascending.
    rows: Vec<u32>,
    /// `Some` for an external boundary: each row's slot, `None` where a later-listed Dirichlet
    /// boundary rules the node.
    slots: Option<Vec<Option<u32>>>,
}

/// What a saved state holds besides the field, to refuse bytes from another job or layout.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    magic: [u8; 8],
    version: u32,
    ranks: u32,
    rank: u32,
    layout: [u8; 32],
    dt: u64,
    state: State,
    nodal: NodalValues,
    /// What a coupling stepping the simulation keeps besides (its own encoding).
    extra: Vec<u8>,
}

/// A job's simulation driven by a host program. Collective calls (every rank of the
/// communicator calls them, in the same order) are marked so.
pub struct Hosted<'c> {
    sim: Simulation<'c>,
    io: Io,
    nsteps: usize,
    /// Whether the job writes a file (receiver rows are buffered every step only then).
    record: bool,
    tags: Vec<HostTag>,
    /// Job indices of this rank's receivers (their stencils are in `io.receivers`).
    rec_ids: Vec<usize>,
    nrec: usize,
    coords: Vec<[f64; 2]>,
    layout_digest: [u8; 32],
    pool: Option<rayon::ThreadPool>,
    finished: Option<(Option<PathBuf>, Option<PathBuf>)>,
}

impl<'c> Hosted<'c> {
    /// Builds the job's simulation on the ranks of `comm` (collective): mesh, partition,
    /// operators, time step, initial state, the output file when `output.path` is set (its
    /// steps are written by [`Hosted::write_output`]). `[checkpoint]` is not used: the host
    /// saves and loads states itself.
    pub fn new(
        cfg: &Config,
        base: &Path,
        job_file: Option<&Path>,
        comm: &'c dyn Comm,
    ) -> Result<Self, DriverError> {
        if cfg.coupling.is_some() {
            return Err(invalid(
                "coupling",
                "a job with [coupling]: its FE model alone would silently be another run than the \
                 job describes; a hybrid job is stepped through coupling::hosted::HostedHybrid \
                 (the C ABI does so), or remove [coupling] to step the FE model",
            ));
        }
        Self::new_coupled(cfg, base, job_file, comm)
    }

    /// [`Hosted::new`] of the FE part of a `[coupling]` job (its `[coupling]` ignored), for the
    /// coupling that drives it (`coupling::hosted`).
    pub fn new_coupled(
        cfg: &Config,
        base: &Path,
        job_file: Option<&Path>,
        comm: &'c dyn Comm,
    ) -> Result<Self, DriverError> {
        let mut cfg = cfg.clone();
        cfg.checkpoint.path = PathBuf::new();
        cfg.coupling = None;
        cfg.validate()?;
        let opts = RunOptions {
            job_file: job_file.map(Path::to_path_buf),
            ..RunOptions::default()
        };
        let pool = match cfg.solver.threads {
            0 => None,
            t => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .map_err(|e| DriverError::Threads(e.to_string()))?,
            ),
        };
        let (part, boundaries, root) = distribute(&cfg, base, &opts, comm)?;
        let no = part.layout.n_owned;
        let coords = part.mesh.coords[..no].to_vec();
        let names = cfg
            .boundary
            .iter()
            .flat_map(|b| b.tags.iter().map(move |t| (t.to_string(), b.kind)));
        let mut tags = Vec::new();
        for ((name, kind), (tag, _)) in names.zip(&boundaries) {
            let mut rows: Vec<u32> = part
                .mesh
                .boundary
                .iter()
                .filter(|e| e.tag == *tag)
                .flat_map(|e| e.nodes)
                .filter(|&v| (v as usize) < no)
                .collect();
            rows.sort_unstable();
            rows.dedup();
            let external = kind == crate::config::BoundaryKindConfig::External;
            tags.push((
                HostTag {
                    name,
                    tag: *tag,
                    rows,
                    slots: None,
                },
                external,
            ));
        }
        let receivers: Vec<PointLocation> = part.receivers.iter().map(|r| r.1).collect();
        let rec_ids: Vec<usize> = part.receivers.iter().map(|r| r.0).collect();
        let rec_u64: Vec<u64> = rec_ids.iter().map(|&i| i as u64).collect();
        let layout_digest = digest(&part.layout.global[..no]);
        let run = |part| simulation(&cfg, part, boundaries.clone(), comm);
        let (sim, nsteps, _) = match &pool {
            Some(p) => p.install(|| run(part))?,
            None => run(part)?,
        };
        let nodal = sim.solver().nodal_dirichlet_rows();
        let tags = tags
            .into_iter()
            .map(|(mut t, external)| {
                if external {
                    t.slots = Some(
                        t.rows
                            .iter()
                            .map(|r| nodal.binary_search(r).ok().map(|k| k as u32))
                            .collect(),
                    );
                }
                t
            })
            .collect();
        let record = !cfg.output.path.as_os_str().is_empty();
        let mut io = Io {
            extras: None,
            root,
            rec_u: Vec::new(),
            receivers,
            outputs: 0,
            energy: sim.initial_energy(),
            time: Duration::ZERO,
        };
        io.learn_layout(sim.layout(), &rec_u64, comm);
        if record {
            io.record(&sim);
        }
        Ok(Hosted {
            sim,
            io,
            nsteps,
            record,
            tags,
            rec_ids,
            nrec: cfg.receiver.len(),
            coords,
            layout_digest,
            pool,
            finished: None,
        })
    }

    /// Advances `n` steps (collective). Receiver values are buffered for the next output step
    /// when the job writes a file.
    pub fn advance(&mut self, n: usize) -> Result<(), DriverError> {
        self.check_open("advance")?;
        let Hosted {
            sim,
            io,
            record,
            pool,
            ..
        } = self;
        let mut go = || {
            if *record {
                for _ in 0..n {
                    sim.advance(1);
                    io.record(sim);
                }
            } else {
                sim.advance(n);
            }
        };
        match pool {
            Some(p) => p.install(go),
            None => go(),
        }
        Ok(())
    }

    /// Appends the current step to the job's output file (the receiver rows since the last
    /// one included), after checking that the field and its energy are finite (collective).
    pub fn write_output(&mut self) -> Result<(), DriverError> {
        self.check_open("write_output")?;
        let sim = &self.sim;
        sim.solver().check_finite_on(sim.comm())?;
        let energy = sim.energy();
        if !energy.is_finite() {
            return Err(DriverError::EnergyOverflow {
                step: sim.steps_done(),
                time: sim.time(),
            });
        }
        self.io.energy = energy;
        self.io.write(sim, energy)?;
        self.io.outputs += 1;
        Ok(())
    }

    /// Closes the output file under its final name (the running name until then) and ends
    /// the run: afterwards only queries are allowed. Returns the file and its XDMF sidecar
    /// (on rank 0). Collective; a second call returns the same.
    pub fn finish(&mut self) -> Result<(Option<PathBuf>, Option<PathBuf>), DriverError> {
        if let Some(f) = &self.finished {
            return Ok(f.clone());
        }
        let r = match self.io.root.as_mut() {
            Some(root) => root.finish()?,
            None => (None, None),
        };
        self.finished = Some(r.clone());
        Ok(r)
    }

    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    fn check_open(&self, what: &str) -> Result<(), DriverError> {
        match self.finished {
            Some(_) => Err(invalid(
                what,
                "the simulation is finished (its output is closed); create a new one",
            )),
            None => Ok(()),
        }
    }

    pub fn simulation(&self) -> &Simulation<'c> {
        &self.sim
    }

    /// Runs `f` on the simulation, for a coupling that takes the steps itself (the hybrid loop):
    /// receivers get one row, at the step `f` leaves the simulation at (not one a step). The
    /// job's `solver.threads` pool is not used (rayon's global one is).
    pub fn drive<R>(
        &mut self,
        f: impl FnOnce(&mut Simulation<'c>) -> Result<R, DriverError>,
    ) -> Result<R, DriverError> {
        self.check_open("advance")?;
        let r = f(&mut self.sim)?;
        if self.record {
            self.io.record(&self.sim);
        }
        Ok(r)
    }

    /// The job's number of steps (to `time.end`).
    pub fn job_steps(&self) -> usize {
        self.nsteps
    }

    /// Global (mesh file) numbers of this rank's owned nodes, in the order of every field.
    pub fn node_ids(&self) -> &[u64] {
        &self.sim.layout().global[..self.sim.layout().n_owned]
    }

    /// Coordinates of this rank's owned nodes.
    pub fn coords(&self) -> &[[f64; 2]] {
        &self.coords
    }

    /// Sets both time levels (this rank's owned values); the step stays. Collective.
    pub fn set_field(&mut self, u: &[f64], u_prev: &[f64]) -> Result<(), DriverError> {
        self.check_open("set_field")?;
        let no = self.sim.layout().n_owned;
        let mut bad = None;
        for (what, v) in [("u", u), ("u_prev", u_prev)] {
            if v.len() != no {
                bad = Some(invalid(
                    what,
                    format!("{} values for {no} owned nodes", v.len()),
                ));
            } else if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                bad = Some(invalid(what, format!("{x} is not a finite number")));
            }
        }
        agree(self.sim.comm(), bad.map_or(Ok(()), Err), "set_field")?;
        let s = State {
            step: self.sim.steps_done(),
            u: u.to_vec(),
            u_prev: u_prev.to_vec(),
            initial_energy: self.sim.initial_energy(),
        };
        self.sim.restore(&s)
    }

    fn tag(&self, name: &str) -> Result<&HostTag, DriverError> {
        self.tags
            .iter()
            .find(|t| t.name == name || t.tag.to_string() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.tags.iter().map(|t| t.name.as_str()).collect();
                invalid(
                    "boundary",
                    format!(
                        "no boundary `{name}` in the job's [[boundary]] sections; it has: {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// Global ids of this rank's owned nodes on boundary `name`, ascending local order.
    pub fn boundary_nodes(&self, name: &str) -> Result<Vec<u64>, DriverError> {
        let t = self.tag(name)?;
        let g = &self.sim.layout().global;
        Ok(t.rows.iter().map(|&r| g[r as usize]).collect())
    }

    /// How many owned nodes the external boundary `name` has (an error for another kind).
    pub fn external_nodes(&self, name: &str) -> Result<usize, DriverError> {
        match &self.tag(name)?.slots {
            Some(s) => Ok(s.len()),
            None => Err(invalid(
                "boundary",
                format!("boundary `{name}` is not `kind = \"external\"` in the job, so its values are not the host's to set"),
            )),
        }
    }

    /// Values the next step imposes on the owned nodes of external boundary `name`, in the
    /// order of [`Hosted::boundary_nodes`]; kept until replaced. A node that a later-listed
    /// Dirichlet boundary rules ignores its value. Not collective.
    pub fn set_boundary_values(&mut self, name: &str, values: &[f64]) -> Result<(), DriverError> {
        self.check_open("set_boundary_values")?;
        let t = self.tag(name)?;
        let Some(slots) = &t.slots else {
            return Err(invalid(
                "boundary",
                format!("boundary `{name}` is not `kind = \"external\"` in the job, so its values are not the host's to set"),
            ));
        };
        if let Some(x) = values.iter().find(|x| !x.is_finite()) {
            return Err(invalid(
                "boundary",
                format!("boundary `{name}`: {x} is not a finite number"),
            ));
        }
        if values.len() != slots.len() {
            return Err(invalid(
                "boundary",
                format!(
                    "boundary `{name}` has {} nodes on this rank, {} values given",
                    slots.len(),
                    values.len()
                ),
            ));
        }
        let (k, v): (Vec<u32>, Vec<f64>) = slots
            .iter()
            .zip(values)
            .filter_map(|(s, v)| s.map(|s| (s, *v)))
            .unzip();
        self.sim.solver_mut().set_nodal_dirichlet_slots(&k, &v)?;
        Ok(())
    }

    /// Receivers of the job.
    pub fn num_receivers(&self) -> usize {
        self.nrec
    }

    /// Every receiver's value now, on every rank (collective).
    pub fn receiver_values(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.nrec];
        let u = self.sim.solver().u();
        for (loc, &i) in self.io.receivers.iter().zip(&self.rec_ids) {
            v[i] = loc.interpolate(u);
        }
        self.sim.comm().sum_f64(&mut v);
        v
    }

    /// This rank's state as bytes: load them into a simulation of the same job on the same
    /// ranks to continue bit for bit.
    pub fn save_state(&self) -> Vec<u8> {
        self.save_state_with(Vec::new())
    }

    /// [`Hosted::save_state`] with a coupling's own state beside (`load_state` gives it back).
    pub fn save_state_with(&self, extra: Vec<u8>) -> Vec<u8> {
        let comm = self.sim.comm();
        crate::comm::to_bytes(&Saved {
            magic: STATE_MAGIC,
            version: STATE_VERSION,
            ranks: comm.size() as u32,
            rank: comm.rank() as u32,
            layout: self.layout_digest,
            dt: self.sim.dt().to_bits(),
            state: self.sim.state(),
            nodal: self.sim.solver().nodal_values(),
            extra,
        })
    }

    /// Continues from a state [`Hosted::save_state`] gave; refuses one of another job, layout
    /// or rank. Returns the coupling's state saved beside it (empty if none). Collective.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<Vec<u8>, DriverError> {
        self.check_open("load_state")?;
        let s = agree(self.sim.comm(), self.check_state(bytes), "state")?;
        self.sim.solver_mut().restore_nodal_values(&s.nodal)?;
        self.sim.restore(&s.state)?;
        Ok(s.extra)
    }

    fn check_state(&self, bytes: &[u8]) -> Result<Saved, DriverError> {
        let bad = |msg: String| invalid("state", msg);
        let s: Saved =
            bincode::deserialize(bytes).map_err(|e| bad(format!("not a wavecp state ({e})")))?;
        if s.magic != STATE_MAGIC {
            return Err(bad("not a wavecp state (wrong magic bytes)".into()));
        }
        if s.version != STATE_VERSION {
            return Err(bad(format!(
                "state format {} (this wavecp reads {STATE_VERSION})",
                s.version
            )));
        }
        let comm = self.sim.comm();
        if (s.ranks as usize, s.rank as usize) != (comm.size(), comm.rank()) {
            return Err(bad(format!(
                "saved by rank {} of {}, loaded on rank {} of {}",
                s.rank,
                s.ranks,
                comm.rank(),
                comm.size()
            )));
        }
        if s.layout != self.layout_digest || s.dt != self.sim.dt().to_bits() {
            return Err(bad(
                "saved by a simulation of another job (its nodes or time step differ)".into(),
            ));
        }
        let no = self.sim.layout().n_owned;
        if s.state.u.len() != no || s.state.u_prev.len() != no {
            return Err(bad("its field has the wrong length for this layout".into()));
        }
        Ok(s)
    }
}

/// `checked` where every rank's check passed, else an error on every rank (this rank's own, or
/// one naming `key` where another rank refused): collective, so no rank goes on to a restore's
/// exchange that the others never reach.
fn agree<T>(comm: &dyn Comm, checked: Result<T, DriverError>, key: &str) -> Result<T, DriverError> {
    let mut flag = [f64::from(u8::from(checked.is_err()))];
    comm.max_f64(&mut flag);
    match checked {
        Ok(_) if flag[0] != 0.0 => Err(invalid(key, "another rank refused its input")),
        other => other,
    }
}

fn digest(ids: &[u64]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for i in ids {
        h.update(i.to_le_bytes());
    }
    h.finalize().into()
}
