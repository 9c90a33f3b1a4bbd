"""A hybrid job stepped from Python: the demo's job (the shipped network takes windows of steps
where its error indicator trusts it) advanced window by window through the bindings. Prints one
JSON line: windows accepted and rejected, steps the network replaced, the final field's norm,
and the run's summary (`Sim.summary()`: each window's score, the wall-clock split, ...).

    python3 examples/python/hybrid.py JOB     (JOB: e.g. `wavecp demo`'s job, written to a file)
"""

import json
import sys

import numpy as np

import wavecp

with wavecp.Sim(sys.argv[1], set=['output.path=""']) as sim:
    # Windows start after the warm-up's frames; advancing 16 steps at a time (the demo
    # network's 8 frames of 2 steps) lets every window fit in one call.
    sim.advance(14)
    while sim.step < sim.num_steps:
        sim.advance(min(16, sim.num_steps - sim.step))
    accepted, rejected, replaced = sim.hybrid_windows()
    print(json.dumps({"accepted": accepted, "rejected": rejected, "steps_surrogate": replaced,
                      "norm": float(np.linalg.norm(sim.field())), "summary": sim.summary()}))
