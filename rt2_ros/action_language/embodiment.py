"""Embodiments: which action dimensions a robot has and how each is discretized.

An embodiment is a YAML file (DESIGN section 5) loaded into a validated,
frozen :class:`Embodiment`.  Construction precomputes one lookup table per
dimension (token -> decoded value), so :meth:`Embodiment.decode`, which runs
in the control loop, is a bounds check and a list index per token.
"""
from __future__ import annotations

import math
import numbers
import operator
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from rt2_ros.action_language import discretization as disc
from rt2_ros.errors import ActionLanguageError, ConfigError
from rt2_ros.paths import embodiments_dir
from rt2_ros.validation import expect_bool, expect_int, expect_number, expect_str

KINDS = ("continuous", "discrete")
TERMINATE = "terminate"
# Dimension names become JSON keys and ROS field names: keep them identifiers.
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMBODIMENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# A table of more bins than this is a typo, not an action space.
MAX_BINS = 65536

_TOP_KEYS = ("name", "bins", "discretization", "dims")
_DIM_KEYS = ("name", "kind", "low", "high", "values", "q01", "q99", "normalized")
_CONTINUOUS_ONLY_KEYS = ("low", "high", "q01", "q99", "normalized")


def _checked(prefix: str, check: Callable[..., Any], key: str, value: Any, **kwargs: Any) -> Any:
    """Run a ``rt2_ros.validation`` check, re-raising its error as ActionLanguageError."""
    try:
        return check(key, value, **kwargs)
    except ConfigError as exc:
        raise ActionLanguageError(f"{prefix}{exc}") from None


def _is_real(value: Any) -> bool:
    # numbers.Real covers int, float and numpy's scalar types; bool is an int
    # but "true" is never a coordinate.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Dim:
    """One action dimension, in token order.

    continuous: ``low``/``high`` is the discretized range (for OpenVLA-style
    dims the normalised range ``-1..1``); if ``normalized`` is true the decoded
    value is un-normalised with ``q01``/``q99`` (OpenVLA's statistics mask).
    discrete: ``values`` tokens ``0..values-1``; a dim named ``terminate``
    must have 2 values and decodes to a bool.
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: int = 0
    q01: float | None = None
    q99: float | None = None
    normalized: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ActionLanguageError(
                f"dim name: expected an identifier (letters, digits, _), got {self.name!r}")
        prefix = f"dim {self.name!r}: "
        _checked(prefix, expect_str, "kind", self.kind, choices=KINDS)
        if self.kind == "continuous":
            low = _checked(prefix, expect_number, "low", self.low)
            high = _checked(prefix, expect_number, "high", self.high)
            if low >= high:
                raise ActionLanguageError(
                    f"{prefix}low must be below high, got low={self.low!r} high={self.high!r}")
            if self.values != 0:
                raise ActionLanguageError(
                    f"{prefix}values: only discrete dims have values, got {self.values!r}")
            if (self.q01 is None) != (self.q99 is None):
                raise ActionLanguageError(
                    f"{prefix}q01 and q99 come together, got q01={self.q01!r} q99={self.q99!r}")
            _checked(prefix, expect_bool, "normalized", self.normalized)
            if self.q01 is not None:
                q01 = _checked(prefix, expect_number, "q01", self.q01)
                q99 = _checked(prefix, expect_number, "q99", self.q99)
                # q01 == q99 is legal: real checkpoints have constant dims.
                if q01 > q99:
                    raise ActionLanguageError(
                        f"{prefix}q01 must not exceed q99, got q01={self.q01!r} q99={self.q99!r}")
                object.__setattr__(self, "q01", q01)
                object.__setattr__(self, "q99", q99)
            elif self.normalized:
                raise ActionLanguageError(f"{prefix}normalized: true needs q01 and q99")
            object.__setattr__(self, "low", low)
            object.__setattr__(self, "high", high)
            if self.name == TERMINATE:
                raise ActionLanguageError(
                    f"{prefix}terminate must be a discrete dim with 2 values, got kind 'continuous'")
        else:
            _checked(prefix, expect_int, "values", self.values, low=2)
            for key in _CONTINUOUS_ONLY_KEYS:
                given = getattr(self, key)
                if given != getattr(Dim, key) or (key == "normalized" and given is not False):
                    raise ActionLanguageError(
                        f"{prefix}{key}: only continuous dims have {key}, got {given!r}")
            if self.name == TERMINATE and self.values != 2:
                raise ActionLanguageError(f"{prefix}values: terminate has 2 values, got {self.values!r}")

    @property
    def physical_range(self) -> tuple[float, float]:
        """The range of decoded values in the robot's units (after any un-normalisation)."""
        if self.kind == "discrete":
            return 0.0, float(self.values - 1)
        if self.normalized:
            return (disc.unnormalize(self.low, self.q01, self.q99),
                    disc.unnormalize(self.high, self.q01, self.q99))
        return self.low, self.high


