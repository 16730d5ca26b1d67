"""Evaluation on a folder in CCP's layout (photos/, annotations/pixel-level/,
label_list.mat) over the nine eval classes of taxonomy.EVAL_CLASSES."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from clothseg.engine.core import Engine, SegmentOptions, as_trained, enclosed_holes, guided_upsampled
from clothseg.engine.framings import framed
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
    # Photos the engine answered "no person" (API state -11).
    refused: list[str] = field(default_factory=list)

    @classmethod
    def from_confusion(cls, conf: np.ndarray, images: int) -> EvalResult:
        """Scores from a (ground truth x prediction) confusion matrix over EVAL_CLASSES."""
        iou = _iou(conf)
        inter = np.diag(conf)
        return cls(images, float(np.nanmean(iou)), float(inter.sum() / max(conf.sum(), 1)),
                   {n: round(float(v), 4) for n, v in zip(EVAL_CLASSES, iou, strict=True) if not np.isnan(v)})

    @classmethod
    def from_photos(cls, per_image: np.ndarray) -> EvalResult:
        """Scores from one confusion matrix per photo, kept for ``intervals``."""
        result = cls.from_confusion(per_image.sum(0), len(per_image))
        result.per_image = per_image
        return result

    def intervals(self, rounds: int = 2000, seed: int = 0,
                  baseline: EvalResult | None = None) -> dict[str, tuple[float, float]]:
        """95% percentile-bootstrap intervals of mIoU and of each class's IoU,
        resampling photos: how far the figures could move on another draw of
        validation photos (a class seen in few photos moves most).  With
        ``baseline`` (the same photos scored another way), intervals of the
        difference self - baseline, the photos resampled together (paired)."""
        if self.per_image is None or (baseline is not None and baseline.per_image is None):
            raise ValueError("intervals need the per-photo confusions (EvalResult.from_photos)")
        rng = np.random.default_rng(seed)
        n = len(self.per_image)

        def scores(per_image: np.ndarray, pick: np.ndarray) -> np.ndarray:
            iou = _iou(per_image[pick].sum(0))
            return np.concatenate([[np.nanmean(iou)], iou])

        draws = []
        for _ in range(rounds):
            pick = rng.integers(0, n, n)
            draw = scores(self.per_image, pick)
            if baseline is not None:
                draw = draw - scores(baseline.per_image, pick)  # type: ignore[arg-type]
            draws.append(draw)
        low, high = np.nanpercentile(np.array(draws), [2.5, 97.5], axis=0)
        return {name: (round(float(lo), 4), round(float(hi), 4))
                for name, lo, hi in zip(("miou", *EVAL_CLASSES), low, high, strict=True)
                if not (np.isnan(lo) or np.isnan(hi))}

    def as_dict(self) -> dict[str, object]:
        return {"images": self.images, "miou": round(self.miou, 4),
                "pixel_accuracy": round(self.pixel_accuracy, 4), "iou": self.iou, "refused": self.refused}


def _iou(conf: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class neither labelled nor predicted (no shoes in
    a head-to-hips photo), which mIoU leaves out rather than counting as 0."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def predict_eval_classes(engine: Engine, rgb: np.ndarray, quality: int,
                         detail_mode: int = 1) -> tuple[np.ndarray, bool]:
    """Eval class per pixel at the photo's size, and whether the engine found a
    person: the argmax of the eval classes' probabilities, snapped to the
    photo's edges as the API's masks of ``detail_mode`` are."""
    parsing = engine.parse(rgb, quality, detail_mode)
    guide = as_trained(rgb)  # the photo whose edges the API's masks follow
    maps = [guided_upsampled(r.crop(guide), np.tensordot(eval_membership(), r.probs, 1),
                             r.refinement(detail_mode)).transpose(1, 2, 0) for r in parsing.regions]
    background = np.eye(len(EVAL_CLASSES), dtype=np.float32)[EVAL_CLASSES.index("background")]
    return parsing.paste(maps, fill=background).argmax(2).astype(np.uint8), parsing.has_person


def evaluate(engine: Engine, ccp: Path, stems: list[str], quality: int = 1, framing: str = "full") -> EvalResult:
    """Scores over the photos ``stems`` in ``framing`` (see clothseg.engine.framings)."""
    lut = ccp_to_eval_lut(ccp_label_names(ccp))
    k = len(EVAL_CLASSES)
    per_image = np.zeros((len(stems), k, k), np.int64)
    refused = []
    for i, (stem, rgb, gt) in enumerate(framed(framing, list(iter_ccp(ccp, stems)))):
        pred, has_person = predict_eval_classes(engine, rgb, quality)
        if not has_person:
            refused.append(stem)
        g = lut[gt]
        valid = g != IGNORE
        per_image[i] = np.bincount(g[valid].astype(np.int64) * k + pred[valid], minlength=k * k).reshape(k, k)
    result = EvalResult.from_photos(per_image)
    result.refused = refused
    return result


# API class masks compared with each eval class by the mask checks.
MASK_CLASSES: dict[str, tuple[str, ...]] = {
    "hair": ("hair",), "skin": ("face", "body"), "tops": ("tops",), "bottoms": ("bottoms",),
    "dress": ("dress",), "bag": ("bag",), "shoes": ("shoes",), "acc": ("acc",),
}
GARMENT_CLASSES = ("tops", "bottoms", "dress")
# A ground-truth garment region must be this share of the photo to be judged.
MIN_GARMENT_SHARE = 0.002


def boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` (bool) that touch a pixel outside it."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)).astype(bool)


def near(edge: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within ``tolerance`` pixels of an ``edge`` pixel."""
    if not edge.any():
        return np.zeros_like(edge)
    return cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3) <= tolerance


