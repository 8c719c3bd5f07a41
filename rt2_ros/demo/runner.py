"""Run the demo: sim node + stack + policy as processes, one instruction, recorded; always cleaned up.

Order of events:

1. choose the headless GL backend here (children inherit ``MUJOCO_GL`` and
   skip the probe) and the loopback DDS profile (as ``rt2-ros up`` does);
2. start ``sim_node`` (parameters written to ``OUT/logs/sim_node.yaml``) and
   the stack with ``python -m rt2_ros.cli up --config config/demo.yaml
   --backend ...`` (the same node list as ``ros2 launch``), each in its own
   process group with its output in ``OUT/logs/``;
3. an in-process :class:`~rt2_ros.nodes.demo_observer.DemoObserver` waits
   for the sim's task, a camera frame and the action server, then sends the
   sim's instruction as an ``rt2/execute`` goal and records until the result;
4. stop everything (SIGINT, then SIGKILL after a grace period) - also on
   errors and Ctrl-C - and write the video, the plot and ``summary.json``.

Children get SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``), so
even ``kill -9`` of the demo leaves no node behind.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import yaml

from rt2_ros.demo import default_policy, policy_label
from rt2_ros.errors import ConfigError, Rt2RosError
from rt2_ros.paths import config_dir

__all__ = ["DemoOptions", "DemoError", "run_demo", "DEMO_CONFIG"]

#: Stack parameters of the demo (``rt2-ros up --config``).
DEMO_CONFIG = "demo.yaml"
BACKENDS = ("expert", "scripted", "transformers", "remote")
_PR_SET_PDEATHSIG = 1
# Seconds a process gets after SIGINT before it is killed.
_STOP_GRACE_S = 15.0


class DemoError(Rt2RosError):
    """The demo could not run (a process died, nothing answered in time)."""

    exit_code = 1


@dataclass(frozen=True)
class DemoOptions:
    """What ``rt2-ros demo`` was asked for (validated in ``__post_init__``)."""

    task: str = "place_on"
    seed: int = 0
    backend: str = "expert"
    model: str = ""
    server_url: str = ""
    scripted_actions: str = ""
    max_steps: int = 80
    timeout_s: float = 60.0
    out_dir: Path = Path("demo_out")
    control_rate_hz: float = 5.0
    image_rate_hz: float = 10.0
    image_size: int = 224
    startup_timeout_s: float = 120.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed: expected an integer >= 0, got {self.seed!r}")
        if not isinstance(self.max_steps, int) or not 1 <= self.max_steps <= 100000:
            raise ConfigError(f"--max-steps: expected an integer in 1..100000, got {self.max_steps!r}")
        for name, value in (("--timeout", self.timeout_s), ("--startup-timeout", self.startup_timeout_s)):
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name}: expected a number of seconds > 0, got {value!r}")
        if not self.task.strip():
            raise ConfigError("--task: expected a task kind, 'random' or an instruction, got ''")
        _check_task(self.task.strip())
        if self.backend == "transformers" and not self.model:
            raise ConfigError("--model: the transformers backend needs a checkpoint directory, got ''")
        if self.backend == "remote" and not self.model:
            raise ConfigError("--model: the remote backend needs the served model's name, got ''")
        if self.backend == "scripted" and not self.scripted_actions:
            raise ConfigError("--scripted-actions: the scripted backend needs a file of action strings, got ''")
        if self.model and self.backend == "transformers" and not Path(self.model).is_dir():
            raise ConfigError(f"--model: {self.model!r} is not a directory")
        if self.scripted_actions and not Path(self.scripted_actions).is_file():
            raise ConfigError(f"--scripted-actions: {self.scripted_actions!r} is not a file")


def _count(values: dict[str, str], key: str) -> int:
    try:
        return int(values.get(key, "0"))
    except ValueError:
        return 0


def _check_task(task: str) -> None:
    """ConfigError now (not from the sim node later) for a task no template can express."""
    from rt2_ros.sim.errors import SimError
    from rt2_ros.sim.scene import COLORS, SHAPES
    from rt2_ros.sim.tasks import load_task_library

    library = load_task_library()
    if task == "random" or task in library.kinds:
        return
    try:
        library.parse(task, [f"{color} {shape}" for color in COLORS for shape in SHAPES])
    except SimError:
        examples = "; ".join(repr(kind.templates[0].format(object="red cube", reference="blue cylinder",
                                                           direction="left"))
                             for kind in library.kinds.values())
        raise ConfigError(f"--task: {task!r} is neither a task kind ({', '.join(library.kinds)}, random) "
                          f"nor an instruction the task templates match (e.g. {examples})") from None


def _die_with_parent() -> None:
    # Between fork and exec in the child: ask the kernel for SIGTERM when the demo dies.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class _Process:
    """A child process in its own session with its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def exited(self) -> int | None:
        return self.process.poll()

    def tail(self, lines: int = 25) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait(self, deadline: float) -> int:
        try:
            return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # The session: `rt2-ros up`'s nodes too, should the supervisor hang.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return self.process.wait()
        finally:
            self._log.close()


