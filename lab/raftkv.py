"""The raftkv system adapter: how the lab starts, stops, kills and finds raftkv members.

The lab never imports ``nodes``: members are OS processes (``python -m nodes``) reached
over TCP, exactly like any other system under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.client import ConnectionLost, KVClient, connect, open_client
from lab.systems import Completion, Vote

Address = tuple[str, int]


@dataclass
class Member:
    id: str
    peer: Address  # where it listens for peers
    client: Address  # where it listens for clients
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0


@dataclass
class RaftkvCluster(procs.MemberProcesses):
    """N raftkv members on loopback. ``dial(i, j)`` says which address member i uses to
    reach member j (the member itself by default; a proxy of the directed link i->j in
    the lab)."""

    base_dir: Path
    size: int = 3
    bugs: Sequence[str] = ()
    fsync: bool = True
    extra_args: Sequence[str] = ()
    host: str = "127.0.0.1"
    dial: Callable[[str, str], Address] | None = None
    members: dict[str, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = procs.free_ports(2 * self.size, self.host)
        for k in range(self.size):
            mid = f"n{k + 1}"
            d = self.base_dir / mid
            self.members[mid] = Member(mid, (self.host, ports[2 * k]),
                                       (self.host, ports[2 * k + 1]), d / "data", d / "node.log")

    def version(self) -> str:
        return "raftkv (this checkout)"

    def proxy_listen(self, src: str, dst: str) -> Address | None:
        return None  # raftkv is told every peer's address: any free port will do

    def argv(self, mid: str) -> list[str]:
        m = self.members[mid]
        dial = self.dial or (lambda _i, j: self.members[j].peer)
        argv = [sys.executable, "-m", "nodes", "--id", mid, "--data-dir", str(m.data_dir),
                "--peer-listen", f"{m.peer[0]}:{m.peer[1]}",
                "--client-listen", f"{m.client[0]}:{m.client[1]}"]
        for other in self.members.values():
            if other.id != mid:
                h, p = dial(mid, other.id)
                argv += ["--peer", f"{other.id}={h}:{p}",
                         "--peer-client", f"{other.id}={other.client[0]}:{other.client[1]}"]
        for b in self.bugs:
            argv += ["--bug", b]
        if not self.fsync:
            argv.append("--unsafe-no-fsync")
        return argv + list(self.extra_args)

    async def stop_all(self) -> None:
        await self.stop_members()

    async def request(self, mid: str, req: dict[str, Any], timeout: float = 2.0
                      ) -> dict[str, Any] | None:
        """One request to one member; None if it could not be reached in time."""
        try:
            with trio.fail_after(timeout):
                async with connect(*self.members[mid].client, timeout=timeout) as c:
                    return await c.call(req, timeout=timeout)
        except (OSError, ConnectionLost, trio.TooSlowError):
            return None

    async def status(self, mid: str, timeout: float) -> dict[str, Any] | None:
        return await self.request(mid, {"op": "status"}, timeout) if self.alive(mid) else None


# --------------------------------------------------------------------------- client driver


class Connections:
    """Client connections to the members: one per address, opened on first use, used by
    any number of requests at once (raftkv pipelines them and answers by id). A
    connection on which a request timed out is retired (:meth:`KVClient.retire`): the
    next request gets a fresh one.

    Either one per client worker, or one per trio run shared by all of them (`shared`).
    Shared, the requests the workers make in one scheduling round leave in one ``send``
    per member, cross the proxy as one message and are read by the member in one ``recv``;
    a connection each costs all three per operation (``bench/run_bench.py``)."""

    def __init__(self) -> None:
        self._conns: dict[Address, KVClient] = {}
        self._locks: dict[Address, trio.Lock] = {}
        self.users = 0

    async def get(self, addr: Address, deadline: float) -> KVClient:
        c = self._conns.get(addr)
        if c is not None and not c.retired:
            return c
        with trio.fail_at(deadline):
            async with self._locks.setdefault(addr, trio.Lock()):  # one connect at a time
                c = self._conns.get(addr)
                if c is None or c.retired:
                    c = await open_client(*addr, max(0.01, deadline - trio.current_time()))
                    self._conns[addr] = c
                return c

    def close(self) -> None:
        conns, self._conns = self._conns, {}
        for c in conns.values():
            c.close()


_SHARED: trio.lowlevel.RunVar[Connections] = trio.lowlevel.RunVar("lab.raftkv.shared")


def shared_connections() -> Connections:
    """This trio run's shared connections."""
    try:
        return _SHARED.get()
    except LookupError:
        _SHARED.set(Connections())
        return _SHARED.get()


