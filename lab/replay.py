"""Replaying a run: the same experiment again, its faults exactly as they were applied.

A run directory holds ``scenario.yaml`` (the fully resolved scenario: workload, seed,
nodes, time limit, clients, rate, bugs, system) and ``schedule.jsonl`` (every fault as it
was applied: start and end records with offsets, the resolved nodes and, for network
faults, the directed links cut). :func:`load_replay` turns the two into a plan for a new
run (``raftlab run --replay RUN_DIR``):

* the same options and the same seed, hence the same operation stream (the workload's
  :class:`lab.workload.Generator` is seeded from it);
* a *timed* fault scenario: every recorded fault at its recorded offset (counted from the
  moment clients and nemesis started, ``results.json``'s ``schedule_origin_s``), on its
  recorded nodes (never ``leader`` or ``random`` again), undone after its recorded
  duration (a fault that lasted to the end of the run lasts to the end of the replay).
  Shapes that involved chance or the cluster's state (random halves, majority rings,
  bridges, one-way cuts, isolated sites) become ``cut-links`` steps over exactly the
  directed links that were cut; latency, bandwidth, slice and datacenter parameters are
  kept; a skipped step stays skipped (its target is ``none``). A ``crash-at`` keeps its
  point, its skip and its recorded ``for`` (how long its members stayed down after they
  died, not how long the fault lasted).

Everything here is pure file handling: :func:`replay_steps` builds the schedule from
records, :func:`faults_yaml` and :func:`workload_yaml` write scenario files back out
(``raftlab shrink`` runs its candidates from them). Bad input raises
:class:`lab.scenario.ScenarioError` (``FILE:LINE: ...``) or :class:`ReplayError`, whose
``str()`` is one line for the user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import topology
from lab.run import to_plain_data
from lab.scenario import (
    ACTION_PARAMS,
    ACTIONS,
    PROCESS_ACTIONS,
    UNTARGETED,
    FaultScenario,
    ScenarioError,
    Step,
    Workload,
)
from lab.store import (
    SCENARIO,
    SCHEDULE,
    ResolvedScenario,
    RunDir,
    ScheduleRecord,
    StoreError,
    iter_jsonl,
)
from lab.store import read_resolved as read_resolved  # where it lived before lab.store

#: Actions that cannot be undone, so their steps take no ``for``.
NO_UNDO = ("heal", "resume", "start", "restart")
#: Partition actions whose links follow from their nodes alone (kept as they are when the
#: recorded links agree); every other partition shape is replayed as ``cut-links``.
_BY_NODES = ("isolate", "leader-send-only", "leader-receive-only", "partition-halves")
#: Network actions on the links touching their target, with parameters.
_TOUCHING = ("latency", "bandwidth", "slice", "reset-peer", "cut-client")
#: A fault that ended this close to the time limit (or later) lasted to the end of the run.
_END_SLACK = 0.01


class ReplayError(Exception):
    """A run directory cannot be replayed; ``str(e)`` is one line for the user."""


#: What ``scenario.yaml`` says about a run (:class:`lab.store.ResolvedScenario`).
Resolved = ResolvedScenario


@dataclass(frozen=True)
class ReplayPlan:
    """A run to repeat: its options and the timed fault scenario of what it applied."""

    source: Path
    resolved: Resolved
    faults: FaultScenario
    origin_s: float  # history time (s) the recorded offsets were counted from
    origin_from: str  # where that came from
    skipped: int  # recorded steps that were skipped (they stay skipped)

    @property
    def workload(self) -> Workload:
        return self.resolved.workload


# --------------------------------------------------------------------------- schedule.jsonl


def read_schedule(path: Path) -> list[ScheduleRecord]:
    """The records of a ``schedule.jsonl`` with their line numbers
    (:func:`lab.store.iter_jsonl`, strict): a torn last line (a controller killed
    mid-write) is ignored; any other bad line is a ScenarioError naming it."""
    try:
        lines = iter_jsonl(path, strict=True)
    except StoreError as e:
        raise ScenarioError(e.source, e.line or 1, e.message) from None
    return [ScheduleRecord(k, rec) for k, rec in lines.records]


def _offset(rec: dict[str, Any]) -> float | None:
    v = _as_number(rec.get("offset_s"))
    if v is not None:
        return v
    t = _as_number(rec.get("time"))
    return t / 1e9 if t is not None else None


def _as_number(v: Any) -> float | None:
    return float(v) if _number(v) else None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def schedule_origin(results: Mapping[str, Any], resolved: Resolved,
                    records: Sequence[tuple[int, dict[str, Any]]],
                    history: Path | None = None) -> tuple[float, str]:
    """The history time (s) at which the run's clients and nemesis started, and how it
    was found: ``results.json`` (exact), else the scenario's timed steps (each starts no
    earlier than its ``at``), else the first client operation, else 0."""
    v = _as_number(results.get("schedule_origin_s"))
    if v is not None and v >= 0:
        return v, "results.json"
    at_of = dict(resolved.timed)
    guesses = [off - at_of[rec["step_line"]] for _, rec in records
               if rec.get("step_line") in at_of and (off := _offset(rec)) is not None]
    if guesses:
        return max(0.0, min(guesses)), "the offsets of its timed steps"
    if history is not None:
        for ev in iter_jsonl(history, strict=False).objects:
            t = _as_number(ev.get("time"))
            if t is not None and ev.get("process") != "nemesis" and ev.get("type") == "invoke":
                return t / 1e9, "its first client operation"
    return 0.0, "nothing (no origin recorded: offsets taken as they are)"


def replay_steps(records: Sequence[tuple[int, dict[str, Any]]], origin_s: float,
                 time_limit: float, nodes: int, path: str = "schedule.jsonl") -> list[Step]:
    """The timed steps that apply the recorded faults again: each at its recorded offset
    from ``origin_s``, on its recorded nodes (or links), for its recorded duration. Each
    step's ``line`` is its start record's line in ``path``."""
    members = [f"n{k}" for k in range(1, nodes + 1)]
    started: dict[Any, tuple[int, dict[str, Any], float]] = {}
    ends: dict[Any, float] = {}
    starts: list[tuple[int, dict[str, Any], float]] = []
    for line, rec in records:
        def fail(message: str, line: int = line) -> ScenarioError:
            return ScenarioError(path, line, message)

        phase = rec.get("phase")
        if phase not in ("start", "end", "skipped"):
            raise fail(f"unknown phase {phase!r} (expected start, end or skipped)")
        action = rec.get("action")
        if action not in ACTIONS:
            raise fail(f"unknown action {action!r} (expected one of: {', '.join(ACTIONS)})")
        off = _offset(rec)
        if off is None or off < 0:
            raise fail("a record needs its offset (offset_s, or time in ns)")
        ids = rec.get("nodes", [])
        if not isinstance(ids, list) or any(n not in members for n in ids):
            raise fail(f"nodes must list members of the {nodes}-node cluster "
                       f"(n1..n{nodes}), got {ids!r}")
        fid = rec.get("fault")
        if phase == "end":
            if fid is None or fid not in started:
                raise fail(f"the end of fault {fid!r}, which no earlier record started")
            ends.setdefault(fid, off)
            continue
        if phase == "start" and fid is not None:
            if fid in started:
                raise fail(f"fault {fid!r} starts twice")
            started[fid] = (line, rec, off)
        starts.append((line, rec, off))
    steps: list[Step] = []
    for line, rec, off in starts:
        at = round(min(max(0.0, off - origin_s), time_limit), 3)
        duration = None
        fid = rec.get("fault")
        if rec["phase"] == "start" and fid in ends and rec["action"] not in NO_UNDO:
            end_at = ends[fid] - origin_s
            if end_at < time_limit - _END_SLACK:  # else it lasted to the end of the run
                duration = round(max(0.0, min(end_at - at, time_limit - _END_SLACK - at)), 3)
        step = _replay_step(path, line, rec, at, duration, members, time_limit)
        if step is not None:
            steps.append(step)
    return sorted(steps, key=lambda s: (s.at, s.line))


def _replay_step(path: str, line: int, rec: dict[str, Any], at: float,
                 duration: float | None, members: list[str], time_limit: float) -> Step | None:
    action: str = rec["action"]
    nodes = tuple(rec.get("nodes", []))
    params = _params(path, line, action, rec.get("params", {}), members)
    if action == "crash-at" and "point" not in params:
        raise ScenarioError(path, line, "a crash-at record needs its params.point (the "
                                        "crash point it armed)")
    if rec["phase"] == "skipped":  # it did nothing; it does nothing again
        if action in UNTARGETED:
            return None
        if action == "cut":
            params["to"] = ("none",)
        return Step(line, at, action, ("none",), None, params)
    if action == "heal":
        return Step(line, at, "heal")
    if action == "crash-at":
        for_s = _as_number(rec.get("for_s"))
        return Step(line, at, action, nodes or ("none",),
                    None if for_s is None else round(max(0.0, min(for_s, time_limit - at)), 3),
                    params)
    if action in PROCESS_ACTIONS:
        return Step(line, at, action, nodes or ("none",), duration)
    if action == "latency" and "links" in params:  # exactly the links it named
        return Step(line, at, action, (), duration, params)
    if action in _TOUCHING:
        return Step(line, at, action, nodes or ("none",), duration, params)
    if action == "datacenters":
        if "sites" not in params:
            raise ScenarioError(path, line, "a datacenters record needs its params.sites")
        return Step(line, at, action, (), duration, params)
    links = _links(path, line, rec.get("links", []), members)
    if action in _BY_NODES and set(links) == _expected(action, nodes, members):
        return Step(line, at, action, () if action in UNTARGETED else nodes, duration)
    if not links:
        return None  # the shape cut nothing (say, halves of one node)
    return Step(line, at, "cut-links", (), duration,
                {"links": [list(link) for link in topology_sorted(links)]})


def _expected(action: str, nodes: tuple[str, ...], members: list[str]) -> set[tuple[str, str]]:
    if action == "partition-halves":
        return set(topology.halves(members))
    if not nodes:
        return set()
    if action == "isolate":
        return set(topology.components([nodes, [n for n in members if n not in nodes]]))
    out: set[tuple[str, str]] = set()
    for n in nodes:
        out |= (topology.leader_cannot_receive(n, members) if action == "leader-send-only"
                else topology.leader_cannot_send(n, members))
    return out


def topology_sorted(links: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Links in natural node order (``n2`` before ``n10``)."""
    rank = {n: i for i, n in enumerate(topology.ordered({x for link in links for x in link}))}
    return sorted(set(links), key=lambda link: (rank[link[0]], rank[link[1]]))


