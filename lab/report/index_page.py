"""``reports/index.html``: every run under a reports root, on one page.

The page has two parts: per workload x fault pair, a strip of the last verdicts (newest
last) with small sparklines of throughput and recovery time; and a table of every run
(sortable by clicking a header; without JavaScript it is simply newest first). Each run
links to its own page by a relative link, so the folder can be copied or served as is.

Run directories are found by walking the root: a directory at depth 2 to 4 that holds a
``results.json``, ``scenario.yaml`` or ``history.jsonl`` (:meth:`lab.store.RunDir.is_run`)
is a run (``<root>/<workload>-<faults>/<run>``, and deeper layouts such as
``<root>/nightly/<date>/<workload>-<faults>/<run>``); anything else is passed over. A
run's row comes from its ``summary.json`` cache (see :func:`lab.report.summarize_run`), so
rendering stays fast with hundreds of runs. A directory with no ``results.json`` and
files written in the last minute is a run in progress, shown as ``running`` and not read
further.
"""

from __future__ import annotations

import math
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lab.report.run_page import (
    RUNS_INDEX_MARK,
    TEMPLATES,
    _environment,
    _secs,
    summarize_run,
)
from lab.store import PAGE, RESULTS, SUMMARY, RunDir, write_atomically
from lab.systems import DEFAULT_SYSTEM

INDEX = PAGE
MIN_DEPTH, MAX_DEPTH = 2, 4
ACTIVE_S = 60.0  # a run without results.json that wrote something this recently is running
STRIP = 30  # verdict squares (and sparkline points) per workload x fault pair
TIMES = "\u00d7"
VERDICTS = ("valid", "invalid", "unknown", "running")


def is_run(path: Path) -> bool:
    """A run directory (:meth:`lab.store.RunDir.is_run`, the one test)."""
    return RunDir.is_run(path)


def find_runs(root: Path) -> list[Path]:
    """Every run directory under ``root`` at depth 2 to 4 (not descending into runs),
    sorted by path; unreadable directories, files and hidden entries are passed over."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                continue
            p = Path(e.path)
            if depth >= MIN_DEPTH and is_run(p):
                found.append(p)
            elif depth < MAX_DEPTH:
                walk(p, depth + 1)

    walk(root, 1)
    return found


def running(run_dir: Path, now: float | None = None) -> bool:
    """No results.json yet, and something was written in the last minute."""
    run = RunDir(run_dir)
    if run.has_results():
        return False
    now = time.time() if now is None else now
    last = run.last_activity()
    return last is not None and now - last < ACTIVE_S


def run_row(root: Path, run_dir: Path, now: float | None = None) -> dict[str, Any]:
    """One run's row: its summary (cached in summary.json), where it is, and how to link
    to it; a run in progress gets a light row read from its scenario.yaml only."""
    rel = run_dir.relative_to(root).as_posix()
    if running(run_dir, now):
        row = _running_row(run_dir)
    else:
        try:
            row = dict(summarize_run(run_dir))
        except Exception as e:  # one unreadable run must not cost the whole index
            row = {"verdict": "unknown", "partial": True, "started": _stamp_time(run_dir),
                   "verdict_reason": f"could not be read: {type(e).__name__}: {e}"}
    row["status"] = "running" if row.get("running") else row.get("verdict", "unknown")
    if row["status"] not in VERDICTS:
        row["status"] = "unknown"
    row["bugs"] = _names(row.get("bugs"))  # summary.json is a cache: trust no shape
    page = run_dir / INDEX
    row["rel"] = rel
    row["href"] = quote(f"{rel}/{INDEX}" if page.exists() else f"{rel}/")
    if not isinstance(row.get("started"), int | float):
        row["started"] = _stamp_time(run_dir)
    return row


def _running_row(run_dir: Path) -> dict[str, Any]:
    s = RunDir(run_dir).scenario_dict(strict=False)

    def name(section: str) -> Any:
        v = s.get(section)
        return v.get("name") if isinstance(v, dict) else None

    return {"running": True, "verdict": "unknown", "partial": False,
            "verdict_reason": "the run is in progress", "system": s.get("system"),
            "workload": name("workload"), "faults": name("faults"), "seed": s.get("seed"),
            "nodes": s.get("nodes"), "bugs": _names(s.get("bugs")),
            "started": _stamp_time(run_dir), "ops": None, "anomalies": None,
            "recovery_s": None, "throughput": None}


def _names(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def _stamp_time(run_dir: Path) -> float | None:
    """The start time in a run directory's name (``20261126T175330-s7``), else its mtime."""
    try:
        return time.mktime(time.strptime(run_dir.name[:15], "%Y%m%dT%H%M%S"))
    except ValueError:
        try:
            return run_dir.stat().st_mtime
        except OSError:
            return None


