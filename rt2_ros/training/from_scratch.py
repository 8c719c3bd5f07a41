"""Small vision-language models built from a config, for training from scratch on a CPU.

With no pretrained checkpoint (none can be downloaded here), ``rt2-ros train
--from-scratch tiny|small`` starts from random weights of a real Hugging Face
VLM class, so everything downstream (saving, ``TransformersPolicy``,
``rt2-ros act``/``serve``, the policy node) treats it like any checkpoint:

* ``tiny``: 32 px images, ~0.3 M parameters - for tests;
* ``small``: PaliGemma-shaped (SigLIP-like tower + Gemma-like decoder,
  prefix-LM attention), 96 px images as an 8 x 8 grid of patches, ~3.3 M
  parameters (~13 MB in float32 safetensors).

The tokenizer is word level and lower-cased: the numbers ``0``..``255`` (one
token each, so the ``integer`` scheme applies, as PaLI-X's does), the prompt
words, every word of the simulator's task templates and grounded questions,
and every word of the training texts.

The number words' embeddings start from an ordinal code (sines and cosines
of the value at eight frequencies, periods 512 down to 4) instead of noise:
a pretrained LM's number tokens already know that 61 < 127, and the action
tokens need that to compare the points a plan writes (``--plan points``).
Random number embeddings leave every value to be learnt on its own.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from rt2_ros.errors import ConfigError
from rt2_ros.testing.tiny_vlm import ENGLISH_WORDS, IMAGE_TOKEN, VlmShape

__all__ = ["SCRATCH_SHAPES", "build_word_tokenizer", "build_scratch_vlm", "words_of"]

SCRATCH_SHAPES: dict[str, VlmShape] = {
    "tiny": VlmShape("paligemma", vocab_size=0, text_hidden=64, text_layers=2, text_heads=2,
                     text_kv_heads=1, text_head_dim=32, text_intermediate=128, vision_hidden=32,
                     vision_layers=1, vision_heads=2, vision_intermediate=64, image_size=32,
                     patch_size=8),
    "small": VlmShape("paligemma", vocab_size=0, text_hidden=192, text_layers=4, text_heads=3,
                      text_kv_heads=1, text_head_dim=64, text_intermediate=768, vision_hidden=128,
                      vision_layers=3, vision_heads=2, vision_intermediate=512, image_size=96,
                      patch_size=12),
}

_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
# The prompts, and the markers and words of a chain-of-thought answer (``--plan points``), so a
# checkpoint trained without plans can be fine-tuned to plan.
_PROMPT_TEXTS = ("Q: what action should the robot take to ? A:",
                 "In: What action should the robot take to ?\nOut:",
                 "Plan: goal gripper height closed offset Action:")


def words_of(texts: Iterable[str]) -> list[str]:
    """The lower-cased words and punctuation runs of ``texts``, as the tokenizer splits them."""
    from tokenizers import pre_tokenizers

    splitter = pre_tokenizers.Whitespace()
    words: dict[str, None] = {}
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(text.lower()):
            words.setdefault(word, None)
    return list(words)


def build_word_tokenizer(texts: Iterable[str] = ()) -> Any:
    """A lower-casing word-level tokenizer: specials, ``<image>``, 0..255, base words, words of ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rt2_ros.training.sim_data import vocabulary_words

    vocab: dict[str, int] = {}
    base = words_of([*_PROMPT_TEXTS, " ".join(ENGLISH_WORDS), " ".join(vocabulary_words()), *texts])
    for word in (*_SPECIALS, IMAGE_TOKEN, *(str(i) for i in range(256)), *base):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    # Special, so the lower-casing normaliser and the pre-tokenizer never touch it.
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def build_scratch_vlm(preset: str, texts: Iterable[str] = (), *, seed: int = 0,
                      image_size: int | None = None) -> tuple[Any, Any]:
    """Return ``(model, processor)`` of the ``preset`` shape with random weights and a tokenizer
    covering ``texts``.  ``image_size`` overrides the preset's (the patch grid stays the same)."""
    import torch

    from rt2_ros.testing import tiny_vlm

    if preset not in SCRATCH_SHAPES:
        raise ConfigError(f"from_scratch: expected one of {', '.join(SCRATCH_SHAPES)}, got {preset!r}")
    shape = SCRATCH_SHAPES[preset]
    if image_size:
        grid = shape.image_size // shape.patch_size
        if image_size % grid:
            raise ConfigError(f"image_size: expected a multiple of {grid} (the {preset} model sees "
                              f"{grid} x {grid} patches), got {image_size}")
        shape = dataclasses.replace(shape, image_size=image_size, patch_size=image_size // grid)
    tokenizer = build_word_tokenizer(texts)
    builders = {"paligemma": tiny_vlm.paligemma_parts, "llava": tiny_vlm.llava_parts}
    model_cls, config, processor = builders[shape.family](shape, tokenizer)
    torch.manual_seed(seed)
    model = model_cls._from_config(config, dtype=torch.float32)
    ordinal_number_embeddings(model, tokenizer, seed=seed)
    return model, processor


def ordinal_number_embeddings(model: Any, tokenizer: Any, *, seed: int = 0, count: int = 256,
                              frequencies: int = 8) -> None:
    """Set the input embeddings of the words ``0``..``count-1`` to an ordinal code (see the module doc).

    The code (cos and sin of ``pi * v * 2**k / count``) is projected into the
    hidden size by a fixed random orthonormal map and scaled to the norm of
    the other rows, plus a little noise so no two rows are exactly tied.
    Output embeddings tied to the input ones (Gemma's) get the code too.
    """
    import torch

    ids = tokenizer.convert_tokens_to_ids([str(v) for v in range(count)])
    if tokenizer.unk_token_id in ids:
        raise ConfigError(f"tokenizer: the number words 0..{count - 1} are not all in the vocabulary")
    weight = model.get_input_embeddings().weight
    hidden = weight.shape[1]
    if 2 * frequencies > hidden:
        raise ConfigError(f"ordinal code: {2 * frequencies} dims do not fit the hidden size {hidden}")
    generator = torch.Generator().manual_seed(seed)
    values = torch.arange(count, dtype=torch.float32)[:, None]
    angles = torch.pi * values * (2.0 ** torch.arange(frequencies, dtype=torch.float32)) / count
    code = torch.cat([angles.cos(), angles.sin()], dim=1)                        # (count, 2F), rows of norm sqrt(F)
    basis, _ = torch.linalg.qr(torch.randn(hidden, 2 * frequencies, generator=generator))
    rows = code @ basis.T
    with torch.no_grad():
        scale = weight.norm(dim=1).mean() / rows.norm(dim=1).mean()
        noise = torch.randn(count, hidden, generator=generator) * (0.1 * float(weight.std()))
        weight[torch.as_tensor(ids)] = (rows * scale + noise).to(weight.dtype)
