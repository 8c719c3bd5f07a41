"""LeRobot v3 dataset directories (parquet + AV1 MP4, written here offline as LeRobot writes them)
as training samples."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rt2_ros.action_language import load_embodiment
from rt2_ros.cli import main
from rt2_ros.errors import ConfigError
from rt2_ros.training.lerobot_data import (LeRobotError, LeRobotOptions, is_lerobot_dir, parse_action_map,
                                           read_lerobot_episodes)
from rt2_ros.training.samples import robot_samples

ARM = load_embodiment("rt2_arm")
NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
TASKS = ["pick the red cube", "push the blue sphere"]
CAMERA = "observation.images.front"


def grey(frame: int) -> int:
    """Every frame is one flat grey level, so its position survives lossy video coding."""
    return 10 + 24 * frame


def vector(frame: int) -> list[float]:
    return [0.01 * frame, -0.005 * frame, 0.002, 0.0, 0.05, 0.0, float(frame % 2)]


def write_dataset(root: Path, *, lengths=(3, 4), camera_dtype="video", names=NAMES, cameras=(CAMERA,),
                  fps=10, video_frames: int | None = None) -> Path:
    """A LeRobot v3 directory: one data file, one video file per camera holding every episode
    (``video_frames`` of them: default all)."""
    import cv2
    import imageio.v2 as imageio
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"action": {"dtype": "float32", "shape": [len(names)], "names": names},
                "timestamp": {"dtype": "float32", "shape": [1], "names": None}}
    for camera in cameras:
        features[camera] = {"dtype": camera_dtype, "shape": [48, 64, 3], "names": ["height", "width", "channels"]}
    info = {"codebase_version": "v3.0", "fps": fps, "total_episodes": len(lengths),
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    # LeRobot keeps the task strings as the index of meta/tasks.parquet.
    pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(TASKS, name="task")).to_parquet(root / "meta" / "tasks.parquet")
    rows, episodes, start = [], [], 0
    for episode, length in enumerate(lengths):
        for k in range(length):
            frame = start + k
            row = {"episode_index": episode, "frame_index": k, "timestamp": k / fps, "index": frame,
                   "task_index": episode % 2, "action": vector(frame)}
            if camera_dtype == "image":
                for camera in cameras:
                    ok, png = cv2.imencode(".png", np.full((48, 64, 3), grey(frame), np.uint8))
                    row[camera] = {"bytes": png.tobytes(), "path": None}
            rows.append(row)
        meta = {"episode_index": episode, "tasks": [TASKS[episode % 2]], "length": length,
                "dataset_from_index": start, "dataset_to_index": start + length,
                "data/chunk_index": 0, "data/file_index": 0}
        for camera in cameras:
            meta.update({f"videos/{camera}/chunk_index": 0, f"videos/{camera}/file_index": 0,
                         f"videos/{camera}/from_timestamp": start / fps,
                         f"videos/{camera}/to_timestamp": (start + length) / fps})
        episodes.append(meta)
        start += length
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    if camera_dtype == "video":
        for camera in cameras:
            path = root / "videos" / camera / "chunk-000" / "file-000.mp4"
            path.parent.mkdir(parents=True)
            # AV1 through SVT-AV1, LeRobot's default encoder.
            writer = imageio.get_writer(path, fps=fps, codec="libsvtav1", pixelformat="yuv420p",
                                        macro_block_size=8, ffmpeg_log_level="error")
            for frame in range(start if video_frames is None else video_frames):
                writer.append_data(np.full((48, 64, 3), grey(frame), np.uint8))
            writer.close()
    return root


def expected_tokens(frame: int, last: bool) -> list[int]:
    return ARM.encode({**dict(zip(NAMES, vector(frame))), "terminate": last})


def test_a_video_dataset_becomes_one_sample_per_frame(tmp_path):
    root = write_dataset(tmp_path / "so100_pick")
    assert is_lerobot_dir(root) and not is_lerobot_dir(tmp_path)
    samples, summary = robot_samples([root], ARM, image_size=24, outcomes="not-failed", cache_dir=tmp_path / "c")
    assert summary["episodes"] == 2 and summary["used"] == 2 and len(samples) == 7
    records = samples.records
    assert [r["episode"] for r in records] == ["so100_pick/episode_000000"] * 3 + ["so100_pick/episode_000001"] * 4
    assert [r["instruction"] for r in records] == [TASKS[0]] * 3 + [TASKS[1]] * 4
    for frame, record in enumerate(records):
        last = frame in (2, 6)
        assert record["tokens"] == expected_tokens(frame, last), frame
        assert record["success"] is None
        image = samples.image(frame)
        assert image.shape == (24, 32, 3)
        # The right frame of the shared video file (AV1 coding moves a flat grey a few levels).
        assert abs(float(image.mean()) - grey(frame)) < 8, (frame, image.mean())


def test_an_image_dataset_reads_the_png_frames_exactly(tmp_path):
    root = write_dataset(tmp_path / "d", camera_dtype="image", lengths=(2, 2))
    episodes = list(read_lerobot_episodes(root, ARM))
    assert [len(e.steps) for e in episodes] == [2, 2] and episodes[1].info.control_rate_hz == 10
    for frame, step in enumerate(s for e in episodes for s in e.steps):
        assert np.array_equal(step.image, np.full((48, 64, 3), grey(frame), np.uint8))
        assert step.action == ARM.decode(step.tokens)


def test_lerobot_episodes_record_no_outcome_so_the_default_filter_says_how_to_keep_them(tmp_path):
    root = write_dataset(tmp_path / "d")
    with pytest.raises(ConfigError, match=r"2 excluded by outcomes='success' \(episodes that record no outcome, "
                                          r"e\.g\. LeRobot datasets, count only with outcomes not-failed or all\)"):
        robot_samples([root], ARM, image_size=24, cache_dir=tmp_path / "c")


def test_cameras_and_action_names_are_chosen_or_refused_by_name(tmp_path):
    two = write_dataset(tmp_path / "two", cameras=(CAMERA, "observation.images.wrist"), lengths=(2,))
    with pytest.raises(ConfigError, match=r"lerobot_camera: .*two has 2 cameras \(observation.images.front, "
                                          r"observation.images.wrist\); name the one to train on"):
        list(read_lerobot_episodes(two, ARM))
    with pytest.raises(ConfigError, match=r"lerobot_camera: 'top' is not an image or video feature"):
        list(read_lerobot_episodes(two, ARM, LeRobotOptions(camera="top")))
    assert len(list(read_lerobot_episodes(two, ARM, LeRobotOptions(camera="observation.images.wrist")))) == 1

    joints = write_dataset(tmp_path / "joints", names=[f"joint_{i}" for i in range(7)], lengths=(2,))
    with pytest.raises(ConfigError, match=r"action names \(joint_0, .*\) lack x, y, z, .*e\.g\. x=0,y=1,z=2"):
        list(read_lerobot_episodes(joints, ARM))
    mapping = parse_action_map("lerobot_action_map", "x=0, y=1,z=2,roll=3,pitch=4,yaw=5,gripper=6")
    steps = list(read_lerobot_episodes(joints, ARM, LeRobotOptions(action_map=mapping)))[0].steps
    assert steps[1].tokens == expected_tokens(1, True)
    with pytest.raises(ConfigError, match=r"lerobot_action_map: gripper=9 is outside the action vector"):
        list(read_lerobot_episodes(joints, ARM, LeRobotOptions(action_map=(*mapping[:-1], ("gripper", 9)))))
    with pytest.raises(ConfigError, match=r"lerobot_action_map: no index for gripper"):
        list(read_lerobot_episodes(joints, ARM, LeRobotOptions(action_map=mapping[:-1])))
    for text, message in (("x:0", "expected dim=index pairs"), ("x=0,x=1", "mapped twice"), ("x=-1", "dim=index")):
        with pytest.raises(ConfigError, match=message):
            parse_action_map("lerobot_action_map", text)


def test_a_damaged_dataset_names_the_file(tmp_path):
    root = write_dataset(tmp_path / "d")
    (root / "videos" / CAMERA / "chunk-000" / "file-000.mp4").unlink()
    with pytest.raises(LeRobotError, match=r"file-000.mp4: no such video file"):
        list(read_lerobot_episodes(root, ARM))
    root = write_dataset(tmp_path / "short", lengths=(3, 4), video_frames=5)
    with pytest.raises(LeRobotError, match=r"file-000.mp4: the episode needs frames 3\.\.6, the video has 2 "
                                           r"of them"):
        list(read_lerobot_episodes(root, ARM))


def test_train_takes_a_lerobot_dataset_from_the_command_line(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", lengths=(3, 4, 3))
    code = main(["train", "--out", str(tmp_path / "ckpt"), "--from-scratch", "tiny", "--data", str(root),
                 "--robot-fraction", "1.0", "--outcomes", "not-failed", "--max-steps", "2", "--batch-size", "4",
                 "--eval-episodes", "1", "--eval-steps", "0", "--cpu", "--cache-dir", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["data"]["robot"]["episodes"] == 3 and summary["data"]["robot"]["train_samples"] == 7
    assert (tmp_path / "ckpt" / "rt2_ros.json").is_file()
