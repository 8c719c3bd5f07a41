"""policy_node: newest camera image + instruction -> one RT2Action per control step.

Topics (relative names; DESIGN section 3):

- in ``camera/image_raw`` (sensor_msgs/Image, sensor-data QoS, keep last 1) or,
  with ``image_transport: compressed``, ``camera/image_raw/compressed``;
- in ``rt2/instruction`` (std_msgs/String, reliable + transient local, depth 1):
  every message starts a new episode, pre-empting the current one;
- action server ``rt2/execute`` (rt2_ros/action/ExecuteInstruction): the same
  as an instruction plus step and time limits, feedback per step and a result;
- out ``rt2/action`` (rt2_ros/RT2Action), ``rt2/plan`` (String),
  ``rt2/markers`` (MarkerArray), ``/diagnostics``.

Threads: one single-threaded executor stores images and instructions,
answers the action server and publishes diagnostics, and never waits for the
model (a multi-threaded executor measured several times the image latency
here).  The policy runs on its own thread (``rt2-inference``) at most
``control_rate_hz`` times a second, as soon as a new image is there, always
on the newest image not used yet (a new episode may start on the image the
previous one used last) and never on one older than ``max_image_age_s``.
Only that thread calls the policy (``act``, ``reset``), so backends need not
be thread-safe.  Goals do not block the executor: an accepted goal starts its
episode, and when the episode ends ``goal_handle.execute()`` runs the execute
callback, which only reports.

An episode ends when the model emits terminate (``terminated``), at the
goal's ``max_steps`` or ``timeout_s`` (``max_steps``, ``timeout``), on cancel
(``canceled``), when a new instruction or goal arrives (``preempted``), when
the backend fails (``backend_error: <message>``; nothing is published for
that step and the safety node's watchdog zeroes the twist), on a bad goal
(``invalid_goal: ...``) or at shutdown (``shutdown``).  Bad input (an image
it cannot use, an empty or oversized instruction, a backend that raises) is
logged once per cause and shown in diagnostics; the node keeps running.
"""
from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from rt2_ros.action import ExecuteInstruction
from rt2_ros.errors import Rt2RosError
from rt2_ros.msg import RT2Action
from rt2_ros.nodes import stack
from rt2_ros.nodes.diagnostics import RateMeter, ReportOnce, diagnostic_array, shorten
from rt2_ros.nodes.image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb
from rt2_ros.nodes.markers import action_markers
from rt2_ros.nodes.qos import ACTION_QOS, IMAGE_QOS, INSTRUCTION_QOS
from rt2_ros.nodes.parameters import (POLICY_NODE_PARAMETERS, declare_node_parameters,
                                      refuse_parameter_changes, policy_node_settings)
from rt2_ros.nodes.runtime import run_node
from rt2_ros.policy.base import HandState, Policy, PolicyOutput, check_instruction

__all__ = ["PolicyNode", "Episode", "main"]

_POSITION_DIMS = ("x", "y", "z")
_ROTATION_DIMS = ("roll", "pitch", "yaw")
# How often the executor checks episode time limits (the inference thread
# checks too, but it may be inside a long model call).
_LIMIT_CHECK_PERIOD_S = 0.05
# Diagnostics show ERROR while the last backend error is this recent.
_ERROR_HOLD_S = 10.0
# Image latency samples (arrival - stamp) kept for diagnostics.
_LATENCY_SAMPLES = 1000


