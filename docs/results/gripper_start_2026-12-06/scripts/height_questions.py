"""Write "how high is the gripper?" questions (answer: the end-effector's height in cm, an integer)
on every 3rd frame of the episode bags under DIRS into OUT/vqa.jsonl (+ OUT/images/).
A probe for docs/training.md section 6 item 11: can the small model read the hand's height from one
head-camera image?  Usage: height_questions.py OUT DIR [DIR ...]"""
import json
import sys
from pathlib import Path

from PIL import Image

from rt2_ros.action_language.embodiment import load_embodiment
from rt2_ros.training import mcap_io
from rt2_ros.training.episodes import find_episodes, read_episode

out = Path(sys.argv[1])
(out / "images").mkdir(parents=True, exist_ok=True)
arm = load_embodiment("rt2_arm")
records = []
for root in sys.argv[2:]:
    for path in find_episodes(root):
        episode = read_episode(path, arm)
        heights = sorted((mcap_io.stamp_to_ns(m.message.header.stamp), m.message.pose.position.z)
                         for m in mcap_io.read_messages(path, ["/ee_pose"]))
        by_stamp = dict(heights)
        for index, step in enumerate(episode.steps):
            if index % 3 or step.stamp_ns not in by_stamp:
                continue
            name = f"images/{Path(root).name}_{path.name}_{index:03d}.png"
            Image.fromarray(step.image).save(out / name)
            cm = max(0, int(round(by_stamp[step.stamp_ns] * 100)))
            record = {"image": name, "question": "how high is the gripper?", "answer": str(cm),
                      "kind": "height", "height_m": by_stamp[step.stamp_ns]}
            gripper = (step.points or {}).get("gripper")
            if gripper is not None and 0.0 <= gripper[0] < 1.0 and 0.0 <= gripper[1] < 1.0:
                # The gripper's image point: with --grounding-weight the answer is told where to look.
                record["point"] = [float(gripper[0]), float(gripper[1])]
            records.append(record)
(out / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
print(len(records), "questions")
