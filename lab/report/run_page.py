"""``RUN_DIR/index.html``: one self-contained page per run, and the run's summary row.

The page is rendered with Jinja2 from ``templates/run.html.j2``; its stylesheet and
script (``run.css``, ``run.js``) are inlined, the plots are inline SVG, and nothing is
fetched from the network. It is written atomically, so a reader never sees half a page.
"""

from __future__ import annotations

import shlex
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2

from lab.report import plots, table
from lab.report.anomalies import CheckerView, checker_views
from lab.rundata import RunData, load_run
from lab.store import PAGE, RunDir, write_atomically
from lab.systems import DEFAULT_SYSTEM
from lab.verdict import Facts, Impact, analyse_faults, failed_premises

TEMPLATES = Path(__file__).resolve().parent / "templates"
RUNS_INDEX_MARK = b'<meta name="generator" content="raftlab runs index">'
TIMES = "\u00d7"  # workload x faults


KEYS_INLINE = 40  # more keys than this: the per-key chips fold into a <details>
VERDICT_ORDER = {"invalid": 0, "unknown": 1, "valid": 2}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.globals["key_groups"] = key_groups
    return env


def key_groups(per_key: dict[str, str]) -> dict[str, Any]:
    """A checker's per-key verdicts as chips: all of them inline when there are few;
    else the invalid keys inline (first) and the others folded away, with the counts."""
    items = list(per_key.items())
    if len(items) <= KEYS_INLINE:
        return {"shown": items, "folded": [], "counts": ""}
    items.sort(key=lambda kv: VERDICT_ORDER.get(kv[1], 1))
    shown = [kv for kv in items if kv[1] == "invalid"]
    counts: dict[str, int] = {}
    for _, v in items:
        counts[v] = counts.get(v, 0) + 1
    text = ", ".join(f"{n:,} {v}" for v, n in sorted(
        counts.items(), key=lambda vn: VERDICT_ORDER.get(vn[0], 1)))
    return {"shown": shown, "folded": items[len(shown):], "counts": text}


def render_run(run_dir: Path) -> Path:
    """Render ``run_dir/index.html`` (and refresh ``summary.json``); return the page's path."""
    run = load_run(run_dir)
    facts = analyse_faults(run)
    checkers = checker_views(run)
    html = _environment().get_template("run.html.j2").render(page_context(run, facts,
                                                                          checkers))
    out = RunDir(run_dir).page_path
    write_atomically(out, html)
    RunDir(run_dir).write_summary(summary(run, facts, checkers))
    return out


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The facts of one run for the runs index: started, system, workload, faults, seed,
    verdict, operations, anomalies, recovery time, throughput (see :func:`summary`).

    Reads ``summary.json`` when it is newer than the run's results and history, and
    otherwise works it out from the run directory and stores it there (best effort)."""
    cached = RunDir(run_dir).read_summary()
    if cached is not None:
        return cached
    run = load_run(run_dir)
    facts = analyse_faults(run)
    row = summary(run, facts, checker_views(run))
    RunDir(run_dir).write_summary(row)
    return row


def summary(run: RunData, facts: Facts, checkers: list[CheckerView]) -> dict[str, Any]:
    """One run as a row: JSON-ready, times in seconds (``None`` when unknown)."""
    started = _started(run)
    return {
        "run_dir": str(run.path),
        "started": started,
        "started_text": _local_time(started),
        "system": run.setting("system", DEFAULT_SYSTEM),
        "workload": run.setting("workload"),
        "faults": run.setting("faults"),
        "seed": run.setting("seed"),
        "nodes": run.setting("nodes"),
        "bugs": [str(b) for b in run.setting("bugs") or []],
        "verdict": verdict_of(run),
        "verdict_reason": reason_of(run, checkers),
        "partial": partial_of(run),
        "ops": len(run.ops),
        "ok": sum(1 for op in run.ops if op.type == "ok"),
        "anomalies": sum(len(c.anomalies) for c in checkers),
        "recovery_s": _round(facts.recovery_s),
        "recovered": not facts.unrecovered,
        "throughput": _round(facts.throughput, 1),
        "faults_bit": facts.bite.bit,
        "duration_s": run.results.get("duration_s"),
        "report": PAGE if RunDir(run.path).page_path.exists() else None,
    }


def runs_index_href(run_dir: Path) -> str | None:
    """The relative link from a run's page to the runs index above it, if there is one:
    ``../../index.html`` for ``<root>/<workload>-<faults>/<run>``, further up for deeper
    layouts such as ``<root>/nightly/<date>/<workload>-<faults>/<run>``."""
    parents = run_dir.resolve().parents
    for up in range(2, min(5, len(parents) + 1)):
        page = parents[up - 1] / "index.html"
        try:
            with open(page, "rb") as f:
                head = f.read(1000)
        except OSError:
            continue
        if RUNS_INDEX_MARK in head:
            return "../" * up + "index.html"
    return None


def verdict_of(run: RunData) -> str:
    v = run.results.get("verdict")
    return v if v in ("valid", "invalid", "unknown") else "unknown"


def partial_of(run: RunData) -> bool:
    """Whether the run was cut short (no results.json at all counts as cut short)."""
    return bool(run.results.get("partial", False)) if run.results else True


def reason_of(run: RunData, checkers: list[CheckerView]) -> str:
    """The verdict's reason in one sentence, also for runs never checked."""
    reason = run.results.get("verdict_reason")
    if isinstance(reason, str) and reason:
        return reason
    if not run.results:
        return ("there is no results.json: the run did not finish; "
                "'raftlab analyze' checks what it left")
    if not checkers:
        return "the history has not been checked yet: run 'raftlab analyze' on this directory"
    return checkers[0].reason or "no reason recorded"


