#!/usr/bin/env bash
# Issue 13 ("One GPU, many runs") on one GPU, in one command that ends within ~9 minutes (GPU_STUDY_BUDGET):
#   1. packing: N = 1 2 4 8 ShuffleNetV2 x0.5 `cifarbench train` processes side by side on the GPU
#      (benchmarks/packing.py): aggregate images/s against one run, memory used against study/memory.py's estimate
#   2. `cifarbench study --preset modern --epochs-scale S --jobs J`: sweep, finals over 3 seeds, test, report,
#      J runs at a time on the one GPU (the memory check on real CUDA)
#   3. `cifarbench study --preset paper --epochs-scale 0.05 --jobs J`: the paper's protocol with every epoch a full
#      one at 224 px, so the report's "Time per epoch" prices its whole 420 epochs from measurement
# Each stage runs in its own process group under a time limit (SIGINT, which makes every run checkpoint and stop,
# then SIGKILL 30 s later), so one that runs long leaves its finished runs and the next stage still runs;
# `cifarbench report` then rebuilds each study's report from whatever finished.
# Results in $OUT (the device tool's folder) or bench-out/gpu-study/: summary.json (per stage: status and wall
# time; per study and model: test accuracy, seconds per epoch; the packing table), packing.json, gpu_study.log,
# and studies.tar.gz (both study folders: report.md/.html, study.json, every run's config.json, metrics.csv and
# results.json; no checkpoints). At most 8 files, 2 folders deep: what the device tool brings back.
#
# Before (here):  bash benchmarks/gpu_study.sh prepare   gpu-data/: the 18 MB CIFAR-10 JPEG archive and cifar10.py,
#                 and gpu-data/wheels/: optuna and the dependencies the GPU image lacks (about 24 MB; carry gpu-data)
# Run (device):   bash benchmarks/gpu_study.sh           python3 with torch 2.11 there, PYTHONPATH=src, no network
# Dry (here):     GPU_STUDY_DRY=1 bash benchmarks/gpu_study.sh   the same path on the CPU: shapes, tiny runs
# Knobs: GPU_STUDY_BUDGET (seconds, default 540), GPU_STUDY_JOBS (3), GPU_STUDY_MODERN_SCALE (0.1: sweep 15 -> 2,
#        final 50 -> 5 epochs), GPU_STUDY_PAPER_SCALE (0.05: sweep 30 -> 2, final 50 -> 3), GPU_STUDY_COUNTS
#        ("1 2 4 8"), PYTHON
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = prepare ]; then
  # Here, with the registry reachable: what the bare GPU machine needs beside the working tree.
  set -e
  mkdir -p gpu-data/wheels
  cp -f ../shared/datasets/cifar10-jpeg.tar.xz ../shared/datasets/cifar10.py gpu-data/
  chmod u+w gpu-data/cifar10-jpeg.tar.xz gpu-data/cifar10.py
  # The versions this project is tested with; the GPU image has numpy, PyYAML, tqdm, packaging, MarkupSafe and
  # typing-extensions already (.library/device/KINDS.md), so only these travel.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d gpu-data/wheels optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3 colorlog==6.12.0
  du -sh gpu-data
  exit 0
fi

export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
DRY=${GPU_STUDY_DRY:-0}
RES=${OUT:-bench-out/gpu-study}
WORK=bench-out/gpu-study-$(date +%Y%m%d-%H%M%S)   # fresh folders: a study found there would resume instead
mkdir -p "$RES" "$WORK"
LOG="$RES/gpu_study.log"
: > "$LOG"
T0=$SECONDS
# The dry run's limits are 4x the GPU's: the same stages on 2 shared CPU cores, whose speed is not the point
if [ "$DRY" = 1 ]; then SLOW=4; else SLOW=1; fi
END=$((SECONDS + ${GPU_STUDY_BUDGET:-$((540 * SLOW))}))
RESERVE=$((60 * SLOW))  # for a stopped stage's 30 s of grace, the report rebuilds, the archive, summary.json
JOBS=${GPU_STUDY_JOBS:-3}
MODERN_SCALE=${GPU_STUDY_MODERN_SCALE:-0.1}
PAPER_SCALE=${GPU_STUDY_PAPER_SCALE:-0.05}

