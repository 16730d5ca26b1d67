"""Compare exported models on the validation split at several working heights.

    python -m training.compare MODEL.onnx [MODEL.onnx ...] --heights 384 448

Loads each model back into PyTorch (training/warmstart.py, exact in eval mode)
and scores it with the training's own validation (training.train.validate): the
network at the working height, probabilities upsampled to the cache's 512 rows,
the nine eval classes by summed fine probability.  Faster than ``clothseg eval``
(no pose run, cache resolution) and meant for choosing between models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from clothseg.engine.evaluation import validation_split
from clothseg.engine.taxonomy import FINE_LABELS
from training.model import ParsingNet
from training.train import IN_CHANNELS, labelled_stems, load_cache, validate
from training.warmstart import exported_architecture, load_exported


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--cache", type=Path, default=Path("var/training/cache"))
    p.add_argument("--heights", type=int, nargs="+", default=[384])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    images, priors, labels = load_cache(args.cache, validation_split(labelled_stems(args.cache))[1])
    for path in args.models:
        net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), **exported_architecture(path))
        load_exported(net, path)
        for height in args.heights:
            print(json.dumps({"model": str(path), "height": height,
                              **validate(net, images, priors, labels, height)}), flush=True)


if __name__ == "__main__":
    main()
