"""``raftlab shrink RUN_DIR``: search for a smaller scenario that still fails.

The search starts from the failing run's replay (:mod:`lab.replay`): its faults as a timed
schedule on node ids, its time limit and its clients. A *candidate* is a subset of those
steps with a time limit and a number of clients; it is tried by really running it (each
try is its own ``raftlab run`` process, like a suite's runs, under a work directory
``<reports>/shrink/<run>/``). In order:

1. fewer fault steps, by delta debugging (Zeller's ddmin): halves first, then smaller and
   smaller chunks down to one step at a time, keeping any subset that still fails; a
   single step left is tried without it too;
2. a shorter time limit: just after the end of the last remaining fault plus a margin;
3. fewer clients: halved while it still fails.

Real runs are not deterministic, so a candidate counts as failing when at least one of up
to ``attempts`` tries (2 by default) ends invalid. The search stops at its wall-clock
budget (a try is only started when it should fit). The candidate runner is injectable
(:class:`Shrinker` takes any ``(candidate, try) -> Try`` function), so the search itself
is tested deterministically without processes.

Exit codes: 0 when a smaller failing scenario was found, or when every reduction was
tried, none failed and the original failed again (it is already minimal); 3 when nothing
failed again within the budget; 2 for bad input (not a run directory, not a failing run).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lab import procs
from lab.exitcode import ExitCode
from lab.paths import REPORTS, ROOT
from lab.replay import ReplayError, ReplayPlan, faults_yaml, load_replay, workload_yaml
from lab.run import fresh_dir
from lab.scenario import ScenarioError, Step, load_workload
from lab.store import RESULTS, SCENARIO, SCHEDULE, RunDir
from lab.suite import read_results, run_dir_from
from lab.systems import DEFAULT_SYSTEM

#: Seconds after the last remaining fault's end that a shortened run still lasts.
MARGIN = 3.0
#: The shortest time limit a candidate gets.
MIN_TIME_LIMIT = 5.0


@dataclass(frozen=True)
class Candidate:
    """A scenario to try: some of the base steps (indices, in order), a time limit and a
    number of clients."""

    steps: tuple[int, ...]
    time_limit: float
    concurrency: int


@dataclass(frozen=True)
class Try:
    """How one try of a candidate went."""

    failed: bool  # the verdict was invalid
    verdict: str  # invalid, valid, unknown, or what went wrong
    seconds: float = 0.0
    run_dir: str | None = None
    seed: int | None = None


TryRunner = Callable[[Candidate, int], Try]  # (candidate, try number from 1) -> Try


class OutOfBudget(Exception):
    pass


class Stopped(Exception):
    pass


@dataclass
class Outcome:
    base: Candidate
    best: Candidate | None  # the smallest candidate that failed again; None if none did
    stop_reason: str  # "done", "budget" or "interrupted"
    tries: list[dict[str, Any]] = field(default_factory=list)
    candidates: int = 0

    @property
    def found(self) -> bool:
        return self.best is not None

    @property
    def smaller(self) -> bool:
        return self.best is not None and self.best != self.base


class Shrinker:
    """The search: ddmin over the steps, then the time limit, then the clients.

    ``run`` tries one candidate once; ``steps`` are the base scenario's steps (for the
    time limit of a candidate); ``budget`` is in seconds of ``clock``; ``overhead`` is a
    first guess of what a try costs beyond its time limit (then learnt from real tries).
    """

    def __init__(self, base: Candidate, steps: Sequence[Step], run: TryRunner, *,
                 budget: float, attempts: int = 2, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = print, overhead: float = 20.0,
                 stop: Callable[[], bool] = lambda: False) -> None:
        self.base = base
        self.steps = list(steps)
        self.run = run
        self.budget = budget
        self.attempts = max(1, attempts)
        self.clock = clock
        self.say = say
        self.overhead = overhead
        self.stop = stop
        self.started = clock()
        self.cache: dict[Candidate, bool] = {}
        self.candidates = 0  # candidates tried (or started, when the budget ran out)
        self.best: Candidate | None = None
        self.tries: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ the search

    def search(self) -> Outcome:
        self.started = self.clock()
        reason = "done"
        try:
            cur = self._ddmin(self.base)
            cur = self._shorter(cur)
            cur = self._fewer_clients(cur)
            if self.best is None:  # nothing smaller failed: is the original itself still failing?
                self.say("no smaller candidate failed; trying the original schedule again")
                if self.fails(self.base):
                    self.best = self.base
        except OutOfBudget:
            reason = "budget"
        except Stopped:
            reason = "interrupted"
        return Outcome(self.base, self.best, reason, self.tries, self.candidates)

    def _ddmin(self, cur: Candidate) -> Candidate:
        items = list(cur.steps)
        n = 2
        while len(items) >= 2:
            chunks = _split(items, n)
            reduced = False
            for chunk in chunks:  # a small part alone
                if self.fails(replace(cur, steps=tuple(chunk))):
                    items, n, reduced = chunk, 2, True
                    break
            if not reduced and n > 2:  # everything but a small part
                for chunk in chunks:
                    rest = [i for i in items if i not in chunk]
                    if self.fails(replace(cur, steps=tuple(rest))):
                        items, n, reduced = rest, max(n - 1, 2), True
                        break
            if not reduced:
                if n >= len(items):
                    break
                n = min(len(items), 2 * n)
        if len(items) == 1 and self.fails(replace(cur, steps=())):
            items = []
        return replace(cur, steps=tuple(items))

    def tight_limit(self, steps: Sequence[int]) -> float:
        """Just after the last of ``steps`` ends, plus the margin (whole seconds). A
        ``crash-at`` may end twice its ``for`` after it starts: its members may die as
        late as ``for`` after the arming and stay down ``for`` after that."""
        def end(s: Step) -> float:
            return s.at + (s.duration or 0.0) * (2 if s.action == "crash-at" else 1)

        last = max((end(self.steps[i]) for i in steps), default=0.0)
        return float(max(MIN_TIME_LIMIT, math.ceil(last + MARGIN)))

    def _shorter(self, cur: Candidate) -> Candidate:
        limit = self.tight_limit(cur.steps)
        if limit < cur.time_limit and self.fails(replace(cur, time_limit=limit)):
            return replace(cur, time_limit=limit)
        return cur

    def _fewer_clients(self, cur: Candidate) -> Candidate:
        while cur.concurrency > 1:
            fewer = replace(cur, concurrency=cur.concurrency // 2)
            if not self.fails(fewer):
                break
            cur = fewer
        return cur

    # ------------------------------------------------------------------ one candidate

    def fails(self, c: Candidate) -> bool:
        """Does ``c`` still fail (in at least one of up to ``attempts`` tries)?"""
        if c in self.cache:
            return self.cache[c]
        which = ", ".join(f"#{i + 1}" for i in c.steps) or "none"
        self.candidates += 1
        self.say(f"candidate {self.candidates}: {describe(c)} (steps: {which})")
        failed = False
        for k in range(1, self.attempts + 1):
            if self.stop():
                raise Stopped()
            left = self.budget - (self.clock() - self.started)
            if left < c.time_limit + self.overhead:
                self.say(f"  budget: {left:.0f} s left, a try needs about "
                         f"{c.time_limit + self.overhead:.0f} s; stopping")
                raise OutOfBudget()
            t = self.run(c, k)
            if t.seconds > 0:
                self.overhead = max(5.0, 0.5 * self.overhead + 0.5 * (t.seconds - c.time_limit))
            self.tries.append({"candidate": asdict(c), "try": k, **asdict(t)})
            self.say(f"  try {k}/{self.attempts}: {t.verdict} ({t.seconds:.0f} s)"
                     + (f"  {t.run_dir}" if t.run_dir else ""))
            if self.stop():
                raise Stopped()
            if t.failed:
                failed = True
                break
        self.cache[c] = failed
        if failed and (self.best is None or _smaller(c, self.best)):
            self.best = c
        return failed


def _split(items: list[int], n: int) -> list[list[int]]:
    """``items`` in ``n`` chunks as even as can be (the first ones larger)."""
    k, r = divmod(len(items), n)
    out, at = [], 0
    for i in range(n):
        size = k + (1 if i < r else 0)
        if size:
            out.append(items[at:at + size])
        at += size
    return out


def _smaller(a: Candidate, b: Candidate) -> bool:
    return (len(a.steps), a.time_limit, a.concurrency) <= (len(b.steps), b.time_limit,
                                                            b.concurrency)


def describe(c: Candidate) -> str:
    n = len(c.steps)
    return (f"{n} fault step{'s' * (n != 1)}, time limit {c.time_limit:g} s, "
            f"{c.concurrency} client{'s' * (c.concurrency != 1)}")


# --------------------------------------------------------------------------- real tries


class ProcessRunner:
    """Tries a candidate as a real ``raftlab run`` in its own process (``procs.spawn``):
    the candidate's fault file and the workload file are written into ``work``, runs
    land in ``work/runs``, their console output in ``work/console``."""

    def __init__(self, plan: ReplayPlan, steps: Sequence[Step], work: Path,
                 deadline: float) -> None:
        self.plan = plan
        self.steps = list(steps)
        self.work = work
        self.deadline = deadline  # time.monotonic() after which a try is stopped
        self.count = 0
        self.stopping = False
        self._proc: subprocess.Popen[bytes] | None = None
        self.workload_file = work / "workload.yaml"
        self.workload_file.write_text(workload_yaml(
            plan.workload, f"The workload of {plan.source} (from its scenario.yaml)."))

    def faults_text(self, c: Candidate, header: str = "") -> str:
        r = self.plan.resolved
        return faults_yaml(f"{r.faults_name.removesuffix('-replay')}-shrunk",
                           f"The smallest scenario found that still failed, shrunk from "
                           f"{self.plan.source}.",
                           [self.steps[i] for i in c.steps], c.time_limit, header,
                           self.plan.faults.initial_leader,
                           (self.plan.faults.election_timeout, self.plan.faults.heartbeat),
                           self.plan.faults.system_options)

    def argv(self, c: Candidate, faults: Path) -> list[str]:
        r = self.plan.resolved
        argv = [sys.executable, "-m", "lab.cli", "run", str(self.workload_file), str(faults),
                "--system", r.system, "--nodes", str(r.nodes), "--seed", str(r.seed),
                "--time-limit", f"{c.time_limit:g}", "--concurrency", str(c.concurrency),
                "--rate", f"{r.rate:g}", "--out", str(self.work / "runs")]
        for b in r.bugs:
            argv += ["--bug", b]
        return argv

    def __call__(self, c: Candidate, k: int) -> Try:
        self.count += 1
        faults = self.work / "candidates" / f"{self.count:03d}.yaml"
        faults.parent.mkdir(parents=True, exist_ok=True)
        faults.write_text(self.faults_text(c, f"shrink candidate {self.count} (try {k})"))
        log = self.work / "console" / f"{self.count:03d}.log"
        t0 = time.monotonic()
        self._proc = procs.spawn(self.argv(c, faults), log_path=log, cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        code: int | None
        try:
            timeout = max(30.0, min(c.time_limit * 3 + 300, self.deadline - time.monotonic()))
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            self._finish(self._proc)
        finally:
            self._proc = None
        run_dir = run_dir_from(log)
        results = (read_results(run_dir) or {})
        verdict = str(results.get("verdict") or results.get("exit_reason")
                      or (f"raftlab run exited with {code}" if code is not None
                          else "stopped: over the budget"))
        return Try(code == 1 and results.get("verdict") == "invalid", verdict,
                   time.monotonic() - t0, str(run_dir) if run_dir else None,
                   self.plan.resolved.seed)

    @staticmethod
    def _finish(proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, None)):
            procs.signal_process(proc, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def interrupt(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        print(f"shrink: {signal.Signals(signum).name}: stopping after the current try",
              flush=True)
        if self._proc is not None:
            procs.signal_process(self._proc, signal.SIGINT)  # the run stops cleanly



# --------------------------------------------------------------------------- the command


def work_dir_for(run_dir: Path) -> Path:
    """``<reports>/shrink/<scenario>-<run>/`` (``-2`` and so on when taken)."""
    from lab.report.index_page import root_of

    root = root_of(run_dir) or REPORTS
    d = run_dir.resolve()
    out = fresh_dir(root / "shrink" / f"{d.parent.name}-{d.name}")
    out.mkdir(parents=True)
    return out


def _failing(run_dir: Path) -> str | None:
    """Why ``run_dir`` is not a failing run, or None if it is one."""
    run = RunDir(run_dir)
    if not RunDir.is_run(run_dir) or run.missing(SCENARIO):
        return (f"{run_dir}: not a run directory (needs {SCENARIO}, {SCHEDULE} and "
                f"{RESULTS})")
    results = run.read_results()
    if results is None:
        return f"{run_dir}: no readable {RESULTS}, so no verdict to shrink"
    verdict = results.verdict
    if verdict != "invalid":
        return (f"{run_dir}: not a failing run (verdict: {verdict or 'none'}); shrink needs "
                "a run whose verdict is invalid")
    return None


def _workload_arg(plan: ReplayPlan, out: Path) -> str:
    """The workload file for the scenario's command: the original one when it still
    holds the same workload, else a copy written next to ``out``."""
    w = plan.workload
    original = Path(w.path)
    for p in (original, ROOT / original):
        try:
            if p.is_file() and replace(load_workload(p), path=w.path) == w:
                return _shown(p)
        except ScenarioError:
            pass
    copy = out.with_name(f"{out.stem}-workload.yaml")
    copy.write_text(workload_yaml(w, f"The workload of {plan.source}."))
    return _shown(copy)


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p.resolve())


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_command(plan: ReplayPlan, workload: str, faults: str, c: Candidate) -> str:
    r = plan.resolved
    parts = ["raftlab", "run", workload, faults]
    if r.system != DEFAULT_SYSTEM:
        parts += ["--system", r.system]
    parts += ["--nodes", str(r.nodes), "--seed", str(r.seed)]
    for b in r.bugs:
        parts += ["--bug", b]
    if c.concurrency != r.workload.clients:
        parts += ["--concurrency", str(c.concurrency)]
    if r.rate != r.workload.rate:
        parts += ["--rate", f"{r.rate:g}"]
    return " ".join(parts)


def shrink_cli(run_dir: Path, out: Path | None, budget: float, attempts: int) -> ExitCode:
    """``raftlab shrink``: ``budget`` (seconds, more than 0) and ``attempts`` (at least 1)
    were checked when the arguments were parsed."""
    if budget <= 0 or attempts < 1:
        raise ValueError(f"shrink_cli: budget {budget} and attempts {attempts} must be "
                         "positive")
    if out is not None and out.is_dir():
        print(f"raftlab: --out {out}: is a directory (give the file to write)",
              file=sys.stderr)
        return ExitCode.BAD_INPUT
    why = _failing(run_dir)
    if why:
        print(f"raftlab: {why}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        plan = load_replay(run_dir)
    except (ReplayError, ScenarioError) as e:
        print(f"raftlab: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    steps = [s for s in plan.faults.schedule if s.target != ("none",)]  # skipped: no effect
    dropped = len(plan.faults.schedule) - len(steps)
    r = plan.resolved
    base = Candidate(tuple(range(len(steps))), r.time_limit, r.concurrency)
    work = work_dir_for(run_dir)
    out = out or work / f"{r.faults_name.removesuffix('-replay')}-shrunk.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"shrinking {run_dir}: {describe(base)}"
          + (f" ({dropped} skipped step{'s' * (dropped != 1)} left out: they did nothing)"
             if dropped else ""))
    print(f"budget {_minutes(budget)}; each candidate is tried up to {attempts} "
          f"time{'s' * (attempts != 1)} with seed {r.seed} and counts as still failing if "
          f"at least 1 try is invalid; work directory: {work}", flush=True)
    runner = ProcessRunner(plan, steps, work, time.monotonic() + budget + 60)
    old = {s: signal.signal(s, runner.interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        shrinker = Shrinker(base, steps, runner, budget=budget, attempts=attempts,
                            stop=lambda: runner.stopping)
        outcome = shrinker.search()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    failed_runs = [t for t in outcome.tries if t["failed"]]
    (work / "shrink.json").write_text(json.dumps({
        "run_dir": str(run_dir), "base": asdict(base),
        "best": asdict(outcome.best) if outcome.best else None,
        "stop_reason": outcome.stop_reason, "attempts": attempts, "budget_s": budget,
        "seed": r.seed, "tries": outcome.tries}, indent=2))
    print()
    runs = len(outcome.tries)
    stats = (f"{outcome.candidates} candidate{'s' * (outcome.candidates != 1)}, {runs} "
             f"run{'s' * (runs != 1)}, {len(failed_runs)} invalid; up to {attempts} "
             f"tr{'ies' if attempts != 1 else 'y'} per candidate, failing if 1 is invalid; "
             f"stopped: {outcome.stop_reason}")
    print(f"before: {describe(base)}")
    if outcome.best is None:
        print("after:  nothing failed again " + {
            "budget": "within the budget",
            "interrupted": "before the shrink was interrupted"}.get(
                outcome.stop_reason, "(not even the original schedule)"))
        print(stats)
        print(f"work directory: {work}")
        return ExitCode.UNKNOWN
    best = outcome.best
    print(f"after:  {describe(best)}"
          + ("" if outcome.smaller else " (the original is already minimal)"))
    print(stats)
    last_fail = next((t for t in reversed(failed_runs)
                      if Candidate(**t["candidate"]) == best), None)
    workload = _workload_arg(plan, out)
    command = run_command(plan, workload, _shown(out), best)
    stored = RunDir(run_dir).read_results()
    verdict = str(stored.get("verdict_reason", "")) if stored is not None else ""
    header = "\n".join([
        f"Shrunk by `raftlab shrink` from the failing run {run_dir.resolve()}",
        f"  (faults {r.faults_name}, verdict invalid: {verdict})." if verdict else
        f"  (faults {r.faults_name}, verdict invalid).",
        f"Before: {describe(base)}; after: {describe(best)}.",
        f"Seeds tried: {r.seed} (every try used the original run's seed, so the same "
        "operation stream).",
        f"Tries: {stats}.",
        *([f"Last failing run of this scenario: {last_fail['run_dir']}"]
          if last_fail and last_fail.get("run_dir") else []),
        "Real runs are not deterministic: this may need a few runs to fail again.",
        "Run it:",
        f"  {command}",
    ])
    out.write_text(runner.faults_text(best, header))
    print(f"shrunk scenario: {out}")
    print(f"run it: {command}")
    return ExitCode.VALID
