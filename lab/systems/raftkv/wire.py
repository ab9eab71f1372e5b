"""An async client for raftkv's JSON-lines client protocol (``nodes/PROTOCOL.md``).

``async with connect(host, port) as c: await c.call({...})``. Requests are pipelined on
one connection and matched to answers by ``id``. A request that gets no answer in time
raises :class:`trio.TooSlowError`; a lost connection raises :class:`ConnectionLost`.
Whether either means the operation *may* have happened is the caller's call (for a write
it may: the lab records such outcomes as ``info``).

This is the lab's hot path (every operation of every client worker goes through it), so
it works on the raw non-blocking socket with trio's low-level primitives, and a caller
sleeps exactly once, until its answer is handed to it. The requests of a scheduling round
go out together, one ``send`` per connection; answers are read by one task for all the
connections of a trio run; timeouts are checked every 10 ms rather than by a cancel scope
per request (`_Io`). Measured by ``bench/client_bench.py`` and ``bench/run_bench.py``.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import outcome
import trio

from lab.fastjson import dumps

_READ_SIZE = 65536
_TICK = 0.01  # how often request deadlines are checked (seconds)
_MAX_LINE = 64 * 1024 * 1024  # an answer longer than this means the peer is not raftkv
_MAX_UNSENT = 16 * 1024 * 1024  # requests the member has not read: it has stopped reading


class ConnectionLost(Exception):
    pass


class _Io:
    """The I/O of every open `KVClient` of a trio run, in three system tasks.

    * **Sending** (`flush`): a request is appended to its connection's buffer, and the
      buffers go out in the next scheduling round, one ``send`` per connection. Requests
      made in the same round (the workers woken by one batch of answers) share it; so
      do the proxy's forwarding and the member's read on the other side.
    * **Reading** (`run`): the sockets sit in one level-triggered epoll set; each
      readiness is one synchronous read that hands complete answers to the tasks waiting
      for them, or one send of what a full socket buffer held back.
    * **Timeouts** (`expire`): every `_TICK` seconds, requests past their deadline fail.

    Measured with ``bench/client_bench.py``: a reader task per connection cost the
    controller 6 us per operation, a cancel scope per request 15 us; raftkv's own load
    generator spends 6.5 us on a whole operation."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._clients: dict[int, KVClient] = {}
        self._unsent: list[KVClient] = []  # connections with requests for the next round
        self._flusher: trio.lowlevel.Task | None = None  # parked while nothing is unsent

    async def expire(self) -> None:
        """Time out requests: every `_TICK` seconds, fail those past their deadline. (A
        cancel scope with a deadline per request, trio's way, cost 15 of the controller's
        38 us per operation, ``bench/client_bench.py``; here a timeout may fire up to one
        tick late, never early.)"""
        while True:
            await trio.sleep(_TICK)
            now = trio.current_time()
            for client in list(self._clients.values()):
                if client._waiting:
                    try:
                        client._expire(now)
                    except Exception as e:  # a bug must cost one connection, not the run
                        client.close(f"connection lost: {e!r}")

    def add(self, client: KVClient) -> None:
        fd = client._sock.fileno()
        self._ep.register(fd, select.EPOLLIN)
        self._clients[fd] = client

    def remove(self, client: KVClient) -> None:
        fd = client._sock.fileno()
        if self._clients.get(fd) is client:
            del self._clients[fd]
            with suppress(OSError, ValueError):  # the run is ending: the set is closed
                self._ep.unregister(fd)

    def watch_writable(self, client: KVClient, on: bool) -> None:
        self._ep.modify(client._sock.fileno(),
                        select.EPOLLIN | select.EPOLLOUT if on else select.EPOLLIN)

    def unsent(self, client: KVClient) -> None:
        """``client`` has requests to send: they go in the next scheduling round."""
        self._unsent.append(client)
        if self._flusher is not None:
            task, self._flusher = self._flusher, None
            trio.lowlevel.reschedule(task)

    async def flush(self) -> None:
        def abort(_: Any) -> trio.lowlevel.Abort:
            self._flusher = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if not self._unsent:
                self._flusher = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(abort)
            clients, self._unsent = self._unsent, []
            for client in clients:
                try:
                    client._send()
                except Exception as e:  # a bug must cost one connection, not the run
                    client.close(f"connection lost: {e!r}")

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._ep.fileno())
                for fd, events in self._ep.poll(0, 1024):
                    client = self._clients.get(fd)  # gone if closed earlier in this round
                    if client is None:
                        continue
                    try:
                        if events & select.EPOLLOUT:
                            client._send()
                        if events & ~select.EPOLLOUT and not client.closed:
                            client._readable()
                    except Exception as e:  # a bug must cost one connection, not the run
                        client.close(f"connection lost: {e!r}")
        finally:
            self._ep.close()


_IO: trio.lowlevel.RunVar[_Io] = trio.lowlevel.RunVar("lab.systems.raftkv.wire.io")


