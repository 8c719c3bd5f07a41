"""Robot episodes on disk: one rosbag2 MCAP bag per episode, and how it becomes training samples.

Episode format (``rt2_ros.episode/1``)
--------------------------------------
An episode is a rosbag2 directory (``metadata.yaml`` + one ``.mcap``; see
:mod:`rt2_ros.training.mcap_io`) holding these topics (names are the stack's
defaults, all configurable with :class:`EpisodeTopics`):

========================================  =================================  ==================
topic                                     type                               role
========================================  =================================  ==================
``/camera/image_raw``                     sensor_msgs/Image (or Compressed)  observation
``/rt2/instruction``                      std_msgs/String                    the task
``/rt2/action``                           rt2_ros/RT2Action                  the action label
``/servo_node/delta_twist_cmds``          geometry_msgs/TwistStamped         what the arm got
``/gripper/command``                      std_msgs/Float64                   what the gripper got
``/ee_pose``                          geometry_msgs/PoseStamped          end-effector pose
``/rt2/grounding/goal``                   geometry_msgs/PointStamped         optional: see below
``/rt2/grounding/gripper``                geometry_msgs/PointStamped         optional: see below
``/rt2/grounding/object``                 geometry_msgs/PointStamped         optional: see below
``/rt2/grounding/under``                  geometry_msgs/PointStamped         optional: see below
``/rt2/grounding/reference``              geometry_msgs/PointStamped         optional: see below
========================================  =================================  ==================

The grounding topics are written by the simulator's collector, which knows
the true state: per step (stamped like the image), where in the image the
action heads (the expert's goal, seen at table height), where the gripper is
where the object the task names first is (its centre), the point under
the gripper at the goal's height (where the gripper would be seen were it
that low: its offset from the goal is horizontal distance only) and, for a
task with a reference object ("move the X near the Y"), where that object
is (its centre), as ``x`` =
column and ``y`` = row in fractions of the image's width and height.  ``rt2-ros
train --grounding-weight`` points the decoder's attention at them and
``--plan`` writes them as a plan; bags without them train as usual.  A step
keeps its points when it has at least the goal and the gripper (bags
collected before the object, under and reference points were recorded have
only those two).

The outcome and provenance are in ``metadata.yaml``'s ``custom_data`` (plain
strings, so a person can relabel an episode by editing that file):
``rt2_ros.format``, ``rt2_ros.instruction``, ``rt2_ros.success``
(``true`` | ``false`` | ``unknown``), ``rt2_ros.embodiment``,
``rt2_ros.control_rate_hz``, ``rt2_ros.source`` (``sim-expert``,
``ros-record``, ...), and optionally ``rt2_ros.seed``, ``rt2_ros.task_kind``,
``rt2_ros.steps``, ``rt2_ros.objects`` (the objects the task names,
comma-separated: what a seen/unseen evaluation compares against) and
``rt2_ros.relabelled`` (``true``: DAgger data, the actions are the expert's
labels for the states a learning policy drove the arm into, so they are good
demonstrations whatever the episode's outcome).

From episode to samples
-----------------------
``action_source="rt2_action"``: each RT2Action is one sample, paired with the
camera image whose header stamp equals the action's (the stamp contract of
DESIGN section 4).  Its bins are kept when the action's embodiment is the
training one; otherwise its per-dim ``values`` are re-encoded.  Each step
also carries the hand's state when the image was taken: the ``ee_pose``
z stamped at or last before the image (``height``) and the last gripper
command logged before the step's action (``gripper_command``: the previous
step's), which ``--plan object_points_hand`` writes.

``action_source="ee_pose"`` (teleoperated demonstrations, no RT2Action): the
camera stream is sampled at ``control_rate_hz``; the action of step k is the
end-effector motion to step k+1 (position delta and base-frame rotation
vector), the gripper command in force at step k+1, and, for a successful
episode, a final ``terminate`` step.  ``auto`` picks ``rt2_action`` when the
bag has any.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from rt2_ros.action_language import ActionLanguageError, Embodiment
from rt2_ros.action_language.plans import (HAND_WORDS, PLAN_KINDS, PLAN_LAYOUTS, POINT_BINS, PlanField,
                                           fingers_closed, hand_numbers, offset_numbers, plan_layout,
                                           plan_number_labels, point_bin)
from rt2_ros.errors import ConfigError
from rt2_ros.training import mcap_io
from rt2_ros.training.mcap_io import BagError, BagWriter

__all__ = ["EPISODE_FORMAT", "GROUNDING_POINTS", "REQUIRED_POINTS", "POINT_BINS", "PLAN_KINDS", "PLAN_LAYOUTS",
           "PlanField", "HAND_WORDS", "point_bin", "plan_layout", "plan_point_names", "plan_number_points",
           "plan_number_labels", "sample_plan", "sample_points", "target_of", "points_plan", "hand_plan",
           "hand_numbers", "offset_plan", "plan_numbers", "EpisodeTopics", "EpisodeInfo", "EpisodeStep", "Episode",
           "EpisodeBagWriter", "read_episode", "find_episodes", "ACTION_SOURCES", "OUTCOMES"]

EPISODE_FORMAT = "rt2_ros.episode/1"
ACTION_SOURCES = ("auto", "rt2_action", "ee_pose")
OUTCOMES = {"true": True, "false": False, "unknown": None}
_PREFIX = "rt2_ros."
#: The per-step image points an episode can carry, in this order (see the module doc).
GROUNDING_POINTS = ("goal", "gripper", "object", "under", "reference")
#: The grounding points a step needs for its points to be kept (the others came later).
REQUIRED_POINTS = ("goal", "gripper")
# Plans (PLAN_LAYOUTS, point_bin, ...) are the answer language's: rt2_ros.action_language.plans;
# this module builds them from episode steps.


def plan_point_names(kind: str) -> tuple[str, ...]:
    """The grounding points a robot sample trained with plan ``kind`` (PLAN_KINDS) is pointed at, in
    the order its plan first reads them (no plan: the goal and the gripper); ``"target"`` is not
    recorded but chosen per sample: :func:`target_of`."""
    layout = plan_layout(kind)
    return tuple(dict.fromkeys(f.reads for f in layout)) if layout else REQUIRED_POINTS


def plan_number_points(kind: str) -> tuple[int, ...]:
    """For each integer plan ``kind`` writes, in order, the index in :func:`plan_point_names` of
    the point it is read from (empty without a plan)."""
    names = plan_point_names(kind)
    return tuple(names.index(f.reads) for f in plan_layout(kind) for _ in range(f.numbers))


def target_of(points: Mapping[str, Iterable[float]], objects: Iterable[str],
              gripper_command: float | None) -> tuple[str, tuple[float, float]]:
    """The object the hand heads for and its image point (plan ``hand_target_offset``'s object
    field, the grounding point ``"target"``): the task's object until the fingers have been told
    to close (:func:`~rt2_ros.action_language.plans.fingers_closed`), then the task's
    reference object when it has one ("move the X near the Y" carries X to Y).

    Closed fingers, not a grasp the simulator confirms: the plan writes ``closed`` before the
    object field, and that is all the model knows when it names the object.
    """
    names = list(objects)
    if not names:
        raise ConfigError("objects: the target is one of the task's objects, got none")
    if fingers_closed(gripper_command) and len(names) > 1:
        point, name = points.get("reference"), names[1]
        if point is None:
            raise ConfigError(f"points: with the fingers closed the target is the reference object "
                              f"({name!r}), whose point this sample lacks (got {', '.join(sorted(points))}; "
                              f"bags collected before rt2-ros collect recorded it)")
    else:
        point, name = points.get("object"), names[0]
        if point is None:
            raise ConfigError(f"points: the target is the task's object ({name!r}), whose point this sample "
                              f"lacks (got {', '.join(sorted(points))})")
    x, y = (float(v) for v in point)
    return name, (x, y)


def sample_points(kind: str, points: Mapping[str, Iterable[float]], objects: Iterable[str],
                  gripper_command: float | None) -> dict[str, tuple[float, ...]]:
    """A robot sample's recorded grounding ``points`` plus the ``"target"`` point when plan ``kind``
    reads it (:func:`target_of`)."""
    named = {name: tuple(point) for name, point in points.items()}
    if "target" in plan_point_names(kind):
        named["target"] = target_of(points, objects, gripper_command)[1]
    return named


def sample_plan(kind: str, points: Mapping[str, Iterable[float]], objects: Iterable[str],
                height: float | None = None, gripper_command: float | None = None) -> str | None:
    """The plan a robot sample with these grounding ``points``, task ``objects`` and hand state
    (``height``, ``gripper_command``: see :class:`EpisodeStep`; only plans with the hand's fields
    or the target use them) writes under plan ``kind`` (None without a plan)."""
    layout = plan_layout(kind)
    if not layout:
        return None
    words: list[str] = []
    hand = hand_numbers(height, gripper_command) if any(f.name in HAND_WORDS for f in layout) else {}
    for part in layout:
        if part.name in hand:
            words += [part.name, str(hand[part.name])]
        elif part.derived:
            words += offset_plan(points, part.offset_of, part.name).split()
        elif part.reads == "target":
            name, point = target_of(points, objects, gripper_command)
            words += points_plan({"object": point}, name, names=("object",)).split()
        else:
            name = next(iter(objects), None) if part.name == "object" else None
            if part.name == "object" and name is None:
                raise ConfigError(f"objects: plan {kind!r} names the task's object: expected the sample's "
                                  f"objects, got none")
            words += points_plan(points, name, names=(part.name,)).split()
    return " ".join(words)


def hand_plan(height: float | None, gripper_command: float | None) -> str:
    """The hand's state as plan text: ``"height 31 closed 0"`` (see :func:`hand_numbers`)."""
    return " ".join(f"{word} {number}" for word, number in hand_numbers(height, gripper_command).items())


