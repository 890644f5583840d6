"""``sdkit generate``: signing options (key password, time-stamp URL), --quality, --prompts.

Real c2pa-python signing, real files; the time-stamp authority that cannot be reached is a
closed port on 127.0.0.1, so c2pa-python's own HTTP request fails.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from provenance import verify
from provenance.dev_credentials import DevelopmentCredentials, init_development_credentials
from provenance.manifest import read_manifest
from sdkit.batch import BatchPrompt, generate_many, output_paths
from sdkit.cli import cli
from sdkit.cli import generate as generate_module
from sdkit.errors import InvalidOptionError, OutputError
from sdkit.images import read_infotext

PASSWORD = "correct horse"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Development credentials whose signing key is encrypted with PASSWORD: (chain, key)."""
    dev = init_development_credentials(tmp_path_factory.mktemp("credentials"))
    assert isinstance(dev, DevelopmentCredentials)
    key = serialization.load_pem_private_key(dev.private_key.read_bytes(), password=None)
    locked_key = dev.directory / "signer-locked.key"
    locked_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return dev.certificate_chain, locked_key


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsa"  # nothing listens there once the socket is closed


def _generate(runner: CliRunner, model: Path, out: Path, *extra: str) -> object:
    args = ["generate", "x", "-m", str(model), "--steps", "1", "-o", str(out), "-q", *extra]
    return runner.invoke(cli, args)


# -- the signing key's password ------------------------------------------------------------


