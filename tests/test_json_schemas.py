"""The JSON schemas shipped in the packages, checked against real output of the commands.

``verify --json`` (provenance/schemas/verify-report.schema.json) and ``generate --json``
(sdkit/schemas/generate.schema.json) say ``additionalProperties: false``, so a key added to
the output without the schema fails here.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from PIL import Image

from provenance.report import VerificationReport
from sdkit.cli import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "c2pa-interop"


def _schema(package: str, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((files(package) / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


VERIFY = _schema("provenance", "verify-report.schema.json")
GENERATE = _schema("sdkit", "generate.schema.json")


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_verify_schema_names_every_key_of_a_report() -> None:
    keys = set(VerificationReport(path="x", verdict="no_provenance", c2pa_state="absent").to_dict())
    report = VERIFY["$defs"]["report"]
    assert keys == set(report["properties"]) == set(report["required"])


@pytest.fixture(scope="module")
def generated(tiny_sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """generate -n 2 --json (and its files), plus a store and a stripped copy."""
    folder = tmp_path_factory.mktemp("generated")
    out, db = folder / "a.png", folder / "store.db"
    args = ["generate", "a red circle", "-m", str(tiny_sd_path), "-o", str(out), "-n", "2"]
    args += ["--size", "256x256", "--steps", "2", "-q", "--store", str(db), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    copy = folder / "copy.jpg"
    Image.open(folder / "a-1.png").save(copy, quality=85)  # metadata stripped
    return {"json": json.loads(result.stdout), "folder": folder, "store": db, "copy": copy}


def test_generate_json_matches_its_schema(generated: dict[str, Any]) -> None:
    jsonschema.validate(generated["json"], GENERATE)
    assert len(generated["json"]) == 2
    with pytest.raises(jsonschema.ValidationError):  # a key the schema does not name fails
        jsonschema.validate([{**generated["json"][0], "extra": 1}], GENERATE)


def test_generate_prompts_json_matches_its_schema(tiny_sd_path: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('a\n{"prompt": "b", "seed": 3}\n', encoding="utf-8")
    args = ["generate", "--prompts", str(prompts), "-m", str(tiny_sd_path), "--steps", "1"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path), "-q", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    jsonschema.validate(rows, GENERATE)
    assert len(rows) == 2


def test_verify_json_lines_match_their_schema(generated: dict[str, Any], tmp_path: Path) -> None:
    folder = generated["folder"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    runner = CliRunner()
    seen: dict[str, dict[str, Any]] = {}
    runs = [
        [str(folder / "a-1.png")],  # verified (untrusted signer)
        [str(generated["copy"]), "--store", str(generated["store"])],  # similar
        [str(FIXTURES / "A.jpg"), str(FIXTURES / "XCA.jpg")],  # no_provenance, not_verified
        [str(FIXTURES / "cloud.jpg")],  # remote manifest
        [str(broken), str(tmp_path / "missing.png")],  # unreadable, error line
    ]
    for args in runs:
        result = runner.invoke(cli, ["verify", "--json", *args])
        lines = _lines(result.output)
        assert lines, result.output
        for line in lines:
            jsonschema.validate(line, VERIFY)
            seen[line.get("verdict", "error")] = line
    assert {"verified", "similar", "no_provenance", "not_verified", "error"} <= set(seen)
    assert seen["error"]["path"].endswith("missing.png")
    assert seen["verified"]["recipe"]["prompt"] == "a red circle"
