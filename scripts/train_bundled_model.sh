#!/usr/bin/env bash
# Train the simulator VLA meant to become the bundled model: simulator expert episodes
# (purple objects kept out, DART-style action noise) + simulator VQA (purple included),
# co-fine-tuned from scratch on the CPU.  With ROBOT_ONLY=1 it trains the robot-only baseline of
# the seen/unseen experiment instead (no VQA in the mixture).
# It trains into models/rt2_tabletop_cofinetuned (OUT=... elsewhere), not models/rt2_tabletop:
# `make demo` runs whatever checkpoint sits there, so a model is bundled by copying it there
# only after `rt2-ros eval` has shown it solves the seen tasks.
# The model this recipe trains does not solve the tasks yet: docs/training.md sections 6 and 7.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA:-data/sim450}"
steps="${STEPS:-5000}"
if [ ! -f "$data/collect.json" ]; then
  .venv/bin/rt2-ros collect --episodes 450 --seed 1000 --out "$data" --image-size 224 --shadows \
      --action-noise 0.01 --exclude-objects purple
fi
if [ "${ROBOT_ONLY:-0}" = 1 ]; then
  mix=(--robot-fraction 1.0)
  out="${OUT:-models/rt2_tabletop_robot_only}"
else
  mix=(--vqa "$data" --robot-fraction 0.66)
  out="${OUT:-models/rt2_tabletop_cofinetuned}"
fi
.venv/bin/rt2-ros train --from-scratch small --data "$data" "${mix[@]}" \
    --out "$out" --max-steps "$steps" --batch-size 16 --lr 1e-3 \
    --warmup 0.05 --eval-steps 1000 --eval-episodes 4 --logging-steps 50 --cpu