def page_context(run: RunData, facts: Facts, checkers: list[CheckerView]) -> dict[str, Any]:
    """Everything the template shows."""
    by_type = {t: 0 for t in ("ok", "fail", "info", "pending")}
    for op in run.ops:
        by_type[op.type] = by_type.get(op.type, 0) + 1
    keep = {int(o["index"]) for c in checkers for a in c.anomalies for o in a.ops
            if isinstance(o.get("index"), int)}
    table_json, carried = table.table_data(run.ops, keep)
    t_end = run.t_end
    return {
        "title": f"{run.setting('workload') or 'run'} {TIMES} "
                 f"{run.setting('faults') or 'no faults'}",
        "run_name": run.path.name,
        "index_href": runs_index_href(run.path),
        "verdict": verdict_of(run),
        "reason": reason_of(run, checkers),
        "partial": partial_of(run),
        "exit_reason": run.results.get("exit_reason") or "no results.json",
        "premises_failed": _premises_failed(run),
        "anomaly_count": sum(len(c.anomalies) for c in checkers),
        "by_type": by_type,
        "n_ops": len(run.ops),
        "glance": _glance(run, facts),
        "ran": _what_ran(run),
        "command": _command(run),
        "leftovers": run.results.get("leftovers"),
        "nothing_left_behind": run.results.get("nothing_left_behind"),
        "facts": facts,
        "impacts": [_impact_row(i) for i in facts.impacts],
        "skipped": [f for f in run.faults if f.skipped],
        "checkers": checkers,
        "agreement": agreement_view(run.results.get("agreement")),
        "log_checks": log_checks_view(run.results.get("log_checks")),
        "latency_svg": plots.latency_plot(run.ops, run.faults, t_end),
        "throughput_svg": plots.throughput_plot(run.ops, run.faults, t_end),
        "cluster_svg": plots.cluster_plot(run.polls, run.faults, t_end),
        "bin_width": plots.bin_width(max(t_end / 1e9, 1.0)),
        "rows": table.static_rows(run.ops),
        "table_json": table_json,
        "carried": carried,
        "files": [(name, _size(n)) for name, n in run.files],
        "warnings": run.warnings,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "css": (TEMPLATES / "run.css").read_text(encoding="utf-8"),
        "js": (TEMPLATES / "run.js").read_text(encoding="utf-8"),
    }


