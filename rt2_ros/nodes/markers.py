"""RViz markers for one policy step: the step's position delta, the gripper, the instruction and plan.

All markers sit at the origin of the command frame (the policy does not
know where the tool is): an arrow from the origin along the position delta
(scaled by ``marker_scale`` so a 1 cm step is visible), a sphere whose
colour shows the gripper command (green open .. red closed) and two text
labels above it.  Each marker lives a few control periods, so RViz clears
them when the policy stops.
"""
from __future__ import annotations

from typing import Any

from rt2_ros.nodes.diagnostics import shorten

__all__ = ["action_markers", "MARKER_NAMESPACE"]

MARKER_NAMESPACE = "rt2"
ARROW_ID, GRIPPER_ID, INSTRUCTION_ID, PLAN_ID = range(4)
TEXT_HEIGHT = 0.04


def _gripper_colour(gripper: float, low: float, high: float) -> tuple[float, float, float]:
    closed = 0.0 if high <= low else min(1.0, max(0.0, (gripper - low) / (high - low)))
    return closed, 1.0 - closed, 0.0


def action_markers(action: Any, *, frame_id: str, stamp: Any, scale: float, lifetime_s: float,
                   gripper_range: tuple[float, float] = (0.0, 1.0)) -> Any:
    """A ``visualization_msgs/MarkerArray`` for one ``rt2_ros/RT2Action``."""
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    lifetime_sec = int(lifetime_s)
    lifetime_nanosec = int((lifetime_s - lifetime_sec) * 1e9)

    def marker(marker_id: int, kind: int) -> Any:
        m = Marker()
        m.header.frame_id = frame_id
        m.header.stamp = stamp
        m.ns = MARKER_NAMESPACE
        m.id = marker_id
        m.type = kind
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.lifetime.sec = lifetime_sec
        m.lifetime.nanosec = lifetime_nanosec
        m.color.a = 1.0
        return m

    arrow = marker(ARROW_ID, Marker.ARROW)
    delta = action.delta_position
    arrow.points = [Point(), Point(x=delta.x * scale, y=delta.y * scale, z=delta.z * scale)]
    arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.01, 0.02, 0.02  # shaft, head diameter, head length
    arrow.color.r, arrow.color.g, arrow.color.b = (0.6, 0.6, 0.6) if action.terminate else (0.1, 0.5, 1.0)

    gripper = marker(GRIPPER_ID, Marker.SPHERE)
    gripper.scale.x = gripper.scale.y = gripper.scale.z = 0.03
    gripper.color.r, gripper.color.g, gripper.color.b = _gripper_colour(float(action.gripper),
                                                                        *gripper_range)

    status = "TERMINATE" if action.terminate else f"step {action.step}"
    instruction = marker(INSTRUCTION_ID, Marker.TEXT_VIEW_FACING)
    instruction.pose.position.z = 0.15
    instruction.scale.z = TEXT_HEIGHT
    instruction.color.r = instruction.color.g = instruction.color.b = 1.0
    instruction.text = f"{shorten(action.instruction, 80)} [{status}, gripper {action.gripper:.2f}]"

    plan = marker(PLAN_ID, Marker.TEXT_VIEW_FACING)
    plan.pose.position.z = 0.10
    plan.scale.z = TEXT_HEIGHT
    plan.color.r, plan.color.g, plan.color.b = 1.0, 0.9, 0.3
    plan.text = f"plan: {shorten(action.plan, 120)}" if action.plan else " "

    array = MarkerArray()
    array.markers = [arrow, gripper, instruction, plan]
    return array
