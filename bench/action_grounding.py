"""Does a trained checkpoint's action look at the right places, and does the action use what it sees?

Two figures for issue 6's from-scratch models (docs/training.md section 6), on
fresh expert episodes written by ``rt2-ros collect`` (their steps carry the
grounding points: where the action heads and where the gripper is):

* **attention**: in the decoder layer the grounding loss supervises, the
  fraction of steps whose most-attended image token (averaged over the
  positions that predict the action tokens) is the goal's patch (heads of
  the first group) and the gripper's patch (the second group), plus the mean
  grounding loss; on the first step of each episode (the named object must be
  found from the words: the gripper is at home) and on every ``--stride``-th
  step;
* **actions**: the policy's own greedy action (``TransformersPolicy.act``,
  constrained decoding, the deployed path) against the expert's, as mean
  |bin error| per dim on the first steps, with the camera image and with a
  black image of the same size in the same run (a model that reads the scene
  does clearly worse without it), and with the image split by whether the
  goal's patch was found (a model whose actions read what it attends to does
  clearly better where it was);
* **plans** (checkpoints trained with ``--plan points``, ``object_points`` or ``object_points_hand``):
  the attention is read with the true plan written before the action
  (teacher forcing, as in training) at the positions that write each point's
  numbers (those the grounding loss points at that point, all heads; with
  ``object_points`` the object's patch is scored too), plus the action
  positions' attention mass on the plan's numbers (those it points at the
  plan), and the plan the policy writes on the first steps is compared with
  the true one (mean |error| of each point's column and row, in 256ths of the
  image);
* **does the action follow the plan** (planning checkpoints): with the true
  plan teacher-forced, but its goal column written as 32 and then as 224
  (the goal far left, then far right; under ``object_points`` the object's
  column with it), how far each action dim's expected bin moves between the
  two, on the first steps. The sideways (y) action has to change by well
  over a hundred bins for that if the action reads the plan; ~0 means the
  action ignores the goal's column it was given.  The same for the
  gripper's column: the way to go depends on where the gripper is too, which
  home-start episodes never vary (``rt2-ros collect --random-start`` does).
  Under ``object_points_hand`` also the hand state's numbers: its height
  written as 5 cm, then 30 cm, and the fingers as open (0), then closed (1).

``--decoding median`` scores the policy's actions under median decoding
(README, Median decoding) instead of greedy.

    rt2-ros collect --episodes 40 --seed 7000 --out /tmp/fresh --image-size 224 --shadows \\
        --exclude-objects purple --vqa-scenes 0
    python bench/action_grounding.py --model models/rt2_tabletop_cofinetuned --episodes /tmp/fresh

Seeds of the fresh episodes must not overlap the training seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _short(label: str) -> str:
    """A plan number's label (plan_number_labels) short enough for a table column."""
    return label.replace("gripper", "grip").replace("object", "obj").replace("offset", "off")


def _examples(episodes: list, embodiment, stride: int, plan: str):
    from rt2_ros.training.collate import Example
    from rt2_ros.errors import ConfigError
    from rt2_ros.training.episodes import plan_number_points, plan_point_names, sample_plan, sample_points

    names = plan_point_names(plan)
    reads = plan_number_points(plan)
    first, strided = [], []
    for episode in episodes:
        for index, step in enumerate(episode.steps):
            try:
                named = sample_points(plan, step.points or {}, episode.info.objects, step.gripper_command)
            except ConfigError as exc:
                raise SystemExit(f"{episode.path}: {exc}") from None
            if any(n not in named for n in names):
                raise SystemExit(f"{episode.path}: steps without the grounding points {', '.join(names)}; "
                                 f"collect with this version of rt2-ros collect")
            text = sample_plan(plan, step.points, episode.info.objects, step.height, step.gripper_command)
            example = Example("robot", step.image, step.instruction,
                              tokens=embodiment.encode({n: step.action[n] for n in embodiment.names}),
                              points=tuple(named[n] for n in names), plan=text,
                              number_points=reads)
            if index == 0:
                first.append(example)
            if index % stride == 0:
                strided.append(example)
    return first, strided


