"""The command line: every registered command has --help; errors are one line, exit code non-zero."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dlstudy.cli import COMMANDS, build_parser, main


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("datasets", "report"):
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name, capsys):
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert name in choices, f"command {name} is registered but its module failed to load"
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: dlstudy " + name in capsys.readouterr().out


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "dlstudy", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("dlstudy ")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2


def test_missing_dataset_is_one_error_and_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["svm", "--data", "mnist", "--data-root", str(tmp_path / "nowhere"), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "dataset 'mnist' not found" in err and str(tmp_path / "nowhere") in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_unknown_config_key_lists_valid_keys(capsys):
    assert main(["train", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['epoch']" in err and "'epochs'" in err
