"""Data that crosses a boundary of the Raft core: log entries, hard state, snapshots and
peer messages, plus their one and only decoder.

Everything here is plain, immutable data. ``encode_*`` turns it into JSON-compatible
values; ``decode_*`` is the single place where bytes from the network or the disk are
checked and turned back into typed objects. A decoder raises :class:`DecodeError` (never
``KeyError``/``TypeError``) so callers can log and drop bad input in one ``except``.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from typing import Any


class DecodeError(ValueError):
    """Input from a peer or from disk did not have the expected shape."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is an opaque JSON value (a client command), or ``None``
    for the no-op entry a new leader appends to commit its term."""

    term: int
    index: int
    data: Any = None


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to and including ``index``."""

    index: int
    term: int
    data: Any
    peers: tuple[str, ...] = ()


class MsgType(enum.Enum):
    VOTE = "vote"
    VOTE_RESP = "vote_resp"
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESP = "pre_vote_resp"
    APP = "app"
    APP_RESP = "app_resp"
    HEARTBEAT = "hb"
    HEARTBEAT_RESP = "hb_resp"
    SNAP = "snap"
    # A follower tells the leader it failed to apply a snapshot and wants it again.
    SNAP_STATUS = "snap_status"


RESPONSE_TYPES = frozenset(
    {MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP, MsgType.APP_RESP, MsgType.HEARTBEAT_RESP}
)


@dataclass(frozen=True, slots=True)
class Message:
    """A one-way message between two Raft nodes.

    Field meaning depends on the type (etcd-style):
      * VOTE / PRE_VOTE: ``index``/``log_term`` = candidate's last log index/term.
      * APP: ``index``/``log_term`` = the entry before ``entries``; ``commit`` = leader's.
      * APP_RESP: ``index`` = highest index known to match (accept), or the rejected
        probe index (reject) with ``hint_index``/``hint_term`` for fast back-off.
      * HEARTBEAT(_RESP): ``context`` carries the ReadIndex round being confirmed.
    """

    type: MsgType
    src: str
    dst: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    context: int = 0
    snapshot: Snapshot | None = None


# --- encoding -------------------------------------------------------------------------


def encode_entry(e: Entry) -> list[Any]:
    return [e.term, e.index, e.data]


def encode_snapshot(s: Snapshot) -> dict[str, Any]:
    return {"index": s.index, "term": s.term, "data": s.data, "peers": list(s.peers)}


def encode_hard_state(h: HardState) -> dict[str, Any]:
    return {"term": h.term, "vote": h.vote, "commit": h.commit}


def encode_message(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"t": m.type.value, "from": m.src, "to": m.dst, "term": m.term}
    if m.log_term:
        d["lt"] = m.log_term
    if m.index:
        d["i"] = m.index
    if m.entries:
        d["e"] = [encode_entry(e) for e in m.entries]
    if m.commit:
        d["c"] = m.commit
    if m.reject:
        d["rj"] = True
    if m.hint_index:
        d["hi"] = m.hint_index
    if m.hint_term:
        d["ht"] = m.hint_term
    if m.context:
        d["ctx"] = m.context
    if m.snapshot is not None:
        d["snap"] = encode_snapshot(m.snapshot)
    return d


# --- decoding (the one place untrusted input is checked) -----------------------------


def _int(d: dict[str, Any], key: str, default: int | None = None) -> int:
    v = d.get(key, default)
    if type(v) is not int or v < 0:
        raise DecodeError(f"field {key!r}: expected a non-negative integer, got {v!r}")
    return v


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise DecodeError(f"field {key!r}: expected a non-empty string, got {v!r}")
    return v


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise DecodeError(f"{what}: expected an object, got {type(v).__name__}")
    return v


def decode_entry(v: Any) -> Entry:
    if not isinstance(v, list) or len(v) != 3:
        raise DecodeError(f"entry: expected [term, index, data], got {v!r:.80}")
    term, index, data = v
    if type(term) is not int or type(index) is not int or term < 0 or index < 1:
        raise DecodeError(f"entry: bad term/index {term!r}/{index!r}")
    return Entry(term, index, data)


def decode_snapshot(v: Any) -> Snapshot:
    d = _obj(v, "snapshot")
    peers = d.get("peers", [])
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise DecodeError("snapshot: 'peers' must be a list of strings")
    return Snapshot(_int(d, "index"), _int(d, "term"), d.get("data"), tuple(peers))


def decode_hard_state(v: Any) -> HardState:
    d = _obj(v, "hard state")
    vote = d.get("vote")
    if vote is not None and not isinstance(vote, str):
        raise DecodeError("hard state: 'vote' must be a string or null")
    return HardState(_int(d, "term", 0), vote, _int(d, "commit", 0))


_TYPES = {t.value: t for t in MsgType}


def decode_message(v: Any) -> Message:
    d = _obj(v, "message")
    raw_type = d.get("t")
    t = _TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if t is None:
        raise DecodeError(f"message: unknown type {d.get('t')!r}")
    raw_entries = d.get("e", [])
    if not isinstance(raw_entries, list):
        raise DecodeError("message: 'e' must be a list of entries")
    entries = tuple(decode_entry(e) for e in raw_entries)
    for a, b in itertools.pairwise(entries):
        if b.index != a.index + 1:
            raise DecodeError("message: entries are not consecutive")
    rj = d.get("rj", False)
    if not isinstance(rj, bool):
        raise DecodeError("message: 'rj' must be a boolean")
    snap = d.get("snap")
    return Message(
        type=t,
        src=_str(d, "from"),
        dst=_str(d, "to"),
        term=_int(d, "term"),
        log_term=_int(d, "lt", 0),
        index=_int(d, "i", 0),
        entries=entries,
        commit=_int(d, "c", 0),
        reject=rj,
        hint_index=_int(d, "hi", 0),
        hint_term=_int(d, "ht", 0),
        context=_int(d, "ctx", 0),
        snapshot=None if snap is None else decode_snapshot(snap),
    )
