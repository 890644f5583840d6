"""How well sdkit's invisible watermark survives everyday edits, against invisible-watermark's.

For each method (sdkit's ``provenance.watermark.embed/extract``; invisible-watermark's dwtDct and
dwtDctSvd through ``provenance.watermark.baselines``), each size (512, 1024) and each photo of
``watermark_data.load_photos`` and each of ``--generated`` pictures the shipped model draws at
that size (``watermark_data.load_generated``; issue 22 asks for photos and generated pictures): embed a fresh random payload (sdkit: ``Payload.random``; the
baselines: 48 random bits), measure PSNR and SSIM of marked vs original (RGB uint8, data_range
255), then run every attack of ``watermark_data.ATTACKS`` and check that the EXACT payload comes
back (sdkit: ``extract(...).payload == payload``; baselines: all 48 bits right). Embed and
extract (of the unattacked image) are timed on one thread; the tables give the median over
photos. Then false positives: sdkit's ``extract`` on ``--fp-count`` unmarked images from
``watermark_data.unmarked_corpus`` (any non-None result is a false positive); the baselines
always return bits, so they have no detection to test.

Each target of the issue (``TARGETS``) is checked per method and size, over the photos and the
generated pictures together, and printed PASS / FAIL (SKIP: not measured by this run, e.g. false
positives with fewer than 10,000 images); a second table splits each count into photos and
generated pictures. With 14 photos and 6 pictures, ">= 98 %" and ">= 95 %" both mean every
image, ">= 90 %" allows two misses and ">= 85 %" three.

    python benchmarks/watermark_robustness.py [--quick] [--sizes 512 1024] [--photos N]
        [--generated 6] [--methods sdkit dwtDct dwtDctSvd] [--payloads K] [--fp-count 10000]
        [--json PATH]

``--quick``: 3 photos at 512 only, no generated pictures and 100 unmarked images (a smoke run,
under a minute). The 10,000 unmarked images take hours on one core: give ``--fp-count 0`` and run
``watermark_false_positives.py``, which spreads them over processes.
"""

# ruff: noqa: E402  (the thread pins must come before numpy and OpenCV load)
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL
import skimage
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from threadpoolctl import threadpool_info, threadpool_limits
from watermark_data import (
    ATTACK_DESCRIPTIONS,
    ATTACKS,
    PHOTO_SOURCES,
    SIZES,
    Photo,
    iou,
    load_generated,
    load_photo,
    load_photos,
    splice,
    unmarked_corpus,
)

from provenance.watermark import Payload, embed, extract, false_accept_bound
from provenance.watermark.baselines import BASELINES, embed_baseline, extract_baseline

BASELINE_BITS = 48
BASELINE_METHODS = ("dwtDct", "dwtDctSvd")  # rivaGan carries only 32 bits: not comparable
DEFAULT_METHODS = ("sdkit", *BASELINE_METHODS)

