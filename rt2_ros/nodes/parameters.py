"""Every ROS parameter of the stack, declared in one place, mapped once into validated settings.

Each node's parameters are a tuple of :class:`ParamSpec` (name, default,
description, range or choices).  The same table

- declares the parameters on the node (:func:`declare_node_parameters`:
  type, description and range go into the ``ParameterDescriptor``, so
  ``ros2 param describe`` shows them);
- validates values from anywhere (:func:`policy_node_settings`,
  :func:`safety_node_settings`: a ROS node's parameters, a YAML file read by
  ``rt2-ros up`` or the launch file, ``--set`` overrides) into the frozen
  dataclasses the code uses: :class:`~rt2_ros.policy.config.PolicyConfig`,
  :class:`~rt2_ros.safety.config.SafetyConfig` and the node settings here;
- parses command-line values (:func:`parse_value`) with the declared type.

Errors are :class:`~rt2_ros.errors.ConfigError` naming the node and the
parameter: ``safety_node parameter max_linear_speed: expected a finite number, got nan``.

Parameters are read once, at start-up; a node refuses later changes
(``ros2 param set``) with a message saying so, because a half-applied change
to a running control loop is worse than a restart.

Pure Python: rclpy is imported only inside :func:`declare_node_parameters`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import yaml

from rt2_ros.errors import ConfigError
from rt2_ros.policy.config import DECODINGS, PLAN_DECODINGS, PROFILES, PolicyConfig
from rt2_ros.safety.config import SafetyConfig
from rt2_ros.validation import expect_bool, expect_int, expect_number, expect_str

__all__ = ["ParamSpec", "POLICY_NODE_PARAMETERS", "SAFETY_NODE_PARAMETERS", "NODE_PARAMETERS",
           "PolicyNodeSettings", "SafetyNodeSettings", "policy_node_settings",
           "safety_node_settings", "node_settings", "parse_value", "declare_node_parameters",
           "IMAGE_TRANSPORTS", "GRIPPER_MESSAGES"]

IMAGE_TRANSPORTS = ("raw", "compressed")
GRIPPER_MESSAGES = ("float64", "float64_multi_array", "none")


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter.

    The type is the type of ``default`` (bool, int, float or str).
    ``low``/``high`` bound numbers (``low_inclusive=False`` for "> low");
    ``choices`` restricts strings.  ``target`` says where the value goes:
    ``policy`` (a PolicyConfig field), ``safety`` (a SafetyConfig field) or
    ``node`` (the node's own settings).  ``zero_means_none``: the dataclass
    field is optional and 0 stands for "not set" (ROS parameters cannot be null).
    """

    name: str
    default: bool | int | float | str
    description: str
    target: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    choices: tuple[str, ...] = ()
    zero_means_none: bool = False

    @property
    def type_name(self) -> str:
        """``bool``, ``int``, ``float`` or ``str``."""
        return type(self.default).__name__

    def constraint_text(self) -> str:
        """The range or choices in words (for descriptors, docs and errors)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        def number(value: float) -> str:
            return str(int(value)) if isinstance(self.default, int) else f"{value:g}"

        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.low_inclusive else '>'} {number(self.low)}")
        if self.high is not None:
            parts.append(f"<= {number(self.high)}")
        text = " and ".join(parts)
        if self.zero_means_none:
            text = (text + "; " if text else "") + "0 = not set"
        return text

    def validate(self, value: Any) -> Any:
        """Return ``value`` checked against type and range (ints accepted for floats), else ConfigError."""
        name = self.name
        if isinstance(self.default, bool):
            return expect_bool(name, value)
        if isinstance(self.default, int):
            return expect_int(name, value, low=None if self.low is None else int(self.low),
                              high=None if self.high is None else int(self.high))
        if isinstance(self.default, float):
            if self.zero_means_none and not isinstance(value, bool) and value == 0:
                return 0.0
            return expect_number(name, value, low=self.low, high=self.high,
                                 low_inclusive=self.low_inclusive)
        return expect_str(name, value, choices=self.choices or None)


def _policy_default(name: str) -> Any:
    return {f.name: f.default for f in fields(PolicyConfig)}[name]


def _safety_default(name: str) -> Any:
    value = {f.name: f.default for f in fields(SafetyConfig)}[name]
    return 0.0 if value is None else value


def _p(name: str, description: str, **kw: Any) -> ParamSpec:
    return ParamSpec(name, _policy_default(name), description, "policy", **kw)


def _s(name: str, description: str, **kw: Any) -> ParamSpec:
    return ParamSpec(name, _safety_default(name), description, "safety", **kw)


_CONTROL_RATE = "control_rate_hz"
_CONTROL_RATE_TEXT = ("policy steps per second; one step's delta is spread over 1/control_rate_hz "
                      "seconds. Must be the same for policy_node and safety_node.")

POLICY_NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    _p("backend", "policy backend: transformers (in-process model), remote (OpenAI-compatible "
                  "server), scripted (replays action strings) or expert (the simulator's privileged "
                  "scripted expert; needs sim_node)",
       choices=("transformers", "remote", "scripted", "expert")),
    _p("model", "transformers: checkpoint directory; remote: the model name the server knows"),
    _p("profile", "prompt + token scheme + default embodiment: rt2 or openvla", choices=PROFILES),
    _p("embodiment", "embodiment name (config/embodiments) or YAML path; '' = the profile's default"),
    _p("chain_of_thought", "the model writes 'Plan: ...' before the action (published on rt2/plan)"),
    _p("max_plan_tokens", "longest plan the model may write, in tokens", low=1, high=512),
    _p("decoding", "transformers: how each action token is chosen: greedy (argmax) or median "
                   "(continuous dims take the median bin of the model's distribution)",
       choices=DECODINGS),
    _p("plan_decoding", "transformers: how a planning checkpoint writes its plan: layout (the decoder "
                        "writes the plan kind's words, the model the object's name and the numbers), free "
                        "(the model writes all of it) or auto (layout where the checkpoint allows it)",
       choices=PLAN_DECODINGS),
    _p("device", "transformers: auto, cpu, cuda or cuda:N"),
    _p("dtype", "transformers: auto, float32, bfloat16 or float16",
       choices=("auto", "float32", "bfloat16", "float16")),
    _p("quantization", "transformers: none, 8bit or 4bit (CUDA + bitsandbytes)",
       choices=("none", "8bit", "4bit")),
    _p("attn_implementation", "transformers: attention kernel ('' = transformers' choice)"),
    _p("trust_remote_code", "transformers: run the checkpoint's own Python code (only for trusted "
                            "checkpoints)"),
    _p("unnorm_key", "openvla: which dataset's q01/q99 statistics un-normalise actions"),
    _p("server_url", "remote: base URL of the OpenAI-compatible server"),
    _p("api_key_env", "remote: name of the environment variable holding the bearer token "
                      "('' = no auth)"),
    _p("tokenizer", "remote: local checkpoint or tokenizer directory giving the action token ids "
                    "('' = model if it is a directory, else ask the server)"),
    _p("image_format", "remote: how images are sent: jpeg or png", choices=("jpeg", "png")),
    _p("jpeg_quality", "remote: JPEG quality", low=1, high=100),
    _p("connect_timeout_s", "remote: connection timeout (s)", low=0.0, low_inclusive=False),
    _p("read_timeout_s", "remote: response timeout (s)", low=0.0, low_inclusive=False),
    _p("retries", "remote: retries of a failed request", low=0, high=10),
    _p("scripted_actions", "scripted: file with one action string per line"),
    _p("scripted_loop", "scripted: start again at the end of the file (false: the backend fails "
                        "when the script is exhausted, which ends the episode)"),
    ParamSpec(_CONTROL_RATE, 3.0, _CONTROL_RATE_TEXT, "node", low=0.0, high=1000.0,
              low_inclusive=False),
    ParamSpec("torch_threads", 0, "transformers: torch intra-op threads of the model (0 = torch's choice, "
                                  "one per core); give each model process on a shared CPU its share",
              "node", low=0, high=1024),
    ParamSpec("max_image_age_s", 0.5, "images older than this (by header stamp, or by arrival "
                                      "when unstamped) are not acted on", "node",
              low=0.0, low_inclusive=False),
    ParamSpec("image_transport", "raw", "raw: sensor_msgs/Image on camera/image_raw; compressed: "
                                        "sensor_msgs/CompressedImage on camera/image_raw/compressed",
              "node", choices=IMAGE_TRANSPORTS),
    ParamSpec("command_frame", "base_link", "frame_id of published actions and markers (the frame "
                                            "the deltas are in; same as safety_node's)", "node"),
    ParamSpec("max_steps", 0, "step limit of an episode started on rt2/instruction (0 = none; a "
                              "goal brings its own)", "node", low=0, high=2**32 - 1),
    ParamSpec("timeout_s", 0.0, "time limit (s) of an episode started on rt2/instruction "
                                "(0 = none; a goal brings its own)", "node", low=0.0),
    ParamSpec("hand_state_topic", "", "end-effector pose (geometry_msgs/PoseStamped in command_frame, e.g. "
                                      "ee_pose): with each image the policy gets the hand's height (its z) and "
                                      "the last gripper command this node sent ('' = off; docs/simulation.md)",
              "node"),
    ParamSpec("publish_markers", True, "publish visualization markers on rt2/markers", "node"),
    ParamSpec("marker_scale", 5.0, "arrow length per metre of step delta in the markers", "node",
              low=0.0, low_inclusive=False),
    ParamSpec("diagnostics_period_s", 1.0, "seconds between /diagnostics messages", "node",
              low=0.01, high=60.0),
)

SAFETY_NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    _s("start_enabled", "command motion from start; false = zero twist until rt2/safety/enable"),
    _s("publish_rate_hz", "commands (twist, gripper) published per second, whatever arrives; "
                          ">= control_rate_hz", low=0.0, high=10000.0, low_inclusive=False),
    ParamSpec(_CONTROL_RATE, _safety_default(_CONTROL_RATE), _CONTROL_RATE_TEXT, "safety",
              low=0.0, high=1000.0, low_inclusive=False),
    _s("action_timeout_s", "watchdog: no action for this long -> zero twist (>= one control "
                           "period)", low=0.0, low_inclusive=False),
    _s("action_hold_s", "how long one action's twist is commanded (0 = one control period, "
                        "at most action_timeout_s)", low=0.0, low_inclusive=False,
       zero_means_none=True),
    _s("max_linear_speed", "per-axis linear speed limit (m/s)", low=0.0, low_inclusive=False),
    _s("max_angular_speed", "per-axis angular speed limit (rad/s)", low=0.0, low_inclusive=False),
    _s("max_linear_norm", "limit of the linear velocity's length (m/s; 0 = max_linear_speed)",
       low=0.0, low_inclusive=False, zero_means_none=True),
    _s("max_angular_norm", "limit of the angular velocity's length (rad/s; 0 = max_angular_speed)",
       low=0.0, low_inclusive=False, zero_means_none=True),
    _s("max_step_change", "largest change of a twist component between actions, as a fraction "
                          "of its per-axis limit (2 = no limit)", low=0.0, high=2.0,
       low_inclusive=False),
    _s("terminate_debounce", "consecutive terminate actions that close the episode", low=1,
       high=1000),
    _s("gripper_min", "lowest gripper command"),
    _s("gripper_max", "highest gripper command (> gripper_min)"),
    _s("command_frame", "frame_id of the published TwistStamped"),
    _s("event_quiet_s", "a repeating condition (clamping, rejected actions) is logged again only "
                        "after this long without it (s)", low=0.0, low_inclusive=False),
    ParamSpec("gripper_message", "float64", "gripper command type on gripper/command: float64 "
                                            "(std_msgs/Float64), float64_multi_array "
                                            "(std_msgs/Float64MultiArray, one value) or none",
              "node", choices=GRIPPER_MESSAGES),
    ParamSpec("diagnostics_period_s", 1.0, "seconds between /diagnostics messages", "node",
              low=0.01, high=60.0),
)

#: Parameters per node name (the names in the node list and the YAML file).
NODE_PARAMETERS: dict[str, tuple[ParamSpec, ...]] = {
    "policy_node": POLICY_NODE_PARAMETERS,
    "safety_node": SAFETY_NODE_PARAMETERS,
}


@dataclass(frozen=True)
class PolicyNodeSettings:
    """Everything policy_node reads from its parameters, validated."""

    policy: PolicyConfig
    control_rate_hz: float
    torch_threads: int
    max_image_age_s: float
    image_transport: str
    command_frame: str
    max_steps: int
    timeout_s: float
    hand_state_topic: str
    publish_markers: bool
    marker_scale: float
    diagnostics_period_s: float

    @property
    def control_period_s(self) -> float:
        """Shortest time between two policy steps."""
        return 1.0 / self.control_rate_hz


@dataclass(frozen=True)
class SafetyNodeSettings:
    """Everything safety_node reads from its parameters, validated."""

    safety: SafetyConfig
    gripper_message: str
    diagnostics_period_s: float


def _checked_values(node: str, specs: tuple[ParamSpec, ...], values: Mapping[str, Any]
                    ) -> dict[str, Any]:
    known = {spec.name: spec for spec in specs}
    for key in values:
        if key not in known:
            raise ConfigError(f"{node}: unknown parameter {key!r} (parameters: "
                              f"{', '.join(sorted(known))})")
    checked = {}
    for spec in specs:
        value = values.get(spec.name, spec.default)
        try:
            checked[spec.name] = spec.validate(value)
        except ConfigError as exc:
            raise ConfigError(f"{node} parameter {exc}") from None
    return checked


def _build(node: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return factory(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{node} parameter {exc}") from None


def _split(specs: tuple[ParamSpec, ...], values: dict[str, Any], target: str) -> dict[str, Any]:
    out = {}
    for spec in specs:
        if spec.target == target:
            value = values[spec.name]
            out[spec.name] = None if spec.zero_means_none and value == 0 else value
    return out


def policy_node_settings(values: Mapping[str, Any], node: str = "policy_node") -> PolicyNodeSettings:
    """Validate policy_node's parameters (missing ones take their defaults)."""
    checked = _checked_values(node, POLICY_NODE_PARAMETERS, values)
    policy = _build(node, PolicyConfig, _split(POLICY_NODE_PARAMETERS, checked, "policy"))
    return PolicyNodeSettings(policy=policy, **_split(POLICY_NODE_PARAMETERS, checked, "node"))


