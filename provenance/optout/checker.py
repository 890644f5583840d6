"""OptOutChecker: every opt-out signal for a URL, a file or an image, and one decision.

For a URL, in order (each redirect hop goes through steps 1-3 again, at most
``max_redirects`` times):

1. The origin's site files (robots.txt, ai.txt, tdmrep.json), fetched once per origin and
   cached. If robots.txt or ai.txt disallows the URL, the work itself is not fetched.
2. One GET of the work: its ``X-Robots-Tag`` and TDMRep headers; the body only as far as
   needed (a page's ``<head>``; a JPEG's metadata segments; other images whole, up to
   ``max_body``).
3. Inside the file: C2PA / CAWG training-and-mining, IPTC ``plus:DataMining``; and, with a
   registry, the perceptual-hash lookup (which needs the whole image).

Files on disk and PIL images go through step 3 only. See :mod:`provenance.optout.decision`
for how signals become a decision, and :mod:`provenance.optout.network` for the SSRF policy.
This module runs the checks (the session, the event loop, the walk of a URL's redirects, the
signals of files and images); :mod:`provenance.optout.fetcher` makes its HTTP requests and
caches site files, and :mod:`provenance.optout.targets` names its targets and failures.

Example:
    >>> from PIL import Image
    >>> OptOutChecker().check(Image.new("RGB", (8, 8))).verdict
    'allowed'
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import urljoin

import aiohttp
from PIL import Image

from ..errors import OptOutError
from .decision import Decision, OnError, Signal, decide
from .embedded import DEFAULT_USES, file_signals, jpeg_header_end, xmp_signals
from .fetcher import Fetcher
from .localfile import image_problem, read_regular_file
from .markup import AI_TRAINING_AGENTS, header_signals, html_signals, lower_agents
from .network import (
    Fetched,
    connector_options,
    origin_of,
    request_url,
    url_refusal,
)
from .registry import OptOutRegistry
from .sitefiles import escape_surrogates
from .targets import (
    Target,
    failure_reason,
    no_running_loop,
    require_target,
    target_name,
)

__all__ = ["DEFAULT_USER_AGENT", "OptOutChecker", "Target", "failure_reason", "off_loop"]


def _version() -> str:
    try:
        return metadata.version("sdkit")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


#: Sent with every request; the product token (before the slash) is what robots.txt matches.
DEFAULT_USER_AGENT = (
    f"sdkit-optout/{_version()} (+https://github.com/sdkit/sdkit/blob/main/docs/optout.md)"
)
_SITE_CACHE = 65_536  # origins kept
_log = logging.getLogger("provenance.optout")
#: The thread that runs pure-Python parsing off the event loop (see :func:`off_loop`).
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdkit-optout-parser")
P = ParamSpec("P")
R = TypeVar("R")


class OptOutChecker:
    """Checks URLs, files and images for opt-outs from AI training.

    Args:
        user_agent: sent with each request; its product token is ours in robots.txt, ai.txt and
            user-agent scoped directives.
        registry: an :class:`OptOutRegistry` (or its path) of opted-out works to match images
            against.
        on_error: ``"deny"`` (default): an unknown verdict (timeout, 5xx, unreadable) is not
            allowed; ``"allow"``: it is.
        allow_private: allow requests to loopback, private and link-local addresses (intranets,
            tests). Off by default (SSRF).
        timeout: seconds for each request, connection to last byte.
        max_redirects: redirects followed per URL (each hop checked).
        concurrency: connections open at once, in all.
        per_host: connections open at once to one host.
        max_body: bytes read of an image body at most.
        uses: training-and-mining uses that count (without ``c2pa.`` / ``cawg.``).
        ai_agents: AI-training crawler tokens whose robots.txt groups and scoped directives
            count as opt-outs.
        site_files: fetch robots.txt, ai.txt and tdmrep.json (on by default).
        verify_c2pa: validate C2PA manifests and name their state in the evidence (about 4x
            slower per manifest; the decision is the same either way).

    Raises:
        OptOutError: an option is out of range.
    """

    def __init__(
        self,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        registry: OptOutRegistry | str | os.PathLike[str] | None = None,
        on_error: OnError = "deny",
        allow_private: bool = False,
        timeout: float = 10.0,
        max_redirects: int = 5,
        concurrency: int = 256,
        per_host: int = 16,
        max_body: int = 32 * 1024 * 1024,
        uses: Sequence[str] = DEFAULT_USES,
        ai_agents: Sequence[str] = AI_TRAINING_AGENTS,
        site_files: bool = True,
        verify_c2pa: bool = False,
    ) -> None:
        checks = (
            (
                on_error in ("deny", "allow"),
                "on_error",
                on_error,
                "use 'deny' (fail closed) or 'allow'.",
            ),
            (timeout > 0, "timeout", timeout, "give seconds > 0."),
            (0 <= max_redirects <= 20, "max_redirects", max_redirects, "give 0 to 20."),
            (
                concurrency >= 1 and per_host >= 1,
                "concurrency",
                (concurrency, per_host),
                "give at least 1.",
            ),
            (max_body >= 1024, "max_body", max_body, "give at least 1024 bytes."),
            (
                bool(user_agent.strip()),
                "user_agent",
                user_agent,
                "name your crawler, e.g. 'mybot/1.0 (+https://…)'.",
            ),
        )
        for ok, name, value, hint in checks:
            if not ok:
                raise OptOutError(f"invalid {name}: {value!r}", hint=hint)
        self.user_agent = user_agent
        self.on_error: OnError = on_error
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.concurrency = concurrency
        self.per_host = per_host
        self.max_body = max_body
        self.uses = tuple(
            u.split(".", 1)[-1] if u.startswith(("c2pa.", "cawg.")) else u for u in uses
        )
        self.ai_agents = tuple(ai_agents)
        self.site_files = site_files
        self.verify_c2pa = verify_c2pa
        self._agents = lower_agents([user_agent])
        self._scoped = self._agents | lower_agents(ai_agents)
        self._owns_registry = registry is not None and not isinstance(registry, OptOutRegistry)
        self.registry: OptOutRegistry | None = (
            OptOutRegistry(registry)
            if registry is not None and not isinstance(registry, OptOutRegistry)
            else registry
        )
        self._fetcher = Fetcher(
            timeout=timeout,
            max_redirects=max_redirects,
            allow_private=allow_private,
            max_body=max_body,
        )
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> OptOutChecker:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> OptOutChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def open(self) -> None:
        """Open the HTTP session (``async with checker`` does it for you)."""
        if self._session is None:
            self._session = self._new_session()

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def close(self) -> None:
        """Close the registry this checker opened (idempotent)."""
        if self._owns_registry and self.registry is not None:
            self.registry.close()

    def _new_session(self) -> aiohttp.ClientSession:
        options = connector_options(
            concurrency=self.concurrency, per_host=self.per_host, allow_private=self.allow_private
        )
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(**options),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": self.user_agent},
            auto_decompress=True,
        )

    # -- public checks ---------------------------------------------------------------------
    def check(self, target: Target) -> Decision:
        """Check one URL, file path, encoded image or PIL image (blocking).

        Returns:
            The decision. Errors while fetching or reading, and any error that a server or a
            file makes a parser raise, make it ``unknown`` with the reason (never an exception).

        Raises:
            OptOutError: called inside a running event loop (use :meth:`acheck` there), or the
                target is not a URL, path, bytes or PIL image.
        """
        no_running_loop()
        require_target(target)
        return asyncio.run(self.acheck(target))

    def check_many(self, targets: Iterable[Target]) -> list[Decision]:
        """Check many targets concurrently (blocking); one decision each, in the order given.

        A target whose check fails, whatever it raised, gets an ``unknown`` decision with the
        reason; every other decision is kept.

        Raises:
            OptOutError: called inside a running event loop, or a target of the wrong type
                (before any target is checked).
        """
        no_running_loop()
        items = list(targets)
        for item in items:
            require_target(item)

        async def run() -> list[Decision]:
            out: list[Decision | None] = [None] * len(items)
            async with self:
                async for index, decision in self.acheck_many(items):
                    out[index] = decision
            return [d for d in out if d is not None]

        return asyncio.run(run())

    async def acheck(self, target: Target) -> Decision:
        """Check one target (see :meth:`check`); reuses the open session, if any."""
        require_target(target)
        if self._session is not None:
            return await self._dispatch(target, self._session)
        async with self._new_session() as session:
            return await self._dispatch(target, session)

    async def acheck_many(
        self, targets: Iterable[Target], *, limit: int | None = None
    ) -> AsyncIterator[tuple[int, Decision]]:
        """Check targets with at most ``limit`` (default: ``concurrency``) in flight.

        Yields:
            ``(index, decision)`` pairs as checks finish (not in input order); a target whose
            check fails gets an ``unknown`` decision with the reason.

        Raises:
            OptOutError: a target of the wrong type (the checks in flight are cancelled).
        """
        opened = self._session is None
        if opened:
            await self.open()
        pending: set[asyncio.Task[tuple[int, Decision]]] = set()
        try:
            for index, target in enumerate(targets):
                require_target(target)
                if len(pending) >= (limit or self.concurrency):
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        yield task.result()
                pending.add(asyncio.ensure_future(self._indexed(index, target)))
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
        finally:  # stopped early (an error, a break, a cancel): no check is left running
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if opened:
                await self.aclose()

    async def _indexed(self, index: int, target: Target) -> tuple[int, Decision]:
        assert self._session is not None
        return index, await self._dispatch(target, self._session)

    async def _dispatch(self, target: Target, session: aiohttp.ClientSession) -> Decision:
        """One target's decision. Whatever a server or a file makes the checks raise (a parser
        bug, RecursionError, MemoryError) becomes an ``unknown`` decision naming the exception,
        so one hostile target never costs the decisions of the others."""
        require_target(target)
        try:
            if isinstance(target, Image.Image):
                return await self._check_image(target)
            if isinstance(target, bytes):
                signals = await asyncio.to_thread(self._in_bytes, target, "<bytes>")
                return decide("<bytes>", signals, on_error=self.on_error)
            if isinstance(target, str) and "://" in target:
                return await self._check_url(target, session)
            return await asyncio.to_thread(self._check_path, Path(target))
        except Exception as exc:  # a reason, never a traceback (see the docstring)
            return self._failed(target, exc)

    def _failed(self, target: Target, exc: Exception) -> Decision:
        name = target_name(target)
        _log.debug("the check of %s failed", name, exc_info=exc)
        reason = Signal("fetch", "unknown", name, failure_reason(exc))
        return decide(name, [reason], on_error=self.on_error)

    # -- files and images ------------------------------------------------------------------
    def _check_path(self, path: Path) -> Decision:
        """A file on disk: a regular file of at most ``max_body`` bytes (never a FIFO or a
        device), read whole; one that is not an image is not allowed by default."""
        data = read_regular_file(path, self.max_body)
        if isinstance(data, str):
            why = Signal("fetch", "unknown", str(path), data)
            return decide(str(path), [why], on_error=self.on_error)
        return decide(str(path), self._in_bytes(data, str(path)), on_error=self.on_error)

    def _in_bytes(self, data: bytes, source: str) -> list[Signal]:
        """The signals of a whole file's bytes, led by an ``unknown`` one if it is no image."""
        problem = image_problem(data)
        unreadable = [Signal("fetch", "unknown", source, problem)] if problem else []
        if not data:
            return unreadable
        return unreadable + self._in_file(data, source, "whole")

    async def _check_image(self, image: Image.Image) -> Decision:
        """A PIL image: its XMP (up to the 1 MiB cap, ~0.15 s of parsing) on the parser thread,
        the registry's perceptual hash in a worker thread, so that the other checks go on."""
        signals: list[Signal] = []
        empty = image.width <= 0 or image.height <= 0
        if empty:
            text = f"the image has no pixels ({image.width}x{image.height})"
            signals.append(Signal("fetch", "unknown", "<image>", text))
        xmp = image.info.get("xmp")
        if isinstance(xmp, (bytes, str)):
            data = xmp.encode() if isinstance(xmp, str) else xmp
            signals += await off_loop(xmp_signals, data, "<image>")
        if not empty and self.registry is not None:
            signals += await asyncio.to_thread(self._registry_signals, image, "<image>")
        return decide("<image>", signals, on_error=self.on_error)

    def _in_file(self, data: bytes, source: str, extent: str) -> list[Signal]:
        if extent == "cut":
            text = f"the image is larger than max_body ({self.max_body} bytes): its metadata was not all read"
            return [Signal("fetch", "unknown", source, text)]
        if extent == "head" and data.startswith(b"\xff\xd8"):
            end = jpeg_header_end(data) or len(data)
            data = data[:end] + b"\xff\xd9"  # the metadata segments, closed: c2pa reads that
        signals = file_signals(
            data, source, uses=self.uses, complete=extent == "whole", verify=self.verify_c2pa
        )
        if self.registry is not None:
            signals += self._registry_signals(data, source)
        return signals

    def _registry_signals(self, image: bytes | Image.Image, source: str) -> list[Signal]:
        if self.registry is None:
            return []
        try:
            match = self.registry.match(image)
        except OptOutError as exc:
            return [Signal("registry", "unknown", source, exc.message)]
        if match is None:
            return []
        text = f"matches registered work #{match.entry.id} {match.label!r} at distance {match.distance}"
        return [Signal("registry", "disallowed", source, text)]

    # -- URLs ------------------------------------------------------------------------------
    async def _check_url(self, url: str, session: aiohttp.ClientSession) -> Decision:
        signals: list[Signal] = []
        # ``written``: the URL as given (the refusal names that spelling); ``current``: as
        # requested, which the site files' policy is checked for and which is fetched.
        written = escape_surrogates(url)
        requests, current = 0, request_url(written)
        for hop in range(self.max_redirects + 2):
            if hop > self.max_redirects:
                signals.append(
                    Signal("fetch", "unknown", current, f"more than {self.max_redirects} redirects")
                )
                break
            refused = url_refusal(written, self.allow_private)
            if refused:
                signals.append(Signal("fetch", "unknown", current, refused))
                break
            if self.site_files:
                policy, made = await self._fetcher.site_policy(origin_of(current), session)
                requests += made
                if policy.refused is not None:
                    signals.append(Signal("fetch", "unknown", current, policy.refused))
                    break
                # Matching one URL against 30,000 wildcard rules (a 512 KiB robots.txt) takes
                # ~0.25 s of CPU: on the parser thread, so that the other checks go on.
                site = await off_loop(policy.signals, current, self._agents, self.ai_agents)
                signals += site
                if any(
                    s.name in ("robots.txt", "ai.txt") and s.value == "disallowed" for s in site
                ):
                    break  # a crawler that honours robots.txt must not fetch it
            fetched = await self._fetcher.get(
                current, session, whole_image=self.registry is not None
            )
            requests += 1
            if isinstance(fetched, Signal):
                signals.append(fetched)
                break
            signals += header_signals(fetched.headers, current, self._scoped)
            if fetched.location is not None:
                written = escape_surrogates(urljoin(current, fetched.location))
                current = request_url(written)
                continue
            signals += await self._body_signals(fetched)
            break
        return decide(url, signals, on_error=self.on_error, final_url=current, requests=requests)

    async def _body_signals(self, fetched: Fetched) -> list[Signal]:
        if fetched.status >= 300:  # redirects with a Location were followed already
            return [
                Signal(
                    "fetch",
                    "unknown",
                    fetched.url,
                    f"HTTP {fetched.status}: the work could not be read",
                )
            ]
        # Parsing a body is linear and capped, but up to ~0.2 s of CPU on a hostile 512 KiB
        # head or 1 MiB XMP packet: a worker thread, so the other checks' I/O goes on.
        if fetched.kind == "html":
            return await asyncio.to_thread(
                html_signals, fetched.body, fetched.url, self._scoped, fetched.charset
            )
        if fetched.kind != "image":
            return []
        return await asyncio.to_thread(self._in_file, fetched.body, fetched.url, fetched.extent)


async def off_loop(parse: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``parse(*args, **kwargs)`` on the one parser thread, for pure-Python parsing that holds
    the GIL (protego's rule matching, XMP): one such thread at a time, so that the event loop
    waits at most a switch interval (5 ms) for the GIL, where N busy worker threads made it wait
    for each of them in turn (gaps of 0.25 s with eight URLs of a hostile robots.txt at once)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_PARSER, functools.partial(parse, *args, **kwargs))
