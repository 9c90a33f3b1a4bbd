//! The C ABI from its three host languages. The C, Fortran and Python hosts (examples/) run
//! jobs/square_dirichlet.toml with its left side made `external` and impose the job's own sine
//! there node by node: every output step they write must be bitwise the one `wavecp solve`
//! writes for the job, their final fields bitwise equal to each other, and each host checks
//! that a state saved half-way continues bit for bit in a second simulation. The MPI host splits
//! its world in two halves, each running the job on its own communicator beside a serial
//! simulation in the same process: same bits again. The call-order conformance program must see
//! every illegal call refused with its code, plainly and under valgrind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{lib, python, repo, same_bits, steps_of};

/// The job every host runs, shortened so the wave reaches the receiver at x = 1 (300 steps).
const END: &str = "time.end=1.2";

/// The folder of this build's libwavecp_c.so, for the compilers' -L and rpath.
fn lib_dir() -> PathBuf {
    lib().parent().unwrap().to_path_buf()
}

/// Runs `cmd` to completion within `limit`, failing the test with its output otherwise.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{what}: {e} (bash scripts/setup --tests installs the compilers and MPI)")
        });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("{what} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compiles a host with `compiler` against include/ and libwavecp_c.
fn build(compiler: &str, sources: &[PathBuf], exe: &Path, extra: &[&str]) {
    let lib = lib_dir();
    let mut c = Command::new(compiler);
    c.args(["-O2", "-ffp-contract=off", "-I"])
        .arg(repo().join("include"))
        .args(sources)
        .arg("-L")
        .arg(&lib)
        .arg("-lwavecp_c")
        .args(extra)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(exe)
        .current_dir(exe.parent().unwrap());
    run(&mut c, Duration::from_secs(120));
}

/// `wavecp solve` of the job (the library call behind the CLI command), with `sets`.
fn solve(out: &Path, sets: &[&str]) {
    let job = repo().join("jobs/square_dirichlet.toml");
    let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    all.push(END.into());
    all.push(format!("output.path=\"{}\"", out.display()));
    let cfg = wavecp::config::Config::load(&job, &all).unwrap();
    wavecp::sim::run(&cfg, job.parent().unwrap(), &Default::default()).unwrap();
}

/// A host's "node value" lines, in node order.
fn field_of(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows: Vec<(u64, f64)> = text
        .lines()
        .map(|l| {
            let (i, v) = l.trim().split_once(' ').unwrap();
            (i.parse().unwrap(), v.trim().parse().unwrap())
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|r| r.1).collect()
}

#[test]
fn c_fortran_and_python_hosts_are_bitwise_wavecp_solve() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let job = repo().join("jobs/square_dirichlet.toml");
    solve(&d.join("solve.vtkhdf"), &[]);
    let reference = steps_of(&d.join("solve.vtkhdf"));
    // `wavecp solve` runs an external boundary that no host sets as the Dirichlet one it names.
    solve(&d.join("external.vtkhdf"), &["boundary.0.kind=external"]);
    assert!(same_bits(&steps_of(&d.join("external.vtkhdf")), &reference));

    build(
        "cc",
        &[repo().join("examples/c/host.c")],
        &d.join("host_c"),
        &["-lm"],
    );
    build(
        "gfortran",
        &[
            repo().join("include/wavecp.f90"),
            repo().join("examples/fortran/host.f90"),
        ],
        &d.join("host_f"),
        &[],
    );
    let limit = Duration::from_secs(120);
    let mut outputs = vec![];
    for (exe, tag) in [(d.join("host_c"), "c"), (d.join("host_f"), "f")] {
        let o = run(Command::new(exe).arg(&job).arg(d).arg(END), limit);
        outputs.push((tag, o));
    }
    let py = run(
        python()
            .arg(repo().join("examples/python/host.py"))
            .arg(&job)
            .arg(d)
            .arg(END),
        limit,
    );
    outputs.push(("py", py));
    let n = 101 * 101;
    let last = &reference[reference.len() - n..];
    for (tag, out) in &outputs {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("bitwise equal"), "{tag} host:\n{text}");
        let file = d.join(format!("{tag}.vtkhdf"));
        assert!(
            same_bits(&steps_of(&file), &reference),
            "{tag} host: its output steps differ from wavecp solve's"
        );
        let rec = |p: &str| std::fs::read(d.join(p)).unwrap();
        assert_eq!(
            rec(&format!("{tag}.receivers.csv")),
            rec("solve.receivers.csv"),
            "{tag} host: receivers"
        );
        let field = field_of(&d.join(format!("{tag}_field.txt")));
        assert!(same_bits(&field, last), "{tag} host: final field");
    }
    // The Fortran host prints the finished run's summary (wavecp_summary_json).
    let text = String::from_utf8_lossy(&outputs[1].1.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("summary: "));
    let v: serde_json::Value = serde_json::from_str(line.unwrap_or("null")).unwrap();
    assert_eq!(v["mode"], "fe", "{text}");
    assert_eq!(v["finished"], true, "{text}");
    assert_eq!(v["step"], v["job_steps"], "{text}");
    // The wave reached the receiver: the comparison is not one of zeros.
    assert!(last.iter().map(|v| v.abs()).fold(0.0, f64::max) > 0.05);
}

