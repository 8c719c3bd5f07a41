import sys, numpy as np
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.policy.constrained_decoding import encode_text, PLAN_PREFIX
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
model, task, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
pol = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding=sys.argv[4] if len(sys.argv) > 4 else "median"))
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    sim.reset(seed, task=task); name = sim.task.object.replace("_", " ")
    obj = sim.object_poses()[sim.task.object].position
    print(sim.task.instruction, "object", obj)
    for t in range(40):
        img = sim.render("head")
        ans = pol.answer(img, f"where is the {name}?").split()
        pol._plan_prefix_ids = encode_text(pol.tokenizer, f"{PLAN_PREFIX} {name} {ans[0]} {ans[1]}")
        out = pol.act(img, sim.task.instruction)
        ee = sim.ee_pose().position
        pr = sim.project_points([ee, obj], "head", (224, 224)); tp = [[int(v/224*256) for v in p] for p in pr]
        print(t, "true ee/obj", tp, "ans", ans[:2], "plan", out.plan, "tok", out.tokens, "ee", np.round(ee, 3), "d", round(float(np.linalg.norm(ee-obj))*100, 1))
        sim.apply_action(out.action, 5.0)
