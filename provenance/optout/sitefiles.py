"""Site-wide files, read once per origin: ``/robots.txt``, ``/ai.txt``, ``/.well-known/tdmrep.json``.

* ``robots.txt`` (RFC 9309, parsed by protego): a URL our own user agent may not fetch is
  disallowed, and so is one that a group naming an AI-training crawler
  (:data:`~provenance.optout.markup.AI_TRAINING_AGENTS`) disallows. A 4xx answer means no rules
  (RFC 9309 §2.3.1.3); a 5xx answer or a network failure means complete disallow (§2.3.1.4).
  Lines that do not parse are ignored and the others still count (§2.2).
* ``ai.txt`` (Spawning): robots.txt grammar whose patterns are often extension globs
  (``Disallow: *.jpg``); matched case-insensitively as well, so ``.JPG`` does not slip through.
  4xx: no rules; 5xx or a network failure: unknown.
* ``tdmrep.json`` (W3C TDMRep): a JSON array of ``{"location", "tdm-reservation",
  "tdm-policy"}`` rules; locations are robots-style patterns (``*`` any characters, ``$`` end)
  matched against the path and query; rules are tried in order and the first match applies.
  4xx, an empty file or an HTML page (a "soft 404"): no rules; 5xx, a network failure, or JSON
  that is not such an array: unknown.

Example:
    >>> policy = SitePolicy.parse("https://a.example", {
    ...     "tdmrep.json": (200, b'[{"location": "/img/*", "tdm-reservation": 1}]'),
    ...     "ai.txt": (200, b"User-Agent: *\\nDisallow: *.png"),
    ...     "robots.txt": (404, b""),
    ... })
    >>> [(s.name, s.value) for s in policy.signals("https://a.example/img/x.PNG", {"sdkit"}, ())]
    [('ai.txt', 'disallowed'), ('tdmrep.json', 'disallowed')]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from protego import Protego

from .decision import Signal
from .markup import tdm_value

__all__ = [
    "MAX_LOCATION",
    "MAX_SITE_FILE",
    "MAX_TDMREP_RULES",
    "SITE_FILES",
    "LocationPattern",
    "SiteFile",
    "SitePolicy",
    "escape_surrogates",
    "location_pattern",
]

#: Site files and their paths, in the order they are fetched.
SITE_FILES: Mapping[str, str] = {
    "robots.txt": "/robots.txt",
    "ai.txt": "/ai.txt",
    "tdmrep.json": "/.well-known/tdmrep.json",
}
#: Bytes read of each site file (RFC 9309 §2.5 asks parsers to read at least 500 KiB).
MAX_SITE_FILE = 512 * 1024
#: Characters of one tdmrep.json ``location`` (a longer one makes the file malformed).
MAX_LOCATION = 4096
#: Rules of one tdmrep.json (more make the file malformed).
MAX_TDMREP_RULES = 10_000

Status = Literal["ok", "absent", "error"]
_SURROGATE = re.compile("[\ud800-\udfff]")
_USER_AGENT_LINE = re.compile(r"^[ \t]*user-agent[ \t]*:[ \t]*([^#\s]+)", re.I | re.M)


@dataclass(frozen=True)
class LocationPattern:
    """A robots-style path pattern (``*`` = any characters, a final ``$`` = end of the path).

    Matched without regular expressions: the literal parts between the ``*`` are found in
    order, each at its leftmost place after the one before (the greedy matcher of RFC 9309
    implementations), so a match takes at most one pass of ``str.find`` per part: linear in
    the path for each part, whatever the pattern (a regex of ``.*`` parts backtracks
    exponentially in their number).

    Attributes:
        parts: the literal parts between the ``*`` (the first one always starts the path).
        anchored: the pattern ended with ``$``: the last part must end the path.
    """

    parts: tuple[str, ...]
    anchored: bool

    def match(self, path: str) -> bool:
        """Whether ``path`` (path and query) matches from its start."""
        first, *middle = self.parts
        if not path.startswith(first):
            return False
        if not middle:  # no '*'
            return path == first if self.anchored else True
        *middle, last = middle
        pos = len(first)
        for part in middle:
            found = path.find(part, pos)
            if found < 0:
                return False
            pos = found + len(part)
        if self.anchored:
            return len(path) - len(last) >= pos and path.endswith(last)
        return path.find(last, pos) >= 0


def location_pattern(location: str) -> LocationPattern:
    """A tdmrep.json ``location`` as a :class:`LocationPattern`.

    Raises:
        ValueError: the location is longer than :data:`MAX_LOCATION` characters.

    Example:
        >>> location_pattern("/img/*.jpg$").match("/img/a/b.jpg")
        True
        >>> location_pattern("/img/*.jpg$").match("/img/b.jpg?x=1")
        False
        >>> location_pattern("img/**").match("/img/")
        True
    """
    if len(location) > MAX_LOCATION:
        raise ValueError(f"a location is longer than {MAX_LOCATION} characters")
    anchored = location.endswith("$")
    body = location[:-1] if anchored else location
    if not body.startswith(("/", "*")):
        body = "/" + body
    return LocationPattern(tuple(body.split("*")), anchored)


@dataclass(frozen=True)
class SiteFile:
    """One site file as fetched and parsed.

    Attributes:
        name: ``robots.txt``, ``ai.txt`` or ``tdmrep.json``.
        url: where it was fetched.
        status: ``ok``, ``absent`` (4xx: no rules) or ``error`` (5xx, network, malformed).
        detail: the HTTP status or error, in words.
        parsed: protego's parser, or the tdmrep rules ``(pattern, rule dict)``.
        agents: lower-cased user agents that robots-grammar groups name.
    """

    name: str
    url: str
    status: Status
    detail: str = ""
    parsed: Any = field(default=None, repr=False, compare=False)
    agents: frozenset[str] = frozenset()


def _parse(name: str, url: str, code: int, body: bytes) -> SiteFile:
    if code == 0 or code >= 500:
        return SiteFile(name, url, "error", body.decode("utf-8", "replace") or f"HTTP {code}")
    if 400 <= code < 500:
        return SiteFile(name, url, "absent", f"HTTP {code}")
    if code >= 300:  # redirects are followed by the fetcher; one left over is a dead end
        return SiteFile(name, url, "error", f"HTTP {code}: too many redirects")
    text = body[:MAX_SITE_FILE].decode("utf-8", "replace")
    if name == "tdmrep.json":
        return _parse_tdmrep(url, text)
    agents = frozenset(a.lower() for a in _USER_AGENT_LINE.findall(text))
    return SiteFile(name, url, "ok", f"HTTP {code}", Protego.parse(text), agents)


def _parse_tdmrep(url: str, text: str) -> SiteFile:
    stripped = text.lstrip()
    if not stripped or stripped.startswith("<"):  # empty, or an HTML page served for any path
        why = "empty" if not stripped else "an HTML page (a soft 404), not JSON"
        return SiteFile("tdmrep.json", url, "absent", f"HTTP 200 but {why}: no rules")
    try:
        rules = _tdmrep_rules(json.loads(text))
    except RecursionError:  # "[" * 100_000: nested deeper than the parser recurses
        return SiteFile("tdmrep.json", url, "error", "malformed tdmrep.json: nested too deeply")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return SiteFile("tdmrep.json", url, "error", f"malformed tdmrep.json: {exc}")
    return SiteFile("tdmrep.json", url, "ok", "HTTP 200", rules)


def _tdmrep_rules(data: object) -> list[tuple[LocationPattern, dict[str, Any]]]:
    """``(pattern, rule)`` of each rule of a parsed tdmrep.json, the rule cut to its three keys.

    Raises:
        ValueError: the JSON is not an array of rules (see the module docstring).
    """
    if not isinstance(data, list):
        raise ValueError("the top level is not an array")
    if len(data) > MAX_TDMREP_RULES:
        raise ValueError(f"more than {MAX_TDMREP_RULES} rules")
    rules = []
    for i, rule in enumerate(data):
        if not isinstance(rule, dict) or not isinstance(rule.get("location"), str):
            raise ValueError(f"rule {i} has no location string")
        reservation = rule.get("tdm-reservation")
        if type(reservation) not in (int, str) or str(reservation) not in ("0", "1"):
            raise ValueError(f"rule {i}: tdm-reservation must be 0 or 1")
        kept = {"location": rule["location"], "tdm-reservation": reservation}
        if isinstance(rule.get("tdm-policy"), str):
            kept["tdm-policy"] = rule["tdm-policy"]
        rules.append((location_pattern(rule["location"]), kept))
    return rules


@dataclass(frozen=True)
class SitePolicy:
    """The site files of one origin and what they say about its URLs."""

    origin: str
    files: tuple[SiteFile, ...]
    refused: str | None = None

    @classmethod
    def parse(cls, origin: str, fetched: Mapping[str, tuple[int, bytes]]) -> SitePolicy:
        """From ``{name: (status, body or error text)}``.

        The status is the HTTP status, 0 for a network failure, or -1 when the SSRF policy
        refused the request (then :attr:`refused` says why and no rule applies).
        """
        refusals = [body for code, body in fetched.values() if code == -1]
        if refusals:
            return cls(origin, (), refusals[0].decode("utf-8", "replace"))
        files = tuple(
            _parse(name, origin + path, *fetched[name])
            for name, path in SITE_FILES.items()
            if name in fetched
        )
        return cls(origin, files)

    def signals(self, url: str, agents: set[str], ai_agents: Iterable[str]) -> list[Signal]:
        """What the site files say about ``url``.

        Args:
            url: an absolute URL of this origin.
            agents: our own lower-cased user-agent tokens (the first is the product token).
            ai_agents: AI-training crawler tokens whose named groups count.
        """
        url = escape_surrogates(url)  # protego raises on a lone surrogate
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found: list[Signal] = []
        for site_file in self.files:
            check = _CHECKS[site_file.name]
            found.extend(check(site_file, url, path, agents, tuple(ai_agents)))
        return found


def escape_surrogates(url: str) -> str:
    """``url`` with each lone surrogate percent-encoded as the byte it stands for.

    aiohttp reads header bytes that are not UTF-8 with ``surrogateescape``, so a redirect's
    ``Location`` can bring ``\\udc80``-``\\udcff`` into a URL; such a URL cannot be encoded,
    printed, or matched by protego. Any other surrogate becomes U+FFFD's encoding.

    Example:
        >>> escape_surrogates("https://a.example/x\\udcff.jpg")
        'https://a.example/x%FF.jpg'
    """
    return _SURROGATE.sub(_percent_encoded, url)


def _percent_encoded(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"%{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else "%EF%BF%BD"


def _unreadable(site_file: SiteFile, value: Literal["unknown", "disallowed"], why: str) -> Signal:
    return Signal(site_file.name, value, site_file.url, f"{site_file.detail}; {why}")


def _robots(
    f: SiteFile, url: str, path: str, agents: set[str], ai_agents: tuple[str, ...]
) -> list[Signal]:
    if f.status == "absent":
        return []
    if f.status == "error":
        return [
            _unreadable(f, "disallowed", "unreachable: RFC 9309 §2.3.1.4 means complete disallow")
        ]
    blocked = [a for a in sorted(agents) if not f.parsed.can_fetch(url, a)]
    named = [a for a in ai_agents if a.lower() in f.agents and not f.parsed.can_fetch(url, a)]
    who = blocked[:1] + named
    if not who:
        return []
    text = f"disallows {path} for User-agent {', '.join(who)}"
    return [Signal("robots.txt", "disallowed", f.url, text)]


def _ai_txt(
    f: SiteFile, url: str, path: str, agents: set[str], ai_agents: tuple[str, ...]
) -> list[Signal]:
    if f.status == "absent":
        return []
    if f.status == "error":
        return [_unreadable(f, "unknown", "could not be read")]
    parts = urlsplit(url)
    lowered = parts._replace(path=parts.path.lower()).geturl()
    for agent in sorted(agents):
        if not (f.parsed.can_fetch(url, agent) and f.parsed.can_fetch(lowered, agent)):
            return [
                Signal("ai.txt", "disallowed", f.url, f"disallows {path} (User-Agent {agent} or *)")
            ]
    return []


def _tdmrep(
    f: SiteFile, url: str, path: str, agents: set[str], ai_agents: tuple[str, ...]
) -> list[Signal]:
    if f.status == "absent":
        return []
    if f.status == "error":
        return [_unreadable(f, "unknown", "TDM rights cannot be told")]
    for index, (pattern, rule) in enumerate(f.parsed):
        if pattern.match(path):
            shown = json.dumps(rule, sort_keys=True)
            return [
                Signal(
                    "tdmrep.json",
                    tdm_value(str(rule["tdm-reservation"])),
                    f.url,
                    f"rule {index}: {shown}",
                )
            ]
    return []


_CHECKS = {"robots.txt": _robots, "ai.txt": _ai_txt, "tdmrep.json": _tdmrep}
