//! Communication between ranks behind one trait: a serial no-op and MPI (rsmpi), plus the
//! reproducible global sum every rank count agrees on to the last bit.
//!
//! Solver code sees only [`Comm`]; it never names an MPI type. [`world`] picks MPI when the
//! process was started by a launcher (`mpirun`, `srun`) and the serial one otherwise, so a run
//! without `mpirun` needs no MPI daemon at all.

/// The collective and neighbour operations the solver and drivers use. Every method is
/// collective over all ranks unless it says otherwise.
pub trait Comm: Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn barrier(&self);
    /// Element-wise sum over ranks, in place.
    fn sum_f64(&self, v: &mut [f64]);
    /// Element-wise maximum over ranks, in place (NaN wins, so a NaN anywhere is seen everywhere).
    fn max_f64(&self, v: &mut [f64]);
    /// Element-wise sum over ranks, in place.
    fn sum_u64(&self, v: &mut [u64]);
    /// Rank 0's `bytes` on every rank.
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>);
    /// Rank 0 passes one message per rank; every rank gets its own.
    fn scatter_bytes(&self, parts: Option<Vec<Vec<u8>>>) -> Vec<u8>;
    /// Every rank's slice concatenated in rank order, on rank 0 (`None` elsewhere).
    fn gather_f64(&self, local: &[f64]) -> Option<Vec<f64>>;
    /// As [`Comm::gather_f64`], for indices.
    fn gather_u64(&self, local: &[u64]) -> Option<Vec<u64>>;
    /// Neighbour exchange: sends `send[k]` to rank `neighbours[k]` and receives `recv[k]` (whose
    /// length says how many values to expect) from it, non-blocking, running `during` while the
    /// messages are in flight. Only the ranks that share an interface take part.
    fn exchange(
        &self,
        neighbours: &[u32],
        send: &[Vec<f64>],
        recv: &mut [Vec<f64>],
        during: &mut dyn FnMut(),
    );
    /// Ends every rank of the job (MPI_Abort): for an error on one rank that the others would
    /// otherwise wait for in a collective for ever.
    fn abort(&self, code: i32) -> !;
    /// Human-readable name of the transport.
    fn name(&self) -> &'static str;
}

/// One rank, no communication.
#[derive(Debug, Default, Clone, Copy)]
pub struct Serial;

impl Comm for Serial {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn barrier(&self) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn max_f64(&self, _: &mut [f64]) {}
    fn sum_u64(&self, _: &mut [u64]) {}
    fn broadcast_bytes(&self, _: &mut Vec<u8>) {}
    fn scatter_bytes(&self, parts: Option<Vec<Vec<u8>>>) -> Vec<u8> {
        parts.and_then(|p| p.into_iter().next()).unwrap_or_default()
    }
    fn gather_f64(&self, local: &[f64]) -> Option<Vec<f64>> {
        Some(local.to_vec())
    }
    fn gather_u64(&self, local: &[u64]) -> Option<Vec<u64>> {
        Some(local.to_vec())
    }
    fn exchange(&self, _: &[u32], _: &[Vec<f64>], _: &mut [Vec<f64>], during: &mut dyn FnMut()) {
        during();
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn name(&self) -> &'static str {
        "serial"
    }
}

/// Whether a launcher started this process as one rank of several (Open MPI, MPICH/PMI, Slurm).
pub fn launched_by_mpi() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some())
        || std::env::var("SLURM_NTASKS").is_ok_and(|n| n != "1")
            && std::env::var_os("SLURM_PROCID").is_some()
}

/// The communicator of this process: MPI's world when started by a launcher and built with the
/// `mpi` feature, else [`Serial`].
pub fn world() -> Box<dyn Comm> {
    #[cfg(feature = "mpi")]
    if launched_by_mpi() {
        if let Some(c) = mpi_comm::MpiComm::init() {
            return Box::new(c);
        }
        tracing::warn!("started by an MPI launcher, but MPI_Init failed: running as one rank");
    }
    #[cfg(not(feature = "mpi"))]
    if launched_by_mpi() {
        tracing::warn!(
            "started by an MPI launcher, but this wavecp was built without the `mpi` feature: \
             every process runs the whole problem alone"
        );
    }
    Box::new(Serial)
}

/// A communicator over the ranks of the host program's communicator `fortran` (its Fortran
/// handle: `MPI_Comm_c2f(comm)` in C, the integer itself in Fortran, `comm.py2f()` in mpi4py).
/// wavecp talks on a private duplicate and never initialises or finalises MPI itself.
pub fn adopt(fortran: i32) -> Result<Box<dyn Comm>, String> {
    #[cfg(feature = "mpi")]
    {
        mpi_comm::MpiComm::adopt(fortran).map(|c| Box::new(c) as Box<dyn Comm>)
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = fortran;
        Err("this wavecp was built without the `mpi` feature: only serial simulations".into())
    }
}

