"""``raftlab check``: exit codes 0/1/2/3 per file and the worst over several, one-line
``FILE:LINE`` errors for bad input, and ``--json`` output that parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.checker.cli import main, worst
from lab.history import History


def write(path: Path, events: list[Any], tail: str = "\n") -> Path:
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in events) + tail)
    return path


def ev(i: int, p: Any, t: str, f: str, v: Any = None, key: Any = None) -> dict[str, Any]:
    return {"index": i, "time": None, "process": p, "type": t, "f": f, "key": key, "value": v}


VALID = [ev(0, 0, "invoke", "write", 1), ev(1, 0, "ok", "write", 1),
         ev(2, 1, "invoke", "read"), ev(3, 1, "ok", "read", 1)]
INVALID = [ev(0, 0, "invoke", "write", 1), ev(1, 0, "ok", "write", 1),
           ev(2, 0, "invoke", "write", 2), ev(3, 0, "ok", "write", 2),
           ev(4, 1, "invoke", "read"), ev(5, 1, "ok", "read", 1)]
UNKNOWN = [ev(0, 0, "invoke", "write", 1), ev(1, 0, "fail", "write", 1)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "valid": write(tmp_path / "valid.jsonl", VALID),
        "invalid": write(tmp_path / "invalid.jsonl", INVALID),
        "unknown": write(tmp_path / "unknown.jsonl", UNKNOWN),
        "malformed": write(tmp_path / "bad.jsonl", [VALID[0], "{not json", VALID[1]]),
    }


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_valid_invalid_unknown_exit_codes(files: dict[str, Path], capsys: Any) -> None:
    code, out, _ = run(capsys, str(files["valid"]), "--model", "cas-register")
    assert code == 0 and "VALID" in out
    code, out, _ = run(capsys, str(files["invalid"]), "--model", "register")
    assert code == 1 and "INVALID" in out and "certainly overwritten before it began" in out
    code, out, _ = run(capsys, str(files["unknown"]), "--model", "cas-register")
    assert code == 3 and "UNKNOWN" in out


def test_malformed_line_is_bad_input_with_file_and_line(files: dict[str, Path],
                                                        capsys: Any) -> None:
    code, _, err = run(capsys, str(files["malformed"]), "--model", "cas-register")
    assert code == 2
    assert err.strip() == f"{files['malformed']}:2: not valid JSON (Expecting property name "\
                          "enclosed in double quotes)"
    assert "Traceback" not in err


def test_broken_pairing_and_bad_fields_name_the_line(tmp_path: Path, capsys: Any) -> None:
    cases = {
        "orphan.jsonl": ([ev(0, 0, "ok", "write", 1)], ":1: ok of write by process 0 has no "
                                                        "open invoke"),
        "type.jsonl": ([VALID[0], ev(1, 0, "done", "write", 1)], ":2: 'type' must be one of"),
        "cas.jsonl": ([ev(0, 0, "invoke", "cas", 3), ev(1, 0, "ok", "cas", 3)],
                      ":1: cas value must be [expected, new]"),
        "array.jsonl": (["[1, 2]"], ":1: expected a JSON object"),
    }
    for name, (events, msg) in cases.items():
        code, _, err = run(capsys, str(write(tmp_path / name, events)), "--model", "register")
        assert code == 2 and msg in err, err


def test_missing_file_and_unknown_model_are_bad_input(files: dict[str, Path],
                                                      capsys: Any) -> None:
    code, _, err = run(capsys, "/nonexistent/h.jsonl", "--model", "register")
    assert code == 2 and err.startswith("/nonexistent/h.jsonl: cannot read")
    code, _, err = run(capsys, str(files["valid"]), "--model", "paxos")
    assert code == 2 and "unknown model 'paxos'" in err
    code, _, err = run(capsys, str(files["valid"]), "--model", "register", "--initial", "{")
    assert code == 2 and "--initial: must be JSON" in err and len(err.splitlines()) == 1
    code, _, _ = run(capsys, "--model", "register")
    assert code == 2


def test_several_files_exit_with_the_worst(files: dict[str, Path], capsys: Any) -> None:
    def code_of(*names: str) -> int:
        return run(capsys, *(str(files[n]) for n in names), "--model", "register")[0]

    assert code_of("valid", "unknown") == 3
    assert code_of("unknown", "invalid", "valid") == 1
    assert code_of("invalid", "malformed", "valid") == 2
    assert code_of("valid", "valid") == 0
    assert worst([0, 3, 1, 2]) == 2 and worst([]) == 0


def test_json_output_is_one_object_per_file(files: dict[str, Path], capsys: Any) -> None:
    code, out, _ = run(capsys, str(files["valid"]), str(files["invalid"]),
                       str(files["malformed"]), "--model", "register", "--json")
    assert code == 2
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["verdict"] for o in objs] == ["valid", "invalid", "bad-input"]
    bad = objs[1]["anomalies"][0]
    assert bad["type"] == "nonlinearizable" and bad["ops"][0]["index"] == 4
    assert objs[0]["stats"]["by_type"]["ok"] == 2 and objs[0]["per_key"] == {"null": "valid"}


def test_initial_value_and_options_are_json(tmp_path: Path, capsys: Any) -> None:
    h = write(tmp_path / "c.jsonl", [ev(0, 0, "invoke", "read"), ev(1, 0, "ok", "read", 0)])
    assert run(capsys, str(h), "--model", "register")[0] == 1
    assert run(capsys, str(h), "--model", "register", "--initial", "0")[0] == 0
    b = write(tmp_path / "b.jsonl", [ev(0, 0, "invoke", "read"),
                                     ev(1, 0, "ok", "read", {"a": 3, "b": 7})])
    assert run(capsys, str(b), "--model", "bank")[0] == 3
    assert run(capsys, str(b), "--model", "bank", "--options", '{"total": 10}')[0] == 0


def test_torn_last_line_of_a_killed_run_is_ignored(tmp_path: Path, capsys: Any) -> None:
    h = write(tmp_path / "torn.jsonl", [*VALID, '{"index": 4, "pro'], tail="")
    code, out, _ = run(capsys, str(h), "--model", "register")
    assert code == 0 and "VALID" in out


def test_time_limit_gives_exit_code_3(tmp_path: Path, capsys: Any) -> None:
    n = 14
    events = []
    for i in range(n):
        events += [ev(0, i, "invoke", "write", i), ev(0, n + i, "invoke", "read")]
    for i in range(n):
        events += [ev(0, i, "ok", "write", i), ev(0, n + i, "ok", "read", i)]
    events += [ev(0, 0, "invoke", "read"), ev(0, 0, "ok", "read", 0),
               ev(0, 0, "invoke", "read"), ev(0, 0, "ok", "read", 1)]
    h = write(tmp_path / "hard.jsonl", events)
    code, out, _ = run(capsys, str(h), "--model", "register", "--time-limit", "0.05")
    assert code == 3 and "time limit" in out


def test_runs_as_a_program_without_traceback(files: dict[str, Path]) -> None:
    p = subprocess.run([sys.executable, "-m", "lab.checker.cli", str(files["malformed"]),
                        str(files["valid"]), "--model", "register"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{files['malformed']}:2:" in p.stderr and "VALID" in p.stdout


def test_reads_histories_written_by_the_lab(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "history.jsonl"
    h = History(path)
    h.append(0, "invoke", "write", "k1", 3)
    h.append("nemesis", "info", "start-partition", value={"isolate": "n1"})
    h.append(0, "ok", "write", "k1", 3, node="n1")
    h.append(1, "invoke", "read", "k1")
    h.append(1, "info", "read", "k1", error="timeout")
    h.append(2, "invoke", "read", "k1")
    h.append(2, "ok", "read", "k1", 3, node="n2")
    h.append(3, "invoke", "write", "k1", 4)  # the run was killed here
    h.close()
    code, out, _ = run(capsys, str(path), "--model", "register", "--json")
    res = json.loads(out)
    assert code == 0 and res["verdict"] == "valid"
    assert res["stats"]["nemesis_events"] == 1 and res["stats"]["by_type"]["pending"] == 1
