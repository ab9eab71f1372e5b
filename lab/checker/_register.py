"""Linearizability of registers, key by key: ``cas-register`` (alias ``register``) and
``kv-put-append``.

Each key is an independent register (P-compositionality: a history is linearizable iff
each key's sub-history is), so keys are searched separately (:mod:`lab.checker._wgl`),
round-robin in time slices, and a time limit or the memo bound (option ``max_memo``)
leaves undecided keys ``unknown``. Before the search, sound shortcuts for registers:

* *Quick checks* (:func:`_quick_check`, O(n log n)). An ``ok`` read or cas that needs a
  value nothing ever set (``never-written``), that only ops invoked after it completed
  set (``future-read``), or whose every possible source was certainly overwritten
  before it began (``stale-read``) cannot be linearized: it is reported at once, with
  the writes involved.
* *Useless unknown ops.* An ``info``/pending write or cas whose result value no
  operation ever needs (no read returns it, no cas expects it) can always be left out:
  the operation after it in any linearization overwrites it. Dropping such ops, to a
  fixpoint, shrinks the search without changing the verdict; so does dropping unknown
  cas ops that would not change the value (``[v, v]``).

``fail`` operations and unknown-outcome reads are dropped (they had no effect). In
kv-put-append a read of ``null`` (a missing key) reads as the empty string.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from lab.checker._events import DecodedHistory, HistoryError, Op, value_key
from lab.checker._result import CheckResult, anomaly, fmt, op_span
from lab.checker._wgl import Search, run_round_robin

READ, WRITE, CAS, APPEND = 0, 1, 2, 3
_REGISTER_FS = {"read": READ, "write": WRITE, "cas": CAS}
_KV_FS = {"read": READ, "get": READ, "write": WRITE, "put": WRITE, "append": APPEND}
MAX_PREFIX_SHOWN = 8
INF = 1 << 62
DEFAULT_MAX_MEMO = 6_000_000  # memo entries over the keys still running: ~110 bytes each


def key_name(key: Any) -> str:
    """A key as a JSON object key: strings as they are, anything else as JSON."""
    return key if isinstance(key, str) else json.dumps(key)


@dataclass
class _Values:
    """Interns JSON values as small ints (model states)."""

    ids: dict[Hashable, int] = field(default_factory=dict)
    values: list[Any] = field(default_factory=list)

    def id(self, v: Any) -> int:
        k = value_key(v)
        i = self.ids.get(k)
        if i is None:
            i = self.ids[k] = len(self.values)
            self.values.append(v)
        return i


@dataclass
class _KeyPlan:
    """One key's search input and what is needed to explain its outcome."""

    key: Any
    ops: list[Op]
    kinds: list[int]
    search: Search | None
    verdict: bool | None = None
    anomaly: dict[str, Any] | None = None
    describe_state: Callable[[int], Any] = fmt


def _describe(op: Op, kind: int) -> str:
    if kind == READ:
        what = f"read -> {fmt(op.value)}" if op.type == "ok" else "read"
    elif kind == WRITE:
        what = f"write {fmt(op.value)}"
    elif kind == CAS:
        what = f"cas {fmt(op.value[0])} -> {fmt(op.value[1])}"
    else:
        what = f"append {fmt(op.value)}"
    if op.type != "ok":
        what += " (outcome unknown)"
    return f"{what} [{op_span(op)}]"


def _decode(hist: DecodedHistory, model: str, source: str) -> dict[Any, list[tuple[Op, int]]]:
    """Group the effective ops by key with their kind; validate value shapes."""
    fs = _KV_FS if model == "kv-put-append" else _REGISTER_FS
    by_key: dict[Any, list[tuple[Op, int]]] = defaultdict(list)
    for op in hist.ops:
        kind = fs.get(op.f)
        if kind is None:
            raise HistoryError(source, op.line, f"f {op.f!r} is not an operation of {model} "
                                                f"(expected one of {', '.join(sorted(fs))})")
        if kind != READ and op.value is None:
            op.value = op.invoke_value  # a completion need not repeat what was written
        line = op.line if op.value is op.invoke_value else op.complete_line
        if kind == CAS:
            v = op.value
            if not isinstance(v, list) or len(v) != 2:
                raise HistoryError(source, line, f"cas value must be [expected, new], "
                                                 f"got {fmt(v)}")
        if model == "kv-put-append" and kind in (WRITE, APPEND) and not isinstance(op.value, str):
            raise HistoryError(source, line, f"{op.f} value must be a string, "
                                             f"got {fmt(op.value)}")
        if model == "kv-put-append" and kind == READ and op.type == "ok":
            if op.value is None:
                op.value = ""  # a missing key reads as the empty string
            elif not isinstance(op.value, str):
                raise HistoryError(source, line, f"read must return a string, "
                                                 f"got {fmt(op.value)}")
        if op.type == "fail" or (kind == READ and op.type != "ok"):
            continue
        by_key[op.key].append((op, kind))
    return by_key


