//! `wavecp dataset`: deterministic whatever the thread count, exact on grid points that are mesh
//! nodes, resumable after a crash, and refusing to mix jobs in one file.

use crate::common::repo;
use std::path::Path;
use std::process::Command;
use wavecp::dataset::{generate, DatasetJob, DatasetOptions};

const JOB: &str = r#"
[mesh.generate]
shape = "quad"
nx = 40
ny = 40
[material]
c = 1.0
[[boundary]]
tags = ["left", "right", "top", "bottom"]
kind = "absorbing"
[time]
safety = 0.8
[zone]
x = [0.25, 0.75]
y = [0.25, 0.75]
nx = 21
ny = 21
[frames]
stride = 3
count = 10
start = 2
[sampling]
source_x = [0.1, 0.9]
source_y = [0.1, 0.9]
frequency = [4.0, 8.0]
amplitude = [0.5, 2.0]
[train]
samples = 7
seed = 11
path = "PATH"
"#;

fn job(path: &Path) -> DatasetJob {
    let text = JOB.replace("PATH", path.to_str().unwrap());
    let mut table: toml::Table = text.parse().unwrap();
    let job: DatasetJob = std::mem::take(&mut table).try_into().unwrap();
    job.validate().unwrap();
    job
}

fn read(path: &Path) -> (Vec<f32>, Vec<f64>, Vec<u8>) {
    let f = hdf5::File::open(path).unwrap();
    (
        f.dataset("frames").unwrap().read_raw().unwrap(),
        f.dataset("params").unwrap().read_raw().unwrap(),
        f.dataset("done").unwrap().read_raw().unwrap(),
    )
}

fn run_with_threads(path: &Path, threads: usize) {
    let j = job(path);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| generate(&j, Path::new("."), &j.train, &DatasetOptions::default()))
        .unwrap();
}

#[test]
fn the_dataset_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.h5"), dir.path().join("b.h5"));
    run_with_threads(&a, 1);
    run_with_threads(&b, 2);
    let (fa, pa, da) = read(&a);
    let (fb, pb, db) = read(&b);
    assert_eq!(fa, fb);
    assert_eq!(pa, pb);
    assert!(da.iter().all(|d| *d == 1) && db == da);
    assert_eq!(fa.len(), 7 * 10 * 21 * 21);
    assert!(fa.iter().any(|v| v.abs() > 1e-4), "all frames are zero");
}

/// Grid points at mesh nodes (h = 1/40, grid step 1/40) take the nodal values exactly: the frames
/// equal an independent solver run sampled at those nodes, to f32 rounding.
#[test]
fn grid_points_on_mesh_nodes_are_exact_and_parameters_are_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.h5");
    let j = job(&path);
    let s = generate(&j, Path::new("."), &j.train, &DatasetOptions::default()).unwrap();
    assert!((s.frame_dt - 3.0 * s.dt).abs() < 1e-15);
    let (frames, params, _) = read(&path);
    let np = 5;
    for i in 0..7 {
        let p = &params[i * np..(i + 1) * np];
        assert!((0.1..=0.9).contains(&p[0]) && (0.1..=0.9).contains(&p[1]));
        assert!((4.0..=8.0).contains(&p[2]) && (0.5..=2.0).contains(&p[3]));
        assert!((p[4] - 1.2 / p[2]).abs() < 1e-12, "default delay is 1.2/f");
    }
    // Re-run sample 3 through the solve path and compare at the nodes of the zone.
    let p = &params[3 * np..4 * np];
    let mut cfg = wavecp::config::Config::from_toml(
        &format!(
            "[mesh.generate]\nshape = \"quad\"\nnx = 40\nny = 40\n[[boundary]]\ntags = [\"left\", \"right\", \"top\", \"bottom\"]\nkind = \"absorbing\"\n[[source]]\nposition = [{}, {}]\nfrequency = {}\namplitude = {}\ndelay = {}\n[time]\nend = 1.0\ndt = {}\n[output]\npath = \"\"\n",
            p[0], p[1], p[2], p[3], p[4], s.dt
        ),
        "sample",
        &[],
    )
    .unwrap();
    cfg.time.dt = Some(s.dt);
    let setup = wavecp::sim::setup(&cfg, Path::new(".")).unwrap();
    let mut solver = wavecp::solver::WaveSolver::new(&setup.problem).unwrap();
    solver.set_dt(s.dt).unwrap();
    let z = vec![0.0; setup.problem.mesh.num_nodes()];
    solver.set_initial(&z, &z).unwrap();
    let frame_size = 21 * 21;
    let base = 3 * 10 * frame_size;
    let mut worst = 0.0f64;
    for k in 0..10 {
        let target = 2 + 3 * k;
        while solver.steps_done() < target {
            solver.step();
        }
        for gy in 0..21 {
            for gx in 0..21 {
                // Zone node (gx, gy) is mesh node (10 + gx, 10 + gy) of the 41 × 41 grid.
                let node = (10 + gy) * 41 + (10 + gx);
                let got = frames[base + k * frame_size + gy * 21 + gx];
                worst = worst.max((got - solver.u()[node] as f32).abs() as f64);
            }
        }
    }
    assert_eq!(
        worst, 0.0,
        "grid values differ from nodal values by {worst}"
    );
}

