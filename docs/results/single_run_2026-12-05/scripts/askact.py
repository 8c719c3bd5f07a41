# Diagnostic: pick episodes where the plan's goal is forced to the model's own answer to
# "where is the X?" (asked on the same frame); the model writes the rest of the plan and the action.
# Usage: askact.py MODEL SEEDS FORCE, e.g. askact.py F1 0,1,2,3,5,6,7,8,10,11 1 (docs/training.md section 6, item 7).
import sys, numpy as np
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.policy.constrained_decoding import encode_text, PLAN_PREFIX
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
model, seeds, force = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3] == "1"
pol = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding="median"))
default = list(pol._plan_prefix_ids)
wins = 0
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    for seed in seeds:
        sim.reset(seed, task="pick")
        name = sim.task.object.replace("_", " ")
        pol.reset(); closest = 9.0; grasped = False
        for t in range(80):
            img = sim.render("head")
            if force:
                ans = pol.answer(img, f"where is the {name}?").split()
                if len(ans) >= 2 and all(a.isdigit() for a in ans[:2]):
                    pol._plan_prefix_ids = encode_text(pol.tokenizer, f"{PLAN_PREFIX} goal {ans[0]} {ans[1]}")
                else:
                    pol._plan_prefix_ids = default
            out = pol.act(img, sim.task.instruction)
            sim.apply_action(out.action, 5.0)
            closest = min(closest, float(np.linalg.norm(sim.ee_pose().position - sim.object_poses()[sim.task.object].position)))
            grasped = grasped or sim.gripper_state().grasped == sim.task.object
            if out.action.get("terminate"): break
        ok = sim.success(); wins += ok
        print(f"seed {seed} {sim.task.instruction!r}: {'ok' if ok else 'fail'} steps {t+1} closest {closest*100:.1f} cm grasped {grasped}", flush=True)
print(f"force={force} {wins}/{len(seeds)}")
