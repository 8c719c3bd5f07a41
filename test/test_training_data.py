"""Training data paths: simulator episodes + grounded VQA, MCAP episode bags, sample caches, VQA files."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rt2_ros.action_language import load_embodiment
from rt2_ros.cli import main
from rt2_ros.errors import ConfigError
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
from rt2_ros.training import mcap_io
from rt2_ros.training.episodes import EpisodeBagWriter, EpisodeInfo, EpisodeTopics, find_episodes, read_episode
from rt2_ros.training.samples import robot_samples, vqa_samples
from rt2_ros.training.sim_data import GOAL_POINT_HEIGHT
from rt2_ros.training.vqa_data import VqaError, load_image, read_vqa_jsonl

ARM = load_embodiment("rt2_arm")


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "data"
    code = main(["collect", "--episodes", "2", "--seed", "11", "--out", str(out), "--image-size", "48",
                 "--max-steps", "60", "--vqa-scenes", "3", "--questions-per-scene", "13"])
    assert code == 0
    return out


def test_collect_writes_successful_expert_episodes(collected):
    summary = json.loads((collected / "collect.json").read_text())
    assert summary["episodes"] == 2 and summary["vqa_scenes"] == 3
    bags = find_episodes(collected)
    assert len(bags) == 2
    goals, grippers = [], []
    for bag in bags:
        episode = read_episode(bag, ARM)
        info = episode.info
        assert info.source == "sim-expert" and info.embodiment == "rt2_arm" and info.control_rate_hz == 5.0
        assert info.success is True, "the expert solves these seeds"
        assert info.objects and all(name in info.instruction for name in info.objects)
        assert len(episode.steps) == info.steps > 3 and episode.skipped == 0
        for step in episode.steps:
            assert ARM.validate_tokens(step.tokens) == step.tokens
            assert step.image.shape == (48, 48, 3) and step.image.dtype == np.uint8
            assert step.instruction == info.instruction
        assert [s.tokens[0] for s in episode.steps][-1] == 1, "the last action terminates"
        assert all(s.tokens[0] == 0 for s in episode.steps[:-1])
        topics = mcap_io.bag_topics(bag)
        assert topics == {"/camera/image_raw": mcap_io.IMAGE, "/rt2/instruction": mcap_io.STRING,
                          "/rt2/action": mcap_io.RT2_ACTION, "/servo_node/delta_twist_cmds": mcap_io.TWIST_STAMPED,
                          "/gripper/command": mcap_io.FLOAT64, "/ee_pose": mcap_io.POSE_STAMPED,
                          "/rt2/grounding/goal": mcap_io.POINT_STAMPED,
                          "/rt2/grounding/gripper": mcap_io.POINT_STAMPED,
                          "/rt2/grounding/object": mcap_io.POINT_STAMPED,
                          "/rt2/grounding/under": mcap_io.POINT_STAMPED,
                          **({"/rt2/grounding/reference": mcap_io.POINT_STAMPED} if len(info.objects) > 1 else {})}
        # Every step says where the action heads, where the gripper is, where the task's object is
        # and the point under the gripper at the goal's height (and where the reference object is, for
        # a task with one: test_collect_records_where_the_reference_object_is); a grasping task's first
        # goal is the named object, so its pixel shows the object's colour.
        assert all(s.points is not None and set(s.points) == {"goal", "gripper", "object", "under"}
                   | ({"reference"} if len(info.objects) > 1 else set()) for s in episode.steps)
        # "under" is the tool's (x, y) at GOAL_POINT_HEIGHT through the same camera as the gripper.
        poses = [m.message.pose.position for m in mcap_io.read_messages(bag, ["/ee_pose"])]
        assert len(poses) == len(episode.steps)
        with TabletopSim(config=SimConfig(image_size=(48, 48))) as sim:
            for step, p in zip(episode.steps, poses):
                expected = sim.project_points([[p.x, p.y, GOAL_POINT_HEIGHT], [p.x, p.y, p.z]]) / 48
                assert step.points["under"] == pytest.approx(tuple(expected[0]), abs=1e-9)
                assert step.points["gripper"] == pytest.approx(tuple(expected[1]), abs=1e-9)
        x, y = episode.steps[0].points["object"]
        color = next(c for c in _COLOR_TESTS if c in info.objects[0])
        assert _COLOR_TESTS[color](*episode.steps[0].image[int(y * 48), int(x * 48)].astype(int)), info.objects
        assert all(-0.1 < v < 1.1 for s in episode.steps for p in s.points.values() for v in p)
        goals.append(episode.steps[0].points["goal"])
        grippers.append(episode.steps[0].points["gripper"])
        if info.task_kind != "push":
            x, y = episode.steps[0].points["goal"]
            color = next(c for c in _COLOR_TESTS if c in info.objects[0])
            assert _COLOR_TESTS[color](*episode.steps[0].image[int(y * 48), int(x * 48)].astype(int)), info.objects
        # Terminating heads nowhere: the goal is the gripper itself.
        assert episode.steps[-1].points["goal"] == episode.steps[-1].points["gripper"]
    assert grippers[0] == grippers[1], "both episodes start from the home pose"
    assert goals[0] != goals[1]


#: Whether a pixel (r, g, b) shows each object colour of the simulator.
_COLOR_TESTS = {"red": lambda r, g, b: r > g + 40 and r > b + 40, "green": lambda r, g, b: g > r + 30 and g > b + 30,
                "blue": lambda r, g, b: b > r + 40 and b > g + 30, "yellow": lambda r, g, b: r > b + 60 and g > b + 60,
                "orange": lambda r, g, b: r > g + 30 and g > b + 10, "purple": lambda r, g, b: r > g + 30 and b > g + 30}


def _camera_depth_ratio(position):
    # Head camera at x = 0.02 looking along +x: image left is +y, scaled by depth.
    return position[1] / (position[0] - 0.02)


def test_each_step_carries_the_hands_height_and_the_last_gripper_command_before_it(collected, tmp_path):
    # What an object_points_hand plan writes: /ee_pose's z when the image was taken, and the gripper
    # command of the step before (a step's own command is the action computed from that image).
    for bag in find_episodes(collected):
        episode = read_episode(bag, ARM)
        heights = {mcap_io.stamp_to_ns(m.message.header.stamp): m.message.pose.position.z
                   for m in mcap_io.read_messages(bag, ["/ee_pose"])}
        assert [s.height for s in episode.steps] == [heights[s.stamp_ns] for s in episode.steps]
        assert 0.0 < min(heights.values()) and max(heights.values()) < 0.6
        assert episode.steps[0].gripper_command is None
        assert [s.gripper_command for s in episode.steps[1:]] == [s.action["gripper"] for s in episode.steps[:-1]]
    samples, _ = robot_samples([collected], ARM, image_size=24, cache_dir=tmp_path / "cache")
    first, second = samples.records[:2]
    assert first["height"] == pytest.approx(read_episode(find_episodes(collected)[0], ARM).steps[0].height)
    assert "gripper_command" not in first and second["gripper_command"] == first["action"]["gripper"]


def test_grounding_points_reach_the_training_examples(collected, tmp_path):
    from rt2_ros.training.collate import MixtureDataset

    samples, _ = robot_samples([collected], ARM, image_size=24, cache_dir=tmp_path / "cache")
    episode = read_episode(find_episodes(collected)[0], ARM)
    first = samples.records[0]
    assert first["points"] == {name: list(point) for name, point in episode.steps[0].points.items()}
    example = MixtureDataset(samples, None, ARM)[0]
    assert example.points == (tuple(first["points"]["goal"]), tuple(first["points"]["gripper"]))


def test_steps_keep_their_points_with_the_goal_and_gripper_and_drop_them_without(tmp_path):
    # Bags collected before the object point was recorded (goal and gripper only) still ground;
    # a step missing the gripper has no usable points.
    image = np.zeros((8, 8, 3), np.uint8)
    tokens = ARM.encode({"terminate": False, "x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0,
                         "yaw": 0.0, "gripper": 1.0})
    writer = EpisodeBagWriter(tmp_path / "ep", ARM)
    writer.instruction("push the red cube", 1)
    for k, points in enumerate(({"goal": (0.1, 0.2), "gripper": (0.3, 0.4)}, {"goal": (0.1, 0.2)})):
        writer.step(image=image, stamp_ns=10 + k * 200_000_000, instruction="push the red cube", tokens=tokens,
                    action=ARM.decode(tokens), control_rate_hz=5.0, ee_position=[0.4, 0.0, 0.1],
                    ee_quaternion=[1, 0, 0, 0], points=points)
    writer.close(EpisodeInfo("push the red cube", success=True, embodiment="rt2_arm", control_rate_hz=5.0))
    steps = read_episode(tmp_path / "ep", ARM).steps
    assert steps[0].points == {"goal": pytest.approx((0.1, 0.2)), "gripper": pytest.approx((0.3, 0.4))}
    assert steps[1].points is None
    with pytest.raises(ConfigError, match="points: expected names among goal, gripper, object, under, reference, "
                                          "got 'elbow'"):
        EpisodeBagWriter(tmp_path / "ep2", ARM).step(
            image=image, stamp_ns=10, instruction="x", tokens=tokens, action=ARM.decode(tokens),
            control_rate_hz=5.0, ee_position=[0.4, 0.0, 0.1], ee_quaternion=[1, 0, 0, 0],
            points={"elbow": (0.5, 0.5)})


def test_grounded_vqa_answers_match_the_scene(collected):
    from rt2_ros.sim.scene import generate_scene

    items = read_vqa_jsonl(collected / "vqa" / "vqa.jsonl")
    records = [json.loads(line) for line in (collected / "vqa" / "vqa.jsonl").read_text().splitlines()]
    assert len(items) == len(records) >= 3 * 6
    kinds = {r["kind"] for r in records}
    assert {"count", "caption", "holding", "point"} <= kinds
    checked = 0
    for record in records:
        image = items[records.index(record)].load()
        assert image.shape == (48, 48, 3)
        if record["kind"] == "holding":
            assert record["answer"] == "nothing" or record["answer"].startswith("the ")
            continue
        scene = generate_scene(record["seed"], attempt=record["attempt"])
        names = scene.names
        question, answer = record["question"], record["answer"]
        if record["kind"] == "count":
            assert answer == str(len(names))
        elif record["kind"] == "exists":
            name = re.fullmatch(r"is there an? (.+) on the table\?", question).group(1)
            assert answer == ("yes" if name in names else "no")
        elif record["kind"] == "shape_of_color":
            color = question.split()[4]
            assert f"{color} {answer}" in names
        elif record["kind"] == "leftmost":
            leftmost = max(scene.objects, key=lambda o: _camera_depth_ratio(o.position))
            assert answer == f"the {leftmost.name}"
        elif record["kind"] == "side":
            name = question.removeprefix("is the ").removesuffix(" on the left or the right?")
            y = scene.object(name).position[1]
            assert answer == ("left" if y > 0 else "right")
        elif record["kind"] == "caption":
            assert all(name in answer for name in names)
        elif record["kind"] == "point":
            name = question.removeprefix("where is the ").removesuffix("?")
            x, y = record["point"]
            assert answer == f"{int(x * 256)} {int(y * 256)}"
            # The point is on the object: its pixel shows the object's colour.
            r, g, b = image[int(y * 48), int(x * 48)].astype(int)
            assert _COLOR_TESTS[scene.object(name).color](r, g, b), (name, (r, g, b))
            assert items[records.index(record)].point == (x, y)
        else:
            continue
        checked += 1
    assert checked >= 6


def test_exclude_objects_keeps_them_out_of_episodes_not_vqa(tmp_path):
    from rt2_ros.training.sim_data import CollectConfig, collect

    summary = collect(tmp_path / "d", CollectConfig(episodes=1, seed=0, image_size=32, max_steps=1,
                                                    exclude_objects=("red", "blue", "green")))
    assert summary["excluded_seeds"] >= 1
    info = read_episode(find_episodes(tmp_path / "d")[0], ARM).info
    assert not any(c in info.instruction for c in ("red", "blue", "green"))
    assert info.success is False, "one step is not enough: the episode is kept and marked failed"
    vqa = (tmp_path / "d" / "vqa" / "vqa.jsonl").read_text()
    assert any(c in vqa for c in ("red", "blue", "green"))


def test_collect_refuses_an_exclude_term_that_matches_no_object(tmp_path, capsys):
    from rt2_ros.training.sim_data import CollectConfig

    code = main(["collect", "--episodes", "1", "--out", str(tmp_path / "d"), "--exclude-objects", "purple, plaid"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--exclude-objects: 'plaid' is no colour" in err[0]
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match=r"exclude_objects\[0\]: expected one of .*got 'Purple'"):
        CollectConfig(episodes=1, exclude_objects=("Purple",))


def test_collect_refuses_a_directory_with_data(collected, capsys):
    code = main(["collect", "--episodes", "1", "--out", str(collected)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "already has data" in err[0]


def write_synthetic_episode(path, steps=4, success=True, seed=0, relabelled=False):
    rng = np.random.default_rng(seed)
    writer = EpisodeBagWriter(path, ARM)
    writer.instruction("pick up the red cube", 10)
    images, tokens = [], []
    for k in range(steps):
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        bins = [int(k == steps - 1)] + [int(v) for v in rng.integers(0, 256, 7)]
        writer.step(image=image, stamp_ns=1_000 + k * 200_000_000, instruction="pick up the red cube",
                    tokens=bins, action=ARM.decode(bins), control_rate_hz=5.0, ee_position=[0.4, 0.0, 0.2],
                    ee_quaternion=[1, 0, 0, 0])
        images.append(image)
        tokens.append(bins)
    writer.close(EpisodeInfo("pick up the red cube", success=success, embodiment="rt2_arm", control_rate_hz=5.0,
                             source="test", relabelled=relabelled))
    return images, tokens


def test_episode_bag_round_trip_and_an_independent_mcap_reader(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    images, tokens = write_synthetic_episode(tmp_path / "ep")
    episode = read_episode(tmp_path / "ep", ARM)
    assert [s.tokens for s in episode.steps] == tokens
    assert all(np.array_equal(s.image, i) for s, i in zip(episode.steps, images))
    assert episode.info.success is True and episode.info.steps == 4
    # The mcap package's own ROS 2 decoder reads the file: schemas and CDR are standard.
    mcap_file = next((tmp_path / "ep").glob("*.mcap"))
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        actions = [m for _, channel, _, m in reader.iter_decoded_messages(topics=["/rt2/action"])]
    assert [list(a.tokens) for a in actions] == tokens
    assert actions[0].embodiment == "rt2_arm" and list(actions[0].dim_names) == ARM.names


def _bag(path, **types):
    """A bag writer with the stack's default topics for the roles given (role=message type)."""
    writer, topics = mcap_io.BagWriter(path), EpisodeTopics()
    for role, msgtype in types.items():
        writer.add_topic(getattr(topics, role), msgtype)
    return writer, topics


