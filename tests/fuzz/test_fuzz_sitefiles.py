"""Fuzzing the parsers of what a web site says: robots.txt, ai.txt, tdmrep.json, HTML heads and
response headers.

Targets: :meth:`provenance.optout.sitefiles.SitePolicy.parse` and ``.signals`` (robots.txt,
ai.txt, tdmrep.json with any status and body), :func:`provenance.optout.markup.html_signals`
(any page head in any declared charset) and :func:`~provenance.optout.markup.header_signals`.
Property: signals whose values are ``allowed`` / ``disallowed`` / ``unknown``, no exception,
within 2 s of CPU and 64 MB.
"""

from __future__ import annotations

import json

from fuzzing import bounded, budget
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance.optout.decision import Signal
from provenance.optout.markup import AI_TRAINING_AGENTS, header_signals, html_signals
from provenance.optout.sitefiles import SitePolicy

ORIGIN = "https://site.example"
AGENTS = {"sdkit-optout"}
_VALUES = ("allowed", "disallowed", "unknown")


def _valid(signals: object) -> None:
    assert isinstance(signals, list), repr(signals)
    for signal in signals:
        assert isinstance(signal, Signal) and signal.value in _VALUES, signal


# -- robots.txt and ai.txt ----------------------------------------------------------------------

_PATTERN_CHARS = st.sampled_from([*"/*$?=&.a-bAB%2F", "\u00e9", "\x00", " "])
PATTERNS = st.lists(_PATTERN_CHARS, max_size=30).map("".join)
_ROBOTS_LINE = st.one_of(
    st.tuples(
        st.sampled_from(["User-agent", "user-agent", "Disallow", "Allow", "Crawl-delay",
                         "Sitemap", "Request-rate", "Host", "Disallow ", "USER-AGENT"]),
        st.sampled_from([":", ": ", " : ", ""]),
        PATTERNS | st.sampled_from(["*", "GPTBot", "sdkit-optout", "CCBot", "1e9", "-1"]),
    ).map("".join),
    st.text(max_size=30),
    st.sampled_from(["", "#", " ", "\r", "\ufeff"]),
)  # fmt: skip
ROBOTS = st.lists(_ROBOTS_LINE, max_size=40).map(lambda lines: "\n".join(lines).encode())
ROBOTS_BOMBS = st.tuples(
    st.sampled_from(["\n", "User-agent: a\n", "Disallow: /*\n", "User-agent:\n\n", "*"]),
    st.integers(1, 100_000),
).map(lambda t: (t[0] * t[1]).encode())

# -- tdmrep.json --------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
_RULE = st.fixed_dictionaries(
    {},
    optional={
        "location": PATTERNS | _JSON,
        "tdm-reservation": st.sampled_from([0, 1, "0", "1", 2, None, True, 1.0]) | _JSON,
        "tdm-policy": st.text(max_size=20) | _JSON,
    },
)
TDMREP = st.one_of(
    st.lists(_RULE | _JSON, max_size=8).map(lambda rules: json.dumps(rules).encode()),
    # nested "*" patterns matched against a long path (exponential with a backtracking regex)
    st.tuples(
        st.integers(1, 30), st.sampled_from(["a", "ab", "/"]), st.sampled_from(["", "b", "$", "b$"])
    ).map(
        lambda t: json.dumps(
            [{"location": "/" + ("*" + t[1]) * t[0] + t[2], "tdm-reservation": 1}]
        ).encode()
    ),
    st.tuples(
        st.sampled_from(["[", '[{"location": ', "{", '[{"a": [']), st.integers(1, 200_000)
    ).map(lambda t: (t[0] * t[1]).encode()),
    st.integers(4000, 20_000).map(
        lambda n: b'[{"location": "/", "tdm-reservation": ' + b"1" * n + b"}]"
    ),
    st.binary(max_size=100),
)
#: A location of nested "*" and a path it almost matches (exponential with a backtracking regex).
STARS = st.tuples(
    st.integers(1, 30), st.sampled_from(["a", "ab", "/"]), st.sampled_from(["", "b", "$", "b$"])
)
STATUSES = st.sampled_from([200, 200, 200, 404, 500, 0, -1, 301, 310]) | st.integers(-5, 999)
URLS = st.one_of(
    st.just(ORIGIN + "/" + "a" * 60),
    st.lists(_PATTERN_CHARS, max_size=80).map(lambda p: ORIGIN + "/" + "".join(p)),
    st.text(max_size=40).map(lambda p: ORIGIN + "/" + p),
)


