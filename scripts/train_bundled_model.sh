#!/usr/bin/env bash
# Train the simulator VLA meant to become the bundled model, on the CPU (docs/training.md
# section 6 has what each step measured):
#   1. data: 450 expert episodes with their VQA and 1200 more without (purple objects kept out of
#      every episode, DART-style action noise), 400 with more noise (0.025), and 3000 scenes of
#      "where is the X?" questions (purple included);
#   2. a pointing warm-up: a `small` model from scratch learns to answer those questions, its
#      attention pointed at the object (--grounding-weight);
#   3. co-fine-tuning from it on the episodes + VQA, each robot answer a point plan and the action
#      (--plan points: "Plan: goal C R gripper C R Action: ...").
# With ROBOT_ONLY=1 step 3 leaves the VQA out (robot fraction 1.0): the baseline of the
# seen/unseen experiment (scripts/seen_unseen_experiment.sh).
# It trains into models/rt2_tabletop_cofinetuned (OUT=... elsewhere), not models/rt2_tabletop:
# `make demo` runs whatever checkpoint sits there, so a model is bundled by copying it there
# only after `rt2-ros eval` has shown it solves the seen tasks.
# About 55 minutes on 2 cores; DATA (default data/sim) keeps what is collected, for reruns.
# Measured: one run of it (STEPS=9000) solved 0/40 seen episodes, where the staged fine-tunes of
# docs/training.md section 6 reached 5/40 (item 7 there): it does not yet reproduce the best model.
# PLAN=object_points (item 9 there) also solved 0/40; so did fine-tunes of that model with
# random-start episodes (item 10), which this script does not collect.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA:-data/sim}"
steps="${STEPS:-5000}"
plan="${PLAN:-points}"   # or object_points (docs/training.md section 6, item 9)
collect=(.venv/bin/rt2-ros collect --image-size 224 --shadows)
mkdir -p "$data"
# Two collections at a time: each simulates on one core.
[ -f "$data/A/collect.json" ] || "${collect[@]}" --episodes 450 --seed 1000 --out "$data/A" \
    --action-noise 0.01 --exclude-objects purple &
[ -f "$data/B/collect.json" ] || "${collect[@]}" --episodes 1200 --seed 3000 --out "$data/B" \
    --action-noise 0.01 --exclude-objects purple --vqa-scenes 0 &
wait
[ -f "$data/N/collect.json" ] || "${collect[@]}" --episodes 400 --seed 50000 --out "$data/N" \
    --action-noise 0.025 --exclude-objects purple --vqa-scenes 0 &
if [ ! -f "$data/D/collect.json" ]; then
  "${collect[@]}" --episodes 0 --vqa-scenes 3000 --seed 30000 --questions-per-scene 13 --out "$data/D"
fi
wait
points="$data/D/vqa/point.jsonl"
[ -f "$points" ] || grep '"kind": "point"' "$data/D/vqa/vqa.jsonl" > "$points"
pointing="${POINTING:-$data/pointing}"
if [ ! -f "$pointing/rt2_ros.json" ]; then
  .venv/bin/rt2-ros train --from-scratch small --vqa "$points" --robot-fraction 0 --out "$pointing" \
      --max-steps 3200 --batch-size 16 --lr 1e-3 --warmup 100 --lr-scheduler constant_with_warmup \
      --eval-steps 800 --eval-vqa-images 200 --grounding-weight 1 --logging-steps 100 --cpu
fi
if [ "${ROBOT_ONLY:-0}" = 1 ]; then
  mix=(--robot-fraction 1.0)
  out="${OUT:-models/rt2_tabletop_robot_only}"
else
  mix=(--vqa "$data/A" --vqa "$points" --robot-fraction 0.66)
  out="${OUT:-models/rt2_tabletop_cofinetuned}"
fi
.venv/bin/rt2-ros train --model "$pointing" --data "$data/A" --data "$data/B" --data "$data/N" "${mix[@]}" \
    --out "$out" --max-steps "$steps" --batch-size 16 --lr 1e-3 --warmup 0.05 --eval-steps 1000 \
    --eval-episodes 4 --logging-steps 50 --grounding-weight 1 --plan "$plan" --plan-given-fraction 0.5 --cpu
