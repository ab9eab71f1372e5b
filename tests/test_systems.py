"""The systems registry (``lab/systems/``): every spec is complete, and a new system is
its spec and adapter, registered, with no other module touched."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lab import systems
from lab.systems import (
    SYSTEMS,
    Completion,
    LeaderClaim,
    System,
    SystemSpec,
    make_system,
    preflight,
    spec,
    timing_problem,
)
from lab.systems.types import HEARTBEATS_PER_ELECTION as HEARTBEATS
from lab.systems.types import member_logs

# --------------------------------------------------------------------------- the built-ins


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_every_spec_is_complete(name: str, tmp_path: Path) -> None:
    s = spec(name)
    assert s.name == name and callable(s.make) and callable(s.problem)
    election, heartbeat = s.default_timing
    assert 1 <= heartbeat < election
    assert timing_problem(s, None, None) is None  # a scenario without timing always runs
    # (raftkv's own defaults, 150 / 50 ms, are under the rule: its members draw their
    # election timeout from [T, 2T); the rule holds for the timings scenarios set)
    assert timing_problem(s, HEARTBEATS * heartbeat, None) is None
    for option, (low, high, what) in s.options.items():
        assert option.isidentifier() and 1 <= low <= high and what, option
    assert len(set(s.bugs)) == len(s.bugs) and all(b and b == b.strip() for b in s.bugs)
    assert isinstance(s.status_term_is_current, bool)
    for read in (s.votes, s.commit_conflicts, s.leader_claims, s.digests):
        assert read(tmp_path / "nodes") in (None, [])  # no logs: nothing, or cannot say


def test_raftkv_spec_says_what_the_members_do() -> None:
    from nodes.cli import parser
    from nodes.raft import CORE_BUGS

    s = spec("raftkv")
    assert set(s.bugs) == CORE_BUGS  # lab cannot import nodes: the list is written twice
    defaults = parser().parse_args(["--id", "n1", "--data-dir", "d", "--peer-listen",
                                    "127.0.0.1:1", "--client-listen", "127.0.0.1:2"])
    assert s.default_timing == (defaults.election_timeout_ms, defaults.heartbeat_ms)


def test_an_unknown_system_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown system 'zookeeper' \(expected one of: "
                                         r"raftkv, etcd"):
        spec("zookeeper")
    assert "raftkv, etcd" in str(preflight("zookeeper"))


def test_preflight_checks_bugs_then_timing_then_the_system() -> None:
    assert preflight("raftkv", "register", ["early-ack"], 300, 50) is None
    assert "raftkv has no seeded bug 'early-ack2'" in str(preflight("raftkv", None,
                                                                    ["early-ack2"]))
    assert "seeded bugs exist only in raftkv, not etcd" in str(preflight("etcd", None,
                                                                         ["early-ack"]))
    why = str(preflight("raftkv", None, (), 100, 50, timing_at="f.yaml:3"))
    assert why.startswith("f.yaml:3: timing: election timeout (100 ms) must be at least "
                          "5 x heartbeat (50 ms) on raftkv"), why
    assert "no client driver for model 'graph'" in str(preflight("etcd", "graph"))


# --------------------------------------------------------------------------- a new system


class ToyCluster:
    """Just enough of a cluster for the lab to make and name one."""

    def __init__(self, base_dir: Path, size: int, bugs: Sequence[str],
                 options: Mapping[str, Any]) -> None:
        self.base_dir, self.bugs, self.options = base_dir, list(bugs), dict(options)
        self.members = {f"n{k + 1}": None for k in range(size)}
        self.dial = None

    def version(self) -> str:
        return "toy 1.0"


class ToyClient:
    def __init__(self, addrs: dict[str, Any], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False,
                 home: str | None = None) -> None:
        self.addrs = addrs

    async def __aenter__(self) -> ToyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def invoke(self, model: str, f: str, key: Any, value: Any) -> Completion:
        return Completion("ok", value)

    async def write_initial(self, values: Mapping[str, Any]) -> bool:
        return True


def _make_toy(base_dir: Path, size: int, bugs: Sequence[str], options: Mapping[str, Any]
              ) -> System:
    return System(ToyCluster(base_dir, size, bugs, options), ToyClient)  # type: ignore[arg-type]


def _toy_leader_claims(nodes_dir: Path) -> list[LeaderClaim]:
    """The toy logs ``leader T`` lines."""
    return [LeaderClaim(member, int(line.split()[1]), n)
            for member, log in member_logs(nodes_dir)
            for n, line in enumerate(log.read_text().splitlines(), 1)
            if line.startswith("leader ")]


TOY = SystemSpec(
    name="toy",
    make=_make_toy,
    default_timing=(400, 80),
    problem=lambda model: None if model in (None, "cas-register") else f"toy: no {model}",
    options={"speed": (1, 10, "how fast the toy goes")},
    bugs=("slow-ack",),
    status_term_is_current=False,
    leader_claims=_toy_leader_claims,
)


@pytest.fixture
def toy() -> Iterator[SystemSpec]:
    systems.register(TOY)
    try:
        yield TOY
    finally:
        del systems.REGISTRY["toy"]


def test_a_registered_system_works_through_the_registry(toy: SystemSpec, tmp_path: Path
                                                        ) -> None:
    assert "toy" in SYSTEMS and spec("toy") is toy
    with pytest.raises(ValueError, match="registered already"):
        systems.register(toy)
    s = make_system("toy", tmp_path, 3, bugs=["slow-ack"],
                    options={"election_ms": 500, "speed": 3})
    assert isinstance(s.cluster, ToyCluster) and s.client is ToyClient
    assert s.cluster.bugs == ["slow-ack"] and s.cluster.options["speed"] == 3
    with pytest.raises(ValueError, match="toy has no seeded bug 'early-ack'"):
        make_system("toy", tmp_path, 3, bugs=["early-ack"])
    assert preflight("toy", "cas-register", ["slow-ack"]) is None
    assert "toy: no bank" in str(preflight("toy", "bank"))
    # the toy's default heartbeat (80 ms) is what half a timing is checked against
    assert "5 x heartbeat (80 ms) on toy" in str(preflight("toy", None, (), 300))
    assert "raftkv and toy, not etcd" in str(preflight("etcd", None, ["slow-ack"]))
    assert "slow-ack" in systems.all_bugs()


def test_a_registered_system_reaches_scenarios_suites_checks_and_reports(
        toy: SystemSpec, tmp_path: Path) -> None:
    from lab import suite
    from lab.report.index_page import Pair
    from lab.scenario import ScenarioError, load_faults
    from lab.verdict import decide

    faults = tmp_path / "toy.yaml"
    faults.write_text("name: toy\ndescription: its options\nsystem_options:\n"
                      "  toy: {speed: 3}\n")
    assert load_faults(faults).system_options == {"toy": {"speed": 3}}
    faults.write_text("name: toy\ndescription: its options\nsystem_options:\n"
                      "  toy: {speed: 11}\n")
    with pytest.raises(ScenarioError, match="speed"):
        load_faults(faults)

    s = tmp_path / "suite.yaml"
    s.write_text("name: t\ndescription: d\nsystems: [raftkv, toy]\nworkloads: [register]\n"
                 "faults: [none]\nbugs: [none, slow-ack, early-ack]\n")
    cells = suite.load_suite(s).cells
    assert sorted((c.system, c.bug or "") for c in cells) == [
        ("raftkv", ""), ("raftkv", "early-ack"), ("toy", ""), ("toy", "slow-ack")]

    run = tmp_path / "run"
    (run / "nodes" / "n1").mkdir(parents=True)
    (run / "nodes" / "n2").mkdir()
    (run / "scenario.yaml").write_text(json.dumps(
        {"system": "toy", "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (run / "history.jsonl").write_text("")
    (run / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    (run / "nodes" / "n1" / "node.log").write_text("leader 4\n")
    (run / "nodes" / "n2" / "node.log").write_text("follower 4\n")
    assert decide(run)["verdict"] != "invalid"
    (run / "nodes" / "n2" / "node.log").write_text("follower 4\nleader 4\n")
    r = decide(run)
    assert r["verdict"] == "invalid" and "two leaders in one term (term 4)" in r[
        "verdict_reason"], r

    assert Pair("register", "none", [], system="toy").variant == "toy"
    assert Pair("register", "none", [], system=systems.DEFAULT_SYSTEM).variant == ""
