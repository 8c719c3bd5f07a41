"""Quaternion helpers for the simulator (w, x, y, z order, like MuJoCo and ROS's math).

Small numpy functions on single rotations; Euler angles are roll, pitch, yaw
about the fixed base-frame axes, i.e. R = Rz(yaw) @ Ry(pitch) @ Rx(roll)
(the convention of ROS's RPY).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["quat_mul", "quat_conj", "quat_from_rotvec", "rotvec_from_quat", "quat_to_rpy",
           "rpy_to_quat", "quat_error"]


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b (apply b, then a)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw])


def quat_conj(q: np.ndarray) -> np.ndarray:
    """The inverse of a unit quaternion."""
    return np.array([q[0], -q[1], -q[2], -q[3]])


def quat_from_rotvec(v: np.ndarray) -> np.ndarray:
    """Unit quaternion of the rotation by |v| radians about v."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.array([1.0, 0.5 * v[0], 0.5 * v[1], 0.5 * v[2]]) / math.sqrt(1.0 + 0.25 * angle * angle)
    s = math.sin(angle / 2) / angle
    return np.array([math.cos(angle / 2), v[0] * s, v[1] * s, v[2] * s])


def rotvec_from_quat(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a unit quaternion."""
    if q[0] < 0:
        q = -q
    vec = np.asarray(q[1:], float)
    sin_half = float(np.linalg.norm(vec))
    if sin_half < 1e-12:
        return 2.0 * vec
    angle = 2.0 * math.atan2(sin_half, float(q[0]))
    return vec * (angle / sin_half)


def quat_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (base frame) that turns ``current`` into ``target``."""
    return rotvec_from_quat(quat_mul(target, quat_conj(current)))


def quat_to_rpy(q: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) of a unit quaternion; pitch in [-pi/2, pi/2]."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def rpy_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Unit quaternion of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([cr * cp * cy + sr * sp * sy,
                     sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy,
                     cr * cp * sy - sr * sp * cy])
