"""The lab's JSON-lines client (``lab/client.py``) against a scripted server on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable

import pytest
import trio

from lab.systems.raftkv.wire import ConnectionLost, connect

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
    """A request times out at its deadline: never early, and before the server's answer
    (0.5 s later) could end it; one whose caller is cancelled is forgotten at once; late
    answers to either are ignored."""
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
            assert took >= 0.2, took  # never early; TooSlowError says it beat the answer
            assert c._waiting == {}
            with trio.move_on_after(0.1):
                await c.call({"op": "read", "key": "b"}, timeout=5)
            assert c._waiting == {}
            await trio.sleep(0.6)  # both late answers arrive and answer nobody
            assert not c.closed
            assert (await c.call({"op": "read", "key": "c"}, timeout=2))["ok"] is True

    run(test)


def test_requests_of_one_round_leave_together_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests made in one scheduling round go out in one send, in the order they were
    made; each still gets its own answer."""
    from lab.systems.raftkv.wire import KVClient

    chunks: list[bytes] = []
    sends: list[int] = []  # bytes queued at each send
    real_send = KVClient._send

    def counting_send(self: KVClient) -> None:
        if self._out:
            sends.append(len(self._out))
        real_send(self)

    monkeypatch.setattr(KVClient, "_send", counting_send)

    async def record(stream: trio.SocketStream) -> None:
        buf = b""
        while data := await stream.receive_some(65536):
            chunks.append(data)
            buf += data
            *done, buf = buf.split(b"\n")
            await stream.send_all(b"".join(
                json.dumps({"id": json.loads(x)["id"], "ok": True,
                            "value": json.loads(x)["key"]}).encode() + b"\n" for x in done))

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, record)
        async with connect("127.0.0.1", port) as c:
            # First one request alone: the client's I/O tasks start with it, and may run
            # in the middle of the round they start in (trio shuffles a round's tasks).
            assert (await c.call({"op": "read", "key": -1}))["value"] == -1
            sends.clear()
            chunks.clear()
            got: dict[int, object] = {}
            order: list[int] = []

            async def one(k: int) -> None:
                order.append(k)
                got[k] = (await c.call({"op": "read", "key": k}))["value"]

            async with trio.open_nursery() as inner:
                for k in range(20):
                    inner.start_soon(one, k)
        assert got == {k: k for k in range(20)}
        assert len(sends) == 1 and len(chunks) == 1
        sent = [json.loads(x) for x in chunks[0].splitlines()]
        assert [r["key"] for r in sent] == order  # in the order the calls were made
        assert [r["id"] for r in sent] == list(range(2, 22))

    run(test)


def test_a_member_that_stops_reading_gets_the_rest_when_it_reads_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """More requests than the socket buffers hold wait in the client, in order, and go
    when there is room; past the limit, the connection is given up."""
    go = trio.Event()

    async def slow(stream: trio.SocketStream) -> None:
        await go.wait()
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            *done, buf = buf.split(b"\n")
            await stream.send_all(b"".join(
                json.dumps({"id": json.loads(x)["id"], "ok": True,
                            "value": len(json.loads(x)["value"])}).encode() + b"\n"
                for x in done))

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, slow)
        async with connect("127.0.0.1", port) as c:
            got: list[object] = []

            async def one(k: int) -> None:
                got.append((await c.call({"op": "write", "key": k, "value": "x" * (k + 65536)},
                                         timeout=8))["value"])

            async with trio.open_nursery() as inner:
                for k in range(100):  # 6.5 MB
                    inner.start_soon(one, k)
                await trio.sleep(0.3)
                assert c._out, "everything fitted in the socket buffers: the test tests nothing"
                go.set()
            assert sorted(got) == [k + 65536 for k in range(100)]
            assert not c._out and not c.closed

            monkeypatch.setattr("lab.systems.raftkv.wire._MAX_UNSENT", 1_000_000)
            go2 = trio.Event()
            lost: list[str] = []

            async def stuck(stream: trio.SocketStream) -> None:
                await go2.wait()

            port2 = await serve(n, stuck)
            async with connect("127.0.0.1", port2) as c2:
                async def two(k: int) -> None:
                    try:
                        await c2.call({"op": "write", "key": k, "value": "y" * 65536}, timeout=8)
                    except ConnectionLost as e:
                        lost.append(str(e))

                async with trio.open_nursery() as inner:
                    for k in range(200):  # 13 MB: more than socket buffers and the limit
                        inner.start_soon(two, k)
                        await trio.sleep(0)
                assert c2.closed
                assert len(lost) == 200 and any("stopped reading" in e for e in lost)
            go2.set()

    run(test)


