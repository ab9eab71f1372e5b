"""The ``crash-at`` fault action (``docs/writing-faults.md``): its validation (a point the
system has, exit 2 in one line otherwise), its schema, how the nemesis arms, follows,
restarts or disarms and records it, how its replay keeps it, and how an exit at an armed
crash point is told from a crash. A real run where points fire: ``tests/test_run_e2e.py``
(the shipped ``faults/crash-points.yaml``); the points themselves:
``tests/test_crash_points.py``."""

from __future__ import annotations

import random
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cliout import cli, one_line
from test_member_exits import SLEEP, Member, Scripted

from lab import procs
from lab.history import History
from lab.nemesis import Nemesis
from lab.replay import faults_yaml, read_schedule, replay_steps
from lab.rundata import faults_from
from lab.scenario import (
    FaultScenario,
    RandomNemesis,
    ScenarioError,
    Step,
    check_system,
    json_schema,
    load_faults,
)
from lab.systems.raftkv import CRASH_POINTS
from lab.systems.raftkv.cluster import CRASH_POINT_EXIT, RaftkvCluster
from nodes import crashpoints

ROOT = Path(__file__).resolve().parent.parent
HEAD = "name: x\ndescription: y\ntime_limit: 30s\n"


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "f.yaml"
    p.write_text(HEAD + textwrap.dedent(body))
    return p


def test_the_lab_knows_raftkvs_points_and_exit_code() -> None:
    assert CRASH_POINTS == crashpoints.POINTS
    assert CRASH_POINT_EXIT == crashpoints.CRASH_POINT_EXIT


def test_a_crash_at_step_loads_with_its_point_skip_and_downtime(tmp_path: Path) -> None:
    f = load_faults(write(tmp_path, """\
        schedule:
          - {at: 3s, action: crash-at, target: leader, point: wal-after-write, skip: 2, for: 2s}
        """))
    [step] = f.schedule
    assert (step.action, step.target, step.duration, step.params) == (
        "crash-at", ("leader",), 2.0, {"point": "wal-after-write", "skip": 2})
    check_system(f, "raftkv")


@pytest.mark.parametrize(("body", "line", "message"), [
    ("schedule:\n  - {at: 3s, action: crash-at, target: leader}\n", 5,
     "action 'crash-at' needs 'point' (the crash point to arm, one of: wal-before-write"),
    ("schedule:\n  - {at: 3s, action: crash-at, point: wal-sideways}\n", 5,
     "unknown crash point 'wal-sideways' (expected one of: wal-before-write"),
    ("schedule:\n  - {at: 3s, action: crash-at, point: before-apply, skip: -1}\n", 5,
     "crash-at.skip must be at least 0"),
    ("schedule:\n  - {at: 3s, action: kill, point: before-apply}\n", 5,
     "unknown key 'point' for action 'kill'"),
    ("random:\n  interval: [1s, 2s]\n  duration: [1s, 2s]\n  compose: true\n"
     "  actions: [crash-at]\n", 8, "action 'crash-at' is not one of composed faults'"),
])
def test_crash_at_mistakes_name_the_file_and_line(tmp_path: Path, body: str, line: int,
                                                  message: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ScenarioError) as e:
        load_faults(path)
    assert (e.value.line, e.value.message[:len(message)]) == (line, message), str(e.value)


def test_crash_at_on_a_system_without_crash_points_is_refused_at_its_line(
        tmp_path: Path) -> None:
    f = load_faults(write(tmp_path, """\
        random:
          interval: [1s, 2s]
          duration: [1s, 2s]
          actions: [kill, crash-at]
        """))
    check_system(f, "raftkv")  # a random crash-at draws one of the system's points
    with pytest.raises(ScenarioError, match=r"f.yaml:7: action 'crash-at' needs a system "
                                            r"with crash points, and etcd has none"):
        check_system(f, "etcd")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_and_run_refuse_crash_at_for_etcd_in_one_line_exit_2(
        capsys: Any, command: str) -> None:
    shipped = str(ROOT / "faults" / "crash-points.yaml")
    argv = ["validate", "--system", "etcd", shipped] if command == "validate" else \
        ["run", "--system", "etcd", "register", shipped]
    code, _, err = cli(capsys, *argv)
    assert code == 2
    assert "action 'crash-at' needs a system with crash points, and etcd has none" \
        in one_line(err), err
    assert cli(capsys, "validate", shipped)[0] == 0  # raftkv: fine


