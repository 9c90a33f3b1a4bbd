//! Bad input, generated: mutated Gmsh meshes and job files run through the `wavecp` binary
//! (under a 4 GB address-space limit and a 30 s timeout; a valid job stops after 40 steps,
//! exit 3), each outcome classified as success,
//! clear error (exit 1 with `error:`), panic, abort/signal, timeout, or wrong result (exit 0
//! where the mutation makes the input invalid). Every class but the first two must stay empty.
//!
//! A bounded pass (a few hundred cases, seeded, ≈ 10 s) runs in the suite; `WAVECP_FUZZ_CASES`
//! sets the count per corpus and `WAVECP_FUZZ_BIN` points the same corpus at another build, so
//! a before/after comparison is one command:
//! `WAVECP_FUZZ_BIN=old/wavecp WAVECP_FUZZ_REPORT=1 cargo test --release fuzz::`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// xorshift64*: a fixed, dependency-free stream, so a failing case number is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Success,
    ClearError,
    Panic,
    Signal,
    Timeout,
    WrongResult,
}

fn bin() -> PathBuf {
    std::env::var_os("WAVECP_FUZZ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wavecp")))
}

fn cases() -> usize {
    std::env::var("WAVECP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// Runs `wavecp ARGS` with limits; `must_fail`: the input is invalid, so exit 0 is wrong.
fn classify(args: &[String], must_fail: bool) -> (Outcome, String) {
    classify_with(args, must_fail, false)
}

/// `hook_abort`: the arguments include `--abort-after-samples`, whose SIGABRT (without an
/// allocation failure or a panic on stderr) is the test hook ending a valid, long job.
fn classify_with(args: &[String], must_fail: bool, hook_abort: bool) -> (Outcome, String) {
    let out = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "30",
            "bash",
            "-c",
            "ulimit -v 4000000; exec \"$@\"",
            "wavecp",
        ])
        .arg(bin())
        .args(args)
        .env("WAVECP_LOG", "error")
        .output()
        .expect("timeout and bash run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    use std::os::unix::process::ExitStatusExt;
    // `timeout` passes a child's death by signal N on as exit status 128 + N.
    let signal = out
        .status
        .signal()
        .or(out.status.code().filter(|c| *c > 128).map(|c| c - 128));
    let hook = hook_abort
        && signal == Some(6)
        && !err.contains("memory allocation")
        && !err.contains("panicked");
    let o = match (out.status.code().filter(|c| *c <= 128), signal) {
        _ if hook && must_fail => Outcome::WrongResult,
        _ if hook => Outcome::Success,
        (_, Some(9)) => Outcome::Timeout,
        (_, Some(_)) => Outcome::Signal,
        (Some(101), _) => Outcome::Panic,
        (Some(0 | 3), _) if must_fail => Outcome::WrongResult,
        (Some(0 | 3), _) => Outcome::Success,
        (Some(1), _) if err.contains("error:") && !err.contains("panicked") => Outcome::ClearError,
        (Some(1), _) => Outcome::Panic,
        _ => Outcome::Signal,
    };
    (o, err)
}

fn report(name: &str, tally: &BTreeMap<Outcome, usize>, bad: &[String]) {
    eprintln!("fuzz {name} ({}): {tally:?}", bin().display());
    for b in bad.iter().take(10) {
        eprintln!("  {b}");
    }
    let broken: usize = tally
        .iter()
        .filter(|(o, _)| **o > Outcome::ClearError)
        .map(|(_, n)| n)
        .sum();
    if std::env::var_os("WAVECP_FUZZ_REPORT").is_none() {
        assert_eq!(
            broken, 0,
            "{name}: {broken} cases panicked, crashed, hung or gave a wrong result"
        );
    }
}

/// Section blocks of an MSH text: name → (first line, last line).
fn sections(lines: &[String]) -> BTreeMap<String, (usize, usize)> {
    let mut m = BTreeMap::new();
    let mut open: Option<(String, usize)> = None;
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_prefix("$End") {
            if let Some((o, s)) = open.take() {
                if o == name {
                    m.insert(format!("${name}"), (s, i));
                }
            }
        } else if let Some(name) = l.strip_prefix('$') {
            open = Some((name.to_string(), i));
        }
    }
    m
}

