"""Constrained greedy decoding of action tokens, computed only where it matters.

On a robot prompt only the action ids of the token scheme may be generated,
position by position (a discrete dim such as ``terminate`` only its values),
whatever the weights say.  Greedy decoding under that constraint is an
argmax over the *allowed* logits, so instead of computing the full
vocabulary's logits (257k rows for PaliGemma) and masking all but 256 of
them, :class:`ActionHead` multiplies the last hidden state by the allowed
rows of the output projection only (``lm_head.weight[allowed_ids]``, plus the
bias if there is one).  The result is the same argmax as "full logits +
mask" and costs ~1/1000 of the projection.  A final logit soft-cap
(``tanh(x / c) * c``, Gemma-2) is strictly increasing, so it cannot change
an argmax and is not applied.

Median decoding (``decoding="median"``)
---------------------------------------
A continuous dim's bins are ordered, and the argmax of their distribution
is not the best single bin when the distribution is spread: a policy unsure
whether to move 4 cm left or right puts its two peaks at the bounds, and the
argmax picks one of them. :func:`median_index` picks the bin where the
cumulative probability of the allowed bins first reaches one half instead -
the choice with the least expected ``|bin error|`` under the model's own
distribution. It is still one legal token, fed back like a greedy one.
Discrete dims (``terminate``) keep the argmax.

:func:`allowed_mask` builds the equivalent boolean mask, sized to the
logits width (which may exceed ``len(tokenizer)``: checkpoints pad their
vocabulary), for backends that only get full logits and for tests.

Text around the action (the rule shared with the trainer)
----------------------------------------------------------
The answer's tokens follow the processor's prompt tokens directly:

* plain:  ``scheme.ids_for_bins(bins)``, one token per action dim and no
  separator tokens.  The spaces of ``"1 128 91"`` are not generated: under
  the ``integer`` scheme each number is one token and detokenising puts the
  spaces back (the scheme picks the token the tokenizer makes of
  ``" " + str(i)``); ``least_frequent`` / ``last`` ids have no spelling of
  their own.  ``PolicyOutput.text`` is therefore always the canonical
  :func:`~rt2_ros.action_language.format_action_text` form.
* chain of thought: ``encode("Plan:")`` + the plan's tokens +
  ``encode(" Action:")`` + the action ids as above.

A trainer builds its labels with :func:`answer_token_ids`, which produces
exactly this sequence (and is what tokenising ``format_action_text`` gives
for whitespace-splitting tokenizers with single-token numbers).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from rt2_ros.action_language import TokenScheme
from rt2_ros.action_language.prompts import ACTION_MARKER, PLAN_MARKER
from rt2_ros.policy.config import DECODINGS

__all__ = ["ActionHead", "allowed_mask", "free_text_mask", "encode_text", "answer_token_ids",
           "median_index", "DECODINGS", "PLAN_PREFIX", "ACTION_PREFIX"]


#: Text forced at the start of a chain-of-thought answer, and before its action.
PLAN_PREFIX = PLAN_MARKER
ACTION_PREFIX = " " + ACTION_MARKER


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_token_ids(tokenizer: Any, scheme: TokenScheme, bins: Sequence[int],
                     plan: str | None = None) -> list[int]:
    """The answer ids the decoder produces for ``bins`` (and ``plan``): the training target.

    Append them (and ``tokenizer.eos_token_id`` if the trainer wants a stop
    token) to the prompt ids of the processor.
    """
    action = scheme.ids_for_bins(bins)
    words = " ".join(plan.split()) if plan else ""
    if not words:
        return action
    return (encode_text(tokenizer, f"{PLAN_PREFIX} {words}") + encode_text(tokenizer, ACTION_PREFIX)
            + action)


def allowed_mask(allowed_ids: Sequence[Sequence[int]], width: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``(positions, width)`` mask, True where an id is legal at that position.

    ``width`` is the model's logits width, not ``len(tokenizer)``; an id
    outside it is an error (the scheme does not fit the model).
    """
    mask = torch.zeros(len(allowed_ids), width, dtype=torch.bool, device=device)
    for position, ids in enumerate(allowed_ids):
        if not ids:
            raise ValueError(f"position {position}: no allowed ids")
        if max(ids) >= width:
            raise ValueError(f"position {position}: id {max(ids)} is outside the logits width {width}")
        mask[position, torch.as_tensor(list(ids), device=device)] = True
    return mask