def safety_node_settings(values: Mapping[str, Any], node: str = "safety_node") -> SafetyNodeSettings:
    """Validate safety_node's parameters (missing ones take their defaults)."""
    checked = _checked_values(node, SAFETY_NODE_PARAMETERS, values)
    safety = _build(node, SafetyConfig, _split(SAFETY_NODE_PARAMETERS, checked, "safety"))
    return SafetyNodeSettings(safety=safety, **_split(SAFETY_NODE_PARAMETERS, checked, "node"))


def node_settings(node: str, values: Mapping[str, Any]) -> Any:
    """Validated settings of the node called ``node`` (``policy_node`` or ``safety_node``)."""
    if node == "policy_node":
        return policy_node_settings(values, node)
    if node == "safety_node":
        return safety_node_settings(values, node)
    raise ConfigError(f"unknown node {node!r} (nodes: {', '.join(NODE_PARAMETERS)})")


def parse_value(spec: ParamSpec, text: str) -> Any:
    """Parse a command-line value (``--set``, launch arguments) as the parameter's type.

    Strings are taken as they are; other types are read as YAML scalars
    (``true``, ``3``, ``0.5``, ``.nan``) and validated, so ``3`` is fine for a
    float parameter and ``abc`` for a number is a ConfigError naming the parameter.
    """
    if isinstance(spec.default, str):
        return spec.validate(text)
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and isinstance(spec.default, float):
        try:  # "nan", "inf", "1e-3" as Python spells them: refused or accepted by validate()
            value = float(value)
        except ValueError:
            pass
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return spec.validate(value)


