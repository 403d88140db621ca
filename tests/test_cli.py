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


def test_demo_fresh_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "thesis"
    (out / "src").mkdir(parents=True)
    (out / "thesis.txt").write_text("years of work")
    (out / "src" / "code.py").write_text("print(1)")
    rc = main(["demo", "--out", str(out), "--fresh", "--n", "24", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "did not write" in err and "thesis.txt" in err and "Traceback" not in err
    assert (out / "thesis.txt").read_text() == "years of work" and (out / "src" / "code.py").is_file()


def test_evaluate_refuses_strategies_that_need_a_bundle_before_any_work(tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["evaluate", "--task", "arith", "--seed", "1", "--n", "2", "--json", str(out), "--strategies",
               "fixed@32,serial", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "serial" in err and "--bundle" in err and not out.exists()
    assert not out.with_suffix(".rows.jsonl").exists()  # nothing was generated
