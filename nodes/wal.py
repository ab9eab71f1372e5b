"""Write-ahead log and snapshot store of one raftkv node.

The Raft core does no I/O; the node's driver persists hard state, log entries and
snapshots through :class:`WAL` and gets them back from :meth:`WAL.open` as a
:class:`Recovered`.

On-disk format (all files live in one directory)
------------------------------------------------
* Record framing, shared by every file: 4-byte big-endian payload length, 4-byte
  big-endian ``zlib.crc32`` of the payload, then the payload: compact UTF-8 JSON
  (``json.dumps(..., separators=(",", ":"))``). Payloads are non-empty and at most
  ``MAX_PAYLOAD`` (256 MiB) bytes; a longer length field is corruption.
* Segments ``wal-<16-digit seq>.log``, seq numbers consecutive. Each record is a JSON
  object with one or more of these keys, applied in this order:
  ``"s": [index, term]`` snapshot marker (first record of the segment a snapshot starts;
  Raft's rule: keep the entries after ``index`` if the log holds ``index`` with ``term``,
  else drop the whole log), ``"h": encode_hard_state(hs)`` (last one wins) and
  ``"e": [encode_entry(e), ...]`` (consecutive; if the first index is <= the last logged
  index the log is truncated from there and replaced: a Raft conflict).
  ``save(hs, entries)`` writes ONE record holding both keys, so they land atomically.
* Snapshots ``snap-<16-digit index>-<16-digit term>.snap``: exactly one record whose
  payload is ``encode_snapshot(snap)``. Written as ``<name>.tmp``, fsynced, renamed,
  directory fsynced. Only the newest snapshot is kept.

Writing: ``save`` encodes into an in-memory buffer; ``sync`` does one ``write`` and one
``fsync`` (group commit). After :meth:`WAL.open` new records are appended to the last
existing segment (after any torn tail has been cut off); a new segment is started when a
batch would push the current one past ``segment_bytes`` (a segment is fsynced before the
next is created, so only the last one can end in a torn write) and by ``save_snapshot``.

``save_snapshot`` order: snapshot file durable, then the fresh segment (marker, hard state,
entries after the snapshot) durable, then older snapshots deleted, then older segments,
oldest first. A crash at any point leaves a directory that recovers to either the old or
the new state: the marker replays Raft's snapshot rule over any leftover old segments.

Recovery: see :meth:`WAL.open`. A torn tail of the last segment is cut off and logged;
any other damage raises :class:`WALCorruption` instead of silently dropping data.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.crashpoints import (
    SNAPSHOT_BEFORE_TRUNCATE,
    SNAPSHOT_INSTALL_BETWEEN,
    WAL_AFTER_WRITE,
    WAL_BEFORE_WRITE,
    CrashPoints,
)
from nodes.types import (
    DecodeError,
    Entry,
    HardState,
    Snapshot,
    decode_entry,
    decode_hard_state,
    decode_snapshot,
    encode_entry,
    encode_hard_state,
    encode_snapshot,
)

MAX_PAYLOAD = 256 * 1024 * 1024
_HEADER = struct.Struct(">II")
_SEG_RE = re.compile(r"wal-(\d{16})\.log")
_SNAP_RE = re.compile(r"snap-(\d{16})-(\d{16})\.snap")

LogFn = Callable[[str, dict[str, Any]], None]


def _no_log(event: str, fields: dict[str, Any]) -> None:
    """Default ``log`` callback: drop the event."""


class WALError(Exception):
    """Base class of the errors raised by this module."""


class WALCorruption(WALError):
    """A file holds a bad record that is not a torn write: the node must not start."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass
class Recovered:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)


def _frame(obj: Any) -> bytes:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _read_frame(buf: bytes, off: int) -> tuple[bytes | None, int, str, bool]:
    """Parse the record at ``off``: ``(payload, end, "", False)`` if good, else
    ``(None, off, reason, torn)`` where ``torn`` means it looks like a torn write."""
    n = len(buf)
    if n - off < _HEADER.size:
        reason, torn = "truncated header", True
    else:
        length, crc = _HEADER.unpack_from(buf, off)
        end = off + _HEADER.size + length
        if length == 0:
            reason, torn = "empty record", False
        elif length > MAX_PAYLOAD:
            reason, torn = f"record length {length} exceeds {MAX_PAYLOAD}", False
        elif end > n:
            reason, torn = f"record of {length} bytes runs past end of file", True
        elif zlib.crc32(memoryview(buf)[off + _HEADER.size : end]) != crc:
            # A bad record followed only by zeros is the tail of an interrupted write.
            reason, torn = "checksum mismatch", buf.count(0, end) == n - end
        else:
            return buf[off + _HEADER.size : end], end, "", False
    if not torn and buf.count(0, off) == n - off:
        reason, torn = "zero-filled tail", True
    return None, off, reason, torn


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DecodeError(f"bad JSON: {e}") from e


