"""etcd's client driver (:class:`EtcdClient`): the lab's operations as requests to etcd's
JSON gRPC gateway over HTTP/1.1 keep-alive (:mod:`.http`), through the member's client
proxy, and etcd's answers as ok / fail / info.

Keys and values are base64; values are JSON text. Every model is mapped onto
single-round-trip requests or on optimistic read-then-compare-and-swap transactions
whose commit compares ``mod_revision`` (see :meth:`EtcdClient.invoke`). Outcomes: a
request that certainly never reached etcd (connection refused) or that etcd certainly
did not apply (compare failed, too many requests, proposal dropped, invalid) is
``fail``; a timeout, a lost connection or any other error on a write is ``info``; reads
(linearizable ranges and read-only txns) are idempotent, so any failed read is ``fail``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from lab.systems.etcd.http import Lost, NotSent, Pool, shared_pool
from lab.systems.types import Address, Completion


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _enc(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")))


def _dec(kv: Mapping[str, Any] | None) -> Any:
    if kv is None:
        return None
    return json.loads(_unb64(str(kv.get("value", ""))) or "null")

#: gRPC codes (in the gateway's error answers) that mean etcd refused the request before
#: proposing it: invalid argument, not found, permission denied, resource exhausted (too
#: many requests, no space), unimplemented, unauthenticated.
_REFUSED_CODES = {3, 5, 7, 8, 12, 16}
#: Refusals worth retrying on another member within the operation's deadline.
_TRANSIENT = ("too many requests", "proposal dropped")


@dataclass
class _Answer:
    """A request's outcome: ``answer`` if etcd answered 200, else ``completion``."""

    answer: dict[str, Any] | None = None
    completion: Completion | None = None
    node: str | None = None


