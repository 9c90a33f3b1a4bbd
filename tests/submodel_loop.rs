//! The submodel's closed loop (issue 19) with oracle forecasters: given the whole model's own
//! frames at the times it asks for, the submodel reproduces the whole model in the zone to the
//! time interpolation's error; a forecast one frame late shows in the zone error, one whose
//! boundary ring disagrees with its interior shows in the error and in the window indicator.
//! So the loop's timing (which frames go in, which come out, when they reach the interface) is
//! checked apart from any network. A forecast late or too strong as a whole is a wave the
//! zone's physics cannot tell from the true one: the FE interior follows the boundary, the
//! indicator stays at the exact run's (measured, not asserted).

use std::path::Path;
use wavecp::comm::Serial;
use wavecp::config::Config;
use wavecp::coupling::hybrid::Forecaster;
use wavecp::coupling::subrun::{run_with, SubmodelOptions, SubmodelSummary};
use wavecp::coupling::transfer::{ZoneGrid, ZoneTransfer};
use wavecp::coupling::CouplingError;

const FRAME_DT: f64 = 0.02;

/// A unit square of 64 × 64 absorbing quads, a 3 Hz source 0.28 from the zone
/// [0.375, 0.625]², 14 windows of 4 frames after the 4-frame warm-up.
fn job(output: &str) -> Config {
    let text = format!(
        r#"
        [mesh.generate]
        shape = "quad"
        nx = 64
        ny = 64
        [material]
        c = 1.0
        [[boundary]]
        tags = ["left", "right", "top", "bottom"]
        kind = "absorbing"
        [[source]]
        position = [0.15, 0.2]
        frequency = 3.0
        delay = 0.4
        [time]
        end = 1.2
        dt = 0.004
        [output]
        path = "{output}"
        every = 10
        [coupling]
        mode = "submodel"
        model = "no-model-file"
        tolerance = 0.05
        interpolation = "cubic"
        "#
    );
    Config::from_toml(&text, "the submodel loop test", &[]).unwrap()
}

fn grid() -> ZoneGrid {
    ZoneGrid {
        x: [0.375, 0.625],
        y: [0.375, 0.625],
        nx: 17,
        ny: 17,
    }
}

/// The whole model's frames on the grid, `FRAME_DT` apart from t = 0.
fn whole_frames(cfg: &Config, count: usize) -> Vec<Vec<f64>> {
    let base = Path::new(".");
    let (mut sim, _) = wavecp::sim::from_job(cfg, base, &Serial).unwrap();
    let mesh = wavecp::sim::setup(cfg, base).unwrap().problem.mesh;
    let t = ZoneTransfer::new(&mesh, grid()).unwrap();
    let stride = (FRAME_DT / sim.dt()).round() as usize;
    let global = sim.layout().global.clone();
    let mut out = Vec::new();
    for k in 0..count {
        if k > 0 {
            sim.advance(stride);
        }
        let mut u = vec![0.0; global.len()];
        for (i, g) in global.iter().enumerate() {
            u[*g as usize] = sim.u()[i];
        }
        let mut g = vec![0.0; grid().nx * grid().ny];
        t.to_grid(&u, &mut g).unwrap();
        out.push(g);
    }
    out
}

/// Forecasts the whole model's frames at the times asked for, `shift` frames late, the grid's
/// outer ring times `ring`.
struct Oracle {
    frames: Vec<Vec<f64>>,
    t0: f64,
    shift: usize,
    ring: f64,
    calls: usize,
}

