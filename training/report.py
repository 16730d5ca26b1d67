"""Evaluate the exported model on our CCP validation split and write the figures
into docs/MODEL.md (between the quality markers).

    python -m training.report --ccp ../shared/datasets/ccp

Runs the same evaluation as ``clothseg eval --ccp DIR --split val --quality N``
for quality 1 and 2, on photos never trained on.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from clothseg.engine import load_engine
from clothseg.engine.evaluation import EvalResult, annotated_stems, evaluate, validation_split
from clothseg.engine.taxonomy import EVAL_CLASSES

BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"


def table(results: dict[int, EvalResult]) -> str:
    head = "| quality | images | mIoU | pixel acc. | " + " | ".join(EVAL_CLASSES) + " |"
    rule = "|" + "---|" * (4 + len(EVAL_CLASSES))
    rows = [f"| {q} | {r.images} | **{r.miou:.3f}** | {r.pixel_accuracy:.3f} | "
            + " | ".join(f"{r.iou[c]:.3f}" for c in EVAL_CLASSES) + " |" for q, r in results.items()]
    return "\n".join([head, rule, *rows])


def interval_table(results: dict[int, EvalResult]) -> str:
    head = "| quality | mIoU | " + " | ".join(EVAL_CLASSES) + " |"
    rule = "|" + "---|" * (2 + len(EVAL_CLASSES))
    rows = []
    for q, r in results.items():
        spans = r.intervals()
        rows.append(f"| {q} | " + " | ".join(f"{spans[c][0]:.2f}-{spans[c][1]:.2f}" for c in ("miou", *EVAL_CLASSES))
                    + " |")
    return "\n".join([head, rule, *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ccp", type=Path, default=Path("../shared/datasets/ccp"))
    p.add_argument("--doc", type=Path, default=Path("docs/MODEL.md"))
    args = p.parse_args()
    engine = load_engine()
    stems = validation_split(annotated_stems(args.ccp))[1]
    results: dict[int, EvalResult] = {}
    for quality in (1, 2):
        start = time.time()
        results[quality] = evaluate(engine, args.ccp, stems, quality)
        print(f"quality {quality} ({time.time() - start:.0f} s):", json.dumps(results[quality].as_dict()))
    section = "\n".join([
        BEGIN,
        f"Validation split ({len(stems)} CCP photos never trained on), nine eval classes as issue #4 "
        "defines them (skin = our face + body; socks/stockings/tights pixels ignored; a pixel's class is "
        "the largest sum of its fine-label probabilities, snapped to the photo's edges as the API's detail-mode-1 "
        "masks are), IoU per class, "
        f"measured {time.strftime('%Y-%m-%d')} with "
        "`clothseg eval --ccp ../shared/datasets/ccp --split val --quality N` "
        "(all of it: `python -m training.report`):",
        "",
        table(results),
        "",
        "95% intervals of the same figures (percentile bootstrap over the photos, 2,000 draws, "
        "`EvalResult.intervals`): the range another draw of validation photos could give.",
        "",
        interval_table(results),
        END,
    ])
    doc = args.doc.read_text()
    doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, doc, flags=re.S)
    args.doc.write_text(doc)
    print(f"updated {args.doc}")


if __name__ == "__main__":
    main()
