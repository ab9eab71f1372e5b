"""A run's data as a model: operations, faults and cluster polls, loaded from a run
directory (:func:`load_run`) through :class:`lab.store.RunDir`.

The verdict (:mod:`lab.verdict`) works out from it whether the faults bit; the report
(:mod:`lab.report`) draws it. Everything here is forgiving. A report must render for a
run that was killed at any moment, checked or not: a missing file is empty, a torn or
malformed line is skipped (and counted in ``warnings``), an invoke without a completion
is a ``pending`` operation. The files are read through :class:`lab.store.RunDir` in its
forgiving mode; the checker is the strict reader of histories.

Times are nanoseconds since the run started, the clock that ``history.jsonl``,
``schedule.jsonl`` and ``cluster.jsonl`` share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.store import SCHEDULE, JsonLines, RunDir

NEMESIS = "nemesis"
PROCESS_ACTIONS = frozenset({"kill", "stop", "pause", "restart", "start", "resume",
                             "crash-at"})


@dataclass(slots=True)
class Operation:
    """One client operation: its invoke and its completion merged.

    ``type`` is ``ok``, ``fail``, ``info`` or ``pending`` (never completed). ``value`` is
    what an ``ok`` completion returned, else what was invoked. ``end`` is ``None`` for a
    pending operation."""

    index: int
    process: Any
    f: str
    key: Any
    type: str
    start: int
    end: int | None
    value: Any
    node: str | None = None
    error: str | None = None
    complete_index: int | None = None

    @property
    def latency(self) -> int | None:
        """Nanoseconds from invoke to completion, ``None`` when pending."""
        return None if self.end is None else self.end - self.start


@dataclass(slots=True)
class Fault:
    """One fault as the nemesis applied it, with resolved targets.

    ``end`` is when it was undone (``None``: never, within the recorded data); ``start ==
    end`` for an instant action such as ``heal``. ``skipped`` holds why a step did not
    run. ``number`` counts the faults the nemesis started (its fault ids), so an
    instant action or a skipped step has none: the bands' numbers agree with the count
    of faults."""

    number: int | None
    action: str
    start: int
    end: int | None = None
    nodes: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def kind(self) -> str:
        """``process``, ``network``, ``slow`` or ``other``: what the band's colour says."""
        if self.action == "crash-at" and self.params.get("fired") == []:
            return "other"  # armed, but no member reached the point: it did nothing
        if self.action in PROCESS_ACTIONS:
            return "process"
        if self.action in ("latency", "bandwidth", "slice", "datacenters"):
            return "slow"
        if self.links or self.action.startswith(("partition", "isolate", "cut", "leader-")):
            return "network"
        return "other"

    @property
    def target(self) -> str:
        """Who it hit, in a few words: nodes, or the number of directed links."""
        if self.nodes:
            return ",".join(self.nodes)
        if self.links:
            return f"{len(self.links)} links"
        return ""

    @property
    def label(self) -> str:
        """A short label for a band, e.g. ``#2 isolate n3``; ``heal`` for an unnumbered
        one (an instant action, a skipped step)."""
        what = f"{self.action} {self.target}".strip()
        if self.action == "crash-at" and "point" in self.params:
            what += f" {self.params['point']}"
        return what if self.number is None else f"#{self.number} {what}"


