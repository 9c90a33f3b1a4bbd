"""PyTorch (CPU) reference for `wavecp bench train`: the same model file, the same training step.

Builds the network of a wavecp model TOML (conv dense/pair/cp, conv_transpose, relu/gelu/tanh,
pool, upsample, save/concat/add) as a torch.nn.Module and times
forward -> MSE -> backward -> clip_grad_norm_(1.0) -> AdamW on a random input of the same shape.

  dense: nn.Conv3d / nn.Conv2d
  pair:  kernel rebuilt from its 1-D factors with einsum at every call, then F.conv3d/conv2d
  cp:    TensorLy-Torch FactorizedConv(factorization="cp", implementation="factorized")
         (1x1 conv, one depthwise 1-D conv per axis, 1x1 conv), or that chain by hand

Usage: python benches/torch_train.py --model a.toml,b.toml --threads 2 --size 8,64,64 --batch 4
Prints JSON like `wavecp bench train`.
"""
import argparse
import json
import statistics
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F


def axes(v, dims, inactive):
    if isinstance(v, int):
        return (v,) * dims
    return tuple(v)


class PairConv(nn.Module):
    def __init__(self, cin, cout, k, rank, dims, pad, stride, bias):
        super().__init__()
        self.dims, self.pad, self.stride = dims, pad, stride
        self.f = nn.ParameterList(
            [nn.Parameter(torch.randn(cout, cin, rank, k[a]) * 0.3) for a in range(dims)]
        )
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x):
        if self.dims == 3:
            w = torch.einsum("oirp,oirq,oirs->oipqs", *self.f)
            return F.conv3d(x, w, self.bias, stride=self.stride, padding=self.pad)
        w = torch.einsum("oirq,oirs->oiqs", *self.f)
        return F.conv2d(x, w, self.bias, stride=self.stride, padding=self.pad)


def cp_conv(cin, cout, k, rank, dims, pad, stride, bias):
    try:
        import tltorch

        return tltorch.FactorizedConv(
            cin, cout, k, order=dims, rank=rank, factorization="cp",
            implementation="factorized", padding=pad, stride=stride, bias=bias,
        ), "tltorch"
    except Exception:  # noqa: BLE001 - fall back to the explicit chain
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        layers = [conv(cin, rank, 1, bias=False)]
        for a in range(dims):
            ks, pd, st = [1] * dims, [0] * dims, [1] * dims
            ks[a], pd[a], st[a] = k[a], pad[a], stride[a]
            layers.append(conv(rank, rank, tuple(ks), padding=tuple(pd), stride=tuple(st), groups=rank, bias=False))
        layers.append(conv(rank, cout, 1, bias=bias))
        return nn.Sequential(*layers), "hand-written chain"


