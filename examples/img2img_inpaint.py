"""Start from an image: img2img, then inpaint its left half. The pipelines share the weights.

python examples/img2img_inpaint.py [--model ID|PATH] [--steps N] [--out DIR]

Without --model it uses the small model sdkit ships (coloured shapes), so the prompts are in
its words; with a real checkpoint, write any prompts. Inpainting needs a UNet with 4 latent
channels (any SD model) or 9 (an inpainting model); sdkit says so before it starts otherwise.
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
        "a large red circle in the center on a blue background",
        init_image=init,
        strength=0.6,
        steps=args.steps,
        seed=7,
    )
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))  # white = repaint
    inpainted = gen(
        "a yellow star on the left on a green background",
        init_image=init,
        mask=mask,
        strength=1.0,  # the masked half from pure noise
        steps=args.steps,
        seed=7,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in (("img2img", varied), ("inpaint", inpainted)):
        path = result.image.save(args.out / f"{name}.png", overwrite=True)
        recipe = result.image.recipe
        print(f"wrote {path}: {recipe.pipeline}, strength {recipe.strength}")


if __name__ == "__main__":
    main()
