"""``rt2-ros tokenize`` / ``detokenize`` as a user runs them (subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def rt2_ros(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rt2_ros.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def test_detokenize_prints_tokens_and_action():
    result = rt2_ros("detokenize", "1 128 91 241 5 101 127 200")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tokens"] == [1, 128, 91, 241, 5, 101, 127, 200]
    assert list(out["action"]) == ["terminate", "x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert out["action"]["terminate"] is True
    assert out["action"]["x"] == pytest.approx(-0.05 + 128 * 0.1 / 255)
    assert out["action"]["gripper"] == pytest.approx(200 / 255)
    assert result.stderr == ""


def test_tokenize_prints_tokens_and_text():
    action = {"terminate": 0, "x": 0.01, "y": 0, "z": 0, "roll": 0, "pitch": 0, "yaw": 0, "gripper": 1.0}
    result = rt2_ros("tokenize", "--embodiment", "rt2_arm", json.dumps(action))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"tokens": [0, 153, 127, 127, 127, 127, 127, 255],
                                         "text": "0 153 127 127 127 127 127 255"}


def test_embodiment_by_path_and_chain_of_thought(tmp_path):
    path = tmp_path / "planar.yaml"
    path.write_text((REPO / "config" / "embodiments" / "language_table.yaml").read_text())
    result = rt2_ros("detokenize", "--embodiment", str(path), "Plan: push the block left Action: 0 0 255")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tokens"] == [0, 0, 255] and out["plan"] == "push the block left"
    assert out["action"] == {"terminate": False, "x": -0.03, "y": pytest.approx(0.03)}


@pytest.mark.parametrize("args, message", [
    (("detokenize", "1 128 91 241 5 101 127"), "expected 8 tokens, got 7: '1 128 91 241 5 101 127'"),
    (("detokenize", "1 128 91 300 5 101 127 200"), "token 3 (z): 300 is outside 0..255"),
    (("detokenize", "--embodiment", "nowhere", "1"), "unknown embodiment 'nowhere'"),
    (("tokenize", '{"terminate": 0, "x": NaN}'), "x: expected a finite number, got nan"),
    (("tokenize", "{terminate: 0}"), "action: not valid JSON"),
    (("tokenize", "[0, 1]"), "action: expected a JSON object"),
    (("tokenize", "--embodiment", "language_table", '{"terminate": 0, "x": 0.0}'), "action: missing key 'y'"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    result = rt2_ros(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"rt2-ros {args[0]}: ") and message in lines[0]
