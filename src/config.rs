//! Job files: serde structs for the TOML job, `--set key=value` overrides, validation by key.

use crate::mesh::CellShape;
use crate::solver::OperatorKind;
use crate::sources::Gaussian;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors in a job file; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("--set {arg}: {msg}")]
    Override { arg: String, msg: String },
    #[error("job key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

/// A whole job. Sections and keys are documented in the README ("Job files").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mesh: MeshConfig,
    #[serde(default)]
    pub material: MaterialConfig,
    #[serde(default)]
    pub boundary: Vec<BoundaryConfig>,
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    #[serde(default)]
    pub initial: InitialConfig,
    pub time: TimeConfig,
    #[serde(default)]
    pub receiver: Vec<ReceiverConfig>,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub solver: SolverConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Hybrid stepping: a trained surrogate takes over windows of steps (absent: FE only).
    #[serde(default)]
    pub coupling: Option<CouplingConfig>,
}

/// `[coupling]`: the surrogate replaces windows of solver steps where an error indicator
/// trusts its forecast (see docs/coupling.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouplingConfig {
    /// The model file (`wavecp train`'s output), relative to the job file. Its grid, zone and
    /// frame spacing must fit the run: the zone must cover the mesh, and the frame spacing
    /// must be a whole number of this run's steps.
    pub model: PathBuf,
    /// `cpu`, `auto` (the GPU if one opens) or `cuda` / `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// A window is accepted when its indicator is below this; 0 accepts none (FE only, bit
    /// for bit).
    pub tolerance: f64,
    /// `fe_probe` (default), `fe_probe_short`, `grid_seam`, `grid_learned`, `energy_balance`,
    /// `energy_change` or `residual` ([`INDICATORS`]).
    #[serde(default = "default_indicator")]
    pub indicator: String,
    /// At most this many accepted windows in a row, then the FE runs one (0: no cap).
    #[serde(default)]
    pub max_consecutive: usize,
    /// The hand-back velocity from the last frames: `bdf2` (default), `two_frames`, `fit`
    /// (the least-squares quadratic through the window's frames and the frame before), or
    /// `central4` (the fourth-order central difference: the forecast is handed back two
    /// frames before its end and the FE runs those two).
    #[serde(default = "default_velocity")]
    pub velocity: String,
    /// When the FE takes a window right after a hand-back whose `velocity` reads only frames up
    /// to the one handed back (all but `central4`): `central4` (default) forms that velocity
    /// again by the central difference around the frame, from the frames before it and the
    /// first two of the refused window's forecast (one is made when the window was not tried:
    /// the cap, the run's end); `none` keeps the one-sided velocity, whose error the FE then
    /// carries on and, in 2-D, grows (docs/coupling.md, "The FE's retake").
    #[serde(default = "default_retake_velocity")]
    pub retake_velocity: String,
    /// What `tolerance` is relative to: `window` (default: the window's own field, the
    /// calibration's unit) or `run` (the largest field of the run so far, the unit of
    /// `max_rel_l2_error`: quiet windows after the wave has passed are then judged by their
    /// share of the run's error).
    #[serde(default = "default_error_scale")]
    pub error_scale: String,
    /// How an accepted forecast goes from the grid onto the mesh: `bilinear` (default) or
    /// `cubic` (4 × 4 grid points a node, fourth-order on smooth fields; bilinear next to
    /// masked grid points).
    #[serde(default = "default_interpolation")]
    pub interpolation: String,
    /// Every this many accepted windows the FE re-runs the window, unobserved, to measure the
    /// forecast's true error (the `audits` of `--json`); the run continues from the forecast.
    /// 0 (default): none.
    #[serde(default)]
    pub audit_every: usize,
    /// Also refuse a window the indicator trusts when handing the FE's field at its start
    /// over to the grid and back loses `tolerance` or more of it (in the error scale's unit):
    /// what the grid cannot hold — a source's near field, a front sharper than the grid — no
    /// forecast brings back, and no indicator reading the grid sees. Measured on a sample of
    /// ≈ 2¹⁴ nodes when the FE computed the state; after accepted windows the last value
    /// stands. Default `false`.
    #[serde(default)]
    pub handback_check: bool,
    /// With `handback_check`: the loss is charged to the tolerance of the window that incurs
    /// it (one starting from the FE's own state, where it is measured), so that the indicator
    /// must predict an error below what the loss leaves (its threshold at `tolerance − loss`):
    /// the forecast's error and the grid's loss add up in the field handed back. The windows
    /// after an accepted one are not charged again. `false`: each is held to the tolerance
    /// alone. Default `true`.
    #[serde(default = "yes")]
    pub handback_budget: bool,
    /// What a hybrid run does when the job's scenario (a conditioned model's source
    /// parameters) lies outside the ranges the model was trained on, where its calibration
    /// does not hold: `fe` (default: the FE runs every window, with a warning naming the
    /// parameters) or `trust` (the indicator decides as usual, with the warning).
    #[serde(default = "default_out_of_range")]
    pub out_of_range: String,
    /// `hybrid` (default: the surrogate replaces windows of the whole model's steps) or
    /// `submodel` (an FE submodel of the model's zone runs alone, its boundary values
    /// forecast by the network; `tolerance` then flags windows whose consistency indicator
    /// exceeds it).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Submodel mode: how the interface values between forecast frames are formed, `cubic`
    /// (default: through 4 frames, fourth order) or `linear`.
    #[serde(default)]
    pub time_interpolation: crate::coupling::submodel::TimeInterp,
}

