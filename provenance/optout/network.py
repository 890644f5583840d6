"""HTTP for the checker: aiohttp with timeouts, limits, a guard against private addresses, and
bodies read only as far as a check needs.

SSRF policy: by default a request to a loopback, private, link-local, multicast, reserved or
otherwise non-global address is refused. It is enforced in three places, so that no spelling of
an address gets through:

1. Before any connection (:func:`url_refusal`): the URL is parsed by yarl, the parser aiohttp
   connects with, so the host is read as aiohttp will read it (IDNA / NFKC: full-width digits,
   the dots U+3002, U+FF0E and U+FF61, upper case); an IP literal in any form that the system
   would connect to (dotted quad, a trailing dot, IPv6 with or without a zone id, and the
   legacy ``inet_aton`` forms ``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) is
   refused with the address in the reason. Percent-encoded host names, ``localhost.`` and
   ``*.localhost`` (loopback names, RFC 6761) are refused too.
2. When a host name resolves (:class:`GuardedResolver`): every answer is filtered.
3. When a socket is opened (:func:`guarded_socket`, aiohttp's ``socket_factory``): the address
   actually connected to is checked, for every connection and every redirect hop, IP literals
   included. A spelling that 1 does not know, or a DNS answer that changes between 2 and the
   connection, still meets this check.

An IPv6 address that carries an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64
``64:ff9b::/96``) is judged by the IPv4 address; IPv4-compatible (``::a.b.c.d``) and
IPv4-translated (``::ffff:0:a.b.c.d``) ones are always refused. ``allow_private=True`` turns the
policy off for intranets and tests.

Example:
    >>> refusal("127.0.0.1"), refusal("10.1.2.3"), refusal("93.184.216.34")
    ('127.0.0.1 is a loopback address', '10.1.2.3 is a private address', None)
    >>> refusal("::ffff:169.254.169.254")
    '169.254.169.254 is a link-local address'
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from .embedded import jpeg_header_end, sniff_mime
from .markup import HEAD_END, MAX_HTML_HEAD
from .sitefiles import escape_surrogates

__all__ = [
    "MAX_HEAD",
    "REDIRECTS",
    "Fetched",
    "GuardedResolver",
    "Refused",
    "describe_failure",
    "guarded_socket",
    "is_refused",
    "literal_address",
    "origin_of",
    "read_body",
    "read_upto",
    "refusal",
    "request_url",
    "url_refusal",
]

#: Status codes that redirect.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Bytes of an HTML page read while looking for the end of its <head> (what the parser reads).
MAX_HEAD = MAX_HTML_HEAD
#: Bytes before a match's whitespace where it may start (``</head``; ``<body`` and one more).
_HEAD_END_REACH = len(b"</head")
_CHUNK = 64 * 1024
_JOIN_OFF_LOOP = 1024 * 1024  # bodies this large are joined on a worker thread
_DRAIN = 64 * 1024  # an unread rest this small is read anyway, to keep the connection alive
#: Address properties that get a request refused, checked in this order.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
    ("is_site_local", "site-local"),  # fec0::/10: deprecated, still routed inside some networks
)
#: Networks refused whatever this Python's ``ipaddress`` tables say (they changed in 3.11.10).
_REFUSED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("192.0.0.0/24"), "IETF protocol assignments"),  # RFC 6890
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64"),  # RFC 8215
)
#: IPv6 prefixes whose last 32 bits are an IPv4 address that the packets reach.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_V4_IN_V6 = (
    ipaddress.ip_network("::/96"),  # IPv4-compatible (RFC 4291, deprecated)
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765)
)
#: The legacy numeric IPv4 forms ``inet_aton`` (and so ``getaddrinfo``) accepts.
_LEGACY_IPV4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")
_ADVICE = "allow_private=True or --allow-private for intranets"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
BodyKind = Literal["none", "html", "image", "other"]
Extent = Literal["whole", "head", "cut"]


def _carried_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 address carries, and whether it alone decides the verdict."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, True
    if ip.sixtofour is not None:
        return ip.sixtofour, True
    if ip.teredo is not None:
        return ip.teredo[1], True
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True
    if any(ip in net for net in _V4_IN_V6) and int(ip) & 0xFFFFFFFF and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), False
    return None


def _own_refusal(ip: Address) -> str | None:
    for attribute, name in _REFUSED:
        if getattr(ip, attribute, False):
            return f"{ip} is a{'n' if name[0] in 'aeiou' else ''} {name} address"
    for network, name in _REFUSED_NETWORKS:
        if ip.version == network.version and ip in network:
            return f"{ip} is in {network} ({name})"
    return None if ip.is_global else f"{ip} is not a public address"


def refusal(address: str) -> str | None:
    """Why a request to ``address`` (an IP address) is refused by default, or None for a
    public address. Anything that is not an IP address is refused.

    Example:
        >>> refusal("64:ff9b::7f00:1"), refusal("2002:a9fe:a9fe::1")
        ('127.0.0.1 is a loopback address', '169.254.169.254 is a link-local address')
    """
    try:
        ip: Address = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _carried_ipv4(ip)
        if carried is not None:
            inner, decides = carried
            reason = _own_refusal(inner)
            if reason is not None or decides:
                return reason
    return _own_refusal(ip)


def literal_address(host: str) -> Address | None:
    """The IP address a URL's host (as yarl normalised it) stands for without DNS, or None for a
    host name: IPv4 and IPv6 literals (a zone id and a trailing dot allowed) and the legacy
    IPv4 forms that ``inet_aton`` reads.

    Example:
        >>> [str(literal_address(h)) for h in ("2130706433", "0177.0.0.1", "0x7f.1", "127.0.0.1.")]
        ['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.1']
        >>> literal_address("example.com") is None
        True
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    name = name[:-1] if name.endswith(".") and ":" not in name else name
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(name):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL as aiohttp reads it (yarl: host normalised, lower case),
    default ports dropped.

    Example:
        >>> origin_of("HTTPS://Example.com:443/a?b"), origin_of("http://１２７。０.0.1:8/")
        ('https://example.com', 'http://127.0.0.1:8')
    """
    parsed = URL(url)
    scheme, host = parsed.scheme, parsed.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    port = parsed.explicit_port
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why ``url`` cannot be fetched, decided before any connection: a malformed URL, a scheme
    other than http(s), credentials, a percent-encoded host, and (unless ``allow_private``) an
    IP literal that the SSRF policy refuses, in whatever spelling.

    The host is read by yarl, as aiohttp will connect to it (``１２７.０.０.１`` is 127.0.0.1).

    Example:
        >>> url_refusal("http://127。0。0。1/x", allow_private=False)
        "refused: 127.0.0.1 is a loopback address, written '127。0。0。1' (allow_private=True or --allow-private for intranets)"
    """
    try:
        parsed = URL(url)
        host = parsed.raw_host
        parsed.port  # noqa: B018 - raises on a bad port
    except (ValueError, TypeError) as exc:  # UnicodeError (IDNA) is a ValueError
        return f"malformed URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"unsupported URL scheme {parsed.scheme!r} (http and https only)"
    if not host:
        return "the URL has no host"
    if parsed.raw_user or parsed.raw_password:
        return "URLs with credentials are refused"
    if "%" in host and ":" not in host:
        return f"malformed URL: the host {host!r} is percent-encoded"
    if allow_private:
        return None
    if host.rstrip(".").endswith(".localhost") or host == "localhost.":
        return f"refused: {host} is a loopback name (RFC 6761) ({_ADVICE})"
    address = literal_address(host)
    if address is None:
        return None  # a host name ("localhost" too): checked when it resolves and connects
    reason = refusal(str(address))
    if reason is None:
        return None
    written = _written_host(url)
    spelling = f", written {written!r}" if written and written not in reason else ""
    return f"refused: {reason}{spelling} ({_ADVICE})"


