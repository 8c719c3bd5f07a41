"""The ``main()`` both nodes share: start, spin on a thread, stop cleanly.

Order on the way out (DESIGN section 8: a thread still inside
``executor.spin()`` at exit aborts the process):

1. the node's ``before_shutdown()`` (the safety node commands a last zero
   twist, the policy node ends its goals and stops its inference thread) while
   the executor still spins, so results and messages can still leave;
2. ``rclpy.try_shutdown()``;
3. join the spin thread;
4. ``executor.shutdown()``, then the node's ``close()`` and ``destroy_node()``.

SIGINT and SIGTERM both take this path (rclpy's own signal handlers are
switched off, so nothing is torn down behind the node's back).  A start-up
error (bad parameter, model that does not load) is one log line and exit code
``error.exit_code`` (2 for configuration errors); a crash of the spin thread
exits 1.
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Any, Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

from rt2_ros.errors import Rt2RosError

__all__ = ["run_node"]


def _spin(executor: Any, failures: list[BaseException], logger: Any) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except Exception as exc:  # noqa: BLE001 - a crashed spin thread must end the process visibly
        if rclpy.ok():
            failures.append(exc)
            logger.fatal(f"executor stopped by an unexpected error: {type(exc).__name__}: {exc}\n"
                         + "".join(traceback.format_exception(exc)))


def run_node(name: str, make_node: Callable[[], Any], make_executor: Callable[[], Any],
             args: Sequence[str] | None = None) -> int:
    """Run one node until SIGINT/SIGTERM; return the process exit code.

    ``make_node`` builds the node (after ``rclpy.init``); the node may define
    ``start()`` (called once the executor spins), ``before_shutdown()`` and
    ``close()``.
    """
    sys.setswitchinterval(0.0005)
    rclpy.init(args=list(sys.argv if args is None else args),
               signal_handler_options=SignalHandlerOptions.NO)
    logger = rclpy.logging.get_logger(name)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    node = executor = spin_thread = None
    failures: list[BaseException] = []
    try:
        try:
            node = make_node()
        except Rt2RosError as exc:
            logger.fatal(f"cannot start: {exc}")
            return exc.exit_code
        executor = make_executor()
        executor.add_node(node)
        spin_thread = threading.Thread(target=_spin, args=(executor, failures, logger),
                                       name=f"{name}-spin")
        spin_thread.start()
        if hasattr(node, "start"):
            node.start()
        while not stop.wait(0.2):
            if not spin_thread.is_alive() or getattr(node, "failed", False):
                break
        if hasattr(node, "before_shutdown"):
            node.before_shutdown()
        return 1 if failures or getattr(node, "failed", False) else 0
    finally:
        rclpy.try_shutdown()
        if spin_thread is not None:
            spin_thread.join()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
