#!/usr/bin/env bash
# Reproduce the embedded default model (lmdm_live/assets/default.lmdm.safetensors) from nothing:
# render the data, train the autoencoder, encode, train stage 1 and ARC-Forcing, evaluate, ship.
# Every stage resumes where it stopped, so the script can be stopped and run again at any time.
#   RUNS=runs bash scripts/train_default.sh          (CPU; set DEVICE=cuda on a GPU)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
RUNS="${RUNS:-runs}"
DEVICE="${DEVICE:-cpu}"
L=.venv/bin/lmdm-live

$L train data --out "$RUNS/data" --hours 1.5 --seconds 20 --sample-rate 16000 --hop 512
$L train ae --data "$RUNS/data" --out "$RUNS/ae" --steps 700 --batch 6 --crop 8192 --lr 5e-4 \
    --channels 32 --latent-dim 32 --strides 4,4,4,8
$L train latents --data "$RUNS/data" --vae "$RUNS/ae/vae.safetensors" --out "$RUNS/lat.safetensors"
$L train stage1 --data "$RUNS/lat.safetensors" --vae "$RUNS/lat.vae.safetensors" --model tiny \
    --mode causal --context 48 --block 16 --out "$RUNS/stage1" --steps "${STAGE1_STEPS:-11800}" \
    --batch 8 --lr 4e-4 --save-every 50 --device "$DEVICE"
$L train arc --data "$RUNS/lat.safetensors" --model "$RUNS/stage1/model.safetensors" --out "$RUNS/arc" \
    --steps "${ARC_STEPS:-60}" --batch 4 --rollout 3 --sampler-steps 4 --lr 1e-5 --save-every 10 \
    --device "$DEVICE"
# the decoder trains on with the encoder frozen (the DiT's latents stay valid); this can run beside stage 1
$L train decoder --model "$RUNS/arc/model.safetensors" --data "$RUNS/data" --out "$RUNS/decoder" \
    --steps "${DECODER_STEPS:-4000}" --batch 8 --lr 3e-4 --save-every 50
# the same decoder into the stage-1 model, the no-ARC-Forcing baseline of the evaluation
$L train decoder --model "$RUNS/stage1/model.safetensors" --data "$RUNS/data" --out "$RUNS/decoder" \
    --steps "${DECODER_STEPS:-4000}" --save-as "$RUNS/stage1_decoder.safetensors"
# more held-out renders for the evaluation classifier (the generator never sees them); it also learns them
# as they sound through the shipped autoencoder
$L train data --out "$RUNS/data" --hours 2.5 --split valid
$L eval classifier --data "$RUNS/data" --out "$RUNS/clf" --steps 800 --save-every 50 \
    --codec "$RUNS/decoder/model.safetensors"
$L eval model --model "$RUNS/decoder/model.safetensors" --compare "$RUNS/stage1_decoder.safetensors" \
    --label "ARC-Forcing" --compare-label "stage 1 only" --classifier "$RUNS/clf" --data "$RUNS/data" \
    --out "$RUNS/eval_adherence" --seconds 30 --window 10 --max-prompts 20 --transitions 10 \
    --transition-seconds 24
$L eval model --model "$RUNS/decoder/model.safetensors" --compare "$RUNS/stage1_decoder.safetensors" \
    --label "ARC-Forcing" --compare-label "stage 1 only" --classifier "$RUNS/clf" --data "$RUNS/data" \
    --out "$RUNS/eval_drift" --seconds 120 --window 10 --max-prompts 4 --transitions 0
# what the autoencoder keeps of the test leads' pitch and the mixes' tempo: the ceiling of those bars
$L eval codec --model "$RUNS/decoder/model.safetensors" --data "$RUNS/data" --out "$RUNS/codec.json"
mkdir -p lmdm_live/assets/classifier
cp "$RUNS/decoder/model.safetensors" lmdm_live/assets/default.lmdm.safetensors
cp "$RUNS/clf/classifier.safetensors" "$RUNS/clf/classifier.json" lmdm_live/assets/classifier/
