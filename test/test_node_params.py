"""ROS parameters: one table, mapped once into validated settings, errors naming the parameter."""
from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

import pytest

from rt2_ros.errors import ConfigError
from rt2_ros.nodes.parameters import (NODE_PARAMETERS, POLICY_NODE_PARAMETERS,
                                      SAFETY_NODE_PARAMETERS, parse_value, policy_node_settings,
                                      safety_node_settings)
from rt2_ros.nodes.stack import (WILDCARD, default_config_file, effective_parameters,
                                 load_parameter_file, stack_nodes)
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.safety.config import SafetyConfig

from ros_harness import requires_ros, ros_domain  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent
SPEC = {node: {s.name: s for s in specs} for node, specs in NODE_PARAMETERS.items()}


def test_every_config_field_is_a_parameter():
    policy = {s.name for s in POLICY_NODE_PARAMETERS if s.target == "policy"}
    safety = {s.name for s in SAFETY_NODE_PARAMETERS if s.target == "safety"}
    assert policy == {f.name for f in fields(PolicyConfig)}
    assert safety == {f.name for f in fields(SafetyConfig)}
    # DESIGN section 7's names.
    for name in ("backend", "model", "profile", "embodiment", "server_url", "api_key_env",
                 "scripted_actions", "control_rate_hz", "max_image_age_s"):
        assert name in SPEC["policy_node"]
    for name in ("start_enabled", "publish_rate_hz", "action_timeout_s", "max_linear_speed",
                 "max_angular_speed", "max_step_change", "terminate_debounce", "control_rate_hz"):
        assert name in SPEC["safety_node"]
    for specs in NODE_PARAMETERS.values():
        for spec in specs:
            assert spec.description and spec.type_name in ("bool", "int", "float", "str")


def test_defaults_map_onto_the_dataclass_defaults():
    policy = policy_node_settings({})
    assert policy.policy == PolicyConfig()
    assert policy.control_rate_hz == 3.0 and policy.image_transport == "raw"
    safety = safety_node_settings({})
    assert safety.safety == SafetyConfig()
    assert safety.safety.action_hold_s == pytest.approx(1 / 3)  # 0 = "one control period"
    assert safety.gripper_message == "float64"


def test_values_reach_the_dataclasses():
    settings = safety_node_settings({"control_rate_hz": 5, "publish_rate_hz": 50.0,
                                     "max_linear_norm": 0.05, "action_hold_s": 0.0,
                                     "start_enabled": True, "gripper_message": "none"})
    cfg = settings.safety
    assert cfg.control_rate_hz == 5.0 and isinstance(cfg.control_rate_hz, float)
    assert cfg.max_linear_norm == 0.05 and cfg.action_hold_s == pytest.approx(0.2)
    assert cfg.start_enabled and settings.gripper_message == "none"
    policy = policy_node_settings({"backend": "scripted", "scripted_actions": "a.txt",
                                   "control_rate_hz": 10.0, "max_steps": 4})
    assert policy.policy.backend == "scripted" and policy.policy.scripted_actions == "a.txt"
    assert policy.control_period_s == pytest.approx(0.1) and policy.max_steps == 4
    assert policy.torch_threads == 0 and policy_node_settings({"torch_threads": 2}).torch_threads == 2


