"""The engine's contract, the label mapping, the ONNX export and a quality floor."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CCP, PHOTO
from PIL import Image

from clothseg.engine import Engine, SegmentOptions, load_engine
from clothseg.engine.evaluation import EvalResult, annotated_stems, ccp_label_names, evaluate
from clothseg.engine.onnx_backend import (
    BLUR_MODEL,
    CUT_MODEL,
    DEFAULT_MODEL,
    GRAY_MODEL,
    OnnxParsingBackend,
    Specialist,
    is_grayscale,
    unrolled_softmax,
)
from clothseg.engine.taxonomy import (
    API_CLASS_MEMBERS,
    API_CLASSES,
    CCP_IGNORED,
    CCP_TO_FINE,
    CLASS_TYPES,
    CLOTHING_CATEGORIES,
    EVAL_CLASSES,
    EVAL_MEMBERS,
    FINE_LABELS,
)
from clothseg.imaging import clothing_zip


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load_engine(threads=2)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


# -- the contract -------------------------------------------------------------------
@pytest.mark.parametrize("class_type", [1, 2, 3, 4])
def test_masks_cover_the_class_set_at_input_size(engine: Engine, rgb: np.ndarray, class_type: int) -> None:
    seg = engine.segment(rgb, SegmentOptions(class_type=class_type))
    assert tuple(seg.class_masks) == CLASS_TYPES[class_type]
    assert seg.clothing_masks == {}
    for mask in seg.class_masks.values():
        assert mask.shape == rgb.shape[:2] and mask.dtype == np.uint8


@pytest.mark.parametrize(("height", "width"), [(333, 517), (1001, 377), (64, 48), (2100, 1400)])
def test_any_input_size_gives_masks_of_that_size(engine: Engine, rgb: np.ndarray, height: int, width: int) -> None:
    img = np.asarray(Image.fromarray(rgb).resize((width, height)))
    for quality, detail in ((1, 1), (2, 2)):
        seg = engine.segment(img, SegmentOptions(class_type=4, quality=quality, detail_mode=detail))
        for mask in seg.class_masks.values():
            assert mask.shape == (height, width)


@pytest.mark.parametrize(("quality", "detail_mode"), [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_masks_are_soft_and_find_the_person(engine: Engine, rgb: np.ndarray, quality: int, detail_mode: int) -> None:
    seg = engine.segment(rgb, SegmentOptions(class_type=4, quality=quality, detail_mode=detail_mode))
    clothes = seg.class_masks["clothes"]
    assert clothes.min() == 0 and clothes.max() == 255
    assert ((clothes > 10) & (clothes < 245)).sum() > 100  # soft edges
    assert 0.05 < (clothes >= 128).mean() < 0.6
    assert seg.person_fraction > 0.1


def test_quality_2_and_detail_2_agree_with_quality_1(engine: Engine, rgb: np.ndarray) -> None:
    base = engine.segment(rgb, SegmentOptions(class_type=1)).class_masks["clothes"] >= 128
    for opts in (SegmentOptions(class_type=1, quality=2), SegmentOptions(class_type=1, detail_mode=2)):
        other = engine.segment(rgb, opts).class_masks["clothes"] >= 128
        iou = (base & other).sum() / (base | other).sum()
        assert iou > 0.8


def test_flat_image_is_an_empty_result(engine: Engine) -> None:
    seg = engine.segment(np.full((300, 200, 3), 128, np.uint8), SegmentOptions(class_type=4))
    assert seg.empty and seg.class_masks == {} and seg.person_fraction < 0.002


def test_output_type_2_and_3_give_clothing_categories(engine: Engine, rgb: np.ndarray) -> None:
    only_zip = engine.segment(rgb, SegmentOptions(class_type=4, output_type=2))
    assert only_zip.class_masks == {} and only_zip.clothing_masks
    both = engine.segment(rgb, SegmentOptions(class_type=4, output_type=3))
    assert set(both.class_masks) == set(API_CLASSES)
    assert set(both.clothing_masks) <= set(CLOTHING_CATEGORIES)
    data = clothing_zip(both.clothing_masks)
    zf = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(zf.read("manifest.json"))["categories"]
    assert [e["category"] for e in manifest] == list(both.clothing_masks)
    for e in manifest:
        png = np.asarray(Image.open(io.BytesIO(zf.read(e["file"]))))
        assert np.array_equal(png, both.clothing_masks[e["category"]])


@pytest.mark.parametrize("detail_mode", [1, 2])
def test_composite_classes_contain_their_parts(engine: Engine, rgb: np.ndarray, detail_mode: int) -> None:
    """Sums of probabilities: a composite is at least each part, edges snapped or not."""
    options = SegmentOptions(class_type=4, output_type=3, detail_mode=detail_mode)
    seg = engine.segment(rgb, options)
    m = seg.class_masks
    for whole, parts in (("head", ("hair", "face")), ("clothes", ("tops", "bottoms", "dress"))):
        for part in parts:
            assert (m[whole] >= m[part]).all(), (whole, part)
    for category, whole in (("upper_top", "tops"), ("pants", "bottoms"), ("skirt", "clothes")):
        if category in seg.clothing_masks:
            assert (m[whole] >= seg.clothing_masks[category]).all(), (whole, category)


# -- the label mapping -----------------------------------------------------------------
def test_every_ccp_label_maps_into_the_taxonomy() -> None:
    names = ccp_label_names(CCP)
    assert len(names) == 59
    for name in names:
        assert CCP_TO_FINE[name] in FINE_LABELS
    assert set(names) >= CCP_IGNORED


def test_class_sets_are_the_documented_ones() -> None:
    assert CLASS_TYPES[1] == ("clothes", "tops", "bottoms", "dress", "acc")
    assert CLASS_TYPES[2] == ("clothes", "tops", "bottoms", "dress", "bag", "shoes", "acc")
    assert CLASS_TYPES[3] == ("hair", "face", "head", "body")
    assert set(CLASS_TYPES[4]) == set(API_CLASSES) and len(API_CLASSES) == 12


def test_every_fine_label_is_in_an_api_class_and_one_eval_class() -> None:
    covered = {f for members in API_CLASS_MEMBERS.values() for f in members}
    assert covered == set(FINE_LABELS) - {"background"}
    eval_of = [f for members in EVAL_MEMBERS.values() for f in members]
    assert sorted(eval_of) == sorted(FINE_LABELS)
    assert set(API_CLASS_MEMBERS["head"]) == {"hair", "face", "headwear", "eyewear"}
    assert set(API_CLASS_MEMBERS["tops"]) | set(API_CLASS_MEMBERS["bottoms"]) | set(
        API_CLASS_MEMBERS["dress"]) <= set(API_CLASS_MEMBERS["clothes"])


@pytest.mark.parametrize("model", [DEFAULT_MODEL, GRAY_MODEL, BLUR_MODEL, CUT_MODEL],
                         ids=["colour", "gray", "blur", "cut"])
def test_bundled_model_card_matches_the_taxonomy(model: Path) -> None:
    card = json.loads(model.with_suffix(".json").read_text())
    assert tuple(card["labels"]) == FINE_LABELS
    assert model.stat().st_size <= 20_000_000  # the limit: 20 MB


def _jpeg_round_trip(rgb: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=85)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_black_and_white_and_out_of_focus_photos_go_to_the_models_trained_for_them(rgb: np.ndarray) -> None:
    """A black-and-white photo (even saved as a colour JPEG) is parsed by the
    model trained for it, and so is one the engine found out of focus; one
    the engine found without a head by the colour model and the cut model
    together (their mean); sharp colour photos, faded or sepia ones
    included, by the colour model."""
    gray = _jpeg_round_trip(np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None], 3, 2))
    luminance = gray[:, :, :1].astype(np.float32) / 255
    sepia = (luminance * np.array([[[240, 200, 150]]], np.float32)).astype(np.uint8)
    faded = (rgb.astype(np.float32) * 0.4 + luminance * 255 * 0.6).astype(np.uint8)
    assert is_grayscale(gray) and not is_grayscale(sepia) and not is_grayscale(faded) and not is_grayscale(rgb)
    small = np.ascontiguousarray(np.asarray(Image.fromarray(gray).resize((128, 192))))
    colour_small = np.ascontiguousarray(np.asarray(Image.fromarray(rgb).resize((128, 192))))
    routed = OnnxParsingBackend(DEFAULT_MODEL, 1, gray_path=GRAY_MODEL, specialists={
        "blurred": Specialist(BLUR_MODEL), "headless": Specialist(CUT_MODEL, blended=True)})
    colour_only, gray_only = OnnxParsingBackend(DEFAULT_MODEL, 1), OnnxParsingBackend(GRAY_MODEL, 1)
    blur_only, cut_only = OnnxParsingBackend(BLUR_MODEL, 1), OnnxParsingBackend(CUT_MODEL, 1)
    assert np.allclose(routed.probabilities(small, None), gray_only.probabilities(small, None), atol=1e-5)
    assert not np.allclose(routed.probabilities(small, None), colour_only.probabilities(small, None), atol=1e-3)
    for image in (colour_small, small):  # out of focus, in colour or not
        assert np.allclose(routed.probabilities(image, None, "blurred"), blur_only.probabilities(image, None),
                           atol=1e-5)
    assert not np.allclose(blur_only.probabilities(colour_small, None), colour_only.probabilities(colour_small, None),
                           atol=1e-3)
    assert np.allclose(routed.probabilities(colour_small, None), colour_only.probabilities(colour_small, None),
                       atol=1e-5)
    blend = (colour_only.probabilities(colour_small, None) + cut_only.probabilities(colour_small, None)) / 2
    assert np.allclose(routed.probabilities(colour_small, None, "headless"), blend, atol=1e-5)
    assert not np.allclose(blend, colour_only.probabilities(colour_small, None), atol=1e-3)


def test_an_underexposed_photo_is_parsed_with_its_levels_stretched(engine: Engine, rgb: np.ndarray) -> None:
    """The training photos all get bright somewhere; a photo that never does
    (underexposed: here at most 35% of white) is stretched until it does, for
    the network and for detail_mode 2's edges.  Other photos are left as they are."""
    from clothseg.engine.core import levelled

    dim = (rgb * 0.35).astype(np.uint8)
    stretched = levelled(dim)
    assert levelled(rgb) is rgb and levelled(stretched) is stretched
    assert 0.85 < np.percentile(np.asarray(Image.fromarray(stretched).convert("L")), 99) / 255 < 0.95
    assert not levelled(np.zeros((64, 48, 3), np.uint8)).any()
    options = SegmentOptions(class_type=4, detail_mode=2)
    as_sent, as_stretched = engine.segment(dim, options).class_masks, engine.segment(stretched, options).class_masks
    assert as_sent.keys() == as_stretched.keys()
    for name, mask in as_sent.items():
        assert np.array_equal(mask, as_stretched[name]), name


