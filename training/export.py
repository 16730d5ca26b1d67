"""Export a training checkpoint's EMA weights to the ONNX model the engine loads.

    python -m training.export --checkpoint var/training/run1/best.pt \
        --out src/clothseg/models/clothseg-parsing.onnx

Writes the model (softmax included, dynamic height/width) and beside it a JSON
card with the labels, input normalisation and training metrics.  ``--float16``
stores the weights as float16 (half the file; inference still runs in float32,
see training/ensemble.py): the form a shipped model takes, since every shipped
file stays in every clone's history.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import torch

from clothseg.engine.priors import PRIOR_CHANNELS
from clothseg.engine.taxonomy import FINE_LABELS
from training.ensemble import stored_as_float16
from training.model import ParsingNet
from training.train import IN_CHANNELS, MEAN, STD, build_network


class WithSoftmax(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(1)


def load_network(checkpoint: Path) -> tuple[ParsingNet, dict]:
    ck = torch.load(checkpoint, weights_only=False, map_location="cpu")
    net = build_network(ck["args"])
    net.load_state_dict(ck["ema"])
    return net.eval(), ck


def export(net: torch.nn.Module, out: Path, card: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.randn(1, IN_CHANNELS, 384, 256)
    torch.onnx.export(
        WithSoftmax(net).eval(), (dummy,), str(out), input_names=["input"], output_names=["probs"],
        dynamic_axes={"input": {2: "height", 3: "width"}, "probs": {2: "height", 3: "width"}},
        opset_version=17, dynamo=False,
    )
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def store_float16(path: Path) -> None:
    """Rewrite the model at ``path`` with its float32 weights stored as float16,
    each cast back to float32 by a Cast node that onnxruntime folds on loading."""
    model = onnx.load(str(path))
    casts, stored = stored_as_float16(list(model.graph.initializer))
    nodes = casts + list(model.graph.node)
    del model.graph.initializer[:], model.graph.node[:]
    model.graph.initializer.extend(stored)
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", type=Path, default=Path("var/training/run1/best.pt"))
    p.add_argument("--out", type=Path, default=Path("src/clothseg/models/clothseg-parsing.onnx"))
    p.add_argument("--float16", action="store_true", help="store the weights as float16 (half the file)")
    args = p.parse_args()
    net, ck = load_network(args.checkpoint)
    card = {
        "name": "clothseg-parsing",
        "labels": list(FINE_LABELS),
        "mean": MEAN.flatten().tolist(),
        "std": STD.flatten().tolist(),
        "prior_channels": PRIOR_CHANNELS,
        "parameters": sum(p.numel() for p in net.parameters()),
        "architecture": net.architecture,
        "training": {k: str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, frozenset) else v
                     for k, v in ck["args"].items()
                     if k in ("epochs", "height", "width", "model_width", "batch", "lr", "init", "pseudo",
                              "pseudo_fraction", "pseudo_balance", "warmup_epochs", "presence_weight", "lovasz",
                              "distill", "bf16", "seed", "init_member", "framings")},
        "validation_at_training_resolution": ck.get("metrics"),
    }
    export(net, args.out, card)
    if args.float16:
        store_float16(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
