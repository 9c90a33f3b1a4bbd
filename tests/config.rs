//! Job files: every shipped job runs, overrides work, and bad keys or values name the key.

use crate::common::repo;
use std::process::Command;
use wavecp::config::Config;
use wavecp::sim::{run, RunOptions};

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml(text, "job.toml", &[]).map_err(|e| e.to_string())
}

const MINIMAL: &str = "[mesh.generate]\nshape = \"quad\"\nnx = 10\nny = 10\n[time]\nend = 0.1\n";

#[test]
fn every_shipped_job_runs_shortened_and_has_a_sample_run_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(repo("jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# Sample run: wavecp "),
            "{} has no `# Sample run:` line",
            path.display()
        );
        if !text.contains("# Sample run: wavecp solve") {
            continue; // dataset and training jobs: tests/dataset.rs and tests/surrogate.rs run them
        }
        let out = dir.path().join(format!("{n}.vtkhdf"));
        let sets = vec![
            "time.end=0.2".to_string(),
            format!("output.path=\"{}\"", out.display()),
        ];
        let cfg = Config::load(&path, &sets).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let s = run(&cfg, path.parent().unwrap(), &RunOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(s.steps > 0 && s.final_energy.is_finite() && s.final_energy >= 0.0);
        assert!(out.exists());
        n += 1;
    }
    assert!(n >= 3, "expected at least three jobs, found {n}");
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e = load(&format!("{MINIMAL}[output]\nevry = 3\n")).unwrap_err();
    assert!(e.contains("evry"), "{e}");
    let e = load(&format!("{MINIMAL}[sources]\n")).unwrap_err();
    assert!(e.contains("sources"), "{e}");
    let e = load(&MINIMAL.replace("nx = 10", "nx = 10\nnz = 3")).unwrap_err();
    assert!(e.contains("nz"), "{e}");
}

#[test]
fn impossible_values_are_errors_that_name_the_key() {
    for (text, key) in [
        (MINIMAL.replace("end = 0.1", "end = -1.0"), "time.end"),
        (
            MINIMAL.replace("end = 0.1", "end = 0.1\ndt = 0.0"),
            "time.dt",
        ),
        (
            MINIMAL.replace("end = 0.1", "end = 0.1\nsafety = 1.5"),
            "time.safety",
        ),
        (format!("{MINIMAL}[material]\nc = -2.0\n"), "material.c"),
        (format!("{MINIMAL}[output]\nevery = 0\n"), "output.every"),
        (
            format!("{MINIMAL}[[source]]\nposition = [0.5, 0.5]\nfrequency = 0.0\n"),
            "source[0].frequency",
        ),
        (
            format!("{MINIMAL}[material]\nc = 1.0\nnodal_file = \"x\"\n"),
            "material",
        ),
        (format!("{MINIMAL}[mesh]\nfile = \"a.msh\"\n"), "mesh"),
    ] {
        let e = load(&text).unwrap_err();
        assert!(e.contains(key), "error `{e}` does not name `{key}`");
    }
}

#[test]
fn problems_found_against_the_mesh_name_the_key() {
    for (extra, key) in [
        (
            "[[source]]\nposition = [2.0, 0.5]\nfrequency = 5.0\n",
            "source[0].position",
        ),
        (
            "[[receiver]]\nposition = [0.5, -1.0]\n",
            "receiver[0].position",
        ),
        (
            "[[boundary]]\ntags = [\"north\"]\nkind = \"absorbing\"\n",
            "boundary[0].tags",
        ),
        ("[material.regions]\nrock = 2.0\n", "material.regions.rock"),
    ] {
        let mut cfg = load(&format!("{MINIMAL}{extra}")).unwrap();
        cfg.output.path = "".into();
        let e = run(&cfg, std::path::Path::new("."), &RunOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "error `{e}` does not name `{key}`");
    }
}

#[test]
fn set_overrides_reach_nested_keys_and_arrays() {
    let text = format!("{MINIMAL}[[source]]\nposition = [0.5, 0.5]\nfrequency = 5.0\n");
    let sets = [
        "time.end=0.3",
        "source.0.frequency=7",
        "output.path=\"x.vtkhdf\"",
        "solver.operator=ebe",
    ]
    .map(String::from);
    let cfg = Config::from_toml(&text, "job", &sets).unwrap();
    assert_eq!(cfg.time.end, 0.3);
    assert_eq!(cfg.source[0].frequency, 7.0);
    assert_eq!(cfg.output.path, std::path::PathBuf::from("x.vtkhdf"));
    assert_eq!(cfg.solver.operator, wavecp::solver::OperatorKind::Ebe);
    let e = Config::from_toml(&text, "job", &["source.3.frequency=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = Config::from_toml(&text, "job", &["time.ned=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("ned"), "{e}");
}

#[test]
fn a_user_dt_above_the_limit_is_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("j.toml");
    std::fs::write(&job, format!("{MINIMAL}[output]\npath = \"\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wavecp"))
        .args(["solve", job.to_str().unwrap(), "--set", "time.dt=0.5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("exceeds the stability limit"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_cli_reports_json_and_mesh_info() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wavecp"))
        .current_dir(dir.path())
        .args([
            "demo",
            "--fe-only",
            "--json",
            "--set",
            "time.end=0.1",
            "--set",
            "mesh.generate.nx=40",
            "--set",
            "mesh.generate.ny=40",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "steps",
        "dt",
        "wall_s",
        "dof_updates_per_s",
        "final_energy",
        "output",
    ] {
        assert!(!v[key].is_null(), "JSON summary lacks `{key}`: {v}");
    }
    assert!(dir.path().join("wavecp_demo.vtkhdf").exists());
    let out = Command::new(env!("CARGO_BIN_EXE_wavecp"))
        .args([
            "mesh",
            "info",
            "--json",
            repo("meshes/lshape.msh").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["triangles"].as_u64().unwrap() > 0 && v["quads"].as_u64().unwrap() > 0);
    assert_eq!(v["boundaries"].as_array().unwrap().len(), 2);
    let bad = dir.path().join("bad.msh");
    std::fs::write(&bad, "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\n1 2").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wavecp"))
        .args(["mesh", "info", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.msh") && !err.contains("panicked"),
        "{err}"
    );
}

/// A boundary condition on a physical curve that exists by name but has no edges would apply
/// nowhere (a reflecting wall where an absorbing one was asked for): an error naming the key.
#[test]
fn a_boundary_with_no_edges_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("meshes/lshape.msh"))
        .unwrap()
        .replacen(
            "$PhysicalNames\n4\n",
            "$PhysicalNames\n5\n1 99 \"ghost\"\n",
            1,
        );
    let mesh = dir.path().join("ghost.msh");
    std::fs::write(&mesh, text).unwrap();
    let job = format!(
        "[mesh]\nfile = \"{}\"\n[[boundary]]\ntags = [\"outer\", \"ghost\"]\nkind = \"absorbing\"\n[time]\nend = 0.1\n[output]\npath = \"\"\n",
        mesh.display()
    );
    let cfg = load(&job).unwrap();
    let err = match run(&cfg, dir.path(), &RunOptions::default()) {
        Ok(_) => panic!("a boundary with no edges was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("boundary[0].tags") && err.contains("`ghost` has no edges"),
        "{err}"
    );
    // The same job without the empty tag runs.
    let cfg = load(&job.replace(", \"ghost\"", "")).unwrap();
    run(&cfg, dir.path(), &RunOptions::default()).unwrap();
}