class Episode:
    """One instruction being executed; finished exactly once, from any thread."""

    def __init__(self, instruction: str, source: str, max_steps: int, timeout_s: float,
                 started: float, goal_handle: Any = None) -> None:
        self.instruction = instruction
        self.source = source               # "topic" or "goal"
        self.max_steps = max_steps         # 0 = no limit
        self.timeout_s = timeout_s         # 0 = no limit
        self.started = started             # monotonic seconds
        self.goal_handle = goal_handle
        self.steps = 0
        self.reason = ""
        self.terminated = False
        self.done = threading.Event()
        self._lock = threading.Lock()

    def finish(self, reason: str, terminated: bool = False) -> bool:
        """End the episode with ``reason``; False if it had already ended."""
        with self._lock:
            if self.done.is_set():
                return False
            self.reason = reason
            self.terminated = terminated
            self.done.set()
            return True

    def time_left(self, now: float) -> float:
        """Seconds until the time limit (inf without one)."""
        return math.inf if self.timeout_s <= 0 else self.started + self.timeout_s - now


@dataclass
class _Frame:
    seq: int
    stamp: Any                 # builtin_interfaces/Time of the image
    stamp_s: float             # the stamp in seconds (0 = unstamped)
    received: float            # monotonic arrival time
    rgb: np.ndarray | None     # converted on arrival (raw images)
    compressed: Any = None     # decoded when used (compressed images)
    used: bool = False


@dataclass
class _Stats:
    frames_received: int = 0
    frames_used: int = 0
    frames_skipped: int = 0
    frames_rejected: int = 0
    frames_too_old: int = 0
    actions: int = 0
    episodes: int = 0
    instructions_rejected: int = 0
    backend_errors: int = 0
    last_error: str = ""
    last_error_time: float = -math.inf
    last_image_problem: str = ""
    last_inference_ms: float = 0.0
    last_result: str = ""
    waiting: str = "waiting for an instruction"