def test_the_schema_knows_crash_at_and_requires_its_point() -> None:
    step = json_schema()["$defs"]["faults"]["properties"]["schedule"]["items"]
    assert "crash-at" in step["properties"]["action"]["enum"]
    assert step["properties"]["point"] == {"enum": list(CRASH_POINTS)}
    assert step["properties"]["skip"] == {"type": "integer", "minimum": 0}
    assert (step["if"], step["then"]) == ({"properties": {"action": {"const": "crash-at"}}},
                                          {"required": ["point"]})
    actions = json_schema()["$defs"]["faults"]["properties"]["random"]["properties"]["actions"]
    assert "crash-at" in actions["items"]["enum"]


class NoNetwork:
    async def heal_all(self) -> None:
        return None


class CrashableCluster:
    """Members that are up or down, each start a new process (``(mid, life)``); an armed
    process dies with the crash-point code when the test says it reached its point
    (``reach``); every call is logged with its (virtual) time since ``t0``. A member in
    ``silent`` answers no crash-at request: an arming still takes effect (as in a member
    that answers too late), a disarm does not (as in one that never got it)."""

    def __init__(self, *mids: str) -> None:
        self.members = {m: None for m in mids}
        self.codes: dict[str, list[int | None]] = {m: [None] for m in mids}
        self.armed: dict[tuple[str, int], str | None] = {}
        self.silent: set[str] = set()
        self.calls: list[tuple[str, str, Any, float]] = []
        self.t0 = 0.0

    @property
    def up(self) -> set[str]:
        return {m for m in self.members if self.alive(m)}

    def _log(self, call: str, mid: str, arg: Any) -> None:
        self.calls.append((call, mid, arg, round(trio.current_time() - self.t0, 3)))

    def process(self, mid: str) -> tuple[str, int]:
        return mid, len(self.codes[mid]) - 1

    def exit_code(self, process: tuple[str, int]) -> int | None:
        mid, life = process
        return self.codes[mid][life]

    def exited_as_expected(self, process: tuple[str, int]) -> bool:
        return process in self.armed and self.exit_code(process) == CRASH_POINT_EXIT

    def _end(self, mid: str, code: int) -> None:
        self.codes[mid][-1] = code

    async def crash_at(self, mid: str, point: str | None, skip: int = 0) -> bool | None:
        self._log("crash_at", mid, point)
        if not self.alive(mid):
            return False
        if point is not None or (self.process(mid) in self.armed and mid not in self.silent):
            self.armed[self.process(mid)] = point
        return None if mid in self.silent else True

    def reach(self, mid: str) -> None:
        if self.alive(mid) and self.armed.get(self.process(mid)):
            self._log("died", mid, self.armed[self.process(mid)])
            self._end(mid, CRASH_POINT_EXIT)

    async def kill(self, mid: str) -> None:
        self._log("kill", mid, None)
        if self.alive(mid):
            self._end(mid, -9)

    def signal(self, mid: str, sig: int) -> None:
        """(No test here pauses a member: crash-at never signals one.)"""

    def start(self, mid: str) -> None:
        self._log("start", mid, None)
        self.codes[mid].append(None)

    def alive(self, mid: str) -> bool:
        return self.codes[mid][-1] is None


def crash_run(tmp_path: Path, cluster: CrashableCluster, steps: tuple[Step, ...],
              reach: dict[str, float], limit: float = 20.0) -> list[dict[str, Any]]:
    """Run ``steps`` with the nemesis in virtual time; member ``m`` reaches its armed
    point ``reach[m]`` seconds in. The schedule records, in order."""
    history = History(tmp_path / "history.jsonl")
    scenario = FaultScenario("x", "x", "x", limit, steps)
    n = Nemesis(scenario, cluster, NoNetwork(), history,  # type: ignore[arg-type]
                tmp_path / "schedule.jsonl", random.Random(1), lambda: "n1")

    async def main() -> None:
        cluster.t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(n.run, limit)
            for mid, t in reach.items():
                async def later(mid: str = mid, t: float = t) -> None:
                    await trio.sleep(t)
                    cluster.reach(mid)
                nursery.start_soon(later)
        await trio.sleep_until(cluster.t0 + limit)  # as a run heals once its time is up
        await n.heal_everything()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    n.close()
    history.close()
    return [r for _, r in read_schedule(tmp_path / "schedule.jsonl")]


