"""Shared helpers of the real-process tests (``test_processes.py``, ``test_node_input.py``).

Not a conftest: import it explicitly (``from clusters import ...``).

Every test runs its cluster inside :func:`running`, which stops every member however the
test ends and, when the test body succeeded, asserts that no member crashed (exited other
than by the test's own SIGKILL, or logged a traceback), that no member process (or child
of one) is left and that none of the cluster's ports is still listening. Waiting helpers
(:func:`wait_leader`, :func:`wait_for`, ...) fail at once, with the crash, when a member
dies on its own, instead of timing out.

The client helpers go around a lab bug (a lost connection escapes ``RaftkvCluster.request``
as an ``ExceptionGroup``, see :func:`request`); the bug itself is pinned by a test.
"""

from __future__ import annotations

import json
import re
import signal
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from lab.procs import descendants_alive, listening_ports
from lab.systems.raftkv.cluster import RaftkvCluster
from lab.systems.raftkv.wire import ConnectionLost, connect

#: Wall-clock bound of one test body (pytest-timeout's 300 s is the backstop).
TEST_DEADLINE = 60.0


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    """``trio.run`` with a deadline, so a hung cluster fails the test instead of the run."""

    async def bounded() -> Any:
        with trio.fail_after(TEST_DEADLINE):
            return await fn()

    return trio.run(bounded)


def assert_cleaned_up(cluster: RaftkvCluster) -> None:
    assert descendants_alive(cluster.pids()) == [], "member processes outlived the test"
    assert listening_ports(cluster.ports(), pids=cluster.pids(),
                           marker=str(cluster.base_dir)) == [], "cluster ports still listening"


def log_tail(cluster: RaftkvCluster, lines: int = 25) -> str:
    out = []
    for m in cluster.members.values():
        text = m.log_path.read_text(errors="replace") if m.log_path.exists() else ""
        out.append(f"--- {m.id} ({m.log_path}) ---")
        out.extend(text.splitlines()[-lines:])
    return "\n".join(out)


def crash_report(cluster: RaftkvCluster) -> str:
    """Members that died on their own (exit status other than the test's SIGKILL or a
    clean stop) or logged a traceback, with the exception lines of their logs; "" if none.
    """
    out = []
    for m in cluster.members.values():
        rc = m.proc.returncode if m.proc is not None else None
        if m.proc is not None and rc is None:
            rc = m.proc.poll()
        text = m.log_path.read_text(errors="replace") if m.log_path.exists() else ""
        if rc in (None, 0, -signal.SIGKILL) and "Traceback" not in text:
            continue
        errors = [ln.strip(" |") for ln in text.splitlines()
                  if re.match(r"\s*[|+ ]*\s*(File \"[^\"]*/nodes/|[\w.]+(Error|Exception)\b)",
                              ln)]
        out.append(f"{m.id}: exit status {rc}; {m.log_path}:\n  " + "\n  ".join(errors[-12:]))
    return "\n".join(out)


def assert_no_crash(cluster: RaftkvCluster) -> None:
    report = crash_report(cluster)
    assert not report, f"a member crashed:\n{report}"


@asynccontextmanager
async def running(base_dir: Path, size: int = 3, *, start: bool = True,
                  **kwargs: Any) -> AsyncIterator[RaftkvCluster]:
    """A started ``RaftkvCluster``; every member is stopped on the way out (SIGTERM,
    SIGKILL after a grace period). If the body succeeded, also asserts that no member
    crashed (died other than by the test's SIGKILL, or logged a traceback), that no
    member process is left and that no cluster port is still listening."""
    cluster = RaftkvCluster(base_dir, size, **kwargs)
    ok = False
    try:
        if start:
            cluster.start_all()
        yield cluster
        ok = True
        assert_no_crash(cluster)
    finally:
        with trio.CancelScope(shield=True):
            await cluster.stop_all()
        if not ok:  # shown by pytest for the failed test
            print(crash_report(cluster) or "(no member crashed)")
            print(log_tail(cluster))
    assert_cleaned_up(cluster)


