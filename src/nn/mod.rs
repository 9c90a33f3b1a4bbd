//! The neural-network engine (CPU reference path): tensors, convolutions (dense, pair-factorised,
//! CP), activations, pooling, up-sampling, models from TOML, losses, optimisers.

pub mod conv;
pub mod layers;
pub mod ops;
pub mod tensor;

pub use layers::{Layer, Param};
pub use tensor::{NnError, Tensor};
pub mod model;
pub mod train;

pub use model::{Model, ModelSpec};
