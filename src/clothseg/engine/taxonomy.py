"""The fine label taxonomy of our model and its one mapping table to the API.

The model predicts one of ``FINE_LABELS`` per pixel.  Everything the service
returns (the twelve API classes, the finer clothing categories of the ZIP and
the nine evaluation classes) is derived from it through the tables below, so
that there is exactly one place that says what a class covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

FINE_LABELS: Final[tuple[str, ...]] = (
    "background",
    "hair",
    "face",  # facial skin (forehead to chin, ears excluded)
    "body",  # all other visible skin: neck, arms, hands, legs
    "headwear",  # hat, cap, hood worn on the head
    "eyewear",  # glasses, sunglasses
    "outerwear",  # coat, jacket, blazer, suit jacket, cape, cardigan, vest
    "upper",  # shirt, blouse, t-shirt, top, sweater, sweatshirt, hoodie, bodysuit, bra
    "dress",  # dress, romper, jumpsuit, swimsuit
    "skirt",
    "pants",  # trousers, jeans, leggings
    "shorts",
    "legwear",  # socks, stockings, tights
    "shoes",  # every kind of footwear
    "bag",  # bag, purse, wallet
    "accessory",  # belt, scarf, tie, gloves, jewellery, watch, other accessories
)
FINE_INDEX: Final[Mapping[str, int]] = MappingProxyType({n: i for i, n in enumerate(FINE_LABELS)})

# The twelve API classes, in the order the spec lists them for class_type 4.
API_CLASSES: Final[tuple[str, ...]] = (
    "hair", "face", "head", "clothes", "tops", "bottoms",
    "dress", "bag", "shoes", "acc", "body", "others",
)

# API class -> the fine labels whose probabilities are summed into its mask.
API_CLASS_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "hair": ("hair",),
    "face": ("face",),
    "head": ("hair", "face", "headwear", "eyewear"),
    "clothes": ("outerwear", "upper", "dress", "skirt", "pants", "shorts", "legwear"),
    "tops": ("outerwear", "upper"),
    "bottoms": ("skirt", "pants", "shorts"),
    "dress": ("dress",),
    "bag": ("bag",),
    "shoes": ("shoes",),
    "acc": ("headwear", "eyewear", "accessory"),
    "body": ("body",),
    # Person pixels in no other API class.  Every fine label is covered by a
    # class above, so "others" is the person area the model could not attribute
    # (defined in the engine as person probability minus all named classes).
    "others": (),
})

CLASS_TYPES: Final[Mapping[int, tuple[str, ...]]] = MappingProxyType({
    1: ("clothes", "tops", "bottoms", "dress", "acc"),
    2: ("clothes", "tops", "bottoms", "dress", "bag", "shoes", "acc"),
    3: ("hair", "face", "head", "body"),
    4: API_CLASSES,
})

# Finer clothing categories of the ZIP (output_type 2/3) -> fine labels.
CLOTHING_CATEGORIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "outerwear": ("outerwear",),
    "upper_top": ("upper",),
    "dress": ("dress",),
    "skirt": ("skirt",),
    "pants": ("pants",),
    "shorts": ("shorts",),
    "legwear": ("legwear",),
    "shoes": ("shoes",),
    "bag": ("bag",),
    "headwear": ("headwear",),
    "eyewear": ("eyewear",),
    "accessory": ("accessory",),
})

# The nine evaluation classes of `clothseg eval` and the fine labels each covers.
EVAL_CLASSES: Final[tuple[str, ...]] = (
    "background", "hair", "skin", "tops", "bottoms", "dress", "bag", "shoes", "acc",
)
EVAL_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "background": ("background", "legwear"),
    "hair": ("hair",),
    "skin": ("face", "body"),
    "tops": ("outerwear", "upper"),
    "bottoms": ("skirt", "pants", "shorts"),
    "dress": ("dress",),
    "bag": ("bag",),
    "shoes": ("shoes",),
    "acc": ("headwear", "eyewear", "accessory"),
})

# CCP label name -> fine label.  CCP's "skin" is split into face/body by the
# training data preparation (face region from MediaPipe), see docs/MODEL.md.
CCP_TO_FINE: Final[Mapping[str, str]] = MappingProxyType({
    "null": "background",
    "hair": "hair",
    "skin": "body",
    "hat": "headwear",
    "glasses": "eyewear", "sunglasses": "eyewear",
    **{n: "outerwear" for n in ("blazer", "cape", "cardigan", "coat", "jacket", "suit", "vest")},
    **{n: "upper" for n in ("blouse", "bodysuit", "bra", "hoodie", "intimate", "jumper", "shirt",
                            "sweater", "sweatshirt", "t-shirt", "top")},
    **{n: "dress" for n in ("dress", "romper", "swimwear")},
    "skirt": "skirt",
    **{n: "pants" for n in ("jeans", "leggings", "pants")},
    **{n: "shorts" for n in ("shorts", "panties")},
    **{n: "legwear" for n in ("socks", "stockings", "tights")},
    **{n: "shoes" for n in ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals",
                            "shoes", "sneakers", "wedges")},
    **{n: "bag" for n in ("bag", "purse", "wallet")},
    **{n: "accessory" for n in ("accessories", "belt", "bracelet", "earrings", "gloves",
                                "necklace", "ring", "scarf", "tie", "watch")},
})

# CCP labels whose pixels the evaluation ignores (as issue #4 defines it).
CCP_IGNORED: Final[frozenset[str]] = frozenset({"socks", "stockings", "tights"})


def fine_indices(names: tuple[str, ...]) -> list[int]:
    """Indices into FINE_LABELS of the given fine label names."""
    return [FINE_INDEX[n] for n in names]
