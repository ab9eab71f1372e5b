"""The ``bank`` model: ``transfer {"from", "to", "amount"}``; ``read`` -> ``{account: balance}``.

Money is neither created nor destroyed: every ``ok`` read must show balances that sum to
the total, and (unless ``negative_ok``) none below zero; when the account list is known,
a read must show exactly those accounts. The configuration comes from the options
``{"total": N, "accounts": [...], "negative_ok": false}`` or from ``initial``: a number is
the total; an object with ``total``/``accounts``/``negative_ok`` is the options; any
other object maps accounts to their starting balances (total = their sum). Without a
total the verdict is unknown: guessing it from the first read would hide a bug there.
Account names compare as strings (JSON object keys are strings).
"""

from __future__ import annotations

from typing import Any

from lab.checker._events import DecodedHistory, HistoryError
from lab.checker._result import CheckResult, anomaly, fmt, op_span

_OPTION_KEYS = {"total", "accounts", "negative_ok"}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def bank_config(initial: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Merge ``initial`` and ``options`` into ``{"total", "accounts", "negative_ok"}``."""
    cfg: dict[str, Any] = {"total": None, "accounts": None, "negative_ok": False}
    if _number(initial):
        cfg["total"] = initial
    elif isinstance(initial, dict) and initial and set(initial) <= _OPTION_KEYS:
        cfg.update(initial)
    elif isinstance(initial, dict) and initial:
        if not all(_number(v) for v in initial.values()):
            raise ValueError(f"bank initial balances must be numbers, got {fmt(initial)}")
        cfg["total"] = sum(initial.values())
        cfg["accounts"] = list(initial)
    elif initial is not None:
        raise ValueError(f"bank initial must be a total, balances or options, got {fmt(initial)}")
    cfg.update({k: v for k, v in options.items() if k in _OPTION_KEYS})
    if cfg["total"] is not None and not _number(cfg["total"]):
        raise ValueError(f"bank total must be a number, got {fmt(cfg['total'])}")
    if cfg["accounts"] is not None:
        cfg["accounts"] = sorted(str(a) for a in cfg["accounts"])
    return cfg


def check_bank(hist: DecodedHistory, initial: Any, options: dict[str, Any]) -> CheckResult:
    try:
        cfg = bank_config(initial, options)
    except ValueError as e:
        raise HistoryError(hist.source, None, str(e)) from None
    reads = []
    for op in hist.ops:
        if op.f == "transfer":
            v = op.invoke_value
            if not (isinstance(v, dict) and {"from", "to", "amount"} <= set(v)):
                raise HistoryError(hist.source, op.line, "transfer value must be "
                                   f'{{"from": a, "to": b, "amount": n}}, got {fmt(v)}')
        elif op.f == "read":
            if op.type != "ok":
                continue
            if not isinstance(op.value, dict) or not all(
                    v is None or _number(v) for v in op.value.values()):
                raise HistoryError(hist.source, op.complete_line, "read must return "
                                   f"{{account: balance}}, got {fmt(op.value)}")
            reads.append(op)
        else:
            raise HistoryError(hist.source, op.line, f"f {op.f!r} is not a bank operation "
                                                     "(expected transfer or read)")
    stats: dict[str, Any] = {"reads": len(reads), **cfg}
    if cfg["total"] is None:
        res = CheckResult(None, "bank", "the bank's total is unknown: give it with --initial "
                                        '(a number, or balances) or options {"total": N}')
        res.stats["bank"] = stats
        return res
    total = cfg["total"]
    anomalies: list[dict[str, Any]] = []
    for op in reads:
        bal: dict[str, Any] = {str(k): v for k, v in op.value.items()}
        where = f"read [{op_span(op)}] = {fmt(op.value)}"
        if cfg["accounts"] is not None and sorted(bal) != cfg["accounts"]:
            missing = sorted(set(cfg["accounts"]) - set(bal))
            extra = sorted(set(bal) - set(cfg["accounts"]))
            anomalies.append(anomaly(
                "wrong-accounts", [op],
                f"{where} shows the wrong accounts: missing {fmt(missing)}, unexpected "
                f"{fmt(extra)}.", missing=missing, unexpected=extra))
        nils = sorted(a for a, v in bal.items() if v is None)
        if nils:
            anomalies.append(anomaly("nil-balance", [op], f"{where} has no balance for "
                                     f"{fmt(nils)}.", accounts=nils))
        s = sum(v for v in bal.values() if v is not None)
        if s != total:
            anomalies.append(anomaly(
                "wrong-total", [op], f"{where} sums to {fmt(s)}, but the bank holds "
                f"{fmt(total)}: money was {'created' if s > total else 'destroyed'}.",
                total=s, expected=total))
        neg = sorted(a for a, v in bal.items() if v is not None and v < 0)
        if neg and not cfg["negative_ok"]:
            anomalies.append(anomaly(
                "negative-balance", [op], f"{where} shows negative balances for {fmt(neg)}.",
                accounts=neg))
    stats["bad_reads"] = len({a["ops"][0]["index"] for a in anomalies})
    if anomalies:
        res = CheckResult(False, "bank", f"{stats['bad_reads']} of {len(reads)} reads break "
                                         "the bank's invariants", anomalies)
    elif not reads:
        res = CheckResult(None, "bank", "no acknowledged read to check")
    else:
        res = CheckResult(True, "bank", f"all {len(reads)} reads sum to {fmt(total)} with no "
                                        "negative balance" if not cfg["negative_ok"]
                          else f"all {len(reads)} reads sum to {fmt(total)}")
    res.stats["bank"] = stats
    return res
