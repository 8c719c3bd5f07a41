"""`rt2-ros eval` and rt2_ros.sim.evaluation: seeded episodes, success tables, seen/unseen splits."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ros_harness import REPO


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "rt2_ros.cli", "eval", *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


def test_eval_with_the_expert_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "eval.json"
    done = _cli("--backend", "expert", "--episodes", "2", "--tasks", "pick,move_near,push,place_on",
                "--seed", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "policy: expert - privileged-state reference, not a learned model"
    rows = {line.split()[0]: line.split()[1] for line in lines[3:lines.index("")]}
    assert rows == {"pick": "2/2", "move_near": "2/2", "push": "2/2", "place_on": "2/2", "overall": "8/8"}
    # How far the episodes got: the expert's grasps reach the object, its pushes never grasp.
    progress = {line.split()[0]: line.split() for line in lines[lines.index("") + 2:]}
    assert progress["pick"][-4:] == ["grasped", "2/2", "reached", "2/2"]
    assert progress["push"][-4:] == ["grasped", "0/2", "reached", "2/2"]
    assert progress["overall"][-3] == "6/8" and float(progress["pick"][1]) < 1.0, progress
    assert done.stderr.count("rt2-ros eval: [") == 8
    data = json.loads(out.read_text())
    assert data["privileged"] is True and data["backend"] == "expert" and data["training_data"] is None
    assert data["decoding"] is None and data["plan_decoding"] is None
    assert data["table"]["overall"]["all"] == {"episodes": 8, "successes": 8, "success_rate": 1.0}
    episodes = data["episodes"]
    assert [(e["kind"], e["seed"]) for e in episodes[:2]] == [("pick", 0), ("pick", 1)]
    assert all(e["success"] and e["terminated"] and e["error"] == "" for e in episodes)
    assert all(e["grasped"] == (e["kind"] != "push") and 0 <= e["closest_m"] < 0.04 for e in episodes)
    assert data["progress"]["overall"]["grasped"] == 6 and data["progress"]["push"]["episodes"] == 2
    # The expert sees the task solved after the step that solved it and terminates on the next.
    assert all(e["first_success_step"] == e["steps"] - 1 for e in episodes), episodes
    # The same arguments pose the same episodes.
    again = _cli("--backend", "expert", "--episodes", "1", "--tasks", "pick", "--json", "-")
    assert json.loads(again.stdout)["episodes"][0]["instruction"] == episodes[0]["instruction"]


def test_episodes_solved_at_some_step_but_not_at_the_end_are_counted_apart():
    from rt2_ros.sim.evaluation import EpisodeOutcome, EvaluationReport

    def outcome(success, first_success_step):
        return EpisodeOutcome(kind="pick", seed=0, instruction="pick up the red cube",
                              objects=("red cube",), success=success, terminated=success, steps=80,
                              wall_s=1.0, closest_m=0.01, grasped=True,
                              first_success_step=first_success_step)

    report = EvaluationReport(backend="transformers", model="m", privileged=False, control_rate_hz=5.0,
                              max_steps=80, seed=0)
    # Solved and stopped; lifted at step 21 then carried off (no terminate); never lifted.
    report.outcomes = [outcome(True, 16), outcome(False, 21), outcome(False, None)]
    assert report.table_rows()["pick"]["all"]["successes"] == 1
    assert report.progress_rows()["pick"] == {"episodes": 3, "grasped": 3, "reached": 2,
                                               "closest_median_m": 0.01}
    assert report.progress_text().splitlines()[1].split()[-4:] == ["grasped", "3/3", "reached", "2/3"]
    assert [e["first_success_step"] for e in report.to_json()["episodes"]] == [16, 21, None]


@pytest.mark.parametrize("args, message", [
    (["--tasks", "pick,fly"], "tasks: unknown task kind 'fly' (expected some of pick, move_near, push, place_on)"),
    (["--episodes", "0"], "--episodes: expected an integer >= 1, got 0"),
    (["--tasks", "pick,pick"], "tasks: a task kind is listed twice"),
    (["--image-size", "8"], "--image-size: expected 16..1024 pixels, got 8"),
    (["--exclude-objects", "plaid"], "--exclude-objects: 'plaid' is no colour"),
    (["--threads", "-1"], "--threads: expected an integer >= 0 (0: torch's default), got -1"),
    (["--trace", "/nonexistent-dir/steps.jsonl"], "--trace: the directory of '/nonexistent-dir/steps.jsonl' "
                                                  "does not exist"),
])
def test_bad_eval_arguments_are_one_line_errors(args, message):
    done = _cli("--backend", "expert", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_seen_and_unseen_splits_from_the_checkpoints_training_data(tmp_path):
    from rt2_ros.sim.evaluation import TrainingData, evaluate, read_training_data
    from rt2_ros.sim.expert import ExpertPolicy
    from rt2_ros.sim.tabletop import TabletopSim

    assert read_training_data(tmp_path) is None  # no rt2_ros.json: no split
    (tmp_path / "rt2_ros.json").write_text(json.dumps({"format": "rt2_ros/1", "training_data": {
        "objects": ["Green Sphere", "orange sphere"], "instructions": ["Lift the green sphere."]}}))
    data = read_training_data(tmp_path)
    assert data == TrainingData(frozenset({"green sphere", "orange sphere"}),
                                frozenset({"lift the green sphere"}))
    with TabletopSim(0, task=None) as sim:
        report = evaluate(sim, ExpertPolicy(sim), ["pick", "push"], 2, 0, backend="expert",
                          render=False, training_data=data)
    by_episode = {(o.kind, o.seed): o for o in report.outcomes}
    assert by_episode["pick", 0].instruction == "lift the green sphere"
    assert by_episode["pick", 0].objects_seen is True and by_episode["pick", 0].instruction_seen is True
    assert by_episode["pick", 1].objects_seen is True and by_episode["pick", 1].instruction_seen is False
    rows = report.table_rows()
    assert set(rows["overall"]) == {"all", "seen objects", "unseen objects", "seen instructions",
                                    "unseen instructions"}
    seen = sum(o.objects_seen for o in report.outcomes)
    assert rows["overall"]["seen objects"]["episodes"] == seen
    assert rows["overall"]["unseen objects"]["episodes"] == 4 - seen
    table = report.table()
    assert "seen objects" in table and "unseen instructions" in table
    assert report.to_json()["training_data"]["instructions"] == ["lift the green sphere"]


@pytest.mark.parametrize("record, message", [
    ({"objects": "red cube"}, "training_data.objects: expected a list of non-empty strings"),
    ({"objects": ["red cube"], "scenes": []}, "training_data: unknown key 'scenes'"),
    ([1, 2], "training_data: expected an object"),
])
def test_malformed_training_data_is_refused_naming_the_key(tmp_path, record, message):
    from rt2_ros.errors import ConfigError
    from rt2_ros.sim.evaluation import read_training_data

    (tmp_path / "rt2_ros.json").write_text(json.dumps({"training_data": record}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_training_data(tmp_path)


def test_start_episode_takes_kinds_and_instructions():
    from rt2_ros.sim.errors import SimError
    from rt2_ros.sim.evaluation import start_episode
    from rt2_ros.sim.tabletop import TabletopSim

    with TabletopSim(0, task=None) as sim:
        assert start_episode(sim, 5, "push") == 5 and sim.task.kind == "push"
        seed = start_episode(sim, 0, "put the red cube on the blue cylinder")
        assert {"red cube", "blue cylinder"} <= set(sim.scene.names)
        assert sim.task.kind == "place_on" and sim.task.object == "red cube"
        assert start_episode(sim, 0, "put the red cube on the blue cylinder") == seed  # deterministic
        with pytest.raises(SimError, match="matches no task template"):
            start_episode(sim, 0, "make coffee")


def test_eval_runs_a_learned_backend_on_rendered_images(tiny_paligemma_dir, tmp_path):
    out = tmp_path / "eval.json"
    trace = tmp_path / "steps.jsonl"
    done = _cli("--backend", "transformers", "--model", str(tiny_paligemma_dir), "--device", "cpu",
                "--episodes", "1", "--tasks", "pick", "--max-steps", "2", "--json", str(out), "--threads", "2",
                "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert "rt2-ros eval: 2 torch intra-op thread(s)" in done.stderr
    data = json.loads(out.read_text())
    assert data["privileged"] is False and data["backend"] == "transformers"
    # How it decoded: greedy; it does not plan, so no plan decoding.
    assert data["decoding"] == "greedy" and data["plan_decoding"] is None
    episode = data["episodes"][0]
    # A random tiny model: it acts on the camera images (constrained decoding keeps its actions
    # legal; it may say terminate at once), it does not solve the task.
    assert episode["steps"] in (1, 2) and episode["error"] == ""
    assert "privileged" not in done.stdout.splitlines()[0]
    # The trace has the model's own tokens next to the expert's label for the same state.
    steps = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(episode["steps"]))
    assert all(len(s["tokens"]) == len(s["expert"]["tokens"]) == len(s["token_agreement"]) == 8
               for s in steps)
    assert steps[0]["token_agreement"] == [a == b for a, b in zip(steps[0]["tokens"],
                                                                  steps[0]["expert"]["tokens"])]


def test_a_trace_has_every_step_with_the_hand_state_and_the_experts_label(tmp_path):
    trace = tmp_path / "steps.jsonl"
    done = _cli("--backend", "expert", "--episodes", "2", "--tasks", "pick,move_near", "--hand-state",
                "--json", "-", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    episodes = json.loads(done.stdout)["episodes"]
    steps = [json.loads(line) for line in trace.read_text().splitlines()]
    assert f"wrote {len(steps)} steps to {trace}" in done.stderr
    for episode in episodes:
        mine = [s for s in steps if (s["kind"], s["seed"]) == (episode["kind"], episode["seed"])]
        assert [s["step"] for s in mine] == list(range(episode["steps"]))
        assert all(s["instruction"] == episode["instruction"] for s in mine)
        assert set(mine[0]["distance_m"]) == set(episode["objects"])
        # The hand state the policy was given: no gripper command before the first, then the last sent.
        assert mine[0]["gripper_command"] is None
        assert [s["gripper_command"] for s in mine[1:]] == [s["action"]["gripper"] for s in mine[:-1]]
        # The watching expert labels each state as the driving expert acts on it.
        assert all(all(s["token_agreement"]) and s["expert"]["tokens"] == s["tokens"] for s in mine)
        # The trace follows the hand: it reaches and holds the task's object, the expert ends with terminate.
        task_object = episode["objects"][0]
        assert min(s["distance_m"][task_object] for s in mine) == pytest.approx(episode["closest_m"], abs=0.02)
        assert any(s["held"] == task_object for s in mine)
        assert mine[-1]["action"]["terminate"] is True and mine[0]["expert"]["phase"] == "approach"


def test_object_filters_pick_the_episodes_that_name_them(tmp_path):
    from rt2_ros.sim.evaluation import evaluate
    from rt2_ros.sim.expert import ExpertPolicy
    from rt2_ros.sim.tabletop import TabletopSim

    with TabletopSim(0, task=None) as sim:
        only = evaluate(sim, ExpertPolicy(sim), ["move_near"], 3, 0, render=False, objects=["purple"])
        without = evaluate(sim, ExpertPolicy(sim), ["move_near"], 3, 0, render=False,
                           exclude_objects=["purple"])
    assert all(any(n.startswith("purple ") for n in o.objects) for o in only.outcomes)
    assert not any(n.startswith("purple ") for o in without.outcomes for n in o.objects)
    # Kept seeds are the first that pass, in order: every seed is in one of the two runs.
    seeds = sorted(o.seed for o in [*only.outcomes, *without.outcomes])
    assert seeds[0] == 0 and len(set(seeds)) == 6
    assert all(o.success for o in [*only.outcomes, *without.outcomes])


def test_an_object_filter_term_no_object_matches_is_refused():
    done = _cli("--backend", "expert", "--objects", "purple,gold")
    assert done.returncode == 2 and done.stdout == ""
    assert "--objects: 'gold' is no colour" in done.stderr and done.stderr.count("\n") == 1


def test_a_trace_step_the_watching_expert_cannot_label_is_written_without_a_label():
    import io

    from rt2_ros.action_language import load_embodiment
    from rt2_ros.policy.base import PolicyError, PolicyOutput
    from rt2_ros.sim.step_trace import StepTracer
    from rt2_ros.sim.tabletop import TabletopSim

    embodiment = load_embodiment("rt2_arm")
    stream = io.StringIO()
    with TabletopSim(4, task="pick") as sim:
        tracer = StepTracer(sim, embodiment, stream)
        tracer.start("pick", 4)

        def gives_up():
            raise PolicyError("expert: gave up on 'pick up the red cube' after 3 failed grasps")

        tracer.expert.next_action = gives_up
        tokens = [0, 128, 128, 128, 128, 128, 128, 0]
        tracer.step(0, PolicyOutput(tokens=tokens, action=embodiment.decode(tokens)), None)
    line = json.loads(stream.getvalue())
    assert line["expert"] == {"phase": "approach",
                              "error": "expert: gave up on 'pick up the red cube' after 3 failed grasps"}
    assert line["token_agreement"] is None and line["tokens"] == tokens and line["gripper_command"] is None
