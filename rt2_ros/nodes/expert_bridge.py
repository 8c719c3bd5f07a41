"""Feed the ``expert`` backend the sim node's privileged state, in the policy node's process.

The privileged expert plans from true simulator state, which lives in the
sim node's process.  The sim node publishes it on ``sim/privileged_state``
(std_msgs/String holding :func:`rt2_ros.sim.expert.privileged_snapshot` as
JSON, labelled ``"privileged": true``); :func:`attach_expert_state`
subscribes a node to it and hands every snapshot to
:meth:`rt2_ros.sim.expert.StateFedExpertPolicy.observe`.  The policy node
calls it once when its backend is ``expert``::

    if cfg.backend == "expert":
        from rt2_ros.nodes.expert_bridge import attach_expert_state
        attach_expert_state(self, policy)

Snapshots that are not JSON or not of the expected format are counted and
logged once per cause; the expert then reports "no state" or "stale state"
through its own errors, which end the episode like any backend failure.
"""
from __future__ import annotations

import json
import time
from typing import Any

from std_msgs.msg import String

from rt2_ros.errors import Rt2RosError
from rt2_ros.nodes.diagnostics import ReportOnce, shorten
from rt2_ros.nodes.sim_node import PRIVILEGED_STATE_TOPIC, STATE_QOS

__all__ = ["attach_expert_state", "PRIVILEGED_STATE_TOPIC"]


def attach_expert_state(node: Any, policy: Any, topic: str = PRIVILEGED_STATE_TOPIC,
                        callback_group: Any = None) -> Any:
    """Subscribe ``node`` to ``topic`` and pass each privileged snapshot to ``policy.observe``.

    ``policy``: anything with ``observe(snapshot: dict, received: float)``
    (a :class:`~rt2_ros.sim.expert.StateFedExpertPolicy`); ``received`` is
    ``time.monotonic()`` at arrival, the clock the policy judges staleness by.
    Returns the subscription (keep it; destroy it to stop feeding).
    """
    if not callable(getattr(policy, "observe", None)):
        raise TypeError(f"attach_expert_state: {type(policy).__name__} has no observe(snapshot) method")
    reported = ReportOnce()
    logger = node.get_logger()

    def on_state(msg: String) -> None:
        received = time.monotonic()
        try:
            snapshot = json.loads(msg.data)
        except ValueError as exc:
            if reported.first("json"):
                logger.error(f"{topic}: not JSON ({exc}); ignored (logged once)")
            return
        try:
            policy.observe(snapshot, received)
        except Rt2RosError as exc:
            if reported.first("observe:" + str(exc)[:80]):
                logger.error(f"{topic}: privileged state refused: {shorten(exc, 300)} (logged once)")
            return
        reported.clear()

    subscription = node.create_subscription(String, topic, on_state, STATE_QOS,
                                            callback_group=callback_group)
    logger.info(f"expert backend: reading privileged simulator state from "
                f"{node.resolve_topic_name(topic)}")
    return subscription
