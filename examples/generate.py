"""Generate a batch, save each image with its parameters, and read one back.

    python examples/generate.py [--model ID|PATH] [--steps N] [--out DIR]

Without --model it uses the small demonstration model sdkit ships (coloured shapes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdkit import Generator, Recipe
from sdkit.images import read_infotext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="hub id, diffusers folder or .safetensors")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("example-output"))
    args = parser.parse_args()

    gen = Generator(args.model)
    print(gen)
    result = gen(
        "a red circle on a blue background, (glossy:1.2)",
        negative_prompt="blurry",
        sampler="DPM++ 2M",
        schedule="karras",
        steps=args.steps,
        guidance_scale=7.0,
        seed=1234,
        num_images=2,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for image in result:
        path = image.save(args.out / f"circle-{image.recipe.seed}.png", overwrite=True)
        print(f"wrote {path}")

    # The file carries its Recipe as A1111 infotext; it parses back exactly.
    first = args.out / f"circle-{result.seeds[0]}.png"
    recipe = Recipe.from_infotext(read_infotext(first) or "")
    assert recipe == result.image.recipe
    print(
        f"{first}: seed {recipe.seed}, {recipe.sampler} ({recipe.schedule}), {recipe.steps} steps"
    )


if __name__ == "__main__":
    main()
