"""Cost of the built-in Toxiproxy server on the data path and on its API.

Usage::

    .venv/bin/python bench/proxy_bench.py [--round-trips 20000] [--bulk-mb 64]
                                          [--bulk-repeats 3] [--idle 50] [--toxics 10]
                                          [--api-samples 1000] [--json OUT]

What runs where (five processes, so that no measurement is bound by one Python process
doing everything; the machine's core count is printed):

* **orchestrator** (this process, trio): starts the others, talks to the Toxiproxy API
  through ``lab.toxiclient``, measures the API's response time, prints the table.
* **Toxiproxy** (``python -m lab.toxiproxy``, started by ``lab.toxiclient.open_toxiproxy``):
  one proxy ``bench`` whose upstream is the target server.
* **target server** (this script with ``--serve``): one thread per connection, plain
  blocking sockets. A connection starts with one mode byte: ``E`` echo (fixed-size
  messages back), ``S`` sink (8-byte length, then that many bytes, answered by one byte),
  ``G`` generate (8-byte length, answered by that many bytes).
* **measuring client** (this script with ``--worker``, a fresh process per measurement): one
  thread, blocking sockets, TCP_NODELAY. Ping-pong: one connection, a 100-byte request,
  the 100-byte answer read back in full, the next request sent at once; the latency of
  each round trip is timed with ``perf_counter_ns``; 1/20 of the round trips (at least
  200) are run first as warm-up and not counted. Bulk: ``--bulk-mb`` MB upstream (``S``:
  from the first byte sent to the one-byte acknowledgement) and downstream (``G``: from
  the request to the last byte read), 1 MiB writes and reads; ``--bulk-repeats`` runs
  per direction, the median is shown.
* **load** (this script with ``--load``, only for the API cell): streams through the proxy
  both ways (one ``S`` and one ``G`` connection, unbounded) as fast as it can while the
  orchestrator times ``GET /proxies``.

Cells: the same measurements direct to the target and through the proxy: clean; with
``--idle`` idle connections open through the proxy (opened by the orchestrator, each
with its upstream connection established); with ``--toxics`` toxics on the proxy (half
upstream, half downstream) of three kinds: ``noop``, ``latency`` with toxicity 0 (never
applied), and ``latency`` 0 ms with toxicity 1 (applied: every chunk goes through the
toxic pipeline). Overheads are ``proxy - direct`` of the same run; ratios are
``proxy / direct``. The proxy's CPU time during each bulk transfer (sampled with ``psutil``
by the measuring client around the transfer) is shown as % of one core.

It prints figures and never asserts; the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import trio

from lab import procs
from lab.toxiclient import ToxiproxyClient, open_toxiproxy

HOST = "127.0.0.1"
MSG = 100
CHUNK = 1 << 20
TARGET_OVERHEAD_US = 150.0
TARGET_BULK_MBS = 200.0
TARGET_API_MS = 10.0


# ======================================================================================
# target server (--serve)
# ======================================================================================


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _serve_one(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = _recv_exactly(conn, 1)
        if mode == b"E":
            while True:
                conn.sendall(_recv_exactly(conn, MSG))
        elif mode == b"S":
            (n,) = struct.unpack(">Q", _recv_exactly(conn, 8))
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n > 0:
                got = conn.recv_into(view, min(n, CHUNK))
                if not got:
                    return
                n -= got
            conn.sendall(b"!")
        elif mode == b"G":
            (n,) = struct.unpack(">Q", _recv_exactly(conn, 8))
            block = memoryview(b"x" * CHUNK)
            while n > 0:
                k = min(n, CHUNK)
                conn.sendall(block[:k])
                n -= k
            _recv_exactly(conn, 1)  # wait for the client to finish reading
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def serve() -> None:
    lsock = socket.create_server((HOST, 0), backlog=512)
    print(f"PORT {lsock.getsockname()[1]}", flush=True)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


# ======================================================================================
# measuring client (--worker) and load (--load)
# ======================================================================================


def _connect(port: int, mode: bytes) -> socket.socket:
    s = socket.create_connection((HOST, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(mode)
    return s


def ping_pong(port: int, round_trips: int) -> dict[str, float]:
    s = _connect(port, b"E")
    msg = b"p" * MSG
    warm = max(200, round_trips // 20)
    times = []
    buf = bytearray(MSG)
    view = memoryview(buf)
    for i in range(warm + round_trips):
        t0 = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < MSG:
            k = s.recv_into(view[got:])
            if not k:
                raise EOFError("echo server hung up")
            got += k
        if i >= warm:
            times.append(time.perf_counter_ns() - t0)
    s.close()
    times.sort()
    return {"p50_us": times[len(times) // 2] / 1e3,
            "p99_us": times[int(len(times) * 0.99)] / 1e3,
            "mean_us": statistics.fmean(times) / 1e3}


def bulk_up(port: int, nbytes: int) -> float:
    s = _connect(port, b"S")
    block = memoryview(b"u" * CHUNK)
    t0 = time.perf_counter()
    s.sendall(struct.pack(">Q", nbytes))
    left = nbytes
    while left > 0:
        k = min(left, CHUNK)
        s.sendall(block[:k])
        left -= k
    if s.recv(1) != b"!":
        raise EOFError("sink did not acknowledge")
    elapsed = time.perf_counter() - t0
    s.close()
    return nbytes / elapsed / 1e6


def bulk_down(port: int, nbytes: int) -> float:
    s = _connect(port, b"G")
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    t0 = time.perf_counter()
    s.sendall(struct.pack(">Q", nbytes))
    left = nbytes
    while left > 0:
        k = s.recv_into(view, min(left, CHUNK))
        if not k:
            raise EOFError("generator hung up")
        left -= k
    elapsed = time.perf_counter() - t0
    s.sendall(b"!")
    s.close()
    return nbytes / elapsed / 1e6


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    port = int(spec["port"])
    if spec["what"] == "ping":
        return ping_pong(port, int(spec["round_trips"]))
    watched = psutil.Process(spec["cpu_pid"]) if spec.get("cpu_pid") else None
    cpu0 = watched.cpu_times() if watched else None
    t0 = time.monotonic()
    transfer = bulk_up if spec["what"] == "up" else bulk_down
    out: dict[str, Any] = {"mbs": transfer(port, int(spec["bytes"])), "proxy_cpu": None}
    if watched is not None and cpu0 is not None:
        cpu1 = watched.cpu_times()
        busy = cpu1.user + cpu1.system - cpu0.user - cpu0.system
        out["proxy_cpu"] = 100 * busy / (time.monotonic() - t0)
    return out


def load(port: int) -> None:
    """Stream both ways through ``port`` until killed."""
    endless = 1 << 62
    threads = [threading.Thread(target=bulk_up, args=(port, endless), daemon=True),
               threading.Thread(target=bulk_down, args=(port, endless), daemon=True)]
    for t in threads:
        t.start()
    print("LOADING", flush=True)
    for t in threads:
        t.join()


# ======================================================================================
# orchestrator
# ======================================================================================


def _script(*args: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *args]


def _wait_line(log: Path, prefix: str, proc: subprocess.Popen[bytes], timeout: float = 10.0
               ) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    raise RuntimeError(f"{log.name}: no {prefix!r} line within {timeout} s")


@contextmanager
def child(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = procs.spawn(argv, log_path=log)
    try:
        yield proc
    finally:
        procs.signal_process(proc, 9)
        proc.wait()


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, toxiproxy_pid: int) -> None:
        self.args = args
        self.tmp = tmp
        self.proxy_pid = toxiproxy_pid
        self.proxy_proc = psutil.Process(toxiproxy_pid)
        self.runs = 0

    def run_worker(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.runs += 1
        log = self.tmp / f"worker-{self.runs}.log"
        with child(_script("--worker", json.dumps(spec)), log) as proc:
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed: {log.read_text()}")
        result: dict[str, Any] = json.loads(log.read_text().splitlines()[-1])
        return result

    def cell(self, port: int, proxied: bool) -> dict[str, Any]:
        out = self.run_worker({"what": "ping", "port": port,
                               "round_trips": self.args.round_trips})
        nbytes = self.args.bulk_mb * 1_000_000
        for what in ("up", "down"):
            runs = sorted((self.run_worker({"what": what, "port": port, "bytes": nbytes,
                                            "cpu_pid": self.proxy_pid if proxied else None})
                           for _ in range(self.args.bulk_repeats)), key=lambda r: r["mbs"])
            median = runs[len(runs) // 2]
            out[f"{what}_mbs"], out[f"{what}_proxy_cpu"] = median["mbs"], median["proxy_cpu"]
        return out


async def _api_times(client: ToxiproxyClient, samples: int) -> dict[str, float]:
    await client.proxies()  # warm the kept-alive connection
    times = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        await client.proxies()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return {"p50_ms": times[len(times) // 2] / 1e6, "p99_ms": times[int(len(times) * 0.99)] / 1e6,
            "max_ms": times[-1] / 1e6}


async def _open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port))
        s.sendall(b"E")  # the target holds it open, waiting for a message
        socks.append(s)
    await trio.sleep(0.2)
    return socks


async def amain(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"cells": {}, "api": {}}
    with child(_script("--serve"), tmp / "target.log") as target:
        target_port = int(_wait_line(tmp / "target.log", "PORT ", target))
        async with open_toxiproxy(None, tmp / "toxiproxy.log", use_binary=False) as (client,
                                                                               kind):
            assert client.server_pid is not None
            bench = Bench(args, tmp, client.server_pid)
            proxy = await client.create_proxy("bench", f"{HOST}:0", f"{HOST}:{target_port}")
            pport = proxy.address[1]
            run = trio.to_thread.run_sync
            cells = results["cells"]
            say(f"toxiproxy: {kind}, target on {target_port}, proxy on {pport}; "
                f"{os.cpu_count()} cores")

            say("direct ...")
            cells["direct"] = await run(bench.cell, target_port, False)
            say("proxy ...")
            cells["proxy"] = await run(bench.cell, pport, True)

            idle = await _open_idle(pport, args.idle)
            say(f"proxy + {args.idle} idle connections ...")
            cells[f"proxy + {args.idle} idle conns"] = await run(bench.cell, pport, True)
            for s in idle:
                s.close()

            half = args.toxics // 2
            kinds = [("noop", "noop", {}, 1.0),
                     ("latency toxicity 0", "latency", {"latency": 0}, 0.0),
                     ("latency 0 ms", "latency", {"latency": 0}, 1.0)]
            for label, type_, attrs, toxicity in kinds:
                for i in range(args.toxics):
                    stream = "upstream" if i < half else "downstream"
                    await client.add_toxic("bench", type_, stream, attrs, name=f"t{i}",
                                           toxicity=toxicity)
                name = f"proxy + {args.toxics} {label}"
                say(f"{name} ...")
                cells[name] = await run(bench.cell, pport, True)
                await client.reset()

            say("API while idle ...")
            results["api"]["idle"] = await _api_times(client, args.api_samples)
            with child(_script("--load", str(pport)), tmp / "load.log") as loader:
                await run(_wait_line, tmp / "load.log", "LOADING", loader)
                await trio.sleep(0.5)
                cpu0 = bench.proxy_proc.cpu_times()
                t0 = time.monotonic()
                say("API while the data path is saturated ...")
                results["api"]["saturated"] = await _api_times(client, args.api_samples)
                cpu1 = bench.proxy_proc.cpu_times()
                results["api"]["saturated"]["proxy_cpu"] = 100 * (
                    cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (time.monotonic() - t0)
    return results


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    cells = results["cells"]
    direct = cells["direct"]
    lines = [
        f"proxy_bench: {args.round_trips} round trips of {MSG} B, {args.bulk_mb} MB each way "
        f"(median of {args.bulk_repeats}), "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "",
        f"{'cell':<34}{'rt p50':>9}{'rt p99':>9}{'+p50':>8}{'+p99':>8}"
        f"{'up MB/s':>9}{'x':>6}{'cpu%':>6}{'down MB/s':>10}{'x':>6}{'cpu%':>6}",
        f"{'':<34}{'µs':>9}{'µs':>9}{'µs':>8}{'µs':>8}",
    ]
    for name, c in cells.items():
        is_direct = name == "direct"
        lines.append(
            f"{name:<34}{c['p50_us']:>9.1f}{c['p99_us']:>9.1f}"
            f"{_fmt(None if is_direct else c['p50_us'] - direct['p50_us'], '.1f'):>8}"
            f"{_fmt(None if is_direct else c['p99_us'] - direct['p99_us'], '.1f'):>8}"
            f"{c['up_mbs']:>9.0f}"
            f"{_fmt(None if is_direct else c['up_mbs'] / direct['up_mbs'], '.2f'):>6}"
            f"{_fmt(c['up_proxy_cpu'], '.0f'):>6}"
            f"{c['down_mbs']:>10.0f}"
            f"{_fmt(None if is_direct else c['down_mbs'] / direct['down_mbs'], '.2f'):>6}"
            f"{_fmt(c['down_proxy_cpu'], '.0f'):>6}")
    api = results["api"]
    lines += [
        "",
        f"{'API: GET /proxies':<34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'proxy cpu%':>11}",
        f"{'  data path idle':<34}{api['idle']['p50_ms']:>9.2f}{api['idle']['p99_ms']:>9.2f}"
        f"{api['idle']['max_ms']:>9.2f}",
        f"{'  data path saturated':<34}{api['saturated']['p50_ms']:>9.2f}"
        f"{api['saturated']['p99_ms']:>9.2f}{api['saturated']['max_ms']:>9.2f}"
        f"{api['saturated']['proxy_cpu']:>11.0f}",
        "",
        "targets (clean proxy):",
    ]
    p = cells["proxy"]
    over = p["p50_us"] - direct["p50_us"]
    bulk = min(p["up_mbs"], p["down_mbs"])
    sat = api["saturated"]["p99_ms"]
    lines += [
        f"  p50 overhead per round trip <= {TARGET_OVERHEAD_US:.0f} µs: {over:.1f} µs "
        f"({'met' if over <= TARGET_OVERHEAD_US else 'MISSED'})",
        f"  bulk >= {TARGET_BULK_MBS:.0f} MB/s each way: up {p['up_mbs']:.0f}, down "
        f"{p['down_mbs']:.0f} ({'met' if bulk >= TARGET_BULK_MBS else 'MISSED'})",
        f"  API within {TARGET_API_MS:.0f} ms while saturated (p99): {sat:.2f} ms "
        f"({'met' if sat <= TARGET_API_MS else 'MISSED'})",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--round-trips", type=int, default=20_000)
    p.add_argument("--bulk-mb", type=int, default=64)
    p.add_argument("--bulk-repeats", type=int, default=3,
                   help="bulk transfers per direction and cell; the median is shown")
    p.add_argument("--idle", type=int, default=50)
    p.add_argument("--toxics", type=int, default=10)
    p.add_argument("--api-samples", type=int, default=1000)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--load", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    if args.load is not None:
        load(args.load)
        return 0
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        results = trio.run(amain, args, Path(tmp))
    print(report(results, args), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
