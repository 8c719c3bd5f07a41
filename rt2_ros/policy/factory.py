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
        # Privileged-state reference, not a learned model: it plans from the
        # simulator's state, which the policy node feeds it from sim_node's
        # sim/privileged_state topic (rt2_ros.nodes.expert_bridge).
        from rt2_ros.sim.expert import StateFedExpertPolicy

        return StateFedExpertPolicy.from_config(cfg)
    raise ConfigError(f"backend: expected one of transformers, remote, scripted, expert, "
                      f"got {cfg.backend!r}")
