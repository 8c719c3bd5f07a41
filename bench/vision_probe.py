"""How fast can a vision stem, read out a given way, learn to find a named object in the sim's images?

The question behind issue 6's failure (docs/training.md section 6): the bundled
model must read *where* the named object is from the camera image, and the
from-scratch VLM never learns to.  This bench takes that one skill out of the
VLM and measures it for four pairs of stem and readout, on the same images:

stems
  ``siglip``: the ``small`` preset's own vision tower (``SiglipVisionModel``,
  8 x 8 patches of 12 px) and a linear projection to the decoder's width;
  ``cnn``: three stride-2 convolutions (12 x 12 cells of 8 px) and a learned
  position embedding.
readouts
  ``attention``: a learned query per colour attends over the image tokens and
  an MLP decodes the attended feature into column / row bins - how a VLM
  decoder's answer token reads the image (position has to travel in the
  attended *values*);
  ``spatial``: one logit per image token and colour; the column (row)
  distribution is the log-sum-exp over rows (columns) - position is the token's
  *index*, a heat-map readout.

Data: scenes rendered as ``rt2-ros collect`` renders them (224 px, shadows),
resized by the ``small`` preset's own image processor; the target is the
object's centre projected into the 96 px image, in bins of 4 px per axis.  For
each pair it prints the held-out mean bin error and the fraction within one bin
at a few step counts, the ratio of the error to the prior's (always answering
the training set's median bin, measured in the same run), and the median / p99
time per training step.

    python bench/vision_probe.py                     # 3000 + 300 scenes, 600 steps per pair
    python bench/vision_probe.py --steps 1500 --pairs siglip:attention,siglip:spatial
    python bench/vision_probe.py --cache /tmp/probe_scenes.npz   # render once, reuse
    python bench/vision_probe.py --pairs siglip:attention --dense-pretrain 300

``--dense-pretrain N`` first trains the stem for N steps to classify, at every
image token, the colour of the object centred in its cell (0 = none): a tower
that already tells the objects apart per token, before the readout is trained.
``--attention-hint W`` adds W x -log(attention on the object's own cell) to the
attention readout's loss: the simulator knows where every object is, so the
query can be told where to look before the decoder can read what it finds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from rt2_ros.sim.scene import COLORS  # noqa: E402
from rt2_ros.training.from_scratch import SCRATCH_SHAPES, build_scratch_vlm  # noqa: E402

BIN_PX = 4
PAIRS = ("siglip:attention", "siglip:spatial", "cnn:attention", "cnn:spatial")


def render_scenes(count: int, first_seed: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes from ``first_seed``: uint8 images (N, 224, 224, 3) and each colour's
    projected centre (N, colours, 2) in ``image_size`` pixels, -1 where the colour is absent."""
    from rt2_ros.sim.tabletop import SimConfig, TabletopSim

    colors = list(COLORS)
    images = np.zeros((count, 224, 224, 3), np.uint8)
    centres = np.full((count, len(colors), 2), -1.0)
    with TabletopSim(first_seed, task=None, config=SimConfig(image_size=(224, 224), shadows=True)) as sim:
        for k in range(count):
            sim.reset(first_seed + k, task=None)
            images[k] = sim.render()
            poses = sim.object_poses()
            points = [poses[obj.name].position for obj in sim.scene.objects]
            for obj, uv in zip(sim.scene.objects, sim.project_points(points, size=(image_size, image_size))):
                centres[k, colors.index(obj.color)] = uv
    return images, centres


class SiglipStem(nn.Module):
    """The small preset's vision tower and a projection to the decoder width: (B, 64, D)."""

    def __init__(self, model: nn.Module, width: int):
        super().__init__()
        self.tower = model.model.vision_tower
        self.project = nn.Linear(self.tower.config.hidden_size, width)
        self.grid = self.tower.config.image_size // self.tower.config.patch_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project(self.tower(pixel_values=pixels).last_hidden_state)