if [ "$DRY" = 1 ]; then
  DEV=cpu; JOBS=2
  DATA_ARGS=(--dataset shapes)
  # tiny runs at 16 px; every one of these flags is listed in the report as a deviation from the preset
  TINY=(--max-epochs 1 --override resolution=16 --override train_subset=128 --override val_size=100
        --override batch_size=32 --override eval_batch_size=100 --override amp=false)
  PACK=(--dry)
else
  DEV=cuda
  DATA_ARGS=(--data-dir gpu-data/data)
  TINY=()
  # 20,000 images x 3 epochs per run; a per-N limit of 45 s keeps the four counts inside the stage's limit
  PACK=(--device cuda --data-dir gpu-data/data --counts ${GPU_STUDY_COUNTS:-1 2 4 8} --timeout 45)
fi

declare -A STATUS
step() {  # step NAME SECONDS CMD...: CMD in its own process group, for at most SECONDS (and what the budget has left)
  local name=$1 want=$(($2 * SLOW)); shift 2
  local left=$((END - RESERVE - SECONDS))
  if [ "$left" -lt 20 ]; then echo "== $name: skipped, budget spent" | tee -a "$LOG"; STATUS[$name]="skipped"; return; fi
  [ "$want" -gt "$left" ] && want=$left
  echo "== $name (limit ${want}s, at $((SECONDS - T0)) s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  # setsid: the study's worker processes share the group, so the time limit's SIGINT reaches every run
  # (`timeout` signals its child alone, and the workers of an interrupted study would train on). trap - INT:
  # bash starts background commands with SIGINT ignored, and Python then never raises KeyboardInterrupt.
  ( trap - INT; exec setsid "$@" ) >>"$LOG" 2>&1 &
  local pid=$!
  ( trap 'kill $s 2>/dev/null; exit 0' TERM
    sleep "$want" & s=$!; wait $s
    echo "== $name: time limit, SIGINT to the group" >>"$LOG"; kill -INT -- "-$pid" 2>/dev/null
    sleep 30 & s=$!; wait $s
    kill -KILL -- "-$pid" 2>/dev/null ) >/dev/null 2>&1 &
  local watch=$!
  wait "$pid"
  local rc=$?
  kill "$watch" 2>/dev/null; wait "$watch" 2>/dev/null
  kill -KILL -- "-$pid" 2>/dev/null   # nothing of the stage may outlive it and slow the next one
  STATUS[$name]="rc=$rc, $((SECONDS - t0)) s"
  echo "== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
}