class RaftkvClient:
    """Turns the lab's operations into raftkv requests, and answers into ok / fail / info.

    One instance per client worker. It reaches each member through the member's client
    proxy, on connections of its own or shared with the other workers (``shared``),
    follows leader hints, and retries an operation on another member only when the answer
    says it *certainly* did not happen (``not-leader``)."""

    def __init__(self, addrs: dict[str, Address], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False) -> None:
        self.addrs = addrs
        self.accounts = sorted(accounts)
        self.timeout = timeout
        self.rng = rng
        self.leader: str | None = None
        self._conns = shared_connections() if shared else Connections()

    async def __aenter__(self) -> RaftkvClient:
        self._conns.users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conns.users -= 1
        if not self._conns.users:
            self._conns.close()

    def _pick(self) -> str:
        if self.leader in self.addrs:
            return self.leader
        return str(self.rng.choice(sorted(self.addrs)))

    async def request(self, req: dict[str, Any], *, idempotent: bool) -> Completion:
        """Send ``req`` to the leader (as far as we know), following hints until the
        deadline. Unknown outcomes are ``info`` unless the request is idempotent."""
        deadline = trio.current_time() + self.timeout
        node = self._pick()
        tried: list[str] = []
        while True:
            tried.append(node)
            try:
                conn = await self._conns.get(self.addrs[node], deadline)
            except (OSError, trio.TooSlowError):
                # Could not even connect: the request was never sent.
                if self.leader == node:
                    self.leader = None
                if trio.current_time() < deadline - 0.05 and len(tried) < 2 * len(self.addrs):
                    node = self._next(node)
                    continue
                return Completion("fail", error="unreachable", node=node)
            if trio.current_time() >= deadline:
                # Out of time before sending (after a not-leader hop): every earlier try
                # certainly did not happen, and this one was never sent.
                return Completion("fail", error="timeout", node=node)
            try:
                answer = await conn.call(req, deadline=deadline)
            except (trio.TooSlowError, ConnectionLost) as e:
                if isinstance(e, trio.TooSlowError):
                    conn.retire()
                if self.leader == node:
                    self.leader = None
                err = "timeout" if isinstance(e, trio.TooSlowError) else "connection"
                return Completion("fail" if idempotent else "info", error=err, node=node)
            if answer.get("ok"):
                self.leader = node
                return Completion("ok", answer.get("value"), node=node)
            error = str(answer.get("error"))
            if error == "not-leader":
                hint = answer.get("leader")
                self.leader = hint if hint in self.addrs else None
                if trio.current_time() < deadline - 0.01 and len(tried) < 2 * len(self.addrs):
                    if self.leader is None or self.leader == node:
                        await trio.sleep(0.02)
                        node = self._next(node)
                    else:
                        node = self.leader
                    continue
                return Completion("fail", error=error, node=node)
            if answer.get("maybe"):
                return Completion("info", error=error, node=node)
            return Completion("fail", answer.get("value"), error=error, node=node)

    async def write_initial(self, values: Mapping[str, Any]) -> bool:
        """Write ``values`` in one transaction (e.g. the bank's opening balances)."""
        c = await self.request({"op": "txn", "value": [["w", k, v] for k, v in
                                                      values.items()]}, idempotent=False)
        return c.type == "ok"

    def _next(self, node: str) -> str:
        ids = sorted(self.addrs)
        return ids[(ids.index(node) + 1) % len(ids)]

    async def invoke(self, model: str, f: str, key: Any, value: Any) -> Completion:
        """Run one operation of the given model (Jepsen shapes, DESIGN.md)."""
        if model in ("register", "cas-register"):
            if f == "read":
                return await self.request({"op": "read", "key": key}, idempotent=True)
            c = await self.request({"op": f, "key": key, "value": value}, idempotent=False)
            if c.type == "ok":
                c.value = value
            return c
        if model == "set":
            if f == "add":
                c = await self.request({"op": "txn", "value": [["append", "set", value]]},
                                       idempotent=False)
                return Completion(c.type, value, c.error, c.node)
            c = await self.request({"op": "read", "key": "set"}, idempotent=True)
            if c.type == "ok" and c.value is None:
                c.value = []
            return c
        if model == "counter":
            if f == "add":
                c = await self.request({"op": "txn", "value": [["add", "counter", value]]},
                                       idempotent=False)
                return Completion(c.type, value, c.error, c.node)
            c = await self.request({"op": "read", "key": "counter"}, idempotent=True)
            if c.type == "ok" and c.value is None:
                c.value = 0
            return c
        if model == "bank":
            return await self._bank(f, value)
        c = await self.request({"op": "txn", "value": value}, idempotent=False)
        if c.type == "ok":
            # A key never appended to reads as the empty list (Elle's convention).
            c.value = [[f, k, [] if f == "r" and v is None else v] for f, k, v in c.value]
        elif not any(m[0] != "r" for m in value):
            c.type = "fail" if c.type == "info" else c.type  # a read-only txn changes nothing
        return c

    async def _bank(self, f: str, value: Any) -> Completion:
        accounts = self.accounts
        if f == "read":
            c = await self.request({"op": "txn", "value": [["r", a, None] for a in accounts]},
                                   idempotent=True)
            if c.type == "ok":
                c.value = {m[1]: m[2] for m in c.value}
            elif c.type == "info":
                c.type = "fail"
            return c
        src, dst, amount = value["from"], value["to"], value["amount"]
        read = await self.request({"op": "txn", "value": [["r", src, None], ["r", dst, None]]},
                                  idempotent=True)
        if read.type != "ok":
            return Completion("fail", value, read.error or "read-failed", read.node)
        a, b = (m[2] for m in read.value)
        if not isinstance(a, int) or not isinstance(b, int) or a < amount:
            return Completion("fail", value, "insufficient-funds", read.node)
        c = await self.request({"op": "txn", "value": [["cas", src, [a, a - amount]],
                                                       ["cas", dst, [b, b + amount]]]},
                               idempotent=False)
        return Completion(c.type, value, c.error, c.node)


def log_events(log: Path, event: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every JSON record ``{"event": event, ...}`` in a
    raftkv member's log; other lines (torn, foreign, other events) are skipped."""
    needle = f'"{event}"'
    with open(log, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if needle not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == event:
                yield n, rec


def read_votes(member: str, log: Path) -> list[Vote]:
    """The votes a raftkv member logged (``{"event": "vote", "term": T, "candidate": C}``,
    self-votes included); lines that are not such records are skipped."""
    return [Vote(member, rec["term"], rec["candidate"], n) for n, rec in log_events(log, "vote")
            if type(rec.get("term")) is int and isinstance(rec.get("candidate"), str)]
