"""raftkv as real OS processes on loopback: elections, crashes, restarts, snapshots and
the client protocol, observed only through the client port, the data directory and the
node logs (the lab's view). Helpers: ``tests/clusters.py``."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from clusters import (
    Router,
    assert_no_crash,
    call,
    crash_report,
    node_events,
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

STATUS_FIELDS = ("node", "role", "term", "leader", "commit", "applied", "last_index",
                 "snapshot_index")


async def ask(cluster: RaftkvCluster, mid: str, req: dict[str, Any]) -> dict[str, Any]:
    """One request to one member, which must answer."""
    ans = await request(cluster, mid, req, timeout=3.0)
    assert ans is not None, f"{mid} did not answer {req}\n{crash_report(cluster)}"
    return ans


async def status(cluster: RaftkvCluster, mid: str) -> dict[str, Any]:
    st = await ask(cluster, mid, {"op": "status"})
    assert st["ok"] is True, st
    return st


async def caught_up(cluster: RaftkvCluster, mid: str, index: int) -> bool:
    st = await request(cluster, mid, {"op": "status"}, timeout=0.5)
    return st is not None and st["applied"] >= index


# --------------------------------------------------------------------------- write load


@dataclass
class Attempt:
    value: str
    outcome: str  # "ok" (acknowledged), "fail" (certainly not applied), "unknown"
    at: float  # trio.current_time() when the outcome was known


@dataclass
class WriteLoad:
    """``writers`` concurrent clients, each writing unique values to its own key and
    recording every attempt's outcome. A writer follows leader hints and moves to another
    member when one is unreachable; every attempt carries a new value.

    :meth:`checkpoint` freezes the writers (in-flight attempts finish), reads every key
    through the leader and checks it against the history, then lets them go on: done
    right after a leader is killed, it checks exactly the writes that leader had
    acknowledged, before newer writes can overwrite them."""

    cluster: RaftkvCluster
    writers: int = 8
    history: dict[str, list[Attempt]] = field(default_factory=dict)
    stop: trio.Event = field(default_factory=trio.Event)
    checkpoints: int = 0
    _go: trio.Event = field(default_factory=trio.Event)
    _inflight: int = 0

    def __post_init__(self) -> None:
        self.history = {f"load-{i}": [] for i in range(self.writers)}
        self._go.set()

    async def run(self) -> None:
        async with trio.open_nursery() as n:
            for key in self.history:
                n.start_soon(self._writer, key)

    async def _writer(self, key: str) -> None:
        router = Router(self.cluster)
        attempts = self.history[key]
        while True:
            await self._go.wait()
            if self.stop.is_set():
                return
            value = f"{key}#{len(attempts) + 1}"
            mid = router.target()
            self._inflight += 1
            try:
                ans = await request(self.cluster, mid,
                                    {"op": "write", "key": key, "value": value}, timeout=1.0)
            finally:
                self._inflight -= 1
            if ans is None or ans.get("maybe"):
                outcome = "unknown"  # lost connection, timeout: it may have been applied
            elif ans.get("ok"):
                outcome = "ok"
            else:
                assert ans.get("error") in ("not-leader", "overwritten"), ans
                outcome = "fail"
            attempts.append(Attempt(value, outcome, trio.current_time()))
            if outcome != "ok":
                router.redirect(ans, mid)
                if ans is None or ans.get("leader") is None:
                    await trio.sleep(0.05)

    def pause(self) -> None:
        if self._go.is_set():
            self._go = trio.Event()

    def resume(self) -> None:
        self._go.set()

    def finish(self) -> None:
        self.stop.set()
        self.resume()

    async def quiesce(self) -> None:
        """Pause and wait until no attempt is in flight."""
        self.pause()
        while self._inflight:
            await trio.sleep(0.01)

    async def checkpoint(self) -> None:
        await self.quiesce()
        self.check(await read_many(self.cluster, self.history))
        self.checkpoints += 1
        self.resume()

    def acks_since(self, t: float) -> int:
        return sum(a.outcome == "ok" and a.at >= t for h in self.history.values() for a in h)

    async def wait_acks_since(self, t: float, n: int, timeout: float, what: str) -> None:
        try:
            with trio.fail_after(timeout):
                while self.acks_since(t) < n:
                    assert_no_crash(self.cluster)
                    await trio.sleep(0.05)
        except trio.TooSlowError:
            raise AssertionError(f"fewer than {n} writes acknowledged {what} within "
                                 f"{timeout}s ({self.acks_since(t)})\n"
                                 f"{crash_report(self.cluster)}") from None

    def allowed(self, key: str) -> set[Any]:
        """Values a linearizable store may hold for ``key`` while no write is in flight:
        the last acknowledged value or any later attempt whose outcome is unknown (None,
        or any unknown attempt, if nothing was acknowledged). An attempt issued before
        the last acknowledged one cannot reappear: Raft orders it before that one."""
        h = self.history[key]
        oks = [i for i, a in enumerate(h) if a.outcome == "ok"]
        if not oks:
            return {None} | {a.value for a in h if a.outcome == "unknown"}
        return {h[oks[-1]].value} | {a.value for a in h[oks[-1] + 1:] if a.outcome == "unknown"}

    def check(self, values: dict[str, Any]) -> None:
        lost = {k: (values.get(k), sorted(self.allowed(k), key=str))
                for k in self.history if values.get(k) not in self.allowed(k)}
        assert not lost, f"acknowledged writes lost (key: (read, allowed)): {lost}"


# --------------------------------------------------------------------------- tests


def test_election_reads_writes_redirects_and_status(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)
            followers = [m for m in cluster.members if m != leader]

            assert await ask(cluster, leader, {"op": "write", "key": "x", "value": 42}
                             ) == {"id": 1, "ok": True}
            assert await ask(cluster, leader, {"op": "read", "key": "x"}) == {
                "id": 1, "ok": True, "value": 42}
            assert (await ask(cluster, leader, {"op": "read", "key": "nope"}))["value"] is None

            host, port = cluster.members[leader].client
            for f in followers:
                for req in ({"op": "read", "key": "x"},
                            {"op": "write", "key": "x", "value": 1}):
                    ans = await ask(cluster, f, req)
                    assert ans["ok"] is False and ans["error"] == "not-leader", ans
                    assert ans["leader"] == leader, ans
                    assert ans["leader_addr"] == f"{host}:{port}", ans
                    assert "maybe" not in ans, ans  # certainly not applied
            # ...and the write a follower refused really did not happen
            assert (await ask(cluster, leader, {"op": "read", "key": "x"}))["value"] == 42

            st = await status(cluster, leader)
            assert set(STATUS_FIELDS) <= set(st), st
            assert st["node"] == leader and st["role"] == "leader" and st["leader"] == leader
            assert isinstance(st["term"], int) and st["term"] >= 1
            assert st["commit"] >= 2  # the leader's no-op and our write
            assert st["applied"] == st["commit"] <= st["last_index"]
            assert st["snapshot_index"] == 0
            term, commit = st["term"], st["commit"]

            for f in followers:
                await wait_for(cluster, lambda f=f: caught_up(cluster, f, commit), 5,
                               f"{f} to apply {commit}")
                fs = await status(cluster, f)
                assert set(STATUS_FIELDS) <= set(fs), fs
                assert fs["node"] == f and fs["role"] == "follower", fs
                assert fs["leader"] == leader and fs["term"] == term, fs
                assert fs["commit"] >= commit and fs["last_index"] >= commit, fs
                assert fs["snapshot_index"] == 0, fs

    run(main)


def test_leader_sigkill_under_write_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)
            load = WriteLoad(cluster, writers=8)
            async with trio.open_nursery() as n:
                n.start_soon(load.run)
                await load.wait_acks_since(0, 40, 10, "before the kill")

                t_kill = trio.current_time()
                await cluster.kill(leader)  # with writes in flight
                await load.quiesce()  # no newer write may hide a lost one
                await wait_leader(cluster, 10, exclude=[leader])
                await load.checkpoint()  # what the dead leader acknowledged survived
                await load.wait_acks_since(t_kill, 40, 10, "after the leader was killed")

                t_restart = trio.current_time()
                cluster.start(leader)
                await trio.sleep(0.5)
                await load.wait_acks_since(t_restart, 40, 10, "after the restart")
                load.finish()

            load.check(await read_many(cluster, load.history))
            # the restarted ex-leader catches up with everything committed meanwhile
            new = await wait_leader(cluster, 10)
            commit = (await status(cluster, new))["commit"]
            await wait_for(cluster, lambda: caught_up(cluster, leader, commit), 10,
                           f"restarted {leader} to apply {commit}")
            assert cluster.members[leader].starts == 2

    run(main)


def test_five_nodes_survive_two_successive_leader_kills(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, 5) as cluster:
            first = await wait_settled(cluster)
            load = WriteLoad(cluster, writers=8)
            async with trio.open_nursery() as n:
                n.start_soon(load.run)
                await load.wait_acks_since(0, 40, 10, "before the first kill")

                t1 = trio.current_time()
                await cluster.kill(first)
                await load.quiesce()
                second = await wait_leader(cluster, 10, exclude=[first])
                assert second != first
                await load.checkpoint()
                await load.wait_acks_since(t1, 40, 10, "after the first kill")

                t2 = trio.current_time()
                await cluster.kill(second)  # 3 of 5 left: still a quorum
                await load.quiesce()
                third = await wait_leader(cluster, 10, exclude=[first, second])
                assert third not in (first, second)
                await load.checkpoint()
                await load.wait_acks_since(t2, 40, 10, "with 3 of 5 members")

                t3 = trio.current_time()
                cluster.start(first)
                cluster.start(second)
                await trio.sleep(0.5)
                await load.wait_acks_since(t3, 20, 10, "after both restarted")
                load.finish()

            load.check(await read_many(cluster, load.history))
            leader = await wait_leader(cluster, 10)
            commit = (await status(cluster, leader))["commit"]
            for mid in (first, second):
                await wait_for(cluster, lambda mid=mid: caught_up(cluster, mid, commit), 10,
                               f"restarted {mid} to apply {commit}")

    run(main)


def test_a_peer_reset_does_not_crash_the_survivors(tmp_path: Path) -> None:
    """Deterministic form of what the kill tests hit by chance: a member that dies with
    unread peer data in its socket buffers makes the kernel answer with a TCP reset
    (not a FIN). The leader's connection to it breaks; the leader must log it, keep
    leading and keep committing with the remaining majority."""

    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)
            victim = next(m for m in cluster.members if m != leader)
            cluster.signal(victim, signal.SIGSTOP)  # heartbeats pile up unread...
            await trio.sleep(0.5)
            cluster.signal(victim, signal.SIGKILL)  # ...so its sockets close with a reset
            await cluster.kill(victim)  # reap
            await trio.sleep(0.5)
            assert_no_crash(cluster)
            assert await wait_leader(cluster, 5) == leader
            ans = await ask(cluster, leader, {"op": "write", "key": "k", "value": "v"})
            assert ans == {"id": 1, "ok": True}, ans
            gone = [e for e in node_events(cluster, leader, "peer-disconnected")
                    if e.get("peer") == victim]
            assert gone, "the leader did not notice the lost connection"

    run(main)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_full_cluster_restart_keeps_committed_data(tmp_path: Path, how: str) -> None:
    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            await wait_settled(cluster)
            data = {f"k{i}": {"i": i, "tag": f"v{i}"} for i in range(60)}
            await write_all(cluster, data)

            if how == "sigterm":
                await cluster.stop_all()
                for mid in cluster.members:
                    assert cluster.members[mid].proc.returncode == 0  # type: ignore[union-attr]
                    assert node_events(cluster, mid, "stopped"), f"{mid} did not stop cleanly"
            else:
                async with trio.open_nursery() as n:
                    for mid in cluster.members:
                        n.start_soon(cluster.kill, mid)
                for mid in cluster.members:
                    rc = cluster.members[mid].proc.returncode  # type: ignore[union-attr]
                    assert rc == -signal.SIGKILL
            assert not any(cluster.alive(m) for m in cluster.members)

            cluster.start_all()
            leader = await wait_leader(cluster, 15)
            assert await read_many(cluster, data) == data
            # a majority had every entry on disk (a member that joined late may not)
            restarted = [node_events(cluster, mid, "started")[1] for mid in cluster.members]
            assert sum(st["entries"] >= len(data) for st in restarted) >= 2, restarted
            commit = (await status(cluster, leader))["commit"]
            for mid in cluster.members:
                await wait_for(cluster, lambda mid=mid: caught_up(cluster, mid, commit), 10,
                               f"{mid} to apply {commit}")

    run(main)


def test_snapshots_compaction_and_catch_up_of_a_lagging_follower(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, 3, extra_args=["--snapshot-entries", "50"]) as cluster:
            await wait_settled(cluster)
            expected: dict[str, Any] = {}
            for rnd in range(3):  # 300 writes on 100 keys
                batch = {f"a{i}": f"a{i}-r{rnd}" for i in range(100)}
                await write_all(cluster, batch)
                expected.update(batch)

            async def all_snapshotted() -> bool:
                st = await statuses(cluster)
                return all(s is not None and s["snapshot_index"] > 0 for s in st.values())

            await wait_for(cluster, all_snapshotted, 10, "every member to take a snapshot")
            for mid in cluster.members:
                assert node_events(cluster, mid, "snapshot-taken"), mid

            leader = await wait_leader(cluster, 10)
            lagger, other = (m for m in cluster.members if m != leader)
            lag_last = (await status(cluster, lagger))["last_index"]
            await cluster.kill(lagger)

            batch = {f"b{i}": i for i in range(150)} | {f"a{i}": f"a{i}-r3" for i in range(50)}
            await write_all(cluster, batch)
            expected.update(batch)
            lst = await status(cluster, leader)
            assert lst["role"] == "leader", lst
            assert lst["snapshot_index"] > lag_last, (lst, lag_last)  # compacted past it

            cluster.start(lagger)

            async def lagger_caught_up() -> bool:  # (status counts a snapshot as applied
                # as soon as it arrives; the install is logged once it is on disk)
                return (await caught_up(cluster, lagger, lst["commit"])
                        and bool(node_events(cluster, lagger, "snapshot-installed")))

            await wait_for(cluster, lagger_caught_up, 15,
                           f"{lagger} to install a snapshot and apply {lst['commit']}")
            installed = node_events(cluster, lagger, "snapshot-installed")
            assert installed[-1]["index"] > lag_last, installed
            lag_st = await status(cluster, lagger)
            assert lag_st["snapshot_index"] > lag_last, lag_st

            # Make the caught-up member indispensable: with `other` down, a write commits
            # on leader + lagger only; then the leader dies and `other` comes back. It
            # lacks that entry, so only the lagger can win the election, and it must
            # serve everything from its installed snapshot and the log after it.
            await cluster.kill(other)
            ans = await ask(cluster, leader, {"op": "write", "key": "only-2-of-3",
                                              "value": "yes"})
            assert ans == {"id": 1, "ok": True}, ans
            expected["only-2-of-3"] = "yes"
            await cluster.kill(leader)
            cluster.start(other)
            new = await wait_leader(cluster, 15, exclude=[leader])
            assert new == lagger
            assert await read_many(cluster, expected) == expected

            # and the killed leader comes back and converges too
            cluster.start(leader)
            await write_all(cluster, {"final": 1})
            commit = (await status(cluster, new))["commit"]
            for mid in (leader, other):
                await wait_for(cluster, lambda mid=mid: caught_up(cluster, mid, commit), 10,
                               f"{mid} to apply {commit}")

    run(main)


def test_cas_delete_and_txn(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)

            async def req(**kw: Any) -> dict[str, Any]:
                ans = await ask(cluster, leader, kw)
                ans.pop("id", None)
                return ans

            async def read(key: str) -> Any:
                ans = await req(op="read", key=key)
                assert ans["ok"] is True, ans
                return ans["value"]

            assert await req(op="write", key="x", value=1) == {"ok": True}
            assert await req(op="cas", key="x", value=[1, 2]) == {"ok": True}
            assert await read("x") == 2
            # mismatch: a certain failure (no "maybe") that reports the current value
            assert await req(op="cas", key="x", value=[1, 3]) == {
                "ok": False, "error": "cas-mismatch", "value": 2}
            assert await read("x") == 2
            # JSON equality: true is not 1
            assert (await req(op="cas", key="x", value=[True, 4]))["error"] == "cas-mismatch"
            # a missing key compares equal to null
            assert await req(op="cas", key="fresh", value=[None, {"a": [1]}]) == {"ok": True}
            assert await read("fresh") == {"a": [1]}

            ops = [["append", "l", 1], ["append", "l", 2], ["w", "y", 10],
                   ["r", "l", None], ["r", "y", None], ["r", "x", None], ["r", "none", None]]
            assert await req(op="txn", value=ops) == {"ok": True, "value": [
                ["append", "l", 1], ["append", "l", 2], ["w", "y", 10],
                ["r", "l", [1, 2]], ["r", "y", 10], ["r", "x", 2], ["r", "none", None]]}
            assert await read("l") == [1, 2] and await read("y") == 10
            ans = await req(op="txn", value=[["append", "l", 3], ["r", "l", None]])
            assert ans == {"ok": True, "value": [["append", "l", 3], ["r", "l", [1, 2, 3]]]}

            # an aborted txn applies none of its writes
            ans = await req(op="txn", value=[["w", "z", 1], ["append", "y", 3]])
            assert ans["ok"] is False and ans["error"] == "txn-aborted", ans
            assert "maybe" not in ans
            assert await read("z") is None and await read("y") == 10

            assert await req(op="delete", key="x") == {"ok": True}
            assert await read("x") is None
            ans = await req(op="cas", key="x", value=[2, 5])
            assert ans == {"ok": False, "error": "cas-mismatch", "value": None}

            # malformed commands are refused before reaching the log
            for bad in ({"op": "cas", "key": "x", "value": 5},
                        {"op": "txn", "value": [["zap", "k", 1]]},
                        {"op": "txn", "value": []}):
                ans = await req(**bad)
                assert ans["ok"] is False and ans["error"] == "bad-request", (bad, ans)
            # ...and a follower sees the same state
            commit = (await status(cluster, leader))["commit"]
            f = next(m for m in cluster.members if m != leader)
            await wait_for(cluster, lambda: caught_up(cluster, f, commit), 5, f"{f} to catch up")

    run(main)


def test_exactly_once_with_client_sessions(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)

            async def read(key: str) -> Any:
                ans = await call(cluster, {"op": "read", "key": key})
                assert ans["ok"] is True, ans
                return ans["value"]

            append1 = {"op": "txn", "value": [["append", "l", 1], ["r", "l", None]],
                       "client": "c1", "seq": 1}
            first = await ask(cluster, leader, append1)
            assert first["ok"] is True, first
            assert first["value"] == [["append", "l", 1], ["r", "l", [1]]]
            # the retransmission gets the original answer and is not applied again
            again = await ask(cluster, leader, append1)
            assert again == first
            assert await read("l") == [1]

            append2 = {"op": "txn", "value": [["append", "l", 2], ["r", "l", None]],
                       "client": "c1", "seq": 2}
            second = await ask(cluster, leader, append2)
            assert second["value"] == [["append", "l", 2], ["r", "l", [1, 2]]], second
            stale = await ask(cluster, leader, append1)
            assert stale["ok"] is False and stale["error"] == "stale-seq", stale
            assert await read("l") == [1, 2]

            # sessions are replicated state: a new leader dedups as well
            await cluster.kill(leader)
            new = await wait_leader(cluster, 10, exclude=[leader])
            again2 = await call(cluster, append2)
            assert again2 == second
            assert await read("l") == [1, 2]

            # and a duplicate plain write does not clobber a later write
            w1 = {"op": "write", "key": "x", "value": "session", "client": "c2", "seq": 1}
            assert (await ask(cluster, new, w1))["ok"] is True
            assert (await ask(cluster, new, {"op": "write", "key": "x", "value": "later"})
                    )["ok"] is True
            assert (await ask(cluster, new, w1))["ok"] is True
            assert await read("x") == "later"

            # ... and it survives the old leader's return (it replays or gets a snapshot)
            cluster.start(leader)
            commit = (await status(cluster, new))["commit"]
            await wait_for(cluster, lambda: caught_up(cluster, leader, commit), 10,
                           f"{leader} to catch up")
            assert await read("l") == [1, 2]

    run(main)


def test_lab_request_reports_a_connection_lost_mid_request_as_none(tmp_path: Path) -> None:
    """``RaftkvCluster.request`` promises None when a member cannot answer; a member that
    dies with the request in flight must not raise out of it (the lab's clients count on
    None meaning "outcome unknown")."""

    async def main() -> None:
        async with running(tmp_path, 1) as cluster:
            await wait_leader(cluster, 10)
            # A stopped process still completes the TCP handshake (kernel backlog) but
            # never answers; killing it then resets the connection mid-request.
            cluster.signal("n1", signal.SIGSTOP)
            outcome: dict[str, Any] = {}

            async def send() -> None:
                try:
                    outcome["returned"] = await cluster.request("n1", {"op": "status"}, 5.0)
                except BaseException as e:  # report instead of crashing the nursery
                    outcome["raised"] = repr(e)

            async with trio.open_nursery() as n:
                n.start_soon(send)
                await trio.sleep(0.3)
                cluster.signal("n1", signal.SIGKILL)  # not cluster.kill: it SIGCONTs first
                await cluster.kill("n1")  # reap
            assert outcome == {"returned": None}

    run(main)


def test_pipelined_requests_from_a_client_that_reads_late_are_all_answered_in_order(
        tmp_path: Path) -> None:
    """Answers that do not fit in the socket wait for the client, in order, none lost."""
    big = "v" * 100_000
    n = 120  # ~12 MB of answers: far more than the kernel buffers of one connection

    async def main() -> None:
        async with running(tmp_path, 3) as cluster:
            leader = await wait_settled(cluster)
            assert await ask(cluster, leader, {"op": "write", "key": "big", "value": big}
                             ) == {"id": 1, "ok": True}
            host, port = cluster.members[leader].client
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                reqs = [{"id": i, "op": "read", "key": "big"} if i % 2
                        else {"id": i, "op": "status"} for i in range(n)]
                await stream.send_all(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
                await trio.sleep(1.0)  # the node answers into a full socket meanwhile
                buf, answers = b"", []
                with trio.fail_after(20):
                    while len(answers) < n:
                        data = await stream.receive_some(1 << 16)
                        assert data, f"connection closed after {len(answers)} answers"
                        *lines, buf = (buf + data).split(b"\n")
                        answers += [json.loads(x) for x in lines]
            statuses_ = [a for a in answers if "role" in a]
            reads = [a for a in answers if "role" not in a]
            # status answers come at once, in request order; reads after their read index
            assert [a["id"] for a in statuses_] == list(range(0, n, 2))
            assert sorted(a["id"] for a in reads) == list(range(1, n, 2))
            assert all(a == {"id": a["id"], "ok": True, "value": big} for a in reads)
            assert await ask(cluster, leader, {"op": "status"})  # and the node serves on

    run(main)


def test_a_write_that_cannot_commit_is_answered_maybe_at_its_deadline(tmp_path: Path) -> None:
    """With its quorum gone a write may or may not happen later: after --request-timeout
    the client is told so (maybe), and a read is told it failed."""
    async def main() -> None:
        async with running(tmp_path, 3, extra_args=["--request-timeout", "1.5"]) as cluster:
            leader = await wait_settled(cluster)
            host, port = cluster.members[leader].client
            for f in [m for m in cluster.members if m != leader]:
                cluster.signal(f, signal.SIGSTOP)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(b'{"id":7,"op":"write","key":"x","value":1}\n')
                t0 = trio.current_time()
                with trio.fail_after(10):
                    line = await stream.receive_some(4096)
                waited = trio.current_time() - t0
            for f in [m for m in cluster.members if m != leader]:
                cluster.signal(f, signal.SIGCONT)
            assert json.loads(line) == {"id": 7, "ok": False, "error": "timeout",
                                        "maybe": True}
            assert waited >= 1.4, waited

    run(main)


def test_digest_chains_agree_across_restarts_and_snapshot_installs(tmp_path: Path) -> None:
    """Every member logs a ``digest`` (applied-log chain, state digest) at each multiple of
    ``--digest-every`` and at shutdown; a member restarted from its WAL and snapshot, and
    one that caught up by installing the leader's snapshot, continue the same chain: at
    every index two members (or two lives of one member) logged, the digests are equal."""
    async def main() -> None:
        args = ["--digest-every", "16", "--snapshot-entries", "40"]
        async with running(tmp_path, 3, extra_args=args) as cluster:
            await wait_settled(cluster)
            await write_all(cluster, {f"a{i}": i for i in range(60)})
            leader = await wait_leader(cluster, 10)
            lagger, restarted = (m for m in cluster.members if m != leader)
            await cluster.kill(lagger)
            await write_all(cluster, {f"b{i}": i for i in range(100)})
            await cluster.stop(restarted)  # a clean stop: its shutdown digest, then a replay
            cluster.start(restarted)
            cluster.start(lagger)
            await write_all(cluster, {f"c{i}": i for i in range(40)})
            commit = (await status(cluster, await wait_leader(cluster, 10)))["commit"]
            for mid in cluster.members:
                await wait_for(cluster, lambda mid=mid: caught_up(cluster, mid, commit), 15,
                               f"{mid} to apply {commit}")
            installed = node_events(cluster, lagger, "snapshot-installed")
            assert installed, "the lagger should have caught up by a snapshot"
            await cluster.stop_all()
            seen: dict[int, set[tuple[str, str]]] = {}
            for mid in cluster.members:
                digests = node_events(cluster, mid, "digest")
                assert digests, mid
                for d in digests:
                    assert d["log"] is not None, (mid, d)  # every snapshot carried the chain
                    seen.setdefault(d["index"], set()).add((d["log"], d["state"]))
                assert any(d["index"] > installed[-1]["index"] for d in digests) or \
                    mid != lagger
            assert all(len(v) == 1 for v in seen.values()), seen
            assert max(seen) >= commit and any(i % 16 == 0 for i in seen)
            # the restarted member logged the indexes before its stop twice (two lives)
            again = [d["index"] for d in node_events(cluster, restarted, "digest")]
            assert len(again) > len(set(again))

    run(main)
