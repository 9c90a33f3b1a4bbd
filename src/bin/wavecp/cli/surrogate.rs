//! `wavecp dataset | train | eval | predict | compare`: the surrogate workflow.

#[cfg(feature = "hdf5")]
use anyhow::Context;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DatasetArgs {
    pub job: PathBuf,
    /// Which split(s) of the job to generate.
    #[arg(long, value_parser = ["train", "test", "all"], default_value = "all")]
    pub split: String,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Replace an existing file that was made from a different job.
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub json: bool,
    /// Testing aid: abort (as a crash would) after this many samples were written.
    #[arg(long, hide = true)]
    pub abort_after_samples: Option<usize>,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    pub job: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from `<output.dir>/checkpoint.safetensors`.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub json: bool,
    /// auto (CUDA device 0 if it opens, else the CPU, saying why), cpu, cuda (device 0) or
    /// cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: wavecp::nn::Device,
    /// Testing aid: stop after this many epochs (as a time limit would).
    #[arg(long, hide = true)]
    pub stop_after_epochs: Option<usize>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    pub model: PathBuf,
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
    /// auto, cpu, cuda or cuda:N (see `train --device`).
    #[arg(long, default_value = "cpu")]
    pub device: wavecp::nn::Device,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    pub test: PathBuf,
    pub models: Vec<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
    /// auto, cpu, cuda or cuda:N (see `train --device`).
    #[arg(long, default_value = "cpu")]
    pub device: wavecp::nn::Device,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    pub model: PathBuf,
    pub input: PathBuf,
    #[arg(long, short, default_value = "prediction.h5")]
    pub output: PathBuf,
    /// auto, cpu, cuda or cuda:N (see `train --device`).
    #[arg(long, default_value = "cpu")]
    pub device: wavecp::nn::Device,
}

#[cfg(feature = "hdf5")]
pub fn dataset(a: DatasetArgs, comm: &dyn wavecp::comm::Comm) -> Result<()> {
    let DatasetArgs {
        job,
        split,
        set,
        overwrite,
        json,
        abort_after_samples,
    } = a;
    let (job, split) = (job.as_path(), split.as_str());
    use wavecp::dataset::{generate_on, DatasetJob, DatasetOptions};
    let d = DatasetJob::load(job, &set)?;
    let base = job.parent().map(PathBuf::from).unwrap_or_default();
    let opts = DatasetOptions {
        progress: !json,
        overwrite,
        abort_after_samples,
    };
    let mut splits = Vec::new();
    if split != "test" {
        splits.push(d.train.clone());
    }
    if split != "train" {
        match &d.test {
            Some(t) => splits.push(t.clone()),
            None if split == "test" => {
                anyhow::bail!("{}: the job has no [test] section", job.display())
            }
            None => {}
        }
    }
    let mut summaries = Vec::new();
    for s in &splits {
        let summary = generate_on(&d, &base, s, &opts, comm)
            .with_context(|| format!("dataset {}", s.path.display()))?;
        if !json && comm.rank() == 0 {
            println!(
                "{}: {} samples ({} generated, {} resumed) of {} frames {}×{}, frame dt {:.4e}, mean {:.3e}, std {:.3e}, {:.1} s",
                summary.path.display(), summary.samples, summary.generated, summary.resumed, summary.frames, summary.ny, summary.nx, summary.frame_dt, summary.mean, summary.std, summary.wall_s
            );
        }
        summaries.push(summary);
    }
    if json && comm.rank() == 0 {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub fn dataset(_: DatasetArgs, _: &dyn wavecp::comm::Comm) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: datasets need it")
}

#[cfg(feature = "hdf5")]
pub fn train(a: TrainArgs) -> Result<()> {
    let TrainArgs {
        job,
        set,
        resume,
        json,
        device,
        stop_after_epochs,
    } = a;
    let job = job.as_path();
    use wavecp::surrogate::train::{run, TrainJob, TrainOptions};
    let j = TrainJob::load(job, &set)?;
    let base = job.parent().map(PathBuf::from).unwrap_or_default();
    let s = run(
        &j,
        &base,
        &TrainOptions {
            progress: !json,
            resume,
            device,
            stop_after_epochs,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let gpu = s
            .gpu_peak_mib
            .map_or(String::new(), |g| format!(", GPU peak {g:.0} MiB"));
        println!(
            "{} epochs, {} trainable parameters ({} weight bytes), best validation loss {:.4e}, {:.2} s/epoch, peak memory {:.0} MiB{gpu}; best model: {}",
            s.epochs, s.trainable_params, s.weight_bytes, s.best_val_loss, s.mean_epoch_s, s.peak_rss_mb, s.best_model.display()
        );
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub fn train(_: TrainArgs) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: training reads HDF5 datasets")
}

#[cfg(feature = "hdf5")]
pub fn eval(a: EvalArgs) -> Result<()> {
    let EvalArgs {
        model,
        dataset,
        batch,
        json,
        device,
    } = a;
    let (model, dataset) = (model.as_path(), dataset.as_path());
    let r = wavecp::surrogate::eval::evaluate_on(model, dataset, batch, device)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} windows: relative L2 error {:.4} (per frame: {:.4?})",
            r.windows, r.rel_l2_mean, r.rel_l2_per_frame
        );
        println!(
            "rollout over {} windows: {:.4?}",
            r.rollout_windows, r.rollout_rel_l2
        );
        println!(
            "inference {:.3} ms per sample, {} trainable parameters",
            r.inference_ms_per_sample, r.trainable_params
        );
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub fn eval(_: EvalArgs) -> Result<()> {
    anyhow::bail!(
        "this wavecp was built without the `hdf5` feature: evaluation reads HDF5 datasets"
    )
}

#[cfg(feature = "hdf5")]
pub fn predict(a: PredictArgs) -> Result<()> {
    let PredictArgs {
        model,
        input,
        output,
        device,
    } = a;
    let (model, input, output) = (model.as_path(), input.as_path(), output.as_path());
    let n = wavecp::surrogate::eval::predict_on(model, input, output, device)?;
    println!("{n} predictions written to {}", output.display());
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub fn predict(_: PredictArgs) -> Result<()> {
    anyhow::bail!("this wavecp was built without the `hdf5` feature: prediction reads HDF5 files")
}

#[cfg(feature = "hdf5")]
pub fn compare(a: CompareArgs) -> Result<()> {
    let CompareArgs {
        test,
        models,
        batch,
        json,
        device,
    } = a;
    let test = test.as_path();
    anyhow::ensure!(!models.is_empty(), "give at least one model file");
    let rows = wavecp::surrogate::eval::compare_on(&models, test, batch, device)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", wavecp::surrogate::eval::compare_markdown(&rows));
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub fn compare(_: CompareArgs) -> Result<()> {
    anyhow::bail!(
        "this wavecp was built without the `hdf5` feature: comparisons read HDF5 datasets"
    )
}