# -- export and quality ------------------------------------------------------------------
@pytest.mark.parametrize("model", [DEFAULT_MODEL, GRAY_MODEL, BLUR_MODEL, CUT_MODEL],
                         ids=["colour", "gray", "blur", "cut"])
def test_the_backend_gives_the_exported_models_probabilities(model: Path, rgb: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend runs each model with its softmax written out (onnxruntime's
    own Softmax kernel is slow over the channel axis): same probabilities as
    the graph as exported."""
    import onnx

    from clothseg.engine import onnx_backend

    assert not [n for n in unrolled_softmax(onnx.load(str(model))).graph.node if n.op_type == "Softmax"]
    small = np.ascontiguousarray(np.asarray(Image.fromarray(rgb).resize((128, 192))))
    written_out = OnnxParsingBackend(model, 1).probabilities(small, None)
    monkeypatch.setattr(onnx_backend, "unrolled_softmax", lambda graph: graph)
    as_exported = OnnxParsingBackend(model, 1).probabilities(small, None)
    np.testing.assert_allclose(written_out, as_exported, atol=1e-5)


@pytest.mark.parametrize("architecture", [{}, {"context": True}, {"encoder": "efficientnet-lite2"}],
                         ids=["plain", "context", "lite2"])
def test_onnx_export_matches_pytorch(tmp_path: Path, architecture: dict) -> None:
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.export import export
    from training.model import ParsingNet
    from training.train import IN_CHANNELS

    torch.manual_seed(0)
    net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), **architecture).eval()
    # Non-trivial BatchNorm statistics, as after training.
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # the image-level prior is active, as after training
        net.presence.scale.weight.uniform_(0.2, 1.0)
        net.presence.scale.weight[0] = 0  # a label whose prior is off
        net.presence.classify.bias[:2] = -200  # and labels the photo surely lacks
        if architecture.get("context"):  # and so is the self-attention
            net.context.out.weight.normal_(0, 0.1)
    path = tmp_path / "m.onnx"
    export(net, path, {"labels": list(FINE_LABELS)})
    x = torch.randn(1, IN_CHANNELS, 320, 224)
    with torch.no_grad():
        expected = net(x).softmax(1).numpy()
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_model_soup_averages_the_exported_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from training.export import export
    from training.model import ParsingNet
    from training.soup import average_models
    from training.train import IN_CHANNELS

    paths = []
    for seed, expand in ((0, 4), (1, 4), (2, 6)):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"m{seed}.onnx")
        export(ParsingNet(IN_CHANNELS, len(FINE_LABELS), expand=expand).eval(), paths[-1], {"labels": ["x"]})
    soup = tmp_path / "soup.onnx"
    average_models(paths[:2], soup)

    def weights(path: Path) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}

    a, b, mean = weights(paths[0]), weights(paths[1]), weights(soup)
    floats = [name for name in a if a[name].dtype.kind == "f"]
    assert floats and any(not np.array_equal(a[n], b[n]) for n in floats)
    for name in floats:
        np.testing.assert_allclose(mean[name], (a[name] + b[name]) / 2, rtol=1e-6, atol=1e-7)
    probs = ort.InferenceSession(str(soup)).run(None, {"input": np.zeros((1, IN_CHANNELS, 64, 48), np.float32)})[0]
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    assert json.loads(soup.with_suffix(".json").read_text()) == {"labels": ["x"], "soup": [str(p) for p in paths[:2]]}
    with pytest.raises(ValueError, match="not the architecture"):
        average_models(paths, tmp_path / "bad.onnx")


def test_model_soup_lifts_a_model_of_an_older_architecture(tmp_path: Path) -> None:
    """A run that grew the network (wider blocks, self-attention) is souped with
    the model it started from: that model first becomes the same function in the
    larger architecture."""
    torch = pytest.importorskip("torch")
    import onnx
    import onnxruntime as ort

    from training.export import export
    from training.model import ParsingNet
    from training.soup import average_models, lifted
    from training.train import IN_CHANNELS

    torch.manual_seed(0)
    old, grown = (ParsingNet(IN_CHANNELS, len(FINE_LABELS)).eval(),
                  ParsingNet(IN_CHANNELS, len(FINE_LABELS), expand=8, context=True).eval())
    with torch.no_grad():
        grown.context.out.weight.normal_(0, 0.1)
    paths = [tmp_path / "old.onnx", tmp_path / "grown.onnx"]
    for net, path in zip((old, grown), paths, strict=True):
        export(net, path, {"labels": list(FINE_LABELS), "architecture": net.architecture})
    x = torch.rand(1, IN_CHANNELS, 128, 96).numpy() * 2 - 1

    def run(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path)).run(None, {"input": x})[0]

    (tmp_path / "lifted").mkdir()
    np.testing.assert_allclose(run(lifted(paths[0], grown.architecture, tmp_path / "lifted")), run(paths[0]),
                               atol=1e-4)
    average_models([paths[1], paths[0]], tmp_path / "soup.onnx")
    assert len(onnx.load(str(tmp_path / "soup.onnx")).graph.initializer) == len(
        onnx.load(str(paths[1])).graph.initializer)
    soup = run(tmp_path / "soup.onnx")
    np.testing.assert_allclose(soup.sum(1), 1, atol=1e-4)
    assert not np.allclose(soup, run(paths[1]), atol=1e-3)


def test_ensemble_averages_its_members_in_half_their_size(tmp_path: Path) -> None:
    """training.ensemble: one file whose output is the mean of its members' probabilities, its
    weights stored as float16 (half the bytes), and each member can still be warm-started from."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.ensemble import join_models
    from training.export import export
    from training.model import ParsingNet
    from training.train import IN_CHANNELS
    from training.warmstart import load_exported

    nets, paths = [], []
    for seed, expand in ((0, 4), (1, 4), (2, 6)):
        torch.manual_seed(seed)
        nets.append(ParsingNet(IN_CHANNELS, len(FINE_LABELS), expand=expand).eval())
        paths.append(tmp_path / f"m{seed}.onnx")
        export(nets[-1], paths[-1], {"labels": list(FINE_LABELS), "architecture": nets[-1].architecture,
                                     "parameters": 10 + seed, "training": {"seed": seed}})
    joined = tmp_path / "ensemble.onnx"
    join_models(paths[:2], joined)
    x = torch.rand(1, IN_CHANNELS, 128, 96) * 2 - 1

    def run(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]

    members = [run(path) for path in paths[:2]]
    assert not np.allclose(members[0], members[1], atol=1e-2)
    np.testing.assert_allclose(run(joined), (members[0] + members[1]) / 2, atol=2e-3)  # float16 weights
    assert joined.stat().st_size < 0.55 * (paths[0].stat().st_size + paths[1].stat().st_size)
    card = json.loads(joined.with_suffix(".json").read_text())
    assert card["parameters"] == 21 and [m["training"] for m in card["ensemble"]] == [{"seed": 0}, {"seed": 1}]
    for member in (0, 1):
        net = ParsingNet(IN_CHANNELS, len(FINE_LABELS), **nets[member].architecture).eval()
        load_exported(net, joined, member=member)
        with torch.no_grad():
            np.testing.assert_allclose(net(x).softmax(1).numpy(), members[member], atol=2e-3)
    with pytest.raises(ValueError, match="one architecture"):
        join_models([paths[0], paths[2]], tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="no member 1"):
        load_exported(nets[0], paths[0], member=1)
    with pytest.raises(ValueError, match="name a member"):
        load_exported(nets[0], joined)


def bundled_members() -> list[int | None]:
    """The ``member`` arguments that load the bundled model: None for one network, each
    member of an ensemble (training.ensemble) in turn."""
    ensemble = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text()).get("ensemble")
    return [None] if ensemble is None else list(range(len(ensemble)))