/// Bytes of a message between ranks. Encoding plain in-memory data (numbers, vectors, strings,
/// maps with string keys) into a `Vec` cannot fail with bincode, so this does not return an error.
pub fn to_bytes<T: serde::Serialize + ?Sized>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("bincode encodes plain in-memory data into a Vec")
}

/// Sum of `terms` over all ranks that is the same to the last bit whatever the number of ranks
/// or threads and whatever order the terms come in.
///
/// Each term is split into three pieces on fixed power-of-two grids chosen from the global
/// maximum `m` and term count `N` (pre-rounding, as in Demmel and Nguyen's reproducible BLAS).
/// On a grid of spacing `u = 2^(⌈log2 m⌉ + ⌈log2 N⌉ − 52)` every partial sum is an integer
/// multiple of `u` below `2^53 u`, so floating-point addition is exact there and associative.
/// Three grids give about `3 (52 − log2 N)` bits, more than the 53 of an `f64` for N < 10⁹.
pub fn repro_sum(comm: &dyn Comm, terms: &[f64]) -> f64 {
    use rayon::prelude::*;
    const CH: usize = 1 << 14;
    let mut m = [terms
        .par_chunks(CH)
        .map(|c| {
            c.iter().fold(0.0f64, |a, t| {
                if t.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.max(t.abs())
                }
            })
        })
        .reduce(
            || 0.0,
            |a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            },
        )];
    comm.max_f64(&mut m);
    let mut n = [terms.len() as u64];
    comm.sum_u64(&mut n);
    let m = m[0];
    if m == 0.0 || !m.is_finite() {
        return if m == 0.0 { 0.0 } else { m };
    }
    let log_n = 64 - n[0].leading_zeros() as i32; // ⌈log2(N + 1)⌉ ≥ ⌈log2 N⌉
    let mut e = m.log2().ceil() as i32;
    if 2f64.powi(e) < m {
        e += 1;
    }
    const FOLDS: usize = 3;
    // Grid spacings (powers of two) and their inverses; 0 ends the folds early.
    let mut grid = [(0.0f64, 0.0f64); FOLDS];
    for g in &mut grid {
        let ue = e + log_n - 52;
        if ue < -1000 {
            break; // below this the residuals are lost in subnormals anyway
        }
        *g = (2f64.powi(ue), 2f64.powi(-ue));
        e = ue - 1; // the residual of this fold is at most u / 2
    }
    // Each partial sum is exact, so the chunking (and the thread count) cannot change it.
    let mut sums = terms
        .par_chunks(CH)
        .map(|c| {
            let mut s = [0.0f64; FOLDS];
            for &t in c {
                let mut r = t;
                for k in 0..FOLDS {
                    let (u, inv) = grid[k];
                    if u == 0.0 {
                        break;
                    }
                    // Scaling by a power of two is exact; ties-to-even is one instruction.
                    let q = (r * inv).round_ties_even() * u;
                    s[k] += q;
                    r -= q;
                }
            }
            s
        })
        .reduce(
            || [0.0; FOLDS],
            |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]],
        );
    comm.sum_f64(&mut sums);
    sums[0] + (sums[1] + sums[2])
}

#[cfg(feature = "mpi")]
mod mpi_comm {
    use super::Comm;
    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::raw::FromRaw;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use mpi::Count;

    const TAG_SCATTER: i32 = 11;
    const TAG_HALO: i32 = 12;

    pub struct MpiComm {
        // Declared first, so it is dropped first: a duplicate of the host's communicator is
        // freed before a universe would finalise MPI.
        world: SimpleCommunicator,
        // Finalises MPI when dropped, so it lives as long as the communicator; `None` when the
        // host program initialised MPI and will finalise it.
        _universe: Option<mpi::environment::Universe>,
    }

    impl MpiComm {
        pub fn init() -> Option<Self> {
            // Serialized: the driver may run on a rayon pool thread, one thread at a time.
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)?;
            let world = universe.world();
            Some(MpiComm {
                world,
                _universe: Some(universe),
            })
        }

