"""``rt2-ros eval``: success rates of a policy on seeded simulated episodes (no ROS).

::

    rt2-ros eval --backend expert|transformers|remote|scripted [--model DIR] --episodes N
                 --tasks pick,push,... [--seed S] [--rate HZ] [--max-steps N] [--threads N] [--json OUT.json]
                 [--trace STEPS.jsonl]

Runs N episodes of every task kind listed, episode ``i`` in scene ``seed + i``,
in this process (:func:`rt2_ros.sim.evaluation.evaluate`): learned policies
get the head camera's images; the privileged ``expert`` reads the simulator's
state (it is a reference, not a learned model, and is labelled so).  Prints a
success table per task kind - split into seen / unseen objects and
instructions when the checkpoint's ``rt2_ros.json`` has ``training_data`` -
and writes the table and every episode as JSON with ``--json`` (``-`` for
stdout instead of the table).  ``--trace`` writes every control step as a JSON
line, with the scripted expert's label for the state (:mod:`rt2_ros.sim.step_trace`):
where a failing episode went wrong.  Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from typing import Any

from rt2_ros.cli import PLAN_DECODING_HELP, THREADS_HELP, set_torch_threads
from rt2_ros.errors import ConfigError
from rt2_ros.policy.config import DECODINGS, PLAN_DECODINGS


def register(subparsers: Any) -> None:
    """Add the ``eval`` sub-command."""
    p = subparsers.add_parser(
        "eval", help="success rates of a policy on seeded simulated episodes (no ROS)",
        description="Run seeded episodes of each task kind on the simulated tabletop with a policy "
                    "and print the success table (seen/unseen split when the checkpoint lists its "
                    "training data).")
    p.add_argument("--backend", required=True, choices=("expert", "transformers", "remote", "scripted"),
                   help="policy backend")
    p.add_argument("--model", default="", help="checkpoint directory (transformers; also read for "
                                               "training_data) or served model name (remote)")
    p.add_argument("--profile", default="rt2", choices=("rt2", "openvla"), help="prompt + token scheme")
    p.add_argument("--embodiment", default="", help="embodiment name or YAML path ('' = the profile's)")
    p.add_argument("--device", default="auto", help="transformers: auto, cpu, cuda or cuda:N")
    p.add_argument("--decoding", default="greedy", choices=DECODINGS,
                   help="transformers: how each action token is chosen: greedy (argmax) or median "
                        "(continuous dims take the median bin of the model's distribution)")
    p.add_argument("--plan-decoding", default="auto", choices=PLAN_DECODINGS,
                   help="transformers: " + PLAN_DECODING_HELP)
    p.add_argument("--hand-state", action="store_true",
                   help="give the policy the simulated hand's height and last gripper command each step; "
                        "a checkpoint whose plan writes the hand's state then writes these numbers instead "
                        "of reading them off the image (docs/training.md section 6, item 15)")
    p.add_argument("--server-url", default="http://127.0.0.1:8000", help="remote: server base URL")
    p.add_argument("--scripted-actions", default="", metavar="FILE", help="scripted: action file")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task kind (default 10)")
    p.add_argument("--tasks", default="pick,move_near,push,place_on",
                   help="comma-separated task kinds (default: all four)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    p.add_argument("--rate", type=float, default=5.0, metavar="HZ", help="control rate (default 5)")
    p.add_argument("--max-steps", type=int, default=80, help="step limit per episode (default 80)")
    p.add_argument("--objects", default="", metavar="TERMS",
                   help="only episodes whose task involves one of these comma-separated colours, shapes "
                        "or names (e.g. 'purple' for objects kept out of the robot data)")
    p.add_argument("--exclude-objects", default="", metavar="TERMS",
                   help="only episodes whose task involves none of these")
    p.add_argument("--image-size", type=int, default=224, help="camera image size in pixels (default 224)")
    p.add_argument("--no-shadows", action="store_true", help="render without shadows (faster)")
    p.add_argument("--json", default="", metavar="FILE", help="also write the report as JSON ('-' = stdout)")
    p.add_argument("--trace", default="", metavar="FILE",
                   help="also write every control step as a JSON line: the plan, tokens and action, "
                        "the hand's height and gripper command, its distance to the task's objects, "
                        "and the scripted expert's label for that state (rt2_ros.sim.step_trace)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help=THREADS_HELP)
    p.set_defaults(func=run)


def _policy(args: argparse.Namespace, sim: Any) -> Any:
    if args.backend == "expert":
        from rt2_ros.sim.expert import ExpertPolicy

        return ExpertPolicy(sim, args.embodiment or "rt2_arm")
    from rt2_ros.policy.config import PolicyConfig
    from rt2_ros.policy.factory import make_policy

    return make_policy(PolicyConfig(
        backend=args.backend, model=args.model, profile=args.profile, embodiment=args.embodiment,
        device=args.device, decoding=args.decoding, plan_decoding=args.plan_decoding,
        server_url=args.server_url,
        scripted_actions=args.scripted_actions,
        scripted_loop=args.backend == "scripted"))


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the JSON."""
    from pathlib import Path

    from rt2_ros.sim.evaluation import evaluate, parse_task_list, read_training_data
    from rt2_ros.sim.scene import parse_object_terms
    from rt2_ros.sim.tasks import load_task_library

    kinds = parse_task_list(args.tasks, load_task_library().kinds)
    if args.episodes < 1:
        raise ConfigError(f"--episodes: expected an integer >= 1, got {args.episodes}")
    if args.seed < 0:
        raise ConfigError(f"--seed: expected an integer >= 0, got {args.seed}")
    if args.backend == "transformers" and not args.model:
        raise ConfigError("--model: the transformers backend needs a checkpoint directory, got ''")
    if args.json and args.json != "-" and not Path(args.json).resolve().parent.is_dir():
        raise ConfigError(f"--json: the directory of {args.json!r} does not exist")
    if args.trace and not Path(args.trace).resolve().parent.is_dir():
        raise ConfigError(f"--trace: the directory of {args.trace!r} does not exist")
    training = read_training_data(args.model) if args.backend in ("transformers", "remote") else None
    set_torch_threads("eval", args.threads, learned_policy=args.backend == "transformers")

    from rt2_ros.sim.tabletop import SimConfig, TabletopSim

    def progress(outcome: Any, index: int, total: int) -> None:
        mark = "ok  " if outcome.success else "FAIL"
        print(f"rt2-ros eval: [{index}/{total}] {mark} {outcome.kind} seed {outcome.seed}: "
              f"{outcome.instruction!r} ({outcome.steps} steps, {outcome.wall_s:.1f} s)"
              + (f" - {outcome.error}" if outcome.error else ""), file=sys.stderr, flush=True)

    if not 16 <= args.image_size <= 1024:
        raise ConfigError(f"--image-size: expected 16..1024 pixels, got {args.image_size}")
    objects = list(parse_object_terms("--objects", args.objects))
    excluded = list(parse_object_terms("--exclude-objects", args.exclude_objects))
    config = SimConfig(image_size=(args.image_size, args.image_size), shadows=not args.no_shadows)
    with TabletopSim(args.seed, task=None, config=config) as sim, ExitStack() as closing:
        policy = _policy(args, sim)
        closing.callback(policy.close)
        tracer = None
        if args.trace:
            from rt2_ros.sim.step_trace import StepTracer

            stream = closing.enter_context(open(args.trace, "w", encoding="utf-8"))
            tracer = StepTracer(sim, policy.embodiment, stream)
        report = evaluate(sim, policy, kinds, args.episodes, args.seed, backend=args.backend,
                          model=args.model, control_rate_hz=args.rate, max_steps=args.max_steps,
                          render=args.backend != "expert", training_data=training,
                          objects=objects, exclude_objects=excluded, progress=progress,
                          hand_state=args.hand_state, tracer=tracer)
    if tracer is not None:
        print(f"rt2-ros eval: wrote {tracer.lines} steps to {args.trace}", file=sys.stderr, flush=True)
    data = report.to_json()
    # How the model's tokens were chosen, as resolved by the backend (plan_decoding "auto" becomes
    # "layout" or "free"); None for backends that do not decode.
    data["decoding"] = args.decoding if args.backend == "transformers" else None
    data["plan_decoding"] = getattr(policy, "plan_decoding", None) if getattr(policy, "chain_of_thought",
                                                                            False) else None
    if args.json == "-":
        from rt2_ros.cli import print_json

        print_json(data)
        return 0
    print(report.table(), "", report.progress_text(), sep="\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"rt2-ros eval: wrote {args.json}", file=sys.stderr, flush=True)
    return 0
