"""What the demo records about an episode, and the figures made from it (pure Python, no rclpy).

Times: ``recv`` is the wall-clock time (``time.time()``) a message reached
the demo's observer; ``stamp`` is the message's header stamp (the sim node
stamps images with the wall-clock time of the render, and the policy node
gives each RT2Action the stamp of the image it acted on).  So
``recv - stamp`` of an action is the end-to-end latency from the camera
frame to the action the stack published for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["ActionRecord", "TwistRecord", "CameraModel", "FrameRecord", "EpisodeRecord",
           "AppliedStep", "applied_steps", "percentiles", "build_summary", "SUMMARY_KEYS"]


@dataclass(frozen=True)
class ActionRecord:
    """One RT2Action as received."""

    recv: float
    stamp: float
    step: int
    tokens: tuple[int, ...]
    terminate: bool
    delta_position: tuple[float, float, float]
    delta_rotation: tuple[float, float, float]
    gripper: float
    inference_ms: float

    @property
    def latency_ms(self) -> float:
        """Camera frame -> action received (ms); nan for an unstamped frame."""
        return (self.recv - self.stamp) * 1000.0 if self.stamp > 0 else math.nan


@dataclass(frozen=True)
class TwistRecord:
    """One TwistStamped the safety node sent to the arm controller."""

    recv: float
    linear: tuple[float, float, float]
    angular: tuple[float, float, float]


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics (px) and the optical frame's pose in the base frame (quaternion w, x, y, z)."""

    fx: float
    fy: float
    cx: float
    cy: float
    position: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]

    def project(self, point: Sequence[float]) -> tuple[float, float] | None:
        """Pixel (u, v) of a base-frame point, or None when it is behind the camera."""
        w, x, y, z = self.quaternion
        # Rotation matrix of the optical frame in the base frame; its transpose maps base -> camera.
        rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        p = rot.T @ (np.asarray(point, float) - np.asarray(self.position, float))
        if p[2] <= 1e-6:
            return None
        return self.fx * p[0] / p[2] + self.cx, self.fy * p[1] / p[2] + self.cy


@dataclass
class FrameRecord:
    """One camera frame and the state to draw on it (the newest known when it arrived)."""

    recv: float
    stamp: float
    image: np.ndarray
    action: ActionRecord | None = None
    ee_position: tuple[float, float, float] | None = None
    gripper_closedness: float | None = None
    gripper_command: float | None = None
    camera: CameraModel | None = None
    success: bool | None = None


@dataclass
class EpisodeRecord:
    """Everything recorded about one demo episode."""

    instruction: str = ""
    task: dict[str, Any] = field(default_factory=dict)
    actions: list[ActionRecord] = field(default_factory=list)
    twists: list[TwistRecord] = field(default_factory=list)
    frames: int = 0
    result: dict[str, Any] | None = None
    final_status: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    goal_sent: float = 0.0
    goal_done: float = 0.0


@dataclass(frozen=True)
class AppliedStep:
    """What the arm was commanded for one action: the twist as a per-step delta, and whether it was clamped."""

    step: int
    requested: tuple[float, ...]     # x, y, z (m), roll, pitch, yaw (rad) per step
    applied: tuple[float, ...] | None  # the matched twist * period; None when no twist was matched
    clamped: bool


