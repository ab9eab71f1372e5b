"""The ``list-append`` model: transactions over append-only lists, checked Elle's way.

A transaction (``f: "txn"``) is a list of micro-ops ``["append", k, v]`` and
``["r", k, list]``. Appended values are assumed unique per key, so a read list names
the transactions that wrote it, and the longest list read of each key is its *version
order* (every other read of the key must be a prefix of it, or the key has an
``incompatible-order`` anomaly and gives no ww/rw edges).

Nodes are the ``ok`` transactions plus ``info``/pending ones (their observed appends
prove they committed; their reads are unknown). Edges, T -> U meaning "T precedes U":

* ``ww``: U appended the element right after T's in a key's version order;
* ``wr``: U read a list whose last element T appended (U saw T);
* ``rw``: T read a list, and U appended the next element (T did not see U);
* ``process``: T and U ran on the same process, T first (option ``process``, default on);
* ``realtime``: T completed before U was invoked (option ``realtime``, default on),
  kept small by linking each transaction only to the frontier of those completed before.

Reads are taken *externally*: a transaction's own earlier appends to the key (which must
end the list, else an ``internal`` anomaly) are stripped before deriving wr/rw edges.

Cycles are found per strongly connected component (Tarjan), then a short cycle of the
wanted shape by breadth-first search, and classified: ``G0`` (ww only), ``G1c`` (ww and
wr), ``G-single`` (exactly one rw), ``G2`` (two or more rw); a cycle that needs process
or real-time edges gets the suffix ``-process``/``-realtime``. Non-cycle anomalies:
``G1a`` (read an element appended by a failed transaction), ``G1b`` (read a list ending
in an element that was not its writer's last append to that key), ``duplicate-elements``,
``garbage-read`` (an element nobody appended), ``internal``, ``incompatible-order``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from lab.checker._events import DecodedHistory, HistoryError, Op, value_key
from lab.checker._result import CheckResult, anomaly, fmt, op_span

WW, WR, RW, PROC, RT = 1, 2, 4, 8, 16
DEP = WW | WR | RW
EDGE_NAMES = {WW: "ww", WR: "wr", RW: "rw", PROC: "process", RT: "realtime"}
_PRIORITY = (WW, WR, RW, PROC, RT)
DEFAULT_MAX_CYCLES = 10
MAX_TRIES_PER_SCC = 64

Mop = tuple[str, Any, Any]


@dataclass
class _Txn:
    op: Op
    mops: list[Mop]
    node: int = -1


@dataclass
class _Read:
    txn: _Txn
    key: Hashable
    value: list[Any]
    full: list[Hashable]
    external: list[Hashable]


@dataclass
class _Graph:
    succ: list[dict[int, int]]
    detail: dict[tuple[int, int, int], tuple[Any, ...]] = field(default_factory=dict)

    def add(self, a: int, b: int, kind: int, *detail: Any) -> None:
        if a == b:
            return
        m = self.succ[a]
        m[b] = m.get(b, 0) | kind
        self.detail.setdefault((a, b, kind), detail)


def _valid_mop(m: Any) -> bool:
    if not (isinstance(m, list) and len(m) == 3 and m[0] in ("append", "r")):
        return False
    if not (m[1] is None or isinstance(m[1], (str, int))):
        return False
    if m[0] == "r":
        return m[2] is None or isinstance(m[2], list)
    return not isinstance(m[2], (list, dict))


def _decode(hist: DecodedHistory) -> list[_Txn]:
    txns = []
    for op in hist.ops:
        if op.f != "txn":
            raise HistoryError(hist.source, op.line, f"f {op.f!r} is not a list-append "
                                                     "operation (expected txn)")
        for which, value, line in (("invoke", op.invoke_value, op.line),
                                   ("completion", op.value, op.complete_line)):
            if which == "completion" and (op.type != "ok" or value is None):
                continue
            if not isinstance(value, list):
                raise HistoryError(hist.source, line, f"txn value must be a list of "
                                                      f"micro-ops, got {fmt(value)}")
            for m in value:
                if not _valid_mop(m):
                    raise HistoryError(hist.source, line, "micro-op must be "
                                       f'["append", key, value] or ["r", key, list], got {fmt(m)}')
        value = op.value if op.type == "ok" and op.value is not None else op.invoke_value
        txns.append(_Txn(op, [(m[0], m[1], m[2]) for m in value]))
    return txns


def _tarjan(n: int, succ: list[dict[int, int]], mask: int) -> list[list[int]]:
    """Strongly connected components (with more than one node) of the edges in ``mask``."""
    index = [-1] * n
    low = [0] * n
    on = [False] * n
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, iter([b for b, m in succ[root].items() if m & mask]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on[root] = True
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if index[w] < 0:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on[w] = True
                    work.append((w, iter([b for b, m in succ[w].items() if m & mask])))
                    advanced = True
                    break
                if on[w] and index[w] < low[v]:
                    low[v] = index[w]
            if advanced:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                if low[v] < low[u]:
                    low[u] = low[v]
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on[w] = False
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def _first_kind(m: int) -> int:
    for k in _PRIORITY:
        if m & k:
            return k
    raise AssertionError(m)


def _path(g: _Graph, src: int, dst: int, mask: int, within: set[int]) -> list[tuple[int, int]]:
    """Shortest path src -> dst over ``mask`` edges inside ``within``, as (node, kind of the
    edge into it) pairs after src; empty if none."""
    prev: dict[int, tuple[int, int]] = {src: (-1, 0)}
    q = deque([src])
    while q:
        v = q.popleft()
        for b, m in g.succ[v].items():
            if not m & mask or b not in within or b in prev:
                continue
            prev[b] = (v, _first_kind(m & mask))
            if b == dst:
                path = []
                while b != src:
                    a, k = prev[b]
                    path.append((b, k))
                    b = a
                return path[::-1]
            q.append(b)
    return []


class _Checker:
    """One list-append check: decode, index appends and reads, build the graph, find and
    explain anomalies (see the module docstring)."""

    def __init__(self, hist: DecodedHistory, options: dict[str, Any]) -> None:
        self.options = options
        self.txns = _decode(hist)
        self.anomalies: list[dict[str, Any]] = []
        self.key_names: dict[Hashable, Any] = {}
        self.elem_names: dict[tuple[Hashable, Hashable], Any] = {}
        self.notes: list[str] = []

    # -- names -----------------------------------------------------------------------
    def _k(self, k: Hashable) -> str:
        name = self.key_names.get(k, k)
        return name if isinstance(name, str) and name.isidentifier() else fmt(name)

    def _label(self, t: _Txn) -> str:
        return f"txn [{op_span(t.op)}]"

    def _mops_text(self, t: _Txn) -> str:
        parts = []
        for f, k, v in t.mops:
            kk = self._k(value_key(k))
            parts.append(f"{f} {kk} {fmt(v)}" if f == "append" or v is not None
                         else f"r {kk} ?")
        return ", ".join(parts)

    # -- indexes ---------------------------------------------------------------------
    def run(self) -> CheckResult:
        txns = self.txns
        nodes = [t for t in txns if t.op.type != "fail"]
        for i, t in enumerate(nodes):
            t.node = i
        writer: dict[tuple[Hashable, Hashable], tuple[_Txn, int]] = {}
        failed_writer: dict[tuple[Hashable, Hashable], _Txn] = {}
        last_append: dict[tuple[int, Hashable], Hashable] = {}
        dup_appends = 0
        for t in txns:
            for pos, (f, k, v) in enumerate(t.mops):
                kk = value_key(k)
                self.key_names.setdefault(kk, k)
                if f != "append":
                    continue
                vk = value_key(v)
                self.elem_names.setdefault((kk, vk), v)
                if t.op.type == "fail":
                    failed_writer.setdefault((kk, vk), t)
                    continue
                if (kk, vk) in writer:
                    dup_appends += 1
                    continue
                writer[(kk, vk)] = (t, pos)
                last_append[(t.node, kk)] = vk
        if dup_appends:
            self.notes.append(f"{dup_appends} appends repeat a value already appended to the "
                              "same key; the first writer is assumed")
        reads = self._reads(writer, failed_writer)
        orders = self._version_orders(reads)
        g = _Graph([{} for _ in nodes])
        self._dependency_edges(g, reads, orders, writer, last_append)
        if self.options.get("process", True):
            self._process_edges(g, nodes)
        if self.options.get("realtime", True):
            self._realtime_edges(g, nodes)
        cycles = self._cycles(g, nodes)
        counts = {EDGE_NAMES[k]: 0 for k in _PRIORITY}
        for m in g.succ:
            for mask in m.values():
                for k in _PRIORITY:
                    if mask & k:
                        counts[EDGE_NAMES[k]] += 1
        by_type: dict[str, int] = {}
        for a in self.anomalies:
            by_type[a["type"]] = by_type.get(a["type"], 0) + 1
        stats = {
            "txns": len(txns),
            "ok": sum(1 for t in txns if t.op.type == "ok"),
            "keys": len(self.key_names),
            "reads": len(reads),
            "edges": counts,
            "cycles": cycles,
            "anomaly_types": by_type,
            "notes": self.notes,
        }
        if self.anomalies:
            kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
            res = CheckResult(False, "list-append", f"found {kinds}", self.anomalies)
        elif dup_appends:
            res = CheckResult(None, "list-append", "no anomaly found, but appended values are "
                                                   "not unique, so reads are ambiguous")
        else:
            res = CheckResult(True, "list-append", f"no anomaly among {len(nodes)} committed or "
                                                   "indeterminate transactions")
        res.stats["list_append"] = stats
        return res

    def _reads(self, writer: dict[tuple[Hashable, Hashable], tuple[_Txn, int]],
               failed_writer: dict[tuple[Hashable, Hashable], _Txn]) -> list[_Read]:
        reads: list[_Read] = []
        for t in self.txns:
            if t.op.type != "ok":
                continue
            own: dict[Hashable, list[Hashable]] = {}
            for f, k, v in t.mops:
                kk = value_key(k)
                if f == "append":
                    own.setdefault(kk, []).append(value_key(v))
                    continue
                if v is None:
                    continue
                full = [value_key(x) for x in v]
                mine = own.get(kk, [])
                what = f"{self._label(t)} read {self._k(kk)} = {fmt(v)}"
                if len(set(full)) != len(full):
                    dups = [x for i, x in enumerate(v) if full[i] in full[:i]]
                    self.anomalies.append(anomaly(
                        "duplicate-elements", [t.op], f"{what}, which contains {fmt(dups)} "
                        "more than once: each value is appended once.", key=k))
                    continue
                if mine and full[-len(mine):] != mine:
                    self.anomalies.append(anomaly(
                        "internal", [t.op], f"{what} after itself appending "
                        f"{fmt([self.elem_names[(kk, x)] for x in mine])}, which that read "
                        "should end with.", key=k))
                    continue
                external = full[:len(full) - len(mine)]
                bad = False
                for x, raw in zip(external, v, strict=False):
                    if (kk, x) in writer:
                        continue
                    bad = True
                    ft = failed_writer.get((kk, x))
                    if ft is not None:
                        self.anomalies.append(anomaly(
                            "G1a", [t.op, ft.op], f"{what}, which contains {fmt(raw)}, "
                            f"appended by {self._label(ft)}, which failed: an aborted read.",
                            key=k, element=raw))
                    else:
                        self.anomalies.append(anomaly(
                            "garbage-read", [t.op], f"{what}, which contains {fmt(raw)}, "
                            f"but no transaction ever appended {fmt(raw)} to {self._k(kk)}.",
                            key=k, element=raw))
                    break
                if not bad:
                    reads.append(_Read(t, kk, v, full, external))
        return reads

    def _version_orders(self, reads: list[_Read]) -> dict[Hashable, list[Hashable]]:
        longest: dict[Hashable, _Read] = {}
        for r in reads:
            cur = longest.get(r.key)
            if cur is None or len(r.full) > len(cur.full):
                longest[r.key] = r
        orders: dict[Hashable, list[Hashable]] = {}
        for k, lr in longest.items():
            orders[k] = lr.full
        broken: set[Hashable] = set()
        for r in reads:
            order = orders[r.key]
            if r.full != order[:len(r.full)] and r.key not in broken:
                broken.add(r.key)
                lr = longest[r.key]
                self.anomalies.append(anomaly(
                    "incompatible-order", [r.txn.op, lr.txn.op],
                    f"{self._label(r.txn)} read {self._k(r.key)} = {fmt(r.value)} and "
                    f"{self._label(lr.txn)} read {self._k(r.key)} = {fmt(lr.value)}: the "
                    "first is not a prefix of the second, so the two disagree on the order "
                    "of the appends.", key=self.key_names[r.key]))
        for k in broken:
            del orders[k]
        return orders

    # -- edges -----------------------------------------------------------------------
    def _dependency_edges(self, g: _Graph, reads: list[_Read],
                          orders: dict[Hashable, list[Hashable]],
                          writer: dict[tuple[Hashable, Hashable], tuple[_Txn, int]],
                          last_append: dict[tuple[int, Hashable], Hashable]) -> None:
        for k, order in orders.items():
            for a, b in itertools.pairwise(order):
                ta, tb = writer[(k, a)][0], writer[(k, b)][0]
                g.add(ta.node, tb.node, WW, k, a, b)
        g1b_seen: set[tuple[int, Hashable]] = set()
        for r in reads:
            k, t = r.key, r.txn
            if r.external:
                e = r.external[-1]
                w = writer[(k, e)][0]
                g.add(w.node, t.node, WR, k, e, r)
                last = last_append.get((w.node, k))
                if w is not t and last != e and (t.node, k) not in g1b_seen:
                    g1b_seen.add((t.node, k))
                    self.anomalies.append(anomaly(
                        "G1b", [t.op, w.op], f"{self._label(t)} read {self._k(k)} = "
                        f"{fmt(r.value)}, ending in {fmt(self.elem_names[(k, e)])}, but "
                        f"{self._label(w)} appended {fmt(self.elem_names[(k, last)])} to "
                        f"{self._k(k)} after it in the same transaction: an intermediate "
                        "read.", key=self.key_names[k]))
            known = orders.get(k)
            if known is not None and len(r.external) < len(known):
                nxt = known[len(r.external)]
                u = writer[(k, nxt)][0]
                if u is not t:
                    g.add(t.node, u.node, RW, k, nxt, r)

    def _process_edges(self, g: _Graph, nodes: list[_Txn]) -> None:
        last: dict[Any, _Txn] = {}
        for t in sorted(nodes, key=lambda t: t.op.invoke_pos):
            p = last.get(t.op.process)
            if p is not None:
                g.add(p.node, t.node, PROC)
            last[t.op.process] = t

    def _realtime_edges(self, g: _Graph, nodes: list[_Txn]) -> None:
        events: list[tuple[int, int, _Txn]] = []
        for t in nodes:
            events.append((t.op.invoke_pos, 0, t))
            if t.op.type == "ok" and t.op.complete_pos is not None:
                events.append((t.op.complete_pos, 1, t))
        events.sort(key=lambda e: e[0])
        frontier: set[int] = set()
        covered: dict[int, list[int]] = {}
        for _, kind, t in events:
            if kind == 0:
                covered[t.node] = list(frontier)
                for a in frontier:
                    g.add(a, t.node, RT)
            else:
                for a in covered.pop(t.node):
                    frontier.discard(a)
                frontier.add(t.node)

    # -- cycles ----------------------------------------------------------------------
    def _cycles(self, g: _Graph, nodes: list[_Txn]) -> int:
        n = len(nodes)
        max_cycles = int(self.options.get("max_cycles", DEFAULT_MAX_CYCLES))
        found = 0
        levels: list[tuple[int, int, str]] = [(WW, WW, ""), (WW | WR, WR, ""),
                                              (DEP, RW, "")]
        if self.options.get("process", True):
            levels.append((DEP | PROC, PROC, "-process"))
        if self.options.get("realtime", True):
            levels.append((DEP | PROC | RT, RT, "-realtime"))
        reported: set[str] = set()
        dep_sccs: set[frozenset[int]] = set()  # components with a pure dependency cycle
        for mask, through, suffix in levels:
            per_type: dict[str, int] = {}
            for comp in _tarjan(n, g.succ, mask):
                within = set(comp)
                if suffix and frozenset(within) in dep_sccs:
                    continue  # already explained without process/real-time order
                cyc = self._cycle_in(g, comp, within, mask, through)
                if cyc is None:
                    continue
                typ = self._classify(cyc) + suffix
                sig = typ + repr(sorted(a for a, _, _ in cyc))
                if sig in reported or per_type.get(typ, 0) >= max_cycles:
                    continue
                if not suffix:
                    dep_sccs.add(frozenset(within))
                reported.add(sig)
                per_type[typ] = per_type.get(typ, 0) + 1
                found += 1
                self.anomalies.append(self._explain(g, typ, cyc, nodes))
        return found

    @staticmethod
    def _cycle_in(g: _Graph, comp: list[int], within: set[int], mask: int,
                  through: int) -> list[tuple[int, int, int]] | None:
        """A short cycle inside ``comp`` that uses a ``through`` edge, as (from, kind, to)
        triples. Through rw, a cycle whose other edges are ww/wr (a single rw: G-single)
        is preferred; failing that, any cycle (G2). Tries at most MAX_TRIES_PER_SCC edges."""
        rest_masks = [mask & ~RW, mask] if through == RW else [mask]
        for rest in rest_masks:
            best: list[tuple[int, int, int]] | None = None
            tries = 0
            for a in comp:
                for b, m in g.succ[a].items():
                    if not m & through or b not in within or tries >= MAX_TRIES_PER_SCC:
                        continue
                    tries += 1
                    path = _path(g, b, a, rest, within)
                    if not path:
                        continue
                    cyc = [(a, through, b)]
                    for v, k in path:
                        cyc.append((cyc[-1][2], k, v))
                    if best is None or len(cyc) < len(best):
                        best = cyc
            if best is not None:
                return best
        return None

    @staticmethod
    def _classify(cyc: list[tuple[int, int, int]]) -> str:
        kinds = [k for _, k, _ in cyc]
        rw = kinds.count(RW)
        if rw >= 2:
            return "G2"
        if rw == 1:
            return "G-single"
        if WR in kinds:
            return "G1c"
        return "G0"

    def _explain(self, g: _Graph, typ: str, cyc: list[tuple[int, int, int]],
                 nodes: list[_Txn]) -> dict[str, Any]:
        start = min(range(len(cyc)), key=lambda i: cyc[i][0])  # T1: the earliest invoked
        cyc = cyc[start:] + cyc[:start]
        names = {a: f"T{i + 1}" for i, (a, _, _) in enumerate(cyc)}
        steps = []
        parts = []
        for a, kind, b in cyc:
            ta, tb = nodes[a], nodes[b]
            na, nb = names[a], names[b]
            d = g.detail[(a, b, kind)]
            step: dict[str, Any] = {"from": ta.op.invoke_index, "to": tb.op.invoke_index,
                                    "edge": EDGE_NAMES[kind]}
            if kind == WW:
                k, x, y = d
                step["key"] = self.key_names[k]
                parts.append(f"{na} appended {fmt(self.elem_names[(k, x)])} to key {self._k(k)}; "
                             f"{nb} appended {fmt(self.elem_names[(k, y)])} to {self._k(k)} "
                             f"right after it in the version order (ww)")
            elif kind == WR:
                k, x, r = d
                step["key"] = self.key_names[k]
                parts.append(f"{na} appended {fmt(self.elem_names[(k, x)])} to key "
                             f"{self._k(k)}; {nb} read {self._k(k)} = {fmt(r.value)} and so "
                             f"saw {na} (wr)")
            elif kind == RW:
                k, y, r = d
                step["key"] = self.key_names[k]
                parts.append(f"{nb} appended {fmt(self.elem_names[(k, y)])} to key "
                             f"{self._k(k)}; {na} read {self._k(k)} = {fmt(r.value)} so did "
                             f"not see {nb} (rw)")
            elif kind == PROC:
                parts.append(f"{na} and {nb} ran on process {ta.op.process}, {na} first "
                             "(process)")
            else:
                parts.append(f"{na} completed (index {ta.op.complete_index}) before {nb} was "
                             f"invoked (index {tb.op.invoke_index}) (realtime)")
            steps.append(step)
        order = " < ".join([names[a] for a, _, _ in cyc] + [names[cyc[0][0]]])
        legend = "; ".join(f"{names[a]} = {self._label(nodes[a])}: {self._mops_text(nodes[a])}"
                           for a, _, _ in cyc)
        text = "; ".join(parts) + f"; so {order}.\nWhere {legend}."
        return anomaly(typ, [nodes[a].op for a, _, _ in cyc], text, steps=steps)



def check_list_append(hist: DecodedHistory, options: dict[str, Any]) -> CheckResult:
    return _Checker(hist, options).run()
