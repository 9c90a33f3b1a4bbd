//! Runs a job: 1. mesh, 2. materials and boundaries, 3. solver and time step, 4. initial state,
//! 5. time loop with receivers and output, 6. summary.

use crate::config::{
    BoundaryKindConfig, Config, ConfigError, GenerateConfig, MeshConfig, ReceiverConfig,
    SourceConfig, TimeConfig, TimeFunctionKind,
};
use crate::fem::WaveSpeed;
use crate::mesh::{self, CellShape, Mesh, MeshError, PointLocation};
use crate::output::{OutputError, ReceiverInfo};
use crate::progress::Progress;
use crate::solver::{BoundaryKind, Problem, SolverError, WaveSolver};
use crate::sources::{Gaussian, PointSource, TimeFunction};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Any failure of a run, with the layer it came from.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Solver(#[from] SolverError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("job key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
    #[error("cannot build a thread pool: {0}")]
    Threads(String),
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> DriverError {
    DriverError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

/// What a run reports (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub nodes: usize,
    pub cells: usize,
    pub steps: usize,
    pub dt: f64,
    pub dt_limit: f64,
    pub end_time: f64,
    pub wall_s: f64,
    pub compute_s: f64,
    pub output_s: f64,
    pub dof_updates_per_s: f64,
    pub initial_energy: f64,
    pub final_energy: f64,
    pub output_steps: usize,
    pub output: Option<PathBuf>,
    pub xdmf: Option<PathBuf>,
    pub receivers: usize,
}

/// Options that are not part of the job.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// Test hook: abort the process (no clean-up, as a crash would) after this many output steps.
    pub abort_after_outputs: Option<usize>,
}

/// The discrete problem and its initial state built from a job.
pub struct Setup {
    pub problem: Problem,
    pub u0: Vec<f64>,
    pub v0: Vec<f64>,
    pub receivers: Vec<(ReceiverInfo, PointLocation)>,
}

/// Reads or generates the mesh of a job; `base` is the job file's folder.
pub fn load_mesh(m: &MeshConfig, base: &Path) -> Result<Mesh, DriverError> {
    match (&m.file, &m.generate) {
        (Some(f), None) => Ok(mesh::read_msh(&base.join(f))?),
        (None, Some(g)) => Ok(mesh::rectangle(g.shape, g.nx, g.ny, g.x, g.y)?),
        _ => Err(invalid("mesh", "give either `file` or `generate`")),
    }
}

/// Steps 1–2: mesh, materials, boundaries, sources, initial fields, receivers.
pub fn setup(cfg: &Config, base: &Path) -> Result<Setup, DriverError> {
    let mesh = load_mesh(&cfg.mesh, base)?;
    let speed = wave_speed(cfg, &mesh, base)?;
    let mut boundaries = Vec::new();
    for (i, b) in cfg.boundary.iter().enumerate() {
        let kind = match b.kind {
            BoundaryKindConfig::Neumann => BoundaryKind::Neumann,
            BoundaryKindConfig::Absorbing => BoundaryKind::Absorbing,
            BoundaryKindConfig::Dirichlet => BoundaryKind::Dirichlet(match b.time_function {
                TimeFunctionKind::Constant => TimeFunction::Constant(b.value),
                TimeFunctionKind::Sine => TimeFunction::Sine {
                    amplitude: b.value,
                    frequency: b.frequency.unwrap_or(0.0),
                },
                TimeFunctionKind::Ricker => {
                    let f = b.frequency.unwrap_or(1.0);
                    TimeFunction::Ricker {
                        amplitude: b.value,
                        frequency: f,
                        delay: b.delay.unwrap_or(1.2 / f),
                    }
                }
            }),
        };
        for t in &b.tags {
            let tag = mesh.resolve_tag(1, &t.to_string()).ok_or_else(|| {
                let known: Vec<String> = mesh
                    .boundary_tags()
                    .keys()
                    .map(|k| match mesh.names.get(&(1, *k)) {
                        Some(n) => format!("{k} ({n})"),
                        None => k.to_string(),
                    })
                    .collect();
                invalid(
                    format!("boundary[{i}].tags"),
                    format!(
                        "no boundary `{t}` in the mesh; it has: {}",
                        known.join(", ")
                    ),
                )
            })?;
            boundaries.push((tag, kind));
        }
    }
    let mut sources = Vec::new();
    for (i, s) in cfg.source.iter().enumerate() {
        sources.push(point_source(&mesh, s).ok_or_else(|| {
            invalid(
                format!("source[{i}].position"),
                format!("{:?} is outside the mesh", s.position),
            )
        })?);
    }
    let sum = |list: &[Gaussian]| -> Vec<f64> {
        mesh.coords
            .iter()
            .map(|p| list.iter().map(|g| g.eval(*p)).sum())
            .collect()
    };
    let u0 = sum(&cfg.initial.displacement);
    let v0 = sum(&cfg.initial.velocity);
    let mut receivers = Vec::new();
    for (i, r) in cfg.receiver.iter().enumerate() {
        let loc = mesh.locate(r.position).ok_or_else(|| {
            invalid(
                format!("receiver[{i}].position"),
                format!("{:?} is outside the mesh", r.position),
            )
        })?;
        let name = r.name.clone().unwrap_or_else(|| format!("r{i}"));
        receivers.push((
            ReceiverInfo {
                name,
                position: r.position,
            },
            loc,
        ));
    }
    Ok(Setup {
        problem: Problem {
            mesh,
            speed,
            boundaries,
            sources,
            operator: cfg.solver.operator,
        },
        u0,
        v0,
        receivers,
    })
}

