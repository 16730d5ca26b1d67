"""Framings: the photos users send, built from annotated photos and their labels.

CCP's photos are full-body street shots with the person filling the frame.  A
framing re-frames each photo (and its label map, pixel for pixel) the way other
users' photos look: the person small in a wide 16:9 street frame, head to hips
only, hips to feet only, a centre square without head and feet, in grayscale,
underexposed, under a warm lamp, out of focus, two people side by side (or the
second smaller), three small in a wide frame, on a white studio canvas,
tilted, turned sideways or upside down.
The people-free set holds images that must be refused (API state -11): flat,
gradient, patterned and noise images and street scenes without a person.

Backgrounds are made of the given photos' upper corners, left and right of
their person: walls, windows, trees and sky.  (CCP annotates one person per
photo; the rest of a street photo often holds other, unlabelled pedestrians,
who are rarely above head height.)  Everything is deterministic: the same
photos give the same framings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

from clothseg.engine.core import rotation_on_canvas

# label value 0 is CCP's "null" (background) in every label map here.
Photo = tuple[str, np.ndarray, np.ndarray]  # stem, RGB, CCP label map

# Height of the person in the wide and far framings, as a share of the 1080-row frame.
WIDE_PERSON_SHARE = 0.45
FAR_PERSON_SHARE = 0.25
# Height of the second person of the smaller framing, as a share of the first's photo.
SMALLER_PERSON_SHARE = 0.6
# Where the second person of the close framing stands: their left edge at this
# share of the first person's width.
CLOSE_SHIFT = 0.8
# Blur of the blurred framing (Gaussian sigma), as a share of the photo's height:
# 3 px on a CCP photo's 830 rows.
BLUR_SHARE = 1 / 280


def person_box(gt: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the labelled person; the whole map if none."""
    ys, xs = np.nonzero(gt)
    if not len(ys):
        return 0, 0, gt.shape[1], gt.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def background_strips(photos: list[Photo], min_width: int = 32) -> list[np.ndarray]:
    """People-free pieces of each photo: left and right of its person, above its head."""
    strips = []
    for _, rgb, gt in photos:
        x0, y0, x1, _ = person_box(gt)
        margin = 6
        bottom = y0 - margin
        for a, b in ((0, x0 - margin), (x1 + margin, rgb.shape[1])):
            if b - a >= min_width and bottom >= min_width:
                strips.append(rgb[:bottom, a:b])
    return strips


def street_scene(strips: list[np.ndarray], height: int, width: int, seed: int) -> np.ndarray:
    """A people-free (height, width) scene of strips side by side."""
    rng = np.random.default_rng(seed)
    parts, filled = [], 0
    while filled < width:
        strip = strips[int(rng.integers(len(strips)))]
        w = max(8, round(strip.shape[1] * height / strip.shape[0]))
        parts.append(cv2.resize(strip, (w, height), interpolation=cv2.INTER_AREA))
        filled += w
    return np.ascontiguousarray(np.concatenate(parts, 1)[:, :width])


def _resize_pair(rgb: np.ndarray, gt: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR),
            cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST))


