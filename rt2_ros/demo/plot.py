"""The demo plot (PNG, matplotlib's Agg backend): what was commanded, what the safety layer let through, how fast.

Three panels over the episode's steps:

1. translation per step (cm): the policy's requested delta (solid) and the
   delta the safety node actually commanded (twist x period, dashed); steps
   where the safety node clamped are marked;
2. gripper command (0 = open .. 1 = closed) and the terminate step;
3. latency per step (ms): camera frame -> action published, and the model's
   inference time alone, with their medians.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rt2_ros.demo.records import ActionRecord, AppliedStep

__all__ = ["write_plot"]

_AXES = (("x", "tab:red"), ("y", "tab:green"), ("z", "tab:blue"))


def write_plot(path: Path, actions: Sequence[ActionRecord], applied: Sequence[AppliedStep], *,
               title: str, subtitle: str) -> Path:
    """Draw the three panels for ``actions`` into ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = np.array([a.step for a in actions], float)
    fig, (ax_move, ax_grip, ax_lat) = plt.subplots(
        3, 1, figsize=(9.0, 8.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 2]})
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.text(0.5, 0.945, subtitle, ha="center", fontsize=9, color="0.3")

    if len(actions):
        for i, (name, color) in enumerate(_AXES):
            requested = [100.0 * a.delta_position[i] for a in actions]
            ax_move.plot(steps, requested, color=color, lw=1.8, marker="o", ms=3,
                         label=f"d{name} requested")
            commanded = [math.nan if s.applied is None else 100.0 * s.applied[i] for s in applied]
            ax_move.plot(steps, commanded, color=color, lw=1.2, ls="--", alpha=0.8,
                         label=f"d{name} commanded")
        clamped = [s.step for s in applied if s.clamped]
        for k, step in enumerate(clamped):
            ax_move.axvspan(step - 0.4, step + 0.4, color="orange", alpha=0.25,
                            label="clamped by safety" if k == 0 else None)
    ax_move.axhline(0.0, color="0.6", lw=0.8)
    ax_move.set_ylabel("translation per step (cm)")
    if len(actions):
        ax_move.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7, ncol=4,
                       frameon=False)
    ax_move.grid(alpha=0.3)

    if len(actions):
        ax_grip.step(steps, [a.gripper for a in actions], where="post", color="tab:purple",
                     lw=1.8, label="gripper command")
        terminates = [a.step for a in actions if a.terminate]
        for k, step in enumerate(terminates):
            ax_grip.axvline(step, color="black", ls=":", lw=1.5, label="terminate" if k == 0 else None)
    ax_grip.set_ylim(-0.1, 1.1)
    ax_grip.set_yticks([0, 1], ["open", "closed"])
    if len(actions):
        ax_grip.legend(loc="center right", fontsize=7, framealpha=0.85)
    ax_grip.grid(alpha=0.3)

    if len(actions):
        latency = np.array([a.latency_ms for a in actions], float)
        inference = np.array([a.inference_ms for a in actions], float)
        ax_lat.plot(steps, latency, color="tab:orange", marker="o", ms=3, lw=1.5,
                    label="camera frame -> action")
        ax_lat.plot(steps, inference, color="tab:gray", marker="s", ms=3, lw=1.2,
                    label="inference")
        for values, color in ((latency, "tab:orange"), (inference, "tab:gray")):
            finite = values[np.isfinite(values)]
            if finite.size:
                median = float(np.median(finite))
                ax_lat.axhline(median, color=color, ls="--", lw=0.9)
                ax_lat.annotate(f"median {median:.1f} ms", (steps[-1], median), xytext=(4, 3),
                                textcoords="offset points", fontsize=7, color=color, ha="right")
        ax_lat.set_ylim(bottom=0)
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("policy step")
    if len(actions):
        ax_lat.legend(loc="upper left", fontsize=7, framealpha=0.85)
    ax_lat.grid(alpha=0.3)
    if not len(actions):
        ax_move.text(0.5, 0.5, "no action was published", transform=ax_move.transAxes,
                     ha="center", va="center", fontsize=12, color="tab:red")

    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
