"""Add the "under" grounding point to sample caches built from bags collected before
rt2-ros collect recorded it, so the episodes need not be collected again.

The point under the gripper at GOAL_POINT_HEIGHT follows from what every cached robot record
already has: the gripper's image point and the hand's height.  The ray through the gripper's
pixel meets the plane z = height at the tool's (x, y); that (x, y) at GOAL_POINT_HEIGHT,
projected through the same (fixed) head camera, is the point the collector now records.

A cache's directory name and manifest hold its key, which includes the episode topics read; the
under point's topic is one of them now, so each cache is also moved to the key rt2-ros train looks
for (the cache it would build were the topic in the bags).  Run it before training on old data.

Usage: python add_under_point.py [--check] DATA_DIR...   (each DATA_DIR holds episodes/ and the
       .rt2_cache that rt2-ros train built from it; records that already have "under" are kept)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import mujoco
import numpy as np

from rt2_ros.sim.tabletop import HEAD_CAMERA, SimConfig, TabletopSim
from rt2_ros.training.episodes import EpisodeTopics
from rt2_ros.training.samples import _cache_dir
from rt2_ros.training.sim_data import GOAL_POINT_HEIGHT

SIZE = (224, 224)  # (height, width); points are fractions, so any size of the camera's aspect works


def camera_model() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """The head camera's position, rotation (camera to base) and intrinsics at SIZE."""
    with TabletopSim(config=SimConfig(image_size=SIZE)) as sim:
        pose = sim.camera_pose(HEAD_CAMERA)
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, np.asarray(pose.quaternion, dtype=float))
        return np.asarray(pose.position, float), rotation.reshape(3, 3), sim.camera_intrinsics(HEAD_CAMERA, SIZE)


def under_point(gripper: list[float], height: float, camera) -> list[float]:
    """The image point (fractions) of the tool's (x, y) at GOAL_POINT_HEIGHT, from its image point and z."""
    position, rotation, (fx, fy, cx, cy) = camera
    u, v = gripper[0] * SIZE[1], gripper[1] * SIZE[0]
    # Camera frame: x right, y up, looking along -z (as TabletopSim.project_points).
    ray = rotation @ np.array([(u - cx) / fx, -(v - cy) / fy, -1.0])
    tool = position + ray * (height - position[2]) / ray[2]
    down = np.array([tool[0], tool[1], GOAL_POINT_HEIGHT])
    local = (down - position) @ rotation
    depth = -local[2]
    return [float((cx + fx * local[0] / depth) / SIZE[1]), float((cy - fy * local[1] / depth) / SIZE[0])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true",
                        help="compare with the recorded under point instead of writing (new collections)")
    args = parser.parse_args()
    camera = camera_model()
    for root in args.dirs:
        for index in sorted((root / ".rt2_cache").glob("robot-*/index.jsonl")):
            records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
            added = worst = 0
            for record in records:
                points = record.get("points")
                if not points or record.get("height") is None:
                    continue
                computed = under_point(points["gripper"], float(record["height"]), camera)
                if args.check:
                    worst = max(worst, max(abs(a - b) for a, b in zip(computed, points["under"])))
                elif "under" not in points:
                    points["under"] = computed
                    added += 1
            if args.check:
                print(f"{index}: {len(records)} records, largest difference {worst:.2e} of the image")
                continue
            temporary = index.with_suffix(".tmp")
            temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
            os.replace(temporary, index)
            manifest_path = index.parent / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
            manifest["key"]["topics"] = vars(EpisodeTopics())
            manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
            target = _cache_dir(index.parent.parent, "robot", manifest["key"])
            if target != index.parent:
                if target.exists():
                    raise SystemExit(f"{target}: a cache with the new key exists already; delete it and rerun")
                index.parent.rename(target)
            print(f"{target}: under point added to {added} of {len(records)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
