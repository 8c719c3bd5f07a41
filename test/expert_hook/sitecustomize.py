"""Test-only stand-in for the three `expert` backend hooks, until they are in the stack's code.

The cross-process expert needs (see rt2_ros/nodes/expert_bridge.py):

1. ``rt2_ros.nodes.parameters``: ``expert`` among the ``backend`` choices;
2. ``rt2_ros.policy.factory.make_policy``: ``expert`` ->
   ``StateFedExpertPolicy.from_config(cfg)``;
3. ``rt2_ros.nodes.policy_node.PolicyNode``: ``attach_expert_state(self, policy)``
   when the backend is ``expert``.

Processes started with this directory first on PYTHONPATH import this module
at start-up (Python's ``sitecustomize`` hook).  For each hook the code does
not have yet, it applies the same change at import time of the module
concerned; a hook the code already has is left alone, so this file becomes a
no-op (and can be deleted) once the hooks are in.  Nothing outside the tests
uses it.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import inspect
import sys
from typing import Any, Callable

APPLIED: list[str] = []


def _patch_parameters(module: Any) -> None:
    specs = module.POLICY_NODE_PARAMETERS
    backend = next(s for s in specs if s.name == "backend")
    if "expert" in backend.choices:
        return
    import dataclasses

    patched = dataclasses.replace(backend, choices=(*backend.choices, "expert"))
    module.POLICY_NODE_PARAMETERS = tuple(patched if s is backend else s for s in specs)
    module.NODE_PARAMETERS["policy_node"] = module.POLICY_NODE_PARAMETERS
    APPLIED.append("parameters")


def _patch_factory(module: Any) -> None:
    if "StateFedExpertPolicy" in inspect.getsource(module.make_policy):
        return
    original = module.make_policy

    def make_policy(cfg: Any) -> Any:
        if cfg.backend == "expert":
            from rt2_ros.sim.expert import StateFedExpertPolicy

            return StateFedExpertPolicy.from_config(cfg)
        return original(cfg)

    module.make_policy = make_policy
    APPLIED.append("factory")


def _patch_runtime(module: Any) -> None:
    original = module.run_node

    def run_node(name: str, make_node: Callable[[], Any], make_executor: Any, args: Any = None) -> int:
        def make() -> Any:
            node = make_node()
            source = inspect.getsource(type(node).__init__)
            if (name == "policy_node" and "attach_expert_state" not in source
                    and node.settings.policy.backend == "expert"):
                from rt2_ros.nodes.expert_bridge import attach_expert_state

                attach_expert_state(node, node.policy)
            return node

        return original(name, make, make_executor, args)

    module.run_node = run_node
    APPLIED.append("runtime")


_PATCHES = {"rt2_ros.nodes.parameters": _patch_parameters,
            "rt2_ros.policy.factory": _patch_factory,
            "rt2_ros.nodes.runtime": _patch_runtime}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs the patch of a module right after the module's own code ran."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _AfterImport())