def test_actions_without_their_image_are_counted_not_guessed(tmp_path):
    writer, topics = _bag(tmp_path / "ep", camera=mcap_io.IMAGE, action=mcap_io.RT2_ACTION)
    image = np.zeros((8, 8, 3), np.uint8)
    writer.write(topics.camera, 100, mcap_io.image_message(image, 100))
    bins = [0, 1, 2, 3, 4, 5, 6, 7]
    for stamp in (100, 555):  # the second action names an image the bag does not have
        writer.write(topics.action, stamp + 1, mcap_io.rt2_action_message(
            stamp_ns=stamp, instruction="lift the cube", tokens=bins, action=ARM.decode(bins), embodiment=ARM,
            step=0))
    writer.custom_data.update(EpisodeInfo("lift the cube", success=True).to_custom_data())
    writer.close()
    episode = read_episode(tmp_path / "ep", ARM)
    assert len(episode.steps) == 1 and episode.skipped == 1


def test_a_recorded_robots_pose_with_stamps_of_its_own_gives_the_height_before_the_image(tmp_path):
    # rt2-ros record on a robot: /ee_pose at its own rate and stamps, the command after each action.
    writer, topics = _bag(tmp_path / "ep", camera=mcap_io.IMAGE, action=mcap_io.RT2_ACTION,
                          ee_pose=mcap_io.POSE_STAMPED, gripper=mcap_io.FLOAT64)
    bins = [0, 1, 2, 3, 4, 5, 6, 7]
    for k, stamp in enumerate((1_000, 2_000, 3_000)):
        for offset in (-700, -300):   # two poses between images, none at an image's stamp
            writer.write(topics.ee_pose, stamp + offset, mcap_io.pose_stamped_message(
                [0.4, 0.0, (stamp + offset) / 10_000], [1, 0, 0, 0], stamp + offset))
        writer.write(topics.camera, stamp, mcap_io.image_message(np.zeros((8, 8, 3), np.uint8), stamp))
        writer.write(topics.ee_pose, stamp + 100, mcap_io.pose_stamped_message([0.4, 0.0, 0.9], [1, 0, 0, 0],
                                                                              stamp + 100))
        writer.write(topics.action, stamp + 200, mcap_io.rt2_action_message(
            stamp_ns=stamp, instruction="lift the cube", tokens=bins, action=ARM.decode(bins), embodiment=ARM,
            step=k))
        writer.write(topics.gripper, stamp + 300, mcap_io.float64_message(0.25 * (k + 1)))
    writer.custom_data.update(EpisodeInfo("lift the cube", success=True).to_custom_data())
    writer.close()
    episode = read_episode(tmp_path / "ep", ARM)
    assert [s.height for s in episode.steps] == pytest.approx([0.07, 0.17, 0.27])
    assert [s.gripper_command for s in episode.steps] == [None, 0.25, 0.5]


