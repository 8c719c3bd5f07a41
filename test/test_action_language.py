"""Embodiments, both discretizations, un-normalisation and prompts (pure, no tokenizer)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rt2_ros.action_language import (
    OPENVLA_PROMPT,
    RT2_PROMPT,
    ActionLanguageError,
    Dim,
    Embodiment,
    build_prompt,
    embodiment_from_dict,
    format_action_text,
    list_embodiments,
    load_embodiment,
    parse_action_text,
    parse_model_output,
)
from rt2_ros.action_language import discretization as disc

SHIPPED = ["language_table", "openvla_bridge", "rt2_arm"]
RT2_NAMES = ["terminate", "x", "y", "z", "roll", "pitch", "yaw", "gripper"]

# DESIGN.md section 5, verbatim as data.
DESIGN_RT2_ARM = {
    "name": "rt2_arm", "bins": 256, "discretization": "rt1",
    "dims": [
        {"name": "terminate", "kind": "discrete", "values": 2},
        {"name": "x", "low": -0.05, "high": 0.05},
        {"name": "y", "low": -0.05, "high": 0.05},
        {"name": "z", "low": -0.05, "high": 0.05},
        {"name": "roll", "low": -0.25, "high": 0.25},
        {"name": "pitch", "low": -0.25, "high": 0.25},
        {"name": "yaw", "low": -0.25, "high": 0.25},
        {"name": "gripper", "low": 0.0, "high": 1.0},
    ],
}


@pytest.fixture(scope="module")
def rt2_arm() -> Embodiment:
    return load_embodiment("rt2_arm")


@pytest.fixture(scope="module")
def openvla() -> Embodiment:
    return load_embodiment("openvla_bridge")


def one_dim(discretization: str, low: float = -1.0, high: float = 1.0, bins: int = 256, **extra) -> Embodiment:
    return Embodiment(name="t", bins=bins, discretization=discretization,
                      dims=(Dim("v", "continuous", low, high, **extra),))


def valid_dict(**changes) -> dict:
    data = {"name": "e", "bins": 256, "discretization": "rt1",
            "dims": [{"name": "terminate", "kind": "discrete", "values": 2},
                     {"name": "x", "low": -1.0, "high": 1.0},
                     {"name": "y", "low": -1.0, "high": 1.0}]}
    data.update(changes)
    return data


# --- shipped files -----------------------------------------------------------

def test_shipped_embodiments_are_listed_and_load():
    assert set(SHIPPED) <= set(list_embodiments())
    for name in SHIPPED:
        assert load_embodiment(name).name == name


def test_rt2_arm_is_exactly_the_design_example(rt2_arm):
    assert rt2_arm.to_dict() == DESIGN_RT2_ARM
    assert rt2_arm.names == RT2_NAMES
    assert rt2_arm.num_tokens == 8
    assert [rt2_arm.allowed_bins(p) for p in range(8)] == [2] + [256] * 7


def test_language_table_is_planar():
    e = load_embodiment("language_table")
    assert e.names == ["terminate", "x", "y"]
    assert e.discretization == "rt1"
    assert (e.dim("x").low, e.dim("x").high) == (-0.03, 0.03)


def test_openvla_bridge_statistics_and_mask(openvla):
    assert openvla.names == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert openvla.discretization == "center"
    x = openvla.dim("x")
    assert (x.low, x.high, x.q01, x.q99, x.normalized) == (-1.0, 1.0, -0.02872725307941437,
                                                            0.028309678435325586, True)
    assert all(d.normalized for d in openvla.dims[:6])
    assert openvla.dim("gripper").normalized is False


def test_load_by_path_equals_load_by_name(rt2_arm, tmp_path):
    path = Path(__file__).resolve().parents[1] / "config" / "embodiments" / "rt2_arm.yaml"
    copy = tmp_path / "my_arm.yaml"
    copy.write_text(path.read_text())
    by_path = load_embodiment(str(copy))
    assert by_path.source == str(copy) and load_embodiment(copy) == by_path
    assert (by_path.name, by_path.bins, by_path.discretization, by_path.dims) == \
        (rt2_arm.name, rt2_arm.bins, rt2_arm.discretization, rt2_arm.dims)


# --- rt1 discretization: exact values ---------------------------------------

def test_rt1_decode_is_the_design_formula(rt2_arm):
    action = rt2_arm.decode([1, 128, 91, 241, 5, 101, 127, 200])
    assert action["terminate"] is True
    assert action["x"] == -0.05 + 128 * 0.1 / 255
    assert action["z"] == -0.05 + 241 * 0.1 / 255
    assert action["roll"] == -0.25 + 5 * 0.5 / 255
    assert action["gripper"] == 200 / 255
    ends = rt2_arm.decode([0, 0, 255, 0, 0, 255, 0, 255])
    assert ends["terminate"] is False
    assert ends["x"] == -0.05 and ends["y"] == pytest.approx(0.05, abs=1e-15)
    assert ends["gripper"] == 1.0 and ends["pitch"] == pytest.approx(0.25, abs=1e-15)


def test_rt1_encode_at_edges_and_between(rt2_arm):
    e = one_dim("rt1", -0.05, 0.05)
    step = 0.1 / 255
    assert e.encode({"v": -0.05}) == [0]
    assert e.encode({"v": 0.05}) == [255]
    assert e.encode({"v": 0.0}) == [127]            # floor(0.5 * 255)
    assert e.encode({"v": 0.01}) == [153]           # DESIGN: '{"x": 0.01}' -> 153
    assert e.encode({"v": -0.05 + 10.5 * step}) == [10]     # between edges: floor
    assert e.encode({"v": -0.05 + 11 * step - 1e-6 * step}) == [10]
    # clipping is part of the paper's discretizer
    assert e.encode({"v": 3.0}) == [255] and e.encode({"v": -3.0}) == [0]
    zero = rt2_arm.encode(rt2_arm.zero_action())
    assert zero == [0, 127, 127, 127, 127, 127, 127, 0]


def test_rt1_encode_of_every_decoded_value_is_identity(rt2_arm):
    for token in range(256):
        tokens = [token % 2] + [token] * 7
        assert rt2_arm.encode(rt2_arm.decode(tokens)) == tokens


# --- center discretization: exact to OpenVLA --------------------------------

def test_center_values_are_bin_centres():
    e = one_dim("center")
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    for token in (0, 1, 127, 128, 253, 254):
        assert e.decode([token])["v"] == centres[token]
    assert e.decode([0])["v"] == pytest.approx(-1 + 1 / 255, abs=1e-15)
    # token 255 has no centre of its own: OpenVLA clips it to the last one
    assert e.decode([255])["v"] == e.decode([254])["v"] == pytest.approx(1 - 1 / 255, abs=1e-15)


def test_center_encode_at_edges_and_centres():
    e = one_dim("center")
    edges = np.linspace(-1, 1, 256)
    assert e.encode({"v": -1.0}) == [0]
    assert e.encode({"v": 1.0}) == [254]            # mapped into 0..bins-2
    assert e.encode({"v": 5.0}) == [254] and e.encode({"v": -5.0}) == [0]
    for k in (1, 100, 200, 254):
        assert e.encode({"v": float(edges[k])}) == [k]            # an edge opens its bin
        assert e.encode({"v": float(np.nextafter(edges[k], -2))}) == [k - 1]
    for token in range(255):
        assert e.encode(e.decode([token])) == [token]


def test_center_matches_openvla_action_tokenizer_math():
    """Same bins and values as OpenVLA's digitize/clip, on random normalised actions."""
    e = one_dim("center")
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    values = np.random.default_rng(0).uniform(-1.2, 1.2, 2000)
    for v in values:
        openvla_bin = np.digitize(np.clip(v, -1, 1), edges) - 1     # vocab_size - id - 1
        token = e.encode({"v": float(v)})[0]
        assert token == min(openvla_bin, 254)
        assert e.decode([token])["v"] == centres[np.clip(openvla_bin, 0, 254)]


