"""Training samples cached on disk: images resized once, plus an index.

Decoding bags and image files and resizing every image on every epoch would
dominate a CPU training run, so each data source is converted once into a
cache directory::

    <cache>/<kind>-<key>/
        manifest.json   {"format": "rt2_ros.samples/5", "kind": "robot"|"vqa", "key": {...}, "count": N, ...}
        pixels.npy      every image's RGB bytes, concatenated (uint8, memory-mapped when read)
        index.jsonl     one record per sample: "offset", "shape" (H, W, 3) into pixels.npy, and
                        robot: "episode", "step", "instruction", "tokens", "action", "success",
                               "objects", optionally "points" ({"goal": [x, y], "gripper": [x, y][, "object": [x, y]]}),
                               "height" (m) and "gripper_command" (see EpisodeStep)
                        vqa:   "question", "answer", "source", optionally "point"

Robot sources are directories of rosbag2 episodes or LeRobot v3 dataset
directories (:mod:`rt2_ros.training.lerobot_data`).  Each robot source has
its own cache (in its own ``.rt2_cache`` unless a cache directory is given),
and several sources are joined in memory: adding a directory of new episodes
(a DAgger round) reads only the new one.

``key`` holds everything the samples depend on (source files with sizes and
modification times, image size, embodiment, action source, outcome filter),
so a changed source or option builds a new cache and an unchanged one loads
in milliseconds.  Images are shrunk (never enlarged, bicubic like the
processors) so that their shorter side is ``image_size``, keeping the aspect
ratio: the model's processor then resizes or crops them as it would the
camera's full image.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from rt2_ros.action_language import Embodiment
from rt2_ros.errors import ConfigError
from rt2_ros.training.episodes import Episode, EpisodeTopics, find_episodes, read_episode
from rt2_ros.training.lerobot_data import (LeRobotOptions, is_lerobot_dir, lerobot_episode_count,
                                           read_lerobot_episodes)
from rt2_ros.training.vqa_data import VqaItem, iter_vqa_source

__all__ = ["SAMPLES_FORMAT", "OUTCOME_FILTERS", "SampleSet", "resize_shorter_side", "robot_samples",
           "vqa_samples", "source_fingerprint"]

SAMPLES_FORMAT = "rt2_ros.samples/5"
#: Which episodes become training data: ``success`` only, ``not-failed`` (success or unknown), ``all``.
OUTCOME_FILTERS = ("success", "not-failed", "all")
#: What a robot source's summary counts (summed over sources).
_ROBOT_COUNTS = ("episodes", "used", "excluded_by_outcome", "relabelled", "actions_without_image", "samples")


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink ``image`` so its shorter side is ``size``; smaller images pass as they are.

    PIL's antialiased bicubic, the resampling Hugging Face VLM processors
    (SigLIP, CLIP) use: a square camera image shrunk here is the image the
    processor makes of the full-size frame at run time.
    """
    from PIL import Image

    height, width = image.shape[:2]
    shorter = min(height, width)
    if shorter <= size:
        return np.ascontiguousarray(image)
    scale = size / shorter
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BICUBIC))


