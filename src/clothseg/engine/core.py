"""The segmentation engine: RGB image + options -> soft masks per API class.

A backend (our ONNX model, or an adapter for a third-party checkpoint) turns an
image at a working resolution into probabilities over the fine taxonomy.  The
engine owns everything around it, the same for every backend: working size,
test-time augmentation (quality 2), pose, upsampling to the input size, edge
refinement guided by the photo (detail mode 2) and the mapping to API classes
and ZIP categories.  Nothing here knows about HTTP.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np

from clothseg.engine.priors import Pose, PoseEstimator
from clothseg.engine.taxonomy import (
    API_CLASS_MEMBERS,
    API_CLASSES,
    CLASS_TYPES,
    CLOTHING_CATEGORIES,
    FINE_INDEX,
    FINE_LABELS,
    fine_indices,
)

# Working resolution in pixels (height x width of a 2:3 portrait of this height);
# the image keeps its aspect ratio at this area.  Detail mode 2 parsed at 512 px
# until 2026-12-05: once both modes' masks follow the photo's edges, 512 px gave
# worse edges than 384 (the network learnt people at about 384 px).
WORKING_HEIGHT = 384
# Quality 2 averages these scales of the working size, each also mirrored.  With
# the two-network model a 0.875 scale took the full photos' bottoms below quality
# 1's beyond noise (training/RUNS.md).
TTA_SCALES = (1.0, 1.25)
# Every training photo reaches a luminance of 0.72 at its 99th percentile (5%
# stay below 0.87): a photo that stays darker (underexposed) is outside what
# the network learnt, and is parsed with its levels stretched.
DIM_PHOTO_BRIGHTEST = 0.7
LEVELS_TARGET = 0.9
LEVELS_MAX_GAIN = 4.0
# The colour of the light, by the gray-edge estimate (each channel's mean
# gradient: edges are grey on average under white light): in every CCP photo
# the channels' figures are within 1.57x of one another (99% within 1.22x).  A
# photo between CAST_RATIOS was taken under coloured light (a tungsten lamp,
# a sunset) and is parsed white-balanced, each channel's gain within
# 1/LEVELS_MAX_GAIN to LEVELS_MAX_GAIN; further apart, the colour is the
# scene's (a red wall), not the light's.
CAST_RATIOS = (1.6, 3.0)
CAST_SIDE = 512
# Edge width (``edge_width``) of the network's input: every validation photo
# at the working size measures 0.16-0.60 (0.69 with its background blurred,
# 0.82 cut at the hips, so enlarged); an out-of-focus photo or a small
# person's enlarged crop measures more and is sharpened by an unsharp mask of
# SHARPEN_RADIUS times its width.
EDGE_TILES = 6
SHARP_WIDTH = 0.9
SHARPEN_AMOUNT = 3.0
SHARPEN_RADIUS = 0.7
# Masks are probabilities pushed towards 0/255 inside regions, soft at the edges.
EDGE_SHARPNESS = 3.0
# A photo whose largest person region is below this fraction of the frame has
# "no person" (API state -11).
MIN_PERSON_FRACTION = 0.002
# A network person region is another person beside those MediaPipe found when
# its box is between these multiples of theirs and it is this confident.
PERSON_PART_SHARE = 0.5
PERSON_MAX_GROWTH = 2.0
OTHER_PERSON_CONFIDENCE = 0.88
# A large network region (NET_ONLY_SHARE of the photo) is a person whatever its
# size beside those MediaPipe found, when it is this confident: a person whose
# head the frame cuts off (MediaPipe then finds a bystander instead) scored
# 0.94-0.99 on the validation photos' centre squares; walls and pavement of
# street scenes with a person at most 0.86.
CUT_PERSON_CONFIDENCE = 0.9
MAX_REGIONS = 8
# Without MediaPipe's pose, a network region is a person only when it is this
# large (share of the photo) and this confident (mean person probability).
# MediaPipe finds no pose without a head: on hips-to-feet photos of the 101
# validation people the network's region scored 0.89-0.99; on 173 people-free
# images (flat, patterned, noise, street scenes, dark and washed-out) at most 0.78.
NET_ONLY_SHARE = 0.05
NET_ONLY_CONFIDENCE = 0.85
# Where the network sees a person-like region beside the person MediaPipe
# found, MediaPipe looks again with that person hidden; a person it then finds
# counts when at least this share of the first one's height (a child beside a
# parent; a bystander down the street is smaller, and CCP leaves them out).
SECOND_PERSON_HEIGHT = 0.5
# It also looks again when the network's person probability outside that
# person's box adds up to this range of shares of the probability inside it:
# someone standing close beside them, partly behind or in front, whom the
# network sees as one region with them (at most 0.075 on the validation
# photos alone, 0.1-1.2 on 72 of 101 photos of two people standing close).
# Far more is MediaPipe finding a bystander beside a person without a head.
CLOSE_PERSON_SHARE = (0.1, 2.0)
# A photo this much wider (or taller) than square is searched in square windows
# when MediaPipe finds nobody, or only small people, in the whole photo.
WINDOW_ASPECT = 1.2
# People MediaPipe looks for in one window, hiding each one it finds, when
# the people found in the whole photo (if any) are under SMALL_PERSON of its
# height: a street scene of several small people, not one large person with
# bystanders behind.
PEOPLE_PER_WINDOW = 3
SMALL_PERSON = 0.5
# A person far away (a quarter of a 1080-row frame's height) is too small for
# MediaPipe in the whole photo or in a window as tall as the photo: where
# nobody was found, MediaPipe also looks in square windows of half the photo's
# shorter side, when those are at least this many pixels.
FAR_WINDOW_MIN_SIDE = 320
# MediaPipe Pose's shoulders and hips.  A person whose torso (hips to
# shoulders) lies within LYING_LEAN degrees of horizontal (lying down, a photo
# turned sideways without its EXIF orientation) is parsed on the photo turned
# a quarter, when MediaPipe then finds them standing (within STANDING_LEAN of
# upright): the network learnt standing people.  The validation photos turned
# a quarter lean 82-100 degrees; upright they lean at most 13.  A torso leaning
# more than LYING_LEAN[1] is upside down, and the photo is turned a half when,
# besides, the network sees more of a head (face or hair) in it turned than as
# it is: MediaPipe also "finds" upside-down people in photos of legs and in
# street scenes.
# A torso leaning TILTED_LEAN degrees or more, short of lying, is parsed on the
# photo turned upright by its lean (a tilted camera, a person leaning): the
# network learnt people within 12 degrees of upright.
SHOULDERS, HIPS = [11, 12], [23, 24]
LYING_LEAN = (70.0, 110.0)
STANDING_LEAN = 30.0
TILTED_LEAN = 20.0
# ... when MediaPipe's person is this share of the photo's height: the
# validation photos tilted 25 degrees, 0.67-0.82; leaning strays MediaPipe
# finds in wide street frames, 0.45 (and small people keep their crops).
TILTED_MIN_HEIGHT = 0.6
# MediaPipe Pose's ankle, heel and foot landmarks; the feet are out of the photo
# when all of them lie this far down (1.0 = the bottom edge).
FEET_LANDMARKS = [27, 28, 29, 30, 31, 32]
FEET_OUTSIDE = 1.05
# MediaPipe Pose's face landmarks (nose, eyes, ears, mouth); the head is out of
# the photo when all of them lie above this (0.0 = the top edge).
HEAD_LANDMARKS = list(range(11))
HEAD_OUTSIDE = -0.05
# A label the network gives less than this share of a region's pixels is noise.
MIN_LABEL_SHARE = 0.0005
# Hair and shoes, when a photo shows them, are large or sure: in the labels of
# 201 training photos, whole, head to hips and hips to feet, no head of hair or
# pair of shoes covers less than 0.1% of the photo, while the network's
# patches of them where there are none (shoes on the hands of a head-to-hips
# photo, hair on a hips-to-feet one) are small and unsure.  So hair or shoes
# under UNSURE_PART_SHARE of a region whose pixels average a probability
# under UNSURE_PART_CONFIDENCE are noise too (training/RUNS.md).
UNSURE_PARTS = ("hair", "shoes")
UNSURE_PART_SHARE = 0.004
UNSURE_PART_CONFIDENCE = 0.5
# A top and a dress of one colour are one garment, a dress, when the dress
# holds at least this share of the two.  Their colour distance is the Lab
# distance of their mean colours with lightness at half weight (shading):
# on the training photos' labels, 69% of dresses' upper and lower halves
# lie within 10 of each other, and 11% of tops over skirts.
WHOLE_DRESS_MIN_SHARE = 0.15
WHOLE_DRESS_COLOUR = 10.0
# An "others" piece is at least this thick (share of the person's height).
OTHERS_MIN_THICKNESS = 0.08
# ... where MediaPipe and the network disagree by at least this much.
OTHERS_MIN_PROBABILITY = 0.7
# The crop around the people extends this share of their size on each side.
CROP_MARGIN = 0.1
# One person is parsed on a crop when it is below this share of the photo
# (several people always are, each on their own).
CROP_MAX_AREA = 0.6
# Two boxes are one person when their overlap is this share of the smaller.
SAME_PERSON_OVERLAP = 0.5
# A group's region holds at most this many of its largest crop's pixels.
COMPOSED_MAX_CROPS = 4
# Masks follow the photo's edges (a guided filter): detail mode 1 fits the
# filter at the network's working resolution, detail mode 2 at this many
# pixels on the long side; at full size it applies to this many pixels at a time.
REFINE_SIDE = 1024
REFINE_BAND_PIXELS = 1 << 20
# Its window's radius is this share of the fitted image's long side (8 px at
# 1024, 3 px at the working size): detail mode 2's boundary F on 50 training
# photos 0.694 at 1/256, 0.704 at 1/170, 0.709 at 1/128, 0.703 at 1/85, 0.685
# at 1/64; detail mode 1's mIoU on 150 training photos peaks at 1/128 too.
REFINE_RADIUS = 1 / 128
# Its regularisation: how faint an edge (variance of the guide) it snaps to.
REFINE_EPSILON = 1e-3
# A ZIP category is reported when at least this fraction of the image is in it.
MIN_CATEGORY_FRACTION = 0.0005


@dataclass(frozen=True)
class SegmentOptions:
    class_type: int = 1
    quality: int = 1
    detail_mode: int = 1
    output_type: int = 1


@dataclass
class Segmentation:
    """Masks are (H, W) uint8 at the input size.  ``class_masks`` holds the
    classes the class_type selects (empty for output_type 2); ``clothing_masks``
    the finer categories found (only for output_type 2/3)."""

    class_masks: dict[str, np.ndarray] = field(default_factory=dict)
    clothing_masks: dict[str, np.ndarray] = field(default_factory=dict)
    person_fraction: float = 0.0

    @property
    def empty(self) -> bool:
        """No person (nothing to segment) was found: API state -11."""
        return not self.class_masks and not self.clothing_masks


# What the engine found about an image, for a backend with a network trained
# for such images: "blurred", out of focus (and sharpened); "headless", a person
# the frame cuts below the head (hips to feet, a product shot of trousers).
Condition = Literal["blurred", "headless"] | None


class Backend(Protocol):
    """A network that predicts the fine taxonomy."""

    needs_pose: bool

    def probabilities(self, rgb: np.ndarray, pose: Pose | None, condition: Condition = None) -> np.ndarray:
        """(len(FINE_LABELS), h, w) float32 probabilities for ``rgb`` (h, w, 3),
        already resized to the working size; ``pose`` is for the full image."""
        ...


def working_size(height: int, width: int, target_height: int) -> tuple[int, int]:
    """(h, w), multiples of 16, with the aspect of the input and the area of a
    2:3 portrait ``target_height`` pixels high."""
    area = target_height * target_height * 2 / 3
    scale = (area / (height * width)) ** 0.5
    return max(32, round(height * scale / 16) * 16), max(32, round(width * scale / 16) * 16)


def working_copy(rgb: np.ndarray, target: int) -> np.ndarray:
    """``rgb`` resized to the network's working size for ``target``."""
    return network_view(rgb, *working_size(rgb.shape[0], rgb.shape[1], target))


