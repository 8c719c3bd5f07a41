"""How much of the expert's action do the plan's numbers determine?  And with the hand's height and
the gripper's state added (what a plan in the arm's own terms would also say)?

k-nearest-neighbour regression (k=10) from a sample's plan integers (object, goal, gripper points,
POINT_BINS ths of the image) to its expert action tokens, fitted on the TRAIN episode directories and
scored on TEST's. Prints median and mean |error| in bins per action dim for several feature sets.
Usage: plan_predictability.py --train DIR [DIR ...] --test DIR [DIR ...]
A diagnostic for docs/training.md section 6, not a feature.
"""
import argparse
import numpy as np

from rt2_ros.action_language.embodiment import load_embodiment
from rt2_ros.training import mcap_io
from rt2_ros.training.episodes import find_episodes, point_bin, read_episode


def _latest(series, stamp):
    """The value of the last (stamp, value) at or before ``stamp`` (the first one before any)."""
    best = series[0][1]
    for when, value in series:
        if when > stamp:
            break
        best = value
    return best


def load(dirs, embodiment):
    rows, targets = [], []
    for d in dirs:
        for path in find_episodes(d):
            episode = read_episode(path, embodiment)
            if episode.info.success is not True:
                continue
            heights, grips = [], [(0, 1.0)]
            for item in mcap_io.read_messages(path, ["/ee_pose", "/gripper/command"]):
                if item.topic == "/ee_pose":
                    heights.append((mcap_io.stamp_to_ns(item.message.header.stamp), item.message.pose.position.z))
                else:
                    grips.append((item.timestamp, float(np.asarray(item.message.data).reshape(-1)[0])))
            heights.sort(key=lambda h: h[0])
            grips.sort(key=lambda g: g[0])
            for step in episode.steps:
                p = step.points or {}
                if not all(k in p for k in ("object", "goal", "gripper")):
                    continue
                # Commands logged before this frame: the gripper's state when the frame was taken.
                grip = _latest(grips, step.stamp_ns - 1)
                rows.append([point_bin(v) for k in ("object", "goal", "gripper") for v in p[k]]
                            + [_latest(heights, step.stamp_ns) * 500.0, grip * 100.0])
                targets.append(step.tokens)
    return np.array(rows, float), np.array(targets, float)


def knn(train_x, train_y, test_x, k=10, chunk=512):
    out = []
    for i in range(0, len(test_x), chunk):
        d = ((test_x[i:i + chunk, None, :] - train_x[None]) ** 2).sum(-1)
        idx = np.argpartition(d, k, axis=1)[:, :k]
        out.append(np.median(train_y[idx], axis=1))
    return np.concatenate(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", nargs="+", required=True)
    parser.add_argument("--test", nargs="+", required=True)
    parser.add_argument("--embodiment", default="rt2_arm", help="what rt2-ros collect recorded with")
    args = parser.parse_args()
    embodiment = load_embodiment(args.embodiment)
    dims = [d.name for d in embodiment.dims]
    tx, ty = load(args.train, embodiment)
    vx, vy = load(args.test, embodiment)
    print(f"embodiment {embodiment.name}; train {len(tx)} samples, test {len(vx)}")
    sets = {
        "goal + gripper": lambda x: x[:, 2:6],
        "goal - gripper (delta)": lambda x: x[:, 2:4] - x[:, 4:6],
        "goal only": lambda x: x[:, 2:4],
        "object + goal + gripper": lambda x: x[:, :6],
        "delta + height": lambda x: np.c_[x[:, 2:4] - x[:, 4:6], x[:, 6]],
        "delta + height + grip state": lambda x: np.c_[x[:, 2:4] - x[:, 4:6], x[:, 6:8]],
        "nothing (training median)": None,
    }
    for label, f in sets.items():
        if f is None:
            pred = np.broadcast_to(np.median(ty, axis=0), vy.shape)
        else:
            pred = knn(f(tx), ty, f(vx))
        err = np.abs(pred - vy)
        cells = ", ".join(f"{d} {np.median(err[:, i]):.1f}/{err[:, i].mean():.1f}" for i, d in enumerate(dims))
        print(f"{label:28s} median/mean |error| in bins: {cells}")


if __name__ == "__main__":
    main()
