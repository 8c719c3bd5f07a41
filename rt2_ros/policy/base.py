"""The one policy interface every backend implements.

A policy maps (image, instruction) to one action.  Backends (``transformers``,
``remote``, ``scripted``, the simulator's ``expert``) implement :class:`Policy`;
wrappers (recording, serving) take a Policy and are Policies themselves.  No
rclpy here: the ROS nodes adapt this interface, they do not extend it.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt2_ros.errors import PolicyError  # re-exported: the one error backends raise

__all__ = ["Policy", "PolicyOutput", "PolicyError", "HandState", "check_image", "check_instruction",
           "MAX_INSTRUCTION_CHARS"]

# An instruction is a sentence, not a document: anything longer is a mistake
# (or an attack on the prompt budget) and is refused, not truncated.
MAX_INSTRUCTION_CHARS = 1000


@dataclass
class PolicyOutput:
    """One action produced by a policy.

    tokens:  the raw bins, one per embodiment dimension, in token order.
    action:  the decoded action, ``{dim name: value}`` (``terminate`` is a bool).
    plan:    chain-of-thought text ("" when not used).
    text:    the raw model text the tokens were parsed from.
    timings: milliseconds per stage: ``preprocess``, ``prefill``, ``decode``,
             ``total`` (stages a backend does not have are absent, ``total`` never is).
    """

    tokens: list[int]
    action: dict[str, Any]
    plan: str = ""
    text: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form printed by ``rt2-ros act``."""
        return {"tokens": list(self.tokens), "action": dict(self.action), "plan": self.plan,
                "text": self.text, "timings_ms": {k: round(v, 3) for k, v in self.timings.items()}}


@dataclass(frozen=True)
class HandState:
    """What the robot knows about its hand when the image was taken (proprioception).

    height_m:        the end effector's z in the robot's base frame (m).
    gripper_command: the last gripper command sent (closedness 0..1), None before the first.

    A checkpoint whose plan writes the hand's state (``--plan object_points_hand``,
    ``hand_points_offset``, ``hand_under_offset``) writes these numbers in its plan instead of
    guessing them from the image; backends without such a plan do not need them.
    """

    height_m: float
    gripper_command: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.height_m, bool) or not isinstance(self.height_m, (int, float)) \
                or not math.isfinite(self.height_m):
            raise PolicyError(f"hand.height_m: expected a finite height in m, got {self.height_m!r}")
        command = self.gripper_command
        if command is not None and (isinstance(command, bool) or not isinstance(command, (int, float))
                                    or not math.isfinite(command)):
            raise PolicyError(f"hand.gripper_command: expected a finite closedness 0..1 or None, got {command!r}")


class Policy(abc.ABC):
    """An RT-2 policy: newest image + instruction -> one legal action.

    ``act`` either returns a legal action for the policy's embodiment or raises
    :class:`PolicyError` (or ``ActionLanguageError`` for input the caller got
    wrong); it never returns something the action language would reject.
    """

    #: short backend name shown in diagnostics (``transformers``, ``remote``, ...)
    name: str = "policy"

    @abc.abstractmethod
    def act(self, image: np.ndarray, instruction: str, hand: HandState | None = None) -> PolicyOutput:
        """Return the action for ``image`` (HxWx3 uint8 RGB) and ``instruction``; ``hand``: the
        robot's own hand state at the image, for backends that use it (:class:`HandState`)."""

    def reset(self) -> None:
        """Forget per-episode state (called when a new instruction starts an episode)."""

    def close(self) -> None:
        """Release models, connections and threads; the policy is unusable afterwards."""

    def __enter__(self) -> "Policy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_image(image: Any) -> np.ndarray:
    """Return ``image`` if it is a non-empty HxWx3 uint8 array, else raise PolicyError."""
    if not isinstance(image, np.ndarray):
        raise PolicyError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise PolicyError(f"image: expected shape HxWx3 (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise PolicyError(f"image: expected dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PolicyError(f"image: expected a non-empty image, got {image.shape}")
    return image


def check_instruction(instruction: Any) -> str:
    """Return the stripped instruction, or raise PolicyError if it is empty or huge."""
    if not isinstance(instruction, str):
        raise PolicyError(f"instruction: expected a string, got {type(instruction).__name__}")
    text = instruction.strip()
    if not text:
        raise PolicyError("instruction: expected a non-empty instruction, got ''")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise PolicyError(f"instruction: expected at most {MAX_INSTRUCTION_CHARS} characters, "
                          f"got {len(text)}")
    return text
