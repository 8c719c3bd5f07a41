"""The privileged-state scripted expert: solves every task kind, speaks legal tokens, holds still."""
from __future__ import annotations

import numpy as np
import pytest

from rt2_ros.action_language import load_embodiment, parse_action_text
from rt2_ros.policy.base import Policy, PolicyError
from rt2_ros.sim.expert import ExpertPolicy
from rt2_ros.sim.rollout import run_episode
from rt2_ros.sim.tabletop import TabletopSim

KINDS = ("pick", "move_near", "push", "place_on")
SEEDS = range(5)
RATE_HZ = 5.0
BLANK = np.zeros((8, 8, 3), np.uint8)


@pytest.fixture(scope="module")
def sim():
    with TabletopSim(0, task=None) as s:
        yield s


@pytest.fixture(scope="module")
def outcomes(sim):
    """Run the expert on every kind and seed once (apply_action mode, no ROS, no rendering)."""
    policy = ExpertPolicy(sim)
    results = {}
    for kind in KINDS:
        for seed in SEEDS:
            sim.reset(seed, task=kind)
            results[kind, seed] = run_episode(sim, policy, control_rate_hz=RATE_HZ, max_steps=100,
                                              render=False, record=True)
    return results


def test_expert_solves_every_task_kind(outcomes):
    solved = [key for key, result in outcomes.items() if result.success and result.terminated]
    assert len(solved) / len(outcomes) >= 0.95, sorted(set(outcomes) - set(solved))
    for kind in KINDS:
        assert any(k == kind for k, _ in solved), f"no {kind} episode solved"


def test_expert_terminates_when_and_only_when_success_fires(outcomes):
    for (kind, seed), result in outcomes.items():
        flags = [bool(step.output.action["terminate"]) for step in result.records]
        assert flags[-1] and not any(flags[:-1]), (kind, seed)
        assert result.first_success_step is not None and result.first_success_step < result.steps


def test_expert_speaks_legal_tokens_within_the_embodiment_bounds(outcomes):
    embodiment = load_embodiment("rt2_arm")
    for result in outcomes.values():
        for step in result.records:
            out = step.output
            assert parse_action_text(out.text, embodiment) == out.tokens
            assert out.action == embodiment.decode(out.tokens)
            assert embodiment.encode(out.action) == out.tokens
            for dim in embodiment.dims:
                if dim.kind == "continuous":
                    assert dim.low <= out.action[dim.name] <= dim.high
            assert out.plan == "" and out.timings["total"] >= 0


def test_expert_holds_still_after_terminating(sim):
    policy = ExpertPolicy(sim)
    sim.reset(2, task="pick")
    result = run_episode(sim, policy, control_rate_hz=RATE_HZ, max_steps=100, render=False)
    assert result.success and result.terminated
    ee = sim.ee_pose().position
    held = sim.object_poses()[sim.task.object].position
    for _ in range(10):                                   # two more seconds of terminate actions
        out = policy.act(BLANK, sim.task.instruction)
        assert out.action["terminate"] is True
        sim.apply_action(out.action, RATE_HZ)
    assert np.abs(sim.ee_pose().position - ee).max() < 1e-3
    assert np.abs(sim.object_poses()[sim.task.object].position - held).max() < 2e-3
    assert sim.success()


def test_expert_policy_is_a_policy_labelled_as_privileged(sim):
    policy = ExpertPolicy(sim)
    assert isinstance(policy, Policy)
    assert policy.name == "expert" and policy.privileged is True


def test_expert_follows_a_typed_instruction(sim):
    sim.reset(1, task="pick")
    other = next(name for name in sim.scene.names if name != sim.task.object)
    policy = ExpertPolicy(sim)
    result = run_episode(sim, policy, instruction=f"Pick up the {other}.", control_rate_hz=RATE_HZ,
                         max_steps=100, render=False)
    assert sim.task.object == other and sim.task.kind == "pick"
    assert result.success and result.terminated


