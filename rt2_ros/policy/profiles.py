"""Profiles and checkpoint metadata: which prompt, token scheme and embodiment a model speaks.

A *profile* bundles the prompt with defaults for the token scheme and the
embodiment (DESIGN section 6):

* ``rt2``: the paper's prompt ``Q: what action should the robot take to ...? A:``,
  the ``rt2_arm`` embodiment (8 tokens), the ``integer`` scheme when the
  tokenizer has one token for each of 0..255;
* ``openvla``: OpenVLA's prompt ``In: What action should the robot take to ...?\\nOut:``,
  the ``openvla_bridge`` embodiment (7 dims), the ``last`` scheme, and the
  q01/q99 un-normalisation statistics of the checkpoint chosen with ``unnorm_key``.

What a checkpoint was trained with overrides the defaults.  The trainer saves
it next to the weights in ``rt2_ros.json`` (format ``rt2_ros/1``, every key
optional, unknown keys refused)::

    {
      "format": "rt2_ros/1",
      "profile": "rt2",                     # the prompt the model was trained with
      "embodiment": "rt2_arm",              # a name/path, or an inline embodiment dict (YAML form)
      "action_tokenizer": {
        "scheme": "least_frequent",         # integer | least_frequent | last
        "bins": 256,
        "ids": [17, 23, ...],               # id of bin 0, 1, ...; required for least_frequent
        "vocab_size": 32000                 # last only (default: the tokenizer's base vocab_size)
      },
      "statistics": {"<dataset>": {"action": {"q01": [...], "q99": [...], "mask": [...]}}},
      "unnorm_key": "<dataset>",            # default dataset when several are present
      "chain_of_thought": true,             # trained to write "Plan: ..." first: backends then plan
      "plan": "hand_points_offset"          # optional: its plan kind (rt2_ros.action_language.plans);
                                            # the decoder then computes the plan's derived fields
    }

``statistics`` has the shape of OpenVLA's ``norm_stats``, so one code path
reads both.  Statistics are looked up in ``rt2_ros.json``, then
``config.json`` (``norm_stats``, where OpenVLA checkpoints carry them), then
``dataset_statistics.json``; they are applied only to embodiments with
``normalized`` dims.  With several datasets and no ``unnorm_key`` the load is
refused with the list of keys, never guessed.

Pure Python (no torch): the tokenizer is only asked for ids.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from rt2_ros.action_language import (SCHEMES, ActionLanguageError, Embodiment, IntegerScheme,
                                     LastScheme, TokenScheme, build_prompt, embodiment_from_dict,
                                     load_embodiment, make_scheme)
from rt2_ros.action_language.plans import PLAN_KINDS
from rt2_ros.errors import PolicyError

__all__ = ["Profile", "PROFILES", "METADATA_FILE", "METADATA_FORMAT", "CheckpointMetadata",
           "StoredScheme", "ActionSetup", "read_checkpoint_metadata", "write_checkpoint_metadata",
           "find_statistics", "select_statistics", "resolve_action_setup"]

METADATA_FILE = "rt2_ros.json"
METADATA_FORMAT = "rt2_ros/1"
# training_data: {"objects": [...], "instructions": [...]} seen in the robot data
# (rt2-ros eval splits its success table into seen / unseen with it).
_TOP_KEYS = ("format", "profile", "embodiment", "action_tokenizer", "statistics", "unnorm_key",
             "training_data", "chain_of_thought", "plan")
_TOKENIZER_KEYS = ("scheme", "bins", "ids", "vocab_size")


@dataclass(frozen=True)
class Profile:
    """Prompt + default embodiment + default token scheme."""

    name: str
    default_embodiment: str
    default_scheme: str

    def prompt(self, instruction: str) -> str:
        """The robot prompt for ``instruction`` (no image token, no chat template)."""
        return build_prompt(instruction, self.name)


PROFILES: dict[str, Profile] = {
    "rt2": Profile("rt2", default_embodiment="rt2_arm", default_scheme="integer"),
    "openvla": Profile("openvla", default_embodiment="openvla_bridge", default_scheme="last"),
}


class StoredScheme(TokenScheme):
    """A scheme whose bin -> id table was saved with the checkpoint (``action_tokenizer.ids``)."""

    def __init__(self, name: str, ids: Sequence[int], bins: int) -> None:
        self.name = name
        super().__init__(ids, bins)


@dataclass(frozen=True)
class CheckpointMetadata:
    """The validated content of a checkpoint's ``rt2_ros.json``."""

    source: str
    profile: str = ""
    embodiment: str | dict[str, Any] | None = None
    scheme: str = ""
    bins: int = 256
    ids: tuple[int, ...] | None = None
    vocab_size: int | None = None
    statistics: dict[str, Any] | None = None
    unnorm_key: str = ""
    chain_of_thought: bool = False  # trained to write "Plan: ..." before the action
    plan: str = ""                  # the plan kind it was trained with ("" = not said)


