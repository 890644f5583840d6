"""Bulk checks (CSV, JSON Lines, Parquet; resumable, atomic) and the `sdkit optout` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from optout_images import credentials, encode, picture, sdkit_signed, skimage_photo
from optout_server import Server, body

from provenance.cli import optout_group
from provenance.errors import OptOutError
from provenance.optout import OptOutChecker, check_dataset

JPEG = "image/jpeg"
N = 40  # rows per dataset


@pytest.fixture(scope="module")
def origin(server: Server) -> str:
    img = encode(picture(0), "jpeg")
    routes = {f"/ok/{i}.jpg": body(img, JPEG) for i in range(N)}
    routes |= {
        f"/noai/{i}.jpg": body(img, JPEG, headers=[("X-Robots-Tag", "noai")]) for i in range(N)
    }
    routes |= {
        "/robots.txt": body("User-agent: CCBot\nDisallow: /cc/\n"),
        "/down.jpg": body("", status=500),
    }
    return server.add(routes)


def _rows(origin: str) -> list[dict[str, str]]:
    """N rows: allowed, disallowed by header, by robots.txt (CCBot), unknown (500) in turn."""
    kinds = [
        lambda i: f"{origin}/ok/{i}.jpg",
        lambda i: f"{origin}/noai/{i}.jpg",
        lambda i: f"{origin}/cc/{i}.jpg",
        lambda i: f"{origin}/down.jpg",
    ]
    return [
        {"id": str(i), "url": kinds[i % 4](i), "caption": f"row {i}, with a comma"}
        for i in range(N)
    ]


def _expected(i: int) -> str:
    return ("allowed", "disallowed", "disallowed", "unknown")[i % 4]


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    if path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


def _read(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


def _checker() -> OptOutChecker:
    return OptOutChecker(allow_private=True, timeout=10.0, concurrency=16)


@pytest.mark.parametrize(
    ("fmt_in", "fmt_out"),
    [("csv", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet"), ("csv", "parquet")],
)
def test_formats(origin: str, tmp_path: Path, fmt_in: str, fmt_out: str) -> None:
    source, output = tmp_path / f"in.{fmt_in}", tmp_path / f"out.{fmt_out}"
    _write(source, _rows(origin))
    before = source.read_bytes()
    summary = check_dataset(source, output, _checker())
    assert source.read_bytes() == before
    rows = _read(output)
    assert [r["id"] for r in rows] == [str(i) for i in range(N)]  # order kept, no row lost
    assert [r["decision"] for r in rows] == [_expected(i) for i in range(N)]
    assert rows[0]["caption"] == "row 0, with a comma"
    assert {str(r["allowed"]).lower() for r in rows[::4]} == {"true"}
    signals = rows[2]["signals"]
    parsed = json.loads(signals) if isinstance(signals, str) else signals
    assert [s["name"] for s in parsed] == ["robots.txt"]
    assert "CCBot" in str(rows[2]["evidence"])
    assert (summary.rows, summary.allowed, summary.disallowed, summary.unknown, summary.usable) == (
        N,
        10,
        20,
        10,
        10,
    )
    assert summary.by_signal == {"fetch": 10, "robots.txt": 10, "x-robots-tag": 10}
    assert json.loads((tmp_path / f"out.{fmt_out}.summary.json").read_text())["rows"] == N
    assert not (tmp_path / f"out.{fmt_out}.partial").exists()


def test_interrupted_run_resumes_without_losing_or_duplicating(
    server: Server, origin: str, tmp_path: Path
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, _rows(origin))
    seen = 0

    def stop_midway(n: int) -> None:
        nonlocal seen
        seen += n
        if seen >= N // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check_dataset(source, output, _checker(), progress=stop_midway)
    assert not output.exists()
    partial = tmp_path / "out.jsonl.partial"
    done_lines = partial.read_text().splitlines()[1:]
    assert N // 2 <= len(done_lines) < N
    with partial.open("a") as handle:
        handle.write('{"i": 3, "allowed": tr')  # a line the stop cut short
    done_paths = [json.loads(line)["i"] for line in done_lines]
    watched = [_rows(origin)[i]["url"].removeprefix(origin) for i in done_paths if i % 4 < 2]
    hits_before = {p: server.count(origin, p) for p in watched}
    summary = check_dataset(source, output, _checker())
    assert summary.resumed == len(done_lines) and summary.rows == N
    rows = _read(output)
    assert [r["id"] for r in rows] == [str(i) for i in range(N)]
    assert [r["decision"] for r in rows] == [_expected(i) for i in range(N)]
    # rows finished before were not fetched again
    assert watched and {p: server.count(origin, p) for p in watched} == hits_before


def test_refusals(origin: str, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    _write(source, _rows(origin))
    with pytest.raises(OptOutError, match="would overwrite the input"):
        check_dataset(source, source, _checker())
    (tmp_path / "exists.csv").write_text("x")
    with pytest.raises(OptOutError, match="exists") as info:
        check_dataset(source, tmp_path / "exists.csv", _checker())
    assert info.value.hint == "pass --overwrite or choose another -o."
    with pytest.raises(OptOutError, match="has no 'link' or 'file' column"):
        check_dataset(source, tmp_path / "o.csv", _checker(), url_column="link", path_column="file")
    with pytest.raises(OptOutError, match="cannot tell the format"):
        check_dataset(source, tmp_path / "o.txt", _checker())
    (tmp_path / "o2.csv.partial").write_text('{"input": "/elsewhere"}\n')
    with pytest.raises(OptOutError, match="holds results for another input"):
        check_dataset(source, tmp_path / "o2.csv", _checker())


def test_unreadable_inputs_are_errors_not_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    (tmp_path / "latin1.csv").write_bytes("url\nhttp://example.com/caf\xe9.jpg\n".encode("latin-1"))
    (tmp_path / "bom.csv").write_bytes("\ufeffpath\nmissing.png\n".encode())
    for name in ("bad.parquet", "latin1.csv"):
        with pytest.raises(OptOutError, match="cannot read") as info:
            check_dataset(tmp_path / name, tmp_path / f"out-{name}", _checker())
        assert info.value.hint
    assert check_dataset(tmp_path / "bom.csv", tmp_path / "bom-out.csv", _checker()).unknown == 1


def test_path_column_and_both(origin: str, tmp_path: Path) -> None:
    creds = credentials(tmp_path / "creds")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "sdkit.png").write_bytes(sdkit_signed(creds, "png"))
    (tmp_path / "images" / "plain.png").write_bytes(encode(picture(4), "png"))
    rows = [
        {"url": "", "path": "images/sdkit.png"},
        {"url": "", "path": "images/plain.png"},
        {
            "url": f"{origin}/ok/1.jpg",
            "path": "images/sdkit.png",
        },  # the local copy carries an opt-out
        {"url": "", "path": ""},
    ]
    source = tmp_path / "in.csv"
    _write(source, rows)
    check_dataset(source, tmp_path / "out.csv", _checker())
    out = _read(tmp_path / "out.csv")
    assert [r["decision"] for r in out] == ["disallowed", "allowed", "disallowed", "unknown"]
    assert "c2pa-training-mining" in str(out[2]["evidence"])
    assert "neither a URL nor a path" in str(out[3]["evidence"])


# -- CLI ------------------------------------------------------------------------------------


def test_cli_check_exit_codes_and_json(origin: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(optout_group, ["check", "--allow-private", f"{origin}/ok/1.jpg"])
    assert ok.exit_code == 0 and "ALLOWED" in ok.output
    no = runner.invoke(
        optout_group,
        ["check", "--allow-private", "--json", f"{origin}/ok/1.jpg", f"{origin}/noai/1.jpg"],
    )
    assert no.exit_code == 1
    first, second = (json.loads(line) for line in no.output.splitlines())
    assert (first["verdict"], second["verdict"]) == ("allowed", "disallowed")
    assert second["signals"][0]["name"] == "x-robots-tag"
    down = runner.invoke(optout_group, ["check", "--allow-private", f"{origin}/down.jpg"])
    assert down.exit_code == 3 and "HTTP 500" in down.output
    lenient = runner.invoke(
        optout_group, ["check", "--allow-private", "--on-error", "allow", f"{origin}/down.jpg"]
    )
    assert lenient.exit_code == 0
    refused = runner.invoke(optout_group, ["check", f"{origin}/ok/1.jpg"])
    assert refused.exit_code == 3 and "loopback" in refused.output
    assert "Exit codes" in runner.invoke(optout_group, ["check", "--help"]).output


def test_cli_check_dataset(origin: str, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    _write(source, _rows(origin))
    runner = CliRunner()
    result = runner.invoke(
        optout_group,
        [
            "check-dataset",
            str(source),
            "-o",
            str(tmp_path / "out.parquet"),
            "--allow-private",
            "--progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{N} rows, 10 allowed, 20 disallowed, 10 unknown; 10 usable" in result.output
    assert "row/s" in result.output  # the progress bar, with its rate
    again = runner.invoke(
        optout_group,
        ["check-dataset", str(source), "-o", str(tmp_path / "out.parquet"), "--allow-private"],
    )
    assert again.exit_code == 4
    assert (
        "error:" in again.output
        and "hint: pass --overwrite" in again.output
        and "Traceback" not in again.output
    )
    missing = runner.invoke(
        optout_group, ["check-dataset", str(tmp_path / "none.csv"), "-o", str(tmp_path / "o.csv")]
    )
    assert missing.exit_code == 4 and "does not exist" in missing.output


def test_cli_registry(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "reg.sqlite")
    work = tmp_path / "work.png"
    skimage_photo("astronaut").save(work)
    copy = tmp_path / "copy.jpg"
    skimage_photo("astronaut").resize((256, 256)).save(copy, quality=70)
    other = tmp_path / "other.png"
    skimage_photo("coffee").save(other)
    added = runner.invoke(
        optout_group,
        ["registry", "add", str(work), "--registry", db, "--label", "A. Artist, Astronaut"],
    )
    assert added.exit_code == 0 and added.output.startswith("#1 ")
    checked = runner.invoke(
        optout_group, ["registry", "check", str(copy), str(other), "--registry", db]
    )
    assert checked.exit_code == 1
    assert (
        "matches #1 'A. Artist, Astronaut'" in checked.output
        and f"{other}: no match" in checked.output
    )
    listed = runner.invoke(optout_group, ["registry", "list", "--registry", db, "--json"])
    assert json.loads(listed.output)["label"] == "A. Artist, Astronaut"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    failed = runner.invoke(optout_group, ["registry", "add", str(bad), "--registry", db])
    assert failed.exit_code == 4 and "cannot read" in failed.output
    via_check = runner.invoke(optout_group, ["check", str(copy), "--registry", db])
    assert via_check.exit_code == 1 and "registry: matches registered work #1" in via_check.output


def test_mounted_in_sdkit_cli() -> None:
    from sdkit.cli import cli

    result = CliRunner().invoke(cli, ["optout", "--help"])
    assert (
        result.exit_code == 0 and "check-dataset" in result.output and "registry" in result.output
    )
