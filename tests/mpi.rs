//! Distributed runs: partitions, rank-count invariance under `mpirun` (1–4 ranks, oversubscribed),
//! checkpoints and restarts (also onto another rank count), signals, and failing ranks.

use crate::common::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use wavecp::comm::{repro_sum, Serial};
use wavecp::fem::WaveSpeed;
use wavecp::mesh::{read_msh, rectangle, CellShape};
use wavecp::partition::{build_parts, partition_cells, GlobalPieces, PartitionMethod};

const BIN: &str = env!("CARGO_BIN_EXE_wavecp");

/// `mpirun` of `wavecp` with what a root CI container and a 2-core machine need.
fn mpirun(np: usize) -> Command {
    mpirun_of(np, Path::new(BIN))
}

fn mpirun_of(np: usize, exe: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string()])
        .arg(exe)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // No ptrace-based single copy inside containers.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c
}

/// Runs `cmd` with a deadline, so a hung job fails the test instead of stalling the suite.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun (Open MPI) must be installed: bash scripts/setup --tests installs it");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "timed out after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job on the Gmsh inclusion mesh (triangles, two regions, absorbing boundary, a source,
/// receivers), written into `dir` with absolute paths.
fn job(dir: &Path, end: f64) -> PathBuf {
    let text = format!(
        r#"# Sample run: wavecp solve job.toml
[mesh]
file = "{mesh}"
[material.regions]
matrix = 1.0
inclusion = 2.0
[[boundary]]
tags = ["outer"]
kind = "absorbing"
[[source]]
position = [0.25, 0.3]
frequency = 4.0
amplitude = 1.0
[time]
end = {end}
safety = 0.9
[[receiver]]
position = [0.85, 0.75]
[[receiver]]
position = [0.25, 0.8]
[[receiver]]
position = [0.5, 0.5]
[output]
path = "{dir}/out.vtkhdf"
every = 10
"#,
        mesh = repo("meshes/inclusion.msh").display(),
        dir = dir.display()
    );
    let p = dir.join("job.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn read_f64(path: &Path, name: &str) -> Vec<f64> {
    let f = hdf5::File::open(path).unwrap();
    f.dataset(name).unwrap().read_raw::<f64>().unwrap()
}

/// Field, receivers, energy and times of an output file.
fn results(path: &Path) -> Vec<Vec<f64>> {
    [
        "VTKHDF/PointData/u",
        "wavecp/receivers/u",
        "wavecp/receivers/time",
        "wavecp/energy",
        "VTKHDF/Steps/Values",
    ]
    .iter()
    .map(|n| read_f64(path, n))
    .collect()
}

fn bits(v: &[Vec<f64>]) -> Vec<Vec<u64>> {
    v.iter()
        .map(|x| x.iter().map(|y| y.to_bits()).collect())
        .collect()
}

#[test]
fn partitions_cover_every_cell_once_and_neighbour_lists_match() {
    let mesh = read_msh(&repo("meshes/inclusion.msh")).unwrap();
    let n = mesh.num_nodes();
    let speed = WaveSpeed::PerCell(vec![1.0; mesh.num_cells()]);
    let zeros = vec![0.0; n];
    let g = GlobalPieces {
        mesh: &mesh,
        speed: &speed,
        sources: &[],
        receivers: &[],
        u0: &zeros,
        v0: &zeros,
    };
    for method in [PartitionMethod::Metis, PartitionMethod::Rcb] {
        for parts in 1..=5 {
            let cp = partition_cells(&mesh, parts, method).unwrap();
            assert_eq!(cp.len(), mesh.num_cells());
            let mut per_part = vec![0usize; parts];
            for &p in &cp {
                per_part[p as usize] += 1;
            }
            // Balanced within 10 % (METIS' default imbalance is 3 %; RCB splits by count).
            let mean = mesh.num_cells() as f64 / parts as f64;
            assert!(
                per_part.iter().all(|&c| (c as f64) < 1.1 * mean + 1.0),
                "{method:?} {parts}: {per_part:?}"
            );
            let local = build_parts(&g, &cp, parts);
            // Every node owned by exactly one part.
            let mut owner = vec![usize::MAX; n];
            for (p, part) in local.iter().enumerate() {
                for &gid in &part.layout.global[..part.layout.n_owned] {
                    assert_eq!(owner[gid as usize], usize::MAX, "node {gid} owned twice");
                    owner[gid as usize] = p;
                }
            }
            assert!(
                owner.iter().all(|&o| o != usize::MAX),
                "a node has no owner"
            );
            // Each part holds every cell that touches a node it owns (whole rows).
            for part in &local {
                let l = &part.layout;
                let mut count = vec![0usize; l.global.len()];
                for c in part.mesh.tris.iter().map(|t| &t[..]) {
                    for &v in c {
                        count[v as usize] += 1;
                    }
                }
                for (i, &gid) in l.global[..l.n_owned].iter().enumerate() {
                    let global_count = mesh
                        .tris
                        .iter()
                        .filter(|t| t.contains(&(gid as u32)))
                        .count();
                    assert_eq!(count[i], global_count, "owned node {gid} misses cells");
                }
            }
            // What p sends to q is what q receives from p, in the same order.
            for (p, part) in local.iter().enumerate() {
                for (k, &q) in part.layout.neighbours.iter().enumerate() {
                    let sent: Vec<u64> = part.layout.send[k]
                        .iter()
                        .map(|&i| part.layout.global[i as usize])
                        .collect();
                    let other = &local[q as usize].layout;
                    let kq = other
                        .neighbours
                        .iter()
                        .position(|&x| x as usize == p)
                        .unwrap();
                    let got: Vec<u64> = other.recv[kq]
                        .iter()
                        .map(|&i| other.global[i as usize])
                        .collect();
                    assert_eq!(sent, got, "{method:?} {parts}: {p} -> {q}");
                    assert!(part.layout.send[k]
                        .iter()
                        .all(|&i| (i as usize) < part.layout.n_send));
                }
            }
        }
    }
}

#[test]
fn bad_partition_requests_are_clear_errors() {
    let mesh = rectangle(CellShape::Quad, 2, 1, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let e = partition_cells(&mesh, 3, PartitionMethod::Metis).unwrap_err();
    assert!(e.to_string().contains("at most 2 ranks"), "{e}");
    let e = partition_cells(&mesh, 0, PartitionMethod::Rcb).unwrap_err();
    assert!(e.to_string().contains("ranks"), "{e}");
}

#[test]
fn reproducible_sum_is_order_independent_and_accurate() {
    // Terms spanning 30 orders of magnitude with cancellation.
    let mut terms: Vec<f64> = (0..20_000)
        .map(|i| {
            let x = ((i as f64) * 0.618_033_988_75).fract() - 0.5;
            x * 10f64.powi((i % 31) - 15)
        })
        .collect();
    let a = repro_sum(&Serial, &terms);
    terms.reverse();
    let b = repro_sum(&Serial, &terms);
    terms.sort_by(|x, y| x.total_cmp(y));
    let c = repro_sum(&Serial, &terms);
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(a.to_bits(), c.to_bits());
    // Reference: exact sum with integer arithmetic is hard for this range; compare with a
    // compensated (Neumaier) sum over the sorted terms, which is accurate to a few ulps here.
    let (mut s, mut comp) = (0.0f64, 0.0f64);
    for &t in &terms {
        let u = s + t;
        comp += if s.abs() >= t.abs() {
            (s - u) + t
        } else {
            (t - u) + s
        };
        s = u;
    }
    let reference = s + comp;
    assert!(
        ((a - reference) / reference).abs() < 1e-14,
        "{a} vs {reference}"
    );
    assert_eq!(repro_sum(&Serial, &[]), 0.0);
    assert!(repro_sum(&Serial, &[1.0, f64::NAN]).is_nan());
}

#[test]
fn one_to_four_ranks_give_bitwise_the_same_field_receivers_and_energy() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(dir.path(), 0.6);
    // Serial, without mpirun: the reference.
    let out = Command::new(BIN)
        .args(["solve", j.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    ok(&out);
    let serial = results(&dir.path().join("out.vtkhdf"));
    assert!(
        serial[0].iter().any(|v| v.abs() > 1e-3),
        "the wave reached no node"
    );
    for (np, method) in [
        (1, "metis"),
        (2, "metis"),
        (3, "metis"),
        (4, "metis"),
        (3, "rcb"),
    ] {
        let name = format!("out{np}{method}.vtkhdf");
        let out = run_with_timeout(
            mpirun(np).args([
                "solve",
                j.to_str().unwrap(),
                "--json",
                "--set",
                &format!("output.path=\"{}\"", dir.path().join(&name).display()),
                "--set",
                &format!("solver.partition=\"{method}\""),
            ]),
            Duration::from_secs(120),
        );
        ok(&out);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["ranks"], np);
        let par = results(&dir.path().join(&name));
        assert_eq!(
            bits(&par),
            bits(&serial),
            "{np} ranks ({method}) differ from the serial run"
        );
        // The partition is written as a cell field: every rank owns cells.
        let f = hdf5::File::open(dir.path().join(&name)).unwrap();
        let part = f
            .dataset("VTKHDF/CellData/partition")
            .unwrap()
            .read_raw::<i32>()
            .unwrap();
        for r in 0..np as i32 {
            assert!(part.contains(&r), "rank {r} owns no cell");
        }
        // ParaView's readers see one dataset with the partition as a cell field.
        if np == 4 {
            if let Some(v) = crate::output::python_reader(&dir.path().join(&name)) {
                for reader in ["vtkhdf", "xdmf"] {
                    let steps = v[reader]["steps"].as_array().unwrap();
                    assert_eq!(steps.len(), serial[4].len(), "{reader}");
                    let last = &steps[steps.len() - 1];
                    let p: Vec<i64> = last["partition"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect();
                    assert_eq!(
                        p,
                        part.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                        "{reader}"
                    );
                }
            }
        }
    }
}

fn with_checkpoint(cmd: &mut Command, j: &Path, dir: &Path, name: &str) {
    cmd.args([
        "solve",
        j.to_str().unwrap(),
        "--json",
        "--set",
        &format!(
            "output.path=\"{}\"",
            dir.join(format!("{name}.vtkhdf")).display()
        ),
        "--set",
        &format!(
            "checkpoint.path=\"{}\"",
            dir.join(format!("{name}.ckpt")).display()
        ),
        "--set",
        "checkpoint.every=7",
    ]);
}

#[test]
fn a_stopped_run_restarts_to_the_same_result_also_on_another_rank_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = job(d, 0.6);
    let mut full = Command::new(BIN);
    with_checkpoint(&mut full, &j, d, "full");
    ok(&full.output().unwrap());
    let reference = results(&d.join("full.vtkhdf"));

    // Serial: stop after step 23 (as SIGTERM would), then continue.
    let mut a = Command::new(BIN);
    with_checkpoint(&mut a, &j, d, "a");
    let out = a.args(["--stop-after-steps", "23"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["steps_run"], 23);
    let mut b = Command::new(BIN);
    with_checkpoint(&mut b, &j, d, "a");
    let out = b.arg("--restart").output().unwrap();
    ok(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["restarted"], true);
    assert_eq!(bits(&results(&d.join("a.vtkhdf"))), bits(&reference));

    // Two ranks stop; three ranks continue from the same checkpoint.
    let mut c = mpirun(2);
    with_checkpoint(&mut c, &j, d, "m");
    c.args(["--stop-after-steps", "30"]);
    let out = run_with_timeout(&mut c, Duration::from_secs(120));
    // mpirun passes the ranks' exit code on.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = mpirun(3);
    with_checkpoint(&mut c, &j, d, "m");
    c.arg("--restart");
    let out = run_with_timeout(&mut c, Duration::from_secs(120));
    ok(&out);
    assert_eq!(bits(&results(&d.join("m.vtkhdf"))), bits(&reference));
}

#[test]
fn sigterm_and_sigusr1_write_a_checkpoint_and_the_restart_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A longer run, so the signal arrives in the time loop.
    let j = job(d, 40.0);
    let mut full = Command::new(BIN);
    with_checkpoint(&mut full, &j, d, "full");
    ok(&full.output().unwrap());
    let reference = results(&d.join("full.vtkhdf"));
    for sig in ["TERM", "USR1"] {
        let name = format!("s{sig}");
        let mut c = Command::new(BIN);
        with_checkpoint(&mut c, &j, d, &name);
        let child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The first checkpoint shows the loop (and the signal handler) is running.
        let ck = d.join(format!("{name}.ckpt"));
        let start = Instant::now();
        while !ck.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no checkpoint appeared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = child.id().to_string();
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "the run finished before SIG{sig} arrived: lengthen it"
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(s["interrupted"], true);
        let mut r = Command::new(BIN);
        with_checkpoint(&mut r, &j, d, &name);
        ok(&r.arg("--restart").output().unwrap());
        assert_eq!(
            bits(&results(&d.join(format!("{name}.vtkhdf")))),
            bits(&reference),
            "SIG{sig}"
        );
    }
}

#[test]
fn checkpoints_by_wall_clock_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = job(d, 0.6);
    let out = Command::new(BIN)
        .args(["solve", j.to_str().unwrap(), "--json", "--set"])
        .arg(format!(
            "checkpoint.path=\"{}\"",
            d.join("t.ckpt").display()
        ))
        // 0.6 ms: about every step
        .args(["--set", "checkpoint.minutes=1e-5"])
        .output()
        .unwrap();
    ok(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = s["checkpoints"].as_u64().unwrap();
    assert!(
        n >= 2 && n <= s["steps"].as_u64().unwrap(),
        "{n} checkpoints"
    );
    assert!(d.join("t.ckpt").exists());
    assert!(
        !d.join("t.ckpt.tmp").exists(),
        "a temporary checkpoint was left behind"
    );
}

#[test]
fn a_rank_that_dies_ends_the_job_with_an_error_instead_of_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(dir.path(), 0.6);
    let out = run_with_timeout(
        mpirun(3).args(["solve", j.to_str().unwrap(), "--fail-rank-at", "1:5"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
}

#[test]
fn an_error_on_rank_0_reaches_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    // More ranks than cells is caught on rank 0 while partitioning.
    let j = dir.path().join("tiny.toml");
    std::fs::write(
        &j,
        "[mesh.generate]\nshape = \"quad\"\nnx = 1\nny = 2\nx = [0.0, 1.0]\ny = [0.0, 1.0]\n\
         [time]\nend = 0.1\n[output]\npath = \"\"\n",
    )
    .unwrap();
    let out = run_with_timeout(
        mpirun(3).args(["solve", j.to_str().unwrap()]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 2 ranks"), "{err}");
    // A mesh METIS cannot split into that many parts (2 × 2 quads over 3 ranks: METIS leaves a
    // rank empty): a clear error that names the way out, which works.
    std::fs::write(
        &j,
        "[mesh.generate]\nshape = \"quad\"\nnx = 2\nny = 2\n[time]\nend = 0.1\n[output]\npath = \"\"\n",
    )
    .unwrap();
    let out = run_with_timeout(
        mpirun(3).args(["solve", j.to_str().unwrap()]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without cells") && err.contains("rcb"),
        "{err}"
    );
    let out = run_with_timeout(
        mpirun(3).args([
            "solve",
            j.to_str().unwrap(),
            "--set",
            "solver.partition=\"rcb\"",
        ]),
        Duration::from_secs(60),
    );
    ok(&out);
}

#[test]
fn a_checkpoint_of_another_job_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = job(d, 0.6);
    let mut a = Command::new(BIN);
    with_checkpoint(&mut a, &j, d, "x");
    let out = a.args(["--stop-after-steps", "10"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let mut b = Command::new(BIN);
    with_checkpoint(&mut b, &j, d, "x");
    let out = b
        .args(["--restart", "--set", "time.dt=0.001"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dt"), "{err}");
    // A damaged checkpoint is an error too, not a panic.
    std::fs::write(d.join("x.ckpt"), b"garbage").unwrap();
    let mut c = Command::new(BIN);
    with_checkpoint(&mut c, &j, d, "x");
    let out = c.arg("--restart").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checkpoint"), "{err}");
}

#[test]
fn a_dataset_made_on_three_ranks_equals_the_serial_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let job = |name: &str| {
        let text = format!(
            "[mesh.generate]\nshape = \"tri\"\nnx = 24\nny = 24\n[material]\nc = 1.0\n\
             [[boundary]]\ntags = [\"left\", \"right\", \"top\", \"bottom\"]\nkind = \"absorbing\"\n\
             [time]\nsafety = 0.8\n[zone]\nx = [0.2, 0.8]\ny = [0.2, 0.8]\nnx = 9\nny = 9\n\
             [frames]\nstride = 2\ncount = 6\nstart = 4\n[sampling]\nsource_x = [0.1, 0.9]\n\
             source_y = [0.1, 0.9]\nfrequency = [4.0, 8.0]\n\
             [train]\nsamples = 11\nseed = 5\npath = \"{}\"\n",
            d.join(name).display()
        );
        let p = d.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let serial = job("serial.h5");
    ok(&Command::new(BIN)
        .args(["dataset", serial.to_str().unwrap(), "--json"])
        .output()
        .unwrap());
    let par = job("par.h5");
    ok(&run_with_timeout(
        mpirun(3).args(["dataset", par.to_str().unwrap(), "--json"]),
        Duration::from_secs(120),
    ));
    let read = |p: &Path| {
        let f = hdf5::File::open(p).unwrap();
        let frames: Vec<u32> = f
            .dataset("frames")
            .unwrap()
            .read_raw::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let params: Vec<u64> = f
            .dataset("params")
            .unwrap()
            .read_raw::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let done = f.dataset("done").unwrap().read_raw::<u8>().unwrap();
        (frames, params, done)
    };
    let (a, b) = (read(&d.join("serial.h5")), read(&d.join("par.h5")));
    assert!(a.2.iter().all(|&x| x == 1), "serial run incomplete");
    assert!(
        a.0.iter().any(|&x| f32::from_bits(x).abs() > 1e-6),
        "no wave recorded"
    );
    assert_eq!(a, b, "3-rank dataset differs from the serial one");
}

#[test]
fn a_run_killed_part_way_restarts_from_its_last_checkpoint_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = job(d, 0.6);
    let mut full = Command::new(BIN);
    with_checkpoint(&mut full, &j, d, "full");
    ok(&full.output().unwrap());
    let reference = results(&d.join("full.vtkhdf"));
    // Outputs every 10 steps, checkpoints every 7: the process aborts (no clean-up, as a
    // crash or SIGKILL would) at step 30, after the checkpoint of step 28 and output steps
    // the checkpoint does not know about.
    let mut c = Command::new(BIN);
    with_checkpoint(&mut c, &j, d, "k");
    let out = c.args(["--abort-after-outputs", "4"]).output().unwrap();
    assert!(!out.status.success());
    assert!(d.join("k.ckpt").exists());
    let mut r = Command::new(BIN);
    with_checkpoint(&mut r, &j, d, "k");
    let out = r.arg("--restart").output().unwrap();
    ok(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["restarted"], true);
    assert_eq!(bits(&results(&d.join("k.vtkhdf"))), bits(&reference));
}

/// SIGKILL right after any step, for checkpoint spacings that do and do not fall on output
/// steps, then `--restart`: the file must be bitwise the uninterrupted run's (field, receiver
/// rows, times, energy). Before the writer was flushed ahead of each checkpoint, receiver rows
/// written between output steps could be lost with the process and came back as zeros.
#[test]
fn sigkill_and_restart_give_the_uninterrupted_file_for_any_checkpoint_and_output_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = job(d, 0.3);
    let base = |c: &mut Command, name: &str, ck: usize, out: usize| {
        with_checkpoint(c, &j, d, name);
        c.args([
            "--set",
            &format!("checkpoint.every={ck}"),
            "--set",
            &format!("output.every={out}"),
        ]);
    };
    // (checkpoint.every, output.every, killed after step)
    for (ck, out, kill) in [(3, 5, 4), (7, 10, 9), (4, 4, 6), (5, 3, 11), (2, 7, 13)] {
        let mut full = Command::new(BIN);
        base(&mut full, "full", ck, out);
        ok(&full.output().unwrap());
        let reference = results(&d.join("full.vtkhdf"));
        let name = format!("k{ck}_{out}");
        let mut c = Command::new(BIN);
        base(&mut c, &name, ck, out);
        let st = c
            .args(["--kill-at-step", &kill.to_string()])
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.status.signal(), Some(9), "killed at step {kill}");
        let mut r = Command::new(BIN);
        base(&mut r, &name, ck, out);
        let o = r.arg("--restart").output().unwrap();
        ok(&o);
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["restarted"], true);
        assert_eq!(
            bits(&results(&d.join(format!("{name}.vtkhdf")))),
            bits(&reference),
            "checkpoint every {ck}, output every {out}, killed after step {kill}"
        );
    }
}

/// A checkpoint is tied to its job and its bytes: another source amplitude, any flipped bit,
/// a truncated file or a forged step count is refused with a message, never restarted.
#[test]
fn checkpoints_of_other_jobs_or_with_damaged_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = job(d, 0.3);
    let mut a = Command::new(BIN);
    with_checkpoint(&mut a, &j, d, "x");
    let out = a.args(["--stop-after-steps", "10"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let good = std::fs::read(d.join("x.ckpt")).unwrap();
    let restart = |extra: &[&str]| {
        let mut b = Command::new(BIN);
        with_checkpoint(&mut b, &j, d, "x");
        let out = b.arg("--restart").args(extra).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Same mesh and dt, another source amplitude or receiver: another job.
    for set in ["source.0.amplitude=2.0", "receiver.0.position=[0.8, 0.7]"] {
        let (code, err) = restart(&["--set", set]);
        assert_eq!(code, Some(1), "{set}: {err}");
        assert!(err.contains("another job"), "{set}: {err}");
    }
    // Damage: bit flips anywhere (header, checksum, step, values, tail), truncation.
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for _ in 0..40 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut b = good.clone();
        let i = (rng as usize) % b.len();
        b[i] ^= 1 << (rng >> 60 & 7);
        cases.push(b);
    }
    cases.push(good[..good.len() - 9].to_vec());
    cases.push(good[..20].to_vec());
    // The step field (just after the 32-byte job digest and the node count) set to 2^64 - 1.
    let mut forged = good.clone();
    forged[40 + 32 + 8 + 8..40 + 32 + 8 + 8 + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(forged);
    for (k, bytes) in cases.iter().enumerate() {
        std::fs::write(d.join("x.ckpt"), bytes).unwrap();
        let (code, err) = restart(&[]);
        assert_eq!(code, Some(1), "case {k}: {err}");
        assert!(
            err.contains("checkpoint") && !err.contains("panicked"),
            "case {k}: {err}"
        );
    }
    // The good one still restarts.
    std::fs::write(d.join("x.ckpt"), &good).unwrap();
    let (code, err) = restart(&[]);
    assert_eq!(code, Some(0), "{err}");
}

/// An example program of this build (`cargo test` builds them beside the test binary).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: cargo test builds the examples (cargo build --examples)",
        p.display()
    );
    p
}

/// One time loop: a hand-written `Simulation::advance` loop (examples/advance_loop.rs, 27
/// lines of loop) gives bitwise the field `wavecp solve` writes, at every output step, on 1
/// rank and on 3. Both advance the same `Simulation`; a difference would mean the solve path's
/// observers changed the state they observe, or the hand-out of parts depends on the caller.
#[test]
fn a_hand_written_advance_loop_gives_the_fields_of_wavecp_solve() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), 0.5);
    let exe = example("advance_loop");
    let field = dir.path().join("field.bin");
    for np in [1, 3] {
        let mut solve = mpirun(np);
        ok(&run_with_timeout(
            solve.arg("solve").arg(&job),
            Duration::from_secs(120),
        ));
        let mut hand = mpirun_of(np, &exe);
        ok(&run_with_timeout(
            hand.arg(&job).arg(&field),
            Duration::from_secs(120),
        ));
        let want: Vec<u64> = read_f64(&dir.path().join("out.vtkhdf"), "VTKHDF/PointData/u")
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let got: Vec<u64> = std::fs::read(&field)
            .unwrap()
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert!(want.len() > 1000, "{} values", want.len());
        assert_eq!(got.len(), want.len(), "{np} rank(s)");
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(
            first, None,
            "{np} rank(s): first difference at value {first:?}"
        );
    }
}

/// Every dataset a hybrid run writes that could differ between rank counts, as bits.
fn hybrid_results(path: &Path) -> Vec<Vec<u64>> {
    let mut v = results(path);
    for n in [
        "VTKHDF/PointData/u_ref",
        "VTKHDF/PointData/u_diff",
        "VTKHDF/PointData/stepper",
        "wavecp/steps/indicator",
    ] {
        v.push(read_f64(path, n));
    }
    bits(&v)
}

/// `model` with a `grid_learned` calibration whose error model is fitted on random inputs.
fn learned_model(dir: &std::path::Path, model: &std::path::Path) -> std::path::PathBuf {
    use wavecp::coupling::error_model::ErrorModel;
    use wavecp::surrogate::calibration::Calibration;
    let rows: Vec<Vec<f64>> = (0..60)
        .map(|k| {
            (0..27)
                .map(|j| ((k * 31 + j * 17) % 23) as f64 / 7.0 - 9.0)
                .collect()
        })
        .collect();
    let errors: Vec<f64> = (0..60).map(|k| 0.01 * (1.0 + (k % 9) as f64)).collect();
    let mut c = Calibration::new(
        "grid_learned",
        0.1,
        &errors.iter().map(|&e| (e, e)).collect::<Vec<_>>(),
    )
    .unwrap();
    c.estimator = Some(ErrorModel::fit("random", &rows, &errors, true, 3.0).unwrap());
    let mut l = wavecp::surrogate::modelfile::load(model).unwrap();
    l.meta.calibrations.set(c);
    let out = dir.join("learned.safetensors");
    wavecp::surrogate::modelfile::save(&out, &l.model, &l.meta, None).unwrap();
    out
}

#[test]
fn a_hybrid_run_decides_and_steps_the_same_on_one_two_and_four_ranks_and_restarts_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = crate::coupling::hybrid::untrained(dir.path(), 2.0 * 0.01);
    // Windows of 16 steps from step 14, one in two accepted (the untrained network's frames
    // are trusted at any tolerance; the cap gives the FE every other window). The run's error
    // scale: the scores compared below are then the indicator's times the frames' ratio, both
    // of which must be the same on every rank count. Every accepted window is audited.
    let j = dir.path().join("hybrid.toml");
    std::fs::write(
        &j,
        crate::coupling::hybrid::hybrid_job_text(dir.path(), &model, f64::INFINITY),
    )
    .unwrap();
    let run = |np: usize, name: &str, extra: &[&str]| -> serde_json::Value {
        let mut args: Vec<String> = vec![
            "solve".into(),
            j.display().to_string(),
            "--json".into(),
            "--reference".into(),
            "--set".into(),
            "coupling.max_consecutive=1".into(),
            "--set".into(),
            "coupling.error_scale=\"run\"".into(),
            "--set".into(),
            "coupling.audit_every=1".into(),
            "--set".into(),
            format!(
                "output.path=\"{}\"",
                dir.path().join(format!("{name}.vtkhdf")).display()
            ),
            "--set".into(),
            format!(
                "checkpoint.path=\"{}\"",
                dir.path().join(format!("{name}.ckpt")).display()
            ),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = if np == 0 {
            Command::new(BIN).args(&args).output().unwrap()
        } else {
            run_with_timeout(mpirun(np).args(&args), Duration::from_secs(120))
        };
        assert!(
            out.status.success() || out.status.code() == Some(3),
            "{np} ranks: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let serial = run(0, "serial", &[]);
    let h = &serial["hybrid"];
    assert_eq!(h["windows_accepted"], 2, "{h}");
    // The FE retakes each capped window after an accepted one from a forecast made for it.
    assert!(h["retakes"].as_u64().unwrap() > 0, "{h}");
    assert!(h["max_rel_l2_error"].as_f64().unwrap() > 0.0);
    // Every accepted window audited: the FE's re-run and its error are collective too.
    assert_eq!(h["audits"].as_array().map(Vec::len), Some(2), "{h}");
    let expected = hybrid_results(&dir.path().join("serial.vtkhdf"));
    for np in [1, 2, 4] {
        let name = format!("np{np}");
        let s = run(np, &name, &[]);
        assert_eq!(s["ranks"], np);
        assert_eq!(s["hybrid"]["windows"], h["windows"], "{np} ranks");
        assert_eq!(s["hybrid"]["audits"], h["audits"], "{np} ranks");
        assert_eq!(s["hybrid"]["retakes"], h["retakes"], "{np} ranks");
        assert_eq!(
            s["hybrid"]["max_rel_l2_error"].as_f64().unwrap().to_bits(),
            h["max_rel_l2_error"].as_f64().unwrap().to_bits()
        );
        let got = hybrid_results(&dir.path().join(format!("{name}.vtkhdf")));
        assert_eq!(
            got, expected,
            "{np} ranks differ from the serial hybrid run"
        );
    }
    // The grid-only indicator reads the frames every rank holds on the grid: its scores and
    // decisions are the serial run's bits too.
    let grid = ["--set", "coupling.indicator=\"grid_seam\""];
    let serial = run(0, "grid_serial", &grid);
    let two = run(2, "grid_np2", &grid);
    assert_eq!(serial["hybrid"]["windows"], two["hybrid"]["windows"]);
    assert_ne!(
        serial["hybrid"]["windows"], h["windows"],
        "another indicator"
    );
    // The learned one: its error model, read from the model file on rank 0, reaches every
    // rank with the settings (any fitted model of 27 inputs will do for the bits).
    let learned = learned_model(dir.path(), &model);
    let set = format!("coupling.model=\"{}\"", learned.display());
    let grid = [
        "--set",
        "coupling.indicator=\"grid_learned\"",
        "--set",
        set.as_str(),
    ];
    let serial = run(0, "learned_serial", &grid);
    let two = run(2, "learned_np2", &grid);
    assert_eq!(serial["hybrid"]["windows"], two["hybrid"]["windows"]);
    let w = serial["hybrid"]["windows"].as_array().unwrap();
    assert!(w.iter().any(|x| x[0].is_f64()), "{w:?}");
    // The hand-back check's losses: sums over a sample of nodes that each rank holds a part of,
    // the serial run's bits on 4 ranks.
    let check = ["--set", "coupling.handback_check=true"];
    let serial = run(0, "check_serial", &check);
    let four = run(4, "check_np4", &check);
    let losses = &serial["hybrid"]["handback_losses"];
    assert!(losses.as_array().is_some_and(|l| l.len() > 1), "{losses}");
    assert_eq!(&four["hybrid"]["handback_losses"], losses);
    assert_eq!(four["hybrid"]["windows"], serial["hybrid"]["windows"]);
    // Stopped on 2 ranks inside a rejected window, continued on 4: the serial run's bits.
    let s = run(2, "moved", &["--stop-after-steps", "33"]);
    assert_eq!(s["interrupted"], true);
    let s = run(4, "moved", &["--restart"]);
    assert_eq!(s["restarted"], true);
    assert_eq!(s["hybrid"]["windows"], h["windows"]);
    assert_eq!(
        s["hybrid"]["audits"], h["audits"],
        "audits kept in the checkpoint"
    );
    let got = hybrid_results(&dir.path().join("moved.vtkhdf"));
    assert_eq!(got, expected, "stopped on 2 ranks and continued on 4");
}
