"""The transformers backend on tiny random VLMs: constrained decoding, schemes, CoT, VQA, batching, errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from rt2_ros.action_language import (ActionLanguageError, format_action_text, load_embodiment,
                                     parse_action_text, parse_model_output)
from rt2_ros.policy.base import PolicyError
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.constrained_decoding import (ActionHead, allowed_mask, answer_token_ids, encode_text,
                                                 median_index)
from rt2_ros.policy.profiles import METADATA_FILE, _parse_metadata, read_checkpoint_metadata
from rt2_ros.policy.transformers_backend import TransformersPolicy


INSTRUCTIONS = ["pick up the red block", "open the drawer", "move the green can near the sink",
                "push the blue ball", "put the apple into the bowl", "close the door"]


def random_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(16, 80)), int(rng.integers(16, 80)), 3), dtype=np.uint8)
            for _ in range(count)]


def load(path, **kwargs):
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("device", "cpu")
    return TransformersPolicy.from_pretrained(path, **kwargs)


@pytest.fixture(scope="module")
def paligemma(tiny_paligemma_dir):
    return load(tiny_paligemma_dir)


@pytest.fixture(scope="module")
def llava(tiny_llava_dir):
    return load(tiny_llava_dir)


@pytest.fixture(scope="module")
def bpe(tiny_bpe_vlm_dir):
    return load(tiny_bpe_vlm_dir)


@pytest.fixture(scope="module")
def openvla(tiny_openvla_dir):
    return load(tiny_openvla_dir, profile="openvla")


def assert_legal(policy, out):
    embodiment = policy.embodiment
    assert embodiment.validate_tokens(out.tokens) == out.tokens
    assert out.action == embodiment.decode(out.tokens)
    parsed = parse_model_output(out.text, embodiment)
    assert parsed.tokens == out.tokens and parsed.plan == out.plan
    assert set(out.timings) >= {"preprocess", "prefill", "decode", "total"}
    assert out.timings["total"] >= out.timings["prefill"] > 0


# ----------------------------------------------------------------- constrained decoding is legal

@pytest.mark.parametrize("name", ["paligemma", "llava", "bpe", "openvla"])
def test_constrained_decoding_always_gives_a_legal_action(request, name):
    policy = request.getfixturevalue(name)
    outputs = [policy.act(image, INSTRUCTIONS[i % len(INSTRUCTIONS)])
               for i, image in enumerate(random_images(12, seed=1))]
    for out in outputs:
        assert_legal(policy, out)
    # The random weights do respond to the input: the test is not passing on one constant action.
    assert len({tuple(out.tokens) for out in outputs}) > 3


def test_schemes_picked_per_checkpoint(paligemma, llava, bpe, openvla, tiny_bpe_vlm_dir):
    assert paligemma.scheme.name == llava.scheme.name == "integer"
    assert paligemma.tokenizer.decode(paligemma.scheme.action_ids()[:3]).split() == ["0", "1", "2"]
    stored = read_checkpoint_metadata(tiny_bpe_vlm_dir)
    assert bpe.scheme.name == "least_frequent" and bpe.scheme.action_ids() == list(stored.ids)
    vocab = openvla.tokenizer.vocab_size
    assert openvla.scheme.name == "last"
    assert [openvla.scheme.bin_to_id(b) for b in (0, 255)] == [vocab - 1, vocab - 256]
    assert openvla.embodiment.num_tokens == 7 and openvla.profile == "openvla"


@pytest.mark.parametrize("name", ["paligemma", "bpe", "openvla"])
def test_generated_ids_are_the_allowed_ids_position_by_position(request, name):
    policy = request.getfixturevalue(name)
    allowed = policy.allowed_token_ids()
    assert len(allowed) == policy.embodiment.num_tokens
    for image in random_images(4, seed=2):
        ids, _ = policy.generate_action_ids(image, "pick up the red block")
        assert all(token in allowed[p] for p, token in enumerate(ids))


def test_terminate_position_only_allows_its_values(paligemma):
    allowed = paligemma.allowed_token_ids()
    assert allowed[0] == paligemma.scheme.action_ids()[:2]
    assert all(len(ids) == 256 for ids in allowed[1:])


def test_logits_wider_than_the_tokenizer_are_handled(paligemma, llava):
    for policy in (paligemma, llava):
        assert policy.logits_width > len(policy.tokenizer)


# ------------------------------------------------------- the constraint is what makes it legal

@pytest.mark.parametrize("name", ["paligemma", "bpe"])
def test_unconstrained_generate_of_the_same_model_is_not_an_action(request, name):
    policy = request.getfixturevalue(name)
    model, processor = policy.model, policy.processor
    illegal = 0
    for image in random_images(4, seed=3):
        text = policy.prompt_text("pick up the red block")
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        inputs.pop("labels", None)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        # Our loop without the constraint is exactly greedy generate (same tokens)...
        loop_ids, _ = policy.generate_action_ids(image, "pick up the red block", selection="none")
        assert loop_ids[:len(new)] == new
        # ...and what it writes is not an action.
        with pytest.raises(ActionLanguageError):
            parse_action_text(policy.tokenizer.decode(new, skip_special_tokens=True), policy.embodiment)
        with pytest.raises(ActionLanguageError):
            policy.scheme.bins_for_ids(loop_ids)
        illegal += 1
    assert illegal == 4


def test_allowed_rows_projection_equals_full_logits_plus_mask(paligemma):
    torch.manual_seed(0)
    weight = paligemma.model.get_output_embeddings().weight
    allowed = paligemma.allowed_token_ids()
    head = ActionHead(weight, None, paligemma.scheme, allowed)
    mask = allowed_mask(allowed, weight.shape[0])
    hidden = torch.randn(64, weight.shape[1])
    full = hidden @ weight.T
    for position in range(len(allowed)):
        expected = full.masked_fill(~mask[position], float("-inf")).argmax(-1)
        ids, bins = head.select(hidden, position)
        assert torch.equal(ids, expected)
        assert bins.tolist() == [paligemma.scheme.id_to_bin(i) for i in ids.tolist()]


def test_row_selection_and_mask_selection_decode_the_same_actions(paligemma, tiny_paligemma_dir):
    masked = TransformersPolicy(paligemma.model, paligemma.processor, paligemma.setup, selection="mask",
                                warmup=False)
    for image in random_images(5, seed=4):
        assert masked.act(image, "open the drawer").tokens == paligemma.act(image, "open the drawer").tokens


def test_median_index_is_where_the_cumulative_probability_reaches_one_half():
    probabilities = torch.zeros(2, 256)
    probabilities[0, [10, 100, 200]] = torch.tensor([0.4, 0.2, 0.4])   # two peaks: argmax 10, median 100
    probabilities[1, 250] = 1.0
    logits = probabilities.clamp_min(1e-12).log()
    assert median_index(logits).tolist() == [100, 250]
    assert logits.argmax(-1).tolist() == [10, 250]


@pytest.mark.parametrize("name", ["paligemma", "llava"])
def test_median_decoding_takes_each_continuous_dims_median_bin(request, name):
    greedy = request.getfixturevalue(name)
    setup = greedy.setup
    rows = TransformersPolicy(greedy.model, greedy.processor, setup, decoding="median", warmup=False)
    masked = TransformersPolicy(greedy.model, greedy.processor, setup, decoding="median", selection="mask",
                                warmup=False)
    kinds = [dim.kind for dim in greedy.embodiment.dims]
    differs = 0
    for image in random_images(4, seed=9):
        out = rows.act(image, "open the drawer")
        assert_legal(rows, out)
        assert masked.act(image, "open the drawer").tokens == out.tokens
        # Teacher-forced on the decoded tokens, each position's distribution over its allowed ids.
        ids = greedy.scheme.ids_for_bins(out.tokens)
        inputs = greedy._encode([image], [greedy.prompt_text("open the drawer")], answer_prefix=ids[:-1])
        with torch.no_grad():
            logits = greedy.model(**inputs).logits[0, -len(ids):].float()
        for position, (kind, token) in enumerate(zip(kinds, out.tokens)):
            allowed = logits[position, greedy.allowed_token_ids()[position]]
            expected = int(median_index(allowed[None])[0]) if kind == "continuous" else int(allowed.argmax())
            assert token == expected, (position, kind)
            differs += kind == "continuous" and token != int(allowed.argmax())
    assert differs, "on a random model's spread distributions the median is not the argmax"
    with pytest.raises(PolicyError, match="decoding: expected one of greedy, median, got 'mean'"):
        TransformersPolicy(greedy.model, greedy.processor, setup, decoding="mean", warmup=False)


def test_action_head_uses_the_bias_and_refuses_ids_outside_the_logits():
    from rt2_ros.action_language import LastScheme

    scheme = LastScheme(vocab_size=300, bins=4)
    weight = torch.zeros(300, 8)
    bias = torch.zeros(300)
    bias[297] = 1.0  # bin 2
    head = ActionHead(weight, bias, scheme, [scheme.action_ids()])
    assert head.select(torch.zeros(3, 8), 0)[1].tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="logits width"):
        allowed_mask([scheme.action_ids()], 299)
    with pytest.raises(ValueError, match="0..298"):
        ActionHead(weight[:299], None, scheme, [scheme.action_ids()])


# ------------------------------------------------------------------ chain of thought and VQA

def test_chain_of_thought_returns_a_plan_then_a_legal_action(paligemma, llava):
    for base in (paligemma, llava):
        policy = TransformersPolicy(base.model, base.processor, base.setup, chain_of_thought=True,
                                    max_plan_tokens=6, warmup=False)
        for image in random_images(3, seed=5):
            out = policy.act(image, "pick up the red block")
            assert out.plan and len(out.plan.split()) <= 6
            assert out.text.startswith("Plan: ") and " Action: " in out.text
            assert_legal(policy, out)


def act_writing(policy: TransformersPolicy, words: str):
    """``policy.act`` on a random image with the model preferring, at each plan token it chooses,
    the next token of ``words`` (then id 0) above all others: what the decoder does around a plan
    the model writes."""
    script = iter(encode_text(policy.tokenizer, words) + [0] * 50)

    def scripted(hidden):
        logits = torch.zeros(hidden.shape[0], policy.logits_width)
        logits[:, next(script)] = 1.0
        return logits

    policy._plan_logits = scripted
    try:
        return policy.act(random_images(1)[0], "pick up the red block")
    finally:
        del policy._plan_logits


@pytest.mark.parametrize("marker", ["Action :", "action:"])  # a lower-casing tokenizer writes the second
def test_chain_of_thought_forces_the_marker_and_stops_at_one_the_model_writes(llava, marker):
    policy = TransformersPolicy(llava.model, llava.processor, llava.setup, chain_of_thought=True,
                                max_plan_tokens=4, warmup=False)
    out = act_writing(policy, f"red block {marker}")
    assert out.plan == "red block"
    assert_legal(policy, out)


@pytest.mark.parametrize("kind, plan", [
    # The offset after "offset" is the decoder's: 128 + (30 - 10) // 2, 128 + (40 - 200) // 2.
    ("hand_points_offset", "gripper 10 200 goal 30 40 offset 138 48"),
    # A plan kind without derived fields leaves every number to the model.
    ("object_points_hand", "gripper 10 200 goal 30 40 offset 7"),
])
def test_a_plans_derived_fields_are_computed_from_what_the_model_wrote(kind, plan):
    import dataclasses

    from rt2_ros.policy.profiles import resolve_action_setup
    from rt2_ros.training.from_scratch import build_scratch_vlm

    # A from-scratch model's word tokenizer knows the plan words (the fixtures' tokenizers do not).
    model, processor = build_scratch_vlm("tiny", ["pick up the red block"])
    setup = dataclasses.replace(resolve_action_setup(processor.tokenizer), chain_of_thought=True, plan=kind)
    policy = TransformersPolicy(model, processor, setup, chain_of_thought=True, max_plan_tokens=32,
                                plan_decoding="free", warmup=False)
    assert policy.plan_kind == kind and policy.plan_decoding == "free"
    # The model's own words: the points, the field's word, numbers of its own, the marker.
    out = act_writing(policy, "gripper 10 200 goal 30 40 offset 7 Action:")
    if kind == "hand_points_offset":
        # The model's "7" comes after the computed numbers (it writes on freely): only the
        # numbers the field takes are forced.
        assert out.plan == plan + " 7", out.plan
    else:
        assert out.plan == plan, out.plan
    assert_legal(policy, out)
    # A checkpoint that names a plan kind says it plans; an unknown kind is refused.
    metadata = {"format": "rt2_ros/1", "chain_of_thought": True, "plan": "hand_points_offset"}
    assert _parse_metadata(metadata, "ckpt").plan == "hand_points_offset"
    with pytest.raises(PolicyError, match="ckpt: plan: expected one of points, .*, got 'offsets'"):
        _parse_metadata({**metadata, "plan": "offsets"}, "ckpt")
    with pytest.raises(PolicyError, match="ckpt: plan: 'points' is a chain-of-thought plan, but chain_of_thought"):
        _parse_metadata({"format": "rt2_ros/1", "plan": "points"}, "ckpt")


@pytest.mark.parametrize("kind", ["hand_points_offset", "hand_under_offset", "hand_target_offset", "object_points"])
def test_layout_decoding_writes_the_plan_kinds_words_and_leaves_the_model_the_name_and_numbers(kind):
    """plan_decoding 'layout' (what 'auto' picks for a from-scratch checkpoint naming its plan kind):
    even an untrained model's plan has every field's word in place, numbers in range, the derived
    offset computed and the hand's numbers taken from a HandState; a model that writes "Action:" or
    a field's word itself is not followed."""
    import dataclasses

    from rt2_ros.action_language.plans import offset_numbers, parse_plan, plan_layout
    from rt2_ros.policy.base import HandState
    from rt2_ros.policy.profiles import resolve_action_setup
    from rt2_ros.training.from_scratch import build_scratch_vlm

    model, processor = build_scratch_vlm("tiny", ["pick up the red block"])
    setup = dataclasses.replace(resolve_action_setup(processor.tokenizer), chain_of_thought=True, plan=kind)
    policy = TransformersPolicy(model, processor, setup, chain_of_thought=True, warmup=False)
    assert policy.plan_decoding == "layout"
    layout = plan_layout(kind)

    def fields_of(plan: str) -> dict[str, list[int]]:
        # Every word in place, a name of 1-4 words, each number in its field's range, nothing after.
        found = parse_plan(kind, plan)
        assert found is not None, plan
        return found

    images = random_images(3, seed=9)
    for image in images:
        out = policy.act(image, "pick up the red block")
        fields = fields_of(out.plan)
        assert_legal(policy, out)
        assert out.text.startswith(f"Plan: {out.plan} Action: ")
        offset = next((f for f in layout if f.derived), None)
        if offset is not None:
            assert tuple(fields["offset"]) == offset_numbers(*(fields[n] for n in offset.offset_of)), out.plan
        if "closed" in fields:
            told = policy.act(image, "pick up the red block", HandState(0.23, 1.0))
            assert fields_of(told.plan)["height"] == [23] and fields_of(told.plan)["closed"] == [1], told.plan
    # Batched rows decode as they do one at a time.
    batch = policy.act_batch(images, ["pick up the red block"] * 3)
    assert [o.plan for o in batch] == [policy.act(i, "pick up the red block").plan for i in images]
    # The model's own words are not followed: it may choose only names and numbers where they belong.
    out = act_writing(policy, "Action: gripper offset 7 goal")
    fields_of(out.plan)
    assert_legal(policy, out)
    # Asked for, layout decoding needs a plan kind and single-token words and numbers.
    with pytest.raises(PolicyError, match="plan_decoding: 'layout' needs a checkpoint that names its plan kind"):
        TransformersPolicy(model, processor, dataclasses.replace(setup, plan=""), chain_of_thought=True,
                           plan_decoding="layout", warmup=False)
    with pytest.raises(PolicyError, match="plan_decoding: expected one of auto, layout, free, got 'words'"):
        TransformersPolicy(model, processor, setup, chain_of_thought=True, plan_decoding="words", warmup=False)


