"""One HTTP/1.1 client connection (trio, keep-alive): send a request, read its answer.

The lab's one reader of HTTP/1.x answers, used by its Toxiproxy client
(:mod:`lab.toxiclient`) and by etcd's adapter (:mod:`lab.systems.etcd.http`). It reads
``Content-Length``, chunked and read-to-close bodies, skips ``1xx`` interim answers, and
says whether the server keeps the connection open. A server that hangs up raises
:class:`Closed` (saying whether any of the answer had come); anything that is not a
usable answer raises :class:`BadResponse`.
"""

from __future__ import annotations

import select
from contextlib import suppress
from dataclasses import dataclass, field

import trio

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class Closed(Exception):
    """The server closed the connection; ``answered`` if any answer byte had arrived."""

    def __init__(self, answered: bool) -> None:
        super().__init__(answered)
        self.answered = answered


class BadResponse(ValueError):
    """Not a usable HTTP/1.x answer: garbled or too large."""


@dataclass
class Response:
    status: int
    body: bytes
    keep_alive: bool


@dataclass
class Connection:
    """One connection to a server, carrying one request at a time."""

    stream: trio.SocketStream
    buf: bytearray = field(default_factory=bytearray)
    used: int = 0  # times its owner put it aside to reuse
    idle_since: float = 0.0  # trio time it was last put aside, for its owner's reuse rules

    def stale(self) -> bool:
        """The server hung up (or sent something unasked) while the connection was idle."""
        try:
            readable, _, _ = select.select([self.stream.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable) or bool(self.buf)

    def close(self) -> None:
        """Close the socket now (no await: safe in any cancelled or finishing task)."""
        with suppress(OSError):
            self.stream.socket.close()

    async def exchange(self, raw: bytes, method: str) -> Response:
        """Send one whole request (``method``'s); read its answer."""
        await self.stream.send_all(raw)
        return await self.read_response(method)

    async def read_response(self, method: str) -> Response:
        """The answer to a ``method`` request (past any ``1xx`` interim answers)."""
        while True:
            lines = (await self.read_head()).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise BadResponse(f"not an HTTP answer: {lines[0][:100]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the real answer follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
            keep = "close" not in tokens and (parts[0] != "HTTP/1.0" or "keep-alive" in tokens)
            if method == "HEAD" or status in (204, 304):
                return Response(status, b"", keep)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return Response(status, await self.read_chunked(), keep)
            if "content-length" in headers:
                try:
                    length = int(headers["content-length"])
                except ValueError:
                    raise BadResponse("bad Content-Length in answer") from None
                if not 0 <= length <= MAX_BODY:
                    raise BadResponse(f"answer body of {length} bytes")
                return Response(status, await self.read_exactly(length), keep)
            return Response(status, await self.read_to_eof(), False)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            return False
        self.buf += data
        return True

    async def read_head(self) -> bytes:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise BadResponse("answer head too large")
            if not await self._fill():
                raise Closed(bool(self.buf))
        head = bytes(self.buf[:end])
        del self.buf[:end + 4]
        return head

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise Closed(True)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise BadResponse("answer line too long")
            if not await self._fill():
                raise Closed(True)
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    async def read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = await self.read_line()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_line!r}") from None
            if size == 0:
                while await self.read_line():  # trailers, up to the blank line
                    pass
                return bytes(out)
            out += await self.read_exactly(size)
            if len(out) > MAX_BODY:
                raise BadResponse("answer body too large")
            await self.read_exactly(2)

    async def read_to_eof(self) -> bytes:
        while await self._fill():
            if len(self.buf) > MAX_BODY:
                raise BadResponse("answer body too large")
        out = bytes(self.buf)
        self.buf.clear()
        return out
