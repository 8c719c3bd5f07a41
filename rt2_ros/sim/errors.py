"""Errors raised by the simulator."""
from __future__ import annotations

from rt2_ros.errors import Rt2RosError


class SimError(Rt2RosError, ValueError):
    """A simulator input was wrong (a non-finite twist, an unknown object or task kind, ...).

    The message names the argument and the offending value.
    """


class RenderBackendError(Rt2RosError, RuntimeError):
    """No headless OpenGL backend could render (EGL and OSMesa both failed)."""

    exit_code = 1
