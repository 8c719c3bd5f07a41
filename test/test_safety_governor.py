"""SafetyGovernor: enable, watchdog, terminate, episodes, rejection, reporting (time passed in)."""
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rt2_ros.safety import (CLAMP_KINDS, STOP_KINDS, SafetyConfig, SafetyGovernor, SafetyLevel,
                            SafetyState, TwistCommand)

RATE = 5.0             # control rate: one action per 0.2 s
PERIOD = 1.0 / RATE
TIMEOUT = 1.0
# Limits loose enough that the small actions below pass unchanged.
BASE = dict(control_rate_hz=RATE, publish_rate_hz=50.0, action_timeout_s=TIMEOUT,
            max_linear_speed=1.0, max_angular_speed=1.0, max_linear_norm=2.0,
            max_angular_norm=2.0, max_step_change=2.0, event_quiet_s=5.0)
ZERO = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


def governor(now=0.0, **overrides):
    return SafetyGovernor(SafetyConfig.from_mapping({**BASE, **overrides}), now=now)


def running(now=0.0, instruction="pick up the can", **overrides):
    g = governor(now, start_enabled=True, **overrides)
    g.start_episode(instruction, now)
    return g


def act(g, now, dx=0.01, dyaw=0.0, gripper=0.5, terminate=False, instruction="pick up the can"):
    return g.on_action(instruction=instruction, terminate=terminate,
                       delta_position=(dx, 0.0, 0.0), delta_rotation=(0.0, 0.0, dyaw),
                       gripper=gripper, now=now)


def twist(output):
    return output.command.linear, output.command.angular


# ------------------------------------------------------------------ enable

def test_starts_disabled_with_zero_twist_and_no_gripper_command():
    g = governor()
    g.start_episode("pick up the can", 0.0)
    result = act(g, 0.1, dx=0.02)
    assert result.disposition == "ignored_disabled"
    out = g.tick(0.15)
    assert twist(out) == ZERO
    assert out.command.gripper is None
    assert out.status.state is SafetyState.DISABLED
    assert out.status.enabled is False
    assert out.status.stop_counts["disabled"] == 1
    assert out.status.reason.startswith("safety disabled")


def test_start_enabled_moves_on_the_first_action():
    g = running()
    result = act(g, 0.1, dx=0.02)
    assert result.disposition == "applied"
    out = g.tick(0.12)
    assert out.command.linear == pytest.approx((0.1, 0.0, 0.0))
    assert out.command.gripper == 0.5
    assert out.status.state is SafetyState.ACTIVE
    assert out.status.reason == ""


def test_enable_then_disable_stops_at_once_and_enable_needs_a_fresh_action():
    g = governor()
    g.start_episode("pick up the can", 0.0)
    act(g, 0.05)                                  # arrives while disabled: never executed
    assert g.set_enabled(True, 0.1) == "enabled"
    assert g.set_enabled(True, 0.1) == "already enabled"
    assert twist(g.tick(0.11)) == ZERO
    assert g.tick(0.11).status.state is SafetyState.WAITING
    act(g, 0.2, dx=0.01)
    assert g.tick(0.21).command.linear == pytest.approx((0.05, 0.0, 0.0))
    assert g.set_enabled(False, 0.25) == "disabled"
    out = g.tick(0.26)                            # within the action's hold time, yet zero
    assert twist(out) == ZERO
    assert out.command.gripper == 0.5             # gripper held
    assert out.status.state is SafetyState.DISABLED
    assert out.status.stop_counts["disabled"] == 2
    g.set_enabled(True, 0.3)
    assert twist(g.tick(0.31)) == ZERO            # the old action is not resumed
    act(g, 0.35, dx=0.01)
    assert g.tick(0.36).command.linear == pytest.approx((0.05, 0.0, 0.0))


def test_enabling_resets_the_ramp_origin():
    g = running(max_linear_speed=0.1, max_step_change=0.5)  # change <= 0.05 per action
    act(g, 0.0, dx=0.01)                                    # 0.05 m/s from zero
    act(g, 0.2, dx=0.02)                                    # 0.1 m/s: +0.05 allowed
    assert g.tick(0.21).command.linear[0] == pytest.approx(0.1)
    g.set_enabled(False, 0.3)
    g.set_enabled(True, 0.35)
    act(g, 0.4, dx=0.02)
    assert g.tick(0.41).command.linear[0] == pytest.approx(0.05)


# ------------------------------------------------------------------ timing

