"""LeRobot v3 dataset directories as robot episodes, read without the ``lerobot`` package.

A LeRobot v3 dataset (``codebase_version`` ``v3.x`` in ``meta/info.json``) is
parquet files plus MP4 videos::

    meta/info.json                      fps, features (dtype, shape, names), data_path / video_path templates
    meta/tasks.parquet                  task_index -> task string
    meta/episodes/chunk-*/file-*.parquet  one row per episode: episode_index, length,
                                        data/chunk_index, data/file_index,
                                        videos/<key>/chunk_index|file_index|from_timestamp
    data/chunk-*/file-*.parquet         one row per frame: episode_index, frame_index, timestamp,
                                        task_index, action, ... (and "image" features as PNG bytes)
    videos/<key>/chunk-*/file-*.mp4     "video" features; several episodes per file, one after another

pyarrow (which ``datasets`` brings) reads the parquet files and imageio-ffmpeg's
FFmpeg decodes the videos (AV1 - LeRobot's default codec - h264, ...), so every frame becomes an :class:`EpisodeStep` in
the training embodiment, exactly like a rosbag2 episode:

* the image is the chosen camera feature's frame;
* the instruction is the frame's task;
* the action vector is mapped onto the embodiment's dims by name (the
  ``action`` feature's ``names``), or by an explicit ``dim=index`` map; a
  ``terminate`` dim is 1 on each episode's last frame and 0 before (RT-2's
  convention), since LeRobot records no terminate;
* LeRobot records no outcome, so episodes have ``success=None``: train on them
  with ``outcomes`` ``not-failed`` or ``all``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rt2_ros.action_language import Embodiment
from rt2_ros.action_language.embodiment import TERMINATE
from rt2_ros.errors import ConfigError, Rt2RosError
from rt2_ros.training.episodes import Episode, EpisodeInfo, EpisodeStep

__all__ = ["LeRobotError", "LeRobotOptions", "is_lerobot_dir", "lerobot_episode_count", "parse_action_map",
           "read_lerobot_episodes"]


class LeRobotError(Rt2RosError, ValueError):
    """A LeRobot dataset could not be read; the message names the file and what was wrong."""


@dataclass(frozen=True)
class LeRobotOptions:
    """How a LeRobot dataset maps onto training samples.

    camera: the image or video feature to train on ("" = the dataset's only one).
    action_map: ``((dim, index), ...)`` - which element of the action vector each
        embodiment dim takes; empty = by the ``action`` feature's names.
    """

    camera: str = ""
    action_map: tuple[tuple[str, int], ...] = ()


def parse_action_map(key: str, text: str) -> tuple[tuple[str, int], ...]:
    """``"x=0, y=1, gripper=6"`` -> ``(("x", 0), ("y", 1), ("gripper", 6))``; ConfigError naming ``key``."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, index = part.partition("=")
        if not sep or not name.strip() or not index.strip().isdigit():
            raise ConfigError(f"{key}: expected dim=index pairs such as 'x=0,y=1', got {part!r}")
        pairs.append((name.strip(), int(index)))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: a dim is mapped twice in {text!r}")
    return tuple(pairs)


def is_lerobot_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a LeRobot v3 dataset (``meta/info.json`` with a v3 codebase_version)."""
    info = Path(path) / "meta" / "info.json"
    if not info.is_file():
        return False
    try:
        version = str(json.loads(info.read_text(encoding="utf-8")).get("codebase_version", ""))
    except (OSError, ValueError):
        return False
    return version.startswith("v3")


def lerobot_episode_count(root: str | Path) -> int:
    """``total_episodes`` of ``meta/info.json`` (0 when absent): for progress reports."""
    try:
        return int(json.loads((Path(root) / "meta" / "info.json").read_text(encoding="utf-8"))
                   .get("total_episodes", 0))
    except (OSError, ValueError, TypeError):
        return 0


def _read_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise LeRobotError(f"{path}: cannot read the parquet file ({exc})") from None


def _info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeRobotError(f"{path}: cannot read ({exc})") from None
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise LeRobotError(f"{path}: missing key {key!r}")
    return info


def _camera(info: dict[str, Any], root: Path, wanted: str) -> tuple[str, str]:
    """(feature key, dtype) of the camera to read."""
    cameras = {k: f.get("dtype") for k, f in info["features"].items() if f.get("dtype") in ("video", "image")}
    if wanted:
        if wanted not in cameras:
            raise ConfigError(f"lerobot_camera: {wanted!r} is not an image or video feature of {root} "
                              f"(cameras: {', '.join(cameras) or 'none'})")
        return wanted, cameras[wanted]
    if len(cameras) != 1:
        raise ConfigError(f"lerobot_camera: {root} has {len(cameras)} cameras "
                          f"({', '.join(cameras) or 'none'}); name the one to train on")
    key = next(iter(cameras))
    return key, cameras[key]


def _action_indices(info: dict[str, Any], root: Path, embodiment: Embodiment,
                    action_map: tuple[tuple[str, int], ...]) -> dict[str, int]:
    """Embodiment dim -> index into the action vector (every dim but terminate)."""
    feature = info["features"].get("action")
    if feature is None:
        raise LeRobotError(f"{root}: meta/info.json has no 'action' feature")
    size = int(np.prod(feature.get("shape") or [0]))
    wanted = [n for n in embodiment.names if n != TERMINATE]
    if action_map:
        mapping = dict(action_map)
        unknown = sorted(set(mapping) - set(wanted))
        if unknown:
            raise ConfigError(f"lerobot_action_map: {', '.join(unknown)} is no dim of {embodiment.name} "
                              f"(dims: {', '.join(wanted)})")
        missing = [n for n in wanted if n not in mapping]
        if missing:
            raise ConfigError(f"lerobot_action_map: no index for {', '.join(missing)} "
                              f"(every dim of {embodiment.name} but terminate needs one)")
        for name, index in mapping.items():
            if index >= size:
                raise ConfigError(f"lerobot_action_map: {name}={index} is outside the action vector of "
                                  f"{root} ({size} values)")
        return mapping
    names = feature.get("names")
    if isinstance(names, dict):  # {"motors": [...]} in some datasets
        names = next(iter(names.values()), None)
    names = [str(n) for n in names] if isinstance(names, list) else []
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ConfigError(f"lerobot_action_map: {root}'s action names ({', '.join(names) or 'none'}) lack "
                          f"{', '.join(missing)}; map each dim of {embodiment.name} to an index, e.g. "
                          + ",".join(f"{n}={i}" for i, n in enumerate(wanted)))
    return {n: names.index(n) for n in wanted}


def _tasks(root: Path) -> dict[int, str]:
    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        return {}
    frame = _read_table(path).to_pandas()
    if "task_index" not in frame.columns:
        raise LeRobotError(f"{path}: no 'task_index' column (columns: {', '.join(map(str, frame.columns))})")
    # LeRobot keeps the task string as the frame's index; some writers use a "task" column.
    texts = frame["task"] if "task" in frame.columns else frame.index
    return {int(i): str(t) for i, t in zip(frame["task_index"], texts)}


def _episode_rows(root: Path) -> list[dict[str, Any]]:
    files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not files:
        raise LeRobotError(f"{root}: no episode metadata (meta/episodes/chunk-*/file-*.parquet)")
    rows = [row for path in files for row in _read_table(path).to_pylist()]
    for row in rows:
        for key in ("episode_index", "length", "data/chunk_index", "data/file_index"):
            if key not in row:
                raise LeRobotError(f"{root}: episode metadata lacks {key!r}")
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def _video_frames(path: Path, first: int, count: int, fps: float) -> list[np.ndarray]:
    """Frames ``first .. first + count - 1`` of an MP4 file as RGB arrays.

    Decoded by imageio-ffmpeg's FFmpeg, which has dav1d: LeRobot writes AV1 by
    default, and OpenCV's FFmpeg cannot decode AV1 without hardware support.
    """
    import imageio_ffmpeg

    if not path.is_file():
        raise LeRobotError(f"{path}: no such video file")
    # Seek half a frame early: FFmpeg starts at the first frame at or after the time given.
    seconds = max(0.0, (first - 0.5) / fps)
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", input_params=["-ss", f"{seconds:.6f}"],
                                        output_params=["-frames:v", str(count)])
    try:
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3).copy() for data in reader]
    except (OSError, RuntimeError, StopIteration) as exc:
        raise LeRobotError(f"{path}: FFmpeg cannot decode the video ({exc})") from None
    finally:
        reader.close()
    if len(frames) != count:
        raise LeRobotError(f"{path}: the episode needs frames {first}..{first + count - 1}, the video has "
                           f"{len(frames)} of them")
    return frames


def _png(value: Any, where: str) -> np.ndarray:
    import cv2

    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)):
        raise LeRobotError(f"{where}: expected encoded image bytes, got {type(data).__name__}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise LeRobotError(f"{where}: the image bytes do not decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_lerobot_episodes(root: str | Path, embodiment: Embodiment,
                          options: LeRobotOptions | None = None) -> Iterator[Episode]:
    """Every episode of the LeRobot v3 dataset at ``root``, in episode order (see the module doc)."""
    root = Path(root)
    options = options or LeRobotOptions()
    info = _info(root)
    camera, dtype = _camera(info, root, options.camera)
    indices = _action_indices(info, root, embodiment, options.action_map)
    tasks = _tasks(root)
    fps = float(info["fps"])
    has_terminate = TERMINATE in embodiment.names
    columns = ["episode_index", "frame_index", "task_index", "action"] + ([camera] if dtype == "image" else [])
    table_path, by_episode = None, {}
    for row in _episode_rows(root):
        episode_index = int(row["episode_index"])
        data_path = root / info["data_path"].format(chunk_index=int(row["data/chunk_index"]),
                                                    file_index=int(row["data/file_index"]))
        if data_path != table_path:
            # One data file holds many episodes: read it once, grouped by episode.
            table = _read_table(data_path)
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise LeRobotError(f"{data_path}: missing column(s) {', '.join(missing)}")
            table_path, by_episode = data_path, {}
            for record in table.select(columns).to_pylist():
                by_episode.setdefault(int(record["episode_index"]), []).append(record)
        frames = sorted(by_episode.get(episode_index, []), key=lambda r: r["frame_index"])
        if len(frames) != int(row["length"]):
            raise LeRobotError(f"{data_path}: episode {episode_index} has {len(frames)} frames, its metadata "
                               f"says {row['length']}")
        if dtype == "video":
            video_path = root / info["video_path"].format(
                video_key=camera, chunk_index=int(row[f"videos/{camera}/chunk_index"]),
                file_index=int(row[f"videos/{camera}/file_index"]))
            first = int(round(float(row[f"videos/{camera}/from_timestamp"]) * fps))
            images = _video_frames(video_path, first, len(frames), fps)
        else:
            images = [_png(r[camera], f"{data_path}: episode {episode_index} frame {r['frame_index']}")
                      for r in frames]
        steps = []
        for k, (frame, image) in enumerate(zip(frames, images)):
            vector = frame["action"]
            where = f"{data_path}: episode {episode_index} frame {frame['frame_index']}"
            if not isinstance(vector, list):
                raise LeRobotError(f"{where}: action: expected a list of numbers, got {vector!r}")
            action: dict[str, Any] = {name: vector[i] for name, i in indices.items()}
            if has_terminate:
                action[TERMINATE] = k == len(frames) - 1
            try:
                tokens = embodiment.encode(action)
            except Rt2RosError as exc:
                raise LeRobotError(f"{where}: {exc}") from None
            task = tasks.get(int(frame["task_index"])) if frame["task_index"] is not None else None
            if task is None:
                listed = row.get("tasks") or []
                if not listed:
                    raise LeRobotError(f"{where}: task {frame['task_index']} is not in meta/tasks.parquet")
                task = str(listed[0])
            steps.append(EpisodeStep(image=image, instruction=task, tokens=tokens,
                                     action=embodiment.decode(tokens),
                                     stamp_ns=int(round(int(frame["frame_index"]) / fps * 1e9)),
                                     embodiment=embodiment.name))
        info_out = EpisodeInfo(instruction=steps[0].instruction if steps else "", success=None,
                               embodiment=embodiment.name, control_rate_hz=fps, source="lerobot",
                               steps=len(steps))
        yield Episode(path=root / f"episode_{episode_index:06d}", info=info_out, steps=steps)
