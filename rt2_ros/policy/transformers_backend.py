"""The ``transformers`` backend: any Hugging Face VLM checkpoint as an RT-2 policy.

Loading: ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a local
checkpoint directory (``trust_remote_code`` only when asked), with a dtype
(``auto``: bfloat16 where the CPU/GPU supports it, else float32), a device,
optional 8/4-bit weights on CUDA (bitsandbytes) and an attention
implementation.  Which prompt, token scheme and embodiment the checkpoint
speaks is decided by :mod:`rt2_ros.policy.profiles` (``rt2_ros.json`` next to
the weights, else the profile's defaults).

Decoding is written for latency rather than through ``generate()``:

* one prefill forward over image + prompt, then exactly N-1 single-token
  forwards reusing the KV cache (N = the embodiment's number of tokens) -
  no stopping criteria, logits processors or per-step bookkeeping;
* the decoder body runs without its output projection; the last hidden
  state is multiplied only by the rows of the legal action ids
  (:class:`~rt2_ros.policy.constrained_decoding.ActionHead`), which is both
  the constraint and a 1000x smaller projection than the full vocabulary;
* ``torch.inference_mode`` throughout; the model is warmed up at load.

The text rule shared with the trainer (one token per action dim, no
separator tokens; ``Plan:`` ... `` Action:`` around a chain-of-thought plan)
is documented in :mod:`rt2_ros.policy.constrained_decoding`; build training
targets with :func:`~rt2_ros.policy.constrained_decoding.answer_token_ids`
after the ids of :meth:`TransformersPolicy.prompt_text`.

Three entry points share the weights: :meth:`TransformersPolicy.act` (one
robot action), :meth:`TransformersPolicy.act_batch` (several robots, one
forward pass per decoding step, left padding) and
:meth:`TransformersPolicy.answer` (free-text VQA, as RT-2 keeps its VLM
behaviour).
"""
from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Sequence

import numpy as np
import torch

from rt2_ros.action_language import ActionLanguageError, format_action_text
from rt2_ros.action_language.plans import (HAND_WORDS, MAX_NAME_WORDS, POINT_BINS, derived_numbers, hand_numbers,
                                            plan_layout)
from rt2_ros.action_language.prompts import ACTION_MARKER
from rt2_ros.policy.base import HandState, Policy, PolicyError, PolicyOutput, check_image, check_instruction
from rt2_ros.policy.config import PLAN_DECODINGS, PolicyConfig
from rt2_ros.policy.constrained_decoding import (ACTION_PREFIX, DECODINGS, PLAN_PREFIX, ActionHead,
                                                 allowed_mask, encode_text, free_text_mask, median_index)
from rt2_ros.policy.profiles import ActionSetup, resolve_action_setup

__all__ = ["TransformersPolicy", "Answer", "resolve_device", "resolve_dtype", "SELECTIONS"]

#: How the next action token is chosen: ``rows`` (allowed rows of the output
#: projection only; the default), ``mask`` (full logits + mask; used when the
#: output projection is quantized, and as the reference in tests) and
#: ``none`` (unconstrained argmax; only for measuring the constraint's cost).
SELECTIONS = ("rows", "mask", "none")

# The model may write the marker with tokenizer-dependent spacing ("Action :").
# Case-insensitive: a lower-casing tokenizer decodes the marker as "action :".
_ACTION_MARKER_PATTERN = re.compile(re.escape(ACTION_MARKER[:-1]) + r"\s*:", re.IGNORECASE)
_MAX_QUESTION_CHARS = 2000
_LOG = logging.getLogger(__name__)

# What a plan row's script (TransformersPolicy._free_plan / _layout_plan) asks for at a step:
# ("choose", mask) - the model picks a token among the mask's ids, which is sent back in; then
# ("feed", id) - the token fed this step (the choice, or one the decoder writes itself).
_Instruction = tuple[str, Any]
_PlanScript = Generator[_Instruction, "int | None", str]


@dataclass(frozen=True)
class _PlanVocabulary:
    """The token ids layout decoding needs: each fixed plan word's, each integer's, and the masks
    of what the model may choose for a name word or a field's number."""

    word_ids: dict[str, int]
    number_ids: list[int]              # number_ids[v]: the token of the integer v
    value_of: dict[int, int]           # token id -> integer
    number_masks: dict[int, torch.Tensor]   # values -> mask of the integers 0..values-1
    name_mask: torch.Tensor            # words an object's name may use
    name_or_number_mask: torch.Tensor  # a further name word, or the object's first number


