#!/usr/bin/env bash
# The prepared jobs of one GPU session, as one command within the device budget (~9 minutes):
#   1. three training runs of the embedded model's size side by side (recipes/default/gpu.py; each
#      model comes back as a tar split in 15 MB parts);
#   2. the engine's GPU figures (benchmarks/gpu_engine.py): eager, nhwc, compiled and graphs
#      (static-shape decoding as CUDA graphs), with a profile of the compiled step.
#
#   bash benchmarks/gpu_session.sh "$OUT"            # on the GPU machine
#   bash benchmarks/gpu_session.sh /tmp/out --tiny   # a CPU check of this script (a minute)
#
# Everything goes under OUT: session.log (all output), <run>/model.tar.* (model folder,
# curve.json and training log inside), engine.json. The session of 2026-11-26 ran the version
# of commit e60b750 (two training runs side by side; int8 and offload figures).
set -u
OUT=${1:?usage: gpu_session.sh OUT [--tiny]}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if [ "${2:-}" = --tiny ]; then
  TRAIN=(--minutes 0.1 --batch-size 8 --workers 1 --val-size 8 --eval-every 3 --device cpu)
  ENGINE=(--tiny --device cpu --tokens 8)
  STEPS=2; LIMIT=1; ENGINE_LIMIT=240
else
  TRAIN=(--minutes 4.5 --batch-size 256 --workers 5 --eval-every 30)
  ENGINE=(--tokens 128)
  STEPS=80; LIMIT=6; ENGINE_LIMIT=170
fi
exec > >(tee -a "$OUT/session.log") 2>&1
date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, torch.version.cuda)"

# 1. Training (docs/training.md, "Generation that listens"): three runs side by side (one
#    process was measured as fast as two, the limit being each process's host side), each
#    asking whether feeding the noisy canvas's latents to the ViT (instead of the paper's
#    decoder projector → pixels) makes generation follow the prompt: the shipped model
#    continued as it is and switched to latents (every tensor but the ViT's patch embedding),
#    and the latent path from scratch.
train() {  # name extra-args...
  local name=$1; shift
  mkdir -p "$OUT/$name"
  timeout $((LIMIT * 60)) python recipes/default/gpu.py --design joint --seed 21 "${TRAIN[@]}" \
    "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "$name: exit $?"; tail -n 4 "$OUT/$name.log"
  mv "$OUT/$name.log" "$OUT/$name/train.log"
  tar cf - -C "$OUT/$name" model curve.json train.log | split -b 15M - "$OUT/$name/model.tar."
  rm -rf "$OUT/$name/model" "$OUT/$name/curve.json" "$OUT/$name/train.log"
}
runs=()
train latents_shipped --set vit_input=latents --init src/cheers/default_model --lr 5e-4 &
runs+=($!)
train latents_scratch --set vit_input=latents &
runs+=($!)
train pixels_shipped --init src/cheers/default_model --lr 5e-4 &
runs+=($!)
wait "${runs[@]}"  # a bare wait would also wait for the tee of the log
date

# 2. Engine figures, bounded so that the call ends inside its limit.
timeout "$ENGINE_LIMIT" python benchmarks/gpu_engine.py "${ENGINE[@]}" --steps "$STEPS" \
  --repeats 3 --modes eager,nhwc,compiled,graphs --profile compiled --json "$OUT/engine.json"
date
