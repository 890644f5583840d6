"""Loads the fuzzing budget (hypothesis profile ``ci``, or ``long`` with ``SDKIT_FUZZ=long``).

The profiles, the time and memory bound and the allowed errors live in :mod:`fuzzing`, which the
test modules import; see docs/fuzzing.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fuzzing  # registers and loads the hypothesis profile

__all__ = ["fuzzing"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A falsifying example may be 100 KB long: hypothesis warns about its repr, and warnings are
    errors in this project; here the warning would hide the finding it reports."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:Generating overly large repr"))
