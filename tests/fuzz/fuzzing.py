"""The fuzzing suite's budgets and its one property: typed errors only, in bounded time and memory.

Every parser of outside data (prompts, infotext and Recipe JSON, ``sdkit.json``, safetensors
headers, robots.txt, ai.txt, tdmrep.json, HTML heads, XMP and iTXt, C2PA assertions, HTTP
responses, ``verify`` on mutated files) is called through :func:`bounded`, which allows only
the project's own typed errors (:data:`TYPED`) and fails on any other exception, on a run longer
than its time bound (the parser is interrupted there: a slow parser fails fast) and, where a
memory bound is given, on a traced peak above it.

Budgets (hypothesis profiles), chosen with ``SDKIT_FUZZ``:

* ``ci`` (default): a few dozen cases per property, derandomized (the same cases on every run,
  no example database), so that the test command is reproducible; the whole folder runs in
  about a minute on 2 cores.
* ``long``: :data:`LONG_FACTOR` times as many cases, random (a new sample every run), for a
  scheduled or manual run: ``SDKIT_FUZZ=long pytest tests/fuzz --hypothesis-show-statistics``.

See docs/fuzzing.md for what each target covers and the case counts measured.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings

from provenance.errors import ProvenanceError
from sdkit.errors import SdkitError
from sdkit.recipe import RecipeParseError

T = TypeVar("T")

#: The project's own errors: the only exceptions a parser of outside data may raise.
TYPED: tuple[type[BaseException], ...] = (ProvenanceError, SdkitError, RecipeParseError)
#: How many times more cases each property runs under ``SDKIT_FUZZ=long``.
LONG_FACTOR = int(os.environ.get("SDKIT_FUZZ_FACTOR", "50"))
PROFILE = os.environ.get("SDKIT_FUZZ", "ci")
#: ``SDKIT_FUZZ_SHRINK=0``: report failures as found, unshrunk (a run over slow, old code: each
#: shrink step of a time-bound failure costs the bound again).
SHRINK = os.environ.get("SDKIT_FUZZ_SHRINK", "1") != "0"

_COMMON: dict[str, Any] = {
    # Our own bound (bounded) times every call; hypothesis' deadline would also count the
    # strategies' work and flake on a loaded 2-core runner.
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
    # no "explain" phase: it reruns a failing case hundreds of times, minutes for a slow parser
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    + ([Phase.shrink] if SHRINK else []),
}
settings.register_profile("ci", derandomize=True, database=None, max_examples=40, **_COMMON)
settings.register_profile("long", derandomize=False, database=None, max_examples=2000, **_COMMON)
settings.load_profile(PROFILE)


def budget(ci: int) -> int:
    """Cases for one property: ``ci`` in the test command, ``ci * LONG_FACTOR`` in the long run."""
    return ci * LONG_FACTOR if PROFILE == "long" else ci


class Overrun(BaseException):
    """A parser ran past its time bound (a BaseException: ``except Exception`` cannot hide it)."""


def _overrun(kind: str) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        raise Overrun(kind)

    return handler


@contextmanager
def _alarms(cpu: float, wall: float) -> Iterator[None]:
    """Interrupt the block after ``cpu`` seconds of CPU time or ``wall`` seconds of wall time.

    CPU time (the process's, all threads) is the bound a parser must meet: it does not depend on
    what else runs on a shared CI machine. Wall time catches waits (a hang, a lost timeout).
    """
    previous = (
        signal.signal(signal.SIGVTALRM, _overrun(f"CPU time bound of {cpu:g} s")),
        signal.signal(signal.SIGALRM, _overrun(f"wall time bound of {wall:g} s")),
    )
    signal.setitimer(signal.ITIMER_VIRTUAL, cpu)
    signal.setitimer(signal.ITIMER_REAL, wall)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGVTALRM, previous[0])
        signal.signal(signal.SIGALRM, previous[1])


def bounded(
    fn: Callable[..., T],
    *args: Any,
    seconds: float = 2.0,
    wall: float | None = None,
    megabytes: float | None = None,
    **kwargs: Any,
) -> T | BaseException:
    """Call ``fn``: its result, or the typed error it raised; anything else fails the property.

    Args:
        fn: the parser (or entry point) under test.
        seconds: the bound on CPU time; the call is interrupted there (a signal, which also stops
            a regular expression in its matching loop) and the property fails.
        wall: the bound on wall time (default ``4 * seconds + 5``), for calls that wait.
        megabytes: the bound on the peak of memory the call allocates (traced by tracemalloc,
            which sees Python objects and the buffers of bytes, not C libraries' own heaps);
            ``None``: not traced (tracing slows pure-Python parsers down about twofold).

    Returns:
        What ``fn`` returned, or the :data:`TYPED` exception it raised.
    """
    tracing = megabytes is not None and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    name = getattr(fn, "__qualname__", repr(fn))
    start = time.perf_counter()
    try:
        with _alarms(seconds, wall if wall is not None else 4 * seconds + 5):
            result: T | BaseException = fn(*args, **kwargs)
    except TYPED as exc:
        result = exc
    except Overrun as exc:
        raise AssertionError(f"{name} ran over its {exc}") from None
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if tracing else 0
        if tracing:
            tracemalloc.stop()
    if megabytes is not None and peak > megabytes * 2**20:
        raise AssertionError(
            f"{name} allocated {peak / 2**20:.1f} MB at its peak "
            f"(bound {megabytes:g} MB, {elapsed:.2f} s)"
        )
    return result


def typed_message(error: BaseException) -> None:
    """A typed error must say something (a message a user can act on)."""
    assert str(error).strip(), f"{type(error).__name__} without a message"
