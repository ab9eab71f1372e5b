"""The ``set`` model: ``add v``; ``read`` -> the list of elements (Jepsen's set-full).

The *final read* is the ``ok`` read that completed last; without one the verdict is
unknown. An element is *known* from the moment its add was acknowledged or a read
containing it completed, whichever came first. Anomalies, each reported with the element
and the operations that show it (each makes the history invalid):

* ``duplicated``: the element appears more than once in one ``ok`` read (a set holds an
  element once); reported with the first such read and its number of copies;
* ``lost``: missing from the final read although it was known before that read began;
  or missing from the final read and from another read that began after it was known,
  with no read that began later holding it (set-full's lost: after some point no read
  sees it). Reported with the acknowledging add (or the read that first showed it) and
  the read that misses it;
* ``unexpected``: read although no add of it was ever attempted, or every add of it
  failed, or every add of it was invoked after the read completed;
* ``vanished``: seen by one read, then missing from a read that began after that read
  completed (a set that only grows never forgets; it may have reappeared later);
* ``stale``, only with option ``linearizable: true``: see below.

A read that misses an element, began after the element was known and at least
``stale_after`` later (option, in the history's ``time`` units -- nanoseconds in lab
histories; default 0, any later read), is a *stale read* of it when the element is not
lost or vanished: it was seen afterwards, by a read that began later or by the final
read. The element is then *stale* (set-full's stale: it became stable only after some
reads had begun without it). Stale elements are legal for an eventually consistent set:
they are counted under ``stats["set"]["stale"]`` with their *stale latency* (set-full's
stable latency: from the moment the element was known to the start of the last read
that missed it) and the worst ones explained there. Option ``linearizable: true`` makes
each stale element an anomaly ``stale``, with the operation that made it known, the
first and last reads that missed it and the read that then showed it.

Visibility latency (acknowledgement to the completion of the first read containing the
element, in ``time`` units) is summarised under ``stats["set"]["late_visibility"]``. An
``ok`` add that completed after the final read began and is missing from it is
*unconfirmed*, not lost: the final read may have been linearized first.

Where this departs from set-full: set-full orders reads by their invocation only, so an
element missing from the last read to *begin* is lost there even when a read that began
earlier but completed later (the final read here) holds it; here that element is stale
(invalid under ``linearizable: true``, as in set-full, and legal otherwise, since the
set did show it last). ``vanished`` and ``unexpected`` have no set-full counterpart (the
plain ``set`` checker has ``unexpected``); set-full's verdict is unknown when no element
is stable, ours when there is no ``ok`` read.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from lab.checker._events import DecodedHistory, HistoryError, Op, value_key
from lab.checker._result import CheckResult, anomaly, fmt, op_span

INF = float("inf")
WORST_STALE = 8  #: stale elements explained under ``stats["set"]["stale"]["worst"]``


@dataclass
class _Elem:
    value: Any
    adds: list[Op] = field(default_factory=list)
    first_read: Op | None = None  # the earliest-completing read containing it

    def ok_adds(self) -> list[Op]:
        return [o for o in self.adds if o.type == "ok"]

    def ack(self) -> float:
        return min((o.complete_pos for o in self.adds
                    if o.type == "ok" and o.complete_pos is not None), default=INF)

    def first_invoke(self) -> float:
        return min((o.invoke_pos for o in self.adds if o.type != "fail"), default=INF)

    def seen(self) -> float:
        if self.first_read is None or self.first_read.complete_pos is None:
            return INF
        return self.first_read.complete_pos

    def known_op(self) -> Op | None:
        """The operation that made it known: the first acknowledged add, or the first read
        holding it if that completed earlier."""
        acks = [o for o in self.adds if o.type == "ok" and o.complete_pos is not None]
        ack = min(acks, key=lambda o: o.complete_pos or 0) if acks else None
        if ack is not None and (self.first_read is None or self.ack() < self.seen()):
            return ack
        return self.first_read

    def how_known(self, op: Op) -> str:
        return ("acknowledged" if op.f == "add" else "seen by a read") + f" [{op_span(op)}]"


def _pctl(xs: list[int], q: float) -> int:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _duration(t: int) -> str:
    """A span of history time (nanoseconds in lab histories), for explanations."""
    if t < 1_000:
        return f"{t} ns"
    if t < 1_000_000:
        return f"{t / 1e3:.3g} us"
    if t < 1_000_000_000:
        return f"{t / 1e6:.3g} ms"
    return f"{t / 1e9:.3g} s"


def _lag(known: Op, read: Op) -> int | None:
    """How long after ``known`` completed ``read`` began, when both have times."""
    if known.complete_time is None or read.invoke_time is None:
        return None
    return max(0, read.invoke_time - known.complete_time)


def _late(lag: int | None, stale_after: float) -> bool:
    """A read that began ``lag`` after the element was known is at least ``stale_after``
    late (with no times, only the default threshold 0 is met)."""
    return stale_after == 0 if lag is None else lag >= stale_after


def _after(lag: int | None) -> str:
    return "after that" if lag is None else f"{_duration(lag)} after that"


def check_set(hist: DecodedHistory, options: dict[str, Any]) -> CheckResult:
    stale_after = options.get("stale_after", 0)
    if isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)) \
            or stale_after < 0:
        raise HistoryError(hist.source, None, "option stale_after must be a number >= 0 "
                                              f"(history time units), got {fmt(stale_after)}")
    elems: dict[Hashable, _Elem] = {}
    reads: list[tuple[Op, set[Hashable]]] = []
    dups: dict[Hashable, list[tuple[Op, int]]] = {}  # element -> (read, copies) with > 1
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
            assert op.complete_pos is not None
            ks: set[Hashable] = set()
            copies: dict[Hashable, int] = {}
            for v in op.value:
                k = value_key(v)
                if k in ks:
                    copies[k] = copies.get(k, 1) + 1
                    continue
                ks.add(k)
                e = elems.setdefault(k, _Elem(v))
                if e.first_read is None or e.seen() > op.complete_pos:
                    e.first_read = op
            for k, n in copies.items():
                dups.setdefault(k, []).append((op, n))
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
    # duplicated
    for k, where in dups.items():
        r, n = where[0]
        most = max(c for _, c in where)
        more = (f"; {len(where)} reads hold it more than once, at most {most} times"
                if len(where) > 1 else "")
        anomalies.append(anomaly(
            "duplicated", [r], f"element {fmt(elems[k].value)} appears {n} times in one read "
                               f"[{op_span(r)}]{more}.", element=elems[k].value, copies=n))
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
    misses: dict[Hashable, list[Op]] = {}  # element -> reads that may be stale reads of it
    reported: set[Hashable] = set()
    by_invoke = sorted(reads, key=lambda t: t[0].invoke_pos)
    for r, ks in by_invoke:
        upto = bisect.bisect_left(known_pos, r.invoke_pos)
        for _, k in known[:upto]:
            if k in ks:
                continue
            e = elems[k]
            seen_before = e.seen() < r.invoke_pos and e.first_read is not None
            if r is final:
                reported.add(k)
                how = (f"it was seen by a read [{op_span(e.first_read)}]"
                       if seen_before and e.first_read is not None
                       else "its add was acknowledged")
                shown = [e.first_read] if seen_before and e.first_read is not None else []
                anomalies.append(anomaly(
                    "lost", [*e.ok_adds(), *shown, r],
                    f"element {fmt(e.value)} is missing from the final read [{op_span(r)}], "
                    f"although {how} before that read began.", element=e.value))
            elif seen_before and e.first_read is not None:
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
                misses.setdefault(k, []).append(r)
    # misses of elements neither lost nor vanished: set-full's lost, or stale
    invoke_order = [r.invoke_pos for r, _ in by_invoke]
    stale: list[tuple[int, Any, dict[str, Any]]] = []  # (latency, order, anomaly)
    stale_reads: set[int] = set()
    for k, rs in misses.items():
        if k in reported:
            continue
        e = elems[k]
        kop = e.known_op()
        assert kop is not None
        last = rs[-1]  # rs is in invoke order
        i = bisect.bisect_right(invoke_order, last.invoke_pos)
        shown_by = next((r for r, ks in by_invoke[i:] if k in ks), None)
        if shown_by is None and k not in final_set:
            reported.add(k)
            anomalies.append(anomaly(
                "lost", [*e.ok_adds(), *([kop] if kop.f == "read" else []), last],
                f"element {fmt(e.value)} was {e.how_known(kop)}, then a read [{op_span(last)}]"
                f" that began {_after(_lag(kop, last))} does not contain it, and no read that "
                f"began later does; the final read [{op_span(final)}] began before it was "
                f"known.", element=e.value))
            continue
        if shown_by is None:
            shown_by = final
        late = [r for r in rs if _late(_lag(kop, r), stale_after)]
        if not late:
            continue
        stale_reads.update(r.id for r in late)
        first, last = late[0], late[-1]
        latency = _lag(kop, last)
        also = (f"; {len(late)} reads missed it, the last [{op_span(last)}] beginning "
                f"{_after(latency)}" if len(late) > 1 else "")
        a = anomaly(
            "stale", [kop, first, *([last] if last is not first else []), shown_by],
            f"element {fmt(e.value)} was {e.how_known(kop)}, but a read [{op_span(first)}] "
            f"that began {_after(_lag(kop, first))} does not contain it{also}; a later read "
            f"[{op_span(shown_by)}] does (stale for at least "
            f"{'an unknown time' if latency is None else _duration(latency)}).",
            element=e.value, latency=latency)
        stale.append((latency or 0, first.invoke_pos, a))
    if options.get("linearizable"):
        reported.update(value_key(a["element"]) for _, _, a in stale)
        anomalies.extend(a for _, _, a in sorted(stale, key=lambda t: t[1]))
    latencies: list[tuple[int, Any]] = []
    never_seen = 0
    unconfirmed = 0
    for k, e in elems.items():
        oks = e.ok_adds()
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
    stale_lat = sorted(t for t, _, _ in stale)
    worst = sorted(stale, key=lambda t: -t[0])[:WORST_STALE]
    stats: dict[str, Any] = {
        "attempted": sum(1 for e in elems.values() if e.adds),
        "acknowledged": sum(1 for e in elems.values() if any(o.type == "ok" for o in e.adds)),
        "reads": len(reads),
        "final_read_size": len(final_set),
        "duplicated": len(dups),
        "lost": sum(1 for a in anomalies if a["type"] == "lost"),
        "unexpected": sum(1 for a in anomalies if a["type"] == "unexpected"),
        "vanished": sum(1 for a in anomalies if a["type"] == "vanished"),
        "unconfirmed": unconfirmed,
        "stale_reads": len(stale_reads),
        "stale": {
            "elements": len(stale),
            "stale_after": stale_after,
            "median_latency": _pctl(stale_lat, 0.5) if stale_lat else None,
            "max_latency": stale_lat[-1] if stale_lat else None,
            "worst": [{"element": a["element"], "latency": a["latency"],
                       "ops": [o["index"] for o in a["ops"]],
                       "explanation": a["explanation"]} for _, _, a in worst],
        },
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
        counts = ", ".join(f"{stats[t]} {t}" for t in ("duplicated", "lost", "unexpected",
                                                         "vanished") if stats[t])
        if options.get("linearizable") and stale:
            counts = (counts + ", " if counts else "") + f"{len(stale)} stale"
        res = CheckResult(False, "set", f"the set misbehaved: {counts}", anomalies)
    else:
        res = CheckResult(True, "set", f"all {stats['acknowledged']} acknowledged adds are "
                                       f"accounted for; {len(stale_reads)} stale reads of "
                                       f"{len(stale)} stale elements")
    res.stats["set"] = stats
    return res
