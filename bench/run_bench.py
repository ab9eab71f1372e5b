"""How much the lab itself costs: ``raftlab run`` against raftkv's own benchmark.

Usage::

    .venv/bin/python bench/run_bench.py [--time-limit 60] [--clients 32] [--nodes 3]

Method, in one run on this machine:

1. raftkv's own benchmark (``bench/raftkv_bench.py``, a separate selectors-based load
   process, no proxies, closed loop): writes/s at ``--clients`` clients on 3 members.
2. ``raftlab run bench/write-only.yaml faults/none.yaml`` with the same concurrency and no
   rate limit: every operation goes through the lab's trio client, its client proxy and
   the history file. Figures: operations completed *and recorded* per second over the
   time limit, the controller's CPU share (its own process, children excluded, as % of one
   core over its lifetime), and the wall time from start to exit and from start to the
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


def raftkv_own(clients: int, duration: float, tmp: Path) -> float:
    out = tmp / "raftkv.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "raftkv_bench.py"), "--duration",
                    str(duration), "--clients", str(clients), "--no-etcd",
                    "--failover-runs", "0", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    cells = json.loads(out.read_text())["results"]
    return float(next(c["ops_per_s"] for c in cells
                      if c["system"] == "raftkv" and c["op"] == "write"))


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
    while proc.poll() is None:
        try:
            t = proc.cpu_times()
            cpu = t.user + t.system
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
    return {"ops_per_s": completed / limit, "ok": r["counts"]["ok"],
            "check_s": float(r.get("checker", {}).get("seconds", 0.0)),
            "info": r["counts"]["info"], "fail": r["counts"]["fail"], "wall_s": wall,
            "before_check_s": before_check,
            "controller_cpu_pct": 100 * cpu / wall, "exit": proc.returncode or 0,
            "tail": out.strip().splitlines()[-1] if out.strip() else ""}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--own-duration", type=float, default=10.0)
    a = p.parse_args()
    print(f"run_bench: {a.clients} clients, {a.nodes} nodes, lab time limit {a.time_limit:g} s,"
          f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="raftlab-runbench-") as d:
        tmp = Path(d)
        own = raftkv_own(a.clients, a.own_duration, tmp)
        proxied = raftkv_own_through_proxies(a.clients, a.own_duration, tmp)
        lab = lab_run(a.clients, a.nodes, a.time_limit, tmp / "runs")
    print(f"raftkv's own benchmark, writes, {a.clients} clients: {own:8.0f} ops/s")
    print(f"  the same, every link through the proxies:   {proxied:8.0f} ops/s "
          f"({proxied / own:.2f} of it: the proxies' cost)")
    print(f"raftlab run, writes recorded, {a.clients} clients:    {lab['ops_per_s']:8.0f} ops/s "
          f"(ok {lab['ok']:.0f}, fail {lab['fail']:.0f}, info {lab['info']:.0f})")
    print(f"ratio lab/raftkv: {lab['ops_per_s'] / own:.2f}   (target >= 0.8); "
          f"lab/proxied: {lab['ops_per_s'] / proxied:.2f} (the lab's client, history and "
          f"controller)")
    print(f"controller CPU: {lab['controller_cpu_pct']:.0f} % of one core over its lifetime")
    print(f"wall time of a {a.time_limit:g} s run, start to exit: {lab['wall_s']:.1f} s; "
          f"start to 'checking the history': {lab['before_check_s']:.1f} s "
          f"(target <= {a.time_limit + 5:g} s); then checking {lab['check_s']:.1f} s, the "
          f"evidence, the report and the runs index; exit code {lab['exit']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