@dataclass
class RunData:
    """What the verdict and the report read from a run directory."""

    path: Path
    results: dict[str, Any]
    scenario: dict[str, Any]
    ops: list[Operation]
    faults: list[Fault]
    polls: list[dict[str, Any]]
    events: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)
    t_end: int = field(init=False, default=0)  # the last moment the data covers (ns)

    def __post_init__(self) -> None:
        last = max((op.end or op.start for op in self.ops), default=0)
        last = max(last, max((f.end or f.start for f in self.faults), default=0))
        self.t_end = max(last, max((int(p["time"]) for p in self.polls), default=0))

    def setting(self, name: str, default: Any = None) -> Any:
        """A run setting from ``results.json``, else from ``scenario.yaml``."""
        if name in self.results:
            return self.results[name]
        value = self.scenario.get(name, default)
        if name in ("workload", "faults"):  # sections of scenario.yaml: their name
            return value.get("name", default) if isinstance(value, dict) else default
        return value


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run directory (:meth:`lab.store.RunDir.is_run`)."""
    return RunDir.is_run(path)


def load_run(path: Path) -> RunData:
    """Read every file of a run directory the verdict and the report use; never raises on
    bad content."""
    run = RunDir(path)
    warnings: list[str] = []
    found = run.read_results(strict=False, warnings=warnings)
    results = found.data if found is not None else {}
    scenario = run.scenario_dict(strict=False, warnings=warnings)
    events = _counted(run.read_history(strict=False), warnings)
    ops = operations(events)
    schedule = _counted(run.jsonl(SCHEDULE, strict=False), warnings)
    if not schedule:
        schedule = [_schedule_record(e) for e in events if e.get("process") == NEMESIS]
    schedule = [r for r in schedule if _is_number(r.get("time"))]
    polls = [_clean_poll(p) for p in _counted(run.read_cluster(strict=False), warnings)
             if _is_number(p.get("time")) and isinstance(p.get("node"), str)]
    return RunData(path, results, scenario, ops, faults_from(schedule), polls,
                   events=len(events), warnings=warnings, files=run.listed_files())


def operations(events: list[dict[str, Any]]) -> list[Operation]:
    """Merge invoke and completion events into operations, in invoke order."""
    ops: list[Operation] = []
    open_ops: dict[Any, Operation] = {}
    for pos, ev in enumerate(events):
        process = ev.get("process")
        if process == NEMESIS or not isinstance(process, int | str):
            continue
        typ = ev.get("type")
        t = ev.get("time")
        time_ns = int(t) if isinstance(t, int | float) else 0
        index = ev.get("index")
        index = index if isinstance(index, int) else pos
        if typ == "invoke":
            key = ev.get("key")
            key = key if _is_scalar(key) else json.dumps(key, default=str)
            op = Operation(index, process, str(ev.get("f")), key, "pending", time_ns,
                           None, ev.get("value"))
            open_ops[process] = op
            ops.append(op)
            continue
        done = open_ops.pop(process, None)
        if done is None or typ not in ("ok", "fail", "info"):
            continue
        done.type = typ
        done.end = max(time_ns, done.start)
        done.complete_index = index
        node, error = ev.get("node"), ev.get("error")
        done.node = None if node is None else str(node)
        done.error = None if error is None else str(error)
        if typ == "ok":
            done.value = ev.get("value")
    return ops


def faults_from(schedule: list[dict[str, Any]]) -> list[Fault]:
    """Pair the nemesis' start and end records into faults; those started (the ones
    with a fault id) are numbered in start order, instant actions and skipped steps
    are not."""
    faults: list[Fault] = []
    by_id: dict[Any, Fault] = {}
    started = 0
    for rec in sorted(schedule, key=lambda r: r.get("time", 0)):
        t = int(rec.get("time", 0))
        phase = rec.get("phase")
        action = str(rec.get("action", "?"))
        if phase == "end":
            f = by_id.get(rec.get("fault"))
            if f is not None and f.end is None:
                f.end = max(t, f.start)
                if isinstance(rec.get("fired"), list):  # a crash-at: who reached the point
                    f.params = {**f.params, "fired": rec["fired"]}
            continue
        links = [(str(pair[0]), str(pair[1])) for pair in _list(rec.get("links"))
                 if isinstance(pair, list) and len(pair) == 2]
        params = rec.get("params")
        fault = Fault(None, action, t, None, [str(n) for n in _list(rec.get("nodes"))],
                      links, params if isinstance(params, dict) else {})
        if phase == "skipped":
            fault.skipped = str(rec.get("reason", "skipped"))
            fault.end = t
        elif rec.get("fault") is None:
            fault.end = t  # an instant action (heal, start, resume)
        else:
            started += 1
            fault.number = started
            by_id[rec.get("fault")] = fault
        faults.append(fault)
    return faults


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float)


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _clean_poll(p: dict[str, Any]) -> dict[str, Any]:
    """A status poll with the fields the report reads in their expected types."""
    for name in ("term", "commit"):
        if name in p and not isinstance(p[name], int):
            p[name] = None
    if not isinstance(p.get("role"), str | None):
        p["role"] = str(p["role"])
    return p


def _schedule_record(ev: dict[str, Any]) -> dict[str, Any]:
    """A schedule record rebuilt from a nemesis history event (for runs without
    ``schedule.jsonl``)."""
    f = str(ev.get("f", "?"))
    value: dict[str, Any] = ev["value"] if isinstance(ev.get("value"), dict) else {}
    phase, action = "start", f
    for prefix in ("end", "skipped"):
        if f.startswith(prefix + "-"):
            phase, action = prefix, f[len(prefix) + 1:]
    return {"time": ev.get("time", 0), "phase": phase, "action": action,
            "fault": ev.get("fault"), **value}


def _counted(lines: JsonLines, warnings: list[str]) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file read forgivingly; the lines it had to skip (a
    torn tail among them) are counted in ``warnings``."""
    bad = len(lines.skipped) + (lines.torn is not None)
    if bad:
        warnings.append(f"{lines.path.name}: skipped {bad} line(s) that are not JSON objects")
    return lines.objects