def trained_plan(checkpoint: Path, chain_of_thought: bool) -> str:
    """The plan kind ``rt2-ros train --plan`` gave ``checkpoint`` (its training summary; "points" for a
    planning checkpoint without one, "none" otherwise)."""
    import json

    from rt2_ros.training.trainer import SUMMARY_FILE

    summary = checkpoint / SUMMARY_FILE
    if summary.is_file():
        return str(json.loads(summary.read_text())["config"].get("plan", "none"))
    return "points" if chain_of_thought else "none"


def trained_grounding_layer(checkpoint: Path, layers: int) -> int:
    """The decoder layer ``rt2-ros train --grounding-layer`` supervised for ``checkpoint`` (its
    training summary; the middle layer, the trainer's default, when there is none)."""
    import json

    from rt2_ros.training.trainer import SUMMARY_FILE, grounding_layer_index

    summary = checkpoint / SUMMARY_FILE
    requested = -1
    if summary.is_file():
        requested = int(json.loads(summary.read_text())["config"].get("grounding_layer", -1))
    return grounding_layer_index(requested, layers)


def attention_figures(policy, examples: list, layer: int, names: tuple[str, ...] = ("goal", "gripper"),
                      batch_size: int = 16) -> dict[str, Any]:
    """Per point (``names``, in the examples' points order) the argmax hit rate (``<name>_hit``) and the
    mean grounding loss of ``examples`` in decoder ``layer``; ``goal_found`` is each example's goal
    hit (bool array), to split the action errors by; with plans also ``plan_mass``: the action
    positions' mean attention on the plan's numbers."""
    import torch

    from rt2_ros.training.collate import Rt2Collator
    from rt2_ros.training.trainer import grounding_loss, plan_attention_mass

    model = policy.model
    model.set_attn_implementation("eager")
    collator = Rt2Collator(policy.processor, policy.scheme, prefix_lm=True, grounding=True)
    hits: dict[str, list] = {name: [] for name in names}
    losses = []
    plan_mass = []
    for start in range(0, len(examples), batch_size):
        batch = collator(examples[start:start + batch_size])
        target, queries = batch.pop("grounding_target"), batch.pop("grounding_queries")
        numbers, plan_queries = batch.pop("plan_numbers"), batch.pop("plan_queries")
        batch.pop("labels")
        with torch.no_grad():
            attentions = model(**batch, output_attentions=True).attentions[layer]
        losses.append(float(grounding_loss(attentions, target, queries)) * len(target))
        for row in range(attentions.shape[0]):
            positions = numbers[row][numbers[row] >= 0]
            if len(positions):
                plan_mass.append(float(plan_attention_mass(attentions[row], plan_queries[row], positions).mean()))
        # As the loss reads them: without a plan the heads split into one group per point, all
        # answer positions; with one, all heads at the positions that write each point.
        groups = torch.arange(attentions.shape[1]).tensor_split(len(names))
        for row in range(attentions.shape[0]):
            for k, (name, point) in enumerate(zip(names, target[row])):
                if queries.dim() == 3:
                    looked = attentions[row][:, queries[row, k]].mean((0, 1))
                else:
                    looked = attentions[row, groups[k]][:, queries[row]].mean((0, 1))
                hits[name].append(int(looked.argmax()) == int(point))
    return {**{f"{name}_hit": float(np.mean(hits[name])) for name in names},
            "grounding_loss": sum(losses) / len(examples), "goal_found": np.array(hits["goal"], dtype=bool),
            "plan_mass": float(np.mean(plan_mass)) if plan_mass else None}


def _column_indices(words: list[str], point: str, plan: str) -> list[int]:
    """Where in a plan (kind ``plan``) of these words the column of ``point`` (a point or offset
    field), the number of a hand field ("height", "closed") or the number a full label names
    ("offset row": see plan_number_labels) is written; for the goal also the object's column
    when the plan has one, which the goal copies on the way to the object, so an action may read
    either."""
    from rt2_ros.training.episodes import plan_number_labels

    wanted = {f"{point} col", point} | ({"object col"} if point == "goal" else set())
    digits = [i for i, word in enumerate(words) if word.isdigit()]
    return [i for i, label in zip(digits, plan_number_labels(plan)) if label in wanted]


