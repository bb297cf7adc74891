#!/usr/bin/env bash
# The GPU phases of the published models' recipes (training/recipes/), every job of a phase side by side
# on one CUDA GPU, plus the Base/SeqAug/SeqInv head comparison of docs/evaluation.md. The later (CPU)
# stages of ixi and arc: `seqinv train replay training/recipes/ixi.toml` (it keeps finished stages).
#   bash training/make_defaults_gpu.sh pretrain RUNS_DIR MINUTES   # base, seqaug, seqinv encoders side by side
#   bash training/make_defaults_gpu.sh heads RUNS_DIR MINUTES      # 12 heads side by side on those encoders
# Every run's options are a recipe stage (RECIPE.toml#STAGE) plus the GPU flags below. Samples are generated on the GPU
# (--data-device cuda): CPU workers made 96³ pairs at 0.7 s each per core, slower than the GPU trains.
# The number of steps is what MINUTES allows: a 20-step calibration of all runs side by side measures the
# step time first. The chosen steps are printed and recorded in each model's config.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=$1
R=$2
MINUTES=$3
C=training/recipes
GPU=(--device cuda --data-device cuda --workers 0 --threads "${THREADS:-1}")
mkdir -p "$R/logs"

steps_for() {  # steps that fit MINUTES, from a calibration run's mean step time, rounded down to 50
  python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['training']['metrics']['step_s']; \
print(max(50, int(float(sys.argv[2]) * 60 / s) // 50 * 50))" "$1/config.json" "$MINUTES"
}

build_phantoms() {  # the training pools (16 plain, 16 with lesions), cached once, 16 at a time
  python3 - <<'PY'
from concurrent.futures import ProcessPoolExecutor
from training.phantom_cache import default_cache_dir, load_phantom, training_seeds
jobs = [(s, lesion) for lesion in (False, True) for s in training_seeds(16)]
with ProcessPoolExecutor(16) as pool:
    futures = [pool.submit(load_phantom, s, lesion=l, cache_dir=default_cache_dir()) for s, l in jobs]
    [f.result() for f in futures]
print("phantoms ready:", len(jobs))
PY
}

run_all() {  # run_all NAME... : each "name|command args" in JOBS, side by side; fail if any fails
  local pids=() name
  for job in "${JOBS[@]}"; do
    name=${job%%|*}
    eval "${job#*|} $*" >"$R/logs/$name$SUFFIX.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return $failed
}

if [ "$PHASE" = pretrain ]; then
  build_phantoms
  JOBS=()
  for s in base seqaug seqinv; do
    JOBS+=("$s|seqinv train pretrain --config $C/$s.toml#$s ${GPU[*]} --output \$OUT_DIR/$s")
  done
elif [ "$PHASE" = heads ]; then
  JOBS=()
  for e in base seqaug seqinv; do
    for f in 1 10 100; do
      JOBS+=("ixi-$e-$f|seqinv train segment --config $C/ixi.toml#gpu --encoder $R/$e --label-fraction $f ${GPU[*]} --output \$OUT_DIR/ixi-$e-$f")
    done
    JOBS+=("denoise-$e|seqinv train denoise-head --config $C/denoise.toml#denoise --encoder $R/$e ${GPU[*]} --output \$OUT_DIR/denoise-$e")
  done
else
  echo "usage: $0 pretrain|heads RUNS_DIR MINUTES" >&2
  exit 2
fi

# calibration: every run side by side for 20 steps
OUT_DIR=$R/calibrate SUFFIX=-calibrate run_all --steps 20 --checkpoint-every 1000
declare -A STEPS
for job in "${JOBS[@]}"; do
  name=${job%%|*}
  STEPS[$name]=$(steps_for "$R/calibrate/$name")
  echo "$name: ${STEPS[$name]} steps"
done
# the real runs, each with its own step count
ALL=("${JOBS[@]}")
pids=()
for job in "${ALL[@]}"; do
  name=${job%%|*}
  JOBS=("$job")
  OUT_DIR=$R SUFFIX= run_all --steps "${STEPS[$name]}" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
echo "phase $PHASE done (failed=$failed)"
exit $failed
