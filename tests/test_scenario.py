"""Scenario files: every shipped file loads, and every kind of mistake is one clear
``FILE:LINE: message`` error (never a traceback)."""

from __future__ import annotations

import random
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.scenario import (
    MODELS,
    ScenarioError,
    check_members,
    json_schema,
    load_faults,
    load_workload,
    parse_duration,
)
from lab.workload import Generator

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize("path", sorted((ROOT / "workloads").glob("*.yaml")), ids=str)
def test_every_shipped_workload_loads(path: Path) -> None:
    w = load_workload(path)
    assert w.name == path.stem and w.description and sum(w.mix.values()) > 0


@pytest.mark.parametrize("path", sorted((ROOT / "faults").glob("*.yaml")), ids=str)
def test_every_shipped_fault_scenario_loads(path: Path) -> None:
    f = load_faults(path)
    assert f.name == path.stem and f.description
    if f.name != "none":
        assert f.schedule or f.random


def test_the_required_scenarios_are_shipped() -> None:
    names = {p.stem for p in (ROOT / "faults").glob("*.yaml")}
    assert {"none", "kill-leader", "kill-random", "pause-leader", "partition-halves",
            "isolate-leader", "asymmetric-leader", "majority-ring", "bridge",
            "three-datacenters", "slow-follower", "flapping-partitions", "mixed"} <= names
    assert {"register", "set", "counter", "bank", "list-append"} <= {
        p.stem for p in (ROOT / "workloads").glob("*.yaml")}


@pytest.mark.parametrize("text,expected", [
    ("10", 10.0), ("2.5", 2.5), ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0),
    ("1m30s", 90.0), ("1h", 3600.0), ("", None), ("10 s", None), ("-1s", None), ("s", None),
    ("1x", None), ("1s2", None), (True, None), (None, None), (float("nan"), None),
])
def test_parse_duration(text: object, expected: float | None) -> None:
    assert parse_duration(text) == expected


def _schema_takes_duration(text: str) -> bool:
    """Whether ``raftlab schema`` takes ``text`` as a duration (its string pattern)."""
    duration = json_schema()["$defs"]["faults"]["properties"]["time_limit"]
    (as_string,) = [d for d in duration["oneOf"] if d["type"] == "string"]
    return re.search(as_string["pattern"], text) is not None


@pytest.mark.parametrize("text", [
    "10", "2.5", "0", "500ms", "10s", "1m30s", "1h2m3s4ms", "0.5s", " 10s", "10\t", "",
    " ", "10 s", "1m 30s", "-1s", "s", "ms", "1x", "1s2", "1.s", ".5", "1e3", "1,5s", "10S",
    "10ss", "\u0661s", "inf", "nan",
])
def test_the_schema_takes_the_duration_strings_the_loader_takes(text: str) -> None:
    assert _schema_takes_duration(text) == (parse_duration(text) is not None), text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.mhsx -\t", max_size=8))
def test_the_schema_and_the_loader_agree_on_any_duration_string(text: str) -> None:
    assert _schema_takes_duration(text) == (parse_duration(text) is not None), text


def test_a_quoted_number_is_a_duration_for_the_loader_and_the_schema(tmp_path: Path) -> None:
    p = write(tmp_path, 'name: x\ndescription: y\ntime_limit: "10"\n')
    assert load_faults(p).time_limit == 10.0
    assert _schema_takes_duration("10")


