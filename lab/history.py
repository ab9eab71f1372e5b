"""The history of a run: every client operation and every nemesis action, as JSON lines.

Jepsen's semantics. A client operation is an ``invoke`` event followed by exactly one
completion from the same process: ``ok`` (it happened), ``fail`` (it certainly did not
happen) or ``info`` (unknown: it may have happened at any time after its invoke). A
process whose operation ended in ``info`` never invokes again; the client continues under
a fresh process id. Nemesis actions are events of process ``"nemesis"``.

Fields: ``index`` (position from 0), ``time`` (ns since the run started, monotonic),
``process``, ``type``, ``f``, ``key``, ``value``, and optionally ``node``, ``error``.

The file is written as events happen, flushed every few milliseconds and fsynced at
least every second (:meth:`History.sync_every`), so a controller killed at any moment
leaves a history that can still be checked (an invoke without completion reads as
``info``), short of at most the last ``FLUSH_EVERY`` seconds of events. One write per
event would cost a system call per event on the lab's hot path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO, Any

import trio

from lab.fastjson import dumps
from lab.jsonl import iter_jsonl

EVENT_TYPES = ("invoke", "ok", "fail", "info")
FLUSH_EVERY = 0.02  # seconds


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[bytes] = open(path, "ab")  # noqa: SIM115 (closed in close)
        self._t0 = time.monotonic_ns()
        self.index = 0
        self.counts = {t: 0 for t in EVENT_TYPES}  # client events only
        self.nemesis_events = 0
        self.open_ops: dict[Any, dict[str, Any]] = {}  # process -> its invoke event
        self._dirty = False  # written since the last fsync
        self._unflushed = False  # written since the last flush

    def now(self) -> int:
        """Nanoseconds since the run started."""
        return time.monotonic_ns() - self._t0

    def append(self, process: Any, type: str, f: str, key: Any = None, value: Any = None,
               **extra: Any) -> dict[str, Any]:
        """Record one event and return it. Enforces the invoke/complete pairing."""
        if process == "nemesis":
            if type not in EVENT_TYPES:
                raise ValueError(f"bad event type {type!r}")
            self.nemesis_events += 1
        elif type == "invoke":
            if process in self.open_ops:
                raise ValueError(f"process {process} invoked twice without completing")
        elif type not in EVENT_TYPES:
            raise ValueError(f"bad event type {type!r}")
        elif self.open_ops.pop(process, None) is None:
            raise ValueError(f"process {process} completed {f} without an invoke")
        ev: dict[str, Any] = {"index": self.index, "time": time.monotonic_ns() - self._t0,
                              "process": process, "type": type, "f": f, "key": key,
                              "value": value}
        for k, v in extra.items():
            if v is not None:
                ev[k] = v
        self.index += 1
        if process != "nemesis":
            self.counts[type] += 1
            if type == "invoke":
                self.open_ops[process] = ev
        self._f.write(dumps(ev) + b"\n")
        self._unflushed = self._dirty = True
        return ev

    def flush(self) -> None:
        if self._unflushed and not self._f.closed:
            self._unflushed = False
            self._f.flush()

    def sync(self) -> None:
        self.flush()
        if self._dirty and not self._f.closed:
            self._dirty = False
            os.fsync(self._f.fileno())

    async def _sync_in_thread(self) -> None:
        # Flush here, in trio's thread: the file object is not shared with the worker,
        # only its descriptor (events appended meanwhile wait for the next round).
        self.flush()
        if self._dirty and not self._f.closed:
            self._dirty = False
            await trio.to_thread.run_sync(os.fsync, self._f.fileno())

    async def sync_every(self, seconds: float = 1.0, flush: float = FLUSH_EVERY) -> None:
        """Run as a task: flush the file every ``flush`` seconds and fsync it at least
        every ``seconds``."""
        next_sync = trio.current_time() + seconds
        while True:
            await trio.sleep(flush)
            self.flush()
            if trio.current_time() >= next_sync:
                await self._sync_in_thread()
                next_sync = trio.current_time() + seconds

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


def read_history(path: Path) -> list[dict[str, Any]]:
    """Read a history file's events: :func:`lab.store.iter_jsonl`, strict. A torn last
    line (a killed controller) is ignored; any other bad line raises
    :class:`lab.store.StoreError` naming the file and line. Lines are decoded one by one
    from bytes when needed: a tear can split a multi-byte UTF-8 character, which must
    cost that line only, not the file."""
    return iter_jsonl(path, strict=True).objects
