"""Child processes that cannot outlive the lab.

Every member process is started in its own process group (so a terminal's Ctrl-C reaches
only the controller, which then stops members in order) with Linux's parent-death signal
set to SIGKILL (so even a SIGKILLed controller takes its members with it).
"""

from __future__ import annotations

import abc
import collections
import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import trio

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def spawn(argv: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_child_setup, env=env, cwd=cwd, close_fds=True,
        )


def signal_process(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def wait_or_end(proc: subprocess.Popen[bytes], timeout: float, grace: float = 30.0
                ) -> int | None:
    """Wait for a child (a whole ``raftlab run``) up to ``timeout`` seconds; past that,
    SIGTERM it (it cleans up), and SIGKILL it if it is still there ``grace`` seconds
    later. Its exit code, or None when it had to be ended."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_process(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_process(proc, signal.SIGKILL)
            proc.wait()
        return None


def descendants_alive(pids: Sequence[int]) -> list[int]:
    """Which of ``pids`` (and their children) are still running (zombies excluded)."""
    alive = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for q in procs:
            try:
                if q.status() != psutil.STATUS_ZOMBIE:
                    alive.append(q.pid)
            except psutil.NoSuchProcess:
                pass
    return alive


def listening_ports(ports: Sequence[int], *, pids: Sequence[int] | None = None,
                    marker: str | None = None) -> list[int]:
    """Which of ``ports`` still have a TCP listener on this machine.

    With ``pids`` (the processes a run started), a listener counts only if it may be one
    of them or theirs: its process is unknown, is one of ``pids``, is in one of their
    process groups (each child leads its own), is a child of this process, or has
    ``marker`` (the run directory) on its command line. A port another program bound
    after the run let it go is not the run's leftover."""
    wanted = set(ports)
    found = set()
    for c in psutil.net_connections(kind="tcp"):
        if c.status != psutil.CONN_LISTEN or not c.laddr or c.laddr.port not in wanted:
            continue
        if pids is None or c.pid is None or _may_be_ours(c.pid, pids, marker):
            found.add(c.laddr.port)
    return sorted(found)


def _may_be_ours(pid: int, pids: Sequence[int], marker: str | None) -> bool:
    try:
        p = psutil.Process(pid)
        return (pid in pids or os.getpgid(pid) in pids or p.ppid() == os.getpid()
                or (marker is not None and any(marker in arg for arg in p.cmdline())))
    except (psutil.Error, ProcessLookupError):
        return False  # gone since: not listening any more


#: Ports :func:`free_ports` handed out lately in this process, never handed out twice: a
#: port picked for a member and closed again is free until the member binds it, and the
#: kernel would happily give it to the next ``bind(0)`` (a proxy, say) meanwhile.
_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=8192)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago (bound to port 0, then closed),
    none of them handed out by an earlier call in this process. Every port a run binds
    comes from here, so a member and a proxy never get the same one."""
    import socket

    recent = set(_RECENT_PORTS)
    socks: list[Any] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)  # held until the end, so the kernel cannot repeat it now
            port = s.getsockname()[1]
            if port not in recent:
                ports.append(port)
            if len(socks) > n + 1024:
                raise OSError(f"no {n} free ports on {host} that were not handed out lately")
    finally:
        for s in socks:
            s.close()
    _RECENT_PORTS.extend(ports)
    return ports


#: Lines of a member's log kept with an exit the lab did not cause.
EXIT_LOG_LINES = 12


class _ExitWatch:
    """Which member processes the lab itself ended (killed or stopped), and the exits it
    did not cause, each reported once."""

    def __init__(self) -> None:
        # Popen objects (never pids: a pid can be reused by a later process)
        self.caused: set[subprocess.Popen[bytes]] = set()
        # processes the lab armed to exit with a code of their own (a crash point)
        self.expected: dict[subprocess.Popen[bytes], int] = {}
        self.seen: set[subprocess.Popen[bytes]] = set()
        self.pending: list[dict[str, Any]] = []


def log_tail(path: Path, lines: int = EXIT_LOG_LINES) -> list[str]:
    """The last ``lines`` lines of a log file (empty if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line[:500] for line in text.splitlines()[-lines:]]


