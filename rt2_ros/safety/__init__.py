"""Pure safety rules between the policy and the arm (no rclpy).

- :class:`SafetyConfig` — validated limits and timing (the safety_node's parameters);
- :func:`twist_from_action`, :func:`limit_command` — one step's deltas to a clamped
  twist, with a report of every change;
- :class:`SafetyGovernor` — enable flag, watchdog, terminate and episodes; its
  ``tick(now)`` gives the command to publish, the diagnostics status and new events.
"""
from rt2_ros.safety.config import SafetyConfig
from rt2_ros.safety.governor import (DISPOSITIONS, STOP_KINDS, ActionResult, SafetyEvent,
                                     SafetyGovernor, SafetyLevel, SafetyOutput, SafetyState,
                                     SafetyStatus)
from rt2_ros.safety.safety_filter import (CLAMP_KINDS, ClampEvent, RejectedActionError,
                                          TwistCommand, limit_command, twist_from_action)

__all__ = [
    "CLAMP_KINDS", "DISPOSITIONS", "STOP_KINDS",
    "ActionResult", "ClampEvent", "RejectedActionError", "SafetyConfig", "SafetyEvent",
    "SafetyGovernor", "SafetyLevel", "SafetyOutput", "SafetyState", "SafetyStatus",
    "TwistCommand", "limit_command", "twist_from_action",
]