def _bad(source: str, key: str, expected: str, value: Any) -> PolicyError:
    return PolicyError(f"{source}: {key}: expected {expected}, got {value!r}")


def _parse_metadata(data: Any, source: str) -> CheckpointMetadata:
    if not isinstance(data, dict):
        raise _bad(source, "top level", "a JSON object", data)
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise PolicyError(f"{source}: unknown key {unknown[0]!r} (expected keys: {', '.join(_TOP_KEYS)})")
    fmt = data.get("format", METADATA_FORMAT)
    if fmt != METADATA_FORMAT:
        raise _bad(source, "format", repr(METADATA_FORMAT), fmt)
    profile = data.get("profile", "")
    if profile not in ("", *PROFILES):
        raise _bad(source, "profile", f"one of {', '.join(PROFILES)}", profile)
    embodiment = data.get("embodiment")
    if embodiment is not None and not (isinstance(embodiment, dict)
                                       or (isinstance(embodiment, str) and embodiment)):
        raise _bad(source, "embodiment", "an embodiment name, path or object", embodiment)
    unnorm_key = data.get("unnorm_key", "")
    if not isinstance(unnorm_key, str):
        raise _bad(source, "unnorm_key", "a string", unnorm_key)
    statistics = data.get("statistics")
    if statistics is not None and not isinstance(statistics, dict):
        raise _bad(source, "statistics", "an object of datasets", statistics)
    training_data = data.get("training_data", {})
    if not (isinstance(training_data, dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in training_data.values())):
        raise _bad(source, "training_data", "an object of string lists", training_data)
    chain_of_thought = data.get("chain_of_thought", False)
    if not isinstance(chain_of_thought, bool):
        raise _bad(source, "chain_of_thought", "true or false", chain_of_thought)
    plan = data.get("plan", "")
    if plan not in ("", *PLAN_KINDS[1:]):
        raise _bad(source, "plan", f"one of {', '.join(PLAN_KINDS[1:])}", plan)
    if plan and not chain_of_thought:
        raise PolicyError(f"{source}: plan: {plan!r} is a chain-of-thought plan, but chain_of_thought is "
                          f"not true")
    tok = data.get("action_tokenizer", {})
    if not isinstance(tok, dict):
        raise _bad(source, "action_tokenizer", "an object", tok)
    unknown = sorted(set(tok) - set(_TOKENIZER_KEYS))
    if unknown:
        raise PolicyError(f"{source}: action_tokenizer: unknown key {unknown[0]!r} "
                          f"(expected keys: {', '.join(_TOKENIZER_KEYS)})")
    scheme = tok.get("scheme", "")
    if scheme not in ("", *SCHEMES):
        raise _bad(source, "action_tokenizer.scheme", f"one of {', '.join(SCHEMES)}", scheme)
    bins = tok.get("bins", 256)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise _bad(source, "action_tokenizer.bins", "an integer >= 2", bins)
    ids = tok.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or len(ids) != bins:
            raise _bad(source, "action_tokenizer.ids", f"a list of {bins} token ids", ids)
        for position, token_id in enumerate(ids):
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise _bad(source, f"action_tokenizer.ids[{position}]", "a token id >= 0", token_id)
        ids = tuple(ids)
    if scheme == "least_frequent" and ids is None:
        raise PolicyError(f"{source}: action_tokenizer.ids: the least_frequent scheme needs the "
                          f"{bins} ids chosen at training time, got none")
    vocab_size = tok.get("vocab_size")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
                                   or vocab_size <= bins):
        raise _bad(source, "action_tokenizer.vocab_size", f"an integer > {bins}", vocab_size)
    return CheckpointMetadata(source=source, profile=profile, embodiment=embodiment, scheme=scheme,
                              bins=bins, ids=ids, vocab_size=vocab_size, statistics=statistics,
                              unnorm_key=unnorm_key, chain_of_thought=chain_of_thought, plan=plan)


