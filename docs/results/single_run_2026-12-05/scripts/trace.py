# Diagnostic (docs/training.md section 6, item 7): one closed-loop episode, step by step, the
# model's plan and action next to the expert's.  Usage: trace.py MODEL KIND SEED STEPS (DEC=greedy|median).
import os, sys, numpy as np
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
from rt2_ros.sim.expert import ExpertPolicy
from rt2_ros.training.sim_data import _grounding_points
from rt2_ros.training.episodes import points_plan
model, kind, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with TabletopSim(seed, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    sim.reset(seed, task=kind)
    pol = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding=os.environ.get("DEC", "median")))
    ex = ExpertPolicy(sim); pol.reset(); ex.reset()
    print(sim.task.instruction)
    for t in range(steps):
        img = sim.render("head")
        out = pol.act(img, sim.task.instruction)
        try:
            eo = ex.act(img, sim.task.instruction); g = ex.expert.goal
            truth = points_plan(_grounding_points(sim, g, sim.ee_pose().position, "head", 224, 224))
            ea = {k: round(eo.action[k], 3) for k in ("x", "y", "z", "gripper")}
        except Exception as e:
            truth, ea = f"expert: {e}", {}
        a = {k: round(out.action[k], 3) for k in ("x", "y", "z", "gripper")}
        gap = np.linalg.norm(sim.ee_pose().position - sim.object_poses()[sim.task.object].position)
        print(f"{t:2d} gap {gap*100:5.1f}cm | model: {out.plan:32s} {a} | expert: {truth:32s} {ea}")
        sim.apply_action(out.action, 5.0)
        if out.action.get("terminate"): break
    print("success", sim.success())
