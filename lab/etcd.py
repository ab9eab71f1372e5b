"""The etcd system adapter: real etcd 3.4 members (Debian ``etcd-server``) on loopback.

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
This needs root (or CAP_SYS_ADMIN) for ``unshare --mount``; :func:`problem` says so.

**Status.** ``/v3/maintenance/status`` of each member, straight to its client port (not
through a proxy), mapped onto :data:`lab.systems.STATUS_FIELDS`: ``role`` is ``leader``
when the member names itself, ``follower`` when it names another member and
``candidate`` when it knows no leader (etcd does not say whether it is campaigning);
``term`` is ``raftTerm``, which is the term of the last entry the member applied, not
its current term (a new leader reports the old term until an entry of its own term
applies, so the lab takes etcd's leaderships from its logs, not from these polls);
``commit`` is ``raftIndex``, ``applied`` ``raftAppliedIndex``; ``last_index`` and
``snapshot_index`` are not reported by etcd (None). Member ids map to names through
``/v3/cluster/member/list``, asked once.

**Client driver** (:class:`EtcdClient`): etcd's JSON gRPC gateway over HTTP/1.1
keep-alive, through the member's client proxy. Keys and values are base64; values are
JSON text. Every model is mapped onto single-round-trip requests or on optimistic
read-then-compare-and-swap transactions whose commit compares ``mod_revision`` (see
:meth:`EtcdClient.invoke`). Outcomes: a request that certainly never reached etcd
(connection refused) or that etcd certainly did not apply (compare failed, too many
requests, proposal dropped, invalid) is ``fail``; a timeout, a lost connection or any
other error on a write is ``info``; reads (linearizable ranges and read-only txns) are
idempotent, so any failed read is ``fail``.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import select
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.fastjson import dumps
from lab.systems import Completion

Address = tuple[str, int]

#: Workload models the client driver implements.
MODELS = ("register", "cas-register", "set", "counter", "bank", "list-append")

#: ``make_system(..., options=...)`` keys and their defaults. The timeouts suit a loaded
#: two-core machine; scenarios that want faster failover can lower them (e.g. 300 / 50).
DEFAULT_OPTIONS: dict[str, Any] = {
    "heartbeat_ms": 100,
    "election_ms": 1000,
    "pre_vote": True,  # etcd >= 3.5's default; CheckQuorum is always on in etcd
    "snapshot_count": None,  # None: etcd's default (100000)
    "binary": "etcd",
}

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024


def problem(model: str | None = None, binary: str = "etcd") -> str | None:
    """Why etcd cannot be run here (or with ``model``), in one line; None if it can."""
    if model is not None and model not in MODELS:
        return f"--system etcd: no client driver for model {model!r} " \
               f"(supported: {', '.join(MODELS)})"
    if shutil.which(binary) is None:
        return f"--system etcd: {binary!r} not found on PATH " \
               "(Debian: apt-get install etcd-server etcd-client)"
    if shutil.which("unshare") is None:
        return "--system etcd: 'unshare' (util-linux) not found on PATH"
    if os.geteuid() != 0:
        return "--system etcd: needs root, to give each member a private /etc/hosts " \
               "(unshare --mount) so that every directed link goes through its proxy"
    return None


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
    if el < 5 * hb:
        raise ValueError(f"etcd election_ms ({el}) must be at least 5 x heartbeat_ms ({hb})")
    sc = opts["snapshot_count"]
    if sc is not None and (not isinstance(sc, int) or sc < 1):
        raise ValueError(f"etcd snapshot_count must be a positive integer, got {sc!r}")
    if not isinstance(opts["pre_vote"], bool):
        raise ValueError(f"etcd pre_vote must be true or false, got {opts['pre_vote']!r}")
    return opts


# --------------------------------------------------------------------------- HTTP


class _NotSent(Exception):
    """The request certainly never left: the connection could not be made."""


class _Lost(Exception):
    """The request may have been sent, and no complete answer came (``timeout`` or a lost
    or garbled connection)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Closed(Exception):
    pass


