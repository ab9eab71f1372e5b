"""Benchmark of the history checkers (prints figures; never asserts).

Usage::

    .venv/bin/python bench/checker_bench.py [--register-ops 100000] [--txns 20000]
                                            [--seed 1] [--skip-generated] [--json OUT]

What is measured
----------------
* **Peer histories** (the folder ``$RAFTLAB_PEER_HISTORIES`` names): each
  file is read, decoded and checked (``load_history`` + ``check_history``, the work of
  ``raftlab check`` minus interpreter start-up), timed with ``time.perf_counter``. The
  102 porcupine etcd files (cas-register, initial null): total, median and maximum; the
  120 knossos files: total and maximum; the 6 porcupine kv files: total and maximum.
  Every verdict is compared with the manifest and mismatches are printed.
* **Generated register history**: N operations (default 100 000) by 20 processes on 10
  keys against a simulated atomic register (values 0..4, as Jepsen's register workload
  draws them); 5 % of operations end ``info`` (some took effect, some later, some never)
  and the crashed process is replaced by a new one. Each op takes effect at a random
  moment inside its call, so the history is linearizable and the search must prove it.
  The history is written to a JSON-lines file (as a run writes it) and checked the way
  ``raftlab check`` does, in three timed phases: *load* (read the file and parse its
  JSON lines, :func:`lab.jsonl.iter_jsonl`), *decode* (events into operations,
  :func:`lab.checker._events.parse_events`) and *check* (``check_history`` on the
  decoded history). The total is what compares with another checker given the file;
  load + decode is the share spent reading it.
* **Generated list-append history**: T transactions (default 20 000) of 1..4 micro-ops by
  20 processes, executed atomically inside their call by a simulated strict-serializable
  store; keys rotate after 32 appends (like Elle's workload), 3 % fail, 3 % info.

The generated cases run in a fresh subprocess each (``--worker``), which generates the
history in memory, then times the check (list-append: ``check_history`` on the events in
memory), and reports its own peak resident memory (``VmHWM``, including the generated
events themselves).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.checker import check_history, load_history  # noqa: E402
from lab.checker._events import parse_events  # noqa: E402
from lab.checker._peer import peer_histories_dir, peer_manifest  # noqa: E402
from lab.fastjson import dumps  # noqa: E402
from lab.jsonl import iter_jsonl  # noqa: E402

TARGETS = {
    "etcd_total_s": 1.3,
    "etcd_max_s": 0.6,
    "register_s": 30.0,
    "register_mib": 1024.0,
    "list_append_s": 20.0,
}


# -- generators ------------------------------------------------------------------------


def gen_register(rng: random.Random, n_ops: int, n_procs: int = 20, n_keys: int = 10,
                 p_info: float = 0.05, values: int = 5) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    state: dict[int, int | None] = dict.fromkeys(range(n_keys))
    slots = list(range(n_procs))  # slot -> current process id
    next_pid = n_procs
    inflight: dict[int, list[Any]] = {}  # slot -> [pid, f, key, value, phase, result]
    zombies: list[tuple[str, int, Any]] = []
    started = 0

    def emit(p: int, t: str, f: str, k: int, v: Any) -> None:
        events.append({"index": len(events), "time": len(events) * 1000, "process": p,
                       "type": t, "f": f, "key": k, "value": v})

    def apply(f: str, k: int, v: Any) -> tuple[bool, Any]:
        if f == "read":
            return True, state[k]
        if f == "write":
            state[k] = v
            return True, v
        if state[k] == v[0]:
            state[k] = v[1]
            return True, v
        return False, v

    while started < n_ops or inflight:
        if zombies and rng.random() < 0.01:
            f, k, v = zombies.pop(rng.randrange(len(zombies)))
            if rng.random() < 0.5:
                apply(f, k, v)
        s = rng.randrange(n_procs)
        cur = inflight.get(s)
        if cur is None:
            if started >= n_ops:
                continue
            f = rng.choice(("read", "read", "write", "cas"))
            k = rng.randrange(n_keys)
            v: Any = (None if f == "read" else rng.randrange(values) if f == "write"
                      else [rng.randrange(values), rng.randrange(values)])
            inflight[s] = [slots[s], f, k, v, 0, None]
            emit(slots[s], "invoke", f, k, v)
            started += 1
        elif cur[4] == 0 and rng.random() < 0.5:
            took, res = apply(cur[1], cur[2], cur[3])
            cur[4], cur[5] = (1 if took else 2), res
        else:
            pid, f, k, v, phase, res = cur
            del inflight[s]
            if rng.random() < p_info:
                emit(pid, "info", f, k, None if f == "read" else v)
                if phase == 0 and f != "read":
                    zombies.append((f, k, v))
                slots[s] = next_pid
                next_pid += 1
            elif phase == 1:
                emit(pid, "ok", f, k, res)
            else:
                emit(pid, "fail", f, k, None if f == "read" else v)
    return events


def gen_list_append(rng: random.Random, n_txns: int, n_procs: int = 20,
                    active_keys: int = 10, max_appends: int = 32) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    lists: dict[int, list[int]] = {}
    keys = list(range(active_keys))
    next_key = active_keys
    appends: dict[int, int] = {}
    counter = 0
    slots = list(range(n_procs))
    next_pid = n_procs
    inflight: dict[int, list[Any]] = {}  # slot -> [pid, mops, applied?, result]
    started = 0

    def emit(p: int, t: str, v: Any) -> None:
        events.append({"index": len(events), "time": len(events) * 1000, "process": p,
                       "type": t, "f": "txn", "key": None, "value": v})

    while started < n_txns or inflight:
        s = rng.randrange(n_procs)
        cur = inflight.get(s)
        if cur is None:
            if started >= n_txns:
                continue
            mops = []
            for _ in range(rng.randrange(1, 5)):
                i = rng.randrange(len(keys))
                k = keys[i]
                if rng.random() < 0.5:
                    counter += 1
                    mops.append(["append", k, counter])
                    appends[k] = appends.get(k, 0) + 1
                    if appends[k] >= max_appends:
                        keys[i] = next_key
                        next_key += 1
                else:
                    mops.append(["r", k, None])
            inflight[s] = [slots[s], mops, False, None]
            emit(slots[s], "invoke", mops)
            started += 1
        elif not cur[2] and rng.random() < 0.5:
            r = rng.random()
            if r < 0.03:  # will fail: never applied
                cur[2], cur[3] = True, "fail"
                continue
            out = []
            for f, k, v in cur[1]:
                if f == "append":
                    lists.setdefault(k, []).append(v)
                    out.append([f, k, v])
                else:
                    out.append([f, k, list(lists.get(k, []))])
            cur[2], cur[3] = True, out
        elif cur[2]:
            pid, mops, _, res = cur
            del inflight[s]
            if res == "fail":
                emit(pid, "fail", mops)
            elif rng.random() < 0.03:
                emit(pid, "info", mops)
                slots[s] = next_pid
                next_pid += 1
            else:
                emit(pid, "ok", res)
    return events


# -- measurements ----------------------------------------------------------------------


def peak_rss_kib() -> int:
    """This process's peak resident set. ``VmHWM`` belongs to the process image (reset by
    exec); ``ru_maxrss`` survives exec and would include the parent's size at fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(kind: str, n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    if kind == "register":
        events, model = gen_register(rng, n), "cas-register"
    else:
        events, model = gen_list_append(rng, n), "list-append"
    gen_s = time.perf_counter() - t0
    phases: dict[str, float] = {}
    if kind == "register":  # from a file, as ``raftlab check`` reads it
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "history.jsonl"
            path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
            del events
            t0 = time.perf_counter()
            lines = iter_jsonl(path)
            phases["load_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            hist = parse_events(lines.records, str(path))
            phases["decode_s"] = time.perf_counter() - t0
            n_events = hist.events
            del lines
        t0 = time.perf_counter()
        res = check_history(hist, model)
        check_s = time.perf_counter() - t0
    else:
        n_events = len(events)
        t0 = time.perf_counter()
        res = check_history(events, model)
        check_s = time.perf_counter() - t0
    maxrss_kib = peak_rss_kib()
    return {"kind": kind, "n": n, "events": n_events, "generate_s": gen_s, **phases,
            "check_s": check_s, "peak_rss_mib": maxrss_kib / 1024, "verdict": res.verdict,
            "reason": res.reason, "stats": res.stats.get("search") or
            {k: v for k, v in res.stats.get("list_append", {}).items() if k != "notes"}}


def run_worker(kind: str, n: int, seed: int) -> dict[str, Any]:
    p = subprocess.run([sys.executable, __file__, "--worker", kind, "--n", str(n),
                        "--seed", str(seed)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return {"kind": kind, "error": p.stderr.strip().splitlines()[-1:]}
    out: dict[str, Any] = json.loads(p.stdout)
    return out


def peers() -> dict[str, Any]:
    folder = peer_histories_dir()
    if folder is None:
        return {"error": "peer histories not found (set RAFTLAB_PEER_HISTORIES)"}
    groups: dict[str, list[tuple[str, float]]] = {"etcd": [], "knossos": [], "kv": []}
    reading = dict.fromkeys(groups, 0.0)  # load + decode, per group
    mismatches = []
    for e in peer_manifest(folder):
        group = ("etcd" if e["file"].startswith("porcupine-etcd") else
                 "kv" if e["file"].startswith("porcupine-kv") else "knossos")
        t0 = time.perf_counter()
        hist = load_history(folder / e["file"])
        t_read = time.perf_counter() - t0
        res = check_history(hist, e["model"], initial=e["initial_value"],
                            options={"min_ok": 0})
        dt = time.perf_counter() - t0
        groups[group].append((e["file"], dt))
        reading[group] += t_read
        want = {"linearizable": True, "not-linearizable": False}[e["expected"]]
        if res.valid is not want:
            mismatches.append(e["file"])
    out: dict[str, Any] = {"mismatches": mismatches}
    for g, rows in groups.items():
        ts = [t for _, t in rows]
        slowest = max(rows, key=lambda r: r[1])
        out[g] = {"files": len(rows), "total_s": sum(ts), "median_s": statistics.median(ts),
                  "max_s": slowest[1], "slowest": slowest[0], "read_s": reading[g]}
    return out


def verdict(value: float, target: float) -> str:
    return f"{'OK  ' if value <= target else 'MISS'} (target <= {target:g})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--register-ops", type=int, default=100_000)
    ap.add_argument("--txns", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-generated", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--worker", choices=["register", "list-append"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.n, a.seed)))
        return 0
    figures: dict[str, Any] = {"peers": peers()}
    p = figures["peers"]
    print("checker benchmark (load + decode + check per file; wall time, perf_counter)")
    if "error" in p:
        print(f"  peer histories: {p['error']}")
    else:
        e, k, kv = p["etcd"], p["knossos"], p["kv"]
        print(f"  porcupine etcd  {e['files']:>3} files  total {e['total_s']:7.3f} s  "
              f"{verdict(e['total_s'], TARGETS['etcd_total_s'])}")
        print(f"                  median {e['median_s'] * 1000:7.2f} ms   max "
              f"{e['max_s']:6.3f} s ({e['slowest']})  "
              f"{verdict(e['max_s'], TARGETS['etcd_max_s'])}")
        print(f"  knossos         {k['files']:>3} files  total {k['total_s']:7.3f} s  "
              f"max {k['max_s']:6.3f} s ({k['slowest']})")
        print(f"  porcupine kv    {kv['files']:>3} files  total {kv['total_s']:7.3f} s  "
              f"max {kv['max_s']:6.3f} s ({kv['slowest']})")
        for name, g in (("etcd", e), ("knossos", k), ("kv", kv)):
            print(f"  {name:<8} load + decode {g['read_s']:7.3f} s "
                  f"({g['read_s'] / g['total_s']:4.0%}), check "
                  f"{g['total_s'] - g['read_s']:7.3f} s")
        print(f"  verdict mismatches against MANIFEST.json: {len(p['mismatches'])}"
              + (f" {p['mismatches']}" if p["mismatches"] else ""))
    if not a.skip_generated:
        r = run_worker("register", a.register_ops, a.seed)
        figures["register"] = r
        if "error" in r:
            print(f"  register {a.register_ops} ops: worker failed: {r['error']}")
        else:
            read_s = r["load_s"] + r["decode_s"]
            total = read_s + r["check_s"]
            print(f"  register {r['n']} ops (10 keys, 20 procs, 5% info), from a file: total "
                  f"{total:6.2f} s {verdict(total, TARGETS['register_s'])}")
            print(f"                  load {r['load_s']:6.2f} s + decode {r['decode_s']:6.2f} s"
                  f" = {read_s:6.2f} s ({read_s / total:4.0%}); check {r['check_s']:6.2f} s "
                  f"({r['check_s'] / total:4.0%}); "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB "
                  f"{verdict(r['peak_rss_mib'], TARGETS['register_mib'])}; {r['verdict']}, "
                  f"{r['stats']}")
        r = run_worker("list-append", a.txns, a.seed)
        figures["list_append"] = r
        if "error" in r:
            print(f"  list-append {a.txns} txns: worker failed: {r['error']}")
        else:
            print(f"  list-append {r['n']} txns: check {r['check_s']:6.2f} s "
                  f"{verdict(r['check_s'], TARGETS['list_append_s'])}; peak RSS "
                  f"{r['peak_rss_mib']:6.0f} MiB; {r['verdict']}, edges "
                  f"{r['stats'].get('edges')}")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
