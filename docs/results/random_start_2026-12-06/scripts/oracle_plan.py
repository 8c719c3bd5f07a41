# Diagnostic: closed loop with the plan's points forced.  MODE: obj = object point from the model's
# own "where is the X?" answer; full = obj + the expert's goal and the true gripper point (oracle);
# grip = model writes object and goal, gripper forced to the truth (needs goal written: uses two passes).
# Usage: oracle_plan.py MODEL TASKS N MODE
import sys, json, numpy as np
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.policy.constrained_decoding import encode_text, PLAN_PREFIX
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
from rt2_ros.sim.expert import ExpertPolicy
from rt2_ros.training.sim_data import _grounding_points
model, tasks, n, mode = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
pol = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding="median"))
default = list(pol._plan_prefix_ids)
res = {}
q = lambda f: [min(255, max(0, int(v * 256))) for v in f]
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    for task in tasks:
        wins = done = 0; seed = -1; closes = []
        while done < n:
            seed += 1
            sim.reset(seed, task=task)
            if "purple" in sim.task.instruction: continue
            done += 1
            name = sim.task.object.replace("_", " ")
            ex = ExpertPolicy(sim); ex.reset()
            pol.reset(); closest = 9.0; grasped = False
            for t in range(80):
                img = sim.render("head")
                ex.act(img, sim.task.instruction)
                pts = _grounding_points(sim, ex.expert.goal, sim.ee_pose().position, "head", 224, 224)
                ans = pol.answer(img, f"where is the {name}?").split()
                if not (len(ans) >= 2 and all(a.isdigit() for a in ans[:2])):
                    ans = [str(v) for v in q(pts["object"])]
                text = f"{PLAN_PREFIX} {name} {ans[0]} {ans[1]}"
                if mode == "full":
                    g, r = q(pts["goal"]), q(pts["gripper"])
                    text += f" goal {g[0]} {g[1]} gripper {r[0]} {r[1]}"
                pol._plan_prefix_ids = encode_text(pol.tokenizer, text)
                out = pol.act(img, sim.task.instruction)
                sim.apply_action(out.action, 5.0)
                closest = min(closest, float(np.linalg.norm(sim.ee_pose().position - sim.object_poses()[sim.task.object].position)))
                grasped = grasped or sim.gripper_state().grasped == sim.task.object
                if out.action.get("terminate"): break
            ok = bool(sim.success()); wins += ok; closes.append(closest)
            print(f"{task} seed {seed} {sim.task.instruction!r}: {'ok' if ok else 'fail'} steps {t+1} closest {closest*100:.1f} cm grasped {grasped} | {text} | {out.plan!r}", flush=True)
        res[task] = [wins, float(np.median(closes))]
        print(f"== {task} mode={mode} {wins}/{n} median closest {np.median(closes)*100:.1f} cm", flush=True)
print(json.dumps(res))
