"""Turning samples into model inputs: one next-token loss on the answer tokens only.

Every sample becomes ``prompt ids + answer ids + eos``:

* the prompt is exactly what the policy feeds at inference
  (:meth:`TransformersPolicy.prompt_text`: the image token + the profile's
  robot prompt; for VQA the image token + the question), run through the
  model's own processor, which expands the image token and adds what the
  model needs (PaliGemma: ``<bos>`` and the newline);
* robot answers are :func:`~rt2_ros.policy.constrained_decoding.answer_token_ids`
  - one scheme id per action dim, the very sequence the constrained decoder
  emits; VQA answers are the tokenizer's ids of the answer text;
* ``labels`` are -100 on the prompt (image tokens included) and on padding,
  and the answer ids (and eos) on the answer, so the loss is the answer's
  next-token loss (transformers shifts the labels inside the model);
* prefix-LM models (PaliGemma) get ``token_type_ids`` 0 on the prompt and 1 on
  the answer and padding: the prompt attends bidirectionally, the answer
  causally, and no prompt position can see a label.  Other models keep the
  processor's ``token_type_ids`` (if any) on the prompt and 0 elsewhere.

Sequences are right-padded after the answer, so every real token keeps the
position it has at inference.

With ``grounding=True`` the batch also carries, for samples with ``points``
(VQA: where in the image the answer is; robot: where the action heads and
where the gripper is, and with plan ``object_points`` first where the task's
object is, :data:`~rt2_ros.training.episodes.GROUNDING_POINTS`),
``grounding_target``: (B, K) positions of the image tokens whose patches hold
the points (-1 where a row has fewer), and ``grounding_queries``: the
positions whose logits predict the answer.  The trainer pops both before the
forward pass; :func:`~rt2_ros.training.trainer.grounding_loss` points the
heads at them (see ``TrainConfig.grounding_weight``).  Without a plan the
queries are (B, L), every answer position, and a row's heads are split into
as many groups as it has points, one group per point.  With a plan they are
(B, K, L): each point is asked for by the positions that predict its own two
numbers in the plan, with all heads, as a "where is the X?" answer asks for
its one point; the action's positions are pointed at the plan instead:
``plan_numbers`` (B, M) are the positions of the plan's number tokens (-1
where a row has fewer; rows without a plan have none) and ``plan_queries``
the positions that predict the action tokens
(:func:`~rt2_ros.training.trainer.plan_reading_loss`).

With ``plan="points"`` robot answers are chain of thought (RT-2's ``Plan:
<words> Action: <integers>``) whose plan says where the action heads and
where the gripper is, in the simulator VQA's "where is the X?" units
(256ths of the image width and height): ``Plan: goal 131 88 gripper 127 201
Action: 0 ...``.  The model then writes the two points before the action, so
the action tokens read them from text it wrote, not only from image tokens.
``plan="object_points"`` first names the task's object and points at it in
the words of a "where is the X?" answer (``Plan: green sphere 211 175 goal
...``), so the plan starts with the skill the pointing questions teach.
``plan="object_points_hand"`` adds the hand's state after the points
(``... gripper 127 201 height 31 closed 0``: the end effector's height in cm
and whether the fingers were last told to close), which two image points
cannot say; with grounding, those two numbers are asked to read the
gripper's patch.  ``plan="hand_points_offset"`` writes the hand first, then
the object and the goal, then where the goal lies from the hand (``Plan:
gripper 127 201 height 31 closed 0 green sphere 211 175 goal 131 88 offset
130 71 Action: ...``; :func:`~rt2_ros.training.episodes.offset_plan`), the
offset's numbers asked to read the goal's patch.  ``plan="hand_under_offset"``
measures the offset from the point under the hand, and ``plan="hand_target_offset"``
then names and points at the object the hand heads for rather than always the
task's object: the reference object ("the red cube" of "move the orange
cylinder near the red cube") once the fingers are closed
(:func:`~rt2_ros.training.episodes.target_of`).  Which point each number
reads is the plan layout's (:data:`~rt2_ros.action_language.plans.PLAN_LAYOUTS`).
Items with ``plan_given`` (``MixtureDataset(plan_given_fraction=...)``) take
the plan as context: no loss on it, only on the action and eos.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rt2_ros.action_language import Embodiment, TokenScheme
from rt2_ros.errors import ConfigError
from rt2_ros.policy.constrained_decoding import answer_token_ids, encode_text
from rt2_ros.policy.profiles import PROFILES
from rt2_ros.training.episodes import (HAND_WORDS, PLAN_KINDS, plan_layout, plan_number_points, plan_point_names,
                                       sample_plan, sample_points, target_of)
from rt2_ros.training.samples import SampleSet

__all__ = ["IGNORE_INDEX", "PREFIX_LM_MODEL_TYPES", "GROUNDING_KEYS", "Example", "MixtureDataset", "Rt2Collator",
           "BatchMeta"]

IGNORE_INDEX = -100
#: Model types whose attention is prefix-LM, switched by token_type_ids (0 = prefix, 1 = suffix).
PREFIX_LM_MODEL_TYPES = ("paligemma",)
#: Batch entries that are not model inputs (``Rt2Collator(grounding=True)``).
GROUNDING_KEYS = ("grounding_target", "grounding_queries", "plan_numbers", "plan_queries")
@dataclass
class Example:
    """One sample as the collator takes it: ``kind`` is "robot" (``tokens``) or "vqa" (``answer``)."""

    kind: str
    image: np.ndarray
    text: str                       # instruction (robot) or question (vqa)
    tokens: list[int] | None = None
    answer: str | None = None
    #: image points to attend to, (x, y) fractions of the image: vqa (where the answer is,),
    #: robot (where the action heads, where the gripper is); None when the sample has none
    points: tuple[tuple[float, float], ...] | None = None
    #: robot: chain-of-thought plan written before the action (None: the action alone)
    plan: str | None = None
    #: robot with a plan: the plan is context, not a target (no loss on it; see ``plan_given_fraction``)
    plan_given: bool = False
    #: robot with a plan: for each integer the plan writes, the index in ``points`` of the point
    #: whose patch it is asked to read with grounding (:func:`~rt2_ros.training.episodes.plan_number_points`;
    #: empty: each point's two numbers in the points' order, as plans without the hand state write them)
    number_points: tuple[int, ...] = ()


class MixtureDataset:
    """Robot samples (indices ``0..R-1``) then VQA samples, as :class:`Example` items.

    ``embodiment`` is the one the model is trained to speak: when it is not
    the one the robot samples were read in (``cache_embodiment``, e.g. bounds
    fitted to the data), every action is re-encoded once from its values.
    ``plan`` (:data:`PLAN_KINDS`): what robot answers write before the action.

    ``plan_given_fraction``: the share of robot items (drawn per item, from a
    generator seeded with ``seed``) that teach the action to follow the plan:
    the image is another robot sample's and the true plan is given as context
    (``Example.plan_given``: no loss on it, no grounding points). A model
    trained on true plans with matching images can read the action off the
    image and ignore the plan it wrote; on these items only the plan tells the
    action, so the action tokens have to learn to follow it.
    """

    def __init__(self, robot: SampleSet | None, vqa: SampleSet | None, embodiment: Embodiment,
                 cache_embodiment: Embodiment | None = None, plan: str = "none",
                 plan_given_fraction: float = 0.0, seed: int = 0):
        if plan not in PLAN_KINDS:
            raise ConfigError(f"plan: expected one of {', '.join(PLAN_KINDS)}, got {plan!r}")
        if not 0.0 <= plan_given_fraction <= 1.0 or (plan_given_fraction and plan == "none"):
            raise ConfigError(f"plan_given_fraction: expected 0..1 with a plan, got {plan_given_fraction} "
                              f"(plan {plan!r})")
        self.plan_given_fraction = plan_given_fraction
        self._draws = np.random.default_rng(seed)
        self.robot = robot
        self.vqa = vqa
        self.embodiment = embodiment
        self.plan = plan
        records = robot.records if robot is not None else []
        # Robot samples point at what their plan writes, in its order (without a plan: the goal
        # and the gripper, as before plans existed).
        self._point_names = plan_point_names(plan)
        if plan != "none":
            # The target is chosen per sample from recorded points (episodes.target_of), checked below.
            wanted = [n for n in self._point_names if n != "target"]
            lacking = [r for r in records if not all(n in (r.get("points") or {}) for n in wanted)]
            if lacking:
                absent = sorted({n for r in lacking for n in wanted if n not in (r.get("points") or {})})
                raise ConfigError(f"plan: {plan!r} needs robot samples with the grounding points "
                                  f"{', '.join(wanted)} (rt2-ros collect records them; bags collected before "
                                  f"a point was recorded lack it), {len(lacking)} of {len(records)} lack "
                                  f"{', '.join(absent)}")
        if "object" in self._point_names or "target" in self._point_names:
            unnamed = sum(1 for r in records if not r.get("objects"))
            if unnamed:
                raise ConfigError(f"plan: {plan!r} needs each robot sample's task object (the "
                                  f"episode's rt2_ros.objects), {unnamed} of {len(records)} have none")
        if "target" in self._point_names:
            untargeted = []
            for r in records:
                try:
                    target_of(r["points"], r["objects"], r.get("gripper_command"))
                except ConfigError as exc:
                    untargeted.append(str(exc))
            if untargeted:
                raise ConfigError(f"plan: {plan!r} points at the object the hand heads for, {len(untargeted)} of "
                                  f"{len(records)} robot samples cannot say which: {untargeted[0]}")
        self._number_points = plan_number_points(plan)
        if any(f.name in HAND_WORDS for f in plan_layout(plan)):
            unposed = sum(1 for r in records if r.get("height") is None)
            if unposed:
                raise ConfigError(f"plan: {plan!r} needs each robot sample's hand height (the episode's "
                                  f"end-effector pose topic at the image; samples cached before rt2_ros.samples/5 "
                                  f"lack it and are rebuilt), {unposed} of {len(records)} have none")
        if cache_embodiment is None or cache_embodiment == embodiment:
            self._tokens = [list(r["tokens"]) for r in records]
        else:
            self._tokens = [embodiment.encode({n: r["action"][n] for n in embodiment.names}) for r in records]

    @property
    def robot_count(self) -> int:
        """Number of robot samples."""
        return len(self.robot) if self.robot is not None else 0

    @property
    def vqa_count(self) -> int:
        """Number of VQA samples."""
        return len(self.vqa) if self.vqa is not None else 0

    def __len__(self) -> int:
        return self.robot_count + self.vqa_count

    def robot_tokens(self, index: int) -> list[int]:
        """The action bins of robot sample ``index`` in the training embodiment."""
        return self._tokens[index]

    def __getitem__(self, index: int) -> Example:
        index = int(index)
        if index < 0 or index >= len(self):
            raise IndexError(f"sample {index} outside 0..{len(self) - 1}")
        if index < self.robot_count:
            record = self.robot.records[index]
            named = record.get("points")
            if named and self.plan != "none":
                named = sample_points(self.plan, named, record.get("objects", ()), record.get("gripper_command"))
            points = tuple(tuple(named[n]) for n in self._point_names) if named else None
            plan = sample_plan(self.plan, named, record.get("objects", ()), record.get("height"),
                               record.get("gripper_command"))
            if self.plan_given_fraction and self._draws.random() < self.plan_given_fraction:
                other = int(self._draws.integers(self.robot_count))
                return Example("robot", np.asarray(self.robot.image(other)), record["instruction"],
                               tokens=self._tokens[index], plan=plan, plan_given=True)
            return Example("robot", np.asarray(self.robot.image(index)), record["instruction"],
                           tokens=self._tokens[index], points=points, plan=plan,
                           number_points=self._number_points)
        index -= self.robot_count
        record = self.vqa.records[index]
        point = record.get("point")
        return Example("vqa", np.asarray(self.vqa.image(index)), record["question"], answer=record["answer"],
                       points=(tuple(point),) if point else None)


@dataclass
class BatchMeta:
    """Per row of a batch: the sample kind, where its answer starts, how many answer ids
    (without eos) it has and how many of them are the plan's (0 without a plan: the action's ids
    come after the plan's)."""

    kinds: list[str]
    answer_start: list[int]
    answer_length: list[int]
    plan_length: list[int] = field(default_factory=list)


