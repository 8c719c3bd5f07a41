"""Ask a checkpoint "how high is the gripper?" on N held-out frames written by height_questions.py
and print the mean |error| in cm against the true height (and against always answering the median).
Usage: height_eval.py MODEL DIR [N]"""
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy

model, root = sys.argv[1], Path(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 300
records = [json.loads(line) for line in (root / "vqa.jsonl").read_text().splitlines()]
picked = [records[i] for i in np.random.default_rng(0).choice(len(records), size=count, replace=False)]
policy = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu"))
errors, unreadable = [], 0
truths = [int(r["answer"]) for r in picked]
for record in picked:
    image = np.asarray(Image.open(root / record["image"]).convert("RGB"))
    text = policy.answer(image, record["question"]).strip()
    try:
        errors.append(abs(int(text.split()[0]) - int(record["answer"])))
    except (ValueError, IndexError):
        unreadable += 1
median = statistics.median(truths)
print(f"{model}: {len(errors)} numeric answers of {count}; mean |error| {np.mean(errors):.2f} cm, "
      f"median {np.median(errors):.1f} cm; always the median ({median:g} cm): "
      f"{np.mean([abs(t - median) for t in truths]):.2f} cm; true heights {min(truths)}-{max(truths)} cm")
