"""Shared fixtures: tiny pipelines built once per session, saved to disk."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Tests never touch the network: the hub is read from the local cache only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Development signing credentials and other per-user settings: never the real home folder.
# Both folders are this run's own and are removed when it ends.
_RUN_DIRS = [tempfile.mkdtemp(prefix="sdkit-config-")]
os.environ["SDKIT_CONFIG_DIR"] = _RUN_DIRS[0]
if "SDKIT_CACHE" not in os.environ:
    _RUN_DIRS.append(tempfile.mkdtemp(prefix="sdkit-cache-"))
    os.environ["SDKIT_CACHE"] = _RUN_DIRS[1]
for _folder in _RUN_DIRS:
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)
os.environ.pop("SDKIT_TRUST_ANCHORS", None)
os.environ.pop("SDKIT_SIGNING_CERT", None)
os.environ.pop("SDKIT_SIGNING_KEY", None)
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from optout_server import Server  # noqa: E402 (after the environment)
from tiny_models import build_tiny_sd, build_tiny_sdxl  # noqa: E402 (after the environment)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A real aiohttp server on 127.0.0.1 for opt-out checks, one per test module."""
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved SD 1.x-style diffusers folder (random weights, real classes, 64x64 native)."""
    return build_tiny_sd(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved SDXL-style diffusers folder (two text encoders, random weights)."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("models"))
