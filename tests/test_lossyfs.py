"""The lossy-disk file system (lab/lossyfs): its undo log against an independent model of
what is durable, and the real FUSE mount, in a private mount namespace, through its
control port."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from needs import missing

from lab.lossyfs import namespace
from lab.lossyfs.undo import (
    Action,
    MoveBack,
    RemoveEntry,
    RestoreData,
    RestoreEntry,
    TornPrefix,
    UndoLog,
)

# ---------------------------------------------------------------------------------------
# The undo log, pure.
#
# `Backing` is the backing store in memory (what the page cache shows): directories of
# names to file ids, a trash area, and file contents. The operations go to it and to the
# undo log, as lossyfs's file system does. `Harness.expected` is the independent model: the
# trace of operations, from which the state at the last syncs is computed forward, by replaying
# only what had become durable.

DIRS = (1, 2)
NAMES = (b"x", b"y")


@dataclasses.dataclass
class Backing:
    dirs: dict[int, dict[bytes, int]]
    trash: dict[bytes, int]
    data: dict[int, bytearray]

    def apply(self, action: Action) -> None:
        if isinstance(action, RestoreData):
            buf = self.data[action.file]
            end = action.offset + len(action.data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[action.offset:end] = action.data
            del buf[action.size:]
            if len(buf) < action.size:
                buf.extend(bytes(action.size - len(buf)))
        elif isinstance(action, TornPrefix):
            buf = self.data[action.file]
            end = action.offset + len(action.data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[action.offset:end] = action.data
        elif isinstance(action, RemoveEntry):
            del self.dirs[action.dir][action.name]
        elif isinstance(action, RestoreEntry):
            self.dirs[action.dir][action.name] = self.trash.pop(action.trash)
        elif isinstance(action, MoveBack):
            fid = self.dirs[action.dst_dir].pop(action.dst_name)
            self.dirs[action.src_dir][action.src_name] = fid
            if action.victim is not None:
                self.dirs[action.dst_dir][action.dst_name] = self.trash.pop(action.victim)

    def view(self) -> dict[tuple[int, bytes], bytes]:
        return {(d, n): bytes(self.data[f]) for d, names in self.dirs.items()
                for n, f in names.items()}


class Harness:
    """Runs one operation sequence on the backing store + undo log and on the model."""

    def __init__(self, seed: int = 0) -> None:
        self.log = UndoLog(seed)
        self.b = Backing({d: {} for d in DIRS}, {}, {})
        self.next_fid = 1
        self.next_trash = 0
        # The model: a trace of namespace operations, and each file's durable content.
        self.trace: list[tuple[int, tuple[Any, ...], frozenset[tuple[int, bytes]]]] = []
        self.dir_synced: dict[int, int] = {d: -1 for d in DIRS}
        self.durable_data: dict[int, bytes] = {}
        self.start: dict[int, dict[bytes, int]] = {d: {} for d in DIRS}
        self.clock = 0

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _trash(self, fid: int) -> bytes:
        self.next_trash += 1
        name = b"t%d" % self.next_trash
        self.b.trash[name] = fid
        return name

    def _free(self, names: list[bytes]) -> None:
        for t in names:
            del self.b.trash[t]

    def create(self, d: int, name: bytes) -> None:
        if name in self.b.dirs[d]:
            return
        fid = self.next_fid
        self.next_fid += 1
        self.b.dirs[d][name] = fid
        self.b.data[fid] = bytearray()
        self.durable_data[fid] = b""
        self.log.created(d, name)
        self.trace.append((self._tick(), ("create", d, name, fid), frozenset({(d, name)})))

    def link(self, d: int, name: bytes, d2: int, name2: bytes) -> None:
        if name not in self.b.dirs[d] or name2 in self.b.dirs[d2]:
            return
        fid = self.b.dirs[d][name]
        self.b.dirs[d2][name2] = fid
        self.log.created(d2, name2)
        self.trace.append((self._tick(), ("link", d2, name2, fid), frozenset({(d2, name2)})))

    def unlink(self, d: int, name: bytes) -> None:
        if name not in self.b.dirs[d]:
            return
        fid = self.b.dirs[d].pop(name)
        self.log.removed(d, name, self._trash(fid))
        self.trace.append((self._tick(), ("unlink", d, name), frozenset({(d, name)})))

    def rename(self, d: int, name: bytes, d2: int, name2: bytes) -> None:
        if name not in self.b.dirs[d] or (d, name) == (d2, name2):
            return
        if self.b.dirs[d2].get(name2) == self.b.dirs[d][name]:
            return  # two names of one file: rename does nothing
        victim = None
        if name2 in self.b.dirs[d2]:
            victim = self._trash(self.b.dirs[d2].pop(name2))
        self.b.dirs[d2][name2] = self.b.dirs[d].pop(name)
        self.log.renamed(d, name, d2, name2, victim)
        self.trace.append((self._tick(), ("rename", d, name, d2, name2),
                           frozenset({(d, name), (d2, name2)})))

    def write(self, d: int, name: bytes, offset: int, data: bytes, sync: bool) -> None:
        if name not in self.b.dirs[d] or not data:
            return
        fid = self.b.dirs[d][name]
        buf = self.b.data[fid]
        old_size = len(buf)
        old = bytes(buf[offset:offset + len(data)])
        if len(buf) < offset + len(data):
            buf.extend(bytes(offset + len(data) - len(buf)))
        buf[offset:offset + len(data)] = data
        self.log.wrote(fid, offset, data, old, old_size, sync=sync)
        if sync:
            self.durable_data[fid] = bytes(buf)

    def truncate(self, d: int, name: bytes, size: int) -> None:
        if name not in self.b.dirs[d]:
            return
        fid = self.b.dirs[d][name]
        buf = self.b.data[fid]
        old_size = len(buf)
        cut = bytes(buf[size:])
        del buf[size:]
        buf.extend(bytes(size - len(buf)))
        self.log.truncated(fid, size, cut, old_size)

    def fsync(self, d: int, name: bytes) -> None:
        if name not in self.b.dirs[d]:
            return
        fid = self.b.dirs[d][name]
        self.log.fsync(fid)
        self.durable_data[fid] = bytes(self.b.data[fid])

    def fsync_dir(self, d: int) -> None:
        self._free(self.log.fsync_dir(d))
        self.dir_synced[d] = self._tick()

    def expected(self) -> dict[tuple[int, bytes], bytes]:
        """The state at the last syncs, forward: an operation is durable when each of its
        directories was fsynced after it and no earlier operation on one of its names
        (directory and name) is not; replay the durable ones from the empty start."""
        dirs = {d: dict(names) for d, names in self.start.items()}
        undurable: set[tuple[int, bytes]] = set()
        for t, op, keys in self.trace:
            if any(self.dir_synced[d] < t for d, _ in keys) or keys & undurable:
                undurable |= keys
                continue
            if op[0] in ("create", "link"):
                dirs[op[1]][op[2]] = op[3]
            elif op[0] == "unlink":
                del dirs[op[1]][op[2]]
            else:
                dirs[op[3]][op[4]] = dirs[op[1]].pop(op[2])
        return {(d, n): self.durable_data[f] for d, names in dirs.items()
                for n, f in names.items()}

    def power_off(self) -> None:
        for action in self.log.power_off():
            self.b.apply(action)
        # The backing store is now the durable state: the model starts anew from it.
        self.trace.clear()
        self.start = {d: dict(names) for d, names in self.b.dirs.items()}
        self.durable_data = {f: bytes(b) for f, b in self.b.data.items()}


dirs_st = st.sampled_from(DIRS)
names_st = st.sampled_from(NAMES)
op_st = st.one_of(
    st.tuples(st.just("create"), dirs_st, names_st),
    st.tuples(st.just("link"), dirs_st, names_st, dirs_st, names_st),
    st.tuples(st.just("unlink"), dirs_st, names_st),
    st.tuples(st.just("rename"), dirs_st, names_st, dirs_st, names_st),
    st.tuples(st.just("write"), dirs_st, names_st, st.integers(0, 12),
              st.binary(min_size=1, max_size=8), st.booleans()),
    st.tuples(st.just("truncate"), dirs_st, names_st, st.integers(0, 16)),
    st.tuples(st.just("fsync"), dirs_st, names_st),
    st.tuples(st.just("fsync_dir"), dirs_st),
)


def run_ops(h: Harness, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        getattr(h, op[0])(*op[1:])


@settings(max_examples=300, deadline=None)
@given(st.lists(op_st, max_size=40))
def test_power_off_leaves_exactly_the_state_at_the_last_syncs(
        ops: list[tuple[Any, ...]]) -> None:
    h = Harness()
    run_ops(h, ops)
    expected = h.expected()
    h.power_off()
    assert h.b.view() == expected
    assert h.b.trash == {}  # every trash entry was either restored or freed
    assert h.log.status().namespace_ops == 0 and h.log.status().unsynced_files == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(op_st, max_size=30), st.lists(op_st, max_size=30))
def test_a_second_power_off_starts_from_the_first(
        first: list[tuple[Any, ...]], second: list[tuple[Any, ...]]) -> None:
    h = Harness()
    run_ops(h, first)
    h.power_off()
    run_ops(h, second)
    expected = h.expected()
    h.power_off()
    assert h.b.view() == expected


def test_fsync_of_a_file_keeps_its_data_but_not_its_name() -> None:
    h = Harness()
    h.create(1, b"x")
    h.write(1, b"x", 0, b"hello", False)
    h.fsync(1, b"x")
    h.power_off()
    assert h.b.view() == {}


def test_a_rename_over_an_existing_name_is_undone_with_the_victim_back() -> None:
    h = Harness()
    h.create(1, b"x")
    h.write(1, b"x", 0, b"old", False)
    h.create(1, b"y")
    h.write(1, b"y", 0, b"new", False)
    h.fsync(1, b"x")
    h.fsync(1, b"y")
    h.fsync_dir(1)
    h.rename(1, b"y", 1, b"x")
    assert h.b.view() == {(1, b"x"): b"new"}
    h.power_off()
    assert h.b.view() == {(1, b"x"): b"old", (1, b"y"): b"new"}


def test_a_cross_directory_rename_is_undone_until_both_directories_are_fsynced() -> None:
    h = Harness()
    h.create(1, b"x")
    h.fsync_dir(1)
    h.rename(1, b"x", 2, b"x")
    h.fsync_dir(2)
    assert h.log.status().namespace_ops == 1
    h.fsync_dir(1)
    assert h.log.status().namespace_ops == 0


def test_torn_write_keeps_a_proper_prefix_of_the_last_write() -> None:
    for seed in range(20):
        h = Harness(seed)
        h.create(1, b"x")
        h.write(1, b"x", 0, b"durable", False)
        h.fsync(1, b"x")
        h.fsync_dir(1)
        h.write(1, b"x", 0, b"ABCDEFGHIJ", False)
        h.log.arm_torn()
        assert h.log.status().torn_armed
        h.power_off()
        got = h.b.view()[(1, b"x")]
        kept = next(k for k in range(1, 10) if got == b"ABCDEFGHIJ"[:k] + b"durable"[k:]
                    or got == b"ABCDEFGHIJ"[:k])
        assert 1 <= kept < 10
        assert not h.log.status().torn_armed


def test_sync_writes_are_durable_at_once_and_status_counts_what_is_not() -> None:
    h = Harness()
    h.create(1, b"x")
    h.write(1, b"x", 0, b"abc", False)
    assert h.log.status().unsynced_bytes == 3
    assert h.log.status().unsynced_files == 1
    h.write(1, b"x", 3, b"def", True)  # O_SYNC: this write and the earlier ones
    assert h.log.status().unsynced_bytes == 0
    h.fsync_dir(1)
    h.power_off()
    assert h.b.view() == {(1, b"x"): b"abcdef"}


def test_a_removal_cannot_become_durable_before_the_rename_that_made_its_name() -> None:
    h = Harness()
    h.create(1, b"x")
    h.write(1, b"x", 0, b"data", False)
    h.fsync(1, b"x")
    h.fsync_dir(1)
    h.rename(1, b"x", 2, b"y")
    h.unlink(2, b"y")
    h.fsync_dir(2)  # the rename is still undoable (dir 1 not fsynced): so is the unlink
    assert h.log.status().namespace_ops == 2
    expected = h.expected()
    h.power_off()
    assert h.b.view() == expected == {(1, b"x"): b"data"}


def test_a_change_to_another_name_does_not_wait_for_a_cross_directory_rename() -> None:
    h = Harness()
    h.create(1, b"x")
    h.fsync_dir(1)
    h.rename(1, b"x", 2, b"x")  # undoable until dir 1 is fsynced too
    h.create(2, b"y")
    h.fsync_dir(2)  # makes 2/y durable: nothing undoable touched that name
    assert h.log.status().namespace_ops == 1
    expected = h.expected()
    h.power_off()
    assert h.b.view() == expected == {(1, b"x"): b"", (2, b"y"): b""}


def test_a_durable_rmdir_takes_the_pending_changes_inside_with_it() -> None:
    log = UndoLog()
    root, d, e = 1, 10, 11
    log.removed(e, b"f", b"t1")  # unlink d/e/f
    log.removed(d, b"e", b"t2", gone=e)  # rmdir d/e
    log.removed(d, b"g", b"t3")  # unlink d/g
    log.removed(root, b"d", b"t4", gone=d)  # rmdir d
    assert log.fsync_dir(root) == [b"t1", b"t2", b"t3", b"t4"]
    assert log.status().namespace_ops == 0
    assert log.power_off() == []


def test_a_rmdir_waits_for_a_rename_into_it_from_a_directory_not_fsynced() -> None:
    log = UndoLog()
    root, a, d = 1, 10, 11
    log.renamed(a, b"x", d, b"x", None)
    log.removed(d, b"x", b"t1")
    log.removed(root, b"d", b"t2", gone=d)
    assert log.fsync_dir(root) == []  # the rename's undo needs d/x, so d
    assert log.status().namespace_ops == 3
    assert log.fsync_dir(a) == [b"t1", b"t2"]
    assert log.status().namespace_ops == 0


def test_a_torn_write_tears_the_newest_unsynced_write_though_a_later_one_was_synced(
        ) -> None:
    h = Harness(3)
    h.create(1, b"x")
    h.create(1, b"y")
    h.fsync_dir(1)
    h.write(1, b"x", 0, b"ABCDEFGHIJ", False)
    h.write(1, b"y", 0, b"synced", False)
    h.fsync(1, b"y")  # the last write is durable: x's is the newest one that is not
    h.log.arm_torn()
    torn = [a for a in h.log.power_off() if isinstance(a, TornPrefix)]
    assert len(torn) == 1
    assert torn[0].of == 10 and 1 <= len(torn[0].data) < 10
    assert b"ABCDEFGHIJ".startswith(torn[0].data)


# ---------------------------------------------------------------------------------------
# The real mount, in a private mount namespace.

DRIVER = Path(__file__).with_name("lossyfs_driver.py")


def needs_fuse() -> None:
    why = namespace.problem()
    if why is not None:
        missing("fuse", why)


def host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.fixture(scope="module")
def mounted_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of tests/lossyfs_driver.py under ``unshare --mount``: its JSON."""
    needs_fuse()
    base = tmp_path_factory.mktemp("lossyfs")
    backing, mnt = base / "backing", base / "mnt"
    backing.mkdir()
    mnt.mkdir()
    # Its own process group: on a timeout or a failure the driver and its daemon are
    # killed together (and the daemon dies with the driver anyway: namespace.with_parent).
    proc = subprocess.Popen(namespace.private([sys.executable, str(DRIVER), str(backing),
                                               str(mnt)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=Path(__file__).parent.parent)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.returncode is None or proc.returncode != 0:
            _killpg(proc.pid)
        proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert str(mnt) not in host_mounts()
    result: dict[str, Any] = json.loads(stdout)
    result["mnt"] = str(mnt)
    result["backing"] = str(backing)
    return result


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signal.SIGKILL)


def test_written_not_fsynced_is_gone_after_power_off_and_fsynced_stays(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["mmap_before"] == "durable+lost"
    assert r["status_before"]["unsynced_bytes"] == len("+lost")
    assert r["power_off"]["ok"] and r["power_off"]["failed"] == 0
    assert r["power_off"]["torn"] is None
    assert r["data_after"] == "durable"
    assert r["mmap_after"] == "durable"  # the kernel's cached pages went too
    assert r["status_after"]["unsynced_bytes"] == 0
    assert r["status_after"]["namespace_ops"] == 0


def test_a_file_fsynced_in_a_directory_never_fsynced_disappears(
        mounted_run: dict[str, Any]) -> None:
    assert "new" in mounted_run["listing_before"]
    assert "new" not in mounted_run["listing_after"]
    assert "sub" in mounted_run["listing_before"]  # made, its own entries fsynced
    assert "sub" not in mounted_run["listing_after"]


def test_a_rename_without_a_directory_fsync_is_undone(mounted_run: dict[str, Any]) -> None:
    assert "current.tmp" not in mounted_run["listing_before"]
    assert mounted_run["current_after"] == "old"
    assert mounted_run["current_tmp_after"] == "new"


def test_a_torn_write_keeps_a_proper_prefix_of_the_newest_unsynced_write(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["torn_armed"] == {"ok": True} and r["torn_status"] is True
    assert 1 <= len(r["torn_after"]) < 4096
    assert set(r["torn_after"]) == {"A"}
    torn = r["torn_power_off"]["torn"]
    assert torn == {"file": "torn", "kept": len(r["torn_after"]), "of": 4096}


def test_open_o_trunc_truncates_and_a_power_off_undoes_it(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["otrunc_before"] == "new"
    assert r["otrunc_status"]["unsynced_bytes"] == len("snapshot-old") + len("new")
    assert r["otrunc_after"] == "snapshot-old"


def test_o_direct_reads_and_writes_work_and_the_daemon_lives(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["odirect"] is None and r["odirect_read"] and r["odirect_alive"]


def test_ftruncate_works_on_a_file_whose_name_is_gone_for_good(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["ftruncate_unlinked"] is None and r["ftruncate_size"] == 2
    assert r["ftruncate_power_off"]["ok"]  # nothing to undo on a file gone for good


def test_a_durable_rmdir_frees_the_removals_pending_inside_it(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["rmdir_status"]["namespace_ops"] == 0
    assert r["rmdir_trash"] == []


def test_a_cross_directory_rename_does_not_hold_back_another_name(
        mounted_run: dict[str, Any]) -> None:
    assert mounted_run["rename_a"] == ["x"]  # the rename is undone (a never fsynced)
    assert mounted_run["rename_b"] == ["y"]  # b/y was made durable by fsync(b)


def test_a_power_off_whose_undo_fails_answers_not_ok(mounted_run: dict[str, Any]) -> None:
    answer = mounted_run["failed_power_off"]
    assert answer["ok"] is False and answer["failed"] == 1 and "failed" in answer["error"]


def test_an_unclean_end_keeps_the_trash_and_the_next_mount_empties_it(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["unmounted_rc"] == 0
    assert len(r["trash_left"]) == 1  # the unlink was not made durable by the end
    assert r["trash_at_start"] == []
    assert r["restarted_rc"] == 0


def test_an_o_sync_write_is_durable_without_fsync(mounted_run: dict[str, Any]) -> None:
    assert mounted_run["osync_after"] == "synced"


def test_sync_makes_everything_written_durable(mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["sync"] == {"ok": True}
    assert r["sync_status"]["unsynced_bytes"] == 0
    assert r["sync_status"]["namespace_ops"] == 0
    assert r["sync_after"] == "kept"


def test_armed_errors_come_back_with_their_errno_and_stop_after_heal(
        mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["fail_eio"]["ok"] and r["write_eio"] == "EIO"
    assert r["fsync_while_write_fails"] is None  # armed on writes only
    assert r["fail_enospc"]["ok"] and r["fsync_enospc"] == "ENOSPC"
    assert r["fail_status"] == {"errno": "ENOSPC", "on": ["fsync"]}
    assert r["heal"] == {"ok": True} and r["write_healed"] is None


def test_slow_fsync_is_acknowledged_and_reported(mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["slow"] == {"ok": True, "slow_fsync_ms": 5}
    assert r["slow_status"] == 5 and r["fsync_slow"] is None and r["slow_healed"] == 0


def test_garbage_on_the_control_port_gets_an_error_and_the_port_still_answers(
        mounted_run: dict[str, Any]) -> None:
    answers = mounted_run["garbage"]
    assert all(a["ok"] is False and a["error"] for a in answers)
    assert "unknown op 'reboot'" in answers[2]["error"]
    assert 'must be one of' in answers[5]["error"]  # "errno": [], rejected cleanly
    assert "line longer than" in answers[6]["error"]
    assert mounted_run["after_garbage"] is True


def test_the_mount_leaves_nothing_behind(mounted_run: dict[str, Any]) -> None:
    r = mounted_run
    assert r["daemon_rc"] == 0  # SIGTERM: a clean unmount
    assert r["ready"]["mount"] == r["mnt"]
    assert ".lossyfs-trash" not in r["backing_after"]  # emptied and removed
    assert r["mnt"] not in host_mounts()
    assert not psutil.pid_exists(r["ready"]["pid"])


def test_a_sigkilled_namespace_takes_its_mount_with_it(tmp_path: Path) -> None:
    needs_fuse()
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    daemon = subprocess.Popen(namespace.daemon_argv(backing, mnt), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, start_new_session=True,
                              cwd=Path(__file__).parent.parent)
    try:
        assert daemon.stdout is not None
        ready = json.loads(daemon.stdout.readline())
        assert ready["pid"] == daemon.pid  # unshare execs: the pid is the daemon's
        assert namespace.mounted(mnt, daemon.pid)  # mounted in its namespace...
        assert not namespace.mounted(mnt)  # ...never in ours
        user = subprocess.run(namespace.enter(daemon.pid, [
            "sh", "-c", f"echo through > {mnt}/f && cat {mnt}/f"]),
            capture_output=True, timeout=60)
        assert user.stdout == b"through\n", user.stderr
        assert (backing / "f").read_bytes() == b"through\n"
        assert str(mnt) not in host_mounts()
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=60)
    assert str(mnt) not in host_mounts()
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if str(mnt) in " ".join(p.info["cmdline"] or [])]
    assert left == []
    shutil.rmtree(tmp_path)  # no mount under it: it goes


PARENT = """
import subprocess, sys
from pathlib import Path
from lab.lossyfs import namespace
daemon = subprocess.Popen(namespace.daemon_argv(Path(sys.argv[1]), Path(sys.argv[2])),
                          stdout=subprocess.PIPE)
sys.stdout.buffer.write(daemon.stdout.readline())
sys.stdout.flush()
daemon.wait()
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_daemon_dies_with_its_sigkilled_parent_and_leaves_no_mount(
        tmp_path: Path) -> None:
    needs_fuse()
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        parent = subprocess.Popen([sys.executable, "-c", PARENT, str(backing), str(mnt)],
                                  stdout=subprocess.PIPE, stderr=stderr,
                                  start_new_session=True, cwd=Path(__file__).parent.parent)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, stderr_path.read_text()
        pid = json.loads(line)["pid"]
        assert namespace.mounted(mnt, pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
        deadline = time.monotonic() + 60
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # a condition polled, not a sleep hoped on
        assert gone(pid), f"the daemon outlived its parent: {stderr_path.read_text()}"
    finally:
        _killpg(parent.pid)
        parent.wait(timeout=60)
    assert not namespace.mounted(mnt, pid)
    assert str(mnt) not in host_mounts()
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if str(mnt) in " ".join(p.info["cmdline"] or [])]
    assert left == []


def test_a_handler_answers_an_errno_or_eio_and_never_raises_anything_else(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pyfuse3 = pytest.importorskip("pyfuse3")
    import trio

    from lab.lossyfs import fs as lossyfs

    f = lossyfs.LossyFS(tmp_path)
    assert not (tmp_path / ".lossyfs-trash").exists()  # only once mounted

    def bug(*args: object) -> None:
        raise KeyError("a bug")

    def oserror(*args: object) -> None:
        raise OSError(errno.EROFS, "read-only")

    async def errno_of(op: Any, *args: Any) -> int:
        with pytest.raises(pyfuse3.FUSEError) as e:
            await op(*args)
        return int(e.value.errno)

    async def main() -> None:
        f._entry = bug  # type: ignore[method-assign]
        assert await errno_of(f.lookup, pyfuse3.ROOT_INODE, b"x", None) == errno.EIO
        f._entry = oserror  # type: ignore[method-assign]
        assert await errno_of(f.lookup, pyfuse3.ROOT_INODE, b"x", None) == errno.EROFS
        f._nodes[99] = lossyfs._Node(99, 0)  # a directory with no name left
        assert await errno_of(f.lookup, 99, b"..", None) == errno.ENOENT

    trio.run(main)
    assert "lookup failed" in caplog.text and "a bug" in caplog.text


def test_the_probe_makes_a_real_mount_and_says_why_one_fails() -> None:
    needs_fuse()
    assert namespace.probe() is None
    assert namespace.probe(python="/bin/false") == (
        "the lossy file system could not mount here: exit 1")
