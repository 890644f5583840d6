"""``check-dataset --engine ray``: the same decisions as ``check_dataset``, shards that resume.

One local Ray cluster (2 CPUs, no dashboard) for the module; the works come from a real
aiohttp server on 127.0.0.1 (tests/optout_server.py), one route per signal, a 503 and a
request that times out. Failures are real: a shard's output name taken by a folder makes its
atomic write fail on every try, as a full or read-only disk would.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray  # the [ray] extra, installed by tools/test.sh
from click.testing import CliRunner
from optout_images import credentials, encode, picture, sdkit_signed, with_xmp
from optout_server import Server, body, slow

from provenance.cli import optout_group
from provenance.errors import OptOutError
from provenance.optout import OptOutChecker, check_dataset
from provenance.optout.distributed import RayOptions, check_dataset_ray

JPEG, PNG, HTML = "image/jpeg", "image/png", "text/html"
TIMEOUT = 2.0  # each request's limit; the slow route waits far longer
N = 60  # rows; 10 per shard below


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs for this module, shut down after it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def works(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """One URL per signal (and a 503, a timeout, a plain work), on three origins."""
    creds = credentials(tmp_path_factory.mktemp("creds"))
    img = encode(picture(0), "jpeg")
    site = server.add(
        {
            "/robots.txt": body("User-agent: GPTBot\nDisallow: /gpt/\n"),
            "/plain.jpg": body(img, JPEG),
            "/xrt.jpg": body(img, JPEG, headers=[("X-Robots-Tag", "noai")]),
            "/tdm.jpg": body(img, JPEG, headers=[("tdm-reservation", "1")]),
            "/meta.html": body('<html><head><meta name="robots" content="noai"></head>', HTML),
            "/meta-tdm.html": body(
                '<html><head><meta name="tdm-reservation" content="1"></head>', HTML
            ),
            "/sdkit.png": body(sdkit_signed(creds, "png"), PNG),
            "/xmp.jpg": body(with_xmp("DMI-PROHIBITED-AIMLTRAINING", "jpeg"), JPEG),
            "/gpt/a.jpg": body(img, JPEG),
            "/error.jpg": body("down", status=503),
            "/slow.jpg": slow(30.0, body(img, JPEG)),
        }
    )
    ai_txt = server.add(
        {"/ai.txt": body("User-Agent: *\nDisallow: *.jpg\n"), "/a.jpg": body(img, JPEG)}
    )
    tdmrep = server.add(
        {
            "/.well-known/tdmrep.json": body(
                '[{"location": "/r/*", "tdm-reservation": 1}]', "application/json"
            ),
            "/r/a.jpg": body(img, JPEG),
        }
    )
    paths = ["plain.jpg", "xrt.jpg", "tdm.jpg", "meta.html", "meta-tdm.html", "sdkit.png"]
    paths += ["xmp.jpg", "gpt/a.jpg", "error.jpg", "slow.jpg"]
    return [f"{site}/{p}" for p in paths] + [f"{ai_txt}/a.jpg", f"{tdmrep}/r/a.jpg"]


def _rows(works: list[str]) -> list[dict[str, str]]:
    """N rows cycling through the works, plus a refused cell (not http) every 7th row."""
    return [
        {"id": str(i), "url": "file:///etc/passwd" if i % 7 == 6 else works[i % len(works)]}
        for i in range(N)
    ]


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    if path.suffix == ".csv":
        path.write_text("id,url\n" + "".join(f"{r['id']},{r['url']}\n" for r in rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:  # three row groups (25, 25, 10 rows): shards cut inside and across them
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=25)


def _read(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


def _factory() -> functools.partial[OptOutChecker]:
    return functools.partial(OptOutChecker, allow_private=True, timeout=TIMEOUT, concurrency=32)


SMALL = RayOptions(actors=2, rows_per_shard=10, shard_timeout=60, start_timeout=60)


def test_same_decisions_as_check_dataset(cluster: None, works: list[str], tmp_path: Path) -> None:
    fmt = "parquet"  # CSV's conversion into shards: the next test
    source = tmp_path / f"in.{fmt}"
    _write(source, _rows(works))
    single = check_dataset(source, tmp_path / f"one.{fmt}", _factory()())
    spread = check_dataset_ray(source, tmp_path / f"ray.{fmt}", _factory(), options=SMALL)
    one, many = _read(tmp_path / f"one.{fmt}"), _read(tmp_path / f"ray.{fmt}")
    assert [r["id"] for r in many] == [str(i) for i in range(N)]
    assert many == one  # every column of every row, evidence included
    names = {s["name"] for r in many for s in _signals(r)}
    assert names >= {
        "x-robots-tag",
        "tdm-reservation",
        "meta-robots",
        "meta-tdm-reservation",
        "c2pa-training-mining",
        "iptc-data-mining",
        "robots.txt",
        "ai.txt",
        "tdmrep.json",
        "fetch",
    }
    evidence = " ".join(str(r["evidence"]) for r in many)
    assert "HTTP 503" in evidence and "not an http(s) URL" in evidence
    by_url = {r["url"]: r["decision"] for r in many}
    assert by_url[works[0]] == "allowed" and by_url[works[9]] == "unknown"  # plain; timeout
    assert (spread.rows, spread.allowed, spread.disallowed, spread.unknown, spread.usable) == (
        single.rows,
        single.allowed,
        single.disallowed,
        single.unknown,
        single.usable,
    )
    assert spread.by_signal == single.by_signal and spread.resumed == 0
    work = tmp_path / f"ray.{fmt}.shards"
    # row groups of 25, 25 and 10 rows, 10 rows a shard: 10+10+5, 10+10+5, 10
    assert sorted(p.name for p in work.glob("shard-*.done.json")) == [
        f"shard-{k:05d}.done.json" for k in range(7)
    ]
    plan = json.loads((work / "plan.json").read_text())["shards"]
    assert [tuple(p) for s in plan for p in s["pieces"]][:3] == [
        (0, 0, 10),
        (0, 10, 20),
        (0, 20, 25),
    ]
    assert json.loads((work / "_SUCCESS").read_text())["rows"] == N


def _signals(row: dict[str, object]) -> list[dict[str, str]]:
    signals = row["signals"]
    return json.loads(signals) if isinstance(signals, str) else signals  # type: ignore[return-value]


def test_a_failing_shard_fails_the_run_then_resume_redoes_only_it(
    cluster: None, server: Server, works: list[str], tmp_path: Path
) -> None:
    source, output = tmp_path / "in.csv", tmp_path / "out.jsonl"
    rows = [{"id": str(i), "url": f"{works[0]}?row={i}"} for i in range(N)]
    _write(source, rows)
    work = tmp_path / "out.jsonl.shards"
    (work / "shard-00002.jsonl").mkdir(parents=True)  # its results can never be written
    (work / "shard-00002.jsonl" / "x").write_text("blocks the rename")
    args = ["check-dataset", str(source), "-o", str(output), "--allow-private"]
    args += ["--engine", "ray", "--actors", "2", "--rows-per-shard", "10", "--timeout", "5"]
    first = CliRunner().invoke(optout_group, args)
    assert first.exit_code == 8, first.output
    assert "1 of 6 shards did not finish: shard-00002" in first.output
    assert "Traceback" not in first.output
    assert not output.exists() and not (work / "_SUCCESS").exists()
    assert not (tmp_path / "out.jsonl.summary.json").exists()
    done = sorted(p.name for p in work.glob("*.done.json"))
    assert done == [f"shard-{k:05d}.done.json" for k in (0, 1, 3, 4, 5)]
    origin = works[0].rsplit("/", 1)[0]
    # each row of the failing shard was fetched once per try: 1 + 2 retries
    assert [server.count(origin, f"/plain.jpg?row={i}") for i in (19, 20, 29, 30)] == [1, 3, 3, 1]
    stamps = {p.name: p.stat().st_mtime_ns for p in work.glob("*.done.json")}

    (work / "shard-00002.jsonl" / "x").unlink()
    (work / "shard-00002.jsonl").rmdir()
    second = CliRunner().invoke(optout_group, args)
    assert second.exit_code == 0, second.output
    assert "(50 from an earlier run)" in second.output
    out = _read(output)
    assert [r["id"] for r in out] == [str(i) for i in range(N)]  # none missing, none twice
    assert {r["decision"] for r in out} == {"allowed"}
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("*.done.json") if p.name in stamps} == (
        stamps
    )  # finished shards were not run again
    assert [server.count(origin, f"/plain.jpg?row={i}") for i in (19, 20, 29, 30)] == [1, 4, 4, 1]
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert (summary["rows"], summary["allowed"], summary["resumed"]) == (N, N, 50)
    assert (work / "_SUCCESS").exists()
    check_dataset(source, tmp_path / "one.jsonl", _factory()())
    assert _read(tmp_path / "one.jsonl") == out


def test_a_dead_actor_is_replaced_and_its_shard_redone(
    cluster: None, works: list[str], tmp_path: Path
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [{"id": str(i), "url": f"{works[0]}?dead={i}"} for i in range(20)])
    died = tmp_path / "died"

    def make() -> OptOutChecker:  # nested, so Ray pickles it by value
        if not died.exists():  # the first actor's process ends in its first shard
            died.touch()
            os._exit(1)
        return OptOutChecker(allow_private=True, timeout=5.0)

    options = RayOptions(actors=1, rows_per_shard=10, shard_timeout=60, start_timeout=60)
    summary = check_dataset_ray(source, output, make, options=options)
    assert died.exists() and (summary.rows, summary.allowed) == (20, 20)
    assert [r["id"] for r in _read(output)] == [str(i) for i in range(20)]


def test_a_frozen_shard_is_stopped_not_waited_for(
    cluster: None, works: list[str], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    _write(source, [{"id": "0", "url": works[9]}])  # the server answers after 30 s
    slow_checker = functools.partial(OptOutChecker, allow_private=True, timeout=120.0)
    options = RayOptions(actors=1, retries=0, shard_timeout=3.0, start_timeout=60)
    started = time.monotonic()
    with pytest.raises(OptOutError) as caught:
        check_dataset_ray(source, tmp_path / "out.jsonl", slow_checker, options=options)
    assert time.monotonic() - started < 25
    assert (
        "1 of 1 shards did not finish: shard-00000 (took longer than 3 s)" in caught.value.message
    )
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.jsonl.shards" / "_SUCCESS").exists()


def test_without_ray_a_typed_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    _write(source, [{"url": "https://example.com/a.jpg"}])
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(OptOutError) as caught:
        check_dataset_ray(source, tmp_path / "out.jsonl", _factory())
    assert caught.value.hint == 'install it with: pip install "sdkit[ray]"'
    args = ["check-dataset", str(source), "-o", str(tmp_path / "o.jsonl"), "--engine", "ray"]
    result = CliRunner().invoke(optout_group, args)
    assert result.exit_code == 2 and 'pip install "sdkit[ray]"' in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.jsonl.shards").exists()


def test_cli_usage_errors(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    _write(source, [{"url": "https://example.com/a.jpg"}])
    args = ["check-dataset", str(source), "-o", str(tmp_path / "o.jsonl"), "--address", "auto"]
    result = CliRunner().invoke(optout_group, args)
    assert result.exit_code == 2 and "--engine ray" in result.output
    with pytest.raises(OptOutError, match="rows_per_shard"):
        check_dataset_ray(
            source, tmp_path / "o.jsonl", _factory(), options=RayOptions(rows_per_shard=0)
        )
