"""``check_history``: one history, one model, one :class:`CheckResult`.

This is what the run controller calls at the end of a run and what ``raftlab check``
calls per file. It decodes the events (raising :class:`HistoryError` on bad input),
dispatches to the model, attaches the history statistics to every result, and applies
the sanity rule (:mod:`lab.checker._stats`): a ``valid`` verdict on a history with too
few acknowledged operations becomes ``unknown``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from lab.checker._bank import check_bank
from lab.checker._counter import check_counter
from lab.checker._elle import check_list_append
from lab.checker._events import DecodedHistory, history_from_events
from lab.checker._models import MODELS, unknown_model
from lab.checker._register import check_register
from lab.checker._result import CheckResult
from lab.checker._set import check_set
from lab.checker._stats import history_stats, too_weak

__all__ = ["MODELS", "UnknownModelError", "check_history"]


class UnknownModelError(ValueError):
    """The model name is not one of :data:`MODELS`."""


@contextmanager
def _heap_set_aside() -> Iterator[None]:
    """For a check's duration, the objects alive when it starts (the history above all)
    are out of the cyclic collector's sight (``gc.freeze``): a search allocates a great
    deal, and each full collection walked the whole history again -- about 40 % of the
    CPU time of checking a 100 000-operation register history. What the check allocates
    is collected as usual; the objects set aside are handed back afterwards. Left alone
    when the caller has frozen objects itself or turned the collector off."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def check_history(events: Iterable[Any] | DecodedHistory, model: str, *, initial: Any = None,
                  time_limit: float | None = None,
                  options: dict[str, Any] | None = None) -> CheckResult:
    """Check a history (decoded events, e.g. from ``lab.history.read_history``, or a
    :class:`DecodedHistory`) against ``model``.

    ``initial`` is the model's starting value; ``None`` means the model's default
    (register: empty, i.e. null; kv-put-append: ``""``; counter: 0; bank: no default,
    see :mod:`lab.checker._bank`). ``time_limit`` (seconds) bounds the linearizability
    search of the register models; when it runs out the verdict is ``unknown``, never a
    guess (the other models run in polynomial time and ignore it). ``options`` are per
    model (``min_ok`` for all; ``all_keys``, ``slice_steps`` for registers; ``total``,
    ``accounts``, ``negative_ok`` for bank; ``linearizable``, ``stale_after`` for set;
    ``realtime``, ``process``, ``max_cycles`` for list-append).

    Raises :class:`HistoryError` for malformed input and :class:`UnknownModelError`.
    """
    if model not in MODELS:
        raise UnknownModelError(unknown_model(model))
    opts = dict(options or {})
    t0 = time.perf_counter()
    hist = events if isinstance(events, DecodedHistory) else history_from_events(events)
    with _heap_set_aside():
        res = _check_model(hist, model, initial, time_limit, opts)
    res.model = model
    stats = history_stats(hist)
    if hist.warnings:
        stats["warnings"] = hist.warnings
    res.stats = {**stats, **res.stats}
    weak = too_weak(stats, opts)
    if weak is not None and res.valid is True:
        res.valid = None
        res.reason = weak
    elif model == "stats":
        s = stats["by_type"]
        res.reason = (f"{stats['ops']} operations: {s['ok']} ok, {s['fail']} fail, "
                      f"{s['info']} info, {s['pending']} pending")
    res.elapsed = time.perf_counter() - t0
    return res


def _check_model(hist: DecodedHistory, model: str, initial: Any, time_limit: float | None,
                 opts: dict[str, Any]) -> CheckResult:
    if model in ("cas-register", "register", "kv-put-append"):
        return check_register(hist, model, initial, time_limit, opts)
    if model == "counter":
        return check_counter(hist, initial, opts)
    if model == "set":
        return check_set(hist, opts)
    if model == "bank":
        return check_bank(hist, initial, opts)
    if model == "list-append":
        return check_list_append(hist, opts)
    return CheckResult(True, "stats", "statistics only")
