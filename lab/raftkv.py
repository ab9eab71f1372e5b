"""The raftkv system adapter: how the lab starts, stops, kills and finds raftkv members.

The lab never imports ``nodes``: members are OS processes (``python -m nodes``) reached
over TCP, exactly like any other system under test.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.client import ConnectionLost, connect

Address = tuple[str, int]


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
class RaftkvCluster:
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
                                       (self.host, ports[2 * k + 1]), d / "data", d / "node.log")

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

    def start(self, mid: str) -> None:
        m = self.members[mid]
        if m.proc is not None and m.proc.poll() is None:
            return
        m.proc = procs.spawn(self.argv(mid), log_path=m.log_path)
        m.starts += 1

    def start_all(self) -> None:
        for mid in self.members:
            self.start(mid)

    def signal(self, mid: str, sig: int) -> None:
        p = self.members[mid].proc
        if p is not None:
            procs.signal_process(p, sig)

    async def kill(self, mid: str) -> None:
        """SIGKILL and reap."""
        p = self.members[mid].proc
        if p is not None:
            self.signal(mid, signal.SIGCONT)
            procs.signal_process(p, signal.SIGKILL)
            await trio.to_thread.run_sync(p.wait)

    async def stop(self, mid: str, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        p = self.members[mid].proc
        if p is None or p.poll() is not None:
            return
        self.signal(mid, signal.SIGCONT)
        procs.signal_process(p, signal.SIGTERM)
        with trio.move_on_after(grace):
            while p.poll() is None:
                await trio.sleep(0.02)
        if p.poll() is None:
            await self.kill(mid)

    async def stop_all(self) -> None:
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

    async def request(self, mid: str, req: dict[str, Any], timeout: float = 2.0
                      ) -> dict[str, Any] | None:
        """One request to one member; None if it could not be reached in time."""
        try:
            with trio.fail_after(timeout):
                async with connect(*self.members[mid].client, timeout=timeout) as c:
                    return await c.call(req, timeout=timeout)
        except (OSError, ConnectionLost, trio.TooSlowError):
            return None

    async def statuses(self, timeout: float = 0.5) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}

        async def one(mid: str) -> None:
            out[mid] = await self.request(mid, {"op": "status"}, timeout) if self.alive(
                mid) else None

        async with trio.open_nursery() as n:
            for mid in self.members:
                n.start_soon(one, mid)
        return out

    async def wait_leader(self, timeout: float = 10.0, exclude: Sequence[str] = ()) -> str:
        """The id of a member that says it leads and whose peers agree on its term."""
        with trio.fail_after(timeout):
            while True:
                st = await self.statuses()
                leaders = [s for mid, s in st.items() if s and s["role"] == "leader"
                           and mid not in exclude]
                if leaders:
                    top = max(leaders, key=lambda s: s["term"])
                    return str(top["node"])
                await trio.sleep(0.05)