def read_checkpoint_metadata(checkpoint_dir: str | Path) -> CheckpointMetadata | None:
    """Return the checkpoint's validated ``rt2_ros.json``, or None if it has none."""
    path = Path(checkpoint_dir) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{path}: not a readable JSON file ({exc})") from None
    return _parse_metadata(data, str(path))


def write_checkpoint_metadata(checkpoint_dir: str | Path, metadata: Mapping[str, Any]) -> Path:
    """Validate ``metadata`` (the ``rt2_ros.json`` form above) and write it into ``checkpoint_dir``.

    ``format`` is filled in; an inline :class:`Embodiment` is stored as its dict.
    """
    data = dict(metadata)
    data.setdefault("format", METADATA_FORMAT)
    if isinstance(data.get("embodiment"), Embodiment):
        data["embodiment"] = data["embodiment"].to_dict()
    path = Path(checkpoint_dir) / METADATA_FILE
    _parse_metadata(json.loads(json.dumps(data)), str(path))
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{path}: not a readable JSON file ({exc})") from None


def find_statistics(checkpoint_dir: str | Path | None,
                    metadata: CheckpointMetadata | None) -> tuple[dict[str, Any], str] | None:
    """Return ``(statistics by dataset, where they came from)``, or None if the checkpoint has none.

    Looks in ``rt2_ros.json``, then ``config.json``'s ``norm_stats``, then
    ``dataset_statistics.json``.
    """
    if metadata is not None and metadata.statistics:
        return metadata.statistics, metadata.source
    if checkpoint_dir is None:
        return None
    config = Path(checkpoint_dir) / "config.json"
    if config.is_file():
        stats = _read_json(config).get("norm_stats")
        if stats:
            if not isinstance(stats, dict):
                raise _bad(str(config), "norm_stats", "an object of datasets", stats)
            return stats, f"{config} (norm_stats)"
    dataset_file = Path(checkpoint_dir) / "dataset_statistics.json"
    if dataset_file.is_file():
        stats = _read_json(dataset_file)
        if not isinstance(stats, dict) or not stats:
            raise _bad(str(dataset_file), "top level", "an object of datasets", stats)
        return stats, str(dataset_file)
    return None


def select_statistics(statistics: Mapping[str, Any], unnorm_key: str, source: str) -> tuple[str, Any]:
    """Return ``(key, action statistics)`` of the dataset ``unnorm_key`` selects.

    An empty key is accepted only when there is exactly one dataset: with
    several, the choice decides the robot's scale and is refused, not guessed.
    """
    keys = sorted(statistics)
    if unnorm_key:
        if unnorm_key not in statistics:
            raise PolicyError(f"unnorm_key: {unnorm_key!r} is not a dataset of {source} "
                              f"(datasets: {', '.join(keys)})")
        key = unnorm_key
    elif len(keys) == 1:
        key = keys[0]
    else:
        raise PolicyError(f"{source} has statistics for {len(keys)} datasets; choose one with "
                          f"unnorm_key (datasets: {', '.join(keys)})")
    entry = statistics[key]
    action = entry.get("action", entry) if isinstance(entry, dict) else entry
    if not isinstance(action, dict):
        raise _bad(source, f"{key}.action", "an object with q01, q99 and mask", action)
    return key, action


@dataclass(frozen=True)
class ActionSetup:
    """Everything a backend needs to speak actions with one checkpoint."""

    profile: Profile
    scheme: TokenScheme
    embodiment: Embodiment
    unnorm_key: str = ""          # the dataset whose statistics were applied ("" if none)
    source: str = ""              # where the scheme came from, for diagnostics
    chain_of_thought: bool = False  # the checkpoint was trained to write a plan first (rt2_ros.json)
    plan: str = ""                  # and with which plan kind ("" = not said)

    def prompt(self, instruction: str) -> str:
        """The robot prompt for ``instruction``."""
        return self.profile.prompt(instruction)


