"""Bulk checks of a dataset file: CSV, JSON Lines or Parquet with a ``url`` and/or ``path`` column.

The output has every input column plus ``allowed`` (bool), ``decision`` (allowed, disallowed,
unknown), ``signals`` (JSON: every signal found) and ``evidence`` (the lines that decided). Rows
keep their order. A row with both a URL and a path gets both checked and one decision.

What a row can make sdkit do: fetch its URL (``http://`` or ``https://`` only, under the
checker's SSRF policy) and read its path (a regular file under the files root, by default the
dataset's folder, at most ``max_body`` bytes). Nothing else: a URL column value without
``http(s)://`` is refused ("not an http(s) URL"), never read as a file; a path that leads
outside the root (``..``, an absolute path, a symlink) is refused, and so is a FIFO, a device
or a folder. A refused or failing row gets an ``unknown`` decision with the reason (not
allowed unless ``on_error="allow"``); the other rows are unaffected.

Resumable and atomic: results go first to ``OUT.partial`` (JSON Lines, appended and flushed as
checks finish, the input's size and mtime in its first line). A run that stops, for any reason,
leaves that file; the next run with the same input and output skips the rows already there
(a line cut short by the stop is dropped and checked again), so no row is lost or duplicated.
When every row is done the output is written to a temporary file and renamed to OUT, then the
partial file is removed and ``OUT.summary.json`` written. The input is never overwritten.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "in.csv").write_text("path\\nmissing.png\\n")
    >>> summary = check_dataset(folder / "in.csv", folder / "out.csv", OptOutChecker())
    >>> summary.rows, summary.unknown, (folder / "out.csv").read_text().splitlines()[0]
    (1, 1, 'path,allowed,decision,signals,evidence')
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from .._fs import write_atomic
from ..errors import OptOutError
from .checker import OptOutChecker, failure_reason
from .dataset_files import (
    FORMATS,
    OUTPUT_COLUMNS,
    dataset_format,
    preflight,
    read_rows,
    write_output,
)
from .dataset_files import write_output as _write_output  # noqa: F401 (its name before the split)
from .decision import Decision, Signal, decide
from .localfile import resolve_under

__all__ = ["FORMATS", "OUTPUT_COLUMNS", "DatasetSummary", "check_dataset", "dataset_format"]

_FLUSH_EVERY = 256  # results between flushes of the partial file
_URL_SCHEMES = ("http://", "https://")  # what the url column may hold
_SHOWN = 200  # characters of a refused value kept in the decision


@dataclass(frozen=True)
class DatasetSummary:
    """What a bulk check found.

    Attributes:
        input: the dataset read.
        output: the file written.
        rows: rows in the dataset.
        allowed, disallowed, unknown: rows per verdict (unknown rows are not allowed unless the
            checker had ``on_error="allow"``).
        usable: rows whose ``allowed`` is true.
        resumed: rows taken from an earlier, interrupted run.
        by_signal: rows that each signal disallowed (or left unknown), by signal name.
        seconds: time this run took.
    """

    input: str
    output: str
    rows: int
    allowed: int
    disallowed: int
    unknown: int
    usable: int
    resumed: int
    by_signal: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _stamp(path: Path, url_column: str, path_column: str) -> dict[str, Any]:
    info = path.stat()
    return {
        "input": str(path.resolve()),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "columns": [url_column, path_column],
    }


def _load_partial(partial: Path, stamp: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Results of an interrupted run (a torn last line is cut off the file)."""
    if not partial.exists():  # the stamp appears whole or not at all (temp file + rename)
        write_atomic(partial, (json.dumps(stamp) + "\n").encode("utf-8"), overwrite=True)
        return {}
    data = partial.read_bytes()
    lines = data.split(b"\n")
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = None
    if head != stamp:
        raise OptOutError(
            f"{partial} holds results for another input (or the input changed)",
            path=str(partial),
            hint="delete it to start over, or give the input it was made from.",
        )
    done: dict[int, dict[str, Any]] = {}
    good = len(lines[0]) + 1
    for line in lines[1:]:
        try:
            record = json.loads(line)
            index = int(record.pop("i"))
        except (ValueError, TypeError, KeyError, AttributeError):
            break  # the stop cut this line short: it and anything after are checked again
        done[index] = record
        good += len(line) + 1
    with partial.open("r+b") as handle:
        handle.truncate(min(good, len(data)))
    return done


