"""Average the weights of exported models of one architecture ("model soup").

    python -m training.soup OUT.onnx TEACHER.onnx STUDENT.onnx [...]
    python -m training.soup --ensemble OUT.onnx A.onnx B.onnx [...]   # training/ensemble.py

A warm-started run fine-tunes the exported model it started from, so both sit
in the same basin of the loss and their weights can be averaged: the average
usually beats either (Wortsman et al., 2022, "Model soups").  The exports hold
BatchNorm folded into each convolution, so the average is taken over the folded
kernels and biases, which the engine runs as they are.  The card is the first
model's (without its validation figures), with the sources listed under ``soup``.

A source of an older, smaller architecture than the first model's (narrower
blocks, no self-attention block) is first re-exported into the first model's
architecture, as a warm start would load it: the same function, with zero
weights where it had no channels or block.  So a run that grew the network can
still be souped with the model it started from.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from training.ensemble import join_models
from training.warmstart import exported_architecture


def lifted(source: Path, architecture: dict, folder: Path) -> Path:
    """``source`` re-exported into ``architecture`` (ParsingNet's options) in ``folder``."""
    from clothseg.engine.taxonomy import FINE_LABELS
    from training.export import export
    from training.model import ParsingNet
    from training.train import IN_CHANNELS
    from training.warmstart import load_exported

    net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), **architecture).eval()
    load_exported(net, source, new_modules=("context",), widen=True)
    out = folder / source.name
    export(net, out, json.loads(source.with_suffix(".json").read_text()))
    return out


def average_models(sources: list[Path], out: Path) -> None:
    """Write to ``out`` (and its JSON card) the first model's graph with every
    floating-point initializer replaced by its mean over ``sources``; sources of
    another architecture than the first's are lifted into it (``lifted``)."""
    architectures = [exported_architecture(path) for path in sources]
    with tempfile.TemporaryDirectory() as folder:
        models = [onnx.load(str(path if arch == architectures[0] else lifted(path, architectures[0], Path(folder))))
                  for path, arch in zip(sources, architectures, strict=True)]
    weights = [{init.name: numpy_helper.to_array(init) for init in model.graph.initializer} for model in models]
    shapes = [{name: array.shape for name, array in w.items()} for w in weights]
    mismatched = [str(path) for path, s in zip(sources, shapes, strict=True) if s != shapes[0]]
    if mismatched:
        raise ValueError(f"not the architecture of {sources[0]}: {', '.join(mismatched)}")
    soup = models[0]
    for init in soup.graph.initializer:
        first = weights[0][init.name]
        if first.dtype.kind == "f":
            mean = np.mean([w[init.name] for w in weights], axis=0).astype(first.dtype)
            init.CopyFrom(numpy_helper.from_array(mean, init.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(soup, str(out))
    card = json.loads(sources[0].with_suffix(".json").read_text())
    card.pop("validation_at_training_resolution", None)  # the first model's, not the soup's
    card["soup"] = [str(path) for path in sources]
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("sources", type=Path, nargs="+")
    p.add_argument("--ensemble", action="store_true", help="average the models' probabilities instead of their "
                   "weights (training/ensemble.py), for runs that cannot be souped (different seeds)")
    args = p.parse_args()
    (join_models if args.ensemble else average_models)(args.sources, args.out)
    what = "ensemble" if args.ensemble else "mean"
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), the {what} of {len(args.sources)} models")


if __name__ == "__main__":
    main()
