#!/usr/bin/env bash
# Reproduce the codec bake-off (docs/codec.md): render 10 h of 44.1 kHz data, train the two neural
# candidates on the same data for the same CPU time, and measure every candidate with `eval codec`.
# Every stage resumes where it stopped, so the script can be stopped and run again at any time.
#   RUNS=runs/codec bash scripts/train_codec.sh          (MINUTES=10: CPU minutes per candidate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
RUNS="${RUNS:-runs/codec}"
MINUTES="${MINUTES:-10}"
L=.venv/bin/lmdm-live
export OMP_NUM_THREADS=1

# 3 h of solo lines on every GM lead family, 7 h of the style cycle (two seeds), token hop 2048
$L train data --kind solo --out "$RUNS/solo" --hours 3 --seconds 20 --sample-rate 44100 --hop 2048
$L train data --out "$RUNS/styles" --hours 3.5 --seconds 20 --sample-rate 44100 --hop 2048 --seed 0
$L train data --out "$RUNS/styles2" --hours 3.5 --seconds 20 --sample-rate 44100 --hop 2048 --seed 1
DATA=("$RUNS/solo" "$RUNS/styles" "$RUNS/styles2")

# the neural candidates: same data, same CPU-time budget (the log-mel + Griffin-Lim one needs no training)
$L train codec --kind vocoder --data "${DATA[@]}" --out "$RUNS/vocoder" --minutes "$MINUTES"
$L train codec --kind ae --data "${DATA[@]}" --out "$RUNS/ae" --minutes "$MINUTES"

# the bake-off on the test split of the style renders (lead stems and mixes), plus the melody check
for c in lmdm_live/assets/codec.safetensors "$RUNS/vocoder/codec.safetensors" "$RUNS/ae/codec.safetensors" \
    lmdm_live/assets/default.lmdm.safetensors; do
    name="$(basename "$(dirname "$c")")-$(basename "$c" .safetensors)"
    [[ -f "$RUNS/report-$name.json" ]] || $L eval codec --model "$c" --data "$RUNS/styles" --out "$RUNS/report-$name.json"
done