/// Element block header lines (`dim entity type count`) of `$Elements`.
fn element_blocks(lines: &[String], (s, e): (usize, usize)) -> Vec<usize> {
    let mut out = vec![];
    let mut i = s + 2;
    while i < e {
        let n: usize = lines[i]
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.push(i);
        i += n + 1;
    }
    out
}

/// Mutations of a valid mesh: structural ones that make it invalid (the reader must refuse
/// them), and random ones (any clean outcome).
fn mutate_mesh(base: &[String], rng: &mut Rng) -> (String, Vec<String>, bool) {
    let mut l = base.to_vec();
    let secs = sections(&l);
    let (es, ee) = secs["$Elements"];
    let (ns, ne) = secs["$Entities"];
    let extremes = [
        "0",
        "-1",
        "9223372036854775807",
        "18446744073709551615",
        "4294967296",
        "1e308",
        "nan",
        "-0",
        "x",
    ];
    match rng.below(9) {
        0 => {
            let block: Vec<String> = l[es..=ee].to_vec();
            l.splice(ee + 1..ee + 1, block);
            ("duplicated $Elements".into(), l, true)
        }
        1 => {
            let ent: Vec<String> = l[ns..=ne].to_vec();
            let els: Vec<String> = l[es..=ee].to_vec();
            // $Entities after $Elements.
            let mut out: Vec<String> = l[..ns].to_vec();
            out.extend(l[ne + 1..es].iter().cloned());
            out.extend(els);
            out.extend(ent);
            out.extend(l[ee + 1..].iter().cloned());
            ("$Entities after $Elements".into(), out, true)
        }
        2 => {
            let blocks = element_blocks(&l, (es, ee));
            let b = blocks[rng.below(blocks.len())];
            let mut t: Vec<String> = l[b].split_whitespace().map(String::from).collect();
            t[0] = ["3", "-1", "7"][rng.below(3)].into();
            l[b] = t.join(" ");
            (format!("entity dimension of block at line {b}"), l, true)
        }
        3 => {
            let blocks = element_blocks(&l, (es, ee));
            let b = blocks[rng.below(blocks.len())];
            let mut t: Vec<String> = l[b].split_whitespace().map(String::from).collect();
            t[1] = "987654".into();
            l[b] = t.join(" ");
            (
                format!("entity missing from $Entities, block at line {b}"),
                l,
                true,
            )
        }
        4 => {
            let i = rng.below(l.len());
            l.remove(i);
            (format!("line {i} deleted"), l, false)
        }
        5 => {
            let i = rng.below(l.len());
            let dup = l[i].clone();
            l.insert(i, dup);
            (format!("line {i} doubled"), l, false)
        }
        6 | 7 => {
            let i = rng.below(l.len());
            let mut t: Vec<String> = l[i].split_whitespace().map(String::from).collect();
            if !t.is_empty() {
                let k = rng.below(t.len());
                t[k] = extremes[rng.below(extremes.len())].into();
            }
            l[i] = t.join(" ");
            (format!("line {i} token changed"), l, false)
        }
        _ => {
            let i = rng.below(l.len());
            l.truncate(i);
            (format!("truncated at line {i}"), l, false)
        }
    }
}

#[test]
fn mutated_meshes_are_read_or_refused_never_crash_or_mislead() {
    let text = std::fs::read_to_string(crate::common::repo("meshes/lshape.msh")).unwrap();
    let base: Vec<String> = text.lines().map(String::from).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut tally = BTreeMap::new();
    let mut bad = vec![];
    for case in 0..cases() {
        let (what, lines, must_fail) = mutate_mesh(&base, &mut rng);
        let p = dir.path().join(format!("m{case}.msh"));
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let (o, err) = classify(
            &["mesh".into(), "info".into(), p.display().to_string()],
            must_fail,
        );
        *tally.entry(o).or_insert(0) += 1;
        if o > Outcome::ClearError {
            bad.push(format!(
                "case {case} ({what}): {o:?} {}",
                err.lines().last().unwrap_or("")
            ));
        }
        std::fs::remove_file(&p).unwrap();
    }
    report("meshes", &tally, &bad);
}