def _links(path: str, line: int, value: Any, members: list[str]) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise ScenarioError(path, line, f"links must be a list of [from, to] pairs, "
                                        f"got {value!r}")
    out: list[tuple[str, str]] = []
    for pair in value:
        if (not isinstance(pair, list) or len(pair) != 2 or pair[0] == pair[1]
                or any(n not in members for n in pair)):
            raise ScenarioError(path, line, f"a link must be a pair of two members "
                                            f"(n1..n{len(members)}), got {pair!r}")
        out.append((pair[0], pair[1]))
    return out


def _params(path: str, line: int, action: str, value: Any, members: list[str]
            ) -> dict[str, Any]:
    """The recorded parameters an action takes (others are ignored), checked."""
    if not isinstance(value, dict):
        raise ScenarioError(path, line, f"params must be an object, got {value!r}")
    out: dict[str, Any] = {}
    for key, kind in ACTION_PARAMS.get(action, {}).items():
        if key not in value:
            continue
        v = value[key]
        ok = True
        if kind == "int":
            ok = type(v) is int and v >= 0
        elif kind == "sites":
            ok = (isinstance(v, list) and len(v) >= 2
                  and all(isinstance(s, list) and s and all(n in members for n in s)
                          for s in v))
            v = [list(s) for s in v] if ok else v
        elif kind == "links":
            v = [list(link) for link in _links(path, line, v, members)]
        elif kind == "point":
            ok = isinstance(v, str) and bool(v)
        else:  # a target
            v = tuple(v) if isinstance(v, list) else (v,)
            ok = all(isinstance(n, str) for n in v)
        if not ok:
            raise ScenarioError(path, line, f"params.{key} of {action}: unexpected value "
                                            f"{value[key]!r}")
        out[key] = v
    return out


