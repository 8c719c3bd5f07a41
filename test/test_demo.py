"""`rt2-ros demo`: the recorded closed loop, its outputs, and that it always cleans up.

* pure pieces: matching twists to actions (clamps), the camera projection, the annotated video,
  the plot, the default-policy switch, argument errors;
* `rt2-ros demo --short` end to end (sim + stack + expert): video, plot, summary.json;
* Ctrl-C in the middle and a policy that cannot load: nothing is left running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ros_harness import REPO, next_domain_id, requires_ros, ros_env


def _action(step, recv, dx=0.0, terminate=False):
    from rt2_ros.demo.records import ActionRecord

    return ActionRecord(recv=recv, stamp=recv - 0.05, step=step, tokens=(0,) * 8, terminate=terminate,
                        delta_position=(dx, 0.0, 0.0), delta_rotation=(0.0, 0.0, 0.0), gripper=0.0,
                        inference_ms=1.0)


def test_applied_steps_finds_each_actions_twist_and_flags_clamps():
    from rt2_ros.demo.records import TwistRecord, applied_steps

    actions = [_action(0, 10.0, 0.01), _action(1, 10.2, 0.05), _action(2, 10.4, terminate=True)]
    zero = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    twists = [TwistRecord(9.99, *zero),                              # before the first action
              TwistRecord(10.001, (0.05, 0.0, 0.0), (0.0, 0.0, 0.0)),   # 1 cm * 5 Hz: as requested
              TwistRecord(10.15, *zero),                             # hold expired
              TwistRecord(10.201, (0.2, 0.0, 0.0), (0.0, 0.0, 0.0)),    # 5 cm * 5 Hz = 0.25 -> clamped to 0.2
              TwistRecord(10.401, *zero)]
    steps = applied_steps(actions, twists, 5.0)
    assert [s.clamped for s in steps] == [False, True, False]
    assert steps[0].applied[0] == pytest.approx(0.01) and steps[1].applied[0] == pytest.approx(0.04)
    assert applied_steps(actions[:1], [], 5.0)[0].applied is None


def test_camera_model_projects_base_points_to_pixels():
    from rt2_ros.demo.records import CameraModel

    # Optical frame at (0, 0, 1) looking straight down (-z of the base): x right, y "down" = -y base.
    camera = CameraModel(100.0, 100.0, 50.0, 40.0, (0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 0.0))
    assert camera.project((0.0, 0.0, 0.0)) == pytest.approx((50.0, 40.0))
    assert camera.project((0.1, 0.0, 0.0)) == pytest.approx((60.0, 40.0))
    assert camera.project((0.0, 0.1, 0.0)) == pytest.approx((50.0, 30.0))
    assert camera.project((0.0, 0.0, 2.0)) is None  # behind the camera


def test_annotated_video_and_plot_are_written(tmp_path):
    from rt2_ros.demo.plot import write_plot
    from rt2_ros.demo.records import CameraModel, FrameRecord, applied_steps
    from rt2_ros.demo.video import VideoWriter, annotate, video_format

    rng = np.random.default_rng(0)
    camera = CameraModel(100.0, 100.0, 31.5, 23.5, (0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 0.0))
    actions = [_action(i, 10.0 + 0.2 * i, 0.01) for i in range(4)] + [_action(4, 10.8, terminate=True)]
    frames = [FrameRecord(recv=10.0 + 0.1 * i, stamp=10.0 + 0.1 * i,
                          image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
                          action=actions[min(i // 2, 4)] if i else None, ee_position=(0.0, 0.0, 0.2),
                          gripper_closedness=0.5, gripper_command=1.0, camera=camera, success=i > 8)
              for i in range(10)]
    first = annotate(frames[0], "pick up the red cube", "expert (privileged-state reference)", scale=3)
    assert first.shape[0] % 16 == 0 and first.shape[1] % 16 == 0 and first.shape[0] > 48 * 3
    arrow = annotate(frames[3], "pick up the red cube", "expert", scale=3)
    assert (arrow[:144, :192] != cv2_resize(frames[3].image, 3)).any()  # something drawn on the view
    writer = VideoWriter(tmp_path / "episode", "pick up the red cube", "expert", fps=10.0, hold_s=0.5)
    for frame in frames:
        writer.add(frame)
    path = writer.close(True, "terminated after 5 steps")
    assert path == tmp_path / f"episode.{video_format()}" and path.stat().st_size > 1000
    assert writer.frames == 10 + 5 and not writer.error
    import imageio.v2 as imageio

    if path.suffix == ".mp4":
        assert imageio.get_reader(str(path)).count_frames() == 15
    plot = write_plot(tmp_path / "plot.png", actions, applied_steps(actions, [], 5.0),
                      title="test", subtitle="policy: expert")
    image = imageio.imread(plot)
    assert image.shape[0] > 500 and image.std() > 10
    empty = write_plot(tmp_path / "empty.png", [], [], title="no actions", subtitle="")
    assert empty.stat().st_size > 1000


def test_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    from PIL import Image

    from rt2_ros.demo import video
    from rt2_ros.demo.records import FrameRecord

    monkeypatch.setattr(video, "video_format", lambda: "gif")
    writer = video.VideoWriter(tmp_path / "episode", "push the red cube to the left", "expert", fps=10.0,
                               hold_s=0.2)
    for i in range(3):
        writer.add(FrameRecord(recv=float(i), stamp=float(i), image=np.full((48, 64, 3), 40 * i, np.uint8)))
    path = writer.close(False, "max_steps after 3 steps")
    assert path == tmp_path / "episode.gif"
    with Image.open(path) as gif:
        assert gif.size == (96, 128)  # half of (3 x 48 + the 112 px status band) by 3 x 64
        durations = []
        for index in range(gif.n_frames):  # Pillow merges the identical held frames
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert sum(durations) == 500  # 3 frames + 0.2 s of verdict at 10 fps, 100 ms each


def cv2_resize(image, scale):
    import cv2

    return cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_LINEAR)


def test_default_policy_is_the_bundled_model_once_there_else_the_labelled_expert(tmp_path):
    from rt2_ros.demo import EXPERT_LABEL, default_policy, policy_label

    assert default_policy(tmp_path / "none") == ("expert", "")
    assert policy_label("expert") == EXPERT_LABEL and "not a learned model" in EXPERT_LABEL
    (tmp_path / "rt2_ros.json").write_text("{}")
    assert default_policy(tmp_path) == ("transformers", str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--backend", "transformers"], "--model: the transformers backend needs a checkpoint directory"),
    (["--task", "fly to the moon"], "is neither a task kind (pick, move_near, push, place_on, random)"),
    (["--max-steps", "0"], "--max-steps: expected an integer in 1..100000, got 0"),
    (["--backend", "scripted"], "--scripted-actions: the scripted backend needs a file"),
    (["--timeout", "nan"], "--timeout: expected a number of seconds > 0, got nan"),
])
def test_bad_demo_arguments_are_one_line_errors(args, message):
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "demo", *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


# ----------------------------------------------------------------------------- end to end


def _demo_env(marker: str) -> dict[str, str]:
    env = ros_env(next_domain_id(), {"RT2_TEST_MARKER": marker})
    return env


def _marked_processes(marker: str) -> list[str]:
    """Command lines of live processes whose environment carries ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if f"RT2_TEST_MARKER={marker}".encode() in environ.split(b"\0"):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
                if state != "Z":
                    found.append(f"{pid}: {cmdline}")
        except OSError:
            continue
    return found


