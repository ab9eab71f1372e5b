"""``raftlab``: the lab's command line.

One parser, :func:`build_parser`: every subcommand sets ``func``, the function that runs
it. Each value is checked by its ``type=`` validator while the arguments are parsed and
:func:`validate` checks what involves several of them right after, so bad input is one
line on stderr and exit 2 before anything starts. Every exit code is an
:class:`~lab.exitcode.ExitCode`: 0 valid, 1 invalid (an anomaly was found), 2 bad input
or usage, 3 unknown (no verdict, or the lab's own failure).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.cliargs import Parser, number, one_of, whole_number
from lab.console import say
from lab.exitcode import ExitCode
from lab.paths import REPORTS, ROOT, find_builtin
from lab.scenario import DEFAULT_TIME_LIMIT
from lab.store import RunDir
from lab.systems import DEFAULT_SYSTEM, SYSTEMS, all_bugs, bugs_problem, spec
from lab.systems.raftkv.cluster import RaftkvCluster


def _say(text: str = "") -> None:
    """Print a line of a command's progress or summary; a reader who has gone
    (``raftlab run ... | head -1``) stops the printing, never the command."""
    say(text)


async def demo(size: int, base: Path) -> ExitCode:
    """Start a raftkv cluster, write and read through it, kill the leader, show the new
    leader, and stop cleanly, proving nothing is left behind."""
    cluster = RaftkvCluster(base, size=size)
    _say(f"starting a {size}-node raftkv cluster (logs under {base})")
    cluster.start_all()
    try:
        t0 = time.monotonic()
        leader = await cluster.wait_leader(timeout=15)
        _say(f"leader elected: {leader} after {time.monotonic() - t0:.2f} s")
        r = await cluster.request(leader, {"op": "write", "key": "greeting", "value": "hello"})
        _say(f"write greeting=hello via {leader}: {r}")
        r = await cluster.request(leader, {"op": "read", "key": "greeting"})
        _say(f"read greeting via {leader}: {r}")
        st = await cluster.statuses()
        for mid, s in sorted(st.items()):
            if s:
                _say(f"  {mid}: {s['role']:<9} term {s['term']} commit {s['commit']}")
        _say(f"killing the leader {leader} with SIGKILL")
        t_kill = time.monotonic()
        await cluster.kill(leader)
        new = await cluster.wait_leader(timeout=15, exclude=[leader])
        _say(f"new leader: {new} after {time.monotonic() - t_kill:.2f} s")
        r = await cluster.request(new, {"op": "read", "key": "greeting"})
        _say(f"read greeting via {new}: {r}")
        ok = bool(r and r.get("ok") and r.get("value") == "hello")
        _say(f"restarting {leader}")
        cluster.start(leader)
        await trio.sleep(1.0)
        st = await cluster.statuses()
        for mid, s in sorted(st.items()):
            if s:
                _say(f"  {mid}: {s['role']:<9} term {s['term']} commit {s['commit']}")
    finally:
        await cluster.stop_all()
    left = procs.descendants_alive(cluster.pids()) + procs.listening_ports(
        cluster.ports(), pids=cluster.pids(), marker=str(base))
    _say("stopped; processes or ports left behind: " + (str(left) if left else "none"))
    _say("the acknowledged write survived the leader's death" if ok
         else "the acknowledged write was NOT readable after failover")
    return ExitCode.VALID if ok and not left else ExitCode.INVALID


def cmd_run(a: argparse.Namespace, argv: list[str]) -> ExitCode:
    from lab.run import RunOptions, run_experiment
    from lab.scenario import (
        DEFAULT_TIME_LIMIT,
        ScenarioError,
        check_members,
        check_system,
        load_faults,
        load_workload,
    )

    if a.replay is not None:
        return cmd_replay(a, argv)
    try:
        workload = load_workload(find_builtin(a.workload, "workloads"))
        faults = load_faults(find_builtin(a.faults, "faults"), a.time_limit)
        check_members(faults, a.nodes)
        check_system(faults, a.system)
    except ScenarioError as e:
        print(f"raftlab: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    from lab.systems import preflight, to_ms

    why_not = preflight(a.system, workload.model, a.bug, to_ms(faults.election_timeout),
                        to_ms(faults.heartbeat), timing_at=f"{faults.path}:{faults.timing_line}")
    if why_not:
        print(f"raftlab: {why_not}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    limit = a.time_limit if a.time_limit is not None else (
        faults.time_limit if faults.time_limit is not None else DEFAULT_TIME_LIMIT)
    opts = RunOptions(nodes=a.nodes, time_limit=limit, seed=a.seed, concurrency=a.concurrency,
                      rate=a.rate, bugs=tuple(a.bug), toxiproxy=a.toxiproxy, out=a.out,
                      system=a.system, command=["raftlab", *argv])
    run_dir, results = trio.run(run_experiment, workload, faults, opts)
    return _say_run(run_dir, results, a.out)


def cmd_replay(a: argparse.Namespace, argv: list[str]) -> ExitCode:
    """``raftlab run --replay RUN_DIR``: the same experiment, its faults as applied."""
    from lab.replay import ReplayError, load_replay
    from lab.run import RunOptions, run_experiment
    from lab.scenario import ScenarioError, check_system
    from lab.systems import preflight

    try:
        plan = load_replay(a.replay)
        check_system(plan.faults, plan.resolved.system)
    except (ReplayError, ScenarioError) as e:
        print(f"raftlab: --replay: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    r = plan.resolved
    why_not = preflight(r.system, r.workload.model, r.bugs)
    if why_not:
        print(f"raftlab: {why_not}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    steps = len(plan.faults.schedule)
    _say(f"replaying {a.replay}: {steps} fault step{'s' * (steps != 1)} at their recorded "
         f"offsets ({plan.skipped} skipped in the original, skipped again; offsets counted "
         f"from {plan.origin_from}); {r.system}, {r.nodes} nodes, seed {r.seed}, "
         f"{r.time_limit:g} s, {r.concurrency} clients at {r.rate:g} ops/s"
         + (f", bugs: {', '.join(r.bugs)}" if r.bugs else "")
         + (f"; leader {plan.faults.initial_leader} when the clients start, as recorded"
            if plan.faults.initial_leader else ""))
    opts = RunOptions(nodes=r.nodes, time_limit=r.time_limit, seed=r.seed,
                      concurrency=r.concurrency, rate=r.rate, bugs=r.bugs,
                      toxiproxy=a.toxiproxy, out=a.out, system=r.system,
                      command=["raftlab", *argv], replay_of=str(a.replay.resolve()))
    run_dir, results = trio.run(run_experiment, r.workload, plan.faults, opts)
    return _say_run(run_dir, results, a.out)


def _say_run(run_dir: Path, results: dict[str, Any], out: Path) -> ExitCode:
    _say()
    counts = results.get("counts", {})
    _say(f"history: {results.get('events', 0)} events (ok {counts.get('ok', 0)}, "
         f"fail {counts.get('fail', 0)}, info {counts.get('info', 0)}); "
         f"proxy: {results.get('proxy')}; nothing left behind: "
         f"{results.get('nothing_left_behind')}")
    if results.get("exit_reason") != "completed":
        _say(f"run ended early: {results.get('exit_reason')}")
    return _check_and_say(run_dir, index_root=out)


def _check_and_say(run_dir: Path, index_root: Path | None = None) -> ExitCode:
    from lab.verdict import decide

    _say("checking the history ...")
    results = decide(run_dir)
    checker = results.get("checker", {})
    for anomaly in checker.get("anomalies", [])[:5]:
        text = str(anomaly.get("explanation", anomaly.get("type", ""))).strip()
        _say("  " + text.replace("\n", "\n  "))
    _say(f"run directory: {run_dir}")
    _say(_render_report(run_dir))
    _render_index(index_root, run_dir)
    verdict = str(results.get("verdict"))
    _say(f"verdict: {verdict} ({results.get('verdict_reason')})")
    for note in results.get("notes") or []:
        _say(f"note: {note}")
    return ExitCode.for_verdict(verdict)


def _render_report(run_dir: Path) -> str:
    """Render the run's page; a failure is logged to lab.log and never loses the verdict."""
    try:
        from lab.report import render_run

        return f"report: {render_run(run_dir)}"
    except Exception as e:
        import traceback

        try:
            with open(RunDir(run_dir).lab_log_path, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR rendering the report "
                          f"failed\n{traceback.format_exc()}")
        except OSError:
            pass
        return f"report: not rendered ({type(e).__name__}: {e}; see lab.log)"


