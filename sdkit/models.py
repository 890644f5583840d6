"""Where weights come from: the embedded default, a hub id, a local folder, or a single file.

Rules:
    * A path that exists is loaded from disk; a folder must be in diffusers format
      (``model_index.json``), a file must be a single-file checkpoint.
    * Anything else that looks like ``owner/name`` is a Hugging Face hub id. Offline
      (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) it is read from the local cache only,
      and a missing model is a :class:`~sdkit.errors.ModelNotFoundError` naming the id and the
      cache folder.
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

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from provenance._fs import cache_dir, write_atomic

from ._json import read_json
from ._safetensors import read_safetensors_header
from .errors import ModelLoadError, ModelNotFoundError, SdkitError, UnsafeCheckpointError

__all__ = [
    "DEFAULTS_FILE",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_MODEL_ID",
    "LocalModel",
    "ModelDefaults",
    "ModelSource",
    "derived_pipeline",
    "hub_cache_dir",
    "is_offline",
    "list_local_models",
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
            f"no model file or folder at {text!r}",
            source=text,
            hint="check the path; a hub id has the form 'owner/name'.",
        )
    return ModelSource("hub", text, text)


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
                "the cache here, set HF_HUB_CACHE to the cache that holds it, or pass a local folder."
            ),
        )
    if isinstance(cached, str):
        # the snapshot is on disk: refuse pickle-only weights before diffusers looks at them
        _check_folder(Path(cached).parent, source, allow_pickle=allow_pickle)
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
    try:
        folder = Path(
            snapshot_download(
                source.location, revision=revision, cache_dir=str(cache), local_files_only=True
            )
        )
    except (LocalEntryNotFoundError, OSError):
        return pipe, []
    return pipe, _weight_files(folder, allow_pickle=allow_pickle)


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


# -- weights' identity ------------------------------------------------------------------------


def weights_sha256(files: Iterable[Path], *, root: Path | None = None) -> str:
    """SHA-256 that names a model's weights.

    One file: the file's SHA-256 (so A1111's short hash is its first 10 digits). Several files:
    the SHA-256 of the sorted lines ``"<relative path> <file sha256>"``. File hashes are cached
    by (path, size, mtime) in ``~/.cache/sdkit/hashes.json`` (``SDKIT_CACHE`` overrides).
    """
    paths = sorted(Path(f) for f in files)
    if not paths:
        return hashlib.sha256(b"").hexdigest()
    if len(paths) == 1:
        return _file_sha256(paths[0])
    base = root or Path(os.path.commonpath([str(p.parent) for p in paths]))
    lines = "".join(f"{p.relative_to(base).as_posix()} {_file_sha256(p)}\n" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()


def _cache_root() -> Path:
    # $XDG_CACHE_HOME has never moved this cache (unlike the config folders'): kept so an
    # upgrade finds its hashes.
    return cache_dir(xdg=False)


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = _cache_root() / "hashes.json"
    try:
        cache: dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, json.dumps(cache).encode(), overwrite=True, mode=0o600)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return cache[key]


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


# -- what can be loaded offline ---------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A model that can be loaded without network.

    Attributes:
        name: what to pass as ``model`` (hub id or path).
        kind: ``"default"``, ``"hub-cache"``, ``"folder"`` or ``"single_file"``.
        family: ``"sd"``, ``"sdxl"``, a single-file family name, or ``"unknown"``.
        size_bytes: bytes on disk.
        location: the folder or file.
    """

    name: str
    kind: str
    family: str
    size_bytes: int
    location: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "size_bytes": self.size_bytes,
            "location": self.location,
        }


def list_local_models(
    dirs: Iterable[str | os.PathLike[str]] = (),
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[LocalModel]:
    """List models loadable offline: the default, the hub cache, and ``dirs`` (two levels deep)."""
    found: list[LocalModel] = []
    if (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        found.append(_folder_entry(DEFAULT_MODEL_DIR, DEFAULT_MODEL_ID, "default"))
    found.extend(_hub_cache_models(hub_cache_dir(cache_dir)))
    for root in dirs:
        for path in _walk(Path(root), depth=2):
            if path.is_dir() and (path / "model_index.json").is_file():
                found.append(_folder_entry(path, str(path), "folder"))
            elif path.is_file() and path.suffix == ".safetensors":
                found.append(
                    LocalModel(
                        str(path), "single_file", _file_family(path), path.stat().st_size, str(path)
                    )
                )
    return found


def _walk(root: Path, depth: int) -> Iterator[Path]:
    if not root.exists():
        return
    yield root
    if depth == 0 or not root.is_dir() or (root / "model_index.json").is_file():
        return
    for child in sorted(root.iterdir()):
        if not child.name.startswith("."):
            yield from _walk(child, depth - 1)


def _folder_entry(folder: Path, name: str, kind: str) -> LocalModel:
    try:
        index = read_json(folder / "model_index.json")
        family = "sdxl" if isinstance(index, dict) and "text_encoder_2" in index else "sd"
    except ValueError:
        family = "unknown"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return LocalModel(name, kind, family, size, str(folder))


def _file_family(path: Path) -> str:
    try:
        from ._single_file import detect_family, read_checkpoint_header

        return detect_family(read_checkpoint_header(path))
    except Exception:  # any unreadable file is listed as unknown, not fatal
        return "unknown"


def _hub_cache_models(cache: Path) -> list[LocalModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    found: list[LocalModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            names = {f.file_name for f in revision.files}
            if "model_index.json" in names:
                entry = _folder_entry(Path(revision.snapshot_path), repo.repo_id, "hub-cache")
                found.append(
                    LocalModel(
                        repo.repo_id, "hub-cache", entry.family, repo.size_on_disk, entry.location
                    )
                )
                break
    return found