def test_ee_pose_actions_from_a_teleoperated_episode(tmp_path):
    from rt2_ros.sim.rotations import rpy_to_quat

    writer, topics = _bag(tmp_path / "ep", camera=mcap_io.IMAGE, ee_pose=mcap_io.POSE_STAMPED,
                          gripper=mcap_io.FLOAT64, instruction=mcap_io.STRING)
    writer.write(topics.instruction, 1, mcap_io.string_message("push the cube to the left"))
    frame_ns = 1_000_000_000 // 15  # a 15 Hz camera, 5 Hz control: every third frame is a step
    for k in range(10):
        stamp = 10 + k * frame_ns
        writer.write(topics.camera, stamp, mcap_io.image_message(np.full((8, 8, 3), k, np.uint8), stamp))
        writer.write(topics.ee_pose, stamp, mcap_io.pose_stamped_message(
            [0.4 + 0.01 * k, 0.0, 0.2], rpy_to_quat(0.0, 0.0, 0.02 * k), stamp))
        if k == 4:
            writer.write(topics.gripper, stamp, mcap_io.float64_message(1.0))
    writer.custom_data.update(EpisodeInfo("push the cube to the left", success=True, control_rate_hz=5.0)
                              .to_custom_data())
    writer.close()
    episode = read_episode(tmp_path / "ep", ARM)  # auto: no RT2Action -> ee_pose
    frames = [int(s.image[0, 0, 0]) for s in episode.steps]
    assert frames == [0, 3, 6, 9], "steps sampled at the control rate, plus the final terminate"
    expected = [ARM.encode({"terminate": False, "x": 0.03, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0,
                            "yaw": 0.06, "gripper": g}) for g in (0.0, 1.0, 1.0)]
    assert [s.tokens for s in episode.steps[:3]] == expected
    assert episode.steps[-1].tokens[0] == 1 and episode.steps[-1].action["gripper"] == 1.0
    assert episode.steps[0].instruction == "push the cube to the left"
    # The hand's state at each frame: its height, and the last gripper command before it (frame 4's).
    assert [s.height for s in episode.steps] == pytest.approx([0.2] * 4)
    assert [s.gripper_command for s in episode.steps] == [None, None, 1.0, 1.0]


