"""``thinkctl difficulty-real`` on a small synthetic MATH-like file: JSON layout, baseline comparison, data lookup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from thinkctl.cli import build_parser, main

SUBJECTS = ["Algebra", "Geometry", "Number Theory"]
FILLER = "please note that the following question is part of a longer exam on many topics"


def _write_math_like(path: Path, n: int = 240, seed: int = 0) -> None:
    """Level = operand digit count (1..5); random filler makes length a weak cue; a few unusable rows."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(n):
            level = int(rng.integers(1, 6))
            a, b = (int(rng.integers(10 ** (level - 1), 10 ** level)) for _ in range(2))
            words = FILLER.split()[: int(rng.integers(0, 14))]
            row = {"source": "synthetic", "dataset": "MATH-like", "id": i,
                   "question": f"{' '.join(words)} Compute ${a} \\times {b}$.", "answer": str(a * b),
                   "difficulty": {"kind": "MATH level (1-5)", "value": level},
                   "meta": {"subject": SUBJECTS[i % 3]}}
            fh.write(json.dumps(row) + "\n")
        fh.write(json.dumps({"id": "x", "question": "no level", "difficulty": None}) + "\n")


ARGS = ["--grid", "quick", "--cv-folds", "2", "--n-bootstrap", "60", "--test-size", "0.4"]


def test_runs_writes_json_and_beats_length(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    _write_math_like(data / "problems" / "math_test4500_no_math500.jsonl")
    out = tmp_path / "res.json"
    assert main(["difficulty-real", "--data", str(data), *ARGS, "--json", str(out), "--save",
                 str(tmp_path / "model")]) == 0
    r = json.loads(out.read_text())
    assert r["data"]["n_problems"] == 240 and r["data"]["n_skipped"] == 1
    assert r["data"]["n_train"] + r["data"]["n_test"] == 240
    assert set(r["test"]) == {"length_chars", "text+subject", "text_only", "subject_only", "length_lgbm"}
    for name, m in r["test"].items():
        for metric in ("auroc_hard_vs_easy", "spearman_level"):
            lo, hi = m[metric]["ci95"]
            assert lo <= m[metric]["value"] <= hi, (name, metric)
    main_auc = r["test"]["text+subject"]["auroc_hard_vs_easy"]["value"]
    assert main_auc > 0.9 > r["test"]["length_chars"]["auroc_hard_vs_easy"]["value"]
    assert r["beats_baseline"] is True
    assert r["vs_baseline"]["text+subject"]["auroc_diff"]["ci95"][0] > 0
    assert set(r["cv"]) == {"text+subject", "text_only", "subject_only", "length_lgbm"}
    assert r["cv"]["text+subject"]["selected"] in r["config"]["grid_params"]
    assert (tmp_path / "model" / "difficulty_model.json").is_file()
    printed = capsys.readouterr().out
    assert "beats the baseline" in printed and "wrote" in printed


def test_data_found_through_env_and_file_path(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "shared"
    f = data / "problems" / "math_test4500_no_math500.jsonl"
    _write_math_like(f, n=120)
    monkeypatch.setenv("THINKCTL_DATA", str(data))
    out = tmp_path / "a.json"
    assert main(["difficulty-real", "--cv-folds", "0", "--n-bootstrap", "20", "--json", str(out)]) == 0
    assert Path(json.loads(out.read_text())["data"]["file"]) == f.resolve()
    assert json.loads(out.read_text())["cv"] == {}
    monkeypatch.delenv("THINKCTL_DATA")
    assert main(["difficulty-real", "--data", str(f), "--cv-folds", "0", "--n-bootstrap", "20",
                 "--json", str(out)]) == 0


def test_missing_data_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("THINKCTL_DATA", str(tmp_path / "nowhere"))
    assert main(["difficulty-real", "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "MATH problems not found" in err and "--data" in err and "THINKCTL_DATA" in err
    assert not (tmp_path / "x.json").exists()


def test_bad_options_are_refused(tmp_path: Path, capsys) -> None:
    _write_math_like(tmp_path / "m.jsonl", n=60)
    assert main(["difficulty-real", "--data", str(tmp_path / "m.jsonl"), "--easy-level", "4", "--json",
                 str(tmp_path / "x.json")]) == 2
    assert "--easy-level" in capsys.readouterr().err
    assert main(["difficulty-real", "--data", str(tmp_path / "m.jsonl"), "--cv-folds", "1", "--json",
                 str(tmp_path / "x.json")]) == 2


def test_command_is_discovered() -> None:
    parser = build_parser()
    args = parser.parse_args(["difficulty-real", "--json", "o.json"])
    assert args.command == "difficulty-real" and args.grid == "default" and args.cv_folds == 5