_AGREEMENT_PILL = {"agree": "valid", "diverge": "invalid"}
_AGREEMENT_SAYS = {
    "agree": "The members' digests of their applied logs and states are equal at every "
             "index (etcd: revision) two of them gave.",
    "diverge": "Members logged different digests at one index: their applied logs or "
               "states diverge.",
    "not available": "This system offers no digests of its applied log: the members' "
                     "agreement could not be checked (not a pass).",
    "no evidence": "The members offer digests, but no index was logged by two of them: "
                   "nothing to compare (not a pass).",
}


def agreement_view(agreement: Any) -> dict[str, Any]:
    """The replica agreement panel: ``results["agreement"]`` as the verdict recorded it
    (``status`` "not checked" when it did not)."""
    if not isinstance(agreement, dict) or not isinstance(agreement.get("status"), str):
        return {"status": "not checked", "pill": "unknown", "says": "The verdict recorded "
                "no replica agreement check for this run (re-run raftlab analyze).",
                "facts": [], "divergences": []}
    status = agreement["status"]
    members = agreement.get("members") or []
    silent = agreement.get("silent") or []
    facts = [("members compared", ", ".join(map(str, members)) or "none"),
             ("indexes compared", str(agreement.get("indexes_compared", 0))),
             ("highest common index", str(agreement.get("highest_common_index") or "none"))]
    if silent:
        facts.append(("no digest logged", ", ".join(map(str, silent)) + " (no evidence)"))
    divergences = []
    for what, key in (("applied logs", "first_divergence"),
                      ("states", "first_state_divergence")):
        div = agreement.get(key)
        if isinstance(div, dict):
            entries = [e for e in div.get("entries") or [] if isinstance(e, dict)]
            divergences.append({"what": what, "index": div.get("index"), "entries": entries})
    return {"status": status, "pill": _AGREEMENT_PILL.get(status, "unknown"),
            "says": _AGREEMENT_SAYS.get(status, ""), "facts": facts,
            "divergences": divergences}


_LOG_CHECK_PILL = {"fine": "valid", "violated": "invalid"}
_LOG_CHECK_NAMES = {"leader_claims": "leaderships", "votes": "votes",
                    "commit_conflicts": "committed-entry conflicts"}


def log_checks_view(checks: Any) -> list[dict[str, Any]]:
    """The log-based checks panel: one row per check of ``results["log_checks"]``
    (status, what it reads, which members' logs gave evidence and which none)."""
    rows: list[dict[str, Any]] = []
    if not isinstance(checks, dict):
        return rows
    for name, c in checks.items():
        if not isinstance(c, dict) or not isinstance(c.get("status"), str):
            continue
        silent = [str(m) for m in c.get("silent") or []]
        rows.append({"name": _LOG_CHECK_NAMES.get(name, str(name)),
                     "check": str(c.get("check") or ""), "status": c["status"],
                     "pill": _LOG_CHECK_PILL.get(c["status"], "unknown"),
                     "members": ", ".join(map(str, c.get("members") or [])) or "none",
                     "silent": ", ".join(silent) + " (no evidence)" if silent else "",
                     "records": c.get("records", 0)})
    return rows


def _glance(run: RunData, facts: Facts) -> list[tuple[str, str, str]]:
    """The headline numbers: (value, what, hint)."""
    ok = sum(1 for op in run.ops if op.type == "ok")
    worst = max((i.unavailable_s for i in facts.impacts if i.unavailable_s is not None),
                default=None)
    return [
        (f"{len(run.ops):,}", "operations", f"{ok:,} ok"),
        (_per_s(facts.throughput), "ok ops/s", "over the client phase"),
        (str(len(facts.impacts)), "faults", "injected by the nemesis"),
        (_secs(worst), "worst unavailability", "longest stretch without an ok"),
        (("never", "recovery", f"no ok after {_faults(facts.unrecovered)} healed")
         if facts.unrecovered else
         (_secs(facts.recovery_s), "recovery", "worst heal → first ok")),
    ]


