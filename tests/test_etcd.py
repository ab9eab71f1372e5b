"""The etcd adapter (``lab/systems/etcd/``): real etcd 3.4 members wired through the built-in
proxy server, one proxy per directed link, and its client driver.

* The client driver's outcome mapping runs against a scripted stand-in for etcd's JSON
  gateway (no etcd needed): refused -> ``fail``, timeout / lost connection on a write ->
  ``info``, any failed read -> ``fail``, etcd's refusals -> ``fail``, other errors on a
  write -> ``info``.
* The cluster tests (``etcd``, ``processes``) start 3 members, each in its own mount
  namespace whose ``/etc/hosts`` sends its traffic for member j to proxy i->j, and prove:
  a leader, writes, reads and cas through the client proxies; that every peer connection
  a member makes goes to its own proxies (nothing bypasses them); that a one-way cut
  blocks exactly one direction; kill / restart on the same data dir, pause / resume and
  isolation; and that nothing (no etcd, no proxy, no port) is left behind.
* One end-to-end ``raftlab run --system etcd`` with the register workload and
  kill-leader, with a time limit long enough for one kill to bite.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
from needs import missing

from lab import topology as T
from lab.network import Network
from lab.procs import descendants_alive, listening_ports
from lab.systems import STATUS_FIELDS, make_system, spec
from lab.systems.etcd import problem
from lab.systems.etcd.client import EtcdClient
from lab.systems.etcd.cluster import EtcdCluster, check_options
from lab.toxiclient import open_toxiproxy

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0
_SCRIPT = Path(sys.executable).with_name("raftlab")
RAFTLAB: list[str] = ([str(_SCRIPT)] if _SCRIPT.exists() else
                      [sys.executable, "-c", "import sys; from lab.cli import main; "
                                             "sys.exit(main())"])


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(DEADLINE):
            return await fn()

    return trio.run(bounded)


def need_etcd() -> None:
    why = problem()
    if why:
        missing("etcd", why)


# --------------------------------------------------------------------------- no etcd needed


def test_options_are_checked_with_one_line_messages(tmp_path: Path) -> None:
    assert check_options(None)["election_ms"] == 1000
    assert check_options({"heartbeat_ms": 50, "election_ms": 300})["heartbeat_ms"] == 50
    for bad, text in (({"electon_ms": 300}, "unknown etcd option 'electon_ms'"),
                      ({"heartbeat_ms": 100, "election_ms": 300}, "at least 5 x"),
                      ({"heartbeat_ms": "fast"}, "positive integers"),
                      ({"snapshot_count": 0}, "snapshot_count"),
                      ({"pre_vote": "yes"}, "pre_vote")):
        with pytest.raises(ValueError, match=re.escape(text)) as e:
            check_options(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="only in raftkv"):
        make_system("etcd", tmp_path, 3, bugs=["early-ack"])
    assert spec("raftkv").problem("bank") is None
    msg = spec("etcd").problem("graph")
    assert msg is not None and "no client driver for model 'graph'" in msg


def test_members_resolve_peers_to_their_own_proxy_of_each_directed_link(tmp_path: Path
                                                                         ) -> None:
    c = EtcdCluster(tmp_path, 3)
    assert c.proxy_listen("n1", "n3") == ("127.0.1.3", c.members["n3"].peer[1])
    assert c.proxy_listen("n3", "n1") == ("127.0.3.1", c.members["n1"].peer[1])
    c.dial = c.proxy_listen  # what Network.dial answers when the server honours them
    assert c.hosts("n2").splitlines()[1:] == [
        "127.0.0.1 n2", "127.0.2.1 n1", "127.0.2.3 n3"]
    argv = c.argv("n2")
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert "exec" in argv[7] and argv[8] == str(c.members["n2"].hosts_path)
    cluster = argv[argv.index("--initial-cluster") + 1]
    assert cluster == ",".join(f"n{k}=http://n{k}:{c.members[f'n{k}'].peer[1]}"
                               for k in (1, 2, 3))
    assert argv[argv.index("--listen-peer-urls") + 1].startswith("http://127.0.0.1:")
    c.dial = lambda i, j: ("127.0.0.1", 1)  # a proxy that is not where etcd will dial
    with pytest.raises(RuntimeError, match="did not honour proxy_listen"):
        c.hosts("n1")


# A scripted stand-in for etcd's JSON gateway: ``script(path, request) -> action`` where
# action is (status, json), "hang" (never answer) or "close" (hang up after the request).
Script = Callable[[str, dict[str, Any]], Any]


@asynccontextmanager
async def fake_gateway(script: Script, *, chunked: bool = False,
                       idle_close: float | None = None
                       ) -> AsyncIterator[tuple[tuple[str, int], list[str]]]:
    """``idle_close``: hang up on a kept-alive connection idle that long (as a proxy does
    when a fault is healed)."""
    seen: list[str] = []

    async def handle(stream: trio.SocketStream) -> None:
        buf = bytearray()
        served = False
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    with trio.move_on_after(idle_close if served and idle_close else 1e9
                                            ) as idle:
                        data = await stream.receive_some(65536)
                    if idle.cancelled_caught or not data:
                        return
                    buf += data
                head, _, rest = bytes(buf).partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next(int(x.split(":")[1]) for x in lines
                              if x.lower().startswith("content-length"))
                while len(rest) < length:
                    rest += await stream.receive_some(65536)
                body, buf = json.loads(rest[:length]), bytearray(rest[length:])
                path = lines[0].split()[1]
                seen.append(path)
                action = script(path, body)
                if action == "hang":
                    await trio.sleep_forever()
                if action == "close":
                    return
                status, obj = action
                payload = json.dumps(obj).encode()
                if chunked:
                    framing = b"Transfer-Encoding: chunked\r\n\r\n"
                    half = len(payload) // 2
                    payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                                       for p in (payload[:half], payload[half:])) + b"0\r\n\r\n"
                else:
                    framing = b"Content-Length: %d\r\n\r\n" % len(payload)
                await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                                      % status + framing + payload)
                served = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    async with trio.open_nursery() as n:
        listeners = await n.start(trio.serve_tcp, handle, 0)
        port = listeners[0].socket.getsockname()[1]
        yield ("127.0.0.1", port), seen
        n.cancel_scope.cancel()


def _kv(value: Any, mod: int = 7) -> dict[str, Any]:
    return {"key": "", "mod_revision": str(mod),
            "value": base64.b64encode(json.dumps(value).encode()).decode()}


def test_client_maps_etcd_answers_and_failures_onto_ok_fail_info() -> None:
    timed_out = (503, {"error": "etcdserver: request timed out", "code": 14})

    async def body() -> None:
        # etcd answers, errors that may have happened, and reads
        async with fake_gateway(lambda p, b: timed_out) as (addr, _), \
                EtcdClient({"n1": addr}, 1.0, random.Random(0)) as c:
            w = await c.invoke("register", "write", "k", 1)
            assert (w.type, w.error) == ("info", "etcdserver: request timed out")
            r = await c.invoke("register", "read", "k", None)
            assert r.type == "fail"
            t = await c.invoke("list-append", "txn", None, [["r", "x", None]])
            assert t.type == "fail"
        # a refusal before proposing: retried on the next member, which answers
        calls: list[str] = []

        def busy_then_ok(path: str, req: dict[str, Any]) -> Any:
            calls.append(path)
            if len(calls) == 1:
                return 429, {"error": "etcdserver: too many requests", "code": 8}
            return 200, {"header": {}, "kvs": [_kv(3)]}

        async with fake_gateway(busy_then_ok, chunked=True) as (addr, _), \
                EtcdClient({"n1": addr, "n2": addr}, 1.0, random.Random(0)) as c:
            r = await c.invoke("register", "read", "k", None)
            assert (r.type, r.value) == ("ok", 3) and len(calls) == 2
        # a refusal that persists is a certain failure, even for a write
        async with fake_gateway(lambda p, b: (400, {"error": "bad", "code": 3})) as (a, _), \
                EtcdClient({"n1": a}, 1.0, random.Random(0)) as c:
            assert (await c.invoke("register", "write", "k", 1)).type == "fail"
        # no answer: a write is info, a read fail, both within the timeout
        async with fake_gateway(lambda p, b: "hang") as (addr, _), \
                EtcdClient({"n1": addr}, 0.3, random.Random(0)) as c:
            with trio.fail_after(30):  # each ends at its own 0.3 s timeout, not never
                w = await c.invoke("register", "cas", "k", [1, 2])
                assert (w.type, w.error) == ("info", "timeout")
                assert (await c.invoke("set", "read", None, None)).type == "fail"
        # the connection drops after the request
        async with fake_gateway(lambda p, b: "close") as (addr, _), \
                EtcdClient({"n1": addr}, 1.0, random.Random(0)) as c:
            w = await c.invoke("counter", "read", None, None)
            assert w.type == "fail"
            b = await c.invoke("set", "add", None, 5)
            assert (b.type, b.error) == ("info", "connection")
        # nobody listens: certainly not sent
        async with fake_gateway(lambda p, b: timed_out) as (addr, _):
            pass
        async with EtcdClient({"n1": addr, "n2": addr}, 0.5, random.Random(0)) as c:
            w = await c.invoke("register", "write", "k", 1)
            assert w.type == "fail" and w.error is not None and "unreachable" in w.error

    run(body)


def test_client_transactions_compare_what_they_read_and_retry_conflicts() -> None:
    state = {"commits": 0}

    def script(path: str, req: dict[str, Any]) -> Any:
        if path == "/v3/kv/txn" and "compare" in req:
            if req["compare"][0]["target"] == "VALUE":
                return 200, {"header": {}}  # cas: the compare failed ("succeeded" omitted)
            state["commits"] += 1
            assert all(c["target"] == "MOD" and c["mod_revision"] in ("7", "0")
                       for c in req["compare"])
            # the first commit of each operation conflicts, the second succeeds
            return 200, {"header": {}, "succeeded": state["commits"] % 2 == 0}
        if path == "/v3/kv/txn":  # a read-only txn of ranges
            keys = [base64.b64decode(r["request_range"]["key"]).decode()
                    for r in req["success"]]
            return 200, {"header": {}, "succeeded": True, "responses": [
                {"response_range": {"kvs": [_kv(50 if k.startswith("b/") else [1, 2])]}}
                for k in keys]}
        raise AssertionError(path)

    async def body() -> None:
        # the server hangs up on idle connections: a stale one must be noticed and
        # replaced, never reported as a lost request
        async with fake_gateway(script, idle_close=0.02) as (addr, seen), \
                EtcdClient({"n1": addr}, 2.0, random.Random(0), ["a0", "a1"]) as c:
            cas = await c.invoke("register", "cas", "k", [1, 2])
            assert (cas.type, cas.error) == ("fail", "mismatch")
            await trio.sleep(0.1)
            t = await c.invoke("bank", "transfer", None,
                               {"from": "a0", "to": "a1", "amount": 5})
            assert t.type == "ok", t
            assert seen[-4:] == ["/v3/kv/txn"] * 4  # read, conflict, read, commit
            await trio.sleep(0.1)
            la = await c.invoke("list-append", "txn", None,
                                [["append", "x", 3], ["r", "x", None], ["r", "y", None]])
            assert (la.type, la.value) == ("ok", [["append", "x", 3], ["r", "x", [1, 2, 3]],
                                                  ["r", "y", [1, 2]]])
            rich = await c.invoke("bank", "transfer", None,
                                  {"from": "a0", "to": "a1", "amount": 500})
            assert (rich.type, rich.error) == ("fail", "insufficient-funds")

    run(body)


# --------------------------------------------------------------------------- real etcd


def log_tail(cluster: EtcdCluster, lines: int = 15) -> str:
    out = []
    for m in cluster.members.values():
        text = m.log_path.read_text(errors="replace") if m.log_path.exists() else ""
        out += [f"--- {m.id} ({m.log_path}) ---", *text.splitlines()[-lines:]]
    return "\n".join(out)


@asynccontextmanager
async def etcd_through_proxies(tmp_path: Path, size: int = 3
                               ) -> AsyncIterator[tuple[EtcdCluster, Network]]:
    """A started etcd cluster whose members reach each other only through the proxies of
    the built-in server; afterwards every member, the server and every port are proven
    gone, and no member panicked."""
    need_etcd()
    cluster = EtcdCluster(tmp_path / "nodes", size)
    ports: list[int] = list(cluster.ports())
    pid: int | None = None
    ok = False
    try:
        async with open_toxiproxy(None, tmp_path / "toxiproxy.log",
                                  use_binary=False) as (client, _kind):
            pid = client.server_pid
            net = await Network.create(client, {m.id: (m.peer, m.client)
                                                for m in cluster.members.values()},
                                       listen=cluster.proxy_listen)
            ports += [*net.ports(), client.port]
            cluster.dial = net.dial
            cluster.start_all()
            try:
                yield cluster, net
                ok = True
            finally:
                with trio.CancelScope(shield=True):
                    await cluster.stop_all()
    finally:
        if not ok:
            print(log_tail(cluster))
    assert descendants_alive(cluster.pids() + ([pid] if pid else [])) == []
    assert listening_ports(ports) == []
    for m in cluster.members.values():
        assert "panic" not in m.log_path.read_text(errors="replace"), log_tail(cluster)


async def wait_for(cluster: EtcdCluster, pred: Callable[[], Awaitable[bool]], timeout: float,
                   what: str) -> None:
    with trio.move_on_after(timeout):
        while not await pred():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; statuses "
                         f"{await cluster.statuses()}")


async def settled(cluster: EtcdCluster, timeout: float = 20.0) -> str:
    """Every live member answers and follows one leader; returns it."""
    leader: list[str] = []

    async def agree() -> bool:
        st = await cluster.statuses()
        live = [st[m] for m in cluster.members if cluster.alive(m)]
        names = {s["leader"] for s in live if s is not None}
        if any(s is None for s in live) or len(names) != 1 or None in names:
            return False
        leader[:] = [str(next(iter(names)))]
        return True

    await wait_for(cluster, agree, timeout, "every member to follow one leader")
    return leader[0]


def client(net: Network, *mids: str, timeout: float = 2.0) -> EtcdClient:
    return EtcdClient({m: net.client_addr(m) for m in mids}, timeout, random.Random(0))


async def applied(cluster: EtcdCluster, mid: str) -> int:
    s = await cluster.status(mid)
    assert s is not None and s["applied"] is not None, f"{mid} does not answer"
    return int(s["applied"])


async def write_until_ok(c: EtcdClient, key: str, value: Any, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while (await c.invoke("register", "write", key, value)).type != "ok":
            await trio.sleep(0.2)


@pytest.mark.etcd
@pytest.mark.processes
def test_cluster_elects_writes_reads_and_every_peer_link_goes_through_its_proxy(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with etcd_through_proxies(tmp_path) as (cluster, net):
            assert re.fullmatch(r"etcd 3\.\d+\.\d+", cluster.version())
            leader = await settled(cluster)
            st = await cluster.statuses()
            terms = set()
            for mid, s in st.items():
                assert s is not None and tuple(s) == STATUS_FIELDS
                assert s["node"] == mid and s["leader"] == leader
                assert s["role"] == ("leader" if mid == leader else "follower")
                terms.add(s["term"])
            assert len(terms) == 1
            # the lab's pid is etcd itself (unshare and sh exec'd), in its own namespace
            for m in cluster.members.values():
                assert m.proc is not None and psutil.Process(m.proc.pid).name() == "etcd"
                listens = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(
                    m.proc.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}
                assert listens == {m.peer, m.client}  # loopback only, nothing else
                assert os.readlink(f"/proc/{m.proc.pid}/ns/mnt") != os.readlink(
                    "/proc/self/ns/mnt")
            async with client(net, "n1") as c1, client(net, "n2") as c2, \
                    client(net, "n3") as c3:
                assert (await c1.invoke("register", "write", "x", 1)).type == "ok"
                for c in (c1, c2, c3):  # linearizable reads on every member
                    assert (await c.invoke("register", "read", "x", None)).value == 1
                cas = await c2.invoke("register", "cas", "x", [2, 3])
                assert (cas.type, cas.error) == ("fail", "mismatch")
                assert (await c3.invoke("register", "cas", "x", [1, 3])).type == "ok"
                assert (await c1.invoke("register", "read", "x", None)).value == 3
                assert (await c1.invoke("register", "read", "nope", None)).value is None
            # every connection a member dials to a peer port goes to its own proxy i->j
            owner = {m.peer[1]: m for m in cluster.members.values()}
            for m in cluster.members.values():
                assert m.proc is not None
                reached = set()
                for conn in psutil.Process(m.proc.pid).net_connections("tcp"):
                    if not conn.raddr or conn.laddr.port in (m.peer[1], m.client[1]):
                        continue  # inbound, or the gateway talking to its own gRPC port
                    dst = owner.get(conn.raddr.port)
                    if dst is not None:
                        assert conn.raddr.ip == f"127.0.{m.index}.{dst.index}", (m.id, conn)
                        reached.add(dst.id)
                    assert conn.raddr.ip.startswith("127."), conn
                assert reached == set(cluster.members) - {m.id}, (m.id, reached)

    run(body)


@pytest.mark.etcd
@pytest.mark.processes
def test_a_one_way_cut_blocks_exactly_one_direction(tmp_path: Path) -> None:
    async def body() -> None:
        async with etcd_through_proxies(tmp_path) as (cluster, net):
            leader = await settled(cluster)
            f = min(m for m in cluster.members if m != leader)
            term = (await cluster.status(leader) or {})["term"]
            async with client(net, leader) as c:
                await write_until_ok(c, "w", 0)

                async def follows(mid: str, who: str | None) -> bool:
                    s = await cluster.status(mid)
                    return s is not None and s["leader"] == who

                # leader -> f cut: f hears nothing, loses its leader, applies nothing new
                fault = await net.cut(leader, f)
                await wait_for(cluster, lambda: follows(f, None), 10,
                               f"{f} to lose its leader")
                stalled = await applied(cluster, f)
                for k in range(10):
                    assert (await c.invoke("register", "write", "w", k)).type == "ok"
                await trio.sleep(1.0)
                assert await applied(cluster, leader) >= stalled + 10
                assert await applied(cluster, f) == stalled
                assert (await cluster.status(leader) or {})["term"] == term  # PreVote
                await net.heal(fault)
                target = await applied(cluster, leader)

                async def caught_up() -> bool:
                    return await follows(f, leader) and await applied(cluster, f) >= target

                await wait_for(cluster, caught_up, 15, f"{f} to catch up after healing")
                # f -> leader cut: the leader's appends still reach f, which applies them
                fault = await net.cut(f, leader)
                before = await applied(cluster, f)
                for k in range(10):
                    assert (await c.invoke("register", "write", "w", 10 + k)).type == "ok"
                target = await applied(cluster, leader)
                assert target >= before + 10

                async def applies() -> bool:
                    return await applied(cluster, f) >= target

                await wait_for(cluster, applies, 10, f"{f} to apply what {leader} sends it")
                assert await follows(f, leader)
                await net.heal(fault)

    run(body)


@pytest.mark.etcd
@pytest.mark.processes
def test_an_isolated_leader_cannot_commit_and_the_others_elect_without_it(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with etcd_through_proxies(tmp_path) as (cluster, net):
            old = await settled(cluster)
            fault = await net.partition(T.isolate(old, cluster.members))
            new = await cluster.wait_leader(timeout=20, exclude=[old])
            assert new != old

            async def stepped_down() -> bool:
                s = await cluster.status(old)
                return s is not None and s["role"] != "leader"

            await wait_for(cluster, stepped_down, 10, f"{old} to step down (CheckQuorum)")
            stuck = await applied(cluster, old)
            async with client(net, old, timeout=1.0) as c_old, client(net, new) as c_new:
                w = await c_old.invoke("register", "write", "y", 1)
                assert w.type in ("info", "fail"), w  # no quorum reachable from there
                assert (await c_old.invoke("register", "read", "y", None)).type == "fail"
                assert (await c_new.invoke("register", "write", "y", 2)).type == "ok"
                assert await applied(cluster, old) == stuck
                await net.heal(fault)
                await settled(cluster)
                possible = {2} if w.type == "fail" else {1, 2}  # info: it may yet apply
                assert (await c_old.invoke("register", "read", "y", None)).value in possible

    run(body)


@pytest.mark.etcd
@pytest.mark.processes
def test_kill_restart_on_the_same_data_and_pause_resume(tmp_path: Path) -> None:
    async def body() -> None:
        async with etcd_through_proxies(tmp_path) as (cluster, net):
            old = await settled(cluster)
            async with client(net, *cluster.members) as c:
                await write_until_ok(c, "z", "before")
                await cluster.kill(old)
                assert not cluster.alive(old)
                await cluster.wait_leader(timeout=20, exclude=[old])
                await write_until_ok(c, "z", "during")
                cluster.start(old)  # same data dir: it rejoins with its WAL
                assert cluster.members[old].starts == 2
                await settled(cluster)
                async with client(net, old) as c_old:
                    r = await c_old.invoke("register", "read", "z", None)
                    assert (r.type, r.value) == ("ok", "during")
                # pause the leader: the others elect another; resumed, it follows
                paused = await settled(cluster)
                cluster.signal(paused, signal.SIGSTOP)
                try:
                    third = await cluster.wait_leader(timeout=20, exclude=[paused])
                finally:
                    cluster.signal(paused, signal.SIGCONT)

                async def follows() -> bool:
                    s = await cluster.status(paused)
                    return s is not None and s["role"] == "follower" and s["leader"] == third

                await wait_for(cluster, follows, 15, f"resumed {paused} to follow {third}")
                await write_until_ok(c, "z", "after")
            # a clean stop (SIGTERM) of all, WALs made sparse, and a restart keep the data
            await cluster.stop_all()
            wal = next((cluster.members["n1"].data_dir / "member" / "wal").glob("*.wal"))
            assert wal.stat().st_size == 64_000_000 > 100 * wal.stat().st_blocks * 512
            cluster.start_all()
            await settled(cluster)
            async with client(net, *cluster.members) as c:
                with trio.fail_after(15):
                    while (r := await c.invoke("register", "read", "z", None)).type != "ok":
                        await trio.sleep(0.2)
                assert r.value == "after"

    run(body)


@pytest.mark.etcd
@pytest.mark.processes
def test_raftlab_run_register_kill_leader_on_etcd_is_valid(tmp_path: Path) -> None:
    need_etcd()
    out = tmp_path / "out"
    # kill-leader's first kill starts 9-11 s in and lasts 4-5 s: 17 s lets one bite
    args = ["run", "workloads/register.yaml", "faults/kill-leader.yaml", "--system", "etcd",
            "--nodes", "3", "--time-limit", "17", "--out", str(out)]
    proc = subprocess.run([*RAFTLAB, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [p for p in out.glob("*/*") if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["verdict"] == "valid" and results["system"] == "etcd"
    assert results["system_version"].startswith("etcd 3.")
    assert results["nothing_left_behind"] is True
    assert results["counts"]["ok"] > 100
    kills = [r for r in results["faults_applied"] if r["action"] == "kill"]
    assert kills and kills[0]["phase"] == "start", results["faults_applied"]
    assert len({x["leader"] for x in results["leaders"]}) >= 2  # a new leader took over
    for mid in ("n1", "n2", "n3"):
        assert (run_dir / "nodes" / mid / "node.log").stat().st_size > 0
        # the members' WALs stay, but their 64 MB preallocated zero tails are holes
        wals = list((run_dir / "nodes" / mid / "data" / "member" / "wal").glob("*.wal"))
        assert wals and all(w.stat().st_blocks * 512 < 16_000_000 for w in wals), [
            (w.name, w.stat().st_blocks * 512) for w in wals]


def test_bad_etcd_options_and_input_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([*RAFTLAB, "run", "workloads/register.yaml", "faults/none.yaml",
                           "--system", "etcd", "--bug", "early-ack", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "etcd" in proc.stderr


@pytest.mark.etcd
@pytest.mark.processes
def test_sigkill_of_the_controller_takes_every_etcd_member_with_it(tmp_path: Path) -> None:
    need_etcd()
    out = tmp_path / "out"
    log = tmp_path / "stdout.txt"
    with open(log, "wb") as so:
        proc = subprocess.Popen(
            [*RAFTLAB, "run", "workloads/register.yaml", "faults/none.yaml", "--system", "etcd",
             "--nodes", "3", "--time-limit", "60", "--out", str(out)],
            cwd=ROOT, stdout=so, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        hist: list[Path] = []
        while not hist or hist[0].read_text().count('"type":"ok"') < 20:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no 20 ok operations within 60 s"
            time.sleep(0.1)
            hist = list(out.glob("*/*/history.jsonl"))
        run_dir = hist[0].parent
        members = [p for p in psutil.process_iter(["name", "cmdline"])
                   if p.info["name"] == "etcd" and str(run_dir) in " ".join(
                       p.info["cmdline"] or [])]
        assert len(members) == 3
        ports = {c.laddr.port for p in members for c in p.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
        assert len(ports) == 6  # a peer and a client port each
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while any(_running(p) for p in members) or listening_ports(sorted(ports)):
            assert time.monotonic() < deadline, "etcd members outlived the controller"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
