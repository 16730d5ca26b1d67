"""Engine latency and memory, and the cost of a SegFormer-B2 for comparison.

    python benchmarks/latency.py [--runs 30] [--threads 2] [--image PATH] [--model [KIND:]PATH]

Prints p50/p95 of the full engine path for a 1024 px-long photo, class_type 4,
quality 1 (resize, pose, model, upsampling, PNG encoding of all twelve masks),
the same for quality 2 / detail 2, for the person small in a 1920x1080 frame
and for a 4000 px photo, the peak RSS of this process after the
engine runs, and then the p50 of a randomly initialised SegFormer-B2
(transformers) forward pass with the same thread count at the photo's size, at
512x512 (its usual input) and at our network's working size.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from clothseg.cli import return_freed_memory
from clothseg.engine import SegmentOptions, load_engine
from clothseg.engine.core import WORKING_HEIGHT, working_size
from clothseg.imaging import encode_png

ROOT = Path(__file__).resolve().parent.parent


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def time_engine(engine, rgb: np.ndarray, options: SegmentOptions, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(runs + 2):
        t = time.perf_counter()
        seg = engine.segment(rgb, options)
        for mask in seg.class_masks.values():
            encode_png(mask)
        del seg  # as a worker drops a task's masks once stored, not during the next task
        if i >= 2:  # warm-up runs excluded
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image", type=Path, default=ROOT / "tests/data/ccp/photos/0040.jpg")
    p.add_argument("--model", help="[kind:]path, as CLOTHSEG_MODEL takes it (default: the bundled model)")
    args = p.parse_args()

    img = Image.open(args.image).convert("RGB")
    scale = 1024 / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    rgb = np.asarray(img)
    print(f"input {img.width}x{img.height}, {args.threads} threads, {args.runs} runs")

    return_freed_memory()  # as `clothseg serve` and `clothseg worker` run the engine
    engine = load_engine(args.model, threads=args.threads)
    for label, opts in (("quality 1", SegmentOptions(4, 1, 1, 1)),
                        ("quality 2", SegmentOptions(4, 2, 1, 1)),
                        ("detail 2", SegmentOptions(4, 1, 2, 1))):
        runs = args.runs if label == "quality 1" else max(5, args.runs // 3)
        p50, p95 = percentiles(time_engine(engine, rgb, opts, runs))
        print(f"clothseg {label:9s}: p50 {p50 * 1000:6.0f} ms   p95 {p95 * 1000:6.0f} ms")
    # Other framings of the same photo, quality 1: small in a 1920x1080 frame (a
    # crop pass after the whole-photo pass), two side by side (a pass for each),
    # black and white (the grayscale model, loaded on the first one), out of focus
    # (the blur model, likewise; a Gaussian of 1/280 of the height, as the blurred
    # framing), its lower half (no head: the cut model and the main one, blended)
    # and a 4000 px photo in colour and in black and white (the main
    # model and one of the other three held: the peak RSS).
    wide = np.array(Image.fromarray(rgb).resize((96, 54)).resize((1920, 1080), Image.Resampling.BICUBIC))
    person = img.resize((round(img.width * 500 / img.height), 500), Image.Resampling.LANCZOS)
    wide[420:920, 1200:1200 + person.width] = np.asarray(person)
    two = np.ascontiguousarray(np.concatenate([rgb, rgb[:, ::-1]], 1))
    gray = np.ascontiguousarray(np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, 2))
    blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(img.height / 280)))
    lower = np.ascontiguousarray(rgb[rgb.shape[0] // 2:])
    scale = 4000 / max(img.size)
    large = np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS))
    large_gray = np.ascontiguousarray(np.repeat(large.mean(2, dtype=np.float32).astype(np.uint8)[:, :, None], 3, 2))
    size = f"{large.shape[1]}x{large.shape[0]}"
    for label, photo in (("wide 1920x1080, person 500 px", wide), ("two side by side", two),
                         ("black and white", gray), ("out of focus", blurred), ("lower half", lower), (size, large),
                         (f"{size} black and white", large_gray)):
        for opts in (SegmentOptions(4, 1, 1, 1), SegmentOptions(4, 1, 2, 1)):
            p50, p95 = percentiles(time_engine(engine, photo, opts, max(5, args.runs // 3)))
            print(f"clothseg quality 1 detail {opts.detail_mode} {label}: p50 {p50 * 1000:6.0f} ms   "
                  f"p95 {p95 * 1000:6.0f} ms")
    print(f"peak RSS after the engine: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.set_num_threads(args.threads)
    b2 = SegformerForSemanticSegmentation(SegformerConfig(
        depths=[3, 4, 6, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768, num_labels=18,
    )).eval()
    h, w = working_size(rgb.shape[0], rgb.shape[1], WORKING_HEIGHT)
    # The photo's own size (what the engine is given), SegFormer's usual 512x512,
    # and our network's working size (the strictest comparison).
    sizes = (("the photo's size", rgb.shape[:2]), ("512x512", (512, 512)), ("our working size", (h, w)))
    for label, (sh, sw) in sizes:
        x = torch.randn(1, 3, sh, sw)
        samples = []
        with torch.inference_mode():
            for i in range(max(5, args.runs // 3) + 1):
                t = time.perf_counter()
                b2(pixel_values=x)
                if i:
                    samples.append(time.perf_counter() - t)
        print(f"SegFormer-B2 forward only at {label} ({sh}x{sw}): p50 {statistics.median(samples) * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
