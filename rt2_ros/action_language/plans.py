"""The words of a chain-of-thought plan: which fields a plan kind writes, and the ones the
decoder computes instead of the model.

A planning checkpoint answers ``Plan: <fields> Action: <integers>``; each
field is a word followed by integers (``gripper 127 54``, ``height 30``,
``offset 166 190``; the task's object is written by its name).  The trainer
builds the plans from episodes (:mod:`rt2_ros.training.episodes`), the
transformers backend decodes them; both read the layouts here.

A *derived* field is arithmetic on fields written before it (the offset is
the goal's point minus the gripper's, or minus the point under the hand).
A small model does not learn that subtraction from its examples
(docs/training.md section 6, item 13), so the decoder writes a derived
field's numbers itself from the numbers the model wrote:
:func:`derived_numbers`.

The words themselves are fixed by the layout too: with layout decoding the
decoder writes each field's word and leaves the model only the object's name
and the numbers, each number chosen among the values its field can take
(``PlanField.values``; docs/training.md section 6, item 16).

Pure Python: no torch, no rclpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from rt2_ros.errors import ConfigError

__all__ = ["POINT_BINS", "HAND_WORDS", "MAX_NAME_WORDS", "PlanField", "PLAN_LAYOUTS", "PLAN_KINDS", "point_bin",
           "plan_layout", "plan_number_labels", "offset_numbers", "derived_numbers", "hand_numbers", "fingers_closed",
           "parse_plan"]

#: Image points as text: column and row in 256ths of the width and height (the simulator's
#: "where is the X?" answers and the plans).
POINT_BINS = 256
#: The words of a plan's hand state, each followed by its integer.
HAND_WORDS = ("height", "closed")
#: The longest object name a plan writes with layout decoding ("orange cylinder": 2).
MAX_NAME_WORDS = 4


@dataclass(frozen=True)
class PlanField:
    """One part of a plan: a word (``"object"`` is written as an object's name: the task's, or with
    ``reads="target"`` the one the hand heads for), the
    integers that follow it, the grounding point whose image patch those integers are read
    from (``rt2-ros train --grounding-weight`` asks the positions predicting them to look there),
    and, for a field the decoder computes from earlier ones (:func:`derived_numbers`), the two
    points it is the offset between: ``(to, from)``, written before it.  ``values``: each integer
    is one of ``0..values-1`` (a point's bins, centimetres of height, or 0/1 for the fingers)."""

    name: str
    numbers: int
    reads: str
    offset_of: tuple[str, str] | None = None
    values: int = POINT_BINS

    @property
    def derived(self) -> bool:
        """Whether the decoder writes this field's numbers (:func:`derived_numbers`)."""
        return self.offset_of is not None


def _point_field(name: str) -> PlanField:
    return PlanField(name, 2, name)


_HAND_FIELDS = (PlanField("height", 1, "gripper"), PlanField("closed", 1, "gripper", values=2))
#: What robot answers plan before the action, field by field: nothing; the goal and gripper
#: image points ("points"); or first the task's object named and pointed at as a "where is the
#: X?" answer does, then the goal and gripper ("object_points"); or that and then the hand's
#: state: its height and whether the fingers were last told to close ("object_points_hand"); or
#: the hand first (its point, height and fingers), then the object and the goal, then the goal's
#: offset from the hand ("hand_points_offset": see :func:`offset_numbers`), which the action
#: reads its direction from and the decoder computes; or that with the point under the hand at
#: the goal's height written after the goal, the offset then measured from it ("hand_under_offset":
#: the offset is then horizontal distance only, where the gripper's own point mixes in its height,
#: docs/training.md section 6, item 15); or that with the object field naming and pointing at the
#: object the hand heads for ("hand_target_offset", the grounding point "target": the task's object
#: until the fingers are told to close, then the task's reference object when it has one, so a
#: carrying task's plan says where the held object goes, item 18).
PLAN_LAYOUTS: dict[str, tuple[PlanField, ...]] = {
    "none": (),
    "points": (_point_field("goal"), _point_field("gripper")),
    "object_points": (_point_field("object"), _point_field("goal"), _point_field("gripper")),
    "object_points_hand": (_point_field("object"), _point_field("goal"), _point_field("gripper"), *_HAND_FIELDS),
    "hand_points_offset": (_point_field("gripper"), *_HAND_FIELDS, _point_field("object"), _point_field("goal"),
                           PlanField("offset", 2, "goal", offset_of=("goal", "gripper"))),
    "hand_under_offset": (_point_field("gripper"), *_HAND_FIELDS, _point_field("object"), _point_field("goal"),
                          _point_field("under"), PlanField("offset", 2, "goal", offset_of=("goal", "under"))),
    "hand_target_offset": (_point_field("gripper"), *_HAND_FIELDS, PlanField("object", 2, "target"),
                           _point_field("goal"), _point_field("under"),
                           PlanField("offset", 2, "goal", offset_of=("goal", "under"))),
}
PLAN_KINDS = tuple(PLAN_LAYOUTS)


def point_bin(fraction: float) -> int:
    """A fraction of the image width or height as its POINT_BINS bin (off the image: the edge bin)."""
    return min(max(int(float(fraction) * POINT_BINS), 0), POINT_BINS - 1)


def plan_layout(kind: str) -> tuple[PlanField, ...]:
    """The fields plan ``kind`` (PLAN_KINDS) writes, in order (validates ``kind``)."""
    if kind not in PLAN_LAYOUTS:
        raise ConfigError(f"plan: expected one of {', '.join(PLAN_KINDS)}, got {kind!r}")
    return PLAN_LAYOUTS[kind]


def plan_number_labels(kind: str) -> tuple[str, ...]:
    """A short label per integer plan ``kind`` writes (``"goal col"``, ``"height"``, ...)."""
    return tuple(f"{f.name} {axis}" if f.numbers == 2 else f.name
                 for f in plan_layout(kind) for axis in (("col", "row") if f.numbers == 2 else ("",)))


def hand_numbers(height: float | None, gripper_command: float | None) -> dict[str, int]:
    """The hand's state as plan numbers, by HAND_WORDS: ``{"height": 31, "closed": 0}``.

    ``height`` is the end effector's z in the robot's base frame (m; an
    episode's ``/ee_pose`` at the image), written in whole centimetres
    (0..POINT_BINS-1, like a point's numbers); ``closed`` is 1 when the last
    gripper command before the image asked for at least half closed (0 =
    open, 1 = closed), 0 before any command.  Two image points cannot say how
    high the hand is or whether it holds something; the action depends on
    both (docs/training.md section 6, item 11).
    """
    if height is None or not math.isfinite(float(height)):
        raise ConfigError(f"height: expected the end effector's height in m (the end-effector pose's z at the "
                          f"image), got {height!r}")
    centimetres = min(max(int(round(float(height) * 100)), 0), POINT_BINS - 1)
    return dict(zip(HAND_WORDS, (centimetres, int(fingers_closed(gripper_command)))))


def fingers_closed(gripper_command: float | None) -> bool:
    """Whether the last gripper command (closedness 0..1; None before the first) asked for at least
    half closed: a plan's ``closed`` field, and when plan ``hand_target_offset`` turns to the reference."""
    if gripper_command is not None and not math.isfinite(float(gripper_command)):
        raise ConfigError(f"gripper_command: expected a finite closedness 0..1 or None, got {gripper_command!r}")
    return gripper_command is not None and float(gripper_command) >= 0.5


def offset_numbers(goal: Sequence[int], gripper: Sequence[int]) -> tuple[int, int]:
    """Where the goal is seen from the gripper (or any point to from another): ``128 + (goal bin -
    gripper bin) // 2`` for the column, then the row (point bins, halved so the whole image fits in
    0..255; 128 = the hand is at the goal's column/row, above 128 = the goal lies right of / below
    the hand)."""
    column, row = (min(max(POINT_BINS // 2 + (int(g) - int(h)) // 2, 0), POINT_BINS - 1)
                   for g, h in zip(goal, gripper))
    return column, row


def _last_point(words: list[str], name: str) -> tuple[int, int] | None:
    """The two integers after the last ``name`` in ``words`` (None when not written so)."""
    for index in range(len(words) - 3, -1, -1):
        if words[index] == name:
            numbers = words[index + 1:index + 3]
            if all(word.isdigit() and int(word) < POINT_BINS for word in numbers):
                return int(numbers[0]), int(numbers[1])
            return None
    return None


def derived_numbers(kind: str, text: Iterable[str] | str) -> list[int] | None:
    """The numbers the decoder writes next when plan ``text`` (the plan so far, ending with a
    word) has just named a derived field of plan ``kind``; None when the last word is not one,
    or when the fields it is computed from were not written as integers (the model's numbers
    are then left to the model)."""
    words = text.split() if isinstance(text, str) else list(text)
    if not words:
        return None
    field = next((f for f in plan_layout(kind) if f.derived and f.name == words[-1]), None)
    if field is None:
        return None
    to, origin = (_last_point(words[:-1], name) for name in field.offset_of)
    if to is None or origin is None:
        return None
    return list(offset_numbers(to, origin))


def parse_plan(kind: str, text: str) -> dict[str, list[int]] | None:
    """The numbers of each field of plan ``text`` in plan ``kind``'s layout, by field name (the
    object's numbers under ``"object"``, its name left out); None when ``text`` does not follow the
    layout word for word (a word missing or misplaced, a number out of its field's range, an object
    name of no word or more than MAX_NAME_WORDS words, anything after the last field)."""
    words = text.split()
    found: dict[str, list[int]] = {}
    at = 0
    for field in plan_layout(kind):
        if field.name == "object":
            start = at
            while at < len(words) and not words[at].isdigit():
                at += 1
            if not 1 <= at - start <= MAX_NAME_WORDS:
                return None
        elif at < len(words) and words[at] == field.name:
            at += 1
        else:
            return None
        numbers = words[at:at + field.numbers]
        if len(numbers) != field.numbers or not all(n.isdigit() and int(n) < field.values for n in numbers):
            return None
        found[field.name] = [int(n) for n in numbers]
        at += field.numbers
    return found if at == len(words) else None
