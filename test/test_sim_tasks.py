"""Task library and success predicates of the simulated tabletop (pure: no MuJoCo)."""
from __future__ import annotations

import sys

import pytest
import yaml

from rt2_ros.errors import ConfigError
from rt2_ros.sim.errors import SimError
from rt2_ros.sim.scene import COLORS, SHAPES, ObjectSpec, SceneSpec, generate_scene
from rt2_ros.sim.tasks import (DIRECTIONS, Footprint, ObjectState, SceneSnapshot, TaskInfeasible,
                               TaskLibrary, evaluate, free_spot_near, load_task_library, make_task,
                               parse_instruction, push_is_clear, sample_task)


def test_tasks_module_does_not_import_mujoco():
    # In a fresh process: other tests in this one may have imported MuJoCo already.
    import subprocess
    code = "import sys, rt2_ros.sim.tasks; print('mujoco' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- scenes


def test_same_seed_same_scene_and_different_seeds_differ():
    assert generate_scene(7) == generate_scene(7)
    assert generate_scene(7) != generate_scene(8)
    assert generate_scene(7, attempt=1) != generate_scene(7)


@pytest.mark.parametrize("seed", range(20))
def test_scenes_have_distinct_colours_and_spaced_objects(seed):
    scene = generate_scene(seed, (3, 5))
    assert 3 <= len(scene.objects) <= 5
    colours = [o.color for o in scene.objects]
    assert len(set(colours)) == len(colours) and set(colours) <= set(COLORS)
    assert all(o.shape in SHAPES for o in scene.objects)
    for i, a in enumerate(scene.objects):
        assert a.name == f"{a.color} {a.shape}"
        assert a.position[2] == pytest.approx(a.half_height)
        for b in scene.objects[i + 1:]:
            assert ((a.position[0] - b.position[0]) ** 2 + (a.position[1] - b.position[1]) ** 2) ** 0.5 >= 0.11


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_generate_scene_rejects_bad_seeds(bad):
    with pytest.raises(SimError, match="seed"):
        generate_scene(bad)


def test_scene_object_lookup_names_the_choices():
    scene = generate_scene(0)
    assert scene.object(scene.names[0]) is scene.objects[0]
    with pytest.raises(SimError, match="no 'pink cube'.*it has"):
        scene.object("pink cube")


# ----------------------------------------------------------------------------- library


def test_bundled_library_has_the_four_kinds():
    library = load_task_library()
    assert set(library.kinds) == {"pick", "move_near", "push", "place_on"}
    assert {k.predicate for k in library.kinds.values()} == {"lifted", "near", "pushed", "on_top"}


def test_make_task_is_deterministic_and_fills_slots():
    scene = generate_scene(3)
    for kind in ("pick", "move_near", "push", "place_on"):
        try:
            a = make_task(kind, scene, seed=11)
        except TaskInfeasible:
            continue
        assert a == make_task(kind, scene, seed=11)
        assert a.object in scene.names and a.object in a.instruction
        assert "{" not in a.instruction
        if a.reference is not None:
            assert a.reference in scene.names and a.reference != a.object and a.reference in a.instruction
        if kind == "push":
            assert a.direction in DIRECTIONS and a.direction in a.instruction


def test_place_on_references_only_flat_topped_objects():
    for seed in range(30):
        scene = generate_scene(seed)
        try:
            task = make_task("place_on", scene, seed)
        except TaskInfeasible:
            continue
        assert scene.object(task.reference).shape in ("cube", "cylinder")


def test_sample_task_draws_kinds_from_the_seed():
    scene = generate_scene(1)
    assert sample_task(scene, 4) == sample_task(scene, 4)
    kinds = {sample_task(generate_scene(s), s).kind for s in range(40)}
    assert kinds == {"pick", "move_near", "push", "place_on"}


def test_unknown_kind_is_an_error_naming_the_kinds():
    with pytest.raises(SimError, match="unknown task kind 'juggle'.*pick"):
        make_task("juggle", generate_scene(0))


def test_parse_instruction_round_trips_every_template():
    library = load_task_library()
    scene = generate_scene(2)
    names = scene.names
    for kind in library.kinds.values():
        for template in kind.templates:
            filling = {"object": names[0], "reference": names[1], "direction": "left"}
            text = template.format(**filling)
            task = parse_instruction(f"  {text.upper()}. ", scene)
            assert task.kind == kind.name and task.object == names[0]
            if "{reference}" in template:
                assert task.reference == names[1]
            if "{direction}" in template:
                assert task.direction == "left"