def test_action_is_applied_for_one_control_period_then_zero():
    g = running()
    act(g, 1.0, dx=0.01, dyaw=-0.02)
    assert g.tick(1.0).command.angular == pytest.approx((0.0, 0.0, -0.1))
    assert g.tick(1.0 + PERIOD * 0.99).command.linear == pytest.approx((0.05, 0.0, 0.0))
    out = g.tick(1.0 + PERIOD + 1e-9)
    assert twist(out) == ZERO
    assert out.status.state is SafetyState.WAITING   # a gap, not a watchdog stop
    assert out.status.level is SafetyLevel.OK
    assert out.command.gripper == 0.5


def test_action_hold_can_be_lengthened_up_to_the_timeout():
    g = running(action_hold_s=0.5)
    act(g, 0.0)
    assert g.tick(0.45).status.state is SafetyState.ACTIVE
    assert g.tick(0.5).status.state is SafetyState.WAITING


def test_watchdog_zeroes_after_timeout_and_recovers_with_fresh_actions():
    g = running(max_linear_speed=0.1, max_step_change=0.5)
    for i in range(4):                                  # ramp to full speed
        act(g, i * PERIOD, dx=0.02)
    t = 3 * PERIOD
    assert g.tick(t).command.linear[0] == pytest.approx(0.1)
    assert g.tick(t + TIMEOUT).status.state is SafetyState.WAITING
    out = g.tick(t + TIMEOUT + 0.01)
    assert twist(out) == ZERO
    assert out.status.state is SafetyState.WATCHDOG
    assert out.status.level is SafetyLevel.WARN
    assert out.status.stop_counts["watchdog"] == 1
    assert "no action for 1.010 s" in out.status.reason
    assert [e.kind for e in out.events] == ["state"]
    assert out.events[0].level is SafetyLevel.WARN
    # Publishing continues: every tick still returns a (zero) command, no new event.
    later = g.tick(t + 5.0)
    assert twist(later) == ZERO and later.events == ()
    assert later.status.stop_counts["watchdog"] == 1
    # A fresh action resumes, ramping up from zero again.
    act(g, t + 5.1, dx=0.02)
    back = g.tick(t + 5.1)
    assert back.status.state is SafetyState.ACTIVE
    assert back.command.linear[0] == pytest.approx(0.05)
    assert [e.message for e in back.events if e.kind == "state"] == ["watchdog -> active"]


def test_watchdog_when_an_episode_starts_but_no_action_comes():
    g = running(now=10.0)
    assert g.tick(10.5).status.state is SafetyState.WAITING
    assert g.tick(10.0 + TIMEOUT + 0.1).status.state is SafetyState.WATCHDOG


def test_no_watchdog_while_no_instruction_was_ever_given():
    g = governor(start_enabled=True)
    out = g.tick(100.0)
    assert out.status.state is SafetyState.WAITING
    assert out.status.reason == "waiting for an instruction"
    assert out.status.level is SafetyLevel.OK


def test_clock_going_backwards_stops_motion():
    g = running(now=5.0)
    act(g, 5.0)
    out = g.tick(4.0)
    assert twist(out) == ZERO
    assert out.status.state is SafetyState.WATCHDOG
    assert "clock went backwards" in out.status.reason


def test_non_finite_time_is_a_programming_error():
    g = running()
    with pytest.raises(ValueError, match="now: expected finite monotonic seconds, got nan"):
        g.tick(math.nan)


# ------------------------------------------------------------------ terminate

def test_terminate_with_debounce_one_closes_the_episode():
    g = running()
    act(g, 0.0, dx=0.01, gripper=0.8)
    result = act(g, 0.1, terminate=True, gripper=0.0)
    assert result.disposition == "terminate"
    out = g.tick(0.11)                                 # within the last action's hold time
    assert twist(out) == ZERO
    assert out.command.gripper == 0.8                  # held, not the terminate action's value
    assert out.status.state is SafetyState.TERMINATED
    assert out.status.episode_closed is True
    assert out.status.stop_counts["terminate"] == 1
    assert any(e.kind == "episode" and "closed after 1 consecutive" in e.message
               for e in out.events)
    # Nothing moves again for this instruction, however long we wait.
    for i in range(20):
        assert act(g, 0.2 + i * PERIOD, dx=0.02).disposition == "ignored_terminated"
        assert twist(g.tick(0.21 + i * PERIOD)) == ZERO
    assert g.tick(30.0).status.state is SafetyState.TERMINATED   # not a watchdog
    # A new instruction (even the same text, sent again) starts a new episode.
    g.start_episode("pick up the can", 31.0)
    act(g, 31.1, dx=0.01)
    out = g.tick(31.1)
    assert out.command.linear == pytest.approx((0.05, 0.0, 0.0))
    assert out.status.episodes == 2 and out.status.episode_closed is False