def test_openvla_unnormalisation(openvla):
    tokens = [0, 127, 128, 254, 255, 100, 200]
    action = openvla.decode(tokens)
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    for name, token in zip(openvla.names[:6], tokens):
        dim = openvla.dim(name)
        n = centres[min(token, 254)]
        assert action[name] == 0.5 * (n + 1) * (dim.q99 - dim.q01) + dim.q01
    assert action["gripper"] == centres[200]        # masked: stays normalised
    # encode applies the inverse first
    assert openvla.encode({**action})[:6] == [0, 127, 128, 254, 254, 100]
    assert openvla.encode({**action, "x": -0.02872725307941437})[0] == 0
    assert openvla.encode({**action, "x": 0.028309678435325586})[0] == 254


def test_with_statistics_replaces_q01_q99(openvla):
    changed = openvla.with_statistics({"x": (-1.0, 3.0), "gripper": (0.0, 2.0, True)})
    assert changed.dim("x").q01 == -1.0 and changed.dim("x").normalized is True
    assert changed.decode([0] * 7)["x"] == 0.5 * (-1 + 1 / 255 + 1) * 4.0 - 1.0
    assert changed.dim("gripper").normalized is True
    assert openvla.dim("x").q01 == -0.02872725307941437          # frozen original unchanged
    with pytest.raises(ActionLanguageError, match="no dim named 'w'"):
        openvla.with_statistics({"w": (0, 1)})
    with pytest.raises(ActionLanguageError, match=r"statistics\[x\]: .*q01 must not exceed q99"):
        openvla.with_statistics({"x": (1.0, 0.0)})
    with pytest.raises(ActionLanguageError, match=r"statistics\[terminate\]: terminate is a discrete dim"):
        load_embodiment("rt2_arm").with_statistics({"terminate": (0, 1)})