FAULT_ERRORS = [
    ("""\
     name: x
     description: y
     schedule:
       - at: 5s
         action: partiton
         target: leader
     """, 5, "unknown action 'partiton' (expected one of: kill,"),
    ("""\
     name: x
     description: y
     schedule:
       - at: soon
         action: kill
     """, 4, "at: cannot parse duration 'soon'"),
    ("""\
     name: x
     description: y
     schedul: []
     """, 3, "unknown key 'schedul' in a fault scenario"),
    ("name: x\ndescription: y\nschedule: []\n", 3,
     "schedule is empty: add a step, or remove the 'schedule' key for a scenario without "
     "faults ('schedule: []' is allowed only with 'random')"),
    ("""\
     name: x
     description: y
     time_limit: 10s
     schedule:
       - at: 8s
         action: kill
         for: 5s
     """, 5, "step ends at 13s, past the time limit of 10s"),
    ("""\
     name: x
     description: y
     time_limit: 10s
     schedule:
       - at: 11s
         action: kill
     """, 5, "step starts at 11s, past the time limit of 10s"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: kill
         targte: leader
     """, 6, "unknown key 'targte' in a schedule step (expected one of: at, action, target, "
             "for, to, ms, jitter, links, sites, site, rate, average_size, size_variation, "
             "delay_us, timeout, point, skip)"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: kill
         target: leeder
     """, 6, "unknown target 'leeder'"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: latency
         rate: 5
     """, 6, "unknown key 'rate' for action 'latency'"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: heal
         for: 2s
     """, 6, "action 'heal' cannot be undone"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: latency
         ms: fast
     """, 6, "latency.ms must be a whole number"),
    ("""\
     name: x
     description: y
     random:
       interval: [5s]
       duration: [1s, 2s]
       actions: [kill]
     """, 4, "random.interval must be a list of two values"),
    ("""\
     name: x
     description: y
     random:
       interval: [5s, 1s]
       duration: [1s, 2s]
       actions: [kill]
     """, 4, "random.interval: high 1.0 is below low 5.0"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: kill
       - at: 1s
         action: [kill]
     """, 7, "action must be a single value"),
    ("""\
     name: x
     name: z
     description: y
     """, 2, "key 'name' appears twice"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: kill
         target: [n1, n2
     """, 7, "not valid YAML"),
    ("name: x\ndescription: y\nsystem_options: {etcd: {max_append_entries: 1}}\n", 3,
     "unknown option 'max_append_entries': etcd takes no system_options"),
    ("name: x\ndescription: y\nsystem_options:\n  raftkv: {max_append: 1}\n", 4,
     "unknown option 'max_append' for raftkv (expected one of: max_append_entries, "
     "digest_every, snapshot_entries)"),
    ("name: x\ndescription: y\nsystem_options:\n  raftkv: {max_append_entries: 0}\n", 4,
     "system_options.raftkv.max_append_entries must be from 1 to"),
    ("name: x\ndescription: y\nsystem_options:\n  raftkv: {max_append_entries: 2s}\n", 4,
     "must be a whole number"),
    ("name: x\ndescription: y\nsystem_options:\n  zookeeper: {}\n", 4,
     "unknown system in system_options 'zookeeper' (expected one of: raftkv, etcd)"),
    ("name: x\ndescription: y\nsystem_options: [raftkv]\n", 3,
     "system_options must be a mapping"),
    ("- just\n- a list\n", 1, "a fault scenario must be a mapping"),
    ("""\
     name: x
     description: y
     schedule:
       - at: 1s
         action: datacenters
         sites:
           - [n1, n2]
           - [n3, n2]
     """, 8, "sites must not share a member: n2 is listed in site 0 and site 1"),
    ("""\
     name: x
     description: y
     schedule:
       - {at: 1s, action: datacenters, sites: [[n1, n1], [n2]]}
     """, 4, "sites must not share a member: n1 is listed twice in one site"),
    ("""\
     name: x
     description: y
     schedule:
       - {at: 1s, action: kill}
       - {at: 2s, action: isolate-site, site: 0}
     """, 5, "isolate-site: site 0 does not exist: there is no datacenters step to define "
             "sites (add one to the schedule)"),
    ("""\
     name: x
     description: y
     schedule:
       - {at: 1s, action: datacenters, sites: [[n1, n2], [n3]]}
       - {at: 2s, action: isolate-site, site: 2}
     """, 5, "isolate-site: site 2 does not exist (the datacenters step at line 4 defines 2: "
             "0 to 1)"),
    ("", 1, "the file is empty"),
    ("name: x\n", 1, "a fault scenario needs the key 'description'"),
]


_COMPOSED = "name: x\ndescription: y\nrandom:\n  compose: true\n"
_RANGES = "  interval: [0.5, 2]\n  duration: [1, 3]\n  actions: [kill, cut-links]\n"
COMPOSE_ERRORS = [
    (_COMPOSED + "  unit: minutes\n" + _RANGES, 5,
     "unknown random.unit 'minutes' (expected one of: seconds, election, heartbeat)"),
    (_COMPOSED + "  max_active: 0\n" + _RANGES, 5, "random.max_active must be from 1 to 100"),
    (_COMPOSED + "  unsafe: 1.5\n" + _RANGES, 5,
     "random.unsafe is a chance: a number from 0 to 1, got 1.5"),
    (_COMPOSED + "  unsafe: -0.1\n" + _RANGES, 5, "random.unsafe is a chance"),
    (_COMPOSED + "  unsafe: often\n" + _RANGES, 5, "random.unsafe is a chance"),
    (_COMPOSED + "  compose: false\n" + _RANGES, 5, "key 'compose' appears twice"),
    ("name: x\ndescription: y\nrandom:\n  max_active: 3\n  interval: [1s, 2s]\n"
     "  duration: [1s, 2s]\n  actions: [kill]\n", 4,
     "random.max_active applies only to composed faults: add 'compose: true' or remove it"),
    ("name: x\ndescription: y\nrandom:\n  interval: [1s, 2s]\n  duration: [1s, 2s]\n"
     "  actions: [kill]\n  unsafe: 0.5\n", 7, "random.unsafe applies only to composed faults"),
    ("name: x\ndescription: y\nrandom:\n  compose: yes please\n" + _RANGES, 4,
     "random.compose must be true or false"),
    ("name: x\ndescription: y\nrandom:\n  interval: [1s, 2s]\n  duration: [1s, 2s]\n"
     "  actions: [kill, cut-links]\n", 6,
     "action 'cut-links' needs parameters: use it in 'schedule' (or in composed faults"),
    (_COMPOSED + "  interval: [0.5, 2]\n  duration: [1, 3]\n  actions: [kill, bridge]\n", 7,
     "action 'bridge' is not one of composed faults' actions (expected one of: kill, stop, "
     "pause, isolate, leader-send-only, leader-receive-only, cut-links, latency)"),
    (_COMPOSED + _RANGES + "  targets: [leader, minority]\n", 8,
     "random.targets: composed faults pick one member, so 'minority' is not allowed"),
    (_COMPOSED + "  unit: election\n  interval: [0.5, 2s]\n  duration: [1, 3]\n"
     "  actions: [kill]\n", 6,
     "random.interval counts election units (unit: election): write a plain number"),
    ("name: x\ndescription: y\ntime_limit: 10s\ntiming: {election: 1s}\nrandom:\n"
     "  unit: election\n  start: 12\n  interval: [1, 2]\n  duration: [1, 2]\n"
     "  actions: [kill]\n", 6, "random nemesis runs past the time limit of 10s"),
]


@pytest.mark.parametrize("text,line,message", COMPOSE_ERRORS)
def test_composed_random_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int,
                                                        message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        load_faults(p)
    assert (e.value.line, str(e.value)[:len(f"{p}:{line}: ")]) == (line, f"{p}:{line}: "), \
        str(e.value)
    assert message in e.value.message, str(e.value)


def test_a_composed_random_nemesis_loads_with_its_defaults(tmp_path: Path) -> None:
    r = load_faults(write(tmp_path, _COMPOSED + "  unit: election\n" + _RANGES)).random
    assert r is not None
    assert (r.compose, r.max_active, r.unit, r.unsafe) == (True, 2, "election", 0.1)
    assert (r.interval, r.duration) == ((0.5, 2.0), (1.0, 3.0))
    secs = r.in_seconds(0.2, 0.05)
    assert (secs.unit, secs.start) == ("seconds", 0.0)
    assert secs.interval == pytest.approx((0.1, 0.4))
    assert secs.duration == pytest.approx((0.2, 0.6))
    assert r.in_seconds(0.2, 0.05) == r.in_seconds(0.2, 0.07)  # heartbeats do not count
    plain = load_faults(write(tmp_path, "name: x\ndescription: y\nrandom:\n"
                                        "  interval: [1s, 2s]\n  duration: [500ms, 2s]\n"
                                        "  actions: [kill]\n")).random
    assert plain is not None
    assert (plain.compose, plain.max_active, plain.unit) == (False, 1, "seconds")
    assert plain.in_seconds(0.2, 0.05) == plain
    hb = load_faults(write(tmp_path, "name: x\ndescription: y\nrandom:\n  unit: heartbeat\n"
                                     "  start: 4\n  interval: [1, 2]\n  duration: [2, 4]\n"
                                     "  actions: [pause]\n")).random
    assert hb is not None and hb.in_seconds(0.3, 0.05).start == pytest.approx(0.2)


def test_json_schema_knows_the_composed_keys() -> None:
    props = json_schema()["$defs"]["faults"]["properties"]["random"]["properties"]
    assert props["unit"]["enum"] == ["seconds", "election", "heartbeat"]
    assert props["compose"] == {"type": "boolean"}
    assert (props["unsafe"]["minimum"], props["unsafe"]["maximum"]) == (0, 1)
    assert props["max_active"]["minimum"] == 1


@pytest.mark.parametrize("text,line,message", FAULT_ERRORS)
def test_fault_file_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int,
                                                   message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        load_faults(p, 60.0 if "time_limit" not in text else None)
    assert e.value.line == line, str(e.value)
    assert message in e.value.message, str(e.value)
    assert str(e.value).startswith(f"{p}:{line}: ")
    assert "\n" not in str(e.value)


WORKLOAD_ERRORS = [
    ("name: w\ndescription: d\nmodel: linearizable\n", 3, "unknown model 'linearizable'"),
    ("name: w\ndescription: d\nmodel: set\nmix: {read: 1}\n", 4,
     "operation 'read' is not part of the set model"),
    ("name: w\ndescription: d\nmodel: register\nkeys: 0\n", 4, "keys must be from 1 to"),
    ("name: w\ndescription: d\nmodel: register\nkeys: many\n", 4, "keys must be a whole number"),
    ("name: w\ndescription: d\nmodel: register\ntimeout: 0s\n", 4, "more than zero"),
    ("name: w\ndescription: d\nmodel: register\nvalues: {min: 5, max: 1}\n", 4,
     "values.max is below values.min"),
    ("name: w\ndescription: d\nmodel: register\nclientz: 3\n", 4, "unknown key 'clientz'"),
    ("name: w\ndescription: d\nmodel: register\nmix: {read: 0}\n", 4, "at least one operation"),
    ("name: w\ndescription: d\nmodel: register\nfinal: {reads: maybe}\n", 4,
     "final.reads must be true or false"),
    ("name: w\ndescription: d\nmodel: register\nconnections: per-clients\n", 4,
     "unknown connections 'per-clients' (expected one of: shared, per-client)"),
    ("name: w\ndescription: d\nmodel: register\nplacement: follower\n", 4,
     "unknown placement 'follower' (expected one of: mixed, leader, members)"),
    ("name: w\ndescription: d\nmodel: register\nreaders: 11\n", 4, "readers"),
    ("name: w\ndescription: d\nmodel: register\nreaders: some\n", 4, "readers"),
    ("name: w\ndescription: d\nmodel: set\nfinal:\n  settle: 2s\n  reads: false\n", 6,
     "final.reads: false cannot go with the set model: the set checker needs the final read "
     "(the only read of a set run), so the verdict would always be unknown"),
]


@pytest.mark.parametrize("text,line,message", WORKLOAD_ERRORS)
def test_workload_file_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int,
                                                      message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        load_workload(p)
    assert (e.value.line, message in e.value.message) == (line, True), str(e.value)


def _adds(text: str, tmp_path: Path) -> list[int]:
    import random

    w = load_workload(write(tmp_path, "name: w\ndescription: d\nmodel: counter\n"
                                      "mix: {add: 1}\n" + text))
    g = Generator(w, random.Random(3))
    return [g.next_op().value for _ in range(2000)]


def test_the_counter_draws_increments_from_values_min_to_max(tmp_path: Path) -> None:
    assert set(_adds("values: {min: 3, max: 5}\n", tmp_path)) == {3, 4, 5}
    assert set(_adds("values: {min: -2, max: 1}\n", tmp_path)) == {-2, -1, 0, 1}
    assert set(_adds("", tmp_path)) == set(range(1, 10))  # default: 1 to 9
    assert set(_adds("values: {min: 1, max: 5}\n", tmp_path)) == {1, 2, 3, 4, 5}


def test_a_set_workload_keeps_its_final_read(tmp_path: Path) -> None:
    w = load_workload(write(tmp_path, "name: w\ndescription: d\nmodel: set\n"
                                      "final: {reads: true}\n"))
    assert w.final_reads
    w = load_workload(write(tmp_path, "name: w\ndescription: d\nmodel: counter\n"
                                      "final: {reads: false}\n"))
    assert not w.final_reads  # other models may skip it
def test_a_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file"):
        load_faults(tmp_path / "nope.yaml")


def test_a_scenario_without_a_schedule_key_is_valid(tmp_path: Path) -> None:
    """What the empty-schedule message tells you to do works."""
    f = load_faults(write(tmp_path, "name: x\ndescription: y\n"))
    assert (f.schedule, f.random) == ((), None)


def test_run_time_limit_overrides_the_files_own(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        name: x
        description: y
        time_limit: 60s
        schedule:
          - at: 20s
            action: kill
            for: 5s
        """)
    assert load_faults(p).time_limit == 60.0
    with pytest.raises(ScenarioError, match="past the time limit of 10s"):
        load_faults(p, time_limit=10.0)


def test_resolved_steps_keep_their_parameters(tmp_path: Path) -> None:
    f = load_faults(ROOT / "faults" / "three-datacenters.yaml")
    dc, cut = f.schedule
    assert dc.action == "datacenters" and dc.params["sites"] == [["n1", "n2"], ["n3", "n4"],
                                                                  ["n5"]]
    assert (cut.action, cut.params, cut.duration) == ("isolate-site", {"site": 0}, 6.0)


def test_disjoint_sites_and_an_existing_site_load(tmp_path: Path) -> None:
    f = load_faults(write(tmp_path, """\
        name: x
        description: y
        schedule:
          - {at: 1s, action: datacenters, sites: [[n1, n2], [n3]]}
          - {at: 2s, action: isolate-site, site: 1}
        """))
    check_members(f, 3)
    assert f.schedule[1].params == {"site": 1}


def test_system_options_reach_only_their_system(tmp_path: Path) -> None:
    from lab.systems import make_system

    f = load_faults(ROOT / "faults" / "figure-8.yaml")
    assert f.system_options == {"raftkv": {"max_append_entries": 1}}
    raftkv = make_system("raftkv", tmp_path, 3, options=f.system_options["raftkv"]).cluster
    assert "--max-append-entries" in raftkv.extra_args  # type: ignore[attr-defined]
    assert f.system_options.get("etcd") is None  # etcd runs figure-8 without them


def test_json_schema_names_every_action_and_model() -> None:
    s = json_schema()
    opts = s["$defs"]["faults"]["properties"]["system_options"]["properties"]
    assert opts["raftkv"]["properties"]["max_append_entries"]["minimum"] == 1
    step = s["$defs"]["faults"]["properties"]["schedule"]["items"]
    assert "partition-halves" in step["properties"]["action"]["enum"]
    assert "list-append" in s["$defs"]["workload"]["properties"]["model"]["enum"]


yaml_scalars = st.one_of(st.integers(-5, 100), st.text(max_size=8), st.booleans(), st.none(),
                         st.floats(allow_nan=True), st.sampled_from(["10s", "5ms", "kill",
                                                                     "leader", "n1"]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["at", "action", "target", "for", "ms", "name",
                                     "description", "schedule", "random", "interval",
                                     "actions", "model", "keys", "mix"]), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(yaml_values)
def test_arbitrary_yaml_gives_a_scenario_or_one_clear_error(tmp_path_factory: object,
                                                            value: object) -> None:
    import yaml

    d = Path(__import__("tempfile").mkdtemp())
    p = d / "gen.yaml"
    p.write_text(yaml.safe_dump(value))
    for loader in (load_faults, load_workload):
        try:
            loader(p)
        except ScenarioError as e:
            assert str(e).startswith(f"{p}:") and "\n" not in str(e)


MEMBER_ERRORS = [
    # (scenario body after name/description, --nodes, line, message)
    ("schedule:\n  - {at: 1s, action: bridge}\n", 2, 4,
     "action 'bridge' needs at least 3 members (two sides and one member joining them), but "
     "the cluster has only 2 (run with --nodes 3 or more)"),
    ("schedule:\n  - {at: 1s, action: majority-ring, for: 2s}\n", 2, 4,
     "action 'majority-ring' needs at least 3 members (every member must hear a different "
     "majority), but the cluster has only 2 (run with --nodes 3 or more)"),
    ("schedule:\n  - {at: 1s, action: partition-halves}\n", 1, 4,
     "action 'partition-halves' needs at least 2 members (it acts on the links between "
     "members), but the cluster has only 1 (run with --nodes 2 or more)"),
    ("schedule:\n  - {at: 1s, action: kill}\n  - {at: 2s, action: isolate, target: n1}\n",
     1, 5, "action 'isolate' needs at least 2 members"),
    ("schedule:\n  - {at: 1s, action: latency, target: leader}\n", 1, 4,
     "action 'latency' needs at least 2 members"),
    ("random:\n  interval: [1s, 2s]\n  duration: [1s, 2s]\n  actions:\n    - kill\n"
     "    - bridge\n", 2, 8,
     "random action 'bridge' needs at least 3 members (two sides and one member joining "
     "them), but the cluster has only 2 (run with --nodes 3 or more)"),
    ("random: {interval: [1s, 2s], duration: [1s, 2s], actions: [pause, isolate]}\n", 1, 3,
     "random action 'isolate' needs at least 2 members"),
    ("schedule:\n  - {at: 1s, action: datacenters, sites: [[n1, n2], [n3, n4]]}\n", 3, 4,
     "a site names n4, but the cluster has only 3 members (n1..n3)"),
]


@pytest.mark.parametrize("body,nodes,line,message", MEMBER_ERRORS)
def test_actions_the_cluster_size_rules_out_are_refused_before_the_run(
        tmp_path: Path, body: str, nodes: int, line: int, message: str) -> None:
    p = write(tmp_path, "name: x\ndescription: y\n" + body)
    f = load_faults(p)  # valid on its own: only the cluster size rules it out
    with pytest.raises(ScenarioError) as e:
        check_members(f, nodes)
    assert str(e.value).startswith(f"{p}:{line}: "), str(e.value)
    assert message in e.value.message, str(e.value)
    check_members(f, 5)


@pytest.mark.parametrize("body,nodes", [
    ("schedule:\n  - {at: 1s, action: bridge}\n", 3),
    ("schedule:\n  - {at: 1s, action: majority-ring}\n", 3),
    ("schedule:\n  - {at: 1s, action: partition-halves}\n", 2),
    ("schedule:\n  - {at: 1s, action: cut-client, target: n1}\n", 1),
    ("schedule:\n  - {at: 1s, action: restart, target: all}\n", 1),
    ("random: {interval: [1s, 2s], duration: [1s, 2s], actions: [kill, pause, cut-client]}\n",
     1),
])
def test_actions_the_cluster_size_allows_pass(tmp_path: Path, body: str, nodes: int) -> None:
    check_members(load_faults(write(tmp_path, "name: x\ndescription: y\n" + body)), nodes)


def test_the_cli_refuses_a_bridge_on_two_nodes_with_exit_2(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    from lab.cli import main

    p = write(tmp_path, """\
        name: x
        description: y
        schedule:
          - at: 1s
            action: bridge
            for: 2s
        """)
    code = main(["run", str(ROOT / "workloads" / "register.yaml"), str(p), "--nodes", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"raftlab: {p}:4: action 'bridge' needs at least 3 members (two sides and one member "
        "joining them), but the cluster has only 2 (run with --nodes 3 or more)"]


def test_steps_must_fit_the_default_time_limit_too(tmp_path: Path) -> None:
    """Without --time-limit or the file's own time_limit a run lasts
    DEFAULT_TIME_LIMIT: a step past it would never fire, so it is bad input."""
    from lab.scenario import DEFAULT_TIME_LIMIT

    p = tmp_path / "late.yaml"
    p.write_text("name: late\ndescription: d\nschedule:\n  - at: 90s\n    action: kill\n"
                 "    target: leader\n")
    with pytest.raises(ScenarioError) as e:
        load_faults(p)
    assert str(e.value) == (f"{p}:4: step starts at 90s, past the time limit of "
                            f"{DEFAULT_TIME_LIMIT:g}s")
    assert load_faults(p, time_limit=100).schedule[0].at == 90


def test_placement_binds_workers_to_members_round_robin() -> None:
    """``members``: every worker bound, round robin; ``mixed``: every third worker bound
    (the bound ones spread round robin too), the rest follow the leader; ``leader``: none
    bound. A workload file says which; the default is ``mixed``."""
    from lab.scenario import home_member

    m = ["n1", "n2", "n3"]
    assert [home_member("members", i, m) for i in range(5)] == ["n1", "n2", "n3", "n1", "n2"]
    assert [home_member("leader", i, m) for i in range(5)] == [None] * 5
    mixed = [home_member("mixed", i, m) for i in range(12)]
    assert mixed == [None, None, "n1", None, None, "n2", None, None, "n3", None, None, "n1"]
    assert home_member("members", 3, []) is None


def test_a_workload_says_its_readers(tmp_path: Path) -> None:
    base = "name: w\ndescription: d\nmodel: register\n"
    assert load_workload(write(tmp_path, base)).readers == 1
    assert load_workload(write(tmp_path, base + "readers: 0\n")).readers == 0
    assert load_workload(write(tmp_path, base + "readers: 3\n")).readers == 3


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_reader_only_reads(tmp_path: Path, model: str) -> None:
    """Whatever the mix, a reader's operations are the model's read: a key, the whole
    set, counter or bank, or a list-append transaction of reads of distinct keys."""
    w = load_workload(write(tmp_path, f"name: w\ndescription: d\nmodel: {model}\nkeys: 3\n"
                                      "txn: {min_ops: 1, max_ops: 5}\n"))
    g = Generator(w, random.Random(5))
    for _ in range(200):
        op = g.next_read()
        if model in ("register", "cas-register"):
            assert op.f == "read" and op.key in g.keys and op.value is None
        elif model == "list-append":
            keys = [k for _, k, _ in op.value]
            assert op.f == "txn" and all(m[0] == "r" and m[2] is None for m in op.value)
            assert 1 <= len(keys) <= 3 and len(set(keys)) == len(keys) <= len(g.keys)
        else:
            assert op == ("read", None, None)


def test_a_workload_says_its_placement(tmp_path: Path) -> None:
    base = "name: w\ndescription: d\nmodel: register\n"
    assert load_workload(write(tmp_path, base)).placement == "mixed"
    assert load_workload(write(tmp_path, base + "placement: members\n")).placement == "members"
