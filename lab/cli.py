"""``raftlab``: the lab's command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.raftkv import RaftkvCluster
from lab.systems import SYSTEMS


def _say(text: str) -> None:
    print(text, flush=True)


async def demo(size: int, base: Path) -> int:
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
    left = procs.descendants_alive(cluster.pids()) + procs.listening_ports(cluster.ports())
    _say("stopped; processes or ports left behind: " + (str(left) if left else "none"))
    _say("the acknowledged write survived the leader's death" if ok
         else "the acknowledged write was NOT readable after failover")
    return 0 if ok and not left else 1


ROOT = Path(__file__).resolve().parent.parent


def _find(path: str, folder: str) -> Path:
    """A scenario file as given, or else one of the built-in ones by path or name."""
    p = Path(path)
    if p.exists():
        return p
    for candidate in (ROOT / path, ROOT / folder / path, ROOT / folder / f"{path}.yaml"):
        if candidate.exists():
            return candidate
    return p  # the loader reports it missing, with the name the user gave


def cmd_run(a: argparse.Namespace, argv: list[str]) -> int:
    from lab.run import RunOptions, run_experiment
    from lab.scenario import ScenarioError, check_members, load_faults, load_workload

    if a.replay is not None:
        return cmd_replay(a, argv)
    if a.nodes < 1 or a.nodes > 9:
        print("raftlab: --nodes must be from 1 to 9", file=sys.stderr)
        return 2
    if a.bug and a.system != "raftkv":
        print(f"raftlab: --bug: seeded bugs exist only in raftkv, not {a.system}",
              file=sys.stderr)
        return 2
    if a.time_limit is not None and a.time_limit <= 0:
        print("raftlab: --time-limit must be more than 0", file=sys.stderr)
        return 2
    try:
        workload = load_workload(_find(a.workload, "workloads"))
        faults = load_faults(_find(a.faults, "faults"), a.time_limit)
        check_members(faults, a.nodes)
    except ScenarioError as e:
        print(f"raftlab: {e}", file=sys.stderr)
        return 2
    from lab.systems import ms, system_problem, timing_problem

    why_not = system_problem(a.system, workload.model)
    bad_timing = timing_problem(a.system, ms(faults.election_timeout), ms(faults.heartbeat))
    if bad_timing:
        why_not = f"{faults.path}:{faults.timing_line}: {bad_timing}"
    if why_not:
        print(f"raftlab: {why_not}", file=sys.stderr)
        return 2
    limit = a.time_limit if a.time_limit is not None else (
        faults.time_limit if faults.time_limit is not None else 60.0)
    opts = RunOptions(nodes=a.nodes, time_limit=limit, seed=a.seed, concurrency=a.concurrency,
                      rate=a.rate, bugs=tuple(a.bug), toxiproxy=a.toxiproxy, out=a.out,
                      system=a.system, command=["raftlab", *argv])
    run_dir, results = trio.run(run_experiment, workload, faults, opts)
    return _say_run(run_dir, results, a.out)


#: ``raftlab run`` arguments that change the experiment, so ``--replay`` refuses them.
REPLAY_FIXED = {"workload": "WORKLOAD", "faults": "FAULTS", "system": "--system",
                "nodes": "--nodes", "time_limit": "--time-limit", "seed": "--seed",
                "concurrency": "--concurrency", "rate": "--rate", "bug": "--bug"}


def cmd_replay(a: argparse.Namespace, argv: list[str]) -> int:
    """``raftlab run --replay RUN_DIR``: the same experiment, its faults as applied."""
    from lab.replay import ReplayError, load_replay
    from lab.run import RunOptions, run_experiment
    from lab.scenario import ScenarioError
    from lab.systems import system_problem

    try:
        plan = load_replay(a.replay)
    except (ReplayError, ScenarioError) as e:
        print(f"raftlab: --replay: {e}", file=sys.stderr)
        return 2
    r = plan.resolved
    why_not = system_problem(r.system, r.workload.model)
    if why_not:
        print(f"raftlab: {why_not}", file=sys.stderr)
        return 2
    steps = len(plan.faults.schedule)
    print(f"replaying {a.replay}: {steps} fault step{'s' * (steps != 1)} at their recorded "
          f"offsets ({plan.skipped} skipped in the original, skipped again; offsets counted "
          f"from {plan.origin_from}); {r.system}, {r.nodes} nodes, seed {r.seed}, "
          f"{r.time_limit:g} s, {r.concurrency} clients at {r.rate:g} ops/s"
          + (f", bugs: {', '.join(r.bugs)}" if r.bugs else "")
          + (f"; leader {plan.faults.initial_leader} when the clients start, as recorded"
             if plan.faults.initial_leader else ""), flush=True)
    opts = RunOptions(nodes=r.nodes, time_limit=r.time_limit, seed=r.seed,
                      concurrency=r.concurrency, rate=r.rate, bugs=r.bugs,
                      toxiproxy=a.toxiproxy, out=a.out, system=r.system,
                      command=["raftlab", *argv], replay_of=str(a.replay.resolve()))
    run_dir, results = trio.run(run_experiment, r.workload, plan.faults, opts)
    return _say_run(run_dir, results, a.out)


def _say_run(run_dir: Path, results: dict[str, Any], out: Path) -> int:
    print()
    counts = results.get("counts", {})
    print(f"history: {results.get('events', 0)} events (ok {counts.get('ok', 0)}, "
          f"fail {counts.get('fail', 0)}, info {counts.get('info', 0)}); "
          f"proxy: {results.get('proxy')}; nothing left behind: "
          f"{results.get('nothing_left_behind')}")
    if results.get("exit_reason") != "completed":
        print(f"run ended early: {results.get('exit_reason')}")
    return _check_and_say(run_dir, index_root=out)


def _check_and_say(run_dir: Path, index_root: Path | None = None) -> int:
    from lab.run import check_run

    print("checking the history ...", flush=True)
    results = check_run(run_dir)
    checker = results.get("checker", {})
    for anomaly in checker.get("anomalies", [])[:5]:
        text = str(anomaly.get("explanation", anomaly.get("type", ""))).strip()
        print("  " + text.replace("\n", "\n  "))
    print(f"run directory: {run_dir}")
    print(_render_report(run_dir))
    _render_index(index_root, run_dir)
    verdict = str(results.get("verdict"))
    print(f"verdict: {verdict} ({results.get('verdict_reason')})")
    for note in results.get("notes") or []:
        print(f"note: {note}")
    return {"valid": 0, "invalid": 1}.get(verdict, 3)


def _render_report(run_dir: Path) -> str:
    """Render the run's page; a failure is logged to lab.log and never loses the verdict."""
    try:
        from lab.report import render_run

        return f"report: {render_run(run_dir)}"
    except Exception as e:
        import traceback

        try:
            with open(run_dir / "lab.log", "a", encoding="utf-8") as log:
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
        _, problem = render_index_safely(target, run_dir / "lab.log", run_dir)
    except Exception as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        print(f"raftlab: runs index under {root} not updated ({problem}; see lab.log)",
              file=sys.stderr)