def _needs(op: Op, kind: int) -> Any:
    """The value an acknowledged read or cas needs the register to hold."""
    return op.value if kind == READ else op.value[0]


def _quick_check(key: Any, items: list[tuple[Op, int]], vals: _Values,
                 initial: Any) -> dict[str, Any] | None:
    """Find an ``ok`` read (or cas) that no linearization can explain, in O(n log n).

    A *source* of value v is an op that sets the register to v (a write or cas,
    ``ok`` or unknown-outcome) or the initial value. The op that needs v must come
    after some source invoked before it completed, with no other value set in between.
    A source is *killed* for it when an ``ok`` op setting another value was invoked
    after the source completed and completed before the needing op was invoked (it
    certainly came in between). No source: ``never-written``; none invoked in time:
    ``future-read``; all killed: ``stale-read``. Each is a proof of invalidity.
    """
    setters: list[tuple[int, int, int, Op | None]] = []  # (invoke, complete, value, op)
    setters.append((-1, -1, vals.id(initial), None))
    for op, kind in items:
        if kind in (WRITE, CAS):
            v = vals.id(op.value if kind == WRITE else op.value[1])
            setters.append((op.invoke_pos, INF if op.complete_pos is None
                            else op.complete_pos, v, op))
    # Killers: ok setters by invoke position, with the two earliest completions of
    # distinct values in every suffix (enough to answer "earliest of a value != v").
    killers = sorted((t for t in setters if t[3] is not None and t[3].type == "ok"),
                     key=lambda t: t[0])
    kinv = [t[0] for t in killers]
    suffix: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = [
        ((INF, -1, -1), (INF, -2, -1))] * (len(killers) + 1)
    for i in range(len(killers) - 1, -1, -1):
        _, c, v, _ = killers[i]
        a, b = suffix[i + 1]
        cand = (c, v, i)
        if cand[0] < a[0]:
            suffix[i] = (cand, a if a[1] != v else b)
        elif v != a[1] and cand[0] < b[0]:
            suffix[i] = (a, cand)
        else:
            suffix[i] = (a, b)

    def killer(comp: int, v: int) -> tuple[int, int]:
        """(completion, index in killers) of the earliest ok setter of a value other
        than v invoked after ``comp``; (INF, -1) if none."""
        if comp >= INF:
            return INF, -1
        a, b = suffix[bisect.bisect_right(kinv, comp)]
        return (a[0], a[2]) if a[1] != v else (b[0], b[2])

    # Per value: its sources by invoke, and the running maximum of their kill times.
    by_value: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for inv, comp, v, _ in setters:
        by_value[v].append((inv, killer(comp, v)[0]))
    invs: dict[int, list[int]] = {}
    best: dict[int, list[int]] = {}
    for v, lst in by_value.items():
        lst.sort()
        invs[v] = [t[0] for t in lst]
        best[v] = list(itertools.accumulate((t[1] for t in lst), max))
    for op, kind in items:
        if op.type != "ok" or kind == WRITE:
            continue
        need = _needs(op, kind)
        nv = vals.id(need)
        assert op.complete_pos is not None
        n_in_time = bisect.bisect_left(invs.get(nv, []), op.complete_pos)
        if n_in_time and best[nv][n_in_time - 1] >= op.invoke_pos:
            continue
        verb = "returned" if kind == READ else "expected"
        where = f"key {key_name(key)}: {_describe(op, kind)} {verb} {fmt(need)}, but"
        involved = [op]
        if nv not in by_value:
            cause = "never-written"
            why = (f"no write or cas ever tried to set key {key_name(key)} to {fmt(need)}, "
                   f"and the initial value is {fmt(initial)}.")
        elif not n_in_time:
            cause = "future-read"
            why = (f"every write of {fmt(need)} was invoked after it completed, so it read "
                   "from the future.")
        else:
            cause = "stale-read"
            lines = [f"every value {fmt(need)} it could have seen was certainly overwritten "
                     "before it began:"]
            srcs_v = [t for t in setters if t[2] == nv and t[0] < op.complete_pos]
            srcs_v.sort(key=lambda t: t[0])
            for _, comp, _, sop in srcs_v[-MAX_PREFIX_SHOWN:]:
                kop = killers[killer(comp, nv)[1]][3]
                assert kop is not None
                src = "the initial value" if sop is None else _describe(sop, _kind_of(sop))
                lines.append(f"  {src} was followed by {_describe(kop, _kind_of(kop))}, which "
                             "completed before it was invoked;")
                involved += [o for o in (sop, kop) if o is not None]
            why = "\n".join(lines)
        return anomaly("nonlinearizable", involved, f"{where} {why}", key=key, cause=cause)
    return None


