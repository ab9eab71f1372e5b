"""Peer transport: one-way Raft messages over TCP.

Each node *dials* every peer at the address it was given (the lab gives proxy addresses)
and only ever *sends* on connections it dialled; answers travel as separate messages on
the answering node's own connection. So cutting the link A->B stops exactly the messages
A sends to B, which is what makes one-way partitions meaningful.

Wire format: frames of a 4-byte big-endian length and a JSON payload. The first frame on a
connection is ``{"hello": <sender id>, "to": <receiver id>}``; every later frame is one
encoded :class:`~nodes.types.Message`. Anything else (a bad length, bad JSON, a message
that does not decode, a sender that lies about who it is) is logged and drops that
connection, never the node.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import trio

from nodes.types import DecodeError, Message, decode_message, encode_message

MAX_FRAME = 64 * 1024 * 1024
# How a connection can break: a reset peer, a closed proxy, an unreachable host.
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_HEADER = struct.Struct(">I")
LogFn = Callable[..., None]


def encode_frame(obj: Any) -> bytes:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload)) + payload


class FrameError(Exception):
    pass


class FrameReader:
    """Incremental frame decoder (sans-IO): feed bytes, pull complete payloads."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data

    def frames(self) -> list[Any]:
        out: list[Any] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > self._max:
                raise FrameError(f"frame of {n} bytes exceeds the limit of {self._max}")
            if len(buf) - pos - 4 < n:
                break
            raw = bytes(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            try:
                out.append(json.loads(raw))
            except (ValueError, RecursionError) as e:  # JSONDecodeError, too-long ints, nesting
                raise FrameError(f"frame is not JSON: {str(e)[:100]}") from None
        del buf[:pos]
        return out


class PeerSender:
    """Owns the outgoing connection to one peer: dials with back-off, sends batches, and
    drops what it cannot send (Raft retransmits; a bounded queue keeps memory bounded)."""

    def __init__(self, me: str, peer: str, host: str, port: int, log: LogFn,
                 queue_size: int = 8192) -> None:
        self.me, self.peer, self.host, self.port = me, peer, host, port
        self.log = log
        self._send, self._recv = trio.open_memory_channel[bytes](queue_size)
        self.dropped = 0
        self.connected = False

    def send_nowait(self, m: Message) -> None:
        try:
            self._send.send_nowait(encode_frame(encode_message(m)))
        except trio.WouldBlock:
            self.dropped += 1

    def _discard_queued(self) -> None:
        while True:
            try:
                self._recv.receive_nowait()
            except trio.WouldBlock:
                return
            self.dropped += 1

    async def run(self) -> None:
        backoff = 0.02
        while True:
            try:
                stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError:
                # Messages queued for a peer we cannot reach are stale by the time we do.
                self._discard_queued()
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            backoff = 0.02
            self.connected = True
            self.log("peer-connected", peer=self.peer)
            try:
                async with stream:
                    await stream.send_all(encode_frame({"hello": self.me, "to": self.peer}))
                    await self._pump(stream)
            except* _BROKEN as group:
                e = group.exceptions[0]
                self.log("peer-disconnected", peer=self.peer, reason=str(e) or type(e).__name__)
            finally:
                self.connected = False
            self._discard_queued()
            await trio.sleep(backoff)

    async def _pump(self, stream: trio.SocketStream) -> None:
        # The peer never writes to us on this connection; watch for EOF so that a
        # closed connection (e.g. a proxy healing a black hole) is noticed at once.
        async with trio.open_nursery() as nursery:
            async def watch_eof() -> None:
                while await stream.receive_some(4096):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_eof)
            while True:
                batch = [await self._recv.receive()]
                while len(batch) < 512:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                await stream.send_all(b"".join(batch))
        raise trio.BrokenResourceError("peer closed the connection")


async def serve_peer_connection(stream: trio.SocketStream, me: str, peers: frozenset[str],
                                deliver: Callable[[Message], None], log: LogFn) -> None:
    """Read frames from one inbound peer connection and hand decoded messages to ``deliver``."""
    reader = FrameReader()
    sender: str | None = None
    try:
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                reader.feed(data)
                for obj in reader.frames():
                    if sender is None:
                        hello = obj.get("hello") if isinstance(obj, dict) else None
                        if (not isinstance(hello, str) or hello not in peers
                                or obj.get("to") != me):
                            raise FrameError(f"bad hello {obj!r:.100}")
                        sender = hello
                        continue
                    m = decode_message(obj)
                    if m.src != sender or m.dst != me:
                        raise FrameError(f"message {m.src}->{m.dst} on {sender}'s connection")
                    deliver(m)
    except (FrameError, DecodeError) as e:
        log("rejected-peer-input", peer=sender, reason=str(e)[:200])
    except _BROKEN:
        pass
