"""The safety state machine between the policy and the arm (pure, no rclpy).

The safety node feeds it every received action (:meth:`SafetyGovernor.on_action`),
every instruction (:meth:`SafetyGovernor.start_episode`) and every enable
request (:meth:`SafetyGovernor.set_enabled`), and calls
:meth:`SafetyGovernor.tick` at ``publish_rate_hz``; ``tick`` always returns a
command to publish, the status for diagnostics and the events to log since
the previous tick.  Time is passed in (``now``: monotonic seconds), so the
rules are tested without clocks.

Rules (DESIGN section 7):

- Disabled (the default at start) -> zero twist.  Enabling needs a fresh
  action received after the enable: an action that arrived while disabled is
  never executed late.
- Each accepted action is clamped once, when it arrives (``limit_command``),
  and its twist is commanded for ``action_hold_s`` (one control period by
  default), never longer than ``action_timeout_s``.  Between actions the twist
  is zero.
- Watchdog: with an episode open and no action for more than
  ``action_timeout_s`` (or the clock going backwards) -> zero twist, state
  ``watchdog``; the next action resumes, ramping up from zero.
- A terminate action -> zero twist, gripper held.  ``terminate_debounce``
  consecutive terminate actions close the episode: nothing moves until a new
  episode starts.  A non-terminate action in between resets the count; a
  rejected action neither counts nor resets it.
- A non-finite action is rejected: zero twist at once (the action being
  executed is dropped too), gripper held, counted, state ``rejected`` until a
  valid action arrives.
- Episodes: :meth:`start_episode` always starts a new one (even with the same
  text: that is how a user re-runs a finished instruction).  An action whose
  ``instruction`` differs from the episode's starts a new episode too (a goal
  sent straight to the policy's action server), except an action for the
  instruction just replaced, within ``action_timeout_s`` of the switch: that is
  a stale, in-flight action and is dropped.  An action with the text of a
  closed episode is ignored.
- Gripper: the last value an applied action commanded (clamped to range),
  held through stops, terminate and disable; ``None`` until the first applied
  action (the node then publishes no gripper command).

Not thread-safe: call it from one thread (a single-threaded executor, or under
one lock), with ``now`` from one monotonic clock (``time.monotonic()``, not
ROS time, which jumps with sim time and bag loops).  Time going backwards
stops motion (state ``watchdog``).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Mapping, Sequence

from rt2_ros.safety.config import SafetyConfig
from rt2_ros.safety.safety_filter import (CLAMP_KINDS, ClampEvent, RejectedActionError,
                                          TwistCommand, limit_command, twist_from_action)


class SafetyState(str, Enum):
    """What the governor is doing; ``value`` is the short name shown in diagnostics."""

    DISABLED = "disabled"         # safety off: zero twist
    WAITING = "waiting"           # enabled, no action to execute right now (zero twist)
    ACTIVE = "active"             # executing an action
    WATCHDOG = "watchdog"         # episode open but no action for > action_timeout_s
    REJECTED = "rejected"         # the latest action was refused (non-finite)
    TERMINATING = "terminating"   # latest action was terminate, debounce not reached yet
    TERMINATED = "terminated"     # episode closed by terminate; waiting for a new instruction


class SafetyLevel(IntEnum):
    """Severity; the values are diagnostic_msgs/DiagnosticStatus levels (OK=0, WARN=1, ERROR=2)."""

    OK = 0
    WARN = 1
    ERROR = 2


STOP_DISABLED = "disabled"
STOP_WATCHDOG = "watchdog"
STOP_TERMINATE = "terminate"
STOP_REJECTED = "rejected"
STOP_KINDS = (STOP_DISABLED, STOP_WATCHDOG, STOP_TERMINATE, STOP_REJECTED)

APPLIED = "applied"
TERMINATE = "terminate"
REJECTED = "rejected"
IGNORED_DISABLED = "ignored_disabled"
IGNORED_TERMINATED = "ignored_terminated"
IGNORED_STALE = "ignored_stale"
DISPOSITIONS = (APPLIED, TERMINATE, REJECTED, IGNORED_DISABLED, IGNORED_TERMINATED, IGNORED_STALE)

EVENT_QUEUE_LENGTH = 256

# Log groups: a state change inside one group (active <-> waiting every
# control period, or a single rejected/terminate action, which have events of
# their own) is normal operation and not an event.
_LOG_GROUP = {
    SafetyState.DISABLED: "disabled",
    SafetyState.WATCHDOG: "watchdog",
    SafetyState.TERMINATED: "terminated",
    SafetyState.WAITING: "running",
    SafetyState.ACTIVE: "running",
    SafetyState.REJECTED: "running",
    SafetyState.TERMINATING: "running",
}


@dataclass(frozen=True)
class SafetyEvent:
    """Something worth one log line: ``kind`` is ``state``, ``episode``, ``clamp``,
    ``rejected``, ``terminate`` or ``ignored``; ``time`` is the ``now`` it happened at."""

    time: float
    level: SafetyLevel
    kind: str
    message: str


@dataclass(frozen=True)
class ActionResult:
    """What :meth:`SafetyGovernor.on_action` did with one action.

    ``disposition`` is one of ``DISPOSITIONS``; ``command`` is the clamped
    command when applied; ``clamps`` what ``limit_command`` changed;
    ``detail`` a human-readable reason (the rejection message, ...).
    """

    disposition: str
    command: TwistCommand | None = None
    clamps: tuple[ClampEvent, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class SafetyStatus:
    """A snapshot for diagnostics; ``as_key_values()`` gives DiagnosticStatus values."""

    state: SafetyState
    level: SafetyLevel
    reason: str                        # why the twist is zero; "" while executing an action
    enabled: bool
    command: TwistCommand              # what tick() returned with this status
    episode_instruction: str | None    # None before the first episode
    episode_closed: bool
    episodes: int
    terminate_streak: int
    terminate_debounce: int
    last_action_age_s: float | None    # since the last action of the episode; None if none
    clamp_counts: Mapping[str, int]    # CLAMP_KINDS -> actions that kind changed
    stop_counts: Mapping[str, int]     # STOP_KINDS -> number of stops of that kind
    action_counts: Mapping[str, int]   # "received" and DISPOSITIONS -> actions
    last_clamps: tuple[ClampEvent, ...]
    last_rejection: str
    events_dropped: int

    @property
    def message(self) -> str:
        """DiagnosticStatus.message: the state, and the reason when the twist is zero."""
        return f"{self.state.value}: {self.reason}" if self.reason else self.state.value

    def as_key_values(self) -> list[tuple[str, str]]:
        """Flat ``(key, value)`` strings for ``diagnostic_msgs/KeyValue``."""
        def fmt(value: float) -> str:
            return f"{value:.4f}"

        gripper = self.command.gripper
        pairs = [
            ("state", self.state.value),
            ("reason", self.reason),
            ("enabled", str(self.enabled).lower()),
            ("command.linear", " ".join(fmt(v) for v in self.command.linear)),
            ("command.angular", " ".join(fmt(v) for v in self.command.angular)),
            ("command.gripper", "none" if gripper is None else fmt(gripper)),
            ("episode.instruction", "" if self.episode_instruction is None
             else self.episode_instruction),
            ("episode.closed", str(self.episode_closed).lower()),
            ("episode.count", str(self.episodes)),
            ("terminate.streak", f"{self.terminate_streak}/{self.terminate_debounce}"),
            ("last_action_age_s", "none" if self.last_action_age_s is None
             else f"{self.last_action_age_s:.3f}"),
        ]
        pairs += [(f"clamps.{kind}", str(count)) for kind, count in self.clamp_counts.items()]
        pairs += [(f"stops.{kind}", str(count)) for kind, count in self.stop_counts.items()]
        pairs += [(f"actions.{kind}", str(count)) for kind, count in self.action_counts.items()]
        pairs.append(("last_clamps", "; ".join(c.describe() for c in self.last_clamps)))
        pairs.append(("last_rejection", self.last_rejection))
        pairs.append(("events_dropped", str(self.events_dropped)))
        return pairs


@dataclass(frozen=True)
class SafetyOutput:
    """The result of one :meth:`SafetyGovernor.tick`: publish ``command``
    (twist always; gripper unless ``None``), report ``status``, log ``events``."""

    command: TwistCommand
    status: SafetyStatus
    events: tuple[SafetyEvent, ...] = field(default=())


def _check_time(now: float) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValueError(f"now: expected finite monotonic seconds, got {now!r}")
    return float(now)


class SafetyGovernor:
    """Holds the enable flag, the episode and the latest action; decides every published command."""

    def __init__(self, config: SafetyConfig, now: float) -> None:
        self.config = config
        now = _check_time(now)
        self._enabled = config.start_enabled
        self._enabled_since = now
        self._gripper: float | None = None
        # The clamped command of the last applied action: the ramp origin of
        # the step-change limit; reset to zero by every stop.
        self._previous = TwistCommand()
        self._active: TwistCommand | None = None
        self._active_since = 0.0
        self._latest_kind: str | None = None      # APPLIED, TERMINATE or REJECTED
        self._last_action_time: float | None = None
        self._episode: str | None = None
        self._episode_started = now
        self._episode_opened_by_action = False
        self._episode_closed = False
        self._episodes = 0
        self._superseded: tuple[str, float] | None = None
        self._terminate_streak = 0
        self._clamp_counts = {kind: 0 for kind in CLAMP_KINDS}
        self._stop_counts = {kind: 0 for kind in STOP_KINDS}
        self._action_counts = {"received": 0, **{d: 0 for d in DISPOSITIONS}}
        self._last_clamps: tuple[ClampEvent, ...] = ()
        self._last_rejection = ""
        self._last_seen: dict[str, float] = {}
        self._events: deque[SafetyEvent] = deque()
        self._events_dropped = 0
        self._log_group: str | None = None
        if not self._enabled:
            self._stop_counts[STOP_DISABLED] += 1

    # ----------------------------------------------------------------- inputs

    @property
    def enabled(self) -> bool:
        """Whether motion may be commanded."""
        return self._enabled

    def set_enabled(self, enabled: bool, now: float) -> str:
        """Switch motion on or off (the SetBool service); return a message for its response.

        Either way the action being executed is dropped: after enabling, only
        actions received from now on move the arm, ramping up from zero.
        """
        now = _check_time(now)
        enabled = bool(enabled)
        if enabled == self._enabled:
            return f"already {'enabled' if enabled else 'disabled'}"
        self._enabled = enabled
        self._stop_motion()
        if enabled:
            self._enabled_since = now
            return "enabled"
        self._stop_counts[STOP_DISABLED] += 1
        return "disabled"

    def start_episode(self, instruction: str, now: float) -> None:
        """A new instruction was given: start a new episode (also after terminate, also the same text).

        Exception: the instruction message and the policy's first action travel
        on different topics, so the action may arrive first and open the
        episode itself.  An instruction with the same text that arrives within
        ``action_timeout_s`` of such an action-opened episode continues it
        instead of restarting it (which would drop that first action).
        """
        now = _check_time(now)
        instruction = str(instruction)
        if (self._episode == instruction and self._episode_opened_by_action
                and not self._episode_closed
                and 0.0 <= now - self._episode_started <= self.config.action_timeout_s):
            self._episode_opened_by_action = False
            return
        self._start_episode(instruction, now, explicit=True)

    def on_action(self, *, instruction: str, terminate: bool, delta_position: Sequence[float],
                  delta_rotation: Sequence[float], gripper: float, now: float) -> ActionResult:
        """Take one action from the policy (the fields of rt2_ros/RT2Action) received at ``now``."""
        now = _check_time(now)
        instruction = str(instruction)
        self._action_counts["received"] += 1
        self._expire(now)

        if self._episode is None or instruction != self._episode:
            superseded = self._superseded
            if (superseded is not None and instruction == superseded[0]
                    and now - superseded[1] <= self.config.action_timeout_s):
                return self._ignore(IGNORED_STALE, now,
                                    f"action for replaced instruction {instruction!r}")
            self._start_episode(instruction, now, explicit=False)
        if self._episode_closed:
            return self._ignore(IGNORED_TERMINATED, now,
                                f"episode {instruction!r} is closed; waiting for a new instruction")

        try:
            requested = twist_from_action(delta_position, delta_rotation, gripper,
                                          self.config.control_rate_hz)
        except RejectedActionError as error:
            return self._reject(str(error), now)
        if bool(terminate):
            return self._terminate(now)

        self._terminate_streak = 0
        if not self._enabled:
            return self._ignore(IGNORED_DISABLED, now, "safety disabled")
        command, clamps = limit_command(requested, self._previous, self.config)
        self._previous = command
        self._active = command
        self._active_since = now
        self._latest_kind = APPLIED
        self._last_action_time = now
        self._gripper = command.gripper
        self._last_clamps = tuple(clamps)
        for kind in dict.fromkeys(c.kind for c in clamps):
            self._clamp_counts[kind] += 1
            first = next(c for c in clamps if c.kind == kind)
            self._note(f"clamp:{kind}", now, SafetyLevel.WARN, "clamp",
                       f"{first.describe()} [{kind} count {self._clamp_counts[kind]}]")
        self._action_counts[APPLIED] += 1
        return ActionResult(APPLIED, command, tuple(clamps))

    def on_action_message(self, msg: Any, now: float) -> ActionResult:
        """:meth:`on_action` for an rt2_ros/RT2Action message (read by attribute, no ROS import)."""
        return self.on_action(
            instruction=msg.instruction, terminate=msg.terminate,
            delta_position=(msg.delta_position.x, msg.delta_position.y, msg.delta_position.z),
            delta_rotation=(msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z),
            gripper=msg.gripper, now=now)

    # ----------------------------------------------------------------- output

    def tick(self, now: float) -> SafetyOutput:
        """The command to publish now, the status, and the events since the previous tick."""
        now = _check_time(now)
        self._expire(now)
        state, reason = self._evaluate(now)
        if state is SafetyState.WATCHDOG and self._log_group != "watchdog":
            self._stop_counts[STOP_WATCHDOG] += 1
        group = _LOG_GROUP[state]
        if group != self._log_group:
            previous = "start" if self._log_group is None else self._log_group
            self._push(SafetyEvent(now, _level_of(state), "state",
                                   f"{previous} -> {state.value}"
                                   + (f": {reason}" if reason else "")))
            self._log_group = group

        twist = self._active if state is SafetyState.ACTIVE else None
        command = (TwistCommand(twist.linear, twist.angular, self._gripper) if twist is not None
                   else TwistCommand(gripper=self._gripper))
        level = _level_of(state)
        if level is SafetyLevel.OK and any(
                now - self._last_seen.get(f"clamp:{kind}", -math.inf) <= self.config.event_quiet_s
                for kind in CLAMP_KINDS):
            level = SafetyLevel.WARN
        status = SafetyStatus(
            state=state, level=level, reason=reason, enabled=self._enabled, command=command,
            episode_instruction=self._episode, episode_closed=self._episode_closed,
            episodes=self._episodes, terminate_streak=self._terminate_streak,
            terminate_debounce=self.config.terminate_debounce,
            last_action_age_s=(None if self._last_action_time is None
                               else now - self._last_action_time),
            clamp_counts=dict(self._clamp_counts), stop_counts=dict(self._stop_counts),
            action_counts=dict(self._action_counts), last_clamps=self._last_clamps,
            last_rejection=self._last_rejection, events_dropped=self._events_dropped)
        events = tuple(self._events)
        self._events.clear()
        return SafetyOutput(command, status, events)

    # ---------------------------------------------------------------- helpers

    def _evaluate(self, now: float) -> tuple[SafetyState, str]:
        cfg = self.config
        if not self._enabled:
            return SafetyState.DISABLED, "safety disabled (call /rt2/safety/enable)"
        if self._episode_closed:
            return (SafetyState.TERMINATED,
                    f"episode {self._episode!r} closed by terminate; waiting for a new instruction")
        if self._episode is None:
            return SafetyState.WAITING, "waiting for an instruction"
        since = max(self._enabled_since, self._episode_started,
                    -math.inf if self._last_action_time is None else self._last_action_time)
        silence = now - since
        if silence < 0.0:
            return SafetyState.WATCHDOG, f"clock went backwards by {-silence:.3f} s"
        if silence > cfg.action_timeout_s:
            return (SafetyState.WATCHDOG,
                    f"no action for {silence:.3f} s (action_timeout_s {cfg.action_timeout_s:g})")
        if self._latest_kind == REJECTED:
            return SafetyState.REJECTED, f"last action rejected: {self._last_rejection}"
        if self._latest_kind == TERMINATE:
            return (SafetyState.TERMINATING,
                    f"terminate {self._terminate_streak}/{cfg.terminate_debounce}")
        if self._active is not None:
            if self._active.is_stop:
                return SafetyState.ACTIVE, "the action commands no motion"
            return SafetyState.ACTIVE, ""
        return SafetyState.WAITING, "waiting for the next action"

    def _expire(self, now: float) -> None:
        """Drop the executed action after its hold time; after a watchdog gap, ramp from zero."""
        if self._active is not None:
            age = now - self._active_since
            if age < 0.0 or age >= self.config.action_hold_s:
                self._active = None
        if (self._last_action_time is not None
                and not 0.0 <= now - self._last_action_time <= self.config.action_timeout_s):
            self._previous = TwistCommand()

    def _stop_motion(self) -> None:
        self._active = None
        self._latest_kind = None
        self._previous = TwistCommand()

    def _start_episode(self, instruction: str, now: float, *, explicit: bool) -> None:
        if self._episode is not None and instruction != self._episode:
            self._superseded = (self._episode, now)
        self._episode = instruction
        self._episode_started = now
        self._episode_opened_by_action = not explicit
        self._episode_closed = False
        self._episodes += 1
        self._terminate_streak = 0
        self._last_action_time = None
        self._stop_motion()
        source = "instruction" if explicit else "an action's instruction"
        self._push(SafetyEvent(now, SafetyLevel.OK, "episode",
                               f"episode {self._episodes} started from {source}: {instruction!r}"))

    def _reject(self, detail: str, now: float) -> ActionResult:
        self._stop_counts[STOP_REJECTED] += 1
        self._action_counts[REJECTED] += 1
        self._last_rejection = detail
        self._last_action_time = now
        self._stop_motion()
        self._latest_kind = REJECTED
        self._note("rejected", now, SafetyLevel.ERROR, "rejected",
                   f"action rejected, zero twist: {detail} "
                   f"[rejected count {self._action_counts[REJECTED]}]")
        return ActionResult(REJECTED, detail=detail)

    def _terminate(self, now: float) -> ActionResult:
        cfg = self.config
        self._action_counts[TERMINATE] += 1
        self._terminate_streak += 1
        self._last_action_time = now
        self._stop_motion()
        self._latest_kind = TERMINATE
        if self._terminate_streak >= cfg.terminate_debounce:
            self._episode_closed = True
            self._stop_counts[STOP_TERMINATE] += 1
            detail = (f"episode {self._episode!r} closed after {self._terminate_streak} "
                      f"consecutive terminate action(s)")
            self._push(SafetyEvent(now, SafetyLevel.OK, "episode", detail))
        else:
            detail = f"terminate {self._terminate_streak}/{cfg.terminate_debounce}: zero twist"
            self._note("terminate", now, SafetyLevel.OK, "terminate", detail)
        return ActionResult(TERMINATE, detail=detail)

    def _ignore(self, disposition: str, now: float, detail: str) -> ActionResult:
        self._action_counts[disposition] += 1
        self._note(disposition, now, SafetyLevel.OK, "ignored",
                   f"{disposition}: {detail} [count {self._action_counts[disposition]}]")
        return ActionResult(disposition, detail=detail)

    def _note(self, key: str, now: float, level: SafetyLevel, kind: str, message: str) -> None:
        """Record that a repeating condition occurred; an event only after a quiet period."""
        last = self._last_seen.get(key)
        self._last_seen[key] = now
        if last is None or now - last > self.config.event_quiet_s or now < last:
            self._push(SafetyEvent(now, level, kind, message))

    def _push(self, event: SafetyEvent) -> None:
        if len(self._events) >= EVENT_QUEUE_LENGTH:
            self._events.popleft()
            self._events_dropped += 1
        self._events.append(event)


def _level_of(state: SafetyState) -> SafetyLevel:
    if state is SafetyState.REJECTED:
        return SafetyLevel.ERROR
    if state is SafetyState.WATCHDOG:
        return SafetyLevel.WARN
    return SafetyLevel.OK
