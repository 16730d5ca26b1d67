"""Body-pose priors fed to the network as extra input channels.

MediaPipe Pose (bundled in the ``mediapipe`` wheel, Apache-2.0, runs offline)
gives a person mask and 33 body landmarks.  We render them as a person-mask
channel plus one Gaussian heatmap per joint group.  Left and right joints share
a channel so that a horizontal flip of the photo is a flip of the priors, which
keeps flip augmentation and flip test-time augmentation exact.

The same function serves training (training/prepare.py) and inference, so the
network always sees priors made the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe Pose landmark indices, grouped; see the MediaPipe pose documentation.
JOINT_GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("head", (0, 2, 5, 7, 8, 9, 10)),
    ("shoulders", (11, 12)),
    ("elbows", (13, 14)),
    ("wrists", (15, 16)),
    ("hips", (23, 24)),
    ("knees", (25, 26)),
    ("ankles", (27, 28)),
    ("feet", (29, 30, 31, 32)),
)
PRIOR_CHANNELS = 1 + len(JOINT_GROUPS)
# Heatmap standard deviation as a fraction of the image's longer side.
HEATMAP_SIGMA = 0.025
# MediaPipe Pose runs its networks at 256 px, so a larger photo only costs
# time (a 4000 px photo: ~110 ms against ~40 ms at 864 px on a Xeon).  Photos
# are shrunk to this long side first: the CCP photos the network was trained on
# (550 x 807-856), whose priors came from this same function, are not resized.
POSE_SIDE = 864


@dataclass(frozen=True)
class Pose:
    """Landmarks as rows (x, y, visibility), x and y relative to the image (0-1),
    or None when no person was found; person mask in [0, 1] at the image's size,
    or at most POSE_SIDE pixels on its long side (resize it where it is used)."""

    landmarks: np.ndarray | None
    person_mask: np.ndarray


class PoseEstimator:
    """MediaPipe Pose in still-image mode.  MediaPipe graphs are not
    thread-safe, so calls are serialised; the pose pass is ~30 ms."""

    def __init__(self) -> None:
        from mediapipe.python.solutions import pose as mp_pose

        self._pose = mp_pose.Pose(
            static_image_mode=True, model_complexity=1, enable_segmentation=True
        )
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> Pose:
        scale = POSE_SIDE / max(rgb.shape[:2])
        if scale < 1:
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        with self._lock:
            result = self._pose.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        if result.pose_landmarks is None:
            return Pose(None, np.zeros((h, w), np.float32))
        lms = np.array(
            [(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32
        )
        mask = result.segmentation_mask
        mask = np.zeros((h, w), np.float32) if mask is None else mask.astype(np.float32)
        return Pose(lms, mask)


def render_priors(pose: Pose, height: int, width: int) -> np.ndarray:
    """Prior channels (PRIOR_CHANNELS, height, width), float32 in [0, 1]."""
    out = np.zeros((PRIOR_CHANNELS, height, width), np.float32)
    out[0] = cv2.resize(pose.person_mask, (width, height), interpolation=cv2.INTER_LINEAR)
    if pose.landmarks is None:
        return out
    sigma = HEATMAP_SIGMA * max(height, width)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    for channel, (_, members) in enumerate(JOINT_GROUPS, start=1):
        for idx in members:
            x, y, vis = pose.landmarks[idx]
            if vis < 0.3:
                continue
            gx = np.exp(-((xs - x * width) ** 2) / (2 * sigma**2))
            gy = np.exp(-((ys - y * height) ** 2) / (2 * sigma**2))
            np.maximum(out[channel], vis * gy * gx, out=out[channel])
    return out
