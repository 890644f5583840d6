"""Shards of a dataset for a distributed check: the plan, each shard's rows, its output and marker.

The driver of :func:`provenance.optout.distributed.check_dataset_ray` plans; its workers read,
check and write one shard at a time; the driver checks the markers and merges. Everything
lives in one work folder beside the output, ``OUT.shards/``::

    plan.json              the input's stamp (path, size, mtime, columns) and every shard
    input-00000.jsonl      CSV / JSON Lines inputs only: the shard's url and path cells
    shard-00000.jsonl      the shard's results, one ``{"i": row, ...}`` line per row
    shard-00000.done.json  the done marker: rows, first row, rows per verdict and signal
    _SUCCESS               written last, after every count matched the plan

Shards are fixed by the plan, so a name always means the same rows. Parquet inputs are split
on row-group boundaries (a row group larger than a shard is cut into row ranges, so a small
file of one row group still spreads over the workers); CSV and JSON Lines inputs are read once
by the driver, with the same reader as :func:`~provenance.optout.dataset.check_dataset`, and
their url and path cells written into one small JSON Lines file per shard. Every file here is
written atomically (:mod:`provenance._fs`): a file that exists is whole.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_path, write_atomic
from ..errors import OptOutError
from .dataset_files import read_rows

__all__ = [
    "Plan",
    "Shard",
    "ShardResults",
    "marker_path",
    "plan_shards",
    "read_cells",
    "read_marker",
    "results_path",
    "success_path",
    "tally",
    "write_shard",
]

SUCCESS = "_SUCCESS"
_PLAN = "plan.json"


@dataclass(frozen=True)
class Shard:
    """Rows ``first`` to ``first + rows - 1`` of the input, under a name fixed by the plan.

    Attributes:
        name: ``shard-00000``: its output and marker are named after it.
        first: the index of its first row in the input.
        rows: how many rows it holds.
        pieces: Parquet only: ``(row group, start, stop)`` row ranges, in order.
        cells: CSV / JSON Lines only: the file (in the work folder) of its url and path cells.
    """

    name: str
    first: int
    rows: int
    pieces: tuple[tuple[int, int, int], ...] = ()
    cells: str | None = None


@dataclass(frozen=True)
class Plan:
    """Every shard of one input, and where the work lives."""

    source: str
    fmt: str
    work: str
    stamp: dict[str, Any]
    shards: tuple[Shard, ...]

    @property
    def rows(self) -> int:
        """Rows in the input."""
        return sum(s.rows for s in self.shards)


def results_path(work: Path, shard: Shard) -> Path:
    """Where a shard's results go."""
    return work / f"{shard.name}.jsonl"


def marker_path(work: Path, shard: Shard) -> Path:
    """Where a shard's done marker goes."""
    return work / f"{shard.name}.done.json"


def _stamp(src: Path, url_column: str, path_column: str, rows_per_shard: int) -> dict[str, Any]:
    info = src.stat()
    return {
        "input": str(src.resolve()),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "columns": [url_column, path_column],
        "rows_per_shard": rows_per_shard,
    }


def plan_shards(
    src: Path, fmt: str, work: Path, url_column: str, path_column: str, rows_per_shard: int
) -> Plan:
    """The plan for ``src``: read from ``work/plan.json`` when an earlier run made it for the
    same input, else made (CSV / JSON Lines: their cells written per shard) and saved.

    Raises:
        OptOutError: ``work`` holds the plan of another input (or the input changed).
        OSError, ValueError: the input or the work folder cannot be read or written.
    """
    stamp = _stamp(src, url_column, path_column, rows_per_shard)
    saved = work / _PLAN
    if saved.exists():
        data = json.loads(saved.read_text(encoding="utf-8"))
        if data.get("stamp") != stamp:
            raise OptOutError(
                f"{work} holds the shards of another input (or the input or --rows-per-shard changed)",
                path=str(saved),
                hint="delete the folder to start over, or give the input and options it was made from.",
            )
        shards = tuple(
            Shard(s["name"], s["first"], s["rows"], tuple(map(tuple, s["pieces"])), s["cells"])
            for s in data["shards"]
        )
        return Plan(str(src), fmt, str(work), stamp, shards)
    work.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        shards = _parquet_shards(src, rows_per_shard)
    else:
        shards = _text_shards(src, fmt, work, url_column, path_column, rows_per_shard)
    plan = Plan(str(src), fmt, str(work), stamp, shards)
    record = {"stamp": stamp, "shards": [asdict(s) for s in shards]}
    write_atomic(saved, (json.dumps(record, indent=1) + "\n").encode("utf-8"), overwrite=True)
    return plan


def _name(index: int) -> str:
    return f"shard-{index:05d}"


