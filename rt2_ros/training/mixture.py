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
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from rt2_ros.errors import ConfigError
from rt2_ros.validation import expect_int, expect_number

__all__ = ["MixtureSampler", "robot_counts"]


def robot_counts(batches: int, batch_size: int, robot_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Robot samples per batch for ``batches`` batches (stochastic rounding of ``fraction * size``)."""
    wanted = robot_fraction * batch_size
    base = math.floor(wanted)
    extra = rng.random(batches) < (wanted - base)
    return np.minimum(base + extra.astype(np.int64), batch_size)


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
    sample once at the set fraction).  ``set_epoch`` (called by the HF
    Trainer / accelerate) changes the draw; without it each new iteration
    uses the next epoch.
    """

    def __init__(self, robot_count: int, vqa_count: int, batch_size: int, robot_fraction: float = 0.5,
                 seed: int = 0, num_batches: int | None = None):
        self.robot_count = expect_int("robot samples", robot_count, low=0)
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
            num_batches = math.ceil(robot_count / per_batch) if per_batch > 0 \
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
        robot = _Cycle(self.robot_count, rng) if self.robot_count else None
        vqa = _Cycle(self.vqa_count, rng) if self.vqa_count else None
        out = []
        for k in counts:
            k = int(k)
            parts = []
            if k:
                parts.append(robot.take(k))
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
