"""``raftlab shrink RUN_DIR``: the search with a fake candidate runner (deterministic and
fast), the command with a fake runner and bad input, and one real end to end: a failing
raftkv run, its replay and its shrink."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_replay import make_run, rec

from lab import shrink
from lab.cli import main
from lab.replay import read_schedule
from lab.scenario import Step, check_members, load_faults
from lab.shrink import Candidate, Shrinker, Try

ROOT = Path(__file__).resolve().parent.parent


class Fake:
    """A candidate runner whose verdicts follow a rule, on a fake clock: every try costs
    ``cost`` seconds beyond the candidate's time limit."""

    def __init__(self, rule: Any, cost: float = 10.0) -> None:
        self.rule = rule
        self.cost = cost
        self.now = 0.0
        self.calls: list[tuple[Candidate, int]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, c: Candidate, k: int) -> Try:
        self.calls.append((c, k))
        seconds = c.time_limit + self.cost
        self.now += seconds
        failed = bool(self.rule(c, k))
        return Try(failed, "invalid" if failed else "valid", seconds)


def steps(n: int, every: float = 4.0, lasting: float = 2.0) -> list[Step]:
    return [Step(i + 1, 1.0 + i * every, "pause", (f"n{i % 3 + 1}",), lasting)
            for i in range(n)]


def search(rule: Any, n: int = 7, *, limit: float = 60.0, clients: int = 10,
           attempts: int = 2, budget: float = 1e9, cost: float = 10.0
           ) -> tuple[shrink.Outcome, Fake]:
    fake = Fake(rule, cost)
    base = Candidate(tuple(range(n)), limit, clients)
    s = Shrinker(base, steps(n), fake, budget=budget, attempts=attempts, clock=fake.clock,
                 say=lambda _: None)
    return s.search(), fake


def test_ddmin_ends_with_exactly_the_steps_that_matter() -> None:
    out, fake = search(lambda c, k: {2, 5} <= set(c.steps))
    assert out.best is not None and out.best.steps == (2, 5)
    assert out.stop_reason == "done" and out.smaller
    # then the time limit: just after step 5 ends (1 + 5*4 + 2 = 23) plus 3 s
    assert out.best.time_limit == 26.0
    # then the clients, halved while it still fails (the rule ignores them): 10, 5, 2, 1
    assert out.best.concurrency == 1
    # halves first: the first candidates are the two halves of the seven steps
    firsts = list(dict.fromkeys(c.steps for c, _ in fake.calls))
    assert firsts[:2] == [(0, 1, 2, 3), (4, 5, 6)]
    # a candidate that does not fail is tried twice, one that fails once
    tries: dict[Candidate, list[int]] = {}
    for c, k in fake.calls:
        tries.setdefault(c, []).append(k)
    assert all(ks == ([1] if {2, 5} <= set(c.steps) else [1, 2]) for c, ks in tries.items())


@pytest.mark.parametrize("needed", [{0}, {6}, {1, 3, 4}, {0, 6}, set(range(7))])
def test_ddmin_is_one_minimal_for_monotone_rules(needed: set[int]) -> None:
    out, _ = search(lambda c, k: needed <= set(c.steps))
    assert out.best is not None and set(out.best.steps) == needed


def test_no_step_needed_leaves_an_empty_schedule() -> None:
    out, _ = search(lambda c, k: True, n=3)
    assert out.best == Candidate((), 5.0, 1)  # the shortest time limit, one client


def test_a_flaky_candidate_counts_if_one_try_fails() -> None:
    flaky = lambda c, k: 3 in c.steps and (len(c.steps) > 1 or k == 2)  # noqa: E731
    out, _ = search(flaky)
    assert out.best is not None and out.best.steps == (3,)
    out, _ = search(flaky, attempts=1)
    assert out.best is not None and out.best.steps != (3,) and 3 in out.best.steps


def test_fewer_clients_stops_at_the_first_that_passes() -> None:
    out, _ = search(lambda c, k: c.concurrency >= 3, n=2)
    assert out.best is not None and out.best.concurrency == 5


def test_original_already_minimal_is_confirmed_by_running_it_again() -> None:
    rule = lambda c, k: c == Candidate((0, 1), 9.0, 1)  # noqa: E731
    fake = Fake(rule)
    base = Candidate((0, 1), 9.0, 1)
    out = Shrinker(base, steps(2), fake, budget=1e9, clock=fake.clock,
                   say=lambda _: None).search()
    assert out.best == base and not out.smaller and out.stop_reason == "done"
    assert fake.calls[-1] == (base, 1)


