"""How much the lab itself costs: ``raftlab run`` against raftkv's own benchmark.

Usage::

    .venv/bin/python bench/run_bench.py [--time-limit 60] [--clients 32] [--nodes 3]

Method, in one run on this machine:

1. raftkv's own benchmark (``bench/raftkv_bench.py``, a separate selectors-based load
   process, no proxies, closed loop, a connection per client): writes/s at ``--clients``
   clients on 3 members, for as long as the lab runs (``--own-duration`` to shorten it:
   raftkv is a little faster on a young log, about 3 % between 10 s and 30 s). The
   baseline.
2. The same load generator, against a cluster wired exactly as the lab wires it: every
   peer link and the client link through the built-in Toxiproxy server (what the proxies
   cost).
3. The same load generator, no proxies, with all its clients pipelined on one connection
   to the leader and the requests of each read sent together: what raftkv gives a load
   generator that reaches it the way the lab's shared connections do; and the same
   through the proxies.
4. ``raftlab run bench/write-only.yaml faults/none.yaml`` with the same concurrency and no
   rate limit (the workload's default ``connections: shared``): every operation goes
   through the lab's trio client, its client proxy and the history file. Figures:
   operations completed *and recorded* per second over the time limit, the controller's
   CPU share (its own process, children excluded, as % of one core over its lifetime),
   the steady-state CPU of each process of the run (controller, proxy server, members)
   over the middle 40 % of the client phase, whose total says whether the machine was
   saturated or the run latency-bound, and the wall time from start to exit and from
   start to the moment the run prints "checking the history" (the run proper: start-up,
   clients and nemesis, settling, final phase and teardown; checking and reporting come
   after).
5. The same run with ``connections: per-client``, like for like with 1 and 2: 5 vs 2 is
   what the lab's client, history and controller cost on top of the proxies (and 4 vs
   3 through the proxies, with shared connections).
6. The baseline again: the machine's speed drifts over minutes (on the 2-core VM of
   2026-11-27 the same baseline measured 6222 to 7757 ops/s in one day), so the ratios
   use the mean of the first and last baseline, and both are printed.

The ratio lab/raftkv is the figure of merit (target >= 0.8); the wall-time target is
<= time limit + 5 s before checking and reporting. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import raftkv_bench  # noqa: E402  (bench/ is not a package)

from lab.network import Network  # noqa: E402
from lab.store import RunDir  # noqa: E402
from lab.systems.raftkv.cluster import RaftkvCluster  # noqa: E402
from lab.toxiclient import open_toxiproxy  # noqa: E402


def raftkv_own(clients: int, duration: float, tmp: Path) -> dict[str, float]:
    out = tmp / "raftkv.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "raftkv_bench.py"), "--duration",
                    str(duration), "--clients", str(clients), "--no-etcd",
                    "--failover-runs", "0", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    cells = json.loads(out.read_text())["results"]
    return dict(next(c for c in cells if c["system"] == "raftkv" and c["op"] == "write"))


def raftkv_own_load(clients: int, duration: float, tmp: Path, *, proxied: bool,
                    pipelined: bool) -> float:
    """Writes/s of raftkv's own load generator on a fresh 3-member cluster: every link
    proxied as in a lab run (``proxied``) or not; a connection per client or all clients
    pipelined on one (``pipelined``)."""
    async def main() -> float:
        cluster = RaftkvCluster(tmp / f"own-{int(proxied)}{int(pipelined)}", 3)
        async with contextlib.AsyncExitStack() as stack:
            def direct(m: str) -> tuple[str, int]:
                return cluster.members[m].client

            addr: Callable[[str], tuple[str, int]] = direct
            if proxied:
                client, _kind = await stack.enter_async_context(
                    open_toxiproxy(None, Path(tmp) / "toxiproxy.log"))
                net = await Network.create(client, {m.id: (m.peer, m.client)
                                                    for m in cluster.members.values()},
                                           listen=cluster.proxy_listen)
                stack.push_async_callback(net.aclose)
                cluster.dial = net.dial
                addr = net.client_addr
            stack.push_async_callback(cluster.stop_all)
            cluster.start_all()
            leader = await cluster.wait_leader(15)
            pids = cluster.pids()
            spec = raftkv_bench.WorkerSpec(
                system="raftkv", op="write", clients=clients, addr=tuple(addr(leader)),
                warmup=1.0, duration=duration, out="", server_pids=pids, leader_pid=pids[0],
                pipelined=pipelined)
            r = await raftkv_bench.run_load(spec, tmp)
            return float(r["ops_per_s"])
        raise AssertionError("unreachable")

    return trio.run(main)


def lab_run(clients: int, nodes: int, limit: float, tmp: Path, *, per_client: bool = False
            ) -> dict[str, float]:
    workload = ROOT / "bench" / "write-only.yaml"
    if per_client:
        tmp.mkdir(parents=True)
        text = workload.read_text()
        workload = tmp / "write-only-per-client.yaml"
        workload.write_text(text + "connections: per-client\n")
    argv = [sys.executable, "-m", "lab.cli", "run", str(workload),
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
    found = next(RunDir(d).read_results() for d in tmp.glob("*/*") if RunDir.is_run(d))
    assert found is not None, "the run left no results.json"
    r = found.data
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
        proxied = raftkv_own_load(a.clients, own_s, tmp, proxied=True, pipelined=False)
        piped = raftkv_own_load(a.clients, own_s, tmp, proxied=False, pipelined=True)
        piped_proxied = raftkv_own_load(a.clients, own_s, tmp, proxied=True, pipelined=True)
        lab = lab_run(a.clients, a.nodes, a.time_limit, tmp / "runs")
        per = lab_run(a.clients, a.nodes, a.time_limit, tmp / "runs-per-client",
                      per_client=True)
        own_after = float(raftkv_own(a.clients, own_s, tmp)["ops_per_s"])
    # The machine's speed drifts over minutes (a VM: the same code measured 6222 to 7757
    # in one day), so the baseline runs first and last and the ratios use its mean.
    own_before = float(own_cell["ops_per_s"])
    own = (own_before + own_after) / 2
    n = a.clients
    print(f"raftkv's own benchmark, writes, {n} clients, a connection each: {own:8.0f} ops/s "
          f"(% of one core: load generator {own_cell.get('loadgen_cpu_pct', 0):.0f}, members "
          f"{own_cell.get('server_cpu_pct', 0):.0f}, other {own_cell.get('other_cpu_pct', 0):.0f})"
          f" <- the baseline")
    print(f"  (measured first and last: {own_before:.0f} and {own_after:.0f} ops/s; the ratios "
          f"use their mean)")
    print(f"  the same, every link through the proxies:             {proxied:8.0f} ops/s "
          f"({proxied / own:.2f}: the proxies' cost)")
    print(f"  the same load generator, all {n} on one pipelined connection, no proxies: "
          f"{piped:.0f} ops/s ({piped / own:.2f})")
    print(f"    and pipelined through the proxies: {piped_proxied:.0f} ops/s "
          f"({piped_proxied / piped:.2f} of the pipelined figure: the proxies' cost)")
    for name, r in (("shared connections (the default)", lab),
                    ("a connection per client", per)):
        print(f"raftlab run, writes recorded, {n} clients, {name}: {r['ops_per_s']:8.0f} ops/s "
              f"(ok {r['ok']:.0f}, fail {r['fail']:.0f}, info {r['info']:.0f})")
    print(f"ratio lab/raftkv: {lab['ops_per_s'] / own:.2f} (target >= 0.8); with a connection "
          f"per client {per['ops_per_s'] / own:.2f}, {per['ops_per_s'] / proxied:.2f} of the "
          f"proxied figure (the lab's client, history and controller); shared against the "
          f"pipelined load generator {lab['ops_per_s'] / piped:.2f}, "
          f"{lab['ops_per_s'] / piped_proxied:.2f} of it through the proxies")
    print("the default run (shared connections):")
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
