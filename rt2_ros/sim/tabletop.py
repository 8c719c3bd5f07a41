"""The simulated tabletop arm: what a ROS sim node (or data collection) drives.

A floating two-finger hand follows an end-effector target the way a servo
controller follows twist commands: :meth:`TabletopSim.apply_twist` sets a
base-frame linear (m/s) and angular (rad/s) velocity that the target integrates
over *simulated* time while :meth:`TabletopSim.step` advances the physics at a
fixed rate; workspace limits stop the target and are reported, never silent.
The hand is dragged to the target by a weld constraint (so contacts push back
physically), and the fingers are position-controlled slide joints that hold
objects by friction alone.

Frames and units: base frame = MuJoCo world (origin on the table top under the
robot, x forward, y left, z up), metres, radians, seconds of simulated time.
The end-effector (tool centre point, TCP) sits between the finger pads; its
orientation is the identity when the gripper points straight down with the
fingers closing along the base y axis.  Gripper closedness: 0 = open, 1 = closed.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from rt2_ros.sim import gl  # noqa: F401 - chooses the GL backend before mujoco is imported
import mujoco  # noqa: E402

from rt2_ros.errors import ConfigError  # noqa: E402
from rt2_ros.sim.errors import SimError  # noqa: E402
from rt2_ros.sim.rotations import quat_from_rotvec, quat_mul, quat_to_rpy, rpy_to_quat  # noqa: E402
from rt2_ros.sim.scene import (FINGER_MAX_OPENING, FINGER_PAD_BOTTOM, HEAD_CAMERA, HOME_POSITION,  # noqa: E402
                               WRIST_CAMERA, SceneSpec, build_mjcf, generate_scene)
from rt2_ros.sim.tasks import (GRIPPER, TABLE, ObjectState, SceneSnapshot, TaskInfeasible,  # noqa: E402
                               TaskLibrary, TaskSpec, evaluate, load_task_library)
from rt2_ros.validation import expect_bool, expect_int, expect_number, reject_unknown_keys  # noqa: E402

__all__ = ["SimConfig", "TabletopSim", "Pose", "GripperState", "StepReport", "ACTION_KEYS",
           "CAMERAS", "BASE_FRAME", "EE_FRAME"]

#: Suggested ROS frame ids: the base frame (MuJoCo's world) and the TCP.
BASE_FRAME = "base_link"
EE_FRAME = "tcp"

CAMERAS = (HEAD_CAMERA, WRIST_CAMERA)
#: Keys :meth:`TabletopSim.apply_action` understands (the rt2_arm embodiment's dims).
ACTION_KEYS = ("terminate", "x", "y", "z", "roll", "pitch", "yaw", "gripper")
_LINEAR_KEYS = ("x", "y", "z")
_ANGULAR_KEYS = ("roll", "pitch", "yaw")
# Tries at drawing a layout that fits the requested task kind before giving up.
_MAX_LAYOUT_ATTEMPTS = 50


def _triple(key: str, value: Any, **bounds: float) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"{key}: expected a list of 3 numbers, got {value!r}")
    return tuple(expect_number(f"{key}[{i}]", v, **bounds) for i, v in enumerate(value))  # type: ignore


#: How far (m) the finger tips of a hand placed with :meth:`TabletopSim.place_hand` must stay above the
#: tallest object.
HAND_START_CLEARANCE = 0.02


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings (validated; every field can come from YAML via :meth:`from_dict`).

    image_size: (height, width) of :meth:`TabletopSim.render`'s images.
    physics_hz: physics steps per simulated second (fixed).
    servo_hz: how often the EE target integrates the twist and the finger
        set-point moves (a servo controller's loop rate); at most physics_hz.
    num_objects: (min, max) objects per scene, inclusive.
    workspace_min / workspace_max: box the TCP target stays in (base frame, m).
    max_tilt: largest |roll| and |pitch| of the target from pointing down (rad).
    max_yaw: largest |yaw| of the target (rad).
    gripper_speed: finger travel speed (m/s); a full close takes 0.045 m / speed.
    twist_timeout_s: a twist older than this (simulated s) is dropped to zero,
        like MoveIt Servo's incoming-command timeout; 0 keeps it until replaced.
    shadows: render shadows (costs render time on a CPU renderer).
    """

    image_size: tuple[int, int] = (224, 224)
    physics_hz: float = 500.0
    servo_hz: float = 100.0
    num_objects: tuple[int, int] = (3, 4)
    workspace_min: tuple[float, float, float] = (0.22, -0.38, 0.03)
    workspace_max: tuple[float, float, float] = (0.78, 0.38, 0.45)
    max_tilt: float = 0.6
    max_yaw: float = 2.6
    gripper_speed: float = 0.15
    twist_timeout_s: float = 0.0
    shadows: bool = True

    def __post_init__(self) -> None:
        h, w = self.image_size
        expect_int("image_size[0]", h, low=16, high=2048)
        expect_int("image_size[1]", w, low=16, high=2048)
        expect_number("physics_hz", self.physics_hz, low=50.0, high=10000.0)
        expect_number("servo_hz", self.servo_hz, low=1.0, high=self.physics_hz)
        low, high = self.num_objects
        expect_int("num_objects[0]", low, low=2, high=6)
        expect_int("num_objects[1]", high, low=low, high=6)
        for i, (a, b) in enumerate(zip(self.workspace_min, self.workspace_max)):
            if not a < b:
                raise ConfigError(f"workspace_max[{i}]: expected a number > workspace_min[{i}] ({a}), got {b!r}")
        expect_number("max_tilt", self.max_tilt, low=0.0, high=1.2)
        expect_number("max_yaw", self.max_yaw, low=0.0, high=math.pi)
        expect_number("gripper_speed", self.gripper_speed, low=0.0, low_inclusive=False, high=10.0)
        expect_number("twist_timeout_s", self.twist_timeout_s, low=0.0)
        expect_bool("shadows", self.shadows)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], section: str = "sim") -> "SimConfig":
        """Build a config from a mapping (unknown keys and bad values raise ConfigError)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{section}: expected a mapping, got {data!r}")
        reject_unknown_keys(section, data, [f.name for f in fields(cls)])
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("image_size", "num_objects"):
                if not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise ConfigError(f"{key}: expected a list of 2 integers, got {value!r}")
                value = tuple(value)
            elif key in ("workspace_min", "workspace_max"):
                value = _triple(key, value)
            kwargs[key] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class Pose:
    """A pose in the base frame: position (m) and unit quaternion (w, x, y, z)."""

    position: np.ndarray
    quaternion: np.ndarray

    @property
    def rpy(self) -> tuple[float, float, float]:
        """(roll, pitch, yaw) in radians, R = Rz(yaw) Ry(pitch) Rx(roll)."""
        return quat_to_rpy(self.quaternion)


@dataclass(frozen=True)
class GripperState:
    """The gripper: commanded and measured closedness (0 open .. 1 closed), the
    gap between the finger pads (m), each finger's joint position and velocity
    (m, m/s; 0 = closed, 0.045 = open) and the object held between both pads."""

    command: float
    closedness: float
    opening: float
    finger_positions: tuple[float, float]
    finger_velocities: tuple[float, float]
    grasped: str | None


@dataclass(frozen=True)
class StepReport:
    """What one :meth:`TabletopSim.step` did.

    limits: workspace limits the EE target was stopped at during the step
    (e.g. ``("z_min",)``; rotation limits are ``roll``, ``pitch``, ``yaw``).
    """

    sim_time: float
    physics_steps: int
    limits: tuple[str, ...] = ()


def _vector3(name: str, value: Any, unit: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise SimError(f"{name}: expected 3 finite numbers ({unit}), got {value!r}") from None
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise SimError(f"{name}: expected 3 finite numbers ({unit}), got {value!r}")
    return arr


def _close_renderers(renderers: dict) -> None:
    for renderer in renderers.values():
        renderer.close()
    renderers.clear()


class TabletopSim:
    """A seeded tabletop scene with a floating two-finger hand (see the module doc).

    ``TabletopSim(seed, task="random")`` builds scene ``seed`` and a task for
    it; ``task`` is a kind from the tasks file ("pick", "move_near", "push",
    "place_on"), ``"random"`` (a feasible kind drawn from the seed), or None.
    """

    def __init__(self, seed: int = 0, *, task: str | None = "random", config: SimConfig | None = None,
                 tasks: TaskLibrary | None = None):
        self.config = config or SimConfig()
        self.tasks = tasks or load_task_library()
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.scene: SceneSpec | None = None
        self.task: TaskSpec | None = None
        self._xml: str | None = None
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._finalizer = weakref.finalize(self, _close_renderers, self._renderers)
        #: how many step() calls hit each workspace limit since the last reset
        self.limit_counts: dict[str, int] = {}
        self.reset(seed, task=task)

    # ------------------------------------------------------------------ episodes

    def reset(self, seed: int | None = None, task: str | TaskSpec | None = "random") -> TaskSpec | None:
        """Start a new episode: scene ``seed`` (default: the current one), hand home, gripper open.

        Returns the episode's task (see the class doc; a TaskSpec is used as given).
        When the seed's first layout cannot host the requested kind, further
        layouts of the same seed are drawn, so (seed, kind) fully decides the episode.
        """
        if seed is None:
            seed = self.scene.seed if self.scene is not None else 0
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SimError(f"seed: expected a non-negative integer, got {seed!r}")
        seed = int(seed)
        if task is not None and not isinstance(task, (str, TaskSpec)):
            raise SimError(f"task: expected a task kind, 'random', a TaskSpec or None, got {task!r}")
        if isinstance(task, str) and task != "random":
            self.tasks.kind(task)  # unknown kinds fail before any layout is drawn
        spec = None
        for attempt in range(_MAX_LAYOUT_ATTEMPTS):
            scene = generate_scene(seed, self.config.num_objects, attempt)
            try:
                if task == "random":
                    spec = self.tasks.sample(scene, seed)
                elif isinstance(task, str):
                    spec = self.tasks.make(task, scene, seed)
                else:
                    spec = task
                break
            except TaskInfeasible:
                continue
        else:
            raise TaskInfeasible(f"task: no layout of seed {seed} fits task {task!r} "
                                 f"after {_MAX_LAYOUT_ATTEMPTS} tries")
        self._load_scene(scene)
        self.limit_counts = {}
        self.task = None
        self._settle()
        if spec is not None:
            self.set_task(spec)
        return self.task

    def _load_scene(self, scene: SceneSpec) -> None:
        h, w = self.config.image_size
        xml = build_mjcf(scene, timestep=1.0 / self.config.physics_hz,
                         offscreen_size=(max(h, 480), max(w, 640)), shadows=self.config.shadows)
        if xml != self._xml:
            previous = self.model
            self.model = mujoco.MjModel.from_xml_string(xml)
            self._rebind_renderers(previous)
            self.data = mujoco.MjData(self.model)
            self._xml = xml
            self._index_model(scene)
            self._servo_every = max(1, int(round(self.config.physics_hz / self.config.servo_hz)))
        else:
            mujoco.mj_resetData(self.model, self.data)
        self.scene = scene

    def _index_model(self, scene: SceneSpec) -> None:
        m = self.model
        body = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        geom = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        joint = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)  # noqa: E731
        self._hand_body = body("hand")
        self._mocap = int(m.body_mocapid[body("ee_target")])
        self._finger_qpos = [int(m.jnt_qposadr[joint(n)]) for n in ("finger_left", "finger_right")]
        self._finger_qvel = [int(m.jnt_dofadr[joint(n)]) for n in ("finger_left", "finger_right")]
        self._hand_qpos = int(m.jnt_qposadr[joint("hand")])
        self._object_bodies = {o.name: body(o.body_name) for o in scene.objects}
        self._object_qpos = {o.name: int(m.jnt_qposadr[joint(o.body_name)]) for o in scene.objects}
        # Contact labels: each geom id -> the thing it belongs to, as success predicates name it.
        labels = np.full(m.ngeom, "", dtype=object)
        labels[geom("table")] = TABLE
        for name in ("palm", "finger_left", "finger_right"):
            labels[geom(name)] = GRIPPER
        for obj in scene.objects:
            labels[geom(obj.body_name)] = obj.name
        self._geom_labels = labels
        self._left_pad, self._right_pad = geom("finger_left"), geom("finger_right")

    def place_hand(self, position: Sequence[float]) -> None:
        """Start the episode with the hand at ``position`` instead of home (open, pointing down).

        For data whose episodes start from anywhere over the table.  The hand
        is moved there at once, not driven, so call it before anything
        touches the objects; the current task's start positions stay valid
        because the objects do not move.  A position outside the workspace,
        or one low enough to reach the objects, raises SimError.
        """
        try:
            target = np.asarray(position, dtype=float).reshape(3)
        except (TypeError, ValueError):
            raise SimError(f"position: expected 3 numbers (x, y, z in m), got {position!r}") from None
        low, high = np.array(self.config.workspace_min), np.array(self.config.workspace_max)
        if not np.all(np.isfinite(target)) or np.any(target < low) or np.any(target > high):
            raise SimError(f"position: expected a point inside the workspace {tuple(low)} .. {tuple(high)}, "
                           f"got {tuple(target.tolist())}")
        clearance = (max((2 * o.half_height for o in self.scene.objects), default=0.0) - FINGER_PAD_BOTTOM
                     + HAND_START_CLEARANCE)
        if target[2] < clearance:
            raise SimError(f"position: expected z >= {clearance:.3f} m (above the tallest object with the "
                           f"fingers clear), got {target[2]:.3f}")
        before = {n: self.data.xpos[b].copy() for n, b in self._object_bodies.items()}
        self._settle(target)
        moved = [n for n, b in self._object_bodies.items()
                 if np.linalg.norm(self.data.xpos[b] - before[n]) > 1e-3]
        if moved:  # cannot happen above the clearance; never start from a disturbed scene silently
            raise SimError(f"position: placing the hand at {tuple(target.tolist())} moved {', '.join(moved)}")
        if self.task is not None:
            self._update_trackers()

    def _settle(self, hand: Sequence[float] = HOME_POSITION) -> None:
        """Put the hand at ``hand`` (home; open, pointing down) and let the objects come to rest."""
        d = self.data
        start = np.array(hand, dtype=float)
        self._target_pos = start.copy()
        self._target_quat = np.array([1.0, 0.0, 0.0, 0.0])
        d.qpos[self._hand_qpos:self._hand_qpos + 3] = start
        d.qpos[self._hand_qpos + 3:self._hand_qpos + 7] = self._target_quat
        for adr in self._finger_qpos:
            d.qpos[adr] = FINGER_MAX_OPENING
        d.mocap_pos[self._mocap] = start
        d.mocap_quat[self._mocap] = self._target_quat
        self._gripper_command = 0.0
        self._finger_target = FINGER_MAX_OPENING
        d.ctrl[:] = FINGER_MAX_OPENING
        self._linear = np.zeros(3)
        self._angular = np.zeros(3)
        self._twist_time = 0.0
        mujoco.mj_forward(self.model, d)
        mujoco.mj_step(self.model, d, nstep=int(round(0.2 * self.config.physics_hz)))
        d.time = 0.0
        self._time_debt = 0.0

    def set_task(self, task: TaskSpec | str) -> TaskSpec:
        """Make ``task`` (a TaskSpec, or an instruction to parse) the current task.

        Success is measured from now: start positions, lift and grasp history restart.
        """
        if isinstance(task, str):
            task = self.tasks.parse(task, self.scene.names)
        elif not isinstance(task, TaskSpec):
            raise SimError(f"task: expected a TaskSpec or an instruction, got {task!r}")
        for slot in ("object", "reference"):
            name = getattr(task, slot)
            if name is not None and name not in self._object_bodies:
                raise SimError(f"task.{slot}: {name!r} is not in this scene "
                               f"(it has {', '.join(self.scene.names)})")
        self.task = task
        self._start_positions = {n: self.data.xpos[b].copy() for n, b in self._object_bodies.items()}
        self._max_z = {n: float(p[2]) for n, p in self._start_positions.items()}
        self._ever_grasped = {n: False for n in self._object_bodies}
        self._update_trackers()
        return task

    def task_start_position(self, name: str) -> np.ndarray:
        """Where object ``name`` was when the current task started (base frame, m)."""
        if self.task is None:
            raise SimError("task: no task is set (reset with a task kind or call set_task)")
        if name not in self._start_positions:
            raise SimError(f"object: no {name!r} in this scene (it has {', '.join(self.scene.names)})")
        return self._start_positions[name].copy()

    def success(self) -> bool:
        """Whether the current task is achieved now (SimError if there is no task)."""
        if self.task is None:
            raise SimError("task: no task is set (reset with a task kind or call set_task)")
        return evaluate(self.task, self.snapshot())

    # ------------------------------------------------------------------ commands

    def apply_twist(self, linear: Sequence[float], angular: Sequence[float]) -> None:
        """Command an EE velocity: ``linear`` (m/s) and ``angular`` (rad/s) about the base-frame axes.

        The velocity holds until replaced (or until ``twist_timeout_s`` of
        simulated time passes, if configured); :meth:`step` integrates it.
        """
        self._linear = _vector3("linear", linear, "m/s")
        self._angular = _vector3("angular", angular, "rad/s")
        self._twist_time = self.sim_time

    def set_gripper(self, closedness: float) -> None:
        """Command the gripper: 0 = open, 1 = closed (the fingers move at ``gripper_speed``)."""
        if isinstance(closedness, bool) or not isinstance(closedness, (int, float, np.floating)) \
                or not 0.0 <= float(closedness) <= 1.0:
            raise SimError(f"gripper: expected a closedness in 0..1, got {closedness!r}")
        self._gripper_command = float(closedness)

    def step(self, dt: float) -> StepReport:
        """Advance simulated time by ``dt`` seconds in fixed physics steps.

        Fractions of a physics step carry over to the next call, so calling
        ``step(1/rate)`` repeatedly keeps ``sim_time`` exact on average.
        """
        if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) \
                or not math.isfinite(dt) or dt < 0:
            raise SimError(f"dt: expected a finite number of seconds >= 0, got {dt!r}")
        m, d = self.model, self.data
        h = m.opt.timestep
        self._time_debt += float(dt)
        n = int(math.floor(self._time_debt / h + 1e-9))
        self._time_debt -= n * h
        limits: set[str] = set()
        timeout = self.config.twist_timeout_s
        finger_goal = FINGER_MAX_OPENING * (1.0 - self._gripper_command)
        # The target and the finger set-point change at the servo rate; physics runs
        # the substeps in between in one call (Python per physics step would dominate).
        every = self._servo_every
        remaining = n
        while remaining > 0:
            k = min(every, remaining)
            if timeout and d.time - self._twist_time > timeout and (self._linear.any() or self._angular.any()):
                self._linear = np.zeros(3)
                self._angular = np.zeros(3)
            if self._linear.any() or self._angular.any():
                limits.update(self._integrate_target(k * h))
            if self._finger_target != finger_goal:
                delta = finger_goal - self._finger_target
                travel = self.config.gripper_speed * k * h
                self._finger_target = finger_goal if abs(delta) <= travel \
                    else self._finger_target + math.copysign(travel, delta)
                d.ctrl[:] = self._finger_target
            mujoco.mj_step(m, d, nstep=k)
            remaining -= k
        self._update_trackers()
        for name in limits:
            self.limit_counts[name] = self.limit_counts.get(name, 0) + 1
        return StepReport(self.sim_time, n, tuple(sorted(limits)))

    def _integrate_target(self, h: float) -> list[str]:
        hit = []
        pos = self._target_pos + self._linear * h
        low, high = self.config.workspace_min, self.config.workspace_max
        for i, axis in enumerate("xyz"):
            if pos[i] < low[i]:
                pos[i] = low[i]
                if self._linear[i] < 0:
                    hit.append(f"{axis}_min")
            elif pos[i] > high[i]:
                pos[i] = high[i]
                if self._linear[i] > 0:
                    hit.append(f"{axis}_max")
        self._target_pos = pos
        if self._angular.any():
            quat = quat_mul(quat_from_rotvec(self._angular * h), self._target_quat)
            quat /= math.sqrt(float(quat @ quat))
            rpy = list(quat_to_rpy(quat))
            bounds = (self.config.max_tilt, self.config.max_tilt, self.config.max_yaw)
            clamped = False
            for i, name in enumerate(("roll", "pitch", "yaw")):
                if abs(rpy[i]) > bounds[i]:
                    rpy[i] = math.copysign(bounds[i], rpy[i])
                    hit.append(name)
                    clamped = True
            self._target_quat = rpy_to_quat(*rpy) if clamped else quat
            self.data.mocap_quat[self._mocap] = self._target_quat
        self.data.mocap_pos[self._mocap] = pos
        return hit

    def apply_action(self, action: Mapping[str, Any], control_rate_hz: float) -> StepReport:
        """Execute one policy step: a per-step delta in embodiment units over one control period.

        ``action`` holds some of :data:`ACTION_KEYS` (x, y, z in m per step;
        roll, pitch, yaw in rad per step about the base axes; gripper closedness
        0..1; terminate).  As the safety node does (DESIGN section 7), the delta
        becomes the twist ``delta * control_rate_hz`` held for ``1/control_rate_hz``
        s (rounded to whole physics steps, the twist scaled so the target moves
        by exactly the delta), then the twist is zero again.  Missing deltas are
        0 and a missing gripper keeps its command.  A terminate action commands
        a zero twist and holds the gripper.  Values are checked, not clamped:
        anything non-finite or unknown raises SimError.
        """
        rate = expect_number("control_rate_hz", control_rate_hz, low=0.1, high=1000.0)
        if not isinstance(action, Mapping):
            raise SimError(f"action: expected a mapping of {', '.join(ACTION_KEYS)}, got {action!r}")
        for key, value in action.items():
            if key not in ACTION_KEYS:
                raise SimError(f"action: unknown key {key!r} (expected some of {', '.join(ACTION_KEYS)})")
            if isinstance(value, bool) and key != "terminate":
                raise SimError(f"action.{key}: expected a number, got {value!r}")
            if not isinstance(value, (bool, int, float, np.integer, np.floating)) or not math.isfinite(value):
                raise SimError(f"action.{key}: expected a finite number, got {value!r}")
        h = self.model.opt.timestep
        n = max(1, int(round(1.0 / rate / h)))
        period = n * h  # the realised period, so the twist moves the target by exactly the delta
        if bool(action.get("terminate", False)):
            self.apply_twist((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        else:
            self.apply_twist([float(action.get(k, 0.0)) / period for k in _LINEAR_KEYS],
                             [float(action.get(k, 0.0)) / period for k in _ANGULAR_KEYS])
            if "gripper" in action:
                self.set_gripper(float(action["gripper"]))
        self._time_debt = 0.0
        report = self.step(period)
        # The delta is done: later step() calls must not keep moving by it.
        self._linear = np.zeros(3)
        self._angular = np.zeros(3)
        return report

    # ------------------------------------------------------------------ state

    @property
    def sim_time(self) -> float:
        """Simulated seconds since the episode started."""
        return float(self.data.time)

    @property
    def physics_dt(self) -> float:
        """The fixed physics step (s)."""
        return float(self.model.opt.timestep)

    def ee_pose(self) -> Pose:
        """The measured TCP pose (base frame)."""
        return Pose(self.data.xpos[self._hand_body].copy(), self.data.xquat[self._hand_body].copy())

    def ee_target_pose(self) -> Pose:
        """The commanded TCP target the hand is pulled towards (base frame)."""
        return Pose(self._target_pos.copy(), self._target_quat.copy())

    def gripper_state(self) -> GripperState:
        """Commanded and measured gripper state, and what it holds."""
        q = tuple(float(self.data.qpos[a]) for a in self._finger_qpos)
        v = tuple(float(self.data.qvel[a]) for a in self._finger_qvel)
        closedness = 1.0 - (q[0] + q[1]) / (2 * FINGER_MAX_OPENING)
        return GripperState(self._gripper_command, min(1.0, max(0.0, closedness)), q[0] + q[1], q, v,
                            self._grasped_object())

    def joint_state(self) -> dict[str, tuple[float, float]]:
        """Finger joints for a JointState message: name -> (position m, velocity m/s)."""
        state = self.gripper_state()
        return {"finger_left": (state.finger_positions[0], state.finger_velocities[0]),
                "finger_right": (state.finger_positions[1], state.finger_velocities[1])}

    def object_poses(self) -> dict[str, Pose]:
        """Pose of every object, by name ("red cube")."""
        d = self.data
        return {n: Pose(d.xpos[b].copy(), d.xquat[b].copy()) for n, b in self._object_bodies.items()}

    def _contact_pairs(self) -> set[frozenset[str]]:
        d = self.data
        pairs = set()
        for g1, g2 in d.contact.geom[:d.ncon]:
            a, b = self._geom_labels[g1], self._geom_labels[g2]
            if a and b and a != b:
                pairs.add(frozenset((a, b)))
        return pairs

    def _grasped_object(self) -> str | None:
        d = self.data
        touching_left, touching_right = set(), set()
        for g1, g2 in d.contact.geom[:d.ncon]:
            for pad, other in ((g1, g2), (g2, g1)):
                label = self._geom_labels[other]
                if label and label not in (GRIPPER, TABLE):
                    if pad == self._left_pad:
                        touching_left.add(label)
                    elif pad == self._right_pad:
                        touching_right.add(label)
        held = touching_left & touching_right
        if not held:
            return None
        # Touching both pads is not enough (an object can touch the outside of a
        # closed pair): it must sit between the pads, in the hand's frame.
        hand_rot = self.data.xmat[self._hand_body].reshape(3, 3)
        hand_pos = self.data.xpos[self._hand_body]
        q_left, q_right = (float(self.data.qpos[a]) for a in self._finger_qpos)
        for name in sorted(held):
            local = hand_rot.T @ (self.data.xpos[self._object_bodies[name]] - hand_pos)
            if -q_right - 0.005 <= local[1] <= q_left + 0.005:
                return name
        return None

    def _update_trackers(self) -> None:
        if self.task is None:
            return
        for name, body in self._object_bodies.items():
            self._max_z[name] = max(self._max_z[name], float(self.data.xpos[body][2]))
        held = self._grasped_object()
        if held is not None:
            self._ever_grasped[held] = True

    def snapshot(self) -> SceneSnapshot:
        """The state success predicates read (see :mod:`rt2_ros.sim.tasks`)."""
        d = self.data
        objects = {}
        for obj in self.scene.objects:
            position = tuple(float(v) for v in d.xpos[self._object_bodies[obj.name]])
            if self.task is not None:
                start = tuple(float(v) for v in self._start_positions[obj.name])
                max_z, ever = self._max_z[obj.name], self._ever_grasped[obj.name]
            else:
                start, max_z, ever = position, position[2], False
            objects[obj.name] = ObjectState(obj.name, obj.shape, position, start, max_z, ever,
                                            obj.half_height, obj.footprint_radius)
        return SceneSnapshot(objects, self._grasped_object(), frozenset(self._contact_pairs()))

    def set_object_pose(self, name: str, position: Sequence[float], quaternion: Sequence[float] = (1, 0, 0, 0)) -> None:
        """Teleport an object (for tests and scripted set-ups; velocities are zeroed)."""
        if name not in self._object_qpos:
            raise SimError(f"object: no {name!r} in this scene (it has {', '.join(self.scene.names)})")
        adr = self._object_qpos[name]
        self.data.qpos[adr:adr + 3] = _vector3("position", position, "m")
        quat = np.asarray(quaternion, float)
        if quat.shape != (4,) or not np.isfinite(quat).all() or np.linalg.norm(quat) < 1e-9:
            raise SimError(f"quaternion: expected 4 finite numbers (w, x, y, z), got {quaternion!r}")
        self.data.qpos[adr + 3:adr + 7] = quat / np.linalg.norm(quat)
        body = self._object_bodies[name]
        dof = int(self.model.jnt_dofadr[self.model.body_jntadr[body]])
        self.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ rendering

    def _rebind_renderers(self, previous: mujoco.MjModel | None) -> None:
        """Point the existing renderers at the new model, or close them.

        Creating a renderer (GL context, shader and texture upload) costs ~0.5 s
        on a CPU renderer, more than an episode's physics.  Every scene has the
        same assets (textures, materials, no meshes), so the GL resources stay
        valid and only the visual scene needs rebuilding for the new model.
        mujoco.Renderer has no public call for this, so it is done only when its
        attributes are the expected ones; otherwise the renderers are recreated.
        """
        if not self._renderers:
            return
        new = self.model
        same_assets = (
            previous is not None
            and all(getattr(previous, f) == getattr(new, f) for f in ("ntex", "nmat", "nmesh", "nskin", "nhfield"))
            and previous.vis.global_.offwidth == new.vis.global_.offwidth
            and previous.vis.global_.offheight == new.vis.global_.offheight
            and previous.vis.quality.shadowsize == new.vis.quality.shadowsize
            and np.array_equal(previous.tex_data, new.tex_data)
            and np.array_equal(previous.mat_rgba, new.mat_rgba)
            and np.array_equal(previous.mat_texid, new.mat_texid))
        if not same_assets or not all(hasattr(r, "_model") and isinstance(getattr(r, "_scene", None), mujoco.MjvScene)
                                      for r in self._renderers.values()):
            _close_renderers(self._renderers)
            return
        for renderer in self._renderers.values():
            renderer._model = new
            renderer._scene = mujoco.MjvScene(new, maxgeom=renderer._scene.maxgeom)

    def _renderer(self, size: tuple[int, int]) -> mujoco.Renderer:
        if size not in self._renderers:
            gl.require_gl_backend()
            try:
                self._renderers[size] = mujoco.Renderer(self.model, height=size[0], width=size[1])
            except ValueError as err:
                raise SimError(f"size: {size} does not fit the offscreen buffer ({err})") from err
        return self._renderers[size]

    def render(self, camera: str = HEAD_CAMERA, size: tuple[int, int] | None = None) -> np.ndarray:
        """Render ``camera`` ("head" or "wrist") as an HxWx3 uint8 RGB image.

        size: (height, width); default ``config.image_size``.
        """
        if camera not in CAMERAS:
            raise SimError(f"camera: expected one of {', '.join(CAMERAS)}, got {camera!r}")
        size = tuple(size) if size is not None else tuple(self.config.image_size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and 16 <= v <= 2048 for v in size):
            raise SimError(f"size: expected (height, width) integers in 16..2048, got {size!r}")
        renderer = self._renderer(size)
        renderer.update_scene(self.data, camera)
        return renderer.render()

    def visible_pixels(self, camera: str = HEAD_CAMERA, size: tuple[int, int] | None = None) -> dict[str, int]:
        """How many pixels of ``camera``'s image show each object and the gripper (occlusion checks)."""
        if camera not in CAMERAS:
            raise SimError(f"camera: expected one of {', '.join(CAMERAS)}, got {camera!r}")
        renderer = self._renderer(tuple(size) if size is not None else tuple(self.config.image_size))
        renderer.enable_segmentation_rendering()
        try:
            renderer.update_scene(self.data, camera)
            segmentation = renderer.render()
        finally:
            renderer.disable_segmentation_rendering()
        ids, types = segmentation[..., 0], segmentation[..., 1]
        geom_ids = ids[(types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)]
        counts = np.bincount(geom_ids.ravel(), minlength=self.model.ngeom)
        result = {name: 0 for name in self.scene.names}
        result[GRIPPER] = 0
        hand_bodies = {self._hand_body, *(mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, n)
                                          for n in ("finger_left", "finger_right"))}
        for geom_id in np.flatnonzero(counts):
            label = self._geom_labels[geom_id]
            if label in result:
                result[label] += int(counts[geom_id])
            elif int(self.model.geom_bodyid[geom_id]) in hand_bodies:
                result[GRIPPER] += int(counts[geom_id])
        return result

    def camera_intrinsics(self, camera: str = HEAD_CAMERA, size: tuple[int, int] | None = None
                          ) -> tuple[float, float, float, float]:
        """Pinhole intrinsics (fx, fy, cx, cy) in pixels of ``camera`` at ``size`` (for CameraInfo)."""
        if camera not in CAMERAS:
            raise SimError(f"camera: expected one of {', '.join(CAMERAS)}, got {camera!r}")
        height, width = size if size is not None else self.config.image_size
        cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        fy = 0.5 * height / math.tan(math.radians(float(self.model.cam_fovy[cam])) / 2)
        return fy, fy, (width - 1) / 2, (height - 1) / 2

    def camera_pose(self, camera: str = HEAD_CAMERA) -> Pose:
        """Camera pose in the base frame (MuJoCo camera axes: looks along -z, y up in the image)."""
        if camera not in CAMERAS:
            raise SimError(f"camera: expected one of {', '.join(CAMERAS)}, got {camera!r}")
        cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.cam_xmat[cam])
        return Pose(self.data.cam_xpos[cam].copy(), quat)

    def project_points(self, points: Sequence[Sequence[float]], camera: str = HEAD_CAMERA,
                       size: tuple[int, int] | None = None) -> np.ndarray:
        """Pixel coordinates (column, row), shape (N, 2), of base-frame ``points`` (N, 3) in
        ``camera``'s image at ``size`` (height, width; default ``config.image_size``).

        Row 0 is the top of the image, as in :meth:`render`; points behind the camera are
        not rejected (every object of a scene is in front of both cameras).
        """
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        if not np.all(np.isfinite(points)):
            raise SimError(f"points: expected finite (x, y, z) rows, got {points.tolist()!r}")
        fx, fy, cx, cy = self.camera_intrinsics(camera, size)
        pose = self.camera_pose(camera)
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, np.asarray(pose.quaternion, dtype=float))
        # Camera frame: x right, y up, looking along -z (MuJoCo's convention).
        in_camera = (points - pose.position) @ rotation.reshape(3, 3)
        depth = -in_camera[:, 2]
        return np.stack([cx + fx * in_camera[:, 0] / depth, cy - fy * in_camera[:, 1] / depth], axis=1)

    def close(self) -> None:
        """Release the renderers' GL contexts (the sim can still step; render re-creates them)."""
        _close_renderers(self._renderers)

    def __enter__(self) -> "TabletopSim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