def points_plan(points: Mapping[str, Iterable[float]], object_name: str | None = None,
                names: Iterable[str] | None = None) -> str:
    """The plan text of a robot sample's grounding points: ``"goal 131 88 gripper 127 201"``, or with
    ``object_name`` (plan ``object_points``) ``"green sphere 211 175 goal 131 88 gripper 127 201"``.

    Each point is (x, y) fractions of the image, written as column and row in
    ``POINT_BINS`` ths like the simulator's point answers; a point off the
    image (a gripper past the frame's edge) is written at the edge.  The
    object's point follows its name exactly as a "where is the green sphere?"
    answer follows the question, so a model that can point can write it.
    ``names`` picks and orders the points (default: as above).
    """
    names = tuple(names) if names is not None else plan_point_names(
        "object_points" if object_name is not None else "points")
    if "object" in names and object_name is None:
        raise ConfigError("object_name: expected the name of the task's object to write its point, got None")
    missing = [n for n in names if n not in points]
    if missing:
        raise ConfigError(f"points: expected {', '.join(names)}, got {sorted(points)}")
    if object_name is not None and not " ".join(str(object_name).split()):
        raise ConfigError(f"object_name: expected the name of the task's object, got {object_name!r}")
    words = []
    for name in names:
        words.extend(str(object_name).split() if name == "object" else [name])
        words.extend(str(point_bin(f)) for f in points[name])
    return " ".join(words)


