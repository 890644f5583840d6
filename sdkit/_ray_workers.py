"""What runs inside the Ray workers of :mod:`sdkit.distributed`, and the run's ledger.

Two kinds of worker, each a plain class that :mod:`sdkit.distributed` turns into a Ray actor
(so that importing this module never imports Ray):

- :class:`GenerationWorker`, one per device: loads the :class:`~sdkit.Generator` once (warm-up
  included) and turns one prompt's batch into decoded pictures and their Recipes: steps 1-6 of
  ``Generator.__call__``, exactly as :func:`sdkit.batch.generate_many` runs them.
- :class:`StampWorker`, a small pool on CPUs: watermarks, encodes, signs and writes (step 7 and
  ``GeneratedImage.save``), with credentials it loads itself from a
  :class:`CredentialsRef`: paths or a KMS key id, never key bytes.

The ledger is a folder of Parquet shards, one per stamp task: for every file signed, its name,
the SHA-256 of its bytes and, when it carries a watermark, the manifest the store keeps under
it. A shard is written (atomically) *before* the files it describes, so every file on disk has
its row; a task that dies between the two leaves rows that match no file, which the driver
ignores (it keeps the row whose SHA-256 is the file's). Resume and the final check read it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from provenance import _fs
from provenance.credentials import Credentials
from provenance.manifest import Ingredient
from provenance.stamp import Stamper
from provenance.store import ManifestStore
from provenance.watermark import Payload

from .errors import OutputError
from .images import FORMATS, GeneratedImage, write_atomic
from .recipe import Recipe

__all__ = [
    "LEDGER_COLUMNS",
    "CarriedError",
    "CredentialsRef",
    "GenerationWorker",
    "LedgerRow",
    "Pictures",
    "StampSetup",
    "StampWorker",
    "ledger_keys",
    "ledger_rows",
    "write_shard",
]

#: The columns of a ledger shard, in order.
LEDGER_COLUMNS = (
    "name",
    "sha256",
    "issuer_id",
    "content_id",
    "version",
    "manifest",
    "fingerprint",
)


class CarriedError(Exception):
    """An sdkit or provenance error on its way back from a worker.

    Their constructors take keyword arguments, which pickle (and so Ray) cannot rebuild; this
    carries the class and the attributes instead, and :meth:`restore` makes the error again on
    the driver, so that callers catch the same typed errors as without Ray.
    """

    def __init__(self, cls: type[Exception], args: tuple[Any, ...], state: dict[str, Any]):
        super().__init__(cls, args, state)
        self.cls, self.error_args, self.state = cls, args, state

    def restore(self) -> Exception:
        """The original error (same class, message, hint and context)."""
        error = self.cls.__new__(self.cls)
        Exception.__init__(error, *self.error_args)
        error.__dict__.update(self.state)
        return error


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _carry(method: _Method) -> _Method:
    """Raise a worker's sdkit and provenance errors as :class:`CarriedError`."""
    from provenance.errors import ProvenanceError

    from .errors import SdkitError

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (SdkitError, ProvenanceError) as exc:
            raise CarriedError(type(exc), exc.args, dict(exc.__dict__)) from None

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class CredentialsRef:
    """Where a worker finds the signing credentials: files or a KMS key, never the key itself.

    Workers load the credentials from this reference when they start, so the key's bytes never
    travel in a task's arguments or through Ray's object store. On a cluster, the paths must
    be readable on every node (a shared folder, or the same files put there by your
    deployment), and the password variable set in the workers' environment.

    Attributes:
        certificate_chain: path of the PEM certificate chain, end-entity first.
        private_key: path of the PEM private key (``None`` with a KMS key).
        password_env: name of the environment variable holding the key's password.
        kms_signer: ``"module:function"``; ``function(kms_key_id)`` returns ``sign(data) ->
            signature`` (:meth:`provenance.credentials.Credentials.from_callback`).
        kms_key_id: the key's id in your KMS or HSM.
        timestamp_url: an RFC 3161 time-stamp authority.

    Example:
        >>> CredentialsRef("chain.pem", kms_signer="mykms:signer", kms_key_id="key-1").kms_key_id
        'key-1'
    """

    certificate_chain: str
    private_key: str | None = None
    password_env: str | None = None
    kms_signer: str | None = None
    kms_key_id: str | None = None
    timestamp_url: str | None = None

    def __post_init__(self) -> None:
        from provenance.errors import SigningError

        kms = self.kms_signer is not None or self.kms_key_id is not None
        if (self.private_key is None) == (not kms) or (
            kms and (self.kms_signer is None or self.kms_key_id is None)
        ):
            raise SigningError(
                "a CredentialsRef names a private key file or a KMS key (signer and id)",
                hint="give private_key=PATH, or kms_signer='module:function' and kms_key_id.",
            )
        if self.kms_signer is not None and self.kms_signer.count(":") != 1:
            raise SigningError(
                f"kms_signer {self.kms_signer!r} is not 'module:function'",
                hint="name the function that returns sign(data) for a key id.",
            )

    def load(self) -> Credentials:
        """The credentials, read where this runs (a worker, or the driver to check them).

        Raises:
            SigningError: a file is missing or unusable, or the KMS signer cannot be imported.
        """
        from provenance.errors import SigningError

        if self.private_key is not None:
            password = os.environ.get(self.password_env) if self.password_env else None
            return Credentials.from_files(
                self.certificate_chain, self.private_key, None, self.timestamp_url,
                password=password,
            )  # fmt: skip
        assert self.kms_signer is not None and self.kms_key_id is not None
        module, name = self.kms_signer.split(":")
        try:
            factory: Callable[[str], Callable[[bytes], bytes]] = getattr(
                importlib.import_module(module), name
            )
        except (ImportError, AttributeError) as exc:
            raise SigningError(
                f"cannot import the KMS signer {self.kms_signer}: {exc}",
                hint="install the module on every worker, or fix the name.",
            ) from None
        return Credentials.from_callback(
            factory(self.kms_key_id), self.certificate_chain, None, self.timestamp_url
        )


