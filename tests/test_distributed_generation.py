"""Batch generation on Ray (sdkit.distributed): the files generate_many writes, made by a cluster.

One local Ray cluster per module (2 CPUs, 2 logical GPUs), one pool of two generation actors
running the shipped model on the CPU; tiny sizes and 1-2 steps keep it fast.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from PIL import Image

from provenance import verify
from provenance.credentials import init_development_credentials
from provenance.store import ManifestStore
from provenance.watermark import Payload
from sdkit import Generator
from sdkit import distributed as dist
from sdkit._ray_workers import LedgerRow, write_shard
from sdkit.batch import BatchPrompt
from sdkit.cli import cli
from sdkit.distributed import CredentialsRef, RayGenerationPool
from sdkit.errors import InvalidOptionError, OutputError

SMALL = {"width": 64, "height": 64, "steps": 2}
PROMPTS: list[str | BatchPrompt] = [
    "a red circle",
    BatchPrompt("a blue square", {"steps": 1}, num_images=1, seed=7),
    "a green star",
]


@pytest.fixture(scope="module")
def pool() -> Iterator[RayGenerationPool]:
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with RayGenerationPool(
            None, gpus=2, warmup={"steps": 1, "width": 64, "height": 64}, device="cpu"
        ) as made:
            yield made
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local() -> Generator:
    return Generator(device="cpu", progress=False, watermark=False)


def _pixels(path: Path) -> np.ndarray[Any, Any]:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_same_files_as_generate_many(
    pool: RayGenerationPool, local: Generator, tmp_path: Path
) -> None:
    assert [r["device"] for r in pool.ready] == ["cpu", "cpu"] and len(pool.generators) == 2
    kwargs: dict[str, Any] = {"num_images": 2, "seed": 40, "watermark": False, **SMALL}
    paths = pool.generate_many(PROMPTS, tmp_path / "ray", **kwargs)
    del kwargs["watermark"]
    expected = local.generate_many(PROMPTS, tmp_path / "local", **kwargs)
    # image n gets first + n; a prompt with its own seed keeps it (as generate_many names them)
    names = ["00000-40.png", "00001-41.png", "00002-7.png", "00003-43.png", "00004-44.png"]
    assert [p.name for p in paths] == [p.name for p in expected] == names
    for mine, theirs in zip(paths, expected, strict=True):
        assert np.array_equal(_pixels(mine), _pixels(theirs)), mine.name
        report, oracle = verify(mine), verify(theirs)
        assert report.c2pa_state == "valid" and not report.problems, report.problems
        assert report.recipe == oracle.recipe and report.recipe is not None
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [".sdkit-run", *names]


def test_killed_stamping_actor_loses_nothing(pool: RayGenerationPool, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store.db"
    prompts = [f"a shape number {k}" for k in range(4)]
    seen: dict[str, Any] = {}

    def killer() -> None:  # kill a stamp actor as soon as the first file is written
        while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
            time.sleep(0.02)
        seen["at_kill"] = sum(p.suffix == ".png" for p in out.iterdir())
        ray.kill(pool.stampers[0], no_restart=False)  # Ray restarts it and retries its tasks

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    paths = pool.generate_many(prompts, out, seed=100, store=store, width=256, height=256, steps=1)
    thread.join(5)
    assert 1 <= seen["at_kill"] < len(prompts)  # killed mid-run
    assert sorted(p.name for p in out.iterdir()) == sorted([".sdkit-run", *(p.name for p in paths)])
    assert [p.name for p in paths] == [f"{n:05d}-{100 + n}.png" for n in range(4)]
    payloads = set()
    with ManifestStore(store, create=False) as kept:
        assert len(kept) == len(paths)  # one manifest per file: none lost, none twice
        for path in paths:
            report = verify(path, store=kept)
            assert report.verdict == "verified" and report.watermark_matches_manifest, path
            assert report.watermark is not None
            mark = report.watermark["payload"]
            payload = Payload(mark["content_id"], mark["issuer_id"], mark["version"])
            payloads.add(payload)
            assert [s.title for s in kept.get(payload)] == [path.name]
    assert len(payloads) == len(paths)


def test_resume_skips_written_files(pool: RayGenerationPool, tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs: dict[str, Any] = {"seed": 5, "watermark": False, **SMALL}
    first = pool.generate_many(["a", "b", "c", "d"], out, **kwargs)
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in first[::2]}
    lost = {p: _pixels(p) for p in first[1::2]}
    for path in lost:
        path.unlink()
    with pytest.raises(OutputError, match="exist"):
        pool.generate_many(["a", "b", "c", "d"], out, **kwargs)
    # what a stamp actor killed between its ledger shard and its file leaves: a row that
    # matches no file, and a temporary file that was never linked to the final name
    name = first[1].name
    write_shard(out / ".sdkit-run", [LedgerRow(name, "0" * 64)])
    (out / f".{name}.0123456789ab.tmp").write_bytes(b"\x89PNG half")
    again = pool.generate_many(["a", "b", "c", "d"], out, resume=True, **kwargs)
    assert again == first
    for path, (inode, mtime, data) in kept.items():  # skipped: the very same file
        assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == (
            inode, mtime, data,
        )  # fmt: skip
    for path, pixels in lost.items():  # made again: the same pixels
        assert np.array_equal(_pixels(path), pixels)
    assert sorted(p.name for p in out.iterdir()) == [".sdkit-run", *(p.name for p in first)]
    # a file that is not the one the run signed is never taken for done
    first[0].write_bytes(first[0].read_bytes()[:100])
    with pytest.raises(OutputError, match="not a file this run signed"):
        pool.generate_many(["a", "b", "c", "d"], out, resume=True, **kwargs)


def test_credentials_reach_workers_by_path_only(
    pool: RayGenerationPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = init_development_credentials(tmp_path / "creds")
    pem = files.private_key.read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    body = b"".join(pem.splitlines()[1:-1])
    sent: list[bytes] = []
    for name in ("_call", "_spawn"):
        real = getattr(dist, name)

        def spy(method: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            sent.append(ray.cloudpickle.dumps((args, kwargs)))
            return _real(method, *args, **kwargs)

        monkeypatch.setattr(dist, name, spy)
    ref = CredentialsRef(str(files.certificate_chain), str(files.private_key))
    paths = pool.generate_many(
        ["a", "b"], tmp_path / "out", seed=1, credentials=ref, watermark=False, **SMALL
    )
    assert len(sent) >= 5  # the check, two denoise tasks, two stamp tasks
    assert any(str(files.private_key).encode() in blob for blob in sent)  # the path travels
    for blob in sent:  # the key, in any encoding, does not
        for secret in (pem, body, der, scalar, body[10:60]):
            assert secret not in blob
    anchors = files.ca_certificate
    for path in paths:  # and the workers signed with it
        assert verify(path, trust_anchors=anchors).trusted


def test_without_ray_the_engine_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InvalidOptionError, match="engine") as caught:
        RayGenerationPool()
    assert caught.value.hint is not None and 'pip install "sdkit[ray]"' in caught.value.hint


def test_a_bad_option_stops_the_run_before_any_work(
    pool: RayGenerationPool, tmp_path: Path
) -> None:
    with pytest.raises(InvalidOptionError, match="steps"):
        pool.generate_many(["a", BatchPrompt("b", {"steps": 0})], tmp_path / "o", seed=1)
    with pytest.raises(InvalidOptionError, match="clip_skip"):  # needs the model: on an actor
        pool.generate_many(["a"], tmp_path / "o", seed=1, clip_skip=40, **SMALL)
    assert not (tmp_path / "o").exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a cat", "--engine", "ray"], "--engine ray goes with --prompts FILE"),
        (["--prompts", "PROMPTS", "--address", "auto"], "--address and --resume go with"),
        (["--prompts", "PROMPTS", "--resume"], "--address and --resume go with"),
    ],
)
def test_cli_engine_flags_are_checked_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    args = [str(prompts) if a == "PROMPTS" else a for a in args]
    result = CliRunner().invoke(cli, ["generate", *args, "-o", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_without_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    result = CliRunner().invoke(
        cli, ["generate", "--prompts", str(prompts), "--engine", "ray", "-o", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert 'pip install "sdkit[ray]"' in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]
