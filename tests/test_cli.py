"""The ``raftlab`` command line itself: bad names refused while parsing (exit 2, one line,
the valid names listed, nothing started), checks across arguments, ``--version``, and
help a newcomer can act on for every subcommand and every argument."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cliout
import pytest
from cliout import cli

from lab.checker import MODELS
from lab.cli import build_parser, validate
from lab.exitcode import ExitCode
from lab.systems import SYSTEMS, spec


def one_line(err: str) -> str:
    line = cliout.one_line(err)
    assert line.startswith("raftlab: "), err
    return line


def test_unknown_bug_is_refused_before_anything_starts(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out"
    code, text, err = cli(capsys, "run", "--bug", "typo", "--out", str(out))
    assert code == ExitCode.BAD_INPUT and text == ""
    line = one_line(err)
    assert "--bug" in line and "'typo'" in line
    assert all(bug in line for bug in spec("raftkv").bugs), line
    assert not out.exists(), "bad input must not start a run"


def test_unknown_system_lists_the_systems(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--system", "paxos", "--out", str(out))
    assert code == 2
    line = one_line(err)
    assert "--system" in line and "'paxos'" in line
    assert all(s in line for s in SYSTEMS), line
    assert not out.exists()


def test_unknown_model_lists_the_models(tmp_path: Path, capsys: Any) -> None:
    history = tmp_path / "h.jsonl"
    history.write_text("")
    code, _, err = cli(capsys, "check", str(history), "--model", "paxos")
    assert code == 2
    line = one_line(err)
    assert "--model" in line and "unknown model 'paxos'" in line
    assert all(m in line for m in MODELS), line


def test_a_bug_on_a_system_without_seeded_bugs_is_bad_input(tmp_path: Path,
                                                             capsys: Any) -> None:
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--bug", "stale-read", "--system", "etcd",
                       "--out", str(out))
    assert code == 2
    assert "seeded bugs exist only in raftkv, not etcd" in one_line(err)
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--nodes", "0"], ["--nodes", "ten"],
                                  ["--time-limit", "0"], ["--concurrency", "0"],
                                  ["--rate", "-1"], ["--toxiproxy", "nowhere"]])
def test_bad_run_values_are_one_line_and_exit_2(tmp_path: Path, capsys: Any,
                                                argv: list[str]) -> None:
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", *argv, "--out", str(out))
    assert code == 2
    assert argv[0] in one_line(err)
    assert not out.exists()


def test_replay_with_seed_names_the_seed(tmp_path: Path, capsys: Any) -> None:
    code, _, err = cli(capsys, "run", "--replay", str(tmp_path), "--seed", "3")
    assert code == 2
    assert "cannot be combined with --seed (only --out and --toxiproxy)" in one_line(err)


def test_run_defaults_are_filled_in_after_the_checks() -> None:
    a = build_parser().parse_args(["run"])
    assert validate(a) is None
    assert (a.workload, a.faults, a.system, a.nodes, a.seed, a.bug) == (
        "workloads/register.yaml", "faults/mixed.yaml", "raftkv", 5, 0, [])
    assert a.time_limit is None and a.concurrency is None and a.rate is None


def test_version_comes_from_the_package(capsys: Any) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"raftlab {version('raftlab')}"


def test_usage_errors_are_one_line(capsys: Any) -> None:
    for argv in ([], ["frob"], ["analyze"], ["run", "--frob"]):
        code, _, err = cli(capsys, *argv)
        assert code == 2, argv
        assert "--help" in one_line(err)


def test_seeded_bugs_are_raftkvs_own() -> None:
    from nodes.raft import CORE_BUGS  # the tests may look inside nodes; lab never does

    assert set(spec("raftkv").bugs) == CORE_BUGS
    assert spec("etcd").bugs == ()


def test_toxiproxy_takes_toxiproxy_servers_own_flags() -> None:
    a = build_parser().parse_args(["toxiproxy", "-host", "0.0.0.0", "-port=9000",
                                   "-proxy-metrics"])
    assert (a.host, a.port, a.proxy_metrics, a.config) == ("0.0.0.0", 9000, True, None)
    a = build_parser().parse_args(["toxiproxy", "--host", "::1"])
    assert (a.host, a.port) == ("::1", 8474)


# --------------------------------------------------------------------------- help


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_has_help(capsys: Any, name: str) -> None:
    code, out, err = cli(capsys, name, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: raftlab {name}")
    assert _subcommands()[name].description, name


def test_the_commands_that_give_verdicts_explain_their_exit_codes() -> None:
    commands = _subcommands()
    for name in ("run", "analyze", "check", "nightly", "matrix", "shrink", "validate"):
        epilog = commands[name].epilog or ""
        assert "exit codes" in epilog and "  2  " in epilog, name


def test_every_argument_has_help() -> None:
    missing = []
    for p in _parsers(build_parser()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{p.prog} {c.dest}" for c in action._choices_actions
                            if not c.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{p.prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


# --------------------------------------------------------------------------- validate

ROOT = Path(__file__).resolve().parent.parent


def test_validate_says_ok_for_every_shipped_file(capsys: Any, monkeypatch: Any,
                                                   etcd_installed: None) -> None:
    monkeypatch.chdir(ROOT)
    files = [str(p.relative_to(ROOT)) for folder in ("workloads", "faults", "lab/suites")
             for p in sorted((ROOT / folder).glob("*.yaml"))]
    code, out, err = cli(capsys, "validate", *files)
    assert (code, err) == (ExitCode.VALID, "")
    lines = out.splitlines()
    assert [line.split(": ok (")[0] for line in lines] == files
    assert "workloads/register.yaml: ok (workload 'register', model cas-register)" in lines
    assert "faults/none.yaml: ok (fault scenario 'none', 0 steps, random: no)" in lines
    assert "faults/figure-8.yaml: ok (fault scenario 'figure-8', 12 steps, random: no)" in lines
    assert "faults/mixed.yaml: ok (fault scenario 'mixed', 0 steps, random: yes)" in lines
    assert any(line.startswith("lab/suites/quick.yaml: ok (suite 'quick', ") for line in lines)


def test_validate_takes_built_in_names(capsys: Any) -> None:
    code, out, _ = cli(capsys, "validate", "register", "kill-leader", "quick")
    assert code == ExitCode.VALID
    assert [line.split(": ok (")[1].split()[0] for line in out.splitlines()] == [
        "workload", "fault", "suite"]


#: Files with one mistake each, as ``raftlab validate`` and ``raftlab run`` both refuse
#: them: the file's text and the error's ``LINE: message``.
BAD_FAULTS = {
    "typo": ("name: x\ndescription: y\nschedule:\n  - {at: 1s, action: kil}\n",
             "4: unknown action 'kil'"),
    "late": ("name: x\ndescription: y\ntime_limit: 10s\nschedule:\n  - {at: 11s, action: kill}\n",
             "5: step starts at 11s, past the time limit of 10s"),
    "n7": ("name: x\ndescription: y\nschedule:\n  - {at: 1s, action: kill, target: n7}\n",
           "4: target names n7, but the cluster has only 5 members (n1..n5)"),
    "timing": ("name: x\ndescription: y\n\ntiming: {election: 100ms}\n",
               "4: timing: election timeout (100 ms) must be at least 5 x heartbeat"),
    "not a mapping": ("- kill\n", "1: a "),
}


@pytest.mark.parametrize("name", sorted(BAD_FAULTS))
def test_validate_refuses_what_run_refuses_with_the_same_line(tmp_path: Path, capsys: Any,
                                                              name: str,
                                                              monkeypatch: Any) -> None:
    monkeypatch.chdir(ROOT)
    text, expected = BAD_FAULTS[name]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, out, err = cli(capsys, "validate", "workloads/register.yaml", str(bad))
    assert code == ExitCode.BAD_INPUT
    assert out == "workloads/register.yaml: ok (workload 'register', model cas-register)\n"
    line = one_line(err)
    assert line.startswith(f"raftlab: {bad}:{expected}"), line
    if name != "not a mapping":  # run reads it as a fault scenario: its own words
        run_code, _, run_err = cli(capsys, "run", "workloads/register.yaml", str(bad),
                                   "--out", str(tmp_path / "out"))
        assert (run_code, one_line(run_err)) == (ExitCode.BAD_INPUT, line)
        assert not (tmp_path / "out").exists()


def test_validate_checks_against_the_nodes_and_time_limit_given(tmp_path: Path,
                                                                capsys: Any) -> None:
    f = tmp_path / "f.yaml"
    f.write_text("name: x\ndescription: y\nschedule:\n  - {at: 20s, action: kill, target: n4}\n")
    assert cli(capsys, "validate", str(f))[0] == ExitCode.VALID
    code, _, err = cli(capsys, "validate", str(f), "--nodes", "3")
    assert code == ExitCode.BAD_INPUT and "target names n4" in one_line(err)
    code, _, err = cli(capsys, "validate", str(f), "--time-limit", "15")
    assert code == ExitCode.BAD_INPUT
    assert one_line(err) == (f"raftlab: {f}:4: step starts at 20s, past the time limit of "
                             "15s")


def test_validate_recognises_a_file_by_its_keys(tmp_path: Path, capsys: Any) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("name: w\ndescription: d\nclientz: 3\nclients: 2\n")
    code, _, err = cli(capsys, "validate", str(w))
    assert code == ExitCode.BAD_INPUT
    assert one_line(err).startswith(f"raftlab: {w}:3: unknown key 'clientz' in a workload")
    s = tmp_path / "s.yaml"
    s.write_text("name: s\ndescription: d\nworkloads: [register]\n")
    code, _, err = cli(capsys, "validate", str(s))
    assert code == ExitCode.BAD_INPUT and "a suite with 'workloads' needs 'faults'" in err


def test_validate_checks_the_systems_support_of_the_model(tmp_path: Path, capsys: Any,
                                                          monkeypatch: Any) -> None:
    import dataclasses

    from lab import systems

    monkeypatch.chdir(ROOT)

    def no_bank(model: str | None) -> str | None:
        return "--system etcd: no client driver for model 'bank'" if model == "bank" else None

    monkeypatch.setitem(systems.REGISTRY, "etcd",
                        dataclasses.replace(spec("etcd"), problem=no_bank))
    code, out, err = cli(capsys, "validate", "--system", "etcd", "workloads/bank.yaml",
                         "workloads/set.yaml")
    assert code == ExitCode.BAD_INPUT
    assert one_line(err) == ("raftlab: workloads/bank.yaml:5: --system etcd: no client "
                             "driver for model 'bank'")
    assert out == "workloads/set.yaml: ok (workload 'set', model set)\n"
