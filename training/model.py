"""The clothseg parsing network: an inverted-residual encoder (EfficientNet-Lite
from ImageNet weights, or our own MobileNetV2-style one) with a light ASPP and a
two-skip decoder, small enough to run in tens of milliseconds on a CPU.

Input: RGB (normalised) plus the pose prior channels; output: logits over the
fine taxonomy at the input resolution.  Fully convolutional, so any input size
that is a multiple of 16 works (the engine pads to that).

An image-level head predicts which fine labels the photo shows at all (trained
from CCP's image-level tags too) and adds a learned log-prior from it to every
pixel's logits: a dress versus a top and a skirt is a decision about the whole
outfit, not about one pixel.  Optionally (``context``), a self-attention block
over the deepest features lets every position see the whole outfit before the
decoder labels it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
            groups: int = 1, act: bool = True) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4, dilation: int = 1,
                 kernel: int = 3):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, mid, 1) if expand != 1 else nn.Identity(),
            conv_bn(mid, mid, kernel, stride, dilation, groups=mid),
            conv_bn(mid, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


def stage(cin: int, cout: int, n: int, stride: int, expand: int = 4, dilation: int = 1,
          kernel: int = 3) -> nn.Sequential:
    blocks = [InvertedResidual(cin, cout, stride, expand, 1 if stride > 1 else dilation, kernel)]
    blocks += [InvertedResidual(cout, cout, 1, expand, dilation, kernel) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(conv_bn(cin, cin, 3, dilation=dilation, groups=cin), conv_bn(cin, cout, 1))


class LiteASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (2, 4, 8)):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn(cin, cout, 1)] + [SeparableConv(cin, cout, r) for r in rates]
        )
        self.pool = conv_bn(cin, cout, 1)
        self.project = conv_bn(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True))
        feats.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(feats, 1))


class ImageLevelPrior(nn.Module):
    """Presence logits of each label from the pooled deepest features (mean and
    max, so small items count), and a per-label scale of their log-sigmoid that is
    added to the pixel logits.  The scale starts at zero: a network without this
    head (an older export) computes the same function with it."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.classify = nn.Conv2d(2 * cin, num_classes, 1)
        self.scale = nn.Conv2d(num_classes, num_classes, 1, groups=num_classes, bias=False)
        nn.init.zeros_(self.scale.weight)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([feats.mean(dim=(2, 3), keepdim=True), feats.amax(dim=(2, 3), keepdim=True)], 1)
        presence = self.classify(pooled)
        # log(sigmoid(x)) as -softplus(-x): the ONNX exporter writes logsigmoid as
        # Log(Sigmoid(x)), which is -inf below x = -88 (and 0 * -inf = NaN).
        return presence, self.scale(-F.softplus(-presence))


class GlobalContext(nn.Module):
    """Multi-head self-attention over the stride-16 features, added back to them
    (a non-local block, Wang et al. 2018): whether a garment is a dress or a top
    over a skirt depends on where it ends and what else the photo shows.  Plain
    1x1 convolutions (no BatchNorm, so warm-start calibration leaves them alone);
    the output convolution starts at zero, so a network exported without the
    block computes the same function with it."""

    def __init__(self, channels: int, heads: int = 4, key_channels: int = 32):
        super().__init__()
        self.heads, self.key_channels = heads, key_channels
        self.query = nn.Conv2d(channels, heads * key_channels, 1)
        self.key = nn.Conv2d(channels, heads * key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).reshape(n, self.heads, self.key_channels, -1).transpose(2, 3)
        k = self.key(x).reshape(n, self.heads, self.key_channels, -1)
        v = self.value(x).reshape(n, self.heads, c // self.heads, -1).transpose(2, 3)
        attention = (q @ k * self.key_channels ** -0.5).softmax(-1)
        y = (attention @ v).transpose(2, 3).reshape(n, c, h, w)
        return x + self.out(y)


# EfficientNet-Lite variants: channels of the stem and of the seven stages, and
# the stages' block counts (Lite1 is deeper than Lite0, Lite2 also wider).
LITE_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "efficientnet-lite0": ((32, 16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1)),
    "efficientnet-lite1": ((32, 16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1)),
    "efficientnet-lite2": ((32, 16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1)),
}


