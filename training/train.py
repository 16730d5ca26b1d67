"""Train the clothseg parsing network on the CCP cache (see training/prepare.py).

    python -m training.train --run var/training/run1 --epochs 60

Resumable: the full state (weights, EMA weights, optimiser, schedule position,
RNG) is written to ``RUN/last.pt`` every ``--checkpoint-minutes`` and at each
epoch end; starting the same command again continues from it.  ``RUN/best.pt``
keeps the EMA weights with the best validation mIoU; ``RUN/log.jsonl`` one line
per validation.

``--init MODEL.onnx`` starts a new run from an exported model (training/warmstart.py),
so that training carries over between sessions.  ``--pseudo DIR`` adds the
unannotated photos with pseudo-labels from training/pseudo_label.py: each batch
holds ``--pseudo-fraction`` of them; an epoch is still one pass over the
annotated training photos.

``--distill W`` adds knowledge distillation: a cross-entropy, weighted W, against
the teacher's soft probabilities that training/pseudo_label.py wrote beside the
pseudo-labels (``soft``; quality 2, so three scales each mirrored), on every
training photo, annotated or not.  Quality 1 is one pass of the network; the
targets teach it what the six-pass average says.

The image-level presence head (training/model.py) learns from each crop's own
labels (present: at least PRESENT_PIXELS pixels; absent: none) and, for the
pseudo-labelled photos, from CCP's image-level tags (an untagged label is absent).

Split (fixed, documented in docs/MODEL.md): the pixel-annotated photos sorted by
number; every 9th (index % 9 == 0) is validation, the rest training.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clothseg.engine.evaluation import EvalResult, eval_membership, fine_to_eval_lut, validation_split
from clothseg.engine.priors import PRIOR_CHANNELS
from clothseg.engine.taxonomy import EVAL_CLASSES, FINE_INDEX, FINE_LABELS
from training.model import LITE_VARIANTS, ParsingNet
from training.pretrained import load_lite
from training.warmstart import calibrate_batchnorm, load_exported

IGNORE = 255
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PAD_H, PAD_W = 512, 352  # cache height and a width every CCP photo fits in
IN_CHANNELS = 3 + PRIOR_CHANNELS
PRESENT_PIXELS = 20


def load_cache(cache: Path, stems: list[str], labels_dir: Path | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked (N,3,H,W) uint8 images, (N,P,H,W) uint8 priors and (N,H,W) uint8
    labels, padded to PAD_H x PAD_W (label padding = IGNORE).  Labels come from
    the cache or, if given, from ``labels_dir`` (pseudo-labels)."""
    n = len(stems)
    images = torch.zeros(n, 3, PAD_H, PAD_W, dtype=torch.uint8)
    priors = torch.zeros(n, PRIOR_CHANNELS, PAD_H, PAD_W, dtype=torch.uint8)
    labels = torch.full((n, PAD_H, PAD_W), IGNORE, dtype=torch.uint8)
    for i, stem in enumerate(stems):
        d = np.load(cache / f"{stem}.npz")
        label = np.load(labels_dir / f"{stem}.npz")["label"] if labels_dir else d["label"]
        h, w = label.shape
        w = min(w, PAD_W)
        images[i, :, :h, :w] = torch.from_numpy(d["image"][:, :w]).permute(2, 0, 1)
        priors[i, :, :h, :w] = torch.from_numpy(d["priors"][:, :, :w])
        labels[i, :h, :w] = torch.from_numpy(label[:, :w])
    return images, priors, labels


