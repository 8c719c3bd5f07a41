"""``rt2-ros train``: co-fine-tuning a VLM on robot episodes mixed with VQA data (RT-2's recipe).

One loss, unchanged: next-token cross entropy on the answer tokens of every
sample, robot actions (as the token scheme's ids) and VQA answers alike
(:mod:`rt2_ros.training.collate`).  Batches mix the two at
``robot_fraction`` (:mod:`rt2_ros.training.mixture`; RT-2 used ~0.5 for
PaLI-X and ~0.66 for PaLM-E).

Built on the Hugging Face :class:`~transformers.Trainer`, so progress bars,
logging, checkpointing, mixed precision, and multi-GPU / DeepSpeed / FSDP
(launch with ``accelerate launch -m rt2_ros.cli train ...`` after
``accelerate config``) come from it.  rt2_ros adds: the mixture sampler, the
held-out evaluation (action token accuracy and VQA exact match, see
:mod:`rt2_ros.training.metrics`) and ``rt2_ros.json`` in every saved
checkpoint, so ``output_dir`` (and each ``checkpoint-N`` in it) loads with
:meth:`TransformersPolicy.from_pretrained` and therefore in ``rt2-ros act``,
``rt2-ros serve`` and the policy node.

Starting points: a pretrained checkpoint directory (``model``), or a small VLM
from scratch (``from_scratch``: ``tiny`` | ``small``, see
:mod:`rt2_ros.training.from_scratch`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rt2_ros.action_language import Embodiment, load_embodiment
from rt2_ros.errors import ActionLanguageError, ConfigError
from rt2_ros.policy.profiles import PROFILES, read_checkpoint_metadata, resolve_action_setup
from rt2_ros.training.checkpoint import (BOUNDS_CHOICES, SCHEME_CHOICES, action_statistics, checkpoint_metadata,
                                         choose_scheme, fit_embodiment, reinitialize_rows)
from rt2_ros.training.episodes import ACTION_SOURCES, PLAN_KINDS, plan_layout
from rt2_ros.training.lerobot_data import LeRobotOptions, parse_action_map
from rt2_ros.training.samples import OUTCOME_FILTERS, SampleSet
from rt2_ros.validation import expect_bool, expect_int, expect_number, expect_str

__all__ = ["TrainConfig", "train", "SUMMARY_FILE", "prepare_data", "grounding_layer_index"]

SUMMARY_FILE = "training_summary.json"
_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``rt2-ros train`` takes (validated; errors name the option)."""

    output_dir: str
    data: tuple[str, ...] = ()                 # episode roots (collect outputs, bag directories)
    vqa: tuple[str, ...] = ()                  # JSONL files, collect outputs, datasets directories
    model: str = ""                            # pretrained checkpoint directory ...
    from_scratch: str = ""                     # ... or "tiny" | "small"
    profile: str = "rt2"
    embodiment: str = ""                       # default: the profile's
    scheme: str = "auto"
    action_bounds: str = "embodiment"
    robot_fraction: float = 0.5
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 1000
    learning_rate: float = 3e-4
    lr_scheduler: str = "cosine"
    warmup: float = 0.03                       # fraction of max_steps (< 1) or steps
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_steps: int = 200                      # 0: evaluate only at the end
    save_steps: int = 0                        # 0: save only at the end
    save_total_limit: int = 2
    logging_steps: int = 10
    eval_episodes: int = 2                     # whole episodes held out for evaluation
    eval_data: tuple[str, ...] = ()            # episode roots held out instead (eval_episodes then unused)
    eval_vqa_images: int = 20                  # VQA images (all their questions) held out
    eval_max_samples: int = 256                # cap per kind, so evaluation stays quick
    seed: int = 0
    image_size: int = 0                        # 0: the model's (scratch: the preset's)
    outcomes: str = "success"
    action_source: str = "auto"
    control_rate_hz: float = 0.0               # ee_pose episodes without a recorded rate
    cache_dir: str = ""
    bf16: bool = False
    use_cpu: bool = False
    num_workers: int = 0
    dataset_name: str = "train"                # key of the statistics in rt2_ros.json
    hf_split: str = "train"
    hf_image_column: str = "image"
    hf_question_column: str = "question"
    hf_answer_column: str = "answer"
    grounding_weight: float = 0.0              # weight of the attention-on-the-point loss (0 = off)
    grounding_layer: int = -1                  # decoder layer whose attention it supervises (-1 = middle)
    plan: str = "none"                         # robot answers: "points" plans goal + gripper points first,
                                               # "object_points" the task's object's point before them,
                                               # "object_points_hand" the hand's height and fingers after
    plan_given_fraction: float = 0.0           # robot samples trained as plan -> action only (see collate)
    event_repeat: int = 1                      # draws per pass of gripper-switch and terminate steps (mixture)
    lerobot_camera: str = ""                   # LeRobot datasets: the camera feature ("" = the only one)
    lerobot_action_map: str = ""               # LeRobot datasets: "x=0,y=1,..." ("" = by action names)
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)   # more TrainingArguments, passed through

    def __post_init__(self) -> None:
        expect_str("output_dir", self.output_dir, allow_empty=False)
        for key in ("data", "vqa", "eval_data"):
            value = getattr(self, key)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, key, tuple(value))
            for i, item in enumerate(getattr(self, key)):
                expect_str(f"{key}[{i}]", item, allow_empty=False)
        if bool(self.model) == bool(self.from_scratch):
            raise ConfigError(f"model: expected a checkpoint directory or from_scratch (tiny, small), "
                              f"exactly one; got model={self.model!r} from_scratch={self.from_scratch!r}")
        from rt2_ros.training.from_scratch import SCRATCH_SHAPES

        if self.from_scratch:
            expect_str("from_scratch", self.from_scratch, choices=SCRATCH_SHAPES)
        expect_str("profile", self.profile, choices=PROFILES)
        expect_str("scheme", self.scheme, choices=SCHEME_CHOICES)
        expect_str("action_bounds", self.action_bounds, choices=BOUNDS_CHOICES)
        expect_number("robot_fraction", self.robot_fraction, low=0.0, high=1.0)
        if not self.data and self.robot_fraction > 0:
            raise ConfigError(f"data: robot_fraction {self.robot_fraction} needs robot episodes (give data)")
        if self.eval_data and not self.data:
            raise ConfigError("eval_data: held-out robot episodes need robot training data (give data)")
        shared = sorted({str(Path(p).resolve()) for p in self.data}
                        & {str(Path(p).resolve()) for p in self.eval_data})
        if shared:
            raise ConfigError(f"eval_data: expected episodes kept out of training, got {shared[0]} in data too")
        if not self.vqa and self.robot_fraction < 1:
            raise ConfigError(f"robot_fraction: {self.robot_fraction} leaves room for VQA samples but no "
                              f"vqa source was given (give vqa, or set robot_fraction to 1.0)")
        expect_int("batch_size", self.batch_size, low=1, high=65536)
        expect_int("grad_accum", self.grad_accum, low=1, high=65536)
        expect_int("max_steps", self.max_steps, low=1)
        expect_number("learning_rate", self.learning_rate, low=0.0, low_inclusive=False, high=1.0)
        expect_str("lr_scheduler", self.lr_scheduler, choices=_SCHEDULERS)
        expect_number("warmup", self.warmup, low=0.0)
        expect_number("weight_decay", self.weight_decay, low=0.0)
        expect_number("max_grad_norm", self.max_grad_norm, low=0.0)
        for key in ("eval_steps", "save_steps", "eval_episodes", "eval_vqa_images", "num_workers", "seed",
                    "image_size"):
            expect_int(key, getattr(self, key), low=0)
        expect_int("save_total_limit", self.save_total_limit, low=1)
        expect_int("logging_steps", self.logging_steps, low=1)
        expect_int("eval_max_samples", self.eval_max_samples, low=1)
        expect_str("outcomes", self.outcomes, choices=OUTCOME_FILTERS)
        expect_str("action_source", self.action_source, choices=ACTION_SOURCES)
        expect_number("control_rate_hz", self.control_rate_hz, low=0.0)
        for key in ("bf16", "use_cpu", "trust_remote_code"):
            expect_bool(key, getattr(self, key))
        expect_str("dataset_name", self.dataset_name, allow_empty=False)
        for key in ("hf_split", "hf_image_column", "hf_question_column", "hf_answer_column"):
            expect_str(key, getattr(self, key), allow_empty=False)
        expect_number("grounding_weight", self.grounding_weight, low=0.0, high=100.0)
        expect_int("grounding_layer", self.grounding_layer, low=-1)
        expect_str("plan", self.plan, choices=PLAN_KINDS)
        if self.plan != "none" and not self.data:
            raise ConfigError(f"plan: {self.plan!r} plans robot answers, but no robot data was given")
        expect_number("plan_given_fraction", self.plan_given_fraction, low=0.0, high=1.0)
        if self.plan_given_fraction and self.plan == "none":
            raise ConfigError(f"plan_given_fraction: {self.plan_given_fraction} gives robot samples their "
                              f"plan, but plan is 'none' (set plan to one of {', '.join(PLAN_KINDS[1:])})")
        expect_int("event_repeat", self.event_repeat, low=1, high=100)
        if self.event_repeat > 1 and not self.data:
            raise ConfigError(f"event_repeat: {self.event_repeat} repeats robot steps, but no robot data was given")
        expect_str("lerobot_camera", self.lerobot_camera)
        expect_str("lerobot_action_map", self.lerobot_action_map)
        parse_action_map("lerobot_action_map", self.lerobot_action_map)
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra: expected a mapping of TrainingArguments, got {self.extra!r}")


