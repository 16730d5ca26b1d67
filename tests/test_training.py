"""Training-side rules the shipped model depends on (no dataset needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
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


def test_a_tags_only_photo_teaches_only_which_garments_are_absent() -> None:
    """``pseudo_label --tags-only`` leaves every pixel unlabelled: its tagged
    garments (possibly cropped away) are unknown, its untagged ones absent."""
    from training.train import IGNORE

    labels = torch.full((1, 40, 40), IGNORE, dtype=torch.uint8)
    tags = torch.from_numpy(_tags("dress", "skin", "hair", "bag"))[None]
    grad = _presence_gradient(labels, tags)
    assert grad[FINE_INDEX["dress"]] == grad[FINE_INDEX["bag"]] == 0
    for untagged in ("upper", "skirt", "pants", "outerwear"):
        assert grad[FINE_INDEX[untagged]] > 0


def _probabilities(**fine: float) -> np.ndarray:
    """(K, 1, 1) teacher probabilities of one pixel."""
    probs = np.zeros((len(FINE_LABELS), 1, 1), np.float32)
    for name, p in fine.items():
        probs[FINE_INDEX[name]] = p
    return probs


def _tags(*names: str) -> np.ndarray:
    from training.pseudo_label import allowed_labels

    return allowed_labels(list(names))


def test_pseudo_label_takes_the_tagged_garment_for_an_untagged_one() -> None:
    """CCP tags "dress" and "sweater" (no skirt) where the teacher sees a skirt
    under a sweater: the skirt pixels become dress, not unlabelled."""
    from training.pseudo_label import constrained_labels

    skirt_pixel = _probabilities(skirt=0.8, dress=0.1, upper=0.05, background=0.05)
    label = constrained_labels(skirt_pixel, _tags("dress", "sweater", "skin"), 0.6)
    assert label[0, 0] == FINE_INDEX["dress"]


def test_pseudo_label_splits_an_untagged_dress_by_the_teacher_preference() -> None:
    """Tags "top" and "skirt", teacher says dress: the bodice becomes upper and
    the lower part skirt, as the teacher ranks those two at each pixel."""
    from training.pseudo_label import constrained_labels

    tags = _tags("top", "skirt", "skin")
    bodice = _probabilities(dress=0.85, upper=0.1, skirt=0.01, body=0.04)
    lower = _probabilities(dress=0.85, upper=0.01, skirt=0.1, body=0.04)
    assert constrained_labels(bodice, tags, 0.6)[0, 0] == FINE_INDEX["upper"]
    assert constrained_labels(lower, tags, 0.6)[0, 0] == FINE_INDEX["skirt"]


def test_pseudo_label_leaves_untagged_non_garments_out() -> None:
    """Only garments trade places: a bag the tags do not mention stays unlabelled."""
    from training.pseudo_label import constrained_labels
    from training.train import IGNORE

    bag_pixel = _probabilities(bag=0.9, upper=0.05, background=0.05)
    assert constrained_labels(bag_pixel, _tags("top", "skin"), 0.6)[0, 0] == IGNORE


def test_pseudo_picks_match_the_annotated_dress_and_skirt_frequencies() -> None:
    """Balanced sampling draws each dress/skirt combination of the unannotated
    photos as often as it occurs among the annotated ones."""
    from training.train import balancing_weights

    def photos(n_dress: int, n_skirt: int, n_neither: int) -> torch.Tensor:
        presence = torch.zeros(n_dress + n_skirt + n_neither, len(FINE_LABELS), dtype=torch.bool)
        presence[:n_dress, FINE_INDEX["dress"]] = True
        presence[n_dress:n_dress + n_skirt, FINE_INDEX["skirt"]] = True
        presence[:, FINE_INDEX["background"]] = True
        return presence

    annotated, unannotated = photos(29, 17, 54), photos(19, 29, 52)
    weights = balancing_weights(annotated, unannotated, ["dress", "skirt"])
    share = weights / weights.sum()
    assert share[:19].sum().item() == pytest.approx(0.29)
    assert share[19:48].sum().item() == pytest.approx(0.17)
    assert share[48:].sum().item() == pytest.approx(0.54)
    # Photos of one combination stay equally likely.
    assert torch.all(share[:19] == share[0])


def test_lovasz_loss_is_one_minus_the_eval_miou_of_a_hard_prediction() -> None:
    """On one-hot predictions the loss is exactly 1 - mIoU over the eval classes
    present (tops = outerwear + upper, legwear ignored), so it trains for the
    figure the eval command reports."""
    from clothseg.engine.evaluation import fine_to_eval_lut
    from training.train import IGNORE, lovasz_loss

    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, len(FINE_LABELS), (2, 24, 16), generator=gen)
    target[0, :4] = IGNORE
    pred = torch.randint(0, len(FINE_LABELS), (2, 24, 16), generator=gen)
    logits = torch.nn.functional.one_hot(pred, len(FINE_LABELS)).permute(0, 3, 1, 2).float() * 50
    lut = torch.from_numpy(fine_to_eval_lut()).long()
    valid = (target != IGNORE) & (target != FINE_INDEX["legwear"])
    g, p = lut[target[valid]], lut[pred[valid]]
    iou = [((g == c) & (p == c)).sum() / ((g == c) | (p == c)).sum() for c in range(9) if (g == c).any()]
    assert lovasz_loss(logits, target).item() == pytest.approx(1 - torch.stack(iou).mean().item(), abs=1e-5)
    # A better guess for the pixels of the tops class lowers the loss.
    soft = (logits / 50).requires_grad_(True)
    lovasz_loss(soft, target).backward()
    tops = target == FINE_INDEX["upper"]
    assert (soft.grad[:, FINE_INDEX["upper"]][tops] < 0).all()


def test_soft_teacher_targets_follow_the_tags_and_sum_to_one() -> None:
    """Distillation targets: an untagged garment's probability goes to the tagged
    ones, an untagged non-garment's is dropped, and each pixel sums to one."""
    from training.pseudo_label import constrained_probabilities, soft_target

    pixel = _probabilities(dress=0.5, upper=0.2, skirt=0.1, bag=0.1, body=0.1)
    soft = constrained_probabilities(pixel, _tags("top", "skirt", "skin"))[:, 0, 0]
    assert soft.sum() == pytest.approx(1.0)
    assert soft[FINE_INDEX["dress"]] == 0 and soft[FINE_INDEX["bag"]] == 0
    # The dress's 0.5 is shared 2:1 between upper and skirt, as the teacher ranks them.
    assert soft[FINE_INDEX["upper"]] == pytest.approx(2 * soft[FINE_INDEX["skirt"]], rel=1e-4)
    # Stored at half size (odd sizes rounded up) as uint8 0-255.
    stored = soft_target(np.repeat(np.repeat(pixel, 5, 1), 3, 2))
    assert stored.shape == (len(FINE_LABELS), 3, 2) and stored.dtype == np.uint8
    assert stored[FINE_INDEX["dress"], 2, 1] == round(0.5 * 255)


