"""Client connections: JSON lines in, JSON lines out, on the raw non-blocking socket.

This is the node's hot path (every request and every answer crosses it), so it spends as
little as possible per request: one reader task per connection splits lines and hands each
to a *synchronous* handler, which either answers at once (a bad request, a status) or
leaves a :class:`Pending` answer that the node fills in later (when the entry is applied,
the read index reached, or the deadline passed). An answer is written straight to the
socket when the kernel takes it; only what does not fit waits for the connection's writer
task. No task, lock, event or cancel scope per request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import trio

_READ_SIZE = 65536
#: A client that stops reading may leave this much unsent before it is dropped.
MAX_UNSENT = 16 * 1024 * 1024


class ClientConn:
    """One client connection. :meth:`reply` never blocks and never raises."""

    __slots__ = ("_more", "_out", "closed", "overflowed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out = bytearray()
        self._more = trio.Event()
        self.closed = False
        self.overflowed = False

    def reply(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        if self._out:  # keep the order: behind what is already waiting
            self._out += data
            if len(self._out) > MAX_UNSENT:
                self.overflowed = True
                self.close()
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self._out += data[n:]
            self._more.set()

    async def _write_rest(self) -> None:
        while not self.closed:
            await self._more.wait()
            self._more = trio.Event()
            while self._out and not self.closed:
                await trio.lowlevel.wait_writable(self.sock)
                try:
                    n = self.sock.send(self._out)
                except BlockingIOError:
                    continue
                except OSError:
                    self.close()
                    return
                del self._out[:n]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._more.set()
        try:
            trio.lowlevel.notify_closing(self.sock)
        except (OSError, ValueError):
            pass
        self.sock.close()


LineHandler = Callable[[bytes, ClientConn], None]
RejectFn = Callable[[str], None]


async def serve_client(stream: trio.SocketStream, handle: LineHandler, reject: RejectFn,
                       max_line: int) -> None:
    """Serve one accepted connection until the client goes away."""
    tsock = stream.socket
    raw = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
    raw.setblocking(False)
    conn = ClientConn(raw)
    buf = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._write_rest)
            try:
                drained = False
                while not conn.closed:
                    if drained:  # a short read emptied the socket: skip the recv that says so
                        await trio.lowlevel.wait_readable(raw)
                    try:
                        data = raw.recv(_READ_SIZE)
                    except BlockingIOError:
                        drained = True
                        continue
                    if not data:
                        return
                    drained = len(data) < _READ_SIZE
                    buf += data
                    start = 0
                    while (nl := buf.find(b"\n", start)) >= 0:
                        line = bytes(buf[start:nl])
                        start = nl + 1
                        if line.strip():
                            handle(line, conn)
                    del buf[:start]
                    if len(buf) > max_line:
                        reject("line too long")
                        conn.reply({"id": None, "ok": False, "error": "bad-request",
                                    "reason": f"line longer than {max_line} bytes"})
                        return
            finally:
                nursery.cancel_scope.cancel()
    except* (OSError, trio.ClosedResourceError):
        pass  # the client went away (a reset, a timeout): its answers have nowhere to go
    finally:
        conn.close()
        if conn.overflowed:
            reject(f"client left more than {MAX_UNSENT} bytes of answers unread: dropped")
