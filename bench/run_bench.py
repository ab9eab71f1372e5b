"""How much the lab itself costs: ``raftlab run`` against raftkv's own benchmark.

Usage::

    .venv/bin/python bench/run_bench.py [--time-limit 60] [--clients 32] [--nodes 3]

Method, in one run on this machine:

1. raftkv's own benchmark (``bench/raftkv_bench.py``, a separate selectors-based load
   process, no proxies, closed loop): writes/s at ``--clients`` clients on 3 members, for
   as long as the lab runs (``--own-duration`` to shorten it: raftkv is a little faster
   on a young log, about 3 % between 10 s and 30 s).
2. ``raftlab run bench/write-only.yaml faults/none.yaml`` with the same concurrency and no
   rate limit: every operation goes through the lab's trio client, its client proxy and
   the history file. Figures: operations completed *and recorded* per second over the
   time limit, the controller's CPU share (its own process, children excluded, as % of one
   core over its lifetime), the steady-state CPU of each process of the run (controller,
   proxy server, members) over the middle 40 % of the client phase, whose total says
   whether the machine was saturated or the run latency-bound, and the wall time from
   start to exit and from start to the
   moment the run prints "checking the history" (the run proper: start-up, clients and
   nemesis, settling, final phase and teardown; checking and reporting come after).

3. The same load generator as in 1, against a cluster wired exactly as the lab wires it:
   every peer link and the client link through the built-in Toxiproxy server. This splits
   the lab's cost in two: what the proxies cost (3 vs 1) and what the lab's client, history
   and controller cost on top (2 vs 3).

The ratio lab/raftkv is the figure of merit (target >= 0.8); the wall-time target is
<= time limit + 5 s before checking and reporting. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import raftkv_bench  # noqa: E402  (bench/ is not a package)

from lab.network import Network  # noqa: E402
from lab.raftkv import RaftkvCluster  # noqa: E402
from lab.toxiclient import open_toxiproxy  # noqa: E402


def raftkv_own(clients: int, duration: float, tmp: Path) -> dict[str, float]:
    out = tmp / "raftkv.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "raftkv_bench.py"), "--duration",
                    str(duration), "--clients", str(clients), "--no-etcd",
                    "--failover-runs", "0", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    cells = json.loads(out.read_text())["results"]
    return dict(next(c for c in cells if c["system"] == "raftkv" and c["op"] == "write"))


def raftkv_own_through_proxies(clients: int, duration: float, tmp: Path) -> float:
    """Writes/s of raftkv's own load generator with every link proxied as in a lab run."""
    async def main() -> float:
        cluster = RaftkvCluster(tmp / "proxied", 3)
        async with open_toxiproxy(None, tmp) as (client, _kind):
            net = await Network.create(client, {m.id: (m.peer, m.client)
                                                for m in cluster.members.values()},
                                       listen=cluster.proxy_listen)
            cluster.dial = net.dial
            try:
                cluster.start_all()
                leader = await cluster.wait_leader(15)
                pids = cluster.pids()
                spec = raftkv_bench.WorkerSpec(
                    system="raftkv", op="write", clients=clients,
                    addr=tuple(net.client_addr(leader)), warmup=1.0, duration=duration,
                    out="", server_pids=pids, leader_pid=pids[0])
                r = await raftkv_bench.run_load(spec, tmp)
                return float(r["ops_per_s"])
            finally:
                with trio.CancelScope(shield=True):
                    await cluster.stop_all()
                    await net.aclose()

    return trio.run(main)