# --------------------------------------------------------------------------- the plan


def initial_leader(results: Mapping[str, Any], nodes: int) -> str | None:
    """The member that led when the run's clients started (``results.json``'s
    ``initial_leader``, else the first leader the observer saw), if known."""
    members = {f"n{k}" for k in range(1, nodes + 1)}
    leader = results.get("initial_leader")
    if leader is None:
        seen = results.get("leaders")
        if isinstance(seen, list) and seen and isinstance(seen[0], dict):
            leader = seen[0].get("leader")
    return leader if isinstance(leader, str) and leader in members else None


def load_replay(run_dir: Path) -> ReplayPlan:
    """Read a run directory into a :class:`ReplayPlan`; raises :class:`ReplayError` or
    :class:`ScenarioError` with one line for the user."""
    if not run_dir.is_dir():
        raise ReplayError(f"{run_dir}: not a run directory (no such directory)")
    run = RunDir(run_dir)
    missing = run.missing(SCENARIO, SCHEDULE)
    if missing:
        raise ReplayError(f"{run_dir}: not a run directory (no {' or '.join(missing)}; "
                          f"a run directory has {SCENARIO} and {SCHEDULE})")
    resolved = run.read_scenario()
    schedule = run.schedule_path
    records = read_schedule(schedule)
    found = run.read_results()
    results = found.data if found is not None else {}
    origin, origin_from = schedule_origin(results, resolved, records, run.history_path)
    steps = replay_steps(records, origin, resolved.time_limit, resolved.nodes, str(schedule))
    name = resolved.faults_name
    if not name.endswith("-replay"):
        name += "-replay"
    faults = FaultScenario(str(schedule), name,
                           f"Replay of {run_dir}: the faults of its schedule.jsonl at their "
                           "recorded offsets, on their recorded nodes and links.",
                           resolved.time_limit, tuple(steps),
                           initial_leader=initial_leader(results, resolved.nodes),
                           election_timeout=resolved.election_timeout,
                           heartbeat=resolved.heartbeat,
                           system_options=resolved.system_options)
    skipped = sum(1 for _, rec in records if rec.get("phase") == "skipped")
    return ReplayPlan(run_dir, resolved, faults, origin, origin_from, skipped)


