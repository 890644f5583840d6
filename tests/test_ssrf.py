"""The SSRF policy against every spelling of a private address, on real sockets.

A real HTTP server listens on 127.0.0.1 (``optout_server``) and counts every request; each
disguised spelling of its address must be refused with a reason, and the server must get
nothing. "A public host" is a second server on 127.0.0.2, which these tests (only) let the
policy treat as public, so that redirects from a public host to a disguised loopback address
can be tried for real. ``verify --fetch-remote`` goes through the same policy.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import c2pa
import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from optout_images import credentials, encode, picture
from optout_server import Handler, Server, body, redirect

from provenance.cli import verify_command
from provenance.credentials import Credentials
from provenance.manifest import _context, build_definition
from provenance.optout import OptOutChecker
from provenance.optout import network as net
from provenance.verify import verify

TIMEOUT = 3.0
PUBLIC = "127.0.0.2"  # counts as a public address in these tests only
HTML = "text/html"
PAGE = "<html><head><title>open</title></head><body>allowed</body></html>"
LOOPBACK = "127.0.0.1 is a loopback address"
METADATA = "169.254.169.254 is a link-local address"

#: Disguised spellings of 127.0.0.1 (or another refused address) and what the reason must say.
#: ``{p}`` is the target server's port. This is the list the threat model page states.
SPELLINGS: list[tuple[str, str]] = [
    ("http://１２７.０.０.１:{p}/x", LOOPBACK),  # full-width digits
    ("http://127。0。0。1:{p}/x", LOOPBACK),  # U+3002 ideographic full stop
    ("http://127．0．0．1:{p}/x", LOOPBACK),  # U+FF0E full-width full stop
    ("http://127｡0｡0｡1:{p}/x", LOOPBACK),  # U+FF61 half-width ideographic full stop
    ("http://１２７。０．０｡１:{p}/x", LOOPBACK),  # all of them at once
    ("http://127.0.0.1:{p}/x", LOOPBACK),
    ("HTTP://127.0.0.1:{p}/x", LOOPBACK),  # upper-case scheme
    ("http://127.0.0.1.:{p}/x", LOOPBACK),  # trailing dot
    ("http://2130706433:{p}/x", LOOPBACK),  # decimal integer
    ("http://017700000001:{p}/x", LOOPBACK),  # octal integer
    ("http://0x7f000001:{p}/x", LOOPBACK),  # hexadecimal integer
    ("http://0177.0.0.1:{p}/x", LOOPBACK),  # octal part
    ("http://0x7f.0.0.1:{p}/x", LOOPBACK),  # hexadecimal part
    ("http://0x7f.1:{p}/x", LOOPBACK),  # hexadecimal, short form
    ("http://127.1:{p}/x", LOOPBACK),  # short form
    ("http://127.0.1:{p}/x", LOOPBACK),  # short form, three parts
    ("http://127.127.127.127:{p}/x", "127.127.127.127 is a loopback address"),  # all of 127/8
    ("http://[::1]:{p}/x", "::1 is a loopback address"),
    ("http://[0:0:0:0:0:0:0:1]:{p}/x", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:{p}/x", LOOPBACK),  # IPv4-mapped (reaches 127.0.0.1)
    ("http://[::ffff:7f00:1]:{p}/x", LOOPBACK),
    ("http://[0:0:0:0:0:ffff:7f00:1]:{p}/x", LOOPBACK),
    ("http://[::127.0.0.1]:{p}/x", LOOPBACK),  # IPv4-compatible
    ("http://[::ffff:0:7f00:1]:{p}/x", LOOPBACK),  # IPv4-translated
    ("http://[64:ff9b::7f00:1]:{p}/x", LOOPBACK),  # NAT64
    ("http://[2002:7f00:1::1]:{p}/x", LOOPBACK),  # 6to4
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{p}/x", LOOPBACK),  # Teredo
    ("http://[fe80::1%25lo]:{p}/x", "fe80::1 is a link-local address"),  # zone id
    ("http://[::]:{p}/x", ":: is an unspecified address"),
    ("http://0.0.0.0:{p}/x", "0.0.0.0 is an unspecified address"),  # reaches this host on Linux
    ("http://0:{p}/x", "0.0.0.0 is an unspecified address"),
    ("http://localhost:{p}/x", "localhost resolves to 127.0.0.1 is a loopback address"),
    ("http://LOCALHOST:{p}/x", "localhost resolves to 127.0.0.1 is a loopback address"),
    ("http://localhost.:{p}/x", "localhost. is a loopback name"),
    ("http://a.localhost:{p}/x", "a.localhost is a loopback name"),
    ("http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{p}/x", "localhost resolves to 127.0.0.1 is a loopback address"),
    ("http://%31%32%37.0.0.1:{p}/x", "is percent-encoded"),
    ("http://１６９.２５４.１６９.２５４/latest/meta-data/", METADATA),  # cloud metadata
    ("http://169。254。169。254/latest/meta-data/", METADATA),
    ("http://2852039166/latest/meta-data/", METADATA),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", METADATA),
    ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", METADATA),
    ("http://１０.０.０.１:{p}/x", "10.0.0.1 is a private address"),
    ("http://１９２.１６８.０.１:{p}/x", "192.168.0.1 is a private address"),
]


@pytest.fixture(scope="module")
def target(server: Server) -> str:
    """The loopback origin every disguised URL names: it answers an open page (ALLOWED)."""
    return server.add({"/x": body(PAGE, HTML), "/m.c2pa": body(b"", "application/c2pa")})


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the policy treat 127.0.0.2 as a public address (the stand-in for a public host)."""
    policy = net.refusal
    monkeypatch.setattr(
        net, "refusal", lambda address: None if address == PUBLIC else policy(address)
    )


