"""SafetyConfig validation and the pure clamp functions (twist_from_action, limit_command)."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rt2_ros.errors import ConfigError
from rt2_ros.safety import (CLAMP_KINDS, ClampEvent, RejectedActionError, SafetyConfig,
                            TwistCommand, limit_command, twist_from_action)

# Loose limits so that a test exercises exactly one clamp.
LOOSE = dict(max_linear_speed=1.0, max_angular_speed=1.0, max_linear_norm=10.0,
             max_angular_norm=10.0, max_step_change=2.0)


def cfg(**overrides):
    return SafetyConfig.from_mapping({**LOOSE, **overrides})


def approx_vec(values):
    return pytest.approx(values, rel=1e-12, abs=1e-15)


# ------------------------------------------------------------------ config

def test_default_config_is_valid_and_conservative():
    c = SafetyConfig()
    assert c.start_enabled is False
    assert c.command_frame == "base_link"
    assert (c.gripper_min, c.gripper_max) == (0.0, 1.0)
    assert c.terminate_debounce == 1
    assert c.action_hold_s == pytest.approx(1.0 / c.control_rate_hz)
    # Norm limits default to the per-axis limits: no diagonal speed-up.
    assert c.max_linear_norm == c.max_linear_speed
    assert c.max_angular_norm == c.max_angular_speed
    assert c.publish_rate_hz >= c.control_rate_hz
    assert c.action_timeout_s >= c.control_period_s


def test_config_from_mapping_coerces_ints_and_derives_limits():
    c = SafetyConfig.from_mapping({"control_rate_hz": 5, "action_timeout_s": 1,
                                   "max_linear_speed": 2, "max_step_change": 1,
                                   "max_angular_norm": None})
    assert isinstance(c.control_rate_hz, float) and c.control_rate_hz == 5.0
    assert isinstance(c.max_linear_speed, float)
    assert c.max_linear_norm == 2.0
    assert c.max_angular_norm == c.max_angular_speed
    assert c.action_hold_s == pytest.approx(0.2)
    assert c.max_linear_step == pytest.approx(2.0)
    assert c.max_angular_step == pytest.approx(c.max_angular_speed)


@pytest.mark.parametrize("key, value, expected", [
    ("max_linear_speed", math.nan, "max_linear_speed: expected a finite number, got nan"),
    ("max_angular_speed", math.inf, "max_angular_speed: expected a finite number, got inf"),
    ("max_linear_speed", 0.0, "max_linear_speed: expected a number > 0.0, got 0.0"),
    ("max_angular_speed", -1.0, "max_angular_speed: expected a number > 0.0, got -1.0"),
    ("max_linear_norm", math.nan, "max_linear_norm: expected a finite number, got nan"),
    ("max_angular_norm", 0, "max_angular_norm: expected a number > 0.0, got 0"),
    ("max_step_change", 0.0, "max_step_change: expected a number > 0.0, got 0.0"),
    ("max_step_change", 2.5, "max_step_change: expected a number <= 2.0, got 2.5"),
    ("max_step_change", "0.5", "max_step_change: expected a number, got '0.5'"),
    ("terminate_debounce", 0, "terminate_debounce: expected an integer >= 1, got 0"),
    ("terminate_debounce", 1.5, "terminate_debounce: expected an integer, got 1.5"),
    ("terminate_debounce", True, "terminate_debounce: expected an integer, got True"),
    ("start_enabled", "yes", "start_enabled: expected true or false, got 'yes'"),
    ("start_enabled", 1, "start_enabled: expected true or false, got 1"),
    ("control_rate_hz", math.nan, "control_rate_hz: expected a finite number, got nan"),
    ("control_rate_hz", 0, "control_rate_hz: expected a number > 0.0, got 0"),
    ("publish_rate_hz", 1.0, "publish_rate_hz: expected a number >= control_rate_hz (3), got 1.0"),
    ("action_timeout_s", 0.2,
     "action_timeout_s: expected a number >= one control period (1/control_rate_hz = 0.333333 s), "
     "got 0.2"),
    ("action_timeout_s", math.nan, "action_timeout_s: expected a finite number, got nan"),
    ("action_hold_s", 2.0, "action_hold_s: expected a number <= action_timeout_s (1), got 2.0"),
    ("action_hold_s", 0.0, "action_hold_s: expected a number > 0.0, got 0.0"),
    ("gripper_min", math.nan, "gripper_min: expected a finite number, got nan"),
    ("gripper_max", 0.0, "gripper_max: expected a number > gripper_min (0), got 0.0"),
    ("command_frame", "", "command_frame: expected a non-empty string, got ''"),
    ("command_frame", None, "command_frame: expected a string, got None"),
    ("event_quiet_s", -1, "event_quiet_s: expected a number > 0.0, got -1"),
    ("max_linear_speed", None, "max_linear_speed: expected a number, got None"),
])
def test_config_errors_name_key_and_value(key, value, expected):
    with pytest.raises(ConfigError) as info:
        SafetyConfig.from_mapping({key: value})
    assert str(info.value) == expected


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"^safety: unknown key 'max_speed' \(expected one of "):
        SafetyConfig.from_mapping({"max_speed": 1.0})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        SafetyConfig().max_linear_speed = 5.0  # type: ignore[misc]


# ------------------------------------------------------------------ conversion

def test_twist_from_action_spreads_delta_over_one_control_period():
    command = twist_from_action((0.01, -0.02, 0.005), (0.1, 0.0, -0.05), 0.5, control_rate_hz=5.0)
    assert command.linear == approx_vec((0.05, -0.1, 0.025))
    assert command.angular == approx_vec((0.5, 0.0, -0.25))
    assert command.gripper == 0.5


def test_twist_from_action_at_three_hz():
    # The rt2_arm embodiment's extreme bin (0.05 m, 0.25 rad per step) at 3 Hz.
    command = twist_from_action((0.05, 0.0, -0.05), (0.25, -0.25, 0.0), 1.0, control_rate_hz=3.0)
    assert command.linear == approx_vec((0.15, 0.0, -0.15))
    assert command.angular == approx_vec((0.75, -0.75, 0.0))


@pytest.mark.parametrize("position, rotation, gripper, expected", [
    ((0.0, math.nan, 0.0), (0.0, 0.0, 0.0), 0.5, "delta_position[1]: expected a finite number, got nan"),
    ((0.0, 0.0, 0.0), (0.0, 0.0, math.inf), 0.5, "delta_rotation[2]: expected a finite number, got inf"),
    ((0.0, 0.0, 0.0), (-math.inf, 0.0, 0.0), 0.5,
     "delta_rotation[0]: expected a finite number, got -inf"),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), math.nan, "gripper: expected a finite number, got nan"),
    ((0.0, 0.0), (0.0, 0.0, 0.0), 0.5, "delta_position: expected 3 numbers, got 2: (0.0, 0.0)"),
    ((0.0, "x", 0.0), (0.0, 0.0, 0.0), 0.5, "delta_position[1]: expected a finite number, got 'x'"),
    ((1e308, 0.0, 0.0), (0.0, 0.0, 0.0), 0.5,
     "linear.x: 1e+308 * control_rate_hz 3 is not finite"),
])
def test_non_finite_action_is_rejected_naming_field_and_value(position, rotation, gripper, expected):
    with pytest.raises(RejectedActionError) as info:
        twist_from_action(position, rotation, gripper, control_rate_hz=3.0)
    assert str(info.value) == expected


def test_limit_command_rejects_non_finite_request_instead_of_clamping():
    with pytest.raises(RejectedActionError, match=r"^linear\[0\]: expected a finite number, got nan"):
        limit_command(TwistCommand(linear=(math.nan, 0.0, 0.0)), TwistCommand(), cfg())


# ------------------------------------------------------------------ clamps

def test_command_within_limits_passes_unchanged():
    request = TwistCommand((0.1, -0.2, 0.3), (0.01, 0.02, -0.03), 0.4)
    command, events = limit_command(request, TwistCommand(), cfg())
    assert command == request
    assert events == []


def test_per_axis_clamp_reports_axis_request_and_limit():
    request = TwistCommand((0.3, -0.05, -0.4), (0.0, 0.0, 0.0), 0.5)
    command, events = limit_command(request, TwistCommand(), cfg(max_linear_speed=0.1))
    assert command.linear == (0.1, -0.05, -0.1)
    assert events == [ClampEvent("axis_linear", "linear.x", 0.3, 0.1, 0.1),
                      ClampEvent("axis_linear", "linear.z", -0.4, -0.1, 0.1)]


def test_per_axis_clamp_angular():
    request = TwistCommand((0.0, 0.0, 0.0), (0.0, 2.0, -0.1))
    command, events = limit_command(request, TwistCommand(), cfg(max_angular_speed=0.5))
    assert command.angular == (0.0, 0.5, -0.1)
    assert events == [ClampEvent("axis_angular", "angular.y", 2.0, 0.5, 0.5)]


def test_norm_clamp_scales_the_vector_and_keeps_direction():
    request = TwistCommand((0.08, 0.0, -0.06), (0.0, 0.0, 0.0))
    command, events = limit_command(request, TwistCommand(),
                                    cfg(max_linear_speed=0.1, max_linear_norm=0.05))
    assert command.linear == approx_vec((0.04, 0.0, -0.03))
    assert events == [ClampEvent("norm_linear", "linear", pytest.approx(0.1), pytest.approx(0.05),
                                 0.05)]


def test_default_norm_limit_bounds_diagonal_speed():
    c = SafetyConfig(max_linear_speed=0.1, max_step_change=2.0)
    command, events = limit_command(TwistCommand((0.1, 0.1, 0.1)), TwistCommand(), c)
    assert math.hypot(*command.linear) == pytest.approx(0.1)
    assert command.linear == approx_vec((0.1 / math.sqrt(3),) * 3)
    assert [e.kind for e in events] == ["norm_linear"]


def test_angular_norm_clamp():
    request = TwistCommand((0.0, 0.0, 0.0), (0.3, 0.4, 0.0))
    command, events = limit_command(request, TwistCommand(), cfg(max_angular_norm=0.25))
    assert command.angular == approx_vec((0.15, 0.2, 0.0))
    assert [(e.kind, e.axis) for e in events] == [("norm_angular", "angular")]
    assert events[0].requested == pytest.approx(0.5)


def test_step_change_limits_change_from_previous_command():
    c = cfg(max_linear_speed=0.1, max_step_change=0.5)  # linear change <= 0.05 per action
    previous = TwistCommand((0.1, 0.0, 0.0))
    command, events = limit_command(TwistCommand((-0.1, 0.0, 0.0)), previous, c)
    assert command.linear == approx_vec((0.05, 0.0, 0.0))
    assert events == [ClampEvent("step_change", "linear.x", -0.1, pytest.approx(0.05), 0.05)]


def test_step_change_scales_all_axes_together_keeping_direction_of_change():
    c = cfg(max_linear_speed=0.1, max_angular_speed=1.0, max_step_change=0.5)
    # From zero: linear.x wants +0.1 (limit 0.05), angular.z wants +0.2 (limit 0.5).
    command, events = limit_command(TwistCommand((0.1, 0.0, 0.0), (0.0, 0.0, 0.2)),
                                    TwistCommand(), c)
    assert command.linear == approx_vec((0.05, 0.0, 0.0))
    assert command.angular == approx_vec((0.0, 0.0, 0.1))
    assert [(e.kind, e.axis) for e in events] == [("step_change", "linear.x"),
                                                  ("step_change", "angular.z")]
    assert events[1].limit == 0.5


def test_angular_step_uses_angular_limit():
    c = cfg(max_angular_speed=0.4, max_step_change=0.25)  # angular change <= 0.1
    command, _ = limit_command(TwistCommand(angular=(0.0, 0.4, 0.0)),
                               TwistCommand(angular=(0.0, 0.1, 0.0)), c)
    assert command.angular == approx_vec((0.0, 0.2, 0.0))


def test_stop_is_never_rate_limited():
    c = cfg(max_linear_speed=0.1, max_step_change=0.1)
    command, events = limit_command(TwistCommand(gripper=0.3),
                                    TwistCommand((0.1, 0.0, 0.0), (0.0, 0.5, 0.0)), c)
    assert command.is_stop
    assert events == []


def test_small_step_from_previous_is_not_limited():
    c = cfg(max_linear_speed=0.1, max_step_change=0.5)
    command, events = limit_command(TwistCommand((0.09, 0.0, 0.0)),
                                    TwistCommand((0.05, 0.0, 0.0)), c)
    assert command.linear == (0.09, 0.0, 0.0)
    assert events == []


@pytest.mark.parametrize("requested, applied, limit", [(1.7, 1.0, 1.0), (-0.2, 0.0, 0.0)])
def test_gripper_range_clamp(requested, applied, limit):
    command, events = limit_command(TwistCommand(gripper=requested), TwistCommand(), cfg())
    assert command.gripper == applied
    assert events == [ClampEvent("gripper_range", "gripper", requested, applied, limit)]


def test_gripper_range_is_configurable_and_none_stays_none():
    c = cfg(gripper_min=-1.0, gripper_max=0.04)
    assert limit_command(TwistCommand(gripper=0.02), TwistCommand(), c)[0].gripper == 0.02
    assert limit_command(TwistCommand(gripper=0.5), TwistCommand(), c)[0].gripper == 0.04
    assert limit_command(TwistCommand(), TwistCommand(), c) == (TwistCommand(), [])


def test_clamp_events_describe_themselves():
    _, events = limit_command(TwistCommand((0.3, 0.0, 0.0)), TwistCommand(),
                              cfg(max_linear_speed=0.1, max_step_change=0.5))
    lines = [e.describe() for e in events]
    assert lines[0] == "axis_linear on linear.x: requested 0.3, applied 0.1 (limit 0.1)"
    assert lines[1].startswith("step_change on linear.x: requested 0.1, applied 0.05 "
                               "(change per action limited to 0.05")


def test_previous_outside_limits_cannot_lead_output_outside_limits():
    c = cfg(max_linear_speed=0.1, max_step_change=0.5)
    command, _ = limit_command(TwistCommand((0.1, 0.0, 0.0)), TwistCommand((5.0, 0.0, 0.0)), c)
    assert abs(command.linear[0]) <= 0.1


# ------------------------------------------------------------------ properties

TOL = 1e-9  # relative slack for float rounding (1e-9 of a limit is far below any actuator)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
vectors = st.tuples(finite, finite, finite)
commands = st.builds(TwistCommand, vectors, vectors, st.one_of(st.none(), finite))
positive = st.floats(min_value=1e-3, max_value=10.0)


@st.composite
def configs(draw):
    return SafetyConfig(
        max_linear_speed=draw(positive), max_angular_speed=draw(positive),
        max_linear_norm=draw(st.one_of(st.none(), positive)),
        max_angular_norm=draw(st.one_of(st.none(), positive)),
        max_step_change=draw(st.floats(min_value=1e-3, max_value=2.0)),
        gripper_min=draw(st.floats(min_value=-2.0, max_value=0.0)),
        gripper_max=draw(st.floats(min_value=0.01, max_value=2.0)))


def assert_within_limits(command, c):
    for v in command.linear:
        assert abs(v) <= c.max_linear_speed * (1 + TOL)
    for v in command.angular:
        assert abs(v) <= c.max_angular_speed * (1 + TOL)
    assert math.hypot(*command.linear) <= c.max_linear_norm * (1 + TOL)
    assert math.hypot(*command.angular) <= c.max_angular_norm * (1 + TOL)
    if command.gripper is not None:
        assert c.gripper_min <= command.gripper <= c.gripper_max


@settings(max_examples=200, deadline=None)
@given(c=configs(), first=commands, second=commands)
def test_output_never_exceeds_any_limit_whatever_the_input(c, first, second):
    previous, _ = limit_command(first, TwistCommand(), c)
    assert_within_limits(previous, c)
    command, events = limit_command(second, previous, c)
    assert_within_limits(command, c)
    assert {e.kind for e in events} <= set(CLAMP_KINDS)
    if not command.is_stop:
        starts = previous.linear + previous.angular
        ends = command.linear + command.angular
        steps = (c.max_linear_step,) * 3 + (c.max_angular_step,) * 3
        for start, end, step in zip(starts, ends, steps):
            assert abs(end - start) <= step * (1 + TOL)
    if not events:
        assert command == second


@settings(max_examples=100, deadline=None)
@given(c=configs(), request=commands, previous=commands)
def test_output_within_limits_even_from_an_illegal_previous(c, request, previous):
    command, _ = limit_command(request, previous, c)
    assert_within_limits(command, c)


@settings(max_examples=100, deadline=None)
@given(c=configs(), request=commands)
def test_clamped_output_keeps_each_component_sign(c, request):
    command, _ = limit_command(request, TwistCommand(), c)
    for asked, got in zip(request.linear + request.angular, command.linear + command.angular):
        assert asked * got >= 0.0
        assert abs(got) <= abs(asked)