@dataclass
class SampleSet:
    """Samples of one kind with their images (see the module doc)."""

    kind: str
    records: list[dict[str, Any]]
    pixels: np.ndarray
    path: Path | None = None
    #: A set joined from several caches (:meth:`join`): their image stores, each record's
    #: ``"part"`` naming the one that holds its image (``pixels`` is then unused).
    parts: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> np.ndarray:
        """The HxWx3 uint8 image of sample ``index`` (a view into the cache)."""
        record = self.records[index]
        shape = tuple(record["shape"])
        start = int(record["offset"])
        pixels = self.parts[record["part"]] if self.parts else self.pixels
        return pixels[start:start + int(np.prod(shape))].reshape(shape)

    def subset(self, indices: Sequence[int]) -> "SampleSet":
        """A set of the given samples (sharing the image storage)."""
        return SampleSet(self.kind, [self.records[i] for i in indices], self.pixels, self.path, self.parts)

    @classmethod
    def join(cls, sets: Sequence["SampleSet"]) -> "SampleSet":
        """One set of the samples of ``sets`` (of one kind, none itself joined), sharing their images."""
        if len(sets) == 1:
            return sets[0]
        if any(s.parts for s in sets) or len({s.kind for s in sets}) != 1:
            raise ValueError("join: expected plain sets of one kind")
        records = [{**record, "part": k} for k, s in enumerate(sets) for record in s.records]
        return cls(sets[0].kind, records, np.zeros(0, np.uint8), None, tuple(s.pixels for s in sets))

    @classmethod
    def from_samples(cls, kind: str, samples: Iterable[tuple[np.ndarray | None, dict[str, Any]]]) -> "SampleSet":
        """Build in memory from (image, record) pairs (images stored as given; None repeats the previous)."""
        chunks, records, offset = [], [], 0
        for image, record in samples:
            if image is None:  # the previous sample's image again
                records.append({**record, "offset": records[-1]["offset"], "shape": records[-1]["shape"]})
                continue
            image = np.ascontiguousarray(image, dtype=np.uint8)
            records.append({**record, "offset": offset, "shape": list(image.shape)})
            chunks.append(image.reshape(-1))
            offset += image.size
        pixels = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
        return cls(kind, records, pixels)


def source_fingerprint(paths: Iterable[Path]) -> list[list[Any]]:
    """(path, size, mtime_ns) of every file under ``paths``: what a cache's validity depends on."""
    entries = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                       and ".rt2_cache" not in p.parts)
        for path in files:
            stat = path.stat()
            entries.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return entries


