"""Tabletop scenes: seeded object layouts and the MJCF that builds them.

Frames: the *base frame* (MuJoCo's world) has its origin on the table surface
under the robot's base, x forward (away from the robot), y to the robot's
left, z up; metres.  The table top is the plane z = 0.

A scene is data (:class:`SceneSpec`: objects with colour, shape, size and
pose), drawn from a seed by :func:`generate_scene`, so the same seed gives the
same scene.  :func:`build_mjcf` turns it into MJCF text: table, objects
(free bodies), a floating two-finger hand that a mocap body drags through a
weld constraint, a fixed head camera and a wrist camera.  No asset files: every
shape is a MuJoCo primitive and every texture is procedural.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rt2_ros.errors import ConfigError
from rt2_ros.sim.errors import SimError

__all__ = ["COLORS", "SHAPES", "ObjectSpec", "SceneSpec", "generate_scene", "build_mjcf",
           "TABLE_EXTENT", "SPAWN_REGION", "HOME_POSITION", "FINGER_MAX_OPENING",
           "FINGER_HALF_THICKNESS", "FINGER_PAD_BOTTOM", "HEAD_CAMERA", "WRIST_CAMERA",
           "OBJECT_TERMS", "look_at_xyaxes", "parse_object_terms"]

#: Object colours (RGB 0..1), chosen to stay distinct from each other, the table and the floor.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.05),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.00, 0.50, 0.00),
}
SHAPES = ("cube", "cylinder", "sphere")
#: What selects objects (``rt2-ros collect/eval --exclude-objects``, ``TaskSpec.mentions``):
#: a colour, a shape or a whole object name.
OBJECT_TERMS = frozenset({*COLORS, *SHAPES, *(f"{c} {s}" for c in COLORS for s in SHAPES)})

#: Table top extent in the base frame: (x_min, x_max, y_min, y_max).
TABLE_EXTENT = (0.15, 0.85, -0.45, 0.45)
#: Where object centres are spawned: (x_min, x_max, y_min, y_max).
SPAWN_REGION = (0.38, 0.62, -0.22, 0.22)
MIN_OBJECT_SPACING = 0.11
#: Where the tool centre point starts each episode (gripper pointing down, open): high
#: above the table so the head camera sees the gripper without it hiding any object.
HOME_POSITION = (0.42, 0.0, 0.3)

FINGER_MAX_OPENING = 0.045    # travel of each finger: the gap is twice this when open
FINGER_HALF_THICKNESS = 0.006  # along the closing axis
FINGER_HALF_WIDTH = 0.012
FINGER_PAD_BOTTOM = -0.025    # finger tips, relative to the tool centre point (TCP)
FINGER_PAD_TOP = 0.045

HEAD_CAMERA = "head"
WRIST_CAMERA = "wrist"
_HEAD_CAMERA_POS = (0.05, 0.0, 0.6)
_HEAD_CAMERA_TARGET = (0.53, 0.0, 0.0)


@dataclass(frozen=True)
class ObjectSpec:
    """One graspable object.

    size: half-extents that matter for its shape: cube ``(half_side,)``,
    cylinder ``(radius, half_height)``, sphere ``(radius,)``.
    position: centre in the base frame when spawned (resting on the table).
    yaw: rotation about z in radians.
    """

    color: str
    shape: str
    size: tuple[float, ...]
    position: tuple[float, float, float]
    yaw: float = 0.0

    @property
    def name(self) -> str:
        """The name used in instructions, e.g. ``"red cube"``."""
        return f"{self.color} {self.shape}"

    @property
    def body_name(self) -> str:
        """The MuJoCo body (and geom) name, e.g. ``"obj_red_cube"``."""
        return f"obj_{self.color}_{self.shape}"

    @property
    def half_height(self) -> float:
        """Half of the object's height when resting upright."""
        return self.size[1] if self.shape == "cylinder" else self.size[0]

    @property
    def footprint_radius(self) -> float:
        """Radius of a circle that contains the object's footprint on the table."""
        if self.shape == "cube":
            return self.size[0] * math.sqrt(2.0)
        return self.size[0]

    @property
    def grasp_half_width(self) -> float:
        """Half the gap the fingers close to when grasping it (across faces for a cube)."""
        return self.size[0]