class MemberProcesses(abc.ABC):
    """The process side of a system adapter's cluster: signal, kill, stop, ask whether a
    member runs, and list the pids and ports. ``members`` maps ids to objects with a
    ``proc`` (the member's ``Popen`` or None), ``peer`` and ``client`` addresses and a
    ``log_path``.

    It also tells the exits the lab caused (:meth:`kill`, :meth:`stop`, a crash point it
    armed: :meth:`expect_exit`) from those it did not: a member that exits on its own (a
    crash, a panic, a refusal to start on its own data) is a finding, collected by
    :meth:`collect_exits`."""

    members: Any

    @property
    def _exit_watch(self) -> _ExitWatch:
        w = self.__dict__.get("_exit_watch_state")
        if w is None:
            w = self.__dict__["_exit_watch_state"] = _ExitWatch()
        return w

    def _check_exit(self, mid: str, p: subprocess.Popen[bytes] | None) -> None:
        w = self._exit_watch
        if p is None or p in w.seen or p in w.caused or p.poll() is None:
            return
        if w.expected.get(p) == p.returncode:
            w.caused.add(p)  # it died where the lab armed it to
            return
        w.seen.add(p)
        w.pending.append({"node": mid, "pid": p.pid, "code": p.returncode,
                          "log_tail": log_tail(Path(self.members[mid].log_path))})

    def collect_exits(self) -> list[dict[str, Any]]:
        """The member exits the lab did not cause, found since the last call: ``node``,
        ``pid``, ``code`` (negative: the signal that ended it) and ``log_tail`` (the last
        lines of its log)."""
        for mid, m in self.members.items():
            self._check_exit(mid, m.proc)
        w = self._exit_watch
        out, w.pending = w.pending, []
        return out

    def expect_exit(self, mid: str, code: int) -> None:
        """The lab may have armed member ``mid``'s running process to exit with ``code``
        (it sent it a crash point): that exit, and only that code, is the lab's doing, for
        the rest of that process's life. There is no taking it back: a member that did
        not answer may arm itself later, and one that answered a disarm may already have
        been on its way out at the point."""
        p = self.members[mid].proc
        if p is not None:
            self._exit_watch.expected[p] = code

    def process(self, mid: str) -> Any:
        """Member ``mid``'s current (or last) process, None before its first start: an
        opaque handle for :meth:`exit_code` and :meth:`exited_as_expected`; every start
        makes a new one."""
        return self.members[mid].proc

    def exit_code(self, process: Any) -> int | None:
        """The exit code of a :meth:`process` (negative: the signal that ended it); None
        while it runs."""
        return None if process is None else process.poll()

    def exited_as_expected(self, process: Any) -> bool:
        """Whether a :meth:`process` has exited with the code :meth:`expect_exit` armed
        it for (it died at a crash point the lab armed)."""
        code = self._exit_watch.expected.get(process) if process is not None else None
        return code is not None and process.poll() == code

    async def crash_at(self, mid: str, point: str | None, skip: int = 0) -> bool | None:
        """Arm crash point ``point`` in member ``mid`` (None: disarm). True: done (or,
        arming, the member already died at the point); False: not done (the member is
        not running, refused, or died of something else); None: no answer, so the member
        may be armed (or, disarming, still be). A system with crash points says how
        (:attr:`~lab.systems.types.SystemSpec.crash_points`); by default there are none,
        and nothing is armed."""
        return False

    @abc.abstractmethod
    def argv(self, mid: str) -> list[str]:
        """The command line that starts member ``mid``."""

    def prepare(self, mid: str) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Anything a member needs on disk before each start (nothing by default)."""

    def start(self, mid: str) -> None:
        """Start the member unless it runs; its output goes to its ``log_path``."""
        m = self.members[mid]
        if m.proc is not None and m.proc.poll() is None:
            return
        self._check_exit(mid, m.proc)  # before the next life replaces it
        self.prepare(mid)
        m.proc = spawn(self.argv(mid), log_path=m.log_path)
        m.starts += 1

    def start_all(self) -> None:
        for mid in self.members:
            self.start(mid)

    def signal(self, mid: str, sig: int) -> None:
        p = self.members[mid].proc
        if p is not None:
            signal_process(p, sig)

    async def kill(self, mid: str) -> None:
        """SIGKILL (after SIGCONT, in case it is paused) and reap."""
        p = self.members[mid].proc
        if p is not None:
            if p.poll() is None:
                self._exit_watch.caused.add(p)
            self.signal(mid, signal.SIGCONT)
            signal_process(p, signal.SIGKILL)
            await trio.to_thread.run_sync(p.wait)

    async def stop(self, mid: str, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        p = self.members[mid].proc
        if p is None or p.poll() is not None:
            return
        self._exit_watch.caused.add(p)
        self.signal(mid, signal.SIGCONT)
        signal_process(p, signal.SIGTERM)
        with trio.move_on_after(grace):
            while p.poll() is None:
                await trio.sleep(0.02)
        if p.poll() is None:
            await self.kill(mid)

    async def stop_members(self) -> None:
        """Stop every member at once (SIGTERM, SIGKILL after the grace period)."""
        async with trio.open_nursery() as n:
            for mid in self.members:
                n.start_soon(self.stop, mid)

    def alive(self, mid: str) -> bool:
        p = self.members[mid].proc
        return p is not None and p.poll() is None

    def pids(self) -> list[int]:
        return [m.proc.pid for m in self.members.values() if m.proc is not None]

    def ports(self) -> list[int]:
        return [port for m in self.members.values() for port in (m.peer[1], m.client[1])]

    # -- the members' status (each adapter says how to ask one member: ``status``)

    @abc.abstractmethod
    async def status(self, mid: str, timeout: float) -> dict[str, Any] | None:
        """Member ``mid``'s status (``lab.systems.types.STATUS_FIELDS``), None if it cannot say."""

    async def statuses(self, timeout: float = 0.5) -> dict[str, dict[str, Any] | None]:
        """Every member's status at once (None: down or not answering in time)."""
        out: dict[str, dict[str, Any] | None] = {}

        async def one(mid: str) -> None:
            out[mid] = await self.status(mid, timeout)

        async with trio.open_nursery() as n:
            for mid in self.members:
                n.start_soon(one, mid)
        return out

    async def wait_leader(self, timeout: float = 10.0, exclude: Sequence[str] = ()) -> str:
        """The id of a member that says it leads (the highest term's, if several do)."""
        with trio.fail_after(timeout):
            while True:
                st = await self.statuses()
                leaders = [s for mid, s in st.items() if s and s["role"] == "leader"
                           and mid not in exclude]
                if leaders:
                    return str(max(leaders, key=lambda s: s["term"] or 0)["node"])
                await trio.sleep(0.05)