fn default_mode() -> String {
    "hybrid".into()
}

fn default_interpolation() -> String {
    "bilinear".into()
}

fn default_out_of_range() -> String {
    "fe".into()
}

fn default_error_scale() -> String {
    "window".into()
}

fn default_device() -> String {
    "cpu".into()
}

fn default_indicator() -> String {
    "fe_probe".into()
}

fn default_velocity() -> String {
    "bdf2".into()
}

fn default_retake_velocity() -> String {
    "central4".into()
}

/// The indicators `[coupling] indicator` may name.
pub const INDICATORS: [&str; 7] = [
    "fe_probe",
    "fe_probe_short",
    "grid_seam",
    "grid_learned",
    "energy_balance",
    "energy_change",
    "residual",
];

/// Checkpoints: the state to continue a run exactly (`wavecp solve --restart`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint file (relative to the working directory); `""` (default) writes none.
    #[serde(default)]
    pub path: PathBuf,
    /// Write one every this many steps (0: not by step count).
    #[serde(default)]
    pub every: usize,
    /// Write one when this many minutes have passed since the last (0: not by time).
    #[serde(default)]
    pub minutes: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Gmsh MSH 4.1 file, relative to the job file's folder.
    pub file: Option<PathBuf>,
    /// Built-in rectangle.
    pub generate: Option<GenerateConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    pub shape: CellShape,
    pub nx: usize,
    pub ny: usize,
    #[serde(default = "unit")]
    pub x: [f64; 2],
    #[serde(default = "unit")]
    pub y: [f64; 2],
}

fn unit() -> [f64; 2] {
    [0.0, 1.0]
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaterialConfig {
    /// Constant wave speed (default 1 when nothing else is given).
    pub c: Option<f64>,
    /// Wave speed per physical region, by name or tag number.
    pub regions: Option<BTreeMap<String, f64>>,
    /// Text file with one wave speed per mesh node, relative to the job file's folder.
    pub nodal_file: Option<PathBuf>,
}

/// A tag given by physical name or by number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagRef {
    Number(i64),
    Name(String),
}

