"""Time bounds for tests of hostile input.

A regression test of a quadratic or exponential parser must fail on the old code in seconds,
not wait minutes for it: :func:`deadline` interrupts the block with SIGALRM (main thread only),
and :func:`timed` also asserts how long the call took. :func:`check_all` measures how long
opt-out checks stall the event loop (the largest gap of a 10 ms ticker beside them).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from provenance.optout import Decision, OptOutChecker
from provenance.optout.checker import Target

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


async def ticking(work: Awaitable[T]) -> tuple[T, float]:
    """``await work`` beside a 10 ms ticker; returns its result and the ticker's largest gap."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticker = asyncio.ensure_future(tick())
    try:
        result = await work
    finally:
        done.set()
        await ticker
    return result, max(gaps)


def check_all(
    checker: OptOutChecker, targets: list[Target], *, seconds: float = 30
) -> tuple[list[Decision], float]:
    """Check ``targets`` concurrently in one session; the decisions and the largest loop gap."""

    async def run() -> list[Decision]:
        async with checker:
            return list(await asyncio.gather(*(checker.acheck(t) for t in targets)))

    async def main() -> tuple[list[Decision], float]:
        return await ticking(run())

    # The test run's heap (hundreds of tests) moved out of the collector's way: a full collection
    # of it stops every thread for ~0.5 s on a loaded machine, whatever the checker does.
    gc.collect()
    gc.freeze()
    try:
        with deadline(seconds):
            return asyncio.run(main())
    finally:
        gc.unfreeze()
