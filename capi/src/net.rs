//! `wavecp_net_*`: a trained wavecp network behind a handle, forecasting frames at the host's
//! own mesh vertices. Opened from a model file on a device, bound once to the host's vertices
//! and triangles (`wavecp_net_set_mesh`, as preCICE's setMeshVertices), then asked for
//! forecasts: the last `t_in` frames in, the next `t_out` out.

use crate::registry::{lock, Registry};
use crate::sim::{in_slice, length, out_slice, put, text};
use crate::status::*;
use std::ffi::{c_char, c_int};
use std::path::PathBuf;
use wavecp::coupling::points::PointNetwork;
use wavecp::nn::Device;
use wavecp::surrogate::modelfile::{self, ModelMeta};

/// A network, opaque to the host.
#[allow(non_camel_case_types)]
pub struct wavecp_net {
    _private: [u8; 0],
}

static NETS: Registry<Net> = Registry::new("wavecp_net");

/// Opened (the model read, waiting for the host's mesh), or bound to it.
enum Net {
    Opened {
        meta: Box<ModelMeta>,
        path: PathBuf,
        device: Device,
        zone: Option<[f64; 4]>,
    },
    Bound(Box<PointNetwork>),
}

// SAFETY: a `Net` is reached only through its registry mutex, one thread at a time; the model
// and its runner hold plain data or a CUDA context that cudarc lets any thread use.
unsafe impl Send for Net {}

impl Net {
    fn bound(&mut self, call: &str) -> Result<&mut PointNetwork, Failure> {
        match self {
            Net::Bound(p) => Ok(p),
            Net::Opened { .. } => Err(Failure::new(
                WAVECP_ERR_ORDER,
                format!(
                    "{call} before wavecp_net_set_mesh: give the network the host's mesh first"
                ),
            )),
        }
    }
}

fn with_net(n: *const wavecp_net, f: impl FnOnce(&mut Net) -> Result<(), Failure>) -> c_int {
    guard(|| {
        let arc = NETS.get(n as u64)?;
        let mut g = lock(&arc)?;
        f(&mut g)
    })
}

/// Opens the model file `model_path` (a `.safetensors` written by `wavecp train`) on `device`
/// (`"cpu"`, `"cuda"`, `"cuda:N"` or `"auto"`); `*out` gets its handle. The model is read and
/// checked now; the device is opened by `wavecp_net_set_mesh`.
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_open(
    model_path: *const c_char,
    device: *const c_char,
    out: *mut *mut wavecp_net,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(Failure::new(WAVECP_ERR_NULL, "out is NULL"));
        }
        // SAFETY: NUL-terminated strings (header contract).
        let (path, dev) = unsafe { (text(model_path, "model_path")?, text(device, "device")?) };
        let device: Device = dev
            .parse()
            .map_err(|e: String| Failure::new(WAVECP_ERR_ARG, e))?;
        let loaded = modelfile::load(std::path::Path::new(path))
            .map_err(|e| Failure::new(WAVECP_ERR_JOB, e.to_string()))?;
        let id = NETS.insert(Net::Opened {
            meta: Box::new(loaded.meta),
            path: PathBuf::from(path),
            device,
            zone: None,
        });
        // SAFETY: `out` is non-NULL (checked) and writable (header contract).
        unsafe { put(out, id as *mut wavecp_net, "out") }
    })
}

/// Places the model's grid on `[x0, x1] × [y0, y1]` of the host's coordinates (without this
/// call: the zone the model file records). Before `wavecp_net_set_mesh`.
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_set_zone(
    n: *mut wavecp_net,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
) -> c_int {
    with_net(n, |net| match net {
        Net::Opened { zone, .. } => {
            if !(x0 < x1 && y0 < y1 && [x0, x1, y0, y1].iter().all(|v| v.is_finite())) {
                return Err(Failure::new(
                    WAVECP_ERR_ARG,
                    format!("zone [{x0}, {x1}] x [{y0}, {y1}] is empty or not finite"),
                ));
            }
            *zone = Some([x0, x1, y0, y1]);
            Ok(())
        }
        Net::Bound(_) => Err(Failure::new(
            WAVECP_ERR_ORDER,
            "wavecp_net_set_zone after wavecp_net_set_mesh",
        )),
    })
}

