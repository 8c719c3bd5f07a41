"""The generated interfaces are real: an RT2Action crosses DDS between two processes intact."""
from __future__ import annotations

import json
import math
import time

import pytest

from ros_harness import process_group, requires_ros  # noqa: F401  (fixture)

pytestmark = [requires_ros, pytest.mark.ros]


def test_execute_instruction_action_fields():
    from rt2_ros.action import ExecuteInstruction
    from rt2_ros.msg import RT2Action

    goal = ExecuteInstruction.Goal(instruction="pick up the can", max_steps=10, timeout_s=5.0)
    assert (goal.instruction, goal.max_steps, goal.timeout_s) == ("pick up the can", 10, 5.0)
    result = ExecuteInstruction.Result(terminated=True, steps=3, reason="terminated")
    assert result.terminated and result.steps == 3
    feedback = ExecuteInstruction.Feedback(step=2, last_action=RT2Action(step=2))
    assert feedback.last_action.step == 2


def test_field_checks_reject_wrong_types():
    """ROS_PYTHON_CHECK_FIELDS=1 (set for the whole suite) turns bad field values into errors."""
    import os

    from rt2_ros.msg import RT2Action

    assert os.environ.get("ROS_PYTHON_CHECK_FIELDS") == "1"

    msg = RT2Action()
    with pytest.raises(AssertionError):
        msg.tokens = [1, 300]  # uint8 out of range
    with pytest.raises(AssertionError):
        msg.gripper = "open"


def test_rt2action_round_trip_over_dds(process_group, tmp_path):  # noqa: F811
    from rt2action_peer import message_to_dict, reference_message

    out = tmp_path / "received.json"
    receiver = process_group.start("receive", ["test/rt2action_peer.py", "receive", str(out)])
    process_group.start("publish", ["test/rt2action_peer.py", "publish"])
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline and receiver.poll() is None:
        time.sleep(0.1)
    assert out.exists(), ("no RT2Action received over DDS\n" + process_group.log("receive")
                          + process_group.log("publish"))
    time.sleep(0.2)  # the receiver exits right after writing; let the write finish
    got = json.loads(out.read_text())
    want = message_to_dict(reference_message())
    for key, value in want.items():
        if key in ("gripper", "inference_ms"):  # float32 on the wire
            assert math.isclose(got[key], value, rel_tol=1e-6), key
        else:
            assert got[key] == value, key
