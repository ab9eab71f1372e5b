"""The per-run HTML report: ``RUN_DIR/index.html`` and ``raftlab report``.

Run directories are synthesized in ``tmp_path`` (a register history with a fault that
makes the cluster unavailable for a second, the nemesis schedule, the observer's polls)
and checked with the real checker (``lab.verdict.decide``), so the page is tested on the
anomalies the checker really emits. The HTML is read with ``html.parser``: the verdict
banner, each plot's SVG, the fault bands and their labels, the failing window, the
history table, and that nothing is fetched from the network.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import cli
from lab.report import is_run_dir, render_run, summarize_run
from lab.rundata import load_run
from lab.verdict import analyse_faults, decide

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000
NS = 1_000_000_000
FAULT = (2 * NS, 3 * NS)  # the synthetic isolate-n1 fault: from 2 s to 3 s


# --------------------------------------------------------------------------- synthetic runs


@dataclass
class Op:
    process: Any
    f: str
    key: str
    value: Any
    start: int
    end: int | None
    type: str = "ok"
    result: Any = None


@dataclass
class Synth:
    """Builds a register run: sequential operations, so valid unless anomalies are added."""

    rng: random.Random = field(default_factory=lambda: random.Random(7))
    ops: list[Op] = field(default_factory=list)
    t: int = 500 * MS
    next_process: int = 5

    def register_ops(self, n: int, gap_ns: int = 2 * MS, outage: bool = True,
                     stuck: bool = False) -> Synth:
        """``n`` operations on three keys; with ``outage`` every one during FAULT fails,
        and with ``stuck`` every one after it too (the cluster never recovers)."""
        values = {k: None for k in ("k0", "k1", "k2")}
        processes = list(range(5))
        for _ in range(n):
            k = self.rng.choice(list(values))
            slot = self.rng.randrange(5)
            p = processes[slot]
            f = self.rng.choice(("read", "read", "write", "cas"))
            lat = self.rng.randint(1 * MS, 6 * MS)
            start, end = self.t, self.t + lat
            self.t = end + gap_ns
            if (outage and FAULT[0] <= start < FAULT[1]) or (stuck and start >= FAULT[0]):
                v = {"read": None, "write": 1, "cas": [0, 1]}[f]
                self.ops.append(Op(p, f, k, v, start, start + 20 * MS, "fail"))
                self.t = start + 20 * MS + gap_ns
            elif f == "read":
                self.ops.append(Op(p, f, k, None, start, end, "ok", values[k]))
            elif f == "write":
                v = self.rng.randint(0, 4)
                if self.rng.random() < 0.01:  # a timeout: no effect, a fresh process
                    self.ops.append(Op(p, f, k, v, start, end + 900 * MS, "info"))
                    self.t = end + 900 * MS + gap_ns
                    processes[slot] = self.next_process
                    self.next_process += 1
                    continue
                values[k] = v
                self.ops.append(Op(p, f, k, v, start, end, "ok", v))
            else:
                exp, new = self.rng.randint(0, 4), self.rng.randint(0, 4)
                ok = values[k] == exp
                if ok:
                    values[k] = new
                self.ops.append(Op(p, f, k, [exp, new], start, end, "ok" if ok else "fail"))
        return self

    def no_linearization(self) -> Synth:
        """Concurrent writes of 1 and 2, then reads of 1, 2, 1: no order explains them."""
        t = self.t
        self.ops += [Op(100, "write", "kx", 1, t, t + 3 * MS, "ok", 1),
                     Op(101, "write", "kx", 2, t + MS, t + 4 * MS, "ok", 2)]
        for k, v in enumerate((1, 2, 1)):
            s = t + (5 + 2 * k) * MS
            self.ops.append(Op(102, "read", "kx", None, s, s + MS, "ok", v))
        self.t = t + 20 * MS
        return self

    def stale_read(self) -> Synth:
        t = self.t
        self.ops += [Op(103, "write", "ks", 1, t, t + MS, "ok", 1),
                     Op(103, "write", "ks", 2, t + 2 * MS, t + 3 * MS, "ok", 2),
                     Op(104, "read", "ks", None, t + 4 * MS, t + 5 * MS, "ok", 1)]
        self.t = t + 10 * MS
        return self

    def events(self, pending_tail: bool = False) -> list[dict[str, Any]]:
        raw: list[tuple[int, int, dict[str, Any]]] = []
        for seq, op in enumerate(self.ops):
            raw.append((op.start, 2 * seq, {"process": op.process, "type": "invoke",
                                            "f": op.f, "key": op.key, "value": op.value}))
            if op.end is not None and not (pending_tail and seq == len(self.ops) - 1):
                value = op.result if op.type == "ok" else op.value
                raw.append((op.end, 2 * seq + 1, {"process": op.process, "type": op.type,
                                                  "f": op.f, "key": op.key, "value": value,
                                                  "node": "n2"}))
        raw.append((FAULT[0], -1, {"process": "nemesis", "type": "info", "f": "isolate",
                                   "key": None, "value": {"nodes": ["n1"]}, "fault": 1}))
        raw.append((FAULT[1], -1, {"process": "nemesis", "type": "info", "f": "end-isolate",
                                   "key": None, "value": {"nodes": ["n1"]}, "fault": 1}))
        raw.sort(key=lambda e: (e[0], e[1]))
        return [{"index": k, "time": t, **ev} for k, (t, _, ev) in enumerate(raw)]


def schedule() -> list[dict[str, Any]]:
    links = [["n1", "n2"], ["n2", "n1"], ["n1", "n3"], ["n3", "n1"]]
    return [{"time": FAULT[0], "offset_s": 2.0, "phase": "start", "action": "isolate",
             "fault": 1, "nodes": ["n1"], "links": links},
            {"time": FAULT[1], "offset_s": 3.0, "phase": "end", "action": "isolate",
             "fault": 1, "nodes": ["n1"]}]


def polls(t_end: int) -> list[dict[str, Any]]:
    """n1 leads in term 1; isolated, it is replaced by n2 in term 2 and rejoins as follower."""
    out = []
    commit = 1
    for t in range(400 * MS, t_end + 1, 250 * MS):
        commit += 10
        for node in ("n1", "n2", "n3"):
            if t < FAULT[0] + 300 * MS:
                role, term, leader = ("leader" if node == "n1" else "follower"), 1, "n1"
            elif t < FAULT[1] and node == "n1":
                role, term, leader = "leader", 1, "n1"
            else:
                role, term, leader = ("leader" if node == "n2" else "follower"), 2, "n2"
            c = 45 if node == "n1" and FAULT[0] <= t < FAULT[1] else commit
            out.append({"time": t, "node": node, "alive": True, "role": role, "term": term,
                        "leader": leader, "commit": c, "applied": c})
    return out


def write_run(d: Path, synth: Synth, *, results: bool = True, partial: bool = False,
              check: bool = True, pending_tail: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    events = synth.events(pending_tail)
    _jsonl(d / "history.jsonl", events)
    _jsonl(d / "schedule.jsonl", schedule())
    t_end = max(e["time"] for e in events)
    _jsonl(d / "cluster.jsonl", polls(t_end))
    (d / "scenario.yaml").write_text(yaml.safe_dump({
        "version": 1, "command": ["raftlab", "run", "workloads/register.yaml",
                                  "faults/isolate-leader.yaml", "--nodes", "3"],
        "system": "raftkv", "nodes": 3, "seed": 3,
        "workload": {"name": "register", "model": "cas-register", "description": "r/w/cas"},
        "faults": {"name": "isolate-leader", "description": "isolate the leader"}}))
    (d / "nodes" / "n1").mkdir(parents=True, exist_ok=True)
    (d / "nodes" / "n1" / "node.log").write_text("started\n")
    (d / "lab.log").write_text("")
    if results:
        counts = Counter(e["type"] for e in events if e["process"] != "nemesis")
        (d / "results.json").write_text(json.dumps({
            "version": 1, "system": "raftkv", "nodes": 3, "workload": "register",
            "model": "cas-register", "faults": "isolate-leader", "seed": 3,
            "time_limit": 5.0, "concurrency": 5, "rate": 100.0, "bugs": ["stale-read"],
            "command": ["raftlab", "run", "workloads/register.yaml",
                        "faults/isolate-leader.yaml", "--nodes", "3"],
            "proxy": "built-in", "started": 1_790_000_000.0, "duration_s": 6.5,
            "exit_reason": "interrupted by SIGINT" if partial else "completed",
            "partial": partial, "events": len(events), "counts": dict(counts),
            "faults_applied": schedule(), "leftovers": {"processes": [], "ports": []},
            "nothing_left_behind": True}))
        if check:
            decide(d)
    return d


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


# --------------------------------------------------------------------------- reading the page


class Page(HTMLParser):
    """The parts of a page the tests look at: elements, text per id, attribute values."""

    VOID = frozenset({"meta", "input", "br", "img", "hr", "link", "source", "col", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, list[str]] = {}
        self.inside: dict[str, Counter[str]] = {}
        self._stack: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        for i in self._stack:
            if i is not None:
                self.inside[i][tag] += 1
        if tag in self.VOID:
            return
        self._stack.append(a.get("id"))
        if a.get("id"):
            self.text.setdefault(a["id"], [])
            self.inside.setdefault(a["id"], Counter())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        for i in self._stack:
            if i is not None:
                self.text[i].append(data)

    def text_of(self, id_: str) -> str:
        return " ".join(" ".join(self.text.get(id_, [])).split())

    def with_class(self, cls: str, tag: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags if cls in a.get("class", "").split()
                and (tag is None or t == tag)]


def render(d: Path) -> tuple[str, Page]:
    html = render_run(d).read_text(encoding="utf-8")
    return html, Page(html)


def assert_self_contained(html: str) -> None:
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)
    assert "<link" not in html and "<script src" not in html and "@import" not in html


# --------------------------------------------------------------------------- the tests


def test_valid_run_renders_the_verdict_plots_bands_and_history(tmp_path: Path) -> None:
    d = write_run(tmp_path / "valid", Synth().register_ops(900))
    assert json.loads((d / "results.json").read_text())["verdict"] == "valid"
    html, page = render(d)
    banner = page.text_of("verdict")
    assert banner.startswith("VALID") and "all 3 keys are linearizable" in banner
    assert "0 anomalies" in banner
    kinds = {c for _, a in page.tags if _ == "svg" for c in a.get("class", "").split()}
    assert {"latency", "throughput", "cluster"} <= kinds
    bands = page.with_class("band", "rect")
    assert len(bands) >= 3  # the isolate fault, once per time plot
    labels = re.findall(r'<text class="band-label"[^>]*>([^<]*)</text>', html)
    assert labels == ["#1 isolate n1"] * 3  # labelled on each time plot
    assert page.inside["history-table"]["tr"] == 1 + 200  # header + the first 200 rows
    assert page.text_of("ran").count("raftlab run workloads/register.yaml") == 1
    assert "--seed 3" in page.text_of("ran") and "stale-read" in page.text_of("ran")
    assert "nodes/n1/node.log" in [a.get("href") for t, a in page.tags if t == "a"]
    assert_self_contained(html)
    data = json.loads(page_script(html))
    assert len(data["t"]) == 900 and sum(data["i"]) == max(e["index"] for e in events(d)
                                                            if e["type"] == "invoke")


def events(d: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]


def page_script(html: str) -> str:
    m = re.search(r'<script type="application/json" id="ops-data">(.*?)</script>', html, re.S)
    assert m is not None
    return m.group(1)


def test_faults_panel_reports_the_hit_leader_split_quorum_and_unavailability(
        tmp_path: Path) -> None:
    d = write_run(tmp_path / "bite", Synth().register_ops(900))
    facts = analyse_faults(load_run(d))
    [imp] = facts.impacts
    assert imp.leader_before == "n1" and imp.leader_hit and imp.quorum_split
    assert imp.cut_off == ["n1"]
    assert "n1 (cut off from a majority) stopped committing" in imp.notes
    assert imp.moved and imp.dipped
    assert imp.unavailable_s is not None and 0.9 < imp.unavailable_s < 1.1
    assert imp.first_ok_from_heal_s is not None and imp.first_ok_from_heal_s < 0.05
    _, page = render(d)
    bite = page.text_of("bite")
    assert bite.startswith("Did the faults bite? The faults bit: the leader was hit")
    assert "n1 (term 1) → n2 (term 2)" in bite
    assert "#1 isolate n1" in page.text_of("faults")


def test_faults_that_never_bit_say_so(tmp_path: Path) -> None:
    synth = Synth().register_ops(900, outage=False)  # the fault changed nothing
    d = write_run(tmp_path / "toothless", synth, check=False)
    sched = schedule()
    sched[0].update(action="pause", nodes=["n3"], links=[])
    _jsonl(d / "schedule.jsonl", sched)
    _jsonl(d / "cluster.jsonl", [p | {"role": "leader" if p["node"] == "n1" else "follower",
                                      "term": 1, "commit": 9}
                                 for p in polls(6 * NS)])
    facts = analyse_faults(load_run(d))
    assert facts.bite.bit is False
    assert facts.bite.headline.startswith("The faults never bit")
    assert "The faults never bit" in render(d)[1].text_of("bite")


def test_invalid_run_draws_the_failing_window_of_each_non_linearizable_key(
        tmp_path: Path) -> None:
    synth = Synth().register_ops(300).no_linearization().stale_read()
    d = write_run(tmp_path / "invalid", synth)
    check = json.loads((d / "results.json").read_text())
    assert check["verdict"] == "invalid"
    _, page = render(d)
    assert page.text_of("verdict").startswith("INVALID")
    anomalies = check["checker"]["anomalies"]
    assert {a["key"] for a in anomalies} == {"kx", "ks"}
    windows = [a for t, a in page.tags if t == "svg" and "window" in a.get("class", "")]
    assert len(windows) == len(anomalies)
    assert len(bars(page, "bar-blocked")) == len(anomalies)  # one highlighted op each
    text = page.text_of("checker")
    assert "no order of the operations is consistent" in text
    assert "certainly overwritten before it began" in text


def bars(page: Page, cls: str) -> list[dict[str, str]]:
    """The failing-window bars of a class (legend swatches left out)."""
    return [a for a in page.with_class(cls, "rect") if "legend-swatch" not in a["class"]]


def test_every_checked_key_gets_its_window_and_the_prefix_is_numbered(tmp_path: Path) -> None:
    synth = Synth().register_ops(200).no_linearization().stale_read()
    d = write_run(tmp_path / "both", synth, check=False)
    from lab.checker import check_history
    from lab.history import read_history

    outcome = check_history(read_history(d / "history.jsonl"), "cas-register",
                            options={"all_keys": True})
    results = json.loads((d / "results.json").read_text())
    results.update(checker=outcome.to_json(), verdict=outcome.verdict,
                   verdict_reason=outcome.reason)
    (d / "results.json").write_text(json.dumps(results))
    causes = {a["cause"] for a in outcome.anomalies}
    assert causes == {"no-linearization", "stale-read"}
    _, page = render(d)
    windows = [a for t, a in page.tags if t == "svg" and "window" in a.get("class", "")]
    assert len(windows) == 2
    assert len(bars(page, "bar-blocked")) == 2
    assert "1. w 2" in page.text_of("checker")  # the linearized prefix, in order
    assert "2 anomalies" in page.text_of("verdict")


def test_unchecked_run_renders_as_unknown(tmp_path: Path) -> None:
    d = write_run(tmp_path / "unchecked", Synth().register_ops(100), check=False)
    _, page = render(d)
    banner = page.text_of("verdict")
    assert banner.startswith("UNKNOWN") and "not been checked yet" in banner
    assert "PARTIAL" not in banner


def test_partial_run_is_marked_partial(tmp_path: Path) -> None:
    d = write_run(tmp_path / "partial", Synth().register_ops(300), partial=True,
                  pending_tail=True)
    assert json.loads((d / "results.json").read_text())["verdict"] == "unknown"
    _, page = render(d)
    banner = page.text_of("verdict")
    assert banner.startswith("UNKNOWN") and "PARTIAL" in banner
    assert "interrupted by SIGINT" in banner
    assert "pending" in banner


def test_run_without_results_or_side_files_still_renders(tmp_path: Path) -> None:
    d = write_run(tmp_path / "bare", Synth().register_ops(50), results=False)
    for name in ("scenario.yaml", "schedule.jsonl", "cluster.jsonl", "lab.log"):
        (d / name).unlink()
    with open(d / "history.jsonl", "a") as f:
        f.write('{"index": 99999, "time": 1, "proc')  # torn by a kill
    assert is_run_dir(d)
    html, page = render(d)
    assert page.text_of("verdict").startswith("UNKNOWN")
    assert "PARTIAL" in page.text_of("verdict")
    assert "no cluster polls recorded" in html
    assert "#1 isolate n1" in page.text_of("faults")  # rebuilt from the nemesis events
    assert "history.jsonl: skipped 1 line" in html


def test_directory_with_only_a_scenario_renders(tmp_path: Path) -> None:
    d = tmp_path / "only-scenario"
    d.mkdir()
    (d / "scenario.yaml").write_text("workload: {name: register, model: cas-register}\n")
    html, page = render(d)
    assert page.text_of("verdict").startswith("UNKNOWN")
    assert page.text_of("glance").startswith("0 operations")
    assert "<h1>register \u00d7 no faults</h1>" in html


def test_a_large_history_stays_under_5_mb_and_keeps_every_anomaly(tmp_path: Path) -> None:
    synth = Synth(t=0).register_ops(120_000, gap_ns=0)  # 60 s at 2 000 operations/s
    d = write_run(tmp_path / "large", synth, check=False)
    results = json.loads((d / "results.json").read_text())
    last = synth.ops[-1]
    anomalies = [{"type": "nonlinearizable", "key": last.key, "cause": "stale-read",
                  "explanation": f"anomaly {k}", "ops": []} for k in range(30)]
    results.update(verdict="invalid", verdict_reason="made up",
                   checker={"verdict": "invalid", "model": "cas-register", "reason": "made up",
                            "anomalies": anomalies})
    (d / "results.json").write_text(json.dumps(results))
    html, page = render(d)
    assert len(html.encode()) < 5_000_000
    assert "30 anomalies" in page.text_of("verdict")
    assert len([a for t, a in page.tags if t == "details"]) == 30
    assert_self_contained(html)


def test_a_cluster_that_never_recovers_is_said_so_and_the_verdict_stands(
        tmp_path: Path) -> None:
    """Operations tried after the heal and none ok: recovery is "never" on the page, in
    the index row and in results.json's notes; the verdict (safety) is unchanged."""
    d = write_run(tmp_path / "stuck", Synth().register_ops(900, stuck=True))
    facts = analyse_faults(load_run(d))
    [imp] = facts.impacts
    assert imp.stuck and imp.first_ok_from_heal_s is None
    assert facts.recovery_s is None and facts.unrecovered == [imp]
    results = json.loads((d / "results.json").read_text())
    assert results["verdict"] == "valid"
    assert results["evidence"]["recovered"] is False
    assert results["notes"] == ["the cluster never recovered: no operation succeeded after "
                                "#1 isolate n1 healed"]
    _, page = render(d)
    assert "never recovery no ok after #1 isolate n1 healed" in " ".join(
        page.text_of("glance").split())
    row = summarize_run(d)
    assert row["recovered"] is False and row["recovery_s"] is None
    # A run that recovers says nothing of the kind, and checking it again clears the note.
    healthy = write_run(tmp_path / "fine", Synth().register_ops(900))
    assert analyse_faults(load_run(healthy)).unrecovered == []
    assert "notes" not in json.loads((healthy / "results.json").read_text())
    assert summarize_run(healthy)["recovered"] is True


