"""Latency of the ROS stack: camera image stamp -> TwistStamped leaving the safety node.

    python bench/stack_latency.py [--duration 60] [--backend scripted|transformers|both]
                                  [--camera-rate 30] [--width 640] [--height 480] [--model DIR]

Separate processes, as on a robot: a camera (640x480 rgb8 at 30 Hz by
default, test/stack_peers.py), the stack started with ``rt2-ros up``, and
this process playing the arm controller.  Prints figures, asserts nothing.

How a twist is matched to its image: safety limits are set wide (no clamp,
no step-change limit), so the twist of an action is exactly
``delta * control_rate_hz``; the first TwistStamped with that value and a
stamp after the action's image stamp is the one it caused (the safety node
publishes at once when an action arrives).  The TwistStamped stamp is taken
by the safety node right before publishing, so ``twist stamp - image stamp``
is the latency up to the command leaving the safety node.

- ``scripted``: a script of 200 distinct actions, looped: the figure is the
  stack's own overhead (the backend takes microseconds).
- ``transformers``: the tiny random PaliGemma (built offline, like the
  tests'), camera frames cycling through 8 random images so consecutive
  actions differ; ``overhead = end-to-end - RT2Action.inference_ms``.
  Actions whose twist equals the previous one's (or that terminate) cannot be
  matched and are left out; after a terminate the instruction is sent again.

Also printed: actions that never produced a twist (dropped commands), twist
gaps longer than two publish periods, the policy's dropped/used frames, the
safety node's own latency figure (diagnostics), and the RSS of every
process at start and end (``--duration 600`` for the 10-minute memory check).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONTROL_RATE_HZ = 100.0   # above the camera rate: every new frame is acted on at once
PUBLISH_RATE_HZ = 100.0


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


class Controller:
    """The arm-controller side: records twists, actions and diagnostics; re-sends instructions."""

    def __init__(self, instruction: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        from rt2_ros.msg import RT2Action
        from rt2_ros.nodes.qos import ACTION_QOS, COMMAND_QOS, INSTRUCTION_QOS

        self.instruction = instruction
        self.twists: list[tuple[float, float, tuple[float, ...]]] = []  # recv, stamp, values
        self.actions: list[dict] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("bench_arm_controller", context=self.context)
        self._instructions = self.node.create_publisher(String, "rt2/instruction", INSTRUCTION_QOS)
        self._string = String

        def on_twist(msg):
            t = msg.twist
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            with self._lock:
                self.twists.append((time.time(), stamp, (t.linear.x, t.linear.y, t.linear.z,
                                                         t.angular.x, t.angular.y, t.angular.z)))

        def on_action(msg):
            with self._lock:
                self.actions.append({
                    "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                    "recv": time.time(), "terminate": msg.terminate,
                    "inference_ms": msg.inference_ms,
                    "delta": (msg.delta_position.x, msg.delta_position.y, msg.delta_position.z,
                              msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z)})
            if msg.terminate:
                self.send_instruction()

        def on_diagnostics(msg):
            for status in msg.status:
                with self._lock:
                    self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

        # A deeper queue than the arm's (COMMAND_QOS keeps only the newest twist): this
        # observer must see every twist, or a moment of CPU starvation here would count as
        # commands the stack dropped.
        observer_qos = QoSProfile(depth=500, history=COMMAND_QOS.history,
                                  reliability=COMMAND_QOS.reliability, durability=COMMAND_QOS.durability)
        self.node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", on_twist,
                                      observer_qos)
        self.node.create_subscription(RT2Action, "rt2/action", on_action, ACTION_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

        def spin():
            try:
                self.executor.spin()
            except ExternalShutdownException:
                pass

        self._thread = threading.Thread(target=spin, daemon=True)
        self._thread.start()

    def send_instruction(self) -> None:
        self._instructions.publish(self._string(data=self.instruction))

    def snapshot(self):
        with self._lock:
            return list(self.twists), list(self.actions), dict(self.diagnostics)

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown(context=self.context)
        self._thread.join()
        self.executor.shutdown()
        self.node.destroy_node()


# The twist an action causes is searched from the action's image stamp (it cannot leave
# before the image was taken; this process may receive the action itself late under load)
# to this long after this process received the action (a later equal value is another
# command: the script's 200 distinct actions repeat only every 200 actions).
MATCH_WINDOW_S = 0.5


def match_latencies(twists, actions, rate_hz: float):
    """Per matched action: end-to-end ms, inference ms, image -> RT2Action here ms, and the
    estimated time the image waited for the previous inference; plus the counts of unmatched
    and left-out actions."""
    stamps = np.array([t[1] for t in twists])
    values = [t[2] for t in twists]
    matched, unmatched, skipped = [], 0, 0
    previous = None
    previous_recv = -np.inf
    for action in actions:
        expected = tuple(v * rate_hz for v in action["delta"])
        waited = max(0.0, previous_recv - action["stamp"]) * 1000.0
        previous_recv = action["recv"]
        if action["terminate"] or expected == previous or not any(expected):
            skipped += 1
            previous = None if action["terminate"] else expected
            continue
        previous = expected
        start = int(np.searchsorted(stamps, action["stamp"]))
        end = int(np.searchsorted(stamps, action["recv"] + MATCH_WINDOW_S))
        hit = next((i for i in range(start, end) if values[i] == expected), None)
        if hit is None:
            unmatched += 1
            continue
        matched.append(((stamps[hit] - action["stamp"]) * 1000.0, action["inference_ms"],
                        (action["recv"] - action["stamp"]) * 1000.0, waited))
    return matched, unmatched, skipped


def figures(values) -> str:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return "n/a"
    return (f"median {np.median(values):7.3f}  p99 {np.percentile(values, 99):7.3f}  "
            f"max {values.max():7.3f}  (n={values.size})")


def run_case(name: str, up_args: list[str], instruction: str, args, env) -> None:
    print(f"\n=== backend {name}: camera {args.width}x{args.height} rgb8 at {args.camera_rate:g} Hz, "
          f"control_rate_hz {CONTROL_RATE_HZ:g}, publish_rate_hz {PUBLISH_RATE_HZ:g}, "
          f"{args.duration:g} s ===", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix=f"stack_latency_{name}_"))
    logs = {}

    def start(label, command):
        logs[label] = open(log_dir / f"{label}.log", "w")
        return subprocess.Popen(command, stdout=logs[label], stderr=subprocess.STDOUT, env=env,
                                cwd=str(REPO))

    camera = start("camera", [sys.executable, "test/stack_peers.py", "camera",
                              "--rate", str(args.camera_rate), "--width", str(args.width),
                              "--height", str(args.height), "--frames", "8"])
    up = start("up", [sys.executable, "-m", "rt2_ros.cli", "up", *up_args, "--start-enabled", "true",
                      "--set", f"control_rate_hz={CONTROL_RATE_HZ}",
                      "--set", f"safety_node.publish_rate_hz={PUBLISH_RATE_HZ}",
                      "--set", "safety_node.max_linear_speed=100.0",
                      "--set", "safety_node.max_angular_speed=100.0",
                      "--set", "safety_node.max_step_change=2.0",
                      "--set", "safety_node.action_timeout_s=1.0",
                      "--set", "policy_node.publish_markers=false"])
    controller = Controller(instruction)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            _, _, diagnostics = controller.snapshot()
            if len(diagnostics) >= 2:
                break
            if up.poll() is not None:
                raise SystemExit(f"the stack exited:\n{(log_dir / 'up.log').read_text()[-3000:]}")
            time.sleep(0.2)
        else:
            raise SystemExit("the stack did not come up in 180 s")
        nodes = {command_line(pid).split(" -m ")[-1].split()[0].rsplit(".", 1)[-1]: pid
                 for pid in children(up.pid)}
        processes = {"camera": camera.pid, "rt2-ros up": up.pid, **nodes,
                     "controller (this)": os.getpid()}
        rss_start = {label: rss_mb(pid) for label, pid in processes.items()}
        controller.send_instruction()
        time.sleep(2.0)  # warm-up, not measured
        measure_from = time.time()
        # RSS sampled through the run (not just start/end): growth shows as a trend, and
        # the first minute's allocations (caches, DDS history) are told apart from a leak.
        period = max(1.0, min(60.0, args.duration / 10.0))
        rss_series: dict[str, list[float | None]] = {label: [] for label in processes}
        run_end = time.monotonic() + args.duration
        while True:
            time.sleep(max(0.0, min(period, run_end - time.monotonic())))
            for label, pid in processes.items():
                rss_series[label].append(rss_mb(pid))
            if time.monotonic() >= run_end - 1e-3:
                break
        rss_end = {label: series[-1] for label, series in rss_series.items()}
        time.sleep(0.3)
        twists, actions, diagnostics = controller.snapshot()
    finally:
        controller.close()
        for process in (up, camera):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in (up, camera):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for f in logs.values():
            f.close()

    actions = [a for a in actions if a["stamp"] >= measure_from]
    twists_window = [t for t in twists if t[0] >= measure_from]
    matched, unmatched, skipped = match_latencies(twists, actions, CONTROL_RATE_HZ)
    end_to_end = [m[0] for m in matched]
    inference = [m[1] for m in matched]
    overhead = [m[0] - m[1] for m in matched]
    to_action = [m[2] for m in matched]
    waited = [m[3] for m in matched]
    overhead_no_wait = [m[0] - m[1] - m[3] for m in matched]
    policy = next((v for k, v in diagnostics.items() if k.endswith("policy_node")), {})
    safety = next((v for k, v in diagnostics.items() if k.endswith("safety_node")), {})
    gaps = np.diff([t[0] for t in twists_window])
    late = int(np.sum(gaps > 2.0 / PUBLISH_RATE_HZ)) if gaps.size else 0
    print(f"actions {len(actions)} ({len(actions) / args.duration:.1f}/s), matched {len(matched)}, "
          f"left out (terminate/repeat/zero) {skipped}, dropped (no twist) {unmatched}")
    print(f"image stamp -> twist leaving safety_node, ms: {figures(end_to_end)}")
    print(f"  of which image stamp -> RT2Action here: {figures(to_action)}")
    print(f"backend inference_ms:                     {figures(inference)}")
    print(f"stack overhead (end-to-end - inference):  {figures(overhead)}")
    if any(waited):
        print(f"  image waited for the previous inference: {figures(waited)}")
        print(f"  overhead without that wait:            {figures(overhead_no_wait)}")
    print(f"  camera -> policy_node (its diagnostics): median "
          f"{policy.get('image.latency_ms.median')} ms, p99 {policy.get('image.latency_ms.p99')} ms")
    print(f"  image arrival -> RT2Action published, minus inference (policy_node's diagnostics): "
          f"median {policy.get('node_overhead_ms.median')} ms, p99 "
          f"{policy.get('node_overhead_ms.p99')} ms")
    print(f"twists received {len(twists_window)} ({len(twists_window) / args.duration:.1f}/s), "
          f"gaps > {2000.0 / PUBLISH_RATE_HZ:.0f} ms: {late}, "
          f"max gap {1000.0 * gaps.max() if gaps.size else 0:.1f} ms")
    print(f"policy_node: frames received {policy.get('frames.received')}, used "
          f"{policy.get('frames.used')}, dropped {policy.get('frames.dropped')}, too old "
          f"{policy.get('frames.too_old')}, rate {policy.get('rate_achieved_hz')} Hz")
    print(f"safety_node's own figure (whole run): median "
          f"{safety.get('latency_ms.image_to_command.median')} ms, p99 "
          f"{safety.get('latency_ms.image_to_command.p99')} ms")
    print("RSS MiB (start -> end):")
    for label in processes:
        start_mb, end_mb = rss_start.get(label), rss_end.get(label)
        fmt = lambda v: "  gone" if v is None else f"{v:6.1f}"  # noqa: E731
        print(f"  {label:20s} {fmt(start_mb)} -> {fmt(end_mb)}")
    print(f"RSS MiB every {period:.0f} s from the start of the measured window:")
    for label, series in rss_series.items():
        known = [v for v in series if v is not None]
        growth = f"  (first sample -> end: {known[-1] - known[0]:+.1f})" if len(known) > 1 else ""
        print(f"  {label:20s} " + " ".join("gone" if v is None else f"{v:.0f}" for v in series) + growth)
    print(f"(logs in {log_dir})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per backend")
    parser.add_argument("--backend", choices=("scripted", "transformers", "both"), default="both")
    parser.add_argument("--camera-rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--model", default="", help="checkpoint for the transformers case "
                                                    "(default: build the tiny random PaliGemma)")
    args = parser.parse_args()

    from rt2_ros.nodes.stack import apply_dds_defaults

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    apply_dds_defaults(env)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")})
    print(f"ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, FASTDDS_DEFAULT_PROFILES_FILE "
          f"{env['FASTDDS_DEFAULT_PROFILES_FILE']}, {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="stack_latency_") as tmp:
        if args.backend in ("scripted", "both"):
            script = Path(tmp) / "script.txt"
            # 200 distinct actions: x walks through the bins, so every twist is unique in a loop.
            script.write_text("\n".join(f"0 {28 + i} {128 + i % 50} 128 128 128 128 "
                                        f"{255 if i % 20 < 10 else 0}" for i in range(200)) + "\n")
            run_case("scripted", ["--backend", "scripted", "--scripted-actions", str(script),
                                  "--set", "policy_node.scripted_loop=true"],
                     "bench the stack", args, env)
        if args.backend in ("transformers", "both"):
            model = args.model
            if not model:
                from rt2_ros.testing.tiny_vlm import build_tiny_paligemma

                model = str(build_tiny_paligemma(Path(tmp) / "tiny_paligemma"))
            run_case("transformers", ["--backend", "transformers", "--model", model,
                                      "--set", "policy_node.device=cpu"],
                     "push the blue cube", args, env)



if __name__ == "__main__":
    main()