def _kind_of(op: Op) -> int:
    return _REGISTER_FS[op.f]


def _register_plan(key: Any, items: list[tuple[Op, int]], initial: Any) -> _KeyPlan:
    vals = _Values()
    init = vals.id(initial)
    ops = [op for op, _ in items]
    found = _quick_check(key, items, vals, initial)
    if found is not None:
        return _KeyPlan(key, ops, [k for _, k in items], None, False, found)
    # Drop unknown-outcome ops whose result nobody needs, to a fixpoint.
    need_count: dict[int, int] = defaultdict(int)
    live = [True] * len(items)
    for op, kind in items:
        if kind == READ:
            need_count[vals.id(op.value)] += 1
        elif kind == CAS:
            need_count[vals.id(op.value[0])] += 1
    changed = True
    while changed:
        changed = False
        for i, (op, kind) in enumerate(items):
            if not live[i] or op.type == "ok":
                continue
            res = vals.id(op.value if kind == WRITE else op.value[1])
            if need_count[res] == 0:
                live[i] = False
                changed = True
                if kind == CAS:
                    need_count[vals.id(op.value[0])] -= 1
    kept = [(op, kind) for i, (op, kind) in enumerate(items)
            if live[i] and not (op.type != "ok" and kind == CAS and
                                vals.id(op.value[0]) == vals.id(op.value[1]))]
    req, out, classes = [], [], []
    class_ids: dict[tuple[int, int], int] = {}
    for op, kind in kept:
        if kind == READ:
            r, o = vals.id(op.value), -1
        elif kind == WRITE:
            r, o = -1, vals.id(op.value)
        else:
            r, o = vals.id(op.value[0]), vals.id(op.value[1])
        req.append(r)
        out.append(o)
        classes.append(class_ids.setdefault((r, o), len(class_ids)))
    search = Search([op.invoke_pos for op, _ in kept], [op.complete_pos for op, _ in kept],
                    classes, init, req=req, out=out, blind=[k == WRITE for _, k in kept],
                    pure=[r if k == READ or (k == CAS and r == o) else -1
                          for (_, k), r, o in zip(kept, req, out, strict=True)])
    plan = _KeyPlan(key, [op for op, _ in kept], [k for _, k in kept], search)
    plan.describe_state = lambda s: fmt(vals.values[s])
    return plan


def _kv_plan(key: Any, items: list[tuple[Op, int]], initial: str) -> _KeyPlan:
    states: list[str] = [initial]
    sid: dict[str, int] = {initial: 0}
    kinds = [k for _, k in items]
    vals: list[str] = [op.value for op, _ in items]
    n = len(items)
    trans: dict[int, int] = {}

    def intern(v: str) -> int:
        i = sid.get(v)
        if i is None:
            i = sid[v] = len(states)
            states.append(v)
        return i

    def step(s: int, op: int) -> int:
        k = s * n + op
        r = trans.get(k)
        if r is None:
            kind = kinds[op]
            if kind == READ:
                r = s if states[s] == vals[op] else -1
            elif kind == WRITE:
                r = intern(vals[op])
            else:
                r = intern(states[s] + vals[op])
            trans[k] = r
        return r

    class_ids: dict[tuple[int, str], int] = {}
    classes = [class_ids.setdefault((k, v), len(class_ids)) for k, v in zip(kinds, vals,
                                                                            strict=True)]
    search = Search([op.invoke_pos for op, _ in items], [op.complete_pos for op, _ in items],
                    classes, 0, step=step, blind=[k == WRITE for k in kinds],
                    pure=[intern(v) if k == READ else -1 for k, v in zip(kinds, vals, strict=True)])
    plan = _KeyPlan(key, [op for op, _ in items], kinds, search)
    plan.describe_state = lambda s: fmt(states[s])
    return plan