def _load_embodiment(spec: str | dict[str, Any], source: str) -> Embodiment:
    try:
        if isinstance(spec, dict):
            return embodiment_from_dict(spec, source=source)
        return load_embodiment(spec)
    except ActionLanguageError as exc:
        raise PolicyError(f"embodiment ({source}): {exc}") from None


def _scheme(tokenizer: Any, profile: Profile, metadata: CheckpointMetadata | None,
            where: str) -> tuple[TokenScheme, str]:
    name = metadata.scheme if metadata is not None and metadata.scheme else profile.default_scheme
    source = metadata.source if metadata is not None and metadata.scheme else f"profile {profile.name}"
    bins = metadata.bins if metadata is not None else 256
    try:
        if metadata is not None and metadata.ids is not None:
            if name == "integer":
                return IntegerScheme(metadata.ids, bins), source
            return StoredScheme(name or profile.default_scheme, metadata.ids, bins), source
        if name == "last":
            vocab_size = metadata.vocab_size if metadata is not None else None
            if vocab_size is not None:
                return LastScheme(vocab_size, bins), source
        return make_scheme(name, tokenizer, bins), source
    except ActionLanguageError as exc:
        hint = ""
        if name == "integer" and (metadata is None or not metadata.scheme):
            hint = (f"; {where} has no {METADATA_FILE} naming another scheme "
                    f"(least_frequent or last, written by the trainer)")
        raise PolicyError(f"{where}: {name} token scheme: {exc}{hint}") from None


def resolve_action_setup(tokenizer: Any, *, checkpoint_dir: str | Path | None = None,
                         profile: str = "rt2", embodiment: str = "", unnorm_key: str = "",
                         logits_width: int | None = None) -> ActionSetup:
    """Decide the prompt, token scheme and embodiment for a checkpoint.

    Precedence: an explicit ``embodiment`` argument, then ``rt2_ros.json``,
    then the profile's defaults.  ``logits_width`` (the model's output
    vocabulary) is checked to contain every action id.
    """
    if profile not in PROFILES:
        raise PolicyError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    chosen = PROFILES[profile]
    where = f"checkpoint {str(checkpoint_dir)!r}" if checkpoint_dir is not None else "model"
    metadata = read_checkpoint_metadata(checkpoint_dir) if checkpoint_dir is not None else None
    if metadata is not None and metadata.profile and metadata.profile != profile:
        raise PolicyError(f"{metadata.source}: the model was trained with profile "
                          f"{metadata.profile!r}, got profile {profile!r}")
    if embodiment:
        body = _load_embodiment(embodiment, "embodiment option")
    elif metadata is not None and metadata.embodiment is not None:
        body = _load_embodiment(metadata.embodiment, metadata.source)
    else:
        body = _load_embodiment(chosen.default_embodiment, f"profile {profile}")
    scheme, source = _scheme(tokenizer, chosen, metadata, where)
    try:
        scheme.allowed_ids(body)
    except ActionLanguageError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    if logits_width is not None and scheme.max_id >= logits_width:
        raise PolicyError(f"{where}: the {scheme.name} scheme uses token id {scheme.max_id}, but the "
                          f"model only has {logits_width} output logits")
    applied_key = ""
    if any(dim.normalized for dim in body.dims):
        found = find_statistics(checkpoint_dir, metadata)
        if found is not None:
            stats, stats_source = found
            key = unnorm_key or (metadata.unnorm_key if metadata is not None else "")
            applied_key, action_stats = select_statistics(stats, key, stats_source)
            try:
                body = body.with_openvla_statistics(action_stats)
            except ActionLanguageError as exc:
                raise PolicyError(f"{stats_source}: {applied_key}: {exc}") from None
    elif unnorm_key:
        raise PolicyError(f"unnorm_key: {unnorm_key!r} given, but embodiment {body.name!r} has no "
                          f"normalised dims to apply statistics to")
    return ActionSetup(profile=chosen, scheme=scheme, embodiment=body, unnorm_key=applied_key,
                       source=source, chain_of_thought=metadata is not None and metadata.chain_of_thought,
                       plan=metadata.plan if metadata is not None else "")
