"""The segmentation engine: RGB image + options -> soft masks per API class.

A backend (our ONNX model, or an adapter for a third-party checkpoint) turns an
image at a working resolution into probabilities over the fine taxonomy.  The
engine owns everything around it, the same for every backend: working size,
test-time augmentation (quality 2), pose, upsampling to the input size, edge
refinement guided by the photo (detail mode 2) and the mapping to API classes
and ZIP categories.  Nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from clothseg.engine.priors import Pose, PoseEstimator
from clothseg.engine.taxonomy import (
    API_CLASS_MEMBERS,
    API_CLASSES,
    CLASS_TYPES,
    CLOTHING_CATEGORIES,
    FINE_INDEX,
    FINE_LABELS,
    fine_indices,
)

# Working resolution in pixels (height x width of a 2:3 portrait of this height),
# per detail mode; the image keeps its aspect ratio at this area.
WORKING_HEIGHT = {1: 384, 2: 512}
# Quality 2 averages these scales of the working size, each also mirrored.
TTA_SCALES = (0.875, 1.0, 1.25)
# Masks are probabilities pushed towards 0/255 inside regions, soft at the edges.
EDGE_SHARPNESS = 3.0
# A photo whose person area is below this fraction has "no person" (API state -11).
MIN_PERSON_FRACTION = 0.002
# Detail mode 2 fits its edge refinement at this many pixels on the long side.
REFINE_SIDE = 1024
# A ZIP category is reported when at least this fraction of the image is in it.
MIN_CATEGORY_FRACTION = 0.0005


@dataclass(frozen=True)
class SegmentOptions:
    class_type: int = 1
    quality: int = 1
    detail_mode: int = 1
    output_type: int = 1


@dataclass
class Segmentation:
    """Masks are (H, W) uint8 at the input size.  ``class_masks`` holds the
    classes the class_type selects (empty for output_type 2); ``clothing_masks``
    the finer categories found (only for output_type 2/3)."""

    class_masks: dict[str, np.ndarray] = field(default_factory=dict)
    clothing_masks: dict[str, np.ndarray] = field(default_factory=dict)
    person_fraction: float = 0.0

    @property
    def empty(self) -> bool:
        """No person (nothing to segment) was found: API state -11."""
        return not self.class_masks and not self.clothing_masks


class Backend(Protocol):
    """A network that predicts the fine taxonomy."""

    needs_pose: bool

    def probabilities(self, rgb: np.ndarray, pose: Pose | None) -> np.ndarray:
        """(len(FINE_LABELS), h, w) float32 probabilities for ``rgb`` (h, w, 3),
        already resized to the working size; ``pose`` is for the full image."""
        ...


def working_size(height: int, width: int, target_height: int) -> tuple[int, int]:
    """(h, w), multiples of 16, with the aspect of the input and the area of a
    2:3 portrait ``target_height`` pixels high."""
    area = target_height * target_height * 2 / 3
    scale = (area / (height * width)) ** 0.5
    return max(32, round(height * scale / 16) * 16), max(32, round(width * scale / 16) * 16)


def guided_refine(rgb: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """uint8 masks (H, W, C) at the photo's size from soft masks (h, w, C),
    snapped to the photo's edges by a fast guided filter (He & Sun 2015) with
    the photo's luminance as guide.  The linear coefficients are fitted at
    <= REFINE_SIDE px and applied at full size: a 4k photo costs ~2 s for all
    twelve masks (OpenCV's ximgproc filter takes ~2 s per mask at 4k)."""
    H, W = rgb.shape[:2]
    scale = min(1.0, REFINE_SIDE / max(H, W))
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    gray_full = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    guide = cv2.resize(gray_full, (w, h), interpolation=cv2.INTER_AREA)[:, :, None]
    p = cv2.resize(maps, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    radius = max(2, round(max(h, w) / 256))

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1)).reshape(x.shape)

    mean_i, mean_p = box(guide), box(p)
    var_i = box(guide * guide) - mean_i * mean_i
    a = (box(guide * p) - mean_i * mean_p) / (var_i + 1e-3)
    b = mean_p - a * mean_i
    a, b = box(a), box(b)
    out = np.empty((H, W, a.shape[2]), np.uint8)
    for c in range(a.shape[2]):  # one channel at a time: a 4k float stack would need ~1 GB
        a_full = cv2.resize(np.ascontiguousarray(a[:, :, c]), (W, H), interpolation=cv2.INTER_LINEAR)
        b_full = cv2.resize(np.ascontiguousarray(b[:, :, c]), (W, H), interpolation=cv2.INTER_LINEAR)
        out[:, :, c] = to_uint8(a_full * gray_full + b_full)
    return out


