"""sim_node: the simulated tabletop arm as ROS 2 hardware - a camera, an arm and a gripper controller.

It consumes exactly what a real arm's controllers would, so the stack cannot
tell it from hardware, and publishes what a real cell's drivers would, plus
the simulator's task and (clearly labelled) privileged state for scoring and
for the ``expert`` backend.  Topic names are relative (a namespace applies to
all) and remappable:

- in ``servo_node/delta_twist_cmds`` (geometry_msgs/TwistStamped, reliable):
  the end-effector velocity, in ``base_frame`` (or ``""``) or ``ee_frame``;
  a twist older than ``twist_timeout_s`` (simulated) counts as zero, as a
  servo controller would do;
- in ``gripper/command`` (std_msgs/Float64, or Float64MultiArray with
  ``gripper_message``): closedness 0 = open .. 1 = closed;
- in ``rt2/instruction`` (std_msgs/String; with ``follow_instructions``): an
  instruction that matches a task template for this scene becomes the task
  (success is measured from then on);
- out ``camera/image_raw`` (sensor_msgs/Image rgb8, sensor-data QoS, frame
  ``camera_frame``, an optical frame: z forward, x right, y down),
  ``camera/camera_info`` (sensor_msgs/CameraInfo) and ``camera/pose``
  (geometry_msgs/PoseStamped of the optical frame in ``base_frame``; what a tf
  lookup would give, tf2_msgs is not a dependency);
- out ``ee_pose`` (geometry_msgs/PoseStamped, the tool centre point in
  ``base_frame``) and ``joint_states`` (sensor_msgs/JointState: the fingers, m);
- out ``sim/task`` (std_msgs/String JSON, reliable + transient local): the
  episode, seed, task, instruction and the success detector's verdict; sent
  on every change and ``task_rate_hz`` times a second;
- out ``sim/privileged_state`` (std_msgs/String JSON, ``"privileged": true``):
  :func:`rt2_ros.sim.expert.privileged_snapshot` at ``state_rate_hz``, for the
  ``expert`` backend (:mod:`rt2_ros.nodes.expert_bridge`) - never a policy input;
- out ``/clock`` (rosgraph_msgs/Clock) with ``publish_clock``; ``/diagnostics``;
- service ``~/reset`` (std_srvs/Trigger): a new episode with the next seed
  (``seed`` + 1 each time; setting the ``seed`` or ``task`` parameter picks the
  next reset's); the response message is the new ``sim/task`` JSON.

Time: physics advances in fixed steps of simulated time, ``servo_hz`` ticks
a simulated second, paced at ``real_time_factor`` (1 = real time, 0 = as fast
as it goes).  Stamps are the simulated clock when ``use_sim_time`` is true
(publish ``/clock`` too), else the wall-clock time of the render or state
read.  The rt2_ros stack times its control loop and safety hold with the wall
clock, so run at ``real_time_factor`` 1 with it.

Threads: one thread (``sim-loop``) owns the simulator (it is not
thread-safe); ROS callbacks only store commands and queue requests for it.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import Trigger

from rt2_ros.errors import ConfigError, Rt2RosError
from rt2_ros.nodes import stack
from rt2_ros.nodes.diagnostics import ReportOnce, diagnostic_array, shorten
from rt2_ros.nodes.parameters import ParamSpec, declare_node_parameters
from rt2_ros.nodes.qos import COMMAND_QOS, IMAGE_QOS, INSTRUCTION_QOS
from rt2_ros.nodes.runtime import run_node

__all__ = ["SimNode", "SimNodeSettings", "SIM_NODE_PARAMETERS", "sim_node_settings", "main",
           "TASK_TOPIC", "PRIVILEGED_STATE_TOPIC"]

CAMERA_INFO_TOPIC = "camera/camera_info"
CAMERA_POSE_TOPIC = "camera/pose"
EE_POSE_TOPIC = "ee_pose"
JOINT_STATES_TOPIC = "joint_states"
TASK_TOPIC = "sim/task"
PRIVILEGED_STATE_TOPIC = "sim/privileged_state"
CLOCK_TOPIC = "/clock"
RESET_SERVICE = "~/reset"

#: sim/task: reliable and transient local (like the instruction), so a scorer
#: started late gets the current episode.
TASK_QOS = INSTRUCTION_QOS
#: Privileged state and poses: reliable, only the newest matters (like commands).
STATE_QOS = COMMAND_QOS
# Instructions are followed as they are given: volatile, so an instruction
# latched by an earlier run does not replace this node's task at start-up.
_INSTRUCTION_FOLLOW_QOS = COMMAND_QOS
# Timing samples kept for diagnostics (render and publish time per frame).
_TIMING_SAMPLES = 500
# Falling further behind the pacing schedule than this restarts the schedule
# (instead of running flat out to catch up).
_MAX_LAG_S = 0.25
_GRIPPER_MESSAGES = ("float64", "float64_multi_array")


def _n(name: str, default: Any, description: str, **kw: Any) -> ParamSpec:
    return ParamSpec(name, default, description, "node", **kw)


SIM_NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    _n("seed", 0, "scene seed of the first episode; ~/reset uses the next seed (setting this "
                  "parameter picks the next reset's seed)", low=0, high=2**31 - 1),
    _n("task", "random", "task of each episode: a kind (pick, move_near, push, place_on), random, "
                         "or an instruction (the first seed from `seed` whose scene fits is used)"),
    _n("image_width", 224, "camera image width (px)", low=16, high=2048),
    _n("image_height", 224, "camera image height (px)", low=16, high=2048),
    _n("image_rate_hz", 10.0, "camera images per simulated second", low=0.0, high=240.0,
       low_inclusive=False),
    _n("camera", "head", "which camera: head (fixed, looking at the table) or wrist",
       choices=("head", "wrist")),
    _n("camera_frame", "head_camera_optical_frame", "frame_id of the images (an optical frame)"),
    _n("state_rate_hz", 50.0, "ee_pose, joint_states and sim/privileged_state per simulated second",
       low=0.0, high=1000.0, low_inclusive=False),
    _n("physics_hz", 500.0, "physics steps per simulated second", low=50.0, high=10000.0),
    _n("servo_hz", 100.0, "ticks per simulated second: commands applied and the end-effector target "
                          "integrated (a servo controller's rate; <= physics_hz)", low=1.0, high=10000.0),
    _n("real_time_factor", 1.0, "simulated seconds per wall second; 0 = as fast as possible",
       low=0.0, high=1000.0),
    _n("twist_timeout_s", 0.1, "a twist older than this (simulated s) counts as zero, like MoveIt "
                               "Servo's incoming command timeout", low=0.0, low_inclusive=False),
    _n("publish_clock", False, "publish the simulated time on /clock"),
    _n("base_frame", "base_link", "frame of poses and of base-frame twists"),
    _n("ee_frame", "tcp", "frame of the tool centre point (twists in it are rotated into the base)"),
    _n("shadows", True, "render shadows (costs render time on a CPU renderer)"),
    _n("task_rate_hz", 2.0, "sim/task messages per wall second (it is also sent on every change)",
       low=0.0, high=100.0, low_inclusive=False),
    _n("privileged_state", True, "publish sim/privileged_state (needed by the expert backend)"),
    _n("follow_instructions", True, "an instruction on rt2/instruction that fits the scene becomes "
                                    "the task"),
    _n("gripper_message", "float64", "gripper command type: float64 (std_msgs/Float64) or "
                                     "float64_multi_array (one value)", choices=_GRIPPER_MESSAGES),
    _n("diagnostics_period_s", 1.0, "seconds between /diagnostics messages", low=0.01, high=60.0),
)


@dataclass(frozen=True)
class SimNodeSettings:
    """Everything sim_node reads from its parameters, validated."""

    seed: int
    task: str
    sim: Any                    # rt2_ros.sim.SimConfig
    image_rate_hz: float
    camera: str
    camera_frame: str
    state_rate_hz: float
    real_time_factor: float
    publish_clock: bool
    base_frame: str
    ee_frame: str
    task_rate_hz: float
    privileged_state: bool
    follow_instructions: bool
    gripper_message: str
    diagnostics_period_s: float

    @property
    def tick_s(self) -> float:
        """Simulated seconds per loop tick."""
        return 1.0 / self.sim.servo_hz


def sim_node_settings(values: dict[str, Any], node: str = "sim_node") -> SimNodeSettings:
    """Validate sim_node's parameters (missing ones take their defaults); ConfigError names the parameter."""
    from rt2_ros.sim.tabletop import SimConfig

    known = {spec.name: spec for spec in SIM_NODE_PARAMETERS}
    for key in values:
        if key not in known:
            raise ConfigError(f"{node}: unknown parameter {key!r} (parameters: {', '.join(sorted(known))})")
    v = {}
    for spec in SIM_NODE_PARAMETERS:
        try:
            v[spec.name] = spec.validate(values.get(spec.name, spec.default))
        except ConfigError as exc:
            raise ConfigError(f"{node} parameter {exc}") from None
    if not v["task"].strip():
        raise ConfigError(f"{node} parameter task: expected a task kind, 'random' or an instruction, got ''")
    for name in ("camera_frame", "base_frame", "ee_frame"):
        if not v[name].strip():
            raise ConfigError(f"{node} parameter {name}: expected a frame id, got ''")
    try:
        sim = SimConfig(image_size=(v["image_height"], v["image_width"]), physics_hz=v["physics_hz"],
                        servo_hz=v["servo_hz"], twist_timeout_s=v["twist_timeout_s"],
                        shadows=v["shadows"])
    except ConfigError as exc:
        raise ConfigError(f"{node} parameter {exc}") from None
    return SimNodeSettings(
        seed=v["seed"], task=v["task"].strip(), sim=sim, image_rate_hz=v["image_rate_hz"],
        camera=v["camera"], camera_frame=v["camera_frame"], state_rate_hz=v["state_rate_hz"],
        real_time_factor=v["real_time_factor"], publish_clock=v["publish_clock"],
        base_frame=v["base_frame"], ee_frame=v["ee_frame"], task_rate_hz=v["task_rate_hz"],
        privileged_state=v["privileged_state"], follow_instructions=v["follow_instructions"],
        gripper_message=v["gripper_message"], diagnostics_period_s=v["diagnostics_period_s"])


