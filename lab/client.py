"""An async client for raftkv's JSON-lines client protocol (``nodes/PROTOCOL.md``).

``async with connect(host, port) as c: await c.call({...})``. Requests are pipelined on
one connection and matched to answers by ``id``. A request that gets no answer in time
raises :class:`trio.TooSlowError`; a lost connection raises :class:`ConnectionLost`.
Whether either means the operation *may* have happened is the caller's call (for a write
it may: the lab records such outcomes as ``info``).

This is the lab's hot path (every operation of every client worker goes through it), so
it works on the raw non-blocking socket with trio's low-level primitives: a request that
fits in the socket buffer is sent without yielding, and the caller sleeps exactly once,
until its answer is handed to it. Answers are read by one task for all the connections
of a trio run (`_Answers`: one level-triggered epoll set), not by a task per connection,
which would cost a task switch and an ``epoll_ctl`` per answer; and the same object
times requests out, every 10 ms, rather than a cancel scope per request. Measured by
``bench/run_bench.py``.
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


class ConnectionLost(Exception):
    pass


class _Answers:
    """Reads the answers of every open `KVClient` of a trio run: their sockets sit in one
    level-triggered epoll set, watched by one system task; each readiness is one
    synchronous read that hands complete answers to the tasks waiting for them. A second
    system task times the requests out."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._clients: dict[int, KVClient] = {}

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

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._ep.fileno())
                for fd, _events in self._ep.poll(0, 1024):
                    client = self._clients.get(fd)  # gone if closed earlier in this round
                    if client is None:
                        continue
                    try:
                        client._readable()
                    except Exception as e:  # a bug must cost one connection, not the run
                        client.close(f"connection lost: {e!r}")
        finally:
            self._ep.close()


_ANSWERS: trio.lowlevel.RunVar[_Answers] = trio.lowlevel.RunVar("lab.client.answers")


def _answers() -> _Answers:
    """This trio run's answer reader, started on first use (a system task: it ends with
    the run)."""
    try:
        return _ANSWERS.get()
    except LookupError:
        answers = _Answers()
        _ANSWERS.set(answers)
        trio.lowlevel.spawn_system_task(answers.run, name="lab.client answers")
        trio.lowlevel.spawn_system_task(answers.expire, name="lab.client timeouts")
        return answers


class KVClient:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[trio.lowlevel.Task, float]] = {}  # id -> task, deadline
        self._send_lock = trio.Lock()
        self._slow_senders = 0  # callers finishing a partial send, in order, under the lock
        self._buf = bytearray()
        self._answers: _Answers | None = None
        self.closed = False

    def _start_reading(self) -> None:
        self._answers = _answers()
        self._answers.add(self)

    # ------------------------------------------------------------------ reading

    def _readable(self) -> None:
        """One read: the answer reader saw the socket readable."""
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

    # ------------------------------------------------------------------ writing

    def _send_now(self, data: bytes) -> memoryview:
        """Send what the socket takes at once (nothing while a slow sender is queued, to
        keep lines whole and in order); returns the rest."""
        view = memoryview(data)
        if not self._slow_senders:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                pass
            except OSError as e:
                self.close()
                raise ConnectionLost(str(e) or type(e).__name__) from e
        return view

    async def _send_rest(self, data: bytes, view: memoryview) -> None:
        """Send the rest of ``data``, waiting for room, in turn with other slow senders."""
        self._slow_senders += 1
        try:
            async with self._send_lock:
                while view:
                    if self.closed:
                        raise ConnectionLost("connection closed while sending")
                    await trio.lowlevel.wait_writable(self._sock)
                    try:
                        view = view[self._sock.send(view):]
                    except BlockingIOError:
                        pass
        except BaseException as e:
            if len(view) < len(data):
                self.close()  # half a line cannot be taken back: this connection is done
            if isinstance(e, OSError | ValueError | trio.ClosedResourceError):
                raise ConnectionLost(str(e) or type(e).__name__) from e
            raise
        finally:
            self._slow_senders -= 1

    async def call(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send one request and wait at most ``timeout`` seconds for its answer."""
        if self.closed:
            raise ConnectionLost("connection is closed")
        deadline = trio.current_time() + timeout
        rid = next(self._ids)
        line = dumps({**request, "id": rid}) + b"\n"
        rest = self._send_now(line)
        if rest:
            with trio.CancelScope(deadline=deadline) as scope:
                await self._send_rest(line, rest)
            if scope.cancelled_caught:
                raise trio.TooSlowError
        # No checkpoint from the last byte sent to here: the answer cannot be missed.
        if self.closed:
            raise ConnectionLost("connection closed before the answer")
        self._waiting[rid] = (trio.lowlevel.current_task(), deadline)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiting.pop(rid, None)
            return trio.lowlevel.Abort.SUCCEEDED

        # The answer reader hands over the answer; `_Answers.expire` a TooSlowError.
        answer: dict[str, Any] = await trio.lowlevel.wait_task_rescheduled(abort)
        return answer

    def close(self, why: str = "connection closed before the answer") -> None:
        """Close the connection; every request still waiting for its answer gets
        :class:`ConnectionLost` with ``why``."""
        if self.closed:
            return
        self.closed = True
        if self._answers is not None:
            self._answers.remove(self)  # before the descriptor (and its number) is reused
        try:
            trio.lowlevel.notify_closing(self._sock)  # (a sender may wait for room)
        except (OSError, ValueError):
            pass
        self._sock.close()
        waiting, self._waiting = self._waiting, {}
        for task, _deadline in waiting.values():
            trio.lowlevel.reschedule(task, outcome.Error(ConnectionLost(why)))


@asynccontextmanager
async def connect(host: str, port: int, timeout: float = 2.0) -> AsyncIterator[KVClient]:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
    tsock = stream.socket
    raw = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
    raw.setblocking(False)
    client = KVClient(raw)
    try:
        client._start_reading()
        yield client
    finally:
        client.close()
