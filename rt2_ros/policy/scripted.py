"""The ``scripted`` backend: replay action strings from a file.

For bring-up and dry runs: the arm, the safety layer and the ROS wiring can be
exercised with known actions before any model is involved.  The file holds one
action string per line (``"0 128 128 140 128 128 128 255"``); ``#`` starts a
comment, blank lines are ignored.  Every line is validated against the
embodiment when the file is loaded, so a typo fails at start-up with its line
number, not in the middle of a run.

The image and the instruction are checked (a caller bug is caught here as it
would be by a model backend) but otherwise ignored.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rt2_ros.action_language import ActionLanguageError, Embodiment, load_embodiment, parse_action_text
from rt2_ros.policy.base import HandState, Policy, PolicyError, PolicyOutput, check_image, check_instruction
from rt2_ros.policy.config import PolicyConfig

__all__ = ["ScriptedPolicy", "load_action_script"]


def load_action_script(path: str | Path, embodiment: Embodiment) -> list[tuple[int, list[int], str]]:
    """Return ``(line number, tokens, text)`` for every action line of ``path``.

    Raises PolicyError naming the file and line for an unreadable file, a
    malformed action, or a file without any action.
    """
    file = Path(path)
    try:
        content = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"scripted actions {str(file)!r}: cannot read the file ({exc})") from None
    actions = []
    for number, raw in enumerate(content.splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            tokens = parse_action_text(text, embodiment)
        except ActionLanguageError as exc:
            raise PolicyError(f"scripted actions {str(file)!r} line {number}: {exc}") from None
        actions.append((number, tokens, text))
    if not actions:
        raise PolicyError(f"scripted actions {str(file)!r}: no action lines (only comments or blank lines)")
    return actions


class ScriptedPolicy(Policy):
    """Replays the actions of a file, in order; loops or stops at the end.

    ``loop=False``: after the last action, ``act`` raises
    ``PolicyError("script exhausted after N actions")`` until :meth:`reset`.
    """

    name = "scripted"

    def __init__(self, path: str | Path, embodiment: Embodiment | str = "rt2_arm", *,
                 loop: bool = False) -> None:
        if isinstance(embodiment, str):
            try:
                embodiment = load_embodiment(embodiment)
            except ActionLanguageError as exc:
                raise PolicyError(f"scripted: embodiment: {exc}") from None
        self.embodiment = embodiment
        self.path = Path(path)
        self.loop = loop
        self._actions = load_action_script(self.path, embodiment)
        self._next = 0

    @classmethod
    def from_config(cls, cfg: PolicyConfig) -> "ScriptedPolicy":
        """Build from ``cfg.scripted_actions``, ``cfg.scripted_loop`` and the embodiment."""
        if not cfg.scripted_actions:
            raise PolicyError("scripted backend: scripted_actions: expected a file of action strings, got ''")
        return cls(cfg.scripted_actions, cfg.embodiment_name, loop=cfg.scripted_loop)

    def __len__(self) -> int:
        return len(self._actions)

    def act(self, image: np.ndarray, instruction: str, hand: HandState | None = None) -> PolicyOutput:
        """Return the next action of the script (``hand`` unused)."""
        start = time.perf_counter()
        check_image(image)
        check_instruction(instruction)
        if self._next >= len(self._actions):
            if not self.loop:
                raise PolicyError(f"script exhausted after {len(self._actions)} actions")
            self._next = 0
        _, tokens, text = self._actions[self._next]
        self._next += 1
        action = self.embodiment.decode(tokens)
        return PolicyOutput(tokens=list(tokens), action=action, text=text,
                            timings={"total": (time.perf_counter() - start) * 1000.0})

    def reset(self) -> None:
        """Rewind to the first action."""
        self._next = 0