/// A Ricker point source located in the mesh, `None` when the point is outside.
pub fn point_source(mesh: &Mesh, s: &SourceConfig) -> Option<PointSource> {
    let location = mesh.locate(s.position)?;
    let wavelet = TimeFunction::Ricker {
        amplitude: s.amplitude,
        frequency: s.frequency,
        delay: s.delay.unwrap_or(1.2 / s.frequency),
    };
    Some(PointSource { location, wavelet })
}

fn wave_speed(cfg: &Config, mesh: &Mesh, base: &Path) -> Result<WaveSpeed, DriverError> {
    let m = &cfg.material;
    if let Some(regions) = &m.regions {
        let mut per_tag = std::collections::BTreeMap::new();
        for (k, c) in regions {
            let tag = mesh.resolve_tag(2, k).ok_or_else(|| {
                invalid(
                    format!("material.regions.{k}"),
                    "no such region (physical surface) in the mesh",
                )
            })?;
            per_tag.insert(tag, *c);
        }
        let tags = mesh.cell_tags();
        let mut c = Vec::with_capacity(tags.len());
        for t in tags {
            let v = per_tag.get(&t).ok_or_else(|| {
                let name = mesh
                    .names
                    .get(&(2, t))
                    .cloned()
                    .unwrap_or_else(|| t.to_string());
                invalid(
                    "material.regions",
                    format!("region `{name}` has cells but no wave speed"),
                )
            })?;
            c.push(*v);
        }
        return Ok(WaveSpeed::PerCell(c));
    }
    if let Some(f) = &m.nodal_file {
        let path = base.join(f);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid("material.nodal_file", format!("{}: {e}", path.display())))?;
        let vals: Result<Vec<f64>, _> = text.split_whitespace().map(str::parse::<f64>).collect();
        let vals =
            vals.map_err(|e| invalid("material.nodal_file", format!("{}: {e}", path.display())))?;
        if vals.len() != mesh.num_nodes() {
            return Err(invalid(
                "material.nodal_file",
                format!(
                    "{}: {} values for {} nodes",
                    path.display(),
                    vals.len(),
                    mesh.num_nodes()
                ),
            ));
        }
        return Ok(WaveSpeed::Nodal(vals));
    }
    Ok(WaveSpeed::PerCell(vec![
        m.c.unwrap_or(1.0);
        mesh.num_cells()
    ]))
}

/// Step 3: chooses the time step and the number of steps. With no `dt` given, takes
/// `safety × limit`, then shrinks it so a whole number of steps lands on `end`.
pub fn time_step(t: &TimeConfig, solver: &mut WaveSolver) -> Result<usize, DriverError> {
    let (dt, n) = match t.dt {
        Some(dt) => (dt, (t.end / dt - 1e-9).ceil().max(1.0) as usize),
        None => {
            let n = (t.end / (t.safety * solver.dt_limit())).ceil().max(1.0) as usize;
            (t.end / n as f64, n)
        }
    };
    solver.set_dt(dt)?;
    Ok(n)
}

