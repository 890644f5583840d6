"""Recipe: every parameter that made an image, as JSON and as A1111-style infotext.

A :class:`Recipe` is frozen and complete: with the same weights, library versions and device it
remakes the same pixels. It travels with the image in two forms:

* JSON (``to_json`` / ``from_json``), the exact record, used by the C2PA manifest;
* AUTOMATIC1111's "parameters" infotext (``to_infotext`` / ``from_infotext``), the text that
  A1111's *PNG Info* tab, ComfyUI loaders, Civitai and most image browsers read::

      a red circle on a blue background
      Negative prompt: blurry
      Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: runwayml/stable-diffusion-v1-5, …

  The first fields are A1111's own; sdkit adds the rest under its own keys (values that contain
  commas, colons or new lines are JSON-quoted, as A1111 does), so the infotext alone parses back
  into the same Recipe.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Mode", "Recipe", "RecipeParseError"]

Mode = Literal["txt2img", "img2img", "inpaint"]
RECIPE_VERSION = 1


class RecipeParseError(ValueError):
    """Infotext or JSON that does not describe a Recipe."""


@dataclass(frozen=True)
class Recipe:
    """Every parameter that made one image.

    Attributes:
        prompt: the prompt as the user wrote it (weighting syntax included).
        negative_prompt: the negative prompt ("" when none).
        model: what was loaded: a hub id, a folder, a file, or ``"sdkit-default"``.
        model_sha256: SHA-256 of the weights (of the file; for a folder, of its weight files).
        pipeline: the diffusers pipeline class that ran (``"StableDiffusionXLPipeline"``).
        mode: ``"txt2img"``, ``"img2img"`` or ``"inpaint"``.
        sampler: the sampler's canonical name, or ``None`` for the model's own scheduler.
        schedule: the schedule type (``"default"``, ``"karras"``, …).
        scheduler: the diffusers scheduler class that ran.
        scheduler_config: that scheduler's full config (private ``_`` keys dropped).
        steps: denoising steps requested.
        guidance_scale: classifier-free guidance scale (CFG scale).
        guidance_rescale: guidance rescale φ (0 = off).
        clip_skip: A1111 meaning: 1 = last text-encoder layer, 2 = penultimate; ``None`` = model default.
        seed: this image's seed (seeds of a batch are seed, seed+1, …).
        width: image width in pixels.
        height: image height in pixels.
        strength: img2img/inpaint denoising strength, ``None`` for txt2img.
        init_image_sha256: SHA-256 of the init image's RGB pixels (img2img/inpaint).
        mask_sha256: SHA-256 of the mask's L pixels (inpaint).
        feature_cache: DeepCache-style interval (a full UNet pass every N steps; lossy), or
            ``None`` when every step ran the whole UNet.
        dtype: the weights' dtype (``"float32"``, ``"float16"``).
        versions: library versions (sdkit, diffusers, transformers, torch).

    Example:
        >>> r = Recipe(prompt="a cat", model="m", model_sha256="0" * 64, pipeline="P",
        ...            scheduler="EulerDiscreteScheduler", steps=20, guidance_scale=7.0,
        ...            seed=1, width=512, height=512)
        >>> Recipe.from_infotext(r.to_infotext()) == r
        True
    """

    prompt: str
    model: str
    model_sha256: str
    pipeline: str
    scheduler: str
    steps: int
    guidance_scale: float
    seed: int
    width: int
    height: int
    negative_prompt: str = ""
    mode: Mode = "txt2img"
    sampler: str | None = None
    schedule: str = "default"
    scheduler_config: Mapping[str, Any] = field(default_factory=dict)
    guidance_rescale: float = 0.0
    clip_skip: int | None = None
    strength: float | None = None
    init_image_sha256: str | None = None
    mask_sha256: str | None = None
    feature_cache: int | None = None
    dtype: str = "float32"
    versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise mappings through JSON so that a round trip compares equal (tuples -> lists).
        object.__setattr__(self, "scheduler_config", _json_normalise(self.scheduler_config))
        object.__setattr__(self, "versions", dict(self.versions))

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with a ``recipe_version`` field."""
        data = dataclasses.asdict(self)
        data["scheduler_config"] = dict(self.scheduler_config)
        data["versions"] = dict(self.versions)
        return {"recipe_version": RECIPE_VERSION, **data}

    def to_json(self, *, indent: int | None = None) -> str:
        """Serialise to JSON (keys in field order)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        values = {k: v for k, v in data.items() if k != "recipe_version"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise RecipeParseError(f"unknown recipe fields: {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise RecipeParseError(f"incomplete recipe: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeParseError(f"recipe is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise RecipeParseError("recipe JSON must be an object")
        return cls.from_dict(data)

    # -- A1111 infotext -----------------------------------------------------------------------

    @property
    def model_hash(self) -> str:
        """A1111's short model hash: the first 10 hex digits of the weights' SHA-256."""
        return self.model_sha256[:10]

    def to_infotext(self) -> str:
        """Render A1111's "parameters" text (prompt, negative prompt, then key: value pairs)."""
        fields: list[tuple[str, Any]] = [
            ("Steps", self.steps),
            ("Sampler", self.sampler if self.sampler is not None else self.scheduler),
            ("Schedule type", self.schedule),
            ("CFG scale", self.guidance_scale),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
            ("Model hash", self.model_hash),
            ("Model", self.model),
        ]
        if self.clip_skip is not None:
            fields.append(("Clip skip", self.clip_skip))
        if self.strength is not None:
            fields.append(("Denoising strength", self.strength))
        if self.guidance_rescale:
            fields.append(("Guidance rescale", self.guidance_rescale))
        # sdkit's own fields: what A1111's vocabulary cannot say exactly.
        fields += [
            ("Mode", self.mode),
            ("Pipeline", self.pipeline),
            ("Scheduler", self.scheduler),
            ("Scheduler config", json.dumps(dict(self.scheduler_config), sort_keys=True)),
            ("Model sha256", self.model_sha256),
            ("Dtype", self.dtype),
        ]
        if self.sampler is None:
            fields.append(("Sampler name", "none"))
        if self.init_image_sha256 is not None:
            fields.append(("Init image sha256", self.init_image_sha256))
        if self.mask_sha256 is not None:
            fields.append(("Mask sha256", self.mask_sha256))
        if self.feature_cache is not None:
            fields.append(("Feature cache", self.feature_cache))
        fields.append(("Versions", json.dumps(dict(self.versions), sort_keys=True)))
        fields.append(("Version", f"sdkit {self.versions.get('sdkit', 'unknown')}"))
        params = ", ".join(f"{key}: {_quote(_format(value))}" for key, value in fields)
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(params)
        return "\n".join(lines)

    @classmethod
    def from_infotext(cls, text: str) -> Recipe:
        """Parse infotext written by :meth:`to_infotext` back into the same Recipe.

        Raises:
            RecipeParseError: the text lacks fields sdkit writes (e.g. infotext from A1111).
        """
        prompt, negative, params = parse_infotext(text)
        try:
            width, height = (int(v) for v in params["Size"].split("x"))
            sampler: str | None = params["Sampler"]
            if params.get("Sampler name") == "none":
                sampler = None
            return cls(
                prompt=prompt,
                negative_prompt=negative,
                model=params["Model"],
                model_sha256=params["Model sha256"],
                pipeline=params["Pipeline"],
                mode=params["Mode"],  # type: ignore[arg-type]
                sampler=sampler,
                schedule=params["Schedule type"],
                scheduler=params["Scheduler"],
                scheduler_config=json.loads(params["Scheduler config"]),
                steps=int(params["Steps"]),
                guidance_scale=float(params["CFG scale"]),
                guidance_rescale=float(params.get("Guidance rescale", 0.0)),
                clip_skip=int(params["Clip skip"]) if "Clip skip" in params else None,
                seed=int(params["Seed"]),
                width=width,
                height=height,
                strength=float(params["Denoising strength"])
                if "Denoising strength" in params
                else None,
                init_image_sha256=params.get("Init image sha256"),
                mask_sha256=params.get("Mask sha256"),
                feature_cache=int(params["Feature cache"]) if "Feature cache" in params else None,
                dtype=params["Dtype"],
                versions=json.loads(params["Versions"]),
            )
        except KeyError as exc:
            raise RecipeParseError(f"infotext has no {exc.args[0]!r} field") from exc
        except (ValueError, json.JSONDecodeError) as exc:
            raise RecipeParseError(f"infotext has a malformed field: {exc}") from exc


# A1111's grammar for the parameters line: `Key: value` pairs, values either JSON strings or
# free text without commas.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 infotext into (prompt, negative prompt, parameters).

    Works on any A1111-style text, not only sdkit's.

    Example:
        >>> parse_infotext("a cat\\nNegative prompt: dog\\nSteps: 20, Seed: 1, Size: 64x64")
        ('a cat', 'dog', {'Steps': '20', 'Seed': '1', 'Size': '64x64'})
    """
    lines = text.strip("\n").split("\n")
    params: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        for key, value in _PARAM.findall(lines.pop()):
            params[key.strip()] = _unquote(value.strip())
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if target is prompt_lines and line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].lstrip(" ")
        target.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _quote(text: str) -> str:
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(value, str):
            return value
    return text


def _json_normalise(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON types only; non-finite floats (e.g. DPM-Solver's ``lambda_min_clipped = -inf``)
    become the strings ``"Infinity"``, ``"-Infinity"``, ``"NaN"``, so that the Recipe is strict
    JSON (RFC 8259), as C2PA manifests require."""
    clean = {k: v for k, v in dict(mapping).items() if not str(k).startswith("_")}
    return dict(_finite(json.loads(json.dumps(clean, default=_json_default))))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)
