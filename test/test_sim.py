"""The MuJoCo tabletop: scene building, rendering, commands, limits, grasping, success on real states."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rt2_ros.errors import ConfigError
from rt2_ros.sim import gl
from rt2_ros.sim.errors import RenderBackendError, SimError
from rt2_ros.sim.scene import HOME_POSITION
from rt2_ros.sim.tabletop import SimConfig, TabletopSim


@pytest.fixture(scope="module")
def sim():
    with TabletopSim(3, task="pick") as s:
        yield s


# ----------------------------------------------------------------------------- building and rendering


def test_renders_a_non_blank_rgb_image_of_the_configured_size(sim):
    sim.reset(3, task="pick")
    image = sim.render()
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert image.std() > 20  # not a flat colour
    wide = sim.render(size=(480, 640))
    assert wide.shape == (480, 640, 3)
    wrist = sim.render("wrist")
    assert wrist.shape == (224, 224, 3) and wrist.std() > 10


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_every_object_and_the_gripper_are_visible_from_the_head_camera(sim, seed):
    sim.reset(seed, task=None)
    pixels = sim.visible_pixels()
    assert pixels.pop("gripper") > 500
    assert set(pixels) == set(sim.scene.names)
    assert min(pixels.values()) > 150, pixels   # ~13x13 px or more at 224x224


@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_objects_show_their_colour_where_they_project(sim, size):
    sim.reset(3, task=None)
    image = sim.render(size=size).astype(int)
    centres = sim.project_points([obj.position for obj in sim.scene.objects], size=size)
    for obj, (u, v) in zip(sim.scene.objects, centres):
        # The pixel at the object's projected centre shows the object: check its dominant channel.
        r, g, b = image[int(round(v)), int(round(u))]
        expected = {"red": r > g + 60 and r > b + 60, "green": g > r + 40 and g > b + 40,
                    "blue": b > r + 60 and b > g + 40, "yellow": r > b + 80 and g > b + 80,
                    "orange": r > g + 40 and g > b + 20, "purple": r > g + 40 and b > g + 40}[obj.color]
        assert expected, (obj.name, size, (r, g, b))
    assert sim.project_points(np.zeros((0, 3))).shape == (0, 2)
    with pytest.raises(SimError, match="points: expected finite"):
        sim.project_points([[0.5, 0.0, float("nan")]])


def test_same_seed_gives_the_same_scene_image_and_physics():
    a = TabletopSim(4, task="push")
    b = TabletopSim(4, task="push")
    try:
        assert a.scene == b.scene and a.task == b.task
        assert np.array_equal(a.render(), b.render())
        for s in (a, b):
            s.apply_action({"x": 0.03, "y": -0.02, "z": -0.04, "yaw": 0.1, "gripper": 1.0}, 5.0)
        for name, pose in a.object_poses().items():
            assert np.array_equal(pose.position, b.object_poses()[name].position)
        assert np.array_equal(a.ee_pose().position, b.ee_pose().position)
        c = TabletopSim(5, task="push")
        assert c.scene != a.scene
        c.close()
    finally:
        a.close()
        b.close()


def test_reset_to_a_new_scene_renders_like_a_fresh_sim(sim):
    sim.reset(0, task=None)
    sim.render()                    # the renderer exists, bound to scene 0
    sim.reset(6, task=None)         # a different model: the renderer is re-pointed, not rebuilt
    reused = sim.render()
    with TabletopSim(6, task=None) as fresh:
        assert np.array_equal(reused, fresh.render())


def test_reset_puts_the_hand_home_open_and_time_at_zero(sim):
    sim.apply_action({"x": 0.05, "gripper": 1.0}, 5.0)
    sim.reset(3, task="pick")
    assert sim.sim_time == 0.0
    assert np.allclose(sim.ee_pose().position, HOME_POSITION, atol=2e-3)
    assert np.allclose(sim.ee_pose().rpy, 0.0, atol=1e-3)
    state = sim.gripper_state()
    assert state.command == 0.0 and state.closedness < 0.02 and state.grasped is None
    for obj in sim.scene.objects:   # resting where spawned
        assert np.allclose(sim.object_poses()[obj.name].position, obj.position, atol=3e-3)


def test_place_hand_starts_the_episode_there_and_the_next_reset_goes_home(sim):
    sim.reset(3, task="pick")
    objects = {n: p.position.copy() for n, p in sim.object_poses().items()}
    sim.apply_action({"x": 0.04, "gripper": 1.0}, 5.0)
    start = (0.55, -0.2, 0.15)
    sim.place_hand(start)
    assert sim.sim_time == 0.0
    assert np.allclose(sim.ee_pose().position, start, atol=2e-3)
    assert np.allclose(sim.ee_target_pose().position, start)
    assert sim.gripper_state().command == 0.0 and sim.gripper_state().closedness < 0.02
    for name, position in sim.object_poses().items():
        assert np.allclose(position.position, objects[name], atol=1e-3)
    assert not sim.success()
    sim.apply_action({"z": 0.02}, 5.0)  # the target moves from the new start, not from home
    assert np.allclose(sim.ee_target_pose().position, (0.55, -0.2, 0.17))
    sim.reset(3, task="pick")
    assert np.allclose(sim.ee_pose().position, HOME_POSITION, atol=2e-3)


@pytest.mark.parametrize("position, message", [
    ((0.5, 0.0), "expected 3 numbers"),
    ((0.9, 0.0, 0.2), "inside the workspace"),
    ((0.5, 0.0, float("nan")), "inside the workspace"),
    ((0.5, 0.0, 0.05), r"expected z >= 0\.1"),
])
def test_place_hand_refuses_points_outside_the_workspace_or_among_the_objects(sim, position, message):
    sim.reset(3, task="pick")
    with pytest.raises(SimError, match=message):
        sim.place_hand(position)
    assert np.allclose(sim.ee_pose().position, HOME_POSITION, atol=2e-3)


def test_reset_rejects_bad_seeds_and_kinds(sim):
    with pytest.raises(SimError, match="seed"):
        sim.reset(-2)
    with pytest.raises(SimError, match="unknown task kind 'fly'"):
        sim.reset(1, task="fly")


def test_camera_intrinsics_match_the_field_of_view(sim):
    fx, fy, cx, cy = sim.camera_intrinsics(size=(480, 640))
    assert fx == fy and cx == pytest.approx(319.5) and cy == pytest.approx(239.5)
    assert 2 * math.degrees(math.atan(240 / fy)) == pytest.approx(42.0)
    with pytest.raises(SimError, match="camera"):
        sim.render("ceiling")


def test_missing_gl_backend_error_names_the_debian_packages(monkeypatch):
    monkeypatch.setattr(gl, "_chosen", None)
    monkeypatch.setattr(gl, "_failures", {"egl": "no EGL device", "osmesa": "libOSMesa.so not found"})
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    with pytest.raises(RenderBackendError, match="libegl1.*libosmesa6.*egl: no EGL device"):
        gl.require_gl_backend()


def test_choose_backend_falls_back_in_order_and_reports_failures():
    tried = []

    def probe(backend):
        tried.append(backend)
        return None if backend == "osmesa" else "no EGL device"

    assert gl.choose_backend(probe) == ("osmesa", {"egl": "no EGL device"})
    assert tried == ["egl", "osmesa"]
    assert gl.choose_backend(lambda b: f"{b} missing") == (None, {"egl": "egl missing", "osmesa": "osmesa missing"})


def test_a_process_without_egl_renders_with_osmesa(tmp_path):
    # A bogus EGL vendor list makes EGL unusable; the probe must pick OSMesa and render.
    code = ("from rt2_ros.sim import gl, TabletopSim\n"
            "sim = TabletopSim(0, task=None)\n"
            "print(gl.gl_backend(), sim.render().std() > 20)\n"
            "sim.close()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env["__EGL_VENDOR_LIBRARY_FILENAMES"] = str(tmp_path / "none.json")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["osmesa", "True"]


def test_gl_backend_was_chosen():
    assert gl.require_gl_backend() in ("egl", "osmesa", "glfw", "glx")
    assert os.environ.get("MUJOCO_GL")


# ----------------------------------------------------------------------------- commands and limits


def test_apply_action_moves_the_target_by_exactly_the_delta(sim):
    sim.reset(3, task=None)
    before = sim.ee_target_pose().position
    report = sim.apply_action({"x": 0.04, "y": -0.03, "z": -0.05}, 5.0)
    assert report.physics_steps == 100 and report.limits == ()
    assert np.allclose(sim.ee_target_pose().position - before, [0.04, -0.03, -0.05], atol=1e-9)
    assert sim.sim_time == pytest.approx(0.2)
    # The hand follows the target (weld to a mocap body), within a few millimetres.
    sim.apply_action({}, 5.0)
    assert np.allclose(sim.ee_pose().position, sim.ee_target_pose().position, atol=3e-3)


def test_rotation_deltas_turn_about_base_axes(sim):
    from rt2_ros.sim.rotations import quat_from_rotvec, quat_mul
    sim.reset(3, task=None)
    sim.apply_action({"yaw": 0.2}, 5.0)
    assert sim.ee_target_pose().rpy == pytest.approx((0.0, 0.0, 0.2), abs=1e-9)
    sim.apply_action({}, 5.0)
    assert sim.ee_pose().rpy[2] == pytest.approx(0.2, abs=0.002)   # the hand caught up
    before = sim.ee_target_pose().quaternion
    sim.apply_action({"roll": 0.1}, 5.0)
    expected = quat_mul(quat_from_rotvec(np.array([0.1, 0.0, 0.0])), before)   # about the base x axis
    assert sim.ee_target_pose().quaternion == pytest.approx(expected, abs=1e-9)


def test_terminate_action_stops_and_holds_the_gripper(sim):
    sim.reset(3, task=None)
    sim.apply_twist((0.1, 0.0, 0.0), (0.0, 0.0, 0.0))
    sim.set_gripper(1.0)
    before = sim.ee_target_pose().position
    sim.apply_action({"terminate": True, "x": 0.05, "gripper": 0.0}, 5.0)
    assert np.array_equal(sim.ee_target_pose().position, before)
    assert sim.gripper_state().command == 1.0


def test_workspace_limits_stop_the_target_and_are_reported(sim):
    sim.reset(3, task=None)
    sim.apply_twist((0.0, 0.0, -1.0), (0.0, 0.0, 0.0))
    report = sim.step(0.5)
    assert report.limits == ("z_min",)
    assert sim.ee_target_pose().position[2] == pytest.approx(sim.config.workspace_min[2])
    assert sim.limit_counts == {"z_min": 1}
    sim.apply_twist((0.0, 0.0, 0.0), (2.0, 0.0, 0.0))
    report = sim.step(0.5)
    assert report.limits == ("roll",)
    assert sim.ee_target_pose().rpy[0] == pytest.approx(sim.config.max_tilt)
    sim.apply_twist((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    assert sim.step(0.1).limits == ()


def test_step_keeps_simulated_time_exact_over_odd_periods(sim):
    sim.reset(3, task=None)
    for _ in range(30):
        sim.step(1 / 30)
    assert sim.sim_time == pytest.approx(1.0, abs=sim.physics_dt)
    with pytest.raises(SimError, match="dt"):
        sim.step(-0.1)
    with pytest.raises(SimError, match="dt"):
        sim.step(float("nan"))


def test_twist_timeout_zeroes_a_stale_twist():
    with TabletopSim(3, task=None, config=SimConfig(twist_timeout_s=0.1)) as s:
        start = s.ee_target_pose().position
        s.apply_twist((0.1, 0.0, 0.0), (0.0, 0.0, 0.0))
        s.step(1.0)
        moved = s.ee_target_pose().position[0] - start[0]
        assert moved == pytest.approx(0.01, abs=0.0021)   # 0.1 s of motion, one servo tick of slack


@pytest.mark.parametrize("call, message", [
    (lambda s: s.apply_twist((0.0, float("inf"), 0.0), (0, 0, 0)), "linear: expected 3 finite numbers"),
    (lambda s: s.apply_twist((0.0, 0.0), (0, 0, 0)), "linear: expected 3 finite numbers"),
    (lambda s: s.apply_twist((0, 0, 0), "fast"), "angular: expected 3 finite numbers"),
    (lambda s: s.set_gripper(1.5), "gripper: expected a closedness in 0..1, got 1.5"),
    (lambda s: s.set_gripper(True), "gripper: expected a closedness"),
    (lambda s: s.apply_action({"x": 0.01, "w": 1}, 5.0), "action: unknown key 'w'"),
    (lambda s: s.apply_action({"x": float("nan")}, 5.0), "action.x: expected a finite number"),
    (lambda s: s.apply_action({"gripper": 2.0}, 5.0), "gripper: expected a closedness"),
    (lambda s: s.apply_action({"x": 0.01}, 0.0), "control_rate_hz"),
    (lambda s: s.set_object_pose("pink cube", (0.5, 0, 0.1)), "no 'pink cube'"),
    (lambda s: s.set_task("sing a song"), "matches no task template"),
])
def test_bad_commands_are_errors_naming_the_argument(sim, call, message):
    sim.reset(3, task=None)
    with pytest.raises((SimError, ConfigError), match=message):
        call(sim)


def test_config_from_dict_validates_keys_and_values():
    config = SimConfig.from_dict({"image_size": [120, 160], "physics_hz": 1000, "shadows": False})
    assert config.image_size == (120, 160) and config.physics_hz == 1000
    with pytest.raises(ConfigError, match="sim: unknown key 'gravity'"):
        SimConfig.from_dict({"gravity": 9.8})
    with pytest.raises(ConfigError, match=r"image_size\[0\]: expected an integer >= 16, got 8"):
        SimConfig.from_dict({"image_size": [8, 8]})
    with pytest.raises(ConfigError, match=r"workspace_max\[2\]: expected a number > workspace_min\[2\]"):
        SimConfig.from_dict({"workspace_max": [0.8, 0.4, 0.01]})
    with pytest.raises(ConfigError, match="servo_hz"):
        SimConfig(servo_hz=1000.0, physics_hz=500.0)


# ----------------------------------------------------------------------------- grasping


def _move_to(sim, goal, rate=10.0, steps=60):
    for _ in range(steps):
        error = np.asarray(goal) - sim.ee_target_pose().position
        if np.abs(error).max() < 1e-4:
            return
        step = error * min(1.0, 0.03 / max(np.abs(error).max(), 1e-9))
        sim.apply_action({"x": step[0], "y": step[1], "z": step[2]}, rate)


def test_a_grasp_holds_an_object_against_gravity_for_seconds():
    with TabletopSim(3, task=None) as sim:
        cube = next(o for o in sim.scene.objects if o.shape == "cube")
        x, y = cube.position[:2]
        sim.set_object_pose(cube.name, (x, y, cube.size[0]))   # turned square to the fingers
        sim.step(0.2)
        _move_to(sim, (x, y, 0.12))
        _move_to(sim, (x, y, 0.03))
        sim.set_gripper(1.0)
        sim.step(0.6)
        grip = sim.gripper_state()
        assert grip.grasped == cube.name
        assert 2 * cube.size[0] - 0.004 < grip.opening < 2 * cube.size[0] + 0.002   # stopped by the cube
        _move_to(sim, (x, y, 0.2))
        lifted = sim.object_poses()[cube.name].position[2]
        assert lifted > 0.15
        sim.step(3.0)
        assert sim.object_poses()[cube.name].position[2] == pytest.approx(lifted, abs=0.005)
        assert sim.gripper_state().grasped == cube.name
        # Opening drops it back onto the table: held by friction only, not attached.
        sim.set_gripper(0.0)
        sim.step(1.0)
        assert sim.object_poses()[cube.name].position[2] < 0.05
        assert sim.gripper_state().grasped is None


def test_success_detectors_on_physical_states():
    with TabletopSim(0, task=None) as sim:
        cube_name = next(o.name for o in sim.scene.objects if o.shape == "cube")
        other = next(o for o in sim.scene.objects if o.name != cube_name and o.shape in ("cube", "cylinder"))
        sim.set_task(f"put the {cube_name} on the {other.name}")
        assert not sim.success()
        base = sim.object_poses()[other.name].position
        cube = sim.scene.object(cube_name)
        sim.set_object_pose(cube_name, (base[0], base[1], base[2] + other.half_height + cube.size[0] + 0.002))
        sim.step(0.5)
        assert sim.success()
        sim.set_object_pose(cube_name, (base[0], base[1] + 0.07, cube.size[0]))
        sim.step(0.3)
        assert not sim.success()
        sim.set_task(f"move the {cube_name} near the {other.name}")
        assert sim.success()                       # beside it, resting on the table
        sim.set_task(f"push the {cube_name} to the left")
        assert not sim.success()                   # start positions restart with the task
        position = sim.object_poses()[cube_name].position
        sim.set_object_pose(cube_name, (position[0], position[1] + 0.1, position[2]))
        sim.step(0.1)
        assert sim.success()
