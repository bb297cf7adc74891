#!/usr/bin/env bash
# The bundled default models' recipe on a CPU (samples from CPU workers instead of the GPU). The published
# weights were made on one GPU by training/make_defaults_gpu.sh; on 2 CPU cores the 96³ configs take many
# hours (a `lite` pretraining step of 8 pairs is tens of seconds).
# The bundled `ixi` went further on the CPU: training/configs/ixi-continue.toml, then ixi-e2e.toml to
# ixi-e2e7.toml in order (each header gives its exact commands; model_cards/ixi.md).
# Usage: bash training/make_defaults.sh [RUNS_DIR]
# Every step's options live in training/configs/*.toml; two single-thread jobs share the 2 cores
# (measured: two 1-thread jobs beat one 2-thread job when anything else runs on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs}
C=training/configs
mkdir -p "$R"

seqinv train pretrain --config $C/seqinv.toml --output "$R/seqinv" --threads 1 > "$R/seqinv.log" 2>&1 &
seqinv train pretrain --config $C/seqaug.toml --output "$R/seqaug" --threads 1 > "$R/seqaug.log" 2>&1 &
wait

seqinv train segment --config $C/ixi.toml --encoder "$R/seqinv" --output "$R/ixi" --threads 1 > "$R/ixi.log" 2>&1 &
{
  seqinv train denoise --config $C/denoise.toml --encoder "$R/seqinv" --output "$R/denoise" --threads 1
  seqinv train segment --config $C/arc.toml --encoder "$R/seqinv" --output "$R/arc" --threads 1
} > "$R/heads.log" 2>&1 &
wait

seqinv evaluate --phantom --model SeqInv="$R/ixi" --output "$R/eval-ixi"
seqinv evaluate --phantom --model SeqInv="$R/denoise" --output "$R/eval-denoise"
seqinv evaluate --phantom --model SeqInv="$R/arc" --output "$R/eval-arc"

for name in ixi denoise arc; do
  seqinv train export "$R/$name" --metrics "$R/eval-$name/summary.csv" --metrics-model SeqInv \
    --output "$R/export/$name"
  python -m training.bundle "$R/export/$name" "$name"
done
for name in seqinv seqaug; do
  seqinv train export "$R/$name" --output "$R/export/$name"
  python -m training.bundle "$R/export/$name" "$name"
done
echo "paste the printed sha256 values into seqinv/models/catalogue.py, one new version per model"
