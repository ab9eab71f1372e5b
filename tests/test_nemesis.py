"""The nemesis's process actions against a fake cluster (no processes): ``restart`` stops
a running member and starts it again; ``start`` only starts members that are down."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import trio
import trio.testing

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


# --------------------------------------------------------------------------- composed


class FakeNetwork:
    """Network faults recorded, nothing installed."""

    def __init__(self) -> None:
        self.ids = 0
        self.active: dict[str, Any] = {}

    def _fault(self, kind: str, links: Any, **params: Any) -> Any:
        from lab.network import NetworkFault

        self.ids += 1
        f = NetworkFault(f"f{self.ids}", kind, tuple(sorted(links)), params=params)
        self.active[f.id] = f
        return f

    async def partition(self, cuts: Any) -> Any:
        return self._fault("cut", cuts)

    async def latency(self, links: Any, ms: int, jitter: int = 0) -> Any:
        return self._fault("latency", links, ms=ms, jitter=jitter)

    async def heal(self, *faults: Any) -> None:
        for f in faults:
            self.active.pop(f.id, None)

    async def heal_all(self) -> None:
        self.active.clear()


def composed_run(tmp_path: Path, seed: int, leader: str | None = "n1",
                 **random_kw: Any) -> tuple[Nemesis, FakeCluster, FakeNetwork]:
    from lab.scenario import COMPOSE_ACTIONS, RandomNemesis

    kw: dict[str, Any] = {"line": 1, "interval": (0.3, 2.0), "duration": (1.0, 6.0),
                          "actions": COMPOSE_ACTIONS, "targets": ("leader", "follower",
                                                                  "random"),
                          "start": 2.0, "compose": True, "max_active": 3,
                          "unit": "election", **random_kw}
    scenario = FaultScenario("x", "x", "x", random=RandomNemesis(**kw))
    c = FakeCluster("n1", "n2", "n3", "n4", "n5")
    net = FakeNetwork()
    n = Nemesis(scenario, c, net, History(tmp_path / "history.jsonl"),  # type: ignore[arg-type]
                tmp_path / "schedule.jsonl", random.Random(seed), lambda: leader,
                timing=(0.15, 0.05))
    majority_held: list[bool] = []

    async def go() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(n.run, 30.0)
            while True:  # sample the state as the faults come and go
                await trio.sleep(0.01)
                running = {m for m in c.members if c.alive(m)} - n.paused
                majority_held.append(len(running) >= 3)
                if trio.current_time() > 31:
                    break
        await n.heal_everything()

    trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    assert all(majority_held) and len(majority_held) > 1000
    return n, c, net


def test_composed_faults_overlap_and_every_one_is_explicit(tmp_path: Path) -> None:
    from lab.scenario import COMPOSE_ACTIONS

    n, c, net = composed_run(tmp_path, 1)
    starts = [r for r in n.applied if r["phase"] == "start"]
    assert len(starts) > 50, len(starts)  # dense: 30 s of 150 ms elections
    assert {r["action"] for r in starts} == set(COMPOSE_ACTIONS)
    assert n.random_info is not None and n.random_info["interval_s"] == [0.045, 0.3]
    active, most = set(), 0
    for r in n.applied:
        if r["phase"] == "start":
            active.add(r["fault"])
        elif r["phase"] == "end":
            active.discard(r["fault"])
        most = max(most, len(active))
        if r["phase"] != "start":
            continue
        assert r["compose"]["target"] in ("leader", "follower", "random"), r
        if r["action"] in ("cut-links", "latency"):  # explicit links: a replay keeps them
            assert r["nodes"] == [] and r["params"]["links"], r
            assert r["links"] == r["params"]["links"], r
        else:
            assert len(r["nodes"]) == 1, r
        if r["action"] == "latency" and r["compose"]["shape"] == "everywhere":
            assert 25 <= r["params"]["ms"] <= 150 // 2, r  # half a heartbeat to half a timeout
        elif r["action"] == "latency":
            assert 50 <= r["params"]["ms"] <= 3 * 150, r  # up to three election timeouts
    assert most == 3  # up to max_active at once, never more
    assert not net.active and c.up == set(c.members) and not n.paused and not n.down


def test_composed_records_replay_as_the_same_faults(tmp_path: Path) -> None:
    from lab.replay import read_schedule, replay_steps

    n, _, _ = composed_run(tmp_path, 2)
    n.close()
    records = read_schedule(tmp_path / "schedule.jsonl")
    steps = replay_steps(records, 0.0, 60.0, 5)
    by_line = {s.line: s for s in steps}
    starts = [(line, r) for line, r in records if r["phase"] == "start"]
    assert starts
    for line, r in starts:
        step = by_line[line]
        if r["action"] in ("cut-links", "latency"):
            assert step.action == r["action"] and step.target == ()
            assert step.params["links"] == r["params"]["links"]
            if r["action"] == "latency":
                assert (step.params["ms"], step.params["jitter"]) == (
                    r["params"]["ms"], r["params"]["jitter"])
        else:
            assert (step.action, list(step.target)) == (r["action"], r["nodes"]), (step, r)
        assert step.duration is not None


def test_composed_leader_target_without_a_leader_picks_a_member(tmp_path: Path) -> None:
    n, _, _ = composed_run(tmp_path, 3, leader=None, targets=("leader",))
    starts = [r for r in n.applied if r["phase"] == "start"]
    member_faults = [r for r in starts if r["compose"]["shape"] == "member"]
    assert member_faults and all(r["compose"]["fallback"] for r in member_faults)


def test_composed_draws_are_seeded(tmp_path: Path) -> None:
    def starts(seed: int, d: Path) -> list[tuple[str, Any]]:
        d.mkdir()
        n, _, _ = composed_run(d, seed)
        # the faults started, in order (a round in the very last moments may see faults
        # cut short by the end of the run end before or after it, in any order)
        return [(r["action"], r["nodes"], r.get("params")) for r in n.applied
                if r["phase"] == "start"]

    assert starts(4, tmp_path / "a") == starts(4, tmp_path / "b")
    assert starts(4, tmp_path / "a2") != starts(5, tmp_path / "c")


def test_the_plain_random_nemesis_draws_as_it_always_did(tmp_path: Path) -> None:
    from lab.scenario import RandomNemesis

    scenario = FaultScenario("x", "x", "x", random=RandomNemesis(
        1, (0.5, 1.0), (0.5, 1.0), ("kill", "pause", "isolate"), ("random", "leader")))
    c = FakeCluster("n1", "n2", "n3")
    n = Nemesis(scenario, c, FakeNetwork(), History(tmp_path / "h.jsonl"),  # type: ignore[arg-type]
                tmp_path / "s.jsonl", random.Random(9), lambda: "n1")
    trio.run(n.run, 10.0, clock=trio.testing.MockClock(autojump_threshold=0))
    # the draws of the loop before composed faults existed, for this seed
    rng = random.Random(9)
    want = []
    t = 0.0
    while True:
        t += rng.uniform(0.5, 1.0)
        duration = rng.uniform(0.5, 1.0)
        if t + duration > 10.0:
            break
        action, target = rng.choice(("kill", "pause", "isolate")), rng.choice(("random",
                                                                               "leader"))
        if target == "random":
            rng.choice(["n1", "n2", "n3"])
        want.append(action)
        t += duration
    assert [r["action"] for r in n.applied if r["phase"] == "start"] == want
