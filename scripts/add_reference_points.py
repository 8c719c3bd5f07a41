#!/usr/bin/env python3
"""Copy simulator episodes collected before `rt2-ros collect` recorded the reference object's image
point, adding it (`/rt2/grounding/reference`), so `rt2-ros train --plan hand_target_offset` can
train on them (docs/training.md section 6, item 18).

The point comes from the episode's scene, regenerated from the seed and the collection's task
setting (`collect.json` next to `episodes/`; the regenerated instruction must be the episode's):
the reference object where it was placed, seen by the collection's camera at its image size, at
every step stamped like the goal point.  The simulator's expert does not move the reference object;
a learner driving DAgger steps can bump it, and the copy then keeps the placed position (the bags
recorded since carry the true per-step point).  Episodes of one-object tasks, and ones that have
the point already, are copied as they are.

Usage: .venv/bin/python scripts/add_reference_points.py SRC OUT   (SRC: an `rt2-ros collect` output)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rt2_ros.errors import Rt2RosError
from rt2_ros.training import mcap_io
from rt2_ros.training.episodes import EpisodeInfo, EpisodeTopics, find_episodes


def _copy_with_reference(src: Path, out: Path, point: tuple[float, float], topics: EpisodeTopics) -> int:
    """Copy bag ``src`` to ``out`` message for message (raw CDR, same log times), writing the
    reference point after each goal point with its stamp; returns the points written."""
    from rosbags.rosbag2 import Reader

    written = 0
    with Reader(src) as reader, mcap_io.BagWriter(out) as writer:
        for connection in reader.connections:
            profiles = getattr(connection.ext, "offered_qos_profiles", None) or [None]
            writer.add_topic(connection.topic, connection.msgtype, profiles[0])
        writer.add_topic(topics.grounding_reference, mcap_io.POINT_STAMPED)
        writer.custom_data = dict(mcap_io.read_custom_data(src))
        for connection, timestamp, raw in reader.messages():
            writer.write_raw(connection.topic, timestamp, raw)
            if connection.topic == topics.grounding_goal:
                header = mcap_io.typestore().deserialize_cdr(raw, connection.msgtype).header
                stamp = mcap_io.stamp_to_ns(header.stamp)
                writer.write(topics.grounding_reference, timestamp,
                             mcap_io.point_stamped_message((point[0], point[1], 0.0), stamp, header.frame_id))
                written += 1
    return written


def add_reference_points(src: str | Path, out: str | Path) -> dict[str, int]:
    """Copy the collection ``src`` (its ``collect.json`` and episode bags) to ``out`` with the
    reference point added where a task has a reference object; returns counts."""
    from rt2_ros.sim.tabletop import SimConfig, TabletopSim

    src, out = Path(src), Path(out)
    report = src / "collect.json"
    if not report.is_file():
        raise Rt2RosError(f"{src}: expected an rt2-ros collect output (collect.json), found none")
    if out.exists():
        raise Rt2RosError(f"{out}: already exists; give a new directory")
    config = json.loads(report.read_text(encoding="utf-8"))["config"]
    size, camera, task = int(config["image_size"]), config.get("camera", "head"), config.get("task", "random")
    topics = EpisodeTopics()
    counts = {"episodes": 0, "with_reference": 0, "copied_as_they_were": 0}
    out.mkdir(parents=True)
    shutil.copy2(report, out / "collect.json")
    with TabletopSim(0, task=None, config=SimConfig(image_size=(size, size))) as sim:
        for bag in find_episodes(src):
            target = out / bag.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            info = EpisodeInfo.from_custom_data(mcap_io.read_custom_data(bag), str(bag))
            counts["episodes"] += 1
            if len(info.objects) < 2 or topics.grounding_reference in mcap_io.bag_topics(bag):
                shutil.copytree(bag, target)
                counts["copied_as_they_were"] += 1
                continue
            if info.seed is None:
                raise Rt2RosError(f"{bag}: no rt2_ros.seed to regenerate its scene from")
            spec = sim.reset(info.seed, task=task)
            if spec is None or spec.instruction != info.instruction or spec.reference is None:
                raise Rt2RosError(f"{bag}: seed {info.seed} with task {task!r} gives "
                                  f"{getattr(spec, 'instruction', None)!r}, the episode says {info.instruction!r}")
            placed = sim.object_poses()[spec.reference].position
            (u, v), = sim.project_points([placed], camera, (size, size))
            if not _copy_with_reference(bag, target, (float(u) / size, float(v) / size), topics):
                raise Rt2RosError(f"{bag}: no goal points to stamp the reference point like")
            counts["with_reference"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="an rt2-ros collect output (collect.json, episodes/)")
    parser.add_argument("out", help="a new directory for the copy")
    args = parser.parse_args(argv)
    try:
        counts = add_reference_points(args.src, args.out)
    except Rt2RosError as exc:
        print(f"add_reference_points: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
