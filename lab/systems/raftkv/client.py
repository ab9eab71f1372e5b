"""raftkv's client driver: the lab's operations as raftkv requests (``nodes/PROTOCOL.md``),
and raftkv's answers as ok / fail / info."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from lab.systems.raftkv.wire import ConnectionLost, KVClient, open_client
from lab.systems.types import Address, Completion


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


_SHARED: trio.lowlevel.RunVar[Connections] = trio.lowlevel.RunVar("lab.systems.raftkv.shared")


def shared_connections() -> Connections:
    """This trio run's shared connections."""
    try:
        return _SHARED.get()
    except LookupError:
        _SHARED.set(Connections())
        return _SHARED.get()


#: Definite errors that settle a retried write: the state machine either applied this
#: retry (the first try never was) or answers with the result it recorded for the seq.
PROVEN_BY_SEQ = ("cas-mismatch", "txn-aborted")


class RaftkvClient:
    """Turns the lab's operations into raftkv requests, and answers into ok / fail / info.

    One instance per client worker. It reaches each member through the member's client
    proxy, on connections of its own or shared with the other workers (``shared``),
    follows leader hints, and retries an operation on another member when the answer says
    it *certainly* did not happen (``not-leader``).

    Writes use raftkv's exactly-once sessions (``nodes/PROTOCOL.md``): each instance is a
    client of its own, and every write carries the next ``seq``. A write whose outcome is
    unknown before its deadline (the connection was lost, or the answer said ``maybe``:
    e.g. its leader was deposed with the entry uncommitted) is sent again, with the same
    ``seq``, to whoever leads now, as a real client of raftkv would: the state machine
    must apply it at most once, and the lab gets a definite answer more often. A write
    still unknown at its deadline is ``info``, and the next one takes the next ``seq``."""

    _sessions = itertools.count(1)

    def __init__(self, addrs: dict[str, Address], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False,
                 home: str | None = None) -> None:
        self.addrs = addrs
        self.home = home if home in addrs else None  # bound: every operation starts here
        self.accounts = sorted(accounts)
        self.timeout = timeout
        self.rng = rng
        self.leader: str | None = None
        self._conns = shared_connections() if shared else Connections()
        self.session = f"lab-{next(RaftkvClient._sessions)}"
        self._seq = 0

    async def __aenter__(self) -> RaftkvClient:
        self._conns.users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conns.users -= 1
        if not self._conns.users:
            self._conns.close()

    def _pick(self) -> str:
        if self.home is not None:
            return self.home
        if self.leader in self.addrs:
            return self.leader
        return str(self.rng.choice(sorted(self.addrs)))

    async def request(self, req: dict[str, Any], *, idempotent: bool) -> Completion:
        """Send ``req`` to the leader (as far as we know), following hints until the
        deadline. Unknown outcomes are ``info`` unless the request is idempotent."""
        deadline = trio.current_time() + self.timeout
        if not idempotent:
            self._seq += 1
            req = {**req, "client": self.session, "seq": self._seq}
        node = self._pick()
        tried: list[str] = []
        unknown: Completion | None = None  # the last try's unknown outcome, if any
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
                return unknown or Completion("fail", error="unreachable", node=node)
            if trio.current_time() >= deadline:
                # Out of time before sending (after a not-leader hop or a retry): this try
                # was never sent, so the outcome is that of the tries before it.
                return unknown or Completion("fail", error="timeout", node=node)
            try:
                answer = await conn.call(req, deadline=deadline)
            except (trio.TooSlowError, ConnectionLost) as e:
                if isinstance(e, trio.TooSlowError):
                    conn.retire()
                if self.leader == node:
                    self.leader = None
                err = "timeout" if isinstance(e, trio.TooSlowError) else "connection"
                if idempotent:
                    return Completion("fail", error=err, node=node)
                unknown = Completion("info", error=err, node=node)
                if isinstance(e, ConnectionLost) and self._may_retry(deadline, tried):
                    node = self._next(node)
                    continue
                return unknown
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
                return unknown or Completion("fail", error=error, node=node)
            if answer.get("maybe"):
                unknown = Completion("info", error=error, node=node)
                if not idempotent and self._may_retry(deadline, tried):
                    hint = answer.get("leader")
                    self.leader = hint if hint in self.addrs and hint != node else None
                    node = self.leader or self._next(node)
                    await trio.sleep(0.02)
                    continue
                return unknown
            if unknown is not None and error not in PROVEN_BY_SEQ:
                # Only answers that the state machine gives for this very seq say what
                # became of the write; any other (e.g. the retry's own entry was
                # overwritten) leaves the first try's outcome unknown.
                return unknown
            return Completion("fail", answer.get("value"), error=error, node=node)

    def _may_retry(self, deadline: float, tried: list[str]) -> bool:
        return trio.current_time() < deadline - 0.05 and len(tried) < 2 * len(self.addrs)

    async def write_initial(self, values: Mapping[str, Any]) -> bool:
        """Write ``values`` in one transaction (e.g. the bank's opening balances)."""
        c = await self.request({"op": "txn", "value": [["w", k, v] for k, v in
                                                      values.items()]}, idempotent=False)
        return c.type == "ok"

    def _next(self, node: str) -> str:
        ids = sorted(self.addrs)
        return ids[(ids.index(node) + 1) % len(ids)]

    async def invoke(self, model: str, f: str, key: Any, value: Any) -> Completion:
        """Run one operation of the given model (Jepsen's shapes: ``f``, ``key`` and
        ``value`` as the workload generates them)."""
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
