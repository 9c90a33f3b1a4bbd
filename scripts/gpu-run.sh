#!/usr/bin/env bash
# The GPU machine's half of scripts/gpu-check: copied into gpu-bundle/ as run.sh and run there
# (no network, no Rust toolchain) as
#
#   bash gpu-bundle/run.sh [DIR]        DIR: else $OUT, else ./gpu-results
#
# It writes two files to DIR, both replaced (write, then rename) after every step, so a run
# stopped at a time limit leaves everything finished before it:
#   summary.txt      the figures that decide issues 5 and 18 (tests, the hybrid fine job with
#                    the network on the GPU, our layers and training steps
#                    against PyTorch's, each kernel's share of the roofline), printed last too
#   results.tar.gz   every log and JSON the steps wrote (checkpoints left out)
# Two files because the device tool returns at most eight.
#
# The steps run in order of what they decide, each within what is left of
# WAVECP_GPU_CHECK_BUDGET seconds (default 540, under the tool's 600 s per command); a step
# that no longer fits is recorded as skipped. WAVECP_GPU_CHECK_QUICK=1 (the emulator
# rehearsal, `scripts/gpu-check rehearse`): small shapes and models, one epoch.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-./gpu-results}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/wavecp-gpu.XXXXXX")
budget=${WAVECP_GPU_CHECK_BUDGET:-540}
start=$(date +%s)
quick=${WAVECP_GPU_CHECK_QUICK:-0}