def test_expert_rejects_instructions_it_cannot_parse_and_bad_images(sim):
    sim.reset(1, task="pick")
    policy = ExpertPolicy(sim)
    with pytest.raises(PolicyError, match="expert: instruction: 'juggle' matches no task template"):
        policy.act(BLANK, "juggle")
    with pytest.raises(PolicyError, match="image"):
        policy.act(np.zeros((8, 8), np.uint8), sim.task.instruction)


def test_expert_refuses_an_embodiment_without_z_or_gripper(sim):
    with pytest.raises(PolicyError, match="language_table.*missing"):
        ExpertPolicy(sim, embodiment="language_table")


def test_episode_with_rendered_images(sim):
    sim.reset(0, task="push")
    result = run_episode(sim, ExpertPolicy(sim), control_rate_hz=RATE_HZ, max_steps=3, render=True, record=True)
    assert result.steps == 3 and not result.terminated
    assert all(step.image.shape == (224, 224, 3) for step in result.records)
    assert not np.array_equal(result.records[0].image, result.records[-1].image)   # the hand moved


def test_expert_rises_from_the_moment_it_closes_on_the_object(sim):
    # Staying still while the fingers close and settle would make "gripper at the object at the
    # table" mean "stay" on some frames and "go up" on others, which a policy that sees one frame
    # cannot tell: it closes while rising and lifts as soon as it holds the object.
    policy = ExpertPolicy(sim)
    for seed in range(3):
        sim.reset(seed, task="pick")
        policy.reset()
        closing, held_steps = [], []
        for _ in range(60):
            held = sim.gripper_state().grasped == sim.task.object
            out = policy.act(BLANK, sim.task.instruction)
            if out.action["terminate"]:
                break
            (held_steps if held else closing if out.action["gripper"] > 0.5 else []).append(out.action["z"])
            sim.apply_action(out.action, RATE_HZ)
        assert sim.success() and held_steps and closing, seed
        assert all(z > 0.0 for z in closing + held_steps), (seed, closing, held_steps)


def test_expert_rises_while_it_opens_to_release_the_object(sim):
    # The release mirrors the grasp: opening in place and then rising would label the same
    # frame (open fingers around the placed object) "stay" on some steps and "up" on others.
    policy = ExpertPolicy(sim)
    for kind in ("place_on", "move_near"):
        sim.reset(0, task=kind)
        policy.reset()
        was_held, opening = False, []
        for _ in range(80):
            was_held = was_held or sim.gripper_state().grasped == sim.task.object
            out = policy.act(BLANK, sim.task.instruction)
            if out.action["terminate"]:
                break
            if was_held and out.action["gripper"] < 0.5:
                opening.append(out.action["z"])
            sim.apply_action(out.action, RATE_HZ)
        assert sim.success() and opening, kind
        assert all(z > 0.0 for z in opening), (kind, opening)


def test_a_rollout_with_hand_state_gives_the_policy_the_hands_height_and_last_command(sim):
    from rt2_ros.policy.base import HandState

    class Watching(ExpertPolicy):
        """The expert, noting the hand state and the true height at each call."""

        def __init__(self, sim):
            super().__init__(sim)
            self.seen = []

        def act(self, image, instruction, hand=None):
            self.seen.append((hand, float(sim.ee_pose().position[2])))
            return super().act(image, instruction, hand)

    policy = Watching(sim)
    sim.reset(2, task="pick")
    result = run_episode(sim, policy, control_rate_hz=RATE_HZ, max_steps=100, render=False, hand_state=True)
    assert result.success and len(policy.seen) == result.steps
    hands = [hand for hand, _ in policy.seen]
    assert all(isinstance(hand, HandState) for hand in hands)
    assert [hand.height_m for hand in hands] == [height for _, height in policy.seen]
    # None before the first command, then the gripper command of the step before.
    assert hands[0].gripper_command is None
    closes = [k for k, hand in enumerate(hands) if (hand.gripper_command or 0.0) >= 0.5]
    assert closes and hands[closes[0] - 1].gripper_command < 0.5, "the grasp shows up as a closed command"
    # Without it, nothing is passed.
    policy.seen.clear()
    sim.reset(2, task="pick")
    run_episode(sim, policy, control_rate_hz=RATE_HZ, max_steps=5, render=False)
    assert all(hand is None for hand, _ in policy.seen)
    with pytest.raises(PolicyError, match="hand.height_m: expected a finite height in m, got nan"):
        HandState(float("nan"), 0.0)
    with pytest.raises(PolicyError, match="hand.gripper_command: expected a finite closedness 0..1 or None"):
        HandState(0.1, float("inf"))


