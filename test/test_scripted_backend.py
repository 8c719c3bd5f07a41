"""The scripted backend: replays validated action strings, loops or stops, rewinds on reset."""
from __future__ import annotations

import numpy as np
import pytest

from rt2_ros.policy.base import PolicyError
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.policy.scripted import ScriptedPolicy

IMAGE = np.zeros((4, 4, 3), dtype=np.uint8)
SCRIPT = """# bring-up: nudge forward, close, stop
0 128 128 140 128 128 128 255

0 140 128 128 128 128 128 0   # move +x with the gripper closed
1 128 128 128 128 128 128 0
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "actions.txt"
    path.write_text(SCRIPT)
    return path


def test_replays_the_lines_in_order_and_stops_when_exhausted(script):
    policy = ScriptedPolicy(script)
    outs = [policy.act(IMAGE, "go") for _ in range(3)]
    assert [o.tokens for o in outs] == [[0, 128, 128, 140, 128, 128, 128, 255],
                                        [0, 140, 128, 128, 128, 128, 128, 0],
                                        [1, 128, 128, 128, 128, 128, 128, 0]]
    assert outs[1].text == "0 140 128 128 128 128 128 0"
    assert outs[1].action["x"] == pytest.approx(-0.05 + 140 * 0.1 / 255)
    assert outs[2].action["terminate"] is True and outs[0].action["terminate"] is False
    assert all(o.plan == "" and o.timings["total"] >= 0 for o in outs)
    with pytest.raises(PolicyError, match="script exhausted after 3 actions"):
        policy.act(IMAGE, "go")
    with pytest.raises(PolicyError, match="script exhausted after 3 actions"):
        policy.act(IMAGE, "go")
    policy.reset()
    assert policy.act(IMAGE, "go").tokens == outs[0].tokens


def test_loops_back_to_the_first_action(script):
    policy = ScriptedPolicy(script, loop=True)
    tokens = [policy.act(IMAGE, "go").tokens for _ in range(7)]
    assert tokens[3] == tokens[0] and tokens[6] == tokens[0] and tokens[4] == tokens[1]
    policy.act(IMAGE, "go")
    policy.reset()
    assert policy.act(IMAGE, "go").tokens == tokens[0]


@pytest.mark.parametrize("line, message", [
    ("0 128 128 128 128 128 128", "line 3: expected 8 tokens, got 7"),
    ("0 128 128 128 128 128 128 256", "line 3: token 7 \\(gripper\\): 256 is outside 0..255"),
    ("2 128 128 128 128 128 128 0", "line 3: token 0 \\(terminate\\): 2 is outside 0..1"),
    ("0 128 128 x 128 128 128 0", "line 3: token 3 \\(z\\): 'x' is not an integer"),
])
def test_a_bad_line_fails_at_load_with_its_line_number(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(f"# header\n0 128 128 128 128 128 128 0\n{line}\n")
    with pytest.raises(PolicyError, match=message):
        ScriptedPolicy(path)


def test_unusable_files_and_embodiments_are_refused(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        ScriptedPolicy(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(PolicyError, match="no action lines"):
        ScriptedPolicy(empty)
    with pytest.raises(PolicyError, match="embodiment"):
        ScriptedPolicy(empty, "no_such_embodiment")


def test_other_embodiments_validate_their_own_token_count(tmp_path):
    path = tmp_path / "planar.txt"
    path.write_text("0 128 128\n1 0 255\n")
    policy = ScriptedPolicy(path, "language_table")
    assert policy.act(IMAGE, "push the block").tokens == [0, 128, 128]
    path.write_text("0 128 128 128 128 128 128 0\n")
    with pytest.raises(PolicyError, match="line 1: expected 3 tokens, got 8"):
        ScriptedPolicy(path, "language_table")


def test_image_and_instruction_are_still_checked(script):
    policy = ScriptedPolicy(script)
    with pytest.raises(PolicyError, match="uint8"):
        policy.act(np.zeros((4, 4, 3), dtype=np.float64), "go")
    with pytest.raises(PolicyError, match="non-empty instruction"):
        policy.act(IMAGE, "")


def test_built_by_the_factory_from_a_config(script):
    policy = make_policy(PolicyConfig(backend="scripted", scripted_actions=str(script), scripted_loop=True))
    assert isinstance(policy, ScriptedPolicy) and policy.loop and len(policy) == 3
    assert policy.name == "scripted"
    with pytest.raises(PolicyError, match="scripted_actions"):
        make_policy(PolicyConfig(backend="scripted"))
