"""False payloads on unmarked images: sdkit's ``extract`` over the unmarked corpus, in parallel.

Issue 22 asks for 0 false payloads in 10,000 unmarked images. The corpus is
``watermark_data.unmarked_corpus`` (every benchmark photo at 512 and 1024 px, then, in turn: random
crops, resizes, flips, JPEG and WebP re-encodings, rotations of those photos, flat colours,
gradients, Gaussian and uniform noise, salt-and-pepper), item ``i`` drawn from
``default_rng([seed, i])``, so any slice can be rerun alone. Each worker process runs ``extract``
on its share with one BLAS/OpenMP thread; any non-None result is a false positive and is listed.

The table gives, per kind, the images, the false payloads and the median extract time; the last
line compares the count with the analytic bound (``provenance.watermark.false_accept_bound``:
``extract`` makes at most ``ss2.MAX_DECODES`` sdkit-ss2 decodes plus 3 sdkit-ss1 decodes per
image, each at most ``payload.false_accept_probability(5)``).

    python benchmarks/watermark_false_positives.py [--count 10000] [--start 0] [--workers 2]
        [--seed 0] [--json PATH]
"""

# ruff: noqa: E402  (the thread pins must come before numpy and OpenCV load)
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from watermark_data import corpus_item

from provenance.watermark import extract, false_accept_bound


def _one(job: tuple[int, int]) -> dict[str, Any]:
    index, seed = job
    item = corpus_item(index, seed)
    started = time.perf_counter()
    try:
        detection = extract(item.image)
    except Exception as exc:  # a crash on an unmarked image is a finding too
        return {"index": index, "kind": item.kind, "name": item.name, "error": repr(exc)}
    return {
        "index": index,
        "kind": item.kind,
        "name": item.name,
        "size": list(item.image.size),
        "seconds": time.perf_counter() - started,
        "positive": None if detection is None else repr(detection),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="unmarked images")
    parser.add_argument("--start", type=int, default=0, help="first corpus index")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    jobs = [(i, args.seed) for i in range(args.start, args.start + args.count)]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(_one, jobs, chunksize=8):
            results.append(result)
            if result.get("positive"):
                print(f"  FALSE POSITIVE #{result['index']} {result['name']}: {result['positive']}")
            if result.get("error"):
                print(f"  ERROR #{result['index']} {result['name']}: {result['error']}")
            if len(results) % 500 == 0:
                rate = len(results) / (time.perf_counter() - started)
                print(f"  {len(results)}/{len(jobs)} images, {rate:.1f}/s", flush=True)
    elapsed = time.perf_counter() - started

    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        kinds[result["kind"]].append(result)
    per_image = false_accept_bound()  # union bound over extract's decodes; then over images
    positives = [r for r in results if r.get("positive")]
    errors = [r for r in results if r.get("error")]
    print(f"\nsdkit extract on {len(results)} unmarked images ({args.workers} workers):")
    print(f"{'kind':<18}{'images':>8}{'false':>7}{'errors':>8}{'median s':>10}")
    table = {}
    for kind in sorted(kinds):
        rows = kinds[kind]
        seconds = [r["seconds"] for r in rows if "seconds" in r]
        row = {
            "images": len(rows),
            "false_positives": sum(1 for r in rows if r.get("positive")),
            "errors": sum(1 for r in rows if r.get("error")),
            "median_s": statistics.median(seconds) if seconds else None,
        }
        table[kind] = row
        median = f"{row['median_s']:.3f}" if row["median_s"] is not None else "-"
        print(
            f"{kind:<18}{row['images']:>8}{row['false_positives']:>7}{row['errors']:>8}{median:>10}"
        )
    print(
        f"{'all':<18}{len(results):>8}{len(positives):>7}{len(errors):>8}"
        f"   ({elapsed:.0f} s wall on {platform.processor() or platform.machine()})"
    )
    print(
        f"bound: {per_image:.1e} per image, {per_image * len(results):.1e} expected false "
        f"payloads over this run; found {len(positives)}"
    )
    if args.json:
        out = {
            "benchmark": "watermark_false_positives",
            "count": len(results),
            "start": args.start,
            "seed": args.seed,
            "workers": args.workers,
            "elapsed_s": elapsed,
            "bound_per_image": per_image,
            "false_positives": positives,
            "errors": errors,
            "by_kind": table,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
        }
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 1 if positives or errors else 0


if __name__ == "__main__":
    sys.exit(main())
