#!/usr/bin/env bash
# Reproduce the bundled simulator VLA (models/rt2_sim_small): simulator expert
# episodes + simulator VQA, co-fine-tuned from scratch on the CPU.
# See docs/training.md section 6 for what each step does and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA:-data/sim400}"
out="${OUT:-models/rt2_sim_small}"
steps="${STEPS:-5000}"
.venv/bin/rt2-ros collect --episodes 400 --seed 1000 --out "$data"
.venv/bin/rt2-ros train --from-scratch small --data "$data" --vqa "$data" \
    --out "$out" --max-steps "$steps" --batch-size 16 --lr 1e-3 \
    --warmup 0.05 --eval-steps 1000 --logging-steps 50 --cpu