class Net(nn.Module):
    def __init__(self, spec):
        super().__init__()
        m = spec["model"]
        self.dims = m["dims"]
        dims = self.dims
        ch = m["in_channels"]
        self.ops = []
        self.mods = nn.ModuleList()
        self.cp_impl = None
        saved = {}
        conv_cls = nn.Conv3d if dims == 3 else nn.Conv2d
        convt_cls = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        for layer in spec["layer"]:
            t = layer["type"]
            if t == "conv":
                kind = layer.get("kind", m.get("kind", "dense"))
                rank = layer.get("rank", m.get("rank", 1))
                k = axes(layer["kernel"], dims, 1)
                pad = axes(layer.get("padding", 0), dims, 0)
                st = axes(layer.get("stride", 1), dims, 1)
                bias = layer.get("bias", True)
                if kind == "dense":
                    mod = conv_cls(ch, layer["out"], k, stride=st, padding=pad, bias=bias)
                elif kind == "pair":
                    mod = PairConv(ch, layer["out"], k, rank, dims, pad, st, bias)
                else:
                    mod, self.cp_impl = cp_conv(ch, layer["out"], k, rank, dims, pad, st, bias)
                ch = layer["out"]
                self.ops.append(("mod", len(self.mods)))
                self.mods.append(mod)
            elif t == "conv_transpose":
                k = axes(layer["kernel"], dims, 1)
                mod = convt_cls(
                    ch, layer["out"], k,
                    stride=axes(layer.get("stride", 1), dims, 1),
                    padding=axes(layer.get("padding", 0), dims, 0),
                    output_padding=axes(layer.get("output_padding", 0), dims, 0),
                    bias=layer.get("bias", True),
                )
                ch = layer["out"]
                self.ops.append(("mod", len(self.mods)))
                self.mods.append(mod)
            elif t in ("relu", "gelu", "tanh"):
                self.ops.append((t, None))
            elif t == "pool":
                k = axes(layer["kernel"], dims, 1)
                self.ops.append(("pool_" + layer["mode"], k))
            elif t == "upsample":
                self.ops.append(("upsample", axes(layer["scale"], dims, 1)))
            elif t == "save":
                saved[layer["name"]] = ch
                self.ops.append(("save", layer["name"]))
            elif t == "concat":
                ch += saved[layer["name"]]
                self.ops.append(("concat", layer["name"]))
            elif t == "add":
                self.ops.append(("add", layer["name"]))
            else:
                raise ValueError(f"unknown layer type {t}")

    def forward(self, x):
        saved = {}
        for op, arg in self.ops:
            if op == "mod":
                x = self.mods[arg](x)
            elif op == "relu":
                x = F.relu(x)
            elif op == "gelu":
                x = F.gelu(x, approximate="tanh")
            elif op == "tanh":
                x = torch.tanh(x)
            elif op == "pool_avg":
                x = (F.avg_pool3d if self.dims == 3 else F.avg_pool2d)(x, arg)
            elif op == "pool_max":
                x = (F.max_pool3d if self.dims == 3 else F.max_pool2d)(x, arg)
            elif op == "upsample":
                x = F.interpolate(x, scale_factor=arg, mode="nearest")
            elif op == "save":
                saved[arg] = x
            elif op == "concat":
                x = torch.cat([x, saved[arg]], 1)
            elif op == "add":
                x = x + saved[arg]
        return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", default="8,64,64")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
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
    out = []
    for path in a.model.split(","):
        with open(path, "rb") as f:
            spec = tomllib.load(f)
        for threads in (int(v) for v in a.threads.split(",")):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            net = Net(spec).to(dev)
            dims, cin = spec["model"]["dims"], spec["model"]["in_channels"]
            shape = [a.batch, cin, t, y, x] if dims == 3 else [a.batch, cin, y, x]
            inp = torch.randn(shape, device=dev)
            with torch.no_grad():
                target = torch.randn(net(inp).shape, device=dev)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            fw, bw, up, st = [], [], [], []
            for i in range(a.warmup + a.steps):
                sync()
                t0 = time.perf_counter()
                loss = F.mse_loss(net(inp), target)
                sync()
                t1 = time.perf_counter()
                opt.zero_grad(set_to_none=False)
                loss.backward()
                sync()
                t2 = time.perf_counter()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sync()
                t3 = time.perf_counter()
                if i >= a.warmup:
                    fw.append((t1 - t0) * 1e3)
                    bw.append((t2 - t1) * 1e3)
                    up.append((t3 - t2) * 1e3)
                    st.append((t3 - t0) * 1e3)
            # The step as a training loop runs it: one wait at the end, for the loss.
            whole = []
            for i in range(a.steps):
                sync()
                t0 = time.perf_counter()
                loss = F.mse_loss(net(inp), target)
                opt.zero_grad(set_to_none=False)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                loss.item()
                whole.append((time.perf_counter() - t0) * 1e3)
            out.append({
                "model": path,
                "threads": threads,
                "input_shape": shape,
                "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
                "forward_ms": statistics.median(fw),
                "backward_ms": statistics.median(bw),
                "update_ms": statistics.median(up),
                "step_ms": statistics.median(st),
                "step_one_wait_ms": statistics.median(whole),
                # Held by tensors at most (the caching allocator's reserve is not counted).
                "peak_memory_mib": (torch.cuda.max_memory_allocated(dev) / 2**20
                                    if dev.type == "cuda" else None),
                "steps": a.steps,
                "device": str(dev),
                "implementation": "torch " + torch.__version__ + (f", cp: {net.cp_impl}" if net.cp_impl else ""),
            })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
