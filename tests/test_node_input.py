"""Bad input never kills a raftkv node: damaged WAL files, bad command lines, garbage on
the peer and client ports. A node either repairs what is safe to repair (a torn WAL tail),
refuses to start with a one-line message and exit status 2 (corruption, bad flags), or
rejects the input, logs it and keeps serving. Helpers: ``tests/clusters.py``."""

from __future__ import annotations

import json
import random
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from clusters import (
    assert_cleaned_up,
    assert_no_crash,
    call,
    node_events,
    peer_frame,
    read_many,
    request,
    run,
    running,
    statuses,
    wait_for,
    wait_leader,
    wait_settled,
    write_all,
)

from lab.systems.raftkv.cluster import RaftkvCluster

pytestmark = pytest.mark.processes

_HEADER = struct.Struct(">II")  # WAL record header: payload length, crc32


def wal_records(buf: bytes) -> list[tuple[int, int]]:
    """(offset, end) of every complete record in a WAL segment image."""
    out, off = [], 0
    while len(buf) - off >= _HEADER.size:
        length, _ = _HEADER.unpack_from(buf, off)
        end = off + _HEADER.size + length
        if length == 0 or end > len(buf):
            break
        out.append((off, end))
        off = end
    return out


def newest_segment(cluster: RaftkvCluster, mid: str = "n1") -> Path:
    segs = sorted(cluster.members[mid].data_dir.glob("wal-*.log"))
    assert segs, f"no WAL segment in {cluster.members[mid].data_dir}"
    return segs[-1]


def flip(path: Path, pos: int, mask: int = 0xFF) -> bytes:
    buf = bytearray(path.read_bytes())
    buf[pos] ^= mask
    path.write_bytes(bytes(buf))
    return bytes(buf)


