"""An async client for raftkv's JSON-lines client protocol (``nodes/PROTOCOL.md``).

``async with connect(host, port) as c: await c.call({...})``. Requests are pipelined on
one connection and matched to answers by ``id``. A request that gets no answer in time
raises :class:`trio.TooSlowError`; a lost connection raises :class:`ConnectionLost`.
Whether either means the operation *may* have happened is the caller's call (for a write
it may: the lab records such outcomes as ``info``).

This is the lab's hot path (every operation of every client worker goes through it), so
it works on the raw non-blocking socket with trio's low-level primitives: a request that
fits in the socket buffer is sent without yielding, and the caller sleeps exactly once,
until the reader task hands it its answer. Measured by ``bench/run_bench.py``.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import outcome
import trio

from lab.fastjson import dumps

_READ_SIZE = 65536
_MAX_LINE = 64 * 1024 * 1024  # an answer longer than this means the peer is not raftkv


class ConnectionLost(Exception):
    pass


class KVClient:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        self._send_lock = trio.Lock()
        self._slow_senders = 0  # callers finishing a partial send, in order, under the lock
        self.closed = False

    # ------------------------------------------------------------------ reading

    async def _read_answers(self) -> None:
        buf = bytearray()
        why = "connection closed before the answer"
        try:
            drained = False
            while not self.closed:
                if drained:  # a short read emptied the socket: skip the recv that says so
                    await trio.lowlevel.wait_readable(self._sock)
                try:
                    data = self._sock.recv(_READ_SIZE)
                except BlockingIOError:
                    drained = True
                    continue
                if not data:
                    break
                drained = len(data) < _READ_SIZE
                buf += data
                start = 0
                while (nl := buf.find(b"\n", start)) >= 0:
                    self._answer(json.loads(buf[start:nl]))
                    start = nl + 1
                del buf[:start]
                if len(buf) > _MAX_LINE:
                    why = "answer too long"
                    break
        except (OSError, ValueError, trio.ClosedResourceError) as e:
            why = f"connection lost: {e}"
        finally:
            self.close()
            waiting, self._waiting = self._waiting, {}
            for task in waiting.values():
                trio.lowlevel.reschedule(task, outcome.Error(ConnectionLost(why)))

    def _answer(self, msg: Any) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else None
        if type(rid) is int:  # anything else answers nobody's request
            task = self._waiting.pop(rid, None)
            if task is not None:
                trio.lowlevel.reschedule(task, outcome.Value(msg))

    # ------------------------------------------------------------------ writing

    async def _send(self, data: bytes) -> None:
        view = memoryview(data)
        if not self._slow_senders:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                pass
            except OSError as e:
                self.close()
                raise ConnectionLost(str(e) or type(e).__name__) from e
            if not view:
                return
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
        rid = next(self._ids)
        line = dumps({**request, "id": rid}) + b"\n"
        task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiting.pop(rid, None)
            return trio.lowlevel.Abort.SUCCEEDED

        # A bare cancel scope rather than trio.fail_after (a generator-based context
        # manager): this runs once per operation of every client.
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            await self._send(line)
            # No checkpoint from the last byte sent to here: the answer cannot be missed.
            if self.closed:
                raise ConnectionLost("connection closed before the answer")
            self._waiting[rid] = task
            answer: dict[str, Any] = await trio.lowlevel.wait_task_rescheduled(abort)
            return answer
        raise trio.TooSlowError

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            trio.lowlevel.notify_closing(self._sock)
        except (OSError, ValueError):
            pass
        self._sock.close()


@asynccontextmanager
async def connect(host: str, port: int, timeout: float = 2.0) -> AsyncIterator[KVClient]:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
    tsock = stream.socket
    raw = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
    raw.setblocking(False)
    client = KVClient(raw)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read_answers)
            try:
                yield client
            finally:
                client.close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader task never raises, so a group holds the caller's own exception:
        # hand it back unwrapped (ConnectionLost, TooSlowError, ...).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        client.close()
