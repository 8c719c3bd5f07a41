"""The whole stack over DDS with the scripted backend: real processes, exact commands.

One stack per module (started through `rt2-ros up`): a camera process, the
stack, a process playing the arm controller that records what arrives, and a
driver node in the test process (instructions, images, the enable service).
The tests run in file order and share the stack.
"""
from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from ros_harness import REPO, ProcessGroup, next_domain_id, requires_ros, ros_env

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow]

RATE_HZ = 10.0
ACTION_TIMEOUT_S = 0.4
MAX_LINEAR = 0.2
MAX_ANGULAR = 1.0
EXACT = "0 153 102 128 153 128 128 255"      # x +1 cm, y -1 cm, roll +0.05 rad, gripper closed
CLAMPED = "0 255 128 128 0 128 128 0"        # x +5 cm (0.5 m/s), roll -0.25 rad (-2.5 rad/s)
MOVE = "0 140 128 128 128 128 128 255"
TERMINATE = "1 128 128 128 128 128 128 255"
SCRIPT = [EXACT, CLAMPED] + [MOVE] * 12 + [TERMINATE]


def _tokens(text):
    return [int(t) for t in text.split()]


def _requested_twist(text):
    """linear = delta * control_rate_hz (DESIGN section 7), before any clamp."""
    from rt2_ros.action_language import load_embodiment

    action = load_embodiment("rt2_arm").decode(_tokens(text))
    linear = [action[k] * RATE_HZ for k in ("x", "y", "z")]
    angular = [action[k] * RATE_HZ for k in ("roll", "pitch", "yaw")]
    return linear, angular, action["gripper"]


def _clamped(vector, limit):
    """Per-axis clamp, then scale the vector to the norm limit (the safety contract)."""
    axis = [min(limit, max(-limit, v)) for v in vector]
    norm = math.sqrt(sum(v * v for v in axis))
    return [v * limit / norm for v in axis] if norm > limit else axis


def _nonzero(twist):
    return any(twist["linear"]) or any(twist["angular"])


def _distinct_commands(twists):
    """Consecutive runs of equal non-zero twists, as one entry each."""
    out = []
    for t in twists:
        key = (tuple(t["linear"]), tuple(t["angular"]))
        if _nonzero(t) and (not out or out[-1][0] != key):
            out.append((key, t))
    return [t for _, t in out]


class Stack:
    def __init__(self, group, driver, recording, pause_file, up):
        self.group, self.driver, self.recording = group, driver, recording
        self.pause_file, self.up = pause_file, up

    def actions(self, instruction, since=0.0):
        return [a for a in self.recording.entries("action", since)
                if a["instruction"] == instruction]

    def wait_actions(self, instruction, count, since, timeout=20.0):
        return self.recording.wait_for(
            lambda r: len(self.actions(instruction, since)) >= count and
            self.actions(instruction, since), timeout, f"{count} actions for {instruction!r}")

    def last_diagnostics(self, node, since=0.0):
        statuses = self.recording.diagnostics(node, since)
        return statuses[-1] if statuses else None

    def wait_diagnostics(self, node, check, since, timeout=10.0, what=""):
        return self.recording.wait_for(
            lambda r: next((d for d in reversed(r.diagnostics(node, since)) if check(d)), None),
            timeout, what or f"{node} diagnostics")

    def instruct_cli(self, *args, timeout=60.0):
        return subprocess.run([sys.executable, "-m", "rt2_ros.cli", "instruct", *args],
                              env=ros_env(self.group.domain_id), cwd=str(REPO),
                              capture_output=True, text=True, timeout=timeout)

    def log(self):
        return self.group.log("up")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from stack_peers import Driver, Recording

    tmp = tmp_path_factory.mktemp("scripted_stack")
    script = tmp / "script.txt"
    script.write_text("# test script\n" + "\n".join(SCRIPT) + "\n")
    group = ProcessGroup(next_domain_id(), tmp)
    saved = {k: os.environ.get(k) for k in ros_env(0)}
    os.environ.update({k: v for k, v in ros_env(group.domain_id).items()
                       if k in ("FASTDDS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION")})
    driver = None
    try:
        recording = Recording(tmp / "record.jsonl")
        pause = tmp / "camera.pause"
        group.start("record", ["test/stack_peers.py", "record", str(recording.path)])
        group.start("camera", ["test/stack_peers.py", "camera", "--rate", "30",
                               "--pause-file", str(pause)])
        up = group.start("up", [
            "-m", "rt2_ros.cli", "up", "--backend", "scripted", "--scripted-actions", str(script),
            "--set", f"control_rate_hz={RATE_HZ}",
            "--set", "policy_node.max_image_age_s=0.3",
            "--set", "policy_node.diagnostics_period_s=0.2",
            "--set", "safety_node.publish_rate_hz=50",
            "--set", f"safety_node.action_timeout_s={ACTION_TIMEOUT_S}",
            "--set", f"safety_node.max_linear_speed={MAX_LINEAR}",
            "--set", f"safety_node.max_angular_speed={MAX_ANGULAR}",
            "--set", "safety_node.max_step_change=2.0",
            "--set", "safety_node.diagnostics_period_s=0.2"])
        driver = Driver(group.domain_id)
        stack = Stack(group, driver, recording, pause, up)
        try:
            for node in ("policy_node", "safety_node"):
                recording.wait_for(lambda r: r.diagnostics(node), 90, f"{node} to come up")
        except AssertionError:
            raise AssertionError("stack did not come up:\n" + stack.log())
        yield stack
    finally:
        if driver is not None:
            driver.close()
        group.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_disabled_until_the_enable_service(stack):
    start = time.time()
    stack.driver.instruct("nudge the block")
    stack.wait_actions("nudge the block", 3, start)
    twists = stack.recording.entries("twist", start)
    assert twists and not any(_nonzero(t) for t in twists)
    assert stack.recording.entries("gripper", start) == []  # no applied action yet
    status = stack.wait_diagnostics(
        "safety_node", lambda d: int(d["values"]["actions.ignored_disabled"]) >= 3, start)
    assert status["values"]["state"] == "disabled"
    assert "rt2/safety/enable" in status["message"]

    response = stack.driver.enable(True)
    assert response.success and response.message == "enabled"
    assert stack.driver.enable(True).message == "already enabled"


