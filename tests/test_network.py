"""The network-fault layer on real sockets: ``lab.toxiclient`` against the built-in
Toxiproxy server (a child process started by ``open_toxiproxy``), ``lab.network``'s
primitives with small TCP servers standing in for members, and raftkv clusters wired
through the proxies (leader isolation, "leader can send but not receive").

Every test ends by proving that the Toxiproxy process it started is gone and that none of
its ports (API and proxies) still listens; the raftkv tests also check the members (via
``clusters.running``). Delays are asserted with a lower bound (the contract)
and a generous upper bound for unaffected links, never as performance figures.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import pytest
import trio
from clusters import request, running, statuses, wait_for, wait_leader, wait_settled

from lab import topology as T
from lab.network import Network
from lab.procs import descendants_alive, free_ports, listening_ports
from lab.systems.raftkv.cluster import RaftkvCluster
from lab.toxiclient import (
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyUnavailable,
    open_toxiproxy,
)
from lab.toxiproxy import ToxiproxyServer

DEADLINE = 60.0
QUIET = 0.5  # how long "never arrives" is watched


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(DEADLINE):
            return await fn()

    return trio.run(bounded)


def assert_gone(pid: int | None, ports: list[int]) -> None:
    assert pid is not None
    assert descendants_alive([pid]) == [], "the Toxiproxy server outlived the test"
    assert listening_ports(ports, pids=[pid]) == [], "Toxiproxy ports still listening"


async def eventually(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.005)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def never(pred: Callable[[], bool], what: str, duration: float = QUIET) -> None:
    with trio.move_on_after(duration):
        while not pred():
            await trio.sleep(0.005)
        raise AssertionError(f"unexpectedly: {what}")


# --------------------------------------------------------------------------- stand-in nodes


@dataclass
class Pipe:
    """One end of a TCP connection; a task appends whatever arrives to ``data``."""

    stream: trio.SocketStream
    data: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)

    async def pump(self) -> None:
        async with self.stream:
            try:
                while chunk := await self.stream.receive_some(65536):
                    self.data += chunk
                    self.arrivals.append((trio.current_time(), bytes(chunk)))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                self.closed.set()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def got(self, data: bytes) -> bool:
        return data in self.data

    def arrival_of(self, data: bytes) -> float:
        seen = b""
        for at, chunk in self.arrivals:
            seen += chunk
            if data in seen:
                return at
        raise AssertionError(f"{data!r} never arrived")


class Stub:
    """A stand-in member: a peer and a client listener that accept and record (no echo)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peer_in: list[Pipe] = []
        self.client_in: list[Pipe] = []
        self.ports: list[int] = []

    async def start(self, nursery: trio.Nursery) -> tuple[tuple[str, int], tuple[str, int]]:
        addrs = []
        for inbox in (self.peer_in, self.client_in):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            self.ports.append(port)

            async def handle(stream: trio.SocketStream, inbox: list[Pipe] = inbox) -> None:
                pipe = Pipe(stream)
                inbox.append(pipe)
                await pipe.pump()

            nursery.start_soon(trio.serve_listeners, handle, listeners)
            addrs.append(("127.0.0.1", port))
        return addrs[0], addrs[1]

    def inbound(self, hello: bytes, inbox: list[Pipe] | None = None) -> Pipe | None:
        for pipe in self.peer_in if inbox is None else inbox:
            if pipe.data.startswith(hello):
                return pipe
        return None