def offset_plan(points: Mapping[str, Iterable[float]], offset_of: tuple[str, str] = ("goal", "gripper"),
                word: str = "offset") -> str:
    """Where the goal is seen from the gripper, as plan text: ``"offset 150 97"``
    (:func:`~rt2_ros.action_language.plans.offset_numbers` of the two points' bins);
    ``offset_of`` names the two points (to, from), e.g. ``("goal", "under")``.

    The expert's motion is the 3D goal minus the hand's position; the action
    can read its direction here rather than subtract the two points the plan
    wrote, and the decoder computes these numbers from those points.
    """
    missing = [n for n in offset_of if n not in points]
    if missing:
        raise ConfigError(f"points: the {word} needs the {' and the '.join(offset_of)}, got {sorted(points)}")
    to, origin = ([point_bin(f) for f in points[n]] for n in offset_of)
    return f"{word} " + " ".join(str(v) for v in offset_numbers(to, origin))


def plan_numbers(text: str) -> list[int]:
    """The integers of a plan's text, in order (``"goal 131 88 gripper 127 54"`` -> [131, 88, 127, 54])."""
    return [int(word) for word in text.split() if word.isdigit()]


# Images kept while waiting for the action computed from them (a policy at
# 1-5 Hz on a 30 Hz camera refers to one of the last few dozen frames).
_IMAGE_BUFFER = 256


