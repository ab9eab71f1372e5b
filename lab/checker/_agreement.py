"""Replica agreement: do the members' applied logs and states match, by their own digests?

A client history cannot see everything: two replicas that applied different commands at
one index may never serve a client a value that shows it. A system that logs a digest of
its applied log (a hash chain over index, term and command) and of its state machine at
agreed indexes lets the lab compare the members directly (``SystemSpec.digests``; raftkv's
``digest`` events, ``nodes/PROTOCOL.md``). :func:`replica_agreement` compares every index
that two members logged and names the first where their log digests differ, and
separately the first where their state digests differ.

It never passes silently: no digests at all (the system offers none) is ``not
available``; digests but no index that two members both logged is ``no evidence``; and
members that logged no digest at all are listed as such.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

AGREE, DIVERGE, NOT_AVAILABLE, NO_EVIDENCE = "agree", "diverge", "not available", "no evidence"


def _entry(d: Any) -> dict[str, Any]:
    e = {"member": d.member, "index": d.index, "term": d.term, "log": d.log,
         "state": d.state, "line": d.line}
    if _source(d) != "its log":
        e["source"] = _source(d)
    if getattr(d, "scope", None) is not None:
        e["scope"] = d.scope
    return e


def _source(d: Any) -> str:
    return str(getattr(d, "source", "its log"))


def _where(d: Any, first: bool) -> str:
    """Where a digest was recorded, for an explanation."""
    src = _source(d)
    if src == "its log":
        return f"its log, line {d.line}" if first else f"line {d.line}"
    return f"{src}, line {d.line}"


def _first_mismatch(ds: list[Any], field: str) -> tuple[Any, Any] | None:
    """The first two digests at one index whose ``field`` is known and differs."""
    known = [d for d in ds if getattr(d, field) is not None]
    for d in known[1:]:
        if getattr(d, field) != getattr(known[0], field):
            return known[0], d
    return None


def replica_agreement(digests: Iterable[Any] | None, members: Sequence[str] = ()
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Compare the digests members logged (:class:`lab.systems.types.Digest`: ``member``,
    ``index``, ``term``, ``log``, ``state``, ``line``; None: the system offers none).

    Returns ``(agreement, anomalies)``: ``agreement`` is the summary recorded in
    ``results.json`` (``status``: ``agree``, ``diverge``, ``not available`` or ``no
    evidence``; ``members`` compared; ``indexes_compared``; ``highest_common_index``;
    ``first_divergence`` and ``first_state_divergence``, each None or ``{index, members,
    entries}``; ``silent``: the ``members`` that logged no digest at all); ``anomalies``
    has a ``replica-divergence`` for the first log divergence and a
    ``replica-state-divergence`` for the first state divergence not explained by an
    earlier or equal log divergence. Only indexes that two members logged are compared;
    there, two lives of one member (a restart) that logged different digests count as a
    divergence too."""
    agreement: dict[str, Any] = {
        "status": NOT_AVAILABLE, "members": [], "indexes_compared": 0,
        "highest_common_index": None, "first_divergence": None,
        "first_state_divergence": None, "silent": [],
    }
    if digests is None:
        return agreement, []
    by_index: dict[tuple[int, Any], list[Any]] = defaultdict(list)
    logged: set[str] = set()
    for d in digests:
        # Only digests of one scope compare (etcd: hashes after one compaction revision).
        by_index[(d.index, getattr(d, "scope", None))].append(d)
        logged.add(d.member)
    agreement["silent"] = sorted(set(members) - logged)
    compared: set[str] = set()
    indexes = 0
    log_div: tuple[int, Any, Any] | None = None
    state_div: tuple[int, Any, Any] | None = None
    for key in sorted(by_index, key=lambda k: (k[0], repr(k[1]))):
        index, ds = key[0], by_index[key]
        if len({d.member for d in ds}) < 2:
            continue
        indexes += 1
        compared.update(d.member for d in ds)
        agreement["highest_common_index"] = index
        if log_div is None and (m := _first_mismatch(ds, "log")) is not None:
            log_div = (index, *m)
        if state_div is None and (m := _first_mismatch(ds, "state")) is not None:
            state_div = (index, *m)
    agreement["members"] = sorted(compared)
    agreement["indexes_compared"] = indexes
    if indexes == 0:
        agreement["status"] = NO_EVIDENCE
        return agreement, []
    anomalies = []
    if log_div is not None:
        index, a, b = log_div
        agreement["first_divergence"] = _divergence(index, a, b)
        anomalies.append(_anomaly("replica-divergence", index, a, b, (
            f"{a.member} ({_where(a, True)}) and {b.member} ({_where(b, False)}) logged "
            f"different digests of their applied logs at index {index}: the hash chains "
            "over every entry applied up to there differ, so the members applied "
            "different commands (or terms) at some index up to this one, which Raft's "
            "state machine safety forbids.")))
    if state_div is not None and (log_div is None or state_div[0] < log_div[0]):
        index, a, b = state_div
        agreement["first_state_divergence"] = _divergence(index, a, b)
        anomalies.append(_anomaly("replica-state-divergence", index, a, b, (
            f"{a.member} ({_where(a, True)}) and {b.member} ({_where(b, False)}) had "
            f"different digests of their state machines at index {index}"
            + (", though their applied logs agree there" if _known_equal(a, b) else "")
            + ": replicas that applied the same entries must hold the same state.")))
    elif state_div is not None:
        agreement["first_state_divergence"] = _divergence(*state_div)
    agreement["status"] = DIVERGE if anomalies else AGREE
    return agreement, anomalies


def _known_equal(a: Any, b: Any) -> bool:
    return a.log is not None and a.log == b.log


def _divergence(index: int, a: Any, b: Any) -> dict[str, Any]:
    return {"index": index, "members": [a.member, b.member], "entries": [_entry(a), _entry(b)]}


def _anomaly(kind: str, index: int, a: Any, b: Any, explanation: str) -> dict[str, Any]:
    return {"type": kind, "index": index, "members": [a.member, b.member],
            "entries": [_entry(a), _entry(b)], "ops": [], "explanation": explanation}