@dataclass(frozen=True)
class SceneSpec:
    """A whole scene: the seed it came from and its objects."""

    seed: int
    objects: tuple[ObjectSpec, ...]
    attempt: int = 0   # layouts drawn for this seed before this one (see TabletopSim.reset)

    def object(self, name: str) -> ObjectSpec:
        """Return the object called ``name`` ("red cube"), or raise SimError."""
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise SimError(f"object: no {name!r} in this scene "
                       f"(it has {', '.join(o.name for o in self.objects)})")

    @property
    def names(self) -> list[str]:
        """Names of the objects, in spawn order."""
        return [obj.name for obj in self.objects]


def _sample_size(shape: str, rng: np.random.Generator) -> tuple[float, ...]:
    if shape == "cube":
        return (round(float(rng.uniform(0.021, 0.025)), 4),)
    if shape == "cylinder":
        return (round(float(rng.uniform(0.020, 0.024)), 4), round(float(rng.uniform(0.026, 0.034)), 4))
    return (round(float(rng.uniform(0.022, 0.026)), 4),)


def generate_scene(seed: int, num_objects: tuple[int, int] = (3, 4), attempt: int = 0) -> SceneSpec:
    """Draw a scene from ``seed``: ``num_objects`` (inclusive range) objects of
    distinct colours, random shapes and sizes, spaced on the table.

    The same seed, range and ``attempt`` always give the same scene; ``attempt``
    draws further layouts for one seed (used when a layout does not fit a task).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimError(f"seed: expected a non-negative integer, got {seed!r}")
    low, high = num_objects
    if not 1 <= low <= high <= len(COLORS):
        raise SimError(f"num_objects: expected 1 <= min <= max <= {len(COLORS)}, got {num_objects!r}")
    rng = np.random.default_rng([int(seed), int(attempt)])
    count = int(rng.integers(low, high + 1))
    colors = rng.choice(list(COLORS), size=count, replace=False)
    x0, x1, y0, y1 = SPAWN_REGION
    for _attempt in range(1000):
        shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=count)]
        points: list[tuple[float, float]] = []
        for _ in range(count):
            for _try in range(200):
                p = (round(float(rng.uniform(x0, x1)), 4), round(float(rng.uniform(y0, y1)), 4))
                if all(math.dist(p, q) >= MIN_OBJECT_SPACING for q in points):
                    points.append(p)
                    break
        if len(points) == count:
            break
    else:  # pragma: no cover - the spawn region holds far more than six objects
        raise SimError(f"num_objects: cannot place {count} objects in the spawn region")
    objects = []
    for color, shape, (x, y) in zip(colors, shapes, points):
        size = _sample_size(shape, rng)
        yaw = float(rng.uniform(-math.pi / 4, math.pi / 4)) if shape == "cube" else 0.0
        half_height = size[1] if shape == "cylinder" else size[0]
        objects.append(ObjectSpec(str(color), shape, size, (x, y, half_height),
                                  round(yaw, 4)))
    return SceneSpec(int(seed), tuple(objects), int(attempt))


def parse_object_terms(key: str, text: str) -> tuple[str, ...]:
    """``"purple, Red  cube"`` -> ``("purple", "red cube")``; ConfigError naming ``key`` for a term
    no object of the simulator matches (a typo would otherwise select nothing, silently)."""
    terms = tuple(" ".join(t.lower().split()) for t in text.split(",") if t.strip())
    for term in terms:
        if term not in OBJECT_TERMS:
            raise ConfigError(f"{key}: {term!r} is no colour ({', '.join(COLORS)}), shape "
                           f"({', '.join(SHAPES)}) or object name of the simulator")
    return terms


def look_at_xyaxes(position, target, up=(0.0, 0.0, 1.0)) -> tuple[float, ...]:
    """Return MJCF ``xyaxes`` for a camera at ``position`` looking at ``target``."""
    position, target, up = (np.asarray(v, float) for v in (position, target, up))
    forward = target - position
    forward /= np.linalg.norm(forward)
    x_axis = np.cross(forward, up)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(x_axis, forward)
    return tuple(round(float(v), 6) for v in (*x_axis, *y_axis))


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _object_xml(obj: ObjectSpec) -> str:
    rgba = _fmt((*COLORS[obj.color], 1.0))
    quat = _fmt((math.cos(obj.yaw / 2), 0.0, 0.0, math.sin(obj.yaw / 2)))
    if obj.shape == "cube":
        geom = f'type="box" size="{_fmt(obj.size * 3)}"'
    elif obj.shape == "cylinder":
        geom = f'type="cylinder" size="{_fmt(obj.size)}"'
    else:
        geom = f'type="sphere" size="{_fmt(obj.size)}"'
    # Spheres get rolling friction (condim 6) so a released ball settles instead of rolling away.
    condim = 6 if obj.shape == "sphere" else 4
    return (f'<body name="{obj.body_name}" pos="{_fmt(obj.position)}" quat="{quat}">'
            f'<freejoint name="{obj.body_name}"/>'
            f'<geom name="{obj.body_name}" {geom} rgba="{rgba}" density="400" condim="{condim}" '
            f'friction="1.0 0.01 0.002" material="plastic"/></body>')


def build_mjcf(scene: SceneSpec, *, timestep: float = 0.002, offscreen_size: tuple[int, int] = (960, 1280),
               shadows: bool = True) -> str:
    """Return the MJCF text of ``scene``.

    offscreen_size: (height, width) of the largest image any renderer will ask for.
    """
    hx = (TABLE_EXTENT[1] - TABLE_EXTENT[0]) / 2
    hy = (TABLE_EXTENT[3] - TABLE_EXTENT[2]) / 2
    cx = (TABLE_EXTENT[1] + TABLE_EXTENT[0]) / 2
    cy = (TABLE_EXTENT[3] + TABLE_EXTENT[2]) / 2
    legs = "".join(
        f'<geom type="cylinder" size="0.025 0.36" pos="{_fmt((cx + sx * (hx - 0.05), cy + sy * (hy - 0.05), -0.40))}" '
        f'material="table_leg" contype="0" conaffinity="0"/>'
        for sx in (-1, 1) for sy in (-1, 1))
    objects = "\n    ".join(_object_xml(obj) for obj in scene.objects)
    head_axes = _fmt(look_at_xyaxes(_HEAD_CAMERA_POS, _HEAD_CAMERA_TARGET))
    # Wrist camera: behind the palm, looking down past the fingers.
    wrist_pos = (0.075, 0.0, 0.09)
    wrist_axes = _fmt(look_at_xyaxes(wrist_pos, (-0.01, 0.0, -0.09), up=(1.0, 0.0, 0.0)))
    finger_geom = (f'type="box" size="{FINGER_HALF_WIDTH} {FINGER_HALF_THICKNESS} '
                   f'{(FINGER_PAD_TOP - FINGER_PAD_BOTTOM) / 2:.6g}" material="finger" '
                   f'friction="1.5 0.02 0.002" condim="4" mass="0.05"')
    pad_z = (FINGER_PAD_TOP + FINGER_PAD_BOTTOM) / 2
    off_h, off_w = offscreen_size
    # On a CPU renderer multisampling doubles the frame time for barely visible
    # smoothing at 224x224, so it is off; a 1024 shadow map is the cheapest that
    # still gives crisp contact shadows (the policy's depth cue).
    shadow_size = 1024
    home = _fmt(HOME_POSITION)
    return f"""<mujoco model="rt2_tabletop_seed{scene.seed}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep:.6g}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{off_w}" offheight="{off_h}" azimuth="160" elevation="-25"/>
    <quality shadowsize="{shadow_size}" offsamples="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
    <map znear="0.01" zfar="20"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.82 0.87 0.93" rgb2="0.45 0.5 0.56" width="64" height="64"/>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.32 0.33 0.35" rgb2="0.27 0.28 0.3" width="256" height="256"/>
    <texture name="wood" type="2d" builtin="checker" rgb1="0.80 0.76 0.69" rgb2="0.77 0.73 0.66" width="512" height="512"/>
    <material name="floor" texture="floor" texrepeat="8 8"/>
    <material name="table" texture="wood" texrepeat="6 8" specular="0.1" shininess="0.2"/>
    <material name="table_leg" rgba="0.35 0.3 0.25 1"/>
    <material name="plastic" specular="0.3" shininess="0.4"/>
    <material name="hand" rgba="0.2 0.2 0.22 1" specular="0.4" shininess="0.5"/>
    <material name="finger" rgba="0.62 0.64 0.68 1" specular="0.4" shininess="0.5"/>
  </asset>
  <default>
    <geom solref="0.01 1" solimp="0.95 0.99 0.001"/>
  </default>
  <worldbody>
    <light name="key" pos="0.4 -0.2 1.6" dir="0.08 0.12 -1" directional="true" castshadow="{str(shadows).lower()}" diffuse="0.55 0.55 0.55" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.76" material="floor"/>
    <geom name="table" type="box" size="{hx:.6g} {hy:.6g} 0.02" pos="{cx:.6g} {cy:.6g} -0.02" material="table" friction="0.8 0.01 0.002"/>
    {legs}
    <camera name="{HEAD_CAMERA}" pos="{_fmt(_HEAD_CAMERA_POS)}" xyaxes="{head_axes}" fovy="42"/>
    <body name="ee_target" mocap="true" pos="{home}">
      <site name="ee_target" size="0.004" rgba="0 1 0 0" group="5"/>
    </body>
    <body name="hand" pos="{home}" gravcomp="1">
      <freejoint name="hand"/>
      <site name="tcp" size="0.004" rgba="1 0 0 0" group="5"/>
      <geom name="palm" type="box" size="0.022 0.062 0.012" pos="0 0 0.057" material="hand" mass="0.4"/>
      <geom name="wrist" type="cylinder" size="0.02 0.04" pos="0 0 0.109" material="hand" mass="0.2" contype="0" conaffinity="0"/>
      <geom name="wrist_ring" type="cylinder" size="0.028 0.006" pos="0 0 0.075" rgba="0.55 0.57 0.6 1" contype="0" conaffinity="0" mass="0.01"/>
      <camera name="{WRIST_CAMERA}" pos="{_fmt(wrist_pos)}" xyaxes="{wrist_axes}" fovy="75"/>
      <body name="finger_left" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_MAX_OPENING}" damping="2" armature="0.05" solreflimit="0.004 1"/>
        <geom name="finger_left" {finger_geom} pos="0 {FINGER_HALF_THICKNESS} {pad_z:.6g}"/>
      </body>
      <body name="finger_right" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_MAX_OPENING}" damping="2" armature="0.05" solreflimit="0.004 1"/>
        <geom name="finger_right" {finger_geom} pos="0 -{FINGER_HALF_THICKNESS} {pad_z:.6g}"/>
      </body>
    </body>
    {objects}
  </worldbody>
  <equality>
    <weld name="hand_to_target" body1="ee_target" body2="hand" relpose="0 0 0 1 0 0 0" solref="0.01 1"/>
  </equality>
  <contact>
    <exclude body1="hand" body2="finger_left"/>
    <exclude body1="hand" body2="finger_right"/>
  </contact>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="400" dampratio="1" ctrlrange="0 {FINGER_MAX_OPENING}" forcerange="-20 20"/>
    <position name="finger_right" joint="finger_right" kp="400" dampratio="1" ctrlrange="0 {FINGER_MAX_OPENING}" forcerange="-20 20"/>
  </actuator>
</mujoco>
"""
