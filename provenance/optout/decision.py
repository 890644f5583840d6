"""What a check found and what it decided: :class:`Signal`, :class:`Decision`, :func:`decide`.

Every signal names the rule that produced it (:data:`RULES`: which specification, where it is
read), where it was found and the exact text that said so. :func:`decide` combines them:

1. TDMRep signals override one another by precedence (``tdmrep.json`` < ``tdm-reservation``
   header < HTML ``<meta name="tdm-reservation">``): only the strongest one present counts.
2. Any signal that disallows makes the decision ``disallowed``.
3. Otherwise any signal that could not be read (timeout, 5xx, malformed file) makes it
   ``unknown``, which is *not allowed* unless the checker runs with ``on_error="allow"``.
4. Otherwise the work is ``allowed``.

Example:
    >>> s = Signal("x-robots-tag", "disallowed", "https://example.com/a.jpg", "X-Robots-Tag: noai")
    >>> d = decide("https://example.com/a.jpg", [s])
    >>> d.verdict, d.allowed, d.evidence
    ('disallowed', False, ('x-robots-tag: X-Robots-Tag: noai (https://example.com/a.jpg)',))
    >>> decide("x.png", []).verdict
    'allowed'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MAX_SIGNALS",
    "RULES",
    "TDMREP_PRECEDENCE",
    "Decision",
    "OnError",
    "Rule",
    "Signal",
    "Value",
    "Verdict",
    "decide",
    "few_signals",
]

Value = Literal["disallowed", "allowed", "unknown"]
Verdict = Literal["allowed", "disallowed", "unknown"]
OnError = Literal["deny", "allow"]
#: Signals kept from one source (a page's metas, a file's XMP or C2PA entries): see
#: :func:`few_signals`.
MAX_SIGNALS = 16


@dataclass(frozen=True)
class Rule:
    """One kind of signal: what it is, where it is read, which document defines it.

    Attributes:
        name: the signal's name in decisions (``x-robots-tag``, ``tdmrep.json``, ...).
        where: ``http`` (response headers), ``site`` (a file per origin), ``html``, ``file``
            (inside the image) or ``registry``.
        spec: the defining document.
        url: where to read it.
    """

    name: str
    where: str
    spec: str
    url: str


_TDMREP = "W3C TDMRep, Final Community Group Report (2024)"
_TDMREP_URL = "https://www.w3.org/community/reports/tdmrep/CG-FINAL-tdmrep-20240510/"
_ROBOTS_META = "https://developers.google.com/search/docs/crawling-indexing/robots-meta-tag"

#: Every rule the checker applies, by signal name (docs/optout.md renders the same table).
RULES: Mapping[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "x-robots-tag",
            "http",
            "X-Robots-Tag noai / noimageai (DeviantArt, Spawning)",
            _ROBOTS_META,
        ),
        Rule("tdm-reservation", "http", _TDMREP + ", HTTP headers", _TDMREP_URL),
        Rule("tdmrep.json", "site", _TDMREP + ", /.well-known/tdmrep.json", _TDMREP_URL),
        Rule(
            "ai.txt",
            "site",
            "Spawning ai.txt (robots.txt grammar)",
            "https://site.spawning.ai/spawning-ai-txt",
        ),
        Rule(
            "robots.txt",
            "site",
            "RFC 9309 Robots Exclusion Protocol",
            "https://www.rfc-editor.org/rfc/rfc9309",
        ),
        Rule("meta-robots", "html", "<meta name=robots> noai / noimageai", _ROBOTS_META),
        Rule("meta-tdm-reservation", "html", _TDMREP + ", HTML meta", _TDMREP_URL),
        Rule(
            "c2pa-training-mining",
            "file",
            "C2PA / CAWG Training and Data Mining assertion",
            "https://cawg.io/training-and-data-mining/1.1/",
        ),
        Rule(
            "iptc-data-mining",
            "file",
            "IPTC Photo Metadata / PLUS plus:DataMining (XMP)",
            "https://iptc.org/std/photometadata/specification/IPTC-PhotoMetadata#data-mining",
        ),
        Rule(
            "registry",
            "registry",
            "local registry of opted-out works (perceptual hash)",
            "docs/optout.md#registry",
        ),
        Rule(
            "fetch",
            "http",
            "the work itself could not be fetched or read",
            "docs/optout.md#fail-closed",
        ),
    )
}

#: TDMRep: a stronger source overrides a weaker one (file < header < HTML meta).
TDMREP_PRECEDENCE: Mapping[str, int] = {
    "tdmrep.json": 0,
    "tdm-reservation": 1,
    "meta-tdm-reservation": 2,
}


@dataclass(frozen=True)
class Signal:
    """One opt-out (or permission, or unreadable) signal.

    Attributes:
        name: the rule's name (a key of :data:`RULES`).
        value: ``disallowed``, ``allowed`` or ``unknown`` (could not be read).
        source: where it was found: a URL, a site file's URL, a file path.
        evidence: the exact text that said so (header line, file rule, assertion).
        overridden_by: for TDMRep signals beaten by a stronger one, that one's name.
    """

    name: str
    value: Value
    source: str
    evidence: str
    overridden_by: str | None = None

    @property
    def rule(self) -> Rule:
        """The rule that produced this signal."""
        return RULES[self.name]

    def describe(self) -> str:
        """One line for people: ``name: evidence (source)``."""
        return f"{self.name}: {self.evidence} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with the specification's name)."""
        out = dataclasses.asdict(self)
        out["spec"] = self.rule.spec
        return out


