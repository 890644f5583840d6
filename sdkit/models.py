"""Where weights come from: the embedded default, a hub id, a local folder, or a single file.

Rules:
    * A path that exists is loaded from disk; a folder must be in diffusers format
      (``model_index.json``), a file must be a single-file checkpoint.
    * A name that can only be a path (``./m``, ``~/m``, ``a/b/c``, ``m.safetensors``) and does
      not exist is a :class:`~sdkit.errors.ModelNotFoundError` naming where it was looked for,
      never sent to the hub; so is ``models/typo`` beside a ``models`` folder.
    * Anything else that looks like ``owner/name`` is a Hugging Face hub id. Offline
      (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) it is read from the local cache only,
      and a missing model is a :class:`~sdkit.errors.ModelNotFoundError` naming the id and the
      cache folder. Online, a repository the hub does not know is one too ("no such folder or
      hub model"); either hint says where a local folder of that name was looked for.
    * Pickle weights (``.ckpt``, ``.pt``, ``.bin`` …) can run code when loaded: they are refused
      unless the caller passes ``allow_pickle=True``. Safetensors always work. In a folder with
      both (common on the hub) the safetensors are loaded and the pickle files ignored, never
      unpickled; a component with pickle weights only is refused by name.
    * Model files are outside data. Every ``.safetensors`` header of a folder's components is
      checked rule by rule (``sdkit._safetensors``) before diffusers reads it, and ``sdkit.json``
      and ``model_index.json`` are read up to 1 MiB and parsed safely (``sdkit._json``): a
      hostile file is a :class:`~sdkit.errors.ModelLoadError` naming it, never a raw exception.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ._json import read_json
from ._safetensors import read_safetensors_header
from .errors import ModelLoadError, ModelNotFoundError, SdkitError, UnsafeCheckpointError
from .weights_hash import weights_sha256

__all__ = [
    "DEFAULTS_FILE",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_MODEL_ID",
    "ModelDefaults",
    "ModelSource",
    "derived_pipeline",
    "hub_cache_dir",
    "is_offline",
    "load_pipeline",
    "model_defaults",
    "pipeline_family",
    "resolve_source",
    "weights_sha256",
]

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
DEFAULT_MODEL_ID = "sdkit-default"
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
SINGLE_FILE_SUFFIXES = frozenset({".safetensors"}) | PICKLE_SUFFIXES
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")

#: A model folder's own generation defaults (``{"defaults": {"steps": 25, "guidance_scale": 4}}``).
DEFAULTS_FILE = "sdkit.json"
#: Largest ``sdkit.json`` / ``model_index.json`` read (they are a few hundred bytes).

SourceKind = Literal["default", "folder", "hub", "single_file"]
Family = Literal["sd", "sdxl"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are.

    Attributes:
        kind: ``"default"``, ``"folder"``, ``"hub"`` or ``"single_file"``.
        location: the folder or file path, or the hub id.
        name: what the Recipe records as the model (hub id, path, or ``"sdkit-default"``).
    """

    kind: SourceKind
    location: str
    name: str


def resolve_source(model: str | os.PathLike[str] | None) -> ModelSource:
    """Tell what ``model`` names, without loading anything.

    A path that exists is a folder or a file. A name that can only be a path (it starts with
    ``.``, ``/`` or ``~``, has a backslash or more than one ``/``, or ends in a weights suffix)
    and does not exist is a :class:`~sdkit.errors.ModelNotFoundError`, and so is
    ``"models/typo"`` when a folder ``models`` is in the current one. Any other ``owner/name``
    is a hub id; whether the hub has it is found out when it loads.

    Raises:
        ModelNotFoundError: a path that does not exist, naming where it was looked for.

    Example:
        >>> resolve_source("stabilityai/sdxl-turbo").kind
        'hub'
    """
    if model is None or str(model) == DEFAULT_MODEL_ID:
        return ModelSource("default", str(DEFAULT_MODEL_DIR), DEFAULT_MODEL_ID)
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSource("folder", str(path), text)
    if path.is_file():
        return ModelSource("single_file", str(path), text)
    looks_like_path = (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or path.suffix.lower() in SINGLE_FILE_SUFFIXES
        or text.count("/") > 1
    )
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelNotFoundError(
            f"no model file or folder at {text!r}{_where(path)}",
            source=text,
            hint="check the path; a hub id has the form 'owner/name'.",
        )
    parent = Path(text).parent
    if parent != Path(".") and parent.is_dir():  # "models/typo" beside a models/ folder
        raise ModelNotFoundError(
            f"no such folder: {text!r}{_where(path)}: {parent} exists but holds no {path.name!r}",
            source=text,
            hint=f"check the name (`sdkit models {parent}` lists the models there). A hub id "
            f"'owner/name' is taken for a folder when a folder '{parent}' is in the current one.",
        )
    return ModelSource("hub", text, text)