#[test]
fn an_interrupted_generation_resumes_to_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (full, cut) = (dir.path().join("full.h5"), dir.path().join("cut.h5"));
    run_with_threads(&full, 2);
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, JOB.replace("PATH", cut.to_str().unwrap())).unwrap();
    let bin = env!("CARGO_BIN_EXE_wavecp");
    let st = Command::new(bin)
        .args([
            "dataset",
            job_file.to_str().unwrap(),
            "--abort-after-samples",
            "3",
        ])
        .output()
        .unwrap();
    assert!(!st.status.success(), "the run was meant to abort");
    let (_, _, done) = read(&cut);
    let n_done = done.iter().filter(|d| **d == 1).count();
    assert!(
        (3..7).contains(&n_done),
        "{n_done} samples marked done after the abort"
    );
    let out = Command::new(bin)
        .args(["dataset", job_file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["resumed"].as_u64().unwrap() as usize, n_done);
    assert_eq!(
        read(&cut),
        read(&full),
        "resumed file differs from an uninterrupted one"
    );
    // A different job must not be mixed into the same file.
    let out = Command::new(bin)
        .args([
            "dataset",
            job_file.to_str().unwrap(),
            "--set",
            "frames.stride=4",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--overwrite"),
        "{err}"
    );
}

#[test]
fn the_shipped_dataset_job_runs_small() {
    let dir = tempfile::tempdir().unwrap();
    let sets: Vec<String> = vec![
        "train.samples=2".into(),
        "test.samples=1".into(),
        format!("train.path=\"{}\"", dir.path().join("tr.h5").display()),
        format!("test.path=\"{}\"", dir.path().join("te.h5").display()),
        "zone.nx=8".into(),
        "zone.ny=8".into(),
        "frames.count=4".into(),
    ];
    for job in ["jobs/dataset_paper.toml", "jobs/dataset_inclusion.toml"] {
        let path = repo(job);
        let j = DatasetJob::load(&path, &sets).unwrap();
        for split in [j.train.clone(), j.test.clone().unwrap()] {
            let s = generate(
                &j,
                path.parent().unwrap(),
                &split,
                &DatasetOptions {
                    overwrite: true,
                    ..DatasetOptions::default()
                },
            )
            .unwrap();
            assert_eq!(s.generated, split.samples, "{job}");
        }
    }
    let path = repo("jobs/dataset_inclusion.toml");
    let f = hdf5::File::open(dir.path().join("tr.h5")).unwrap();
    let names: Vec<hdf5::types::VarLenUnicode> =
        f.dataset("param_names").unwrap().read_raw().unwrap();
    assert_eq!(names.last().unwrap().as_str(), "inclusion_speed");
    let e = DatasetJob::load(&path, &["test.seed=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.seed"), "{e}");
}

/// A dataset path that names the job file, or a test split on the train split's file, is
/// refused before anything is written (it used to be truncated by `--overwrite`).
#[test]
fn dataset_paths_that_would_overwrite_an_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let text = JOB.replace("PATH", job.to_str().unwrap());
    std::fs::write(&job, &text).unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wavecp"))
            .args(["dataset", job.to_str().unwrap(), "--overwrite"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train.path") && err.contains("the job file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&job).unwrap(),
        text,
        "the job file changed"
    );
    let data = dir.path().join("d.h5");
    let o = run(&[
        "--set",
        &format!("train.path=\"{}\"", data.display()),
        "--set",
        &format!(
            "test={{ samples = 2, seed = 3, path = \"{}\" }}",
            data.display()
        ),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("test.path"), "{err}");
    assert!(!data.exists());
}
