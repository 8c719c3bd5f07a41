#!/usr/bin/env bash
# The paper's experiment in miniature (docs/training.md section 7): success of the co-fine-tuned
# model (models/rt2_tabletop_cofinetuned) and the robot-only baseline (models/rt2_tabletop_robot_only) on
# tasks whose objects were in the robot data (seen) and on tasks with a purple object, which the
# robot data never shows and only the VQA does (unseen).  Both models come from
# scripts/train_bundled_model.sh (the baseline with ROBOT_ONLY=1).
# Eval seeds start at 0; the training episodes used seeds 1000 and up.
set -euo pipefail
cd "$(dirname "$0")/.."
episodes="${EPISODES:-50}"
out="${OUT:-experiment_out}"
mkdir -p "$out"
for model in "${CO:-models/rt2_tabletop_cofinetuned}" "${ROBOT_ONLY:-models/rt2_tabletop_robot_only}"; do
  name="$(basename "$model")"
  for split in seen unseen; do
    if [ "$split" = seen ]; then filter=(--exclude-objects purple); else filter=(--objects purple); fi
    .venv/bin/rt2-ros eval --backend transformers --model "$model" --device cpu \
        --episodes "$episodes" "${filter[@]}" --json "$out/${name}_${split}.json" \
        2> "$out/${name}_${split}.log" | tee "$out/${name}_${split}.txt"
  done
done
