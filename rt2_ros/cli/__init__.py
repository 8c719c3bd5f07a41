"""The ``rt2-ros`` command.

Each subcommand lives in its own module under ``rt2_ros.cli`` and exposes
``register(subparsers)``, which adds an argparse sub-parser whose ``func``
default takes the parsed arguments and returns an exit code.  Modules must be
cheap to import (no torch or rclpy at module level) so ``rt2-ros --help``
stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from rt2_ros.errors import ConfigError, Rt2RosError

# Order = order in `rt2-ros --help`.
SUBCOMMAND_MODULES = [
    "rt2_ros.cli.tokenize_cmd",
    "rt2_ros.cli.act_cmd",
    "rt2_ros.cli.serve_cmd",
    "rt2_ros.cli.train_cmd",
    "rt2_ros.cli.up_cmd",
    "rt2_ros.cli.instruct_cmd",
    "rt2_ros.cli.demo_cmd",
    "rt2_ros.cli.eval_cmd",
]


def print_json(obj: Any) -> None:
    """Write ``obj`` as one JSON document on stdout (the CLI's output contract)."""
    json.dump(obj, sys.stdout, indent=None, separators=(", ", ": "))
    sys.stdout.write("\n")
    sys.stdout.flush()


#: --threads help, shared by the commands that run a learned policy on the CPU.
THREADS_HELP = ("torch intra-op threads of the learned policy (default 0: torch's choice, one per core); "
                "give each of several such runs on one machine its share, e.g. --threads 1 for two on "
                "two cores: two two-thread evaluations there took 23x longer per episode than two "
                "one-thread ones")

#: --plan-decoding help, shared by the commands that load a planning checkpoint.
PLAN_DECODING_HELP = ("how a planning checkpoint writes its plan: layout (the decoder writes the plan kind's "
                      "words, the model the object's name and the numbers), free (the model writes all of "
                      "it) or auto (layout where the checkpoint names its plan kind and its tokenizer has "
                      "one token per word and per integer; default)")


def set_torch_threads(command: str, threads: int, learned_policy: bool) -> None:
    """Apply a command's ``--threads`` when it runs a ``learned_policy`` (0 leaves torch's default);
    a negative count is a ConfigError either way."""
    if threads < 0:
        raise ConfigError(f"--threads: expected an integer >= 0 (0: torch's default), got {threads}")
    if threads and learned_policy:
        import torch

        torch.set_num_threads(threads)
        print(f"rt2-ros {command}: {torch.get_num_threads()} torch intra-op thread(s)", file=sys.stderr, flush=True)


class OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit 2), like every CLI error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = OneLineErrorParser(
        prog="rt2-ros",
        description="RT-2-style vision-language-action policies for ROS 2 arms.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rt2-ros``: one line on stderr and a non-zero exit on errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Rt2RosError as exc:
        print(f"rt2-ros {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