def test_layout_decoding_needs_single_token_numbers(tiny_bpe_vlm_dir):
    """A subword tokenizer that splits integers into pieces cannot be laid out: 'auto' plans freely
    (and says why in the log), 'layout' is refused naming the token that splits."""
    import dataclasses

    base = TransformersPolicy.from_pretrained(tiny_bpe_vlm_dir, dtype="float32", device="cpu", warmup=False)
    setup = dataclasses.replace(base.setup, chain_of_thought=True, plan="points")
    policy = TransformersPolicy(base.model, base.processor, setup, chain_of_thought=True, warmup=False)
    assert policy.plan_decoding == "free"
    with pytest.raises(PolicyError, match="plan_decoding: 'layout' needs one token per"):
        TransformersPolicy(base.model, base.processor, setup, chain_of_thought=True, plan_decoding="layout",
                           warmup=False)


def test_vqa_answers_free_text_on_the_same_weights(paligemma, llava):
    image = random_images(1, seed=6)[0]
    for policy in (paligemma, llava):
        answer = policy.answer(image, "what is on the table?")
        assert isinstance(answer, str) and answer
        short = policy.ask(image, "what is on the table?", max_new_tokens=3)
        assert 1 <= len(short.text.split()) <= 3
        assert short.timings["total"] > 0
    # Free text is not confined to action tokens: the words are not all numbers 0..255.
    words = llava.answer(image, "what color is the block?", max_new_tokens=32).split()
    assert any(not w.isdigit() for w in words)
    with pytest.raises(PolicyError, match="question"):
        llava.answer(image, "   ")