def _parquet_shards(src: Path, rows_per_shard: int) -> tuple[Shard, ...]:
    """Whole row groups gathered up to ``rows_per_shard`` rows; a larger group cut in ranges."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(src) as parquet:
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    shards: list[Shard] = []
    pieces: list[tuple[int, int, int]] = []
    first = count = 0

    def close() -> None:
        nonlocal pieces, first, count
        if count:
            shards.append(Shard(_name(len(shards)), first, count, tuple(pieces)))
        first, pieces, count = first + count, [], 0

    for group, size in enumerate(sizes):
        if size > rows_per_shard:
            close()
            for start in range(0, size, rows_per_shard):
                stop = min(size, start + rows_per_shard)
                pieces, count = [(group, start, stop)], stop - start
                close()
            continue
        if count + size > rows_per_shard:
            close()
        if size:
            pieces.append((group, 0, size))
            count += size
    close()
    return tuple(shards)


def _text_shards(
    src: Path, fmt: str, work: Path, url_column: str, path_column: str, rows_per_shard: int
) -> tuple[Shard, ...]:
    """One pass over a CSV / JSON Lines input with :func:`read_rows` (the rows that
    ``check_dataset`` sees); each shard's url and path cells go to ``input-NNNNN.jsonl``."""
    shards: list[Shard] = []
    rows = read_rows(src, fmt)
    first = 0
    while True:
        batch: list[str] = []
        for row in rows:
            cells = [row.get(url_column), row.get(path_column)]
            batch.append(json.dumps(cells, separators=(",", ":"), default=str))
            if len(batch) >= rows_per_shard:
                break
        if not batch:
            return tuple(shards)
        name = _name(len(shards))
        cells_file = f"input-{name.removeprefix('shard-')}.jsonl"
        write_atomic(work / cells_file, ("\n".join(batch) + "\n").encode("utf-8"), overwrite=True)
        shards.append(Shard(name, first, len(batch), cells=cells_file))
        first += len(batch)


def read_cells(
    source: str, work: str, shard: Shard, url_column: str, path_column: str
) -> list[dict[str, Any]]:
    """A shard's rows, reduced to their url and path cells (what a check reads)."""
    if shard.cells is not None:
        text = (Path(work) / shard.cells).read_text(encoding="utf-8")
        return [
            dict(zip((url_column, path_column), json.loads(line), strict=True))
            for line in text.splitlines()
        ]
    import pyarrow.parquet as pq

    out: list[dict[str, Any]] = []
    with pq.ParquetFile(source) as parquet:
        wanted = [c for c in (url_column, path_column) if c in parquet.schema_arrow.names]
        for group, start, stop in shard.pieces:
            table = parquet.read_row_group(group, columns=wanted)
            out += table.slice(start, stop - start).to_pylist()
    return out


def tally(records: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Rows per verdict, usable rows and rows per deciding signal, counted as
    ``check_dataset``'s summary counts them (``dataset._summary``)."""
    verdicts = Counter(r["decision"] for r in records.values())
    by_signal: Counter[str] = Counter()
    for record in records.values():
        if record["decision"] != "allowed":
            by_signal.update(
                {
                    s["name"]
                    for s in record["signals"]
                    if s["value"] == record["decision"] and not s.get("overridden_by")
                }
            )
    return {
        "allowed": verdicts["allowed"],
        "disallowed": verdicts["disallowed"],
        "unknown": verdicts["unknown"],
        "usable": sum(1 for r in records.values() if r["allowed"]),
        "by_signal": dict(sorted(by_signal.items())),
    }


def write_shard(work: Path, shard: Shard, records: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The shard's results, then its done marker, each atomically; returns the marker.

    Raises:
        OptOutError: ``records`` are not exactly the shard's rows (nothing is written).
        OSError: the work folder cannot be written.
    """
    if sorted(records) != list(range(shard.first, shard.first + shard.rows)):
        raise OptOutError(
            f"{shard.name}: {len(records)} results for {shard.rows} rows",
            hint="a bug: please report it.",
        )
    with atomic_path(results_path(work, shard), overwrite=True) as temp, temp.open("w") as sink:
        for index in sorted(records):
            line = {"i": index, **records[index]}
            sink.write(json.dumps(line, separators=(",", ":")) + "\n")
    marker = {"shard": shard.name, "first": shard.first, "rows": shard.rows, **tally(records)}
    write_atomic(marker_path(work, shard), json.dumps(marker).encode("utf-8"), overwrite=True)
    return marker


def read_marker(work: Path, shard: Shard) -> dict[str, Any] | None:
    """The shard's marker if it is there and its counts match the plan; else ``None``."""
    try:
        marker = json.loads(marker_path(work, shard).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    if (marker.get("first"), marker.get("rows")) != (shard.first, shard.rows):
        return None
    if not results_path(work, shard).is_file():
        return None
    return marker


class ShardResults(dict[int, dict[str, Any]]):
    """Row index -> result, loaded one shard at a time as the output writer asks for rows in
    order (memory: one shard). Loading checks that the file holds exactly the shard's rows."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self._plan = plan
        self._starts = [s.first for s in plan.shards]

    def __missing__(self, index: int) -> dict[str, Any]:
        import bisect

        at = bisect.bisect_right(self._starts, index) - 1
        if at < 0 or index >= self._plan.rows:
            raise KeyError(index)
        shard = self._plan.shards[at]
        loaded: dict[int, dict[str, Any]] = {}
        for line in _lines(results_path(Path(self._plan.work), shard)):
            record = json.loads(line)
            loaded[int(record.pop("i"))] = record
        if sorted(loaded) != list(range(shard.first, shard.first + shard.rows)):
            raise OptOutError(
                f"{shard.name}'s results do not hold exactly its {shard.rows} rows",
                path=str(results_path(Path(self._plan.work), shard)),
                hint="delete it and its .done.json marker, then run again to redo that shard.",
            )
        self.clear()
        self.update(loaded)
        return loaded[index]


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line


def success_path(work: Path) -> Path:
    """The marker written when every shard matched the plan and the output was written."""
    return work / SUCCESS
