"""A rows file has one writer at a time and is never resumed under other settings."""

import json

import pytest

from thinkctl.cli import main
from thinkctl.eval.rowsfile import RowsInUseError, guard_rows


def test_one_writer_at_a_time(tmp_path):
    rows = tmp_path / "r.jsonl"
    with guard_rows(rows, {"seed": 1}):
        with pytest.raises(RowsInUseError, match="another process"):
            with guard_rows(rows, {"seed": 1}):
                pass
    with guard_rows(rows, {"seed": 1}):  # released
        pass


def test_settings_are_recorded_and_checked(tmp_path):
    rows = tmp_path / "r.jsonl"
    with guard_rows(rows, {"level": 1, "seed": 3}):
        rows.write_text(json.dumps({"problem_id": "a", "strategy": "fixed@64"}) + "\n")
    with guard_rows(rows, {"level": 1, "seed": 3}):  # same settings: resume
        pass
    with pytest.raises(ValueError, match=r"level: 1 -> 6"):
        with guard_rows(rows, {"level": 6, "seed": 3}):
            pass
    (tmp_path / "r.jsonl.config.json").unlink()
    with pytest.raises(ValueError, match="no record of the settings"):
        with guard_rows(rows, {"level": 1, "seed": 3}):
            pass
    rows.unlink()  # no rows left: new settings are simply recorded
    with guard_rows(rows, {"level": 6, "seed": 3}):
        pass
    assert json.loads((tmp_path / "r.jsonl.config.json").read_text())["level"] == 6


def test_evaluate_refuses_to_resume_another_level(tmp_path, capsys):
    out = tmp_path / "e.json"
    base = ["evaluate", "--task", "arith", "--seed", "4", "--n", "2", "--json", str(out), "--strategies", "fixed@32",
            "--no-progress"]
    assert main(base + ["--level", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--level", "6"]) == 2
    assert "level: 1 -> 6" in capsys.readouterr().err
    assert main(base + ["--level", "1"]) == 0  # the same settings resume
