"""Generator: load a Stable Diffusion pipeline once, then make images with a Recipe each.

Example:
    With the model sdkit ships (for a real one: ``Generator.from_pretrained("stabilityai/sdxl-turbo")``):

    >>> from sdkit import Generator
    >>> gen = Generator(device="cpu", progress=False)
    >>> result = gen("a lighthouse at dusk", sampler="Euler a", steps=2, seed=7, num_images=2,
    ...              width=64, height=64)
    >>> result.seeds
    [7, 8]
    >>> result.image.recipe.sampler, result.image.recipe.scheduler
    ('Euler a', 'EulerAncestralDiscreteScheduler')
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import numbers
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from provenance.credentials import Credentials
from provenance.stamp import Stamper, ingredient_from
from provenance.store import ManifestStore, default_store_path
from provenance.watermark import Payload

from . import models, prompts, samplers
from .errors import GenerationCancelled, InvalidOptionError, ModelLoadError, OutputError
from .feature_cache import FeatureCache, check_interval
from .images import GeneratedImage, GenerationResult
from .recipe import Mode, Recipe
from .replay import ReplayResult
from .runtime import (
    DeviceLike,
    DtypeLike,
    Memory,
    Optimize,
    RuntimeSetup,
    check_modes,
    resolve_device,
    resolve_dtype,
    setup_pipeline,
)

__all__ = ["Generator", "StepCallback"]

#: ``callback(step, timestep, latents)``; return ``False`` (or raise GenerationCancelled) to stop.
StepCallback = Callable[[int, int, torch.Tensor], bool | None]
ImageInput = Image.Image | str | os.PathLike[str]
MAX_SEED = 2**32 - 1
DEFAULT_STRENGTH = 0.75


class _Cancel(Exception):
    def __init__(self, step: int) -> None:
        self.step = step


@dataclass(frozen=True)
class _Plan:
    """Validated options of one call (steps 1-2 of ``__call__``)."""

    mode: Mode
    width: int
    height: int
    seeds: list[int]
    sampler: samplers.ResolvedSampler | None
    init_image: Image.Image | None
    mask: Image.Image | None
    strength: float | None


@dataclass(frozen=True)
class _Denoised:
    """Pictures as the pipeline decoded them, before the watermark (steps 1-6 of a call)."""

    pictures: list[Image.Image]
    recipes: list[Recipe]
    parent: Any


class Generator:
    """A loaded diffusion pipeline plus the options users of A1111, ComfyUI and diffusers expect.

    Build one with :meth:`from_pretrained` (hub id or diffusers folder), :meth:`from_single_file`
    (one ``.safetensors`` checkpoint) or ``Generator()`` for the default model; then call it.

    Args:
        model: hub id, folder, single file, or ``None`` for the model sdkit ships.
        device: ``"cuda"``, ``"cpu"``, ``"mps"``…; ``None`` picks the best present.
        dtype: weights' dtype; ``None`` = float16 on GPUs, float32 on CPUs.
        progress: show a progress bar while denoising.
        allow_pickle: allow ``.ckpt``/``.bin`` weights (they can run code).
        local_files_only: never contact the hub (default: ``HF_HUB_OFFLINE``).
        credentials: who signs the images' C2PA manifests
            (:class:`provenance.credentials.Credentials`); default: ``SDKIT_SIGNING_CERT`` /
            ``SDKIT_SIGNING_KEY``, else your development credentials (created once).
        store: a manifest store (or its path; default ``$SDKIT_STORE``) that keeps every
            signed manifest under its watermark, so stripped copies can be re-linked.
        watermark: embed the invisible watermark (default True).
        training_mining: CAWG training-and-mining uses to state, e.g.
            ``{"ai_inference": "allowed"}`` (default: generative AI training ``notAllowed``).
        stamper: a ready :class:`provenance.stamp.Stamper` instead of the four options above.
        optimize: ``"none"`` (diffusers as it is), ``"compile"`` (channels-last, fused QKV,
            regional ``torch.compile``) or ``"max"`` (whole-UNet and VAE compile, CUDA graphs
            on CUDA); see :mod:`sdkit.runtime`. Compiling happens on the first call at a size
            (or in :meth:`warmup`).
        memory: ``"high"`` (all on the device), ``"balanced"`` (model offload, sliced VAE),
            ``"low"`` (+ tiled VAE, attention slicing) or ``"minimal"`` (sequential offload).
        **load_options: ``revision``, ``variant``, ``cache_dir`` (hub); ``family``, ``config``,
            ``prediction_type`` (single file).

    Attributes:
        defaults: the steps and guidance a call uses when it does not pass them
            (:class:`sdkit.models.ModelDefaults`): the model folder's ``sdkit.json``, else 4
            steps without guidance for Turbo models, else 25 steps at CFG 7.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: DeviceLike = None,
        dtype: DtypeLike = None,
        progress: bool = True,
        allow_pickle: bool = False,
        local_files_only: bool | None = None,
        credentials: Credentials | None = None,
        store: ManifestStore | str | os.PathLike[str] | None = None,
        watermark: bool = True,
        training_mining: Mapping[str, str] | None = None,
        stamper: Stamper | None = None,
        optimize: Optimize = "none",
        memory: Memory = "high",
        **load_options: Any,
    ) -> None:
        check_modes(optimize, memory)
        stamper = stamper or _stamper(credentials, store, watermark, training_mining)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.source = models.resolve_source(model)

        def defaults() -> models.ModelDefaults:
            hub = {k: load_options.get(k) for k in ("revision", "cache_dir")}
            return models.model_defaults(self.source, **hub)

        # a bad sdkit.json fails before the weights are read (a hub download brings its own)
        known = None if self.source.kind == "hub" else defaults()
        pipe, files = models.load_pipeline(
            self.source,
            torch_dtype=self.dtype,
            allow_pickle=allow_pickle,
            local_files_only=local_files_only,
            **load_options,
        )
        self._init_pipeline(
            pipe,
            files,
            progress=progress,
            stamper=stamper,
            optimize=optimize,
            memory=memory,
            defaults=known if known is not None else defaults(),
        )

    @classmethod
    def from_pretrained(cls, id_or_folder: str | os.PathLike[str], **options: Any) -> Generator:
        """Load a hub id (cache only when offline) or a local diffusers folder."""
        source = models.resolve_source(id_or_folder)
        if source.kind == "single_file":
            raise ModelLoadError(
                f"{id_or_folder} is a file, not a diffusers folder or hub id",
                source=str(id_or_folder),
                hint="use Generator.from_single_file(path) for one checkpoint file.",
            )
        return cls(id_or_folder, **options)

    @classmethod
    def from_single_file(cls, path: str | os.PathLike[str], **options: Any) -> Generator:
        """Load one original-format checkpoint (SD 1.x, 2.x, SDXL), offline.

        Options beyond the constructor's: ``family`` (``"sd1"``, ``"sd2"``, ``"sdxl"``, … to
        override detection), ``config`` (a diffusers folder describing a custom architecture),
        ``prediction_type``.
        """
        source = models.resolve_source(path)
        if source.kind != "single_file":
            raise ModelLoadError(
                f"{path} is not a checkpoint file",
                source=str(path),
                hint="use Generator.from_pretrained for folders and hub ids.",
            )
        return cls(path, **options)

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        *,
        name: str = "custom",
        progress: bool = True,
        stamper: Stamper | None = None,
        **provenance: Any,
    ) -> Generator:
        """Wrap an already-loaded diffusers pipeline (its weights are hashed from memory).

        ``provenance``: ``credentials``, ``store``, ``watermark``, ``training_mining``, as for
        the constructor.
        """
        self = cls.__new__(cls)
        self.device = torch.device(getattr(pipe, "device", "cpu"))
        self.dtype = getattr(pipe, "dtype", torch.float32)
        self.source = models.ModelSource("folder", name, name)
        stamper = stamper or _stamper(**provenance)
        self._init_pipeline(pipe, [], progress=progress, to_device=False, stamper=stamper)
        return self

    def _init_pipeline(
        self,
        pipe: Any,
        files: list[Path],
        *,
        progress: bool,
        stamper: Stamper,
        to_device: bool = True,
        optimize: str = "none",
        memory: str = "high",
        defaults: models.ModelDefaults | None = None,
    ) -> None:
        if to_device:
            self.runtime = setup_pipeline(pipe, self.device, optimize=optimize, memory=memory)
        else:
            self.runtime = RuntimeSetup("none", "high", (), ("placement (a pipeline given as is)",))
        self.pipe = pipe
        self.defaults = defaults or models.ModelDefaults()
        self.family = models.pipeline_family(pipe)
        self.progress = progress
        self.stamper = stamper
        self._derived: dict[str, Any] = {}
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._base_scheduler_class = type(pipe.scheduler)
        self.model_sha256 = models.weights_sha256(files) if files else _state_sha256(pipe)
        self._versions = _versions()

    def __repr__(self) -> str:
        return (
            f"Generator(model={self.source.name!r}, pipeline={type(self.pipe).__name__}, "
            f"device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"
        )

    # -- generation -------------------------------------------------------------------------

    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        sampler: str | None = None,
        schedule: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        seed: int | None = None,
        width: int | None = None,
        height: int | None = None,
        num_images: int = 1,
        init_image: ImageInput | None = None,
        strength: float | None = None,
        mask: ImageInput | None = None,
        callback: StepCallback | None = None,
        watermark_payloads: Sequence[Payload] | None = None,
        feature_cache: int | None = None,
    ) -> GenerationResult:
        """Make ``num_images`` images; image ``i`` uses seed ``seed + i``.

        Args:
            prompt: text, with A1111 weighting syntax (``(word:1.3)``), any number of 75-token
                chunks up to 64 (100,000 characters, 64 open brackets, weights within ±1000).
            negative_prompt: what to steer away from.
            sampler: A1111 or ComfyUI sampler name (see ``sdkit samplers``); ``None`` keeps the
                model's own scheduler.
            schedule: ``"karras"``, ``"exponential"``, ``"beta"``, ``"sgm_uniform"``…
            steps: denoising steps (1-1000, and what the sampler can schedule: PNDM and DDIM
                with SD's config take at most 999); ``None``: the model's default
                (:attr:`defaults`: 25 for most models).
            guidance_scale: classifier-free guidance; <= 1 turns it off. ``None``: the
                model's default (:attr:`defaults`: 7 for most models, 3 for the model sdkit
                ships, 0 for Turbo models).
            guidance_rescale: φ of "Common Diffusion Noise Schedules…" (0..1).
            clip_skip: A1111 meaning, 1 = last layer, 2 = penultimate.
            seed: first seed (0 .. 2**32-1); ``None`` draws one (recorded in the Recipe).
            width: pixels, a multiple of 8 (default: the model's native size, or the init image's).
            height: pixels, a multiple of 8.
            num_images: images to make in one batch.
            init_image: image (or path) to start from: img2img, or inpaint with ``mask``.
            strength: how much of ``init_image`` to repaint, 0..1 (default 0.75).
            mask: white = repaint, black = keep; same size as ``init_image``.
            callback: ``callback(step, timestep, latents)`` after each step; return ``False``
                to cancel (raises :class:`~sdkit.errors.GenerationCancelled`).
            watermark_payloads: one :class:`provenance.watermark.Payload` per image to embed
                instead of fresh random ones (:meth:`replay` uses it).
            feature_cache: lossy speed-up, DeepCache style: the whole UNet runs every
                ``feature_cache``-th step (2..50) and the steps between reuse its deep
                features (:mod:`sdkit.feature_cache`). ``None`` (default): every step in full.
                Recorded in the Recipe. Refused under ``optimize="max"``.

        Raises:
            InvalidOptionError: an option is invalid (raised before any work starts).
            GenerationCancelled: the callback asked to stop.
        """
        started = time.perf_counter()
        denoised = self._denoise(
            prompt,
            negative_prompt=negative_prompt,
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            clip_skip=clip_skip,
            seed=seed,
            width=width,
            height=height,
            num_images=num_images,
            init_image=init_image,
            strength=strength,
            mask=mask,
            callback=callback,
            watermark_payloads=watermark_payloads,
            feature_cache=feature_cache,
        )
        return GenerationResult(
            images=tuple(self._stamp(denoised, watermark_payloads)),
            elapsed_s=time.perf_counter() - started,
        )

    generate = __call__

    def _denoise(
        self,
        prompt: str,
        *,
        negative_prompt: str,
        sampler: str | None,
        schedule: str | None,
        steps: int | None,
        guidance_scale: float | None,
        guidance_rescale: float,
        clip_skip: int | None,
        seed: int | None,
        width: int | None,
        height: int | None,
        num_images: int,
        init_image: ImageInput | None,
        strength: float | None,
        mask: ImageInput | None,
        callback: StepCallback | None,
        watermark_payloads: Sequence[Payload] | None,
        feature_cache: int | None,
    ) -> _Denoised:
        """Steps 1-6 of ``__call__``: validated options in, decoded pictures and Recipes out."""
        # 1. The model's defaults where the caller said nothing; validate before any work.
        steps, guidance_scale = self._defaulted(steps, guidance_scale)
        plan = self._plan(
            prompt=prompt,
            negative_prompt=negative_prompt,
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            clip_skip=clip_skip,
            seed=seed,
            width=width,
            height=height,
            num_images=num_images,
            init_image=init_image,
            strength=strength,
            mask=mask,
        )
        if watermark_payloads is not None and len(watermark_payloads) != num_images:
            raise InvalidOptionError(
                "watermark_payloads", len(watermark_payloads), f"{num_images} payloads"
            )
        # numpy scalars and the like pass validation; the Recipe stores plain Python numbers
        steps, num_images = int(steps), int(num_images)
        guidance_scale, guidance_rescale = float(guidance_scale), float(guidance_rescale)
        clip_skip = None if clip_skip is None else int(clip_skip)
        interval = self._feature_cache(feature_cache)
        # 2. The pipeline for the mode, sharing weights, with a fresh scheduler.
        pipe = self._pipeline(plan.mode)
        pipe.scheduler = self._scheduler(plan.sampler, plan.seeds)
        _check_steps(pipe.scheduler, steps, plan.sampler)
        pipe.set_progress_bar_config(disable=not self.progress, leave=False)
        # 3. Prompt embeddings (weighting, long prompts).
        do_cfg = (
            guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
        )
        embeds = prompts.encode_prompts(
            pipe,
            prompt,
            negative_prompt,
            clip_skip=clip_skip,
            do_classifier_free_guidance=do_cfg,
            device=self.device,
        )
        # 4. One CPU generator per image, so seeds reproduce across devices.
        generators = [torch.Generator("cpu").manual_seed(s) for s in plan.seeds]
        kwargs: dict[str, Any] = {
            **embeds.as_pipeline_kwargs(),
            "num_inference_steps": steps,
            "guidance_scale": guidance_scale,
            "num_images_per_prompt": num_images,
            "generator": generators,
            "output_type": "pil",
        }
        if guidance_rescale:
            kwargs["guidance_rescale"] = guidance_rescale
        if plan.mode == "txt2img" or plan.mode == "inpaint":
            kwargs.update(height=plan.height, width=plan.width)
        if plan.init_image is not None:
            kwargs.update(image=plan.init_image, strength=plan.strength)
        if plan.mask is not None:
            kwargs["mask_image"] = plan.mask
        if callback is not None:
            kwargs["callback_on_step_end"] = _step_hook(callback)
        # 5. Denoise and decode.
        cache = FeatureCache(pipe.unet, interval) if interval else contextlib.nullcontext()
        try:
            with cache:
                output = pipe(**kwargs)
        except _Cancel as stop:
            raise GenerationCancelled(stop.step) from None
        # 6. One Recipe per image.
        recipe_base = self._recipe_fields(
            pipe,
            plan,
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            clip_skip=clip_skip,
            feature_cache=interval,
        )
        parent = ingredient_from(init_image) if init_image is not None else None
        recipes = [_recipe_for(recipe_base, seed) for seed in plan.seeds]
        return _Denoised(list(output.images), recipes, parent)

    def _stamp(
        self, denoised: _Denoised, payloads: Sequence[Payload] | None = None
    ) -> list[GeneratedImage]:
        """Step 7: watermark the pixels; files are signed when they are written."""
        return [
            self._stamp_one(denoised, i, payloads[i] if payloads is not None else None)
            for i in range(len(denoised.pictures))
        ]

    def _stamp_one(
        self, denoised: _Denoised, index: int, payload: Payload | None = None
    ) -> GeneratedImage:
        picture = denoised.pictures[index].convert("RGB")
        marked, record = self.stamper.watermark(picture, payload)
        recipe = denoised.recipes[index]
        return GeneratedImage(marked, recipe, index, record, self.stamper, denoised.parent)

    def replay(
        self,
        source: str | os.PathLike[str] | bytes,
        *,
        init_image: ImageInput | None = None,
        mask: ImageInput | None = None,
    ) -> ReplayResult:
        """Re-render an image from the Recipe in its manifest and compare the pixels.

        Args:
            source: an image sdkit made (path or bytes), with its C2PA manifest (or, failing
                that, its infotext).
            init_image: for img2img / inpaint results, the image they started from.
            mask: for inpaint results, the mask.

        Raises:
            ReplayError: the file has no Recipe, was made by another model, or needs an init
                image (or mask) that was not given or is not the one recorded.
            RecipeParseError: (a ReplayError) the file's Recipe is malformed; ``exc.path`` is
                the file, ``exc.field`` the field at fault.
        """
        from .replay import replay

        return replay(self, source, init_image=init_image, mask=mask)

    def stream(
        self, prompt: str, *, num_images: int = 1, seed: int | None = None, **options: Any
    ) -> Iterator[GeneratedImage]:
        """Yield images one at a time: image ``i`` is exactly what ``self(..., seed=seed + i)`` makes.

        Options are those of :meth:`__call__`; bad ones raise before the first image is made.
        """
        _check_int("num_images", num_images, 1, None)
        first = secrets.randbelow(MAX_SEED - num_images + 2) if seed is None else seed
        _check_int("seed", first, 0, MAX_SEED - num_images + 1)
        for i in range(num_images):
            yield self(prompt, seed=first + i, num_images=1, **options).image

    def _feature_cache(self, interval: Any) -> int | None:
        """Validate ``feature_cache`` for this generator's runtime (see :mod:`.feature_cache`)."""
        checked = check_interval(interval)
        if checked and self.runtime.optimize == "max":
            # the whole UNet is one compiled graph (CUDA graphs on CUDA), traced through the
            # blocks' own forwards; the cache swaps them and keeps their outputs across calls,
            # which CUDA graph replays may overwrite. Not verified either way: refused
            raise InvalidOptionError(
                "feature_cache", checked, "None with optimize='max'",
                hint="feature caching works with optimize='none' or 'compile'.",
            )  # fmt: skip
        return checked

    def warmup(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        num_images: int = 1,
        steps: int = 2,
        **options: Any,
    ) -> float:
        """Make one throw-away batch so that compiling happens now, not in the first real call.

        Use the size and batch you will generate at (``optimize`` compiles per size). Nothing
        is watermarked or written. Returns the seconds it took.
        """
        clock = time.perf_counter()
        fixed = {"width": width, "height": height, "num_images": num_images, "steps": steps}
        self._denoise("warm-up", **_call_options(options, **fixed, seed=0))
        return time.perf_counter() - clock

    def generate_many(
        self,
        prompts: str | Iterable[str],
        output_dir: str | os.PathLike[str],
        *,
        num_images: int = 1,
        seed: int | None = None,
        fmt: str = "png",
        quality: int = 95,
        workers: int = 2,
        overwrite: bool = False,
        **options: Any,
    ) -> list[Path]:
        """Make images for many prompts and write them as signed files as they are ready.

        Provenance stays off the critical path: while the pipeline denoises the next prompt, a
        pool of ``workers`` threads watermarks, encodes, signs and writes the images before it
        (NumPy, Pillow's encoders and c2pa's native signer release the GIL). Each file holds
        exactly what ``self(prompt, seed=..., num_images=...)`` and ``image.save`` give.

        Args:
            prompts: one prompt, or several; each makes ``num_images`` images in one batch.
            output_dir: where the files go (created if missing); image ``n`` (counting across
                prompts) is ``{n:05d}-{seed}.{ext}``.
            num_images: images per prompt (one batch).
            seed: the first seed; image ``n`` gets ``seed + n``. ``None`` draws one.
            fmt: ``"png"``, ``"jpeg"`` or ``"webp"``; ``quality`` for the last two.
            workers: threads that stamp and write (>= 1).
            overwrite: replace existing files; by default an existing name stops the call
                before any work.
            **options: as for :meth:`__call__` (``steps``, ``sampler``, ``width``…).

        Returns:
            The written paths, in order.

        Raises:
            InvalidOptionError: a bad option (before any work).
            OutputError: a name exists (before any work), or a file cannot be written; files
                already written stay, complete and signed.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        from tqdm.auto import tqdm

        from .images import FORMATS

        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidOptionError("prompts", prompts, "a prompt or a list of prompts")
        _check_int("num_images", num_images, 1, 64)
        _check_int("workers", workers, 1, 64)
        key = "." + fmt.lower().lstrip(".")
        if key not in FORMATS:
            raise InvalidOptionError("fmt", fmt, "png, jpeg or webp")
        ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[FORMATS[key]]
        total = len(texts) * num_images
        first = secrets.randbelow(MAX_SEED - total + 2) if seed is None else seed
        _check_int("seed", first, 0, MAX_SEED - total + 1)
        folder = Path(output_dir)
        paths = [folder / f"{n:05d}-{first + n}.{ext}" for n in range(total)]
        taken = [p for p in paths if p.exists()]
        if taken and not overwrite:
            raise OutputError(
                f"{len(taken)} of the {total} files exist, e.g. {taken[0]}",
                path=taken[0],
                hint="choose another folder or pass overwrite=True.",
            )
        # every option is checked before the folder is made: a bad one leaves nothing behind
        checked = _call_options(options, num_images=num_images, seed=first)
        steps, guidance = self._defaulted(checked["steps"], checked["guidance_scale"])
        self._plan(**{**checked, "prompt": texts[0], "steps": steps, "guidance_scale": guidance})
        self._feature_cache(checked["feature_cache"])
        folder.mkdir(parents=True, exist_ok=True)

        def finish(denoised: _Denoised, index: int, path: Path) -> Path:
            image = self._stamp_one(denoised, index)
            return image.save(path, fmt=FORMATS[key], overwrite=overwrite, quality=quality)

        pending: list[Future[Path]] = []
        bar = tqdm(total=total, desc="images", unit="img", disable=not self.progress)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="sdkit-stamp") as pool:
                for k, text in enumerate(texts):
                    base = k * num_images
                    denoised = self._denoise(
                        text, **_call_options(options, num_images=num_images, seed=first + base)
                    )
                    for i in range(num_images):
                        future = pool.submit(finish, denoised, i, paths[base + i])
                        future.add_done_callback(lambda _: bar.update())
                        pending.append(future)
                    # keep at most two batches in flight: memory stays bounded
                    while sum(not f.done() for f in pending) > 2 * num_images + workers:
                        next(f for f in pending if not f.done()).result()
                return [f.result() for f in pending]
        finally:
            bar.close()

    # -- steps of __call__ -------------------------------------------------------------------

    def _defaulted(self, steps: Any, guidance_scale: Any) -> tuple[Any, Any]:
        """``steps`` and ``guidance_scale``, the model's :attr:`defaults` where ``None``."""
        return (
            self.defaults.steps if steps is None else steps,
            self.defaults.guidance_scale if guidance_scale is None else guidance_scale,
        )

    def _plan(self, **o: Any) -> _Plan:
        if not isinstance(o["prompt"], str):
            raise InvalidOptionError("prompt", o["prompt"], "a string")
        if not isinstance(o["negative_prompt"], str):
            raise InvalidOptionError("negative_prompt", o["negative_prompt"], "a string")
        _check_int("steps", o["steps"], 1, 1000)
        _check_int("num_images", o["num_images"], 1, 64)
        _check_float("guidance_scale", o["guidance_scale"], 0.0, 100.0)
        _check_float("guidance_rescale", o["guidance_rescale"], 0.0, 1.0)
        if o["clip_skip"] is not None:
            _check_int("clip_skip", o["clip_skip"], 1, self._text_layers())
        resolved = None
        if o["sampler"] is not None or o["schedule"] is not None:
            if o["sampler"] is None:
                raise InvalidOptionError(
                    "schedule",
                    o["schedule"],
                    "a schedule together with a sampler",
                    hint="pass sampler=... too (see `sdkit samplers`).",
                )
            resolved = samplers.resolve_sampler(o["sampler"], o["schedule"])
        seed = o["seed"]
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1 - o["num_images"] + 1)
        _check_int("seed", seed, 0, MAX_SEED - o["num_images"] + 1)
        init = _load_image("init_image", o["init_image"], "RGB")
        mask = _load_image("mask", o["mask"], "L")
        mode: Mode = "txt2img"
        strength = o["strength"]
        if mask is not None and init is None:
            raise InvalidOptionError(
                "mask", "given", "a mask only with init_image", hint="pass init_image=... as well."
            )
        if init is not None:
            mode = "inpaint" if mask is not None else "img2img"
            strength = DEFAULT_STRENGTH if strength is None else strength
            _check_float("strength", strength, 0.0, 1.0)
            if int(o["steps"] * strength) < 1:
                raise InvalidOptionError(
                    "strength",
                    strength,
                    f"at least 1/steps = {1 / o['steps']:.3g} with steps={o['steps']}",
                    hint="raise strength or steps: img2img runs steps*strength denoising steps.",
                )
            if mask is not None and mask.size != init.size:
                raise InvalidOptionError(
                    "mask",
                    f"{mask.size[0]}x{mask.size[1]}",
                    f"the init image's size {init.size[0]}x{init.size[1]}",
                )
            if not self.family == "sdxl" and mode == "img2img" and o["guidance_rescale"]:
                raise InvalidOptionError(
                    "guidance_rescale",
                    o["guidance_rescale"],
                    "0 for SD 1.x/2.x img2img",
                    hint="diffusers' SD img2img pipeline has no guidance rescale.",
                )
            channels = self.pipe.unet.config.in_channels
            if mode == "inpaint" and channels not in (4, 9):
                raise InvalidOptionError(
                    "mask",
                    "given",
                    "a model whose UNet takes 4 latent channels (any SD model) or 9 (an "
                    f"inpainting model); this one takes {channels}",
                    hint="inpaint with another model (Generator(model=...)); img2img without a "
                    "mask works with this one.",
                )
            if self.family != "sdxl" and mode == "inpaint" and o["guidance_rescale"]:
                raise InvalidOptionError(
                    "guidance_rescale",
                    o["guidance_rescale"],
                    "0 for SD 1.x/2.x inpaint",
                    hint="diffusers' SD inpaint pipeline has no guidance rescale.",
                )
        elif strength is not None:
            raise InvalidOptionError(
                "strength",
                strength,
                "strength only with init_image",
                hint="pass init_image=... for img2img.",
            )
        default_w, default_h = init.size if init is not None else self.native_size
        width = default_w if o["width"] is None else o["width"]
        height = default_h if o["height"] is None else o["height"]
        for name, value in (("width", width), ("height", height)):
            _check_int(name, value, 8, 16384)
            if value % 8:
                raise InvalidOptionError(
                    name,
                    value,
                    "a multiple of 8",
                    hint=f"try {value - value % 8} or {value - value % 8 + 8}"
                    + (
                        " (or pass width/height to resize the init image)"
                        if init is not None
                        else ""
                    )
                    + ".",
                )
        if init is not None and init.size != (width, height):
            init = init.resize((width, height), Image.Resampling.LANCZOS)
            if mask is not None:
                mask = mask.resize((width, height), Image.Resampling.NEAREST)
        seeds = [int(seed) + i for i in range(o["num_images"])]
        return _Plan(
            mode,
            int(width),
            int(height),
            seeds,
            resolved,
            init,
            mask,
            float(strength) if init is not None else None,
        )

    def _text_layers(self) -> int:
        encoders = [getattr(self.pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
        return min(int(e.config.num_hidden_layers) for e in encoders if e is not None)

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the model was trained at: UNet sample size x VAE scale factor."""
        factor = int(getattr(self.pipe, "vae_scale_factor", 8))
        size = self.pipe.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return int(w) * factor, int(h) * factor

    def _pipeline(self, mode: Mode) -> Any:
        if mode == "txt2img":
            return self.pipe
        if mode not in self._derived:
            self._derived[mode] = models.derived_pipeline(self.pipe, mode)
        return self._derived[mode]

    def _scheduler(self, resolved: samplers.ResolvedSampler | None, seeds: list[int]) -> Any:
        base = {k: v for k, v in self._base_scheduler_config.items() if k != "_use_default_values"}
        cls = resolved.spec.scheduler_class if resolved else self._base_scheduler_class
        if "noise_sampler_seed" in inspect.signature(cls).parameters:
            # DPM++ SDE draws its noise from a Brownian tree, not from the pipeline's
            # generators: seed it per image so that seeds reproduce.
            base["noise_sampler_seed"] = seeds[0] if len(seeds) == 1 else list(seeds)
        if resolved is None:
            return self._base_scheduler_class.from_config(base)
        return samplers.make_scheduler(resolved.spec.name, base, resolved.schedule)

    def _recipe_fields(self, pipe: Any, plan: _Plan, **options: Any) -> dict[str, Any]:
        scheduler = pipe.scheduler
        return dict(
            model=self.source.name,
            model_sha256=self.model_sha256,
            pipeline=type(pipe).__name__,
            mode=plan.mode,
            sampler=plan.sampler.spec.name if plan.sampler else None,
            schedule=plan.sampler.schedule if plan.sampler else "default",
            scheduler=type(scheduler).__name__,
            scheduler_config=dict(scheduler.config),
            width=plan.width,
            height=plan.height,
            strength=plan.strength,
            init_image_sha256=_pixels_sha256(plan.init_image),
            mask_sha256=_pixels_sha256(plan.mask),
            dtype=str(self.dtype).removeprefix("torch."),
            versions=self._versions,
            **options,
        )


# -- helpers ------------------------------------------------------------------------------------


def _check_steps(scheduler: Any, steps: int, resolved: samplers.ResolvedSampler | None) -> None:
    """Refuse a step count the scheduler cannot schedule, before any denoising.

    diffusers' "leading" spacing with ``steps_offset=1`` (PNDM, DDIM, … with SD's own config)
    schedules timestep ``num_train_timesteps`` itself at ``steps == num_train_timesteps`` and
    then indexes past the end of its noise table; LCM and TCD refuse more steps than their
    ``original_inference_steps``. Both become an :class:`InvalidOptionError` here.
    """
    name = resolved.spec.name if resolved else type(scheduler).__name__
    limit = int(scheduler.config.get("num_train_timesteps", 1000))
    try:
        scheduler.set_timesteps(steps)
        top = float(scheduler.timesteps.max())
    except (IndexError, ValueError) as exc:
        raise InvalidOptionError(
            "steps", steps, f"a step count that {name} can schedule ({exc})",
            hint="use fewer steps or another sampler.",
        ) from exc  # fmt: skip
    if not top < limit:
        raise InvalidOptionError(
            "steps", steps, f"at most {steps - 1} with {name} and this model's scheduler config "
            f"(timestep {top:g} would be past its {limit} training timesteps)",
            hint=f"use steps={steps - 1} or another sampler (e.g. sampler='Euler').",
        )  # fmt: skip


def _stamper(
    credentials: Credentials | None = None,
    store: ManifestStore | str | os.PathLike[str] | None = None,
    watermark: bool = True,
    training_mining: Mapping[str, str] | None = None,
) -> Stamper:
    store = store if store is not None else default_store_path()
    return Stamper(credentials, store=store, watermark=watermark, training_mining=training_mining)


_CALL_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(Generator.__call__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


def _call_options(options: Mapping[str, Any], **fixed: Any) -> dict[str, Any]:
    """``__call__``'s keyword options with their defaults; unknown names are refused."""
    unknown = set(options) - set(_CALL_DEFAULTS) | set(options) & set(fixed)
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidOptionError(name, options[name], "an option of Generator.__call__")
    return {**_CALL_DEFAULTS, **options, **fixed}


def _recipe_for(fields: dict[str, Any], seed: int) -> Recipe:
    config = fields["scheduler_config"]
    if "noise_sampler_seed" in config:
        # each image's Brownian-tree noise comes from its own seed
        config = {**config, "noise_sampler_seed": seed}
    return Recipe(**{**fields, "scheduler_config": config, "seed": seed})


def _step_hook(callback: StepCallback) -> Callable[..., dict[str, Any]]:
    def hook(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            keep_going = callback(step + 1, int(timestep), kwargs["latents"])
        except GenerationCancelled:
            raise _Cancel(step + 1) from None
        if keep_going is False:
            raise _Cancel(step + 1)
        return kwargs

    return hook


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidOptionError(name, value, allowed)
    value = int(value)
    if value < low or (high is not None and value > high):
        raise InvalidOptionError(name, value, allowed)


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    allowed = f"a number in {low:g}..{high:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidOptionError(name, value, allowed)
    if not low <= float(value) <= high:
        raise InvalidOptionError(name, value, allowed)


def _load_image(
    name: str, value: ImageInput | None, mode: Literal["RGB", "L"]
) -> Image.Image | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value.convert(mode)
    if isinstance(value, (str, os.PathLike)):
        try:
            with Image.open(value) as im:
                return im.convert(mode)
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(
                name, os.fspath(value), "a readable image file", hint=str(exc)
            ) from exc
    raise InvalidOptionError(name, type(value).__name__, "a PIL image or an image path")


def _pixels_sha256(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    return hashlib.sha256(image.tobytes()).hexdigest()


def _state_sha256(pipe: Any) -> str:
    digest = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("sdkit", "diffusers", "transformers", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out
