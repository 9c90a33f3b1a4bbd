#!/usr/bin/env python3
"""The figures of a GPU check (scripts/gpu-run.sh) in one short text: test outcome, our layers
and training steps against PyTorch's with the issue's goals, each kernel against the roofline,
and the CPU-vs-GPU training curves. Reads the step outputs in DIR; a missing or broken file is
reported and skipped, so it can run after every step.

    python3 scripts/gpu-summary.py DIR
"""
import glob
import json
import os
import re
import sys

d = sys.argv[1]


def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as e:
        print(f"  {name}: not JSON ({e})")
        return None


def text(name):
    try:
        with open(os.path.join(d, name)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


print("== machine")
print(text("machine.txt").rstrip())
dev = load("device.json")
if dev:
    for g in dev.get("devices", []):
        print(f"wavecp device: {g['name']} cc {g['compute_capability']}, peaks {g['peaks']}")
    print(f"driver {dev.get('driver_version')}, nvrtc {dev.get('nvrtc_version')}, problem: {dev.get('problem')}")

print("\n== steps")
print(text("steps.txt").rstrip())

print("\n== tests")
t = text("tests.txt")
if t:
    # The harness's own tally (a test's --nocapture output can split its "... ok" line).
    lines = t.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("test result:") or line.startswith("skipped:"):
            print(" ", line[:300])
        elif "panicked at" in line:
            # The location, then the message.
            for m in lines[i:i + 3]:
                print(" ", m[:300])
    # The names under the closing "failures:" heading.
    tail = t.rsplit("\nfailures:\n", 1)
    if len(tail) == 2:
        for line in tail[1].splitlines():
            if line.startswith("    "):
                print("  FAILED", line.strip())
    if "test result:" not in t:
        print("  no tally: the test binary did not finish (see steps)")
else:
    print("no test output")

GOAL = {"dense": 0.7, "pair": 2.0, "cp": 2.0}


def conv_section():
    print("\n== layers: forward+backward, ours vs PyTorch (speedup = torch ms / ours ms)")
    for path in sorted(glob.glob(os.path.join(d, "bench-conv-wavecp-cin*.json"))):
        tag = os.path.basename(path)[len("bench-conv-wavecp-"):-len(".json")]
        ours = load(os.path.basename(path)) or []
        torch = load(f"bench-conv-torch-{tag}.json") or []
        basic = load(f"bench-conv-wavecp-basic-gemm-{tag}.json") or []
        unfused = load(f"bench-conv-wavecp-cp-unfused-{tag}.json") or []
        print(f"shape {tag}")
        for o in ours:
            k = o["shape"]["kind"]
            p = next((x for x in torch if x["kind"] == k), None)
            line = (f"  {k:5} ours fwd {o['forward_ms']:.3f} ms, fwd+bwd {o['forward_backward_ms']:.3f} ms"
                    f" ({o['achieved_tflops']:.2f} TFLOP/s)")
            if p:
                s = p["forward_backward_ms"] / o["forward_backward_ms"]
                sf = p["forward_ms"] / o["forward_ms"]
                verdict = "meets" if s >= GOAL[k] else "MISSES"
                line += (f"; torch ({p['implementation']}) fwd {p['forward_ms']:.3f}, fwd+bwd"
                         f" {p['forward_backward_ms']:.3f} ms; speedup fwd {sf:.2f}x, fwd+bwd {s:.2f}x"
                         f" (goal {GOAL[k]}x: {verdict})")
            b = next((x for x in basic if x["shape"]["kind"] == k), None)
            if b:
                line += f"; basic GEMM fwd+bwd {b['forward_backward_ms']:.3f} ms"
            u = next((x for x in unfused if x["shape"]["kind"] == k), None)
            if u:
                line += f"; unfused fwd+bwd {u['forward_backward_ms']:.3f} ms"
            print(line)


def train_section():
    print("\n== training step (forward, MSE, backward, AdamW), ours vs PyTorch")
    ours = load("bench-train-wavecp.json") or []
    torch = load("bench-train-torch.json") or []
    for o in ours:
        name = os.path.basename(o["model"])
        p = next((x for x in torch if os.path.basename(x["model"]) == name), None)
        line = (f"  {name:18} {o['trainable_params']:>9} params, ours step {o['step_ms']:.2f} ms"
                f" (fwd {o['forward_ms']:.2f}, bwd {o['backward_ms']:.2f}, update {o['update_ms']:.2f})")
        if p:
            s = p["step_ms"] / o["step_ms"]
            line += (f"; torch step {p['step_ms']:.2f} ms (fwd {p['forward_ms']:.2f}, bwd {p['backward_ms']:.2f},"
                     f" update {p['update_ms']:.2f}); speedup {s:.2f}x")
            if "dense" not in name:
                line += f" (goal 1.5x: {'meets' if s >= 1.5 else 'MISSES'})"
        print(line)
        # The same step with one wait at its end (the loss), as a training loop runs it.
        if "step_one_wait_ms" in o:
            line = f"  {'':18} one wait per step: ours {o['step_one_wait_ms']:.2f} ms"
            if p and "step_one_wait_ms" in p:
                s = p["step_one_wait_ms"] / o["step_one_wait_ms"]
                line += f", torch {p['step_one_wait_ms']:.2f} ms; speedup {s:.2f}x"
                if "dense" not in name:
                    line += f" (goal 1.5x: {'meets' if s >= 1.5 else 'MISSES'})"
            print(line)
        if o.get("peak_memory_mib") is not None:
            line = f"  {'':18} peak device memory: ours {o['peak_memory_mib']:.1f} MiB"
            if p and p.get("peak_memory_mib") is not None:
                line += f", torch {p['peak_memory_mib']:.1f} MiB"
            print(line)


def kernels_section():
    print("\n== kernels alone (fraction of the roofline: the larger of FLOP and byte shares)")
    for k in load("bench-kernels.json") or []:
        print(f"  {k['kernel'][:44]:44} {k['shape'][:52]:52} {k['ms']:9.4f} ms"
              f" {k['achieved_tflops']:7.2f} TFLOP/s {k['achieved_gbs']:8.1f} GB/s"
              f" roofline {100 * k['fraction_of_roofline']:5.1f}%")


def sweep_section():
    print("\n== sweep: the chosen variant against the fastest, per kernel and shape")
    rows = load("bench-kernels-sweep.json") or []
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    for sh in shapes:
        rs = [r for r in rows if r["shape"] == sh]
        best = min(rs, key=lambda r: r["ms"])
        chosen = next((r for r in rs if "(chosen)" in r["kernel"]), None)
        line = f"  {sh[6:][:58]:58} best {best['kernel'][:40]:40} {best['ms']:8.4f} ms"
        if chosen:
            line += f"; chosen {chosen['ms']:8.4f} ms ({chosen['ms'] / best['ms']:.2f}x the best)"
        print(line)


def cli_section():
    print("\n== wavecp train through the CLI, GPU vs CPU (same job, data and seed)")
    for m in ("small_dense", "small_pair", "small_cp"):
        c, g = load(f"train-{m}-cpu.json"), load(f"train-{m}-cuda.json")
        if not (c and g):
            print(f"  {m}: missing ({'cpu' if not c else 'cuda'})")
            continue
        for hc, hg in zip(c["history"], g["history"]):
            rel = abs(hc[1] - hg[1]) / abs(hc[1])
            print(f"  {m} epoch {hc[0]}: train loss cpu {hc[1]:.6e} gpu {hg[1]:.6e} (rel {rel:.1e});"
                  f" val cpu {hc[2]:.6e} gpu {hg[2]:.6e}; s/epoch cpu {hc[3]:.2f} gpu {hg[3]:.2f}")
        e = load(f"eval-{m}-cuda.json")
        if e:
            print(f"  {m} eval on cuda: {json.dumps(e)[:200]}")


def tensors(path):
    """A safetensors file's tensors as raw bytes by name (its metadata left out)."""
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}


