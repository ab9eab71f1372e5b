"""raftkv's crash points (``nodes/crashpoints.py``; ``nodes/PROTOCOL.md``, "Crash points"):
every point is reached where its name says, a disarmed or skipped point lets execution
pass, and the ``crash-at`` request arms, disarms and refuses what it does not know. Here
the process's end is replaced by an exception; a real member dying at a point, and the
lab restarting it: ``tests/test_run_e2e.py``."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio
import trio.testing

from nodes.crashpoints import CRASH_POINT_EXIT, POINTS, CrashPoints
from nodes.server import Logger, Node, NodeOptions
from nodes.types import Entry, HardState, Message, MsgType, Snapshot
from nodes.wal import WAL


class Crashed(Exception):
    """The member would have ended here, with this exit code."""


def die(code: int) -> NoReturn:
    raise Crashed(code)


def armed(point: str, skip: int = 0) -> tuple[CrashPoints, list[dict[str, Any]]]:
    logged: list[dict[str, Any]] = []
    crash = CrashPoints(log=lambda ev, f: logged.append({"event": ev, **f}), die=die)
    crash.arm(point, skip)
    return crash, logged


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, {"op": "write", "key": "k", "value": i}) for i in range(lo, hi + 1)]


def segment_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("wal-*.log"))


def test_an_armed_point_logs_and_exits_with_the_crash_point_code() -> None:
    crash, logged = armed("wal-after-write")
    crash.hit("wal-before-write")  # another point: passes
    with pytest.raises(Crashed) as e:
        crash.hit("wal-after-write")
    assert e.value.args == (CRASH_POINT_EXIT,)
    assert logged == [{"event": "crash-point", "point": "wal-after-write"}]


def test_skip_lets_that_many_hits_pass_and_disarming_stops_it() -> None:
    crash, _ = armed("before-apply", skip=2)
    crash.hit("before-apply")
    crash.hit("before-apply")
    with pytest.raises(Crashed):
        crash.hit("before-apply")
    crash.arm(None)
    assert not crash.armed
    crash.hit("before-apply")  # disarmed: nothing happens
    with pytest.raises(ValueError, match=r"unknown crash point 'nope'.*wal-before-write"):
        crash.arm("nope")


class Spied(CrashPoints):
    """Crash points that record every change of ``armed`` and ``skip``, in order."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("armed", "skip"):
            self.__dict__.setdefault("changes", []).append((name, value))
        super().__setattr__(name, value)


def test_arming_sets_the_skip_before_the_point_and_disarming_clears_the_point_first() -> None:
    """A hit on a worker thread reads ``armed``, then ``skip``: it must never see the new
    point with the old count (nor the old point with the new count)."""
    crash = Spied(die=die)
    crash.arm("wal-after-write", 3)
    crash.changes.clear()  # type: ignore[attr-defined]
    crash.arm("wal-after-sync", 1)  # re-arming: the old point goes before the count changes
    assert crash.changes == [  # type: ignore[attr-defined]
        ("armed", None), ("skip", 1), ("armed", "wal-after-sync")]
    crash.changes.clear()  # type: ignore[attr-defined]
    crash.arm(None)
    assert crash.changes == [("armed", None), ("skip", 0)]  # type: ignore[attr-defined]


def test_wal_before_write_fires_before_a_byte_is_written(tmp_path: Path) -> None:
    crash, _ = armed("wal-before-write")
    wal, _ = WAL.open(tmp_path, fsync=False, crash=crash)
    before = segment_bytes(tmp_path)
    wal.save(HardState(1, "n1", 0), ents(1, 3))  # buffered: no I/O, no point
    with pytest.raises(Crashed):
        wal.sync()
    assert segment_bytes(tmp_path) == before