def _what_ran(run: RunData) -> list[tuple[str, str]]:
    r, s = run.results, run.scenario
    wl = _section(s, "workload")
    fl = _section(s, "faults")
    bugs = run.setting("bugs") or []
    fsync = r.get("fsync", s.get("fsync"))
    return [
        ("system", _system(run)),
        ("nodes", str(run.setting("nodes", "?"))),
        ("workload", _named(run.setting("workload"), wl.get("model") or r.get("model"),
                            wl.get("description"))),
        ("faults", _named(run.setting("faults"), None, fl.get("description"))),
        *_scenario_settings(run, fl),
        ("seed", str(run.setting("seed", "?"))),
        ("started", _local_time(_started(run))),
        ("time limit", _secs(run.setting("time_limit"))),
        ("wall time", _secs(r.get("duration_s"))),
        ("clients", _clients(run.setting("concurrency"), run.setting("rate"),
                             r.get("readers"))),
        ("proxy server", str(r.get("proxy", "unknown"))),
        ("fsync", "off (--unsafe-no-fsync)" if fsync is False else "on"),
        ("seeded bugs", ", ".join(map(str, bugs)) if bugs else "none"),
        ("ended", str(r.get("exit_reason", "unknown (no results.json)"))),
    ]


def _scenario_settings(run: RunData, fl: dict[str, Any]) -> list[tuple[str, str]]:
    """The fault scenario's settings besides its faults, each only when it set it: the
    members' ``timing``, its ``initial_leader`` (and whether that held), its
    ``system_options``."""
    out: list[tuple[str, str]] = []
    timing = [f"{what} {_secs(fl.get(key))}" for what, key in
              (("election timeout", "election_timeout"), ("heartbeat", "heartbeat"))
              if _is_number(fl.get(key))]
    if timing:
        out.append(("timing", ", ".join(timing) + " (set by the scenario; the rest is the "
                    "system's default)" * (len(timing) == 1)))
    want = fl.get("initial_leader")
    if isinstance(want, str) and want:
        out.append(("initial leader", _initial_leader(run, want)))
    options = fl.get("system_options")
    if isinstance(options, dict) and options:
        system = str(run.setting("system", DEFAULT_SYSTEM))
        parts = []
        for name, opts in sorted(options.items(), key=lambda kv: kv[0] != system):
            text = ", ".join(f"{k} {v}" for k, v in opts.items()) \
                if isinstance(opts, dict) else str(opts)
            parts.append(f"{name}: {text}" + ("" if name == system else
                                              f" (not used: this run is on {system})"))
        out.append(("system options", "; ".join(parts)))
    return out


def _premise(run: RunData, name: str) -> dict[str, Any] | None:
    """``results.json``'s record of one of the scenario's premises, if it has one."""
    premises = run.results.get("premises")
    for p in premises if isinstance(premises, list) else []:
        if isinstance(p, dict) and p.get("premise") == name:
            return p
    return None


def _initial_leader(run: RunData, want: str) -> str:
    """E.g. ``n2 wanted: obtained (moving leadership took 3.20 s, ...)``."""
    p = _premise(run, "initial_leader")
    if p is None:
        return f"{want} wanted (not recorded whether it was obtained)"
    delay = _delay(p)
    late = (f"; moving leadership took {_secs(delay)}, so the clients and the schedule "
            "started that much later" if delay > 0 else "")
    if p.get("held"):
        return f"{want} wanted: obtained" + (late or f" ({want} already led)")
    got = p.get("got")
    return (f"{want} wanted: NOT obtained, " + (f"{got} led" if got else "no member led")
            + " when the clients started" + late)


def _premises_failed(run: RunData) -> list[str]:
    """The scenario's premises that did not hold, one sentence each, with how late the
    schedule started because of them."""
    out = []
    for sentence in failed_premises(run.results):
        text = sentence[0].upper() + sentence[1:]
        delay = _delay(_premise(run, "initial_leader"))
        if "initial_leader" in sentence and delay > 0:
            text += (f"; trying to move leadership held the clients and the schedule back "
                     f"{_secs(delay)}")
        out.append(text + ". The faults ran at their written offsets, but not on the "
                   "cluster the scenario assumed.")
    return out


