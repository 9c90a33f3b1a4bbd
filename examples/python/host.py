"""A Python host driving a wavecp simulation (the `wavecp` package over the C ABI): the same
run as examples/c/host.c, which it must match bit for bit. jobs/square_dirichlet.toml with its
left side made `external`, its Dirichlet values imposed from here each step (the job's own
sine, so the run is the one `wavecp solve` makes of the job); output steps where `wavecp solve`
writes them; the state saved half-way and loaded into a second simulation that must finish the
same. Writes the final field to <out_dir>/py_field.txt.

    pip install ./python
    python3 examples/python/host.py jobs/square_dirichlet.toml out [key=value ...]
"""

import math
import sys

import numpy as np

import wavecp


def left_value(t):
    """The job's left-side value (boundary[0]: value 0.1, sine of 2 Hz) at time t."""
    return 0.1 * math.sin(2.0 * math.pi * 2.0 * t)


def make(job, out, sets):
    return wavecp.Sim(job, set=["boundary.0.kind=external", f'output.path="{out}"', *sets])


def step(sim, nb):
    """Imposes the left side's values for the next step, then takes it."""
    t_next = float(sim.step + 1) * sim.dt
    sim.set_boundary_values("left", np.full(nb, left_value(t_next)))
    sim.advance(1)


def main():
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} JOB OUT_DIR [key=value ...]")
    job, out_dir, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
    every = 25  # the job's output.every
    a = make(job, f"{out_dir}/py.vtkhdf", sets)
    nsteps, nb = a.num_steps, a.boundary_nodes("left").size
    print(f"{a.num_nodes} nodes, {nsteps} steps, {nb} nodes on the left side")
    half, saved = nsteps // 2, None
    a.write_output()
    for k in range(nsteps):
        if k == half:
            saved = a.save_state()
        step(a, nb)
        if (k + 1) % every == 0 or k + 1 == nsteps:
            a.write_output()
    a.finish()
    u, ids, rec = a.field(), a.node_ids(), a.receivers()
    print(f"t = {a.time:.6f}, receiver 0 = {rec[0] if rec.size else 0.0:.17g}")

    with make(job, "", sets) as b:
        b.load_state(saved)
        for _ in range(half, nsteps):
            step(b, nb)
        if b.field().tobytes() != u.tobytes():
            sys.exit("the run restarted from the saved state differs from the uninterrupted one")
    print(f"restart from step {half}: bitwise equal")
    with open(f"{out_dir}/py_field.txt", "w") as f:
        for i, v in zip(ids, u):
            f.write(f"{i} {float(v)!r}\n")
    a.close()


if __name__ == "__main__":
    main()
