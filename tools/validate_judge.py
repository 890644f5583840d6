"""How far can the default model's judge be trusted? Its shape readings on renders, and by eye.

Two checks of ``tools/shapes.py``'s ``Judge``, the reader behind ``tools/eval_default_model.py``:

1. **Renders.** Fresh scenes from the renderer (seeds the judge was not trained on), read back
   clean, blurred, pixelated into 8 x 8 blocks, and roughened (:func:`shapes.roughen`): the
   shape accuracy under each.
2. **The eye audit** (``--audit``). The 60 held-out pictures listed in ``tools/judge_audit.md``
   (numbers 140-199 of the eval's 200, regenerated exactly: same prompts, seeds and settings)
   were labelled by eye, blind to the prompt and to the judge. The judge's readings are set
   against the prompts and against those labels.

``--compare-with REV`` runs both checks also with the judge as it was at git revision ``REV``
(e.g. ``d0b4450``, before the half-contrast outline and the radial spectrum).

    python tools/validate_judge.py [--scenes 300] [--audit] [--compare-with REV]
        [--json benchmarks/judge_validation.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import shapes  # noqa: E402
from PIL import ImageFilter  # noqa: E402

AUDIT = ROOT / "tools" / "judge_audit.md"
CONDITIONS = ("clean", "blurred", "pixelated", "roughened")


def judge_at(revision: str) -> ModuleType:
    """``tools/shapes.py`` as it was at git ``revision``, imported as its own module."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:tools/shapes.py"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"cannot read tools/shapes.py at {revision!r}: {error}") from None
    module = ModuleType("shapes_then")
    sys.modules["shapes_then"] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:tools/shapes.py", "exec"), module.__dict__)
    return module


def on_renders(judge: Any, scenes: int, seed: int = 424242) -> dict[str, float]:
    """Shape accuracy on fresh renders under each condition (the same scenes for every judge)."""
    out = {}
    for condition in CONDITIONS:
        rng = random.Random(seed)
        right = 0
        for _ in range(scenes):
            scene = shapes.random_scene(rng, heldout=None)
            image = shapes.render(scene, rng)
            if condition == "blurred":
                image = image.filter(ImageFilter.GaussianBlur(1.5))
            elif condition == "pixelated":
                image = shapes.pixelate(image, 8)
            elif condition == "roughened":
                image = shapes.roughen(image, scene, rng)
            right += judge.read(image).shape == scene.shape
        out[condition] = right / scenes
    return out


def audit_labels() -> dict[int, str]:
    """Picture number -> the shape seen by eye ('?' where none was clear)."""
    rows = re.findall(r"^\|\s*(\d+)\s*\|[^|]*\|\s*([a-z?]+)\s*\|", AUDIT.read_text(), re.M)
    return {int(number): label for number, label in rows}


def audit(judges: dict[str, Any]) -> dict[str, Any]:
    from eval_default_model import prompt_set

    from sdkit import Generator

    labels = audit_labels()
    generator = Generator(progress=False, watermark=False)
    prompts = prompt_set(max(labels) + 1, unseen=False, seed=1)
    counts: Counter[str] = Counter()
    for number, eye in labels.items():
        scene, prompt, seed = prompts[number]
        image = generator(prompt, seed=seed, steps=25).image.image
        counts["eye"] += eye == scene.shape
        for name, judge in judges.items():
            read = judge.read(image).shape
            counts[f"{name}: right"] += read == scene.shape
            counts[f"{name}: agrees with the eye"] += read == eye
    return {"n": len(labels), **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=300, help="renders per condition")
    parser.add_argument("--audit", action="store_true", help="also the 60 pictures read by eye")
    parser.add_argument("--compare-with", metavar="REV", default=None)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "judge_validation.json")
    args = parser.parse_args()

    judges: dict[str, Any] = {"now": shapes.Judge()}
    if args.compare_with:
        judges[args.compare_with] = judge_at(args.compare_with).Judge()
    result: dict[str, Any] = {
        "renders": {name: on_renders(judge, args.scenes) for name, judge in judges.items()}
    }
    print(f"shape read right on {args.scenes} fresh renders per condition")
    print(f"{'judge':<10}" + "".join(f"{c:>11}" for c in CONDITIONS))
    for name, row in result["renders"].items():
        print(f"{name:<10}" + "".join(f"{row[c]:11.1%}" for c in CONDITIONS))
    if args.audit:
        result["audit"] = audit(judges)
        n = result["audit"]["n"]
        print(f"\n{n} generated pictures read by eye (tools/judge_audit.md)")
        print(f"  by eye: {result['audit']['eye']}/{n} shapes as the prompt asked")
        for name in judges:
            right = result["audit"][f"{name}: right"]
            agree = result["audit"][f"{name}: agrees with the eye"]
            print(f"  judge {name}: {right}/{n} as asked, agrees with the eye on {agree}/{n}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
