"""The controller's cost per operation: the lab's client path against an instant server.

Usage::

    .venv/bin/python bench/client_bench.py [--clients 32] [--seconds 5]

``bench/run_bench.py`` says how far the lab is from raftkv's own benchmark; this one
isolates the part of that gap that is the controller's own: no cluster, no proxy. A
separate process serves raftkv's client protocol and answers every request line at once
(``{"id": N, "ok": true}``), so all the time the controller spends is its own.

Cells, each for ``--seconds`` with ``--clients`` concurrent clients:

* **load generator**: a plain ``selectors`` loop (the way ``raftkv_bench.py`` drives
  load): one connection per client, send, read, send again. The baseline.
* **lab client**: trio workers doing what ``raftlab run``'s workers do per operation,
  minus the history: ``Generator.next_op`` (the ``bench/write-only.yaml`` workload) and
  ``RaftkvClient.invoke`` (``lab.systems.raftkv.client``, ``.wire``).
* **lab client + history**: the same, plus ``History.append`` of the invoke and of the
  completion (``lab.history``), as in a run, each worker on a connection of its own
  (``connections: per-client``).
* **shared connection + history**: the same with all workers on one connection
  (``connections: shared``, the default): the requests of a scheduling round leave in
  one send.

Printed per cell: operations per second, the CPU of the process doing the driving (user
+ system, ``resource.getrusage``) as % of one core and as microseconds per operation,
and the ratio of its microseconds per operation to the load generator's. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from lab.history import History  # noqa: E402
from lab.scenario import load_workload  # noqa: E402
from lab.systems.raftkv.client import RaftkvClient  # noqa: E402
from lab.workload import Generator  # noqa: E402


def serve(port_file: str) -> None:
    """The instant server: answers each request line with its id and ok."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    Path(port_file).write_text(str(listener.getsockname()[1]))
    pending: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, True)
                pending[conn] = b""
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                data = conn.recv(65536)
            except OSError:  # reset by a client that closed with a request in flight
                data = b""
            if not data:
                sel.unregister(conn)
                conn.close()
                continue
            lines = (pending[conn] + data).split(b"\n")
            pending[conn] = lines.pop()
            conn.sendall(b"".join(b'{"id":%d,"ok":true}\n' % json.loads(line)["id"]
                                  for line in lines))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_generator(port: int, clients: int, seconds: float) -> tuple[int, float]:
    """Closed loop over plain sockets; returns (operations, CPU seconds)."""
    rng = random.Random(1)
    sel = selectors.DefaultSelector()
    seq = 0

    def send(s: socket.socket) -> None:
        nonlocal seq
        seq += 1
        s.sendall(b'{"op":"write","key":"k%d","value":%d,"id":%d}\n'
                  % (rng.randrange(1000), rng.randrange(10**6), seq))

    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(s, selectors.EVENT_READ)
        send(s)
    done, cpu0, end = 0, _cpu(), time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(0.1):
            s = key.fileobj  # type: ignore[assignment]
            json.loads(s.recv(65536).split(b"\n")[0])
            done += 1
            send(s)
    cpu = _cpu() - cpu0
    for s in socks:
        s.close()
    return done, cpu


def lab_client(port: int, clients: int, seconds: float, history: Path | None,
               shared: bool = False) -> tuple[int, float]:
    """trio workers as in ``raftlab run``; returns (operations, CPU seconds)."""
    w = load_workload(ROOT / "bench" / "write-only.yaml")
    gen = Generator(w, random.Random(1))
    h = History(history) if history is not None else None
    done = 0

    async def worker(i: int, end: float) -> None:
        nonlocal done
        async with RaftkvClient({"n1": ("127.0.0.1", port)}, 2.0, random.Random(i),
                                shared=shared) as c:
            while trio.current_time() < end:
                op = gen.next_op()
                if h is not None:
                    h.append(i, "invoke", op.f, op.key, op.value)
                out = await c.invoke(w.model, op.f, op.key, op.value)
                if h is not None:
                    h.append(i, out.type, op.f, op.key, op.value, node=out.node,
                             error=out.error)
                if out.type != "ok":
                    raise SystemExit(f"client_bench: an operation failed: {out}")
                done += 1

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            if h is not None:
                nursery.start_soon(h.sync_every)
            cpu0 = _cpu()
            end = trio.current_time() + seconds
            async with trio.open_nursery() as workers:
                for i in range(clients):
                    workers.start_soon(worker, i, end)
            cpu = _cpu() - cpu0
            nursery.cancel_scope.cancel()
        return cpu

    cpu = trio.run(main)
    if h is not None:
        h.close()
    return done, cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    print(f"client_bench: {a.clients} clients, {a.seconds:g} s per cell, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="raftlab-clientbench-") as d:
        port_file = Path(d) / "port"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
        try:
            deadline = time.monotonic() + 10
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("client_bench: the instant server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            cells = [("load generator (selectors)", load_generator(port, a.clients, a.seconds)),
                     ("lab client", lab_client(port, a.clients, a.seconds, None)),
                     ("lab client + history", lab_client(port, a.clients, a.seconds,
                                                         Path(d) / "history.jsonl")),
                     ("shared connection + history", lab_client(
                         port, a.clients, a.seconds, Path(d) / "history2.jsonl", True))]
        finally:
            server.kill()
            server.wait()
    base = cells[0][1][1] / max(cells[0][1][0], 1)
    print(f"{'cell':<28} {'ops/s':>8} {'cpu %':>6} {'us/op':>7} {'x baseline':>10}")
    for name, (ops, cpu) in cells:
        per = cpu / max(ops, 1)
        print(f"{name:<28} {ops / a.seconds:>8.0f} {100 * cpu / a.seconds:>6.0f} "
              f"{1e6 * per:>7.1f} {per / base:>10.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main())
