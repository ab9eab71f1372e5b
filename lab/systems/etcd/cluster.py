"""etcd's cluster: real etcd 3.4 members (Debian ``etcd-server``) on loopback.

**Directed links.** etcd advertises one peer URL per member (``http://nJ:PJ``) and every
member dials that URL to reach member J, so per-link addresses cannot be passed on the
command line. Instead each member runs in its own mount namespace with a private
``/etc/hosts`` in which every other member's name ``nJ`` resolves to ``127.0.I.J``, where
the proxy of the directed link ``nI->nJ`` listens on J's peer port
(:meth:`EtcdCluster.proxy_listen`). The member itself listens on ``127.0.0.1`` only::

    unshare --mount --propagation private -- \\
        sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' HOSTS etcd --name nI ...

``unshare`` and ``sh`` both ``exec``, so the pid the lab holds is etcd's own (SIGKILL,
SIGSTOP and SIGTERM reach etcd), and the process group and parent-death signal that
:func:`lab.procs.spawn` sets survive the two ``exec`` s: no member outlives the controller.
This needs root (or CAP_SYS_ADMIN) for ``unshare --mount``; :func:`lab.systems.etcd.problem`
says so.

**Status.** ``/v3/maintenance/status`` of each member, straight to its client port (not
through a proxy), mapped onto :data:`lab.systems.types.STATUS_FIELDS`: ``role`` is
``leader`` when the member names itself, ``follower`` when it names another member and
``candidate`` when it knows no leader (etcd does not say whether it is campaigning);
``term`` is ``raftTerm``, which is the term of the last entry the member applied, not
its current term (a new leader reports the old term until an entry of its own term
applies, so the lab takes etcd's leaderships from its logs, not from these polls);
``commit`` is ``raftIndex``, ``applied`` ``raftAppliedIndex``; ``last_index`` and
``snapshot_index`` are not reported by etcd (None). Member ids map to names through
``/v3/cluster/member/list``, asked once.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.systems.etcd import DEFAULT_TIMING
from lab.systems.etcd.http import Lost, NotSent, Pool
from lab.systems.types import NODE_LOG, Address, timing_rule

#: ``make_system(..., options=...)`` keys and their defaults (the timing's are the spec's,
#: :data:`lab.systems.etcd.DEFAULT_TIMING`).
DEFAULT_OPTIONS: dict[str, Any] = {
    "election_ms": DEFAULT_TIMING[0],
    "heartbeat_ms": DEFAULT_TIMING[1],
    "pre_vote": True,  # etcd >= 3.5's default; CheckQuorum is always on in etcd
    "snapshot_count": None,  # None: etcd's default (100000)
    "binary": "etcd",
}


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` merged over :data:`DEFAULT_OPTIONS`; ValueError (one line) if bad."""
    opts = dict(DEFAULT_OPTIONS)
    for k, v in (options or {}).items():
        if k not in DEFAULT_OPTIONS:
            raise ValueError(f"unknown etcd option {k!r} (expected one of: "
                             f"{', '.join(DEFAULT_OPTIONS)})")
        opts[k] = v
    hb, el = opts["heartbeat_ms"], opts["election_ms"]
    if not isinstance(hb, int) or not isinstance(el, int) or hb < 1 or el < 1:
        raise ValueError(f"etcd heartbeat_ms and election_ms must be positive integers, "
                         f"got {hb!r} and {el!r}")
    if bad := timing_rule(el, hb):
        raise ValueError(f"etcd: {bad}")
    sc = opts["snapshot_count"]
    if sc is not None and (not isinstance(sc, int) or sc < 1):
        raise ValueError(f"etcd snapshot_count must be a positive integer, got {sc!r}")
    if not isinstance(opts["pre_vote"], bool):
        raise ValueError(f"etcd pre_vote must be true or false, got {opts['pre_vote']!r}")
    return opts


@dataclass
class EtcdMember:
    id: str
    index: int  # I of nI: the middle bytes of this member's proxy addresses
    peer: Address  # where it listens for peers
    client: Address  # where it listens for clients
    data_dir: Path
    log_path: Path
    hosts_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0