def test_with_openvla_statistics_reads_checkpoint_lists(openvla):
    stats = {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": np.array([True] * 6 + [False])}
    changed = openvla.with_openvla_statistics(stats)
    assert changed.decode([10] * 7)["x"] == pytest.approx(one_dim("center").decode([10])["v"], abs=1e-15)
    with pytest.raises(ActionLanguageError, match="q99: expected a list of 7 entries"):
        openvla.with_openvla_statistics({"q01": [0] * 7, "q99": [1] * 6})
    with pytest.raises(ActionLanguageError, match="missing key 'q99'"):
        openvla.with_openvla_statistics({"q01": [0] * 7})


# --- round trips for every shipped embodiment (hypothesis) ------------------

def _tolerance(embodiment: Embodiment, dim: Dim) -> float:
    low, high = dim.physical_range
    step = (high - low) / (embodiment.bins - 1)
    # rt1 values are the lower bin edge: within one bin; center: the centre, within half.  Plus the
    # rounding of a value decoded through float32 (a value just below a bin edge is half a bin from
    # its centre, and float32 moves that centre by up to ~6e-8 of its size).
    return (step if embodiment.discretization == "rt1" else step / 2) * (1 + 1e-6) \
        + 1e-7 * max(abs(low), abs(high))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decode_encode_within_a_bin(data):
    embodiment = load_embodiment(data.draw(st.sampled_from(SHIPPED)))
    action = {}
    for dim in embodiment.dims:
        if dim.kind == "discrete":
            action[dim.name] = data.draw(st.integers(0, dim.values - 1))
        else:
            low, high = dim.physical_range
            action[dim.name] = data.draw(st.floats(low, high, allow_nan=False))
    decoded = embodiment.decode(embodiment.encode(action))
    for dim in embodiment.dims:
        if dim.kind == "discrete":
            assert decoded[dim.name] == action[dim.name]
        else:
            assert abs(decoded[dim.name] - action[dim.name]) <= _tolerance(embodiment, dim), dim.name


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(SHIPPED), data=st.data())
def test_decode_is_total_on_legal_tokens(name, data):
    embodiment = load_embodiment(name)
    tokens = [data.draw(st.integers(0, embodiment.allowed_bins(p) - 1)) for p in range(embodiment.num_tokens)]
    action = embodiment.decode(tokens)
    assert list(action) == embodiment.names
    for dim in embodiment.dims:
        if dim.kind == "continuous":
            low, high = dim.physical_range
            assert low <= action[dim.name] <= high and math.isfinite(action[dim.name])