def plan_following(policy, examples: list, columns: tuple[int, int] = (32, 224),
                   batch_size: int = 16, point: str = "goal", plan: str = "points") -> np.ndarray:
    """Per example and dim, |expected bin with ``point``'s column (see _column_indices; ``plan``: the
    examples' plan kind) written as columns[1] - with columns[0]|, the rest of the true plan and
    the image unchanged (teacher forced), (N, dims)."""
    import dataclasses

    import torch

    from rt2_ros.training.collate import Rt2Collator

    collator = Rt2Collator(policy.processor, policy.scheme, prefix_lm=True)
    allowed = policy.allowed_token_ids()
    dims = len(allowed)
    expected: list[np.ndarray] = []
    for column in columns:
        variants = []
        for example in examples:
            words = example.plan.split()
            for index in _column_indices(words, point, plan):
                words[index] = str(column)
            variants.append(dataclasses.replace(example, plan=" ".join(words)))
        rows = []
        for start in range(0, len(variants), batch_size):
            batch, meta = collator.collate_with_meta(variants[start:start + batch_size])
            batch.pop("labels")
            with torch.no_grad():
                logits = policy.model(**batch).logits.float()
            for row in range(logits.shape[0]):
                first = meta.answer_start[row] - 1 + meta.plan_length[row]
                means = []
                for position in range(dims):
                    probabilities = logits[row, first + position, allowed[position]].softmax(-1)
                    means.append(float((probabilities * torch.arange(len(allowed[position]))).sum()))
                rows.append(means)
        expected.append(np.array(rows))
    return np.abs(expected[1] - expected[0])


def action_errors(policy, examples: list) -> dict[str, np.ndarray]:
    """|bin error| per example and dim, (N, dims), of the policy's greedy action, with the image and
    with a black one; for planning policies also ``plan_<key>``: |error| of the plan's numbers
    (each point's column and row; 128 where the plan does not have them)."""
    from rt2_ros.training.episodes import plan_numbers

    errors: dict[str, list] = {"image": [], "black": [], "plan_image": [], "plan_black": []}
    for example in examples:
        for key, image in (("image", example.image), ("black", np.zeros_like(example.image))):
            output = policy.act(image, example.text)
            errors[key].append([abs(a - b) for a, b in zip(output.tokens, example.tokens)])
            if example.plan:
                wanted, got = plan_numbers(example.plan), plan_numbers(output.plan)
                errors[f"plan_{key}"].append([abs(a - b) for a, b in zip(got, wanted)]
                                             if len(got) == len(wanted) else [128.0] * len(wanted))
    return {key: np.array(values, dtype=float) for key, values in errors.items() if values}


