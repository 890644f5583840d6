"""Dataset files: CSV, JSON Lines and Parquet, read as a stream of rows and written atomically.

:func:`provenance.optout.dataset.check_dataset` reads the input here, row by row, and writes
the output here: every input row with the result columns (:data:`OUTPUT_COLUMNS`) added,
through a temporary file beside the output (:func:`provenance._fs.atomic_path`), so the output
appears whole or not at all. Text a UTF-8 file cannot hold (a lone surrogate from a JSON Lines
escape) is written as backslash escapes rather than stopping the run.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._fs import atomic_path
from ..errors import OptOutError

__all__ = [
    "FORMATS",
    "OUTPUT_COLUMNS",
    "dataset_format",
    "preflight",
    "read_columns",
    "read_rows",
    "write_output",
]

#: File suffix -> format.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
#: Columns the output adds.
OUTPUT_COLUMNS = ("allowed", "decision", "signals", "evidence")
_BATCH = 4096  # rows per read / write batch


def dataset_format(path: str | os.PathLike[str]) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from a file name.

    Raises:
        OptOutError: another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OptOutError(
            f"cannot tell the format of {path}",
            path=str(path),
            hint="use a .csv, .jsonl (.ndjson) or .parquet file.",
        )
    return FORMATS[suffix]


def read_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The dataset's rows as dicts, streamed."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=_BATCH):
                yield from batch.to_pylist()
        return
    with path.open(newline="", encoding="utf-8-sig") as handle:
        if fmt == "csv":
            yield from csv.DictReader(handle)
            return
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OptOutError(
                    f"{path} line {number} is not JSON: {exc.msg}",
                    path=str(path),
                    hint="fix or remove the line; finished rows are kept for the next run.",
                ) from exc
            if not isinstance(row, dict):
                raise OptOutError(f"{path} line {number} is not a JSON object", path=str(path))
            yield row


def read_columns(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return list(next(csv.reader(handle), []))
    first = next(read_rows(path, fmt), {})
    return list(first)


def write_output(
    source: Path, fmt_in: str, output: Path, fmt_out: str, done: dict[int, dict[str, Any]]
) -> None:
    """Input rows + result columns -> a temporary file beside ``output`` -> renamed to it."""
    # replaces: check_dataset refused an existing output unless asked to overwrite it
    with atomic_path(output, overwrite=True) as temp:
        rows = ({**row, **done[i]} for i, row in enumerate(read_rows(source, fmt_in)))
        if fmt_out != "jsonl":  # JSON keeps lone surrogates (\udXXX escapes); UTF-8 cannot
            rows = ({k: _utf8_safe(v) for k, v in row.items()} for row in rows)
        if fmt_out == "parquet":
            _write_parquet(temp, rows, source if fmt_in == "parquet" else None)
        else:
            with temp.open("w", newline="", encoding="utf-8") as out:
                if fmt_out == "jsonl":
                    for row in rows:
                        out.write(json.dumps(row, default=str) + "\n")
                else:
                    columns = [*read_columns(source, fmt_in), *OUTPUT_COLUMNS]
                    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
                    writer.writeheader()
                    for row in rows:
                        row["signals"] = json.dumps(row["signals"])
                        row["allowed"] = "true" if row["allowed"] else "false"
                        writer.writerow(row)


def _utf8_safe(value: Any) -> Any:
    """``value`` with strings that UTF-8 cannot hold (lone surrogates, from a JSON Lines
    ``"\\ud800"``) written as backslash escapes, so a row like that cannot stop the output."""
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [_utf8_safe(v) for v in value]
    if isinstance(value, dict):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    return value


def _write_parquet(temp: Path, rows: Iterator[dict[str, Any]], schema_from: Path | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    extra = [
        ("allowed", pa.bool_()),
        ("decision", pa.string()),
        ("signals", pa.string()),
        ("evidence", pa.string()),
    ]
    schema = None
    if schema_from is not None:
        schema = pq.read_schema(schema_from).remove_metadata()
        for name, kind in extra:
            schema = schema.append(pa.field(name, kind))
    writer: pq.ParquetWriter | None = None
    try:
        batch: list[dict[str, Any]] = []
        for row in _with_end(rows):
            if row is not None:
                row["signals"] = json.dumps(row["signals"])
                batch.append(row)
            if batch and (row is None or len(batch) >= _BATCH):
                table = pa.Table.from_pylist(batch, schema=schema)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(temp, schema)
                writer.write_table(table)
                batch = []
        if writer is None:
            writer = pq.ParquetWriter(temp, schema or pa.schema(extra))
    finally:
        if writer is not None:
            writer.close()


def _with_end(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any] | None]:
    yield from rows
    yield None


def preflight(
    src: Path,
    out: Path,
    fmt_in: str,
    url_column: str,
    path_column: str,
    root: Path,
    overwrite: bool,
) -> None:
    """The checks ``check_dataset`` (one process or ``--engine ray``) makes before any work.

    Raises:
        OptOutError: the input is missing or unreadable or has neither column or already has an
            output column; the output is the input or exists (without ``overwrite``); ``root``
            is not a folder.
    """
    if not src.is_file():
        raise OptOutError(
            f"{src} does not exist", path=str(src), hint="give the dataset file to check."
        )
    if out.resolve() == src.resolve():
        raise OptOutError(
            "the output would overwrite the input", path=str(out), hint="give another -o path."
        )
    if out.exists() and not overwrite:
        raise OptOutError(
            f"{out} exists", path=str(out), hint="pass --overwrite or choose another -o."
        )
    try:
        columns = read_columns(src, fmt_in)
    except (OSError, ValueError) as exc:
        raise OptOutError(
            f"cannot read {src}: {exc}",
            path=str(src),
            hint="check that the file is a valid CSV, JSON Lines or Parquet file.",
        ) from exc
    if url_column not in columns and path_column not in columns:
        raise OptOutError(
            f"{src} has no {url_column!r} or {path_column!r} column (it has {', '.join(columns) or 'none'})",
            path=str(src),
            hint="name the columns with --url-column / --path-column.",
        )
    if not root.is_dir():
        raise OptOutError(
            f"the files root {root} is not a folder",
            path=str(root),
            hint="give the folder that the path column's files are in (--files-root).",
        )
    clash = [c for c in OUTPUT_COLUMNS if c in columns]
    if clash:
        raise OptOutError(
            f"{src} already has the column(s) {', '.join(clash)} that the output adds",
            path=str(src),
            hint="rename them first.",
        )