def test_embodiments_pickle_and_copy(openvla):
    import copy
    import pickle

    for clone in (pickle.loads(pickle.dumps(openvla)), copy.deepcopy(openvla)):
        assert clone == openvla
        assert clone.decode([3] * 7) == openvla.decode([3] * 7)


def test_decode_accepts_numpy_ints_and_returns_python_types(rt2_arm):
    action = rt2_arm.decode(np.array([1, 128, 91, 241, 5, 101, 127, 200]))
    assert action == rt2_arm.decode([1, 128, 91, 241, 5, 101, 127, 200])
    assert type(action["x"]) is float and action["terminate"] is True


# --- malformed tokens -----------------------------------------------------------

@pytest.mark.parametrize("tokens, message", [
    ([1, 128, 91, 241, 5, 101, 127], r"expected 8 tokens, got 7: \[1, 128, 91, 241, 5, 101, 127\]"),
    ([], r"expected 8 tokens, got 0"),
    ([1, 128, 91, 300, 5, 101, 127, 200], r"token 3 \(z\): 300 is outside 0\.\.255"),
    ([1, 128, 91, -1, 5, 101, 127, 200], r"token 3 \(z\): -1 is outside 0\.\.255"),
    ([2, 128, 91, 1, 5, 101, 127, 200], r"token 0 \(terminate\): 2 is outside 0\.\.1"),
    ([1, 128, 1.5, 1, 5, 101, 127, 200], r"token 2 \(y\): expected an integer, got 1\.5"),
    ([1, 128, "9", 1, 5, 101, 127, 200], r"token 2 \(y\): expected an integer, got '9'"),
    ([True, 128, 9, 1, 5, 101, 127, 200], r"token 0 \(terminate\): expected an integer, got True"),
    ("1 128 91 241 5 101 127 200", r"expected a sequence of 8 integer tokens"),
])
def test_decode_rejects_malformed_tokens(rt2_arm, tokens, message):
    with pytest.raises(ActionLanguageError, match=message):
        rt2_arm.decode(tokens)


@pytest.mark.parametrize("text, message", [
    ("1 128 91 241 5 101 127", r"expected 8 tokens, got 7: '1 128 91 241 5 101 127'"),
    ("", r"empty action text: expected 8 tokens"),
    ("   ", r"empty action text: expected 8 tokens"),
    ("1 128 91 241 5 101 127 200 3", r"expected 8 tokens, got 9"),
    ("1 128 9x 241 5 101 127 200", r"token 2 \(y\): '9x' is not an integer"),
    ("1 128 91 241 5 101 127 200.", r"token 7 \(gripper\): '200\.' is not an integer"),
    ("1 -28 91 241 5 101 127 200", r"token 1 \(x\): '-28' is not an integer"),
    ("1 028 91 241 5 101 127 200", r"token 1 \(x\): '028' is not an integer"),
    ("1 128 91 256 5 101 127 200", r"token 3 \(z\): 256 is outside 0\.\.255"),
    ("1 128 91 2561234567890 5 101 127 200", r"token 3 \(z\): '2561234567890' is outside 0\.\.255"),
    ("3 128 91 241 5 101 127 200", r"token 0 \(terminate\): 3 is outside 0\.\.1"),
])
def test_parse_action_text_is_strict(rt2_arm, text, message):
    with pytest.raises(ActionLanguageError, match=message):
        parse_action_text(text, rt2_arm)