@requires_ros
@pytest.mark.ros
@pytest.mark.slow
def test_short_demo_writes_the_video_the_plot_and_the_summary(tmp_path):
    from rt2_ros.demo.records import SUMMARY_KEYS
    from rt2_ros.demo.video import video_format

    marker = uuid.uuid4().hex
    out = tmp_path / "demo_out"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "demo", "--short", "--backend", "expert",
                           "--out", str(out)],
                          env=_demo_env(marker), cwd=str(REPO), capture_output=True, text=True,
                          timeout=240)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert _marked_processes(marker) == []
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["success"] is True and line["privileged"] is True
    assert "policy: expert (privileged-state reference, not a learned model)" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["success"] is True and summary["terminated"] is True
    assert summary["task"]["kind"] == "pick" and summary["instruction"]
    assert summary["backend"] == "expert" and summary["privileged"] is True
    assert "not a learned model" in summary["policy"]
    assert 10 <= summary["steps"] <= 60
    assert 2.0 <= summary["hz_achieved"] <= 5.5  # 5 Hz asked; less on a loaded machine
    assert 0 < summary["latency_ms"]["image_to_action"]["median"] < 500
    assert summary["sim"]["render_ms"]["median"] is not None
    assert summary["exit_codes"] == {"stack": 0, "sim_node": 0}
    video = Path(summary["files"]["video"])
    assert video == out / f"episode.{video_format()}" and video.stat().st_size > 10_000
    import imageio.v2 as imageio

    plot = imageio.imread(summary["files"]["plot"])
    assert plot.shape[1] >= 900
    frame = imageio.imread(summary["files"]["last_frame"])
    assert frame.shape == (784, 672, 3)
    assert (out / "logs" / "sim_node.log").read_text().count("Traceback") == 0
    assert "Traceback" not in (out / "logs" / "stack.log").read_text()
    print(f"short demo: {wall:.1f} s wall, {summary['hz_achieved']} Hz, latency "
          f"{summary['latency_ms']['image_to_action']}")


@requires_ros
@pytest.mark.ros
@pytest.mark.slow
def test_ctrl_c_stops_the_demo_and_everything_it_started(tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "demo_out"
    process = subprocess.Popen([sys.executable, "-m", "rt2_ros.cli", "demo", "--task", "place_on",
                                "--out", str(out)], env=_demo_env(marker), cwd=str(REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while "new goal" not in _read(out / "logs" / "stack.log", process):  # the episode started
            assert time.monotonic() < deadline, "the episode did not start"
            time.sleep(0.1)
        time.sleep(1.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == "interrupted" and summary["steps"] >= 1
    assert Path(summary["files"]["plot"]).is_file()
    time.sleep(0.5)
    assert _marked_processes(marker) == []


def _read(path: Path, process) -> str:
    assert process.poll() is None, "the demo ended early"
    return path.read_text(errors="replace") if path.exists() else ""


@requires_ros
@pytest.mark.ros
def test_a_policy_that_cannot_load_fails_the_demo_with_its_log_and_leaves_nothing(tmp_path):
    marker = uuid.uuid4().hex
    empty = tmp_path / "not_a_checkpoint"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "demo", "--backend", "transformers",
                           "--model", str(empty), "--out", str(tmp_path / "out")],
                          env=_demo_env(marker), cwd=str(REPO), capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stack exited with code" in done.stderr and "policy_node" in done.stderr
    assert "Traceback" not in done.stderr
    assert _marked_processes(marker) == []
