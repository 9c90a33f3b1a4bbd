//! The time loop does not allocate: a counting global allocator watches `WaveSolver::step`
//! and the hand-back's `WaveSolver::start_from_on`.
//!
//! The count is process-wide, so the measurement runs in a child process that executes only
//! this module's `child` test (other tests would allocate concurrently in this one).

use crate::common::square;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use wavecp::mesh::CellShape;
use wavecp::solver::{BoundaryKind, WaveSolver};
use wavecp::sources::{PointSource, TimeFunction};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn child() {
    if std::env::var("WAVECP_ALLOC_CHILD").is_err() {
        return;
    }
    let mut p = square(CellShape::Tri, 200, 1.0, Some(BoundaryKind::Absorbing));
    p.boundaries[0].1 = BoundaryKind::Dirichlet(TimeFunction::Sine {
        amplitude: 0.1,
        frequency: 2.0,
    });
    // Another side takes values node by node every step (the coupling's path).
    p.boundaries[1].1 = BoundaryKind::DirichletNodal;
    let location = p.mesh.locate([0.4, 0.6]).unwrap();
    p.sources = vec![PointSource {
        location,
        wavelet: TimeFunction::Ricker {
            amplitude: 1.0,
            frequency: 5.0,
            delay: 0.2,
        },
    }];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let mut s = WaveSolver::new(&p).unwrap();
        s.set_dt(0.9 * s.dt_limit()).unwrap();
        let z = vec![0.0; p.mesh.num_nodes()];
        let before = ALLOCS.load(Ordering::SeqCst);
        std::hint::black_box(vec![1.0f64; 1000]);
        // Control: the counter does see allocations.
        println!(
            "ALLOCATIONS IN CONTROL: {}",
            ALLOCS.load(Ordering::SeqCst) - before
        );
        s.set_initial(&z, &z).unwrap();
        s.step(); // warm the pool
        let mut values = vec![0.0; s.nodal_dirichlet_rows().len()];
        assert!(!values.is_empty());
        let before = ALLOCS.load(Ordering::SeqCst);
        for n in 0..200 {
            for (k, v) in values.iter_mut().enumerate() {
                *v = 1e-3 * (n + k) as f64;
            }
            s.set_nodal_dirichlet(&values).unwrap();
            s.step();
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        println!("ALLOCATIONS IN 200 STEPS: {}", after - before);
        // A hand-back: the field and a velocity continued from at a later step.
        let n = s.num_dofs();
        let (u, v) = (s.u()[..n].to_vec(), vec![0.5; n]);
        let before = ALLOCS.load(Ordering::SeqCst);
        for k in 0..5 {
            s.start_from_on(&u, &v, 300 + k, &wavecp::comm::Serial)
                .unwrap();
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        println!("ALLOCATIONS IN 5 HAND-BACKS: {}", after - before);
    });
}

#[test]
fn time_loop_does_not_allocate() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "alloc::child", "--nocapture", "--test-threads=1"])
        .env("WAVECP_ALLOC_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |key: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("child printed no `{key}`: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        count("ALLOCATIONS IN CONTROL: ") > 0,
        "the counting allocator saw nothing"
    );
    // Sources, absorbing sides, a time-dependent Dirichlet side and a node-by-node one.
    let n = count("ALLOCATIONS IN 200 STEPS: ");
    assert_eq!(n, 0, "the time loop allocated {n} times in 200 steps");
    // A hybrid run hands the field back after every accepted window (10⁶ nodes: 8 MB).
    let n = count("ALLOCATIONS IN 5 HAND-BACKS: ");
    assert_eq!(n, 0, "the hand-back allocated {n} times in 5 calls");
}
