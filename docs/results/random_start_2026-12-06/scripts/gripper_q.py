# "where is the gripper?" on the first frames of collected episodes (e.g. random starts): the model's
# answer against the gripper's true point, mean |error| of column and row in 256ths of the image.
# Usage: gripper_q.py MODEL EPISODES_DIR
import sys, numpy as np
from rt2_ros.action_language import load_embodiment
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.training.episodes import find_episodes, point_bin, read_episode
pol = make_policy(PolicyConfig(backend="transformers", model=sys.argv[1], device="cpu"))
arm = load_embodiment("rt2_arm")
errors, unparsed = [], 0
for path in find_episodes(sys.argv[2]):
    step = read_episode(path, arm).steps[0]
    true = [point_bin(v) for v in step.points["gripper"]]
    words = pol.answer(step.image, "where is the gripper?").split()
    if len(words) >= 2 and all(w.isdigit() for w in words[:2]):
        errors.append((abs(int(words[0]) - true[0]) + abs(int(words[1]) - true[1])) / 2)
    else:
        unparsed += 1
print(f"{sys.argv[1]}: {len(errors)} answers, mean |error| {np.mean(errors):.1f}, median {np.median(errors):.1f}, "
      f"within 8: {np.mean(np.array(errors) <= 8):.2f}; {unparsed} not two numbers")
