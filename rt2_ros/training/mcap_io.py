"""rosbag2 MCAP episodes without ROS: write and read the bags ``ros2 bag`` reads.

Bags are written with `rosbags <https://gitlab.com/ternaris/rosbags>`_'s
rosbag2 writer (storage ``mcap``, rosbag2 format version 9): a directory with
``metadata.yaml`` and one ``.mcap`` file whose schemas are the ROS 2 message
definitions (``ros2msg``) and whose messages are CDR, byte for byte what
``rclpy.serialization.serialize_message`` produces.  So a bag written here
plays with ``ros2 bag play`` and a bag recorded by ``ros2 bag record`` (MCAP)
reads here.

The type store is ROS 2 Kilted's (its standard messages are the same as
Jazzy's) plus ``rt2_ros/msg/RT2Action`` parsed from the package's
``msg/RT2Action.msg``.  Pure Python: no rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from rt2_ros.errors import Rt2RosError
from rt2_ros.paths import share_dir

__all__ = ["BagError", "typestore", "BagWriter", "BagMessage", "read_messages", "read_custom_data",
           "bag_topics", "IMAGE", "COMPRESSED_IMAGE", "STRING", "RT2_ACTION", "TWIST_STAMPED",
           "FLOAT64", "FLOAT64_ARRAY", "POSE_STAMPED", "POINT_STAMPED", "image_message", "string_message",
           "rt2_action_message", "twist_stamped_message", "float64_message", "pose_stamped_message",
           "point_stamped_message",
           "image_to_rgb", "stamp_to_ns", "qos", "is_bag"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
RT2_ACTION = "rt2_ros/msg/RT2Action"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
FLOAT64 = "std_msgs/msg/Float64"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"

# Channels per pixel and whether the order is BGR, for the encodings DESIGN section 3 lists.
_ENCODINGS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True),
              "mono8": (1, False)}


class BagError(Rt2RosError):
    """A bag cannot be written or read (the message names the bag and what was wrong)."""


def _rt2_action_definition() -> str:
    candidates = [share_dir() / "msg" / "RT2Action.msg",
                  Path(__file__).resolve().parent.parent.parent / "msg" / "RT2Action.msg"]
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise BagError(f"msg/RT2Action.msg not found (looked in {', '.join(str(p) for p in candidates)})")


@lru_cache(maxsize=1)
def typestore() -> Any:
    """The rosbags type store: ROS 2 Kilted's standard messages + ``rt2_ros/msg/RT2Action``."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(_rt2_action_definition(), RT2_ACTION))
    return store