def _render_index(root: Path | None, run_dir: Path) -> None:
    """Regenerate the runs index (after the run's own page). A failure is logged to the
    run's lab.log and noted in one line on stderr; it never changes the verdict."""
    if root is None:
        return
    try:
        from lab.report.index_page import index_root_for, render_index_safely

        target = index_root_for(root)  # e.g. reports/nightly/<date> -> reports
        if target is None:  # another page is index.html there: leave it alone
            return
        _, problem = render_index_safely(target, RunDir(run_dir).lab_log_path, run_dir)
    except Exception as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        print(f"raftlab: runs index under {root} not updated ({problem}; see lab.log)",
              file=sys.stderr)


def _index_root_of(run_dir: Path) -> Path | None:
    from lab.report.index_page import root_of

    return root_of(run_dir)


def cmd_index(root: Path) -> ExitCode:
    from lab.report.index_page import render_index

    if not root.is_dir():
        print(f"raftlab: {root}: not a directory (the reports folder to index)",
              file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        print(render_index(root))
    except OSError as e:
        print(f"raftlab: cannot write {root / 'index.html'}: {e.strerror or e}",
              file=sys.stderr)
        return ExitCode.BAD_INPUT
    return ExitCode.VALID


def cmd_report(run_dir: Path) -> ExitCode:
    from lab.report import render_run
    from lab.store import RunDir

    if not RunDir.is_run(run_dir):
        print(f"raftlab: {run_dir}: not a run directory (needs results.json, scenario.yaml "
              "or history.jsonl)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    print(render_run(run_dir))
    _render_index(_index_root_of(run_dir), run_dir)
    return ExitCode.VALID


def cmd_analyze(run_dir: Path) -> ExitCode:
    from lab.store import HISTORY, SCENARIO, RunDir, StoreError

    if not RunDir.is_run(run_dir) or RunDir(run_dir).missing(HISTORY, SCENARIO):
        print(f"raftlab: {run_dir}: not a run directory (needs history.jsonl and "
              "scenario.yaml)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        return _check_and_say(run_dir, index_root=_index_root_of(run_dir))
    except StoreError as e:  # a run file that does not read (FILE:LINE: ...) is bad input
        print(f"raftlab: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT


def cmd_list() -> ExitCode:
    from lab.scenario import ScenarioError, load_faults, load_workload

    for title, folder, loader in (("workloads", "workloads", load_workload),
                                  ("fault scenarios", "faults", load_faults)):
        print(f"{title} ({ROOT / folder}):")
        for p in sorted((ROOT / folder).glob("*.yaml")):
            try:
                item = loader(p)
                desc = " ".join(item.description.split())
                print(f"  {item.name:<22} {desc}")
            except ScenarioError as e:
                print(f"  {p.stem:<22} INVALID: {e}")
        print()
    return ExitCode.VALID



def cmd_validate(a: argparse.Namespace, argv: list[str]) -> ExitCode:
    """``raftlab validate FILE...``: check each file as ``raftlab run`` (a suite: as
    ``raftlab nightly``) would before starting anything, and run nothing."""
    from lab.scenario import ScenarioError
    from lab.systems import preflight

    code = ExitCode.VALID
    # Why the system cannot run here at all, whatever the files say: said once.
    unavailable = preflight(a.system)
    if unavailable:
        print(f"raftlab: {unavailable}", file=sys.stderr)
        code = ExitCode.BAD_INPUT
    for name in a.files:
        try:
            path, what = _validate_file(name, a.nodes, a.time_limit, a.system, unavailable)
        except ScenarioError as e:
            print(f"raftlab: {e}", file=sys.stderr)
            code = ExitCode.BAD_INPUT
        else:
            _say(f"{path}: ok ({what})")
    return code


def _file_kind(keys: list[str]) -> str:
    """Which file a mapping with these top-level keys is meant to be: ``workload``,
    ``faults`` or ``suite``, the kind it has most keys of its own of (none: a fault
    scenario, as a bare name and description is the one without faults). Its loader then
    says what is wrong with it, e.g. ``unknown key 'x' in a workload``."""
    from lab.scenario import FAULT_KEYS, WORKLOAD_KEYS
    from lab.suite import SUITE_KEYS

    kinds = {"workload": WORKLOAD_KEYS, "faults": FAULT_KEYS, "suite": SUITE_KEYS}
    own = {kind: sum(k in ks and not any(k in other for o, other in kinds.items() if o != kind)
                     for k in keys)
           for kind, ks in kinds.items()}
    best = max(own.values())
    return "faults" if best == 0 else next(k for k, n in own.items() if n == best)


def _validate_file(name: str, nodes: int, time_limit: float | None, system: str,
                   unavailable: str | None) -> tuple[str, str]:
    """Check one file as ``raftlab run`` would (a suite as ``raftlab nightly`` would):
    its path and what it is, or ScenarioError (``FILE:LINE: ...``). A preflight problem
    that is ``unavailable`` (the system's own, not the file's) is left out."""
    from lab.paths import SUITES
    from lab.scenario import (
        ScenarioError,
        check_members,
        check_system,
        compose_yaml,
        load_faults,
        load_workload,
    )
    from lab.systems import preflight, to_ms

    path = Path(name)
    if not path.exists():  # a built-in one by name, as 'raftlab run' and 'nightly' take
        path = next((p for p in (find_builtin(name, "workloads"), find_builtin(name, "faults"),
                                 SUITES / f"{name}.yaml") if p.exists()), path)
    doc, root = compose_yaml(path)
    m = doc.mapping(root, "a workload, fault scenario or suite file")
    kind = _file_kind(list(m))
    if kind == "suite":
        from lab.suite import load_suite

        suite = load_suite(path)
        runs = len(suite.cells)
        return str(path), f"suite '{suite.name}', {runs} run{'s' * (runs != 1)}"
    if kind == "workload":
        w = load_workload(path)
        why = preflight(system, w.model)
        if why and why != unavailable:
            raise doc.fail(m["model"][1], why)
        return str(path), f"workload '{w.name}', model {w.model}"
    f = load_faults(path, time_limit)
    check_members(f, nodes)
    check_system(f, system)
    why = preflight(system, None, (), to_ms(f.election_timeout), to_ms(f.heartbeat))
    if why and why != unavailable:
        raise ScenarioError(f.path, f.timing_line or 1, why)
    steps = len(f.schedule)
    return str(path), (f"fault scenario '{f.name}', {steps} step{'s' * (steps != 1)}, "
                       f"random: {'yes' if f.random else 'no'}")


def cmd_schema() -> ExitCode:
    import json

    from lab.scenario import json_schema

    print(json.dumps(json_schema(), indent=2))
    return ExitCode.VALID


def cmd_demo(nodes: int, folder: Path | None) -> ExitCode:
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="raftlab-demo-") as tmp:
            return trio.run(demo, nodes, Path(tmp))
    return trio.run(demo, nodes, folder)


# --------------------------------------------------------------------------- the parser

#: What a subcommand's ``func`` is: parsed arguments and the command line as given.
Command = Callable[[argparse.Namespace, list[str]], ExitCode]

#: ``raftlab run`` arguments that change the experiment, so ``--replay`` refuses them.
#: Their parser default is None ("not given"); :func:`validate` fills in
#: :data:`RUN_DEFAULTS` afterwards.
REPLAY_FIXED = {"workload": "WORKLOAD", "faults": "FAULTS", "system": "--system",
                "nodes": "--nodes", "time_limit": "--time-limit", "seed": "--seed",
                "concurrency": "--concurrency", "rate": "--rate", "bug": "--bug"}

#: ``raftlab run``'s defaults for the :data:`REPLAY_FIXED` arguments that have one (the
#: others' None means "the workload's or the fault file's").
RUN_DEFAULTS: dict[str, Any] = {"workload": "workloads/register.yaml",
                                "faults": "faults/mixed.yaml", "system": DEFAULT_SYSTEM,
                                "nodes": 5, "seed": 0, "bug": ()}

_VERDICT_EPILOG = """\
exit codes:
  0  valid: the history was checked and no anomaly was found
  1  invalid: an anomaly was found (the report explains it)
  2  bad input or usage, said in one line before anything starts
  3  unknown: no verdict (cut short, too few operations, or the lab's own failure)"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raftlab")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _duration(text: str) -> float:
    """``type=`` for a wall-clock budget: ``30m``, ``90s``, ``1h30m``, ``45``."""
    from lab.scenario import parse_duration

    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(f"cannot parse {text!r} (expected e.g. 10m, 90s, 1h)")
    return seconds


def _toxiproxy_addr(text: str) -> str:
    """``type=`` for ``--toxiproxy``: ``HOST:PORT`` (or ``http://HOST:PORT``)."""
    from lab.toxiclient import parse_addr

    try:
        parse_addr(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def validate(a: argparse.Namespace) -> str | None:
    """The checks that involve more than one argument, right after parsing and before
    anything starts: why the arguments cannot work together, in one line (exit 2), or
    None. Fills in ``raftlab run``'s :data:`RUN_DEFAULTS` once it has seen which of
    them were given."""
    if a.cmd == "explore":
        why = bugs_problem(spec(a.system), a.bug)
        return f"--bug: {why}" if why else None
    if a.cmd != "run":
        return None
    given = [flag for dest, flag in REPLAY_FIXED.items() if getattr(a, dest) is not None]
    if a.replay is not None and given:
        return (f"--replay runs the recorded experiment as it was: it cannot be combined "
                f"with {', '.join(given)} (only --out and --toxiproxy)")
    for dest, default in RUN_DEFAULTS.items():
        if getattr(a, dest) is None:
            setattr(a, dest, list(default) if isinstance(default, tuple) else default)
    why = bugs_problem(spec(a.system), a.bug)
    return f"--bug: {why}" if why else None


def _add_run(sub: Any) -> None:
    r = sub.add_parser(
        "run", help="run one experiment: a workload against a cluster while faults strike",
        description="""\
Run one experiment: start a cluster of the system under test, wire every link between
its members through a proxy, and run the workload's clients while the fault scenario's
nemesis strikes, until the time limit. Then heal, let the cluster recover, read back,
stop everything and check the history against the workload's model.

It writes a run directory, OUT/<workload>-<faults>/<time>-s<seed>/: history.jsonl
(every operation), scenario.yaml (everything needed to replay it), schedule.jsonl (the
faults as applied), cluster.jsonl (the members' status), results.json (the verdict),
index.html (the report), summary.json, lab.log, toxiproxy.log and the members' logs
under nodes/; and it updates the runs index, OUT/index.html.
'raftlab list' shows the built-in workloads and fault scenarios.""",
        epilog=_VERDICT_EPILOG + """

examples:
  raftlab run                          # register + mixed faults, 5 nodes, 60 s
  raftlab run bank kill-leader --nodes 3 --time-limit 30 --seed 7
  raftlab run register isolate-leader --bug stale-read
  raftlab run --replay reports/register-mixed/20261126T192739-s0""")
    r.add_argument("workload", nargs="?", default=None, metavar="WORKLOAD",
                   help="a workload file, or a built-in one by name, e.g. register "
                        f"(default: {RUN_DEFAULTS['workload']})")
    r.add_argument("faults", nargs="?", default=None, metavar="FAULTS",
                   help="a fault-scenario file, or a built-in one by name, e.g. "
                        f"kill-leader (default: {RUN_DEFAULTS['faults']})")
    r.add_argument("--system", type=one_of(SYSTEMS, "system"), default=None,
                   metavar="SYSTEM", help=f"the system under test: {', '.join(SYSTEMS)} "
                                          f"(default: {RUN_DEFAULTS['system']})")
    r.add_argument("--nodes", type=whole_number(1, 9), default=None, metavar="N",
                   help=f"cluster size, 1 to 9 (default: {RUN_DEFAULTS['nodes']})")
    r.add_argument("--time-limit", type=_duration,
                   default=None, metavar="DURATION",
                   help="how long clients and nemesis run, e.g. 30, 30s, 2m (default: the "
                        f"fault file's, or {DEFAULT_TIME_LIMIT:g} s)")
    r.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of the operations and the random faults; the same seed gives "
                        f"the same operation stream (default: {RUN_DEFAULTS['seed']})")
    r.add_argument("--concurrency", type=whole_number(1), default=None, metavar="N",
                   help="client workers (default: the workload's clients)")
    r.add_argument("--rate", type=number(0, what="a number of operations per second"),
                   default=None, metavar="OPS_PER_S",
                   help="operations per second over all clients, 0 for as fast as they "
                        "can (default: the workload's rate)")
    r.add_argument("--bug", action="append", default=None,
                   type=one_of(all_bugs(), "bug", "seeded bugs:"), metavar="NAME",
                   help="switch on a seeded bug (repeatable), to see the lab catch it; "
                        "which system has which is checked once --system is known: "
                        + "; ".join(f"{name}: {', '.join(spec(name).bugs)}"
                                    for name in SYSTEMS if spec(name).bugs)
                        + " (default: none)")
    r.add_argument("--toxiproxy", type=_toxiproxy_addr, default=None, metavar="HOST:PORT",
                   help="use this running Toxiproxy server (default: start one for the run)")
    r.add_argument("--out", type=Path, default=REPORTS, metavar="DIR",
                   help="where run directories go (default: reports/ in the project)")
    r.add_argument("--replay", type=Path, default=None, metavar="RUN_DIR",
                   help="run RUN_DIR's experiment again: its scenario.yaml, and its faults "
                        "as schedule.jsonl recorded them (only --out and --toxiproxy may "
                        "go with it)")
    r.set_defaults(func=cmd_run)


def _add_validate(sub: Any) -> None:
    v = sub.add_parser(
        "validate", help="check workload, fault-scenario and suite files without running them",
        description="""\
Check workload, fault-scenario and suite files without running anything: each file is
recognised by its keys and checked exactly as 'raftlab run' would check it before
starting (a suite as 'raftlab nightly' would): every key and value, the fault steps
against the time limit and the cluster size, and whether the system under test can run
the workload's model and the scenario's timing. Each file gets one line: 'FILE: ok
(...)' on stdout, or the error 'raftlab: FILE:LINE: ...' on stderr.""",
        epilog="""\
exit codes:
  0  every file is valid
  2  some file is not (or the system cannot run here), said in one line each

examples:
  raftlab validate faults/my-scenario.yaml
  raftlab validate workloads/*.yaml faults/*.yaml --nodes 3
  raftlab validate faults/my-scenario.yaml --time-limit 30 --system etcd""")
    v.add_argument("files", nargs="+", metavar="FILE",
                   help="a workload, fault-scenario or suite file, or a built-in one by name")
    v.add_argument("--nodes", type=whole_number(1, 9), default=RUN_DEFAULTS["nodes"],
                   metavar="N", help="the cluster size the fault scenarios must fit, 1 to 9, "
                                     "as 'raftlab run --nodes' (default: %(default)s; "
                                     "suites say their own)")
    v.add_argument("--time-limit", type=_duration,
                   default=None, metavar="DURATION",
                   help="the time limit the fault steps must fit, as 'raftlab run "
                        "--time-limit' (default: each file's own; suites say their own)")
    v.add_argument("--system", type=one_of(SYSTEMS, "system"), default=DEFAULT_SYSTEM,
                   metavar="SYSTEM",
                   help=f"the system under test that must run the workloads' models and "
                        f"the scenarios' timing: {', '.join(SYSTEMS)} (default: "
                        f"%(default)s; suites say their own)")
    v.set_defaults(func=cmd_validate)


def _add_checking(sub: Any) -> None:
    an = sub.add_parser(
        "analyze", help="check a stored run again and update its results.json",
        description="""\
Check a stored run again: its history against its workload's model, and the members'
logs for election and commit safety. Works on a run cut short too (Ctrl-C, a crash).
It rewrites RUN_DIR/results.json and the report, RUN_DIR/index.html, and updates the
runs index above it.""",
        epilog=_VERDICT_EPILOG)
    an.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                    help="a run directory written by 'raftlab run' (needs history.jsonl "
                         "and scenario.yaml)")
    an.set_defaults(func=lambda a, argv: cmd_analyze(a.run_dir))

    from lab.checker import cli as checker_cli

    ch = sub.add_parser("check", help="check history files against a consistency model",
                        description=checker_cli.DESCRIPTION, epilog=checker_cli.EPILOG)
    checker_cli.add_arguments(ch)
    ch.set_defaults(func=lambda a, argv: checker_cli.run(a))

    sh = sub.add_parser(
        "shrink", help="search for a smaller scenario that still fails a failing run",
        description="""\
Search for a smaller fault scenario that still fails, starting from a failing run
(verdict invalid): fewer fault steps, a shorter time limit, fewer clients. Every
candidate is really run ('raftlab run', one process each, up to --attempts tries), so
it takes a while: it stops at --budget. Its work directory is
<reports>/shrink/<workload>-<faults>-<run>/ (shrink.json; each candidate's fault file,
runs and console logs); the smallest failing scenario is written as a fault-scenario
file (--out), with the command that runs it.""",
        epilog="""\
exit codes:
  0  a smaller failing scenario was written (or the original is already minimal)
  2  bad input: not a run directory, not a failing run
  3  nothing failed again within the budget""")
    sh.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                    help="a failing run's directory (its results.json says invalid)")
    sh.add_argument("--out", type=Path, default=None, metavar="FILE",
                    help="where the scenario goes (default: in the shrink's work directory "
                         "under the reports folder)")
    sh.add_argument("--budget", type=_duration, default="30m", metavar="DURATION",
                    help="wall-clock budget, e.g. 10m, 90s, 1h (default: 30m)")
    sh.add_argument("--attempts", type=whole_number(1), default=2, metavar="N",
                    help="tries per candidate; it still fails if any try fails")
    sh.set_defaults(func=lambda a, argv: _shrink(a))


def _shrink(a: argparse.Namespace) -> ExitCode:
    from lab.shrink import shrink_cli

    return shrink_cli(a.run_dir, a.out, a.budget, a.attempts)


def _add_reports(sub: Any) -> None:
    rep = sub.add_parser(
        "report", help="render a run's report again, RUN_DIR/index.html",
        description="Render a run's report again, RUN_DIR/index.html (also for a run cut "
                    "short), and the runs index above it. It checks nothing: 'raftlab "
                    "analyze' does.")
    rep.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                     help="a run directory written by 'raftlab run'")
    rep.set_defaults(func=lambda a, argv: cmd_report(a.run_dir))
    ix = sub.add_parser(
        "index", help="render the runs index, REPORTS/index.html",
        description="Render the runs index again: REPORTS/index.html, one row per run "
                    "directory under REPORTS, newest first.")
    ix.add_argument("root", nargs="?", type=Path, default=REPORTS, metavar="REPORTS",
                    help="the reports folder (default: reports/ in the project)")
    ix.set_defaults(func=lambda a, argv: cmd_index(a.root))
    sv = sub.add_parser(
        "serve", help="serve the reports folder on 127.0.0.1, listing runs as they land",
        description="Serve the reports folder over HTTP on 127.0.0.1 only, read-only, "
                    "until Ctrl-C; the runs index is rendered again as runs land. The URL "
                    "is printed first.")
    sv.add_argument("--port", type=whole_number(0, 65535), default=8080,
                    help="the port; 0 picks a free one")
    sv.add_argument("--dir", type=Path, default=REPORTS,
                    help="the reports folder (default: reports/ in the project)")
    sv.set_defaults(func=lambda a, argv: _serve(a.dir, a.port))


def _serve(folder: Path, port: int) -> ExitCode:
    from lab.report.serve import serve

    return serve(folder, port)


def _add_suites(sub: Any) -> None:
    epilog = """\
exit codes (the worst run wins):
  0  every run was valid
  1  some run found an anomaly
  2  bad input: the suite file, or a file it names, is not valid
  3  some run was unknown, failed in the harness or was skipped (no time left)"""
    ni = sub.add_parser(
        "nightly", help="run a suite of experiments (default: the quick one)",
        description="""\
Run a suite of experiments, one 'raftlab run' process each, within the suite's budget,
and print the detection matrix. It writes OUT/nightly/<date>/: summary.json (rewritten
after every run), index.html (the suite's page), each run's directory, and each run's
console output under console/.
Built-in suites: quick (a few minutes, what CI runs), full, matrix (lab/suites/).""",
        epilog=epilog)
    ni.add_argument("suite", nargs="?", default="quick", metavar="SUITE",
                    help="a suite file, or a built-in suite: quick, full, matrix")
    ni.add_argument("--out", type=Path, default=REPORTS, metavar="DIR",
                    help="the reports folder (default: reports/ in the project)")
    ni.set_defaults(func=lambda a, argv: _suite(a.suite, a.out))
    ma = sub.add_parser(
        "matrix", help="the detection matrix: seeded bugs x fault scenarios",
        description="""\
Run the detection matrix (the 'matrix' suite): raftkv as it is and with each seeded bug,
against the fault scenarios meant to catch them, 3 seeds each. Like 'raftlab nightly
matrix': it writes OUT/nightly/<date>/ and prints the matrix.""",
        epilog=epilog)
    ma.add_argument("suite", nargs="?", default="matrix", metavar="SUITE",
                    help="a suite file, or a built-in suite")
    ma.add_argument("--out", type=Path, default=REPORTS, metavar="DIR",
                    help="the reports folder (default: reports/ in the project)")
    ma.set_defaults(func=lambda a, argv: _suite(a.suite, a.out))


def _add_explore(sub: Any) -> None:
    ex = sub.add_parser(
        "explore", help="many short runs with fresh seeds, until the first anomaly",
        description="""\
Explore: run the same experiment again and again with a fresh seed each time (run k
uses SEED+k), one 'raftlab run' process each, until a run is invalid or the budget is
spent, then shrink the failing run into a smaller fault scenario. A run is started only
if it should fit in what is left of the budget. Unknown runs are counted and the loop
goes on; it stops after 3 crashed runs in a row. One progress line per run: the seed,
the time spent of the budget, the run's verdict, the elections seen (distinct leader
terms) and the anomalies so far.

It writes OUT/: explore.json (every run, rewritten after each), index.html (the
exploration's page: each run linked to its report, the time to the first anomaly, the
shrunk scenario), runs/ (the run directories), console/ (each run's output) and, after
an anomaly, <faults>-shrunk.yaml and the shrink's work directory runs/shrink/.""",
        epilog="""\
exit codes:
  0  no anomaly found within the budget
  1  an anomaly was found (its run directory, report and shrunk scenario are printed)
  2  bad input or usage, said in one line before anything runs
  3  no anomaly, and the exploration was interrupted or stopped by crashed runs

examples:
  raftlab explore register --budget 30m
  raftlab explore register isolate-leader --bug stale-read --nodes 3 --budget 5m
  raftlab explore set mixed --time-limit 15s --keep-going --no-shrink""")
    ex.add_argument("workload", metavar="WORKLOAD",
                    help="a workload file, or a built-in one by name, e.g. register")
    ex.add_argument("faults", nargs="?", default=None, metavar="FAULTS",
                    help="a fault-scenario file, or a built-in one by name (default: "
                         "explore, faults/explore.yaml)")
    ex.add_argument("--budget", type=_duration, default="10m", metavar="DURATION",
                    help="wall-clock budget of the runs, e.g. 30m, 90s, 1h (default: 10m)")
    ex.add_argument("--time-limit", type=_duration, default="20s", metavar="DURATION",
                    help="each run's time limit, as 'raftlab run --time-limit' (default: 20s)")
    ex.add_argument("--nodes", type=whole_number(1, 9), default=5, metavar="N",
                    help="cluster size, 1 to 9")
    ex.add_argument("--system", type=one_of(SYSTEMS, "system"), default=DEFAULT_SYSTEM,
                    metavar="SYSTEM", help=f"the system under test: {', '.join(SYSTEMS)}")
    ex.add_argument("--bug", action="append", default=[],
                    type=one_of(all_bugs(), "bug", "seeded bugs:"), metavar="NAME",
                    help="switch on a seeded bug in every run (repeatable), as 'raftlab "
                         "run --bug' (default: none)")
    ex.add_argument("--seed", type=whole_number(0), default=None, metavar="N",
                    help="the first run's seed; run k uses N+k (default: from the clock, "
                         "printed)")
    ex.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="a new folder for everything (default: "
                         "reports/explore-<time>/)")
    ex.add_argument("--shrink", action=argparse.BooleanOptionalAction, default=True,
                    help="shrink the first anomaly into a smaller fault scenario "
                         "(default: yes)")
    ex.add_argument("--shrink-budget", type=_duration, default=None, metavar="DURATION",
                    help="the shrink's wall-clock budget (default: what is left of "
                         "--budget, at least 5m)")
    ex.add_argument("--keep-going", action="store_true",
                    help="do not stop at the first anomaly: run out the budget and count "
                         "them all (the first one is shrunk)")
    ex.set_defaults(func=lambda a, argv: _explore(a))


