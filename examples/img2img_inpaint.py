"""Start from an image: img2img, then inpaint its left half. The pipelines share the weights.

python examples/img2img_inpaint.py [--model ID|PATH] [--steps N] [--out DIR]

Inpainting needs a model whose UNet has 4 or 9 latent channels (any SD checkpoint); the small
model sdkit ships has 3, so pass --model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from sdkit import Generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="hub id, diffusers folder or .safetensors")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("example-output"))
    args = parser.parse_args()

    gen = Generator(args.model)
    width, height = gen.native_size
    init = Image.new("RGB", (width, height), "navy")
    ImageDraw.Draw(init).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), "red")

    varied = gen(
        "a red circle, watercolor", init_image=init, strength=0.6, steps=args.steps, seed=7
    )
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))  # white = repaint
    inpainted = gen("a yellow star", init_image=init, mask=mask, steps=args.steps, seed=7)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in (("img2img", varied), ("inpaint", inpainted)):
        path = result.image.save(args.out / f"{name}.png", overwrite=True)
        recipe = result.image.recipe
        print(f"wrote {path}: {recipe.pipeline}, strength {recipe.strength}")


if __name__ == "__main__":
    main()
