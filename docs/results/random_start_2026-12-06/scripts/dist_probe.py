# Diagnostic: the action-token distributions (x, y, z) on the frames of a forced-object rollout:
# where the probability mass is, so "stay" under median decoding can be told from a confident stay.
import sys, numpy as np, torch
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.policy.constrained_decoding import encode_text, PLAN_PREFIX
from rt2_ros.sim.tabletop import SimConfig, TabletopSim
model, task, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pol = make_policy(PolicyConfig(backend="transformers", model=model, device="cpu", decoding="median"))
seen = {}
orig = pol._select
def spy(hidden, position, selection):
    if position in (1, 2, 3):
        logits = pol._full_logits(hidden)[0, pol._allowed_tensors[position]]
        seen[position] = torch.softmax(logits, -1).numpy()
    return orig(hidden, position, selection)
pol._select = spy
def summ(p):
    bins = np.arange(len(p)); top = np.argsort(-p)[:4]
    return f"P(<120)={p[:120].sum():.2f} P(120..135)={p[120:136].sum():.2f} P(>135)={p[136:].sum():.2f} top {[(int(b), round(float(p[b]), 2)) for b in top]}"
with TabletopSim(0, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
    sim.reset(seed, task=task); name = sim.task.object.replace("_", " ")
    for t in range(steps):
        img = sim.render("head")
        ans = pol.answer(img, f"where is the {name}?").split()
        pol._plan_prefix_ids = encode_text(pol.tokenizer, f"{PLAN_PREFIX} {name} {ans[0]} {ans[1]}")
        out = pol.act(img, sim.task.instruction)
        print(t, out.plan, out.tokens)
        for pos, dim in ((1, "x"), (2, "y"), (3, "z")):
            print("   ", dim, summ(seen[pos]))
        sim.apply_action(out.action, 5.0)
