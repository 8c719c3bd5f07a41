"""Tabletop tasks as data: instruction templates + success predicates.

The task kinds live in ``config/tasks.yaml`` (see the comments there): each
kind has instruction templates with slots (``{object}``, ``{reference}``,
``{direction}``), which shapes may fill the slots, and one of four predicate
types with parameters.  Adding a kind (say "lift the {object} high") is an
edit to that file, not new code, as long as it uses an existing predicate.

Success is decided on a :class:`SceneSnapshot` — plain data the simulator
produces at any step (``TabletopSim.snapshot()``), and tests can build by hand.
Nothing here imports MuJoCo.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import yaml

from rt2_ros.errors import ConfigError
from rt2_ros.paths import config_dir
from rt2_ros.sim.errors import SimError
from rt2_ros.sim.scene import SHAPES, TABLE_EXTENT, SceneSpec
from rt2_ros.validation import expect_number, expect_str, reject_unknown_keys

__all__ = ["ObjectState", "SceneSnapshot", "TaskSpec", "TaskKind", "TaskLibrary", "TaskInfeasible",
           "PREDICATES", "DIRECTIONS", "load_task_library", "make_task", "sample_task",
           "parse_instruction", "evaluate", "push_is_clear", "free_spot_near", "Footprint",
           "footprints_of"]

#: Unit vectors (x, y) of the push directions in the base frame (y points to the robot's left).
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (0.0, 1.0), "right": (0.0, -1.0)}

GRIPPER = "gripper"
TABLE = "table"


class TaskInfeasible(SimError):
    """The scene has no objects that fit the task kind (or no room to do it)."""


# ----------------------------------------------------------------------------- state


@dataclass(frozen=True)
class ObjectState:
    """One object's state, as success predicates see it (base frame, metres)."""

    name: str
    shape: str
    position: tuple[float, float, float]
    start_position: tuple[float, float, float]   # where it was when the task started
    max_z: float                                  # highest centre z since the task started
    ever_grasped: bool                            # held between both fingers since the task started
    half_height: float
    footprint_radius: float


