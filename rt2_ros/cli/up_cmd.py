"""``rt2-ros up``: the stack without ``ros2 launch`` (pip mode).

::

    rt2-ros up [--config FILE] [--set NODE.PARAM=VALUE ...] [--backend B] [--model M]
               [--camera-topic T] [--twist-topic T] [--gripper-topic T] ... [--dry-run]

Starts the nodes of ``rt2_ros.nodes.stack`` - the list ``launch/rt2.launch.py``
uses, with the same parameter files and remappings - as separate processes,
forwards their output, and stops them all on Ctrl-C or SIGTERM.  Exits 0
after a requested stop, non-zero when a node dies.  ``--dry-run`` prints the
commands as JSON instead of running them.
"""
from __future__ import annotations

import argparse
from typing import Any

from rt2_ros.errors import ConfigError

# Keep this module cheap to import: the stack modules are imported in run().


def register(subparsers: Any) -> None:
    """Add the ``up`` sub-command."""
    from rt2_ros.nodes.stack import STACK_ARGUMENTS

    p = subparsers.add_parser(
        "up", help="start the ROS 2 stack (policy_node + safety_node) without ros2 launch",
        description="Start policy_node and safety_node as separate processes from the same node "
                    "list, parameter file and remappings as `ros2 launch rt2_ros rt2.launch.py`. "
                    "Ctrl-C stops them all.")
    p.add_argument("--config", default="", metavar="FILE",
                   help="ROS parameter file (default: the bundled config/rt2.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   dest="overrides",
                   help="override a parameter, e.g. --set safety_node.max_linear_speed=0.05; "
                        "PARAM=VALUE without a node sets it on every node that has it "
                        "(control_rate_hz)")
    for arg in STACK_ARGUMENTS:
        if arg.kind in ("param", "remap"):
            p.add_argument(arg.flag, default="", dest=arg.name, metavar="VALUE",
                           help=f"{arg.description} (launch argument {arg.name})")
    p.add_argument("--rviz", action="store_true", help="also start rviz2 with rviz/rt2.rviz")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a node gets to stop after SIGINT before it is killed (default 10)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the node commands as JSON and exit")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["policy_node.backend=scripted", "control_rate_hz=5"]`` -> ``{node: {param: value}}``."""
    from rt2_ros.nodes.parameters import NODE_PARAMETERS, parse_value

    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected NODE.PARAM=VALUE, got {item!r}")
        node, dot, name = key.partition(".")
        if dot and node in NODE_PARAMETERS:
            targets = [node]
        elif dot:
            raise ConfigError(f"--set {item}: unknown node {node!r} (nodes: "
                              f"{', '.join(NODE_PARAMETERS)})")
        else:
            name = key
            targets = [n for n, specs in NODE_PARAMETERS.items() if any(s.name == name for s in specs)]
            if not targets:
                raise ConfigError(f"--set {item}: no node has a parameter {name!r}")
        for target in targets:
            spec = next((s for s in NODE_PARAMETERS[target] if s.name == name), None)
            if spec is None:
                raise ConfigError(f"--set {item}: {target} has no parameter {name!r}")
            try:
                overrides.setdefault(target, {})[name] = parse_value(spec, text)
            except ConfigError as exc:
                raise ConfigError(f"--set {item}: {target} parameter {exc}") from None
    return overrides


def stack_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The launch-argument values the flags give (``rviz`` as "true"/"false")."""
    from rt2_ros.nodes.stack import STACK_ARGUMENTS

    values = {"config": args.config, "rviz": "true" if args.rviz else "false"}
    for arg in STACK_ARGUMENTS:
        if arg.kind in ("param", "remap"):
            values[arg.name] = getattr(args, arg.name)
    return values


def run(args: argparse.Namespace) -> int:
    """Start the stack and supervise it until it stops."""
    import sys
    import tempfile
    from pathlib import Path

    from rt2_ros.cli import print_json
    from rt2_ros.nodes.stack import stack_nodes
    from rt2_ros.nodes.up import node_command, run_stack, write_override_files

    if args.shutdown_timeout <= 0:
        raise ConfigError(f"--shutdown-timeout: expected a number > 0, got {args.shutdown_timeout!r}")
    nodes = stack_nodes(stack_arguments(args), parse_overrides(args.overrides))
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="rt2_ros_up_") as tmp:
            files = write_override_files(nodes, Path(tmp))
            print_json({"nodes": [{"name": spec.name, "package": spec.package,
                                   "executable": spec.executable,
                                   "parameters": list(spec.parameters),
                                   "remappings": [list(r) for r in spec.remappings],
                                   "command": node_command(spec, files[spec.name])}
                                  for spec in nodes]})
        return 0
    result = run_stack(nodes, shutdown_timeout_s=args.shutdown_timeout)
    print(f"rt2-ros up: {result.reason}", file=sys.stderr, flush=True)
    return result.code