@dataclass(frozen=True)
class Embodiment:
    """A validated action space: ``dims`` in token order, each discretized into ``bins``."""

    name: str
    bins: int
    discretization: str
    dims: tuple[Dim, ...]
    source: str = "<dict>"
    # Precomputed at construction (not part of equality or repr).
    _tables: tuple[tuple[Any, ...], ...] = field(init=False, repr=False, compare=False)
    _encoders: tuple[Callable[[Any], int], ...] = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = f"{self.source}: "
        _checked(prefix, expect_str, "name", self.name, allow_empty=False)
        _checked(prefix, expect_int, "bins", self.bins, low=2, high=MAX_BINS)
        _checked(prefix, expect_str, "discretization", self.discretization,
                 choices=disc.DISCRETIZATIONS)
        if isinstance(self.dims, list):
            object.__setattr__(self, "dims", tuple(self.dims))
        if not isinstance(self.dims, tuple) or not self.dims:
            raise ActionLanguageError(f"{prefix}dims: expected a non-empty list of dims, got {self.dims!r}")
        index: dict[str, int] = {}
        for position, dim in enumerate(self.dims):
            if not isinstance(dim, Dim):
                raise ActionLanguageError(f"{prefix}dims[{position}]: expected a Dim, got {dim!r}")
            if dim.name in index:
                raise ActionLanguageError(
                    f"{prefix}dims[{position}]: duplicate name {dim.name!r} (also dims[{index[dim.name]}])")
            if dim.kind == "discrete" and dim.values > self.bins:
                raise ActionLanguageError(
                    f"{prefix}dims[{position}] ({dim.name}): values: expected at most bins={self.bins}, "
                    f"got {dim.values}")
            index[dim.name] = position
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_tables", tuple(self._decode_table(d) for d in self.dims))
        object.__setattr__(self, "_encoders", tuple(self._encoder(d) for d in self.dims))

    def __reduce__(self) -> tuple[Any, ...]:
        # The precomputed encoders are closures, which pickle cannot carry:
        # rebuild from the fields (DataLoader workers, multiprocessing servers).
        return (Embodiment, (self.name, self.bins, self.discretization, self.dims, self.source))

    # -- construction helpers -------------------------------------------------

    def _decode_table(self, dim: Dim) -> tuple[Any, ...]:
        if dim.kind == "discrete":
            if dim.name == TERMINATE:
                return (False, True)
            return tuple(range(dim.values))
        if self.discretization == "rt1":
            values = disc.rt1_values(dim.low, dim.high, self.bins)
        else:
            values = disc.center_values(dim.low, dim.high, self.bins)
        if dim.normalized:
            values = [disc.unnormalize(v, dim.q01, dim.q99) for v in values]
        return tuple(values)

    def _encoder(self, dim: Dim) -> Callable[[Any], int]:
        name = dim.name
        if dim.kind == "discrete":
            last = dim.values - 1

            def encode_discrete(value: Any) -> int:
                if isinstance(value, (bool, np.bool_)):
                    index = int(value)
                elif isinstance(value, numbers.Integral):
                    index = int(value)
                else:
                    index = -1
                if not 0 <= index <= last:
                    what = "0, 1, true or false" if name == TERMINATE else f"an integer in 0..{last}"
                    raise ActionLanguageError(f"{name}: expected {what}, got {value!r}")
                return index
            return encode_discrete

        low, high, bins = dim.low, dim.high, self.bins
        q01, q99, normalized = dim.q01, dim.q99, dim.normalized
        edges = disc.center_edges(low, high, bins) if self.discretization == "center" else None

        def encode_continuous(value: Any) -> int:
            if not _is_real(value) or not math.isfinite(value):
                raise ActionLanguageError(f"{name}: expected a finite number, got {value!r}")
            value = float(value)
            if normalized:
                value = disc.normalize(value, q01, q99)
            if edges is None:
                return disc.rt1_encode(value, low, high, bins)
            return disc.center_encode(value, edges)
        return encode_continuous

    # -- public API -----------------------------------------------------------

    @property
    def num_tokens(self) -> int:
        """Number of tokens in one action (= number of dims)."""
        return len(self.dims)

    @property
    def names(self) -> list[str]:
        """Dim names in token order."""
        return [d.name for d in self.dims]

    def index(self, name: str) -> int:
        """Token position of the dim called ``name``."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise ActionLanguageError(
                f"{self.name}: no dim named {name!r} (dims: {', '.join(self.names)})") from None

    def dim(self, name: str) -> Dim:
        """The dim called ``name``."""
        return self.dims[self.index(name)]

    def allowed_bins(self, position: int) -> int:
        """Number of legal tokens at ``position``: ``values`` for a discrete dim, ``bins`` else."""
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(self.dims):
            raise ActionLanguageError(
                f"{self.name}: position: expected an integer in 0..{len(self.dims) - 1}, got {position!r}")
        return len(self._tables[position])

    def validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        """Return ``tokens`` as a list of ints, or raise naming the first bad position and value."""
        if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__"):
            raise ActionLanguageError(f"expected a sequence of {len(self.dims)} integer tokens, got {tokens!r}")
        if len(tokens) != len(self.dims):
            shown = list(tokens) if not isinstance(tokens, list) else tokens
            raise ActionLanguageError(f"expected {len(self.dims)} tokens, got {len(tokens)}: {shown!r}")
        checked = []
        for position, table in enumerate(self._tables):
            token = tokens[position]
            if type(token) is not int:
                token = self._token_as_int(position, token)
            if not 0 <= token < len(table):
                raise ActionLanguageError(
                    f"token {position} ({self.dims[position].name}): {token} is outside 0..{len(table) - 1}")
            checked.append(token)
        return checked

    def decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        """Return ``{dim name: value}`` for one action's tokens (strict; ``terminate`` is a bool).

        Continuous values are floats in the robot's units, discrete dims give
        their index.  Any wrong count, non-integer or out-of-range token raises
        ActionLanguageError naming the position and the value.
        """
        tokens = self.validate_tokens(tokens)
        return {dim.name: table[token] for dim, table, token in zip(self.dims, self._tables, tokens)}

    def encode(self, action: Mapping[str, Any]) -> list[int]:
        """Return the tokens of ``action`` (``{dim name: value}``, every dim, nothing else).

        Continuous values are clipped into the dim's range by the discretizer
        (RT-1's formula) but must be finite; discrete values must be legal indices.
        """
        if not isinstance(action, Mapping):
            raise ActionLanguageError(f"action: expected a mapping of dim name to value, got {action!r}")
        for key in action:
            if key not in self._index:
                raise ActionLanguageError(
                    f"action: unknown key {key!r} (expected keys: {', '.join(self.names)})")
        tokens = []
        for dim, encoder in zip(self.dims, self._encoders):
            if dim.name not in action:
                raise ActionLanguageError(
                    f"action: missing key {dim.name!r} (expected keys: {', '.join(self.names)})")
            tokens.append(encoder(action[dim.name]))
        return tokens

    def with_statistics(self, stats: Mapping[str, Sequence[Any]]) -> "Embodiment":
        """Return a copy with new un-normalisation statistics.

        ``stats`` maps dim names to ``(q01, q99)`` or ``(q01, q99, normalized)``;
        the two-element form keeps each dim's ``normalized`` flag.
        """
        if not isinstance(stats, Mapping):
            raise ActionLanguageError(f"statistics: expected a mapping of dim name to (q01, q99), got {stats!r}")
        dims = list(self.dims)
        for name, entry in stats.items():
            position = self.index(name)
            if dims[position].kind != "continuous":
                raise ActionLanguageError(f"statistics[{name}]: {name} is a discrete dim, it has no statistics")
            if isinstance(entry, (str, bytes)) or not hasattr(entry, "__len__") or len(entry) not in (2, 3):
                raise ActionLanguageError(
                    f"statistics[{name}]: expected (q01, q99) or (q01, q99, normalized), got {entry!r}")
            q01, q99 = entry[0], entry[1]
            normalized = entry[2] if len(entry) == 3 else dims[position].normalized
            if isinstance(normalized, np.bool_):  # OpenVLA's masks often arrive as numpy arrays
                normalized = bool(normalized)
            for key, value in (("q01", q01), ("q99", q99)):
                if not _is_real(value):
                    raise ActionLanguageError(f"statistics[{name}]: {key}: expected a number, got {value!r}")
            try:
                dims[position] = replace(dims[position], q01=float(q01), q99=float(q99),
                                         normalized=normalized)
            except ActionLanguageError as exc:
                raise ActionLanguageError(f"statistics[{name}]: {exc}") from None
        return replace(self, dims=tuple(dims))

    def with_openvla_statistics(self, action_stats: Mapping[str, Any]) -> "Embodiment":
        """Return a copy using an OpenVLA checkpoint's ``norm_stats[key]["action"]``.

        ``action_stats`` holds lists ``q01``, ``q99`` and optionally ``mask``,
        one entry per dim in token order (OpenVLA has no terminate dim, so the
        lists must be as long as ``dims``).  A missing mask means all true.
        """
        if not isinstance(action_stats, Mapping):
            raise ActionLanguageError(f"action statistics: expected a mapping, got {action_stats!r}")
        lists = {}
        for key in ("q01", "q99", "mask"):
            if key not in action_stats:
                if key == "mask":
                    lists[key] = [True] * len(self.dims)
                    continue
                raise ActionLanguageError(f"action statistics: missing key {key!r}")
            value = action_stats[key]
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != len(self.dims):
                raise ActionLanguageError(
                    f"action statistics: {key}: expected a list of {len(self.dims)} entries "
                    f"({', '.join(self.names)}), got {value!r}")
            lists[key] = list(value)
        return self.with_statistics({dim.name: (lists["q01"][i], lists["q99"][i], lists["mask"][i])
                                     for i, dim in enumerate(self.dims)})

    def zero_action(self) -> dict[str, Any]:
        """The action meaning "do nothing": every continuous dim 0 (clamped into its
        physical range), every discrete dim index 0 (``terminate`` False)."""
        action: dict[str, Any] = {}
        for dim, table in zip(self.dims, self._tables):
            if dim.kind == "discrete":
                action[dim.name] = table[0]
            else:
                low, high = dim.physical_range
                action[dim.name] = min(max(0.0, low), high)
        return action

    def _token_as_int(self, position: int, token: Any) -> int:
        name = self.dims[position].name
        if isinstance(token, (bool, np.bool_)):
            raise ActionLanguageError(f"token {position} ({name}): expected an integer, got {token!r}")
        try:
            return operator.index(token)
        except TypeError:
            raise ActionLanguageError(
                f"token {position} ({name}): expected an integer, got {token!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML form of this embodiment (what :func:`embodiment_from_dict` reads)."""
        dims = []
        for dim in self.dims:
            if dim.kind == "discrete":
                dims.append({"name": dim.name, "kind": "discrete", "values": dim.values})
                continue
            entry: dict[str, Any] = {"name": dim.name, "low": dim.low, "high": dim.high}
            if dim.q01 is not None:
                entry.update(q01=dim.q01, q99=dim.q99)
            if dim.normalized:
                entry["normalized"] = True
            dims.append(entry)
        return {"name": self.name, "bins": self.bins, "discretization": self.discretization, "dims": dims}


def embodiment_from_dict(data: Any, source: str = "<dict>") -> Embodiment:
    """Build an :class:`Embodiment` from its YAML form, rejecting missing and unknown keys.

    Errors name ``source``, the dim's index and name, the key and the value.
    """
    if not isinstance(data, Mapping):
        raise ActionLanguageError(f"{source}: expected a mapping with keys {', '.join(_TOP_KEYS)}, got {data!r}")
    for key in data:
        if key not in _TOP_KEYS:
            raise ActionLanguageError(
                f"{source}: unknown key {key!r} (expected one of {', '.join(_TOP_KEYS)})")
    for key in _TOP_KEYS:
        if key not in data:
            raise ActionLanguageError(f"{source}: missing key {key!r}")
    raw_dims = data["dims"]
    if not isinstance(raw_dims, list) or not raw_dims:
        raise ActionLanguageError(f"{source}: dims: expected a non-empty list of dims, got {raw_dims!r}")
    dims = [_dim_from_dict(entry, f"{source}: dims[{i}]") for i, entry in enumerate(raw_dims)]
    return Embodiment(name=data["name"], bins=data["bins"], discretization=data["discretization"],
                      dims=tuple(dims), source=source)


def _dim_from_dict(entry: Any, where: str) -> Dim:
    if not isinstance(entry, Mapping):
        raise ActionLanguageError(f"{where}: expected a mapping like {{name: x, low: -1, high: 1}}, got {entry!r}")
    if "name" in entry:
        where = f"{where} ({entry['name']})"
    for key in entry:
        if key not in _DIM_KEYS:
            raise ActionLanguageError(f"{where}: unknown key {key!r} (expected one of {', '.join(_DIM_KEYS)})")
    kind = entry.get("kind", "continuous")
    required = ("name", "values") if kind == "discrete" else ("name", "low", "high")
    for key in required:
        if key not in entry:
            raise ActionLanguageError(f"{where}: missing key {key!r}")
    if kind == "discrete":
        for key in _CONTINUOUS_ONLY_KEYS:
            if key in entry:
                raise ActionLanguageError(
                    f"{where}: {key}: only continuous dims have {key}, got {entry[key]!r}")
    try:
        return Dim(**{"kind": kind, **entry})
    except ActionLanguageError as exc:
        raise ActionLanguageError(f"{where}: {exc}") from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _looks_like_path(name_or_path: str | os.PathLike[str]) -> bool:
    if isinstance(name_or_path, os.PathLike):
        return True
    return "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def load_embodiment(name_or_path: str | os.PathLike[str]) -> Embodiment:
    """Load a bundled embodiment by name (``config/embodiments/<name>.yaml``) or a YAML file by path.

    A string with a ``/`` or ending in ``.yaml``/``.yml`` is a path; anything
    else is a bundled name.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ActionLanguageError(f"embodiment: expected a name or a path, got {name_or_path!r}")
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ActionLanguageError(f"embodiment file not found: {str(path)!r}")
    else:
        if not _EMBODIMENT_NAME_PATTERN.match(name_or_path):
            raise ActionLanguageError(f"embodiment: not a valid name, got {name_or_path!r}")
        path = embodiments_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ActionLanguageError(
                f"unknown embodiment {name_or_path!r} (bundled: {', '.join(list_embodiments()) or 'none'}; "
                f"or give the path of a YAML file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ActionLanguageError(f"{path}: cannot read embodiment file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ActionLanguageError(f"{path}: YAML syntax error{where}: {problem}") from None
    return embodiment_from_dict(data, source=str(path))


def list_embodiments() -> list[str]:
    """Names of the bundled embodiments (files in ``config/embodiments``)."""
    directory = embodiments_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))