def test_a_fired_crash_point_is_recorded_and_its_member_restarted_after_for(
        tmp_path: Path) -> None:
    c = CrashableCluster("n1", "n2", "n3")
    step = Step(7, 2.0, "crash-at", ("leader",), 3.0, {"point": "wal-after-write"})
    sched = crash_run(tmp_path, c, (step,), {"n1": 2.5})
    start, end = sched
    assert (start["phase"], start["action"], start["nodes"], start["params"],
            start["for_s"], start["step_line"]) == (
        "start", "crash-at", ["n1"], {"point": "wal-after-write"}, 3.0, 7)
    assert (end["phase"], end["fired"], end["never_fired"]) == ("end", ["n1"], [])
    # armed at 2 s, died at 2.5 s, started again 'for' (3 s) after it died
    assert [(call, arg) for call, _, arg, _ in c.calls] == [
        ("crash_at", "wal-after-write"), ("died", "wal-after-write"), ("start", None)]
    assert [t for *_, t in c.calls] == pytest.approx([2.0, 2.5, 5.5], abs=0.05)
    [fault] = faults_from(sched)
    assert fault.kind == "process" and fault.label == "#1 crash-at n1 wal-after-write"


def test_a_point_never_reached_within_for_is_disarmed_and_said_so(tmp_path: Path) -> None:
    c = CrashableCluster("n1", "n2", "n3")
    step = Step(7, 1.0, "crash-at", ("n2",), 2.0, {"point": "before-apply", "skip": 1})
    sched = crash_run(tmp_path, c, (step,), {})
    assert [(r["phase"], r.get("fired"), r.get("never_fired")) for r in sched] == [
        ("start", None, None), ("end", [], ["n2"])]
    assert [(call, mid, arg) for call, mid, arg, _ in c.calls] == [
        ("crash_at", "n2", "before-apply"), ("crash_at", "n2", None)]
    assert [t for *_, t in c.calls] == [1.0, 3.0]  # disarmed once 'for' passed
    [fault] = faults_from(sched)
    assert fault.kind == "other"  # it did nothing: no process fault to count as a hit


def test_without_for_a_fired_member_stays_down_until_the_heal(tmp_path: Path) -> None:
    c = CrashableCluster("n1", "n2", "n3")
    step = Step(7, 1.0, "crash-at", ("n3",), None, {"point": "wal-after-sync"})
    sched = crash_run(tmp_path, c, (step,), {"n3": 5.0}, limit=10.0)
    assert [(r["phase"], r.get("fired")) for r in sched] == [("start", None), ("end", ["n3"])]
    assert [call for call, *_ in c.calls] == ["crash_at", "died", "start"]
    assert [t for *_, t in c.calls] == pytest.approx([1.0, 5.0, 10.0], abs=0.05)  # the heal
    assert c.up == {"n1", "n2", "n3"}


def test_a_member_that_does_not_answer_the_arming_is_followed_as_armed(
        tmp_path: Path) -> None:
    """No answer does not mean not armed (a paused or busy member arms itself later):
    its death at the point counts as fired, and it is started again 'for' after it."""
    c = CrashableCluster("n1", "n2", "n3")
    c.silent.add("n2")
    step = Step(7, 1.0, "crash-at", ("n2",), 3.0, {"point": "wal-after-write"})
    start, end = crash_run(tmp_path, c, (step,), {"n2": 2.0})
    assert (start["phase"], start["nodes"], start["unanswered"]) == ("start", ["n2"], ["n2"])
    assert (end["fired"], end["never_fired"]) == (["n2"], [])
    assert [(call, t) for call, _, _, t in c.calls] == [
        ("crash_at", 1.0), ("died", 2.0), ("start", 5.0)]


def test_a_member_that_never_answers_a_disarm_is_asked_again_until_the_run_ends(
        tmp_path: Path) -> None:
    """Still running once 'for' passed, and no answer to the disarm: it may still be
    armed, so the nemesis keeps asking (and watching) until the run's time is up."""
    c = CrashableCluster("n1", "n2", "n3")
    c.silent.add("n3")
    step = Step(7, 1.0, "crash-at", ("n3",), 2.0, {"point": "before-apply"})
    _, end = crash_run(tmp_path, c, (step,), {}, limit=6.0)
    assert (end["fired"], end["never_fired"], end["maybe_armed"]) == ([], [], ["n3"])
    disarms = [t for call, _, arg, t in c.calls if call == "crash_at" and arg is None]
    assert disarms[0] == 3.0 and disarms[-1] == pytest.approx(6.0, abs=0.5)
    assert len(disarms) > 2
    assert "interrupted" not in end and c.up == {"n1", "n2", "n3"}


