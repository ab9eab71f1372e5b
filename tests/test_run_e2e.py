"""End to end: ``raftlab run`` as a user runs it, one OS process per experiment.

Every run goes to ``tmp_path`` (``--out``) with ``--nodes 3`` (five for the scenario that
names five members) and is bounded by a subprocess timeout. The run directory is then read
the way a user or a later tool would: ``history.jsonl`` must be a well-formed Jepsen
history (:func:`check_history_well_formed`, shared with ``test_run_signals.py``),
``schedule.jsonl`` must say what the nemesis did to which node over which directed links,
``cluster.jsonl`` what the members said, ``results.json`` how it went.

Every run here is of correct raftkv, so it must come out ``valid`` and exit 0: not
``unknown`` (a run that says nothing proves nothing), and never ``invalid``.

Fault timings: a run's time limit is chosen so the scenario's first fault fits whatever
the random draws (:func:`time_limit_for`), so every run with faults has nemesis events.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.scenario import ACTIONS, load_faults, load_workload

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = sorted(p.stem for p in (ROOT / "workloads").glob("*.yaml"))
FAULTS = sorted(p.stem for p in (ROOT / "faults").glob("*.yaml"))

# The console script of this venv; ``python -m lab.cli`` does nothing (no __main__ guard).
_SCRIPT = Path(sys.executable).with_name("raftlab")
RAFTLAB: list[str] = ([str(_SCRIPT)] if _SCRIPT.exists() else
                      [sys.executable, "-c", "import sys; from lab.cli import main; "
                                             "sys.exit(main())"])

EVENT_TYPES = ("invoke", "ok", "fail", "info")
REQUIRED_FIELDS = ("index", "time", "process", "type", "f", "key", "value")
#: Each workload's main operation (it must succeed at least once in any clean run).
MAIN_F = {"register": "write", "set": "add", "counter": "add", "bank": "transfer",
          "list-append": "txn"}
#: Wall-clock slack over the time limit: start-up, settle, final phase, teardown.
SLACK = 90.0


# --------------------------------------------------------------------------- the helper


class HistoryError(AssertionError):
    pass


def check_history_well_formed(path: Path, *, nemesis: bool | None = None,
                              complete: bool = True, healed: bool | None = None,
                              torn_ok: bool = False) -> list[dict[str, Any]]:
    """Check ``path`` is a well-formed history and return its events.

    * every line is a JSON object with ``index`` (0..n-1, consecutive), ``time`` (ns,
      monotonic non-decreasing), ``process``, ``type`` (invoke/ok/fail/info), ``f``,
      ``key`` and ``value``;
    * client events: a process invokes only when it has no operation open, and never
      again after an ``info`` completion (the client goes on as a new process); every
      completion follows an invoke of the same process with the same ``f`` and ``key``;
      with ``complete``, no invoke is left without its completion;
    * nemesis events: process ``"nemesis"``, type ``info``, ``f`` an action (a start),
      ``end-<action>`` (that fault's end: it follows the start with the same ``fault``
      id) or ``skipped-<action>``; with ``healed`` (default: ``complete``), every fault
      started was ended;
    * ``nemesis`` True: at least one fault started; False: none; None: don't care;
    * ``torn_ok``: the last line may be cut short (a SIGKILLed writer); it is ignored.
    """
    raw = path.read_bytes().decode("utf-8")
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:  # no newline at the end: the writer was cut short
        if not torn_ok:
            raise HistoryError(f"{path}: the last line has no newline: {lines[-1][:200]!r}")
        lines.pop()
    events: list[dict[str, Any]] = []
    open_ops: dict[Any, dict[str, Any]] = {}
    retired: set[Any] = set()
    started: dict[Any, str] = {}  # nemesis fault id -> action
    ended: set[Any] = set()
    last_time = -1
    for n, line in enumerate(lines):
        where = f"{path}:{n + 1}"
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise HistoryError(f"{where}: not JSON ({e}): {line[:200]!r}") from None
        if not isinstance(ev, dict):
            raise HistoryError(f"{where}: not a JSON object: {line[:200]!r}")
        missing = [k for k in REQUIRED_FIELDS if k not in ev]
        if missing:
            raise HistoryError(f"{where}: missing fields {missing}: {ev}")
        if ev["index"] != n:
            raise HistoryError(f"{where}: index {ev['index']!r}, expected {n}")
        t = ev["time"]
        if type(t) is not int or t < 0:
            raise HistoryError(f"{where}: time must be a count of ns, got {t!r}")
        if t < last_time:
            raise HistoryError(f"{where}: time goes backwards ({t} < {last_time})")
        last_time = t
        if ev["type"] not in EVENT_TYPES:
            raise HistoryError(f"{where}: bad type {ev['type']!r}")
        if not isinstance(ev["f"], str) or not ev["f"]:
            raise HistoryError(f"{where}: f must be a non-empty string: {ev}")
        p = ev["process"]
        if p == "nemesis":
            _check_nemesis_event(where, ev, started, ended)
        elif type(p) is int and p >= 0:
            if ev["type"] == "invoke":
                if p in open_ops:
                    raise HistoryError(f"{where}: process {p} invokes again before its "
                                       f"{open_ops[p]['f']} (index {open_ops[p]['index']}) "
                                       "completed")
                if p in retired:
                    raise HistoryError(f"{where}: process {p} invokes again after an info "
                                       "completion (it must go on as a new process)")
                open_ops[p] = ev
            else:
                inv = open_ops.pop(p, None)
                if inv is None:
                    raise HistoryError(f"{where}: {ev['type']} of process {p} without an "
                                       "open invoke")
                if (inv["f"], inv["key"]) != (ev["f"], ev["key"]):
                    raise HistoryError(f"{where}: completion {ev['f']} {ev['key']!r} of "
                                       f"process {p} does not match its invoke {inv['f']} "
                                       f"{inv['key']!r} (index {inv['index']})")
                if ev["type"] == "info":
                    retired.add(p)
        else:
            raise HistoryError(f"{where}: process must be a client number or 'nemesis': {p!r}")
        events.append(ev)
    if complete and open_ops:
        first = min(open_ops.values(), key=lambda e: e["index"])
        raise HistoryError(f"{path}: {len(open_ops)} invokes never completed, the first "
                           f"at index {first['index']}: {first}")
    if complete if healed is None else healed:
        unended = sorted(set(started) - ended, key=str)
        if unended:
            raise HistoryError(f"{path}: faults {unended} started but never ended")
    if nemesis is True and not started:
        raise HistoryError(f"{path}: no fault started (no nemesis start event)")
    if nemesis is False and started:
        raise HistoryError(f"{path}: faults started in a run without faults: {started}")
    return events


def _check_nemesis_event(where: str, ev: dict[str, Any], started: dict[Any, str],
                         ended: set[Any]) -> None:
    if ev["type"] != "info":
        raise HistoryError(f"{where}: nemesis events are of type info: {ev}")
    f = ev["f"]
    if not isinstance(ev["value"], dict) or not isinstance(ev["value"].get("nodes"), list):
        raise HistoryError(f"{where}: a nemesis event's value names its nodes: {ev}")
    if f.startswith("end-"):
        action, fid = f[4:], ev.get("fault")
        if started.get(fid) != action or fid in ended:
            raise HistoryError(f"{where}: {f} of fault {fid!r} without a matching start")
        ended.add(fid)
    elif f.startswith("skipped-"):
        if f[8:] not in ACTIONS:
            raise HistoryError(f"{where}: unknown action in {f!r}")
    else:
        if f not in ACTIONS:
            raise HistoryError(f"{where}: unknown nemesis action {f!r}")
        fid = ev.get("fault")
        if fid is not None:
            if fid in started:
                raise HistoryError(f"{where}: fault id {fid!r} started twice")
            started[fid] = f
        elif f != "heal":
            raise HistoryError(f"{where}: a fault start carries its fault id: {ev}")


def client_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["process"] != "nemesis"]


def nemesis_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["process"] == "nemesis"]


def final_phase(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (invoke, completion) pairs that end the history one at a time, each by a fresh
    process: the final phase runs after every worker stopped, so it is this sequential
    tail (possibly with a few of the workers' last operations before it)."""
    ops = client_events(events)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    seen: set[Any] = set()
    k = len(ops)
    while k >= 2:
        inv, done = ops[k - 2], ops[k - 1]
        if (inv["type"] != "invoke" or done["type"] == "invoke"
                or inv["process"] != done["process"] or inv["process"] in seen):
            break
        seen.add(inv["process"])
        pairs.append((inv, done))
        k -= 2
    pairs.reverse()
    return pairs


