"""raftkv's cluster: how the lab starts, stops, kills and finds raftkv members.

The lab never imports ``nodes``: members are OS processes (``python -m nodes``) reached
over TCP, exactly like any other system under test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.systems.raftkv.wire import ConnectionLost, connect
from lab.systems.types import NODE_LOG, Address

#: The exit code of a member that died at an armed crash point (``nodes/PROTOCOL.md``).
CRASH_POINT_EXIT = 86


@dataclass
class Member:
    id: str
    peer: Address  # where it listens for peers
    client: Address  # where it listens for clients
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0


@dataclass
class RaftkvCluster(procs.MemberProcesses):
    """N raftkv members on loopback. ``dial(i, j)`` says which address member i uses to
    reach member j (the member itself by default; a proxy of the directed link i->j in
    the lab)."""

    base_dir: Path
    size: int = 3
    bugs: Sequence[str] = ()
    fsync: bool = True
    extra_args: Sequence[str] = ()
    host: str = "127.0.0.1"
    dial: Callable[[str, str], Address] | None = None
    members: dict[str, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = procs.free_ports(2 * self.size, self.host)
        for k in range(self.size):
            mid = f"n{k + 1}"
            d = self.base_dir / mid
            self.members[mid] = Member(mid, (self.host, ports[2 * k]),
                                       (self.host, ports[2 * k + 1]), d / "data", d / NODE_LOG)

    def version(self) -> str:
        return "raftkv (this checkout)"

    def proxy_listen(self, src: str, dst: str) -> Address | None:
        return None  # raftkv is told every peer's address: any free port will do

    def argv(self, mid: str) -> list[str]:
        m = self.members[mid]
        dial = self.dial or (lambda _i, j: self.members[j].peer)
        argv = [sys.executable, "-m", "nodes", "--id", mid, "--data-dir", str(m.data_dir),
                "--peer-listen", f"{m.peer[0]}:{m.peer[1]}",
                "--client-listen", f"{m.client[0]}:{m.client[1]}"]
        for other in self.members.values():
            if other.id != mid:
                h, p = dial(mid, other.id)
                argv += ["--peer", f"{other.id}={h}:{p}",
                         "--peer-client", f"{other.id}={other.client[0]}:{other.client[1]}"]
        for b in self.bugs:
            argv += ["--bug", b]
        if not self.fsync:
            argv.append("--unsafe-no-fsync")
        return argv + list(self.extra_args)

    async def stop_all(self) -> None:
        await self.stop_members()

    async def request(self, mid: str, req: dict[str, Any], timeout: float = 2.0
                      ) -> dict[str, Any] | None:
        """One request to one member; None if it could not be reached in time."""
        try:
            with trio.fail_after(timeout):
                async with connect(*self.members[mid].client, timeout=timeout) as c:
                    return await c.call(req, timeout=timeout)
        except (OSError, ConnectionLost, trio.TooSlowError):
            return None

    async def crash_at(self, mid: str, point: str | None, skip: int = 0) -> bool | None:
        """Arm crash point ``point`` in member ``mid`` (None: disarm it): True if the
        member said yes (or, arming, already died at the point), False if it is not
        running, refused or died of something else, None if it did not answer (it may
        have armed itself, or be armed still). From the moment an arm request is sent, an
        exit with :data:`CRASH_POINT_EXIT` of that process is the lab's doing for the rest
        of its life (only arming makes that code): the point may fire before the answer
        comes back, after a request that got no answer, or just as a disarm is answered."""
        proc = self.process(mid)
        if not self.alive(mid):
            return False
        if point is not None:
            self.expect_exit(mid, CRASH_POINT_EXIT)
        answer = await self.request(mid, {"op": "crash-at", "point": point, "skip": skip})
        if answer is not None and answer.get("ok") is True:
            return True
        if point is not None and self.exited_as_expected(proc):
            return True  # it fired before it could answer
        if answer is not None or self.exit_code(proc) is not None:
            return False
        return None

    async def status(self, mid: str, timeout: float) -> dict[str, Any] | None:
        return await self.request(mid, {"op": "status"}, timeout) if self.alive(mid) else None
