"""Training data from the simulator: expert episodes and grounded VQA, written to disk.

``collect(out_dir, CollectConfig(episodes=N, seed=S))`` writes::

    out_dir/
      episodes/episode_000000/   one rosbag2 MCAP bag per episode (format: rt2_ros.training.episodes),
      ...                        written directly from the simulator (no DDS), success in custom_data
      vqa/vqa.jsonl              grounded questions and answers (format: rt2_ros.training.vqa_data)
      vqa/images/*.png           the images they are about
      collect.json               the configuration and counts (episodes, successes, VQA items, seconds)

Episodes: scene seeds ``S, S+1, ...``; each gets a task (``task`` kind or
``random``) solved by the privileged scripted expert
(:class:`~rt2_ros.sim.expert.ExpertPolicy`) at ``control_rate_hz``; every
step records the head camera image, the action (on the embodiment's bins),
the twist and gripper command it became, the end-effector pose, and the
grounding points: where in the image the action heads, where the gripper is,
where the task's object is and where its reference object is, if it has one
(see :mod:`rt2_ros.training.episodes`).  Seeds
whose task involves an object matched by ``exclude_objects`` (a colour, a
shape or a full name such as ``"purple sphere"``) give no episode — but their
scenes still give VQA, which is how a seen/unseen experiment keeps an object
out of the robot data while the VLM side still sees it.

``random_start`` (a share of the episodes, default 0): the hand starts at a
random point over the table (:data:`RANDOM_START_BOX`, where the camera sees
it: :data:`START_VIEW_MARGIN`) instead of home.
Every home-start episode begins with the gripper in the same place, so the
first steps of a policy trained on them only need where the object is; from
anywhere, the way to go depends on where the gripper is too, which is what
a policy needs once it has strayed.  The scene's VQA is still asked about
the home-start frame.

``action_noise`` (DART-style): on a quarter of the steps the simulator
executes the expert's action plus Gaussian noise on x, y, z while the bag
records the clean action, so the data holds states slightly off the expert's
path labelled with the way back.

DAgger (``collect(..., learner=policy)`` with ``expert_share`` < 1): a
learning policy drives the arm on ``1 - expert_share`` of the steps (drawn
per step) and the expert on the rest, while every recorded action is the
expert's for the state reached.  The data then covers the states the
learner's own mistakes lead to, labelled with what the expert does there,
which is what behaviour cloning lacks once a policy leaves the
demonstrations' path (Ross et al., 2011).  Such episodes are marked
``relabelled`` and ``source: sim-dagger``; training keeps them whatever
their outcome.

VQA (the "web data" of RT-2's co-fine-tuning, here about the simulator's own
scenes): the first frame of each scene gets ``questions_per_scene``
questions drawn from templates answered from the true scene (colours,
shapes, counts, left/right relations in the image, nearest object,
existence, a caption), and one frame in the middle of each episode gets
"what is the gripper holding?".  Left and right are image left and right
(objects are projected with the camera's intrinsics).  ``gripper_questions``
(default 0) more frames of each episode get "where is the gripper?",
answered and grounded like "where is the X?": the simulator's scenes always
show the gripper at home, the episodes (most of all random-start ones) show
it everywhere, and a policy has to read where it is.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rt2_ros.action_language import load_embodiment
from rt2_ros.errors import ConfigError, PolicyError
from rt2_ros.policy.base import HandState
from rt2_ros.training.episodes import POINT_BINS, EpisodeBagWriter, EpisodeInfo, point_bin
from rt2_ros.training.vqa_data import write_vqa_jsonl
from rt2_ros.validation import expect_bool, expect_int, expect_number, expect_str

__all__ = ["CollectConfig", "collect", "scene_questions", "CAPTION_QUESTION", "HOLDING_QUESTION", "GRIPPER_QUESTION",
           "POINT_BINS", "QUESTION_KINDS", "vocabulary_words"]

CAPTION_QUESTION = "describe the image"
HOLDING_QUESTION = "what is the gripper holding?"
GRIPPER_QUESTION = "where is the gripper?"
QUESTION_KINDS = ("count", "color_of_shape", "shape_of_color", "left_of", "right_of", "closest",
                  "exists", "leftmost", "rightmost", "side", "caption", "count_shape", "point")
# "where is the {object}?" is answered with the object's centre as two of the POINT_BINS integer
# words: column and row, each 0..255 across the image.
# Objects this close to the image centre (fraction of the width) are neither left nor right.
_CENTRE_BAND = 0.08
_PLURAL = {"cube": "cubes", "cylinder": "cylinders", "sphere": "spheres"}


def vocabulary_words() -> list[str]:
    """Every word the simulator's instructions, questions and answers can use (for tokenizers)."""
    from rt2_ros.sim.scene import COLORS, SHAPES
    from rt2_ros.sim.tasks import DIRECTIONS, load_task_library

    library = load_task_library()
    templates = [t for kind in library.kinds.values() for t in kind.templates]
    fixed = [CAPTION_QUESTION, HOLDING_QUESTION, GRIPPER_QUESTION, "how many objects are on the table?",
             "what color is the object left of the ?", "what color is the object right of the ?",
             "what shape is the object?", "which object is closest to the ?", "is there a on the table?",
             "what is the leftmost object?", "what is the rightmost object?",
             "is the on the left or the right?", "how many are on the table?", "where is the ?",
             "yes no nothing the a an and",
             " ".join(_PLURAL.values())]
    words: list[str] = []
    for text in [*templates, *fixed, *COLORS, *SHAPES, *DIRECTIONS]:
        words.extend(text.replace("{", " ").replace("}", " ").replace("?", " ? ").split())
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class CollectConfig:
    """What ``rt2-ros collect`` generates (validated; see the module doc)."""

    episodes: int
    seed: int = 0
    image_size: int = 96
    shadows: bool = False
    control_rate_hz: float = 5.0
    max_steps: int = 80
    embodiment: str = "rt2_arm"
    task: str = "random"
    vqa_scenes: int = -1                 # -1: one per episode seed
    questions_per_scene: int = 6
    exclude_objects: tuple[str, ...] = field(default_factory=tuple)
    camera: str = "head"
    action_noise: float = 0.0            # m, std of the noise on executed translations (_perturbed)
    expert_share: float = 1.0            # DAgger: share of steps the expert drives (the learner the rest)
    learner: str = ""                    # DAgger: what the learner is (a checkpoint path), for collect.json
    learner_hand_state: bool = False     # DAgger: the learner is given the hand's state (HandState)
    random_start: float = 0.0            # share of episodes whose hand starts anywhere in RANDOM_START_BOX
    gripper_questions: int = 0           # "where is the gripper?" point questions per episode (its frames)

    def __post_init__(self) -> None:
        expect_int("episodes", self.episodes, low=0, high=1_000_000)
        expect_int("seed", self.seed, low=0)
        expect_int("image_size", self.image_size, low=16, high=1024)
        expect_bool("shadows", self.shadows)
        expect_number("control_rate_hz", self.control_rate_hz, low=0.5, high=100.0)
        expect_int("max_steps", self.max_steps, low=1, high=10_000)
        expect_str("embodiment", self.embodiment, allow_empty=False)
        expect_str("task", self.task, allow_empty=False)
        expect_int("vqa_scenes", self.vqa_scenes, low=-1)
        expect_int("questions_per_scene", self.questions_per_scene, low=0, high=len(QUESTION_KINDS))
        expect_str("camera", self.camera, choices=("head", "wrist"))
        expect_number("action_noise", self.action_noise, low=0.0, high=0.05)
        expect_number("expert_share", self.expert_share, low=0.0, high=1.0)
        expect_number("random_start", self.random_start, low=0.0, high=1.0)
        expect_int("gripper_questions", self.gripper_questions, low=0, high=100)
        expect_str("learner", self.learner)
        expect_bool("learner_hand_state", self.learner_hand_state)
        if self.learner_hand_state and not self.learner:
            raise ConfigError("learner_hand_state: expected False without a learner (--policy-model), got True")
        if self.expert_share < 1.0 and not self.learner:
            raise ConfigError(f"expert_share: expected 1.0 without a learner (--policy-model), "
                              f"got {self.expert_share:g}")
        if self.learner and self.expert_share >= 1.0:
            raise ConfigError(f"expert_share: expected < 1 with a learner ({self.learner}), or the "
                              f"learner never drives; got {self.expert_share:g}")
        if not isinstance(self.exclude_objects, tuple):
            object.__setattr__(self, "exclude_objects", tuple(self.exclude_objects))
        from rt2_ros.sim.scene import OBJECT_TERMS

        for i, term in enumerate(self.exclude_objects):
            expect_str(f"exclude_objects[{i}]", term, choices=sorted(OBJECT_TERMS))
        if self.episodes == 0 and self.vqa_scenes <= 0:
            raise ConfigError("episodes: expected at least one episode or vqa_scenes > 0, got 0 and "
                              f"{self.vqa_scenes}")


