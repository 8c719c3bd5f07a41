"""Token schemes on tokenizers built offline with the ``tokenizers`` library."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from rt2_ros.action_language import (  # noqa: E402
    ActionLanguageError,
    IntegerScheme,
    LastScheme,
    LeastFrequentScheme,
    TokenScheme,
    count_tokens,
    load_embodiment,
    make_scheme,
)

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
WORDS = ["Q:", "what", "action", "should", "the", "robot", "take", "to", "pick", "up", "can", "?", "A:"]


def word_level(numbers=range(256)) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer whose vocabulary has "0".."255" as single tokens."""
    vocab = SPECIALS + [str(i) for i in numbers] + WORDS
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="[BOS]", eos_token="[EOS]")


def digit_splitting() -> PreTrainedTokenizerFast:
    """A character-level BPE (no merges): every number longer than one digit splits."""
    chars = SPECIALS + list("0123456789abcdefghijklmnopqrstuvwxyz:?")
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(chars)}, [], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE where " 128" is one token ("Ġ128") but "128" is three."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["A: " + " ".join(str(i) for i in range(256))] * 3 + ["pick up the can"]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def words() -> PreTrainedTokenizerFast:
    return word_level()


@pytest.fixture(scope="module")
def rt2_arm():
    return load_embodiment("rt2_arm")


# --- integer ---------------------------------------------------------------------

def test_integer_scheme_uses_the_number_tokens(words, rt2_arm):
    scheme = IntegerScheme.from_tokenizer(words)
    assert scheme.name == "integer" and scheme.bins == 256
    for b in (0, 1, 9, 10, 128, 255):
        assert scheme.bin_to_id(b) == words.convert_tokens_to_ids(str(b))
        assert scheme.id_to_bin(scheme.bin_to_id(b)) == b
    assert [scheme.id_to_bin(i) for i in scheme.action_ids()] == list(range(256))
    tokens = [1, 128, 91, 241, 5, 101, 127, 200]
    text = scheme.text_for_bins(tokens)
    assert text == "1 128 91 241 5 101 127 200"
    # the model's own tokenization of the action string is one id per dim
    assert words.encode(" " + text, add_special_tokens=False) == scheme.ids_for_bins(tokens)
    assert scheme.bins_for_ids(scheme.ids_for_bins(tokens)) == tokens
    assert words.decode(scheme.ids_for_bins(tokens)) == text


def test_integer_scheme_allowed_ids(words, rt2_arm):
    scheme = make_scheme("integer", words)
    allowed = scheme.allowed_ids(rt2_arm)
    assert len(allowed) == 8
    assert allowed[0] == [words.convert_tokens_to_ids("0"), words.convert_tokens_to_ids("1")]
    assert all(ids == scheme.action_ids() for ids in allowed[1:])
    assert scheme.max_id == words.convert_tokens_to_ids("255")


def test_integer_scheme_refuses_number_splitting_tokenizers():
    with pytest.raises(ActionLanguageError,
                       match=r"splits numbers into several tokens: '10' -> \['1', '0'\].*least_frequent or last"):
        IntegerScheme.from_tokenizer(digit_splitting())


def test_integer_scheme_refuses_missing_numbers():
    with pytest.raises(ActionLanguageError, match=r"has no token for '200': it becomes '\[UNK\]'"):
        IntegerScheme.from_tokenizer(word_level(numbers=range(200)))


def test_integer_scheme_smaller_bins_on_a_partial_vocabulary():
    scheme = IntegerScheme.from_tokenizer(word_level(numbers=range(200)), bins=200)
    assert scheme.bins == 200 and scheme.id_to_bin(scheme.bin_to_id(199)) == 199
    with pytest.raises(ActionLanguageError, match="has 256 bins but the integer scheme only 200"):
        scheme.allowed_ids(load_embodiment("rt2_arm"))


def test_integer_scheme_takes_the_leading_space_variant():
    tokenizer = byte_level_bpe()
    assert len(tokenizer.encode("128", add_special_tokens=False)) > 1      # the premise
    scheme = IntegerScheme.from_tokenizer(tokenizer)
    assert tokenizer.convert_ids_to_tokens(scheme.bin_to_id(128)) == "Ġ128"
    tokens = [1, 128, 91, 241, 5, 101, 127, 200]
    prompt_and_action = "A: " + scheme.text_for_bins(tokens)
    ids = tokenizer.encode(prompt_and_action, add_special_tokens=False)
    assert ids[-8:] == scheme.ids_for_bins(tokens)
    assert tokenizer.decode(scheme.ids_for_bins(tokens)) == " 1 128 91 241 5 101 127 200"


# --- least_frequent -----------------------------------------------------------------

def test_least_frequent_exact_choice_and_tie_break():
    # ids 0..9, 1 and 2 special; counts leave 0, 5, 6, 8, 9 at zero-ish
    counts = {0: 0, 3: 7, 4: 7, 5: 1, 6: 0, 7: 9, 8: 1, 9: 0}
    scheme = LeastFrequentScheme(counts, vocab_size=10, special_ids=[1, 2], bins=4)
    # by (count, id): 0(0) 6(0) 9(0) 5(1) | 8(1) 3(7) ... ; bins follow id order
    assert scheme.action_ids() == [0, 5, 6, 9]
    assert scheme.id_to_bin(9) == 3
    with pytest.raises(ActionLanguageError, match="token id 8 is not an action token of the least_frequent scheme"):
        scheme.id_to_bin(8)
    # deterministic: the same counts in another order give the same ids
    again = LeastFrequentScheme(dict(reversed(list(counts.items()))), 10, [2, 1], bins=4)
    assert again.action_ids() == scheme.action_ids()


