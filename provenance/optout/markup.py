"""Opt-outs stated in HTTP response headers and in an HTML page's ``<head>``.

* ``X-Robots-Tag``: every header line, names and directives case-insensitive; ``noai`` and
  ``noimageai`` disallow. A line or item scoped to a user agent (``GPTBot: noai``) counts when
  the agent is ours or an AI-training crawler (:data:`AI_TRAINING_AGENTS`).
* ``tdm-reservation`` / ``tdm-policy`` (W3C TDMRep): ``1`` reserves TDM rights (disallowed,
  the policy URL is kept as evidence), ``0`` waives them; anything else cannot be read.
* ``<meta name="robots" content="noai, noimageai">`` (or ``name`` = one of the agents above)
  and ``<meta name="tdm-reservation" content="1">``.

Example:
    >>> [s.evidence for s in header_signals({"x-robots-tag": ["NoAI"]}, "u", {"sdkit"})]
    ['X-Robots-Tag: NoAI']
    >>> [s.value for s in header_signals({"tdm-reservation": ["0"]}, "u", {"sdkit"})]
    ['allowed']
    >>> [s.name for s in html_signals(b'<meta name="robots" content="noimageai">', "u", set())]
    ['meta-robots']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from html.parser import HTMLParser

from .decision import Signal, Value

__all__ = [
    "AI_DIRECTIVES",
    "AI_TRAINING_AGENTS",
    "HEAD_END",
    "header_signals",
    "html_signals",
    "tdm_value",
]

#: Robots directives that forbid AI use; everything else (noindex, nofollow…) is not an opt-out.
AI_DIRECTIVES = frozenset({"noai", "noimageai"})

#: Crawlers whose operators say they collect AI-training data. robots.txt groups and scoped
#: X-Robots-Tag / meta directives that name one of them count as an opt-out from training.
AI_TRAINING_AGENTS: tuple[str, ...] = (
    "GPTBot",
    "ClaudeBot",
    "anthropic-ai",
    "CCBot",
    "Google-Extended",
    "Applebot-Extended",
    "meta-externalagent",
    "Bytespider",
    "cohere-training-data-crawler",
    "AI2Bot",
    "Diffbot",
    "img2dataset",
)

# X-Robots-Tag directives that have a colon of their own (not a user-agent scope).
_COLON_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
#: TDMRep reservation values -> signal value (anything else cannot be read).
_TDM_VALUES: Mapping[str, Value] = {"1": "disallowed", "0": "allowed"}
_SCOPED = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*:(.*)", re.S)
#: Where a page's <head> ends for our purposes (we stop reading there).
HEAD_END = re.compile(rb"</head\s*>|<body[\s>]", re.I)


def _robots_hits(value: str, agents: set[str]) -> list[str]:
    """The AI directives in one X-Robots-Tag value (or meta content) that apply to us."""
    scope: str | None = None
    hits = []
    for item in value.split(","):
        match = _SCOPED.fullmatch(item)
        if match and match[1].lower() not in _COLON_DIRECTIVES:
            scope, item = match[1].lower(), match[2]
        directive = item.strip().lower()
        if directive in AI_DIRECTIVES and (scope is None or scope in agents):
            hits.append(directive)
    return hits


def tdm_value(text: str) -> Value:
    """A TDMRep ``tdm-reservation`` value -> signal value (``1``, ``0``, else unreadable).

    Example:
        >>> tdm_value(" 1 "), tdm_value("0"), tdm_value("yes")
        ('disallowed', 'allowed', 'unknown')
    """
    return _TDM_VALUES.get(text.strip(), "unknown")


def header_signals(
    headers: Mapping[str, Sequence[str]], source: str, agents: set[str]
) -> list[Signal]:
    """Signals in one response's headers.

    Args:
        headers: lower-cased header name -> every value sent under it.
        source: the URL that answered.
        agents: lower-cased user-agent tokens that scoped directives must name to count.
    """
    found: list[Signal] = []
    for value in headers.get("x-robots-tag", ()):
        if _robots_hits(value, agents):
            found.append(
                Signal("x-robots-tag", "disallowed", source, f"X-Robots-Tag: {value.strip()}")
            )
    policies = [p.strip() for p in headers.get("tdm-policy", ())]
    for value in headers.get("tdm-reservation", ()):
        evidence = f"tdm-reservation: {value.strip()}"
        kind = tdm_value(value)
        if kind == "disallowed" and policies:
            evidence += f"; tdm-policy: {', '.join(policies)}"
        if kind == "unknown":
            evidence += " (TDMRep allows only 0 or 1)"
        found.append(Signal("tdm-reservation", kind, source, evidence))
    return found


class _MetaParser(HTMLParser):
    """Collects (name, content) of <meta> tags until the head ends."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.metas: list[tuple[str, str]] = []
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done:
            return
        if tag == "body":
            self.done = True
        elif tag == "meta":
            values = {k.lower(): (v or "") for k, v in attrs}
            if "name" in values:
                self.metas.append((values["name"].strip().lower(), values.get("content", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.done = True


def _metas(html: bytes, charset: str | None) -> list[tuple[str, str]]:
    text = html.decode(charset or "utf-8", errors="replace")
    parser = _MetaParser()
    parser.feed(text)
    parser.close()
    return parser.metas


def html_signals(
    html: bytes, source: str, agents: set[str], charset: str | None = None
) -> list[Signal]:
    """Signals in a page's ``<meta>`` tags (the head only; the page may be cut short).

    Args:
        html: the page's first bytes (up to the end of its head).
        source: the page's URL.
        agents: lower-cased user-agent tokens a ``<meta name=AGENT>`` must name to count.
        charset: the page's charset, when the response said.
    """
    found: list[Signal] = []
    metas = _metas(html, charset)
    policies = [content.strip() for name, content in metas if name == "tdm-policy"]
    for name, content in metas:
        if name == "robots" or name in agents:
            if _robots_hits(content, agents):
                text = f'<meta name="{name}" content="{content}">'
                found.append(Signal("meta-robots", "disallowed", source, text))
        elif name == "tdm-reservation":
            kind = tdm_value(content)
            text = f'<meta name="tdm-reservation" content="{content}">'
            if kind == "disallowed" and policies:
                text += f"; tdm-policy {', '.join(policies)}"
            found.append(Signal("meta-tdm-reservation", kind, source, text))
    return found


def lower_agents(tokens: Iterable[str]) -> set[str]:
    """User-agent product tokens, lower-cased (``"sdkit-optout/0.1"`` -> ``"sdkit-optout"``)."""
    return {t.split("/", 1)[0].strip().lower() for t in tokens if t.strip()}
