"""The ``set`` model: ``add v``; ``read`` -> the list of elements (Jepsen's set-full ideas).

The *final read* is the ``ok`` read that completed last; without one the verdict is
unknown. An element is *known present* from the moment its add was acknowledged or a
read containing it completed. Anomalies (each makes the history invalid):

* ``lost``: known present before the final read began, but missing from it;
* ``unexpected``: read although no add of it was ever attempted, or every add of it
  failed, or every add of it was invoked after the read completed;
* ``vanished``: seen by one read, then missing from a read that began after that read
  completed (a set that only grows never forgets; it may have reappeared later).

An acknowledged add missing from a read that began after the acknowledgement, but seen
later, is a *stale read*: late visibility, legal for an eventually consistent set. Those
are counted, and the visibility latency (acknowledgement to the completion of the first
read containing the element, in the history's ``time`` units) is summarised under
``stats["set"]``. Option ``linearizable: true`` turns stale reads into anomalies.
An ``ok`` add that completed after the final read began and is missing from it is
*unconfirmed*, not lost: the final read may have been linearized first.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from lab.checker._events import DecodedHistory, HistoryError, Op, value_key
from lab.checker._result import CheckResult, anomaly, fmt, op_span

INF = float("inf")


@dataclass
class _Elem:
    value: Any
    adds: list[Op] = field(default_factory=list)
    first_read: Op | None = None  # the earliest-completing read containing it

    def ack(self) -> float:
        return min((o.complete_pos for o in self.adds
                    if o.type == "ok" and o.complete_pos is not None), default=INF)

    def first_invoke(self) -> float:
        return min((o.invoke_pos for o in self.adds if o.type != "fail"), default=INF)

    def seen(self) -> float:
        if self.first_read is None or self.first_read.complete_pos is None:
            return INF
        return self.first_read.complete_pos


def _pctl(xs: list[int], q: float) -> int:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def check_set(hist: DecodedHistory, options: dict[str, Any]) -> CheckResult:
    elems: dict[Hashable, _Elem] = {}
    reads: list[tuple[Op, set[Hashable]]] = []
    for op in hist.ops:
        if op.f == "add":
            k = value_key(op.invoke_value)
            elems.setdefault(k, _Elem(op.invoke_value)).adds.append(op)
        elif op.f == "read":
            if op.type != "ok":
                continue
            if not isinstance(op.value, list):
                raise HistoryError(hist.source, op.complete_line,
                                   f"read must return a list, got {fmt(op.value)}")
            ks = set()
            for v in op.value:
                k = value_key(v)
                ks.add(k)
                e = elems.setdefault(k, _Elem(v))
                assert op.complete_pos is not None
                if e.first_read is None or e.seen() > op.complete_pos:
                    e.first_read = op
            reads.append((op, ks))
        else:
            raise HistoryError(hist.source, op.line, f"f {op.f!r} is not a set operation "
                                                     "(expected add or read)")
    if not reads:
        res = CheckResult(None, "set", "no acknowledged (ok) read, so nothing can be said "
                                       "about which adds survived")
        res.stats["set"] = {"attempted": len(elems), "reads": 0}
        return res
    final, final_set = max(reads, key=lambda r: r[0].complete_pos or 0)
    anomalies: list[dict[str, Any]] = []
    bad_elems: set[Hashable] = set()
    # unexpected
    for k, e in elems.items():
        if e.first_read is None:
            continue
        r = e.first_read
        if not e.adds:
            why = "no add of it was ever attempted"
        elif all(o.type == "fail" for o in e.adds):
            why = "its add failed, so it certainly did not happen"
        elif e.first_invoke() > e.seen():
            why = "its add was invoked only after that read completed"
        else:
            continue
        bad_elems.add(k)
        anomalies.append(anomaly("unexpected", [r, *e.adds],
                                 f"element {fmt(e.value)} was read [{op_span(r)}], but {why}.",
                                 element=e.value))
    # lost, vanished, stale: elements known present when a read began but missing from it
    known = sorted(((min(e.ack(), e.seen()), k) for k, e in elems.items()
                    if k not in bad_elems and min(e.ack(), e.seen()) < INF),
                   key=lambda t: t[0])
    known_pos = [t[0] for t in known]
    stale_reads = 0
    stale_pairs: list[tuple[Hashable, Op]] = []
    unconfirmed = 0
    reported: set[Hashable] = set()
    for r, ks in sorted(reads, key=lambda t: t[0].invoke_pos):
        upto = bisect.bisect_left(known_pos, r.invoke_pos)
        stale_here = False
        for _, k in known[:upto]:
            if k in ks:
                continue
            e = elems[k]
            if r is final:
                reported.add(k)
                how = (f"it was seen by a read [{op_span(e.first_read)}]"
                       if e.seen() < r.invoke_pos and e.first_read is not None
                       else "its add was acknowledged")
                anomalies.append(anomaly(
                    "lost", [*(o for o in e.adds if o.type == "ok"), r],
                    f"element {fmt(e.value)} is missing from the final read [{op_span(r)}], "
                    f"although {how} before that read began.", element=e.value))
            elif e.seen() < r.invoke_pos and e.first_read is not None:
                if k in reported:
                    continue
                reported.add(k)
                back = "; it reappeared later" if k in final_set else ""
                anomalies.append(anomaly(
                    "vanished", [e.first_read, r],
                    f"element {fmt(e.value)} was seen by a read [{op_span(e.first_read)}] "
                    f"but is missing from a later read [{op_span(r)}] that began after the "
                    f"first one completed{back}.", element=e.value))
            else:
                stale_here = True
                stale_pairs.append((k, r))
        stale_reads += stale_here
    if options.get("linearizable"):
        for k, r in stale_pairs:
            if k in reported:
                continue
            reported.add(k)
            e = elems[k]
            anomalies.append(anomaly(
                "stale-read", [*(o for o in e.adds if o.type == "ok"), r],
                f"element {fmt(e.value)} was acknowledged before a read [{op_span(r)}] began, "
                "but that read does not contain it (late visibility).", element=e.value))
    latencies: list[tuple[int, Any]] = []
    never_seen = 0
    for k, e in elems.items():
        oks = [o for o in e.adds if o.type == "ok"]
        if not oks:
            continue
        if k not in final_set and (oks[0].complete_pos or 0) > final.invoke_pos:
            unconfirmed += 1
        if e.first_read is None:
            never_seen += 1
            continue
        t_ack = min((o.complete_time for o in oks if o.complete_time is not None), default=None)
        t_seen = e.first_read.complete_time
        if t_ack is not None and t_seen is not None:
            latencies.append((max(0, t_seen - t_ack), e.value))
    latencies.sort(key=lambda t: t[0])
    lat = [t[0] for t in latencies]
    stats: dict[str, Any] = {
        "attempted": sum(1 for e in elems.values() if e.adds),
        "acknowledged": sum(1 for e in elems.values() if any(o.type == "ok" for o in e.adds)),
        "reads": len(reads),
        "final_read_size": len(final_set),
        "lost": sum(1 for a in anomalies if a["type"] == "lost"),
        "unexpected": sum(1 for a in anomalies if a["type"] == "unexpected"),
        "vanished": sum(1 for a in anomalies if a["type"] == "vanished"),
        "unconfirmed": unconfirmed,
        "stale_reads": stale_reads,
        "late_visibility": {
            "measured": len(lat),
            "never_seen": never_seen,
            "median": _pctl(lat, 0.5) if lat else None,
            "p95": _pctl(lat, 0.95) if lat else None,
            "max": lat[-1] if lat else None,
            "slowest": [{"element": v, "latency": t} for t, v in latencies[-5:][::-1]],
        },
    }
    if anomalies:
        counts = ", ".join(f"{stats[t]} {t}" for t in ("lost", "unexpected", "vanished")
                           if stats[t])
        if options.get("linearizable") and any(a["type"] == "stale-read" for a in anomalies):
            counts = (counts + ", " if counts else "") + "stale reads"
        res = CheckResult(False, "set", f"the set misbehaved: {counts}", anomalies)
    else:
        res = CheckResult(True, "set", f"all {stats['acknowledged']} acknowledged adds are "
                                       f"accounted for; {stale_reads} stale reads")
    res.stats["set"] = stats
    return res
