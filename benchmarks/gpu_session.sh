#!/usr/bin/env bash
# The prepared jobs of one GPU session, as one command within the device budget (~10 minutes):
#   1. the embedded default model trained further on the GPU, two designs side by side
#      (recipes/default/gpu.py; each model comes back as a tar split in 15 MB parts);
#   2. the engine's GPU figures (benchmarks/gpu_engine.py): eager and compiled, int8, offload.
#
#   bash benchmarks/gpu_session.sh "$OUT"            # on the GPU machine
#   bash benchmarks/gpu_session.sh /tmp/out --tiny   # a CPU check of this script (minutes)
#
# Everything goes under OUT: session.log (all output), <design>/model.tar.* (model folder,
# curve.json and training log inside), engine.json (int8 and offload: their lines in session.log).
set -u
OUT=${1:?usage: gpu_session.sh OUT [--tiny]}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if [ "${2:-}" = --tiny ]; then
  TRAIN=(--minutes 0.1 --batch-size 8 --workers 1 --val-size 8 --eval-every 3 --device cpu)
  ENGINE=(--tiny --device cpu --tokens 8 --repeats 1)
  STEPS=2; SHORT=2; LIMIT=1
else
  TRAIN=(--minutes 3.0 --batch-size 256 --workers 7 --eval-every 40)
  ENGINE=(--tokens 128)
  STEPS=80; SHORT=4; LIMIT=4
fi
exec > >(tee -a "$OUT/session.log") 2>&1
date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, torch.version.cuda)"

# 1. Training: the shipped model continued with smaller batches than last session's 1,024
#    (joint mix), and the same on the small-talk mix; seeds differ so the data differ.
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
train joint 11 --lr 5e-4 --time-shift 0.3 &
joint=$!
train talk 12 &
talk=$!
wait "$joint" "$talk"  # (a bare wait would also wait for the tee above, forever)
date

# 2. Engine figures, each invocation bounded so a slow one cannot starve the next.
timeout $((LIMIT * 60)) python benchmarks/gpu_engine.py "${ENGINE[@]}" --steps "$STEPS" \
  --repeats 2 --modes eager,compiled --json "$OUT/engine.json"
timeout $((LIMIT * 20)) python benchmarks/gpu_engine.py "${ENGINE[@]}" --steps "$STEPS" \
  --repeats 1 --modes int8
timeout $((LIMIT * 20)) python benchmarks/gpu_engine.py "${ENGINE[@]}" --steps "$SHORT" \
  --repeats 1 --modes offload
date