def wide(photo: Photo, strips: list[np.ndarray], seed: int,
         share: float = WIDE_PERSON_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """The photo pasted into a 1920x1080 street scene, its person ``share`` of the frame's height."""
    _, rgb, gt = photo
    H, W = 1080, 1920
    x0, y0, x1, y1 = person_box(gt)
    small, small_gt = _resize_pair(rgb, gt, share * H / max(1, y1 - y0))
    canvas = street_scene(strips, H, W, seed)
    labels = np.zeros((H, W), gt.dtype)
    rng = np.random.default_rng(seed)
    h, w = small.shape[:2]
    top = min(H - h, int(rng.uniform(0.25, 0.5) * H))
    left = int(rng.uniform(0.05, 0.95) * (W - w))
    canvas[top:top + h, left:left + w] = small
    labels[top:top + h, left:left + w] = small_gt
    return canvas, labels


def half(photo: Photo, upper: bool) -> tuple[np.ndarray, np.ndarray]:
    """Head to hips (``upper``) or hips to feet: the rows above or below half
    the person's height."""
    _, rgb, gt = photo
    _, y0, _, y1 = person_box(gt)
    middle = y0 + (y1 - y0) // 2
    rows = slice(None, middle) if upper else slice(middle, None)
    return rgb[rows].copy(), gt[rows].copy()


def square(photo: Photo) -> tuple[np.ndarray, np.ndarray]:
    """The square around the person's centre, as wide as the photo (a social
    app's crop): a full-body person loses head and feet."""
    _, rgb, gt = photo
    h, w = gt.shape
    side = min(h, w)
    x0, y0, x1, y1 = person_box(gt)
    left = int(np.clip((x0 + x1 - side) // 2, 0, w - side))
    top = int(np.clip((y0 + y1 - side) // 2, 0, h - side))
    return rgb[top:top + side, left:left + side].copy(), gt[top:top + side, left:left + side].copy()


def gray(photo: Photo) -> tuple[np.ndarray, np.ndarray]:
    _, rgb, gt = photo
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB), gt


def dark(photo: Photo) -> tuple[np.ndarray, np.ndarray]:
    """Two stops underexposed, as a camera set for a brighter scene takes it: a
    quarter of the light, which under sRGB's curve (a 2.2 gamma) scales every
    value by 0.25 ** (1 / 2.2) = 0.53."""
    _, rgb, gt = photo
    return (rgb * 0.25 ** (1 / 2.2)).astype(np.uint8), gt


def warm(photo: Photo) -> tuple[np.ndarray, np.ndarray]:
    """Under a tungsten lamp with the camera's white balance set for
    daylight: green at 0.82 and blue at 0.55 of red."""
    _, rgb, gt = photo
    return (rgb * np.array([1.0, 0.82, 0.55], np.float32)).astype(np.uint8), gt


def blurred(photo: Photo) -> tuple[np.ndarray, np.ndarray]:
    """Out of focus (a missed focus, a shaken phone): a Gaussian blur of
    BLUR_SHARE of the photo's height."""
    _, rgb, gt = photo
    return cv2.GaussianBlur(rgb, (0, 0), BLUR_SHARE * rgb.shape[0]), gt


def side_by_side(photos: list[Photo]) -> Photo:
    """The photos next to each other at the first one's height: two or more
    people side by side."""
    stem, rgb, gt = photos[0]
    rgbs, gts = [rgb], [gt]
    for _, other_rgb, other_gt in photos[1:]:
        other_rgb, other_gt = _resize_pair(other_rgb, other_gt, rgb.shape[0] / other_rgb.shape[0])
        rgbs.append(other_rgb[: rgb.shape[0]])
        gts.append(other_gt[: rgb.shape[0]])
    return stem, np.concatenate(rgbs, 1), np.concatenate(gts, 1)


def beside_smaller(photo: Photo, other: Photo, strips: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``other``'s photo at SMALLER_PERSON_SHARE of this one's height, standing
    on a street strip beside it: a child beside a parent, a friend a step
    behind."""
    _, rgb, gt = photo
    h = gt.shape[0]
    small, small_gt = _resize_pair(other[1], other[2], SMALLER_PERSON_SHARE * h / other[2].shape[0])
    sh, sw = small_gt.shape
    strip = street_scene(strips, h, sw, seed)
    labels = np.zeros((h, sw), gt.dtype)
    top = h - sh - round(0.02 * h)
    strip[top:top + sh], labels[top:top + sh] = small, small_gt
    return np.concatenate([rgb, strip], 1), np.concatenate([gt, labels], 1)


def close(photo: Photo, other: Photo, shift: float = CLOSE_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """``other``'s person standing close beside this one's, a little in front
    (friends, a couple): ``other``'s photo at this one's height, its person's
    left edge at ``shift`` of this person's width, covering what is behind
    them; ``other``'s own photo continues the frame on the right."""
    _, rgb, gt = photo
    other_rgb, other_gt = _resize_pair(other[1], other[2], rgb.shape[0] / other[1].shape[0])
    other_rgb, other_gt = other_rgb[: rgb.shape[0]], other_gt[: rgb.shape[0]]
    h, w = gt.shape
    x0, _, x1, _ = person_box(gt)
    left = max(0, int(x0 + shift * (x1 - x0)) - person_box(other_gt)[0])
    width = max(w, left + other_gt.shape[1])
    canvas = np.zeros((h, width, 3), np.uint8)
    labels = np.zeros((h, width), gt.dtype)
    span = np.s_[:, left:left + other_gt.shape[1]]
    canvas[span], labels[span] = other_rgb, other_gt
    canvas[:, :w], labels[:, :w] = rgb, gt
    in_front = other_gt > 0
    canvas[span][in_front], labels[span][in_front] = other_rgb[in_front], other_gt[in_front]
    return canvas, labels


def turned(photo: Photo, quarters: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned ``quarters`` counter-clockwise: a person lying down
    (one or three), a photo without its EXIF orientation (any)."""
    _, rgb, gt = photo
    return np.ascontiguousarray(np.rot90(rgb, quarters)), np.ascontiguousarray(np.rot90(gt, quarters))


def tilted(photo: Photo, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned ``degrees`` counter-clockwise on a canvas that holds it
    all, its edge pixels carried into the corners: a tilted camera."""
    _, rgb, gt = photo
    turn, size = rotation_on_canvas(*gt.shape, degrees)
    return (cv2.warpAffine(rgb, turn, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            cv2.warpAffine(gt, turn, size, flags=cv2.INTER_NEAREST, borderValue=0))


def studio(photo: Photo) -> tuple[np.ndarray, np.ndarray]:
    """The person alone, centred on a white canvas 1.5x the photo's size."""
    _, rgb, gt = photo
    h, w = gt.shape
    H, W = round(h * 1.5), round(w * 1.5)
    top, left = (H - h) // 2, (W - w) // 2
    canvas = np.full((H, W, 3), 255, np.uint8)
    labels = np.zeros((H, W), gt.dtype)
    person = gt > 0
    canvas[top:top + h, left:left + w][person] = rgb[person]
    labels[top:top + h, left:left + w] = gt
    return canvas, labels


FRAMINGS: tuple[str, ...] = ("full", "wide", "far", "upper", "lower", "square", "gray", "dark", "warm", "blurred",
                              "two", "close", "smaller", "group", "studio", "tilted", "sideways", "upsidedown")


def framed(name: str, photos: list[Photo]) -> Iterator[Photo]:
    """Each photo in framing ``name`` (see FRAMINGS)."""
    if name not in FRAMINGS:
        raise ValueError(f"unknown framing {name!r}; one of {', '.join(FRAMINGS)}")
    strips = background_strips(photos) if name in ("wide", "far", "group", "smaller") else []
    n = len(photos)
    make: dict[str, Callable[[int, Photo], tuple[np.ndarray, np.ndarray]]] = {
        "full": lambda _, p: (p[1], p[2]),
        "wide": lambda i, p: wide(p, strips, seed=i),
        "far": lambda i, p: wide(p, strips, seed=i, share=FAR_PERSON_SHARE),
        "upper": lambda _, p: half(p, upper=True),
        "lower": lambda _, p: half(p, upper=False),
        "square": lambda _, p: square(p),
        "gray": lambda _, p: gray(p),
        "dark": lambda _, p: dark(p),
        "warm": lambda _, p: warm(p),
        "blurred": lambda _, p: blurred(p),
        "two": lambda i, p: side_by_side([p, photos[(i + 1) % n]])[1:],
        "smaller": lambda i, p: beside_smaller(p, photos[(i + 1) % n], strips, seed=i),
        "close": lambda i, p: close(p, photos[(i + 1) % n]),
        "group": lambda i, p: wide(side_by_side([p, photos[(i + 1) % n], photos[(i + 2) % n]]), strips, seed=i),
        "studio": lambda _, p: studio(p),
        "tilted": lambda i, p: tilted(p, 25 if i % 2 else -25),
        "sideways": lambda i, p: turned(p, 1 if i % 2 else 3),  # counter-clockwise and clockwise in turn
        "upsidedown": lambda _, p: turned(p, 2),
    }
    for i, photo in enumerate(photos):
        rgb, gt = make[name](i, photo)
        yield photo[0], rgb, gt


def people_free_images(photos: list[Photo], scenes: int = 12, large_scenes: int = 4) -> list[tuple[str, np.ndarray]]:
    """Images without a person (each must be refused): flat, gradient,
    patterned, noise, and street scenes made of the photos' backgrounds, the
    last ``large_scenes`` of them 1920x1080 (searched for far-away people)."""
    h, w = 768, 512
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    yy, xx = np.mgrid[0:h, 0:w]
    images: list[tuple[str, np.ndarray]] = [
        ("black", np.zeros((h, w, 3), np.uint8)),
        ("white", np.full((h, w, 3), 255, np.uint8)),
        ("flat-grey", np.full((h, w, 3), 128, np.uint8)),
        ("flat-colour", np.broadcast_to(np.array([40, 90, 160], np.uint8), (h, w, 3)).copy()),
        ("dark-gradient", (ramp * np.array([60, 50, 70]) * np.ones((1, w, 1))).astype(np.uint8)),
        ("gradient", (ramp * np.array([255, 200, 120]) * np.ones((1, w, 1))).astype(np.uint8)),
        ("stripes", np.repeat((((yy // 24) % 2) * 200 + 30)[..., None], 3, 2).astype(np.uint8)),
        ("vertical-stripes", np.repeat((((xx // 16) % 2) * 180 + 40)[..., None], 3, 2).astype(np.uint8)),
        ("checker", np.repeat(((((yy // 32) + (xx // 32)) % 2) * 255)[..., None], 3, 2).astype(np.uint8)),
        ("noise", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
        ("blurred-noise", cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 6)),
    ]
    strips = background_strips(photos)
    for i in range(scenes):
        sh, sw = ((720, 1280), (768, 512), (600, 800))[i % 3]
        images.append((f"street-{i}", street_scene(strips, sh, sw, seed=1000 + i)))
    for i in range(scenes, scenes + large_scenes):
        images.append((f"street-{i}", street_scene(strips, 1080, 1920, seed=1000 + i)))
    return images