def test_augmented_soft_targets_stay_aligned_with_the_labels() -> None:
    """The half-size teacher probabilities go through the same random affine as
    the photo and its labels: where a crop pixel is labelled dress, the warped
    target says dress too."""
    from clothseg.engine.priors import PRIOR_CHANNELS
    from training.train import PAD_H, PAD_W, augment, distillation_loss

    torch.manual_seed(0)
    labels = torch.full((4, PAD_H, PAD_W), FINE_INDEX["background"], dtype=torch.uint8)
    labels[:, 100:300, 80:240] = FINE_INDEX["dress"]
    soft = torch.nn.functional.one_hot(labels[:, ::2, ::2].long(), len(FINE_LABELS)).permute(0, 3, 1, 2)
    images = torch.zeros(4, 3, PAD_H, PAD_W, dtype=torch.uint8)
    priors = torch.zeros(4, PRIOR_CHANNELS, PAD_H, PAD_W, dtype=torch.uint8)
    _, lab, warped = augment(images, priors, labels, 160, 112, (soft * 255).to(torch.uint8))
    dress = lab == FINE_INDEX["dress"]
    assert dress.any()
    assert (warped[:, FINE_INDEX["dress"]][dress] > 0.45).float().mean() > 0.97
    # The loss is lowest for a network that predicts the targets.
    exact = torch.log(warped.clamp_min(1e-4))
    assert distillation_loss(exact, warped) < distillation_loss(torch.zeros_like(exact), warped)


