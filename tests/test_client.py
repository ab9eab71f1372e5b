"""The lab's JSON-lines client (``lab/client.py``) against a scripted server on loopback."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
import trio

from lab.client import ConnectionLost, connect

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve(nursery: trio.Nursery, handler: Handler) -> int:
    listeners = await nursery.start(
        lambda task_status=trio.TASK_STATUS_IGNORED: trio.serve_tcp(
            handler, 0, host="127.0.0.1", task_status=task_status))
    return int(listeners[0].socket.getsockname()[1])


async def lines(stream: trio.SocketStream) -> list[dict[str, object]]:
    buf = b""
    while b"\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            break
        buf += data
    return [json.loads(x) for x in buf.split(b"\n") if x]


def run(test: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    async def main() -> None:
        async with trio.open_nursery() as n:
            with trio.fail_after(10):
                await test(n)
            n.cancel_scope.cancel()

    trio.run(main)


def test_answers_match_requests_by_id_and_junk_ids_are_ignored() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        while reqs := await lines(stream):
            out = b""
            for r in reversed(reqs):  # out of order, after two answers nobody asked for
                out += b'{"id":[1],"ok":true}\n{"id":"x","ok":true}\n'
                out += json.dumps({"id": r["id"], "ok": True, "value": r["key"]}).encode()
                out += b"\n"
            await stream.send_all(out)

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, echo)
        async with connect("127.0.0.1", port) as c:
            assert (await c.call({"op": "read", "key": "a"}))["value"] == "a"
            got: dict[str, object] = {}

            async def one(k: str) -> None:
                got[k] = (await c.call({"op": "read", "key": k}))["value"]

            async with trio.open_nursery() as inner:
                for k in "bcdef":
                    inner.start_soon(one, k)
            assert got == {k: k for k in "bcdef"}

    run(test)


def test_a_timeout_leaves_the_connection_usable() -> None:
    async def slow_first(stream: trio.SocketStream) -> None:
        first = True
        while reqs := await lines(stream):
            for r in reqs:
                if first:
                    first = False
                    continue  # never answered
                await stream.send_all(json.dumps({"id": r["id"], "ok": True}).encode() + b"\n")

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, slow_first)
        async with connect("127.0.0.1", port) as c:
            with pytest.raises(trio.TooSlowError):
                await c.call({"op": "read", "key": "a"}, timeout=0.2)
            assert not c.closed
            assert (await c.call({"op": "read", "key": "a"}, timeout=2))["ok"] is True

    run(test)


def test_a_peer_that_hangs_up_gives_connection_lost() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await lines(stream)
        await stream.aclose()

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, hang_up)
        async with connect("127.0.0.1", port) as c:
            with pytest.raises(ConnectionLost):
                await c.call({"op": "write", "key": "a", "value": 1}, timeout=5)
            with pytest.raises(ConnectionLost):
                await c.call({"op": "read", "key": "a"}, timeout=5)

    run(test)


def test_garbage_from_the_peer_is_connection_lost_not_a_crash() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await lines(stream)
        await stream.send_all(b"\xff\xfe not json\n")
        await trio.sleep(5)

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, garbage)
        async with connect("127.0.0.1", port) as c:
            with pytest.raises(ConnectionLost):
                await c.call({"op": "read", "key": "a"}, timeout=5)

    run(test)


@pytest.mark.parametrize("answer", [
    b"[" * 100_000 + b"\n",  # nested too deep for the decoder: RecursionError, not ValueError
    b"1" * 5000 + b"\n",  # an integer too long to read
])
def test_answers_the_decoder_refuses_are_connection_lost(answer: bytes) -> None:
    async def bad(stream: trio.SocketStream) -> None:
        await lines(stream)
        await stream.send_all(answer)
        await trio.sleep(5)

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, bad)
        async with connect("127.0.0.1", port) as c:
            with pytest.raises(ConnectionLost):
                await c.call({"op": "read", "key": "a"}, timeout=5)
            assert c.closed

    run(test)


def test_many_connections_share_one_reader_and_each_gets_its_own_answers() -> None:
    """40 connections of one run, pipelined requests on each, one of them lost midway:
    the others keep their answers, in one trio run and again in the next."""
    async def echo(stream: trio.SocketStream) -> None:
        while reqs := await lines(stream):
            if any(r.get("key") == "hang-up" for r in reqs):
                await stream.aclose()
                return
            await stream.send_all(b"".join(
                json.dumps({"id": r["id"], "ok": True, "value": r["key"]}).encode() + b"\n"
                for r in reqs))

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, echo)
        wrong: list[object] = []
        lost: list[int] = []

        async def client(i: int) -> None:
            async with connect("127.0.0.1", port) as c:
                for j in range(30):
                    key = "hang-up" if (i, j) == (7, 10) else f"{i}-{j}"
                    try:
                        got = (await c.call({"op": "read", "key": key}, timeout=5))["value"]
                    except ConnectionLost:
                        lost.append(i)
                        return
                    if got != key:
                        wrong.append(got)

        async with trio.open_nursery() as inner:
            for i in range(40):
                inner.start_soon(client, i)
        assert wrong == []
        assert lost == [7]

    run(test)
    run(test)  # a new run starts its own reader


def test_timeouts_and_cancellation_leave_no_request_waiting() -> None:
    """A request times out close to its deadline (never early, at most a tick late); one
    whose caller is cancelled is forgotten at once; late answers to either are ignored."""
    async def late(stream: trio.SocketStream) -> None:
        while reqs := await lines(stream):
            await trio.sleep(0.5)
            await stream.send_all(b"".join(
                json.dumps({"id": r["id"], "ok": True}).encode() + b"\n" for r in reqs))

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, late)
        async with connect("127.0.0.1", port) as c:
            t0 = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await c.call({"op": "read", "key": "a"}, timeout=0.2)
            took = trio.current_time() - t0
            assert 0.2 <= took < 0.4, took
            assert c._waiting == {}
            with trio.move_on_after(0.1):
                await c.call({"op": "read", "key": "b"}, timeout=5)
            assert c._waiting == {}
            await trio.sleep(0.6)  # both late answers arrive and answer nobody
            assert not c.closed
            assert (await c.call({"op": "read", "key": "c"}, timeout=2))["ok"] is True

    run(test)
