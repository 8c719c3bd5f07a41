"""``rt2-ros up``: start the stack's nodes as processes, without ``ros2 launch``.

The nodes, parameter files and remappings come from
:func:`rt2_ros.nodes.stack.stack_nodes` - the list the launch file uses - and
each node runs as ``python -m rt2_ros.nodes.<node> --ros-args -r
__node:=<name> --params-file ... -r from:=to``, the command line
``launch_ros`` would build.  Override dictionaries become small parameter
files in a temporary directory, after the main file, so they win.

Supervision: every line a node prints is forwarded with a ``[name]`` prefix;
SIGINT or SIGTERM stops the stack (SIGINT to every node, SIGKILL after
``shutdown_timeout_s``); a node that exits on its own stops the others and
makes the exit code non-zero.  Nodes run in their own process groups (a
terminal's Ctrl-C reaches them once, through this supervisor) and, on Linux,
get SIGTERM if the supervisor itself dies.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Sequence

import yaml

from rt2_ros.errors import ConfigError
from rt2_ros.nodes.stack import NodeSpec, apply_dds_defaults

__all__ = ["node_command", "write_override_files", "run_stack", "StackExit", "pretty_command"]

_PR_SET_PDEATHSIG = 1


def write_override_files(nodes: Sequence[NodeSpec], directory: Path) -> dict[str, list[str]]:
    """Write each node's override dicts as parameter files; return ``{node: [file, ...]}``.

    Path entries are passed through as they are, so the order (later wins) is kept.
    """
    files: dict[str, list[str]] = {}
    for spec in nodes:
        paths = []
        for index, entry in enumerate(spec.parameters):
            if isinstance(entry, Mapping):
                path = directory / f"{spec.name}.{index}.yaml"
                path.write_text(yaml.safe_dump({spec.name: {"ros__parameters": dict(entry)}},
                                               sort_keys=True), encoding="utf-8")
                paths.append(str(path))
            else:
                paths.append(str(entry))
        files[spec.name] = paths
    return files


def node_command(spec: NodeSpec, parameter_files: Sequence[str],
                 python: str = sys.executable) -> list[str]:
    """The command line that runs ``spec`` the way ``launch_ros`` would."""
    if spec.module:
        command = [python, "-m", spec.module]
    else:
        executable = shutil.which(spec.executable)
        if executable is None:
            raise ConfigError(f"{spec.name}: executable {spec.executable!r} is not on PATH "
                              f"(package {spec.package})")
        command = [executable]
    command += list(spec.arguments)
    command += ["--ros-args", "-r", f"__node:={spec.name}"]
    for path in parameter_files:
        command += ["--params-file", path]
    for source, target in spec.remappings:
        command += ["-r", f"{source}:={target}"]
    return command


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: no Python threads exist in the
    # supervisor yet (readers start after every process has been started).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class _Child:
    name: str
    process: subprocess.Popen
    reader: threading.Thread | None = None
    exit_code: int | None = None
    killed: bool = False


@dataclass
class StackExit:
    """How the stack ended: ``code`` for the process, ``reason`` for the log."""

    code: int
    reason: str
    exit_codes: dict[str, int | None] = field(default_factory=dict)


def _forward(name: str, stream: IO[bytes], out: IO[str], lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            out.write(f"[{name}] {line}\n")
            out.flush()
    stream.close()


def run_stack(nodes: Sequence[NodeSpec], *, env: Mapping[str, str] | None = None,
              shutdown_timeout_s: float = 10.0, out: IO[str] | None = None,
              log: IO[str] | None = None, stop: threading.Event | None = None) -> StackExit:
    """Start ``nodes``, forward their output, and stop them all on a signal or a node's exit.

    ``stop``: an event that stops the stack when set (SIGINT/SIGTERM set it
    when called from the main thread).  Returns a :class:`StackExit` (code 0
    only when the stack was asked to stop and every node exited 0 in time).
    """
    out = sys.stdout if out is None else out
    log = sys.stderr if log is None else log
    environment = dict(os.environ if env is None else env)
    note = apply_dds_defaults(environment)
    if note:
        print(f"rt2-ros up: {note}", file=log, flush=True)
    stop = threading.Event() if stop is None else stop
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    children: list[_Child] = []
    lock = threading.Lock()
    try:
        with tempfile.TemporaryDirectory(prefix="rt2_ros_up_") as tmp:
            files = write_override_files(nodes, Path(tmp))
            commands = [(spec.name, node_command(spec, files[spec.name])) for spec in nodes]
            for name, command in commands:
                print(f"rt2-ros up: starting {name}: {pretty_command(command)}", file=log,
                      flush=True)
                process = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
                children.append(_Child(name, process))
            for child in children:
                child.reader = threading.Thread(target=_forward, name=f"up-{child.name}",
                                                args=(child.name, child.process.stdout, out, lock),
                                                daemon=True)
                child.reader.start()
            result = _supervise(children, stop, shutdown_timeout_s, log)
    finally:
        for child in children:
            if child.process.poll() is None:  # only after an exception above
                child.process.kill()
                child.process.wait()
        for child in children:
            if child.reader is not None:
                child.reader.join(timeout=2.0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return result


def _supervise(children: list[_Child], stop: threading.Event, shutdown_timeout_s: float,
               log: IO[str]) -> StackExit:
    died: _Child | None = None
    while not stop.wait(0.1):
        for child in children:
            code = child.process.poll()
            if code is not None:
                child.exit_code = code
                died = child
                break
        if died is not None:
            break
    if died is not None:
        print(f"rt2-ros up: {died.name} exited with code {died.exit_code}; stopping the stack",
              file=log, flush=True)
    else:
        print("rt2-ros up: stopping the stack", file=log, flush=True)
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + shutdown_timeout_s
    for child in children:
        try:
            child.exit_code = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.exit_code = child.process.wait()
            child.killed = True
            print(f"rt2-ros up: {child.name} did not stop within {shutdown_timeout_s:g} s; killed",
                  file=log, flush=True)
    codes = {child.name: child.exit_code for child in children}
    if died is not None:
        code = died.exit_code if died.exit_code and died.exit_code > 0 else 1
        return StackExit(code, f"{died.name} exited with code {died.exit_code}", codes)
    failed = [c for c in children if c.killed or c.exit_code != 0]
    if failed:
        return StackExit(1, "; ".join(f"{c.name} exited with code {c.exit_code}"
                                      + (" (killed)" if c.killed else "") for c in failed), codes)
    return StackExit(0, "stopped", codes)


def pretty_command(command: Sequence[str]) -> str:
    """A command line for humans (arguments with spaces quoted)."""
    return " ".join(arg if arg and " " not in arg else repr(arg) for arg in command)

