#!/usr/bin/env python3
"""Offline study of grid-only error indicators on dumped windows (numpy, scipy).

    cargo run --release --example window_dump -- models/fine_prior_cp.safetensors \
        examples/fine_square/dataset_full.toml 16 1.0 /tmp/wd
    python3 scripts/indicator-features.py /tmp/wd

Reads PREFIX.frames.f32 (per window its t_in recorded and t_out forecast frames on the grid)
and PREFIX.json (scenario, true window error). Prints, per time-difference signal, its
Spearman rank correlation with the true error (all windows, and each half of the scenarios);
the floor of the recorded frames' own differences; and a log-linear fit of the error on every
signal, fitted on one half of the scenarios and ranked on the other (both ways).
"""
import json
import sys
from math import comb

import numpy as np
from scipy.stats import spearmanr


def main(prefix, t_in=8, t_out=8):
    meta = json.load(open(prefix + ".json"))
    err = np.array(meta["errors"])
    scen = np.array(meta["scenario"])
    n = len(err)
    frames = np.fromfile(prefix + ".frames.f32", dtype=np.float32).astype(np.float64)
    frames = frames.reshape(n, t_in + t_out, -1)
    total = t_in + t_out
    rms = np.sqrt((frames[:, t_in:] ** 2).sum(-1).mean(1))

    def diff(q, start, stop):
        w = np.array([(-1) ** (q - k) * comb(q, k) for k in range(q + 1)], float)
        d = [np.sqrt((np.tensordot(w, frames[:, s:s + q + 1], axes=([0], [1])) ** 2).sum(-1))
             for s in range(start, stop)]
        return np.array(d).T

    feats = {}
    for q in range(2, 8):
        seam = diff(q, t_in - q, t_in)
        feats[f"seam{q}"] = seam.max(1) / rms
        feats[f"seam_mean{q}"] = np.sqrt((seam ** 2).mean(1)) / rms
        feats[f"past{q}"] = diff(q, 0, t_in - q).max(1) / rms
        if q < t_out:
            feats[f"rough{q}"] = diff(q, t_in, total - q).max(1) / rms
    half = scen < (scen.max() + 1) / 2
    print(f"{n} windows, true error 10/50/90 %: {np.percentile(err, [10, 50, 90]).round(4)}")
    rows = []
    for name, v in feats.items():
        a, b = spearmanr(v[half], err[half])[0], spearmanr(v[~half], err[~half])[0]
        rows.append((spearmanr(v, err)[0], name, a, b))
    for r in sorted(rows, reverse=True):
        print(f"{r[1]:<12} Spearman {r[0]:.3f}  (halves {r[2]:.3f}, {r[3]:.3f})")
    for q in range(2, 8):
        print(f"floor: order {q} difference of the recorded frames, median "
              f"{np.median(feats[f'past{q}']):.4f} of the forecast's RMS frame")
    x = np.column_stack([np.log(v + 1e-12) for v in feats.values()] + [np.ones(n)])
    y = np.log(err)
    out = []
    for fit, test in [(half, ~half), (~half, half)]:
        beta, *_ = np.linalg.lstsq(x[fit], y[fit], rcond=None)
        out.append(spearmanr((x @ beta)[test], err[test])[0])
    print(f"log-linear fit of all {len(feats)} signals, ranked on the other half: "
          f"{out[0]:.3f}, {out[1]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