def serve_public(server: Server, routes: dict[str, Handler]) -> str:
    """An origin on 127.0.0.2, its requests counted like the server's others."""

    async def start() -> str:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            server.hits[(origin, request.path_qs)] += 1
            handler = routes.get(request.path_qs)
            return await handler(request) if handler else web.Response(status=404)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, PUBLIC, 0)
        await site.start()
        server._runners.append(runner)  # stopped with the others
        return f"http://{PUBLIC}:{runner.addresses[0][1]}"

    origin = ""
    origin = asyncio.run_coroutine_threadsafe(start(), server.loop).result(10)
    return origin


def hits(server: Server, origin: str) -> int:
    return sum(n for (o, _), n in server.hits.items() if o == origin)


def port(origin: str) -> str:
    return origin.rsplit(":", 1)[1]


# -- the opt-out checker -------------------------------------------------------------------


def test_every_spelling_is_refused_before_any_request(server: Server, target: str) -> None:
    urls = [spelling.format(p=port(target)) for spelling, _ in SPELLINGS]
    decisions = OptOutChecker(timeout=TIMEOUT).check_many(urls)
    assert hits(server, target) == 0  # not robots.txt, not ai.txt, not tdmrep.json, not /x
    for (spelling, reason), decision in zip(SPELLINGS, decisions, strict=True):
        assert (decision.verdict, decision.allowed) == ("unknown", False), spelling
        text = decision.evidence[0]
        assert reason in text and ("refused: " in text or "malformed URL" in text), (spelling, text)


@pytest.mark.parametrize(
    "spelling",
    ["http://１２７.０.０.１:{p}/x", "http://127。0。0。1:{p}/x", "http://2130706433:{p}/x"],
)
def test_the_verdict_text_names_the_address(server: Server, target: str, spelling: str) -> None:
    decision = OptOutChecker(timeout=TIMEOUT).check(spelling.format(p=port(target)))
    assert hits(server, target) == 0
    assert "refused: 127.0.0.1 is a loopback address" in decision.evidence[0]
    # how the URL spelled it, as docs/optout.md shows ("written '１２７.０.０.１'")
    assert f"written '{urlsplit(spelling).hostname}'" in decision.evidence[0]
    assert decision.verdict != "allowed"


