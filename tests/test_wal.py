"""Tests of nodes.wal: round trips, Raft truncation, group commit, rotation, snapshots,
torn tails versus corruption, and a model-based Hypothesis test."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.types import Entry, HardState, Snapshot
from nodes.wal import WAL, Recovered, WALCorruption, WALError

Events = list[tuple[str, dict[str, Any]]]


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, {"k": f"v{i}", "t": term}) for i in range(lo, hi + 1)]


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("wal-*.log"))


def snaps(d: Path) -> list[Path]:
    return sorted(d.glob("snap-*.snap"))


def reopen(d: Path, **kw: Any) -> tuple[Recovered, Events]:
    events: Events = []
    wal, rec = WAL.open(d, log=lambda ev, f: events.append((ev, f)), **kw)
    wal.close()
    return rec, events


def frame(payload: bytes) -> bytes:
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


def flip(path: Path, offset: int) -> None:
    buf = bytearray(path.read_bytes())
    buf[offset] ^= 0xFF
    path.write_bytes(bytes(buf))


def record_offsets(path: Path) -> list[int]:
    buf, offs = path.read_bytes(), [0]
    while offs[-1] < len(buf):
        (length,) = struct.unpack_from(">I", buf, offs[-1])
        offs.append(offs[-1] + 8 + length)
    assert offs[-1] == len(buf)
    return offs[:-1]


def three_records(d: Path) -> tuple[Path, list[int]]:
    """One segment holding three records (entries 1, 2, 3), each synced alone.
    Returns the segment and the start offsets of the records plus the end offset."""
    wal, _ = WAL.open(d)
    (seg,) = segments(d)
    offsets = [seg.stat().st_size]
    for i in (1, 2, 3):
        wal.save(HardState(term=1, commit=i - 1), ents(i, i))
        wal.sync()
        offsets.append(seg.stat().st_size)
    wal.close()
    assert offsets[0] == 0 and offsets[1] < offsets[2] < offsets[3]
    return seg, offsets


# --- basics -----------------------------------------------------------------------------


def test_empty_directory_is_created_and_recovers_nothing(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    rec, events = reopen(d)
    assert d.is_dir()
    assert rec == Recovered(HardState(), None, [])
    assert events == []
    assert [p.name for p in segments(d)] == ["wal-0000000000000001.log"]


def test_round_trip_hard_state_and_entries(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.save(HardState(1, "n1", 0), ents(1, 3))
    wal.save(HardState(2, "n2", 2), [])
    wal.save(None, ents(4, 5, term=2))
    wal.sync()
    wal.close()
    rec, events = reopen(tmp_path)
    assert rec.hard_state == HardState(2, "n2", 2)
    assert rec.snapshot is None
    assert rec.entries == ents(1, 3) + ents(4, 5, term=2)
    assert events == []
    # Reopening appends to the last segment and keeps the earlier records.
    wal, _ = WAL.open(tmp_path)
    wal.save(HardState(3, None, 5), ents(6, 6, term=3))
    wal.close()  # close syncs
    rec, _ = reopen(tmp_path)
    assert rec.hard_state == HardState(3, None, 5)
    assert rec.entries == ents(1, 3) + ents(4, 5, term=2) + ents(6, 6, term=3)
    assert len(segments(tmp_path)) == 1


def test_conflicting_entries_truncate_the_log(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.save(None, ents(1, 10))
    wal.sync()
    wal.save(None, ents(6, 7, term=2))
    wal.close()
    rec, _ = reopen(tmp_path)
    assert rec.entries == ents(1, 5) + ents(6, 7, term=2)
    # Truncate again after a reopen, in the same batch as more appends.
    wal, _ = WAL.open(tmp_path)
    wal.save(None, ents(3, 4, term=3))
    wal.save(None, ents(5, 5, term=3))
    wal.save(None, ents(2, 2, term=4))
    wal.close()
    rec, _ = reopen(tmp_path)
    assert rec.entries == ents(1, 1) + ents(2, 2, term=4)


def test_save_rejects_bad_entries_and_use_after_close(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.save(None, ents(1, 3))
    with pytest.raises(ValueError, match="start at 5"):
        wal.save(None, ents(5, 6))  # gap
    with pytest.raises(ValueError, match="not consecutive"):
        wal.save(None, [Entry(1, 4), Entry(1, 6)])
    wal.save_snapshot(Snapshot(2, 1, {}), HardState(1), ents(3, 3))
    with pytest.raises(ValueError, match="start at 2"):
        wal.save(None, ents(2, 4))  # inside the snapshot
    with pytest.raises(ValueError, match="older"):
        wal.save_snapshot(Snapshot(1, 1, {}), HardState(1), [])
    wal.close()
    with pytest.raises(WALError, match="closed"):
        wal.save(HardState(1), [])
    rec, _ = reopen(tmp_path)
    assert rec.entries == ents(3, 3)


def test_group_commit_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    wal, _ = WAL.open(tmp_path)
    (seg,) = segments(tmp_path)
    before = wal.statistics()
    assert before["fsyncs"] == len(calls) == 1  # the directory, for the new segment
    for i in range(1, 101):
        wal.save(HardState(1, "n1", i - 1), ents(i, i))
    assert seg.stat().st_size == 0  # save() only buffers
    assert wal.statistics()["buffered_bytes"] > 0
    wal.sync()
    after = wal.statistics()
    assert after["fsyncs"] - before["fsyncs"] == 1
    assert len(calls) == 2
    assert after["syncs"] - before["syncs"] == 1
    assert after["records"] - before["records"] == 100
    assert after["bytes_written"] - before["bytes_written"] == seg.stat().st_size > 0
    assert after["buffered_bytes"] == 0
    wal.sync()  # nothing buffered: no I/O
    assert wal.statistics()["fsyncs"] == after["fsyncs"] and len(calls) == 2
    wal.close()
    rec, _ = reopen(tmp_path)
    assert rec.entries == ents(1, 100) and rec.hard_state == HardState(1, "n1", 99)


def test_fsync_false_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=100)
    for i in range(1, 20):
        wal.save(None, ents(i, i))
        wal.sync()
    wal.save_snapshot(Snapshot(10, 1, None), HardState(1), ents(11, 19))
    wal.close()
    assert calls == []
    assert wal.statistics()["fsyncs"] == 0 and wal.statistics()["syncs"] == 19


def test_segment_rotation_and_recovery_across_segments(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=200)
    for i in range(1, 51):
        wal.save(HardState(1, None, i), ents(i, i))
        wal.sync()
    stats = wal.statistics()
    wal.close()
    segs = segments(tmp_path)
    assert len(segs) == stats["segments"] >= 5
    assert stats["rotations"] == len(segs) - 1
    assert [p.name for p in segs] == [f"wal-{i:016d}.log" for i in range(1, len(segs) + 1)]
    assert all(p.stat().st_size <= 200 for p in segs)
    rec, _ = reopen(tmp_path, segment_bytes=200)
    assert rec.entries == ents(1, 50) and rec.hard_state == HardState(1, None, 50)
    # A conflict reaching back into the first segment is honoured on replay.
    wal, _ = WAL.open(tmp_path, segment_bytes=200)
    wal.save(None, ents(3, 4, term=2))
    wal.close()
    rec, _ = reopen(tmp_path)
    assert rec.entries == ents(1, 2) + ents(3, 4, term=2)


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=100)
    for i in range(1, 20):
        wal.save(None, ents(i, i))
        wal.sync()
    wal.close()
    segs = segments(tmp_path)
    assert len(segs) >= 3
    segs[1].unlink()
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    assert str(ei.value) == f"{segs[2]}: corrupt record at offset 0: segment {2:016d} is missing"


# --- snapshots --------------------------------------------------------------------------


def test_save_snapshot_then_reopen(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=150)
    for i in range(1, 21):
        wal.save(HardState(1, "a", i), ents(i, i))
        wal.sync()
    old_segs = segments(tmp_path)
    assert len(old_segs) >= 3
    snap = Snapshot(15, 1, {"x": 1, "y": [1, 2]}, ("n1", "n2"))
    wal.save_snapshot(snap, HardState(1, "a", 15), ents(16, 20))
    assert [p.name for p in snaps(tmp_path)] == [f"snap-{15:016d}-{1:016d}.snap"]
    new_segs = segments(tmp_path)
    assert len(new_segs) == 1 and new_segs[0] not in old_segs
    assert new_segs[0].name == f"wal-{len(old_segs) + 1:016d}.log"
    assert wal.statistics()["segments"] == 1 and wal.statistics()["snapshots"] == 1
    wal.save(HardState(2, "b", 16), ents(21, 21, term=2))
    wal.close()
    rec, events = reopen(tmp_path)
    assert events == []
    assert rec.snapshot == snap
    assert rec.hard_state == HardState(2, "b", 16)
    assert rec.entries == ents(16, 20) + ents(21, 21, term=2)
    # A second snapshot replaces the first one.
    wal, _ = WAL.open(tmp_path)
    snap2 = Snapshot(21, 2, {"x": 2})
    wal.save_snapshot(snap2, HardState(2, "b", 21), [])
    wal.close()
    assert [p.name for p in snaps(tmp_path)] == [f"snap-{21:016d}-{2:016d}.snap"]
    assert len(segments(tmp_path)) == 1
    rec, _ = reopen(tmp_path)
    assert rec == Recovered(HardState(2, "b", 21), snap2, [])


def test_snapshot_newer_than_log_restarts_log_after_it(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.save(HardState(1), ents(1, 5))
    wal.sync()
    snap = Snapshot(10, 3, "image")
    wal.save_snapshot(snap, HardState(3, "l", 10), [])
    with pytest.raises(ValueError):
        wal.save(None, ents(6, 6))
    wal.save(None, ents(11, 12, term=3))
    wal.close()
    rec, _ = reopen(tmp_path)
    assert rec == Recovered(HardState(3, "l", 10), snap, ents(11, 12, term=3))


def _crash_during_snapshot(tmp_path: Path, snap: Snapshot, after: list[Entry], stage: str) -> Path:
    """Log 1..12 (term 1), then save_snapshot; return a directory that looks like a
    crash at ``stage``: "before-fresh-segment" (snapshot renamed, nothing else) or
    "before-deletion" (fresh segment written, old files not yet deleted)."""
    live = tmp_path / "live"
    wal, _ = WAL.open(live)
    wal.save(HardState(1, "a", 12), ents(1, 12))
    wal.sync()
    crashed = tmp_path / "crashed"
    shutil.copytree(live, crashed)
    wal.save_snapshot(snap, HardState(2, "b", snap.index), after)
    wal.close()
    shutil.copy(snaps(live)[0], crashed)
    if stage == "before-deletion":
        shutil.copy(segments(live)[0], crashed)
    assert len(segments(crashed)) == (2 if stage == "before-deletion" else 1)
    return crashed


@pytest.mark.parametrize("stage", ["before-fresh-segment", "before-deletion"])
def test_crash_during_local_snapshot_keeps_entries_after_it(tmp_path: Path, stage: str) -> None:
    snap = Snapshot(8, 1, "img")
    rec, _ = reopen(_crash_during_snapshot(tmp_path, snap, ents(9, 12), stage))
    assert rec.snapshot == snap
    assert rec.entries == ents(9, 12)
    hs = HardState(1, "a", 12) if stage == "before-fresh-segment" else HardState(2, "b", 8)
    assert rec.hard_state == hs


@pytest.mark.parametrize("stage", ["before-fresh-segment", "before-deletion"])
def test_crash_during_installed_snapshot_drops_conflicting_log(tmp_path: Path, stage: str) -> None:
    # The leader's snapshot has term 2 at index 10, the local log has term 1 there.
    snap = Snapshot(10, 2, "img")
    rec, _ = reopen(_crash_during_snapshot(tmp_path, snap, ents(11, 11, term=2), stage))
    assert rec.snapshot == snap
    assert rec.entries == ([] if stage == "before-fresh-segment" else ents(11, 11, term=2))


def test_corrupt_snapshot_without_older_one_refuses_to_start(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.save(None, ents(1, 5))
    wal.save_snapshot(Snapshot(5, 1, {"big": "x" * 100}), HardState(1), [])
    wal.close()
    (snap_file,) = snaps(tmp_path)
    flip(snap_file, 20)
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    assert str(ei.value) == f"{snap_file}: corrupt record at offset 0: checksum mismatch"
    assert ei.value.path == snap_file and ei.value.offset == 0


def test_corrupt_snapshot_falls_back_to_older_valid_one(tmp_path: Path) -> None:
    crashed = _crash_during_snapshot(
        tmp_path, Snapshot(8, 1, "new"), ents(9, 12), "before-fresh-segment"
    )
    # Add an older snapshot, as left by an earlier interrupted save_snapshot.
    wal, _ = WAL.open(tmp_path / "old")
    wal.save(None, ents(1, 4))
    wal.save_snapshot(Snapshot(4, 1, "old"), HardState(1), [])
    wal.close()
    shutil.copy(snaps(tmp_path / "old")[0], crashed)
    old_snap, new_snap = snaps(crashed)
    flip(new_snap, 10)
    rec, events = reopen(crashed)
    assert rec.snapshot == Snapshot(4, 1, "old")
    assert rec.entries == ents(5, 12)
    assert events == [
        (
            "wal-snapshot-corrupt-skipped",
            {"file": str(new_snap), "reason": "checksum mismatch", "using": str(old_snap)},
        )
    ]


def test_leftover_snapshot_temp_file_is_removed(tmp_path: Path) -> None:
    tmp = tmp_path / f"snap-{7:016d}-{1:016d}.snap.tmp"
    tmp.write_bytes(b"partial")
    rec, _ = reopen(tmp_path)
    assert not tmp.exists() and rec.snapshot is None


# --- torn tails -------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 4, 7, 8, 9, -1])
def test_torn_last_record_is_truncated(tmp_path: Path, cut: int) -> None:
    seg, offs = three_records(tmp_path)
    keep = offs[2] + (cut if cut > 0 else offs[3] - offs[2] + cut)
    with open(seg, "r+b") as f:
        f.truncate(keep)
    rec, events = reopen(tmp_path)
    assert rec.entries == ents(1, 2)
    assert rec.hard_state == HardState(term=1, commit=1)
    assert events == [
        (
            "wal-torn-tail-truncated",
            {"file": str(seg), "offset": offs[2], "dropped_bytes": keep - offs[2]},
        )
    ]
    assert seg.stat().st_size == offs[2]
    # Writing continues cleanly after the cut.
    wal, _ = WAL.open(tmp_path)
    wal.save(None, ents(3, 3, term=5))
    wal.close()
    rec, events = reopen(tmp_path)
    assert rec.entries == ents(1, 2) + ents(3, 3, term=5) and events == []


@pytest.mark.parametrize("zeros", [3, 8, 4096])
def test_zero_filled_tail_is_truncated(tmp_path: Path, zeros: int) -> None:
    seg, offs = three_records(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\0" * zeros)
    rec, events = reopen(tmp_path)
    assert rec.entries == ents(1, 3)
    assert events == [
        ("wal-torn-tail-truncated", {"file": str(seg), "offset": offs[3], "dropped_bytes": zeros})
    ]
    assert seg.stat().st_size == offs[3]


@pytest.mark.parametrize("trailing_zeros", [0, 100])
def test_checksum_mismatch_in_last_record_is_torn(tmp_path: Path, trailing_zeros: int) -> None:
    seg, offs = three_records(tmp_path)
    flip(seg, offs[3] - 3)  # inside the last record's payload
    with open(seg, "ab") as f:
        f.write(b"\0" * trailing_zeros)
    rec, events = reopen(tmp_path)
    assert rec.entries == ents(1, 2)
    dropped = offs[3] - offs[2] + trailing_zeros
    assert events == [
        ("wal-torn-tail-truncated", {"file": str(seg), "offset": offs[2], "dropped_bytes": dropped})
    ]
    assert seg.stat().st_size == offs[2]


# --- corruption -------------------------------------------------------------------------


@pytest.mark.parametrize(("record", "where"), [(0, 3), (0, 9), (1, 0), (1, 12)])
def test_corruption_before_the_tail_refuses_to_start(
    tmp_path: Path, record: int, where: int
) -> None:
    seg, offs = three_records(tmp_path)
    flip(seg, offs[record] + where)
    before = seg.read_bytes()
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f"{seg}: corrupt record at offset {offs[record]}: ")
    assert ei.value.offset == offs[record] and ei.value.path == seg
    assert seg.read_bytes() == before  # nothing was truncated


def test_bad_record_in_non_last_segment_is_corruption(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=120)
    for i in range(1, 11):
        wal.save(None, ents(i, i))
        wal.sync()
    wal.close()
    first = segments(tmp_path)[0]
    assert len(segments(tmp_path)) >= 3
    size = first.stat().st_size
    last_start = record_offsets(first)[-1]
    assert 0 < last_start < size - 5
    with open(first, "r+b") as f:
        f.truncate(size - 5)  # a torn record, but not in the last segment
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    assert str(ei.value).startswith(f"{first}: corrupt record at offset {last_start}: ")
    assert first.stat().st_size == size - 5


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "bad JSON"),
        (b'{"e":[[1,"x",null]]}', "bad term/index"),
        (b'{"h":{"term":-1}}', "non-negative"),
        (b'{"e":[[1,4,null],[1,6,null]]}', "not consecutive"),
        (b'{"e":[[1,9,null]]}', "entries start at 9 but the log ends at 3"),
        (b'{"q":1}', "expected an object"),
        (b'{"e":[]}', "non-empty"),
        (b'{"s":[1]}', "'s' must be"),
    ],
)
def test_valid_frame_with_bad_content_is_corruption(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    seg, offs = three_records(tmp_path)
    with open(seg, "ab") as f:
        f.write(frame(payload))  # last record, CRC fine: not a torn write
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    assert str(ei.value).startswith(f"{seg}: corrupt record at offset {offs[3]}: ")
    assert reason in ei.value.reason


def test_garbage_length_is_corruption_not_allocation(tmp_path: Path) -> None:
    seg, offs = three_records(tmp_path)
    with open(seg, "ab") as f:
        f.write(struct.pack(">II", 0xFFFFFFF0, 0) + b"junk")
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    assert ei.value.offset == offs[3] and "exceeds" in ei.value.reason


def test_log_starting_after_missing_entries_is_corruption(tmp_path: Path) -> None:
    seg = tmp_path / f"wal-{1:016d}.log"
    seg.write_bytes(frame(b'{"e":[[1,5,null]]}'))
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    expected = "entries start at 5 but the log ends at 0"
    assert str(ei.value) == f"{seg}: corrupt record at offset 0: {expected}"


def test_zero_header_before_more_data_is_corruption(tmp_path: Path) -> None:
    seg, offs = three_records(tmp_path)
    with open(seg, "ab") as f:
        f.write(frame(b"") + frame(b'{"e":[[1,4,null]]}'))
    with pytest.raises(WALCorruption) as ei:
        WAL.open(tmp_path)
    assert str(ei.value) == f"{seg}: corrupt record at offset {offs[3]}: empty record"


def test_fallback_snapshot_that_no_longer_connects_to_the_log_is_corruption(
    tmp_path: Path,
) -> None:
    # Newest snapshot (installed from a leader, log reset) is corrupt; the older one
    # is valid but the entries between them are gone: refuse instead of a log with a hole.
    crashed = _crash_during_snapshot(
        tmp_path, Snapshot(10, 2, "new"), ents(11, 11, term=2), "before-deletion"
    )
    wal, _ = WAL.open(tmp_path / "old")
    wal.save(None, ents(1, 4))
    wal.save_snapshot(Snapshot(4, 1, "old"), HardState(1), [])
    wal.close()
    shutil.copy(snaps(tmp_path / "old")[0], crashed)
    flip(snaps(crashed)[1], 10)
    fresh = segments(crashed)[1]
    with pytest.raises(WALCorruption) as ei:
        WAL.open(crashed)
    assert str(ei.value) == f"{fresh}: corrupt record at offset 0: log starts at 11, after index 4"


# --- model-based ------------------------------------------------------------------------


@dataclasses.dataclass
class Model:
    hs: HardState = dataclasses.field(default_factory=HardState)
    snap: Snapshot | None = None
    log: list[Entry] = dataclasses.field(default_factory=list)

    def copy(self) -> Model:
        return Model(self.hs, self.snap, list(self.log))

    @property
    def snap_index(self) -> int:
        return self.snap.index if self.snap else 0

    @property
    def last(self) -> int:
        return self.log[-1].index if self.log else self.snap_index


data_values = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3))
hard_states = st.builds(
    HardState, st.integers(0, 9), st.sampled_from([None, "n1", "n2"]), st.integers(0, 50)
)


def check(rec: Recovered, model: Model) -> None:
    assert rec.hard_state == model.hs
    assert rec.snapshot == model.snap
    assert rec.entries == model.log


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), segment_bytes=st.sampled_from([64, 400, 1 << 20]))
def test_random_operations_match_model(data: st.DataObject, segment_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d, n = Path(tmp) / "w0", 0
        wal, rec = WAL.open(d, fsync=False, segment_bytes=segment_bytes)
        current, durable = Model(), Model()
        check(rec, durable)
        for _ in range(data.draw(st.integers(1, 25))):
            op = data.draw(st.sampled_from(["save"] * 4 + ["sync", "snap", "reopen", "crash"]))
            if op == "save":
                hs = data.draw(st.none() | hard_states)
                first = data.draw(st.integers(current.snap_index + 1, current.last + 1))
                term = data.draw(st.integers(0, 5))
                values = data.draw(st.lists(data_values, max_size=4))
                entries = [Entry(term, first + i, v) for i, v in enumerate(values)]
                wal.save(hs, entries)
                if hs is not None:
                    current.hs = hs
                if entries:
                    current.log = [e for e in current.log if e.index < first] + entries
            elif op == "sync":
                wal.sync()
                durable = current.copy()
            elif op == "snap":
                index = data.draw(st.integers(current.snap_index, current.last + 2))
                at = [e for e in current.log if e.index == index]
                local = data.draw(st.booleans())
                if at and local:  # local compaction
                    term = at[0].term
                    after = [e for e in current.log if e.index > index]
                else:  # installed from a leader: the log restarts
                    term = data.draw(st.integers(0, 6))
                    n_after = data.draw(st.integers(0, 3))
                    after = [Entry(term, index + 1 + i, i) for i in range(n_after)]
                snap = Snapshot(index, term, data.draw(data_values), ("n1", "n2"))
                hs = data.draw(hard_states)
                wal.save_snapshot(snap, hs, after)
                current = Model(hs, snap, after)
                durable = current.copy()
                assert len(list(d.glob("snap-*.snap"))) == 1
            elif op == "reopen":
                wal.close()
                durable = current.copy()
                wal, rec = WAL.open(d, fsync=False, segment_bytes=segment_bytes)
                check(rec, durable)
            else:  # crash: whatever was not synced is lost
                n += 1
                crashed = Path(tmp) / f"w{n}"
                shutil.copytree(d, crashed)
                wal.close()
                d = crashed
                wal, rec = WAL.open(d, fsync=False, segment_bytes=segment_bytes)
                current = durable.copy()
                check(rec, durable)
        wal.close()
        wal, rec = WAL.open(d, fsync=False)
        wal.close()
        check(rec, current)
