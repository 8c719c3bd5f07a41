"""Publisher / subscriber processes for the RT2Action DDS round-trip test.

    python test/rt2action_peer.py publish       # publishes the reference message until killed
    python test/rt2action_peer.py receive OUT   # writes the first message received as JSON to OUT
"""
from __future__ import annotations

import json
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from rt2_ros.msg import RT2Action

QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                 durability=QoSDurabilityPolicy.VOLATILE)


def reference_message() -> RT2Action:
    """An RT2Action with every field set to a non-default value."""
    msg = RT2Action()
    msg.header.stamp.sec = 1_700_000_123
    msg.header.stamp.nanosec = 456_789
    msg.header.frame_id = "base_link"
    msg.instruction = "pick up the red cube"
    msg.tokens = [1, 128, 91, 241, 5, 101, 127, 200]
    msg.terminate = True
    msg.delta_position.x, msg.delta_position.y, msg.delta_position.z = 0.01, -0.02, 0.03
    msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z = 0.1, -0.2, 0.25
    msg.gripper = 0.75
    msg.plan = "move to the cube"
    msg.inference_ms = 12.5
    msg.step = 42
    msg.embodiment = "rt2_arm"
    msg.dim_names = ["terminate", "x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    msg.values = [1.0, 0.01, -0.02, 0.03, 0.1, -0.2, 0.25, 0.75]
    msg.backend = "scripted"
    return msg


def message_to_dict(msg: RT2Action) -> dict:
    """Every field of an RT2Action as plain JSON values."""
    return {
        "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
        "frame_id": msg.header.frame_id,
        "instruction": msg.instruction,
        "tokens": list(msg.tokens),
        "terminate": msg.terminate,
        "delta_position": [msg.delta_position.x, msg.delta_position.y, msg.delta_position.z],
        "delta_rotation": [msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z],
        "gripper": msg.gripper,
        "plan": msg.plan,
        "inference_ms": msg.inference_ms,
        "step": msg.step,
        "embodiment": msg.embodiment,
        "dim_names": list(msg.dim_names),
        "values": list(msg.values),
        "backend": msg.backend,
    }


def main() -> None:
    mode = sys.argv[1]
    rclpy.init()
    node = Node(f"rt2action_{mode}")
    if mode == "publish":
        pub = node.create_publisher(RT2Action, "/rt2/action", QOS)
        msg = reference_message()
        node.create_timer(0.05, lambda: pub.publish(msg))
    else:
        out = sys.argv[2]

        def on_action(msg: RT2Action) -> None:
            with open(out, "w") as f:
                json.dump(message_to_dict(msg), f)
            raise SystemExit(0)

        node.create_subscription(RT2Action, "/rt2/action", on_action, QOS)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
