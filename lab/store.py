"""The run directory, as one typed thing: every reader and writer of a run goes through here.

A run directory (``<out>/<workload>-<faults>/<time>-s<seed>``) holds:

* ``scenario.yaml`` -- the fully resolved scenario (:class:`ResolvedScenario`);
* ``history.jsonl`` -- every client operation and nemesis action (:mod:`lab.history`);
* ``schedule.jsonl`` -- every fault as the nemesis applied it (:class:`ScheduleRecord`);
* ``cluster.jsonl`` -- the observer's status polls of every member;
* ``results.json`` -- the run's outcome, then its verdict (:class:`Results`);
* ``summary.json``, ``index.html`` -- the report's cache and page;
* ``lab.log``, ``toxiproxy.log``, ``nodes/<member>/node.log`` -- logs.

:class:`RunDir` owns those names, the one test of whether a directory is a run
(:meth:`RunDir.is_run`), and the readers. There is one JSON-lines reader,
:func:`iter_jsonl`, with one rule for damage: a *torn tail* -- a last line without its
newline that does not decode, what a writer killed mid-line leaves -- is forgiven and
reported (:attr:`JsonLines.torn`); any other bad line is a :class:`StoreError`
``FILE:LINE: what was expected`` in strict mode, and skipped and counted in forgiving mode
(the report draws whatever a run left). The file formats are the ones the lab has always
written: nothing here changes a byte of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from lab.jsonl import JsonLines as JsonLines
from lab.jsonl import StoreError as StoreError
from lab.jsonl import iter_jsonl as iter_jsonl
from lab.scenario import (
    CONNECTIONS,
    MODELS,
    PLACEMENTS,
    Workload,
    YamlDoc,
    compose_yaml,
    parse_system_options,
)
from lab.systems.types import NODE_LOG as NODE_LOG
from lab.systems.types import POLLED_DIGESTS

SCENARIO = "scenario.yaml"
HISTORY = "history.jsonl"
SCHEDULE = "schedule.jsonl"
CLUSTER = "cluster.jsonl"
RESULTS = "results.json"
SUMMARY = "summary.json"
PAGE = "index.html"
LAB_LOG = "lab.log"
TOXIPROXY_LOG = "toxiproxy.log"
NODES = "nodes"
DIGESTS = POLLED_DIGESTS

#: A directory holding any of these is a run (a run killed early may have only one).
CORE_FILES = (RESULTS, SCENARIO, HISTORY)
#: The run's own files worth linking from its page, in this order (node logs follow).
LISTED_FILES = (RESULTS, SCENARIO, HISTORY, SCHEDULE, CLUSTER, DIGESTS, LAB_LOG,
                TOXIPROXY_LOG)
#: What the run writes while it runs (a run without results.json that wrote one of these
#: recently is still running).
ACTIVITY_FILES = (HISTORY, CLUSTER, LAB_LOG, SCHEDULE, SCENARIO)
#: The files ``summary.json`` is worked out from: a newer one makes the cache stale.
SUMMARY_SOURCES = (RESULTS, HISTORY, CLUSTER, SCHEDULE)


# --------------------------------------------------------------------------- records


class ScheduleRecord(NamedTuple):
    """One line of ``schedule.jsonl``: its line number and the record (``time`` in ns,
    ``offset_s``, ``phase`` start/end/skipped, ``action``, ``fault``, ``nodes``,
    ``links``, ``params``, ``step_line``, ``reason``; any other key is kept)."""

    line: int
    data: dict[str, Any]

    @property
    def phase(self) -> Any:
        return self.data.get("phase")

    @property
    def action(self) -> Any:
        return self.data.get("action")

    @property
    def fault(self) -> Any:
        return self.data.get("fault")


@dataclass(frozen=True)
class Results:
    """``results.json``: what the run wrote when it ended, and the verdict ``analyze``
    added. A thin typed view over the object: every key, known or not (older and newer
    runs), is kept in :attr:`data` and written back as it was."""

    data: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def verdict(self) -> str | None:
        v = self.data.get("verdict")
        return v if isinstance(v, str) else None

    @property
    def verdict_reason(self) -> str | None:
        v = self.data.get("verdict_reason")
        return v if isinstance(v, str) else None

    @property
    def exit_reason(self) -> str | None:
        v = self.data.get("exit_reason")
        return v if isinstance(v, str) else None

    @property
    def partial(self) -> bool:
        return bool(self.data.get("partial", False))

    @property
    def counts(self) -> dict[str, int]:
        c = self.data.get("counts")
        return {str(k): v for k, v in c.items() if isinstance(v, int)} \
            if isinstance(c, dict) else {}

    @property
    def schedule_origin_s(self) -> float | None:
        v = self.data.get("schedule_origin_s")
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    @property
    def initial_leader(self) -> str | None:
        v = self.data.get("initial_leader")
        return v if isinstance(v, str) else None

    def text(self) -> str:
        """The file's text: the format ``results.json`` has always had."""
        return json.dumps(self.data, indent=2, default=str)


