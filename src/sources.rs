//! Time functions (Ricker wavelet, sine, constant), point sources and Gaussian initial fields.

use crate::mesh::PointLocation;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// A scalar function of time used by sources and time-dependent Dirichlet values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TimeFunction {
    Constant(f64),
    /// `amplitude · sin(2π f t)`
    Sine {
        amplitude: f64,
        frequency: f64,
    },
    /// `amplitude · (1 − 2π²f²τ²) · exp(−π²f²τ²)`, `τ = t − delay`
    Ricker {
        amplitude: f64,
        frequency: f64,
        delay: f64,
    },
}

impl TimeFunction {
    #[inline]
    pub fn eval(&self, t: f64) -> f64 {
        match *self {
            TimeFunction::Constant(v) => v,
            TimeFunction::Sine {
                amplitude,
                frequency,
            } => amplitude * (2.0 * PI * frequency * t).sin(),
            TimeFunction::Ricker {
                amplitude,
                frequency,
                delay,
            } => {
                let a = (PI * frequency * (t - delay)).powi(2);
                amplitude * (1.0 - 2.0 * a) * (-a).exp()
            }
        }
    }
}

/// The time of a Ricker wavelet's peak when a job gives none: 1.2 periods of its frequency,
/// so that at t = 0 the wavelet is `2·10⁻⁵` of its peak (`(1 − 2a)·e^−a`, `a = (1.2π)²`) and a
/// run from rest does not start with a jump.
pub fn ricker_default_delay(frequency: f64) -> f64 {
    1.2 / frequency
}

/// A point source `f(x, t) = w(t) δ(x − x_s)`, distributed to the nodes of the cell holding `x_s`
/// with the shape-function values there (the exact load vector of a point load).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct PointSource {
    pub location: PointLocation,
    pub wavelet: TimeFunction,
}

/// A Gaussian bump `amplitude · exp(−|x − center|² / width²)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gaussian {
    pub center: [f64; 2],
    pub width: f64,
    pub amplitude: f64,
}

impl Gaussian {
    pub fn eval(&self, p: [f64; 2]) -> f64 {
        let r2 = (p[0] - self.center[0]).powi(2) + (p[1] - self.center[1]).powi(2);
        self.amplitude * (-r2 / (self.width * self.width)).exp()
    }
}
