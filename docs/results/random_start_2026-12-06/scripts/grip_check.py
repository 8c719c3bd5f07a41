# First frames of random-start episodes: the true gripper/goal/object points against the plan written.
import sys
from rt2_ros.policy.config import PolicyConfig
from rt2_ros.policy.factory import make_policy
from rt2_ros.training.episodes import find_episodes, read_episode
from rt2_ros.action_language import load_embodiment
pol = make_policy(PolicyConfig(backend="transformers", model=sys.argv[1], device="cpu", decoding="median"))
arm = load_embodiment("rt2_arm")
for path in find_episodes(sys.argv[2])[:int(sys.argv[3])]:
    ep = read_episode(path, arm); s = ep.steps[0]
    q = {k: [int(v * 256) for v in p] for k, p in s.points.items()}
    out = pol.act(s.image, s.instruction)
    print(f"{s.instruction[:40]:40s} true object {q['object']} goal {q['goal']} gripper {q['gripper']} | plan {out.plan} | tokens {out.tokens[1:4]} expert {s.tokens[1:4]}")
