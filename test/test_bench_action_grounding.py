"""bench/action_grounding.py runs end to end on a tiny grounded checkpoint and prints figures in range.

The bench is how docs/training.md's robot-grounding table was measured; this keeps it working as
the trainer, collate and episode format change (its figures themselves are not asserted: a
four-step model has none worth asserting).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from rt2_ros.cli import main
from rt2_ros.training.trainer import TrainConfig, train

BENCH = Path(__file__).resolve().parents[1] / "bench" / "action_grounding.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("action_grounding_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def grounded_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_grounding")
    data = root / "data"
    assert main(["collect", "--episodes", "3", "--seed", "11", "--out", str(data), "--image-size", "48",
                 "--max-steps", "60", "--vqa-scenes", "0"]) == 0
    checkpoint = root / "ckpt"
    train(TrainConfig(output_dir=str(checkpoint), data=(str(data),), robot_fraction=1.0, from_scratch="tiny",
                      max_steps=4, batch_size=4, warmup=0.0, eval_steps=0, eval_episodes=1, eval_vqa_images=0,
                      logging_steps=2, seed=0, use_cpu=True, grounding_weight=1.0, grounding_layer=0,
                      cache_dir=str(root / "cache"), extra={"disable_tqdm": True}), log=lambda message: None)
    return data, checkpoint


def test_bench_reads_the_trained_layer_and_prints_figures_in_range(grounded_run, capsys):
    data, checkpoint = grounded_run
    bench = _bench_module()
    assert bench.trained_grounding_layer(checkpoint, layers=2) == 0      # trained with grounding_layer=0
    assert bench.trained_grounding_layer(checkpoint.parent, layers=4) == 2  # no summary: the middle one
    assert bench.main(["--model", str(checkpoint), "--episodes", str(data), "--stride", "3"]) == 0
    out = capsys.readouterr().out
    assert "decoder layer 0;" in out and "3 fresh episodes" in out
    hits = re.findall(r"goal patch (\S+)  gripper patch (\S+)  grounding loss (\S+)", out)
    assert len(hits) == 2, out
    for goal, gripper, loss in hits:
        assert 0.0 <= float(goal) <= 1.0 and 0.0 <= float(gripper) <= 1.0 and float(loss) > 0.0
    for key in ("image", "black"):
        row = re.search(rf"^\s+{key} ((?:\s+\S+){{8}})$", out, re.MULTILINE)
        assert row, out
        assert all(0.0 <= float(v) <= 255.0 for v in row.group(1).split())
    split = re.findall(r"image, goal (found|missed) \((\d+)\)((?:\s+\S+){8})$", out, re.MULTILINE)
    assert [kind for kind, _, _ in split] == ["found", "missed"], out
    assert sum(int(count) for _, count, _ in split) == 3          # the three first steps
    for _, count, cells in split:                                 # an empty split prints nan
        assert all((0.0 <= float(v) <= 255.0) if int(count) else v == "nan" for v in cells.split())


def test_bench_refuses_a_layer_the_model_lacks(grounded_run):
    data, checkpoint = grounded_run
    with pytest.raises(SystemExit, match="--layer: expected 0..1"):
        _bench_module().main(["--model", str(checkpoint), "--episodes", str(data), "--layer", "7"])


@pytest.mark.parametrize("plan", ["points", "object_points", "object_points_hand", "hand_points_offset",
                                  "hand_under_offset", "hand_target_offset"])
def test_bench_on_a_planning_checkpoint_scores_the_plan_it_writes(grounded_run, tmp_path, capsys, plan):
    data, _ = grounded_run
    checkpoint = tmp_path / "planning"
    train(TrainConfig(output_dir=str(checkpoint), data=(str(data),), robot_fraction=1.0, from_scratch="tiny",
                      max_steps=4, batch_size=4, warmup=0.0, eval_steps=0, eval_episodes=1, eval_vqa_images=0,
                      logging_steps=2, seed=0, use_cpu=True, grounding_weight=1.0, plan=plan,
                      cache_dir=str(tmp_path / "cache"), extra={"disable_tqdm": True}), log=lambda message: None)
    with_object = plan != "points"
    under = plan in ("hand_under_offset", "hand_target_offset")
    points = (3 if with_object else 2) + under
    hand = 2 if "hand" in plan else 0
    offset = 2 if plan.endswith("_offset") else 0
    assert _bench_module().main(["--model", str(checkpoint), "--episodes", str(data), "--stride", "3"]) == 0
    out = capsys.readouterr().out
    assert "plan written vs the true one" in out, out
    # The points in the order the plan first reads them.
    order = (r"gripper patch \S+  (?:object|target) patch \S+  goal patch \S+" + (r"  under patch \S+" if under else "")
             if offset else
             r"(object patch \S+  )?goal patch \S+  gripper patch \S+")
    hits = re.findall(order + "  grounding loss", out)
    assert len(hits) == 2 and all(bool(h) == with_object for h in hits), out
    changes = (["goal column 32 -> 224", "gripper column 32 -> 224"] + ["height 5 -> 30", "closed 0 -> 1"][:hand]
               + ["offset column 96 -> 160", "offset row 96 -> 160"][:offset])
    for change in changes:
        row = re.search(rf"{change}((?:\s+\S+){{8}})$", out, re.MULTILINE)
        assert row, out
        assert all(0.0 <= float(v) <= 255.0 for v in row.group(1).split())
    assert "greedy action vs the expert's" in out
    assert _bench_module().main(["--model", str(checkpoint), "--episodes", str(data), "--stride", "3",
                                 "--decoding", "median"]) == 0
    assert "median action vs the expert's" in capsys.readouterr().out
    plan_rows = out.split("plan written vs the true one")[1]
    for key in ("image", "black"):
        row = re.search(rf"^\s+{key} ((?:\s+\S+){{{2 * points + hand + offset}}})$", plan_rows, re.MULTILINE)
        assert row, out
        assert all(0.0 <= float(v) <= 255.0 for v in row.group(1).split())


def test_plan_following_moves_the_goal_with_the_object_it_copies_and_the_gripper_alone():
    columns = _bench_module()._column_indices
    points = "goal 180 178 gripper 127 54".split()
    assert columns(points, "goal", "points") == [1] and columns(points, "gripper", "points") == [4]
    with_object = "green sphere 211 175 goal 210 177 gripper 127 54".split()
    assert columns(with_object, "goal", "object_points") == [2, 5]
    assert columns(with_object, "gripper", "object_points") == [8]
    hand_first = "gripper 127 54 height 31 closed 0 green sphere 211 175 goal 210 177 offset 169 189".split()
    plan = "hand_points_offset"
    assert columns(hand_first, "gripper", plan) == [1] and columns(hand_first, "goal", plan) == [9, 12]
    assert columns(hand_first, "height", plan) == [4] and columns(hand_first, "closed", plan) == [6]
    assert columns(hand_first, "offset", plan) == [15] and columns(hand_first, "offset row", plan) == [16]


def test_plan_decoding_bench_compares_layout_with_free_decoding(grounded_run, tmp_path, capsys):
    """bench/plan_decoding.py: on a four-step hand_under_offset model (whose free plans rarely follow
    the layout) layout decoding keeps every plan in it, and the figures print in range."""
    data, plain = grounded_run
    checkpoint = tmp_path / "planning"
    train(TrainConfig(output_dir=str(checkpoint), data=(str(data),), robot_fraction=1.0, from_scratch="tiny",
                      max_steps=4, batch_size=4, warmup=0.0, eval_steps=0, eval_episodes=1, eval_vqa_images=0,
                      logging_steps=2, seed=0, use_cpu=True, plan="hand_under_offset",
                      cache_dir=str(tmp_path / "cache"), extra={"disable_tqdm": True}), log=lambda message: None)
    spec = importlib.util.spec_from_file_location("plan_decoding_bench", BENCH.parent / "plan_decoding.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model", str(checkpoint), "--episodes", str(data), "--stride", "20",
                       "--hand-state"]) == 0
    out = capsys.readouterr().out
    steps = int(re.search(r"; (\d+) steps \(every 20th\)", out).group(1))
    assert steps >= 3 and "hand state given" in out, out
    shares = re.search(r"plans in the layout: free (\S+)  layout (\S+)", out)
    assert shares and 0.0 <= float(shares.group(1)) <= 1.0 and float(shares.group(2)) == 1.0, out
    layout_row = re.search(r"^\s+layout ((?:\s+\S+){12})\s+\((\d+) plans\)$", out, re.MULTILINE)
    assert layout_row and int(layout_row.group(2)) == steps, out
    assert all(0.0 <= float(v) <= 255.0 for v in layout_row.group(1).split())
    for row in re.findall(r"^\s+(?:free|layout), all steps((?:\s+\S+){8})$", out, re.MULTILINE):
        assert all(0.0 <= float(v) <= 255.0 for v in row.split())
    timing = re.search(r"free median (\d+) ms p99 (\d+) ms  layout median (\d+) ms p99 (\d+) ms  "
                       r"layout / free (\S+)", out)
    assert timing and float(timing.group(5)) > 0, out
    # A checkpoint that does not plan has nothing to compare.
    with pytest.raises(SystemExit, match="not a planning checkpoint"):
        bench.main(["--model", str(plain), "--episodes", str(data)])