@pytest.mark.parametrize("encoder", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_pretrained_encoder_takes_every_imagenet_weight(encoder: str) -> None:
    """Every layer of the EfficientNet-Lite checkpoint but its classifier lands in
    the encoder, shape for shape, and every encoder parameter comes from it."""
    from training.model import ParsingNet
    from training.pretrained import _block_modules, _target_name, lite_state_dict
    from training.train import IN_CHANNELS

    net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), encoder=encoder)
    target = net.state_dict()
    source = lite_state_dict(encoder)
    blocks = _block_modules(encoder)
    mapped = {}
    for key, value in source.items():
        name = _target_name(key, blocks)
        if name is not None and not key.endswith("num_batches_tracked"):
            mapped[name] = key
            if name != "stem.0.0.weight":  # our stem also takes the pose priors
                assert target[name].shape == value.shape, key
    encoder = {k for k in target if k.split(".")[0] in ("stem", "s4", "s8", "s16", "s32")
               and not k.endswith("num_batches_tracked")}
    assert set(mapped) == encoder
    assert not {k for k in source if _target_name(k, blocks) is None} - {
        k for k in source if k.startswith(("_conv_head", "_bn1", "_fc"))}


def test_pretrained_stem_computes_lite0_on_our_normalisation() -> None:
    """Lite0 was trained on RGB in [-1, 1]; our input is ImageNet-normalised RGB plus
    pose priors.  After loading, the stem gives what Lite0's stem gives on its own
    input (inside the border, where zero padding means different colours), whatever
    the priors: they start with zero weights."""
    import torch.nn.functional as F

    from training.model import ParsingNet
    from training.pretrained import lite_state_dict, load_lite
    from training.train import IN_CHANNELS, MEAN, STD, normalise

    net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), encoder="efficientnet-lite0").eval()
    load_lite(net, MEAN, STD)
    source = lite_state_dict("efficientnet-lite0")
    torch.manual_seed(0)
    rgb = torch.rand(1, 3, 64, 48)
    priors = torch.rand(1, IN_CHANNELS - 3, 64, 48)
    lite_input = (rgb * 255 - 127) / 128
    expected = F.relu6(F.batch_norm(
        F.conv2d(lite_input, source["_conv_stem.weight"], stride=2, padding=1),
        source["_bn0.running_mean"], source["_bn0.running_var"], source["_bn0.weight"], source["_bn0.bias"],
        eps=1e-3))
    with torch.no_grad():
        got = net.stem[0](normalise(rgb, priors))
    torch.testing.assert_close(got[:, :, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1], atol=1e-4, rtol=1e-4)