def _plan_vocabulary(tokenizer: Any, kind: str, width: int, free_mask: torch.Tensor,
                     reserved: Sequence[int]) -> tuple[_PlanVocabulary | None, str]:
    """The vocabulary for layout decoding of plan ``kind``, or None and why it cannot be had.

    Layout decoding writes a field's word and the model's numbers as single
    tokens, so the tokenizer must have one token per plan word and per integer
    0..255 (rt2-ros train --from-scratch's word tokenizer does; subword
    tokenizers that split "173" into digits do not).
    """
    if not kind:
        return None, 'a checkpoint that names its plan kind (rt2_ros.json "plan")'
    layout = plan_layout(kind)

    def single(text: str) -> int | None:
        ids = encode_text(tokenizer, " " + text)
        return ids[0] if len(ids) == 1 and 0 <= ids[0] < width else None

    words = {f.name for f in layout if f.name != "object"}
    word_ids = {word: single(word) for word in sorted(words)}
    missing = [word for word, token in word_ids.items() if token is None]
    if missing:
        return None, f"one token per plan word; this tokenizer splits {missing[0]!r}"
    number_ids = [single(str(v)) for v in range(POINT_BINS)]
    split = next((v for v, token in enumerate(number_ids) if token is None), None)
    if split is not None or len(set(number_ids)) != POINT_BINS:
        return None, f"one token per integer 0..{POINT_BINS - 1}; this tokenizer splits {split!r}"
    device = free_mask.device
    masks: dict[int, torch.Tensor] = {}
    for values in sorted({f.values for f in layout}):
        mask = torch.zeros(width, dtype=torch.bool, device=device)
        mask[torch.as_tensor(number_ids[:values], device=device)] = True
        masks[values] = mask
    # A name is made of words: tokens of letters only (subword markers aside), none of the layout's.
    name = torch.zeros(width, dtype=torch.bool, device=device)
    lettered = [i for i, token in enumerate(tokenizer.convert_ids_to_tokens(range(min(len(tokenizer), width))))
                if isinstance(token, str) and token.lstrip("\u0120\u2581").isalpha()]
    if lettered:
        name[torch.as_tensor(lettered, device=device)] = True
    name &= free_mask
    blocked = [*number_ids, *word_ids.values(), *reserved]
    if tokenizer.eos_token_id is not None:
        blocked.append(tokenizer.eos_token_id)
    name[torch.as_tensor([i for i in blocked if 0 <= i < width], device=device)] = False
    if any(f.name == "object" for f in layout) and not bool(name.any()):
        return None, "word tokens (letters only) to name the object with"
    return _PlanVocabulary(word_ids, number_ids, {token: v for v, token in enumerate(number_ids)}, masks,
                           name, name | masks[POINT_BINS]), ""


@dataclass
class Answer:
    """A free-text answer and its timings (ms: ``preprocess``, ``prefill``, ``decode``, ``total``)."""

    text: str
    timings: dict[str, float]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda``/``cuda:N`` must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise PolicyError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise PolicyError(f"device: {device!r} requested but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise PolicyError(f"device: {device!r} requested but only {torch.cuda.device_count()} "
                              f"CUDA device(s) exist")
    elif resolved.type != "cpu":
        raise PolicyError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 where the device computes it natively, else float32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise PolicyError(f"dtype: expected auto, {', '.join(choices)}, got {dtype!r}")
    return choices[dtype]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sync(device: torch.device) -> None:
    # Stage timings on a GPU are only real once its queue has drained.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def _cache_keyword() -> str:
    """The keyword transformers' generation input preparation takes the KV cache by: ``cache``
    since transformers 5.2x (``past_key_values`` is deprecated there, removed in 5.40), before
    that ``past_key_values``."""
    from transformers.generation.utils import GenerationMixin

    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _to_pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(image)


