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

import codecs
import html
import re
from collections.abc import Iterable, Mapping, Sequence

from .decision import Signal, Value, few_signals

__all__ = [
    "AI_DIRECTIVES",
    "AI_TRAINING_AGENTS",
    "HEAD_END",
    "MAX_HTML_HEAD",
    "decode_text",
    "header_signals",
    "html_signals",
    "tdm_value",
    "text_codec",
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
#: Where a page's <head> ends for our purposes (we stop reading there). Each alternative is a
#: literal followed by one bounded class, so a search is linear in the bytes searched.
HEAD_END = re.compile(rb"</head\s*>|<body[\s>]", re.I)
#: Characters of a page's head that :func:`html_signals` reads at most (what the checker reads).
MAX_HTML_HEAD = 512 * 1024
_MAX_CHARSET = 64
#: Codecs that Python counts as text encodings but that are not page charsets (host names, escapes).
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"})
#: The next markup construct: a comment, a bogus comment or doctype, an end tag, a start tag.
_TOKEN = re.compile(r"<(?:(!--)|([!?])|/([A-Za-z][^\s/>]*)|([A-Za-z][^\s/>]*))")
#: The rest of a start tag: attributes (quotes may hold ``>``) up to ``>``; possessive, so an
#: unclosed quote fails at once instead of backtracking.
_TAG_REST = re.compile(r"""((?:[^>"']|"[^"]*"|'[^']*')*+)>""")
#: One attribute; an unclosed quote takes the rest rather than failing (no rescans).
_ATTRIBUTE = re.compile(
    r"""([^\s/>"'=][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"?|'([^']*)'?|([^\s>"']+)))?"""
)
#: Start tags that end the head for our purposes.
_HEAD_STOPS = frozenset({"body", "plaintext"})
#: Elements whose content is text up to their end tag (WHATWG raw text and RCDATA).
_RAW_TEXT: Mapping[str, re.Pattern[str]] = {
    name: re.compile(rf"</{name}(?=[\s/>]|\Z)", re.I)
    for name in ("script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes")
}


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
    for value in map(_printable, headers.get("x-robots-tag", ())):
        if _robots_hits(value, agents):
            found.append(
                Signal("x-robots-tag", "disallowed", source, f"X-Robots-Tag: {value.strip()}")
            )
    policies = [_printable(p).strip() for p in headers.get("tdm-policy", ())]
    for value in map(_printable, headers.get("tdm-reservation", ())):
        evidence = f"tdm-reservation: {value.strip()}"
        kind = tdm_value(value)
        if kind == "disallowed" and policies:
            evidence += f"; tdm-policy: {', '.join(policies)}"
        if kind == "unknown":
            evidence += " (TDMRep allows only 0 or 1)"
        found.append(Signal("tdm-reservation", kind, source, evidence))
    return few_signals(found)


def text_codec(charset: str | None) -> str:
    """The codec to decode a page with: its declared charset if that is a text encoding, else utf-8.

    A server names the charset, so it may name anything Python knows: ``rot13``, ``base64`` or
    ``zlib`` (bytes-to-bytes codecs), ``idna`` or ``punycode`` (host-name codecs that cannot
    replace bad bytes), or nothing Python knows at all. Those are read as utf-8.

    Example:
        >>> text_codec("ISO-8859-1"), text_codec("rot13"), text_codec("bogus"), text_codec(None)
        ('iso8859-1', 'utf-8', 'utf-8', 'utf-8')
    """
    if not charset or len(charset) > _MAX_CHARSET:
        return "utf-8"
    try:
        info = codecs.lookup(charset.strip().strip("\"'"))
    except (LookupError, ValueError, TypeError):  # unknown name, or a NUL in it
        return "utf-8"
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return "utf-8"
    return info.name


def decode_text(data: bytes, charset: str | None) -> str:
    """``data`` as text in ``charset`` (see :func:`text_codec`); bad bytes become U+FFFD.

    Example:
        >>> decode_text(b"caf\\xe9", "latin-1"), decode_text(b"caf\\xe9", "base64")
        ('café', 'caf\ufffd')
    """
    try:
        return data.decode(text_codec(charset), "replace")
    except (UnicodeError, LookupError, ValueError):  # a codec that cannot replace: read as utf-8
        return data.decode("utf-8", "replace")


def _printable(text: str) -> str:
    """Header text with the undecodable bytes aiohttp keeps as lone surrogates shown as U+FFFD.

    Such text cannot be printed or written as utf-8, so evidence never carries it.

    Example:
        >>> _printable("noai\\udcff")
        'noai\ufffd'
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _attributes(inside: str) -> dict[str, str]:
    """A start tag's attributes (names lower-cased, character references resolved, first wins)."""
    found: dict[str, str] = {}
    for match in _ATTRIBUTE.finditer(inside):
        name = match[1].lower()
        value = next((v for v in match.groups()[1:] if v is not None), "")
        found.setdefault(name, html.unescape(value))
    return found


def _metas(data: bytes, charset: str | None) -> list[tuple[str, str]]:
    """``(name, content)`` of every ``<meta name>`` before the head ends (``</head>``, ``<body>``).

    A linear scan after the WHATWG tokenizer's main states: comments (``<!--`` to ``-->``),
    bogus comments and doctypes (``<!``, ``<?`` to ``>``), end tags, start tags with quoted
    attributes, and the raw text of ``<script>``, ``<style>``, ``<title>``… Every construct is
    found with one forward search from where the last one ended, and one left open (a comment,
    a quote, a tag cut by the end of the bytes read) ends the scan, so the time is linear in
    the page whatever it holds (html.parser.HTMLParser is quadratic on repeated ``<!--`` or
    ``<a`` and raises on ``<![x``).
    """
    text = decode_text(data[:MAX_HTML_HEAD], charset)
    metas: list[tuple[str, str]] = []
    pos = 0
    while (token := _TOKEN.search(text, pos)) is not None:
        comment, bogus, end_tag, start_tag = token.groups()
        if comment or bogus:
            close = text.find("-->" if comment else ">", token.end())
            if close < 0:
                break
            pos = close + (3 if comment else 1)
        elif end_tag:
            close = text.find(">", token.end())
            if end_tag.lower() == "head" or close < 0:
                break
            pos = close + 1
        else:
            tag = _TAG_REST.match(text, token.end())
            name = start_tag.lower()
            if tag is None or name in _HEAD_STOPS:  # cut inside the tag, or the body begins
                break
            pos = tag.end()
            if name == "meta":
                values = _attributes(tag[1])
                if "name" in values:
                    metas.append((values["name"].strip().lower(), values.get("content", "")))
            elif name in _RAW_TEXT:
                close_tag = _RAW_TEXT[name].search(text, pos)
                if close_tag is None:
                    break
                pos = close_tag.start()
    return metas


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
    return few_signals(found)


def lower_agents(tokens: Iterable[str]) -> set[str]:
    """User-agent product tokens, lower-cased (``"sdkit-optout/0.1"`` -> ``"sdkit-optout"``)."""
    return {t.split("/", 1)[0].strip().lower() for t in tokens if t.strip()}
