//! Steps 1–3 of a run from its job: the mesh, the discrete problem (materials, boundaries,
//! sources, initial fields, receivers) and the time step; the errors of a run; the demo job.

use crate::config::{
    BoundaryConfig, BoundaryKindConfig, Config, ConfigError, GenerateConfig, MeshConfig,
    ReceiverConfig, SourceConfig, TimeConfig, TimeFunctionKind,
};
use crate::fem::WaveSpeed;
use crate::mesh::{self, CellShape, Mesh, MeshError, PointLocation};
use crate::output::{OutputError, ReceiverInfo};
use crate::partition::PartitionError;
use crate::solver::{BoundaryKind, Problem, SolverError, WaveSolver};
use crate::sources::{Gaussian, PointSource, TimeFunction};
use std::path::Path;

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
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("the discrete energy is not a finite number at t = {time:e} (step {step}): the field overflows; check the amplitudes of the sources, the initial state and the boundary values")]
    EnergyOverflow { step: usize, time: f64 },
    /// A failure reported by rank 0 (reading the job, the mesh or a checkpoint) to the others.
    #[error("{0}")]
    OtherRank(String),
}

pub(crate) fn invalid(key: impl Into<String>, msg: impl Into<String>) -> DriverError {
    DriverError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
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

/// The values a Dirichlet (or, until its host sets them, an external) boundary takes.
pub fn time_function(b: &BoundaryConfig) -> TimeFunction {
    match b.time_function {
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
                delay: b.delay.unwrap_or(crate::sources::ricker_default_delay(f)),
            }
        }
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
            BoundaryKindConfig::Dirichlet => BoundaryKind::Dirichlet(time_function(b)),
            BoundaryKindConfig::External => BoundaryKind::External(time_function(b)),
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
            if !mesh.boundary.iter().any(|e| e.tag == tag) {
                return Err(invalid(
                    format!("boundary[{i}].tags"),
                    format!("boundary `{t}` has no edges in the mesh, so the condition would apply nowhere"),
                ));
            }
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
        delay: (s.delay).unwrap_or(crate::sources::ricker_default_delay(s.frequency)),
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
    let steps = match t.dt {
        Some(dt) => (t.end / dt - 1e-9).ceil().max(1.0),
        None => (t.end / (t.safety * solver.dt_limit())).ceil().max(1.0),
    };
    // Far beyond any run that ends (10^12 steps of the smallest mesh take weeks), and well
    // inside the integers the step counter and f64 times hold exactly.
    if steps.is_nan() || steps > MAX_STEPS {
        return Err(invalid(
            if t.dt.is_some() { "time.dt" } else { "time.safety" },
            format!(
                "reaching time.end = {:e} takes {steps:.3e} steps, more than the limit of {MAX_STEPS:e} (check time.end, time.dt and time.safety)",
                t.end
            ),
        ));
    }
    let n = steps as usize;
    let dt = match t.dt {
        Some(dt) => dt,
        None => t.end / n as f64,
    };
    solver.set_dt(dt)?;
    Ok(n)
}

/// Most time steps one run may take.
pub const MAX_STEPS: f64 = 1e12;

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
        checkpoint: Default::default(),
        coupling: None,
    }
}