class TransformersPolicy(Policy):
    """An RT-2 policy running a Hugging Face VLM in-process.

    Build with :meth:`from_pretrained` / :meth:`from_config`, or wrap an
    already loaded ``(model, processor)`` with the constructor (the trainer
    and the benchmarks do).  The processor's tokenizer is switched to left
    padding (batched decoding needs the prompts to end together).

    Attributes others rely on: ``scheme``, ``embodiment``, ``tokenizer``,
    ``processor``, ``model``, ``setup`` (:class:`ActionSetup`),
    ``chain_of_thought``, ``max_plan_tokens``, ``decoding``.

    ``decoding``: ``greedy`` (the argmax of each position's allowed logits) or
    ``median`` (continuous dims take the median bin of their distribution; see
    :mod:`rt2_ros.policy.constrained_decoding`).

    ``plan_decoding`` (:data:`~rt2_ros.policy.config.PLAN_DECODINGS`): with
    ``layout`` the decoder writes the plan kind's words itself and the model
    only the object's name and the numbers, each among its field's values
    (a small model's free plan sometimes drops a word, and the action then
    reads the wrong numbers: docs/training.md section 6, item 16); ``free``
    lets the model write the whole plan; ``auto`` (the default) is layout
    where the checkpoint names its plan kind and its tokenizer allows it.
    ``plan_decoding`` afterwards says which one runs.
    """

    name = "transformers"

    def __init__(self, model: Any, processor: Any, setup: ActionSetup, *,
                 chain_of_thought: bool = False, max_plan_tokens: int = 32,
                 selection: str = "rows", decoding: str = "greedy", plan_decoding: str = "auto",
                 warmup: bool = True) -> None:
        if selection not in SELECTIONS:
            raise PolicyError(f"selection: expected one of {', '.join(SELECTIONS)}, got {selection!r}")
        if decoding not in DECODINGS:
            raise PolicyError(f"decoding: expected one of {', '.join(DECODINGS)}, got {decoding!r}")
        if max_plan_tokens < 1:
            raise PolicyError(f"max_plan_tokens: expected an integer >= 1, got {max_plan_tokens!r}")
        if plan_decoding not in PLAN_DECODINGS:
            raise PolicyError(f"plan_decoding: expected one of {', '.join(PLAN_DECODINGS)}, "
                              f"got {plan_decoding!r}")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.setup = setup
        self.scheme = setup.scheme
        self.embodiment = setup.embodiment
        self.chain_of_thought = bool(chain_of_thought)
        self.max_plan_tokens = int(max_plan_tokens)
        self.selection = selection
        self.decoding = decoding
        self.image_token = getattr(processor, "image_token", None)
        if not self.image_token:
            raise PolicyError(f"processor {type(processor).__name__} has no image token; rt2_ros needs "
                              f"a processor that places the image with a token in the text")
        self._lock = threading.Lock()
        first = next(model.parameters())
        self.device = first.device
        # The compute dtype (a quantized model's first parameter may be int8).
        self.dtype = getattr(model, "dtype", first.dtype)
        # The decoder body without the output projection (``model.model`` for
        # transformers' *ForConditionalGeneration classes).
        self._body = getattr(model, model.base_model_prefix)
        self._lm_head = model.get_output_embeddings()
        if self._lm_head is None:
            raise PolicyError(f"{type(model).__name__} has no output projection (lm_head)")
        self.logits_width = int(self._lm_head.weight.shape[0])
        self._allowed = self.scheme.allowed_ids(self.embodiment)
        # Median decoding applies to the ordered (continuous) dims only.
        self._median = [decoding == "median" and self.embodiment.dims[p].kind == "continuous"
                        for p in range(self.embodiment.num_tokens)]
        self._allowed_tensors = [torch.as_tensor(ids, dtype=torch.long, device=self.device)
                                 for ids in self._allowed]
        try:
            self._allowed_mask = allowed_mask(self._allowed, self.logits_width, self.device)
        except ValueError as exc:
            raise PolicyError(f"the {self.scheme.name} scheme does not fit the model: {exc}") from None
        if selection == "rows" and not self._lm_head.weight.is_floating_point():
            selection = self.selection = "mask"  # a quantized projection cannot be row-indexed
        self._action_head = (ActionHead(self._lm_head.weight, getattr(self._lm_head, "bias", None),
                                        self.scheme, self._allowed) if selection == "rows" else None)
        self._free_mask = free_text_mask(self.tokenizer, self.logits_width, self.device)
        self._eos_id = self.tokenizer.eos_token_id
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else (self._eos_id if self._eos_id is not None else 0)
        self._plan_prefix_ids = encode_text(self.tokenizer, PLAN_PREFIX)
        self._action_prefix_ids = encode_text(self.tokenizer, ACTION_PREFIX)
        # The checkpoint's plan kind (rt2_ros.json "plan"): its derived fields are computed here
        # from the numbers the model wrote before them, not sampled (action_language.plans).
        self.plan_kind = setup.plan if self.chain_of_thought else ""
        self._derives = bool(self.plan_kind) and any(f.derived for f in plan_layout(self.plan_kind))
        # The hand-state words the plan writes: given a HandState, the decoder writes them from it.
        self._hand_words = ({f.name for f in plan_layout(self.plan_kind)} & set(HAND_WORDS)
                            if self.plan_kind else set())
        self._layout: _PlanVocabulary | None = None
        self.plan_decoding = "free"
        if self.chain_of_thought and plan_decoding != "free":
            self._layout, needs = _plan_vocabulary(self.tokenizer, self.plan_kind, self.logits_width,
                                                   self._free_mask,
                                                   [*self._plan_prefix_ids, *self._action_prefix_ids])
            if self._layout is not None:
                self.plan_decoding = "layout"
            elif plan_decoding == "layout":
                raise PolicyError(f"plan_decoding: 'layout' needs {needs}; use plan_decoding 'free'")
            else:
                _LOG.info("plan_decoding auto: the model writes its plan freely (layout decoding needs %s)",
                          needs)
        if warmup:
            self.act(np.zeros((64, 64, 3), dtype=np.uint8), "warm up")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, *, profile: str = "rt2", embodiment: str = "",
                        device: str = "auto", dtype: str = "auto", quantization: str = "none",
                        attn_implementation: str = "", trust_remote_code: bool = False,
                        unnorm_key: str = "", chain_of_thought: bool = False, max_plan_tokens: int = 32,
                        decoding: str = "greedy", plan_decoding: str = "auto",
                        warmup: bool = True) -> "TransformersPolicy":
        """Load a checkpoint directory; every failure is a PolicyError naming the path."""
        path = Path(checkpoint_dir).expanduser()
        where = f"checkpoint {str(path)!r}"
        if not path.is_dir():
            raise PolicyError(f"{where}: not a directory")
        if not (path / "config.json").is_file():
            raise PolicyError(f"{where}: no config.json (not a Hugging Face checkpoint directory)")
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if quantization != "none":
            kwargs.update(_quantization_kwargs(quantization, torch_device, torch_dtype))
        from transformers import AutoModelForImageTextToText, AutoProcessor

        # Third-party loaders raise many exception types for a bad directory;
        # all of them mean "this checkpoint cannot be used", said in one line.
        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except Exception as exc:  # noqa: BLE001
            raise PolicyError(f"{where}: cannot load the processor: {_first_line(exc)}") from None
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise PolicyError(f"{where}: the processor {type(processor).__name__} is not a "
                              f"vision-language processor (no tokenizer or image processor)")
        setup = resolve_action_setup(processor.tokenizer, checkpoint_dir=path, profile=profile,
                                     embodiment=embodiment, unnorm_key=unnorm_key)
        try:
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise PolicyError(f"{where}: cannot load the model: {_first_line(exc)}") from None
        if quantization == "none":
            model.to(torch_device)
        width = model.get_output_embeddings().weight.shape[0]
        if setup.scheme.max_id >= width:
            raise PolicyError(f"{where}: the {setup.scheme.name} scheme uses token id {setup.scheme.max_id}, "
                              f"but the model only has {width} output logits")
        # A checkpoint trained to plan first (rt2_ros.json) is only right when asked to plan.
        return cls(model, processor, setup, chain_of_thought=chain_of_thought or setup.chain_of_thought,
                   max_plan_tokens=max_plan_tokens, decoding=decoding, plan_decoding=plan_decoding,
                   warmup=warmup)

    @classmethod
    def from_config(cls, cfg: PolicyConfig) -> "TransformersPolicy":
        """Build from a validated :class:`PolicyConfig` (``cfg.model`` is the checkpoint directory)."""
        if not cfg.model:
            raise PolicyError("transformers backend: model: expected a checkpoint directory, got ''")
        return cls.from_pretrained(cfg.model, profile=cfg.profile, embodiment=cfg.embodiment,
                                   device=cfg.device, dtype=cfg.dtype, quantization=cfg.quantization,
                                   attn_implementation=cfg.attn_implementation,
                                   trust_remote_code=cfg.trust_remote_code, unnorm_key=cfg.unnorm_key,
                                   chain_of_thought=cfg.chain_of_thought,
                                   max_plan_tokens=cfg.max_plan_tokens, decoding=cfg.decoding,
                                   plan_decoding=cfg.plan_decoding)

    # ----------------------------------------------------------- what clients need

    @property
    def profile(self) -> str:
        """The profile name (``rt2`` | ``openvla``)."""
        return self.setup.profile.name

    def robot_prompt(self, instruction: str) -> str:
        """The profile's prompt for ``instruction`` (no image token, no chat template)."""
        return self.setup.prompt(check_instruction(instruction))

    def prompt_text(self, instruction: str) -> str:
        """The exact text given to the processor with the image (image token + robot prompt).

        The processor expands the image token and adds what its model needs
        (PaliGemma: ``<bos>`` after the image and a trailing newline).  With
        chain of thought, ``Plan:`` is then forced as the answer's first tokens.
        """
        return self.image_token + self.robot_prompt(instruction)

    def allowed_token_ids(self) -> list[list[int]]:
        """The legal vocabulary ids at each action position (what a remote server constrains to)."""
        return [list(ids) for ids in self._allowed]

    # ------------------------------------------------------------------ acting

    def act(self, image: np.ndarray, instruction: str, hand: HandState | None = None) -> PolicyOutput:
        """Return the constrained action for one image and instruction (``hand``: see act_batch)."""
        return self.act_batch([image], [instruction], None if hand is None else [hand])[0]

    def act_batch(self, images: Sequence[np.ndarray], instructions: Sequence[str],
                  hands: Sequence[HandState | None] | None = None) -> list[PolicyOutput]:
        """Actions for several (image, instruction) pairs, one forward pass per decoding step.

        Prompts are left-padded so they end together.  Each output's timings
        are those of the whole batch.  ``hands`` (one per row, or None): the
        robot's hand state at each image; a checkpoint whose plan writes the
        hand's height and fingers then gets those numbers from it, as it
        does a derived field's, instead of reading them off the image
        (docs/training.md section 6, item 15).
        """
        if len(images) != len(instructions):
            raise PolicyError(f"act_batch: expected as many instructions as images, got "
                              f"{len(images)} images and {len(instructions)} instructions")
        if hands is not None and len(hands) != len(images):
            raise PolicyError(f"act_batch: expected one hand state per image or none, got {len(hands)} "
                              f"for {len(images)} images")
        if not images:
            return []
        self._check_open()
        for image in images:
            check_image(image)
        texts = [self.prompt_text(instruction) for instruction in instructions]
        forced = [None if hand is None or not self._hand_words or not self.chain_of_thought
                  else {word: number for word, number in hand_numbers(hand.height_m, hand.gripper_command).items()
                        if word in self._hand_words}
                  for hand in (hands or [None] * len(images))]
        with self._lock:
            bins, plans, timings = self._run(images, texts, hands=forced)
        outputs = []
        for row_bins, plan in zip(bins, plans):
            try:
                action = self.embodiment.decode(row_bins)
            except ActionLanguageError as exc:  # cannot happen under the constraint; never pass it on
                raise PolicyError(f"decoded an illegal action: {exc}") from None
            outputs.append(PolicyOutput(tokens=row_bins, action=action, plan=plan,
                                        text=format_action_text(row_bins, plan or None),
                                        timings=dict(timings)))
        return outputs

    def generate_action_ids(self, image: np.ndarray, instruction: str,
                            selection: str | None = None) -> tuple[list[int], dict[str, float]]:
        """Raw generated ids of one action (no chain of thought) with ``selection`` overridden.

        For benchmarks: ``selection="none"`` measures the same loop without
        the constraint (its ids are usually not an action).
        """
        self._check_open()
        check_image(image)
        chosen = selection or self.selection
        if chosen not in SELECTIONS:
            raise PolicyError(f"selection: expected one of {', '.join(SELECTIONS)}, got {chosen!r}")
        with self._lock:
            ids, _, timings = self._run([image], [self.prompt_text(instruction)], selection=chosen,
                                        raw_ids=True, chain_of_thought=False)
        return ids[0], timings

    # ------------------------------------------------------------------- VQA

    def answer(self, image: np.ndarray, question: str, max_new_tokens: int = 32) -> str:
        """Free-text answer to ``question`` about ``image`` (no action constraint)."""
        return self.ask(image, question, max_new_tokens).text

    def ask(self, image: np.ndarray, question: str, max_new_tokens: int = 32) -> Answer:
        """:meth:`answer` with timings."""
        self._check_open()
        check_image(image)
        if not isinstance(question, str) or not question.strip():
            raise PolicyError(f"question: expected a non-empty question, got {question!r}")
        if len(question) > _MAX_QUESTION_CHARS:
            raise PolicyError(f"question: expected at most {_MAX_QUESTION_CHARS} characters, "
                              f"got {len(question)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise PolicyError(f"max_new_tokens: expected an integer >= 1, got {max_new_tokens!r}")
        with self._lock:
            return self._answer(image, self.image_token + question.strip(), max_new_tokens)

    # -------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self.model is None:
            raise PolicyError("the transformers policy was closed")

    def _encode(self, images: Sequence[np.ndarray], texts: Sequence[str],
                answer_prefix: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """Processor outputs on the device; ``answer_prefix`` ids are appended as forced answer tokens."""
        try:
            encoded = self.processor(images=[_to_pil(image) for image in images], text=list(texts),
                                     return_tensors="pt", padding=True)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise PolicyError(f"the processor rejected the input: {_first_line(exc)}") from None
        inputs = {key: value for key, value in encoded.items() if key != "labels"}
        if answer_prefix:
            rows = inputs["input_ids"].shape[0]
            extra = torch.as_tensor(list(answer_prefix), dtype=inputs["input_ids"].dtype).expand(rows, -1)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
            inputs["attention_mask"] = torch.cat(
                [inputs["attention_mask"], torch.ones_like(extra, dtype=inputs["attention_mask"].dtype)],
                dim=1)
            if "token_type_ids" in inputs:  # answer tokens are PaliGemma's causal "suffix" (type 1)
                inputs["token_type_ids"] = torch.cat(
                    [inputs["token_type_ids"], torch.ones_like(extra, dtype=inputs["token_type_ids"].dtype)],
                    dim=1)
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
                inputs[key] = value
        return inputs

    def _forward(self, inputs: dict[str, Any], cache: Any, first: bool) -> tuple[torch.Tensor, Any]:
        """Run the decoder body; return the last position's hidden state ``(batch, H)`` and the cache."""
        # prepare_inputs_for_generation applies the model's own input quirks
        # (PaliGemma's 1-based positions, dropping pixels after prefill).
        model_inputs = self.model.prepare_inputs_for_generation(
            **{_cache_keyword(): cache}, use_cache=True, is_first_iteration=first, **inputs)
        try:
            out = self._body(**model_inputs)
        except RuntimeError as exc:
            raise PolicyError(f"model forward failed: {_first_line(exc)}") from None
        new_cache = getattr(out, "cache", None)
        return out.last_hidden_state[:, -1, :], out.past_key_values if new_cache is None else new_cache

    def _prefill(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any, torch.Tensor,
                                                                 torch.Tensor]:
        mask = inputs["attention_mask"]
        # Left padding: positions count real tokens only (as generate() does).
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden, cache = self._forward({**inputs, "position_ids": positions}, None, first=True)
        return hidden, cache, mask, positions[:, -1:]

    def _step(self, ids: torch.Tensor, cache: Any, mask: torch.Tensor, last_position: torch.Tensor,
              attend: torch.Tensor | None = None) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        new = torch.ones_like(mask[:, :1]) if attend is None else attend.to(mask.dtype)[:, None]
        mask = torch.cat([mask, new], dim=1)
        position = last_position + 1
        hidden, cache = self._forward({"input_ids": ids[:, None], "attention_mask": mask,
                                       "position_ids": position}, cache, first=False)
        return hidden, cache, mask, position

    def _full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._lm_head(hidden).float()

    def _select(self, hidden: torch.Tensor, position: int, selection: str) -> torch.Tensor:
        """Next action ids ``(batch,)`` at ``position``."""
        median = self._median[position]
        if selection == "rows":
            return self._action_head.select(hidden, position, median=median)[0]
        logits = self._full_logits(hidden)
        if median:  # over the allowed ids, in bin order
            allowed = self._allowed_tensors[position]
            return allowed[median_index(logits[:, allowed])]
        if selection == "mask":
            logits = logits.masked_fill(~self._allowed_mask[position], float("-inf"))
        return logits.argmax(dim=-1)

    def _plan_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits a plan token is chosen from (a seam for tests that script the model's choices)."""
        return self._full_logits(hidden)

    def _free_token(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._full_logits(hidden).masked_fill(~self._free_mask, float("-inf")).argmax(dim=-1)

    @torch.inference_mode()
    def _run(self, images: Sequence[np.ndarray], texts: Sequence[str], *, selection: str | None = None,
             raw_ids: bool = False, chain_of_thought: bool | None = None,
             hands: Sequence[dict[str, int] | None] | None = None
             ) -> tuple[list[list[int]], list[str], dict[str, float]]:
        """Decode one action per row; returns (bins or raw ids per row, plans, timings)."""
        selection = selection or self.selection
        cot = self.chain_of_thought if chain_of_thought is None else chain_of_thought
        start = time.perf_counter()
        inputs = self._encode(images, texts, self._plan_prefix_ids if cot else ())
        _sync(self.device)
        encoded = time.perf_counter()
        hidden, cache, mask, position = self._prefill(inputs)
        if cot:
            ids, plans, prefilled = self._decode_with_plan(hidden, cache, mask, position, selection,
                                                           hands or [None] * len(texts))
        else:
            plans = [""] * len(texts)
            steps = [self._select(hidden, 0, selection)]
            _sync(self.device)
            prefilled = time.perf_counter()
            for p in range(1, self.embodiment.num_tokens):
                hidden, cache, mask, position = self._step(steps[-1], cache, mask, position)
                steps.append(self._select(hidden, p, selection))
            ids = torch.stack(steps, dim=1).tolist()
        done = time.perf_counter()
        timings = {"preprocess": (encoded - start) * 1e3, "prefill": (prefilled - encoded) * 1e3,
                   "decode": (done - prefilled) * 1e3, "total": (done - start) * 1e3}
        if raw_ids:
            return ids, plans, timings
        try:
            bins = [self.scheme.bins_for_ids(row) for row in ids]
        except ActionLanguageError as exc:
            raise PolicyError(f"decoded a non-action token: {exc}") from None
        return bins, plans, timings

    def _decode_with_plan(self, hidden: torch.Tensor, cache: Any, mask: torch.Tensor,
                          position: torch.Tensor, selection: str, hands: Sequence[dict[str, int] | None]
                          ) -> tuple[list[list[int]], list[str], float]:
        """Chain of thought for a batch: the plan, `` Action:``, then constrained tokens.

        Each row runs its own plan script (:meth:`_free_plan` or
        :meth:`_layout_plan`, by ``plan_decoding``) and then the action, yet
        every step is one forward pass feeding one token per row (finished
        rows feed padding that nothing attends to).  ``hands[r]``: the
        robot's hand numbers by hand word, which the decoder writes after
        ``height`` / ``closed`` instead of the model.
        """
        rows = hidden.shape[0]
        num_tokens = self.embodiment.num_tokens
        scripts: list[_PlanScript] = [self._layout_plan(hand) if self._layout is not None
                                      else self._free_plan(hand) for hand in hands]
        phase = ["plan"] * rows
        plans = [""] * rows
        action_ids: list[list[int]] = [[] for _ in range(rows)]
        prefilled = None
        while True:
            feed = [self._pad_id] * rows
            asks: dict[int, torch.Tensor] = {}
            for r in range(rows):
                if phase[r] != "plan":
                    continue
                try:
                    kind, value = scripts[r].send(None)
                except StopIteration as stop:  # the marker is in: the action starts at this position
                    plans[r], phase[r] = " ".join(str(stop.value).split()), "action"
                    continue
                if kind == "choose":
                    asks[r] = value
                else:
                    feed[r] = value
            if asks:
                chosen = list(asks)
                logits = self._plan_logits(hidden[chosen]).masked_fill(~torch.stack(list(asks.values())),
                                                                      float("-inf"))
                for r, token in zip(chosen, logits.argmax(dim=-1).tolist()):
                    kind, value = scripts[r].send(token)
                    feed[r] = value   # ("feed", id): the choice, or the marker after an end-of-sequence
            action_rows = [r for r in range(rows) if phase[r] == "action"]
            for p in sorted({len(action_ids[r]) for r in action_rows}):
                group = [r for r in action_rows if len(action_ids[r]) == p]
                for r, token in zip(group, self._select(hidden[group], p, selection).tolist()):
                    action_ids[r].append(token)
                    if len(action_ids[r]) == num_tokens:
                        phase[r] = "done"
                    else:
                        feed[r] = token
            if prefilled is None:
                _sync(self.device)
                prefilled = time.perf_counter()
            if all(p == "done" for p in phase):
                break
            attend = torch.as_tensor([p != "done" for p in phase], device=self.device)
            hidden, cache, mask, position = self._step(
                torch.as_tensor(feed, device=self.device), cache, mask, position, attend)
        return action_ids, plans, prefilled

    def _free_plan(self, hand: dict[str, int] | None) -> _PlanScript:
        """The model writes the plan: free text until it writes ``Action:`` (or, at end-of-sequence or
        after ``max_plan_tokens`` tokens, the decoder writes `` Action:``).  A row that has just
        written a derived field's word is fed the numbers computed from its plan so far
        (:func:`~rt2_ros.action_language.plans.derived_numbers`), likewise ``height`` / ``closed``
        with ``hand``; then it writes on freely.  Returns the plan's text."""
        ids: list[int] = []
        text = ""
        while True:
            token = yield ("choose", self._free_mask)
            if token == self._eos_id:  # the model ended its plan without the marker
                break
            yield ("feed", token)
            ids.append(token)
            decoded = self.tokenizer.decode(ids, skip_special_tokens=True)
            found = _ACTION_MARKER_PATTERN.search(decoded)
            text = decoded[:found.start()] if found else decoded
            if found:
                return text
            if len(ids) >= self.max_plan_tokens:
                break
            derived = derived_numbers(self.plan_kind, text) if self._derives else None
            if derived is None and hand:
                last = text.split()[-1:]
                if last and last[0] in hand:
                    derived = [hand[last[0]]]
            if derived is not None:
                for forced in encode_text(self.tokenizer, " " + " ".join(str(n) for n in derived)):
                    yield ("feed", forced)
                    ids.append(forced)
                # The plan so far includes the forced numbers (the model may end it next).
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for marker in self._action_prefix_ids:
            yield ("feed", marker)
        return text

    def _layout_plan(self, hand: dict[str, int] | None) -> _PlanScript:
        """The plan kind's layout, field by field: the decoder writes each word (the model names the
        object, 1..MAX_NAME_WORDS words), the model each number among its field's values, except
        a derived field's (computed from the numbers before it) and, with ``hand``, the hand's;
        then `` Action:``.  Returns the plan's text."""
        vocabulary = self._layout
        assert vocabulary is not None
        words: list[str] = []
        for field in plan_layout(self.plan_kind):
            numbers: list[int] = []
            if field.name == "object":
                allowed, named = vocabulary.name_mask, 0
                while not numbers:
                    token = yield ("choose", allowed)
                    yield ("feed", token)
                    if token in vocabulary.value_of:   # the name is done: this is its first number
                        numbers.append(vocabulary.value_of[token])
                    else:
                        words.append(self.tokenizer.decode([token], skip_special_tokens=True).strip())
                        named += 1
                        allowed = (vocabulary.name_or_number_mask if named < MAX_NAME_WORDS
                                   else vocabulary.number_masks[POINT_BINS])
            else:
                yield ("feed", vocabulary.word_ids[field.name])
                words.append(field.name)
            forced = (derived_numbers(self.plan_kind, words) if field.derived
                      else [hand[field.name]] if hand and field.name in hand else None)
            while len(numbers) < field.numbers:
                if forced is not None:
                    value = forced[len(numbers)]
                    yield ("feed", vocabulary.number_ids[value])
                else:
                    token = yield ("choose", vocabulary.number_masks[field.values])
                    yield ("feed", token)
                    value = vocabulary.value_of[token]
                numbers.append(value)
            words.extend(str(n) for n in numbers)
        for marker in self._action_prefix_ids:
            yield ("feed", marker)
        return " ".join(words)

    @torch.inference_mode()
    def _answer(self, image: np.ndarray, text: str, max_new_tokens: int) -> Answer:
        start = time.perf_counter()
        inputs = self._encode([image], [text])
        _sync(self.device)
        encoded = time.perf_counter()
        hidden, cache, mask, position = self._prefill(inputs)
        tokens: list[int] = []
        token = int(self._free_token(hidden)[0])
        _sync(self.device)
        prefilled = time.perf_counter()
        while token != self._eos_id:
            tokens.append(token)
            if len(tokens) >= max_new_tokens:
                break
            hidden, cache, mask, position = self._step(
                torch.as_tensor([token], device=self.device), cache, mask, position)
            token = int(self._free_token(hidden)[0])
        done = time.perf_counter()
        answer = " ".join(self.tokenizer.decode(tokens, skip_special_tokens=True).split())
        return Answer(text=answer, timings={"preprocess": (encoded - start) * 1e3,
                                            "prefill": (prefilled - encoded) * 1e3,
                                            "decode": (done - prefilled) * 1e3,
                                            "total": (done - start) * 1e3})

    def close(self) -> None:
        """Drop the model (and free GPU memory)."""
        self._action_head = None
        self.model = None
        self._body = None
        self._lm_head = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _quantization_kwargs(quantization: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    if device.type != "cuda":
        raise PolicyError(f"quantization: {quantization} loading needs a CUDA device, got {device}")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise PolicyError(f"quantization: {quantization} loading needs bitsandbytes "
                          f"(pip install bitsandbytes)") from None
    if quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    elif quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                                    bnb_4bit_quant_type="nf4")
    else:
        raise PolicyError(f"quantization: expected none, 8bit or 4bit, got {quantization!r}")
    return {"quantization_config": config, "device_map": {"": device}}
