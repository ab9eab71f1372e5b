"""An async client for raftkv's JSON-lines client protocol (``nodes/PROTOCOL.md``).

``async with connect(host, port) as c: await c.call({...})``. Requests are pipelined on
one connection and matched to answers by ``id``. A request that gets no answer in time
raises :class:`trio.TooSlowError`; a lost connection raises :class:`ConnectionLost`.
Whether either means the operation *may* have happened is the caller's call (for a write
it may: the lab records such outcomes as ``info``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio


class ConnectionLost(Exception):
    pass


class KVClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._send_lock = trio.Lock()
        self.closed = False

    async def _read_answers(self) -> None:
        buf = bytearray()
        try:
            while data := await self._stream.receive_some(65536):
                buf += data
                while (nl := buf.find(b"\n")) >= 0:
                    msg = json.loads(bytes(buf[:nl]))
                    del buf[: nl + 1]
                    ch = self._waiting.pop(msg.get("id"), None)
                    if ch is not None:
                        ch.send_nowait(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
            pass
        finally:
            self.closed = True
            for ch in self._waiting.values():
                ch.close()
            self._waiting.clear()

    async def call(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send one request and wait at most ``timeout`` seconds for its answer."""
        if self.closed:
            raise ConnectionLost("connection is closed")
        rid = next(self._ids)
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[rid] = send
        line = json.dumps({**request, "id": rid}).encode() + b"\n"
        try:
            with trio.fail_after(timeout):
                try:
                    async with self._send_lock:
                        await self._stream.send_all(line)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    raise ConnectionLost(str(e) or type(e).__name__) from e
                try:
                    return await recv.receive()
                except trio.EndOfChannel:
                    raise ConnectionLost("connection closed before the answer") from None
        finally:
            self._waiting.pop(rid, None)


@asynccontextmanager
async def connect(host: str, port: int, timeout: float = 2.0) -> AsyncIterator[KVClient]:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
    client = KVClient(stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read_answers)
            try:
                yield client
            finally:
                client.closed = True
                await stream.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader task never raises, so a group holds the caller's own exception:
        # hand it back unwrapped (ConnectionLost, TooSlowError, ...).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
