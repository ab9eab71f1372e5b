"""Suites: many experiments in a row, for the nightly run and the detection matrix.

A suite file (YAML, validated like scenario files: ``FILE:LINE: what was expected``)::

    name: quick
    description: What it is for.
    budget: 10m            # wall-clock budget; runs that would not fit are skipped
    time_limit: 15s        # per run
    nodes: 3
    systems: [raftkv]      # raftkv and/or etcd
    workloads: [register, set]          # with faults: every workload x every fault file
    faults: [none, kill-leader]
    pairs: [[set, isolate-leader]]      # and/or explicit workload/fault pairs
    seeds: 2               # a count (seeds 1..K) or a list of seeds
    bugs: [none, stale-read]            # raftkv seeded bugs, one per row; none = correct

Every run is its own ``raftlab run`` process (a crash or hang of one run cannot take the
suite down; a run that overstays its time limit by far is stopped). Each result is sorted
into ``valid``, ``anomaly``, ``unknown`` or ``harness error``, and ``summary.json`` is
rewritten after every run, so a suite cut short still says what it found. The exit code
is the worst verdict: 1 if any run found an anomaly, else 3 if any was unknown, failed
in the harness or was skipped, else 0.
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

import yaml

from lab import procs
from lab.exitcode import ExitCode
from lab.paths import ROOT, SUITES
from lab.scenario import ScenarioError, YamlDoc, compose_yaml
from lab.store import RunDir

CATEGORIES = ("valid", "anomaly", "unknown", "harness error", "skipped")
#: The top-level keys of a suite file, in the documented order.
SUITE_KEYS = ("name", "description", "budget", "time_limit", "nodes", "systems", "workloads",
              "faults", "pairs", "seeds", "bugs", "concurrency")


@dataclass(frozen=True)
class Cell:
    """One run of a suite."""

    system: str
    workload: str
    faults: str
    seed: int
    bug: str | None  # None: the system as it is
    time_limit: float
    nodes: int
    concurrency: int | None = None

    @property
    def pair(self) -> str:
        return f"{self.workload} \u00d7 {self.faults}"

    @property
    def row(self) -> str:
        return self.system if self.bug is None else f"{self.system} +{self.bug}"

    def argv(self, out: Path) -> list[str]:
        argv = [sys.executable, "-m", "lab.cli", "run", self.workload, self.faults,
                "--system", self.system, "--nodes", str(self.nodes),
                "--time-limit", f"{self.time_limit:g}", "--seed", str(self.seed),
                "--out", str(out)]
        if self.concurrency:
            argv += ["--concurrency", str(self.concurrency)]
        if self.bug:
            argv += ["--bug", self.bug]
        return argv


@dataclass
class Suite:
    name: str
    description: str
    path: str
    budget: float
    cells: list[Cell]


@dataclass
class Outcome:
    """What one run of a suite came to."""

    cell: Cell
    category: str
    exit_code: int | None = None
    run_dir: str | None = None
    reason: str = ""
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.cell), "pair": self.cell.pair, "row": self.cell.row,
                "category": self.category, "exit_code": self.exit_code,
                "run_dir": self.run_dir, "reason": self.reason,
                "seconds": round(self.seconds, 1), "counts": self.counts}


# --------------------------------------------------------------------------- loading


def find_suite(name: str) -> Path:
    """A suite file as given, or a built-in one (``lab/suites/NAME.yaml``) by name."""
    p = Path(name)
    if p.exists() or (p.suffix in (".yaml", ".yml") and "/" in name):
        return p
    builtin = SUITES / f"{name}.yaml"
    return builtin if builtin.exists() else p


def _scenario_file(doc: YamlDoc, node: yaml.Node, folder: str) -> str:
    name = doc.string(node, f"a {folder[:-1]}")
    for candidate in (Path(name), ROOT / name, ROOT / folder / name,
                      ROOT / folder / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate.resolve())  # runs start in the project's root
    raise doc.fail(node, f"no {folder[:-1]} file {name!r} (looked in {folder}/)")


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file; raises :class:`ScenarioError` (file:line)."""
    from lab.scenario import ScenarioError, check_members, check_system, load_faults, load_workload
    from lab.systems import DEFAULT_SYSTEM, SYSTEMS, all_bugs, preflight, spec, to_ms

    doc, root = compose_yaml(path)
    m = doc.mapping(root, "a suite")
    doc.check_keys(m, SUITE_KEYS, ("name", "description"), "a suite", root)

    def opt(key: str, conv: Callable[[yaml.Node, str], Any], default: Any) -> Any:
        return conv(m[key][1], key) if key in m else default

    budget = opt("budget", doc.duration, 3600.0)
    limit = opt("time_limit", doc.duration, 30.0)
    if limit <= 0:
        raise doc.fail(m["time_limit"][1], "time_limit must be more than 0")
    nodes = opt("nodes", lambda n, w: doc.integer(n, w, 1, 9), 3)
    concurrency = opt("concurrency", lambda n, w: doc.integer(n, w, 1, 1000), None)
    systems = [doc.one_of(n, tuple(SYSTEMS), "system")
               for n in opt("systems", doc.seq, [])] or [DEFAULT_SYSTEM]
    pairs: list[tuple[str, str]] = []
    workloads = [_scenario_file(doc, n, "workloads") for n in opt("workloads", doc.seq, [])]
    faults = [_scenario_file(doc, n, "faults") for n in opt("faults", doc.seq, [])]
    if bool(workloads) != bool(faults):
        raise doc.fail(root, "a suite with 'workloads' needs 'faults' too, and the other "
                             "way round")
    pairs += [(w, f) for w in workloads for f in faults]
    for node in opt("pairs", doc.seq, []):
        items = doc.seq(node, "a pair")
        if len(items) != 2:
            raise doc.fail(node, "a pair must be [workload, faults]")
        pairs.append((_scenario_file(doc, items[0], "workloads"),
                      _scenario_file(doc, items[1], "faults")))
    if not pairs:
        raise doc.fail(root, "a suite needs 'workloads' and 'faults', or 'pairs'")
    for w, f in pairs:  # every file must itself be valid before anything runs
        workload, faults_ = load_workload(Path(w)), load_faults(Path(f), limit)
        check_members(faults_, nodes)
        for system in systems:
            why = preflight(system, workload.model, (), to_ms(faults_.election_timeout),
                            to_ms(faults_.heartbeat))
            try:
                check_system(faults_, system)
            except ScenarioError as e:
                why = why or str(e)
            if why:
                raise doc.fail(m["systems"][1] if "systems" in m else root,
                               f"{system} with {Path(w).name} and {Path(f).name}: {why}")
    seeds_node = m["seeds"][1] if "seeds" in m else None
    if seeds_node is None:
        seeds = [1]
    elif isinstance(seeds_node, yaml.SequenceNode):
        seeds = [doc.integer(n, "a seed") for n in seeds_node.value]
    else:
        seeds = list(range(1, doc.integer(seeds_node, "seeds", 1, 1000) + 1))
    bugs: list[str | None] = []
    for n in opt("bugs", doc.seq, []):
        b = doc.one_of(n, ("none", *all_bugs()), "bug")
        bugs.append(None if b == "none" else b)
    bugs = bugs or [None]
    cells = [Cell(system, Path(w).stem if _builtin(w, "workloads") else w,
                  Path(f).stem if _builtin(f, "faults") else f, seed, bug, limit, nodes,
                  concurrency)
             for seed in seeds for system in systems for bug in bugs for w, f in pairs
             if bug is None or bug in spec(system).bugs]
    return Suite(doc.string(m["name"][1], "name"), " ".join(
        doc.string(m["description"][1], "description").split()), str(path), budget, cells)


