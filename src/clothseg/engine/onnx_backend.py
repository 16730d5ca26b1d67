"""Our own parsing network, exported to ONNX by training/export.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from clothseg.engine.core import Condition
from clothseg.engine.priors import Pose, render_priors
from clothseg.engine.taxonomy import FINE_LABELS

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "clothseg-parsing.onnx"
# The same network trained with grayscale photos and darker skin among its
# samples: better on black-and-white photos, worse on colour ones.
GRAY_MODEL = MODELS_DIR / "clothseg-parsing-gray.onnx"
# The same again with out-of-focus photos among its samples too: better on
# out-of-focus photos, which the engine sharpens and flags ("blurred").
BLUR_MODEL = MODELS_DIR / "clothseg-parsing-blur.onnx"
# The same network trained with most samples cut by the frame: blended with
# the main model on the images the engine flags "headless".
CUT_MODEL = MODELS_DIR / "clothseg-parsing-cut.onnx"
# A photo is black-and-white when its pixels' channel spread (max - min, of 255)
# averages below this: JPEG's chroma noise on a gray photo stays under 1, a
# sepia or faded colour photo is well above.
GRAY_SPREAD = 3.0


def unrolled_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each Softmax over the channel axis written out as
    ReduceMax, Sub, Exp, ReduceSum and Div.  onnxruntime's Softmax kernel works
    pixel by pixel, on 16 labels at a time: at the working size it took ~20 ms
    of a ~55 ms network pass; the written-out form runs on whole tensors in a
    few ms, for the same probabilities (within 1e-6)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    axes = "unrolled_softmax:axes"
    nodes: list[onnx.NodeProto] = []
    written_out = False
    for node in model.graph.node:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        if node.op_type != "Softmax" or axis != 1:
            nodes.append(node)
            continue
        x, y, name = node.input[0], node.output[0], node.name
        written_out = True
        # ReduceMax takes its axes as an input from opset 18 on, ReduceSum from 13 on.
        reduce_max = (helper.make_node("ReduceMax", [x, axes], [f"{name}:max"], keepdims=1, name=f"{name}:max")
                      if opset >= 18 else
                      helper.make_node("ReduceMax", [x], [f"{name}:max"], axes=[1], keepdims=1, name=f"{name}:max"))
        nodes += [reduce_max,
                  helper.make_node("Sub", [x, f"{name}:max"], [f"{name}:shifted"], name=f"{name}:shift"),
                  helper.make_node("Exp", [f"{name}:shifted"], [f"{name}:exp"], name=f"{name}:exp"),
                  helper.make_node("ReduceSum", [f"{name}:exp", axes], [f"{name}:sum"], keepdims=1,
                                   name=f"{name}:sum"),
                  helper.make_node("Div", [f"{name}:exp", f"{name}:sum"], [y], name=f"{name}:div")]
    if written_out:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), axes))
    return model


def is_grayscale(rgb: np.ndarray) -> bool:
    sample = rgb[::4, ::4]
    return float((sample.max(2) - sample.min(2)).mean()) < GRAY_SPREAD


@dataclass(frozen=True)
class Specialist:
    """The network for the images the engine flags with one condition;
    ``blended``: its probabilities are averaged with the main network's
    rather than used alone."""

    path: Path
    blended: bool = False


class OnnxParsingBackend:
    """Input: normalised RGB + pose prior channels; output: softmax over FINE_LABELS.
    Images the engine flags with a condition in ``specialists`` go to that
    condition's network, and with ``gray_path`` other black-and-white images to
    that one.  Each is loaded on its first image, so a service that never sees
    one never holds it, and only one of them is held at a time: a session costs
    ~50-100 MB and loads in ~80 ms, and such photos are few."""

    needs_pose = True

    def __init__(self, path: Path = DEFAULT_MODEL, threads: int = 0, gray_path: Path | None = None,
                 specialists: Mapping[str, Specialist] | None = None) -> None:
        self._threads = threads
        self._session, self.card = self._load(path)
        self._mean = np.array(self.card["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.array(self.card["std"], np.float32).reshape(3, 1, 1)
        self._gray_path, self._specialists = gray_path, dict(specialists or {})
        self._specialist: tuple[Path, ort.InferenceSession] | None = None
        self._specialist_lock = threading.Lock()

    def _load(self, path: Path) -> tuple[ort.InferenceSession, dict[str, Any]]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory arena: it keeps each session's largest activations for good
        # (two sessions held ~140 MB more after a 4000 px photo), for no
        # measurable speed on this network.
        opts.enable_cpu_mem_arena = False
        model = unrolled_softmax(onnx.load(str(path))).SerializeToString()
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        card = json.loads(path.with_suffix(".json").read_text())
        if tuple(card["labels"]) != FINE_LABELS:
            raise ValueError(f"{path} predicts {card['labels']}, not the current taxonomy")
        return session, card

    def _session_for(self, rgb: np.ndarray, condition: Condition) -> tuple[ort.InferenceSession, bool]:
        """The session for ``rgb`` and whether to blend it with the main one."""
        specialist = self._specialists.get(condition) if condition else None
        if specialist is None and self._gray_path is not None and is_grayscale(rgb):
            specialist = Specialist(self._gray_path)
        if specialist is None:
            return self._session, False
        path = specialist.path
        with self._specialist_lock:
            if self._specialist is None or self._specialist[0] != path:
                self._specialist = None  # the other one's memory is freed before this one is loaded
                session, card = self._load(path)
                if (card["mean"], card["std"], card["prior_channels"]) != (
                        self.card["mean"], self.card["std"], self.card["prior_channels"]):
                    raise ValueError(f"{path} takes other inputs than {self.card['name']}")
                self._specialist = (path, session)
            return self._specialist[1], specialist.blended

    def probabilities(self, rgb: np.ndarray, pose: Pose | None, condition: Condition = None) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = (rgb.transpose(2, 0, 1).astype(np.float32) / 255 - self._mean) / self._std
        priors = render_priors(pose, h, w) if pose is not None else np.zeros(
            (self.card["prior_channels"], h, w), np.float32)
        inp = np.concatenate([x, priors], 0)[None]
        session, blended = self._session_for(rgb, condition)
        probs = session.run(None, {"input": inp})[0][0]
        if blended:
            probs = (probs + self._session.run(None, {"input": inp})[0][0]) / 2
        return probs
