"""The ``counter`` model: ``add n`` (n may be negative) and ``read`` -> the number.

Each ``ok`` read must lie within bounds fixed by real time (Jepsen's counter checker,
with decrements handled by keeping the two directions apart):

* *definite* adds: ``ok`` adds that completed before the read was invoked; they happened
  before the read, so they are in its value;
* *possible* adds: the other non-failed adds invoked before the read completed (``ok``
  ones concurrent with the read, and ``info``/pending ones); each may or may not be in it.

So ``initial + definite + (negative possible) <= read <= initial + definite + (positive
possible)``. Failed adds certainly did not happen. Every read outside its bounds is an
anomaly of type ``counter-read``.
"""

from __future__ import annotations

from typing import Any

from lab.checker._events import DecodedHistory, HistoryError, Op
from lab.checker._result import CheckResult, anomaly, fmt, op_span


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_counter(hist: DecodedHistory, initial: Any, options: dict[str, Any]) -> CheckResult:
    init = 0 if initial is None else initial
    if not _number(init):
        raise HistoryError(hist.source, None, f"counter needs a numeric initial value, "
                                              f"got {fmt(init)}")
    # (position, kind, op); positions are unique, so the sort is the real-time order.
    events: list[tuple[int, int, Op]] = []
    for op in hist.ops:
        if op.f == "add":
            if not _number(op.invoke_value):
                raise HistoryError(hist.source, op.line, f"add needs a number, "
                                                         f"got {fmt(op.invoke_value)}")
            if op.type == "fail":
                continue
            events.append((op.invoke_pos, 0, op))
            if op.type == "ok":
                assert op.complete_pos is not None
                events.append((op.complete_pos, 1, op))
        elif op.f == "read":
            if op.type != "ok":
                continue
            if not _number(op.value):
                raise HistoryError(hist.source, op.complete_line,
                                   f"read must return a number, got {fmt(op.value)}")
            assert op.complete_pos is not None
            events.append((op.invoke_pos, 2, op))
            events.append((op.complete_pos, 3, op))
        else:
            raise HistoryError(hist.source, op.line, f"f {op.f!r} is not a counter operation "
                                                     "(expected add or read)")
    events.sort(key=lambda e: e[0])
    att_pos = att_neg = ok_pos = ok_neg = 0
    snap: dict[int, tuple[float, float]] = {}
    anomalies: list[dict[str, Any]] = []
    reads = 0
    for _, kind, op in events:
        if kind == 0:
            n = op.invoke_value
            if n > 0:
                att_pos += n
            else:
                att_neg += n
        elif kind == 1:
            n = op.invoke_value
            if n > 0:
                ok_pos += n
            else:
                ok_neg += n
        elif kind == 2:
            snap[op.id] = (ok_pos, ok_neg)
        else:
            reads += 1
            d_pos, d_neg = snap.pop(op.id)
            lower = init + d_pos + att_neg
            upper = init + d_neg + att_pos
            v = op.value
            if not lower <= v <= upper:
                expl = (f"read -> {fmt(v)} [{op_span(op)}] is outside [{fmt(lower)}, "
                        f"{fmt(upper)}]. At least {fmt(lower)}: the initial {fmt(init)}, "
                        f"plus {fmt(d_pos)} from acknowledged increments completed before "
                        f"the read began, plus {fmt(att_neg)} if every decrement attempted "
                        f"by its end happened. At most {fmt(upper)}: the initial, plus "
                        f"{fmt(att_pos)} if every increment attempted by its end happened, "
                        f"plus {fmt(d_neg)} from acknowledged decrements completed before "
                        "it began.")
                anomalies.append(anomaly("counter-read", [op], expl, bounds=[lower, upper],
                                         value=v))
    if anomalies:
        res = CheckResult(False, "counter", f"{len(anomalies)} of {reads} reads are out of "
                          "bounds", anomalies)
    elif reads == 0:
        res = CheckResult(None, "counter", "no acknowledged read to check")
    else:
        res = CheckResult(True, "counter", f"all {reads} reads are within their bounds")
    res.stats["counter"] = {"reads": reads, "bad_reads": len(anomalies)}
    return res
