"""Throughput, latency and failover benchmark of raftkv, with etcd as the yardstick.

Usage::

    .venv/bin/python bench/raftkv_bench.py [--duration 10] [--clients 1,8,32] [--no-etcd]
                                           [--failover-runs 5] [--warmup 1] [--json OUT]
                                           [--keep]

Methodology
-----------
* **Systems.** raftkv: 3 members (``python -m nodes``, default flags, fsync ON) started
  by :class:`lab.systems.raftkv.cluster.RaftkvCluster` on loopback in a temporary
  directory. etcd: 3 members of the Debian ``etcd`` binary on loopback, default flags
  (fsync ON, 100 ms heartbeat, 1 s election timeout), data in the same temporary
  directory. The systems run one after
  the other, never together, on the same 2-core machine.
* **Load generator.** Each (system, op, clients) cell is driven by a fresh load-generator
  process (this script with ``--worker``), never by the process that manages the clusters.
  It is one thread with a ``selectors`` loop over plain blocking-mode sockets (no trio, no
  asyncio), one TCP connection per client, TCP_NODELAY, exactly one outstanding request
  per client (closed loop: the next request is sent when the answer arrives). The *same*
  loop drives both systems; only the framing differs: raftkv's JSON lines
  (``{"op":"write","key":...,"value":...,"id":n}``) and, for etcd, a minimal HTTP/1.1
  keep-alive client written here (Content-Length bodies) for etcd's JSON gateway:
  ``POST /v3/kv/put`` (base64 key and value) and ``POST /v3/kv/range`` (linearizable by
  default, like raftkv's ReadIndex reads). Every answer is parsed as JSON.
* **Target.** All load goes to the leader of each system (raftkv: ``wait_leader``; etcd:
  ``/v3/maintenance/status`` on every member), since raftkv serves only on its leader.
* **Workload.** Keys are drawn uniformly from 1000 keys (``k0000``..``k0999``), values
  are 16-byte strings. Every key is written once before the timed runs. For each client
  count C: C clients write back-to-back, then C clients read back-to-back.
* **Measurement.** After ``--warmup`` seconds (not counted) the window lasts
  ``--duration`` seconds; an operation counts if it was sent and answered inside the
  window. ops/s = counted successful ops / window; p50/p99 are over their latencies
  (send to full answer, ``time.perf_counter``). Failed answers are counted separately and
  excluded from latency figures. The load generator's CPU (its own process time) and the
  servers' CPU (psutil, summed over members, and the leader alone) are sampled at the
  window's edges and printed as % of one core; the machine has ``nproc`` cores in all, so
  a load generator near 100 % or servers + load generator near ``nproc`` x 100 % mean the
  figures are machine-bound rather than system-bound. ``other`` is the rest of the
  machine's busy time (/proc/stat: other processes, interrupt work): when it is large,
  something else was running and the cell's figures are disturbed (a note says so).
* **Failover (raftkv only).** A fresh 3-member cluster, 2 clients writing continuously,
  each op with a 0.5 s timeout; on a timeout, a lost connection or ``not-leader`` a client
  retries on the hinted leader (or the next member when there is no usable hint, after
  5 ms). The leader is SIGKILLed; the figure is the time from the kill to the first write
  acknowledged by a surviving member (only a new leader can acknowledge). A surviving
  member that exits by itself meanwhile is reported with the last exception in its log
  (that is a raftkv bug, not a failover figure) and restarted too; the run then counts as
  "not recovered" if no write was acknowledged within 10 s. Restarted members must
  catch up before the next run. The median is over the runs that recovered.

The script prints figures and never asserts on timing. Every process it starts is in its
own process group with a parent-death signal (:func:`lab.procs.spawn`) and is stopped on
the way out, whether the run ends normally, by an exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import abc
import argparse
import base64
import contextlib
import json
import math
import os
import platform
import random
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio

from lab import procs
from lab.systems.raftkv.cluster import RaftkvCluster
from lab.systems.raftkv.wire import ConnectionLost, KVClient, connect

KEYSPACE = 1000
VALUE_BYTES = 16
HOST = "127.0.0.1"
FAILOVER_OP_TIMEOUT = 0.5
FAILOVER_WRITERS = 2
FAILOVER_ACK_WAIT = 10.0

Address = tuple[str, int]


def _key(n: int) -> str:
    return f"k{n:04d}"


def _value(seq: int) -> str:
    return f"v{seq:0{VALUE_BYTES - 1}d}"


# ======================================================================================
# Wire protocols (used by the load generator and the control plane)
# ======================================================================================


def parse_http_response(buf: bytearray) -> tuple[int, int, bytes] | None:
    """One complete HTTP/1.1 response at the start of ``buf``: ``(consumed, status, body)``,
    or None if more bytes are needed. Supports Content-Length and chunked bodies."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = -1
    chunked = False
    for line in head[1:]:
        name, _, val = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(val)
        elif name == "transfer-encoding" and "chunked" in val.lower():
            chunked = True
    start = end + 4
    if not chunked:
        if length < 0:
            raise ValueError("HTTP response without Content-Length or chunked body")
        if len(buf) < start + length:
            return None
        return start + length, status, bytes(buf[start : start + length])
    body = bytearray()
    pos = start
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return None
        size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
        if len(buf) < nl + 2 + size + 2:
            return None
        if size == 0:
            # No trailers from etcd's gateway: the final chunk ends with one CRLF.
            return nl + 4, status, bytes(body)
        body += buf[nl + 2 : nl + 2 + size]
        pos = nl + 2 + size + 2


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def http_post_json(addr: Address, path: str, obj: Any, timeout: float = 1.0) -> Any:
    """One blocking POST on a fresh connection (control plane only)."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(http_request(addr[0], addr[1], path, json.dumps(obj).encode()))
        buf = bytearray()
        while (got := parse_http_response(buf)) is None:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the answer")
            buf += data
        _, status, body = got
        if status != 200:
            raise ConnectionError(f"HTTP {status}: {body[:200]!r}")
        return json.loads(body)


class Proto(abc.ABC):
    """How one client request is framed and one answer recognised."""

    @abc.abstractmethod
    def request(self, op: str, key: str, seq: int) -> bytes: ...

    @abc.abstractmethod
    def parse(self, buf: bytearray) -> tuple[int, str | None] | None:
        """``(consumed, error)`` for a complete answer (error None = success), else None."""


class RaftkvProto(Proto):
    def request(self, op: str, key: str, seq: int) -> bytes:
        if op == "write":
            return (f'{{"op":"write","key":"{key}","value":"{_value(seq)}","id":{seq}}}\n'
                    ).encode()
        return f'{{"op":"read","key":"{key}","id":{seq}}}\n'.encode()

    def parse(self, buf: bytearray) -> tuple[int, str | None] | None:
        nl = buf.find(b"\n")
        if nl < 0:
            return None
        msg = json.loads(bytes(buf[:nl]))
        return nl + 1, None if msg.get("ok") is True else str(msg.get("error"))


class EtcdProto(Proto):
    def __init__(self, addr: Address) -> None:
        self.addr = addr

    def request(self, op: str, key: str, seq: int) -> bytes:
        k = base64.b64encode(key.encode()).decode()
        if op == "write":
            v = base64.b64encode(_value(seq).encode()).decode()
            return http_request(*self.addr, "/v3/kv/put",
                                f'{{"key":"{k}","value":"{v}"}}'.encode())
        return http_request(*self.addr, "/v3/kv/range", f'{{"key":"{k}"}}'.encode())

    def parse(self, buf: bytearray) -> tuple[int, str | None] | None:
        got = parse_http_response(buf)
        if got is None:
            return None
        consumed, status, body = got
        msg = json.loads(body)
        if status != 200 or "error" in msg:
            return consumed, f"http-{status}"
        return consumed, None


# ======================================================================================
# The load generator (runs in its own process: ``--worker SPEC``)
# ======================================================================================


@dataclass
class WorkerSpec:
    system: str  # "raftkv" | "etcd"
    op: str  # "write" | "read"
    clients: int
    addr: Address
    warmup: float
    duration: float
    out: str  # where the result JSON goes
    server_pids: list[int] = field(default_factory=list)
    leader_pid: int = 0
    op_timeout: float = 5.0
    prefill: bool = False  # write every key once (keys split among clients), no figures
    seed: int = 1
    # raftkv only: one connection carrying all the clients' requests, matched to answers by
    # id, a select round's requests in one send (as the lab's shared connections do)
    pipelined: bool = False


def _percentile(sorted_xs: list[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    k = math.ceil(p / 100 * len(sorted_xs)) - 1  # nearest rank
    return sorted_xs[min(len(sorted_xs) - 1, max(0, k))]


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = float("nan")
    return out


@dataclass
class _Sample:
    """CPU counters at one instant: ours, the servers' and the whole machine's."""

    wall: float
    own: float
    servers: dict[int, float]
    machine_busy: float

    @classmethod
    def take(cls, pids: list[int]) -> _Sample:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return cls(time.perf_counter(), time.process_time(), _cpu_seconds(pids), busy)


class _Window:
    """The measurement window of a cell: CPU sampled at its edges as the loop passes
    them (`tick`), figures from the operations answered inside it (`figures`)."""

    def __init__(self, spec: WorkerSpec, start: float, end: float) -> None:
        self.spec, self.start, self.end = spec, start, end
        self.s0: _Sample | None = None
        self.s1: _Sample | None = None

    def tick(self, now: float) -> None:
        if self.s0 is None and now >= self.start:
            self.s0 = _Sample.take(self.spec.server_pids)
        if self.s1 is None and now >= self.end:
            self.s1 = _Sample.take(self.spec.server_pids)

    def figures(self, lat: list[float], errors: Counter[str], seconds: float
                ) -> dict[str, Any]:
        s1 = self.s1 or _Sample.take(self.spec.server_pids)
        return _figures(self.spec, lat, errors, self.s0 or s1, s1, seconds)


class _Conn:
    __slots__ = ("buf", "keys", "sent_at", "sock")

    def __init__(self, sock: socket.socket, keys: list[int] | None) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.sent_at = 0.0
        self.keys = keys


def run_worker(spec: WorkerSpec) -> dict[str, Any]:
    """Closed-loop load: ``spec.clients`` connections, one outstanding request each."""
    if spec.pipelined:
        return run_pipelined_worker(spec)
    proto: Proto = RaftkvProto() if spec.system == "raftkv" else EtcdProto(spec.addr)
    rng = random.Random(spec.seed)
    sel = selectors.DefaultSelector()
    conns: list[_Conn] = []

    def open_conn(keys: list[int] | None) -> _Conn:
        s = socket.create_connection(spec.addr, timeout=5.0)
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _Conn(s, keys)
        sel.register(s, selectors.EVENT_READ, c)
        conns.append(c)
        return c

    seq = 0

    def send_next(c: _Conn) -> bool:
        nonlocal seq
        if c.keys is not None:
            if not c.keys:
                return False
            k = c.keys.pop()
        else:
            k = rng.randrange(KEYSPACE)
        seq += 1
        c.sent_at = time.perf_counter()
        c.sock.sendall(proto.request(spec.op, _key(k), seq))
        return True

    for i in range(spec.clients):
        open_conn(list(range(i, KEYSPACE, spec.clients)) if spec.prefill else None)

    lat: list[float] = []
    errors: Counter[str] = Counter()
    t0 = time.perf_counter()
    w_start = t0 + (0.0 if spec.prefill else spec.warmup)
    w_end = w_start + (3600.0 if spec.prefill else spec.duration)
    edges = _Window(spec, w_start, w_end)
    active = 0
    for c in conns:
        if send_next(c):
            active += 1
    while active:
        now = time.perf_counter()
        edges.tick(now)
        if now > w_end + spec.op_timeout:
            errors["unfinished-at-end"] += active
            break
        events = sel.select(timeout=0.05)
        for sk, _ in events:
            c = sk.data
            data = c.sock.recv(65536)
            done = time.perf_counter()
            if not data:
                errors["connection-closed"] += 1
                sel.unregister(c.sock)
                active -= 1
                continue
            c.buf += data
            got = proto.parse(c.buf)
            if got is None:
                continue
            consumed, err = got
            del c.buf[:consumed]
            if c.sent_at >= w_start and done <= w_end:
                if err is None:
                    lat.append(done - c.sent_at)
                else:
                    errors[err] += 1
            elif err is not None and spec.prefill:
                errors[err] += 1
            if done >= w_end or not send_next(c):
                sel.unregister(c.sock)
                active -= 1
        # A request stuck past op_timeout: count it and open a fresh connection.
        now = time.perf_counter()
        for c in list(conns):
            if sel.get_map().get(c.sock) is not None and now - c.sent_at > spec.op_timeout:
                errors["timeout"] += 1
                sel.unregister(c.sock)
                c.sock.close()
                conns.remove(c)
                if now >= w_end or not send_next(open_conn(c.keys)):
                    active -= 1
    for c in conns:
        c.sock.close()
    window = (min(time.perf_counter(), w_end) - w_start) if spec.prefill else spec.duration
    return edges.figures(lat, errors, window)


def _figures(spec: WorkerSpec, lat: list[float], errors: Counter[str], s0: _Sample,
             s1: _Sample, window: float) -> dict[str, Any]:
    """A cell's figures: ``lat``, the latencies of the ops answered in the ``window``
    seconds, and the CPU between the samples at its edges."""
    lat.sort()
    span = max(s1.wall - s0.wall, 1e-9)
    srv_pct = {pid: 100 * (s1.servers[pid] - s0.servers.get(pid, s1.servers[pid])) / span
               for pid in s1.servers}
    own_pct = 100 * (s1.own - s0.own) / span
    busy_pct = 100 * (s1.machine_busy - s0.machine_busy) / span
    return {
        "system": spec.system,
        "op": spec.op,
        "clients": spec.clients,
        "ops": len(lat),
        "ops_per_s": len(lat) / window if window > 0 else 0.0,
        "p50_ms": 1000 * _percentile(lat, 50),
        "p99_ms": 1000 * _percentile(lat, 99),
        "mean_ms": 1000 * statistics.fmean(lat) if lat else float("nan"),
        "max_ms": 1000 * lat[-1] if lat else float("nan"),
        "errors": dict(errors),
        "loadgen_cpu_pct": own_pct,
        "server_cpu_pct": sum(srv_pct.values()),
        "leader_cpu_pct": srv_pct.get(spec.leader_pid, float("nan")),
        # Everything else that kept the machine's CPUs busy (other processes, kernel
        # interrupt work): a sign the figures were disturbed when it is large.
        # (The counters have tick granularity: clamp small negative noise to 0.)
        "other_cpu_pct": max(0.0, busy_pct - own_pct - sum(srv_pct.values())),
    }


def run_pipelined_worker(spec: WorkerSpec) -> dict[str, Any]:
    """Closed-loop load with ``spec.clients`` requests outstanding on one raftkv connection:
    each answer (matched by id) is followed by a new request, and the requests of one read
    go out in one send."""
    if spec.system != "raftkv" or spec.prefill:
        raise ValueError("pipelined load is for raftkv writes and reads only")
    proto = RaftkvProto()
    rng = random.Random(spec.seed)
    s = socket.create_connection(spec.addr, timeout=5.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(1.0)
    sent_at: dict[int, float] = {}
    seq = 0

    def requests(n: int) -> bytes:
        nonlocal seq
        out = []
        now = time.perf_counter()
        for _ in range(n):
            seq += 1
            sent_at[seq] = now
            out.append(proto.request(spec.op, _key(rng.randrange(KEYSPACE)), seq))
        return b"".join(out)

    lat: list[float] = []
    errors: Counter[str] = Counter()
    t0 = time.perf_counter()
    w_start, w_end = t0 + spec.warmup, t0 + spec.warmup + spec.duration
    edges = _Window(spec, w_start, w_end)
    buf = bytearray()
    s.sendall(requests(spec.clients))
    while sent_at:
        now = time.perf_counter()
        edges.tick(now)
        if now > w_end + spec.op_timeout:
            errors["unfinished-at-end"] += len(sent_at)
            break
        try:
            data = s.recv(65536)
        except TimeoutError:
            continue
        done = time.perf_counter()
        if not data:
            errors["connection-closed"] += len(sent_at)
            break
        buf += data
        answered = 0
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            msg = json.loads(bytes(buf[start:nl]))
            start = nl + 1
            t = sent_at.pop(msg.get("id"), None)
            if t is None:
                continue
            answered += 1
            if t >= w_start and done <= w_end:
                if msg.get("ok") is True:
                    lat.append(done - t)
                else:
                    errors[str(msg.get("error"))] += 1
        del buf[:start]
        if answered and done < w_end:
            s.sendall(requests(answered))
    s.close()
    return edges.figures(lat, errors, spec.duration)


def worker_main(spec_json: str) -> int:
    spec = WorkerSpec(**json.loads(spec_json))
    spec.addr = (spec.addr[0], int(spec.addr[1]))
    result = run_worker(spec)
    Path(spec.out).write_text(json.dumps(result))
    return 0


# ======================================================================================
# Control plane (trio): clusters, runs, failover, report
# ======================================================================================

#: Every process this script spawned itself (etcd members, load generators).
_CHILDREN: list[subprocess.Popen[bytes]] = []
_CLUSTERS: list[RaftkvCluster] = []


def _say(text: str = "") -> None:
    print(text, flush=True)


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    # Must run on trio's main thread: the parent-death signal fires when the spawning
    # *thread* exits.
    p = procs.spawn(argv, log_path=log_path)
    _CHILDREN.append(p)
    return p


def _kill_everything() -> None:
    """Last resort, synchronous: SIGKILL every process group we created and reap it."""
    pops = list(_CHILDREN)
    for cl in _CLUSTERS:
        pops += [m.proc for m in cl.members.values() if m.proc is not None]
    for p in pops:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
    for p in pops:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)


async def _stop_proc(p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGTERM)
    with trio.move_on_after(grace):
        while p.poll() is None:
            await trio.sleep(0.02)
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        while p.poll() is None:
            await trio.sleep(0.02)


@dataclass
class RunResult:
    system: str
    op: str
    clients: int
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    loadgen_cpu_pct: float
    server_cpu_pct: float
    leader_cpu_pct: float
    other_cpu_pct: float


async def run_load(spec: WorkerSpec, tmp: Path) -> dict[str, Any]:
    """Run one load-generator process to completion and return its figures."""
    name = f"worker-{spec.system}-{spec.op}-{spec.clients}{'-prefill' if spec.prefill else ''}"
    spec.out = str(tmp / f"{name}.json")
    argv = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(asdict(spec))]
    p = _spawn(argv, tmp / f"{name}.log")
    try:
        with trio.fail_after(spec.warmup + spec.duration + spec.op_timeout + 60):
            while p.poll() is None:
                await trio.sleep(0.05)
    finally:
        with trio.CancelScope(shield=True):  # bounded: SIGKILL after the grace period
            await _stop_proc(p, grace=1.0)
    if p.returncode != 0:
        log = (tmp / f"{name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"load generator {name} failed ({p.returncode}):\n{log}")
    result: dict[str, Any] = json.loads(Path(spec.out).read_text())
    return result


async def measure_system(system: str, addr: Address, pids: list[int], leader_pid: int,
                         args: argparse.Namespace, tmp: Path) -> list[RunResult]:
    def spec(op: str, clients: int, prefill: bool = False) -> WorkerSpec:
        return WorkerSpec(system=system, op=op, clients=clients, addr=addr,
                          warmup=args.warmup, duration=args.duration, out="",
                          server_pids=pids, leader_pid=leader_pid, prefill=prefill)

    pre = await run_load(spec("write", 8, prefill=True), tmp)
    if pre["errors"]:
        _say(f"  prefill errors: {pre['errors']}")
    results = []
    for op in ("write", "read"):
        for c in args.clients:
            r = await run_load(spec(op, c), tmp)
            rr = RunResult(**r)
            results.append(rr)
            _say(f"  {system:<6} {op:<5} C={c:<3} {rr.ops_per_s:9.0f} ops/s  "
                 f"p50 {rr.p50_ms:7.2f} ms  p99 {rr.p99_ms:7.2f} ms  "
                 f"loadgen {rr.loadgen_cpu_pct:4.0f}%  servers {rr.server_cpu_pct:4.0f}% "
                 f"(leader {rr.leader_cpu_pct:3.0f}%)  other {rr.other_cpu_pct:3.0f}%"
                 + (f"  errors {rr.errors}" if rr.errors else ""))
    return results


# ---------------------------------------------------------------------- raftkv


async def bench_raftkv(args: argparse.Namespace, tmp: Path) -> list[RunResult]:
    cluster = RaftkvCluster(tmp / "raftkv", size=3)
    _CLUSTERS.append(cluster)
    cluster.start_all()
    try:
        leader = await cluster.wait_leader(timeout=20)
        await trio.sleep(0.5)
        leader = await cluster.wait_leader(timeout=20)
        m = cluster.members[leader]
        _say(f"raftkv: 3 members up, leader {leader} at {m.client[0]}:{m.client[1]}")
        assert m.proc is not None
        results = await measure_system("raftkv", m.client, cluster.pids(), m.proc.pid,
                                       args, tmp)
        for mid in cluster.members:
            if not cluster.alive(mid):
                _say(f"  WARNING: member {mid} exited during the runs; its log ends: "
                     f"{_crash_reason(cluster, mid)}")
        try:
            after: str | None = await cluster.wait_leader(timeout=5)
        except trio.TooSlowError:
            after = None
        if after != leader:
            _say(f"  WARNING: leadership moved from {leader} to {after} during the runs")
        return results
    finally:
        with trio.CancelScope(shield=True):  # bounded: SIGKILL after the grace period
            await cluster.stop_all()


# ---------------------------------------------------------------------- etcd


def etcd_version() -> str:
    try:
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return " ".join(line.strip() for line in out.splitlines()
                    if line.startswith(("etcd Version", "Go Version")))


class EtcdCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        ports = procs.free_ports(2 * size, HOST)
        self.names = [f"e{k + 1}" for k in range(size)]
        self.peer = {n: ports[2 * k] for k, n in enumerate(self.names)}
        self.client = {n: ports[2 * k + 1] for k, n in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_all(self) -> None:
        initial = ",".join(f"{n}=http://{HOST}:{self.peer[n]}" for n in self.names)
        token = f"bench-{os.getpid()}-{random.randrange(1 << 30)}"
        for n in self.names:
            argv = ["etcd", "--name", n, "--data-dir", str(self.base / n / "data"),
                    "--listen-peer-urls", f"http://{HOST}:{self.peer[n]}",
                    "--initial-advertise-peer-urls", f"http://{HOST}:{self.peer[n]}",
                    "--listen-client-urls", f"http://{HOST}:{self.client[n]}",
                    "--advertise-client-urls", f"http://{HOST}:{self.client[n]}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token, "--logger", "zap",
                    "--log-outputs", "stderr"]
            self.procs[n] = _spawn(argv, self.base / n / "etcd.log")

    async def leader(self, timeout: float = 30.0) -> str:
        """The member every member names as leader."""
        with trio.fail_after(timeout):
            while True:
                ids: dict[str, str] = {}
                leaders: set[str] = set()
                for n in self.names:
                    try:
                        st = await trio.to_thread.run_sync(
                            http_post_json, (HOST, self.client[n]), "/v3/maintenance/status", {})
                    except (OSError, ValueError):
                        break
                    ids[st["header"]["member_id"]] = n
                    leaders.add(st.get("leader", "0"))
                else:
                    if len(leaders) == 1 and (lid := leaders.pop()) in ids:
                        return ids[lid]
                await trio.sleep(0.1)

    async def stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for p in self.procs.values():
                nursery.start_soon(_stop_proc, p)


async def bench_etcd(args: argparse.Namespace, tmp: Path) -> list[RunResult]:
    cluster = EtcdCluster(tmp / "etcd")
    cluster.start_all()
    try:
        leader = await cluster.leader()
        addr = (HOST, cluster.client[leader])
        _say(f"etcd: 3 members up, leader {leader} at {addr[0]}:{addr[1]}")
        pids = [p.pid for p in cluster.procs.values()]
        results = await measure_system("etcd", addr, pids, cluster.procs[leader].pid, args,
                                       tmp)
        try:
            after: str | None = await cluster.leader(timeout=5)
        except trio.TooSlowError:
            after = None
        if after != leader:
            _say(f"  WARNING: leadership moved from {leader} to {after} during the runs")
        return results
    finally:
        with trio.CancelScope(shield=True):  # bounded: SIGKILL after the grace period
            await cluster.stop_all()


# ---------------------------------------------------------------------- failover


@dataclass
class _FailoverState:
    ids: list[str]
    killed: str | None = None
    t_kill: float = 0.0
    first_ack: float | None = None
    first_ack_node: str | None = None
    last_ack_before_kill: float | None = None
    acked: trio.Event = field(default_factory=trio.Event)  # set at a survivor's first ack
    acks: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stop: bool = False

    def on_ack(self, node: str, t: float) -> None:
        self.acks += 1
        if self.killed is None or t < self.t_kill:
            self.last_ack_before_kill = t
            return
        if node == self.killed:  # answered before it died: committed before the kill
            return
        if self.first_ack is None:
            self.first_ack, self.first_ack_node = t, node
            self.acked.set()


async def _failover_writer(cluster: RaftkvCluster, wid: int, st: _FailoverState) -> None:
    """Write continuously to whoever leads; on trouble, retry on the hinted leader or the
    next member. Connections stay open until the end (a lost one is replaced), so that a
    timed-out request's late answer is read, not answered with a TCP reset."""
    down: dict[str, float] = {}  # member -> when we last failed to reach it
    ids = st.ids
    target = ids[wid % len(ids)]
    seq = 0

    def next_node(after: str) -> str:
        return ids[(ids.index(after) + 1) % len(ids)]

    async with contextlib.AsyncExitStack() as stack:
        conns: dict[str, KVClient] = {}
        while not st.stop:
            client = conns.get(target)
            if client is None or client.closed:
                try:
                    client = conns[target] = await stack.enter_async_context(
                        connect(*cluster.members[target].client, timeout=FAILOVER_OP_TIMEOUT))
                except (OSError, trio.TooSlowError):
                    st.errors["connect-failed"] += 1
                    down[target] = time.monotonic()
                    target = next_node(target)
                    await trio.sleep(0.005)
                    continue
            seq += 1
            try:
                r = await client.call({"op": "write", "key": f"fo{wid}-{seq % KEYSPACE}",
                                       "value": seq}, timeout=FAILOVER_OP_TIMEOUT)
            except (trio.TooSlowError, ConnectionLost) as e:
                st.errors[type(e).__name__] += 1
                down[target] = time.monotonic()
                target = next_node(target)
                continue
            now = time.monotonic()
            if r.get("ok") is True:
                st.on_ack(target, now)
                continue
            err = str(r.get("error"))
            st.errors[err] += 1
            hint = r.get("leader")
            if (err == "not-leader" and hint in ids and hint != target
                    and now - down.get(hint, -1e9) > 0.25):
                target = hint
            else:
                target = next_node(target)
                await trio.sleep(0.005)