@pytest.mark.parametrize("widen", [False, True, "context"], ids=["same", "widened", "context"])
def test_warm_start_reproduces_the_bundled_model(widen: bool | str) -> None:
    """Training resumes from the committed ONNX model (checkpoints do not outlive a
    session), also into a network with wider blocks or an added self-attention
    block: the reloaded network computes the same function, also after its
    BatchNorms are calibrated for training."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.model import ParsingNet
    from training.train import IN_CHANNELS
    from training.warmstart import calibrate_batchnorm, exported_architecture, load_exported

    architecture = exported_architecture(DEFAULT_MODEL)
    if widen is True:
        architecture = {**architecture, "expand": 2 * architecture["expand"],
                        "decoder_width": 2 * architecture["decoder_width"]}
    if widen == "context":
        architecture = {**architecture, "context": True}
    members = bundled_members()
    nets = [ParsingNet(IN_CHANNELS, len(FINE_LABELS), **architecture).eval() for _ in members]
    for member, net in zip(members, nets, strict=True):
        load_exported(net, DEFAULT_MODEL, new_modules=("context",), widen=widen is True, member=member)
    torch.manual_seed(0)
    x = torch.rand(1, IN_CHANNELS, 256, 160) * 2 - 1
    expected = ort.InferenceSession(str(DEFAULT_MODEL)).run(None, {"input": x.numpy()})[0]

    def mean_probabilities() -> np.ndarray:
        return np.mean([net(x).softmax(1).numpy() for net in nets], axis=0)

    with torch.no_grad():
        np.testing.assert_allclose(mean_probabilities(), expected, atol=1e-4)
        for net in nets:
            calibrate_batchnorm(net, [torch.rand(4, IN_CHANNELS, 256, 160) * 2 - 1])
        np.testing.assert_allclose(mean_probabilities(), expected, atol=1e-4)
        bn = nets[0].stem[0][1]
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_warm_start_refuses_a_network_it_cannot_hold() -> None:
    """Without ``widen`` the shapes must match; a narrower network, or one with
    another encoder, never fits."""
    pytest.importorskip("torch")
    from training.model import ParsingNet
    from training.train import IN_CHANNELS
    from training.warmstart import exported_architecture, load_exported

    architecture = exported_architecture(DEFAULT_MODEL)
    member = bundled_members()[0]
    width = architecture["decoder_width"]
    other = "efficientnet-lite0" if architecture["encoder"] != "efficientnet-lite0" else "efficientnet-lite2"
    with pytest.raises(ValueError, match="shape"):
        load_exported(ParsingNet(IN_CHANNELS, len(FINE_LABELS), **{**architecture, "decoder_width": 2 * width}),
                      DEFAULT_MODEL, member=member)
    with pytest.raises(ValueError, match="shape"):
        load_exported(ParsingNet(IN_CHANNELS, len(FINE_LABELS), **{**architecture, "decoder_width": width / 2}),
                      DEFAULT_MODEL, widen=True, member=member)
    with pytest.raises(ValueError, match="shape|not in this network"):
        load_exported(ParsingNet(IN_CHANNELS, len(FINE_LABELS), **{**architecture, "encoder": other}),
                      DEFAULT_MODEL, widen=True, member=member)


def test_quality_floor_on_validation_photos(engine: Engine) -> None:
    """Seven CCP validation photos (never trained on); the floor is well below the 0.65 target."""
    result = evaluate(engine, CCP, annotated_stems(CCP))
    assert result.images == 7
    assert result.miou > 0.4, result
    assert result.iou["background"] > 0.9 and result.iou["tops"] > 0.4


def test_validation_intervals_bracket_the_figures_and_widen_with_disagreeing_photos() -> None:
    """The report's 95% intervals: they contain the measured IoU, are reproducible, collapse when
    every photo scores alike and are wide for a class that only some photos get right."""
    k = len(EVAL_CLASSES)
    right = np.diag(np.full(k, 100)).astype(np.int64)
    wrong = right.copy()
    dress = EVAL_CLASSES.index("dress")
    wrong[dress, dress], wrong[dress, EVAL_CLASSES.index("tops")] = 0, 100  # dress taken for a top
    alike = EvalResult.from_photos(np.stack([right] * 10))
    assert alike.intervals()["dress"] == (1.0, 1.0) and alike.intervals()["miou"] == (1.0, 1.0)
    mixed = EvalResult.from_photos(np.stack([right] * 6 + [wrong] * 4))
    low, high = mixed.intervals()["dress"]
    assert low < mixed.iou["dress"] < high and high - low > 0.3
    assert mixed.intervals()["hair"] == (1.0, 1.0)
    assert mixed.intervals() == mixed.intervals(seed=0)
    with pytest.raises(ValueError, match="per-photo"):
        EvalResult.from_confusion(right, 1).intervals()


def test_eval_scores_a_model_against_the_bundled_one_on_the_same_photos() -> None:
    """What a retrainer runs to decide whether a model ships: both models on the same photos,
    with paired intervals; the bundled model against itself differs by nothing."""
    out = subprocess.run([sys.executable, "-m", "clothseg.cli", "eval", "--ccp", str(CCP), "--framing", "gray",
                          "--baseline-model", "bundled"], capture_output=True, text=True, check=True).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["framing"] == "gray" and report["images"] == report["baseline"]["images"] == 7
    assert report["baseline"]["iou"] == report["iou"]
    assert report["difference_95"]["miou"] == [0.0, 0.0]


def test_paired_intervals_say_whether_two_settings_differ_beyond_noise() -> None:
    """A setting that gets the dress of four more photos in ten right, on the same
    photos: the paired difference is positive for dress, exactly zero where both agree."""
    k = len(EVAL_CLASSES)
    right = np.diag(np.full(k, 100)).astype(np.int64)
    wrong = right.copy()
    dress = EVAL_CLASSES.index("dress")
    wrong[dress, dress], wrong[dress, EVAL_CLASSES.index("tops")] = 0, 100
    worse = EvalResult.from_photos(np.stack([right] * 6 + [wrong] * 4))
    better = EvalResult.from_photos(np.stack([right] * 10))
    low, high = better.intervals(baseline=worse)["dress"]
    assert 0 < low <= high
    assert better.intervals(baseline=worse)["hair"] == (0.0, 0.0)
    assert worse.intervals(baseline=worse)["miou"] == (0.0, 0.0)


def test_pose_of_a_large_photo_matches_the_photo_at_training_scale(rgb: np.ndarray) -> None:
    """A 4k photo gets the priors of the same photo at CCP's size, where the network learnt them."""
    from clothseg.engine.priors import POSE_SIDE, PoseEstimator

    estimator = PoseEstimator()
    big = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * 4, rgb.shape[0] * 4), Image.BICUBIC))
    small, large = estimator(rgb), estimator(big)
    assert small.landmarks is not None and large.landmarks is not None
    assert max(large.person_mask.shape) <= POSE_SIDE
    visible = small.landmarks[:, 2] > 0.5
    assert np.abs(small.landmarks[visible, :2] - large.landmarks[visible, :2]).max() < 0.02


