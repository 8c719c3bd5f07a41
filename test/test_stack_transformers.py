"""One full episode through the stack with a real (tiny, random) transformers model.

The model is PaliGemma-shaped with random weights (test/conftest.py), loaded
by the policy node through the real loading code; whatever it emits must be
a legal action of the embodiment, and the safety node must turn it into a
bounded twist.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ros_harness import REPO, ProcessGroup, next_domain_id, requires_ros, ros_env

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow]

MAX_LINEAR = 0.1
MAX_ANGULAR = 0.5
MAX_STEPS = 6
# With the fixture's weights and the camera's image this instruction does not
# terminate at once, so the episode moves the arm (any outcome must be legal).
INSTRUCTION = "push the blue cube"


@pytest.fixture(scope="module")
def transformers_stack(tmp_path_factory, tiny_paligemma_dir):
    from stack_peers import Recording

    tmp = tmp_path_factory.mktemp("transformers_stack")
    group = ProcessGroup(next_domain_id(), tmp)
    recording = Recording(tmp / "record.jsonl")
    try:
        group.start("record", ["test/stack_peers.py", "record", str(recording.path)])
        group.start("camera", ["test/stack_peers.py", "camera", "--rate", "30", "--width", "96",
                               "--height", "72"])
        group.start("up", ["-m", "rt2_ros.cli", "up", "--backend", "transformers",
                           "--model", str(tiny_paligemma_dir), "--start-enabled", "true",
                           "--set", "control_rate_hz=10", "--set", "policy_node.device=cpu",
                           "--set", "policy_node.dtype=float32",
                           "--set", "policy_node.torch_threads=1",
                           "--set", "policy_node.max_image_age_s=2.0",
                           "--set", "safety_node.publish_rate_hz=50",
                           "--set", f"safety_node.max_linear_speed={MAX_LINEAR}",
                           "--set", f"safety_node.max_angular_speed={MAX_ANGULAR}"])
        try:
            for node in ("policy_node", "safety_node"):
                recording.wait_for(lambda r: r.diagnostics(node), 120, f"{node} to come up")
        except AssertionError:
            raise AssertionError("stack did not come up:\n" + group.log("up"))
        yield group, recording
    finally:
        group.stop()


def test_an_episode_with_the_tiny_model_publishes_only_legal_actions(transformers_stack):
    from rt2_ros.action_language import load_embodiment

    group, recording = transformers_stack
    done = subprocess.run([sys.executable, "-m", "rt2_ros.cli", "instruct",
                           INSTRUCTION, "--max-steps", str(MAX_STEPS),
                           "--timeout", "60"],
                          env=ros_env(group.domain_id), cwd=str(REPO), capture_output=True,
                          text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines, done.stderr + group.log("up")[-3000:]
    result = lines[-1]["result"]
    feedback = lines[:-1]
    assert result["reason"] in ("terminated", "max_steps"), result
    assert done.returncode == (0 if result["terminated"] else 1)
    assert result["steps"] == len(feedback) >= 1
    assert [f["step"] for f in feedback] == list(range(len(feedback)))

    embodiment = load_embodiment("rt2_arm")
    actions = recording.wait_for(
        lambda r: len(r.entries("action")) >= len(feedback) and r.entries("action"), 10,
        "the episode's actions")
    assert len(actions) == len(feedback)
    for action in actions:
        assert action["backend"] == "transformers" and action["embodiment"] == "rt2_arm"
        assert action["instruction"] == INSTRUCTION
        decoded = embodiment.decode(action["tokens"])  # raises on an illegal action
        assert action["dim_names"] == embodiment.names
        assert action["values"] == pytest.approx([float(v) for v in decoded.values()])
        assert action["delta_position"] == pytest.approx([decoded[k] for k in "xyz"])
        assert action["terminate"] == decoded["terminate"]
        assert action["inference_ms"] > 0
    twists = recording.entries("twist", actions[0]["recv"] - 0.5)
    assert twists
    for twist in twists:
        assert all(math.isfinite(v) and abs(v) <= MAX_LINEAR + 1e-9 for v in twist["linear"])
        assert all(math.isfinite(v) and abs(v) <= MAX_ANGULAR + 1e-9 for v in twist["angular"])
        assert math.hypot(*twist["linear"]) <= MAX_LINEAR + 1e-9
    moving = [a for a in actions if not a["terminate"] and any(a["delta_position"])]
    if moving:  # a non-terminate step with a delta moved the arm, within the limits
        assert any(any(t["linear"]) for t in twists)
    for gripper in recording.entries("gripper"):
        assert 0.0 <= gripper["value"] <= 1.0
    # The model's torch threads are the node's torch_threads parameter.
    assert "torch_threads: 1 torch intra-op thread(s)" in group.log("up")
