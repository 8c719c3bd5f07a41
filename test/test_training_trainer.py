"""rt2-ros train: a few steps reduce the loss, checkpoints load in the policy, schemes and bounds are recorded."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rt2_ros.action_language import load_embodiment
from rt2_ros.action_language.plans import offset_numbers
from rt2_ros.cli import main
from rt2_ros.errors import ConfigError
from rt2_ros.policy.base import HandState
from rt2_ros.policy.profiles import read_checkpoint_metadata
from rt2_ros.policy.transformers_backend import TransformersPolicy
from rt2_ros.training.checkpoint import choose_scheme, reinitialize_rows
from rt2_ros.training.episodes import EpisodeBagWriter, EpisodeInfo
from rt2_ros.training.trainer import SUMMARY_FILE, TrainConfig, train

ARM = load_embodiment("rt2_arm")


def scene(side: str, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(90, 110, (32, 32, 3), dtype=np.uint8)
    column = 4 if side == "left" else 20
    image[12:20, column:column + 8] = (220, 30, 30)
    return image


def write_push_episode(path, side: str, steps: int, rng: np.random.Generator, points=None) -> None:
    """One successful "push the red cube to the <side>" episode of ``steps`` steps (the last terminates);
    ``points``: the grounding points every step carries (None: none)."""
    instruction = f"push the red cube to the {side}"
    writer = EpisodeBagWriter(path, ARM)
    writer.instruction(instruction, 1)
    for k in range(steps):
        last = k == steps - 1
        action = {"terminate": last, "x": 0.0, "y": 0.0 if last else (0.03 if side == "left" else -0.03),
                  "z": -0.01 * (k < 2), "roll": 0.0, "pitch": 0.0, "yaw": 0.0, "gripper": 1.0}
        tokens = ARM.encode(action)
        writer.step(image=scene(side, rng), stamp_ns=10 + k * 200_000_000, instruction=instruction,
                    tokens=tokens, action=ARM.decode(tokens), control_rate_hz=5.0,
                    ee_position=[0.4, 0.0, 0.1], ee_quaternion=[1, 0, 0, 0], points=points)
    writer.close(EpisodeInfo(instruction, success=True, embodiment="rt2_arm", control_rate_hz=5.0,
                             objects=("red cube",)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Synthetic episodes (the push direction is visible in the image) and VQA about the same images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(0)
    lines = []
    for e in range(5):
        side = ("left", "right")[e % 2]
        write_push_episode(root / "episodes" / f"ep{e}", side, 6, rng)
        image_name = f"vqa_{e}.png"
        Image.fromarray(scene(side, rng)).save(root / image_name)
        lines.append({"image": image_name, "question": "is the red cube on the left or the right?",
                      "answer": side})
        lines.append({"image": image_name, "question": "what color is the cube?", "answer": "red"})
    (root / "vqa.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def scratch_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch_ckpt")
    config = TrainConfig(output_dir=str(out), data=(str(dataset / "episodes"),), vqa=(str(dataset / "vqa.jsonl"),),
                         from_scratch="tiny", max_steps=24, batch_size=8, learning_rate=3e-3, warmup=0.0,
                         lr_scheduler="constant", logging_steps=4, eval_steps=12, eval_episodes=1,
                         eval_vqa_images=1, seed=0, use_cpu=True, event_repeat=3, extra={"disable_tqdm": True})
    logged = []
    summary = train(config, log=logged.append)
    summary["logged"] = logged
    return out, summary


def test_a_few_steps_reduce_the_loss(scratch_run):
    _, summary = scratch_run
    losses = [entry["loss"] for entry in summary["log_history"] if "loss" in entry]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses
    evals = [entry for entry in summary["log_history"] if "eval_action_token_accuracy" in entry]
    assert len(evals) >= 2, "periodic evaluation ran"
    final = summary["final_metrics"]
    assert final["eval_robot_samples"] == 6 and final["eval_vqa_samples"] == 2
    for key in ("eval_action_token_accuracy", "eval_action_exact_match", "eval_vqa_exact_match"):
        assert 0.0 <= final[key] <= 1.0
    assert final["eval_loss"] < evals[0]["eval_loss"] or final["eval_loss"] < losses[0]
    # The 4 training episodes' last steps terminate (their gripper never switches): drawn 3 times.
    assert ("event steps (gripper closes/opens, terminate): 4 of 24 robot samples (16.7%), "
            "drawn 3 times per pass") in summary["logged"], summary["logged"]


def test_checkpoint_loads_in_the_policy_and_acts_legally(scratch_run, dataset, capsys):
    out, summary = scratch_run
    meta = read_checkpoint_metadata(out)
    assert meta.profile == "rt2" and meta.scheme == "integer" and len(meta.ids) == 256
    assert meta.embodiment["name"] == "rt2_arm"
    stats = meta.statistics["train"]["action"]
    assert stats["mask"] == [False] + [True] * 7 and len(stats["q01"]) == 8
    assert (out / SUMMARY_FILE).is_file() and summary["checkpoint_bytes"] > 0
    assert summary["training_data"] == {"instructions": ["push the red cube to the left",
                                                         "push the red cube to the right"],
                                        "objects": ["red cube"]}
    policy = TransformersPolicy.from_pretrained(out, dtype="float32", device="cpu")
    rng = np.random.default_rng(5)
    for side in ("left", "right"):
        result = policy.act(scene(side, rng), f"push the red cube to the {side}")
        assert ARM.validate_tokens(result.tokens) == result.tokens
        assert result.action == ARM.decode(result.tokens)
    assert isinstance(policy.answer(scene("left", rng), "what color is the cube?", max_new_tokens=4), str)
    # ... and through the command line, as a user would.
    assert main(["act", "--model", str(out), "--image", str(dataset / "vqa_0.png"), "--dtype", "float32",
                 "push the red cube to the left"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert ARM.validate_tokens(printed["tokens"]) == printed["tokens"]


def test_choose_scheme_and_reinitialise_least_frequent_rows(tiny_llava_dir, tiny_bpe_vlm_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    word = AutoProcessor.from_pretrained(tiny_llava_dir).tokenizer
    bpe = AutoProcessor.from_pretrained(tiny_bpe_vlm_dir).tokenizer
    texts = ["Q: what action should the robot take to pick up the red block? A:", "how many blocks? two"]
    assert choose_scheme("auto", word, texts).name == "integer"
    assert choose_scheme("auto", bpe, texts).name == "least_frequent"
    with pytest.raises(ConfigError, match="scheme: the integer scheme needs one token per number"):
        choose_scheme("integer", bpe, texts)
    scheme = choose_scheme("least_frequent", word, texts)
    used = {i for t in texts for i in word.encode(t, add_special_tokens=False)}
    assert not used & set(scheme.action_ids()), "the least frequent ids are ones the texts never use"
    assert not set(word.all_special_ids) & set(scheme.action_ids())
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    before = model.get_input_embeddings().weight.detach().clone()
    reinitialize_rows(model, scheme.action_ids(), seed=1)
    after = model.get_input_embeddings().weight.detach()
    changed = (before != after).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted(scheme.action_ids())


def test_pretrained_least_frequent_fitted_bounds_robot_only(dataset, tiny_llava_dir, tmp_path):
    out = tmp_path / "ckpt"
    config = TrainConfig(output_dir=str(out), data=(str(dataset / "episodes"),), model=str(tiny_llava_dir),
                         scheme="least_frequent", action_bounds="q01q99", robot_fraction=1.0, max_steps=2,
                         batch_size=4, eval_steps=0, eval_episodes=1, use_cpu=True,
                         extra={"disable_tqdm": True})
    summary = train(config, log=lambda message: None)
    assert summary["scheme"]["name"] == "least_frequent" and summary["scheme"]["reinitialised"]
    meta = read_checkpoint_metadata(out)
    assert meta.scheme == "least_frequent" and len(meta.ids) == 256
    fitted = meta.embodiment
    assert fitted["name"] == "rt2_arm_q01q99"
    y = next(d for d in fitted["dims"] if d["name"] == "y")
    assert y["low"] == pytest.approx(-0.03, abs=1e-3) and y["high"] == pytest.approx(0.03, abs=1e-3)
    x = next(d for d in fitted["dims"] if d["name"] == "x")
    assert (x["low"], x["high"]) == (-0.05, 0.05), "a constant dim keeps the embodiment's bounds"
    policy = TransformersPolicy.from_pretrained(out, dtype="float32", device="cpu")
    assert policy.scheme.name == "least_frequent" and policy.scheme.action_ids() == list(meta.ids)
    result = policy.act(scene("left", np.random.default_rng(0)), "push the red cube to the left")
    assert policy.embodiment.validate_tokens(result.tokens) == result.tokens
    assert -0.0301 <= result.action["y"] <= 0.0301, "de-tokenised with the fitted bounds"


def test_a_fixed_held_out_set_is_evaluated_and_all_the_data_trained_on(dataset, tmp_path, capsys):
    """--eval-data: held-out episodes from their own directory, every episode of --data trained on (a
    held-out set drawn from --data changes as DAgger rounds add data to it)."""
    rng = np.random.default_rng(3)
    for e in range(2):
        write_push_episode(tmp_path / "held" / f"ep{e}", ("left", "right")[e], 5, rng)
    out = tmp_path / "ckpt"
    code = main(["train", "--out", str(out), "--from-scratch", "tiny", "--data", str(dataset / "episodes"),
                 "--eval-data", str(tmp_path / "held"), "--robot-fraction", "1.0", "--max-steps", "2",
                 "--batch-size", "4", "--eval-steps", "0", "--cpu", "--training-args", '{"disable_tqdm": true}'])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    robot = summary["data"]["robot"]
    assert robot["train_samples"] == 5 * 6 and robot["eval_samples"] == 2 * 5 == summary["final_metrics"][
        "eval_robot_samples"]
    assert robot["eval_data"] == {"sources": [str(tmp_path / "held")], "episodes": 2}
    with pytest.raises(ConfigError, match="eval_data: expected episodes kept out of training, got .*episodes in "
                                          "data too"):
        TrainConfig(output_dir="x", data=(str(dataset / "episodes"),), eval_data=(str(dataset / "episodes"),),
                    robot_fraction=1.0, from_scratch="tiny")
    with pytest.raises(ConfigError, match="eval_data: held-out robot episodes need robot training data"):
        TrainConfig(output_dir="x", vqa=("v",), eval_data=("held",), robot_fraction=0.0, from_scratch="tiny")


def test_bad_configurations_are_refused(dataset, tmp_path, capsys):
    with pytest.raises(ConfigError, match="exactly one"):
        TrainConfig(output_dir="x", data=("d",), vqa=("v",), model="m", from_scratch="tiny")
    with pytest.raises(ConfigError, match="robot_fraction: 0.5 leaves room for VQA samples but no vqa"):
        TrainConfig(output_dir="x", data=("d",), from_scratch="tiny")
    with pytest.raises(ConfigError, match="from_scratch: expected one of tiny, small, got 'huge'"):
        TrainConfig(output_dir="x", data=("d",), vqa=("v",), from_scratch="huge")
    with pytest.raises(ConfigError, match="event_repeat: expected an integer <= 100, got 500"):
        TrainConfig(output_dir="x", data=("d",), vqa=("v",), from_scratch="tiny", event_repeat=500)
    with pytest.raises(ConfigError, match="event_repeat: 2 repeats robot steps, but no robot data was given"):
        TrainConfig(output_dir="x", vqa=("v",), robot_fraction=0.0, from_scratch="tiny", event_repeat=2)
    code = main(["train", "--out", str(tmp_path / "o"), "--from-scratch", "tiny",
                 "--data", str(dataset / "episodes"), "--robot-fraction", "1.5", "--vqa", "v"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["rt2-ros train: robot_fraction: expected a number <= 1.0, got 1.5"]
    code = main(["train", "--out", str(tmp_path / "o"), "--from-scratch", "tiny",
                 "--data", str(tmp_path / "nothing-here"), "--robot-fraction", "1.0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing-here: no such directory" in err[0]
    code = main(["train", "--out", str(tmp_path / "o"), "--from-scratch", "tiny", "--data", str(dataset / "episodes"),
                 "--robot-fraction", "1.0", "--training-args", '{"no_such_argument": 1}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no_such_argument" in err[-1] and err[-1].startswith("rt2-ros train: training arguments:")


def _grounding_mass(checkpoint, records, images):
    """Mean -log attention mass on each item's point (the grounding loss) of ``checkpoint``."""
    import torch

    from rt2_ros.training.collate import Example, Rt2Collator
    from rt2_ros.training.trainer import grounding_loss

    policy = TransformersPolicy.from_pretrained(checkpoint, dtype="float32", device="cpu", warmup=False)
    policy.model.set_attn_implementation("eager")
    collator = Rt2Collator(policy.processor, policy.scheme, prefix_lm=True, grounding=True)
    examples = [Example("vqa", images[r["image"]], r["question"], answer=r["answer"],
                        points=(tuple(r["point"]),))
                for r in records]
    batch = collator(examples)
    target, queries = batch.pop("grounding_target"), batch.pop("grounding_queries")
    batch.pop("plan_numbers"), batch.pop("plan_queries")
    with torch.no_grad():
        attentions = policy.model(**batch, output_attentions=True).attentions
    layer = policy.model.config.get_text_config().num_hidden_layers // 2
    return float(grounding_loss(attentions[layer], target, queries))


