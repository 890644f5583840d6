"""``check_dataset`` on a Ray cluster: the same decisions, spread over many workers.

The driver (the process that calls :func:`check_dataset_ray`) plans fixed shards of the input
(:mod:`provenance.optout._shards`), starts a pool of Ray actors and hands each one shard at a
time. Each actor keeps one :class:`~provenance.optout.checker.OptOutChecker` for its lifetime:
one HTTP session with its per-host limits, and one site-file cache (robots.txt, ai.txt,
tdmrep.json), renewed when it is older than ``site_ttl``. It checks every row of its shard with
the very functions ``check_dataset`` uses (``dataset._target``, ``_check_row``, ``_record``),
writes the shard's results atomically under the shard's name, then a done marker with its counts.

Fail closed at every level:

* a row whose check fails is ``unknown`` (not allowed unless ``on_error="allow"``);
* a shard whose actor raises, dies or takes longer than ``shard_timeout`` is tried again on a
  fresh actor, at most ``retries`` more times, then counted as failed;
* at the end the driver reads every marker and checks its row count against the plan; only
  when all match does it write the output (from the shard files, in input order, with
  ``check_dataset``'s writer), ``OUT.summary.json`` and the success marker ``_SUCCESS``.
  Otherwise it raises :class:`~provenance.errors.OptOutError` naming the missing shards.

Resume: run the same call again; shards with a marker are kept, the others run.

Why plain actors and ``ray.wait`` rather than Ray Data: the unit of work, retry and resume is the
shard, which Ray Data does not expose (its blocks are re-cut by the planner, a small Parquet file
is one block without a repartition, its checkpointing is at-least-once, and an errored block is
dropped once ``max_errored_blocks`` allows it). Here every shard is accounted for by name.

Actors ask for ``cpus_per_actor`` (0.5) CPUs and at most all CPUs but one are asked for, so the
actors never take every CPU of a small cluster (the hang of ray#44687). Every wait has a limit:
actors must start within ``start_timeout``, a shard must finish within ``shard_timeout``.

Ray is imported only when a run starts; without it the run raises ``OptOutError`` naming
``pip install "sdkit[ray]"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .._fs import write_atomic
from ..errors import OptOutError
from ._shards import (
    Plan,
    Shard,
    ShardResults,
    plan_shards,
    read_cells,
    read_marker,
    success_path,
    write_shard,
)
from .checker import OptOutChecker
from .dataset import DatasetSummary, _check_row, _record, _target
from .dataset_files import dataset_format, preflight, write_output
from .decision import Decision

__all__ = ["RayOptions", "ShardWorker", "check_dataset_ray", "import_ray"]

CheckerFactory = Callable[[], OptOutChecker]


def import_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        OptOutError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise OptOutError(
            f"--engine ray needs Ray, which cannot be imported ({exc})",
            hint='install it with: pip install "sdkit[ray]"',
        ) from None
    module: ModuleType = ray
    return module


@dataclass(frozen=True)
class RayOptions:
    """Where and how a distributed check runs.

    Attributes:
        address: a running cluster (``ray://host:10001``, ``host:6379``, ``auto``); ``None``:
            the cluster this process is already connected to, else a new local one.
        actors: workers; default: the cluster's CPUs less one (at least 1).
        cpus_per_actor: CPUs each actor reserves (I/O-bound: 0.5 by default).
        rows_per_shard: rows per shard (the unit of retry and resume).
        retries: further tries of a failing shard, each on a fresh actor.
        shard_timeout: seconds a shard may take before its actor is killed and it is tried again.
        start_timeout: seconds for the actors to start.
        site_ttl: seconds an actor keeps its site-file cache before it starts a fresh checker.
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 0.5
    rows_per_shard: int = 10_000
    retries: int = 2
    shard_timeout: float = 600.0
    start_timeout: float = 120.0
    site_ttl: float = 3600.0

    def check(self) -> None:
        """Raises ``OptOutError`` for an option out of range."""
        checks = (
            (self.actors is None or self.actors >= 1, "actors", self.actors),
            (0 < self.cpus_per_actor <= 64, "cpus_per_actor", self.cpus_per_actor),
            (self.rows_per_shard >= 1, "rows_per_shard", self.rows_per_shard),
            (0 <= self.retries <= 100, "retries", self.retries),
            (self.shard_timeout > 0, "shard_timeout", self.shard_timeout),
            (self.start_timeout > 0, "start_timeout", self.start_timeout),
            (self.site_ttl > 0, "site_ttl", self.site_ttl),
        )
        for ok, name, value in checks:
            if not ok:
                raise OptOutError(f"invalid {name}: {value!r}", hint="see RayOptions.")


class ShardWorker:
    """One Ray actor (async): one checker, one shard at a time (see the module docstring)."""

    def __init__(self, make_checker: CheckerFactory, site_ttl: float) -> None:
        self._make = make_checker
        self._ttl = site_ttl
        self._checker: OptOutChecker | None = None
        self._born = 0.0

    async def ready(self) -> int:
        """The actor's process id, once it runs."""
        return os.getpid()

    async def _fresh_checker(self) -> OptOutChecker:
        if self._checker is not None and time.monotonic() - self._born < self._ttl:
            return self._checker
        if self._checker is not None:  # its site files are too old: a new cache, a new session
            await self._checker.aclose()
            self._checker.close()
        self._checker = self._make()
        self._born = time.monotonic()
        await self._checker.open()
        return self._checker

    async def run_shard(
        self, source: str, work: str, shard: Shard, columns: tuple[str, str], root: str
    ) -> dict[str, Any]:
        """Check every row of ``shard``, write its results and marker; return the marker."""
        checker = await self._fresh_checker()
        url_column, path_column = columns
        cells = await asyncio.to_thread(read_cells, source, work, shard, url_column, path_column)
        if len(cells) != shard.rows:
            raise OptOutError(f"{shard.name}: read {len(cells)} rows, planned {shard.rows}")
        rows = [
            _target(shard.first + n, row, url_column, path_column, Path(root))
            for n, row in enumerate(cells)
        ]
        limit = asyncio.Semaphore(checker.concurrency)

        async def one(index: int, row: Any) -> tuple[int, Decision]:
            async with limit:
                return index, await _check_row(checker, row)

        done = await asyncio.gather(*(one(r.index, r) for r in rows))
        records = {index: _record(decision) for index, decision in done}
        return await asyncio.to_thread(write_shard, Path(work), shard, records)


def check_dataset_ray(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    make_checker: CheckerFactory,
    *,
    options: RayOptions | None = None,
    url_column: str = "url",
    path_column: str = "path",
    files_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> DatasetSummary:
    """:func:`~provenance.optout.dataset.check_dataset` on a Ray cluster (see the module docstring).

    The output and ``OUT.summary.json`` are those ``check_dataset`` writes for the same
    decisions (one difference: the actors get absolute paths, so the evidence of a path cell
    refused under a relative files root names that root as an absolute path); the shards, markers and ``_SUCCESS`` stay in ``OUT.shards/`` (delete the folder
    to check everything afresh).

    Args:
        source, output, url_column, path_column, files_root, overwrite, progress: as for
            ``check_dataset``.
        make_checker: builds each actor's checker, e.g. ``functools.partial(OptOutChecker,
            timeout=5)``; called in the actors, so it must pickle (a function or a partial of
            importable names).
        options: the cluster and the shards (:class:`RayOptions`).

    Raises:
        OptOutError: before any work: Ray is missing, an option is out of range, or what
            ``check_dataset`` refuses (the input, the output, the files root); afterwards: the
            actors did not start, or shards failed every try (the error names them; run again
            to re-run only those).
    """
    started = time.monotonic()
    opts = options or RayOptions()
    opts.check()
    ray = import_ray()
    src, out = Path(source), Path(output)
    fmt_in, fmt_out = dataset_format(src), dataset_format(out)
    root = src.parent if files_root is None else Path(files_root)
    preflight(src, out, fmt_in, url_column, path_column, root, overwrite)
    # actors may run in another folder or on another node: they get absolute paths
    work = out.absolute().with_name(out.name + ".shards")
    try:
        plan = plan_shards(
            src.absolute(), fmt_in, work, url_column, path_column, opts.rows_per_shard
        )
    except (OSError, ValueError) as exc:
        raise OptOutError(
            f"cannot plan the shards of {src}: {exc}",
            path=str(src),
            hint="check the input is valid and the output's folder is writable.",
        ) from exc
    markers = {s.name: read_marker(work, s) for s in plan.shards}
    resumed = sum(s.rows for s in plan.shards if markers[s.name] is not None)
    if progress is not None and resumed:
        progress(resumed)
    todo = [s for s in plan.shards if markers[s.name] is None]
    failures: dict[str, str] = {}
    if todo:
        owned = not ray.is_initialized()
        if owned:
            ray.init(address=opts.address, include_dashboard=False, log_to_driver=False)
        try:
            _Driver(
                ray, plan, opts, make_checker, (url_column, path_column), str(root.absolute())
            ).run(todo, markers, failures, progress or (lambda n: None))
        finally:
            if owned:
                ray.shutdown()
    return _finish(plan, src, out, fmt_out, markers, failures, resumed, started)


def _finish(
    plan: Plan,
    src: Path,
    out: Path,
    fmt_out: str,
    markers: dict[str, dict[str, Any] | None],
    failures: dict[str, str],
    resumed: int,
    started: float,
) -> DatasetSummary:
    """Check every shard against the plan; only then write the output, summary and _SUCCESS."""
    work = Path(plan.work)
    for shard in plan.shards:  # what is on disk, not what the actors said
        markers[shard.name] = read_marker(work, shard)
    missing = [s.name for s in plan.shards if markers[s.name] is None]
    if missing:
        shown = ", ".join(f"{n} ({failures.get(n, 'no marker')})" for n in missing[:20])
        raise OptOutError(
            f"{len(missing)} of {len(plan.shards)} shards did not finish: {shown}"
            + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""),
            path=str(work),
            hint="no output was written; run the same command again to re-run only those shards.",
        )
    try:
        write_output(src, plan.fmt, out, fmt_out, ShardResults(plan))
    except OSError as exc:
        raise OptOutError(
            f"cannot write {exc.filename or out}: {exc.strerror or exc}",
            path=str(out),
            hint="check the folder is writable; finished shards are kept for the next run.",
        ) from exc
    done = [m for m in markers.values() if m is not None]
    by_signal: dict[str, int] = {}
    for marker in done:
        for name, count in marker["by_signal"].items():
            by_signal[name] = by_signal.get(name, 0) + count
    summary = DatasetSummary(
        str(src),
        str(out),
        sum(m["rows"] for m in done),
        sum(m["allowed"] for m in done),
        sum(m["disallowed"] for m in done),
        sum(m["unknown"] for m in done),
        sum(m["usable"] for m in done),
        resumed,
        dict(sorted(by_signal.items())),
        round(time.monotonic() - started, 3),
    )
    text = (json.dumps(summary.to_dict(), indent=2) + "\n").encode("utf-8")
    write_atomic(out.with_name(out.name + ".summary.json"), text, overwrite=True)
    write_atomic(success_path(work), text, overwrite=True)
    return summary


class _Driver:
    """Hands shards to actors, one at a time each, with retries and time limits."""

    def __init__(
        self,
        ray: ModuleType,
        plan: Plan,
        opts: RayOptions,
        make_checker: CheckerFactory,
        columns: tuple[str, str],
        root: str,
    ) -> None:
        self.ray = ray
        self.plan = plan
        self.opts = opts
        self.columns = columns
        self.root = root
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.size = opts.actors or max(1, int(cpus) - 1)
        # all the actors together leave one CPU free (ray#44687), however many were asked for
        share = min(opts.cpus_per_actor, (cpus - 1.0) / self.size) if cpus > 1 else 0.01
        self.remote = ray.remote(num_cpus=max(share, 0.01), max_restarts=0)(ShardWorker)
        self.make_checker = make_checker

    def _start(self, count: int) -> list[Any]:
        actors = [self.remote.remote(self.make_checker, self.opts.site_ttl) for _ in range(count)]
        try:
            self.ray.get([a.ready.remote() for a in actors], timeout=self.opts.start_timeout)
        except self.ray.exceptions.GetTimeoutError:
            for actor in actors:
                self.ray.kill(actor)
            raise OptOutError(
                f"{count} actor(s) did not start within {self.opts.start_timeout:.0f} s",
                hint="the cluster may have no free CPU for them: give fewer --actors, or check "
                "`ray status` (actors that take every CPU can hang a small cluster, ray#44687).",
            ) from None
        return actors

    def run(
        self,
        todo: list[Shard],
        markers: dict[str, dict[str, Any] | None],
        failures: dict[str, str],
        progress: Callable[[int], None],
    ) -> None:
        ray = self.ray
        queue = list(reversed(todo))
        tries: dict[str, int] = {}
        idle = self._start(min(self.size, len(todo)))
        running: dict[Any, tuple[Any, Shard, float]] = {}  # ref -> (actor, shard, deadline)
        try:
            while queue or running:
                while queue and len(idle) + len(running) < self.size:  # replace the failed
                    idle += self._start(1)
                while queue and idle:
                    shard, actor = queue.pop(), idle.pop()
                    tries[shard.name] = tries.get(shard.name, 0) + 1
                    ref = actor.run_shard.remote(
                        self.plan.source, self.plan.work, shard, self.columns, self.root
                    )
                    running[ref] = (actor, shard, time.monotonic() + self.opts.shard_timeout)
                nearest = min(deadline for _, _, deadline in running.values())
                wait = max(0.01, min(nearest - time.monotonic(), 5.0))
                ready, _ = ray.wait(list(running), num_returns=1, timeout=wait)
                now = time.monotonic()
                late = [r for r, (_, _, deadline) in running.items() if deadline <= now]
                for ref in [*ready, *(r for r in late if r not in ready)]:
                    actor, shard, _ = running.pop(ref)
                    why = self._outcome(ref, shard, late=ref not in ready)
                    if why is None:
                        markers[shard.name] = {"rows": shard.rows}
                        progress(shard.rows)
                        idle.append(actor)
                        continue
                    ray.kill(actor)  # a failed actor may hold a broken session: never reused
                    if tries[shard.name] <= self.opts.retries:
                        queue.append(shard)
                    else:
                        failures[shard.name] = why
        finally:
            for actor in [*idle, *(a for a, _, _ in running.values())]:
                ray.kill(actor)

    def _outcome(self, ref: Any, shard: Shard, *, late: bool) -> str | None:
        """``None`` when the shard finished; else why not (for the error and the retry)."""
        if late:  # the caller kills its actor, which ends the task
            return f"took longer than {self.opts.shard_timeout:.0f} s"
        try:
            marker = self.ray.get(ref, timeout=self.opts.shard_timeout)
        except self.ray.exceptions.RayActorError as exc:
            return f"its actor died: {str(exc).splitlines()[0][:200]}"
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            return f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}"
        if marker.get("rows") != shard.rows:
            return f"wrote {marker.get('rows')} rows, planned {shard.rows}"
        return None
