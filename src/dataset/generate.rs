//! Generating one split: the FE model prepared once, the samples simulated in parallel batches
//! over the ranks, rank 0 writing them in sample order and committing each batch.

use super::file::DatasetFile;
use super::{invalid, DatasetJob, DatasetOptions, DatasetSummary, SplitConfig, ZoneConfig};
use crate::config::SourceConfig;
use crate::coupling::transfer::{TransferError, ZoneGrid, ZoneTransfer};
use crate::fem::WaveSpeed;
use crate::progress::Progress;
use crate::sim::{self, DriverError, Simulation};
use crate::solver::{Problem, WaveSolver};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;
use std::time::Duration;

/// A finished simulation: sample index, parameters, frames `[frames, ny, nx]`.
type Sample = (usize, Vec<f64>, Vec<f32>);

/// One sample's parameters, drawn from its own stream; positions outside the mesh are redrawn.
fn draw(
    job: &DatasetJob,
    seed: u64,
    index: usize,
    inside: impl Fn([f64; 2]) -> bool,
) -> Result<Vec<f64>, DriverError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    let s = &job.sampling;
    let mut u = |r: [f64; 2]| {
        if r[1] > r[0] {
            rng.random_range(r[0]..=r[1])
        } else {
            r[0]
        }
    };
    let z = &job.zone;
    let clear = |p: [f64; 2]| match s.outside_zone {
        None => true,
        Some(m) => p[0] < z.x[0] - m || p[0] > z.x[1] + m || p[1] < z.y[0] - m || p[1] > z.y[1] + m,
    };
    let mut pos = None;
    for _ in 0..1000 {
        let p = [u(s.source_x), u(s.source_y)];
        if inside(p) && clear(p) {
            pos = Some(p);
            break;
        }
    }
    let p = pos.ok_or_else(|| {
        invalid(
            "sampling.source_x/source_y",
            "1000 draws in this rectangle all fell outside the mesh (or inside the zone with sampling.outside_zone)",
        )
    })?;
    let f = u(s.frequency);
    let a = u(s.amplitude);
    let d = match s.delay {
        Some(r) => u(r),
        None => crate::sources::ricker_default_delay(f),
    };
    let mut v = vec![p[0], p[1], f, a, d];
    if let Some(inc) = &s.inclusion {
        v.push(u(inc.speed));
    }
    Ok(v)
}

/// The FE model every sample shares: the problem of the job, its speeds per cell, and the
/// cells of the inclusion whose speed is sampled.
struct Model<'a> {
    job: &'a DatasetJob,
    problem: &'a Problem,
    base_speed: Vec<f64>,
    /// The inclusion's tag and every cell's tag.
    inclusion: Option<(i32, Vec<i32>)>,
}

impl<'a> Model<'a> {
    fn new(job: &'a DatasetJob, problem: &'a Problem) -> Result<Self, DriverError> {
        let mesh = &problem.mesh;
        let base_speed = match &problem.speed {
            WaveSpeed::PerCell(c) => c.clone(),
            WaveSpeed::Nodal(_) => vec![],
        };
        let inclusion = match &job.sampling.inclusion {
            Some(inc) => Some(mesh.resolve_tag(2, &inc.region).ok_or_else(|| {
                invalid(
                    "sampling.inclusion.region",
                    format!("no region `{}` in the mesh", inc.region),
                )
            })?),
            None => None,
        };
        Ok(Model {
            job,
            problem,
            base_speed,
            inclusion: inclusion.map(|tag| (tag, mesh.cell_tags())),
        })
    }

    /// The speeds with the inclusion at speed `inc` (the job's own speeds without one).
    fn speed(&self, inc: Option<f64>) -> WaveSpeed {
        match (inc, &self.inclusion) {
            (Some(c), Some((tag, cell_tags))) => WaveSpeed::PerCell(
                self.base_speed
                    .iter()
                    .zip(cell_tags)
                    .map(|(b, t)| if t == tag { c } else { *b })
                    .collect(),
            ),
            _ => self.problem.speed.clone(),
        }
    }

    fn problem(&self, speed: WaveSpeed, sources: Vec<crate::sources::PointSource>) -> Problem {
        Problem {
            mesh: self.problem.mesh.clone(),
            speed,
            boundaries: self.problem.boundaries.clone(),
            sources,
            operator: self.job.solver.operator,
        }
    }

    /// One `dt` for all samples: the job's, or the limit at the fastest inclusion speed of the
    /// sampled range.
    fn dt(&self) -> Result<f64, DriverError> {
        let fastest = self.job.sampling.inclusion.as_ref().map(|i| i.speed[1]);
        let mut s = WaveSolver::new(&self.problem(self.speed(fastest), vec![]))?;
        let dt = self
            .job
            .time
            .dt
            .unwrap_or(self.job.time.safety * s.dt_limit());
        s.set_dt(dt)?;
        Ok(dt)
    }