@dataclass
class _Conn:
    stream: trio.SocketStream
    buf: bytearray = field(default_factory=bytearray)

    def stale(self) -> bool:
        """The server hung up (or sent something unasked) while the connection was idle."""
        try:
            readable, _, _ = select.select([self.stream.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable) or bool(self.buf)

    def close(self) -> None:
        with suppress(OSError):
            self.stream.socket.close()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise _Closed
        self.buf += data

    async def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise ValueError("HTTP line too long")
            await self._fill()
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def exchange(self, raw: bytes) -> tuple[int, bytes, bool]:
        """Send one request; return (status, body, keep-alive)."""
        await self.stream.send_all(raw)
        while True:
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                if len(self.buf) > _MAX_HEAD:
                    raise ValueError("HTTP head too large")
                await self._fill()
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[:end + 4]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            keep = "close" not in headers.get("connection", "").lower()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = bytearray()
                while True:
                    size = int((await self._line()).split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while await self._line():
                            pass
                        return status, bytes(body), keep
                    body += await self._exactly(size)
                    if len(body) > _MAX_BODY:
                        raise ValueError("HTTP body too large")
                    await self._exactly(2)
            if "content-length" in headers:
                length = int(headers["content-length"])
                if not 0 <= length <= _MAX_BODY:
                    raise ValueError(f"HTTP body of {length} bytes")
                return status, await self._exactly(length), keep
            body = bytearray(self.buf)
            self.buf.clear()
            with suppress(_Closed):
                while len(body) <= _MAX_BODY:
                    await self._fill()
                    body += self.buf
                    self.buf.clear()
            return status, bytes(body), False


class _Pool:
    """Kept-alive HTTP/1.1 connections to a few addresses, one request per connection at
    a time. Not thread-safe; use within one trio run."""

    def __init__(self) -> None:
        self._idle: dict[Address, list[_Conn]] = {}
        self.users = 0

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    async def post(self, addr: Address, path: str, body: Any, deadline: float
                   ) -> tuple[int, Any]:
        """POST ``body`` as JSON; return (HTTP status, decoded JSON answer). Raises
        :class:`_NotSent` or :class:`_Lost`."""
        payload = dumps(body)
        raw = (f"POST {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
               "\r\n").encode() + payload
        conn: _Conn | None = None
        idle = self._idle.setdefault(addr, [])
        while idle:
            c = idle.pop()
            if c.stale():
                c.close()
            else:
                conn = c
                break
        if conn is None:
            try:
                with trio.fail_after(max(0.0, deadline - trio.current_time())):
                    conn = _Conn(await trio.open_tcp_stream(*addr))
            except (OSError, trio.TooSlowError) as e:
                raise _NotSent("timeout" if isinstance(e, trio.TooSlowError) else
                               "refused") from None
        try:
            with trio.fail_after(max(0.0, deadline - trio.current_time())):
                status, data, keep = await conn.exchange(raw)
        except trio.TooSlowError:
            conn.close()
            raise _Lost("timeout") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, _Closed,
                ValueError):
            conn.close()
            raise _Lost("connection") from None
        except BaseException:
            conn.close()
            raise
        if keep:
            self._idle.setdefault(addr, []).append(conn)
        else:
            conn.close()
        try:
            return status, json.loads(data) if data.strip() else {}
        except ValueError:
            raise _Lost("garbled answer") from None


_SHARED: trio.lowlevel.RunVar[_Pool] = trio.lowlevel.RunVar("lab.etcd.shared")


def _shared_pool() -> _Pool:
    """This trio run's pool shared by all client workers (``connections: shared``): an
    idle kept-alive connection serves whichever worker asks next. HTTP/1.1 carries one
    request at a time, so the workers still use as many connections as they have requests
    in flight."""
    try:
        return _SHARED.get()
    except LookupError:
        _SHARED.set(_Pool())
        return _SHARED.get()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _enc(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")))


def _dec(kv: Mapping[str, Any] | None) -> Any:
    if kv is None:
        return None
    return json.loads(_unb64(str(kv.get("value", ""))) or "null")


# --------------------------------------------------------------------------- the cluster


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
        self._pool = _Pool()
        self._names: dict[str, str] = {}  # etcd member id (decimal) -> nI
        self._version: str | None = None
        ports = procs.free_ports(2 * self.size, self.host)
        for k in range(self.size):
            mid = f"n{k + 1}"
            d = self.base_dir / mid
            self.members[mid] = EtcdMember(mid, k + 1, (self.host, ports[2 * k]),
                                           (self.host, ports[2 * k + 1]), d / "data",
                                           d / "node.log", d / "hosts")

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
        except (_NotSent, _Lost):
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
        """Member ``mid``'s status (:data:`lab.systems.STATUS_FIELDS`), or None."""
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


# --------------------------------------------------------------------------- client driver

#: gRPC codes (in the gateway's error answers) that mean etcd refused the request before
#: proposing it: invalid argument, not found, permission denied, resource exhausted (too
#: many requests, no space), unimplemented, unauthenticated.
_REFUSED_CODES = {3, 5, 7, 8, 12, 16}
#: Refusals worth retrying on another member within the operation's deadline.
_TRANSIENT = ("too many requests", "proposal dropped")


@dataclass
class _Answer:
    """A request's outcome: ``answer`` if etcd answered 200, else ``completion``."""

    answer: dict[str, Any] | None = None
    completion: Completion | None = None
    node: str | None = None


class EtcdClient:
    """Turns the lab's operations into etcd JSON-gateway requests, and answers into
    ok / fail / info. One instance per client worker.

    It sticks to one member (any member serves linearizable reads and forwards writes to
    the leader) and moves on to the next when that member fails a request. Keys live in
    one namespace per model: ``r/K`` (registers), ``s/V`` (one key per set element),
    ``c`` (the counter), ``b/A`` (bank accounts), ``l/K`` (list-append lists)."""

    def __init__(self, addrs: dict[str, Address], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False) -> None:
        self.addrs = addrs
        self.ids = sorted(addrs)
        self.timeout = timeout
        self.rng = rng
        self.accounts = sorted(accounts)
        self.node = str(rng.choice(self.ids))
        self._pool = _shared_pool() if shared else _Pool()

    async def __aenter__(self) -> EtcdClient:
        self._pool.users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pool.users -= 1
        if not self._pool.users:
            self._pool.close()

    def _next(self, node: str) -> str:
        return self.ids[(self.ids.index(node) + 1) % len(self.ids)]

    async def _post(self, path: str, body: Any, deadline: float, *, idempotent: bool
                    ) -> _Answer:
        """POST to the current member until etcd answers or the outcome is settled."""
        tried = 0
        while True:
            node = self.node
            tried += 1
            try:
                status, answer = await self._pool.post(self.addrs[node], path, body, deadline)
            except _NotSent as e:
                self.node = self._next(node)
                if trio.current_time() < deadline - 0.02 and tried < 2 * len(self.ids):
                    continue
                return _Answer(completion=Completion("fail", error=f"unreachable ({e})",
                                                     node=node))
            except _Lost as e:
                self.node = self._next(node)
                return _Answer(completion=Completion("fail" if idempotent else "info",
                                                     error=e.reason, node=node))
            if status == 200 and isinstance(answer, dict) and "error" not in answer:
                return _Answer(answer, node=node)
            error = str(answer.get("error") or answer.get("message") or f"HTTP {status}") \
                if isinstance(answer, dict) else f"HTTP {status}"
            code = answer.get("code") if isinstance(answer, dict) else None
            self.node = self._next(node)
            refused = code in _REFUSED_CODES or "proposal dropped" in error
            if refused and any(t in error for t in _TRANSIENT) and (
                    trio.current_time() < deadline - 0.05 and tried < 2 * len(self.ids)):
                await trio.sleep(0.01)
                continue
            certain = idempotent or refused
            return _Answer(completion=Completion("fail" if certain else "info", error=error,
                                                 node=node))

    async def _range(self, key: str, deadline: float) -> _Answer:
        return await self._post("/v3/kv/range", {"key": _b64(key)}, deadline, idempotent=True)

    async def _read_many(self, keys: Sequence[str], deadline: float
                         ) -> tuple[dict[str, dict[str, Any] | None], _Answer]:
        """Linearizable read of ``keys`` at one revision (a read-only txn): each key's kv
        (None if absent)."""
        a = await self._post("/v3/kv/txn", {"success": [
            {"request_range": {"key": _b64(k)}} for k in keys]}, deadline, idempotent=True)
        out: dict[str, dict[str, Any] | None] = {}
        if a.answer is not None:
            for k, r in zip(keys, a.answer.get("responses", []), strict=False):
                kvs = r.get("response_range", {}).get("kvs") or []
                out[k] = kvs[0] if kvs else None
        return out, a

    async def _commit(self, compares: Mapping[str, dict[str, Any] | None],
                      puts: Mapping[str, Any], deadline: float) -> _Answer:
        """A txn that puts ``puts`` if no key of ``compares`` changed since it was read
        (``mod_revision`` equal; 0 for a key that was absent). ``answer['succeeded']``."""
        body = {"compare": [{"key": _b64(k), "target": "MOD", "result": "EQUAL",
                             "mod_revision": str(kv.get("mod_revision", 0)) if kv else "0"}
                            for k, kv in compares.items()],
                "success": [{"request_put": {"key": _b64(k), "value": _enc(v)}}
                            for k, v in puts.items()]}
        return await self._post("/v3/kv/txn", body, deadline, idempotent=False)

    async def write_initial(self, values: Mapping[str, Any]) -> bool:
        """Write ``values`` (the bank's opening balances) in one txn."""
        deadline = trio.current_time() + self.timeout
        a = await self._post("/v3/kv/txn", {"success": [
            {"request_put": {"key": _b64(self._bank_key(k)), "value": _enc(v)}}
            for k, v in values.items()]}, deadline, idempotent=False)
        return a.answer is not None

    @staticmethod
    def _bank_key(account: str) -> str:
        return f"b/{account}"

    async def invoke(self, model: str, f: str, key: Any, value: Any) -> Completion:
        """Run one operation of ``model`` (Jepsen shapes, DESIGN.md):

        * registers: ``read`` is a range, ``write`` a put, ``cas`` a txn comparing the
          value (a failed compare is ``fail``);
        * set: ``add v`` puts ``s/v``; ``read`` ranges over the ``s/`` prefix;
        * counter: ``add n`` reads ``c`` and commits ``c + n`` if ``c``'s mod_revision did
          not change (retried on a conflict until the timeout, then ``fail``);
        * bank: ``read`` is one read-only txn over every account; ``transfer`` reads both
          accounts and commits both new balances if neither changed meanwhile;
        * list-append: reads every key of the txn, runs its micro-ops on what it read, and
          commits the appended lists if no key it read changed meanwhile (so the txn is
          strictly serializable at its commit); read-only txns need no commit.
        """
        deadline = trio.current_time() + self.timeout
        if model in ("register", "cas-register"):
            return await self._register(f, f"r/{key}", value, deadline)
        if model == "set":
            if f == "add":
                a = await self._post("/v3/kv/put", {"key": _b64(f"s/{value}"),
                                                    "value": _enc(value)},
                                     deadline, idempotent=False)
                return _done(a, value)
            a = await self._post("/v3/kv/range", {"key": _b64("s/"), "range_end": _b64("s0")},
                                 deadline, idempotent=True)
            if a.answer is None:
                return _done(a)
            return _done(a, sorted((_dec(kv) for kv in a.answer.get("kvs") or []),
                                   key=lambda v: (str(type(v)), v)))
        if model == "counter":
            if f == "read":
                a = await self._range("c", deadline)
                if a.answer is None:
                    return _done(a)
                kvs = a.answer.get("kvs") or []
                return _done(a, _dec(kvs[0]) if kvs else 0)
            return await self._update(["c"], deadline, value,
                                      lambda cur: {"c": (cur["c"] or 0) + value})
        if model == "bank":
            return await self._bank(f, value, deadline)
        if model == "list-append":
            return await self._txn(value, deadline)
        raise ValueError(f"etcd client: unknown model {model!r}")

    async def _register(self, f: str, key: str, value: Any, deadline: float) -> Completion:
        if f == "read":
            a = await self._range(key, deadline)
            if a.answer is None:
                return _done(a)
            kvs = a.answer.get("kvs") or []
            return _done(a, _dec(kvs[0]) if kvs else None)
        if f == "write":
            a = await self._post("/v3/kv/put", {"key": _b64(key), "value": _enc(value)},
                                 deadline, idempotent=False)
            return _done(a, value)
        expected, new = value
        a = await self._post("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "VALUE", "result": "EQUAL",
                         "value": _enc(expected)}],
            "success": [{"request_put": {"key": _b64(key), "value": _enc(new)}}]},
            deadline, idempotent=False)
        if a.answer is not None and not a.answer.get("succeeded"):
            return Completion("fail", value, "mismatch", a.node)
        return _done(a, value)

    async def _update(self, keys: Sequence[str], deadline: float, value: Any,
                      compute: Callable[[dict[str, Any]], dict[str, Any] | Completion]
                      ) -> Completion:
        """Optimistic read-modify-write of ``keys``: read them at one revision, ``compute``
        the puts from their values (or give up with a Completion), commit if none
        changed; on a conflict, again until the deadline (a conflict changed nothing)."""
        while True:
            kvs, a = await self._read_many(keys, deadline)
            if a.answer is None:
                return _done(a, value)  # a failed read: certainly nothing happened
            puts = compute({k: _dec(kv) for k, kv in kvs.items()})
            if isinstance(puts, Completion):
                puts.node = a.node
                return puts
            c = await self._commit(kvs, puts, deadline)
            if c.answer is None or c.answer.get("succeeded"):
                return _done(c, value)
            if trio.current_time() >= deadline - 0.01:
                return Completion("fail", value, "conflict", c.node)

    async def _bank(self, f: str, value: Any, deadline: float) -> Completion:
        if f == "read":
            keys = [self._bank_key(a) for a in self.accounts]
            kvs, a = await self._read_many(keys, deadline)
            if a.answer is None:
                return _done(a)
            return _done(a, {acct: _dec(kvs.get(k)) for acct, k in zip(self.accounts, keys,
                                                                       strict=True)})
        src, dst = self._bank_key(value["from"]), self._bank_key(value["to"])
        amount = value["amount"]

        def transfer(cur: dict[str, Any]) -> dict[str, Any] | Completion:
            a, b = cur[src], cur[dst]
            if not isinstance(a, int) or not isinstance(b, int) or a < amount:
                return Completion("fail", value, "insufficient-funds")
            return {src: a - amount, dst: b + amount}

        return await self._update([src, dst], deadline, value, transfer)

    async def _txn(self, micro: list[list[Any]], deadline: float) -> Completion:
        keys = sorted({f"l/{k}" for _f, k, _v in micro})
        writes = any(m[0] != "r" for m in micro)
        out: list[list[Any]] = []

        def run(cur: dict[str, Any]) -> dict[str, Any]:
            lists = {k: list(v) if isinstance(v, list) else [] for k, v in cur.items()}
            out.clear()
            puts: dict[str, Any] = {}
            for f, k, v in micro:
                if f == "r":
                    out.append([f, k, list(lists[f"l/{k}"])])
                else:
                    lists[f"l/{k}"].append(v)
                    puts[f"l/{k}"] = lists[f"l/{k}"]
                    out.append([f, k, v])
            return puts

        if not writes:
            kvs, a = await self._read_many(keys, deadline)
            if a.answer is None:
                return _done(a)
            run({k: _dec(kv) for k, kv in kvs.items()})
            return _done(a, out)
        c = await self._update(keys, deadline, micro, run)
        if c.type == "ok":
            c.value = out
        return c


def _done(a: _Answer, value: Any = None) -> Completion:
    """``a`` as a Completion: ok with ``value`` if etcd answered, else its outcome."""
    if a.completion is not None:
        c = a.completion
        if value is not None and c.value is None:
            c.value = value
        return c
    return Completion("ok", value, node=a.node)

