"""Hostile targets and dataset rows (issue 18): one target that fails is one ``unknown``
decision with the reason, never the loss of the batch; a dataset row never makes sdkit read a
file outside the files root, a FIFO or a device; a registry of another schema is an error.

The "poison" is a parser that raises on a marker (``POISON-PILL``) in a page or an image, as
the real parsers did on hostile input (LookupError on ``charset=bogus``, zlib.error on a
garbled iTXt chunk; RecursionError, IndexError, AttributeError elsewhere). It is
installed by monkeypatching in this process, and by a ``sitecustomize`` module in the CLI
subprocesses, so these tests hold whatever the parsers themselves are fixed to do.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from click.testing import CliRunner
from optout_images import encode, picture
from optout_server import Handler, Server, body
from PIL.PngImagePlugin import PngInfo

import provenance
from provenance.cli import optout_group
from provenance.errors import OptOutError
from provenance.optout import OptOutChecker, OptOutRegistry, check_dataset

MARK = "POISON-PILL"
JPEG = "image/jpeg"
#: Installs the poisoned parsers; the same text runs here (exec) and as a sitecustomize.
POISON = f"""
import zlib

import provenance.optout.checker as _checker

_real_html, _real_file = _checker.html_signals, _checker.file_signals


def _poisoned_html(data, *args, **kwargs):
    if b"{MARK}" in bytes(data):
        raise LookupError("unknown encoding: bogus (poisoned page)")
    return _real_html(data, *args, **kwargs)


def _poisoned_file(data, *args, **kwargs):
    if b"{MARK}" in bytes(data):
        raise zlib.error("Error -3 while decompressing data (poisoned image)")
    return _real_file(data, *args, **kwargs)


_checker.html_signals, _checker.file_signals = _poisoned_html, _poisoned_file
"""
ROWS = 600  # rows of the killed-and-resumed dataset: 256 are flushed before the kill
FIRST = 300  # rows before the gated ones
POISONED_ROWS = {7: "html", 150: "png", 450: "html"}  # row -> what poisons it
release = threading.Event()  # the gated rows answer once this is set


def _poison_png() -> bytes:
    info = PngInfo()
    info.add_text("Comment", MARK)
    return encode(picture(3), "png", pnginfo=info)


def _gated(then: Handler) -> Handler:
    """A handler that answers only once ``release`` is set (or gives up if the client left)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        while not release.is_set():
            await asyncio.sleep(0.02)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)
        return await then(request)

    return handle


@pytest.fixture(scope="module")
def origin(server: Server) -> str:
    img, page = encode(picture(0), "jpeg"), f"<html><head><title>{MARK}</title></head></html>"
    routes: dict[str, Handler] = {"/robots.txt": body("User-agent: *\nAllow: /\n")}
    for i in range(ROWS):
        kind = POISONED_ROWS.get(i)
        if kind == "html":
            handler = body(page, "text/html")
        elif kind == "png":
            handler = body(_poison_png(), "image/png")
        elif i % 5 == 1:
            handler = body(img, JPEG, headers=[("X-Robots-Tag", "noai")])
        else:
            handler = body(img, JPEG)
        routes[f"/w/{i}"] = _gated(handler) if i >= FIRST else handler
    return server.add(routes)


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    import provenance.optout.checker as checker

    for name in ("html_signals", "file_signals"):  # the real ones come back after the test
        monkeypatch.setattr(checker, name, getattr(checker, name))
    exec(POISON, {})  # the very text that the CLI subprocesses run as their sitecustomize


def _checker(**options: object) -> OptOutChecker:
    return OptOutChecker(allow_private=True, timeout=10.0, concurrency=16, **options)  # type: ignore[arg-type]


_REASONS = {
    3: "zlib.error: Error -3 while decompressing data (poisoned image)",
    7: "LookupError: unknown encoding: bogus (poisoned page)",
    150: "zlib.error: Error -3 while decompressing data (poisoned image)",
    450: "LookupError: unknown encoding: bogus (poisoned page)",
}


