"""A real HTTP server on 127.0.0.1 for opt-out tests and benchmarks: many origins, one thread.

Each origin is its own port with its own routes: ``{path_qs: handler}``, where a handler is an
``async (request) -> web.StreamResponse`` function. Every request is counted per origin and
path, so tests can assert what was (and was not) fetched.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body(
    data: bytes | str,
    content_type: str = "text/plain",
    status: int = 200,
    headers: Iterable[tuple[str, str]] = (),
) -> Handler:
    """A handler that answers ``data`` (headers may repeat a name)."""
    raw = data.encode() if isinstance(data, str) else data

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=raw, status=status, content_type=content_type)
        for name, value in headers:
            response.headers.add(name, value)
        return response

    return handle


def redirect(location: str, status: int = 302, headers: Iterable[tuple[str, str]] = ()) -> Handler:
    """A handler that redirects."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=status, headers={"Location": location})
        for name, value in headers:
            response.headers.add(name, value)
        return response

    return handle


def slow(seconds: float, then: Handler) -> Handler:
    """A handler that waits before answering, and gives up as soon as the client has gone."""

    async def handle(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            await asyncio.sleep(0.05)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # nobody reads it; the server is free to stop
        return await then(request)

    return handle


def endless(
    content_type: str,
    start: bytes = b"",
    chunk: bytes = b"\0" * 65536,
    limit: int = 512 * 1024 * 1024,
) -> Handler:
    """A handler that streams (nearly) forever: ``limit`` bytes at most, as a safety stop."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        sent = 0
        try:
            await response.write(start)
            while sent < limit:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    return handle


class Server:
    """Origins on 127.0.0.1, served from one background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.hits: Counter[tuple[str, str]] = Counter()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def add(self, routes: Mapping[str, Handler]) -> str:
        """Serve ``routes`` on a new port; returns the origin (``http://127.0.0.1:PORT``)."""
        return asyncio.run_coroutine_threadsafe(self._start(dict(routes)), self.loop).result(10)

    async def _start(self, routes: dict[str, Handler]) -> str:
        origin_box: list[str] = []

        async def dispatch(request: web.Request) -> web.StreamResponse:
            self.hits[(origin_box[0], request.path_qs)] += 1
            handler = routes.get(request.path_qs) or routes.get(request.path)
            if handler is None:
                return web.Response(status=404, text="not found")
            return await handler(request)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        origin_box.append(f"http://127.0.0.1:{port}")
        self._runners.append(runner)
        return origin_box[0]

    def count(self, origin: str, path: str) -> int:
        """Requests that reached ``origin`` for ``path``."""
        return self.hits[(origin, path)]

    def total(self) -> int:
        """Requests that reached any origin."""
        return sum(self.hits.values())

    def close(self) -> None:
        """Stop every origin and the thread."""

        async def stop() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
