//! The neural-network engine (CPU reference path): tensors, convolutions (dense, pair-factorised,
//! CP), activations, pooling, up-sampling, models from TOML, losses, optimisers.

pub mod conv;
pub mod direct;
pub mod layers;
pub mod ops;
pub mod tensor;

pub use layers::{Layer, Param};
pub use tensor::{NnError, Tensor};
pub mod model;
pub mod train;

pub use model::{Model, ModelSpec};

/// Where the network computes (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when a device opens, else the CPU (saying why).
    Auto,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            other => Err(format!("unknown device `{other}` (auto, cpu, cuda)")),
        }
    }
}
