"""Seeded episodes and success tables: ``rt2-ros eval`` without ROS, and episode set-up for the sim node.

- :func:`start_episode` resets a simulator to the episode a ``task`` asks for:
  a task kind (``"pick"``), ``"random"``, or an instruction ("put the red cube
  on the blue cylinder"), for which the first seed (from the given one up)
  whose scene has the named objects is used;
- :func:`evaluate` runs N seeded episodes per task kind with any
  :class:`~rt2_ros.policy.base.Policy` (through
  :func:`~rt2_ros.sim.rollout.run_episode`, rendering the camera for policies
  that look at images) and returns an :class:`EvaluationReport`: a success
  table per kind, split into *seen* / *unseen* when the checkpoint says what it
  was trained on (:func:`read_training_data`).

What a checkpoint was trained on is an optional key of its ``rt2_ros.json``::

    "training_data": {
      "objects": ["red cube", "blue cylinder", ...],      # object names of the training episodes
      "instructions": ["pick up the red cube", ...]       # instruction texts of the training episodes
    }

An episode's objects are *seen* when every object its task names (the object
and the reference, if any) is in ``objects``; its instruction is *seen* when
the text (case, spaces and a final period ignored) is in ``instructions``.
Either list may be left out; its split is then not reported.

Episode ``i`` of every kind uses seed ``seed + i``, so two runs with the same
arguments pose the same tasks in the same scenes.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rt2_ros.errors import ConfigError, PolicyError, Rt2RosError
from rt2_ros.sim.errors import SimError
from rt2_ros.validation import expect_int, expect_number

__all__ = ["start_episode", "TrainingData", "read_training_data", "EpisodeOutcome",
           "EvaluationReport", "evaluate", "parse_task_list", "TRAINING_DATA_KEY"]

#: Key of the optional training-data record in a checkpoint's ``rt2_ros.json``.
TRAINING_DATA_KEY = "training_data"
# How many seeds start_episode tries for an instruction whose objects a scene must have.
_MAX_SEED_TRIES = 2000


def _normalised(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


def start_episode(sim: Any, seed: int, task: str) -> int:
    """Reset ``sim`` (a TabletopSim) to the episode ``task`` asks for; return the seed used.

    ``task``: a task kind of ``sim.tasks``, ``"random"``, or an instruction.
    A kind or ``"random"`` uses ``seed`` as it is.  An instruction uses the
    first seed from ``seed`` up whose scene holds the objects it names (same
    arguments, same episode).  Raises SimError naming the task when no template
    matches or no scene within the tried seeds fits.
    """
    from rt2_ros.sim.scene import COLORS, SHAPES, generate_scene

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SimError(f"seed: expected a non-negative integer, got {seed!r}")
    if not isinstance(task, str) or not task.strip():
        raise SimError(f"task: expected a task kind ({', '.join(sim.tasks.kinds)}), 'random' or an "
                       f"instruction, got {task!r}")
    task = task.strip()
    if task == "random" or task in sim.tasks.kinds:
        sim.reset(seed, task=task)
        return seed
    # Fail fast on text no template can match, whatever the scene holds.
    every_object = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
    sim.tasks.parse(task, every_object)
    for candidate in range(seed, seed + _MAX_SEED_TRIES):
        scene = generate_scene(candidate, sim.config.num_objects, 0)
        try:
            spec = sim.tasks.parse(task, scene.names)
        except SimError:
            continue
        sim.reset(candidate, task=spec)
        return candidate
    raise SimError(f"task: no scene of the seeds {seed}..{seed + _MAX_SEED_TRIES - 1} holds the "
                   f"objects {task!r} names")


# ----------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class TrainingData:
    """What a checkpoint was trained on (``rt2_ros.json`` ``training_data``); None = not recorded."""

    objects: frozenset[str] | None = None
    instructions: frozenset[str] | None = None

    def objects_seen(self, names: Iterable[str]) -> bool | None:
        """Whether every one of ``names`` was in training (None when objects were not recorded)."""
        if self.objects is None:
            return None
        return all(name in self.objects for name in names)

    def instruction_seen(self, instruction: str) -> bool | None:
        """Whether ``instruction`` was a training instruction (None when not recorded)."""
        if self.instructions is None:
            return None
        return _normalised(instruction) in self.instructions


def _string_list(data: Mapping[str, Any], key: str, source: str) -> frozenset[str] | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{source}: {TRAINING_DATA_KEY}.{key}: expected a list of non-empty "
                          f"strings, got {str(value)[:200]}")
    return frozenset(_normalised(v) if key == "instructions" else v.strip().lower() for v in value)


def read_training_data(model_dir: str | Path | None) -> TrainingData | None:
    """Return ``training_data`` from ``model_dir``'s ``rt2_ros.json`` (None if absent or no model).

    Raises ConfigError for an unreadable file or a malformed record.
    """
    if not model_dir:
        return None
    path = Path(model_dir) / "rt2_ros.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or TRAINING_DATA_KEY not in data:
        return None
    record = data[TRAINING_DATA_KEY]
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: {TRAINING_DATA_KEY}: expected an object with 'objects' and/or "
                          f"'instructions', got {str(record)[:200]}")
    unknown = sorted(set(record) - {"objects", "instructions"})
    if unknown:
        raise ConfigError(f"{path}: {TRAINING_DATA_KEY}: unknown key {unknown[0]!r} (expected "
                          f"objects, instructions)")
    return TrainingData(_string_list(record, "objects", str(path)),
                        _string_list(record, "instructions", str(path)))


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EpisodeOutcome:
    """One evaluated episode."""

    kind: str
    seed: int
    instruction: str
    objects: tuple[str, ...]
    success: bool
    terminated: bool
    steps: int
    wall_s: float
    objects_seen: bool | None = None
    instruction_seen: bool | None = None
    error: str = ""
    closest_m: float | None = None   # how near the tool centre point came to the task's object
    grasped: bool = False            # whether the gripper ever held it
    # The first step after which the task's detector fired, even if the episode did not end
    # solved: a policy that lifts the object and then carries it off or drops it (instead of
    # terminating) reached success and lost it, a different failure from never getting there.
    first_success_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The outcome as a JSON object."""
        return {"kind": self.kind, "seed": self.seed, "instruction": self.instruction,
                "objects": list(self.objects), "success": self.success,
                "terminated": self.terminated, "steps": self.steps,
                "wall_s": round(self.wall_s, 3), "objects_seen": self.objects_seen,
                "instruction_seen": self.instruction_seen, "error": self.error,
                "closest_m": None if self.closest_m is None else round(self.closest_m, 4),
                "grasped": self.grasped, "first_success_step": self.first_success_step}


