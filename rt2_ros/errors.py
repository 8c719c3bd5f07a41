"""The project's error types.

Every error a user can cause (bad tokens, a bad embodiment file, a bad config
value, a backend that cannot produce an action) derives from ``Rt2RosError``.
Command-line tools print ``str(error)`` as one line and exit with
``error.exit_code``; ROS nodes log it and command a zero twist.
"""


class Rt2RosError(Exception):
    """Base class of all errors raised on purpose by rt2_ros."""

    exit_code = 2


class ConfigError(Rt2RosError, ValueError):
    """A configuration value is missing, of the wrong type or out of range.

    The message names the key and says what was expected and what came.
    """


class ActionLanguageError(Rt2RosError, ValueError):
    """Malformed action tokens, action values or embodiment definitions.

    The message names the position or key and the offending value.
    """


class PolicyError(Rt2RosError):
    """A policy backend could not produce a legal action (model failure,
    unreachable or misbehaving server, exhausted script, ...)."""

    exit_code = 1
