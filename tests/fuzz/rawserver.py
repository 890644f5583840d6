"""A raw HTTP server for the fuzzing suite: it writes whatever bytes a test gives it.

aiohttp's own server (tests/optout_server.py) only sends well-formed responses; a fuzzer needs
broken ones too (a status of 999, a header without a colon, a Content-Length that lies, a
charset no codec knows). Each listening address (``127.0.0.1``, ``127.0.0.2``, ``::1``...) is
one origin; every request is counted per ``(host, port, path)`` before it is answered, so a
test can assert that nothing reached an address. Answers come from ``respond(host, path)``,
which the test sets per example; the connection is closed after each answer (so a body
shorter than its Content-Length ends at once, not at the client's timeout).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable

Responder = Callable[[str, str], bytes]

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class RawServer:
    """Listening sockets on loopback addresses, answered from one background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.hits: Counter[tuple[str, int, str]] = Counter()
        self.respond: Responder = lambda host, path: NOT_FOUND
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def listen(self, host: str, port: int = 0) -> int:
        """Listen on ``host`` (an address), on ``port`` or a free one; returns the port."""
        return asyncio.run_coroutine_threadsafe(self._listen(host, port), self.loop).result(10)

    async def _listen(self, host: str, port: int) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                parts = head.split(b"\r\n", 1)[0].split(b" ")
                path = parts[1].decode("latin-1") if len(parts) > 1 else ""
                self.hits[(host, bound, path)] += 1
                writer.write(self.respond(host, path))
                await writer.drain()
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, host, port, family=family)
        bound = int(server.sockets[0].getsockname()[1])
        self._servers.append(server)
        return bound

    def total(self) -> int:
        """Requests received on every address."""
        return sum(self.hits.values())

    def close(self) -> None:
        """Stop listening and stop the thread."""

        async def stop() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def response(
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    reason: str = "OK",
    length: bool = True,
) -> bytes:
    """An HTTP/1.1 response as bytes (headers as given, in UTF-8 as a server would send a
    non-ASCII ``Location``; Content-Length if asked)."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
