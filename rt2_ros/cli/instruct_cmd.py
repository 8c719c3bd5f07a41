"""``rt2-ros instruct``: run one instruction through the policy node's action server.

::

    rt2-ros instruct "pick up the can" [--max-steps N] [--timeout S] [--action /rt2/execute]

Sends an ``rt2_ros/action/ExecuteInstruction`` goal, prints one JSON line per
step (the feedback) and a last JSON line with the result.  Exit code 0 when
the model terminated the episode, 1 for any other ending (``max_steps``,
``timeout``, ``canceled``, ``preempted``, ``backend_error: ...``), 3 when no
action server answers within ``--server-timeout`` seconds or the goal is
rejected, 130 after Ctrl-C (the goal is canceled and its result printed).
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from rt2_ros.errors import ConfigError, Rt2RosError


class ActionServerError(Rt2RosError):
    """No action server answered, or it refused the goal."""

    exit_code = 3


def register(subparsers: Any) -> None:
    """Add the ``instruct`` sub-command."""
    p = subparsers.add_parser(
        "instruct", help="send an instruction to the running stack and follow it to the end",
        description="Send an ExecuteInstruction goal to the policy node, print each step's "
                    "feedback and the result as JSON lines.  Exit 0 when the model terminated "
                    "the episode, 1 otherwise, 3 when no action server answers.")
    p.add_argument("instruction", help='what the robot should do, e.g. "pick up the red block"')
    p.add_argument("--max-steps", type=int, default=0, help="step limit (default 0 = none)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="time limit of the episode in seconds (default 0 = none)")
    p.add_argument("--action", default="/rt2/execute", help="action name (default /rt2/execute)")
    p.add_argument("--server-timeout", type=float, default=5.0, metavar="S",
                   help="how long to wait for the action server (default 5)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.max_steps <= 2**32 - 1:
        raise ConfigError(f"--max-steps: expected an integer in 0..{2**32 - 1}, got {args.max_steps}")
    if not math.isfinite(args.timeout) or args.timeout < 0:
        raise ConfigError(f"--timeout: expected a finite number >= 0, got {args.timeout!r}")
    if not math.isfinite(args.server_timeout) or args.server_timeout <= 0:
        raise ConfigError(f"--server-timeout: expected a number > 0, got {args.server_timeout!r}")
    if not args.instruction.strip():
        raise ConfigError("instruction: expected a non-empty instruction, got ''")


def feedback_json(feedback: Any) -> dict[str, Any]:
    """One feedback message as the JSON line ``instruct`` prints."""
    action = feedback.last_action
    return {"step": int(feedback.step),
            "tokens": list(action.tokens),
            "terminate": bool(action.terminate),
            "delta_position": [action.delta_position.x, action.delta_position.y,
                               action.delta_position.z],
            "delta_rotation": [action.delta_rotation.x, action.delta_rotation.y,
                               action.delta_rotation.z],
            "gripper": round(float(action.gripper), 6),
            "plan": action.plan,
            "inference_ms": round(float(action.inference_ms), 3)}


def run(args: argparse.Namespace) -> int:
    """Send the goal, print feedback and result, return the exit code."""
    import os
    import signal
    import threading

    _check(args)
    from rt2_ros.nodes.stack import apply_dds_defaults

    # The same DDS profile as the stack `rt2-ros up` starts, or they may not meet.
    apply_dds_defaults(os.environ)  # type: ignore[arg-type]
    from rt2_ros.nodes.instruct_client import InstructionClient

    client = InstructionClient(args.action)
    try:
        if not client.wait_for_server(args.server_timeout):
            raise ActionServerError(f"no action server {args.action} answered within "
                                    f"{args.server_timeout:g} s (is the stack running? "
                                    f"`rt2-ros up`; same ROS_DOMAIN_ID?)")
        from rt2_ros.cli import print_json

        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            outcome = client.execute(args.instruction, args.max_steps, args.timeout,
                                     on_feedback=lambda fb: print_json(feedback_json(fb)),
                                     stop=stop)
        except TimeoutError as exc:
            raise ActionServerError(f"{args.action}: {exc}") from None
        except KeyboardInterrupt:
            outcome = client.cancel(timeout_s=3.0)
            if outcome is not None:
                print_json({"result": outcome})
            return 130
        finally:
            signal.signal(signal.SIGINT, previous)
        if outcome is None:
            raise ActionServerError(f"the action server {args.action} rejected the goal")
        print_json({"result": outcome})
        return 0 if outcome["terminated"] else 1
    finally:
        client.close()
