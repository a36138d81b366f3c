#!/usr/bin/env bash
# One prepared GPU check for a session that has a GPU machine (one H100 / H200). Run from the repo root:
#
#     bash benchmarks/gpu_check.sh                 # on the GPU machine; writes to $OUT (or ./gpu_check_out)
#     GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh # CPU dry run of the same Python code at tiny sizes
#
# What it measures (each part in its own process, each under its own `timeout`, a failure is logged and
# the script goes on; every timeout is cut to what is left of $BUDGET s (default 360) so the whole script
# ends within ~6.5 min of the machine being up; typical on an H100: ~4–5 min):
#   1. stage-1 steps of DeepLab-v2-R101 (paper-gta5, pd+sl: source CE + weak + strong passes, EMA on the
#      full image) at the paper's crop 512×896 / full image 1024×2048, batch $BATCH (default 2):
#      fp32 | bf16 autocast | bf16 + channels_last | bf16 + channels_last + torch.compile (last, with
#      whatever is left of the budget, skipped under 90 s)
#      → images/s (target images per second, i.e. steps × batch / s) and peak GPU memory.
#   2. ProDA's own ops on the GPU: the real Stage1 path with a stub network (benchmarks/step_overhead.py),
#      and the official-style loop baseline against it → share of the fp32 step, speedup.
#   3. DDP: NCCL refuses two ranks on one GPU ("duplicate GPU"), and proda maps LOCAL_RANK → cuda:LOCAL_RANK,
#      so a real 2-rank GPU run needs 2 GPUs. What runs here: (a) 1 process on the GPU (smoke chain, pd+sl);
#      (b) torchrun --nproc-per-node 2 with gloo on the CPUs (smoke chain): the DDP code path end to end;
#      (c) best effort: 2 gloo ranks sharing the one GPU (both pinned to cuda:0) — logged as OK or not.
#   4. (a) the uint8 batches reach the GPU pinned and convert there to the CPU's bits (two tests of
#      tests/test_input_pipeline.py); the input pipeline at the paper's sizes (benchmarks/input_pipeline.py,
#      ~1 min): images/s with 0 and 6 loader workers per stream on 12 cores, against the fastest step of
#      part 1, and the loop's data-wait share with a fake step of that length. It runs before
#      torch.compile, which gets what is left.
# Outputs: $OUT/gpu_check.log (everything), $OUT/steps.jsonl (one JSON per configuration), $OUT/summary.json.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
DRY="${GPU_CHECK_DRY:-0}"
BATCH="${BATCH:-2}"
STEPS="${STEPS:-10}"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 BATCH STEPS GPU_CHECK_DRY="$DRY"
PY="${PYTHON:-python3}"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu_check +$(elapsed)s] $*"; }