async def _wait_caught_up(cluster: RaftkvCluster, mids: list[str], timeout: float = 30.0
                          ) -> bool:
    """Wait until every member in ``mids`` knows the leader and has applied what that
    leader had committed when we first saw it."""
    target: int | None = None
    with trio.move_on_after(timeout):
        while True:
            sts = await cluster.statuses()
            leaders = [s for s in sts.values() if s and s["role"] == "leader"]
            if leaders and target is None:
                target = int(leaders[0]["commit"])
            if target is not None and all(
                    (s := sts.get(m)) and s["leader"] and int(s["applied"]) >= target
                    for m in mids):
                return True
            await trio.sleep(0.05)
    return False


def _crash_reason(cluster: RaftkvCluster, mid: str) -> str:
    """The last exception line (and the last node-code frame) in a member's log."""
    try:
        lines = cluster.members[mid].log_path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    lines = [ln.strip(" |+-") for ln in lines]
    errs = [ln for ln in lines if ("Error" in ln or "Exception" in ln)
            and not ln.startswith(("File ", "Traceback", "Exception Group Traceback"))]
    frames = [ln for ln in lines if ln.startswith("File ") and "/nodes/" in ln]
    if not errs:
        return lines[-1][:200] if lines else "(empty log)"
    where = f" [last node frame: {frames[-1]}]" if frames else ""
    return errs[-1][:200] + where


