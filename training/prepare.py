"""Build the training cache from CCP: image, fine labels and pose priors per photo.

    python -m training.prepare --ccp ../shared/datasets/ccp --out var/training/cache

Each photo becomes one ``NNNN.npz`` holding, at CACHE_HEIGHT rows (aspect kept):
``image`` (H, W, 3) uint8 RGB, ``priors`` (PRIOR_CHANNELS, H, W) uint8 and, for the
pixel-annotated photos, ``label`` (H, W) uint8 fine labels with 255 = unlabeled.

CCP has no face label: ``skin`` is split into ``face`` (skin inside the face oval
that MediaPipe Face Mesh finds in a crop around MediaPipe's full-range face
detection; failing that, an ellipse in the detection box; then up to the
hairline) and ``body`` (all other skin).  Existing cache files are kept, so the script resumes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from pathlib import Path

import cv2
import numpy as np
import scipy.io as sio

from clothseg.engine.evaluation import ccp_label_names
from clothseg.engine.priors import PoseEstimator, render_priors
from clothseg.engine.taxonomy import CCP_TO_FINE, FINE_INDEX

CACHE_HEIGHT = 512


def ccp_to_fine_lut(names: list[str]) -> np.ndarray:
    """Lookup table CCP label index -> fine label index (skin -> body)."""
    return np.array([FINE_INDEX[CCP_TO_FINE[n]] for n in names], np.uint8)


class FaceRegion:
    def __init__(self) -> None:
        from mediapipe.python.solutions import face_detection, face_mesh

        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.3)
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, min_detection_confidence=0.3)
        self._oval = sorted({i for edge in face_mesh.FACEMESH_FACE_OVAL for i in edge})

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Boolean mask of the face oval, all False when no face is found."""
        h, w = rgb.shape[:2]
        region = np.zeros((h, w), np.uint8)
        found = self._detector.process(rgb).detections
        if not found:
            return region.astype(bool)
        box = max(found, key=lambda d: d.score[0]).location_data.relative_bounding_box
        bx, by, bw, bh = box.xmin * w, box.ymin * h, box.width * w, box.height * h
        # Face Mesh needs a large face: run it on an upscaled crop around the box.
        x0, y0 = int(max(0, bx - bw)), int(max(0, by - bh))
        x1, y1 = int(min(w, bx + 2 * bw)), int(min(h, by + 2 * bh))
        crop = rgb[y0:y1, x0:x1]
        if crop.size and (mesh := self._mesh_polygon(crop)) is not None:
            poly = mesh + np.array([x0, y0], np.float32)
            cv2.fillConvexPoly(region, cv2.convexHull(poly.astype(np.int32)), 1)
        else:
            center = (int(bx + bw / 2), int(by + bh * 0.45))
            cv2.ellipse(region, center, (int(bw * 0.55), int(bh * 0.7)), 0, 0, 360, 1, -1)
        return region.astype(bool)

    def _mesh_polygon(self, crop: np.ndarray) -> np.ndarray | None:
        scale = 384 / max(crop.shape[:2])
        big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        result = self._mesh.process(big)
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        pts = np.array([(lms[i].x * big.shape[1], lms[i].y * big.shape[0]) for i in self._oval])
        return (pts / scale).astype(np.float32)


def extend_face_to_hairline(fine: np.ndarray) -> np.ndarray:
    """Face Mesh's oval stops at the brow, so the forehead would be ``body``
    and the API's ``head`` would have a notch.  Skin above the face, within
    its width and up to half its height higher, and joined to it, is face too:
    the forehead up to the hairline (the neck, below, stays body)."""
    face = fine == FINE_INDEX["face"]
    if not face.any():
        return fine
    ys, xs = np.nonzero(face)
    top, height = ys.min(), ys.max() - ys.min() + 1
    band = np.zeros_like(face)
    band[max(0, top - height // 2): top + height // 3, xs.min(): xs.max() + 1] = True
    skin = band & (fine == FINE_INDEX["body"])
    _, pieces = cv2.connectedComponents((skin | face).astype(np.uint8))
    joined = np.isin(pieces, np.unique(pieces[face]))
    out = fine.copy()
    out[skin & joined] = FINE_INDEX["face"]
    return out


_worker: dict[str, object] = {}


def _init_worker(ccp: str) -> None:
    _worker["pose"] = PoseEstimator()
    _worker["face"] = FaceRegion()
    _worker["lut"] = ccp_to_fine_lut(ccp_label_names(Path(ccp)))
    _worker["ccp"] = Path(ccp)


def prepare_one(args: tuple[str, str]) -> str:
    stem, out_dir = args
    out = Path(out_dir) / f"{stem}.npz"
    if out.exists():
        return stem
    ccp: Path = _worker["ccp"]  # type: ignore[assignment]
    rgb = cv2.cvtColor(cv2.imread(str(ccp / "photos" / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    ch, cw = CACHE_HEIGHT, round(w * CACHE_HEIGHT / h)
    pose = _worker["pose"](rgb)  # type: ignore[operator]
    priors = (render_priors(pose, ch, cw) * 255).round().astype(np.uint8)
    arrays = {"image": cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_AREA), "priors": priors}
    ann = ccp / "annotations" / "pixel-level" / f"{stem}.mat"
    if ann.exists():
        gt = sio.loadmat(str(ann))["groundtruth"]
        if gt.shape != (h, w):  # a few CCP maps are a few rows off their photo
            gt = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST)
        fine = _worker["lut"][gt]  # type: ignore[index]
        face = _worker["face"](rgb) & (fine == FINE_INDEX["body"])  # type: ignore[operator]
        fine[face] = FINE_INDEX["face"]
        fine = extend_face_to_hairline(fine)
        arrays["label"] = cv2.resize(fine, (cw, ch), interpolation=cv2.INTER_NEAREST)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.rename(out)
    return stem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ccp", type=Path, default=Path("../shared/datasets/ccp"))
    parser.add_argument("--out", type=Path, default=Path("var/training/cache"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stems = sorted(p.stem for p in (args.ccp / "photos").glob("*.jpg"))
    jobs = [(s, str(args.out)) for s in stems]
    with mp.Pool(args.workers, initializer=_init_worker, initargs=(str(args.ccp),)) as pool:
        for i, _ in enumerate(pool.imap_unordered(prepare_one, jobs, chunksize=8), 1):
            if i % 100 == 0:
                print(f"{i}/{len(jobs)}", flush=True)


if __name__ == "__main__":
    main()
