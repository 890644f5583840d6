"""The opt-out checker's HTTP requests: one GET of a work, and each origin's site files.

* :meth:`Fetcher.get`: one GET without following redirects (the checker follows them, each
  hop checked against the SSRF policy); the body read only as far as needed
  (:func:`~provenance.optout.network.read_body`). Failures become an ``unknown`` signal.
* :meth:`Fetcher.site_policy`: robots.txt, ai.txt and tdmrep.json of an origin, fetched once
  even when many checks ask at once, parsed off the event loop, and cached (the
  :data:`SITE_CACHE` most recently used origins).

The session, and the loop that runs the checks, belong to
:class:`~provenance.optout.checker.OptOutChecker`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from .decision import Signal
from .network import (
    OPT_OUT_HEADERS,
    REDIRECTS,
    Fetched,
    describe_failure,
    is_refused,
    read_body,
    read_upto,
    request_url,
    url_refusal,
)
from .sitefiles import MAX_SITE_FILE, SITE_FILES, SitePolicy

__all__ = ["SITE_CACHE", "Fetcher"]

SITE_CACHE = 65_536  # origins kept


class Fetcher:
    """HTTP for one checker: its limits, and its cache of site policies.

    Args:
        timeout: seconds for each request, connection to last byte (named in failures).
        max_redirects: redirects followed when fetching a site file.
        allow_private: allow loopback, private and link-local addresses (SSRF policy).
        max_body: bytes read of an image body at most.
    """

    def __init__(
        self, *, timeout: float, max_redirects: int, allow_private: bool, max_body: int
    ) -> None:
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.allow_private = allow_private
        self.max_body = max_body
        self._sites: OrderedDict[str, SitePolicy] = OrderedDict()
        self._pending: dict[str, asyncio.Task[tuple[SitePolicy, int]]] = {}

    async def get(
        self, url: str, session: aiohttp.ClientSession, *, whole_image: bool
    ) -> Fetched | Signal:
        """GET ``url`` without following redirects; failures become an ``unknown`` signal.

        ``whole_image``: read an image body whole (a registry's perceptual hash needs it), not
        only its metadata."""
        try:
            async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
                headers = {
                    name: tuple(response.headers.getall(name, ())) for name in OPT_OUT_HEADERS
                }
                if response.status in REDIRECTS and "Location" in response.headers:
                    return Fetched(
                        url, response.status, headers, location=response.headers["Location"]
                    )
                if response.status >= 300:
                    return Fetched(url, response.status, headers)
                kind, body, extent = await read_body(
                    response, max_body=self.max_body, whole_image=whole_image
                )
                return Fetched(
                    url,
                    response.status,
                    headers,
                    kind=kind,
                    body=body,
                    extent=extent,
                    charset=response.charset,
                )
        except Exception as exc:
            return Signal("fetch", "unknown", url, describe_failure(exc, self.timeout))

    async def site_policy(
        self, origin: str, session: aiohttp.ClientSession
    ) -> tuple[SitePolicy, int]:
        """The origin's site files: cached, fetched once even when many checks ask at once."""
        if origin in self._sites:
            self._sites.move_to_end(origin)
            return self._sites[origin], 0
        task = self._pending.get(origin)
        if task is not None:
            policy, _ = await asyncio.shield(task)
            return policy, 0
        task = asyncio.ensure_future(self._fetch_site(origin, session))
        self._pending[origin] = task
        try:
            policy, made = await asyncio.shield(task)
        finally:
            self._pending.pop(origin, None)
        self._sites[origin] = policy
        if len(self._sites) > SITE_CACHE:
            self._sites.popitem(last=False)
        return policy, made

    async def _fetch_site(
        self, origin: str, session: aiohttp.ClientSession
    ) -> tuple[SitePolicy, int]:
        results = await asyncio.gather(
            *(self._fetch_text(origin + path, session) for path in SITE_FILES.values())
        )
        fetched = {
            name: (status, body)
            for name, (status, body, _) in zip(SITE_FILES, results, strict=True)
        }
        policy = await asyncio.to_thread(SitePolicy.parse, origin, fetched)  # ~0.5 s at the caps
        return policy, sum(made for _, _, made in results)

    async def _fetch_text(self, url: str, session: aiohttp.ClientSession) -> tuple[int, bytes, int]:
        """(status, body or error text, requests made) of a site file, following redirects."""
        made, url = 0, request_url(url)
        for _ in range(self.max_redirects + 1):
            refused = url_refusal(url, self.allow_private)
            if refused:
                return -1, refused.encode(), made
            made += 1
            try:
                async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        url = request_url(urljoin(url, response.headers["Location"]))
                        continue
                    if response.status >= 300:
                        return response.status, b"", made
                    return response.status, await read_upto(response, MAX_SITE_FILE), made
            except Exception as exc:  # a reason, never a traceback
                code = -1 if is_refused(exc) else 0
                return code, describe_failure(exc, self.timeout).encode(), made
        return 310, b"", made
