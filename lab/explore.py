"""``raftlab explore``: many short runs with fresh seeds, until the first anomaly.

A fuzzing loop over ``raftlab run``: run ``k`` (from 0) is one ``raftlab run WORKLOAD
FAULTS --seed SEED+k`` process with the same system, size, time limit and seeded bugs,
into ``OUT/runs/`` (its console output in ``OUT/console/``). A run is started only when
it should fit in what is left of the budget: its time limit plus the overhead the runs
before it took (start, recovery, checking). Each finished run is sorted like a suite's
(:func:`lab.suite.classify`) into ``valid``, ``invalid`` (an anomaly), ``unknown`` or
``error`` (the run crashed: exit code not 0, 1 or 3, or no results.json).

The loop stops at the first invalid run (``--keep-going``: it runs out the budget and
counts them all), when the budget has no room for another run, when interrupted
(SIGINT/SIGTERM: the current run is told to stop, as ``raftlab nightly`` does, and
finishes its own cleanup), or after :data:`MAX_ERRORS_IN_ROW` crashed runs in a row
(the lab itself is failing, and more runs would only burn the budget). The first anomaly
is then shrunk (:func:`lab.shrink.shrink_cli`) into a smaller fault scenario.

``OUT/explore.json`` (rewritten after every run) and ``OUT/index.html`` (its page) say
what happened: every run with its seed, verdict and the elections seen in it, the time
and the number of runs to the first anomaly, and the shrunk scenario.

*Elections seen* in a run are the distinct leader terms in its ``results.json``
``leaders`` list: the leaders the run's status poller saw, with their terms (a few polls
a second, for raftkv and etcd alike). An election whose leader lived shorter than a
poll can go unseen, so this is a lower bound.

Exit codes: 0 no anomaly within the budget; 1 an anomaly was found; 2 bad input, before
anything runs; 3 no anomaly and the exploration was interrupted or stopped by crashed
runs.

The loop takes its runner, shrinker and clock as arguments (:class:`Explorer`), so it is
tested without processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import procs
from lab.console import say
from lab.exitcode import ExitCode
from lab.paths import REPORTS, ROOT, find_builtin
from lab.suite import classify, read_results, run_dir_from

#: The fault scenario explored when none is given (``faults/explore.yaml``).
DEFAULT_FAULTS = "explore"
#: Crashed runs in a row that stop the loop.
MAX_ERRORS_IN_ROW = 3
#: Seconds a run is expected to cost beyond its time limit, before any has finished.
FIRST_OVERHEAD = 15.0
#: The least time the shrink gets by default (what is left of the budget, at least this).
MIN_SHRINK_BUDGET = 300.0
VERDICTS = ("valid", "invalid", "unknown", "error")


@dataclass(frozen=True)
class Plan:
    """What to explore: the options of ``raftlab explore``, checked."""

    workload: str  # a file path, as the runs are given it
    faults: str
    system: str
    nodes: int
    time_limit: float
    bugs: tuple[str, ...]
    seed: int  # the first run's; run k uses seed + k
    budget: float  # seconds
    out: Path
    keep_going: bool = False
    shrink: bool = True
    shrink_budget: float | None = None  # None: what is left, at least MIN_SHRINK_BUDGET

    def argv(self, seed: int) -> list[str]:
        argv = [sys.executable, "-m", "lab.cli", "run", self.workload, self.faults,
                "--system", self.system, "--nodes", str(self.nodes),
                "--time-limit", f"{self.time_limit:g}", "--seed", str(seed),
                "--out", str(self.out / "runs")]
        for bug in self.bugs:
            argv += ["--bug", bug]
        return argv


@dataclass
class RunOutcome:
    """One run of the exploration."""

    k: int
    seed: int
    verdict: str  # one of VERDICTS
    exit_code: int | None = None
    run_dir: str | None = None
    seconds: float = 0.0
    reason: str = ""
    elections: int = 0
    terms: list[int] = field(default_factory=list)
    faults_applied: int = 0
    anomaly: dict[str, Any] | None = None  # an invalid run's: reason and kinds

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 1)}


#: ``(k, seed) -> RunOutcome``: runs one experiment.
RunFn = Callable[[int, int], RunOutcome]
#: ``(run_dir, scenario file to write, budget s) -> exit code of the shrink``.
ShrinkFn = Callable[[Path, Path, float], int]


def outcome_of(k: int, seed: int, exit_code: int | None, run_dir: Path | None,
               results: dict[str, Any] | None, seconds: float) -> RunOutcome:
    """A finished run's :class:`RunOutcome`, from its exit code and ``results.json``."""
    category, reason = classify(exit_code, results)
    verdict = {"valid": "valid", "anomaly": "invalid", "unknown": "unknown"}.get(
        category, "error")
    r = results or {}
    terms = sorted({int(x["term"]) for x in r.get("leaders") or []
                    if isinstance(x, dict) and isinstance(x.get("term"), int)})
    applied = sum(1 for x in r.get("faults_applied") or []
                  if isinstance(x, dict) and x.get("phase") == "start")
    anomaly = None
    if verdict == "invalid":
        found = (r.get("checker") or {}).get("anomalies") or []
        kinds = list(dict.fromkeys(str(a.get("type")) for a in found
                                   if isinstance(a, dict) and a.get("type")))
        anomaly = {"reason": str(r.get("verdict_reason") or ""), "kinds": kinds,
                   "explanation": str(found[0].get("explanation", ""))[:2000]
                   if found and isinstance(found[0], dict) else ""}
    return RunOutcome(k, seed, verdict, exit_code, str(run_dir) if run_dir else None,
                      seconds, reason, len(terms), terms, applied, anomaly)