@dataclass(frozen=True)
class EpisodeTopics:
    """Topic names of an episode bag (the stack's defaults; remap to your robot's)."""

    camera: str = "/camera/image_raw"
    instruction: str = "/rt2/instruction"
    action: str = "/rt2/action"
    twist: str = "/servo_node/delta_twist_cmds"
    gripper: str = "/gripper/command"
    ee_pose: str = "/ee_pose"
    grounding_goal: str = "/rt2/grounding/goal"
    grounding_gripper: str = "/rt2/grounding/gripper"
    grounding_object: str = "/rt2/grounding/object"
    grounding_under: str = "/rt2/grounding/under"
    grounding_reference: str = "/rt2/grounding/reference"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EpisodeTopics":
        """Build from a mapping of role -> topic (unknown roles raise ConfigError)."""
        known = [f.name for f in fields(cls)]
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"topics: unknown key {key!r} (expected one of {', '.join(known)})")
            if not isinstance(value, str) or not value.startswith("/"):
                raise ConfigError(f"topics.{key}: expected an absolute topic name, got {value!r}")
        return cls(**dict(data))


@dataclass
class EpisodeInfo:
    """What ``custom_data`` says about an episode (see the module doc)."""

    instruction: str
    success: bool | None = None
    embodiment: str = ""
    control_rate_hz: float = 0.0
    source: str = ""
    seed: int | None = None
    task_kind: str = ""
    steps: int = 0
    objects: tuple[str, ...] = ()      # the objects the task names (simulator: object, reference)
    #: True when the recorded actions are a privileged expert's labels for states another policy
    #: drove the robot into (DAgger, ``rt2-ros collect --policy-model``), not what was executed.
    relabelled: bool = False

    def to_custom_data(self) -> dict[str, str]:
        """The ``custom_data`` entries (all strings)."""
        outcome = {True: "true", False: "false", None: "unknown"}[self.success]
        data = {"format": EPISODE_FORMAT, "instruction": self.instruction, "success": outcome,
                "embodiment": self.embodiment, "control_rate_hz": repr(float(self.control_rate_hz)),
                "source": self.source, "steps": str(int(self.steps))}
        if self.seed is not None:
            data["seed"] = str(int(self.seed))
        if self.task_kind:
            data["task_kind"] = self.task_kind
        if self.objects:
            data["objects"] = ",".join(self.objects)
        if self.relabelled:
            data["relabelled"] = "true"
        return {_PREFIX + key: value for key, value in data.items()}

    @classmethod
    def from_custom_data(cls, custom: Mapping[str, str], where: str) -> "EpisodeInfo":
        """Parse ``custom_data``; missing keys take defaults, malformed ones raise BagError naming them."""
        get = lambda key, default="": custom.get(_PREFIX + key, default)  # noqa: E731
        fmt = get("format", EPISODE_FORMAT)
        if fmt != EPISODE_FORMAT:
            raise BagError(f"{where}: custom_data rt2_ros.format: expected {EPISODE_FORMAT!r}, got {fmt!r}")
        outcome = get("success", "unknown").strip().lower()
        if outcome not in OUTCOMES:
            raise BagError(f"{where}: custom_data rt2_ros.success: expected true, false or unknown, "
                           f"got {outcome!r}")
        try:
            rate = float(get("control_rate_hz", "0") or 0)
            seed = int(get("seed")) if get("seed") else None
            steps = int(get("steps", "0") or 0)
        except ValueError as exc:
            raise BagError(f"{where}: custom_data: {exc}") from None
        objects = tuple(name.strip() for name in get("objects").split(",") if name.strip())
        return cls(instruction=get("instruction"), success=OUTCOMES[outcome], embodiment=get("embodiment"),
                   control_rate_hz=rate, source=get("source"), seed=seed, task_kind=get("task_kind"),
                   steps=steps, objects=objects,
                   relabelled=get("relabelled", "false").strip().lower() == "true")


@dataclass
class EpisodeStep:
    """One training sample of an episode.

    image: HxWx3 uint8 RGB; tokens: the bins in ``embodiment``; action: the
    decoded values by dim name; stamp_ns: the image's stamp.
    """

    image: np.ndarray
    instruction: str
    tokens: list[int]
    action: dict[str, Any]
    stamp_ns: int
    embodiment: str
    #: image points by name (GROUNDING_POINTS), (x, y) fractions of the image; None when not recorded
    points: dict[str, tuple[float, float]] | None = None
    #: the end effector's z (m, the ee_pose topic's frame) when the image was taken; None without a pose
    height: float | None = None
    #: the last gripper command (closedness 0..1) sent before the image; None before the first one
    gripper_command: float | None = None


