"""A scripted expert that solves the tabletop tasks from privileged simulator state.

:class:`ScriptedExpert` reads the true object poses, contacts and the commanded
end-effector target straight from a :class:`~rt2_ros.sim.tabletop.TabletopSim`
(no camera) and returns one action per control step, in an embodiment's units
and already on that embodiment's bins: every value it emits is exactly what
a model speaking those tokens would produce.  Once the task's success
detector fires it emits ``terminate`` with a still hand from then on.

:class:`ExpertPolicy` exposes it through the normal :class:`Policy` interface
(name ``"expert"``).  It is a **privileged-state reference**, not a learned
policy: it ignores the image and reads the simulator it is bound to.  Use it to
collect demonstrations and as an upper bound in evaluations, labelled as such.

Across processes (the sim node in one, the policy node in another) the
expert cannot read the simulator, so the sim node publishes a **privileged
snapshot** of it (:func:`privileged_snapshot`, plain JSON-able data, format
:data:`PRIVILEGED_STATE_FORMAT`) and :class:`StateFedExpertPolicy` plans from
the newest one it was given (:meth:`StateFedExpertPolicy.observe`), through
:class:`SnapshotSim`, a read-only stand-in for the simulator built from a
snapshot.  The snapshot is labelled ``"privileged": true``: it holds true
object poses and contacts that no camera gives, so it is only for the expert
and for scoring, never an input of a learned policy.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from rt2_ros.action_language import ActionLanguageError, Embodiment, format_action_text, load_embodiment
from rt2_ros.policy.base import HandState, Policy, PolicyError, PolicyOutput, check_image, check_instruction
from rt2_ros.sim.errors import SimError
from rt2_ros.sim.rotations import quat_error, rpy_to_quat
from rt2_ros.sim.scene import FINGER_HALF_THICKNESS, ObjectSpec
from rt2_ros.sim.tabletop import ACTION_KEYS, GripperState, Pose, TabletopSim
from rt2_ros.sim.tasks import (DIRECTIONS, NEAR_PLACEMENT_DISTANCE, PUSH_PLAN_MARGIN, Footprint,
                               TaskSpec, free_spot_near)

__all__ = ["ScriptedExpert", "ExpertPolicy", "ExpertSettings", "StateFedExpertPolicy",
           "SnapshotSim", "privileged_snapshot", "PRIVILEGED_STATE_FORMAT"]

_REQUIRED_DIMS = ("terminate", "x", "y", "z", "gripper")


@dataclass(frozen=True)
class ExpertSettings:
    """How the expert moves (per control step; within the embodiment's bounds).

    max_step: largest translation per step (m); slow_step: near contacts (m);
    max_turn: largest rotation per step (rad); hover: height of the fingertips
    above an object's top before descending (m); close_rise: how far the hand
    rises per step while the gripper closes or opens (m); retries: grasp attempts.
    """

    max_step: float = 0.045
    slow_step: float = 0.02
    max_turn: float = 0.2
    hover: float = 0.06
    carry_clearance: float = 0.04
    position_tolerance: float = 0.004
    close_rise: float = 0.008
    yaw_tolerance: float = 0.04
    retries: int = 3


def _next_output(expert: "ScriptedExpert", embodiment: Any, started: float) -> PolicyOutput:
    """The expert's next action, through the bins, as a PolicyOutput timed from ``started``."""
    try:
        action = expert.next_action()
    except SimError as err:
        raise PolicyError(f"expert: {err}") from err
    tokens = embodiment.encode(action)
    return PolicyOutput(tokens=tokens, action=embodiment.decode(tokens), plan="",
                        text=format_action_text(tokens),
                        timings={"total": (time.perf_counter() - started) * 1000.0})


class ScriptedExpert:
    """Privileged-state task solver for a :class:`TabletopSim` (see the module doc).

    ``sim`` is the live simulator or a :class:`SnapshotSim` (the same
    read-only calls, answered from a privileged snapshot).  Call :meth:`reset`
    when a new task starts and :meth:`next_action` once per control step, then
    apply the returned action (e.g. ``sim.apply_action``).

    It can also label steps another policy drives (DAgger, ``rt2-ros collect
    --policy-model``; ``rt2-ros eval --trace``): when that policy got ahead of
    the phases, the phase follows the state - the object held: lift it; the
    open hand already below the hover point over the object (behind it, for a
    push): descend from there; the held object already over where it goes,
    below the carrying height but above where it is set down: lower it -
    instead of labelling the way back to where the expert's own path would be.
    """

    def __init__(self, sim: "TabletopSim | SnapshotSim", embodiment: Embodiment | str = "rt2_arm",
                 settings: ExpertSettings | None = None):
        self.sim = sim
        self.embodiment = load_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
        names = self.embodiment.names
        missing = [n for n in _REQUIRED_DIMS if n not in names]
        unknown = [n for n in names if n not in ACTION_KEYS]
        if missing or unknown:
            raise PolicyError(f"embodiment {self.embodiment.name!r}: the expert needs the dims "
                              f"{', '.join(_REQUIRED_DIMS)} and knows only {', '.join(ACTION_KEYS)} "
                              f"(missing: {missing or 'none'}, unknown: {unknown or 'none'})")
        self.settings = settings or ExpertSettings()
        # Every value each dim can take, so the expert emits the nearest representable one.
        self._values: dict[str, np.ndarray] = {}
        for position, dim in enumerate(self.embodiment.dims):
            if dim.kind != "continuous":
                continue
            tokens = [0] * self.embodiment.num_tokens
            column = []
            for b in range(self.embodiment.allowed_bins(position)):
                tokens[position] = b
                column.append(float(self.embodiment.decode(tokens)[dim.name]))
            self._values[dim.name] = np.array(column)
        self._limits = {n: (float(v.min()), float(v.max())) for n, v in self._values.items()}
        self.reset()

    # ------------------------------------------------------------------ state machine

    def reset(self) -> None:
        """Forget progress: the next action starts the current task from scratch."""
        self._task: TaskSpec | None = None
        self._phase = "approach"
        self._attempts = 0
        self._done = False
        self._grip_offset = 0.0
        self._place_xy: tuple[float, float] | None = None
        self._wait = 0
        #: TCP position the last action heads for (None before the first and once done): where the
        #: simulator's collector tells a learning policy to look (grounding).
        self.goal: np.ndarray | None = None

    @property
    def phase(self) -> str:
        """The current phase name ("approach", "descend", "close", ..., "done")."""
        return "done" if self._done else self._phase

    def next_action(self) -> dict:
        """Return the next action (dim name -> value on the embodiment's bins)."""
        sim = self.sim
        if sim.task is None:
            raise SimError("task: the simulator has no task for the expert to solve")
        if sim.task is not self._task:
            self.reset()
            self._task = sim.task
        if not self._done and sim.success():
            self._done = True
        if self._done:
            self.goal = None
            return self._action(np.zeros(3), np.zeros(3), sim.gripper_state().command, terminate=True)
        goal_pos, goal_yaw, gripper, step = self._plan()
        self.goal = np.array(goal_pos, dtype=float)
        target = sim.ee_target_pose()
        delta = self._limit(np.asarray(goal_pos) - target.position, step)
        turn = quat_error(rpy_to_quat(0.0, 0.0, goal_yaw), target.quaternion)
        turn = self._limit(turn, self.settings.max_turn)
        return self._action(delta, turn, gripper, terminate=False)

    @staticmethod
    def _limit(vector: np.ndarray, largest: float) -> np.ndarray:
        """Scale ``vector`` down (keeping its direction) so no component exceeds ``largest``."""
        peak = float(np.max(np.abs(vector))) if vector.size else 0.0
        return vector * (largest / peak) if peak > largest else vector

    def _action(self, delta: np.ndarray, turn: np.ndarray, gripper: float, terminate: bool) -> dict:
        wanted = {"x": delta[0], "y": delta[1], "z": delta[2], "roll": turn[0], "pitch": turn[1],
                  "yaw": turn[2], "gripper": gripper}
        action: dict = {"terminate": terminate}
        for name in self.embodiment.names:
            if name in self._values:
                column = self._values[name]
                action[name] = float(column[int(np.argmin(np.abs(column - wanted[name])))])
        return action

    # ------------------------------------------------------------------ planning

    def _reached(self, goal: np.ndarray, goal_yaw: float, tolerance: float | None = None) -> bool:
        tol = tolerance or self.settings.position_tolerance
        target = self.sim.ee_target_pose()
        measured = self.sim.ee_pose()
        return (float(np.max(np.abs(goal - target.position))) <= tol
                and float(np.max(np.abs(goal - measured.position))) <= 2.5 * tol
                and self._yaw_reached(goal_yaw, target))

    def _over(self, goal: np.ndarray, goal_yaw: float, tolerance: float, floor: float = -np.inf) -> bool:
        """Whether the hand is already clearly below ``goal`` (the hover point over the object, or the
        carrying point over where it goes) but not below ``floor``, and within ``tolerance`` of it
        horizontally: where going down from ``goal`` would pass (another policy took the hand there,
        see the phase syncs in _plan_grasp_and_move)."""
        target, measured = self.sim.ee_target_pose(), self.sim.ee_pose()
        return (float(np.max(np.abs(goal[:2] - target.position[:2]))) <= tolerance
                and float(np.max(np.abs(goal[:2] - measured.position[:2]))) <= 2.5 * tolerance
                and floor <= float(target.position[2]) < float(goal[2]) - tolerance
                and self._yaw_reached(goal_yaw, target))

    def _yaw_reached(self, goal_yaw: float, target: Pose) -> bool:
        """Whether the commanded hand ``target``'s yaw is within tolerance of ``goal_yaw``."""
        yaw_error = abs(quat_error(rpy_to_quat(0.0, 0.0, goal_yaw), target.quaternion)[2])
        return yaw_error <= self.settings.yaw_tolerance

    def _gripper_settled(self, wanted: float) -> bool:
        """True once the gripper has taken the ``wanted`` command and its fingers stopped.

        The first call of a phase only issues the command (it is applied after
        this step's action), so at least two calls are needed.
        """
        state = self.sim.gripper_state()
        self._wait += 1
        still = max(abs(v) for v in state.finger_velocities) < 0.005
        return self._wait >= 2 and abs(state.command - wanted) < 0.05 and still

    def _grasp_yaw(self, name: str) -> float:
        """Yaw that puts the finger pads on two opposite faces (any yaw for round objects)."""
        spec = self.sim.scene.object(name)
        if spec.shape != "cube":
            return 0.0
        quat = self.sim.object_poses()[name].quaternion
        yaw = 2.0 * math.atan2(quat[3], quat[0])
        return (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4

    def _footprints(self) -> list[Footprint]:
        poses = self.sim.object_poses()
        return [Footprint(o.name, float(poses[o.name].position[0]), float(poses[o.name].position[1]),
                          o.footprint_radius) for o in self.sim.scene.objects]

    def _zmin(self) -> float:
        return self.sim.config.workspace_min[2] + 0.001

    def _plan(self) -> tuple[np.ndarray, float, float, float]:
        """(goal TCP position, goal yaw, gripper command, step limit) for this step."""
        if self._task.kind == "push" or self._task.predicate == "pushed":
            return self._plan_push()
        return self._plan_grasp_and_move()

    def _plan_grasp_and_move(self):
        s = self.settings
        sim, task = self.sim, self._task
        spec = sim.scene.object(task.object)
        pos = sim.object_poses()[task.object].position
        held = sim.gripper_state().grasped == task.object
        top = pos[2] + spec.half_height
        hover_z = max(top + s.hover + 0.025, 0.12)
        grasp_z = max(self._zmin(), pos[2])
        if self._phase in ("lift", "transport", "lower") and not held:
            self._start_over()
        # Another policy drives some steps when this expert labels them (DAgger) and can get
        # ahead of the phases: the phase follows the state, or the labels would say "open
        # and go back up" to a hand that already holds the object (or hangs ready above it).
        if held and self._phase in ("approach", "descend"):
            self._phase, self._wait = "close", 0
        if self._phase == "approach":
            yaw = self._grasp_yaw(task.object)
            goal = np.array([pos[0], pos[1], hover_z])
            open_hand = sim.gripper_state().closedness < 0.05
            if open_hand and self._over(goal, yaw, 2 * s.position_tolerance):
                self._phase = "descend"  # already on the way down: this step descends
            else:
                if open_hand and self._reached(goal, yaw, 2 * s.position_tolerance):
                    self._phase = "descend"
                return goal, yaw, 0.0, s.max_step
        if self._phase == "descend":
            yaw = self._grasp_yaw(task.object)
            goal = np.array([pos[0], pos[1], grasp_z])
            if self._reached(goal, yaw):
                self._phase, self._wait = "close", 0
            return goal, yaw, 0.0, s.slow_step
        if self._phase == "close":
            settled = self._gripper_settled(1.0)
            if not held:
                if settled:
                    self._start_over()
                # Close while rising slowly: the frames at the bottom (fingers open around the
                # object, or closing on it) then all say "up", which one camera frame can be
                # told; "stay" on some and "lift" on others could not, and a cloned policy
                # stayed there holding the object.  The pads are long enough to catch it.
                goal = sim.ee_target_pose().position + np.array([0.0, 0.0, s.close_rise])
                return goal, self._grasp_yaw(task.object), 1.0, s.slow_step
            # Lift as soon as the fingers hold it, without waiting for them to settle.
            self._grip_offset = float(sim.ee_pose().position[2] - pos[2])
            self._phase = "lift"
        # The object is held from here on.
        yaw = float(sim.ee_target_pose().rpy[2])
        if task.predicate == "lifted":
            start_z = float(sim.task_start_position(task.object)[2])
            goal = np.array([pos[0], pos[1], start_z + task.params["min_lift"] + 0.04 + self._grip_offset])
            return goal, yaw, 1.0, s.max_step
        carry_z = self._carry_height(task) + spec.half_height + self._grip_offset
        place_xy = self._placement(task)
        set_down_z = self._set_down_height(task, spec)
        if self._phase in ("lift", "transport") and self._over(
                np.array([place_xy[0], place_xy[1], carry_z]), yaw, 2 * s.position_tolerance, floor=set_down_z):
            # Another policy carried it there low (DAgger): "up to the carrying height" first would
            # label the way back to the expert's path, where setting it down is the next step.
            self._phase = "lower"
        if self._phase == "lift":
            goal = np.array([pos[0], pos[1], carry_z])
            if self._reached(goal, yaw, 3 * s.position_tolerance):
                self._phase = "transport"
            return goal, yaw, 1.0, s.max_step
        if self._phase == "transport":
            goal = np.array([place_xy[0], place_xy[1], carry_z])
            if self._reached(goal, yaw, 1.5 * s.position_tolerance):
                self._phase = "lower"
            return goal, yaw, 1.0, s.max_step
        if self._phase == "lower":
            goal = np.array([place_xy[0], place_xy[1], set_down_z])
            if self._reached(goal, yaw):
                self._phase, self._wait = "release", 0
            return goal, yaw, 1.0, s.slow_step
        if self._phase == "release":
            # Open while rising slowly, for the same reason the grasp closes while rising: "stay"
            # while the fingers open would label frames a camera cannot tell from the retreat's.
            goal = sim.ee_target_pose().position + np.array([0.0, 0.0, s.close_rise])
            if self._gripper_settled(0.0):
                self._phase = "retreat"
            return goal, yaw, 0.0, s.slow_step
        # retreat: straight up, open; success should have fired by now.
        goal = sim.ee_target_pose().position + np.array([0.0, 0.0, 0.05])
        return goal, yaw, 0.0, s.slow_step

    def _set_down_height(self, task: TaskSpec, spec: ObjectSpec) -> float:
        """The hand's height when the held object rests where it goes (on the reference's top for
        "on top of", else on the table), a few mm above to release it without pressing."""
        floor = 0.0
        if task.predicate == "on_top":
            ref = self.sim.scene.object(task.reference)
            floor = self.sim.object_poses()[task.reference].position[2] + ref.half_height
        return max(self._zmin(), floor + spec.half_height + 0.006 + self._grip_offset)

    def _carry_height(self, task: TaskSpec) -> float:
        """Height of the carried object's bottom that clears every other object."""
        poses = self.sim.object_poses()
        tops = [poses[o.name].position[2] + o.half_height for o in self.sim.scene.objects
                if o.name != task.object]
        return max(tops, default=0.0) + self.settings.carry_clearance

    def _placement(self, task: TaskSpec) -> tuple[float, float]:
        if task.predicate == "on_top":
            ref = self.sim.object_poses()[task.reference].position
            return float(ref[0]), float(ref[1])
        if self._place_xy is None:
            spot = free_spot_near(self._footprints(), task.object, task.reference, NEAR_PLACEMENT_DISTANCE)
            if spot is None:  # crowded after all: settle for the reference's nearest free side
                spot = free_spot_near(self._footprints(), task.object, task.reference,
                                      NEAR_PLACEMENT_DISTANCE + 0.02)
            if spot is None:
                raise PolicyError(f"expert: no free spot near the {task.reference}")
            self._place_xy = spot
        return self._place_xy

    def _start_over(self) -> None:
        self._attempts += 1
        if self._attempts > self.settings.retries:
            raise PolicyError(f"expert: gave up on {self._task.instruction!r} after "
                              f"{self.settings.retries} failed grasps")
        self._phase, self._wait, self._place_xy = "approach", 0, None

    def _plan_push(self):
        s = self.settings
        sim, task = self.sim, self._task
        spec = sim.scene.object(task.object)
        pos = sim.object_poses()[task.object].position
        start = sim.task_start_position(task.object)
        direction = np.array([*DIRECTIONS[task.direction], 0.0])
        across = np.array([-direction[1], direction[0], 0.0])
        pusher_half = 2 * FINGER_HALF_THICKNESS  # closed fingers, measured along the closing (y) axis
        contact_gap = spec.footprint_radius + pusher_half
        push_z = max(self._zmin(), min(pos[2], 0.04))
        along_now = float((pos - sim.ee_target_pose().position) @ direction)
        behind = pos - direction * (contact_gap + 0.02)
        behind[2] = push_z
        if self._phase == "approach":
            goal = behind.copy()
            goal[2] = max(pos[2] + spec.half_height + s.hover, 0.1)
            if self._over(goal, 0.0, 2 * s.position_tolerance, floor=push_z):
                self._phase = "descend"  # already on the way down: this step descends
                return self._plan_push()
            if self._reached(goal, 0.0, 2 * s.position_tolerance):
                self._phase = "descend"
            return goal, 0.0, 1.0, s.max_step
        if self._phase == "descend":
            if self._reached(behind, 0.0):
                self._phase = "push"
            return behind, 0.0, 1.0, s.slow_step
        # push: slide the pusher along the line through the object's centre.
        if along_now < 0.0:  # the object got behind the pusher (rolled away sideways)
            self._phase = "approach"
            return self._plan_push()
        distance = task.params["min_displacement"] + PUSH_PLAN_MARGIN
        end_along = float(np.asarray(start) @ direction) + distance - contact_gap
        lateral = float(pos @ across)
        goal = direction * end_along + across * lateral
        goal[2] = push_z
        return goal, 0.0, 1.0, s.slow_step


def _normalised(instruction: str) -> str:
    """An instruction with case, extra spaces and a final period ignored (as task parsing does)."""
    return " ".join(instruction.strip().rstrip(".").lower().split())


class ExpertPolicy(Policy):
    """The scripted expert as a :class:`Policy` — a **privileged-state reference**.

    ``act(image, instruction)`` ignores the image: it reads the bound
    simulator's true state.  An instruction that differs from the simulator's
    current task is parsed against the task templates and becomes the task
    (``sim.set_task``), so the expert can also follow typed instructions.
    Outputs are on the embodiment's bins: ``tokens`` are what a model would
    write and ``action`` is their decoding.
    """

    name = "expert"
    #: marks outputs as coming from privileged simulator state, not from the image
    privileged = True

    def __init__(self, sim: TabletopSim, embodiment: Embodiment | str = "rt2_arm",
                 settings: ExpertSettings | None = None):
        self.sim = sim
        self.expert = ScriptedExpert(sim, embodiment, settings)
        self.embodiment = self.expert.embodiment

    def act(self, image: np.ndarray, instruction: str, hand: HandState | None = None) -> PolicyOutput:
        """Return the expert's next action for the bound simulator's task (image and hand unused:
        it reads the simulator's state)."""
        started = time.perf_counter()
        check_image(image)
        text = check_instruction(instruction)
        task = self.sim.task
        if task is None or _normalised(task.instruction) != _normalised(text):
            try:
                self.sim.set_task(text)
            except SimError as err:
                raise PolicyError(f"expert: {err}") from err
        return _next_output(self.expert, self.embodiment, started)

    def reset(self) -> None:
        """Start the bound simulator's task over (the simulator itself is not reset)."""
        self.expert.reset()


# ----------------------------------------------------------------------------- privileged snapshots

#: ``format`` of :func:`privileged_snapshot`'s dicts (bumped on incompatible changes).
PRIVILEGED_STATE_FORMAT = "rt2_ros/sim_privileged_state/1"
_PRIVILEGED_NOTE = ("privileged simulator state (true poses, contacts, task): for the scripted "
                    "expert and for scoring only, never an input of a learned policy")


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def privileged_snapshot(sim: TabletopSim, *, episode: int = 0) -> dict[str, Any]:
    """Everything the expert reads from ``sim``, as JSON-able data (the sim node publishes it).

    ``episode`` numbers the simulator's episodes (resets): a consumer uses it
    to tell a restarted task from the same one.  Quaternions are (w, x, y, z),
    positions metres in the base frame.
    """
    task = sim.task
    scene_state = sim.snapshot()
    poses = sim.object_poses()
    ee, target, gripper = sim.ee_pose(), sim.ee_target_pose(), sim.gripper_state()
    objects = []
    for spec in sim.scene.objects:
        state = scene_state.objects[spec.name]
        objects.append({
            "name": spec.name, "shape": spec.shape, "half_height": float(spec.half_height),
            "footprint_radius": float(spec.footprint_radius),
            "position": _floats(poses[spec.name].position),
            "quaternion_wxyz": _floats(poses[spec.name].quaternion),
            "start_position": _floats(state.start_position), "max_z": float(state.max_z),
            "ever_grasped": bool(state.ever_grasped)})
    return {
        "format": PRIVILEGED_STATE_FORMAT,
        "privileged": True,
        "note": _PRIVILEGED_NOTE,
        "episode": int(episode),
        "seed": int(sim.scene.seed),
        "sim_time": float(sim.sim_time),
        "task": None if task is None else {
            "kind": task.kind, "instruction": task.instruction, "predicate": task.predicate,
            "object": task.object, "reference": task.reference, "direction": task.direction,
            "params": {k: float(v) for k, v in task.params.items()}},
        "success": bool(task is not None and sim.success()),
        "ee_pose": {"position": _floats(ee.position), "quaternion_wxyz": _floats(ee.quaternion)},
        "ee_target": {"position": _floats(target.position),
                      "quaternion_wxyz": _floats(target.quaternion)},
        "gripper": {"command": float(gripper.command), "closedness": float(gripper.closedness),
                    "opening": float(gripper.opening),
                    "finger_positions": _floats(gripper.finger_positions),
                    "finger_velocities": _floats(gripper.finger_velocities),
                    "grasped": gripper.grasped},
        "workspace_min": _floats(sim.config.workspace_min),
        "workspace_max": _floats(sim.config.workspace_max),
        "objects": objects,
    }


@dataclass(frozen=True)
class _ObjectView:
    """The object facts the expert reads (a subset of :class:`~rt2_ros.sim.scene.ObjectSpec`)."""

    name: str
    shape: str
    half_height: float
    footprint_radius: float


@dataclass(frozen=True)
class _SceneView:
    seed: int
    objects: tuple[_ObjectView, ...]

    def object(self, name: str) -> _ObjectView:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise SimError(f"object: no {name!r} in this scene (it has {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [obj.name for obj in self.objects]


@dataclass(frozen=True)
class _ConfigView:
    workspace_min: tuple[float, float, float]
    workspace_max: tuple[float, float, float]


def _vector(data: Mapping[str, Any], key: str, size: int, where: str) -> np.ndarray:
    value = data.get(key) if isinstance(data, Mapping) else None
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (size,) or not np.all(np.isfinite(arr)):
        raise PolicyError(f"privileged state: {where}{key}: expected {size} finite numbers, "
                          f"got {value!r}")
    return arr


def _field(data: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    """``data[key]`` if it is a ``kind`` (a bool is not a number here), else PolicyError."""
    if not isinstance(data, Mapping) or key not in data:
        raise PolicyError(f"privileged state: {where}{key}: missing")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise PolicyError(f"privileged state: {where}{key}: expected {names}, got {value!r}")
    return value


class SnapshotSim:
    """A read-only stand-in for :class:`TabletopSim`, answering from a privileged snapshot.

    It offers exactly what :class:`ScriptedExpert` reads (``task``,
    ``success()``, poses, gripper state, scene facts, task start positions,
    workspace).  :meth:`load` replaces the state with a newer snapshot; the
    ``task`` object stays the same Python object while the snapshot's episode
    and task do not change, which is how the expert knows its task went on.
    """

    def __init__(self, snapshot: Mapping[str, Any] | None = None) -> None:
        self.task: TaskSpec | None = None
        self.episode: int | None = None
        self.sim_time = 0.0
        self.scene = _SceneView(0, ())
        self.config = _ConfigView((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        self._task_key: tuple | None = None
        self._success = False
        self._ee = self._target = Pose(np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))
        self._gripper = GripperState(0.0, 0.0, 0.0, (0.0, 0.0), (0.0, 0.0), None)
        self._poses: dict[str, Pose] = {}
        self._starts: dict[str, np.ndarray] = {}
        if snapshot is not None:
            self.load(snapshot)

    def load(self, snapshot: Mapping[str, Any]) -> None:
        """Take the state of ``snapshot`` (a :func:`privileged_snapshot` dict); PolicyError if malformed.

        Nothing changes when the snapshot is refused.
        """
        if not isinstance(snapshot, Mapping):
            raise PolicyError(f"privileged state: expected a JSON object, got {type(snapshot).__name__}")
        fmt = snapshot.get("format")
        if fmt != PRIVILEGED_STATE_FORMAT:
            raise PolicyError(f"privileged state: format: expected {PRIVILEGED_STATE_FORMAT!r}, got {fmt!r}")
        episode = _field(snapshot, "episode", int)
        seed = _field(snapshot, "seed", int)
        sim_time = float(_field(snapshot, "sim_time", (int, float)))
        success = _field(snapshot, "success", bool)
        ee = _field(snapshot, "ee_pose", Mapping)
        target = _field(snapshot, "ee_target", Mapping)
        ee_pose = Pose(_vector(ee, "position", 3, "ee_pose."), _vector(ee, "quaternion_wxyz", 4, "ee_pose."))
        target_pose = Pose(_vector(target, "position", 3, "ee_target."),
                           _vector(target, "quaternion_wxyz", 4, "ee_target."))
        g = _field(snapshot, "gripper", Mapping)
        grasped = g.get("grasped")
        if grasped is not None and not isinstance(grasped, str):
            raise PolicyError(f"privileged state: gripper.grasped: expected an object name or null, got {grasped!r}")
        gripper = GripperState(float(_field(g, "command", (int, float), "gripper.")),
                               float(_field(g, "closedness", (int, float), "gripper.")),
                               float(_field(g, "opening", (int, float), "gripper.")),
                               tuple(_vector(g, "finger_positions", 2, "gripper.")),
                               tuple(_vector(g, "finger_velocities", 2, "gripper.")), grasped)
        config = _ConfigView(tuple(_vector(snapshot, "workspace_min", 3, "")),
                             tuple(_vector(snapshot, "workspace_max", 3, "")))
        objects, poses, starts = [], {}, {}
        for i, obj in enumerate(_field(snapshot, "objects", list)):
            where = f"objects[{i}]."
            name = _field(obj, "name", str, where)
            objects.append(_ObjectView(name, _field(obj, "shape", str, where),
                                       float(_field(obj, "half_height", (int, float), where)),
                                       float(_field(obj, "footprint_radius", (int, float), where))))
            poses[name] = Pose(_vector(obj, "position", 3, where), _vector(obj, "quaternion_wxyz", 4, where))
            starts[name] = _vector(obj, "start_position", 3, where)
        raw_task = snapshot.get("task")
        task, key = None, None
        if raw_task is not None:
            if not isinstance(raw_task, Mapping):
                raise PolicyError(f"privileged state: task: expected an object or null, got {raw_task!r}")
            try:
                task = TaskSpec(kind=str(raw_task["kind"]), instruction=str(raw_task["instruction"]),
                                predicate=str(raw_task["predicate"]), object=str(raw_task["object"]),
                                reference=raw_task.get("reference"), direction=raw_task.get("direction"),
                                params=dict(raw_task.get("params") or {}))
            except KeyError as err:
                raise PolicyError(f"privileged state: task.{err.args[0]}: missing") from None
            names = {o.name for o in objects}
            for slot in ("object", "reference"):
                value = getattr(task, slot)
                if value is not None and value not in names:
                    raise PolicyError(f"privileged state: task.{slot}: {value!r} is not among the objects "
                                      f"({', '.join(sorted(names))})")
            key = (episode, task)
        # Keep the same TaskSpec object while episode and task are unchanged.
        if key is None or key != self._task_key:
            self.task, self._task_key = task, key
        self.episode, self.sim_time, self._success = episode, sim_time, success
        self.scene, self.config = _SceneView(seed, tuple(objects)), config
        self._ee, self._target, self._gripper = ee_pose, target_pose, gripper
        self._poses, self._starts = poses, starts

    def success(self) -> bool:
        """The simulator's success detector when the snapshot was taken."""
        if self.task is None:
            raise SimError("task: the simulator had no task when the snapshot was taken")
        return self._success

    def ee_pose(self) -> Pose:
        """The measured TCP pose."""
        return Pose(self._ee.position.copy(), self._ee.quaternion.copy())

    def ee_target_pose(self) -> Pose:
        """The commanded TCP target."""
        return Pose(self._target.position.copy(), self._target.quaternion.copy())

    def gripper_state(self) -> GripperState:
        """The gripper's commanded and measured state."""
        return self._gripper

    def object_poses(self) -> dict[str, Pose]:
        """Every object's pose, by name."""
        return {n: Pose(p.position.copy(), p.quaternion.copy()) for n, p in self._poses.items()}

    def task_start_position(self, name: str) -> np.ndarray:
        """Where object ``name`` was when the task started."""
        if self.task is None:
            raise SimError("task: the simulator had no task when the snapshot was taken")
        if name not in self._starts:
            raise SimError(f"object: no {name!r} in this scene (it has {', '.join(self.scene.names)})")
        return self._starts[name].copy()


class StateFedExpertPolicy(Policy):
    """The scripted expert in a process without the simulator — a **privileged-state reference**.

    Feed it the sim node's privileged snapshots with :meth:`observe` (any
    thread; the ROS side is ``rt2_ros.nodes.expert_bridge``); :meth:`act`
    (one thread) plans from the newest one.  The image is checked and ignored.
    ``act`` raises PolicyError when no snapshot came yet, when the newest is
    older than ``max_state_age_s``, or when the simulator's task is not the
    instruction (it waits up to ``task_wait_s`` for a snapshot that has it:
    a sim told the instruction on a topic may be a moment behind the policy).
    The expert cannot give the simulator a task; the sim node takes its task
    from its ``task`` parameter, its reset service or ``rt2/instruction``.
    """

    name = "expert"
    #: marks outputs as coming from privileged simulator state, not from the image
    privileged = True

    def __init__(self, embodiment: Embodiment | str = "rt2_arm", settings: ExpertSettings | None = None,
                 *, max_state_age_s: float = 1.0, task_wait_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        if not (isinstance(max_state_age_s, (int, float)) and max_state_age_s > 0):
            raise PolicyError(f"expert: max_state_age_s: expected a number > 0, got {max_state_age_s!r}")
        if not (isinstance(task_wait_s, (int, float)) and task_wait_s >= 0):
            raise PolicyError(f"expert: task_wait_s: expected a number >= 0, got {task_wait_s!r}")
        self.view = SnapshotSim()
        self.expert = ScriptedExpert(self.view, embodiment, settings)
        self.embodiment = self.expert.embodiment
        self.max_state_age_s = float(max_state_age_s)
        self.task_wait_s = float(task_wait_s)
        self._clock = clock
        self._latest: tuple[Mapping[str, Any], float] | None = None
        self._changed = threading.Condition()
        self.snapshots_received = 0

    @classmethod
    def from_config(cls, cfg: Any) -> "StateFedExpertPolicy":
        """Build from a :class:`~rt2_ros.policy.config.PolicyConfig` (reads its embodiment)."""
        try:
            return cls(cfg.embodiment_name)
        except ActionLanguageError as err:
            raise PolicyError(f"expert: embodiment: {err}") from None

    def observe(self, snapshot: Mapping[str, Any], received: float | None = None) -> None:
        """Store ``snapshot`` (a :func:`privileged_snapshot` dict) as the newest state.

        Raises PolicyError for a snapshot of another format (it is not kept).
        ``received``: when it arrived, on ``clock`` (default: now).
        """
        if not isinstance(snapshot, Mapping) or snapshot.get("format") != PRIVILEGED_STATE_FORMAT:
            got = snapshot.get("format") if isinstance(snapshot, Mapping) else type(snapshot).__name__
            raise PolicyError(f"privileged state: format: expected {PRIVILEGED_STATE_FORMAT!r}, got {got!r}")
        with self._changed:
            self._latest = (snapshot, self._clock() if received is None else received)
            self.snapshots_received += 1
            self._changed.notify_all()

    def state_age(self) -> float | None:
        """Seconds since the newest snapshot arrived (None before the first)."""
        with self._changed:
            return None if self._latest is None else self._clock() - self._latest[1]

    def _snapshot_for(self, text: str) -> Mapping[str, Any]:
        deadline = self._clock() + self.task_wait_s
        with self._changed:
            while True:
                if self._latest is None:
                    problem = ("no privileged simulator state received yet (is the sim node running "
                               "and publishing sim/privileged_state?)")
                else:
                    snapshot, received = self._latest
                    age = self._clock() - received
                    task = snapshot.get("task")
                    sim_instruction = task.get("instruction") if isinstance(task, Mapping) else None
                    if age > self.max_state_age_s:
                        problem = (f"the newest privileged simulator state is {age:.2f} s old "
                                   f"(max_state_age_s {self.max_state_age_s:g}); is the sim node running?")
                    elif sim_instruction is None:
                        problem = (f"the simulator has no task; it cannot score or solve {text!r} "
                                   f"(give the sim node a task it can parse)")
                    elif _normalised(str(sim_instruction)) != _normalised(text):
                        problem = (f"the simulator's task is {sim_instruction!r}, not {text!r}: the "
                                   f"privileged expert solves only the simulator's own task")
                    else:
                        return snapshot
                left = deadline - self._clock()
                if left <= 0:
                    raise PolicyError(f"expert: {problem}")
                self._changed.wait(timeout=left)

    def act(self, image: np.ndarray, instruction: str, hand: HandState | None = None) -> PolicyOutput:
        """Return the expert's next action from the newest privileged state (image and hand unused)."""
        started = time.perf_counter()
        check_image(image)
        text = check_instruction(instruction)
        snapshot = self._snapshot_for(text)
        self.view.load(snapshot)
        return _next_output(self.expert, self.embodiment, started)

    def reset(self) -> None:
        """Start the task over (the next action plans from scratch)."""
        self.expert.reset()
