#!/usr/bin/env bash
# The GPU check of issue #17, as one short call on a GPU machine (368 s of an H200 with 16 cores, 2026-12-04):
#   1. the loader alone at 224 px on the 650 Places365 JPEGs: host decode (torchvision) vs the device path's
#      worker half, in process and with 1 / 4 / 8 / 15 loader workers;
#   2. ResNet-18 MoCo-v2 at 224 px, batch 256: model-only vs the whole pipeline (decode, crops, colour, step,
#      Lightning loop) for data.decode host and device, trainer.compile off and on: the pipeline's share;
#   3. the same two on the same scenes at ImageNet's size (longer side 500 px, made here), host path only;
#   4. with SWEEP_EPOCHS > 0 (default 0: 10 epochs were measured on 2026-12-04, and the whole 200-epoch schedule
#      is more than one lease), one gpu-small scale-sweep encoder (configs/gpu-small/scale-sweep.yaml, arm
#      poisons-500: 50,000 demo-world images, full ResNet-18 at 32 px) and its clean twin, with CA / BA / ASR.
# Each stage appends JSON lines to $OUT/gpu-check.jsonl and runs under its own time limit, so a stage that
# overruns loses only itself. Prepare once where you work: bash benchmarks/gpu/prepare.sh (wheels + JPEGs in
# .gpu/), then there, from the repository root, with .gpu carried:  bash benchmarks/gpu/check.sh [SECONDS]
# CHECK_SMOKE=1 runs every stage at toy sizes on a CPU (a test of this script, not a measurement).
set -uo pipefail
budget=${1:-540}
start=$(date +%s)
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
log=$out/gpu-check.jsonl
: > "$log"
smoke=${CHECK_SMOKE:-0}
left() { echo $(( budget - ($(date +%s) - start) )); }
stage() {  # stage NAME SECONDS COMMAND...: run with a limit, never more than what is left of the budget
  local name=$1 limit=$2; shift 2
  local room; room=$(left)
  (( limit > room )) && limit=$room
  if (( limit < 20 )); then echo "{\"stage\": \"$name\", \"skipped\": \"budget spent\"}" | tee -a "$log"; return; fi
  echo "== $name (up to ${limit}s)"
  local t0; t0=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.log" | grep '^{' >> "$log"
  local rc=${PIPESTATUS[0]}
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" | tee -a "$log"
  tail -n 5 "$out/$name.log"
}

if [ -d .gpu/whl ] && ! python3 -c "import pydantic, lightly" 2>/dev/null; then  # the GPU image lacks them
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ce-site \
    .gpu/whl/*.whl || { echo "error: installing .gpu/whl failed" >&2; exit 1; }
  site=/tmp/ce-site
else
  site=  # already importable (the development machine, CHECK_SMOKE)
fi
export PYTHONPATH=$PWD/src${site:+:$site}${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
places=${CHECK_DATA:-.gpu/places}
places_500=/tmp/ce-places-500  # made here from $places (benchmarks/gpu/imagenet_size.py), not carried
rm -rf "$places_500"
python3 benchmarks/gpu/imagenet_size.py "$places" "$places_500" || echo "warning: no ImageNet-size copies" >&2
cores=$(nproc)
python3 - <<'PY' | tee -a "$log"
import json, os, torch, torchvision, lightning, lightly, corruptencoder
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(json.dumps({"stage": "environment", "gpu": gpu, "cores": os.cpu_count(), "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "lightning": lightning.__version__,
                  "lightly": lightly.__version__, "corruptencoder": corruptencoder.__version__,
                  "cuda": torch.version.cuda}))
PY

if [ "$smoke" = 1 ]; then
  images=64; counts=(1); steps=2; batch=16; backbone=small_cnn; compile=(0); epochs=1
  sweep_set=(--set world.n_pretrain=400
    --set world.n_train_per_class=10 --set world.n_test_per_class=10 --set pretrain.backbone.width=0.25
    --set pretrain.trainer.accelerator=cpu)
else
  images=3000; counts=(1 4 8 $(( cores - 1 ))); steps=40; batch=256; backbone=resnet18; compile=(0 1)
  epochs=${SWEEP_EPOCHS:-0}; sweep_set=()
fi

stage loader-224 120 python3 benchmarks/pretrain_throughput.py --loader-only --data "$places" --image-size 224 \
  --decoders auto bytes device --worker-counts "${counts[@]}" --images $images --threads "$cores"
stage pipeline-224 240 python3 benchmarks/pretrain_throughput.py --data "$places" --image-size 224 \
  --backbones $backbone --methods moco --batch $batch --steps $steps --decode host device --compile "${compile[@]}" \
  --threads "$cores"
if [ -d "$places_500" ]; then  # the same scenes at ImageNet's size (made above): the host path, the default
  stage loader-224-imagenet-size 60 python3 benchmarks/pretrain_throughput.py --loader-only --data "$places_500" \
    --image-size 224 --decoders auto --worker-counts "${counts[@]}" --images $images --threads "$cores"
  stage pipeline-224-imagenet-size 150 python3 benchmarks/pretrain_throughput.py --data "$places_500" \
    --image-size 224 --backbones $backbone --methods moco --batch $batch --steps $steps --decode host \
    --compile "${compile[@]}" --threads "$cores"
fi
rm -rf /tmp/ce-sweep
if (( epochs > 0 )); then
  stage scale-sweep-encoder 600 python3 -m corruptencoder run configs/gpu-small/scale-sweep.yaml --quiet \
    --out /tmp/ce-sweep --arms poisons-500 --set defaults.epochs=$epochs --set evaluation.checkpoints_every=$epochs \
    "${sweep_set[@]}"
fi
if [ -f /tmp/ce-sweep/results.json ]; then
  cp /tmp/ce-sweep/results.json "$out/scale-sweep-results.json"
  cp /tmp/ce-sweep/report.md "$out/scale-sweep-report.md"
  python3 - <<'PY' | tee -a "$log"
import json
r = json.load(open("/tmp/ce-sweep/results.json"))
for row in r["rows"]:
    if row.get("epoch") == "final":
        print(json.dumps({"stage": "scale-sweep-encoder", "arm": row["arm"], "epochs": row.get("epochs_trained"),
                          "ca": row["ca"], "ba": row["ba"], "asr": row["asr"], "no_attack_asr": row["no_attack_asr"],
                          "pretrain_seconds": row.get("pretrain_seconds"), "img_s": row.get("pretrain_img_s"),
                          "peak_gpu_mb": row.get("pretrain_peak_gpu_mb")}))
PY
fi
echo "done in $(( $(date +%s) - start ))s; results: $log"
