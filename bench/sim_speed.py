"""Speed of the simulated tabletop, and how well the privileged expert solves its tasks.

Prints, on this machine:

* rendering: ms per frame (median, p99) of the head camera at 224x224 and
  640x480, with and without shadows (MuJoCo's renderer; the GL backend in use
  is printed — on a machine without a GPU that is Mesa's llvmpipe);
* reset: ms to draw and build a new scene (and the first frame after it);
* physics: raw ``mj_step`` steps per second on a typical scene, and the
  same through :meth:`TabletopSim.step` while a twist is being integrated
  (the real-time factor is simulated seconds per wall second);
* the expert (apply_action mode, no ROS, no rendering): success rate, mean
  steps and wall time per episode for each task kind over N seeds, at each
  control rate asked for.

    python bench/sim_speed.py                      # 50 seeds per kind at 5 Hz
    python bench/sim_speed.py --seeds 200 --rates 3,5,10 --frames 200
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from rt2_ros.sim import gl  # noqa: E402  (chooses the GL backend before mujoco loads)
import mujoco  # noqa: E402

from rt2_ros.sim.expert import ExpertPolicy  # noqa: E402
from rt2_ros.sim.rollout import run_episode  # noqa: E402
from rt2_ros.sim.tabletop import SimConfig, TabletopSim  # noqa: E402


def bench_render(frames: int) -> None:
    print(f"rendering (head camera, {frames} frames each, GL backend: {gl.gl_backend() or 'user-set'})")
    for shadows in (True, False):
        with TabletopSim(0, task="pick", config=SimConfig(shadows=shadows)) as sim:
            for size in ((224, 224), (480, 640)):
                sim.render(size=size)  # create the renderer outside the timing
                times = []
                for i in range(frames):
                    if i % 10 == 0:  # move the hand now and then so frames differ
                        sim.apply_action({"x": 0.01 if (i // 10) % 2 else -0.01}, 10.0)
                    start = time.perf_counter()
                    sim.render(size=size)
                    times.append((time.perf_counter() - start) * 1000)
                print(f"  {size[1]}x{size[0]:<4} shadows={'on ' if shadows else 'off'}  "
                      f"median {statistics.median(times):6.1f} ms   p99 {float(np.percentile(times, 99)):6.1f} ms")


def bench_reset(resets: int) -> None:
    with TabletopSim(0, task=None) as sim:
        sim.render()
        reset_ms, first_ms = [], []
        for seed in range(1, resets + 1):
            start = time.perf_counter()
            sim.reset(seed, task="random")
            middle = time.perf_counter()
            sim.render()
            reset_ms.append((middle - start) * 1000)
            first_ms.append((time.perf_counter() - middle) * 1000)
        print(f"reset to a new scene + task ({resets} seeds): median {statistics.median(reset_ms):.1f} ms, "
              f"first frame after it {statistics.median(first_ms):.1f} ms (renderer reused)")


def bench_physics(seconds: float) -> None:
    with TabletopSim(3, task=None) as sim:
        m, d = sim.model, sim.data
        n = int(seconds * sim.config.physics_hz)
        start = time.perf_counter()
        mujoco.mj_step(m, d, nstep=n)
        raw = n / (time.perf_counter() - start)
        sim.reset(3, task=None)
        sim.apply_twist((0.02, 0.02, -0.02), (0.0, 0.0, 0.2))
        start = time.perf_counter()
        for _ in range(int(seconds * 10)):
            sim.step(0.1)
        wall = time.perf_counter() - start
        stepped = sim.sim_time / sim.physics_dt / wall
        print(f"physics ({sim.config.physics_hz:.0f} Hz, {sim.model.nbody} bodies, {d.ncon} contacts): "
              f"raw mj_step {raw:,.0f} steps/s; TabletopSim.step with a twist {stepped:,.0f} steps/s "
              f"= {sim.sim_time / wall:.1f}x real time")


def bench_expert(seeds: int, rates: list[float], max_steps: int) -> None:
    with TabletopSim(0, task=None) as sim:
        policy = ExpertPolicy(sim)
        kinds = list(sim.tasks.kinds)
        for rate in rates:
            print(f"expert (privileged state), {seeds} seeds per kind at {rate:g} Hz, max {max_steps} steps:")
            total_ok = total = 0
            for kind in kinds:
                ok, steps, walls, failures = 0, [], [], []
                for seed in range(seeds):
                    sim.reset(seed, task=kind)
                    start = time.perf_counter()
                    try:
                        result = run_episode(sim, policy, control_rate_hz=rate, max_steps=max_steps, render=False)
                    except Exception as err:  # noqa: BLE001 - a bench reports failures, it does not stop
                        failures.append(f"{seed} ({type(err).__name__}: {err})")
                        continue
                    walls.append(time.perf_counter() - start)
                    if result.success and result.terminated:
                        ok += 1
                        steps.append(result.steps)
                    else:
                        failures.append(str(seed))
                total_ok += ok
                total += seeds
                print(f"  {kind:10s} {ok:4d}/{seeds} = {100 * ok / seeds:5.1f}%   "
                      f"mean steps {statistics.mean(steps) if steps else float('nan'):5.1f}   "
                      f"wall {1000 * statistics.median(walls) if walls else float('nan'):6.0f} ms/episode"
                      + (f"   failed seeds: {', '.join(failures[:8])}" if failures else ""))
            print(f"  {'all':10s} {total_ok:4d}/{total} = {100 * total_ok / total:5.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames timed per render setting")
    parser.add_argument("--resets", type=int, default=20)
    parser.add_argument("--physics-seconds", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, default=50, help="expert episodes per task kind")
    parser.add_argument("--rates", default="5", help="control rates (Hz), comma-separated")
    parser.add_argument("--max-steps", type=int, default=100)
    args = parser.parse_args()
    bench_render(args.frames)
    bench_reset(args.resets)
    bench_physics(args.physics_seconds)
    bench_expert(args.seeds, [float(r) for r in args.rates.split(",")], args.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