@dataclass(frozen=True)
class Decision:
    """The answer for one work: may it be used for AI training?

    Attributes:
        target: the URL, path or ``<image>`` checked.
        verdict: ``allowed``, ``disallowed`` or ``unknown`` (something could not be read).
        allowed: what to do: True only for ``allowed``, or for ``unknown`` with
            ``on_error="allow"``.
        signals: every signal found, in the order found (overridden ones included).
        evidence: one line per signal that decided the verdict.
        final_url: where redirects ended, for URLs.
        requests: HTTP requests this check made itself (site files fetched for an earlier
            check of the same origin are not counted again).
    """

    target: str
    verdict: Verdict
    allowed: bool
    signals: tuple[Signal, ...] = ()
    evidence: tuple[str, ...] = ()
    final_url: str | None = None
    requests: int = 0

    @property
    def deciding(self) -> tuple[Signal, ...]:
        """The signals that decided the verdict."""
        return tuple(s for s in self.signals if s.value == self.verdict and s.overridden_by is None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "target": self.target,
            "verdict": self.verdict,
            "allowed": self.allowed,
            "signals": [s.to_dict() for s in self.signals],
            "evidence": list(self.evidence),
            "final_url": self.final_url,
            "requests": self.requests,
        }

    def to_text(self) -> str:
        """A short report for people."""
        head = f"{self.target}: {self.verdict.upper()}"
        if self.verdict == "unknown":
            head += " (counted as allowed: on_error=allow)" if self.allowed else " (not allowed)"
        lines = [head, *(f"  {line}" for line in self.evidence)]
        others = [s for s in self.signals if s.describe() not in self.evidence]
        lines += [f"  also: {s.describe()} [{s.value}]" for s in others]
        return "\n".join(lines)


def few_signals(signals: list[Signal]) -> list[Signal]:
    """At most :data:`MAX_SIGNALS` of one source's ``signals``, each evidence once: the first
    of each (name, value), then the others in order. A page or a file may repeat a statement
    a million times; the decision needs one of each kind, so the cut never changes it (nor
    which TDMRep source overrides which).

    Example:
        >>> many = [Signal("x-robots-tag", "allowed", "s", str(i)) for i in range(100)]
        >>> kept = few_signals([*many, Signal("x-robots-tag", "disallowed", "s", "no")])
        >>> len(kept), kept[0].evidence, kept[-1].evidence
        (16, '0', 'no')
    """
    unique: dict[tuple[str, str, str], Signal] = {}
    for signal in signals:
        unique.setdefault((signal.name, signal.value, signal.evidence), signal)
    if len(unique) <= MAX_SIGNALS:
        return list(unique.values())
    kinds: dict[tuple[str, str], Signal] = {}
    for signal in unique.values():
        kinds.setdefault((signal.name, signal.value), signal)
    firsts = {id(s) for s in kinds.values()}
    others = [s for s in unique.values() if id(s) not in firsts]
    chosen = firsts | {id(s) for s in others[: max(MAX_SIGNALS - len(firsts), 0)]}
    return [s for s in unique.values() if id(s) in chosen]


def _resolve_tdmrep(signals: list[Signal]) -> list[Signal]:
    """Mark TDMRep signals beaten by a stronger TDMRep source as overridden."""
    tdm = [s for s in signals if s.name in TDMREP_PRECEDENCE]
    if not tdm:
        return signals
    strongest = max(TDMREP_PRECEDENCE[s.name] for s in tdm)
    winner = next(name for name, rank in TDMREP_PRECEDENCE.items() if rank == strongest)
    return [
        dataclasses.replace(s, overridden_by=winner)
        if s.name in TDMREP_PRECEDENCE and TDMREP_PRECEDENCE[s.name] < strongest
        else s
        for s in signals
    ]


def decide(
    target: str,
    signals: Iterable[Signal],
    *,
    on_error: OnError = "deny",
    final_url: str | None = None,
    requests: int = 0,
) -> Decision:
    """Combine signals into a decision (see the module docstring for the order).

    Args:
        target: what was checked.
        signals: everything found.
        on_error: ``"deny"`` (default): an ``unknown`` verdict is not allowed; ``"allow"``:
            it is.
        final_url: where redirects ended.
        requests: HTTP requests made.
    """
    resolved = _resolve_tdmrep(list(signals))
    live = [s for s in resolved if s.overridden_by is None]
    verdict: Verdict = "allowed"
    for value in ("disallowed", "unknown"):  # the first value present decides
        if any(s.value == value for s in live):
            verdict = "disallowed" if value == "disallowed" else "unknown"
            break
    allowed = verdict == "allowed" or (verdict == "unknown" and on_error == "allow")
    evidence = tuple(dict.fromkeys(s.describe() for s in live if s.value == verdict))
    return Decision(
        target, verdict, allowed, tuple(resolved), evidence, final_url=final_url, requests=requests
    )
