"""Random vision-language models built offline, from configs, for tests and benchmarks.

No checkpoint can be downloaded in CI or on a robot's build machine, yet every
backend must be exercised end to end.  This module builds real Hugging Face
VLMs (PaliGemma and LLaVA classes from ``transformers``) with random weights
and small hand-made tokenizers, and saves them so that
``AutoProcessor.from_pretrained(dir)`` and
``AutoModelForImageTextToText.from_pretrained(dir)`` load them with
``HF_HUB_OFFLINE=1``.

Two tokenizers cover the three token schemes:

* ``word``: a word-level tokenizer where ``"0"`` .. ``"255"`` are single tokens,
  plus a small English vocabulary -> the ``integer`` scheme applies;
* ``bpe``: a byte-level BPE trained in-process on a small instruction corpus,
  which splits numbers into several tokens -> ``least_frequent`` / ``last``.

Shapes (:data:`SHAPES`): ``tiny`` (a few hundred kB, loads in well under a
second), ``0.5b`` (PaliGemma-like with Gemma's 257k vocabulary, for the CPU
decoding benchmark), and the real-size ``3b`` (PaliGemma-3B) and ``7b``
(OpenVLA-7B approximated as CLIP-L + Llama-2-7B) for GPU figures.

Builders:

* :func:`build_tiny_paligemma` / :func:`build_tiny_llava` / :func:`build_tiny_openvla`
  save a checkpoint directory and return its path;
* :func:`make_vlm` returns ``(model, processor)`` in memory for any shape.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["VlmShape", "SHAPES", "ENGLISH_WORDS", "make_word_tokenizer", "make_bpe_tokenizer",
           "training_corpus", "make_vlm", "save_vlm", "build_tiny_paligemma", "build_tiny_llava",
           "build_tiny_openvla", "least_frequent_metadata", "openvla_dataset_statistics",
           "parameter_count", "TINY_INIT_STD"]

# Enough words for the prompts (rt2, openvla, chain of thought) and for the
# instructions and VQA questions the tests use; anything else maps to <unk>.
ENGLISH_WORDS: tuple[str, ...] = tuple(dict.fromkeys("""
Q A In Out What what action should the robot take to Plan Action plan
pick up place put move push pull open close lift drop grasp grab release rotate turn slide stack
red green blue yellow white black orange purple small large big
block cube ball can cup bowl plate drawer door lid bottle sponge apple banana cloth towel marker
on in into onto under over near next left right top bottom front back of and a an it is are
table shelf box tray sink counter bin gripper arm camera image picture there this that
how many where which color see do you yes no one two three four five
? : . , ! ' -
""".split()))

#: Weight scale of the tiny models (see :func:`make_vlm`).
TINY_INIT_STD = 0.5

SPECIAL_WORD_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
SPECIAL_BPE_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class VlmShape:
    """Sizes of a random VLM.  ``family`` picks the transformers classes."""

    family: str                 # "paligemma" (SigLIP + Gemma) | "llava" (CLIP + Llama)
    vocab_size: int             # model vocabulary (logits width); the tokenizer may be smaller
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_head_dim: int
    text_intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    image_size: int
    patch_size: int


SHAPES: dict[str, VlmShape] = {
    # A few hundred kB: for unit tests.  Logits width is padded past the
    # tokenizer so the tests exercise "mask sized to the logits width".
    "tiny": VlmShape("paligemma", vocab_size=0, text_hidden=64, text_layers=2, text_heads=2,
                     text_kv_heads=1, text_head_dim=32, text_intermediate=128, vision_hidden=32,
                     vision_layers=1, vision_heads=2, vision_intermediate=64, image_size=32,
                     patch_size=8),
    # ~0.47B parameters, PaliGemma-like: Gemma's 257k vocabulary (263M of the
    # parameters are the embedding / output projection, as in real VLMs),
    # a SigLIP-B/16 tower at 224 px (196 image tokens), an 8-layer Gemma body.
    "0.5b": VlmShape("paligemma", vocab_size=257216, text_hidden=1024, text_layers=8, text_heads=8,
                     text_kv_heads=1, text_head_dim=128, text_intermediate=4096, vision_hidden=768,
                     vision_layers=12, vision_heads=12, vision_intermediate=3072, image_size=224,
                     patch_size=16),
    # PaliGemma-3B (pt-224): SigLIP So400m/14 + Gemma-2B.
    "3b": VlmShape("paligemma", vocab_size=257216, text_hidden=2048, text_layers=18, text_heads=8,
                   text_kv_heads=1, text_head_dim=256, text_intermediate=16384, vision_hidden=1152,
                   vision_layers=27, vision_heads=16, vision_intermediate=4304, image_size=224,
                   patch_size=14),
    # OpenVLA-7B approximated in LLaVA form: a CLIP-L/14 tower at 224 px and
    # Llama-2-7B with OpenVLA's padded 32064-wide vocabulary.
    "7b": VlmShape("llava", vocab_size=32064, text_hidden=4096, text_layers=32, text_heads=32,
                   text_kv_heads=32, text_head_dim=128, text_intermediate=11008, vision_hidden=1024,
                   vision_layers=24, vision_heads=16, vision_intermediate=4096, image_size=224,
                   patch_size=14),
}


def _fast_tokenizer(tokenizer_object: Any, *, bos: str, eos: str, pad: str, unk: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, bos_token=bos, eos_token=eos,
                                  pad_token=pad, unk_token=unk)
    # A special token so the pre-tokenizer never splits it; both processors look it up.
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tok


def make_word_tokenizer(pad_to: int = 0) -> Any:
    """Return a word-level tokenizer with ``"0"``..``"255"`` as single tokens.

    Ids: the special tokens, then the numbers 0..255, then
    :data:`ENGLISH_WORDS`, then ``<unused{i}>`` fillers up to ``pad_to``
    entries (to mimic a large vocabulary).  Decoding joins words with one
    space, so the ids of ``"1 128 91"`` decode back to ``"1 128 91"``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab: dict[str, int] = {}
    for word in (*SPECIAL_WORD_TOKENS, IMAGE_TOKEN, *(str(i) for i in range(256)), *ENGLISH_WORDS):
        vocab.setdefault(word, len(vocab))
    filler = 0
    while len(vocab) < pad_to:
        vocab[f"<unused{filler}>"] = len(vocab)
        filler += 1
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return _fast_tokenizer(backend, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>")


def training_corpus(sentences: int = 400, seed: int = 0) -> list[str]:
    """Return a small deterministic corpus of instructions, questions and answers.

    It contains numbers too, so a BPE trained on it has number pieces but no
    single token for every integer 0..255 (the reason RT-2 needed other schemes).
    """
    rng = random.Random(seed)
    verbs = ["pick up", "move", "push", "open", "close", "put", "lift", "place", "grab", "rotate"]
    colours = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
    objects = ["block", "cube", "ball", "can", "cup", "bowl", "drawer", "apple", "sponge", "bottle"]
    places = ["on the table", "into the bowl", "near the sink", "onto the shelf", "in the drawer"]
    lines = []
    for _ in range(sentences):
        verb, colour, obj, place = (rng.choice(verbs), rng.choice(colours), rng.choice(objects),
                                    rng.choice(places))
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(f"Q: what action should the robot take to {verb} the {colour} {obj}? A:")
        elif kind == 1:
            lines.append(f"In: What action should the robot take to {verb} the {colour} {obj} "
                         f"{place}?\nOut:")
        elif kind == 2:
            lines.append(f"what is {place}? a {colour} {obj}. how many? {rng.randrange(12)}")
        else:
            lines.append(f"Plan: {verb} {colour} {obj} Action: "
                         + " ".join(str(rng.randrange(256)) for _ in range(8)))
    return lines


def make_bpe_tokenizer(vocab_size: int = 1024, seed: int = 0) -> Any:
    """Return a byte-level BPE tokenizer trained in-process on :func:`training_corpus`.

    Numbers split into several pieces, so the ``integer`` scheme is refused
    for it and ``least_frequent`` / ``last`` are the schemes to use.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  special_tokens=[*SPECIAL_BPE_TOKENS, IMAGE_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(training_corpus(seed=seed) + [" ".join(ENGLISH_WORDS)] * 3, trainer)
    return _fast_tokenizer(backend, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def paligemma_parts(shape: VlmShape, tokenizer: Any) -> tuple[Any, Any, Any]:
    from transformers import (GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                              PaliGemmaProcessor, SiglipVisionConfig)
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(size={"height": shape.image_size,
                                                    "width": shape.image_size})
    image_processor.image_seq_length = (shape.image_size // shape.patch_size) ** 2
    # The processor adds PaliGemma's 1152 <locXXXX>/<segXXX> tokens to the tokenizer.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab = max(shape.vocab_size, _round_up(len(processor.tokenizer) + 1, 64))
    vision = SiglipVisionConfig(hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
                                num_hidden_layers=shape.vision_layers,
                                num_attention_heads=shape.vision_heads, image_size=shape.image_size,
                                patch_size=shape.patch_size)
    text = GemmaConfig(vocab_size=vocab, hidden_size=shape.text_hidden,
                       intermediate_size=shape.text_intermediate, num_hidden_layers=shape.text_layers,
                       num_attention_heads=shape.text_heads, num_key_value_heads=shape.text_kv_heads,
                       head_dim=shape.text_head_dim,
                       pad_token_id=processor.tokenizer.pad_token_id,
                       bos_token_id=processor.tokenizer.bos_token_id,
                       eos_token_id=processor.tokenizer.eos_token_id)
    config = PaliGemmaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                             image_token_id=processor.image_token_id,
                             projection_dim=shape.text_hidden)
    return PaliGemmaForConditionalGeneration, config, processor


def llava_parts(shape: VlmShape, tokenizer: Any) -> tuple[Any, Any, Any]:
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=shape.patch_size, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1)
    vocab = max(shape.vocab_size, _round_up(len(tokenizer) + 1, 64))
    vision = CLIPVisionConfig(hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
                              num_hidden_layers=shape.vision_layers,
                              num_attention_heads=shape.vision_heads, image_size=shape.image_size,
                              patch_size=shape.patch_size, projection_dim=shape.text_hidden)
    text = LlamaConfig(vocab_size=vocab, hidden_size=shape.text_hidden,
                       intermediate_size=shape.text_intermediate, num_hidden_layers=shape.text_layers,
                       num_attention_heads=shape.text_heads, num_key_value_heads=shape.text_kv_heads,
                       head_dim=shape.text_head_dim, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_id=processor.image_token_id, vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration, config, processor


def make_vlm(shape: str | VlmShape = "tiny", *, family: str | None = None, tokenizer: str = "word",
             seed: int = 0, dtype: Any = None, device: Any = "cpu",
             init_std: float | None = None) -> tuple[Any, Any]:
    """Build ``(model, processor)`` with random weights, in memory.

    ``shape`` is a key of :data:`SHAPES` or a :class:`VlmShape`; ``family``
    overrides its family (``paligemma`` | ``llava``); ``tokenizer`` is
    ``word`` (integer scheme) or ``bpe`` (least_frequent / last).  The word
    tokenizer is padded with filler tokens towards the shape's vocabulary so
    that the big shapes have realistic vocabulary sizes.

    ``init_std`` re-draws every matrix from ``N(0, init_std)``: with the
    library's 0.02 a tiny Gemma maps every input to the same token, and
    tests need outputs that depend on the image and the prompt.
    """
    import dataclasses

    import torch

    spec = SHAPES[shape] if isinstance(shape, str) else shape
    if family is not None:
        spec = dataclasses.replace(spec, family=family)
    if tokenizer == "word":
        # PaliGemma's processor adds 1153 tokens of its own; leave room for them.
        reserve = 1153 + 64 if spec.family == "paligemma" else 64
        tok = make_word_tokenizer(pad_to=max(0, spec.vocab_size - reserve))
    elif tokenizer == "bpe":
        tok = make_bpe_tokenizer()
    else:
        raise ValueError(f"tokenizer: expected 'word' or 'bpe', got {tokenizer!r}")
    if spec.family == "paligemma":
        model_cls, config, processor = paligemma_parts(spec, tok)
    elif spec.family == "llava":
        model_cls, config, processor = llava_parts(spec, tok)
    else:
        raise ValueError(f"family: expected 'paligemma' or 'llava', got {spec.family!r}")
    torch.manual_seed(seed)
    dtype = dtype or torch.float32
    with torch.device(device):
        model = model_cls._from_config(config, dtype=dtype)
    if init_std is not None:
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, init_std)
    model.eval()
    return model, processor


def save_vlm(model: Any, processor: Any, out_dir: str | Path, *,
             rt2_ros_metadata: Mapping[str, Any] | None = None,
             norm_stats: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` + ``processor`` (+ optional ``rt2_ros.json`` and OpenVLA statistics) to ``out_dir``.

    ``norm_stats`` (OpenVLA's ``{dataset: {"action": {"q01", "q99", "mask", ...}}}``)
    goes both into ``config.json`` (as ``norm_stats``, where OpenVLA checkpoints
    carry it) and into ``dataset_statistics.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if norm_stats is not None:
        model.config.norm_stats = dict(norm_stats)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if norm_stats is not None:
        (out / "dataset_statistics.json").write_text(json.dumps(norm_stats, indent=1))
    if rt2_ros_metadata is not None:
        from rt2_ros.policy.profiles import write_checkpoint_metadata

        write_checkpoint_metadata(out, rt2_ros_metadata)
    return out


def build_tiny_paligemma(out_dir: str | Path, *, tokenizer: str = "word", seed: int = 0,
                         rt2_ros_metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a tiny random PaliGemma (SigLIP + Gemma, 32 px images) to ``out_dir``.

    With the default ``word`` tokenizer the ``rt2`` profile picks the
    ``integer`` scheme by itself; no metadata file is needed.
    """
    model, processor = make_vlm("tiny", family="paligemma", tokenizer=tokenizer, seed=seed,
                                init_std=TINY_INIT_STD)
    return save_vlm(model, processor, out_dir, rt2_ros_metadata=rt2_ros_metadata)


def build_tiny_llava(out_dir: str | Path, *, tokenizer: str = "word", seed: int = 0,
                     rt2_ros_metadata: Mapping[str, Any] | None = None,
                     norm_stats: Mapping[str, Any] | None = None) -> Path:
    """Save a tiny random LLaVA (CLIP + Llama, 32 px images) to ``out_dir``.

    With ``tokenizer="bpe"`` and no ``rt2_ros_metadata``, a ``least_frequent``
    scheme is computed from token counts over :func:`training_corpus` and
    written to ``rt2_ros.json`` (what the trainer does for a real checkpoint).
    """
    model, processor = make_vlm("tiny", family="llava", tokenizer=tokenizer, seed=seed,
                                init_std=TINY_INIT_STD)
    if tokenizer == "bpe" and rt2_ros_metadata is None:
        rt2_ros_metadata = least_frequent_metadata(processor.tokenizer)
    return save_vlm(model, processor, out_dir, rt2_ros_metadata=rt2_ros_metadata,
                    norm_stats=norm_stats)


def least_frequent_metadata(tokenizer: Any, corpus: Iterable[str] | None = None,
                            embodiment: str = "rt2_arm") -> dict[str, Any]:
    """Return ``rt2_ros.json`` content for a ``least_frequent`` scheme counted over ``corpus``."""
    from rt2_ros.action_language import count_tokens, make_scheme

    counts = count_tokens(tokenizer, corpus if corpus is not None else training_corpus())
    scheme = make_scheme("least_frequent", tokenizer, token_counts=counts)
    return {"profile": "rt2", "embodiment": embodiment,
            "action_tokenizer": {"scheme": "least_frequent", "bins": scheme.bins,
                                 "ids": scheme.action_ids()}}


def openvla_dataset_statistics(datasets: Sequence[str] = ("bridge_orig",), dims: int = 7,
                               seed: int = 0) -> dict[str, Any]:
    """Return OpenVLA-style ``norm_stats`` for ``datasets`` (q01/q99 differ per dataset).

    The last dimension (the gripper) has ``mask: false``: OpenVLA leaves it
    normalised.
    """
    rng = random.Random(seed)
    stats = {}
    for name in datasets:
        q01 = [round(-rng.uniform(0.01, 0.05), 4) for _ in range(dims - 1)] + [0.0]
        q99 = [round(rng.uniform(0.01, 0.05), 4) for _ in range(dims - 1)] + [1.0]
        stats[name] = {"action": {"q01": q01, "q99": q99, "mask": [True] * (dims - 1) + [False],
                                  "mean": [0.0] * dims, "std": [1.0] * dims,
                                  "min": q01, "max": q99},
                       "num_transitions": 1000, "num_trajectories": 10}
    return stats


def build_tiny_openvla(out_dir: str | Path, *, datasets: Sequence[str] = ("bridge_orig",),
                       seed: int = 0) -> Path:
    """Save a tiny random OpenVLA-like checkpoint: LLaVA + BPE, ``norm_stats`` per dataset.

    It carries no ``rt2_ros.json``: the ``openvla`` profile (``last`` scheme,
    7 dims, q01/q99 from the checkpoint with ``unnorm_key``) applies as for a
    real OpenVLA checkpoint.
    """
    model, processor = make_vlm("tiny", family="llava", tokenizer="bpe", seed=seed,
                                init_std=TINY_INIT_STD)
    return save_vlm(model, processor, out_dir, norm_stats=openvla_dataset_statistics(datasets))


def parameter_count(model: Any) -> int:
    """Return the number of parameters of ``model`` (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
