"""The demo's observer: a node that watches the closed loop and drives one goal (used by ``rt2-ros demo``).

It subscribes to what the sim node and the stack publish (camera, camera
model, end-effector pose, finger joints, ``sim/task``, ``rt2/action``, the
safety node's twists and gripper commands, ``/diagnostics``), keeps what
:mod:`rt2_ros.demo.records` needs, hands every camera frame (with the state
to draw on it) to a callback, and sends one ``rt2/execute`` goal.

It spins its own context on a background thread, so the caller's thread
stays free to supervise the processes; :meth:`close` stops it in the order
that never aborts the process (context shutdown, join, executor shutdown).
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.action import ActionClient
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, String

from rt2_ros.action import ExecuteInstruction
from rt2_ros.demo.records import (ActionRecord, CameraModel, EpisodeRecord, FrameRecord,
                                  TwistRecord)
from rt2_ros.msg import RT2Action
from rt2_ros.nodes import stack
from rt2_ros.nodes.image_conversion import ImageConversionError, image_to_rgb
from rt2_ros.nodes.instruct_client import STATUS_NAMES
from rt2_ros.nodes.qos import ACTION_QOS, COMMAND_QOS, IMAGE_QOS
from rt2_ros.nodes.sim_node import (CAMERA_INFO_TOPIC, CAMERA_POSE_TOPIC, EE_POSE_TOPIC,
                                    JOINT_STATES_TOPIC, STATE_QOS, TASK_QOS, TASK_TOPIC)
from rt2_ros.sim.scene import FINGER_MAX_OPENING

__all__ = ["DemoObserver"]


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class DemoObserver:
    """Records one demo episode from the outside (see the module docstring).

    ``on_frame`` gets each camera frame while recording (on an executor
    thread: keep it short); ``domain_id``: default ``ROS_DOMAIN_ID``.
    """

    def __init__(self, on_frame: Callable[[FrameRecord], None] | None = None,
                 domain_id: int | None = None) -> None:
        self._on_frame = on_frame
        self._lock = threading.Lock()
        self.record = EpisodeRecord()
        self._recording = False
        self._task: dict[str, Any] | None = None
        self._task_recv = 0.0
        self._intrinsics: tuple[float, float, float, float] | None = None
        self._camera_pose: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self._ee: tuple[float, float, float] | None = None
        self._closedness: float | None = None
        self._gripper_command: float | None = None
        self._last_action: ActionRecord | None = None
        self.frames_seen = 0
        self.twists_seen = 0
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(f"rt2_demo_observer_{os.getpid()}", context=self._context)
        n = self.node
        n.create_subscription(Image, stack.CAMERA_TOPIC, self._on_image, IMAGE_QOS)
        n.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, IMAGE_QOS)
        n.create_subscription(PoseStamped, CAMERA_POSE_TOPIC, self._on_camera_pose, TASK_QOS)
        n.create_subscription(PoseStamped, EE_POSE_TOPIC, self._on_ee_pose, STATE_QOS)
        n.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joints, STATE_QOS)
        n.create_subscription(String, TASK_TOPIC, self._on_task, TASK_QOS)
        n.create_subscription(RT2Action, stack.ACTION_TOPIC, self._on_action, ACTION_QOS)
        n.create_subscription(TwistStamped, stack.TWIST_TOPIC, self._on_twist, COMMAND_QOS)
        n.create_subscription(Float64, stack.GRIPPER_TOPIC, self._on_gripper, COMMAND_QOS)
        n.create_subscription(DiagnosticArray, stack.DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        # Two threads for the topics, so a burst of camera frames does not delay the
        # receipt times the latency figures come from.
        self._executor = MultiThreadedExecutor(num_threads=2, context=self._context)
        self._executor.add_node(n)
        # The goal client on its own node and single-threaded executor: the goal request is
        # sent from that thread (start_goal), so its response cannot be handled before
        # rclpy has registered the request (on Jazzy a response handled in that window is
        # dropped as unexpected).
        self._goal_node = Node(f"rt2_demo_goal_{os.getpid()}", context=self._context)
        self._client = ActionClient(self._goal_node, ExecuteInstruction, stack.EXECUTE_ACTION)
        self._goal_executor = SingleThreadedExecutor(context=self._context)
        self._goal_executor.add_node(self._goal_node)
        self._threads = [threading.Thread(target=self._spin, args=(executor,), name=name, daemon=True)
                         for executor, name in ((self._executor, "demo-observer"),
                                                (self._goal_executor, "demo-goal"))]
        for thread in self._threads:
            thread.start()
        self._goal_handle: Any = None

    def _spin(self, executor: Any) -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        except Exception:  # noqa: BLE001 - rclpy can raise RCLError while the context shuts down
            if self._context.ok():
                raise

    # ------------------------------------------------------------ callbacks

    def _on_image(self, msg: Image) -> None:
        recv = time.time()
        try:
            rgb = np.array(image_to_rgb(msg), dtype=np.uint8, copy=True)
        except ImageConversionError:
            return
        with self._lock:
            self.frames_seen += 1
            if not self._recording or self._on_frame is None:
                return
            self.record.frames += 1
            camera = None
            if self._intrinsics is not None and self._camera_pose is not None:
                camera = CameraModel(*self._intrinsics, *self._camera_pose)  # type: ignore[arg-type]
            frame = FrameRecord(recv=recv, stamp=_seconds(msg.header.stamp), image=rgb,
                                action=self._last_action, ee_position=self._ee,
                                gripper_closedness=self._closedness,
                                gripper_command=self._gripper_command, camera=camera,
                                success=bool(self._task and self._task.get("success")))
        self._on_frame(frame)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        k = msg.k
        with self._lock:
            self._intrinsics = (float(k[0]), float(k[4]), float(k[2]), float(k[5]))

    def _on_camera_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        with self._lock:
            self._camera_pose = ((p.x, p.y, p.z), (q.w, q.x, q.y, q.z))

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self._lock:
            self._ee = (p.x, p.y, p.z)

    def _on_joints(self, msg: JointState) -> None:
        if len(msg.position) >= 2:
            closedness = 1.0 - (msg.position[0] + msg.position[1]) / (2 * FINGER_MAX_OPENING)
            with self._lock:
                self._closedness = min(1.0, max(0.0, float(closedness)))

    def _on_task(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
        except ValueError:
            return
        with self._lock:
            self._task, self._task_recv = status, time.time()

    def _on_action(self, msg: RT2Action) -> None:
        record = ActionRecord(
            recv=time.time(), stamp=_seconds(msg.header.stamp), step=int(msg.step),
            tokens=tuple(int(t) for t in msg.tokens), terminate=bool(msg.terminate),
            delta_position=(msg.delta_position.x, msg.delta_position.y, msg.delta_position.z),
            delta_rotation=(msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z),
            gripper=float(msg.gripper), inference_ms=float(msg.inference_ms))
        with self._lock:
            if self._recording and msg.instruction == self.record.instruction:
                self.record.actions.append(record)
                self._last_action = record

    def _on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        record = TwistRecord(time.time(), (t.linear.x, t.linear.y, t.linear.z),
                             (t.angular.x, t.angular.y, t.angular.z))
        with self._lock:
            self.twists_seen += 1
            if self._recording:
                self.record.twists.append(record)

    def _on_gripper(self, msg: Float64) -> None:
        with self._lock:
            self._gripper_command = float(msg.data)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for status in msg.status:
                self.record.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    # ------------------------------------------------------------ queries

    def task(self) -> tuple[dict[str, Any] | None, float]:
        """The newest ``sim/task`` status and when it arrived (wall seconds)."""
        with self._lock:
            return self._task, self._task_recv

    def ee_position(self) -> tuple[float, float, float] | None:
        """The newest end-effector position (base frame, m)."""
        with self._lock:
            return self._ee

    def diagnostics(self, suffix: str) -> dict[str, str]:
        """The newest diagnostics values of the status whose name ends with ``suffix``."""
        with self._lock:
            return next((dict(v) for k, v in self.record.diagnostics.items() if k.endswith(suffix)), {})

    def wait_for_server(self, timeout_s: float) -> bool:
        """True once the ``rt2/execute`` action server is discovered."""
        return self._client.wait_for_server(timeout_sec=timeout_s)

    # ------------------------------------------------------------ the goal

    def start_goal(self, instruction: str, max_steps: int, timeout_s: float) -> Any:
        """Start recording and send the goal; returns the future of the goal handle."""
        with self._lock:
            self.record.instruction = instruction
            self.record.task = dict(self._task or {})
            self.record.goal_sent = time.time()
            self._recording = True
        goal = ExecuteInstruction.Goal(instruction=instruction, max_steps=int(max_steps),
                                       timeout_s=float(timeout_s))
        handle = Future()

        def send() -> None:
            sent = self._client.send_goal_async(goal)
            sent.add_done_callback(lambda done: handle.set_result(done.result()))

        self._goal_executor.create_task(send)
        return handle

    def result_future(self, goal_future: Any) -> Any:
        """The result future of an accepted goal (None if it was rejected)."""
        handle = goal_future.result()
        if handle is None or not handle.accepted:
            return None
        self._goal_handle = handle
        return handle.get_result_async()

    def finish(self, result_future: Any | None) -> None:
        """Store the goal's result (if it came) and stop recording actions and twists."""
        with self._lock:
            self.record.goal_done = time.time()
            if result_future is not None and result_future.done():
                response = result_future.result()
                result = response.result
                self.record.result = {"terminated": bool(result.terminated), "steps": int(result.steps),
                                      "reason": result.reason,
                                      "status": STATUS_NAMES.get(response.status, str(response.status))}

    def stop_recording(self, final_status: dict[str, Any] | None) -> None:
        """Stop handing frames on; keep ``final_status`` as the episode's verdict."""
        with self._lock:
            self._recording = False
            if final_status is not None:
                self.record.final_status = dict(final_status)

    def cancel(self, timeout_s: float = 3.0) -> None:
        """Cancel the running goal (if any) and wait up to ``timeout_s`` for the answer."""
        if self._goal_handle is None:
            return
        future = self._goal_handle.cancel_goal_async()
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        """Stop spinning and release the node and the context."""
        rclpy.try_shutdown(context=self._context)
        for thread in self._threads:
            thread.join(timeout=10.0)
        self._executor.shutdown()
        self._goal_executor.shutdown()
        self._client.destroy()
        self._goal_node.destroy_node()
        self.node.destroy_node()
