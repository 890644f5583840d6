"""Write the placeholder default model: a tiny SD-style pipeline with RANDOM weights.

It makes noise, not pictures. It exists so that `Generator()` and `sdkit generate` run the whole
journey (load, sample, save with parameters, verify) on a fresh machine with no network until the
trained default model replaces it (tools/train_default_model.py). The folder carries a
PLACEHOLDER file, and sdkit warns when it loads it.

Usage: python tools/make_placeholder_model.py [OUT_DIR]   (default: sdkit/default_model)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tiny_models import build_tiny_sd  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sdkit" / "default_model"
    with tempfile.TemporaryDirectory() as tmp:
        built = build_tiny_sd(Path(tmp), seed=0, sample_size=32, name="model")
        shutil.rmtree(Path(tmp) / "_tok", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(built, out)
    (out / "PLACEHOLDER").write_text(
        "Random weights: this model makes noise. It will be replaced by the trained default model.\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