def has_hole(mask: np.ndarray, min_share: float = 0.01) -> bool:
    """Whether ``mask`` (bool) encloses a hole of more than ``min_share`` of its area."""
    return bool(mask.any()) and int(enclosed_holes(mask).sum()) > min_share * mask.sum()


@dataclass
class MaskChecks:
    """What the API's masks look like against the labels, over a set of photos."""

    images: int = 0
    # per class: [predicted edge pixels near a true edge, predicted edge pixels,
    #             true edge pixels near a predicted edge, true edge pixels]
    edges: dict[str, list[int]] = field(default_factory=lambda: {c: [0, 0, 0, 0] for c in MASK_CLASSES})
    head_holes: int = 0
    others_pixels: int = 0
    others_background: int = 0
    garments: int = 0
    consistent_garments: int = 0

    def boundary_f(self) -> dict[str, float]:
        out = {}
        for name, (tp_p, n_p, tp_r, n_r) in self.edges.items():
            if n_p + n_r:
                precision, recall = tp_p / max(n_p, 1), tp_r / max(n_r, 1)
                out[name] = round(2 * precision * recall / max(precision + recall, 1e-9), 4)
        return out

    def as_dict(self) -> dict[str, object]:
        f = self.boundary_f()
        return {"images": self.images, "boundary_f": f, "mean_boundary_f": round(float(np.mean(list(f.values()))), 4),
                "head_hole_share": round(self.head_holes / max(self.images, 1), 4),
                "others_background_share": round(self.others_background / max(self.others_pixels, 1), 4),
                "others_pixels": self.others_pixels,
                "garment_consistency": round(self.consistent_garments / max(self.garments, 1), 4),
                "garments": self.garments}


def check_masks(engine: Engine, ccp: Path, stems: list[str], options: SegmentOptions,
                framing: str = "full", tolerance: int = 3) -> MaskChecks:
    """The API's own masks (class_type 4) against the labels: boundary F-score per
    class (edges within ``tolerance`` pixels at the photo's size), photos whose
    head mask has a hole, the share of ``others`` that is background, and
    garment consistency (the share of labelled garment regions, connected
    pieces of one CCP garment label, whose pixels predicted as clothing are at
    least 90% one of tops / bottoms / dress)."""
    names = ccp_label_names(ccp)
    lut = ccp_to_eval_lut(names)
    garment_labels = [i for i in range(len(names)) if lut[i] != IGNORE and EVAL_CLASSES[lut[i]] in GARMENT_CLASSES]
    checks = MaskChecks()
    for _, rgb, gt in framed(framing, list(iter_ccp(ccp, stems))):
        seg = engine.segment(rgb, dataclasses.replace(options, class_type=4, output_type=1))
        checks.images += 1
        if seg.empty:
            continue
        m = {k: v >= 128 for k, v in seg.class_masks.items()}
        g = lut[gt]
        for name, parts in MASK_CLASSES.items():
            pred_edge = boundary(np.logical_or.reduce([m[p] for p in parts]))
            true_edge = boundary(g == EVAL_CLASSES.index(name))
            counts = checks.edges[name]
            counts[0] += int((pred_edge & near(true_edge, tolerance)).sum())
            counts[1] += int(pred_edge.sum())
            counts[2] += int((true_edge & near(pred_edge, tolerance)).sum())
            counts[3] += int(true_edge.sum())
        checks.head_holes += has_hole(m["head"])
        checks.others_pixels += int(m["others"].sum())
        checks.others_background += int((m["others"] & (gt == 0)).sum())
        garment_scores = np.stack([seg.class_masks[c] for c in GARMENT_CLASSES])
        garment_class = garment_scores.argmax(0)
        dressed = garment_scores.max(0) >= 128
        for label in garment_labels:
            count, pieces = cv2.connectedComponents((gt == label).astype(np.uint8))
            for piece in range(1, count):
                region = pieces == piece
                if region.sum() < MIN_GARMENT_SHARE * gt.size:
                    continue
                predicted = garment_class[region & dressed]
                checks.garments += 1
                if len(predicted) and np.bincount(predicted).max() >= 0.9 * len(predicted):
                    checks.consistent_garments += 1
    return checks
