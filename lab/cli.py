"""``raftlab``: the lab's command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

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
    limit = a.time_limit if a.time_limit is not None else (
        faults.time_limit if faults.time_limit is not None else 60.0)
    opts = RunOptions(nodes=a.nodes, time_limit=limit, seed=a.seed, concurrency=a.concurrency,
                      rate=a.rate, bugs=tuple(a.bug), toxiproxy=a.toxiproxy, out=a.out,
                      system=a.system, command=["raftlab", *argv])
    run_dir, results = trio.run(run_experiment, workload, faults, opts)
    print()
    counts = results.get("counts", {})
    print(f"history: {results.get('events', 0)} events (ok {counts.get('ok', 0)}, "
          f"fail {counts.get('fail', 0)}, info {counts.get('info', 0)}); "
          f"proxy: {results.get('proxy')}; nothing left behind: "
          f"{results.get('nothing_left_behind')}")
    if results.get("exit_reason") != "completed":
        print(f"run ended early: {results.get('exit_reason')}")
    return _check_and_say(run_dir)


def _check_and_say(run_dir: Path) -> int:
    from lab.run import check_run

    print("checking the history ...", flush=True)
    results = check_run(run_dir)
    checker = results.get("checker", {})
    for anomaly in checker.get("anomalies", [])[:5]:
        text = str(anomaly.get("explanation", anomaly.get("type", ""))).strip()
        print("  " + text.replace("\n", "\n  "))
    print(f"run directory: {run_dir}")
    print(_render_report(run_dir))
    verdict = str(results.get("verdict"))
    print(f"verdict: {verdict} ({results.get('verdict_reason')})")
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


def cmd_report(run_dir: Path) -> int:
    from lab.report import is_run_dir, render_run

    if not is_run_dir(run_dir):
        print(f"raftlab: {run_dir}: not a run directory (needs results.json, scenario.yaml "
              "or history.jsonl)", file=sys.stderr)
        return 2
    print(render_run(run_dir))
    return 0


def cmd_analyze(run_dir: Path) -> int:
    if not (run_dir / "history.jsonl").exists() or not (run_dir / "scenario.yaml").exists():
        print(f"raftlab: {run_dir}: not a run directory (needs history.jsonl and "
              "scenario.yaml)", file=sys.stderr)
        return 2
    try:
        return _check_and_say(run_dir)
    except Exception as e:  # a history that does not decode is bad input
        from lab.checker import HistoryError

        if isinstance(e, HistoryError):
            print(f"raftlab: {e}", file=sys.stderr)
            return 2
        raise


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
    an = sub.add_parser("analyze", help="re-check a stored run and update its results.json")
    an.add_argument("run_dir", type=Path)
    rep = sub.add_parser("report", help="render a run's report, RUN_DIR/index.html")
    rep.add_argument("run_dir", type=Path)
    sub.add_parser("list", help="list the built-in workloads and fault scenarios")
    sub.add_parser("schema", help="print a JSON Schema of workload and fault files")
    a = p.parse_args(args)
    if a.cmd == "run":
        return cmd_run(a, args)
    if a.cmd == "list":
        return cmd_list()
    if a.cmd == "analyze":
        return cmd_analyze(a.run_dir)
    if a.cmd == "report":
        return cmd_report(a.run_dir)
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
