"""Batch generation on Ray: the files :func:`sdkit.batch.generate_many` writes, made by a cluster.

``pip install "sdkit[ray]"``. The engine changes where the work runs, never the result: the
same prompts, seeds and options give the same file names, the same pixels and the same kind of
signed files as :func:`~sdkit.batch.generate_many`.

How the work is laid out (one :class:`RayGenerationPool`):

- one generation actor per device (``num_gpus=1``; Ray gives each its own GPU) loads the
  Generator once, warm-up included, and denoises one prompt's batch per task, exactly the
  batches ``generate_many`` makes (a batch is never split: on some back ends the batch size
  changes the last bits of the floats). Image ``n`` of the run gets seed ``first + n`` whoever
  makes it.
- a small pool of CPU actors (``num_cpus=0.25`` each, so that a 2-CPU cluster never waits for
  a CPU that the actors all hold, cf. ray#44687) watermarks, encodes, signs and writes each
  batch, with credentials they load themselves from a :class:`CredentialsRef` (files or a KMS
  key id; key bytes never travel in a task).
- every file is written atomically under its deterministic name, after its row in the run's
  ledger (Parquet shards in ``<output_dir>/.sdkit-run/``): an actor that dies mid-batch is
  restarted and its task retried, and the files it had written are kept, not written twice.
- at the end the driver checks every file against the ledger (present, and its SHA-256 the one
  signed) and loads the manifests into the store: one writer, no SQLite lock shared across
  machines. ``resume=True`` skips the files a previous run wrote, after the same check.

Example (starts a local cluster; docs/scale-out.md has a runnable one)::

    generate_many_ray(None, ["a red circle"] * 8, "out", seed=1, steps=2)
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Unpack

from provenance.store import ManifestStore, default_store_path

from ._ray_workers import (
    CarriedError,
    CredentialsRef,
    GenerationWorker,
    StampSetup,
    StampWorker,
    ledger_keys,
    ledger_rows,
)
from .batch import BatchPrompt, _jobs, _writable_folder, output_paths
from .errors import InvalidOptionError, OutputError
from .images import FORMATS
from .options import BatchOptions, GenerationOptions, check_int, first_seed

__all__ = [
    "CredentialsRef",
    "RayGenerationPool",
    "default_credentials_ref",
    "generate_many_ray",
    "require_ray",
]

#: The folder (inside the output folder) that holds the run's ledger shards.
LEDGER_DIR = ".sdkit-run"
#: CPUs each generation actor holds on the scheduler (its device does the work).
GENERATOR_CPUS = 0.5
#: CPUs each stamp actor holds: small, so that they always fit beside the generators.
STAMPER_CPUS = 0.25
#: Restarts of a dead actor, and retries of the tasks it held (never of a task that raised).
RESTARTS = 3


def require_ray() -> ModuleType:
    """Import Ray, or say how to install it.

    Raises:
        InvalidOptionError: Ray is not installed (the ``sdkit[ray]`` extra).
    """
    try:
        import ray
    except ImportError:
        raise InvalidOptionError(
            "engine",
            "ray",
            "an installed engine (local is built in)",
            hint='pip install "sdkit[ray]" (Ray Data), or use --engine local.',
        ) from None
    module: ModuleType = ray
    return module


@dataclass(frozen=True)
class _Plan:
    """What a run will make: one entry per prompt batch, and every file's path."""

    jobs: list[BatchPrompt]
    options: list[dict[str, Any]]  # each batch's checked call options (seed, num_images…)
    paths: list[Path]
    starts: list[int]  # index of each batch's first image in the run


