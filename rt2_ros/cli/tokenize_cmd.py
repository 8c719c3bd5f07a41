"""``rt2-ros tokenize`` and ``rt2-ros detokenize``: actions <-> action strings.

::

    rt2-ros detokenize --embodiment NAME|PATH "1 128 91 241 5 101 127 200"
      -> {"tokens": [...], "action": {"terminate": true, "x": ..., ...}}
    rt2-ros tokenize --embodiment NAME|PATH '{"terminate": 0, "x": 0.01, ...}'
      -> {"tokens": [...], "text": "0 153 ..."}
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from rt2_ros.errors import ActionLanguageError

DEFAULT_EMBODIMENT = "rt2_arm"


def register(subparsers: Any) -> None:
    """Add the ``tokenize`` and ``detokenize`` sub-commands."""
    detok = subparsers.add_parser(
        "detokenize", help="action string -> action (JSON)",
        description="Decode an action string (or 'Plan: ... Action: ...') into the embodiment's action.")
    detok.add_argument("--embodiment", default=DEFAULT_EMBODIMENT,
                       help=f"bundled embodiment name or YAML path (default {DEFAULT_EMBODIMENT})")
    detok.add_argument("text", help='the tokens, e.g. "1 128 91 241 5 101 127 200"')
    detok.set_defaults(func=run_detokenize)

    tok = subparsers.add_parser(
        "tokenize", help="action (JSON) -> action string",
        description="Encode an action given as a JSON object {dim name: value} into tokens.")
    tok.add_argument("--embodiment", default=DEFAULT_EMBODIMENT,
                     help=f"bundled embodiment name or YAML path (default {DEFAULT_EMBODIMENT})")
    tok.add_argument("action", help='JSON object, e.g. \'{"terminate": 0, "x": 0.01, ...}\'')
    tok.set_defaults(func=run_tokenize)


def run_detokenize(args: argparse.Namespace) -> int:
    """Print the tokens and decoded action of ``args.text``."""
    from rt2_ros.action_language import load_embodiment, parse_model_output
    from rt2_ros.cli import print_json

    embodiment = load_embodiment(args.embodiment)
    parsed = parse_model_output(args.text, embodiment)
    result: dict[str, Any] = {"tokens": parsed.tokens, "action": parsed.action}
    if parsed.plan:
        result["plan"] = parsed.plan
    print_json(result)
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    """Print the tokens and action string of the JSON action ``args.action``."""
    from rt2_ros.action_language import format_action_text, load_embodiment
    from rt2_ros.cli import print_json

    embodiment = load_embodiment(args.embodiment)
    try:
        action = json.loads(args.action)  # NaN/Infinity parse; encode names the key
    except json.JSONDecodeError as exc:
        raise ActionLanguageError(
            f"action: not valid JSON ({exc.msg} at column {exc.colno}): {args.action!r}") from None
    if not isinstance(action, dict):
        raise ActionLanguageError(
            f"action: expected a JSON object of dim name to value, got {args.action!r}")
    tokens = embodiment.encode(action)
    print_json({"tokens": tokens, "text": format_action_text(tokens)})
    return 0
