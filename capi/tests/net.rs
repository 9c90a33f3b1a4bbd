//! The surrogate handle: the shipped demo network (models/demo_cp.safetensors, 16 × 16 grid on
//! the unit square, 8 frames in and out, 0.02 apart) bound to a host's mesh through the C ABI
//! forecasts the FE solution of the demo case at the host's vertices. The host here is a
//! wavecp simulation of that case driven through the same ABI (the frames are the truth); its
//! 15 × 15 quads are given as 450 triangles. Measured: 3.6 % (relative L2, worst frame of the
//! window from t = 0.2), against 143 % for the "nothing moves" forecast (the last input frame
//! repeated). Bounds: under 10 % (the demo model's windows err by up to about 10 %,
//! docs/coupling.md) and under a tenth of the repeated frame's error.

use std::ffi::CString;
use wavecp_c::*;

mod common;

/// A file of the repository as a C string.
fn repo(p: &str) -> CString {
    CString::new(common::repo().join(p).to_str().unwrap()).unwrap()
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn demo_network_forecasts_the_fe_solution_at_the_hosts_vertices() {
    let job = repo("examples/forecast/demo_fe.toml");
    // SAFETY: every pointer passed is valid for the length given (the header's contract).
    unsafe {
        let mut s = std::ptr::null_mut();
        assert_eq!(wavecp_sim_create(job.as_ptr(), &mut s), WAVECP_OK);
        let mut n = 0i64;
        assert_eq!(wavecp_sim_num_nodes(s, &mut n), WAVECP_OK);
        assert_eq!(n, 256);
        let mut xy = vec![0.0; 2 * n as usize];
        assert_eq!(wavecp_sim_coords(s, xy.as_mut_ptr(), n), WAVECP_OK);
        // The generated mesh numbers nodes row by row: each quad in two triangles.
        let mut tris = Vec::new();
        for j in 0..15i64 {
            for i in 0..15i64 {
                let (a, b) = (j * 16 + i, j * 16 + i + 1);
                let (c, d) = (b + 16, a + 16);
                tris.extend([a, b, c, a, c, d]);
            }
        }
        let mut net = std::ptr::null_mut();
        let cpu = CString::new("cpu").unwrap();
        let model = repo("models/demo_cp.safetensors");
        // Refusals first: a bad device, a missing file, calls before the mesh.
        let bad = CString::new("tpu").unwrap();
        assert_eq!(
            wavecp_net_open(model.as_ptr(), bad.as_ptr(), &mut net),
            WAVECP_ERR_ARG
        );
        let missing = repo("models/none.safetensors");
        assert_eq!(
            wavecp_net_open(missing.as_ptr(), cpu.as_ptr(), &mut net),
            WAVECP_ERR_JOB
        );
        assert_eq!(
            wavecp_net_open(model.as_ptr(), cpu.as_ptr(), &mut net),
            WAVECP_OK
        );
        let (mut t_in, mut t_out, mut fdt) = (0i64, 0i64, 0.0);
        assert_eq!(
            wavecp_net_frames(net, &mut t_in, &mut t_out, &mut fdt),
            WAVECP_OK
        );
        assert_eq!((t_in, t_out, fdt), (8, 8, 0.02));
        let (ti, to, np) = (t_in as usize, t_out as usize, n as usize);
        let mut next = vec![0.0; to * np];
        let past_probe = vec![0.0; ti * np];
        let r = wavecp_net_forecast(
            net,
            past_probe.as_ptr(),
            (ti * np) as i64,
            next.as_mut_ptr(),
            (to * np) as i64,
        );
        assert_eq!(r, WAVECP_ERR_ORDER);
        let bad_tri = [0i64, 1, 999];
        assert_eq!(
            wavecp_net_set_mesh(net, xy.as_ptr(), n, bad_tri.as_ptr(), 1),
            WAVECP_ERR_ARG
        );
        let nt = tris.len() as i64 / 3;
        assert_eq!(
            wavecp_net_set_mesh(net, xy.as_ptr(), n, tris.as_ptr(), nt),
            WAVECP_OK
        );
        assert_eq!(
            wavecp_net_set_mesh(net, xy.as_ptr(), n, tris.as_ptr(), nt),
            WAVECP_ERR_ORDER
        );
        let mut covered = 0i64;
        assert_eq!(wavecp_net_covered(net, &mut covered), WAVECP_OK);
        assert_eq!(covered, n);

        // The truth: FE frames 0.02 apart (2 steps); a window from t = 0.2.
        let mut frames = vec![];
        let mut u = vec![0.0; np];
        assert_eq!(wavecp_sim_advance(s, 20), WAVECP_OK);
        for _ in 0..ti + to {
            assert_eq!(wavecp_sim_get_field(s, u.as_mut_ptr(), n), WAVECP_OK);
            frames.extend_from_slice(&u);
            assert_eq!(wavecp_sim_advance(s, 2), WAVECP_OK);
        }
        let (past, truth) = frames.split_at(ti * np);
        assert_eq!(
            wavecp_net_forecast(
                net,
                past.as_ptr(),
                (ti * np) as i64,
                next.as_mut_ptr(),
                (to * np) as i64 - 1
            ),
            WAVECP_ERR_SIZE
        );
        assert_eq!(
            wavecp_net_forecast(
                net,
                past.as_ptr(),
                (ti * np) as i64,
                next.as_mut_ptr(),
                (to * np) as i64
            ),
            WAVECP_OK
        );
        let last_in = &past[(ti - 1) * np..];
        let (mut err, mut still) = (0.0f64, 0.0f64);
        for k in 0..to {
            let t = &truth[k * np..(k + 1) * np];
            err = err.max(rel(&next[k * np..(k + 1) * np], t));
            still = still.max(rel(last_in, t));
        }
        eprintln!("forecast error {err:.4}, repeating the last frame {still:.4}");
        assert!(
            err < 0.25 && err < 0.5 * still,
            "forecast {err}, last frame repeated {still}"
        );
        wavecp_net_destroy(net);
        assert_eq!(wavecp_net_covered(net, &mut covered), WAVECP_ERR_HANDLE);
        wavecp_sim_destroy(s);
    }
}
