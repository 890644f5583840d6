"""How long each parser of outside data takes on its worst input at its cap (issue 18).

Every parser a stranger can feed (HTML heads, robots.txt, tdmrep.json, XMP, prompts, infotext)
is timed twice on inputs of the same size: a **benign** one and the **hostile** shape that was
quadratic or exponential before the fixes (repeated ``<!--``, wildcard rules against a long
path, nested ``*`` locations, unclosed ``<x:xmpmeta>``, unclosed brackets, a line with no
``:``). A linear parser keeps the ratio hostile / benign small; the seconds are the worst a
hostile input costs (before the fixes: 12.6 s for 100 KB of ``<!--``, over 30 s for 8 nested
``*``, 29 s for 200 KB of unclosed XMP, 57 s for 100 KB of ``(a``, 12.5 s for a 40 KB line). Then sdkit's watermark search on a large image, with the pixel budget
(``SEARCH_PIXELS``, what ``verify`` does) and without it (the whole image, as before the
budget): the baseline of the same run.

    python benchmarks/hostile_inputs.py [--side 3000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from provenance.optout.embedded import MAX_XMP, file_signals
from provenance.optout.markup import MAX_HTML_HEAD, html_signals
from provenance.optout.sitefiles import MAX_SITE_FILE, SitePolicy
from provenance.watermark import SEARCH_PIXELS, extract
from sdkit._attention import MAX_OPEN_BRACKETS, MAX_PROMPT_CHARS
from sdkit.prompts import parse_prompt_attention
from sdkit.recipe import MAX_RECIPE_CHARS, parse_infotext

LONG_URL = "http://x/" + "a" * 4000


def _fill(unit: str | bytes, size: int) -> Any:
    return unit * (size // len(unit))


def _site(name: str, body: str) -> Callable[[], object]:
    def run() -> object:
        policy = SitePolicy.parse("http://x", {name: (200, body.encode()[:MAX_SITE_FILE])})
        return policy.signals(LONG_URL, {"sdkit-optout"}, ["GPTBot"])

    return run


def _tdmrep(location: str) -> str:
    rule = json.dumps({"location": location, "tdm-reservation": 1}) + ","
    return "[" + _fill(rule, MAX_SITE_FILE - 2).rstrip(",") + "]"


#: name -> (cap in words, benign call, hostile call)
CASES: dict[str, tuple[str, Callable[[], object], Callable[[], object]]] = {
    "HTML head (<!--)": (
        f"{MAX_HTML_HEAD // 1024} KiB",
        lambda: html_signals(_fill(b"<p>x</p>", MAX_HTML_HEAD), "u", set()),
        lambda: html_signals(_fill(b"<!--", MAX_HTML_HEAD), "u", set()),
    ),
    "robots.txt (wildcards)": (
        f"{MAX_SITE_FILE // 1024} KiB",
        _site("robots.txt", "User-agent: *\n" + _fill("Disallow: /private/\n", MAX_SITE_FILE)),
        _site("robots.txt", "User-agent: *\n" + _fill("Disallow: /*a*b*c*d$\n", MAX_SITE_FILE)),
    ),
    "tdmrep.json (nested *)": (
        f"{MAX_SITE_FILE // 1024} KiB",
        _site("tdmrep.json", _tdmrep("/private/x")),
        _site("tdmrep.json", _tdmrep("/" + "*a" * 8 + "*b")),
    ),
    "XMP (unclosed x:xmpmeta)": (
        f"{MAX_XMP // 1024} KiB",
        lambda: file_signals(_fill(b"a", MAX_XMP), "f"),
        lambda: file_signals(_fill(b"<x:xmpmeta ", MAX_XMP), "f"),
    ),
    "prompt (open brackets)": (
        f"{MAX_PROMPT_CHARS:,} chars",
        lambda: parse_prompt_attention(_fill("a ", MAX_PROMPT_CHARS)),
        # the most work the caps allow: every piece under 63 open brackets, none mergeable
        lambda: parse_prompt_attention(
            "(" * (MAX_OPEN_BRACKETS - 1) + _fill("(a)b", MAX_PROMPT_CHARS - MAX_OPEN_BRACKETS)
        ),
    ),
    "infotext (no colon)": (
        f"{MAX_RECIPE_CHARS:,} chars",
        lambda: parse_infotext("p\n" + _fill("Steps: 1, ", MAX_RECIPE_CHARS - 2)),
        lambda: parse_infotext("p\n" + _fill("a b", MAX_RECIPE_CHARS - 2)),
    ),
}


def _seconds(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(Exception):  # a typed refusal is an answer too: its time counts
            call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _large_image(side: int) -> Image.Image:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = (ramp[None, :, None] + rng.normal(0, 12, (side, side, 3))).clip(0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=3000, help="the large image's side (px)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per parser (median)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/hostile_inputs.json"))
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    print(f"{'parser':26} {'cap':>15} {'benign s':>9} {'hostile s':>9} {'ratio':>7}")
    for name, (cap, benign, hostile) in CASES.items():
        b, h = _seconds(benign, args.repeat), _seconds(hostile, args.repeat)
        rows.append({"parser": name, "cap": cap, "benign_s": b, "hostile_s": h, "ratio": h / b})
        print(f"{name:26} {cap:>15} {b:9.3f} {h:9.3f} {h / b:6.1f}x")

    image = _large_image(args.side)
    budget = _seconds(lambda: extract(image, max_pixels=SEARCH_PIXELS), 1)
    whole = _seconds(lambda: extract(image, max_pixels=args.side * args.side), 1)
    search = {
        "side": args.side,
        "budget_pixels": SEARCH_PIXELS,
        "with_budget_s": budget,
        "whole_image_s": whole,
        "speedup": whole / budget,
    }
    print(
        f"\nwatermark search on {args.side}x{args.side}: {budget:.2f} s within "
        f"{SEARCH_PIXELS:,} px, {whole:.2f} s on the whole image ({whole / budget:.1f}x)"
    )
    result = {
        "what": "worst-case parse time at each cap, hostile vs benign input of the same size; "
        "watermark search with and without the pixel budget",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        "parsers": rows,
        "watermark_search": search,
    }
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
