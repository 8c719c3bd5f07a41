"""``rt2-ros demo``: the simulated arm, the stack and a policy in a closed loop, headless; writes demo_out/.

::

    rt2-ros demo [--task KIND|"instruction"] [--seed N] [--backend expert|scripted|transformers|remote]
                 [--model DIR] [--max-steps N] [--timeout S] [--short] [--out demo_out]

Starts ``sim_node`` and the stack (``rt2-ros up --config config/demo.yaml``,
safety enabled) as processes, sends the sim's instruction through
``rt2/execute``, records the episode and writes ``OUT/episode.mp4`` (or
``.gif``), ``OUT/plot.png``, ``OUT/last_frame.png`` and ``OUT/summary.json``;
process logs go to ``OUT/logs/``.  Progress goes to stderr; stdout gets one
JSON line with the outcome and the file paths.  Exit 0 when the episode ran
(solved or not: see ``success``), 1 when the demo could not run, 2 for bad
arguments, 130 after Ctrl-C (what was recorded is still written).

Without ``--backend`` the demo runs the bundled trained model if there is one
(:data:`rt2_ros.demo.BUNDLED_MODEL_DIR`), else the privileged ``expert`` and
says so: it reads the simulator's true state, not the camera.
"""
from __future__ import annotations

import argparse
from typing import Any

from rt2_ros.errors import ConfigError

_SHORT = {"task": "pick", "max_steps": 60, "timeout_s": 30.0}
_DEFAULT = {"task": "place_on", "max_steps": 80, "timeout_s": 60.0}


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo", help="closed loop on the simulated arm (sim + stack + policy), headless; writes demo_out/",
        description="Run one instruction on the simulated tabletop arm through the whole stack "
                    "(sim_node, policy_node, safety_node as processes) and write a video, a plot "
                    "and summary.json.")
    p.add_argument("--task", default=None, metavar='KIND|"INSTRUCTION"',
                   help="pick, move_near, push, place_on, random, or an instruction such as "
                        "\"put the red cube on the blue cylinder\" (default place_on; pick with --short)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument("--backend", default=None, choices=("expert", "scripted", "transformers", "remote"),
                   help="policy backend (default: the bundled model if present, else expert)")
    p.add_argument("--model", default="", help="checkpoint directory (transformers) or served model "
                                               "name (remote)")
    p.add_argument("--server-url", default="", help="remote backend: server base URL")
    p.add_argument("--scripted-actions", default="", metavar="FILE",
                   help="scripted backend: file of action strings")
    p.add_argument("--max-steps", type=int, default=None, help="step limit (default 80; 60 with --short)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="episode time limit in seconds (default 60; 30 with --short)")
    p.add_argument("--rate", type=float, default=5.0, metavar="HZ",
                   help="policy steps per second (default 5)")
    p.add_argument("--short", action="store_true", help="a quick run: a pick task, at most 60 steps and 30 s")
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output directory (default demo_out)")
    p.add_argument("--startup-timeout", type=float, default=120.0, metavar="S",
                   help="how long the processes may take to come up (default 120)")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~rt2_ros.demo.runner.DemoOptions` the flags ask for."""
    import math
    from pathlib import Path

    from rt2_ros.demo import default_policy
    from rt2_ros.demo.runner import DemoOptions

    preset = _SHORT if args.short else _DEFAULT
    backend, model = args.backend, args.model
    if backend is None:
        backend, model = ("transformers", model) if model else default_policy()
    if not math.isfinite(args.rate) or not 0 < args.rate <= 100:
        raise ConfigError(f"--rate: expected a number of steps per second in (0, 100], got {args.rate!r}")
    return DemoOptions(
        task=args.task if args.task is not None else preset["task"], seed=args.seed,
        backend=backend, model=model, server_url=args.server_url,
        scripted_actions=args.scripted_actions,
        max_steps=args.max_steps if args.max_steps is not None else preset["max_steps"],
        timeout_s=args.timeout if args.timeout is not None else preset["timeout_s"],
        out_dir=Path(args.out), control_rate_hz=float(args.rate),
        startup_timeout_s=args.startup_timeout)


def run(args: argparse.Namespace) -> int:
    """Run the demo, print where the files are, return the exit code."""
    import sys

    from rt2_ros.cli import print_json
    from rt2_ros.demo.runner import run_demo

    options = options_from_args(args)
    summary = run_demo(options)
    latency = summary["latency_ms"]["image_to_action"]
    say = lambda text: print(f"rt2-ros demo: {text}", file=sys.stderr, flush=True)  # noqa: E731
    verdict = "SOLVED" if summary["success"] else "NOT SOLVED"
    say(f"{verdict}: {summary['instruction']!r} - {summary['reason']} after {summary['steps']} steps, "
        f"{summary['hz_achieved'] or 0:.2f} Hz, camera->action latency median "
        f"{latency['median'] if latency['median'] is not None else 'n/a'} ms "
        f"(p99 {latency['p99'] if latency['p99'] is not None else 'n/a'} ms)")
    say(f"policy: {summary['policy']}")
    for name, path in summary["files"].items():
        say(f"{name}: {path}")
    print_json({"success": summary["success"], "terminated": summary["terminated"],
                "reason": summary["reason"], "steps": summary["steps"],
                "instruction": summary["instruction"], "policy": summary["policy"],
                "privileged": summary["privileged"], "hz_achieved": summary["hz_achieved"],
                "latency_ms": latency, "files": summary["files"]})
    return 130 if summary["reason"] == "interrupted" else 0