def test_a_retired_connection_takes_no_new_requests_and_closes_when_drained() -> None:
    release = trio.Event()

    async def held(stream: trio.SocketStream) -> None:
        while reqs := await lines(stream):
            await release.wait()
            await stream.send_all(b"".join(
                json.dumps({"id": r["id"], "ok": True}).encode() + b"\n" for r in reqs))

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, held)
        async with connect("127.0.0.1", port) as c:
            answers: list[object] = []

            async def one() -> None:
                answers.append((await c.call({"op": "read", "key": "a"}))["ok"])

            n.start_soon(one)
            await trio.sleep(0.1)
            c.retire()
            assert c.retired and not c.closed  # a request still waits for its answer
            with pytest.raises(ConnectionLost):
                await c.call({"op": "read", "key": "b"})
            release.set()
            with trio.fail_after(2):
                while not c.closed:
                    await trio.sleep(0.01)
            assert answers == [True]

    run(test)


@pytest.mark.parametrize("shared", [True, False])
def test_raftkv_workers_share_connections_or_keep_their_own(shared: bool) -> None:
    """``connections: shared``: all workers of a run use one connection per member;
    ``per-client``: one each. Either way a request that timed out retires its connection
    (the next request opens a new one) without failing another request still waiting on
    it, and nothing stays open once the workers are done."""
    import random

    from lab.systems.raftkv.client import RaftkvClient

    accepted: list[trio.SocketStream] = []
    hung_up: list[trio.SocketStream] = []  # connections the client closed
    release = trio.Event()  # the answer to "held" waits for it

    async def kv(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        buf = b""
        lock = trio.Lock()
        async with trio.open_nursery() as n:
            while data := await stream.receive_some(65536):
                buf += data
                *done, buf = buf.split(b"\n")
                for x in done:
                    r = json.loads(x)

                    async def answer(r: dict[str, object] = r) -> None:
                        if r["key"] == "slow":
                            await trio.sleep(0.5)
                        if r["key"] == "held":
                            await release.wait()
                        with contextlib.suppress(trio.BrokenResourceError,
                                                 trio.ClosedResourceError):
                            async with lock:
                                await stream.send_all(json.dumps(
                                    {"id": r["id"], "ok": True}).encode() + b"\n")

                    n.start_soon(answer)
            hung_up.append(stream)

    async def test(n: trio.Nursery) -> None:
        port = await serve(n, kv)
        addrs = {"n1": ("127.0.0.1", port)}
        types: list[str] = []

        async def worker(i: int) -> None:
            timeout = 10.0 if i == 1 else 0.3
            async with RaftkvClient(addrs, timeout, random.Random(i), shared=shared) as c:
                for j in range(5):
                    key = {(0, 1): "slow", (1, 0): "held"}.get((i, j), f"{i}-{j}")
                    t = (await c.invoke("register", "write", key, j)).type
                    types.append(t)
                    if key == "slow":
                        assert t == "info"
                        release.set()  # "held" is answered after the retirement

        async with trio.open_nursery() as inner:
            for i in range(8):
                inner.start_soon(worker, i)
        assert sorted(types) == ["info"] + ["ok"] * 39
        # shared: the first connection, then a fresh one after the timeout
        assert len(accepted) == (2 if shared else 8 + 1)
        with trio.fail_after(2):  # every connection was closed by the client
            while len(hung_up) < len(accepted):
                await trio.sleep(0.01)

    run(test)


def test_a_write_of_unknown_outcome_is_sent_again_with_the_same_seq() -> None:
    """raftkv's exactly-once sessions: a write whose connection is lost, or whose answer
    says ``maybe``, goes again to another member with the same ``client`` and ``seq``; a
    definite answer to the retry is the write's outcome. Reads carry no session, and each
    new write takes the next ``seq``."""
    import random

    from lab.systems.raftkv.client import RaftkvClient

    seen: list[tuple[str, dict[str, object]]] = []

    def member(name: str, behave: Callable[[dict[str, object]], dict[str, object] | None]
               ) -> Handler:
        async def handler(stream: trio.SocketStream) -> None:
            buf = b""
            while data := await stream.receive_some(65536):
                buf += data
                *done, buf = buf.split(b"\n")
                for x in done:
                    r = json.loads(x)
                    seen.append((name, r))
                    answer = behave(r)
                    if answer is None:
                        await stream.aclose()  # hang up: the outcome is unknown
                        return
                    await stream.send_all(json.dumps({"id": r["id"], **answer}).encode()
                                          + b"\n")
        return handler

    def n1(r: dict[str, object]) -> dict[str, object] | None:
        if r["op"] == "read":
            return {"ok": True, "value": 1}
        if r["key"] == "lost":
            return None
        return {"ok": False, "error": "snapshot-installed", "maybe": True}

    def n2(r: dict[str, object]) -> dict[str, object] | None:
        return {"ok": True}

    async def test(n: trio.Nursery) -> None:
        addrs = {"n1": ("127.0.0.1", await serve(n, member("n1", n1))),
                 "n2": ("127.0.0.1", await serve(n, member("n2", n2)))}
        async with RaftkvClient(addrs, 5.0, random.Random(0)) as c:
            c.leader = "n1"
            assert (await c.invoke("register", "read", "k", None)).type == "ok"
            c.leader = "n1"
            assert (await c.invoke("register", "write", "lost", 3)).type == "ok"
            c.leader = "n1"
            assert (await c.invoke("register", "write", "maybe", 4)).type == "ok"

    run(test)
    read, *writes = seen
    assert "client" not in read[1] and "seq" not in read[1]
    assert [(who, r["key"], r["seq"]) for who, r in writes] == [
        ("n1", "lost", 1), ("n2", "lost", 1), ("n1", "maybe", 2), ("n2", "maybe", 2)]
    assert len({r["client"] for _, r in writes}) == 1


def test_a_write_still_unknown_at_its_deadline_is_info() -> None:
    """Every member hangs up on the write: it is tried on each while time remains, and
    ends ``info`` (it may have happened), never ``fail``."""
    import random

    from lab.systems.raftkv.client import RaftkvClient

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    async def test(n: trio.Nursery) -> None:
        addrs = {m: ("127.0.0.1", await serve(n, hang_up)) for m in ("n1", "n2")}
        async with RaftkvClient(addrs, 0.5, random.Random(0)) as c:
            assert (await c.invoke("register", "write", "k", 1)).type == "info"

    run(test)


@pytest.mark.parametrize("retry_answer,expected", [
    ({"ok": False, "error": "overwritten"}, "info"),  # the first try may still commit
    ({"ok": False, "error": "bad-request"}, "info"),
    ({"ok": False, "error": "cas-mismatch", "value": 7}, "fail"),  # given for this seq
])
def test_only_an_answer_given_for_the_seq_settles_a_retried_write(
        retry_answer: dict[str, object], expected: str) -> None:
    """After a try of unknown outcome, a retry's definite error settles the write only when
    the state machine gives it for that seq (it applied the retry, or recorded the first
    try's result); any other error, e.g. the retry's own entry overwritten, leaves the
    write unknown: ``info``, never a ``fail`` that may be a lie."""
    import random

    from lab.systems.raftkv.client import RaftkvClient

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    async def answer(stream: trio.SocketStream) -> None:
        r = json.loads((await stream.receive_some(65536)).split(b"\n")[0])
        await stream.send_all(json.dumps({"id": r["id"], **retry_answer}).encode() + b"\n")
        await trio.sleep(5)

    async def test(n: trio.Nursery) -> None:
        addrs = {"n1": ("127.0.0.1", await serve(n, hang_up)),
                 "n2": ("127.0.0.1", await serve(n, answer))}
        async with RaftkvClient(addrs, 2.0, random.Random(0)) as c:
            c.leader = "n1"
            got = await c.invoke("register", "cas", "k", [1, 2])
            assert got.type == expected, got

    run(test)
