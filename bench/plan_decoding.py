"""Layout against free plan decoding of one planning checkpoint, on fresh expert episodes.

A checkpoint trained with ``rt2-ros train --plan KIND`` writes its plan in that
kind's layout; ``plan_decoding: free`` lets the model write every word,
``layout`` writes the words itself and leaves the model the object's name and
the numbers (README, Plan layout decoding).  On every ``--stride``-th step of
fresh episodes written by ``rt2-ros collect`` (their steps carry the grounding
points and the hand's state, so the true plan is known), both decode the same
image and instruction, in the same run, alternating which goes first:

* **plans in the layout**: the share of plans that follow the layout word for
  word (:func:`~rt2_ros.action_language.plans.parse_plan`; layout decoding
  must score 1.00);
* **plan numbers**: mean |error| of each number against the true plan, over the
  steps whose plan follows the layout;
* **actions**: mean |bin error| per action dim against the expert's, on all
  steps and on the steps whose free plan broke the layout;
* **time per action**: median and p99 (ms) and the ratio layout / free.

``--hand-state`` gives both the step's hand state (``rt2-ros eval --hand-state``).

    rt2-ros collect --episodes 40 --seed 7000 --out /tmp/fresh --image-size 224 --shadows \\
        --exclude-objects purple --vqa-scenes 0
    python bench/plan_decoding.py --model CKPT --episodes /tmp/fresh --decoding median --hand-state

Seeds of the fresh episodes must not overlap the training seeds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from rt2_ros.policy.config import DECODINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="planning checkpoint (rt2-ros train --plan output)")
    parser.add_argument("--episodes", required=True, help="fresh episodes: a collect output or a bag directory")
    parser.add_argument("--stride", type=int, default=5, help="every N-th step of each episode (default 5)")
    parser.add_argument("--decoding", default="greedy", choices=DECODINGS,
                        help="how the action tokens are decoded (default greedy)")
    parser.add_argument("--hand-state", action="store_true",
                        help="give the policy each step's hand height and last gripper command")
    args = parser.parse_args(argv)
    if args.stride < 1:
        raise SystemExit(f"--stride: expected an integer >= 1, got {args.stride}")

    from rt2_ros.action_language.plans import parse_plan, plan_number_labels
    from rt2_ros.errors import ConfigError
    from rt2_ros.policy.base import HandState
    from rt2_ros.policy.transformers_backend import TransformersPolicy
    from rt2_ros.training.episodes import find_episodes, read_episode, sample_plan

    free = TransformersPolicy.from_pretrained(args.model, dtype="float32", device="cpu", decoding=args.decoding,
                                              plan_decoding="free")
    kind = free.plan_kind
    if not kind:
        raise SystemExit(f"{args.model}: not a planning checkpoint that names its plan kind "
                         f"(rt2_ros.json \"plan\"); nothing to compare")
    layout = TransformersPolicy(free.model, free.processor, free.setup, chain_of_thought=True,
                                max_plan_tokens=free.max_plan_tokens, decoding=args.decoding,
                                plan_decoding="layout")
    embodiment = free.embodiment
    episodes = [read_episode(path, embodiment) for path in find_episodes(args.episodes)]
    if not episodes:
        raise SystemExit(f"{args.episodes}: no episodes")
    modes = {"free": free, "layout": layout}
    labels = plan_number_labels(kind)
    in_layout = {m: [] for m in modes}
    action_error = {m: [] for m in modes}
    plan_error = {m: [] for m in modes}
    times = {m: [] for m in modes}
    count = 0
    for episode in episodes:
        for step in episode.steps[::args.stride]:
            try:
                truth = sample_plan(kind, step.points or {}, episode.info.objects, step.height, step.gripper_command)
            except ConfigError as exc:
                raise SystemExit(f"{episode.path}: {exc}") from None
            wanted = parse_plan(kind, truth or "")
            if wanted is None:
                raise SystemExit(f"{episode.path}: steps without the grounding points plan {kind!r} needs; "
                                 f"collect with this version of rt2-ros collect")
            expert = embodiment.encode({n: step.action[n] for n in embodiment.names})
            hand = HandState(step.height, step.gripper_command) if args.hand_state else None
            order = list(modes) if count % 2 == 0 else list(modes)[::-1]
            for mode in order:
                start = time.perf_counter()
                out = modes[mode].act(step.image, step.instruction, hand)
                times[mode].append((time.perf_counter() - start) * 1e3)
                parsed = parse_plan(kind, out.plan)
                in_layout[mode].append(parsed is not None)
                action_error[mode].append([abs(a - b) for a, b in zip(out.tokens, expert)])
                if parsed is not None:
                    got = [n for field in wanted for n in parsed[field]]
                    true = [n for field in wanted for n in wanted[field]]
                    plan_error[mode].append([abs(a - b) for a, b in zip(got, true)])
            count += 1
    broke = ~np.array(in_layout["free"])
    print(f"checkpoint {args.model} (plan {kind}); {len(episodes)} fresh episodes from {args.episodes}; "
          f"{count} steps (every {args.stride}th), {args.decoding} decoding"
          f"{', hand state given' if args.hand_state else ''}")
    print("plans in the layout: " + "  ".join(f"{m} {np.mean(in_layout[m]):.2f}" for m in modes))
    print("plan numbers vs the true plan, mean |error| over plans in the layout:")
    print("  " + " " * 8 + " ".join(f"{label.replace('gripper', 'grip'):>11}" for label in labels))
    for mode in modes:
        values = np.array(plan_error[mode], dtype=float)
        cells = values.mean(axis=0) if len(values) else [float("nan")] * len(labels)
        print(f"  {mode:<7} " + " ".join(f"{v:11.1f}" for v in cells) + f"   ({len(values)} plans)")
    print("action vs the expert's, mean |bin error| per dim:")
    print("  " + " " * 22 + " ".join(f"{n:>9}" for n in embodiment.names))
    for mode in modes:
        values = np.array(action_error[mode], dtype=float)
        print(f"  {mode + ', all steps':<21} " + " ".join(f"{v:9.1f}" for v in values.mean(axis=0)))
    for mode in modes:
        values = np.array(action_error[mode], dtype=float)[broke]
        cells = values.mean(axis=0) if len(values) else [float("nan")] * len(embodiment.names)
        print(f"  {mode + ', free broke':<21} " + " ".join(f"{v:9.1f}" for v in cells)
              + f"   ({int(broke.sum())} steps)")
    medians = {m: float(np.median(times[m])) for m in modes}
    print("time per action: " + "  ".join(f"{m} median {medians[m]:.0f} ms p99 {np.percentile(times[m], 99):.0f} ms"
                                          for m in modes)
          + f"  layout / free {medians['layout'] / medians['free']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
