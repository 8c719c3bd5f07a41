"""What the expert's action does for a given goal offset in the image, from a collection's sample
cache: correlation of the forward (x) and sideways (y) actions with the goal's row and column
offset from the gripper's point (or from FROM, e.g. "under": the point under the hand at the
goal's height, docs/training.md section 6 item 15), and the mean actions per (row offset, hand
height) cell with the goal roughly in the gripper's column.
Usage: offset_vs_action.py CACHE_DIR/index.jsonl [FROM]"""
import json
import sys

import numpy as np

origin = sys.argv[2] if len(sys.argv) > 2 else "gripper"
rows = []
for line in open(sys.argv[1]):
    record = json.loads(line)
    points, action = record.get("points") or {}, record["action"]
    if "goal" not in points or origin not in points or record.get("height") is None or action.get("terminate"):
        continue
    d_row = (points["goal"][1] - points[origin][1]) * 256
    d_col = (points["goal"][0] - points[origin][0]) * 256
    rows.append((d_row, d_col, record["height"] * 100, action["x"], action["y"], action["z"]))
d_row, d_col, height, x, y, z = np.array(rows, float).T
print(f"{len(rows)} steps, offsets from the {origin} point; corr(x, row offset) {np.corrcoef(x, d_row)[0, 1]:+.2f}, "
      f"corr(y, column offset) {np.corrcoef(y, d_col)[0, 1]:+.2f}, corr(z, row offset) {np.corrcoef(z, d_row)[0, 1]:+.2f}")
for lo, hi in [(-10, 10), (10, 25), (25, 45), (45, 80)]:
    for h_lo, h_hi in [(0, 8), (8, 14), (14, 40)]:
        cell = (d_row >= lo) & (d_row < hi) & (height >= h_lo) & (height < h_hi) & (np.abs(d_col) < 15)
        if cell.sum() > 20:
            print(f"row offset {lo}..{hi} bins, hand {h_lo}..{h_hi} cm: {cell.sum()} steps, "
                  f"x {x[cell].mean():+.3f} (sd {x[cell].std():.3f}) m, z {z[cell].mean():+.3f} m")
