"""Mutation testing as a benchmark: how many realistic Raft bugs each test layer catches.

Each mutant is a small patch in ``bench/mutants/NAME.patch`` (a header of ``#`` lines
saying what the bug is, where it comes from and what it breaks, then a ``git diff``). For
every mutant (or those named with ``--only``) this script

1. copies the project (lab/, nodes/, tests/, faults/, workloads/, pyproject.toml) into a
   temporary directory and applies the patch there with ``git apply`` (a patch that does
   not apply is an error, never a silent skip); the product itself is never touched;
2. **simulator**: runs the simulator suites (the Raft core in tests/raftsim.py's
   deterministic cluster, the Hypothesis state machine, the state machine's and the
   WAL's unit tests) in the copy, stopping at the first failure: caught = a test failed
   (or the suites hung past ``--sim-timeout``, a liveness failure);
3. **lab**: repeats the lab's shipped generic experiments with fresh seeds in the copy,
   so that the members the lab starts (``python -m nodes``) run the mutant's code, until
   one is invalid or ``--lab-budget`` is spent. It uses ``raftlab explore`` when the
   copy has it, otherwise a loop of ``raftlab run`` over the generic workload x fault
   pairs;

then prints a table and a summary line (of the mutants the simulator catches, the share
the lab catches too) and, with ``--json``, writes every result. ``--check`` only verifies
that every patch applies and the patched copy imports (seconds; used by a test).

tests/test_raft_bugs.py is left out of the simulator set on purpose: it asserts that the
simulator catches the product's *seeded* bugs (``Config.bugs``), so it measures those
bugs, not the mutant; tests that start real processes (test_processes, test_node_input,
...) are the lab's side and are left out too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "bench" / "mutants"
COPY_ITEMS = ("lab", "nodes", "tests", "faults", "workloads", "pyproject.toml", "conftest.py")
SIM_TESTS = ("tests/test_raft_sim.py", "tests/test_raft_stateful.py", "tests/test_kv.py",
             "tests/test_wal.py")
WORKLOADS = ("register", "list-append", "bank", "set")
FAULTS = ("explore",)  # the generic composed-fault scenario (faults/explore.yaml)
RUN_SECONDS = 30  # client time of one fallback ``raftlab run``


class PatchError(Exception):
    """A mutant's patch does not apply, or the patched copy does not import."""


# ----------------------------------------------------------------------------- patches

def mutant_names() -> list[str]:
    return sorted(p.stem for p in MUTANTS.glob("*.patch"))


def patch_path(name: str) -> Path:
    return MUTANTS / f"{name}.patch"


def header(text: str) -> list[str]:
    """The comment lines before the first ``diff --git`` (git apply ignores them)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            break
        lines.append(line)
    return lines


def summary_of(text: str) -> str:
    """The first sentence-ish line of the header's description."""
    for line in header(text):
        s = line.lstrip("#").strip()
        if s and not s.lower().startswith("mutant:"):
            return s
    return ""


def changed_files(text: str) -> list[str]:
    files = []
    for m in re.finditer(r"^diff --git a/(\S+) b/(\S+)$", text, re.M):
        files += [m[1], m[2]]
    return sorted(set(files))


def copy_project(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for item in COPY_ITEMS:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dest / item)


def git_env(copy: Path) -> dict[str, str]:
    # Outside a repository ``git apply`` patches the working directory; the ceiling keeps
    # it from finding a repository above a temporary directory that happens to be in one.
    return {**os.environ, "GIT_CEILING_DIRECTORIES": str(copy.parent)}


def apply_patch(name: str, copy: Path, check: bool = False) -> None:
    p = patch_path(name)
    if not p.is_file():
        raise PatchError(f"{name}: no such mutant ({p})")
    cmd = ["git", "apply", "--whitespace=nowarn", *(["--check"] if check else []), str(p)]
    r = subprocess.run(cmd, cwd=copy, env=git_env(copy), capture_output=True, text=True)
    if r.returncode != 0:
        raise PatchError(f"{name}: the patch does not apply: {r.stderr.strip()}")


