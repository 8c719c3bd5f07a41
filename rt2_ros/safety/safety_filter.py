"""Pure safety rules: from one policy step to a bounded twist command.

``twist_from_action`` turns a step's deltas into velocities (the delta is
spread over one control period) and rejects non-finite input;
``limit_command`` clamps that request and reports exactly what it changed.
Both are pure functions; :mod:`rt2_ros.safety.governor` adds time and state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from rt2_ros.errors import Rt2RosError
from rt2_ros.safety.config import SafetyConfig

Vector3 = tuple[float, float, float]

ZERO_VECTOR: Vector3 = (0.0, 0.0, 0.0)
LINEAR_AXES = ("linear.x", "linear.y", "linear.z")
ANGULAR_AXES = ("angular.x", "angular.y", "angular.z")

AXIS_LINEAR = "axis_linear"
AXIS_ANGULAR = "axis_angular"
NORM_LINEAR = "norm_linear"
NORM_ANGULAR = "norm_angular"
STEP_CHANGE = "step_change"
GRIPPER_RANGE = "gripper_range"
CLAMP_KINDS = (AXIS_LINEAR, AXIS_ANGULAR, NORM_LINEAR, NORM_ANGULAR, STEP_CHANGE, GRIPPER_RANGE)


class RejectedActionError(Rt2RosError, ValueError):
    """An action that must not be executed at all (a non-finite or malformed value).

    The message names the field (and index) and the value.
    """


@dataclass(frozen=True)
class TwistCommand:
    """A velocity command in the command frame plus a gripper command.

    ``linear`` in m/s, ``angular`` in rad/s (x, y, z);  ``gripper`` is
    ``None`` while no gripper value has ever been commanded.
    """

    linear: Vector3 = ZERO_VECTOR
    angular: Vector3 = ZERO_VECTOR
    gripper: float | None = None

    @property
    def is_stop(self) -> bool:
        """True when every twist component is zero (the gripper does not count)."""
        return not any(self.linear) and not any(self.angular)

    def stopped(self) -> "TwistCommand":
        """The same command with a zero twist and the gripper kept."""
        return replace(self, linear=ZERO_VECTOR, angular=ZERO_VECTOR)


@dataclass(frozen=True)
class ClampEvent:
    """One change ``limit_command`` made to a request.

    ``kind`` is one of ``CLAMP_KINDS``.  ``axis`` is a component
    (``"linear.x"`` .. ``"angular.z"``) for per-axis and step-change clamps,
    ``"linear"``/``"angular"`` for norm clamps (values are then vector
    lengths) and ``"gripper"``.  ``requested`` is the value entering that
    stage, ``applied`` the value leaving it, ``limit`` the bound that acted
    (for ``step_change``: the largest allowed change of that component).
    """

    kind: str
    axis: str
    requested: float
    applied: float
    limit: float

    def describe(self) -> str:
        """One line for logs, e.g. ``axis_linear on linear.x: requested 0.3, applied 0.1 (limit 0.1)``."""
        if self.kind == STEP_CHANGE:
            bound = f"change per action limited to {self.limit:.6g}, all axes scaled together"
        else:
            bound = f"limit {self.limit:.6g}"
        return (f"{self.kind} on {self.axis}: requested {self.requested:.6g}, "
                f"applied {self.applied:.6g} ({bound})")


def _finite_vector(field: str, values: Sequence[Any]) -> Vector3:
    try:
        count = len(values)
    except TypeError:
        raise RejectedActionError(f"{field}: expected 3 numbers, got {values!r}") from None
    if count != 3:
        raise RejectedActionError(f"{field}: expected 3 numbers, got {count}: {values!r}")
    out = []
    for index, value in enumerate(values):
        out.append(_finite_number(f"{field}[{index}]", value))
    return (out[0], out[1], out[2])


def _finite_number(field: str, value: Any) -> float:
    if isinstance(value, (bool, str, bytes)):
        raise RejectedActionError(f"{field}: expected a finite number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RejectedActionError(f"{field}: expected a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise RejectedActionError(f"{field}: expected a finite number, got {value!r}")
    return number


def twist_from_action(delta_position: Sequence[float], delta_rotation: Sequence[float],
                      gripper: float | None, control_rate_hz: float) -> TwistCommand:
    """Spread one step's deltas over one control period: the *requested* (unclamped) command.

    ``linear = delta_position * control_rate_hz`` (m/s), ``angular =
    delta_rotation * control_rate_hz`` (rad/s).  Raises
    ``RejectedActionError`` naming the field and value when any input is not
    a finite number (NaN, inf, wrong length) or a velocity overflows: such an
    action is refused, never clamped into something plausible.
    """
    position = _finite_vector("delta_position", delta_position)
    rotation = _finite_vector("delta_rotation", delta_rotation)
    grip = None if gripper is None else _finite_number("gripper", gripper)
    linear = tuple(v * control_rate_hz for v in position)
    angular = tuple(v * control_rate_hz for v in rotation)
    for axes, values, source in ((LINEAR_AXES, linear, position), (ANGULAR_AXES, angular, rotation)):
        for axis, value, delta in zip(axes, values, source):
            if not math.isfinite(value):
                raise RejectedActionError(
                    f"{axis}: {delta!r} * control_rate_hz {control_rate_hz:g} is not finite")
    return TwistCommand(linear=linear, angular=angular, gripper=grip)  # type: ignore[arg-type]


def _clamp_axes(values: Vector3, limit: float, axes: tuple[str, ...], kind: str,
                events: list[ClampEvent] | None) -> Vector3:
    out = []
    for axis, value in zip(axes, values):
        applied = min(limit, max(-limit, value))
        if applied != value and events is not None:
            events.append(ClampEvent(kind, axis, value, applied, limit))
        out.append(applied)
    return (out[0], out[1], out[2])


def _clamp_norm(values: Vector3, limit: float, name: str, kind: str,
                events: list[ClampEvent] | None) -> Vector3:
    norm = math.hypot(*values)
    if norm <= limit:
        return values
    scale = limit / norm
    scaled = (values[0] * scale, values[1] * scale, values[2] * scale)
    if events is not None:
        events.append(ClampEvent(kind, name, norm, math.hypot(*scaled), limit))
    return scaled


def _within_limits(linear: Vector3, angular: Vector3, cfg: SafetyConfig,
                   events: list[ClampEvent] | None) -> tuple[Vector3, Vector3]:
    linear = _clamp_axes(linear, cfg.max_linear_speed, LINEAR_AXES, AXIS_LINEAR, events)
    angular = _clamp_axes(angular, cfg.max_angular_speed, ANGULAR_AXES, AXIS_ANGULAR, events)
    linear = _clamp_norm(linear, cfg.max_linear_norm, "linear", NORM_LINEAR, events)
    angular = _clamp_norm(angular, cfg.max_angular_norm, "angular", NORM_ANGULAR, events)
    return linear, angular


def limit_command(requested: TwistCommand, previous: TwistCommand,
                  cfg: SafetyConfig) -> tuple[TwistCommand, list[ClampEvent]]:
    """Clamp ``requested`` to the limits of ``cfg``; return the command and what was changed.

    Stages, each reported by ``ClampEvent``s in this order:

    1. per-axis: each component to ``±max_linear_speed`` / ``±max_angular_speed``;
    2. norm: the linear and angular vectors scaled down (direction kept) to
       ``max_linear_norm`` / ``max_angular_norm``;
    3. step change, relative to ``previous`` (the command of the previous
       action; a zero twist after any stop): all six components move from
       ``previous`` towards the target by one common fraction, so no component
       changes by more than ``max_step_change`` times its per-axis limit.  The
       result lies on the segment between two commands inside the (convex)
       limits, so it stays inside them.  A zero target (a stop) is never limited;
    4. gripper: clamped to ``gripper_min..gripper_max`` (``None`` stays ``None``).

    Raises ``RejectedActionError`` for a non-finite request.
    """
    linear = _finite_vector("linear", requested.linear)
    angular = _finite_vector("angular", requested.angular)
    events: list[ClampEvent] = []
    linear, angular = _within_limits(linear, angular, cfg, events)

    if any(linear) or any(angular):
        # A previous command outside the limits (another config, a caller's
        # own value) is first brought inside, so the ramp starts from a legal command.
        prev_linear, prev_angular = _within_limits(
            _finite_vector("previous.linear", previous.linear),
            _finite_vector("previous.angular", previous.angular), cfg, None)
        starts = prev_linear + prev_angular
        targets = linear + angular
        steps = (cfg.max_linear_step,) * 3 + (cfg.max_angular_step,) * 3
        fraction = 1.0
        for start, target, step in zip(starts, targets, steps):
            change = abs(target - start)
            if change > step:
                fraction = min(fraction, step / change)
        if fraction < 1.0:
            limited = tuple(start + fraction * (target - start)
                            for start, target in zip(starts, targets))
            for axis, target, applied, step in zip(LINEAR_AXES + ANGULAR_AXES, targets,
                                                   limited, steps):
                if applied != target:
                    events.append(ClampEvent(STEP_CHANGE, axis, target, applied, step))
            linear, angular = limited[:3], limited[3:]  # type: ignore[assignment]

    gripper = requested.gripper
    if gripper is not None:
        gripper = _finite_number("gripper", gripper)
        applied = min(cfg.gripper_max, max(cfg.gripper_min, gripper))
        if applied != gripper:
            limit = cfg.gripper_max if gripper > cfg.gripper_max else cfg.gripper_min
            events.append(ClampEvent(GRIPPER_RANGE, "gripper", gripper, applied, limit))
        gripper = applied
    return TwistCommand(linear=linear, angular=angular, gripper=gripper), events
