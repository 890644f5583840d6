"""HTTP for the checker: aiohttp with timeouts, limits, a guard against private addresses, and
bodies read only as far as a check needs.

SSRF policy: by default a request to a loopback, private, link-local, multicast, reserved or
otherwise non-global address is refused, both when the URL names an IP literal and when a host
name resolves to one (the resolver filters every answer, so a DNS answer that changes between
checks cannot slip through). ``allow_private=True`` turns this off for intranets and tests.

Example:
    >>> refusal("127.0.0.1"), refusal("10.1.2.3"), refusal("93.184.216.34")
    ('127.0.0.1 is a loopback address', '10.1.2.3 is a private address', None)
    >>> refusal("::ffff:169.254.169.254")
    '169.254.169.254 is a link-local address'
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from .embedded import jpeg_header_end, sniff_mime
from .markup import HEAD_END

__all__ = [
    "MAX_HEAD",
    "REDIRECTS",
    "Fetched",
    "GuardedResolver",
    "Refused",
    "describe_failure",
    "is_refused",
    "origin_of",
    "read_body",
    "read_upto",
    "refusal",
    "url_refusal",
]

#: Status codes that redirect.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Bytes of an HTML page read while looking for the end of its <head>.
MAX_HEAD = 512 * 1024
_CHUNK = 64 * 1024
_DRAIN = 64 * 1024  # an unread rest this small is read anyway, to keep the connection alive
#: Address properties that get a request refused, checked in this order.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)
BodyKind = Literal["none", "html", "image", "other"]
Extent = Literal["whole", "head", "cut"]


def refusal(address: str) -> str | None:
    """Why a request to ``address`` is refused by default, or None for a public address."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%")[0]
        )
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            ip = inner
    for attribute, name in _REFUSED:
        if getattr(ip, attribute):
            return f"{ip} is a{'n' if name[0] in 'aeiou' else ''} {name} address"
    return None if ip.is_global else f"{ip} is not a public address"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped.

    Example:
        >>> origin_of("HTTPS://Example.com:443/a?b")
        'https://example.com'
    """
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why ``url`` cannot be fetched before any connection (scheme, credentials, IP literal)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"malformed URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported URL scheme {parts.scheme!r} (http and https only)"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username or parts.password:
        return "URLs with credentials are refused"
    if allow_private:
        return None
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None  # a host name: its addresses are checked when it resolves
    reason = refusal(parts.hostname)
    return (
        None
        if reason is None
        else f"refused: {reason} (allow_private=True or --allow-private for intranets)"
    )


class Refused(OSError):
    """Every address a host name resolved to is refused by the SSRF policy."""


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses (all refused: :class:`Refused`)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept = [a for a in answers if refusal(a["host"]) is None]
        if not kept:
            reasons = sorted({refusal(a["host"]) or "" for a in answers})
            raise Refused(
                f"refused: {host} resolves to {'; '.join(reasons)} (allow_private=True or --allow-private for intranets)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Fetched:
    """One HTTP response, as much of its body as was needed.

    Attributes:
        url: the URL requested.
        status: the HTTP status.
        headers: lower-cased name -> values, for the headers that carry opt-outs.
        location: the ``Location`` of a redirect.
        kind: what the body is: ``html``, ``image``, ``other`` or ``none`` (not read).
        body: the bytes read.
        extent: ``whole``, ``head`` (what the checks need) or ``cut`` (a limit was hit).
        charset: the charset the response declared.
    """

    url: str
    status: int
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    location: str | None = None
    kind: BodyKind = "none"
    body: bytes = field(default=b"", repr=False)
    extent: Extent = "whole"
    charset: str | None = None


OPT_OUT_HEADERS = ("x-robots-tag", "tdm-reservation", "tdm-policy")


async def read_upto(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body's first ``limit`` bytes (all of it when shorter)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def read_body(
    response: aiohttp.ClientResponse, *, max_body: int, whole_image: bool
) -> tuple[BodyKind, bytes, Extent]:
    """Read as much of the body as the checks need.

    HTML: up to the end of ``<head>`` (at most :data:`MAX_HEAD` bytes). JPEG: up to its first
    scan (all metadata segments come before it) unless ``whole_image``. Other images: the whole
    file, at most ``max_body`` bytes. Anything else: nothing beyond the first chunk.

    Returns:
        ``(kind, bytes, extent)``: ``extent`` is ``whole`` (the entire body), ``head`` (all
        that the checks need: a page's head, a JPEG's metadata) or ``cut`` (a limit was hit).
    """
    content = response.content
    first = await content.read(_CHUNK)
    ctype = (response.content_type or "").lower()
    kind: BodyKind
    if "html" in ctype:
        kind = "html"
    elif sniff_mime(first) is not None or ctype.startswith("image/"):
        kind = "image"
    else:
        return "other", b"", "whole" if content.at_eof() else "head"
    chunks, size = [first], len(first)
    extent: Extent = "cut"
    is_jpeg = first.startswith(b"\xff\xd8") and not whole_image
    limit = MAX_HEAD if kind == "html" else max_body
    while not content.at_eof():
        joined = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        if kind == "html" and HEAD_END.search(joined):
            extent = "head"
            break
        if is_jpeg and (end := jpeg_header_end(joined)) is not None and end >= 0:
            extent = "head"
            break
        if size >= limit:
            break
        chunk = await content.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    remaining = (response.content_length or 0) - size
    if not content.at_eof() and 0 < remaining <= _DRAIN and size + remaining <= limit:
        body += await content.read()  # cheap, and the connection stays open for the next URL
    if content.at_eof():
        return kind, body, "whole"
    return kind, body, extent


def connector_options(*, concurrency: int, per_host: int, allow_private: bool) -> dict[str, Any]:
    """Keyword arguments for :class:`aiohttp.TCPConnector`."""
    options: dict[str, Any] = {
        "limit": concurrency,
        "limit_per_host": per_host,
        "ttl_dns_cache": 300,
    }
    if not allow_private:
        options["resolver"] = GuardedResolver()
    return options


#: Exception type -> how a failure is described; the first match wins.
_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (asyncio.TimeoutError, "timed out after {timeout:g} s"),
    (aiohttp.ClientPayloadError, "the response body was malformed: {exc}"),
    (aiohttp.ClientResponseError, "bad HTTP response: {exc.message}"),
    (aiohttp.ClientConnectorError, "cannot connect: {exc}"),
    (aiohttp.ClientError, "HTTP error: {exc}"),
    (Refused, "{exc}"),
    (OSError, "network error: {exc}"),
)


def is_refused(exc: BaseException) -> bool:
    """Whether the SSRF policy refused the connection."""
    return isinstance(exc, Refused) or isinstance(getattr(exc, "os_error", None), Refused)


def describe_failure(exc: BaseException, timeout: float) -> str:
    """A failed request, in words (the SSRF refusal, a timeout, a connection error...)."""
    if is_refused(exc):
        return str(getattr(exc, "os_error", None) or exc)
    for kind, template in _FAILURES:
        if isinstance(exc, kind):
            return template.format(exc=exc, timeout=timeout)
    return f"{type(exc).__name__}: {exc}"
