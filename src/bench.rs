//! `wavecp bench fe`: DoF-updates per second of the time loop, and the machine's memory bandwidth.

use crate::fem::WaveSpeed;
use crate::mesh::{rectangle, CellShape};
use crate::nn::Layer;
use crate::sim::Simulation;
use crate::solver::{BoundaryKind, OperatorKind, Problem, WaveSolver};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct FeCase {
    pub shape: CellShape,
    pub operator: OperatorKind,
    pub threads: usize,
    pub nodes: usize,
    pub steps_per_sample: usize,
    pub samples: usize,
    pub median_s_per_step: f64,
    pub dof_updates_per_s: f64,
    pub dof_updates_per_s_per_thread: f64,
    pub bytes_per_step: usize,
    pub effective_gb_per_s: f64,
}

/// The whole benchmark report.
#[derive(Debug, Clone, Serialize)]
pub struct FeReport {
    pub cases: Vec<FeCase>,
    /// STREAM-like triad `a = b + s c` bandwidth (GB/s) per thread count.
    pub triad_gb_per_s: Vec<(usize, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Triad bandwidth with `threads` threads on arrays of `n` doubles (24 bytes moved per entry).
pub fn triad_bandwidth(n: usize, threads: usize, samples: usize) -> f64 {
    crate::threads::with_threads(threads, || {
        let b = vec![1.0f64; n];
        let c = vec![2.0f64; n];
        let mut a = vec![0.0f64; n];
        let mut times = Vec::new();
        for _ in 0..samples {
            let t = Instant::now();
            a.par_chunks_mut(1 << 16).enumerate().for_each(|(k, ch)| {
                let base = k << 16;
                for (j, x) in ch.iter_mut().enumerate() {
                    *x = b[base + j] + 3.0 * c[base + j];
                }
            });
            times.push(t.elapsed().as_secs_f64());
            std::hint::black_box(&a);
        }
        24.0 * n as f64 / median(times) / 1e9
    })
    .unwrap_or(f64::NAN)
}

/// Measures the time loop for each shape × operator × thread count on a square of about `nodes` nodes.
pub fn run_fe(
    nodes: usize,
    threads: &[usize],
    operators: &[OperatorKind],
    steps: usize,
    samples: usize,
) -> Result<FeReport, crate::sim::DriverError> {
    let side = ((nodes as f64).sqrt().round() as usize)
        .saturating_sub(1)
        .max(2);
    let mut cases = Vec::new();
    for shape in [CellShape::Quad, CellShape::Tri] {
        let mesh = rectangle(shape, side, side, [0.0, 1.0], [0.0, 1.0])?;
        let n = mesh.num_nodes();
        let u0: Vec<f64> = mesh
            .coords
            .iter()
            .map(|p| (-((p[0] - 0.5).powi(2) + (p[1] - 0.5).powi(2)) / 0.01).exp())
            .collect();
        let v0 = vec![0.0; n];
        for &op in operators {
            let problem = Problem {
                speed: WaveSpeed::PerCell(vec![1.0; mesh.num_cells()]),
                boundaries: vec![
                    (1, BoundaryKind::Absorbing),
                    (2, BoundaryKind::Absorbing),
                    (3, BoundaryKind::Absorbing),
                    (4, BoundaryKind::Absorbing),
                ],
                sources: vec![],
                operator: op,
                mesh: mesh.clone(),
            };
            let mut solver = WaveSolver::new(&problem)?;
            solver.set_dt(0.9 * solver.dt_limit())?;
            let bytes_per_step = solver.bytes_per_step();
            solver.set_initial(&u0, &v0)?;
            let mut sim = Simulation::serial(solver)?;
            for &t in threads {
                let times = crate::threads::with_threads(
                    t,
                    || -> Result<Vec<f64>, crate::sim::DriverError> {
                        sim.solver_mut().set_initial(&u0, &v0)?;
                        sim.advance(steps.min(5));
                        let mut times = Vec::with_capacity(samples);
                        for _ in 0..samples {
                            let t0 = Instant::now();
                            sim.advance(steps);
                            times.push(t0.elapsed().as_secs_f64() / steps as f64);
                        }
                        sim.solver().check_finite()?;
                        Ok(times)
                    },
                )
                .map_err(crate::sim::DriverError::Threads)??;
                let med = median(times);
                let rate = n as f64 / med;
                cases.push(FeCase {
                    shape,
                    operator: op,
                    threads: t,
                    nodes: n,
                    steps_per_sample: steps,
                    samples,
                    median_s_per_step: med,
                    dof_updates_per_s: rate,
                    dof_updates_per_s_per_thread: rate / t as f64,
                    bytes_per_step,
                    effective_gb_per_s: bytes_per_step as f64 / med / 1e9,
                });
                tracing::info!("{shape:?} {op:?} {t} thread(s): {rate:.3e} DoF-updates/s");
            }
        }
    }
    let triad = threads
        .iter()
        .map(|&t| (t, triad_bandwidth(1 << 24, t, 9)))
        .collect();
    Ok(FeReport {
        cases,
        triad_gb_per_s: triad,
    })
}

/// Shapes of one convolution benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct ConvShape {
    pub kind: crate::nn::model::ConvKind,
    pub dims: usize,
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    /// `[t, y, x]` of the input (2-D: t = 1).
    pub size: [usize; 3],
    pub kernel: usize,
    pub rank: usize,
}

/// Timings of one convolution benchmark (medians over samples, milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct ConvResult {
    pub shape: ConvShape,
    pub threads: usize,
    pub trainable_params: usize,
    pub forward_ms: f64,
    pub backward_input_ms: f64,
    pub backward_weights_ms: f64,
    pub forward_backward_ms: f64,
    pub samples: usize,
}