# ----------------------------------------------------------------------------- VQA


@dataclass(frozen=True)
class _Seen:
    name: str
    color: str
    shape: str
    u: float            # pixel column of the object's centre
    v: float            # pixel row of the object's centre
    xy: tuple[float, float]


def _seen_objects(sim: Any, camera: str, width: int) -> list[_Seen]:
    poses = sim.object_poses()
    specs = sim.scene.objects
    points = np.array([poses[o.name].position for o in specs])
    pixels = sim.project_points(points, camera, (width, width))
    return [_Seen(o.name, o.color, o.shape, float(uv[0]), float(uv[1]), (float(p[0]), float(p[1])))
            for o, uv, p in zip(specs, pixels, points)]


def _with_article(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _article_list(names: list[str]) -> str:
    return " and ".join(_with_article(name) for name in names)


def scene_questions(objects: list[_Seen], width: int, rng: np.random.Generator, count: int,
                    all_colors: list[str], all_shapes: list[str]
                    ) -> list[tuple[str, str, str, tuple[float, float] | None]]:
    """Up to ``count`` (kind, question, answer, point) about a scene, kinds drawn without repetition.

    ``point`` is where the answer is in the image ((x, y) fractions of the width and height) for
    questions about one object's place ("point"), else None.
    """
    by_u = sorted(objects, key=lambda o: o.u)
    candidates: dict[str, list[tuple]] = {kind: [] for kind in QUESTION_KINDS}
    candidates["count"].append(("how many objects are on the table?", str(len(objects))))
    candidates["caption"].append((CAPTION_QUESTION, _article_list([o.name for o in by_u]) + " on the table"))
    candidates["leftmost"].append(("what is the leftmost object?", f"the {by_u[0].name}"))
    candidates["rightmost"].append(("what is the rightmost object?", f"the {by_u[-1].name}"))
    for shape in all_shapes:
        same = [o for o in objects if o.shape == shape]
        candidates["count_shape"].append((f"how many {_PLURAL.get(shape, shape + 's')} are on the table?",
                                          str(len(same))))
        if len(same) == 1:
            candidates["color_of_shape"].append((f"what color is the {shape}?", same[0].color))
    for obj in objects:
        candidates["shape_of_color"].append((f"what shape is the {obj.color} object?", obj.shape))
        left = [o for o in by_u if o.u < obj.u]
        right = [o for o in by_u if o.u > obj.u]
        if left:
            candidates["left_of"].append((f"what color is the object left of the {obj.name}?", left[-1].color))
        if right:
            candidates["right_of"].append((f"what color is the object right of the {obj.name}?",
                                           right[0].color))
        others = [o for o in objects if o is not obj]
        if others:
            distances = [math.dist(obj.xy, o.xy) for o in others]
            order = np.argsort(distances)
            # Skip near-ties: the answer must be clear from the image.
            if len(order) == 1 or distances[order[1]] - distances[order[0]] > 0.03:
                candidates["closest"].append((f"which object is closest to the {obj.name}?",
                                              f"the {others[int(order[0])].name}"))
        # Pixel centres are at integer coordinates: (u + 0.5) / width is the fraction of the width.
        x, y = (round(min(max((c + 0.5) / width, 0.0), 1.0), 4) for c in (obj.u, obj.v))
        column, row = point_bin(x), point_bin(y)
        candidates["point"].append((f"where is the {obj.name}?", f"{column} {row}", (x, y)))
        offset = obj.u - (width - 1) / 2
        if abs(offset) > _CENTRE_BAND * width:
            candidates["side"].append((f"is the {obj.name} on the left or the right?",
                                       "left" if offset < 0 else "right"))
    present = {o.name for o in objects}
    absent = [f"{c} {s}" for c in all_colors for s in all_shapes if f"{c} {s}" not in present]
    if absent:
        name = absent[int(rng.integers(len(absent)))]
        candidates["exists"].append((f"is there {_with_article(name)} on the table?", "no"))
    name = sorted(present)[int(rng.integers(len(present)))]
    candidates["exists"].append((f"is there {_with_article(name)} on the table?", "yes"))
    kinds = [k for k in QUESTION_KINDS if candidates[k]]
    chosen = rng.choice(len(kinds), size=min(count, len(kinds)), replace=False)
    chosen_items = []
    for index in sorted(int(i) for i in chosen):
        kind = kinds[index]
        question, answer, *point = candidates[kind][int(rng.integers(len(candidates[kind])))]
        chosen_items.append((kind, question, answer, point[0] if point else None))
    return chosen_items


# ----------------------------------------------------------------------------- collection


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, optimize=False, compress_level=1)


