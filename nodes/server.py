"""The trio driver of one raftkv node: it owns the sockets, the disk and the clock, and
feeds the sans-IO core (:mod:`nodes.raft`).

One task, the *loop*, drains the core: ``ready()`` -> persist (one fsync for everything
gathered since the last one: group commit) -> send -> apply -> answer clients. Every other
task (peer receivers, client connections) only calls the core's non-blocking inputs and
kicks the loop. trio runs one task at a time, so the core needs no lock; while the loop
waits for an fsync, new proposals and messages pile up for the next batch.

Client protocol: see ``nodes/PROTOCOL.md``.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from nodes.clients import ClientConn, serve_client
from nodes.crashpoints import BEFORE_APPLY, POINTS, WAL_AFTER_SYNC, CrashPoints
from nodes.kv import CommandError, KVStore, validate_command
from nodes.raft import CommittedConflict, Config, NotLeader, ProtocolViolation, Raft, Ready, Role
from nodes.transport import PeerSender, serve_peer_connection
from nodes.types import Entry, Message, MsgType
from nodes.wal import WAL, WALError

MAX_LINE = 1024 * 1024

#: The applied-log chain before any entry (index 0): 32 zero bytes, in hex.
GENESIS_CHAIN = "00" * 32


def chain_step(prev: str, e: Entry) -> str:
    """The applied-log chain after entry ``e``: ``blake2b-256(prev || canonical JSON of
    [index, term, command])``, the command's keys sorted, so that every member (and a
    member after a restart, whose entries come back from disk) computes the same value."""
    h = hashlib.blake2b(bytes.fromhex(prev), digest_size=32)
    h.update(json.dumps([e.index, e.term, e.data], sort_keys=True,
                        separators=(",", ":")).encode())
    return h.hexdigest()


def split_image(data: Any) -> tuple[Any, str | None]:
    """A snapshot's ``data`` as (the state machine's image, the applied-log chain at the
    snapshot's index, or None when unknown: a snapshot from before chains existed)."""
    if isinstance(data, dict) and "chain" in data:
        chain = data["chain"]
        image = {k: v for k, v in data.items() if k != "chain"}
        ok = isinstance(chain, str) and len(chain) == 64 and all(
            c in "0123456789abcdef" for c in chain)
        return image, chain if ok else None
    return data, None


@dataclass
class NodeOptions:
    id: str
    data_dir: Path
    peer_listen: tuple[str, int]
    client_listen: tuple[str, int]
    peers: dict[str, tuple[str, int]]  # other node id -> address to dial (a proxy, in the lab)
    peer_clients: dict[str, str] = field(default_factory=dict)  # id -> client address hint
    tick_ms: float = 10.0
    election_ms: float = 150.0
    heartbeat_ms: float = 50.0
    snapshot_entries: int = 10_000
    digest_every: int = 0  # log a ``digest`` event at every multiple of this index; 0: none
    fsync: bool = True
    bugs: frozenset[str] = frozenset()
    request_timeout: float = 10.0
    max_inflight: int = 64
    max_append_entries: int = 1024
    seed: int | None = None


class Logger:
    """Structured logs: one JSON object per line on stderr."""

    def __init__(self, node: str, stream: Any = None) -> None:
        self.node = node
        self.stream = stream or sys.stderr

    def __call__(self, event: str, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 6), "node": self.node, "event": event, **fields}
        self.stream.write(json.dumps(rec, default=str) + "\n")
        self.stream.flush()


class _Pending:
    """An answer owed to a client, given once by whichever comes first: the entry applied,
    the read served, leadership lost, or the deadline (swept by the loop)."""

    __slots__ = ("conn", "deadline", "done", "index", "maybe", "rid")

    def __init__(self, conn: ClientConn, rid: Any, deadline: float, maybe: bool) -> None:
        self.conn, self.rid, self.deadline, self.maybe = conn, rid, deadline, maybe
        self.index = -1  # the log index of a proposal
        self.done = False

    def set(self, result: dict[str, Any]) -> None:
        if not self.done:
            self.done = True
            self.conn.reply({"id": self.rid, **result})


@dataclass
class _PendingRead:
    key: str
    waiter: _Pending


