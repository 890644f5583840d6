"""Time bounds for tests of hostile input.

A regression test of a quadratic or exponential parser must fail on the old code in seconds,
not wait minutes for it: :func:`deadline` interrupts the block with SIGALRM (main thread only),
and :func:`timed` also asserts how long the call took.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class _Overrun(Exception):
    """The block ran past its deadline."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (``AssertionError``) when the block is still running after ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise _Overrun(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    overrun = None
    try:
        yield
    except _Overrun as exc:  # raised wherever the parser was, C code included: start afresh
        overrun = str(exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if overrun is not None:
        raise AssertionError(overrun) from None


def timed(call: Callable[[], T], *, bound: float) -> T:
    """``call()``, failing if it takes ``bound`` seconds or more (stopped at 3x the bound)."""
    start = time.perf_counter()
    with deadline(max(3.0, 3 * bound)):
        result = call()
    elapsed = time.perf_counter() - start
    assert elapsed < bound, f"took {elapsed:.2f} s (bound {bound:g} s)"
    return result