/// Times forward, input-gradient and weight-gradient passes of one layer ("same" padding).
pub fn run_conv(
    shape: &ConvShape,
    threads: usize,
    samples: usize,
) -> Result<ConvResult, crate::nn::NnError> {
    use crate::nn::model::{Model, ModelSpec};
    use crate::nn::Tensor;
    let kind = match shape.kind {
        crate::nn::model::ConvKind::Dense => "dense",
        crate::nn::model::ConvKind::Pair => "pair",
        crate::nn::model::ConvKind::Cp => "cp",
    };
    let text = format!(
        "[model]\ndims = {}\nin_channels = {}\nkind = \"{kind}\"\nrank = {}\n[[layer]]\ntype = \"conv\"\nout = {}\nkernel = {}\npadding = {}\n",
        shape.dims,
        shape.cin,
        shape.rank,
        shape.cout,
        shape.kernel,
        shape.kernel / 2
    );
    let mut model = Model::new(ModelSpec::from_toml(&text)?)?;
    let t = if shape.dims == 2 { 1 } else { shape.size[0] };
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let x = Tensor::randn(
        &[shape.batch, shape.cin, t, shape.size[1], shape.size[2]],
        1.0,
        &mut rng,
    );
    crate::threads::with_threads(threads, || {
        let mut f = vec![];
        let mut fb = vec![];
        let y = model.forward(&x)?;
        let dy = Tensor::randn(&y.shape, 1.0, &mut rng);
        model.backward(&dy)?;
        for _ in 0..samples {
            // The caller's copies, made before the clock starts: the layer keeps its input, as
            // PyTorch's autograd keeps a reference to it.
            let (xi, dyi) = (x.clone(), dy.clone());
            let t0 = Instant::now();
            model.forward_owned(xi)?;
            let t1 = Instant::now();
            model.zero_grad();
            model.backward_owned(dyi)?;
            let t2 = Instant::now();
            f.push((t1 - t0).as_secs_f64() * 1e3);
            fb.push((t2 - t0).as_secs_f64() * 1e3);
        }
        let fm = median(f);
        let fbm = median(fb);
        // The two gradient passes alone (the training step runs them together, which for CP
        // shares one chain): where the backward time goes.
        model.forward(&x)?;
        let (mut bi, mut bw) = (vec![], vec![]);
        if let Some(crate::nn::model::Node::Layer(l)) = model.nodes_mut().first_mut() {
            for _ in 0..samples {
                let t0 = Instant::now();
                l.backward_input(&dy)?;
                let t1 = Instant::now();
                l.backward_weights(&dy)?;
                let t2 = Instant::now();
                bi.push((t1 - t0).as_secs_f64() * 1e3);
                bw.push((t2 - t1).as_secs_f64() * 1e3);
            }
        }
        Ok(ConvResult {
            shape: shape.clone(),
            threads,
            trainable_params: model.num_params(),
            forward_ms: fm,
            backward_input_ms: median(bi),
            backward_weights_ms: median(bw),
            forward_backward_ms: fbm,
            samples,
        })
    })
    .map_err(crate::nn::NnError::Model)?
}

/// One `wavecp bench train` measurement: a whole training step of a model file.
#[derive(Debug, Clone, Serialize)]
pub struct TrainStepResult {
    pub model: String,
    pub threads: usize,
    pub input_shape: Vec<usize>,
    pub trainable_params: usize,
    /// Medians over `steps` steps (after `warmup` untimed ones).
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub update_ms: f64,
    pub step_ms: f64,
    pub steps: usize,
}