def test_every_framing_moves_the_labels_with_the_pixels() -> None:
    """The framing suite's figures rest on this: in every framing the labelled
    pixels are the person's (a bright figure on a dark photo here)."""
    from clothseg.engine.framings import FRAMINGS, framed

    rng = np.random.default_rng(0)
    photos = []
    for i in range(4):
        rgb = rng.integers(0, 40, (240, 160, 3), dtype=np.uint8)
        labels = np.zeros((240, 160), np.uint8)
        labels[60 + i:230, 50:110] = 1 + i
        rgb[labels > 0] = 250
        photos.append((f"{i:04d}", rgb, labels))
    for name in FRAMINGS:
        people = 3 if name == "group" else 2 if name in ("two", "smaller") else 1
        for _, rgb, labels in framed(name, photos):
            assert rgb.shape[:2] == labels.shape and rgb.dtype == np.uint8, name
            person = labels > 0
            bright = {"dark": 120, "warm": 180}.get(name, 200)  # two stops under: 250 -> 133; warm: 198
            assert person.any() and rgb[person].mean() > bright, name
            columns = np.flatnonzero(person.any(0))
            assert (np.diff(columns) > 1).sum() + 1 == people, name
            if name == "close":  # two people, one partly in front of the other
                assert len(np.unique(labels[person])) == 2
