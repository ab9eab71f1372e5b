"""The data path: one proxied connection, its two links, and the toxic pipeline of each.

Theory of operation
-------------------
A `Connection` owns the accepted client socket and the dialled upstream socket, and two
`Link`s: *upstream* (client → server bytes) and *downstream* (server → client).

A link runs in one of two modes and switches between them live:

* **Fast mode** (no active toxic on the link): bytes go straight from ``recv_into`` to
  ``send`` on the raw non-blocking sockets, with a 64 KiB buffer. No queues, no task
  hops: this is what keeps the added latency and throughput close to the kernel's. A
  link in fast mode has no task of its own while it is idle: its source socket sits in
  the server's `FastPath`, one epoll set that one task watches, and each readiness is
  one synchronous read-and-send. (A trio task per link would pay a task switch and an
  ``epoll_ctl`` for every message; on the lab's many small Raft messages that was a
  large share of the proxy's CPU.) A send that cannot finish at once, a toxic that
  becomes active, or the source closing hands the link to a reader task, which returns
  it to the fast path once it is idle and back in fast mode.
* **Pipeline mode** (at least one active toxic, or data still draining): the reader turns
  each read into a `Chunk` and pushes it into a chain of queues::

      reader -> [q] stage -> [q] stage -> ... -> [tail] writer -> dest socket

  Only *active* stages (toxic type is not ``noop`` and its toxicity draw came up) have a
  queue and a task; inactive ones cost nothing.

Every reconfiguration (toxic added, updated, removed; see `Link.add_toxic` and friends) is
*synchronous*: it splices queues and stops/starts stage tasks without awaiting, so the
control API never waits for the data path, even when a toxic holds data forever or the
destination does not read. The splices keep the byte order:

* activating a stage gives it a fresh input queue and makes it feed the queue that its
  predecessor used to feed; what was already in that queue is older, so it stays ahead;
* deactivating or removing a stage appends what it held, then its queued input, to its
  output queue (which only holds older data);
* restarting a stage (update, toxicity redraw) puts what it held back in front of its own
  input queue, so the new run handles it.

Stage tasks can be woken in the instant between being stopped and being cancelled; every
queue operation therefore checks the run's ``alive`` flag first, so a stopped run never
touches a queue again. Back to fast mode: when no stage is active, the tail queue is empty
and the writer is idle, the reader (the only other task that writes to the destination)
retires the writer before it sends directly, so the two never interleave.

Closing follows upstream Toxiproxy: when a link's output ends (EOF from the source went
through the chain, or a toxic closed the link) its destination socket is closed; the
other link then reads EOF from that socket, drains its own pipeline and closes the other
socket. ``reset_peer`` and proxy shutdown close both sockets at once, the former with
``SO_LINGER {1, 0}`` so the kernel sends RST.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from random import Random

import trio

from ._toxics import Chunk, RunFn, Toxic, ToxicKind

__all__ = ["Connection", "FastPath", "Link", "SocketHandle", "dial"]

log = logging.getLogger("lab.toxiproxy")

_READ_SIZE = 64 * 1024
_TAIL_CHUNKS = 1
_LINGER_RST = struct.pack("ii", 1, 0)

_WAIT_ERRORS = (trio.ClosedResourceError, trio.BusyResourceError, OSError, ValueError)


class _Stopped(Exception):
    """Raised inside a stage run that the control plane has already stopped."""


class SocketHandle:
    """A raw non-blocking socket plus the close protocol trio needs.

    Closing marks the handle, wakes any task waiting on the fd (`notify_closing`) and
    closes it, all without a checkpoint in between.
    """

    __slots__ = ("closed", "fast", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False
        self.fast: FastPath | None = None  # the fast path watching this socket, if one is

    def leave_fast(self) -> Link | None:
        """Stop the fast path watching this socket; returns the link that read it there."""
        return self.fast.remove(self) if self.fast is not None else None

    def close(self, *, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.leave_fast()  # before the descriptor (and its number) is given back
        if rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            except OSError:
                pass
        try:
            trio.lowlevel.notify_closing(self.sock)
        except (OSError, ValueError):
            pass
        self.sock.close()


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


async def _recv(s: SocketHandle, buf: bytearray, wait_first: bool = False) -> tuple[int, bool]:
    """Read once into ``buf``; returns ``(n, waited)``. EOF, reset and close all give 0.
    ``wait_first`` (the last read was short, so the socket is most likely empty) waits for
    readability before the first attempt, saving the read that would only say "empty"."""
    waited = False
    if wait_first and not s.closed:
        try:
            await trio.lowlevel.wait_readable(s.sock)
        except _WAIT_ERRORS:
            return 0, True
        waited = True
    while True:
        if s.closed:
            return 0, waited
        try:
            return s.sock.recv_into(buf), waited
        except BlockingIOError:
            pass
        except OSError:
            return 0, waited
        try:
            await trio.lowlevel.wait_readable(s.sock)
        except _WAIT_ERRORS:
            return 0, True
        waited = True


async def _send_all(s: SocketHandle, data: bytes | memoryview) -> tuple[bool, bool]:
    """Write all of ``data``; returns ``(ok, waited)``; ``ok`` is false if the socket broke."""
    view = memoryview(data)
    waited = False
    while view:
        if s.closed:
            return False, waited
        try:
            sent = s.sock.send(view)
        except BlockingIOError:
            pass
        except OSError:
            return False, waited
        else:
            view = view[sent:]
            continue
        try:
            await trio.lowlevel.wait_writable(s.sock)
        except _WAIT_ERRORS:
            return False, True
        waited = True
    return True, waited


async def dial(host: str, port: int) -> socket.socket | None:
    """Connect to the upstream; ``None`` if that fails (the caller drops the client)."""
    try:
        stream = await trio.open_tcp_stream(host, port)
    except (OSError, ValueError):  # refused, unreachable, unresolvable, malformed host
        return None
    tsock = stream.socket
    raw = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
    _tune(raw)
    return raw


class FastPath:
    """The data path of every link in fast mode: one epoll set, one trio task.

    A link's source socket is registered (level-triggered) while the link is idle in
    fast mode; each readiness is handled by `Link.forward_ready` without awaiting, so
    handing a link to or from a reader task is always a synchronous step of the trio
    thread. After each round the task waits for the epoll set itself to become readable
    again, so the API and the pipelines run between rounds.
    """

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._links: dict[int, Link] = {}
        self._buf = bytearray(_READ_SIZE)
        self._view = memoryview(self._buf)

    def add(self, link: Link) -> None:
        src = link.src
        fd = src.sock.fileno()
        self._ep.register(fd, select.EPOLLIN)
        self._links[fd] = link
        src.fast = self

    def remove(self, handle: SocketHandle) -> Link | None:
        handle.fast = None
        fd = handle.sock.fileno()
        link = self._links.pop(fd, None)
        with suppress(OSError, ValueError):  # the server is shutting down: the set is closed
            self._ep.unregister(fd)
        return link

    def __len__(self) -> int:
        return len(self._links)

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._ep.fileno())
                for fd, _events in self._ep.poll(0, 1024):
                    link = self._links.get(fd)  # gone if an earlier event closed it
                    if link is None:
                        continue
                    try:
                        link.forward_ready(self._buf, self._view)
                    except Exception:  # a bug here must cost one connection, not all
                        log.exception("connection failed")
                        link.conn.close()
        finally:
            self._ep.close()


class _Queue:
    """FIFO of chunks between two tasks, bounded by chunk count and bytes.

    The bound is soft: the control plane may append past it when it splices (a removed
    stage's contents), producers then simply wait until it has drained.
    """

    __slots__ = ("_getters", "_putters", "items", "max_bytes", "max_chunks", "nbytes")

    def __init__(self, max_chunks: int, max_bytes: int) -> None:
        self.items: deque[Chunk] = deque()
        self.nbytes = 0
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self._getters = trio.lowlevel.ParkingLot()
        self._putters = trio.lowlevel.ParkingLot()

    def full(self) -> bool:
        return len(self.items) >= self.max_chunks or self.nbytes >= self.max_bytes

    def append(self, chunk: Chunk) -> None:
        self.items.append(chunk)
        self.nbytes += len(chunk.data) if chunk.data is not None else 0
        self._getters.unpark_all()

    def appendleft(self, chunk: Chunk) -> None:
        self.items.appendleft(chunk)
        self.nbytes += len(chunk.data) if chunk.data is not None else 0
        self._getters.unpark_all()

    def popleft(self) -> Chunk:
        chunk = self.items.popleft()
        self.nbytes -= len(chunk.data) if chunk.data is not None else 0
        self._putters.unpark_all()
        return chunk

    async def wait_items(self) -> None:
        await self._getters.park()

    async def wait_room(self) -> None:
        await self._putters.park()

    def wake_putters(self) -> None:
        self._putters.unpark_all()


class _Stage:
    """One toxic on one link: persistent per-connection state plus the current run."""

    __slots__ = ("active", "inq", "run", "state", "toxic")

    def __init__(self, toxic: Toxic) -> None:
        self.toxic = toxic
        self.state: dict[str, float] = {}
        self.active = False
        self.inq: _Queue | None = None
        self.run: _Run | None = None


class _Run:
    """One execution of a toxic on a stage; the `StageIO` the toxic's code sees."""

    __slots__ = ("alive", "holding", "link", "scope", "stage")

    def __init__(self, link: Link, stage: _Stage) -> None:
        self.link = link
        self.stage = stage
        self.holding: Chunk | None = None
        self.alive = True
        self.scope = trio.CancelScope()

    @property
    def state(self) -> dict[str, float]:
        return self.stage.state

    @property
    def rng(self) -> Random:
        return self.link.conn.rng

    def _check(self) -> _Queue:
        if not self.alive or self.stage.inq is None:
            raise _Stopped
        return self.stage.inq

    async def get(self, deadline: float = math.inf) -> Chunk | None:
        while True:
            q = self._check()
            if q.items:
                chunk = q.popleft()
                self.holding = chunk
                return chunk
            if trio.current_time() >= deadline:
                return None
            with trio.move_on_at(deadline):
                await q.wait_items()

    async def put(self, chunk: Chunk, rest: Chunk | None = None) -> None:
        while True:
            self._check()
            q = self.link.queue_after(self.stage)
            if not q.full():
                q.append(chunk)
                self.holding = rest
                return
            await q.wait_room()

    def drop(self) -> None:
        self.holding = None

    def finish(self) -> None:
        self._check()
        self.holding = None
        self.link.finish_after(self.stage)

    def schedule_reset(self, when: float) -> None:
        self.link.conn.schedule_reset(when)


class Link:
    """One direction of a connection: a reader, maybe a pipeline of stages, a writer."""

    def __init__(
        self, conn: Connection, direction: str, src: SocketHandle, dst: SocketHandle
    ) -> None:
        self.conn = conn
        self.direction = direction
        self.src = src
        self.dst = dst
        self.stages: list[_Stage] = []
        self.n_active = 0
        self.tail: _Queue | None = None
        self.writer_scope: trio.CancelScope | None = None
        self.writing = False
        self.finished = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.fast = conn.fast
        # The reader task sleeps here while the link is in the fast path; `_resume`
        # wakes it, with what the fast path read but could not send yet.
        self._wake = trio.lowlevel.ParkingLot()
        self._pending = b""
        self._read_eof = False  # the fast path read the end of ``src``

    # -- set-up --------------------------------------------------------------------------

    def start(self, chain: list[Toxic]) -> None:
        """Build the stages for the proxy's current chain and start the reader."""
        for toxic in chain:
            stage = _Stage(toxic)
            self.stages.append(stage)
            if self._draw(stage):
                self._activate(len(self.stages) - 1)
        if self.tail is None and self.fast is not None:
            self.fast.add(self)
        self.conn.nursery.start_soon(self._reader)

    # -- control plane (all synchronous) ---------------------------------------------------

    def add_toxic(self, toxic: Toxic) -> None:
        """Append a stage for ``toxic``; like upstream, the previous last stage restarts."""
        if self.finished:
            return
        stage = _Stage(toxic)
        self.stages.append(stage)
        if len(self.stages) > 1:
            self._restart(len(self.stages) - 2)
        if self._draw(stage):
            self._activate(len(self.stages) - 1)

    def update_toxic(self, toxic: Toxic) -> None:
        """Restart the toxic's stage with its new attributes (and a new toxicity draw)."""
        if self.finished:
            return
        index = self._index(toxic)
        if index is not None:
            self._restart(index)

    def remove_toxic(self, toxic: Toxic) -> None:
        """Remove the toxic's stage, handing on what it held; a timeout closes the link."""
        index = self._index(toxic)
        if index is None:
            return
        stage = self.stages[index]
        if self.finished:
            # The link has ended, and its end (EOF) travels down the pipeline. A later
            # timeout still holds it (two cuts of one link: the first removed closed the
            # link into the second): removing that one hands the end on, or the
            # connection would stay open, never read again.
            if toxic.kind.closes_on_remove and stage.active:
                end = self._queue_after_index(index)
                self._retire(stage)
                del self.stages[index]
                end.append(Chunk(None, trio.current_time()))
            return
        if toxic.kind.closes_on_remove:
            out = self._queue_after_index(index) if self.tail is not None else None
            if stage.active:
                self._retire(stage)
            del self.stages[index]
            self._finish(out)
            return
        if stage.active:
            self._deactivate(index)
        del self.stages[index]
        if index > 0:
            self._restart(index - 1)

    def finish_after(self, stage: _Stage) -> None:
        """A toxic closes the link: EOF goes to the stage's output, the reader stops."""
        if self.finished:
            return
        index = self.stages.index(stage)
        self._finish(self._queue_after_index(index))

    # -- pipeline plumbing -------------------------------------------------------------------

    def queue_after(self, stage: _Stage) -> _Queue:
        return self._queue_after_index(self.stages.index(stage))

    def _queue_after_index(self, index: int) -> _Queue:
        for later in self.stages[index + 1 :]:
            if later.active and later.inq is not None:
                return later.inq
        assert self.tail is not None, "an active stage implies a pipeline"
        return self.tail

    def _first_queue(self) -> _Queue:
        for stage in self.stages:
            if stage.active and stage.inq is not None:
                return stage.inq
        assert self.tail is not None
        return self.tail

    def _index(self, toxic: Toxic) -> int | None:
        for i, stage in enumerate(self.stages):
            if stage.toxic is toxic:
                return i
        return None

    def _draw(self, stage: _Stage) -> bool:
        kind = stage.toxic.kind
        return not kind.passthrough and self.conn.rng.random() < stage.toxic.toxicity

    def _ensure_pipeline(self) -> None:
        if self.src.fast is not None:
            self._resume()  # the reader task takes over from the fast path, to feed it
        if self.tail is None:
            self.tail = _Queue(_TAIL_CHUNKS, 1 << 30)
            self.writer_scope = trio.CancelScope()
            self.conn.nursery.start_soon(self._writer, self.tail, self.writer_scope)

    def _activate(self, index: int) -> None:
        stage = self.stages[index]
        self._ensure_pipeline()
        out = self._queue_after_index(index)
        kind: ToxicKind = stage.toxic.kind
        stage.inq = _Queue(kind.queue_chunks, kind.queue_bytes)
        stage.active = True
        self.n_active += 1
        # Whoever was waiting for room in `out` must now feed the new stage instead.
        out.wake_putters()
        self._spawn(stage)

    def _deactivate(self, index: int) -> None:
        stage = self.stages[index]
        held = self._stop_run(stage)
        q = stage.inq
        out = self._queue_after_index(index)
        stage.inq = None
        stage.active = False
        self.n_active -= 1
        if held is not None:
            out.append(held)
        if q is not None:
            while q.items:
                out.append(q.popleft())
            q.wake_putters()

    def _restart(self, index: int) -> None:
        stage = self.stages[index]
        was_active = stage.active
        if was_active:
            held = self._stop_run(stage)
            if held is not None and stage.inq is not None:
                stage.inq.appendleft(held)
        now_active = self._draw(stage)
        if was_active and now_active:
            self._spawn(stage)
        elif was_active:
            self._deactivate(index)
        elif now_active:
            self._activate(index)

    def _retire(self, stage: _Stage) -> None:
        """Stop an active stage's task and drop its input queue (waking anyone blocked
        putting into it): the stage is about to leave the pipeline."""
        self._stop_run(stage)
        q = stage.inq
        stage.inq = None
        stage.active = False
        self.n_active -= 1
        if q is not None:
            q.wake_putters()

    def _stop_run(self, stage: _Stage) -> Chunk | None:
        run = stage.run
        stage.run = None
        if run is None:
            return None
        run.alive = False
        run.scope.cancel()
        held, run.holding = run.holding, None
        return held

    def _spawn(self, stage: _Stage) -> None:
        kind = stage.toxic.kind
        assert kind.run is not None
        run = _Run(self, stage)
        stage.run = run
        attrs = dict(stage.toxic.attrs)
        self.conn.nursery.start_soon(self._stage_task, run, kind.run, attrs)

    async def _stage_task(self, run: _Run, fn: RunFn, attrs: dict[str, int]) -> None:
        with run.scope:
            try:
                await fn(run, attrs)
            except _Stopped:
                pass

    def _finish(self, out: _Queue | None) -> None:
        self.finished = True
        self._resume()  # (if it sleeps in the fast path, the reader wakes up and ends)
        if out is None:
            self.conn.close_sock(self.dst)
        else:
            out.append(Chunk(None, trio.current_time()))

    def _try_fast(self) -> bool:
        """True if the reader may write to the destination itself (retiring the writer)."""
        tail = self.tail
        if tail is None:
            return True
        if self.n_active or tail.items or self.writing:
            return False
        self.tail = None
        if self.writer_scope is not None:
            self.writer_scope.cancel()
            self.writer_scope = None
        return True

    # -- tasks --------------------------------------------------------------------------------

    def forward_ready(self, buf: bytearray, view: memoryview) -> None:
        """The fast path saw ``src`` readable: one read, sent on at once, never waiting.
        What cannot be sent at once goes to the link's reader task, which sends it first."""
        src, dst = self.src, self.dst
        if self.finished:
            self._resume()  # the reader wakes up and ends
            return
        try:
            n = src.sock.recv_into(buf)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        sent = -1  # stays so on EOF, a reset, or a broken destination
        if n:
            self.bytes_in += n
            try:
                sent = dst.sock.send(view[:n])
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = -1
        if sent == n:
            self.bytes_out += n
            return
        if sent < 0:  # EOF, a reset, or the destination broke: as in `_reader`
            self._read_eof = True
            self._resume()
            self.conn.close_sock(dst)
            return
        self.bytes_out += sent
        self._resume(bytes(view[sent:n]))

    def _resume(self, pending: bytes = b"") -> None:
        """Take the link out of the fast path and wake its reader task, which sends
        ``pending`` (read from ``src``, not yet sent) before anything else."""
        self.src.leave_fast()
        if pending:
            self._pending = pending
        self._wake.unpark_all()

    async def _reader(self) -> None:
        """The one reader of ``src``: reads until the link ends, sleeping while the link
        is idle in the fast path."""
        buf = bytearray(_READ_SIZE)
        view = memoryview(buf)
        src, dst = self.src, self.dst
        n = _READ_SIZE
        while True:
            if src.fast is not None:
                await self._wake.park()
                continue
            if self._read_eof:
                return
            if self._pending:  # read by the fast path and counted in already
                n, waited = len(self._pending), False
                view[:n] = self._pending
                self._pending = b""
            else:
                n, waited = await _recv(src, buf, wait_first=n < _READ_SIZE)
                if not self.finished:
                    self.bytes_in += n
            if self.finished:
                return
            if self._try_fast():
                if n == 0:
                    self.conn.close_sock(dst)
                    return
                ok, sent_waited = await _send_all(dst, view[:n])
                if not ok:
                    self.conn.close_sock(dst)
                    return
                self.bytes_out += n
                if n < _READ_SIZE and self.fast is not None and self._try_fast() \
                        and not (self.finished or src.closed):
                    # Idle (a short read emptied the socket): back to the fast path, where
                    # a message costs no task switch.
                    self.fast.add(self)
                    continue
            else:
                chunk = Chunk(bytes(view[:n]) if n else None, trio.current_time())
                sent_waited = await self._push(chunk)
                if n == 0:
                    return
            if not (waited or sent_waited):
                # Both calls completed without blocking: let other tasks (the API, other
                # connections) run before the next read.
                await trio.lowlevel.checkpoint()

    async def _push(self, chunk: Chunk) -> bool:
        waited = False
        while not self.finished:
            q = self._first_queue()
            if not q.full():
                q.append(chunk)
                return waited
            await q.wait_room()
            waited = True
        return waited

    async def _writer(self, q: _Queue, scope: trio.CancelScope) -> None:
        dst = self.dst
        with scope:
            while True:
                if not q.items:
                    await q.wait_items()
                    continue
                chunk = q.popleft()
                if chunk.data is None:
                    self.conn.close_sock(dst)
                    return
                self.writing = True
                ok, waited = await _send_all(dst, chunk.data)
                self.writing = False
                if not ok:
                    self.conn.close_sock(dst)
                    return
                self.bytes_out += len(chunk.data)
                if not waited and q.items:
                    await trio.lowlevel.checkpoint()


class Connection:
    """An accepted client, its upstream connection and the two links between them.

    ``owner`` is notified through ``on_closed`` when the connection is gone; the links are
    created only once the upstream is connected (``links`` is empty before that).
    """

    def __init__(
        self,
        client: socket.socket,
        upstream_host: str,
        upstream_port: int | None,
        chains: Mapping[str, list[Toxic]],
        rng: Random,
        on_closed: Callable[[Connection], None],
        fast: FastPath | None = None,
    ) -> None:
        _tune(client)
        self.fast = fast
        self.client = SocketHandle(client)
        self.upstream: SocketHandle | None = None
        self._upstream_host = upstream_host
        self._upstream_port = upstream_port
        self._chains = chains
        self.rng = rng
        self._on_closed = on_closed
        self.links: dict[str, Link] = {}
        self.scope = trio.CancelScope()
        self.closed = False
        self._nursery: trio.Nursery | None = None
        self._reset_at = math.inf

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    async def run(self) -> None:
        try:
            with self.scope:
                if self._upstream_port is None:
                    return
                up = await dial(self._upstream_host, self._upstream_port)
                if up is None:
                    return
                self.upstream = SocketHandle(up)
                if self.closed:
                    return
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.links = {
                        "upstream": Link(self, "upstream", self.client, self.upstream),
                        "downstream": Link(self, "downstream", self.upstream, self.client),
                    }
                    for direction, link in self.links.items():
                        link.start(self._chains[direction])
                    await trio.sleep_forever()
        except Exception:  # a bug here must cost one connection, not the whole server
            log.exception("connection failed")
        finally:
            self.close()
            self._on_closed(self)

    def link(self, direction: str) -> Link | None:
        return None if self.closed else self.links.get(direction)

    def close_sock(self, handle: SocketHandle) -> None:
        """Close one side; once both sides are closed the connection is over."""
        reader = handle.leave_fast()
        handle.close()
        if self.client.closed and (self.upstream is None or self.upstream.closed):
            self.close()
        elif reader is not None and not reader.finished:
            # In the fast path nobody waits on the socket to see it close: the reader
            # task takes over, reads EOF from the closed socket and ends the link as usual.
            reader._resume()

    def close(self, *, rst: bool = False) -> None:
        """Close both sockets now (with RST if asked) and stop every task of this connection."""
        self.client.close(rst=rst)
        if self.upstream is not None:
            self.upstream.close(rst=rst)
        if self.closed:
            return
        self.closed = True
        for link in self.links.values():
            link.finished = True
        self.scope.cancel()

    def schedule_reset(self, when: float) -> None:
        if self.closed or when >= self._reset_at:
            return
        self._reset_at = when
        self.nursery.start_soon(self._reset_later, when)

    async def _reset_later(self, when: float) -> None:
        await trio.sleep_until(when)
        if when <= self._reset_at:
            self.close(rst=True)
