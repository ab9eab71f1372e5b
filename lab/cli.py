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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="raftlab", description="A chaos lab for replicated systems.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="start raftkv, write, kill the leader, watch it recover")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--dir", type=Path, default=None, help="where member data and logs go")
    sub.add_parser("toxiproxy", add_help=False,
                   help="run the built-in Toxiproxy-compatible server in the foreground "
                        "([--host 127.0.0.1] [--port 8474]; see 'raftlab toxiproxy -h')")
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["toxiproxy"]:
        # Its flags are toxiproxy-server's own (-host, -port, -config, ...): pass them on.
        from lab.toxiproxy.cli import main as toxiproxy_main

        return toxiproxy_main(args[1:])
    a = p.parse_args(args)
    if a.cmd == "demo":
        if a.nodes < 1:
            print("raftlab: --nodes must be at least 1", file=sys.stderr)
            return 2
        if a.dir is None:
            with tempfile.TemporaryDirectory(prefix="raftlab-demo-") as tmp:
                return trio.run(demo, a.nodes, Path(tmp))
        return trio.run(demo, a.nodes, a.dir)
    return 2
