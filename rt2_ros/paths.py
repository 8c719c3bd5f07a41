"""Where the package's data files (config/, launch/, rviz/) live.

In a colcon workspace they are installed to ``share/rt2_ros``; in pip mode the
package is installed editable and they sit next to it in the repository.
``RT2_ROS_SHARE`` overrides both.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """Return the directory that holds ``config/``, ``launch/`` and ``rviz/``."""
    override = os.environ.get("RT2_ROS_SHARE")
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parent.parent
    if (repo / "config" / "embodiments").is_dir():
        return repo
    try:  # colcon install: share/rt2_ros
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("rt2_ros"))
    except Exception:  # noqa: BLE001 - any failure means "not installed that way"
        return repo


def config_dir() -> Path:
    """Return the directory of parameter files, embodiments and the DDS profile."""
    return share_dir() / "config"


def embodiments_dir() -> Path:
    """Return the directory of the bundled embodiment YAML files."""
    return config_dir() / "embodiments"