def qos(*, transient_local: bool = False, depth: int = 10, best_effort: bool = False) -> Any:
    """A rosbags QoS record (what ``ros2 bag play`` offers the topic with)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                    QosTime)

    never = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.BEST_EFFORT if best_effort else QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               never, never, QosLiveliness.AUTOMATIC, never, False)


def is_bag(path: str | Path) -> bool:
    """Whether ``path`` is a rosbag2 directory (it has ``metadata.yaml``)."""
    return (Path(path) / "metadata.yaml").is_file()


class BagWriter:
    """One rosbag2 MCAP bag being written; use as a context manager or call :meth:`close`.

    ``add_topic`` declares a topic with its type; ``write`` takes a message
    built with the helpers below (or any instance of the type store's
    classes), ``write_raw`` already serialized CDR bytes (what a raw rclpy
    subscription delivers).  ``custom_data`` (str -> str) lands in
    ``metadata.yaml``'s ``custom_data`` and may be changed until close.
    """

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.errors import WriterError

        self.path = Path(path)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self.custom_data: dict[str, str] = {}
        self.message_count = 0
        try:
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"{self.path}: cannot create the bag: {exc}") from None

    def add_topic(self, topic: str, msgtype: str, offered_qos: Any = None) -> None:
        """Declare ``topic`` with type ``msgtype`` (e.g. ``sensor_msgs/msg/Image``)."""
        store = typestore()
        if msgtype not in store.types:
            raise BagError(f"{self.path}: unknown message type {msgtype!r} for topic {topic!r}")
        if topic in self._connections:
            raise BagError(f"{self.path}: topic {topic!r} declared twice")
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=store, offered_qos_profiles=[offered_qos or qos()])
        self._types[topic] = msgtype

    def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` was declared."""
        return topic in self._connections

    def write(self, topic: str, timestamp_ns: int, message: Any) -> None:
        """Serialize ``message`` (a type-store instance) and write it at ``timestamp_ns``."""
        self.write_raw(topic, timestamp_ns, typestore().serialize_cdr(message, self._types[topic]))

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write serialized CDR bytes at ``timestamp_ns`` (ns since the epoch, or sim time)."""
        if topic not in self._connections:
            raise BagError(f"{self.path}: topic {topic!r} was not declared (add_topic first)")
        self._writer.write(self._connections[topic], int(timestamp_ns), data)
        self.message_count += 1

    def close(self) -> Path:
        """Write the index and ``metadata.yaml`` (with ``custom_data``); return the bag directory."""
        for key, value in self.custom_data.items():
            self._writer.set_custom_data(str(key), str(value))
        self._writer.close()
        return self.path

    def abort(self) -> None:
        """Stop without writing metadata (the directory is left incomplete)."""
        self._writer.abort()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class BagMessage:
    """One message read from a bag: topic, type, receive/log time (ns) and the decoded message."""

    topic: str
    msgtype: str
    timestamp: int
    message: Any


def _open_reader(path: Path) -> Any:
    from rosbags.highlevel import AnyReader

    if not is_bag(path):
        raise BagError(f"{path}: not a rosbag2 directory (no metadata.yaml)")
    return AnyReader([path], default_typestore=typestore())


def read_messages(path: str | Path, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
    """Yield the bag's messages in log-time order, decoded (only ``topics`` if given).

    Types are decoded with the definitions stored in the bag itself, so bags
    recorded by ``ros2 bag record`` with other message packages read too.
    """
    path = Path(path)
    try:
        with _open_reader(path) as reader:
            connections = [c for c in reader.connections if topics is None or c.topic in topics]
            for connection, timestamp, raw in reader.messages(connections=connections):
                yield BagMessage(connection.topic, connection.msgtype, int(timestamp),
                                 reader.deserialize(raw, connection.msgtype))
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for a damaged bag
        raise BagError(f"{path}: cannot read the bag: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic -> message type of every topic in the bag."""
    path = Path(path)
    try:
        with _open_reader(path) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BagError(f"{path}: cannot read the bag: {exc}") from None


def read_custom_data(path: str | Path) -> dict[str, str]:
    """The ``custom_data`` mapping of the bag's ``metadata.yaml`` ({} if it has none)."""
    import yaml

    meta = Path(path) / "metadata.yaml"
    try:
        data = yaml.safe_load(meta.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BagError(f"{meta}: cannot read ({exc})") from None
    info = (data or {}).get("rosbag2_bagfile_information", {})
    custom = info.get("custom_data") or {}
    if not isinstance(custom, dict):
        raise BagError(f"{meta}: custom_data: expected a mapping, got {custom!r}")
    return {str(k): str(v) for k, v in custom.items()}


# ----------------------------------------------------------------------------- messages


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                 nanosec=int(stamp_ns % 1_000_000_000))
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _vector3(values: Sequence[float]) -> Any:
    x, y, z = (float(v) for v in values)
    return typestore().types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)