class CnnStem(nn.Module):
    """Three stride-2 3x3 convolutions and a learned position embedding: (B, (S/8)^2, D)."""

    def __init__(self, image_size: int, width: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
                                   nn.Conv2d(64, 128, 3, 2, 1), nn.GELU())
        self.grid = image_size // 8
        self.position = nn.Parameter(torch.randn(1, self.grid ** 2, 128) * 0.02)
        self.project = nn.Linear(128, width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project(self.convs(pixels).flatten(2).transpose(1, 2) + self.position)


class AttentionReadout(nn.Module):
    """A query per colour attends over the tokens; an MLP decodes the result into bins."""

    def __init__(self, width: int, bins: int, colors: int):
        super().__init__()
        self.bins = bins
        self.query = nn.Embedding(colors, width)
        self.attend = nn.MultiheadAttention(width, 3, batch_first=True)
        self.decode = nn.Sequential(nn.Linear(width, 256), nn.GELU(), nn.Linear(256, 2 * bins))
        self.weights: torch.Tensor | None = None  # (B, 1, tokens) of the last forward, heads averaged

    def forward(self, tokens: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        attended, self.weights = self.attend(self.query(color)[:, None], tokens, tokens)
        return self.decode(attended[:, 0]).view(-1, 2, self.bins)


class SpatialReadout(nn.Module):
    """One logit per token and colour; column / row logits are the marginals over the grid."""

    def __init__(self, width: int, bins: int, colors: int, grid: int):
        super().__init__()
        if bins % grid:
            raise ValueError(f"bins ({bins}) must be a multiple of the grid ({grid})")
        self.grid, self.repeat = grid, bins // grid
        self.score = nn.Linear(width, colors)

    def forward(self, tokens: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        maps = self.score(tokens)[torch.arange(len(color)), :, color].view(-1, self.grid, self.grid)
        columns, rows = maps.logsumexp(1), maps.logsumexp(2)
        return torch.stack([columns, rows], 1).repeat_interleave(self.repeat, 2)


def pairs_of(centres: np.ndarray) -> np.ndarray:
    """(scene, colour) index pairs of every object present."""
    scene, color = np.nonzero(centres[:, :, 0] >= 0)
    return np.stack([scene, color], 1)


def cell_colors(centres: torch.Tensor, grid: int, image_size: int) -> torch.Tensor:
    """Per scene and token: 1 + the colour index of the object centred in that cell, 0 for none."""
    labels = torch.zeros(len(centres), grid * grid, dtype=torch.long)
    cell = (centres / (image_size / grid)).long().clamp(0, grid - 1)
    scene, color = torch.nonzero(centres[:, :, 0] >= 0, as_tuple=True)
    labels[scene, cell[scene, color, 1] * grid + cell[scene, color, 0]] = color + 1
    return labels


def dense_pretrain(stem: nn.Module, pixels: torch.Tensor, centres: torch.Tensor, scenes: np.ndarray,
                   steps: int, batch_size: int, lr: float, image_size: int) -> float:
    """Train ``stem`` to tell each token's object colour; return the last batch's accuracy on object tokens."""
    classify = nn.Linear(stem.project.out_features, len(COLORS) + 1)
    optimizer = torch.optim.AdamW([*stem.parameters(), *classify.parameters()], lr=lr)
    rng = np.random.default_rng(1)
    accuracy = 0.0
    for _ in range(steps):
        batch = torch.as_tensor(rng.choice(scenes, batch_size))
        labels = cell_colors(centres[batch], stem.grid, image_size)
        logits = classify(stem(pixels[batch]))
        # Object tokens are ~5% of all: weight them up so "no object everywhere" is no optimum.
        weights = torch.where(labels > 0, 10.0, 1.0)
        loss = (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none") * weights.flatten()).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracy = float((logits.argmax(-1) == labels)[labels > 0].float().mean())
    return accuracy


def errors(stem: nn.Module, readout: nn.Module, pixels: torch.Tensor, targets: torch.Tensor,
           pairs: np.ndarray) -> torch.Tensor:
    """Absolute bin error (pairs, 2) on ``pairs``."""
    stem.eval(), readout.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(pairs), 256):
            chunk = torch.as_tensor(pairs[k:k + 256])
            predicted = readout(stem(pixels[chunk[:, 0]]), chunk[:, 1]).argmax(-1)
            out.append((predicted - targets[chunk[:, 0], chunk[:, 1]]).abs().float())
    stem.train(), readout.train()
    return torch.cat(out)


def summary(err: torch.Tensor) -> tuple[float, float]:
    """Mean bin error and the fraction of objects within one bin on both axes."""
    return float(err.mean()), float((err.max(1).values <= 1).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=3000, help="training scenes")
    parser.add_argument("--test-scenes", type=int, default=300, help="held-out scenes")
    parser.add_argument("--steps", type=int, default=600, help="training steps per pair")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated stem:readout ({', '.join(PAIRS)})")
    parser.add_argument("--seed", type=int, default=100000, help="first scene seed (tests use small seeds)")
    parser.add_argument("--dense-pretrain", type=int, default=0, metavar="N",
                        help="first train each stem N steps on per-token object colours (see the module doc)")
    parser.add_argument("--attention-hint", type=float, default=0.0, metavar="W",
                        help="weight of the attention-on-the-object loss for attention readouts (module doc)")
    parser.add_argument("--cache", type=Path, help="npz of rendered scenes: read if it exists, else written")
    args = parser.parse_args()
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    for pair in pairs:
        if pair not in PAIRS:
            parser.error(f"--pairs: expected some of {', '.join(PAIRS)}, got {pair!r}")

    shape = SCRATCH_SHAPES["small"]
    size, bins = shape.image_size, shape.image_size // BIN_PX
    total = args.scenes + args.test_scenes
    started = time.perf_counter()
    if args.cache and args.cache.exists():
        data = np.load(args.cache)
        images, centres = data["images"], data["centres"]
        if len(images) < total:
            parser.error(f"--cache: {args.cache} holds {len(images)} scenes, fewer than {total}")
        images, centres = images[:total], centres[:total]
        source = f"read from {args.cache}"
    else:
        images, centres = render_scenes(total, args.seed, size)
        if args.cache:
            np.savez(args.cache, images=images, centres=centres)
        source = f"rendered from seed {args.seed}"
    _, processor = build_scratch_vlm("small")
    pixels = torch.cat([processor.image_processor(list(images[k:k + 500]), return_tensors="pt")["pixel_values"]
                        for k in range(0, total, 500)])
    targets = torch.as_tensor(np.clip(centres // BIN_PX, 0, bins - 1)).long()
    test_pairs, train_pairs = pairs_of(centres[:args.test_scenes]), pairs_of(centres[args.test_scenes:])
    train_pairs[:, 0] += args.test_scenes
    print(f"{total} scenes ({source}, {time.perf_counter() - started:.0f} s): {len(train_pairs)} training "
          f"objects, {len(test_pairs)} held out; {size} px images, {bins} bins of {BIN_PX} px per axis")

    # The prior: the training objects' median bin per axis, whatever the image.
    prior = targets[train_pairs[:, 0], train_pairs[:, 1]].median(0).values
    prior_err = (targets[test_pairs[:, 0], test_pairs[:, 1]] - prior).abs().float()
    prior_mean, prior_within = summary(prior_err)
    print(f"prior (median bin, no image): mean bin error {prior_mean:.2f}, within one bin {prior_within:.2f}")
    print(f"{'stem:readout':<18} {'step':>5} {'bin err':>8} {'/ prior':>8} {'within 1':>9}   s/step median / p99")
    for pair in pairs:
        stem_name, readout_name = pair.split(":")
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        width = shape.text_hidden
        stem = SiglipStem(build_scratch_vlm("small")[0], width) if stem_name == "siglip" else CnnStem(size, width)
        readout = (AttentionReadout(width, bins, len(COLORS)) if readout_name == "attention"
                   else SpatialReadout(width, bins, len(COLORS), stem.grid))
        if args.dense_pretrain:
            t0 = time.perf_counter()
            accuracy = dense_pretrain(stem, pixels, torch.as_tensor(centres), np.arange(args.test_scenes, total),
                                      args.dense_pretrain, args.batch_size, args.lr, size)
            print(f"{pair:<18} dense pre-training: {args.dense_pretrain} steps, {time.perf_counter() - t0:.0f} s, "
                  f"object-token colour accuracy {accuracy:.2f} (last batch)", flush=True)
        optimizer = torch.optim.AdamW([*stem.parameters(), *readout.parameters()], lr=args.lr)
        times = []
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            batch = torch.as_tensor(train_pairs[rng.integers(0, len(train_pairs), args.batch_size)])
            logits = readout(stem(pixels[batch[:, 0]]), batch[:, 1])
            loss = F.cross_entropy(logits.reshape(-1, bins), targets[batch[:, 0], batch[:, 1]].reshape(-1))
            if args.attention_hint and readout_name == "attention":
                cells = (torch.as_tensor(centres)[batch[:, 0], batch[:, 1]] / (size / stem.grid)).long()
                cells = cells.clamp(0, stem.grid - 1)
                on_object = readout.weights[:, 0].gather(1, (cells[:, 1] * stem.grid + cells[:, 0])[:, None])
                loss = loss - args.attention_hint * on_object.clamp_min(1e-6).log().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - t0)
            if step % args.eval_every == 0 or step == args.steps:
                mean, within = summary(errors(stem, readout, pixels, targets, test_pairs))
                print(f"{pair:<18} {step:>5} {mean:>8.2f} {mean / prior_mean:>8.2f} {within:>9.2f}   "
                      f"{statistics.median(times):.3f} / {float(np.percentile(times, 99)):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