def _where(path: Path) -> str:
    """Where a relative path was looked for (`` (looked for /abs/path)``), for error messages."""
    return "" if path.is_absolute() else f" (looked for {path.absolute()})"


def _no_such_folder(source: ModelSource) -> str:
    """The hint half that speaks to a caller who meant a local folder by a hub-shaped name."""
    return (
        f"If you meant a local folder: there is no {source.location!r} in {Path.cwd()}; check "
        "the path (a relative one starts from the current folder)."
    )


def is_offline(local_files_only: bool | None = None) -> bool:
    """Whether the hub may be contacted: an explicit flag wins, else ``HF_HUB_OFFLINE``."""
    if local_files_only is not None:
        return local_files_only
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face hub cache folder in use (``HF_HUB_CACHE`` / ``HF_HOME`` aware)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


@dataclass(frozen=True)
class ModelDefaults:
    """What a call uses when it does not say: the model's own steps and guidance.

    Most models take sdkit's general defaults (25 steps, CFG 7). A model folder can carry its
    own in ``sdkit.json``; the model sdkit ships does (CFG 3, where it follows prompts best).
    Distilled "Turbo" models (a name containing ``turbo``, e.g. ``stabilityai/sdxl-turbo``)
    are sampled without guidance in a few steps, as their model cards say: 4 steps, CFG 0.

    Attributes:
        steps: denoising steps.
        guidance_scale: classifier-free guidance scale.
        origin: where they come from: ``"sdkit"``, ``"turbo"`` or the ``sdkit.json`` path.
    """

    steps: int = 25
    guidance_scale: float = 7.0
    origin: str = "sdkit"


TURBO_DEFAULTS = ModelDefaults(steps=4, guidance_scale=0.0, origin="turbo")


def model_defaults(
    source: ModelSource,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelDefaults:
    """The defaults of the model at ``source``: its ``sdkit.json``, else by name, else sdkit's.

    Raises:
        ModelLoadError: ``sdkit.json`` exists but is not valid.

    Example:
        >>> model_defaults(resolve_source("stabilityai/sdxl-turbo"))
        ModelDefaults(steps=4, guidance_scale=0.0, origin='turbo')
    """
    path: Path | None = None
    if source.kind in ("folder", "default"):
        path = Path(source.location) / DEFAULTS_FILE
    elif source.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(
            source.location,
            DEFAULTS_FILE,
            cache_dir=str(hub_cache_dir(cache_dir)),
            revision=revision,
        )
        path = Path(cached) if isinstance(cached, str) else None
    if path is not None and path.is_file():
        return _read_defaults(path, source)
    if "turbo" in Path(source.location).name.lower():
        return TURBO_DEFAULTS
    return ModelDefaults()


def _read_defaults(path: Path, source: ModelSource) -> ModelDefaults:
    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{path} is not a valid sdkit defaults file: {why}",
            source=source.name,
            hint='write {"defaults": {"steps": 25, "guidance_scale": 7.0}} (both optional), '
            "or delete the file to use sdkit's defaults.",
        )

    try:
        data = read_json(path)
    except ValueError as exc:
        raise bad(str(exc)) from None
    given = data.get("defaults") if isinstance(data, dict) else None
    if not isinstance(given, dict):
        raise bad('no "defaults" object')
    extra = sorted(set(data) - {"defaults"})  # a misspelt key must not be silently ignored
    if extra:
        raise bad(f'unknown top-level key {extra[0]!r} (the only one is "defaults")')
    unknown = sorted(set(given) - {"steps", "guidance_scale"})
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}")
    steps = given.get("steps", ModelDefaults.steps)
    guidance = given.get("guidance_scale", ModelDefaults.guidance_scale)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise bad(f"steps={steps!r}, expected a whole number 1..1000")
    number = isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
    if not number or not 0.0 <= guidance <= 100.0:
        raise bad(f"guidance_scale={guidance!r}, expected a number 0..100")
    return ModelDefaults(steps=steps, guidance_scale=float(guidance), origin=str(path))