def _time_msg(seconds: float) -> Time:
    sec = int(math.floor(seconds))
    return Time(sec=sec, nanosec=min(999_999_999, int(round((seconds - sec) * 1e9))))


def _set_pose(msg: Any, position: Sequence[float], quaternion_wxyz: Sequence[float]) -> None:
    """Fill a geometry_msgs/Pose; the simulator's (w, x, y, z) becomes ROS's named x, y, z, w."""
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in position)
    w, x, y, z = (float(v) for v in quaternion_wxyz)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = x, y, z, w


class _Timings:
    """Recent durations (ms) for diagnostics."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=_TIMING_SAMPLES)

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def summary(self) -> tuple[str, str]:
        if not self.samples:
            return "none", "none"
        arr = np.fromiter(self.samples, float)
        return f"{np.median(arr):.2f}", f"{np.percentile(arr, 99):.2f}"


@dataclass
class _Request:
    kind: str                   # "reset" or "instruction"
    text: str = ""
    done: threading.Event | None = None
    ok: bool = False
    message: str = ""


class SimNode(Node):
    """The simulator as a ROS node (see the module docstring)."""

    def __init__(self, *, node_name: str = "sim_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = declare_node_parameters(self, SIM_NODE_PARAMETERS)
        self.settings = s = sim_node_settings(values, self.get_name())
        overrides = getattr(self, "_parameter_overrides", {})
        unknown = sorted(n for n in overrides if not self.has_parameter(n))
        if unknown:
            self.get_logger().warning(f"parameters given but not used by {self.get_name()} "
                                   f"(typos?): {', '.join(unknown)}")
        self._use_sim_time = bool(self.get_parameter("use_sim_time").value)
        from rt2_ros.sim.evaluation import start_episode
        from rt2_ros.sim.expert import privileged_snapshot
        from rt2_ros.sim.rotations import quat_conj, quat_mul
        from rt2_ros.sim.tabletop import TabletopSim

        self._start_episode_fn = start_episode
        self._privileged_snapshot = privileged_snapshot
        self._quat_mul, self._quat_conj = quat_mul, quat_conj
        started = time.perf_counter()
        self.sim = TabletopSim(s.seed, task=None, config=s.sim)
        self._episode = 0
        self._clock_offset = 0.0           # simulated seconds of the episodes before this one
        self._seed = self._start_episode(s.seed, s.task)
        self._next_seed = self._seed + 1
        self._next_task = s.task
        self._lock = threading.Lock()      # commands, requests, next seed/task, stats
        self._twist: tuple[np.ndarray, np.ndarray, str] | None = None
        self._gripper: float | None = None
        self._requests: deque[_Request] = deque()
        self._reported = ReportOnce()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = False
        self._render_ms, self._publish_ms = _Timings(), _Timings()
        self._stats = {"frames": 0, "twists": 0, "twists_rejected": 0, "grippers": 0,
                       "grippers_rejected": 0, "lag_restarts": 0, "limits": 0}
        self._rtf_window: deque[tuple[float, float]] = deque(maxlen=200)
        self._success = False
        self._first_success: float | None = None
        self._task_reason = ""
        self._last_status: dict[str, Any] = {}
        self._progress = (0.0, 0.0)        # (sim_time, clock) after the newest tick

        group = MutuallyExclusiveCallbackGroup()
        self._image_pub = self.create_publisher(Image, stack.CAMERA_TOPIC, IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, IMAGE_QOS)
        self._camera_pose_pub = self.create_publisher(PoseStamped, CAMERA_POSE_TOPIC, TASK_QOS)
        self._ee_pub = self.create_publisher(PoseStamped, EE_POSE_TOPIC, STATE_QOS)
        self._joint_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
        self._task_pub = self.create_publisher(String, TASK_TOPIC, TASK_QOS)
        self._state_pub = (self.create_publisher(String, PRIVILEGED_STATE_TOPIC, STATE_QOS)
                           if s.privileged_state else None)
        self._clock_pub = self.create_publisher(Clock, CLOCK_TOPIC, 10) if s.publish_clock else None
        from diagnostic_msgs.msg import DiagnosticArray

        self._diag_pub = self.create_publisher(DiagnosticArray, stack.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(TwistStamped, stack.TWIST_TOPIC, self._on_twist, COMMAND_QOS,
                                 callback_group=group)
        if s.gripper_message == "float64":
            self.create_subscription(Float64, stack.GRIPPER_TOPIC,
                                     lambda m: self._on_gripper(m.data), COMMAND_QOS,
                                     callback_group=group)
        else:
            self.create_subscription(Float64MultiArray, stack.GRIPPER_TOPIC,
                                     self._on_gripper_array, COMMAND_QOS, callback_group=group)
        if s.follow_instructions:
            self.create_subscription(String, stack.INSTRUCTION_TOPIC, self._on_instruction,
                                     _INSTRUCTION_FOLLOW_QOS, callback_group=group)
        self.create_service(Trigger, RESET_SERVICE, self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(s.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"ready in {time.perf_counter() - started:.1f} s: episode {self._episode}, seed "
            f"{self._seed}, task {self._task_text()!r}; {s.camera} camera "
            f"{s.sim.image_size[1]}x{s.sim.image_size[0]} at {s.image_rate_hz:g} Hz, "
            f"real-time factor {s.real_time_factor:g}"
            + (", publishing /clock" if s.publish_clock else ""))

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the simulation loop thread."""
        self._thread = threading.Thread(target=self._loop_guarded, name="sim-loop", daemon=True)
        self._thread.start()

    def before_shutdown(self) -> None:
        """Stop the simulation loop (pending requests are answered as failed)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        with self._lock:
            while self._requests:
                self._answer(self._requests.popleft(), False, "sim_node is shutting down")

    def close(self) -> None:
        """Release the renderer (already done by the simulation thread when it ran)."""
        if self._thread is None or not self._thread.is_alive():
            self.sim.close()

    # ------------------------------------------------------------ callbacks (executor threads)

    def _on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        linear = np.array([t.linear.x, t.linear.y, t.linear.z], float)
        angular = np.array([t.angular.x, t.angular.y, t.angular.z], float)
        frame = msg.header.frame_id
        problem = ""
        if not (np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))):
            problem = f"twist: expected finite numbers, got linear {linear.tolist()} angular {angular.tolist()}"
        elif frame not in ("", self.settings.base_frame, self.settings.ee_frame):
            problem = (f"twist: frame_id {frame!r} is neither the base frame "
                       f"{self.settings.base_frame!r} nor the end-effector frame {self.settings.ee_frame!r}")
        with self._lock:
            if problem:
                self._stats["twists_rejected"] += 1
                # A command the controller cannot execute stops the arm, like a real servo would.
                self._twist = (np.zeros(3), np.zeros(3), "")
            else:
                self._stats["twists"] += 1
                self._twist = (linear, angular, frame)
        if problem:
            if self._reported.first("twist:" + problem.split(",")[0][:40]):
                self.get_logger().error(f"{problem}; commanding zero velocity (logged once)")
        else:
            self._reported.clear("twist:")

    def _on_gripper(self, value: float) -> None:
        ok = isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0
        with self._lock:
            if ok:
                self._stats["grippers"] += 1
                self._gripper = float(value)
            else:
                self._stats["grippers_rejected"] += 1
        if not ok and self._reported.first("gripper"):
            self.get_logger().error(f"gripper command: expected a closedness in 0..1 (0 = open), "
                                    f"got {value!r}; ignored (logged once)")
        elif ok:
            self._reported.clear("gripper")

    def _on_gripper_array(self, msg: Float64MultiArray) -> None:
        if len(msg.data) != 1:
            if self._reported.first("gripper_array"):
                self.get_logger().error(f"gripper command: expected one value, got {len(msg.data)}; "
                                        f"ignored (logged once)")
            return
        self._on_gripper(float(msg.data[0]))

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            self._requests.append(_Request("instruction", text=msg.data))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        job = _Request("reset", done=threading.Event())
        with self._lock:
            self._requests.append(job)
        if not job.done.wait(timeout=60.0):
            response.success, response.message = False, "reset did not finish within 60 s"
        else:
            response.success, response.message = job.ok, job.message
        return response

    def _on_set_parameters(self, params: Sequence[Any]) -> SetParametersResult:
        changes = {}
        for param in params:
            if param.name == "seed":
                value = param.value
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
                    return SetParametersResult(successful=False,
                                               reason=f"seed: expected an integer >= 0, got {value!r}")
                changes["seed"] = value
            elif param.name == "task":
                value = param.value
                if not isinstance(value, str) or not value.strip():
                    return SetParametersResult(
                        successful=False, reason=f"task: expected a task kind, 'random' or an "
                                                 f"instruction, got {value!r}")
                changes["task"] = value.strip()
            elif param.name != "use_sim_time":
                return SetParametersResult(
                    successful=False, reason=f"{self.get_name()} reads {param.name} once at start-up; "
                                             f"only seed and task (used by the next ~/reset) can change")
        with self._lock:
            if "seed" in changes:
                self._next_seed = changes["seed"]
            if "task" in changes:
                self._next_task = changes["task"]
        return SetParametersResult(successful=True)

    @staticmethod
    def _answer(job: _Request, ok: bool, message: str) -> None:
        job.ok, job.message = ok, message
        if job.done is not None:
            job.done.set()

    # ------------------------------------------------------------ the simulation thread

    def _task_text(self) -> str:
        return self.sim.task.instruction if self.sim.task is not None else "(none)"

    def _start_episode(self, seed: int, task: str) -> int:
        used = self._start_episode_fn(self.sim, seed, task)
        self._episode += 1
        self._success, self._first_success, self._task_reason = False, None, ""
        return used

    def _loop_guarded(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - never die silently: report and stop the node
            import traceback

            self.failed = True
            self.get_logger().fatal(f"simulation thread crashed: {type(exc).__name__}: {exc}\n"
                                    + "".join(traceback.format_exception(exc)))
        finally:
            # The GL context is current on this thread: release it here (EGL refuses
            # to make it current on another thread while this one holds it).
            self.sim.close()

    def _loop(self) -> None:
        s = self.settings
        tick = s.tick_s
        image_every, state_every = 1.0 / s.image_rate_hz, 1.0 / s.state_rate_hz

        def begin() -> tuple[float, float, float, float]:
            # The first frame of an episode also creates or rebinds the renderer
            # (slow); pacing starts after it.
            clock = self._sim_clock()
            self._publish_image(clock)
            self._publish_state(clock)
            self._publish_task()
            return clock + image_every, clock + state_every, time.monotonic(), clock

        next_image, next_state, pace_wall, pace_clock = begin()
        next_task_wall = time.monotonic() + 1.0 / s.task_rate_hz
        while not self._stopping.is_set():
            if self._handle_requests():
                next_image, next_state, pace_wall, pace_clock = begin()
            self._apply_commands()
            report = self.sim.step(tick)
            if report.limits:
                self._stats["limits"] += 1
            clock = self._sim_clock()
            if self._clock_pub is not None:
                self._clock_pub.publish(Clock(clock=_time_msg(clock)))
            if clock + 1e-9 >= next_image:
                self._publish_image(clock)
                next_image += image_every * max(1, math.floor((clock - next_image) / image_every) + 1)
            if clock + 1e-9 >= next_state:
                self._publish_state(clock)
                next_state += state_every * max(1, math.floor((clock - next_state) / state_every) + 1)
            now = time.monotonic()
            changed = self._update_success()
            if changed or now >= next_task_wall:
                self._publish_task()
                next_task_wall = now + 1.0 / s.task_rate_hz
            self._rtf_window.append((now, clock))
            self._progress = (self.sim.sim_time, clock)  # one tuple: read whole by diagnostics
            if s.real_time_factor > 0:
                due = pace_wall + (clock - pace_clock) / s.real_time_factor
                delay = due - time.monotonic()
                if delay > 0:
                    self._stopping.wait(delay)
                elif delay < -_MAX_LAG_S:
                    # Too slow for this factor (render and physics cost more than the
                    # period): restart the schedule instead of running flat out.
                    self._stats["lag_restarts"] += 1
                    pace_wall, pace_clock = time.monotonic(), clock
                    if self._reported.first("lag"):
                        self.get_logger().warning(
                            f"cannot keep real-time factor {s.real_time_factor:g}: more than "
                            f"{_MAX_LAG_S:g} s behind (see real_time_factor in /diagnostics; "
                            f"logged once)")

    def _sim_clock(self) -> float:
        return self._clock_offset + self.sim.sim_time

    def _stamp(self, clock: float) -> Time:
        return _time_msg(clock) if self._use_sim_time else self.get_clock().now().to_msg()

    def _handle_requests(self) -> bool:
        """Carry out queued resets and instructions; True if an episode (re)started."""
        restarted = False
        while True:
            with self._lock:
                if not self._requests:
                    return restarted
                job = self._requests.popleft()
                seed, task = self._next_seed, self._next_task
            if job.kind == "reset":
                elapsed = self.sim.sim_time
                try:
                    used = self._start_episode(seed, task)
                except Rt2RosError as exc:
                    self._answer(job, False, f"reset failed: {exc}")
                    self.get_logger().error(f"~/reset failed: {exc}")
                    continue
                self._clock_offset += elapsed  # /clock never runs backwards
                with self._lock:
                    self._seed, self._next_seed, self._twist = used, used + 1, None
                    self._gripper = None
                restarted = True
                self.get_logger().info(f"episode {self._episode}: seed {used}, task {self._task_text()!r}")
                self._answer(job, True, self._publish_task())
            else:
                self._follow_instruction(job.text)
                self._publish_task()

    def _follow_instruction(self, text: str) -> None:
        current = self.sim.task
        if current is not None and " ".join(current.instruction.lower().split()) == " ".join(
                text.strip().rstrip(".").lower().split()):
            return  # the same task goes on
        try:
            spec = self.sim.set_task(text)
        except Rt2RosError as exc:
            self.sim.task = None
            self._task_reason = shorten(f"instruction {text!r} fits no task in this scene: {exc}", 400)
            self.get_logger().warning(f"no task to score: {self._task_reason}")
        else:
            self._task_reason = ""
            self.get_logger().info(f"task from rt2/instruction: {spec.instruction!r} ({spec.kind})")
        self._success, self._first_success = False, None

    def _apply_commands(self) -> None:
        with self._lock:
            twist, self._twist = self._twist, None
            gripper, self._gripper = self._gripper, None
        if twist is not None:
            linear, angular, frame = twist
            if frame == self.settings.ee_frame and frame != self.settings.base_frame:
                q = self.sim.ee_pose().quaternion
                linear, angular = self._rotate(q, linear), self._rotate(q, angular)
            self.sim.apply_twist(linear, angular)
        if gripper is not None:
            self.sim.set_gripper(gripper)

    def _rotate(self, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self._quat_mul(self._quat_mul(q, np.array([0.0, *v])), self._quat_conj(q))[1:]

    def _update_success(self) -> bool:
        success = bool(self.sim.task is not None and self.sim.success())
        if success and self._first_success is None:
            self._first_success = self.sim.sim_time
        changed = success != self._success
        self._success = success
        return changed

    # ------------------------------------------------------------ publishing

    def _publish_image(self, clock: float) -> None:
        s = self.settings
        started = time.perf_counter()
        rgb = self.sim.render(s.camera)
        rendered = time.perf_counter()
        stamp = self._stamp(clock)
        h, w = rgb.shape[:2]
        msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
        msg.header.stamp, msg.header.frame_id = stamp, s.camera_frame
        msg.data = rgb.tobytes()
        self._image_pub.publish(msg)
        fx, fy, cx, cy = self.sim.camera_intrinsics(s.camera)
        info = CameraInfo(height=h, width=w, distortion_model="plumb_bob")
        info.header = msg.header
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        self._info_pub.publish(info)
        camera = self.sim.camera_pose(s.camera)
        # MuJoCo cameras look along -z with y up; the optical frame is that turned
        # half a turn about x (z forward, y down).
        optical = self._quat_mul(camera.quaternion, np.array([0.0, 1.0, 0.0, 0.0]))
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, s.base_frame
        _set_pose(pose.pose, camera.position, optical)
        self._camera_pose_pub.publish(pose)
        done = time.perf_counter()
        with self._lock:
            self._stats["frames"] += 1
        self._render_ms.add((rendered - started) * 1000.0)
        self._publish_ms.add((done - rendered) * 1000.0)

    def _publish_state(self, clock: float) -> None:
        s = self.settings
        stamp = self._stamp(clock)
        ee = self.sim.ee_pose()
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, s.base_frame
        _set_pose(pose.pose, ee.position, ee.quaternion)
        self._ee_pub.publish(pose)
        joints = self.sim.joint_state()
        joint_msg = JointState(name=list(joints), position=[float(p) for p, _ in joints.values()],
                               velocity=[float(v) for _, v in joints.values()])
        joint_msg.header.stamp = stamp
        self._joint_pub.publish(joint_msg)
        if self._state_pub is not None:
            snapshot = self._privileged_snapshot(self.sim, episode=self._episode)
            snapshot["clock"] = clock
            self._state_pub.publish(String(data=json.dumps(snapshot, separators=(",", ":"))))

    def task_status(self) -> dict[str, Any]:
        """What sim/task says now (called on the simulation thread)."""
        task = self.sim.task
        return {
            "episode": self._episode, "seed": self._seed,
            "instruction": task.instruction if task is not None else None,
            "task": None if task is None else {
                "kind": task.kind, "object": task.object, "reference": task.reference,
                "direction": task.direction, "predicate": task.predicate},
            "success": self._success,
            "first_success_sim_time": self._first_success,
            "sim_time": self.sim.sim_time, "clock": self._sim_clock(),
            "objects": self.sim.scene.names,
            "reason": self._task_reason,
        }

    def _publish_task(self) -> str:
        status = self.task_status()
        text = json.dumps(status, separators=(",", ":"))
        self._task_pub.publish(String(data=text))
        self._last_status = status
        return text

    def _publish_diagnostics(self) -> None:
        with self._lock:
            stats = dict(self._stats)
        window = list(self._rtf_window)
        rtf = "none"
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            rtf = f"{(window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]):.3f}"
        render_median, render_p99 = self._render_ms.summary()
        publish_median, publish_p99 = self._publish_ms.summary()
        status = self._last_status
        sim_time, clock = self._progress
        values = [
            ("episode", str(status.get("episode", ""))), ("seed", str(status.get("seed", ""))),
            ("instruction", str(status.get("instruction") or "")),
            ("success", str(status.get("success", False)).lower()),
            ("sim_time", f"{sim_time:.3f}"), ("clock", f"{clock:.3f}"),
            ("real_time_factor.target", f"{self.settings.real_time_factor:g}"),
            ("real_time_factor", rtf),
            ("render_ms.median", render_median), ("render_ms.p99", render_p99),
            ("image_publish_ms.median", publish_median), ("image_publish_ms.p99", publish_p99),
            ("frames_published", str(stats["frames"])),
            ("twists_received", str(stats["twists"])),
            ("twists_rejected", str(stats["twists_rejected"])),
            ("gripper_commands", str(stats["grippers"])),
            ("gripper_rejected", str(stats["grippers_rejected"])),
            ("workspace_limit_ticks", str(stats["limits"])),
            ("lag_restarts", str(stats["lag_restarts"])),
        ]
        level, message = 0, f"episode {status.get('episode', '?')}: {status.get('instruction')!r}"
        if stats["twists_rejected"] or stats["grippers_rejected"]:
            level, message = 1, "rejected commands (see twists_rejected / gripper_rejected)"
        elif stats["lag_restarts"]:
            level, message = 1, f"cannot keep real-time factor {self.settings.real_time_factor:g}"
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                                f"rt2_ros: {self.get_name()}", level, message, values))


def main(args: Sequence[str] | None = None) -> int:
    """Run sim_node (``python -m rt2_ros.nodes.sim_node --ros-args ...``)."""
    return run_node("sim_node", SimNode, lambda: MultiThreadedExecutor(num_threads=2), args)


if __name__ == "__main__":
    sys.exit(main())