def test_parse_instruction_rejects_unknown_text_and_objects():
    scene = generate_scene(2)
    with pytest.raises(SimError, match="matches no task template"):
        parse_instruction("dance with the robot", scene)
    with pytest.raises(SimError, match="matches no task template"):
        parse_instruction("pick up the pink elephant", scene)


def _library(kinds: dict) -> TaskLibrary:
    return TaskLibrary.from_dict({"kinds": kinds}, "tasks.yaml")


GOOD_KIND = {"templates": ["lift the {object}"], "predicate": "lifted", "params": {"min_lift": 0.05}}


def test_library_from_dict_accepts_a_new_kind_as_data(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"kinds": {"raise": GOOD_KIND}}))
    library = TaskLibrary.load(path)
    task = library.make("raise", generate_scene(0), 0)
    assert task.instruction.startswith("lift the ") and task.params == {"min_lift": 0.05}


@pytest.mark.parametrize("patch, message", [
    ({"predicate": "levitate"}, r"kinds.k.predicate: expected one of"),
    ({"templates": ["lift the {thing}"]}, r"kinds.k.templates\[0\]: expected the slots \{object\}"),
    ({"templates": []}, r"kinds.k.templates: expected a non-empty list"),
    ({"params": {}}, r"kinds.k.params.min_lift: expected a number"),
    ({"params": {"min_lift": -1}}, r"kinds.k.params.min_lift: expected a number >= 0.005, got -1"),
    ({"params": {"min_lift": 0.05, "speed": 1}}, r"kinds.k.params: unknown key 'speed'"),
    ({"object_shapes": ["pyramid"]}, r"kinds.k.object_shapes\[0\]: expected one of cube"),
    ({"colour": "red"}, r"kinds.k: unknown key 'colour'"),
])
def test_library_validation_names_the_bad_key(patch, message):
    with pytest.raises(ConfigError, match=message):
        _library({"k": {**GOOD_KIND, **patch}})


def test_library_rejects_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        TaskLibrary.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TaskLibrary.load(bad)
    with pytest.raises(ConfigError, match="at least one task kind"):
        _library({})


# ----------------------------------------------------------------------------- predicates


def _obj(name, position, start=None, max_z=None, ever_grasped=False, half=0.025):
    start = start or position
    return ObjectState(name, name.split()[1], tuple(position), tuple(start),
                       max_z if max_z is not None else max(position[2], start[2]), ever_grasped, half, half)


def _snap(*objects, grasped=None, contacts=()):
    return SceneSnapshot({o.name: o for o in objects}, grasped, frozenset(frozenset(p) for p in contacts))


LIB = load_task_library()
CUBE, CYL = "red cube", "blue cylinder"


def _task(kind, **filling):
    library_kind = LIB.kind(kind)
    return LIB._spec(library_kind, "text", {"object": CUBE, **filling})


def test_lifted_needs_grasp_and_height():
    task = _task("pick")
    start = (0.5, 0.0, 0.025)
    high = _obj(CUBE, (0.5, 0.0, 0.1), start)
    assert evaluate(task, _snap(high, grasped=CUBE))
    assert not evaluate(task, _snap(high))                                         # thrown, not held
    assert not evaluate(task, _snap(_obj(CUBE, (0.5, 0.0, 0.06), start), grasped=CUBE))  # too low


def test_near_needs_distance_release_and_table():
    task = _task("move_near", reference=CYL)
    ref = _obj(CYL, (0.5, 0.1, 0.03))
    close = _obj(CUBE, (0.5, 0.02, 0.025), (0.5, -0.2, 0.025))
    far = _obj(CUBE, (0.5, -0.05, 0.025), (0.5, -0.2, 0.025))
    assert evaluate(task, _snap(close, ref, contacts=[(CUBE, "table")]))
    assert not evaluate(task, _snap(far, ref, contacts=[(CUBE, "table")]))
    assert not evaluate(task, _snap(close, ref, contacts=[(CUBE, "table"), (CUBE, "gripper")]))
    assert not evaluate(task, _snap(close, ref, contacts=[(CUBE, CYL)]))          # on it, not beside it