class Node:
    def __init__(self, opts: NodeOptions, log: Logger | None = None) -> None:
        self.opts = opts
        self.log = log or Logger(opts.id)
        # Armed by a client's ``crash-at`` request; passed by the loop and the WAL.
        self.crash = CrashPoints(log=lambda ev, f: self.log(ev, **f))
        self.wal, rec = WAL.open(opts.data_dir, fsync=opts.fsync,
                                 log=lambda ev, f: self.log(ev, **f), crash=self.crash)
        try:
            image, chain = split_image(rec.snapshot.data) if rec.snapshot else (None, None)
            self.kv = KVStore.restore(image) if rec.snapshot else KVStore()
        except ValueError as e:
            self.wal.close()
            raise WALError(f"{opts.data_dir}: the snapshot's state-machine image is "
                           f"unusable: {e}") from None

        def ticks(ms: float) -> int:
            return max(1, round(ms / opts.tick_ms))

        cfg = Config(
            id=opts.id,
            peers=tuple(sorted([opts.id, *opts.peers])),
            election_ticks=ticks(opts.election_ms),
            heartbeat_ticks=ticks(opts.heartbeat_ms),
            max_inflight=opts.max_inflight,
            max_batch=opts.max_append_entries,
            bugs=opts.bugs,
        )
        self.raft = Raft(cfg, hard_state=rec.hard_state, snapshot=rec.snapshot,
                         entries=rec.entries, rng=random.Random(opts.seed))
        self._durable_hs = rec.hard_state
        self._conflicts_logged: set[tuple[str, int, int]] = set()
        self.log("started", term=rec.hard_state.term, commit=rec.hard_state.commit,
                 entries=len(rec.entries),
                 snapshot_index=rec.snapshot.index if rec.snapshot else 0,
                 fsync=opts.fsync, bugs=sorted(opts.bugs))
        if not opts.fsync:
            self.log("WARNING-fsync-disabled", detail="acknowledged writes can be lost on a crash")
        self.senders = {p: PeerSender(opts.id, p, h, port, self.log)
                        for p, (h, port) in opts.peers.items()}
        self._kick_send, self._kick_recv = trio.open_memory_channel[None](1)
        self._proposals: dict[int, tuple[int, _Pending]] = {}
        self._deadlines: deque[_Pending] = deque()  # in arrival order = deadline order
        self._new_reads: list[_PendingRead] = []
        self._reads_by_ctx: dict[int, list[_PendingRead]] = {}
        self._reads_by_index: list[tuple[int, list[_PendingRead]]] = []
        self._last_role: tuple[Role, int, str | None] = (Role.FOLLOWER, -1, None)
        self._last_vote: tuple[int, str | None] = (-1, None)
        self._incoming_kv: tuple[int, KVStore, str | None] | None = None
        # The applied-log chain at the last applied entry (None: unknown, after a snapshot
        # that did not carry it), and that entry's index and term.
        self._chain: str | None = chain if rec.snapshot else GENESIS_CHAIN
        if not opts.digest_every:
            self._chain = None  # no digests kept (the chain is unknown from here on)
        self._applied_at = (rec.snapshot.index, rec.snapshot.term) if rec.snapshot else (0, 0)
        self._digest_logged = -1
        self._last_commit_log, self._last_commit_term, self._last_commit_index = 0.0, -1, 0
        self.stats = {"fsyncs": 0, "entries_persisted": 0, "applied": 0, "snapshots": 0}

    # ---------------------------------------------------------------- plumbing

    def kick(self) -> None:
        try:
            self._kick_send.send_nowait(None)
        except trio.WouldBlock:
            pass

    def deliver(self, m: Message) -> None:
        if m.snapshot is not None:
            # Check a snapshot's image before the core adopts it: a bad one must be
            # refused here, not discovered after it replaced our log.
            try:
                image, chain = split_image(m.snapshot.data)
                self._incoming_kv = (m.snapshot.index, KVStore.restore(image), chain)
            except ValueError as e:
                self.log("rejected-peer-message", peer=m.src, reason=f"bad snapshot: {e}")
                return
        try:
            self.raft.step(m)
        except CommittedConflict as e:
            # Evidence of a lost committed entry (the lab checks for it): once per leader,
            # term and index, not once per retry.
            seen = (e.leader, e.term, e.index)
            if seen not in self._conflicts_logged:
                self._conflicts_logged.add(seen)
                self.log("committed-conflict", leader=e.leader, term=e.term, index=e.index,
                         commit=e.commit)
        except ProtocolViolation as e:
            self.log("rejected-peer-message", peer=m.src, reason=str(e))
        # (step may have changed our state, e.g. the term, before it refused the message)
        self.kick()

    async def open_listeners(self) -> tuple[list[trio.SocketListener], list[trio.SocketListener]]:
        """Bind both ports (a plain OSError if one is taken), before any task starts."""
        peer = await trio.open_tcp_listeners(self.opts.peer_listen[1],
                                             host=self.opts.peer_listen[0])
        client = await trio.open_tcp_listeners(self.opts.client_listen[1],
                                               host=self.opts.client_listen[0])
        return peer, client

    async def serve(self, peer_listeners: list[trio.SocketListener],
                    client_listeners: list[trio.SocketListener]) -> None:
        peers = frozenset(self.opts.peers)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, lambda s: serve_peer_connection(
                s, self.opts.id, peers, self.deliver, self.log), peer_listeners)
            nursery.start_soon(trio.serve_listeners, lambda s: serve_client(
                s, self._handle_line, self._reject_client, MAX_LINE), client_listeners)
            for sender in self.senders.values():
                nursery.start_soon(sender.run)
            nursery.start_soon(self._loop)
            self.log("listening", peer=self.opts.peer_listen, client=self.opts.client_listen)

    # ---------------------------------------------------------------- the loop

    async def _loop(self) -> None:
        tick = self.opts.tick_ms / 1000
        next_tick = trio.current_time() + tick
        again = False
        while True:
            if not again:
                with trio.move_on_at(next_tick):
                    await self._kick_recv.receive()
            now = trio.current_time()
            if now >= next_tick:
                self.raft.tick()
                next_tick += tick
                if now - next_tick > 10 * tick:  # we were stalled (paused?): don't burst
                    next_tick = now + tick
                self._expire(now)
            self._start_reads()
            rd = self.raft.ready()
            self._note_role(rd)
            # A leader counts its own new entries only in the ready() after they are on
            # disk: look again at once rather than after the next kick or tick.
            again = bool(rd.entries) and rd.role is Role.LEADER
            if rd.empty():
                continue
            if rd.early_send:
                self._send(rd)
                await self._persist(rd)
            else:
                await self._persist(rd)
                self._send(rd)
            self._apply(rd)
            await self._maybe_snapshot()

    def _send(self, rd: Ready) -> None:
        for m in rd.messages:
            self.senders[m.dst].send_nowait(m)
            if m.type is MsgType.VOTE_RESP and not m.reject:
                self._note_vote(m.term, m.dst)
            elif m.type is MsgType.VOTE:
                self._note_vote(m.term, self.opts.id)

    def _note_vote(self, term: int, candidate: str) -> None:
        """Log a vote once it is cast: its answer (or, for our own, our requests) sent,
        hence already on disk (what a vote must be before anyone hears of it)."""
        if (term, candidate) != self._last_vote:
            self._last_vote = (term, candidate)
            self.log("vote", term=term, candidate=candidate)

    async def _persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            hs = rd.hard_state or self._durable_hs
            snap = rd.snapshot
            await trio.to_thread.run_sync(
                lambda: self.wal.save_snapshot(snap, hs, [], installing=True))
            self._durable_hs = hs
            self.log("snapshot-installed", index=snap.index, term=snap.term)
        if rd.hard_state is None and not rd.entries:
            return
        new_hs = rd.hard_state
        # Only entries, the term and the vote are promises that must be on disk before
        # anyone hears of them; a commit index that moved alone may ride on a later sync
        # (after a crash it is learnt again from the leader).
        must_sync = bool(rd.entries) or (new_hs is not None and (new_hs.term, new_hs.vote) != (
            self._durable_hs.term, self._durable_hs.vote))
        self.wal.save(new_hs, rd.entries)
        if new_hs is not None:
            self._durable_hs = new_hs
        if not must_sync:
            return
        if self.opts.fsync:
            await trio.to_thread.run_sync(self.wal.sync)
        else:
            self.wal.sync()
        self.stats["fsyncs"] += 1
        self.stats["entries_persisted"] += len(rd.entries)
        # On disk; the Ready's messages not sent yet (a leader's own appends, sent before
        # its write, are out already).
        if self.crash.armed:
            self.crash.hit(WAL_AFTER_SYNC)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            index, kv, chain = self._incoming_kv or (-1, None, None)
            if index != rd.snapshot.index or kv is None:
                image, chain = split_image(rd.snapshot.data)
                kv = KVStore.restore(image)
            self.kv, self._chain = kv, chain
            self._applied_at = (rd.snapshot.index, rd.snapshot.term)
            self._incoming_kv = None
            for idx in [i for i in self._proposals if i <= rd.snapshot.index]:
                # Replaced by a snapshot: we cannot tell whether our entry made it.
                self._proposals.pop(idx)[1].set(_maybe("snapshot-installed"))
        if rd.committed and self.crash.armed:
            self.crash.hit(BEFORE_APPLY)
        for e in rd.committed:
            self._apply_entry(e)
        if rd.committed:
            last = rd.committed[-1]
            now = time.monotonic()
            # One line a second at most: a line per batch costs real throughput.
            if now - self._last_commit_log >= 1.0 or last.term != self._last_commit_term:
                self.log("committed", index=last.index, term=last.term,
                         n=last.index - self._last_commit_index)
                self._last_commit_log, self._last_commit_term = now, last.term
                self._last_commit_index = last.index
        for rs in rd.read_states:
            reads = self._reads_by_ctx.pop(rs.context, [])
            if reads:
                self._reads_by_index.append((rs.index, reads))
        for ctx in rd.dropped_reads:
            for r in self._reads_by_ctx.pop(ctx, []):
                r.waiter.set(self._not_leader())
        self._serve_reads()

    def _apply_entry(self, e: Entry) -> None:
        result = self.kv.apply(e.index, e.data) if e.data is not None else None
        self.stats["applied"] += 1
        if self._chain is not None:
            self._chain = chain_step(self._chain, e)
        self._applied_at = (e.index, e.term)
        if self.opts.digest_every and e.index % self.opts.digest_every == 0:
            self.log_digest()
        pending = self._proposals.pop(e.index, None)
        if pending is None:
            return
        term, waiter = pending
        if term == e.term and result is not None:
            waiter.set(result)
        else:
            # Another leader's entry took this index: ours can never commit.
            waiter.set({"ok": False, "error": "overwritten"})

    def log_digest(self) -> None:
        """Log the ``digest`` event at the last applied entry (once per index): the
        applied-log chain (null when unknown) and the state machine's digest, which the
        lab compares between members at every index two of them logged."""
        index, term = self._applied_at
        if not self.opts.digest_every or index == self._digest_logged or index == 0:
            return
        self._digest_logged = index
        self.log("digest", index=index, term=term, log=self._chain, state=self.kv.digest())

    def _start_reads(self) -> None:
        if not self._new_reads:
            return
        batch, self._new_reads = self._new_reads, []
        try:
            ctx = self.raft.read_index()
        except NotLeader:
            for r in batch:
                r.waiter.set(self._not_leader())
            return
        self._reads_by_ctx[ctx] = batch

    def _serve_reads(self) -> None:
        applied = self.raft.applied
        keep = []
        for index, reads in self._reads_by_index:
            if index <= applied:
                for r in reads:
                    r.waiter.set({"ok": True, "value": self.kv.read(r.key)})
            else:
                keep.append((index, reads))
        self._reads_by_index = keep

    async def _maybe_snapshot(self) -> None:
        applied = self.raft.applied
        if applied - self.raft.log.offset < self.opts.snapshot_entries:
            return
        image: dict[str, Any] = self.kv.snapshot()
        if self._chain is not None and self._applied_at[0] == applied:
            image["chain"] = self._chain  # the chain at the snapshot's index
        snap = self.raft.compact(applied, image)
        after = self.raft.log.slice(applied + 1, self.raft.log.last_index())
        hs = self._durable_hs
        await trio.to_thread.run_sync(lambda: self.wal.save_snapshot(snap, hs, after))
        self.stats["snapshots"] += 1
        self.log("snapshot-taken", index=snap.index, term=snap.term, retained=len(after))

    def _note_role(self, rd: Ready) -> None:
        now = (rd.role, rd.term, rd.leader)
        if now != self._last_role:
            if now[0] != self._last_role[0]:
                self.log("role", role=rd.role.value, term=rd.term, leader=rd.leader)
            elif now[1] != self._last_role[1]:
                self.log("term", role=rd.role.value, term=rd.term, leader=rd.leader)
            else:
                self.log("leader", term=rd.term, leader=rd.leader)
            self._last_role = now

    def _not_leader(self) -> dict[str, Any]:
        leader = self.raft.leader if self.raft.leader != self.opts.id else None
        r: dict[str, Any] = {"ok": False, "error": "not-leader", "leader": leader}
        if leader and leader in self.opts.peer_clients:
            r["leader_addr"] = self.opts.peer_clients[leader]
        return r

    # ---------------------------------------------------------------- clients

    def _reject_client(self, reason: str) -> None:
        self.log("rejected-client-input", reason=reason)

    def _handle_line(self, line: bytes, conn: ClientConn) -> None:
        try:
            req = json.loads(line)
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, huge ints, nesting
            req = None
            reason = f"not JSON: {str(e)[:100]}"
        else:
            reason = "expected a JSON object"
        if not isinstance(req, dict):
            self._reject_client(reason)
            conn.reply({"id": None, "ok": False, "error": "bad-request", "reason": reason})
            return
        result = self._request(req, conn)
        if result is not None:
            conn.reply({"id": req.get("id"), **result})

    def _request(self, req: dict[str, Any], conn: ClientConn) -> dict[str, Any] | None:
        """Answer ``req`` now (the result) or later (None: a pending answer is registered)."""
        op = req.get("op")
        if op == "status":
            return {"ok": True, **self.raft.status(), "stats": dict(self.stats)}
        if op == "crash-at":
            return self._arm_crash(req)
        if op == "read":
            key = req.get("key")
            if not isinstance(key, str):
                return _bad("read needs a string 'key'")
            if self.raft.role is not Role.LEADER and "stale-read" not in self.raft.bugs:
                return self._not_leader()
            self._new_reads.append(_PendingRead(key, self._pending(req, conn, maybe=False)))
            self.kick()
            return None
        cmd_in = {k: v for k, v in req.items() if k != "id"}
        try:
            cmd = validate_command(cmd_in)
        except CommandError as e:
            return _bad(str(e))
        try:
            index = self.raft.propose(cmd)
        except NotLeader:
            return self._not_leader()
        waiter = self._pending(req, conn, maybe=True)
        waiter.index = index
        self._proposals[index] = (self.raft.term, waiter)
        self.kick()
        return None

    def _arm_crash(self, req: dict[str, Any]) -> dict[str, Any]:
        """``{"op": "crash-at", "point": P, "skip": N}``: arm crash point P (null:
        disarm) to end this member at its N+1-th hit from now."""
        if "point" not in req:
            return _bad("crash-at needs 'point': a crash point's name, or null to disarm")
        point, skip = req["point"], req.get("skip", 0)
        if point is not None and point not in POINTS:
            return _bad(f"unknown crash point {point!r} (expected one of: {', '.join(POINTS)})")
        if type(skip) is not int or skip < 0:
            return _bad(f"crash-at needs a whole number 'skip' of at least 0, got {skip!r}")
        self.crash.arm(point, skip)
        self.log("crash-point-armed", point=point, skip=skip)
        return {"ok": True}

    def _pending(self, req: dict[str, Any], conn: ClientConn, *, maybe: bool) -> _Pending:
        p = _Pending(conn, req.get("id"), trio.current_time() + self.opts.request_timeout, maybe)
        self._deadlines.append(p)
        return p

    def _expire(self, now: float) -> None:
        """Answer requests whose deadline passed (a write's outcome is then unknown)."""
        dl = self._deadlines
        while dl and (dl[0].done or dl[0].deadline <= now):
            p = dl.popleft()
            if p.done:
                continue
            if p.index >= 0 and self._proposals.get(p.index, (0, None))[1] is p:
                del self._proposals[p.index]
            p.set(_maybe("timeout") if p.maybe else {"ok": False, "error": "timeout"})


def _bad(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": "bad-request", "reason": reason}


def _maybe(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error, "maybe": True}


async def run_node(opts: NodeOptions) -> None:
    node = Node(opts)
    try:
        peer_listeners, client_listeners = await node.open_listeners()
    except OSError:
        node.wal.close()
        raise
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.serve, peer_listeners, client_listeners)

            async def wait_signal() -> None:
                async for sig in signals:
                    node.log("stopping", signal=signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(wait_signal)
    node.log_digest()
    node.wal.close()
    node.log("stopped")