# --- malformed actions (encode) ---------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"x": float("nan")}, r"x: expected a finite number, got nan"),
    ({"y": float("inf")}, r"y: expected a finite number, got inf"),
    ({"z": "0.1"}, r"z: expected a finite number, got '0\.1'"),
    ({"z": True}, r"z: expected a finite number, got True"),
    ({"terminate": 2}, r"terminate: expected 0, 1, true or false, got 2"),
    ({"terminate": 0.5}, r"terminate: expected 0, 1, true or false, got 0\.5"),
    ({"w": 0.0}, r"action: unknown key 'w'"),
])
def test_encode_rejects_malformed_actions(rt2_arm, change, message):
    with pytest.raises(ActionLanguageError, match=message):
        rt2_arm.encode({**rt2_arm.zero_action(), **change})


def test_encode_rejects_missing_keys_and_non_mappings(rt2_arm):
    action = rt2_arm.zero_action()
    del action["yaw"]
    with pytest.raises(ActionLanguageError, match="action: missing key 'yaw'"):
        rt2_arm.encode(action)
    with pytest.raises(ActionLanguageError, match="action: expected a mapping"):
        rt2_arm.encode([0.0] * 8)


def test_encode_accepts_bools_ints_and_numpy_scalars(rt2_arm):
    base = rt2_arm.zero_action()
    assert rt2_arm.encode({**base, "terminate": True})[0] == 1
    assert rt2_arm.encode({**base, "terminate": 1, "x": np.float32(0.05), "y": 0})[:3] == [1, 255, 127]


# --- malformed embodiment definitions ---------------------------------------------

def _dim_change(index: int, **changes) -> dict:
    data = valid_dict()
    data["dims"] = [dict(d) for d in data["dims"]]
    data["dims"][index].update(changes)
    return data


@pytest.mark.parametrize("data, message", [
    (valid_dict(bins=1), r"<dict>: bins: expected an integer >= 2, got 1"),
    (valid_dict(bins="256"), r"bins: expected an integer, got '256'"),
    (valid_dict(discretization="log"), r"discretization: expected one of rt1, center, got 'log'"),
    (valid_dict(dims=[]), r"dims: expected a non-empty list of dims, got \[\]"),
    (valid_dict(extra=1), r"<dict>: unknown key 'extra'"),
    ({"name": "e", "discretization": "rt1", "dims": []}, r"<dict>: missing key 'bins'"),
    (_dim_change(1, low=float("nan")), r"dims\[1\] \(x\): dim 'x': low: expected a finite number, got nan"),
    (_dim_change(1, high="a"), r"dims\[1\] \(x\): dim 'x': high: expected a number, got 'a'"),
    (_dim_change(1, low=1.0), r"dims\[1\] \(x\): dim 'x': low must be below high, got low=1\.0 high=1\.0"),
    (_dim_change(2, low=2.0), r"dims\[2\] \(y\): dim 'y': low must be below high, got low=2\.0 high=1\.0"),
    (_dim_change(1, kind="angular"), r"dims\[1\] \(x\): dim 'x': kind: expected one of continuous, discrete, got 'angular'"),
    (_dim_change(2, name="x"), r"<dict>: dims\[2\]: duplicate name 'x' \(also dims\[1\]\)"),
    (_dim_change(1, hihg=1.0), r"dims\[1\] \(x\): unknown key 'hihg'"),
    (_dim_change(0, values=1), r"dims\[0\] \(terminate\): dim 'terminate': values: expected an integer >= 2, got 1"),
    (_dim_change(0, values=3), r"dim 'terminate': values: terminate has 2 values, got 3"),
    (_dim_change(0, low=0.0), r"dims\[0\] \(terminate\): low: only continuous dims have low"),
    (_dim_change(1, values=4), r"dim 'x': values: only discrete dims have values, got 4"),
    (_dim_change(1, normalized=True), r"dim 'x': normalized: true needs q01 and q99"),
    (_dim_change(1, q01=0.0), r"dim 'x': q01 and q99 come together"),
    (_dim_change(1, q01=0.0, q99=float("inf")), r"dim 'x': q99: expected a finite number, got inf"),
    (_dim_change(1, name="x y"), r"dim name: expected an identifier"),
    (_dim_change(1, kind="discrete"), r"dims\[1\] \(x\): missing key 'values'"),
    ("name: e", r"<dict>: expected a mapping"),
])
def test_embodiment_from_dict_rejects(data, message):
    with pytest.raises(ActionLanguageError, match=message):
        embodiment_from_dict(data)