def collect(root: Path, now: float | None = None) -> list[dict[str, Any]]:
    """Every run's row, newest first."""
    rows = [run_row(root, d, now) for d in find_runs(root)]
    rows.sort(key=lambda r: (r.get("started") or 0, r["rel"]), reverse=True)
    return rows


def fingerprint(root: Path) -> tuple[Any, ...]:
    """What the index depends on, cheaply: every run and the times of its result files.
    Equal fingerprints (and no run in progress) mean the rendered index is still right."""
    out: list[Any] = []
    for d in find_runs(root):
        stamps: list[int | None] = []
        for name in (RESULTS, SUMMARY, INDEX):
            try:
                stamps.append((d / name).stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        out.append((d.as_posix(), *stamps))
    return tuple(out)


# --------------------------------------------------------------------------- the page


@dataclass
class Pair:
    """The runs of one workload x fault pair, oldest first (the strip's order)."""

    workload: str
    faults: str
    runs: list[dict[str, Any]]
    system: str = DEFAULT_SYSTEM
    bugs: str = ""  # seeded bugs of these runs (a strip never mixes them with correct runs)

    @property
    def variant(self) -> str:
        """The system (when not the default one) and seeded bugs that set this group
        apart."""
        parts = [] if self.system == DEFAULT_SYSTEM else [self.system]
        return " ".join(parts + ([f"+{self.bugs}"] if self.bugs else []))

    @property
    def title(self) -> str:
        return f"{self.workload} {TIMES} {self.faults}" + (
            f" ({self.variant})" if self.variant else "")

    @property
    def last(self) -> list[dict[str, Any]]:
        return self.runs[-STRIP:]

    def counts(self) -> dict[str, int]:
        c = {v: 0 for v in VERDICTS}
        for r in self.runs:
            c[r["status"]] += 1
        return c

    def latest(self) -> dict[str, Any]:
        return self.runs[-1]


def pairs(rows: list[dict[str, Any]]) -> list[Pair]:
    """Rows grouped by workload x faults (and system and seeded bugs, so one strip is one
    kind of run), alphabetically; each group oldest first."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r.get("started") or 0, r["rel"])):
        key = (str(r.get("workload") or "?"), str(r.get("faults") or "no faults"),
               str(r.get("system") or DEFAULT_SYSTEM), ",".join(r.get("bugs") or []))
        groups.setdefault(key, []).append(r)
    return [Pair(w, f, runs, sy, b) for (w, f, sy, b), runs in sorted(groups.items())]


def sparkline(values: list[float | None], *, css: str, unit: str,
              fmt: Callable[[float], str] = "{:.1f}".format, width: int = 110,
              height: int = 28) -> str:
    """A small inline SVG line of ``values`` (oldest first; ``None`` = no value), with
    its last value marked. Empty string when there is nothing to draw."""
    points = [(k, float(v)) for k, v in enumerate(values)
              if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if not points:
        return ""
    lo = min(v for _, v in points)
    hi = max(v for _, v in points)
    span = hi - lo or max(abs(hi), 1.0)
    n = max(len(values) - 1, 1)
    pad = 3.0

    def xy(k: int, v: float) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * (k / n if len(values) > 1 else 0.5)
        y = height - pad - (height - 2 * pad) * ((v - lo) / span if hi > lo else 0.5)
        return round(x, 1), round(y, 1)

    coords = [xy(k, v) for k, v in points]
    line = " ".join(f"{x},{y}" for x, y in coords)
    lx, ly = coords[-1]
    title = (f"{unit}: last {fmt(points[-1][1])}, min {fmt(lo)}, max {fmt(hi)} "
             f"over {len(points)} run{'' if len(points) == 1 else 's'}")
    return (f'<svg class="spark {css}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{title}">'
            f"<title>{title}</title>"
            f'<line class="spark-base" x1="{pad}" x2="{width - pad}" y1="{height - pad}" '
            f'y2="{height - pad}"/>'
            f'<polyline points="{line}"/><circle cx="{lx}" cy="{ly}" r="2.6"/></svg>')


def nightly_pages(root: Path, limit: int = 14) -> list[tuple[str, str]]:
    """The nightly suites' own pages, ``<root>/nightly/<date>/index.html``, newest first:
    (name, relative link)."""
    try:
        dirs = sorted((d for d in (root / "nightly").iterdir() if (d / INDEX).is_file()),
                      key=lambda d: d.name, reverse=True)
    except OSError:
        return []
    return [(d.name, quote(f"nightly/{d.name}/{INDEX}")) for d in dirs[:limit]]


def page_context(root: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups = pairs(rows)
    totals = {v: 0 for v in VERDICTS}
    for r in rows:
        totals[r["status"]] += 1
    cards = []
    for p in groups:
        last = p.last
        latest = p.latest()
        cards.append({
            "title": p.title, "workload": p.workload, "faults": p.faults,
            "variant": p.variant,
            "n": len(p.runs), "counts": p.counts(), "squares": [_square(r) for r in last],
            "latest": latest, "latest_text": _when(latest.get("started")),
            "latest_status": latest["status"],
            "throughput_svg": sparkline([r.get("throughput") for r in last],
                                        css="spark-tput", unit="ok ops/s", fmt=_rate),
            "recovery_svg": sparkline([r.get("recovery_s") for r in last],
                                      css="spark-rec", unit="recovery", fmt=_secs),
            "throughput_last": _last_text(last, "throughput", _rate),
            "recovery_last": _last_text(last, "recovery_s", _secs),
        })
    return {
        "root": str(root),
        "rows": [_table_row(r) for r in rows],
        "cards": cards,
        "totals": totals,
        "n_runs": len(rows),
        "latest_text": _when(rows[0].get("started")) if rows else None,
        "strip": STRIP,
        "nightly": nightly_pages(root),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "css": (TEMPLATES / "index.css").read_text(encoding="utf-8"),
        "js": (TEMPLATES / "index.js").read_text(encoding="utf-8"),
        "mark": RUNS_INDEX_MARK.decode(),
    }


def _square(r: dict[str, Any]) -> dict[str, Any]:
    bits = [r["status"].upper() + (" (partial)" if r.get("partial") else ""),
            _when(r.get("started")), f"seed {r.get('seed')}"]
    if r.get("anomalies"):
        bits.append(f"{r['anomalies']} anomalies")
    if r.get("bugs"):
        bits.append("bugs: " + ", ".join(r["bugs"]))
    return {"href": r["href"], "status": r["status"], "title": " · ".join(bits),
            "partial": bool(r.get("partial")) and r["status"] != "running"}


def _table_row(r: dict[str, Any]) -> dict[str, Any]:
    started = r.get("started")
    where = r["rel"].split("/")[:-2]  # e.g. nightly/2026-11-26 for a nightly run
    return {
        "href": r["href"], "rel": r["rel"], "status": r["status"], "where": "/".join(where),
        "partial": bool(r.get("partial")) and r["status"] != "running",
        "reason": str(r.get("verdict_reason") or ""),
        "when": _when(started), "when_sort": f"{started:.0f}" if started else "0",
        "system": str(r.get("system") or "?"), "nodes": r.get("nodes"),
        "workload": str(r.get("workload") or "?"), "faults": str(r.get("faults") or "—"),
        "bugs": ", ".join(r.get("bugs") or []),
        "seed": "" if r.get("seed") is None else str(r.get("seed")),
        "ops": _num(r.get("ops")), "ops_sort": _sort(r.get("ops")),
        "anomalies": _num(r.get("anomalies")), "anomalies_sort": _sort(r.get("anomalies")),
        "recovery": "never" if r.get("recovered") is False else _secs(r.get("recovery_s")),
        "recovery_sort": _sort(1e9 if r.get("recovered") is False else r.get("recovery_s")),
        "throughput": _rate(r.get("throughput")), "throughput_sort": _sort(r.get("throughput")),
    }


def _when(t: Any) -> str:
    if not isinstance(t, int | float):
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _num(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "—"


def _sort(v: Any) -> str:
    return repr(v) if isinstance(v, int | float) and not isinstance(v, bool) else ""


def _rate(v: Any) -> str:
    if not isinstance(v, int | float):
        return "—"
    return f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def _last_text(runs: list[dict[str, Any]], field: str, fmt: Any) -> str:
    for r in reversed(runs):
        if isinstance(r.get(field), int | float):
            return str(fmt(r[field]))
    return "—"


def index_html(root: Path, now: float | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The index page of ``root`` and the rows it shows."""
    rows = collect(root, now)
    html = _environment().get_template("index.html.j2").render(page_context(root, rows))
    return html, rows


class ForeignIndexError(OSError):
    """``root/index.html`` exists and is some other page (e.g. a nightly suite's)."""


def is_runs_index(page: Path) -> bool:
    """Whether ``page`` is a runs index this module wrote (it carries the marker)."""
    try:
        with open(page, "rb") as f:
            return RUNS_INDEX_MARK in f.read(1000)
    except OSError:
        return False


def writable_index(root: Path) -> Path:
    """``root/index.html``, if the runs index may be written there: it is absent or a
    runs index already. Another page of that name is never overwritten."""
    out = root / INDEX
    if out.exists() and not is_runs_index(out):
        raise ForeignIndexError(f"{out} is another page, not a runs index: left alone")
    return out


def render_index(root: Path) -> Path:
    """Render ``root/index.html``; return its path."""
    out = writable_index(root)
    html, _ = index_html(root)
    write_atomically(out, html)
    return out


def render_index_safely(root: Path, log: Path | None = None,
                        run_dir: Path | None = None) -> tuple[Path | None, str]:
    """Render the index and never raise: on failure the traceback goes to ``log`` (a
    run's lab.log) and the one-line reason is returned. When the index is new and
    ``run_dir`` is given, that run's page is rendered again so it links to the index."""
    try:
        new = not (root / INDEX).exists()
        out = render_index(root)
        if new and run_dir is not None and (run_dir / INDEX).exists():
            from lab.report.run_page import render_run

            render_run(run_dir)
        return out, ""
    except Exception as e:
        if log is not None:
            try:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR rendering the runs "
                            f"index {root / INDEX} failed\n{traceback.format_exc()}")
            except OSError:
                pass
        return None, f"{type(e).__name__}: {e}"



RUN_NAME = re.compile(r"\d{8}T\d{6}-s-?\d+(-\d+)?")


def index_root_for(out: Path) -> Path | None:
    """The reports root whose index a run written into ``out`` (``raftlab run --out``)
    updates: ``out`` itself; for a nightly directory ``<root>/nightly/<date>`` (which
    holds the suite's own index.html) the ``<root>`` above it; ``None`` when ``out``
    holds some other page named index.html."""
    out = out.resolve()
    if out.parent.name == "nightly":
        out = out.parent.parent
    page = out / INDEX
    return None if page.exists() and not is_runs_index(page) else out


def root_of(run_dir: Path) -> Path | None:
    """The reports root a run directory belongs to (see :func:`index_root_for`), found
    from its grandparent when the run was laid out by ``raftlab run``
    (``<out>/<workload>-<faults>/<time>-s<seed>``) or the grandparent already holds a
    runs index; else ``None`` (an arbitrary directory gets no index written near it)."""
    d = run_dir.resolve()
    if len(d.parents) < 2:
        return None
    parent = d.parents[1]
    if RUN_NAME.fullmatch(d.name) or is_runs_index(parent / INDEX):
        return index_root_for(parent)
    return None