    /// The frames of the sample of parameters `params` (see [`draw`]) on the zone grid.
    fn simulate(
        &self,
        params: &[f64],
        dt: f64,
        grid: &ZoneTransfer,
    ) -> Result<Vec<f32>, DriverError> {
        let (job, mesh) = (self.job, &self.problem.mesh);
        let src = SourceConfig {
            position: [params[0], params[1]],
            frequency: params[2],
            amplitude: params[3],
            delay: Some(params[4]),
        };
        let source = sim::point_source(mesh, &src)
            .ok_or_else(|| invalid("sampling", "source outside the mesh"))?;
        let mut solver =
            WaveSolver::new(&self.problem(self.speed(params.get(5).copied()), vec![source]))?;
        solver.set_dt(dt)?;
        let zero = vec![0.0; mesh.num_nodes()];
        solver.set_initial(&zero, &zero)?;
        let mut sim = Simulation::serial(solver)?;
        // Frame f is the field at step start + f·stride (the last one is step nsteps).
        let mut g = vec![0.0; grid.points()];
        let mut frames = Vec::with_capacity(job.frames.count * g.len());
        for f in 0..job.frames.count {
            let at = job.frames.start + f * job.frames.stride;
            sim.advance(at - sim.steps_done());
            grid.to_grid(sim.solver().u(), &mut g).map_err(zone_err)?;
            frames.extend(g.iter().map(|&v| v as f32));
        }
        debug_assert_eq!(sim.steps_done(), job.steps());
        sim.solver().check_finite()?;
        Ok(frames)
    }
}

fn zone_err(e: TransferError) -> DriverError {
    invalid("zone", e.to_string())
}

/// The zone's grid and its stencils on the mesh (the FE interpolant at each point, as the
/// coupling's transfer takes it); every point must lie in the mesh.
fn zone_grid(z: &ZoneConfig, mesh: &crate::mesh::Mesh) -> Result<ZoneTransfer, DriverError> {
    let grid = ZoneGrid {
        x: z.x,
        y: z.y,
        nx: z.nx,
        ny: z.ny,
    };
    let outside = |k: usize| {
        let [x, y] = grid.point(k % z.nx, k / z.nx);
        invalid("zone", format!("grid point ({x}, {y}) is outside the mesh"))
    };
    let t = match ZoneTransfer::new(mesh, grid) {
        Err(TransferError::NoOverlap) => return Err(outside(0)),
        r => r.map_err(zone_err)?,
    };
    let first_outside = t.inside().position(|inside| !inside);
    match first_outside {
        Some(k) => Err(outside(k)),
        None => Ok(t),
    }
}

/// On rank 0, the split's file, new or resumed when it was made from the same job and split
/// (collective): every rank gets the samples still to do, or rank 0's error.
fn open_split(
    job: &DatasetJob,
    split: &SplitConfig,
    opts: &DatasetOptions,
    (gx, gy, dt): (&[f64], &[f64], f64),
    comm: &dyn crate::comm::Comm,
) -> Result<(Option<DatasetFile>, Vec<usize>), DriverError> {
    let mut file = None;
    let mut msg = Vec::new();
    if comm.rank() == 0 {
        let fingerprint = format!(
            "{}\n[split]\nsamples = {}\nseed = {}\n",
            toml::to_string(job).unwrap_or_default(),
            split.samples,
            split.seed
        );
        let shape = [split.samples, job.frames.count, job.zone.ny, job.zone.nx];
        let opened = DatasetFile::open(
            &split.path,
            &fingerprint,
            opts.overwrite,
            shape,
            &job.param_names(),
        )
        .and_then(|mut f| {
            let (stride, start) = (job.frames.stride, job.frames.start);
            f.write_meta(gx, gy, dt, stride, start, split.seed)?;
            Ok(f)
        });
        match opened {
            Ok(f) => {
                let pending: Vec<u64> = (0..split.samples)
                    .filter(|i| !f.done[*i])
                    .map(|i| i as u64)
                    .collect();
                msg.push(0u8);
                msg.extend(crate::comm::to_bytes(&pending));
                file = Some(f);
            }
            Err(e) => {
                msg.push(1u8);
                msg.extend(e.to_string().into_bytes());
                comm.broadcast_bytes(&mut msg);
                return Err(e);
            }
        }
    }
    comm.broadcast_bytes(&mut msg);
    if msg.first() != Some(&0) {
        return Err(DriverError::OtherRank(
            String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned(),
        ));
    }
    let pending = bincode::deserialize::<Vec<u64>>(&msg[1..])
        .map_err(|e| DriverError::OtherRank(e.to_string()))?
        .into_iter()
        .map(|i| i as usize)
        .collect();
    Ok((file, pending))
}