def child_env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(copy: Path) -> None:
    """The patched copy imports, and ``nodes`` resolves to the copy, not the product."""
    code = ("import nodes, nodes.raft, nodes.server, nodes.kv, nodes.wal, nodes.progress, "
            "lab.cli; print(nodes.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=copy, env=child_env(copy),
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise PatchError(f"the patched copy does not import: {r.stderr.strip()[-500:]}")
    where = Path(r.stdout.strip()).resolve()
    if copy.resolve() not in where.parents:
        raise PatchError(f"'nodes' resolves to {where}, not to the copy {copy}")


# ----------------------------------------------------------------------------- results

@dataclass
class SimResult:
    caught: bool = False
    seconds: float = 0.0
    test: str | None = None  # the first failing test (or "timeout")
    summary: str = ""


@dataclass
class LabResult:
    caught: bool = False
    runs: int = 0
    minutes: float | None = None  # wall-clock minutes to the first detection
    evidence: str | None = None  # the first anomaly of the failing run
    run_dir: str | None = None
    spent_minutes: float = 0.0
    mode: str = ""  # "explore" or "run"
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MutantResult:
    name: str
    description: str
    sim: SimResult | None = None
    lab: LabResult | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- simulator

FAIL_RE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def run_sim(copy: Path, timeout: float) -> SimResult:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "-p", "no:randomly", *SIM_TESTS]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=copy, env=child_env(copy), capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return SimResult(True, round(time.monotonic() - t0, 1), "timeout",
                         f"the simulator suites did not finish in {timeout:g} s")
    secs = round(time.monotonic() - t0, 1)
    out = r.stdout + r.stderr
    tail = [ln for ln in out.splitlines() if ln.strip()]
    last = tail[-1] if tail else ""
    if r.returncode == 0:
        return SimResult(False, secs, None, last)
    m = FAIL_RE.search(out)
    if r.returncode not in (1, 2) and not m:
        raise RuntimeError(f"pytest exited {r.returncode}: {last}")
    test = m[1] if m else f"pytest exit {r.returncode}"
    m2 = re.search(r"^E\s+(\S.*)$", out, re.M)  # the first line of the error
    reason = m2[1][:300] if m2 else ""
    return SimResult(True, secs, test, reason or last)


# ----------------------------------------------------------------------------- lab

def has_explore(copy: Path) -> bool:
    r = subprocess.run([sys.executable, "-m", "lab.cli", "explore", "--help"], cwd=copy,
                       env=child_env(copy), capture_output=True, text=True, timeout=120)
    return r.returncode == 0


def first_anomaly(out_dir: Path) -> tuple[str | None, str | None]:
    """(evidence, run dir) of the earliest invalid run under ``out_dir``."""
    found = []
    for res in out_dir.rglob("results.json"):
        try:
            data = json.loads(res.read_text())
        except (OSError, ValueError):
            continue
        if data.get("verdict") != "invalid":
            continue
        anomalies = (data.get("checker") or {}).get("anomalies") or []
        kind = None
        if anomalies and isinstance(anomalies[0], dict):
            kind = anomalies[0].get("type") or anomalies[0].get("kind")
        reason = str(data.get("verdict_reason") or "")
        evidence = f"{kind}: {reason}" if kind else reason
        found.append((res.stat().st_mtime, evidence[:300], str(res.parent)))
    if not found:
        return None, None
    found.sort()
    return found[0][1], found[0][2]