def test_a_death_at_the_point_while_a_disarm_goes_unanswered_counts_as_fired(
        tmp_path: Path) -> None:
    """The disarm gets no answer; the member dies at its point before the nemesis asks
    again: that is a fire, restarted 'for' after it."""
    c = CrashableCluster("n1", "n2", "n3")
    c.silent.add("n1")
    step = Step(7, 1.0, "crash-at", ("n1",), 2.0, {"point": "wal-after-sync"})
    _, end = crash_run(tmp_path, c, (step,), {"n1": 3.2}, limit=10.0)
    assert (end["fired"], end["never_fired"]) == (["n1"], [])
    assert [(call, arg) for call, _, arg, _ in c.calls] == [
        ("crash_at", "wal-after-sync"), ("crash_at", None), ("died", "wal-after-sync"),
        ("start", None)]
    assert c.calls[-1][3] == pytest.approx(5.2, abs=0.05)


def test_a_member_killed_by_another_fault_while_armed_is_not_counted_as_fired(
        tmp_path: Path) -> None:
    """A kill of the armed member is the kill's: the crash-at records it as interrupted,
    and neither counts it fired nor starts it again before the kill's own 'for' is up."""
    c = CrashableCluster("n1", "n2", "n3")
    arm = Step(7, 1.0, "crash-at", ("n1",), 2.0, {"point": "wal-after-write"})
    kill = Step(8, 2.0, "kill", ("n1",), 5.0)
    sched = crash_run(tmp_path, c, (arm, kill), {})
    end = next(r for r in sched if r["phase"] == "end" and r["action"] == "crash-at")
    assert (end["fired"], end["never_fired"], end["interrupted"]) == ([], [], ["n1"])
    assert [(call, arg, t) for call, _, arg, t in c.calls] == [
        ("crash_at", "wal-after-write", 1.0), ("kill", None, 2.0), ("start", None, 7.0)]


def test_replay_keeps_the_point_the_skip_and_the_downtime(tmp_path: Path) -> None:
    records = [
        {"time": 12_000_000_000, "offset_s": 12.0, "phase": "start", "action": "crash-at",
         "fault": 1, "nodes": ["n2"], "params": {"point": "wal-after-sync", "skip": 3},
         "for_s": 2.0},
        {"time": 19_000_000_000, "offset_s": 19.0, "phase": "end", "action": "crash-at",
         "fault": 1, "nodes": ["n2"], "fired": ["n2"], "fired_s": {"n2": 17.0},
         "never_fired": []},
        {"time": 27_000_000_000, "offset_s": 27.0, "phase": "start", "action": "crash-at",
         "fault": 2, "nodes": ["n1"], "params": {"point": "before-apply"}, "for_s": 9.0},
    ]
    steps = replay_steps(list(enumerate(records, 1)), 10.0, 20.0, 3)
    assert [(s.at, s.action, s.target, s.duration, s.params) for s in steps] == [
        (2.0, "crash-at", ("n2",), 2.0, {"point": "wal-after-sync", "skip": 3}),
        (17.0, "crash-at", ("n1",), 3.0, {"point": "before-apply"}),  # cut to the limit
    ]
    path = tmp_path / "shrunk.yaml"  # what a shrink writes and runs
    path.write_text(faults_yaml("r", "a replay", steps, 20.0))
    assert [(s.action, s.duration, s.params) for s in load_faults(path).schedule] == [
        (s.action, s.duration, s.params) for s in steps]


@pytest.mark.parametrize("phase", ["start", "skipped"])
def test_a_crash_at_record_without_its_point_is_refused_at_its_line(phase: str) -> None:
    records = [
        {"offset_s": 3.0, "phase": "start", "action": "kill", "fault": 1, "nodes": ["n1"]},
        {"offset_s": 5.0, "phase": phase, "action": "crash-at", "fault": 2,
         "nodes": ["n2"], "params": {"skip": 1}, "for_s": 2.0},
    ]
    with pytest.raises(ScenarioError) as e:
        replay_steps(list(enumerate(records, 1)), 0.0, 20.0, 3, path="run/schedule.jsonl")
    assert str(e.value) == ("run/schedule.jsonl:2: a crash-at record needs its params.point "
                            "(the crash point it armed)")