/// Values that are out of range, of the wrong type, or absurd.
const VALUES: [&str; 16] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "9223372036854775807",
    "4294967296",
    "1e-300",
    "\"x\"",
    "[]",
    "[1e308, 0.5]",
    "[0.5]",
    "true",
    "{}",
    "100000",
];

/// Runs `wavecp ARGS JOB --set KEY=VALUE EXTRA` for random keys and values of `VALUES`.
fn fuzz_keys(name: &str, seed: u64, args: &[&str], keys: &[&str], extra: &[&str]) {
    let mut rng = Rng(seed);
    let mut tally = BTreeMap::new();
    let mut bad = vec![];
    for case in 0..cases() {
        let (k, v) = (keys[rng.below(keys.len())], VALUES[rng.below(VALUES.len())]);
        // A non-finite number accepted for any key is a wrong result, and so is an amplitude
        // whose energy overflows.
        let must_fail =
            matches!(v, "nan" | "inf") || (k.ends_with("amplitude") && v.contains("1e308"));
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(["--set".to_string(), format!("{k}={v}")]);
        a.extend(extra.iter().map(|s| s.to_string()));
        let hook = extra.contains(&"--abort-after-samples");
        let (o, err) = classify_with(&a, must_fail, hook);
        *tally.entry(o).or_insert(0) += 1;
        if o > Outcome::ClearError {
            bad.push(format!(
                "case {case} ({k}={v}): {o:?} {}",
                err.lines().last().unwrap_or("")
            ));
        }
    }
    report(name, &tally, &bad);
}

/// A small solve job: a valid job that is merely long stops after 40 steps (exit 3), since
/// setup is what is tested.
#[test]
fn mutated_job_keys_run_or_are_refused_never_crash_hang_or_mislead() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        r#"[mesh.generate]
shape = "quad"
nx = 8
ny = 8
[material]
c = 1.0
[[boundary]]
tags = ["left", "right"]
kind = "absorbing"
[[source]]
position = [0.5, 0.5]
frequency = 4.0
[time]
end = 0.2
[[receiver]]
position = [0.25, 0.25]
[output]
path = ""
"#,
    )
    .unwrap();
    let keys = [
        "mesh.generate.nx",
        "mesh.generate.ny",
        "mesh.generate.x",
        "material.c",
        "boundary.0.tags",
        "boundary.0.kind",
        "boundary.0.value",
        "source.0.position",
        "source.0.frequency",
        "source.0.amplitude",
        "source.0.delay",
        "time.end",
        "time.dt",
        "time.safety",
        "receiver.0.position",
        "output.every",
        "solver.threads",
        "checkpoint.every",
        "checkpoint.minutes",
        "initial.displacement",
    ];
    let j = job.to_str().unwrap();
    fuzz_keys(
        "solve job keys",
        0xD1B54A32D192ED03,
        &["solve", j],
        &keys,
        &["--stop-after-steps", "40"],
    );
}