def _stamp_seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class PolicyNode(Node):
    """The policy as a ROS node (see the module docstring).

    ``policy``: use this Policy instead of building one from the parameters
    (tests inject backends this way).  Call :meth:`start` once the node is
    spinning, :meth:`before_shutdown` and :meth:`close` on the way out
    (:func:`main` does all three).
    """

    def __init__(self, *, policy: Policy | None = None, node_name: str = "policy_node",
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = declare_node_parameters(self, POLICY_NODE_PARAMETERS)
        self.settings = policy_node_settings(values, self.get_name())
        self._warn_unknown_overrides()
        refuse_parameter_changes(self)
        cfg = self.settings.policy
        log = self.get_logger()
        if policy is None:
            from rt2_ros.policy.factory import make_policy

            if cfg.backend == "transformers" and self.settings.torch_threads:
                import torch

                torch.set_num_threads(self.settings.torch_threads)
                log.info(f"torch_threads: {torch.get_num_threads()} torch intra-op thread(s)")
            log.info(f"loading the {cfg.backend} backend"
                     + (f" (model {cfg.model!r})" if cfg.model else ""))
            started = time.perf_counter()
            policy = make_policy(cfg)
            log.info(f"{cfg.backend} backend ready in {time.perf_counter() - started:.1f} s")
        self.policy = policy
        if cfg.backend == "expert":
            from rt2_ros.nodes.expert_bridge import attach_expert_state

            attach_expert_state(self, policy)
        embodiment = getattr(policy, "embodiment", None)
        self._embodiment_name = getattr(embodiment, "name", "") or cfg.embodiment_name
        self._gripper_range = (0.0, 1.0)
        if embodiment is not None and "gripper" in getattr(embodiment, "names", ()):
            self._gripper_range = embodiment.dim("gripper").physical_range

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._episode: Episode | None = None
        self._frame: _Frame | None = None
        self._frame_seq = 0
        self._stats = _Stats()
        self._rate = RateMeter()
        self._inference_ms = RateWindow()
        self._reported = ReportOnce()
        self._image_latency_ms: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._overhead_ms: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = False
        self._cv_bridge = _optional_cv_bridge()

        # The hand's state (hand_state_topic): the newest pose's z and arrival time, and the
        # last gripper command this node published (it outlives episodes, as the gripper does).
        self._hand_pose: tuple[float, float] | None = None
        self._last_gripper: float | None = None
        if self.settings.hand_state_topic:
            self.create_subscription(PoseStamped, self.settings.hand_state_topic, self._on_hand_pose,
                                     qos_profile_sensor_data)

        self._goal_episodes: dict[bytes, Episode] = {}
        if self.settings.image_transport == "compressed":
            self._image_topic = stack.CAMERA_TOPIC + stack.COMPRESSED_SUFFIX
            self.create_subscription(CompressedImage, self._image_topic, self._on_compressed,
                                     IMAGE_QOS)
        else:
            self._image_topic = stack.CAMERA_TOPIC
            self.create_subscription(Image, self._image_topic, self._on_image, IMAGE_QOS)
        self.create_subscription(String, stack.INSTRUCTION_TOPIC, self._on_instruction,
                                 INSTRUCTION_QOS)
        self._action_pub = self.create_publisher(RT2Action, stack.ACTION_TOPIC, ACTION_QOS)
        self._plan_pub = self.create_publisher(String, stack.PLAN_TOPIC, ACTION_QOS)
        self._marker_pub = (self.create_publisher(MarkerArray, stack.MARKERS_TOPIC, 1)
                            if self.settings.publish_markers else None)
        self._diag_pub = self.create_publisher(DiagnosticArray, stack.DIAGNOSTICS_TOPIC, 10)
        # Goals run without blocking the executor: accepting one starts its
        # episode; when the episode ends, goal_handle.execute() schedules
        # _complete_goal, which sets the final state and returns the result.
        self._server = ActionServer(
            self, ExecuteInstruction, stack.EXECUTE_ACTION, execute_callback=self._complete_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            handle_accepted_callback=self._on_goal_accepted, cancel_callback=self._on_cancel)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)
        # Time limits hold even while the backend is busy with a long inference.
        self.create_timer(_LIMIT_CHECK_PERIOD_S, self._check_time_limit)
        log.info(f"ready: backend {policy.name}, embodiment {self._embodiment_name}, "
                 f"{self.settings.control_rate_hz:g} Hz, camera "
                 f"{self.resolve_topic_name(self._image_topic)}")

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the inference thread."""
        self._thread = threading.Thread(target=self._control_loop, name="rt2-inference",
                                        daemon=True)
        self._thread.start()

    def before_shutdown(self) -> None:
        """End the current episode (reason ``shutdown``) and stop the inference thread."""
        self._stopping.set()
        with self._wake:
            episode = self._episode
            self._wake.notify_all()
        if episode is not None:
            self._finish(episode, "shutdown")
        if self._thread is not None:
            self._thread.join(timeout=30.0)
        # Let the goals' results go out while the executor still spins.
        time.sleep(0.2)

    def close(self) -> None:
        """Release the backend (model memory, connections)."""
        try:
            self.policy.close()
        except Exception as exc:  # noqa: BLE001 - closing must not mask the shutdown
            self.get_logger().warning(f"closing the backend failed: {type(exc).__name__}: {exc}")

    # ----------------------------------------------------------- parameters

    def _warn_unknown_overrides(self) -> None:
        # rclpy ignores overrides nobody declares, so a typo in a parameter
        # file would go unnoticed; rclpy has no public accessor for them.
        overrides = getattr(self, "_parameter_overrides", {})
        unknown = sorted(n for n in overrides if not self.has_parameter(n))
        if unknown:
            self.get_logger().warning(f"parameters given but not used by {self.get_name()} "
                                   f"(typos?): {', '.join(unknown)}")

    # -------------------------------------------------------------- inputs

    def _on_image(self, msg: Image) -> None:
        received = time.monotonic()
        try:
            rgb = image_to_rgb(msg)
        except ImageConversionError as exc:
            rgb = self._convert_with_cv_bridge(msg, exc)
            if rgb is None:
                return
        self._store_frame(msg.header.stamp, received, rgb, None)

    def _on_hand_pose(self, msg: PoseStamped) -> None:
        frame = msg.header.frame_id
        if frame and frame != self.settings.command_frame:
            if self._reported.first("hand:frame"):
                self.get_logger().warning(
                    f"hand_state_topic: expected poses in command_frame {self.settings.command_frame!r}, got "
                    f"{frame!r}; the hand's state is not given to the policy (logged once)")
            return
        height = float(msg.pose.position.z)
        if not math.isfinite(height):
            if self._reported.first("hand:nan"):
                self.get_logger().warning(f"hand_state_topic: expected a finite z, got {height} (logged once)")
            return
        with self._lock:
            self._hand_pose = (height, time.monotonic())

    def _hand_state(self) -> HandState | None:
        """The hand's state for the next action, None (said once) without a fresh pose."""
        with self._lock:
            pose, command = self._hand_pose, self._last_gripper
        if pose is None or time.monotonic() - pose[1] > self.settings.max_image_age_s:
            if self._reported.first("hand:stale"):
                self.get_logger().warning(
                    f"hand_state_topic: no pose on {self.settings.hand_state_topic} newer than "
                    f"max_image_age_s ({self.settings.max_image_age_s:g} s); acting without the hand's state "
                    f"(logged once until poses arrive)")
            return None
        self._reported.clear("hand:stale")
        return HandState(pose[0], command)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._store_frame(msg.header.stamp, time.monotonic(), None, msg)

    def _convert_with_cv_bridge(self, msg: Image, error: ImageConversionError) -> np.ndarray | None:
        """Encodings the numpy path lacks (yuv422, 16-bit, ...) where the ROS install has cv_bridge."""
        if error.cause == "encoding" and self._cv_bridge is not None:
            try:
                return self._cv_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
            except Exception as exc:  # noqa: BLE001 - cv_bridge raises its own error types
                error = ImageConversionError(
                    "encoding", f"image: cv_bridge cannot convert encoding {msg.encoding!r} to "
                                f"rgb8: {exc}")
        self._bad_image(error)
        return None

    def _bad_image(self, error: ImageConversionError, *, on_arrival: bool = True) -> None:
        with self._lock:
            if on_arrival:  # a compressed frame refused when decoded was counted on arrival
                self._stats.frames_received += 1
            self._stats.frames_rejected += 1
            self._stats.last_image_problem = str(error)
        if self._reported.first(f"image:{error.cause}"):
            self.get_logger().error(f"camera image not used: {error} (topic "
                                    f"{self.resolve_topic_name(self._image_topic)}; logged once "
                                    f"until a usable image arrives)")

    def _store_frame(self, stamp: Any, received: float, rgb: np.ndarray | None,
                     compressed: Any) -> None:
        stamp_s = _stamp_seconds(stamp)
        if stamp_s > 0.0:  # how late images arrive: the camera's share of the latency
            self._image_latency_ms.append(
                (self.get_clock().now().nanoseconds * 1e-9 - stamp_s) * 1000.0)
        with self._wake:
            self._stats.frames_received += 1
            if self._frame is not None and not self._frame.used:
                self._stats.frames_skipped += 1
            self._frame_seq += 1
            self._frame = _Frame(self._frame_seq, stamp, stamp_s, received, rgb, compressed)
            self._wake.notify_all()
        self._reported.clear("image:")

    def _on_instruction(self, msg: String) -> None:
        text = msg.data
        try:
            check_instruction(text)
        except Rt2RosError as exc:
            with self._lock:
                self._stats.instructions_rejected += 1
                self._note_error(f"instruction rejected: {exc}")
            self.get_logger().error(f"instruction rejected: {exc} (current episode stopped; "
                                    f"the arm is held still)")
            self._replace_episode(None, "preempted")
            return
        self.get_logger().info(f"new instruction: {shorten(text, 120)!r}")
        self._replace_episode(Episode(text, "topic", self.settings.max_steps,
                                      self.settings.timeout_s, time.monotonic()), "preempted")

    def _replace_episode(self, episode: Episode | None, reason: str) -> None:
        with self._wake:
            old = self._episode
            self._episode = episode
            if episode is not None:
                self._stats.episodes += 1
            self._wake.notify_all()
        self._reported.clear("backend:")
        if old is not None:
            self._finish(old, reason)

    def _finish(self, episode: Episode, reason: str, terminated: bool = False) -> bool:
        """End ``episode`` (once; from any thread) and, for a goal, schedule its result."""
        if not episode.finish(reason, terminated):
            return False
        with self._wake:
            self._stats.last_result = f"{reason} after {episode.steps} steps"
            self._wake.notify_all()
        self.get_logger().info(f"episode {shorten(episode.instruction, 80)!r} ended: {reason} "
                               f"after {episode.steps} steps")
        if episode.goal_handle is not None:
            try:
                episode.goal_handle.execute()
            except Exception as exc:  # noqa: BLE001 - a goal the server already dropped
                self.get_logger().warning(f"cannot complete the goal: {exc}")
        return True

    def _check_time_limit(self) -> None:
        with self._lock:
            episode = self._episode
        if episode is not None and not episode.done.is_set() \
                and episode.time_left(time.monotonic()) <= 0:
            self._finish(episode, "timeout")

    # -------------------------------------------------------- action server

    def _on_cancel(self, goal_handle: Any) -> CancelResponse:
        episode = self._goal_episodes.get(bytes(goal_handle.goal_id.uuid))
        if episode is None or episode.done.is_set():
            return CancelResponse.REJECT
        self._finish(episode, "canceled")
        return CancelResponse.ACCEPT

    def _on_goal_accepted(self, goal_handle: Any) -> None:
        goal = goal_handle.request
        episode = Episode(goal.instruction, "goal", int(goal.max_steps), float(goal.timeout_s),
                          time.monotonic(), goal_handle)
        self._goal_episodes[bytes(goal_handle.goal_id.uuid)] = episode
        problem = _goal_problem(goal)
        if problem:
            self.get_logger().error(f"goal refused: {problem}")
            with self._lock:
                self._note_error(f"goal refused: {problem}")
            self._replace_episode(None, "preempted")
            self._finish(episode, f"invalid_goal: {problem}")
            return
        self.get_logger().info(f"new goal: {shorten(goal.instruction, 120)!r} (max_steps "
                               f"{goal.max_steps}, timeout_s {goal.timeout_s:g})")
        self._replace_episode(episode, "preempted")

    def _complete_goal(self, goal_handle: Any) -> Any:
        """The execute callback, run once the goal's episode has ended."""
        episode = self._goal_episodes.pop(bytes(goal_handle.goal_id.uuid), None)
        if episode is None or not episode.done.is_set():  # never scheduled by anything else
            goal_handle.abort()
            return ExecuteInstruction.Result(reason="internal_error: goal without an episode")
        if episode.reason == "canceled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif episode.terminated:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return ExecuteInstruction.Result(terminated=episode.terminated, steps=episode.steps,
                                         reason=episode.reason)

    # ---------------------------------------------------------- control loop

    def _control_loop(self) -> None:
        try:
            self._run_loop()
        except Exception as exc:  # noqa: BLE001 - never die silently: report and stop the node
            self.failed = True
            self.get_logger().fatal(f"inference thread crashed: {type(exc).__name__}: {exc}\n"
                                    + "".join(traceback.format_exception(exc)))

    def _run_loop(self) -> None:
        period = self.settings.control_period_s
        next_step = 0.0
        prepared: Episode | None = None
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._wake:
                episode = self._episode
                if episode is None or episode.done.is_set():
                    self._stats.waiting = "waiting for an instruction"
                    self._wake.wait(timeout=0.5)
                    continue
            if episode is not prepared:
                self._reset_policy()
                prepared = episode
                next_step = now
                with self._wake:
                    # A new instruction may act on the newest image at once, even if
                    # the previous instruction used it (the age limit still applies).
                    if self._frame is not None:
                        self._frame.used = False
            if episode.time_left(now) <= 0:
                self._finish(episode, "timeout")
                continue
            if now < next_step:
                with self._wake:
                    if self._episode is episode:
                        self._wake.wait(timeout=min(next_step - now, episode.time_left(now)))
                continue
            frame = self._take_frame(episode, now)
            if frame is None:
                continue
            self._step(episode, frame, now)
            next_step = now + period

    def _reset_policy(self) -> None:
        try:
            self.policy.reset()
        except Exception as exc:  # noqa: BLE001 - reported like any backend failure
            self._report_backend_error(f"reset failed: {type(exc).__name__}: {exc}")

    def _take_frame(self, episode: Episode, now: float) -> _Frame | None:
        """The newest unused frame if it is fresh enough; else None after waiting a little."""
        max_age = self.settings.max_image_age_s
        with self._wake:
            frame = self._frame
            if frame is not None and not frame.used:
                age = self._frame_age(frame, now)
                frame.used = True
                if age <= max_age:
                    self._stats.frames_used += 1
                    return frame
                self._stats.frames_too_old += 1
                problem = (f"image too old: {age:.3f} s (max_image_age_s {max_age:g}); waiting "
                           f"for a newer one")
            elif frame is None:
                problem = (f"no camera image received yet on "
                           f"{self.resolve_topic_name(self._image_topic)}")
            else:
                age = self._frame_age(frame, now)
                problem = (f"no new camera image; the newest is {age:.3f} s old"
                           if age > max_age else "")
            self._stats.waiting = problem or "waiting for the next camera image"
            if problem:
                self._stats.last_image_problem = problem
            # Woken by the next image, a new episode or shutdown.
            self._wake.wait(timeout=min(self.settings.control_period_s, max_age,
                                        max(0.0, episode.time_left(now))))
        if problem and (now - episode.started > max_age or frame is not None) \
                and self._reported.first("wait:" + problem.split(":")[0].split(";")[0]):
            self.get_logger().warning(f"not acting: {problem} (logged once until images are fresh)")
        return None

    def _frame_age(self, frame: _Frame, now: float) -> float:
        arrival_age = now - frame.received
        if frame.stamp_s <= 0.0:
            return arrival_age
        stamp_age = self.get_clock().now().nanoseconds * 1e-9 - frame.stamp_s
        # A camera clock ahead of ours gives negative ages; arrival time still bounds them.
        return max(stamp_age, arrival_age)

    def _step(self, episode: Episode, frame: _Frame, now: float) -> None:
        try:
            image = frame.rgb if frame.rgb is not None else compressed_to_rgb(frame.compressed)
        except ImageConversionError as exc:
            self._bad_image(exc, on_arrival=False)
            return
        self._reported.clear("wait:")
        hand = self._hand_state() if self.settings.hand_state_topic else None
        started = time.perf_counter()
        try:
            output = (self.policy.act(image, episode.instruction) if hand is None
                      else self.policy.act(image, episode.instruction, hand))
            inference_ms = (time.perf_counter() - started) * 1000.0
            msg = self._action_message(output, episode, frame, inference_ms)
        except Rt2RosError as exc:
            self._backend_failed(episode, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - any backend failure ends the episode, not the node
            self._backend_failed(episode, f"{type(exc).__name__}: {exc}",
                                 "".join(traceback.format_exception(exc)))
            return
        with self._wake:
            if self._episode is not episode or episode.done.is_set():
                return  # pre-empted while the model ran: the action is for an old instruction
            msg.step = episode.steps
            episode.steps += 1
            self._action_pub.publish(msg)
            self._last_gripper = float(msg.gripper)
            # This node's own share: image arrival -> action published, minus the model.
            self._overhead_ms.append((time.monotonic() - frame.received) * 1000.0 - inference_ms)
            self._stats.actions += 1
            self._stats.last_inference_ms = inference_ms
            self._stats.waiting = ""
            self._rate.add(time.monotonic())
            self._inference_ms.add(inference_ms)
        if msg.plan:
            self._plan_pub.publish(String(data=msg.plan))
        if self._marker_pub is not None:
            self._marker_pub.publish(action_markers(
                msg, frame_id=self.settings.command_frame, stamp=msg.header.stamp,
                scale=self.settings.marker_scale,
                lifetime_s=max(1.0, 3.0 * self.settings.control_period_s),
                gripper_range=self._gripper_range))
        if episode.goal_handle is not None:
            try:
                episode.goal_handle.publish_feedback(
                    ExecuteInstruction.Feedback(step=msg.step, last_action=msg))
            except Exception as exc:  # noqa: BLE001 - a goal the server already dropped
                self.get_logger().debug(f"feedback not sent: {exc}")
        if msg.terminate:
            self._finish(episode, "terminated", terminated=True)
        elif episode.max_steps and episode.steps >= episode.max_steps:
            self._finish(episode, "max_steps")

    def _action_message(self, output: PolicyOutput, episode: Episode, frame: _Frame,
                        inference_ms: float) -> RT2Action:
        action = output.action
        msg = RT2Action()
        msg.header.stamp = frame.stamp
        msg.header.frame_id = self.settings.command_frame
        msg.instruction = episode.instruction
        tokens = [int(t) for t in output.tokens]
        if all(0 <= t <= 255 for t in tokens):
            msg.tokens = tokens
        elif self._reported.first("tokens:wide"):
            self.get_logger().warning("tokens above 255 do not fit RT2Action.tokens (uint8); "
                                   "see the values field")
        msg.terminate = bool(action.get("terminate", False))
        px, py, pz = (float(action.get(k, 0.0)) for k in _POSITION_DIMS)
        rx, ry, rz = (float(action.get(k, 0.0)) for k in _ROTATION_DIMS)
        msg.delta_position.x, msg.delta_position.y, msg.delta_position.z = px, py, pz
        msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z = rx, ry, rz
        msg.gripper = float(action.get("gripper", 0.0))
        msg.plan = output.plan
        msg.inference_ms = float(inference_ms)
        msg.embodiment = self._embodiment_name
        msg.dim_names = [str(name) for name in action]
        msg.values = [float(value) for value in action.values()]
        msg.backend = self.policy.name
        return msg

    def _backend_failed(self, episode: Episode, message: str, details: str = "") -> None:
        self._report_backend_error(message, details)
        self._finish(episode, f"backend_error: {shorten(message)}")

    def _report_backend_error(self, message: str, details: str = "") -> None:
        with self._lock:
            self._stats.backend_errors += 1
            self._note_error(f"backend error: {message}")
        if self._reported.first("backend:" + message[:200]):
            self.get_logger().error(
                f"backend error, no action published (the safety node stops the arm): "
                f"{shorten(message, 500)}" + (f"\n{details}" if details else ""))

    def _note_error(self, message: str) -> None:
        # Caller holds self._lock.
        self._stats.last_error = shorten(message)
        self._stats.last_error_time = time.monotonic()

    # ---------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            s = self._stats
            episode = self._episode
            frame = self._frame
            rate = self._rate.rate(now)
            mean_ms, max_ms = self._inference_ms.summary(now)
            values = [
                ("backend", self.policy.name),
                ("model", self.settings.policy.model),
                ("embodiment", self._embodiment_name),
                ("control_rate_hz", f"{self.settings.control_rate_hz:g}"),
                ("rate_achieved_hz", f"{rate:.2f}"),
                ("inference_ms.last", f"{s.last_inference_ms:.2f}"),
                ("inference_ms.mean", f"{mean_ms:.2f}"),
                ("inference_ms.max", f"{max_ms:.2f}"),
                ("episode.instruction", "" if episode is None else episode.instruction),
                ("episode.source", "" if episode is None else episode.source),
                ("episode.steps", "0" if episode is None else str(episode.steps)),
                ("episode.active", str(episode is not None and not episode.done.is_set()).lower()),
                ("episode.last_result", s.last_result),
                ("episodes", str(s.episodes)),
                ("actions", str(s.actions)),
                ("frames.received", str(s.frames_received)),
                ("frames.used", str(s.frames_used)),
                ("frames.dropped", str(s.frames_skipped)),
                ("frames.rejected", str(s.frames_rejected)),
                ("frames.too_old", str(s.frames_too_old)),
                ("image.age_s", "none" if frame is None else f"{self._frame_age(frame, now):.3f}"),
                *_median_p99("image.latency_ms", self._image_latency_ms),
                *_median_p99("node_overhead_ms", self._overhead_ms),
                ("image.last_problem", s.last_image_problem),
                ("instructions.rejected", str(s.instructions_rejected)),
                ("backend_errors", str(s.backend_errors)),
                ("last_error", s.last_error),
                ("waiting", s.waiting),
            ]
            active = episode is not None and not episode.done.is_set()
            if now - s.last_error_time <= _ERROR_HOLD_S:
                level, message = 2, s.last_error
            elif active and s.waiting and s.waiting != "waiting for the next camera image":
                level, message = 1, s.waiting
            elif self._reported.active() and s.last_image_problem:
                level, message = 1, s.last_image_problem
            elif active:
                level, message = 0, f"running at {rate:.1f} Hz"
            else:
                level, message = 0, "idle: waiting for an instruction"
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"rt2_ros: {self.get_name()}", level, message, values))