impl Forecaster for Oracle {
    fn t_in(&self) -> usize {
        4
    }
    fn t_out(&self) -> usize {
        4
    }
    fn set_input_time(&mut self, t0: f64) {
        self.t0 = t0;
    }
    fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        assert_eq!(past.len(), 4);
        self.calls += 1;
        let k0 = (self.t0 / FRAME_DT).round() as usize + 4;
        Ok((0..4)
            .map(|j| {
                let f = &self.frames[(k0 + j + self.shift).min(self.frames.len() - 1)];
                let (nx, ny) = (grid().nx, grid().ny);
                f.iter()
                    .enumerate()
                    .map(|(p, v)| {
                        let (i, j) = (p % nx, p / nx);
                        let ring = i == 0 || j == 0 || i == nx - 1 || j == ny - 1;
                        if ring {
                            v * self.ring
                        } else {
                            *v
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

fn run(cfg: &Config, frames: &[Vec<f64>], shift: usize, ring: f64) -> SubmodelSummary {
    let opts = SubmodelOptions {
        reference: true,
        ..Default::default()
    };
    run_opts(cfg, frames, (shift, ring), &opts)
}

fn run_opts(
    cfg: &Config,
    frames: &[Vec<f64>],
    (shift, ring): (usize, f64),
    opts: &SubmodelOptions,
) -> SubmodelSummary {
    let oracle = Oracle {
        frames: frames.to_vec(),
        t0: f64::NAN,
        shift,
        ring,
        calls: 0,
    };
    run_with(
        cfg,
        Path::new("."),
        (opts, &Serial),
        (grid(), FRAME_DT),
        |_| Ok(oracle),
    )
    .unwrap()
}

#[test]
fn fed_the_whole_models_frames_the_closed_loop_reproduces_it_in_the_zone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.vtkhdf");
    let cfg = job(out.to_str().unwrap());
    let frames = whole_frames(&cfg, 62);
    let exact = run(&cfg, &frames, 0, 1.0);
    let late = run(&cfg, &frames, 1, 1.0);
    let strong = run(&cfg, &frames, 0, 1.2);
    println!(
        "exact: error {:.3e} (oracle {:.3e}), indicator {:.3e}; one frame late: {:.3e}, {:.3e}; boundary ring 20 % strong: {:.3e}, {:.3e}",
        exact.max_rel_l2_error.unwrap(),
        exact.oracle_max_rel_l2_error.unwrap(),
        exact.indicator_max,
        late.max_rel_l2_error.unwrap(),
        late.indicator_max,
        strong.max_rel_l2_error.unwrap(),
        strong.indicator_max
    );
    assert_eq!(exact.windows, 14);
    assert_eq!(exact.steps, (3 + 14 * 4) * 5);
    assert_eq!(exact.stride, 5);
    assert_eq!(exact.submodel_nodes, 17 * 17);
    assert_eq!(exact.interface_nodes, 64);
    // The grid's points are the submesh's nodes here: the loop's only error is the time
    // interpolation's, as the oracle's (which interpolates centred where the loop, at the end
    // of a window's frames, interpolates one-sided).
    let (e, o) = (
        exact.max_rel_l2_error.unwrap(),
        exact.oracle_max_rel_l2_error.unwrap(),
    );
    assert!(e < 3.0 * o && o < 2e-3, "zone error {e:e}, oracle {o:e}");
    // The windows' errors are in the same unit; the largest is the run's.
    let we = exact.window_errors.as_ref().unwrap();
    assert_eq!(we.len(), 14);
    assert_eq!(we.iter().copied().fold(0.0, f64::max), e);
    assert!(exact.indicator_max < 3.0 * e, "{}", exact.indicator_max);
    assert!(late.max_rel_l2_error.unwrap() > 50.0 * e);
    assert!(strong.max_rel_l2_error.unwrap() > 10.0 * e);
    assert!(strong.indicator_max > 10.0 * exact.indicator_max);
    assert_eq!(exact.windows_above_tolerance, 0);
    assert!(strong.windows_above_tolerance > 0, "{:?}", strong.indicator);
    let ratio = exact.cost_ratio.unwrap();
    assert!(ratio.is_finite() && ratio > 0.0);
    assert_eq!(exact.output.as_deref(), Some(out.as_path()));
    let f = hdf5::File::open(&out).unwrap();
    let steps = f.group("VTKHDF/Steps").unwrap();
    let n: u64 = steps.attr("NSteps").unwrap().read_scalar().unwrap();
    assert_eq!(n as usize, exact.steps / 10 + 1);
}

#[test]
fn an_unknown_mode_and_a_missing_model_are_clear_errors() {
    let text = toml::to_string(&job(""))
        .unwrap()
        .replace("\"submodel\"", "\"zone\"");
    let e = Config::from_toml(&text, "job", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("coupling.mode") && e.contains("hybrid, submodel"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, toml::to_string(&job("")).unwrap()).unwrap();
    // A missing model file is named.
    let out = std::process::Command::new(crate::common::wavecp_bin())
        .args(["solve", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no-model-file"),
        "{err}"
    );
}

/// The last output step's `u` of a VTKHDF file.
fn last_u(path: &Path) -> Vec<f64> {
    let f = hdf5::File::open(path).unwrap();
    let u = f
        .dataset("VTKHDF/PointData/u")
        .unwrap()
        .read_raw::<f64>()
        .unwrap();
    let n = f
        .dataset("VTKHDF/NumberOfPoints")
        .unwrap()
        .read_raw::<i64>()
        .unwrap()[0] as usize;
    u[u.len() - n..].to_vec()
}

#[test]
fn a_stopped_run_restarts_from_its_checkpoint_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.vtkhdf");
    let mut cfg = job(whole.to_str().unwrap());
    let frames = whole_frames(&cfg, 62);
    let all = SubmodelOptions {
        reference: true,
        ..Default::default()
    };
    let a = run_opts(&cfg, &frames, (0, 1.2), &all);
    let parts = dir.path().join("parts.vtkhdf");
    cfg.output.path = parts.clone();
    cfg.checkpoint.path = dir.path().join("sub.ckpt");
    let stop = SubmodelOptions {
        stop_after_windows: Some(6),
        ..all.clone()
    };
    let b = run_opts(&cfg, &frames, (0, 1.2), &stop);
    assert!(b.interrupted && b.output.is_none());
    assert_eq!((b.windows, b.checkpoints_written), (6, 1));
    let restart = SubmodelOptions {
        restart: true,
        ..all.clone()
    };
    let c = run_opts(&cfg, &frames, (0, 1.2), &restart);
    assert_eq!(c.resumed_after_window, Some(6));
    assert!(!c.interrupted);
    assert_eq!(c.windows, a.windows);
    assert_eq!(c.steps, a.steps);
    // Bit for bit: every window's indicator and error, the errors, the last field written.
    assert_eq!(c.indicator, a.indicator);
    assert_eq!(c.window_errors, a.window_errors);
    assert_eq!(c.max_rel_l2_error, a.max_rel_l2_error);
    assert_eq!(c.oracle_max_rel_l2_error, a.oracle_max_rel_l2_error);
    assert_eq!(last_u(&parts), last_u(&whole));
    let steps = |p: &Path| -> u64 {
        let f = hdf5::File::open(p).unwrap();
        let s = f.group("VTKHDF/Steps").unwrap();
        s.attr("NSteps").unwrap().read_scalar().unwrap()
    };
    assert_eq!(steps(&parts), steps(&whole));
    // A checkpoint of another run is refused, naming both.
    cfg.time.end = 0.8;
    let e = run_with(
        &cfg,
        Path::new("."),
        (&restart, &Serial),
        (grid(), FRAME_DT),
        |_| {
            Ok(Oracle {
                frames: frames.clone(),
                t0: 0.0,
                shift: 0,
                ring: 1.0,
                calls: 0,
            })
        },
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("another submodel run"), "{e}");
}

/// The shipped job (jobs/submodel.toml, its trained model) at 200 × 200 outer cells: measured
/// 1.6 % zone error over 20 windows (1.7 % at 10⁶ nodes: docs/benchmarks.md).
#[test]
fn the_shipped_submodel_job_runs_small_within_its_measured_error() {
    let job = crate::common::repo("jobs/submodel.toml");
    let sets = [
        "mesh.generate.nx=200".to_string(),
        "mesh.generate.ny=200".to_string(),
        "output.path=\"\"".to_string(),
    ];
    let cfg = Config::load(&job, &sets).unwrap();
    let opts = SubmodelOptions {
        reference: true,
        ..Default::default()
    };
    let s = wavecp::coupling::subrun::run_submodel(&cfg, job.parent().unwrap(), &opts, &Serial)
        .unwrap();
    let e = s.max_rel_l2_error.unwrap();
    println!(
        "shipped job at 200 cells: error {e:.4}, oracle {:.2e}, indicator {:.3}",
        s.oracle_max_rel_l2_error.unwrap(),
        s.indicator_max
    );
    assert_eq!((s.windows, s.submodel_nodes), (20, 51 * 51));
    assert!(e < 0.04, "zone error {e}");
    assert!(s.oracle_max_rel_l2_error.unwrap() < 1e-3);
}

/// The shipped model was trained on sources at 2–3 Hz, its prior reflecting off the unit
/// square: a 3.5 Hz source is refused by default (the submodel's boundary is the network's
/// forecast, with no FE to fall back on), runs with `out_of_range = "trust"` and is reported;
/// a mesh over another rectangle is refused whatever the setting, naming both rectangles.
#[test]
fn the_submodel_refuses_a_source_outside_its_models_ranges_unless_trusted() {
    let job = crate::common::repo("jobs/submodel.toml");
    let base = job.parent().unwrap();
    let sets = [
        "mesh.generate.nx=100",
        "mesh.generate.ny=100",
        "time.end=0.2",
        "output.path=\"\"",
    ]
    .map(String::from);
    let opts = SubmodelOptions::default();
    let run = |cfg: &Config| wavecp::coupling::subrun::run_submodel(cfg, base, &opts, &Serial);
    let mut cfg = Config::load(&job, &sets).unwrap();
    let s = run(&cfg).unwrap();
    assert!(s.out_of_range.is_empty() && s.windows == 1, "{s:?}");
    cfg.source[0].frequency = 3.5;
    let e = run(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("frequency = 3.5 outside [2")
            && e.contains("no FE to fall back on")
            && e.contains("out_of_range = \"trust\""),
        "{e}"
    );
    cfg.coupling.as_mut().unwrap().out_of_range = "trust".into();
    let s = run(&cfg).unwrap();
    assert_eq!(s.windows, 1);
    assert_eq!(s.out_of_range.len(), 1, "{:?}", s.out_of_range);
    assert!(s.out_of_range[0].starts_with("frequency = 3.5"));
    // `wavecp solve` names them in its report, and refuses the job without `trust`.
    let ood = || {
        sets.iter()
            .map(String::as_str)
            .chain(["source.0.frequency=3.5"])
    };
    let text = crate::common::solve_cli_ok(&job, ood().chain(["coupling.out_of_range=\"trust\""]));
    assert!(
        text.contains("outside the model's trained ranges") && text.contains("frequency = 3.5"),
        "{text}"
    );
    let out = crate::common::solve_cli(&job, ood());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no FE to fall back on"));
    let mut sets = sets.to_vec();
    sets.extend(["mesh.generate.x=[0.0, 1.2]", "mesh.generate.nx=120"].map(String::from));
    let mut wide = Config::load(&job, &sets).unwrap();
    wide.coupling.as_mut().unwrap().out_of_range = "trust".into();
    let e = run(&wide).unwrap_err().to_string();
    assert!(
        e.contains("absorbing rectangle x in [0, 1]") && e.contains("x in [0, 1.2]"),
        "{e}"
    );
}