# --------------------------------------------------------------------------- writing files


def duration_text(seconds: float) -> str:
    """``3.52s``, ``15s``: a duration scenario files accept."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def step_dict(step: Step) -> dict[str, Any]:
    d: dict[str, Any] = {"at": duration_text(step.at), "action": step.action}
    if step.target:
        d["target"] = list(step.target)
    if step.duration is not None:
        d["for"] = duration_text(step.duration)
    for key, v in step.params.items():
        d[key] = to_plain_data(v)
    return d



def faults_yaml(name: str, description: str, steps: Sequence[Step],
                time_limit: float | None, header: str = "",
                initial_leader: str | None = None,
                timing: tuple[float | None, float | None] = (None, None),
                system_options: dict[str, dict[str, int]] | None = None) -> str:
    """A fault-scenario file of plain timed steps (``lab.scenario.load_faults`` reads it)."""
    doc: dict[str, Any] = {"name": name, "description": description}
    if time_limit is not None:
        doc["time_limit"] = duration_text(time_limit)
    if initial_leader is not None:
        doc["initial_leader"] = initial_leader
    if any(t is not None for t in timing):
        doc["timing"] = {k: duration_text(t) for k, t in zip(("election", "heartbeat"),
                                                             timing, strict=True)
                         if t is not None}
    if system_options:
        doc["system_options"] = {k: dict(v) for k, v in system_options.items()}
    if steps:
        doc["schedule"] = [step_dict(s) for s in steps]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=96)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return ("\n".join(lines) + "\n" if lines else "") + body


def workload_yaml(w: Workload, header: str = "") -> str:
    """A workload file that ``lab.scenario.load_workload`` reads back as ``w``."""
    doc: dict[str, Any] = {
        "name": w.name, "description": w.description, "model": w.model, "keys": w.keys,
        "clients": w.clients, "rate": w.rate, "timeout": w.timeout, "mix": dict(w.mix),
        "values": {"min": w.value_min, "max": w.value_max},
        "txn": {"min_ops": w.txn_min, "max_ops": w.txn_max},
        "accounts": w.accounts, "total": w.total, "max_transfer": w.max_transfer,
        "final": {"reads": w.final_reads, "settle": w.settle},
        "connections": w.connections,
        "placement": w.placement,
        "readers": w.readers,
    }
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=96)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return ("\n".join(lines) + "\n" if lines else "") + body