def to_uint8(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities -> 0-255, pushed towards 0/255 away from the 0.5 boundary."""
    return (np.clip((probabilities - 0.5) * EDGE_SHARPNESS + 0.5, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


class Engine:
    def __init__(self, backend: Backend, pose: PoseEstimator | None = None) -> None:
        self.backend = backend
        self._pose = pose or PoseEstimator()

    def fine_probabilities(self, rgb: np.ndarray, quality: int = 1, detail_mode: int = 1) -> tuple[np.ndarray, Pose]:
        """(K, h, w) fine-label probabilities at the working size and the pose."""
        pose = self._pose(rgb)
        h, w = working_size(rgb.shape[0], rgb.shape[1], WORKING_HEIGHT[detail_mode])
        scales = TTA_SCALES if quality == 2 else (1.0,)
        total = np.zeros((len(FINE_LABELS), h, w), np.float32)
        for s in scales:
            sh, sw = working_size(rgb.shape[0], rgb.shape[1], round(WORKING_HEIGHT[detail_mode] * s))
            img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
            for flip in (False, True) if quality == 2 else (False,):
                view = np.ascontiguousarray(img[:, ::-1]) if flip else img
                view_pose = _flip_pose(pose) if flip else pose
                probs = self.backend.probabilities(view, view_pose)
                if flip:
                    probs = probs[:, :, ::-1]
                if (sh, sw) != (h, w):
                    probs = cv2.resize(probs.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_LINEAR)
                    probs = probs.reshape(h, w, -1).transpose(2, 0, 1)
                total += probs
        return total / (len(scales) * (2 if quality == 2 else 1)), pose

    def segment(self, rgb: np.ndarray, options: SegmentOptions) -> Segmentation:
        probs, pose = self.fine_probabilities(rgb, options.quality, options.detail_mode)
        person = 1.0 - probs[FINE_INDEX["background"]]
        result = Segmentation(person_fraction=float((person > 0.5).mean()))
        if result.person_fraction < MIN_PERSON_FRACTION:
            return result
        wanted: dict[str, np.ndarray] = {}
        if options.output_type in (1, 3):
            for name in CLASS_TYPES[options.class_type]:
                wanted[f"class:{name}"] = self._class_map(name, probs, person, pose)
        if options.output_type in (2, 3):
            for cat, members in CLOTHING_CATEGORIES.items():
                m = probs[fine_indices(members)].sum(0)
                if (m > 0.5).mean() >= MIN_CATEGORY_FRACTION:
                    wanted[f"cat:{cat}"] = m
        if not wanted:
            return result
        names = list(wanted)
        stack = np.stack([wanted[n] for n in names], axis=2)
        H, W = rgb.shape[:2]
        if options.detail_mode == 2:
            masks = guided_refine(rgb, stack)  # the photo's own edges decide the boundary
        else:
            # Sharpen at the working size, then upsample the bytes (4x less work).
            masks = cv2.resize(to_uint8(stack), (W, H), interpolation=cv2.INTER_LINEAR).reshape(H, W, len(names))
        for i, n in enumerate(names):
            kind, name = n.split(":", 1)
            (result.class_masks if kind == "class" else result.clothing_masks)[name] = masks[:, :, i]
        return result

    @staticmethod
    def _class_map(name: str, probs: np.ndarray, person: np.ndarray, pose: Pose) -> np.ndarray:
        if name == "others":
            # Person pixels (MediaPipe's person mask) that the model gave no class.
            h, w = person.shape
            mp_person = cv2.resize(pose.person_mask, (w, h), interpolation=cv2.INTER_LINEAR)
            return np.clip(mp_person - person, 0.0, 1.0)
        return probs[fine_indices(API_CLASS_MEMBERS[name])].sum(0)


def _flip_pose(pose: Pose) -> Pose:
    lms = None
    if pose.landmarks is not None:
        lms = pose.landmarks.copy()
        lms[:, 0] = 1.0 - lms[:, 0]
    return Pose(lms, np.ascontiguousarray(pose.person_mask[:, ::-1]))


__all__ = ["API_CLASSES", "Backend", "Engine", "SegmentOptions", "Segmentation"]