def _descriptor(spec: ParamSpec) -> Any:
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    descriptor = ParameterDescriptor(description=spec.description,
                                     additional_constraints=spec.constraint_text(),
                                     type=types[type(spec.default)])
    # ROS ranges are inclusive and unbounded sides do not exist: the open or
    # missing side gets the widest value and the exact rule stays in validate().
    if isinstance(spec.default, float) and (spec.low is not None or spec.high is not None) \
            and not spec.zero_means_none:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.low) if spec.low is not None else -math.inf,
            to_value=float(spec.high) if spec.high is not None else math.inf)]
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool) \
            and (spec.low is not None or spec.high is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.low) if spec.low is not None else -2**63,
            to_value=int(spec.high) if spec.high is not None else 2**63 - 1, step=1)]
    return descriptor


def declare_node_parameters(node: Any, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare ``specs`` on an rclpy node and return ``{name: value}`` (overrides applied).

    A value the descriptor refuses (wrong type, out of range, NaN) becomes a
    ConfigError from :meth:`ParamSpec.validate` naming the node and the parameter.
    """
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    node_name = node.get_name()
    values = {}
    for spec in specs:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default,
                                                       _descriptor(spec)).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as refused:
            # Read the refused value through an untyped declaration to say what was wrong.
            raw = node.declare_parameter(spec.name, spec.default,
                                         ParameterDescriptor(dynamic_typing=True)).value
            try:
                spec.validate(raw)
            except ConfigError as exc:
                raise ConfigError(f"{node_name} parameter {exc}") from None
            if isinstance(spec.default, float) and isinstance(raw, int) and not isinstance(raw, bool):
                raise ConfigError(f"{node_name} parameter {spec.name}: expected a floating-point "
                                  f"number (write {raw}.0), got {raw!r}") from None
            raise ConfigError(f"{node_name} parameter {spec.name}: {refused}") from None
    return values


def refuse_parameter_changes(node: Any) -> None:
    """Make ``ros2 param set`` on ``node`` fail with a message saying to restart it.

    The nodes map their parameters into validated dataclasses once at start-up;
    accepting a change that would not take effect would mislead the operator.
    """
    from rcl_interfaces.msg import SetParametersResult

    def refuse(params: Any) -> SetParametersResult:
        names = ", ".join(p.name for p in params)
        return SetParametersResult(
            successful=False,
            reason=f"{node.get_name()} reads its parameters once at start-up; restart it to "
                   f"change {names}")

    node.add_on_set_parameters_callback(refuse)