def _expected(i: int) -> str:
    if i in POISONED_ROWS:
        return "unknown"
    return "disallowed" if i % 5 == 1 else "allowed"


# -- the checker: one failing target is one decision ------------------------------------------


def test_check_many_keeps_every_decision_when_one_target_raises(
    origin: str, tmp_path: Path, poisoned: None
) -> None:
    (tmp_path / "poison.png").write_bytes(_poison_png())
    (tmp_path / "plain.jpg").write_bytes(encode(picture(5), "jpeg"))
    targets = [
        f"{origin}/w/0",
        f"{origin}/w/7",  # the page makes the HTML parser raise
        f"{origin}/w/1",
        f"{origin}/w/150",  # the image makes the file parser raise
        str(tmp_path / "poison.png"),
        str(tmp_path / "plain.jpg"),
    ]
    decisions = _checker().check_many(targets)
    assert [d.target for d in decisions] == targets
    assert [d.verdict for d in decisions] == [
        "allowed",
        "unknown",
        "disallowed",
        "unknown",
        "unknown",
        "allowed",
    ]
    reasons = (
        "LookupError: unknown encoding: bogus (poisoned page)",
        "zlib.error: Error -3 while decompressing data (poisoned image)",
        "zlib.error: Error -3 while decompressing data (poisoned image)",
    )
    for failed, reason in zip((decisions[1], decisions[3], decisions[4]), reasons, strict=True):
        assert failed.allowed is False
        assert failed.evidence == (f"fetch: the check failed: {reason} ({failed.target})",)
        assert "Traceback" not in failed.to_text()
    # on_error="allow" lets it through, as it does any unknown (the user's explicit choice)
    lenient = _checker(on_error="allow").check(f"{origin}/w/7")
    assert (lenient.verdict, lenient.allowed) == ("unknown", True)


def test_acheck_many_yields_each_index_once(origin: str, poisoned: None) -> None:
    targets = [f"{origin}/w/{i}" for i in range(20)] + [f"{origin}/w/7", f"{origin}/w/150"]

    async def run() -> dict[int, str]:
        found: dict[int, str] = {}
        async with _checker() as checker:
            async for index, decision in checker.acheck_many(targets, limit=4):
                assert index not in found
                found[index] = decision.verdict
        return found

    found = asyncio.run(run())
    assert sorted(found) == list(range(len(targets)))
    assert [found[i] for i in range(20)] == [_expected(i) for i in range(20)]
    assert found[20] == found[21] == "unknown"


def test_a_target_of_the_wrong_type_raises_before_any_request(server: Server, origin: str) -> None:
    before = server.total()
    with pytest.raises(OptOutError, match="cannot check a int") as info:
        _checker().check_many([f"{origin}/w/0", 5])  # type: ignore[list-item]
    assert info.value.hint == "give a URL, a path, bytes or a PIL image."
    assert server.total() == before


# -- files that are no image, or no regular file -----------------------------------------------


def test_empty_and_non_image_files_are_not_allowed(tmp_path: Path) -> None:
    empty, text, cut = tmp_path / "empty.png", tmp_path / "notes.png", tmp_path / "cut.png"
    empty.write_bytes(b"")
    text.write_text("hello, this is not a picture")
    cut.write_bytes(encode(picture(2), "png")[:20])  # the signature and half a header
    real = tmp_path / "real.png"
    real.write_bytes(encode(picture(2), "png"))
    decisions = _checker().check_many([empty, text, cut, real, b"", b"GIF89a"])
    assert [d.verdict for d in decisions] == [
        "unknown",
        "unknown",
        "unknown",
        "allowed",
        "unknown",
        "unknown",
    ]
    assert decisions[0].evidence == (
        f"fetch: cannot read this file as an image: it is empty (0 bytes) ({empty})",
    )
    assert decisions[1].evidence == (
        f"fetch: cannot read this file as an image (28 bytes): not a format Pillow knows ({text})",
    )
    assert "cannot read this file as an image (20 bytes)" in decisions[2].evidence[0]
    assert not any(d.allowed for d in decisions[:3])
    result = CliRunner().invoke(optout_group, ["check", str(empty), str(text)])
    assert result.exit_code == 3, result.output
    assert result.output.count("UNKNOWN (not allowed)") == 2