def _rate(outcomes: Sequence[EpisodeOutcome]) -> dict[str, Any]:
    n = len(outcomes)
    wins = sum(o.success for o in outcomes)
    return {"episodes": n, "successes": wins, "success_rate": round(wins / n, 4) if n else None}


@dataclass
class EvaluationReport:
    """Outcomes of an evaluation and the success table made from them."""

    backend: str
    model: str
    privileged: bool
    control_rate_hz: float
    max_steps: int
    seed: int
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    training_data: TrainingData | None = None
    #: whether the policy was given the simulated hand's state each step (run_episode's hand_state)
    hand_state: bool = False

    @property
    def kinds(self) -> list[str]:
        """Task kinds in the order they were evaluated."""
        return list(dict.fromkeys(o.kind for o in self.outcomes))

    def _splits(self) -> list[tuple[str, Callable[[EpisodeOutcome], bool]]]:
        splits: list[tuple[str, Callable[[EpisodeOutcome], bool]]] = [("all", lambda o: True)]
        data = self.training_data
        if data is not None and data.objects is not None:
            splits += [("seen objects", lambda o: o.objects_seen is True),
                       ("unseen objects", lambda o: o.objects_seen is False)]
        if data is not None and data.instructions is not None:
            splits += [("seen instructions", lambda o: o.instruction_seen is True),
                       ("unseen instructions", lambda o: o.instruction_seen is False)]
        return splits

    def _by_kind(self) -> Iterable[tuple[str, list[EpisodeOutcome]]]:
        """(kind, its outcomes) for every kind, then ("overall", every outcome)."""
        for kind in self.kinds:
            yield kind, [o for o in self.outcomes if o.kind == kind]
        yield "overall", list(self.outcomes)

    def table_rows(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{kind or "overall": {split: {episodes, successes, success_rate}}}``."""
        return {kind: {name: _rate([o for o in subset if keep(o)]) for name, keep in self._splits()}
                for kind, subset in self._by_kind()}

    def table(self) -> str:
        """The success table as aligned text (``successes/episodes  rate`` per cell)."""
        splits = [name for name, _ in self._splits()]
        rows = self.table_rows()
        header = ["task", *splits]
        lines = [header]
        for kind, cells in rows.items():
            line = [kind]
            for name in splits:
                cell = cells[name]
                line.append("-" if not cell["episodes"] else
                            f"{cell['successes']}/{cell['episodes']} {100 * cell['success_rate']:5.1f}%")
            lines.append(line)
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                for row in lines]
        text.insert(1, "  ".join("-" * width for width in widths))
        policy = f"{self.backend}" + (f" ({self.model})" if self.model else "")
        if self.privileged:
            policy += " - privileged-state reference, not a learned model"
        return f"policy: {policy}\n" + "\n".join(text)

    def progress_rows(self) -> dict[str, dict[str, Any]]:
        """How far the episodes got, per kind and overall: ``{kind: {episodes, grasped,
        reached, closest_median_m}}`` (the median over episodes of the closest approach of the
        tool centre point to the task's object, what moves first when a policy starts to work;
        reached: episodes whose task was solved at some step, ended solved or not)."""
        rows = {}
        for kind, subset in self._by_kind():
            closest = [o.closest_m for o in subset if o.closest_m is not None]
            rows[kind] = {"episodes": len(subset), "grasped": sum(o.grasped for o in subset),
                          "reached": sum(o.first_success_step is not None for o in subset),
                          "closest_median_m": round(float(np.median(closest)), 4) if closest else None}
        return rows

    def progress_text(self) -> str:
        """:meth:`progress_rows` as one line per kind."""
        lines = ["how far they got (all episodes): median closest approach to the task's object, "
                 "episodes that grasped it, episodes solved at some step"]
        for kind, row in self.progress_rows().items():
            closest = "-" if row["closest_median_m"] is None else f"{100 * row['closest_median_m']:.1f} cm"
            lines.append(f"  {kind:<10} {closest:>8}   grasped {row['grasped']}/{row['episodes']}"
                         f"   reached {row['reached']}/{row['episodes']}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON: settings, the table and every episode."""
        data = self.training_data
        return {"backend": self.backend, "model": self.model, "privileged": self.privileged,
                "control_rate_hz": self.control_rate_hz, "max_steps": self.max_steps,
                "seed": self.seed, "hand_state": self.hand_state,
                "training_data": None if data is None else {
                    "objects": None if data.objects is None else sorted(data.objects),
                    "instructions": None if data.instructions is None else sorted(data.instructions)},
                "table": self.table_rows(), "progress": self.progress_rows(),
                "episodes": [o.to_json() for o in self.outcomes]}


def parse_task_list(text: str, known: Iterable[str]) -> list[str]:
    """``"pick,push"`` -> ``["pick", "push"]``; ConfigError naming an unknown kind."""
    known = list(known)
    kinds = [part.strip() for part in str(text).split(",") if part.strip()]
    if not kinds:
        raise ConfigError(f"tasks: expected a comma-separated list of task kinds ({', '.join(known)}), "
                          f"got {text!r}")
    for kind in kinds:
        if kind not in known:
            raise ConfigError(f"tasks: unknown task kind {kind!r} (expected some of {', '.join(known)})")
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"tasks: a task kind is listed twice in {text!r}")
    return kinds