def test_exact_twists_clamps_and_terminate(stack):
    # With the camera paused the instruction reaches the safety node before the
    # policy can act on it (an instruction arriving after the episode's first
    # action restarts the safety episode and drops that action's twist).
    stack.pause_file.touch()
    time.sleep(0.4)  # the newest image is now older than max_image_age_s (0.3 s)
    stack.driver.instruct("push the red block")
    time.sleep(0.3)
    start = time.time()
    stack.pause_file.unlink()
    actions = stack.wait_actions("push the red block", len(SCRIPT), start)
    assert [a["tokens"] for a in actions] == [_tokens(line) for line in SCRIPT]
    assert [a["step"] for a in actions] == list(range(len(SCRIPT)))
    assert actions[-1]["terminate"] and not any(a["terminate"] for a in actions[:-1])
    assert actions[0]["backend"] == "scripted" and actions[0]["embodiment"] == "rt2_arm"
    assert actions[0]["dim_names"] == ["terminate", "x", "y", "z", "roll", "pitch", "yaw",
                                       "gripper"]
    time.sleep(ACTION_TIMEOUT_S + 0.2)

    commands = _distinct_commands(stack.recording.entries("twist", start))
    linear, angular, _ = _requested_twist(EXACT)
    first = commands[0]
    assert first["frame"] == "base_link"
    assert first["linear"] == pytest.approx(linear, abs=1e-12)    # 0.1, -0.1, 0.00196 m/s
    assert first["angular"] == pytest.approx(angular, abs=1e-12)  # 0.5, 0.0098, 0.0098 rad/s
    assert first["linear"][0] == pytest.approx(0.1) and first["angular"][0] == pytest.approx(0.5)

    linear, angular, _ = _requested_twist(CLAMPED)               # 0.5 m/s, -2.5 rad/s requested
    second = commands[1]
    assert second["linear"] == pytest.approx(_clamped(linear, MAX_LINEAR), abs=1e-12)
    assert second["angular"] == pytest.approx(_clamped(angular, MAX_ANGULAR), abs=1e-12)
    assert math.hypot(*second["linear"]) == pytest.approx(MAX_LINEAR)

    grippers = [g["value"] for g in stack.recording.entries("gripper", start)]
    assert grippers[0] == 1.0 and 0.0 in grippers and grippers[-1] == 1.0

    # terminate -> zero twist from then on, episode closed.
    terminate_at = actions[-1]["recv"]
    after = stack.recording.entries("twist", terminate_at + 0.25)  # the last move's hold is over
    assert after and not any(_nonzero(t) for t in after)
    status = stack.wait_diagnostics("safety_node", lambda d: d["values"]["state"] == "terminated",
                                    terminate_at)
    assert status["values"]["episode.closed"] == "true"
    assert int(status["values"]["clamps.axis_linear"]) >= 1
    assert int(status["values"]["clamps.norm_linear"]) >= 1
    assert int(status["values"]["clamps.axis_angular"]) >= 1
    # A stamp of "now", not of the image.
    assert all(abs(t["stamp"] - t["recv"]) < 0.5 for t in after)


