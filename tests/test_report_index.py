"""The runs index, ``reports/index.html``, and ``raftlab index``.

A reports root is synthesized in ``tmp_path`` from the per-run helpers of
``test_report.py``: checked runs (valid and invalid) of two workload x fault pairs, a
nightly run one level deeper, a run in progress, and things that are not runs. The page
is read with the same ``html.parser`` reader as the run page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from test_report import Page, Synth, assert_self_contained, write_run

from lab import cli
from lab.report import render_run
from lab.report.index_page import (
    collect,
    find_runs,
    render_index,
    root_of,
    running,
    sparkline,
)

T0 = 1_790_000_000.0  # 2026-09-21, the first synthetic run's start


def stamp(k: int, seed: int = 3) -> str:
    """A run directory's name as ``raftlab run`` makes it, ``k`` hours after T0."""
    return time.strftime("%Y%m%dT%H%M%S", time.localtime(T0 + 3600 * k)) + f"-s{seed}"


_TEMPLATES: dict[tuple[Path, bool], Path] = {}


def add_run(root: Path, workload: str, faults: str, k: int, *, invalid: bool = False,
            under: str = "", render: bool = True, **results: Any) -> Path:
    """A checked register run at ``root/[under/]<workload>-<faults>/<stamp>``, started
    ``k`` hours after T0, with its page rendered. Copies one checked template per
    verdict, so many runs stay cheap."""
    key = (root, invalid)
    if key not in _TEMPLATES:
        synth = Synth().register_ops(600)  # past the fault at 2-3 s: a recovery time
        if invalid:
            synth.no_linearization()
        tmpl = root.parent / f"template-{'invalid' if invalid else 'valid'}"
        _TEMPLATES[key] = write_run(tmpl, synth)
    d = root / under / f"{workload}-{faults}" / stamp(k, seed=k)
    shutil.copytree(_TEMPLATES[key], d)
    (d / "summary.json").unlink(missing_ok=True)
    r = json.loads((d / "results.json").read_text())
    r.update(workload=workload, faults=faults, seed=k, started=T0 + 3600 * k, **results)
    (d / "results.json").write_text(json.dumps(r))
    if render:
        render_run(d)
    return d


def add_running(root: Path, workload: str, faults: str, k: int) -> Path:
    """A run in progress: scenario.yaml and a growing history, no results.json yet."""
    d = root / f"{workload}-{faults}" / stamp(k, seed=k)
    d.mkdir(parents=True)
    (d / "scenario.yaml").write_text(yaml.safe_dump({
        "system": "raftkv", "nodes": 5, "seed": k, "workload": {"name": workload},
        "faults": {"name": faults}}))
    (d / "history.jsonl").write_text('{"index": 0, "time": 1, "process": 0, "type": "invoke",'
                                     ' "f": "read", "key": "k0", "value": null}\n')
    return d


def make_age(d: Path, seconds: float) -> None:
    old = time.time() - seconds
    for p in d.iterdir():
        os.utime(p, (old, old))


def render(root: Path) -> tuple[str, Page]:
    html = render_index(root).read_text(encoding="utf-8")
    return html, Page(html)


def runs_rows(page: Page) -> list[dict[str, str]]:
    return [a for t, a in page.tags if t == "tr" and a.get("class", "").startswith("s-")]


def links(html: str, cls: str) -> list[str]:
    return re.findall(rf'<a class="{cls}[^"]*" href="([^"]*)"', html)


def run_links(html: str) -> list[str]:
    """The links of the runs table, one per row, in the table's order."""
    return re.findall(r'<td data-sort="[^"]*"><a href="([^"]*)" title="', html)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "reports"
    r.mkdir()
    return r


# --------------------------------------------------------------------------- tests


