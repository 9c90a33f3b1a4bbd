"""PyTorch (CPU) reference timings for `wavecp bench conv`: the same shapes, the same
factorisations, milliseconds per forward and per forward+backward (input and weight gradients).

  dense: torch.nn.Conv3d / Conv2d
  pair:  the paper's form written the natural PyTorch way: the kernel rebuilt from its 1-D
         factors with einsum at every call, then F.conv3d (autograd through both)
  cp:    TensorLy-Torch's FactorizedConv (CP, implementation="factorized": 1x1 conv, one
         depthwise 1-D conv per axis, 1x1 conv), or the same chain written by hand if tltorch
         is missing

Usage: python benches/torch_conv.py --threads 1,2 [--kind dense,pair,cp] [--batch 4 ...]
       python benches/torch_conv.py --device cuda ...   (cuDNN, TF32 off, timed with
       torch.cuda.synchronize, like `wavecp bench conv --device cuda`)
Prints JSON like `wavecp bench conv`.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def pair_layer(cin, cout, k, rank, dims, device="cpu"):
    axes = 3 if dims == 3 else 2
    factors = [torch.nn.Parameter(torch.randn(cout, cin, rank, k, device=device) * 0.3) for _ in range(axes)]
    bias = torch.nn.Parameter(torch.zeros(cout, device=device))

    def fwd(x):
        if dims == 3:
            w = torch.einsum("oirp,oirq,oirs->oipqs", *factors)
            return F.conv3d(x, w, bias, padding=k // 2)
        w = torch.einsum("oirq,oirs->oiqs", *factors)
        return F.conv2d(x, w, bias, padding=k // 2)

    return fwd, factors + [bias]


def cp_layer(cin, cout, k, rank, dims):
    try:
        import tltorch

        conv = tltorch.FactorizedConv(cin, cout, k, order=dims, rank=rank, factorization="cp", implementation="factorized", padding=k // 2)
        return conv, list(conv.parameters()), "tltorch.FactorizedConv"
    except Exception:  # noqa: BLE001 - fall back to the explicit chain
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        pin = conv(cin, rank, 1, bias=False)
        ax = []
        for a in range(dims):
            ks = [1] * dims
            ks[a] = k
            pad = [0] * dims
            pad[a] = k // 2
            ax.append(conv(rank, rank, tuple(ks), padding=tuple(pad), groups=rank, bias=False))
        pout = conv(rank, cout, 1)
        seq = torch.nn.Sequential(pin, *ax, pout)
        return seq, list(seq.parameters()), "hand-written chain"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="dense,pair,cp")
    ap.add_argument("--dims", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cin", type=int, default=32)
    ap.add_argument("--cout", type=int, default=32)
    ap.add_argument("--size", default="8,32,32")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        # FP32 on both sides: our kernels use FP32 FMAs, so TF32 stays off here too.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        a.threads = "1"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    t, y, x = (int(v) for v in a.size.split(","))
    shape = [a.batch, a.cin, t, y, x] if a.dims == 3 else [a.batch, a.cin, y, x]
    out = []
    for kind in a.kind.split(","):
        for threads in (int(v) for v in a.threads.split(",")):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            impl = "torch"
            if kind == "dense":
                conv = (torch.nn.Conv3d if a.dims == 3 else torch.nn.Conv2d)(a.cin, a.cout, a.kernel, padding=a.kernel // 2)
                conv = conv.to(dev)
                fwd, params = conv, list(conv.parameters())
            elif kind == "pair":
                fwd, params = pair_layer(a.cin, a.cout, a.kernel, a.rank, a.dims, dev)
                impl = "einsum kernel + conv"
            else:
                fwd, params, impl = cp_layer(a.cin, a.cout, a.kernel, a.rank, a.dims)
                if isinstance(fwd, torch.nn.Module):
                    fwd = fwd.to(dev)
                    params = list(fwd.parameters())
            xin = torch.randn(*shape, device=dev, requires_grad=True)
            with torch.no_grad():
                dy = torch.randn_like(fwd(xin))
            f, fb = [], []
            for i in range(a.samples + 1):
                sync()
                t0 = time.perf_counter()
                with torch.no_grad():
                    fwd(xin)
                sync()
                t1 = time.perf_counter()
                for p in params:
                    p.grad = None
                xin.grad = None
                yv = fwd(xin)
                yv.backward(dy)
                sync()
                t2 = time.perf_counter()
                if i > 0:  # first call warms up
                    f.append((t1 - t0) * 1e3)
                    fb.append((t2 - t1) * 1e3)
            out.append({
                "kind": kind, "implementation": impl, "threads": threads, "dims": a.dims, "batch": a.batch,
                "cin": a.cin, "cout": a.cout, "size": [t, y, x], "kernel": a.kernel, "rank": a.rank,
                "trainable_params": sum(p.numel() for p in params),
                "forward_ms": statistics.median(f), "forward_backward_ms": statistics.median(fb),
                "torch": torch.__version__, "device": str(dev),
            })
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