# ----------------------------------------------------------------------------- data


def _image_size_of(processor: Any) -> int:
    size = getattr(processor.image_processor, "size", None) or {}
    crop = getattr(processor.image_processor, "crop_size", None) or {}
    values = [v for v in (*dict(size).values(), *dict(crop).values()) if isinstance(v, int)]
    return min(values) if values else 224


def _split_robot(samples: SampleSet, episodes: int, seed: int) -> tuple[list[int], list[int]]:
    names = sorted({r["episode"] for r in samples.records})
    held = set()
    if episodes and len(names) > 1:
        rng = np.random.default_rng([seed, 1])
        held = {names[i] for i in rng.permutation(len(names))[:min(episodes, len(names) - 1)]}
    train = [i for i, r in enumerate(samples.records) if r["episode"] not in held]
    test = [i for i, r in enumerate(samples.records) if r["episode"] in held]
    return train, test


def _split_vqa(samples: SampleSet, images: int, seed: int) -> tuple[list[int], list[int]]:
    offsets = sorted({r["offset"] for r in samples.records})
    held = set()
    if images and len(offsets) > 1:
        rng = np.random.default_rng([seed, 2])
        held = {offsets[i] for i in rng.permutation(len(offsets))[:min(images, len(offsets) - 1)]}
    train = [i for i, r in enumerate(samples.records) if r["offset"] not in held]
    test = [i for i, r in enumerate(samples.records) if r["offset"] in held]
    return train, test