def test_the_index_lists_every_run_with_a_relative_link_and_its_verdict(root: Path) -> None:
    add_run(root, "register", "mixed", 1)
    add_run(root, "register", "mixed", 2, invalid=True, bugs=["early-ack"])
    add_run(root, "register", "mixed", 3)
    add_run(root, "bank", "kill-leader", 4)
    add_run(root, "bank", "kill-leader", 5, under="nightly/2026-11-26")
    add_running(root, "bank", "kill-leader", 6)
    html, page = render(root)
    assert_self_contained(html)
    assert '<meta name="generator" content="raftlab runs index">' in html
    rows = runs_rows(page)
    assert [r["class"] for r in rows] == ["s-running", "s-valid", "s-valid", "s-valid",
                                          "s-invalid", "s-valid"]  # newest first
    hrefs = run_links(html)
    assert len(hrefs) == 6
    for href in hrefs:  # relative, and each leads to the run (its page, or its folder)
        assert not href.startswith(("/", "http")) and (root / unquote(href)).exists(), href
    assert hrefs[0].endswith("/") and hrefs[1].startswith("nightly/2026-11-26/bank-kill")
    text = page.text_of("runs")
    assert "early-ack" in text and "running" in text
    totals = page.text_of("totals")
    assert totals == "4 valid 1 invalid 0 unknown 1 running"


def test_each_pair_gets_its_verdict_strip_oldest_first_and_sparklines(root: Path) -> None:
    for k, invalid in enumerate([False, True, False, False]):
        add_run(root, "register", "mixed", k, invalid=invalid)
    add_run(root, "bank", "kill-leader", 9)
    html, page = render(root)
    pairs = page.text_of("pairs")
    assert pairs.index("bank \u00d7 kill-leader") < pairs.index("register \u00d7 mixed")
    squares = [a["class"].split()[1] for a in page.with_class("sq", "a")]
    assert squares == ["sq-valid", "sq-valid", "sq-invalid", "sq-valid", "sq-valid"]
    for href in links(html, "sq"):
        assert (root / unquote(href)).is_file()
    sparks = [a for t, a in page.tags if t == "svg" and "spark" in a.get("class", "")]
    assert len(sparks) == 4  # throughput and recovery, for each of the two pairs
    register_tput = html.split('class="spark spark-tput"')[2]
    points = register_tput.split('points="')[1].split('"')[0].split()
    assert len(points) == 4


def test_runs_and_junk_are_found_or_passed_over(root: Path) -> None:
    add_run(root, "register", "mixed", 1, render=False)
    add_run(root, "register", "mixed", 2, under="nightly/2026-11-25", render=False)
    (root / "README.md").write_text("not a run")
    (root / "empty").mkdir()
    (root / "shallow").mkdir()
    (root / "shallow" / "results.json").write_text("{}")  # depth 1: not a run
    (root / ".hidden" / "x").mkdir(parents=True)
    (root / ".hidden" / "x" / "results.json").write_text("{}")
    too_deep = root / "a" / "b" / "c" / "d" / "e"
    too_deep.mkdir(parents=True)
    (too_deep / "results.json").write_text("{}")
    garbled = root / "register-mixed" / stamp(3)
    garbled.mkdir()
    (garbled / "results.json").write_text("[not json")
    (root / "register-mixed" / "stray.txt").write_text("")
    found = [p.relative_to(root).as_posix() for p in find_runs(root)]
    assert found == [f"nightly/2026-11-25/register-mixed/{stamp(2, 2)}",
                     f"register-mixed/{stamp(1, 1)}", f"register-mixed/{stamp(3)}"]
    rows = {r["rel"]: r for r in collect(root)}
    assert rows[f"register-mixed/{stamp(3)}"]["status"] == "unknown"
    assert rows[f"register-mixed/{stamp(1, 1)}"]["status"] == "valid"
    _, page = render(root)
    assert len(runs_rows(page)) == 3


def test_a_run_in_progress_shows_as_running_until_it_goes_quiet(root: Path) -> None:
    d = add_running(root, "register", "mixed", 1)
    assert running(d)
    [row] = collect(root)
    assert row["status"] == "running" and row["workload"] == "register" and row["seed"] == 1
    assert not (d / "summary.json").exists()  # a live run is not read, nor written to
    make_age(d, 600)  # killed long ago without results.json: cut short, not running
    assert not running(d)
    [row] = collect(root)
    assert row["status"] == "unknown" and row["partial"] is True