def _synthetic_cache(folder: Path, photos: int) -> None:
    """A training cache in training/prepare.py's format: a figure (hair, face,
    upper, pants, shoes) on a noisy background, shifted a little per photo."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for n in range(photos):
        label = np.zeros((512, 200), np.uint8)
        x = 40 + 3 * n
        for name, (top, bottom) in {"hair": (40, 80), "face": (80, 130), "upper": (130, 280),
                                    "pants": (280, 450), "shoes": (450, 490)}.items():
            label[top:bottom, x:x + 100] = FINE_INDEX[name]
        image = (rng.integers(0, 30, (512, 200, 3)) + 12 * label[..., None]).astype(np.uint8)
        np.savez(folder / f"{n + 1:04d}.npz", image=image, priors=np.zeros((9, 512, 200), np.uint8), label=label)


def _train(monkeypatch: pytest.MonkeyPatch, cache: Path, run: Path, epochs: int) -> None:
    """``training.train`` on a synthetic cache: 128x96 crops, batches of 4."""
    from training import train

    monkeypatch.setattr("sys.argv", ["train", "--cache", str(cache), "--run", str(run), "--batch", "4", "--height",
                                     "128", "--width", "96", "--val-every", "1", "--warmup-epochs", "0",
                                     "--epochs", str(epochs)])
    train.main()


def test_training_resumes_and_the_export_records_the_last_validation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from training import export

    cache, run, model = tmp_path / "cache", tmp_path / "run", tmp_path / "model.onnx"
    _synthetic_cache(cache, 20)  # every 9th is validation: 17 training photos, 3 validation
    _train(monkeypatch, cache, run, epochs=1)
    assert torch.load(run / "last.pt", weights_only=False)["state"]["step"] == 4  # 17 // 4 batches

    _train(monkeypatch, cache, run, epochs=2)  # the same run, one epoch longer
    assert "resumed at step 4" in capsys.readouterr().out
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [0, 1]

    monkeypatch.setattr("sys.argv", ["export", "--checkpoint", str(run / "last.pt"), "--out", str(model)])
    export.main()
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["validation_at_training_resolution"] == log[-1]
    assert card["training"]["epochs"] == 2


def test_a_float16_export_is_half_the_file_with_the_same_probabilities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from training import export
    from training.train import IN_CHANNELS

    cache, run = tmp_path / "cache", tmp_path / "run"
    _synthetic_cache(cache, 10)
    _train(monkeypatch, cache, run, epochs=1)
    probs = {}
    for name, flags in (("float32", []), ("float16", ["--float16"])):
        model = tmp_path / f"{name}.onnx"
        monkeypatch.setattr("sys.argv", ["export", "--checkpoint", str(run / "last.pt"), "--out", str(model), *flags])
        export.main()
        x = np.random.default_rng(0).normal(size=(1, IN_CHANNELS, 128, 96)).astype(np.float32)
        probs[name] = ort.InferenceSession(str(model)).run(None, {"input": x})[0]
    size = {name: (tmp_path / f"{name}.onnx").stat().st_size for name in probs}
    assert size["float16"] < 0.55 * size["float32"]
    assert np.abs(probs["float16"] - probs["float32"]).max() < 0.01


def test_face_labels_reach_the_hairline_and_stop_at_the_neck() -> None:
    from training.prepare import extend_face_to_hairline

    hair, face, body = FINE_INDEX["hair"], FINE_INDEX["face"], FINE_INDEX["body"]
    fine = np.zeros((120, 80), np.uint8)
    fine[10:30, 20:60] = hair
    fine[30:40, 25:55] = body  # forehead: the oval Face Mesh finds starts at the brow
    fine[40:70, 25:55] = face
    fine[70:100, 32:48] = body  # neck
    fine[40:90, 5:15] = body  # a hand beside the face, not joined to it
    out = extend_face_to_hairline(fine)
    assert (out[30:40, 25:55] == face).all()
    assert (out[70:100, 32:48] == body).all() and (out[40:90, 5:15] == body).all()
    assert (out[10:30, 20:60] == hair).all()


def _framed_samples(framings: frozenset[str], with_priors: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """64 noisy photos of one labelled person augmented with ``framings``: RGB
    in [0, 1] and labels; ``with_priors``: the pose priors too (all 1 on the
    photo before augmentation), as a third tensor."""
    from training.train import MEAN, PAD_H, PAD_W, STD, augment

    torch.manual_seed(0)
    n = 64
    images = torch.randint(0, 256, (n, PAD_H, PAD_W, 3), dtype=torch.uint8).permute(0, 3, 1, 2).contiguous()
    priors = torch.full((n, 9, PAD_H, PAD_W), 255 if with_priors else 0, dtype=torch.uint8)
    labels = torch.zeros(n, PAD_H, PAD_W, dtype=torch.uint8)
    labels[:, 40:470, 110:240] = FINE_INDEX["upper"]
    labels[:, 40:110, 140:210] = FINE_INDEX["face"]
    labels[:, 255:470, 110:240] = FINE_INDEX["pants"]  # hips down
    x, y = augment(images, priors, labels, 320, 224, framings=framings)[:2]
    assert x.shape == (n, 12, 320, 224) and y.shape == (n, 320, 224)
    return (x[:, :3] * STD + MEAN, y, x[:, 3:]) if with_priors else (x[:, :3] * STD + MEAN, y)


def _backdrop_spread(rgb: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per sample with enough background: the spread of its background pixels (studio backdrops are flat)."""
    background = (y == FINE_INDEX["background"]).unsqueeze(1).expand_as(rgb)
    return [rgb[i][background[i]].std().item() for i in range(len(y)) if background[i].sum() > 3000]


def _gray_count(rgb: torch.Tensor) -> int:
    return int(((rgb[:, 0] - rgb[:, 1]).abs().amax((1, 2)) < 1e-4).sum())