def applied_steps(actions: Sequence[ActionRecord], twists: Sequence[TwistRecord],
                  control_rate_hz: float, *, tolerance: float = 1e-6,
                  window_s: float | None = None) -> list[AppliedStep]:
    """Match each action with the twist the safety node sent for it.

    The safety node publishes a new command as soon as an action arrives, so
    the command for an action is among the twists received from just before
    the action (the observer and the safety node receive it independently)
    until the next action.  The candidate closest to the requested twist
    (``delta * control_rate_hz``, DESIGN section 7) is taken; the step is
    clamped when even that one differs from the request.  Terminate actions
    request a zero twist.
    """
    if control_rate_hz <= 0:
        raise ValueError(f"control_rate_hz: expected a number > 0, got {control_rate_hz!r}")
    window = window_s if window_s is not None else 1.0 / control_rate_hz
    times = np.array([t.recv for t in twists])
    out = []
    for i, action in enumerate(actions):
        requested = np.zeros(6) if action.terminate else np.array(
            [*action.delta_position, *action.delta_rotation], float)
        end = actions[i + 1].recv if i + 1 < len(actions) else action.recv + window
        lo = int(np.searchsorted(times, action.recv - 0.02))
        hi = int(np.searchsorted(times, min(end, action.recv + window)))
        best, best_error = None, math.inf
        for twist in twists[lo:hi]:
            applied = np.array([*twist.linear, *twist.angular], float) / control_rate_hz
            error = float(np.max(np.abs(applied - requested)))
            if error < best_error:
                best, best_error = applied, error
        scale = max(1.0, float(np.max(np.abs(requested))))
        out.append(AppliedStep(action.step, tuple(float(v) for v in requested),
                               None if best is None else tuple(float(v) for v in best),
                               best is not None and best_error > tolerance * scale))
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """``{"median", "p99", "max"}`` of the finite values, rounded (None when there are none)."""
    arr = np.array([v for v in values if math.isfinite(v)], float)
    if arr.size == 0:
        return {"median": None, "p99": None, "max": None}
    return {"median": round(float(np.median(arr)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "max": round(float(arr.max()), 3)}


#: The keys every summary.json has (tests and users rely on them).
SUMMARY_KEYS = ("success", "terminated", "reason", "steps", "instruction", "task", "policy",
                "backend", "model", "privileged", "control_rate_hz", "hz_achieved",
                "latency_ms", "clamped_steps", "safety", "sim", "wall_s", "files")


def _diag_float(values: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(values[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def build_summary(record: EpisodeRecord, *, backend: str, model: str, policy: str,
                  privileged: bool, control_rate_hz: float, wall_s: float,
                  files: Mapping[str, str], interrupted: bool = False) -> dict[str, Any]:
    """The content of ``summary.json`` (see :data:`SUMMARY_KEYS`)."""
    actions = record.actions
    steps = applied_steps(actions, record.twists, control_rate_hz)
    if len(actions) >= 2 and actions[-1].recv > actions[0].recv:
        hz = (len(actions) - 1) / (actions[-1].recv - actions[0].recv)
    else:
        hz = None
    result = record.result or {}
    safety_values = next((v for k, v in record.diagnostics.items() if k.endswith("safety_node")), {})
    sim_values = next((v for k, v in record.diagnostics.items() if k.endswith("sim_node")), {})
    clamp_counts = {k[len("clamps."):]: int(v) for k, v in safety_values.items()
                    if k.startswith("clamps.") and v.isdigit()}
    return {
        "success": bool(record.final_status.get("success", False)),
        "terminated": bool(result.get("terminated", False)),
        "reason": "interrupted" if interrupted else str(result.get("reason", "no result")),
        "steps": int(result.get("steps", len(actions))),
        "instruction": record.instruction,
        "task": {"seed": record.task.get("seed"), "episode": record.task.get("episode"),
                 **(record.task.get("task") or {}), "objects": record.task.get("objects", [])},
        "policy": policy,
        "backend": backend,
        "model": model,
        "privileged": privileged,
        "control_rate_hz": control_rate_hz,
        "hz_achieved": None if hz is None else round(hz, 3),
        "latency_ms": {
            "image_to_action": percentiles([a.latency_ms for a in actions]),
            "inference": percentiles([a.inference_ms for a in actions]),
            "image_to_command": {
                "median": _diag_float(safety_values, "latency_ms.image_to_command.median"),
                "p99": _diag_float(safety_values, "latency_ms.image_to_command.p99")},
        },
        "clamped_steps": sum(s.clamped for s in steps),
        "safety": {"clamps": clamp_counts, "state": safety_values.get("state")},
        "sim": {"render_ms": {"median": _diag_float(sim_values, "render_ms.median"),
                              "p99": _diag_float(sim_values, "render_ms.p99")},
                "image_publish_ms": {"median": _diag_float(sim_values, "image_publish_ms.median"),
                                     "p99": _diag_float(sim_values, "image_publish_ms.p99")},
                "real_time_factor": _diag_float(sim_values, "real_time_factor"),
                "frames_recorded": record.frames,
                "first_success_sim_time": record.final_status.get("first_success_sim_time")},
        "episode_wall_s": round(record.goal_done - record.goal_sent, 3) if record.goal_done else None,
        "first_action_s": round(actions[0].recv - record.goal_sent, 3) if actions else None,
        "wall_s": round(wall_s, 3),
        "files": dict(files),
    }