def test_terminate_debounce_three_needs_consecutive_terminates():
    g = running(terminate_debounce=3)
    act(g, 0.0, dx=0.01)
    act(g, 0.2, terminate=True)
    out = g.tick(0.21)
    assert twist(out) == ZERO                              # every terminate stops at once
    assert out.status.state is SafetyState.TERMINATING
    assert out.status.terminate_streak == 1
    act(g, 0.4, terminate=True)
    assert g.tick(0.41).status.reason == "terminate 2/3"
    act(g, 0.6, dx=0.01)                                   # resets the count, moves again
    out = g.tick(0.61)
    assert out.status.state is SafetyState.ACTIVE and out.status.terminate_streak == 0
    assert out.command.linear == pytest.approx((0.05, 0.0, 0.0))
    for i in range(3):
        act(g, 0.8 + i * PERIOD, terminate=True)
        assert twist(g.tick(0.81 + i * PERIOD)) == ZERO
    out = g.tick(1.5)
    assert out.status.state is SafetyState.TERMINATED
    assert out.status.action_counts["terminate"] == 5
    assert out.status.stop_counts["terminate"] == 1
    assert act(g, 1.6).disposition == "ignored_terminated"


def test_rejected_action_neither_counts_nor_resets_terminate_streak():
    g = running(terminate_debounce=3)
    act(g, 0.0, terminate=True)
    act(g, 0.2, dx=math.nan)
    act(g, 0.4, terminate=True)
    assert g.tick(0.41).status.terminate_streak == 2
    act(g, 0.6, terminate=True)
    assert g.tick(0.61).status.state is SafetyState.TERMINATED


def test_a_different_instruction_in_actions_starts_a_new_episode():
    g = running(instruction="open the drawer")
    act(g, 0.0, terminate=True, instruction="open the drawer")
    assert g.tick(0.05).status.state is SafetyState.TERMINATED
    result = act(g, 5.0, dx=0.01, instruction="close the drawer")
    assert result.disposition == "applied"
    out = g.tick(5.0)
    assert out.status.state is SafetyState.ACTIVE
    assert out.status.episode_instruction == "close the drawer"
    assert any("started from an action's instruction: 'close the drawer'" in e.message
               for e in out.events)


def test_instruction_arriving_after_its_first_action_continues_the_episode():
    g = governor(start_enabled=True)
    assert act(g, 0.0, dx=0.01, instruction="open the drawer").disposition == "applied"
    g.start_episode("open the drawer", 0.05)           # the topic message came second
    assert twist(g.tick(0.06))[0][0] == pytest.approx(0.01 * BASE["control_rate_hz"])
    assert g.tick(0.06).status.episodes == 1


def test_same_instruction_later_than_the_timeout_restarts_the_episode():
    g = governor(start_enabled=True)
    act(g, 0.0, instruction="open the drawer")
    g.start_episode("open the drawer", 0.0 + BASE["action_timeout_s"] + 0.5)
    assert g.tick(BASE["action_timeout_s"] + 0.5).status.episodes == 2


def test_stale_actions_for_a_replaced_instruction_are_dropped():
    g = running(instruction="open the drawer")
    act(g, 0.0, instruction="open the drawer")
    g.start_episode("close the drawer", 0.1)
    assert twist(g.tick(0.1)) == ZERO                  # the old episode's action stops at once
    stale = act(g, 0.3, instruction="open the drawer")
    assert stale.disposition == "ignored_stale"
    out = g.tick(0.3)
    assert twist(out) == ZERO and out.status.episode_instruction == "close the drawer"
    assert act(g, 0.4, instruction="close the drawer").disposition == "applied"
    # Long after the switch, the old text is a new instruction again.
    assert act(g, 10.0, instruction="open the drawer").disposition == "applied"
    assert g.tick(10.0).status.episode_instruction == "open the drawer"


# ------------------------------------------------------------------ rejection