def test_an_exit_at_an_armed_crash_point_is_the_labs_doing_and_only_then(
        tmp_path: Path) -> None:
    die = f"import sys; sys.exit({CRASH_POINT_EXIT})"

    async def main() -> None:
        c = Scripted({m: Member(m, SLEEP, tmp_path / f"{m}.log") for m in ("n1", "n2", "n3")})
        c.members["n2"].script = f"import time; time.sleep(0.3); {die}"
        c.members["n3"].script = "import time; time.sleep(0.3); import sys; sys.exit(1)"
        c.start_all()
        try:
            c.expect_exit("n2", CRASH_POINT_EXIT)  # armed: its exit with that code is ours
            c.expect_exit("n3", CRASH_POINT_EXIT)  # armed, but it dies of something else
            with trio.fail_after(30):
                while c.alive("n2") or c.alive("n3"):
                    await trio.sleep(0.01)
            assert c.exited_as_expected(c.process("n2"))
            assert not c.exited_as_expected(c.process("n3"))
            assert [(e["node"], e["code"]) for e in c.collect_exits()] == [("n3", 1)]
            # the same code from a process nobody armed is a crash like any other
            c.members["n2"].script = die
            c.start("n2")
            with trio.fail_after(30):
                while c.alive("n2"):
                    await trio.sleep(0.01)
            assert [(e["node"], e["code"]) for e in c.collect_exits()] == [
                ("n2", CRASH_POINT_EXIT)]
        finally:
            await c.stop_members()

    trio.run(main)



def waiting_member(c: RaftkvCluster, mid: str, go: Path) -> None:
    """Run member ``mid`` as a process that exits with the crash-point code once ``go``
    exists (the test's stand-in for reaching an armed point)."""
    m = c.members[mid]
    script = (f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): "
              f"time.sleep(0.01)\nsys.exit({CRASH_POINT_EXIT})")
    m.proc = procs.spawn([sys.executable, "-c", script], log_path=m.log_path)


@pytest.mark.parametrize(("answers", "expected"), [
    ([None], None),  # the arming gets no answer: the member may arm itself later
    ([{"ok": True}, {"ok": True}], True),  # armed, disarmed, and it fires all the same
    ([{"ok": True}, None], None),  # armed; the disarm gets no answer
])
def test_once_an_arm_request_is_sent_that_process_exiting_86_is_never_a_crash(
        tmp_path: Path, answers: list[Any], expected: bool | None) -> None:
    """A member may arm itself after its request timed out (paused, overloaded), or be
    at the point already as its disarm is answered: the crash-point exit of a process
    the lab sent an arm request to is the lab's for that process's whole life."""
    c = RaftkvCluster(tmp_path, size=2)
    left = list(answers)

    async def request(mid: str, req: dict[str, Any], timeout: float = 2.0) -> Any:
        return left.pop(0)

    c.request = request  # type: ignore[method-assign]
    go = tmp_path / "go"

    async def main() -> None:
        waiting_member(c, "n1", go)
        waiting_member(c, "n2", go)  # never armed: its exit is a crash
        try:
            assert await c.crash_at("n1", "wal-after-write") is (
                None if answers[0] is None else True)
            if len(answers) > 1:
                assert await c.crash_at("n1", None) is expected
            go.touch()
            with trio.fail_after(30):
                while c.alive("n1") or c.alive("n2"):
                    await trio.sleep(0.01)
            assert c.exited_as_expected(c.process("n1"))
            assert [(e["node"], e["code"]) for e in c.collect_exits()] == [
                ("n2", CRASH_POINT_EXIT)]
        finally:
            await c.stop_members()

    trio.run(main)


def test_a_random_crash_at_draws_one_of_the_systems_points(tmp_path: Path) -> None:
    c = CrashableCluster("n1", "n2", "n3")
    history = History(tmp_path / "history.jsonl")
    scenario = FaultScenario("x", "x", "x", 5.0, random=RandomNemesis(
        line=1, interval=(1.0, 1.0), duration=(2.0, 2.0), actions=("crash-at",),
        targets=("n2",), stop=4.0))
    n = Nemesis(scenario, c, NoNetwork(), history,  # type: ignore[arg-type]
                tmp_path / "schedule.jsonl", random.Random(1), lambda: "n1",
                crash_points=("before-apply",))

    async def main() -> None:
        c.t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(n.run, 5.0)
            await trio.sleep(1.5)
            c.reach("n2")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    n.close()
    history.close()
    start, end = [r for _, r in read_schedule(tmp_path / "schedule.jsonl")]
    assert (start["params"], start["for_s"], start["nodes"]) == (
        {"point": "before-apply", "skip": 0}, 2.0, ["n2"])
    assert end["fired"] == ["n2"]
    assert [call for call, *_ in c.calls] == ["crash_at", "died", "start"]