@dataclass(frozen=True)
class Pictures:
    """One prompt's batch, denoised and decoded, on its way from the GPU to a stamp worker."""

    pictures: list[Image.Image]
    recipes: list[Recipe]
    parent: Ingredient | None


class GenerationWorker:
    """One per device: the Generator, loaded once and warmed up, that denoises prompt batches.

    Args:
        model: as for :class:`sdkit.Generator` (``None``: the shipped model).
        load_options: the Generator's keyword arguments (``device``, ``dtype``, ``optimize``…).
        warmup: options of the warm-up batch (:meth:`sdkit.Generator.warmup`); ``None``: none.
    """

    @_carry
    def __init__(
        self,
        model: str | None,
        load_options: Mapping[str, Any],
        warmup: Mapping[str, Any] | None,
    ) -> None:
        from .generator import Generator

        # this worker never signs: a Stamper without credentials or store (both load lazily)
        stamper = Stamper(watermark=False)
        self.generator = Generator(model, progress=False, stamper=stamper, **load_options)
        self.warmup_s = self.generator.warmup(**warmup) if warmup is not None else 0.0

    def ready(self) -> dict[str, Any]:
        """The device and the warm-up time (the driver waits on this before planning)."""
        return {"device": str(self.generator.device), "warmup_s": self.warmup_s}

    @_carry
    def check(self, jobs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Check every job against the model (``Generator._check``), before any work.

        Raises:
            InvalidOptionError: the first bad job's option.
        """
        from .options import GenerationOptions

        for text, options in jobs:
            self.generator._check(text, GenerationOptions.from_kwargs(options))

    @_carry
    def denoise(self, text: str, options: Mapping[str, Any]) -> Pictures:
        """Steps 1-6 of a call: the batch's decoded pictures and Recipes (no watermark yet)."""
        from .options import GenerationOptions

        done = self.generator._denoise(text, GenerationOptions.from_kwargs(options))
        return Pictures(done.pictures, done.recipes, done.parent)


@dataclass(frozen=True)
class LedgerRow:
    """One file a stamp task signed: its name, its bytes' SHA-256, its manifest for the store."""

    name: str
    sha256: str
    payload: Payload | None = None
    manifest: bytes | None = field(default=None, repr=False)
    fingerprint: str | None = None


class _Rows(ManifestStore):
    """Stands in for the store inside a stamp worker: manifests go to the ledger, not SQLite
    (many processes writing one SQLite file would queue on its lock; the driver loads them)."""

    def __init__(self) -> None:  # no database: nothing to open
        self.taken: list[tuple[Payload, bytes, str]] = []

    def put(
        self, payload: Payload, manifest: bytes, *, fingerprint: str, title: str | None = None
    ) -> None:
        self.taken.append((payload, manifest, fingerprint))

    def close(self) -> None:
        self.taken.clear()


@dataclass(frozen=True)
class StampSetup:
    """How a run's files are stamped; sent with each task, so a restarted worker needs nothing
    else (it loads the credentials again from the reference).

    Attributes:
        credentials: where to load the signing credentials from.
        ledger: the folder of the run's ledger shards.
        watermark: embed the invisible watermark.
        training_mining: CAWG training-and-mining uses to state, as (use, value) pairs.
        thumbnail: long edge of a C2PA thumbnail (0: none).
    """

    credentials: CredentialsRef
    ledger: str
    watermark: bool = True
    training_mining: tuple[tuple[str, str], ...] = ()
    thumbnail: int = 0


class StampWorker:
    """A CPU worker that watermarks, encodes, signs and writes files, and their ledger rows.

    It keeps the Stamper of the last :class:`StampSetup` it was given (credentials loaded once
    per run, not per task).
    """

    def __init__(self) -> None:
        self.rows = _Rows()
        self.setup: StampSetup | None = None
        self.stamper = Stamper(watermark=False)

    def ready(self) -> bool:
        """True once the worker has started (the pool waits on it)."""
        return True

    def _stamper_for(self, setup: StampSetup) -> Stamper:
        if setup != self.setup:
            self.stamper = Stamper(
                setup.credentials.load(),
                watermark=setup.watermark,
                training_mining=dict(setup.training_mining) or None,
                thumbnail=setup.thumbnail,
            )
            self.stamper.store = self.rows
            self.setup = setup
        return self.stamper

    @_carry
    def stamp(
        self,
        setup: StampSetup,
        batch: Pictures,
        items: Sequence[tuple[int, str]],
        *,
        fmt: str,
        quality: int,
        overwrite: bool,
    ) -> list[str]:
        """Sign the batch's pictures ``(index in batch, path)``; write the ledger, then the files.

        A path that exists already (written by an earlier try of this task) is skipped unless
        ``overwrite``. Returns the names written.
        """
        chosen = FORMATS["." + fmt]
        stamper = self._stamper_for(setup)
        signed: list[tuple[Path, bytes]] = []
        rows: list[LedgerRow] = []
        for index, name in items:
            path = Path(name)
            if not overwrite and path.exists():
                continue
            picture = batch.pictures[index].convert("RGB")
            marked, record = stamper.watermark(picture)
            self.rows.taken.clear()
            image = GeneratedImage(
                marked, batch.recipes[index], index, record, stamper, batch.parent
            )
            data = image.to_bytes(chosen, quality=quality, title=path.name)
            digest = hashlib.sha256(data).hexdigest()
            if self.rows.taken:  # watermarked: the manifest the store keeps under its payload
                payload, manifest, print_ = self.rows.taken[0]
                rows.append(LedgerRow(path.name, digest, payload, manifest, print_))
            else:
                rows.append(LedgerRow(path.name, digest))
            signed.append((path, data))
        if not signed:
            return []
        write_shard(Path(setup.ledger), rows)
        written = []
        for path, data in signed:
            try:
                write_atomic(path, data, overwrite=overwrite)
            except OutputError:
                if overwrite or not path.exists():
                    raise
                continue  # another try of this task wrote it first: its row is in the ledger
            written.append(path.name)
        return written


def write_shard(folder: Path, rows: Sequence[LedgerRow]) -> Path:
    """Write ``rows`` as one new Parquet shard in ``folder`` (atomically, a name of its own)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "name": [r.name for r in rows],
            "sha256": [r.sha256 for r in rows],
            "issuer_id": [r.payload.issuer_id if r.payload else None for r in rows],
            "content_id": [r.payload.content_id if r.payload else None for r in rows],
            "version": [r.payload.version if r.payload else None for r in rows],
            "manifest": pa.array([r.manifest for r in rows], type=pa.binary()),
            "fingerprint": pa.array([r.fingerprint for r in rows], type=pa.string()),
        }
    )
    path = folder / f"{rows[0].name}-{secrets.token_hex(6)}.parquet"
    with _fs.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def ledger_keys(folder: Path) -> set[tuple[str, str]]:
    """(file name, SHA-256 of its bytes) of every row of the ledger's shards (no manifests read).

    Raises:
        OutputError: a shard cannot be read or is not a ledger shard.
    """
    keys: set[tuple[str, str]] = set()
    for table in _shards(folder, ["name", "sha256"]):
        names, digests = table.column("name").to_pylist(), table.column("sha256").to_pylist()
        keys.update(zip(names, digests, strict=True))
    return keys


def ledger_rows(folder: Path) -> Iterator[LedgerRow]:
    """Every row of the ledger, manifests included, one shard in memory at a time.

    Raises:
        OutputError: a shard cannot be read or is not a ledger shard.
    """
    for table in _shards(folder, list(LEDGER_COLUMNS)):
        for r in table.to_pylist():
            payload = None
            if r["content_id"] is not None:
                payload = Payload(r["content_id"], r["issuer_id"], r["version"])
            yield LedgerRow(r["name"], r["sha256"], payload, r["manifest"], r["fingerprint"])


def _shards(folder: Path, columns: list[str]) -> Iterator[Any]:
    import pyarrow.parquet as pq

    if not folder.is_dir():
        return
    for shard in sorted(folder.glob("[!.]*.parquet")):
        try:
            if tuple(pq.read_schema(shard).names) != LEDGER_COLUMNS:
                raise OutputError(
                    f"{shard} is not an sdkit ledger shard", path=shard, hint="remove it."
                )
            table = pq.read_table(shard, columns=columns)
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"cannot read the ledger shard {shard}: {exc}",
                path=shard,
                hint="remove the run's ledger folder and start the run again (no resume).",
            ) from None
        yield table