async def bench_failover(runs: int, tmp: Path) -> list[dict[str, Any]]:
    cluster = RaftkvCluster(tmp / "raftkv-failover", size=3)
    _CLUSTERS.append(cluster)
    cluster.start_all()
    st = _FailoverState(ids=sorted(cluster.members))
    out: list[dict[str, Any]] = []
    try:
        await cluster.wait_leader(timeout=20)
        async with trio.open_nursery() as nursery:
            for w in range(FAILOVER_WRITERS):
                nursery.start_soon(_failover_writer, cluster, w, st)
            for run in range(1, runs + 1):
                try:
                    leader = await cluster.wait_leader(timeout=20)
                except trio.TooSlowError:
                    _say("  no leader within 20 s: stopping the failover runs here")
                    break
                before = st.acks
                with trio.move_on_after(10):
                    while st.acks < before + 20:  # the writers have found the leader
                        await trio.sleep(0.01)
                await trio.sleep(0.3)
                st.first_ack = st.first_ack_node = None
                st.acked = trio.Event()
                st.killed, st.t_kill = leader, time.monotonic()
                await cluster.kill(leader)
                with trio.move_on_after(FAILOVER_ACK_WAIT):
                    await st.acked.wait()
                first, first_node, last_before = (st.first_ack, st.first_ack_node,
                                                  st.last_ack_before_kill)
                st.killed = None
                await trio.sleep(0.2)
                # A survivor that died on its own (not our doing): record it and say why.
                crashed = [m for m in st.ids if m != leader and not cluster.alive(m)]
                rec: dict[str, Any] = {"run": run, "killed": leader, "ms": None,
                                       "new_leader": first_node, "gap_ms": None,
                                       "survivors_crashed": {m: _crash_reason(cluster, m)
                                                             for m in crashed}}
                if first is None:
                    line = f"NO write acknowledged within {FAILOVER_ACK_WAIT:g} s"
                else:
                    rec["ms"] = 1000 * (first - st.t_kill)
                    if last_before is not None:
                        rec["gap_ms"] = 1000 * (first - last_before)
                    line = (f"first write acknowledged by {first_node} "
                            f"{rec['ms']:.0f} ms after the kill")
                    if rec["gap_ms"] is not None:
                        line += f" ({rec['gap_ms']:.0f} ms after the last ack before it)"
                _say(f"  run {run}: killed {leader}; {line}")
                for m, why in rec["survivors_crashed"].items():
                    _say(f"    !! surviving member {m} exited by itself; its log ends: {why}")
                for m in [leader, *crashed]:
                    cluster.start(m)
                if not await _wait_caught_up(cluster, [leader, *crashed]):
                    _say("  WARNING: restarted member(s) did not catch up within 30 s")
                out.append(rec)
                await trio.sleep(0.5)
            st.stop = True
            nursery.cancel_scope.cancel()
        _say(f"  writer errors over all runs (retried): {dict(st.errors)}")
    finally:
        with trio.CancelScope(shield=True):  # bounded: SIGKILL after the grace period
            await cluster.stop_all()
    return out