@pytest.mark.usefixtures("public")
def test_redirects_from_a_public_host_are_checked_at_each_hop(server: Server, target: str) -> None:
    p = port(target)
    disguised = {
        "/fw": f"http://１２７.０.０.１:{p}/x",
        "/ideo": f"http://127。0。0。1:{p}/x",
        "/ff0e": f"http://127．0．0．1:{p}/x",
        "/dec": f"http://2130706433:{p}/x",
        "/mapped": f"http://[::ffff:127.0.0.1]:{p}/x",
        "/name": f"http://localhost:{p}/x",
        "/meta": "http://１６９.２５４.１６９.２５４/latest/meta-data/",
    }
    routes: dict[str, Handler] = {path: redirect(url) for path, url in disguised.items()}
    routes["/hop"] = redirect("/fw")  # two hops: public, then disguised
    front = serve_public(server, routes)
    # robots.txt itself redirects to the loopback target on this one
    robots = serve_public(server, {"/robots.txt": redirect(f"http://127｡0｡0｡1:{p}/robots.txt")})
    urls = [front + path for path in [*disguised, "/hop"]] + [robots + "/page"]
    decisions = OptOutChecker(timeout=TIMEOUT).check_many(urls)
    assert hits(server, target) == 0
    assert hits(server, front) > 0 and hits(server, robots) > 0  # the public hosts were asked
    for url, decision in zip(urls, decisions, strict=True):
        assert (decision.verdict, decision.allowed) == ("unknown", False), url
        assert any("refused: " in e for e in decision.evidence), (url, decision.evidence)
    assert METADATA in decisions[list(disguised).index("/meta")].evidence[-1]


class _LyingResolver(net.GuardedResolver):
    """A resolver whose answer the filter never saw: 127.0.0.1 for every name (DNS rebinding,
    or a spelling a future parser reads differently)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer: ResolveResult = {
            "hostname": host,
            "host": "127.0.0.1",
            "port": port,
            "family": socket.AF_INET,
            "proto": 0,
            "flags": 0,
        }
        return [answer]


async def _connect_with_guard(url: str, *, lying: bool = False) -> BaseException | int:
    options = net.connector_options(concurrency=4, per_host=4, allow_private=False)
    if lying:
        options["resolver"] = _LyingResolver()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(**options)) as session:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as r:
                return r.status
        except Exception as exc:
            return exc


@pytest.mark.parametrize(
    ("url", "lying"),
    [
        ("http://１２７.０.０.１:{p}/x", False),  # an IP literal: no resolver runs
        ("http://127。0。0。1:{p}/x", False),
        ("http://127.0.0.1:{p}/x", False),
        ("http://[::ffff:127.0.0.1]:{p}/x", False),
        ("http://public.example:{p}/x", True),  # a name whose answer slipped past the filter
    ],
)
def test_the_address_connected_to_is_checked(
    server: Server, target: str, url: str, lying: bool
) -> None:
    """Without the URL check: aiohttp's own connector (socket_factory) refuses the socket."""
    outcome = asyncio.run(_connect_with_guard(url.format(p=port(target)), lying=lying))
    assert hits(server, target) == 0
    assert isinstance(outcome, BaseException) and net.is_refused(outcome), outcome
    assert LOOPBACK in net.describe_failure(outcome, TIMEOUT)


def test_allow_private_still_reaches_local_servers(server: Server, target: str) -> None:
    before = hits(server, target)
    decision = OptOutChecker(allow_private=True, timeout=TIMEOUT).check(target + "/x")
    assert decision.verdict == "allowed" and hits(server, target) == before + 4


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("64:ff9b::7f00:1", LOOPBACK),
        ("64:ff9b::a9fe:a9fe", METADATA),
        ("64:ff9b:1::7f00:1", "64:ff9b:1::7f00:1 is"),  # local-use NAT64: reserved
        ("::7f00:1", LOOPBACK),
        ("::808:808", "reserved"),  # IPv4-compatible: deprecated, never public
        ("::ffff:0:a9fe:a9fe", METADATA),
        ("2002:a9fe:a9fe::1", METADATA),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", LOOPBACK),
        ("fec0::1", "site-local"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("fe80::1%eth0", "link-local"),
        ("127.0.0.1.", "not an IP address"),  # refusal() takes addresses only: names refused
        ("localhost", "not an IP address"),
    ],
)
def test_refusal_of_addresses_that_carry_others(address: str, reason: str) -> None:
    assert reason in (net.refusal(address) or "")