def run_lab(copy: Path, budget_s: float, workloads: list[str], faults: list[str],
            seed: int, nodes: int, keep: Path | None) -> LabResult:
    out_root = Path(tempfile.mkdtemp(prefix="lab-", dir=copy))
    rng = random.Random(seed)
    res = LabResult(mode="explore" if has_explore(copy) else "run")
    t0 = time.monotonic()
    pairs = [(w, f) for f in faults for w in workloads]
    k = 0
    try:
        while time.monotonic() - t0 < budget_s:
            w, f = pairs[k % len(pairs)]
            k += 1
            left = budget_s - (time.monotonic() - t0)
            out = out_root / f"{k:03d}"
            if res.mode == "explore":
                # One exploration per pair in turn, each with an equal share of what is left.
                share = max(60.0, left / max(1, len(pairs) - (k - 1) % len(pairs)))
                cmd = [sys.executable, "-m", "lab.cli", "explore", w, f,
                       "--budget", f"{int(min(share, left))}s", "--nodes", str(nodes),
                       "--seed", str(rng.randrange(1, 2**31)), "--out", str(out),
                       "--no-shrink"]
                limit = min(share, left) + 600
            else:
                s = rng.randrange(1, 2**31)
                cmd = [sys.executable, "-m", "lab.cli", "run", w, f, "--nodes", str(nodes),
                       "--time-limit", str(RUN_SECONDS), "--seed", str(s), "--out", str(out)]
                limit = RUN_SECONDS + 600
            started = time.monotonic()
            try:
                r = subprocess.run(cmd, cwd=copy, env=child_env(copy), capture_output=True,
                                   text=True, timeout=limit)
                code = r.returncode
                tail = (r.stderr.strip().splitlines() or [""])[-1][:200]
            except subprocess.TimeoutExpired:
                code, tail = -1, f"killed after {limit:g} s"
            entry: dict[str, Any] = {"cmd": " ".join(cmd[3:]), "exit": code,
                                     "seconds": round(time.monotonic() - started, 1)}
            if res.mode == "explore":
                runs, ttfa = _explore_stats(out)
                entry["runs"] = runs
                res.runs += runs or 0
            else:
                res.runs += 1
            if code not in (0, 1, 3):
                entry["error"] = tail
            res.log.append(entry)
            if code == 1:
                res.caught = True
                res.evidence, res.run_dir = first_anomaly(out)
                if res.mode == "explore" and ttfa is not None:
                    res.minutes = round((started - t0 + ttfa) / 60, 2)
                else:
                    res.minutes = round((time.monotonic() - t0) / 60, 2)
                break
    finally:
        res.spent_minutes = round((time.monotonic() - t0) / 60, 2)
        if keep is not None:
            shutil.copytree(out_root, keep, dirs_exist_ok=True)
            if res.run_dir:
                res.run_dir = str(keep / Path(res.run_dir).relative_to(out_root))
    return res


def _explore_stats(out: Path) -> tuple[int | None, float | None]:
    try:
        data = json.loads((out / "explore.json").read_text())
    except (OSError, ValueError):
        return None, None
    runs = data.get("runs")
    if isinstance(runs, list):
        runs = len(runs)
    ttfa = data.get("time_to_first_anomaly_s")
    return (runs if isinstance(runs, int) else None,
            float(ttfa) if isinstance(ttfa, (int, float)) else None)


# ----------------------------------------------------------------------------- driver

def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 20m, 1h)")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


def check_all(names: list[str]) -> int:
    """Every patch has a header, touches only nodes/, applies, and the copy imports."""
    bad = 0
    for name in names:
        text = patch_path(name).read_text()
        problems = []
        if not any(ln.startswith("#") and ln.strip("# ") for ln in header(text)):
            problems.append("no header comment")
        files = changed_files(text)
        if not files or any(not f.startswith("nodes/") for f in files):
            problems.append(f"changes files outside nodes/: {files}")
        with tempfile.TemporaryDirectory(prefix=f"raftlab-mutant-{name}-") as tmp:
            copy = Path(tmp) / "project"
            copy.mkdir()
            copy_project(copy)
            try:
                apply_patch(name, copy)
                check_imports(copy)
            except PatchError as e:
                problems.append(str(e))
        print(f"{name:<30} {'ok' if not problems else '; '.join(problems)}")
        bad += bool(problems)
    print(f"{len(names) - bad} of {len(names)} mutants apply and import")
    return 1 if bad else 0


def measure(name: str, a: argparse.Namespace) -> MutantResult:
    text = patch_path(name).read_text()
    result = MutantResult(name, summary_of(text))
    with tempfile.TemporaryDirectory(prefix=f"raftlab-mutant-{name}-") as tmp:
        copy = Path(tmp) / "project"
        copy.mkdir()
        copy_project(copy)
        apply_patch(name, copy)  # PatchError propagates: a mutant that does not apply is fatal
        check_imports(copy)
        if not a.lab_only:
            result.sim = run_sim(copy, a.sim_timeout)
            s = result.sim
            print(f"  simulator: {'CAUGHT' if s.caught else 'missed'} in {s.seconds:.0f} s"
                  + (f" by {s.test}" if s.test else ""), flush=True)
        if not a.sim_only:
            keep = a.keep_runs / name if a.keep_runs else None
            seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
            result.lab = run_lab(copy, a.lab_budget, a.workloads, a.faults, seed, a.nodes,
                                 keep)
            lab = result.lab
            print(f"  lab ({lab.mode}): {'CAUGHT' if lab.caught else 'missed'} after "
                  f"{lab.runs} runs, {lab.spent_minutes:.1f} min"
                  + (f": {lab.evidence}" if lab.evidence else ""), flush=True)
    return result


