"""Opt-out checks over real HTTP: a server on 127.0.0.1 (started here) serves every signal and
its edge cases; the checker is provenance.optout.OptOutChecker with aiohttp."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from optout_images import c2pa_signed, credentials, encode, picture, sdkit_signed, with_xmp
from optout_server import Server, body, endless, redirect, slow

from provenance.errors import OptOutError
from provenance.optout import Decision, OptOutChecker
from provenance.optout.network import refusal

JPEG = "image/jpeg"
PNG = "image/png"
HTML = "text/html"
#: Every request's time limit. Generous: a loaded 2-core CI machine once took over 1 s for one.
TIMEOUT = 5.0
#: How long the slow handlers wait: far beyond TIMEOUT (they stop when the client gives up).
SLOW = 30.0


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    creds = credentials(tmp_path_factory.mktemp("creds"))
    return {
        "plain": encode(picture(0), "jpeg"),
        "plain_png": encode(picture(0), "png"),
        "sdkit": sdkit_signed(creds, "png"),
        "sdkit_jpeg": sdkit_signed(creds, "jpeg"),
        "constrained": c2pa_signed(
            creds, "c2pa.training-mining", {"c2pa.ai_training": {"use": "constrained"}}
        ),
        "xmp": with_xmp("DMI-PROHIBITED-AIMLTRAINING", "jpeg"),
    }


def _start_of_scan(jpeg: bytes) -> int:
    """Where a JPEG's scan starts, found by walking its segments (bytes FF DA also occur by
    chance inside a signed C2PA segment: about one signing in 400 put them before the scan, and
    a cut there made the endless JPEG a broken one)."""
    at = 2
    while jpeg[at + 1] != 0xDA:
        at += 2 + int.from_bytes(jpeg[at + 2 : at + 4], "big")
    return at


@pytest.fixture(scope="module")
def sites(server: Server, images: dict[str, bytes]) -> dict[str, str]:
    """Origins, each with its own site files and resources."""
    img = images["plain"]
    opted_out = server.add({"/work.jpg": body(img, JPEG, headers=[("X-Robots-Tag", "noai")])})
    agents: list[str] = []

    async def record_agent(request: web.Request) -> web.StreamResponse:
        agents.append(request.headers.get("User-Agent", ""))
        return web.Response(body=img, content_type=JPEG)

    open_site = server.add(
        {
            "/robots.txt": body("User-agent: *\nAllow: /\n"),
            "/plain.jpg": body(img, JPEG),
            "/ua.jpg": record_agent,
            "/xrt-case.jpg": body(img, JPEG, headers=[("x-robots-TAG", "NoImageAI")]),
            "/xrt-repeated.jpg": body(
                img, JPEG, headers=[("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "nofollow, noai")]
            ),
            "/xrt-gptbot.jpg": body(img, JPEG, headers=[("X-Robots-Tag", "GPTBot: noai")]),
            "/xrt-ours.jpg": body(img, JPEG, headers=[("X-Robots-Tag", "sdkit-optout: noimageai")]),
            "/xrt-googlebot.jpg": body(img, JPEG, headers=[("X-Robots-Tag", "googlebot: noai")]),
            "/xrt-colon.jpg": body(
                img,
                JPEG,
                headers=[("X-Robots-Tag", "unavailable_after: 25 Jun 2030 15:00:00 PST, noai")],
            ),
            "/xrt-noindex.jpg": body(
                img, JPEG, headers=[("X-Robots-Tag", "noindex, noimageindex")]
            ),
            "/tdm-1.jpg": body(
                img,
                JPEG,
                headers=[
                    ("tdm-reservation", "1"),
                    ("tdm-policy", "https://example.com/policy.json"),
                ],
            ),
            "/tdm-0.jpg": body(img, JPEG, headers=[("TDM-Reservation", "0")]),
            "/tdm-bad.jpg": body(img, JPEG, headers=[("tdm-reservation", "yes")]),
            "/meta.html": body(
                '<html><head><title>t</title><META NAME="Robots" CONTENT="noindex, NoAI"></head><body>x',
                HTML,
            ),
            "/meta-gptbot.html": body(
                '<html><head><meta name="GPTBot" content="noimageai"></head><body>', HTML
            ),
            "/meta-after-head.html": body(
                '<html><head></head><body><meta name="robots" content="noai">', HTML
            ),
            "/meta-tdm.html": body(
                '<html><head><meta name="tdm-reservation" content="1"><meta name="tdm-policy" content="https://e.com/p"></head>',
                HTML,
            ),
            "/sdkit.png": body(images["sdkit"], PNG),
            "/sdkit.jpg": body(images["sdkit_jpeg"], JPEG),
            "/constrained.jpg": body(images["constrained"], JPEG),
            "/xmp.jpg": body(images["xmp"], JPEG),
            "/to-opted-out": redirect(opted_out + "/work.jpg"),
            "/hop-noai": redirect("/plain.jpg", headers=[("X-Robots-Tag", "noai")]),
            "/loop": redirect("/loop"),
            "/chain-1": redirect("/chain-2"),
            "/chain-2": redirect("/chain-3"),
            "/chain-3": redirect("/plain.jpg"),
            "/error.jpg": body("boom", status=503),
            "/slow.jpg": slow(SLOW, body(img, JPEG)),
            "/endless.png": endless(PNG, start=b"\x89PNG\r\n\x1a\n"),
            "/endless-head.html": endless(
                HTML, start=b"<html><head>", chunk=b"<!-- filler -->" * 4096
            ),
            # a JPEG whose metadata (with a C2PA opt-out) is complete, then scan data forever
            "/endless.jpg": endless(
                JPEG, start=images["sdkit_jpeg"][: _start_of_scan(images["sdkit_jpeg"]) + 64]
            ),
            "/other.bin": body(b"\x00" * 100, "application/octet-stream"),
        }
    )
    ai_txt = server.add(
        {
            "/ai.txt": body(
                "# Spawning ai.txt\nUser-Agent: *\nDisallow: *.jpg\nDisallow: /gallery/\n"
            ),
            "/a.jpg": body(img, JPEG),
            "/b.JPG": body(img, JPEG),
            "/c.png": body(images["plain_png"], PNG),
        }
    )
    robots = server.add(
        {
            "/robots.txt": body(
                "User-agent: GPTBot\nDisallow: /art/\n\nUser-agent: sdkit-optout\nDisallow: /private/\n\n"
                "User-agent: *\nAllow: /\n"
            ),
            "/art/a.jpg": body(img, JPEG),
            "/private/a.jpg": body(img, JPEG),
            "/public/a.jpg": body(img, JPEG),
        }
    )
    tdmrep = server.add(
        {
            "/.well-known/tdmrep.json": body(
                '[{"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://example.com/p.json"},'
                ' {"location": "/first/*", "tdm-reservation": 0},'
                ' {"location": "/first/b*", "tdm-reservation": 1},'
                ' {"location": "*.png$", "tdm-reservation": 1}]',
                "application/json",
            ),
            "/reserved/a.jpg": body(img, JPEG),
            "/reserved/header-0.jpg": body(img, JPEG, headers=[("tdm-reservation", "0")]),
            "/reserved/meta-0.html": body(
                '<head><meta name="tdm-reservation" content="0"></head>',
                HTML,
                headers=[("tdm-reservation", "1")],
            ),
            "/first/b.jpg": body(img, JPEG),
            "/x.png": body(images["plain_png"], PNG),
            "/x.png?size=2": body(images["plain_png"], PNG),
        }
    )
    broken = server.add(
        {
            "/robots.txt": body("<html><body>Not a robots file</body></html>", HTML),
            "/ai.txt": body(b"\x00\xff\xfe garbage \x80\x81 Disallow", "text/plain"),
            "/.well-known/tdmrep.json": body(
                '{"location": "/", "tdm-reservation": 1', "application/json"
            ),
            "/a.jpg": body(img, JPEG),
        }
    )
    huge_robots = server.add(
        {
            "/robots.txt": body(
                "User-agent: *\nDisallow: /no/\n" + "# filler\n" * 200_000 + "Disallow: /\n"
            ),
            "/a.jpg": body(img, JPEG),
            "/no/a.jpg": body(img, JPEG),
        }
    )
    robots_503 = server.add({"/robots.txt": body("down", status=503), "/a.jpg": body(img, JPEG)})
    ai_500 = server.add({"/ai.txt": body("down", status=500), "/a.jpg": body(img, JPEG)})
    tdm_array = server.add(
        {
            "/.well-known/tdmrep.json": body('{"location": "/"}', "application/json"),
            "/a.jpg": body(img, JPEG),
        }
    )
    soft_404 = server.add(
        {
            "/.well-known/tdmrep.json": body(
                "<!doctype html><html><body>Page not found</body></html>", HTML
            ),
            "/robots.txt": body("<!doctype html><html><body>Page not found</body></html>", HTML),
            "/ai.txt": body("", "text/plain"),
            "/a.jpg": body(img, JPEG),
        }
    )
    slow_site = server.add({"/robots.txt": slow(SLOW, body("")), "/a.jpg": body(img, JPEG)})
    cross = server.add({"/go.jpg": redirect(robots + "/art/a.jpg")})
    return {
        "open": open_site,
        "opted_out": opted_out,
        "ai_txt": ai_txt,
        "robots": robots,
        "tdmrep": tdmrep,
        "broken": broken,
        "huge_robots": huge_robots,
        "robots_503": robots_503,
        "ai_500": ai_500,
        "tdm_array": tdm_array,
        "soft_404": soft_404,
        "slow_site": slow_site,
        "cross": cross,
        "agents": agents,  # type: ignore[dict-item]
    }


@pytest.fixture(scope="module")
def checker() -> OptOutChecker:
    return OptOutChecker(allow_private=True, timeout=TIMEOUT, max_body=1024 * 1024)


def _names(decision: Decision) -> list[tuple[str, str]]:
    return [(s.name, s.value) for s in decision.signals if s.overridden_by is None]


# -- HTTP headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "verdict", "evidence"),
    [
        ("/plain.jpg", "allowed", None),
        ("/xrt-case.jpg", "disallowed", "X-Robots-Tag: NoImageAI"),
        ("/xrt-repeated.jpg", "disallowed", "X-Robots-Tag: nofollow, noai"),
        ("/xrt-gptbot.jpg", "disallowed", "X-Robots-Tag: GPTBot: noai"),
        ("/xrt-ours.jpg", "disallowed", "X-Robots-Tag: sdkit-optout: noimageai"),
        ("/xrt-googlebot.jpg", "allowed", None),
        (
            "/xrt-colon.jpg",
            "disallowed",
            "X-Robots-Tag: unavailable_after: 25 Jun 2030 15:00:00 PST, noai",
        ),
        ("/xrt-noindex.jpg", "allowed", None),
        (
            "/tdm-1.jpg",
            "disallowed",
            "tdm-reservation: 1; tdm-policy: https://example.com/policy.json",
        ),
        ("/tdm-0.jpg", "allowed", "tdm-reservation: 0"),
        ("/tdm-bad.jpg", "unknown", "tdm-reservation: yes (TDMRep allows only 0 or 1)"),
    ],
)
def test_headers(
    sites: dict[str, str], checker: OptOutChecker, path: str, verdict: str, evidence: str | None
) -> None:
    decision = checker.check(sites["open"] + path)
    assert decision.verdict == verdict
    assert decision.allowed is (verdict == "allowed")
    if evidence is not None:
        signal = next(s for s in decision.signals if s.evidence == evidence)
        assert signal.source == sites["open"] + path
        assert signal.name == ("x-robots-tag" if "Robots" in evidence else "tdm-reservation")
        if verdict != "allowed":
            assert decision.evidence == (signal.describe(),)


def test_identifying_user_agent_is_sent(sites: dict[str, str], checker: OptOutChecker) -> None:
    checker.check(sites["open"] + "/ua.jpg")
    agent = sites["agents"][-1]  # type: ignore[index]
    assert agent.startswith("sdkit-optout/") and "docs/optout.md" in agent


# -- HTML -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "verdict", "signal"),
    [
        (
            "/meta.html",
            "disallowed",
            ("meta-robots", '<meta name="robots" content="noindex, NoAI">'),
        ),
        (
            "/meta-gptbot.html",
            "disallowed",
            ("meta-robots", '<meta name="gptbot" content="noimageai">'),
        ),
        ("/meta-after-head.html", "allowed", None),
        (
            "/meta-tdm.html",
            "disallowed",
            (
                "meta-tdm-reservation",
                '<meta name="tdm-reservation" content="1">; tdm-policy https://e.com/p',
            ),
        ),
    ],
)
def test_html_meta(
    sites: dict[str, str],
    checker: OptOutChecker,
    path: str,
    verdict: str,
    signal: tuple[str, str] | None,
) -> None:
    decision = checker.check(sites["open"] + path)
    assert decision.verdict == verdict
    if signal is not None:
        assert [(s.name, s.evidence) for s in decision.deciding] == [signal]


# -- files fetched over HTTP ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "evidence"),
    [
        (
            "/sdkit.png",
            "cawg.training-mining: cawg.ai_generative_training = notAllowed",
        ),
        (
            "/sdkit.jpg",
            "cawg.training-mining: cawg.ai_generative_training = notAllowed",
        ),
        (
            "/constrained.jpg",
            "c2pa.training-mining: c2pa.ai_training = constrained",
        ),
        ("/xmp.jpg", "plus:DataMining = DMI-PROHIBITED-AIMLTRAINING"),
        (
            "/endless.jpg",
            "cawg.training-mining: cawg.ai_generative_training = notAllowed",
        ),
    ],
)
def test_in_file_opt_outs_over_http(
    sites: dict[str, str], checker: OptOutChecker, path: str, evidence: str
) -> None:
    decision = checker.check(sites["open"] + path)
    assert decision.verdict == "disallowed", decision.signals
    assert [s.evidence for s in decision.deciding] == [evidence]
    assert decision.deciding[0].name in ("c2pa-training-mining", "iptc-data-mining")


def test_other_content_is_not_read(sites: dict[str, str], checker: OptOutChecker) -> None:
    assert checker.check(sites["open"] + "/other.bin").verdict == "allowed"


# -- site files -----------------------------------------------------------------------------


def test_ai_txt_extension_globs(
    server: Server, sites: dict[str, str], checker: OptOutChecker
) -> None:
    origin = sites["ai_txt"]
    a, b, c = checker.check_many([origin + "/a.jpg", origin + "/b.JPG", origin + "/c.png"])
    assert (a.verdict, b.verdict, c.verdict) == ("disallowed", "disallowed", "allowed")
    assert a.deciding[0].name == "ai.txt" and a.deciding[0].source == origin + "/ai.txt"
    assert "disallows /a.jpg" in a.deciding[0].evidence
    # a crawler does not fetch what ai.txt or robots.txt forbids; the site files come once
    assert server.count(origin, "/a.jpg") == 0 and server.count(origin, "/c.png") == 1
    assert server.count(origin, "/ai.txt") == 1


def test_robots_txt_ai_crawlers_and_our_agent(
    server: Server, sites: dict[str, str], checker: OptOutChecker
) -> None:
    origin = sites["robots"]
    art, private, public = checker.check_many(
        [origin + "/art/a.jpg", origin + "/private/a.jpg", origin + "/public/a.jpg"]
    )
    assert (
        art.verdict == "disallowed"
        and art.deciding[0].evidence == "disallows /art/a.jpg for User-agent GPTBot"
    )
    assert private.deciding[0].evidence == "disallows /private/a.jpg for User-agent sdkit-optout"
    assert public.verdict == "allowed"
    assert server.count(origin, "/art/a.jpg") == 0 and server.count(origin, "/robots.txt") == 1


def test_tdmrep_json_first_match_and_precedence(
    sites: dict[str, str], checker: OptOutChecker
) -> None:
    origin = sites["tdmrep"]
    reserved, header, meta, first, png, query = checker.check_many(
        [
            origin + p
            for p in (
                "/reserved/a.jpg",
                "/reserved/header-0.jpg",
                "/reserved/meta-0.html",
                "/first/b.jpg",
                "/x.png",
                "/x.png?size=2",
            )
        ]
    )
    assert reserved.verdict == "disallowed"
    assert (
        reserved.deciding[0].evidence
        == 'rule 0: {"location": "/reserved/*", "tdm-policy": "https://example.com/p.json", "tdm-reservation": 1}'
    )
    # file < header: the header's 0 overrides the file's reservation
    assert header.verdict == "allowed"
    assert [(s.name, s.value, s.overridden_by) for s in header.signals] == [
        ("tdmrep.json", "disallowed", "tdm-reservation"),
        ("tdm-reservation", "allowed", None),
    ]
    # header < HTML meta
    assert meta.verdict == "allowed"
    assert {s.name: s.overridden_by for s in meta.signals} == {
        "tdmrep.json": "meta-tdm-reservation",
        "tdm-reservation": "meta-tdm-reservation",
        "meta-tdm-reservation": None,
    }
    assert first.verdict == "allowed" and "rule 1" in first.signals[0].evidence  # first match wins
    assert png.verdict == "disallowed" and query.verdict == "allowed"  # "$" anchors the end


@pytest.mark.parametrize(
    ("site", "verdict", "signal", "evidence"),
    [
        (
            "broken",
            "unknown",
            "tdmrep.json",
            "malformed tdmrep.json",
        ),  # robots (HTML) and ai.txt (garbage) say nothing
        ("tdm_array", "unknown", "tdmrep.json", "the top level is not an array"),
        ("robots_503", "disallowed", "robots.txt", "RFC 9309 §2.3.1.4 means complete disallow"),
        ("ai_500", "unknown", "ai.txt", "HTTP 500"),
        ("slow_site", "disallowed", "robots.txt", f"timed out after {TIMEOUT:g} s"),
    ],
)
def test_unreadable_site_files_fail_closed(
    sites: dict[str, str],
    checker: OptOutChecker,
    site: str,
    verdict: str,
    signal: str,
    evidence: str,
) -> None:
    decision = checker.check(sites[site] + "/a.jpg")
    assert decision.verdict == verdict and decision.allowed is False
    assert [s.name for s in decision.deciding] == [signal]
    assert evidence in decision.deciding[0].evidence


def test_soft_404_site_files_say_nothing(sites: dict[str, str], checker: OptOutChecker) -> None:
    decision = checker.check(sites["soft_404"] + "/a.jpg")
    assert (decision.verdict, decision.signals) == ("allowed", ())


def test_blocking_calls_refuse_a_running_loop(checker: OptOutChecker) -> None:
    import asyncio

    async def inside() -> None:
        with pytest.raises(OptOutError, match="cannot run inside an event loop"):
            checker.check("https://example.com/")

    asyncio.run(inside())


def test_huge_robots_txt_is_read_to_500_kib(sites: dict[str, str], checker: OptOutChecker) -> None:
    origin = sites["huge_robots"]
    ok, no = checker.check_many([origin + "/a.jpg", origin + "/no/a.jpg"])
    assert ok.verdict == "allowed"  # the final "Disallow: /" lies beyond 512 KiB
    assert no.verdict == "disallowed"


def test_site_files_fetched_once_per_origin(server: Server, sites: dict[str, str]) -> None:
    fresh = OptOutChecker(allow_private=True, timeout=TIMEOUT)
    origin = sites["open"]
    before = {
        p: server.count(origin, p) for p in ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json")
    }
    decisions = fresh.check_many([origin + "/plain.jpg"] * 30)
    after = {p: server.count(origin, p) for p in before}
    assert all(after[p] - before[p] == 1 for p in before)
    assert sum(d.requests for d in decisions) == 30 + 3


# -- redirects ------------------------------------------------------------------------------


def test_redirects(sites: dict[str, str], checker: OptOutChecker) -> None:
    origin = sites["open"]
    to_opted, hop, loop, chain, cross = checker.check_many(
        [
            origin + "/to-opted-out",
            origin + "/hop-noai",
            origin + "/loop",
            origin + "/chain-1",
            sites["cross"] + "/go.jpg",
        ]
    )
    assert (
        to_opted.verdict == "disallowed" and to_opted.final_url == sites["opted_out"] + "/work.jpg"
    )
    assert to_opted.deciding[0].source == sites["opted_out"] + "/work.jpg"
    assert hop.verdict == "disallowed" and hop.deciding[0].source == origin + "/hop-noai"
    assert loop.verdict == "unknown" and loop.deciding[0].evidence == "more than 5 redirects"
    assert chain.verdict == "allowed" and chain.final_url == origin + "/plain.jpg"
    # the redirect target's own robots.txt applies
    assert cross.verdict == "disallowed" and cross.deciding[0].name == "robots.txt"


# -- bodies, timeouts, errors ---------------------------------------------------------------


def test_endless_and_slow_bodies(sites: dict[str, str], checker: OptOutChecker) -> None:
    origin = sites["open"]
    image, page, slow_image, error = checker.check_many(
        [
            origin + "/endless.png",
            origin + "/endless-head.html",
            origin + "/slow.jpg",
            origin + "/error.jpg",
        ]
    )
    assert image.verdict == "unknown" and "larger than max_body" in image.evidence[0]
    assert page.verdict == "allowed"  # the head never ends: 512 KiB read, no opt-out in them
    assert (
        slow_image.verdict == "unknown"
        and f"timed out after {TIMEOUT:g} s" in slow_image.evidence[0]
    )
    assert error.verdict == "unknown" and "HTTP 503" in error.evidence[0]


def test_on_error_allow_lets_unknown_through(sites: dict[str, str]) -> None:
    lenient = OptOutChecker(allow_private=True, on_error="allow")
    decision = lenient.check(sites["open"] + "/error.jpg")
    assert (decision.verdict, decision.allowed) == ("unknown", True)
    assert lenient.check(sites["open"] + "/xrt-case.jpg").allowed is False


# -- SSRF -----------------------------------------------------------------------------------


def test_private_addresses_are_refused_by_default(server: Server, sites: dict[str, str]) -> None:
    strict = OptOutChecker(timeout=TIMEOUT)
    port = sites["open"].rsplit(":", 1)[1]
    before = server.total()
    literal, named, ftp, creds = strict.check_many(
        [
            f"http://127.0.0.1:{port}/plain.jpg",
            f"http://localhost:{port}/plain.jpg",
            "ftp://example.com/a.jpg",
            f"http://u:p@127.0.0.1:{port}/",
        ]
    )
    assert server.total() == before  # nothing reached the server
    assert literal.verdict == "unknown" and "127.0.0.1 is a loopback address" in literal.evidence[0]
    assert (
        named.verdict == "unknown"
        and "localhost resolves to 127.0.0.1 is a loopback address" in named.evidence[0]
    )
    assert "unsupported URL scheme 'ftp'" in ftp.evidence[0]
    assert "credentials" in creds.evidence[0]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not a public"),
    ],
)
def test_refusal_table(address: str, reason: str) -> None:
    assert reason in (refusal(address) or "")


def test_public_addresses_pass() -> None:
    assert refusal("8.8.8.8") is None and refusal("2606:4700:4700::1111") is None


def test_local_paths_and_missing_files(
    tmp_path: Path, images: dict[str, bytes], checker: OptOutChecker
) -> None:
    (tmp_path / "sdkit.png").write_bytes(images["sdkit"])
    assert checker.check(tmp_path / "sdkit.png").verdict == "disallowed"
    missing = checker.check(str(tmp_path / "nope.png"))
    assert missing.verdict == "unknown" and "cannot read the file" in missing.evidence[0]