def request_url(url: str) -> str:
    """``url`` exactly as it is requested: lone surrogates (a redirect's non-UTF-8 bytes, as
    aiohttp reads them) percent-encoded as their bytes, then normalised by yarl as aiohttp would
    (dot segments resolved, spaces and non-ASCII percent-encoded, the host IDNA-encoded).

    The site files' policy is checked for this URL and this URL is fetched (``URL(...,
    encoded=True)``), so no spelling makes the two differ; it is printable. A URL yarl cannot
    read is returned escaped only (:func:`~provenance.optout.network.url_refusal` refuses it).

    Example:
        >>> request_url("http://a.example/x/../private/\\udcff\\udcfe.jpg")
        'http://a.example/private/%FF%FE.jpg'
    """
    escaped = escape_surrogates(url)
    try:
        return str(URL(escaped))
    except (ValueError, TypeError):
        return escaped


def _written_host(url: str) -> str | None:
    """The host as the URL spells it (before yarl's normalisation)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class Refused(OSError):
    """The SSRF policy refused a connection: every address a host name resolved to, or the
    address a socket was about to connect to."""


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
            raise Refused(f"refused: {host} resolves to {'; '.join(reasons)} ({_ADVICE})")
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

    Linear in the bytes read, and the event loop never copies the body whole: chunks are kept
    as they come and joined once, on a worker thread (``bytes.join`` of bytes drops the GIL for
    a large result; ``bytes(bytearray)`` of 64 MiB held it, and the loop, for 0.05-0.35 s here).
    A contiguous copy grows only while a check needs one: each chunk is searched for the end
    of the head once (with the few bytes before it that a match may start in), and a JPEG's
    segments are walked until they end, fail to parse or run past
    :data:`~provenance.optout.embedded.MAX_JPEG_MARKERS` markers (then the file is read whole).

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
    parts, size = [first], len(first)
    head = _HeadEnd() if kind == "html" else None
    walk_jpeg = kind == "image" and first.startswith(b"\xff\xd8") and not whole_image
    seen: bytearray | None = bytearray(first) if head is not None or walk_jpeg else None
    limit = MAX_HEAD if kind == "html" else max_body
    extent: Extent = "cut"
    chunk = first
    while not content.at_eof():
        if head is not None and seen is not None and head.found(seen, chunk):
            extent = "head"
            break
        if walk_jpeg and seen is not None:
            end = jpeg_header_end(cast(bytes, seen))  # read by index and slice only
            if end is not None and end >= 0:
                extent = "head"
                break
            walk_jpeg = end is None  # -1: the segments do not parse; read the whole file
            if not walk_jpeg:
                seen = None  # no check needs the body contiguous any more
        if size >= limit:
            break
        chunk = await content.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
        if seen is not None:
            seen += chunk
    remaining = (response.content_length or 0) - size
    if not content.at_eof() and 0 < remaining <= _DRAIN and size + remaining <= limit:
        parts.append(await content.read())  # cheap, and the connection stays open for the next URL
    body = await _join_off_loop(parts)
    if content.at_eof():
        return kind, body, "whole"
    return kind, body, extent


async def _join_off_loop(parts: list[bytes]) -> bytes:
    """``b"".join(parts)``; on a worker thread from :data:`_JOIN_OFF_LOOP` bytes (the copy of a
    large body runs there without the GIL, so the loop goes on)."""
    if sum(map(len, parts)) < _JOIN_OFF_LOOP:
        return b"".join(parts)
    return await asyncio.to_thread(b"".join, parts)


class _HeadEnd:
    """Finds :data:`~provenance.optout.markup.HEAD_END` in a growing page, searching each new
    chunk once: a match ending in the new chunk starts at most :data:`_HEAD_END_REACH` bytes
    before the whitespace that ended the bytes already searched (``</head`` then spaces)."""

    def __init__(self) -> None:
        self._searched = 0  # bytes of the body searched already
        self._spaces = 0  # where the whitespace that ends them starts

    def found(self, body: bytearray, chunk: bytes) -> bool:
        start = max(0, self._spaces - _HEAD_END_REACH) if self._searched else 0
        if HEAD_END.search(body, start):
            return True
        kept = len(chunk.rstrip())  # bytes.rstrip strips exactly what \s matches in bytes
        if kept or not self._searched:
            self._spaces = len(body) - len(chunk) + kept
        self._searched = len(body)
        return False


def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    """aiohttp's ``socket_factory``: a socket for ``addr_info``, the address about to be
    connected to, or :class:`Refused` when the SSRF policy refuses that address.

    aiohttp calls it for every connection it opens, IP literals and resolved names alike, with
    the very address tuple the socket then connects to, so this is the check no spelling of a
    host and no changing DNS answer gets around.
    """
    family, kind, proto, _, address = addr_info
    reason = refusal(str(address[0]))
    if reason is not None:
        raise Refused(f"refused: {reason} ({_ADVICE})")
    return socket.socket(family=family, type=kind, proto=proto)


def connector_options(*, concurrency: int, per_host: int, allow_private: bool) -> dict[str, Any]:
    """Keyword arguments for :class:`aiohttp.TCPConnector` (the SSRF guard unless
    ``allow_private``: a filtering resolver and a checking socket factory)."""
    options: dict[str, Any] = {
        "limit": concurrency,
        "limit_per_host": per_host,
        "ttl_dns_cache": 300,
    }
    if not allow_private:
        options["resolver"] = GuardedResolver()
        options["socket_factory"] = guarded_socket
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
