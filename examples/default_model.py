"""The model sdkit ships: a few prompts from its small world, saved as signed files, verified.

    python examples/default_model.py [--steps N] [--out DIR]

No network and no GPU needed: the weights ship inside sdkit (a small demonstration model of
coloured shapes, 256x256; docs/guide.md, "The model sdkit ships"). Writes one PNG per prompt
and a contact sheet, then verifies the first file's Content Credentials.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from provenance import verify
from sdkit import Generator

PROMPTS = [
    "a red circle on a blue background",
    "a small yellow star at the top left on a purple background",
    "green background with a big white triangle at the bottom right",
    "a black cross in the middle on an orange background",
    "a large pink square at the top on a green background",
    "a tiny blue star on the right, white background",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("example-output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    gen = Generator()  # no model: the shipped one
    print(gen)
    sheet = Image.new("RGB", (256 * 3, 256 * 2), "white")
    paths = []
    for i, prompt in enumerate(PROMPTS):
        image = gen(prompt, seed=i, steps=args.steps).image
        paths.append(image.save(args.out / f"shapes-{i}.png", overwrite=True))
        sheet.paste(image.image, (256 * (i % 3), 256 * (i // 3)))
        print(f"{paths[-1]}: {prompt}")
    sheet.save(args.out / "shapes-sheet.png")  # an unsigned contact sheet, for a quick look
    report = verify(paths[0])
    found = "found" if report.watermark_found else "not found"
    print(f"{paths[0]}: {report.verdict}, signed by {report.signer}, watermark {found}")


if __name__ == "__main__":
    main()
