"""Shared fixtures: tiny random VLM checkpoints, built once per test session, offline.

Every fixture builds lazily (only sessions that use it pay, ~0.1-0.5 s each
after transformers is imported) into a session temp directory:

* ``tiny_paligemma_dir``  PaliGemma + word-level tokenizer -> ``rt2`` profile, ``integer`` scheme
* ``tiny_llava_dir``      LLaVA + word-level tokenizer     -> ``rt2`` profile, ``integer`` scheme
* ``tiny_bpe_vlm_dir``    LLaVA + BPE tokenizer, ``rt2_ros.json`` naming a ``least_frequent`` scheme
* ``tiny_openvla_dir``    LLaVA + BPE, OpenVLA ``norm_stats`` for one dataset (``bridge_orig``)
* ``tiny_openvla_multi_dir``  same with two datasets (``bridge_orig``, ``fractal``): needs ``unnorm_key``

Hugging Face hub access is switched off for the whole session (and for the
subprocesses tests start, which inherit the environment).  Torch runs one
intra-op thread unless OMP_NUM_THREADS says otherwise: the models are tiny,
and OpenMP threads spinning against other processes on shared CI cores made
a 20 ms forward take up to a second.
"""
from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Generated message classes read this at import: a wrong field type is then an
# error instead of garbage on the wire (DESIGN section 8).
os.environ.setdefault("ROS_PYTHON_CHECK_FIELDS", "1")


@pytest.fixture(scope="session")
def tiny_paligemma_dir(tmp_path_factory):
    """A tiny random PaliGemma checkpoint (integer scheme)."""
    from rt2_ros.testing.tiny_vlm import build_tiny_paligemma

    return build_tiny_paligemma(tmp_path_factory.mktemp("tiny_paligemma"))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A tiny random LLaVA checkpoint (integer scheme)."""
    from rt2_ros.testing.tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def tiny_bpe_vlm_dir(tmp_path_factory):
    """A tiny random LLaVA with a BPE tokenizer and a least_frequent scheme in rt2_ros.json."""
    from rt2_ros.testing.tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_bpe_vlm"), tokenizer="bpe")


@pytest.fixture(scope="session")
def tiny_openvla_dir(tmp_path_factory):
    """A tiny random OpenVLA-like checkpoint (last scheme, statistics of one dataset)."""
    from rt2_ros.testing.tiny_vlm import build_tiny_openvla

    return build_tiny_openvla(tmp_path_factory.mktemp("tiny_openvla"))


@pytest.fixture(scope="session")
def tiny_openvla_multi_dir(tmp_path_factory):
    """Like ``tiny_openvla_dir`` but with statistics of two datasets."""
    from rt2_ros.testing.tiny_vlm import build_tiny_openvla

    return build_tiny_openvla(tmp_path_factory.mktemp("tiny_openvla_multi"),
                              datasets=("bridge_orig", "fractal"))


def pytest_configure(config):
    # transformers' PaliGemma processor builds training labels with np.array on
    # objects whose __array__ predates NumPy 2's copy keyword: harmless noise.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation:DeprecationWarning")