def test_public_addresses_in_any_form_pass() -> None:
    public = ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1"]
    assert [net.refusal(a) for a in public] == [None] * len(public)
    assert net.url_refusal("http://８.８.８.８/x", allow_private=False) is None
    assert net.url_refusal("http://example.com/x", allow_private=False) is None


# -- any spelling (hypothesis) ---------------------------------------------------------------

#: Refused IPv4 networks to draw addresses from: loopback, metadata / link-local, private, "this".
_REFUSED_V4 = [(0x7F000000, 24), (0xA9FE0000, 16), (0x0A000000, 24), (0xC0A80000, 16), (0, 24)]
_DOTS = [".", "\u3002", "\uff0e", "\uff61"]  # . 。 ． ｡


@st.composite
def spelled_ipv4(draw: st.DrawFn) -> tuple[str, str]:
    """(a spelling of a refused IPv4 address, the address): 1 to 4 parts, each decimal, octal
    or hexadecimal, any character full-width, any dot ideographic, maybe a trailing dot."""
    base, bits = draw(st.sampled_from(_REFUSED_V4))
    value = base | draw(st.integers(0, (1 << bits) - 1))
    count = draw(st.integers(1, 4))
    octets = list(value.to_bytes(4, "big"))
    numbers = [*octets[: count - 1], int.from_bytes(bytes(octets[count - 1 :]), "big")]
    parts = []
    for number in numbers:
        style = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
        text = {"dec": str(number), "oct": "0" + format(number, "o"), "hex": hex(number)}.get(
            style, "0X" + format(number, "X")
        )
        parts.append(text)
    host = ""
    for index, part in enumerate(parts):
        if index:
            host += draw(st.sampled_from(_DOTS))
        host += "".join(
            chr(ord(c) + 0xFEE0) if draw(st.booleans()) else c for c in part
        )  # full-width forms: U+FF01.. mirror ASCII 0x21..
    if draw(st.booleans()):
        host += draw(st.sampled_from(_DOTS))
    return host, str(ipaddress.IPv4Address(value))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(spelled_ipv4())
def test_no_spelling_of_a_refused_address_gets_through(spelled: tuple[str, str]) -> None:
    host, address = spelled
    reason = net.url_refusal(f"http://{host}:8080/x", allow_private=False)
    assert reason is not None, host
    if reason.startswith("refused: "):
        assert reason.startswith(f"refused: {address} is "), (host, reason)
    else:  # a spelling that yarl cannot read is refused as malformed, never fetched
        assert reason.startswith("malformed URL"), (host, reason)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=40), st.sampled_from(["http://", "https://", "HTTP://", "ftp://", ""]))
def test_url_check_never_raises(host: str, scheme: str) -> None:
    url = f"{scheme}{host}/x"
    reason = net.url_refusal(url, allow_private=False)
    assert reason is None or isinstance(reason, str)
    if reason is None:  # accepted: the checker goes on to ask for its origin
        assert net.origin_of(url).startswith("http")


# -- verify --fetch-remote -----------------------------------------------------------------


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return credentials(tmp_path_factory.mktemp("creds"))


def remote_signed(creds: Credentials, url: str) -> tuple[bytes, bytes]:
    """A PNG whose manifest is not embedded but named by URL (XMP ``dcterms:provenance``), and
    the manifest store to serve there."""
    definition = build_definition(
        title="remote.png",
        software_version="1",
        recipe=None,
        watermark={"embedded": False, "reason": "test"},
        fingerprint={"algorithm": "none"},
    )
    builder = c2pa.Builder(definition, context=_context())
    with builder:
        builder.set_no_embed()
        builder.set_remote_url(url)
        out = io.BytesIO()
        manifest = builder.sign(
            creds.signer(), "image/png", io.BytesIO(encode(picture(3), "png")), out
        )
    return out.getvalue(), bytes(manifest)


