"""Failures the stack survives: a backend that raises, a node that cannot start, bad config.

A policy_node whose backend raises (alternately an unexpected RuntimeError
and a PolicyError) runs with the real safety_node, a camera and a recorder:
every goal ends with reason backend_error, nothing moves, the node keeps
running and reports the error.  `rt2-ros up` with a model that cannot load
stops the whole stack and exits non-zero.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rt2_ros.cli import main as cli_main

from ros_harness import REPO, ProcessGroup, next_domain_id, requires_ros, ros_env

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow]

COMMON = ["-p", "control_rate_hz:=10.0", "-p", "diagnostics_period_s:=0.2"]


@pytest.fixture(scope="module")
def failing_stack(tmp_path_factory):
    from stack_peers import Recording

    tmp = tmp_path_factory.mktemp("failing_stack")
    group = ProcessGroup(next_domain_id(), tmp)
    recording = Recording(tmp / "record.jsonl")
    try:
        group.start("record", ["test/stack_peers.py", "record", str(recording.path)])
        group.start("camera", ["test/stack_peers.py", "camera", "--rate", "30"])
        group.start("safety", ["-m", "rt2_ros.nodes.safety_node", "--ros-args", *COMMON,
                               "-p", "start_enabled:=true", "-p", "publish_rate_hz:=50.0",
                               "-p", "action_timeout_s:=0.4"])
        policy = group.start("policy", ["test/stack_peers.py", "policy_node_with", "failing",
                                        "--ros-args", *COMMON])
        for node in ("policy_node", "safety_node"):
            recording.wait_for(lambda r: r.diagnostics(node), 90, f"{node} to come up")
        yield group, recording, policy
    finally:
        group.stop()


def _instruct(group, text):
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "instruct", text],
                          env=ros_env(group.domain_id), cwd=str(REPO), capture_output=True,
                          text=True, timeout=60)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_a_raising_backend_ends_goals_and_the_node_keeps_running(failing_stack):
    group, recording, policy = failing_stack
    start = time.time()
    code, lines, err = _instruct(group, "pick up the can")
    assert code == 1, err
    assert lines == [{"result": {"terminated": False, "steps": 0, "status": "aborted",
                                 "reason": "backend_error: RuntimeError: boom #1"}}]
    code, lines, err = _instruct(group, "pick up the can")
    assert code == 1, err
    assert lines[-1]["result"]["reason"] == "backend_error: model unavailable (call 2)"

    assert policy.poll() is None  # still running
    status = recording.wait_for(
        lambda r: [d for d in r.diagnostics("policy_node", start)
                   if d["values"]["backend_errors"] == "2"], 10, "two backend errors")[-1]
    assert status["level"] == 2 and "model unavailable (call 2)" in status["values"]["last_error"]
    log = group.log("policy")
    assert log.count("backend error, no action published") == 2
    assert "RuntimeError: boom #1" in log and "Traceback" in log  # the unexpected one in full
    assert "boom #1" in log and log.count("boom #1") <= 3
    assert recording.entries("action") == []
    twists = recording.entries("twist", start)
    assert twists and not any(any(t["linear"]) or any(t["angular"]) for t in twists)


def test_up_stops_the_stack_when_a_node_dies(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "up", "--backend", "transformers",
                           "--model", str(tmp_path / "no_such_checkpoint"),
                           "--shutdown-timeout", "20"],
                          env=ros_env(next_domain_id()), cwd=str(REPO), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no_such_checkpoint" in done.stdout and "not a directory" in done.stdout
    assert "rt2-ros up: policy_node exited with code 1; stopping the stack" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "rt2-ros up: policy_node exited with code 1"
    assert "killed" not in done.stderr  # safety_node stopped on SIGINT


def test_up_stops_cleanly_on_sigterm(tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("0 128 128 128 128 128 128 0\n")
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "rt2_ros.cli", "up", "--backend", "scripted",
                               "--scripted-actions", str(script)],
                              env=ros_env(next_domain_id()), cwd=str(REPO), stdout=out,
                              stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while log.read_text().count("ready:") < 2:
                assert up.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            up.terminate()  # SIGTERM, as a service manager would send
            assert up.wait(timeout=30) == 0, log.read_text()
        finally:
            if up.poll() is None:
                up.kill()
    text = log.read_text()
    assert "rt2-ros up: stopping the stack" in text and text.rstrip().endswith("rt2-ros up: stopped")
    assert "Traceback" not in text


def test_instruct_without_a_stack_says_so():
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "instruct", "pick up the can",
                           "--server-timeout", "1"], env=ros_env(next_domain_id()),
                          cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.strip() == ("rt2-ros instruct: no action server /rt2/execute answered "
                                   "within 1 s (is the stack running? `rt2-ros up`; same "
                                   "ROS_DOMAIN_ID?)")


def test_up_refuses_bad_values_before_starting_anything(capsys):
    assert cli_main(["up", "--backend", "scripted", "--scripted-actions", "x",
                     "--set", "safety_node.max_linear_speed=nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("rt2-ros up: --set safety_node.max_linear_speed=nan: safety_node parameter "
                   "max_linear_speed: expected a finite number, got nan")
