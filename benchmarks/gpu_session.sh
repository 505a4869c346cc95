#!/usr/bin/env bash
# The prepared jobs of one GPU session, as one command within the device budget (~9 minutes):
#   1. the embedded default model trained further on the GPU (recipes/default/gpu.py; the model
#      comes back as a tar split in 15 MB parts);
#   2. the engine's GPU figures (benchmarks/gpu_engine.py): eager, nhwc, compiled and graphs
#      (static-shape decoding as CUDA graphs), with a profile of the compiled step.
#
#   bash benchmarks/gpu_session.sh "$OUT"            # on the GPU machine
#   bash benchmarks/gpu_session.sh /tmp/out --tiny   # a CPU check of this script (a minute)
#
# Everything goes under OUT: session.log (all output), talk/model.tar.* (model folder,
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
  TRAIN=(--minutes 4.0 --batch-size 64 --workers 15 --eval-every 40)
  ENGINE=(--tokens 128)
  STEPS=80; LIMIT=5; ENGINE_LIMIT=240
fi
exec > >(tee -a "$OUT/session.log") 2>&1
date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, torch.version.cuda)"

# 1. Training: the shipped model on the small-talk mix for the whole training budget, one run
#    (two side by side halved each one's steps), at the learning rate and warm-up that worked on
#    the CPU (lr 1.5e-4, 100 warm-up steps: 5,276 steps of 32 gave shapes-vqa +0.05 and the long
#    small-talk answers), with batches of 64 for more steps than the 982 of 256 last time
#    (at this model size the number of steps mattered more than the samples per step).
train() {  # design seed extra-args...
  local design=$1 seed=$2; shift 2
  mkdir -p "$OUT/$design"
  timeout $((LIMIT * 60)) python recipes/default/gpu.py --design "$design" \
    --init src/cheers/default_model --seed "$seed" "${TRAIN[@]}" "$@" \
    --out "$OUT/$design" > "$OUT/$design.log" 2>&1
  echo "$design: exit $?"; tail -n 4 "$OUT/$design.log"
  mv "$OUT/$design.log" "$OUT/$design/train.log"
  tar cf - -C "$OUT/$design" model curve.json train.log | split -b 15M - "$OUT/$design/model.tar."
  rm -rf "$OUT/$design/model" "$OUT/$design/curve.json" "$OUT/$design/train.log"
}
train talk 13 --lr 1.5e-4 --warmup-steps 100
date

# 2. Engine figures, bounded so that the call ends inside its limit.
timeout "$ENGINE_LIMIT" python benchmarks/gpu_engine.py "${ENGINE[@]}" --steps "$STEPS" \
  --repeats 3 --modes eager,nhwc,compiled,graphs --profile compiled --json "$OUT/engine.json"
date
