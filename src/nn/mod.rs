//! The neural-network engine (CPU reference path): tensors, convolutions (dense, pair-factorised,
//! CP), activations, pooling, up-sampling, models from TOML, losses, optimisers.

pub mod conv;
pub mod direct;
pub mod graph;
pub mod layers;
pub mod ops;
pub mod tensor;

pub use layers::{Layer, Param};
pub use tensor::{NnError, Tensor};
pub mod model;
pub mod train;

pub use model::{Model, ModelSpec};

/// Where the network computes (`--device`): `cpu`, `cuda` (device 0), `cuda:N` (device N, as
/// the driver numbers the devices it is shown: `CUDA_VISIBLE_DEVICES` applies) or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    /// CUDA device 0 when it opens, else the CPU (saying why).
    Auto,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::Auto),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!(
                    "unknown device `{other}` (auto, cpu, cuda, cuda:N)"
                )),
            },
        }
    }
}