def load_pipeline(
    source: ModelSource,
    *,
    torch_dtype: torch.dtype,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
    revision: str | None = None,
    variant: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    family: str | None = None,
    config: str | os.PathLike[str] | None = None,
    prediction_type: str | None = None,
) -> tuple[Any, list[Path]]:
    """Load a diffusers pipeline from ``source``.

    Returns:
        The pipeline and the weight files it was read from (for :func:`weights_sha256`).

    Raises:
        ModelNotFoundError: nothing at that path, or a hub id missing from the cache offline.
        UnsafeCheckpointError: pickle weights without ``allow_pickle=True``.
        ModelLoadError: the weights exist but could not be read or recognised.
    """
    if source.kind == "single_file":
        from ._single_file import load_single_file

        path = Path(source.location)
        pipe = load_single_file(
            path,
            family=family,
            config=config,
            torch_dtype=torch_dtype,
            prediction_type=prediction_type,
            allow_pickle=allow_pickle,
        )
        return pipe, [path]
    if source.kind in ("folder", "default"):
        folder = Path(source.location)
        _check_folder(folder, source, allow_pickle=allow_pickle)
        pipe = _from_pretrained(
            str(folder), source, torch_dtype=torch_dtype, allow_pickle=allow_pickle, variant=variant
        )
        return pipe, _weight_files(folder, allow_pickle=allow_pickle)
    return _load_hub(
        source,
        torch_dtype=torch_dtype,
        allow_pickle=allow_pickle,
        offline=is_offline(local_files_only),
        revision=revision,
        variant=variant,
        cache_dir=cache_dir,
    )


def _check_folder(folder: Path, source: ModelSource, *, allow_pickle: bool) -> None:
    if not (folder / "model_index.json").is_file():
        if source.kind == "default":
            raise ModelNotFoundError(
                "the default model is not installed in this copy of sdkit",
                source=source.name,
                hint="reinstall sdkit, or pass a model: a hub id, a diffusers folder or a .safetensors file.",
            )
        raise ModelLoadError(
            f"{folder} is not a diffusers model folder (no model_index.json)",
            source=source.name,
            hint="for one checkpoint file use Generator.from_single_file(path).",
        )
    try:
        index = read_json(folder / "model_index.json")
    except ValueError as exc:
        raise ModelLoadError(
            f"{folder / 'model_index.json'} is not valid: {exc}",
            source=source.name,
            hint="get the model folder again; model_index.json names its components.",
        ) from None
    parts = (
        [folder / name for name in index if not name.startswith("_")]
        if isinstance(index, dict)
        else []
    )
    weights = {part: _weight_listing(part, depth=1) for part in parts if part.is_dir()}
    pickle_only = sorted(
        files[0] for files in weights.values() if files and all(p.suffix == ".bin" for p in files)
    )
    if pickle_only and not allow_pickle:
        shown = ", ".join(str(p.relative_to(folder)) for p in pickle_only[:3])
        more = f" and {len(pickle_only) - 3} more" if len(pickle_only) > 3 else ""
        raise UnsafeCheckpointError(
            f"{folder}: {shown}{more}: pickle weights with no .safetensors file in the same "
            "folder; unpickling can run code, so sdkit does not load them",
            source=source.name,
            hint="convert them to safetensors, or pass allow_pickle=True (--allow-pickle) if you "
            "trust the source. Pickle files beside safetensors are ignored, never unpickled.",
        )
    for files in weights.values():
        for path in files:
            if path.suffix == ".safetensors":
                read_safetensors_header(path)  # a hostile header is a ModelLoadError naming it


def _from_pretrained(
    location: str,
    source: ModelSource,
    *,
    torch_dtype: torch.dtype,
    allow_pickle: bool,
    variant: str | None,
    **kwargs: Any,
) -> Any:
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(
            location,
            dtype=torch_dtype,
            use_safetensors=None if allow_pickle else True,
            variant=variant,
            **kwargs,
        )
    except SdkitError:
        raise
    except Exception as exc:  # diffusers raises many types; all mean "this model did not load"
        # diffusers' words when use_safetensors=True finds only pickle weights
        if not allow_pickle and "necessary `safetensors` weights" in str(exc):
            raise UnsafeCheckpointError(
                f"{source.name} has no safetensors weights for every component",
                source=source.name,
                hint="pass allow_pickle=True if you trust the source (pickle weights can run code).",
            ) from exc
        raise ModelLoadError(
            f"could not load {source.name}: {type(exc).__name__}: {str(exc)[:500]}",
            source=source.name,
            hint="check that every component folder is complete (model_index.json names them).",
        ) from exc