impl std::fmt::Display for TagRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagRef::Number(n) => write!(f, "{n}"),
            TagRef::Name(s) => write!(f, "{s}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoundaryKindConfig {
    Dirichlet,
    Neumann,
    Absorbing,
    /// Dirichlet values set node by node by a host program through the C ABI
    /// (`wavecp_sim_set_boundary_values`); until the host sets a node, it holds the boundary's
    /// `value` / `time_function`, so `wavecp solve` runs such a job as a Dirichlet one.
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeFunctionKind {
    #[default]
    Constant,
    Sine,
    Ricker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundaryConfig {
    pub tags: Vec<TagRef>,
    pub kind: BoundaryKindConfig,
    /// Dirichlet: value (or amplitude of the time function).
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub time_function: TimeFunctionKind,
    pub frequency: Option<f64>,
    pub delay: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub position: [f64; 2],
    /// Ricker peak frequency.
    pub frequency: f64,
    #[serde(default = "one")]
    pub amplitude: f64,
    /// Time of the Ricker peak; default `1.2 / frequency` (the wavelet starts near zero).
    pub delay: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialConfig {
    /// Gaussian bumps summed into `u(0)`.
    #[serde(default)]
    pub displacement: Vec<Gaussian>,
    /// Gaussian bumps summed into `u_t(0)`.
    #[serde(default)]
    pub velocity: Vec<Gaussian>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    pub end: f64,
    /// Fixed time step; refused when above the stability limit.
    pub dt: Option<f64>,
    /// Fraction of the stability limit used when `dt` is absent.
    #[serde(default = "default_safety")]
    pub safety: f64,
}

/// Default `time.safety` (fraction of the stability limit) for solve and dataset jobs.
pub(crate) fn default_safety() -> f64 {
    0.9
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub position: [f64; 2],
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// VTKHDF file (relative to the working directory); `""` writes no file.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Write `u` every this many steps (the last step is always written).
    #[serde(default = "default_every")]
    pub every: usize,
    /// Also write an XDMF file next to the HDF5 file for ParaView 5.10/5.11.
    #[serde(default = "yes")]
    pub xdmf: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            path: default_path(),
            every: default_every(),
            xdmf: true,
        }
    }
}

fn default_path() -> PathBuf {
    PathBuf::from("wavecp_output.vtkhdf")
}
fn default_every() -> usize {
    10
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolverConfig {
    /// `csr` (assembled, default) or `ebe` (element by element).
    #[serde(default)]
    pub operator: OperatorKind,
    /// Worker threads; 0 = rayon's default (all cores or RAYON_NUM_THREADS).
    #[serde(default)]
    pub threads: usize,
    /// How cells are split over MPI ranks: `metis` (default) or `rcb`.
    #[serde(default)]
    pub partition: crate::partition::PartitionMethod,
}

impl Config {
    /// Reads a job file and applies `--set key=value` overrides before deserialising.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let cfg: Config = load_with_overrides(path, overrides)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (`name` is used in errors) with overrides.
    pub fn from_toml(text: &str, name: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let cfg: Config = parse_with_overrides(text, name, overrides)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that deserialise but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_coupling()?;
        self.validate_mesh()?;
        self.validate_material()?;
        self.validate_boundaries()?;
        self.validate_sources()?;
        self.validate_run()
    }

    /// The coupling: known names, a tolerance >= 0.
    fn validate_coupling(&self) -> Result<(), ConfigError> {
        let Some(c) = &self.coupling else {
            return Ok(());
        };
        if c.tolerance.is_nan() || c.tolerance < 0.0 {
            return Err(invalid(
                "coupling.tolerance",
                format!("must be a number >= 0, found {}", c.tolerance),
            ));
        }
        if !INDICATORS.contains(&c.indicator.as_str()) {
            return Err(invalid(
                "coupling.indicator",
                format!("`{}` is none of {}", c.indicator, INDICATORS.join(", ")),
            ));
        }
        if !["bdf2", "two_frames", "fit", "central4"].contains(&c.velocity.as_str()) {
            return Err(invalid(
                "coupling.velocity",
                format!(
                    "`{}` is none of bdf2, two_frames, fit, central4",
                    c.velocity
                ),
            ));
        }
        if !["central4", "none"].contains(&c.retake_velocity.as_str()) {
            return Err(invalid(
                "coupling.retake_velocity",
                format!("`{}` is none of central4, none", c.retake_velocity),
            ));
        }
        if !["hybrid", "submodel"].contains(&c.mode.as_str()) {
            return Err(invalid(
                "coupling.mode",
                format!("`{}` is none of hybrid, submodel", c.mode),
            ));
        }
        if !["fe", "trust"].contains(&c.out_of_range.as_str()) {
            return Err(invalid(
                "coupling.out_of_range",
                format!("`{}` is none of fe, trust", c.out_of_range),
            ));
        }
        if !["window", "run"].contains(&c.error_scale.as_str()) {
            return Err(invalid(
                "coupling.error_scale",
                format!("`{}` is none of window, run", c.error_scale),
            ));
        }
        if let Err(e) = c
            .interpolation
            .parse::<crate::coupling::transfer::Interpolation>()
        {
            return Err(invalid("coupling.interpolation", e));
        }
        if c.device.parse::<crate::nn::Device>().is_err() {
            return Err(invalid(
                "coupling.device",
                format!("`{}` is not cpu, auto, cuda or cuda:N", c.device),
            ));
        }
        Ok(())
    }

    /// The mesh: a file or a generated rectangle, not both.
    fn validate_mesh(&self) -> Result<(), ConfigError> {
        match (&self.mesh.file, &self.mesh.generate) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "mesh",
                    "give either `file` or `generate`, not both",
                ))
            }
            (None, None) => return Err(invalid("mesh", "give `file` (Gmsh .msh) or `generate`")),
            (None, Some(g)) => {
                if g.nx == 0 || g.ny == 0 {
                    return Err(invalid("mesh.generate.nx/ny", "must be at least 1"));
                }
                if !increasing(g.x) {
                    return Err(invalid(
                        "mesh.generate.x",
                        format!("[{}, {}] is empty", g.x[0], g.x[1]),
                    ));
                }
                if !increasing(g.y) {
                    return Err(invalid(
                        "mesh.generate.y",
                        format!("[{}, {}] is empty", g.y[0], g.y[1]),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The material: at most one of a speed, region speeds, nodal speeds.
    fn validate_material(&self) -> Result<(), ConfigError> {
        let m = &self.material;
        let given = m.c.is_some() as u8 + m.regions.is_some() as u8 + m.nodal_file.is_some() as u8;
        if given > 1 {
            return Err(invalid(
                "material",
                "give only one of `c`, `regions`, `nodal_file`",
            ));
        }
        if let Some(c) = m.c {
            positive("material.c", c)?;
        }
        for (k, c) in m.regions.iter().flatten() {
            positive(&format!("material.regions.{k}"), *c)?;
        }
        Ok(())
    }

    /// The boundary conditions.
    fn validate_boundaries(&self) -> Result<(), ConfigError> {
        for (i, b) in self.boundary.iter().enumerate() {
            if b.tags.is_empty() {
                return Err(invalid(format!("boundary[{i}].tags"), "is empty"));
            }
            let takes_values = matches!(
                b.kind,
                BoundaryKindConfig::Dirichlet | BoundaryKindConfig::External
            );
            if !takes_values && (b.value != 0.0 || b.time_function != TimeFunctionKind::Constant) {
                return Err(invalid(
                    format!("boundary[{i}].value"),
                    "only Dirichlet and external boundaries take a value or time function",
                ));
            }
            if b.time_function != TimeFunctionKind::Constant {
                positive(
                    &format!("boundary[{i}].frequency"),
                    b.frequency.unwrap_or(f64::NAN),
                )?;
            }
            finite(&format!("boundary[{i}].value"), b.value)?;
        }
        Ok(())
    }

    /// Checkpoints, sources and initial conditions.
    fn validate_sources(&self) -> Result<(), ConfigError> {
        let c = &self.checkpoint;
        if !(c.minutes.is_finite() && c.minutes >= 0.0) {
            return Err(invalid(
                "checkpoint.minutes",
                "must be a non-negative number",
            ));
        }
        if c.path.as_os_str().is_empty() && (c.every > 0 || c.minutes > 0.0) {
            return Err(invalid(
                "checkpoint.path",
                "is empty, but `every` or `minutes` asks for checkpoints",
            ));
        }
        for (i, s) in self.source.iter().enumerate() {
            positive(&format!("source[{i}].frequency"), s.frequency)?;
            finite(&format!("source[{i}].amplitude"), s.amplitude)?;
            finite(
                &format!("source[{i}].position"),
                s.position[0] + s.position[1],
            )?;
            if let Some(d) = s.delay {
                finite(&format!("source[{i}].delay"), d)?;
            }
        }
        for (name, list) in [
            ("initial.displacement", &self.initial.displacement),
            ("initial.velocity", &self.initial.velocity),
        ] {
            for (i, g) in list.iter().enumerate() {
                positive(&format!("{name}[{i}].width"), g.width)?;
                finite(&format!("{name}[{i}].amplitude"), g.amplitude)?;
            }
        }
        Ok(())
    }

    /// Time, output, threads and receivers.
    fn validate_run(&self) -> Result<(), ConfigError> {
        positive("time.end", self.time.end)?;
        if let Some(dt) = self.time.dt {
            positive("time.dt", dt)?;
        }
        if !(self.time.safety > 0.0 && self.time.safety <= 1.0) {
            return Err(invalid(
                "time.safety",
                format!("must be in (0, 1], found {}", self.time.safety),
            ));
        }
        if self.output.every == 0 {
            return Err(invalid("output.every", "must be at least 1"));
        }
        let max_threads = 16 * std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.solver.threads > max_threads {
            return Err(invalid(
                "solver.threads",
                format!(
                    "{} is more than 16 per core of this machine ({max_threads}); use 0 for one per core",
                    self.solver.threads
                ),
            ));
        }
        for (i, r) in self.receiver.iter().enumerate() {
            finite(
                &format!("receiver[{i}].position"),
                r.position[0] + r.position[1],
            )?;
        }
        Ok(())
    }
}

/// `a[0] < a[1]` (false for NaN).
fn increasing(a: [f64; 2]) -> bool {
    a[0] < a[1]
}

fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be a positive number, found {v}"),
        ))
    }
}