def _write(path: Path, events: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + tail)
    return path


def _ev(index: int, process: Any, type: str, f: str = "write", key: Any = "k0",
        value: Any = 1, time: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"index": index, "time": index * 10 if time is None else time, "process": process,
            "type": type, "f": f, "key": key, "value": value, **extra}


GOOD = [_ev(0, 0, "invoke"), _ev(1, 1, "invoke", "read", value=None),
        _ev(2, "nemesis", "info", "pause", None, {"nodes": ["n1"]}, fault=1),
        _ev(3, 0, "info", error="timeout"), _ev(4, 1, "ok", "read", value=1),
        _ev(5, 2, "invoke"), _ev(6, "nemesis", "info", "end-pause", None, {"nodes": ["n1"]},
                                 fault=1),
        _ev(7, 2, "fail", error="not-leader")]

BAD_HISTORIES = {
    "index gap": [*GOOD[:2], {**GOOD[2], "index": 3}],
    "time backwards": [*GOOD[:2], {**GOOD[2], "time": 5}],
    "bad type": [*GOOD[:1], _ev(1, 0, "done")],
    "missing key field": [{k: v for k, v in GOOD[0].items() if k != "key"}],
    "completion without invoke": [_ev(0, 0, "ok")],
    "invoke twice": [_ev(0, 0, "invoke"), _ev(1, 0, "invoke")],
    "invoke after info": [_ev(0, 0, "invoke"), _ev(1, 0, "info"), _ev(2, 0, "invoke")],
    "completion of another f": [_ev(0, 0, "invoke"), _ev(1, 0, "ok", "read")],
    "completion of another key": [_ev(0, 0, "invoke"), _ev(1, 0, "ok", key="k1")],
    "invoke never completed": GOOD[:1],
    "nemesis end without start": [_ev(0, "nemesis", "info", "end-kill", None, {"nodes": []},
                                      fault=1)],
    "nemesis not info": [_ev(0, "nemesis", "ok", "kill", None, {"nodes": ["n1"]}, fault=1),
                         _ev(1, "nemesis", "info", "end-kill", None, {"nodes": ["n1"]},
                             fault=1)],
    "nemesis unknown action": [_ev(0, "nemesis", "info", "explode", None, {"nodes": []})],
    "fault never ended": GOOD[:6] + GOOD[7:],
    "process is a string": [_ev(0, "client-1", "invoke"), _ev(1, "client-1", "ok")],
}