def determinism_section():
    print("\n== determinism on the GPU (small_cp, 3 epochs; weights and AdamW moments, bit for bit)")
    ck = {r: os.path.join(d, f"det-{r}", "checkpoint.safetensors") for r in "abc"}
    if not os.path.exists(ck["a"]):
        print("  not run")
        return
    a = tensors(ck["a"])
    for r, what in (("b", "the same run again"), ("c", "stopped after 2 epochs, resumed to 3")):
        if not os.path.exists(ck[r]):
            print(f"  {what}: not run")
            continue
        o = tensors(ck[r])
        differ = sorted(k for k in a if a[k] != o.get(k))
        ha, ho = load("det-a.json"), load(f"det-{r}.json")
        same_loss = bool(ha and ho) and ha["history"][-1][1:3] == ho["history"][-1][1:3]
        print(f"  {what}: {len(a) - len(differ)} of {len(a)} tensors bit-identical"
              + (f" (differ: {', '.join(differ[:6])})" if differ else "")
              + f"; last epoch's losses {'identical' if same_loss else 'DIFFER'}")


def hybrid_section():
    print("\n== hybrid fine job (issue 18): speed-up over the FE-only run measured in the same run")
    files = sorted(glob.glob(os.path.join(d, "couple-fine-*.json")))
    if not files:
        print("  not run")
    for f in files:
        r = load(os.path.basename(f))
        if not r:
            continue
        print(f"  {os.path.basename(f)}: network on {r.get('network_device')}, {r.get('threads')} threads,"
              f" {r.get('nodes')} nodes, {r.get('windows')} windows")
        for p in r.get("points", []):
            print(f"    tol {p['tolerance']}: {p['windows_accepted']} accepted, speed-up {p['speedup']:.2f}x"
                  f" at max rel. L2 {p['max_rel_l2_error']:.3e}; wall {p['wall_s']:.2f} s ="
                  f" FE {p['fe_s']:.2f} + inference {p['inference_s']:.3f} + transfer {p['transfer_s']:.2f}"
                  f" + indicator {p['indicator_s']:.3f}; FE only {p['reference_wall_s']:.2f} s")
    s = load("couple-sweep-cuda.json")
    if s:
        print(f"  cost sweep (network on cuda): inference {s['inference_per_window_s'] * 1e3:.2f} ms a window,"
              f" break-even {s.get('break_even_nodes')} nodes")
        for c in s["cases"]:
            print(f"    {c['nodes']} nodes: speed-up {c['speedup']:.2f}x (window {c['window_speedup']:.2f}x),"
                  f" predicted {c['predicted_speedup']:.2f}x ({c['prediction_error'] * 100:.0f} % off)")


for section in (hybrid_section, conv_section, train_section, kernels_section, sweep_section, cli_section,
                determinism_section):
    try:
        section()
    except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
        print(f"  ({section.__name__} failed: {e!r})")