def _load_hub(
    source: ModelSource,
    *,
    torch_dtype: torch.dtype,
    allow_pickle: bool,
    offline: bool,
    revision: str | None,
    variant: str | None,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[Any, list[Path]]:
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir(cache_dir)
    cached = try_to_load_from_cache(
        source.location, "model_index.json", cache_dir=str(cache), revision=revision
    )
    if offline and not isinstance(cached, str):
        raise ModelNotFoundError(
            f"model {source.location!r} is not in the local Hugging Face cache ({cache}) "
            "and downloads are off",
            source=source.name,
            hint=(
                f"download it where there is network (`hf download {source.location}`) and copy "
                "the cache here, set HF_HUB_CACHE to the cache that holds it, or pass a local "
                f"folder. {_no_such_folder(source)}"
            ),
        )
    if isinstance(cached, str):
        # the snapshot is on disk: refuse pickle-only weights before diffusers looks at them
        _check_folder(Path(cached).parent, source, allow_pickle=allow_pickle)
    try:
        pipe = _from_pretrained(
            source.location,
            source,
            torch_dtype=torch_dtype,
            allow_pickle=allow_pickle,
            variant=variant,
            revision=revision,
            cache_dir=str(cache),
            local_files_only=offline,
        )
    except ModelLoadError as exc:
        if isinstance(cached, str) or type(exc) is not ModelLoadError:
            raise
        if _repository_not_found(exc):
            raise ModelNotFoundError(
                f"no such folder or hub model: {source.location!r}",
                source=source.name,
                hint=f"{_no_such_folder(source)} A hub id is 'owner/name' as on huggingface.co; "
                "a private one needs `hf auth login`.",
            ) from exc
        raise ModelLoadError(exc.message, source=source.name, hint=_no_such_folder(source)) from exc
    try:
        folder = Path(
            snapshot_download(
                source.location, revision=revision, cache_dir=str(cache), local_files_only=True
            )
        )
    except (LocalEntryNotFoundError, OSError):
        return pipe, []
    return pipe, _weight_files(folder, allow_pickle=allow_pickle)


def _repository_not_found(exc: BaseException) -> bool:
    """Whether the hub answered that no such repository exists (not: it is gated, or no network)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, RepositoryNotFoundError) and not isinstance(cause, GatedRepoError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _weight_listing(folder: Path, depth: int | None = None) -> list[Path]:
    """The ``.safetensors`` and ``.bin`` files under ``folder`` (hidden folders skipped), all or
    ``depth`` levels down."""
    found = folder.rglob("*") if depth is None else folder.glob("/".join(["*"] * depth))
    return sorted(
        p
        for p in found
        if p.suffix in (".safetensors", ".bin")
        and p.is_file()
        and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def _weight_files(folder: Path, *, allow_pickle: bool) -> list[Path]:
    """The weight files a pipeline is read from: safetensors, and with ``allow_pickle`` the
    ``.bin`` files of components that have no safetensors (diffusers prefers safetensors)."""
    files = _weight_listing(folder)
    with_safetensors = {p.parent for p in files if p.suffix == ".safetensors"}
    return [
        p
        for p in files
        if p.suffix == ".safetensors" or (allow_pickle and p.parent not in with_safetensors)
    ]


# -- families and derived pipelines -----------------------------------------------------------


def pipeline_family(pipe: Any) -> Family:
    """``"sdxl"`` for pipelines with SDXL's second text encoder, else ``"sd"``."""
    return "sdxl" if hasattr(pipe, "text_encoder_2") else "sd"


def derived_pipeline(pipe: Any, mode: Literal["img2img", "inpaint"]) -> Any:
    """The img2img or inpaint pipeline of the same family, sharing ``pipe``'s components.

    Uses diffusers' ``from_pipe``, so no weights are loaded or copied.
    """
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
    try:
        return auto.from_pipe(pipe)
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"{type(pipe).__name__} has no {mode} counterpart: {exc}",
            source=type(pipe).__name__,
        ) from exc