def network_view(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """``rgb`` resized to ``height`` x ``width`` for the network: shrunk by
    pixel area; enlarged (a small person's crop, a small photo) by Lanczos,
    as OpenCV's area interpolation enlarges in near-nearest-neighbour blocks
    (far framing 0.629 -> 0.642 with Lanczos, 0.641 cubic, 0.622 bilinear)."""
    enlarged = height > rgb.shape[0] or width > rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LANCZOS4 if enlarged else cv2.INTER_AREA)


@dataclass(frozen=True)
class Refinement:
    """How a region's masks are brought to the photo's size: a guided filter
    fitted at ``fit`` (h, w), with the photo's colour (3 channels) or its
    luminance as guide."""

    fit: tuple[int, int]
    colour: bool


def guided_fit(rgb: np.ndarray, maps: np.ndarray, how: Refinement) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Coefficients (a, b) at ``how.fit`` (h, w) of a guided filter (He & Sun
    2015) of each soft map of ``maps`` (C, any height, any width) in turn, the
    photo ``rgb`` (0-255) as guide: a is (h, w), or (3, h, w) with the colour
    guide, in units of the guide's 0-255.  At the photo's size a map is
    a * guide + b, a and b upsampled (the fast guided filter): the maps
    follow the photo's own edges, not the working resolution's blocks.  One
    map at a time keeps a 4k photo's refinement to a few MB of work."""
    h, w = how.fit
    guide = cv2.resize(rgb if how.colour else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (w, h),
                       interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    size = (2 * max(2, round(REFINE_RADIUS * max(h, w))) + 1,) * 2

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, size)

    if not how.colour:
        mean_i = box(guide)
        var_i = box(guide * guide) - mean_i * mean_i + REFINE_EPSILON
        for m in maps:
            p = m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
            mean_p = box(p)
            a = (box(guide * p) - mean_i * mean_p) / var_i
            b = box(mean_p - a * mean_i)
            yield box(a) / 255, b
        return
    # The colour guide, one plane per channel (faster than interleaved), and per
    # window the inverse of its 3x3 colour covariance (epsilon on the diagonal).
    planes = [np.ascontiguousarray(guide[:, :, c]) for c in range(3)]
    means = [box(x) for x in planes]
    inverse = _symmetric_inverse({(i, j): box(planes[i] * planes[j]) - means[i] * means[j]
                                  + (REFINE_EPSILON if i == j else 0.0) for i in range(3) for j in range(i, 3)})
    for m in maps:
        p = m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_p = box(p)
        a = [box(x * p) - mu * mean_p for x, mu in zip(planes, means, strict=True)]  # covariance with p
        a = [inverse[i, 0] * a[0] + inverse[i, 1] * a[1] + inverse[i, 2] * a[2] for i in range(3)]
        b = box(mean_p - a[0] * means[0] - a[1] * means[1] - a[2] * means[2])
        coefficients = np.stack([box(x) for x in a])
        coefficients *= 1 / 255
        yield coefficients, b