say "start: $(date -u +%FT%TZ), dry=$DRY, batch=$BATCH, steps=$STEPS, out=$OUT"
if [ "$DRY" != "1" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || say "nvidia-smi failed"
fi
$PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'); sys.exit(0)"
if [ "$DRY" != "1" ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "no CUDA device visible: set GPU_CHECK_DRY=1 for a CPU dry run"; exit 1
fi
if [ "$DRY" != "1" ] && [ ! -d "$HOME/.cache/proda/synthetic" ] && [ -z "${PRODA_CACHE:-}" ]; then
  say "note: the embedded benchmark is generated on first use (part 3 takes ~1 min longer)"
fi

STEP_PY="$OUT/gpu_check_step.py"
cat > "$STEP_PY" <<'PYEOF'
"""One configuration of the GPU check (see benchmarks/gpu_check.sh); prints one JSON line."""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import step_overhead as so  # noqa: E402
from proda.models import build_model  # noqa: E402
from proda.presets import make_config  # noqa: E402

mode = sys.argv[1]
dry = os.environ.get("GPU_CHECK_DRY") == "1"
dev = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
batch = 2 if dry else int(os.environ.get("BATCH", "2"))
steps = 1 if dry else int(os.environ.get("STEPS", "10"))
warm = 1 if dry else 3
crop, full = ((64, 112), (128, 256)) if dry else ((512, 896), (1024, 2048))
backbone = "resnet18" if dry else "resnet101"  # the dry run checks the code path, not R101's speed on a CPU
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (TF32 would be a fourth configuration)
torch.backends.cudnn.allow_tf32 = False


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def stage_for(model, amp="off"):
    cfg = make_config("paper-gta5", "pd+sl", 0, {"device": dev.type, "data.batch_size": batch,
                                                 "data.crop": list(crop), "data.full_size": list(full),
                                                 "optim.amp": amp})
    return so.build_stage(cfg, model, so.fake_split("src", 2 * batch, full, 1), so.fake_split("tgt", 2 * batch, full, 2),
                          8, device=dev)


def timed_steps(stage, n):
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        so.full_step(stage)
    sync()
    return time.perf_counter() - t0


res = {"mode": mode, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "batch": batch,
       "crop": crop, "full": full, "backbone": backbone}
if mode in ("fp32", "bf16", "bf16-cl", "bf16-cl-compile"):
    model = build_model(backbone, 19)
    if "cl" in mode:
        model = model.to(memory_format=torch.channels_last)
    stage = stage_for(model, "bf16" if "bf16" in mode else "off")
    if "compile" in mode:
        stage.net = torch.compile(stage.model)
        stage.ema = torch.compile(stage.ema)
    t_warm = timed_steps(stage, warm)  # cudnn autotuning, allocator, compilation
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = timed_steps(stage, steps)
    res.update(warmup_s=round(t_warm, 2), step_s=round(t / steps, 4), images_per_s=round(batch * steps / t, 2))
    if dev.type == "cuda":
        res.update(peak_alloc_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   peak_reserved_gb=round(torch.cuda.max_memory_reserved() / 2**30, 2))
elif mode == "ops":
    # ProDA's own cost on the device: the real Stage1 path with a stub network (carrying R101's parameters)
    model = build_model(backbone, 19)
    stage = stage_for(so.StubNet(model, 8))
    timed_steps(stage, warm)
    n = 2 if dry else 20
    t_stub = timed_steps(stage, n) / n
    sync(); t0 = time.perf_counter()
    for _ in range(n):
        so.stub_passes(stage)
    sync(); t_passes = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        so.data_only(stage)
    sync(); t_data = (time.perf_counter() - t0) / n
    # the official-style loops on the device, same shapes, against the real Stage1's ops
    import copy
    model = model.to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    t_in = so.Inputs(batch, crop, full, device=dev)
    protos_loop = t_in.protos.clone()
    g = torch.Generator().manual_seed(5)
    loop = lambda: so.loop_step(t_in, protos_loop, (model, ema), g)  # noqa: E731
    loop()
    tl = []
    for _ in range(1 if dry else 5):
        sync(); t0 = time.perf_counter(); loop(); sync(); tl.append(time.perf_counter() - t0)
    tl.sort()
    ops = t_stub - t_passes - t_data
    res.update(stub_step_s=round(t_stub, 4), stub_passes_s=round(t_passes, 4), data_s=round(t_data, 4),
               ops_s=round(ops, 4), loop_components_s=round(tl[len(tl) // 2], 4),
               loop_over_ops=round(tl[len(tl) // 2] / max(ops, 1e-9), 2))
print(json.dumps(res), flush=True)
PYEOF

STEPS_JSON="$OUT/steps.jsonl"
: > "$STEPS_JSON"
BUDGET="${BUDGET:-360}"  # seconds for the whole script; every part's timeout is cut to what is left
left() { echo $(( BUDGET - $(elapsed) )); }
cap() {  # cap SECONDS → min(SECONDS, time left − 5); 0 when under 20 s are left
  local l=$(( $(left) - 5 )); local t=$1
  [ "$DRY" = "1" ] && { echo "$t"; return; }
  [ "$l" -lt "$t" ] && t=$l
  [ "$t" -lt 20 ] && t=0
  echo "$t"
}
run_cfg() {  # mode, timeout seconds (×3 in a dry run: a CPU without native bf16 emulates it slowly)
  local t; t=$(cap "$2"); [ "$DRY" = "1" ] && t=$(( 3 * t ))
  if [ "$t" -le 0 ]; then say "skipping $1: budget spent"; echo "{\"mode\": \"$1\", \"error\": \"skipped (budget)\"}" >> "$STEPS_JSON"; return; fi
  say "== step benchmark: $1 (timeout $t s)"
  timeout --kill-after=10 "$t" $PY "$STEP_PY" "$1" > "$OUT/step_$1.out" 2> "$OUT/step_$1.err"
  rc=$?
  if [ $rc -eq 0 ] && tail -n 1 "$OUT/step_$1.out" | grep -q '^{'; then
    tail -n 1 "$OUT/step_$1.out" | tee -a "$STEPS_JSON"
  else
    say "$1 failed (rc $rc); last lines of stderr:"; tail -n 5 "$OUT/step_$1.err"
    echo "{\"mode\": \"$1\", \"error\": \"rc $rc\"}" >> "$STEPS_JSON"
  fi
}

# part 1 and 2
run_cfg fp32 90
run_cfg bf16 75
run_cfg bf16-cl 75
run_cfg ops 90

# part 3: DDP and the whole code path on the device
SMOKE_SETS=(--set stage1.steps=10 --set warmup.steps=20 --set distill.steps=10)
if [ "$DRY" = "1" ]; then  # the tests' tiny slice: the dry run checks the commands, not the smoke chain's speed
  SMOKE_SETS=(--set warmup.steps=4 --set stage1.steps=4 --set distill.steps=4 --set data.synthetic_scale=0.05
              --set data.batch_size=4 --set eval.max_images=8 --set eval.batch_size=8 --set checkpoint_interval=2)
fi
say "== (a) one process on the device: smoke chain (pd+sl)"
DEVICE=cuda; [ "$DRY" = "1" ] && DEVICE=cpu
T=$(cap 75); [ "$T" -le 0 ] && T=1
timeout --kill-after=5 "$T" $PY -m proda.train --variant pd+sl --preset smoke --out "$OUT/ddp_1gpu" \
  --set device=$DEVICE "${SMOKE_SETS[@]}" > "$OUT/ddp_1gpu.out" 2>&1
say "exit $? ; $(tail -n 3 "$OUT/ddp_1gpu.out" | tr '\n' ' ')"

say "== (b) torchrun --nproc-per-node 2, gloo on the CPUs: smoke chain (pd+sl)"
T=$(cap 90); [ "$T" -le 0 ] && T=1
timeout --kill-after=5 "$T" $PY -m torch.distributed.run --standalone --nproc-per-node 2 -m proda.train \
  --variant pd+sl --preset smoke --out "$OUT/ddp_2cpu" --set device=cpu "${SMOKE_SETS[@]}" > "$OUT/ddp_2cpu.out" 2>&1
say "exit $? ; $(tail -n 3 "$OUT/ddp_2cpu.out" | tr '\n' ' ')"

if [ "$DRY" != "1" ]; then
  say "== (c) best effort: 2 gloo ranks sharing cuda:0"
  cat > "$OUT/two_ranks_one_gpu.py" <<'PYEOF'
import os, sys
import torch.distributed as dist
os.environ["LOCAL_RANK"] = "0"  # both ranks on cuda:0 (proda maps LOCAL_RANK → cuda:LOCAL_RANK)
dist.init_process_group("gloo")  # NCCL refuses two ranks on one GPU
from proda.train import main
sys.exit(main(sys.argv[1:]))
PYEOF
  T=$(cap 60); [ "$T" -le 0 ] && T=1
  timeout --kill-after=5 "$T" $PY -m torch.distributed.run --standalone --nproc-per-node 2 "$OUT/two_ranks_one_gpu.py" \
    --variant pd+sl --preset smoke --out "$OUT/ddp_2on1gpu" --set device=cuda "${SMOKE_SETS[@]}" \
    > "$OUT/ddp_2on1gpu.out" 2>&1
  say "exit $? ; $(tail -n 3 "$OUT/ddp_2on1gpu.out" | tr '\n' ' ')"
fi

# part 4a: the batches reach the GPU pinned and convert there to the CPU's bits (skipped by pytest without CUDA)
say "== uint8 batches → CUDA: pinned, same floats as the CPU's x/255"
timeout --kill-after=5 120 $PY -m pytest -q -p no:cacheprovider tests/test_input_pipeline.py -k "on_cuda or device_conversion" \
  > "$OUT/cuda_conversion.out" 2>&1
say "exit $? ; $(tail -n 1 "$OUT/cuda_conversion.out")"

# part 4: the input pipeline at the paper's sizes (benchmarks/input_pipeline.py), 0 and 6 workers per stream
# (12 processes: the g5.12xlarge share of one GPU, on 12 of this machine's cores when it has them),
# against the fastest step measured above and with a fake step of that length (the loop's data wait)
PIPE_ARGS=(--workers 0,6 --images 24 --distinct 4 --batches 6 --steps 10 --batch "$BATCH"
           --data-dir /tmp/proda-pipeline-trees)
if [ "$DRY" = "1" ]; then
  PIPE_ARGS=(--workers 0,1 --images 4 --distinct 2 --batches 1 --steps 2 --batch 2 --full-size 64,128 --crop 32,56
             --gta-size 66,120 --cs-size 64,128 --data-dir "$OUT/pipeline-trees")
fi
read -r GPU_STEP GPU_BATCH GPU_MODE <<< "$($PY - "$STEPS_JSON" <<'PYEOF'
import json, sys
ok = [r for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()) if "step_s" in r]
best = min(ok, key=lambda r: r["step_s"]) if ok else None
print(f"{best['step_s']} {best['batch']} {best['mode']}" if best else "")
PYEOF
)"
[ -n "${GPU_STEP:-}" ] && PIPE_ARGS+=(--gpu-step-s "$GPU_STEP" --gpu-step-batch "$GPU_BATCH"
                                     --gpu-step-source "gpu_check.sh $GPU_MODE step, this run")
PIN=(); [ "$(nproc)" -ge 12 ] && command -v taskset > /dev/null && PIN=(taskset -c 0-11)
T=$(cap 120)
if [ "$T" -le 0 ]; then
  say "skipping the input pipeline: budget spent"
else
  say "== input pipeline (timeout $T s, ${PIN[*]:-all cores}): ${PIPE_ARGS[*]}"
  timeout --kill-after=5 "$T" "${PIN[@]}" $PY benchmarks/input_pipeline.py "${PIPE_ARGS[@]}" \
    > "$OUT/input_pipeline.out" 2>&1
  say "exit $?"; grep -v Warning "$OUT/input_pipeline.out" | tail -n 30
  tail -n 1 "$OUT/input_pipeline.out" | grep '^{' > "$OUT/input_pipeline.json" || rm -f "$OUT/input_pipeline.json"
fi

# torch.compile last, with what is left of the budget (compiling R101 for two input shapes takes minutes)
LEFT=$(( $(left) - 15 )); [ "$DRY" = "1" ] && LEFT=200
if [ "$LEFT" -ge 90 ]; then
  [ "$LEFT" -gt 180 ] && LEFT=180
  run_cfg bf16-cl-compile "$LEFT"
else
  say "skipping torch.compile: $(elapsed) s used of a $BUDGET s budget"
fi

$PY - "$STEPS_JSON" "$OUT/summary.json" <<'PYEOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["mode"]: r for r in rows}
print(f"{'mode':<18} {'img/s':>8} {'step s':>8} {'peak alloc GB':>14} {'warm-up s':>10}")
for m in ("fp32", "bf16", "bf16-cl", "bf16-cl-compile"):
    r = by.get(m)
    if r and "error" not in r:
        print(f"{m:<18} {r['images_per_s']:>8} {r['step_s']:>8} {r.get('peak_alloc_gb', '-'):>14} {r['warmup_s']:>10}")
    elif r:
        print(f"{m:<18} {r['error']}")
summary = {"steps": rows}
ops, fp32 = by.get("ops", {}), by.get("fp32", {})
if "ops_s" in ops and "step_s" in fp32:
    summary["ops_share_of_fp32_step"] = round(ops["ops_s"] / fp32["step_s"], 4)
    print(f"ProDA ops {ops['ops_s']} s per step = {100 * summary['ops_share_of_fp32_step']:.1f}% of the fp32 step; "
          f"loop baseline / the real Stage1's ops on the device: {ops['loop_over_ops']}x")
pipe = os.path.join(os.path.dirname(sys.argv[2]), "input_pipeline.json")
if os.path.isfile(pipe):
    summary["input_pipeline"] = json.load(open(pipe))
json.dump(summary, open(sys.argv[2], "w"), indent=1)
print(json.dumps(summary))
PYEOF
say "done in $(elapsed) s; outputs in $OUT"
