"""QoS profiles of the stack's topics (DESIGN section 3), shared by the nodes and their peers."""
from __future__ import annotations

from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy

__all__ = ["IMAGE_QOS", "INSTRUCTION_QOS", "ACTION_QOS", "COMMAND_QOS"]

#: Camera images: sensor data, only the newest matters (keep last 1).
IMAGE_QOS = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST,
                       reliability=QoSReliabilityPolicy.BEST_EFFORT,
                       durability=QoSDurabilityPolicy.VOLATILE)
#: Instructions: reliable and transient local, so a node started late still gets the current one.
INSTRUCTION_QOS = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST,
                             reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
#: RT2Action and plan text: reliable, a short queue.
ACTION_QOS = QoSProfile(depth=10, history=QoSHistoryPolicy.KEEP_LAST,
                        reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=QoSDurabilityPolicy.VOLATILE)
#: Twist and gripper commands: reliable, and only the newest kept: a controller
#: that fell behind must get the current command, not a backlog of old ones.
COMMAND_QOS = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST,
                         reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.VOLATILE)
