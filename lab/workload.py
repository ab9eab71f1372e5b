"""Operation generators: pure, seeded streams of operations for each workload model.

A generator knows nothing about the system under test; it yields :class:`Invocation`
values (an operation for a client to invoke) in Jepsen's shapes
(``docs/writing-workloads.md``, the operations of each model), and a final phase of
operations run after the faults are healed. The same seed gives the same stream.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, NamedTuple

from lab.scenario import Workload


class Invocation(NamedTuple):  # (a named tuple: built once per operation, on the hot path)
    f: str
    key: Any = None
    value: Any = None


class Generator:
    def __init__(self, w: Workload, rng: random.Random) -> None:
        self.w = w
        self.rng = rng
        self._fs = [f for f, weight in w.mix.items() if weight > 0]
        self._cum_weights = list(itertools.accumulate(w.mix[f] for f in self._fs))
        self._unique = itertools.count(1)
        self.keys = self._keys()

    def _keys(self) -> list[str]:
        if self.w.model == "set":
            return ["set"]
        if self.w.model == "counter":
            return ["counter"]
        if self.w.model == "bank":
            return [f"a{k}" for k in range(self.w.accounts)]
        return [f"k{k}" for k in range(self.w.keys)]

    def initial_balances(self) -> dict[str, int]:
        """Bank only: the balances written before the clients start (the total is spread
        evenly, the remainder to the first account)."""
        n = self.w.accounts
        each, rest = divmod(self.w.total, n)
        return {k: each + (rest if i == 0 else 0) for i, k in enumerate(self.keys)}

    def _value(self) -> int:
        return self.rng.randint(self.w.value_min, self.w.value_max)

    def next_op(self) -> Invocation:
        f = self.rng.choices(self._fs, cum_weights=self._cum_weights)[0]
        model = self.w.model
        if model in ("register", "cas-register"):
            key = self.rng.choice(self.keys)
            if f == "read":
                return Invocation("read", key)
            if f == "write":
                return Invocation("write", key, self._value())
            return Invocation("cas", key, [self._value(), self._value()])
        if model == "set":
            return Invocation("add", None, next(self._unique))
        if model == "counter":
            if f == "read":
                return Invocation("read")
            return Invocation("add", None, self._value())  # negative: a decrement
        if model == "bank":
            if f == "read":
                return Invocation("read")
            a, b = self.rng.sample(self.keys, 2)
            return Invocation("transfer", None,
                      {"from": a, "to": b, "amount": self.rng.randint(1, self.w.max_transfer)})
        # list-append: a transaction of appends (each value unique per key) and reads
        n = self.rng.randint(self.w.txn_min, self.w.txn_max)
        micro: list[list[Any]] = []
        for _ in range(n):
            k = self.rng.choice(self.keys)
            if self.rng.random() < 0.5:
                micro.append(["r", k, None])
            else:
                micro.append(["append", k, next(self._unique)])
        return Invocation("txn", None, micro)

    def next_read(self) -> Invocation:
        """A read-only operation of the model, for a reader (whatever the mix says):
        one key's value, the whole set, counter or bank, or a list-append transaction
        of reads only."""
        model = self.w.model
        if model in ("register", "cas-register"):
            return Invocation("read", self.rng.choice(self.keys))
        if model in ("set", "counter", "bank"):
            return Invocation("read")
        n = min(len(self.keys), self.rng.randint(self.w.txn_min, self.w.txn_max))
        return Invocation("txn", None, [["r", k, None] for k in self.rng.sample(self.keys, n)])

    def final_ops(self) -> list[Invocation]:
        """Reads after healing: every key's value once the cluster has recovered."""
        if not self.w.final_reads:
            return []
        model = self.w.model
        if model in ("register", "cas-register"):
            return [Invocation("read", k) for k in self.keys]
        if model in ("set", "counter", "bank"):
            return [Invocation("read")]
        return [Invocation("txn", None, [["r", k, None] for k in self.keys])]
