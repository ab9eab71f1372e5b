"""Mounts that cannot outlive a run: the lossy file system lives in a private mount
namespace.

The daemon is started under ``unshare --mount --propagation private``, so its mount is
made in a namespace of its own that the host never sees; whatever uses the mount joins
that namespace (``nsenter --mount=/proc/PID/ns/mnt``). A namespace ends when its last
process ends, and its mounts with it: however the daemon and its users die, SIGKILL
included, nothing is left mounted anywhere. And the daemon dies with its parent (a
parent-death signal), so a SIGKILLed test or lab run does not leave it running.

Mounting needs root (or CAP_SYS_ADMIN), ``/dev/fuse``, util-linux's ``unshare``,
``nsenter`` and ``setpriv``, and pyfuse3 (``pip install -e '.[disk]'``): :func:`problem`
says what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def problem() -> str | None:
    """Why a lossy mount cannot be made here, in one line, or None."""
    if os.geteuid() != 0:
        return "the lossy file system needs root, to mount inside a private mount namespace"
    if not os.path.exists("/dev/fuse"):
        return "the lossy file system needs /dev/fuse (Debian: fuse3)"
    for tool in ("unshare", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            return f"the lossy file system needs '{tool}' (util-linux) on PATH"
    if importlib.util.find_spec("pyfuse3") is None:
        return ("the lossy file system needs pyfuse3: pip install -e '.[disk]' "
                "(Debian: libfuse3-dev pkg-config first)")
    return None


def probe(python: str = sys.executable, timeout: float = 60.0) -> str | None:
    """Why a lossy mount cannot be made here, or None, found by making one: the daemon is
    started on two fresh directories, waited for until it says it is mounted, and ended.
    (:func:`problem` only looks: a container may have ``/dev/fuse`` and still refuse.)"""
    why = problem()
    if why is not None:
        return why
    with tempfile.TemporaryDirectory(prefix="lossyfs-probe-") as tmp:
        backing, mnt = Path(tmp) / "backing", Path(tmp) / "mnt"
        backing.mkdir()
        mnt.mkdir()
        proc = subprocess.Popen(daemon_argv(backing, mnt, python=python),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        assert proc.stdout is not None
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                ready = bool(sel.select(timeout)) and b'"ready"' in proc.stdout.readline()
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
    if ready and proc.returncode == 0:
        return None
    lines = err.decode(errors="replace").strip().splitlines()
    return ("the lossy file system could not mount here: "
            + (lines[-1] if lines else f"exit {proc.returncode}"))


def private(argv: Sequence[str]) -> list[str]:
    """``argv`` in a new private mount namespace (``unshare`` execs it: same pid), killed
    when its parent dies (:func:`with_parent`)."""
    return with_parent(["unshare", "--mount", "--propagation", "private", "--", *argv])


def with_parent(argv: Sequence[str]) -> list[str]:
    """``argv``, SIGKILLed when the thread that started it dies (``setpriv --pdeathsig``,
    which execs it: same pid), so a mount namespace it holds cannot outlive whoever
    started it, even a SIGKILLed one. Start it from a thread that lives as long as it
    should: the main thread, not a worker thread that exits when idle."""
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv]


def daemon_argv(backing: Path, mountpoint: Path, *, control: str = "127.0.0.1:0",
                seed: int = 0, python: str = sys.executable) -> list[str]:
    """The lossy file system's daemon, in a private mount namespace of its own. It prints
    one JSON line ``{"event": "ready", ...}`` on stdout once mounted (docs/lossyfs.md)."""
    return private([python, "-m", "lab.lossyfs", str(backing), str(mountpoint),
                    "--control", control, "--seed", str(seed)])


def enter(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the mount namespace of process ``pid`` (the daemon), where the
    lossy mount is."""
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *argv]


def mounted(mountpoint: Path, pid: int | str = "self") -> bool:
    """Whether ``mountpoint`` is a mount point in the mount namespace of ``pid``."""
    target = os.path.realpath(mountpoint)
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False
    return any(_unescape(line.split()[4]) == target for line in text.splitlines()
               if len(line.split()) > 4)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


if __name__ == "__main__":  # python -m lab.lossyfs.namespace: can a lossy mount be made?
    reason = probe()
    if reason is not None:
        print(reason)
    sys.exit(0 if reason is None else 1)