def node_events(cluster: RaftkvCluster, mid: str, event: str | None = None
                ) -> list[dict[str, Any]]:
    """The structured log records of member ``mid`` (all its runs), optionally one event."""
    out = []
    for line in cluster.members[mid].log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # e.g. a traceback line
        if isinstance(rec, dict) and (event is None or rec.get("event") == event):
            out.append(rec)
    return out


def peer_frame(obj: Any) -> bytes:
    """One peer-transport frame: 4-byte big-endian length + JSON payload."""
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(payload)) + payload


# --------------------------------------------------------------------------- clients

_CONNECTION_ERRORS = (OSError, ConnectionLost, trio.BrokenResourceError,
                      trio.ClosedResourceError, trio.TooSlowError)


async def wait_leader(cluster: RaftkvCluster, timeout: float = 10.0,
                      exclude: Sequence[str] = ()) -> str:
    """Like ``cluster.wait_leader`` (a member that says it leads; the highest term wins),
    but immune to the lab bug (see :func:`request`) and failing at once, naming it, when
    a member crashes meanwhile."""
    with trio.move_on_after(timeout):
        while True:
            st = await statuses(cluster)
            leaders = [s for mid, s in st.items()
                       if s and s["role"] == "leader" and mid not in exclude]
            if leaders:
                return str(max(leaders, key=lambda s: s["term"])["node"])
            assert_no_crash(cluster)
            await trio.sleep(0.05)
    raise AssertionError(f"no leader (excluding {list(exclude)}) within {timeout}s\n"
                         f"{crash_report(cluster)}")


async def wait_settled(cluster: RaftkvCluster, timeout: float = 10.0) -> str:
    """Wait until every live member answers and names the same leader, which says it
    leads (members start at different speeds: a leader can exist before the last member
    listens or has heard from it). Returns the leader."""

    async def settled() -> bool:
        st = await statuses(cluster)
        live = [s for mid, s in st.items() if cluster.alive(mid)]
        if not live or any(s is None for s in live):
            return False
        leaders = {s["leader"] for s in live if s is not None}
        if len(leaders) != 1 or None in leaders:
            return False
        (leader,) = leaders
        lst = st.get(leader)
        return lst is not None and lst["role"] == "leader"

    await wait_for(cluster, settled, timeout, "every member to follow one leader")
    return await wait_leader(cluster, timeout)


async def statuses(cluster: RaftkvCluster) -> dict[str, dict[str, Any] | None]:
    """``cluster.statuses`` with the lab bug worked around (a member that drops the
    connection counts as not answering)."""
    out: dict[str, dict[str, Any] | None] = {}

    async def one(mid: str) -> None:
        out[mid] = await request(cluster, mid, {"op": "status"}, 0.5) if cluster.alive(
            mid) else None

    async with trio.open_nursery() as n:
        for mid in cluster.members:
            n.start_soon(one, mid)
    return out


def connection_failure(e: BaseException) -> bool:
    """``e`` says only that a connection failed or timed out (possibly as a group)."""
    if isinstance(e, BaseExceptionGroup):
        return all(connection_failure(x) for x in e.exceptions)
    return isinstance(e, _CONNECTION_ERRORS)


async def request(cluster: RaftkvCluster, mid: str, req: dict[str, Any],
                  timeout: float = 2.0) -> dict[str, Any] | None:
    """``cluster.request``: the answer, or None when the member could not answer (a
    connection lost mid-request included, see
    ``test_lab_request_reports_a_connection_lost_mid_request_as_none``)."""
    return await cluster.request(mid, req, timeout)


class Router:
    """Finds the leader for a test client: follows ``not-leader`` hints and moves on to
    another live member when one cannot be reached or knows no leader."""

    def __init__(self, cluster: RaftkvCluster) -> None:
        self.cluster = cluster
        self.guess: str | None = None
        self._next = 0

    def target(self) -> str:
        if self.guess is not None and self.cluster.alive(self.guess):
            return self.guess
        mids = [m for m in self.cluster.members if self.cluster.alive(m)]
        assert mids, "no live member"
        self._next += 1
        self.guess = mids[self._next % len(mids)]
        return self.guess

    def redirect(self, answer: dict[str, Any] | None, asked: str) -> None:
        """Update the guess after ``asked`` answered ``answer`` (None: unreachable)."""
        hint = answer.get("leader") if answer else None
        if isinstance(hint, str) and hint in self.cluster.members and hint != asked:
            self.guess = hint
        elif self.guess == asked:
            self.guess = None