def _explain_failure(plan: _KeyPlan) -> dict[str, Any]:
    assert plan.search is not None and plan.search.failure is not None
    fail = plan.search.failure
    kinds = plan.kinds
    ops = plan.ops
    name = key_name(plan.key)
    blocked = ops[fail.blocked]
    bkind = kinds[fail.blocked]
    state = plan.describe_state(fail.state)
    prefix = [ops[i] for i in fail.prefix]
    lines = [f"key {name}: no order of the operations is consistent with both the register "
             f"semantics and real time."]
    if prefix:
        lines.append(f"The longest linearizable prefix has {len(prefix)} operations"
                     + (f" (the last {MAX_PREFIX_SHOWN} shown)" if len(prefix) > MAX_PREFIX_SHOWN
                        else "") + ":")
        start = max(0, len(prefix) - MAX_PREFIX_SHOWN)
        for k in range(start, len(prefix)):
            lines.append(f"  {k + 1}. {_describe(prefix[k], kinds[fail.prefix[k]])}")
        lines.append(f"after which the register holds {state}.")
    else:
        lines.append(f"No operation can be linearized first; the register holds {state}.")
    desc = _describe(blocked, bkind)
    if bkind == READ:
        why = f"it returned {fmt(blocked.value)} while the register holds {state}"
    elif bkind == CAS:
        why = (f"it expected {fmt(blocked.value[0])} (and succeeded) while the register "
               f"holds {state}")
    else:
        why = "every way of placing it leads to a dead end"
    lines.append(f"Next, {desc} must take effect before it completed at index "
                 f"{blocked.complete_index}, but {why}; no other operation invoked before "
                 "then can be placed first to make that possible.")
    shown = [*prefix[-MAX_PREFIX_SHOWN:], blocked]
    return anomaly("nonlinearizable", shown, "\n".join(lines), key=plan.key,
                   cause="no-linearization",
                   prefix=[o.invoke_index for o in prefix],
                   blocked=blocked.invoke_index, state=plan.describe_state(fail.state))


def check_register(hist: DecodedHistory, model: str, initial: Any, time_limit: float | None,
                   options: dict[str, Any]) -> CheckResult:
    """Check ``cas-register``/``register``/``kv-put-append`` histories key by key."""
    by_key = _decode(hist, model, hist.source)
    plans: list[_KeyPlan] = []
    for key, items in by_key.items():
        if model == "kv-put-append":
            init = "" if initial is None else initial
            if not isinstance(init, str):
                raise HistoryError(hist.source, None,
                                   f"kv-put-append needs a string initial value, got {fmt(init)}")
            plans.append(_kv_plan(key, items, init))
        else:
            plans.append(_register_plan(key, items, initial))
    searches = [p.search for p in plans if p.search is not None and p.verdict is None]
    all_keys = bool(options.get("all_keys", False))
    stopped = run_round_robin(searches, time_limit, int(options.get("slice_steps", 4000)),
                              stop_on_fail=not all_keys,
                              max_memo=int(options.get("max_memo", DEFAULT_MAX_MEMO)))
    anomalies: list[dict[str, Any]] = []
    per_key: dict[str, str] = {}
    steps = 0
    for p in plans:
        if p.search is not None:
            steps += p.search.steps
            p.verdict = p.search.result
            if p.verdict is False:
                p.anomaly = _explain_failure(p)
        if p.anomaly is not None:
            anomalies.append(p.anomaly)
        per_key[key_name(p.key)] = {True: "valid", False: "invalid", None: "unknown"}[p.verdict]
    bad = [k for k, v in per_key.items() if v == "invalid"]
    undecided = [k for k, v in per_key.items() if v == "unknown"]
    valid: bool | None
    if bad:
        valid = False
        reason = (f"{len(bad)} of {len(per_key)} keys are not linearizable "
                  f"(first: key {bad[0]})")
        if undecided:
            reason += (f"; {len(undecided)} keys left undecided (" +
                       (stopped if stopped else "the search stops at the first invalid "
                        "key; option all_keys checks them all") + ")")
    elif undecided:
        valid = None
        reason = f"{stopped} with {len(undecided)} of {len(per_key)} keys undecided"
    else:
        valid = True
        reason = f"all {len(per_key)} keys are linearizable"
    res = CheckResult(valid, model, reason, anomalies, per_key=per_key)
    res.stats["search"] = {"keys": len(per_key), "steps": steps}
    return res