@dataclass(frozen=True)
class SceneSnapshot:
    """What success predicates read: objects, what is held, what touches what.

    contacts: unordered pairs of touching things, each named by an object name,
    ``"table"`` or ``"gripper"`` (palm and fingers).
    """

    objects: Mapping[str, ObjectState]
    grasped: str | None = None
    contacts: frozenset[frozenset[str]] = frozenset()

    def touching(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are in contact."""
        return frozenset((a, b)) in self.contacts


# ----------------------------------------------------------------------------- predicates


def _horizontal_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _lifted(s: SceneSnapshot, task: "TaskSpec") -> bool:
    obj = s.objects[task.object]
    return s.grasped == task.object and obj.position[2] - obj.start_position[2] >= task.params["min_lift"]


def _near(s: SceneSnapshot, task: "TaskSpec") -> bool:
    obj, ref = s.objects[task.object], s.objects[task.reference]
    return (s.touching(task.object, TABLE) and not s.touching(task.object, GRIPPER)
            and _horizontal_distance(obj.position, ref.position) <= task.params["max_distance"])


def _pushed(s: SceneSnapshot, task: "TaskSpec") -> bool:
    obj = s.objects[task.object]
    dx, dy = DIRECTIONS[task.direction]
    moved = (obj.position[0] - obj.start_position[0]) * dx + (obj.position[1] - obj.start_position[1]) * dy
    return (moved >= task.params["min_displacement"] and not obj.ever_grasped
            and obj.max_z - obj.start_position[2] <= task.params["max_lift"])


def _on_top(s: SceneSnapshot, task: "TaskSpec") -> bool:
    obj, ref = s.objects[task.object], s.objects[task.reference]
    return (s.touching(task.object, task.reference) and not s.touching(task.object, TABLE)
            and not s.touching(task.object, GRIPPER) and obj.position[2] > ref.position[2]
            and _horizontal_distance(obj.position, ref.position) <= task.params["max_offset"])


@dataclass(frozen=True)
class Predicate:
    """A success predicate type: its function, slots and parameters (name -> (low, high))."""

    name: str
    test: Callable[[SceneSnapshot, "TaskSpec"], bool]
    slots: frozenset[str]
    params: Mapping[str, tuple[float, float]]


PREDICATES: dict[str, Predicate] = {p.name: p for p in (
    Predicate("lifted", _lifted, frozenset({"object"}), {"min_lift": (0.005, 0.3)}),
    Predicate("near", _near, frozenset({"object", "reference"}), {"max_distance": (0.01, 0.5)}),
    Predicate("pushed", _pushed, frozenset({"object", "direction"}),
              {"min_displacement": (0.005, 0.3), "max_lift": (0.0, 0.2)}),
    Predicate("on_top", _on_top, frozenset({"object", "reference"}), {"max_offset": (0.001, 0.2)}),
)}


# ----------------------------------------------------------------------------- task specs


@dataclass(frozen=True)
class TaskSpec:
    """One concrete task in one scene.

    kind: the task kind ("pick", ...); instruction: the text given to the policy;
    object/reference: object names ("red cube"); direction: "left"/"right" or None;
    predicate and params: how success is decided (see ``config/tasks.yaml``).
    """

    kind: str
    instruction: str
    predicate: str
    object: str
    reference: str | None = None
    direction: str | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    @property
    def objects(self) -> tuple[str, ...]:
        """The object names the task involves: the object, then the reference if any."""
        return tuple(n for n in (self.object, self.reference) if n is not None)

    def mentions(self, terms: Iterable[str]) -> bool:
        """Whether any of ``terms`` (a colour, a shape or a whole name) matches one of :attr:`objects`."""
        terms = tuple(terms)
        for name in self.objects:
            color, _, shape = name.partition(" ")
            if any(term in (name, color, shape) for term in terms):
                return True
        return False


def evaluate(task: TaskSpec, snapshot: SceneSnapshot) -> bool:
    """Return whether ``task`` is achieved in ``snapshot``."""
    for slot in ("object", "reference"):
        name = getattr(task, slot)
        if name is not None and name not in snapshot.objects:
            raise SimError(f"{slot}: {name!r} is not in the scene "
                           f"(it has {', '.join(snapshot.objects)})")
    return PREDICATES[task.predicate].test(snapshot, task)


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Footprint:
    """An object's disc on the table: centre (x, y) and radius."""

    name: str
    x: float
    y: float
    radius: float


def footprints_of(scene: SceneSpec) -> list[Footprint]:
    """Footprints of the scene's objects where they were spawned."""
    return [Footprint(o.name, o.position[0], o.position[1], o.footprint_radius) for o in scene.objects]


# Clearance the hand needs around a spot it reaches down to: a finger is ~2.4 cm
# wide, plus a margin for tracking error.
_HAND_CLEARANCE = 0.03
# Room the pusher needs behind an object (the closed fingers + approach margin).
_PUSHER_SETBACK = 0.045
# Reachable (and on-table) region for object centres after a push or placement.
_REACH = (TABLE_EXTENT[0] + 0.12, TABLE_EXTENT[1] - 0.12, -0.34, 0.34)


def _inside(x: float, y: float, region: Sequence[float]) -> bool:
    return region[0] <= x <= region[1] and region[2] <= y <= region[3]


def push_is_clear(footprints: Iterable[Footprint], name: str, direction: str, distance: float) -> bool:
    """Whether ``name`` can be pushed ``distance`` towards ``direction`` with nothing in the way.

    Checks the swept corridor (object width + hand clearance), the spot the
    pusher starts from behind the object, and that the end point stays reachable.
    """
    footprints = list(footprints)
    target = next(f for f in footprints if f.name == name)
    dx, dy = DIRECTIONS[direction]
    end_x, end_y = target.x + dx * distance, target.y + dy * distance
    if not _inside(end_x, end_y, _REACH):
        return False
    start_back = -(target.radius + _PUSHER_SETBACK + 0.02)
    for other in footprints:
        if other.name == name:
            continue
        rel_x, rel_y = other.x - target.x, other.y - target.y
        along = rel_x * dx + rel_y * dy
        across = abs(-rel_x * dy + rel_y * dx)
        half_width = target.radius + other.radius + _HAND_CLEARANCE
        if start_back - other.radius <= along <= distance + target.radius + other.radius + 0.02 \
                and across < half_width:
            return False
    return True


def free_spot_near(footprints: Iterable[Footprint], name: str, reference: str, distance: float,
                   prefer: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """Return a free (x, y) at ``distance`` from ``reference``'s centre where ``name`` fits.

    Candidates lie on a circle around the reference; the one nearest ``prefer``
    (default: where ``name`` is now) wins.  None if no candidate is free.
    """
    footprints = list(footprints)
    moving = next(f for f in footprints if f.name == name)
    ref = next(f for f in footprints if f.name == reference)
    prefer = prefer or (moving.x, moving.y)
    candidates = []
    for angle in np.linspace(-math.pi, math.pi, 24, endpoint=False):
        x, y = ref.x + distance * math.cos(angle), ref.y + distance * math.sin(angle)
        if not _inside(x, y, _REACH):
            continue
        if all(math.hypot(x - f.x, y - f.y) >= moving.radius + f.radius + _HAND_CLEARANCE
               for f in footprints if f.name not in (name, reference)):
            candidates.append((math.hypot(x - prefer[0], y - prefer[1]), x, y))
    if not candidates:
        return None
    _, x, y = min(candidates)
    return float(x), float(y)


# ----------------------------------------------------------------------------- task kinds


@dataclass(frozen=True)
class TaskKind:
    """One kind of task, as loaded from the tasks file."""

    name: str
    templates: tuple[str, ...]
    predicate: str
    params: Mapping[str, float]
    object_shapes: tuple[str, ...] = SHAPES
    reference_shapes: tuple[str, ...] = SHAPES
    directions: tuple[str, ...] = tuple(DIRECTIONS)

    @property
    def slots(self) -> frozenset[str]:
        """The slots its templates use."""
        return PREDICATES[self.predicate].slots


# Spacing between centres the expert places an object at for "near" tasks.
NEAR_PLACEMENT_DISTANCE = 0.075
# How far the expert plans to push (more than any sensible min_displacement).
PUSH_PLAN_MARGIN = 0.03

_SLOT_RE = re.compile(r"\{(\w+)\}")


def _shape_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of shapes, got {value!r}")
    return tuple(expect_str(f"{key}[{i}]", v, choices=SHAPES) for i, v in enumerate(value))


def _parse_kind(name: str, raw: Any, where: str) -> TaskKind:
    key = f"{where}: kinds.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {raw!r}")
    reject_unknown_keys(key, raw, ("templates", "predicate", "params", "object_shapes",
                                   "reference_shapes", "directions"))
    predicate = expect_str(f"{key}.predicate", raw.get("predicate"), choices=PREDICATES)
    spec = PREDICATES[predicate]
    templates = raw.get("templates")
    if not isinstance(templates, list) or not templates:
        raise ConfigError(f"{key}.templates: expected a non-empty list of strings, got {templates!r}")
    for i, template in enumerate(templates):
        expect_str(f"{key}.templates[{i}]", template, allow_empty=False)
        slots = set(_SLOT_RE.findall(template))
        if slots != spec.slots:
            raise ConfigError(f"{key}.templates[{i}]: expected the slots "
                              f"{', '.join('{' + s + '}' for s in sorted(spec.slots))} "
                              f"(predicate {predicate}), got {template!r}")
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict):
        raise ConfigError(f"{key}.params: expected a mapping, got {params_raw!r}")
    reject_unknown_keys(f"{key}.params", params_raw, spec.params)
    params = {}
    for pname, (low, high) in spec.params.items():
        if pname not in params_raw:
            raise ConfigError(f"{key}.params.{pname}: expected a number in {low}..{high}, got nothing")
        params[pname] = expect_number(f"{key}.params.{pname}", params_raw[pname], low=low, high=high)
    directions = raw.get("directions", list(DIRECTIONS))
    if not isinstance(directions, list) or not directions:
        raise ConfigError(f"{key}.directions: expected a non-empty list, got {directions!r}")
    directions = tuple(expect_str(f"{key}.directions[{i}]", d, choices=DIRECTIONS)
                       for i, d in enumerate(directions))
    return TaskKind(name=name, templates=tuple(templates), predicate=predicate, params=params,
                    object_shapes=_shape_list(f"{key}.object_shapes", raw.get("object_shapes", list(SHAPES))),
                    reference_shapes=_shape_list(f"{key}.reference_shapes",
                                                 raw.get("reference_shapes", list(SHAPES))),
                    directions=directions)