def _next_seed(sim: Any, kind: str, first: int, stop: int, objects: tuple[str, ...],
               exclude_objects: tuple[str, ...]) -> int:
    """Reset ``sim`` to the first seed >= ``first`` whose ``kind`` task passes the object filters."""
    for candidate in range(first, stop):
        task = sim.reset(candidate, task=kind)
        if objects and not task.mentions(objects):
            continue
        if exclude_objects and task.mentions(exclude_objects):
            continue
        return candidate
    raise ConfigError(f"objects: no {kind} task of the seeds up to {stop - 1} involves "
                      f"{' or '.join(objects) or 'any object'}"
                      + (f" without {' or '.join(exclude_objects)}" if exclude_objects else ""))


def evaluate(sim: Any, policy: Any, kinds: Sequence[str], episodes: int, seed: int = 0, *,
             backend: str = "", model: str = "", control_rate_hz: float = 5.0, max_steps: int = 100,
             render: bool = True, training_data: TrainingData | None = None,
             objects: Sequence[str] = (), exclude_objects: Sequence[str] = (),
             progress: Callable[[EpisodeOutcome, int, int], None] | None = None,
             hand_state: bool = False, tracer: Any = None) -> EvaluationReport:
    """Run ``episodes`` seeded episodes of each of ``kinds`` with ``policy`` on ``sim``.

    ``objects`` / ``exclude_objects`` (colours, shapes or names): keep only
    the seeds whose task involves one of ``objects`` / none of
    ``exclude_objects``; seeds are tried from ``seed`` up, so the kept episodes
    are the same on every run.

    ``render``: give the policy camera images (needed by every learned
    policy; the privileged expert ignores them).  A policy that fails during
    an episode (PolicyError and other rt2_ros errors) fails that episode,
    with the error recorded; the evaluation goes on.  ``progress`` is called
    after each episode with the outcome, its index and the total.
    ``hand_state``: give the policy the hand's state each step (run_episode).
    ``tracer``: a :class:`~rt2_ros.sim.step_trace.StepTracer` that writes every step.
    """
    from rt2_ros.sim.rollout import run_episode

    expect_int("episodes", episodes, low=1)
    expect_int("seed", seed, low=0)
    expect_number("control_rate_hz", control_rate_hz, low=0.1, high=1000.0)
    expect_int("max_steps", max_steps, low=1)
    for kind in kinds:
        sim.tasks.kind(kind)
    report = EvaluationReport(backend=backend or getattr(policy, "name", "policy"), model=model,
                              privileged=bool(getattr(policy, "privileged", False)),
                              control_rate_hz=float(control_rate_hz), max_steps=max_steps, seed=seed,
                              training_data=training_data, hand_state=bool(hand_state))
    total = len(kinds) * episodes
    objects, exclude_objects = tuple(objects), tuple(exclude_objects)
    for kind in kinds:
        episode_seed = seed - 1
        for _ in range(episodes):
            started = time.perf_counter()
            episode_seed = _next_seed(sim, kind, episode_seed + 1, seed + _MAX_SEED_TRIES * episodes,
                                      objects, exclude_objects)
            task = sim.task
            names = task.objects
            outcome = EpisodeOutcome(kind=kind, seed=episode_seed, instruction=task.instruction,
                                     objects=names, success=False, terminated=False, steps=0,
                                     wall_s=0.0)
            if tracer is not None:
                tracer.start(kind, episode_seed)
            if training_data is not None:
                outcome.objects_seen = training_data.objects_seen(names)
                outcome.instruction_seen = training_data.instruction_seen(task.instruction)
            try:
                result = run_episode(sim, policy, control_rate_hz=control_rate_hz,
                                     max_steps=max_steps, render=render, hand_state=hand_state,
                                     on_step=tracer.step if tracer is not None else None)
                outcome.success, outcome.terminated = result.success, result.terminated
                outcome.steps = result.steps
                outcome.closest_m, outcome.grasped = result.closest_m, result.grasped
                outcome.first_success_step = result.first_success_step
            except (PolicyError, SimError, Rt2RosError) as err:
                outcome.error = f"{type(err).__name__}: {err}"
                outcome.success = bool(sim.task is not None and sim.success())
            outcome.wall_s = time.perf_counter() - started
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome, len(report.outcomes), total)
    return report

