"""The one definition of the stack's nodes, read by ``launch/rt2.launch.py`` and ``rt2-ros up``.

:data:`STACK_ARGUMENTS` are the launch arguments (``ros2 launch rt2_ros
rt2.launch.py camera_topic:=/wrist/image``) and, spelled with dashes, the
flags of ``rt2-ros up`` (``--camera-topic /wrist/image``).
:func:`stack_nodes` turns their values into :class:`NodeSpec` s - package,
executable, node name, parameter files and overrides, remappings - after
validating the parameter file and every override with
:mod:`rt2_ros.nodes.parameters`, so a typo or a NaN fails before any process
starts, with the node and parameter named.

The parameter file is an ordinary ROS 2 parameter file that rcl reads
itself.  rcl refuses YAML anchors and aliases ("Will not support
aliasing"), so values both nodes share (``control_rate_hz``,
``command_frame``) are written once in the ``/**`` section, which applies to
every node; :func:`stack_nodes` checks that both nodes end up with the same
``control_rate_hz``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from rt2_ros.errors import ConfigError
from rt2_ros.nodes.parameters import NODE_PARAMETERS, node_settings, parse_value
from rt2_ros.paths import config_dir, share_dir

__all__ = ["PACKAGE", "NodeSpec", "StackArgument", "STACK_ARGUMENTS", "default_config_file",
           "load_parameter_file", "stack_nodes", "apply_dds_defaults", "WILDCARD"]

PACKAGE = "rt2_ros"
WILDCARD = "/**"

# The topic names the nodes use (relative, so a namespace applies to all).
CAMERA_TOPIC = "camera/image_raw"
COMPRESSED_SUFFIX = "/compressed"
TWIST_TOPIC = "servo_node/delta_twist_cmds"
GRIPPER_TOPIC = "gripper/command"
INSTRUCTION_TOPIC = "rt2/instruction"
ACTION_TOPIC = "rt2/action"
PLAN_TOPIC = "rt2/plan"
MARKERS_TOPIC = "rt2/markers"
EXECUTE_ACTION = "rt2/execute"
ENABLE_SERVICE = "rt2/safety/enable"
DIAGNOSTICS_TOPIC = "/diagnostics"


@dataclass(frozen=True)
class NodeSpec:
    """One process of the stack, as ``launch_ros.actions.Node`` takes it.

    ``parameters``: parameter file paths and override dicts, later entries
    winning; ``remappings``: ``(from, to)`` pairs; ``module``: what
    ``rt2-ros up`` runs with ``python -m`` ("" for a non-Python executable,
    which then has to be on PATH).
    """

    name: str
    executable: str
    package: str = PACKAGE
    module: str = ""
    parameters: tuple[Any, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackArgument:
    """A launch argument / ``rt2-ros up`` flag.

    ``kind``: ``config`` (the parameter file), ``param`` (overrides
    ``param`` of each node in ``nodes``; "" keeps the file's value),
    ``remap`` (remaps ``topic`` of each node in ``nodes``; "" keeps the
    default name) or ``switch`` (``true``/``false``).
    """

    name: str
    kind: str
    description: str
    default: str = ""
    nodes: tuple[str, ...] = ()
    param: str = ""
    topic: str = ""

    @property
    def flag(self) -> str:
        """The ``rt2-ros up`` flag: ``--camera-topic`` for ``camera_topic``."""
        return "--" + self.name.replace("_", "-")


def default_config_file() -> Path:
    """The bundled parameter file (``config/rt2.yaml``)."""
    return config_dir() / "rt2.yaml"


def default_rviz_file() -> Path:
    """The bundled RViz configuration (``rviz/rt2.rviz``)."""
    return share_dir() / "rviz" / "rt2.rviz"


_POLICY = ("policy_node",)
_SAFETY = ("safety_node",)

STACK_ARGUMENTS: tuple[StackArgument, ...] = (
    StackArgument("config", "config", "ROS parameter file of both nodes ('' = the bundled "
                                      "config/rt2.yaml)"),
    StackArgument("backend", "param", "policy backend: transformers, remote, scripted or expert",
                  nodes=_POLICY, param="backend"),
    StackArgument("model", "param", "checkpoint directory (transformers) or served model name "
                                    "(remote)", nodes=_POLICY, param="model"),
    StackArgument("profile", "param", "rt2 or openvla", nodes=_POLICY, param="profile"),
    StackArgument("embodiment", "param", "embodiment name or YAML path", nodes=_POLICY,
                  param="embodiment"),
    StackArgument("server_url", "param", "remote backend: server base URL", nodes=_POLICY,
                  param="server_url"),
    StackArgument("scripted_actions", "param", "scripted backend: file of action strings",
                  nodes=_POLICY, param="scripted_actions"),
    StackArgument("start_enabled", "param", "safety starts enabled (true/false)", nodes=_SAFETY,
                  param="start_enabled"),
    StackArgument("camera_topic", "remap", "camera image topic (sensor_msgs/Image; with "
                                           "image_transport compressed, this + /compressed)",
                  nodes=_POLICY, topic=CAMERA_TOPIC),
    StackArgument("twist_topic", "remap", "arm controller's twist input (geometry_msgs/"
                                          "TwistStamped), e.g. MoveIt Servo's",
                  nodes=_SAFETY, topic=TWIST_TOPIC),
    StackArgument("gripper_topic", "remap", "gripper controller's command topic", nodes=_SAFETY,
                  topic=GRIPPER_TOPIC),
    StackArgument("rviz", "switch", "also start RViz with rviz/rt2.rviz (true/false)",
                  default="false"),
)


def _reject_aliases(text: str, path: Path) -> None:
    for token in yaml.scan(text):
        if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
            mark = token.start_mark
            raise ConfigError(
                f"{path}: line {mark.line + 1}: YAML anchors and aliases (&name, *name) cannot be "
                f"read by ROS (rcl); put values shared by both nodes in the '{WILDCARD}' section")


def load_parameter_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a ROS parameter file into ``{section: {parameter: value}}``.

    Sections are node names (a leading ``/`` is dropped) or ``/**``.  Raises
    ConfigError for an unreadable file, a layout rcl would not accept, an
    unknown node, or a parameter no node of the stack declares.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {str(file)!r}: cannot read the file ({exc})") from None
    try:
        _reject_aliases(text, file)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {str(file)!r}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(file)!r}: expected a mapping of node name to "
                          f"{{ros__parameters: ...}}, got {type(data).__name__}")
    sections: dict[str, dict[str, Any]] = {}
    for key, body in data.items():
        section = key if key == WILDCARD else str(key).lstrip("/")
        if section != WILDCARD and section not in NODE_PARAMETERS:
            raise ConfigError(f"config {str(file)!r}: unknown node {key!r} (nodes: "
                              f"{', '.join(NODE_PARAMETERS)}, or {WILDCARD} for all)")
        if not isinstance(body, dict) or set(body) != {"ros__parameters"} \
                or not isinstance(body["ros__parameters"], dict):
            raise ConfigError(f"config {str(file)!r}: {key}: expected exactly one key "
                              f"'ros__parameters' holding a mapping")
        params = body["ros__parameters"]
        for name in params:
            owners = [n for n, specs in NODE_PARAMETERS.items()
                      if any(s.name == name for s in specs)]
            if section == WILDCARD and not owners or section != WILDCARD and section not in owners:
                where = "any node" if section == WILDCARD else section
                raise ConfigError(f"config {str(file)!r}: {key}: unknown parameter {name!r} for "
                                  f"{where}")
        sections.setdefault(section, {}).update(params)
    return sections


def effective_parameters(sections: Mapping[str, Mapping[str, Any]], node: str,
                         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``node`` ends up with: the ``/**`` section, then its own section, then ``overrides``."""
    names = {spec.name for spec in NODE_PARAMETERS[node]}
    values = {k: v for k, v in sections.get(WILDCARD, {}).items() if k in names}
    values.update(sections.get(node, {}))
    values.update(overrides or {})
    return values


def _truthy(arg: StackArgument, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{arg.name}: expected true or false, got {text!r}")


def stack_nodes(arguments: Mapping[str, str] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[NodeSpec]:
    """The nodes to start for these launch-argument values (strings; missing or "" = default).

    ``overrides``: ``{node: {parameter: value}}`` applied after the file and
    the arguments (``rt2-ros up --set``).  The parameter file and all values
    are validated; both nodes must agree on ``control_rate_hz``.
    """
    arguments = dict(arguments or {})
    known = {arg.name: arg for arg in STACK_ARGUMENTS}
    for name in arguments:
        if name not in known:
            raise ConfigError(f"unknown argument {name!r} (arguments: {', '.join(known)})")
    config = Path(arguments.get("config") or default_config_file()).expanduser().resolve()
    sections = load_parameter_file(config)

    node_overrides: dict[str, dict[str, Any]] = {node: {} for node in NODE_PARAMETERS}
    remaps: dict[str, list[tuple[str, str]]] = {node: [] for node in NODE_PARAMETERS}
    for arg in STACK_ARGUMENTS:
        text = arguments.get(arg.name, arg.default)
        if arg.kind == "param" and text != "":
            for node in arg.nodes:
                spec = next(s for s in NODE_PARAMETERS[node] if s.name == arg.param)
                try:
                    node_overrides[node][arg.param] = parse_value(spec, text)
                except ConfigError as exc:
                    raise ConfigError(f"argument {arg.name}: {exc}") from None
        elif arg.kind == "remap" and text != "":
            if not text.strip() or any(c.isspace() for c in text):
                raise ConfigError(f"argument {arg.name}: expected a topic name, got {text!r}")
            for node in arg.nodes:
                remaps[node].append((arg.topic, text))
                if arg.topic == CAMERA_TOPIC:
                    remaps[node].append((arg.topic + COMPRESSED_SUFFIX, text + COMPRESSED_SUFFIX))
    for node, values in (overrides or {}).items():
        if node not in NODE_PARAMETERS:
            raise ConfigError(f"unknown node {node!r} (nodes: {', '.join(NODE_PARAMETERS)})")
        node_overrides[node].update(values)

    settings = {node: node_settings(node, effective_parameters(sections, node, node_overrides[node]))
                for node in NODE_PARAMETERS}
    policy_rate = settings["policy_node"].control_rate_hz
    safety_rate = settings["safety_node"].safety.control_rate_hz
    if policy_rate != safety_rate:
        raise ConfigError(f"control_rate_hz: policy_node has {policy_rate:g}, safety_node "
                          f"{safety_rate:g}; both nodes must use the same value (set it in the "
                          f"'{WILDCARD}' section)")

    policy = settings["policy_node"].policy
    if policy.backend == "transformers" and not policy.model:
        raise ConfigError("policy_node parameter model: the transformers backend needs a "
                          "checkpoint directory (model:=DIR, --model DIR), got ''")
    if policy.backend == "scripted" and not policy.scripted_actions:
        raise ConfigError("policy_node parameter scripted_actions: the scripted backend needs a "
                          "file of action strings (scripted_actions:=FILE, --scripted-actions "
                          "FILE), got ''")

    nodes = []
    for node in NODE_PARAMETERS:
        parameters: list[Any] = [str(config)]
        if node_overrides[node]:
            parameters.append(dict(node_overrides[node]))
        nodes.append(NodeSpec(name=node, executable=node, module=f"rt2_ros.nodes.{node}",
                              parameters=tuple(parameters), remappings=tuple(remaps[node])))
    if _truthy(known["rviz"], arguments.get("rviz", known["rviz"].default)):
        nodes.append(NodeSpec(name="rviz2", executable="rviz2", package="rviz2",
                              arguments=("-d", str(default_rviz_file()))))
    return nodes


def apply_dds_defaults(env: dict[str, str]) -> str | None:
    """Point ``FASTDDS_DEFAULT_PROFILES_FILE`` at the project's loopback profile if it is unset.

    Returns a line for the log when it did, else None.  A value already set
    (even empty) is the user's choice and is kept.  ROS_AUTOMATIC_DISCOVERY_RANGE
    is never set: LOCALHOST makes rmw_fastrtps replace the profile's transports
    (DESIGN section 8).
    """
    if "FASTDDS_DEFAULT_PROFILES_FILE" in env:
        return None
    profile = config_dir() / "fastdds_localhost.xml"
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return (f"FASTDDS_DEFAULT_PROFILES_FILE was unset: using {profile} (shared memory + loopback "
            f"UDP; set the variable to use your own DDS profile)")