@dataclass
class StubLab:
    net: Network
    client: ToxiproxyClient
    stubs: dict[str, Stub]
    nursery: trio.Nursery
    dials: int = 0

    async def connect(self, src: str, dst: str) -> tuple[Pipe, Pipe]:
        """``src`` dials ``dst`` through the network (as a member would) and says hello;
        returns (src's dialled end, dst's accepted end)."""
        self.dials += 1
        hello = f"hello {self.dials} from {src} to {dst}\n".encode()
        stream = await trio.open_tcp_stream(*self.net.dial(src, dst))
        mine = Pipe(stream)
        self.nursery.start_soon(mine.pump)
        await mine.send(hello)
        await eventually(lambda: self.stubs[dst].inbound(hello) is not None,
                         f"{src}'s hello at {dst}")
        theirs = self.stubs[dst].inbound(hello)
        assert theirs is not None
        return mine, theirs

    async def connect_client(self, dst: str) -> tuple[Pipe, Pipe]:
        self.dials += 1
        hello = f"client hello {self.dials}\n".encode()
        stream = await trio.open_tcp_stream(*self.net.client_addr(dst))
        mine = Pipe(stream)
        self.nursery.start_soon(mine.pump)
        await mine.send(hello)
        stub = self.stubs[dst]
        await eventually(lambda: stub.inbound(hello, stub.client_in) is not None,
                         f"client hello at {dst}")
        theirs = stub.inbound(hello, stub.client_in)
        assert theirs is not None
        return mine, theirs


@asynccontextmanager
async def stub_lab(workdir: Path, n: int = 3) -> AsyncIterator[StubLab]:
    """The built-in Toxiproxy, ``n`` stand-in members and a Network over them; on the way
    out everything is closed and proven gone."""
    async with open_toxiproxy(None, workdir / "toxiproxy.log", use_binary=False) as (client, kind):
        assert kind == "built-in"
        pid = client.server_pid
        async with trio.open_nursery() as nursery:
            stubs = {f"n{i}": Stub(f"n{i}") for i in range(1, n + 1)}
            addrs = {name: await stub.start(nursery) for name, stub in stubs.items()}
            net = await Network.create(client, addrs)
            ports = [*net.ports(), client.port, *(p for s in stubs.values() for p in s.ports)]
            yield StubLab(net, client, stubs, nursery)
            nursery.cancel_scope.cancel()
    assert_gone(pid, ports)


async def toxics_on(client: ToxiproxyClient) -> dict[str, list[str]]:
    return {name: sorted(t.name for t in p.toxics)
            for name, p in (await client.proxies()).items() if p.toxics}


# --------------------------------------------------------------------------- toxiclient