async def call(cluster: RaftkvCluster, req: dict[str, Any], *, deadline: float = 10.0,
               timeout: float = 1.0, router: Router | None = None) -> dict[str, Any]:
    """Send ``req`` to the leader until an answer other than not-leader/unreachable/
    timeout arrives. Only for requests that are safe to repeat (reads, status, cas with
    a unique new value, writes of a fixed value, anything with client/seq)."""
    router = router or Router(cluster)
    last: dict[str, Any] | None = None
    with trio.fail_after(deadline):
        while True:
            mid = router.target()
            ans = await request(cluster, mid, req, timeout=timeout)
            retry = ans is None or ans.get("error") in ("not-leader", "timeout")
            if not retry:
                assert ans is not None
                router.guess = mid
                return ans
            last = ans
            router.redirect(ans, mid)
            if ans is None or ans.get("error") != "not-leader" or ans.get("leader") is None:
                await trio.sleep(0.05)
    raise AssertionError(f"unreachable (last answer {last})")  # pragma: no cover


async def read_many(cluster: RaftkvCluster, keys: Iterable[str], *,
                    deadline: float = 15.0) -> dict[str, Any]:
    """Linearizable reads of ``keys`` through the leader, pipelined on one connection;
    keys whose read hit a not-leader/timeout/lost connection are retried."""
    todo = list(keys)
    out: dict[str, Any] = {}
    router = Router(cluster)
    with trio.fail_after(deadline):
        while todo:
            mid = router.target()
            redirect: dict[str, Any] | None = None
            try:
                async with connect(*cluster.members[mid].client, timeout=1.0) as c:

                    async def one(key: str, c: Any = c) -> None:
                        nonlocal redirect
                        try:
                            ans = await c.call({"op": "read", "key": key}, timeout=3.0)
                        except (ConnectionLost, trio.TooSlowError):
                            return
                        if ans.get("ok"):
                            out[key] = ans["value"]
                        else:
                            assert ans.get("error") in ("not-leader", "timeout"), ans
                            redirect = ans

                    async with trio.open_nursery() as n:
                        for key in todo:
                            n.start_soon(one, key)
            except BaseException as e:
                if not connection_failure(e):
                    raise
                redirect = None
            todo = [k for k in todo if k not in out]
            if todo:
                router.redirect(redirect, mid)
                await trio.sleep(0.05)
    return out


async def write_all(cluster: RaftkvCluster, items: dict[str, Any], *, workers: int = 8,
                    deadline: float = 20.0) -> None:
    """Write every key=value (each must end acknowledged); ``workers`` at a time. A retry
    after an unknown outcome rewrites the same value, so it cannot change the result."""
    todo = list(items.items())
    with trio.fail_after(deadline):

        async def worker() -> None:
            router = Router(cluster)
            while todo:
                key, value = todo.pop()
                ans = await call(cluster, {"op": "write", "key": key, "value": value},
                                 router=router, deadline=deadline)
                while not ans.get("ok"):
                    # retry what may or certainly did not happen (a leader change), but
                    # a valid write must never be refused for any other reason
                    assert ans.get("maybe") or ans.get("error") == "overwritten", ans
                    ans = await call(cluster, {"op": "write", "key": key, "value": value},
                                     router=router, deadline=deadline)

        async with trio.open_nursery() as n:
            for _ in range(workers):
                n.start_soon(worker)


async def wait_for(cluster: RaftkvCluster, predicate: Callable[[], Awaitable[bool]],
                   timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; on timeout fail naming any member that crashed."""
    try:
        with trio.fail_after(timeout):
            while not await predicate():
                assert_no_crash(cluster)
                await trio.sleep(interval)
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                             f"{crash_report(cluster)}") from None