@dataclass
class EtcdCluster(procs.MemberProcesses):
    """N etcd members on loopback, each in its own mount namespace whose ``/etc/hosts``
    sends member i's traffic for member j to ``dial(i, j)`` (the proxy of link i->j in the
    lab; j itself when ``dial`` is None)."""

    base_dir: Path
    size: int = 3
    options: Mapping[str, Any] | None = None
    host: str = "127.0.0.1"
    dial: Callable[[str, str], Address] | None = None
    members: dict[str, EtcdMember] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.opts = check_options(self.options)
        if not 1 <= self.size <= 254:
            raise ValueError(f"an etcd cluster has 1 to 254 members, not {self.size}")
        self.token = f"raftlab-{uuid.uuid4().hex[:16]}"
        self._pool = Pool()
        self._names: dict[str, str] = {}  # etcd member id (decimal) -> nI
        self._version: str | None = None
        ports = procs.free_ports(2 * self.size, self.host)
        for k in range(self.size):
            mid = f"n{k + 1}"
            d = self.base_dir / mid
            self.members[mid] = EtcdMember(mid, k + 1, (self.host, ports[2 * k]),
                                           (self.host, ports[2 * k + 1]), d / "data",
                                           d / NODE_LOG, d / "hosts")

    # ------------------------------------------------------------------ identity

    def version(self) -> str:
        if self._version is None:
            try:
                out = subprocess.run([self.opts["binary"], "--version"], capture_output=True,
                                     text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            m = re.search(r"etcd Version:\s*(\S+)", out)
            self._version = f"etcd {m.group(1)}" if m else "etcd (unknown version)"
        return self._version

    def proxy_listen(self, src: str, dst: str) -> Address | None:
        """Proxy ``src->dst`` must listen at ``127.0.I.J`` on J's peer port: that is where
        ``nJ`` resolves, and the port etcd dials, inside I's namespace."""
        return (f"127.0.{self.members[src].index}.{self.members[dst].index}",
                self.members[dst].peer[1])

    def peer_url(self, mid: str) -> str:
        return f"http://{mid}:{self.members[mid].peer[1]}"

    def hosts(self, mid: str) -> str:
        """The ``/etc/hosts`` member ``mid`` sees."""
        lines = ["127.0.0.1 localhost", f"{self.host} {mid}"]
        for other in self.members.values():
            if other.id == mid:
                continue
            if self.dial is None:
                host, port = other.peer
            else:
                host, port = self.dial(mid, other.id)
            if port != other.peer[1]:
                raise RuntimeError(
                    f"the proxy of link {mid}->{other.id} listens on port {port}, but etcd "
                    f"dials {other.id} on its peer port {other.peer[1]} (the proxy server "
                    "did not honour proxy_listen)")
            if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
                raise RuntimeError(f"link {mid}->{other.id}: {host!r} is not an IPv4 address")
            lines.append(f"{host} {other.id}")
        return "\n".join(lines) + "\n"

    def argv(self, mid: str) -> list[str]:
        m = self.members[mid]
        o = self.opts
        etcd = [o["binary"], "--name", mid, "--data-dir", str(m.data_dir),
                "--listen-peer-urls", f"http://{m.peer[0]}:{m.peer[1]}",
                "--initial-advertise-peer-urls", self.peer_url(mid),
                "--listen-client-urls", f"http://{m.client[0]}:{m.client[1]}",
                "--advertise-client-urls", f"http://{m.client[0]}:{m.client[1]}",
                "--initial-cluster", ",".join(f"{x}={self.peer_url(x)}" for x in self.members),
                "--initial-cluster-state", "new", "--initial-cluster-token", self.token,
                "--heartbeat-interval", str(o["heartbeat_ms"]),
                "--election-timeout", str(o["election_ms"]),
                f"--pre-vote={'true' if o['pre_vote'] else 'false'}",
                "--logger", "zap", "--log-outputs", "stderr"]
        if o["snapshot_count"] is not None:
            etcd += ["--snapshot-count", str(o["snapshot_count"])]
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(m.hosts_path), *etcd]

    # ------------------------------------------------------------------ processes

    def prepare(self, mid: str) -> None:
        """The member's private hosts file (peers' names -> their proxies' addresses)."""
        m = self.members[mid]
        m.hosts_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = m.hosts_path.with_name("hosts.tmp")
        tmp.write_text(self.hosts(mid))
        tmp.replace(m.hosts_path)

    async def stop_all(self) -> None:
        await self.stop_members()
        self._pool.close()
        await trio.to_thread.run_sync(self.sparsify)

    def sparsify(self) -> None:
        """Give back the disk of stopped members' preallocated WAL space: etcd preallocates
        64 MB per WAL segment, which would make every 5-member run cost 320 MB in its run
        directory. Every all-zero 64 KiB block of a WAL file becomes a hole (the file
        reads the same; a restarted member replays the same WAL). Best effort."""
        for m in self.members.values():
            if not self.alive(m.id):
                for f in sorted((m.data_dir / "member" / "wal").glob("*")):
                    if f.suffix in (".wal", ".tmp"):
                        _punch_zero_blocks(f)

    # ------------------------------------------------------------------ status

    async def request(self, mid: str, path: str, body: Any = None, timeout: float = 2.0
                      ) -> dict[str, Any] | None:
        """One API call straight to member ``mid`` (not through a proxy): its JSON answer
        (an error answer too: it has an ``error`` key), or None if unreachable in time."""
        try:
            status, answer = await self._pool.post(self.members[mid].client, path,
                                                   {} if body is None else body,
                                                   trio.current_time() + timeout)
        except (NotSent, Lost):
            return None
        if not isinstance(answer, dict):
            return None
        if status != 200 and "error" not in answer:
            answer["error"] = f"HTTP {status}"
        return answer

    async def _learn_names(self, mid: str, timeout: float) -> None:
        answer = await self.request(mid, "/v3/cluster/member/list", {}, timeout)
        for m in (answer or {}).get("members", []):
            name = str(m.get("name") or "")
            if name not in self.members:  # not published yet: recognise its peer URL
                name = next((x for x in self.members
                             if self.peer_url(x) in (m.get("peerURLs") or [])), "")
            if name:
                self._names[str(m.get("ID"))] = name

    async def status(self, mid: str, timeout: float = 0.5) -> dict[str, Any] | None:
        """Member ``mid``'s status (:data:`lab.systems.types.STATUS_FIELDS`), or None."""
        if not self.alive(mid):
            return None
        deadline = trio.current_time() + timeout
        s = await self.request(mid, "/v3/maintenance/status", {}, timeout)
        if s is None or "error" in s:
            return None
        me = str(s.get("header", {}).get("member_id", ""))
        leader = str(s.get("leader", "0"))
        if (me not in self._names or (leader != "0" and leader not in self._names)) and (
                trio.current_time() < deadline):
            await self._learn_names(mid, deadline - trio.current_time())
        role = "candidate" if leader == "0" else "leader" if leader == me else "follower"
        return {"node": self._names.get(me, mid), "role": role,
                "term": _int(s.get("raftTerm")),
                "leader": None if leader == "0" else self._names.get(leader),
                "commit": _int(s.get("raftIndex")),
                "applied": _int(s.get("raftAppliedIndex")),
                "last_index": None, "snapshot_index": None}



_BLOCK = 1 << 16
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2


def _punch_zero_blocks(path: Path) -> None:
    """Deallocate every all-zero, block-aligned ``_BLOCK`` of ``path`` (Linux
    ``fallocate(PUNCH_HOLE)``; the file's contents and size do not change)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        zero = bytes(_BLOCK)
        with open(path, "r+b") as f:
            runs: list[list[int]] = []
            offset = 0
            while chunk := f.read(_BLOCK):
                if len(chunk) == _BLOCK and chunk == zero:
                    if runs and runs[-1][0] + runs[-1][1] == offset:
                        runs[-1][1] += _BLOCK
                    else:
                        runs.append([offset, _BLOCK])
                offset += len(chunk)
            for start, length in runs:
                fallocate(f.fileno(), _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, start,
                          length)
    except (OSError, AttributeError):
        pass


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
