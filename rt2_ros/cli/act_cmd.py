"""``rt2-ros act`` and ``rt2-ros ask``: one action, or one free-text answer, for an image file.

::

    rt2-ros act --model DIR --image FILE [--profile rt2|openvla] "<instruction>"
      -> {"tokens": [...], "action": {...}, "plan": "...", "text": "...", "timings_ms": {...}}
    rt2-ros ask --model DIR --image FILE "what is on the table?"
      -> {"answer": "...", "timings_ms": {...}}

``--backend`` picks ``transformers`` (default: a checkpoint directory),
``remote`` (``--server-url``; ``--model`` is the server's model name) or
``scripted`` (``--actions FILE``: the next line of the script).  A missing or
unreadable image, or an empty instruction, exits with status 2 and one line
on stderr before any model is loaded.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rt2_ros.cli import PLAN_DECODING_HELP
from rt2_ros.errors import ConfigError, Rt2RosError
from rt2_ros.policy.config import DECODINGS, PLAN_DECODINGS


class ImageFileError(Rt2RosError):
    """The image file given on the command line is missing or unreadable (exit 2)."""

    exit_code = 2


def _add_policy_options(parser: argparse.ArgumentParser, *, actions: bool) -> None:
    parser.add_argument("--model", default="",
                        help="checkpoint directory (transformers) or the server's model name (remote)")
    parser.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    parser.add_argument("--backend", default="transformers",
                        choices=["transformers", "remote"] + (["scripted"] if actions else []),
                        help="policy backend (default: transformers)")
    parser.add_argument("--profile", default="rt2", choices=["rt2", "openvla"],
                        help="prompt + token scheme + embodiment bundle (default: rt2)")
    parser.add_argument("--embodiment", default="",
                        help="embodiment name or YAML path (default: the checkpoint's, else the profile's)")
    parser.add_argument("--unnorm-key", default="",
                        help="openvla: the dataset whose q01/q99 statistics un-normalise actions")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights dtype (default: auto = bfloat16 where supported, else float32)")
    parser.add_argument("--quantization", default="none", choices=["none", "8bit", "4bit"],
                        help="bitsandbytes weight quantization (CUDA only)")
    parser.add_argument("--attn-implementation", default="",
                        help="sdpa | eager | flash_attention_2 (default: transformers chooses)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the checkpoint's own Python code to run (only for checkpoints you trust)")
    parser.add_argument("--server-url", default="http://127.0.0.1:8000", help="remote: server base URL")
    parser.add_argument("--api-key-env", default="",
                        help="remote: environment variable holding the bearer token")
    if actions:
        parser.add_argument("--chain-of-thought", action="store_true",
                            help="let the model write 'Plan: ...' before the action")
        parser.add_argument("--max-plan-tokens", type=int, default=32,
                            help="chain of thought: bound on the plan's length in tokens (default: 32)")
        parser.add_argument("--decoding", default="greedy", choices=DECODINGS,
                            help="transformers: greedy (argmax of each action token) or median "
                                 "(continuous dims take the median bin of the model's distribution)")
        parser.add_argument("--plan-decoding", default="auto", choices=PLAN_DECODINGS,
                            help="transformers: " + PLAN_DECODING_HELP)
        parser.add_argument("--actions", default="",
                            help="scripted: file of action strings, one per line")


def register(subparsers: Any) -> None:
    """Add the ``act`` and ``ask`` sub-commands."""
    act = subparsers.add_parser(
        "act", help="image + instruction -> one action (JSON)",
        description="Run a policy once on an image file and print the action it takes.")
    _add_policy_options(act, actions=True)
    act.add_argument("instruction", help='what the robot should do, e.g. "pick up the red block"')
    act.set_defaults(func=run_act)

    ask = subparsers.add_parser(
        "ask", help="image + question -> free-text answer (JSON)",
        description="Ask the model's VLM side a question about an image (no action constraint).")
    _add_policy_options(ask, actions=False)
    ask.add_argument("--max-new-tokens", type=int, default=32,
                     help="bound on the answer's length in tokens (default: 32)")
    ask.add_argument("question", help='e.g. "what is on the table?"')
    ask.set_defaults(func=run_ask)


def load_image_rgb(path: str) -> Any:
    """Read ``path`` with OpenCV and return it as an HxWx3 uint8 RGB array (ImageFileError if unusable)."""
    import cv2

    file = Path(path)
    if not file.is_file():
        raise ImageFileError(f"image: no such file: {path!r}")
    bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageFileError(f"image: cannot decode {path!r} as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _config(args: argparse.Namespace, actions: bool) -> Any:
    from rt2_ros.policy.config import PolicyConfig

    values = {"backend": args.backend, "model": args.model, "profile": args.profile,
              "embodiment": args.embodiment, "unnorm_key": args.unnorm_key, "device": args.device,
              "dtype": args.dtype, "quantization": args.quantization,
              "attn_implementation": args.attn_implementation,
              "trust_remote_code": args.trust_remote_code, "server_url": args.server_url,
              "api_key_env": args.api_key_env}
    if actions:
        values.update(chain_of_thought=args.chain_of_thought, max_plan_tokens=args.max_plan_tokens,
                      decoding=args.decoding, plan_decoding=args.plan_decoding,
                      scripted_actions=args.actions)
    return PolicyConfig.from_mapping(values)


def _make_policy(cfg: Any) -> Any:
    # stdout carries the JSON result; keep stderr for the one-line errors
    # (read by transformers when it is first imported, which is below).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from rt2_ros.policy.factory import make_policy

    return make_policy(cfg)


def _nonempty(kind: str, text: str) -> str:
    if not text.strip():
        raise ConfigError(f"{kind}: expected a non-empty {kind}, got {text!r}")
    return text


def run_act(args: argparse.Namespace) -> int:
    """Print the policy's action for ``args.image`` and ``args.instruction``."""
    from rt2_ros.cli import print_json

    instruction = _nonempty("instruction", args.instruction)
    image = load_image_rgb(args.image)
    cfg = _config(args, actions=True)
    with _make_policy(cfg) as policy:
        output = policy.act(image, instruction)
    print_json(output.to_json())
    return 0


def run_ask(args: argparse.Namespace) -> int:
    """Print the model's free-text answer to ``args.question`` about ``args.image``."""
    from rt2_ros.cli import print_json
    from rt2_ros.errors import PolicyError

    question = _nonempty("question", args.question)
    if args.max_new_tokens < 1:
        raise ConfigError(f"max-new-tokens: expected an integer >= 1, got {args.max_new_tokens}")
    image = load_image_rgb(args.image)
    cfg = _config(args, actions=False)
    with _make_policy(cfg) as policy:
        start = time.perf_counter()
        if hasattr(policy, "ask"):
            answer = policy.ask(image, question, args.max_new_tokens)
            text, timings = answer.text, answer.timings
        elif hasattr(policy, "answer"):
            text = policy.answer(image, question, args.max_new_tokens)
            timings = {"total": (time.perf_counter() - start) * 1e3}
        else:
            raise PolicyError(f"the {policy.name} backend cannot answer questions")
    print_json({"answer": text, "timings_ms": {k: round(v, 3) for k, v in timings.items()}})
    return 0
