//! The steppable simulation: state and restore continue bit for bit (through the coupling's
//! `TimeStepper`), the observers of `Simulation::run` are called after every step in order and
//! can stop it, and a node-by-node Dirichlet side can be driven between `advance` calls.

use crate::common::{pulse_solver, square};
use wavecp::coupling::TimeStepper;
use wavecp::mesh::CellShape;
use wavecp::sim::{Control, DriverError, Observer, Simulation};
use wavecp::solver::BoundaryKind;

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Advances `a` steps, saves, advances `b`; restores and advances `b` again: the same bits,
/// time and step. Generic over the trait, as a coupling scheduler would use it.
fn replay<T: TimeStepper>(s: &mut T, a: usize, b: usize, field: impl Fn(&T) -> Vec<f64>) {
    s.advance(a).unwrap();
    let saved = s.state();
    s.advance(b).unwrap();
    let (first, t1, n1) = (field(s), s.time(), s.steps_done());
    s.restore(&saved).unwrap();
    assert_eq!(s.steps_done(), a);
    s.advance(b).unwrap();
    assert_eq!(bits(&field(s)), bits(&first));
    assert_eq!((s.time().to_bits(), s.steps_done()), (t1.to_bits(), n1));
}

#[test]
fn a_restored_state_continues_bit_for_bit() {
    for shape in [CellShape::Tri, CellShape::Quad] {
        let p = square(shape, 24, 1.0, Some(BoundaryKind::Absorbing));
        let mut sim = Simulation::serial(pulse_solver(&p, 0.9, [0.4, 0.5], 0.1)).unwrap();
        let e0 = sim.initial_energy();
        assert!(e0 > 0.0);
        replay(&mut sim, 17, 40, |s| s.u().to_vec());
        // The state carries both levels: a restore with u_prev changed does not continue the
        // same way (so both are needed, and restore uses them).
        let mut st = sim.state();
        st.u_prev[100] += 1e-3;
        let before = sim.u().to_vec();
        sim.restore(&st).unwrap();
        sim.advance(1);
        assert_ne!(bits(sim.u()), bits(&before));
        assert_eq!(sim.initial_energy().to_bits(), e0.to_bits());
    }
}

/// Counts its calls and stops the run at `stop_at`.
struct Stopper {
    stop_at: usize,
    seen: Vec<usize>,
}

impl Observer<Vec<&'static str>> for Stopper {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        log: &mut Vec<&'static str>,
        ctl: &mut Control,
    ) -> Result<(), DriverError> {
        self.seen.push(sim.steps_done());
        log.push("stopper");
        ctl.stop = sim.steps_done() == self.stop_at;
        Ok(())
    }
}

struct Tail;

impl Observer<Vec<&'static str>> for Tail {
    fn after_step(
        &mut self,
        _: &Simulation<'_>,
        log: &mut Vec<&'static str>,
        _: &mut Control,
    ) -> Result<(), DriverError> {
        log.push("tail");
        Ok(())
    }
}

#[test]
fn observers_run_after_every_step_in_order_and_can_stop_the_run() {
    let p = square(CellShape::Quad, 10, 1.0, None);
    let mut sim = Simulation::serial(pulse_solver(&p, 0.9, [0.5, 0.5], 0.2)).unwrap();
    let mut plain = Simulation::serial(pulse_solver(&p, 0.9, [0.5, 0.5], 0.2)).unwrap();
    let mut stopper = Stopper {
        stop_at: 7,
        seen: vec![],
    };
    let mut log = vec![];
    let early = sim
        .run(20, &mut log, &mut [&mut stopper, &mut Tail])
        .unwrap();
    assert!(early);
    assert_eq!(sim.steps_done(), 7);
    assert_eq!(stopper.seen, (1..=7).collect::<Vec<_>>());
    assert_eq!(log.len(), 14);
    assert!(log.chunks(2).all(|c| c == ["stopper", "tail"]));
    // Observers only look: the field is the one of a plain `advance`.
    plain.advance(7);
    assert_eq!(bits(sim.u()), bits(plain.u()));
    // Continued to the end without a stop.
    stopper.stop_at = 0;
    assert!(!sim.run(20, &mut log, &mut [&mut stopper]).unwrap());
    assert_eq!(sim.steps_done(), 20);
    assert_eq!(sim.steps_run(), 20);
}

/// An observer's error ends the run with that error.
#[test]
fn an_observer_error_ends_the_run() {
    struct Fails;
    impl Observer for Fails {
        fn after_step(
            &mut self,
            sim: &Simulation<'_>,
            _: &mut (),
            _: &mut Control,
        ) -> Result<(), DriverError> {
            if sim.steps_done() == 3 {
                return Err(DriverError::Threads("observer failed".into()));
            }
            Ok(())
        }
    }
    let p = square(CellShape::Tri, 8, 1.0, None);
    let mut sim = Simulation::serial(pulse_solver(&p, 0.9, [0.5, 0.5], 0.2)).unwrap();
    let e = sim.run(10, &mut (), &mut [&mut Fails]).unwrap_err();
    assert!(e.to_string().contains("observer failed"), "{e}");
    assert_eq!(sim.steps_done(), 3);
}
