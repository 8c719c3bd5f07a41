"""The simulated tabletop arm (MuJoCo; pure Python, no rclpy).

- :mod:`rt2_ros.sim.scene` — seeded scenes (objects by colour and shape) and their MJCF;
- :mod:`rt2_ros.sim.tabletop` — :class:`TabletopSim`: twist/gripper commands,
  fixed-rate physics in simulated time, rendering, state, task success;
- :mod:`rt2_ros.sim.tasks` — task kinds as data (``config/tasks.yaml``) and success predicates;
- :mod:`rt2_ros.sim.expert` — the privileged-state scripted expert and :class:`ExpertPolicy`;
- :mod:`rt2_ros.sim.rollout` — run a policy for an episode without ROS.

Names are imported lazily so that ``rt2_ros.sim.tasks`` (pure) does not pay
for MuJoCo and the GL backend probe.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TabletopSim": "tabletop", "SimConfig": "tabletop", "Pose": "tabletop", "GripperState": "tabletop",
    "StepReport": "tabletop", "ACTION_KEYS": "tabletop", "CAMERAS": "tabletop",
    "SceneSpec": "scene", "ObjectSpec": "scene", "generate_scene": "scene", "build_mjcf": "scene",
    "TaskSpec": "tasks", "TaskLibrary": "tasks", "SceneSnapshot": "tasks", "ObjectState": "tasks",
    "make_task": "tasks", "sample_task": "tasks", "parse_instruction": "tasks", "evaluate": "tasks",
    "load_task_library": "tasks",
    "ScriptedExpert": "expert", "ExpertPolicy": "expert", "ExpertSettings": "expert",
    "run_episode": "rollout", "EpisodeResult": "rollout",
    "SimError": "errors", "RenderBackendError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rt2_ros.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rt2_ros.sim.{_EXPORTS[name]}"), name)