def test_non_finite_action_is_rejected_with_zero_twist_and_gripper_held():
    g = running()
    act(g, 0.0, dx=0.01, gripper=0.7)
    result = act(g, 0.1, dx=math.inf, gripper=0.1)
    assert result.disposition == "rejected"
    assert result.detail == "delta_position[0]: expected a finite number, got inf"
    out = g.tick(0.15)                                 # previous action's hold not over, yet zero
    assert twist(out) == ZERO
    assert out.command.gripper == 0.7
    assert out.status.state is SafetyState.REJECTED
    assert out.status.level is SafetyLevel.ERROR
    assert out.status.stop_counts["rejected"] == 1
    assert out.status.last_rejection == result.detail
    rejected = [e for e in out.events if e.kind == "rejected"]
    assert len(rejected) == 1 and rejected[0].level is SafetyLevel.ERROR
    assert "delta_position[0]: expected a finite number, got inf" in rejected[0].message
    act(g, 0.2, dx=0.01, gripper=math.nan)
    assert g.tick(0.2).status.last_rejection == "gripper: expected a finite number, got nan"
    act(g, 0.4, dx=0.01)
    out = g.tick(0.4)
    assert out.status.state is SafetyState.ACTIVE
    assert out.status.stop_counts["rejected"] == 2


# ------------------------------------------------------------------ clamps and reporting

def test_clamps_are_counted_per_action_and_logged_once_per_episode_of_clamping():
    g = running(max_linear_speed=0.1, max_step_change=2.0, event_quiet_s=2.0)
    events = []
    for i in range(10):                                 # 0.5 m/s asked, 0.1 allowed
        result = act(g, i * PERIOD, dx=0.1)
        assert [c.kind for c in result.clamps] == ["axis_linear"]
        out = g.tick(i * PERIOD + 0.01)
        assert out.command.linear == pytest.approx((0.1, 0.0, 0.0))
        assert out.status.level is SafetyLevel.WARN
        events += out.events
    assert out.status.clamp_counts["axis_linear"] == 10
    assert out.status.last_clamps[0].requested == pytest.approx(0.5)
    clamp_events = [e for e in events if e.kind == "clamp"]
    assert len(clamp_events) == 1
    assert clamp_events[0].message == ("axis_linear on linear.x: requested 0.5, applied 0.1 "
                                       "(limit 0.1) [axis_linear count 1]")
    # One state event (start -> active) for ten actions: no per-message logging.
    assert [e.kind for e in events] == ["episode", "clamp", "state"]
    for i in range(10, 30):                             # clean actions for 4 s
        act(g, i * PERIOD, dx=0.01)
        g.tick(i * PERIOD + 0.01)
    assert g.tick(6.0).status.level is SafetyLevel.OK
    act(g, 6.1, dx=0.1)
    again = [e for e in g.tick(6.1).events if e.kind == "clamp"]
    assert len(again) == 1 and again[0].message.endswith("[axis_linear count 11]")


def test_gaps_between_actions_do_not_produce_state_events():
    g = running()
    seen = []
    for i in range(10):
        act(g, i * 0.3)                                 # hold 0.2 s, gap 0.1 s
        seen += g.tick(i * 0.3 + 0.1).events + g.tick(i * 0.3 + 0.25).events
    assert [e.kind for e in seen] == ["episode", "state"]


def test_status_key_values_cover_state_command_and_all_counters():
    g = running(max_linear_speed=0.01)
    act(g, 0.0, dx=0.01)
    out = g.tick(0.01)
    values = dict(out.status.as_key_values())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.status.as_key_values())
    assert values["state"] == "active"
    assert values["enabled"] == "true"
    assert values["command.linear"] == "0.0100 0.0000 0.0000"
    assert values["command.gripper"] == "0.5000"
    assert values["episode.instruction"] == "pick up the can"
    assert values["terminate.streak"] == "0/1"
    assert values["last_action_age_s"] == "0.010"
    for kind in CLAMP_KINDS:
        assert f"clamps.{kind}" in values
    for kind in STOP_KINDS:
        assert f"stops.{kind}" in values
    assert values["clamps.axis_linear"] == "1"
    assert values["actions.received"] == "1" and values["actions.applied"] == "1"
    assert values["last_clamps"].startswith("axis_linear on linear.x")
    assert out.status.message == "active"
    assert int(SafetyLevel.OK) == 0 and int(SafetyLevel.WARN) == 1 and int(SafetyLevel.ERROR) == 2


def test_disabled_status_message_and_gripper_none_value():
    out = governor().tick(0.0)
    values = dict(out.status.as_key_values())
    assert values["command.gripper"] == "none"
    assert values["last_action_age_s"] == "none"
    assert out.status.message.startswith("disabled: safety disabled")
    assert [e.message for e in out.events][0].startswith("start -> disabled")


