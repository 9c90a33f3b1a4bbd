//! Dumps every window `wavecp calibrate` would sample (its recorded frames and forecast on the
//! grid as little-endian f32, its scenario, time and true error as JSON) for offline indicator
//! research, e.g. `scripts/indicator-features.py`:
//! `window_dump MODEL DATASET_JOB SCENARIOS FREQUENCY_FACTOR OUT_PREFIX` (environment: `SEED`,
//! default 1234; `SOURCE_BOX=x0,x1,y0,y1` to draw the sources there).

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use wavecp::coupling::calibrate::{sample_with, Sampling};
use wavecp::coupling::hybrid::{Indicator, WindowView};
use wavecp::coupling::CouplingError;

struct Recorder(Rc<RefCell<Vec<f32>>>);

impl Indicator for Recorder {
    fn score(&mut self, w: WindowView<'_, '_>) -> Result<f64, CouplingError> {
        let mut b = self.0.borrow_mut();
        for f in w
            .past
            .iter()
            .map(|f| &f[..])
            .chain(w.forecast.iter().map(|f| &f[..]))
        {
            b.extend(f.iter().map(|&v| v as f32));
        }
        Ok(w.sim.time())
    }
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 6,
        "usage: window_dump MODEL DATASET_JOB SCENARIOS FREQUENCY_FACTOR OUT_PREFIX"
    );
    let s = Sampling {
        model: PathBuf::from(&a[1]),
        job: PathBuf::from(&a[2]),
        indicators: vec![],
        scenarios: a[3].parse()?,
        seed: std::env::var("SEED").map_or(Ok(1234), |s| s.parse())?,
        frequency_factor: a[4].parse()?,
        source_box: match std::env::var("SOURCE_BOX") {
            Err(_) => None,
            Ok(b) => {
                let v: Vec<f64> = b.split(',').map(str::parse).collect::<Result<_, _>>()?;
                anyhow::ensure!(v.len() == 4, "SOURCE_BOX is x0,x1,y0,y1");
                Some([v[0], v[1], v[2], v[3]])
            }
        },
        rollout: 0,
    };
    let buf = Rc::new(RefCell::new(vec![]));
    let w = sample_with(&s, vec![Box::new(Recorder(buf.clone()))])?;
    let mut f = std::fs::File::create(format!("{}.frames.f32", a[5]))?;
    for v in buf.borrow().iter() {
        f.write_all(&v.to_le_bytes())?;
    }
    let meta = serde_json::json!({"scenario": w.scenario, "errors": w.errors, "time": w.scores[0],
        "inference_s": w.inference_s});
    std::fs::write(format!("{}.json", a[5]), meta.to_string())?;
    Ok(())
}
