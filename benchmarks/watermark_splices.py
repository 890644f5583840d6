"""One marked photo pasted into other photos at many places: how often sdkit finds it, and the
IoU of its box with the truth.

The benchmark's splice row pastes each photo at one random place; a weakly marked photo (the
texture ``gravel``) is read at some places and not others, so this counts them. Each composite
is ``watermark_data.splice``: the marked photo as it is, in a host resized to twice its sides
(25 % of the composite), at a place drawn from ``default_rng(seed)`` for seeds 0..N-1.

    python benchmarks/watermark_splices.py [--photo gravel] [--hosts flower coffee]
        [--places 6] [--size 512] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from watermark_data import iou, load_photo, splice

from provenance.watermark import Payload, embed, extract


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="gravel")
    parser.add_argument("--hosts", nargs="+", default=["flower", "coffee"])
    parser.add_argument("--places", type=int, default=6, help="places per host")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    truth = Payload(content_id=0x5EED_0022_0005, issuer_id=22)
    marked = embed(load_photo(args.photo, args.size).image, truth)
    rows = []
    for host_name in args.hosts:
        host = load_photo(host_name, args.size).image
        for seed in range(args.places):
            composite, box = splice(marked, host, np.random.default_rng(seed))
            found = extract(composite)
            read = found is not None and found.payload == truth
            overlap = iou(found.region.box, box) if read and found and found.region else 0.0
            rows.append({"host": host_name, "seed": seed, "read": read, "iou": overlap})
            print(
                f"{host_name:<12} place {seed}: {'read' if read else 'missed':<6} IoU {overlap:.2f}"
            )
    found_ok = [r for r in rows if r["read"] and r["iou"] >= 0.5]
    print(f"{args.photo}: read with IoU >= 0.5 at {len(found_ok)} of {len(rows)} places")
    if args.json:
        args.json.write_text(json.dumps({"options": vars(args) | {"json": None}, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