# The targets. Exact-payload rate per attack (fraction of photos):
ATTACK_TARGETS: dict[str, float] = {
    "none": 1.00,
    "jpeg_q75": 0.98,
    "resize_0.5x_and_back": 0.98,
    "webp_q80": 0.95,
    "brightness_1.2": 0.95,
    "contrast_0.8": 0.95,
    "jpeg_q50": 0.90,
    "crop_10pct": 0.90,
    "reshare": 0.90,
    # issue 22 (sdkit-ss2)
    "mirror_h": 0.95,
    "mirror_v": 0.95,
    "rotate_90": 0.95,
    "rotate_180": 0.95,
    "rotate_270": 0.95,
    "rotate_any_filled": 0.90,
    "rotate_any_cropped": 0.90,
    "rotate_2_cropped": 0.90,
    "rotate_15_filled": 0.90,
    "aspect_0.8": 0.90,
    "aspect_1.25": 0.90,
    "shear_4pct": 0.90,
    "perspective_4pct": 0.90,
    "keystone_4pct": 0.90,  # the perspective line, as a phone photo of a screen
    "rot5_crop10_jpeg75": 0.85,
    "splice_25pct": 0.90,
}
# targets that hold at one size only
SIZE_TARGETS: dict[int, dict[str, float]] = {
    512: {"webp_q70": 0.90, "webp_q60": 0.90, "jpeg_q40": 0.90},
}
SPLICE = "splice_25pct"  # not an image -> image attack: the host and the true box are needed
ROWS = (*ATTACKS, SPLICE)
MIN_IOU = 0.5
MIN_PSNR_DB = 38.0  # every marked image
MIN_SSIM = 0.98  # every marked photo
MIN_PSNR_GENERATED_DB = 40.0  # every marked generated picture (the floor at 256 px),
# unless it keeps the photo floors (a flat picture is held by whichever needs less scaling)
MAX_SECONDS: dict[int, tuple[float, float]] = {512: (0.25, 0.5), 1024: (1.0, 2.0)}  # embed, extract
FP_MIN_IMAGES = 10000  # 0 false positives on at least this many unmarked images (issue 22)
GENERATED = 6  # pictures of the shipped model per size, beside the photos (issue 22)


@dataclass(frozen=True)
class Method:
    """One watermark under test, behind one small signature.

    ``embed(image, rng) -> (marked, truth)``; ``extract(image) -> raw``;
    ``score(raw, truth) -> outcome`` (a dict with at least ``ok``, the exact-payload verdict).
    """

    name: str
    embed: Callable[[Image.Image, np.random.Generator], tuple[Image.Image, Any]]
    extract: Callable[[Image.Image], Any]
    score: Callable[[Any, Any], dict[str, Any]]
    describe: Callable[[Any], str]  # the truth, for the JSON


def _sdkit_embed(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Payload]:
    payload = Payload.random(rng=rng)
    return embed(image, payload), payload


def _sdkit_score(detection: Any, payload: Payload) -> dict[str, Any]:
    if detection is None:
        return {"ok": False, "detected": False}
    return {
        "ok": detection.payload == payload,
        "detected": True,
        "content_bit_errors": (detection.payload.content_id ^ payload.content_id).bit_count(),
        "confidence": float(detection.confidence),
        "bits_corrected": int(detection.bits_corrected),
        "sync_z": getattr(detection, "sync_z", None),  # diagnostics, when the Detection has it
    }


