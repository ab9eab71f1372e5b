"""The checker's results as the page shows them: each anomaly with its operations and,
for a non-linearizable key, the failing window to draw.

The window is found from what the checker records (``lab.checker._register``): the
anomaly's ``key`` and ``ops`` (by history index), and for a failed search the longest
linearizable ``prefix`` (indices, in order) and the ``blocked`` operation; a quick-check
anomaly (``stale-read`` and kin) lists the operation that needs a value first. The
bars are the operations on that key around the blocked one, taken from the history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.report.plots import WindowOp, window_plot
from lab.rundata import Operation, RunData

MAX_WINDOW_OPS = 16  # bars in one failing-window picture
# How many of the involved operations before the failure the window frames: the last
# source and the write that overwrote it, or the end of the linearizable prefix.
RECENT_INVOLVED = 2
RECENT_PREFIX = 3


@dataclass
class AnomalyView:
    """One anomaly ready for the template."""

    number: int
    type: str
    cause: str | None
    key: Any
    explanation: str
    ops: list[dict[str, Any]]
    extra: dict[str, str] = field(default_factory=dict)
    window_svg: str = ""
    window_note: str = ""


@dataclass
class CheckerView:
    """One checker's result: verdict, reason, statistics, per-key verdicts, anomalies."""

    name: str
    verdict: str
    reason: str
    model: str
    elapsed_s: str | None
    by_type: dict[str, Any]
    by_f: dict[str, dict[str, Any]]
    per_key: dict[str, str]
    anomalies: list[AnomalyView]


def checker_views(run: RunData) -> list[CheckerView]:
    """Every checker result in ``results.json`` (``checker``, or several in ``checkers``)."""
    results = run.results
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(results.get("checker"), dict):
        found.append((str(results["checker"].get("model", "checker")), results["checker"]))
    if isinstance(results.get("checkers"), dict):
        found += [(str(k), v) for k, v in results["checkers"].items() if isinstance(v, dict)]
    if not found:
        return []
    by_index = {op.index: op for op in run.ops}
    by_key: dict[Any, list[Operation]] = {}
    for op in run.ops:
        by_key.setdefault(op.key, []).append(op)
    return [_view(name, c, by_key, by_index) for name, c in found]


def _view(name: str, c: dict[str, Any], by_key: dict[Any, list[Operation]],
          by_index: dict[int, Operation]) -> CheckerView:
    stats: dict[str, Any] = c["stats"] if isinstance(c.get("stats"), dict) else {}
    anomalies = [a for a in c.get("anomalies", []) if isinstance(a, dict)]
    views = [_anomaly(k + 1, a, by_key, by_index) for k, a in enumerate(anomalies)]
    return CheckerView(name, str(c.get("verdict", "unknown")), str(c.get("reason", "")),
                       str(c.get("model", name)), _seconds(c.get("seconds", c.get("elapsed_s"))),
                       dict(stats.get("by_type") or {}), dict(stats.get("by_f") or {}),
                       {str(k): str(v) for k, v in (c.get("per_key") or {}).items()}, views)


def _anomaly(number: int, a: dict[str, Any], by_key: dict[Any, list[Operation]],
             by_index: dict[int, Operation]) -> AnomalyView:
    known = {"type", "cause", "key", "explanation", "ops", "prefix", "blocked", "state"}
    extra = {k: _fmt(v) for k, v in a.items() if k not in known}
    if "state" in a:
        extra["state after the prefix"] = _fmt(a["state"])
    rows = [o for o in a.get("ops", []) if isinstance(o, dict)]
    view = AnomalyView(number, str(a.get("type", "anomaly")), a.get("cause"), a.get("key"),
                       str(a.get("explanation", "")), rows, extra)
    key = a.get("key")
    bars = failing_window(a, by_key.get(key, []) if _hashable(key) else [], by_index)
    if bars:
        view.window_svg = window_plot(bars, a.get("key"))
        view.window_note = (f"{len(bars)} operations on key {a.get('key')} around the one "
                            "that cannot be placed")
    return view


def _seconds(v: Any) -> str | None:
    if not isinstance(v, int | float):
        return None
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


def _fmt(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _hashable(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float)


def failing_window(a: dict[str, Any], ops: Sequence[Operation],
                   by_index: dict[int, Operation]) -> list[WindowOp]:
    """The bars of a non-linearizable key's failing window ([] when there is none);
    ``ops`` are the operations on the anomaly's key, in invoke order."""
    if a.get("type") != "nonlinearizable" or "key" not in a:
        return []
    involved = [by_index[o["index"]] for o in a.get("ops", [])
                if isinstance(o, dict) and o.get("index") in by_index]
    focus = by_index.get(a["blocked"]) if isinstance(a.get("blocked"), int) else None
    focus = focus or (involved[0] if involved else None)
    if focus is None:
        return []
    recent = RECENT_PREFIX if a.get("prefix") else RECENT_INVOLVED
    others = sorted({id(o): o for o in involved if o is not focus}.values(),
                    key=lambda o: o.start)[-recent:]
    lo = min([focus.start, *(o.start for o in others)])
    hi = max([focus.end or focus.start, *((o.end or o.start) for o in others)])
    chosen = {id(o): o for o in [focus, *others]}
    for op in ops:
        if op.start > hi:
            break
        if id(op) not in chosen and _effective(op) and _overlaps(op, lo, hi):
            chosen[id(op)] = op
    picked = _nearest(list(chosen.values()), focus, {id(o) for o in [focus, *others]})
    order = {idx: k + 1 for k, idx in enumerate(a.get("prefix") or [])}
    involved_ids = {id(o) for o in involved}
    return [WindowOp(op, _role(op, focus, involved_ids, order), order.get(op.index))
            for op in sorted(picked, key=lambda o: o.start)]


def _effective(op: Operation) -> bool:
    """Whether the checker considers the operation (failed ones and unknown reads had
    no effect)."""
    return op.type != "fail" and not (op.f == "read" and op.type != "ok")


def _overlaps(op: Operation, lo: int, hi: int) -> bool:
    if op.start > hi:
        return False
    if op.end is None or op.type == "info":
        return op.start >= lo  # unknown outcome: only when it began inside the window
    return op.end >= lo


def _nearest(ops: list[Operation], focus: Operation, keep: set[int]) -> list[Operation]:
    """At most ``MAX_WINDOW_OPS`` operations: those to keep, then the closest to focus."""
    if len(ops) <= MAX_WINDOW_OPS:
        return ops
    must = [o for o in ops if id(o) in keep]
    rest = sorted((o for o in ops if id(o) not in keep),
                  key=lambda o: abs(o.start - focus.start))
    return must + rest[:max(0, MAX_WINDOW_OPS - len(must))]


def _role(op: Operation, focus: Operation, involved: set[int], order: dict[int, int]) -> str:
    if op is focus:
        return "blocked"
    if op.index in order:
        return "linearized"
    return "involved" if id(op) in involved else "other"