/// Every rank's samples to rank 0 as one f64 record each (index, parameters, frames;
/// f32 → f64 → f32 is exact); `None` on the other ranks, else the samples in index order.
fn gather_samples(
    comm: &dyn crate::comm::Comm,
    results: Vec<Result<Sample, DriverError>>,
    (params, frame_len): (usize, usize),
) -> Result<Option<Vec<Sample>>, DriverError> {
    let rec = 1 + params + frame_len;
    let mut records = Vec::with_capacity(results.len() * rec);
    for r in results {
        let (i, params, frames) = r?;
        records.push(i as f64);
        records.extend(&params);
        records.extend(frames.iter().map(|&v| f64::from(v)));
    }
    let Some(all) = comm.gather_f64(&records) else {
        return Ok(None);
    };
    let mut samples: Vec<Sample> = all
        .chunks_exact(rec)
        .map(|r| {
            (
                r[0] as usize,
                r[1..1 + params].to_vec(),
                r[1 + params..].iter().map(|&v| v as f32).collect(),
            )
        })
        .collect();
    samples.sort_by_key(|s| s.0);
    Ok(Some(samples))
}

/// Generates (or resumes) one split. `base` is the job file's folder.
pub fn generate(
    job: &DatasetJob,
    base: &Path,
    split: &SplitConfig,
    opts: &DatasetOptions,
) -> Result<DatasetSummary, DriverError> {
    generate_on(job, base, split, opts, &crate::comm::Serial)
}

/// As [`generate`] over the ranks of `comm` (collective): each rank runs whole simulations
/// (sample `k` of every batch on rank `k mod ranks`) and rank 0 writes them, in sample order, to
/// the one file, which is the same as the serial one for the same seed.
pub fn generate_on(
    job: &DatasetJob,
    base: &Path,
    split: &SplitConfig,
    opts: &DatasetOptions,
    comm: &dyn crate::comm::Comm,
) -> Result<DatasetSummary, DriverError> {
    let root = comm.rank() == 0;
    let wall = std::time::Instant::now();
    let setup = sim::setup(&job.fe_config(1.0, vec![]), base)?;
    let model = Model::new(job, &setup.problem)?;
    let dt = model.dt()?;
    let grid = zone_grid(&job.zone, &setup.problem.mesh)?;
    let z = grid.grid();
    let gx: Vec<f64> = (0..z.nx).map(|i| z.point(i, 0)[0]).collect();
    let gy: Vec<f64> = (0..z.ny).map(|j| z.point(0, j)[1]).collect();
    let (mut file, pending) = open_split(job, split, opts, (&gx, &gy, dt), comm)?;
    let locator = setup.problem.mesh.locator();
    let resumed = split.samples - pending.len();
    if resumed > 0 {
        tracing::info!(
            "{}: resuming, {resumed} of {} samples already done",
            split.path.display(),
            split.samples
        );
    }
    // Simulations in parallel batches; each batch is written and committed before the next.
    let mut progress = Progress::new(
        "dataset",
        pending.len() as u64,
        opts.progress && root,
        Duration::from_secs(10),
    );
    let (rank, ranks) = (comm.rank(), comm.size());
    let batch = (2 * rayon::current_num_threads()).max(1) * ranks;
    let record = (job.param_names().len(), grid.points() * job.frames.count);
    let mut committed = 0;
    for chunk in pending.chunks(batch) {
        let mine: Vec<usize> = chunk.iter().copied().skip(rank).step_by(ranks).collect();
        let results: Vec<Result<Sample, DriverError>> = mine
            .par_iter()
            .map(|&i| {
                let params = draw(job, split.seed, i, |p| locator.locate(p).is_some())?;
                let frames = model.simulate(&params, dt, &grid)?;
                Ok((i, params, frames))
            })
            .collect();
        let Some(samples) = gather_samples(comm, results, record)? else {
            continue;
        };
        let Some(file) = file.as_mut() else {
            continue;
        };
        for (i, params, frames) in samples {
            file.write_sample(i, &params, &frames)?;
            committed += 1;
            progress.set(committed as u64);
            if opts.abort_after_samples == Some(committed) {
                file.flush()?;
                std::process::abort();
            }
        }
        file.flush()?;
    }
    progress.finish();
    // Normalisation statistics over all frames, summed in sample order (on rank 0, which
    // shares them so every rank returns the same summary).
    let mut stats = [0.0, 0.0];
    if let Some(f) = file.as_mut() {
        let (m, s) = f.statistics()?;
        stats = [m, s];
    }
    comm.sum_f64(&mut stats);
    let [mean, std] = stats;
    Ok(DatasetSummary {
        path: split.path.clone(),
        samples: split.samples,
        generated: pending.len(),
        resumed,
        frames: job.frames.count,
        nx: job.zone.nx,
        ny: job.zone.ny,
        dt,
        frame_dt: dt * job.frames.stride as f64,
        mean,
        std,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}
