"""History statistics and the sanity rule that every model's verdict goes through.

A history where almost nothing succeeded proves nothing: a checker that says "valid"
about it would be a lab that always says valid. So a model's ``valid`` verdict becomes
``unknown`` when the history has fewer than ``min_ok`` acknowledged operations (option
``min_ok``, default 1). An ``invalid`` verdict stands: an anomaly is an anomaly.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lab.checker._events import DecodedHistory

DEFAULT_MIN_OK = 1


def history_stats(hist: DecodedHistory) -> dict[str, Any]:
    """Counts by completion type and by function, plus the history's size."""
    counts = Counter((op.f, "pending" if op.pending else op.type) for op in hist.ops)
    by_type: Counter[str] = Counter()
    by_f: dict[str, Counter[str]] = {}
    for (f, t), n in counts.items():
        by_type[t] += n
        by_f.setdefault(f, Counter())[t] += n
    keys = {op.key for op in hist.ops}
    keys.discard(None)
    types = ("ok", "fail", "info", "pending")
    return {
        "events": hist.events,
        "nemesis_events": hist.nemesis_events,
        "ops": len(hist.ops),
        "processes": hist.processes,
        "keys": len(keys),
        "by_type": {t: by_type[t] for t in types},
        "by_f": {f: {t: c[t] for t in types} for f, c in sorted(by_f.items())},
    }


def too_weak(stats: dict[str, Any], options: dict[str, Any]) -> str | None:
    """Why the history is too weak to call valid, or ``None`` if it is strong enough."""
    min_ok = int(options.get("min_ok", DEFAULT_MIN_OK))
    ok = int(stats["by_type"]["ok"])
    if ok < min_ok:
        return (f"the history has {ok} acknowledged (ok) operations, fewer than the "
                f"{min_ok} needed to mean anything")
    return None
