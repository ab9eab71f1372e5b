"""The replicated, deterministic key-value state machine of raftkv.

Every replica applies the same committed commands in the same order and must reach the
same state and return the same results: nothing here reads a clock, draws a random
number, does I/O or lets dict iteration order leak into a result. Keys are strings,
values are JSON values (nested at most ``MAX_DEPTH`` deep). Stored values never alias
command objects or returned results: everything crossing the boundary is deep-copied.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 100
_IMAGE_DEPTH = 2 * MAX_DEPTH + 10  # stored values and cached results nest a little deeper
MAX_CLIENT_LEN = 128
MAX_TXN_OPS = 1000
_FIELDS = {  # the fields each op requires; "client" and "seq" are optional on all of them
    "write": {"op", "key", "value"},
    "cas": {"op", "key", "value"},
    "delete": {"op", "key"},
    "txn": {"op", "value"},
}
_OPS = tuple(_FIELDS)
_MICRO_OPS = ("r", "w", "append", "add", "cas")


class CommandError(ValueError):
    """A client command does not have a valid shape; the message says what was wrong."""


def _json_problem(v: Any, what: str, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``v`` is not a JSON value (at most ``max_depth`` deep), or None. Iterative."""
    stack: list[tuple[Any, int]] = [(v, 1)]
    while stack:
        x, depth = stack.pop()
        if depth > max_depth:
            return f"{what}: nested deeper than {max_depth}"
        if x is None or isinstance(x, (bool, int, str)):
            continue
        if isinstance(x, float):
            if not math.isfinite(x):
                return f"{what}: non-finite number {x!r}"
        elif isinstance(x, list):
            stack.extend((e, depth + 1) for e in x)
        elif isinstance(x, dict):
            for k, e in x.items():
                if not isinstance(k, str):
                    return f"{what}: object key {k!r:.40} is not a string"
                stack.append((e, depth + 1))
        else:
            return f"{what}: {type(x).__name__} is not a JSON value"
    return None


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike ``==``, ``true`` is not ``1`` (1 and 1.0 are the same number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return bool(a == b)


def _show(v: Any) -> str:
    """A short description of ``v`` for an error message (never a huge or deep repr)."""
    if isinstance(v, (list, dict)):
        return f"{type(v).__name__} of length {len(v)}"
    return f"{v!r:.60}"


def _check_json(v: Any, what: str) -> Any:
    problem = _json_problem(v, what)
    if problem is not None:
        raise CommandError(problem)
    return copy.deepcopy(v)


def _check_key(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise CommandError(f"{what}: key must be a string, got {type(v).__name__}")
    return v


def _check_micro(i: int, m: Any) -> list[Any]:
    what = f"txn micro-op {i}"
    if not isinstance(m, list) or len(m) != 3:
        raise CommandError(f"{what}: expected [f, key, value], got {_show(m)}")
    f, k, v = m
    if f not in _MICRO_OPS:
        raise CommandError(f"{what}: f must be one of {', '.join(_MICRO_OPS)}, got {_show(f)}")
    if f == "r" and v is not None:
        raise CommandError(f"{what}: a read carries null, got {_show(v)}")
    if f == "add" and (isinstance(v, bool) or not isinstance(v, int)):
        raise CommandError(f"{what}: add takes a whole number, got {_show(v)}")
    if f == "cas" and (not isinstance(v, list) or len(v) != 2):
        raise CommandError(f"{what}: cas takes [expected, new], got {_show(v)}")
    return [f, _check_key(k, what), _check_json(v, what)]


def validate_command(cmd: Any) -> dict[str, Any]:
    """Check a client command's shape and return a normalised, independent copy to propose."""
    if not isinstance(cmd, dict):
        raise CommandError(f"command must be a JSON object, got {type(cmd).__name__}")
    op = cmd.get("op")
    if op == "read":
        raise CommandError("op 'read' is not a log command: reads are served via ReadIndex")
    if op not in _OPS:
        raise CommandError(f"op must be one of {', '.join(_OPS)}, got {_show(op)}")
    allowed = _FIELDS[op] | {"client", "seq"}
    extra = sorted(str(k) for k in cmd if k not in allowed)
    if extra:
        raise CommandError(f"{op}: unknown field(s) {', '.join(extra)}")
    for field in sorted(_FIELDS[op]):
        if field not in cmd:
            raise CommandError(f"{op}: missing field {field!r}")
    out: dict[str, Any] = {"op": op}
    if "key" in cmd:
        out["key"] = _check_key(cmd["key"], op)
    value = cmd.get("value")
    if op == "write":
        out["value"] = _check_json(value, op)
    elif op == "cas":
        if not isinstance(value, list) or len(value) != 2:
            raise CommandError(f"cas: value must be [expected, new], got {_show(value)}")
        out["value"] = _check_json(value, op)
    elif op == "txn":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_TXN_OPS:
            raise CommandError(f"txn: value must be a list of 1..{MAX_TXN_OPS} micro-ops")
        out["value"] = [_check_micro(i, m) for i, m in enumerate(value)]
    if ("client" in cmd) != ("seq" in cmd):
        raise CommandError(f"{op}: 'client' and 'seq' must be given together")
    if "client" in cmd:
        client, seq = cmd["client"], cmd["seq"]
        if not isinstance(client, str) or len(client) > MAX_CLIENT_LEN:
            raise CommandError(f"{op}: client must be a string of at most {MAX_CLIENT_LEN} chars")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise CommandError(f"{op}: seq must be an integer >= 1, got {_show(seq)}")
        out["client"], out["seq"] = client, seq
    return out


@dataclass(frozen=True, slots=True)
class _Session:
    seq: int  # the client's last applied seq
    index: int  # the log index it was applied at
    result: dict[str, Any]  # a private copy of its result


class KVStore:
    """The state machine: data, client sessions (for exactly-once) and last_applied."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be an integer >= 1, got {max_sessions!r}")
        self._max_sessions = max_sessions
        self._data: dict[str, Any] = {}
        # Ordered by the log index of each client's last applied command (oldest first):
        # indexes strictly increase, so moving an updated session to the end keeps it sorted.
        self._sessions: dict[str, _Session] = {}
        self._last_applied = 0

    @property
    def last_applied(self) -> int:
        return self._last_applied

    def __len__(self) -> int:
        return len(self._data)

    def read(self, key: str) -> Any:
        return copy.deepcopy(self._data.get(key))

    def apply(self, index: int, cmd: Any) -> dict[str, Any]:
        """Apply the committed entry at log ``index``; never raises on a bad command."""
        assert isinstance(index, int) and index > self._last_applied, (
            f"apply: index {index!r} does not follow last_applied {self._last_applied}"
        )
        self._last_applied = index
        try:
            c = validate_command(cmd)
        except CommandError as e:
            return {"ok": False, "error": "bad-command", "reason": str(e)}
        client: str | None = c.get("client")
        if client is not None:
            s = self._sessions.get(client)
            if s is not None and c["seq"] == s.seq:
                return copy.deepcopy(s.result)
            if s is not None and c["seq"] < s.seq:
                return {"ok": False, "error": "stale-seq"}
        result = self._execute(c)
        if client is not None:
            self._sessions.pop(client, None)
            self._sessions[client] = _Session(c["seq"], index, copy.deepcopy(result))
            self._evict()
        return result

    def _evict(self) -> None:
        while len(self._sessions) > self._max_sessions:
            del self._sessions[next(iter(self._sessions))]

    def _execute(self, c: dict[str, Any]) -> dict[str, Any]:
        op = c["op"]
        if op == "write":
            self._data[c["key"]] = c["value"]
        elif op == "delete":
            self._data.pop(c["key"], None)
        elif op == "cas":
            expected, new = c["value"]
            current = self._data.get(c["key"])
            if not _json_equal(current, expected):
                return {"ok": False, "error": "cas-mismatch", "value": copy.deepcopy(current)}
            self._data[c["key"]] = new
        else:
            return self._txn(c["value"])
        return {"ok": True}

    def _txn(self, micro_ops: list[list[Any]]) -> dict[str, Any]:
        overlay: dict[str, Any] = {}  # keys written by this txn; committed only at the end
        out: list[list[Any]] = []
        for f, k, v in micro_ops:
            current = overlay[k] if k in overlay else self._data.get(k)
            if f == "r":
                out.append([f, k, copy.deepcopy(current)])
                continue
            if f == "w":
                overlay[k] = v
            elif f == "add":
                base = 0 if current is None else current
                if isinstance(base, bool) or not isinstance(base, int):
                    reason = f"add to key {k!r:.80}: value is {type(base).__name__}, not a number"
                    return {"ok": False, "error": "txn-aborted", "reason": reason}
                overlay[k] = base + v
                out.append([f, k, overlay[k]])
                continue
            elif f == "cas":
                if not _json_equal(current, v[0]):
                    reason = f"cas on key {k!r:.80}: expected {_show(v[0])}, found {_show(current)}"
                    return {"ok": False, "error": "txn-aborted", "reason": reason}
                overlay[k] = v[1]
            else:
                if current is None and k not in overlay and k not in self._data:
                    current = []
                if not isinstance(current, list):
                    reason = f"append to key {k!r:.80}: value is {type(current).__name__}, not list"
                    return {"ok": False, "error": "txn-aborted", "reason": reason}
                overlay[k] = [*current, v]  # a new list: an abort leaves the stored one intact
            out.append([f, k, copy.deepcopy(v)])
        self._data.update(overlay)
        return {"ok": True, "value": out}

    def snapshot(self) -> dict[str, Any]:
        """A JSON-compatible, independent image of the whole state."""
        return {
            "data": copy.deepcopy(self._data),
            "sessions": self._sessions_image(),
            "last_applied": self._last_applied,
        }

    def _sessions_image(self) -> dict[str, Any]:
        return {
            c: {"seq": s.seq, "index": s.index, "result": copy.deepcopy(s.result)}
            for c, s in self._sessions.items()
        }

    @classmethod
    def restore(cls, image: Any, max_sessions: int = 10_000) -> KVStore:
        """Rebuild a store from :meth:`snapshot` output; ValueError if the image is malformed."""
        if not isinstance(image, dict) or set(image) != {"data", "sessions", "last_applied"}:
            raise ValueError("snapshot image: expected an object {data, sessions, last_applied}")
        last, data, sessions = image["last_applied"], image["data"], image["sessions"]
        if isinstance(last, bool) or not isinstance(last, int) or last < 0:
            raise ValueError(f"snapshot image: last_applied must be an integer >= 0: {_show(last)}")
        if not isinstance(data, dict):
            raise ValueError("snapshot image: data must be an object")
        problem = _json_problem(data, "snapshot image: data", _IMAGE_DEPTH)
        if problem is None and not isinstance(sessions, dict):
            problem = "snapshot image: sessions must be an object"
        if problem is not None:
            raise ValueError(problem)
        store = cls(max_sessions)
        store._data = copy.deepcopy(data)
        store._last_applied = last
        restored = [cls._restore_session(c, s, last) for c, s in sessions.items()]
        if len({s.index for _, s in restored}) != len(restored):
            raise ValueError("snapshot image: two sessions share a log index")
        store._sessions = dict(sorted(restored, key=lambda cs: cs[1].index))
        store._evict()
        return store

    @staticmethod
    def _restore_session(client: Any, s: Any, last: int) -> tuple[str, _Session]:
        what = f"snapshot image: session {_show(client)}"
        if not isinstance(client, str) or len(client) > MAX_CLIENT_LEN:
            raise ValueError(f"{what}: client must be a string of at most {MAX_CLIENT_LEN} chars")
        if not isinstance(s, dict) or set(s) != {"seq", "index", "result"}:
            raise ValueError(f"{what}: expected an object {{seq, index, result}}")
        seq, index, result = s["seq"], s["index"], s["result"]
        for name, n, hi in (("seq", seq, math.inf), ("index", index, last)):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= hi:
                raise ValueError(f"{what}: bad {name} {_show(n)}")
        if not isinstance(result, dict) or _json_problem(result, what, _IMAGE_DEPTH) is not None:
            raise ValueError(f"{what}: result must be a JSON object")
        return client, _Session(seq, index, copy.deepcopy(result))

    def digest(self) -> str:
        """sha256 of the canonical JSON of data and sessions, to compare replicas."""
        image = {"data": self._data, "sessions": self._sessions_image()}
        text = json.dumps(image, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()