def test_least_frequent_from_a_corpus_excludes_special_tokens(words, rt2_arm):
    corpus = ["Q: what action should the robot take to pick up the can ? A: 1 128 91 241 5 101 127 200"] * 5
    counts = count_tokens(words, corpus)
    assert counts[words.convert_tokens_to_ids("robot")] == 5
    scheme = make_scheme("least_frequent", words, token_counts=counts)
    chosen = set(scheme.action_ids())
    assert len(chosen) == 256
    assert not chosen & set(words.all_special_ids)
    ordinary = set(range(len(words))) - set(words.all_special_ids)
    assert ordinary - set(counts) <= chosen                # unused ids first, then the least used
    assert max(counts.get(i, 0) for i in chosen) <= min(counts.get(i, 0) for i in ordinary - chosen)
    tokens = [1, 128, 91, 241, 5, 101, 127, 200]
    assert scheme.bins_for_ids(scheme.ids_for_bins(tokens)) == tokens
    assert scheme.text_for_bins(tokens, words) == words.decode(scheme.ids_for_bins(tokens))
    with pytest.raises(ActionLanguageError, match="needs the tokenizer to spell its tokens"):
        scheme.text_for_bins(tokens)


@pytest.mark.parametrize("args, message", [
    (({5: 1}, 10, [], 16), r"vocab_size: expected an integer > bins \(16\), got 10"),
    (({25: 1}, 20, [], 4), r"token_counts: id 25 is outside 0\.\.19"),
    (({3: -1}, 20, [], 4), r"token_counts\[3\]: expected a count >= 0, got -1"),
    (({3: 1.5}, 20, [], 4), r"token_counts\[3\]: expected a count >= 0, got 1\.5"),
    (({}, 6, [0, 1, 2], 4), r"only 3 non-special ids, 4 needed"),
])
def test_least_frequent_rejects(args, message):
    with pytest.raises(ActionLanguageError, match=message):
        LeastFrequentScheme(*args)


# --- last ----------------------------------------------------------------------------

def test_last_scheme_is_openvla_mapping():
    scheme = LastScheme(32000)
    assert scheme.bin_to_id(0) == 31999 and scheme.bin_to_id(255) == 31744
    assert scheme.id_to_bin(31744) == 255
    with pytest.raises(ActionLanguageError, match="token id 31743 is not an action token of the last scheme"):
        scheme.id_to_bin(31743)
    # OpenVLA: id = vocab_size - digitize(normalised action, linspace(-1, 1, 256))
    openvla = load_embodiment("openvla_bridge")
    edges = np.linspace(-1, 1, 256)
    rng = np.random.default_rng(1)
    for _ in range(50):
        normalised = rng.uniform(-0.999, 0.999, 7)
        action = {}
        for dim, n in zip(openvla.dims, normalised):
            action[dim.name] = 0.5 * (n + 1) * (dim.q99 - dim.q01) + dim.q01 if dim.normalized else n
        openvla_ids = (32000 - np.digitize(normalised, edges)).tolist()
        assert scheme.ids_for_bins(openvla.encode(action)) == openvla_ids


def test_last_scheme_from_tokenizer_uses_base_vocab_size(words, rt2_arm):
    scheme = make_scheme("last", words)
    assert scheme.bin_to_id(0) == words.vocab_size - 1
    allowed = scheme.allowed_ids(rt2_arm)
    assert allowed[0] == [words.vocab_size - 1, words.vocab_size - 2]
    assert make_scheme("last", vocab_size=1000).bin_to_id(255) == 744


# --- shared checks -------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: make_scheme("palm"), r"scheme: expected one of integer, least_frequent, last, got 'palm'"),
    (lambda: make_scheme("integer"), r"the integer scheme needs a tokenizer"),
    (lambda: make_scheme("least_frequent", vocab_size=1000), r"needs token_counts"),
    (lambda: make_scheme("last"), r"the last scheme needs vocab_size or a tokenizer"),
    (lambda: LastScheme(256), r"vocab_size: expected an integer > bins \(256\), got 256"),
    (lambda: LastScheme(1000, bins=1), r"bins: expected an integer >= 2, got 1"),
    (lambda: LastScheme(1000).bin_to_id(256), r"bin: expected an integer in 0\.\.255, got 256"),
    (lambda: LastScheme(1000).bin_to_id(True), r"bin: expected an integer in 0\.\.255, got True"),
    (lambda: LastScheme(1000).bins_for_ids([999, 5]), r"token 1: token id 5 is not an action token"),
    (lambda: TokenScheme([1, 1], 2), r"id 1 stands for two bins"),
])
def test_scheme_errors(call, message):
    with pytest.raises(ActionLanguageError, match=message):
        call()