def test_dim_missing_keys_are_named():
    data = valid_dict()
    del data["dims"][1]["high"]
    with pytest.raises(ActionLanguageError, match=r"dims\[1\] \(x\): missing key 'high'"):
        embodiment_from_dict(data)


def test_discrete_values_cannot_exceed_bins():
    data = valid_dict(bins=4)
    data["dims"].append({"name": "mode", "kind": "discrete", "values": 5})
    with pytest.raises(ActionLanguageError, match=r"dims\[3\] \(mode\): values: expected at most bins=4, got 5"):
        embodiment_from_dict(data)


def test_other_discrete_dims_decode_to_their_index():
    data = valid_dict()
    data["dims"].append({"name": "mode", "kind": "discrete", "values": 3})
    e = embodiment_from_dict(data)
    assert e.decode([0, 0, 0, 2])["mode"] == 2
    assert e.encode({**e.zero_action(), "mode": 1})[3] == 1
    assert e.allowed_bins(3) == 3
    with pytest.raises(ActionLanguageError, match="mode: expected an integer in 0..2, got 3"):
        e.encode({**e.zero_action(), "mode": 3})


def test_allowed_bins_rejects_bad_positions(rt2_arm):
    with pytest.raises(ActionLanguageError, match=r"position: expected an integer in 0\.\.7, got 8"):
        rt2_arm.allowed_bins(8)


# --- files -------------------------------------------------------------------

