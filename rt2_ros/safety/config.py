"""Validated configuration of the safety rules (the safety_node's parameters).

Units: speeds are per axis in the ``command_frame`` (m/s and rad/s); norm
limits bound the length of the linear and the angular velocity vectors;
``max_step_change`` is unitless (see :class:`SafetyConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from rt2_ros.errors import ConfigError
from rt2_ros.validation import (expect_bool, expect_int, expect_number, expect_str,
                                reject_unknown_keys)


@dataclass(frozen=True)
class SafetyConfig:
    """Limits and timing of the safety governor.  Build with :meth:`from_mapping` to validate.

    - ``start_enabled``: command motion right after start; ``False`` (default)
      publishes zero twists until ``/rt2/safety/enable`` switches it on.
    - ``publish_rate_hz``: how often the node publishes a command (twist and
      gripper), whatever arrives; must be >= ``control_rate_hz`` so every
      action is published at least once.
    - ``control_rate_hz``: the policy's step rate; one step's delta is spread
      over ``1 / control_rate_hz`` seconds (``linear = delta_position * control_rate_hz``).
    - ``action_timeout_s``: watchdog; with no action received for this long the
      twist is zero and the state is ``watchdog``.  Must be >= one control period.
    - ``action_hold_s``: how long one action's twist is commanded after it
      arrives.  ``None`` (default) = one control period, so the arm moves by
      exactly the delta the model asked for; a longer hold (up to
      ``action_timeout_s``) bridges late actions at the price of overshooting.
    - ``max_linear_speed`` / ``max_angular_speed``: per-axis limits (m/s, rad/s).
    - ``max_linear_norm`` / ``max_angular_norm``: limits on the vector length;
      ``None`` (default) = the per-axis limit, so the tool never moves faster
      than ``max_linear_speed`` in any direction (diagonals included).  The
      vector is scaled, its direction kept.
    - ``max_step_change``: the largest change of any twist component between
      two consecutive actions, as a fraction (0 < f <= 2) of that component's
      per-axis limit: linear components may change by ``f * max_linear_speed``,
      angular ones by ``f * max_angular_speed``.  2 disables the limit (a
      clamped component can never change by more than twice its limit).  A
      stop (all-zero twist) is never rate-limited, and the first action after
      any stop (disable, watchdog, terminate, rejected action, new episode)
      ramps up from zero; a gap shorter than ``action_timeout_s`` between two
      actions is not a stop.
    - ``terminate_debounce``: consecutive terminate actions needed to close the
      episode (>= 1).  Every terminate action already commands a zero twist.
    - ``gripper_min`` / ``gripper_max``: gripper command range.
    - ``command_frame``: ``frame_id`` of the published TwistStamped.
    - ``event_quiet_s``: a repeated condition (the same clamp kind, rejected
      or ignored actions) is reported as a new event only after this long
      without it, so logs show each episode of clamping once.
    """

    start_enabled: bool = False
    publish_rate_hz: float = 30.0
    control_rate_hz: float = 3.0
    action_timeout_s: float = 1.0
    action_hold_s: float | None = None
    max_linear_speed: float = 0.1
    max_angular_speed: float = 0.5
    max_linear_norm: float | None = None
    max_angular_norm: float | None = None
    max_step_change: float = 0.5
    terminate_debounce: int = 1
    gripper_min: float = 0.0
    gripper_max: float = 1.0
    command_frame: str = "base_link"
    event_quiet_s: float = 5.0

    def __post_init__(self) -> None:
        def positive(key: str, value: Any, high: float | None = None) -> float:
            return expect_number(key, value, low=0.0, low_inclusive=False, high=high)

        # object.__setattr__ because the dataclass is frozen: store ints given
        # for float fields (YAML "1", ROS integer parameters) as floats.
        def store(key: str, value: Any) -> None:
            object.__setattr__(self, key, value)

        expect_bool("start_enabled", self.start_enabled)
        store("control_rate_hz", positive("control_rate_hz", self.control_rate_hz, 1000.0))
        publish = positive("publish_rate_hz", self.publish_rate_hz, 10000.0)
        if publish < self.control_rate_hz:
            raise ConfigError(f"publish_rate_hz: expected a number >= control_rate_hz "
                              f"({self.control_rate_hz:g}), got {self.publish_rate_hz!r}")
        store("publish_rate_hz", publish)
        period = 1.0 / self.control_rate_hz
        timeout = positive("action_timeout_s", self.action_timeout_s)
        if timeout < period:
            raise ConfigError(f"action_timeout_s: expected a number >= one control period "
                              f"(1/control_rate_hz = {period:.6g} s), got {self.action_timeout_s!r}")
        store("action_timeout_s", timeout)
        if self.action_hold_s is None:
            store("action_hold_s", period)
        else:
            hold = positive("action_hold_s", self.action_hold_s)
            if hold > timeout:
                raise ConfigError(f"action_hold_s: expected a number <= action_timeout_s "
                                  f"({timeout:g}), got {self.action_hold_s!r}")
            store("action_hold_s", hold)
        store("max_linear_speed", positive("max_linear_speed", self.max_linear_speed))
        store("max_angular_speed", positive("max_angular_speed", self.max_angular_speed))
        store("max_linear_norm", self.max_linear_speed if self.max_linear_norm is None
              else positive("max_linear_norm", self.max_linear_norm))
        store("max_angular_norm", self.max_angular_speed if self.max_angular_norm is None
              else positive("max_angular_norm", self.max_angular_norm))
        store("max_step_change", positive("max_step_change", self.max_step_change, high=2.0))
        expect_int("terminate_debounce", self.terminate_debounce, low=1, high=1000)
        gripper_min = expect_number("gripper_min", self.gripper_min)
        gripper_max = expect_number("gripper_max", self.gripper_max)
        if not gripper_max > gripper_min:
            raise ConfigError(f"gripper_max: expected a number > gripper_min ({gripper_min:g}), "
                              f"got {self.gripper_max!r}")
        store("gripper_min", gripper_min)
        store("gripper_max", gripper_max)
        expect_str("command_frame", self.command_frame, allow_empty=False)
        store("event_quiet_s", positive("event_quiet_s", self.event_quiet_s))

    @property
    def control_period_s(self) -> float:
        """Seconds one policy step's delta is spread over (``1 / control_rate_hz``)."""
        return 1.0 / self.control_rate_hz

    @property
    def max_linear_step(self) -> float:
        """Largest change of one linear component between consecutive actions (m/s)."""
        return self.max_step_change * self.max_linear_speed

    @property
    def max_angular_step(self) -> float:
        """Largest change of one angular component between consecutive actions (rad/s)."""
        return self.max_step_change * self.max_angular_speed

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], section: str = "safety") -> "SafetyConfig":
        """Build from a dict (YAML, ROS parameters), rejecting unknown keys.

        Leave a key out (or give ``None`` for the optional ``action_hold_s``,
        ``max_linear_norm``, ``max_angular_norm``) to take its default.
        """
        reject_unknown_keys(section, values.keys(), [f.name for f in fields(cls)])
        return cls(**dict(values))
