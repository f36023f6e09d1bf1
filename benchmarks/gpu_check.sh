#!/usr/bin/env bash
# One prepared GPU run of dreamshift (at most ~9 minutes in all), results into $OUT:
#   1. update speed of size S pixels: fp32 eager; bf16 compiled without and with CUDA graphs (cuda_graphs=off/auto),
#      each update's s/update, updates/s, start-to-first-update (the first call cold, the second warm from the
#      inductor cache) and peak GPU memory                                 -> $OUT/speed*.json, $OUT/speed.txt
#   2. seeds as a batch: per-member cost of E=1 and E=4 members, S pixels, bf16 compiled with graphs
#                                                                          -> $OUT/seeds.json, $OUT/speed.txt
#   3. the pixel learning check for the remaining minutes: dmc:walker_stand, size S, train ratio 512, bf16,
#      compiled with CUDA graphs, 4 seeds as one batch (seeds=[0,1,2,3]); stopped by `timeout` when the budget is
#      spent; its metrics come back in $OUT/runs.tgz and benchmarks/learning.py's report in $OUT/learning-*.{txt,png}
#
# On the GPU machine (see ../shared/gpu/README.md):  bash .device/run.sh bash benchmarks/gpu_check.sh
# On CPU with tiny budgets (a dry run of the script itself, tests/test_gpu_check.py):
#   DEVICE=cpu BUDGET=200 SPEED_UPDATES=1 SPEED_ARGS="--batch 2 --length 8 --image-size 32" SPEED_VARIANTS=XS:pixels:fp32:off GRAPH_VARIANTS=XS:pixels:fp32:off \
#     SEED_VARIANT=XS:pixels SEED_MEMBERS=1,2 SEED_UPDATES=1 SEEDS="[0,1]" STEPS=200 \
#     PIXEL_SETS="size=XS image_size=32 batch_size=2 batch_length=8 prefill=50 train_ratio=4" \
#     OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh
set -u
# shellcheck disable=SC2086  # SPEED_ARGS and PIXEL_SETS are word lists
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dreamshift-gpu-out}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-530}                # seconds for the whole script
SPEED_BUDGET=${SPEED_BUDGET:-200}    # seconds for parts 1 and 2
SPEED_UPDATES=${SPEED_UPDATES:-30}
SPEED_ARGS=${SPEED_ARGS:-}           # extra options of update_speed.py and seed_batch.py (the dry run's tiny B x T)
SPEED_VARIANTS=${SPEED_VARIANTS:-S:pixels:fp32:off,S:pixels:bf16:on}
GRAPH_VARIANTS=${GRAPH_VARIANTS:-S:pixels:bf16:on}
SEED_VARIANT=${SEED_VARIANT:-S:pixels}
SEED_MEMBERS=${SEED_MEMBERS:-1,4}
SEED_UPDATES=${SEED_UPDATES:-10}    # timed updates per member count (the CPU dry run: 1)
PIXEL_SETS=${PIXEL_SETS:-size=S train_ratio=512 precision=bf16 compile=on}
SEEDS=${SEEDS:-[0,1,2,3]}
STEPS=${STEPS:-50000}
RUNS=${RUNS:-/tmp/dreamshift-gpu-runs}
THREADS=${THREADS:-2}                # torch CPU threads of the training run (the CPU dry run: 1)
PY=${PY:-python3}
mkdir -p "$OUT" "$RUNS"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
speed_left() { echo $(( SPEED_BUDGET - $(elapsed) )); }

echo "== 1. update speed ($DEVICE, parts 1-2 at most ${SPEED_BUDGET}s)" | tee "$OUT/speed.txt"
timeout "$(speed_left)" "$PY" benchmarks/update_speed.py --device "$DEVICE" --variants "$SPEED_VARIANTS" \
  --updates "$SPEED_UPDATES" --warmup 3 --cuda-graphs off --json "$OUT/speed.json" $SPEED_ARGS 2>&1 \
  | tee -a "$OUT/speed.txt"
for pass in cold warm; do  # the second pass starts from the inductor cache the first one filled
  [ "$(speed_left)" -gt 10 ] || break
  echo "-- CUDA graphs ($pass)" | tee -a "$OUT/speed.txt"
  timeout "$(speed_left)" "$PY" benchmarks/update_speed.py --device "$DEVICE" --variants "$GRAPH_VARIANTS" \
    --updates "$SPEED_UPDATES" --warmup 3 --cuda-graphs auto --sync-debug warn --json "$OUT/speed-graphs-$pass.json" $SPEED_ARGS 2>&1 \
    | tee -a "$OUT/speed.txt"
done

echo "== 2. seeds as a batch (elapsed $(elapsed)s)" | tee -a "$OUT/speed.txt"
if [ "$(speed_left)" -gt 10 ]; then
  timeout "$(speed_left)" "$PY" benchmarks/seed_batch.py --device "$DEVICE" --variants "$SEED_VARIANT" \
    --members "$SEED_MEMBERS" --precision "$([ "$DEVICE" = cuda ] && echo bf16 || echo fp32)" \
    --compile "$([ "$DEVICE" = cuda ] && echo on || echo off)" --cuda-graphs auto --updates "$SEED_UPDATES" --warmup 3 \
    --json "$OUT/seeds.json" $SPEED_ARGS 2>&1 | tee -a "$OUT/speed.txt"
fi

left=$(( BUDGET - $(elapsed) - 40 ))
echo "== 3. pixel learning check, seeds $SEEDS as one batch, for ${left}s (elapsed $(elapsed)s)"
if [ "$left" -gt 20 ]; then
  # shellcheck disable=SC2086
  timeout "$left" "$PY" -m dreamshift train env=dmc:walker_stand $PIXEL_SETS steps="$STEPS" "seeds=$SEEDS" \
    device="$DEVICE" threads="$THREADS" wandb_mode=disabled progress=false save_every=0 log_every=2000 \
    run_dir="$RUNS/gpu-pixels/dmc_walker_stand-seeds" > "$RUNS/train-pixels.log" 2>&1
fi

echo "== 4. report (elapsed $(elapsed)s)"
if [ -d "$RUNS/gpu-pixels" ]; then
  "$PY" benchmarks/learning.py report gpu-pixels --runs "$RUNS" --out "$OUT/learning-gpu-pixels.png" \
    > "$OUT/learning-gpu-pixels.txt" 2>&1
  cat "$OUT/learning-gpu-pixels.txt"
fi
(cd "$RUNS" && tar czf "$OUT/runs.tgz" --exclude=checkpoint --exclude=wandb .)
echo "== done in $(elapsed)s; files in $OUT:"; ls -la "$OUT"