def test_hundreds_of_runs_come_from_their_summary_cache(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = add_run(root, "register", "mixed", 0)
    cached = json.loads((d / "summary.json").read_text())
    for k in range(1, 400):
        run = root / f"w{k % 7}-f{k % 5}" / stamp(k, seed=k)
        run.mkdir(parents=True)
        (run / "results.json").write_text("{}")
        row = dict(cached, workload=f"w{k % 7}", faults=f"f{k % 5}", seed=k,
                   started=T0 + 3600 * k, verdict="invalid" if k % 13 == 0 else "valid")
        (run / "summary.json").write_text(json.dumps(row))  # newer than results.json

    def no_reading(path: Path) -> Any:
        raise AssertionError(f"{path} was read, not taken from its summary.json")

    monkeypatch.setattr("lab.report.run_page.load_run", no_reading)
    html, page = render(root)
    rows = runs_rows(page)
    assert len(rows) == 400 and sum(r["class"] == "s-invalid" for r in rows) == 30
    assert len(html) < 1_000_000


def test_a_summary_older_than_the_results_is_worked_out_again(root: Path) -> None:
    d = add_run(root, "register", "mixed", 1)
    [row] = collect(root)
    assert row["status"] == "valid"
    results = json.loads((d / "results.json").read_text())
    results.update(verdict="invalid", verdict_reason="re-checked")
    time.sleep(0.01)
    (d / "results.json").write_text(json.dumps(results))
    [row] = collect(root)
    assert row["status"] == "invalid"


def test_an_empty_root_says_how_to_start(root: Path) -> None:
    html, page = render(root)
    assert "No runs yet" in html and "raftlab run" in html
    assert runs_rows(page) == []


def test_sparkline_skips_missing_values_and_draws_nothing_without_any() -> None:
    svg = sparkline([1.0, None, 3.0, 2.0], css="spark-x", unit="u")
    points = svg.split('points="')[1].split('"')[0].split()
    assert len(points) == 3
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[1] < ys[2] < ys[0]  # higher values are drawn higher (smaller y)
    assert "last 2.0, min 1.0, max 3.0 over 3 runs" in svg
    assert sparkline([None, None], css="x", unit="u") == ""
    assert sparkline([5.0], css="x", unit="u").count("<circle") == 1


def test_the_run_page_links_back_to_the_index_above_it(root: Path) -> None:
    d = add_run(root, "register", "mixed", 1, render=False)
    nightly = add_run(root, "register", "mixed", 2, under="nightly/2026-11-26", render=False)
    assert 'href="../../index.html"' not in render_run(d).read_text()  # no index yet
    render_index(root)
    assert 'href="../../index.html">all runs' in render_run(d).read_text()
    assert 'href="../../../../index.html">all runs' in render_run(nightly).read_text()


def test_root_of_a_run_directory(root: Path, tmp_path: Path) -> None:
    d = add_run(root, "register", "mixed", 1, render=False)
    assert root_of(d) == root.resolve()
    other = write_run(tmp_path / "somewhere" / "my-run", Synth().register_ops(20), check=False)
    assert root_of(other) is None  # not laid out by raftlab run: no index next to it
    (tmp_path / "index.html").write_text("<p>someone else's page</p>")
    assert root_of(other) is None


# --------------------------------------------------------------------------- commands


def test_index_command_renders_and_prints_the_path(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_run(root, "register", "mixed", 1)
    assert cli.main(["index", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / "index.html")
    assert "register" in (root / "index.html").read_text()
    assert cli.main(["index", str(root / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err


def test_analyze_and_report_regenerate_the_index_after_the_run_page(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = add_run(root, "register", "mixed", 1)
    d = add_run(root, "register", "mixed", 2, render=False, invalid=True)
    assert cli.main(["analyze", str(d)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2] == f"report: {d / 'index.html'}" and out[-1].startswith("verdict: invalid")
    page = Page((root / "index.html").read_text())
    assert [r["class"] for r in runs_rows(page)] == ["s-invalid", "s-valid"]
    shutil.rmtree(d)
    (root / "index.html").unlink()
    assert cli.main(["report", str(first)]) == 0
    assert capsys.readouterr().out.strip() == str(first / "index.html")
    assert len(runs_rows(Page((root / "index.html").read_text()))) == 1


def test_a_failing_index_keeps_the_verdict_and_the_exit_code(
        root: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = add_run(root, "register", "mixed", 1, render=False, invalid=True)

    def boom(root: Path) -> Path:
        raise RuntimeError("index exploded")

    monkeypatch.setattr("lab.report.index_page.render_index", boom)
    assert cli.main(["analyze", str(d)]) == 1
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("verdict: invalid")
    assert "runs index" in err and "index exploded" in err
    assert "index exploded" in (d / "lab.log").read_text()
    assert cli.main(["report", str(d)]) == 0
    assert not (root / "index.html").exists()


def test_analyze_of_a_run_outside_a_reports_root_writes_no_index(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_run(tmp_path / "loose" / "run", Synth().register_ops(40), check=False)
    assert cli.main(["analyze", str(d)]) == 0
    assert not (tmp_path / "index.html").exists()


def test_per_key_chips_fold_away_beyond_forty_keys_with_invalid_keys_first() -> None:
    from lab.report.run_page import key_groups

    few = {f"k{i}": "valid" for i in range(40)}
    assert key_groups(few)["folded"] == [] and len(key_groups(few)["shown"]) == 40
    many = {f"k{i}": "valid" for i in range(1000)} | {"k500": "invalid", "k7": "unknown"}
    g = key_groups(many)
    assert g["shown"] == [("k500", "invalid")]
    assert g["folded"][0] == ("k7", "unknown") and len(g["folded"]) == 999
    assert g["counts"] == "1 invalid, 1 unknown, 998 valid"


def test_the_first_run_in_a_root_links_to_the_index_it_created(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = add_run(root, "register", "mixed", 1, render=False)
    assert cli.main(["report", str(d)]) == 0
    assert (root / "index.html").exists()
    assert 'href="../../index.html">all runs' in (d / "index.html").read_text()


def test_a_nightly_run_updates_the_top_index_and_leaves_the_suite_page_alone(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nightly = root / "nightly" / "2026-11-26"
    nightly.mkdir(parents=True)
    suite_page = "<!doctype html><title>nightly suite</title>"
    (nightly / "index.html").write_text(suite_page)
    d = add_run(root, "register", "mixed", 1, under="nightly/2026-11-26", render=False)
    assert root_of(d) == root.resolve()
    assert cli.main(["analyze", str(d)]) == 0
    assert (nightly / "index.html").read_text() == suite_page
    html, page = html_and_page(root / "index.html")
    assert [r["class"] for r in runs_rows(page)] == ["s-valid"]
    assert '<a href="nightly/2026-11-26/index.html">2026-11-26</a>' in html
    assert '<span class="where">nightly/2026-11-26</span>' in html
    assert 'href="../../../../index.html">all runs' in (d / "index.html").read_text()
    assert cli.main(["index", str(nightly)]) == 2  # never over another page
    assert "not a runs index" in capsys.readouterr().err
    assert (nightly / "index.html").read_text() == suite_page


def html_and_page(path: Path) -> tuple[str, Page]:
    html = path.read_text(encoding="utf-8")
    return html, Page(html)


def test_a_strip_never_mixes_systems_or_seeded_bugs() -> None:
    from lab.report.index_page import pairs

    rows = [{"workload": "register", "faults": "mixed", "system": s, "bugs": b,
             "started": k, "rel": f"r{k}", "status": "valid"}
            for k, (s, b) in enumerate([("raftkv", []), ("etcd", []), ("raftkv", ["early-ack"]),
                                        ("raftkv", [])])]
    groups = pairs(rows)
    assert sorted((p.system, p.bugs, len(p.runs)) for p in groups) == [
        ("etcd", "", 1), ("raftkv", "", 2), ("raftkv", "early-ack", 1)]
    assert {p.title for p in groups} == {"register \u00d7 mixed", "register \u00d7 mixed (etcd)",
                                         "register \u00d7 mixed (+early-ack)"}
