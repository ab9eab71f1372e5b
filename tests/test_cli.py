"""The ``raftlab`` command line itself: bad names refused while parsing (exit 2, one line,
the valid names listed, nothing started), checks across arguments, ``--version``, and
help a newcomer can act on for every subcommand and every argument."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from lab.checker import MODELS
from lab.cli import build_parser, main, validate
from lab.exitcode import ExitCode
from lab.systems import SYSTEMS, spec


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("raftlab: "), err
    return lines[0]


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
    for name in ("run", "analyze", "check", "nightly", "matrix", "shrink"):
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
