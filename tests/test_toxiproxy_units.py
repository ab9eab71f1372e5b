"""Unit tests of the built-in Toxiproxy server's pieces, in process.

The pure parts (slicer cuts, Go-style JSON and ``host:port`` handling, the HTTP request
parser) are tested directly, with Hypothesis where a property fits; the link engine is
tested by streaming numbered bytes through a proxy while toxics are added, updated
(with toxicity redraws) and removed at random, then checking nothing was lost or
reordered. The end-to-end contract is in ``test_toxiproxy_conformance.py``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.toxiproxy import ToxiproxyServer
from lab.toxiproxy._addr import AddressError, resolved_string, split_host_port
from lab.toxiproxy._http import ProtocolError, Request, Response, parse_head, serve_connection
from lab.toxiproxy._jsonio import Fields, Float32, JsonError, decode, encode
from lab.toxiproxy._model import Proxy
from lab.toxiproxy._toxics import KINDS, Toxic, slice_bounds

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------
# slicer


@given(
    size=st.integers(0, 200_000),
    average=st.integers(1, 5000),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=200, deadline=None)
def test_slice_bounds_cover_the_chunk_with_bounded_pieces(
    size: int, average: int, data: st.DataObject, seed: int
) -> None:
    variation = data.draw(st.integers(0, average - 1))
    bounds = slice_bounds(size, average, variation, random.Random(seed))
    assert bounds[0] == 0 and bounds[-1] == size
    pieces = [b - a for a, b in itertools.pairwise(bounds)]
    assert all(0 < p <= average + variation for p in pieces) or size == 0


def test_slice_bounds_match_upstream_expectations() -> None:
    """480 KB at 1024±512 gives 240-720 pieces; average 1 without variation gives bytes."""
    pieces = len(slice_bounds(480_000, 1024, 512, random.Random(5))) - 1
    assert 240 <= pieces <= 720
    assert slice_bounds(7, 1, 0, random.Random(0)) == list(range(8))


# ---------------------------------------------------------------------------------------
# Go-style JSON


def test_encode_prints_float32_like_go() -> None:
    assert encode({"t": Float32(1.0)}) == b'{"t":1}'
    assert encode([Float32(0.2), Float32(0.5), Float32(0.0), Float32(1e-7)]) == b"[0.2,0.5,0,1e-7]"
    assert encode({"s": "<a&b>"}) == b'{"s":"\\u003ca\\u0026b\\u003e"}'


def test_decode_reads_the_first_value_and_reports_eof() -> None:
    assert decode(b' {"a": 1} trailing junk') == {"a": 1}
    with pytest.raises(JsonError, match=r"^EOF$"):
        decode(b"  ")
    with pytest.raises(JsonError):
        decode(b"{")
    with pytest.raises(JsonError):
        decode(b"NaN")


def test_fields_match_keys_case_insensitively_and_check_types() -> None:
    fields = Fields({"Name": "x", "enabled": None, "n": 1000.0}, "Proxy", go_type="Proxy")
    assert fields.string("name", "") == "x"
    assert fields.boolean("enabled", True) is True
    assert fields.int64("n", 0) == 1000
    with pytest.raises(
        JsonError, match=r"cannot unmarshal number into Go struct field Proxy\.name of type string"
    ):
        Fields({"name": 5}, "Proxy", go_type="Proxy").string("name", "")
    for bad in (100.5, True, "1", 2**63):
        with pytest.raises(JsonError):
            Fields({"n": bad}, "T", go_type="T").int64("n", 0)
    with pytest.raises(JsonError):
        Fields([], "Proxy", go_type="toxiproxy.Proxy")


# ---------------------------------------------------------------------------------------
# host:port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", "80")),
        ("[::1]:80", ("::1", "80")),
        (":80", ("", "80")),
        ("localhost:", ("localhost", "")),
    ],
)
def test_split_host_port_like_go(text: str, expected: tuple[str, str]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["localhost", "a:b:c", "[::1", "[::1]x:1", ""])
def test_split_host_port_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(AddressError):
        split_host_port(text)


def test_resolved_string_is_what_differs_compares() -> None:
    async def main() -> None:
        assert await resolved_string("") == ":0"
        assert await resolved_string("localhost:7070") == "127.0.0.1:7070"
        assert await resolved_string(":7070") == ":7070"
        assert await resolved_string("[::1]:7") == "[::1]:7"

    trio.run(main)


# ---------------------------------------------------------------------------------------
# HTTP


def test_parse_head_reads_request_line_headers_and_target() -> None:
    req = parse_head(b"PATCH /proxies/a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2")
    assert (req.method, req.path, req.query) == ("PATCH", "/proxies/a b", "x=1")
    assert req.headers == {"host": "h", "x-a": "1, 2"}


@pytest.mark.parametrize(
    "head",
    [
        b"GET /\r\n",
        b"GET / HTTP/1.1 extra",
        b"G\x00T / HTTP/1.1",
        b"GET / HTTP/1.1\r\n folded",
        b"GET / HTTP/1.1\r\nno colon",
        b"GET relative HTTP/1.1",
        b"GET /%zz HTTP/1.1",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
    ],
)
def test_parse_head_refuses_malformed_requests(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(head)


async def _answer(request: Request) -> Response:
    return Response(200, request.body or b"{}", "application/json")


async def _converse(data: bytes, *, chunk: int = 7) -> bytes:
    client, server = trio.testing.memory_stream_pair()
    out = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, _answer)
        try:
            for i in range(0, len(data), chunk):
                await client.send_all(data[i : i + chunk])
            await client.send_eof()
        except trio.BrokenResourceError:
            pass  # the server may close first (an error, or a final response)
        while chunk_out := await client.receive_some():
            out += chunk_out
    return bytes(out)


@given(st.binary(max_size=600))
@settings(max_examples=150, deadline=None)
def test_http_server_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    reply = trio.run(_converse, data)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 ")


def test_http_server_keeps_alive_pipelines_and_sends_100_continue() -> None:
    requests = (
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
        b"GET /b HTTP/1.1\r\n\r\n"
        b"GET /c HTTP/1.0\r\n\r\n"
        b"GET /never HTTP/1.1\r\n\r\n"
    )
    reply = trio.run(_converse, requests)
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert b"HTTP/1.1 100 Continue" in reply
    assert b"hello" in reply
    assert reply.rstrip().endswith(b"{}")  # HTTP/1.0 without keep-alive closed after /c


def test_http_server_refuses_chunked_bodies_and_oversized_heads() -> None:
    reply = trio.run(_converse, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 411 ")
    reply = trio.run(
        functools.partial(_converse, chunk=8192), b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000
    )
    assert reply.startswith(b"HTTP/1.1 431 ")


# ---------------------------------------------------------------------------------------
# the API never fails with an unhandled error, whatever the bodies

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_listens = st.sampled_from(
    ["127.0.0.1:0", "", ":0", "localhost:0", "x", "[::1]:0", "1.2.3:0", "a:b:c"]
)
_proxy_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["p", "q", ""]) | _json_values,
        "listen": _listens | _json_values.filter(lambda v: not isinstance(v, str)),
        "upstream": st.sampled_from(["127.0.0.1:1", ""]) | _json_values,
        "enabled": st.booleans() | _json_values,
    },
)
_toxic_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["t", ""]) | _json_values,
        "type": st.sampled_from([*sorted(KINDS), "down", ""]) | _json_values,
        "stream": st.sampled_from(["upstream", "DOWNSTREAM", "x"]) | _json_values,
        "toxicity": st.floats(-1, 2) | _json_values,
        "attributes": st.dictionaries(
            st.sampled_from(
                [
                    "latency",
                    "jitter",
                    "rate",
                    "delay",
                    "timeout",
                    "bytes",
                    "average_size",
                    "size_variation",
                ]
            ),
            st.integers(-5, 10**20) | st.floats(allow_nan=False) | _json_values,
            max_size=4,
        )
        | _json_values,
    },
)
_requests = st.lists(
    st.one_of(
        st.tuples(st.just("POST"), st.just("/proxies"), _proxy_bodies),
        st.tuples(
            st.sampled_from(["POST", "PATCH"]),
            st.sampled_from(["/proxies/p", "/proxies/q"]),
            _proxy_bodies,
        ),
        st.tuples(
            st.just("POST"),
            st.just("/populate"),
            st.lists(_proxy_bodies, max_size=3) | _json_values,
        ),
        st.tuples(st.just("POST"), st.just("/proxies/p/toxics"), _toxic_bodies),
        st.tuples(
            st.sampled_from(["POST", "PATCH"]), st.just("/proxies/p/toxics/t"), _toxic_bodies
        ),
        st.tuples(
            st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
            st.sampled_from(
                ["/proxies", "/proxies/p", "/proxies/p/toxics/t", "/reset", "/version", "/x"]
            ),
            st.none(),
        ),
    ),
    max_size=8,
)


@given(_requests)
@settings(max_examples=120, deadline=None)
def test_api_answers_every_request_without_an_internal_error(
    calls: list[tuple[str, str, Any]],
) -> None:
    from lab.toxiproxy._api import Api
    from lab.toxiproxy._model import Metrics, ProxyCollection, Runtime

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            collection = ProxyCollection(Runtime(nursery, random.Random(0), Metrics()))
            api = Api(collection, Metrics())
            setup: list[tuple[str, str, Any]] = [
                (
                    "POST",
                    "/proxies",
                    {"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"},
                ),
                (
                    "POST",
                    "/proxies/p/toxics",
                    {"name": "t", "type": "slicer", "attributes": {"average_size": 9}},
                ),
            ]
            for method, path, body in setup + calls:
                raw = b"" if body is None else encode(body)
                request = Request(method, path, path, "", "HTTP/1.1", {}, raw)
                response = await api.handle(request)
                assert response.status in {200, 201, 204, 400, 404, 405, 409, 500}, response
                if response.status == 500:
                    assert b"listen tcp" in response.body or b"address" in response.body, response
            collection.stop_all()
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------------------
# server start-up


def test_cli_prints_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.toxiproxy", "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 0
    assert result.stdout == "toxiproxy-server version 2.12.0\n"


def test_config_file_populates_before_the_api_listens(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(
        '[{"name": "a", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"},'
        ' {"name": "b", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": false}]'
    )

    async def main() -> dict[str, bool]:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(ToxiproxyServer("127.0.0.1", 0, config=config).run)
            states = {name: p.enabled for name, p in server.collection.proxies.items()}
            nursery.cancel_scope.cancel()
        return states

    assert trio.run(main) == {"a": True, "b": False}


# ---------------------------------------------------------------------------------------
# the link engine under random reconfiguration


async def _echo_server(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(echo, listeners)


def _random_toxic(rng: random.Random, name: str) -> Toxic:
    type_, attrs = rng.choice(
        [
            ("latency", {"latency": rng.randrange(0, 15), "jitter": rng.randrange(0, 5)}),
            ("slicer", {"average_size": 700, "size_variation": 300, "delay": 20}),
            ("slicer", {"average_size": 30_000, "size_variation": 0, "delay": 0}),
            ("bandwidth", {"rate": rng.choice([0, 5_000, 50_000])}),
            ("slow_close", {"delay": 5}),
            ("limit_data", {"bytes": 10**12}),
            ("noop", {}),
        ]
    )
    direction = rng.choice(["upstream", "downstream"])
    toxicity = rng.choice([0.0, 0.5, 1.0, 1.0])
    return Toxic(name, KINDS[type_], direction, direction, toxicity, dict(attrs))


async def _churn(proxy: Proxy, rng: random.Random, done: trio.Event, ops: list[int]) -> None:
    live: list[Toxic] = []
    counter = 0
    while not done.is_set():
        ops[0] += 1
        action = rng.random()
        if action < 0.45 or not live:
            counter += 1
            toxic = _random_toxic(rng, f"t{counter}")
            live.append(toxic)
            proxy.add_toxic(toxic)
        elif action < 0.7:
            toxic = rng.choice(live)
            attrs = dict(toxic.attrs)
            if "latency" in attrs:
                attrs["latency"] = rng.randrange(0, 15)
            proxy.update_toxic(toxic, attrs, rng.choice([0.0, 0.5, 1.0]))
        else:
            toxic = live.pop(rng.randrange(len(live)))
            proxy.remove_toxic(toxic)
        await trio.sleep(rng.random() * 0.004)
        if len(live) > 6 or rng.random() < 0.05:
            while live:  # sometimes drain to zero toxics: exercises the switch to fast mode
                proxy.remove_toxic(live.pop())
    while live:
        proxy.remove_toxic(live.pop())


@pytest.mark.parametrize("seed", range(4))
def test_engine_churn_keeps_every_byte_in_order(seed: int) -> None:
    count = 200_000
    payload = struct.pack(f">{count}I", *range(count))

    async def main() -> bytes:
        rng = random.Random(seed)
        async with trio.open_nursery() as nursery:
            echo_port = await nursery.start(_echo_server)
            server = await nursery.start(ToxiproxyServer("127.0.0.1", 0, seed=seed).run)
            collection = server.collection
            proxy = collection.new("churn", "127.0.0.1:0", f"127.0.0.1:{echo_port}")
            await collection.add(proxy, True)
            host, port = proxy.listen.rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            received = bytearray()
            done = trio.Event()

            async def write() -> None:
                pos = 0
                while pos < len(payload):
                    step = rng.randrange(1, 5_000)
                    await stream.send_all(payload[pos : pos + step])
                    pos += step
                    await trio.sleep(rng.random() * 0.005)

            async def read() -> None:
                while len(received) < len(payload):
                    data = await stream.receive_some(65536)
                    assert data, f"EOF after {len(received)} bytes"
                    received.extend(data)
                done.set()

            with trio.move_on_after(20):  # a normal run takes about a second
                async with trio.open_nursery() as inner:
                    inner.start_soon(write)
                    inner.start_soon(read)
                    inner.start_soon(_churn, proxy, random.Random(seed + 100), done, ops)
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return bytes(received)

    ops = [0]
    received = trio.run(main)
    assert len(received) == len(payload)
    assert received == payload
    assert ops[0] >= 100  # the stream really was reconfigured many times on the way


def test_fast_path_hands_a_stalled_link_to_a_task_and_takes_it_back() -> None:
    """No toxics: a destination that stops reading fills the buffers, so the fast path
    (which never waits) hands the link to a reader task; every byte still arrives in
    order once it reads again, and the idle link is back in the fast path afterwards."""
    count = 2_000_000  # 8 MB: far more than the socket buffers hold
    payload = struct.pack(f">{count}I", *range(count))

    async def main() -> tuple[bytes, list[int]]:
        got = bytearray()
        go = trio.Event()
        watched: list[int] = []

        async def slow(stream: trio.SocketStream) -> None:
            await go.wait()
            while data := await stream.receive_some(65536):
                got.extend(data)

        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            up_port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, slow, listeners)
            server = await nursery.start(ToxiproxyServer("127.0.0.1", 0).run)
            fast = server.collection.runtime.fast
            assert fast is not None
            proxy = server.collection.new("slow", "127.0.0.1:0", f"127.0.0.1:{up_port}")
            await server.collection.add(proxy, True)
            host, port = proxy.listen.rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            with trio.fail_after(5):
                while len(fast) < 2:  # both links idle in the fast path
                    await trio.sleep(0.01)
            watched.append(len(fast))
            nursery.start_soon(stream.send_all, payload)
            with trio.fail_after(5):
                while len(fast) != 1:  # upstream stalled: a task holds it
                    await trio.sleep(0.01)
            watched.append(len(fast))
            go.set()
            with trio.fail_after(20):
                while len(got) < len(payload):
                    await trio.sleep(0.01)
            # (The last read may have filled the buffer: the reader then waits for more
            # before it knows the socket is empty. A short message settles it.)
            await stream.send_all(b"!")
            with trio.fail_after(5):
                while len(got) < len(payload) + 1 or len(fast) < 2:
                    await trio.sleep(0.01)
            watched.append(len(fast))
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return bytes(got), watched

    got, watched = trio.run(main)
    assert watched == [2, 1, 2]
    assert got == payload + b"!"


@pytest.mark.parametrize("order", ["first-added-first", "last-added-first"])
def test_two_timeouts_on_one_link_close_it_once_both_are_removed(order: str) -> None:
    """Two overlapping cuts of one directed link are two ``timeout`` toxics on one
    stream. Removing one closes the link (upstream's rule), but the other still holds the
    end; once that one is removed too, the connection must close, whichever went first
    (a connection left open and never read again would cut the link for good)."""

    async def main() -> bytes:
        async with trio.open_nursery() as nursery:
            echo_port = await nursery.start(_echo_server)
            server = await nursery.start(ToxiproxyServer("127.0.0.1", 0).run)
            proxy = server.collection.new("cut", "127.0.0.1:0", f"127.0.0.1:{echo_port}")
            await server.collection.add(proxy, True)
            host, port = proxy.listen.rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"hello")
            assert await stream.receive_some(5) == b"hello"
            a = Toxic("a", KINDS["timeout"], "upstream", "upstream", 1.0, {"timeout": 0})
            b = Toxic("b", KINDS["timeout"], "upstream", "upstream", 1.0, {"timeout": 0})
            proxy.add_toxic(a)
            proxy.add_toxic(b)
            await stream.send_all(b"lost")
            # Let the proxy take everything it can (no task runnable, no I/O ready) before
            # each step, so that each removal meets a link that has settled.
            await trio.testing.wait_all_tasks_blocked()
            for toxic in ([a, b] if order == "first-added-first" else [b, a]):
                proxy.remove_toxic(toxic)
                await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(3):
                got = b""
                with contextlib.suppress(trio.BrokenResourceError):  # a reset is an end too
                    while data := await stream.receive_some(100):
                        got += data
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return got

    assert trio.run(main) == b""