class ParsingNet(nn.Module):
    """``encoder`` is ``mobilenetv2`` (our own MobileNetV2-style encoder, trained
    from scratch) or one of ``LITE_VARIANTS`` (EfficientNet-Lite's layers, which
    start from its ImageNet weights: training/pretrained.py).  For our encoder,
    ``width`` scales every layer; ``expand`` (the inverted residuals' expansion
    in the stride 8 and 16 stages, times 1.5 in the dilated last stage) and
    ``decoder_width`` (the hidden channels inside each decoder fusion) grow the
    network only inside its blocks, so a larger network can start from a smaller
    one's weights unchanged (training/warmstart.py); so does ``context``, the
    self-attention block, which starts as the identity."""

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, expand: int = 4,
                 decoder_width: float = 1.0, context: bool = False, encoder: str = "mobilenetv2"):
        super().__init__()
        self.architecture = {"width": width, "expand": expand, "decoder_width": decoder_width,
                             "context": context, "encoder": encoder}

        def c(n: int, scale: float = 1.0) -> int:
            return max(8, int(round(n * width * scale / 8)) * 8)

        if encoder == "mobilenetv2":
            self.stem = nn.Sequential(conv_bn(in_channels, c(32), 3, 2), stage(c(32), c(24), 1, 1, expand=1))
            self.s4 = stage(c(24), c(40), 2, 2)       # 1/4
            self.s8 = stage(c(40), c(64), 3, 2, expand)       # 1/8
            self.s16 = nn.Sequential(stage(c(64), c(112), 4, 2, expand),
                                     stage(c(112), c(160), 3, 1, expand=expand * 3 // 2, dilation=2))
            self.s32: nn.Module | None = None
            channels4, channels8, channels16 = c(40), c(64), c(160)
        elif encoder in LITE_VARIANTS:
            # EfficientNet-Lite's blocks in its own stages; the stride-32 stages stay
            # at stride 32 (dilating them would cost 4x their FLOPs) and are
            # upsampled onto the stride-16 features.
            w, n = LITE_VARIANTS[encoder]
            self.stem = nn.Sequential(conv_bn(in_channels, w[0], 3, 2), stage(w[0], w[1], n[0], 1, expand=1))
            self.s4 = stage(w[1], w[2], n[1], 2, 6)
            self.s8 = stage(w[2], w[3], n[2], 2, 6, kernel=5)
            self.s16 = nn.Sequential(stage(w[3], w[4], n[3], 2, 6), stage(w[4], w[5], n[4], 1, 6, kernel=5))
            self.s32 = nn.Sequential(stage(w[5], w[6], n[5], 2, 6, kernel=5), stage(w[6], w[7], n[6], 1, 6))
            for part in (self.stem, self.s4, self.s8, self.s16, self.s32):
                for module in part.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eps = 1e-3  # EfficientNet's, which its ImageNet weights were trained with
            channels4, channels8, channels16 = w[2], w[3], w[5] + w[7]
        else:
            raise ValueError(f"unknown encoder {encoder!r}")
        self.context = GlobalContext(channels16) if context else nn.Identity()
        self.aspp = LiteASPP(channels16, c(128))
        self.skip8 = conv_bn(channels8, c(48), 1)
        self.fuse8 = nn.Sequential(SeparableConv(c(128) + c(48), c(96, decoder_width)),
                                   SeparableConv(c(96, decoder_width), c(96)))
        self.skip4 = conv_bn(channels4, c(32), 1)
        self.fuse4 = nn.Sequential(SeparableConv(c(96) + c(32), c(64, decoder_width)),
                                   SeparableConv(c(64, decoder_width), c(64)))
        self.head = nn.Conv2d(c(64), num_classes, 1)
        self.presence = ImageLevelPrior(channels16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parse(x)[0]

    def parse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel logits at the input size and (N, K) image-level presence logits."""
        size = x.shape[2:]
        f2 = self.stem(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        if self.s32 is not None:
            f32 = F.interpolate(self.s32(f16), size=f16.shape[2:], mode="bilinear", align_corners=False)
            f16 = torch.cat([f16, f32], 1)
        f16 = self.context(f16)
        presence, prior = self.presence(f16)
        y = self.aspp(f16)
        y = F.interpolate(y, size=f8.shape[2:], mode="bilinear", align_corners=False)
        y = self.fuse8(torch.cat([y, self.skip8(f8)], 1))
        y = F.interpolate(y, size=f4.shape[2:], mode="bilinear", align_corners=False)
        y = self.fuse4(torch.cat([y, self.skip4(f4)], 1))
        logits = F.interpolate(self.head(y) + prior, size=size, mode="bilinear", align_corners=False)
        return logits, presence.flatten(1)