def test_wal_after_write_fires_once_written_before_the_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash, _ = armed("wal-after-write")
    wal, _ = WAL.open(tmp_path, crash=crash)
    fsyncs: list[int] = []
    monkeypatch.setattr("nodes.wal.os.fsync", fsyncs.append)
    wal.save(HardState(1, "n1", 0), ents(1, 3))
    with pytest.raises(Crashed):
        wal.sync()
    assert segment_bytes(tmp_path) > 0 and fsyncs == []


@pytest.mark.parametrize("point", ["wal-before-write", "wal-after-write"])
def test_closing_the_wal_passes_no_crash_point(tmp_path: Path, point: str) -> None:
    """A clean stop (``run_node`` closes the WAL) syncs what is buffered without dying
    at an armed WAL point: a member stopping cleanly is not a crash."""
    crash, logged = armed(point)
    wal, _ = WAL.open(tmp_path, fsync=False, crash=crash)
    wal.save(HardState(1, "n1", 0), ents(1, 3))  # buffered, not synced
    wal.close()
    assert logged == [] and crash.armed == point
    _, rec = WAL.open(tmp_path, fsync=False)
    assert [e.index for e in rec.entries] == [1, 2, 3]  # and it did sync them


def snapshot_then_crash(tmp_path: Path, point: str, installing: bool
                        ) -> tuple[list[Path], list[Path]]:
    """Arm ``point``, take a snapshot of the other kind (which passes the other point),
    then crash in one of the armed kind: the segments before, and the files after."""
    crash, _ = armed(point)
    wal, _ = WAL.open(tmp_path, fsync=False, crash=crash)
    wal.save(HardState(1, "n1", 3), ents(1, 3))
    wal.sync()
    wal.save_snapshot(Snapshot(1, 1, {"data": {}}, ("n1",)), HardState(1, "n1", 3), ents(2, 3),
                      installing=not installing)
    segments = sorted(tmp_path.glob("wal-*.log"))
    with pytest.raises(Crashed):
        wal.save_snapshot(Snapshot(3, 1, {"data": {}}, ("n1",)), HardState(1, "n1", 3), [],
                          installing=installing)
    return segments, sorted(tmp_path.iterdir())


def test_snapshot_install_between_fires_with_the_snapshot_durable_and_no_fresh_segment(
        tmp_path: Path) -> None:
    segments, files = snapshot_then_crash(tmp_path, "snapshot-install-between", True)
    assert tmp_path / f"snap-{3:016d}-{1:016d}.snap" in files
    assert sorted(tmp_path.glob("wal-*.log")) == segments  # no fresh segment, none deleted


def test_snapshot_before_truncate_fires_with_the_fresh_segment_durable_and_nothing_deleted(
        tmp_path: Path) -> None:
    """The window ``save_snapshot``'s order relies on: the new snapshot and the segment
    that starts after it are both on disk, and the older snapshot and segments still are
    (a recovery replays the marker over them)."""
    segments, files = snapshot_then_crash(tmp_path, "snapshot-before-truncate", False)
    assert tmp_path / f"snap-{1:016d}-{1:016d}.snap" in files  # the older one: still there
    assert tmp_path / f"snap-{3:016d}-{1:016d}.snap" in files
    fresh = [p for p in tmp_path.glob("wal-*.log") if p not in segments]
    assert set(segments) <= set(files) and len(fresh) == 1  # nothing deleted, one more
    assert fresh[0].stat().st_size > 0  # its marker record is written
    _, rec = WAL.open(tmp_path, fsync=False)
    assert rec.snapshot is not None and rec.snapshot.index == 3


def one_member(tmp_path: Path, peers: dict[str, tuple[str, int]] | None = None,
               fsync: bool = False) -> tuple[Node, io.StringIO]:
    out = io.StringIO()
    opts = NodeOptions(id="n1", data_dir=tmp_path, peer_listen=("127.0.0.1", 0),
                       client_listen=("127.0.0.1", 0), peers=peers or {}, fsync=fsync)
    node = Node(opts, Logger("n1", out))
    node.crash = CrashPoints(log=node.crash._log, die=die)
    node.wal._crash = node.crash
    return node, out


