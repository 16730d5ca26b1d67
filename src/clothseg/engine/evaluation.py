"""Evaluation on a folder in CCP's layout (photos/, annotations/pixel-level/,
label_list.mat) over the nine eval classes of taxonomy.EVAL_CLASSES."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from clothseg.engine.core import Engine
from clothseg.engine.taxonomy import (
    CCP_IGNORED,
    CCP_TO_FINE,
    EVAL_CLASSES,
    EVAL_MEMBERS,
    FINE_INDEX,
    FINE_LABELS,
)

IGNORE = 255


def validation_split(stems: list[str]) -> tuple[list[str], list[str]]:
    """Our fixed (train, validation) split of pixel-annotated CCP photos: sorted
    by number, every 9th (index % 9 == 0) is validation."""
    ordered = sorted(stems)
    return ([s for i, s in enumerate(ordered) if i % 9],
            [s for i, s in enumerate(ordered) if i % 9 == 0])


def fine_to_eval_lut() -> np.ndarray:
    lut = np.zeros(len(FINE_LABELS), np.uint8)
    for ei, name in enumerate(EVAL_CLASSES):
        for fine in EVAL_MEMBERS[name]:
            lut[FINE_INDEX[fine]] = ei
    return lut


def eval_membership() -> np.ndarray:
    """(eval classes, fine labels) 0/1 matrix: the fine labels each eval class sums.
    A pixel's eval class is the argmax of these sums of probabilities, the same
    sums the API's class masks are made of (tops = outerwear + upper, ...)."""
    member = np.zeros((len(EVAL_CLASSES), len(FINE_LABELS)), np.float32)
    member[fine_to_eval_lut(), np.arange(len(FINE_LABELS))] = 1
    return member


def ccp_to_eval_lut(label_names: list[str]) -> np.ndarray:
    """CCP label index -> eval class index (IGNORE for socks/stockings/tights)."""
    fine_lut = fine_to_eval_lut()
    return np.array([IGNORE if n in CCP_IGNORED else fine_lut[FINE_INDEX[CCP_TO_FINE[n]]]
                     for n in label_names], np.uint8)


def ccp_label_names(ccp: Path) -> list[str]:
    import scipy.io as sio

    cells = sio.loadmat(str(ccp / "label_list.mat"))["label_list"][0]
    return [str(c[0]) if len(c) else "" for c in cells]


def annotated_stems(ccp: Path) -> list[str]:
    return sorted(p.stem for p in (ccp / "annotations" / "pixel-level").glob("*.mat")
                  if (ccp / "photos" / f"{p.stem}.jpg").exists())


def iter_ccp(ccp: Path, stems: list[str]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, RGB photo, CCP label map at the photo's size)."""
    import scipy.io as sio

    for stem in stems:
        rgb = cv2.cvtColor(cv2.imread(str(ccp / "photos" / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
        gt = sio.loadmat(str(ccp / "annotations" / "pixel-level" / f"{stem}.mat"))["groundtruth"]
        if gt.shape != rgb.shape[:2]:
            gt = cv2.resize(gt, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        yield stem, rgb, gt


@dataclass
class EvalResult:
    images: int
    miou: float
    pixel_accuracy: float
    iou: dict[str, float]
    # (images, K, K) confusion of each photo, when the result was built from them.
    per_image: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_confusion(cls, conf: np.ndarray, images: int) -> EvalResult:
        """Scores from a (ground truth x prediction) confusion matrix over EVAL_CLASSES."""
        iou = _iou(conf)
        inter = np.diag(conf)
        return cls(images, float(iou.mean()), float(inter.sum() / max(conf.sum(), 1)),
                   {n: round(float(v), 4) for n, v in zip(EVAL_CLASSES, iou, strict=True)})

    @classmethod
    def from_photos(cls, per_image: np.ndarray) -> EvalResult:
        """Scores from one confusion matrix per photo, kept for ``intervals``."""
        result = cls.from_confusion(per_image.sum(0), len(per_image))
        result.per_image = per_image
        return result

    def intervals(self, rounds: int = 2000, seed: int = 0) -> dict[str, tuple[float, float]]:
        """95% percentile-bootstrap intervals of mIoU and of each class's IoU,
        resampling photos: how far the figures could move on another draw of
        validation photos (a class seen in few photos moves most)."""
        if self.per_image is None:
            raise ValueError("intervals need the per-photo confusions (EvalResult.from_photos)")
        rng = np.random.default_rng(seed)
        n = len(self.per_image)
        draws = np.array([_iou(self.per_image[rng.integers(0, n, n)].sum(0)) for _ in range(rounds)])
        scores = np.column_stack([draws.mean(1), draws])
        low, high = np.percentile(scores, [2.5, 97.5], axis=0)
        return {name: (round(float(lo), 4), round(float(hi), 4))
                for name, lo, hi in zip(("miou", *EVAL_CLASSES), low, high, strict=True)}

    def as_dict(self) -> dict[str, object]:
        return {"images": self.images, "miou": round(self.miou, 4),
                "pixel_accuracy": round(self.pixel_accuracy, 4), "iou": self.iou}


def _iou(conf: np.ndarray) -> np.ndarray:
    inter = np.diag(conf).astype(np.float64)
    return inter / np.maximum(conf.sum(0) + conf.sum(1) - inter, 1)


def predict_eval_classes(engine: Engine, rgb: np.ndarray, quality: int, detail_mode: int = 1) -> np.ndarray:
    """Eval class per pixel at the photo's size."""
    probs, _ = engine.fine_probabilities(rgb, quality, detail_mode)
    h, w = rgb.shape[:2]
    full = cv2.resize(probs.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_LINEAR)
    return (full.reshape(h, w, -1) @ eval_membership().T).argmax(2).astype(np.uint8)


def evaluate(engine: Engine, ccp: Path, stems: list[str], quality: int = 1) -> EvalResult:
    lut = ccp_to_eval_lut(ccp_label_names(ccp))
    k = len(EVAL_CLASSES)
    per_image = np.zeros((len(stems), k, k), np.int64)
    for i, (_, rgb, gt) in enumerate(iter_ccp(ccp, stems)):
        pred = predict_eval_classes(engine, rgb, quality)
        g = lut[gt]
        valid = g != IGNORE
        per_image[i] = np.bincount(g[valid].astype(np.int64) * k + pred[valid], minlength=k * k).reshape(k, k)
    return EvalResult.from_photos(per_image)
