"""Step through one seeded episode with a checkpoint driving (no forcing), the policy given the
hand's state as `rt2-ros eval --hand-state` gives it, and print per step: the scripted expert's
phase, the true image points (256ths) of the hand and of the expert's goal, the plan the model
writes, its action tokens, the action the expert would command there (its DAgger label) and the
hand's height in cm.
Usage: trace_goal.py MODEL TASK SEED STEPS"""
import sys
import numpy as np
from rt2_ros.policy.base import HandState
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
from rt2_ros.sim.expert import ScriptedExpert

model, task, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
command = None
policy = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding="median"))
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    sim.reset(seed, task=task)
    expert = ScriptedExpert(sim)
    print(sim.task.instruction, sim.task)
    for t in range(steps):
        image = sim.render("head")
        ee = sim.ee_pose().position
        hand = HandState(float(ee[2]), command)
        ex = expert.next_action()
        goal = expert.goal
        out = policy.act(image, sim.task.instruction, hand)
        command = float(out.action["gripper"])
        pts = sim.project_points([ee, goal if goal is not None else ee], "head", (224, 224))
        true = [[int(v / 224 * 256) for v in p] for p in pts]
        print(t, expert.phase, "true hand/goal", true, "plan", out.plan, "| tok", out.tokens,
              "| expert", {k: round(float(v), 3) for k, v in ex.items()},
              "z", round(float(ee[2]) * 100, 1), "succ", sim.success())
        sim.apply_action(out.action, 5.0)