def test_on_action_message_reads_an_rt2action_like_object():
    g = running()
    msg = SimpleNamespace(instruction="pick up the can", terminate=False,
                          delta_position=SimpleNamespace(x=0.01, y=-0.01, z=0.0),
                          delta_rotation=SimpleNamespace(x=0.0, y=0.0, z=0.05), gripper=0.25)
    assert g.on_action_message(msg, 0.0).disposition == "applied"
    out = g.tick(0.0)
    assert out.command.linear == pytest.approx((0.05, -0.05, 0.0))
    assert out.command.angular == pytest.approx((0.0, 0.0, 0.25))
    assert out.command.gripper == 0.25


def test_event_queue_is_bounded_when_tick_is_not_called():
    g = running()
    for i in range(400):
        g.start_episode(f"instruction {i}", i * 0.001)
    out = g.tick(1.0)
    assert len(out.events) == 256
    # 401 episode events and the tick's own state event: the oldest are dropped.
    assert out.status.events_dropped == 401 + 1 - 256
    assert out.events[-1].kind == "state"


# ------------------------------------------------------------------ properties

values = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
deltas = st.one_of(values, st.sampled_from([math.nan, math.inf, -math.inf, 0.0]))
operations = st.lists(st.one_of(
    st.tuples(st.just("action"), st.floats(0.0, 0.6), st.tuples(deltas, deltas, deltas),
              st.tuples(deltas, deltas, deltas), st.floats(-1.0, 2.0), st.booleans(),
              st.sampled_from(["a", "b"])),
    st.tuples(st.just("tick"), st.floats(0.0, 1.5)),
    st.tuples(st.just("enable"), st.floats(0.0, 0.3), st.booleans()),
    st.tuples(st.just("instruction"), st.floats(0.0, 0.3), st.sampled_from(["a", "b"])),
), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=operations, debounce=st.integers(1, 3))
def test_no_sequence_of_inputs_makes_the_output_exceed_a_limit(ops, debounce):
    c = SafetyConfig(control_rate_hz=RATE, action_timeout_s=TIMEOUT, max_linear_speed=0.1,
                     max_angular_speed=0.4, max_step_change=0.5, terminate_debounce=debounce)
    g = SafetyGovernor(c, now=0.0)
    now = 0.0
    last_applied = TwistCommand()
    for op in ops:
        now += op[1]
        if op[0] == "action":
            _, _, pos, rot, grip, term, instruction = op
            result = g.on_action(instruction=instruction, terminate=term, delta_position=pos,
                                 delta_rotation=rot, gripper=grip, now=now)
            if result.disposition == "applied":
                cmd = result.command
                for v in cmd.linear:
                    assert abs(v) <= 0.1 * (1 + 1e-9)
                # Each applied command is within one step of the previous applied one,
                # or (after a stop) within one step of zero.
                for prev, new, step in zip(last_applied.linear + last_applied.angular,
                                           cmd.linear + cmd.angular, (0.05,) * 3 + (0.2,) * 3):
                    assert (abs(new - prev) <= step * (1 + 1e-9)
                            or abs(new) <= step * (1 + 1e-9))
                last_applied = cmd
        elif op[0] == "tick":
            out = g.tick(now)
            cmd = out.command
            assert all(abs(v) <= 0.1 * (1 + 1e-9) for v in cmd.linear)
            assert all(abs(v) <= 0.4 * (1 + 1e-9) for v in cmd.angular)
            assert math.hypot(*cmd.linear) <= 0.1 * (1 + 1e-9)
            assert math.hypot(*cmd.angular) <= 0.4 * (1 + 1e-9)
            assert cmd.gripper is None or 0.0 <= cmd.gripper <= 1.0
            state = out.status.state
            if state is not SafetyState.ACTIVE:      # disabled, watchdog, terminate, ...
                assert cmd.is_stop
            if state is SafetyState.REJECTED:
                assert out.status.level is SafetyLevel.ERROR
            elif state is SafetyState.WATCHDOG:
                assert out.status.level is SafetyLevel.WARN
            else:
                assert out.status.level in (SafetyLevel.OK, SafetyLevel.WARN)
        elif op[0] == "enable":
            g.set_enabled(op[2], now)
        else:
            g.start_episode(op[2], now)


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=30),
       actions=st.lists(st.tuples(values, values), min_size=1, max_size=30))
def test_nothing_moves_after_terminate_until_a_new_instruction(gaps, actions):
    g = running(terminate_debounce=1, instruction="a")
    now = 0.0
    act(g, now, terminate=True, instruction="a")
    for gap, (dx, dyaw) in zip(gaps, actions):
        now += gap
        act(g, now, dx=dx, dyaw=dyaw, instruction="a")
        out = g.tick(now)
        assert out.command.is_stop
        assert out.status.state is SafetyState.TERMINATED
