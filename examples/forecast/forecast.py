"""The surrogate handle from Python: the demo network (models/demo_cp.safetensors) forecasts 8
frames of the demo case at a host's vertices from the 8 before, and the FE solution of the same
case (a wavecp simulation through the same bindings) says how well. Writes the forecast to
<out_dir>/py_forecast.txt (examples/forecast/forecast.f90 must write the same bits) and prints
one JSON line: the worst frame's relative L2 error, and that of repeating the last input frame.

    python3 examples/forecast/forecast.py examples/forecast/demo_fe.toml models/demo_cp.safetensors OUT_DIR
"""

import json
import sys

import numpy as np

import wavecp


def main():
    job, model, out_dir = sys.argv[1:4]
    with wavecp.Sim(job) as sim:
        xy = sim.coords()
        # The generated 15 x 15 quads (nodes row by row), each in two triangles.
        tris = [(j * 16 + i, j * 16 + i + 1, j * 16 + i + 17, j * 16 + i, j * 16 + i + 17, j * 16 + i + 16)
                for j in range(15) for i in range(15)]
        with wavecp.Net(model, xy, np.array(tris).reshape(-1, 3), device="cpu") as net:
            sim.advance(20)  # the window starts at t = 0.2
            frames = []
            for _ in range(net.t_in + net.t_out):
                frames.append(sim.field())
                sim.advance(int(round(net.frame_dt / sim.dt)))
            frames = np.array(frames)
            past, truth = frames[: net.t_in], frames[net.t_in:]
            guess = net.forecast(past)
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    np.savetxt(f"{out_dir}/py_forecast.txt", guess.ravel(), fmt="%.17g")
    print(json.dumps({
        "forecast_rel_l2": max(rel(g, t) for g, t in zip(guess, truth)),
        "last_frame_rel_l2": max(rel(past[-1], t) for t in truth),
    }))


if __name__ == "__main__":
    main()