fn finite(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(key, format!("must be finite, found {v}")))
    }
}

/// Reads a TOML job file of any kind and applies `--set` overrides before deserialising.
pub fn load_with_overrides<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse_with_overrides(&text, &path.display().to_string(), overrides)
}

/// Parses TOML text (`name` is used in errors), applies overrides, deserialises.
pub fn parse_with_overrides<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let parse = |e: toml::de::Error| ConfigError::Parse {
        file: name.into(),
        msg: e.to_string(),
    };
    let mut table: toml::Table = text.parse().map_err(parse)?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    table.try_into().map_err(parse)
}

/// Applies `a.b.c=value` (numeric segments index arrays of tables, e.g. `source.0.frequency=8`).
/// The value is parsed as a TOML value, falling back to a plain string.
pub fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_path(&mut root, arg);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_path(root: &mut toml::Value, arg: &str) -> Result<(), ConfigError> {
    let err = |msg: String| ConfigError::Override {
        arg: arg.into(),
        msg,
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected key=value".into()))?;
    let value: toml::Value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err("empty key segment".into()));
    }
    let (last, path) = parts.split_last().ok_or_else(|| err("empty key".into()))?;
    let mut cur = root;
    for (depth, part) in path.iter().enumerate() {
        cur = match cur {
            toml::Value::Table(t) => t
                .entry((*part).to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(a) => {
                let i: usize = part
                    .parse()
                    .map_err(|_| err(format!("`{part}` must be an array index")))?;
                let len = a.len();
                a.get_mut(i).ok_or_else(|| {
                    err(format!("index {i} out of range (array has {len} entries)"))
                })?
            }
            _ => {
                return Err(err(format!(
                    "`{}` is not a table",
                    parts[..depth].join(".")
                )))
            }
        };
    }
    match cur {
        toml::Value::Table(t) => {
            t.insert((*last).to_string(), value);
        }
        toml::Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| err(format!("`{last}` must be an array index")))?;
            let len = a.len();
            *a.get_mut(i).ok_or_else(|| {
                err(format!("index {i} out of range (array has {len} entries)"))
            })? = value;
        }
        _ => return Err(err(format!("`{}` is not a table", path.join(".")))),
    }
    Ok(())
}

/// The files a job reads, each with the name an error should use: the mesh, the nodal speeds
/// and the job file itself (`base`: the job file's folder). Nothing a run writes may be one.
pub fn input_files(
    mesh: &MeshConfig,
    material: &MaterialConfig,
    base: &Path,
    job_file: Option<&Path>,
) -> Vec<(&'static str, PathBuf)> {
    let mut inputs = Vec::new();
    if let Some(f) = &mesh.file {
        inputs.push(("mesh.file", base.join(f)));
    }
    if let Some(f) = &material.nodal_file {
        inputs.push(("material.nodal_file", base.join(f)));
    }
    if let Some(f) = job_file {
        inputs.push(("the job file", f.to_path_buf()));
    }
    inputs
}
