"""Our own parsing network, exported to ONNX by training/export.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clothseg.engine.priors import Pose, render_priors
from clothseg.engine.taxonomy import FINE_LABELS

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "clothseg-parsing.onnx"


class OnnxParsingBackend:
    """Input: normalised RGB + pose prior channels; output: softmax over FINE_LABELS."""

    needs_pose = True

    def __init__(self, path: Path = DEFAULT_MODEL, threads: int = 0) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        card = json.loads(path.with_suffix(".json").read_text())
        if tuple(card["labels"]) != FINE_LABELS:
            raise ValueError(f"{path} predicts {card['labels']}, not the current taxonomy")
        self._mean = np.array(card["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.array(card["std"], np.float32).reshape(3, 1, 1)
        self.card = card

    def probabilities(self, rgb: np.ndarray, pose: Pose | None) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = (rgb.transpose(2, 0, 1).astype(np.float32) / 255 - self._mean) / self._std
        priors = render_priors(pose, h, w) if pose is not None else np.zeros(
            (self.card["prior_channels"], h, w), np.float32)
        inp = np.concatenate([x, priors], 0)[None]
        return self._session.run(None, {"input": inp})[0][0]
