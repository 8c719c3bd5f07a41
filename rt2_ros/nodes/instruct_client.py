"""A blocking client of the policy node's ``rt2/execute`` action (used by ``rt2-ros instruct``).

The client spins its own single-threaded executor in the calling thread, so
Ctrl-C arrives as KeyboardInterrupt where the caller can cancel the goal.

Feedback is read from the action's feedback topic (``<action>/_action/feedback``,
part of every ROS 2 action's wire interface) by a subscription of our own,
not through ``send_goal_async``'s callback: feedback and result travel on
different channels, so the last step's feedback can arrive after the result,
and rclpy drops a goal's feedback callback as soon as its result is in.  With
our own subscription the client waits briefly for the steps the result
counts.
"""
from __future__ import annotations

import math
import os
import threading
import time
import uuid
from typing import Any, Callable

import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.action.client import ClientGoalHandle
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from unique_identifier_msgs.msg import UUID

from rt2_ros.action import ExecuteInstruction

__all__ = ["InstructionClient", "STATUS_NAMES"]

# Without an answer to the goal request after this long, the client looks for
# the goal's feedback to tell a lost reply from a goal that never arrived.
GOAL_RESPONSE_TIMEOUT_S = 3.0
# How long after the result the client still waits for feedback of the steps the result counts.
FEEDBACK_AFTER_RESULT_S = 1.0

STATUS_NAMES = {
    GoalStatus.STATUS_SUCCEEDED: "succeeded",
    GoalStatus.STATUS_CANCELED: "canceled",
    GoalStatus.STATUS_ABORTED: "aborted",
}


class InstructionClient:
    """Send ExecuteInstruction goals and wait for their results."""

    def __init__(self, action_name: str = "/rt2/execute") -> None:
        self._context = rclpy.Context()
        rclpy.init(context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(f"rt2_instruct_{os.getpid()}", context=self._context)
        self.client = ActionClient(self.node, ExecuteInstruction, action_name)
        self.executor = SingleThreadedExecutor(context=self._context)
        self.executor.add_node(self.node)
        self._goal_handle: Any = None
        self._result: Any = None
        self._sent: Any = None
        self._goal_uuid = b""
        self._feedback_count = 0
        self._on_feedback: Callable[[Any], None] | None = None
        # Depth 10, reliable, volatile: rcl's default for an action's feedback topic.
        self._feedback_sub = self.node.create_subscription(
            ExecuteInstruction.Impl.FeedbackMessage, f"{action_name}/_action/feedback",
            self._feedback_message, 10)

    def _feedback_message(self, message: Any) -> None:
        if bytes(message.goal_id.uuid) != self._goal_uuid:
            return
        self._feedback_count += 1
        if self._on_feedback is not None:
            self._on_feedback(message.feedback)

    def wait_for_server(self, timeout_s: float) -> bool:
        """True once the action server is discovered, False after ``timeout_s``."""
        return self.client.wait_for_server(timeout_sec=timeout_s)

    def execute(self, instruction: str, max_steps: int = 0, timeout_s: float = 0.0,
                on_feedback: Callable[[Any], None] | None = None,
                stop: threading.Event | None = None) -> dict[str, Any] | None:
        """Run one goal to its end; the result as a dict, or None if the goal was rejected.

        Raises TimeoutError when the server neither answers the goal request nor
        sends feedback for the goal within GOAL_RESPONSE_TIMEOUT_S.

        Raises KeyboardInterrupt when ``stop`` is set (a signal handler sets it:
        a KeyboardInterrupt raised by Python itself can be lost inside rclpy's
        finalizers); :meth:`cancel` then cancels the goal.
        """
        goal = ExecuteInstruction.Goal(instruction=instruction, max_steps=int(max_steps),
                                       timeout_s=float(timeout_s))
        goal_id = UUID(uuid=list(uuid.uuid4().bytes))
        self._goal_uuid, self._feedback_count, self._on_feedback = bytes(goal_id.uuid), 0, on_feedback
        self._sent = self.client.send_goal_async(goal, goal_uuid=goal_id)
        deadline = time.monotonic() + GOAL_RESPONSE_TIMEOUT_S
        handle = None
        while handle is None:
            self._spin_until(self._sent, stop, until=deadline)
            if self._sent.done():
                handle = self._sent.result()
            elif self._feedback_count:
                # The server runs the goal (its feedback arrives) but its answer to
                # the request was lost: a reply sent before DDS discovery matched
                # this client's reader.  Follow the goal by its id.
                handle = ClientGoalHandle(self.client, goal_id,
                                          ExecuteInstruction.Impl.SendGoalService.Response(
                                              accepted=True))
            else:
                raise TimeoutError(f"the action server did not answer the goal request within "
                                   f"{GOAL_RESPONSE_TIMEOUT_S:g} s and runs no goal of ours")
        if not handle.accepted:
            return None
        self._goal_handle = handle
        self._result = handle.get_result_async()
        self._spin_until(self._result, stop)
        outcome = self._result_dict()
        deadline = time.monotonic() + FEEDBACK_AFTER_RESULT_S
        while self._feedback_count < outcome["steps"] and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return outcome

    def _spin_until(self, future: Any, stop: threading.Event | None,
                    until: float = math.inf) -> None:
        while not future.done() and time.monotonic() < until:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            self.executor.spin_once(timeout_sec=0.1)

    def cancel(self, timeout_s: float = 3.0) -> dict[str, Any] | None:
        """Cancel the goal being executed; its result if it arrives within ``timeout_s``.

        Safe to call after a KeyboardInterrupt anywhere inside :meth:`execute`.
        """
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self._goal_handle is None:
            if self._sent is None:
                return None
            self.executor.spin_until_future_complete(self._sent, timeout_sec=left())
            handle = self._sent.result() if self._sent.done() else None
            if handle is None or not handle.accepted:
                return None
            self._goal_handle = handle
        if self._result is None:
            self._result = self._goal_handle.get_result_async()
        future = self._goal_handle.cancel_goal_async()
        self.executor.spin_until_future_complete(future, timeout_sec=left())
        self.executor.spin_until_future_complete(self._result, timeout_sec=left())
        return self._result_dict() if self._result.done() else None

    def _result_dict(self) -> dict[str, Any]:
        response = self._result.result()
        result = response.result
        return {"terminated": bool(result.terminated), "steps": int(result.steps),
                "reason": result.reason,
                "status": STATUS_NAMES.get(response.status, str(response.status))}

    def close(self) -> None:
        """Release the node and the ROS context."""
        self.executor.shutdown()
        self.node.destroy_subscription(self._feedback_sub)
        self.client.destroy()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)