def _shows_a_person(y: torch.Tensor) -> torch.Tensor:
    """Per sample: whether any pixel is labelled other than background (not a person-free sample)."""
    return (y != FINE_INDEX["background"]).flatten(1).any(1)


def _face_rows(y: torch.Tensor) -> list[float]:
    """Mean row of the face in each sample that shows one: head-to-hips crops put it high."""
    face = FINE_INDEX["face"]
    return [(y[i] == face).nonzero()[:, 0].float().mean().item() for i in range(len(y)) if (y[i] == face).sum() > 200]


def test_framing_augmentation_makes_half_body_studio_and_gray_samples() -> None:
    from training.train import FRAMING_PARTS

    rgb, y = _framed_samples(FRAMING_PARTS)
    spread = _backdrop_spread(rgb, y)
    assert min(spread) < 0.05 < max(spread)  # some studio backdrops among noisy street ones
    assert 0 < _gray_count(rgb) < len(y) // 3
    assert min(_face_rows(y)) < 60  # head-to-hips crops: the face high in a frame filled by the person


def test_framing_parts_are_chosen_one_by_one() -> None:
    from training.train import framing_parts

    assert framing_parts("gray, skin") == {"gray", "skin"}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown framing parts"):
        framing_parts("gray,sepia")
    rgb, y = _framed_samples(framing_parts("gray"))
    assert _gray_count(rgb) > 0
    assert min(_backdrop_spread(rgb, y)) > 0.05  # no studio backdrop
    # No half-body crop: the same windows as no framing at all (person-free samples aside).
    y_plain = _framed_samples(frozenset())[1]
    person = _shows_a_person(y) & _shows_a_person(y_plain)
    assert int(person.sum()) > len(y) // 2 and torch.equal(y[person], y_plain[person])


def test_the_cut_part_frames_most_people_without_head_or_feet() -> None:
    """With ``cut`` many samples show a person cut at the hips: head to hips
    (the face, little below the hips) or hips to feet (no face, mostly below
    the hips), which the plain windows hardly ever do; a person without a head
    mostly comes without pose priors, as MediaPipe finds no pose in most such
    photos, and one with a head mostly with them."""
    from training.train import IGNORE

    def kinds(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        person = ((y != FINE_INDEX["background"]) & (y != IGNORE)).flatten(1).sum(1).clamp(min=1)
        face = (y == FINE_INDEX["face"]).flatten(1).any(1)
        below_hips = (y == FINE_INDEX["pants"]).flatten(1).sum(1) / person
        return face & (below_hips < 0.3), ~face & (below_hips > 0.8)

    _, y, priors = _framed_samples(frozenset({"cut"}), with_priors=True)
    head_to_hips, hips_to_feet = kinds(y)
    plain_head_to_hips, plain_hips_to_feet = kinds(_framed_samples(frozenset())[1])
    assert int(head_to_hips.sum()) >= 8 and int(plain_head_to_hips.sum()) <= 1
    assert int(hips_to_feet.sum()) >= int(plain_hips_to_feet.sum()) + 5
    without_priors = priors.flatten(1).amax(1) == 0
    assert int((hips_to_feet & without_priors).sum()) > int(hips_to_feet.sum()) // 2
    assert int((head_to_hips & without_priors).sum()) <= int(head_to_hips.sum()) // 3


def test_the_blur_part_puts_some_samples_out_of_focus() -> None:
    """With ``blur`` some samples (not most) are the same photo blurred: their
    neighbouring pixels differ far less; the others are untouched."""
    rgb, y = _framed_samples(frozenset({"blur"}))
    rgb_plain, y_plain = _framed_samples(frozenset())
    # Person-free samples are drawn after the blur, so they differ between the two calls.
    kept = _shows_a_person(y) & _shows_a_person(y_plain)

    def roughness(x: torch.Tensor) -> torch.Tensor:
        return (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean((1, 2, 3))

    blurred = kept & (roughness(rgb) < 0.7 * roughness(rgb_plain))
    untouched = kept & torch.isclose(rgb, rgb_plain, atol=1e-6).flatten(1).all(1)
    assert 0 < int(blurred.sum()) < len(y) // 2
    assert int(blurred.sum()) + int(untouched.sum()) == int(kept.sum())