def _cache_dir(base: Path, kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return base / f"{kind}-{digest}"


def _load(directory: Path, key: dict[str, Any]) -> SampleSet | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != SAMPLES_FORMAT or manifest.get("key") != json.loads(json.dumps(key)):
            return None
        records = [json.loads(line) for line in (directory / "index.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        pixels = np.load(directory / "pixels.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None  # damaged: rebuilt by the caller
    if len(records) != manifest.get("count"):
        return None
    return SampleSet(manifest["kind"], records, pixels, directory)


def _build(directory: Path, kind: str, key: dict[str, Any],
           samples: Iterable[tuple[np.ndarray | None, dict[str, Any]]], extra: dict[str, Any]) -> SampleSet:
    """Write a cache (to a temporary directory renamed at the end, so a crash leaves no half cache)."""
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    records, offset = [], 0
    raw_path = tmp / "pixels.raw"
    with raw_path.open("wb") as raw:
        for image, record in samples:
            if image is None:  # the previous sample's image again: stored once
                records.append({**record, "offset": records[-1]["offset"], "shape": records[-1]["shape"]})
                continue
            image = np.ascontiguousarray(image, dtype=np.uint8)
            records.append({**record, "offset": offset, "shape": list(image.shape)})
            raw.write(image.tobytes())
            offset += image.size
    # .npy header + the raw bytes, without holding every image in memory at once.
    pixels = np.lib.format.open_memmap(tmp / "pixels.npy", mode="w+", dtype=np.uint8, shape=(offset,))
    with raw_path.open("rb") as raw:
        position = 0
        while chunk := raw.read(64 << 20):
            pixels[position:position + len(chunk)] = np.frombuffer(chunk, np.uint8)
            position += len(chunk)
    pixels.flush()
    del pixels
    raw_path.unlink()
    with (tmp / "index.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    manifest = {"format": SAMPLES_FORMAT, "kind": kind, "key": key, "count": len(records), **extra}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    loaded = _load(directory, key)
    assert loaded is not None
    return loaded


def _default_cache_base(first_source: Path) -> Path:
    root = first_source if first_source.is_dir() else first_source.parent
    return root / ".rt2_cache"


def robot_samples(sources: Sequence[str | Path], embodiment: Embodiment, image_size: int, *,
                  cache_dir: str | Path | None = None, topics: EpisodeTopics | None = None,
                  action_source: str = "auto", outcomes: str = "success",
                  control_rate_hz: float | None = None, lerobot: LeRobotOptions | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[SampleSet, dict[str, Any]]:
    """Robot samples of every episode under ``sources`` (rosbag2 episode directories or LeRobot v3
    datasets, read with ``lerobot``), one cache per source, joined.

    Returns the samples and a summary (episodes used / skipped by outcome /
    relabelled, actions without an image, and each source's cache).
    Relabelled (DAgger) episodes pass every outcome filter: their actions are
    the expert's labels.  With several sources, every episode name starts with
    its source's directory name, so episodes of different sources stay apart
    (held-out splits go by name).  Raises ConfigError for a source without
    episodes, and when no sample remains.
    """
    if outcomes not in OUTCOME_FILTERS:
        raise ConfigError(f"outcomes: expected one of {', '.join(OUTCOME_FILTERS)}, got {outcomes!r}")
    if not sources:
        raise ConfigError("data: expected at least one episode directory, got none")
    roots = [Path(s) for s in sources]
    topics = topics or EpisodeTopics()
    lerobot = lerobot or LeRobotOptions()
    sets, summary = [], {**dict.fromkeys(_ROBOT_COUNTS, 0), "caches": []}
    names = [root.name or str(root) for root in roots]
    labels = [str(root) if names.count(name) > 1 else name for root, name in zip(roots, names)]
    for k, root in enumerate(roots):
        samples, part = _robot_source(root, embodiment, image_size, cache_dir, topics, action_source, outcomes,
                                      control_rate_hz, lerobot, progress)
        if len(roots) > 1:
            samples.records = [{**r, "episode": f"{labels[k]}/{r['episode']}"} for r in samples.records]
        sets.append(samples)
        for key in _ROBOT_COUNTS:
            summary[key] += int(part.get(key, 0))
        summary["caches"].append(str(samples.path))
    if not summary["samples"]:
        hint = ""
        if summary["excluded_by_outcome"] and outcomes == "success":
            hint = (" (episodes that record no outcome, e.g. LeRobot datasets, count only with outcomes "
                    "not-failed or all)")
        raise ConfigError(f"data: no training samples: {summary['episodes']} episodes, "
                          f"{summary['excluded_by_outcome']} excluded by outcomes={outcomes!r}{hint}, "
                          f"{summary['actions_without_image']} actions without a matching image")
    return SampleSet.join(sets), summary


def _robot_source(root: Path, embodiment: Embodiment, image_size: int, cache_dir: str | Path | None,
                  topics: EpisodeTopics, action_source: str, outcomes: str, control_rate_hz: float | None,
                  lerobot: LeRobotOptions, progress: Callable[[int, int], None] | None
                  ) -> tuple[SampleSet, dict[str, Any]]:
    """The samples of one robot source, from its cache (built when missing or out of date)."""
    dataset = is_lerobot_dir(root)
    episodes = [] if dataset else find_episodes(root)
    if not episodes and not dataset:
        raise ConfigError(f"data: no episode bags (directories with metadata.yaml) or LeRobot v3 dataset "
                          f"(meta/info.json) under {root}")
    key = {"kind": "robot", "image_size": image_size, "embodiment": embodiment.to_dict(),
           "topics": vars(topics), "action_source": action_source, "outcomes": outcomes,
           "control_rate_hz": control_rate_hz, "sources": source_fingerprint(episodes)}
    if dataset:
        key["lerobot"] = {"camera": lerobot.camera, "action_map": [list(p) for p in lerobot.action_map],
                          "sources": source_fingerprint([root])}
    base = Path(cache_dir) if cache_dir else _default_cache_base(root)
    directory = _cache_dir(base, "robot", key)
    samples = _load(directory, key)
    if samples is not None:
        return samples, json.loads((directory / "manifest.json").read_text(encoding="utf-8"))["summary"]
    summary = dict.fromkeys(_ROBOT_COUNTS, 0)
    total = lerobot_episode_count(root) if dataset else len(episodes)

    def read_all() -> Iterable[tuple[str, Episode]]:
        for number, path in enumerate(episodes):
            if progress is not None:
                progress(number, total)
            yield (str(path.relative_to(root)) if path != root else path.name,
                   read_episode(path, embodiment, topics=topics, action_source=action_source,
                                control_rate_hz=control_rate_hz))
        if dataset:
            for number, episode in enumerate(read_lerobot_episodes(root, embodiment, lerobot)):
                if progress is not None:
                    progress(number, total)
                yield f"{root.name}/{episode.path.name}", episode

    # The generator fills the summary in; the manifest is written after it has run.
    samples = _build(directory, "robot", key, _robot_generator(read_all(), image_size, outcomes, summary),
                     {"summary": summary})
    return samples, summary


def _robot_generator(episodes: Iterable[tuple[str, Episode]], image_size: int, outcomes: str,
                     summary: dict[str, Any]) -> Iterable[tuple[np.ndarray, dict[str, Any]]]:
    """Samples of every ``(name, episode)``, counting into ``summary``."""
    for name, episode in episodes:
        summary["episodes"] += 1
        success = episode.info.success
        # A relabelled (DAgger) episode's actions are the expert's whatever the learner that drove
        # it achieved: its outcome says nothing about the labels, so no outcome filter drops it.
        if not episode.info.relabelled and ((outcomes == "success" and success is not True)
                                            or (outcomes == "not-failed" and success is False)):
            summary["excluded_by_outcome"] += 1
            continue
        summary["relabelled"] += int(episode.info.relabelled)
        summary["used"] += 1
        summary["actions_without_image"] += episode.skipped
        for index, step in enumerate(episode.steps):
            summary["samples"] += 1
            record = {
                "episode": name, "step": index, "instruction": step.instruction, "tokens": step.tokens,
                "action": {k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
                           for k, v in step.action.items()},
                "success": success, "objects": list(episode.info.objects)}
            if step.points:
                record["points"] = {name: list(point) for name, point in step.points.items()}
            for state in ("height", "gripper_command"):
                if getattr(step, state) is not None:
                    record[state] = float(getattr(step, state))
            yield resize_shorter_side(step.image, image_size), record


def vqa_samples(sources: Sequence[str | Path], image_size: int, *, cache_dir: str | Path | None = None,
                hf_options: dict[str, Any] | None = None,
                progress: Callable[[int, int], None] | None = None) -> SampleSet:
    """VQA samples of every source (JSONL files, ``collect`` outputs, datasets directories), cached."""
    roots = [Path(s) for s in sources]
    hf_options = dict(hf_options or {})
    key = {"kind": "vqa", "image_size": image_size, "hf_options": hf_options,
           "sources": source_fingerprint(roots)}
    base = Path(cache_dir) if cache_dir else _default_cache_base(roots[0])
    directory = _cache_dir(base, "vqa", key)
    cached = _load(directory, key)
    if cached is not None:
        return cached
    items: list[VqaItem] = [item for root in roots for item in iter_vqa_source(root, **hf_options)]

    def generate() -> Iterable[tuple[np.ndarray | None, dict[str, Any]]]:
        # Consecutive questions about one image store it once.
        previous = None
        for number, item in enumerate(items):
            if progress is not None:
                progress(number, len(items))
            image = None if item.image_id == previous else resize_shorter_side(item.load(), image_size)
            previous = item.image_id
            record = {"question": item.question, "answer": item.answer, "source": item.source}
            if item.point is not None:
                record["point"] = list(item.point)
            yield image, record

    return _build(directory, "vqa", key, generate(), {})