def _index_root_of(run_dir: Path) -> Path | None:
    from lab.report.index_page import root_of

    return root_of(run_dir)


def cmd_index(root: Path) -> int:
    from lab.report.index_page import render_index

    if not root.is_dir():
        print(f"raftlab: {root}: not a directory (the reports folder to index)",
              file=sys.stderr)
        return 2
    try:
        print(render_index(root))
    except OSError as e:
        print(f"raftlab: cannot write {root / 'index.html'}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    return 0


def cmd_report(run_dir: Path) -> int:
    from lab.report import render_run
    from lab.store import RunDir

    if not RunDir.is_run(run_dir):
        print(f"raftlab: {run_dir}: not a run directory (needs results.json, scenario.yaml "
              "or history.jsonl)", file=sys.stderr)
        return 2
    print(render_run(run_dir))
    _render_index(_index_root_of(run_dir), run_dir)
    return 0


def cmd_analyze(run_dir: Path) -> int:
    from lab.exitcode import ExitCode
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


def cmd_list() -> int:
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
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``raftlab`` command. An unexpected error is the lab's own failure: it exits 3
    (unknown), never 1, which says an anomaly was found."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("raftlab: interrupted", file=sys.stderr)
        return 3
    except Exception:
        import traceback

        traceback.print_exc()
        print("raftlab: internal error (a lab bug: the traceback above says where); exit 3",
              file=sys.stderr)
        return 3


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="raftlab", description="A chaos lab for replicated systems.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="start raftkv, write, kill the leader, watch it recover")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--dir", type=Path, default=None, help="where member data and logs go")
    sub.add_parser("toxiproxy", add_help=False,
                   help="run the built-in Toxiproxy-compatible server in the foreground "
                        "([--host 127.0.0.1] [--port 8474]; see 'raftlab toxiproxy -h')")
    sub.add_parser("check", add_help=False,
                   help="check history files against a model (see 'raftlab check -h')")
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check"]:
        from lab.checker.cli import main as check_main

        return check_main(args[1:])
    if args[:1] == ["toxiproxy"]:
        # Its flags are toxiproxy-server's own (-host, -port, -config, ...): pass them on.
        from lab.toxiproxy.cli import main as toxiproxy_main

        return toxiproxy_main(args[1:])
    r = sub.add_parser("run", help="run one experiment (default: register + mixed, 5 nodes)")
    r.add_argument("workload", nargs="?", default="workloads/register.yaml")
    r.add_argument("faults", nargs="?", default="faults/mixed.yaml")
    r.add_argument("--system", choices=list(SYSTEMS), default="raftkv")
    r.add_argument("--nodes", type=int, default=5)
    r.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="how long clients and nemesis run (default: the fault file's, or 60)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--concurrency", type=int, default=None, help="client workers")
    r.add_argument("--rate", type=float, default=None, metavar="OPS_PER_S")
    r.add_argument("--bug", action="append", default=[], help="raftkv seeded bug (repeatable)")
    r.add_argument("--toxiproxy", default=None, metavar="HOST:PORT",
                   help="use this running Toxiproxy server")
    r.add_argument("--out", type=Path, default=ROOT / "reports",
                   help="where run directories go (default: reports/)")
    r.add_argument("--replay", type=Path, default=None, metavar="RUN_DIR",
                   help="run RUN_DIR's experiment again: its scenario.yaml, and its faults "
                        "as schedule.jsonl recorded them (only --out and --toxiproxy may "
                        "go with it)")
    sh = sub.add_parser("shrink", help="search for a smaller scenario that still fails a "
                        "failing run, and write it as a fault-scenario file")
    sh.add_argument("run_dir", type=Path)
    sh.add_argument("--out", type=Path, default=None, metavar="FILE",
                    help="where the scenario goes (default: in the shrink's work directory "
                         "under the reports folder)")
    sh.add_argument("--budget", default="30m", help="wall-clock budget (default: 30m)")
    sh.add_argument("--attempts", type=int, default=2, metavar="N",
                    help="tries per candidate; it still fails if any try fails (default: 2)")
    an = sub.add_parser("analyze", help="re-check a stored run and update its results.json")
    an.add_argument("run_dir", type=Path)
    rep = sub.add_parser("report", help="render a run's report, RUN_DIR/index.html")
    rep.add_argument("run_dir", type=Path)
    ix = sub.add_parser("index", help="render the runs index, ROOT/index.html "
                                      "(default: reports/)")
    ix.add_argument("root", nargs="?", type=Path, default=ROOT / "reports")
    sv = sub.add_parser("serve", help="serve the reports folder on 127.0.0.1, listing runs "
                                      "as they land")
    sv.add_argument("--port", type=int, default=8080,
                    help="default 8080; 0 picks a free port (the URL is printed)")
    sv.add_argument("--dir", type=Path, default=ROOT / "reports",
                    help="the reports folder (default: reports/)")
    ni = sub.add_parser("nightly", help="run a suite of experiments (default: the quick "
                        "one) and write reports/nightly/<date>/")
    ni.add_argument("suite", nargs="?", default="quick",
                    help="a suite file, or a built-in suite: quick, full, matrix")
    ni.add_argument("--out", type=Path, default=ROOT / "reports")
    ma = sub.add_parser("matrix", help="the detection matrix: seeded bugs x fault scenarios "
                        "(the 'matrix' suite)")
    ma.add_argument("suite", nargs="?", default="matrix")
    ma.add_argument("--out", type=Path, default=ROOT / "reports")
    sub.add_parser("list", help="list the built-in workloads and fault scenarios")
    sub.add_parser("schema", help="print a JSON Schema of workload and fault files")
    a = p.parse_args(args)
    if a.cmd == "run" and a.replay is not None:
        # Which experiment-changing arguments were given (whatever their value)?
        unset = object()
        r.set_defaults(**{d: None if d == "bug" else unset for d in REPLAY_FIXED})
        given = [flag for d, flag in REPLAY_FIXED.items()
                 if getattr(p.parse_args(args), d) not in (unset, None)]
        if given:
            print(f"raftlab: --replay runs the recorded experiment as it was: it cannot be "
                  f"combined with {', '.join(given)} (only --out and --toxiproxy)",
                  file=sys.stderr)
            return 2
    if a.cmd == "run":
        return cmd_run(a, args)
    if a.cmd == "shrink":
        from lab.shrink import shrink_cli

        return shrink_cli(a.run_dir, a.out, a.budget, a.attempts)
    if a.cmd == "list":
        return cmd_list()
    if a.cmd == "analyze":
        return cmd_analyze(a.run_dir)
    if a.cmd in ("nightly", "matrix"):
        from lab.suite import run_suite_cli

        return run_suite_cli(a.suite, a.out)
    if a.cmd == "report":
        return cmd_report(a.run_dir)
    if a.cmd == "index":
        return cmd_index(a.root)
    if a.cmd == "serve":
        from lab.report.serve import serve

        if not 0 <= a.port <= 65535:
            print("raftlab: --port must be from 0 to 65535", file=sys.stderr)
            return 2
        return serve(a.dir, a.port)
    if a.cmd == "schema":
        import json

        from lab.scenario import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if a.cmd == "demo":
        if a.nodes < 1:
            print("raftlab: --nodes must be at least 1", file=sys.stderr)
            return 2
        if a.dir is None:
            with tempfile.TemporaryDirectory(prefix="raftlab-demo-") as tmp:
                return trio.run(demo, a.nodes, Path(tmp))
        return trio.run(demo, a.nodes, a.dir)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