#[test]
fn mpi_host_halves_are_bitwise_the_serial_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    solve(&d.join("solve.vtkhdf"), &[]);
    let reference = steps_of(&d.join("solve.vtkhdf"));
    build(
        "mpicc",
        &[repo().join("examples/c/mpi_host.c")],
        &d.join("mpi_host"),
        &[],
    );
    // 3 ranks: halves of 2 and 1 ranks.
    let out = run(
        Command::new("mpirun")
            .args(["--oversubscribe", "-np", "3"])
            .arg(d.join("mpi_host"))
            .arg(repo().join("jobs/square_dirichlet.toml"))
            .arg(d)
            .arg(END)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
        Duration::from_secs(180),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bitwise equal: 0 values differ"), "{text}");
    assert!(
        text.contains("half 0: 2 ranks") && text.contains("half 1: 1 ranks"),
        "{text}"
    );
    for half in [0, 1] {
        let f = d.join(format!("mpi_{half}.vtkhdf"));
        assert!(
            same_bits(&steps_of(&f), &reference),
            "half {half}: output differs from wavecp solve's"
        );
    }
}

/// A small job with an external side, writing nothing; `nx` picks the mesh.
fn tiny_job(dir: &Path, nx: usize) -> PathBuf {
    let p = dir.join(format!("tiny{nx}.toml"));
    std::fs::write(
        &p,
        format!(
            "[mesh.generate]\nshape = \"quad\"\nnx = {nx}\nny = 8\n\
             [[boundary]]\ntags = [\"left\"]\nkind = \"external\"\n\
             [[boundary]]\ntags = [\"right\"]\nkind = \"absorbing\"\n\
             [time]\nend = 0.2\n[[receiver]]\nposition = [0.5, 0.5]\n[output]\npath = \"\"\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn every_illegal_call_order_is_refused_with_its_code_also_under_valgrind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = d.join("conformance");
    build(
        "cc",
        &[repo().join("capi/tests/c/conformance.c")],
        &exe,
        &["-lm", "-g"],
    );
    let (a, b) = (tiny_job(d, 8), tiny_job(d, 6));
    let limit = Duration::from_secs(120);
    let out = run(Command::new(&exe).arg(&a).arg(&b).current_dir(d), limit);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("passed: 0 failures"), "{text}");
    assert!(text.matches("\nok ").count() >= 40, "{text}");
    // The same under valgrind: no invalid read, write or jump anywhere on the way.
    let out = run(
        Command::new("valgrind")
            .args(["--error-exitcode=9", "--leak-check=no", "-q"])
            .arg(&exe)
            .arg(&a)
            .arg(&b)
            .current_dir(d),
        Duration::from_secs(300),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("passed: 0 failures"));
}

/// One run of examples/python/skfem_host.py: its JSON line.
fn skfem_host(args: &[&str]) -> serde_json::Value {
    let out = run(
        python()
            .arg(repo().join("examples/python/skfem_host.py"))
            .args(args),
        Duration::from_secs(180),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// scikit-fem (a real FE code) solves the whole domain and drives wavecp's zone model through
/// the Python bindings, step by step. On a host mesh that triangulates the zone as wavecp does,
/// the two zone fields may differ only by rounding (measured: 2.5e-12, bound 1e-10: the
/// coupling adds nothing); on scikit-fem's own mesh (other diagonals) by the discretisation
/// error, which must fall as h² (measured 11.4 % → 2.2 %, rate 2.4; bounds: rate 1.7–3, and
/// under 4 % at h = 1/40).
#[test]
fn scikit_fem_host_drives_a_wavecp_zone_to_its_own_solution() {
    let exact = skfem_host(&["20", "--matching"]);
    let e = exact["max_rel_l2"].as_f64().unwrap();
    assert!(e < 1e-10, "matching meshes: zone fields differ by {e:e}");
    assert!(
        exact["zone_peak"].as_f64().unwrap() > 0.1,
        "the pulse did not reach the zone"
    );
    let coarse = skfem_host(&["20"])["max_rel_l2"].as_f64().unwrap();
    let fine = skfem_host(&["40"])["max_rel_l2"].as_f64().unwrap();
    let rate = (coarse / fine).log2();
    assert!(
        (1.7..3.0).contains(&rate),
        "rate {rate} ({coarse} -> {fine})"
    );
    assert!(fine < 0.04, "{fine}");
}

/// The surrogate handle from Fortran and Python (examples/forecast/): the demo network's
/// forecast of the demo case at the host's vertices, bitwise the same from both, within 10 %
/// of the FE solution (measured 3.5 %; repeating the last frame: 143 %).
#[test]
fn fortran_and_python_forecast_hosts_agree_bitwise_and_with_the_fe_solution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = d.join("forecast_f");
    let fc = repo().join("examples/forecast");
    build(
        "gfortran",
        &[repo().join("include/wavecp.f90"), fc.join("forecast.f90")],
        &exe,
        &[],
    );
    let (job, model) = (
        fc.join("demo_fe.toml"),
        repo().join("models/demo_cp.safetensors"),
    );
    let limit = Duration::from_secs(120);
    run(Command::new(&exe).arg(&job).arg(&model).arg(d), limit);
    let out = run(
        python()
            .arg(fc.join("forecast.py"))
            .arg(&job)
            .arg(&model)
            .arg(d),
        limit,
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let (err, still) = (
        v["forecast_rel_l2"].as_f64().unwrap(),
        v["last_frame_rel_l2"].as_f64().unwrap(),
    );
    assert!(err < 0.10 && err < 0.1 * still, "{v}");
    let read = |name: &str| -> Vec<f64> {
        std::fs::read_to_string(d.join(name))
            .unwrap()
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    let (f, p) = (read("f_forecast.txt"), read("py_forecast.txt"));
    assert_eq!(f.len(), 8 * 256);
    assert!(same_bits(&f, &p), "Fortran and Python forecasts differ");
}
