# Diagnostic (docs/training.md section 6, item 9): on the first frame of 12 seeds of a task kind,
# the model's answer to "where is the X?" against the object point and the goal its plan writes
# (--plan object_points checkpoints).  Usage: pointq_object.py MODEL KIND.
import sys, numpy as np
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
from rt2_ros.training.sim_data import _grounding_points
from rt2_ros.training.episodes import plan_numbers
from rt2_ros.sim.expert import ExpertPolicy
model, kind = sys.argv[1], sys.argv[2]
pol = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding="greedy"))
errs_q, errs_o, errs_g = [], [], []
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    for seed in range(12):
        sim.reset(seed, task=kind)
        if "purple" in sim.task.instruction: continue
        img = sim.render("head")
        name = sim.task.object.replace("_", " ")
        true = sim.project_points([sim.object_poses()[sim.task.object].position], "head", (224, 224))[0]
        tc = int(true[0] / 224 * 256); tr = int(true[1] / 224 * 256)
        ans = pol.answer(img, f"where is the {name}?")
        ex = ExpertPolicy(sim); ex.act(img, sim.task.instruction)
        goal = _grounding_points(sim, ex.expert.goal, sim.ee_pose().position, "head", 224, 224)["goal"]
        gc = int(goal[0] * 256)
        out = pol.act(img, sim.task.instruction)
        words = out.plan.split()
        try:
            q = [int(v) for v in ans.split()[:2]]; errs_q.append(abs(q[0] - tc))
        except Exception: pass
        numbers = plan_numbers(out.plan)
        if len(numbers) == 6:
            errs_o.append(abs(numbers[0] - tc)); errs_g.append(abs(numbers[2] - gc))
        print(f"seed {seed} {name:16s} object {tc} {tr} | asked: {ans!r:12s} | plan {out.plan!r} (expert goal {gc} {int(goal[1]*256)})")
print("median |col error|: asked", np.median(errs_q), " plan object", np.median(errs_o) if errs_o else "-",
      " plan goal", np.median(errs_g) if errs_g else "-", f" ({len(errs_o)} plans with 6 numbers)")