def test_robot_sample_cache_is_built_once_and_filters_outcomes(tmp_path):
    write_synthetic_episode(tmp_path / "eps" / "a", steps=3, seed=1)
    write_synthetic_episode(tmp_path / "eps" / "b", steps=2, success=False, seed=2)
    samples, summary = robot_samples([tmp_path / "eps"], ARM, image_size=16)
    assert summary["used"] == 1 and summary["excluded_by_outcome"] == 1 and len(samples) == 3
    assert samples.image(0).shape == (16, 21, 3), "shorter side shrunk to 16, aspect kept"
    again, _ = robot_samples([tmp_path / "eps"], ARM, image_size=16)
    assert again.path == samples.path and again.records == samples.records
    assert np.array_equal(np.asarray(again.image(2)), np.asarray(samples.image(2)))
    everything, summary = robot_samples([tmp_path / "eps"], ARM, image_size=16, outcomes="all")
    assert len(everything) == 5 and everything.path != samples.path
    assert {r["episode"] for r in everything.records} == {"a", "b"}
    from rt2_ros.errors import ConfigError

    for _ in range(2):  # the second time from the (empty) cache: still refused
        with pytest.raises(ConfigError, match=r"no training samples: 1 episodes, 1 excluded by outcomes='success'"):
            robot_samples([tmp_path / "eps" / "b"], ARM, image_size=16)


def test_vqa_jsonl_errors_name_the_line_and_key(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    good = {"image": "a.png", "question": "what color?", "answer": "black"}
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"image": "a.png", "question": "q"}) + "\n")
    with pytest.raises(VqaError, match=r"vqa.jsonl:2: missing key 'answer'"):
        read_vqa_jsonl(path)
    path.write_text(json.dumps({**good, "image": "missing.png"}) + "\n")
    with pytest.raises(VqaError, match=r"vqa.jsonl:1: image: no such file"):
        read_vqa_jsonl(path)
    path.write_text(json.dumps({**good, "answer": ""}) + "\n")
    with pytest.raises(VqaError, match=r"vqa.jsonl:1: answer: expected a non-empty string"):
        read_vqa_jsonl(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "question": "and  now?"}) + "\n")
    samples = vqa_samples([path], image_size=8)
    assert [r["question"] for r in samples.records] == ["what color?", "and now?"]
    assert samples.records[0]["offset"] == samples.records[1]["offset"], "one image stored once"


def _save_vqa_dataset(path, rows, splits=None):
    """A ``save_to_disk`` directory of (image array, question, answer) rows (a DatasetDict with ``splits``)."""
    import datasets
    from PIL import Image

    datasets.disable_progress_bars()
    features = datasets.Features({"picture": datasets.Image(), "q": datasets.Value("string"),
                                  "answers": datasets.Sequence(datasets.Value("string"))})
    data = datasets.Dataset.from_dict({"picture": [Image.fromarray(image) for image, _, _ in rows],
                                       "q": [q for _, q, _ in rows], "answers": [a for _, _, a in rows]},
                                      features=features)
    if splits:
        data = datasets.DatasetDict({name: data.select(indices) for name, indices in splits.items()})
    data.save_to_disk(str(path))


