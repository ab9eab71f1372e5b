"""``lab.store``: the run directory as one typed thing.

One JSON-lines rule (a torn tail is forgiven and reported; a bad line elsewhere is
``FILE:LINE`` in strict mode and skipped in forgiving mode), the one is-run test, the
records' round trips (old scenario files included), and ``raftlab analyze`` turning a
corrupt run file into exit 2 with its file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import cli
from lab.checker import HistoryError, load_history
from lab.exitcode import ExitCode
from lab.history import read_history
from lab.run import Experiment, RunOptions
from lab.scenario import load_faults, load_workload
from lab.store import (
    RunDir,
    StoreError,
    iter_jsonl,
)

ROOT = Path(__file__).resolve().parent.parent


def ev(i: int, p: Any, t: str, f: str, v: Any = None, key: Any = "x") -> dict[str, Any]:
    return {"index": i, "time": i * 1000, "process": p, "type": t, "f": f, "key": key,
            "value": v}


GOOD = [ev(0, 0, "invoke", "write", 1), ev(1, 0, "ok", "write", 1),
        ev(2, 1, "invoke", "read"), ev(3, 1, "ok", "read", 1)]


def lines(*items: Any) -> str:
    return "".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items)


# --------------------------------------------------------------------------- JSON lines


def test_strict_mode_rejects_a_corrupt_line_mid_file_with_file_and_line(tmp_path: Path
                                                                       ) -> None:
    p = tmp_path / "history.jsonl"
    p.write_text(lines(GOOD[0], '{"index": 1, "proc', GOOD[2]))
    with pytest.raises(StoreError) as e:
        iter_jsonl(p, strict=True)
    assert str(e.value).startswith(f"{p}:2: not valid JSON (")
    assert e.value.line == 2 and e.value.source == str(p)
    p.write_text(lines(GOOD[0], "", "[1, 2]", GOOD[1]))  # blank lines count as lines
    with pytest.raises(StoreError, match=r"history.jsonl:3: expected a JSON object, got list"):
        iter_jsonl(p, strict=True)
    p.write_text(lines(GOOD[0], "[" * 100_000 + "]" * 100_000, GOOD[1]))
    with pytest.raises(StoreError, match=r"history.jsonl:2: not valid JSON \(nested too"):
        iter_jsonl(p, strict=True)


def test_a_bad_last_line_that_has_its_newline_is_corruption_not_a_tear(tmp_path: Path
                                                                      ) -> None:
    p = tmp_path / "schedule.jsonl"
    p.write_text(lines(GOOD[0], "{oops"))
    with pytest.raises(StoreError, match=r"schedule.jsonl:2: not valid JSON"):
        iter_jsonl(p, strict=True)
    forgiving = iter_jsonl(p, strict=False)
    assert forgiving.objects == [GOOD[0]] and forgiving.skipped == (2,)
    assert forgiving.torn is None


def test_a_torn_tail_is_forgiven_and_reported_in_both_modes(tmp_path: Path) -> None:
    p = tmp_path / "history.jsonl"
    p.write_text(lines(*GOOD) + '{"index": 4, "time": 9, "pro')  # killed mid-line
    for strict in (True, False):
        got = iter_jsonl(p, strict=strict)
        assert got.objects == GOOD and [k for k, _ in got.records] == [1, 2, 3, 4]
        assert got.torn == 5 and got.skipped == ()
        assert got.torn_note == f"{p}:5: ignored a torn last line"
    assert load_history(p).warnings == [f"{p}:5: ignored a torn last line"]
    assert read_history(p) == GOOD


def test_forgiving_mode_skips_and_counts_what_strict_mode_refuses(tmp_path: Path) -> None:
    p = tmp_path / "cluster.jsonl"
    p.write_text(lines(GOOD[0], "not json", "[1]", GOOD[1]) + "{tor")
    got = iter_jsonl(p, strict=False)
    assert got.objects == GOOD[:2] and got.skipped == (2, 3) and got.torn == 5
    assert iter_jsonl(tmp_path / "missing.jsonl", strict=False).objects == []
    with pytest.raises(StoreError, match=r"missing.jsonl: cannot read"):
        iter_jsonl(tmp_path / "missing.jsonl", strict=True)


def test_a_tear_inside_a_multibyte_character_costs_that_line_only(tmp_path: Path) -> None:
    p = tmp_path / "history.jsonl"
    data = (lines(GOOD[0]) + json.dumps({**GOOD[1], "key": "ключ"}, ensure_ascii=False)
            + "\n").encode()
    p.write_bytes(data[: data.rindex("ключ".encode()) + 1])
    got = iter_jsonl(p, strict=True)
    assert got.objects == [GOOD[0]] and got.torn == 2


@pytest.mark.parametrize("data", [
    b'{"a":1}\n{"b":2}\n',  # no blank line: decoded without splitting
    b'{"a":1}\n{"b":2}',  # no newline at the end, but whole
    b'\n{"a":1}\n\n  \n{"b":2}\n\n',  # blank lines are passed over
    b'{"a":1}\r\n{"b":2}\r\n\r\n',  # CRLF; a blank CRLF line
    b'{"a":18446744073709551616}\n{"b":-9223372036854775809}\n',  # beyond 64 bits
    b'{"a":NaN}\n{"b":"\\ud800"}\n{"c":1e400}\n',  # orjson refuses, json takes
    b'\xef\xbb\xbf{"a":1}\n{"b":2}\n',  # a byte-order mark
    b'{"a":1}\n{"b":2}\n{"c":',  # a torn tail
])
def test_jsonl_values_and_lines_are_the_standard_librarys(tmp_path: Path, data: bytes) -> None:
    """However a file is decoded (in one call, or line by line), each object and its line
    number are what ``json.loads`` of that line gives."""
    p = tmp_path / "x.jsonl"
    p.write_bytes(data)
    got = iter_jsonl(p, strict=True)
    want = [(k, json.loads(raw)) for k, raw in enumerate(data.split(b"\n"), start=1)
            if raw.strip() and k != got.torn]
    assert list(got.records) == want or repr(list(got.records)) == repr(want)  # NaN != NaN
    assert [type(v) for _, o in got.records for v in o.values()] == \
        [type(v) for _, o in want for v in o.values()]


def test_jsonl_a_line_of_two_objects_or_part_of_one_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    for data, line in ((b'{"a":1}\n{"b":2} {"c":3}\n', 2), (b'{"a":\n1}\n', 1),
                       (b'{"a":1}\n[1]\n', 2),
                       # two objects on one line and one over two: as many objects as
                       # lines, which reading the file as one array used to accept
                       (b'{"a":1},{"b":2}\n{"x":[1\n2]}\n', 1)):
        p.write_bytes(data)
        with pytest.raises(StoreError, match=rf"x.jsonl:{line}: "):
            iter_jsonl(p, strict=True)


def test_the_checker_reads_a_history_by_the_same_rule(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text(lines(GOOD[0], "{bad", GOOD[1]))
    with pytest.raises(HistoryError) as e:
        load_history(p)
    assert isinstance(e.value, StoreError) and str(e.value).startswith(f"{p}:2: not valid")


# --------------------------------------------------------------------------- is_run


def test_is_run_is_one_test(tmp_path: Path) -> None:
    assert not RunDir.is_run(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    assert not RunDir.is_run(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not RunDir.is_run(empty)
    for name in ("schedule.jsonl", "lab.log", "summary.json", "index.html"):
        (empty / name).write_text("")
    assert not RunDir.is_run(empty)  # side files alone make no run
    for name in ("results.json", "scenario.yaml", "history.jsonl"):
        d = tmp_path / name.replace(".", "-")
        d.mkdir()
        (d / name).write_text("")
        assert RunDir.is_run(d), name
    d = tmp_path / "a-dir-named-like-a-file"
    (d / "results.json").mkdir(parents=True)
    assert not RunDir.is_run(d)
    run = RunDir(tmp_path / "history-jsonl")
    assert run.missing("history.jsonl", "scenario.yaml") == ["scenario.yaml"]


# --------------------------------------------------------------------------- records


def experiment(tmp_path: Path, **kw: Any) -> Experiment:
    w = load_workload(ROOT / "workloads" / "register.yaml")
    f = load_faults(ROOT / "faults" / "isolate-leader.yaml")
    opts = RunOptions(nodes=3, time_limit=12.0, seed=7, concurrency=4, rate=50.0,
                      bugs=("stale-read",), out=tmp_path / "runs",
                      command=["raftlab", "run", "x"], **kw)
    return Experiment(w, f, opts)


def test_the_resolved_scenario_round_trips(tmp_path: Path) -> None:
    exp = experiment(tmp_path, replay_of="/somewhere/else")
    exp.write_scenario()
    r = RunDir(exp.dir).read_scenario()
    assert (r.system, r.nodes, r.seed, r.time_limit, r.concurrency, r.rate, r.bugs) == (
        "raftkv", 3, 7, 12.0, 4, 50.0, ("stale-read",))
    assert r.workload == exp.workload and r.faults_name == "isolate-leader"
    assert r.command == ("raftlab", "run", "x") and r.replay_of == "/somewhere/else"
    assert RunDir(exp.dir).scenario_dict()["workload"]["name"] == "register"


def test_an_old_scenario_file_still_loads(tmp_path: Path) -> None:
    """A run from before ``connections``, ``placement``, ``readers``, ``replay_of`` and
    ``command`` were written."""
    exp = experiment(tmp_path)
    exp.write_scenario()
    run = RunDir(exp.dir)
    doc = yaml.safe_load(run.scenario_path.read_text())
    for key in ("command", "version"):
        del doc[key]
    del doc["workload"]["connections"]
    del doc["workload"]["placement"]
    del doc["workload"]["readers"]
    run.scenario_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = run.read_scenario()
    assert r.workload.connections == "per-client" and r.command == () and r.replay_of is None
    assert r.workload.placement == "leader"  # its clients followed the leader
    assert r.workload.readers == 0  # it had none
    assert r == RunDir(exp.dir).read_scenario()


def test_results_keep_every_key_and_their_format(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.read_results() is None
    data = {"verdict": "invalid", "counts": {"ok": 3, "fail": 1}, "schedule_origin_s": 1.5,
            "from_the_future": {"nested": [1, 2]}, "path": Path("/x")}
    r = run.write_results(data)
    assert run.results_path.read_text() == json.dumps(data, indent=2, default=str)
    back = run.read_results()
    assert back is not None and back.data == {**data, "path": "/x"} and back == \
        type(back)({**r.data, "path": "/x"})
    assert (back.verdict, back.counts, back.schedule_origin_s, back.partial) == (
        "invalid", {"ok": 3, "fail": 1}, 1.5, False)


def test_unreadable_results_and_scenario_name_the_file_and_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.results_path.write_text('{\n  "verdict": "valid",\n  oops\n}')
    with pytest.raises(StoreError, match=r"results.json:3: not valid JSON"):
        run.read_results(strict=True)
    warnings: list[str] = []
    assert run.read_results(warnings=warnings) is None and "unreadable" in warnings[0]
    run.results_path.write_text("[1]")
    with pytest.raises(StoreError, match=r"results.json:1: expected a JSON object"):
        run.read_results(strict=True)
    run.scenario_path.write_text("workload:\n  model: register\n  keys: [1\n")
    with pytest.raises(StoreError, match=r"scenario.yaml:\d+: not valid YAML"):
        run.scenario_dict(strict=True)
    assert run.scenario_dict() == {}


# --------------------------------------------------------------------------- analyze


def tiny_run(d: Path, history: str) -> Path:
    d.mkdir()
    (d / "scenario.yaml").write_text(yaml.safe_dump(
        {"system": "raftkv", "workload": {"name": "register", "model": "register"},
         "faults": {"name": "none"}}))
    (d / "history.jsonl").write_text(history)
    return d


def test_analyze_of_a_corrupt_history_line_mid_file_exits_2_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_run(tmp_path / "corrupt", lines(GOOD[0], GOOD[1], '{"index": 2, "proc',
                                              GOOD[2], GOOD[3]))
    assert cli.main(["analyze", str(d)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"raftlab: {d / 'history.jsonl'}:3: not valid JSON ("), err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (d / "results.json").exists()


def test_analyze_forgives_a_torn_tail_and_notes_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_run(tmp_path / "torn", lines(*GOOD) + '{"index": 4, "proc')
    code = cli.main(["analyze", str(d)])
    assert code == ExitCode.UNKNOWN  # valid, but far too few operations to mean anything
    assert "Traceback" not in capsys.readouterr().err
    results = json.loads((d / "results.json").read_text())
    assert results["checker"]["stats"]["warnings"] == [
        f"{d / 'history.jsonl'}:5: ignored a torn last line"]


@pytest.mark.parametrize("name,text,where", [
    ("scenario.yaml", "workload: [unclosed\n", "scenario.yaml:2: not valid YAML"),
    ("scenario.yaml", "- just\n- a list\n", "scenario.yaml:1: expected a mapping"),
    ("scenario.yaml", "faults: {name: none}\n", "scenario.yaml: cannot tell the checker's"),
    ("results.json", '{"counts": {}\n', "results.json:2: not valid JSON"),
])
def test_analyze_of_an_unreadable_run_file_exits_2_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str,
        where: str) -> None:
    d = tiny_run(tmp_path / "bad", lines(*GOOD))
    (d / name).write_text(text)
    assert cli.main(["analyze", str(d)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err and err.count("\n") == 1, err


def test_analyze_of_a_directory_that_is_no_run_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["analyze", str(tmp_path)]) == ExitCode.BAD_INPUT
    assert "not a run directory" in capsys.readouterr().err
