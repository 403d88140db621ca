"""Readers of recorded real-model outputs: the shared replay/steps files, and small hand-written (malformed) files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thinkctl.registry import UnknownNameError
from thinkctl.traces import read_recorded, read_replay, read_steps, recorded_files
from thinkctl.traces.readers import STEPS_CHECKPOINT_TARGET


# the data directory ($THINKCTL_DATA) with replay/ and steps/; the test is skipped without it (see tests/conftest.py)
needs_data = pytest.mark.needs_data("replay", "steps")


def _raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the recorded files --------------------------------------------------------------------------------------------

@needs_data
def test_every_shared_file_reads_and_matches_its_raw_rows():
    files = recorded_files()
    assert {f.parent.name for f in files} == {"replay", "steps"} and len(files) >= 6
    for f in files:
        rec = read_recorded(f)
        raw = _raw(f)
        assert rec.kind == f.parent.name
        if rec.kind == "replay":
            assert len(rec.rows) == sum(len(r["samples"]) for r in raw)
            assert rec.problem_ids() == [str(r["qid"]) for r in raw]
            flags = [s["correct"] for r in raw for s in r["samples"]]
        else:
            assert len(rec.rows) == len(raw)
            flags = [r["answer_correct"] for r in raw]
        sa = rec.sample_arrays()
        assert sa.X.shape == (len(rec.rows), 0)
        assert sa.y.tolist() == flags
        assert sa.groups.tolist() == [r["problem_id"] for r in rec.rows]


@needs_data
def test_replay_tokens_levels_and_known_figures(data_dir):
    qwen = read_replay(data_dir / "replay" / "qwen25math_math_cot_100x8.jsonl")
    raw = _raw(qwen.path)
    assert [r["n_generated"] for r in qwen.rows[:8]] == [float(s["n_tokens_cl100k"]) for s in raw[0]["samples"]]
    assert qwen.meta["token_sources"] == {"n_tokens_cl100k": 800}
    levels = {int(r["meta"]["level"].split()[-1]) for r in raw}
    assert set(qwen.sample_arrays().level.tolist()) == levels == {1, 2, 3, 4, 5}
    scores, names = qwen.sample_confidence()
    assert names == ["score"] and not np.isnan(scores).any()
    queries, rate, weight = qwen.difficulty_data()
    assert len(queries) == 100 and weight.tolist() == [8] * 100 and queries[0]["prompt"] == raw[0]["question"]

    # GPQA: the data README states pass@128 = 0.875; the first 64 solutions carry verifier scores (score = mean)
    gpqa = read_replay(data_dir / "replay" / "scgenrm_gpqa_diamond64_llama33_70b_x128.jsonl")
    by_pid: dict[str, list[bool]] = {}
    for r in gpqa.rows:
        by_pid.setdefault(r["problem_id"], []).append(r["correct"])
    assert np.mean([any(v) for v in by_pid.values()]) == pytest.approx(0.875)
    scores, names = gpqa.sample_confidence()
    assert names == ["score", "verification_mean"]
    scored = np.array([r["sample"] < 64 for r in gpqa.rows])
    assert np.isfinite(scores[scored, 0]).all() and np.isnan(scores[~scored, 0]).all()
    np.testing.assert_allclose(scores[scored, 1], scores[scored, 0], atol=1e-9)  # NaN verdicts skipped, as the source
    assert all(r["n_generated"] is None for r in gpqa.rows)  # no lengths in this file
    with pytest.raises(ValueError, match=r"scgenrm_gpqa.*\.jsonl:1: .*no question text"):
        gpqa.difficulty_data()
    with pytest.raises(ValueError, match="final answers only"):
        gpqa.checkpoint_arrays()


@needs_data
def test_steps_prefix_labels_follow_the_first_error(data_dir):
    bb = read_steps(data_dir / "steps" / "bbmistake_palm2.jsonl")
    raw = _raw(bb.path)
    assert bb.checkpoint_target == STEPS_CHECKPOINT_TARGET
    for row, r in zip(bb.rows, raw):
        labels = [ck["prefix_correct"] for ck in row["checkpoints"]]
        fe = r["first_error_step"]
        assert labels == [fe is None or k < fe for k in range(len(r["steps"]))]
        assert row["process_correct"] == (fe is None)
    ca = bb.checkpoint_arrays()
    assert ca.X.shape == (sum(len(r["steps"]) for r in raw), 0) and ca.confidence.shape == (len(ca.y), 0)
    assert set(ca.groups) == {r["id"] for r in raw}
    last = np.r_[np.diff(ca.sample) != 0, True]
    assert np.allclose(ca.fraction[last], 1.0)

    re_ = read_steps(data_dir / "steps" / "reasoneval_mrmath_invalid_errors.jsonl")
    ca = re_.checkpoint_arrays()
    raw = _raw(re_.path)
    assert len(ca.confidence_names) == len(raw[0]["evaluator_scores"]) == ca.confidence.shape[1]
    j = ca.confidence_names.index("math-shepherd_mistral-7b")
    first = ca.sample == 0
    assert ca.confidence[first, j].tolist() == raw[0]["evaluator_scores"]["math-shepherd_mistral-7b"]
    # the PRM's step scores rank error-free prefixes above erroneous ones (far from chance on 1,721 steps)
    from thinkctl.calibration import auroc

    assert auroc(ca.y.astype(int), ca.confidence[:, j]) > 0.7


# -- hand-written files ----------------------------------------------------------------------------------------------

def _write(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _replay_row(qid: Any = 0, **extra: Any) -> dict[str, Any]:
    row = {"source": "hand", "dataset": "toy", "model": "m", "qid": qid, "question": f"What is {qid} + 0?",
           "gt": "1",
           "samples": [{"answer": "1", "correct": True, "n_tokens_cl100k": 10, "score": 0.8,
                        "verifications": [1.0, float("nan"), 0.0]},
                       {"answer": None, "correct": False, "n_words": 30},
                       {"answer": 2, "correct": False, "n_chars": 40}],
           "meta": {"level": "Level 2"}}
    row.update(extra)
    return row


def _steps_row(pid: Any = "a", **extra: Any) -> dict[str, Any]:
    row = {"source": "hand", "dataset": "toy/steps", "generator": "g", "id": pid, "question": "q", "gt": "3",
           "steps": ["s0", "s1", "s2"], "final_answer": "4", "answer_correct": False, "process_correct": False,
           "first_error_step": 1, "step_labels": None,
           "evaluator_scores": {"prm": [0.9, 0.4, 0.2]}, "step_group_of": [0, 1, 1]}
    row.update(extra)
    return row


def test_hand_written_replay_values(tmp_path):
    path = _write(tmp_path / "r.jsonl", [_replay_row(0), _replay_row(1)])
    rec = read_recorded(path)  # sniffed from the rows: folder name is not replay/
    assert rec.kind == "replay" and rec.checkpoint_target is None
    r0, r1, r2 = rec.rows[:3]
    assert (r0["problem_id"], r0["sample"], r0["answer"], r0["correct"], r0["level"]) == ("0", 0, "1", True, 2)
    assert r0["n_generated"] == 10.0 and r1["n_generated"] == pytest.approx(40.0) and r2["n_generated"] == 10.0
    assert r1["answer"] is None and r2["answer"] == "2" and r0["gold"] == "1"
    assert r0["confidence"] == {"score": 0.8, "verification_mean": 0.5} and r1["confidence"] == {}
    assert r0["source"] == {"file": str(path), "line": 1} and rec.rows[3]["source"]["line"] == 2
    assert rec.meta["token_sources"] == {"n_tokens_cl100k": 2, "n_words*4/3": 2, "n_chars/4": 2}
    queries, rate, weight = rec.difficulty_data()
    assert [q["prompt"] for q in queries] == ["What is 0 + 0?", "What is 1 + 0?"]
    assert rate.tolist() == pytest.approx([1 / 3, 1 / 3]) and weight.tolist() == [3, 3]
    assert queries[0]["features"] == {"dataset": "toy"}


def test_hand_written_steps_values(tmp_path):
    path = _write(tmp_path / "steps" / "s.jsonl",
                  [_steps_row("a"), _steps_row(7, first_error_step=None, process_correct=True, answer_correct=True,
                                               evaluator_scores={"prm": [0.5, 0.6, 0.7], "other": [1, 1, 1]})])
    rec = read_recorded(path)
    assert rec.kind == "steps" and rec.meta["model"] == "g"
    a, b = rec.rows
    assert [c["prefix_correct"] for c in a["checkpoints"]] == [True, False, False]
    assert [c["prefix_correct"] for c in b["checkpoints"]] == [True, True, True]
    assert [c["step_group"] for c in a["checkpoints"]] == [0, 1, 1] and a["text"] == "s0\ns1\ns2"
    assert (a["answer"], a["correct"], b["problem_id"], a["confidence"]) == ("4", False, "7", {"prm": 0.2})
    ca = rec.checkpoint_arrays()
    assert ca.confidence_names == ["other", "prm"]
    np.testing.assert_array_equal(ca.confidence[:3, 0], np.nan)  # row "a" has no "other" scorer
    assert ca.confidence[:, 1].tolist() == [0.9, 0.4, 0.2, 0.5, 0.6, 0.7]
    assert ca.position.tolist() == [1, 2, 3, 1, 2, 3] and ca.sample.tolist() == [0, 0, 0, 1, 1, 1]
    assert ca.final_correct.tolist() == [False] * 3 + [True] * 3
    assert ca.fraction.tolist() == pytest.approx([1 / 3, 2 / 3, 1] * 2)


@pytest.mark.parametrize("row, message", [
    (_replay_row(0, samples=[{"answer": "1"}]), "lacks 'correct'"),
    (_replay_row(0, samples=[]), "must be a non-empty list"),
    (_replay_row(0, question={"text": "q"}), "'question' must be a string or null"),
    (_replay_row([1]), "'qid' must be a non-empty string or an integer"),
    (_replay_row(0, samples=[{"answer": "1", "correct": True, "verifications": ["yes"]}]),
     "sample 0: 'verifications' must be a list of numbers"),
    ("{not json", "not valid JSON"),
])
def test_malformed_replay_rows_name_file_and_line(tmp_path, row, message):
    path = _write(tmp_path / "replay" / "bad.jsonl", [_replay_row(5), row])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{message}"):
        read_recorded(path)


def test_duplicate_ids_are_refused(tmp_path):
    path = _write(tmp_path / "dup.jsonl", [_replay_row(3), _replay_row(4), _replay_row(3)])
    with pytest.raises(ValueError, match=r"dup\.jsonl:3: qid '3' repeats line 1"):
        read_replay(path)
    path = _write(tmp_path / "dups.jsonl", [_steps_row("x"), _steps_row("x")])
    with pytest.raises(ValueError, match=r"dups\.jsonl:2: id 'x' repeats line 1"):
        read_steps(path)


@pytest.mark.parametrize("change, message", [
    ({"steps": []}, "'steps' must be a non-empty list of strings.*an empty list"),
    ({"steps": ["a", 3]}, r"'steps' must be a non-empty list of strings.*\['int'\]"),
    ({"first_error_step": 3}, r"first_error_step=3 must be null or a 0-based step index in 0\.\.2"),
    ({"first_error_step": True}, "first_error_step=True"),
    ({"first_error_step": None}, "process_correct=False contradicts first_error_step=None"),
    ({"answer_correct": "yes"}, "'answer_correct' must be true or false"),
    ({"evaluator_scores": {"prm": [0.1, 0.2]}}, r"evaluator_scores\['prm'\] must hold one score per step \(3\), got 2"),
    ({"evaluator_scores": {"prm": [0.1, None, 0.2]}}, "non-numeric score at step 1"),
    ({"evaluator_scores": [0.1, 0.2, 0.3]}, "'evaluator_scores' must be an object"),
    ({"step_group_of": [0, 1]}, "'step_group_of' must list one non-negative integer group per step"),
    ({"id": None}, "'id' must be a non-empty string or an integer"),
])
def test_malformed_steps_rows_name_file_and_line(tmp_path, change, message):
    path = _write(tmp_path / "bad_steps.jsonl", [_steps_row("ok"), _steps_row("b", **change)])
    with pytest.raises(ValueError, match=rf"bad_steps\.jsonl:2: .*{message}"):
        read_steps(path)


def test_missing_empty_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_steps(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_recorded(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="empty"):
        read_steps(_write(tmp_path / "empty.jsonl", []))
    with pytest.raises(ValueError, match=r"other\.jsonl:1: cannot tell the kind"):
        read_recorded(_write(tmp_path / "other.jsonl", [{"id": 1}]))
    with pytest.raises(UnknownNameError, match="known: replay, steps"):
        read_recorded(_write(tmp_path / "x.jsonl", [_replay_row(0)]), kind="prm")
    with pytest.raises(UnknownNameError, match="known: replay, steps"):
        recorded_files("prm", data_dir=tmp_path)
    _write(tmp_path / "data" / "steps" / "s.jsonl", [_steps_row()])
    _write(tmp_path / "data" / "replay" / "r.jsonl", [_replay_row()])
    assert [p.name for p in recorded_files(data_dir=tmp_path / "data")] == ["r.jsonl", "s.jsonl"]
    assert [p.name for p in recorded_files("steps", data_dir=tmp_path / "data")] == ["s.jsonl"]


@needs_data
def test_difficulty_model_learns_from_a_recorded_file(data_dir):
    """What difficulty_data returns is what DifficultyModel fits on; held-out problems rank far above chance."""
    from thinkctl.calibration import auroc
    from thinkctl.predictors import DifficultyModel, grouped_train_test_split

    queries, solve, weight = read_steps(data_dir / "steps" / "bbmistake_palm2.jsonl").difficulty_data()
    train, test = grouped_train_test_split(np.arange(len(queries)), test_size=0.3, seed=0)
    dm = DifficultyModel(target="solve", n_estimators=50).fit([queries[i] for i in train], solve[train],
                                                                sample_weight=weight[train])
    p = dm.predict_proba([queries[i] for i in test])
    assert p.shape == (len(test),) and auroc(solve[test].astype(int), p) > 0.75


def test_module_examples_run():
    import doctest

    import thinkctl.traces.readers as readers

    result = doctest.testmod(readers, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
