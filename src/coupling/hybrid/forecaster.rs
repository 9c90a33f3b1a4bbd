//! What forecasts a hybrid run's frames ([`Forecaster`]: the network, or in tests an oracle),
//! and the forecaster that runs on rank 0 alone and broadcasts its frames ([`OnRankZero`]).

use crate::comm::Comm;
use crate::coupling::CouplingError;

/// What forecasts frames: the network, or in tests an oracle.
pub trait Forecaster {
    /// Frames a forecast reads.
    fn t_in(&self) -> usize;
    /// Frames a forecast gives.
    fn t_out(&self) -> usize;
    /// The next `t_out` frames on the zone grid from the last `t_in` (oldest first).
    fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError>;
    /// The time of the first frame of the next forecast's input (read by a model conditioned
    /// on time, and by an oracle; ignored by default).
    fn set_input_time(&mut self, _t0: f64) {}
}

impl<F: Forecaster + ?Sized> Forecaster for &mut F {
    fn t_in(&self) -> usize {
        (**self).t_in()
    }
    fn t_out(&self) -> usize {
        (**self).t_out()
    }
    fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        (**self).forecast(past)
    }
    fn set_input_time(&mut self, t0: f64) {
        (**self).set_input_time(t0)
    }
}

/// A forecaster on rank 0 only (one copy of the model; every rank holds the frames), its
/// frames broadcast to the other ranks, which hold `None`: every rank gets rank 0's bits, and
/// rank 0's error. Collective.
pub struct OnRankZero<'c, F> {
    inner: Option<F>,
    t_in: usize,
    t_out: usize,
    comm: &'c dyn Comm,
}

impl<'c, F: Forecaster> OnRankZero<'c, F> {
    /// `inner` on rank 0 (`None` elsewhere); `t_in` and `t_out` as rank 0's forecaster has them.
    pub fn new(inner: Option<F>, (t_in, t_out): (usize, usize), comm: &'c dyn Comm) -> Self {
        OnRankZero {
            inner,
            t_in,
            t_out,
            comm,
        }
    }
}

impl<F: Forecaster> Forecaster for OnRankZero<'_, F> {
    fn t_in(&self) -> usize {
        self.t_in
    }

    fn t_out(&self) -> usize {
        self.t_out
    }

    fn set_input_time(&mut self, t0: f64) {
        if let Some(f) = self.inner.as_mut() {
            f.set_input_time(t0);
        }
    }

    fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        let mut bytes = Vec::new();
        if let Some(f) = self.inner.as_mut() {
            let r = f.forecast(past).map_err(|e| e.to_string());
            bytes = crate::comm::to_bytes(&r);
        }
        self.comm.broadcast_bytes(&mut bytes);
        let r: Result<Vec<Vec<f64>>, String> = bincode::deserialize(&bytes)
            .map_err(|e| CouplingError::Setup(format!("forecast from rank 0: {e}")))?;
        r.map_err(CouplingError::Setup)
    }
}