@dataclass
class Episode:
    """An episode read back: its bag directory, info and samples; ``skipped`` counts actions
    that found no image."""

    path: Path
    info: EpisodeInfo
    steps: list[EpisodeStep] = field(default_factory=list)
    skipped: int = 0


class EpisodeBagWriter:
    """Write one episode directly (the simulator's collector: no DDS, same bytes as ROS).

    Call :meth:`instruction` once, :meth:`step` per control step, then
    :meth:`close` with the outcome.
    """

    def __init__(self, path: str | Path, embodiment: Embodiment, topics: EpisodeTopics | None = None,
                 frame_id: str = "base_link", camera_frame: str = "camera"):
        self.topics = topics or EpisodeTopics()
        self.embodiment = embodiment
        self.frame_id = frame_id
        self.camera_frame = camera_frame
        self.steps = 0
        self._bag = BagWriter(path)
        t = self.topics
        self._bag.add_topic(t.camera, mcap_io.IMAGE, mcap_io.qos(depth=1))
        self._bag.add_topic(t.instruction, mcap_io.STRING, mcap_io.qos(transient_local=True, depth=1))
        self._bag.add_topic(t.action, mcap_io.RT2_ACTION)
        self._bag.add_topic(t.twist, mcap_io.TWIST_STAMPED)
        self._bag.add_topic(t.gripper, mcap_io.FLOAT64)
        self._bag.add_topic(t.ee_pose, mcap_io.POSE_STAMPED)

    @property
    def path(self) -> Path:
        """The bag directory."""
        return self._bag.path

    def instruction(self, text: str, stamp_ns: int) -> None:
        """Record the instruction message."""
        self._bag.write(self.topics.instruction, stamp_ns, mcap_io.string_message(text))

    def step(self, *, image: np.ndarray, stamp_ns: int, instruction: str, tokens: list[int],
             action: Mapping[str, Any], control_rate_hz: float, ee_position: Iterable[float],
             ee_quaternion: Iterable[float], backend: str = "", inference_ms: float = 0.0,
             points: Mapping[str, Iterable[float]] | None = None) -> None:
        """Record one control step: the image, the action computed from it (same stamp), the
        twist and gripper command it became, and the end-effector pose when the image was taken.

        ``points`` (optional): image points by name (``GROUNDING_POINTS``), (x, y) fractions of
        the image, written to the grounding topics with the image's stamp.
        """
        t = self.topics
        for name, point in (points or {}).items():
            if name not in GROUNDING_POINTS:
                raise ConfigError(f"points: expected names among {', '.join(GROUNDING_POINTS)}, got {name!r}")
            x, y = (float(v) for v in point)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ConfigError(f"points.{name}: expected finite image fractions, got {(x, y)!r}")
            topic = getattr(t, f"grounding_{name}")
            if not self._bag.has_topic(topic):
                self._bag.add_topic(topic, mcap_io.POINT_STAMPED)
            self._bag.write(topic, stamp_ns, mcap_io.point_stamped_message((x, y, 0.0), stamp_ns,
                                                                           self.camera_frame))
        self._bag.write(t.camera, stamp_ns, mcap_io.image_message(image, stamp_ns, self.camera_frame))
        self._bag.write(t.ee_pose, stamp_ns, mcap_io.pose_stamped_message(
            list(ee_position), list(ee_quaternion), stamp_ns, self.frame_id))
        # The action is published after the image it was computed from: 1 ns later keeps log order.
        self._bag.write(t.action, stamp_ns + 1, mcap_io.rt2_action_message(
            stamp_ns=stamp_ns, instruction=instruction, tokens=tokens, action=action,
            embodiment=self.embodiment, step=self.steps, inference_ms=inference_ms, backend=backend,
            frame_id=self.frame_id))
        if action.get("terminate"):
            linear = angular = (0.0, 0.0, 0.0)
        else:
            get = lambda name: float(action.get(name, 0.0)) * control_rate_hz  # noqa: E731
            linear, angular = (get("x"), get("y"), get("z")), (get("roll"), get("pitch"), get("yaw"))
        self._bag.write(t.twist, stamp_ns + 2, mcap_io.twist_stamped_message(
            linear, angular, stamp_ns + 2, self.frame_id))
        if "gripper" in action and not action.get("terminate"):
            self._bag.write(t.gripper, stamp_ns + 2, mcap_io.float64_message(float(action["gripper"])))
        self.steps += 1

    def close(self, info: EpisodeInfo) -> Path:
        """Finish the bag with ``info`` in its custom data (``info.steps`` is filled in)."""
        info.steps = self.steps
        self._bag.custom_data.update(info.to_custom_data())
        return self._bag.close()

    def abort(self) -> None:
        """Stop without finishing (the directory is incomplete and should be removed)."""
        self._bag.abort()


