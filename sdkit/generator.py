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
import functools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import torch

from provenance.credentials import Credentials
from provenance.stamp import Stamper, ingredient_from
from provenance.store import ManifestStore
from provenance.watermark import Payload

from . import batch, models, prompt_conditioning
from ._denoised import Cancel, Denoised, make_stamper, step_hook
from ._option_values import ImageInput, check_int, first_seed
from ._plan import ModelFacts, Plan, model_facts, native_size
from ._recipes import library_versions, recipes_for, state_sha256
from .addons.generator_setup import model_addons, prompt_addons_for
from .addons.lora import LoraFile, LoraWeight
from .addons.passes import Addons
from .addons.vae import swap_vae
from .errors import GenerationCancelled, InvalidOptionError, ModelLoadError
from .feature_cache import FeatureCache
from .images import GeneratedImage, GenerationResult
from .options import BatchOptions, ControlInput, GenerationOptions, Mode, StepCallback
from .replay import ReplayResult
from .replay import replay as replay_file
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
        lora_dirs: folders where ``<lora:name>`` and ``loras={name: w}`` names are found
            (default ``$SDKIT_LORA_DIRS``, ``os.pathsep``-separated).
        embedding_dirs: folders of textual-inversion embeddings, each file's stem a prompt word
            (default ``$SDKIT_EMBEDDING_DIRS``). ``allow_pickle`` also admits ``.pt`` / ``.bin``
            LoRAs and embeddings.
        vae: another VAE: a ``.safetensors`` file, a diffusers folder or a hub id
            (:mod:`sdkit.addons.vae`).
        refiner: an SDXL refiner (hub id, folder, file or pipeline), which takes over at each
            call's ``refiner_switch`` (:mod:`sdkit.addons.refiner`).

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
        vae: Any = None,
        refiner: Any = None,
        lora_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        embedding_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        **load_options: Any,
    ) -> None:
        check_modes(optimize, memory)
        stamper = stamper or make_stamper(credentials, store, watermark, training_mining)
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
        swapped = swap_vae(pipe, vae, torch_dtype=self.dtype, local_files_only=local_files_only)
        self._init_pipeline(
            pipe,
            files,
            progress=progress,
            stamper=stamper,
            optimize=optimize,
            memory=memory,
            defaults=known if known is not None else defaults(),
            addon_dirs=(lora_dirs, embedding_dirs, allow_pickle),
        )
        self.addons = model_addons(pipe, refiner, device=self.device, dtype=self.dtype,
            local_files_only=local_files_only, fixed=swapped)  # fmt: skip

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
        lora_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        embedding_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
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
        stamper = stamper or make_stamper(**provenance)
        self._init_pipeline(pipe, [], progress=progress, to_device=False, stamper=stamper,
                            addon_dirs=(lora_dirs, embedding_dirs, False))  # fmt: skip
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
        addon_dirs: tuple[Any, Any, bool] = (None, None, False),
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
        self.model_sha256 = models.weights_sha256(files) if files else state_sha256(pipe)
        self._versions = library_versions()
        self.addons = Addons(device=self.device, dtype=self.dtype)
        self.prompt_addons = prompt_addons_for(pipe, *addon_dirs)

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
        control: Sequence[ControlInput] | None = None,
        hires_scale: float | None = None,
        hires_upscaler: str | None = None,
        hires_steps: int | None = None,
        hires_strength: float | None = None,
        refiner_switch: float | None = None,
        loras: Mapping[str, LoraWeight] | None = None,
        fuse_loras: bool = False,
    ) -> GenerationResult:
        """Make ``num_images`` images; image ``i`` uses seed ``seed + i``.

        Args:
            prompt: text, with A1111 weighting syntax (``(word:1.3)``), any number of 75-token
                chunks up to 64 (100,000 characters, 64 open brackets, weights within ±1000).
            negative_prompt, sampler, …, feature_cache: the attributes of
                :class:`sdkit.options.GenerationOptions`, where each is documented, once.

        Raises:
            InvalidOptionError: an option is invalid (raised before any work starts).
            GenerationCancelled: the callback asked to stop.
        """
        started = time.perf_counter()
        options = GenerationOptions(
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
            control=control,
            hires_scale=hires_scale,
            hires_upscaler=hires_upscaler,
            hires_steps=hires_steps,
            hires_strength=hires_strength,
            refiner_switch=refiner_switch,
            loras=loras,
            fuse_loras=fuse_loras,
        )
        denoised = self._denoise(prompt, options)
        payloads = watermark_payloads
        return GenerationResult(
            images=tuple(
                denoised.stamp(i, None if payloads is None else payloads[i])
                for i in range(len(denoised.pictures))
            ),
            elapsed_s=time.perf_counter() - started,
        )

    generate = __call__

    def _check(self, prompt: str, options: GenerationOptions) -> Plan:
        """Validate a call before any work: the prompt, then the options against :attr:`facts`."""
        if not isinstance(prompt, str):
            raise InvalidOptionError("prompt", prompt, "a string")
        return options.check(self.facts)

    def _denoise(self, prompt: str, options: GenerationOptions) -> Denoised:
        """Steps 1-6 of ``__call__``: checked options in, decoded pictures and Recipes out."""
        # 1. Validate every option (the model's defaults where the caller said nothing),
        # resolve sampler, seeds and size, and build the scheduler: all before any work.
        plan = self._check(prompt, options)
        # 2. The pipeline for the mode (ControlNet's if asked), sharing weights, with the plan's
        # fresh scheduler; add-on models loaded and checked, control images read.
        extras = self.addons.prepare(plan.mode, self.pipe.unet, options)
        # LoRAs (loras= and the prompt's <lora:> tags) and the embeddings its texts name.
        prepared = self.prompt_addons.prepare(
            prompt, options.negative_prompt, options.loras, fuse=options.fuse_loras
        )
        pipe = extras.pipeline(self.pipe, self._pipeline)
        pipe.scheduler = plan.scheduler
        pipe.set_progress_bar_config(disable=not self.progress, leave=False)
        # 3. Prompt embeddings (weighting, long prompts; editing, alternation, AND per call).
        do_cfg = (
            plan.guidance_scale > 1
            and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
        )
        encode = functools.partial(
            prompt_conditioning.condition,
            prompt=prepared.text,
            negative_prompt=options.negative_prompt,
            steps=plan.steps,
            clip_skip=plan.clip_skip,
            guidance=do_cfg,
            device=self.device,
        )
        conditioning = encode(pipe)
        # 4. The pipeline's arguments: one CPU generator per image, the step callback.
        kwargs = {**conditioning.embeds.as_pipeline_kwargs(), **plan.pipeline_kwargs()}
        if options.callback is not None:
            kwargs["callback_on_step_end"] = step_hook(options.callback)
        # 5. Denoise and decode.
        interval = plan.feature_cache
        cache = FeatureCache(pipe.unet, interval) if interval else contextlib.nullcontext()
        try:
            with cache, conditioning:
                pictures = extras.run(
                    pipe, kwargs, seeds=plan.seeds, derive=self._pipeline, encode=encode
                )
        except Cancel as stop:
            raise GenerationCancelled(stop.step) from None
        # 6. One Recipe per image.
        init_image = options.init_image
        parent = ingredient_from(init_image) if init_image is not None else None
        recipes = recipes_for(
            pipe, plan, prompt, options.negative_prompt, model=self.source.name,
            model_sha256=self.model_sha256, dtype=self.dtype, versions=self._versions,
            addons=(*prepared.records, *extras.records),
        )  # fmt: skip
        return Denoised(pictures, recipes, parent, self.stamper)

    @property
    def facts(self) -> ModelFacts:
        """What validating a call's options needs to know about this model."""
        return model_facts(
            self.pipe, family=self.family, default_steps=self.defaults.steps,
            default_guidance_scale=self.defaults.guidance_scale,
            scheduler_class=self._base_scheduler_class,
            scheduler_config=self._base_scheduler_config, optimize=self.runtime.optimize,
        )  # fmt: skip

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the model was trained at: UNet sample size x VAE scale factor."""
        return native_size(self.pipe)

    def load_lora(
        self, path_or_hub_id: str | os.PathLike[str], name: str | None = None
    ) -> LoraFile:
        """Load a LoRA once (kohya/A1111 file, diffusers folder, hub id, name in ``lora_dirs``).

        Calls then use it by ``name`` (default: the file stem or folder name):
        ``loras={name: 0.8}`` or ``<lora:name:0.8>``; the base model is not reloaded.

        Raises:
            AddonError: not a LoRA, or made for another model family (both are named).
            AddonNotFoundError: a name found in no ``lora_dirs`` folder (close names listed).
        """
        return self.prompt_addons.loras.load(path_or_hub_id, name)

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
        return replay_file(self, source, init_image=init_image, mask=mask)

    def stream(
        self,
        prompt: str,
        *,
        num_images: int = 1,
        seed: int | None = None,
        **options: Unpack[BatchOptions],
    ) -> Iterator[GeneratedImage]:
        """Yield images one at a time: image ``i`` is exactly what ``self(..., seed=seed + i)`` makes.

        Options are those of :meth:`__call__`; bad ones raise before the first image is made.
        """
        check_int("num_images", num_images, 1, None)
        first = first_seed(seed, num_images)
        for i in range(num_images):
            yield self(prompt, seed=first + i, num_images=1, **options).image

    def warmup(self, *, num_images: int = 1, **options: Unpack[BatchOptions]) -> float:
        """Make one throw-away batch so that compiling happens now, not in the first real call.

        Use the size and batch you will generate at (``width=``, ``height=``; ``optimize``
        compiles per size); other options as for :meth:`__call__` (``steps`` defaults to 2).
        Nothing is watermarked or written. Returns the seconds it took.
        """
        clock = time.perf_counter()
        checked = GenerationOptions.from_kwargs(
            {"steps": 2, **options}, num_images=num_images, seed=0
        )
        self._denoise("warm-up", checked)
        return time.perf_counter() - clock

    # the pipeline denoises the next prompt while a thread pool stamps and writes (batch.py)
    generate_many = batch.generate_many

    # -- steps of __call__ -------------------------------------------------------------------

    def _pipeline(self, mode: Mode) -> Any:
        if mode == "txt2img":
            return self.pipe
        if mode not in self._derived:
            self._derived[mode] = models.derived_pipeline(self.pipe, mode)
        return self._derived[mode]
