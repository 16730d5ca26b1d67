"""Warm start: load the weights of an exported clothseg ONNX model back into ParsingNet.

Checkpoints live in a git-ignored folder and do not outlive a work session; the
committed ONNX model does.  Starting a run from it makes training cumulative
across sessions.

The exporter folds every BatchNorm into the convolution before it.  The folded
kernels and biases are copied back; each BatchNorm is then calibrated on real
batches so that it reproduces the exported function both in eval mode (running
statistics) and, approximately, in training mode (batch statistics): running
mean/var := the statistics of its input, gamma := sqrt(var + eps), beta := mean +
folded bias.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.model import ParsingNet


def exported_architecture(model_path: Path) -> dict[str, float | bool]:
    """ParsingNet's architecture options as the exported model's card records them,
    each option the card does not name (it was written before the option existed)
    at its default, so two cards of one network compare equal."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(ParsingNet).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return defaults | json.loads(model_path.with_suffix(".json").read_text()).get("architecture", {})


def member_prefix(member: int) -> str:
    """Prefix of every name of one member of an ensemble file (training/ensemble.py)."""
    return f"member{member}:"


def _conv_module_path(node_name: str) -> str:
    """Module path from the TorchScript exporter's node name: each scope is an
    attribute, or its parent's name plus an index ("/net/s4/s4.0/block/block.0/
    block.0.0/Conv" -> "s4.0.block.0.0")."""
    parts = node_name.strip("/").split("/")
    if parts[0] != "net" or parts[-1] != "Conv":
        raise ValueError(f"unexpected node name {node_name!r}")
    path: list[str] = []
    previous = ""
    for scope in parts[1:-1]:
        path.append(scope.removeprefix(previous + ".") if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(path)


def _following_batchnorm(net: nn.Module, conv_path: str) -> nn.BatchNorm2d | None:
    parent_path, _, index = conv_path.rpartition(".")
    if not index.isdigit():
        return None
    parent = net.get_submodule(parent_path)
    sibling = str(int(index) + 1)
    module = getattr(parent, sibling, None)
    return module if isinstance(module, nn.BatchNorm2d) else None


def _copy_widened(target: torch.Tensor, source: torch.Tensor) -> None:
    """Copy a kernel into the leading slice of a kernel at least as large.  The
    extra output channels keep their random initialisation; the extra input
    channels get zero weights, so channels the smaller network did not have
    change nothing until training gives them a use."""
    target[tuple(slice(0, n) for n in source.shape)] = source
    target[:, source.shape[1]:] = 0


@torch.no_grad()
def load_exported(net: nn.Module, model_path: Path, new_modules: tuple[str, ...] = (),
                  widen: bool = False, member: int | None = None) -> None:
    """Copy the folded weights of ``model_path`` into ``net`` (same architecture).
    BatchNorms become identity + folded bias: exact in eval mode.  Convolutions
    under ``new_modules`` may be missing from the model (they keep their
    initialisation, which must leave the function unchanged).  With ``widen``,
    ``net`` may have more channels inside its blocks (ParsingNet's ``expand`` and
    ``decoder_width``): the model's channels come first, the new ones last, and the
    function is still exactly the model's.  From an ensemble file
    (training/ensemble.py), ``member`` names which of its networks to load."""
    graph = onnx.load(str(model_path)).graph
    members = json.loads(model_path.with_suffix(".json").read_text()).get("ensemble")
    if members is None and member is not None:
        raise ValueError(f"{model_path} is a single network, it has no member {member}")
    if members is not None and member not in range(len(members)):
        raise ValueError(f"{model_path} is an ensemble of {len(members)} networks: name a member "
                         f"(0-{len(members) - 1}), not {member}")
    prefix = member_prefix(member) if members is not None else ""
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # An ensemble stores float16 weights, each cast back to float32 by a Cast node.
    arrays |= {node.output[0]: arrays[node.input[0]].astype(np.float32) for node in graph.node
               if node.op_type == "Cast" and node.input[0] in arrays}
    # The exporter shares equal tensors (e.g. all-zero biases) through Identity nodes.
    arrays |= {node.output[0]: arrays[node.input[0]] for node in graph.node
               if node.op_type == "Identity" and node.input[0] in arrays}
    loaded = set()
    for node in graph.node:
        if node.op_type != "Conv" or not node.name.startswith(prefix):
            continue
        path = _conv_module_path(node.name.removeprefix(prefix))
        try:
            conv = net.get_submodule(path)
        except AttributeError:
            raise ValueError(f"{path}: in the model, not in this network (another encoder?)") from None
        weight = torch.from_numpy(arrays[node.input[1]].copy())
        bias = torch.from_numpy(arrays[node.input[2]].copy()) if len(node.input) > 2 else None
        if any(here < there for here, there in zip(conv.weight.shape, weight.shape, strict=True)) or (
                conv.weight.shape != weight.shape and not widen):
            raise ValueError(f"{path}: shape {tuple(weight.shape)} in the model, {tuple(conv.weight.shape)} here")
        _copy_widened(conv.weight, weight)
        bn = _following_batchnorm(net, path)
        if bn is not None:
            bn.reset_parameters()
            bn.running_var.fill_(1 - bn.eps)
            if bias is not None:
                bn.bias[:len(bias)].copy_(bias)
        elif bias is not None:
            conv.bias[:len(bias)].copy_(bias)
        loaded.add(path)
    missing = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)
               and name not in loaded and name.split(".")[0] not in new_modules]
    if missing:
        raise ValueError(f"convolutions not in the model: {missing}")


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Give each identity BatchNorm (from ``load_exported``) the statistics of its
    input on ``batches`` without changing the eval-mode function."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[nn.Module, list[torch.Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].double()
        s = sums.setdefault(module, [torch.zeros(x.shape[1], dtype=torch.float64)] * 2 + [torch.zeros(1)])
        s[0] = s[0] + x.sum((0, 2, 3))
        s[1] = s[1] + (x * x).sum((0, 2, 3))
        s[2] = s[2] + x.numel() / x.shape[1]

    hooks = [m.register_forward_pre_hook(record) for m in norms]
    was_training = net.training
    net.eval()
    try:
        for x in batches:
            net(x)
    finally:
        for h in hooks:
            h.remove()
    for m in norms:
        total, squares, count = sums[m]
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        m.running_mean.copy_(mean.float())
        m.running_var.copy_(var.float())
        m.bias.add_(mean.float())
        m.weight.copy_((var + m.eps).sqrt().float())
    net.train(was_training)