        /// A private duplicate of the host's communicator `fortran` (its Fortran handle, as
        /// `MPI_Comm_c2f` gives it), so wavecp's messages never match the host's. MPI must be
        /// initialised by the host, who also finalises it (after dropping this).
        pub fn adopt(fortran: i32) -> Result<Self, String> {
            if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
                return Err("MPI is not initialised: call MPI_Init before creating a \
                            simulation on a communicator (or use the serial create)"
                    .into());
            }
            let mut dup = std::mem::MaybeUninit::uninit();
            // SAFETY: MPI is initialised (checked above); `RSMPI_Comm_f2c` converts any
            // integer (an invalid one yields MPI_COMM_NULL or an error through MPI's handler),
            // and `MPI_Comm_dup` writes a new handle into `dup` when it returns MPI_SUCCESS.
            let rc = unsafe {
                let c = mpi::ffi::RSMPI_Comm_f2c(fortran);
                if c == mpi::ffi::RSMPI_COMM_NULL {
                    return Err(format!("Fortran communicator handle {fortran} is MPI_COMM_NULL or not a communicator"));
                }
                mpi::ffi::MPI_Comm_dup(c, dup.as_mut_ptr())
            };
            if rc != mpi::ffi::MPI_SUCCESS as i32 {
                return Err(format!(
                    "MPI_Comm_dup of the host's communicator (Fortran handle {fortran}) failed with code {rc}"
                ));
            }
            // SAFETY: `dup` was written by a successful MPI_Comm_dup: a live intra-communicator
            // that only this value owns (it frees it when dropped).
            let world = unsafe { SimpleCommunicator::from_raw(dup.assume_init()) };
            Ok(MpiComm {
                world,
                _universe: None,
            })
        }

        fn gather<T: Equivalence + Default + Clone>(&self, local: &[T]) -> Option<Vec<T>> {
            let root = self.world.process_at_rank(0);
            let mut counts = vec![0 as Count; self.size()];
            let mine = local.len() as Count;
            if self.rank() == 0 {
                root.gather_into_root(&mine, &mut counts[..]);
                let displs: Vec<Count> = counts
                    .iter()
                    .scan(0, |acc, &c| {
                        let d = *acc;
                        *acc += c;
                        Some(d)
                    })
                    .collect();
                let total: Count = counts.iter().sum();
                let mut buf = vec![T::default(); total as usize];
                {
                    let mut part = PartitionMut::new(&mut buf[..], counts, &displs[..]);
                    root.gather_varcount_into_root(local, &mut part);
                }
                Some(buf)
            } else {
                root.gather_into(&mine);
                root.gather_varcount_into(local);
                None
            }
        }
    }

    // SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED and wavecp calls it from one thread
    // at a time (the thread running the driver; rayon workers never touch the communicator),
    // which is what that level allows; the handle itself is a plain integer/pointer to MPI's
    // process-wide state.
    unsafe impl Sync for MpiComm {}

    impl Comm for MpiComm {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn sum_f64(&self, v: &mut [f64]) {
            let local = v.to_vec();
            self.world
                .all_reduce_into(&local[..], v, SystemOperation::sum());
        }
        fn max_f64(&self, v: &mut [f64]) {
            // MPI_MAX's treatment of NaN is unspecified: carry a NaN flag alongside.
            let mut local: Vec<f64> = v
                .iter()
                .map(|x| if x.is_nan() { 0.0 } else { *x })
                .collect();
            local.push(if v.iter().any(|x| x.is_nan()) {
                1.0
            } else {
                0.0
            });
            let mut out = vec![0.0; local.len()];
            self.world
                .all_reduce_into(&local[..], &mut out[..], SystemOperation::max());
            let nan = out.pop() == Some(1.0);
            for (x, o) in v.iter_mut().zip(out) {
                *x = if nan { f64::NAN } else { o };
            }
        }
        fn sum_u64(&self, v: &mut [u64]) {
            let local = v.to_vec();
            self.world
                .all_reduce_into(&local[..], v, SystemOperation::sum());
        }
        fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
            let root = self.world.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            root.broadcast_into(&mut bytes[..]);
        }
        fn scatter_bytes(&self, parts: Option<Vec<Vec<u8>>>) -> Vec<u8> {
            if self.rank() == 0 {
                let mut parts = parts.expect("rank 0 passes the parts");
                for (r, p) in parts.iter().enumerate().skip(1) {
                    self.world
                        .process_at_rank(r as i32)
                        .send_with_tag(&p[..], TAG_SCATTER);
                }
                std::mem::take(&mut parts[0])
            } else {
                self.world
                    .process_at_rank(0)
                    .receive_vec_with_tag::<u8>(TAG_SCATTER)
                    .0
            }
        }
        fn gather_f64(&self, local: &[f64]) -> Option<Vec<f64>> {
            self.gather(local)
        }
        fn gather_u64(&self, local: &[u64]) -> Option<Vec<u64>> {
            self.gather(local)
        }
        fn exchange(
            &self,
            neighbours: &[u32],
            send: &[Vec<f64>],
            recv: &mut [Vec<f64>],
            during: &mut dyn FnMut(),
        ) {
            mpi::request::scope(|scope| {
                let mut reqs = Vec::with_capacity(2 * neighbours.len());
                for (nb, buf) in neighbours.iter().zip(recv.iter_mut()) {
                    reqs.push(
                        self.world
                            .process_at_rank(*nb as i32)
                            .immediate_receive_into_with_tag(scope, &mut buf[..], TAG_HALO),
                    );
                }
                let mut sends = Vec::with_capacity(neighbours.len());
                for (nb, buf) in neighbours.iter().zip(send) {
                    sends.push(
                        self.world
                            .process_at_rank(*nb as i32)
                            .immediate_send_with_tag(scope, &buf[..], TAG_HALO),
                    );
                }
                during();
                for r in reqs {
                    r.wait();
                }
                for s in sends {
                    s.wait();
                }
            });
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
        fn name(&self) -> &'static str {
            "mpi"
        }
    }
}
