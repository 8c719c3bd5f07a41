"""Per-action latency of the transformers backend against plain ``model.generate``.

For each model size, on the same model, image and prompt, interleaved run by run:

* ``rt2_ros``      TransformersPolicy.act: processor + prefill + 7 cached single-token
                   steps, output projection restricted to the legal rows (the backend);
* ``generate``     processor + ``model.generate(max_new_tokens=8, do_sample=False)``,
                   unconstrained (what a plain Hugging Face integration does);
* ``loop_free``    our loop without any constraint (full-vocabulary argmax);
* ``loop_mask``    our loop with the constraint as full logits + mask.

``generate / rt2_ros`` is the speed-up; ``(rt2_ros - loop_free) / loop_free``
is the cost of the constraint itself (negative: the constraint saves time,
because only 256 rows of the output projection are computed).

Models are random (built in memory by :mod:`rt2_ros.testing.tiny_vlm`):
``tiny``, ``0.5b`` (PaliGemma-like, 257k vocabulary) on CPU; ``3b``
(PaliGemma-3B) and ``7b`` (OpenVLA-7B-like) need a GPU::

    python bench/decode.py --sizes tiny,0.5b --runs 10
    python bench/decode.py --device cuda --dtype bfloat16 --sizes 3b,7b --runs 30
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rt2_ros.policy.profiles import resolve_action_setup  # noqa: E402
from rt2_ros.policy.transformers_backend import (TransformersPolicy, resolve_device,  # noqa: E402
                                                 resolve_dtype)
from rt2_ros.testing.tiny_vlm import SHAPES, TINY_INIT_STD, make_vlm, parameter_count  # noqa: E402

INSTRUCTION = "pick up the red block"
VARIANTS = ("rt2_ros", "generate", "loop_free", "loop_mask")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_size(size: str, device: torch.device, dtype: torch.dtype, runs: int, warmup: int) -> dict:
    """Measure every variant on one model; returns ms lists per variant and the act stage medians."""
    t0 = time.perf_counter()
    model, processor = make_vlm(size, dtype=dtype, device=device,
                                init_std=TINY_INIT_STD if size == "tiny" else None)
    built_s = time.perf_counter() - t0
    setup = resolve_action_setup(processor.tokenizer, profile="rt2")
    policy = TransformersPolicy(model, processor, setup)
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    text = policy.prompt_text(INSTRUCTION)
    from PIL import Image

    def run_generate() -> list[int]:
        inputs = processor(images=[Image.fromarray(image)], text=[text], return_tensors="pt")
        inputs.pop("labels", None)
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        sync(device)
        return out[0, inputs["input_ids"].shape[1]:].tolist()

    calls = {
        "rt2_ros": lambda: policy.act(image, INSTRUCTION),
        "generate": run_generate,
        "loop_free": lambda: policy.generate_action_ids(image, INSTRUCTION, selection="none"),
        "loop_mask": lambda: policy.generate_action_ids(image, INSTRUCTION, selection="mask"),
    }
    generated = run_generate()
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    stages: dict[str, list[float]] = {"preprocess": [], "prefill": [], "decode": []}
    for _ in range(runs):
        for name in VARIANTS:  # interleaved so that load changes hit every variant alike
            start = time.perf_counter()
            result = calls[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
            if name == "rt2_ros":
                for stage in stages:
                    stages[stage].append(result.timings[stage])
    return {"size": size, "params": parameter_count(model), "built_s": built_s, "times": times,
            "stages": {k: statistics.median(v) for k, v in stages.items()},
            "generate_tokens": len(generated),
            "vocab": policy.logits_width}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny,0.5b", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per variant first")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SHAPES]
    if unknown:
        parser.error(f"--sizes: unknown size {unknown[0]!r} (choose from {', '.join(SHAPES)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    print(f"device={device} dtype={str(dtype).replace('torch.', '')} threads={torch.get_num_threads()} "
          f"runs={args.runs} torch={torch.__version__}")
    for size in sizes:
        result = bench_size(size, device, dtype, args.runs, args.warmup)
        times = result["times"]
        med = {name: statistics.median(values) for name, values in times.items()}
        p99 = {name: float(np.percentile(values, 99)) for name, values in times.items()}
        print(f"\n[{size}] {result['params'] / 1e6:.1f}M parameters, logits width {result['vocab']}, "
              f"built in {result['built_s']:.1f} s; generate produced {result['generate_tokens']} tokens")
        print(f"  {'variant':<10} {'median ms':>10} {'p99 ms':>10}")
        for name in VARIANTS:
            print(f"  {name:<10} {med[name]:>10.2f} {p99[name]:>10.2f}")
        stages = result["stages"]
        print(f"  rt2_ros stages (median ms): preprocess {stages['preprocess']:.2f}, "
              f"prefill {stages['prefill']:.2f}, decode {stages['decode']:.2f}")
        print(f"  speed-up vs generate: {med['generate'] / med['rt2_ros']:.2f}x median, "
              f"{p99['generate'] / p99['rt2_ros']:.2f}x p99")
        print(f"  constraint cost vs unconstrained loop: "
              f"{(med['rt2_ros'] - med['loop_free']) / med['loop_free'] * 100:+.1f}% "
              f"(full logits + mask: {(med['loop_mask'] - med['loop_free']) / med['loop_free'] * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
