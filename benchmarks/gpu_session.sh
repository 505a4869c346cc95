#!/usr/bin/env bash
# The prepared jobs of one GPU session, as one command within the device budget (~9 minutes):
#   1. two training runs of the embedded model's size side by side (recipes/default/gpu.py; each
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
  TRAIN=(--minutes 4.5 --batch-size 256 --workers 7 --eval-every 30)
  ENGINE=(--tokens 128)
  STEPS=80; LIMIT=6; ENGINE_LIMIT=170
fi
exec > >(tee -a "$OUT/session.log") 2>&1
date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, torch.version.cuda)"

# 1. Training (docs/training.md, "Generation that listens"; docs/default_model.md, "Version 3"),
#    two runs side by side (one process was measured as fast as two):
#    - the shipped model (version 3, latents into the ViT) continued on the joint mix;
#    - the open question of docs/training.md §7: drawings alone first, then the full mix
#      (--design draw_first), from scratch on the paper's pixel path, judged by its prompt
#      effect and answers against the pixels_shipped / latents_scratch curves of
#      docs/results/gpu/ (on CPU, understanding mixed in from the start kept the drawings at
#      chance on both paths; drawings alone listened on both).
#    The session of 2026-12-04 ran three comparison runs here (commit 3fd6b38).
train() {  # name extra-args...
  local name=$1; shift
  mkdir -p "$OUT/$name"
  timeout $((LIMIT * 60)) python recipes/default/gpu.py --design joint "${TRAIN[@]}" \
    "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "$name: exit $?"; tail -n 4 "$OUT/$name.log"
  mv "$OUT/$name.log" "$OUT/$name/train.log"
  tar cf - -C "$OUT/$name" model curve.json train.log | split -b 15M - "$OUT/$name/model.tar."
  rm -rf "$OUT/$name/model" "$OUT/$name/curve.json" "$OUT/$name/train.log"
}
runs=()
train v3_more --init src/cheers/default_model --seed 23 --lr 7e-4 --warmup-steps 50 &
runs+=($!)
train pixels_draw_first --design draw_first --seed 24 &
runs+=($!)
wait "${runs[@]}"  # a bare wait would also wait for the tee of the log
date

# 2. Engine figures, bounded so that the call ends inside its limit.
timeout "$ENGINE_LIMIT" python benchmarks/gpu_engine.py "${ENGINE[@]}" --steps "$STEPS" \
  --repeats 3 --modes eager,nhwc,compiled,graphs --profile compiled --json "$OUT/engine.json"
date
