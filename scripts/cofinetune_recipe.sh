# The co-fine-tuning data and flags that scripts/train_bundled_model.sh and scripts/dagger_round.sh
# share (docs/training.md section 6). Sourced, not run: needs $data (the collections' directory)
# and $plan (the --plan kind) set; defines
#   recipe_robot  --data for the six expert collections (A N R1 R2 GQ1 GQ2)
#   recipe_vqa    the VQA mix: A's scene questions, D's "where is the X?" questions and the two
#                 gripper-question sets, at robot fraction 0.66
#   recipe_flags  what every co-fine-tuning run of the recipe trains with (batch, hints, plan)
recipe_robot=()
for d in A N R1 R2 GQ1 GQ2; do recipe_robot+=(--data "$data/$d"); done
recipe_vqa=(--vqa "$data/A" --vqa "$data/D/vqa/point.jsonl" --vqa "$data/GQ1/vqa/gq.jsonl"
            --vqa "$data/GQ2/vqa/gq.jsonl" --robot-fraction 0.66)
recipe_flags=(--batch-size 16 --eval-episodes 4 --logging-steps 50 --grounding-weight 1 --plan "$plan"
              --plan-given-fraction 0.5 --cpu)
