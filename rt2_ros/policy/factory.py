"""Build the configured policy backend.

Imports are lazy so that choosing the ``scripted`` or ``remote`` backend never
pays for importing torch and transformers.
"""
from __future__ import annotations

from rt2_ros.policy.base import Policy
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.errors import ConfigError


def make_policy(cfg: PolicyConfig) -> Policy:
    """Return a ready-to-use Policy for ``cfg.backend`` (raises ConfigError / PolicyError)."""
    if cfg.backend == "transformers":
        from rt2_ros.policy.transformers_backend import TransformersPolicy

        return TransformersPolicy.from_config(cfg)
    if cfg.backend == "remote":
        from rt2_ros.policy.remote import RemotePolicy

        return RemotePolicy.from_config(cfg)
    if cfg.backend == "scripted":
        from rt2_ros.policy.scripted import ScriptedPolicy

        return ScriptedPolicy.from_config(cfg)
    if cfg.backend == "expert":
        # The expert reads privileged simulator state, so it only exists inside
        # a process that owns the simulator (the sim node / data collection).
        raise ConfigError("backend: 'expert' needs the simulator's state; run it through "
                          "`rt2-ros demo` or rt2_ros.sim, not as a stand-alone policy")
    raise ConfigError(f"backend: expected one of transformers, remote, scripted, got {cfg.backend!r}")