/// Binds the network to the host's mesh, once: `npoints` vertices (`xy`: x0, y0, x1, y1, ...)
/// and `ntris` triangles (`tris`: three 0-based vertex indices each; split quadrilaterals in
/// two). Opens the device.
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_set_mesh(
    n: *mut wavecp_net,
    xy: *const f64,
    npoints: i64,
    tris: *const i64,
    ntris: i64,
) -> c_int {
    with_net(n, |net| {
        let Net::Opened {
            path, device, zone, ..
        } = net
        else {
            return Err(Failure::new(
                WAVECP_ERR_ORDER,
                "wavecp_net_set_mesh called twice: the mesh is given once",
            ));
        };
        if npoints < 0 || ntris < 0 {
            return Err(Failure::new(WAVECP_ERR_ARG, "negative npoints or ntris"));
        }
        // SAFETY: `2 npoints` doubles and `3 ntris` int64 (header contract).
        let (c, t) = unsafe {
            (
                in_slice(xy, 2 * npoints as usize, "xy")?,
                in_slice(tris, 3 * ntris as usize, "tris")?,
            )
        };
        let coords = c.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
        let mut cells = Vec::with_capacity(ntris as usize);
        for v in t.chunks_exact(3) {
            if v.iter().any(|&i| i < 0 || i >= npoints) {
                return Err(Failure::new(
                    WAVECP_ERR_ARG,
                    format!("triangle {v:?} names a vertex outside 0..{npoints}"),
                ));
            }
            cells.push([v[0] as u32, v[1] as u32, v[2] as u32]);
        }
        // Read again (the model is not kept twice), so a refused mesh leaves the handle as it
        // was.
        let l = modelfile::load(path).map_err(|e| Failure::new(WAVECP_ERR_JOB, e.to_string()))?;
        let p = PointNetwork::new(l, path, *device, coords, cells, *zone)?;
        *net = Net::Bound(Box::new(p));
        Ok(())
    })
}

/// Frames a forecast reads (`t_in`) and gives (`t_out`), and the time between frames the model
/// was trained on (`frame_dt`: the host's frames must be that far apart).
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_frames(
    n: *const wavecp_net,
    t_in: *mut i64,
    t_out: *mut i64,
    frame_dt: *mut f64,
) -> c_int {
    with_net(n, |net| {
        let (a, b, dt) = match net {
            Net::Opened { meta, .. } => (meta.t_in, meta.t_out, meta.frame_dt),
            Net::Bound(p) => (p.frames().0, p.frames().1, p.frame_dt()),
        };
        // SAFETY: writable values (header contract).
        unsafe {
            put(t_in, a as i64, "t_in")?;
            put(t_out, b as i64, "t_out")?;
            put(frame_dt, dt, "frame_dt")
        }
    })
}

/// How many of the host's vertices lie in the model's zone (a forecast writes those).
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_covered(n: *const wavecp_net, count: *mut i64) -> c_int {
    with_net(n, |net| {
        let c = net.bound("wavecp_net_covered")?.covered() as i64;
        // SAFETY: a writable int64 (header contract).
        unsafe { put(count, c, "count") }
    })
}

/// The scenario parameters a conditioned model reads (see `wavecp model info`).
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_set_scenario(
    n: *mut wavecp_net,
    params: *const f64,
    count: i64,
) -> c_int {
    with_net(n, |net| {
        let p = net.bound("wavecp_net_set_scenario")?;
        if count < 0 {
            return Err(Failure::new(WAVECP_ERR_ARG, "negative count"));
        }
        // SAFETY: `count` doubles (header contract).
        let v = unsafe { in_slice(params, count as usize, "params") }?;
        p.set_scenario(v.to_vec())?;
        Ok(())
    })
}

/// The time of the next forecast's first input frame (read by a model conditioned on time).
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_set_time(n: *mut wavecp_net, t0: f64) -> c_int {
    with_net(n, |net| {
        net.bound("wavecp_net_set_time")?.set_input_time(t0);
        Ok(())
    })
}

/// The next `t_out` frames at the host's vertices into `next` (`t_out × npoints` values, frame
/// after frame) from the last `t_in` in `past` (`t_in × npoints`, oldest first). Vertices
/// outside the zone keep the values `next` held.
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_forecast(
    n: *mut wavecp_net,
    past: *const f64,
    past_len: i64,
    next: *mut f64,
    next_len: i64,
) -> c_int {
    with_net(n, |net| {
        let p = net.bound("wavecp_net_forecast")?;
        let ((t_in, t_out), np) = (p.frames(), p.npoints());
        let a = length(past_len, t_in * np, "forecast (past)")?;
        let b = length(next_len, t_out * np, "forecast (next)")?;
        // SAFETY: `a` readable and `b` writable doubles (header contract).
        let (i, o) = unsafe { (in_slice(past, a, "past")?, out_slice(next, b, "next")?) };
        p.forecast(i, o)?;
        Ok(())
    })
}

/// Frees the network; NULL and already destroyed handles are ignored.
#[no_mangle]
pub unsafe extern "C" fn wavecp_net_destroy(n: *mut wavecp_net) {
    let _ = guard(|| {
        if let Some(arc) = NETS.remove(n as u64) {
            drop(arc.lock().unwrap_or_else(|p| p.into_inner()));
        }
        Ok(())
    });
}