def _limited() -> None:  # in the child: old code reading /dev/zero must fail, not eat the RAM
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _sdkit(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``sdkit ARGS`` in a subprocess running the provenance package these tests imported."""
    return subprocess.Popen(
        [sys.executable, "-c", "from sdkit.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
        preexec_fn=_limited,
    )


def _env(*first: Path) -> dict[str, str]:
    where = [str(p) for p in first] + [str(Path(provenance.__file__).parents[1])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(where)}


def test_check_never_hangs_on_a_fifo_or_reads_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    child = _sdkit("optout", "check", str(fifo), "/dev/zero", str(tmp_path))
    try:
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert time.monotonic() - started < 30
    assert child.returncode == 3, err
    assert "Traceback" not in err
    assert f"fetch: not a regular file (a FIFO) ({fifo})" in out
    assert "fetch: not a regular file (a character device) (/dev/zero)" in out
    assert f"fetch: not a regular file (a folder) ({tmp_path})" in out


def test_a_file_over_max_body_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(encode(picture(1), "png") + b"\0" * 4096)
    decision = _checker(max_body=1024).check(big)
    assert decision.verdict == "unknown"
    assert "the file is larger than max_body" in decision.evidence[0]


# -- datasets ---------------------------------------------------------------------------------


def _write_parquet(path: Path, rows: list[dict[str, str]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_check_dataset_keeps_every_row_around_a_poison_row(
    origin: str, tmp_path: Path, poisoned: None
) -> None:
    rows = [{"id": str(i), "url": f"{origin}/w/{i}", "path": ""} for i in range(FIRST)]
    (tmp_path / "poison.png").write_bytes(_poison_png())
    rows[3]["path"] = "poison.png"  # a local copy that poisons the file parser
    source, output = tmp_path / "in.parquet", tmp_path / "out.csv"
    _write_parquet(source, rows)
    summary = check_dataset(source, output, _checker())
    out = _read_csv(output)
    assert [r["id"] for r in out] == [str(i) for i in range(FIRST)]
    expected = [_expected(i) for i in range(FIRST)]
    expected[3] = "unknown"
    assert [r["decision"] for r in out] == expected
    for i in (3, 7, 150):
        assert out[i]["allowed"] == "false"
        assert "the check failed: " + _REASONS[i] in out[i]["evidence"]
    assert summary.unknown == 3 and summary.rows == FIRST


def test_dataset_rows_never_read_files_outside_the_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    image = encode(picture(6), "png")
    (root / "good.png").write_bytes(image)
    (elsewhere / "secret.png").write_bytes(image)  # an image: readable, would be "allowed"
    (root / "link.png").symlink_to(elsewhere / "secret.png")
    (root / "inner.png").symlink_to(root / "good.png")  # a link that stays inside is fine
    os.mkfifo(root / "pipe.png")
    _unblock(root / "pipe.png", 10.0)
    rows = [
        {"url": "", "path": "good.png"},
        {"url": "good.png", "path": ""},  # a file name in the url column
        {"url": str(elsewhere / "secret.png"), "path": ""},
        {"url": "file://" + str(elsewhere / "secret.png"), "path": ""},
        {"url": "", "path": "../elsewhere/secret.png"},
        {"url": "", "path": str(elsewhere / "secret.png")},
        {"url": "", "path": "link.png"},
        {"url": "", "path": "inner.png"},
        {"url": "", "path": "pipe.png"},
        {"url": "", "path": str(root / "good.png")},  # absolute, but inside the root
    ]
    source = root / "in.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["url", "path"])
        writer.writeheader()
        writer.writerows(rows)
    done = threading.Thread(
        target=check_dataset, args=(source, root / "out.csv", _checker()), daemon=True
    )
    done.start()
    done.join(30)  # old code waits on the FIFO for ever
    assert not done.is_alive(), "check_dataset hangs on a FIFO named in the path column"
    out = _read_csv(root / "out.csv")
    assert [r["decision"] for r in out] == [
        "allowed",
        *["unknown"] * 6,
        "allowed",
        "unknown",
        "allowed",
    ]
    assert not any(r["allowed"] == "true" for i, r in enumerate(out) if i not in (0, 7, 9))
    for i in (1, 2, 3):
        assert "fetch: not an http(s) URL: the 'url' column is never read" in out[i]["evidence"]
    for i in (4, 5, 6):
        assert f"the path leads outside the files root ({root})" in out[i]["evidence"]
    assert "not a regular file (a FIFO)" in out[8]["evidence"]
    # an explicit root: relative paths are taken from it, absolute ones must lie in it
    check_dataset(source, tmp_path / "wide.csv", _checker(), files_root=tmp_path)
    wide = _read_csv(tmp_path / "wide.csv")
    assert [i for i, r in enumerate(wide) if r["allowed"] == "true"] == [5, 9]
    assert "No such file" in wide[0]["evidence"] and "outside" in wide[4]["evidence"]
    with pytest.raises(OptOutError, match="is not a folder") as info:
        check_dataset(source, tmp_path / "x.csv", _checker(), files_root=tmp_path / "none")
    assert "--files-root" in (info.value.hint or "")


def test_lone_surrogates_in_a_jsonl_row_do_not_stop_the_output(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = ['{"url": "http://127.0.0.1:9/\\ud800", "caption": "x\\udcff"}', '{"path": "a.png"}']
    source.write_text("\n".join(lines) + "\n")
    for name in ("out.csv", "out.parquet"):
        summary = check_dataset(
            source,
            tmp_path / name,
            OptOutChecker(allow_private=True, site_files=False, timeout=2.0),
        )
        assert (summary.rows, summary.unknown) == (2, 2)
    assert _read_csv(tmp_path / "out.csv")[0]["caption"] == "x\\udcff"
    assert pq.read_table(tmp_path / "out.parquet").to_pylist()[0]["caption"] == "x\\udcff"


def test_check_dataset_cli_poison_row_kill_and_resume(
    server: Server, origin: str, tmp_path: Path
) -> None:
    """The real CLI in a subprocess, poisoned parsers, SIGKILL mid-run, then a resume."""
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(POISON)
    (tmp_path / "outside.png").write_bytes(encode(picture(7), "png"))
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": str(i), "url": f"{origin}/w/{i}", "path": ""} for i in range(ROWS)]
    rows[20]["url"] = "/etc/hostname"
    rows[21] = {"id": "21", "url": "", "path": "../outside.png"}
    source, output = data / "in.parquet", data / "out.csv"
    _write_parquet(source, rows)
    partial = data / "out.csv.partial"
    command = ["optout", "check-dataset", str(source), "-o", str(output), "--allow-private"]
    command += ["--concurrency", "16", "--no-progress"]
    release.clear()
    child = _sdkit(*command, env=_env(boot))
    try:  # the gated rows (300 and on) hold the run open: kill it once 256 rows are flushed
        deadline = time.monotonic() + 30
        while child.poll() is None and time.monotonic() < deadline:
            if partial.exists() and partial.read_bytes().count(b"\n") > 256:
                break
            time.sleep(0.02)
        assert child.poll() is None, f"the run stopped by itself: {child.communicate()[1][-2000:]}"
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not output.exists()
    kept = [json.loads(line)["i"] for line in partial.read_text().splitlines()[1:] if line]
    assert 256 <= len(kept) < ROWS and 7 in kept  # the poison row 7 was decided before the kill
    hits = {i: server.count(origin, f"/w/{i}") for i in kept}
    release.set()
    child = _sdkit(*command, env=_env(boot))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "Traceback" not in err
    assert f"wrote {output}: {ROWS} rows" in out and f"({len(kept)} from an earlier run)" in out
    result = _read_csv(output)
    assert [r["id"] for r in result] == [str(i) for i in range(ROWS)]  # each row once, in order
    expected = [_expected(i) for i in range(ROWS)]
    expected[20] = expected[21] = "unknown"
    assert [r["decision"] for r in result] == expected
    for i in POISONED_ROWS:
        assert result[i]["allowed"] == "false"
        assert "the check failed: " + _REASONS[i] in result[i]["evidence"]
    assert "not an http(s) URL" in result[20]["evidence"]
    assert "the path leads outside the files root" in result[21]["evidence"]
    assert {i: server.count(origin, f"/w/{i}") for i in kept} == hits  # none fetched again
    assert not partial.exists()


# -- registry databases -----------------------------------------------------------------------


def _database(path: Path, *statements: str) -> Path:
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
    db.close()
    return path


def test_registry_of_another_schema_is_an_error_with_a_hint(tmp_path: Path) -> None:
    ours = (
        "CREATE TABLE works (id INTEGER PRIMARY KEY, label TEXT NOT NULL, source TEXT NOT NULL,"
        " phash TEXT NOT NULL, added TEXT NOT NULL, hashes BLOB NOT NULL)"
    )
    foreign = _database(tmp_path / "store.sqlite", "CREATE TABLE images (id INTEGER, x TEXT)")
    cases = {
        foreign: "it has no 'works' table (it has images)",
        _database(
            tmp_path / "columns.sqlite",
            "CREATE TABLE works (id INTEGER PRIMARY KEY, hashes TEXT)",
            "INSERT INTO works (hashes) VALUES ('abc')",
        ): "its 'works' table has the columns id, hashes, not id, label",
        _database(
            tmp_path / "blob.sqlite",
            ours,
            "INSERT INTO works (label, source, phash, added, hashes) VALUES ('a', 'b', 'c', 'd', x'0102')",
        ): "work #1's hashes are 2 bytes, not 256 bytes",
        _database(
            tmp_path / "newer.sqlite", ours, "PRAGMA user_version = 99"
        ): "its schema version is 99",
    }
    (tmp_path / "text.sqlite").write_text("not a database at all, " * 100)
    cases[tmp_path / "text.sqlite"] = "file is not a database"
    runner = CliRunner()
    for path, why in cases.items():
        with pytest.raises(OptOutError, match=r"cannot use .* as an opt-out registry") as info:
            OptOutRegistry(path)
        assert why in info.value.message and info.value.path == str(path)
        assert info.value.hint
        for args in (["registry", "list"], ["check", str(path)]):
            result = runner.invoke(optout_group, [*args, "--registry", str(path)])
            assert result.exit_code == 4, (path, result.output)
            assert why in result.output and "hint:" in result.output
            assert result.exception is None or isinstance(result.exception, SystemExit)
    with sqlite3.connect(foreign) as db:  # another program's database was not changed
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("images",)]
    db.close()
    with OptOutRegistry(tmp_path / "new.sqlite") as fresh:  # a new file becomes a registry
        assert len(fresh) == 0 and list(fresh.entries()) == []
    with sqlite3.connect(tmp_path / "new.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    db.close()
    with OptOutRegistry(_database(tmp_path / "old.sqlite", ours)) as old:  # made before v1
        assert len(old) == 0


def _unblock(fifo: Path, seconds: float = 5.0) -> None:
    """Open the FIFO's write end if a reader shows up (old code would wait for ever)."""

    def run() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:  # ENXIO: nobody reads it (as it should be)
                time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()


def test_registry_add_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    _unblock(fifo)
    with OptOutRegistry(":memory:") as registry, pytest.raises(OptOutError) as info:
        registry.add(fifo)
    assert "not a regular file (a FIFO)" in info.value.message
