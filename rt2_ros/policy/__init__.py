"""Policy backends behind one interface (see ``rt2_ros.policy.base``)."""
from rt2_ros.policy.base import Policy, PolicyError, PolicyOutput

__all__ = ["Policy", "PolicyError", "PolicyOutput"]
