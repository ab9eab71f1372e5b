"""Run inside a private mount namespace by tests/test_lossyfs.py: mount the lossy file
system (``python -m lab.lossyfs``, a child, so in this namespace), do file operations
through the mount and control operations through its port, and print one JSON object of
what was seen. Usage: ``lossyfs_driver.py BACKING MOUNTPOINT``."""

from __future__ import annotations

import errno
import json
import mmap
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab.lossyfs import namespace


class Control:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rwb")

    def raw(self, line: bytes) -> dict[str, Any]:
        self.file.write(line)
        self.file.flush()
        answer: dict[str, Any] = json.loads(self.file.readline())
        return answer

    def op(self, **req: Any) -> dict[str, Any]:
        return self.raw(json.dumps(req).encode() + b"\n")


def write(path: Path, data: bytes, *, fsync: bool, flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def errno_of(fn: Any) -> str | None:
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return None


def odirect(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
        buf.write(b"D" * 4096)
        os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)


def scenarios(m: Path, backing: Path, c: Control) -> dict[str, Any]:
    out: dict[str, Any] = {}

    # Written and fsynced stays; written after the last fsync goes.
    write(m / "data", b"durable", fsync=True)
    fsync_dir(m)
    with open(m / "data", "ab") as f:
        f.write(b"+lost")
    # A rename over an existing name, directory not fsynced: both come back.
    write(m / "current", b"old", fsync=True)
    write(m / "current.tmp", b"new", fsync=True)
    fsync_dir(m)
    os.replace(m / "current.tmp", m / "current")
    # Created, data fsynced, its directory never: the file goes.
    write(m / "new", b"orphan", fsync=True)
    # A subdirectory made and fsynced, but not its parent: it goes, with what it held.
    os.mkdir(m / "sub")
    write(m / "sub" / "f", b"x", fsync=True)
    fsync_dir(m / "sub")
    # An mmap reader sees the page cache's view before, the durable one after.
    with open(m / "data", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        out["mmap_before"] = bytes(mm[:]).decode()
    out["status_before"] = c.op(op="status")
    out["listing_before"] = sorted(os.listdir(m))
    out["power_off"] = c.op(op="power-off")
    out["listing_after"] = sorted(os.listdir(m))
    out["data_after"] = (m / "data").read_bytes().decode()
    with open(m / "data", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        out["mmap_after"] = bytes(mm[:]).decode()
    out["current_after"] = (m / "current").read_bytes().decode()
    out["current_tmp_after"] = (m / "current.tmp").read_bytes().decode()
    out["status_after"] = c.op(op="status")

    # A torn write: a proper prefix of the newest unsynced write survives, though a later
    # write to another file was fsynced.
    write(m / "torn", b"", fsync=True)
    fsync_dir(m)
    write(m / "torn", b"A" * 4096, fsync=False)
    write(m / "data", b"durable", fsync=True)
    out["torn_armed"] = c.op(op="torn-write")
    out["torn_status"] = c.op(op="status")["torn_armed"]
    out["torn_power_off"] = c.op(op="power-off")
    out["torn_after"] = (m / "torn").read_bytes().decode()

    # open(O_TRUNC) of an existing file truncates it, and the truncate is undone.
    write(m / "snap.tmp", b"snapshot-old", fsync=True)
    fsync_dir(m)
    write(m / "snap.tmp", b"new", fsync=False, flags=os.O_TRUNC)
    out["otrunc_before"] = (m / "snap.tmp").read_bytes().decode()
    out["otrunc_status"] = c.op(op="status")
    c.op(op="power-off")
    out["otrunc_after"] = (m / "snap.tmp").read_bytes().decode()

    # O_DIRECT: the backing file is opened without it (its unaligned I/O would fail).
    out["odirect"] = errno_of(lambda: odirect(m / "direct"))
    out["odirect_read"] = (m / "direct").read_bytes() == b"D" * 4096
    out["odirect_alive"] = c.op(op="status")["ok"]

    # ftruncate through a descriptor whose name was removed for good.
    fd = os.open(m / "doomed", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"doomed")
        os.unlink(m / "doomed")
        fsync_dir(m)  # its removal is durable: its trash entry is deleted
        out["ftruncate_unlinked"] = errno_of(lambda: os.ftruncate(fd, 2))
        out["ftruncate_size"] = os.fstat(fd).st_size
    finally:
        os.close(fd)
    out["ftruncate_power_off"] = c.op(op="power-off")

    # A directory's durable removal takes the pending removals inside it.
    os.mkdir(m / "d")
    fsync_dir(m)
    write(m / "d" / "f", b"f", fsync=True)
    fsync_dir(m / "d")
    os.unlink(m / "d" / "f")
    os.rmdir(m / "d")
    fsync_dir(m)
    out["rmdir_status"] = c.op(op="status")
    out["rmdir_trash"] = sorted(os.listdir(backing / ".lossyfs-trash"))

    # A change to another name in a directory does not wait for a cross-directory rename.
    os.mkdir(m / "a")
    os.mkdir(m / "b")
    fsync_dir(m)
    write(m / "a" / "x", b"x", fsync=True)
    fsync_dir(m / "a")
    os.rename(m / "a" / "x", m / "b" / "x")
    write(m / "b" / "y", b"y", fsync=True)
    fsync_dir(m / "b")
    c.op(op="power-off")
    out["rename_a"] = sorted(os.listdir(m / "a"))
    out["rename_b"] = sorted(os.listdir(m / "b"))

    # An undo action that cannot be applied (its file was removed behind the mount's
    # back) makes the power-off answer ok: false.
    write(m / "behind", b"", fsync=False)
    os.unlink(backing / "behind")
    out["failed_power_off"] = c.op(op="power-off")

    # O_SYNC writes are durable at once.
    write(m / "osync", b"synced", fsync=False, flags=os.O_SYNC)
    fsync_dir(m)
    c.op(op="power-off")
    out["osync_after"] = (m / "osync").read_bytes().decode()

    # sync: everything written so far becomes durable, names included.
    write(m / "synced-by-op", b"kept", fsync=False)
    out["sync"] = c.op(op="sync")
    out["sync_status"] = c.op(op="status")
    c.op(op="power-off")
    out["sync_after"] = (m / "synced-by-op").read_bytes().decode()

    # Errors while armed, none after heal.
    out["fail_eio"] = c.op(op="fail", errno="EIO", on=["write"])
    out["write_eio"] = errno_of(lambda: write(m / "data", b"z", fsync=False))
    out["fsync_while_write_fails"] = errno_of(lambda: fsync_dir(m))
    out["fail_enospc"] = c.op(op="fail", errno="ENOSPC", on=["fsync"])
    out["fsync_enospc"] = errno_of(lambda: fsync_dir(m))
    out["fail_status"] = c.op(op="status")["fail"]
    out["heal"] = c.op(op="heal")
    out["write_healed"] = errno_of(lambda: write(m / "data", b"z", fsync=True))

    # A slow fsync is acknowledged and reported (its delay is not timed here).
    out["slow"] = c.op(op="slow-fsync", ms=5)
    out["slow_status"] = c.op(op="status")["slow_fsync_ms"]
    out["fsync_slow"] = errno_of(lambda: fsync_dir(m))
    c.op(op="heal")
    out["slow_healed"] = c.op(op="status")["slow_fsync_ms"]

    # Garbage and unknown operations get an error answer; the port keeps answering.
    out["garbage"] = [c.raw(line) for line in (
        b"\xff\xfe not json\n", b"[1, 2]\n", b'{"op": "reboot"}\n',
        b'{"op": "slow-fsync", "ms": "soon"}\n', b'{"op": "fail", "errno": "EPERM"}\n',
        b'{"op": "fail", "errno": []}\n', b"[" * 100_000 + b"\n")]
    c = Control(c.port)  # a line too long: answered, and the connection closed
    out["after_garbage"] = c.op(op="status")["ok"]
    return out


def start(backing: Path, mountpoint: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    daemon = subprocess.Popen(
        namespace.with_parent([sys.executable, "-m", "lab.lossyfs", str(backing),
                               str(mountpoint), "--control", "127.0.0.1:0"]),
        stdout=subprocess.PIPE, stderr=sys.stderr)
    assert daemon.stdout is not None
    line = daemon.stdout.readline()
    if not line:
        stop(daemon)
        raise SystemExit(f"the daemon did not start (exit {daemon.returncode})")
    ready: dict[str, Any] = json.loads(line)
    return daemon, ready


def stop(daemon: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if it is still there after a minute."""
    daemon.terminate()
    try:
        return daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        return daemon.wait()


def crash_keeps_the_trash(backing: Path, m: Path) -> dict[str, Any]:
    """A daemon that ends without SIGTERM (unmounted under it) does not make its pending
    removals durable; the next one empties the trash it left."""
    out: dict[str, Any] = {}
    daemon, _ = start(backing, m)
    try:
        os.unlink(m / "data")  # not durable: waits in the trash
        subprocess.run(["umount", "-l", str(m)], check=True, timeout=60)
        out["unmounted_rc"] = daemon.wait(timeout=60)
    finally:
        if daemon.poll() is None:
            stop(daemon)
    out["trash_left"] = sorted(os.listdir(backing / ".lossyfs-trash"))
    daemon, _ = start(backing, m)
    try:
        out["trash_at_start"] = sorted(os.listdir(backing / ".lossyfs-trash"))
    finally:
        out["restarted_rc"] = stop(daemon)
    return out


def main() -> int:
    backing, mountpoint = Path(sys.argv[1]), Path(sys.argv[2])
    daemon, ready = start(backing, mountpoint)
    try:
        c = Control(ready["control"][1])
        result = scenarios(mountpoint, backing, c)
        result["ready"] = ready
    finally:
        result_rc = stop(daemon)
    result["daemon_rc"] = result_rc
    result["backing_after"] = sorted(os.listdir(backing))
    result.update(crash_keeps_the_trash(backing, mountpoint))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