def test_client_covers_the_api_and_reports_errors_with_status(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_toxiproxy(None, tmp_path / "toxiproxy.log", use_binary=False) as (c, kind):
            assert kind == "built-in"
            assert await c.version() == "2.12.0"
            assert await c.proxies() == {}
            p = await c.create_proxy("db", "127.0.0.1:0", "127.0.0.1:9")
            assert p.enabled and p.address[1] > 0 and p.upstream == "127.0.0.1:9"
            with pytest.raises(ToxiproxyError) as err:
                await c.create_proxy("db", "127.0.0.1:0", "127.0.0.1:9")
            assert (err.value.status, err.value.message) == (409, "proxy already exists")
            assert str(err.value) == "HTTP 409: proxy already exists"
            t = await c.add_toxic("db", "latency", "upstream", {"latency": 100, "jitter": 10},
                                  name="slow", toxicity=0.5)
            assert (t.name, t.type, t.stream, t.toxicity) == ("slow", "latency", "upstream", 0.5)
            t = await c.update_toxic("db", "slow", {"latency": 200})
            assert t.attributes == {"latency": 200, "jitter": 10} and t.toxicity == 0.5
            assert [x.name for x in await c.toxics("db")] == ["slow"]
            assert (await c.get_proxy("db")).toxics == (t,)
            p = await c.update_proxy("db", enabled=False)
            assert not p.enabled
            with pytest.raises(TypeError):
                await c.update_proxy("db", name="other")
            await c.reset()
            p = await c.get_proxy("db")
            assert p.enabled and p.toxics == ()
            with pytest.raises(ToxiproxyError) as err:
                await c.add_toxic("db", "walrus", "upstream", {})
            assert err.value.status == 400
            with pytest.raises(ToxiproxyError) as err:
                await c.remove_toxic("db", "slow")
            assert (err.value.status, err.value.message) == (404, "toxic not found")
            made = await c.populate([{"name": "a->b", "listen": "127.0.0.1:0",
                                      "upstream": "127.0.0.1:9"},
                                     {"name": "b->a", "listen": "127.0.0.1:0",
                                      "upstream": "127.0.0.1:9", "enabled": False}])
            assert [(x.name, x.enabled) for x in made] == [("a->b", True), ("b->a", False)]
            assert (await c.get_proxy("a->b")).name == "a->b"  # '>' survives the URL
            assert c.created == {"db", "a->b", "b->a"}
            await c.delete_proxy("db")
            assert c.created == {"a->b", "b->a"}
            with pytest.raises(ToxiproxyError) as err:
                await c.get_proxy("db")
            assert (err.value.status, err.value.message) == (404, "proxy not found")
            # keep-alive: all of that went over one connection, still open
            assert len(c._idle) == 1 and c._idle[0].used > 15
            ports = [x.address[1] for x in made] + [c.port]
            pid = c.server_pid
        assert_gone(pid, ports)

    run(body)


def test_client_runs_requests_concurrently_on_a_small_pool(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_toxiproxy(None, tmp_path / "toxiproxy.log", use_binary=False) as (c, _kind):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(c.create_proxy, f"p{i}", "127.0.0.1:0", "127.0.0.1:9")
            assert len(await c.proxies()) == 40
            assert 1 <= len(c._idle) <= 8
            ports = [p.address[1] for p in (await c.proxies()).values()] + [c.port]
            pid = c.server_pid
        assert_gone(pid, ports)

    run(body)


def test_client_reads_chunked_answers_and_survives_a_dropped_idle_connection() -> None:
    """A fake server: answers in chunked encoding (as Go does for large bodies), then
    closes the kept-alive connection; the next request must go through on a new one."""
    served: list[int] = []

    async def fake(stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive_some(4096)
            served.append(1)
            body = b'{"version": "9.9"}'
            await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + b"%x\r\n" % 5 + body[:5] + b"\r\n"
                                  + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
            # and hang up, like a server whose idle timeout expired

    async def body() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, fake, listeners)
            async with ToxiproxyClient(f"127.0.0.1:{port}") as c:
                assert await c.version() == "9.9"
                await trio.sleep(0.05)
                assert await c.version() == "9.9"
            assert len(served) == 2
            nursery.cancel_scope.cancel()

    run(body)


def test_open_toxiproxy_fails_clearly_when_nothing_answers(tmp_path: Path) -> None:
    async def body() -> None:
        with trio.socket.socket() as s:
            await s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: connections are refused
            with pytest.raises(ToxiproxyUnavailable, match=f"127.0.0.1:{port}.*0.3 s"):
                async with open_toxiproxy(f"127.0.0.1:{port}", tmp_path / "toxiproxy.log",
                                          startup_timeout=0.3):
                    raise AssertionError("must not get here")

    run(body)


def test_open_toxiproxy_on_an_external_server_deletes_only_its_own_proxies(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(ToxiproxyServer("127.0.0.1", 0).run)
            addr = f"127.0.0.1:{server.port}"
            async with ToxiproxyClient(addr) as other:
                await other.create_proxy("theirs", "127.0.0.1:0", "127.0.0.1:9")
                async with open_toxiproxy(addr, tmp_path / "toxiproxy.log") as (c, kind):
                    assert (kind, c.server_pid) == ("external", None)
                    net = await Network.create(c, {"n1": ("127.0.0.1:1", "127.0.0.1:2"),
                                                   "n2": ("127.0.0.1:3", "127.0.0.1:4")})
                    assert len(await c.proxies()) == 5
                    await net.aclose()
                    assert list(await c.proxies()) == ["theirs"]
                    await Network.create(c, {"n1": ("127.0.0.1:1", "127.0.0.1:2"),
                                             "n2": ("127.0.0.1:3", "127.0.0.1:4")})
                    await c.create_proxy("extra", "127.0.0.1:0", "127.0.0.1:9")
                    ports = [p.address[1] for p in (await c.proxies()).values()
                             if p.name != "theirs"]
                # left behind by the lab: deleted on the way out; the server runs on
                assert list(await other.proxies()) == ["theirs"]
                assert listening_ports(ports) == []
            nursery.cancel_scope.cancel()

    run(body)


# --------------------------------------------------------------------------- wiring


def test_network_creates_one_proxy_per_directed_link_and_per_client_link(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            proxies = await lab.client.proxies()
            assert sorted(proxies) == sorted(
                [f"n{a}->n{b}" for a in (1, 2, 3) for b in (1, 2, 3) if a != b]
                + ["client->n1", "client->n2", "client->n3"])
            for (src, dst), addr in lab.net.dial_map().items():
                p = proxies[f"{src}->{dst}"]
                assert p.address == addr and addr[0] == "127.0.0.1"
                assert p.upstream == f"127.0.0.1:{lab.stubs[dst].ports[0]}"
            assert proxies["client->n2"].upstream == f"127.0.0.1:{lab.stubs['n2'].ports[1]}"
            assert proxies["client->n2"].address == lab.net.client_addr("n2")
            assert len(set(lab.net.ports())) == 9
            members = {port for stub in lab.stubs.values() for port in stub.ports}
            assert not members & set(lab.net.ports())
            with pytest.raises(KeyError):
                lab.net.dial("n1", "n1")
            with pytest.raises(ValueError):
                await lab.net.cut("n1", "n9")

    run(body)


def test_free_ports_never_hands_out_a_port_twice() -> None:
    # A member's port is chosen, closed, and bound by the member a moment later; the
    # proxies' ports come from the same place, so the two must never meet. bind(0) alone
    # repeats ports often over a few thousand picks (birthday odds on ~28k ports).
    picked = [port for _ in range(40) for port in free_ports(50)]
    assert len(picked) == len(set(picked)) == 2000


# --------------------------------------------------------------------------- cuts


def test_cut_blocks_exactly_what_a_sends_to_b_on_either_connection(tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            ab, ab_at_b = await lab.connect("n1", "n2")  # n1's dialled connection to n2
            ba, ba_at_a = await lab.connect("n2", "n1")  # n2's dialled connection to n1
            ac, ac_at_c = await lab.connect("n1", "n3")

            fault = await lab.net.cut("n1", "n2")
            assert fault.links == (("n1", "n2"),)
            assert {(p.proxy, p.name, p.stream) for p in fault.toxics} == {
                ("n1->n2", f"{fault.id}-cut-up", "upstream"),
                ("n2->n1", f"{fault.id}-cut-down", "downstream")}

            # what n1 sends to n2: on n1's own connection, and as answers on n2's
            await ab.send(b"LOST-1")
            await ba_at_a.send(b"LOST-2")
            # what n2 sends to n1 still flows, on both connections
            await ba.send(b"KEPT-1")
            await ab_at_b.send(b"KEPT-2")
            # and n1's other links are untouched
            await ac.send(b"KEPT-3")
            await eventually(lambda: ba_at_a.got(b"KEPT-1"), "n2 -> n1 on n2's connection")
            await eventually(lambda: ab.got(b"KEPT-2"), "n2 -> n1 as an answer")
            await eventually(lambda: ac_at_c.got(b"KEPT-3"), "n1 -> n3")
            await never(lambda: ab_at_b.got(b"LOST-1") or ba.got(b"LOST-2"),
                        "n1 -> n2 got through the cut")
            assert not ab.closed.is_set() and not ba.closed.is_set()  # a black hole: open

            await lab.net.heal(fault)
            assert lab.net.active() == []
            # healing closes the black-holed connections; new ones carry data again
            for pipe in (ab, ab_at_b, ba, ba_at_a):
                with trio.fail_after(5):
                    await pipe.closed.wait()
            assert not ab_at_b.got(b"LOST-1") and not ba.got(b"LOST-2")  # lost for good
            assert not ac.closed.is_set()
            ab2, ab2_at_b = await lab.connect("n1", "n2")
            ba2, ba2_at_a = await lab.connect("n2", "n1")
            await ab2.send(b"AGAIN-1")
            await ba2_at_a.send(b"AGAIN-2")
            await eventually(lambda: ab2_at_b.got(b"AGAIN-1"), "n1 -> n2 after heal")
            await eventually(lambda: ba2.got(b"AGAIN-2"), "n1 -> n2 answer after heal")
            assert await toxics_on(lab.client) == {}

    run(body)


def test_partition_installs_every_cut_of_a_shape_and_heal_undoes_exactly_it(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            cuts = T.isolate("n1", lab.net.nodes)
            iso = await lab.net.partition(cuts)
            assert set(iso.links) == cuts and len(iso.toxics) == 2 * len(cuts)
            one = await lab.net.cut("n1", "n2")  # overlaps the isolation
            assert [f.id for f in lab.net.active()] == [iso.id, one.id]
            on = await toxics_on(lab.client)
            assert on["n1->n2"] == sorted([f"{iso.id}-cut-up", f"{iso.id}-cut-down",
                                           f"{one.id}-cut-up"])
            assert "n2->n3" not in on and "n3->n2" not in on

            await lab.net.heal(iso.id)
            assert [f.id for f in lab.net.active()] == [one.id]
            assert await toxics_on(lab.client) == {"n1->n2": [f"{one.id}-cut-up"],
                                                   "n2->n1": [f"{one.id}-cut-down"]}
            ab, ab_at_b = await lab.connect("n2", "n1")  # n2 -> n1 flows again
            await ab.send(b"x")
            await eventually(lambda: ab_at_b.got(b"x"), "n2 -> n1")
            ab2 = Pipe(await trio.open_tcp_stream(*lab.net.dial("n1", "n2")))
            lab.nursery.start_soon(ab2.pump)
            await ab2.send(b"still cut")  # the second fault still holds n1 -> n2
            await never(lambda: lab.stubs["n2"].inbound(b"still cut") is not None,
                        "n1 -> n2 got through while the second cut is active")
            await lab.net.heal(one, one)  # healing twice is harmless
            assert await toxics_on(lab.client) == {}
            record = json.loads(json.dumps(one.to_json()))
            assert record["kind"] == "cut" and record["links"] == [["n1", "n2"]]

    run(body)


def test_a_fault_that_fails_half_way_leaves_nothing_behind(tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            await lab.client.delete_proxy("n3->n1")  # behind the network's back
            with pytest.raises(ToxiproxyError) as err:
                await lab.net.partition(T.isolate("n1", lab.net.nodes))
            assert err.value.status == 404
            assert lab.net.active() == []
            assert await toxics_on(lab.client) == {}

    run(body)


def test_cut_client_black_holes_one_members_client_link(tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 2) as lab:
            c1, c1_at = await lab.connect_client("n1")
            c2, c2_at = await lab.connect_client("n2")
            fault = await lab.net.cut_client("n1")
            assert fault.clients == ("n1",) and fault.links == ()
            await c1.send(b"request")
            await c1_at.send(b"answer")
            await c2.send(b"request")
            await eventually(lambda: c2_at.got(b"request"), "n2's client link")
            await never(lambda: c1_at.got(b"request") or c1.got(b"answer"),
                        "n1's client link got through")
            await lab.net.heal(fault)
            with trio.fail_after(5):
                await c1.closed.wait()
            again, again_at = await lab.connect_client("n1")
            await again_at.send(b"answer")
            await eventually(lambda: again.got(b"answer"), "n1's client link after heal")

    run(body)


# --------------------------------------------------------------------------- other effects


def test_latency_delays_exactly_the_chosen_links(tmp_path: Path) -> None:
    delay = 1.0

    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            ab, ab_at_b = await lab.connect("n1", "n2")
            ba, ba_at_a = await lab.connect("n2", "n1")
            ac, ac_at_c = await lab.connect("n1", "n3")
            fault = await lab.net.latency([("n1", "n2")], int(delay * 1000))
            assert fault.params == {"ms": int(delay * 1000), "jitter": 0}
            t0 = trio.current_time()
            for pipe, data in ((ab, b"slow-1"), (ba_at_a, b"slow-2"), (ba, b"fast-1"),
                               (ab_at_b, b"fast-2"), (ac, b"fast-3")):
                await pipe.send(data)
            await eventually(lambda: ab_at_b.got(b"slow-1") and ba.got(b"slow-2"), "slow data")
            slow = min(ab_at_b.arrival_of(b"slow-1"), ba.arrival_of(b"slow-2"))
            assert slow - t0 >= delay - 0.01
            await eventually(lambda: ba_at_a.got(b"fast-1") and ab.got(b"fast-2")
                             and ac_at_c.got(b"fast-3"), "fast data")
            # the other links' data, sent after the slow data, arrives before it (an
            # order, not a speed: a busy machine delays both)
            for pipe, data in ((ba_at_a, b"fast-1"), (ab, b"fast-2"), (ac_at_c, b"fast-3")):
                assert pipe.arrival_of(data) < slow, f"{data!r} was delayed"
            await lab.net.heal(fault)
            fault = await lab.net.latency([("n2", "n1")], int(delay * 1000))
            await ba.send(b"slow-again")
            await ab.send(b"fast-again")  # latency removal keeps the connection
            await eventually(lambda: ab_at_b.got(b"fast-again") and ba_at_a.got(b"slow-again"),
                             "n1 -> n2 after heal, and n2 -> n1 slowed since")
            assert ab_at_b.arrival_of(b"fast-again") < ba_at_a.arrival_of(b"slow-again")
            await lab.net.heal(fault)

    run(body)


def test_grid_puts_wan_latency_between_sites_only(tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            grid = T.Grid.build(lab.net.nodes, Random(2), (2, 1))
            fault = await lab.net.apply_grid(grid)
            remote = {link for link, lat in grid.links.items() if lat.latency_ms}
            assert set(fault.links) == remote == T.components([["n1", "n2"], ["n3"]])
            on = await lab.client.proxies()
            for (src, dst), lat in grid.links.items():
                ts = [t for t in on[f"{src}->{dst}"].toxics if t.stream == "upstream"]
                if lat.latency_ms:
                    assert [t.attributes for t in ts] == [
                        {"latency": lat.latency_ms, "jitter": lat.jitter_ms}]
                else:
                    assert ts == []
            await lab.net.heal(fault)
            assert await toxics_on(lab.client) == {}

    run(body)


def test_heal_all_leaves_every_proxy_clean(tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 3) as lab:
            net, nodes = lab.net, lab.net.nodes
            await net.partition(T.majority_ring(nodes))
            await net.latency(T.all_links(nodes), 20, 5)
            await net.bandwidth(T.isolate("n3", nodes), 100)  # a slow follower
            await net.slice(T.one_way(["n1"], ["n2"]), 10, 5, 100)
            await net.reset_peer([("n2", "n3")], 50)
            await net.cut_client("n2", answers=False)
            down = await net.down([("n3", "n1")])
            await net.apply_grid(T.Grid.build(nodes, Random(0), (1, 1, 1)))
            await lab.client.add_toxic("n1->n3", "noop", "upstream", {}, name="not-ours")
            assert len(net.active()) == 8
            on = await lab.client.proxies()
            assert not on["n3->n1"].enabled
            assert sum(len(p.toxics) for p in on.values()) > 30
            # the schedule records: every fault with its resolved links
            for f in net.active():
                json.dumps(f.to_json())
            assert down.to_json()["disabled"] == ["n3->n1"]
            await net.heal_all()
            assert net.active() == []
            on = await lab.client.proxies()
            assert all(p.enabled and p.toxics == () for p in on.values())
            ca, ca_at = await lab.connect("n3", "n1")
            await ca.send(b"up again")
            await eventually(lambda: ca_at.got(b"up again"), "n3 -> n1 after heal_all")

    run(body)


def test_down_is_refcounted_across_faults(tmp_path: Path) -> None:
    async def body() -> None:
        async with stub_lab(tmp_path, 2) as lab:
            first = await lab.net.down([("n1", "n2")])
            second = await lab.net.down([("n1", "n2"), ("n2", "n1")])
            with pytest.raises(OSError):
                await trio.open_tcp_stream(*lab.net.dial("n1", "n2"))
            await lab.net.heal(first)
            assert not (await lab.client.get_proxy("n1->n2")).enabled  # still held down
            await lab.net.heal(second)
            assert all(p.enabled for p in (await lab.client.proxies()).values())

    run(body)


# --------------------------------------------------------------------------- raftkv


@asynccontextmanager
async def raftkv_through_proxies(tmp_path: Path) -> AsyncIterator[tuple[RaftkvCluster,
                                                                        Network]]:
    """A 3-member raftkv cluster whose members reach each other only through the
    network's proxies; members, proxies and the server are proven gone afterwards."""
    async with open_toxiproxy(None, tmp_path / "toxiproxy.log",
                              use_binary=False) as (client, _k):
        pid = client.server_pid
        async with running(tmp_path / "cluster", 3, start=False) as cluster:
            net = await Network.create(
                client, {m.id: (m.peer, m.client) for m in cluster.members.values()})
            cluster.dial = net.dial
            argv = cluster.argv("n1")
            assert f"n2={net.dial('n1', 'n2')[0]}:{net.dial('n1', 'n2')[1]}" in argv
            ports = [*net.ports(), client.port]
            cluster.start_all()
            yield cluster, net
            await net.heal_all()
    assert_gone(pid, ports)


async def role(cluster: RaftkvCluster, mid: str) -> tuple[str | None, str | None]:
    st = await request(cluster, mid, {"op": "status"}, 0.5)
    return (st["role"], st["leader"]) if st else (None, None)


@pytest.mark.processes
def test_isolating_the_leader_elects_another_and_healing_brings_it_back_as_follower(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with raftkv_through_proxies(tmp_path) as (cluster, net):
            old = await wait_settled(cluster, timeout=15)
            fault = await net.partition(T.isolate(old, cluster.members))
            new = await wait_leader(cluster, timeout=15, exclude=[old])
            assert new != old

            async def old_stepped_down() -> bool:
                return (await role(cluster, old))[0] != "leader"

            await wait_for(cluster, old_stepped_down, 10, f"{old} to step down (CheckQuorum)")
            ans = await request(cluster, new, {"op": "write", "key": "k", "value": "during"})
            assert ans is not None and ans["ok"], ans
            await net.heal(fault)

            async def rejoined() -> bool:
                st = await statuses(cluster)
                return (all(s is not None and s["leader"] == new for s in st.values())
                        and st[old] is not None and st[old]["role"] == "follower")

            await wait_for(cluster, rejoined, 15, f"{old} to follow {new}")
            commit = (await statuses(cluster))[new]
            assert commit is not None

            async def caught_up() -> bool:
                st = await request(cluster, old, {"op": "status"}, 0.5)
                return st is not None and st["applied"] >= commit["commit"]

            await wait_for(cluster, caught_up, 10, f"{old} to apply the write made without it")

    run(body)


@pytest.mark.processes
def test_a_leader_that_can_send_but_not_receive_is_replaced(tmp_path: Path) -> None:
    async def body() -> None:
        async with raftkv_through_proxies(tmp_path) as (cluster, net):
            old = await wait_settled(cluster, timeout=15)
            fault = await net.partition(T.leader_cannot_receive(old, cluster.members))
            assert set(fault.links) == {(x, old) for x in cluster.members if x != old}
            new = await wait_leader(cluster, timeout=15, exclude=[old])
            assert new != old

            async def old_stepped_down() -> bool:
                return (await role(cluster, old))[0] != "leader"

            await wait_for(cluster, old_stepped_down, 10, f"{old} to step down (CheckQuorum)")
            await net.heal_all()
            leader = await wait_settled(cluster, timeout=15)
            assert leader != old  # PreVote: the healed node cannot depose the new leader

    run(body)


@pytest.mark.processes
def test_a_leader_that_can_receive_but_not_send_is_replaced(tmp_path: Path) -> None:
    async def body() -> None:
        async with raftkv_through_proxies(tmp_path) as (cluster, net):
            old = await wait_settled(cluster, timeout=15)
            await net.partition(T.leader_cannot_send(old, cluster.members))
            new = await wait_leader(cluster, timeout=15, exclude=[old])

            async def old_follows() -> bool:
                return (await role(cluster, old)) == ("follower", new)

            # the old leader hears the new one's higher term and follows it at once
            await wait_for(cluster, old_follows, 10, f"{old} to follow {new}")

    run(body)
