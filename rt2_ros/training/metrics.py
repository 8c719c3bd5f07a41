"""Held-out evaluation: action token accuracy and VQA exact match, from one forward pass per batch.

Greedy decoding with the answer fed back (teacher forcing) is what the
deployed model does as long as it is right, so:

* **action token accuracy**: at each action position, the argmax over the
  ids legal there (the constrained decoder's choice) equals the label;
  **action exact match**: all positions of an action are right; **bin
  error**: mean |predicted bin - label bin| over continuous dims;
* **VQA exact match**: at every answer position (end-of-sequence included)
  the argmax over free-text ids (the policy's ``answer`` mask) equals the
  label - exactly "greedy decoding reproduces the answer";
* **VQA point error**: for items with a ``point`` whose answer is two integers
  (the simulator's "where is the X?": column and row in 256ths of the image),
  the mean |predicted - true| of both numbers read from those argmax tokens;
  an answer that is not two integers counts 128 (half the range);
* **plan point error**: for robot answers with a plan (``plan="points"``, ``"object_points"`` or
  ``"object_points_hand"``), the mean |predicted - true| of the plan's integers
  (each point's column and row; under ``object_points_hand`` also the hand's
  height in cm and its 0/1 finger state), read from the argmax over free-text ids at the plan's positions; a
  plan whose integers do not line up with the label's counts 128.  Action
  metrics are taken at the action's own positions, after the plan.

Only the logits of the answer positions are computed (``logits_to_keep``),
so a 257k-token vocabulary costs a few answer positions, not the sequence.
"""
from __future__ import annotations

from typing import Any, Sequence

from rt2_ros.action_language import Embodiment, TokenScheme
from rt2_ros.training.collate import GROUNDING_KEYS, IGNORE_INDEX, MixtureDataset, Rt2Collator
from rt2_ros.training.episodes import plan_numbers

__all__ = ["evaluate_model"]


def _two_integers(text: str | None) -> tuple[int, int] | None:
    """``"120 37"`` -> (120, 37); None unless the text is exactly two integers."""
    parts = (text or "").split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _plan_error(tokenizer: Any, logits: Any, targets: Any, free_mask: Any) -> float:
    """Mean |predicted - true| of a plan's integers (128 when they do not line up)."""
    chosen = logits.masked_fill(~free_mask, float("-inf")).argmax(-1)
    wanted = plan_numbers(tokenizer.decode(targets.tolist()))
    got = plan_numbers(tokenizer.decode(chosen.tolist()))
    if not wanted:
        return 0.0
    if len(got) != len(wanted):
        return 128.0
    return sum(abs(a - b) for a, b in zip(got, wanted)) / len(wanted)


def _to_device(inputs: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    import torch

    moved = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)
        moved[key] = value
    return moved


def evaluate_model(model: Any, dataset: MixtureDataset, collator: Rt2Collator, scheme: TokenScheme,
                   embodiment: Embodiment, free_mask: Any, *, indices: Sequence[int] | None = None,
                   batch_size: int = 16) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset`` (all samples, or ``indices``); see the module doc.

    Returns ``loss`` (mean answer-token cross entropy), ``action_token_accuracy``,
    ``action_exact_match``, ``action_bin_error``, ``vqa_exact_match``, ``vqa_point_error``,
    ``plan_point_error`` and the
    sample counts (a metric with nothing to measure is NaN).
    """
    import torch

    indices = list(range(len(dataset))) if indices is None else list(indices)
    parameter = next(model.parameters())
    device = parameter.device
    dtype = parameter.dtype if parameter.is_floating_point() else torch.float32
    allowed = [torch.as_tensor(ids, device=device) for ids in scheme.allowed_ids(embodiment)]
    continuous = [dim.kind == "continuous" for dim in embodiment.dims]
    bin_of = {i: scheme.id_to_bin(i) for ids in scheme.allowed_ids(embodiment) for i in ids}
    free_mask = free_mask.to(device)
    totals = {"loss": 0.0, "tokens": 0, "action_tokens": 0, "action_correct": 0, "actions": 0,
              "actions_exact": 0, "bin_error": 0.0, "bin_count": 0, "vqa": 0, "vqa_exact": 0,
              "point_error": 0.0, "points": 0, "plan_error": 0.0, "plans": 0}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(indices), batch_size):
            examples = [dataset[i] for i in indices[start:start + batch_size]]
            inputs, meta = collator.collate_with_meta(examples)
            labels = inputs.pop("labels")
            for key in GROUNDING_KEYS:
                inputs.pop(key, None)
            # Positions whose logits predict an answer token: the one before each label.
            predicting = [list(range(s - 1, s - 1 + n + (1 if collator.eos_id is not None else 0)))
                          for s, n in zip(meta.answer_start, meta.answer_length)]
            keep = sorted({p for row in predicting for p in row})
            column = {p: k for k, p in enumerate(keep)}
            with torch.no_grad():
                logits = model(**_to_device(inputs, device, dtype),
                               logits_to_keep=torch.as_tensor(keep, device=device)).logits.float()
            for row, positions in enumerate(predicting):
                rows = logits[row, [column[p] for p in positions]]
                targets = labels[row, [p + 1 for p in positions]].to(device)
                assert bool((targets != IGNORE_INDEX).all())
                totals["loss"] += float(torch.nn.functional.cross_entropy(rows, targets, reduction="sum"))
                totals["tokens"] += len(positions)
                if meta.kinds[row] == "robot":
                    exact = True
                    offset = meta.plan_length[row]  # the plan's ids come first
                    if offset > 0:
                        totals["plan_error"] += _plan_error(collator.tokenizer, rows[:offset], targets[:offset],
                                                            free_mask)
                        totals["plans"] += 1
                    for j, ids in enumerate(allowed):
                        chosen = int(ids[int(rows[offset + j, ids].argmax())])
                        wanted = int(targets[offset + j])
                        right = chosen == wanted
                        totals["action_correct"] += int(right)
                        totals["action_tokens"] += 1
                        exact &= right
                        if continuous[j]:
                            totals["bin_error"] += abs(bin_of[chosen] - bin_of[wanted])
                            totals["bin_count"] += 1
                    totals["actions"] += 1
                    totals["actions_exact"] += int(exact)
                else:
                    chosen = rows.masked_fill(~free_mask, float("-inf")).argmax(-1)
                    totals["vqa"] += 1
                    totals["vqa_exact"] += int(bool((chosen == targets).all()))
                    wanted = _two_integers(examples[row].answer) if examples[row].points else None
                    if wanted is not None:
                        got = _two_integers(collator.tokenizer.decode(chosen[:meta.answer_length[row]].tolist()))
                        totals["point_error"] += (128.0 if got is None else
                                                  (abs(got[0] - wanted[0]) + abs(got[1] - wanted[1])) / 2)
                        totals["points"] += 1
    finally:
        model.train(was_training)

    def ratio(a: str, b: str) -> float:
        return float(totals[a]) / totals[b] if totals[b] else float("nan")

    return {"loss": ratio("loss", "tokens"), "action_token_accuracy": ratio("action_correct", "action_tokens"),
            "action_exact_match": ratio("actions_exact", "actions"), "action_bin_error": ratio("bin_error", "bin_count"),
            "vqa_exact_match": ratio("vqa_exact", "vqa"), "vqa_point_error": ratio("point_error", "points"),
            "plan_point_error": ratio("plan_error", "plans"),
            "robot_samples": float(totals["actions"]),
            "vqa_samples": float(totals["vqa"])}
