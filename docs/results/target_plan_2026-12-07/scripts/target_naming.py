"""How a hand_target_offset checkpoint names and points at the object the hand heads for, on fresh
expert episodes of two-object tasks: per step, layout decoding with the step's hand state (as
`rt2-ros eval --hand-state` gives it), the object field's name against the true target's
(the task's object with the fingers open, the reference once they are told to close) and its
point's distance in bins from the true target's, split by the fingers' state.
Usage: target_naming.py MODEL EPISODES [STRIDE]"""
import sys

import numpy as np

from rt2_ros.action_language.plans import parse_plan, point_bin
from rt2_ros.policy.base import HandState
from rt2_ros.policy.transformers_backend import TransformersPolicy
from rt2_ros.training.episodes import find_episodes, read_episode, target_of

model, root = sys.argv[1], sys.argv[2]
stride = int(sys.argv[3]) if len(sys.argv) > 3 else 2
policy = TransformersPolicy.from_pretrained(model, dtype="float32", device="cpu", decoding="median")
rows = {0: [], 1: []}
for bag in find_episodes(root):
    episode = read_episode(bag, policy.embodiment)
    if len(episode.info.objects) < 2:
        continue
    for step in episode.steps[::stride]:
        name, (x, y) = target_of(step.points, episode.info.objects, step.gripper_command)
        closed = int(step.gripper_command is not None and step.gripper_command >= 0.5)
        out = policy.act(step.image, step.instruction, HandState(step.height, step.gripper_command))
        parsed = parse_plan(policy.plan_kind, out.plan)
        words = out.plan.split()
        written = " ".join(words[7:words.index("goal") - 2]) if "goal" in words else ""
        error = (max(abs(parsed["object"][0] - point_bin(x)), abs(parsed["object"][1] - point_bin(y)))
                 if parsed else None)
        other = [o for o in episode.info.objects if o != name][0]
        rows[closed].append((written == name, written == other, error))
for closed, found in rows.items():
    if not found:
        continue
    right = sum(r[0] for r in found)
    wrong_object = sum(r[1] for r in found)
    errors = [r[2] for r in found if r[2] is not None]
    print(f"fingers {'closed' if closed else 'open  '}: {len(found)} steps; names the target {right} "
          f"({right / len(found):.0%}), the task's other object {wrong_object}; point error to the true "
          f"target: median {np.median(errors):.0f} bins, within 8 bins {np.mean(np.array(errors) <= 8):.0%}")
