#!/usr/bin/env bash
# The six expert collections of scripts/train_bundled_model.sh again (the same commands, seeds and two
# lanes), now that rt2-ros collect records the reference object's point. Run from the repo root:
#   DATA=data/simT docs/results/target_plan_2026-12-07/scripts/collect_expert_sets.sh   (~16 min)
set -euo pipefail
data="${DATA:?DATA: where the collections go}"
collect=(.venv/bin/rt2-ros collect --image-size 224 --shadows)
noisy=(--exclude-objects purple --vqa-scenes 0 --action-noise)
collected() { [ -f "$data/$1/collect.json" ]; }
(
  collected A || "${collect[@]}" --episodes 450 --seed 1000 --out "$data/A" --action-noise 0.01 --exclude-objects purple
  collected N || "${collect[@]}" --episodes 400 --seed 50000 --out "$data/N" "${noisy[@]}" 0.025
  collected GQ1 || "${collect[@]}" --episodes 300 --seed 230000 --out "$data/GQ1" "${noisy[@]}" 0.01 --random-start 0.5 --gripper-questions 4
) &
(
  collected R1 || "${collect[@]}" --episodes 400 --seed 210000 --out "$data/R1" "${noisy[@]}" 0.01 --random-start 1.0
  collected R2 || "${collect[@]}" --episodes 400 --seed 220000 --out "$data/R2" "${noisy[@]}" 0.01 --random-start 1.0
  collected GQ2 || "${collect[@]}" --episodes 300 --seed 240000 --out "$data/GQ2" "${noisy[@]}" 0.01 --random-start 0.5 --gripper-questions 4
) &
wait
for g in GQ1 GQ2; do
  [ -f "$data/$g/vqa/gq.jsonl" ] || grep '"kind": "gripper_point"' "$data/$g/vqa/vqa.jsonl" > "$data/$g/vqa/gq.jsonl"
done
