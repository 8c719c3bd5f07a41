"""The co-fine-tuning mixture sampler: robot fraction per batch, coverage, determinism, errors."""
from __future__ import annotations

import numpy as np
import pytest

from rt2_ros.errors import ConfigError
from rt2_ros.training.mixture import MixtureSampler, event_repeats, event_steps, robot_counts


@pytest.mark.parametrize("fraction,batch_size", [(0.5, 16), (0.66, 8), (0.25, 6), (0.9, 3), (1.0, 4), (0.0, 5)])
def test_robot_fraction_over_many_batches_is_within_2_percent(fraction, batch_size):
    sampler = MixtureSampler(robot_count=500 if fraction else 0, vqa_count=700 if fraction < 1 else 0,
                             batch_size=batch_size, robot_fraction=fraction, seed=3, num_batches=2000)
    batches = sampler.batches()
    assert len(batches) == 2000 and all(len(b) == batch_size for b in batches)
    robot = np.array([(b < sampler.robot_count).sum() for b in batches])
    assert abs(robot.mean() / batch_size - fraction) < 0.02
    # Each batch holds floor or ceil of fraction * batch_size robot samples, never anything else.
    wanted = fraction * batch_size
    assert set(robot.tolist()) <= {int(np.floor(wanted)), int(np.ceil(wanted))}


def test_iteration_yields_batches_in_order_and_indices_in_range():
    sampler = MixtureSampler(robot_count=10, vqa_count=7, batch_size=4, robot_fraction=0.5, seed=1)
    sampler.set_epoch(0)
    flat = list(sampler)
    assert len(flat) == len(sampler) == sampler.num_batches * 4
    assert all(0 <= i < 17 for i in flat)
    sampler.set_epoch(0)
    assert np.concatenate(sampler.batches()).tolist() == flat


def test_same_seed_same_batches_other_epoch_other_batches():
    a = MixtureSampler(50, 50, 8, 0.5, seed=7)
    b = MixtureSampler(50, 50, 8, 0.5, seed=7)
    assert [x.tolist() for x in a.batches()] == [x.tolist() for x in b.batches()]
    b.set_epoch(1)
    assert [x.tolist() for x in a.batches()] != [x.tolist() for x in b.batches()]
    c = MixtureSampler(50, 50, 8, 0.5, seed=8)
    assert [x.tolist() for x in a.batches()] != [x.tolist() for x in c.batches()]


def test_iterating_without_set_epoch_moves_to_the_next_epoch():
    sampler = MixtureSampler(30, 30, 6, 0.5, seed=0)
    assert list(sampler) != list(sampler)


def test_every_robot_sample_is_seen_once_before_any_twice():
    sampler = MixtureSampler(robot_count=37, vqa_count=100, batch_size=8, robot_fraction=0.5, seed=2,
                             num_batches=40)
    robot_order = [int(i) for b in sampler.batches() for i in b if i < 37]
    first_pass = robot_order[:37]
    assert sorted(first_pass) == list(range(37))


def test_default_epoch_covers_the_robot_data_once():
    sampler = MixtureSampler(robot_count=100, vqa_count=1000, batch_size=10, robot_fraction=0.5, seed=0)
    assert sampler.num_batches == 20


def test_stochastic_rounding_counts():
    counts = robot_counts(10000, 8, 0.66, np.random.default_rng(0))
    assert set(counts.tolist()) == {5, 6}
    assert abs(counts.mean() - 5.28) < 0.05


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="robot_fraction: 0.5 leaves room for VQA"):
        MixtureSampler(10, 0, 4, 0.5)
    with pytest.raises(ConfigError, match="needs robot samples"):
        MixtureSampler(0, 10, 4, 0.5)
    with pytest.raises(ConfigError, match="robot_fraction: expected a number <= 1.0, got 1.5"):
        MixtureSampler(10, 10, 4, 1.5)
    with pytest.raises(ConfigError, match="batch_size: expected an integer >= 1, got 0"):
        MixtureSampler(10, 10, 0, 0.5)


def _step(episode, grip, before=None, terminate=False):
    record = {"episode": episode, "action": {"terminate": terminate, "x": 0.0, "gripper": grip}}
    if before is not None:
        record["gripper_command"] = before
    return record


def test_event_steps_are_gripper_switches_and_terminates():
    # From the command before the step when recorded (sim and recorded episodes) ...
    recorded = [_step("a", 0.0, 0.0), _step("a", 1.0, 0.0), _step("a", 1.0, 1.0),
                _step("a", 0.0, 1.0), _step("a", 0.0, 0.0, terminate=True)]
    assert event_steps(recorded).tolist() == [False, True, False, True, True]
    # ... else from the previous step's action in the same episode; a new episode starts afresh.
    bare = [_step("a", 0.0), _step("a", 1.0), _step("a", 1.0), _step("b", 1.0), _step("b", 0.2)]
    assert event_steps(bare).tolist() == [False, True, False, False, True]
    # Sources joined in one set may name their episodes alike: the part tells them apart.
    joined = [dict(_step("episode_0", 0.0), part=0), dict(_step("episode_0", 1.0), part=1)]
    assert event_steps(joined).tolist() == [False, False]
    assert event_repeats(recorded, 4).tolist() == [1, 4, 1, 4, 4]
    with pytest.raises(ConfigError, match="event_repeat: expected an integer >= 1, got 0"):
        event_repeats(recorded, 0)


def test_repeated_robot_samples_are_drawn_that_many_times_per_pass():
    repeats = np.ones(40, np.int64)
    repeats[[3, 17]] = 5
    sampler = MixtureSampler(robot_count=40, vqa_count=100, batch_size=8, robot_fraction=0.5, seed=4,
                             robot_repeats=repeats)
    assert sampler.num_batches == 12  # 48 draws per pass at 4 robot samples per batch
    robot_order = [int(i) for b in sampler.batches() for i in b if i < 40]
    first_pass = robot_order[:48]
    counts = np.bincount(first_pass, minlength=40)
    assert counts[3] == counts[17] == 5 and (np.delete(counts, [3, 17]) == 1).all()
    # Without repeats the draws are the ones the sampler always made.
    plain = MixtureSampler(40, 100, 8, 0.5, seed=4)
    same = MixtureSampler(40, 100, 8, 0.5, seed=4, robot_repeats=np.ones(40, np.int64))
    assert [b.tolist() for b in plain.batches()] == [b.tolist() for b in same.batches()]
    with pytest.raises(ConfigError, match=r"robot_repeats: expected 40 integers >= 1 .*got shape \(39,\)"):
        MixtureSampler(40, 100, 8, 0.5, robot_repeats=np.ones(39, np.int64))
    with pytest.raises(ConfigError, match="robot_repeats: expected 40 integers >= 1"):
        MixtureSampler(40, 100, 8, 0.5, robot_repeats=np.zeros(40, np.int64))