def test_history_helper_accepts_a_good_history(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.jsonl", GOOD)
    assert check_history_well_formed(path, nemesis=True) == GOOD
    with pytest.raises(HistoryError, match="faults started in a run without faults"):
        check_history_well_formed(path, nemesis=False)
    # a torn last line: only when told the writer may have been killed
    torn = _write(tmp_path / "t.jsonl", GOOD[:5], tail='{"index": 5, "ti')
    with pytest.raises(HistoryError, match="no newline"):
        check_history_well_formed(torn)
    assert check_history_well_formed(torn, complete=False, torn_ok=True) == GOOD[:5]


@pytest.mark.parametrize("name", sorted(BAD_HISTORIES))
def test_history_helper_rejects(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / "h.jsonl", BAD_HISTORIES[name])
    with pytest.raises(HistoryError):
        check_history_well_formed(path)


def test_final_phase_is_the_sequential_tail() -> None:
    events = [_ev(0, 0, "invoke"), _ev(1, 1, "invoke"), _ev(2, 0, "ok"), _ev(3, 1, "ok"),
              _ev(4, 10, "invoke", "read"), _ev(5, 10, "fail", "read", value=None),
              _ev(6, 11, "invoke", "read"), _ev(7, 11, "ok", "read")]
    assert [(i["index"], d["index"]) for i, d in final_phase(events)] == [(4, 5), (6, 7)]


# --------------------------------------------------------------------------- running


#: Random faults a scenario's test run must have room for, where one may not bite: a
#: bridge whose bridge member is the leader (one draw in three on 3 members) changes
#: nothing the lab can see, so that run needs three draws to earn a valid verdict.
FAULTS_WANTED = {"bridge": 3}


def time_limit_for(fault: str, floor: float = 10.0) -> float:
    """A time limit in which the scenario's first fault (or its first
    :data:`FAULTS_WANTED`) starts and ends whatever the random draws (latest start +
    longest duration), and at least ``floor``."""
    sc = load_faults(ROOT / "faults" / f"{fault}.yaml")
    need = 0.0
    for step in sc.schedule:
        need = max(need, step.at + (step.duration or 0.0))
    if sc.random is not None:
        r = sc.random
        need = max(need, r.start + FAULTS_WANTED.get(fault, 1)
                   * (r.interval[1] + r.duration[1]))
    return float(max(floor, need))


def expected_proxy() -> str:
    return "toxiproxy-server" if shutil.which("toxiproxy-server") else "built-in"


def raftlab(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAFTLAB, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


class Run:
    """One finished ``raftlab run`` and its run directory."""

    def __init__(self, proc: subprocess.CompletedProcess[str], out: Path) -> None:
        self.proc = proc
        dirs = sorted(p for p in out.glob("*/*") if p.is_dir())
        assert len(dirs) == 1, f"expected one run directory under {out}, got {dirs}\n" \
                               f"{self.output()}"
        self.dir = dirs[0]
        self.results: dict[str, Any] = {}
        if (self.dir / "results.json").exists():
            self.results = json.loads((self.dir / "results.json").read_text())

    def output(self) -> str:
        return (f"--- exit {self.proc.returncode}; stdout (tail) ---\n"
                f"{self.proc.stdout[-3000:]}\n--- stderr (tail) ---\n{self.proc.stderr[-6000:]}")

    def explain(self) -> str:
        """What a failed assertion shows: the output, the files, lab.log."""
        files = sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*") if p.is_file())
        lab_log = (self.dir / "lab.log").read_text(errors="replace")[-3000:] \
            if (self.dir / "lab.log").exists() else "(none)"
        return (f"{self.output()}\n--- run directory {self.dir}: {files}\n"
                f"--- lab.log (tail) ---\n{lab_log}")

    def jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / name
        assert path.exists(), f"{name} missing\n{self.explain()}"
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{path}:{n}: not JSON: {line[:200]!r}") from None
        return out

    def history(self, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            return check_history_well_formed(self.dir / "history.jsonl", **kwargs)
        except HistoryError as e:
            raise AssertionError(f"{e}\n{self.explain()}") from None


def run_lab(tmp_path: Path, workload: str, fault: str, time_limit: float, *, nodes: int = 3,
            seed: int = 0, extra: tuple[str, ...] = ()) -> Run:
    out = tmp_path / ("out" if seed == 0 else f"out-s{seed}")
    args = ["run", f"workloads/{workload}.yaml", f"faults/{fault}.yaml", "--nodes", str(nodes),
            "--time-limit", f"{time_limit:g}", "--seed", str(seed), "--out", str(out), *extra]
    try:
        proc = raftlab(*args, timeout=time_limit + SLACK)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"raftlab {' '.join(args)} still running after "
                             f"{time_limit + SLACK:g}s\nstdout: {e.stdout!r}\n"
                             f"stderr: {e.stderr!r}") from None
    return Run(proc, out)


#: A correct run that says little: ``unknown`` because its random faults never bit, or
#: its scenario's premise failed. Such a run is tried once more with the next seed (a
#: random shape can miss every member that matters); an invalid verdict never is.
SAYS_LITTLE = ("The faults never bit", "the scenario's premise failed")


def run_lab_until_it_says_something(tmp_path: Path, workload: str, fault: str,
                                    time_limit: float, *, nodes: int = 3
                                    ) -> tuple[Run, int]:
    """:func:`run_lab` with seed 0, and with seed 1 if the first run said little
    (:data:`SAYS_LITTLE`); the run to check and its seed."""
    run = run_lab(tmp_path, workload, fault, time_limit, nodes=nodes)
    reason = str(run.results.get("verdict_reason", ""))
    if run.results.get("verdict") == "unknown" and reason.startswith(SAYS_LITTLE):
        print(f"seed 0 said little ({reason[:120]}); trying seed 1")
        return run_lab(tmp_path, workload, fault, time_limit, nodes=nodes, seed=1), 1
    return run, 0


def assert_completed(run: Run, *, workload: str, fault: str, nodes: int = 3,
                     seed: int = 0, time_limit: float | None = None) -> None:
    """The run went to the end, cleanly, and said so consistently everywhere."""
    r = run.results
    assert "Traceback" not in run.proc.stderr, run.explain()
    assert r, f"results.json missing\n{run.explain()}"
    assert r["exit_reason"] == "completed", run.explain()
    assert r["partial"] is False
    # Correct raftkv under any shipped fault, for a time in which its faults start and
    # end: the lab must never cry wolf, nor shrug (``unknown``: faults that never bit, a
    # premise that failed, too few operations).
    assert r["verdict"] == "valid", (r.get("verdict_reason"), r.get("premises"),
                                     r.get("checker"), run.explain())
    assert run.proc.returncode == 0, run.explain()
    assert r["checker"]["model"], r["checker"]
    assert r["nothing_left_behind"] is True, r["leftovers"]
    assert r["leftovers"] == {"processes": [], "ports": []}
    assert r["proxy"] == expected_proxy()
    assert (r["workload"], r["faults"], r["nodes"], r["seed"]) == (workload, fault, nodes, seed)
    if time_limit is not None:
        assert r["time_limit"] == time_limit
        assert r["duration_s"] >= time_limit
    assert str(run.dir) == r["run_dir"]
    assert run.dir.parent.name == f"{workload}-{fault}"
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}-s{seed}(-\d+)?", run.dir.name), run.dir.name
    assert f"run directory: {run.dir}" in run.proc.stdout
    for name in ("scenario.yaml", "schedule.jsonl", "history.jsonl", "cluster.jsonl",
                 "results.json", "lab.log", "toxiproxy.log"):
        assert (run.dir / name).is_file(), f"{name} missing\n{run.explain()}"
    for k in range(1, nodes + 1):
        assert (run.dir / "nodes" / f"n{k}" / "node.log").is_file(), run.explain()
    # scenario.yaml: the resolved scenario, enough to replay the run
    sc = yaml.safe_load((run.dir / "scenario.yaml").read_text())
    assert (sc["nodes"], sc["seed"]) == (nodes, seed)
    assert sc["workload"]["name"] == workload and sc["faults"]["name"] == fault
    assert sc["command"] == r["command"] and sc["command"][:2] == ["raftlab", "run"]
    # cluster.jsonl: every member polled, with its view of the cluster
    polls = run.jsonl("cluster.jsonl")
    assert {p["node"] for p in polls} == {f"n{k}" for k in range(1, nodes + 1)}
    assert all({"time", "node", "alive"} <= p.keys() for p in polls)
    assert any(p.get("role") == "leader" for p in polls), "no poll ever saw a leader"
    # schedule.jsonl is what results.json calls faults_applied
    assert run.jsonl("schedule.jsonl") == r["faults_applied"]


def assert_history_matches_results(run: Run, events: list[dict[str, Any]]) -> None:
    r = run.results
    counts = Counter(e["type"] for e in events if e["process"] != "nemesis")
    assert r["events"] == len(events)
    assert r["counts"] == {t: counts.get(t, 0) for t in EVENT_TYPES}
    assert r["nemesis_events"] == sum(1 for e in events if e["process"] == "nemesis")
    # every nemesis event is a schedule record at the same instant, and vice versa
    sched = run.jsonl("schedule.jsonl")
    nem = nemesis_events(events)
    assert [(s["time"], s["action"], s["phase"], s.get("fault")) for s in sched] == [
        (e["time"], _action_of(e["f"]), _phase_of(e["f"]), e.get("fault")) for e in nem]
    for s, e in zip(sched, nem, strict=True):
        assert s["nodes"] == e["value"]["nodes"]


def _action_of(f: str) -> str:
    for prefix in ("end-", "skipped-"):
        if f.startswith(prefix):
            return f[len(prefix):]
    return f


def _phase_of(f: str) -> str:
    for prefix in ("end", "skipped"):
        if f.startswith(prefix + "-"):
            return prefix
    return "start"


def leaders_before(polls: list[dict[str, Any]], t: int, window: float = 1.0) -> set[str]:
    """The members the observer took for the leader shortly before history time ``t``:
    of each poll in the ``window`` seconds before ``t``, the highest-term member that
    said it leads. (The nemesis resolves ``leader`` from the last poll before it acts;
    the fault is recorded once installed, possibly after one more poll.)"""
    times = sorted({p["time"] for p in polls if t - window * 1e9 <= p["time"] < t})
    out = set()
    for pt in times:
        leaders = [p for p in polls if p["time"] == pt and p.get("role") == "leader"]
        if leaders:
            out.add(max(leaders, key=lambda p: p["term"])["node"])
    return out


def _components(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {(a, b) for i, ga in enumerate(groups) for j, gb in enumerate(groups) if i != j
            for a in ga for b in gb}


def _islands(members: list[str], cut: set[tuple[str, str]]) -> list[list[str]]:
    """Groups of members connected by links left up (in either direction)."""
    groups: list[list[str]] = []
    todo = list(members)
    while todo:
        group, frontier = [todo[0]], [todo[0]]
        todo.remove(todo[0])
        while frontier:
            a = frontier.pop()
            for b in list(todo):
                if (a, b) not in cut or (b, a) not in cut:
                    todo.remove(b)
                    group.append(b)
                    frontier.append(b)
        groups.append(sorted(group))
    return groups


def check_fault_record(rec: dict[str, Any], members: list[str],
                       sites: list[list[str]] | None = None) -> None:
    """A schedule.jsonl start record names members of the cluster and exactly the
    directed links its action cuts or slows (docs/architecture.md, "Directed links")."""
    action, nodes = rec["action"], rec["nodes"]
    links = {(a, b) for a, b in rec.get("links", [])}
    others = [m for m in members if m not in nodes]
    assert set(nodes) <= set(members), rec
    assert all(a in members and b in members and a != b for a, b in links), rec
    if action in ("kill", "pause", "stop", "restart", "start", "resume"):
        assert nodes and not links, rec
    elif action == "latency" and "links" in rec.get("params", {}):  # exactly those links
        assert not nodes and links == {(a, b) for a, b in rec["params"]["links"]}, rec
    elif action in ("isolate", "latency", "bandwidth", "slice", "reset-peer"):
        assert nodes and links == _components([nodes, others]), rec
    elif action == "leader-send-only":  # can send, cannot receive
        assert nodes and links == {(o, x) for x in nodes for o in members if o != x}, rec
    elif action == "leader-receive-only":  # can receive, cannot send
        assert nodes and links == {(x, o) for x in nodes for o in members if o != x}, rec
    elif action in ("partition-halves", "partition-random-halves"):
        groups = _islands(members, links)
        assert sorted(map(len, groups)) == [len(members) // 2, len(members)
                                             - len(members) // 2], rec
        assert links == _components(groups), rec
    elif action == "bridge":
        (bridge,) = [m for m in members if not any(m in link for link in links)]
        sides = _islands([m for m in members if m != bridge], links)
        assert len(sides) == 2 and links == _components(sides), rec
    elif action == "majority-ring":
        assert links, rec
        for m in members:  # everybody still hears a majority, itself included
            assert sum(1 for o in members if (o, m) not in links) > len(members) // 2, rec
    elif action == "datacenters":
        assert sites is not None and links == _components(sites), rec
    elif action == "isolate-site":
        assert sites is not None
        site = sites[rec["params"]["site"]]
        assert links == _components([site, [m for m in members if m not in site]]), rec
        # the nodes it acted on are the site's
        assert sorted(nodes) == sorted(site), f"isolate-site of {site} recorded as {rec}"


def check_schedule(run: Run, fault: str, members: list[str]) -> None:
    sc = load_faults(ROOT / "faults" / f"{fault}.yaml")
    sites = next((step.params["sites"] for step in sc.schedule
                  if step.action == "datacenters"), None)
    for rec in run.jsonl("schedule.jsonl"):
        if rec["phase"] == "start":
            check_fault_record(rec, members, sites)


# --------------------------------------------------------------------------- operations


def check_readers(run: Any, events: list[dict[str, Any]], model: str, per_member: int
                  ) -> None:
    """The workload's readers (``per_member`` for each member) ran under the process
    numbers after the clients' (a reader with several reads in flight takes more, fresh
    ones), only reading, and some reads of each were answered."""
    clients, readers = run.results["concurrency"], run.results["readers"]
    assert readers == per_member * run.results["nodes"], run.results
    mine = [e for e in client_events(events)
            if isinstance(e["process"], int) and clients <= e["process"] < clients + readers]
    for e in mine:
        if model == "list-append":
            assert e["f"] == "txn" and all(m[0] == "r" for m in e["value"] or []), e
        else:
            assert e["f"] == "read", e
    answered = {e["process"] for e in mine if e["type"] == "ok"}
    assert answered == set(range(clients, clients + readers)), (answered, clients, readers)


def check_op_shapes(model: str, events: list[dict[str, Any]], keys: list[str]) -> None:
    """Every client event has Jepsen's shape for its model (docs/writing-workloads.md)."""
    for e in client_events(events):
        f, v, typ = e["f"], e["value"], e["type"]
        where = f"index {e['index']}: {e}"
        if model in ("register", "cas-register"):
            assert f in ("read", "write", "cas") and e["key"] in keys, where
            if f == "read" and typ == "ok":
                assert v is None or type(v) is int, where
            elif f == "write":
                assert type(v) is int, where
            elif f == "cas":
                assert isinstance(v, list) and len(v) == 2, where
        elif model in ("set", "counter"):
            assert f in ("add", "read") and e["key"] is None, where
            if f == "add":
                assert type(v) is int, where
            elif typ == "ok":
                assert (isinstance(v, list) and all(type(x) is int for x in v)
                        if model == "set" else type(v) is int), where
        elif model == "bank":
            assert f in ("transfer", "read") and e["key"] is None, where
            if f == "transfer":
                assert isinstance(v, dict) and set(v) == {"from", "to", "amount"}, where
                assert v["from"] in keys and v["to"] in keys and v["from"] != v["to"], where
            elif typ == "ok":
                assert isinstance(v, dict) and sorted(v) == keys, where
                assert all(type(b) is int for b in v.values()), where
        else:
            assert model == "list-append" and f == "txn" and e["key"] is None, where
            assert isinstance(v, list) and v, where
            for mop in v:
                assert isinstance(mop, list) and len(mop) == 3 and mop[1] in keys, where
                assert mop[0] in ("append", "r"), where
                if mop[0] == "append":
                    assert type(mop[2]) is int, where
                elif typ == "ok":  # the list read; null for a key never appended to
                    assert mop[2] is None or isinstance(mop[2], list), where


def expected_final(model: str, keys: list[str]) -> list[tuple[str, Any]]:
    """The final phase's operations, as (f, key), in order."""
    if model in ("register", "cas-register"):
        return [("read", k) for k in keys]
    if model == "list-append":
        return [("txn", None)]
    return [("read", None)]


def assert_final_reads(run: Run, events: list[dict[str, Any]], workload: str) -> None:
    """The history ends with the final phase: one ok read per key (each maybe after
    failed attempts), after the last worker operation."""
    w = load_workload(ROOT / "workloads" / f"{workload}.yaml")
    keys = _keys(workload)
    tail = final_phase(events)
    want = expected_final(w.model, keys)
    oks = [(inv, done) for inv, done in tail if done["type"] == "ok"]
    got = [(done["f"], done["key"]) for _, done in oks][-len(want):]
    assert got == want, f"final phase: expected ok {want}, history ends with " \
                        f"{[(d['type'], d['f'], d['key']) for _, d in tail[-12:]]}\n{run.explain()}"
    assert events[-1]["type"] == "ok" or nemesis_events(events[-1:]), events[-1]
    last_ops = oks[-len(want):]
    # ... after every fault was healed
    first_final = last_ops[0][0]["index"]
    assert all(e["index"] < first_final for e in nemesis_events(events))
    if w.model == "list-append":
        (_, done), = last_ops
        assert [m[0] for m in done["value"]] == ["r"] * len(keys)
        assert [m[1] for m in done["value"]] == keys
        assert all(m[2] is None or isinstance(m[2], list) for m in done["value"])


def _keys(workload: str) -> list[str]:
    w = load_workload(ROOT / "workloads" / f"{workload}.yaml")
    if w.model == "set":
        return ["set"]
    if w.model == "counter":
        return ["counter"]
    if w.model == "bank":
        return [f"a{k}" for k in range(w.accounts)]
    return [f"k{k}" for k in range(w.keys)]


def ok_count(events: list[dict[str, Any]], f: str) -> int:
    return sum(1 for e in client_events(events) if e["type"] == "ok" and e["f"] == f)


# --------------------------------------------------------------------------- 1. asymmetric


@pytest.mark.processes
def test_register_asymmetric_leader_leaves_a_complete_run_directory(tmp_path: Path) -> None:
    limit = time_limit_for("asymmetric-leader", 15.0)
    assert limit <= 15.0
    run = run_lab(tmp_path, "register", "asymmetric-leader", limit)
    assert_completed(run, workload="register", fault="asymmetric-leader", time_limit=limit)
    events = run.history(nemesis=True)
    assert_history_matches_results(run, events)
    check_op_shapes("cas-register", events, _keys("register"))
    check_schedule(run, "asymmetric-leader", ["n1", "n2", "n3"])
    counts = Counter(e["type"] for e in client_events(events))
    assert counts["ok"] > 0 and counts["invoke"] > 0
    assert ok_count(events, "write") > 0 and ok_count(events, "read") > 0
    # every fault started was ended: in the history ...
    nem = nemesis_events(events)
    starts = [e for e in nem if e["f"] == "leader-send-only"]
    ends = [e for e in nem if e["f"] == "end-leader-send-only"]
    assert starts and len(starts) == len(ends), nem
    # ... and in schedule.jsonl, with the resolved node and the directed links it cut
    sched = run.jsonl("schedule.jsonl")
    polls = run.jsonl("cluster.jsonl")
    nodes = ["n1", "n2", "n3"]
    for rec in sched:
        assert {"time", "offset_s", "phase", "action", "fault", "nodes"} <= rec.keys(), rec
        assert rec["action"] == "leader-send-only"
        assert abs(rec["offset_s"] - rec["time"] / 1e9) < 0.001
        assert rec["time"] <= events[-1]["time"]
    for rec in (r for r in sched if r["phase"] == "start"):
        (target,) = rec["nodes"]
        assert target in nodes
        # the leader of the moment: the observer's last poll before the fault
        assert target in leaders_before(polls, rec["time"]), rec
        # "can send but not receive": exactly the links into the leader are cut
        assert sorted(map(tuple, rec["links"])) == [(n, target) for n in nodes if n != target]
        ends_of = [r for r in sched if r["phase"] == "end" and r["fault"] == rec["fault"]]
        assert len(ends_of) == 1 and ends_of[0]["nodes"] == [target]
        assert ends_of[0]["time"] > rec["time"]
    r = run.results
    assert r["leaders"] and all({"term", "leader"} == x.keys() for x in r["leaders"])
    assert_final_reads(run, events, "register")


# --------------------------------------------------------------------------- 2. kill-leader


@pytest.mark.processes
def test_register_kill_leader_changes_leader_and_restarts_the_killed_member(
        tmp_path: Path) -> None:
    limit = time_limit_for("kill-leader")
    run = run_lab(tmp_path, "register", "kill-leader", limit)
    assert_completed(run, workload="register", fault="kill-leader", time_limit=limit)
    events = run.history(nemesis=True)
    assert_history_matches_results(run, events)
    assert ok_count(events, "write") > 0
    sched = run.jsonl("schedule.jsonl")
    polls = run.jsonl("cluster.jsonl")
    kills = [s for s in sched if s["action"] == "kill" and s["phase"] == "start"]
    assert kills, sched
    kill = kills[0]
    (victim,) = kill["nodes"]
    assert victim in leaders_before(polls, kill["time"]), kill
    (end,) = [s for s in sched if s["phase"] == "end" and s["fault"] == kill["fault"]]
    check_schedule(run, "kill-leader", ["n1", "n2", "n3"])
    # cluster.jsonl: a leader change, i.e. two different (term, leader) pairs
    pairs = {(p["term"], p["node"]) for p in polls if p.get("role") == "leader"}
    assert len(pairs) >= 2, pairs
    assert len({t for t, _ in pairs}) >= 2
    leaders = run.results["leaders"]
    assert len(leaders) >= 2 and len({(x["term"], x["leader"]) for x in leaders}) >= 2
    assert any(x["leader"] != victim and x["term"] > leaders[0]["term"] for x in leaders)
    # the killed member was seen dead, then restarted (a second start in its log) and
    # answering again
    mine = [p for p in polls if p["node"] == victim]
    dead = [p for p in mine if kill["time"] < p["time"] < end["time"]]
    assert dead and all(p["alive"] is False for p in dead), dead
    assert any(p["alive"] for p in mine if p["time"] > end["time"]), mine[-5:]
    log = (run.dir / "nodes" / victim / "node.log").read_text(errors="replace")
    starts = [json.loads(ln) for ln in log.splitlines() if '"event": "started"' in ln
              or '"event":"started"' in ln]
    assert len(starts) >= 2, f"{victim} started {len(starts)} time(s)"
    assert_final_reads(run, events, "register")


# --------------------------------------------------------------------------- 3. workloads


WORKLOAD_RUNS = [("set", "partition-halves"), ("counter", "pause-leader"),
                 ("bank", "isolate-leader"), ("list-append", "none")]


def test_every_workload_has_an_end_to_end_run() -> None:
    covered = {w for w, _ in WORKLOAD_RUNS} | {"register"}
    assert covered == set(WORKLOADS)


@pytest.mark.processes
@pytest.mark.parametrize(("workload", "fault"), WORKLOAD_RUNS)
@pytest.mark.slow
def test_workload_runs_clean(tmp_path: Path, workload: str, fault: str) -> None:
    limit = time_limit_for(fault)
    run, seed = run_lab_until_it_says_something(tmp_path, workload, fault, limit)
    assert_completed(run, workload=workload, fault=fault, seed=seed, time_limit=limit)
    events = run.history(nemesis=fault != "none")
    assert_history_matches_results(run, events)
    model = load_workload(ROOT / "workloads" / f"{workload}.yaml").model
    assert run.results["model"] == model
    check_op_shapes(model, events, _keys(workload))
    assert ok_count(events, MAIN_F[workload]) > 0, Counter(
        (e["f"], e["type"]) for e in client_events(events))
    assert_final_reads(run, events, workload)
    check_readers(run, events, model,
                  load_workload(ROOT / "workloads" / f"{workload}.yaml").readers)
    check_schedule(run, fault, ["n1", "n2", "n3"])
    if fault != "none":
        acts = {s["action"] for s in run.jsonl("schedule.jsonl") if s["phase"] == "start"}
        want = load_faults(ROOT / "faults" / f"{fault}.yaml").random
        assert want is not None and acts and acts <= set(want.actions)


# --------------------------------------------------------------------------- 4. faults


COVERED_ABOVE = {"asymmetric-leader", "kill-leader", *(f for _, f in WORKLOAD_RUNS)}
OTHER_FAULTS = [f for f in FAULTS if f not in COVERED_ABOVE]


def test_shipped_scenarios_all_load() -> None:
    for name in FAULTS:
        load_faults(ROOT / "faults" / f"{name}.yaml")
    for name in WORKLOADS:
        load_workload(ROOT / "workloads" / f"{name}.yaml")
    assert set(OTHER_FAULTS) | COVERED_ABOVE == set(FAULTS)


@pytest.mark.processes
@pytest.mark.parametrize("fault", OTHER_FAULTS)
@pytest.mark.slow
def test_fault_scenario_runs(tmp_path: Path, fault: str) -> None:
    sc = load_faults(ROOT / "faults" / f"{fault}.yaml")
    named = {n for step in sc.schedule for site in (*step.params.get("sites", ()),
                                                    *step.params.get("links", ()),
                                                    step.target) for n in site}
    named |= set(sc.random.targets if sc.random else ())
    named = {n for n in named if re.fullmatch(r"n\d+", n)}
    nodes = max([3, *(int(n[1:]) for n in named)])
    limit = time_limit_for(fault, 8.0 if nodes == 3 else 14.0)
    run, seed = run_lab_until_it_says_something(tmp_path, "register", fault, limit,
                                                nodes=nodes)
    assert_completed(run, workload="register", fault=fault, nodes=nodes, seed=seed,
                     time_limit=limit)
    # the scenario's premise is recorded, and held (or the run would not be valid)
    if sc.initial_leader is None:
        assert run.results["premises"] == []
    else:
        [premise] = run.results["premises"]
        assert premise["premise"] == "initial_leader" and premise["held"] is True, premise
        assert premise["wanted"] == premise["got"] == run.results["initial_leader"] \
            == sc.initial_leader, premise
        assert premise["delay_s"] >= 0
    events = run.history(nemesis=True)
    assert_history_matches_results(run, events)
    assert ok_count(events, "write") > 0
    sched = run.jsonl("schedule.jsonl")
    allowed = {s.action for s in sc.schedule} | set(sc.random.actions if sc.random else ())
    started = [s for s in sched if s["phase"] == "start"]
    assert started and {s["action"] for s in started} <= allowed, sched
    # timed steps carry their file line and run at their offsets, never early and in
    # order (how late a busy machine makes them is not a property of the lab)
    origin = run.results["schedule_origin_s"]
    timed = []
    for step in sc.schedule:
        recs = [s for s in started if s.get("step_line") == step.line]
        assert len(recs) == 1, (step, sched)
        assert recs[0]["offset_s"] - origin >= step.at - 0.01, (step, recs[0], origin)
        timed.append((step.at, recs[0]["offset_s"]))
    timed.sort()
    for (at0, off0), (at1, off1) in itertools.pairwise(timed):
        assert at0 == at1 or off0 <= off1, timed
    assert_final_reads(run, events, "register")
    # last, what the scenario's faults did to whom
    check_schedule(run, fault, [f"n{k}" for k in range(1, nodes + 1)])
    if fault == "slow-follower":  # "One follower's links in and out are throttled"
        polls = run.jsonl("cluster.jsonl")
        for s in started:
            assert len(s["nodes"]) == 1, f"slow-follower throttled {s['nodes']}: {s}"
            assert s["nodes"][0] not in leaders_before(polls, s["time"]), s
    if fault == "crash-points":  # members died at their points, the lab's doing, and came back
        ends = [s for s in sched if s["phase"] == "end" and s["action"] == "crash-at"]
        fired = [(n, s["fault"]) for s in ends for n in s["fired"]]
        assert fired, sched
        assert run.results["member_exits"] == [], run.results["member_exits"]
        for n, _ in fired:
            log = (run.dir / "nodes" / n / "node.log").read_text()
            events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            assert any(e["event"] == "crash-point" for e in events), n
            assert sum(e["event"] == "started" for e in events) >= 2, n  # restarted


# --------------------------------------------------------------------------- 5. list, schema


def test_list_names_every_workload_and_fault() -> None:
    proc = raftlab("list")
    assert proc.returncode == 0, proc.stderr
    assert "INVALID" not in proc.stdout and proc.stderr == ""
    names = {ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ")}
    assert set(WORKLOADS) <= names and set(FAULTS) <= names, names
    for name in WORKLOADS + FAULTS:
        desc = " ".join(load_faults(ROOT / "faults" / f"{name}.yaml").description.split()) \
            if name in FAULTS else " ".join(
            load_workload(ROOT / "workloads" / f"{name}.yaml").description.split())
        assert re.search(rf"^  {re.escape(name)}\s+{re.escape(desc)}$", proc.stdout, re.M), name


def test_schema_is_json_and_describes_the_shipped_files() -> None:
    proc = raftlab("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    defs = schema["$defs"]
    assert {"workload", "faults"} <= defs.keys()
    # every key used by a shipped file is one the schema knows
    wprops = defs["workload"]["properties"]
    fprops = defs["faults"]["properties"]
    for name in WORKLOADS:
        doc = yaml.safe_load((ROOT / "workloads" / f"{name}.yaml").read_text())
        assert set(doc) <= set(wprops), (name, set(doc) - set(wprops))
        assert set(defs["workload"]["required"]) <= set(doc)
        assert doc["model"] in wprops["model"]["enum"]
    for name in FAULTS:
        doc = yaml.safe_load((ROOT / "faults" / f"{name}.yaml").read_text())
        assert set(doc) <= set(fprops), (name, set(doc) - set(fprops))
        assert set(defs["faults"]["required"]) <= set(doc)
        for step in doc.get("schedule", []):
            assert set(step) <= set(fprops["schedule"]["items"]["properties"]), step
            assert step["action"] in fprops["schedule"]["items"]["properties"]["action"]["enum"]
        if "random" in doc:
            rprops = fprops["random"]["properties"]
            assert set(doc["random"]) <= set(rprops)
            assert set(doc["random"]["actions"]) <= set(rprops["actions"]["items"]["enum"])


# --------------------------------------------------------------------------- 6. bad input

_FAULT_HEAD = "name: x\ndescription: a bad scenario\n"
_WORKLOAD_HEAD = "name: w\ndescription: a bad workload\n"

#: (id, kind of the bad file, its text, extra CLI args, expected line, words in the message)
BAD_FILES = [
    ("unknown-action", "faults", _FAULT_HEAD + "random:\n  interval: [1s, 2s]\n"
     "  duration: [1s, 2s]\n  actions: [partiton]\n", (), 6, ("partiton", "action")),
    ("unknown-step-action", "faults", _FAULT_HEAD + "schedule:\n  - at: 1s\n"
     "    action: kil\n", (), 5, ("kil",)),
    ("bad-duration", "faults", _FAULT_HEAD + "schedule:\n  - at: 2 seconds\n"
     "    action: kill\n", (), 4, ("2 seconds", "duration")),
    ("unknown-key", "faults", _FAULT_HEAD + "schedule:\n  - at: 1s\n    action: kill\n"
     "    tagret: leader\n", (), 6, ("tagret",)),
    ("step-past-own-limit", "faults", _FAULT_HEAD + "time_limit: 10s\nschedule:\n"
     "  - at: 8s\n    action: kill\n    for: 5s\n", (), 5, ("time limit",)),
    ("step-past-cli-limit", "faults", _FAULT_HEAD + "schedule:\n  - at: 1s\n    action: heal\n"
     "  - at: 9s\n    action: pause\n    for: 3s\n", ("--time-limit", "10"), 6, ("time limit",)),
    ("yaml-syntax", "faults", _FAULT_HEAD + "random:\n  interval: [1s, 2s]\n"
     "   duration: [1s, 2s]\n  actions: [kill]\n", (), 5, ("YAML",)),
    ("wrong-type-list", "faults", _FAULT_HEAD + "random:\n  interval: [1s, 2s]\n"
     "  duration: [1s, 2s]\n  actions: kill\n", (), 6, ("list",)),
    ("wrong-type-workload", "workloads", _WORKLOAD_HEAD + "model: set\nclients: many\n", (), 4,
     ("clients", "many")),
    ("unknown-workload-key", "workloads", _WORKLOAD_HEAD + "model: set\nclient: 3\n", (), 4,
     ("client",)),
    ("workload-yaml-syntax", "workloads", "name: w\n\tdescription: y\n", (), 2, ("YAML",)),
    ("op-not-in-model", "workloads", _WORKLOAD_HEAD + "model: register\n"
     "mix: {read: 1, add: 2}\n", (), 4, ("add",)),
    # explicit YAML tags: the value cannot be built, which is bad input too
    ("bad-tagged-int", "workloads", _WORKLOAD_HEAD + "model: set\nclients: !!int x3\n", (), 4,
     ("clients",)),
    ("unknown-tag", "workloads", _WORKLOAD_HEAD + "model: set\nclients: !foo 3\n", (), 4,
     ("clients",)),
    ("bad-tagged-duration", "faults", _FAULT_HEAD + "schedule:\n  - at: !!float 1s\n"
     "    action: kill\n", (), 4, ("at",)),
]

ONE_LINE = re.compile(r"raftlab: (?P<file>.+?):(?P<line>\d+): (?P<msg>.+)")


def _assert_bad_input(proc: subprocess.CompletedProcess[str], out: Path, file: str,
                      line: int | tuple[int, int], words: tuple[str, ...]) -> None:
    shown = f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, shown
    assert proc.returncode == 2, shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, shown
    m = ONE_LINE.fullmatch(lines[0])
    assert m, shown
    assert m["file"] == file, shown
    lo, hi = (line, line) if isinstance(line, int) else line
    assert lo <= int(m["line"]) <= hi, shown
    for w in words:
        assert w.lower() in m["msg"].lower(), shown
    assert not out.exists() or not any(out.iterdir()), "bad input must not start a run"


@pytest.mark.parametrize(("kind", "text", "extra", "line", "words"),
                         [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, kind: str, text: str,
                                          extra: tuple[str, ...], line: int,
                                          words: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    workload, faults = (str(bad), "faults/none.yaml") if kind == "workloads" else (
        "workloads/register.yaml", str(bad))
    out = tmp_path / "out"
    try:
        proc = raftlab("run", workload, faults, "--nodes", "3", "--out", str(out), *extra,
                       timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bad input {text!r} started a run") from None
    _assert_bad_input(proc, out, str(bad), line, words)


@pytest.mark.processes
def test_scenario_naming_more_members_than_the_cluster_is_bad_input(tmp_path: Path) -> None:
    """three-datacenters names n1..n5: with --nodes 3 that is bad input (exit 2 before
    anything starts), not a crash in the middle of the run."""
    out = tmp_path / "out"
    try:
        proc = raftlab("run", "workloads/register.yaml", "faults/three-datacenters.yaml",
                       "--nodes", "3", "--time-limit", "12", "--out", str(out), timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("three-datacenters with 3 nodes ran to its end") from None
    # the datacenters step spans lines 7-11 of the file
    _assert_bad_input(proc, out, "faults/three-datacenters.yaml", (7, 11), ())


def test_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = raftlab("run", "workloads/register.yaml", str(tmp_path / "nope.yaml"), "--out",
                   str(out))
    _assert_bad_input(proc, out, str(tmp_path / "nope.yaml"), 1, ("no such file",))
