#!/usr/bin/env bash
# One prepared GPU run of dreamshift (at most ~8 minutes in all), results into $OUT:
#   1. update speed of size S (fp32 eager, bf16 eager, bf16 compiled): s/update, updates/s, cold
#      start-to-first-update, peak GPU memory            -> $OUT/speed.json, $OUT/speed.txt
#   2. learning for the remaining minutes, in parallel on the one GPU:
#      - the pixel check: size S, train ratio 512, dmc:walker_stand (DreamerV3 dmc_vision setting)
#      - the state checks: size1m, train ratio 512, obs=state on cartpole_swingup, walker_stand, reacher_easy,
#        finger_spin (DreamerV3 dmc_proprio tasks)
#      each run is stopped by `timeout` when the budget is spent; its metrics.jsonl/config.json come back in
#      $OUT/runs.tgz, and benchmarks/learning.py's report (tables, PNG) in $OUT/learning-*.{txt,png}
#
# On the GPU machine (see ../shared/gpu/README.md):  bash .device/run.sh bash benchmarks/gpu_check.sh
# On CPU with tiny budgets (a dry run of the script itself):
#   DEVICE=cpu BUDGET=150 SPEED_UPDATES=1 SPEED_VARIANTS=XS:pixels:fp32:off OUT=/tmp/gpu_out \
#     bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dreamshift-gpu-out}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-470}                # seconds for the whole script
SPEED_BUDGET=${SPEED_BUDGET:-170}    # seconds for part 1
SPEED_UPDATES=${SPEED_UPDATES:-30}
SPEED_VARIANTS=${SPEED_VARIANTS:-S:pixels:fp32:off,S:pixels:bf16:off,S:pixels:bf16:on}
PIXEL_SETS=${PIXEL_SETS:-size=S train_ratio=512 precision=bf16}
STATE_SETS=${STATE_SETS:-size=size1m train_ratio=512 obs=state}
STATE_TASKS=${STATE_TASKS:-cartpole_swingup walker_stand reacher_easy finger_spin}
RUNS=${RUNS:-/tmp/dreamshift-gpu-runs}
PY=${PY:-python3}
mkdir -p "$OUT" "$RUNS"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

echo "== 1. update speed ($DEVICE, at most ${SPEED_BUDGET}s)"
timeout "$SPEED_BUDGET" "$PY" benchmarks/update_speed.py --device "$DEVICE" --variants "$SPEED_VARIANTS" \
  --updates "$SPEED_UPDATES" --warmup 3 --json "$OUT/speed.json" 2>&1 | tee "$OUT/speed.txt"

left=$(( BUDGET - $(elapsed) - 40 ))
echo "== 2. learning runs for ${left}s (elapsed $(elapsed)s)"
if [ "$left" -gt 20 ]; then
  pids=()
  # shellcheck disable=SC2086
  timeout "$left" "$PY" -m mbrl.cli train env=dmc:walker_stand $PIXEL_SETS steps=50000 seed=0 device="$DEVICE" \
    threads=2 wandb_mode=disabled progress=false save_every=0 log_every=2000 \
    run_dir="$RUNS/gpu-pixels/dmc_walker_stand-s0" > "$RUNS/train-pixels.log" 2>&1 &
  pids+=($!)
  for task in $STATE_TASKS; do
    # shellcheck disable=SC2086
    timeout "$left" "$PY" -m mbrl.cli train env=dmc:$task $STATE_SETS steps=50000 seed=0 device="$DEVICE" \
      threads=2 wandb_mode=disabled progress=false save_every=0 log_every=2000 \
      run_dir="$RUNS/gpu-state/dmc_$task-s0" > "$RUNS/train-$task.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  tail -n 5 "$RUNS"/train-*.log > "$OUT/train.log" 2>/dev/null
fi

echo "== 3. report (elapsed $(elapsed)s)"
for check in gpu-pixels gpu-state; do
  [ -d "$RUNS/$check" ] || continue
  "$PY" benchmarks/learning.py report "$check" --runs "$RUNS" --out "$OUT/learning-$check.png" \
    > "$OUT/learning-$check.txt" 2>&1
  cat "$OUT/learning-$check.txt"
done
(cd "$RUNS" && tar czf "$OUT/runs.tgz" --exclude=checkpoint --exclude=wandb .)
echo "== done in $(elapsed)s; files in $OUT:"; ls -la "$OUT"