def _record(decision: Decision) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "decision": decision.verdict,
        "signals": [
            {k: v for k, v in s.to_dict().items() if k != "spec"} for s in decision.signals
        ],
        "evidence": "; ".join(decision.evidence),
    }


@dataclass(frozen=True)
class _Row:
    """What one row asks to check: a URL, a file under the files root, and any refusals."""

    index: int
    url: str | None = None
    path: str | None = None
    refused: tuple[Signal, ...] = ()


def _target(index: int, row: dict[str, Any], url_column: str, path_column: str, root: Path) -> _Row:
    """A row's URL and path, each kept only if it is allowed (see the module docstring)."""
    url = row.get(url_column)
    path = row.get(path_column)
    url = str(url).strip() if url not in (None, "") else None
    path = str(path).strip() if path not in (None, "") else None
    refused: list[Signal] = []
    if url is not None and not url.lower().startswith(_URL_SCHEMES):
        text = f"not an http(s) URL: the {url_column!r} column is never read as a local file"
        refused.append(Signal("fetch", "unknown", url[:_SHOWN], text))
        url = None
    where = None
    if path is not None:
        placed = resolve_under(root, path)
        if isinstance(placed, str):
            refused.append(Signal("fetch", "unknown", path[:_SHOWN], f"{placed} ({root})"))
        else:
            where = str(placed)
    return _Row(index, url, where, tuple(refused))


async def _check_row(checker: OptOutChecker, row: _Row) -> Decision:
    """One row's decision: never an exception (a failing check is an unknown decision)."""
    if row.url is None and row.path is None and not row.refused:
        return decide(
            "",
            [Signal("fetch", "unknown", "", "the row has neither a URL nor a path")],
            on_error=checker.on_error,
        )
    name = row.url or row.path or row.refused[0].source
    try:
        targets = [row.url, None if row.path is None else Path(row.path)]  # a Path: never a URL
        decisions = [await checker.acheck(t) for t in targets if t is not None]
    except Exception as exc:  # the checker turns failures into decisions; this is a backstop
        failed = Signal("fetch", "unknown", name, failure_reason(exc))
        decisions = [decide(name, [failed], on_error=checker.on_error)]
    if len(decisions) == 1 and not row.refused:
        return decisions[0]
    signals = [*row.refused, *(s for d in decisions for s in d.signals)]
    return decide(
        name,
        signals,
        on_error=checker.on_error,
        final_url=decisions[0].final_url if row.url and decisions else None,
        requests=sum(d.requests for d in decisions),
    )


async def _run(
    checker: OptOutChecker,
    rows: Iterator[_Row],
    sink: IO[str],
    done: dict[int, dict[str, Any]],
    progress: Callable[[int], None],
) -> None:
    async def one(row: _Row) -> tuple[int, Decision]:
        return row.index, await _check_row(checker, row)

    unflushed = 0
    pending: set[asyncio.Task[tuple[int, Decision]]] = set()

    def collect(finished: set[asyncio.Task[tuple[int, Decision]]]) -> None:
        nonlocal unflushed
        for task in finished:
            index, decision = task.result()
            record = _record(decision)
            done[index] = record
            sink.write(json.dumps({"i": index, **record}, separators=(",", ":")) + "\n")
            unflushed += 1
        if unflushed >= _FLUSH_EVERY:
            sink.flush()
            unflushed = 0
        progress(len(finished))

    async with checker:
        try:
            for row in rows:
                if len(pending) >= checker.concurrency:
                    finished, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                    collect(finished)
                pending.add(asyncio.ensure_future(one(row)))
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                collect(finished)
        finally:  # interrupted: stop the checks in flight before the session closes
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    sink.flush()


