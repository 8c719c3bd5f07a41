"""Run a policy on the simulator without ROS: one episode, step by step.

This is the fast path for data collection and evaluation: each policy action
goes through :meth:`TabletopSim.apply_action` (the same delta -> twist rule the
safety node uses), at a fixed control rate in simulated time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rt2_ros.policy.base import HandState, Policy, PolicyOutput
from rt2_ros.sim.errors import SimError
from rt2_ros.sim.tabletop import StepReport, TabletopSim
from rt2_ros.validation import expect_int, expect_number

__all__ = ["EpisodeStep", "EpisodeResult", "run_episode"]


@dataclass
class EpisodeStep:
    """One control step: the image the policy saw (None unless recorded), its output, what the sim did."""

    image: np.ndarray | None
    output: PolicyOutput
    report: StepReport


@dataclass
class EpisodeResult:
    """How an episode ended.

    success: the task's detector after the last step; terminated: the policy
    emitted terminate; steps: control steps taken; first_success_step: the
    first step after which the detector fired (None if never).  How far a
    failed episode got: closest_m, the smallest distance between the tool
    centre point and the centre of the object the task names (None without a
    task); grasped, whether the gripper ever held that object.
    """

    instruction: str
    success: bool
    terminated: bool
    steps: int
    sim_time: float
    first_success_step: int | None = None
    closest_m: float | None = None
    grasped: bool = False
    records: list[EpisodeStep] = field(default_factory=list)


def run_episode(sim: TabletopSim, policy: Policy, *, instruction: str | None = None,
                control_rate_hz: float = 5.0, max_steps: int = 100, render: bool = True,
                camera: str = "head", record: bool = False, hand_state: bool = False,
                on_step: Callable[[int, PolicyOutput, HandState | None], None] | None = None
                ) -> EpisodeResult:
    """Run ``policy`` on ``sim``'s current task until it terminates or ``max_steps`` pass.

    instruction: defaults to ``sim.task.instruction``.  render: give the policy
    real camera images; False passes a blank image (only for policies that
    ignore images, like the privileged expert) and is much faster.
    record: keep every step's image, output and report in ``records``.
    hand_state: give the policy the hand's state with each image (the end effector's height and
    the last gripper command sent, :class:`~rt2_ros.policy.base.HandState`), as a robot's
    policy node does from its end-effector pose and its own commands.
    on_step: called each step with the step's index, the policy's output and the hand state it
    was given (None without ``hand_state``), before the action is applied, so the simulator still
    shows the state the policy acted on (``rt2-ros eval --trace``, :mod:`rt2_ros.sim.step_trace`).
    """
    rate = expect_number("control_rate_hz", control_rate_hz, low=0.1, high=1000.0)
    expect_int("max_steps", max_steps, low=1)
    if instruction is None and sim.task is None:
        raise SimError("instruction: none given and the simulator has no task")
    text = instruction if instruction is not None else sim.task.instruction
    policy.reset()
    blank = None if render else np.zeros((*sim.config.image_size, 3), np.uint8)
    result = EpisodeResult(instruction=text, success=False, terminated=False, steps=0, sim_time=0.0)
    command: float | None = None  # the last gripper command sent (hand_state)
    target = sim.task.object if sim.task is not None else None
    for step in range(max_steps):
        image = sim.render(camera) if render else blank
        hand = HandState(float(sim.ee_pose().position[2]), command) if hand_state else None
        if hand is not None:
            output = policy.act(image, text, hand)
            command = float(output.action.get("gripper", command if command is not None else 0.0))
        else:
            output = policy.act(image, text)
        if on_step is not None:
            on_step(step, output, hand)
        report = sim.apply_action(output.action, rate)
        result.steps = step + 1
        if record:
            result.records.append(EpisodeStep(image if render else None, output, report))
        if result.first_success_step is None and sim.task is not None and sim.success():
            result.first_success_step = step + 1
        if target is not None:
            gap = float(np.linalg.norm(sim.ee_pose().position - sim.object_poses()[target].position))
            result.closest_m = gap if result.closest_m is None else min(result.closest_m, gap)
        if output.action.get("terminate"):
            result.terminated = True
            break
    result.success = sim.task is not None and sim.success()
    if target is not None:
        result.grasped = bool(sim.snapshot().objects[target].ever_grasped)
    result.sim_time = sim.sim_time
    return result