def _decode_entries(v: Any) -> list[Entry]:
    if not isinstance(v, list) or not v:
        raise DecodeError("'e' must be a non-empty list of entries")
    entries = [decode_entry(x) for x in v]
    _check_consecutive(entries, DecodeError)
    return entries


def _check_consecutive(entries: Sequence[Entry], exc: type[Exception]) -> None:
    for a, b in itertools.pairwise(entries):
        if b.index != a.index + 1:
            raise exc(f"entries are not consecutive: {a.index} then {b.index}")


def _compact(log: list[Entry], index: int, term: int) -> list[Entry]:
    """Raft's snapshot rule: keep the entries after ``index`` only if the log holds
    ``index`` with ``term`` (or starts after it); otherwise the log restarts empty."""
    if log and log[0].index > index:
        return log
    if log and log[0].index <= index <= log[-1].index:
        pos = index - log[0].index
        if log[pos].term == term:
            return log[pos + 1 :]
    return []


class _Replay:
    """Applies segment records in order. ``floor``: highest index covered by a snapshot
    (the one loaded, or a later marker); a log may restart anywhere up to floor + 1."""

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.log: list[Entry] = []
        self.hard_state = HardState()
        self.start: tuple[Path, int] = (Path(), 0)  # record that started ``log``

    def apply(self, path: Path, off: int, payload: bytes) -> None:
        try:
            rec = _json(payload)
            if not isinstance(rec, dict) or not rec or not set(rec) <= {"s", "h", "e"}:
                raise DecodeError(f"expected an object with keys s/h/e, got {payload!r:.80}")
            marker = rec.get("s")
            if "s" in rec and not (
                isinstance(marker, list)
                and len(marker) == 2
                and all(type(x) is int and x >= 0 for x in marker)
            ):
                raise DecodeError(f"'s' must be [index, term], got {marker!r:.80}")
            hs = decode_hard_state(rec["h"]) if "h" in rec else None
            entries = _decode_entries(rec["e"]) if "e" in rec else []
        except DecodeError as e:
            raise WALCorruption(path, off, str(e)) from e
        if marker is not None:
            self.log = _compact(self.log, marker[0], marker[1])
            self.floor = max(self.floor, marker[0])
        if hs is not None:
            self.hard_state = hs
        if entries:
            first, log = entries[0].index, self.log
            last = log[-1].index if log else 0
            if first > max(last, self.floor) + 1:
                raise WALCorruption(
                    path, off, f"entries start at {first} but the log ends at {last}"
                )
            if log and log[0].index <= first <= last + 1:
                del log[first - log[0].index :]
                log.extend(entries)
            else:
                self.log, self.start = entries, (path, off)