class Explorer:
    """The loop: runs until an anomaly, the budget, an interruption or crashes stop it."""

    def __init__(self, plan: Plan, run: RunFn, *, shrink: ShrinkFn | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], object] = say) -> None:
        self.plan = plan
        self.run_one = run
        self.shrink_fn = shrink
        self.clock = clock
        self.say = say
        self.runs: list[RunOutcome] = []
        self.started_wall = time.time()
        self.t0 = clock()
        self.stopping = False
        self.stop_reason = ""
        self.first_anomaly: RunOutcome | None = None
        self.time_to_first: float | None = None
        self.shrink_result: dict[str, Any] | None = None
        self.overhead = FIRST_OVERHEAD
        self.loop_seconds: float | None = None  # the runs' time, once the loop has ended

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def explore(self) -> ExitCode:
        """Run the loop, shrink the first anomaly, write the summary; the exit code."""
        self.plan.out.mkdir(parents=True, exist_ok=True)
        errors_in_row = 0
        k = 0
        while True:
            if self.stopping:
                self.stop_reason = "interrupted"
                break
            left = self.plan.budget - self.elapsed()
            if left < self.plan.time_limit + self.overhead:
                self.stop_reason = "budget"
                break
            if errors_in_row >= MAX_ERRORS_IN_ROW:
                self.stop_reason = f"{MAX_ERRORS_IN_ROW} crashed runs in a row"
                break
            o = self.run_one(k, self.plan.seed + k)
            if self.stopping and o.verdict != "invalid":
                o.verdict, o.reason = "unknown", "interrupted during this run"
            self.runs.append(o)
            if o.verdict not in ("error", "unknown") or o.seconds > self.plan.time_limit:
                # learn what a run costs beyond its time limit (a crash at once says
                # little): the last run's, or more while the older ones weigh in
                last = o.seconds - self.plan.time_limit
                self.overhead = max(last, self.overhead * 0.5 + last * 0.5, 5.0)
            errors_in_row = errors_in_row + 1 if o.verdict == "error" else 0
            self.say(self.progress(o))
            if o.verdict == "invalid" and self.first_anomaly is None:
                self.first_anomaly, self.time_to_first = o, self.elapsed()
            self.write()
            k += 1
            if o.verdict == "invalid" and not self.plan.keep_going:
                self.stop_reason = "anomaly"
                break
        self.loop_seconds = self.elapsed()
        if self.first_anomaly is not None and self.plan.shrink and not self.stopping:
            self._shrink(self.first_anomaly)
        self.write()
        return self.exit_code()

    def progress(self, o: RunOutcome) -> str:
        anomalies = sum(r.verdict == "invalid" for r in self.runs)
        elections = sum(r.elections for r in self.runs)
        reason = o.reason.split(": ")[0] if len(o.reason) > 60 else o.reason
        reason = reason if len(reason) <= 60 else reason[:57] + "..."
        why = f" ({reason})" if o.verdict != "valid" and reason else ""
        return (f"run {o.k + 1}  seed {o.seed}  {_clock(self.elapsed())}/"
                f"{_clock(self.plan.budget)}  {o.verdict}{why} in {o.seconds:.0f} s  "
                f"elections {o.elections} (total {elections})  anomalies {anomalies}")

    def exit_code(self) -> ExitCode:
        if self.first_anomaly is not None:
            return ExitCode.INVALID
        if self.stop_reason == "interrupted" or self.stop_reason.endswith("in a row"):
            return ExitCode.UNKNOWN
        return ExitCode.VALID

    def stop(self, signum: int, _frame: Any) -> None:
        """A signal handler: stop after the current run (which is told by the runner)."""
        if not self.stopping:
            self.stopping = True
            self.say(f"\nexplore: {signal.Signals(signum).name}: stopping after the "
                     "current run")

    def _shrink(self, o: RunOutcome) -> None:
        if self.shrink_fn is None or o.run_dir is None:
            return
        left = self.plan.budget - self.elapsed()
        budget = self.plan.shrink_budget or max(left, MIN_SHRINK_BUDGET)
        faults = Path(self.plan.faults).stem
        target = self.plan.out / f"{faults}-shrunk.yaml"
        self.say(f"\nshrinking run {o.k + 1} ({o.run_dir}), budget {_clock(budget)}")
        t = self.clock()
        failure = None
        try:
            code = int(self.shrink_fn(Path(o.run_dir), target, budget))
        except Exception as e:  # the anomaly stands whatever becomes of its shrink
            failure = f"the shrink failed ({type(e).__name__}: {e})"
            self.say(f"explore: {failure}")
            code = ExitCode.UNKNOWN
        self.shrink_result = {
            "run_dir": o.run_dir, "exit_code": code, "budget_s": round(budget, 1),
            "seconds": round(self.clock() - t, 1),
            "scenario": str(target) if code == ExitCode.VALID and target.exists() else None,
            "result": failure or {0: "a smaller failing scenario (or the original is minimal)",
                       2: "the run could not be shrunk (bad input)",
                       3: "nothing failed again within the shrink's budget"}.get(
                           code, f"the shrink exited with {code}")}

    # ------------------------------------------------------------------ the summary

    def summary(self) -> dict[str, Any]:
        p = self.plan
        counts = {v: sum(r.verdict == v for r in self.runs) for v in VERDICTS}
        first = self.first_anomaly
        return {
            "version": 1, "workload": p.workload, "faults": p.faults, "system": p.system,
            "nodes": p.nodes, "time_limit": p.time_limit, "bugs": list(p.bugs),
            "first_seed": p.seed, "budget_s": p.budget, "keep_going": p.keep_going,
            "started": self.started_wall, "seconds": round(self.elapsed(), 1),
            "loop_seconds": round(self.loop_seconds if self.loop_seconds is not None
                                  else self.elapsed(), 1),
            "stop_reason": self.stop_reason or "running",
            "max_errors_in_row": MAX_ERRORS_IN_ROW,
            "counts": counts, "elections": sum(r.elections for r in self.runs),
            "time_to_first_anomaly_s": (round(self.time_to_first, 1)
                                        if self.time_to_first is not None else None),
            "runs_to_first_anomaly": first.k + 1 if first else None,
            "first_anomaly": first.to_json() if first else None,
            "shrink": self.shrink_result,
            "exit_code": int(self.exit_code()),
            "runs": [r.to_json() for r in self.runs],
        }

    def write(self) -> dict[str, Any]:
        s = self.summary()
        tmp = self.plan.out / "explore.json.tmp"
        tmp.write_text(json.dumps(s, indent=2))
        tmp.replace(self.plan.out / "explore.json")
        try:
            from lab.report.explore_page import render_explore

            render_explore(self.plan.out, s)
        except Exception as e:  # the page is a convenience; explore.json is the record
            self.say(f"explore: summary page not rendered ({type(e).__name__}: {e})")
        return s