def lab_run(clients: int, nodes: int, limit: float, tmp: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "lab.cli", "run", str(ROOT / "bench" / "write-only.yaml"),
            str(ROOT / "faults" / "none.yaml"), "--nodes", str(nodes), "--concurrency",
            str(clients), "--rate", "0", "--time-limit", str(limit), "--out", str(tmp)]
    t0 = time.monotonic()
    proc = psutil.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []  # (seconds since start, line) as the run prints

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    cpu = 0.0
    # Steady state: CPU of the controller and of each child (proxy server, members) over
    # the middle of the client phase, from 40 % to 80 % of the time limit after the
    # clients start (known from the first progress line "[  t/limit s] running: ...").
    window: dict[int, tuple[str, float]] = {}
    steady: dict[str, float] = {}
    while proc.poll() is None:
        try:
            t = proc.cpu_times()
            cpu = t.user + t.system
            started = next((ts - float(m.group(1)) for ts, line in lines
                            if (m := _RUNNING.match(line))), None)
            now = time.monotonic() - t0
            if not window and started is not None and now >= started + 0.4 * limit:
                window = _cpu_of([proc, *proc.children(recursive=True)])
                window[0] = ("", now)
            elif window and not steady and now >= window[0][1] + 0.4 * limit:
                later = _cpu_of([proc, *proc.children(recursive=True)])
                span = now - window[0][1]
                for pid, (name, before) in window.items():
                    if pid and pid in later:
                        steady[name] = steady.get(name, 0.0) + 100 * (later[pid][1] - before) / span
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    wall = time.monotonic() - t0
    reader.join(timeout=10)
    out = "\n".join(line for _, line in lines)
    # The run itself ends where checking begins; checking, the report and the runs index
    # come after (the target is for the run before checking and reporting).
    before_check = next((t for t, line in lines if line.startswith("checking the history")),
                        wall)
    results = next(tmp.glob("*/*/results.json"))
    r = json.loads(results.read_text())
    completed = r["counts"]["ok"] + r["counts"]["fail"] + r["counts"]["info"]
    return {"ops_per_s": completed / limit, "ok": r["counts"]["ok"], "steady": steady,
            "check_s": float(r.get("checker", {}).get("seconds", 0.0)),
            "info": r["counts"]["info"], "fail": r["counts"]["fail"], "wall_s": wall,
            "before_check_s": before_check,
            "controller_cpu_pct": 100 * cpu / wall, "exit": proc.returncode or 0,
            "tail": out.strip().splitlines()[-1] if out.strip() else ""}


_RUNNING = re.compile(r"\[\s*([0-9.]+)/[0-9.]+ s\] running:")


def _cpu_of(procs: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far) for the controller, the proxy server and members."""
    out = {}
    for p in procs:
        try:
            argv = p.cmdline()
            t = p.cpu_times()
        except psutil.Error:
            continue
        if "lab.toxiproxy" in argv:
            role = "proxy server"
        elif "nodes" in argv and "--id" in argv:
            role = "member " + argv[argv.index("--id") + 1]
        elif "lab.cli" in argv:
            role = "controller"
        else:
            role = "other"
        out[p.pid] = (role, t.user + t.system)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--own-duration", type=float, default=None,
                   help="seconds of each load-generator measurement (default: the time limit)")
    a = p.parse_args()
    print(f"run_bench: {a.clients} clients, {a.nodes} nodes, lab time limit {a.time_limit:g} s,"
          f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="raftlab-runbench-") as d:
        tmp = Path(d)
        own_s = a.time_limit if a.own_duration is None else a.own_duration
        own_cell = raftkv_own(a.clients, own_s, tmp)
        own = float(own_cell["ops_per_s"])
        proxied = raftkv_own_through_proxies(a.clients, own_s, tmp)
        lab = lab_run(a.clients, a.nodes, a.time_limit, tmp / "runs")
    print(f"raftkv's own benchmark, writes, {a.clients} clients: {own:8.0f} ops/s "
          f"(% of one core: load generator {own_cell.get('loadgen_cpu_pct', 0):.0f}, members "
          f"{own_cell.get('server_cpu_pct', 0):.0f}, other {own_cell.get('other_cpu_pct', 0):.0f})")
    print(f"  the same, every link through the proxies:   {proxied:8.0f} ops/s "
          f"({proxied / own:.2f} of it: the proxies' cost)")
    print(f"raftlab run, writes recorded, {a.clients} clients:    {lab['ops_per_s']:8.0f} ops/s "
          f"(ok {lab['ok']:.0f}, fail {lab['fail']:.0f}, info {lab['info']:.0f})")
    print(f"ratio lab/raftkv: {lab['ops_per_s'] / own:.2f}   (target >= 0.8); "
          f"lab/proxied: {lab['ops_per_s'] / proxied:.2f} (the lab's client, history and "
          f"controller)")
    print(f"controller CPU: {lab['controller_cpu_pct']:.0f} % of one core over its lifetime")
    steady = lab["steady"]
    if isinstance(steady, dict) and steady:
        print("steady state (the middle 40 % of the client phase), % of one core: " + ", ".join(
            f"{name} {pct:.0f}" for name, pct in sorted(steady.items())) +
            f"; total {sum(steady.values()):.0f} of {100 * (os.cpu_count() or 1)}")
    print(f"wall time of a {a.time_limit:g} s run, start to exit: {lab['wall_s']:.1f} s; "
          f"start to 'checking the history': {lab['before_check_s']:.1f} s "
          f"(target <= {a.time_limit + 5:g} s); then checking {lab['check_s']:.1f} s, the "
          f"evidence, the report and the runs index; exit code {lab['exit']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
