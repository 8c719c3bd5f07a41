"""safety_node: RT2Action -> clamped TwistStamped + gripper command, with enable switch and watchdog.

Topics (relative names; DESIGN section 3):

- in ``rt2/action`` (rt2_ros/RT2Action) and ``rt2/instruction`` (std_msgs/String,
  reliable + transient local: each instruction starts a safety episode);
- out ``servo_node/delta_twist_cmds`` (geometry_msgs/TwistStamped, MoveIt
  Servo's input; ``frame_id`` = ``command_frame``, stamp = now) and
  ``gripper/command`` (std_msgs/Float64, or Float64MultiArray), published at
  ``publish_rate_hz`` whatever arrives, and at once when an action, an
  instruction or an enable request changes the command;
- service ``rt2/safety/enable`` (std_srvs/SetBool); ``/diagnostics``.

Every rule lives in :class:`rt2_ros.safety.SafetyGovernor`; this node only
moves messages.  The governor is not thread-safe, so the node runs on a
single-threaded executor and only its callbacks touch it.  Each governor
event is logged once, at its level.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import SetBool

from rt2_ros.msg import RT2Action
from rt2_ros.nodes import stack
from rt2_ros.nodes.diagnostics import diagnostic_array, shorten
from rt2_ros.nodes.parameters import (SAFETY_NODE_PARAMETERS, declare_node_parameters,
                                      refuse_parameter_changes, safety_node_settings)
from rt2_ros.nodes.qos import ACTION_QOS, COMMAND_QOS, INSTRUCTION_QOS
from rt2_ros.nodes.runtime import run_node
from rt2_ros.safety import SafetyGovernor, SafetyLevel, SafetyOutput

__all__ = ["SafetyNode", "main"]

# Latency samples (image stamp -> command published) kept for diagnostics.
_LATENCY_SAMPLES = 1000


class SafetyNode(Node):
    """Moves messages between the topics and the pure :class:`SafetyGovernor`."""

    def __init__(self, *, node_name: str = "safety_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = declare_node_parameters(self, SAFETY_NODE_PARAMETERS)
        self.settings = safety_node_settings(values, self.get_name())
        overrides = getattr(self, "_parameter_overrides", {})
        unknown = sorted(n for n in overrides if not self.has_parameter(n))
        if unknown:
            self.get_logger().warning(f"parameters given but not used by {self.get_name()} "
                                   f"(typos?): {', '.join(unknown)}")
        refuse_parameter_changes(self)
        cfg = self.settings.safety
        self.governor = SafetyGovernor(cfg, time.monotonic())
        self._status = None
        self._published = 0
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._pending_stamp: Any = None
        self._closing = False
        self._twist_pub = self.create_publisher(TwistStamped, stack.TWIST_TOPIC, COMMAND_QOS)
        gripper_type = {"float64": Float64, "float64_multi_array": Float64MultiArray}.get(
            self.settings.gripper_message)
        self._gripper_pub = (None if gripper_type is None else
                             self.create_publisher(gripper_type, stack.GRIPPER_TOPIC, COMMAND_QOS))
        self._diag_pub = self.create_publisher(DiagnosticArray, stack.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(RT2Action, stack.ACTION_TOPIC, self._on_action, ACTION_QOS)
        self.create_subscription(String, stack.INSTRUCTION_TOPIC, self._on_instruction,
                                 INSTRUCTION_QOS)
        self.create_service(SetBool, stack.ENABLE_SERVICE, self._on_enable)
        self.create_timer(1.0 / cfg.publish_rate_hz, self._publish)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)
        self._publish()
        self.get_logger().info(
            f"ready: {'enabled' if cfg.start_enabled else 'disabled (call '}"
            f"{'' if cfg.start_enabled else self.resolve_service_name(stack.ENABLE_SERVICE) + ')'}"
            f", {cfg.publish_rate_hz:g} Hz to {self.resolve_topic_name(stack.TWIST_TOPIC)}, "
            f"watchdog {cfg.action_timeout_s:g} s")

    # -------------------------------------------------------------- inputs

    def _on_action(self, msg: RT2Action) -> None:
        result = self.governor.on_action_message(msg, time.monotonic())
        if result.disposition in ("applied", "terminate", "rejected"):
            self._pending_stamp = msg.header.stamp
            self._publish()

    def _on_instruction(self, msg: String) -> None:
        self.governor.start_episode(msg.data, time.monotonic())
        self._publish()

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        message = self.governor.set_enabled(request.data, time.monotonic())
        self.get_logger().info(f"{self.resolve_service_name(stack.ENABLE_SERVICE)}: {message}")
        response.success = True
        response.message = message
        self._publish()
        return response

    # ------------------------------------------------------------- output

    def _publish(self) -> None:
        output = self.governor.tick(time.monotonic())
        self._send(output)
        if self._pending_stamp is not None:
            stamp = self._pending_stamp
            self._pending_stamp = None
            if stamp.sec or stamp.nanosec:
                latency = self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000
                                                                + stamp.nanosec)
                self._latencies.append(latency * 1e-6)
        self._status = output.status
        log = self.get_logger()
        for event in output.events:
            text = shorten(event.message, 500)
            if event.level is SafetyLevel.ERROR:
                log.error(text)
            elif event.level is SafetyLevel.WARN:
                log.warning(text)
            else:
                log.info(text)

    def _send(self, output: SafetyOutput) -> None:
        if self._closing:
            return
        command = output.command
        twist = TwistStamped()
        twist.header.stamp = self.get_clock().now().to_msg()
        twist.header.frame_id = self.settings.safety.command_frame
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (
            float(v) for v in command.linear)
        twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z = (
            float(v) for v in command.angular)
        self._twist_pub.publish(twist)
        self._published += 1
        if command.gripper is not None and self._gripper_pub is not None:
            if self.settings.gripper_message == "float64":
                self._gripper_pub.publish(Float64(data=float(command.gripper)))
            else:
                self._gripper_pub.publish(Float64MultiArray(data=[float(command.gripper)]))

    def _publish_diagnostics(self) -> None:
        status = self._status
        if status is None:
            return
        values = list(status.as_key_values())
        values.append(("commands_published", str(self._published)))
        if self._latencies:
            samples = np.fromiter(self._latencies, dtype=float)
            values += [("latency_ms.image_to_command.median", f"{np.median(samples):.3f}"),
                       ("latency_ms.image_to_command.p99", f"{np.percentile(samples, 99):.3f}"),
                       ("latency_ms.samples", str(samples.size))]
        message = status.reason or status.state.value
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"rt2_ros: {self.get_name()}", int(status.level),
            f"{status.state.value}: {message}" if status.reason else message, values))

    # ----------------------------------------------------------- life cycle

    def before_shutdown(self) -> None:
        """Command one last zero twist (the gripper keeps its last command)."""
        self._closing = True
        twist = TwistStamped()
        twist.header.stamp = self.get_clock().now().to_msg()
        twist.header.frame_id = self.settings.safety.command_frame
        try:
            self._twist_pub.publish(twist)
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            self.get_logger().warning(f"final zero twist not sent: {exc}")


def main(args: Sequence[str] | None = None) -> int:
    """Run safety_node (``python -m rt2_ros.nodes.safety_node --ros-args ...``)."""
    return run_node("safety_node", SafetyNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    sys.exit(main())