def test_pushed_needs_direction_distance_and_no_lift():
    left = _task("push", direction="left")
    right = _task("push", direction="right")
    start = (0.5, 0.0, 0.025)
    moved = _obj(CUBE, (0.5, 0.09, 0.025), start)
    assert evaluate(left, _snap(moved))
    assert not evaluate(right, _snap(moved))
    assert not evaluate(left, _snap(_obj(CUBE, (0.5, 0.05, 0.025), start)))        # not far enough
    assert not evaluate(left, _snap(_obj(CUBE, (0.5, 0.09, 0.025), start, max_z=0.1)))  # was lifted
    assert not evaluate(left, _snap(_obj(CUBE, (0.5, 0.09, 0.025), start, ever_grasped=True)))


def test_on_top_needs_contact_no_table_no_gripper_and_alignment():
    task = _task("place_on", reference=CYL)
    ref = _obj(CYL, (0.5, 0.1, 0.03))
    top = _obj(CUBE, (0.51, 0.1, 0.085))
    assert evaluate(task, _snap(top, ref, contacts=[(CUBE, CYL), (CYL, "table")]))
    assert not evaluate(task, _snap(top, ref, contacts=[(CYL, "table")]))          # hovering
    assert not evaluate(task, _snap(top, ref, contacts=[(CUBE, CYL), (CUBE, "gripper")]))  # still held
    assert not evaluate(task, _snap(top, ref, contacts=[(CUBE, CYL), (CUBE, "table")]))    # leaning
    off = _obj(CUBE, (0.56, 0.1, 0.085))
    assert not evaluate(task, _snap(off, ref, contacts=[(CUBE, CYL)]))             # too far off centre
    below = _obj(CUBE, (0.5, 0.1, 0.01))
    assert not evaluate(task, _snap(below, ref, contacts=[(CUBE, CYL)]))


def test_evaluate_rejects_objects_missing_from_the_snapshot():
    with pytest.raises(SimError, match="object: 'red cube' is not in the scene"):
        evaluate(_task("pick"), _snap(_obj(CYL, (0.5, 0, 0.03))))


# ----------------------------------------------------------------------------- geometry


def test_push_is_clear_sees_blockers_and_table_edges():
    lone = [Footprint("a", 0.5, 0.0, 0.03)]
    assert push_is_clear(lone, "a", "left", 0.11)
    blocked = lone + [Footprint("b", 0.5, 0.13, 0.03)]
    assert not push_is_clear(blocked, "a", "left", 0.11)
    assert push_is_clear(blocked, "a", "right", 0.11)
    behind = lone + [Footprint("b", 0.5, -0.08, 0.03)]                          # where the pusher starts
    assert not push_is_clear(behind, "a", "left", 0.11)
    assert not push_is_clear([Footprint("a", 0.5, 0.3, 0.03)], "a", "left", 0.11)  # would leave the reach


def test_free_spot_near_avoids_other_objects():
    prints = [Footprint("a", 0.4, -0.2, 0.03), Footprint("ref", 0.5, 0.0, 0.03), Footprint("c", 0.5, 0.075, 0.03)]
    x, y = free_spot_near(prints, "a", "ref", 0.075)
    assert ((x - 0.5) ** 2 + y ** 2) ** 0.5 == pytest.approx(0.075)
    assert ((x - 0.5) ** 2 + (y - 0.075) ** 2) ** 0.5 >= 0.09
    crowded = [Footprint("a", 0.4, -0.2, 0.03), Footprint("ref", 0.5, 0.0, 0.03)] + [
        Footprint(f"o{i}", 0.5 + 0.075 * dx, 0.075 * dy, 0.03)
        for i, (dx, dy) in enumerate([(1, 0), (-1, 0), (0, 1), (0, -1), (0.7, 0.7), (-0.7, 0.7), (0.7, -0.7), (-0.7, -0.7)])]
    assert free_spot_near(crowded, "a", "ref", 0.075) is None


def test_infeasible_kind_raises_task_infeasible():
    only_spheres = SceneSpec(0, (ObjectSpec("red", "sphere", (0.025,), (0.5, 0.0, 0.025)),
                                 ObjectSpec("blue", "sphere", (0.025,), (0.5, 0.2, 0.025))))
    with pytest.raises(TaskInfeasible, match="no 'place_on' task"):
        make_task("place_on", only_spheres)
