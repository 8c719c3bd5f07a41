"""Step through one seeded episode with a checkpoint (no forcing): per step the true gripper and
object points (256ths of the image), the plan the model writes, its action tokens, the hand's true
height (cm) and the distance of the tool centre point to the object.
Usage: trace_plain.py MODEL TASK SEED [STEPS] [hand]   ("hand": give the policy the hand's state,
as rt2-ros eval --hand-state does)"""
import sys

import numpy as np

from rt2_ros.policy.base import HandState
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.sim.tabletop import SimConfig, TabletopSim

model, task, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 20
with_hand = len(sys.argv) > 5 and sys.argv[5] == "hand"
command = None
policy = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding="median"))
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    sim.reset(seed, task=task)
    obj = sim.object_poses()[sim.task.object].position
    print(sim.task.instruction, "object at", np.round(obj, 3))
    for t in range(steps):
        image = sim.render("head")
        hand = HandState(float(sim.ee_pose().position[2]), command) if with_hand else None
        out = policy.act(image, sim.task.instruction, hand)
        command = float(out.action["gripper"])
        ee = sim.ee_pose().position
        points = sim.project_points([ee, obj], "head", (224, 224))
        true = [[int(v / 224 * 256) for v in p] for p in points]
        print(t, "true gripper/object", true, "plan", out.plan, "tokens", out.tokens,
              "z_cm", round(float(ee[2]) * 100, 1), "d_cm", round(float(np.linalg.norm(ee - obj)) * 100, 1))
        sim.apply_action(out.action, 5.0)