def collect(out_dir: str | Path, config: CollectConfig,
            progress: Callable[[dict[str, int]], None] | None = None,
            learner: Any = None) -> dict[str, Any]:
    """Generate ``config.episodes`` expert episodes and the grounded VQA into ``out_dir``.

    ``learner`` (a :class:`~rt2_ros.policy.base.Policy`; required when
    ``config.expert_share`` < 1, refused otherwise): DAgger, see the module doc.
    Deterministic for a given config (and a deterministic learner).  Refuses an ``out_dir`` that already
    holds episodes or VQA (ConfigError).  Returns the summary also written to
    ``collect.json``.  ``progress`` is called after every scene with the counts so far.
    """
    from rt2_ros.sim.expert import ExpertPolicy
    from rt2_ros.sim.scene import COLORS, SHAPES
    from rt2_ros.sim.tabletop import SimConfig, TabletopSim
    from rt2_ros.sim.tasks import TaskInfeasible

    out = Path(out_dir)
    episodes_dir, vqa_dir = out / "episodes", out / "vqa"
    for existing in (episodes_dir, vqa_dir):
        if existing.exists() and any(existing.iterdir()):
            raise ConfigError(f"out: {existing} already has data; collect into a new directory")
    if (learner is None) != (config.expert_share >= 1.0):
        raise ConfigError(f"expert_share: {config.expert_share:g} needs a learner policy exactly when it is "
                          f"below 1 (learner given: {learner is not None})")
    embodiment = load_embodiment(config.embodiment)
    (vqa_dir / "images").mkdir(parents=True, exist_ok=True)
    episodes_dir.mkdir(parents=True, exist_ok=True)
    size = config.image_size
    sim = TabletopSim(config.seed, task=None,
                      config=SimConfig(image_size=(size, size), shadows=config.shadows))
    expert = ExpertPolicy(sim, embodiment)
    vqa_scenes = config.episodes if config.vqa_scenes < 0 else config.vqa_scenes
    records: list[dict[str, Any]] = []
    counts = {"episodes": 0, "successes": 0, "excluded_seeds": 0, "infeasible_seeds": 0,
              "expert_errors": 0, "steps": 0, "vqa_scenes": 0, "vqa_items": 0, "random_starts": 0}
    if learner is not None:
        counts.update(learner_steps=0, learner_errors=0)
    started = time.perf_counter()
    seed = config.seed
    # Exclusions can skip many seeds; a bound keeps a typo from looping for ever.
    max_seeds = 20 * max(config.episodes, vqa_scenes) + 100
    while counts["episodes"] < config.episodes or counts["vqa_scenes"] < vqa_scenes:
        if seed - config.seed >= max_seeds:
            raise ConfigError(f"exclude_objects: {', '.join(config.exclude_objects)} excludes almost every "
                              f"task; only {counts['episodes']} episodes in {max_seeds} seeds")
        want_episode = counts["episodes"] < config.episodes
        try:
            task = sim.reset(seed, task=config.task if want_episode else None)
        except TaskInfeasible:
            counts["infeasible_seeds"] += 1
            task = sim.reset(seed, task=None)
        rng = np.random.default_rng([config.seed, seed])
        first = sim.render(config.camera)
        if counts["vqa_scenes"] < vqa_scenes:
            image_name = f"images/scene_{seed:06d}.png"
            _save_png(vqa_dir / image_name, first)
            seen = _seen_objects(sim, config.camera, size)
            for kind, question, answer, point in scene_questions(seen, size, rng, config.questions_per_scene,
                                                                 list(COLORS), list(SHAPES)):
                # seed + attempt name the scene (a task that does not fit a seed's first layout
                # draws further ones: generate_scene(seed, attempt=...)).
                record = {"image": image_name, "question": question, "answer": answer, "kind": kind,
                          "seed": seed, "attempt": sim.scene.attempt}
                if point is not None:
                    record["point"] = list(point)
                records.append(record)
            counts["vqa_scenes"] += 1
        if want_episode and task is not None:
            if task.mentions(config.exclude_objects):
                counts["excluded_seeds"] += 1
            else:
                # Own stream, so the VQA and the episode's other draws stay the same whatever the share.
                start_rng = np.random.default_rng([config.seed, seed, 3])
                if start_rng.random() < config.random_start:
                    sim.place_hand(_random_start(sim, start_rng, config.camera, size))
                    first = sim.render(config.camera)
                    counts["random_starts"] += 1
                records.extend(_run_episode(sim, expert, embodiment, config, seed, counts, first, rng,
                                            episodes_dir / f"episode_{counts['episodes']:06d}", vqa_dir,
                                            learner))
                counts["episodes"] += 1
        seed += 1
        if progress is not None:
            progress(dict(counts))
    sim.close()
    counts["vqa_items"] = write_vqa_jsonl(vqa_dir / "vqa.jsonl", records)
    summary = {"config": asdict(config), **counts, "seeds_used": [config.seed, seed - 1],
               "seconds": round(time.perf_counter() - started, 1)}
    (out / "collect.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


#: Where a ``random_start`` episode's hand starts: uniform in this box (base frame, m; low, high corners),
#: over the whole table where objects are placed and from just above the tallest object
#: (TabletopSim.place_hand's clearance) to the home height.
RANDOM_START_BOX = ((0.30, -0.30, 0.12), (0.70, 0.30, 0.30))

#: A random start's gripper must project at least this fraction of the image inside its edges: a
#: policy cannot go from where it cannot see the gripper (much of RANDOM_START_BOX is out of view).
START_VIEW_MARGIN = 0.08
_START_DRAWS = 200   # rejection draws before giving up (about half of the box is in view)


def _random_start(sim: Any, rng: np.random.Generator, camera: str, size: int) -> np.ndarray:
    """A hand start drawn uniformly from the part of RANDOM_START_BOX where ``camera`` sees the
    tool centre point (START_VIEW_MARGIN inside the image), by rejection."""
    low, high = (size * START_VIEW_MARGIN, size * (1.0 - START_VIEW_MARGIN))
    for _ in range(_START_DRAWS):
        start = rng.uniform(*RANDOM_START_BOX)
        u, v = sim.project_points([start], camera, (size, size))[0]
        if low <= u <= high and low <= v <= high:
            return start
    raise ConfigError(f"random_start: no start in {RANDOM_START_BOX} that the {camera} camera sees in "
                      f"{_START_DRAWS} draws")


#: Height (m) at which the expert's goal is seen for grounding: about an object's centre on the
#: table, so the goal's image point falls on the object or spot the arm heads for, not on the
#: empty patch in front of it where a hover height above it would project.
GOAL_POINT_HEIGHT = 0.02

#: Share of steps whose executed action gets ``action_noise`` (see _perturbed).
NOISY_STEP_FRACTION = 0.25


def _perturbed(action: dict, embodiment: Any, noise: float, rng: np.random.Generator) -> dict:
    """``action``, on a random quarter of the steps with N(0, noise) added to x, y, z (kept in bounds).

    Only a quarter: the expert's contact phases wait for a few mm of precision,
    which noise on every step would keep it from ever reaching.
    """
    if noise <= 0.0 or rng.random() >= NOISY_STEP_FRACTION:
        return action
    out = dict(action)
    for dim in embodiment.dims:
        if dim.name in ("x", "y", "z") and dim.name in out:
            out[dim.name] = float(np.clip(out[dim.name] + rng.normal(0.0, noise), dim.low, dim.high))
    return out


def _grounding_points(sim: Any, goal: np.ndarray | None, tcp: np.ndarray, camera: str, width: int,
                      height: int) -> dict[str, tuple[float, float]]:
    """Where the action heads (the expert's goal at GOAL_POINT_HEIGHT; the gripper itself once the
    expert is done), where the gripper is, where the task's object is (its centre, as the
    "where is the X?" answers place it), the point under the gripper at GOAL_POINT_HEIGHT
    (its offset from the goal is horizontal only) and, for a task with a reference object,
    where that one is (its centre), as (x, y) fractions of the image."""
    names = ["goal", "gripper", "object", "under"]
    poses = sim.object_poses()
    world = [tcp if goal is None else np.array([goal[0], goal[1], GOAL_POINT_HEIGHT]), tcp,
             poses[sim.task.object].position, np.array([tcp[0], tcp[1], GOAL_POINT_HEIGHT])]
    if sim.task.reference is not None:
        names.append("reference")
        world.append(poses[sim.task.reference].position)
    pixels = sim.project_points(world, camera, (height, width))
    return {name: (float(u) / width, float(v) / height) for name, (u, v) in zip(names, pixels)}


def _run_episode(sim: Any, expert: Any, embodiment: Any, config: CollectConfig, seed: int,
                 counts: dict[str, int], first: np.ndarray, rng: np.random.Generator, path: Path,
                 vqa_dir: Path, learner: Any = None) -> list[dict[str, Any]]:
    """One episode into a bag, labelled by the expert (driven by it, or by turns by ``learner``);
    returns its "what is the gripper holding" VQA records."""
    rate = config.control_rate_hz
    text = sim.task.instruction
    writer = EpisodeBagWriter(path, embodiment)
    base_ns = 1_000_000_000  # stamps are simulated time + 1 s (rosbag2 dislikes time 0)
    writer.instruction(text, base_ns)
    expert.reset()
    if learner is not None:
        learner.reset()
    # Which steps the learner drives: its own stream, so VQA and noise draws do not depend on it.
    turn_rng = np.random.default_rng([config.seed, seed, 2])
    frames: list[tuple[np.ndarray, str | None, tuple[float, float]]] = []  # image, held, gripper point
    image = first
    # Executing a noisy version of the expert's action while recording the clean one (DART)
    # puts states off the expert's path in the data, labelled with the way back, which a
    # cloned policy needs once its own small errors compound.  Own stream: the VQA draws
    # from ``rng`` stay the same whatever the noise.
    noise_rng = np.random.default_rng([config.seed, seed, 1])
    error = False
    command: float | None = None  # the last gripper command executed (the learner's HandState)
    for step in range(config.max_steps):
        if step:
            image = sim.render(config.camera)
        stamp = base_ns + int(round(sim.sim_time * 1e9))
        pose = sim.ee_pose()
        try:
            output = expert.act(image, text)
        except PolicyError:
            error = True  # the expert gave up (e.g. repeated failed grasps): a failed episode
            break
        points = _grounding_points(sim, expert.expert.goal, pose.position, config.camera,
                                   image.shape[1], image.shape[0])
        frames.append((image, sim.gripper_state().grasped, points["gripper"]))
        writer.step(image=image, stamp_ns=stamp, instruction=text, tokens=output.tokens,
                    action=output.action, control_rate_hz=rate, ee_position=pose.position,
                    ee_quaternion=pose.quaternion, backend="expert",
                    inference_ms=output.timings.get("total", 0.0), points=points)
        terminate = bool(output.action.get("terminate"))
        executed = output.action
        if learner is not None and not terminate and turn_rng.random() >= config.expert_share:
            try:
                hand = HandState(float(pose.position[2]), command) if config.learner_hand_state else None
                executed = learner.act(image, text, hand).action
            except PolicyError:
                counts["learner_errors"] += 1
                break
            counts["learner_steps"] += 1
            # A learner that stops early ends the episode, as it would on the robot.
            terminate = bool(executed.get("terminate"))
        command = float(executed.get("gripper", command if command is not None else 0.0))
        if not terminate:
            executed = _perturbed(executed, embodiment, config.action_noise, noise_rng)
        sim.apply_action(executed, rate)
        if terminate:
            break
    success = bool(sim.success()) and not error
    counts["expert_errors"] += int(error)
    counts["successes"] += int(success)
    counts["steps"] += writer.steps
    writer.close(EpisodeInfo(instruction=text, success=success, embodiment=embodiment.name,
                             control_rate_hz=rate, source="sim-expert" if learner is None else "sim-dagger",
                             seed=seed, task_kind=sim.task.kind, objects=sim.task.objects,
                             relabelled=learner is not None))
    records = []
    holding = [i for i, (_, held, _) in enumerate(frames) if held]
    empty = [i for i, (_, held, _) in enumerate(frames) if not held and i > 0]
    for pool in (holding, empty):
        if pool:
            index = pool[int(rng.integers(len(pool)))]
            image, held, _ = frames[index]
            name = f"images/episode_{seed:06d}_{index:03d}.png"
            _save_png(vqa_dir / name, image)
            records.append({"image": name, "question": HOLDING_QUESTION,
                            "answer": f"the {held}" if held else "nothing", "kind": "holding", "seed": seed,
                            "attempt": sim.scene.attempt})
    records.extend(_gripper_questions(frames, config, seed, sim.scene.attempt, vqa_dir))
    return records


def _gripper_questions(frames: list[tuple[np.ndarray, str | None, tuple[float, float]]], config: CollectConfig,
                       seed: int, attempt: int, vqa_dir: Path) -> list[dict[str, Any]]:
    """``config.gripper_questions`` "where is the gripper?" point questions on distinct frames of an
    episode where the gripper is in view, answered like "where is the X?" (column and row bins)."""
    visible = [i for i, (_, _, (x, y)) in enumerate(frames) if 0.0 <= x < 1.0 and 0.0 <= y < 1.0]
    if not config.gripper_questions or not visible:
        return []
    # Own stream: the holding questions and everything else stay the same whatever the count.
    rng = np.random.default_rng([config.seed, seed, 4])
    chosen = rng.choice(visible, size=min(config.gripper_questions, len(visible)), replace=False)
    records = []
    for index in sorted(int(i) for i in chosen):
        image, _, (x, y) = frames[index]
        name = f"images/episode_{seed:06d}_{index:03d}.png"
        _save_png(vqa_dir / name, image)
        records.append({"image": name, "question": GRIPPER_QUESTION, "answer": f"{point_bin(x)} {point_bin(y)}",
                        "kind": "gripper_point", "point": [x, y], "seed": seed, "attempt": attempt})
    return records
