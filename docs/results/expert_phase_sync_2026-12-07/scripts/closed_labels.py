"""In collected episode sets, count the steps whose hand state says the fingers were told to close
(the last gripper command executed >= 0.5) and, of those, the ones the expert labelled with open
fingers (and with a rise of more than 3 cm).
Usage: closed_labels.py DIR [...]"""
import collections
import sys

from rt2_ros.action_language import load_embodiment
from rt2_ros.training.episodes import find_episodes, read_episode

embodiment = load_embodiment("rt2_arm")
for root in sys.argv[1:]:
    counts = collections.Counter()
    for bag in find_episodes(root):
        for step in read_episode(bag, embodiment).steps:
            if step.gripper_command is None or step.gripper_command < 0.5:
                continue
            counts["closed"] += 1
            if step.action["gripper"] < 0.5:
                counts["closed, labelled open"] += 1
                counts["closed, labelled open and up > 3 cm"] += step.action["z"] > 0.03
    print(root, dict(counts))
