"""``thinkctl replay`` and :mod:`thinkctl.eval.replay` on small synthetic replay files written in tmp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thinkctl.cli import main
from thinkctl.eval.replay import POLICIES, ReplayConfig, load_replay, run_replay
from thinkctl.registry import UnknownNameError

from benchmark_loader import load_benchmark

ENTRY_KEYS = {"accuracy", "tokens_mean", "samples_mean", "n", "ci95"}


def _sample(answer: str | None, correct: bool, score: float | None = None, **lengths: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"answer": answer, "correct": correct}
    s.update(lengths or {"n_chars": 80, "n_words": 15, "n_tokens_cl100k": 20})
    if score is not None:
        s["score"] = score
    return s


def _write(path: Path, problems: list[list[dict[str, Any]]]) -> Path:
    with path.open("w") as fh:
        for i, samples in enumerate(problems):
            fh.write(json.dumps({"source": "synthetic", "dataset": "toy", "model": "none", "setting": "test",
                                 "correct_rule": "exact", "qid": i, "question": f"q{i}", "gt": "1",
                                 "samples": samples}) + "\n")
    return path


def _unanimous(n: int = 20) -> list[dict[str, Any]]:
    return [_sample("1", True) for _ in range(n)]


def _split(n: int = 20) -> list[dict[str, Any]]:
    """Half '1' (right), half '2' (wrong): the winner depends on the order (ties go to the first seen)."""
    return [_sample("1" if i % 2 else "2", bool(i % 2)) for i in range(n)]


def _run(path: Path, policies: str = "all", **cfg: Any) -> dict[str, Any]:
    return run_replay(load_replay(path), policies, ReplayConfig(**{"permutations": 100, "n_bootstrap": 200, **cfg}))


def test_unanimous_problem_stops_early_and_sc_uses_all(tmp_path: Path) -> None:
    res = _run(_write(tmp_path / "u.jsonl", [_unanimous(20)]), "sc,esc,asc,adaptive")["strategies"]
    assert res["sc"]["samples_mean"] == 20.0 and res["sc"]["tokens_mean"] == 20 * 20
    assert res["esc"]["samples_mean"] == 5.0  # first window of 5 is unanimous
    assert res["asc"]["samples_mean"] == 4.0  # Beta(5, 1): P(p > 1/2) = 0.969 >= 0.95
    assert 2 <= res["adaptive"]["samples_mean"] <= 4
    assert res["adaptive"]["tokens_mean"] == 20 * res["adaptive"]["samples_mean"]
    for e in res.values():
        assert e["accuracy"] == 1.0


def test_split_vote_consumes_more_than_agreement(tmp_path: Path) -> None:
    easy = _run(_write(tmp_path / "u.jsonl", [_unanimous(20)]), "esc,asc,adaptive")["strategies"]
    hard = _run(_write(tmp_path / "s.jsonl", [_split(20)]), "sc,esc,asc,adaptive")["strategies"]
    for k in ("esc", "asc", "adaptive"):
        assert hard[k]["samples_mean"] > easy[k]["samples_mean"] + 5, k
    # a 10-10 split: sc is right exactly when '1' comes first; averaged over orders, about half
    assert 0.35 < hard["sc"]["accuracy"] < 0.65
    assert hard["sc"]["samples_mean"] == 20.0


def test_permutation_average_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [_split(12), _unanimous(12), _split(9)])
    a, b = _run(path, seed=3), _run(path, seed=3)
    assert a == b
    c = _run(path, seed=4)
    assert a["strategies"]["sc"]["accuracy"] != c["strategies"]["sc"]["accuracy"]


def test_json_schema_is_exactly_the_design(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [_split(10), _unanimous(10)])
    out = tmp_path / "out" / "res.json"
    assert main(["replay", "--data", str(path), "--policy", "sc,adaptive,esc", "--json", str(out),
                 "--permutations", "100", "--no-progress", "--n-bootstrap", "200"]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"strategies", "config"}
    assert list(res["strategies"]) == ["sc", "adaptive", "esc"]
    for e in res["strategies"].values():
        assert ENTRY_KEYS <= set(e)
        assert isinstance(e["accuracy"], float) and isinstance(e["tokens_mean"], float)
        assert isinstance(e["samples_mean"], float) and isinstance(e["n"], int) and e["n"] == 2
        lo, hi = e["ci95"]
        assert isinstance(lo, float) and lo <= e["accuracy"] <= hi
    cfg = res["config"]
    assert cfg["replay"]["permutations"] == 100 and cfg["replay"]["esc_window"] == 5
    assert cfg["replay"]["asc_threshold"] == 0.95
    assert "bootstrap" in cfg["ci95_method"]
    assert cfg["tokens"]["sources"] == {"n_tokens_cl100k": 20}


def test_cli_prints_table(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "m.jsonl", [_unanimous(8)])
    assert main(["replay", "--data", str(path), "--policy", "sc,asc", "--json", str(tmp_path / "r.json"),
                 "--no-progress", "--n-bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "asc" in out and "4.00" in out and "8.00" in out


def test_unknown_policy_lists_known_ones(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "u.jsonl", [_unanimous(5)])
    with pytest.raises(UnknownNameError) as err:
        _run(path, "sc,majority")
    for name in POLICIES.names():
        assert name in str(err.value)
    assert main(["replay", "--data", str(path), "--policy", "nope", "--json", str(tmp_path / "r.json")]) == 2
    assert "adaptive" in capsys.readouterr().err


@pytest.mark.parametrize("line3,match", [
    ("{not json", r":3: not valid JSON"),
    (json.dumps({"qid": 2, "samples": [{"answer": "1"}]}), r":3: sample 0 lacks 'correct'"),
    (json.dumps({"qid": 2, "samples": []}), r":3: field 'samples' must be a non-empty list"),
    (json.dumps({"qid": 2, "samples": [{"answer": "1", "correct": "yes"}]}), r":3: sample 0 has correct='yes'"),
])
def test_bad_file_error_names_the_line(tmp_path: Path, line3: str, match: str) -> None:
    good = json.dumps({"qid": 0, "samples": _unanimous(3)})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good, good, line3]) + "\n")
    with pytest.raises(ValueError, match=match):
        load_replay(path)


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_replay(tmp_path / "nope.jsonl")
    assert main(["replay", "--data", str(tmp_path / "nope.jsonl"), "--json", str(tmp_path / "r.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_correctness_is_looked_up_by_answer_and_null_abstains(tmp_path: Path) -> None:
    # three nulls (flagged wrong) and two '7' (right): nulls do not vote, so every policy answers '7'
    samples = [_sample(None, False)] * 3 + [_sample("7", True)] * 2
    res = _run(_write(tmp_path / "n.jsonl", [samples]), "sc,esc,asc,adaptive")["strategies"]
    assert res["sc"]["accuracy"] == 1.0
    # all nulls: no answer at all is wrong
    res = _run(_write(tmp_path / "z.jsonl", [[_sample(None, False)] * 4]), "sc")["strategies"]
    assert res["sc"]["accuracy"] == 0.0


def test_token_fallbacks_are_named_and_missing_lengths_give_null(tmp_path: Path) -> None:
    words = [_sample("1", True, n_words=30) for _ in range(6)]
    res = _run(_write(tmp_path / "w.jsonl", [words]), "sc")
    assert res["strategies"]["sc"]["tokens_mean"] == pytest.approx(6 * 30 * 4 / 3)
    assert res["config"]["tokens"]["sources"] == {"n_words*4/3": 6}
    bare = [{"answer": "1", "correct": True} for _ in range(6)]
    res = _run(_write(tmp_path / "b.jsonl", [bare]), "sc,adaptive")
    assert res["strategies"]["sc"]["tokens_mean"] is None
    assert "null" in res["config"]["tokens"]["note"]


def test_scores_drive_weighted_and_best_of(tmp_path: Path) -> None:
    # the wrong answer '2' has the majority (3 of 5) but low scores; the right '1' has the best score
    samples = ([_sample("2", False, score=-2.0) for _ in range(3)]
               + [_sample("1", True, score=3.0), _sample("1", True, score=2.5)])
    res = _run(_write(tmp_path / "s.jsonl", [samples]), "sc,weighted,best_of")
    st = res["strategies"]
    assert st["sc"]["accuracy"] == 0.0
    assert st["best_of"]["accuracy"] == 1.0
    assert st["weighted"]["accuracy"] == 1.0  # sigmoid weights: 2*0.94 > 3*0.12
    assert any("sigmoid" in n for n in st["weighted"]["notes"])


def test_best_of_without_scores_is_skipped_or_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.jsonl", [_unanimous(6)])
    res = _run(path, "all")
    assert "best_of" not in res["strategies"] and "score" in res["config"]["skipped"]["best_of"]
    assert "falls back to sc" in res["strategies"]["weighted"]["notes"][0]
    assert res["strategies"]["weighted"]["samples_mean"] == 6.0
    with pytest.raises(ValueError, match="'score'"):
        _run(path, "best_of")


def test_adaptive_matches_sc_when_the_outcome_is_decided(tmp_path: Path) -> None:
    """Mixed synthetic problems: adaptive never loses more than alpha-level accuracy and saves samples."""
    rng = np.random.default_rng(0)
    problems = []
    for _ in range(30):
        p_right = rng.uniform(0.3, 1.0)
        problems.append([_sample("1", True) if rng.random() < p_right else
                         _sample(str(int(rng.integers(2, 5))), False) for _ in range(16)])
    st = _run(_write(tmp_path / "mix.jsonl", problems), "sc,esc,asc,adaptive")["strategies"]
    assert st["adaptive"]["accuracy"] >= st["sc"]["accuracy"] - 0.05
    assert st["adaptive"]["samples_mean"] < 0.75 * st["sc"]["samples_mean"]
    assert "target_check" not in st["adaptive"]  # replay reports figures; the target lives in benchmarks/
    check = load_benchmark("replay_target").target_check(st)
    assert check is not None and check["tolerance"] == 0.005
    assert check["accuracy_within_tolerance_of_sc"] == (st["adaptive"]["accuracy_delta_vs_sc"] >= -0.005)
    assert check["fewer_samples_than_esc"] == (st["adaptive"]["samples_mean"] < st["esc"]["samples_mean"])
    assert set(check) == {"accuracy_within_tolerance_of_sc", "tolerance", "fewer_samples_than_esc",
                          "fewer_samples_than_asc"}


def test_config_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="permutations"):
        ReplayConfig(permutations=0)
    with pytest.raises(ValueError, match="threshold"):
        ReplayConfig(asc_threshold=1.2)
    with pytest.raises(ValueError, match="score_transform"):
        ReplayConfig(score_transform="softmax")