def _clock(seconds: float) -> str:
    s = max(int(seconds), 0)
    return f"{s // 60}:{s % 60:02d}"


class ProcessRunner:
    """Runs one experiment as its own ``raftlab run`` process; forwards a stop to it."""

    def __init__(self, plan: Plan, deadline: float) -> None:
        self.plan = plan
        self.deadline = deadline  # time.monotonic() after which a run is stopped
        self._proc: subprocess.Popen[bytes] | None = None

    def __call__(self, k: int, seed: int) -> RunOutcome:
        log = self.plan.out / "console" / f"{k + 1:03d}.log"
        t0 = time.monotonic()
        self._proc = procs.spawn(self.plan.argv(seed), log_path=log, cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        limit = self.plan.time_limit
        wait = max(limit + 60, min(limit * 3 + 300, self.deadline - time.monotonic() + 60))
        try:
            code = procs.wait_or_end(self._proc, wait)
        finally:
            self._proc = None
        run_dir = run_dir_from(log)
        return outcome_of(k, seed, code, run_dir, read_results(run_dir),
                          time.monotonic() - t0)

    def interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            procs.signal_process(proc, signal.SIGINT)  # it stops cleanly, exit 3


def _shrink_in_process(run_dir: Path, out: Path, budget: float) -> int:
    from lab.shrink import shrink_cli

    return int(shrink_cli(run_dir, out, budget, 2))


# --------------------------------------------------------------------------- the command


def check_inputs(workload: str, faults: str | None, system: str, nodes: int,
                 time_limit: float, bugs: Sequence[str], budget: float
                 ) -> tuple[str, str]:
    """The workload and fault files to run, resolved; raises ``ValueError`` with one line
    when they cannot run (exit 2)."""
    from lab.scenario import (
        ScenarioError,
        check_members,
        check_system,
        load_faults,
        load_workload,
    )
    from lab.systems import preflight, to_ms

    if faults is None:
        faults = DEFAULT_FAULTS
    w_path, f_path = find_builtin(workload, "workloads"), find_builtin(faults, "faults")
    try:
        w = load_workload(w_path)
        f = load_faults(f_path, time_limit)
        check_members(f, nodes)
        check_system(f, system)
    except ScenarioError as e:
        raise ValueError(str(e)) from None
    why = preflight(system, w.model, tuple(bugs), to_ms(f.election_timeout),
                    to_ms(f.heartbeat), timing_at=f"{f.path}:{f.timing_line}")
    if why:
        raise ValueError(why)
    if budget < time_limit + FIRST_OVERHEAD:
        raise ValueError(f"--budget {budget:g} s has no room for one run: a run of "
                         f"{time_limit:g} s takes about {time_limit + FIRST_OVERHEAD:g} s")
    return str(w_path.resolve()), str(f_path.resolve())


def default_out() -> Path:
    from lab.run import fresh_dir

    return fresh_dir(REPORTS / f"explore-{time.strftime('%Y%m%dT%H%M%S', time.localtime())}")


def explore_cli(workload: str, faults: str | None, *, system: str, nodes: int,
                time_limit: float, bugs: Sequence[str], seed: int | None, budget: float,
                out: Path | None, shrink: bool, shrink_budget: float | None,
                keep_going: bool) -> ExitCode:
    """``raftlab explore``: check the inputs, run the loop, say what it found."""
    try:
        w, f = check_inputs(workload, faults, system, nodes, time_limit, bugs, budget)
    except ValueError as e:
        print(f"raftlab: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if out is not None and out.exists() and any(out.iterdir()):
        print(f"raftlab: --out {out}: not empty (give a new folder)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if seed is None:
        seed = int(time.time()) % 1_000_000
    out = (out or default_out()).resolve()
    plan = Plan(w, f, system, nodes, time_limit, tuple(bugs), seed, budget, out,
                keep_going, shrink, shrink_budget)
    say(f"exploring {Path(w).stem} x {Path(f).stem} on {system}"
        + (f" +{'+'.join(bugs)}" if bugs else "")
        + f": {nodes} nodes, runs of {time_limit:g} s, seeds from {seed}, budget "
          f"{_clock(budget)}; results in {out}")
    runner = ProcessRunner(plan, time.monotonic() + budget)
    ex = Explorer(plan, runner, shrink=_shrink_in_process)

    def on_signal(signum: int, frame: Any) -> None:
        ex.stop(signum, frame)
        runner.interrupt()

    old = {n: signal.signal(n, on_signal) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = ex.explore()
    finally:
        for n, h in old.items():
            signal.signal(n, h)
    s = ex.summary()
    say("")
    c = s["counts"]
    say(f"{len(ex.runs)} run{'s' * (len(ex.runs) != 1)} in {_clock(s['loop_seconds'])} "
        f"(seeds {seed}..{seed + max(len(ex.runs) - 1, 0)}): "
        + ", ".join(f"{c[v]} {v}" for v in VERDICTS)
        + f"; elections seen: {s['elections']}; stopped: {s['stop_reason']}")
    first = ex.first_anomaly
    if first is not None:
        say(f"first anomaly: run {first.k + 1}, seed {first.seed}, after "
            f"{s['time_to_first_anomaly_s']:.0f} s: {first.reason}")
        if first.run_dir:
            say(f"run directory: {first.run_dir}")
            say(f"report: {Path(first.run_dir) / 'index.html'}")
        sh = ex.shrink_result
        if sh is not None:
            say(f"shrunk scenario: {sh['scenario']}" if sh["scenario"]
                else f"shrink: {sh['result']}")
    else:
        say("no anomaly found")
    say(f"summary: {out / 'explore.json'}")
    say(f"page: {out / 'index.html'}")
    return code
