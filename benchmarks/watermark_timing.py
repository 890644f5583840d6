"""sdkit's watermark embed and extract time on one core, against another checkout's, in one run.

For each size (512, 1024) and each picture (the 14 photos of ``watermark_data.load_photos`` and
``--generated`` pictures of the shipped model, ``watermark_data.load_generated``), both versions
of ``provenance.watermark`` embed the same payload, extract it from the marked picture and, at
1024 px, extract from the unmarked picture (no payload: every hypothesis is tried), one version
right after the other, so a busy machine slows both alike. The table gives the medians, the
ratio of this checkout to the baseline, and each version's slowest picture; the issue's limits
are 1 s embed and 2 s extract at 1024 px (0.25 s and 0.5 s at 512).

    git worktree add /tmp/base <rev>
    python benchmarks/watermark_timing.py --baseline /tmp/base [--sizes 512 1024]
        [--generated 6] [--photos N] [--json PATH]
"""

# ruff: noqa: E402  (the thread pins must come before numpy and OpenCV load)
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
from watermark_data import PHOTO_SOURCES, load_generated, load_photos

HERE = Path(__file__).resolve().parents[1]


def _load(checkout: Path) -> ModuleType:
    """``provenance.watermark`` of ``checkout``, imported afresh."""
    for name in [m for m in sys.modules if m == "provenance" or m.startswith("provenance.")]:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module("provenance.watermark")
    finally:
        sys.path.remove(str(checkout))
    if not Path(module.__file__ or "").resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"provenance.watermark did not load from {checkout}")
    return module


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], metavar="PX")
    parser.add_argument("--photos", type=int, default=len(PHOTO_SOURCES), help="first N photos")
    parser.add_argument("--generated", type=int, default=6, help="shipped-model pictures")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not (args.baseline / "provenance" / "watermark").is_dir():
        parser.error(f"{args.baseline} is not an sdkit checkout")

    pictures = {
        size: [(p.name, p.image) for p in load_photos(size, limit=args.photos)]
        + [(p.name, p.image) for p in load_generated(size, args.generated)]
        for size in args.sizes
    }
    cv2.setNumThreads(1)
    versions = {"baseline": _load(args.baseline), "this": _load(HERE)}
    results: dict[int, dict[str, dict[str, float]]] = {}
    print(f"{'':<36}{'this':>9}{'baseline':>10}{'ratio':>8}{'this max':>10}{'base max':>10}")
    for size, items in pictures.items():
        times: dict[str, dict[str, list[float]]] = {v: {} for v in versions}
        for module in versions.values():  # lazy set-up (tables, caches) is not timed
            module.extract(module.embed(items[0][1], module.Payload(content_id=1)))
        for i, (_, image) in enumerate(items):
            for tag, module in versions.items():
                payload = module.Payload(content_id=1000 + i)
                marked, embed_s = _timed(lambda m=module, p=payload, x=image: m.embed(x, p))
                _, extract_s = _timed(lambda m=module, x=marked: m.extract(x))
                row = times[tag]
                row.setdefault("embed", []).append(embed_s)
                row.setdefault("extract marked", []).append(extract_s)
                if size >= 1024:
                    _, unmarked_s = _timed(lambda m=module, x=image: m.extract(x))
                    row.setdefault("extract unmarked", []).append(unmarked_s)
        results[size] = {}
        for what in times["this"]:
            this = statistics.median(times["this"][what])
            base = statistics.median(times["baseline"][what])
            this_max, base_max = max(times["this"][what]), max(times["baseline"][what])
            results[size][what] = {
                "this_s": this,
                "baseline_s": base,
                "ratio": this / base,
                "this_max_s": this_max,
                "baseline_max_s": base_max,
            }
            label = f"{what} {size} px, median s"
            print(
                f"{label:<36}{this:>9.3f}{base:>10.3f}{this / base:>8.2f}"
                f"{this_max:>10.3f}{base_max:>10.3f}"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        counts = {size: len(items) for size, items in pictures.items()}
        args.json.write_text(json.dumps({"pictures": counts, "sizes": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
