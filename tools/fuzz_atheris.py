"""Coverage-guided fuzzing (atheris / libFuzzer) of sdkit's byte-level parsers of outside data.

The hypothesis suite (tests/fuzz) generates structured inputs; this long run mutates bytes with
coverage feedback, which reaches the branches of binary formats that a grammar does not think
of. Same property: only the project's own typed errors, within libFuzzer's ``-timeout`` (seconds
per input) and ``-rss_limit_mb``. A crash leaves ``crash-<sha1>`` (the input) in the current
folder; rerun one input with ``python tools/fuzz_atheris.py TARGET crash-<sha1>``.

Usage (``pip install atheris``; not part of the test command)::

    python tools/fuzz_atheris.py --list
    python tools/fuzz_atheris.py embedded -max_total_time=600 -timeout=5 -rss_limit_mb=2048 corpus/embedded
    python tools/fuzz_atheris.py verify -runs=20000 corpus/verify

Targets: ``embedded`` (C2PA / XMP / iTXt in image bytes: file_signals), ``verify`` (verify on
bytes, no watermark search), ``checker`` (OptOutChecker.check on bytes), ``sitefiles``
(robots.txt, ai.txt, tdmrep.json bodies and statuses), ``html`` (a head and its charset),
``safetensors`` (header, metadata, family), ``recipe`` (Recipe JSON and infotext),
``prompt`` (the attention parser). Seed inputs are written into an empty corpus folder.
See docs/fuzzing.md.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("SDKIT_CONFIG_DIR", tempfile.mkdtemp(prefix="sdkit-fuzz-config-"))
os.environ.setdefault("SDKIT_CACHE", tempfile.mkdtemp(prefix="sdkit-fuzz-cache-"))

import atheris  # noqa: E402 - after the environment

with atheris.instrument_imports(include=["provenance", "sdkit"]):
    from provenance.errors import ProvenanceError
    from provenance.optout import OptOutChecker
    from provenance.optout.embedded import file_signals
    from provenance.optout.markup import html_signals
    from provenance.optout.sitefiles import SitePolicy
    from provenance.verify import verify
    from sdkit._single_file import detect_family, read_checkpoint_header, read_checkpoint_metadata
    from sdkit.errors import SdkitError
    from sdkit.prompts import parse_prompt_attention
    from sdkit.recipe import Recipe, RecipeParseError

TYPED = (ProvenanceError, SdkitError, RecipeParseError)
_SCRATCH = Path(tempfile.mkdtemp(prefix="sdkit-fuzz-")) / "model.safetensors"


def _parts(data: bytes, count: int) -> list[bytes]:
    """``data`` split on NUL NUL into ``count`` parts (missing parts empty)."""
    parts = data.split(b"\x00\x00", count - 1)
    return parts + [b""] * (count - len(parts))


def _embedded(data: bytes) -> None:
    file_signals(data, "<atheris>")


def _verify(data: bytes) -> None:
    verify(data, check_watermark=False)


_CHECKER = None


def _checker(data: bytes) -> None:
    global _CHECKER
    if _CHECKER is None:
        _CHECKER = OptOutChecker()
    _CHECKER.check(data)


def _sitefiles(data: bytes) -> None:
    robots, ai, tdmrep, path = _parts(data[1:], 4)
    status = {0: 200, 1: 404, 2: 500, 3: 0}.get(data[:1][0] % 4 if data else 0, 200)
    policy = SitePolicy.parse(
        "https://a.example",
        {"robots.txt": (status, robots), "ai.txt": (200, ai), "tdmrep.json": (200, tdmrep)},
    )
    url = "https://a.example/" + path.decode("utf-8", "replace")
    policy.signals(url, {"sdkit-optout"}, ("GPTBot",))


def _html(data: bytes) -> None:
    charset, page = _parts(data, 2)
    html_signals(page, "https://a.example/", {"sdkit-optout"}, charset.decode("latin-1") or None)


def _safetensors(data: bytes) -> None:
    _SCRATCH.write_bytes(data)
    header = read_checkpoint_header(_SCRATCH)
    detect_family(header, read_checkpoint_metadata(_SCRATCH))


def _recipe(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for parse in (Recipe.from_json, Recipe.from_infotext):
        with contextlib.suppress(*TYPED):
            parse(text)


def _prompt(data: bytes) -> None:
    parse_prompt_attention(data.decode("utf-8", "replace"))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "embedded": _embedded,
    "verify": _verify,
    "checker": _checker,
    "sitefiles": _sitefiles,
    "html": _html,
    "safetensors": _safetensors,
    "recipe": _recipe,
    "prompt": _prompt,
}


def seeds(target: str) -> list[bytes]:
    """A few valid inputs to start a corpus from (mutations of real files go deeper)."""
    from optout_images import encode, picture, with_xmp

    images = [with_xmp("DMI-PROHIBITED-AIMLTRAINING", fmt) for fmt in ("jpeg", "webp")]
    images += [with_xmp("DMI-ALLOWED", "png", compressed=True), encode(picture(1, (32, 24)), "png")]
    header = b'{"__metadata__": {"a": "b"}, "model.diffusion_model.input_blocks.0.0.weight": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}'
    table = {
        "embedded": images,
        "verify": images,
        "checker": images,
        "sitefiles": [
            b"\x00User-agent: *\nDisallow: /a*$\x00\x00User-agent: *\nDisallow: *.png\x00\x00"
            b'[{"location": "/img/*", "tdm-reservation": 1}]\x00\x00img/a.png'
        ],
        "html": [b'utf-8\x00\x00<html><head><meta name="robots" content="noai"></head>'],
        "safetensors": [struct.pack("<Q", len(header)) + header + b"\x00\x00"],
        "recipe": [
            b'{"prompt": "a", "model": "m", "model_sha256": "0", "pipeline": "P", "scheduler": "S", '
            b'"steps": 1, "guidance_scale": 7.0, "seed": 1, "width": 8, "height": 8}',
            b"a cat\nNegative prompt: dog\nSteps: 20, Seed: 1, Size: 64x64, Sampler: Euler",
        ],
        "prompt": [b"a (red:1.5) [cat] BREAK ((dog)) \\(x\\)"],
    }
    return table[target]


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(__doc__)
        print("targets:", ", ".join(TARGETS))
        raise SystemExit(0 if "--list" in argv else 2)
    target, rest = argv[1], argv[2:]
    for folder in (a for a in rest if not a.startswith("-") and not Path(a).is_file()):
        path = Path(folder)
        if not path.exists() or not any(path.iterdir()):
            path.mkdir(parents=True, exist_ok=True)
            for index, seed in enumerate(seeds(target)):
                (path / f"seed-{index}").write_bytes(seed)
    parse = TARGETS[target]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*TYPED):  # the project's own errors are answers, not crashes
            parse(data)

    atheris.Setup([argv[0], *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