def test_instruct_cli_runs_a_goal_to_terminate(stack):
    done = stack.instruct_cli("stack the cups")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    feedback, result = lines[:-1], lines[-1]["result"]
    assert [f["step"] for f in feedback] == list(range(len(SCRIPT)))
    assert feedback[0]["tokens"] == _tokens(EXACT) and feedback[-1]["terminate"]
    assert result == {"terminated": True, "steps": len(SCRIPT), "reason": "terminated",
                      "status": "succeeded"}


def test_instruct_cli_max_steps_and_the_watchdog(stack):
    done = stack.instruct_cli("wipe the table", "--max-steps", "3")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout.splitlines()[-1])["result"]
    assert result == {"terminated": False, "steps": 3, "reason": "max_steps", "status": "aborted"}
    last = stack.actions("wipe the table")[-1]
    time.sleep(ACTION_TIMEOUT_S + 0.3)
    assert len(stack.actions("wipe the table")) == 3
    after = stack.recording.entries("twist", last["recv"] + ACTION_TIMEOUT_S)
    assert after and not any(_nonzero(t) for t in after)
    stack.wait_diagnostics("safety_node", lambda d: d["values"]["state"] == "watchdog",
                           last["recv"] + ACTION_TIMEOUT_S)


def test_the_documented_client_node_works(stack, tmp_path):
    text = (REPO / "docs" / "ros_stack.md").read_text()
    block = text.split("From another ROS node:", 1)[1].split("```python\n", 1)[1].split("```")[0]
    script = tmp_path / "my_task.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], env=ros_env(stack.group.domain_id),
                          cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"True {len(SCRIPT)} terminated"
    assert lines[:-1] == [f"step {i}" for i in range(len(SCRIPT))]