def run_node_directly(argv: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(r: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit status 2, no traceback, exactly one error line (the last line) that contains
    every ``expected`` text. Returns that line."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert len(errors) == 1 and lines and errors[0] == lines[-1], r.stderr[-2000:]
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


# --------------------------------------------------------------------------- the WAL


def _torn_tail(kind: str, seg: bytes) -> bytes:
    if kind == "garbage-7-bytes":
        return bytes([0x13, 0x37, 0xBE, 0xEF, 0x00, 0x42, 0x99])
    if kind == "half-a-record":  # a record whose write was cut off halfway
        off, end = wal_records(seg)[-1]
        return seg[off : off + (end - off) // 2]
    assert kind == "zero-filled"  # the file grew but the data never reached the disk
    return bytes(4096)


@pytest.mark.parametrize("kind", ["garbage-7-bytes", "half-a-record", "zero-filled"])
def test_torn_wal_tail_is_cut_off_and_logged(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with running(tmp_path, 1) as cluster:
            await wait_leader(cluster)
            data = {f"k{i}": [i, f"v{i}"] for i in range(30)}
            await write_all(cluster, data, workers=4)
            await cluster.kill("n1")

            seg = newest_segment(cluster)
            good = seg.read_bytes()
            assert wal_records(good)[-1][1] == len(good)  # SIGKILL tore nothing itself
            tail = _torn_tail(kind, good)
            with open(seg, "ab") as f:
                f.write(tail)

            cluster.start("n1")
            await wait_leader(cluster)
            assert await read_many(cluster, data) == data
            torn = node_events(cluster, "n1", "wal-torn-tail-truncated")
            assert len(torn) == 1, torn
            assert torn[0]["file"] == str(seg), torn
            assert torn[0]["offset"] == len(good), torn
            assert torn[0]["dropped_bytes"] == len(tail), torn
            assert seg.read_bytes()[: len(good)] == good  # nothing before the tail touched

            # the repaired segment takes new records that survive the next crash
            await write_all(cluster, {"after": "repair"})
            await cluster.kill("n1")
            cluster.start("n1")
            await wait_leader(cluster)
            assert await read_many(cluster, [*data, "after"]) == {**data, "after": "repair"}
            assert len(node_events(cluster, "n1", "wal-torn-tail-truncated")) == 1
            assert len(node_events(cluster, "n1", "started")) == 3

    run(main)


@pytest.mark.parametrize("where", ["payload", "crc", "length", "snapshot"])
def test_corrupt_wal_refuses_to_start_naming_file_and_offset(tmp_path: Path,
                                                            where: str) -> None:
    async def main() -> None:
        extra = ["--snapshot-entries", "10"] if where == "snapshot" else []
        async with running(tmp_path, 1, extra_args=extra) as cluster:
            await wait_leader(cluster)
            await write_all(cluster, {f"k{i}": i for i in range(25)}, workers=1)
            await cluster.stop("n1")
            assert cluster.members["n1"].proc.returncode == 0  # type: ignore[union-attr]

            if where == "snapshot":  # the only snapshot: nothing older to fall back on
                snaps = sorted(cluster.members["n1"].data_dir.glob("snap-*.snap"))
                assert len(snaps) == 1, snaps
                path, off = snaps[0], 0
                damaged = flip(path, _HEADER.size + 5)
            else:
                path = newest_segment(cluster)
                recs = wal_records(path.read_bytes())
                assert len(recs) >= 4, recs
                off, end = recs[1]  # an early record, with good records after it
                pos = {"payload": (off + _HEADER.size + end) // 2, "crc": off + 5,
                       "length": off}[where]  # the length's top byte: a huge length
                damaged = flip(path, pos)

            r = await trio.to_thread.run_sync(run_node_directly, cluster.argv("n1"))
            line = assert_one_line_error(r, str(path), f"offset {off}")
            assert "refusing to start" in line, line
            assert path.read_bytes() == damaged  # refused, not "repaired"
            assert_cleaned_up(cluster)

    run(main)


# --------------------------------------------------------------------------- the command line


def _base_argv(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "nodes", "--id", "n1", "--data-dir", str(tmp_path / "data"),
            "--peer-listen", "127.0.0.1:0", "--client-listen", "127.0.0.1:0"]


@pytest.mark.parametrize(("extra", "expected"), [
    (["--bug", "no-such-bug"], "unknown bug 'no-such-bug'"),
    (["--bug"], "--bug"),
    (["--frobnicate"], "--frobnicate"),
    (["--peer", "n2"], "'n2'"),
    (["--peer", "n2=127.0.0.1"], "'127.0.0.1'"),
    (["--peer", "n2=127.0.0.1:70000"], "'127.0.0.1:70000'"),
    (["--peer", "n2=127.0.0.1:port"], "'127.0.0.1:port'"),
    (["--peer", "=127.0.0.1:7000"], "'=127.0.0.1:7000'"),
    (["--peer", "n1=127.0.0.1:7000"], "names this node (n1) itself"),
    (["--peer-client", "n2:7000"], "'n2:7000'"),
    (["--peer-listen", "localhost"], "'localhost'"),
    (["--tick-ms", "abc"], "'abc'"),
    (["--tick-ms", "0"], "tick-ms"),
    (["--heartbeat-ms", "500"], "election-timeout-ms"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_command_line_exits_2_with_one_line_message(tmp_path: Path, extra: list[str],
                                                        expected: str) -> None:
    r = run_node_directly(_base_argv(tmp_path) + extra)
    assert_one_line_error(r, expected)
    assert r.stdout == ""


def test_data_dir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    r = run_node_directly(_base_argv(tmp_path))
    assert_one_line_error(r, str(tmp_path / "data"))


@pytest.mark.parametrize("which", ["--peer-listen", "--client-listen"])
def test_listen_address_in_use_exits_2_with_one_line_message(tmp_path: Path,
                                                             which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = _base_argv(tmp_path)
        argv[argv.index(which) + 1] = f"127.0.0.1:{port}"
        r = run_node_directly(argv)
    assert_one_line_error(r, "Address already in use")


# --------------------------------------------------------------------------- the ports


async def _send_and_drain(addr: tuple[str, int], data: bytes, *, eof: bool = True,
                          timeout: float = 5.0) -> tuple[bytes, bool]:
    """Connect, send ``data`` (half-closing after it if ``eof``), and read until the node
    closes the connection. Returns (what the node sent, whether it closed in time)."""
    got = bytearray()
    closed = False
    with trio.move_on_after(timeout):
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            try:
                await stream.send_all(data)
                if eof:
                    await stream.send_eof()
            except trio.BrokenResourceError:
                pass  # the node may hang up before reading everything: fine
            try:
                while chunk := await stream.receive_some(65536):
                    got += chunk
            except trio.BrokenResourceError:
                pass
            closed = True
    return bytes(got), closed


def _answers(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def _complete_lines(data: bytes) -> int:
    """How many request lines the node must answer: complete and not blank."""
    return sum(1 for line in data.split(b"\n")[:-1] if line.strip())


def _is_bad_request(a: dict[str, Any]) -> bool:
    return a.get("ok") is False and a.get("error") == "bad-request"


def _peer_garbage(mid: str, other: str, third: str) -> dict[str, bytes]:
    """Crafted peer-port inputs for member ``mid`` (``other``, ``third``: real peers).
    The node must drop each connection and log ``rejected-peer-input``."""
    hello = peer_frame({"hello": other, "to": mid})
    msg = {"t": "hb", "from": other, "to": mid, "term": 0}
    return {
        "huge length": struct.pack(">I", 0xFFFF_FFF0) + b"x" * 100,
        "hello not JSON": peer_frame(b"\x00\xffhello?"),
        "hello not an object": peer_frame(["hello", other]),
        "hello from a non-member": peer_frame({"hello": "n9", "to": mid}),
        "hello to another node": peer_frame({"hello": other, "to": third}),
        "message not JSON": hello + peer_frame(b"{not json"),
        "message not an object": hello + peer_frame([1, 2, 3]),
        "unknown message type": hello + peer_frame({**msg, "t": "bogus"}),
        "negative term": hello + peer_frame({**msg, "term": -1}),
        "bad entries": hello + peer_frame({**msg, "t": "app", "e": [[1]]}),
        "entries not a list": hello + peer_frame({**msg, "t": "app", "e": "x"}),
        "bad snapshot": hello + peer_frame({**msg, "t": "snap", "snap": {"index": "x"}}),
        "sender differs from hello": hello + peer_frame({**msg, "from": third}),
        "huge length after hello": hello + struct.pack(">I", 0x7FFF_FFFF),
    }


CLIENT_GARBAGE_LINES = [
    b"this is not JSON",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"\xff\xfe\x00{}",
    b'{"id": 5, "op": "frobnicate"}',
    b'{"id": 6, "op": "write", "key": "k"}',
    b'{"id": 7, "op": "read", "key": 5}',
    b'{"id": 8, "op": "write", "key": "k", "value": 1, "extra": true}',
    b'{"id": 9, "op": "cas", "key": "k", "value": 1}',
    b'{"id": 10, "op": "txn", "value": [["zap", "k", 1]]}',
    b'{"id": 11, "op": "write", "key": "k", "value": 1, "client": "c"}',
    b'{"id": 12}',
]


def test_garbage_on_peer_and_client_ports_never_kills_a_node(tmp_path: Path) -> None:
    rng = random.Random(20240611)

    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            await wait_settled(cluster)
            mids = list(cluster.members)
            limit = trio.CapacityLimiter(16)
            problems: list[str] = []

            async def random_peer(mid: str, data: bytes) -> None:
                async with limit:
                    await _send_and_drain(cluster.members[mid].peer, data)

            async def random_client(mid: str, data: bytes) -> None:
                async with limit:
                    raw, closed = await _send_and_drain(cluster.members[mid].client, data)
                answers = _answers(raw)
                if not closed or len(answers) != _complete_lines(data) or not all(
                        _is_bad_request(a) for a in answers):
                    problems.append(f"{mid} random client input: closed={closed}, "
                                    f"{len(answers)} answers for {_complete_lines(data)} "
                                    f"lines: {answers[:3]}")

            async def crafted_peer(mid: str, what: str, data: bytes) -> None:
                raw, closed = await _send_and_drain(cluster.members[mid].peer, data, eof=False)
                if not closed or raw:
                    problems.append(f"{mid} peer input {what!r}: not dropped ({raw[:100]!r})")

            async def crafted_client(mid: str) -> None:
                data = b"\n".join(CLIENT_GARBAGE_LINES) + b'\n{"id": 99, "op": "status"}\n'
                raw, closed = await _send_and_drain(cluster.members[mid].client, data)
                answers = _answers(raw)
                status = [a for a in answers if a.get("id") == 99]
                bad = [a for a in answers if a.get("id") != 99]
                ids = sorted(a["id"] for a in bad if a.get("id") is not None)
                if not (closed and len(status) == 1 and status[0].get("ok") is True
                        and len(bad) == len(CLIENT_GARBAGE_LINES)
                        and all(map(_is_bad_request, bad)) and ids == list(range(5, 13))):
                    problems.append(f"{mid} crafted client lines: {answers}")

            async def long_line(mid: str) -> None:
                raw, closed = await _send_and_drain(cluster.members[mid].client,
                                                    b"x" * (2 * 1024 * 1024), eof=False)
                answers = _answers(raw)
                if not (closed and len(answers) == 1 and _is_bad_request(answers[0])):
                    problems.append(f"{mid} 2 MiB line: closed={closed} {answers}")

            async with trio.open_nursery() as n:
                for k in range(200):  # random bytes, alternately at peer and client ports
                    mid = mids[k % len(mids)]
                    data = rng.randbytes(rng.randint(1, 64 * 1024))
                    n.start_soon(random_peer if k % 2 else random_client, mid, data)
                for mid in mids:
                    other, third = (m for m in mids if m != mid)
                    for what, data in _peer_garbage(mid, other, third).items():
                        n.start_soon(crafted_peer, mid, what, data)
                    n.start_soon(crafted_client, mid)
                    n.start_soon(long_line, mid)

            assert_no_crash(cluster)
            assert all(cluster.alive(m) for m in mids)
            assert not problems, "\n".join(problems)

            # the cluster still works, and every member logged what it rejected
            ans = await call(cluster, {"op": "write", "key": "still", "value": "alive"})
            assert ans.get("ok") is True, ans
            assert await read_many(cluster, ["still"]) == {"still": "alive"}
            for mid in mids:
                rejected = {e["event"] for e in node_events(cluster, mid)} & {
                    "rejected-peer-input", "rejected-client-input"}
                assert rejected == {"rejected-peer-input", "rejected-client-input"}, (mid,
                                                                                      rejected)
            assert_no_crash(cluster)

    run(main)


# --------------------------------------------------------------------------- crafted inputs


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


ADVERSARIAL = {
    # JSON that the parser itself cannot take: too deep for its recursion limit, or an
    # integer beyond Python's int/str conversion limit (ValueError, not JSONDecodeError)
    "client: deeply nested JSON": ("client", _deep(100_000) + b"\n"),
    "client: 5000-digit integer": (
        "client", b'{"id": 1, "op": "write", "key": "k", "value": ' + b"9" * 5000 + b"}\n"),
    "peer: deeply nested frame": ("peer", _deep(100_000)),
    "peer: 5000-digit integer": ("peer", b'{"t": "hb", "term": ' + b"9" * 5000 + b"}"),
    # well-formed JSON with an unhashable value where the node looks a string up
    "peer: hello id is a list": ("hello", {"hello": ["n2"], "to": "{mid}"}),
    "peer: message type is a list": ("peer", {"t": ["app"], "term": 0}),
    # a snapshot whose image is not a state-machine image at all
    "peer: snapshot with malformed data": ("peer", {"t": "snap", "term": "{term}", "snap": {
        "index": 1_000_000, "term": "{term}", "data": "garbage"}}),
}


@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_crafted_input_is_rejected_not_fatal(tmp_path: Path, case: str) -> None:
    """Inputs a fuzzer finds quickly. The node must reject them (answer bad-request to a
    client; drop a peer connection or message), log the rejection, and stay up; the
    cluster keeps working and the member still restarts."""
    port, payload = ADVERSARIAL[case]

    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)
            target = next(m for m in cluster.members if m != leader)  # a follower
            term = (await statuses(cluster))[target]["term"]  # type: ignore[index]

            def fill(v: Any) -> Any:  # substitute {mid}/{term} placeholders
                if isinstance(v, dict):
                    return {k: fill(x) for k, x in v.items()}
                if v == "{mid}":
                    return target
                return term if v == "{term}" else v

            if port == "client":
                raw, closed = await _send_and_drain(cluster.members[target].client, payload)
                await trio.sleep(0.3)
                assert_no_crash(cluster)
                answers = _answers(raw)
                assert closed and len(answers) == 1 and _is_bad_request(answers[0]), answers
                event = "rejected-client-input"
            else:
                frames = b""
                if port == "peer":  # behind a valid hello from the leader
                    frames += peer_frame({"hello": leader, "to": target})
                    if isinstance(payload, dict):
                        payload_ = {"from": leader, "to": target, **fill(payload)}
                        frames += peer_frame(payload_)
                    else:
                        frames += peer_frame(payload)
                else:
                    frames += peer_frame(fill(payload))
                # Dropping the connection (rejected-peer-input) or just the message
                # (rejected-peer-message) are both fine; a node never answers on it.
                raw, _ = await _send_and_drain(cluster.members[target].peer, frames,
                                               eof=False, timeout=1.5)
                assert raw == b""
                event = "rejected-peer-input"

            await trio.sleep(0.3)
            assert_no_crash(cluster)
            assert cluster.alive(target)
            events = {e["event"] for e in node_events(cluster, target)}
            assert event in events or "rejected-peer-message" in events, sorted(events)

            ans = await call(cluster, {"op": "write", "key": "after", "value": case})
            assert ans.get("ok") is True, ans
            assert await read_many(cluster, ["after"]) == {"after": case}
            await cluster.stop(target)
            cluster.start(target)

            async def answers_status() -> bool:
                return await request(cluster, target, {"op": "status"}, 0.5) is not None

            await wait_for(cluster, answers_status, 10, f"restarted {target} to serve")

    run(main)


def test_sigterm_during_garbage_still_stops_cleanly(tmp_path: Path) -> None:
    """Half-open garbage connections must not keep a node from stopping on SIGTERM."""

    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            await wait_settled(cluster)
            streams = []
            for m in cluster.members.values():
                for addr, data in ((m.peer, struct.pack(">I", 1000) + b"{"),
                                   (m.client, b'{"op": "status"')):
                    s = await trio.open_tcp_stream(*addr)
                    await s.send_all(data)  # an unfinished frame / line, left open
                    streams.append(s)
            try:
                for mid in cluster.members:
                    cluster.signal(mid, signal.SIGTERM)
                with trio.move_on_after(5):
                    while any(cluster.alive(m) for m in cluster.members):
                        await trio.sleep(0.05)
                codes = {mid: m.proc.poll() for mid, m in cluster.members.items()
                         if m.proc is not None}
                assert codes == dict.fromkeys(cluster.members, 0), codes
            finally:
                for s in streams:
                    await s.aclose()

    run(main)