def _symmetric_inverse(m: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
    """Per pixel, the inverse of the symmetric 3x3 matrix whose upper triangle
    ``m`` holds, (i, j) -> plane, by its adjugate; every (i, j) in the result."""
    adj = {(0, 0): m[1, 1] * m[2, 2] - m[1, 2] * m[1, 2], (0, 1): m[0, 2] * m[1, 2] - m[0, 1] * m[2, 2],
           (0, 2): m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1], (1, 1): m[0, 0] * m[2, 2] - m[0, 2] * m[0, 2],
           (1, 2): m[0, 1] * m[0, 2] - m[0, 0] * m[1, 2], (2, 2): m[0, 0] * m[1, 1] - m[0, 1] * m[0, 1]}
    inverse_det = 1.0 / (m[0, 0] * adj[0, 0] + m[0, 1] * adj[0, 1] + m[0, 2] * adj[0, 2])
    out = {k: v * inverse_det for k, v in adj.items()}
    out.update({(j, i): v for (i, j), v in list(out.items())})
    return out


def _guided_rows(a: np.ndarray, b: np.ndarray, guide: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """Rows top:bottom of a * guide + b at the size of ``guide`` (the photo's
    luminance, or the photo with ``a`` one plane per colour channel), a and b
    upsampled from the fitted size."""
    height, width = guide.shape[:2]
    band = _resized_rows(b, height, width, top, bottom)
    if guide.ndim == 2:
        band += _resized_rows(a, height, width, top, bottom) * guide[top:bottom]
        return band
    for a_c, g_c in zip(a, cv2.split(guide[top:bottom]), strict=True):  # planes: faster than a channel sum
        band += _resized_rows(a_c, height, width, top, bottom) * g_c
    return band


def guided_masks(rgb: np.ndarray, maps: np.ndarray, how: Refinement) -> list[np.ndarray]:
    """One uint8 mask at the photo's size per soft map of ``maps`` (C, h, w),
    snapped to the edges of the photo ``rgb`` by ``guided_fit`` and pushed
    towards 0/255 away from the 0.5 boundary (EDGE_SHARPNESS).  Full-size work goes
    REFINE_BAND_PIXELS at a time, so a 4k photo needs a few MB beside its masks."""
    H, W = rgb.shape[:2]
    guide = rgb if how.colour else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rows = max(1, REFINE_BAND_PIXELS // W)
    gain = EDGE_SHARPNESS * 255
    out = []
    for a, b in guided_fit(rgb, maps, how):
        # (a * guide + b - 0.5) * gain + 128, clipped to 0-255.5 and truncated
        # (rounding), as one multiply-add at full size: the affine map is
        # folded into the coefficients at the fitted size.
        a *= gain
        b = (b - 0.5) * gain + (0.5 * 255 + 0.5)
        mask = np.empty((H, W), np.uint8)
        for top in range(0, H, rows):
            band = _guided_rows(a, b, guide, top, min(H, top + rows))
            np.clip(band, 0.0, 255.5, out=band)
            mask[top:top + len(band)] = band
        out.append(mask)
    return out


def guided_upsampled(rgb: np.ndarray, maps: np.ndarray, how: Refinement) -> np.ndarray:
    """(C, H, W) float maps at the size of the photo ``rgb`` from ``maps`` (C, h, w),
    snapped to its edges as ``guided_masks`` snaps the API's masks."""
    guide = rgb if how.colour else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.stack([_guided_rows(a, b, guide, 0, rgb.shape[0]) for a, b in guided_fit(rgb, maps, how)])


def _resized_rows(src: np.ndarray, height: int, width: int, top: int, bottom: int) -> np.ndarray:
    """Rows top:bottom of ``src`` resized to (height, width) bilinearly, as
    cv2.resize would give them, without making the other rows."""
    if (top, bottom) == (0, height):
        return cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)
    h, w = src.shape[:2]
    to_source = np.array([[w / width, 0, 0.5 * w / width - 0.5],
                          [0, h / height, (top + 0.5) * h / height - 0.5]], np.float32)
    return cv2.warpAffine(np.ascontiguousarray(src), to_source, (width, bottom - top),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def levelled(rgb: np.ndarray) -> np.ndarray:
    """The photo with its levels stretched when it never gets bright (an
    underexposed photo): its 99th-percentile luminance raised to
    LEVELS_TARGET, by a gain of at most LEVELS_MAX_GAIN.  Other photos are
    returned as they are."""
    sample = cv2.cvtColor(np.ascontiguousarray(rgb[::4, ::4]), cv2.COLOR_RGB2GRAY)
    counts = np.cumsum(np.bincount(sample.ravel(), minlength=256))
    bright = float(np.searchsorted(counts, 0.99 * counts[-1])) / 255  # the 99th percentile
    if bright >= DIM_PHOTO_BRIGHTEST:
        return rgb
    return cv2.convertScaleAbs(rgb, alpha=min(LEVELS_MAX_GAIN, LEVELS_TARGET / max(bright, 1 / 255)))


def white_balanced(rgb: np.ndarray) -> np.ndarray:
    """The photo as under white light when its light is strongly coloured
    (CAST_RATIOS), by the gray-edge estimate on a copy of CAST_SIDE px;
    other photos are returned as they are."""
    scale = min(1.0, CAST_SIDE / max(rgb.shape[:2]))
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # Integer gradients (exact, and 8x faster than in float).
    gradient = cv2.add(np.abs(cv2.Sobel(small, cv2.CV_16S, 1, 0)), np.abs(cv2.Sobel(small, cv2.CV_16S, 0, 1)))
    light = np.array(cv2.mean(gradient)[:3])
    if not CAST_RATIOS[0] * light.min() < light.max() <= CAST_RATIOS[1] * light.min():
        return rgb
    gains = np.clip(light.mean() / np.maximum(light, 1e-6), 1 / LEVELS_MAX_GAIN, LEVELS_MAX_GAIN)
    return np.clip(rgb * gains.astype(np.float32), 0, 255).astype(np.uint8)


def as_trained(rgb: np.ndarray) -> np.ndarray:
    """The photo as the network learnt photos: levels stretched when
    underexposed, white-balanced when taken under coloured light."""
    return white_balanced(levelled(rgb))


def edge_width(rgb: np.ndarray) -> float:
    """How wide the image's sharpest edges are, in pixels, whatever their
    contrast: summed gradient over summed Laplacian (a step edge blurred by a
    Gaussian of width sigma gives ~sigma) in each of EDGE_TILES x EDGE_TILES
    tiles, the least of the tiles with at least the mean gradient.  A person
    in focus before a blurred background measures as sharp."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)) / 8
    tiles = (EDGE_TILES, EDGE_TILES)
    gradient = cv2.resize(gradient, tiles, interpolation=cv2.INTER_AREA)
    laplacian = cv2.resize(np.abs(cv2.Laplacian(gray, cv2.CV_32F)), tiles, interpolation=cv2.INTER_AREA)
    textured = gradient >= gradient.mean()
    return float((gradient[textured] / np.maximum(laplacian[textured], 1e-6)).min())


def out_of_focus(width: float) -> bool:
    """Whether an image at the working size whose ``edge_width`` is ``width``
    has edges wider than any sharp training photo's."""
    return width > SHARP_WIDTH


def sharpened(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """``rgb`` with an unsharp mask of Gaussian ``sigma``."""
    image = rgb.astype(np.float32)
    detail = image - cv2.GaussianBlur(image, (0, 0), sigma)
    return np.clip(image + SHARPEN_AMOUNT * detail, 0, 255).astype(np.uint8)


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the photo


@dataclass
class Region:
    """Fine-label probabilities ``probs`` (K, h, w) of the photo's ``box`` at the
    network's working resolution, and MediaPipe's person mask over the same
    region at the same resolution."""

    box: Box
    probs: np.ndarray
    person_prior: np.ndarray

    def refinement(self, detail_mode: int) -> Refinement:
        """How this region's masks are brought to the photo's size: detail mode
        1 fits a luminance-guided filter at the working resolution; detail mode
        2 a colour-guided one (it also finds the edge between two garments of
        one lightness) at up to REFINE_SIDE px on the long side; never above
        the region's own size."""
        x0, y0, x1, y1 = self.box
        height, width = y1 - y0, x1 - x0
        side = max(self.probs.shape[1:]) if detail_mode == 1 else REFINE_SIDE
        scale = min(1.0, side / max(height, width))
        return Refinement((max(1, round(height * scale)), max(1, round(width * scale))), detail_mode == 2)

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        """This region's pixels of the photo ``rgb``."""
        x0, y0, x1, y1 = self.box
        return np.ascontiguousarray(rgb[y0:y1, x0:x1])

    def upsampled(self, maps: np.ndarray) -> np.ndarray:
        """(box height, box width[, C]) from (h, w[, C]) maps at the working resolution."""
        x0, y0, x1, y1 = self.box
        out = cv2.resize(maps, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return out.reshape(y1 - y0, x1 - x0, -1) if maps.ndim == 3 else out

    def turned(self, width: int) -> Region:
        """This region of a photo ``width`` pixels wide, with the photo turned a
        quarter counter-clockwise (``np.rot90``)."""
        x0, y0, x1, y1 = self.box
        return Region((y0, width - x1, y1, width - x0), np.ascontiguousarray(np.rot90(self.probs, axes=(1, 2))),
                      np.ascontiguousarray(np.rot90(self.person_prior)))


@dataclass
class Parsing:
    """A photo of ``size`` (H, W) parsed as non-overlapping regions (the whole
    photo, or one region per group of people); outside them is background."""

    regions: list[Region]
    size: tuple[int, int]
    has_person: bool

    @property
    def cropped(self) -> bool:
        return [r.box for r in self.regions] != [(0, 0, self.size[1], self.size[0])]

    def paste(self, maps: list[np.ndarray], fill: float | np.ndarray = 0) -> np.ndarray:
        """(H, W[, C]) maps of the photo from one (box height, box width[, C]) map
        per region; ``fill`` (a value or one per channel) outside them."""
        if not self.cropped:
            return maps[0]
        out = np.full((*self.size, *maps[0].shape[2:]), fill, maps[0].dtype)
        for region, m in zip(self.regions, maps, strict=True):
            x0, y0, x1, y1 = region.box
            out[y0:y1, x0:x1] = m
        return out

    def turned(self, quarters: int) -> Parsing:
        """The parsing of the photo turned ``quarters`` counter-clockwise (``np.rot90``)."""
        parsing = self
        for _ in range(quarters % 4):
            (height, width) = parsing.size
            parsing = Parsing([r.turned(width) for r in parsing.regions], (width, height), parsing.has_person)
        return parsing

    def warped(self, affine: np.ndarray, size: tuple[int, int], working: tuple[int, int]) -> Parsing:
        """The parsing of the photo of ``size`` (H, W) whose pixels ``affine``
        (2x3) maps into this parsing's photo, as one region at the ``working``
        (h, w) resolution."""
        (H, W), (h, w) = size, working
        scale = h / H
        Hs, Ws = max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale))
        probs = np.zeros((len(FINE_LABELS), Hs, Ws), np.float32)
        probs[FINE_INDEX["background"]] = 1.0
        prior = np.zeros((Hs, Ws), np.float32)
        for r in self.regions:
            x0, y0, x1, y1 = (round(v * scale) for v in r.box)
            if x1 > x0 and y1 > y0:
                for k in range(len(FINE_LABELS)):
                    probs[k, y0:y1, x0:x1] = cv2.resize(r.probs[k], (x1 - x0, y1 - y0))
                prior[y0:y1, x0:x1] = cv2.resize(r.person_prior, (x1 - x0, y1 - y0))
        # From a pixel of the working resolution to this parsing's map at ``scale``.
        back = np.hstack([scale * affine[:, :2] @ np.diag([W / w, H / h]), scale * affine[:, 2:]])

        def warp(m: np.ndarray, outside: float) -> np.ndarray:
            return cv2.warpAffine(m, back, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderValue=outside)

        warped = np.stack([warp(probs[k], float(k == FINE_INDEX["background"])) for k in range(len(FINE_LABELS))])
        return Parsing([Region((0, 0, W, H), warped, warp(prior, 0.0))], size, self.has_person)

    def full_probabilities(self) -> np.ndarray:
        """(K, H, W) probabilities over the whole photo (background outside the regions)."""
        background = np.eye(len(FINE_LABELS), dtype=np.float32)[FINE_INDEX["background"]]
        maps = [r.upsampled(r.probs.transpose(1, 2, 0)) for r in self.regions]
        return self.paste(maps, fill=background).transpose(2, 0, 1)


class Engine:
    def __init__(self, backend: Backend, pose: PoseEstimator | None = None) -> None:
        self.backend = backend
        self._pose = pose or PoseEstimator()

    def parse(self, rgb: np.ndarray, quality: int = 1, detail_mode: int = 1) -> Parsing:
        """Find the people, then parse them: the network first sees the whole
        photo; where the people fill only part of the frame, it runs again on a
        crop around each group of them, so a small person gets the working
        resolution.  A person lying down, or a photo turned sideways or upside
        down, is parsed turned upright and the parsing turned back.  An
        underexposed photo is parsed with its levels stretched, one under
        coloured light white-balanced (``as_trained``)."""
        return self._parse_as_trained(as_trained(rgb), quality, detail_mode)

    def _parse_as_trained(self, rgb: np.ndarray, quality: int, detail_mode: int) -> Parsing:
        pose = self._pose(rgb)
        lean = torso_lean(pose, *rgb.shape[:2])
        if lean is None or abs(lean) < TILTED_LEAN:
            return self._parse(rgb, pose, quality, detail_mode)
        if abs(lean) < LYING_LEAN[0]:
            return self._parse_tilted(rgb, pose, lean, quality, detail_mode)
        # Counter-clockwise quarters: a head on the right goes up.
        quarters = 2 if abs(lean) > LYING_LEAN[1] else 1 if lean > 0 else 3
        upright = np.ascontiguousarray(np.rot90(rgb, quarters))
        upright_pose = self._pose(upright)
        upright_lean = torso_lean(upright_pose, *upright.shape[:2])
        if upright_lean is None or abs(upright_lean) > STANDING_LEAN:
            return self._parse(rgb, pose, quality, detail_mode)
        if quarters != 2:
            return self._parse(upright, upright_pose, quality, detail_mode).turned(-quarters)
        target = WORKING_HEIGHT
        whole = self._network(rgb, pose, target, tta_views(1))
        upright_whole = self._network(upright, upright_pose, target, tta_views(1))
        if (head_shares(upright_whole) > head_shares(whole)).any():
            return self._parse(upright, upright_pose, quality, detail_mode, upright_whole).turned(2)
        return self._parse(rgb, pose, quality, detail_mode, whole)

    def _parse_tilted(self, rgb: np.ndarray, pose: Pose, lean: float, quality: int, detail_mode: int) -> Parsing:
        """A photo whose person leans ``lean`` degrees: parsed on the photo
        turned upright (on a larger canvas, black beyond the photo as in
        training), when the person fills most of its height and MediaPipe then
        finds them standing, and the parsing turned back (as one region of the
        photo at the working resolution)."""
        H, W = rgb.shape[:2]
        _, top, _, bottom = pose_box(pose, H, W)
        if bottom - top < TILTED_MIN_HEIGHT * H:
            return self._parse(rgb, pose, quality, detail_mode)
        # Counter-clockwise by the lean: a head leaning right goes up.
        affine, size = rotation_on_canvas(H, W, lean)
        upright = cv2.warpAffine(rgb, affine, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        upright_pose = self._pose(upright)
        upright_lean = torso_lean(upright_pose, size[1], size[0])
        if upright_lean is None or abs(upright_lean) >= TILTED_LEAN:
            return self._parse(rgb, pose, quality, detail_mode)
        parsing = self._parse(upright, upright_pose, quality, detail_mode)
        return parsing.warped(affine, (H, W), working_size(H, W, WORKING_HEIGHT))

    def _parse(self, rgb: np.ndarray, pose: Pose, quality: int, detail_mode: int,
               whole: np.ndarray | None = None) -> Parsing:
        """``whole``: the network's pass over the whole photo, if already made."""
        H, W = rgb.shape[:2]
        target = WORKING_HEIGHT
        base = working_copy(rgb, target)  # made once: every pass below and the focus check use it
        if whole is None:
            whole = self._network(rgb, pose, target, tta_views(1), base, finding=True)
        people = distinct_people(self._find_people(rgb, pose, whole))
        if not people:
            return Parsing([Region((0, 0, W, H), whole, _resized(pose.person_mask, whole.shape[1:]))], (H, W), False)
        if len(people) > 1 or _area(crop_box(people, H, W)) < CROP_MAX_AREA * H * W:
            regions = [self._group_region(rgb, group, target, quality) for group in group_people(people, H, W)]
        else:
            # The whole-photo pass above is the first view (quality 2 mirrors every
            # photo; detail mode 2 too, for steadier edges).
            hard = detail_mode == 2 or (quality == 1 and out_of_focus(edge_width(base)))
            if shows_no_head(pose):  # the pass above found the people; this one parses them
                whole = self._network(rgb, pose, target, tta_views(1), base)
            views = tta_views(quality, hard)[1:]
            probs = whole if not views else (whole + self._network(rgb, pose, target, views, base) * len(views)) / (
                1 + len(views))
            regions = [tidy_region((0, 0, W, H), probs, pose, rgb)]
        return Parsing(regions, (H, W), True)

    def _crop_region(self, rgb: np.ndarray, box: Box, target: int, quality: int) -> Region:
        """The network's parsing of the photo's ``box`` at the working resolution."""
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        crop_pose = self._pose(crop)
        return tidy_region(box, self._network(crop, crop_pose, target, tta_views(quality, hard=True)), crop_pose, crop)

    def _group_region(self, rgb: np.ndarray, people: list[Box], target: int, quality: int) -> Region:
        """A group of people whose crops overlap, as one region: each person is
        parsed on their own crop (at the working resolution, as a photo of one
        person would be) and each pixel of the group takes the parsing of the
        crop most sure it is a person."""
        H, W = rgb.shape[:2]
        members = [self._crop_region(rgb, crop_box([p], H, W), target, quality) for p in people]
        if len(members) == 1:
            return members[0]
        return composed_region(members)

    def _find_people(self, rgb: np.ndarray, pose: Pose, probs: np.ndarray) -> list[Box]:
        """Boxes of the people in the photo.  MediaPipe's pose, or without one
        a large and confident person region of the network, is the witness that
        a person is there: a photo without either is not parsed (API state
        -11), so flat, patterned and empty street images are refused.  MediaPipe
        finds one person per call and misses small ones in a wide frame, so
        where it found nobody or only small people, it also looks in square
        windows of a wide photo (a stray pose found there, on a hand, joins
        the network's region of the same person), and where it found one large
        person beside scraps of another, or in one region with someone standing
        close, it looks again with the first hidden; the network's own person
        regions add the other people of a group photo."""
        H, W = rgb.shape[:2]
        regions = person_regions(probs, H, W)
        if pose.landmarks is not None:
            found = [pose_box(pose, H, W)]
        else:
            # No pose (a photo without a head, hips to feet; a grayscale photo):
            # only a large, confident network region counts.
            found = [r.box for r in regions[:1] if r.share >= NET_ONLY_SHARE and r.confidence >= NET_ONLY_CONFIDENCE]
        small = not found or _area(crop_box(found, H, W)) < CROP_MAX_AREA * H * W
        pair: list[Box] = []  # two people standing close, when the second look below finds them
        if small and max(H, W) > WINDOW_ASPECT * min(H, W):
            # Several small people (a street scene) may share a window.
            per_window = PEOPLE_PER_WINDOW if all(b[3] - b[1] < SMALL_PERSON * H for b in found) else 1
            found += self._search_windows(rgb, min(H, W), per_window)
        elif pose.landmarks is not None and any(not _overlap(r.box, found[0]) for r in regions):
            # The network sees scraps of a person beside the one MediaPipe found
            # (a smaller person beside them): look again without the first.
            found += self._second_person(_hide(np.array(rgb), found[0]), found[0])
        elif pose.landmarks is not None and CLOSE_PERSON_SHARE[0] <= person_outside(probs, found[0], H, W) \
                < CLOSE_PERSON_SHARE[1]:
            # One network region of two people standing close: their boxes
            # overlap, so look again with only the first one's own pixels hidden.
            found += self._second_person(_hide_person(np.array(rgb), pose), found[0])
            pair = found if len(found) == 2 else []
        if not found and min(H, W) // 2 >= FAR_WINDOW_MIN_SIDE:
            found += self._search_windows(rgb, min(H, W) // 2, PEOPLE_PER_WINDOW)
        if not found:
            return []
        # A person much smaller than the tallest found (in a wide photo's windows)
        # is a bystander, or a scrap of a person MediaPipe fits at a window's edge.
        tallest = max(b[3] - b[1] for b in found)
        found = [b for b in found if b[3] - b[1] >= SECOND_PERSON_HEIGHT * tallest]
        # The network also calls walls and pavement "person" at a distance: another
        # person needs a confident region of a person's size.
        smallest, largest = min(_area(b) for b in found), max(_area(b) for b in found)
        # A region over two people standing close is the two of them, not another person.
        return found + [r.box for r in regions if (r.confidence >= OTHER_PERSON_CONFIDENCE
                        and PERSON_PART_SHARE * smallest <= r.box_area <= PERSON_MAX_GROWTH * largest
                        or r.share >= NET_ONLY_SHARE and r.confidence >= CUT_PERSON_CONFIDENCE)
                        and not (pair and all(_same_person(r.box, b) for b in pair))]

    def _second_person(self, hidden: np.ndarray, first: Box) -> list[Box]:
        """The person MediaPipe finds in ``hidden`` (the photo with the first
        person hidden), if at least SECOND_PERSON_HEIGHT of the first one's
        height: much smaller people are bystanders, left out."""
        again = self._pose(hidden)
        if again.landmarks is None:
            return []
        box = pose_box(again, *hidden.shape[:2])
        return [box] if box[3] - box[1] >= SECOND_PERSON_HEIGHT * (first[3] - first[1]) else []

    def _search_windows(self, rgb: np.ndarray, side: int, per_window: int) -> list[Box]:
        """Boxes of the people MediaPipe finds in square windows of ``side``
        overlapping by half, up to ``per_window`` in each."""
        found = []
        for x0, y0 in _windows(*rgb.shape[:2], side):
            window = np.array(rgb[y0:y0 + side, x0:x0 + side])
            for _ in range(per_window):
                window_pose = self._pose(window)
                if window_pose.landmarks is None:
                    break
                bx0, by0, bx1, by1 = pose_box(window_pose, side, side)
                found.append((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0))
                # MediaPipe finds one person per call: hide this one to find the next.
                _hide(window, (bx0, by0, bx1, by1))
        return found

    def _network(self, rgb: np.ndarray, pose: Pose, target: int, views: tuple[tuple[float, bool], ...],
                 base: np.ndarray | None = None, finding: bool = False) -> np.ndarray:
        """Mean probabilities (K, h, w) over ``views`` (scale of the working size,
        mirrored); ``base``: ``working_copy(rgb, target)``, if already made;
        ``finding``: the pass only finds the people (a wide frame's whole-photo
        pass before its crops), so a network that joins the main one for
        photos without a head is not asked."""
        base = working_copy(rgb, target) if base is None else base
        h, w = base.shape[:2]
        # Edges wider at the working size than a training photo's (an
        # out-of-focus photo, a small person's crop enlarged) are sharpened in every view.
        blur = edge_width(base)
        blurred = out_of_focus(blur)
        condition: Condition = "blurred" if blurred else "headless" if not finding and shows_no_head(pose) else None
        total = np.zeros((len(FINE_LABELS), h, w), np.float32)
        for scale, flip in views:
            sh, sw = working_size(rgb.shape[0], rgb.shape[1], round(target * scale))
            # Quality 2's larger views by area, even where they enlarge a crop:
            # Lanczos there took upper's quality 2 from 0.602 to 0.595 (hair, skin).
            img = base if (sh, sw) == (h, w) else cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
            if blurred:
                img = sharpened(img, SHARPEN_RADIUS * blur * scale)
            view = np.ascontiguousarray(img[:, ::-1]) if flip else img
            probs = self.backend.probabilities(view, _flip_pose(pose) if flip else pose, condition)
            if flip:
                probs = probs[:, :, ::-1]
            if (sh, sw) != (h, w):
                probs = cv2.resize(probs.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_LINEAR)
                probs = probs.reshape(h, w, -1).transpose(2, 0, 1)
            total += probs
        return total / len(views)

    def segment(self, rgb: np.ndarray, options: SegmentOptions) -> Segmentation:
        rgb = as_trained(rgb)  # the network's view and the edges of detail_mode 2 alike
        parsing = self._parse_as_trained(rgb, options.quality, options.detail_mode)
        H, W = rgb.shape[:2]
        person_pixels = sum(float((r.probs[FINE_INDEX["background"]] < 0.5).mean()) * _area(r.box)
                            for r in parsing.regions)
        result = Segmentation(person_fraction=person_pixels / (H * W))
        if not parsing.has_person:
            return result
        names: list[str] = []
        if options.output_type in (1, 3):
            names += [f"class:{name}" for name in CLASS_TYPES[options.class_type]]
        if options.output_type in (2, 3):
            for cat, members in CLOTHING_CATEGORIES.items():
                found = sum(float((r.probs[fine_indices(members)].sum(0) > 0.5).mean()) * _area(r.box)
                            for r in parsing.regions)
                if found >= MIN_CATEGORY_FRACTION * H * W:
                    names.append(f"cat:{cat}")
        if not names:
            return result
        per_region = [self._region_masks(rgb, region, names, options.detail_mode) for region in parsing.regions]
        for n in names:
            kind, name = n.split(":", 1)
            mask = parsing.paste([masks.pop(0) for masks in per_region])  # each region's mask freed as pasted
            (result.class_masks if kind == "class" else result.clothing_masks)[name] = mask
        return result

    @staticmethod
    def _region_masks(rgb: np.ndarray, region: Region, names: list[str], detail_mode: int) -> list[np.ndarray]:
        """One uint8 mask (box height, box width) per name, for one region."""
        probs = region.probs
        person = 1.0 - probs[FINE_INDEX["background"]]

        def soft(n: str) -> np.ndarray:
            if n == "class:others":
                return others_map(person, region.person_prior)
            return probs[fine_indices(mask_members(n))].sum(0)

        stack = np.stack([soft(n) for n in names])
        # The photo's own edges decide the boundary; the head keeps no holes
        # (a dark edge inside it, sunglasses, can pull the filter under 0.5).
        masks = guided_masks(region.crop(rgb), stack, region.refinement(detail_mode))
        # The filter can overshoot below 0 beside an edge, so a sum of labels
        # (head, clothes) could dip under one of its parts there: each mask
        # holds the masks of the labels it sums, smallest first.
        members = [frozenset(mask_members(n)) for n in names]
        for i in sorted(range(len(names)), key=lambda k: len(members[k])):
            for j, part in enumerate(members):
                if part and part < members[i]:
                    np.maximum(masks[i], masks[j], out=masks[i])
        if "class:head" in names:
            head = masks[names.index("class:head")]
            head[enclosed_holes(head >= 128)] = 255
        return masks


def mask_members(name: str) -> tuple[str, ...]:
    """The fine labels whose probabilities the mask ``name`` ("class:tops",
    "cat:skirt") sums; none for "class:others"."""
    kind, label = name.split(":", 1)
    return (CLOTHING_CATEGORIES if kind == "cat" else API_CLASS_MEMBERS)[label]


def others_map(person: np.ndarray, person_prior: np.ndarray) -> np.ndarray:
    """Person pixels that no other class covers: what MediaPipe calls person and
    our network does not (a held phone or umbrella, an unlabelled part).  The
    two masks disagree by a thin band along every outline, which is background;
    an opening as wide as OTHERS_MIN_THICKNESS of the person's height keeps
    only solid pieces."""
    raw = np.clip(person_prior - person, 0.0, 1.0)
    rows = np.nonzero((person > 0.5).any(1))[0]
    if not len(rows):
        return np.zeros_like(raw)
    size = max(3, round(OTHERS_MIN_THICKNESS * (rows[-1] - rows[0] + 1)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    solid = cv2.morphologyEx((raw > OTHERS_MIN_PROBABILITY).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return raw * cv2.dilate(solid, np.ones((3, 3), np.uint8))


def tta_views(quality: int, hard: bool = False) -> tuple[tuple[float, bool], ...]:
    """(scale, mirrored) views averaged at ``quality``; the first is the plain view.
    At quality 1 a ``hard`` input is also parsed mirrored: a crop around a
    person who fills only part of the photo (enlarged from fewer of its
    pixels; such a photo already pays for the pose search) or an out-of-focus
    photo.  The second view gains +0.005 to +0.011 mIoU on every framing of
    such photos; a sharp photo one person fills keeps one pass."""
    if quality == 1:
        return ((1.0, False), (1.0, True)) if hard else ((1.0, False),)
    return ((1.0, False), *((s, f) for s in TTA_SCALES for f in (False, True) if (s, f) != (1.0, False)))


@dataclass(frozen=True)
class PersonRegion:
    """A connected region the network calls person, in the photo's pixels."""

    box: Box
    share: float  # of the photo's area
    confidence: float  # mean person probability inside

    @property
    def box_area(self) -> int:
        return _area(self.box)


def person_regions(probs: np.ndarray, height: int, width: int) -> list[PersonRegion]:
    """The network's person regions in a photo of (height, width), largest first."""
    person = 1.0 - probs[FINE_INDEX["background"]]
    count, labels, stats, _ = cv2.connectedComponentsWithStats((person > 0.5).astype(np.uint8), connectivity=8)
    h, w = person.shape
    sy, sx = height / h, width / w
    regions = []
    for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:MAX_REGIONS] + 1:
        x, y, bw, bh, area = stats[i]
        if area < MIN_PERSON_FRACTION * person.size:
            break
        box = (int(x * sx), int(y * sy), int(np.ceil((x + bw) * sx)), int(np.ceil((y + bh) * sy)))
        regions.append(PersonRegion(box, area / person.size, float(person[labels == i].mean())))
    return regions


def person_outside(probs: np.ndarray, box: Box, height: int, width: int) -> float:
    """The network's person probability outside ``box`` (in a photo of
    (height, width)) as a share of that inside it."""
    person = 1.0 - probs[FINE_INDEX["background"]]
    h, w = person.shape
    x0, y0, x1, y1 = box
    inside = person[int(y0 * h / height):int(np.ceil(y1 * h / height)),
                    int(x0 * w / width):int(np.ceil(x1 * w / width))].sum()
    return float((person.sum() - inside) / max(inside, 1e-6))


def rotation_on_canvas(height: int, width: int, degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2x3 affine that turns a (height, width) photo ``degrees``
    counter-clockwise onto a canvas that holds it all, and the canvas's
    (width, height)."""
    cos, sin = abs(np.cos(np.radians(degrees))), abs(np.sin(np.radians(degrees)))
    size = (int(np.ceil(width * cos + height * sin)), int(np.ceil(height * cos + width * sin)))
    affine = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    affine[:, 2] += (size[0] - width) / 2, (size[1] - height) / 2
    return affine, size


def head_shares(probs: np.ndarray) -> np.ndarray:
    """The shares of the pixels whose most likely label is face, and hair."""
    counts = np.bincount(probs.argmax(0).ravel(), minlength=len(FINE_LABELS))
    return counts[[FINE_INDEX["face"], FINE_INDEX["hair"]]] / counts.sum()


def torso_lean(pose: Pose, height: int, width: int) -> float | None:
    """Degrees from upright of MediaPipe's torso (hips to shoulders): 0 standing,
    90 lying with the head to the right, -90 to the left; None without a pose."""
    if pose.landmarks is None:
        return None
    points = pose.landmarks[:, :2] * np.array([width, height], np.float32)
    up = points[SHOULDERS].mean(0) - points[HIPS].mean(0)
    return float(np.degrees(np.arctan2(up[0], -up[1])))


def pose_box(pose: Pose, height: int, width: int) -> Box:
    """The box of MediaPipe's person: its mask and its visible landmarks."""
    mask = pose.person_mask > 0.5
    xs, ys = [], []
    if mask.any():
        sy, sx = height / mask.shape[0], width / mask.shape[1]
        rows, cols = np.nonzero(mask)
        xs += [cols.min() * sx, (cols.max() + 1) * sx]
        ys += [rows.min() * sy, (rows.max() + 1) * sy]
    if pose.landmarks is not None:
        seen = pose.landmarks[pose.landmarks[:, 2] > 0.5]
        xs += list(np.clip(seen[:, 0], 0, 1) * width)
        ys += list(np.clip(seen[:, 1], 0, 1) * height)
    if not xs:
        return 0, 0, width, height
    return int(min(xs)), int(min(ys)), int(np.ceil(max(xs))), int(np.ceil(max(ys)))


def bounding_box(boxes: list[Box]) -> Box:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def crop_box(boxes: list[Box], height: int, width: int) -> Box:
    """The region around every box, with a margin, widened towards the 2:3
    portrait the network was trained on."""
    x0, y0, x1, y1 = bounding_box(boxes)
    margin = CROP_MARGIN * max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = x0 - margin, y0 - margin, x1 + margin, y1 + margin
    min_width = (y1 - y0) * 2 / 3
    if x1 - x0 < min_width:
        grow = (min_width - (x1 - x0)) / 2
        x0, x1 = x0 - grow, x1 + grow
    return max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))


def distinct_people(people: list[Box]) -> list[Box]:
    """One box per person: boxes that mostly cover one another (MediaPipe's
    person and the network's region of the same person) become their union."""
    merged = list(people)
    for i, j in itertools.combinations(range(len(merged)), 2):
        a, b = merged[i], merged[j]
        if _same_person(a, b):
            return distinct_people([bounding_box([a, b])] + [m for k, m in enumerate(merged) if k not in (i, j)])
    return merged


def group_people(people: list[Box], height: int, width: int) -> list[list[Box]]:
    """The people in groups whose crops overlap (each person in one group), so
    that the groups' regions do not."""
    groups = [[b] for b in people]
    merged = True
    while merged:
        merged = False
        crops = [bounding_box([crop_box([p], height, width) for p in g]) for g in groups]
        for i, j in itertools.combinations(range(len(groups)), 2):
            if _overlap(crops[i], crops[j]):
                groups[i] += groups.pop(j)
                merged = True
                break
    return groups


def composed_region(members: list[Region]) -> Region:
    """One region over the boxes of ``members`` (overlapping crops), at the
    finest of their resolutions: each pixel takes the probabilities of the
    member most sure it is a person (a person at the edge of a neighbour's
    crop is parsed better in their own).  Hair or shoes in a small patch
    the network is unsure of are noise in the group as in a crop (a scrap
    of a person, enlarged in its own crop, wins a few pixels)."""
    x0, y0, x1, y1 = bounding_box([m.box for m in members])
    scale = max(m.probs.shape[1] / (m.box[3] - m.box[1]) for m in members)
    # A crowd spread over a large photo: no more pixels than COMPOSED_MAX_CROPS crops hold.
    most = COMPOSED_MAX_CROPS * max(m.probs.shape[1] * m.probs.shape[2] for m in members)
    scale = min(scale, float(np.sqrt(most / _area((x0, y0, x1, y1)))))
    h, w = max(1, int((y1 - y0) * scale)), max(1, int((x1 - x0) * scale))
    probs = np.zeros((len(FINE_LABELS), h, w), np.float32)
    probs[FINE_INDEX["background"]] = 1
    prior = np.zeros((h, w), np.float32)
    for m in members:
        top, left = round((m.box[1] - y0) * scale), round((m.box[0] - x0) * scale)
        bottom, right = min(h, round((m.box[3] - y0) * scale)), min(w, round((m.box[2] - x0) * scale))
        size = (right - left, bottom - top)
        member = cv2.resize(m.probs.transpose(1, 2, 0), size, interpolation=cv2.INTER_LINEAR)
        member = member.reshape(bottom - top, right - left, -1).transpose(2, 0, 1)
        window = probs[:, top:bottom, left:right]
        surer = member[FINE_INDEX["background"]] < window[FINE_INDEX["background"]]
        window[:, surer] = member[:, surer]
        prior_window = prior[top:bottom, left:right]
        np.maximum(prior_window, cv2.resize(m.person_prior, size, interpolation=cv2.INTER_LINEAR), out=prior_window)
    return Region((x0, y0, x1, y1), without_specks(probs, probs.argmax(0), unsure_only=True)[0], prior)


def _hide(image: np.ndarray, box: Box) -> np.ndarray:
    """``image`` with ``box`` filled with its mean colour (in place), so that
    MediaPipe, which finds one person per call, finds another."""
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = image.reshape(-1, 3).mean(0).astype(np.uint8)
    return image


def _hide_person(image: np.ndarray, pose: Pose) -> np.ndarray:
    """``image`` with the pixels of MediaPipe's person (its segmentation mask) filled with the image's mean colour."""
    h, w = image.shape[:2]
    mask = cv2.resize(pose.person_mask, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8), iterations=max(1, h // 200)) > 0
    image[mask] = image.reshape(-1, 3).mean(0).astype(np.uint8)
    return image


def _same_person(a: Box, b: Box) -> bool:
    """Whether boxes ``a`` and ``b`` mostly cover one another (SAME_PERSON_OVERLAP of the smaller)."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))) if _overlap(a, b) else 0
    return inter >= SAME_PERSON_OVERLAP * min(_area(a), _area(b))


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _windows(height: int, width: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of square windows of ``side`` covering the photo, overlapping by half."""
    def starts(length: int) -> list[int]:
        n = max(1, int(np.ceil((length - side) / (side / 2))) + 1)
        return sorted({round(i * (length - side) / max(1, n - 1)) for i in range(n)})

    return [(x, y) for y in starts(height) for x in starts(width)]


def tidy_region(box: Box, probs: np.ndarray, pose: Pose, rgb: np.ndarray) -> Region:
    """The region ``box`` from the network's probabilities over it, the pose
    found in it and its pixels ``rgb``: no shoes without feet, no specks of a
    label, a dress in one piece, no holes in the head."""
    probs = without_unseen_feet(probs, pose)
    probs, label = without_specks(probs, probs.argmax(0))  # one argmax (~5 ms) serves both rules
    probs = fill_head_holes(whole_dresses(probs, label, rgb))
    return Region(box, probs, _resized(pose.person_mask, probs.shape[1:]))


def without_specks(probs: np.ndarray, label: np.ndarray, unsure_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A label that wins only a speck of the region (a few hair pixels on a
    hips-to-feet photo, stray shoe pixels on a portrait), or hair or shoes
    that win only a small patch the network is unsure of, is noise: its
    probability goes to the other labels, so its mask is empty.  ``label`` is
    the argmax of ``probs``; both are returned, updated.  ``unsure_only``:
    only the second rule (a group's region, where a label small in the
    group can be one person's whole belt)."""
    counts = np.bincount(label.ravel(), minlength=len(FINE_LABELS))
    specks = (counts > 0) & (counts < MIN_LABEL_SHARE * label.size) & (not unsure_only)
    specks[FINE_INDEX["background"]] = False
    for part in fine_indices(UNSURE_PARTS):
        if counts[part] and not specks[part] and counts[part] < UNSURE_PART_SHARE * label.size:
            specks[part] = float(probs[part][label == part].mean()) < UNSURE_PART_CONFIDENCE
    if not specks.any():
        return probs, label
    probs = probs.copy()
    probs[specks] = 0
    probs /= np.maximum(probs.sum(0, keepdims=True), 1e-6)
    label = label.copy()
    where = specks[label]
    label[where] = probs[:, where].argmax(0)
    return probs, label


def whole_dresses(probs: np.ndarray, label: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """One garment, one class: the network often calls a dress's bodice a top
    when the skirt is small or cut off by the frame.  When the pixels it calls
    (``label``, the argmax of ``probs``) top and those it calls dress have one
    colour, the top is the dress's."""
    top, dress = label == FINE_INDEX["upper"], label == FINE_INDEX["dress"]
    tops, dresses = int(top.sum()), int(dress.sum())
    if not tops or dresses < WHOLE_DRESS_MIN_SHARE * (tops + dresses):
        return probs
    small = cv2.resize(rgb, (probs.shape[2], probs.shape[1]), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    difference = lab[top].mean(0) - lab[dress].mean(0)
    difference[0] *= 0.5
    if float(np.linalg.norm(difference)) > WHOLE_DRESS_COLOUR:
        return probs
    probs = probs.copy()
    probs[FINE_INDEX["dress"]] += probs[FINE_INDEX["upper"]]
    probs[FINE_INDEX["upper"]] = 0
    return probs


def without_unseen_feet(probs: np.ndarray, pose: Pose) -> np.ndarray:
    """A photo cut above the ankles (head to hips, a portrait) shows no shoes:
    when MediaPipe places every ankle and foot landmark below the photo's
    bottom edge, the shoe probability goes to background."""
    if pose.landmarks is None or (pose.landmarks[FEET_LANDMARKS, 1] <= FEET_OUTSIDE).any():
        return probs
    probs = probs.copy()
    probs[FINE_INDEX["background"]] += probs[FINE_INDEX["shoes"]]
    probs[FINE_INDEX["shoes"]] = 0
    return probs


def shows_no_head(pose: Pose) -> bool:
    """Whether the image shows no head: MediaPipe places every head landmark
    above its top edge, or finds no pose at all (as in 90 of the 101
    validation photos cut hips to feet; a photo without a person also finds
    none)."""
    return pose.landmarks is None or bool((pose.landmarks[HEAD_LANDMARKS, 1] < HEAD_OUTSIDE).all())


def enclosed_holes(mask: np.ndarray) -> np.ndarray:
    """The pixels outside ``mask`` (bool) that ``mask`` encloses: not joined to
    the image border by pixels outside it."""
    flood = np.pad((~mask).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(flood, None, (0, 0), 2)
    return flood[1:-1, 1:-1] == 1


def fill_head_holes(probs: np.ndarray) -> np.ndarray:
    """Skin or background enclosed by the head (hair, face, headwear, eyewear) is
    face: a forehead under a fringe, skin between hair and glasses.  The head
    mask the API returns then has no holes."""
    head_labels = fine_indices(API_CLASS_MEMBERS["head"])
    holes = enclosed_holes(probs[head_labels].sum(0) > 0.5)
    if not holes.any():
        return probs
    other = np.ones(len(FINE_LABELS), bool)
    other[head_labels] = False
    inside = probs[:, holes]
    inside[FINE_INDEX["face"]] += inside[other].sum(0)
    inside[other] = 0
    probs = probs.copy()
    probs[:, holes] = inside
    return probs


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _resized(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _flip_pose(pose: Pose) -> Pose:
    lms = None
    if pose.landmarks is not None:
        lms = pose.landmarks.copy()
        lms[:, 0] = 1.0 - lms[:, 0]
    return Pose(lms, np.ascontiguousarray(pose.person_mask[:, ::-1]))


__all__ = ["API_CLASSES", "Backend", "Engine", "Parsing", "Region", "SegmentOptions", "Segmentation"]
