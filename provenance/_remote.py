"""Remote C2PA manifests: fetched by sdkit under its SSRF policy, never by c2pa-rs.

A file may carry only a pointer to its manifest (XMP ``dcterms:provenance``: a URL). c2pa-rs
can fetch that URL itself, but with its own HTTP client: no SSRF policy, no limit of ours on
size or time. So sdkit keeps c2pa-rs's ``verify.remote_manifest_fetch`` off, and when asked
(``verify(..., fetch_remote=True)`` / ``sdkit verify --fetch-remote``) fetches the URL that
c2pa-rs names with aiohttp, through the opt-out checker's guard
(:mod:`provenance.optout.network`):

* http and https only, no credentials in the URL;
* loopback, private, link-local, multicast, reserved and other non-public addresses refused
  in any spelling, when the host resolves and again on the address each socket connects to,
  unless ``allow_private=True`` (intranets, tests);
* at most :data:`MAX_REDIRECTS` redirects, each hop checked the same way;
* at most :data:`MAX_MANIFEST` bytes, and :data:`TIMEOUT` seconds for the whole fetch.

The bytes are then validated by c2pa-python as the file's manifest (its hash binding must
match the file). A fetch that fails says why; it never raises.

Example:
    >>> fetch_manifest("http://127。0。0。1/m.c2pa").failure.split(" (")[0]
    "refused: 127.0.0.1 is a loopback address, written '127。0。0。1'"
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin

__all__ = ["MAX_MANIFEST", "MAX_REDIRECTS", "TIMEOUT", "RemoteManifest", "fetch_manifest"]

#: Bytes of a remote manifest read at most (a manifest with a large thumbnail is < 1 MB).
MAX_MANIFEST = 4 * 1024 * 1024
#: Seconds for the whole fetch, redirects included.
TIMEOUT = 10.0
#: Redirects followed at most.
MAX_REDIRECTS = 5
_USER_AGENT = "sdkit-verify (+https://github.com/sdkit/sdkit)"


@dataclass(frozen=True)
class RemoteManifest:
    """The outcome of fetching a remote manifest.

    Attributes:
        url: the URL the file names.
        data: the manifest store's bytes, or None when it was not fetched.
        failure: why it was not fetched (the SSRF refusal, an HTTP status, a timeout...).
    """

    url: str
    data: bytes | None = field(default=None, repr=False)
    failure: str | None = None


def fetch_manifest(
    url: str,
    *,
    allow_private: bool = False,
    timeout: float = TIMEOUT,
    max_bytes: int = MAX_MANIFEST,
) -> RemoteManifest:
    """Fetch the manifest store at ``url`` under the SSRF policy (see the module docstring).

    Blocking; safe to call from inside a running event loop (the fetch then runs in a thread).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_bounded(url, allow_private, timeout, max_bytes))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _bounded(url, allow_private, timeout, max_bytes)).result()


async def _bounded(url: str, allow_private: bool, timeout: float, max_bytes: int) -> RemoteManifest:
    from .optout.network import describe_failure

    try:
        return await asyncio.wait_for(_fetch(url, allow_private, timeout, max_bytes), timeout)
    except Exception as exc:  # a reason, never a traceback
        return RemoteManifest(url, failure=describe_failure(exc, timeout))


async def _fetch(url: str, allow_private: bool, timeout: float, max_bytes: int) -> RemoteManifest:
    import aiohttp

    from .optout.network import (
        REDIRECTS,
        connector_options,
        describe_failure,
        read_upto,
        url_refusal,
    )

    options = connector_options(concurrency=4, per_host=4, allow_private=allow_private)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(**options),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": _USER_AGENT},
    )
    current = url
    async with session:
        for _ in range(MAX_REDIRECTS + 1):
            refused = url_refusal(current, allow_private)
            if refused:
                return RemoteManifest(url, failure=refused)
            try:
                async with session.get(current, allow_redirects=False) as response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        current = urljoin(current, response.headers["Location"])
                        continue
                    if response.status != 200:
                        return RemoteManifest(url, failure=f"HTTP {response.status} from {current}")
                    data = await read_upto(response, max_bytes + 1)
            except Exception as exc:  # a reason, never a traceback
                return RemoteManifest(url, failure=describe_failure(exc, timeout))
            if len(data) > max_bytes:
                return RemoteManifest(url, failure=f"it is larger than {max_bytes} bytes")
            if not data:
                return RemoteManifest(url, failure=f"{current} answered an empty body")
            return RemoteManifest(url, data)
    return RemoteManifest(url, failure=f"more than {MAX_REDIRECTS} redirects")
