"""Third-party checkpoint adapters, each tested with a tiny random model the test makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clothseg.engine import SegmentOptions, load_engine
from clothseg.engine.adapters import SCHP_LABELS, label_matrix
from clothseg.engine.taxonomy import CLASS_TYPES, FINE_INDEX, FINE_LABELS

torch = pytest.importorskip("torch")

ATR = SCHP_LABELS["atr"]
FASHN = ("background", "face", "hair", "top", "dress", "skirt", "pants", "belt", "bag", "hat", "scarf",
         "glasses", "arms", "hands", "legs", "feet", "torso", "jewelry")


@pytest.mark.parametrize("labels", [ATR, FASHN, SCHP_LABELS["lip"], SCHP_LABELS["pascal"]])
def test_every_native_label_maps_to_exactly_one_fine_label(labels: tuple[str, ...]) -> None:
    m = label_matrix(labels)
    assert m.shape == (len(FINE_LABELS), len(labels))
    assert (m.sum(0) == 1).all()
    assert m[FINE_INDEX["background"], 0] == 1


def test_label_maps_put_garments_where_they_belong() -> None:
    lip = dict(zip(SCHP_LABELS["lip"], label_matrix(SCHP_LABELS["lip"]).argmax(0), strict=True))
    assert FINE_LABELS[lip["Coat"]] == "outerwear" and FINE_LABELS[lip["Left-shoe"]] == "shoes"
    assert FINE_LABELS[lip["Face"]] == "face" and FINE_LABELS[lip["Socks"]] == "legwear"


def _check_engine(model: str) -> None:
    engine = load_engine(model, threads=1)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    probs = engine.parse(rgb).full_probabilities()
    assert probs.shape[0] == len(FINE_LABELS)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    seg = engine.segment(rgb, SegmentOptions(class_type=4, output_type=3))
    if seg.class_masks:  # a random network may call everything background (-11)
        assert tuple(seg.class_masks) == CLASS_TYPES[4]
        assert all(m.shape == (120, 90) and m.dtype == np.uint8 for m in seg.class_masks.values())


@pytest.mark.parametrize("labels", [ATR, FASHN])
def test_segformer_folder_backend(tmp_path: Path, labels: tuple[str, ...]) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
        decoder_hidden_size=16, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )
    torch.manual_seed(0)
    transformers.SegformerForSemanticSegmentation(config).save_pretrained(tmp_path)
    _check_engine(f"segformer:{tmp_path}")


class TinySchp(torch.nn.Module):
    """Stands in for SCHP's output layout: parsing logits at 1/4 resolution."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("label_set", ["lip", "atr", "pascal"])
def test_schp_onnx_backend(tmp_path: Path, label_set: str) -> None:
    size = 473 if label_set == "lip" else 512
    path = tmp_path / "schp.onnx"
    torch.manual_seed(0)
    torch.onnx.export(TinySchp(len(SCHP_LABELS[label_set])).eval(), (torch.randn(1, 3, size, size),), str(path),
                      input_names=["input"], opset_version=17, dynamo=False)
    _check_engine(f"schp-{label_set}:{path}")
