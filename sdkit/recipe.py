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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from provenance import infotext

from ._recipe_checks import (
    _HINT,
    MAX_RECIPE_CHARS,
    _addons,
    _addons_text,
    _bad,
    _Check,
    _check_size,
    _float_text,
    _int_text,
    _integer,
    _json_object,
    _json_text,
    _load_json,
    _number,
    _one_of,
    _same,
    _sha256,
    _size_text,
    _string_map,
    _text,
)
from .addons._record import AddonRecord
from .errors import RecipeParseError
from .modes import Mode

if TYPE_CHECKING:
    from provenance.watermark import Payload

    from .options import GenerationOptions, ImageInput

__all__ = ["MAX_RECIPE_CHARS", "Mode", "Recipe", "RecipeParseError", "parse_infotext"]

RECIPE_VERSION = 1


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
        addons: every add-on that shaped the image (LoRAs, embeddings, VAE, ControlNets…), in
            the order applied: :class:`sdkit.addons.AddonRecord` (name, SHA-256, settings).
            Left out of the JSON when empty, so Recipes without add-ons keep their bytes.

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
    addons: tuple[AddonRecord, ...] = ()

    def __post_init__(self) -> None:
        # Normalise mappings through JSON so that a round trip compares equal (tuples -> lists).
        object.__setattr__(self, "scheduler_config", _json_normalise(self.scheduler_config))
        object.__setattr__(self, "versions", dict(self.versions))
        object.__setattr__(self, "addons", _addons("addons", self.addons))

    def to_options(
        self,
        *,
        init_image: ImageInput | None = None,
        mask: ImageInput | None = None,
        watermark_payloads: Sequence[Payload] | None = None,
    ) -> GenerationOptions:
        """The call options that made this image: ``gen(r.prompt, **r.to_options().as_kwargs())``.

        A Recipe records the init image and the mask by hash only, and the watermark payload
        not at all: pass them to redo an img2img or inpaint call, or to get the same
        watermarked pixels (:meth:`sdkit.Generator.replay` does all of this from a file).
        """
        from .options import GenerationOptions  # imports torch: only when asked

        return GenerationOptions.from_recipe(
            self, init_image=init_image, mask=mask, watermark_payloads=watermark_payloads
        )

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with a ``recipe_version`` field."""
        data = dataclasses.asdict(self)
        data["scheduler_config"] = dict(self.scheduler_config)
        data["versions"] = dict(self.versions)
        data["addons"] = [record.to_dict() for record in self.addons]
        if not self.addons:
            del data["addons"]  # Recipes without add-ons keep the bytes they always had
        return {"recipe_version": RECIPE_VERSION, **data}

    def to_json(self, *, indent: int | None = None) -> str:
        """Serialise to JSON (keys in field order)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build from :meth:`to_dict` output; every field is checked.

        Raises:
            RecipeParseError: a field is unknown, missing, of the wrong type or out of range
                (``exc.field`` names it).
        """
        if not isinstance(data, Mapping):
            raise RecipeParseError(
                f"a Recipe is a JSON object, not {type(data).__name__}", hint=_HINT
            )
        version = data.get("recipe_version", RECIPE_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _bad("recipe_version", version, "a positive integer")
        if version > RECIPE_VERSION:
            raise RecipeParseError(
                f"recipe_version {version} is newer than this sdkit reads ({RECIPE_VERSION})",
                field="recipe_version",
                hint="upgrade sdkit to read this Recipe.",
            )
        values = {k: v for k, v in data.items() if k != "recipe_version"}
        unknown = sorted((str(k) for k in values if k not in _CHECKS), key=len)[:5]
        if unknown:
            raise RecipeParseError(
                f"unknown recipe fields: {', '.join(repr(k[:40]) for k in unknown)}",
                field=unknown[0][:40],
                hint=_HINT,
            )
        checked: dict[str, Any] = {}
        for name, check in _CHECKS.items():
            if name in values:
                value = values[name]
                checked[name] = None if value is None and name in _NULLABLE else check(name, value)
            elif name in _REQUIRED:
                raise RecipeParseError(
                    f"incomplete recipe: no {name!r} field", field=name, hint=_HINT
                )
        return cls(**checked)

    @classmethod
    def from_json(cls, text: str | bytes) -> Recipe:
        """Parse :meth:`to_json` output.

        Raises:
            RecipeParseError: the text is longer than :data:`MAX_RECIPE_CHARS`, not JSON (or
                nested too deep for it), not an object, or not a valid Recipe.
        """
        if not isinstance(text, (str, bytes)):
            raise RecipeParseError(f"recipe JSON must be text, not {type(text).__name__}")
        _check_size("recipe JSON", text)
        return cls.from_dict(_load_json("recipe JSON", text, None, dict))

    # -- A1111 infotext -----------------------------------------------------------------------

    @property
    def model_hash(self) -> str:
        """A1111's short model hash: the first 10 hex digits of the weights' SHA-256."""
        return self.model_sha256[:10]

    def to_infotext(self) -> str:
        """Render A1111's "parameters" text (prompt, negative prompt, then key: value pairs).

        "Sampler" and "Schedule type" are A1111's names for what ran (for the model's own
        scheduler, its class and config: Euler with Karras sigmas is "Euler", "Karras").
        Where they do not read back as this Recipe's sampler and schedule (no sampler named,
        a schedule A1111 has no label for, a sampler A1111 lacks), sdkit's own "sdkit
        sampler" / "sdkit schedule" fields say them exactly; A1111 ignores keys it does not
        know.
        """
        from .samplers import a1111_names, read_a1111_names  # imports diffusers: only here

        sampler, label = a1111_names(
            self.sampler, self.schedule, self.scheduler, self.scheduler_config
        )
        read_sampler, read_schedule = read_a1111_names(sampler, label)
        fields: list[tuple[str, Any]] = [("Steps", self.steps), ("Sampler", sampler)]
        if label is not None:
            fields.append(("Schedule type", label))
        fields += [
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
        if read_sampler != self.sampler:
            fields.append(("sdkit sampler", "none" if self.sampler is None else self.sampler))
        if read_schedule != self.schedule:
            fields.append(("sdkit schedule", self.schedule))
        if self.init_image_sha256 is not None:
            fields.append(("Init image sha256", self.init_image_sha256))
        if self.mask_sha256 is not None:
            fields.append(("Mask sha256", self.mask_sha256))
        if self.feature_cache is not None:
            fields.append(("Feature cache", self.feature_cache))
        if self.addons:
            records = [record.to_dict() for record in self.addons]
            fields += infotext.addon_fields(records, model_hash=self.model_hash)
            fields.append(("Addons", json.dumps(records, separators=(",", ":"))))
        fields.append(("Versions", json.dumps(dict(self.versions), sort_keys=True)))
        fields.append(("Version", f"sdkit {self.versions.get('sdkit', 'unknown')}"))
        return infotext.format_infotext(self.prompt, self.negative_prompt, fields)

    @classmethod
    def from_infotext(cls, text: str) -> Recipe:
        """Parse infotext written by :meth:`to_infotext` back into the same Recipe.

        Every field is checked as in :meth:`from_dict`.

        Raises:
            RecipeParseError: the text lacks fields sdkit writes (e.g. infotext from A1111), a
                field is malformed or out of range (``exc.field`` names the infotext key), or
                the text is longer than :data:`MAX_RECIPE_CHARS`.
        """
        prompt, negative, params = parse_infotext(text)
        _sdkit_names(params)
        values: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
        for key, (name, read) in _INFOTEXT_FIELDS.items():
            if key in params:
                values[name] = read(key, params[key])
            elif name in _REQUIRED_INFOTEXT:
                raise RecipeParseError(
                    f"infotext has no {key!r} field",
                    field=key,
                    hint="only infotext that sdkit wrote describes a whole Recipe.",
                )
        width, height = values.pop("size")
        if values.get("mode", "txt2img") == "txt2img":
            values.pop("strength", None)  # A1111's "Denoising strength" of a hires pass
        values.update(width=width, height=height)
        if params.get("sdkit sampler", params.get("Sampler name")) == "none":
            values["sampler"] = None
        try:
            return cls.from_dict(values)
        except RecipeParseError as exc:
            infotext_key = _INFOTEXT_KEYS.get(exc.field or "") or exc.field
            message = exc.message.replace(
                f"recipe field {exc.field!r}", f"infotext field {infotext_key!r}"
            )
            raise RecipeParseError(message, field=infotext_key, hint=exc.hint) from exc


# The check of each field, in the dataclass' order. The ranges are the Generator's own limits
# (see GenerationOptions.check), so every Recipe sdkit writes passes, and a replay re-checks them.
_CHECKS: dict[str, _Check] = {
    "prompt": _text,
    "model": _text,
    "model_sha256": _sha256,
    "pipeline": _text,
    "scheduler": _text,
    "steps": _integer(1, 1000),
    "guidance_scale": _number(0.0, 100.0),
    "seed": _integer(0, 2**32 - 1),
    "width": _integer(8, 16384),
    "height": _integer(8, 16384),
    "negative_prompt": _text,
    "mode": _one_of(*get_args(Mode)),
    "sampler": _text,
    "schedule": _text,
    "scheduler_config": _json_object,
    "guidance_rescale": _number(0.0, 1.0),
    "clip_skip": _integer(1, 64),
    "strength": _number(0.0, 1.0),
    "init_image_sha256": _sha256,
    "mask_sha256": _sha256,
    "feature_cache": _integer(1, 1000),
    "dtype": _text,
    "versions": _string_map,
    "addons": _addons,
}
_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
assert list(_CHECKS) == list(_FIELDS), "a Recipe field without a check"
# Fields without a default must be given; those whose default is None may be None.
_REQUIRED = {n for n, f in _FIELDS.items() if f.default is f.default_factory is dataclasses.MISSING}
_NULLABLE = {n for n, f in _FIELDS.items() if f.default is None}


# infotext key -> (Recipe field, reader). "Sampler name: none" is read in from_infotext.
_INFOTEXT_FIELDS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "Steps": ("steps", _int_text),
    "Sampler": ("sampler", _same),
    "Schedule type": ("schedule", _same),
    "CFG scale": ("guidance_scale", _float_text),
    "Seed": ("seed", _int_text),
    "Size": ("size", _size_text),
    "Model": ("model", _same),
    "Clip skip": ("clip_skip", _int_text),
    "Denoising strength": ("strength", _float_text),
    "Guidance rescale": ("guidance_rescale", _float_text),
    "Mode": ("mode", _same),
    "Pipeline": ("pipeline", _same),
    "Scheduler": ("scheduler", _same),
    "Scheduler config": ("scheduler_config", _json_text),
    "Model sha256": ("model_sha256", _same),
    "Dtype": ("dtype", _same),
    "Init image sha256": ("init_image_sha256", _same),
    "Mask sha256": ("mask_sha256", _same),
    "Feature cache": ("feature_cache", _int_text),
    "Versions": ("versions", _json_text),
    "Addons": ("addons", _addons_text),
}
_REQUIRED_INFOTEXT = {"steps", "sampler", "schedule", "guidance_scale", "seed", "size", "model",
                      "mode", "pipeline", "scheduler", "scheduler_config", "model_sha256",
                      "dtype", "versions"}  # fmt: skip
# Recipe field -> infotext key, to name the key the user sees in an error.
_INFOTEXT_KEYS = {name: key for key, (name, _) in _INFOTEXT_FIELDS.items()} | {
    "width": "Size",
    "height": "Size",
}


def _sdkit_names(params: dict[str, str]) -> None:
    """Put sdkit's sampler and schedule names in ``params``' "Sampler" and "Schedule type".

    sdkit's own fields win; else A1111's names are read as A1111 means them. Infotext from
    sdkit before 0.2 wrote sdkit's names in A1111's fields ("Schedule type: default",
    "Sampler name: none").
    """
    if "Sampler" not in params:
        return
    from .samplers import read_a1111_names  # imports diffusers: only here

    sampler, schedule = read_a1111_names(params["Sampler"], params.get("Schedule type"))
    params["Sampler"] = params.get("sdkit sampler", sampler)
    own = params.get("sdkit schedule", schedule)
    if own is not None:
        params["Schedule type"] = own


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 infotext into (prompt, negative prompt, parameters).

    Works on any A1111-style text, not only sdkit's, in time linear in its length (the codec:
    :func:`provenance.infotext.parse_infotext`).

    Raises:
        RecipeParseError: the text is longer than :data:`MAX_RECIPE_CHARS`.

    Example:
        >>> parse_infotext("a cat\\nNegative prompt: dog\\nSteps: 20, Seed: 1, Size: 64x64")
        ('a cat', 'dog', {'Steps': '20', 'Seed': '1', 'Size': '64x64'})
    """
    if not isinstance(text, str):
        raise RecipeParseError(f"infotext must be text, not {type(text).__name__}")
    _check_size("infotext", text)
    prompt, negative, params = infotext.parse_infotext(text)
    return prompt, negative, params


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