/// Times the training step `forward → MSE → backward → AdamW (clipped)` of the model in `file`
/// on a random `[batch, in_channels, t, y, x]` input (`t` ignored for 2-D models) and a random
/// target of the output's shape, as `wavecp train` runs it.
pub fn run_train(
    file: &std::path::Path,
    batch: usize,
    size: [usize; 3],
    threads: usize,
    steps: usize,
    warmup: usize,
) -> Result<TrainStepResult, crate::nn::NnError> {
    use crate::nn::model::{Model, ModelSpec};
    use crate::nn::train::{loss, Adam, AdamConfig, LossKind};
    use crate::nn::{NnError, Tensor};
    let text = std::fs::read_to_string(file)
        .map_err(|e| NnError::Model(format!("{}: {e}", file.display())))?;
    let spec = ModelSpec::from_toml(&text)?;
    let (dims, cin) = (spec.model.dims, spec.model.in_channels);
    let mut model = Model::new(spec)?;
    let t = if dims == 2 { 1 } else { size[0] };
    let shape = vec![batch, cin, t, size[1], size[2]];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let x = Tensor::randn(&shape, 1.0, &mut rng);
    let mut adam = Adam::new(AdamConfig {
        clip_norm: 1.0,
        ..AdamConfig::new(1e-4)
    });
    crate::threads::with_threads(threads, || {
        let target = Tensor::randn(&model.forward(&x)?.shape, 1.0, &mut rng);
        let (mut f, mut b, mut u, mut s) = (vec![], vec![], vec![], vec![]);
        for i in 0..warmup + steps {
            let xi = x.clone();
            let t0 = Instant::now();
            let pred = model.forward_owned(xi)?;
            let (_, dy) = loss(LossKind::Mse, &pred, &target)?;
            let t1 = Instant::now();
            model.zero_grad();
            model.backward_owned(dy)?;
            let t2 = Instant::now();
            adam.update(&mut model.params_mut());
            let t3 = Instant::now();
            if i >= warmup {
                f.push((t1 - t0).as_secs_f64() * 1e3);
                b.push((t2 - t1).as_secs_f64() * 1e3);
                u.push((t3 - t2).as_secs_f64() * 1e3);
                s.push((t3 - t0).as_secs_f64() * 1e3);
            }
        }
        Ok(TrainStepResult {
            model: file.display().to_string(),
            threads,
            input_shape: shape.clone(),
            trainable_params: model.num_params(),
            forward_ms: median(f),
            backward_ms: median(b),
            update_ms: median(u),
            step_ms: median(s),
            steps,
        })
    })
    .map_err(NnError::Model)?
}

/// One rank count of `wavecp bench fe --ranks` (all figures are over the whole job).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FeRanksCase {
    pub ranks: usize,
    pub threads_per_rank: usize,
    pub nodes: usize,
    pub steps_per_sample: usize,
    pub samples: usize,
    /// Median over samples of the slowest rank's time per step.
    pub median_s_per_step: f64,
    pub dof_updates_per_s: f64,
    /// Of a step, the median time the slowest rank waited for neighbours after its overlapped
    /// work, and the rest (computation, packing, posting messages).
    pub exchange_wait_s_per_step: f64,
    pub compute_s_per_step: f64,
    /// Node values sent per step by all ranks together, and by the busiest rank.
    pub halo_values_per_step: usize,
    pub max_halo_values_per_rank: usize,
    pub bytes_exchanged_per_step: usize,
    /// Values per step an ideal partition of the square would send: `2 × interface nodes` of the
    /// best k × m grid of equal rectangles (each interface line is sent once in each direction).
    pub ideal_halo_values_per_step: usize,
    /// Owned nodes: most on one rank, and the mean (load balance).
    pub max_owned_nodes: usize,
    pub mean_owned_nodes: f64,
    /// Cells held by a rank beyond its own (the ghost layer), all ranks together.
    pub ghost_cells: usize,
}