def test_fetch_remote_refuses_loopback_by_default(
    server: Server, creds: Credentials, tmp_path: Path
) -> None:
    slot: dict[str, bytes] = {}
    origin = server.add({"/m.c2pa": served(slot)})
    image, slot["manifest"] = remote_signed(creds, f"{origin}/m.c2pa")
    path = tmp_path / "remote.png"
    path.write_bytes(image)
    report = verify(path, fetch_remote=True, check_watermark=False)
    assert hits(server, origin) == 0  # c2pa-rs fetched nothing either
    assert report.verdict == "not_verified" and report.c2pa_state == "remote"
    assert report.remote_url == f"{origin}/m.c2pa"
    assert f"was not fetched: refused: {LOOPBACK}" in report.problems[0]
    result = CliRunner().invoke(verify_command, [str(path), "--fetch-remote", "--no-watermark"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"refused: {LOOPBACK}" in result.output and "Traceback" not in result.output
    assert hits(server, origin) == 0


def served(slot: dict[str, bytes]) -> Handler:
    """A handler that answers the manifest put in ``slot`` (known only once its URL is)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=slot["manifest"], content_type="application/c2pa")

    return handle


def test_fetch_remote_fetches_through_the_policy(
    server: Server, creds: Credentials, tmp_path: Path
) -> None:
    slot: dict[str, bytes] = {}
    origin = server.add({"/m.c2pa": served(slot)})
    image, slot["manifest"] = remote_signed(creds, f"{origin}/m.c2pa")
    path = tmp_path / "remote.png"
    path.write_bytes(image)
    report = verify(path, fetch_remote=True, allow_private=True, check_watermark=False)
    assert hits(server, origin) == 1
    assert (report.verdict, report.c2pa_state) == ("verified", "valid")
    assert report.remote_url == f"{origin}/m.c2pa" and report.signer is not None
    result = CliRunner().invoke(
        verify_command, [str(path), "--fetch-remote", "--allow-private", "--no-watermark"]
    )
    assert result.exit_code == 0, result.output
    # not asked to fetch: nothing is fetched, and the report says how to
    quiet = verify(path, check_watermark=False)
    assert quiet.c2pa_state == "remote" and "--fetch-remote" in quiet.problems[0]
    assert hits(server, origin) == 2


@pytest.mark.usefixtures("public")
def test_fetch_remote_failures_say_why(server: Server, creds: Credentials, tmp_path: Path) -> None:
    from provenance import _remote

    big = b"\0" * (_remote.MAX_MANIFEST + 1)
    p = port(server.add({"/x": body(PAGE, HTML)}))
    front = serve_public(
        server,
        {
            "/hop.c2pa": redirect(f"http://１２７.０.０.１:{p}/m.c2pa"),
            "/big.c2pa": body(big, "application/c2pa"),
            "/junk.c2pa": body(b"not a manifest", "application/c2pa"),
            "/gone.c2pa": body(b"", status=404),
        },
    )
    expected = {
        "/hop.c2pa": ("remote", f"was not fetched: refused: {LOOPBACK}"),
        "/big.c2pa": ("remote", f"larger than {_remote.MAX_MANIFEST} bytes"),
        "/junk.c2pa": ("unreadable", "cannot be read"),
        "/gone.c2pa": ("remote", "HTTP 404"),
        "/none.c2pa": ("remote", "HTTP 404"),
    }
    for name, (state, reason) in expected.items():
        image, _ = remote_signed(creds, front + name)
        report = verify(image, fetch_remote=True, check_watermark=False)
        assert report.verdict == "not_verified" and report.c2pa_state == state, name
        assert reason in report.problems[0], (name, report.problems)
    assert hits(server, f"http://127.0.0.1:{p}") == 0
