"""Choose MuJoCo's headless OpenGL backend before ``mujoco`` is imported.

``mujoco`` reads ``MUJOCO_GL`` once, when it is first imported, and PyOpenGL
fixes its platform on its own first import, so the choice cannot be retried in
the same process.  When the user has not set ``MUJOCO_GL`` we therefore probe
each candidate (EGL, then OSMesa) in a short child process that creates a real
GL context, and export the first that works — child processes (ROS nodes
started by ``rt2-ros up``) inherit the choice and skip the probe.

Import this module (``configure_gl_backend()`` runs on import) before
``import mujoco`` anywhere in the simulator.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

from rt2_ros.sim.errors import RenderBackendError

__all__ = ["configure_gl_backend", "choose_backend", "gl_backend", "require_gl_backend", "BACKEND_PACKAGES"]

#: Debian packages that provide each backend's library (what set-up must install).
BACKEND_PACKAGES = {"egl": "libegl1 libgl1-mesa-dri", "osmesa": "libosmesa6"}

_PROBE = ("from mujoco.{backend} import GLContext\n"
          "context = GLContext(8, 8)\n"
          "context.make_current()\n"
          "context.free()\n")

_chosen: str | None = None
_failures: dict[str, str] = {}


def _probe(backend: str) -> str | None:
    """Return None if ``backend`` can create a GL context, else the reason it cannot."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE.format(backend=backend)], env=env,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def configure_gl_backend() -> str | None:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) to a working headless backend.

    Returns the backend in use: the user's ``MUJOCO_GL`` when set (never
    overridden), else the first of ``egl``, ``osmesa`` that creates a context.
    Returns None when neither works; :func:`require_gl_backend` then raises the
    error that names the Debian packages to install.  Physics never needs GL,
    so a machine without either backend can still simulate.
    """
    global _chosen
    if _chosen is not None:
        return _chosen
    user_choice = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user_choice:
        _chosen = user_choice
        return _chosen
    if "mujoco" in sys.modules:
        # Too late to steer mujoco's own choice; rendering will use what it picked.
        return None
    backend, failures = choose_backend()
    _failures.update(failures)
    if backend is not None:
        os.environ["MUJOCO_GL"] = backend
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
        _chosen = backend
    return backend


def choose_backend(probe: Callable[[str], str | None] = _probe,
                   candidates: tuple[str, ...] = ("egl", "osmesa")) -> tuple[str | None, dict[str, str]]:
    """Return the first candidate ``probe`` accepts (or None) and why the others failed."""
    failures: dict[str, str] = {}
    for backend in candidates:
        reason = probe(backend)
        if reason is None:
            return backend, failures
        failures[backend] = reason
    return None, failures


def gl_backend() -> str | None:
    """Return the backend chosen by :func:`configure_gl_backend` (None if none works)."""
    return _chosen


def require_gl_backend() -> str:
    """Return the working backend, or raise RenderBackendError naming what to install."""
    if _chosen is not None:
        return _chosen
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if not _failures:
        raise RenderBackendError(
            "cannot render: mujoco was imported before rt2_ros.sim chose a headless GL backend; "
            "set MUJOCO_GL=egl (or osmesa) in the environment")
    details = "; ".join(f"{name}: {reason}" for name, reason in _failures.items())
    raise RenderBackendError(
        "cannot render: no headless OpenGL backend works "
        f"(install the Debian packages {BACKEND_PACKAGES['egl']} for EGL or "
        f"{BACKEND_PACKAGES['osmesa']} for OSMesa, or set MUJOCO_GL); tried {details}")


configure_gl_backend()
