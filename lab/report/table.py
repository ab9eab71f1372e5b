"""The history table: a compact column-wise encoding for the page's script, and the first
rows as plain HTML for readers without JavaScript.

Encoding (one JSON object; each list has one entry per operation, in invoke order):
``i`` invoke index and ``t`` invoke time (0.1 ms units) as differences from the previous
operation, ``l`` latency in 0.1 ms (-1: never completed), ``p`` process, ``c`` a code
into ``dict`` for the (function, key, type, node, error) of the operation, and ``v`` its
value: an integer as is, anything else as short JSON text. A 60 s run at 2 000
operations/s fits in about 2.5 MB; past ``BUDGET`` bytes values are shortened and then
only the first operations (and those of the anomalies) are carried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lab.rundata import Operation

BUDGET = 3_200_000  # bytes of table data, leaving room under 5 MB for the rest
STATIC_ROWS = 200
VALUE_CHARS = 40
MIN_VALUE_CHARS = 12
TENTH_MS = 100_000  # ns


def value_text(op: Operation, limit: int = VALUE_CHARS) -> str:
    """The operation's value as JSON, shortened; empty for reads that returned nothing."""
    v = op.value
    if op.f == "read" and op.type != "ok":
        return ""
    s = str(v) if type(v) is int else json.dumps(v, separators=(",", ":"), default=str,
                                                  ensure_ascii=False)
    return s if len(s) <= limit else s[:limit - 1] + "\u2026"


def table_data(ops: Sequence[Operation], keep: set[int]) -> tuple[str, int]:
    """The table data (see :func:`encode`) within ``BUDGET``, and how many operations it
    carries. ``keep`` are the indices of operations always carried (the anomalies')."""
    limit = max(MIN_VALUE_CHARS, min(VALUE_CHARS, BUDGET // (6 * max(len(ops), 1))))
    carried = list(ops)
    while True:
        text = encode(carried, limit)
        if len(text) <= BUDGET or len(carried) <= STATIC_ROWS:
            return text, len(carried)
        cap = max(STATIC_ROWS, int(len(carried) * BUDGET / len(text) * 0.95))
        carried = [*ops[:cap], *(op for op in ops[cap:] if op.index in keep)]


def encode(ops: Sequence[Operation], limit: int = VALUE_CHARS) -> str:
    """The table data as JSON text, safe to put inside a ``<script>`` element."""
    codes: dict[tuple[Any, ...], int] = {}
    cols: dict[str, list[Any]] = {c: [] for c in "itlpcv"}
    last_i = last_t = 0
    for op in ops:
        t = op.start // TENTH_MS
        cols["i"].append(op.index - last_i)
        cols["t"].append(t - last_t)
        last_i, last_t = op.index, t
        cols["l"].append(-1 if op.end is None else (op.end - op.start) // TENTH_MS)
        cols["p"].append(op.process if isinstance(op.process, int | str) else str(op.process))
        # Keys by type too, so that 1, True and "1" stay apart.
        combo = (op.f, type(op.key), _hashable(op.key), op.type, op.node, op.error)
        cols["c"].append(codes.setdefault(combo, len(codes)))
        text = value_text(op, limit)
        cols["v"].append(op.value if type(op.value) is int and text else text)
    table = [[c[0], _plain(c[2]), c[3], c[4], c[5]] for c in codes]
    data = {**cols, "dict": table}
    text = json.dumps(data, separators=(",", ":"), default=str, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _hashable(v: Any) -> Any:
    return v if isinstance(v, str | int | float | None) else ("json", json.dumps(v))


def _plain(v: Any) -> Any:
    return json.loads(v[1]) if isinstance(v, tuple) else v


def static_rows(ops: Sequence[Operation], n: int = STATIC_ROWS) -> list[dict[str, Any]]:
    """The first ``n`` operations as table rows (what the page shows without script)."""
    return [row(op) for op in ops[:n]]


def row(op: Operation) -> dict[str, Any]:
    """One operation as the cells of a table row."""
    return {"index": op.index, "process": op.process, "f": op.f, "key": op.key,
            "type": op.type, "time": f"{op.start / 1e9:.3f}",
            "latency": "" if op.end is None else f"{(op.end - op.start) / 1e6:.1f}",
            "value": value_text(op), "node": op.node or "", "error": op.error or ""}