@pytest.mark.parametrize("point", ["wal-after-sync", "before-apply"])
def test_the_driver_points_fire_in_the_loop_of_a_member_that_elects_itself(
        tmp_path: Path, point: str) -> None:
    """A one-member cluster elects itself (its vote persisted: wal-after-sync) and commits
    its leader's no-op entry (before-apply), with no client and no peer."""
    node, out = one_member(tmp_path)
    assert node._request({"op": "crash-at", "point": point}, None) == {"ok": True}  # type: ignore[arg-type]

    async def main() -> None:
        await node._loop()

    with pytest.raises(Crashed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    logged = [json.loads(line) for line in out.getvalue().splitlines()]
    assert logged[-1]["event"] == "crash-point" and logged[-1]["point"] == point
    assert node.stats["applied"] == 0
    node.wal.close()


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_nowait(self, m: Any) -> None:
        self.sent.append(m)


def test_wal_after_sync_fires_with_the_record_fsynced_and_none_of_its_messages_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower gets an entry from its leader n2: its Ready holds the entry and the new
    term (to persist) and its answer to n2 (to send only once they are on disk). At
    wal-after-sync the record is written and fsynced, and the answer is not sent."""
    node, out = one_member(tmp_path, peers={"n2": ("127.0.0.1", 9)}, fsync=True)
    sender = RecordingSender()
    node.senders = {"n2": sender}  # type: ignore[dict-item]
    readies: list[Any] = []
    ready = node.raft.ready
    monkeypatch.setattr(node.raft, "ready", lambda: readies.append(ready()) or readies[-1])
    fsynced: list[tuple[int, int]] = []  # (fd, its size when fsynced)
    real_fsync = os.fsync
    monkeypatch.setattr("nodes.wal.os.fsync",
                        lambda fd: (fsynced.append((fd, os.fstat(fd).st_size)),
                                    real_fsync(fd))[1])
    node.crash.arm("wal-after-sync")

    async def main() -> None:
        node.deliver(Message(MsgType.APP, "n2", "n1", 1, entries=(Entry(1, 1, None),)))
        with trio.fail_after(60):  # virtual seconds: it fires at the first loop
            await node._loop()

    with pytest.raises(Crashed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    last_line = json.loads(out.getvalue().splitlines()[-1])
    assert (last_line["event"], last_line["point"]) == ("crash-point", "wal-after-sync")
    last = readies[-1]
    assert [e.index for e in last.entries] == [1]
    assert [(m.type, m.dst) for m in last.messages] == [(MsgType.APP_RESP, "n2")]
    assert sender.sent == []  # nothing of that Ready went out
    [segment] = tmp_path.glob("wal-*.log")
    assert fsynced and fsynced[-1][1] == segment.stat().st_size > 0  # all of it fsynced
    _, rec = WAL.open(tmp_path, fsync=False)
    assert rec.hard_state.term == 1 and [e.index for e in rec.entries] == [1]
    node.wal.close()


def test_the_crash_at_request_arms_disarms_and_names_the_known_points(tmp_path: Path) -> None:
    node, out = one_member(tmp_path)

    def ask(**req: Any) -> Any:
        return node._request({"op": "crash-at", **req}, None)  # type: ignore[arg-type]

    assert ask(point="wal-after-write", skip=2) == {"ok": True}
    assert (node.crash.armed, node.crash.skip) == ("wal-after-write", 2)
    bad = ask(point="wal-sideways")
    assert bad["ok"] is False and bad["error"] == "bad-request"
    assert all(p in bad["reason"] for p in POINTS)
    assert ask(point="before-apply", skip=-1)["error"] == "bad-request"
    assert ask()["error"] == "bad-request"  # no point at all: say which
    assert node.crash.armed == "wal-after-write"  # a refused request changes nothing
    assert ask(point=None) == {"ok": True}
    assert not node.crash.armed
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events.count("crash-point-armed") == 2
    node.wal.close()