# ----------------------------------------------------------------------------- reading


def find_episodes(root: str | Path) -> list[Path]:
    """Every episode bag under ``root`` (``root`` itself if it is one), sorted by path."""
    root = Path(root)
    if mcap_io.is_bag(root):
        return [root]
    if not root.is_dir():
        raise BagError(f"{root}: no such directory")
    return sorted(p.parent for p in root.rglob("metadata.yaml"))


def _tokens_for(embodiment: Embodiment, action_message: Any, where: str) -> tuple[list[int], dict[str, Any]]:
    """Bins and decoded values of an RT2Action in ``embodiment``."""
    recorded = [int(t) for t in np.asarray(action_message.tokens).tolist()]
    if str(action_message.embodiment) == embodiment.name and len(recorded) == embodiment.num_tokens:
        try:
            return recorded, embodiment.decode(recorded)
        except ActionLanguageError as exc:
            raise BagError(f"{where}: {exc}") from None
    names = list(action_message.dim_names)
    values = np.asarray(action_message.values, dtype=float).tolist()
    if len(names) != len(values) or not names:
        raise BagError(f"{where}: the action of embodiment {str(action_message.embodiment)!r} has no "
                       f"per-dim values to re-encode in embodiment {embodiment.name!r}")
    action: dict[str, Any] = dict(zip(names, values))
    if "terminate" in embodiment.names:
        action["terminate"] = bool(action_message.terminate)
    missing = [n for n in embodiment.names if n not in action]
    if missing:
        raise BagError(f"{where}: embodiment {embodiment.name!r} needs {', '.join(missing)}, which the "
                       f"recorded actions (dims {', '.join(names)}) do not have")
    try:
        tokens = embodiment.encode({n: action[n] for n in embodiment.names})
    except ActionLanguageError as exc:
        raise BagError(f"{where}: {exc}") from None
    return tokens, embodiment.decode(tokens)


def _read_rt2_actions(path: Path, topics: EpisodeTopics, embodiment: Embodiment,
                      info: EpisodeInfo, camera_type: str) -> Episode:
    episode = Episode(path=path, info=info)
    images: OrderedDict[int, Any] = OrderedDict()
    instruction = info.instruction
    grounding = {getattr(topics, f"grounding_{name}"): name for name in GROUNDING_POINTS}
    points: dict[int, dict[str, tuple[float, float]]] = {}
    heights: list[tuple[int, float]] = []   # the latest end-effector heights, in log order
    gripper_command: float | None = None
    wanted = [topics.camera, topics.instruction, topics.action, topics.ee_pose, topics.gripper, *grounding]
    for item in mcap_io.read_messages(path, wanted):
        if item.topic == topics.ee_pose:
            heights.append((mcap_io.stamp_to_ns(item.message.header.stamp), float(item.message.pose.position.z)))
            if len(heights) > _IMAGE_BUFFER:
                del heights[:len(heights) - _IMAGE_BUFFER]
        elif item.topic == topics.gripper:
            # Sent after the action of its step: at the next action it is the last command before.
            gripper_command = _float_data(item.message)
        elif item.topic in grounding:
            # Written before the action of the same stamp, so the step below finds them.
            point = item.message.point
            points.setdefault(mcap_io.stamp_to_ns(item.message.header.stamp), {})[grounding[item.topic]] = \
                (float(point.x), float(point.y))
        elif item.topic == topics.camera:
            images[mcap_io.stamp_to_ns(item.message.header.stamp)] = item.message
            if len(images) > _IMAGE_BUFFER:
                images.popitem(last=False)
        elif item.topic == topics.instruction:
            instruction = str(item.message.data)
        else:
            message = item.message
            stamp = mcap_io.stamp_to_ns(message.header.stamp)
            image = images.get(stamp)
            if image is None:
                episode.skipped += 1
                continue
            where = f"{path}: action step {int(message.step)}"
            tokens, action = _tokens_for(embodiment, message, where)
            found = points.pop(stamp, None)
            episode.steps.append(EpisodeStep(image=mcap_io.image_to_rgb(image, camera_type),
                                             instruction=str(message.instruction) or instruction,
                                             tokens=tokens, action=action, stamp_ns=stamp,
                                             embodiment=embodiment.name,
                                             points=found if found and all(n in found for n in REQUIRED_POINTS)
                                             else None,
                                             height=_height_at(heights, stamp), gripper_command=gripper_command))
    return episode


