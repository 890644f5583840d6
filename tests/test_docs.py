"""Docs as tests: every ```bash, ```sh and ```python block of README.md and docs/*.md runs.

Each block is one test, named by its file and the line of its opening fence
(``docs/guide.md:123``). The blocks of one file run in document order, in one temporary working
folder of that file, with the Python blocks sharing one namespace (a later block uses the names
an earlier one made). Running one block alone first runs the blocks above it.

A block that cannot run offline on a CPU carries, on the line just before its opening fence::

    <!-- docs-test: skip: <reason> -->

and is reported as skipped with that reason; there are no other skips.

Shell blocks: a block runs as one ``bash`` script (its exports and here-documents work) with this
environment's ``sdkit`` first on ``PATH``; each command (``\\``-continued lines joined) must exit
0, unless its trailing comment says otherwise (``sdkit verify x.png   # exit 3``), and nothing
may print a traceback. Blocks that only show output or a synopsis use ```text and are not run.

Isolation: a file's blocks get their own config folder (``SDKIT_CONFIG_DIR``), cache, ``HOME``
and no ``SDKIT_STORE``, trust anchors or signing credentials from the environment; the hub is
offline (tests/conftest.py) and generation runs on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "shell", "console")
LANGUAGES = (*SHELLS, "python", "py")

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*['\"]?(?P<word>\w+)['\"]?")
_EXIT = re.compile(r"#.*\bexit(?: code)?\s+(?P<code>\d+)")
#: Environment variables that would carry a user's setup into the examples.
_CLEARED = (
    "SDKIT_STORE",
    "SDKIT_TRUST_ANCHORS",
    "SDKIT_SIGNING_CERT",
    "SDKIT_SIGNING_KEY",
    "SDKIT_SIGNING_KEY_PASSWORD",
    "SDKIT_TIMESTAMP_URL",
    "SDKIT_OPTOUT_REGISTRY",
    "SDKIT_MODELS",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    source: str
    skip: str | None  # the reason of its skip marker

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELLS


def parse_blocks(path: Path) -> list[Block]:
    """The runnable fenced blocks of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening["fence"], opening["lang"].lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if lang in LANGUAGES:
            marker = _SKIP.match(lines[i - 1]) if i > 0 else None
            indent = len(opening["indent"])
            body = "\n".join(line[indent:] for line in lines[i + 1 : end])
            lang = "python" if lang == "py" else lang
            blocks.append(Block(path, i + 1, lang, body, marker["reason"] if marker else None))
        i = end + 1
    return blocks


BLOCKS = [block for path in DOC_FILES for block in parse_blocks(path)]


def shell_commands(source: str) -> list[str]:
    """The commands of a shell block, each whole: ``\\`` continuations joined, a here-document
    kept with its command; comment-only and blank lines left out."""
    commands: list[str] = []
    lines = source.splitlines()
    pending = ""
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        heredoc = _HEREDOC.search(command)
        if heredoc:  # the body and its terminator belong to the command
            while i < len(lines):
                command += "\n" + lines[i]
                i += 1
                if lines[i - 1].strip() == heredoc["word"]:
                    break
        if command and not command.startswith("#"):
            commands.append(command)
    if pending.strip():
        commands.append(pending.strip())
    return commands


def shell_script(source: str) -> str:
    """The block as one bash script (its exports and files carry from one command to the next)
    that stops at the first command whose exit code is not the one the doc states."""
    checked = []
    for command in shell_commands(source):
        want = expected_exit(command.split("\n")[0])
        quoted = command.split("\n")[0].replace("'", "'\\''")
        checked.append(
            f"{command}\n__rc=$?; if [ $__rc -ne {want} ]; then "
            f"echo 'docs-test: exit '$__rc', the doc says {want}: {quoted}' >&2; exit 99; fi"
        )
    return "\n".join(checked) + "\n"


def expected_exit(command: str) -> int:
    """The exit code a command's trailing comment states (``# exit 3``), else 0."""
    found = _EXIT.search(command)
    return int(found["code"]) if found else 0


@dataclass
class DocRun:
    """The state of one document's run: its folder, its Python namespace, how far it got."""

    folder: Path
    namespace: dict[str, object] = field(default_factory=dict)
    done: dict[int, str | None] = field(default_factory=dict)  # block line -> failure or None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(
            SDKIT_CONFIG_DIR=str(self.folder / ".config"),
            SDKIT_CACHE=str(self.folder / ".cache"),
            HOME=str(self.folder / ".home"),
            HF_HOME=os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
            HF_HUB_OFFLINE="1",
            CUDA_VISIBLE_DEVICES="",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            COLUMNS="120",
        )
        return env


@pytest.fixture(scope="session")
def doc_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, DocRun]:
    """One run per document, shared by the tests of its blocks."""
    return {path: DocRun(tmp_path_factory.mktemp(path.stem)) for path in DOC_FILES}


