"""Hash what sdkit does, to show that a refactor changed nothing a user can see.

Prints (and with ``--json PATH`` writes) one SHA-256 per case:

* pixels of a fixed set of generations with the model sdkit ships (txt2img with several
  samplers and schedules, a batch, img2img, inpaint, clip skip, feature cache), with a fixed
  watermark payload so the watermarked pixels are repeatable too;
* the Recipe of each (its JSON without timings and library versions, and its infotext);
* the ``verify`` report (all of it but the path) and the opt-out decision of every third-party
  C2PA fixture in ``tests/fixtures/c2pa-interop``.

Usage (run on the old and the new commit, then diff the two JSON files)::

    .venv/bin/python tools/behaviour_hashes.py --json /tmp/after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "c2pa-interop"

CASES: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("euler_a", {"sampler": "Euler a", "steps": 3}),
    ("dpmpp_2m_karras", {"sampler": "DPM++ 2M", "schedule": "karras", "steps": 4}),
    ("ddim", {"sampler": "DDIM", "steps": 3, "guidance_scale": 5.0}),
    ("unipc", {"sampler": "UniPC", "steps": 3}),
    ("batch", {"sampler": "Euler", "steps": 2, "num_images": 2}),
    ("negative_clip_skip", {"negative_prompt": "blurry", "clip_skip": 2, "steps": 2}),
    ("weights_break", {"prompt": "a (red:1.3) barn BREAK [fog]", "steps": 2}),
    ("rescale", {"guidance_rescale": 0.5, "steps": 2}),
    ("feature_cache", {"steps": 4, "feature_cache": 2}),
    ("size", {"width": 64, "height": 96, "steps": 2}),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pixels(image: Image.Image) -> str:
    return _sha(np.asarray(image.convert("RGB")).tobytes())


def _recipe(recipe: Any) -> str:
    data = recipe.to_dict()
    for key in ("elapsed_s", "versions", "created"):
        data.pop(key, None)
    return _sha(json.dumps(data, sort_keys=True).encode())


def generations() -> dict[str, str]:
    from provenance.watermark import Payload
    from sdkit import Generator

    out: dict[str, str] = {}
    gen = Generator(device="cpu", progress=False, watermark=True)
    base = {"prompt": "a lighthouse at dusk", "seed": 1234, "width": 64, "height": 64}
    for name, extra in CASES:
        options = {**base, **extra}
        count = options.get("num_images", 1)
        payloads = [Payload(content_id=0x0123456789AB + i, issuer_id=7) for i in range(count)]
        result = gen(options.pop("prompt"), watermark_payloads=payloads, **options)
        for i, image in enumerate(result.images):
            out[f"gen/{name}/{i}/pixels"] = _pixels(image.image)
            out[f"gen/{name}/{i}/recipe"] = _recipe(image.recipe)
            out[f"gen/{name}/{i}/infotext"] = _sha(image.infotext.encode())
    init = gen("a field", seed=5, steps=2, width=64, height=64).image.image
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    payload = [Payload(content_id=0xABCDEF, issuer_id=7)]
    for name, extra in [
        ("img2img", {"init_image": init, "strength": 0.6}),
        ("inpaint", {"init_image": init, "mask": mask, "strength": 0.9}),
    ]:
        result = gen("a barn", seed=9, steps=3, watermark_payloads=payload, **extra)
        out[f"gen/{name}/0/pixels"] = _pixels(result.image.image)
        out[f"gen/{name}/0/recipe"] = _recipe(result.image.recipe)
    plain = Generator(device="cpu", progress=False, watermark=False)
    out["gen/no_watermark/0/pixels"] = _pixels(
        plain("a lighthouse", seed=3, steps=2, width=64, height=64).image.image
    )
    return out


def verdicts() -> dict[str, str]:
    from provenance import verify

    out: dict[str, str] = {}
    for path in sorted(FIXTURES.glob("*.jpg")):
        data = verify(path).to_dict()
        data.pop("path", None)
        facts = {k: data[k] for k in sorted(data)}
        out[f"verify/{path.name}"] = _sha(json.dumps(facts, sort_keys=True, default=str).encode())
    from provenance.optout import OptOutChecker

    with OptOutChecker() as checker:
        for path in sorted(FIXTURES.glob("*.jpg")):
            decision = checker.check(path).to_dict()
            decision.pop("target", None)
            text = json.dumps(decision, sort_keys=True, default=str).replace(str(path), "<file>")
            out[f"optout/{path.name}"] = _sha(text.encode())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the hashes here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["SDKIT_CONFIG_DIR"] = home
        result = {**generations(), **verdicts()}
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value[:16]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
