"""What provenance costs per image: watermark, encode, fingerprint + sign, verify; file sizes.

For each size (512, 1024) and format (PNG, JPEG q95 4:4:4, WebP q95), on real photos
(``watermark_data.load_photos``), times in one run, on one thread:

* ``encode``: encoding alone (``sdkit.images.encode_image``, infotext included): the baseline;
* ``watermark``: ``Stamper.watermark`` (embedding the payload in the pixels);
* ``sign``: ``Stamper.sign`` (decode + fingerprint + C2PA manifest + signature, ES256);
* ``verify``: ``provenance.verify`` of the signed file, with and without the watermark search;

and reports each as a median in ms, the ratio of the whole stamp (watermark + encode + sign)
to encode-only, and the bytes the manifest adds (no thumbnail, sdkit's default).

    python benchmarks/provenance_overhead.py [--photos 6] [--sizes 512 1024] [--json PATH]
"""

# ruff: noqa: E402  (the thread pins must come before numpy loads)
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from PIL import Image
from watermark_data import load_photos

from provenance.credentials import Credentials, init_development_credentials
from provenance.stamp import Stamper
from provenance.verify import verify
from sdkit.images import encode_image

FORMATS = ("png", "jpeg", "webp")
INFOTEXT = "a red circle on a blue background\nSteps: 25, Sampler: Euler, CFG scale: 7, Seed: 1"


def _stamp_once(
    stamper: Stamper, image: Image.Image, fmt: str
) -> tuple[dict[str, float], int, bytes]:
    """Watermark, encode, sign and verify one image; seconds per stage."""
    clock = time.perf_counter
    t0 = clock()
    marked, record = stamper.watermark(image)
    t1 = clock()
    data = encode_image(marked, fmt, infotext=INFOTEXT)  # type: ignore[arg-type]
    t2 = clock()
    signed = stamper.sign(data, fmt, title=f"x.{fmt}", record=record)
    t3 = clock()
    report = verify(signed)
    t4 = clock()
    verify(signed, check_watermark=False)
    t5 = clock()
    if report.verdict != "verified":
        raise SystemExit(f"a stamped {fmt} did not verify:\n{report.to_text()}")
    stages = {
        "encode": t2 - t1,
        "watermark": t1 - t0,
        "sign": t3 - t2,
        "verify": t4 - t3,
        "verify_no_watermark": t5 - t4,
    }
    return stages, len(data), signed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/provenance_overhead.json"))
    args = parser.parse_args()

    paths = init_development_credentials(Path(tempfile.mkdtemp()) / "creds")
    stamper = Stamper(Credentials.from_files(paths.certificate_chain, paths.private_key))
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        photos = load_photos(size, limit=args.photos)
        for fmt in FORMATS:
            t: dict[str, list[float]] = {k: [] for k in ("encode", "watermark", "sign")}
            t |= {"verify": [], "verify_no_watermark": []}
            sizes: list[tuple[int, int]] = []
            for photo in photos:
                timings, plain_bytes, signed = _stamp_once(stamper, photo.image, fmt)
                for key, value in timings.items():
                    t[key].append(value)
                sizes.append((plain_bytes, len(signed)))
            med = {k: statistics.median(v) * 1000 for k, v in t.items()}
            plain = statistics.median(a for a, _ in sizes)
            extra = statistics.median(b - a for a, b in sizes)
            rows.append(
                {
                    "size": size,
                    "format": fmt,
                    "photos": len(photos),
                    "median_ms": med,
                    "stamp_over_encode": (med["watermark"] + med["encode"] + med["sign"])
                    / med["encode"],
                    "sign_over_encode": (med["encode"] + med["sign"]) / med["encode"],
                    "file_bytes_median": plain,
                    "manifest_bytes_median": extra,
                    "manifest_percent": 100 * extra / plain,
                }
            )
    header = (
        f"{'size':>5} {'fmt':>5} {'encode':>8} {'watermark':>10} {'sign':>7} {'verify':>8} "
        f"{'verify -wm':>11} {'stamp/enc':>10} {'+bytes':>8} {'+%':>6}"
    )
    print("median ms per image (one thread); stamp/enc = (watermark + encode + sign) / encode")
    print(header)
    for r in rows:
        m = r["median_ms"]
        print(
            f"{r['size']:>5} {r['format']:>5} {m['encode']:8.1f} {m['watermark']:10.1f} "
            f"{m['sign']:7.1f} {m['verify']:8.1f} {m['verify_no_watermark']:11.1f} "
            f"{r['stamp_over_encode']:9.2f}x {r['manifest_bytes_median']:8.0f} "
            f"{r['manifest_percent']:5.1f}%"
        )
    result = {
        "what": "per-image cost of watermark, encode, sign and verify; manifest bytes",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        "rows": rows,
    }
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