def _sim_parameters(options: DemoOptions, path: Path) -> Path:
    params = {"seed": options.seed, "task": options.task, "image_width": options.image_size,
              "image_height": options.image_size, "image_rate_hz": float(options.image_rate_hz),
              "real_time_factor": 1.0}
    path.write_text(yaml.safe_dump({"sim_node": {"ros__parameters": params}}, sort_keys=True),
                    encoding="utf-8")
    return path


def _stack_command(options: DemoOptions) -> list[str]:
    command = [sys.executable, "-m", "rt2_ros.cli", "up", "--config", str(config_dir() / DEMO_CONFIG),
               "--backend", options.backend,
               "--set", f"control_rate_hz={options.control_rate_hz!r}"]
    if options.model:
        command += ["--model", options.model]
    if options.server_url:
        command += ["--server-url", options.server_url]
    if options.scripted_actions:
        command += ["--scripted-actions", str(Path(options.scripted_actions).resolve())]
    return command


class _Stop:
    """Set by SIGINT/SIGTERM while the demo runs (main thread only)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class _Interrupted(Exception):
    pass


class _TimedOut(DemoError):
    """Nothing came within the time allowed (a process dying is a plain DemoError)."""


def run_demo(options: DemoOptions, *, say: Callable[[str], None] | None = None,
             err: IO[str] | None = None) -> dict[str, Any]:
    """Run the demo; return the summary (also written to ``OUT/summary.json``).

    ``say`` prints progress for people (default: stderr).  Raises DemoError
    when the demo could not run; Ctrl-C ends the episode early and still
    writes what was recorded (summary ``reason`` = ``interrupted``) and returns.
    """
    err = sys.stderr if err is None else err
    say = say or (lambda text: print(f"rt2-ros demo: {text}", file=err, flush=True))
    from rt2_ros.sim import gl
    from rt2_ros.nodes.stack import apply_dds_defaults

    started = time.monotonic()
    backend = gl.configure_gl_backend()
    gl.require_gl_backend()
    # This process (the observer) and the children use the same DDS profile.
    apply_dds_defaults(os.environ)  # type: ignore[arg-type]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **options.extra_env)
    out = Path(options.out_dir).expanduser().resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "episode.mp4", "episode.gif", "plot.png", "last_frame.png"):
        (out / stale).unlink(missing_ok=True)
    label = policy_label(options.backend, options.model)
    privileged = options.backend == "expert"
    say(f"policy: {label}")
    if privileged:
        bundled = default_policy()[0] != "expert"
        say("the privileged expert reads the simulator's true state, not the camera: a reference, "
            "not a learned model" + ("" if bundled else " (no trained model is bundled yet)"))
    say(f"rendering with MUJOCO_GL={backend or os.environ.get('MUJOCO_GL', '?')}; logs in {logs}")

    from rt2_ros.demo.records import applied_steps, build_summary
    from rt2_ros.demo.video import VideoWriter

    processes: list[_Process] = []
    observer = None
    video: VideoWriter | None = None
    interrupted = False
    final_status: dict[str, Any] | None = None
    with _Stop() as stop:
        try:
            processes.append(_Process("sim_node", [
                sys.executable, "-m", "rt2_ros.nodes.sim_node", "--ros-args", "-r", "__node:=sim_node",
                "--params-file", str(_sim_parameters(options, logs / "sim_node.yaml"))],
                env, logs / "sim_node.log"))
            processes.append(_Process("stack", _stack_command(options), env, logs / "stack.log"))
            say(f"started sim_node and the stack (rt2-ros up --backend {options.backend}); "
                f"waiting for them")
            from rt2_ros.nodes.demo_observer import DemoObserver

            holder: dict[str, VideoWriter] = {}
            observer = DemoObserver(on_frame=lambda frame: holder["video"].add(frame)
                                    if "video" in holder else None)

            def check(what: str) -> None:
                if stop.event.is_set():
                    raise _Interrupted()
                for proc in processes:
                    code = proc.exited()
                    if code is not None:
                        raise DemoError(f"{proc.name} exited with code {code} while {what}; the end "
                                        f"of {proc.log_path}:\n{proc.tail()}")

            def wait_until(ready: Callable[[], Any], timeout_s: float, what: str) -> Any:
                deadline = time.monotonic() + timeout_s
                while True:
                    check(what)
                    value = ready()
                    if value:
                        return value
                    if time.monotonic() > deadline:
                        tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail(10)}" for p in processes)
                        raise _TimedOut(f"nothing after {timeout_s:g} s {what}\n{tails}")
                    time.sleep(0.05)

            status = wait_until(lambda: observer.task()[0], options.startup_timeout_s,
                                "waiting for the sim node's task (sim/task)")
            wait_until(lambda: observer.frames_seen > 0, options.startup_timeout_s,
                       "waiting for a camera image")
            wait_until(lambda: observer.twists_seen > 0, options.startup_timeout_s,
                       "waiting for the safety node's commands")
            wait_until(lambda: observer.wait_for_server(0.2), options.startup_timeout_s,
                       "waiting for the policy node's rt2/execute action server")
            # Under load, DDS may connect the policy node to the camera later than this
            # observer: start the episode once it reports frames (not required to act).
            try:
                wait_until(lambda: _count(observer.diagnostics("policy_node"), "frames.received") > 0,
                           15.0, "waiting for the policy node to receive camera images")
            except _TimedOut:
                say("the policy node reports no camera image yet; starting the episode anyway")
            instruction = status.get("instruction")
            if not instruction:
                raise DemoError(f"the sim node has no task: {status.get('reason') or status}")
            say(f"episode: seed {status['seed']}, instruction {instruction!r}")
            video = VideoWriter(out / "episode", instruction, label, fps=options.image_rate_hz)
            holder["video"] = video
            goal = observer.start_goal(instruction, options.max_steps, options.timeout_s)
            wait_until(goal.done, 30.0, "waiting for the goal to be accepted")
            result = observer.result_future(goal)
            if result is None:
                raise DemoError("the policy node rejected the goal")
            wait_until(result.done, options.timeout_s + 30.0, "running the episode")
            observer.finish(result)
            done_at = time.time()
            # The verdict: the first sim/task sent after the episode ended (it is sent on
            # every change and twice a second), and a few trailing frames for the video.
            final_status = wait_until(
                lambda: (lambda s: s[0] if s[0] is not None and s[1] > done_at + 0.3 else None)(
                    observer.task()), 5.0, "waiting for the sim's verdict")
        except _Interrupted:
            interrupted = True
            say("interrupted: stopping the episode and the processes")
            if observer is not None:
                observer.cancel()
        except BaseException:
            if video is not None:
                video.close(None, "the demo failed")
                video = None
            raise
        finally:
            if observer is not None:
                if final_status is None:
                    final_status = observer.task()[0]
                    if observer.record.goal_sent and not observer.record.goal_done:
                        observer.finish(None)
                observer.stop_recording(final_status)
            sim_diag = observer.diagnostics("sim_node") if observer is not None else {}
            for proc in reversed(processes):  # the stack first: it commands the arm
                proc.interrupt()
            deadline = time.monotonic() + _STOP_GRACE_S
            codes = {proc.name: proc.wait(deadline) for proc in reversed(processes)}
            if observer is not None:
                observer.close()
        if any(code not in (0, None) for code in codes.values()) and not interrupted:
            say("exit codes: " + ", ".join(f"{k} {v}" for k, v in codes.items()))

    record = observer.record
    if sim_diag:
        record.diagnostics.setdefault("rt2_ros: sim_node", sim_diag)
    success = bool(record.final_status.get("success")) if record.final_status else None
    result = record.result or {}
    detail = (f"{result.get('reason', 'no result')} after {result.get('steps', len(record.actions))} "
              f"steps" + ("" if not interrupted else " (interrupted)"))
    files: dict[str, str] = {}
    if video is not None:
        path = video.close(success, detail)
        if path is not None:
            files["video"] = str(path)
        if video.last_frame is not None:
            import imageio.v2 as imageio

            imageio.imwrite(out / "last_frame.png", video.last_frame)
            files["last_frame"] = str(out / "last_frame.png")
        if video.error:
            say(f"video: {video.error}")
    from rt2_ros.demo.plot import write_plot

    steps = applied_steps(record.actions, record.twists, options.control_rate_hz)
    verdict = {True: "success", False: "not solved", None: "no verdict"}[success]
    files["plot"] = str(write_plot(
        out / "plot.png", record.actions, steps, title=f"{record.instruction!r}: {verdict}",
        subtitle=f"policy: {label}; {detail}"))
    files["summary"] = str(out / "summary.json")
    summary = build_summary(record, backend=options.backend, model=options.model, policy=label,
                            privileged=privileged, control_rate_hz=options.control_rate_hz,
                            wall_s=time.monotonic() - started, files=files, interrupted=interrupted)
    summary["exit_codes"] = codes
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
