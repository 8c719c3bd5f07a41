"""Helper processes around the stack for tests and bench/stack_latency.py.

    python test/stack_peers.py camera [--rate 30] [--width 64] [--height 48] [--encoding rgb8]
                                      [--frames 1] [--pause-file F] [--unstamped]
        publishes a synthetic camera (sensor-data QoS) on camera/image_raw, cycling
        through --frames random images; while --pause-file exists it publishes
        nothing (a camera that stopped).

    python test/stack_peers.py record OUT.jsonl
        plays the arm controller: records every TwistStamped on servo_node/delta_twist_cmds,
        every Float64 on gripper/command, every rt2/action and every /diagnostics status as
        one JSON line each ({"topic": ..., "recv": wall seconds, ...}).

    python test/stack_peers.py policy_node_with failing --ros-args ...
        runs policy_node with a test backend whose act() raises, alternately an
        unexpected RuntimeError and a PolicyError.

In-process helpers for the tests: :class:`Recording` reads what ``record``
wrote; :class:`Driver` is a node in the test process that publishes
instructions and images and calls the enable service.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, String
from std_srvs.srv import SetBool

from rt2_ros.msg import RT2Action
from rt2_ros.nodes.qos import ACTION_QOS, COMMAND_QOS, IMAGE_QOS, INSTRUCTION_QOS
from rt2_ros.policy.base import Policy

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def camera(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="stack_peers.py camera")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--encoding", default="rgb8")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--pause-file", default="")
    parser.add_argument("--unstamped", action="store_true")
    args = parser.parse_args(argv)
    rclpy.init()
    node = Node("test_camera")
    pub = node.create_publisher(Image, "camera/image_raw", IMAGE_QOS)
    channels = CHANNELS[args.encoding]
    rng = np.random.default_rng(0)
    msg = Image(height=args.height, width=args.width, encoding=args.encoding,
                step=args.width * channels)
    msg.header.frame_id = "camera"
    size = args.height * args.width * channels
    # array.array('B') is what rclpy stores for uint8[]: assigning one is not a copy.
    frames = [array.array("B", rng.integers(0, 256, size, dtype=np.uint8).tobytes())
              for _ in range(max(1, args.frames))]
    count = 0

    def publish() -> None:
        nonlocal count
        if args.pause_file and os.path.exists(args.pause_file):
            return
        msg.data = frames[count % len(frames)]
        count += 1
        if not args.unstamped:
            msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    node.create_timer(1.0 / args.rate, publish)
    _spin(node)


def record(argv: list[str]) -> None:
    out_path = argv[0]
    rclpy.init()
    node = Node("test_arm_controller")
    out = open(out_path, "a", buffering=1)

    def write(entry: dict[str, Any]) -> None:
        entry["recv"] = time.time()
        out.write(json.dumps(entry) + "\n")

    def on_twist(msg: TwistStamped) -> None:
        t = msg.twist
        write({"topic": "twist", "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
               "frame": msg.header.frame_id,
               "linear": [t.linear.x, t.linear.y, t.linear.z],
               "angular": [t.angular.x, t.angular.y, t.angular.z]})

    def on_gripper(msg: Float64) -> None:
        write({"topic": "gripper", "value": msg.data})

    def on_action(msg: RT2Action) -> None:
        write({"topic": "action", "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
               "instruction": msg.instruction[:200], "step": msg.step, "tokens": list(msg.tokens),
               "terminate": msg.terminate,
               "delta_position": [msg.delta_position.x, msg.delta_position.y, msg.delta_position.z],
               "delta_rotation": [msg.delta_rotation.x, msg.delta_rotation.y, msg.delta_rotation.z],
               "gripper": msg.gripper, "inference_ms": msg.inference_ms, "backend": msg.backend,
               "embodiment": msg.embodiment, "dim_names": list(msg.dim_names),
               "values": list(msg.values)})

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            write({"topic": "diagnostics", "name": status.name, "level": status.level[0],
                   "message": status.message,
                   "values": {kv.key: kv.value for kv in status.values}})

    node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", on_twist, COMMAND_QOS)
    node.create_subscription(Float64, "gripper/command", on_gripper, COMMAND_QOS)
    node.create_subscription(RT2Action, "rt2/action", on_action, ACTION_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    write({"topic": "ready"})
    _spin(node)


class FailingPolicy(Policy):
    """A test backend whose act() fails every time: RuntimeError, then PolicyError, ..."""

    name = "test_failing"

    def __init__(self) -> None:
        from rt2_ros.action_language import load_embodiment

        self.embodiment = load_embodiment("rt2_arm")
        self.calls = 0

    def act(self, image: np.ndarray, instruction: str) -> Any:
        from rt2_ros.errors import PolicyError

        self.calls += 1
        if self.calls % 2:
            raise RuntimeError(f"boom #{self.calls}")
        raise PolicyError(f"model unavailable (call {self.calls})")


def policy_node_with(argv: list[str]) -> None:
    from rt2_ros.nodes.policy_node import PolicyNode
    from rt2_ros.nodes.runtime import run_node

    assert argv[0] == "failing"
    sys.exit(run_node("policy_node", lambda: PolicyNode(policy=FailingPolicy()),
                      SingleThreadedExecutor, [sys.argv[0], *argv[1:]]))


def _spin(node: Node) -> None:
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


class Recording:
    """What ``record`` wrote: one dict per message."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self, topic: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Entries of ``topic`` (all with None) received at or after ``since`` (wall seconds)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line being written
                continue
            if (topic is None or entry["topic"] == topic) and entry["recv"] >= since:
                out.append(entry)
        return out

    def diagnostics(self, node: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The /diagnostics statuses of ``node`` (``policy_node`` / ``safety_node``)."""
        return [e for e in self.entries("diagnostics", since) if e["name"].endswith(node)]

    def wait_for(self, check: Callable[["Recording"], Any], timeout: float = 20.0,
                 what: str = "") -> Any:
        """Poll until ``check(self)`` is truthy; return its value, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = check(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
            time.sleep(0.05)


class Driver:
    """A node in the test process: publishes instructions and images, calls the enable service."""

    def __init__(self, domain_id: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("test_driver", context=self.context)
        self._instructions = self.node.create_publisher(String, "rt2/instruction", INSTRUCTION_QOS)
        self._images = self.node.create_publisher(Image, "camera/image_raw", IMAGE_QOS)
        self._enable = self.node.create_client(SetBool, "rt2/safety/enable")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def instruct(self, text: str) -> None:
        """Publish an instruction on rt2/instruction."""
        self._instructions.publish(String(data=text))

    def image(self, *, encoding: str = "rgb8", height: int = 4, width: int = 4,
              step: int | None = None, size: int | None = None) -> None:
        """Publish one (possibly malformed) image on camera/image_raw, stamped now."""
        channels = CHANNELS.get(encoding, 2)
        step = width * channels if step is None else step
        msg = Image(height=height, width=width, encoding=encoding, step=step)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.data = bytes(step * height if size is None else size)
        self._images.publish(msg)

    def enable(self, on: bool, timeout: float = 20.0) -> Any:
        """Call rt2/safety/enable; return the response."""
        if not self._enable.wait_for_service(timeout_sec=timeout):
            raise AssertionError("rt2/safety/enable is not available")
        done = threading.Event()
        future = self._enable.call_async(SetBool.Request(data=on))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise AssertionError("rt2/safety/enable did not answer")
        return future.result()

    def close(self) -> None:
        """Shut down in the order that never aborts the process (DESIGN section 8)."""
        rclpy.try_shutdown(context=self.context)
        self._thread.join()
        self.executor.shutdown()
        self.node.destroy_node()


if __name__ == "__main__":
    {"camera": camera, "record": record, "policy_node_with": policy_node_with}[sys.argv[1]](
        sys.argv[2:])
