"""Speed of the attention-hint losses (``--grounding-weight`` under a plan) on this machine.

``grounding_loss`` with per-point queries and ``plan_reading_loss`` run batched
(one gather over the batch); until 2026-12-06 they looped over rows and points
in Python, which cost a noticeable share of a CPU training step.  This prints,
for the ``small`` preset's attention shape (3 heads) at a typical sequence
length, the forward + backward time of each loss, batched and as the old
per-row loops (kept here as the baseline, measured in the same run), median and
p99, and the ratio; it also checks that both give the same loss and gradient.

    python bench/grounding_loss_speed.py                 # batch 16, 200 repeats
    python bench/grounding_loss_speed.py --batch-size 32 --length 140
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rt2_ros.training.trainer import grounding_loss, plan_attention_mass, plan_reading_loss  # noqa: E402


def per_row_grounding_loss(attentions: torch.Tensor, target: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The replaced implementation: a Python loop over rows and points."""
    losses = []
    for row in range(target.shape[0]):
        for k, point in enumerate(target[row].tolist()):
            if point >= 0 and bool(queries[row, k].any()):
                on_point = attentions[row, :, :, point].mean(0)
                losses.append(-on_point[queries[row, k]].clamp_min(1e-6).log().mean())
    return torch.stack(losses).mean()


def per_row_plan_reading_loss(attentions: torch.Tensor, numbers: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The replaced implementation: a Python loop over rows."""
    losses = []
    for row in torch.nonzero((numbers >= 0).any(-1)).flatten():
        positions = numbers[row][numbers[row] >= 0]
        mass = plan_attention_mass(attentions[row], queries[row], positions)
        losses.append(-mass.clamp_min(1e-6).log().mean())
    return torch.stack(losses).mean()


def timed(loss_fn, args: tuple, attentions: torch.Tensor, repeats: int) -> tuple[list[float], float, torch.Tensor]:
    """ms per forward + backward over ``repeats`` calls, the loss and its gradient."""
    times = []
    for _ in range(repeats):
        attentions.grad = None
        start = time.perf_counter()
        loss = loss_fn(attentions, *args)
        loss.backward()
        times.append((time.perf_counter() - start) * 1e3)
    return times, float(loss.detach()), attentions.grad.clone()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--heads", type=int, default=3, help="attention heads (small preset: 3)")
    parser.add_argument("--length", type=int, default=112, help="sequence length (64 image tokens + text)")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    b, h, n = args.batch_size, args.heads, args.length
    attentions = torch.rand(b, h, n, n).softmax(-1).requires_grad_()
    # An object_points plan: 3 points, each asked by the 2 positions writing its numbers; 6 numbers
    # read by 8 action positions; a third of the rows without a plan (VQA samples).
    target = torch.randint(0, 64, (b, 3))
    queries = torch.zeros(b, 3, n, dtype=torch.bool)
    numbers = torch.arange(n - 20, n - 14).repeat(b, 1)
    plan_queries = torch.zeros(b, n, dtype=torch.bool)
    for k in range(3):
        queries[:, k, n - 20 + 2 * k:n - 18 + 2 * k] = True
    plan_queries[:, n - 9:n - 1] = True
    no_plan = torch.arange(b) % 3 == 2
    target[no_plan], numbers[no_plan] = -1, -1
    print(f"batch {b}, heads {h}, length {n}, {args.repeats} repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'loss':<22}{'batched ms (median / p99)':>28}{'per-row ms (median / p99)':>28}{'ratio':>8}")
    for name, new, old, extra in (("grounding (per point)", grounding_loss, per_row_grounding_loss, (target, queries)),
                                  ("plan reading", plan_reading_loss, per_row_plan_reading_loss,
                                   (numbers, plan_queries))):
        new_times, new_loss, new_grad = timed(new, extra, attentions, args.repeats)
        old_times, old_loss, old_grad = timed(old, extra, attentions, args.repeats)
        if abs(new_loss - old_loss) > 1e-4 or float((new_grad - old_grad).abs().max()) > 1e-6:
            print(f"{name}: the batched loss differs from the per-row one ({new_loss} vs {old_loss})")
            return 1
        med_new, med_old = statistics.median(new_times), statistics.median(old_times)
        print(f"{name:<22}{med_new:>15.2f} / {float(np.percentile(new_times, 99)):<11.2f}"
              f"{med_old:>15.2f} / {float(np.percentile(old_times, 99)):<11.2f}{med_old / med_new:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
