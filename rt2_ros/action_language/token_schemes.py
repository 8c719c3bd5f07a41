"""Token schemes: which ids of a model's vocabulary stand for the action bins.

RT-2 lets a vision-language model "speak" actions by giving each of the 256
bins one token of its own vocabulary:

- ``integer`` (PaLI-X): bin ``i`` is the model's token for the number ``i``;
- ``least_frequent`` (PaLM-E): the 256 least-used tokens are overwritten;
- ``last`` (OpenVLA): the last 256 ids, ``id = vocab_size - 1 - bin``.

A scheme maps both ways and lists the ids legal at each action position,
which is what constrained decoding masks the logits with.  Backends should
turn generated ids into bins with :meth:`TokenScheme.id_to_bin` (one id per
action dim) rather than by decoding text, and build training labels with
:meth:`TokenScheme.ids_for_bins`: that is the same one-token-per-dim
sequence the constrained decoder produces, whatever the tokenizer would make
of the spelled-out text.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rt2_ros.errors import ActionLanguageError

SCHEMES = ("integer", "least_frequent", "last")


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, for transformers and ``tokenizers`` alike."""
    result = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(result, "ids", result))


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids))


def _check_bins(bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ActionLanguageError(f"bins: expected an integer >= 2, got {bins!r}")
    return bins


class TokenScheme:
    """A one-to-one map between bins ``0..bins-1`` and vocabulary ids."""

    name: str = ""

    def __init__(self, ids: Sequence[int], bins: int) -> None:
        self.bins = _check_bins(bins)
        ids = [int(i) for i in ids]
        if len(ids) != bins:
            raise ActionLanguageError(f"{self.name} scheme: expected {bins} ids, got {len(ids)}")
        self._ids = tuple(ids)
        self._bin_of = {token_id: b for b, token_id in enumerate(ids)}
        if len(self._bin_of) != bins:
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ActionLanguageError(f"{self.name} scheme: id {duplicate} stands for two bins")
        if min(ids) < 0:
            raise ActionLanguageError(f"{self.name} scheme: ids must be >= 0, got {min(ids)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins}, ids={self._ids[0]}..{self._ids[-1]})"

    @property
    def max_id(self) -> int:
        """The largest action id (a logits mask must be wider than this)."""
        return max(self._ids)

    def bin_to_id(self, b: int) -> int:
        """Vocabulary id of bin ``b``."""
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 0 <= b < self.bins:
            raise ActionLanguageError(f"bin: expected an integer in 0..{self.bins - 1}, got {b!r}")
        return self._ids[b]

    def id_to_bin(self, token_id: int) -> int:
        """Bin of vocabulary id ``token_id``; ActionLanguageError if it is not an action id."""
        try:
            return self._bin_of[token_id]
        except (KeyError, TypeError):
            raise ActionLanguageError(
                f"token id {token_id!r} is not an action token of the {self.name} scheme") from None

    def action_ids(self) -> list[int]:
        """Ids of bins ``0..bins-1``, in bin order."""
        return list(self._ids)

    def ids_for_bins(self, bins_: Sequence[int]) -> list[int]:
        """Vocabulary ids of a sequence of bins (e.g. one action's tokens)."""
        return [self.bin_to_id(b) for b in bins_]

    def bins_for_ids(self, ids: Sequence[int]) -> list[int]:
        """Bins of a sequence of generated ids; raises naming the first non-action id."""
        bins_ = []
        for position, token_id in enumerate(ids):
            try:
                bins_.append(self.id_to_bin(token_id))
            except ActionLanguageError as exc:
                raise ActionLanguageError(f"token {position}: {exc}") from None
        return bins_

    def allowed_ids(self, embodiment: Any) -> list[list[int]]:
        """Legal ids per action position: every bin, or only ``0..values-1`` for a discrete dim."""
        if embodiment.bins > self.bins:
            raise ActionLanguageError(
                f"embodiment {embodiment.name!r} has {embodiment.bins} bins but the {self.name} scheme "
                f"only {self.bins}")
        return [list(self._ids[:embodiment.allowed_bins(p)]) for p in range(embodiment.num_tokens)]

    def text_for_bins(self, bins_: Sequence[int], tokenizer: Any = None) -> str:
        """The text the model writes for these bins (``tokenizer.decode`` of their ids)."""
        ids = self.ids_for_bins(bins_)
        if tokenizer is None:
            raise ActionLanguageError(f"the {self.name} scheme needs the tokenizer to spell its tokens as text")
        return _decode(tokenizer, ids)


class IntegerScheme(TokenScheme):
    """PaLI-X style: bin ``i`` is the model's own single token for the number ``i``.

    Spacing rule: in an action string every number follows a space (the
    prompt ends in ``A:``, numbers are space-separated), so bin ``i`` is the
    one non-whitespace token the tokenizer makes of ``" " + str(i)``.  Pieces
    that decode to whitespace only (a lone ``▁`` or ``Ġ``) are separators and
    ignored; a byte-level BPE whose ``" 128"`` is one token ``Ġ128`` uses that
    token.  A tokenizer that needs several tokens for a number, or that has no
    token for it (``[UNK]``), is refused: use ``least_frequent`` or ``last``.
    """

    name = "integer"

    def __init__(self, ids: Sequence[int], bins: int = 256) -> None:
        super().__init__(ids, bins)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, bins: int = 256) -> "IntegerScheme":
        """Find the token of every number ``0..bins-1``; refuse tokenizers that split numbers."""
        _check_bins(bins)
        ids = []
        for number in range(bins):
            text = str(number)
            pieces = [t for t in _encode(tokenizer, " " + text) if _decode(tokenizer, [t]).strip()]
            if len(pieces) > 1:
                spelled = [_decode(tokenizer, [t]) for t in pieces]
                raise ActionLanguageError(
                    f"the integer scheme needs one token per number 0..{bins - 1}, but this tokenizer "
                    f"splits numbers into several tokens: {text!r} -> {spelled!r} "
                    f"(use the least_frequent or last scheme)")
            spelled = _decode(tokenizer, pieces).strip() if pieces else ""
            if spelled != text:
                raise ActionLanguageError(
                    f"the integer scheme needs one token per number 0..{bins - 1}, but this tokenizer "
                    f"has no token for {text!r}: it becomes {spelled!r} (use the least_frequent or last scheme)")
            ids.append(pieces[0])
        return cls(ids, bins)

    def text_for_bins(self, bins_: Sequence[int], tokenizer: Any = None) -> str:
        """The action string, ``"1 128 91 ..."`` (no tokenizer needed)."""
        return " ".join(str(self._bin_checked(b)) for b in bins_)

    def _bin_checked(self, b: int) -> int:
        self.bin_to_id(b)
        return int(b)


class LeastFrequentScheme(TokenScheme):
    """PaLM-E style: the ``bins`` least-used non-special ids of the vocabulary.

    ``token_counts`` maps id -> how often it occurs in a corpus (ids absent
    count 0).  Ties are broken by the smaller id; the chosen ids are then
    assigned to bins in increasing id order, so bin order follows id order.
    """

    name = "least_frequent"

    def __init__(self, token_counts: Mapping[int, int], vocab_size: int, special_ids: Iterable[int],
                 bins: int = 256) -> None:
        _check_bins(bins)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= bins:
            raise ActionLanguageError(f"vocab_size: expected an integer > bins ({bins}), got {vocab_size!r}")
        if not isinstance(token_counts, Mapping):
            raise ActionLanguageError(f"token_counts: expected a mapping of id to count, got {token_counts!r}")
        counts = np.zeros(vocab_size, dtype=np.int64)
        for token_id, count in token_counts.items():
            if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) \
                    or not 0 <= token_id < vocab_size:
                raise ActionLanguageError(
                    f"token_counts: id {token_id!r} is outside 0..{vocab_size - 1}")
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                raise ActionLanguageError(
                    f"token_counts[{token_id}]: expected a count >= 0, got {count!r}")
            counts[token_id] = count
        special = np.array(sorted({int(i) for i in special_ids}), dtype=np.int64)
        candidates = np.setdiff1d(np.arange(vocab_size), special)
        if len(candidates) < bins:
            raise ActionLanguageError(
                f"least_frequent scheme: only {len(candidates)} non-special ids, {bins} needed")
        # A stable sort of increasing ids by count breaks ties by the smaller id.
        chosen = candidates[np.argsort(counts[candidates], kind="stable")[:bins]]
        super().__init__(np.sort(chosen).tolist(), bins)
        self.vocab_size = vocab_size