def main(argv: list[str] | None = None) -> int:
    from rt2_ros.policy.config import DECODINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (rt2-ros train output)")
    parser.add_argument("--episodes", required=True, help="fresh episodes: a collect output or a bag directory")
    parser.add_argument("--stride", type=int, default=5, help="every N-th step for the all-steps figures")
    parser.add_argument("--decoding", default="greedy", choices=DECODINGS,
                        help="how the policy's actions are decoded (default greedy)")
    parser.add_argument("--layer", type=int, default=None,
                        help="decoder layer to read the attention of (default: the one the checkpoint's "
                             "training supervised, from its training_summary.json; else the middle one)")
    args = parser.parse_args(argv)

    from rt2_ros.policy.transformers_backend import TransformersPolicy
    from rt2_ros.training.episodes import (HAND_WORDS, find_episodes, plan_layout, plan_number_labels,
                                           plan_point_names, read_episode)

    started = time.perf_counter()
    policy = TransformersPolicy.from_pretrained(args.model, dtype="float32", device="cpu", warmup=False,
                                                decoding=args.decoding)
    embodiment = policy.embodiment
    episodes = [read_episode(path, embodiment) for path in find_episodes(args.episodes)]
    if not episodes:
        raise SystemExit(f"{args.episodes}: no episodes")
    plan = trained_plan(Path(args.model), policy.chain_of_thought)
    if (plan != "none") != policy.chain_of_thought:
        raise SystemExit(f"{args.model}: its training summary says plan {plan!r}, but the checkpoint "
                         f"{'plans' if policy.chain_of_thought else 'does not plan'}")
    names = plan_point_names(plan)
    fields = [f.name for f in plan_layout(plan)]
    first, strided = _examples(episodes, embodiment, args.stride, plan)
    layers = policy.model.config.get_text_config().num_hidden_layers
    layer = trained_grounding_layer(Path(args.model), layers) if args.layer is None else args.layer
    if not 0 <= layer < layers:
        raise SystemExit(f"--layer: expected 0..{layers - 1} (the decoder's layers), got {layer}")
    patches = policy.model.config.vision_config.image_size // policy.model.config.vision_config.patch_size
    print(f"checkpoint {args.model}; {len(episodes)} fresh episodes from {args.episodes}")
    asking = "plan" if policy.chain_of_thought else "action"
    print(f"attention of the {asking} positions (decoder layer {layer}; chance ~1/{patches * patches} "
          f"per patch):")
    for label, examples in ((f"first steps ({len(first)})", first),
                            (f"every {args.stride}th step ({len(strided)})", strided)):
        figures = attention_figures(policy, examples, layer, names)
        print(f"  {label:<24} " + "  ".join(f"{name} patch {figures[f'{name}_hit']:.2f}" for name in names)
              + f"  grounding loss {figures['grounding_loss']:.2f}"
              + (f"  action on plan numbers {figures['plan_mass']:.2f}" if figures["plan_mass"] is not None
                 else ""))
        if examples is first:
            found = figures["goal_found"]
    errors = action_errors(policy, first)
    # Split by whether the goal patch was found: if the actions are no better where it was, the
    # attention is not what limits them - reading what it attends to is.
    rows = {"image": errors["image"], "black": errors["black"],
            f"image, goal found ({int(found.sum())})": errors["image"][found],
            f"image, goal missed ({int((~found).sum())})": errors["image"][~found]}
    print(f"{args.decoding} action vs the expert's, first steps, mean |bin error| per dim:")
    print("  " + " " * 27 + " ".join(f"{n:>9}" for n in embodiment.names))
    for key, values in rows.items():
        cells = values.mean(axis=0) if len(values) else [float("nan")] * len(embodiment.names)
        print(f"  {key:<26} " + " ".join(f"{v:9.1f}" for v in cells))
    if "plan_image" in errors:
        print("plan written vs the true one, first steps, mean |error| (256ths of the image):")
        print("  " + " " * 27 + " ".join(f"{_short(label):>9}" for label in plan_number_labels(plan)))
        for key in ("image", "black"):
            print(f"  {key:<26} " + " ".join(f"{v:9.1f}" for v in errors[f"plan_{key}"].mean(axis=0)))
        print("does the action follow the plan? first steps, true plan with one field's number written low, "
              "then high (a point's column 32 -> 224, the goal's with the object's; the offset's column and "
              "row 96 -> 160: the goal left / above, then right / below the hand): mean |change of the "
              "expected bin| per dim:")
        print("  " + " " * 27 + " ".join(f"{n:>9}" for n in embodiment.names))
        changes = [("goal", (32, 224)), ("gripper", (32, 224))]
        if "height" in fields:
            # The hand state's numbers: the height (cm) low, then high; the fingers open, then closed.
            changes += [("height", (5, 30)), ("closed", (0, 1))]
        if "offset" in fields:
            # Left, then right of the hand; above, then below it (forward / back on the table).
            changes += [("offset", (96, 160)), ("offset row", (96, 160))]
        for point, columns in changes:
            shift = plan_following(policy, first, columns=columns, point=point, plan=plan)
            label = f"{point}{'' if point in HAND_WORDS or ' ' in point else ' column'} {columns[0]} -> {columns[1]}"
            print(f"  {label:<26} " + " ".join(f"{v:9.1f}" for v in shift.mean(axis=0)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