def image_message(image: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A ``sensor_msgs/Image`` (rgb8) of an HxWx3 uint8 RGB array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BagError(f"image: expected an HxWx3 uint8 array, got "
                       f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
    height, width = image.shape[:2]
    return typestore().types[IMAGE](header=_header(stamp_ns, frame_id), height=height, width=width,
                                    encoding="rgb8", is_bigendian=0, step=width * 3,
                                    data=np.ascontiguousarray(image).reshape(-1))


def string_message(text: str) -> Any:
    """A ``std_msgs/String``."""
    return typestore().types[STRING](data=str(text))


def float64_message(value: float) -> Any:
    """A ``std_msgs/Float64``."""
    return typestore().types[FLOAT64](data=float(value))


def twist_stamped_message(linear: Sequence[float], angular: Sequence[float], stamp_ns: int,
                          frame_id: str = "base_link") -> Any:
    """A ``geometry_msgs/TwistStamped`` (m/s, rad/s)."""
    types = typestore().types
    twist = types["geometry_msgs/msg/Twist"](linear=_vector3(linear), angular=_vector3(angular))
    return types[TWIST_STAMPED](header=_header(stamp_ns, frame_id), twist=twist)


def pose_stamped_message(position: Sequence[float], quaternion_wxyz: Sequence[float], stamp_ns: int,
                         frame_id: str = "base_link") -> Any:
    """A ``geometry_msgs/PoseStamped``; the quaternion is given (w, x, y, z) as MuJoCo writes it."""
    types = typestore().types
    w, x, y, z = (float(v) for v in quaternion_wxyz)
    px, py, pz = (float(v) for v in position)
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=px, y=py, z=pz),
        orientation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))
    return types[POSE_STAMPED](header=_header(stamp_ns, frame_id), pose=pose)


def point_stamped_message(point: Sequence[float], stamp_ns: int, frame_id: str = "camera") -> Any:
    """A ``geometry_msgs/PointStamped`` of (x, y, z)."""
    types = typestore().types
    x, y, z = (float(v) for v in point)
    return types[POINT_STAMPED](header=_header(stamp_ns, frame_id), point=types["geometry_msgs/msg/Point"](x=x, y=y, z=z))


def rt2_action_message(*, stamp_ns: int, instruction: str, tokens: Sequence[int], action: Mapping[str, Any],
                       embodiment: Any, step: int, plan: str = "", inference_ms: float = 0.0,
                       backend: str = "", frame_id: str = "base_link") -> Any:
    """An ``rt2_ros/RT2Action`` for one decoded action of ``embodiment``.

    Fills the fixed fields (deltas, gripper, terminate; absent dims are 0)
    and the per-dim ``dim_names``/``values`` in token order.
    """
    types = typestore().types
    names = list(embodiment.names)
    values = [float(action[name]) for name in names]

    def get(name: str) -> float:
        return float(action[name]) if name in action else 0.0

    return types[RT2_ACTION](
        header=_header(stamp_ns, frame_id), instruction=instruction,
        tokens=np.asarray(list(tokens), dtype=np.uint8), terminate=bool(action.get("terminate", False)),
        delta_position=_vector3([get("x"), get("y"), get("z")]),
        delta_rotation=_vector3([get("roll"), get("pitch"), get("yaw")]),
        gripper=get("gripper"), plan=plan, inference_ms=float(inference_ms), step=int(step),
        embodiment=embodiment.name, dim_names=names, values=np.asarray(values, dtype=np.float64),
        backend=backend)


def image_to_rgb(message: Any, msgtype: str = IMAGE) -> np.ndarray:
    """An HxWx3 uint8 RGB array from a ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8)
    or ``sensor_msgs/CompressedImage`` (PNG/JPEG)."""
    if msgtype == COMPRESSED_IMAGE:
        import cv2

        decoded = cv2.imdecode(np.frombuffer(bytes(message.data), np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise BagError(f"compressed image ({message.format!r}): cannot decode")
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    encoding = str(message.encoding)
    if encoding not in _ENCODINGS:
        raise BagError(f"image encoding: expected one of {', '.join(_ENCODINGS)}, got {encoding!r}")
    channels, bgr = _ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.frombuffer(memoryview(message.data), np.uint8)
    if step < width * channels or data.size < step * height:
        raise BagError(f"image: {data.size} bytes do not hold {height}x{width} {encoding} with step {step}")
    rows = data[:step * height].reshape(height, step)[:, :width * channels]
    pixels = rows.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if bgr else rgb)