def test_goal_timeout_and_cancel(stack):
    done = stack.instruct_cli("sort the blocks", "--timeout", "0.5")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout.splitlines()[-1])["result"]
    assert result["reason"] == "timeout" and result["status"] == "aborted", done.stdout
    assert 1 <= result["steps"] < len(SCRIPT), done.stdout

    process = subprocess.Popen([sys.executable, "-m", "rt2_ros.cli", "instruct", "fold the cloth"],
                               env=ros_env(stack.group.domain_id), cwd=str(REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(process.stdout.readline())["step"] == 0
        process.send_signal(2)  # Ctrl-C: cancel the goal
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    result = json.loads(out.splitlines()[-1])["result"]
    assert result["reason"] == "canceled" and result["status"] == "canceled", out
    assert not result["terminated"] and result["steps"] < len(SCRIPT), out


def test_a_new_instruction_preempts_a_goal(stack):
    process = subprocess.Popen([sys.executable, "-m", "rt2_ros.cli", "instruct", "open the drawer"],
                               env=ros_env(stack.group.domain_id), cwd=str(REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=30))
        assert first["step"] == 0
        start = time.time()
        stack.driver.instruct("close the drawer")
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    output = []
    while not lines.empty():
        output.append(json.loads(lines.get()))
    result = output[-1]["result"]
    assert process.returncode == 1
    assert result["reason"] == "preempted" and not result["terminated"]
    assert result["steps"] < len(SCRIPT)
    # The new instruction starts its own episode from the script's first line.
    new = stack.wait_actions("close the drawer", 2, start)
    assert [a["step"] for a in new[:2]] == [0, 1] and new[0]["tokens"] == _tokens(EXACT)
    late = [a for a in stack.actions("open the drawer") if a["recv"] > new[0]["recv"]]
    assert late == []

    # A new goal pre-empts a running goal the same way.  The camera pauses so
    # the first goal cannot finish its script before the second one arrives.
    def instruct(*args):
        return subprocess.Popen([sys.executable, "-m", "rt2_ros.cli", "instruct", *args],
                                env=ros_env(stack.group.domain_id), cwd=str(REPO),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = instruct("water the plant")
    second = None
    try:
        assert json.loads(first.stdout.readline())["step"] == 0
        stack.pause_file.touch()
        second = instruct("feed the cat", "--max-steps", "2")
        out, err = first.communicate(timeout=30)
        assert first.returncode == 1, out + err
        assert json.loads(out.splitlines()[-1])["result"]["reason"] == "preempted", out
        stack.pause_file.unlink()
        out, err = second.communicate(timeout=30)
        assert second.returncode == 1, out + err
        assert json.loads(out.splitlines()[-1])["result"]["reason"] == "max_steps", out
    finally:
        stack.pause_file.unlink(missing_ok=True)
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()


def test_camera_stops_image_too_old_watchdog_and_recovery(stack):
    start = time.time()
    stack.driver.instruct("slide the cup")
    stack.wait_actions("slide the cup", 2, start)
    stack.pause_file.touch()
    try:
        paused = time.time()
        time.sleep(0.3 + ACTION_TIMEOUT_S + 0.4)
        actions = stack.actions("slide the cup")
        last = actions[-1]
        # Images taken before the pause may still be used while younger than
        # max_image_age_s; then nothing is acted on.
        assert all(a["stamp"] <= paused for a in actions)
        after = stack.recording.entries("twist", last["recv"] + ACTION_TIMEOUT_S)
        assert after and not any(_nonzero(t) for t in after)
        stack.wait_diagnostics("safety_node", lambda d: d["values"]["state"] == "watchdog", paused)
        status = stack.wait_diagnostics(
            "policy_node", lambda d: "no new camera image" in d["values"]["waiting"], paused)
        assert status["level"] == 1  # WARN
    finally:
        stack.pause_file.unlink()
    resumed = time.time()
    stack.wait_actions("slide the cup", 2, resumed)  # the same episode goes on


def test_bad_images_are_reported_once_and_not_acted_on(stack):
    stack.pause_file.touch()
    try:
        time.sleep(0.5)
        start = time.time()
        stack.driver.instruct("lift the lid")
        bad_images = [dict(encoding="yuv422", width=4, height=4), dict(width=0, height=4),
                      dict(width=4, height=4, step=11), dict(width=4, height=4, size=47)]
        for _ in range(3):  # each cause several times: logged once all the same
            for image in bad_images:
                stack.driver.image(**image)
                time.sleep(0.05)  # keep-last-1 subscription: one at a time
        stack.wait_diagnostics("policy_node",
                               lambda d: int(d["values"]["frames.rejected"]) >= 8, start)
        log = stack.log()
        for words in ("unsupported encoding 'yuv422'", "zero size (height 4, width 0)",
                      "step 11 is smaller than one row", "data holds 47 bytes"):
            assert log.count(words) == 1, (words, log[-3000:])
        assert "[policy_node]" in log
        assert stack.actions("lift the lid") == []
        twists = stack.recording.entries("twist", start + 0.1)
        assert twists and not any(_nonzero(t) for t in twists)
    finally:
        stack.pause_file.unlink()
    stack.wait_actions("lift the lid", 2, start)  # good images again: the stack acts


def test_empty_and_huge_instructions_are_refused(stack):
    start = time.time()
    stack.driver.instruct("")
    time.sleep(0.3)  # depth-1 topic: a second message right away would replace the first
    stack.driver.instruct("x" * 1_000_000)
    status = stack.wait_diagnostics(
        "policy_node", lambda d: int(d["values"]["instructions.rejected"]) >= 2, start)
    assert status["level"] == 2 and "at most 1000 characters, got 1000000" in status["message"]
    assert len(status["values"]["episode.instruction"]) < 300
    log = stack.log()
    assert "instruction rejected: instruction: expected a non-empty instruction, got ''" in log
    assert "expected at most 1000 characters, got 1000000" in log
    assert max(len(line) for line in log.splitlines()) < 5000  # never a 1 MB log line
    time.sleep(ACTION_TIMEOUT_S + 0.2)
    assert [a for a in stack.recording.entries("action", start) if a["step"] > 0
            and a["recv"] > start + 0.2] == []
    twists = stack.recording.entries("twist", start + ACTION_TIMEOUT_S)
    assert twists and not any(_nonzero(t) for t in twists)
    safety = stack.last_diagnostics("safety_node", start)
    assert len(safety["values"]["episode.instruction"]) < 300
    # Still running: the next instruction works.
    after = time.time()
    stack.driver.instruct("put the lid back")
    stack.wait_actions("put the lid back", 2, after)


def test_stack_stops_cleanly_on_sigint(stack):
    stack.up.send_signal(2)
    assert stack.up.wait(timeout=30) == 0, stack.log()[-3000:]
    log = stack.log()
    assert "rt2-ros up: stopped" in log
    assert "Traceback" not in log and "terminate called" not in log