class RateWindow:
    """Mean and max of values added in the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._items: list[tuple[float, float]] = []

    def add(self, value: float, now: float | None = None) -> None:
        """Record ``value`` at ``now`` (monotonic; default: the current time)."""
        now = time.monotonic() if now is None else now
        self._items.append((now, value))
        self._trim(now)

    def summary(self, now: float) -> tuple[float, float]:
        """``(mean, max)`` of the window (zeros when empty)."""
        self._trim(now)
        if not self._items:
            return 0.0, 0.0
        values = [v for _, v in self._items]
        return sum(values) / len(values), max(values)

    def _trim(self, now: float) -> None:
        cut = 0
        while cut < len(self._items) and now - self._items[cut][0] > self.window_s:
            cut += 1
        if cut:
            del self._items[:cut]


def _median_p99(key: str, samples: deque[float]) -> list[tuple[str, str]]:
    """``key.median`` and ``key.p99`` of ``samples`` for diagnostics (nothing when empty)."""
    if not samples:
        return []
    values = np.fromiter(samples, dtype=float)
    return [(f"{key}.median", f"{np.median(values):.3f}"),
            (f"{key}.p99", f"{np.percentile(values, 99):.3f}")]


def _goal_problem(goal: Any) -> str:
    """Why a goal cannot run ("" if it can)."""
    try:
        check_instruction(goal.instruction)
    except Rt2RosError as exc:
        return str(exc)
    timeout = float(goal.timeout_s)
    if not math.isfinite(timeout) or timeout < 0:
        return f"timeout_s: expected a finite number >= 0 (0 = no limit), got {timeout!r}"
    return ""


def _optional_cv_bridge() -> Any:
    """A CvBridge where the ROS install has one (PyPI's cv-bridge is a broken ROS 1 port)."""
    try:
        from cv_bridge import CvBridge
    except Exception:  # noqa: BLE001 - absent or broken: the numpy path covers ENCODINGS
        return None
    try:
        return CvBridge()
    except Exception:  # noqa: BLE001
        return None


def main(args: Sequence[str] | None = None) -> int:
    """Run policy_node (``python -m rt2_ros.nodes.policy_node --ros-args ...``)."""
    return run_node("policy_node", PolicyNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    sys.exit(main())