/// Runs a job to the end; writes output when `output.path` is not empty.
pub fn run(cfg: &Config, base: &Path, opts: &RunOptions) -> Result<RunSummary, DriverError> {
    crate::threads::with_threads(cfg.solver.threads, || run_inner(cfg, base, opts))
        .map_err(DriverError::Threads)?
}

fn run_inner(cfg: &Config, base: &Path, opts: &RunOptions) -> Result<RunSummary, DriverError> {
    let wall = Instant::now();
    // 1–2. Mesh and problem.
    let s = setup(cfg, base)?;
    let mesh = &s.problem.mesh;
    tracing::info!(
        "mesh: {} nodes, {} triangles, {} quads",
        mesh.num_nodes(),
        mesh.tris.len(),
        mesh.quads.len()
    );
    // 3. Operators and time step.
    let mut solver = WaveSolver::new(&s.problem)?;
    let nsteps = time_step(&cfg.time, &mut solver)?;
    tracing::info!(
        "dt = {:.4e} (stability limit {:.4e}), {nsteps} steps to t = {:.4e}",
        solver.dt(),
        solver.dt_limit(),
        nsteps as f64 * solver.dt()
    );
    // 4. Initial state.
    solver.set_initial(&s.u0, &s.v0)?;
    let mut out = Output::open(cfg, mesh, &s.receivers)?;
    let mut output_time = Duration::ZERO;
    let t0 = Instant::now();
    let e0 = solver.energy();
    out.record_receivers(&s.receivers, &solver);
    out.write(&solver, e0)?;
    output_time += t0.elapsed();
    // 5. Time loop.
    let mut progress = Progress::new(
        "solve",
        nsteps as u64,
        opts.progress,
        Duration::from_secs(10),
    );
    let mut compute = Duration::ZERO;
    let mut outputs = 1;
    let mut energy = e0;
    for n in 1..=nsteps {
        let t = Instant::now();
        solver.step();
        compute += t.elapsed();
        let t = Instant::now();
        out.record_receivers(&s.receivers, &solver);
        if n % cfg.output.every == 0 || n == nsteps {
            solver.check_finite()?;
            energy = solver.energy();
            out.write(&solver, energy)?;
            outputs += 1;
            if opts.abort_after_outputs == Some(outputs) {
                std::process::abort();
            }
        }
        output_time += t.elapsed();
        progress.set(n as u64);
    }
    progress.finish();
    // 6. Summary.
    let summary = RunSummary {
        nodes: mesh.num_nodes(),
        cells: mesh.num_cells(),
        steps: nsteps,
        dt: solver.dt(),
        dt_limit: solver.dt_limit(),
        end_time: solver.time(),
        wall_s: wall.elapsed().as_secs_f64(),
        compute_s: compute.as_secs_f64(),
        output_s: output_time.as_secs_f64(),
        dof_updates_per_s: (nsteps * mesh.num_nodes()) as f64 / compute.as_secs_f64().max(1e-12),
        initial_energy: e0,
        final_energy: energy,
        output_steps: outputs,
        output: out.path(),
        xdmf: out.xdmf_path(),
        receivers: s.receivers.len(),
    };
    tracing::info!(
        "done: {} steps in {:.2} s compute + {:.2} s output, {:.3e} DoF-updates/s, energy {:.6e} -> {:.6e}",
        summary.steps, summary.compute_s, summary.output_s, summary.dof_updates_per_s, e0, energy
    );
    Ok(summary)
}

/// Output sink: the VTKHDF writer (when enabled) and the receiver buffer between writes.
struct Output {
    #[cfg(feature = "hdf5")]
    writer: Option<crate::output::VtkHdfWriter>,
    rec_t: Vec<f64>,
    rec_u: Vec<f64>,
}