def test_grounding_weight_teaches_the_answer_to_attend_to_the_point(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    records, images = [], {}
    for k in range(48):
        image = rng.integers(0, 40, (32, 32, 3), dtype=np.uint8)
        row, column = (int(v) for v in rng.integers(0, 4, 2))   # a cell of the tiny model's 4 x 4 grid
        image[row * 8 + 1:row * 8 + 7, column * 8 + 1:column * 8 + 7] = (240, 240, 240)
        name = f"img{k}.png"
        Image.fromarray(image).save(tmp_path / name)
        images[name] = image
        x, y = (column + 0.5) / 4, (row + 0.5) / 4
        records.append({"image": name, "question": "where is the square?",
                        "answer": f"{int(x * 256)} {int(y * 256)}", "point": [x, y]})
    (tmp_path / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    losses = {}
    for weight in (0.0, 3.0):
        out = tmp_path / f"w{weight}"
        train(TrainConfig(output_dir=str(out), vqa=(str(tmp_path / "vqa.jsonl"),), robot_fraction=0.0,
                          from_scratch="tiny", max_steps=40, batch_size=8, learning_rate=3e-3, warmup=0.0,
                          lr_scheduler="constant", logging_steps=10, eval_steps=0, eval_vqa_images=0, seed=0,
                          use_cpu=True, grounding_weight=weight, cache_dir=str(tmp_path / "cache"),
                          extra={"disable_tqdm": True}), log=lambda message: None)
        losses[weight] = _grounding_mass(out, records[:16], images)
        logged = [entry for entry in json.loads((out / "training_summary.json").read_text())["log_history"]
                  if "loss" in entry]
        # The hint's own mean is logged beside the total loss whenever it is on.
        assert logged and all(("grounding_loss" in entry) == bool(weight) for entry in logged)
    # Uniform attention over the ~20 positions gives ~3.0; the weighted run looks at the square.
    assert losses[0.0] > 2.0 and losses[3.0] < 0.5, losses   # measured: 3.3 and ~0
    with pytest.raises(ConfigError, match="grounding_layer: expected -1 or 0..1"):
        train(TrainConfig(output_dir=str(tmp_path / "bad"), vqa=(str(tmp_path / "vqa.jsonl"),), robot_fraction=0.0,
                          from_scratch="tiny", max_steps=1, grounding_weight=1.0, grounding_layer=5,
                          cache_dir=str(tmp_path / "cache"), use_cpu=True), log=lambda message: None)


@pytest.mark.parametrize("plan", ["points", "object_points", "object_points_hand", "hand_points_offset",
                                  "hand_under_offset", "hand_target_offset"])
def test_a_points_plan_is_trained_saved_and_written_before_the_action(tmp_path, capsys, plan):
    """--plan points / object_points / object_points_hand / hand_points_offset / hand_under_offset /
    hand_target_offset: the checkpoint plans when loaded, writing the points' words and numbers (after
    the object's name and point with object_points; followed by the hand's height and finger state with
    object_points_hand; the hand first and the goal's offset from it last with hand_points_offset; with the
    point under the hand before the offset, measured from it, with hand_under_offset; the same with
    hand_target_offset, whose target is the task's object here: a push has no reference object) before a
    legal action."""
    rng = np.random.default_rng(4)
    for e in range(8):
        side = ("left", "right")[e % 2]
        goal = (0.25 if side == "left" else 0.75, 0.5)   # the cube's centre in scene()
        write_push_episode(tmp_path / "episodes" / f"ep{e}", side, 4, rng,
                           points={"goal": goal, "gripper": (0.5, 0.9), "object": goal, "under": (0.5, 0.7)})
    out = tmp_path / "ckpt"
    code = main(["train", "--out", str(out), "--from-scratch", "tiny", "--data", str(tmp_path / "episodes"),
                 "--robot-fraction", "1.0", "--plan", plan, "--plan-given-fraction", "0.25",
                 "--grounding-weight", "1",
                 "--max-steps", "150", "--batch-size", "8",
                 "--lr", "3e-3", "--warmup", "0", "--lr-scheduler", "constant", "--eval-steps", "0",
                 "--eval-episodes", "2", "--cpu", "--training-args", '{"disable_tqdm": true}'])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    config = json.loads((out / SUMMARY_FILE).read_text())["config"]
    assert config["plan"] == plan and config["plan_given_fraction"] == 0.25
    assert 0 <= summary["final_metrics"]["eval_plan_point_error"] < 64   # teacher-forced plan integers
    assert read_checkpoint_metadata(out).chain_of_thought is True
    assert read_checkpoint_metadata(out).plan == plan
    policy = TransformersPolicy.from_pretrained(out, dtype="float32", device="cpu")
    assert policy.chain_of_thought, "a checkpoint trained to plan is loaded planning"
    assert policy.plan_kind == plan
    for side in ("left", "right"):
        result = policy.act(scene(side, rng), f"push the red cube to the {side}")
        assert ARM.validate_tokens(result.tokens) == result.tokens
        words = result.plan.split()
        if plan in ("hand_under_offset", "hand_target_offset"):
            assert len(words) == 20 and words[14] == "under" and words[17] == "offset", result.plan
            # The point under the hand at (128, 179); the offset is measured from it, not the gripper.
            under = [int(w) for w in words[15:17]]
            assert abs(under[0] - 128) <= 16 and abs(under[1] - 179) <= 16, result.plan
            written = [int(w) for w in words[12:14]]
            assert (int(words[18]), int(words[19])) == offset_numbers(written, under), result.plan
            words = words[:14]
        if plan in ("hand_points_offset", "hand_under_offset", "hand_target_offset"):
            if plan == "hand_points_offset":
                assert len(words) == 17 and words[0] == "gripper" and words[14] == "offset", result.plan
                # Goal column 64 or 192 and row 128, the gripper at (128, 230): 128 + half the difference.
                offset_column, offset_row = int(words[15]), int(words[16])
                assert min(abs(offset_column - 96), abs(offset_column - 160)) <= 16, result.plan
                assert abs(offset_row - 77) <= 16, result.plan
                # The decoder computed them from the goal and gripper the model wrote.
                written = [int(w) for w in words[12:14] + words[1:3]]
                assert (offset_column, offset_row) == offset_numbers(written[:2], written[2:]), result.plan
            # The rest, in object_points_hand's order.
            words = words[7:14] + words[0:3] + words[3:7]
        if "hand" in plan:
            # The episodes' hand is 10 cm high, its gripper told to close from the first step on
            # (so "closed 0" on first steps only, "closed 1" after).
            assert words[-4:-1] == ["height", "10", "closed"] and words[-1] in ("0", "1"), result.plan
            words = words[:-4]
        if plan != "points":
            # "red cube C R" first: the cube where the goal is.
            assert words[:2] == ["red", "cube"] and len(words) == 10, result.plan
            assert [abs(int(a) - int(b)) <= 16 for a, b in zip(words[2:4], words[5:7])] == [True, True], result.plan
            words = words[4:]
        assert words[0] == "goal" and words[3] == "gripper" and len(words) == 6, result.plan
        goal_column, goal_row, gripper_column, gripper_row = (int(w) for w in words[1:3] + words[4:])
        # The points the data has: the goal at column 64 or 192 (the cube's side), row 128; the gripper
        # always at (128, 230).
        assert min(abs(goal_column - 64), abs(goal_column - 192)) <= 16, result.plan
        assert abs(goal_row - 128) <= 16 and abs(gripper_column - 128) <= 16 and abs(gripper_row - 230) <= 16
        assert result.text.startswith(f"Plan: {result.plan} Action: ")
    # Given the robot's hand state, the decoder writes the hand's numbers from it (the episodes' hand
    # is always 10 cm high, closed or not); a plan without the hand's fields is not changed by it.
    for command in (0.0, 1.0):
        told = policy.act(scene("left", rng), "push the red cube to the left", HandState(0.10, command))
        words = told.plan.split()
        assert ARM.validate_tokens(told.tokens) == told.tokens
        if "hand" in plan:
            assert "height" in words and "closed" in words, told.plan
            assert words[words.index("height") + 1] == "10", told.plan
            assert words[words.index("closed") + 1] == str(int(command)), told.plan
        else:
            assert "height" not in words and "closed" not in words, told.plan
    # A plan needs the points: episodes without them are refused with the reason.
    code = main(["train", "--out", str(tmp_path / "o2"), "--from-scratch", "tiny", "--data",
                 str(tmp_path / "none"), "--plan", "points", "--robot-fraction", "1.0", "--max-steps", "1"])
    assert code == 2
    # Giving the plan needs a plan.
    capsys.readouterr()
    code = main(["train", "--out", str(tmp_path / "o3"), "--from-scratch", "tiny", "--data",
                 str(tmp_path / "episodes"), "--plan-given-fraction", "0.5", "--robot-fraction", "1.0"])
    assert code == 2
    error = capsys.readouterr().err
    assert "plan_given_fraction: 0.5 gives robot samples their plan, but plan is 'none'" in error


def test_a_checkpoint_without_a_plans_words_gets_them_before_training(tiny_paligemma_dir, tmp_path):
    """Fine-tuning a word-level checkpoint (one trained before the hand plan existed) to write
    "height" and "closed": they are added as tokens instead of becoming <unk>."""
    from transformers import AutoTokenizer

    before = AutoTokenizer.from_pretrained(tiny_paligemma_dir)
    assert before.unk_token_id in before(" height closed", add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(5)
    for e in range(2):
        write_push_episode(tmp_path / "episodes" / f"ep{e}", ("left", "right")[e], 3, rng,
                           points={"goal": (0.25, 0.5), "gripper": (0.5, 0.9), "object": (0.25, 0.5)})
    lines: list[str] = []
    out = tmp_path / "ckpt"
    train(TrainConfig(output_dir=str(out), model=str(tiny_paligemma_dir), data=(str(tmp_path / "episodes"),),
                      robot_fraction=1.0, plan="object_points_hand", max_steps=2, batch_size=2, eval_steps=0,
                      eval_episodes=0, cache_dir=str(tmp_path / "cache"), use_cpu=True,
                      extra={"disable_tqdm": True}), log=lines.append)
    added = [line for line in lines if line.startswith("plan: added the words ")]
    assert len(added) == 1 and "height, closed to the tokenizer" in added[0], lines
    after = AutoTokenizer.from_pretrained(out)
    ids = after(" height 10 closed 1", add_special_tokens=False)["input_ids"]
    assert after.unk_token_id not in ids and min(ids[0], ids[2]) >= len(before)
    policy = TransformersPolicy.from_pretrained(out, dtype="float32", device="cpu", warmup=False)
    assert policy.model.get_output_embeddings().weight.shape[0] >= len(after)
    assert ARM.validate_tokens(policy.act(scene("left", rng), "push the red cube to the left").tokens)
