"""The action tokenizer a model is trained with, and the checkpoint that records it.

* :func:`choose_scheme` applies a token scheme to a tokenizer: ``integer``
  (each bin is the model's own number token), ``least_frequent`` (the
  ``bins`` ids least used by the training texts, PaLM-E style), ``last``
  (OpenVLA) or ``auto`` (``integer`` when every 0..bins-1 is one token, else
  ``least_frequent``);
* :func:`reinitialize_rows` gives the ids a ``least_frequent`` scheme took
  over fresh embedding (and, if untied, output) rows, so nothing of their
  old meaning leaks into the actions;
* :func:`action_statistics` / :func:`fit_embodiment` compute per-dim
  statistics of the robot data and, optionally, bounds fitted to it;
* :func:`checkpoint_metadata` / :func:`save_checkpoint` write processor +
  model + ``rt2_ros.json`` (scheme, ids, inline embodiment, statistics): a
  directory :class:`~rt2_ros.policy.transformers_backend.TransformersPolicy`
  loads directly, de-tokenizing with exactly what training used.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rt2_ros.action_language import (ActionLanguageError, Embodiment, IntegerScheme, TokenScheme,
                                     count_tokens, make_scheme)
from rt2_ros.errors import ConfigError
from rt2_ros.policy.profiles import METADATA_FORMAT, write_checkpoint_metadata

__all__ = ["SCHEME_CHOICES", "BOUNDS_CHOICES", "choose_scheme", "reinitialize_rows", "action_statistics",
           "fit_embodiment", "checkpoint_metadata", "save_checkpoint"]

SCHEME_CHOICES = ("auto", "integer", "least_frequent", "last")
#: ``embodiment``: the embodiment file's bounds; ``q01q99`` / ``minmax``: bounds fitted to the robot data.
BOUNDS_CHOICES = ("embodiment", "q01q99", "minmax")


def choose_scheme(name: str, tokenizer: Any, texts: Iterable[str], *, bins: int = 256,
                  logits_width: int | None = None) -> TokenScheme:
    """Build the token scheme ``name`` for ``tokenizer`` (``texts``: the corpus ``least_frequent`` counts)."""
    if name not in SCHEME_CHOICES:
        raise ConfigError(f"scheme: expected one of {', '.join(SCHEME_CHOICES)}, got {name!r}")
    if name in ("auto", "integer"):
        try:
            return IntegerScheme.from_tokenizer(tokenizer, bins)
        except ActionLanguageError as exc:
            if name == "integer":
                raise ConfigError(f"scheme: {exc}") from None
        name = "least_frequent"
    try:
        if name == "least_frequent":
            # Ids beyond the tokenizer (padding rows of the logits) have no text and can serve too,
            # but staying inside the tokenizer keeps every action id decodable.
            return make_scheme("least_frequent", tokenizer, bins, token_counts=count_tokens(tokenizer, texts))
        scheme = make_scheme("last", tokenizer, bins)
    except ActionLanguageError as exc:
        raise ConfigError(f"scheme: {exc}") from None
    if logits_width is not None and scheme.max_id >= logits_width:
        raise ConfigError(f"scheme: the {name} scheme uses id {scheme.max_id} but the model has "
                          f"{logits_width} logits")
    return scheme


def reinitialize_rows(model: Any, ids: Sequence[int], seed: int = 0) -> None:
    """Fresh random rows for ``ids`` in the input embeddings and (when not tied) the output projection.

    Rows are drawn from N(0, s) with s the standard deviation of the existing
    matrix, so the new tokens start at the scale of the others.
    """
    import torch

    index = torch.as_tensor(list(ids), dtype=torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            if int(index.max()) >= weight.shape[0]:
                raise ConfigError(f"scheme: id {int(index.max())} is outside the model's "
                                  f"{weight.shape[0]} embedding rows")
            std = float(weight.float().std())
            fresh = torch.randn((len(index), weight.shape[1]), generator=generator) * std
            weight[index.to(weight.device)] = fresh.to(weight.device, weight.dtype)
        if output is not None and getattr(output, "bias", None) is not None:
            output.bias[index.to(output.bias.device)] = 0.0


def action_statistics(actions: Sequence[Mapping[str, Any]], embodiment: Embodiment) -> dict[str, Any]:
    """Per-dim statistics of decoded actions, in OpenVLA's ``norm_stats`` ``action`` form.

    Lists in token order: ``q01``, ``q99``, ``min``, ``max``, ``mean``, ``std``
    and ``mask`` (true where the dim is un-normalised with q01/q99, or for an
    embodiment without normalised dims, where it is continuous); a discrete
    dim counts its index values.
    """
    if not actions:
        raise ConfigError("statistics: no robot actions to compute them from")
    columns = np.array([[float(a[name]) for name in embodiment.names] for a in actions], dtype=np.float64)
    q01, q99 = np.quantile(columns, 0.01, axis=0), np.quantile(columns, 0.99, axis=0)
    # OpenVLA's mask says which dims are un-normalised; for embodiments without normalised
    # dims it marks the continuous ones.
    normalized = any(dim.normalized for dim in embodiment.dims)
    mask = [dim.kind == "continuous" and (dim.normalized or not normalized) for dim in embodiment.dims]
    return {"q01": q01.tolist(), "q99": q99.tolist(), "min": columns.min(0).tolist(),
            "max": columns.max(0).tolist(), "mean": columns.mean(0).tolist(), "std": columns.std(0).tolist(),
            "mask": mask}


def fit_embodiment(embodiment: Embodiment, stats: Mapping[str, Any], mode: str) -> Embodiment:
    """``embodiment`` with continuous bounds fitted to the data (``q01q99`` or ``minmax``).

    A dim whose data does not vary keeps its bounds (a zero-width range
    cannot be binned).  ``embodiment`` mode returns the embodiment unchanged.
    Normalised (OpenVLA-style) dims keep their ``-1..1`` range: their
    statistics are applied through ``q01``/``q99`` instead.
    """
    if mode not in BOUNDS_CHOICES:
        raise ConfigError(f"action_bounds: expected one of {', '.join(BOUNDS_CHOICES)}, got {mode!r}")
    if mode == "embodiment":
        return embodiment
    low_key, high_key = ("q01", "q99") if mode == "q01q99" else ("min", "max")
    dims = []
    for position, dim in enumerate(embodiment.dims):
        low, high = float(stats[low_key][position]), float(stats[high_key][position])
        if dim.kind != "continuous" or dim.normalized or not high - low > 1e-9:
            dims.append(dim)
        else:
            dims.append(replace(dim, low=low, high=high))
    return Embodiment(name=f"{embodiment.name}_{mode}", bins=embodiment.bins,
                      discretization=embodiment.discretization, dims=tuple(dims),
                      source=f"{embodiment.source} fitted ({mode})")


def checkpoint_metadata(*, profile: str, embodiment: Embodiment, scheme: TokenScheme,
                        statistics: Mapping[str, Any] | None = None, dataset: str = "train",
                        training_data: Mapping[str, Sequence[str]] | None = None,
                        chain_of_thought: bool = False, plan: str = "") -> dict[str, Any]:
    """``rt2_ros.json`` content: the profile, the embodiment inline, the scheme with its ids, statistics.

    Statistics are stored under ``statistics[dataset]`` (OpenVLA's shape) when
    the profile loader can apply them (no discrete dims beside normalised
    ones); otherwise the embodiment itself carries any normalisation.
    ``training_data`` (``objects`` / ``instructions`` of the training episodes)
    is what ``rt2-ros eval`` splits seen from unseen tasks with.
    ``chain_of_thought``: the model was trained to write a plan before each
    action, so backends loading it plan too; ``plan`` names its kind
    (``rt2-ros train --plan``), so the decoder knows the plan's derived fields.
    """
    data: dict[str, Any] = {
        "format": METADATA_FORMAT, "profile": profile, "embodiment": embodiment.to_dict(),
        "action_tokenizer": {"scheme": scheme.name, "bins": scheme.bins, "ids": scheme.action_ids()}}
    if statistics is not None:
        normalized = any(d.normalized for d in embodiment.dims)
        discrete = any(d.kind == "discrete" for d in embodiment.dims)
        if not (normalized and discrete):
            data["statistics"] = {dataset: {"action": dict(statistics)}}
            data["unnorm_key"] = dataset
    if training_data:
        data["training_data"] = {key: sorted(values) for key, values in training_data.items()}
    if chain_of_thought:
        data["chain_of_thought"] = True
        if plan:
            data["plan"] = plan
    return data


def save_checkpoint(model: Any, processor: Any, out_dir: str | Path, metadata: Mapping[str, Any]) -> Path:
    """Save processor + model (safetensors) + ``rt2_ros.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_checkpoint_metadata(out, metadata)
    return out