impl Output {
    fn open(
        cfg: &Config,
        mesh: &Mesh,
        receivers: &[(ReceiverInfo, PointLocation)],
    ) -> Result<Self, DriverError> {
        let cap = cfg.output.every + 1;
        let rec_t = Vec::with_capacity(cap);
        let rec_u = Vec::with_capacity(cap * receivers.len());
        if cfg.output.path.as_os_str().is_empty() {
            return Ok(Output {
                #[cfg(feature = "hdf5")]
                writer: None,
                rec_t,
                rec_u,
            });
        }
        #[cfg(feature = "hdf5")]
        {
            let info: Vec<ReceiverInfo> = receivers.iter().map(|r| r.0.clone()).collect();
            let w = crate::output::VtkHdfWriter::create(
                &cfg.output.path,
                mesh,
                &info,
                cfg.output.xdmf,
            )?;
            Ok(Output {
                writer: Some(w),
                rec_t,
                rec_u,
            })
        }
        #[cfg(not(feature = "hdf5"))]
        {
            let _ = (mesh, rec_t, rec_u);
            Err(OutputError::NoHdf5.into())
        }
    }

    /// Buffers one receiver row (capacity reserved up front: no allocation in the loop).
    fn record_receivers(
        &mut self,
        receivers: &[(ReceiverInfo, PointLocation)],
        solver: &WaveSolver,
    ) {
        if receivers.is_empty() {
            return;
        }
        self.rec_t.push(solver.time());
        for (_, loc) in receivers {
            self.rec_u.push(loc.interpolate(solver.u()));
        }
    }

    fn write(&mut self, solver: &WaveSolver, energy: f64) -> Result<(), DriverError> {
        #[cfg(feature = "hdf5")]
        if let Some(w) = &mut self.writer {
            w.append_receivers(&self.rec_t, &self.rec_u)?;
            w.write_step(solver.time(), solver.u(), energy)?;
        }
        let _ = (solver, energy);
        self.rec_t.clear();
        self.rec_u.clear();
        Ok(())
    }

    fn path(&self) -> Option<PathBuf> {
        #[cfg(feature = "hdf5")]
        return self.writer.as_ref().map(|w| w.path().to_path_buf());
        #[cfg(not(feature = "hdf5"))]
        None
    }

    fn xdmf_path(&self) -> Option<PathBuf> {
        #[cfg(feature = "hdf5")]
        return self
            .writer
            .as_ref()
            .and_then(|w| w.xdmf_path().map(Path::to_path_buf));
        #[cfg(not(feature = "hdf5"))]
        None
    }
}

/// The built-in demo: a 6 Hz Ricker source in a unit square with absorbing sides, 400 × 400
/// quads (160 801 nodes), three receivers, to t = 1.5, output every 25 steps to `wavecp_demo.vtkhdf`.
pub fn demo_config() -> Config {
    Config {
        mesh: MeshConfig {
            file: None,
            generate: Some(GenerateConfig {
                shape: CellShape::Quad,
                nx: 400,
                ny: 400,
                x: [0.0, 1.0],
                y: [0.0, 1.0],
            }),
        },
        material: crate::config::MaterialConfig {
            c: Some(1.0),
            ..Default::default()
        },
        boundary: vec![crate::config::BoundaryConfig {
            tags: ["bottom", "right", "top", "left"]
                .iter()
                .map(|s| crate::config::TagRef::Name((*s).into()))
                .collect(),
            kind: BoundaryKindConfig::Absorbing,
            value: 0.0,
            time_function: TimeFunctionKind::Constant,
            frequency: None,
            delay: None,
        }],
        source: vec![SourceConfig {
            position: [0.4, 0.45],
            frequency: 6.0,
            amplitude: 1.0,
            delay: None,
        }],
        initial: Default::default(),
        time: TimeConfig {
            end: 1.5,
            dt: None,
            safety: 0.9,
        },
        receiver: [[0.5, 0.75], [0.75, 0.5], [0.9, 0.9]]
            .iter()
            .enumerate()
            .map(|(i, p)| ReceiverConfig {
                position: *p,
                name: Some(format!("r{i}")),
            })
            .collect(),
        output: crate::config::OutputConfig {
            path: "wavecp_demo.vtkhdf".into(),
            every: 25,
            xdmf: true,
        },
        solver: Default::default(),
    }
}