# ------------------------------------------------------------------------------ batching

@pytest.mark.parametrize("chain_of_thought", [False, True])
def test_act_batch_equals_per_item_act(llava, paligemma, chain_of_thought):
    images = random_images(4, seed=7)
    instructions = ["pick up the red block", "go", "move the green can near the sink now", "open it"]
    for base in (llava, paligemma):
        policy = TransformersPolicy(base.model, base.processor, base.setup,
                                    chain_of_thought=chain_of_thought, max_plan_tokens=5, warmup=False)
        batch = policy.act_batch(images, instructions)
        single = [policy.act(image, text) for image, text in zip(images, instructions)]
        assert [o.tokens for o in batch] == [o.tokens for o in single]
        assert [o.plan for o in batch] == [o.plan for o in single]
    assert llava.act_batch([], []) == []
    with pytest.raises(PolicyError, match="as many instructions as images"):
        llava.act_batch(images, instructions[:2])


# ------------------------------------------------------------------- openvla statistics

def test_openvla_values_are_unnormalised_with_the_checkpoint_statistics(openvla, tiny_openvla_dir):
    stats = json.loads((tiny_openvla_dir / "config.json").read_text())["norm_stats"]["bridge_orig"]["action"]
    assert openvla.setup.unnorm_key == "bridge_orig"
    edges = np.linspace(-1.0, 1.0, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    for image in random_images(4, seed=8):
        out = openvla.act(image, "Put the carrot on the plate.")
        for i, name in enumerate(openvla.embodiment.names):
            normalised = centres[min(out.tokens[i], 254)]
            expected = (0.5 * (normalised + 1) * (stats["q99"][i] - stats["q01"][i]) + stats["q01"][i]
                        if stats["mask"][i] else normalised)
            assert out.action[name] == pytest.approx(expected, abs=1e-9)


def test_openvla_refuses_to_guess_between_datasets(tiny_openvla_multi_dir):
    with pytest.raises(PolicyError, match="unnorm_key.*bridge_orig, fractal"):
        load(tiny_openvla_multi_dir, profile="openvla", warmup=False)
    with pytest.raises(PolicyError, match="'nope' is not a dataset"):
        load(tiny_openvla_multi_dir, profile="openvla", unnorm_key="nope", warmup=False)
    policy = load(tiny_openvla_multi_dir, profile="openvla", unnorm_key="fractal", warmup=False)
    stats = json.loads((tiny_openvla_multi_dir / "dataset_statistics.json").read_text())["fractal"]["action"]
    assert [policy.embodiment.dims[i].q01 for i in range(6)] == stats["q01"][:6]


def test_statistics_are_read_from_dataset_statistics_json_too(tiny_openvla_multi_dir, tmp_path):
    copy = shutil.copytree(tiny_openvla_multi_dir, tmp_path / "ckpt")
    config = json.loads((copy / "config.json").read_text())
    del config["norm_stats"]
    (copy / "config.json").write_text(json.dumps(config))
    stats = json.loads((copy / "dataset_statistics.json").read_text())
    (copy / "dataset_statistics.json").write_text(json.dumps({"fractal": stats["fractal"]}))
    policy = load(copy, profile="openvla", warmup=False)
    assert policy.setup.unnorm_key == "fractal"


# ------------------------------------------------------------------------- checkpoint metadata

def test_integer_scheme_is_refused_for_a_number_splitting_tokenizer(tiny_openvla_dir):
    with pytest.raises(PolicyError, match=f"splits numbers.*{METADATA_FILE}"):
        load(tiny_openvla_dir, profile="rt2", warmup=False)


def test_bad_rt2_ros_json_is_refused_with_the_key(tiny_llava_dir, tmp_path):
    copy = shutil.copytree(tiny_llava_dir, tmp_path / "ckpt")
    cases = [({"schema": 1}, "unknown key 'schema'"),
             ({"action_tokenizer": {"scheme": "least_frequent"}}, "least_frequent scheme needs"),
             ({"action_tokenizer": {"scheme": "words"}}, "action_tokenizer.scheme"),
             ({"profile": "openvla"}, "trained with profile 'openvla'"),
             ({"action_tokenizer": {"scheme": "last", "vocab_size": 5000}}, "only has 384 output logits")]
    for content, message in cases:
        (copy / METADATA_FILE).write_text(json.dumps(content))
        with pytest.raises(PolicyError, match=message):
            load(copy, warmup=False)
    (copy / METADATA_FILE).write_text("{not json")
    with pytest.raises(PolicyError, match="not a readable JSON"):
        load(copy, warmup=False)


def test_checkpoint_metadata_can_name_an_inline_embodiment(tiny_llava_dir, tmp_path):
    from rt2_ros.policy.profiles import write_checkpoint_metadata

    copy = shutil.copytree(tiny_llava_dir, tmp_path / "ckpt")
    write_checkpoint_metadata(copy, {"embodiment": load_embodiment("language_table"),
                                     "action_tokenizer": {"scheme": "integer"}})
    policy = load(copy, warmup=False)
    assert policy.embodiment.name == "language_table"
    assert_legal(policy, policy.act(random_images(1)[0], "push the red block left"))


def test_answer_token_ids_match_the_tokenized_action_text(paligemma):
    tokenizer, scheme = paligemma.tokenizer, paligemma.scheme
    bins = [1, 128, 91, 241, 5, 101, 127, 200]
    assert answer_token_ids(tokenizer, scheme, bins) == encode_text(tokenizer, format_action_text(bins))
    plan = "pick up the red block"
    assert (answer_token_ids(tokenizer, scheme, bins, plan=plan)
            == encode_text(tokenizer, format_action_text(bins, plan)))


# ------------------------------------------------------------------------------ bad input

def test_bad_checkpoint_directories_name_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(PolicyError, match="missing.*not a directory"):
        load(missing)
    with pytest.raises(PolicyError, match="no config.json"):
        load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(PolicyError, match=str(tmp_path)):
        load(tmp_path)
    with pytest.raises(PolicyError, match="model: expected a checkpoint directory"):
        TransformersPolicy.from_config(PolicyConfig(model=""))


def test_bad_image_and_instruction_are_policy_errors(llava):
    with pytest.raises(PolicyError, match="uint8"):
        llava.act(np.zeros((8, 8, 3), dtype=np.float32), "go")
    with pytest.raises(PolicyError, match="HxWx3"):
        llava.act(np.zeros((8, 8), dtype=np.uint8), "go")
    with pytest.raises(PolicyError, match="non-empty instruction"):
        llava.act(np.zeros((8, 8, 3), dtype=np.uint8), "  ")
    with pytest.raises(PolicyError, match="numpy array"):
        llava.act_batch(["image.png"], ["go"])


def test_a_closed_policy_refuses_to_act(llava):
    policy = TransformersPolicy(llava.model, llava.processor, llava.setup, warmup=False)
    policy.close()
    with pytest.raises(PolicyError, match="closed"):
        policy.act(np.zeros((8, 8, 3), dtype=np.uint8), "go")
    with pytest.raises(PolicyError, match="closed"):
        policy.answer(np.zeros((8, 8, 3), dtype=np.uint8), "what?")


def test_device_and_quantization_options_fail_clearly(tiny_llava_dir):
    if not torch.cuda.is_available():
        with pytest.raises(PolicyError, match="CUDA is not available"):
            load(tiny_llava_dir, device="cuda")
    with pytest.raises(PolicyError, match="8bit loading needs a CUDA device"):
        load(tiny_llava_dir, quantization="8bit")
    with pytest.raises(PolicyError, match="device: expected"):
        load(tiny_llava_dir, device="tpu")
    with pytest.raises(PolicyError, match="cannot load the model"):
        load(tiny_llava_dir, attn_implementation="no_such_attention", warmup=False)
    eager = load(tiny_llava_dir, attn_implementation="eager", warmup=False)
    assert eager.model.config.get_text_config()._attn_implementation == "eager"
    assert_legal(eager, eager.act(random_images(1)[0], "open the drawer"))


def test_from_config_reads_every_option(tiny_llava_dir):
    cfg = PolicyConfig.from_mapping({"model": str(tiny_llava_dir), "device": "cpu", "dtype": "bfloat16",
                                     "chain_of_thought": True, "max_plan_tokens": 3, "decoding": "median"})
    policy = TransformersPolicy.from_config(cfg)
    assert policy.dtype == torch.bfloat16 and policy.chain_of_thought and policy.max_plan_tokens == 3
    assert policy.decoding == "median"
    assert policy.name == "transformers"
    assert_legal(policy, policy.act(random_images(1)[0], "open the drawer"))
