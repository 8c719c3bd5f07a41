"""Training inputs: labels cover exactly the answer tokens, token types, and the policy's own prompt ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rt2_ros.policy.constrained_decoding import answer_token_ids, encode_text
from rt2_ros.policy.transformers_backend import TransformersPolicy
from rt2_ros.training.collate import IGNORE_INDEX, Example, MixtureDataset, Rt2Collator
from rt2_ros.training.samples import SampleSet


@pytest.fixture(scope="module")
def paligemma(tiny_paligemma_dir):
    return TransformersPolicy.from_pretrained(tiny_paligemma_dir, dtype="float32", device="cpu", warmup=False)


@pytest.fixture(scope="module")
def bpe_llava(tiny_bpe_vlm_dir):
    return TransformersPolicy.from_pretrained(tiny_bpe_vlm_dir, dtype="float32", device="cpu", warmup=False)


def examples():
    rng = np.random.default_rng(0)
    image = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    return [Example("robot", image(40, 40), "pick up the red block", tokens=[0, 128, 91, 241, 5, 101, 127, 200]),
            Example("vqa", image(32, 48), "how many blocks are on the table?", answer="two"),
            Example("robot", image(20, 30), "move the green can near the sink and then put it in the bowl",
                    tokens=[1, 0, 255, 3, 4, 5, 6, 7])]


def check_batch(policy, collator, batch, meta, exs):
    tokenizer = policy.tokenizer
    eos = tokenizer.eos_token_id
    for row, example in enumerate(exs):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        # The prompt part is exactly what the policy feeds the model at inference.
        text = policy.prompt_text(example.text) if example.kind == "robot" else policy.image_token + example.text
        expected_prompt = policy._encode([example.image], [text])["input_ids"][0].tolist()
        start = meta.answer_start[row]
        assert ids[:start].tolist() == expected_prompt
        if example.kind == "robot":
            answer = answer_token_ids(tokenizer, policy.scheme, example.tokens)
            assert policy.scheme.bins_for_ids(answer) == example.tokens
        else:
            answer = encode_text(tokenizer, example.answer)
        target = answer + [eos]
        length = start + len(target)
        assert meta.answer_length[row] == len(answer)
        assert ids[start:length].tolist() == target
        # Labels: the answer (and eos) where it is, -100 on the prompt and the padding.
        assert labels[start:length].tolist() == target
        assert (labels[:start] == IGNORE_INDEX).all() and (labels[length:] == IGNORE_INDEX).all()
        assert int((labels != IGNORE_INDEX).sum()) == len(target)
        assert mask[:length].all() and not mask[length:].any()


def test_paligemma_labels_and_prefix_lm_token_types(paligemma):
    collator = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True)
    exs = examples()
    batch, meta = collator.collate_with_meta(exs)
    check_batch(paligemma, collator, batch, meta, exs)
    types = batch["token_type_ids"]
    for row in range(len(exs)):
        start = meta.answer_start[row]
        assert (types[row, :start] == 0).all(), "the prompt (image + text) is the bidirectional prefix"
        assert (types[row, start:] == 1).all(), "answer and padding are the causal suffix"
    assert batch["pixel_values"].shape[0] == len(exs)
    assert meta.kinds == ["robot", "vqa", "robot"]


def test_prefix_lm_mask_keeps_labels_out_of_the_prompt(paligemma):
    """Changing the answer tokens changes nothing the model computes at prompt positions."""
    collator = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True)
    first = examples()[0]
    other = Example("robot", first.image, first.text, tokens=[1, 5, 5, 5, 5, 5, 5, 5])
    a, meta = collator.collate_with_meta([first])
    b, _ = collator.collate_with_meta([other])
    start = meta.answer_start[0]
    with torch.no_grad():
        la = paligemma.model(**{k: v for k, v in a.items() if k != "labels"}).logits[0, :start]
        lb = paligemma.model(**{k: v for k, v in b.items() if k != "labels"}).logits[0, :start]
    assert torch.allclose(la, lb, atol=1e-5)
    # The check has teeth: marking the answer as prefix (type 0) lets the prompt see it.
    leaky_a = {k: v for k, v in a.items() if k != "labels"}
    leaky_b = {k: v for k, v in b.items() if k != "labels"}
    leaky_a["token_type_ids"] = torch.zeros_like(a["token_type_ids"])
    leaky_b["token_type_ids"] = torch.zeros_like(b["token_type_ids"])
    with torch.no_grad():
        assert not torch.allclose(paligemma.model(**leaky_a).logits[0, :start],
                                  paligemma.model(**leaky_b).logits[0, :start], atol=1e-5)


def test_least_frequent_scheme_on_bpe_llava(bpe_llava):
    assert bpe_llava.scheme.name == "least_frequent"
    collator = Rt2Collator(bpe_llava.processor, bpe_llava.scheme, prefix_lm=False)
    exs = examples()
    batch, meta = collator.collate_with_meta(exs)
    check_batch(bpe_llava, collator, batch, meta, exs)
    assert "token_type_ids" not in batch  # LLaVA has no prefix-LM token types
    start = meta.answer_start[0]
    assert bpe_llava.scheme.bins_for_ids(batch["labels"][0, start:start + 8].tolist()) == exs[0].tokens


def test_loss_is_the_answer_tokens_cross_entropy(paligemma):
    collator = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True)
    batch = collator(examples()[:1])
    with torch.no_grad():
        out = paligemma.model(**batch)
    labels = batch["labels"][0]
    positions = (labels != IGNORE_INDEX).nonzero().flatten()
    manual = torch.nn.functional.cross_entropy(out.logits[0, positions - 1], labels[positions])
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_dataset_reencodes_actions_in_another_embodiment():
    from rt2_ros.action_language import load_embodiment
    from rt2_ros.training.checkpoint import fit_embodiment

    arm = load_embodiment("rt2_arm")
    records = []
    for k in range(3):
        tokens = [0, 100 + k, 128, 128, 127, 127, 127, 255]
        records.append((np.zeros((8, 8, 3), np.uint8),
                        {"episode": "e", "step": k, "instruction": "pick up the red block", "tokens": tokens,
                         "action": arm.decode(tokens), "success": True}))
    robot = SampleSet.from_samples("robot", records)
    stats = {"q01": [0, -0.02, -0.01, -0.01, -0.1, -0.1, -0.1, 0.0], "q99": [1, 0.02, 0.01, 0.01, 0.1, 0.1, 0.1, 1.0]}
    fitted = fit_embodiment(arm, stats, "q01q99")
    same = MixtureDataset(robot, None, arm, arm)
    refit = MixtureDataset(robot, None, fitted, arm)
    assert same[1].tokens == records[1][1]["tokens"]
    assert refit[1].tokens == fitted.encode(records[1][1]["action"])
    assert refit[1].tokens != same[1].tokens


def test_grounding_marks_the_points_image_token_and_the_answer_predicting_positions(paligemma):
    from rt2_ros.training.collate import GROUNDING_KEYS

    rng = np.random.default_rng(1)
    exs = [Example("vqa", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "where is the red cube?",
                   answer="200 30", points=((0.8, 0.1),)),
           *examples()[:2]]
    plain, _ = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True).collate_with_meta(exs)
    assert not set(GROUNDING_KEYS) & set(plain), "off by default: the batch is only model inputs"
    batch, meta = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                              grounding=True).collate_with_meta(exs)
    image_positions = torch.nonzero(batch["input_ids"][0] == paligemma.processor.image_token_id).flatten()
    grid = int(len(image_positions) ** 0.5)
    assert grid * grid == len(image_positions) > 1
    # (0.8, 0.1): column int(0.8 * grid), row int(0.1 * grid) of the patch grid, row-major.
    expected = image_positions[int(0.1 * grid) * grid + int(0.8 * grid)]
    assert batch["grounding_target"].tolist() == [[int(expected)], [-1], [-1]]
    queries = batch["grounding_queries"]
    start, length = meta.answer_start[0], meta.answer_length[0]
    assert torch.nonzero(queries[0]).flatten().tolist() == list(range(start - 1, start - 1 + length))
    assert not queries[1:].any()
    # The positions that predict the answer are those whose next label is an answer token.
    assert (batch["labels"][0, torch.nonzero(queries[0]).flatten() + 1] != IGNORE_INDEX).all()


def test_grounding_of_a_robot_sample_marks_its_goal_and_gripper_patches(paligemma):
    rng = np.random.default_rng(2)
    robot = examples()[0]
    robot.points = ((0.1, 0.9), (1.02, -0.01))   # the gripper just outside the frame: edge patch
    vqa = Example("vqa", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "where is the red cube?",
                  answer="200 30", points=((0.8, 0.1),))
    batch, meta = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                              grounding=True).collate_with_meta([robot, vqa])
    image_positions = torch.nonzero(batch["input_ids"][0] == paligemma.processor.image_token_id).flatten()
    grid = int(len(image_positions) ** 0.5)
    goal = image_positions[int(0.9 * grid) * grid + int(0.1 * grid)]
    gripper = image_positions[grid - 1]              # row 0, last column
    vqa_point = image_positions[int(0.1 * grid) * grid + int(0.8 * grid)]
    assert batch["grounding_target"].tolist() == [[int(goal), int(gripper)], [int(vqa_point), -1]]
    start, length = meta.answer_start[0], meta.answer_length[0]
    assert length == len(robot.tokens) and meta.plan_length == [0, 0]
    assert torch.nonzero(batch["grounding_queries"][0]).flatten().tolist() == list(range(start - 1, start - 1 + length))


def test_with_a_plan_each_point_is_asked_for_by_the_positions_that_write_its_numbers(paligemma):
    # The plan writes where the goal and the gripper are: the positions that predict the goal's two
    # numbers read the goal's patch, those of the gripper's the gripper's (all heads, as a "where is
    # the X?" answer reads its one point). The action positions attend to the plan's numbers instead.
    robot = examples()[0]
    robot.points = ((0.1, 0.9), (0.5, 0.2))
    robot.plan = "goal 25 230 gripper 128 51"
    vqa = Example("vqa", np.zeros((40, 40, 3), np.uint8), "where is the red cube?", answer="200 30",
                  points=((0.8, 0.1),))
    batch, meta = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                              grounding=True).collate_with_meta([robot, vqa])
    start, length = meta.answer_start[0], meta.answer_length[0]
    plan_length = length - len(robot.tokens)
    assert plan_length > 4 and meta.plan_length == [plan_length, 0]
    numbers = [int(p) for p in batch["plan_numbers"][0] if p >= 0]
    assert [paligemma.tokenizer.decode([int(batch["input_ids"][0, p])]).strip() for p in numbers] == \
        ["25", "230", "128", "51"]
    queries = batch["grounding_queries"]
    assert queries.shape == (2, 2, batch["input_ids"].shape[1])
    assert torch.nonzero(queries[0, 0]).flatten().tolist() == [numbers[0] - 1, numbers[1] - 1]
    assert torch.nonzero(queries[0, 1]).flatten().tolist() == [numbers[2] - 1, numbers[3] - 1]
    # The VQA row asks for its one point with every answer position, as without a plan.
    vqa_start, vqa_length = meta.answer_start[1], meta.answer_length[1]
    assert torch.nonzero(queries[1, 0]).flatten().tolist() == list(range(vqa_start - 1, vqa_start - 1 + vqa_length))
    assert not queries[1, 1].any()
    # No position after the plan is pointed at the image; the first action token is predicted
    # by the last plan position, which is left free.
    answer = answer_token_ids(paligemma.tokenizer, paligemma.scheme, robot.tokens, plan=robot.plan)
    first_action = paligemma.scheme.ids_for_bins(robot.tokens)[0]
    assert int(torch.nonzero(queries[0].any(0)).max()) < start - 1 + plan_length
    assert int(batch["labels"][0, start + plan_length]) == answer[plan_length] == first_action
    acting = torch.nonzero(batch["plan_queries"][0]).flatten().tolist()
    assert acting == list(range(start - 1 + plan_length, start - 1 + length))


def test_plan_reading_loss_is_low_only_when_the_action_attends_to_the_plans_numbers():
    from rt2_ros.training.trainer import plan_reading_loss

    length = 12
    numbers = torch.tensor([[3, 5], [-1, -1]])
    queries = torch.zeros(2, length, dtype=torch.bool)
    queries[0, 8:] = True
    on_numbers = torch.zeros(2, 2, length, length)
    on_numbers[:, :, :, 3] = 0.5
    on_numbers[:, :, :, 5] = 0.5
    assert float(plan_reading_loss(on_numbers, numbers, queries)) == pytest.approx(0.0, abs=1e-6)
    elsewhere = torch.zeros_like(on_numbers)
    elsewhere[:, :, :, 0] = 1.0
    assert float(plan_reading_loss(elsewhere, numbers, queries)) > 10.0
    uniform = torch.full((2, 2, length, length), 1.0 / length)
    assert float(plan_reading_loss(uniform, numbers, queries)) == pytest.approx(np.log(length / 2))
    assert float(plan_reading_loss(uniform, torch.tensor([[-1], [-1]]), queries)) == 0.0


def test_grounding_loss_splits_the_heads_between_a_rows_points():
    from rt2_ros.training.trainer import grounding_loss

    length = 6
    queries = torch.zeros(1, length, dtype=torch.bool)
    queries[0, 4:] = True
    split = torch.zeros(1, 3, length, length)
    split[0, :2, :, 1] = 1.0     # heads 0 and 1 (the first group) on point 1
    split[0, 2, :, 2] = 1.0      # head 2 on point 2
    assert float(grounding_loss(split, torch.tensor([[1, 2]]), queries)) == pytest.approx(0.0, abs=1e-6)
    swapped = torch.tensor([[2, 1]])
    assert float(grounding_loss(split, swapped, queries)) > 10.0
    # Half of the first group's attention on its point: (-log 0.5 + 0) / 2.
    half = split.clone()
    half[0, 0, :, 1] = 0.0
    half[0, 0, :, 3] = 1.0
    assert float(grounding_loss(half, torch.tensor([[1, 2]]), queries)) == pytest.approx(np.log(2) / 2)


def test_grounding_loss_with_per_point_queries_points_every_head_at_each_point_from_its_positions():
    from rt2_ros.training.trainer import grounding_loss

    length = 8
    queries = torch.zeros(1, 2, length, dtype=torch.bool)
    queries[0, 0, 4] = True      # position 4 writes point 1
    queries[0, 1, 6] = True      # position 6 writes point 2
    right = torch.zeros(1, 3, length, length)
    right[0, :, 4, 1] = 1.0
    right[0, :, 6, 2] = 1.0
    assert float(grounding_loss(right, torch.tensor([[1, 2]]), queries)) == pytest.approx(0.0, abs=1e-6)
    # The right places at the wrong positions: each position must read its own point.
    crossed = torch.zeros(1, 3, length, length)
    crossed[0, :, 4, 2] = 1.0
    crossed[0, :, 6, 1] = 1.0
    assert float(grounding_loss(crossed, torch.tensor([[1, 2]]), queries)) > 10.0
    # One head of three elsewhere at point 1's position: -log(2/3), averaged with point 2's 0.
    partly = right.clone()
    partly[0, 0, 4, 1] = 0.0
    partly[0, 0, 4, 5] = 1.0
    assert float(grounding_loss(partly, torch.tensor([[1, 2]]), queries)) == pytest.approx(np.log(1.5) / 2)
    assert float(grounding_loss(right, torch.tensor([[-1, -1]]), queries)) == 0.0


def test_grounding_loss_is_minus_log_the_attention_on_the_point():
    from rt2_ros.training.trainer import grounding_loss

    length = 6
    attentions = torch.full((2, 2, length, length), 1.0 / length)
    target = torch.tensor([3, -1])
    queries = torch.zeros(2, length, dtype=torch.bool)
    queries[0, 4:] = True
    assert float(grounding_loss(attentions, target, queries)) == pytest.approx(np.log(length))
    focused = torch.zeros_like(attentions)
    focused[:, :, :, 3] = 1.0
    assert float(grounding_loss(focused, target, queries)) == pytest.approx(0.0, abs=1e-6)
    assert float(grounding_loss(attentions, torch.tensor([-1, -1]), queries)) == 0.0


def test_a_plan_comes_before_the_action_and_matches_what_the_policy_forces(paligemma):
    robot = examples()[0]
    robot.plan = "goal 25 230 gripper 255 0"
    batch, meta = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True).collate_with_meta([robot])
    start, length = meta.answer_start[0], meta.answer_length[0]
    answer = answer_token_ids(paligemma.tokenizer, paligemma.scheme, robot.tokens, plan=robot.plan)
    assert batch["input_ids"][0, start:start + length].tolist() == answer
    assert batch["labels"][0, start:start + length + 1].tolist() == answer + [paligemma.tokenizer.eos_token_id]
    # At inference the backend forces "Plan:" and stops the plan at "Action:": both are where training put them.
    cot = TransformersPolicy(paligemma.model, paligemma.processor, paligemma.setup, chain_of_thought=True,
                             warmup=False)
    assert answer[:len(cot._plan_prefix_ids)] == cot._plan_prefix_ids
    action_at = length - len(robot.tokens)
    assert answer[action_at - len(cot._action_prefix_ids):action_at] == cot._action_prefix_ids
    assert paligemma.scheme.bins_for_ids(answer[action_at:]) == robot.tokens


def test_points_plans_are_built_from_the_grounding_points():
    from rt2_ros.action_language import load_embodiment
    from rt2_ros.errors import ConfigError
    from rt2_ros.training.episodes import points_plan

    arm = load_embodiment("rt2_arm")
    tokens = arm.encode({"terminate": False, "x": 0.01, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0,
                         "yaw": 0.0, "gripper": 1.0})
    record = {"instruction": "push the red cube", "tokens": tokens, "offset": 0, "shape": [4, 4, 3],
              "points": {"goal": [0.1, 0.9], "gripper": [1.02, -0.01]}}
    pixels = np.zeros(48, np.uint8)
    with_plan = MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="points")
    assert with_plan[0].plan == points_plan(record["points"]) == "goal 25 230 gripper 255 0"
    assert MixtureDataset(SampleSet("robot", [record], pixels), None, arm)[0].plan is None
    bare = {k: v for k, v in record.items() if k != "points"}
    with pytest.raises(ConfigError, match="plan: 'points' needs robot samples with the grounding points "
                                          "goal, gripper.*1 of 1 lack goal, gripper$"):
        MixtureDataset(SampleSet("robot", [bare], pixels), None, arm, plan="points")
    with pytest.raises(ConfigError, match="plan: expected one of none, points, object_points, object_points_hand, "
                                          "hand_points_offset, hand_under_offset, hand_target_offset, got 'words'"):
        MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="words")


def test_object_points_plans_name_and_point_at_the_tasks_object_first():
    from rt2_ros.action_language import load_embodiment
    from rt2_ros.errors import ConfigError
    from rt2_ros.training.episodes import points_plan

    arm = load_embodiment("rt2_arm")
    tokens = arm.encode({"terminate": False, "x": 0.01, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0,
                         "yaw": 0.0, "gripper": 1.0})
    record = {"instruction": "push the red cube to the left", "tokens": tokens, "offset": 0, "shape": [4, 4, 3],
              "objects": ["red cube"],
              "points": {"goal": [0.1, 0.9], "gripper": [0.5, 0.2], "object": [0.3, 0.6]}}
    pixels = np.zeros(48, np.uint8)
    item = MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="object_points")[0]
    # The object's part reads like the answer to "where is the red cube?" ("76 153").
    assert item.plan == points_plan(record["points"], "red cube") == "red cube 76 153 goal 25 230 gripper 128 51"
    assert item.points == ((0.3, 0.6), (0.1, 0.9), (0.5, 0.2))   # in the plan's order
    # The two-point plan and no plan are unchanged by the extra point.
    assert MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="points")[0].plan == \
        "goal 25 230 gripper 128 51"
    assert MixtureDataset(SampleSet("robot", [record], pixels), None, arm)[0].points == ((0.1, 0.9), (0.5, 0.2))
    # Episodes collected before the object point was recorded cannot train it, and say so.
    older = dict(record, points={"goal": [0.1, 0.9], "gripper": [0.5, 0.2]})
    with pytest.raises(ConfigError, match="'object_points' needs robot samples with the grounding points "
                                          "object, goal, gripper.*1 of 1 lack object$"):
        MixtureDataset(SampleSet("robot", [older], pixels), None, arm, plan="object_points")
    unnamed = dict(record, objects=[])
    with pytest.raises(ConfigError, match="'object_points' needs each robot sample's task object.*1 of 1"):
        MixtureDataset(SampleSet("robot", [unnamed], pixels), None, arm, plan="object_points")
    with pytest.raises(ConfigError, match="object_name: expected the name of the task's object, got ' '"):
        points_plan(record["points"], " ")


def _hand_sample(gripper_command: float):
    """The rt2_arm embodiment, one cached robot sample record with the hand's state and all three
    grounding points, and its 4 x 4 pixels."""
    from rt2_ros.action_language import load_embodiment

    arm = load_embodiment("rt2_arm")
    tokens = arm.encode({"terminate": False, "x": 0.01, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0,
                         "yaw": 0.0, "gripper": 1.0})
    record = {"instruction": "pick up the red cube", "tokens": tokens, "offset": 0, "shape": [4, 4, 3],
              "objects": ["red cube"], "height": 0.3149, "gripper_command": gripper_command,
              "points": {"goal": [0.1, 0.9], "gripper": [0.5, 0.2], "object": [0.3, 0.6]}}
    pixels = np.zeros(48, np.uint8)
    return arm, record, pixels


def test_hand_plans_add_the_hands_height_and_finger_state_after_the_points():
    from rt2_ros.errors import ConfigError
    from rt2_ros.training.episodes import hand_plan

    arm, record, pixels = _hand_sample(gripper_command=0.7)
    item = MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="object_points_hand")[0]
    assert item.plan == "red cube 76 153 goal 25 230 gripper 128 51 height 31 closed 1"
    assert item.points == ((0.3, 0.6), (0.1, 0.9), (0.5, 0.2)) and item.number_points == (0, 0, 1, 1, 2, 2, 2, 2)
    # Before the first gripper command the fingers count as open; heights stay in 0..255 cm.
    first = {k: v for k, v in record.items() if k != "gripper_command"}
    assert MixtureDataset(SampleSet("robot", [first], pixels), None, arm,
                          plan="object_points_hand")[0].plan.endswith("height 31 closed 0")
    assert hand_plan(-0.02, 0.49) == "height 0 closed 0" and hand_plan(9.0, 1.0) == "height 255 closed 1"
    with pytest.raises(ConfigError, match="height: expected the end effector's height in m"):
        hand_plan(float("nan"), 0.0)
    unposed = {k: v for k, v in record.items() if k != "height"}
    with pytest.raises(ConfigError, match="'object_points_hand' needs each robot sample's hand height.*1 of 1"):
        MixtureDataset(SampleSet("robot", [unposed], pixels), None, arm, plan="object_points_hand")


def test_a_hand_plans_height_and_finger_state_are_asked_to_read_the_grippers_patch(paligemma):
    robot = examples()[0]
    robot.points = ((0.8, 0.1), (0.1, 0.9), (0.5, 0.2))
    robot.plan = "red cube 200 30 goal 25 230 gripper 128 51 height 31 closed 1"
    robot.number_points = (0, 0, 1, 1, 2, 2, 2, 2)
    batch, _ = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                           grounding=True).collate_with_meta([robot])
    numbers = [int(p) for p in batch["plan_numbers"][0] if p >= 0]
    assert [paligemma.tokenizer.decode([int(batch["input_ids"][0, p])]).strip() for p in numbers] == \
        ["200", "30", "25", "230", "128", "51", "31", "1"]
    queries = batch["grounding_queries"][0]
    assert [torch.nonzero(queries[k]).flatten().tolist() for k in range(3)] == \
        [[numbers[0] - 1, numbers[1] - 1], [numbers[2] - 1, numbers[3] - 1],
         [numbers[4] - 1, numbers[5] - 1, numbers[6] - 1, numbers[7] - 1]]
    # A plan whose numbers do not line up (the hand's not declared) falls back to the whole plan.
    robot.number_points = ()
    batch, meta = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                              grounding=True).collate_with_meta([robot])
    start = meta.answer_start[0]
    assert all(torch.nonzero(batch["grounding_queries"][0, k]).flatten().tolist()
               == list(range(start - 1, start - 1 + meta.plan_length[0])) for k in range(3))


def test_hand_first_plans_write_the_hand_then_the_object_and_goal_then_the_goals_offset(paligemma):
    from rt2_ros.errors import ConfigError
    from rt2_ros.training.episodes import offset_plan, plan_number_labels

    arm, record, pixels = _hand_sample(gripper_command=0.0)
    item = MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="hand_points_offset")[0]
    # goal 25 230, gripper 128 51: the goal is 103 bins left of the hand and 179 below it.
    assert item.plan == "gripper 128 51 height 31 closed 0 red cube 76 153 goal 25 230 offset 76 217"
    assert item.points == ((0.5, 0.2), (0.3, 0.6), (0.1, 0.9))
    assert item.number_points == (0, 0, 0, 0, 1, 1, 2, 2, 2, 2)
    assert plan_number_labels("hand_points_offset") == ("gripper col", "gripper row", "height", "closed",
                                                       "object col", "object row", "goal col", "goal row",
                                                       "offset col", "offset row")
    # 128 = at the goal's column/row; the halved difference keeps the image's width in 0..255.
    assert offset_plan({"goal": [0.5, 0.5], "gripper": [0.5, 0.5]}) == "offset 128 128"
    assert offset_plan({"goal": [1.0, 0.0], "gripper": [0.0, 1.0]}) == "offset 255 0"
    with pytest.raises(ConfigError, match="the offset needs the goal and the gripper, got \\['goal'\\]"):
        offset_plan({"goal": [0.5, 0.5]})
    # Each number asks for the patch of the point it is read from.
    robot = examples()[0]
    robot.points, robot.plan, robot.number_points = item.points, item.plan, item.number_points
    batch, _ = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                           grounding=True).collate_with_meta([robot])
    numbers = [int(p) for p in batch["plan_numbers"][0] if p >= 0]
    assert len(numbers) == 10
    queries = batch["grounding_queries"][0]
    assert [torch.nonzero(queries[k]).flatten().tolist() for k in range(3)] == \
        [[p - 1 for p in numbers[:4]], [p - 1 for p in numbers[4:6]], [p - 1 for p in numbers[6:]]]


def test_the_under_plan_writes_the_point_under_the_hand_and_measures_the_offset_from_it():
    from rt2_ros.errors import ConfigError

    arm, record, pixels = _hand_sample(gripper_command=0.0)
    # The hand at 31 cm is seen at row 51; the point under it at the goal's height at row 200.
    record["points"]["under"] = [0.47, 0.785]
    item = MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="hand_under_offset")[0]
    # goal 25 230, under 120 200: 128 + (25 - 120) // 2 = 80, 128 + (230 - 200) // 2 = 143.
    assert item.plan == ("gripper 128 51 height 31 closed 0 red cube 76 153 goal 25 230 under 120 200 "
                         "offset 80 143")
    assert item.points == ((0.5, 0.2), (0.3, 0.6), (0.1, 0.9), (0.47, 0.785))
    assert item.number_points == (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2)
    # Episodes collected before the point was recorded cannot train this plan: said at once.
    del record["points"]["under"]
    with pytest.raises(ConfigError, match="hand_under_offset.*1 of 1 lack under$"):
        MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="hand_under_offset")


def test_the_target_plan_names_the_reference_object_once_the_fingers_close():
    from rt2_ros.errors import ConfigError

    arm, record, pixels = _hand_sample(gripper_command=0.0)
    record.update(instruction="move the red cube near the blue sphere", objects=["red cube", "blue sphere"])
    record["points"].update(under=[0.47, 0.785], reference=[0.8, 0.7])
    open_item = MixtureDataset(SampleSet("robot", [record], pixels), None, arm, plan="hand_target_offset")[0]
    # Fingers open: the task's object, as the under plan writes it.
    assert open_item.plan == ("gripper 128 51 height 31 closed 0 red cube 76 153 goal 25 230 under 120 200 "
                              "offset 80 143")
    assert open_item.points == ((0.5, 0.2), (0.3, 0.6), (0.1, 0.9), (0.47, 0.785))
    assert open_item.number_points == (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2)
    # Told to close: where the held object goes, named and pointed at; its numbers read its patch.
    closed = dict(record, gripper_command=1.0)
    item = MixtureDataset(SampleSet("robot", [closed], pixels), None, arm, plan="hand_target_offset")[0]
    assert item.plan == ("gripper 128 51 height 31 closed 1 blue sphere 204 179 goal 25 230 under 120 200 "
                         "offset 80 143")
    assert item.points == ((0.5, 0.2), (0.8, 0.7), (0.1, 0.9), (0.47, 0.785))
    # A task without a reference object keeps pointing at its object, closed or not.
    single = dict(closed, objects=["red cube"], points={k: v for k, v in record["points"].items() if k != "reference"})
    assert "closed 1 red cube 76 153 goal" in MixtureDataset(SampleSet("robot", [single], pixels), None, arm,
                                                             plan="hand_target_offset")[0].plan
    # Episodes collected before the reference point was recorded cannot say where it is: said at once.
    lacking = dict(closed, points={k: v for k, v in record["points"].items() if k != "reference"})
    with pytest.raises(ConfigError, match=r"hand_target_offset.*1 of 2 robot samples cannot say which: points: "
                                          r"with the fingers closed the target is the reference object "
                                          r"\('blue sphere'\), whose point this sample lacks"):
        MixtureDataset(SampleSet("robot", [record, lacking], pixels), None, arm, plan="hand_target_offset")


def test_plan_given_items_teach_the_action_to_follow_the_plan(paligemma):
    from rt2_ros.action_language import load_embodiment
    from rt2_ros.errors import ConfigError

    arm = load_embodiment("rt2_arm")
    tokens = arm.encode({"terminate": False, "x": 0.01, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0,
                         "yaw": 0.0, "gripper": 1.0})
    # Two samples, each image a single grey level (its index), so the image an item got is readable.
    records = [{"instruction": "push the red cube", "tokens": tokens, "offset": 48 * i, "shape": [4, 4, 3],
                "points": {"goal": [0.1, 0.9], "gripper": [0.5, 0.2]}} for i in range(2)]
    pixels = np.repeat(np.arange(2, dtype=np.uint8), 48)
    samples = SampleSet("robot", records, pixels)
    given = MixtureDataset(samples, None, arm, plan="points", plan_given_fraction=1.0, seed=3)
    items = [given[i % 2] for i in range(200)]
    assert all(item.plan_given and item.points is None and item.plan == "goal 25 230 gripper 128 51"
               for item in items)
    # The image is drawn from all robot samples, not the item's own.
    assert sum(int(item.image[0, 0, 0]) != i % 2 for i, item in enumerate(items)) > 60
    half = MixtureDataset(samples, None, arm, plan="points", plan_given_fraction=0.5, seed=3)
    shares = [half[0] for _ in range(2000)]
    assert abs(sum(item.plan_given for item in shares) / 2000 - 0.5) < 0.05
    assert all(item.points is not None for item in shares if not item.plan_given)
    # Collated: no loss on the given plan, the action and eos are learnt; no grounding.
    robot = examples()[0]
    robot.plan, robot.plan_given = "goal 25 230 gripper 128 51", True
    batch, meta = Rt2Collator(paligemma.processor, paligemma.scheme, prefix_lm=True,
                              grounding=True).collate_with_meta([robot])
    start, length = meta.answer_start[0], meta.answer_length[0]
    answer = answer_token_ids(paligemma.tokenizer, paligemma.scheme, robot.tokens, plan=robot.plan)
    assert batch["input_ids"][0, start:start + length].tolist() == answer
    learnt = [int(i) for i in batch["labels"][0] if i != IGNORE_INDEX]
    assert learnt == paligemma.scheme.ids_for_bins(robot.tokens) + [paligemma.tokenizer.eos_token_id]
    assert batch["grounding_target"].tolist() == [[-1]] and not batch["grounding_queries"].any()
    with pytest.raises(ConfigError, match="plan_given_fraction: expected 0..1 with a plan, got 0.5"):
        MixtureDataset(samples, None, arm, plan_given_fraction=0.5)
