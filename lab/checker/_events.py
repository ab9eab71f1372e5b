"""Decode a history into operations: the one place where history events are validated.

A history is a sequence of JSON objects (``docs/formats.md``, "history.jsonl"). Each
client operation is an ``invoke`` followed by one completion from the same process:
``ok``, ``fail`` or ``info``. An invoke with no completion by the end of the history is
treated as ``info`` (``Op.pending`` says so). Events of process ``"nemesis"`` are
counted and otherwise ignored. The order of the events is the real-time order; the
``index`` field is kept only to name operations in explanations (it defaults to the
event's position).

Anything that breaks these rules raises :class:`HistoryError`, whose text is one line,
``SOURCE:LINE: what was wrong``. Model-specific value shapes are checked by each model,
which raises the same error through :func:`bad_value`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from lab.jsonl import StoreError, iter_jsonl, paused_gc

EVENT_TYPES = frozenset({"invoke", "ok", "fail", "info"})
NEMESIS = "nemesis"


class HistoryError(StoreError):
    """A history that cannot be checked: malformed line, broken invoke/completion pairing,
    or a value of the wrong shape for the model. Blame lies with the input. A
    :class:`lab.store.StoreError`: ``str(e)`` is ``SOURCE:LINE: what was wrong``."""


@dataclass(slots=True)
class Op:
    """One client operation, invoke and completion merged.

    ``type`` is ``ok``, ``fail`` or ``info`` (a pending invoke is ``info`` with
    ``pending`` set). ``value`` is the completion's value for ``ok`` operations (what a
    read returned) and the invoke's value otherwise. ``invoke_pos``/``complete_pos`` are
    positions in the event order, the real-time order; ``complete_pos`` is ``None`` when
    the operation did not complete with ``ok``/``fail`` (its effect may come at any time).
    """

    id: int
    process: Any
    f: str
    key: Any
    value: Any
    invoke_value: Any
    type: str
    pending: bool
    invoke_index: int
    complete_index: int | None
    invoke_pos: int
    complete_pos: int | None
    invoke_time: int | None
    complete_time: int | None
    line: int
    complete_line: int | None

    def to_json(self) -> dict[str, Any]:
        """The operation as it appears in results: its history ``index`` first."""
        return {
            "index": self.invoke_index,
            "complete_index": self.complete_index,
            "process": self.process,
            "type": "pending" if self.pending else self.type,
            "f": self.f,
            "key": self.key,
            "value": self.value,
        }


@dataclass(slots=True)
class DecodedHistory:
    """A decoded history: the client operations in invoke order, plus counts."""

    source: str
    ops: list[Op]
    events: int
    nemesis_events: int
    processes: int
    warnings: list[str] = field(default_factory=list)


def value_key(v: Any) -> Hashable:
    """A hashable identity for a JSON value that keeps ``1``, ``true`` and ``"1"`` apart
    (Python would make ``1 == True``) and makes lists and objects usable as dict keys."""
    t = type(v)
    if t is int or t is str:  # the common cases, first
        return cast(Hashable, v)
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return ("json", json.dumps(v, sort_keys=True))


def bad_value(op: Op, message: str, source: str = "<events>") -> HistoryError:
    """The error for an operation whose value has the wrong shape for the model."""
    return HistoryError(source, op.line, f"{op.f} by process {op.process!r}: {message}")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float))


def parse_events(items: Iterable[tuple[int, Any]], source: str = "<events>") -> DecodedHistory:
    """Decode ``(line number, event)`` pairs into a :class:`DecodedHistory`.

    Raises :class:`HistoryError` naming the line of the first event that breaks the
    format or the invoke/completion pairing.
    """
    with paused_gc():  # a long history's operations: nothing cyclic, much to allocate
        return _parse_events(items, source)


_Fields = tuple[Any, str, str, Any, int, "int | None", Any]


def _fields(ev: Any, line: int, source: str, pos: int) -> _Fields | None:
    """An event's ``(process, type, f, key, index, time, value)``, every rule checked;
    ``None`` for a nemesis event."""
    if not isinstance(ev, dict):
        raise HistoryError(source, line, f"expected a JSON object, got {type(ev).__name__}")
    process = ev.get("process", ...)
    if process is ...:
        raise HistoryError(source, line, "missing field 'process'")
    if process == NEMESIS:
        return None
    if not isinstance(process, (int, str)) or isinstance(process, bool):
        raise HistoryError(source, line, f"'process' must be an integer or a string, "
                                         f"got {json.dumps(process)}")
    typ = ev.get("type")
    if not isinstance(typ, str) or typ not in EVENT_TYPES:
        raise HistoryError(source, line, "'type' must be one of invoke, ok, fail, info; "
                                         f"got {json.dumps(typ)}")
    f = ev.get("f")
    if not isinstance(f, str):
        raise HistoryError(source, line, f"'f' must be a string, got {json.dumps(f)}")
    key = ev.get("key")
    if not _scalar(key) or isinstance(key, bool):
        raise HistoryError(source, line, f"'key' must be null, a string or a number, "
                                         f"got {json.dumps(key)}")
    index = ev.get("index", pos)
    if not isinstance(index, int) or isinstance(index, bool):
        raise HistoryError(source, line, f"'index' must be an integer, got {json.dumps(index)}")
    t = ev.get("time")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool)
                          or not math.isfinite(t)):
        raise HistoryError(source, line, f"'time' must be a number or null, "
                                         f"got {json.dumps(t)}")
    return process, typ, f, key, index, None if t is None else int(t), ev.get("value")


def _parse_events(items: Iterable[tuple[int, Any]], source: str) -> DecodedHistory:
    ops: list[Op] = []
    open_ops: dict[Any, Op] = {}
    processes: set[Any] = set()
    n_events = 0
    nemesis = 0
    pos = -1
    process: Any
    typ: Any
    f: Any
    for line, ev in items:
        pos += 1
        n_events += 1
        # The common case -- an event as JSON decodes it, every field of the plainest
        # type -- checked inline; anything else by _fields, the rules in full.
        if type(ev) is dict:
            process = ev.get("process")
            typ = ev.get("type")
            f = ev.get("f")
            key = ev.get("key")
            index = ev.get("index", pos)
            time_ns = ev.get("time")
            tp = type(process)
            tk = type(key)
            fast = ((tp is int or tp is str) and process != NEMESIS
                    and (typ == "invoke" or typ == "ok" or typ == "info" or typ == "fail")
                    and type(f) is str and (key is None or tk is str or tk is int)
                    and type(index) is int and (time_ns is None or type(time_ns) is int))
        else:
            fast = False
        if fast:
            value = ev.get("value")
        else:
            fields = _fields(ev, line, source, pos)
            if fields is None:
                nemesis += 1
                continue
            process, typ, f, key, index, time_ns, value = fields
        if typ == "invoke":
            prev = open_ops.get(process)
            if prev is not None:
                raise HistoryError(source, line, f"process {process!r} invoked {f} while its "
                                                 f"{prev.f} from line {prev.line} is still open")
            op = Op(len(ops), process, f, key, value, value, "info", True, index, None, pos,
                    None, time_ns, None, line, None)
            ops.append(op)
            open_ops[process] = op
            processes.add(process)
        else:
            op_or_none = open_ops.pop(process, None)
            if op_or_none is None:
                raise HistoryError(source, line, f"{typ} of {f} by process {process!r} "
                                                 "has no open invoke")
            op = op_or_none
            if op.f != f:
                raise HistoryError(source, line, f"{typ} of {f} completes process "
                                                 f"{process!r}'s {op.f} from line {op.line}")
            op.type = typ
            op.pending = False
            op.complete_index = index
            op.complete_time = time_ns
            op.complete_line = line
            if typ == "ok":
                op.complete_pos = pos
                op.value = value
            elif typ == "fail":
                op.complete_pos = pos
    return DecodedHistory(source, ops, n_events, nemesis, len(processes))


def iter_json_lines(path: Path, warnings: list[str] | None = None
                    ) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, decoded object)`` for each non-blank line of ``path``.

    The run directory's one rule (:func:`lab.store.iter_jsonl`, strict): a malformed
    line raises :class:`HistoryError`, except a torn last line with no newline (a writer
    killed mid-line), which is skipped -- the history up to it is whole -- with a note
    appended to ``warnings``.
    """
    try:
        lines = iter_jsonl(path, strict=True)
    except StoreError as e:
        raise HistoryError(e.source, e.line, e.message) from None
    if lines.torn_note is not None and warnings is not None:
        warnings.append(lines.torn_note)
    yield from lines.records


def load_history(path: Path) -> DecodedHistory:
    """Read and decode a history file (see :func:`iter_json_lines`)."""
    warnings: list[str] = []
    hist = parse_events(iter_json_lines(path, warnings), str(path))
    hist.warnings.extend(warnings)
    return hist


def history_from_events(events: Iterable[Any], source: str = "<events>") -> DecodedHistory:
    """Decode in-memory events; the 'line' of an error is the event's position from 1."""
    return parse_events(enumerate(events, start=1), source)