def _io() -> _Io:
    """This trio run's client I/O, started on first use (system tasks: they end with the
    run)."""
    try:
        return _IO.get()
    except LookupError:
        io = _Io()
        _IO.set(io)
        trio.lowlevel.spawn_system_task(io.run, name="raftkv wire: answers")
        trio.lowlevel.spawn_system_task(io.flush, name="raftkv wire: sends")
        trio.lowlevel.spawn_system_task(io.expire, name="raftkv wire: timeouts")
        return io


class KVClient:
    """One connection. Any number of tasks may call on it at once."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[trio.lowlevel.Task, float]] = {}  # id -> task, deadline
        self._out = bytearray()  # requests not yet taken by the socket, whole lines in order
        self._blocked = False  # the socket buffer is full: the rest goes when it is writable
        self._buf = bytearray()
        self._io = _io()
        self._io.add(self)
        self.closed = False
        self.retired = False

    # ------------------------------------------------------------------ reading

    def _readable(self) -> None:
        """One read: the socket is readable."""
        try:
            data = self._sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self.close(f"connection lost: {e}")
            return
        if not data:
            self.close("connection closed before the answer")
            return
        buf = self._buf
        buf += data
        start = 0
        try:
            while (nl := buf.find(b"\n", start)) >= 0:
                self._answer(json.loads(buf[start:nl]))
                start = nl + 1
        except (ValueError, RecursionError) as e:  # not JSON, too deep, too long a number
            self.close(f"connection lost: {e}")
            return
        del buf[:start]
        if len(buf) > _MAX_LINE:
            self.close("answer too long")
        else:
            self._close_if_drained()

    def _answer(self, msg: Any) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else None
        if type(rid) is int:  # anything else answers nobody's request
            waiter = self._waiting.pop(rid, None)
            if waiter is not None:
                trio.lowlevel.reschedule(waiter[0], outcome.Value(msg))

    def _expire(self, now: float) -> None:
        for rid, (task, deadline) in list(self._waiting.items()):
            if deadline <= now:
                del self._waiting[rid]
                trio.lowlevel.reschedule(task, outcome.Error(trio.TooSlowError()))
        self._close_if_drained()

    # ------------------------------------------------------------------ writing

    def _send(self) -> None:
        """Send what the socket takes; watch for room while anything is left."""
        if self.closed or not self._out:
            return
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0  # the buffer is full: the rest goes when there is room
        except OSError as e:
            self.close(f"connection lost: {e}")
            return
        del self._out[:sent]
        if bool(self._out) != self._blocked:
            self._blocked = not self._blocked
            self._io.watch_writable(self, self._blocked)

    async def call(self, request: dict[str, Any], timeout: float = 5.0, *,
                   deadline: float | None = None) -> dict[str, Any]:
        """Send one request and wait at most ``timeout`` seconds (or until the trio time
        ``deadline``) for its answer. A request still unsent when its time is up stays
        queued: it may yet happen."""
        if self.retired:
            raise ConnectionLost("connection is closed" if self.closed else
                                 "connection is retired")
        if len(self._out) > _MAX_UNSENT:
            self.close("the member stopped reading requests")
            raise ConnectionLost("the member stopped reading requests")
        rid = next(self._ids)
        if not self._out:
            self._io.unsent(self)  # (else a send is already due: the round's or the room's)
        self._out += dumps({**request, "id": rid}) + b"\n"
        if deadline is None:
            deadline = trio.current_time() + timeout
        self._waiting[rid] = (trio.lowlevel.current_task(), deadline)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiting.pop(rid, None)
            self._close_if_drained()
            return trio.lowlevel.Abort.SUCCEEDED

        # The answer reader hands over the answer; `_Io.expire` a TooSlowError.
        answer: dict[str, Any] = await trio.lowlevel.wait_task_rescheduled(abort)
        return answer

    def retire(self) -> None:
        """Take no new requests; close once every waiting request has ended (e.g. after
        a timeout: a black hole may have eaten part of a line, the stream cannot be
        trusted for new ones, but answers to the others may still come)."""
        self.retired = True
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        """A retired connection closes when its last waiting request has ended."""
        if self.retired and not self._waiting:
            self.close()

    def close(self, why: str = "connection closed before the answer") -> None:
        """Close the connection; every request still waiting for its answer gets
        :class:`ConnectionLost` with ``why``."""
        if self.closed:
            return
        self.closed = self.retired = True
        self._io.remove(self)  # before the descriptor (and its number) is reused
        self._sock.close()
        self._out.clear()
        waiting, self._waiting = self._waiting, {}
        for task, _deadline in waiting.values():
            trio.lowlevel.reschedule(task, outcome.Error(ConnectionLost(why)))


async def open_client(host: str, port: int, timeout: float = 2.0) -> KVClient:
    """Connect; the caller closes the client."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
    tsock = stream.socket
    raw = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
    try:
        raw.setblocking(False)
        return KVClient(raw)
    except BaseException:
        raw.close()
        raise


@asynccontextmanager
async def connect(host: str, port: int, timeout: float = 2.0) -> AsyncIterator[KVClient]:
    client = await open_client(host, port, timeout)
    try:
        yield client
    finally:
        client.close()
