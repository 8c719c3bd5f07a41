"""``rt2-ros demo``: the simulated arm, the stack and a policy in a closed loop, recorded.

- :mod:`rt2_ros.demo.runner` — starts the sim node and the stack (``rt2-ros
  up``) as processes, sends the instruction through ``rt2/execute``, records
  the episode and always stops everything;
- :mod:`rt2_ros.demo.records` — what was recorded, the applied (post-safety)
  deltas and clamps, and ``summary.json``;
- :mod:`rt2_ros.demo.video` — the annotated camera video (mp4, else GIF);
- :mod:`rt2_ros.demo.plot` — the episode plot (PNG).

:func:`default_policy` is the one place that decides what the demo runs when
no ``--backend`` is given.
"""
from __future__ import annotations

from pathlib import Path

from rt2_ros.paths import share_dir

__all__ = ["BUNDLED_MODEL_DIR", "default_policy", "policy_label", "EXPERT_LABEL"]

#: Where the co-fine-tuned tabletop checkpoint is bundled once it exists.  When
#: it holds a checkpoint (its ``rt2_ros.json``), the demo runs it by default.
BUNDLED_MODEL_DIR = share_dir() / "models" / "rt2_tabletop"

EXPERT_LABEL = "expert (privileged-state reference, not a learned model)"


def default_policy(bundled: Path = BUNDLED_MODEL_DIR) -> tuple[str, str]:
    """``(backend, model)`` the demo runs by default: the bundled model, else the expert."""
    if (bundled / "rt2_ros.json").is_file():
        return "transformers", str(bundled)
    return "expert", ""


def policy_label(backend: str, model: str = "") -> str:
    """How the demo names the policy on screen, in the video and in the summary."""
    if backend == "expert":
        return EXPERT_LABEL
    return f"{backend} ({model})" if model else backend