def _height_at(heights: list[tuple[int, float]], stamp: int) -> float | None:
    """The latest height stamped at or before ``stamp`` (the collector writes the pose with the image's
    stamp; a recorded robot's pose topic has stamps of its own)."""
    before = [(t, z) for t, z in heights if t <= stamp]
    return max(before)[1] if before else None


def _float_data(message: Any) -> float:
    """A std_msgs/Float64 (or a Float64MultiArray's first element) as a float."""
    data = message.data
    return float(data) if np.ndim(data) == 0 else float(np.asarray(data).reshape(-1)[0])


def _pose_at(poses: list[tuple[int, np.ndarray, np.ndarray]], stamp: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The latest pose at or before ``stamp`` (poses sorted by stamp)."""
    stamps = [p[0] for p in poses]
    index = int(np.searchsorted(stamps, stamp, side="right")) - 1
    if index < 0:
        return None
    return poses[index][1], poses[index][2]


def _read_ee_pose(path: Path, topics: EpisodeTopics, embodiment: Embodiment, info: EpisodeInfo,
                  control_rate_hz: float, camera_type: str) -> Episode:
    from rt2_ros.sim.rotations import quat_error

    episode = Episode(path=path, info=info)
    frames: list[tuple[int, Any]] = []
    poses: list[tuple[int, np.ndarray, np.ndarray]] = []
    grips: list[tuple[int, float]] = []
    instruction = info.instruction
    period_ns = int(round(1e9 / control_rate_hz))
    next_tick = None
    for item in mcap_io.read_messages(path, [topics.camera, topics.instruction, topics.ee_pose,
                                             topics.gripper]):
        if item.topic == topics.camera:
            stamp = mcap_io.stamp_to_ns(item.message.header.stamp)
            if next_tick is None or stamp >= next_tick:
                frames.append((stamp, item.message))
                next_tick = stamp + period_ns - period_ns // 10  # tolerate camera jitter
        elif item.topic == topics.instruction:
            instruction = str(item.message.data)
        elif item.topic == topics.ee_pose:
            pose = item.message.pose
            poses.append((mcap_io.stamp_to_ns(item.message.header.stamp),
                          np.array([pose.position.x, pose.position.y, pose.position.z]),
                          np.array([pose.orientation.w, pose.orientation.x, pose.orientation.y,
                                    pose.orientation.z])))
        else:
            grips.append((item.timestamp, _float_data(item.message)))
    if not poses:
        raise BagError(f"{path}: action_source ee_pose needs {topics.ee_pose} messages, the bag has none")
    poses.sort(key=lambda p: p[0])
    needed = set(embodiment.names) - {"terminate"}
    known = {"x", "y", "z", "roll", "pitch", "yaw", "gripper"}
    if needed - known:
        raise BagError(f"{path}: action_source ee_pose yields x, y, z, roll, pitch, yaw, gripper; "
                       f"embodiment {embodiment.name!r} also needs {', '.join(sorted(needed - known))}")
    grip_stamps = [g[0] for g in grips]
    for k in range(len(frames) - 1):
        stamp, image = frames[k]
        now, then = _pose_at(poses, stamp), _pose_at(poses, frames[k + 1][0])
        if now is None or then is None:
            episode.skipped += 1
            continue
        rotation = quat_error(then[1], now[1])
        g = int(np.searchsorted(grip_stamps, frames[k + 1][0], side="right")) - 1
        values = {"x": then[0][0] - now[0][0], "y": then[0][1] - now[0][1], "z": then[0][2] - now[0][2],
                  "roll": rotation[0], "pitch": rotation[1], "yaw": rotation[2],
                  "gripper": grips[g][1] if g >= 0 else 0.0, "terminate": False}
        episode.steps.append(_make_step(embodiment, image, camera_type, instruction, stamp, values, path,
                                        height=float(now[0][2]), gripper_command=_command_before(grips, stamp)))
    if frames and info.success:
        stamp, image = frames[-1]
        g = len(grips) - 1
        values = {"x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0,
                  "gripper": grips[g][1] if g >= 0 else 0.0, "terminate": True}
        now = _pose_at(poses, stamp)
        episode.steps.append(_make_step(embodiment, image, camera_type, instruction, stamp, values, path,
                                        height=None if now is None else float(now[0][2]),
                                        gripper_command=_command_before(grips, stamp)))
    return episode


def _command_before(grips: list[tuple[int, float]], stamp: int) -> float | None:
    """The last gripper command logged before ``stamp`` (None before the first)."""
    g = int(np.searchsorted([t for t, _ in grips], stamp, side="left")) - 1
    return grips[g][1] if g >= 0 else None


def _make_step(embodiment: Embodiment, image: Any, camera_type: str, instruction: str, stamp: int,
               values: Mapping[str, Any], path: Path, height: float | None = None,
               gripper_command: float | None = None) -> EpisodeStep:
    action = {name: values[name] for name in embodiment.names}
    try:
        tokens = embodiment.encode(action)
    except ActionLanguageError as exc:
        raise BagError(f"{path}: step at {stamp} ns: {exc}") from None
    return EpisodeStep(image=mcap_io.image_to_rgb(image, camera_type), instruction=instruction,
                       tokens=tokens, action=embodiment.decode(tokens), stamp_ns=stamp,
                       embodiment=embodiment.name, height=height, gripper_command=gripper_command)


def read_episode(path: str | Path, embodiment: Embodiment, *, topics: EpisodeTopics | None = None,
                 action_source: str = "auto", control_rate_hz: float | None = None) -> Episode:
    """Read one episode bag into samples in ``embodiment`` (see the module doc).

    ``control_rate_hz`` (ee_pose only) defaults to the episode's
    ``rt2_ros.control_rate_hz``.  Errors are :class:`BagError` naming the bag.
    """
    path = Path(path)
    topics = topics or EpisodeTopics()
    if action_source not in ACTION_SOURCES:
        raise ConfigError(f"action_source: expected one of {', '.join(ACTION_SOURCES)}, got {action_source!r}")
    info = EpisodeInfo.from_custom_data(mcap_io.read_custom_data(path), str(path))
    available = mcap_io.bag_topics(path)
    camera_type = available.get(topics.camera)
    if camera_type not in (mcap_io.IMAGE, mcap_io.COMPRESSED_IMAGE):
        raise BagError(f"{path}: camera topic {topics.camera!r}: expected sensor_msgs/Image or "
                       f"CompressedImage, got {camera_type or 'no such topic'} "
                       f"(topics: {', '.join(sorted(available))})")
    if action_source == "auto":
        action_source = "rt2_action" if available.get(topics.action) == mcap_io.RT2_ACTION else "ee_pose"
    if action_source == "rt2_action":
        if available.get(topics.action) != mcap_io.RT2_ACTION:
            raise BagError(f"{path}: action topic {topics.action!r}: expected rt2_ros/msg/RT2Action, got "
                           f"{available.get(topics.action) or 'no such topic'}")
        episode = _read_rt2_actions(path, topics, embodiment, info, camera_type)
    else:
        rate = control_rate_hz if control_rate_hz is not None else info.control_rate_hz
        if not rate or not math.isfinite(rate) or rate <= 0:
            raise BagError(f"{path}: action_source ee_pose needs a control rate (the episode has no "
                           f"rt2_ros.control_rate_hz; pass control_rate_hz)")
        episode = _read_ee_pose(path, topics, embodiment, info, float(rate), camera_type)
    if not info.instruction and episode.steps:
        info.instruction = episode.steps[0].instruction
    return episode
