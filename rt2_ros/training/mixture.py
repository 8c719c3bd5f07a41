"""Co-fine-tuning batches: robot samples mixed with VQA samples at a set fraction.

RT-2 up-weights robot data so that it fills about half (PaLI-X) or two
thirds (PaLM-E) of every batch.  :class:`MixtureSampler` yields dataset
indices in consecutive groups of ``batch_size`` (the DataLoader's batches):
indices ``0..robot_count-1`` are robot samples, the next ``vqa_count`` VQA.
Each batch holds ``k`` robot samples where ``k`` is ``robot_fraction *
batch_size`` rounded stochastically (``floor`` plus one with probability of
the remainder), so the expected count is exactly ``robot_fraction *
batch_size`` even when that is not an integer (0.66 x 8 = 5.28) and the
long-run fraction matches the setting.  Robot positions inside a batch are
shuffled.  Within each source, samples are drawn without replacement in a
fresh permutation per pass, so every sample is seen once before any is seen
twice.  Everything derives from ``seed`` and the epoch: deterministic.

``robot_repeats`` draws some robot samples several times per pass.  The
steps where a policy decides something - closing or opening the gripper,
terminating - are a few of an episode's 20-40 steps (8 % in a DAgger round), yet
a missed one fails the episode however well the arm moved; :func:`event_repeats`
marks them.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from rt2_ros.errors import ConfigError
from rt2_ros.validation import expect_int, expect_number

__all__ = ["MixtureSampler", "robot_counts", "event_steps", "event_repeats"]


def robot_counts(batches: int, batch_size: int, robot_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Robot samples per batch for ``batches`` batches (stochastic rounding of ``fraction * size``)."""
    wanted = robot_fraction * batch_size
    base = math.floor(wanted)
    extra = rng.random(batches) < (wanted - base)
    return np.minimum(base + extra.astype(np.int64), batch_size)


def event_steps(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Which robot records are decisions: the action terminates, or its gripper command is on the
    other side of 0.5 from the command before it.

    The command before is the record's ``gripper_command`` when it has one, else the previous
    record's gripper action in the same episode (records in episode order, as the caches keep
    them; a joined set's ``part`` tells apart same-named episodes of different sources); an
    episode's first step without ``gripper_command`` is no gripper event.
    """
    out = np.zeros(len(records), bool)
    previous_episode, previous_grip = None, None
    for i, record in enumerate(records):
        action = record.get("action") or {}
        episode = (record.get("part"), record.get("episode"))
        before = record.get("gripper_command")
        if before is None and episode == previous_episode:
            before = previous_grip
        grip = action.get("gripper")
        switched = grip is not None and before is not None and (float(grip) >= 0.5) != (float(before) >= 0.5)
        out[i] = bool(action.get("terminate")) or switched
        previous_episode, previous_grip = episode, grip
    return out


def event_repeats(records: Sequence[Mapping[str, Any]], repeat: int) -> np.ndarray:
    """Draws per pass for each robot record: ``repeat`` for :func:`event_steps`, 1 for the rest."""
    expect_int("event_repeat", repeat, low=1, high=100)
    return np.where(event_steps(records), repeat, 1).astype(np.int64)


class _Cycle:
    """Endless draws without replacement from ``range(count)``, a new permutation per pass."""

    def __init__(self, count: int, rng: np.random.Generator):
        self.count, self.rng = count, rng
        self.order = rng.permutation(count)
        self.position = 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.position == self.count:
                self.order, self.position = self.rng.permutation(self.count), 0
            chunk = self.order[self.position:self.position + n]
            out.append(chunk)
            self.position += len(chunk)
            n -= len(chunk)
        return np.concatenate(out) if out else np.zeros(0, np.int64)


class MixtureSampler:
    """A torch-compatible sampler of mixed batches (see the module doc).

    ``num_batches`` batches per epoch (default: enough for every robot
    draw once at the set fraction).  ``robot_repeats``: draws per pass of
    each robot sample (default 1 each; see :func:`event_repeats`).
    ``set_epoch`` (called by the HF Trainer / accelerate) changes the draw;
    without it each new iteration uses the next epoch.
    """

    def __init__(self, robot_count: int, vqa_count: int, batch_size: int, robot_fraction: float = 0.5,
                 seed: int = 0, num_batches: int | None = None, robot_repeats: Sequence[int] | None = None):
        self.robot_count = expect_int("robot samples", robot_count, low=0)
        if robot_repeats is None:
            self.robot_pool = np.arange(robot_count)
        else:
            repeats = np.asarray(robot_repeats)
            if repeats.shape != (robot_count,) or not np.issubdtype(repeats.dtype, np.integer) \
                    or (robot_count and repeats.min() < 1):
                raise ConfigError(f"robot_repeats: expected {robot_count} integers >= 1 (one per robot "
                                  f"sample), got shape {repeats.shape} of {repeats.dtype}")
            self.robot_pool = np.repeat(np.arange(robot_count), repeats)
        self.vqa_count = expect_int("vqa samples", vqa_count, low=0)
        self.batch_size = expect_int("batch_size", batch_size, low=1)
        self.robot_fraction = expect_number("robot_fraction", robot_fraction, low=0.0, high=1.0)
        self.seed = expect_int("seed", seed, low=0)
        if robot_fraction > 0 and robot_count == 0:
            raise ConfigError(f"robot_fraction: {robot_fraction} needs robot samples, got none")
        if robot_fraction < 1 and vqa_count == 0:
            raise ConfigError(f"robot_fraction: {robot_fraction} leaves room for VQA samples but there are "
                              f"none (give VQA data, or set robot_fraction to 1.0)")
        if num_batches is None:
            per_batch = robot_fraction * batch_size
            num_batches = math.ceil(len(self.robot_pool) / per_batch) if per_batch > 0 \
                else math.ceil(vqa_count / batch_size)
        self.num_batches = expect_int("num_batches", max(1, int(num_batches)), low=1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches as index arrays (robot indices < robot_count)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        counts = robot_counts(self.num_batches, self.batch_size, self.robot_fraction, rng)
        robot = _Cycle(len(self.robot_pool), rng) if self.robot_count else None
        vqa = _Cycle(self.vqa_count, rng) if self.vqa_count else None
        out = []
        for k in counts:
            k = int(k)
            parts = []
            if k:
                parts.append(self.robot_pool[robot.take(k)])
            if self.batch_size - k:
                parts.append(vqa.take(self.batch_size - k) + self.robot_count)
            batch = np.concatenate(parts)
            out.append(batch[rng.permutation(len(batch))])
        return out

    def __iter__(self) -> Iterator[int]:
        batches = self.batches()
        self.epoch += 1
        for batch in batches:
            yield from (int(i) for i in batch)