def check_dataset(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    checker: OptOutChecker,
    *,
    url_column: str = "url",
    path_column: str = "path",
    files_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> DatasetSummary:
    """Check every row of a dataset and write the results (see the module docstring).

    Args:
        source: the dataset (.csv, .jsonl, .ndjson, .parquet).
        output: where to write (its suffix picks the format; may differ from the input's).
        checker: the checker to use (its on_error decides ``allowed`` for unknown rows).
        url_column: the column of URLs.
        path_column: the column of file paths, read only under ``files_root``.
        files_root: the folder that every path of the dataset must lie in (relative paths are
            taken from it); default: the dataset's folder. Paths leading outside it (``..``,
            absolute paths, symlinks) are refused, and so is anything not a regular file.
        overwrite: replace an existing output (never the input).
        progress: called with the number of rows just finished (for a progress bar).

    Raises:
        OptOutError: the input is missing or malformed, has neither column, the output exists
            (without ``overwrite``), is the input, or cannot be written; ``files_root`` is not
            a folder. A row's URL or path never raises: why it could not be checked is its
            decision.
    """
    started = time.monotonic()
    src, out = Path(source), Path(output)
    fmt_in, fmt_out = dataset_format(src), dataset_format(out)
    root = src.parent if files_root is None else Path(files_root)
    preflight(src, out, fmt_in, url_column, path_column, root, overwrite)
    partial = out.with_name(out.name + ".partial")
    try:
        done = _load_partial(partial, _stamp(src, url_column, path_column))
        resumed = len(done)
        todo = (
            _target(i, row, url_column, path_column, root)
            for i, row in enumerate(read_rows(src, fmt_in))
            if i not in done
        )
        if progress is not None and resumed:
            progress(resumed)
        with partial.open("a", encoding="utf-8") as sink:
            asyncio.run(_run(checker, todo, sink, done, progress or (lambda n: None)))
        write_output(src, fmt_in, out, fmt_out, done)
    except OSError as exc:
        raise OptOutError(
            f"cannot write {exc.filename or out}: {exc.strerror or exc}",
            path=str(out),
            hint="check the folder exists and is writable; finished rows are kept for the next run.",
        ) from exc
    except (ValueError, csv.Error) as exc:  # a row that does not decode or parse
        raise OptOutError(
            f"cannot read {src}: {exc}",
            path=str(src),
            hint="check that it is valid UTF-8 CSV, JSON Lines or Parquet; finished rows are kept.",
        ) from exc
    partial.unlink(missing_ok=True)
    return _summary(src, out, done, resumed, time.monotonic() - started)


def _summary(
    src: Path, out: Path, done: dict[int, dict[str, Any]], resumed: int, seconds: float
) -> DatasetSummary:
    verdicts = Counter(r["decision"] for r in done.values())
    by_signal: Counter[str] = Counter()
    for record in done.values():
        if record["decision"] != "allowed":
            names = {
                s["name"]
                for s in record["signals"]
                if s["value"] == record["decision"] and not s.get("overridden_by")
            }
            by_signal.update(names)
    summary = DatasetSummary(
        str(src),
        str(out),
        len(done),
        verdicts["allowed"],
        verdicts["disallowed"],
        verdicts["unknown"],
        sum(1 for r in done.values() if r["allowed"]),
        resumed,
        dict(sorted(by_signal.items())),
        round(seconds, 3),
    )
    target = out.with_name(out.name + ".summary.json")
    write_atomic(
        target, (json.dumps(summary.to_dict(), indent=2) + "\n").encode("utf-8"), overwrite=True
    )
    return summary
