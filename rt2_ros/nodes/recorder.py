"""``rt2-ros record``: record robot episodes into rosbag2 MCAP, one bag per episode.

Subscribes (raw: the serialized bytes go to the bag untouched, so the bag
holds exactly what was on the wire) to the camera, the instruction,
``/rt2/action``, the twist and gripper commands and an end-effector pose
topic, and writes them with :class:`rt2_ros.training.episodes` 's format.

Episodes:

* a message on the instruction topic starts a new episode (closing the open
  one with outcome ``unknown``); the instruction topic is transient local, so
  an instruction published before the recorder started starts one at once;
* ``~/end_episode`` (std_srvs/SetBool) closes the open episode with
  ``success = data``::

      ros2 service call /rt2_recorder/end_episode std_srvs/srv/SetBool "{data: true}"

* ``max_episode_s`` > 0 closes an episode that long (outcome ``unknown``);
  ``end_on_terminate`` closes it on an action with the terminate flag
  (outcome ``unknown``, for unattended policy rollouts);
* shutting down closes the open episode (outcome ``unknown``).

Messages arriving while no episode is open are counted and dropped.
Parameters: :data:`RECORDER_PARAMETERS` (``out_dir``, the six ``*_topic``
names, ``image_transport``, ``gripper_message``, ``embodiment`` and
``control_rate_hz`` for the metadata, ``max_episode_s``, ``end_on_terminate``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from rt2_ros.errors import ConfigError

from rt2_ros.nodes.parameters import GRIPPER_MESSAGES, IMAGE_TRANSPORTS, ParamSpec, declare_node_parameters
from rt2_ros.training import mcap_io
from rt2_ros.training.episodes import EpisodeInfo, EpisodeTopics

__all__ = ["RecorderNode", "RECORDER_PARAMETERS", "main"]

_TOPICS = EpisodeTopics()
#: The recorder's ROS parameters (declared with descriptions and ranges, like the stack's nodes).
RECORDER_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("out_dir", "episodes", "directory the episode bags are written into", "node"),
    ParamSpec("camera_topic", _TOPICS.camera, "camera images (sensor_msgs/Image, or CompressedImage "
                                              "with image_transport compressed)", "node"),
    ParamSpec("image_transport", "raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage",
              "node", choices=IMAGE_TRANSPORTS),
    ParamSpec("instruction_topic", _TOPICS.instruction, "instructions (std_msgs/String); each starts an "
                                                        "episode", "node"),
    ParamSpec("action_topic", _TOPICS.action, "policy actions (rt2_ros/RT2Action)", "node"),
    ParamSpec("twist_topic", _TOPICS.twist, "arm commands (geometry_msgs/TwistStamped)", "node"),
    ParamSpec("gripper_topic", _TOPICS.gripper, "gripper commands", "node"),
    ParamSpec("gripper_message", "float64", "gripper command type: float64 or float64_multi_array", "node",
              choices=tuple(g for g in GRIPPER_MESSAGES if g != "none")),
    ParamSpec("ee_pose_topic", _TOPICS.ee_pose, "end-effector pose (geometry_msgs/PoseStamped)", "node"),
    ParamSpec("embodiment", "rt2_arm", "embodiment name written into each episode's metadata", "node"),
    ParamSpec("control_rate_hz", 5.0, "policy steps per second, written into each episode's metadata",
              "node", low=0.0, high=1000.0, low_inclusive=False),
    ParamSpec("max_episode_s", 0.0, "close an episode after this many seconds (0 = never)", "node", low=0.0),
    ParamSpec("end_on_terminate", False, "close the episode when an action has the terminate flag", "node"),
)


def _with_defaults(specs: tuple[ParamSpec, ...], overrides: dict[str, Any]) -> tuple[ParamSpec, ...]:
    """``specs`` with the defaults replaced by ``overrides`` (what ``rt2-ros record`` passes)."""
    known = {spec.name for spec in specs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"rt2_recorder: unknown parameter {unknown[0]!r} (expected one of "
                          f"{', '.join(sorted(known))})")
    return tuple(replace(spec, default=spec.validate(overrides[spec.name])) if spec.name in overrides else spec
                 for spec in specs)


class _OpenEpisode:
    def __init__(self, path: Path, topics: dict[str, tuple[str, Any]], instruction: str):
        self.writer = mcap_io.BagWriter(path)
        for topic, (msgtype, offered) in topics.items():
            self.writer.add_topic(topic, msgtype, offered)
        self.instruction = instruction
        self.started = time.monotonic()
        self.actions = 0


class RecorderNode(Node):
    """The episode recorder (see the module doc)."""

    def __init__(self, *, context: Any = None, **overrides: Any):
        super().__init__("rt2_recorder", context=context)
        values = declare_node_parameters(self, _with_defaults(RECORDER_PARAMETERS, overrides))
        self.out_dir = Path(values["out_dir"]).expanduser()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.embodiment = values["embodiment"]
        self.control_rate_hz = values["control_rate_hz"]
        self.max_episode_s = values["max_episode_s"]
        self.end_on_terminate = values["end_on_terminate"]
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        # Best effort matches best-effort and reliable publishers alike (cameras often use sensor QoS).
        any_publisher = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                   reliability=ReliabilityPolicy.BEST_EFFORT)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Float64, Float64MultiArray, String

        from rt2_ros.msg import RT2Action

        camera_type = (CompressedImage, mcap_io.COMPRESSED_IMAGE) if values["image_transport"] == "compressed" \
            else (Image, mcap_io.IMAGE)
        gripper_type = (Float64MultiArray, mcap_io.FLOAT64_ARRAY) \
            if values["gripper_message"] == "float64_multi_array" else (Float64, mcap_io.FLOAT64)
        self._instruction_topic = values["instruction_topic"]
        self._action_topic = values["action_topic"]
        self._action_class = RT2Action
        self._string_class = String
        plan = [  # (topic, ROS class, bag type, subscription QoS, QoS offered in the bag)
            (values["camera_topic"], *camera_type, any_publisher, mcap_io.qos(best_effort=True, depth=1)),
            (self._instruction_topic, String, mcap_io.STRING, latched, mcap_io.qos(transient_local=True, depth=1)),
            (self._action_topic, RT2Action, mcap_io.RT2_ACTION, reliable, mcap_io.qos()),
            (values["twist_topic"], TwistStamped, mcap_io.TWIST_STAMPED, reliable, mcap_io.qos()),
            (values["gripper_topic"], *gripper_type, reliable, mcap_io.qos()),
            (values["ee_pose_topic"], PoseStamped, mcap_io.POSE_STAMPED, any_publisher, mcap_io.qos()),
        ]
        self._bag_topics = {topic: (bag_type, offered) for topic, _, bag_type, _, offered in plan}
        self._recorder_subscriptions = [
            self.create_subscription(cls, topic, lambda data, t=topic: self._on_message(t, data), qos, raw=True)
            for topic, cls, _, qos, _ in plan]
        from std_srvs.srv import SetBool

        self._end_service = self.create_service(SetBool, "~/end_episode", self._on_end_episode)
        self._duration_timer = self.create_timer(0.5, self._check_duration) if self.max_episode_s > 0 else None
        self.episode: _OpenEpisode | None = None
        self.finished: list[Path] = []
        self.dropped = 0
        self._counter = 0
        self.get_logger().info(f"recording episodes into {self.out_dir} (start: a message on "
                               f"{self._instruction_topic}; end: ~/end_episode)")

    # ------------------------------------------------------------------ episodes

    def _start(self, instruction: str) -> None:
        self._counter += 1
        name = time.strftime("episode_%Y%m%d_%H%M%S") + f"_{self._counter:03d}"
        path = self.out_dir / name
        while path.exists():
            self._counter += 1
            path = self.out_dir / (time.strftime("episode_%Y%m%d_%H%M%S") + f"_{self._counter:03d}")
        self.episode = _OpenEpisode(path, self._bag_topics, instruction)
        self.get_logger().info(f"episode started: {path.name}: {instruction!r}")

    def close_episode(self, success: bool | None) -> Path | None:
        """Close the open episode with ``success`` (None = unknown); return its bag directory."""
        episode, self.episode = self.episode, None
        if episode is None:
            return None
        info = EpisodeInfo(instruction=episode.instruction, success=success, embodiment=self.embodiment,
                           control_rate_hz=self.control_rate_hz, source="ros-record", steps=episode.actions)
        episode.writer.custom_data.update(info.to_custom_data())
        path = episode.writer.close()
        self.finished.append(path)
        outcome = {True: "success", False: "failure", None: "unknown"}[success]
        self.get_logger().info(f"episode saved: {path} ({episode.writer.message_count} messages, "
                               f"{episode.actions} actions, outcome {outcome})")
        return path

    # ------------------------------------------------------------------ callbacks

    def _on_message(self, topic: str, data: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        if topic == self._instruction_topic:
            text = deserialize_message(data, self._string_class).data
            self.close_episode(None)
            self._start(text)
        if self.episode is None:
            self.dropped += 1
            return
        self.episode.writer.write_raw(topic, now, data)
        if topic == self._action_topic:
            self.episode.actions += 1
            if self.end_on_terminate and deserialize_message(data, self._action_class).terminate:
                self.close_episode(None)

    def _on_end_episode(self, request: Any, response: Any) -> Any:
        path = self.close_episode(bool(request.data))
        response.success = path is not None
        response.message = str(path) if path is not None else "no episode is open"
        return response

    def _check_duration(self) -> None:
        if self.episode is not None and time.monotonic() - self.episode.started > self.max_episode_s:
            self.get_logger().warning(f"episode longer than max_episode_s={self.max_episode_s}: closing it")
            self.close_episode(None)

    def destroy_node(self) -> None:
        """Close the open episode (outcome unknown), then destroy the node."""
        self.close_episode(None)
        super().destroy_node()


def main(argv: Sequence[str] | None = None, **overrides: Any) -> int:
    """Run the recorder until interrupted (``ros2 run``-style; ``overrides`` set parameter defaults)."""
    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    node = RecorderNode(**overrides)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
