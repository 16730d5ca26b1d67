"""Pseudo-labels for the CCP photos without pixel annotations (self-training).

    python -m training.pseudo_label --teacher src/clothseg/models/clothseg-parsing.onnx

The teacher (an exported model, loaded with training.warmstart) labels each
unannotated cache photo with the engine's quality-2 test-time augmentation
(three scales, each mirrored); pixels whose averaged top probability is below
``--min-confidence`` are left unlabelled (255).  Writes ``OUT/NNNN.npz`` with a
``label`` array at cache size; existing files are kept, so the script resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clothseg.engine.core import TTA_SCALES, WORKING_HEIGHT, working_size
from clothseg.engine.taxonomy import FINE_LABELS
from training.model import ParsingNet
from training.train import IGNORE, IN_CHANNELS, normalise
from training.warmstart import load_exported


@torch.no_grad()
def teacher_probabilities(net: torch.nn.Module, image: np.ndarray, priors: np.ndarray) -> torch.Tensor:
    """(K, H, W) probabilities at the cache size, averaged over scales and mirrors."""
    h, w = image.shape[:2]
    x = normalise(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
                  torch.from_numpy(priors)[None].float() / 255)
    total = torch.zeros(1, len(FINE_LABELS), h, w)
    for scale in TTA_SCALES:
        size = working_size(h, w, round(WORKING_HEIGHT[1] * scale))
        view = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        for flip in (False, True):
            probs = net(view.flip(3) if flip else view).softmax(1)
            probs = probs.flip(3) if flip else probs
            total += F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
    return total[0] / (2 * len(TTA_SCALES))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", type=Path, default=Path("var/training/cache"))
    p.add_argument("--teacher", type=Path, default=Path("src/clothseg/models/clothseg-parsing.onnx"))
    p.add_argument("--out", type=Path, default=Path("var/training/pseudo"))
    p.add_argument("--min-confidence", type=float, default=0.6)
    p.add_argument("--model-width", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), args.model_width).eval()
    load_exported(net, args.teacher)
    files = sorted(args.cache.glob("*.npz"))
    kept = []
    for i, f in enumerate(files, 1):
        out = args.out / f.name
        if out.exists():
            continue
        d = np.load(f)
        if "label" in d.files:
            continue
        conf, label = teacher_probabilities(net, d["image"], d["priors"]).max(0)
        label[conf < args.min_confidence] = IGNORE
        kept.append(float((label != IGNORE).float().mean()))
        np.savez(out.with_suffix(".tmp.npz"), label=label.numpy().astype(np.uint8))
        out.with_suffix(".tmp.npz").rename(out)
        if i % 100 == 0:
            print(f"{i}/{len(files)} confident pixels {np.mean(kept):.3f}", flush=True)


if __name__ == "__main__":
    main()
