//! The trained surrogate as a [`Forecaster`]: a wavecp model file run on the CPU or the GPU
//! ([`crate::surrogate::engine::Runner`]), its frames normalised as in training.

use super::hybrid::Forecaster;
use super::transfer::ZoneTransfer;
use super::CouplingError;
use crate::nn::Device;
use crate::surrogate::condition::WindowCond;
use crate::surrogate::data::{normalise, WindowSpec};
use crate::surrogate::engine::Runner;
use crate::surrogate::modelfile::{self, Loaded, ModelMeta};
use crate::surrogate::SurrogateError;
use std::path::Path;

/// A model file's network, checked against the zone grid and frame spacing of a run.
pub struct NetworkForecaster {
    runner: Runner,
    meta: ModelMeta,
    ws: WindowSpec,
    mask: Vec<bool>,
    /// The zone `[x0, x1, y0, y1]` of the run's grid.
    zone: [f64; 4],
    /// A conditioned model's scenario parameters and the time of the next input's first frame.
    scenario: Option<Vec<f64>>,
    t0: f64,
}

fn mismatch(path: &Path, what: &str, model: String, run: String) -> CouplingError {
    CouplingError::Setup(format!(
        "{} was trained with {what} {model}; this run has {run}",
        path.display()
    ))
}

/// Equal to a relative `1e-9` (what a TOML round trip of the job's numbers keeps).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl NetworkForecaster {
    /// Loads `path` for a run whose frames lie on `transfer`'s grid, `frame_dt` apart; the
    /// model's grid size, zone (when its file records one) and frame spacing must match, else
    /// the error names both sides.
    pub fn open(
        path: &Path,
        device: Device,
        transfer: &ZoneTransfer,
        frame_dt: f64,
    ) -> Result<Self, CouplingError> {
        let l = modelfile::load(path).map_err(surrogate)?;
        Self::from_loaded(l, path, device, transfer, frame_dt)
    }

    /// [`NetworkForecaster::open`] of a model file already read (`path` names it in errors).
    pub fn from_loaded(
        l: Loaded,
        path: &Path,
        device: Device,
        transfer: &ZoneTransfer,
        frame_dt: f64,
    ) -> Result<Self, CouplingError> {
        let (meta, g) = (l.meta, *transfer.grid());
        if (meta.ny, meta.nx) != (g.ny, g.nx) {
            return Err(mismatch(
                path,
                "a grid of",
                format!("{} x {} points (ny x nx)", meta.ny, meta.nx),
                format!("{} x {}", g.ny, g.nx),
            ));
        }
        if let Some(z) = meta.zone {
            let run = [g.x[0], g.x[1], g.y[0], g.y[1]];
            if !z.iter().zip(&run).all(|(a, b)| close(*a, *b)) {
                return Err(mismatch(
                    path,
                    "the zone x, y =",
                    format!("{z:?}"),
                    format!("{run:?}"),
                ));
            }
        }
        if !close(meta.frame_dt, frame_dt) {
            return Err(mismatch(
                path,
                "frames",
                format!("{:e} apart", meta.frame_dt),
                format!("{frame_dt:e} (stride x dt)"),
            ));
        }
        let ws = WindowSpec {
            t_in: meta.t_in,
            t_out: meta.t_out,
            dims: l.model.spec.model.dims,
        };
        Ok(NetworkForecaster {
            runner: Runner::asked_by(l.model, device, "coupling.device =").map_err(surrogate)?,
            meta,
            ws,
            mask: transfer.mask(),
            zone: [g.x[0], g.x[1], g.y[0], g.y[1]],
            scenario: None,
            t0: 0.0,
        })
    }

    /// The scenario parameters a conditioned model reads (in
    /// [`crate::surrogate::condition::PARAMS`] order); refused when it reads more.
    pub fn set_scenario(&mut self, params: Vec<f64>) -> Result<(), CouplingError> {
        if let Some(c) = &self.meta.conditioning {
            if params.len() < c.nparams() || params.iter().any(|v| !v.is_finite()) {
                return Err(CouplingError::Setup(format!(
                    "the model reads {} scenario parameters ({}); the run gives {params:?}",
                    c.nparams(),
                    c.channels[3..].join(", ")
                )));
            }
        }
        self.scenario = Some(params);
        Ok(())
    }

    /// Whether the model reads scenario channels.
    pub fn conditioned(&self) -> bool {
        self.meta.conditioning.is_some()
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Where the network runs: `cpu`, or the GPU's name.
    pub fn device(&self) -> String {
        self.runner.device()
    }
}

fn surrogate(e: SurrogateError) -> CouplingError {
    CouplingError::Setup(e.to_string())
}

impl Forecaster for NetworkForecaster {
    fn t_in(&self) -> usize {
        self.meta.t_in
    }

    fn set_input_time(&mut self, t0: f64) {
        self.t0 = t0;
    }

    fn t_out(&self) -> usize {
        self.meta.t_out
    }

    fn forecast(&mut self, past: &[&[f64]]) -> Result<Vec<Vec<f64>>, CouplingError> {
        let m = &self.meta;
        let n = m.ny * m.nx;
        if past.len() != m.t_in || past.iter().any(|f| f.len() != n) {
            return Err(CouplingError::Setup(format!(
                "the network reads {} frames of {n} values; it was given {}",
                m.t_in,
                past.len()
            )));
        }
        let mut data: Vec<f32> = past
            .iter()
            .flat_map(|f| f.iter().map(|&v| normalise(v as f32, m.mean, m.std)))
            .collect();
        let mut shape = self.ws.shape(1, m.t_in, m.ny, m.nx);
        if let Some(c) = &m.conditioning {
            let Some(params) = &self.scenario else {
                return Err(CouplingError::Setup(
                    "the model reads the scenario's parameters and the run set none".into(),
                ));
            };
            let w = WindowCond {
                zone: self.zone,
                ny: m.ny,
                nx: m.nx,
                t0: self.t0,
                frame_dt: m.frame_dt,
                t_in: m.t_in,
                params,
                prior: None,
            };
            c.append(&w, &mut data);
            shape[1] += c.len();
        }
        let x = crate::nn::Tensor::from_vec(&shape, data)
            .map_err(|e| CouplingError::Setup(e.to_string()))?;
        let y = self.runner.forward(x).map_err(surrogate)?;
        let want = self.ws.shape(1, m.t_out, m.ny, m.nx);
        if y.shape != want {
            return Err(CouplingError::Setup(format!(
                "the network maps a window to {:?}; its metadata promises {want:?}",
                y.shape
            )));
        }
        let frames: Vec<Vec<f64>> = y
            .data
            .chunks(n)
            .map(|f| {
                f.iter()
                    .zip(&self.mask)
                    .map(|(&v, &inside)| {
                        if inside {
                            v as f64 * m.std + m.mean
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        if frames.iter().flatten().any(|v| !v.is_finite()) {
            return Err(CouplingError::Setup(
                "the network forecast a value that is not a finite number".into(),
            ));
        }
        Ok(frames)
    }
}