def test_password_from_the_environment_with_certificate_from_the_environment(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain, key = locked
    monkeypatch.setenv("SDKIT_SIGNING_CERT", str(chain))
    monkeypatch.setenv("SDKIT_SIGNING_KEY", str(key))
    monkeypatch.setenv("SDKIT_SIGNING_KEY_PASSWORD", PASSWORD)
    out = tmp_path / "a.png"
    result = _generate(runner, tiny_sd_path, out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert read_manifest(out.read_bytes(), "image/png").state == "valid"


def test_password_flag_and_wrong_or_missing_password(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SDKIT_SIGNING_KEY_PASSWORD", raising=False)
    chain, key = locked
    signing = ["--signing-cert", str(chain), "--signing-key", str(key)]
    out = tmp_path / "a.png"
    missing = runner.invoke(cli, ["generate", "x", "-m", "acme/absent", "-o", str(out), *signing])
    # the credentials are checked before the model loads: exit 5, not the model's 6
    assert missing.exit_code == 5, missing.output
    assert "encrypted and no password" in missing.output
    assert "--key-password" in missing.output and "SDKIT_SIGNING_KEY_PASSWORD" in missing.output
    wrong = _generate(runner, tiny_sd_path, out, *signing, "--key-password", "guess")
    assert wrong.exit_code == 5, wrong.output  # type: ignore[attr-defined]
    text = wrong.output  # type: ignore[attr-defined]
    assert "password is wrong" in text and "not a PEM private key" not in text
    assert "Traceback" not in text and not out.exists()
    right = _generate(runner, tiny_sd_path, out, *signing, "--key-password", PASSWORD)
    assert right.exit_code == 0, right.output  # type: ignore[attr-defined]
    assert read_manifest(out.read_bytes(), "image/png").state == "valid"


def test_password_is_asked_for_with_hidden_input_in_a_terminal(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SDKIT_SIGNING_KEY_PASSWORD", raising=False)
    monkeypatch.setattr(generate_module, "_interactive", lambda: True)
    chain, key = locked
    out = tmp_path / "a.png"
    signing = ["--signing-cert", str(chain), "--signing-key", str(key)]
    args = ["generate", "x", "-m", str(tiny_sd_path), "--steps", "1", "-o", str(out), "-q"]
    result = runner.invoke(cli, [*args, *signing], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "password of the signing key" in result.output and PASSWORD not in result.output
    assert out.exists()


# -- the time-stamp authority --------------------------------------------------------------

_TSA_CONFIG = """\
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
serial = ./serial
signer_cert = ./tsa.pem
certs = ./tsa-chain.pem
signer_key = ./tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""
_TSA_SETUP = """\
set -e
echo 01 > serial
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=Test TSA CA" \\
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \\
  -addext "subjectKeyIdentifier=hash" -out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out tsa.key
openssl req -new -key tsa.key -subj "/CN=Test TSA" -out tsa.csr
printf "basicConstraints=critical,CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=critical,timeStamping\\nsubjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid\\n" > tsa.ext
openssl x509 -req -in tsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \\
  -extfile tsa.ext -out tsa.pem
cat tsa.pem ca.pem > tsa-chain.pem
"""


@pytest.fixture(scope="module")
def tsa_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real RFC 3161 time-stamp authority on 127.0.0.1: `openssl ts -reply` behind HTTP."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tsa")
    (folder / "tsa.cnf").write_text(_TSA_CONFIG)
    subprocess.run(["bash", "-c", _TSA_SETUP], cwd=folder, check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            reply = subprocess.run(
                ["openssl", "ts", "-reply", "-config", "tsa.cnf", "-queryfile", "/dev/stdin",
                 "-out", "/dev/stdout"],
                cwd=folder, input=query, capture_output=True, check=True,
            ).stdout  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/tsa"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("credentials", ["flags", "development"])
def test_files_are_time_stamped_by_the_given_authority(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tsa_url: str,
    credentials: str,
) -> None:
    extra: list[str] = []
    if credentials == "flags":
        chain, key = locked
        extra += ["--signing-cert", str(chain), "--signing-key", str(key)]
        monkeypatch.setenv("SDKIT_SIGNING_KEY_PASSWORD", PASSWORD)
        monkeypatch.setenv("SDKIT_TIMESTAMP_URL", tsa_url)
    else:
        extra += ["--timestamp-url", tsa_url]
    stamped, plain = tmp_path / "stamped.png", tmp_path / "plain.png"
    result = _generate(runner, tiny_sd_path, stamped, *extra)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert verify(stamped).signed_at is not None  # the authority's time, in the signature
    monkeypatch.delenv("SDKIT_TIMESTAMP_URL", raising=False)
    without = [a for a in extra if a not in ("--timestamp-url", tsa_url)]
    assert _generate(runner, tiny_sd_path, plain, *without).exit_code == 0  # type: ignore[attr-defined]
    assert verify(plain).signed_at is None


@pytest.mark.parametrize("source", ["flag", "environment"])
@pytest.mark.parametrize("credentials", ["flags", "development"])
def test_unreachable_time_stamp_authority_is_exit_5_and_no_file(
    runner: CliRunner,
    tiny_sd_path: Path,
    tmp_path: Path,
    locked: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    credentials: str,
) -> None:
    url = _closed_port_url()
    extra: list[str] = []
    if credentials == "flags":
        chain, key = locked
        extra += ["--signing-cert", str(chain), "--signing-key", str(key)]
        monkeypatch.setenv("SDKIT_SIGNING_KEY_PASSWORD", PASSWORD)
    if source == "flag":
        extra += ["--timestamp-url", url]
    else:
        monkeypatch.setenv("SDKIT_TIMESTAMP_URL", url)
    out = tmp_path / "a.png"
    result = _generate(runner, tiny_sd_path, out, "-n", "2", *extra)
    text = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 5, text  # type: ignore[attr-defined]
    # the URL reached c2pa-python's signer, whose HTTP request failed: no unstamped file
    assert f"no time-stamp from {url}" in text and "SDKIT_TIMESTAMP_URL" in text
    assert "Traceback" not in text
    assert not list(tmp_path.glob("a*.png"))


def test_a_time_stamp_url_that_is_not_http_is_refused_before_the_model_loads(
    runner: CliRunner, tmp_path: Path
) -> None:
    args = ["generate", "x", "-m", "acme/absent", "-o", str(tmp_path / "a.png")]
    result = runner.invoke(cli, [*args, "--timestamp-url", "ftp://tsa.example"])
    assert result.exit_code == 5 and "is not http(s)" in result.output, result.output


# -- --quality -------------------------------------------------------------------------------


def test_quality_sets_jpeg_quality(runner: CliRunner, tiny_sd_path: Path, tmp_path: Path) -> None:
    sizes = {}
    for quality in (20, 95):
        out = tmp_path / f"q{quality}.jpg"
        result = _generate(runner, tiny_sd_path, out, "--seed", "3", "--quality", str(quality))
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        sizes[quality] = out.stat().st_size
    assert sizes[20] < sizes[95]
    bad = runner.invoke(cli, ["generate", "x", "--quality", "0", "-o", str(tmp_path / "b.jpg")])
    assert bad.exit_code == 2 and "quality" in bad.output


# -- --prompts --------------------------------------------------------------------------------


def _prompts(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prompts_file_names_files_predictably(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path
) -> None:
    prompts = _prompts(
        tmp_path,
        "a red circle",
        "",
        '{"prompt": "a blue square", "num_images": 2, "steps": 2}',
        '{"prompt": "a green dot", "seed": 7, "negative_prompt": "blur"}',
    )
    out = tmp_path / "out"
    out.mkdir()
    args = ["generate", "--prompts", str(prompts), "-m", str(tiny_sd_path), "--steps", "1"]
    result = runner.invoke(cli, [*args, "--seed", "10", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    names = ["00000-10.png", "00001-11.png", "00002-12.png", "00003-7.png"]
    assert sorted(p.name for p in out.iterdir()) == names
    rows = json.loads(result.stdout)
    assert [(Path(r["path"]).name, r["prompt"], r["seed"]) for r in rows] == [
        ("00000-10.png", "a red circle", 10),
        ("00001-11.png", "a blue square", 11),
        ("00002-12.png", "a blue square", 12),
        ("00003-7.png", "a green dot", 7),
    ]
    assert "Steps: 2" in read_infotext(out / "00001-11.png")
    assert "Steps: 1" in read_infotext(out / "00000-10.png")
    assert "Negative prompt: blur" in read_infotext(out / "00003-7.png")
    assert read_manifest((out / "00003-7.png").read_bytes(), "image/png").state == "valid"
    # the same run again: every name exists, refused before any work; --overwrite replaces
    again = runner.invoke(cli, [*args, "--seed", "10", "-o", str(out)])
    assert again.exit_code == 4 and "exists" in again.output, again.output
    replaced = runner.invoke(cli, [*args, "--seed", "10", "-o", str(out), "--overwrite", "-q"])
    assert replaced.exit_code == 0, replaced.output


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["ok", "{not json"], "line 2: is not valid JSON"),
        (["ok", "ok", '{"prompt": "x", "stpes": 3}'], "line 3: has an unknown key 'stpes'"),
        (['{"steps": 3}'], "line 1: has no 'prompt'"),
        (['{"prompt": 5}'], "line 1: invalid prompt=5"),
        (['{"prompt": "x", "steps": 0}'], "line 1: invalid steps=0"),
        (['{"prompt": "x", "width": 100}'], "line 1: invalid width=100"),
        (['{"prompt": "x", "seed": "five"}'], "line 1: invalid seed='five'"),
        (['{"prompt": "x", "init_image": "absent.png"}'], "line 1: invalid init_image"),
        (['{"prompt": "x", "sampler": "Euler z"}'], "line 1: invalid sampler='Euler z'"),
        (['{"prompt": "x", "schedule": "karras"}'], "line 1: invalid schedule='karras'"),
        (["", "  "], "holds no prompt"),
    ],
)
def test_a_bad_line_is_exit_2_naming_it_before_the_model_loads(
    runner: CliRunner, tmp_path: Path, lines: list[str], problem: str
) -> None:
    prompts = _prompts(tmp_path, *lines)
    # acme/absent would be exit 6: the file is checked before the model is looked for
    args = ["generate", "--prompts", str(prompts), "-m", "acme/absent", "-o", str(tmp_path)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert problem in result.output and "Traceback" not in result.output


def test_batch_output_folder_is_checked_before_the_model_loads(
    runner: CliRunner, tmp_path: Path
) -> None:
    prompts = _prompts(tmp_path, "a", "b")
    base = ["generate", "--prompts", str(prompts), "-m", "acme/absent"]
    missing = runner.invoke(cli, [*base, "-o", str(tmp_path / "absent")])
    assert missing.exit_code == 4 and "does not exist" in missing.output, missing.output
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"")
    not_folder = runner.invoke(cli, [*base, "-o", str(a_file)])
    assert not_folder.exit_code == 4 and "not a folder" in not_folder.output
    usage = runner.invoke(cli, ["generate", "x", "--prompts", str(prompts)])
    assert usage.exit_code == 2 and "one of the two" in usage.output
    fmt = runner.invoke(cli, ["generate", "x", "--format", "webp"])
    assert fmt.exit_code == 2 and "--format goes with --prompts" in fmt.output


def test_batch_format_and_quality(runner: CliRunner, tiny_sd_path: Path, tmp_path: Path) -> None:
    prompts = _prompts(tmp_path, "a", "b")
    args = ["generate", "--prompts", str(prompts), "-m", str(tiny_sd_path), "--steps", "1"]
    result = runner.invoke(cli, [*args, "--seed", "0", "--format", "webp", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.glob("*.webp")} == {"00000-0.webp", "00001-1.webp"}


# -- generate_many: the output folder, before any denoising -----------------------------------


class _NoDenoising:
    """A Renderer that fails the test if anything is denoised."""

    progress = False

    def _check(self, prompt: str, options: object) -> object:
        return None

    def _denoise(self, prompt: str, options: object) -> object:
        raise AssertionError("denoised before the output folder was checked")


def test_generate_many_checks_the_folder_before_denoising(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    for folder in (a_file, a_file / "sub"):
        with pytest.raises(OutputError):
            generate_many(_NoDenoising(), ["a", "b"], folder, seed=1)  # type: ignore[arg-type]
    (tmp_path / "00001-2.png").write_bytes(b"")
    with pytest.raises(OutputError, match="1 of the 2 files exist"):
        generate_many(_NoDenoising(), ["a", "b"], tmp_path, seed=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError):
        generate_many(_NoDenoising(), [BatchPrompt("a", num_images=0)], tmp_path)  # type: ignore[arg-type]


def test_output_paths_follow_each_prompts_count_and_seed() -> None:
    prompts = [BatchPrompt("a", num_images=2), "b", BatchPrompt("c", seed=50)]
    names = [p.name for p in output_paths(prompts, "out", seed=9, fmt="jpeg")]
    assert names == ["00000-9.jpg", "00001-10.jpg", "00002-11.jpg", "00003-50.jpg"]


def test_ctrl_c_in_a_batch_exits_130_naming_the_finished_files(
    runner: CliRunner, tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdkit.generator import Generator

    denoise = Generator._denoise
    calls: list[str] = []

    def interrupted_on_the_second_prompt(self: Generator, prompt: str, options: object) -> object:
        calls.append(prompt)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return denoise(self, prompt, options)  # type: ignore[arg-type]

    monkeypatch.setattr(Generator, "_denoise", interrupted_on_the_second_prompt)
    prompts = _prompts(tmp_path, "a", "b", "c")
    out = tmp_path / "out"
    out.mkdir()
    args = ["generate", "--prompts", str(prompts), "-m", str(tiny_sd_path), "--steps", "1"]
    result = runner.invoke(cli, [*args, "--seed", "4", "-o", str(out), "-q"])
    assert result.exit_code == 130, result.output
    assert f"interrupted: kept {out / '00000-4.png'}" in result.output
    assert [p.name for p in out.iterdir()] == ["00000-4.png"]  # whole and signed, nothing else
    assert read_manifest((out / "00000-4.png").read_bytes(), "image/png").state == "valid"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"ok\n\xff\xfe bad bytes\n", "line 2: is not UTF-8 text"),
        (b'{"prompt": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "line 1:"),
        (b'{"prompt": "x", "steps": ' + b"9" * 5000 + b"}\n", "line 1: is not valid JSON"),
        (b'{"prompt": "x", "guidance_scale": NaN}\n', "line 1: invalid guidance_scale=nan"),
        (b'{"prompt": ["a cat"]}\n', "line 1: invalid prompt=['a cat']"),
        (b'{"prompt": "x", "num_images": 100000}\n', "line 1: invalid num_images=100000"),
    ],
)
def test_a_hostile_prompts_file_is_a_usage_error_naming_the_line(
    runner: CliRunner, tmp_path: Path, data: bytes, problem: str
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(data)
    args = ["generate", "--prompts", str(prompts), "-m", "acme/absent", "-o", str(tmp_path)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert problem in result.output and "Traceback" not in result.output


def test_a_prompts_file_over_the_cap_is_refused_unread(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sdkit.cli.batch

    monkeypatch.setattr(sdkit.cli.batch, "MAX_BYTES", 1024)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n" * 1000)
    args = ["generate", "--prompts", str(prompts), "-m", "acme/absent", "-o", str(tmp_path)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and "is over" in result.output, result.output