def prepare_data(config: TrainConfig, embodiment: Embodiment, image_size: int,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load (or build) the sample caches and split them; returns the sets and a summary."""
    from rt2_ros.training.samples import robot_samples, vqa_samples

    out: dict[str, Any] = {"robot": None, "vqa": None, "summary": {}}
    cache = config.cache_dir or None
    if config.data:
        started = time.perf_counter()
        lerobot = LeRobotOptions(config.lerobot_camera,
                                 parse_action_map("lerobot_action_map", config.lerobot_action_map))
        robot, summary = robot_samples(config.data, embodiment, image_size, cache_dir=cache,
                                       action_source=config.action_source, outcomes=config.outcomes,
                                       control_rate_hz=config.control_rate_hz or None, lerobot=lerobot)
        if config.eval_data:
            # A fixed held-out set: one drawn from data changes as rounds of DAgger add episodes to it.
            held, held_summary = robot_samples(config.eval_data, embodiment, image_size, cache_dir=cache,
                                               action_source=config.action_source, outcomes=config.outcomes,
                                               control_rate_hz=config.control_rate_hz or None, lerobot=lerobot)
            out["robot"] = (robot, held)
            summary["eval_data"] = {"sources": list(config.eval_data), "episodes": held_summary["used"]}
            train_count, test_count = len(robot), len(held)
            where = f"{held_summary['used']} episodes of {', '.join(config.eval_data)}"
        else:
            train, test = _split_robot(robot, config.eval_episodes, config.seed)
            out["robot"] = (robot.subset(train), robot.subset(test))
            train_count, test_count = len(train), len(test)
            held_out = len({robot.records[i]["episode"] for i in test})
            where = f"{held_out} episodes drawn from the data" if held_out else "none"
        out["summary"]["robot"] = {**summary, "train_samples": train_count, "eval_samples": test_count,
                                   "seconds": round(time.perf_counter() - started, 1)}
        relabelled = f", {summary['relabelled']} of them relabelled (DAgger)" if summary["relabelled"] else ""
        log(f"robot data: {train_count} training samples, {test_count} held out ({where}; "
            f"{summary['used']} of {summary['episodes']} episodes used{relabelled}; "
            f"cache {', '.join(summary['caches'])})")
    if config.vqa:
        started = time.perf_counter()
        vqa = vqa_samples(config.vqa, image_size, cache_dir=cache,
                          hf_options={"split": config.hf_split, "image_column": config.hf_image_column,
                                      "question_column": config.hf_question_column,
                                      "answer_column": config.hf_answer_column})
        train, test = _split_vqa(vqa, config.eval_vqa_images, config.seed)
        out["vqa"] = (vqa.subset(train), vqa.subset(test))
        out["summary"]["vqa"] = {"train_samples": len(train), "eval_samples": len(test), "cache": str(vqa.path),
                                 "seconds": round(time.perf_counter() - started, 1)}
        log(f"vqa data: {len(train)} training samples, {len(test)} held out (cache {vqa.path})")
    return out


# ----------------------------------------------------------------------------- model


def _training_texts(robot: SampleSet | None, vqa: SampleSet | None, profile: str,
                    plan: str = "none") -> list[str]:
    """Every text the model reads or writes (tokenizer vocabulary, least_frequent counts)."""
    texts = []
    if robot is not None:
        texts.extend(PROFILES[profile].prompt(t) for t in sorted({r["instruction"] for r in robot.records}))
        if plan != "none":
            # The plan's words: the point names (and, with object_points, the objects' names,
            # which the instructions already hold).
            texts.append(_plan_words(plan))
    if vqa is not None:
        texts.extend(r["question"] for r in vqa.records)
        texts.extend(r["answer"] for r in vqa.records)
    return texts


def _plan_words(plan: str) -> str:
    """Every word a plan of kind ``plan`` can write, numbers aside (objects' names come from the
    instructions)."""
    return " ".join(f.name for f in plan_layout(plan) if f.name != "object")


def _add_missing_plan_words(model: Any, processor: Any, plan: str, log: Callable[[str], None]) -> None:
    """Give a word-level tokenizer (``--from-scratch`` checkpoints) the plan words it lacks.

    A checkpoint trained before a plan kind existed maps the new words to
    ``<unk>``; the plan would then lose them when decoded.  They are added as
    tokens with fresh embedding rows (subword tokenizers spell any word and
    are left alone).
    """
    tokenizer = processor.tokenizer
    unknown = tokenizer.unk_token_id
    if plan == "none" or unknown is None:
        return
    missing = [w for w in dict.fromkeys(_plan_words(plan).split())
               if not w.isdigit() and unknown in tokenizer(" " + w, add_special_tokens=False)["input_ids"]]
    if not missing:
        return
    tokenizer.add_tokens(missing)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    log(f"plan: added the words {', '.join(missing)} to the tokenizer (ids from "
        f"{len(tokenizer) - len(missing)}; the checkpoint did not know them)")


def _load_pretrained(config: TrainConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(config.model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"model: {str(path)!r} is not a Hugging Face checkpoint directory (no config.json)")
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=config.trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=config.trust_remote_code,
                                                            dtype="float32")
    except Exception as exc:  # noqa: BLE001 - loaders raise many types for a bad directory
        raise ConfigError(f"model: cannot load {str(path)!r}: {str(exc).splitlines()[0]}") from None
    return model, processor


def _scheme_for(config: TrainConfig, model: Any, processor: Any, texts: list[str],
                embodiment: Embodiment) -> tuple[Any, bool]:
    """The token scheme, and whether its rows must be re-initialised (a newly chosen least_frequent)."""
    width = int(model.get_output_embeddings().weight.shape[0])
    metadata = read_checkpoint_metadata(config.model) if config.model else None
    if metadata is not None and metadata.ids is not None and config.scheme in ("auto", metadata.scheme):
        # Continue training a checkpoint in the action tokens it already speaks.
        setup = resolve_action_setup(processor.tokenizer, checkpoint_dir=config.model, profile=config.profile,
                                     embodiment=config.embodiment or "", logits_width=width)
        return setup.scheme, False
    scheme = choose_scheme(config.scheme, processor.tokenizer, texts, bins=embodiment.bins, logits_width=width)
    try:
        scheme.allowed_ids(embodiment)
    except ActionLanguageError as exc:
        raise ConfigError(f"scheme: {exc}") from None
    return scheme, scheme.name == "least_frequent"


# ----------------------------------------------------------------------------- trainer


def _make_trainer_class() -> Any:
    from transformers import Trainer

    from rt2_ros.policy.profiles import write_checkpoint_metadata
    from rt2_ros.training.metrics import evaluate_model
    from rt2_ros.training.mixture import MixtureSampler

    class Rt2Trainer(Trainer):
        """HF Trainer + RT-2 mixture batches + held-out action/VQA metrics + rt2_ros.json on save."""

        def __init__(self, *args: Any, rt2: dict[str, Any], **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.rt2 = rt2
            self._hints: list[float] = []   # grounding losses since the last log line

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            # The logged loss includes W x the grounding loss; its own mean shows whether the
            # attention found the points, apart from how well the answers are predicted.
            if self._hints and "loss" in logs:
                logs["grounding_loss"] = round(sum(self._hints) / len(self._hints), 4)
                self._hints = []
            super().log(logs, *args, **kwargs)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            target = inputs.pop("grounding_target", None)
            queries = inputs.pop("grounding_queries", None)
            numbers = inputs.pop("plan_numbers", None)
            plan_queries = inputs.pop("plan_queries", None)
            layer = self.rt2.get("grounding_layer")
            has_points = target is not None and bool((target >= 0).any())
            has_plans = numbers is not None and bool((numbers >= 0).any())
            if layer is None or not (has_points or has_plans):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**inputs, output_attentions=True)
            attentions, device = outputs.attentions[layer], outputs.loss.device
            hint = grounding_loss(attentions, target.to(device), queries.to(device)) if has_points \
                else outputs.loss.new_zeros(())
            if has_plans:
                # With a plan the action reads the plan's numbers (the plan reads the image).
                hint = hint + plan_reading_loss(attentions, numbers.to(device), plan_queries.to(device))
            if model.training:
                self._hints.append(float(hint.detach()))
            loss = outputs.loss + self.rt2["grounding_weight"] * hint
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return MixtureSampler(dataset.robot_count, dataset.vqa_count, self._train_batch_size,
                                  self.rt2["robot_fraction"], seed=self.args.seed,
                                  robot_repeats=self.rt2.get("robot_repeats"))

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            model = self.model_wrapped if self.model_wrapped is not None else self.model
            values = evaluate_model(model, dataset, self.data_collator, self.rt2["scheme"],
                                    self.rt2["embodiment"], self.rt2["free_mask"],
                                    batch_size=self.args.per_device_eval_batch_size)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in values.items() if not math.isnan(v)}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            super()._save(output_dir, state_dict)
            if self.args.should_save:
                write_checkpoint_metadata(output_dir or self.args.output_dir, self.rt2["metadata"])

    return Rt2Trainer


def grounding_layer_index(requested: int, layers: int) -> int:
    """The decoder layer ``grounding_layer`` = ``requested`` names in a decoder of ``layers``
    layers (-1: the middle one); ConfigError when the decoder has no such layer."""
    layer = layers // 2 if requested < 0 else requested
    if layer >= layers:
        raise ConfigError(f"grounding_layer: expected -1 or 0..{layers - 1} (the decoder's layers), got {layer}")
    return layer


def _grounding_setup(config: TrainConfig, model: Any, log: Callable[[str], None]) -> int | None:
    """The decoder layer the grounding loss supervises (None when it is off); switches the model to
    eager attention, the one implementation that returns attention weights."""
    from rt2_ros.training.collate import PREFIX_LM_MODEL_TYPES

    if not config.grounding_weight:
        return None
    if model.config.model_type not in PREFIX_LM_MODEL_TYPES:
        # Points map onto the patch grid only when the processor resizes the whole image onto it
        # (SigLIP's does; CLIP's crops the centre).
        raise ConfigError(f"grounding_weight: supported for {', '.join(PREFIX_LM_MODEL_TYPES)} models, "
                          f"got {model.config.model_type!r}")
    layer = grounding_layer_index(config.grounding_layer, int(model.config.get_text_config().num_hidden_layers))
    model.set_attn_implementation("eager")
    log(f"grounding: weight {config.grounding_weight} on decoder layer {layer}'s attention (eager attention)")
    return layer


def grounding_loss(attentions: Any, target: Any, queries: Any) -> Any:
    """-log(attention mass on the target image tokens), averaged over the positions that predict
    the answer, over a row's points and over the rows with any point.

    With (B, L) queries a row with K points splits the heads into K consecutive groups; group
    k's mean attention is supervised onto point k (one point: all heads, averaged).  So a robot
    sample can have one group find where the action heads and another find the gripper, and the
    layer's output carries both places.  With (B, K, L) queries point k has its own query
    positions (a plan's: those that write its numbers) and all heads are supervised onto it.

    attentions: (B, heads, L, L) of one layer; target: (B, K) token positions, -1 = none (a (B,)
    tensor is one point per row); queries: (B, L) or (B, K, L) bool.
    """
    import torch

    if target.dim() == 1:
        target = target[:, None]
    rows = torch.nonzero((target >= 0).any(-1)).flatten()
    if len(rows) == 0:
        return attentions.new_zeros(())
    if queries.dim() == 3:
        return _per_point_grounding_loss(attentions, target, queries)
    heads = attentions.shape[1]
    losses = []
    for row in rows:
        points = [int(t) for t in target[row] if t >= 0]
        groups = torch.arange(heads).tensor_split(min(len(points), heads))
        for point, group in zip(points, groups):
            on_point = attentions[row, group, :, point].mean(0)          # (L,): per query position
            mass = on_point[queries[row]].clamp_min(1e-6)
            losses.append(-mass.log().mean())
    if not losses:
        return attentions.new_zeros(())
    return torch.stack(losses).mean()


def _per_point_grounding_loss(attentions: Any, target: Any, queries: Any) -> Any:
    """grounding_loss for (B, K, L) queries, in one batched computation (a Python loop over rows
    and points cost ~30 ms a CPU step: bench/grounding_loss_speed.py).  Each (row, point) with a
    point and a query position counts once in the mean."""
    import torch

    batch, _, length, _ = attentions.shape
    columns = target.clamp_min(0)                                           # (B, K)
    # Only the K point columns are averaged over heads: (B, H, L, K) -> (B, L, K) -> (B, K, L).
    on_point = attentions.gather(3, columns[:, None, None, :].expand(batch, attentions.shape[1], length, -1))
    on_point = on_point.mean(1).transpose(1, 2)
    weights = queries.to(on_point.dtype)
    counts = weights.sum(-1)                                                # (B, K)
    valid = (target >= 0) & (counts > 0)
    if not bool(valid.any()):
        return attentions.new_zeros(())
    per_point = -(on_point.clamp_min(1e-6).log() * weights).sum(-1) / counts.clamp_min(1.0)
    return per_point[valid].mean()


def plan_attention_mass(attention: Any, queries: Any, positions: Any) -> Any:
    """Per query position of one row, the attention mass on ``positions``, averaged over heads.

    attention: (heads, L, L) of one row; queries: (L,) bool; positions: (M,) token positions.
    """
    return attention[:, queries][:, :, positions].sum(-1).mean(0)


def plan_reading_loss(attentions: Any, numbers: Any, queries: Any) -> Any:
    """-log(attention mass on the plan's number tokens), averaged over heads and over the positions
    that predict the action tokens, then over the rows with a plan.

    A model trained on true plans next to the image they came from can take its
    action from the image and never read the plan; this points the action at
    the numbers the plan wrote (which of them each head reads is left to it).

    attentions: (B, heads, L, L) of one layer; numbers: (B, M) token positions, -1 = none;
    queries: (B, L) bool.
    """
    import torch

    batch, heads, length, _ = attentions.shape
    weights = queries.to(attentions.dtype)
    counts = weights.sum(-1)                                                # (B,)
    rows = (numbers >= 0).any(-1) & (counts > 0)
    if not bool(rows.any()):
        return attentions.new_zeros(())
    # Batched (a loop over rows cost a noticeable share of a CPU step): the mass on the number
    # columns, padding columns (-1) zeroed, averaged over heads -> (B, L).
    on_numbers = attentions.gather(3, numbers.clamp_min(0)[:, None, None, :].expand(batch, heads, length, -1))
    mass = (on_numbers * (numbers >= 0)[:, None, None, :].to(attentions.dtype)).sum(-1).mean(1)
    per_row = -(mass.clamp_min(1e-6).log() * weights).sum(-1) / counts.clamp_min(1.0)
    return per_row[rows].mean()


def _cap(samples: SampleSet | None, limit: int, seed: int) -> SampleSet | None:
    if samples is None or len(samples) <= limit:
        return samples
    rng = np.random.default_rng([seed, 3])
    return samples.subset(sorted(rng.permutation(len(samples))[:limit].tolist()))


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def train(config: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run co-fine-tuning as configured; save the final checkpoint to ``config.output_dir``.

    Returns the summary also written to ``<output_dir>/training_summary.json``:
    data counts, the scheme, parameter count, checkpoint size, seconds, the
    final held-out metrics and the Trainer's log history (loss curve).
    """
    import torch
    from transformers import TrainingArguments, set_seed

    from rt2_ros.policy.constrained_decoding import free_text_mask
    from rt2_ros.training.collate import PREFIX_LM_MODEL_TYPES, MixtureDataset, Rt2Collator
    from rt2_ros.training.from_scratch import SCRATCH_SHAPES, build_scratch_vlm
    from rt2_ros.training.mixture import event_repeats

    started = time.perf_counter()
    set_seed(config.seed)
    out = Path(config.output_dir)
    try:
        cache_embodiment = load_embodiment(config.embodiment or PROFILES[config.profile].default_embodiment)
    except ActionLanguageError as exc:
        raise ConfigError(f"embodiment: {exc}") from None

    if config.from_scratch:
        image_size = config.image_size or SCRATCH_SHAPES[config.from_scratch].image_size
        model = processor = None
    else:
        model, processor = _load_pretrained(config)
        image_size = config.image_size or _image_size_of(processor)
    from accelerate import PartialState

    # Under `accelerate launch` every process needs the caches: the main one builds them first.
    with PartialState().main_process_first():
        data = prepare_data(config, cache_embodiment, image_size, log)
    robot_train, robot_eval = data["robot"] or (None, None)
    vqa_train, vqa_eval = data["vqa"] or (None, None)

    statistics = None
    embodiment = cache_embodiment
    if robot_train is not None and len(robot_train):
        statistics = action_statistics([r["action"] for r in robot_train.records], cache_embodiment)
        if any(d.normalized for d in cache_embodiment.dims):
            embodiment = cache_embodiment.with_openvla_statistics(statistics)
        embodiment = fit_embodiment(embodiment, statistics, config.action_bounds)
        clipped = _clipping(robot_train, cache_embodiment)
        if clipped:
            log("warning: actions at the embodiment's bounds (clipped?): "
                + ", ".join(f"{k} {v:.1%}" for k, v in clipped.items()))

    texts = _training_texts(robot_train, vqa_train, config.profile, config.plan)
    if config.from_scratch:
        model, processor = build_scratch_vlm(config.from_scratch, texts, seed=config.seed,
                                             image_size=config.image_size or None)
    else:
        _add_missing_plan_words(model, processor, config.plan, log)
    scheme, reinit = _scheme_for(config, model, processor, texts, embodiment)
    if reinit:
        reinitialize_rows(model, scheme.action_ids(), seed=config.seed)
    log(f"action tokens: {scheme.name} scheme, ids {min(scheme.action_ids())}..{max(scheme.action_ids())}"
        + (" (rows re-initialised)" if reinit else ""))
    metadata = _loadable_metadata(checkpoint_metadata(
        profile=config.profile, embodiment=embodiment, scheme=scheme, statistics=statistics,
        dataset=config.dataset_name, training_data=_training_data(robot_train),
        chain_of_thought=config.plan != "none", plan="" if config.plan == "none" else config.plan))
    prefix_lm = model.config.model_type in PREFIX_LM_MODEL_TYPES
    grounding_layer = _grounding_setup(config, model, log)
    collator = Rt2Collator(processor, scheme, profile=config.profile, prefix_lm=prefix_lm,
                           grounding=grounding_layer is not None)
    train_set = MixtureDataset(robot_train, vqa_train, embodiment, cache_embodiment, plan=config.plan,
                               plan_given_fraction=config.plan_given_fraction, seed=config.seed)
    eval_set = MixtureDataset(_cap(robot_eval, config.eval_max_samples, config.seed),
                              _cap(vqa_eval, config.eval_max_samples, config.seed), embodiment, cache_embodiment,
                              plan=config.plan)
    robot_repeats = None
    if config.event_repeat > 1 and robot_train is not None and len(robot_train):
        robot_repeats = event_repeats(robot_train.records, config.event_repeat)
        events = int((robot_repeats > 1).sum())
        log(f"event steps (gripper closes/opens, terminate): {events} of {len(robot_train)} robot samples "
            f"({events / len(robot_train):.1%}), drawn {config.event_repeat} times per pass")
    width = int(model.get_output_embeddings().weight.shape[0])
    free_mask = free_text_mask(processor.tokenizer, width)
    has_eval = len(eval_set) > 0
    arguments = dict(
        output_dir=str(out), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        max_steps=config.max_steps, learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps, eval_strategy="steps" if has_eval and config.eval_steps else "no",
        eval_steps=config.eval_steps or None, save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500, save_total_limit=config.save_total_limit, seed=config.seed,
        data_seed=config.seed, dataloader_num_workers=config.num_workers, remove_unused_columns=False,
        report_to="none", bf16=config.bf16, use_cpu=config.use_cpu,
        dataloader_pin_memory=torch.cuda.is_available() and not config.use_cpu)
    arguments.update(config.extra)  # --training-args: anything else TrainingArguments takes, or an override
    try:
        args = TrainingArguments(**arguments)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training arguments: {str(exc).splitlines()[0]}") from None
    trainer = _make_trainer_class()(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set if has_eval else None,
        data_collator=collator, processing_class=processor,
        rt2={"robot_fraction": config.robot_fraction, "scheme": scheme, "embodiment": embodiment,
             "free_mask": free_mask, "metadata": metadata, "grounding_weight": config.grounding_weight,
             "grounding_layer": grounding_layer, "robot_repeats": robot_repeats})
    log(f"training {model.config.model_type} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
        f"parameters) for {config.max_steps} steps of {config.batch_size * config.grad_accum} samples, "
        f"robot fraction {config.robot_fraction}")
    result = trainer.train()
    final = trainer.evaluate() if has_eval else {}
    trainer.save_model(str(out))  # processor + model + rt2_ros.json (Rt2Trainer._save)
    summary = {
        "config": {k: v for k, v in asdict(config).items()}, "data": data["summary"],
        "scheme": {"name": scheme.name, "reinitialised": reinit, "ids": [min(scheme.action_ids()),
                                                                         max(scheme.action_ids())]},
        "embodiment": embodiment.to_dict(), "training_data": _training_data(robot_train),
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": _directory_bytes(out), "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        "total_seconds": round(time.perf_counter() - started, 1), "final_metrics": final,
        "log_history": trainer.state.log_history}
    if trainer.args.should_save:
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    return summary


def _training_data(robot: SampleSet | None) -> dict[str, list[str]] | None:
    """The objects (when every episode recorded them) and instructions of the training episodes."""
    if robot is None or not len(robot):
        return None
    data = {"instructions": sorted({r["instruction"] for r in robot.records})}
    if all(r.get("objects") for r in robot.records):
        data["objects"] = sorted({name for r in robot.records for name in r["objects"]})
    return data


def _loadable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` checked by the policy loader's own parser before training starts."""
    import tempfile

    from rt2_ros.errors import PolicyError
    from rt2_ros.policy.profiles import write_checkpoint_metadata

    with tempfile.TemporaryDirectory() as scratch:
        try:
            write_checkpoint_metadata(scratch, metadata)
        except PolicyError as exc:
            raise ConfigError(f"rt2_ros.json: {exc}") from None
    return metadata


def _clipping(samples: SampleSet, embodiment: Embodiment) -> dict[str, float]:
    """Share of samples at the lowest or highest bin of each continuous dim, where it exceeds 5%.

    Dims with only two values in the data (an open/closed gripper) sit at their bounds by design.
    """
    tokens = np.array([r["tokens"] for r in samples.records])
    shares = {}
    for position, dim in enumerate(embodiment.dims):
        if dim.kind != "continuous" or len(np.unique(tokens[:, position])) <= 2:
            continue
        share = float(np.mean((tokens[:, position] == 0) | (tokens[:, position] == embodiment.bins - 1)))
        if share > 0.05:
            shares[dim.name] = share
    return shares
