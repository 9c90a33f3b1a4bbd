//! The hybrid demo's job (`wavecp demo`): the pipeline on a small case, written out here so
//! that `wavecp demo` needs no file.

use crate::config::Config;
use std::path::Path;

/// The hybrid demo (`wavecp demo`): the indicator study's 15 × 15 unit square with absorbing
/// sides and an in-distribution Ricker source, 100 steps, the surrogate `model` (the shipped
/// `models/demo_cp.safetensors`: trained and calibrated on that square by
/// `scripts/make-demo-model`) with the FE probe; `overrides` as `--set` gives them.
pub fn demo_config(
    model: &Path,
    overrides: &[String],
) -> Result<Config, crate::config::ConfigError> {
    let text = format!(
        r#"[mesh.generate]
shape = "quad"
nx = 15
ny = 15
[material]
c = 1.0
[[boundary]]
tags = ["left", "right", "top", "bottom"]
kind = "absorbing"
[[source]]
position = [0.45, 0.55]
frequency = 2.0
amplitude = 1.0
delay = 0.2
[time]
end = 1.0
dt = 0.01
[[receiver]]
position = [0.3, 0.3]
name = "r0"
[[receiver]]
position = [0.7, 0.6]
name = "r1"
[output]
path = "wavecp_demo.vtkhdf"
every = 2
[coupling]
model = "{}"
tolerance = 0.05
indicator = "fe_probe"
velocity = "central4"
"#,
        model.display()
    );
    Config::from_toml(&text, "the hybrid demo", overrides)
}
