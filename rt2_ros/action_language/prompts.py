"""Prompts and the text form of actions.

RT-2 asks the model a VQA-style question and reads the answer as an action
string of space-separated integers (``1 128 91 241 5 101 127 200``); with
chain of thought the answer is ``Plan: <words> Action: <integers>``.
OpenVLA uses its own prompt (``In: ...?\\nOut:``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from rt2_ros.errors import ActionLanguageError

RT2_PROMPT = "Q: what action should the robot take to {instruction}? A:"
OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
PROMPTS = {"rt2": RT2_PROMPT, "openvla": OPENVLA_PROMPT}

PLAN_MARKER = "Plan:"
ACTION_MARKER = "Action:"

# One token as the model writes it: a plain decimal integer, no sign, no
# leading zeros (the integer scheme's tokens are str(i), nothing else).
_TOKEN_PATTERN = re.compile(r"0|[1-9][0-9]*")
# More digits than this cannot be a bin; keeps int() away from huge strings.
_MAX_TOKEN_DIGITS = 9
_SHOWN_CHARS = 200


def _shown(text: str) -> str:
    """``repr`` of ``text`` cut to a length that fits an error line."""
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS]) + f"... ({len(text)} chars)"
    return repr(text)


def build_prompt(instruction: str, profile: str = "rt2") -> str:
    """Return the prompt asking for the action that carries out ``instruction``.

    The instruction is stripped of surrounding whitespace and of trailing
    ``.``/``!``/``?`` (the template supplies the question mark).  The
    ``openvla`` profile lower-cases it, as OpenVLA's training data was.
    """
    if profile not in PROMPTS:
        raise ActionLanguageError(f"profile: expected one of {', '.join(PROMPTS)}, got {profile!r}")
    if not isinstance(instruction, str):
        raise ActionLanguageError(f"instruction: expected a string, got {instruction!r}")
    cleaned = instruction.strip().rstrip(".!?").strip()
    if not cleaned:
        raise ActionLanguageError(f"instruction: expected some words, got {instruction!r}")
    if profile == "openvla":
        cleaned = cleaned.lower()
    return PROMPTS[profile].format(instruction=cleaned)


def format_action_text(tokens: Sequence[int], plan: str | None = None) -> str:
    """Return the text a model should write: ``"1 128 91 ..."`` or ``"Plan: <plan> Action: 1 128 ..."``.

    ``plan`` None or empty (after stripping) gives the plain form.
    """
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
        raise ActionLanguageError(f"tokens: expected a sequence of integers, got {tokens!r}")
    parts = []
    for position, token in enumerate(tokens):
        if isinstance(token, bool) or not hasattr(token, "__index__") or token < 0:
            raise ActionLanguageError(f"token {position}: expected an integer >= 0, got {token!r}")
        parts.append(str(int(token)))
    if not parts:
        raise ActionLanguageError("tokens: expected at least one token, got none")
    action = " ".join(parts)
    if plan is None:
        return action
    if not isinstance(plan, str):
        raise ActionLanguageError(f"plan: expected a string, got {plan!r}")
    plan = " ".join(plan.split())  # one line: the model writes the plan as words
    if not plan:
        return action
    return f"{PLAN_MARKER} {plan} {ACTION_MARKER} {action}"


def parse_action_text(text: str, embodiment: Any) -> list[int]:
    """Parse a strict action string (``"1 128 91 241 5 101 127 200"``) into tokens.

    Exactly ``embodiment.num_tokens`` whitespace-separated plain integers,
    each legal at its position; anything else raises ActionLanguageError
    naming the position and the value.
    """
    if not isinstance(text, str):
        raise ActionLanguageError(f"action text: expected a string, got {text!r}")
    parts = text.split()
    expected = embodiment.num_tokens
    if not parts:
        raise ActionLanguageError(f"empty action text: expected {expected} tokens, got {_shown(text)}")
    if len(parts) != expected:
        raise ActionLanguageError(f"expected {expected} tokens, got {len(parts)}: {_shown(text.strip())}")
    tokens = []
    for position, part in enumerate(parts):
        name = embodiment.dims[position].name
        if not _TOKEN_PATTERN.fullmatch(part):
            raise ActionLanguageError(
                f"token {position} ({name}): {_shown(part)} is not an integer (digits only, no sign "
                f"or leading zeros)")
        if len(part) > _MAX_TOKEN_DIGITS:
            raise ActionLanguageError(
                f"token {position} ({name}): {_shown(part)} is outside "
                f"0..{embodiment.allowed_bins(position) - 1}")
        tokens.append(int(part))
    return embodiment.validate_tokens(tokens)


@dataclass
class ParsedOutput:
    """A model's answer taken apart: ``tokens`` (bins), decoded ``action``, ``plan`` ("" if none), raw ``text``."""

    tokens: list[int]
    action: dict[str, Any]
    plan: str
    text: str


def parse_model_output(text: str, embodiment: Any) -> ParsedOutput:
    """Parse model output: an action string, optionally as ``Plan: <words> Action: <tokens>``.

    ``Action: <tokens>`` alone is accepted too.  The plan is everything
    between ``Plan:`` and the last ``Action:``; the action part is parsed by
    :func:`parse_action_text` (strict).
    """
    if not isinstance(text, str):
        raise ActionLanguageError(f"model output: expected a string, got {text!r}")
    stripped = text.strip()
    plan = ""
    body = stripped
    if stripped.startswith(PLAN_MARKER):
        cut = stripped.rfind(ACTION_MARKER)
        if cut < 0:
            raise ActionLanguageError(
                f"model output has {PLAN_MARKER!r} but no {ACTION_MARKER!r}: {_shown(text)}")
        plan = " ".join(stripped[len(PLAN_MARKER):cut].split())
        body = stripped[cut + len(ACTION_MARKER):]
    elif stripped.startswith(ACTION_MARKER):
        body = stripped[len(ACTION_MARKER):]
    elif ACTION_MARKER in stripped:
        raise ActionLanguageError(
            f"model output: text before {ACTION_MARKER!r} must start with {PLAN_MARKER!r}, got {_shown(text)}")
    tokens = parse_action_text(body, embodiment)
    return ParsedOutput(tokens=tokens, action=embodiment.decode(tokens), plan=plan, text=text)
