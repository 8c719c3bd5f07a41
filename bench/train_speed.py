"""Speed of the co-fine-tuning pieces on this machine.

Prints, for each from-scratch preset (``tiny``, ``small``) at the given batch
size, on synthetic samples (random images at the preset's size, rt2_arm
actions, short VQA answers, half robot half VQA):

* collate: ms per batch (processor + label building), median and p99;
* train step: ms per optimizer step (forward + backward + AdamW), median and p99,
  and the samples per second that makes;
* evaluation: ms per batch of :func:`rt2_ros.training.metrics.evaluate_model`;

and the simulator collection rate (``rt2-ros collect``: episodes and steps per
second, VQA included) over a few seeds.

    python bench/train_speed.py                       # batch 16, 20 steps per preset
    python bench/train_speed.py --batch-size 32 --steps 40 --episodes 10
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rt2_ros.action_language import load_embodiment  # noqa: E402
from rt2_ros.policy.constrained_decoding import free_text_mask  # noqa: E402
from rt2_ros.training.checkpoint import choose_scheme  # noqa: E402
from rt2_ros.training.collate import Example, Rt2Collator  # noqa: E402
from rt2_ros.training.from_scratch import SCRATCH_SHAPES, build_scratch_vlm  # noqa: E402


def line(name: str, times_ms: list[float], extra: str = "") -> str:
    p99 = float(np.percentile(times_ms, 99))
    return (f"  {name:<11} median {statistics.median(times_ms):7.1f} ms   p99 {p99:7.1f} ms"
            + (f"   {extra}" if extra else ""))


def synthetic_batch(size: int, image_size: int, rng: np.random.Generator) -> list[Example]:
    arm = load_embodiment("rt2_arm")
    examples = []
    for k in range(size):
        image = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        if k % 2:
            examples.append(Example("vqa", image, "what color is the object left of the red cube?", answer="blue"))
        else:
            tokens = [0] + rng.integers(0, 256, arm.num_tokens - 1).tolist()
            examples.append(Example("robot", image, "put the green sphere on the blue cube", tokens=tokens))
    return examples


def bench_preset(preset: str, batch_size: int, steps: int) -> None:
    from rt2_ros.training.collate import MixtureDataset
    from rt2_ros.training.metrics import evaluate_model
    from rt2_ros.training.samples import SampleSet

    rng = np.random.default_rng(0)
    model, processor = build_scratch_vlm(preset, ["put the green sphere on the blue cube"])
    scheme = choose_scheme("auto", processor.tokenizer, [])
    collator = Rt2Collator(processor, scheme, prefix_lm=True)
    image_size = SCRATCH_SHAPES[preset].image_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    collate_ms, step_ms = [], []
    for _ in range(steps + 2):
        examples = synthetic_batch(batch_size, image_size, rng)
        start = time.perf_counter()
        batch = collator(examples)
        collated = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        done = time.perf_counter()
        collate_ms.append((collated - start) * 1e3)
        step_ms.append((done - collated) * 1e3)
    collate_ms, step_ms = collate_ms[2:], step_ms[2:]  # the first steps warm up allocators
    samples_per_s = batch_size / ((statistics.median(collate_ms) + statistics.median(step_ms)) / 1e3)
    params = sum(p.numel() for p in model.parameters())
    print(f"{preset}: {params / 1e6:.2f} M parameters, {image_size} px, batch {batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(line("collate", collate_ms))
    print(line("train step", step_ms, f"{samples_per_s:.1f} samples/s (collate + step)"))
    arm = load_embodiment("rt2_arm")
    examples = synthetic_batch(batch_size, image_size, rng)
    robot = SampleSet.from_samples("robot", [(e.image, {"instruction": e.text, "tokens": e.tokens, "action": {}})
                                             for e in examples if e.kind == "robot"])
    vqa = SampleSet.from_samples("vqa", [(e.image, {"question": e.text, "answer": e.answer})
                                         for e in examples if e.kind == "vqa"])
    dataset = MixtureDataset(robot, vqa, arm)
    mask = free_text_mask(processor.tokenizer, int(model.get_output_embeddings().weight.shape[0]))
    eval_ms = []
    for _ in range(5):
        start = time.perf_counter()
        evaluate_model(model, dataset, collator, scheme, arm, mask, batch_size=batch_size)
        eval_ms.append((time.perf_counter() - start) * 1e3)
    print(line("evaluation", eval_ms, f"per batch of {batch_size}"))


def bench_collect(episodes: int) -> None:
    from rt2_ros.training.sim_data import CollectConfig, collect

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = collect(Path(tmp) / "data", CollectConfig(episodes=episodes, seed=500))
        seconds = time.perf_counter() - start
    print(f"collect (96 px, no shadows, 5 Hz): {episodes} episodes, {summary['steps']} steps, "
          f"{summary['vqa_items']} VQA items in {seconds:.1f} s = {episodes / seconds:.2f} episodes/s, "
          f"{summary['steps'] / seconds:.0f} steps/s; expert success {summary['successes']}/{episodes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--presets", default="tiny,small")
    args = parser.parse_args()
    for preset in args.presets.split(","):
        bench_preset(preset, args.batch_size, args.steps)
    if args.episodes:
        bench_collect(args.episodes)


if __name__ == "__main__":
    main()
