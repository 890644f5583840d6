"""The public surface and the import rules of docs/architecture.md, checked.

* Every package's ``__all__`` names exactly its public members, as httpx's own test does: a
  name added to ``__init__`` without ``__all__`` (or the reverse) fails here.
* Every module's ``__all__`` resolves.
* The import contracts in ``pyproject.toml`` (``[tool.importlinter]``: provenance never imports
  sdkit; no cycles between sibling modules) hold, and they fail when broken: a copy of the
  packages with one forbidden import, and one with a cycle, is checked too.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = [
    "sdkit",
    "sdkit.errors",
    "provenance",
    "provenance.errors",
    "provenance.watermark",
    "provenance.optout",
    "provenance.detector",
]
# Names a package may expose without listing them (dunder metadata).
_DUNDER_EXPORTS = {"__version__"}


def _public_members(module: ModuleType) -> set[str]:
    """Names bound in the module that a user may import: no modules, no typing helpers."""
    root = module.__name__.split(".")[0]
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") and name not in _DUNDER_EXPORTS:
            continue
        if isinstance(value, ModuleType) or name == "TYPE_CHECKING":
            continue  # a submodule bound by an import: reachable as a module, not a name
        owner = getattr(value, "__module__", None)
        if isinstance(owner, str) and not owner.startswith(root):
            continue  # typing.Any, __future__.annotations and the like
        names.add(name)
    return names


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_members(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice"
    for item in exported:
        assert getattr(module, item, None) is not None, f"{name}.{item} is in __all__ but missing"
    # Lazily loaded names (module __getattr__) are listed but not bound until first use.
    assert _public_members(module) <= set(exported), (
        f"{name} binds public names missing from __all__: "
        f"{sorted(_public_members(module) - set(exported))}"
    )


def _all_modules() -> list[str]:
    found = []
    for package in ("sdkit", "provenance"):
        root = importlib.import_module(package)
        found.append(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            found.append(info.name)
    return sorted(found)


def test_every_modules_all_resolves() -> None:
    missing = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for item in getattr(module, "__all__", ()):
            if not hasattr(module, item):
                missing.append(f"{name}.{item}")
    assert missing == []


def _lint(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    only = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *only, str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.fixture(scope="module")
def copy_of_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two packages' Python sources and the contracts, in a folder of their own."""
    root = tmp_path_factory.mktemp("contracts")
    for package in ("sdkit", "provenance"):
        shutil.copytree(
            ROOT / package,
            root / package,
            ignore=lambda folder, names: [
                n for n in names if not n.endswith(".py") and not (Path(folder) / n).is_dir()
            ],
        )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_import_contract_fails_when_provenance_imports_sdkit(copy_of_packages: Path) -> None:
    module = copy_of_packages / "provenance" / "fingerprint.py"
    original = module.read_text()
    module.write_text(
        original
        + "\n\ndef _leak() -> object:\n    import sdkit.recipe\n\n    return sdkit.recipe\n"
    )
    try:
        result = _lint(copy_of_packages, "provenance-alone")
    finally:
        module.write_text(original)
    assert result.returncode == 1
    assert "provenance.fingerprint -> sdkit.recipe" in result.stdout
    assert "Contracts: 0 kept, 1 broken." in result.stdout


def test_import_contract_fails_on_a_cycle(copy_of_packages: Path) -> None:
    # errors.py is the leaf every module imports; make it import one of them back,
    # under TYPE_CHECKING, the way the two cycles the contract was written for were kept alive.
    module = copy_of_packages / "sdkit" / "errors.py"
    original = module.read_text()
    module.write_text(
        original
        + "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import recipe\n"
    )
    try:
        result = _lint(copy_of_packages, "no-cycles")
    finally:
        module.write_text(original)
    assert result.returncode == 1
    assert ".errors -> .recipe" in result.stdout
