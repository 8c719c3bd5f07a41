"""Helpers for tests that run several ROS 2 processes talking over DDS on loopback.

Every test gets its own ROS_DOMAIN_ID (so tests and parallel runs never hear
each other), the project's Fast DDS profile, and ROS_PYTHON_CHECK_FIELDS=1 (a
Python int assigned to a float field is then an error instead of garbage on
the wire).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

import pytest

REPO = Path(__file__).resolve().parent.parent
DDS_PROFILE = REPO / "config" / "fastdds_localhost.xml"

# Domain ids 0..101 and 215..232 are safe for every participant count; start
# from the pid so two suites running at once rarely collide.
_domain_ids = itertools.count(1 + os.getpid() % 50)


def next_domain_id() -> int:
    """Return a fresh ROS_DOMAIN_ID for one test (1..101)."""
    return 1 + (next(_domain_ids) % 101)


def ros_available() -> bool:
    """True when rclpy and the generated rt2_ros interfaces import."""
    try:
        import rclpy  # noqa: F401
        import rt2_ros.msg  # noqa: F401
    except ImportError:
        return False
    return True


requires_ros = pytest.mark.skipif(not ros_available(), reason="rclpy / rt2_ros interfaces not built")


def ros_env(domain_id: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a ROS process of one test: own domain, loopback profile, field checks."""
    env = dict(os.environ)
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)  # would override the profile's transports
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_PYTHON_CHECK_FIELDS": "1",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def ros_domain(monkeypatch) -> int:
    """A fresh domain id, also applied to this process's environment (for in-process nodes)."""
    domain = next_domain_id()
    for key, value in ros_env(domain).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    return domain


class ProcessGroup:
    """Start Python processes for one test and always stop them (SIGINT, then kill)."""

    def __init__(self, domain_id: int, log_dir: Path):
        self.domain_id = domain_id
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: Iterable[str], extra_env: Mapping[str, str] | None = None
              ) -> subprocess.Popen:
        """Start ``python <args>`` (or ``python -m ...``) with the test's ROS environment."""
        log = open(self.log_dir / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                env=ros_env(self.domain_id, extra_env), cwd=str(REPO))
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        """Return what process ``name`` printed so far."""
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT every process (clean shutdown path), then kill the stragglers."""
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(2)
        deadline = time.monotonic() + timeout
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def process_group(tmp_path):
    """A ProcessGroup on a fresh ROS domain, stopped at the end of the test."""
    group = ProcessGroup(next_domain_id(), tmp_path)
    try:
        yield group
    finally:
        group.stop()