class TaskLibrary:
    """The task kinds of one tasks file, and the tools to instantiate and parse them."""

    def __init__(self, kinds: Mapping[str, TaskKind], source: str = "<dict>"):
        if not kinds:
            raise ConfigError(f"{source}: kinds: expected at least one task kind, got none")
        self.kinds = dict(kinds)
        self.source = source

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "TaskLibrary":
        """Build a library from the parsed YAML mapping (validated; ConfigError names the key)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping with 'kinds', got {data!r}")
        reject_unknown_keys(source, data, ("kinds",))
        kinds = data.get("kinds")
        if not isinstance(kinds, dict):
            raise ConfigError(f"{source}: kinds: expected a mapping of task kinds, got {kinds!r}")
        return cls({name: _parse_kind(str(name), raw, source) for name, raw in kinds.items()}, source)

    @classmethod
    def load(cls, path: str | Path) -> "TaskLibrary":
        """Load and validate a tasks YAML file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the tasks file ({err.strerror})") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        return cls.from_dict(data, str(path))

    def kind(self, name: str) -> TaskKind:
        """Return the kind called ``name``, or raise SimError listing the known ones."""
        if name not in self.kinds:
            raise SimError(f"task: unknown task kind {name!r} (expected one of {', '.join(self.kinds)})")
        return self.kinds[name]

    # -- instantiation

    def _candidates(self, kind: TaskKind, scene: SceneSpec) -> list[dict[str, str]]:
        """Every slot filling of ``kind`` the expert can carry out in ``scene``."""
        prints = footprints_of(scene)
        fillings = []
        for obj in scene.objects:
            if obj.shape not in kind.object_shapes:
                continue
            if "reference" in kind.slots:
                for ref in scene.objects:
                    if ref is obj or ref.shape not in kind.reference_shapes:
                        continue
                    if kind.predicate == "near" and free_spot_near(
                            prints, obj.name, ref.name, NEAR_PLACEMENT_DISTANCE) is None:
                        continue
                    fillings.append({"object": obj.name, "reference": ref.name})
            elif "direction" in kind.slots:
                distance = kind.params["min_displacement"] + PUSH_PLAN_MARGIN
                for direction in kind.directions:
                    if push_is_clear(prints, obj.name, direction, distance):
                        fillings.append({"object": obj.name, "direction": direction})
            else:
                fillings.append({"object": obj.name})
        return fillings

    def feasible(self, kind: str, scene: SceneSpec) -> bool:
        """Whether ``scene`` has at least one way to pose a task of ``kind``."""
        return bool(self._candidates(self.kind(kind), scene))

    def make(self, kind: str, scene: SceneSpec, seed: int) -> TaskSpec:
        """Return a task of ``kind`` in ``scene``; ``seed`` picks the objects and wording.

        Raises TaskInfeasible when no objects of the scene fit the kind.
        """
        task_kind = self.kind(kind)
        fillings = self._candidates(task_kind, scene)
        if not fillings:
            raise TaskInfeasible(f"task: no {kind!r} task is possible in scene {scene.seed} "
                                 f"(objects: {', '.join(scene.names)})")
        rng = np.random.default_rng(seed)
        filling = fillings[int(rng.integers(len(fillings)))]
        template = task_kind.templates[int(rng.integers(len(task_kind.templates)))]
        return self._spec(task_kind, template.format(**filling), filling)

    def sample(self, scene: SceneSpec, seed: int) -> TaskSpec:
        """Return a task of a kind drawn (uniformly among the feasible ones) from ``seed``."""
        feasible = [name for name in self.kinds if self.feasible(name, scene)]
        if not feasible:
            raise TaskInfeasible(f"task: no task kind is possible in scene {scene.seed}")
        rng = np.random.default_rng(seed)
        kind = feasible[int(rng.integers(len(feasible)))]
        return self.make(kind, scene, int(rng.integers(2**31)))

    @staticmethod
    def _spec(kind: TaskKind, instruction: str, filling: Mapping[str, str]) -> TaskSpec:
        return TaskSpec(kind=kind.name, instruction=instruction, predicate=kind.predicate,
                        object=filling["object"], reference=filling.get("reference"),
                        direction=filling.get("direction"), params=dict(kind.params))

    # -- parsing

    def parse(self, instruction: str, object_names: Iterable[str]) -> TaskSpec:
        """Return the task an instruction asks for, matching it against every template.

        Matching ignores case, surrounding whitespace and a final period.  Raises
        SimError naming the instruction when no template matches.
        """
        names = sorted(set(object_names), key=len, reverse=True)
        text = " ".join(instruction.strip().rstrip(".").split()).lower()
        name_alt = "|".join(re.escape(n) for n in names)
        for kind in self.kinds.values():
            for template in kind.templates:
                pattern = re.escape(template.lower())
                for slot in ("object", "reference"):
                    pattern = pattern.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{name_alt})")
                pattern = pattern.replace(re.escape("{direction}"),
                                          f"(?P<direction>{'|'.join(kind.directions)})")
                match = re.fullmatch(pattern, text) if names else None
                if match:
                    filling = match.groupdict()
                    if filling.get("reference") is not None and filling["reference"] == filling["object"]:
                        continue
                    return self._spec(kind, instruction.strip(), filling)
        raise SimError(f"instruction: {instruction!r} matches no task template for the objects "
                       f"{', '.join(sorted(names))} (e.g. {self.example()!r})")

    def example(self) -> str:
        """One template, to show users what an instruction looks like."""
        return next(iter(self.kinds.values())).templates[0]


@lru_cache(maxsize=1)
def _default_library() -> TaskLibrary:
    return TaskLibrary.load(config_dir() / "tasks.yaml")


def load_task_library(path: str | Path | None = None) -> TaskLibrary:
    """Return the library in ``path``, or the bundled ``config/tasks.yaml`` (cached)."""
    return _default_library() if path is None else TaskLibrary.load(path)


def make_task(kind: str, scene: SceneSpec, seed: int = 0, library: TaskLibrary | None = None) -> TaskSpec:
    """Return a task of ``kind`` in ``scene`` (objects and wording drawn from ``seed``)."""
    return (library or load_task_library()).make(kind, scene, seed)


def sample_task(scene: SceneSpec, seed: int = 0, library: TaskLibrary | None = None) -> TaskSpec:
    """Return a task of a feasible kind drawn from ``seed`` in ``scene``."""
    return (library or load_task_library()).sample(scene, seed)


def parse_instruction(instruction: str, scene: SceneSpec, library: TaskLibrary | None = None) -> TaskSpec:
    """Return the task ``instruction`` asks for in ``scene`` (SimError if none matches)."""
    return (library or load_task_library()).parse(instruction, scene.names)
