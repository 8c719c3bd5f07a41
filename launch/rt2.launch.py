"""Launch the rt2_ros stack: ``ros2 launch rt2_ros rt2.launch.py [name:=value ...]``.

Arguments (``ros2 launch rt2_ros rt2.launch.py --show-args`` lists them):
config, backend, model, profile, embodiment, server_url, scripted_actions,
start_enabled, camera_topic, twist_topic, gripper_topic, rviz.  An empty value
keeps what the parameter file says.

The nodes, their parameter files and remappings come from
``rt2_ros.nodes.stack.stack_nodes`` - the same list ``rt2-ros up`` starts in
pip mode - so the two ways of running the stack cannot drift apart.  The
parameter file and every override are validated before any node starts.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from rt2_ros.nodes.stack import STACK_ARGUMENTS, stack_nodes


def _nodes(context, *args, **kwargs):
    values = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in STACK_ARGUMENTS}
    return [Node(package=spec.package, executable=spec.executable, name=spec.name,
                 parameters=list(spec.parameters), remappings=list(spec.remappings),
                 arguments=list(spec.arguments), output="screen")
            for spec in stack_nodes(values)]


def generate_launch_description():
    """The launch arguments, then the nodes built from their values."""
    arguments = [DeclareLaunchArgument(arg.name, default_value=arg.default,
                                       description=arg.description)
                 for arg in STACK_ARGUMENTS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