def _driven_to(sim, seed, kind, phase, limit=60):
    """Reset ``sim`` to episode ``seed`` of ``kind`` and let an expert drive until its state machine
    reaches ``phase``; return that (driving) expert."""
    driver = ExpertPolicy(sim)
    sim.reset(seed, task=kind)
    driver.reset()
    for _ in range(limit):
        if driver.expert.phase == phase:
            return driver
        sim.apply_action(driver.act(BLANK, sim.task.instruction).action, RATE_HZ)
    raise AssertionError(f"the expert never reached {phase!r} (at {driver.expert.phase!r})")


@pytest.mark.parametrize("kind", ["move_near", "pick"])
def test_an_expert_that_watched_another_policy_grasp_labels_the_lift(sim, kind):
    # DAgger: a learner drove the hand to the grasp while this labelling expert was still in its
    # first phase. The label must be the lift with closed fingers, not "open and go back up".
    _driven_to(sim, 1, kind, "lift")
    assert sim.gripper_state().grasped == sim.task.object
    watcher = ExpertPolicy(sim)
    assert watcher.expert.phase == "approach"
    action = watcher.act(BLANK, sim.task.instruction).action
    assert watcher.expert.phase == "lift"
    assert action["gripper"] == 1.0 and action["z"] > 0.0 and not action["terminate"]
    # ... and it goes on to solve the task from there.
    result = run_episode(sim, watcher, control_rate_hz=RATE_HZ, max_steps=100, render=False)
    assert result.success and result.terminated


@pytest.mark.parametrize("kind", ["pick", "push"])
def test_an_expert_that_watched_another_policy_descend_labels_the_descent(sim, kind):
    # The learner took the hand straight down over the object (behind it, for a push), below where
    # the expert hovers before descending: the label goes on down, not back up to the hover point.
    driver = _driven_to(sim, 3, kind, "descend")
    for _ in range(2):
        sim.apply_action(driver.act(BLANK, sim.task.instruction).action, RATE_HZ)
    assert driver.expert.phase == "descend"
    watcher = ExpertPolicy(sim)
    action = watcher.act(BLANK, sim.task.instruction).action
    assert watcher.expert.phase == "descend" and action["z"] < 0.0
    assert action["gripper"] == (1.0 if kind == "push" else 0.0)   # pushes are made with closed fingers
    # Above the hover point (where the descent starts) the watching expert still approaches first.
    sim.reset(3, task=kind)
    fresh = ExpertPolicy(sim)
    assert fresh.act(BLANK, sim.task.instruction).action["z"] < 0.0 and fresh.expert.phase == "approach"


@pytest.mark.parametrize("kind", ["place_on", "move_near"])
def test_an_expert_that_watched_another_policy_carry_the_object_there_labels_setting_it_down(sim, kind):
    # The learner carried the object over where it goes, lower than the expert carries it: the label
    # sets it down from there, not "up to the carrying height" first.
    driver = _driven_to(sim, 2, kind, "lower", limit=80)
    sim.apply_action(driver.act(BLANK, sim.task.instruction).action, RATE_HZ)
    assert driver.expert.phase == "lower"
    watcher = ExpertPolicy(sim)
    action = watcher.act(BLANK, sim.task.instruction).action
    assert watcher.expert.phase == "lower"
    assert action["gripper"] == 1.0 and action["z"] < 0.0
    result = run_episode(sim, watcher, control_rate_hz=RATE_HZ, max_steps=100, render=False)
    assert result.success and result.terminated
    # Held away from where it goes (just grasped), it is still lifted to the carrying height first.
    driver = _driven_to(sim, 2, kind, "lift")
    watcher = ExpertPolicy(sim)
    assert watcher.act(BLANK, sim.task.instruction).action["z"] > 0.0 and watcher.expert.phase == "lift"
