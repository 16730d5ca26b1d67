"""Join exported models of one architecture into one ONNX file that averages
their probabilities (an ensemble), with the weights stored as float16.

    python -m training.soup --ensemble OUT.onnx A.onnx B.onnx [...]

Independently trained runs (different seeds) err on different photos, above all
in the outfit-level decisions (dress or top + skirt, dress or long coat), so
the mean of their probabilities can be right more often than either (runs 24
and 28: +0.008 mIoU at quality 1, -0.003 at quality 2; training/RUNS.md).  Runs from
different seeds cannot be souped (training/soup.py): their decoders start from
different random weights and end in different basins.

Each member keeps its graph, every name prefixed ``member<i>:``; a Mean node
averages the members' softmax outputs into ``probs``, so the engine loads the
file like any other.  Float16 storage halves the file (two EfficientNet-Lite2
members: 19 MB; the issue's limit is 20 MB).  Each weight is cast back to
float32 by a Cast node on its initializer, which onnxruntime folds when it
loads the model: inference runs in float32, on weights rounded to float16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from training.warmstart import exported_architecture, member_prefix

INPUT, OUTPUT = "input", "probs"


def _prefixed(graph: onnx.GraphProto, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The graph's nodes and initializers with every name but the input prefixed."""
    def rename(name: str) -> str:
        return name if name in ("", INPUT) else prefix + name

    nodes, initializers = [], []
    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        node.name = prefix + node.name
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        nodes.append(node)
    for original in graph.initializer:
        init = onnx.TensorProto()
        init.CopyFrom(original)
        init.name = rename(init.name)
        initializers.append(init)
    return nodes, initializers


def stored_as_float16(initializers: list[onnx.TensorProto]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Float32 initializers become float16 ones, each cast back under its own name."""
    casts, stored = [], []
    for init in initializers:
        if init.data_type != TensorProto.FLOAT:
            stored.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + ":float16")
        stored.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=init.name + ":cast",
                                      to=TensorProto.FLOAT))
    return casts, stored


def join_models(sources: list[Path], out: Path) -> None:
    """Write to ``out`` (and its JSON card) the ensemble of ``sources``."""
    architectures = [exported_architecture(path) for path in sources]
    if any(arch != architectures[0] for arch in architectures):
        raise ValueError(f"members must share one architecture: {[str(p) for p in sources]}")
    models = [onnx.load(str(path)) for path in sources]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    for i, model in enumerate(models):
        if [o.name for o in model.graph.output] != [OUTPUT]:
            raise ValueError(f"{sources[i]} is not a single exported network (output {OUTPUT!r})")
        member_nodes, member_inits = _prefixed(model.graph, member_prefix(i))
        nodes += member_nodes
        initializers += member_inits
    casts, stored = stored_as_float16(initializers)
    mean = helper.make_node("Mean", [member_prefix(i) + OUTPUT for i in range(len(models))], [OUTPUT],
                            name="ensemble_mean")
    first = models[0].graph
    graph = helper.make_graph(casts + nodes + [mean], "clothseg_ensemble", list(first.input), list(first.output),
                              initializer=stored)
    joined = helper.make_model(graph, opset_imports=models[0].opset_import, producer_name="clothseg training.ensemble")
    onnx.checker.check_model(joined)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(joined, str(out))
    cards = [json.loads(path.with_suffix(".json").read_text()) for path in sources]
    card = {k: v for k, v in cards[0].items() if k not in ("training", "validation_at_training_resolution")}
    card["parameters"] = sum(c["parameters"] for c in cards)
    card["ensemble"] = [{"source": path.name, **{k: c[k] for k in ("training", "validation_at_training_resolution")
                                                 if k in c}} for path, c in zip(sources, cards, strict=True)]
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