def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ActionLanguageError, match="embodiment file not found: .*missing.yaml"):
        load_embodiment(tmp_path / "missing.yaml")
    with pytest.raises(ActionLanguageError, match="unknown embodiment 'no_such_robot' \\(bundled: .*rt2_arm"):
        load_embodiment("no_such_robot")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: e\ndims: [\n  - {name: x, low: -1\n")
    with pytest.raises(ActionLanguageError, match=r"broken\.yaml: YAML syntax error at line \d+, column \d+"):
        load_embodiment(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ActionLanguageError, match=r"empty\.yaml: expected a mapping"):
        load_embodiment(str(empty))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: e\nbins: 256\ndiscretization: rt1\ndims:\n  - {name: x, low: .nan, high: 1}\n")
    with pytest.raises(ActionLanguageError, match=r"bad\.yaml: dims\[0\] \(x\): dim 'x': low: expected a finite number, got nan"):
        load_embodiment(bad)


def test_yaml_reads_exponents_without_a_dot(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nbins: 16\ndiscretization: center\ndims:\n  - {name: x, low: -5e-3, high: 5e-3}\n")
    e = load_embodiment(path)
    assert e.dim("x").high == 0.005 and e.source == str(path)


# --- prompts and model output -------------------------------------------------------

def test_prompts():
    assert RT2_PROMPT == "Q: what action should the robot take to {instruction}? A:"
    assert OPENVLA_PROMPT == "In: What action should the robot take to {instruction}?\nOut:"
    assert build_prompt("pick up the can") == "Q: what action should the robot take to pick up the can? A:"
    assert build_prompt("  Pick up the Can. ", "openvla") == \
        "In: What action should the robot take to pick up the can?\nOut:"
    with pytest.raises(ActionLanguageError, match="instruction: expected some words, got ' . '"):
        build_prompt(" . ")
    with pytest.raises(ActionLanguageError, match="profile: expected one of rt2, openvla, got 'palm'"):
        build_prompt("x", "palm")


def test_format_and_parse_chain_of_thought(rt2_arm):
    tokens = [0, 128, 124, 136, 121, 158, 111, 255]
    assert format_action_text(tokens) == "0 128 124 136 121 158 111 255"
    text = format_action_text(tokens, plan="pick rxbar chocolate")
    assert text == "Plan: pick rxbar chocolate Action: 0 128 124 136 121 158 111 255"
    assert format_action_text(tokens, plan="  ") == "0 128 124 136 121 158 111 255"
    parsed = parse_model_output(text, rt2_arm)
    assert parsed.tokens == tokens and parsed.plan == "pick rxbar chocolate" and parsed.text == text
    assert parsed.action == rt2_arm.decode(tokens)
    plain = parse_model_output(" 0 128 124 136 121 158 111 255\n", rt2_arm)
    assert plain.plan == "" and plain.tokens == tokens
    assert parse_model_output("Action: 0 128 124 136 121 158 111 255", rt2_arm).tokens == tokens
    with pytest.raises(ActionLanguageError, match="token 1: expected an integer >= 0, got -1"):
        format_action_text([0, -1])


@pytest.mark.parametrize("text, message", [
    ("Plan: pick the can", r"model output has 'Plan:' but no 'Action:': 'Plan: pick the can'"),
    ("Plan: pick Action: 0 128 124", r"expected 8 tokens, got 3: '0 128 124'"),
    ("Plan: pick Action:", r"empty action text: expected 8 tokens"),
    ("sure! Action: 0 128 124 136 121 158 111 255", r"text before 'Action:' must start with 'Plan:'"),
    ("The robot should pick up the can.", r"expected 8 tokens, got 7"),
])
def test_parse_model_output_rejects(rt2_arm, text, message):
    with pytest.raises(ActionLanguageError, match=message):
        parse_model_output(text, rt2_arm)


def test_discretization_helpers_are_inverse():
    assert disc.unnormalize(disc.normalize(0.01, -0.03, 0.05), -0.03, 0.05) == pytest.approx(0.01, rel=1e-6)
    assert disc.rt1_values(0.0, 1.0, 3) == [0.0, 0.5, 1.0]
    assert disc.center_values(0.0, 1.0, 3) == [0.25, 0.75, 0.75]


# ------------------------------------------------------------------ plans


def test_plan_layouts_say_what_each_number_is_and_which_are_derived():
    from rt2_ros.action_language.plans import PLAN_KINDS, plan_layout, plan_number_labels
    from rt2_ros.errors import ConfigError

    assert PLAN_KINDS == ("none", "points", "object_points", "object_points_hand", "hand_points_offset",
                          "hand_under_offset", "hand_target_offset")
    assert plan_number_labels("object_points_hand") == ("object col", "object row", "goal col", "goal row",
                                                        "gripper col", "gripper row", "height", "closed")
    assert [(f.name, f.offset_of) for f in plan_layout("hand_points_offset") if f.derived] == [
        ("offset", ("goal", "gripper"))]
    assert [(f.name, f.offset_of) for f in plan_layout("hand_under_offset") if f.derived] == [
        ("offset", ("goal", "under"))]
    assert plan_number_labels("hand_under_offset")[-4:] == ("under col", "under row", "offset col", "offset row")
    assert not any(f.derived for kind in PLAN_KINDS[:-3] for f in plan_layout(kind))
    # The target plan writes what the under plan does; only where its object's point is read differs.
    assert plan_number_labels("hand_target_offset") == plan_number_labels("hand_under_offset")
    assert [f.reads for f in plan_layout("hand_target_offset") if f.name == "object"] == ["target"]
    with pytest.raises(ConfigError, match="plan: expected one of none, points, .*, got 'goal'"):
        plan_layout("goal")


def test_the_decoder_computes_the_offset_from_the_points_the_model_wrote():
    from rt2_ros.action_language.plans import derived_numbers, offset_numbers

    plan = "gripper 128 51 height 31 closed 0 red cube 76 153 goal 25 230 offset"
    # 128 + (25 - 128) // 2 = 76, 128 + (230 - 51) // 2 = 217
    assert derived_numbers("hand_points_offset", plan) == [76, 217] == list(offset_numbers((25, 230), (128, 51)))
    assert derived_numbers("hand_points_offset", plan.split()) == [76, 217]
    assert offset_numbers((255, 0), (0, 255)) == (255, 0) and offset_numbers((9, 9), (9, 9)) == (128, 128)
    # Not at a derived field, or a kind without one: the model writes on.
    assert derived_numbers("hand_points_offset", plan.rsplit(" ", 1)[0]) is None
    assert derived_numbers("object_points_hand", plan) is None
    assert derived_numbers("hand_points_offset", "") is None
    # Points the model did not write as two bins: nothing to compute from, left to the model.
    assert derived_numbers("hand_points_offset", "gripper 128 height 31 closed 0 goal 25 230 offset") is None
    assert derived_numbers("hand_points_offset", "gripper 128 51 goal 25 999 offset") is None
    assert derived_numbers("hand_points_offset", "gripper 128 51 offset") is None


def test_the_under_plan_measures_the_offset_from_the_point_under_the_hand():
    from rt2_ros.action_language.plans import derived_numbers

    plan = "gripper 128 51 height 31 closed 0 red cube 76 153 goal 25 230 under 120 200 offset"
    # From "under", not from "gripper": 128 + (25 - 120) // 2 = 80, 128 + (230 - 200) // 2 = 143
    assert derived_numbers("hand_under_offset", plan) == [80, 143]
    assert derived_numbers("hand_points_offset", plan) == [76, 217]
    # No under point written: the model writes on.
    assert derived_numbers("hand_under_offset", "gripper 128 51 goal 25 230 offset") is None


def test_a_plan_is_parsed_only_when_it_follows_its_layout_word_for_word():
    from rt2_ros.action_language.plans import parse_plan

    plan = "gripper 128 51 height 31 closed 0 red cube 76 153 goal 25 230 under 120 200 offset 80 143"
    assert parse_plan("hand_under_offset", plan) == {
        "gripper": [128, 51], "height": [31], "closed": [0], "object": [76, 153], "goal": [25, 230],
        "under": [120, 200], "offset": [80, 143]}
    assert parse_plan("points", "goal 1 2 gripper 3 4") == {"goal": [1, 2], "gripper": [3, 4]}
    broken = [
        # The object's row and the under point's word missing (a free plan of item 15's trace).
        "gripper 128 51 height 31 closed 0 green sphere 201 goal 201 180 180 180 offset 128 128",
        plan.replace("closed 0", "closed 2"),             # the fingers are 0 or 1
        plan.replace("goal 25", "goal 256"),              # off the 0..255 bins
        plan.replace("red cube", "the big red cube"),     # still a name of 4 words: fine, see below
        plan.replace("red cube ", ""),                    # no name
        plan + " 7",                                      # something after the last field
        plan.replace("under", "gripper"),
    ]
    results = [parse_plan("hand_under_offset", text) for text in broken]
    assert results[3] is not None and results[3]["object"] == [76, 153]
    assert [r is None for i, r in enumerate(results) if i != 3] == [True] * 6
    assert parse_plan("hand_under_offset", plan.replace("red cube", "a very big red cube")) is None