def test_hf_datasets_directories_become_vqa_samples(tmp_path):
    from rt2_ros.training.vqa_data import is_hf_dataset_dir, iter_vqa_source, read_hf_vqa

    rows = [(np.full((40, 60, 3), 10, np.uint8), "what color is the wall?", ["grey", "gray"]),
            (np.full((40, 60, 3), 200, np.uint8), "is it  bright?", ["yes"])]
    _save_vqa_dataset(tmp_path / "one", rows)
    _save_vqa_dataset(tmp_path / "dict", rows, splits={"train": [0], "validation": [1]})
    columns = {"image_column": "picture", "question_column": "q", "answer_column": "answers"}
    assert is_hf_dataset_dir(tmp_path / "one") and is_hf_dataset_dir(tmp_path / "dict")

    items = read_hf_vqa(tmp_path / "one", **columns)
    assert [(i.question, i.answer) for i in items] == [("what color is the wall?", "grey"), ("is it bright?", "yes")]
    assert items[1].load().shape == (40, 60, 3) and items[1].load().mean() == 200
    validation = iter_vqa_source(tmp_path / "dict", split="validation", **columns)
    assert [i.answer for i in validation] == ["yes"]

    # Through the cache, as `rt2-ros train --vqa DIR --hf-split validation` reads it.
    samples = vqa_samples([tmp_path / "dict"], image_size=20, hf_options={"split": "validation", **columns})
    assert [(r["question"], r["answer"]) for r in samples.records] == [("is it bright?", "yes")]
    assert samples.image(0).shape == (20, 30, 3) and samples.image(0).mean() == 200

    with pytest.raises(VqaError, match=r"dict: split 'test' not found \(splits: train, validation\)"):
        read_hf_vqa(tmp_path / "dict", split="test", **columns)
    with pytest.raises(VqaError, match=r"one: column 'image' not found \(columns: picture, q, answers\)"):
        read_hf_vqa(tmp_path / "one")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{}")
    with pytest.raises(VqaError, match=r"broken: cannot load the dataset"):
        read_hf_vqa(tmp_path / "broken")