class LastScheme(TokenScheme):
    """OpenVLA style: ``id = vocab_size - 1 - bin`` (the last ``bins`` ids, bin 0 the very last)."""

    name = "last"

    def __init__(self, vocab_size: int, bins: int = 256) -> None:
        _check_bins(bins)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= bins:
            raise ActionLanguageError(f"vocab_size: expected an integer > bins ({bins}), got {vocab_size!r}")
        super().__init__([vocab_size - 1 - b for b in range(bins)], bins)
        self.vocab_size = vocab_size


def count_tokens(tokenizer: Any, texts: Iterable[str]) -> dict[int, int]:
    """How often each id occurs when ``tokenizer`` encodes ``texts`` (input to ``least_frequent``)."""
    counts: Counter[int] = Counter()
    for text in texts:
        counts.update(_encode(tokenizer, text))
    return dict(counts)


def _tokenizer_vocab_size(tokenizer: Any) -> int:
    # transformers: ``vocab_size`` is the base vocabulary (what OpenVLA's
    # ActionTokenizer counts back from); tokenizers.Tokenizer has get_vocab_size().
    if hasattr(tokenizer, "vocab_size"):
        return int(tokenizer.vocab_size)
    return int(tokenizer.get_vocab_size(with_added_tokens=False))


def make_scheme(name: str, tokenizer: Any = None, bins: int = 256, *, vocab_size: int | None = None,
                token_counts: Mapping[int, int] | None = None) -> TokenScheme:
    """Build a scheme by name.

    integer: needs ``tokenizer``.  least_frequent: needs ``token_counts``;
    ``vocab_size`` defaults to ``len(tokenizer)`` and special ids come from
    ``tokenizer.all_special_ids``.  last: ``vocab_size`` defaults to the
    tokenizer's base ``vocab_size`` (as OpenVLA does).
    """
    if name == "integer":
        if tokenizer is None:
            raise ActionLanguageError("the integer scheme needs a tokenizer")
        return IntegerScheme.from_tokenizer(tokenizer, bins)
    if name == "least_frequent":
        if token_counts is None:
            raise ActionLanguageError("the least_frequent scheme needs token_counts (see count_tokens)")
        if vocab_size is None:
            if tokenizer is None:
                raise ActionLanguageError("the least_frequent scheme needs vocab_size or a tokenizer")
            vocab_size = len(tokenizer) if hasattr(tokenizer, "__len__") \
                else int(tokenizer.get_vocab_size(with_added_tokens=True))
        special = list(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else []
        return LeastFrequentScheme(token_counts, vocab_size, special, bins)
    if name == "last":
        if vocab_size is None:
            if tokenizer is None:
                raise ActionLanguageError("the last scheme needs vocab_size or a tokenizer")
            vocab_size = _tokenizer_vocab_size(tokenizer)
        return LastScheme(vocab_size, bins)
    raise ActionLanguageError(f"scheme: expected one of {', '.join(SCHEMES)}, got {name!r}")
