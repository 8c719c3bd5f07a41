"""Summarise `rt2-ros eval --trace` files (.jsonl or .jsonl.gz) by the watching expert's phase, with
"+held" when the hand holds an object: steps; how often the policy's x/y/z deltas have the sign of
the expert's label (|delta| < 3 mm counts as 0) and its gripper token equals the label's; the mean
size of the policy's and the expert's translation (m) and their mean z; then how the steps where
the hand holds an object are labelled (fingers open / closed).
Usage: trace_phases.py TRACE [...]"""
import collections
import gzip
import json
import sys

import numpy as np


def sign(value, still=0.003):
    return 0 if abs(value) < still else (1 if value > 0 else -1)


for path in sys.argv[1:]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as stream:
        rows = [json.loads(line) for line in stream]
    print(f"{path}: {len(rows)} steps")
    by_phase = collections.defaultdict(list)
    for r in rows:
        label = r["expert"]
        if "action" not in label:
            by_phase["(expert gave up)"].append(None)
            continue
        mine, its = r["action"], label["action"]
        by_phase[label["phase"] + ("+held" if r["held"] else "")].append(
            [sign(mine[k]) == sign(its[k]) for k in "xyz"] + [r["token_agreement"][-1]]
            + [sum(abs(mine[k]) for k in "xyz"), sum(abs(its[k]) for k in "xyz"), mine["z"], its["z"]])
    for phase, found in sorted(by_phase.items(), key=lambda item: -len(item[1])):
        if found[0] is None:
            print(f"  {phase:18s} {len(found):5d}")
            continue
        a = np.array(found, float).mean(0)
        print(f"  {phase:18s} {len(found):5d}  sign x/y/z {a[0]:.2f} {a[1]:.2f} {a[2]:.2f}  gripper {a[3]:.2f}  "
              f"move {a[4]:.3f} (expert {a[5]:.3f})  z {a[6]:+.3f} (expert {a[7]:+.3f})")
    held = [r for r in rows if r["held"] is not None and "action" in r["expert"]]
    opened = sum(r["expert"]["action"]["gripper"] < 0.5 for r in held)
    print(f"  holding an object: {len(held)} steps, labelled open {opened}, closed {len(held) - opened}")
