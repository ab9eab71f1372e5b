"""``raftlab run --replay RUN_DIR``: the replay schedule built from a recorded
``schedule.jsonl``, the ``cut-links`` action it relies on, and bad input (one line, exit 2).

No processes here: the end-to-end replay of a real failing run is in ``test_shrink.py``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from cliout import cli, one_line

from lab import topology
from lab.history import History
from lab.nemesis import Nemesis
from lab.network import NetworkFault
from lab.replay import (
    faults_yaml,
    load_replay,
    read_resolved,
    read_schedule,
    replay_steps,
    schedule_origin,
    workload_yaml,
)
from lab.run import Experiment, RunOptions
from lab.scenario import (
    FaultScenario,
    ScenarioError,
    Step,
    check_members,
    json_schema,
    load_faults,
    load_workload,
)

ROOT = Path(__file__).resolve().parent.parent
N5 = ["n1", "n2", "n3", "n4", "n5"]


def links(cuts: Any) -> list[list[str]]:
    return [list(link) for link in sorted(cuts)]


def rec(t: float, phase: str, action: str, fault: int | None, nodes: list[str],
        **extra: Any) -> dict[str, Any]:
    return {"time": int(t * 1e9), "offset_s": round(t, 3), "phase": phase, "action": action,
            "fault": fault, "nodes": nodes, **extra}


HALVES = topology.components([["n1", "n4"], ["n2", "n3", "n5"]])  # a "random" split
#: A recorded schedule: origin 10 s, time limit 30 s, 5 nodes.
RECORDS = [
    rec(12.0, "start", "isolate", 1, ["n2"], links=links(topology.isolate("n2", N5))),
    rec(17.5, "end", "isolate", 1, ["n2"]),
    rec(20.0, "start", "partition-random-halves", 2, [], links=links(HALVES)),
    rec(24.25, "end", "partition-random-halves", 2, []),
    rec(25.0, "start", "latency", 3, ["n3"], params={"ms": 100, "jitter": 50},
        links=links(topology.isolate("n3", N5))),
    rec(26.0, "skipped", "kill", None, [], reason="target ('leader',) resolved to no node",
        step_line=9),
    rec(27.0, "start", "kill", 4, ["n1"], step_line=12),
    rec(30.0, "end", "kill", 4, ["n1"]),
    rec(31.0, "start", "heal", None, []),
    rec(32.0, "start", "cut", 5, ["n4"], params={"to": ["random"]},
        links=[["n4", "n5"]]),
    rec(33.0, "start", "datacenters", 6, [],
        params={"sites": [["n1", "n2"], ["n3", "n4"], ["n5"]], "ms": 30, "jitter": 50},
        links=[["n1", "n3"]]),
    rec(34.0, "start", "leader-send-only", 7, ["n5"],
        links=[["n1", "n5"], ["n2", "n5"]]),  # not what leader-send-only of n5 cuts today
    rec(36.0, "end", "cut", 5, ["n4"]),
    rec(40.001, "end", "latency", 3, ["n3"]),  # the final heal, after the time limit
    rec(40.002, "end", "datacenters", 6, []),
]


def numbered(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(k + 1, r) for k, r in enumerate(records)]


def test_replay_steps_time_nodes_links_and_parameters() -> None:
    steps = replay_steps(numbered(RECORDS), 10.0, 30.0, 5)
    assert [(s.at, s.action, s.target, s.duration, s.params) for s in steps] == [
        (2.0, "isolate", ("n2",), 5.5, {}),  # target leader then, n2 now
        (10.0, "cut-links", (), 4.25, {"links": links(HALVES)}),  # the same random split
        (15.0, "latency", ("n3",), None, {"ms": 100, "jitter": 50}),  # lasted to the end
        (16.0, "kill", ("none",), None, {}),  # skipped then, skipped again
        (17.0, "kill", ("n1",), 3.0, {}),
        (21.0, "heal", (), None, {}),
        (22.0, "cut-links", (), 4.0, {"links": [["n4", "n5"]]}),  # cut to a random node
        (23.0, "datacenters", (), None,
         {"sites": [["n1", "n2"], ["n3", "n4"], ["n5"]], "ms": 30, "jitter": 50}),
        (24.0, "cut-links", (), None, {"links": [["n1", "n5"], ["n2", "n5"]]}),
    ]
    # each step names the line of its start record
    assert [s.line for s in steps] == [1, 3, 5, 6, 7, 9, 10, 11, 12]


def test_replay_schedule_is_a_valid_fault_file(tmp_path: Path) -> None:
    steps = replay_steps(numbered(RECORDS), 10.0, 30.0, 5)
    path = tmp_path / "replay.yaml"
    path.write_text(faults_yaml("r", "a replay", steps, 30.0, "made by a test\nline two"))
    assert path.read_text().startswith("# made by a test\n# line two\n")
    f = load_faults(path)
    check_members(f, 5)
    assert f.time_limit == 30.0
    assert [dataclasses.replace(s, line=0) for s in f.schedule] == [
        dataclasses.replace(s, line=0) for s in steps]
    with pytest.raises(ScenarioError, match="n5, but the cluster has only 3"):
        check_members(f, 3)


def test_a_fault_still_active_at_the_end_has_no_duration() -> None:
    records = [rec(5.0, "start", "pause", 1, ["n1"]), rec(9.0, "start", "stop", 2, ["n2"]),
               rec(9.5, "start", "restart", 3, ["n3"]), rec(21.0, "end", "restart", 3, ["n3"]),
               rec(21.0, "end", "pause", 1, ["n1"])]  # no end for n2 at all: cut short
    steps = replay_steps(numbered(records), 1.0, 20.0, 3)
    assert [(s.action, s.at, s.duration) for s in steps] == [
        ("pause", 4.0, None), ("stop", 8.0, None), ("restart", 8.5, None)]


@pytest.mark.parametrize("record,message", [
    ({"phase": "begin", "action": "kill", "time": 1}, "unknown phase 'begin'"),
    ({"phase": "start", "action": "explode", "time": 1}, "unknown action 'explode'"),
    ({"phase": "start", "action": "kill", "nodes": ["n1"]}, "needs its offset"),
    ({"phase": "start", "action": "kill", "time": 1, "nodes": ["n9"]}, "members of the 3-node"),
    ({"phase": "end", "action": "kill", "time": 1, "fault": 7}, "end of fault 7"),
    ({"phase": "start", "action": "isolate", "time": 1, "fault": 2, "nodes": ["n1"],
      "links": [["n1", "n1"]]}, "a link must be a pair of two members"),
    ({"phase": "start", "action": "latency", "time": 1, "fault": 2, "nodes": ["n1"],
      "params": {"ms": "fast"}}, "params.ms of latency"),
])
def test_bad_records_name_the_line(record: dict[str, Any], message: str) -> None:
    good = rec(1.0, "start", "kill", 1, ["n1"])
    with pytest.raises(ScenarioError, match=message) as e:
        replay_steps([(1, good), (2, record)], 0.0, 10.0, 3, "x/schedule.jsonl")
    assert str(e.value).startswith("x/schedule.jsonl:2: ")


def test_schedule_file_torn_last_line_ignored_bad_middle_line_rejected(tmp_path: Path) -> None:
    p = tmp_path / "schedule.jsonl"
    good = json.dumps(rec(1.0, "start", "kill", 1, ["n1"]))
    p.write_text(good + "\n\n" + good[:20])  # the writer was killed mid-line
    assert [line for line, _ in read_schedule(p)] == [1]
    p.write_text(good + "\n" + "oops\n" + good + "\n")
    with pytest.raises(ScenarioError, match=r"schedule.jsonl:2: not valid JSON"):
        read_schedule(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(ScenarioError, match=r"schedule.jsonl:1: expected a JSON object"):
        read_schedule(p)


# --------------------------------------------------------------------------- run directories


def make_run(tmp_path: Path, records: list[dict[str, Any]], *, origin: float | None = 1.5,
             faults: str = "isolate-leader", nodes: int = 3, seed: int = 4,
             bugs: tuple[str, ...] = ("stale-read",), leader: str | None = "n2") -> Path:
    """A run directory as ``raftlab run`` lays it out (scenario.yaml by the real writer)."""
    w = load_workload(ROOT / "workloads" / "register.yaml")
    f = load_faults(ROOT / "faults" / f"{faults}.yaml")
    exp = Experiment(w, f, RunOptions(nodes=nodes, time_limit=15.0, seed=seed, bugs=bugs,
                                      concurrency=4, out=tmp_path / "reports",
                                      command=["raftlab", "run"]))
    exp.write_scenario()
    (exp.dir / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    results: dict[str, Any] = {"verdict": "invalid", "verdict_reason": "a test",
                               "initial_leader": leader,
                               "leaders": [{"term": 1, "leader": "n3"}]}
    if origin is not None:
        results["schedule_origin_s"] = origin
    (exp.dir / "results.json").write_text(json.dumps(results))
    return exp.dir


def test_load_replay_keeps_the_experiment_and_times_the_faults(tmp_path: Path) -> None:
    run = make_run(tmp_path, [rec(9.0, "start", "isolate", 1, ["n2"],
                                  links=links(topology.isolate("n2", ["n1", "n2", "n3"]))),
                              rec(14.0, "end", "isolate", 1, ["n2"])])
    plan = load_replay(run)
    r = plan.resolved
    assert (r.system, r.nodes, r.seed, r.time_limit, r.concurrency, r.rate, r.bugs) == (
        "raftkv", 3, 4, 15.0, 4, 100.0, ("stale-read",))
    assert dataclasses.replace(r.workload, path="") == dataclasses.replace(
        load_workload(ROOT / "workloads" / "register.yaml"), path="")
    assert (plan.origin_s, plan.origin_from) == (1.5, "results.json")
    assert plan.faults.name == "isolate-leader-replay" and plan.faults.random is None
    assert plan.faults.initial_leader == "n2"  # the leader when the clients started
    assert [(s.at, s.action, s.target, s.duration) for s in plan.faults.schedule] == [
        (7.5, "isolate", ("n2",), 5.0)]


def test_a_run_from_before_connections_existed_replays_with_a_connection_per_client(
        tmp_path: Path) -> None:
    run = make_run(tmp_path, [])
    scenario = yaml.safe_load((run / "scenario.yaml").read_text())
    assert scenario["workload"]["connections"] == "shared"  # written by every run now
    assert load_replay(run).resolved.workload.connections == "shared"
    del scenario["workload"]["connections"]
    (run / "scenario.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    assert load_replay(run).resolved.workload.connections == "per-client"


def test_a_replay_records_replay_of_and_is_itself_replayable(tmp_path: Path) -> None:
    run = make_run(tmp_path, [rec(9.0, "start", "partition-random-halves", 1, [],
                                  links=[["n1", "n3"], ["n3", "n1"]]),
                              rec(12.0, "end", "partition-random-halves", 1, [])])
    plan = load_replay(run)
    r = plan.resolved
    exp = Experiment(r.workload, plan.faults, RunOptions(
        nodes=r.nodes, time_limit=r.time_limit, seed=r.seed, concurrency=r.concurrency,
        rate=r.rate, bugs=r.bugs, out=tmp_path / "replays", replay_of=str(run)))
    exp.write_scenario()
    scenario = yaml.safe_load((exp.dir / "scenario.yaml").read_text())
    assert scenario["replay_of"] == str(run)
    assert scenario["faults"]["schedule"][0]["action"] == "cut-links"
    # the replay applies cut-links; its own schedule.jsonl says so, and replays the same
    (exp.dir / "schedule.jsonl").write_text(json.dumps(rec(
        9.1, "start", "cut-links", 1, [], params={"links": [["n1", "n3"], ["n3", "n1"]]},
        step_line=1, links=[["n1", "n3"], ["n3", "n1"]])) + "\n")
    (exp.dir / "results.json").write_text(json.dumps({"schedule_origin_s": 1.6}))
    again = load_replay(exp.dir)
    assert dataclasses.replace(again.resolved, faults_name="", faults_description="",
                               timed=()) == dataclasses.replace(
        r, faults_name="", faults_description="", timed=())
    assert [(s.at, s.action, s.params) for s in again.faults.schedule] == [
        (7.5, "cut-links", {"links": [["n1", "n3"], ["n3", "n1"]]})]
    assert again.faults.name == "isolate-leader-replay"


def test_origin_without_results_json(tmp_path: Path) -> None:
    """A run killed before results.json: the origin comes from the timed steps' offsets
    (each starts no earlier than its ``at``), else from the first client operation."""
    run = make_run(tmp_path, [], origin=None, faults="three-datacenters", nodes=5)
    resolved = read_resolved(run / "scenario.yaml")
    (line1, at1), (line2, at2) = resolved.timed
    (run / "schedule.jsonl").write_text(
        json.dumps(rec(at1 + 2.0, "start", "datacenters", 1, [], step_line=line1,
                       params={"sites": [["n1", "n2"], ["n3", "n4"], ["n5"]]})) + "\n"
        + json.dumps(rec(at2 + 2.1, "start", "isolate-site", 2, ["n1", "n2"],
                         step_line=line2, links=[["n1", "n3"]])) + "\n")
    origin, how = schedule_origin({}, resolved, read_schedule(run / "schedule.jsonl"))
    assert origin == pytest.approx(2.0) and "timed steps" in how
    assert [(s.action, s.at) for s in load_replay(run).faults.schedule] == [
        ("datacenters", at1), ("cut-links", pytest.approx(at2 + 0.1))]
    run = make_run(tmp_path, [rec(6.2, "start", "isolate", 1, ["n1"])], origin=None)
    (run / "history.jsonl").write_text(
        json.dumps({"index": 0, "time": 2_250_000_000, "process": 0, "type": "invoke",
                    "f": "read", "key": "k1", "value": None}) + "\n")
    assert load_replay(run).origin_s == 2.25


def test_initial_leader_of_a_replay(tmp_path: Path) -> None:
    """results.json's initial_leader, else the first leader the observer saw, else none
    (and never a node the cluster does not have)."""
    assert load_replay(make_run(tmp_path, [])).faults.initial_leader == "n2"
    assert load_replay(make_run(tmp_path, [], leader=None)).faults.initial_leader == "n3"
    run = make_run(tmp_path, [], leader="n7")
    assert load_replay(run).faults.initial_leader is None
    steps = replay_steps(numbered(RECORDS[:2]), 10.0, 30.0, 5)
    path = tmp_path / "f.yaml"
    path.write_text(faults_yaml("f", "d", steps, 30.0, initial_leader="n4"))
    assert load_faults(path).initial_leader == "n4"


def test_initial_leader_in_scenario_files(tmp_path: Path) -> None:
    p = tmp_path / "f.yaml"
    p.write_text("name: f\ndescription: d\ninitial_leader: n4\n")
    f = load_faults(p)
    assert (f.initial_leader, f.initial_leader_line) == ("n4", 3)
    check_members(f, 5)
    with pytest.raises(ScenarioError, match=r"f.yaml:3: initial_leader names n4, but the "
                                            r"cluster has only 3"):
        check_members(f, 3)
    p.write_text("name: f\ndescription: d\ninitial_leader: leader\n")
    with pytest.raises(ScenarioError, match=r"f.yaml:3: initial_leader must be a node id"):
        load_faults(p)
    props = json_schema()["$defs"]["faults"]["properties"]
    assert props["initial_leader"]["type"] == "string"


def test_workload_file_round_trip(tmp_path: Path) -> None:
    for path in sorted((ROOT / "workloads").glob("*.yaml")):
        w = load_workload(path)
        out = tmp_path / path.name
        out.write_text(workload_yaml(w, "a copy"))
        assert dataclasses.replace(load_workload(out), path=w.path) == w
        w = dataclasses.replace(w, connections="per-client")
        out.write_text(workload_yaml(w, "a copy"))
        assert dataclasses.replace(load_workload(out), path=w.path) == w


# --------------------------------------------------------------------------- cut-links


def test_latency_on_named_links_loads_and_replays(tmp_path: Path) -> None:
    p = tmp_path / "f.yaml"
    p.write_text("name: f\ndescription: d\nschedule:\n"
                 "  - {at: 1s, action: latency, links: [[n1, n3], [n2, n3]], ms: 900}\n")
    f = load_faults(p)
    assert (f.schedule[0].target, f.schedule[0].params) == (
        (), {"links": [["n1", "n3"], ["n2", "n3"]], "ms": 900})
    record = rec(12.0, "start", "latency", 1, [], params={"links": [["n1", "n3"]], "ms": 900},
                 links=[["n1", "n3"]])
    [step] = replay_steps(numbered([record]), 10.0, 30.0, 5)
    assert (step.at, step.action, step.target, step.params) == (
        2.0, "latency", (), {"links": [["n1", "n3"]], "ms": 900})


def test_cut_links_loads_and_checks_like_every_action(tmp_path: Path) -> None:
    def faults(step: str) -> Path:
        p = tmp_path / "f.yaml"
        p.write_text(textwrap.dedent("""\
            name: f
            description: d
            schedule:
            """) + textwrap.indent(textwrap.dedent(step), "  "))
        return p

    f = load_faults(faults("""\
        - at: 1s
          action: cut-links
          links: [[n1, n2], [n3, n1]]
          for: 2s
        """))
    assert f.schedule[0].params == {"links": [["n1", "n2"], ["n3", "n1"]]}
    assert f.schedule[0].target == () and f.schedule[0].duration == 2.0
    for step, line, message in [
        ("- {at: 1s, action: cut-links}", 4, "needs 'links'"),
        ("- {at: 1s, action: cut-links, links: []}", 4, "links names no link"),
        ("- {at: 1s, action: cut-links, links: [[n1]]}", 4, "a pair [from, to]"),
        ("- {at: 1s, action: cut-links, links: [[n1, n1]]}", 4, "two different nodes"),
        ("- {at: 1s, action: cut-links, links: [[n1, leader]]}", 4, "node ids like n1"),
        ("- {at: 1s, action: cut-links, links: [[n1, n2], [n1, n2]]}", 4, "listed twice"),
        ("- {at: 1s, action: cut-links, links: [[n1, n2]], target: n1}", 4, "takes no target"),
        ("- at: 1s\n  action: latency\n  links: [[n1, n2]]\n  target: n1\n", 7,
         "not both"),
        ("- at: 1s\n  action: latency\n  links: [[n1]]\n", 6, "a pair [from, to]"),
    ]:
        with pytest.raises(ScenarioError) as e:
            load_faults(faults(step))
        assert str(e.value).startswith(f"{tmp_path / 'f.yaml'}:{line}: "), (step, str(e.value))
        assert message in str(e.value)
    f = load_faults(faults("- {at: 1s, action: cut-links, links: [[n1, n7]]}"))
    with pytest.raises(ScenarioError, match=r":4: a link names n7, but the cluster has only 5"):
        check_members(f, 5)
    p = tmp_path / "r.yaml"
    p.write_text("name: r\ndescription: d\nrandom: {interval: [1s, 2s], duration: [1s, 2s], "
                 "actions: [cut-links]}\n")
    with pytest.raises(ScenarioError, match="needs parameters"):
        load_faults(p)


def test_schema_describes_cut_links() -> None:
    step = json_schema()["$defs"]["faults"]["properties"]["schedule"]["items"]
    assert "cut-links" in step["properties"]["action"]["enum"]
    link = step["properties"]["links"]["items"]
    assert (link["minItems"], link["maxItems"]) == (2, 2)


class FakeNet:
    def __init__(self) -> None:
        self.cuts: list[frozenset[tuple[str, str]]] = []

    async def partition(self, cuts: Any) -> NetworkFault:
        self.cuts.append(frozenset(cuts))
        return NetworkFault(f"f{len(self.cuts)}", "cut", tuple(sorted(cuts)))

    async def heal(self, *faults: Any) -> None:
        pass


class FakeCluster:
    members = {"n1": None, "n2": None, "n3": None}


def test_nemesis_cuts_exactly_the_listed_links(tmp_path: Path) -> None:
    net = FakeNet()
    history = History(tmp_path / "history.jsonl")
    scenario = FaultScenario("x", "x", "x", 10.0, (
        Step(3, 0.0, "cut-links", (), 0.5, {"links": [["n1", "n2"], ["n3", "n2"]]}),
        Step(4, 0.2, "cut-links", (), None, {"links": [["n1", "n9"]]}),  # not a member
    ))
    nemesis = Nemesis(scenario, FakeCluster(), net, history,  # type: ignore[arg-type]
                      tmp_path / "schedule.jsonl", random.Random(1), lambda: None)
    trio.run(nemesis.run, 1.0)
    nemesis.close()
    history.close()
    assert net.cuts == [frozenset({("n1", "n2"), ("n3", "n2")})]
    sched = [r for _, r in read_schedule(tmp_path / "schedule.jsonl")]
    assert [(r["phase"], r["action"], r.get("links")) for r in sched] == [
        ("start", "cut-links", [["n1", "n2"], ["n3", "n2"]]),
        ("skipped", "cut-links", None),
        ("end", "cut-links", None)]
    assert nemesis.origin_ns is not None


# --------------------------------------------------------------------------- the command


def test_replay_bad_input(tmp_path: Path, capsys: Any) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases: list[tuple[list[str], str]] = [
        ([str(tmp_path / "missing")], "not a run directory (no such directory)"),
        ([str(empty)], "not a run directory (no scenario.yaml or schedule.jsonl"),
    ]
    good = make_run(tmp_path, [rec(9.0, "start", "kill", 1, ["n1"])])
    for name, mutate, message in [
        ("nodes", lambda s: s.replace("nodes: 3", "nodes: many"),
         "scenario.yaml:6: nodes must be a whole number"),
        ("key", lambda s: s.replace("seed: 4\n", ""), "needs the key 'seed'"),
        ("workload", lambda s: s.replace("  keys: 5", "  keys: 0"),
         "workload.keys must be at least 1"),
        ("model", lambda s: s.replace("model: cas-register", "model: paxos"),
         "unknown workload.model 'paxos'"),
        ("yaml", lambda s: s + "\n  - [", "not valid YAML"),
        ("values", lambda s: s.replace("  value_max: 4", "  value_max: -1"),
         "workload.value_max is below workload.value_min"),
        ("list", lambda s: "- 1\n- 2\n", "must be a mapping"),
        ("bug", lambda s: s.replace("- stale-read", "- stale-reed"),
         "raftkv has no seeded bug 'stale-reed' (it has: stale-read, "),
    ]:
        bad = tmp_path / f"bad-{name}"
        bad.mkdir()
        (bad / "scenario.yaml").write_text(mutate((good / "scenario.yaml").read_text()))
        (bad / "schedule.jsonl").write_text((good / "schedule.jsonl").read_text())
        cases.append(([str(bad)], message))
    for name, text, message in [
        ("garbage", '{"phase": "start"\n{}\n', "schedule.jsonl:1: not valid JSON"),
        ("action", json.dumps(rec(1, "start", "explode", 1, [])) + "\n",
         "schedule.jsonl:1: unknown action 'explode'"),
        ("node", json.dumps(rec(1, "start", "kill", 1, ["n4"])) + "\n",
         "schedule.jsonl:1: nodes must list members of the 3-node cluster"),
    ]:
        bad = tmp_path / f"bad-{name}"
        bad.mkdir()
        (bad / "scenario.yaml").write_text((good / "scenario.yaml").read_text())
        (bad / "schedule.jsonl").write_text(text)
        cases.append(([str(bad)], message))
    for args, message in cases:
        code, out, err = cli(capsys, "run", "--replay", *args)
        assert code == 2, (args, out, err)
        line = one_line(err)
        assert line.startswith("raftlab: --replay: ") and message in line, (message, line)
        assert out == ""


@pytest.mark.parametrize("extra,named", [
    (["--seed", "0"], "--seed"), (["--bug", "stale-read"], "--bug"),
    (["--nodes", "5"], "--nodes"), (["--time-limit", "9"], "--time-limit"),
    (["workloads/set.yaml"], "WORKLOAD"), (["--concurrency", "1", "--rate", "3"],
                                           "--concurrency, --rate"),
    (["--system", "raftkv"], "--system"),
])
def test_replay_refuses_arguments_that_change_the_experiment(
        tmp_path: Path, capsys: Any, extra: list[str], named: str) -> None:
    run = make_run(tmp_path, [])
    code, out, err = cli(capsys, "run", "--replay", str(run), *extra)
    assert code == 2 and out == ""
    line = one_line(err)
    assert f"cannot be combined with {named} (only --out and --toxiproxy)" in line


def test_system_options_survive_a_replay_and_a_shrunk_file(tmp_path: Path) -> None:
    # figure-8 only works with raftkv's one-entry appends: its replay and any scenario
    # shrunk from it must keep them.
    run = make_run(tmp_path, [rec(2.0, "start", "kill", 1, ["n1"])], faults="figure-8",
                   nodes=5, bugs=("old-term-commit",), leader="n1")
    plan = load_replay(run)
    assert plan.resolved.system_options == {"raftkv": {"max_append_entries": 1}}
    assert plan.faults.system_options == {"raftkv": {"max_append_entries": 1}}
    out = tmp_path / "shrunk.yaml"
    out.write_text(faults_yaml("f", "d", plan.faults.schedule, 10.0,
                               system_options=plan.faults.system_options))
    assert load_faults(out).system_options == {"raftkv": {"max_append_entries": 1}}