# 0. environment; optuna (the sweep's storage) from the carried wheels when the image lacks it
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, torchvision, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } 2>&1 | tee -a "$LOG"
if ! "$PY" -c "import optuna" 2>/dev/null; then
  if ls gpu-data/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-study-site gpu-data/wheels/*.whl >>"$LOG" 2>&1
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu-study-site"
  fi
  "$PY" -c "import optuna; print('optuna', optuna.__version__)" 2>&1 | tee -a "$LOG" || {
    echo "error: no optuna and no gpu-data/wheels; run: bash benchmarks/gpu_study.sh prepare, and carry gpu-data" | tee -a "$LOG"; exit 2; }
fi

# 1. data: CIFAR-10 rebuilt from the JPEG archive (cifar10.py reads the archive beside it; does nothing if done)
if [ "$DRY" != 1 ]; then
  if [ ! -f gpu-data/data/cifar-10-batches-py/test_batch ]; then
    [ -f gpu-data/cifar10.py ] && [ -f gpu-data/cifar10-jpeg.tar.xz ] || {
      echo "error: gpu-data/ lacks cifar10.py or cifar10-jpeg.tar.xz; run: bash benchmarks/gpu_study.sh prepare" | tee -a "$LOG"; exit 2; }
    step data 90 "$PY" gpu-data/cifar10.py gpu-data/data
  fi
fi

# 2. N runs side by side on one device
step packing 110 "$PY" benchmarks/packing.py "${PACK[@]}" --output "$WORK/packing" --json "$RES/packing.json"

# 3. the modern preset, scaled to fit, J runs at a time
step modern 200 "$PY" -m cifarbench study --preset modern --epochs-scale "$MODERN_SCALE" --jobs "$JOBS" --device "$DEV" \
  "${DATA_ARGS[@]}" "${TINY[@]}" -o "$WORK/modern"
# 4. the paper preset at 5% of its epochs: the protocol's shape at 224 px, and its seconds per epoch
step paper 230 "$PY" -m cifarbench study --preset paper --epochs-scale "$PAPER_SCALE" --jobs "$JOBS" --device "$DEV" \
  "${DATA_ARGS[@]}" "${TINY[@]}" -o "$WORK/paper"

# 5. reports from whatever finished, the archive, summary.json
for s in modern paper; do
  [ -f "$WORK/$s/study.json" ] && "$PY" -m cifarbench -q report "$WORK/$s" >>"$LOG" 2>&1
done
STUDIES=$(cd "$WORK" && ls -d modern paper 2>/dev/null)
if [ -n "$STUDIES" ]; then
  tar -czf "$RES/studies.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='*.tmp' $STUDIES
  if [ "$(stat -c %s "$RES/studies.tar.gz")" -gt $((15 * 2**20)) ]; then  # the device tool's 16 MiB per file
    tar -czf "$RES/studies.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='*.tmp' --exclude='*.png' --exclude='report.html' $STUDIES
  fi
fi
STATUS_LINES=$(for k in "${!STATUS[@]}"; do printf '%s\t%s\n' "$k" "${STATUS[$k]}"; done)
STATUS_LINES="$STATUS_LINES" WALL=$((SECONDS - T0)) "$PY" - "$RES" "$WORK" <<'EOF'
import json, os, sys
from pathlib import Path

from cifarbench.report.load import load_study
from cifarbench.report.protocol import epoch_costs

res, work = Path(sys.argv[1]), Path(sys.argv[2])
out = {"wall_s": int(os.environ["WALL"]),
       "steps": dict(line.split("\t", 1) for line in os.environ["STATUS_LINES"].splitlines() if line), "studies": {}}
for name in ("modern", "paper"):
    try:
        study = load_study(work / name)
    except Exception as e:  # not started, or stopped before it wrote study.json
        out["studies"][name] = {"missing": f"{type(e).__name__}: {e}"}
        continue
    info = study.info
    out["studies"][name] = {
        "stages": info.get("stages"), "deviations": info.get("deviations"), "memory": info.get("memory"),
        "device": (info.get("env") or {}).get("device_name"), "jobs": (info.get("env") or {}).get("jobs"),
        "models": {m: {"winner": d.get("winner"), "test": d.get("test")} for m, d in info.get("models", {}).items()},
        "seconds_per_epoch": epoch_costs(study)}
try:
    pack = json.loads((res / "packing.json").read_text())
    out["packing"] = [{k: r.get(k) for k in ("n", "sum_images_per_sec", "speedup", "wall_images_per_sec", "used_bytes",
                                             "estimate_bytes", "refused", "errors")} for r in pack["results"]]
except (OSError, ValueError, KeyError) as e:
    out["packing"] = {"missing": f"{type(e).__name__}: {e}"}
(res / "summary.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
print(json.dumps({"wall_s": out["wall_s"], "steps": out["steps"],
                  "test": {s: {m: (v.get("test") or {}).get("mean") for m, v in d.get("models", {}).items()}
                           for s, d in out["studies"].items()},
                  "packing": out["packing"]}, indent=1, default=str))
EOF
echo "results in $RES (study folders in $WORK)" | tee -a "$LOG"