class EtcdClient:
    """Turns the lab's operations into etcd JSON-gateway requests, and answers into
    ok / fail / info. One instance per client worker.

    It sticks to one member (any member serves linearizable reads and forwards writes to
    the leader) and moves on to the next when that member fails a request. Keys live in
    one namespace per model: ``r/K`` (registers), ``s/V`` (one key per set element),
    ``c`` (the counter), ``b/A`` (bank accounts), ``l/K`` (list-append lists)."""

    def __init__(self, addrs: dict[str, Address], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False,
                 home: str | None = None) -> None:
        self.addrs = addrs
        self.ids = sorted(addrs)
        self.timeout = timeout
        self.rng = rng
        self.accounts = sorted(accounts)
        self.home = home if home in addrs else None  # bound: every operation starts here
        self.node = self.home or str(rng.choice(self.ids))
        self._pool = shared_pool() if shared else Pool()

    async def __aenter__(self) -> EtcdClient:
        self._pool.users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pool.users -= 1
        if not self._pool.users:
            self._pool.close()

    def _next(self, node: str) -> str:
        return self.ids[(self.ids.index(node) + 1) % len(self.ids)]

    async def _post(self, path: str, body: Any, deadline: float, *, idempotent: bool
                    ) -> _Answer:
        """POST to the current member (a bound client's own member first) until etcd
        answers or the outcome is settled."""
        if self.home is not None:
            self.node = self.home
        tried = 0
        while True:
            node = self.node
            tried += 1
            try:
                status, answer = await self._pool.post(self.addrs[node], path, body, deadline)
            except NotSent as e:
                self.node = self._next(node)
                if trio.current_time() < deadline - 0.02 and tried < 2 * len(self.ids):
                    continue
                return _Answer(completion=Completion("fail", error=f"unreachable ({e})",
                                                     node=node))
            except Lost as e:
                self.node = self._next(node)
                return _Answer(completion=Completion("fail" if idempotent else "info",
                                                     error=e.reason, node=node))
            if status == 200 and isinstance(answer, dict) and "error" not in answer:
                return _Answer(answer, node=node)
            error = str(answer.get("error") or answer.get("message") or f"HTTP {status}") \
                if isinstance(answer, dict) else f"HTTP {status}"
            code = answer.get("code") if isinstance(answer, dict) else None
            self.node = self._next(node)
            refused = code in _REFUSED_CODES or "proposal dropped" in error
            if refused and any(t in error for t in _TRANSIENT) and (
                    trio.current_time() < deadline - 0.05 and tried < 2 * len(self.ids)):
                await trio.sleep(0.01)
                continue
            certain = idempotent or refused
            return _Answer(completion=Completion("fail" if certain else "info", error=error,
                                                 node=node))

    async def _range(self, key: str, deadline: float) -> _Answer:
        return await self._post("/v3/kv/range", {"key": _b64(key)}, deadline, idempotent=True)

    async def _read_many(self, keys: Sequence[str], deadline: float
                         ) -> tuple[dict[str, dict[str, Any] | None], _Answer]:
        """Linearizable read of ``keys`` at one revision (a read-only txn): each key's kv
        (None if absent)."""
        a = await self._post("/v3/kv/txn", {"success": [
            {"request_range": {"key": _b64(k)}} for k in keys]}, deadline, idempotent=True)
        out: dict[str, dict[str, Any] | None] = {}
        if a.answer is not None:
            for k, r in zip(keys, a.answer.get("responses", []), strict=False):
                kvs = r.get("response_range", {}).get("kvs") or []
                out[k] = kvs[0] if kvs else None
        return out, a

    async def _commit(self, compares: Mapping[str, dict[str, Any] | None],
                      puts: Mapping[str, Any], deadline: float) -> _Answer:
        """A txn that puts ``puts`` if no key of ``compares`` changed since it was read
        (``mod_revision`` equal; 0 for a key that was absent). ``answer['succeeded']``."""
        body = {"compare": [{"key": _b64(k), "target": "MOD", "result": "EQUAL",
                             "mod_revision": str(kv.get("mod_revision", 0)) if kv else "0"}
                            for k, kv in compares.items()],
                "success": [{"request_put": {"key": _b64(k), "value": _enc(v)}}
                            for k, v in puts.items()]}
        return await self._post("/v3/kv/txn", body, deadline, idempotent=False)

    async def write_initial(self, values: Mapping[str, Any]) -> bool:
        """Write ``values`` (the bank's opening balances) in one txn."""
        deadline = trio.current_time() + self.timeout
        a = await self._post("/v3/kv/txn", {"success": [
            {"request_put": {"key": _b64(self._bank_key(k)), "value": _enc(v)}}
            for k, v in values.items()]}, deadline, idempotent=False)
        return a.answer is not None

    @staticmethod
    def _bank_key(account: str) -> str:
        return f"b/{account}"

    async def invoke(self, model: str, f: str, key: Any, value: Any) -> Completion:
        """Run one operation of ``model`` (Jepsen's shapes):

        * registers: ``read`` is a range, ``write`` a put, ``cas`` a txn comparing the
          value (a failed compare is ``fail``);
        * set: ``add v`` puts ``s/v``; ``read`` ranges over the ``s/`` prefix;
        * counter: ``add n`` reads ``c`` and commits ``c + n`` if ``c``'s mod_revision did
          not change (retried on a conflict until the timeout, then ``fail``);
        * bank: ``read`` is one read-only txn over every account; ``transfer`` reads both
          accounts and commits both new balances if neither changed meanwhile;
        * list-append: reads every key of the txn, runs its micro-ops on what it read, and
          commits the appended lists if no key it read changed meanwhile (so the txn is
          strictly serializable at its commit); read-only txns need no commit.
        """
        deadline = trio.current_time() + self.timeout
        if model in ("register", "cas-register"):
            return await self._register(f, f"r/{key}", value, deadline)
        if model == "set":
            if f == "add":
                a = await self._post("/v3/kv/put", {"key": _b64(f"s/{value}"),
                                                    "value": _enc(value)},
                                     deadline, idempotent=False)
                return _done(a, value)
            a = await self._post("/v3/kv/range", {"key": _b64("s/"), "range_end": _b64("s0")},
                                 deadline, idempotent=True)
            if a.answer is None:
                return _done(a)
            return _done(a, sorted((_dec(kv) for kv in a.answer.get("kvs") or []),
                                   key=lambda v: (str(type(v)), v)))
        if model == "counter":
            if f == "read":
                a = await self._range("c", deadline)
                if a.answer is None:
                    return _done(a)
                kvs = a.answer.get("kvs") or []
                return _done(a, _dec(kvs[0]) if kvs else 0)
            return await self._update(["c"], deadline, value,
                                      lambda cur: {"c": (cur["c"] or 0) + value})
        if model == "bank":
            return await self._bank(f, value, deadline)
        if model == "list-append":
            return await self._txn(value, deadline)
        raise ValueError(f"etcd client: unknown model {model!r}")

    async def _register(self, f: str, key: str, value: Any, deadline: float) -> Completion:
        if f == "read":
            a = await self._range(key, deadline)
            if a.answer is None:
                return _done(a)
            kvs = a.answer.get("kvs") or []
            return _done(a, _dec(kvs[0]) if kvs else None)
        if f == "write":
            a = await self._post("/v3/kv/put", {"key": _b64(key), "value": _enc(value)},
                                 deadline, idempotent=False)
            return _done(a, value)
        expected, new = value
        a = await self._post("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "VALUE", "result": "EQUAL",
                         "value": _enc(expected)}],
            "success": [{"request_put": {"key": _b64(key), "value": _enc(new)}}]},
            deadline, idempotent=False)
        if a.answer is not None and not a.answer.get("succeeded"):
            return Completion("fail", value, "mismatch", a.node)
        return _done(a, value)

    async def _update(self, keys: Sequence[str], deadline: float, value: Any,
                      compute: Callable[[dict[str, Any]], dict[str, Any] | Completion]
                      ) -> Completion:
        """Optimistic read-modify-write of ``keys``: read them at one revision, ``compute``
        the puts from their values (or give up with a Completion), commit if none
        changed; on a conflict, again until the deadline (a conflict changed nothing)."""
        while True:
            kvs, a = await self._read_many(keys, deadline)
            if a.answer is None:
                return _done(a, value)  # a failed read: certainly nothing happened
            puts = compute({k: _dec(kv) for k, kv in kvs.items()})
            if isinstance(puts, Completion):
                puts.node = a.node
                return puts
            c = await self._commit(kvs, puts, deadline)
            if c.answer is None or c.answer.get("succeeded"):
                return _done(c, value)
            if trio.current_time() >= deadline - 0.01:
                return Completion("fail", value, "conflict", c.node)

    async def _bank(self, f: str, value: Any, deadline: float) -> Completion:
        if f == "read":
            keys = [self._bank_key(a) for a in self.accounts]
            kvs, a = await self._read_many(keys, deadline)
            if a.answer is None:
                return _done(a)
            return _done(a, {acct: _dec(kvs.get(k)) for acct, k in zip(self.accounts, keys,
                                                                       strict=True)})
        src, dst = self._bank_key(value["from"]), self._bank_key(value["to"])
        amount = value["amount"]

        def transfer(cur: dict[str, Any]) -> dict[str, Any] | Completion:
            a, b = cur[src], cur[dst]
            if not isinstance(a, int) or not isinstance(b, int) or a < amount:
                return Completion("fail", value, "insufficient-funds")
            return {src: a - amount, dst: b + amount}

        return await self._update([src, dst], deadline, value, transfer)

    async def _txn(self, micro: list[list[Any]], deadline: float) -> Completion:
        keys = sorted({f"l/{k}" for _f, k, _v in micro})
        writes = any(m[0] != "r" for m in micro)
        out: list[list[Any]] = []

        def run(cur: dict[str, Any]) -> dict[str, Any]:
            lists = {k: list(v) if isinstance(v, list) else [] for k, v in cur.items()}
            out.clear()
            puts: dict[str, Any] = {}
            for f, k, v in micro:
                if f == "r":
                    out.append([f, k, list(lists[f"l/{k}"])])
                else:
                    lists[f"l/{k}"].append(v)
                    puts[f"l/{k}"] = lists[f"l/{k}"]
                    out.append([f, k, v])
            return puts

        if not writes:
            kvs, a = await self._read_many(keys, deadline)
            if a.answer is None:
                return _done(a)
            run({k: _dec(kv) for k, kv in kvs.items()})
            return _done(a, out)
        c = await self._update(keys, deadline, micro, run)
        if c.type == "ok":
            c.value = out
        return c


def _done(a: _Answer, value: Any = None) -> Completion:
    """``a`` as a Completion: ok with ``value`` if etcd answered, else its outcome."""
    if a.completion is not None:
        c = a.completion
        if value is not None and c.value is None:
            c.value = value
        return c
    return Completion("ok", value, node=a.node)

