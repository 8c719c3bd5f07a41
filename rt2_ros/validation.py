"""Small checks shared by the validated config dataclasses.

Each raises ``ConfigError`` with a message of the form
``<key>: expected <what>, got <value>`` so a user can find the bad entry.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from rt2_ros.errors import ConfigError


def expect_number(key: str, value: Any, *, low: float | None = None, high: float | None = None,
                  low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Return ``value`` as a finite float inside the given bounds, or raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ConfigError(f"{key}: expected a number {op} {low}, got {value!r}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ConfigError(f"{key}: expected a number {op} {high}, got {value!r}")
    return v


def expect_int(key: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int inside the given bounds, or raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{key}: expected an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: expected an integer <= {high}, got {value!r}")
    return value


def expect_bool(key: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, or raise ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def expect_str(key: str, value: Any, *, choices: Iterable[str] | None = None,
               allow_empty: bool = True) -> str:
    """Return ``value`` if it is a string (optionally one of ``choices``), or raise ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if not allow_empty and not value:
        raise ConfigError(f"{key}: expected a non-empty string, got ''")
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def reject_unknown_keys(section: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise ConfigError naming the first key of ``given`` that is not in ``known``."""
    known = set(known)
    for key in given:
        if key not in known:
            raise ConfigError(
                f"{section}: unknown key {key!r} (expected one of {', '.join(sorted(known))})")
