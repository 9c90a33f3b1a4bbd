//! Helpers shared by the tests: small problems built through the library API.

use wavecp::fem::WaveSpeed;
use wavecp::mesh::{rectangle, CellShape, Mesh};
use wavecp::solver::{BoundaryKind, OperatorKind, Problem, WaveSolver};

/// Unit square, constant speed `c`, the same condition on all four sides.
pub fn square(shape: CellShape, n: usize, c: f64, side: Option<BoundaryKind>) -> Problem {
    let mesh = rectangle(shape, n, n, [0.0, 1.0], [0.0, 1.0]).unwrap();
    problem(mesh, c, side)
}

pub fn problem(mesh: Mesh, c: f64, side: Option<BoundaryKind>) -> Problem {
    let boundaries = match side {
        Some(k) => mesh.boundary_tags().keys().map(|t| (*t, k)).collect(),
        None => vec![],
    };
    Problem {
        speed: WaveSpeed::PerCell(vec![c; mesh.num_cells()]),
        mesh,
        boundaries,
        sources: vec![],
        operator: OperatorKind::Csr,
    }
}

/// A solver at `dt = frac × limit` with a Gaussian pulse `exp(−|x − x0|²/w²)` at rest.
pub fn pulse_solver(p: &Problem, frac: f64, x0: [f64; 2], w: f64) -> WaveSolver {
    let mut s = WaveSolver::new(p).unwrap();
    s.set_dt(frac * s.dt_limit()).unwrap();
    let u0: Vec<f64> = p
        .mesh
        .coords
        .iter()
        .map(|q| (-((q[0] - x0[0]).powi(2) + (q[1] - x0[1]).powi(2)) / (w * w)).exp())
        .collect();
    s.set_initial(&u0, &vec![0.0; u0.len()]).unwrap();
    s
}

/// Least-squares slope of log(err) against log(h).
pub fn rate(h: &[f64], err: &[f64]) -> f64 {
    let n = h.len() as f64;
    let (x, y): (Vec<f64>, Vec<f64>) = h.iter().zip(err).map(|(a, b)| (a.ln(), b.ln())).unzip();
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    sxy / sxx
}

/// A file of the repository; `WAVECP_REPO` points elsewhere (the GPU bundle of
/// scripts/gpu-check carries the model files but not the source tree's path).
pub fn repo(path: &str) -> std::path::PathBuf {
    std::env::var_os("WAVECP_REPO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join(path)
}

/// The `wavecp` binary of this build; `WAVECP_BIN` names another path (the GPU bundle carries
/// the binary without the build tree it was linked in).
pub fn wavecp_bin() -> std::path::PathBuf {
    std::env::var_os("WAVECP_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_wavecp")))
}

/// `wavecp --log error solve JOB --set S ...`, its output whatever its status.
#[cfg(feature = "hdf5")]
pub fn solve_cli<'a>(
    job: &std::path::Path,
    sets: impl IntoIterator<Item = &'a str>,
) -> std::process::Output {
    let mut c = std::process::Command::new(wavecp_bin());
    c.args(["--log", "error", "solve"]).arg(job);
    for s in sets {
        c.args(["--set", s]);
    }
    c.output().unwrap()
}

/// The JSON a `wavecp` command that must succeed printed.
#[cfg(feature = "hdf5")]
pub fn json_of(mut c: std::process::Command) -> serde_json::Value {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `wavecp solve JOB --set S ... FLAGS --json` that must succeed: its report.
#[cfg(feature = "hdf5")]
pub fn solve_json(job: &std::path::Path, sets: &[String], flags: &[&str]) -> serde_json::Value {
    let mut c = std::process::Command::new(wavecp_bin());
    c.args(["--log", "error", "solve"]).arg(job);
    for s in sets {
        c.args(["--set", s]);
    }
    c.args(flags).arg("--json");
    json_of(c)
}

/// [`solve_cli`] that must succeed: its standard output.
#[cfg(feature = "hdf5")]
pub fn solve_cli_ok<'a>(job: &std::path::Path, sets: impl IntoIterator<Item = &'a str>) -> String {
    let out = solve_cli(job, sets);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
