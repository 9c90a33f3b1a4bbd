//! `wavecp solve` with a `[coupling]` section: the job's run, its time loop handed to
//! [`Hybrid`] with the trained network as forecaster. One rank for now.

use super::handback::VelocityEstimate;
use super::hybrid::{
    EnergyBalance, EnergyChange, FeProbe, Forecaster, Hybrid, HybridConfig, HybridSummary,
    Indicator, Residual,
};
use super::network::NetworkForecaster;
use super::transfer::{ZoneGrid, ZoneTransfer};
use super::CouplingError;
use crate::comm::Comm;
use crate::config::{Config, CouplingConfig};
use crate::sim::{AfterStep, Control, DriverError, Observer, RunOptions, RunSummary, Simulation};
use std::path::Path;

fn err(e: impl std::fmt::Display) -> DriverError {
    DriverError::Invalid {
        key: "coupling".into(),
        msg: e.to_string(),
    }
}

/// A coupling error as the job's: a simulation's error as it is, the others under the
/// `coupling` key (without repeating it).
fn from_coupling(e: CouplingError) -> DriverError {
    match e {
        CouplingError::Simulation(d) => d,
        CouplingError::Setup(m) => err(m),
        other => err(other),
    }
}

/// The named indicator.
fn indicator(name: &str) -> Result<Box<dyn Indicator>, DriverError> {
    Ok(match name {
        "fe_probe" => Box::new(FeProbe),
        "energy_balance" => Box::new(EnergyBalance),
        "energy_change" => Box::new(EnergyChange),
        "residual" => Box::new(Residual),
        other => return Err(err(format!("no indicator `{other}`"))),
    })
}

/// The run's observers as one observer of the hybrid loop.
struct Observed<'a, 'b>(&'a mut AfterStep<'b>);

impl Observer for Observed<'_, '_> {
    fn after_step(
        &mut self,
        sim: &Simulation<'_>,
        _: &mut (),
        ctl: &mut Control,
    ) -> Result<(), DriverError> {
        ctl.stop |= (self.0)(sim)?;
        Ok(())
    }
}

/// The hybrid loop of `c` over `sim` to step `last`.
fn drive(
    c: &CouplingConfig,
    (cfg, base): (&Config, &Path),
    (sim, last): (&mut Simulation<'_>, usize),
    after: &mut AfterStep<'_>,
) -> Result<(HybridSummary, bool), DriverError> {
    if sim.comm().size() != 1 {
        return Err(err(
            "hybrid stepping runs on one rank for now; run without mpirun",
        ));
    }
    let model = base.join(&c.model);
    let loaded = crate::surrogate::modelfile::load(&model).map_err(err)?;
    let meta = loaded.meta.clone();
    let zone = meta.zone.ok_or_else(|| {
        err(format!(
            "{} does not record the zone it was trained on (trained before zones were kept): retrain it",
            model.display()
        ))
    })?;
    let grid = ZoneGrid {
        x: [zone[0], zone[1]],
        y: [zone[2], zone[3]],
        nx: meta.nx,
        ny: meta.ny,
    };
    // One rank: the simulation's numbering is the mesh's.
    let mesh = crate::sim::load_mesh(&cfg.mesh, base)?;
    let transfer = ZoneTransfer::new(&mesh, grid).map_err(err)?;
    let ratio = meta.frame_dt / sim.dt();
    let stride = ratio.round() as usize;
    if stride == 0 || (ratio - stride as f64).abs() > 1e-6 * ratio {
        return Err(err(format!(
            "{} was trained on frames {:e} apart, which is {ratio} steps of this run's dt = {:e}, not a whole number: set time.dt to {:e} / k",
            model.display(),
            meta.frame_dt,
            sim.dt(),
            meta.frame_dt
        )));
    }
    let frame_dt = stride as f64 * sim.dt();
    let device = c.device.parse().map_err(err)?;
    let net = NetworkForecaster::from_loaded(loaded, &model, device, &transfer, frame_dt)
        .map_err(from_coupling)?;
    let velocity = match c.velocity.as_str() {
        "two_frames" => VelocityEstimate::TwoFrames,
        "fit" => VelocityEstimate::Fit(net.t_out() + 1),
        _ => VelocityEstimate::Bdf2,
    };
    let hcfg = HybridConfig {
        stride,
        tolerance: c.tolerance,
        max_consecutive: c.max_consecutive,
        velocity,
    };
    let mut h =
        Hybrid::new(sim, &transfer, net, indicator(&c.indicator)?, hcfg).map_err(from_coupling)?;
    let mut observed = Observed(after);
    h.run_with(last, &mut (), &mut [&mut observed])
        .map_err(from_coupling)
}

/// Runs a job with a `[coupling]` section (collective; one rank for now): the job's setup,
/// output and progress as `wavecp solve` has them, the time loop hybrid. Returns the run's
/// summary and the hybrid loop's.
pub fn run_hybrid(
    cfg: &Config,
    base: &Path,
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<(RunSummary, HybridSummary), DriverError> {
    let c = cfg
        .coupling
        .as_ref()
        .ok_or_else(|| err("the job has no [coupling] section"))?;
    if opts.restart {
        return Err(err("a hybrid run cannot be restarted yet (no checkpoints)"));
    }
    let mut hybrid = None;
    let mut run = |sim: &mut Simulation<'_>, last: usize, after: &mut AfterStep<'_>| {
        let (s, stopped) = drive(c, (cfg, base), (sim, last), after)?;
        hybrid = Some(s);
        Ok(stopped)
    };
    let summary = crate::sim::run_on_with(cfg, base, opts, comm, Some(&mut run))?;
    let hybrid = hybrid.ok_or_else(|| err("the hybrid loop did not run"))?;
    Ok((summary, hybrid))
}