def _run_shell(block: Block, run: DocRun) -> None:
    done = subprocess.run(
        ["bash", "-c", shell_script(block.source)],
        cwd=run.folder,
        env=run.env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert "Traceback (most recent call last)" not in done.stdout + done.stderr, output
    assert done.returncode == 0, output


def _run_python(block: Block, run: DocRun) -> None:
    code = compile(block.source, block.id, "exec")
    exec(code, run.namespace)  # the documentation's own examples


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The CPU only (as on a machine without a GPU), whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    yield monkeypatch


def _run_block(block: Block, run: DocRun, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Run one block in its document's state; the failure's text, or None."""
    with monkeypatch.context() as patch:
        for key, value in run.env.items():
            if os.environ.get(key) != value and key != "PATH":
                patch.setenv(key, value)
        for key in _CLEARED:
            patch.delenv(key, raising=False)
        (run.folder / ".home").mkdir(exist_ok=True)
        patch.chdir(run.folder)
        try:
            (_run_shell if block.is_shell else _run_python)(block, run)
        except Exception as exc:  # reported as this block's failure
            return "".join(traceback.format_exception(exc))[-6000:]
    return None


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(
    block: Block, doc_runs: dict[Path, DocRun], isolated: pytest.MonkeyPatch
) -> None:
    """The block runs as the document shows it (after the blocks above it in its file)."""
    if block.skip is not None:
        pytest.skip(block.skip)
    run = doc_runs[block.path]
    for earlier in BLOCKS:
        if earlier.path != block.path or earlier.skip is not None or earlier.line >= block.line:
            continue
        if earlier.line not in run.done:
            run.done[earlier.line] = _run_block(earlier, run, isolated)
        if run.done[earlier.line] is not None:
            pytest.fail(f"an earlier block of the file, {earlier.id}, failed", pytrace=False)
    if block.line not in run.done:
        run.done[block.line] = _run_block(block, run, isolated)
    if run.done[block.line] is not None:
        pytest.fail(f"{block.id}:\n{run.done[block.line]}", pytrace=False)


# -- the collector itself -------------------------------------------------------------------


def test_parse_blocks_reads_fences_markers_and_indents(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip: needs a GPU -->\n```bash\n"
        "nvidia-smi\n```\n\n```text\nnot run\n```\n\n1. item\n\n   ```sh\n   echo hi\n   ```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(doc)
    assert [(b.line, b.lang, b.source, b.skip) for b in blocks] == [
        (3, "python", "x = 1", None),
        (8, "bash", "nvidia-smi", "needs a GPU"),
        (18, "sh", "echo hi", None),
    ]


def test_shell_commands_and_expected_exit_codes() -> None:
    source = (
        "# a comment\nsdkit generate 'a' \\\n    --seed 1\n\nsdkit verify x.png   # exit 3\n"
        "cat > a.ext <<'EXT'\nkeyUsage = x\nEXT\necho done\n"
    )
    commands = shell_commands(source)
    assert commands == [
        "sdkit generate 'a'      --seed 1",
        "sdkit verify x.png   # exit 3",
        "cat > a.ext <<'EXT'\nkeyUsage = x\nEXT",
        "echo done",
    ]
    assert [expected_exit(c) for c in commands] == [0, 3, 0, 0]
    assert expected_exit("sdkit optout registry check c.jpg   # exit 1 on a match") == 1


def test_shell_script_checks_each_exit_code_and_keeps_exports(tmp_path: Path) -> None:
    def run(source: str) -> subprocess.CompletedProcess[str]:
        script = shell_script(source)
        return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)

    ok = run('export A=1\ntest "$A" = 1\nfalse   # exit 1\ncat > f <<EOF\nx\nEOF\ngrep -q x f')
    assert ok.returncode == 0, ok.stderr
    bad = run("false\necho never")
    assert bad.returncode == 99 and "the doc says 0: false" in bad.stderr and not bad.stdout
    wrong = run("true   # exit 3")
    assert wrong.returncode == 99 and "exit 0, the doc says 3" in wrong.stderr


def test_every_skip_gives_a_reason() -> None:
    for block in BLOCKS:
        if block.skip is not None:
            assert len(block.skip) > 10, f"{block.id}: say why it cannot run here"


def test_docs_have_runnable_blocks() -> None:
    assert sum(b.skip is None for b in BLOCKS) >= 6


# -- lists in the docs that must follow the code ---------------------------------------------


def _schedule_names() -> tuple[list[str], list[str]]:
    """The schedule types ``sdkit.samplers`` accepts, and their other spellings."""
    import sdkit.samplers as samplers

    try:
        from sdkit.samplers.schedules import SCHEDULE_ALIASES as aliases  # type: ignore
    except ImportError:
        aliases = vars(samplers).get("_SCHEDULE_ALIASES", {})
    names = list(samplers.SCHEDULES)
    return names, [a for a in aliases if a != "automatic"]  # "Automatic": A1111's `default`


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_guide_lists_every_schedule_type() -> None:
    names, aliases = _schedule_names()
    section = _section((ROOT / "docs" / "guide.md").read_text(encoding="utf-8"), "## Samplers")
    listed = set(re.findall(r"`([a-z_0-9]+)`", section))
    assert not [n for n in names if n not in listed], "schedule types missing from docs/guide.md"
    assert not [a for a in aliases if a not in listed], "schedule spellings missing from the guide"


def test_cli_reference_lists_every_schedule_type() -> None:
    names, _ = _schedule_names()
    row = next(
        line
        for line in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `--schedule")
    )
    listed = set(re.findall(r"[a-z_0-9]+", row.split("|")[3]))
    assert not [n for n in names if n not in listed], "schedule types missing from docs/cli.md"
