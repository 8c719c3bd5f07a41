"""Per-step traces of evaluated episodes (``rt2-ros eval --trace FILE``): why an episode failed.

A success table says *that* a policy fails a task; a trace says *where*: for every control step one
JSON line with what the policy wrote (plan text, action tokens, decoded action), what it was given
(the hand's height and the last gripper command, with ``--hand-state``), where the hand is against
the task's objects, and what the scripted expert would command in that same state - the label
DAgger would give the step (``rt2-ros collect --policy-model``).  The expert here only watches: it
never drives the arm, so the trace describes the evaluated policy's own episode.

Lines look like::

    {"kind": "move_near", "seed": 3, "step": 12, "instruction": "...", "plan": "...",
     "tokens": [...], "action": {...}, "height_m": 0.071, "gripper_command": 1.0,
     "held": "red cylinder", "distance_m": {"red cylinder": 0.004, "blue cube": 0.213},
     "expert": {"phase": "transport", "tokens": [...], "action": {...}}, "token_agreement": [...]}

``token_agreement[i]`` is whether the policy's token ``i`` equals the expert's.  An expert that
gave up (it retries a failed grasp a few times) labels no more steps of the episode: its entry is
then ``{"phase": ..., "error": "..."}`` and ``token_agreement`` null; the policy's episode goes on.
Lines are flushed per episode, so a trace of an evaluation that is stopped part way is readable.
"""
from __future__ import annotations

import json
from typing import IO, Any

import numpy as np

from rt2_ros.policy.base import HandState, PolicyError, PolicyOutput
from rt2_ros.sim.errors import SimError

__all__ = ["StepTracer"]


def _json_value(value: Any) -> Any:
    """Numbers rounded for reading (4 decimals), bools and strings as they are."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    return value


class StepTracer:
    """Writes one JSON line per control step of the episodes run on ``sim`` (see the module doc).

    ``embodiment``: the evaluated policy's, so the expert's label is on the same bins as the
    policy's tokens.  Call :meth:`start` when an episode's task is set, then pass :meth:`step` as
    :func:`~rt2_ros.sim.rollout.run_episode`'s ``on_step``.
    """

    def __init__(self, sim: Any, embodiment: Any, stream: IO[str]):
        from rt2_ros.sim.expert import ScriptedExpert

        self.sim = sim
        self.embodiment = embodiment
        self.stream = stream
        self.expert = ScriptedExpert(sim, embodiment)
        self._episode: dict[str, Any] = {}
        self.lines = 0

    def start(self, kind: str, seed: int) -> None:
        """A new episode begins on the simulator's current task."""
        self.expert.reset()
        self._episode = {"kind": kind, "seed": int(seed)}
        self.stream.flush()

    def step(self, index: int, output: PolicyOutput, hand: HandState | None) -> None:
        """Record step ``index``: called after the policy acted, before its action is applied."""
        sim = self.sim
        task = sim.task
        hand_position = sim.ee_pose().position
        poses = sim.object_poses()
        try:
            label_tokens = self.embodiment.encode(self.expert.next_action())
        except (PolicyError, SimError) as err:
            # The watching expert gave up (repeated failed grasps): the step has no label, and the
            # evaluated policy's episode goes on - the trace must not fail it.
            label_tokens, expert_error = None, str(err)
        else:
            expert_error = ""
        record = dict(self._episode)
        record.update({
            "step": index,
            "instruction": task.instruction if task is not None else "",
            "plan": output.plan,
            "tokens": [int(t) for t in output.tokens],
            "action": {k: _json_value(v) for k, v in output.action.items()},
            "height_m": _json_value(hand_position[2]),
            "gripper_command": None if hand is None or hand.gripper_command is None
            else _json_value(hand.gripper_command),
            "held": sim.gripper_state().grasped,
            "distance_m": {} if task is None else {
                name: _json_value(np.linalg.norm(hand_position - poses[name].position))
                for name in task.objects},
            "expert": {"phase": self.expert.phase, "error": expert_error} if label_tokens is None else {
                "phase": self.expert.phase, "tokens": [int(t) for t in label_tokens],
                "action": {k: _json_value(v) for k, v in self.embodiment.decode(label_tokens).items()}},
            "token_agreement": None if label_tokens is None
            else [int(a) == int(b) for a, b in zip(output.tokens, label_tokens)],
        })
        self.stream.write(json.dumps(record) + "\n")
        self.lines += 1