def test_nothing_fails_again() -> None:
    out, fake = search(lambda c, k: False, n=2)
    assert out.best is None and out.stop_reason == "done"
    assert fake.calls[-2:] == [(Candidate((0, 1), 60.0, 10), 1),
                               (Candidate((0, 1), 60.0, 10), 2)]


def test_the_budget_stops_the_search() -> None:
    # each try costs 70 s (60 s limit + 10 s); a budget of 200 s allows two tries
    out, fake = search(lambda c, k: False, budget=200.0)
    assert out.best is None and out.stop_reason == "budget" and len(fake.calls) == 2
    # a failure found before the budget ran out is kept (two tries of the first half,
    # one of the second, then no room for a fourth)
    out, fake = search(lambda c, k: 4 in c.steps, budget=250.0)
    assert out.stop_reason == "budget" and out.best is not None
    assert out.best.steps == (4, 5, 6) and fake.now <= 250.0


# --------------------------------------------------------------------------- the command


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def failing_run(tmp_path: Path) -> Path:
    """A failing 3-node run with three recorded faults (no processes: files only)."""
    return make_run(tmp_path, [
        rec(4.0, "start", "isolate", 1, ["n1"], links=[["n1", "n2"], ["n2", "n1"],
                                                       ["n1", "n3"], ["n3", "n1"]]),
        rec(7.0, "end", "isolate", 1, ["n1"]),
        rec(8.0, "skipped", "kill", None, [], reason="no leader"),
        rec(9.0, "start", "partition-random-halves", 2, [], links=[["n2", "n3"],
                                                                   ["n3", "n2"]]),
        rec(10.5, "end", "partition-random-halves", 2, []),
        rec(11.0, "start", "pause", 3, ["n3"]),
        rec(12.0, "end", "pause", 3, ["n3"]),
    ], origin=1.0)