/// A small dataset job (two samples of 20 frames of 8 × 8) and a small training job on it.
#[cfg(feature = "hdf5")]
#[test]
fn mutated_dataset_and_training_keys_run_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.join("ds.toml");
    std::fs::write(
        &ds,
        format!(
            "[mesh.generate]\nshape = \"quad\"\nnx = 20\nny = 20\n[[boundary]]\ntags = [\"left\", \"right\", \"top\", \"bottom\"]\nkind = \"absorbing\"\n\
             [zone]\nx = [0.2, 0.8]\ny = [0.2, 0.8]\nnx = 8\nny = 8\n[frames]\nstride = 1\ncount = 20\nstart = 4\n\
             [sampling]\nsource_x = [0.3, 0.7]\nsource_y = [0.3, 0.7]\nfrequency = [3.0, 5.0]\ndelay = [0.1, 0.2]\n\
             [train]\nsamples = 2\nseed = 1\npath = \"{}\"\n",
            d.join("data.h5").display()
        ),
    )
    .unwrap();
    let keys = [
        "mesh.generate.nx",
        "zone.x",
        "zone.nx",
        "zone.ny",
        "frames.stride",
        "frames.count",
        "frames.start",
        "sampling.source_x",
        "sampling.frequency",
        "sampling.amplitude",
        "sampling.delay",
        "time.safety",
        "time.dt",
        "train.samples",
        "train.seed",
    ];
    let j = ds.to_str().unwrap();
    fuzz_keys(
        "dataset job keys",
        0x8CB92BA72F3D8DD7,
        &["dataset", j],
        &keys,
        // A valid job that is merely long (many samples) ends at the hook after 3 samples.
        &["--overwrite", "--abort-after-samples", "3"],
    );

    // A valid dataset for the training job.
    let o = Command::new(bin())
        .args(["dataset", j, "--overwrite"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tr = d.join("train.toml");
    std::fs::write(
        &tr,
        format!(
            "[data]\ntrain = \"{}\"\nt_in = 8\nt_out = 8\nwindow_stride = 2\nvalidation = 0.5\n[model]\nfile = \"{}\"\n\
             [train]\nepochs = 1\nbatch = 2\nseed = 3\n[optimizer]\nlr = 1e-3\n[output]\ndir = \"{}\"\n",
            d.join("data.h5").display(),
            crate::common::repo("models/small_pair2d.toml").display(),
            d.join("out").display()
        ),
    )
    .unwrap();
    let keys = [
        "data.t_in",
        "data.t_out",
        "data.window_stride",
        "data.validation",
        "train.epochs",
        "train.batch",
        "train.threads",
        "optimizer.lr",
        "optimizer.beta1",
        "optimizer.weight_decay",
        "optimizer.warmup",
        "optimizer.clip_norm",
        "output.checkpoint_every",
    ];
    let j = tr.to_str().unwrap();
    fuzz_keys(
        "training job keys",
        0x94D049BB133111EB,
        &["train", j],
        &keys,
        // A valid run that is merely long (many epochs) stops after 2, as a time limit would.
        &["--stop-after-epochs", "2"],
    );
}

/// Model files and datasets, damaged at random and on purpose, through `wavecp eval` and
/// `wavecp predict`: a clear error or a finite result, never a panic, an abort, a NaN printed
/// as `null`, or a prediction file written from broken numbers. On purpose: metadata with
/// `t_out = 0`, a std of 0 or below, a mean of NaN, a `t_in` the layers do not fit, weights
/// scaled until the forward pass overflows; datasets with a std of 0, −1 or NaN, and every
/// byte position class of the HDF5 file flipped.
#[cfg(feature = "hdf5")]
#[test]
fn damaged_model_files_and_datasets_are_refused_never_crash_or_mislead() {
    use wavecp::surrogate::modelfile::{self, ModelMeta};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = crate::surrogate::dataset(d, "data.h5", 16, 4, 5);
    let (spec, meta) = crate::surrogate::untrained_small_cp(&data);
    let save = |name: &str, meta: &ModelMeta, scale: f32| -> PathBuf {
        let mut model = wavecp::nn::Model::new(spec.clone()).unwrap();
        for p in model.params_mut() {
            p.value.iter_mut().for_each(|v| *v *= scale);
        }
        let p = d.join(name);
        modelfile::save(&p, &model, meta, None).unwrap();
        p
    };
    let good = save("good.safetensors", &meta, 1.0);
    let mut tally = BTreeMap::new();
    let mut bad = vec![];
    let mut check =
        |what: String, model: &std::path::Path, data: &std::path::Path, must_fail: bool| {
            let pred = d.join("pred.h5");
            let _ = std::fs::remove_file(&pred);
            for cmd in ["eval", "predict"] {
                let mut args = vec![
                    cmd.to_string(),
                    model.display().to_string(),
                    data.display().to_string(),
                ];
                if cmd == "predict" {
                    args.extend(["-o".to_string(), pred.display().to_string()]);
                }
                let (mut o, err) = classify(&args, must_fail);
                // A failed predict leaves neither the file nor a temporary one.
                if cmd == "predict" && o == Outcome::ClearError {
                    let litter = std::fs::read_dir(d)
                        .unwrap()
                        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
                    if pred.exists() || litter {
                        o = Outcome::WrongResult;
                    }
                }
                *tally.entry(o).or_insert(0) += 1;
                if o > Outcome::ClearError {
                    bad.push(format!(
                        "{what} ({cmd}): {o:?} {}",
                        err.lines().last().unwrap_or("")
                    ));
                }
            }
        };
    check("intact".into(), &good, &data, false);
    let variants: Vec<(&str, ModelMeta, f32)> = vec![
        (
            "t_out = 0",
            ModelMeta {
                t_out: 0,
                ..meta.clone()
            },
            1.0,
        ),
        (
            "t_in = 7 (layers give 8 frames for 8)",
            ModelMeta {
                t_in: 7,
                ..meta.clone()
            },
            1.0,
        ),
        (
            "std = 0",
            ModelMeta {
                std: 0.0,
                ..meta.clone()
            },
            1.0,
        ),
        (
            "std = -1",
            ModelMeta {
                std: -1.0,
                ..meta.clone()
            },
            1.0,
        ),
        (
            "mean = NaN",
            ModelMeta {
                mean: f64::NAN,
                ..meta.clone()
            },
            1.0,
        ),
        (
            "grid 0",
            ModelMeta {
                ny: 0,
                ..meta.clone()
            },
            1.0,
        ),
        ("weights × 1e12 (forward overflows)", meta.clone(), 1e12),
    ];
    for (k, (what, m, scale)) in variants.iter().enumerate() {
        let p = save(&format!("v{k}.safetensors"), m, *scale);
        check(what.to_string(), &p, &data, true);
    }
    // Random byte flips in the model file (header and tensors).
    let bytes = std::fs::read(&good).unwrap();
    let mut rng = Rng(0xA0761D6478BD642F);
    for case in 0..cases() / 5 {
        let mut b = bytes.clone();
        let i = if case % 2 == 0 {
            rng.below(2048.min(b.len()))
        } else {
            rng.below(b.len())
        };
        b[i] ^= 1 << rng.below(8);
        let p = d.join("flip.safetensors");
        std::fs::write(&p, &b).unwrap();
        check(format!("model byte {i} flipped"), &p, &data, false);
    }
    // Datasets: damaged statistics, then random byte flips.
    for (what, v) in [
        ("std = 0", 0.0),
        ("std = -1", -1.0),
        ("std = NaN", f64::NAN),
    ] {
        let p = d.join("stats.h5");
        std::fs::copy(&data, &p).unwrap();
        {
            let f = hdf5::File::open_rw(&p).unwrap();
            f.dataset("frames")
                .unwrap()
                .attr("std")
                .unwrap()
                .write_scalar(&v)
                .unwrap();
        }
        check(format!("dataset {what}"), &good, &p, true);
    }
    let bytes = std::fs::read(&data).unwrap();
    // The dimensions of /frames ([4, 20, 16, 16] as 64-bit words in its dataspace message),
    // one byte of them flipped high: a request for petabytes if read as they say.
    let dims: Vec<u8> = [4u64, 20, 16, 16]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let at = bytes
        .windows(dims.len())
        .position(|w| w == dims.as_slice())
        .expect("the dataspace of /frames is in the file");
    for (k, off) in [(1, 6), (2, 15), (3, 22)] {
        let mut b = bytes.clone();
        b[at + off] ^= 0x40;
        let p = d.join(format!("dims{k}.h5"));
        std::fs::write(&p, &b).unwrap();
        check(
            format!("dataset dimension byte {off} flipped"),
            &good,
            &p,
            true,
        );
    }
    for _ in 0..cases() / 5 {
        let mut b = bytes.clone();
        // Most of the file is frame data; flips in the first 4 KiB hit the superblock, the
        // object headers (dataspace dimensions among them) and the attributes.
        let i = if rng.below(2) == 0 {
            rng.below(4096)
        } else {
            rng.below(b.len())
        };
        b[i] ^= 1 << rng.below(8);
        let p = d.join("flip.h5");
        std::fs::write(&p, &b).unwrap();
        check(format!("dataset byte {i} flipped"), &good, &p, false);
    }
    report("model files and datasets", &tally, &bad);
}