class RayGenerationPool:
    """Generation actors on a Ray cluster, loaded once, for any number of runs.

    Args:
        model: as for :class:`sdkit.Generator` (hub id, folder, file; ``None``: the shipped
            model); it must be readable by every node.
        address: an existing cluster (``"ray://host:10001"``, ``"auto"``); ``None``: a new
            local one. A process already connected (``ray.init`` called) keeps its cluster.
        gpus: generation actors, one GPU each; ``None``: one per GPU of the cluster, or one
            on CPUs when the cluster has none.
        stampers: CPU actors that watermark, sign and write.
        warmup: options of each actor's warm-up batch (``width``, ``height``, ``steps``…,
            as for :meth:`sdkit.Generator.warmup`); ``None``: no warm-up.
        **load_options: the Generator's other keyword arguments (``device``, ``dtype``,
            ``optimize``, ``memory``, ``local_files_only``…), on every actor.

    Raises:
        InvalidOptionError: Ray is missing, or ``gpus`` / ``stampers`` out of range.
        ModelLoadError: an actor could not load the model.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        address: str | None = None,
        gpus: int | None = None,
        stampers: int = 2,
        warmup: Mapping[str, Any] | None = None,
        **load_options: Any,
    ) -> None:
        ray = require_ray()
        check_int("stampers", stampers, 1, 256)
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        available = int(ray.cluster_resources().get("GPU", 0))
        if gpus is not None:
            check_int("gpus", gpus, 1, max(available, 1))
        count = gpus or max(available, 1)
        per_actor = {"num_gpus": 1} if available else {}
        model_name = None if model is None else os.fspath(model)
        stamp_class = ray.remote(num_cpus=STAMPER_CPUS, **_restart())(StampWorker)
        self.stampers = [_spawn(stamp_class) for _ in range(stampers)]
        self.generators = [
            _spawn(
                ray.remote(**per_actor, num_cpus=GENERATOR_CPUS, **_restart())(GenerationWorker),
                model_name,
                dict(load_options),
                None if warmup is None else dict(warmup),
            )
            for _ in range(count)
        ]
        self.ready = _get(ray, [_call(g.ready) for g in self.generators])
        _get(ray, [_call(s.ready) for s in self.stampers])

    def close(self) -> None:
        """End the actors (and the local cluster, if this pool started it). Idempotent."""
        for actor in [*self.generators, *self.stampers]:
            self._ray.kill(actor)
        self.generators, self.stampers = [], []
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False

    def __enter__(self) -> RayGenerationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate_many(
        self,
        prompts: str | Iterable[str | BatchPrompt],
        output_dir: str | os.PathLike[str],
        *,
        num_images: int = 1,
        seed: int | None = None,
        fmt: str = "png",
        quality: int = 95,
        overwrite: bool = False,
        resume: bool = False,
        credentials: CredentialsRef | None = None,
        store: ManifestStore | str | os.PathLike[str] | None = None,
        watermark: bool = True,
        training_mining: Mapping[str, str] | None = None,
        **options: Unpack[BatchOptions],
    ) -> list[Path]:
        """Make the files of :func:`sdkit.batch.generate_many` on the pool's actors.

        Args:
            prompts, output_dir, num_images, seed, fmt, quality, overwrite, **options: as for
                :func:`~sdkit.batch.generate_many` (same names, seeds and pixels).
            resume: skip the files a run with these arguments wrote already, each checked
                against the run's ledger first (complete, and the bytes that were signed).
            credentials: where the workers load the signing credentials; ``None``:
                ``SDKIT_SIGNING_CERT`` / ``SDKIT_SIGNING_KEY``, else your development
                credentials, by path.
            store: the manifest store (or its path; default ``$SDKIT_STORE``), loaded by the
                driver at the end.
            watermark, training_mining: as for :class:`sdkit.Generator`.

        Returns:
            The written paths, in order (with ``resume``, the skipped ones too).

        Raises:
            InvalidOptionError: a bad option of any prompt (before any work).
            OutputError: a name exists (without ``overwrite`` or ``resume``), a file to resume
                is not one this run signed, the folder is unusable (all before any work), or a
                file is missing at the end.
            SigningError: the credentials are unusable (before any work).
        """
        ray = self._ray
        check_int("quality", quality, 1, 100)
        if "." + fmt.lower().lstrip(".") not in FORMATS:
            raise InvalidOptionError("fmt", fmt, "png, jpeg or webp")
        fmt = FORMATS["." + fmt.lower().lstrip(".")]
        # 1. Plan and check every batch without the model, then on one actor with it.
        plan = _plan(prompts, output_dir, num_images, seed, fmt, options)
        _get(ray, [_call(self.generators[0].check, [(j.text, o) for j, o in _pairs(plan)])])
        ref = credentials or default_credentials_ref()
        ref.load().check()  # on the driver: a bad key stops the run before any work
        folder = Path(output_dir)
        ledger = folder / LEDGER_DIR
        done = _resumable(plan.paths, ledger, overwrite=overwrite, resume=resume)
        _writable_folder(folder)
        ledger.mkdir(exist_ok=True)
        # 2. Denoise on the generators, stamp on the CPU actors (this run's setup with each task).
        setup = StampSetup(
            ref, str(ledger), watermark, tuple(sorted((training_mining or {}).items()))
        )
        _run(ray, plan, done, self.generators, self.stampers, setup, fmt, quality, overwrite)
        # 3. Every file present and the one signed; then the manifests into the store.
        files = _check_files(plan.paths, ledger)
        _load_store(store, ledger, files)
        return plan.paths


def generate_many_ray(
    model: str | os.PathLike[str] | None,
    prompts: str | Iterable[str | BatchPrompt],
    output_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    gpus: int | None = None,
    stampers: int = 2,
    load_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> list[Path]:
    """One run on a new :class:`RayGenerationPool`: load, warm up, generate, end the actors.

    ``kwargs`` are those of :meth:`RayGenerationPool.generate_many` (themselves
    :func:`~sdkit.batch.generate_many`'s, plus ``resume``, ``credentials``, ``store``,
    ``watermark``, ``training_mining``); ``load_options`` the Generator's.
    """
    with RayGenerationPool(
        model, address=address, gpus=gpus, stampers=stampers, **dict(load_options or {})
    ) as pool:
        return pool.generate_many(prompts, output_dir, **kwargs)


def default_credentials_ref() -> CredentialsRef:
    """``SDKIT_SIGNING_CERT`` / ``SDKIT_SIGNING_KEY`` by path, else the development files
    (created now if missing): what :func:`provenance.credentials.default_credentials` loads."""
    from provenance.credentials import default_credentials, default_credentials_dir
    from provenance.dev_credentials import DevelopmentCredentials

    cert, key = os.environ.get("SDKIT_SIGNING_CERT"), os.environ.get("SDKIT_SIGNING_KEY")
    tsa = os.environ.get("SDKIT_TIMESTAMP_URL") or None
    if cert and key:
        password = "SDKIT_SIGNING_KEY_PASSWORD"
        return CredentialsRef(
            os.path.abspath(cert), os.path.abspath(key),
            password if os.environ.get(password) else None, timestamp_url=tsa,
        )  # fmt: skip
    default_credentials()  # creates the development files once (or names the problem)
    files = DevelopmentCredentials.at(default_credentials_dir())
    return CredentialsRef(
        str(files.certificate_chain.resolve()),
        str(files.private_key.resolve()),
        timestamp_url=tsa,
    )


# -- the driver's steps -------------------------------------------------------------------------


def _plan(
    prompts: str | Iterable[str | BatchPrompt],
    output_dir: str | os.PathLike[str],
    num_images: int,
    seed: int | None,
    fmt: str,
    options: Mapping[str, Any],
) -> _Plan:
    """The batches and names of :func:`sdkit.batch.generate_many`, each option checked alone."""
    jobs = _jobs(prompts, num_images)
    counts = [num_images if j.num_images is None else j.num_images for j in jobs]
    first = first_seed(seed, sum(counts))
    paths = output_paths(jobs, output_dir, num_images=num_images, seed=first, fmt=fmt)
    starts = [0, *itertools.accumulate(counts)][:-1]
    batches = []
    for job, n, base in zip(jobs, counts, starts, strict=True):
        job_seed = first + base if job.seed is None else job.seed
        merged = {**options, **job.options, "num_images": n, "seed": job_seed}
        GenerationOptions.from_kwargs(merged).check_alone()
        batches.append(merged)
    return _Plan(jobs, batches, paths, starts)


def _pairs(plan: _Plan) -> Iterable[tuple[BatchPrompt, dict[str, Any]]]:
    return zip(plan.jobs, plan.options, strict=True)


def _resumable(paths: list[Path], ledger: Path, *, overwrite: bool, resume: bool) -> set[Path]:
    """The files a previous run wrote completely (``resume``); refuse any other existing name.

    Raises:
        OutputError: a name exists without ``overwrite`` or ``resume``, or with ``resume`` a
            file is not the one the ledger says was signed (half-written, or another file).
    """
    taken = [p for p in paths if p.exists() or p.is_symlink()]
    if overwrite or not taken:
        return set()
    if not resume:
        raise OutputError(
            f"{len(taken)} of the {len(paths)} files exist, e.g. {taken[0]}",
            path=taken[0],
            hint="choose another folder, pass resume=True (--resume) or overwrite=True.",
        )
    keys = ledger_keys(ledger)
    for path in taken:
        if not path.is_file() or (path.name, _sha256(path)) not in keys:
            raise OutputError(
                f"{path} is not a file this run signed (not in {ledger})",
                path=path,
                hint="move it away, or pass overwrite=True to make it again.",
            )
    return set(taken)


def _run(
    ray: ModuleType,
    plan: _Plan,
    done: set[Path],
    generators: list[Any],
    stampers: list[Any],
    setup: StampSetup,
    fmt: str,
    quality: int,
    overwrite: bool,
) -> None:
    """Denoise batch after batch on the generators (two in flight each) and hand each batch,
    as an object reference, to the least busy stamp actor."""
    todo = [
        (k, [(i, str(plan.paths[base + i])) for i in range(o["num_images"])])
        for k, (base, o) in enumerate(zip(plan.starts, plan.options, strict=True))
    ]
    todo = [(k, [(i, p) for i, p in items if Path(p) not in done]) for k, items in todo]
    queue = [(k, items) for k, items in todo if items]
    queue.reverse()
    denoising: dict[Any, tuple[int, list[tuple[int, str]], int]] = {}
    stamping: dict[Any, int] = {}
    busy = [0] * len(generators)
    load = [0] * len(stampers)
    limit = 2 * len(stampers) + len(generators)  # batches waiting for a stamp actor, at most
    while queue or denoising or stamping:
        for g, actor in enumerate(generators):
            while queue and busy[g] < 2 and len(stamping) < limit:
                k, items = queue.pop()
                job = plan.jobs[k]
                denoising[_call(actor.denoise, job.text, plan.options[k])] = (k, items, g)
                busy[g] += 1
        ready, _ = ray.wait([*denoising, *stamping], num_returns=1)
        for ref in ready:
            if ref in denoising:
                _, items, g = denoising.pop(ref)
                busy[g] -= 1
                s = load.index(min(load))
                task = _call(
                    stampers[s].stamp, setup, ref, items,
                    fmt=fmt, quality=quality, overwrite=overwrite,
                )  # fmt: skip
                stamping[task] = s
                load[s] += 1
            else:
                load[stamping.pop(ref)] -= 1
                _get(ray, [ref])  # a failed batch stops the run with its own error


def _check_files(paths: list[Path], ledger: Path) -> set[tuple[str, str]]:
    """Each file's (name, SHA-256), checked against the ledger; half-written leftovers removed.

    Raises:
        OutputError: a file is missing, or is not one the run signed.
    """
    # temporary files of writers killed mid-write (.NAME.RANDOM.tmp; final names never touched)
    names = {p.name for p in paths}
    for folder in {p.parent for p in paths}:
        for leftover in folder.glob(".*.tmp"):
            if leftover.name[1:].rsplit(".", 2)[0] in names:
                leftover.unlink(missing_ok=True)
    keys = ledger_keys(ledger)
    found: set[tuple[str, str]] = set()
    for path in paths:
        key = (path.name, _sha256(path)) if path.is_file() else None
        if key is None or key not in keys:
            raise OutputError(
                f"{path} is missing or not the file the run signed",
                path=path,
                hint="run again with resume=True (--resume): only missing files are made.",
            )
        found.add(key)
    return found


def _load_store(
    store: ManifestStore | str | os.PathLike[str] | None,
    ledger: Path,
    files: set[tuple[str, str]],
) -> None:
    """Put the manifest of every watermarked file of ``files`` into the store (``None``:
    ``$SDKIT_STORE``), reading the ledger one shard at a time."""
    target = store if store is not None else default_store_path()
    if target is None:
        return
    opened = ManifestStore(target) if not isinstance(target, ManifestStore) else target
    try:
        for row in ledger_rows(ledger):
            key = (row.name, row.sha256)
            if key in files and row.payload is not None and row.manifest is not None:
                files.discard(key)
                opened.put(
                    row.payload, row.manifest, fingerprint=row.fingerprint or "", title=row.name
                )
    finally:
        if opened is not store:
            opened.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- every object that reaches Ray goes through these two (tests read their arguments) ---------


def _spawn(actor_class: Any, *args: Any, **kwargs: Any) -> Any:
    """Start an actor; its arguments are pickled into Ray, so they never hold key bytes."""
    return actor_class.remote(*args, **kwargs)


def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
    """Submit an actor task; its arguments are pickled into Ray, so they never hold key bytes."""
    return method.remote(*args, **kwargs)


def _restart() -> dict[str, int]:
    return {"max_restarts": RESTARTS, "max_task_retries": RESTARTS}


def _get(ray: ModuleType, refs: list[Any]) -> list[Any]:
    """``ray.get``, with sdkit's and provenance's own errors raised as themselves."""
    try:
        return list(ray.get(refs))
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CarriedError):
            raise cause.restore() from None
        raise
