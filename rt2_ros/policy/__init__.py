"""Policy backends behind one interface (see ``rt2_ros.policy.base``)."""
from rt2_ros.policy.base import HandState, Policy, PolicyError, PolicyOutput

__all__ = ["HandState", "Policy", "PolicyError", "PolicyOutput"]