def _delay(premise: dict[str, Any] | None) -> float:
    """Seconds a premise held the clients and the schedule back (0 when not recorded)."""
    v = premise.get("delay_s") if premise is not None else None
    return float(v) if isinstance(v, int | float) else 0.0


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _clients(concurrency: Any, rate: Any, readers: Any = None) -> str:
    """E.g. ``5 clients, 100 ops/s in all``; a rate of 0 (or none) means no limit.
    Readers, if any, are named: each goes at one client's pace."""
    who = f"{concurrency} client{'' if concurrency == 1 else 's'}" if concurrency else "? clients"
    plus = ""
    if isinstance(readers, int) and not isinstance(readers, bool) and readers > 0:
        plus = f" (and {readers} reader{'' if readers == 1 else 's'}, each at a client's pace)"
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        return f"{who}, rate unknown{plus}"
    if rate <= 0:
        return f"{who}, unlimited rate (each as fast as it can){plus}"
    return f"{who}, {rate:g} ops/s in all{plus}"


def _section(scenario: dict[str, Any], name: str) -> dict[str, Any]:
    v = scenario.get(name)
    return v if isinstance(v, dict) else {}


def _system(run: RunData) -> str:
    system = str(run.setting("system", DEFAULT_SYSTEM))
    version = run.results.get("system_version")
    if version:
        return str(version) if str(version).startswith(system) else f"{system} {version}"
    try:
        return f"{system} (raftlab {metadata.version('raftlab')})"
    except metadata.PackageNotFoundError:
        return system


def _named(name: Any, model: Any, description: Any) -> str:
    out = str(name or "?")
    if model:
        out += f" (model {model})"
    if description:
        out += " — " + " ".join(str(description).split())
    return out


def _command(run: RunData) -> str:
    """The command that reproduces the run, seed included."""
    cmd = run.setting("command")
    if not isinstance(cmd, list) or not cmd:
        return ""
    words = [str(w) for w in cmd]
    seed = run.setting("seed")
    if seed is not None and "--seed" not in words and not any(
            w.startswith("--seed=") for w in words):
        words += ["--seed", str(seed)]
    return shlex.join(words)


def _impact_row(i: Impact) -> dict[str, Any]:
    f = i.fault
    return {
        "label": f.label, "kind": f.kind, "describe": plots.describe_fault(f),
        "start": f"{f.start / 1e9:.2f}",
        "end": f"{f.end / 1e9:.2f}" if f.end is not None else "never healed",
        "length": _secs((i.end - f.start) / 1e9),
        "unavailable": _secs(i.unavailable_s),
        "from_start": _secs(i.first_ok_from_start_s),
        "from_heal": _secs(i.first_ok_from_heal_s),
        "rate": _per_s(i.ok_rate),
        "leader": (i.leader_before or "none") + (" (hit)" if i.leader_hit else ""),
        "leaders_during": " → ".join(i.leaders_during) or "—",
        "quorum": ", ".join(i.cut_off) + " cut off" if i.cut_off else "no",
        "notes": "; ".join(i.notes),
        "bit": i.bit,
        "t0": f.start / 1e9, "t1": i.end / 1e9,
    }


def _faults(impacts: list[Impact]) -> str:
    more = len(impacts) - 1
    return impacts[0].fault.label + (f" (and {more} later)" if more else "")


def _secs(v: Any) -> str:
    if not isinstance(v, int | float):
        return "—"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _per_s(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    kb = n / 1024
    return f"{kb:.1f} KB" if kb < 1024 else f"{kb / 1024:.1f} MB"


def _started(run: RunData) -> float | None:
    v = run.results.get("started")
    if isinstance(v, int | float):
        return float(v)
    try:  # the directory's name starts with the local start time, e.g. 20261126T175330
        return time.mktime(time.strptime(run.path.name[:15], "%Y%m%dT%H%M%S"))
    except ValueError:
        return None


def _local_time(t: float | None) -> str:
    return "unknown" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
