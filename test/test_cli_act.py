"""``rt2-ros act`` / ``rt2-ros ask`` as a user runs them (subprocess, tiny offline checkpoints)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rt2_ros.action_language import load_embodiment, parse_model_output

REPO = Path(__file__).resolve().parents[1]



def rt2_ros(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rt2_ros.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_act_prints_the_action_json(tiny_paligemma_dir, image_file):
    result = rt2_ros("act", "--model", str(tiny_paligemma_dir), "--image", str(image_file),
                     "--device", "cpu", "--dtype", "float32", "pick up the red block")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"tokens", "action", "plan", "text", "timings_ms"}
    parsed = parse_model_output(out["text"], load_embodiment("rt2_arm"))
    assert parsed.tokens == out["tokens"] and parsed.action == pytest.approx(out["action"])
    assert set(out["timings_ms"]) == {"preprocess", "prefill", "decode", "total"}
    # The CLI and the library agree (cv2 BGR was turned back into RGB).
    from rt2_ros.policy.transformers_backend import TransformersPolicy

    policy = TransformersPolicy.from_pretrained(tiny_paligemma_dir, device="cpu", dtype="float32",
                                                warmup=False)
    rgb = cv2.cvtColor(cv2.imread(str(image_file)), cv2.COLOR_BGR2RGB)
    assert policy.act(rgb, "pick up the red block").tokens == out["tokens"]
    # --decoding reaches the backend.
    median = rt2_ros("act", "--model", str(tiny_paligemma_dir), "--image", str(image_file), "--device", "cpu",
                     "--dtype", "float32", "--decoding", "median", "pick up the red block")
    assert median.returncode == 0, median.stderr
    by_median = TransformersPolicy(policy.model, policy.processor, policy.setup, decoding="median",
                                   warmup=False)
    assert json.loads(median.stdout)["tokens"] == by_median.act(rgb, "pick up the red block").tokens


def test_ask_prints_a_free_text_answer(tiny_llava_dir, image_file):
    result = rt2_ros("ask", "--model", str(tiny_llava_dir), "--image", str(image_file),
                     "--max-new-tokens", "5", "what is on the table?")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert isinstance(out["answer"], str) and 1 <= len(out["answer"].split()) <= 5
    assert out["timings_ms"]["total"] > 0


def test_act_with_the_scripted_backend(tmp_path, image_file):
    script = tmp_path / "actions.txt"
    script.write_text("0 128 128 140 128 128 128 255\n")
    result = rt2_ros("act", "--backend", "scripted", "--actions", str(script), "--image", str(image_file),
                     "go")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] == [0, 128, 128, 140, 128, 128, 128, 255]


@pytest.mark.parametrize("args, message", [
    (["--image", "missing.png", "go"], "image: no such file: 'missing.png'"),
    (["--image", "{not_an_image}", "go"], "cannot decode"),
    (["--image", "{image}", "  "], "instruction: expected a non-empty instruction"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, image_file, args, message):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    args = [a.format(not_an_image=not_an_image, image=image_file) for a in args]
    result = rt2_ros("act", "--model", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("rt2-ros act: ")


def test_bad_checkpoint_is_one_line_naming_the_path(tmp_path, image_file):
    result = rt2_ros("ask", "--model", str(tmp_path / "nowhere"), "--image", str(image_file), "what?")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"rt2-ros ask: checkpoint {str(tmp_path / 'nowhere')!r}: not a directory"]