# NVRTC from the CUDA toolkit, else from a pip wheel (PyTorch's nvidia-cuda-nvrtc); the
# driver from the system's library path, else from where the NVIDIA container mounts it.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
if ! ls /usr/local/cuda/lib64/libnvrtc.so.13 /usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so.13 > /dev/null 2>&1; then
    d=$(python3 -c '
import glob, os, nvidia
for p in nvidia.__path__:
    for f in glob.glob(os.path.join(p, "*", "lib", "libnvrtc.so.13")):
        print(os.path.dirname(f))
        raise SystemExit' 2> /dev/null)
    [ -n "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
fi
if ! ldconfig -p 2> /dev/null | grep -q 'libcuda\.so\.1 '; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/libcuda.so.1" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d"
    done
fi
# The first process compiles the kernels, the others load them from here.
export WAVECP_KERNEL_CACHE="$work/kernel-cache"

pack() {
    python3 "$here/summary.py" "$work" > "$work/summary.txt" 2>&1 || true
    cp "$work/summary.txt" "$out/.summary.tmp" && mv "$out/.summary.tmp" "$out/summary.txt"
    tar czf "$out/.results.tmp" -C "$work" --exclude='*.safetensors' --exclude=kernel-cache . \
        && mv "$out/.results.tmp" "$out/results.tar.gz"
}

# step NAME LIMIT FILE CMD...: CMD's stdout to FILE (stderr beside it as FILE's stem + .log,
# or into FILE itself when FILE ends in .txt), within LIMIT seconds or what is left.
step() {
    local name=$1 limit=$2 file=$3
    shift 3
    local left=$((budget - ($(date +%s) - start)))
    if ((left < 20)); then
        echo "$name: skipped, ${left} s of the budget left" >> "$work/steps.txt"
        return
    fi
    ((limit > left)) && limit=$left
    local err="$work/${file%.*}.log"
    [[ $file == *.txt ]] && err="$work/$file"
    local t0 rc
    t0=$(date +%s%N)
    if [[ $file == *.txt ]]; then
        timeout "$limit" "$@" > "$work/$file" 2>&1
    else
        timeout "$limit" "$@" > "$work/$file" 2> "$err"
    fi
    rc=$?
    local ms=$((($(date +%s%N) - t0) / 1000000))
    local what="exit $rc"
    ((rc == 124)) && what="stopped at its ${limit} s limit"
    printf '%s: %s after %d.%01d s\n' "$name" "$what" $((ms / 1000)) $((ms % 1000 / 100)) >> "$work/steps.txt"
    pack
}

# Whether PyTorch sees the GPU, asked once (importing torch takes seconds).
torch_ok=0
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && torch_ok=1
has_torch() { [ "$torch_ok" = 1 ]; }

{
    date -Is
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv 2>&1 || true
    python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" 2>&1 || true
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} > "$work/machine.txt"
echo "budget ${budget} s, quick=${quick}, started $(date -Is)" > "$work/steps.txt"
step "wavecp device" 60 device.json "$here/wavecp" device --json

shapes=("--cin 32 --cout 32 --size 8,32,32" "--cin 64 --cout 64 --size 8,64,64")
models=$here/models/paper_dense.toml,$here/models/paper_pair.toml,$here/models/paper_cp.toml
train_size=() epochs=() steps=10 kernel_args=(--samples 20)
if [ "$quick" = 1 ]; then
    kernel_args=(--samples 1 --scale 8)
    shapes=("--cin 8 --cout 8 --size 4,16,16")
    models=$here/models/small_dense.toml,$here/models/small_pair.toml,$here/models/small_cp.toml
    train_size=(--size 8,16,16) epochs=(--set train.epochs=1) steps=2
fi
tag() { echo "$1" | tr -d ' -' | tr ',' 'x'; }

# 1. Correctness: every CUDA test with a skip made a failure, and the training run that
#    compares the GPU (frames resident) with the CPU.
export WAVECP_REQUIRE_CUDA=1 WAVECP_REQUIRE_NVRTC=1
# The tests start the bundle's wavecp-h5 (the build it came from is not on this machine).
step "tests" 240 tests.txt env WAVECP_REPO="$here" WAVECP_BIN="$here/wavecp-h5" "$here/tests" \
    cuda:: surrogate::device_selection --test-threads 1 --nocapture

# 2. Issue 18's last goal: the hybrid job on the fine FE model (10^6 nodes, 20 windows) with the
#    network on the GPU, beside the same job with the network on this machine's CPU, each point
#    against its FE-only reference measured in the same run; on all cores and on 2 (the
#    threads of the CPU figures in docs/benchmarks.md). Then the cost sweep over the FE node
#    count with GPU inference (the break-even point). The rehearsal runs the job on a
#    100 x 100 mesh for 6 windows and the sweep at 10^4 nodes.
cd "$here"
cores=$(nproc)
fine=(--job examples/fine_square/hybrid_prior.toml)
sweep=(--nodes 10000,100000,1000000)
if [ "$quick" = 1 ]; then
    fine+=(--set mesh.generate.nx=99 --set mesh.generate.ny=99 --set time.end=1.2)
    sweep=(--nodes 2500,10000 --windows 1)
fi
for dev in cuda cpu; do
    step "hybrid fine job, network on $dev, $cores threads" 150 "couple-fine-$dev-t$cores.json" \
        ./wavecp-h5 bench couple "${fine[@]}" --tolerances 0.03,0.05 --set "coupling.device=\"$dev\"" \
        --threads "$cores"
done
if [ "$cores" != 2 ]; then
    step "hybrid fine job, network on cuda, 2 threads" 150 couple-fine-cuda-t2.json \
        ./wavecp-h5 bench couple "${fine[@]}" --tolerances 0.05 --set 'coupling.device="cuda"' --threads 2
fi
step "cost sweep, network on cuda" 150 couple-sweep-cuda.json \
    ./wavecp-h5 bench couple "${sweep[@]}" --device cuda --threads "$cores"
cd - > /dev/null

# 3. The goals of issue 5: our layers beside PyTorch's (cuDNN, TF32 off on both) at the first shape, and
#    training steps of the paper models.
first=${shapes[0]}
t=$(tag "$first")
step "bench conv $t" 90 "bench-conv-wavecp-$t.json" "$here/wavecp" bench conv --device cuda --samples 20 $first
if has_torch; then
    step "torch conv $t" 120 "bench-conv-torch-$t.json" python3 "$here/torch_conv.py" --device cuda --samples 20 $first
fi
step "bench train" 150 bench-train-wavecp.json "$here/wavecp" bench train --device cuda --model "$models" \
    --steps "$steps" "${train_size[@]}"
if has_torch; then
    step "torch train" 150 bench-train-torch.json python3 "$here/torch_train.py" --device cuda --model "$models" \
        --steps "$steps" "${train_size[@]}"
fi

# 4. Each kernel family alone, against the device's roofline, and the variants' sweep.
step "bench kernels" 120 bench-kernels.json "$here/wavecp" bench kernels "${kernel_args[@]}"
# Every GEMM tile height and k split, and every chain tile, at each level of the paper models:
# what the choice rules need, so they can be set from this run's figures.
step "bench kernels --sweep" 150 bench-kernels-sweep.json "$here/wavecp" bench kernels --sweep "${kernel_args[@]}"

# 5. The larger shape, then the same layers on the baseline GEMM and with the CP passes
#    unfused, for what the tiled GEMM and the fused chain gain.
for shape in "${shapes[@]:1}"; do
    t=$(tag "$shape")
    step "bench conv $t" 90 "bench-conv-wavecp-$t.json" "$here/wavecp" bench conv --device cuda --samples 20 $shape
    if has_torch; then
        step "torch conv $t" 120 "bench-conv-torch-$t.json" python3 "$here/torch_conv.py" --device cuda --samples 20 $shape
    fi
done
for shape in "${shapes[@]}"; do
    t=$(tag "$shape")
    step "bench conv $t, basic GEMM" 90 "bench-conv-wavecp-basic-gemm-$t.json" \
        env WAVECP_GEMM=basic "$here/wavecp" bench conv --device cuda --samples 20 $shape
    step "bench conv $t, CP unfused" 90 "bench-conv-wavecp-cp-unfused-$t.json" \
        env WAVECP_CP_FUSED=0 "$here/wavecp" bench conv --device cuda --kind cp --samples 20 $shape
done

# 6. `wavecp train` and `wavecp eval` through the CLI on the GPU and the CPU, same job and data.
cd "$here"
for m in small_dense small_pair small_cp; do
    for dev in cuda cpu; do
        step "train $m on $dev" 120 "train-$m-$dev.json" ./wavecp-h5 train train.toml \
            --set model.file=\"models/$m.toml\" "${epochs[@]}" \
            --set output.dir=\"$work/train-$m-$dev\" --device $dev --json
    done
    step "eval $m on cuda" 60 "eval-$m-cuda.json" ./wavecp-h5 eval "$work/train-$m-cuda/best.safetensors" \
        data/test.h5 --device cuda --json
done

# 7. Determinism on the GPU (no atomics, fixed reduction orders): the same run twice, and a run
#    stopped after 2 of 3 epochs and resumed, end with bit-identical weights and moments
#    (summary.py compares the checkpoints).
det=(./wavecp-h5 train train.toml --set model.file=\"models/small_cp.toml\" --device cuda --json)
step "determinism: small_cp, 3 epochs" 120 det-a.json "${det[@]}" --set train.epochs=3 \
    --set output.dir=\"$work/det-a\"
step "determinism: the same again" 120 det-b.json "${det[@]}" --set train.epochs=3 \
    --set output.dir=\"$work/det-b\"
step "determinism: 2 epochs" 120 det-c2.json "${det[@]}" --set train.epochs=2 \
    --set output.dir=\"$work/det-c\"
step "determinism: resumed to 3" 120 det-c.json "${det[@]}" --set train.epochs=3 \
    --set output.dir=\"$work/det-c\" --resume
cd - > /dev/null

echo "finished after $(($(date +%s) - start)) s" >> "$work/steps.txt"
pack
cat "$out/summary.txt"
# The tests decide the exit status.
grep -q "^test result: ok" "$work/tests.txt" 2> /dev/null