@pytest.mark.parametrize("node, values, words", [
    ("safety_node", {"max_linear_speed": math.nan},
     ["safety_node parameter max_linear_speed", "finite", "nan"]),
    ("safety_node", {"max_angular_speed": math.inf}, ["max_angular_speed", "finite"]),
    ("safety_node", {"max_linear_speed": -0.1}, ["max_linear_speed", "> 0", "-0.1"]),
    ("safety_node", {"max_step_change": 2.5}, ["max_step_change", "<= 2", "2.5"]),
    ("safety_node", {"terminate_debounce": 0}, ["terminate_debounce", ">= 1"]),
    ("policy_node", {"torch_threads": -1}, ["policy_node parameter torch_threads", ">= 0", "-1"]),
    ("safety_node", {"terminate_debounce": 1.5}, ["terminate_debounce", "integer"]),
    ("safety_node", {"start_enabled": "yes"}, ["start_enabled", "true or false", "'yes'"]),
    ("safety_node", {"publish_rate_hz": 2.0}, ["publish_rate_hz", ">= control_rate_hz"]),
    ("safety_node", {"action_timeout_s": 0.1}, ["action_timeout_s", "control period"]),
    ("safety_node", {"gripper_max": -1.0}, ["gripper_max", "> gripper_min"]),
    ("safety_node", {"gripper_message": "int32"}, ["gripper_message", "float64_multi_array"]),
    ("safety_node", {"max_linear_sped": 0.1}, ["unknown parameter 'max_linear_sped'"]),
    ("policy_node", {"control_rate_hz": math.nan}, ["policy_node parameter control_rate_hz",
                                                    "finite"]),
    ("policy_node", {"control_rate_hz": 0.0}, ["control_rate_hz", "> 0"]),
    ("policy_node", {"control_rate_hz": 5000.0}, ["control_rate_hz", "<= 1000"]),
    ("policy_node", {"max_image_age_s": -1.0}, ["max_image_age_s", "> 0"]),
    ("policy_node", {"backend": "magic"}, ["backend", "transformers, remote, scripted", "'magic'"]),
    ("policy_node", {"backend": "teleop"}, ["backend", "'teleop'"]),
    ("policy_node", {"image_transport": "theora"}, ["image_transport", "raw, compressed"]),
    ("policy_node", {"jpeg_quality": 101}, ["jpeg_quality", "<= 100"]),
    ("policy_node", {"max_steps": -1}, ["max_steps", ">= 0"]),
    ("policy_node", {"model": 3}, ["model", "string"]),
])
def test_bad_values_name_the_node_and_parameter(node, values, words):
    build = policy_node_settings if node == "policy_node" else safety_node_settings
    with pytest.raises(ConfigError) as info:
        build(values)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("node, name, text, expected", [
    ("safety_node", "max_linear_speed", "3", 3.0),
    ("safety_node", "max_linear_speed", "0.25", 0.25),
    ("safety_node", "start_enabled", "true", True),
    ("safety_node", "terminate_debounce", "4", 4),
    ("policy_node", "model", "123", "123"),          # strings stay strings
    ("policy_node", "embodiment", "", ""),
    ("policy_node", "backend", "scripted", "scripted"),
])
def test_command_line_values_take_the_declared_type(node, name, text, expected):
    value = parse_value(SPEC[node][name], text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("name, text, words", [
    ("max_linear_speed", "nan", ["max_linear_speed", "finite", "nan"]),
    ("max_linear_speed", ".inf", ["finite"]),
    ("max_linear_speed", "fast", ["expected a number", "'fast'"]),
    ("start_enabled", "maybe", ["true or false"]),
    ("terminate_debounce", "2.5", ["integer"]),
])
def test_bad_command_line_values_are_refused(name, text, words):
    with pytest.raises(ConfigError) as info:
        parse_value(SPEC["safety_node"][name], text)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------- config/rt2.yaml


def test_bundled_config_lists_every_parameter_with_a_comment():
    path = default_config_file()
    sections = load_parameter_file(path)
    lines = path.read_text().splitlines()
    listed: dict[str, set[str]] = {}
    for section, values in sections.items():
        listed[section] = set(values)
        for name in values:
            index = next(i for i, line in enumerate(lines) if re.match(rf"\s+{name}:", line))
            above = lines[index - 1].strip()
            # Each parameter has a comment right above it, or shares the one of its group.
            assert above.startswith("#") or re.match(r"\w+:", above), name
    assert listed[WILDCARD] == {"control_rate_hz", "command_frame"}
    for node, specs in NODE_PARAMETERS.items():
        given = listed[node] | {n for n in listed[WILDCARD] if n in SPEC[node]}
        assert given == {s.name for s in specs}, node
    # Both nodes see the one control rate.
    policy = policy_node_settings(effective_parameters(sections, "policy_node"))
    safety = safety_node_settings(effective_parameters(sections, "safety_node"))
    assert policy.control_rate_hz == safety.safety.control_rate_hz
    assert policy.command_frame == safety.safety.command_frame


@pytest.mark.parametrize("text, words", [
    ("/**:\n  ros__parameters:\n    control_rate_hz: &rate 3.0\nsafety_node:\n  ros__parameters:\n"
     "    publish_rate_hz: *rate\n", ["line 3", "anchors and aliases", "/**"]),
    ("arm_node:\n  ros__parameters:\n    x: 1\n", ["unknown node 'arm_node'"]),
    ("safety_node:\n  ros__parameters:\n    max_linear_sped: 0.1\n",
     ["unknown parameter 'max_linear_sped'", "safety_node"]),
    ("/**:\n  ros__parameters:\n    speed: 0.1\n", ["unknown parameter 'speed'", "any node"]),
    ("policy_node:\n  backend: scripted\n", ["ros__parameters"]),
    ("- 1\n- 2\n", ["expected a mapping"]),
    ("policy_node: [\n", ["not valid YAML"]),
])
def test_bad_parameter_files_are_refused(tmp_path, text, words):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_parameter_file(path)
    for word in words:
        assert word in str(info.value)


def test_stack_validates_before_anything_starts(tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("0 128 128 128 128 128 128 0\n")
    base = {"backend": "scripted", "scripted_actions": str(script)}
    with pytest.raises(ConfigError, match="policy_node parameter model: the transformers backend"):
        stack_nodes({"backend": "transformers"})
    with pytest.raises(ConfigError, match="scripted_actions: the scripted backend needs"):
        stack_nodes({"backend": "scripted"})
    with pytest.raises(ConfigError, match="control_rate_hz: policy_node has 5, safety_node 3"):
        stack_nodes(base, {"policy_node": {"control_rate_hz": 5.0}})
    with pytest.raises(ConfigError, match="argument start_enabled: start_enabled: expected true"):
        stack_nodes({**base, "start_enabled": "perhaps"})
    with pytest.raises(ConfigError, match="unknown argument 'camera'"):
        stack_nodes({**base, "camera": "/x"})
    with pytest.raises(ConfigError, match="argument camera_topic: expected a topic name"):
        stack_nodes({**base, "camera_topic": "a b"})
    bad = tmp_path / "nan.yaml"
    bad.write_text("safety_node:\n  ros__parameters:\n    max_linear_speed: .nan\n")
    with pytest.raises(ConfigError, match="safety_node parameter max_linear_speed: expected a "
                                          "finite number, got nan"):
        stack_nodes({**base, "config": str(bad)})


def test_up_set_flags(tmp_path):
    from rt2_ros.cli.up_cmd import parse_overrides

    assert parse_overrides(["safety_node.max_linear_speed=0.05", "control_rate_hz=5",
                            "policy_node.model=/m"]) == {
        "safety_node": {"max_linear_speed": 0.05, "control_rate_hz": 5.0},
        "policy_node": {"control_rate_hz": 5.0, "model": "/m"}}
    for item, words in [("max_linear_speed", "NODE.PARAM=VALUE"),
                        ("arm.speed=1", "unknown node 'arm'"),
                        ("speed=1", "no node has a parameter 'speed'"),
                        ("policy_node.publish_rate_hz=1", "policy_node has no parameter"),
                        ("safety_node.max_linear_speed=nan", "finite")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_overrides([item])


# ------------------------------------------------------- declared on a real node


def _node_with_params(tmp_path, name, yaml_text):
    import rclpy
    from rclpy.node import Node

    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    context = rclpy.Context()
    rclpy.init(args=["test", "--ros-args", "--params-file", str(path)], context=context)
    return context, Node(name, context=context)


@requires_ros
def test_rcl_reads_the_bundled_file_and_descriptors_carry_the_table(tmp_path, ros_domain):  # noqa: F811
    import rclpy
    from rclpy.node import Node

    from rt2_ros.nodes.parameters import declare_node_parameters

    sections = load_parameter_file(default_config_file())
    context = rclpy.Context()
    rclpy.init(args=["test", "--ros-args", "--params-file", str(default_config_file())],
               context=context)
    try:
        for node_name, specs in NODE_PARAMETERS.items():
            node = Node(node_name, context=context)
            values = declare_node_parameters(node, specs)
            assert values == {**{s.name: s.default for s in specs},
                              **effective_parameters(sections, node_name)}
            speed = "control_rate_hz"
            descriptor = node.describe_parameter(speed)
            assert descriptor.description == SPEC[node_name][speed].description
            assert descriptor.floating_point_range[0].to_value == 1000.0
            assert "> 0" in descriptor.additional_constraints
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@requires_ros
@pytest.mark.parametrize("text, words", [
    ("max_linear_speed: .nan", ["safety_node parameter max_linear_speed", "finite", "nan"]),
    ("max_step_change: 7.0", ["safety_node parameter max_step_change", "<= 2", "7.0"]),
    ("max_linear_speed: 1", ["max_linear_speed", "floating-point", "write 1.0"]),
    ("start_enabled: 1", ["start_enabled", "true or false"]),
    ("terminate_debounce: 0", ["terminate_debounce", ">= 1"]),
])
def test_a_node_refuses_bad_parameter_files_naming_the_parameter(tmp_path, ros_domain, text,  # noqa: F811
                                                                 words):
    import rclpy

    from rt2_ros.nodes.parameters import declare_node_parameters

    context, node = _node_with_params(tmp_path, "safety_node",
                                      f"safety_node:\n  ros__parameters:\n    {text}\n")
    try:
        with pytest.raises(ConfigError) as info:
            declare_node_parameters(node, SAFETY_NODE_PARAMETERS)
        for word in words:
            assert word in str(info.value)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


@requires_ros
def test_parameters_cannot_change_while_running(tmp_path, ros_domain):  # noqa: F811
    import rclpy
    from rclpy.parameter import Parameter

    from rt2_ros.nodes.safety_node import SafetyNode

    context = rclpy.Context()
    rclpy.init(args=["test"], context=context)
    node = SafetyNode(context=context)
    try:
        result = node.set_parameters([Parameter("max_linear_speed", value=1.0)])[0]
        assert not result.successful
        assert "restart it to change max_linear_speed" in result.reason
        assert node.settings.safety.max_linear_speed == 0.1
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
