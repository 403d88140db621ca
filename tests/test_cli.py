"""Every subcommand has working --help, and user errors come out as one clear line, not a traceback."""

from __future__ import annotations

import pytest

from thinkctl.cli import _command_modules, build_parser, main


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for mod in _command_modules():
        assert mod.NAME in out


@pytest.mark.parametrize("name", [m.NAME for m in _command_modules()])
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--help"])
    assert exc.value.code == 0
    assert "usage: thinkctl " + name in capsys.readouterr().out


def test_unknown_task_is_a_one_line_error(tmp_path, capsys):
    rc = main(["collect", "--task", "no-such-task", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown task 'no-such-task'" in err and "arith" in err and "Traceback" not in err


def test_missing_bundle_is_a_one_line_error(tmp_path, capsys):
    rc = main(["calibrate", "--bundle", str(tmp_path)])
    assert rc == 2
    assert "thinkctl train" in capsys.readouterr().err
