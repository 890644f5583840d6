"""``check-dataset`` on one process, on Ray (1 and 2 actors) and on 2 plain processes: same URLs.

The server of ``optout_throughput.py`` (its own process, many ports = many origins on
127.0.0.1, 30% of works opted out, site files on 3 of 5 origins) serves one Parquet dataset;
each way of checking it runs in turn:

* ``single``: :func:`provenance.optout.check_dataset` in this process (the baseline);
* ``ray-1``, ``ray-2``: :func:`provenance.optout.check_dataset_ray` with 1 and 2 actors on a
  local Ray cluster started here (its start is a fixed cost, measured apart, and so is the
  first job, which pays for the first worker's imports);
* ``procs-2``: 2 plain processes (``multiprocessing``, spawn), each ``check_dataset`` on half
  the rows, the halves written beforehand.

For each: URLs/s (wall), CPU-seconds per 1,000 URLs (this process and every process it started,
Ray's own included, the server excluded; sampled every 0.1 s), requests per URL (counted by the server), and
whether every row's decision equals the baseline's. Prints a table; writes JSON.

Run: ``nice -n 10 .venv/bin/python benchmarks/optout_distributed.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the server of optout_throughput.py
sys.path.insert(0, str(HERE.parent / "tests"))  # its image writers

CONCURRENCY = 256


class _CpuMeter:
    """CPU-seconds of this process and every process it started (Ray's included), less the
    server's: each process is sampled every 0.1 s while the run lasts, so one that ends during
    the run (a killed actor) still counts up to its last sample."""

    def __init__(self, exclude: int) -> None:
        self.exclude = exclude
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, *, start: bool) -> None:
        import psutil

        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            if proc.pid == self.exclude:
                continue
            try:
                t = proc.cpu_times()
            except psutil.Error:  # gone between the listing and the read
                continue
            used = t.user + t.system
            if start:
                self.first[proc.pid] = used
            self.first.setdefault(proc.pid, 0.0)  # started during the run: all of it counts
            self.last[proc.pid] = used

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample(start=False)

    def __enter__(self) -> _CpuMeter:
        self._sample(start=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(start=False)

    @property
    def seconds(self) -> float:
        """CPU-seconds used during the run."""
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def _checker() -> Any:
    """A factory of the checker every mode uses (a partial: it pickles for Ray)."""
    from provenance.optout import OptOutChecker

    return functools.partial(
        OptOutChecker, allow_private=True, concurrency=CONCURRENCY, per_host=16, timeout=10
    )


def _half(src: str, out: str) -> None:
    """One plain process: ``check_dataset`` of one half."""
    from provenance.optout import check_dataset

    check_dataset(src, out, _checker()())


def _decisions(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [str(d) for d in pq.read_table(path, columns=["decision"]).column(0).to_pylist()]


def _measure(name: str, run: Any, urls: int, server: Any, count: Any) -> dict[str, Any]:
    before_hits = count()
    with _CpuMeter(server.pid) as meter:
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
    cpu = meter.seconds
    return {
        "mode": name,
        "seconds": round(seconds, 3),
        "urls_per_s": round(urls / seconds, 1),
        "cpu_s_per_1000": round(cpu / urls * 1000, 3),
        "requests_per_url": round((count() - before_hits) / urls, 3),
    }


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from optout_throughput import _count, _files, _serve, _urls

    from provenance.optout import RayOptions, check_dataset, check_dataset_ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=20000)
    parser.add_argument("--origins", type=int, default=50)
    parser.add_argument("--rows-per-shard", type=int, default=2500)
    parser.add_argument("--output", default=str(HERE / "optout_distributed.json"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="optout-distributed-"))
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(args.origins, _files(), queue), daemon=True)
    server.start()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": os.getloadavg(),
        "urls": args.urls,
        "origins": args.origins,
        "rows_per_shard": args.rows_per_shard,
    }
    try:
        origins: list[str] = queue.get(timeout=30)
        count = functools.partial(_count, origins[0])
        urls = _urls(origins, args.urls)
        source = folder / "urls.parquet"
        pq.write_table(pa.table({"url": urls}), source, row_group_size=args.rows_per_shard)
        halves = [folder / "half0.parquet", folder / "half1.parquet"]
        for k, half in enumerate(halves):
            pq.write_table(pa.table({"url": urls[k::2]}), half)
        check_dataset(source, folder / "warm.parquet", _checker()())  # imports, not measured

        modes: list[dict[str, Any]] = []
        modes.append(
            _measure(
                "single process",
                lambda: check_dataset(source, folder / "single.parquet", _checker()()),
                args.urls,
                server,
                count,
            )
        )
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        results["fixed_cluster_start_s"] = round(time.perf_counter() - started, 3)
        tiny = folder / "tiny.parquet"
        pq.write_table(pa.table({"url": urls[:100]}), tiny)
        started = time.perf_counter()
        check_dataset_ray(
            tiny, folder / "tiny-out.parquet", _checker(), options=RayOptions(actors=1)
        )
        results["fixed_first_job_s"] = round(time.perf_counter() - started, 3)
        for actors in (1, 2):
            out = folder / f"ray{actors}.parquet"
            options = RayOptions(actors=actors, rows_per_shard=args.rows_per_shard)
            modes.append(
                _measure(
                    f"Ray, {actors} actor{'s' if actors > 1 else ''}",
                    lambda out=out, options=options: check_dataset_ray(
                        source, out, _checker(), options=options
                    ),
                    args.urls,
                    server,
                    count,
                )
            )
        ray.shutdown()

        def two_processes() -> None:
            spawn = mp.get_context("spawn")
            procs = [
                spawn.Process(target=_half, args=(str(h), str(h.with_suffix(".out.parquet"))))
                for h in halves
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
                if p.exitcode != 0:
                    raise RuntimeError(f"a half failed: exit {p.exitcode}")

        modes.append(_measure("2 plain processes", two_processes, args.urls, server, count))
    finally:
        server.kill()
        server.join()

    base = _decisions(folder / "single.parquet")
    outs = [folder / "single.parquet", folder / "ray1.parquet", folder / "ray2.parquet"]
    both = [_decisions(h.with_suffix(".out.parquet")) for h in halves]
    merged = [both[i % 2][i // 2] for i in range(args.urls)]
    same = [_decisions(p) == base for p in outs] + [merged == base]
    for mode, ok in zip(modes, same, strict=True):
        mode["same_decisions"] = ok
        mode["speed_vs_single"] = round(mode["urls_per_s"] / modes[0]["urls_per_s"], 2)
    results["modes"] = modes
    results["verdicts"] = {v: base.count(v) for v in ("allowed", "disallowed", "unknown")}
    _print(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


def _print(r: dict[str, Any]) -> None:
    print(f"machine: {r['machine']}; {r['urls']} URLs on {r['origins']} origins (127.0.0.1)")
    print(f"verdicts: {r['verdicts']}\n")
    print(
        "| mode | URLs/s | vs single | CPU-s per 1,000 URLs | requests per URL | same decisions |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for m in r["modes"]:
        print(
            f"| {m['mode']} | {m['urls_per_s']:,.0f} | {m['speed_vs_single']:.2f}x"
            f" | {m['cpu_s_per_1000']:.2f} | {m['requests_per_url']:.3f} | {m['same_decisions']} |"
        )
    print(
        f"\nfixed costs: Ray cluster start {r['fixed_cluster_start_s']:.1f} s;"
        f" first job (100 URLs, 1 actor) {r['fixed_first_job_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