/// Times the distributed time loop on a square of Q1 quads with about `nodes` nodes, partitioned
/// by METIS over the ranks of `comm`, one thread per rank. Collective.
pub fn run_fe_ranks(
    nodes: usize,
    steps: usize,
    samples: usize,
    comm: &dyn crate::comm::Comm,
) -> Result<FeRanksCase, crate::sim::DriverError> {
    use crate::partition::{
        build_parts, partition_cells, GlobalPieces, LocalPart, PartitionMethod,
    };
    let side = ((nodes as f64).sqrt().round() as usize)
        .saturating_sub(1)
        .max(2);
    let ranks = comm.size();
    let mut parts = None;
    let mut n_global = 0usize;
    if comm.rank() == 0 {
        let mesh = rectangle(CellShape::Quad, side, side, [0.0, 1.0], [0.0, 1.0])?;
        n_global = mesh.num_nodes();
        let u0: Vec<f64> = mesh
            .coords
            .iter()
            .map(|p| (-((p[0] - 0.5).powi(2) + (p[1] - 0.5).powi(2)) / 0.01).exp())
            .collect();
        let v0 = vec![0.0; n_global];
        let speed = WaveSpeed::PerCell(vec![1.0; mesh.num_cells()]);
        let cp = partition_cells(&mesh, ranks, PartitionMethod::Metis)?;
        let g = GlobalPieces {
            mesh: &mesh,
            speed: &speed,
            sources: &[],
            receivers: &[],
            u0: &u0,
            v0: &v0,
        };
        parts = Some(
            build_parts(&g, &cp, ranks)
                .iter()
                .map(crate::comm::to_bytes)
                .collect(),
        );
    }
    let bytes = comm.scatter_bytes(parts);
    let part: LocalPart = bincode::deserialize(&bytes)
        .map_err(|e| crate::sim::DriverError::OtherRank(e.to_string()))?;
    let owned_cells = part.owned_cells;
    let local_cells = part.mesh.num_cells();
    let problem = Problem {
        speed: part.speed,
        boundaries: (1..=4).map(|t| (t, BoundaryKind::Absorbing)).collect(),
        sources: vec![],
        operator: OperatorKind::Csr,
        mesh: part.mesh,
    };
    crate::threads::with_threads(1, || -> Result<FeRanksCase, crate::sim::DriverError> {
        let mut solver = WaveSolver::new_on(&problem, part.layout, comm)?;
        solver.set_dt(0.9 * solver.dt_limit())?;
        solver.set_initial_on(&part.u0, &part.v0, comm)?;
        let mut sim = Simulation::new(solver, comm)?;
        sim.advance(steps.min(5));
        let mut times = Vec::with_capacity(samples);
        let mut waits = Vec::with_capacity(samples);
        for _ in 0..samples {
            comm.barrier();
            let w0 = sim.solver().exchange_wait();
            let t0 = Instant::now();
            sim.advance(steps);
            let mut t = [
                t0.elapsed().as_secs_f64() / steps as f64,
                (sim.solver().exchange_wait() - w0).as_secs_f64() / steps as f64,
            ];
            comm.max_f64(&mut t);
            times.push(t[0]);
            waits.push(t[1]);
        }
        sim.solver().check_finite_on(comm)?;
        let l = sim.layout();
        let (sent, _) = l.halo_values();
        let mut sums = [
            sent as f64,
            l.n_owned as f64,
            (local_cells - owned_cells.min(local_cells)) as f64,
            n_global as f64,
        ];
        let mut maxes = [sent as f64, l.n_owned as f64];
        comm.sum_f64(&mut sums);
        comm.max_f64(&mut maxes);
        let med = median(times);
        let wait = median(waits);
        let n = sums[3] as usize;
        Ok(FeRanksCase {
            ranks,
            threads_per_rank: 1,
            nodes: n,
            steps_per_sample: steps,
            samples,
            median_s_per_step: med,
            dof_updates_per_s: n as f64 / med,
            exchange_wait_s_per_step: wait,
            compute_s_per_step: med - wait,
            halo_values_per_step: sums[0] as usize,
            max_halo_values_per_rank: maxes[0] as usize,
            bytes_exchanged_per_step: 8 * sums[0] as usize,
            ideal_halo_values_per_step: ideal_halo(side + 1, ranks),
            max_owned_nodes: maxes[1] as usize,
            mean_owned_nodes: sums[1] / ranks as f64,
            ghost_cells: sums[2] as usize,
        })
    })
    .map_err(crate::sim::DriverError::Threads)?
}

/// `2 × interface nodes` of the best split of an `s × s`-node square into `p` equal rectangles
/// (a k × m grid, k m = p): every interface line of `s` nodes is sent once each way.
pub fn ideal_halo(s: usize, p: usize) -> usize {
    (1..=p)
        .filter(|k| p.is_multiple_of(*k))
        .map(|k| 2 * ((k - 1) + (p / k - 1)) * s)
        .min()
        .unwrap_or(0)
}
