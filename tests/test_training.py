"""Training-side rules the shipped model depends on (no dataset needed)."""

from __future__ import annotations

import pytest

from clothseg.engine.taxonomy import FINE_INDEX, FINE_LABELS

torch = pytest.importorskip("torch")


def _presence_gradient(labels: torch.Tensor, possible: torch.Tensor | None) -> torch.Tensor:
    from training.train import label_counts, presence_loss

    counts = label_counts(labels)
    presence = torch.zeros(labels.shape[0], len(FINE_LABELS), requires_grad=True)
    presence_loss(presence, counts, counts > 0 if possible is None else possible).backward()
    return presence.grad[0]


def test_presence_targets_of_an_annotated_crop() -> None:
    """Present: enough pixels; absent: no pixel; a few pixels: no target either way."""
    from training.train import IGNORE, PRESENT_PIXELS

    labels = torch.zeros(1, 40, 40, dtype=torch.uint8)
    labels[0, :10, :] = FINE_INDEX["dress"]
    labels[0, 10, : PRESENT_PIXELS // 2] = FINE_INDEX["bag"]
    labels[0, 30:, :] = IGNORE
    grad = _presence_gradient(labels, None)
    assert grad[FINE_INDEX["dress"]] < 0  # pushed towards "present"
    assert grad[FINE_INDEX["skirt"]] > 0  # pushed towards "absent"
    assert grad[FINE_INDEX["bag"]] == 0  # too small to say


def test_presence_targets_of_a_pseudo_labelled_crop_follow_its_tags() -> None:
    """A tagged label the pseudo-label left out (unconfident, or cropped away) is
    unknown, not absent; an untagged one is absent."""
    labels = torch.zeros(1, 40, 40, dtype=torch.uint8)
    labels[0, :10, :] = FINE_INDEX["upper"]
    tags = torch.zeros(1, len(FINE_LABELS), dtype=torch.bool)
    for name in ("background", "upper", "skirt"):
        tags[0, FINE_INDEX[name]] = True
    grad = _presence_gradient(labels, tags)
    assert grad[FINE_INDEX["upper"]] < 0
    assert grad[FINE_INDEX["skirt"]] == 0
    assert grad[FINE_INDEX["dress"]] > 0