@settings(max_examples=budget(200))
@given(
    st.fixed_dictionaries(
        {
            "robots.txt": st.tuples(STATUSES, ROBOTS | ROBOTS_BOMBS | st.binary(max_size=100)),
            "ai.txt": st.tuples(STATUSES, ROBOTS | st.binary(max_size=100)),
            "tdmrep.json": st.tuples(STATUSES, TDMREP),
        }
    ),
    URLS,
)
def test_site_files_give_signals(fetched: dict[str, tuple[int, bytes]], url: str) -> None:
    def parse_and_ask() -> list[Signal]:
        policy = SitePolicy.parse(ORIGIN, fetched)
        return policy.signals(url, AGENTS, AI_TRAINING_AGENTS)

    _valid(bounded(parse_and_ask, seconds=2.0, megabytes=64))


@settings(max_examples=budget(30))
@given(STARS, st.integers(1, 200))
def test_tdmrep_locations_match_in_bounded_time(stars: tuple[int, str, str], length: int) -> None:
    count, piece, end = stars
    location = "/" + ("*" + piece) * count + end
    rules = json.dumps([{"location": location, "tdm-reservation": 1}]).encode()

    def parse_and_ask() -> list[Signal]:
        policy = SitePolicy.parse(ORIGIN, {"tdmrep.json": (200, rules)})
        return policy.signals(ORIGIN + "/" + "a" * length, AGENTS, ())

    _valid(bounded(parse_and_ask, seconds=2.0, megabytes=64))


@settings(max_examples=budget(20))
@given(st.sampled_from(["[", '[{"location": ', "{", '[{"a": [', "[[{}, "]), st.integers(1, 200_000))
def test_tdmrep_nesting_is_malformed_not_a_crash(opening: str, depth: int) -> None:
    def parse_and_ask() -> list[Signal]:
        policy = SitePolicy.parse(ORIGIN, {"tdmrep.json": (200, (opening * depth).encode())})
        return policy.signals(ORIGIN + "/a", AGENTS, ())

    _valid(bounded(parse_and_ask, seconds=2.0, megabytes=64))


# -- HTML heads and headers ---------------------------------------------------------------------

CHARSETS = st.one_of(
    st.none(),
    st.sampled_from(
        ["utf-8", "bogus", "rot13", "base64", "hex", "idna", "zlib", "bz2", "uu", "quopri",
         "utf-16", "utf-32", "utf-7", "punycode", "unicode_escape", "raw_unicode_escape",
         "undefined", "mbcs", "cp037", "", "utf-8\x00", "x-user-defined", "UTF8", "latin_1"]
    ),
    st.text(max_size=12),
)  # fmt: skip
_HTML_PIECES = st.sampled_from(
    [b"<html>", b"<head>", b"</head>", b"<body>", b"<!--", b"-->", b"<![x", b"<!DOCTYPE", b"<a ",
     b"<meta ", b'name="robots" ', b"name=robots ", b'content="noai, noimageai" ',
     b'name="tdm-reservation" content="1"', b'name="GPTBot" content="noai"', b">", b"/>",
     b"\xff\xfe", b"&#xD800;", b"&#99999999;", b"&amp", b"<script>", b"</script>", b"</", b"\x00",
     b"\xe9", b"'", b'"', b"=", b" "]
)  # fmt: skip
PAGES = st.one_of(
    st.lists(_HTML_PIECES, max_size=80).map(b"".join),
    st.tuples(_HTML_PIECES, st.integers(1, 100_000)).map(lambda t: b"<head>" + t[0] * t[1]),
    st.binary(max_size=300),
)


@settings(max_examples=budget(200))
@given(PAGES, CHARSETS)
def test_html_heads_give_signals_in_any_charset(page: bytes, charset: str | None) -> None:
    result = bounded(
        html_signals, page, "https://site.example/p", AGENTS, charset, seconds=2.0, megabytes=64
    )
    _valid(result)


_NAMES = st.sampled_from(["x-robots-tag", "tdm-reservation", "tdm-policy", "other"])
_HEADER_VALUES = st.one_of(
    st.sampled_from(["noai", "NoImageAI", "GPTBot: noai", "sdkit-optout: noai, noindex",
                     "unavailable_after: 2020", "1", "0", " 1 ", "2", ":", ",,,", ""]),
    st.text(max_size=40),
    st.tuples(st.sampled_from(["a:", ",", "noai,", " "]), st.integers(1, 20_000)).map(lambda t: t[0] * t[1]),
)  # fmt: skip


@settings(max_examples=budget(30))
@given(st.tuples(_HTML_PIECES, st.integers(1, 100_000)).map(lambda t: b"<head>" + t[0] * t[1]))
def test_html_head_repetition_in_bounded_time(page: bytes) -> None:
    _valid(bounded(html_signals, page, "https://site.example/p", AGENTS, None, seconds=2.0))


@settings(max_examples=budget(150))
@given(st.dictionaries(_NAMES, st.lists(_HEADER_VALUES, max_size=4), max_size=4))
def test_headers_give_signals(headers: dict[str, list[str]]) -> None:
    result = bounded(
        header_signals, headers, "https://site.example/p", AGENTS, seconds=2.0, megabytes=64
    )
    _valid(result)