def _baseline(name: str) -> Method:
    def embed_bits(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
        bits = rng.integers(0, 2, BASELINE_BITS, dtype=np.uint8)
        return embed_baseline(image, bits, name), bits

    def score(raw: np.ndarray, bits: np.ndarray) -> dict[str, Any]:
        errors = int(np.count_nonzero(np.asarray(raw, dtype=np.uint8) != bits))
        return {"ok": errors == 0, "bit_errors": errors}

    return Method(
        name,
        embed_bits,
        lambda image: extract_baseline(image, BASELINE_BITS, name),
        score,
        lambda bits: "".join(map(str, bits.tolist())),
    )


def _methods() -> dict[str, Method]:
    methods = {
        "sdkit": Method(
            "sdkit",
            _sdkit_embed,
            extract,
            _sdkit_score,
            lambda p: (
                f"content_id={p.content_id:#014x} issuer_id={p.issuer_id} version={p.version}"
            ),
        )
    }
    methods.update({name: _baseline(name) for name in BASELINES if name in BASELINE_METHODS})
    return methods


def _rng(seed: int, *key: object) -> np.random.Generator:
    """A generator that depends only on the seed and the key (method, size, photo, repeat)."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, key)).encode())])


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _quality(original: Image.Image, marked: Image.Image) -> tuple[float, float]:
    a = np.asarray(original.convert("RGB"))
    b = np.asarray(marked.convert("RGB"))
    if a.shape != b.shape:
        raise ValueError(f"marked image is {b.shape}, original {a.shape}: embed must keep size")
    psnr = peak_signal_noise_ratio(a, b, data_range=255)
    ssim = structural_similarity(a, b, channel_axis=-1, data_range=255)
    return float(psnr), float(ssim)


def _run_image(
    method: Method, photo: Photo, attacks: dict[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    """Embeds once, then extracts after every attack; times embed and the unattacked extract."""
    (marked, truth), embed_s = _timed(lambda: method.embed(photo.image, rng))
    psnr, ssim = _quality(photo.image, marked)
    outcomes: dict[str, dict[str, Any]] = {}
    extract_s = float("nan")
    for name, attack in attacks.items():
        attacked = attack(marked)
        try:
            raw, seconds = _timed(lambda image=attacked: method.extract(image))
        except Exception as exc:  # recorded as a miss and reported; one image must not end the run
            outcomes[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        if name == "none":
            extract_s = seconds
        outcomes[name] = {**method.score(raw, truth), "extract_s": seconds}
    outcomes[SPLICE] = _splice(method, photo, marked, truth, rng)
    return {
        "method": method.name,
        "photo": photo.name,
        "size": photo.size,
        "native_side": photo.native_side,
        "upscaled": photo.upscaled,
        "grey": photo.grey,
        "generated": photo.generated,
        "truth": method.describe(truth),
        "psnr_db": psnr,
        "ssim": ssim,
        "embed_s": embed_s,
        "extract_s": extract_s,
        "attacks": outcomes,
    }


def _splice(
    method: Method, photo: Photo, marked: Image.Image, truth: Any, rng: np.random.Generator
) -> dict[str, Any]:
    """The marked image pasted at a random place into another photo twice its sides (25 % of
    the composite). sdkit: exact payload AND the reported box overlaps the truth (IoU >= 0.5);
    the baselines cannot localise: exact bits only."""
    names = list(PHOTO_SOURCES)
    # a generated picture's name ends in its seed
    index = names.index(photo.name) if photo.name in names else int(photo.name.split("_")[-1])
    host_name = names[(index + 7) % len(names)]
    composite, box = splice(marked, load_photo(host_name, photo.size).image, rng)
    try:
        raw, seconds = _timed(lambda: method.extract(composite))
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    outcome = {**method.score(raw, truth), "extract_s": seconds, "host": host_name}
    region = getattr(raw, "region", None)
    if method.name == "sdkit":
        overlap = iou(region.box, box) if region is not None else 0.0
        outcome.update(iou=overlap, box=list(box), ok=outcome["ok"] and overlap >= MIN_IOU)
    return outcome


def _run_cell(
    method: Method, size: int, photos: list[Photo], args: argparse.Namespace
) -> list[dict[str, Any]]:
    # One untimed call of each so that lazy set-up (tables, caches) is not timed.
    warm_marked, _ = method.embed(photos[0].image, _rng(args.seed, "warm-up"))
    method.extract(warm_marked)
    records = []
    for photo in photos:
        for repeat in range(args.payloads):
            rng = _rng(args.seed, method.name, size, photo.name, repeat)
            record = _run_image(method, photo, ATTACKS, rng)
            record["repeat"] = repeat
            records.append(record)
            missed = [a for a, o in record["attacks"].items() if not o["ok"]]
            print(
                f"  {method.name:<10} {size:>5} {photo.name:<21} PSNR {record['psnr_db']:5.2f} "
                f"SSIM {record['ssim']:.4f} embed {record['embed_s'] * 1e3:6.0f} ms "
                f"extract {record['extract_s'] * 1e3:6.0f} ms  missed: {', '.join(missed) or '-'}",
                flush=True,
            )
    return records


def _false_positives(count: int, seed: int, budget_s: float | None) -> dict[str, Any]:
    by_kind: Counter[str] = Counter()
    positives = []
    errors = []
    seconds = []
    started = time.perf_counter()
    for item in unmarked_corpus(count, seed):
        if budget_s is not None and time.perf_counter() - started > budget_s:
            print(f"  time budget spent after {len(seconds)} images", flush=True)
            break
        by_kind[item.kind] += 1
        try:
            detection, elapsed = _timed(lambda image=item.image: extract(image))
        except Exception as exc:
            errors.append({"index": item.index, "name": item.name, "error": repr(exc)})
            continue
        seconds.append(elapsed)
        if detection is not None:
            positives.append(
                {
                    "index": item.index,
                    "kind": item.kind,
                    "name": item.name,
                    "size": list(item.image.size),
                    "payload": repr(detection.payload),
                    "confidence": float(detection.confidence),
                    "bits_corrected": int(detection.bits_corrected),
                }
            )
            if len(positives) <= 10:
                print(f"  false positive: #{item.index} {item.name}: {detection!r}", flush=True)
    per_image = false_accept_bound()  # union bound over extract's decodes; then over images
    return {
        "images": len(seconds) + len(errors),
        "requested": count,
        "bound_per_image": per_image,
        "bound_over_run": per_image * (len(seconds) + len(errors)),
        "seed": seed,
        "false_positives": len(positives),
        "errors": errors,
        "by_kind": dict(by_kind),
        "positives": positives,
        "extract_median_s": statistics.median(seconds) if seconds else None,
        "extract_total_s": sum(seconds),
    }


def _summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys((r["method"], r["size"]) for r in records):
        rows = [r for r in records if (r["method"], r["size"]) == key]
        n = len(rows)
        generated = [r for r in rows if r["generated"]]
        cells[f"{key[0]}@{key[1]}"] = {
            "method": key[0],
            "size": key[1],
            "images": n,
            "generated_images": len(generated),
            "exact": {a: sum(r["attacks"][a]["ok"] for r in rows) for a in ROWS},
            "exact_generated": {a: sum(r["attacks"][a]["ok"] for r in generated) for a in ROWS},
            "exact_rate": {a: sum(r["attacks"][a]["ok"] for r in rows) / n for a in ROWS},
            "psnr_mean": statistics.fmean(r["psnr_db"] for r in rows),
            "psnr_min": min(r["psnr_db"] for r in rows),
            "ssim_mean": statistics.fmean(r["ssim"] for r in rows),
            "ssim_min": min(r["ssim"] for r in rows),
            "photo_psnr_min": min((r["psnr_db"] for r in rows if not r["generated"]), default=None),
            "photo_ssim_min": min((r["ssim"] for r in rows if not r["generated"]), default=None),
            "generated_psnr_min": min((r["psnr_db"] for r in generated), default=None),
            "generated_ssim_min": min((r["ssim"] for r in generated), default=None),
            "generated_under_floors": sum(not _generated_quality_ok(r) for r in generated),
            "embed_median_s": statistics.median(r["embed_s"] for r in rows),
            "extract_median_s": statistics.median(r["extract_s"] for r in rows),
            "errors": sum("error" in o for r in rows for o in r["attacks"].values()),
        }
    return cells


def _generated_quality_ok(record: dict[str, Any]) -> bool:
    """A generated picture's floors, as the embedder holds a flat one: PSNR >= 40 dB, or the
    photo floors (PSNR >= 38 dB and SSIM >= 0.98)."""
    psnr, ssim = record["psnr_db"], record["ssim"]
    return bool(psnr >= MIN_PSNR_GENERATED_DB or (psnr >= MIN_PSNR_DB and ssim >= MIN_SSIM))


def _check_targets(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    if cell["photo_psnr_min"] is not None:
        checks["quality"] = {
            "target": f"PSNR >= {MIN_PSNR_DB} dB and SSIM >= {MIN_SSIM} on every photo",
            "value": f"min PSNR {cell['photo_psnr_min']:.2f}, "
            f"min SSIM {cell['photo_ssim_min']:.4f}",
            "pass": cell["photo_psnr_min"] >= MIN_PSNR_DB and cell["photo_ssim_min"] >= MIN_SSIM,
        }
    if cell["generated_psnr_min"] is not None:
        # a flat picture is held by PSNR and the visibility threshold, not SSIM (issue 22)
        checks["quality_generated"] = {
            "target": f"PSNR >= {MIN_PSNR_GENERATED_DB} dB, or the photo floors, on every "
            "generated picture",
            "value": f"{cell['generated_under_floors']} under; min PSNR "
            f"{cell['generated_psnr_min']:.2f}, min SSIM {cell['generated_ssim_min']:.4f}",
            "pass": cell["generated_under_floors"] == 0,
        }
    for attack, rate in {**ATTACK_TARGETS, **SIZE_TARGETS.get(cell["size"], {})}.items():
        checks[attack] = {
            "target": f"exact payload >= {rate:.0%}",
            "value": f"{cell['exact_rate'][attack]:.1%}",
            "pass": cell["exact_rate"][attack] >= rate,
        }
    embed_max, extract_max = MAX_SECONDS.get(cell["size"], (None, None))
    for what, limit in (("embed", embed_max), ("extract", extract_max)):
        median = cell[f"{what}_median_s"]
        checks[f"{what}_time"] = {
            "target": f"median {what} <= {limit} s on one core" if limit else "no target",
            "value": f"{median * 1e3:.0f} ms",
            "pass": None if limit is None else median <= limit,
        }
    return checks


def _fp_check(fp: dict[str, Any] | None) -> dict[str, Any]:
    check: dict[str, Any] = {
        "target": f"0 false positives on >= {FP_MIN_IMAGES} unmarked images",
        "value": "not run",
        "pass": None,
    }
    if fp is not None:
        check["value"] = (
            f"{fp['false_positives']} of {fp['images']} ({len(fp['errors'])} errors; "
            f"bound {fp['bound_per_image']:.1e} per image)"
        )
        if fp["images"] >= FP_MIN_IMAGES or fp["false_positives"] or fp["errors"]:
            check["pass"] = fp["false_positives"] == 0 and not fp["errors"]
    return check


def _overall(
    name: str,
    cells: dict[str, dict[str, Any]],
    per_cell: dict[str, dict[str, dict[str, Any]]],
    fp_check: dict[str, Any],
) -> dict[str, Any]:
    """PASS when no target of method ``name`` failed (skipped ones do not count as passed)."""
    verdicts = [
        check["pass"]
        for key, checks in per_cell.items()
        if cells[key]["method"] == name
        for check in checks.values()
    ]
    if name == "sdkit":
        verdicts.append(fp_check["pass"])
    return {
        "pass": False not in verdicts,
        "failed": verdicts.count(False),
        "skipped": verdicts.count(None),
        "sizes": [cells[key]["size"] for key in per_cell if cells[key]["method"] == name],
    }


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "SKIP"}[passed]


def _rate(cell: dict[str, Any], attack: str) -> str:
    return f"{cell['exact'][attack]}/{cell['images']} {100 * cell['exact_rate'][attack]:.0f}%"


def _split(cell: dict[str, Any], attack: str) -> str:
    photos = cell["images"] - cell["generated_images"]
    photo_exact = cell["exact"][attack] - cell["exact_generated"][attack]
    return f"{photo_exact}/{photos} | {cell['exact_generated'][attack]}/{cell['generated_images']}"


def _print_tables(cells: dict[str, dict[str, Any]], targets: dict[str, Any]) -> None:
    keys = list(cells)
    width = max(13, *(len(k) + 1 for k in keys))
    header = f"{'':<22}" + "".join(f"{k:>{width}}" for k in keys)
    with_generated = any(c["generated_images"] for c in cells.values())
    print(
        "\nexact payload recovered (photos and generated pictures, %)"
        if with_generated
        else "\nexact payload recovered (photos, %)"
    )
    print(header)
    for attack in ROWS:
        row = "".join(f"{_rate(c, attack):>{width}}" for c in cells.values())
        print(f"{attack:<22}{row}")
    if with_generated:
        print("\nof which: photos | generated pictures")
        print(header)
        for attack in ROWS:
            row = "".join(f"{_split(c, attack):>{width}}" for c in cells.values())
            print(f"{attack:<22}{row}")
    rows: dict[str, Callable[[dict[str, Any]], str]] = {
        "PSNR dB mean (min)": lambda c: f"{c['psnr_mean']:.1f} ({c['psnr_min']:.1f})",
        "SSIM mean (min)": lambda c: f"{c['ssim_mean']:.3f} ({c['ssim_min']:.3f})",
        "embed ms (median)": lambda c: f"{c['embed_median_s'] * 1e3:.0f}",
        "extract ms (median)": lambda c: f"{c['extract_median_s'] * 1e3:.0f}",
    }
    for label, fmt in rows.items():
        print(f"{label:<22}" + "".join(f"{fmt(c):>{width}}" for c in cells.values()))
    print("\ntargets")
    print(header)
    # some targets hold at one size only (WebP q70 at 512 px): "-" where a cell has none
    names = list(dict.fromkeys(t for checks in targets["per_cell"].values() for t in checks))
    for target in names:
        row = "".join(
            f"{_verdict(checks[target]['pass']) if target in checks else '-':>{width}}"
            for checks in (targets["per_cell"][k] for k in keys)
        )
        print(f"{target:<22}{row}")
    fp = targets["false_positives"]
    print(f"{'false positives':<22}{fp['value']} -> {_verdict(fp['pass'])} ({fp['target']})")
    for name, verdict in targets["overall"].items():
        print(
            f"{name}, all targets at {', '.join(map(str, verdict['sizes']))} px: "
            f"{_verdict(verdict['pass'])} ({verdict['failed']} failed, "
            f"{verdict['skipped']} not measured by this run)"
        )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "pillow": PIL.__version__,
        "scikit_image": skimage.__version__,
        "invisible_watermark": metadata.version("invisible-watermark"),
        "thread_pools": [
            {k: p.get(k) for k in ("internal_api", "num_threads", "version")}
            for p in threadpool_info()
        ],
        "torch_threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
    }


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 photos, 512 only, 100 FP images")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, metavar="PX")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD")
    parser.add_argument(
        "--photos",
        type=int,
        default=None,
        help=f"first N photos (default all {len(PHOTO_SOURCES)})",
    )
    parser.add_argument(
        "--generated",
        type=int,
        default=None,
        help="also this many pictures of the shipped model at each size (default 6; "
        "drawn once, then read from a cache)",
    )
    parser.add_argument("--payloads", type=int, default=1, help="random payloads per photo")
    parser.add_argument(
        "--fp-count", type=int, default=None, help=f"unmarked images (default {FP_MIN_IMAGES})"
    )
    parser.add_argument(
        "--fp-seconds", type=float, default=None, help="stop the unmarked images after this long"
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="run nothing: print the tables of these earlier runs' images together (a later "
        "file's image replaces an earlier one's with the same method, size, picture and payload)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/watermark_robustness.json"))
    args = parser.parse_args()
    args.sizes = args.sizes or ([512] if args.quick else list(SIZES))
    args.methods = args.methods or list(DEFAULT_METHODS)
    if args.photos is None:
        args.photos = 3 if args.quick else len(PHOTO_SOURCES)
    if args.generated is None:
        args.generated = 0 if args.quick else GENERATED
    if args.fp_count is None:
        args.fp_count = 100 if args.quick else FP_MIN_IMAGES
    known = list(DEFAULT_METHODS)
    unknown = [m for m in args.methods if m not in known]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def main() -> None:
    # 1. Options; pin everything to one thread (BLAS/OpenMP pools, OpenCV, torch if loaded).
    args = _parse_args()
    if args.combine:
        result = _combined(args.combine, args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
        return
    # the shipped model's pictures first, on every core (then from the cache)
    generated = {size: load_generated(size, args.generated) for size in args.sizes}
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    with threadpool_limits(1):
        result = _run(args, generated)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.json}")


def _combined(paths: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """The tables of earlier runs' images together: an image of a later file replaces the one
    of an earlier file with the same method, size, picture and payload number (a rerun of
    some pictures after a change that touches only them)."""
    started = time.perf_counter()
    records: dict[tuple[Any, ...], dict[str, Any]] = {}
    fp = None
    for path in paths:
        run = json.loads(path.read_text())
        for record in run["images"]:
            record.setdefault("generated", False)  # runs before generated pictures
            records[(record["method"], record["size"], record["photo"], record["repeat"])] = record
        fp = run.get("false_positives") or fp
        print(f"{path}: {len(run['images'])} images", flush=True)
    return _report(list(records.values()), fp, args, started, os.getloadavg())


def _run(args: argparse.Namespace, generated: dict[int, list[Photo]]) -> dict[str, Any]:
    methods = _methods()
    load_before = os.getloadavg()
    started = time.perf_counter()

    # 2. Robustness: method x size x photo x attack.
    records: list[dict[str, Any]] = []
    for size in args.sizes:
        photos = load_photos(size, limit=args.photos) + generated[size]
        for name in args.methods:
            print(
                f"{name} at {size}x{size}, {args.photos} photos and {len(generated[size])} "
                "generated pictures",
                flush=True,
            )
            records += _run_cell(methods[name], size, photos, args)

    # 3. False positives (sdkit only: the baselines have no notion of "no watermark").
    fp = None
    if "sdkit" in args.methods and args.fp_count > 0:
        print(f"false positives: sdkit extract on {args.fp_count} unmarked images", flush=True)
        fp = _false_positives(args.fp_count, args.seed, args.fp_seconds)

    # 4. Summary, targets, tables, JSON.
    return _report(records, fp, args, started, load_before)


def _report(
    records: list[dict[str, Any]],
    fp: dict[str, Any] | None,
    args: argparse.Namespace,
    started: float,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    cells = _summarise(records)
    per_cell = {key: _check_targets(cell) for key, cell in cells.items()}
    fp_check = _fp_check(fp)
    methods = list(dict.fromkeys(r["method"] for r in records))
    overall = {name: _overall(name, cells, per_cell, fp_check) for name in methods}
    targets = {"per_cell": per_cell, "false_positives": fp_check, "overall": overall}
    _print_tables(cells, targets)
    errors = sum(c["errors"] for c in cells.values())
    if errors:
        print(
            f"WARNING: {errors} extract calls raised; see 'error' in the JSON (counted as misses)"
        )
    total_s = time.perf_counter() - started
    print(f"total {total_s:.0f} s")

    return {
        "what": "exact-payload recovery after attacks, image quality, speed and false positives",
        "machine": _machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "attacks": {
            **ATTACK_DESCRIPTIONS,
            SPLICE: "pasted at a random place into another photo twice its sides (25 % of the "
            "composite); sdkit must also name the region (IoU >= 0.5)",
        },
        "targets": {
            "attacks": ATTACK_TARGETS,
            "by_size": SIZE_TARGETS,
            "splice_min_iou": MIN_IOU,
            "min_psnr_db": MIN_PSNR_DB,
            "min_ssim": MIN_SSIM,
            "max_seconds_embed_extract": MAX_SECONDS,
            "fp_min_images": FP_MIN_IMAGES,
        },
        "target_checks": targets,
        "cells": cells,
        "false_positives": fp,
        "images": records,
        "total_s": total_s,
    }


if __name__ == "__main__":
    main()