def _explore(a: argparse.Namespace) -> ExitCode:
    from lab.explore import explore_cli

    return explore_cli(a.workload, a.faults, system=a.system, nodes=a.nodes,
                       time_limit=a.time_limit, bugs=a.bug, seed=a.seed, budget=a.budget,
                       out=a.out, shrink=a.shrink, shrink_budget=a.shrink_budget,
                       keep_going=a.keep_going)


def _suite(name: str, out: Path) -> ExitCode:
    from lab.suite import run_suite_cli

    return run_suite_cli(name, out)


def build_parser() -> argparse.ArgumentParser:
    """The ``raftlab`` command line: every subcommand, its arguments and their checks."""
    p = Parser(prog="raftlab", description="""\
A chaos lab for replicated systems: run a workload against a real cluster while faults
strike, record every operation, and check the history for consistency anomalies.
Start with 'raftlab list', then 'raftlab run'; 'raftlab COMMAND --help' says more.""",
               epilog=_VERDICT_EPILOG)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                   help="print raftlab's version and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", title="commands")
    sub.add_parser("list", help="list the built-in workloads and fault scenarios",
                   description="List the built-in workloads (workloads/) and fault scenarios "
                               "(faults/), each with its description; 'raftlab run' takes "
                               "them by name."
                   ).set_defaults(func=lambda a, argv: cmd_list())
    _add_run(sub)
    _add_checking(sub)
    _add_reports(sub)
    _add_suites(sub)
    _add_explore(sub)
    _add_validate(sub)
    sub.add_parser("schema", help="print a JSON Schema of workload and fault files",
                   description="Print a JSON Schema of workload and fault-scenario files "
                               "on stdout, for editors."
                   ).set_defaults(func=lambda a, argv: cmd_schema())
    d = sub.add_parser(
        "demo", help="start raftkv, write, kill the leader, watch it recover",
        description="A short tour: start a raftkv cluster, write and read through the "
                    "leader, kill it (SIGKILL), read the write back through the new "
                    "leader, restart the old one and stop, proving nothing is left behind. "
                    "Exit 0 if the acknowledged write survived, 1 if not.")
    d.add_argument("--nodes", type=whole_number(1), default=3, metavar="N",
                   help="cluster size")
    d.add_argument("--dir", type=Path, default=None,
                   help="where member data and logs go (default: a temporary folder, "
                        "removed afterwards)")
    d.set_defaults(func=lambda a, argv: cmd_demo(a.nodes, a.dir))

    from lab.toxiproxy import cli as toxiproxy_cli

    tp = sub.add_parser("toxiproxy",
                        help="run the built-in Toxiproxy-compatible server in the foreground",
                        description=toxiproxy_cli.DESCRIPTION)
    toxiproxy_cli.add_arguments(tp)
    tp.set_defaults(func=lambda a, argv: toxiproxy_cli.run(a))
    return p


def main(argv: list[str] | None = None) -> ExitCode:
    """The ``raftlab`` command. An unexpected error is the lab's own failure: it exits 3
    (unknown), never 1, which says an anomaly was found."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("raftlab: interrupted", file=sys.stderr)
        return ExitCode.UNKNOWN
    except Exception:
        import traceback

        traceback.print_exc()
        print("raftlab: internal error (a lab bug: the traceback above says where); exit 3",
              file=sys.stderr)
        return ExitCode.UNKNOWN


def _main(args: list[str]) -> ExitCode:
    try:
        a = build_parser().parse_args(args)
    except SystemExit as e:  # --help or --version (0), or a usage error said in one line
        return ExitCode.VALID if e.code in (0, None) else ExitCode.BAD_INPUT
    problem = validate(a)
    if problem is not None:
        print(f"raftlab: {problem}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    func: Command = a.func
    return ExitCode(func(a, args))


if __name__ == "__main__":
    raise SystemExit(main())
