"""Fuzzing the opt-out checker against real (raw) HTTP servers on loopback addresses.

Targets: :meth:`provenance.optout.OptOutChecker.check` and ``check_many`` on URLs, end to end
(aiohttp, the site files, the headers, the body readers and parsers).

* Any response a server can send (status, reason, headers, ``Content-Type`` charsets, encodings,
  bodies: HTML heads, site files, images, garbage; for the work and for robots.txt, ai.txt and
  tdmrep.json): a decision for every URL, no exception, within the checker's own timeout.
* SSRF: URLs that spell a loopback, "this host", private, link-local or cloud-metadata address
  in any form (full-width digits U+FF10-FF19, the dots U+3002, U+FF0E and U+FF61, decimal,
  octal, hexadecimal and short IPv4 forms, IPv6 mapped / compatible / translated / NAT64 forms,
  trailing dots, upper case, percent-encoding, loopback names), given directly or as a redirect
  from a public host (for the work or for its robots.txt): with default settings no request
  reaches any of our listening addresses, and the decision is a refusal.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
from collections.abc import Iterator
from unittest import mock

import pytest
from fuzzing import bounded, budget
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rawserver import RawServer, response

from provenance.optout import Decision, OptOutChecker
from provenance.optout import network as net

TIMEOUT = 2.0
PUBLIC = "127.0.0.2"  # stands in for a public host: the policy is told so in the redirect tests


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    raw = RawServer()
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def ports(server: RawServer) -> dict[str, int]:
    """The target listens on 127.0.0.1 and ::1 (same port); the fuzz origin and the public one."""
    target = server.listen("127.0.0.1")
    with contextlib.suppress(OSError):  # no IPv6 loopback: its spellings must still be refused
        server.listen("::1", target)
    return {"target": target, "fuzz": server.listen("127.0.0.1"), "public": server.listen(PUBLIC)}


def _verdict_ok(decision: object) -> Decision:
    assert isinstance(decision, Decision), repr(decision)
    assert decision.verdict in ("allowed", "disallowed", "unknown")
    return decision


# -- any response ------------------------------------------------------------------------------

CHARSETS = st.one_of(
    st.sampled_from(
        [
            "utf-8",
            "latin-1",
            "bogus",
            "rot13",
            "base64",
            "hex",
            "idna",
            "zlib",
            "bz2",
            "uu",
            "quopri",
            "utf-16",
            "utf-32",
            "utf-7",
            "punycode",
            "unicode_escape",
            "undefined",
            "mbcs",
            "cp037",
            "",
            '"utf-8"',
            "utf-8;x",
            "UTF-8",
            "x-user-defined",
            "ascii\x00",
        ]
    ),
    st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=";,"), max_size=12
    ),
)
MIMES = st.sampled_from(
    ["text/html", "text/plain", "application/json", "image/jpeg", "image/png", "image/webp",
     "application/octet-stream", "application/xhtml+xml", "", "text/html; x=\"y"]
)  # fmt: skip
_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
_HEAD_PIECES = st.sampled_from(
    [b"<html>", b"<head>", b"</head>", b"<body>", b"<!--", b"-->", b"<![x", b"<a ", b"<meta ",
     b'name="robots" ', b'content="noai" ', b'name="tdm-reservation" content="1"', b">", b"\xff\xfe",
     b"&#xD800;", b"&amp", b"<script>", b"</", b"\x00", b"\xe9"]
)  # fmt: skip
BODIES = st.one_of(
    st.lists(_HEAD_PIECES, max_size=60).map(b"".join),
    st.tuples(_HEAD_PIECES, st.integers(1, 20_000)).map(lambda t: b"<head>" + t[0] * t[1]),
    st.sampled_from(
        [
            b"User-agent: *\nDisallow: /",
            b'[{"location": "/*", "tdm-reservation": 1}]',
            b"[" * 100_000,
            b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00",
            b"\x89PNG\r\n\x1a\n",
            b"",
        ]
    ),
    st.binary(max_size=300),
)
_HEADER_NAMES = st.sampled_from(
    ["X-Robots-Tag", "tdm-reservation", "tdm-policy", "Location", "Content-Encoding",
     "Transfer-Encoding", "Content-Length", "Set-Cookie", "Link", "X"]
)  # fmt: skip
_HEADER_VALUES = st.one_of(
    st.sampled_from(["noai", "GPTBot: noai", "1", "0", "gzip", "br", "deflate", "chunked", "-1",
                     "99999999999999999999", "/x", "http://[::1", "\x85"]),
    _HEADER_TEXT,
)  # fmt: skip


@st.composite
def responses(draw: st.DrawFn, work: bool = False) -> bytes:
    """One HTTP response: mostly well-formed with hostile parts, sometimes raw bytes.

    The work's response is mostly an HTML page (its head is parsed, in its charset); a site
    file's is mostly a 404, so that the work itself is fetched.
    """
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    common = [200, 200, 200, 200, 200, 302, 404, 500] if work else [404, 404, 404, 200, 500]
    odd = draw(st.integers(0, 4)) == 0  # one in five: any status, any type
    status = draw(st.integers(100, 999)) if odd else draw(st.sampled_from(common))
    mime = "text/html" if work and not odd else draw(MIMES)
    with_charset = draw(st.integers(0, 3)) > 0 if work else draw(st.booleans())
    headers = [("Content-Type", f"{mime}; charset={draw(CHARSETS)}" if with_charset else mime)]
    headers += draw(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4))
    body = draw(BODIES)
    if ("Content-Encoding", "gzip") in headers and draw(st.booleans()):
        body = gzip.compress(body)
    explicit = any(name.lower() == "content-length" for name, _ in headers)
    return response(status, headers, body, reason=draw(_HEADER_TEXT), length=not explicit)


_SITE_PATHS = ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json")


@settings(max_examples=budget(40))
@given(st.fixed_dictionaries({**{p: responses() for p in _SITE_PATHS}, "/w": responses(work=True)}))
def test_any_response_gives_a_decision(
    server: RawServer, ports: dict[str, int], answers: dict[str, bytes]
) -> None:
    server.respond = lambda host, path: answers.get(path.split("?")[0], answers["/w"])
    origin = f"http://127.0.0.1:{ports['fuzz']}"
    checker = OptOutChecker(allow_private=True, timeout=TIMEOUT)
    urls = [origin + "/w", origin + "/w?x=1", origin + "/img.jpg"]
    decisions = bounded(checker.check_many, urls, seconds=10.0, wall=4 * TIMEOUT + 10)
    assert isinstance(decisions, list) and len(decisions) == len(urls)
    for decision in decisions:
        _verdict_ok(decision)


# -- SSRF ----------------------------------------------------------------------------------------

_DOTS = [".", "\u3002", "\uff0e", "\uff61"]  # . 。 ． ｡
#: (address, whether one of our listeners receives a connection to it)
_TARGETS = [
    ("127.0.0.1", True),
    ("0.0.0.0", True),  # "this host": Linux connects it to the loopback listener
    ("127.0.0.3", False),  # another loopback address
    ("127.255.255.254", False),
    ("169.254.169.254", False),  # cloud metadata
    ("10.0.0.1", False),
    ("172.16.0.1", False),
    ("192.168.1.1", False),
    ("100.100.100.200", False),  # Alibaba metadata, carrier-grade NAT
]


def _fullwidth(draw: st.DrawFn, text: str) -> str:
    return "".join(
        chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() and draw(st.booleans()) else c
        for c in text
    )


@st.composite
def ipv4_spellings(draw: st.DrawFn, value: int) -> str:
    """An IPv4 address in 1 to 4 parts, each decimal, octal or hex; full-width, odd dots."""
    count = draw(st.sampled_from([4, 4, 4, 1, 2, 3]))
    octets = list(value.to_bytes(4, "big"))
    numbers = [*octets[: count - 1], int.from_bytes(bytes(octets[count - 1 :]), "big")]
    parts = []
    styles = draw(st.sampled_from(["dec", "dec", "dec", "mixed"]))
    for number in numbers:
        style = styles if styles != "mixed" else draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
        parts.append(
            {
                "dec": str(number),
                "oct": "0" + format(number, "o"),
                "hex": hex(number),
                "HEX": "0X" + format(number, "X"),
            }[style]
        )
    host = ""
    for index, part in enumerate(parts):
        host += draw(st.sampled_from(_DOTS)) if index else ""
        host += _fullwidth(draw, part)
    if draw(st.integers(0, 4)) == 0:
        host += draw(st.sampled_from(_DOTS))
    if draw(st.integers(0, 6)) == 0:  # percent-encode one character
        at = draw(st.integers(0, len(host) - 1))
        host = host[:at] + "".join(f"%{b:02X}" for b in host[at].encode()) + host[at + 1 :]
    return host


@st.composite
def ipv6_spellings(draw: st.DrawFn, value: int) -> str:
    """The IPv4 address inside an IPv6 literal: mapped, compatible, translated, NAT64."""
    v4 = str(ipaddress.IPv4Address(value))
    hi, lo = f"{value >> 16:x}", f"{value & 0xFFFF:x}"
    prefix = draw(st.sampled_from(["::ffff:", "::", "::ffff:0:", "64:ff9b::", "0:0:0:0:0:ffff:"]))
    tail = v4 if draw(st.booleans()) else f"{hi}:{lo}"
    text = prefix + tail
    return "[" + (text.upper() if draw(st.booleans()) else text) + "]"


@st.composite
def refused_hosts(draw: st.DrawFn, reachable: bool = False) -> tuple[str, str, bool]:
    """(host as written in a URL, the address it names, whether our listener would get it).

    With ``reachable``: only addresses that one of our listeners receives (127.0.0.1, 0.0.0.0,
    ::1, localhost), so that a request that slips through is counted.
    """
    kind = draw(st.sampled_from(["v4", "v4", "v4", "v6", "loopback6", "name"]))
    if kind == "name":
        name = draw(st.sampled_from(["localhost", "LOCALHOST", "localhost.", "a.localhost"]))
        return _fullwidth(draw, name), "localhost", True
    if kind == "loopback6":
        host = draw(
            st.sampled_from(["[::1]", "[0::1]", "[0:0:0:0:0:0:0:1]", "[::0001]", "[::ffff:7f00:1]"])
        )
        return host, "::1", True
    address, listened = draw(st.sampled_from([t for t in _TARGETS if t[1] or not reachable]))
    value = int(ipaddress.IPv4Address(address))
    host = draw(ipv4_spellings(value)) if kind == "v4" else draw(ipv6_spellings(value))
    return host, address, listened


def _is_refusal(decision: Decision) -> bool:
    """Unknown, not allowed, and the reason is the SSRF policy (or a URL that cannot be read)."""
    text = " ".join(decision.evidence).lower()
    refused = "refused" in text or "malformed url" in text
    return decision.verdict == "unknown" and not decision.allowed and refused


def _refused(decision: Decision, server: RawServer, before: int, host: str) -> None:
    _verdict_ok(decision)
    assert server.total() == before, f"{host!r} reached a listener: {server.hits}"
    assert _is_refusal(decision), f"{host!r} was not refused: {decision.to_text()}"


@settings(max_examples=budget(60))
@given(refused_hosts(reachable=True))
def test_ssrf_no_spelling_of_loopback_is_requested(
    server: RawServer, ports: dict[str, int], spelled: tuple[str, str, bool]
) -> None:
    host = spelled[0]
    server.respond = lambda h, path: response(200, [("Content-Type", "text/html")], b"<head>")
    before = server.total()
    checker = OptOutChecker(timeout=TIMEOUT)  # default settings: allow_private=False
    decision = bounded(
        checker.check, f"http://{host}:{ports['target']}/x", seconds=5.0, wall=4 * TIMEOUT + 5
    )
    assert isinstance(decision, Decision)
    assert server.total() == before, (
        f"{host!r} reached a listener {dict(server.hits)}: {decision.to_text()}"
    )


@settings(max_examples=budget(60))
@given(refused_hosts())
def test_ssrf_any_spelling_is_refused(
    server: RawServer, ports: dict[str, int], spelled: tuple[str, str, bool]
) -> None:
    host, _address, _reachable = spelled
    server.respond = lambda h, path: response(200, [("Content-Type", "text/html")], b"<head>")
    before = server.total()
    checker = OptOutChecker(timeout=TIMEOUT)  # default settings: allow_private=False
    decision = bounded(
        checker.check, f"http://{host}:{ports['target']}/x", seconds=5.0, wall=4 * TIMEOUT + 5
    )
    _refused(decision, server, before, host)  # type: ignore[arg-type]


@settings(max_examples=budget(30))
@given(
    refused_hosts(reachable=True),
    st.sampled_from(["work", "robots.txt"]),
    st.sampled_from([301, 302, 303, 307, 308]),
)
@example(("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1", True), "work", 302)
def test_ssrf_redirects_from_a_public_host_are_refused(
    server: RawServer,
    ports: dict[str, int],
    spelled: tuple[str, str, bool],
    via: str,
    status: int,
) -> None:
    host, _address, _reachable = spelled
    hidden = f"http://{host}:{ports['target']}/x"

    def respond(listener: str, path: str) -> bytes:
        if listener != PUBLIC:
            return response(200, [("Content-Type", "text/html")], b"<head>")
        if path == "/w" or (via == "robots.txt" and path == "/robots.txt"):
            return response(status, [("Location", hidden)])
        return response(404)

    server.respond = respond
    policy = net.refusal
    with mock.patch.object(net, "refusal", lambda a: None if a == PUBLIC else policy(a)):
        before = {k: v for k, v in server.hits.items() if k[0] != PUBLIC}
        checker = OptOutChecker(timeout=TIMEOUT)
        url = f"http://{PUBLIC}:{ports['public']}/w"
        decision = bounded(checker.check, url, seconds=5.0, wall=4 * TIMEOUT + 5)
    assert isinstance(decision, Decision)
    after = {k: v for k, v in server.hits.items() if k[0] != PUBLIC}
    assert after == before, f"the redirect to {host!r} reached a listener: {after}"
    assert server.hits[(PUBLIC, ports["public"], "/robots.txt")] > 0  # the public host was asked
    assert _is_refusal(decision), f"redirect to {host!r} not refused: {decision.to_text()}"