def test_train_names_the_hf_columns_it_reads(tmp_path, capsys):
    from rt2_ros.training.trainer import TrainConfig

    _save_vqa_dataset(tmp_path / "one", [(np.zeros((8, 8, 3), np.uint8), "what?", ["that"])])
    code = main(["train", "--out", str(tmp_path / "o"), "--from-scratch", "tiny", "--vqa", str(tmp_path / "one"),
                 "--robot-fraction", "0", "--hf-image-column", "picture", "--hf-question-column", "question",
                 "--hf-answer-column", "answers", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "column 'question' not found (columns: picture, q, answers)" in err[-1]
    with pytest.raises(ConfigError, match="hf_answer_column: expected a non-empty string"):
        TrainConfig(output_dir="x", vqa=("v",), robot_fraction=0.0, from_scratch="tiny", hf_answer_column="")


def test_image_encodings_convert_to_rgb():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    types = mcap_io.typestore().types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                         frame_id="")

    def message(encoding, pixels, step):
        return types[mcap_io.IMAGE](header=header, height=2, width=3, encoding=encoding, is_bigendian=0,
                                    step=step, data=np.ascontiguousarray(pixels).reshape(-1))

    assert np.array_equal(mcap_io.image_to_rgb(message("rgb8", rgb, 9)), rgb)
    assert np.array_equal(mcap_io.image_to_rgb(message("bgr8", rgb[:, :, ::-1], 9)), rgb)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(mcap_io.image_to_rgb(message("rgba8", rgba, 12)), rgb)
    padded = np.zeros((2, 12), np.uint8)  # step larger than width * channels
    padded[:, :9] = rgb.reshape(2, 9)
    assert np.array_equal(mcap_io.image_to_rgb(message("rgb8", padded, 12)), rgb)
    with pytest.raises(mcap_io.BagError, match="image encoding: expected one of .* got '16UC1'"):
        mcap_io.image_to_rgb(message("16UC1", rgb, 9))


def test_action_noise_perturbs_only_the_executed_translation():
    from rt2_ros.training.sim_data import NOISY_STEP_FRACTION, _perturbed

    action = {"terminate": False, "x": 0.049, "y": 0.0, "z": -0.01, "roll": 0.1, "pitch": 0.0,
              "yaw": 0.0, "gripper": 1.0}
    rng = np.random.default_rng(0)
    assert _perturbed(action, ARM, 0.0, rng) is action
    outs = [_perturbed(action, ARM, 0.02, rng) for _ in range(400)]
    moved = [o for o in outs if o is not action]
    assert abs(len(moved) / len(outs) - NOISY_STEP_FRACTION) < 0.08
    for out in moved:
        assert {k: out[k] for k in ("terminate", "roll", "pitch", "yaw", "gripper")} == \
            {k: action[k] for k in ("terminate", "roll", "pitch", "yaw", "gripper")}
        assert all(-0.05 <= out[k] <= 0.05 for k in "xyz"), out
    assert any(out["x"] == 0.05 for out in moved), "clipped to the embodiment's bound"
    assert np.std([out["y"] for out in moved]) == pytest.approx(0.02, rel=0.3)


def test_collect_records_where_the_reference_object_is(tmp_path):
    """A task with a reference object ("move the X near the Y") records the reference's image point at
    every step, on that object (its colour), and the target plan names it once the fingers close."""
    from rt2_ros.training.collate import MixtureDataset
    from rt2_ros.training.sim_data import CollectConfig, collect

    collect(tmp_path / "near", CollectConfig(episodes=1, seed=11, image_size=48, max_steps=60, vqa_scenes=0,
                                             task="move_near"))
    episode = read_episode(find_episodes(tmp_path / "near")[0], ARM)
    assert episode.info.task_kind == "move_near" and len(episode.info.objects) == 2 and episode.info.success
    references = [s.points["reference"] for s in episode.steps]
    x, y = references[0]
    color = next(c for c in _COLOR_TESTS if c in episode.info.objects[1])
    assert _COLOR_TESTS[color](*episode.steps[0].image[int(y * 48), int(x * 48)].astype(int)), episode.info.objects
    # The expert does not move the reference object.
    assert all(r == pytest.approx(references[0], abs=0.01) for r in references)
    samples, _ = robot_samples([tmp_path / "near"], ARM, image_size=48, cache_dir=tmp_path / "cache")
    plans = [MixtureDataset(samples, None, ARM, plan="hand_target_offset")[i].plan for i in range(len(samples))]
    named = {" ".join(p.split()[7:9]) for p in plans}
    closed = [p for p in plans if "closed 1" in p]
    assert closed and all(episode.info.objects[1] in p for p in closed)
    assert named == set(episode.info.objects), plans


def test_collect_with_action_noise_records_the_experts_clean_actions(tmp_path):
    from rt2_ros.training.sim_data import CollectConfig, collect

    base = dict(episodes=1, seed=11, image_size=32, max_steps=12, vqa_scenes=0)
    collect(tmp_path / "clean", CollectConfig(**base))
    collect(tmp_path / "noisy", CollectConfig(**base, action_noise=0.02))
    clean = read_episode(find_episodes(tmp_path / "clean")[0], ARM)
    noisy = read_episode(find_episodes(tmp_path / "noisy")[0], ARM)
    assert json.loads((tmp_path / "noisy" / "collect.json").read_text())["config"]["action_noise"] == 0.02
    frames = [np.stack([s.image for s in e.steps[:10]]) for e in (clean, noisy)]
    assert not np.array_equal(frames[0], frames[1]), "noise moved the executed path"
    # Labels stay the expert's: legal bins, the same as the clean run's on the shared first step.
    assert clean.steps[0].tokens == noisy.steps[0].tokens
    with pytest.raises(Exception, match="action_noise"):
        CollectConfig(episodes=1, action_noise=float("nan"))


def test_collect_random_start_episodes_begin_anywhere_in_view_and_succeed(tmp_path, capsys):
    from rt2_ros.training.sim_data import CollectConfig, collect

    base = dict(episodes=2, seed=20, image_size=32, vqa_scenes=1, questions_per_scene=2)
    home = collect(tmp_path / "home", CollectConfig(**base))
    moved = collect(tmp_path / "moved", CollectConfig(**base, random_start=1.0))
    assert (home["random_starts"], moved["random_starts"]) == (0, 2)
    assert moved["successes"] == moved["episodes"] == 2
    first = {name: [read_episode(path, ARM).steps[0].points["gripper"] for path in find_episodes(tmp_path / name)]
             for name in ("home", "moved")}
    assert np.ptp(np.array(first["home"]), axis=0).max() < 0.01, "home starts all show the gripper in one place"
    offsets = np.abs(np.array(first["moved"]) - np.array(first["home"][0])).max(axis=1)
    assert np.all(offsets > 0.02), offsets
    assert np.ptp(np.array(first["moved"]), axis=0).max() > 0.05, "the starts differ"
    assert np.all((np.array(first["moved"]) >= 0.08) & (np.array(first["moved"]) <= 0.92)), "in view"
    # The scene questions are about the home-start frame either way.
    scene = {name: [r for r in map(json.loads, (tmp_path / name / "vqa" / "vqa.jsonl").read_text().splitlines())
                    if r["kind"] != "holding"] for name in ("home", "moved")}
    assert scene["home"] and scene["home"] == scene["moved"]
    assert (tmp_path / "home" / "vqa" / "images" / "scene_000020.png").read_bytes() == \
        (tmp_path / "moved" / "vqa" / "images" / "scene_000020.png").read_bytes()
    with pytest.raises(ConfigError, match="random_start: expected a number <= 1"):
        CollectConfig(episodes=1, random_start=1.5)
    assert main(["collect", "--episodes", "1", "--out", str(tmp_path / "bad"), "--random-start", "nan"]) == 2
    assert "random_start: expected a finite number" in capsys.readouterr().err


def test_collect_asks_where_the_gripper_is_on_episode_frames(tmp_path):
    from rt2_ros.training.episodes import point_bin
    from rt2_ros.training.sim_data import GRIPPER_QUESTION, CollectConfig, collect

    base = dict(episodes=2, seed=20, image_size=32, vqa_scenes=0, random_start=1.0)
    collect(tmp_path / "plain", CollectConfig(**base))
    summary = collect(tmp_path / "asked", CollectConfig(**base, gripper_questions=3))
    read = lambda name: [json.loads(line) for line in (tmp_path / name / "vqa" / "vqa.jsonl").read_text().splitlines()]  # noqa: E731
    asked, plain = read("asked"), read("plain")
    questions = [r for r in asked if r["kind"] == "gripper_point"]
    assert len(questions) == 6 and summary["vqa_items"] == len(plain) + 6
    assert [r for r in asked if r["kind"] != "gripper_point"] == plain, "the other questions are unchanged"
    episodes = {ep.info.seed: ep for ep in (read_episode(p, ARM) for p in find_episodes(tmp_path / "asked"))}
    for record in questions:
        assert record["question"] == GRIPPER_QUESTION
        index = int(record["image"].rsplit("_", 1)[1].split(".")[0])
        step = episodes[record["seed"]].steps[index]
        assert record["point"] == pytest.approx(list(step.points["gripper"]))
        assert record["answer"] == f"{point_bin(record['point'][0])} {point_bin(record['point'][1])}"
        assert np.array_equal(load_image(tmp_path / "asked" / "vqa" / record["image"]), step.image)
    assert len({(r["seed"], r["image"]) for r in questions}) == 6, "distinct frames"
    with pytest.raises(ConfigError, match="gripper_questions"):
        CollectConfig(episodes=1, gripper_questions=-1)


class _FixedLearner:
    """A stand-in learner: always the same action (one the expert never takes), counts its calls."""

    name = "fixed"

    def __init__(self, action):
        self.action, self.calls, self.resets, self.hands = dict(action), 0, 0, []

    def act(self, image, instruction, hand=None):
        from rt2_ros.policy.base import PolicyOutput

        self.hands.append(hand)

        assert image.dtype == np.uint8 and image.ndim == 3 and instruction
        self.calls += 1
        tokens = ARM.encode(self.action)
        return PolicyOutput(tokens=tokens, action=ARM.decode(tokens), plan="", text="", timings={})

    def reset(self):
        self.resets += 1


# Up and sideways with the gripper closed: the expert's first steps head down to a hover point open.
_WANDER = {"terminate": False, "x": 0.0, "y": 0.03, "z": 0.03, "roll": 0.0, "pitch": 0.0, "yaw": 0.0,
           "gripper": 1.0}


def test_dagger_collect_lets_the_learner_drive_and_records_the_experts_labels(tmp_path):
    from rt2_ros.training.sim_data import CollectConfig, collect

    base = dict(episodes=2, seed=11, image_size=32, max_steps=10, vqa_scenes=0)
    collect(tmp_path / "expert", CollectConfig(**base))
    learner = _FixedLearner(_WANDER)
    summary = collect(tmp_path / "dagger", CollectConfig(**base, expert_share=0.5, learner="fixed"),
                      learner=learner)
    assert learner.resets == 2, "the learner starts every episode afresh"
    assert summary["learner_steps"] == learner.calls and 0 < learner.calls < summary["steps"]
    assert summary["config"]["expert_share"] == 0.5 and summary["config"]["learner"] == "fixed"
    wander = ARM.encode(_WANDER)
    for expert_bag, dagger_bag in zip(find_episodes(tmp_path / "expert"), find_episodes(tmp_path / "dagger")):
        clean, dagger = read_episode(expert_bag, ARM), read_episode(dagger_bag, ARM)
        assert dagger.info.relabelled and dagger.info.source == "sim-dagger" and not clean.info.relabelled
        # The learner's moves took the arm elsewhere; the labels are still the expert's, never the learner's.
        assert clean.steps[0].tokens == dagger.steps[0].tokens
        assert not np.array_equal(np.stack([s.image for s in clean.steps[:8]]),
                                  np.stack([s.image for s in dagger.steps[:8]]))
        assert all(step.tokens != wander for step in dagger.steps)
        assert all(step.points for step in dagger.steps), "grounding points on every step"
    # Deterministic: the same learner and config give the same episodes.
    again = collect(tmp_path / "again", CollectConfig(**base, expert_share=0.5, learner="fixed"),
                    learner=_FixedLearner(_WANDER))
    assert again["learner_steps"] == summary["learner_steps"] and again["steps"] == summary["steps"]
    assert all(hand is None for hand in learner.hands)
    # --hand-state: the learner gets the hand's height and the last command executed (its own
    # closed gripper, or the expert's open one); the same episodes otherwise.
    told = _FixedLearner(_WANDER)
    same = collect(tmp_path / "told", CollectConfig(**base, expert_share=0.5, learner="fixed",
                                                    learner_hand_state=True), learner=told)
    assert same["steps"] == summary["steps"] and len(told.hands) == told.calls
    assert all(0.0 < hand.height_m < 0.6 for hand in told.hands)
    assert {hand.gripper_command for hand in told.hands} <= {None, 0.0, 1.0}
    assert any(hand.gripper_command == 1.0 for hand in told.hands)
    with pytest.raises(ConfigError, match="learner_hand_state: expected False without a learner"):
        CollectConfig(**base, learner_hand_state=True)


def test_a_learner_that_terminates_ends_the_dagger_episode(tmp_path):
    from rt2_ros.training.sim_data import CollectConfig, collect

    learner = _FixedLearner({**_WANDER, "terminate": True})
    summary = collect(tmp_path / "d", CollectConfig(episodes=1, seed=11, image_size=32, max_steps=30,
                                                    vqa_scenes=0, expert_share=0.0, learner="stopper"),
                      learner=learner)
    assert summary["learner_steps"] == learner.calls == 1 and summary["steps"] == 1
    episode = read_episode(find_episodes(tmp_path / "d")[0], ARM)
    assert episode.info.success is False and episode.info.relabelled
    assert episode.steps[0].tokens[0] == 0, "the label is the expert's: not done yet"


def test_relabelled_episodes_pass_the_outcome_filter(tmp_path):
    write_synthetic_episode(tmp_path / "eps" / "ok", steps=3, seed=1)
    write_synthetic_episode(tmp_path / "eps" / "failed", steps=2, success=False, seed=2)
    write_synthetic_episode(tmp_path / "eps" / "dagger", steps=2, success=False, seed=3, relabelled=True)
    samples, summary = robot_samples([tmp_path / "eps"], ARM, image_size=16)
    assert summary["used"] == 2 and summary["excluded_by_outcome"] == 1 and summary["relabelled"] == 1
    assert {r["episode"] for r in samples.records} == {"ok", "dagger"}
    info = read_episode(tmp_path / "eps" / "dagger", ARM).info
    assert info.relabelled and info.success is False


def test_dagger_settings_are_checked(tmp_path, capsys):
    from rt2_ros.training.sim_data import CollectConfig, collect

    with pytest.raises(ConfigError, match=r"expert_share: expected 1.0 without a learner .*got 0.5"):
        CollectConfig(episodes=1, expert_share=0.5)
    with pytest.raises(ConfigError, match=r"expert_share: expected < 1 with a learner"):
        CollectConfig(episodes=1, learner="ckpt")
    with pytest.raises(ConfigError, match="expert_share: expected a finite number"):
        CollectConfig(episodes=1, expert_share=float("nan"), learner="ckpt")
    with pytest.raises(ConfigError, match="needs a learner policy"):
        collect(tmp_path / "x", CollectConfig(episodes=1, vqa_scenes=0, expert_share=0.5, learner="ckpt"))
    assert main(["collect", "--episodes", "1", "--out", str(tmp_path / "y"), "--expert-share", "0.5"]) == 2
    assert "expert_share: expected 1.0 without a learner" in capsys.readouterr().err


def test_collect_cli_runs_dagger_with_a_checkpoint(tiny_paligemma_dir, tmp_path, capsys):
    out = tmp_path / "d"
    # One thread: what the suite runs with anyway (conftest), so the process-wide setting is unchanged.
    code = main(["collect", "--episodes", "1", "--seed", "11", "--out", str(out), "--image-size", "32",
                 "--max-steps", "6", "--vqa-scenes", "0", "--policy-model", str(tiny_paligemma_dir),
                 "--device", "cpu", "--decoding", "median", "--threads", "1"])
    assert code == 0
    assert "rt2-ros collect: 1 torch intra-op thread(s)" in capsys.readouterr().err
    summary = json.loads((out / "collect.json").read_text())
    assert summary["config"]["expert_share"] == 0.5, "the default share with a learner"
    assert summary["config"]["learner"] == str(tiny_paligemma_dir)
    assert summary["learner_steps"] + summary["learner_errors"] > 0
    assert read_episode(find_episodes(out)[0], ARM).info.relabelled
    # A negative count is refused before anything is collected.
    assert main(["collect", "--episodes", "1", "--out", str(tmp_path / "e"), "--policy-model",
                 str(tiny_paligemma_dir), "--threads", "-1"]) == 2
    assert "--threads: expected an integer >= 0 (0: torch's default), got -1" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_each_robot_source_keeps_its_own_cache_and_its_episode_names(tmp_path):
    images_one, _ = write_synthetic_episode(tmp_path / "one" / "ep", steps=3, seed=1)
    images_two, _ = write_synthetic_episode(tmp_path / "two" / "ep", steps=2, seed=2)
    alone, _ = robot_samples([tmp_path / "one"], ARM, image_size=16)
    built = (alone.path / "manifest.json").stat().st_mtime_ns
    both, summary = robot_samples([tmp_path / "one", tmp_path / "two"], ARM, image_size=16)
    assert summary["caches"][0] == str(alone.path), "adding a source reuses the other's cache"
    assert (alone.path / "manifest.json").stat().st_mtime_ns == built
    assert summary["used"] == 2 and summary["samples"] == 5 and len(both) == 5
    # Same relative names in two sources stay two episodes (held-out splits go by name).
    assert [r["episode"] for r in both.records] == ["one/ep"] * 3 + ["two/ep"] * 2
    assert np.array_equal(both.image(1), alone.image(1))
    picked = both.subset([4, 0])
    expected = robot_samples([tmp_path / "two"], ARM, image_size=16)[0].image(1)
    assert np.array_equal(picked.image(0), expected) and np.array_equal(picked.image(1), alone.image(0))
    with pytest.raises(ConfigError, match=r"data: no episode bags .* under .*empty"):
        (tmp_path / "empty").mkdir()
        robot_samples([tmp_path / "one", tmp_path / "empty"], ARM, image_size=16)


def test_older_episodes_get_the_reference_point_from_their_regenerated_scene(tmp_path, monkeypatch, capsys):
    """scripts/add_reference_points.py: episodes collected without the reference point get the one the
    collector records now (the scene regenerated from the seed), one-object tasks are copied as they
    are, and a collection whose scenes do not regenerate the episodes' instructions is refused."""
    import importlib.util
    from pathlib import Path

    from rt2_ros.training import sim_data
    from rt2_ros.training.sim_data import CollectConfig, collect

    spec = importlib.util.spec_from_file_location(
        "add_reference_points", Path(__file__).resolve().parents[1] / "scripts" / "add_reference_points.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = CollectConfig(episodes=3, seed=11, image_size=48, max_steps=60, vqa_scenes=0)
    collect(tmp_path / "now", config)
    recorded = sim_data._grounding_points
    monkeypatch.setattr(sim_data, "_grounding_points", lambda *a: {
        k: v for k, v in recorded(*a).items() if k != "reference"})
    collect(tmp_path / "before", config)
    monkeypatch.undo()
    assert tool.main([str(tmp_path / "before"), str(tmp_path / "added")]) == 0
    counts = json.loads(capsys.readouterr().out)
    now, before, added = ([read_episode(b, ARM) for b in find_episodes(tmp_path / d)]
                          for d in ("now", "before", "added"))
    two = [k for k, e in enumerate(now) if len(e.info.objects) == 2]
    assert two and counts == {"episodes": 3, "with_reference": len(two), "copied_as_they_were": 3 - len(two)}
    for k in range(3):
        assert all("reference" not in s.points for s in before[k].steps)
        assert [s.tokens for s in added[k].steps] == [s.tokens for s in before[k].steps]
        assert mcap_io.read_custom_data(find_episodes(tmp_path / "added")[k]) == mcap_io.read_custom_data(
            find_episodes(tmp_path / "before")[k])
        if k in two:
            # Where the object was placed: the collector's own point at the first step, and within a
            # hair of it later (the expert does not move the reference object).
            assert added[k].steps[0].points["reference"] == pytest.approx(now[k].steps[0].points["reference"],
                                                                          abs=1e-9)
            assert all(a.points["reference"] == pytest.approx(n.points["reference"], abs=0.01)
                       for a, n in zip(added[k].steps, now[k].steps))
            assert {n: p for n, p in added[k].steps[5].points.items() if n != "reference"} == \
                before[k].steps[5].points
        else:
            assert all("reference" not in s.points for s in added[k].steps)
    assert tool.main([str(tmp_path / "before"), str(tmp_path / "added")]) == 2
    assert "already exists" in capsys.readouterr().err
    report = json.loads((tmp_path / "before" / "collect.json").read_text())
    report["config"]["task"] = "pick"   # the scenes then give other tasks
    (tmp_path / "before" / "collect.json").write_text(json.dumps(report))
    assert tool.main([str(tmp_path / "before"), str(tmp_path / "other")]) == 2
    assert "the episode says" in capsys.readouterr().err