def table(results: list[MutantResult]) -> str:
    rows = [("mutant", "simulator", "lab", "runs", "minutes", "evidence")]
    for r in results:
        if r.error:
            rows.append((r.name, "error", "", "", "", r.error[:80]))
            continue
        sim = "-"
        if r.sim:
            sim = (f"caught ({r.sim.seconds:.0f}s, {_short(r.sim.test)})" if r.sim.caught
                   else f"missed ({r.sim.seconds:.0f}s)")
        lab = runs = minutes = evidence = "-"
        if r.lab:
            lab = "caught" if r.lab.caught else "missed"
            runs = str(r.lab.runs)
            minutes = (f"{r.lab.minutes:.1f}" if r.lab.minutes is not None
                       else f">{r.lab.spent_minutes:.1f}")
            evidence = (r.lab.evidence or "")[:70]
        rows.append((r.name, sim, lab, runs, minutes, evidence))
    keep = [0]
    keep += [1] if any(r.sim for r in results) else []
    keep += [2, 3, 4, 5] if any(r.lab for r in results) else []
    rows = [tuple(row[i] for i in keep) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(test: str | None) -> str:
    return (test or "").split("/")[-1]


def summary(results: list[MutantResult]) -> str:
    done = [r for r in results if not r.error]
    parts = []
    sim = [r for r in done if r.sim]
    if sim:
        parts.append(f"simulator caught {sum(r.sim.caught for r in sim)} of {len(sim)}")
    lab = [r for r in done if r.lab]
    if lab:
        parts.append(f"lab caught {sum(r.lab.caught for r in lab)} of {len(lab)}")
    both = [r for r in done if r.sim and r.lab and r.sim.caught]
    if both:
        got = sum(r.lab.caught for r in both)
        parts.append(f"of the {len(both)} the simulator catches, the lab catches "
                     f"{got} ({got / len(both):.0%})")
    return "; ".join(parts) if parts else "nothing measured"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="measure only these mutants")
    p.add_argument("--check", action="store_true",
                   help="only check that every patch applies and the copy imports")
    p.add_argument("--sim-only", action="store_true", help="run the simulator part only")
    p.add_argument("--lab-only", action="store_true", help="run the lab part only")
    p.add_argument("--lab-budget", type=parse_duration, default=parse_duration("20m"),
                   metavar="DURATION", help="lab time per mutant, e.g. 3m (default: 20m)")
    p.add_argument("--sim-timeout", type=parse_duration, default=parse_duration("15m"),
                   metavar="DURATION", help="simulator suites' time limit (default: 15m)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), metavar="W",
                   help=f"lab workloads (default: {' '.join(WORKLOADS)})")
    p.add_argument("--faults", nargs="+", default=list(FAULTS), metavar="F",
                   help=f"lab fault scenarios (default: {' '.join(FAULTS)})")
    p.add_argument("--nodes", type=int, default=5, help="cluster size of lab runs (default 5)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the lab runs' seeds (default: a fresh one per mutant)")
    p.add_argument("--keep-runs", type=Path, default=None, metavar="DIR",
                   help="copy each mutant's lab run directories to DIR/NAME")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write every result as JSON")
    a = p.parse_args(argv)
    if a.sim_only and a.lab_only:
        p.error("--sim-only and --lab-only exclude each other")
    names = mutant_names()
    if a.only:
        unknown = sorted(set(a.only) - set(names))
        if unknown:
            p.error(f"unknown mutants: {', '.join(unknown)} (known: {', '.join(names)})")
        names = [n for n in names if n in a.only]
    if not names:
        p.error(f"no mutants in {MUTANTS}")
    if a.check:
        return check_all(names)
    results = []
    t0 = time.monotonic()
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}", flush=True)
        results.append(measure(name, a))
        if a.json:
            _write_json(a.json, results, time.monotonic() - t0)
    print()
    print(table(results))
    print()
    print(summary(results))
    print(f"total {(time.monotonic() - t0) / 60:.1f} min")
    if a.json:
        _write_json(a.json, results, time.monotonic() - t0)
    return 0


def _write_json(path: Path, results: list[MutantResult], seconds: float) -> None:
    path.write_text(json.dumps({"mutants": [asdict(r) for r in results],
                                "summary": summary(results),
                                "seconds": round(seconds, 1)}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