@dataclass(frozen=True)
class ResolvedScenario:
    """``scenario.yaml``: the fully resolved scenario of a run, as
    :meth:`lab.run.Experiment.write_scenario` writes it."""

    system: str
    nodes: int
    seed: int
    time_limit: float
    concurrency: int
    rate: float
    bugs: tuple[str, ...]
    workload: Workload
    faults_name: str
    faults_description: str
    timed: tuple[tuple[int, float], ...]  # (line, at) of the scenario's timed steps
    election_timeout: float | None = None  # the scenario's timing (seconds), if it set one
    heartbeat: float | None = None
    system_options: dict[str, dict[str, int]] = field(default_factory=dict)
    # Where the run came from, not what it ran: two runs of one experiment compare equal.
    command: tuple[str, ...] = field(default=(), compare=False)
    replay_of: str | None = field(default=None, compare=False)  # the run it replayed


# --------------------------------------------------------------------------- the directory


class RunDir:
    """One run directory: where each of its files is, and how each is read and written."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ names

    @property
    def scenario_path(self) -> Path:
        return self.path / SCENARIO

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def schedule_path(self) -> Path:
        return self.path / SCHEDULE

    @property
    def cluster_path(self) -> Path:
        return self.path / CLUSTER

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def page_path(self) -> Path:
        return self.path / PAGE

    @property
    def lab_log_path(self) -> Path:
        return self.path / LAB_LOG

    @property
    def toxiproxy_log_path(self) -> Path:
        return self.path / TOXIPROXY_LOG

    @property
    def digests_path(self) -> Path:
        return self.path / DIGESTS

    @property
    def nodes_dir(self) -> Path:
        return self.path / NODES

    def node_log_path(self, member: str) -> Path:
        return self.nodes_dir / member / NODE_LOG

    # ------------------------------------------------------------------ what is there

    @staticmethod
    def is_run(path: Path) -> bool:
        """Whether ``path`` is a run directory: a directory holding ``results.json``,
        ``scenario.yaml`` or ``history.jsonl`` (a run killed early may have only one).
        The one test; what a command needs beyond it, :meth:`missing` says."""
        return path.is_dir() and any((path / name).is_file() for name in CORE_FILES)

    def missing(self, *names: str) -> list[str]:
        """Which of the files ``names`` the directory does not hold."""
        return [n for n in names if not (self.path / n).is_file()]

    def has_results(self) -> bool:
        return self.results_path.exists()

    def listed_files(self) -> list[tuple[str, int]]:
        """The run's files worth linking (relative path, size in bytes), node logs last."""
        out = [(name, (self.path / name).stat().st_size) for name in LISTED_FILES
               if (self.path / name).is_file()]
        if self.nodes_dir.is_dir():
            for log in sorted(self.nodes_dir.glob("*/*.log")):
                out.append((log.relative_to(self.path).as_posix(), log.stat().st_size))
        return out

    def last_activity(self) -> float | None:
        """The newest modification time of the files a running run writes."""
        times = []
        for name in ACTIVITY_FILES:
            try:
                times.append((self.path / name).stat().st_mtime)
            except OSError:
                continue
        return max(times, default=None)

    # ------------------------------------------------------------------ results.json

    def read_results(self, strict: bool = False,
                     warnings: list[str] | None = None) -> Results | None:
        """``results.json``, or ``None`` when there is none. A file that is not a JSON
        object raises :class:`StoreError` when ``strict``; else it reads as ``None`` (with
        a note in ``warnings`` when it does not decode)."""
        path = self.results_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            if strict:
                raise StoreError(path, None, f"cannot read: {e}") from None
            if warnings is not None:
                warnings.append(f"{path.name}: unreadable ({e})")
            return None
        try:
            data = json.loads(text)
        except ValueError as e:
            if strict:
                line = e.lineno if isinstance(e, json.JSONDecodeError) else None
                msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
                raise StoreError(path, line, f"not valid JSON ({msg})") from None
            if warnings is not None:
                warnings.append(f"{path.name}: unreadable ({e})")
            return None
        if not isinstance(data, dict):
            if strict:
                raise StoreError(path, 1, f"expected a JSON object, got {type(data).__name__}")
            return None
        return Results(data)

    def write_results(self, results: Results | Mapping[str, Any]) -> Results:
        """Write ``results.json`` (atomically: a reader never sees half of it)."""
        r = results if isinstance(results, Results) else Results(dict(results))
        write_atomically(self.results_path, r.text())
        return r

    # ------------------------------------------------------------------ scenario.yaml

    def write_scenario(self, resolved: Mapping[str, Any]) -> None:
        """Write ``scenario.yaml`` from the resolved scenario's plain values."""
        self.scenario_path.write_text(yaml.safe_dump(dict(resolved), sort_keys=False))

    def read_scenario(self) -> ResolvedScenario:
        """``scenario.yaml``, strictly: any problem is a :class:`lab.scenario.ScenarioError`
        naming the line. Runs from before a key existed still load (``connections``:
        their clients had a connection each)."""
        return read_resolved(self.scenario_path)

    def scenario_dict(self, strict: bool = False,
                      warnings: list[str] | None = None) -> dict[str, Any]:
        """``scenario.yaml`` as plain values, for readers that take what is there (the
        report, a check of a partial run). Missing is ``{}``; a file that is not YAML or
        not a mapping raises :class:`StoreError` when ``strict``, else reads as ``{}``
        (with a note in ``warnings`` when it is not YAML)."""
        path = self.scenario_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if strict:
                raise StoreError(path, None, "no such file") from None
            return {}
        except (OSError, UnicodeDecodeError) as e:
            if strict:
                raise StoreError(path, None, f"cannot read: {e}") from None
            if warnings is not None:
                warnings.append(f"{path.name}: unreadable ({e})")
            return {}
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            if strict:
                mark = getattr(e, "problem_mark", None)
                line = mark.line + 1 if mark is not None else None
                problem = getattr(e, "problem", None) or str(e)
                raise StoreError(path, line, f"not valid YAML ({' '.join(str(problem).split())})"
                                 ) from None
            if warnings is not None:
                warnings.append(f"{path.name}: unreadable ({' '.join(str(e).split())})")
            return {}
        if not isinstance(data, dict):
            if strict:
                raise StoreError(path, 1, "expected a mapping (the run's resolved scenario)")
            return {}
        return data

    # ------------------------------------------------------------------ JSON lines

    def jsonl(self, name: str, strict: bool = True) -> JsonLines:
        """The JSON-lines file ``name`` of the run (see :func:`iter_jsonl`)."""
        return iter_jsonl(self.path / name, strict)

    def read_history(self, strict: bool = True) -> JsonLines:
        """``history.jsonl``'s events (see :func:`iter_jsonl`)."""
        return iter_jsonl(self.history_path, strict)

    def read_schedule(self, strict: bool = True) -> list[ScheduleRecord]:
        """``schedule.jsonl``'s records with their lines (see :func:`iter_jsonl`)."""
        return [ScheduleRecord(k, rec) for k, rec in
                iter_jsonl(self.schedule_path, strict).records]

    def read_cluster(self, strict: bool = False) -> JsonLines:
        """``cluster.jsonl``'s status polls (see :func:`iter_jsonl`); forgiving by
        default: a poll is evidence, not input, and the checks take what is there."""
        return iter_jsonl(self.cluster_path, strict)

    # ------------------------------------------------------------------ summary.json

    def read_summary(self) -> dict[str, Any] | None:
        """The cached ``summary.json``, when it is newer than every file it was worked
        out from; else ``None``."""
        try:
            mtime = self.summary_path.stat().st_mtime
            for name in SUMMARY_SOURCES:
                p = self.path / name
                if p.exists() and p.stat().st_mtime > mtime:
                    return None
            row = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return row if isinstance(row, dict) else None

    def write_summary(self, row: Mapping[str, Any]) -> None:
        """Cache the run's summary row; a read-only run directory just goes uncached."""
        try:
            write_atomically(self.summary_path, json.dumps(row, indent=1, default=str))
        except OSError:
            pass


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` by renaming a finished temporary file over it: a reader sees the
    old text or the new, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- scenario.yaml


def read_resolved(path: Path) -> ResolvedScenario:
    """Read a run's ``scenario.yaml`` strictly: any problem is a
    :class:`lab.scenario.ScenarioError` naming the line."""
    from lab.systems import SYSTEMS

    doc, root = compose_yaml(path)
    m = doc.mapping(root, "a run's scenario.yaml")
    for key in ("system", "nodes", "seed", "time_limit", "concurrency", "rate", "bugs",
                "workload", "faults"):
        if key not in m:
            raise doc.fail(root, f"a run's scenario.yaml needs the key '{key}'")

    def get(key: str) -> yaml.Node:
        return m[key][1]

    limit = doc.number(get("time_limit"), "time_limit")
    if limit <= 0:
        raise doc.fail(get("time_limit"), "time_limit must be more than 0")
    fm = doc.mapping(get("faults"), "faults")
    for key in ("name", "description"):
        if key not in fm:
            raise doc.fail(get("faults"), f"faults needs the key '{key}'")
    timed: list[tuple[int, float]] = []
    if "schedule" in fm:
        for item in doc.seq(fm["schedule"][1], "faults.schedule"):
            sm = doc.mapping(item, "a step of faults.schedule")
            if "line" in sm and "at" in sm:
                timed.append((doc.integer(sm["line"][1], "a step's line"),
                              doc.number(sm["at"][1], "a step's at")))
    system = doc.one_of(get("system"), tuple(SYSTEMS), "system")
    # Where the run came from, for the record only: taken as written, never refused.
    command: tuple[str, ...] = ()
    if "command" in m and isinstance(get("command"), yaml.SequenceNode):
        command = tuple(str(w.value) for w in get("command").value
                        if isinstance(w, yaml.ScalarNode))
    replay_of = (str(get("replay_of").value) if "replay_of" in m
                 and isinstance(get("replay_of"), yaml.ScalarNode) else None)
    return ResolvedScenario(
        system=system,
        nodes=doc.integer(get("nodes"), "nodes", 1, 9),
        seed=doc.integer(get("seed"), "seed", -(2**63), 2**63 - 1),
        time_limit=limit,
        concurrency=doc.integer(get("concurrency"), "concurrency", 1, 1_000),
        rate=doc.number(get("rate"), "rate"),
        bugs=_bugs(doc, get("bugs"), system),
        workload=_workload(doc, get("workload")),
        faults_name=doc.string(fm["name"][1], "faults.name"),
        faults_description=" ".join(doc.string(fm["description"][1],
                                               "faults.description").split()),
        timed=tuple(timed),
        election_timeout=_seconds(doc, fm, "election_timeout"),
        heartbeat=_seconds(doc, fm, "heartbeat"),
        system_options=_system_options(doc, fm),
        command=command,
        replay_of=replay_of,
    )


def _system_options(doc: YamlDoc, fm: dict[str, tuple[yaml.Node, yaml.Node]]
                    ) -> dict[str, dict[str, int]]:
    """The scenario's ``system_options`` as the run recorded them (validated again)."""
    if "system_options" not in fm:
        return {}
    return parse_system_options(doc, fm["system_options"][1])


def _seconds(doc: YamlDoc, fm: dict[str, tuple[yaml.Node, yaml.Node]], key: str
             ) -> float | None:
    if key not in fm or (isinstance(fm[key][1], yaml.ScalarNode)
                         and fm[key][1].tag == "tag:yaml.org,2002:null"):
        return None
    return doc.number(fm[key][1], f"faults.{key}")


_WORKLOAD_MIN = {"keys": 1, "clients": 1, "txn_min": 1, "txn_max": 1, "accounts": 2,
                 "total": 0, "max_transfer": 1, "readers": 0}


def _bugs(doc: YamlDoc, node: yaml.Node, system: str) -> tuple[str, ...]:
    """The seeded bugs of a run's scenario.yaml, each one ``system`` has (checked now, so
    a replay with a misspelt bug is bad input, not a cluster that never starts)."""
    from lab.systems import spec

    known = spec(system).bugs
    bugs = []
    for item in doc.seq(node, "bugs"):
        bug = doc.string(item, "a bug")
        if bug not in known:
            raise doc.fail(item, f"{system} has no seeded bug {bug!r} (it has: "
                                 f"{', '.join(known) or 'none'})")
        bugs.append(bug)
    return tuple(bugs)


def _workload(doc: YamlDoc, node: yaml.Node) -> Workload:
    """The resolved workload (a mapping of :class:`Workload`'s fields)."""
    m = doc.mapping(node, "workload")
    fields = {f.name: str(f.type) for f in dataclasses.fields(Workload)}
    kw: dict[str, Any] = {}
    for key, (knode, vnode) in m.items():
        kind = fields.get(key)
        what = f"workload.{key}"
        if kind is None:
            raise doc.fail(knode, f"unknown key '{key}' in workload (expected one of: "
                                  f"{', '.join(fields)})")
        if kind == "str":
            kw[key] = doc.string(vnode, what)
        elif kind == "int":
            kw[key] = doc.integer(vnode, what, _WORKLOAD_MIN.get(key, -(2**31)))
        elif kind == "float":
            kw[key] = doc.number(vnode, what)
        elif kind == "bool":
            kw[key] = doc.boolean(vnode, what)
        elif kind.startswith("dict"):
            kw[key] = {k: doc.number(v, f"{what}.{k}")
                       for k, (_, v) in doc.mapping(vnode, what).items()}
        else:  # a field of a kind this reader does not know
            raise doc.fail(vnode, f"{what}: cannot read a value of type {kind}")
    for key in ("path", "name", "description", "model"):
        if key not in kw:
            raise doc.fail(node, f"workload needs the key '{key}'")
    model = doc.one_of(m["model"][1], tuple(MODELS), "workload.model")
    mix = kw.get("mix") or {f: 1.0 for f in MODELS[model]}
    for f in mix:
        if f not in MODELS[model]:
            raise doc.fail(m["mix"][1], f"workload.mix: operation '{f}' is not part of the "
                                        f"{model} model")
    if not any(mix.values()):
        raise doc.fail(m.get("mix", (node, node))[1], "workload.mix has no operation with "
                                                       "a weight above 0")
    for low, high in (("value_min", "value_max"), ("txn_min", "txn_max")):
        if high in kw and kw[high] < kw.get(low, 0 if low == "value_min" else 1):
            raise doc.fail(m[high][1], f"workload.{high} is below workload.{low}")
    if "timeout" in kw and kw["timeout"] <= 0:
        raise doc.fail(m["timeout"][1], "workload.timeout must be more than 0")
    if "connections" in kw:
        doc.one_of(m["connections"][1], CONNECTIONS, "workload.connections")
    else:  # a run from before the key existed: its clients had a connection each
        kw["connections"] = "per-client"
    if "placement" in kw:
        doc.one_of(m["placement"][1], PLACEMENTS, "workload.placement")
    else:  # a run from before the key existed: its clients followed the leader
        kw["placement"] = "leader"
    if "readers" not in kw:  # a run from before the key existed: it had no readers
        kw["readers"] = 0
    kw["mix"] = mix
    return Workload(**kw)

