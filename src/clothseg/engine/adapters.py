"""Backends for third-party human-parsing checkpoints that users download themselves.

- ``SegformerBackend``: a SegFormer-family model in Hugging Face format in a local
  folder (e.g. an ATR-trained "segformer_b2_clothes", or FASHN's human parser).
  Needs ``torch`` and ``transformers`` (``pip install 'clothseg[adapters]'``).
- ``SchpOnnxBackend``: an ONNX export of SCHP (Self-Correction Human Parsing)
  trained on LIP, ATR or Pascal-Person-Part.

Each native label set has one table into our fine taxonomy; the engine then
derives the API classes from it exactly as for our own model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from clothseg.engine.core import Condition
from clothseg.engine.priors import Pose
from clothseg.engine.taxonomy import FINE_INDEX, FINE_LABELS

# Native label name (lower-cased) -> fine label, shared by the label sets below.
NATIVE_TO_FINE: Mapping[str, str] = {
    "background": "background", "null": "background",
    "hat": "headwear", "hair": "hair", "face": "face", "head": "face",
    "sunglasses": "eyewear", "glasses": "eyewear",
    "upper-clothes": "upper", "upper_clothes": "upper", "top": "upper", "torso": "upper",
    "coat": "outerwear",
    "dress": "dress", "jumpsuits": "dress",
    "skirt": "skirt", "pants": "pants",
    "socks": "legwear",
    "left-shoe": "shoes", "right-shoe": "shoes", "shoes": "shoes", "feet": "shoes",
    "bag": "bag",
    "belt": "accessory", "scarf": "accessory", "glove": "accessory", "jewelry": "accessory",
    "left-leg": "body", "right-leg": "body", "left-arm": "body", "right-arm": "body",
    "arms": "body", "hands": "body", "legs": "body", "torso-skin": "body",
    "upper arms": "body", "lower arms": "body", "upper legs": "body", "lower legs": "body",
}

SCHP_LABELS: Mapping[str, tuple[str, ...]] = {
    "lip": ("Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat",
            "Socks", "Pants", "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm",
            "Left-leg", "Right-leg", "Left-shoe", "Right-shoe"),
    "atr": ("Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress",
            "Belt", "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm",
            "Right-arm", "Bag", "Scarf"),
    # Pascal-Person-Part has body parts only: no clothing classes (documented).
    "pascal": ("Background", "Head", "Torso", "Upper Arms", "Lower Arms", "Upper Legs", "Lower Legs"),
}


def label_matrix(native: tuple[str, ...]) -> np.ndarray:
    """(len(FINE_LABELS), len(native)) 0/1 matrix summing native probabilities into fine ones."""
    m = np.zeros((len(FINE_LABELS), len(native)), np.float32)
    for j, name in enumerate(native):
        fine = NATIVE_TO_FINE.get(name.lower())
        if fine is None:
            raise ValueError(f"no mapping for the label {name!r}; add it to NATIVE_TO_FINE")
        m[FINE_INDEX[fine], j] = 1.0
    return m


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def _to_fine(logits: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Native logits (C, h, w) -> fine probabilities (K, H, W) at ``size`` (H, W)."""
    h, w = size
    up = cv2.resize(logits.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_LINEAR)
    probs = _softmax(up.reshape(h, w, -1).transpose(2, 0, 1))
    return np.tensordot(matrix, probs, axes=1).astype(np.float32)


class SegformerBackend:
    needs_pose = False
    MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
    STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)

    def __init__(self, folder: Path, threads: int = 0, input_size: int = 512) -> None:
        import torch
        from transformers import SegformerForSemanticSegmentation

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self._model = SegformerForSemanticSegmentation.from_pretrained(str(folder), local_files_only=True).eval()
        id2label = self._model.config.id2label
        self._matrix = label_matrix(tuple(id2label[i] for i in range(len(id2label))))
        self._size = input_size

    def probabilities(self, rgb: np.ndarray, pose: Pose | None, condition: Condition = None) -> np.ndarray:
        img = cv2.resize(rgb, (self._size, self._size), interpolation=cv2.INTER_AREA)
        x = (img.transpose(2, 0, 1).astype(np.float32) / 255 - self.MEAN) / self.STD
        with self._torch.inference_mode():
            logits = self._model(pixel_values=self._torch.from_numpy(x[None])).logits[0].numpy()
        return _to_fine(logits, self._matrix, rgb.shape[:2])


class SchpOnnxBackend:
    """SCHP ONNX export: BGR input normalised with SCHP's statistics; the first
    output is the parsing logits (any resolution)."""

    needs_pose = False
    MEAN = np.array([0.406, 0.456, 0.485], np.float32).reshape(3, 1, 1)  # BGR
    STD = np.array([0.225, 0.224, 0.229], np.float32).reshape(3, 1, 1)
    DEFAULT_SIZE = {"lip": 473, "atr": 512, "pascal": 512}

    def __init__(self, path: Path, label_set: str, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        h, w = inp.shape[2], inp.shape[3]
        default = self.DEFAULT_SIZE[label_set]
        self._size = (h if isinstance(h, int) else default, w if isinstance(w, int) else default)
        self._matrix = label_matrix(SCHP_LABELS[label_set])

    def probabilities(self, rgb: np.ndarray, pose: Pose | None, condition: Condition = None) -> np.ndarray:
        h, w = self._size
        img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        x = (img.transpose(2, 0, 1).astype(np.float32) / 255 - self.MEAN) / self.STD
        logits = self._session.run(None, {self._input: x[None]})[0][0]
        return _to_fine(logits, self._matrix, rgb.shape[:2])