def test_no_operation_after_the_heal_is_not_a_failure_to_recover(tmp_path: Path) -> None:
    """A run whose clients stop before the fault heals (nothing tried after it) proves
    nothing either way: not "never recovered"."""
    synth = Synth().register_ops(900)
    synth.ops = [op for op in synth.ops if op.start < FAULT[0]]
    d = write_run(tmp_path / "early", synth, check=False)
    facts = analyse_faults(load_run(d))
    assert all(not i.stuck for i in facts.impacts) and facts.unrecovered == []


def test_summarize_run_gives_the_index_row_and_caches_it(tmp_path: Path) -> None:
    d = write_run(tmp_path / "sum", Synth().register_ops(400))
    row = summarize_run(d)
    assert row["verdict"] == "valid" and row["workload"] == "register"
    assert row["faults"] == "isolate-leader" and row["seed"] == 3 and row["system"] == "raftkv"
    assert row["ops"] == 400 and row["anomalies"] == 0 and row["partial"] is False
    assert row["recovery_s"] is not None and row["throughput"] is not None
    assert row["started"] == 1_790_000_000.0
    assert (d / "summary.json").exists()
    assert summarize_run(d) == json.loads(json.dumps(row))


def test_report_command_prints_the_page_path(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    d = write_run(tmp_path / "cmd", Synth().register_ops(50))
    assert cli.main(["report", str(d)]) == 0
    assert capsys.readouterr().out.strip() == str(d / "index.html")


def test_report_command_on_a_non_run_directory_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run directory" in err
    assert cli.main(["report", str(tmp_path / "missing")]) == 2


def test_check_prints_the_report_before_the_verdict(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = write_run(tmp_path / "say", Synth().register_ops(100), check=False)
    assert cli.main(["analyze", str(d)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == f"report: {d / 'index.html'}"
    assert lines[-1].startswith("verdict: valid")


def test_a_report_that_fails_to_render_keeps_the_verdict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = write_run(tmp_path / "broken", Synth().register_ops(100).stale_read(), check=False)

    def boom(run_dir: Path) -> Path:
        raise RuntimeError("template exploded")

    monkeypatch.setattr("lab.report.render_run", boom)
    assert cli.main(["analyze", str(d)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("report: not rendered (RuntimeError: template exploded")
    assert lines[-1].startswith("verdict: invalid")
    assert "template exploded" in (d / "lab.log").read_text()


@pytest.mark.processes
def test_a_real_run_ends_with_its_report(tmp_path: Path) -> None:
    from test_run_e2e import time_limit_for

    script = Path(sys.executable).with_name("raftlab")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c",
                                                 "import sys; from lab.cli import main; "
                                                 "sys.exit(main())"]
    # long enough for kill-leader's first kill to start and end: correct raftkv is valid
    limit = time_limit_for("kill-leader")
    proc = subprocess.run([*cmd, "run", "workloads/register.yaml", "faults/kill-leader.yaml",
                           "--nodes", "3", "--time-limit", f"{limit:g}", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=limit + 120)
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("report: ") and lines[-2].endswith("index.html"), proc.stdout
    assert proc.returncode == 0 and lines[-1].startswith("verdict: valid"), proc.stdout
    page = Path(lines[-2].removeprefix("report: "))
    html = page.read_text()
    assert 'class="verdict verdict-valid"' in html
    assert "#1 kill" in html  # the kill drawn as a band
    assert_self_contained(html)
    shutil.rmtree(page.parent / "nodes", ignore_errors=True)


def test_garbled_files_still_render(tmp_path: Path) -> None:
    d = write_run(tmp_path / "garbled", Synth().register_ops(60), check=False)
    with open(d / "history.jsonl", "a") as f:
        f.write('{"index": "x", "time": "soon", "process": [1], "type": "invoke"}\n'
                '{"process": 7, "type": "invoke", "f": "read", "key": {"a": 1}}\n'
                "not json at all\n[1, 2]\n")
    _jsonl(d / "schedule.jsonl", [{"time": "later", "phase": "start"},
                                  {"time": 1, "phase": "start", "action": "kill",
                                   "fault": 9, "links": [["n1"], 3], "nodes": "n1",
                                   "params": [1]}])
    _jsonl(d / "cluster.jsonl", [{"time": 1, "node": "n1", "term": "two", "role": 3},
                                 {"time": "x", "node": "n2"}])
    (d / "results.json").write_text("[1, 2, 3]")
    (d / "scenario.yaml").write_text("workload: [unclosed\n")
    html, page = render(d)
    assert page.text_of("verdict").startswith("UNKNOWN")
    assert "history.jsonl: skipped 2 line(s)" in html  # the text line and the list
    assert "scenario.yaml: unreadable" in html
    assert "#1 kill" in page.text_of("faults")


def test_table_data_stays_within_its_budget_and_keeps_anomaly_operations() -> None:
    from lab.report import table
    from lab.rundata import Operation

    long_value = [["append", 3, 1], ["r", 4, list(range(40))]]
    ops = [Operation(2 * k, k % 20, "txn", None, "ok", k * MS // 2, k * MS // 2 + 2 * MS,
                     long_value) for k in range(150_000)]
    text, carried = table.table_data(ops, keep={2 * 149_999})
    assert len(text) <= table.BUDGET
    data = json.loads(text)
    assert max(len(v) for v in data["v"]) <= 40
    assert carried == len(data["i"]) < len(ops)
    assert sum(data["i"]) == 2 * 149_999  # the anomaly's operation is the last one carried


def test_clients_line_says_unlimited_rate_for_rate_zero(tmp_path: Path) -> None:
    d = write_run(tmp_path / "rate", Synth().register_ops(40), check=False)
    assert "5 clients, 100 ops/s in all" in render(d)[1].text_of("ran")
    results = json.loads((d / "results.json").read_text())
    (d / "results.json").write_text(json.dumps(results | {"concurrency": 32, "rate": 0.0}))
    ran = render(d)[1].text_of("ran")
    assert "32 clients, unlimited rate" in ran and "0.0 ops/s" not in ran


def test_a_thousand_keys_fold_into_details_with_the_invalid_ones_shown_first(
        tmp_path: Path) -> None:
    d = write_run(tmp_path / "keys", Synth().register_ops(40), check=False)
    results = json.loads((d / "results.json").read_text())
    per_key = {f"k{i}": "valid" for i in range(1000)} | {"k640": "invalid"}
    results.update(verdict="invalid", checker={"verdict": "invalid", "model": "cas-register",
                                               "reason": "k640", "per_key": per_key,
                                               "anomalies": []})
    (d / "results.json").write_text(json.dumps(results))
    html = render(d)[0]
    keys = html[html.index('<p class="keys">'):]
    shown, folded = keys.split('<details class="keys-all">', 1)
    assert shown.count('class="pill') == 1 and ">k640<" in shown
    assert "1 invalid, 999 valid" in shown
    assert folded.split("</details>")[0].count('class="pill pill-valid"') == 999


# --------------------------------------------------------------------------- heal, premises


def test_a_heal_is_drawn_as_heal_unnumbered_so_bands_agree_with_the_fault_count(
        tmp_path: Path) -> None:
    """schedule.jsonl gives a heal step ``fault: null``: it is an instant action, not one
    of the faults counted at the top, so its band says ``heal`` and carries no number."""
    d = write_run(tmp_path / "heal", Synth().register_ops(900), check=False)
    heal = {"time": FAULT[1] + 500 * MS, "offset_s": 3.5, "phase": "start", "action": "heal",
            "fault": None, "nodes": []}
    later = [{"time": FAULT[1] + NS, "offset_s": 4.0, "phase": "start", "action": "pause",
              "fault": 2, "nodes": ["n3"]},
             {"time": FAULT[1] + 2 * NS, "offset_s": 5.0, "phase": "end", "action": "pause",
              "fault": 2, "nodes": ["n3"]}]
    _jsonl(d / "schedule.jsonl", [*schedule(), heal, *later])
    html, page = render(d)
    labels = re.findall(r'<text class="band-label"[^>]*>([^<]*)</text>', html)
    assert sorted(set(labels)) == ["#1 isolate n1", "#2 pause n3", "heal"], labels
    assert labels.count("heal") == 3  # once per time plot
    assert " 2 faults injected by the nemesis " in page.text_of("glance")
    assert [i.fault.label for i in analyse_faults(load_run(d)).impacts] == [
        "#1 isolate n1", "#2 pause n3"]


def test_what_ran_shows_the_scenario_s_timing_initial_leader_and_system_options(
        tmp_path: Path) -> None:
    d = write_run(tmp_path / "set", Synth().register_ops(40), check=False)
    ran = render(d)[1].text_of("ran")
    assert "timing" not in ran and "initial leader" not in ran and "system options" not in ran
    sc = yaml.safe_load((d / "scenario.yaml").read_text())
    sc["faults"].update(election_timeout=1.5, heartbeat=0.1, initial_leader="n1",
                        system_options={"raftkv": {"max_append_entries": 1},
                                        "etcd": {"snapshot_count": 100}})
    (d / "scenario.yaml").write_text(yaml.safe_dump(sc))
    results = json.loads((d / "results.json").read_text())
    results["premises"] = [{"premise": "initial_leader", "wanted": "n1", "got": "n1",
                            "held": True, "delay_s": 0.0}]
    (d / "results.json").write_text(json.dumps(results))
    ran = render(d)[1].text_of("ran")
    assert "timing election timeout 1.50 s, heartbeat 100 ms" in ran
    assert "initial leader n1 wanted: obtained (n1 already led)" in ran
    assert ("system options raftkv: max_append_entries 1; etcd: snapshot_count 100 "
            "(not used: this run is on raftkv)") in ran
    # only the heartbeat set: the election timeout is the system's default
    sc["faults"].update(election_timeout=None, initial_leader=None, system_options={})
    (d / "scenario.yaml").write_text(yaml.safe_dump(sc))
    ran = render(d)[1].text_of("ran")
    assert "timing heartbeat 100 ms (set by the scenario; the rest is the system's default)" \
        in ran
    assert "initial leader" not in ran and "system options" not in ran


def test_a_failed_premise_is_on_the_page_and_in_the_verdict(tmp_path: Path) -> None:
    d = write_run(tmp_path / "premise", Synth().register_ops(900), check=False)
    sc = yaml.safe_load((d / "scenario.yaml").read_text())
    sc["faults"]["initial_leader"] = "n2"
    (d / "scenario.yaml").write_text(yaml.safe_dump(sc))
    results = json.loads((d / "results.json").read_text())
    results["premises"] = [{"premise": "initial_leader", "wanted": "n2", "got": "n1",
                            "held": False, "delay_s": 20.4}]
    (d / "results.json").write_text(json.dumps(results))
    assert decide(d)["verdict"] == "unknown"
    html, page = render(d)
    banner = page.text_of("verdict")
    assert banner.startswith("UNKNOWN")
    assert "the scenario's premise failed: initial_leader n2 was not obtained (n1 led)" \
        in banner
    box = page.text_of("premises-failed")
    assert box.startswith("PREMISE FAILED The scenario's premise failed: initial_leader n2 "
                          "was not obtained (n1 led); trying to move leadership held the "
                          "clients and the schedule back 20.40 s."), box
    assert page.with_class("badge-premise")
    assert ("initial leader n2 wanted: NOT obtained, n1 led when the clients started; "
            "moving leadership took 20.40 s") in page.text_of("ran")
    # the premise held: no box, and What ran says how long moving leadership took
    results["premises"][0].update(got="n2", held=True, delay_s=2.5)
    (d / "results.json").write_text(json.dumps(results))
    assert decide(d)["verdict"] == "valid"
    html, page = render(d)
    assert "premises-failed" not in html and "PREMISE FAILED" not in html
    assert ("initial leader n2 wanted: obtained; moving leadership took 2.50 s, so the "
            "clients and the schedule started that much later") in page.text_of("ran")