def load_soft_targets(folder: Path, stems: list[str]) -> torch.Tensor:
    """(N, K, PAD_H/2, PAD_W/2) uint8 teacher probabilities (training/pseudo_label.py
    ``soft``, half the cache size), zero outside the photo."""
    soft = torch.zeros(len(stems), len(FINE_LABELS), PAD_H // 2, PAD_W // 2, dtype=torch.uint8)
    for i, stem in enumerate(stems):
        target = torch.from_numpy(np.load(folder / f"{stem}.npz")["soft"])[:, :PAD_H // 2, :PAD_W // 2]
        soft[i, :, :target.shape[1], :target.shape[2]] = target
    return soft


def labelled_stems(cache: Path) -> list[str]:
    """The pixel-annotated photos in the cache (those with a ``label`` array), sorted."""
    return sorted(f.stem for f in cache.glob("*.npz") if "label" in np.load(f).files)


def build_network(args: dict[str, Any]) -> ParsingNet:
    """The network a run's arguments (``vars`` of this script's options) describe."""
    return ParsingNet(IN_CHANNELS, len(FINE_LABELS), args["model_width"], args["expand"], args["decoder_width"],
                      args.get("context", False), args.get("encoder", "mobilenetv2"))


def normalise(rgb: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Network input from RGB in [0, 1] and priors in [0, 1]."""
    return torch.cat([(rgb - MEAN) / STD, priors], 1)


# Per kind of window of a person cut by the frame: head to hips, hips to feet,
# middle (neither head nor feet).
Windows = tuple[float, float, float]


FRAMING_PARTS = frozenset({"half", "cut", "studio", "gray", "skin", "blur"})


def framing_parts(text: str) -> frozenset[str]:
    """``--framings`` value: a comma list of FRAMING_PARTS."""
    parts = frozenset(part.strip() for part in text.split(",") if part.strip())
    if unknown := parts - FRAMING_PARTS:
        raise argparse.ArgumentTypeError(
            f"unknown framing parts {sorted(unknown)}; choose from {sorted(FRAMING_PARTS)}")
    return parts


def cut_windows(text: str) -> Windows:
    """``--cut-windows`` value: three non-negative shares, not all zero."""
    try:
        a, b, c = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("three comma-separated numbers, e.g. 0.7,0,0.3") from None
    if min(a, b, c) < 0 or a + b + c <= 0:
        raise argparse.ArgumentTypeError("shares must be non-negative and not all zero")
    return a, b, c


def augment(images: torch.Tensor, priors: torch.Tensor, labels: torch.Tensor, out_h: int, out_w: int,
            soft: torch.Tensor | None = None,
            framings: frozenset[str] = frozenset(),
            cut_windows: Windows | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random scale/crop/rotation/flip and colour jitter, one affine per sample.
    Returns the network input, the labels and, if ``soft`` teacher probabilities
    (any size, they are sampled in normalised coordinates) are given, those under
    the same affine (all zero outside the photo).

    ``framings`` (a subset of ``FRAMING_PARTS``) adds the photos users send
    beside CCP's full-body street shots: ``half`` head-to-hips and hips-to-feet
    crops, ``cut`` most samples cut by the frame (head to hips, hips to feet,
    or without head and feet: the model for people the frame cuts),
    ``studio`` the person on a plain studio backdrop, ``gray`` grayscale
    photos, ``skin`` darker skin tones, ``blur`` out-of-focus photos (a
    Gaussian blur of 0.6-2.5 px at the output size; the validation photos'
    blurred framing is ~1.4 px at the engine's working size).  ``cut_windows``:
    the ``cut`` part's shares of its three kinds of window (default
    ``CUT_WINDOWS``)."""
    b = images.shape[0]
    rgb = images.float() / 255
    pri = priors.float() / 255
    # Affine in normalised coords: output (u, v) -> input (x, y).
    # Base scale: the output window covers the photo's full height at scale 1.
    scale = torch.empty(b).uniform_(0.65, 1.35)
    # Some samples zoom far in (2-3.5x) anywhere in the photo: the network sees
    # close-ups, partial people and person-free background.
    zoom = torch.rand(b) < 0.1
    scale[zoom] = torch.empty(int(zoom.sum())).uniform_(2.0, 3.5)
    angle = torch.empty(b).uniform_(-12, 12) * math.pi / 180
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
    tx = torch.empty(b).uniform_(-0.35, 0.35)
    ty = torch.empty(b).uniform_(-0.3, 0.3)
    tx[zoom] = torch.empty(int(zoom.sum())).uniform_(-0.9, 0.9)
    ty[zoom] = torch.empty(int(zoom.sum())).uniform_(-0.9, 0.9)
    prior_drop = torch.full((b,), PRIOR_DROP)
    for part, rate, shares, drops in (("half", 0.25, HALF_WINDOWS, (PRIOR_DROP,) * 3),
                                      ("cut", CUT_RATE, cut_windows or CUT_WINDOWS, CUT_PRIOR_DROP)):
        if part in framings:
            _cut_by_the_frame((torch.rand(b) < rate) & ~zoom, shares, drops, scale, tx, ty, prior_drop)
    aspect = (out_w / out_h) * (PAD_H / PAD_W)
    sy = 1 / scale
    sx = sy * aspect
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([sx * cos * flip, -sy * sin * (PAD_W / PAD_H), tx], 1),
        torch.stack([sx * sin * flip * (PAD_W / PAD_H), sy * cos, ty], 1),
    ], 1)
    grid = F.affine_grid(theta, [b, 1, out_h, out_w], align_corners=False)
    x = F.grid_sample(torch.cat([rgb, pri], 1), grid, mode="bilinear", align_corners=False)
    lab = F.grid_sample(labels.float().unsqueeze(1) + 1, grid, mode="nearest", align_corners=False)
    lab = lab.squeeze(1).long() - 1
    lab[lab < 0] = IGNORE
    if soft is not None:
        soft = F.grid_sample(soft.float() / 255, grid, mode="bilinear", align_corners=False)
    rgb, pri = x[:, :3], x[:, 3:]
    # Colour jitter: brightness, contrast, saturation, a hue-ish channel mix, gamma.
    bright = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3)
    sat = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4)
    rgb = _studio_and_skin(rgb, lab, 0.08 if "studio" in framings else 0.0, 0.2 if "skin" in framings else 0.0)
    gray = rgb.mean(1, keepdim=True)
    rgb = gray + (rgb - gray) * sat
    mean = rgb.mean((1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * contrast + mean
    rgb = rgb * bright
    mix = torch.eye(3) + torch.empty(b, 3, 3).uniform_(-0.08, 0.08)
    rgb = torch.einsum("bij,bjhw->bihw", mix, rgb)
    rgb = rgb.clamp(0, 1) ** torch.empty(b, 1, 1, 1).uniform_(0.8, 1.25)
    if "gray" in framings:
        gray_photo = torch.rand(b) < 0.1
        rgb[gray_photo] = rgb[gray_photo].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    if "blur" in framings:
        for i in torch.nonzero(torch.rand(b) < BLUR_RATE).flatten().tolist():
            rgb[i] = gaussian_blurred(rgb[i], float(torch.empty(1).uniform_(*BLUR_SIGMA)))
    # Drop some samples' priors so the network never depends on them blindly.
    drop = (torch.rand(b) < prior_drop).float().view(b, 1, 1, 1)
    pri = pri * (1 - drop)
    # A few person-free images (flat colour, gradient, noise; all background),
    # so that an empty photo is answered "no person" (API state -11).
    empty = torch.rand(b) < 0.04
    if empty.any():
        n = int(empty.sum())
        ramp = torch.linspace(0, 1, out_h).view(1, 1, out_h, 1) * torch.empty(n, 3, 1, 1).uniform_(-0.5, 0.5)
        flat = torch.rand(n, 3, 1, 1) + ramp + torch.randn(n, 3, out_h, out_w) * torch.rand(n, 1, 1, 1) * 0.1
        rgb[empty] = flat.clamp(0, 1)
        pri[empty] = 0
        lab[empty] = 0
        if soft is not None:
            soft[empty] = F.one_hot(torch.tensor(0), soft.shape[1]).float().view(1, -1, 1, 1)
    return normalise(rgb, pri), lab, soft


HALF_WINDOWS = (0.7, 0.3, 0.0)
CUT_WINDOWS = (0.4, 0.3, 0.3)
CUT_RATE = 0.6
# Share of samples whose pose priors are dropped: MediaPipe misses some people,
# and finds no pose in most photos without a head (90 of 101 hips-to-feet
# validation crops, 25 of 101 without head and feet, 2 of 101 head to hips).
PRIOR_DROP = 0.1
CUT_PRIOR_DROP = (0.1, 0.9, 0.3)


def _cut_by_the_frame(chosen: torch.Tensor, shares: Windows, drops: Windows, scale: torch.Tensor,
                      tx: torch.Tensor, ty: torch.Tensor, prior_drop: torch.Tensor) -> None:
    """Turn the ``chosen`` samples' windows (in place) into a person cut by
    the frame, in ``shares``: 45-65% of the photo's height at its top (head
    to hips) or its bottom (hips to feet), or 55-80% around its middle (head
    and feet cut); each kind's chance of losing the pose priors is ``drops``."""
    n = int(chosen.sum())
    kind = torch.multinomial(torch.tensor(shares), n, replacement=True) if n else torch.zeros(0, dtype=torch.long)
    middle = kind == 2
    s = torch.empty(n).uniform_(1.55, 2.2)
    s[middle] = torch.empty(int(middle.sum())).uniform_(1.25, 1.8)
    edge = torch.tensor([-1.0, 1.0, 0.0])[kind]
    scale[chosen] = s
    ty[chosen] = edge * (1 - 1 / s) + torch.empty(n).uniform_(-0.05, 0.05)
    tx[chosen] = torch.empty(n).uniform_(-0.12, 0.12)
    prior_drop[chosen] = torch.tensor(drops)[kind]


BLUR_RATE = 0.3
BLUR_SIGMA = (0.6, 2.5)


def gaussian_blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``image`` (C, H, W) under a separable Gaussian of ``sigma`` pixels, edges replicated."""
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=image.dtype) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()
    c = image.shape[0]
    x = F.pad(image.unsqueeze(0), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c).squeeze(0)


def _studio_and_skin(rgb: torch.Tensor, lab: torch.Tensor, studio_rate: float, darker_rate: float) -> torch.Tensor:
    """A ``studio_rate`` share of samples get a plain, light studio backdrop
    behind the person (the labelled background pixels), a ``darker_rate`` share a
    darker skin tone (face and body pixels scaled down, slightly warmer), so that
    dark skin is skin, not legwear."""
    b = rgb.shape[0]
    if not (studio_rate or darker_rate):
        return rgb
    out = rgb.clone()
    studio = torch.rand(b) < studio_rate
    if studio.any():
        n = int(studio.sum())
        tone = torch.empty(n, 1, 1, 1).uniform_(0.75, 1.0) + torch.empty(n, 3, 1, 1).uniform_(-0.04, 0.04)
        ramp = torch.linspace(0, 1, rgb.shape[2]).view(1, 1, -1, 1) * torch.empty(n, 1, 1, 1).uniform_(-0.15, 0.05)
        backdrop = (tone + ramp).clamp(0, 1).expand(n, 3, rgb.shape[2], rgb.shape[3])
        bg = (lab[studio] == FINE_INDEX["background"]).unsqueeze(1)
        out[studio] = torch.where(bg, backdrop, out[studio])
    darker = torch.rand(b) < darker_rate
    if darker.any():
        n = int(darker.sum())
        skin = ((lab[darker] == FINE_INDEX["face"]) | (lab[darker] == FINE_INDEX["body"])).unsqueeze(1)
        factor = torch.empty(n, 1, 1, 1).uniform_(0.3, 0.75) * torch.tensor([1.0, 0.9, 0.82]).view(1, 3, 1, 1)
        out[darker] = torch.where(skin, out[darker] * factor, out[darker])
    return out


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(labels[labels != IGNORE].long().flatten(), minlength=len(FINE_LABELS)).float()
    freq = counts / counts.sum()
    med = freq[freq > 0].median()
    w = (med / freq.clamp_min(1e-8)).sqrt().clamp(0.5, 6.0)
    return w


def label_counts(labels: torch.Tensor) -> torch.Tensor:
    """(B, K) number of pixels of each fine label per sample (IGNORE not counted)."""
    k = len(FINE_LABELS)
    valid = labels != IGNORE
    sample = torch.arange(labels.shape[0]).view(-1, 1, 1).expand_as(labels)
    return torch.bincount(sample[valid] * k + labels[valid].long(), minlength=labels.shape[0] * k).view(-1, k)


def balancing_weights(reference: torch.Tensor, pool: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """(M,) sampling weights for the ``pool`` photos, given as (M, K) label
    presence, under which every combination of ``labels`` (each present or not)
    is drawn as often as it occurs among the ``reference`` photos (N, K).  The
    unannotated CCP photos hold fewer dresses and more skirts than the annotated
    ones; drawn uniformly, their pseudo-labels shift the dress/skirt prior."""
    bits = 2 ** torch.arange(len(labels))
    columns = [FINE_INDEX[name] for name in labels]

    def combination(presence: torch.Tensor) -> torch.Tensor:
        return (presence[:, columns].long() * bits).sum(1)

    def share(presence: torch.Tensor) -> torch.Tensor:
        return torch.bincount(combination(presence), minlength=2 ** len(labels)).double() / len(presence)

    ratio = share(reference) / share(pool).clamp_min(1e-12)
    return ratio[combination(pool)]


def presence_loss(presence: torch.Tensor, counts: torch.Tensor, possible: torch.Tensor) -> torch.Tensor:
    """BCE of the (B, K) presence logits against each crop's label ``counts``.
    ``possible`` (B, K) marks the labels that may be in the photo (its tags; for
    fully annotated photos, the labels its crop has a pixel of): a label with at
    least PRESENT_PIXELS pixels is present, one not possible is absent, the rest
    unknown."""
    present = counts >= PRESENT_PIXELS
    known = (present | ~possible).float()
    loss = F.binary_cross_entropy_with_logits(presence, present.float(), weight=known, reduction="sum")
    return loss / known.sum().clamp_min(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = (target != IGNORE).unsqueeze(1).float()
    prob = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp_max(len(FINE_LABELS) - 1), len(FINE_LABELS)).permute(0, 3, 1, 2).float() * valid
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return (1 - dice[present]).mean()


def lovasz_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax (Berman et al., CVPR 2018) over the nine eval classes, the
    classes mIoU averages: each class's probability is the sum of its fine labels'
    (tops = outerwear + upper, ...), so the loss weighs a dress called "top + skirt"
    by what it costs the dress IoU.  For one-hot predictions it equals the mean
    over the classes present of 1 - IoU on the batch; between them it is the
    convex (Lovasz) extension of that.  Legwear pixels are ignored, as in eval."""
    valid = (target != IGNORE) & (target != FINE_INDEX["legwear"])
    member = torch.from_numpy(eval_membership())
    prob = torch.einsum("ek,bkhw->ebhw", member, logits.softmax(1))[:, valid]
    gt = torch.from_numpy(fine_to_eval_lut()).long()[target[valid].long()]
    fg = F.one_hot(gt, len(EVAL_CLASSES)).T.float()
    present = fg.sum(1) > 0
    errors, order = (fg - prob).abs()[present].sort(1, descending=True)
    fg_sorted = fg[present].gather(1, order)
    total = fg_sorted.sum(1, keepdim=True)
    jaccard = 1 - (total - fg_sorted.cumsum(1)) / (total + (1 - fg_sorted).cumsum(1))
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)
    return (errors * grad).sum(1).mean()


def distillation_loss(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the network against the teacher's probabilities, over
    the pixels inside the photo (where the warped targets still sum to ~1)."""
    mass = soft.sum(1)
    inside = mass > 0.5
    target = soft / mass.clamp_min(1e-6).unsqueeze(1)
    return -(target * logits.log_softmax(1)).sum(1)[inside].mean()


@torch.no_grad()
def validate(model: torch.nn.Module, images: torch.Tensor, priors: torch.Tensor,
             labels: torch.Tensor, height: int) -> dict[str, object]:
    """mIoU over the nine eval classes at cache resolution (legwear GT ignored)."""
    model.eval()
    lut = torch.from_numpy(fine_to_eval_lut()).long()
    member = torch.from_numpy(eval_membership())
    k = len(EVAL_CLASSES)
    conf = torch.zeros(k, k, dtype=torch.long)
    width = int(round(PAD_W * height / PAD_H / 16)) * 16
    for i in range(0, images.shape[0], 8):
        x = normalise(images[i:i + 8].float() / 255, priors[i:i + 8].float() / 255)
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        logits = model(x)
        logits = F.interpolate(logits, size=(PAD_H, PAD_W), mode="bilinear", align_corners=False)
        pred = torch.einsum("ek,bkhw->behw", member, logits.softmax(1)).argmax(1)
        gt = labels[i:i + 8].long()
        valid = (gt != IGNORE) & (gt != FINE_INDEX["legwear"])
        g = lut[gt.clamp_max(len(FINE_LABELS) - 1)]
        conf += torch.bincount(g[valid] * k + pred[valid], minlength=k * k).view(k, k)
    model.train()
    return EvalResult.from_confusion(conf.numpy(), images.shape[0]).as_dict()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", type=Path, default=Path("var/training/cache"))
    p.add_argument("--run", type=Path, default=Path("var/training/run1"))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--model-width", type=float, default=1.0)
    p.add_argument("--expand", type=int, default=4, help="expansion of the stride 8/16 inverted residuals")
    p.add_argument("--decoder-width", type=float, default=1.0, help="hidden width of the decoder fusions")
    p.add_argument("--context", action="store_true", help="self-attention over the deepest features "
                   "(starts as the identity, so a warm start keeps the exported function)")
    p.add_argument("--encoder", default="mobilenetv2", choices=["mobilenetv2", *LITE_VARIANTS],
                   help="mobilenetv2: ours, from scratch; efficientnet-lite0/1/2: from their ImageNet "
                   "weights (training/pretrained.py)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--init", type=Path, help="exported ONNX model to start a new run from")
    p.add_argument("--init-member", type=int, help="which network of an --init ensemble (training/ensemble.py)")
    p.add_argument("--pseudo", type=Path, help="folder of training/pseudo_label.py: pseudo-labels for the "
                   "unannotated photos, soft teacher targets for all training photos")
    p.add_argument("--pseudo-fraction", type=float, default=0.33)
    p.add_argument("--pseudo-balance", default="", help="comma-separated fine labels (e.g. dress,skirt) "
                   "whose photo frequencies the pseudo-labelled picks match to the annotated training photos")
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast and channels-last training steps "
                   "(~1.7x faster on CPUs with AMX, ~7x slower on CPUs without bf16 instructions; "
                   "validation and EMA stay float32)")
    p.add_argument("--lovasz", type=float, default=0.0, help="weight of a Lovasz-softmax loss over the eval "
                   "classes (a surrogate of their IoU), added to cross-entropy and Dice")
    p.add_argument("--distill", type=float, default=0.0, help="weight of a cross-entropy against the "
                   "teacher's soft probabilities in the --pseudo folder, on every training photo")
    p.add_argument("--seed", type=int, default=0, help="random seed of a new run (weights, augmentation, "
                   "photo order): two seeds of one recipe measure its run-to-run spread")
    p.add_argument("--presence-weight", type=float, default=0.4, help="weight of the image-level presence loss")
    p.add_argument("--framings", type=framing_parts, nargs="?", const=FRAMING_PARTS, default=frozenset(),
                   help="augment towards the photos users send, all parts or a comma list of "
                   f"{','.join(sorted(FRAMING_PARTS))}: half-body crops, people cut by the frame, studio backdrops, "
                   "grayscale, darker skin tones, out-of-focus photos (see augment)")
    p.add_argument("--cut-windows", type=cut_windows, help="the cut part's shares of head-to-hips, "
                   f"hips-to-feet and middle windows, three numbers (default {','.join(map(str, CUT_WINDOWS))})")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.run.mkdir(parents=True, exist_ok=True)

    train_stems, val_stems = validation_split(labelled_stems(args.cache))
    tr_img, tr_pri, tr_lab = load_cache(args.cache, train_stems)
    va_img, va_pri, va_lab = load_cache(args.cache, val_stems)
    # The folder also holds the annotated training photos' soft targets (for --distill).
    pseudo_stems = sorted({f.stem for f in args.pseudo.glob("*.npz")} - set(train_stems)) if args.pseudo else []
    n_pseudo = round(args.batch * args.pseudo_fraction) if pseudo_stems else 0
    if pseudo_stems:
        ps_img, ps_pri, ps_lab = load_cache(args.cache, pseudo_stems, args.pseudo)
        ps_tags = torch.from_numpy(np.stack([np.load(args.pseudo / f"{s}.npz")["allowed"] for s in pseudo_stems]))
        ps_weights = torch.ones(len(pseudo_stems), dtype=torch.float64)
        if args.pseudo_balance:
            tr_present = torch.cat([label_counts(lab[None]) for lab in tr_lab]) > 0  # one at a time: memory
            ps_weights = balancing_weights(tr_present, ps_tags, args.pseudo_balance.split(","))
    if args.distill:
        tr_soft, ps_soft = load_soft_targets(args.pseudo, train_stems), load_soft_targets(args.pseudo, pseudo_stems)
    print(f"train {len(train_stems)} val {len(val_stems)} pseudo {len(pseudo_stems)}", flush=True)

    last = args.run / "last.pt"
    if not last.exists():
        # A new run's initial weights, calibration batches and augmentations are reproducible.
        torch.manual_seed(args.seed)
    model = build_network(vars(args))
    weights = class_weights(tr_lab)
    n_labelled = args.batch - n_pseudo
    steps_per_epoch = len(train_stems) // n_labelled
    total_steps = args.epochs * steps_per_epoch
    warmup = round(args.warmup_epochs * steps_per_epoch)
    if args.init and not last.exists():
        load_exported(model, args.init, new_modules=("presence", "context"), widen=True, member=args.init_member)
        calibrate_batchnorm(model, (augment(tr_img[i:i + args.batch], tr_pri[i:i + args.batch],
                                            tr_lab[i:i + args.batch], args.height, args.width)[0]
                                    for i in range(0, 8 * args.batch, args.batch)))
        print(f"initialised from {args.init}", flush=True)
    elif args.encoder in LITE_VARIANTS and not last.exists():
        load_lite(model, MEAN, STD)
        print(f"encoder initialised from {args.encoder}'s ImageNet weights", flush=True)
    if args.bf16:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    state = {"step": 0, "best": 0.0}
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"])
        print(f"resumed at step {state['step']}", flush=True)
    random.seed(state["step"])

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    def save() -> None:
        tmp = last.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "state": state, "rng": torch.get_rng_state(), "args": vars(args),
                    "metrics": state.get("metrics")}, tmp)  # the last validation, for the model card
        tmp.replace(last)

    last_save = time.time()
    model.train()
    while state["step"] < total_steps:
        epoch = state["step"] // steps_per_epoch
        g = torch.Generator().manual_seed(1000 + epoch + 1_000_003 * args.seed)
        order = torch.randperm(len(train_stems), generator=g)
        start = state["step"] % steps_per_epoch
        t0 = time.time()
        for it in range(start, steps_per_epoch):
            idx = order[it * n_labelled:(it + 1) * n_labelled]
            img, pri, lab = tr_img[idx], tr_pri[idx], tr_lab[idx]
            soft = tr_soft[idx] if args.distill else None
            tags = None
            if n_pseudo:
                pick = torch.multinomial(ps_weights, n_pseudo, replacement=True,
                                         generator=torch.Generator().manual_seed(state["step"]))
                img, pri, lab = torch.cat([img, ps_img[pick]]), torch.cat([pri, ps_pri[pick]]), \
                    torch.cat([lab, ps_lab[pick]])
                tags = ps_tags[pick]
                if soft is not None:
                    soft = torch.cat([soft, ps_soft[pick]])
            x, y, soft = augment(img, pri, lab, args.height, args.width, soft, args.framings, args.cut_windows)
            counts = label_counts(y)
            possible = counts > 0
            if tags is not None:
                possible[n_labelled:] = tags
            for group in opt.param_groups:
                group["lr"] = lr_at(state["step"])
            if args.bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits, presence = model.parse(x)
            logits, presence = logits.float(), presence.float()
            loss = (F.cross_entropy(logits, y, weight=weights, ignore_index=IGNORE) + 0.5 * dice_loss(logits, y)
                    + args.presence_weight * presence_loss(presence, counts, possible))
            if args.lovasz:
                # Every 3rd pixel each way, at a random offset: the sort over all
                # pixels would cost more than the rest of the step.
                oy, ox = random.randrange(3), random.randrange(3)
                loss = loss + args.lovasz * lovasz_loss(logits[:, :, oy::3, ox::3], y[:, oy::3, ox::3])
            if soft is not None:
                loss = loss + args.distill * distillation_loss(logits, soft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay = min(0.999, (1 + state["step"]) / (10 + state["step"]))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
                for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
                    be.copy_(bm)
            state["step"] += 1
            if time.time() - last_save > args.checkpoint_minutes * 60:
                save()
                last_save = time.time()
        print(f"epoch {epoch} loss {loss.item():.3f} lr {lr_at(state['step']):.5f} "
              f"{time.time() - t0:.0f}s", flush=True)
        if (epoch + 1) % args.val_every == 0 or state["step"] >= total_steps:
            metrics = validate(ema, va_img, va_pri, va_lab, args.height)
            metrics.update(epoch=epoch, step=state["step"], time=time.time())
            with open(args.run / "log.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            print(json.dumps(metrics), flush=True)
            state["metrics"] = metrics
            if metrics["miou"] > state["best"]:
                state["best"] = metrics["miou"]
                torch.save({"ema": ema.state_dict(), "metrics": metrics, "args": vars(args)},
                           args.run / "best.pt")
        save()
        last_save = time.time()


if __name__ == "__main__":
    main()
