"""The nemesis's process actions against a fake cluster (no processes): ``restart`` stops
a running member and starts it again; ``start`` only starts members that are down."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import trio

from lab.history import History
from lab.nemesis import Nemesis
from lab.scenario import FaultScenario


class FakeCluster:
    """Members that are up or down; every call is logged as (call, member)."""

    def __init__(self, *mids: str) -> None:
        self.members = {m: None for m in mids}
        self.up = set(mids)
        self.calls: list[tuple[str, str]] = []

    async def kill(self, mid: str) -> None:
        self.calls.append(("kill", mid))
        self.up.discard(mid)

    async def stop(self, mid: str, grace: float = 5.0) -> None:
        self.calls.append(("stop", mid))
        self.up.discard(mid)

    def start(self, mid: str) -> None:
        self.calls.append(("start", mid))
        self.up.add(mid)

    def signal(self, mid: str, sig: int) -> None:
        self.calls.append((signal.Signals(sig).name, mid))

    def alive(self, mid: str) -> bool:
        return mid in self.up


def nemesis(tmp_path: Path, cluster: FakeCluster) -> Nemesis:
    history = History(tmp_path / "history.jsonl")
    return Nemesis(FaultScenario("x", "x", "x"), cluster, None,  # type: ignore[arg-type]
                   history, tmp_path / "schedule.jsonl", random.Random(1), lambda: "n1")


def apply(n: Nemesis, action: str, *target: str) -> Any:
    async def go() -> Any:
        return await n.apply(action, target, {})

    return trio.run(go)


def test_restart_stops_a_running_member_then_starts_it(tmp_path: Path) -> None:
    c = FakeCluster("n1", "n2", "n3")
    n = nemesis(tmp_path, c)
    fault = apply(n, "restart", "leader", "n3")
    assert c.calls == [("stop", "n1"), ("stop", "n3"), ("start", "n1"), ("start", "n3")]
    assert c.up == {"n1", "n2", "n3"} and not n.down
    assert fault is not None and fault.nodes == ("n1", "n3")
    rec = n.applied[-1]
    assert (rec["phase"], rec["action"], rec["nodes"]) == ("start", "restart", ["n1", "n3"])


def test_restart_starts_a_member_that_is_down_without_stopping_it(tmp_path: Path) -> None:
    c = FakeCluster("n1", "n2", "n3")
    n = nemesis(tmp_path, c)
    apply(n, "kill", "n2")
    assert n.down == {"n2"}
    c.calls.clear()
    apply(n, "restart", "n2")
    assert c.calls == [("start", "n2")]
    assert c.up == {"n1", "n2", "n3"} and not n.down


def test_restart_of_a_paused_member_leaves_it_running_unpaused(tmp_path: Path) -> None:
    c = FakeCluster("n1", "n2", "n3")
    n = nemesis(tmp_path, c)
    apply(n, "pause", "n2")
    assert n.paused == {"n2"}
    apply(n, "restart", "n2")
    assert not n.paused and "n2" in c.up
    assert c.calls[-2:] == [("stop", "n2"), ("start", "n2")]


def test_start_leaves_a_running_member_alone(tmp_path: Path) -> None:
    c = FakeCluster("n1", "n2", "n3")
    n = nemesis(tmp_path, c)
    apply(n, "start", "n1", "n2")
    assert c.calls == []
    apply(n, "stop", "n2")
    c.calls.clear()
    apply(n, "start", "n1", "n2")
    assert c.calls == [("start", "n2")] and not n.down
