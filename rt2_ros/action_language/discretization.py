"""Continuous value <-> bin, for the two discretizations of DESIGN section 5.

``rt1`` (RT-1 / RT-2): 256 uniform bins whose *values are the bin edges*::

    token = floor((clip(v, low, high) - low) / (high - low) * (bins - 1))
    value = low + token * (high - low) / (bins - 1)

``center`` (OpenVLA's ``ActionTokenizer``): ``edges = linspace(low, high, bins)``
and the values are the ``bins - 1`` centres between consecutive edges.
Encoding digitizes into the edges (``np.digitize``, i.e. ``edges[i-1] <= v <
edges[i]``) and maps the result to ``0..bins-2``; decoding token ``bins - 1``
yields the last centre, as OpenVLA's ``clip(..., 0, bins - 2)`` does, so every
one of the ``bins`` tokens is legal and the two top tokens mean the same value.
(OpenVLA itself encodes ``v == high`` to the top token; here it encodes to
``bins - 2``, which decodes to the same centre.)

OpenVLA-style dims are discretized in a normalised range (``-1..1``) and the
decoded value is un-normalised with the training set's 1st/99th percentiles::

    value = 0.5 * (n + 1) * (q99 - q01) + q01

Encoding applies the inverse that OpenVLA/Octo used to normalise the training
data, ``n = 2 * (v - q01) / (q99 - q01 + 1e-8) - 1`` (the ``1e-8`` keeps a
constant dimension with ``q01 == q99`` finite).

The functions here build per-dim lookup tables once; the embodiment's decode
is then a list index per token.
"""
from __future__ import annotations

import bisect
import math

import numpy as np

DISCRETIZATIONS = ("rt1", "center")

# Encoding a value that decode produced must give back the same token, but
# ``(low + t*step - low) / (high - low) * (bins - 1)`` can land a few ulps
# below ``t``.  Adding this many bins before ``floor`` absorbs that noise; it
# moves no value that is more than a billionth of a bin below an edge.
_RT1_EDGE_TOLERANCE = 1e-9

# The epsilon OpenVLA/Octo add to (q99 - q01) when normalising training data.
_NORMALIZATION_EPSILON = 1e-8


def rt1_encode(value: float, low: float, high: float, bins: int) -> int:
    """Return the RT-1 bin of ``value`` (clipped into ``[low, high]`` first)."""
    clipped = min(max(value, low), high)
    scaled = (clipped - low) / (high - low) * (bins - 1)
    return min(int(math.floor(scaled + _RT1_EDGE_TOLERANCE)), bins - 1)


def rt1_values(low: float, high: float, bins: int) -> list[float]:
    """Return the decoded value of every RT-1 token ``0..bins-1`` (the bin edges)."""
    return [low + token * (high - low) / (bins - 1) for token in range(bins)]


def center_edges(low: float, high: float, bins: int) -> list[float]:
    """Return OpenVLA's bin edges, ``np.linspace(low, high, bins)``, as floats."""
    return np.linspace(low, high, bins).tolist()


def center_encode(value: float, edges: list[float]) -> int:
    """Return the ``center`` bin (``0..len(edges)-2``) of ``value`` clipped into the edges' range.

    ``bisect_right(edges, v) - 1`` is ``np.digitize(v, edges) - 1`` for
    increasing edges; ``v == high`` would give ``len(edges) - 1`` and is
    mapped to the last centre's token ``len(edges) - 2``.
    """
    clipped = min(max(value, edges[0]), edges[-1])
    return min(bisect.bisect_right(edges, clipped) - 1, len(edges) - 2)


def center_values(low: float, high: float, bins: int) -> list[float]:
    """Return the decoded value of every ``center`` token ``0..bins-1``.

    Tokens ``0..bins-2`` are the bin centres; token ``bins-1`` repeats the last
    centre (OpenVLA clips the index to ``bins - 2``).
    """
    edges = np.linspace(low, high, bins)
    centres = ((edges[:-1] + edges[1:]) / 2.0).tolist()
    return centres + [centres[-1]]


def unnormalize(normalized: float, q01: float, q99: float) -> float:
    """Map a value of the normalised range ``-1..1`` to physical units (OpenVLA's formula)."""
    return 0.5 * (normalized + 1.0) * (q99 - q01) + q01


def normalize(value: float, q01: float, q99: float) -> float:
    """Map a physical value into the normalised range (the inverse of :func:`unnormalize`).

    Not clipped: the discretizer clips into ``[low, high]`` afterwards.
    """
    return 2.0 * (value - q01) / (q99 - q01 + _NORMALIZATION_EPSILON) - 1.0
