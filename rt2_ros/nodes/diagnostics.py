"""Reporting helpers shared by the nodes: log-once bookkeeping, rates, diagnostics messages.

:class:`ReportOnce` and :class:`RateMeter` are plain Python (no rclpy);
:func:`diagnostic_array` builds ``diagnostic_msgs/DiagnosticArray`` and
imports the message package only when called.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Iterable

__all__ = ["ReportOnce", "RateMeter", "shorten", "diagnostic_array", "MAX_VALUE_CHARS"]

#: Diagnostics values and log lines are cut to this length: a 1 MB instruction
#: must not become a 1 MB diagnostics message 30 times a second.
MAX_VALUE_CHARS = 200


def shorten(text: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``str(text)`` cut to ``limit`` characters, saying how long it was."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class ReportOnce:
    """Remembers which problems were already logged, so each is logged once per occurrence.

    ``first(key)`` is true the first time a problem ``key`` is seen (and
    again after :meth:`clear` said it went away).  Thread-safe.
    """

    def __init__(self) -> None:
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """True if ``key`` is not active yet (and mark it active)."""
        with self._lock:
            if key in self._active:
                return False
            self._active.add(key)
            return True

    def clear(self, prefix: str = "") -> None:
        """Forget the active keys starting with ``prefix`` (all with "")."""
        with self._lock:
            self._active = {k for k in self._active if not k.startswith(prefix)}

    def active(self) -> list[str]:
        """The keys currently active, sorted."""
        with self._lock:
            return sorted(self._active)


class RateMeter:
    """Events per second over a sliding window of ``window_s`` seconds (times passed in)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        """Record one event at ``now`` (monotonic seconds)."""
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        """Events per second in the window ending at ``now`` (0 with fewer than two events)."""
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


def diagnostic_array(stamp: Any, name: str, level: int, message: str,
                     values: Iterable[tuple[str, Any]], hardware_id: str = "") -> Any:
    """A ``DiagnosticArray`` holding one status; every value is shortened to MAX_VALUE_CHARS."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(level=bytes([int(level)]), name=name, message=shorten(message),
                              hardware_id=hardware_id)
    status.values = [KeyValue(key=str(key), value=shorten(value)) for key, value in values]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array
