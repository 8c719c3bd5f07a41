"""launch/rt2.launch.py builds the nodes of the shared node list - the ones `rt2-ros up` starts.

`launch` and `launch_ros` have no PyPI wheels, so the launch file is loaded
with small recording stand-ins of the classes it uses injected into
sys.modules; where the real launch_ros is installed, a second test runs the
file through it.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from rt2_ros.cli import main as cli_main
from rt2_ros.errors import ConfigError
from rt2_ros.nodes.stack import STACK_ARGUMENTS, default_config_file

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "rt2.launch.py"


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context[self.args[0]]


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Recorded,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorded,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorded,), {})
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = _LaunchConfiguration
    launch.actions, launch.substitutions = actions, substitutions
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorded,), {})
    launch_ros.actions = ros_actions
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
            "launch_ros": launch_ros, "launch_ros.actions": ros_actions}


@pytest.fixture
def fake_launch(monkeypatch):
    for name, module in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("rt2_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(fake_launch, values):
    description = fake_launch.generate_launch_description()
    entities = description.args[0]
    declared = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    context = {arg.args[0]: arg.kwargs["default_value"] for arg in declared}
    context.update(values)
    return declared, opaque[0].kwargs["function"](context)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "script.txt"
    path.write_text("0 153 128 128 128 128 128 255\n")
    return str(path)


def test_launch_arguments_are_the_stack_arguments(fake_launch):
    declared, _ = _launch(fake_launch, {"backend": "scripted", "scripted_actions": "x"})
    assert [(d.args[0], d.kwargs["default_value"], d.kwargs["description"]) for d in declared] == \
        [(a.name, a.default, a.description) for a in STACK_ARGUMENTS]
    names = {d.args[0] for d in declared}
    assert {"model", "backend", "server_url", "embodiment", "camera_topic", "twist_topic",
            "gripper_topic", "config"} <= names


def test_launch_file_and_up_start_the_same_nodes(fake_launch, script, capsys):
    values = {"backend": "scripted", "scripted_actions": script, "start_enabled": "true",
              "camera_topic": "/wrist/image", "twist_topic": "/arm/twist",
              "gripper_topic": "/arm/gripper"}
    _, nodes = _launch(fake_launch, values)
    launched = {n.kwargs["name"]: n.kwargs for n in nodes}
    config = str(default_config_file().resolve())
    assert launched == {
        "policy_node": {
            "package": "rt2_ros", "executable": "policy_node", "name": "policy_node",
            "parameters": [config, {"backend": "scripted", "scripted_actions": script}],
            "remappings": [("camera/image_raw", "/wrist/image"),
                           ("camera/image_raw/compressed", "/wrist/image/compressed")],
            "arguments": [], "output": "screen"},
        "safety_node": {
            "package": "rt2_ros", "executable": "safety_node", "name": "safety_node",
            "parameters": [config, {"start_enabled": True}],
            "remappings": [("servo_node/delta_twist_cmds", "/arm/twist"),
                           ("gripper/command", "/arm/gripper")],
            "arguments": [], "output": "screen"},
    }

    assert cli_main(["up", "--dry-run", "--backend", "scripted", "--scripted-actions", script,
                     "--start-enabled", "true", "--camera-topic", "/wrist/image",
                     "--twist-topic", "/arm/twist", "--gripper-topic", "/arm/gripper"]) == 0
    planned = json.loads(capsys.readouterr().out)["nodes"]
    assert [p["name"] for p in planned] == list(launched)
    for plan in planned:
        node = launched[plan["name"]]
        assert plan["package"] == node["package"] and plan["executable"] == node["executable"]
        assert plan["parameters"] == node["parameters"]
        assert [tuple(r) for r in plan["remappings"]] == node["remappings"]
        command = plan["command"]
        assert command[1:3] == ["-m", f"rt2_ros.nodes.{plan['name']}"]
        ros_args = command[command.index("--ros-args") + 1:]
        files = [ros_args[i + 1] for i, a in enumerate(ros_args) if a == "--params-file"]
        assert files[0] == config and len(files) == len(node["parameters"])
        remaps = [ros_args[i + 1] for i, a in enumerate(ros_args) if a == "-r"]
        assert remaps == [f"__node:={plan['name']}"] + [f"{a}:={b}" for a, b in node["remappings"]]


def test_empty_arguments_keep_the_parameter_file(fake_launch, tmp_path, script):
    config = tmp_path / "mine.yaml"
    config.write_text(f"policy_node:\n  ros__parameters:\n    backend: scripted\n"
                      f"    scripted_actions: {script}\n")
    _, nodes = _launch(fake_launch, {"config": str(config)})
    assert [n.kwargs["parameters"] for n in nodes] == [[str(config)], [str(config)]]
    assert [n.kwargs["remappings"] for n in nodes] == [[], []]


def test_rviz_argument_adds_rviz(fake_launch, script):
    _, nodes = _launch(fake_launch, {"backend": "scripted", "scripted_actions": script,
                                     "rviz": "true"})
    rviz = nodes[-1].kwargs
    assert (rviz["package"], rviz["executable"]) == ("rviz2", "rviz2")
    assert rviz["arguments"][0] == "-d" and rviz["arguments"][1].endswith("rviz/rt2.rviz")
    assert Path(rviz["arguments"][1]).is_file()


def test_bad_launch_values_fail_before_any_node(fake_launch, script):
    with pytest.raises(ConfigError, match="argument start_enabled"):
        _launch(fake_launch, {"backend": "scripted", "scripted_actions": script,
                              "start_enabled": "sometimes"})
    with pytest.raises(ConfigError, match="the transformers backend needs a checkpoint"):
        _launch(fake_launch, {})


def test_with_the_real_launch_ros(script):
    launch = pytest.importorskip("launch")
    pytest.importorskip("launch_ros.actions")
    if not hasattr(launch, "LaunchContext"):
        pytest.skip("no launch package (only this repository's launch/ directory)")
    spec = importlib.util.spec_from_file_location("rt2_launch_real", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = launch.LaunchContext()
    context.launch_configurations.update({a.name: a.default for a in STACK_ARGUMENTS})
    context.launch_configurations.update({"backend": "scripted", "scripted_actions": script})
    opaque = [e for e in description.entities if type(e).__name__ == "OpaqueFunction"][0]
    nodes = opaque.execute(context)
    assert [(n.node_package, n.node_executable) for n in nodes] == [
        ("rt2_ros", "policy_node"), ("rt2_ros", "safety_node")]
