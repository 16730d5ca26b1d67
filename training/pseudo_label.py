"""Pseudo-labels for the CCP photos without pixel annotations (self-training).

    python -m training.pseudo_label --teacher src/clothseg/models/clothseg-parsing.onnx

The teacher is the engine itself with an exported model at quality 2 (the
scales of `TTA_SCALES`, each mirrored).  Those photos do have CCP's image-level tags (which
garments are present), and they constrain the labels: a pixel may only take a
fine label whose CCP sources are tagged (background always).  Where the teacher
puts more than half its probability on untagged labels, or the renormalised top
probability over tagged labels is below ``--min-confidence``, the pixel is left
unlabelled (255).

Garments first trade places: the teacher's probability on an untagged garment
moves to the tagged garments, in proportion to the teacher's own probabilities
of those (``to_tagged_garments``).  This fixes the teacher's commonest error,
dress versus top + skirt, wherever the tags tell them apart, and it teaches
CCP's own convention: its annotators often call a skirt worn under a separate
top a "dress" (tags: dress and sweater, no skirt), so the skirt the teacher
sees becomes dress instead of being left out.

Writes ``OUT/NNNN.npz`` with a ``label`` array at cache size, the ``allowed``
labels (the image-level presence head learns from them) and ``soft``: the
teacher's probabilities under the same constraint (untagged garments traded to
the tagged ones, other untagged labels removed, renormalised), uint8 at half the
cache size, the targets of ``training.train --distill``.  The annotated training
photos get a file too, their ``allowed`` labels being those their annotation
has, so that distillation covers every training photo; validation photos get
none.  Existing files are kept, so the script resumes.

``--tags-only`` runs no teacher: each unannotated photo gets its ``allowed``
labels and a ``label`` array with every pixel unlabelled, so training learns
nothing per pixel from it and the presence head learns only which garments its
tags rule out (``training.train --pseudo DIR``; no ``--distill``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.io as sio

from clothseg.engine import load_engine
from clothseg.engine.evaluation import ccp_label_names, validation_split
from clothseg.engine.taxonomy import CCP_TO_FINE, FINE_INDEX, FINE_LABELS
from training.train import IGNORE, labelled_stems


def allowed_labels(tags: list[str]) -> np.ndarray:
    """Boolean (K,) mask of the fine labels the image-level tags allow."""
    allowed = np.zeros(len(FINE_LABELS), bool)
    allowed[FINE_INDEX["background"]] = True
    for tag in tags:
        allowed[FINE_INDEX[CCP_TO_FINE[tag]]] = True
    allowed[FINE_INDEX["face"]] = allowed[FINE_INDEX["body"]]  # CCP tags face and body as "skin"
    return allowed


# Garments the teacher confuses with one another; the tags decide among them.
GARMENTS = np.array([FINE_INDEX[n] for n in ("outerwear", "upper", "dress", "skirt", "pants", "shorts")])


def to_tagged_garments(probs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(K, H, W) probabilities with each pixel's mass on untagged garments moved to
    the tagged garments, shared in proportion to the teacher's probabilities of
    those at that pixel (evenly where it gives them none)."""
    tagged, untagged = GARMENTS[allowed[GARMENTS]], GARMENTS[~allowed[GARMENTS]]
    if not len(tagged) or not len(untagged):
        return probs
    out = probs.copy()
    share = probs[tagged] + 1e-6
    out[tagged] += share / share.sum(0) * probs[untagged].sum(0)
    out[untagged] = 0
    return out


def constrained_labels(probs: np.ndarray, allowed: np.ndarray, min_confidence: float) -> np.ndarray:
    """(H, W) uint8 labels from (K, H, W) probabilities restricted to ``allowed``."""
    inside = to_tagged_garments(probs, allowed)[allowed]
    mass = inside.sum(0)
    best = inside.argmax(0)
    labels = np.flatnonzero(allowed)[best].astype(np.uint8)
    confident = (mass > 0.5) & (inside.max(0) >= min_confidence * mass)
    labels[~confident] = IGNORE
    return labels


def constrained_probabilities(probs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(K, H, W) probabilities restricted to ``allowed`` and renormalised (all
    background where the teacher gave the allowed labels nothing)."""
    inside = to_tagged_garments(probs, allowed) * allowed[:, None, None]
    mass = inside.sum(0, keepdims=True)
    background = np.zeros_like(inside)
    background[FINE_INDEX["background"]] = 1
    return np.where(mass > 1e-6, inside / np.maximum(mass, 1e-6), background)


def soft_target(probs: np.ndarray) -> np.ndarray:
    """(K, ceil(H/2), ceil(W/2)) uint8 probabilities: half size keeps every
    training photo's targets in memory (1.4 GB for CCP)."""
    k, h, w = probs.shape
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    even = np.pad(probs, ((0, 0), (0, 2 * h2 - h), (0, 2 * w2 - w)), mode="edge")
    half = even.reshape(k, h2, 2, w2, 2).mean((2, 4))
    return np.round(half * 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ccp", type=Path, default=Path("../shared/datasets/ccp"))
    p.add_argument("--cache", type=Path, default=Path("var/training/cache"))
    p.add_argument("--teacher", type=Path, default=Path("src/clothseg/models/clothseg-parsing.onnx"))
    p.add_argument("--out", type=Path, default=Path("var/training/pseudo"))
    p.add_argument("--min-confidence", type=float, default=0.6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tags-only", action="store_true", help="no teacher: image-level tags, no pixel labels")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = None if args.tags_only else load_engine(str(args.teacher), threads=args.threads)
    names = ccp_label_names(args.ccp)
    tag_files = sorted((args.ccp / "annotations" / "image-level").glob("*.mat"))
    # The annotated training photos first: distillation needs them; the pseudo-labels and tags do not.
    photos = [] if args.tags_only else validation_split(labelled_stems(args.cache))[0]
    photos += [f.stem for f in tag_files]
    kept = []
    for i, stem in enumerate(photos, 1):
        out = args.out / f"{stem}.npz"
        if out.exists():
            continue
        cached = np.load(args.cache / f"{stem}.npz")
        image = cached["image"]
        if "label" in cached.files:
            allowed = np.bincount(cached["label"].ravel(), minlength=256)[:len(FINE_LABELS)] > 0
        else:
            tags = [names[t] for t in sio.loadmat(str(args.ccp / "annotations" / "image-level" / f"{stem}.mat"))
                    ["tags"].flatten()]
            allowed = allowed_labels(tags)
        if engine is None:
            arrays = {"label": np.full(image.shape[:2], IGNORE, np.uint8)}
        else:
            probs = engine.parse(image, quality=2).full_probabilities()
            arrays = {"label": constrained_labels(probs, allowed, args.min_confidence),
                      "soft": soft_target(constrained_probabilities(probs, allowed))}
            kept.append(float((arrays["label"] != IGNORE).mean()))
        np.savez(out.with_suffix(".tmp.npz"), allowed=allowed, **arrays)
        out.with_suffix(".tmp.npz").rename(out)
        if i % 100 == 0 and kept:
            print(f"{i}/{len(photos)} confident pixels {np.mean(kept):.3f}", flush=True)


if __name__ == "__main__":
    main()