# ---------------------------------------------------------------------- report


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)


def print_table(results: list[RunResult]) -> list[dict[str, Any]]:
    _say()
    _say("cpu columns: % of one core over the window (the machine has "
         f"{os.cpu_count()} x 100 %); 'other' = everything else busy on the machine")
    hdr = (f"{'system':<7} {'op':<6} {'clients':>7} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
           f"{'errors':>6} {'loadgen':>7} {'servers':>7} {'leader':>6} {'other':>5}")
    _say(hdr)
    _say("-" * len(hdr))
    for r in sorted(results, key=lambda r: (r.op != "write", r.clients, r.system != "raftkv")):
        _say(f"{r.system:<7} {r.op:<6} {r.clients:>7} {r.ops_per_s:>8.0f} "
             f"{_fmt(r.p50_ms, '.2f'):>7} {_fmt(r.p99_ms, '.2f'):>7} "
             f"{sum(r.errors.values()):>6} {r.loadgen_cpu_pct:>7.0f} "
             f"{r.server_cpu_pct:>7.0f} {_fmt(r.leader_cpu_pct, '.0f'):>6} "
             f"{r.other_cpu_pct:>5.0f}")
    noisy = [r for r in results if r.other_cpu_pct > 25]
    if noisy:
        _say(f"NOTE: in {len(noisy)} of {len(results)} cells other work used > 25 % of a core: "
             "the machine was not quiet, so those figures are disturbed")
    by = {(r.system, r.op, r.clients): r for r in results}
    ratios: list[dict[str, Any]] = []
    for op in ("write", "read"):
        for c in sorted({r.clients for r in results}):
            a, b = by.get(("raftkv", op, c)), by.get(("etcd", op, c))
            if a is None or b is None:
                continue
            ratios.append({
                "op": op, "clients": c,
                "ops_per_s": a.ops_per_s / b.ops_per_s if b.ops_per_s else float("nan"),
                "p99": a.p99_ms / b.p99_ms if b.p99_ms else float("nan"),
            })
    if ratios:
        _say()
        _say(f"{'raftkv/etcd':<14} {'clients':>7} {'ops/s ratio':>12} {'p99 ratio':>10}")
        for q in ratios:
            _say(f"{'ratio ' + q['op']:<14} {q['clients']:>7} {q['ops_per_s']:>12.3f} "
                 f"{q['p99']:>10.2f}")
    return ratios


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each "
                   "window, not measured")
    p.add_argument("--clients", default="1,8,32",
                   type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                   help="comma-separated client counts")
    p.add_argument("--no-etcd", action="store_true", help="skip the etcd comparison")
    p.add_argument("--failover-runs", type=int, default=5, help="0 skips the failover test")
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    if not args.no_etcd and shutil.which("etcd") is None:
        _say("etcd is not installed (Debian: etcd-server): running raftkv only")
        args.no_etcd = True
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "etcd_version": None if args.no_etcd else etcd_version(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "clients": args.clients,
    }
    _say(f"command: {report['command']}")
    report["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    _say(f"machine: nproc={report['nproc']}  {report['platform']}  "
         f"python {report['python']}  loadavg {report['loadavg_at_start']}")
    if not args.no_etcd:
        _say(f"etcd: {report['etcd_version']}")
    _say(f"workload: {KEYSPACE} keys, {VALUE_BYTES}-byte values, {args.warmup:g} s warm-up "
         f"+ {args.duration:g} s window per cell, closed loop, 1 outstanding op per client")
    _say(f"temp dir: {tmp}")
    _say()
    results = await bench_raftkv(args, tmp)
    if not args.no_etcd:
        results += await bench_etcd(args, tmp)
    report["results"] = [asdict(r) for r in results]
    report["ratios"] = print_table(results)
    if args.failover_runs > 0:
        _say()
        _say(f"failover: raftkv, {FAILOVER_WRITERS} writers, {FAILOVER_OP_TIMEOUT:g} s op "
             f"timeout, SIGKILL the leader, time to the first write acknowledged by a "
             f"survivor")
        runs = await bench_failover(args.failover_runs, tmp)
        times = [r["ms"] for r in runs if r["ms"] is not None]
        med = statistics.median(times) if times else None
        crashes = sum(1 for r in runs if r["survivors_crashed"])
        report["failover"] = {"runs": runs, "median_ms": med, "recovered": len(times),
                              "runs_with_survivor_crash": crashes}
        _say("  failover ms: " + ", ".join(_fmt(r["ms"], ".0f") for r in runs)
             + f"   median {_fmt(med, '.0f')} ms over the {len(times)} of {len(runs)} runs"
             " that recovered")
        if crashes:
            _say(f"  in {crashes} of {len(runs)} runs a SURVIVING member crashed as well "
                 "(a raftkv bug, not a measurement artefact: see its log line above)")
    return report


async def _with_signals(args: argparse.Namespace, tmp: Path) -> dict[str, Any] | None:
    """Run :func:`amain`; SIGINT/SIGTERM/SIGHUP cancel it so that the clean-up still runs."""
    result: dict[str, Any] | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                async for s in sigs:
                    _say(f"\ninterrupted by {signal.Signals(s).name}: stopping")
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            result = await amain(args, tmp)
            nursery.cancel_scope.cancel()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="raftkv-bench-"))
    report: dict[str, Any] | None = None
    try:
        report = trio.run(_with_signals, args, tmp)
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping")
    finally:
        _kill_everything()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if report is None:
        return 1
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        _say(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit(main())