def test_shrink_command_with_a_fake_runner(tmp_path: Path, capsys: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails iff the random-halves partition is there: the scenario file keeps just that
    step (as cut-links), loads, and says how to run it."""
    seen: list[list[str]] = []

    def fake_call(self: shrink.ProcessRunner, c: Candidate, k: int) -> Try:
        faults = tmp_path / f"candidate-{len(seen)}.yaml"
        faults.write_text(self.faults_text(c))
        load_faults(faults, c.time_limit)  # every candidate is a valid file
        seen.append(self.argv(c, faults))
        failed = any(self.steps[i].action == "cut-links" for i in c.steps)
        return Try(failed, "invalid" if failed else "valid", 0.0, None, 4)

    monkeypatch.setattr(shrink.ProcessRunner, "__call__", fake_call)
    run = failing_run(tmp_path)
    out = tmp_path / "regressions" / "min.yaml"
    code, text, err = cli(capsys, "shrink", str(run), "--out", str(out), "--budget", "10m")
    assert code == 0, (text, err)
    assert "before: 3 fault steps, time limit 15 s, 4 clients" in text
    assert "(1 skipped step left out: they did nothing)" in text
    assert "after:  1 fault step, time limit 13 s, 1 client" in text
    assert "up to 2 tries per candidate, failing if 1 is invalid" in text
    assert f"shrunk scenario: {out}" in text
    f = load_faults(out)
    check_members(f, 3)
    assert f.time_limit == 13.0  # ceil(8 + 1.5 + 3)
    assert f.initial_leader == "n2"  # the leader when the failing run's clients started
    assert [(s.at, s.action, s.duration, s.params) for s in f.schedule] == [
        (8.0, "cut-links", 1.5, {"links": [["n2", "n3"], ["n3", "n2"]]})]
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert any(str(run.resolve()) in line for line in header)
    assert any("Seeds tried: 4" in line for line in header)
    command = ("raftlab run workloads/register.yaml " + str(out.resolve())
               + " --nodes 3 --seed 4 --bug stale-read --concurrency 1")
    assert f"#   {command}" in header and f"run it: {command}" in text
    # every try ran the candidate as the recorded experiment: nodes, seed, bug, rate
    assert all({"--nodes", "3", "--seed", "4", "--bug", "stale-read", "--rate", "100"}
               <= set(argv) for argv in seen)
    assert seen[0][:4] == [sys.executable, "-m", "lab.cli", "run"]
    work = Path(next(line for line in text.splitlines() if "work directory: " in line)
                .split("work directory: ")[1])
    assert work.parent == tmp_path / "reports" / "shrink"
    log = json.loads((work / "shrink.json").read_text())
    assert log["best"]["steps"] == [1] and log["stop_reason"] == "done"


def test_shrink_nothing_fails_again_exits_3(tmp_path: Path, capsys: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shrink.ProcessRunner, "__call__",
                        lambda self, c, k: Try(False, "valid", 0.0))
    out = tmp_path / "min.yaml"
    code, text, _ = cli(capsys, "shrink", str(failing_run(tmp_path)), "--out", str(out),
                        "--attempts", "1")
    assert code == 3 and "nothing failed again" in text and not out.exists()


def test_shrink_bad_input(tmp_path: Path, capsys: Any) -> None:
    valid = failing_run(tmp_path)
    results = json.loads((valid / "results.json").read_text())
    (valid / "results.json").write_text(json.dumps({**results, "verdict": "valid"}))
    broken = failing_run(tmp_path)
    (broken / "schedule.jsonl").write_text("nonsense\n{}\n")
    no_results = failing_run(tmp_path)
    (no_results / "results.json").unlink()
    for args, message in [
        ([str(tmp_path / "nowhere")], "not a run directory"),
        ([str(valid)], "not a failing run (verdict: valid); shrink needs a run whose "
                       "verdict is invalid"),
        ([str(no_results)], "no readable results.json"),
        ([str(broken)], "schedule.jsonl:1: not valid JSON"),
        ([str(broken), "--budget", "soon"], "--budget: cannot parse 'soon'"),
        ([str(broken), "--attempts", "0"], "--attempts: must be at least 1"),
        ([str(broken), "--out", str(tmp_path)], "is a directory"),
    ]:
        code, out, err = cli(capsys, "shrink", *args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("raftlab: ") and message in lines[0], (message, err)


# --------------------------------------------------------------------------- end to end

_SCRIPT = Path(sys.executable).with_name("raftlab")
RAFTLAB = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "lab.cli"]


def raftlab(*args: str, timeout: float = 120) -> tuple[int, str]:
    p = subprocess.run([*RAFTLAB, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, p.stdout + p.stderr


def run_dir_of(output: str) -> Path:
    return Path(next(line.split(": ", 1)[1] for line in output.splitlines()
                     if line.startswith("run directory: ")))


def members_left(under: Path) -> list[str]:
    """Member processes whose data lives under ``under`` (other runs on this machine are
    not ours to count)."""
    p = subprocess.run(["pgrep", "-af", "nodes --id"], capture_output=True, text=True)
    return [line for line in p.stdout.splitlines() if str(under) in line]


def faults_of(run: Path) -> list[tuple[str, list[str], float, float | None]]:
    """(action, nodes, start, duration) of each fault of a run, offsets counted from the
    moment its clients and nemesis started."""
    origin = json.loads((run / "results.json").read_text())["schedule_origin_s"]
    records = [r for _, r in read_schedule(run / "schedule.jsonl")]
    ends = {r["fault"]: r["offset_s"] for r in records if r["phase"] == "end"}
    return [(r["action"], r["nodes"], r["offset_s"] - origin,
             ends[r["fault"]] - r["offset_s"] if r["fault"] in ends else None)
            for r in records if r["phase"] == "start"]


@pytest.mark.processes
@pytest.mark.slow
def test_a_seeded_bug_failure_replays_and_shrinks(tmp_path: Path) -> None:
    """raftkv with early-ack under isolate-leader ends invalid; its replay applies the
    same faults to the same nodes at the same offsets, with the same leader when the
    clients start, and is invalid too; shrink writes a scenario that loads, still fails
    and has no more steps than the original.

    Real runs are not deterministic, so the bug is one the isolation exposes every time
    (the isolated leader acknowledges writes it never commits, and the new leader
    overwrites them: 15 of 15 runs in the detection matrix, and without faults it passes).
    A replay gets two tries and shrink a budget of about four runs; either failing to
    reproduce the failure fails the test. (stale-read, used here before, was caught in
    only some runs, so this test could only say "expected failure" when it was not.)"""
    reports = tmp_path / "reports"
    t0 = time.monotonic()
    original = None
    for seed in (1, 2, 3):  # (seed 1 has always failed; the others are a margin)
        code, out = raftlab("run", "workloads/register.yaml", "faults/isolate-leader.yaml",
                            "--nodes", "3", "--time-limit", "15", "--bug", "early-ack",
                            "--seed", str(seed), "--out", str(reports))
        if code == 1:
            original = run_dir_of(out)
            break
    assert original is not None, "no seed of 1..3 made the early-ack bug fail"
    recorded = faults_of(original)
    assert recorded and all(action == "isolate" for action, *_ in recorded)
    leader = json.loads((original / "results.json").read_text())["initial_leader"]
    # the replay: same seed, the same faults on the same nodes at the same offsets
    recorded = faults_of(original)
    replays = []
    for _ in range(1):  # (one replay: each is a 30 s run with 1.5 s election timeouts)
        code, out = raftlab("run", "--replay", str(original), "--out", str(reports))
        replays.append(code)
        assert code in (0, 1, 3), out
        assert f"replaying {original}: {len(recorded)} fault step" in out
        replay = run_dir_of(out)
        scenario = yaml.safe_load((replay / "scenario.yaml").read_text())
        assert scenario["replay_of"] == str(original.resolve())
        assert (scenario["seed"], scenario["bugs"]) == (int(original.name.split("-s")[-1]),
                                                        ["early-ack"])
        results = json.loads((replay / "results.json").read_text())
        assert results["initial_leader"] == leader
        again = faults_of(replay)
        assert [(a, n) for a, n, *_ in again] == [(a, n) for a, n, *_ in recorded]
        # each at its recorded offset and for its recorded time: never earlier or
        # shorter (how much later a busy machine makes it is not the lab's property)
        for (_, _, at0, for0), (_, _, at1, for1) in zip(recorded, again, strict=True):
            assert at1 >= at0 - 0.05, (recorded, again)
            assert (for0 is None) == (for1 is None)
            assert for0 is None or for1 is None or for1 >= for0 - 0.05, (recorded, again)
        if code == 1:
            break
    print(f"original {original} (exit 1); replays exited {replays}")
    assert members_left(tmp_path) == []
    assert 1 in replays, f"the replays applied the same faults but did not fail again in 2 " \
        f"tries (exit codes {replays})"
    # shrink, on a small budget (about four 15 s runs; up to 2 tries per candidate)
    out_file = tmp_path / "shrunk.yaml"
    code, out = raftlab("shrink", str(original), "--out", str(out_file), "--budget", "100s",
                        timeout=300)
    print(out)
    assert members_left(tmp_path) == []
    assert code == 0, out
    assert f"before: {len(recorded)} fault step" in out
    assert f"shrunk scenario: {out_file}" in out
    f = load_faults(out_file)
    check_members(f, 3)
    assert len(f.schedule) <= len(recorded)
    assert f.initial_leader == leader
    text = out_file.read_text()
    assert f"--nodes 3 --seed {original.name.split('-s')[-1]} --bug early-ack" in text
    assert str(original.resolve()) in text
    print(f"whole test: {time.monotonic() - t0:.0f} s")


@pytest.mark.processes
@pytest.mark.slow
def test_a_figure_8_failure_replays(tmp_path: Path) -> None:
    """The scripted Figure 8 (faults/figure-8.yaml) loses a committed entry on raftkv with
    old-term-commit, and the lab says so; its replay runs the same experiment: the same
    options and leader, every recorded fault at its recorded offset on the same links.

    Whether the replay loses an entry again is left to the elections it cannot script:
    on 2026-12-06 CI saw 0 failing replays in 6 (4 in one run), after the original
    failed every time, so the test records how many replays failed again but does not
    require one. A replay that does fail must fail for the same reason."""
    reports = tmp_path / "reports"
    original, outs = None, []
    for seed in (1, 2):
        code, out = raftlab("run", "workloads/register.yaml", "faults/figure-8.yaml",
                            "--nodes", "5", "--bug", "old-term-commit", "--seed", str(seed),
                            "--out", str(reports))
        outs.append(out[-2000:])
        if code == 1:
            original = run_dir_of(out)
            break
    assert original is not None, outs
    assert "a leader's log contradicts a committed entry" in outs[-1]
    recorded = faults_of(original)
    replays = []
    for _ in range(1):  # (one replay: each is a 30 s run with 1.5 s election timeouts)
        code, out = raftlab("run", "--replay", str(original), "--out", str(reports))
        replays.append(code)
        replay = run_dir_of(out)
        scenario = yaml.safe_load((replay / "scenario.yaml").read_text())
        # the replay keeps what made it possible: one entry per append, the same leader
        assert scenario["faults"]["system_options"] == {"raftkv": {"max_append_entries": 1}}
        assert scenario["faults"]["initial_leader"] == "n1"
        again = faults_of(replay)
        # the same faults on the same members (steps of one moment in any order), none
        # earlier than recorded
        assert sorted((a, n) for a, n, *_ in again) == sorted((a, n) for a, n, *_ in recorded)
        for at0, at1 in zip(sorted(f[2] for f in recorded), sorted(f[2] for f in again),
                            strict=True):
            assert at1 >= at0 - 0.05, (recorded, again)
        assert code in (0, 1), out  # ran to a verdict: the same faults bit again
        if code == 1:
            results = json.loads((replay / "results.json").read_text())
            kinds = {a["type"] for a in results["checker"]["anomalies"]}
            assert "committed-entry-conflict" in kinds, kinds
            break
    assert members_left(tmp_path) == []
    print(f"original {original} (exit 1); replays exited {replays}")