def _builtin(path: str, folder: str) -> bool:
    p = Path(path).resolve()
    return p.parent == (ROOT / folder).resolve()


# --------------------------------------------------------------------------- running


def classify(exit_code: int | None, results: dict[str, Any] | None) -> tuple[str, str]:
    """The category of a finished run, and why."""
    results = results or {}
    reason = str(results.get("verdict_reason") or results.get("exit_reason") or "")
    verdict = results.get("verdict")
    if exit_code == ExitCode.VALID and verdict == "valid":
        return "valid", reason
    if exit_code == ExitCode.INVALID and verdict == "invalid":
        return "anomaly", reason
    harness = str(results.get("exit_reason", "")).startswith("harness error")
    if exit_code == ExitCode.UNKNOWN and results and not harness:
        return "unknown", reason
    if exit_code is None:
        return "harness error", "the run did not finish in time and was stopped"
    return "harness error", reason or f"raftlab run exited with {exit_code}"


class Runner:
    """Runs the cells of a suite one after another into ``out`` (a nightly directory)."""

    def __init__(self, suite: Suite, out: Path, say: Callable[[str], None] = print) -> None:
        self.suite = suite
        self.out = out
        self.say = say
        self.outcomes: list[Outcome] = []
        self.started = time.time()
        self.stopping = False
        self._proc: subprocess.Popen[bytes] | None = None

    def run(self) -> list[Outcome]:
        self.out.mkdir(parents=True, exist_ok=True)
        overhead = 30.0  # seconds a run costs beyond its time limit; learnt as runs finish
        old = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for k, cell in enumerate(self.suite.cells):
                left = self.suite.budget - (time.time() - self.started)
                if self.stopping or left < cell.time_limit + overhead:
                    why = "interrupted" if self.stopping else "not enough budget left"
                    self.outcomes.append(Outcome(cell, "skipped", reason=why))
                    continue
                self.say(f"[{k + 1}/{len(self.suite.cells)}] {cell.row}: {cell.pair} "
                         f"seed {cell.seed} ...")
                o = self._one(cell, k)
                self.outcomes.append(o)
                if o.category != "skipped":
                    overhead = max(overhead * 0.5 + (o.seconds - cell.time_limit) * 0.5, 10.0)
                self.say(f"    {o.category}: {o.reason or '-'} ({o.seconds:.0f} s)"
                         + (f"  {o.run_dir}" if o.run_dir else ""))
                self.write()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self.write()
        return self.outcomes

    def _stop(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            return  # once is enough: a second signal could cut the run's own check short
        self.stopping = True
        self.say(f"nightly: {signal.Signals(signum).name}: stopping after the current run")
        if self._proc is not None and self._proc.poll() is None:
            procs.signal_process(self._proc, signal.SIGINT)  # it stops cleanly, exit 3

    def _one(self, cell: Cell, k: int) -> Outcome:
        log = self.out / "console" / f"{k + 1:03d}.log"
        t0 = time.monotonic()
        self._proc = procs.spawn(cell.argv(self.out), log_path=log, cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        left = self.suite.budget - (time.time() - self.started)
        try:
            code = procs.wait_or_end(
                self._proc, max(cell.time_limit + 60, min(cell.time_limit * 3 + 300, left + 60)))
        finally:
            self._proc = None
        run_dir = run_dir_from(log)
        results = read_results(run_dir)
        category, reason = classify(code, results)
        if self.stopping and category != "anomaly":
            category, reason = "unknown", "the suite was interrupted during this run"
        return Outcome(cell, category, code, str(run_dir) if run_dir else None, reason,
                       time.monotonic() - t0, dict((results or {}).get("counts", {})))

    def write(self) -> dict[str, Any]:
        summary = summarize(self.suite, self.outcomes, self.started)
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(self.out / "summary.json")
        try:
            from lab.report.nightly_page import render_nightly

            render_nightly(self.out, summary)
        except Exception as e:  # the page is a convenience; summary.json is the record
            self.say(f"nightly: summary page not rendered ({type(e).__name__}: {e})")
        return summary


def run_dir_from(log: Path) -> Path | None:
    try:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("run directory: "):
                return Path(line.split(": ", 1)[1].strip())
    except OSError:
        pass
    return None


def read_results(run_dir: Path | None) -> dict[str, Any] | None:
    """A run's ``results.json`` as plain values, or ``None`` when there is no run, no
    file, or no JSON object in it."""
    if run_dir is None:
        return None
    found = RunDir(run_dir).read_results()
    return found.data if found is not None else None


def worst_exit(outcomes: Sequence[Outcome]) -> ExitCode:
    cats = {o.category for o in outcomes}
    if "anomaly" in cats:
        return ExitCode.INVALID
    if not outcomes or cats - {"valid"}:
        return ExitCode.UNKNOWN
    return ExitCode.VALID


def summarize(suite: Suite, outcomes: Sequence[Outcome], started: float) -> dict[str, Any]:
    counts = {c: sum(o.category == c for o in outcomes) for c in CATEGORIES}
    return {"version": 1, "suite": suite.name, "description": suite.description,
            "suite_file": suite.path, "started": started,
            "seconds": round(time.time() - started, 1), "budget_s": suite.budget,
            "planned": len(suite.cells), "counts": counts,
            "exit_code": int(worst_exit(outcomes)), "matrix": matrix(outcomes),
            "runs": [o.to_json() for o in outcomes]}


# --------------------------------------------------------------------------- the matrix


def matrix(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Rows (system and seeded bug) x columns (workload x faults): invalid verdicts out of
    the runs that finished. For a seeded bug that is the detection rate; for a system as
    it is, every invalid verdict is a false alarm (or a real bug)."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[str, dict[str, dict[str, int]]] = {}
    for o in outcomes:
        if o.category == "skipped":
            continue
        r, c = o.cell.row, o.cell.pair
        if r not in rows:
            rows.append(r)
        if c not in cols:
            cols.append(c)
        cell = cells.setdefault(r, {}).setdefault(c, {"runs": 0, "invalid": 0, "unknown": 0,
                                                      "error": 0})
        cell["runs"] += 1
        cell["invalid"] += o.category == "anomaly"
        cell["unknown"] += o.category == "unknown"
        cell["error"] += o.category == "harness error"
    return {"rows": rows, "columns": cols, "cells": cells}


def matrix_text(m: dict[str, Any]) -> str:
    """The matrix as a plain-text table: ``x/K`` invalid, ``?n`` unknown, ``!n`` errors."""
    rows, cols, cells = m["rows"], m["columns"], m["cells"]
    if not rows:
        return "(no finished runs)"

    def cell(r: str, c: str) -> str:
        d = cells.get(r, {}).get(c)
        if not d:
            return "-"
        text = f"{d['invalid']}/{d['runs']}"
        if d["unknown"]:
            text += f" ?{d['unknown']}"
        if d["error"]:
            text += f" !{d['error']}"
        return text

    head = ["invalid / runs"] + [c for c in cols]
    body = [[r] + [cell(r, c) for c in cols] for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True))
             for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + ("\n(?n: n runs unknown, !n: n harness errors; rows without "
                               "a seeded bug: every invalid is a false alarm or a real bug)")


def nightly_dir(root: Path, suite: str) -> Path:
    """``ROOT/nightly/<date>/`` (a second suite on one day: ``<date>-2`` and so on)."""
    del suite
    from lab.run import fresh_dir

    return fresh_dir(root / "nightly" / time.strftime("%Y-%m-%d", time.localtime()))


def run_suite_cli(name: str, out_root: Path, say: Callable[[str], None] = print
                  ) -> ExitCode:
    """``raftlab nightly`` / ``raftlab matrix``: run a suite, print the matrix, exit code."""
    try:
        suite = load_suite(find_suite(name))
    except ScenarioError as e:
        print(f"raftlab: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    out = nightly_dir(out_root.resolve(), suite.name)
    say(f"suite {suite.name}: {len(suite.cells)} runs planned, budget "
        f"{suite.budget / 60:g} min; results in {out}")
    runner = Runner(suite, out, say)
    outcomes = runner.run()
    summary = runner.write()
    say("")
    say(matrix_text(summary["matrix"]))
    say("")
    counts = summary["counts"]
    say(", ".join(f"{c}: {counts[c]}" for c in CATEGORIES))
    say(f"summary: {out / 'summary.json'}")
    if (out / "index.html").exists():
        say(f"report: {out / 'index.html'}")
    return worst_exit(outcomes)