class WAL:
    """Durable state of one node. Not thread-safe; use from the driver's task only."""

    def __init__(self, directory: Path, fsync: bool, log: LogFn, segment_bytes: int,
                 crash: CrashPoints) -> None:
        self._dir = directory
        self._crash = crash
        self._fsync_on = fsync
        self._log = log
        self._segment_bytes = segment_bytes
        self._segments: list[int] = []  # live segment seqs, ascending; last is current
        self._fd = -1
        self._size = 0  # bytes in the current segment
        self._buf: list[bytes] = []
        self._snap_index = 0
        self._last_index = 0  # last log index, or the snapshot index if the log is empty
        self._closed = False
        self._failed: BaseException | None = None
        self._stats = dict.fromkeys(
            ("syncs", "fsyncs", "records", "bytes_written", "rotations", "snapshots"), 0
        )

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        fsync: bool = True,
        log: LogFn = _no_log,
        segment_bytes: int = 64 * 1024 * 1024,
        crash: CrashPoints | None = None,
    ) -> tuple[WAL, Recovered]:
        """Open (creating if needed) the WAL in ``directory`` and recover its state.

        Loads the newest valid snapshot (a corrupt newer one is logged and skipped; if
        none is valid, :class:`WALCorruption`), replays every segment, cuts a torn tail
        off the last segment (logged as ``wal-torn-tail-truncated``) and raises
        :class:`WALCorruption` for any other bad record.

        ``crash``: the member's crash points (``nodes/crashpoints.py``) this WAL passes:
        ``wal-before-write`` and ``wal-after-write`` in :meth:`sync`, and between a
        snapshot file and its fresh segment in :meth:`save_snapshot`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        wal = cls(directory, fsync, log, segment_bytes, crash or CrashPoints())
        try:
            return wal, wal._recover()
        except BaseException:
            if wal._fd >= 0:
                os.close(wal._fd)
            raise

    # --- recovery -------------------------------------------------------------------

    def _recover(self) -> Recovered:
        segs: list[tuple[int, Path]] = []
        snaps: list[tuple[tuple[int, int], Path]] = []
        for name in os.listdir(self._dir):
            path = self._dir / name
            if m := _SEG_RE.fullmatch(name):
                segs.append((int(m[1]), path))
            elif m := _SNAP_RE.fullmatch(name):
                snaps.append(((int(m[1]), int(m[2])), path))
            elif name.startswith("snap-") and name.endswith(".tmp"):
                path.unlink()  # an unfinished save_snapshot
        segs.sort()
        snaps.sort(reverse=True)
        snapshot = self._load_snapshot(snaps)
        for (a, _), (b, path) in itertools.pairwise(segs):
            if b != a + 1:
                raise WALCorruption(path, 0, f"segment {a + 1:016d} is missing")
        replay = _Replay(snapshot.index if snapshot else 0)
        for i, (seq, path) in enumerate(segs):
            buf = path.read_bytes()
            off = 0
            while off < len(buf):
                payload, end, reason, torn = _read_frame(buf, off)
                if payload is None:
                    if not torn or i != len(segs) - 1:
                        raise WALCorruption(path, off, reason)
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    os.ftruncate(self._fd, off)
                    self._do_fsync(self._fd)
                    self._log(
                        "wal-torn-tail-truncated",
                        {"file": str(path), "offset": off, "dropped_bytes": len(buf) - off},
                    )
                    break
                replay.apply(path, off, payload)
                off = end
            self._segments.append(seq)
            self._size = off
        entries = replay.log
        if snapshot is not None:
            entries = _compact(entries, snapshot.index, snapshot.term)
            self._snap_index = snapshot.index
        if entries and entries[0].index != self._snap_index + 1:
            path, off = replay.start
            raise WALCorruption(
                path, off, f"log starts at {entries[0].index}, after index {self._snap_index}"
            )
        self._last_index = entries[-1].index if entries else self._snap_index
        if not segs:
            self._new_segment()
        elif self._fd < 0:
            self._fd = os.open(segs[-1][1], os.O_WRONLY | os.O_APPEND)
        return Recovered(replay.hard_state, snapshot, entries)

    def _load_snapshot(self, snaps: list[tuple[tuple[int, int], Path]]) -> Snapshot | None:
        bad: list[WALCorruption] = []
        for (index, term), path in snaps:  # newest first
            try:
                snap = self._read_snapshot(path, index, term)
            except WALCorruption as e:
                bad.append(e)
                continue
            for skipped in bad:
                self._log(
                    "wal-snapshot-corrupt-skipped",
                    {"file": str(skipped.path), "reason": skipped.reason, "using": str(path)},
                )
            return snap
        if bad:
            raise bad[0]
        return None

    @staticmethod
    def _read_snapshot(path: Path, index: int, term: int) -> Snapshot:
        buf = path.read_bytes()
        payload, end, reason, _ = _read_frame(buf, 0)
        if payload is None:
            raise WALCorruption(path, 0, reason)
        if end != len(buf):
            raise WALCorruption(path, end, "trailing data after the snapshot record")
        try:
            snap = decode_snapshot(_json(payload))
        except DecodeError as e:
            raise WALCorruption(path, 0, str(e)) from e
        if (snap.index, snap.term) != (index, term):
            raise WALCorruption(path, 0, f"holds index/term {snap.index}/{snap.term}")
        return snap

    # --- writing --------------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Buffer a record (no I/O). ``entries`` starting at or before the last saved
        index truncate the log there and replace it. Raises ValueError for entries that
        are not consecutive, start inside the snapshot, or leave a gap."""
        self._check_usable()
        rec: dict[str, Any] = {}
        if hard_state is not None:
            rec["h"] = encode_hard_state(hard_state)
        if entries:
            first = entries[0].index
            if not self._snap_index < first <= self._last_index + 1:
                raise ValueError(
                    f"entries start at {first}; expected {self._snap_index + 1}.."
                    f"{self._last_index + 1}"
                )
            _check_consecutive(entries, ValueError)
            rec["e"] = [encode_entry(e) for e in entries]
        if not rec:
            return
        self._buf.append(_frame(rec))
        self._stats["records"] += 1
        if entries:
            self._last_index = entries[-1].index

    def sync(self) -> None:
        """Write every buffered record with one write() and make it durable with one
        fsync (plus a directory fsync when a new segment had to be started)."""
        self._check_usable()
        self._sync(crash_points=True)

    def _sync(self, crash_points: bool) -> None:
        """:meth:`sync`; ``crash_points``: whether it passes the WAL's crash points."""
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        try:
            if self._size > 0 and self._size + len(data) > self._segment_bytes:
                os.close(self._fd)
                self._fd = -1
                self._new_segment()
                self._stats["rotations"] += 1
            if crash_points and self._crash.armed:
                self._crash.hit(WAL_BEFORE_WRITE)
            self._write_all(self._fd, data)
            self._size += len(data)
            if crash_points and self._crash.armed:
                self._crash.hit(WAL_AFTER_WRITE)
            self._do_fsync(self._fd)
        except OSError as e:
            raise self._fail(e) from e
        self._stats["syncs"] += 1

    def save_snapshot(
        self, snap: Snapshot, hard_state: HardState, entries_after: Sequence[Entry],
        *, installing: bool = False
    ) -> None:
        """Durably store ``snap``, start a fresh segment holding a snapshot marker,
        ``hard_state`` and ``entries_after`` (indexes snap.index+1, ...), then delete the
        older snapshot files and segments. Buffered records are synced first.

        ``installing``: ``snap`` came from the leader (else the node took it of its own
        state). It only decides which crash point is passed: installing,
        ``snapshot-install-between`` once the snapshot file is durable and before the fresh
        segment is started (the two steps of an install); of its own,
        ``snapshot-before-truncate`` once the fresh segment is durable too and before any
        older snapshot or segment is deleted (the log not yet cut)."""
        self._check_usable()
        if snap.index < self._snap_index:
            raise ValueError(f"snapshot {snap.index} is older than {self._snap_index}")
        if entries_after and entries_after[0].index != snap.index + 1:
            raise ValueError(f"entries_after must start at {snap.index + 1}")
        _check_consecutive(entries_after, ValueError)
        rec: dict[str, Any] = {"s": [snap.index, snap.term], "h": encode_hard_state(hard_state)}
        if entries_after:
            rec["e"] = [encode_entry(e) for e in entries_after]
        record, image = _frame(rec), _frame(encode_snapshot(snap))
        self.sync()
        name = f"snap-{snap.index:016d}-{snap.term:016d}.snap"
        tmp = self._dir / (name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                self._write_all(fd, image)
                self._do_fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._dir / name)
            self._fsync_dir()
            if installing and self._crash.armed:
                self._crash.hit(SNAPSHOT_INSTALL_BETWEEN)
            os.close(self._fd)
            self._fd = -1
            self._new_segment()
            self._append(record)
            if not installing and self._crash.armed:
                self._crash.hit(SNAPSHOT_BEFORE_TRUNCATE)
            # Older snapshots first, then segments oldest first (see the module docstring).
            for other in os.listdir(self._dir):
                if _SNAP_RE.fullmatch(other) and other != name:
                    (self._dir / other).unlink()
            for seq in self._segments[:-1]:
                self._segment_path(seq).unlink()
            del self._segments[:-1]
            self._fsync_dir()
        except OSError as e:
            raise self._fail(e) from e
        self._snap_index = snap.index
        self._last_index = entries_after[-1].index if entries_after else snap.index
        self._stats["snapshots"] += 1

    def close(self) -> None:
        """Sync buffered records (unless the WAL has failed) and close the segment. It
        passes no crash point: a member stopping cleanly stays clean even if armed."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self._sync(crash_points=False)
        finally:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def statistics(self) -> dict[str, int]:
        """Counters since open: syncs (that wrote), fsyncs (files and directory),
        records (encoded), bytes_written, rotations, snapshots; plus the live
        segments count and buffered_bytes not yet synced."""
        stats = dict(self._stats)
        stats["segments"] = len(self._segments)
        stats["buffered_bytes"] = sum(map(len, self._buf))
        return stats

    # --- helpers --------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise WALError("WAL is closed")
        if self._failed is not None:
            raise WALError(f"WAL failed earlier and must be reopened: {self._failed}")

    def _fail(self, e: OSError) -> WALError:
        # After a failed write/fsync the file's state is unknown: refuse further use.
        self._failed = e
        return WALError(f"I/O error in {self._dir}: {e}")

    def _segment_path(self, seq: int) -> Path:
        return self._dir / f"wal-{seq:016d}.log"

    def _new_segment(self) -> None:
        seq = self._segments[-1] + 1 if self._segments else 1
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
        self._fd = os.open(self._segment_path(seq), flags, 0o644)
        self._segments.append(seq)
        self._size = 0
        self._fsync_dir()

    def _append(self, data: bytes) -> None:
        self._write_all(self._fd, data)
        self._size += len(data)
        self._do_fsync(self._fd)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        self._stats["bytes_written"] += len(data)

    def _do_fsync(self, fd: int) -> None:
        if self._fsync_on:
            os.fsync(fd)
            self._stats["fsyncs"] += 1

    def _fsync_dir(self) -> None:
        if self._fsync_on:
            fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._stats["fsyncs"] += 1