class Rt2Collator:
    """Build a batch of model inputs from :class:`Example` items (see the module doc)."""

    def __init__(self, processor: Any, scheme: TokenScheme, *, profile: str = "rt2",
                 prefix_lm: bool = False, add_eos: bool = True, max_length: int | None = None,
                 grounding: bool = False):
        if profile not in PROFILES:
            raise ConfigError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.scheme = scheme
        self.profile = PROFILES[profile]
        self.prefix_lm = prefix_lm
        self.image_token = getattr(processor, "image_token", None)
        if not self.image_token:
            raise ConfigError(f"processor {type(processor).__name__} has no image token")
        self.eos_id = self.tokenizer.eos_token_id if add_eos else None
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.max_length = max_length
        self.grounding = grounding
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self._is_number: dict[int, bool] = {}

    def is_number(self, token_id: int) -> bool:
        """Whether ``token_id`` decodes to an integer (a plan's number), memoised per id."""
        known = self._is_number.get(token_id)
        if known is None:
            known = self._is_number[token_id] = self.tokenizer.decode([token_id]).strip().isdigit()
        return known

    def prompt_text(self, example: Example) -> str:
        """The text given to the processor with the image (what the policy gives at inference)."""
        if example.kind == "robot":
            return self.image_token + self.profile.prompt(example.text)
        return self.image_token + " ".join(example.text.split())

    def answer_ids(self, example: Example) -> list[int]:
        """The answer's ids without eos: [plan ids +] action ids (robot) or the answer text's ids (vqa)."""
        if example.kind == "robot":
            return answer_token_ids(self.tokenizer, self.scheme, example.tokens, plan=example.plan)
        ids = encode_text(self.tokenizer, " ".join(example.answer.split()))
        if not ids:
            raise ConfigError(f"answer {example.answer!r}: the tokenizer makes no tokens of it")
        return ids

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        return self.collate_with_meta(examples)[0]

    def collate_with_meta(self, examples: Sequence[Example]) -> tuple[dict[str, Any], BatchMeta]:
        """The model inputs and the per-row :class:`BatchMeta` (for evaluation)."""
        import torch
        from PIL import Image

        encoded = self.processor(images=[Image.fromarray(e.image) for e in examples],
                                 text=[self.prompt_text(e) for e in examples], return_tensors="pt",
                                 padding=True)
        prompt_ids, prompt_mask = encoded["input_ids"], encoded["attention_mask"].bool()
        processor_types = encoded.get("token_type_ids")
        rows, meta = [], BatchMeta([], [], [], [])
        for row, example in enumerate(examples):
            keep = prompt_mask[row]
            prompt = prompt_ids[row][keep].tolist()  # padding removed, whichever side it was on
            answer = self.answer_ids(example)
            tail = answer + ([self.eos_id] if self.eos_id is not None else [])
            if self.prefix_lm:
                types = [0] * len(prompt) + [1] * len(tail)
            elif processor_types is not None:
                types = processor_types[row][keep].tolist() + [0] * len(tail)
            else:
                types = None
            targets = list(tail)
            plan_length = len(answer) - len(example.tokens) if example.kind == "robot" and example.plan else 0
            if example.plan_given:
                # The plan is context here; only the action (and eos) is learnt.
                targets[:plan_length] = [IGNORE_INDEX] * plan_length
            rows.append((prompt + tail, [IGNORE_INDEX] * len(prompt) + targets, types))
            meta.kinds.append(example.kind)
            meta.answer_start.append(len(prompt))
            meta.answer_length.append(len(answer))
            meta.plan_length.append(plan_length)
        length = max(len(ids) for ids, _, _ in rows)
        if self.max_length is not None and length > self.max_length:
            raise ConfigError(f"max_length: a sample needs {length} tokens, more than {self.max_length}")
        batch = len(rows)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        with_types = rows[0][2] is not None
        token_types = torch.full((batch, length), 1 if self.prefix_lm else 0, dtype=torch.long) \
            if with_types else None
        for row, (ids, targets, types) in enumerate(rows):
            n = len(ids)
            input_ids[row, :n] = torch.as_tensor(ids)
            labels[row, :n] = torch.as_tensor(targets)
            attention[row, :n] = 1
            if token_types is not None:
                token_types[row, :n] = torch.as_tensor(types)
        inputs: dict[str, Any] = {key: value for key, value in encoded.items()
                                  if key not in ("input_ids", "attention_mask", "token_type_ids", "labels")}
        inputs.update(input_ids=input_ids, attention_mask=attention, labels=labels)
        if token_types is not None:
            inputs["token_type_ids"] = token_types
        if self.grounding:
            inputs.update(self._grounding(examples, input_ids, meta))
        return inputs, meta

    def _grounding(self, examples: Sequence[Example], input_ids: Any, meta: BatchMeta) -> dict[str, Any]:
        """``grounding_target`` / ``grounding_queries`` and ``plan_numbers`` / ``plan_queries`` (see the
        module doc)."""
        import torch

        numbers: list[list[int]] = []
        plan_queries = torch.zeros(input_ids.shape, dtype=torch.bool)
        for row, example in enumerate(examples):
            numbers.append([])
            if example.kind != "robot" or not example.plan:
                continue
            start, length, plan_length = meta.answer_start[row], meta.answer_length[row], meta.plan_length[row]
            for position in range(start, start + plan_length):
                if self.is_number(int(input_ids[row, position])):
                    numbers[row].append(position)
            plan_queries[row, start - 1 + plan_length:start - 1 + length] = True
        plan_numbers = torch.full((len(examples), max(1, max(len(n) for n in numbers))), -1, dtype=torch.long)
        for row, positions in enumerate(numbers):
            plan_numbers[row, :len(positions)] = torch.as_tensor(positions, dtype=torch.long)
        plan = {"plan_numbers": plan_numbers, "plan_queries": plan_queries}

        width = max((len(e.points) for e in examples if e.points), default=1)
        target = torch.full((len(examples), width), -1, dtype=torch.long)
        # A batch with planning rows asks for each point at its own positions (module doc).
        per_point = any(e.kind == "robot" and e.plan and e.points for e in examples)
        queries = torch.zeros((len(examples), width, input_ids.shape[1]) if per_point else input_ids.shape,
                              dtype=torch.bool)
        for row, example in enumerate(examples):
            if not example.points:
                continue
            positions = torch.nonzero(input_ids[row] == self.image_token_id).flatten()
            grid = int(round(len(positions) ** 0.5))
            if grid * grid != len(positions) or grid == 0:
                raise ConfigError(f"grounding: needs a square grid of image tokens, the processor gives "
                                  f"{len(positions)}")
            for k, (x, y) in enumerate(example.points):
                # A point just outside the image (a gripper at the frame's edge) takes the edge patch.
                column, line = (min(max(int(f * grid), 0), grid - 1) for f in (x, y))
                target[row, k] = positions[line * grid + column]
            start = meta.answer_start[row]
            # With a plan, the plan's positions are the ones that read the image; the action's
            # positions are left free to read the numbers the plan wrote (its own arithmetic).
            asked = meta.plan_length[row] or meta.answer_length[row]
            if not per_point:
                queries[row, start - 1:start - 1 + asked] = True
                continue
            own = numbers[row]
            reads = example.number_points or tuple(k for k in range(len(example.points)) for _ in range(2))
            if meta.plan_length[row] and len(own) == len(reads):
                # The position whose logits predict each number asks for the point it is read from
                # (a point's column and row its own; the hand's height and fingers the gripper's).
                for position, k in zip(own, reads):
                    queries[row, k, position - 1] = True
            else:
                # No plan (a VQA point), or numbers that do not line up with the points (a
                # tokenizer that splits them): every point is asked for by the whole plan/answer.
                queries[row, :len(example.points), start - 1:start - 1 + asked] = True
        return {"grounding_target": target, "grounding_queries": queries, **plan}