def free_text_mask(tokenizer: Any, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``(width,)`` mask of the ids free text may use.

    Everything the tokenizer knows except its special tokens, plus the
    end-of-sequence token (free text must be able to stop).  Padding rows of
    the logits beyond ``len(tokenizer)`` are excluded: they have no text.
    """
    mask = torch.zeros(width, dtype=torch.bool, device=device)
    mask[:min(len(tokenizer), width)] = True
    special = [i for i in tokenizer.all_special_ids if 0 <= i < width]
    if special:
        mask[torch.as_tensor(special, device=device)] = False
    eos = tokenizer.eos_token_id
    if eos is not None and 0 <= eos < width:
        mask[eos] = True
    return mask


def median_index(logits: torch.Tensor) -> torch.Tensor:
    """Index ``(batch,)`` of the median of ``softmax(logits)`` over the last dim (bins in order):
    the first index whose cumulative probability reaches 0.5."""
    cumulative = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
    return (cumulative < 0.5).sum(dim=-1).clamp(max=logits.shape[-1] - 1)


class ActionHead:
    """The output projection restricted to the legal ids of each action position.

    ``weight`` / ``bias`` are the model's ``lm_head`` parameters (``bias``
    may be None).  Positions with the same legal ids share one row block.
    :meth:`select` returns, for a batch of last hidden states, the greedy
    legal id and its bin.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scheme: TokenScheme,
                 allowed_ids: Sequence[Sequence[int]]) -> None:
        width = weight.shape[0]
        self.width = width
        self.num_positions = len(allowed_ids)
        self._group_of: list[int] = []
        self._weights: list[torch.Tensor] = []
        self._biases: list[torch.Tensor | None] = []
        self._ids: list[torch.Tensor] = []
        self._bins: list[torch.Tensor] = []
        seen: dict[tuple[int, ...], int] = {}
        for position, ids in enumerate(allowed_ids):
            key = tuple(int(i) for i in ids)
            if not key or max(key) >= width or min(key) < 0:
                raise ValueError(f"position {position}: allowed ids must lie in 0..{width - 1}, "
                                 f"got {min(key, default=None)}..{max(key, default=None)}")
            if key not in seen:
                seen[key] = len(self._weights)
                index = torch.as_tensor(key, dtype=torch.long, device=weight.device)
                # A contiguous copy: the selection matmul then reads 256 rows, not the vocabulary.
                self._weights.append(weight.detach().index_select(0, index).contiguous())
                self._biases.append(None if bias is None else bias.detach().index_select(0, index))
                self._ids.append(index)
                self._bins.append(torch.as_tensor([scheme.id_to_bin(i) for i in key],
                                                  dtype=torch.long, device=weight.device))
            self._group_of.append(seen[key])

    def logits(self, hidden: torch.Tensor, position: int) -> torch.Tensor:
        """Logits ``(batch, allowed)`` of the legal ids at ``position`` for ``hidden`` ``(batch, H)``."""
        group = self._group_of[position]
        weight = self._weights[group]
        return torch.nn.functional.linear(hidden.to(weight.dtype), weight, self._biases[group])

    def select(self, hidden: torch.Tensor, position: int, median: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy (or, with ``median``, the median's) legal ``(ids, bins)``, each ``(batch,)``, at
        ``position``; the allowed ids are in bin order, so the median is taken over the bins."""
        group = self._group_of[position]
        logits = self.logits(hidden, position)
        best = median_index(logits) if median else logits.argmax(dim=-1)
        return self._ids[group][best], self._bins[group][best]

    def ids(self, position: int) -> list[int]:
        """The legal ids at ``position``."""
        return self._ids[self._group_of[position]].tolist()
