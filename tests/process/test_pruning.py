"""Pruning sampled branches at a certified process-score threshold: the losses, the certificate, the search, the CLI."""

import json

import numpy as np
import pytest

from thinkctl.cli import main
from thinkctl.generation import chat_prefix, reasoning_format
from thinkctl.models import load_model
from thinkctl.process import CallableStepScorer, ExactStepChecker
from thinkctl.process.pruning import BranchRecord, PruneRule, certify_pruning, pruning_losses
from thinkctl.process.search import SearchConfig, _Beam, _prune, _State, step_search
from thinkctl.tasks import TASKS
from thinkctl.tasks.base import Problem


def _b(scores, correct, lengths=()):
    return BranchRecord(scores=tuple(scores), correct=correct, lengths=tuple(lengths))


def test_losses_are_the_share_of_right_samples_pruned():
    problems = [
        [_b([0.9, 0.4, 0.8], True), _b([0.9, 0.9], True), _b([0.1], False)],  # right samples dip to 0.4 and 0.9
        [_b([0.2], False), _b([0.3], False)],                                  # nothing right: nothing to lose
        [_b([0.5, float("nan")], True)],                                       # a NaN score is below any threshold
    ]
    losses = pruning_losses(problems, [0.0, 0.4, 0.5, 0.95])
    np.testing.assert_allclose(losses, [[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


def _synthetic(rng, n, n_branches=8):
    """Samples whose scores dip lower when they end wrong; 3 % of right samples dip anywhere (a repaired slip)."""
    problems = []
    for _ in range(n):
        p_right = rng.uniform(0.0, 1.0)
        branches = []
        for _ in range(n_branches):
            right = rng.random() < p_right
            low = rng.uniform(0.0, 1.0) if (not right or rng.random() < 0.03) else rng.uniform(0.5, 1.0)
            steps = int(rng.integers(2, 9))
            scores = np.clip(low + rng.uniform(0.0, 0.3, steps), 0, 1)
            scores[int(rng.integers(steps))] = low
            branches.append(_b(scores, right, np.cumsum(rng.integers(4, 12, steps))))
        problems.append(branches)
    return problems


def test_the_certified_threshold_keeps_its_risk_on_new_problems():
    """Over repeated calibrations the realised risk on fresh problems exceeds epsilon in at most about delta of
    them (the Learn-then-Test guarantee), and a threshold that prunes is found."""
    rng = np.random.default_rng(0)
    eps, delta = 0.05, 0.1
    test = _synthetic(rng, 2000)
    grid = np.round(np.linspace(0, 1, 101), 2)
    test_losses = pruning_losses(test, grid).mean(axis=0)
    violations, chosen = 0, []
    for _ in range(40):
        rule = certify_pruning(_synthetic(rng, 150), epsilon=eps, delta=delta, scorer="s", aggregation="min")
        assert rule.threshold is not None
        chosen.append(rule.threshold)
        violations += test_losses[int(np.flatnonzero(grid == rule.threshold)[0])] > eps
        assert 0 < rule.calibration["samples_pruned"] < 1 and 0 < rule.calibration["step_tokens_saved"] < 1
    assert violations <= 0.1 * 40 + 3
    assert np.median(chosen) > 0.3  # it prunes the low-scoring samples, not nothing


def test_too_few_problems_certify_nothing_and_say_why():
    rule = certify_pruning([[_b([1.0], True)]] * 10, epsilon=0.05, delta=0.1, scorer="check", aggregation="min")
    assert rule.threshold is None and "too small" in rule.reason
    with pytest.raises(ValueError, match="no calibration problems"):
        certify_pruning([], epsilon=0.05, delta=0.1, scorer="check", aggregation="min")


def test_rule_round_trips_and_bad_files_are_named(tmp_path):
    rule = certify_pruning(_synthetic(np.random.default_rng(1), 120), epsilon=0.1, delta=0.1, scorer="check",
                           aggregation="mean", task="arith")
    path = rule.save(tmp_path / "rule.json")
    assert PruneRule.load(path) == rule
    doc = json.loads(path.read_text())
    (tmp_path / "other.json").write_text(json.dumps({**doc, "format": "x"}))
    with pytest.raises(ValueError, match="not a thinkctl pruning rule"):
        PruneRule.load(tmp_path / "other.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="cut.json.*not a readable JSON"):
        PruneRule.load(tmp_path / "cut.json")
    (tmp_path / "agg.json").write_text(json.dumps({**doc, "aggregation": "median"}))
    with pytest.raises(ValueError, match="median"):
        PruneRule.load(tmp_path / "agg.json")
    with pytest.raises(ValueError, match="no pruning rule"):
        PruneRule.load(tmp_path / "missing.json")


def test_the_last_live_sample_of_a_problem_is_never_pruned():
    st = _State(problem=Problem(id="p", prompt="", answer=""), prefix=[], beams=[])
    low = [_Beam(ids=[1], thinking=1, score=0.1, subtree=0), _Beam(ids=[2], thinking=1, score=0.2, subtree=1)]
    _prune(st, low, 0.5)
    assert [b.subtree for b in st.beams] == [1] and [b.subtree for b in st.pruned] == [0]
    st2 = _State(problem=st.problem, prefix=[], beams=[])
    _prune(st2, [_Beam(ids=[1], thinking=1, score=0.9, subtree=0), _Beam(ids=[2], thinking=1, score=0.2, subtree=1)],
           0.5)
    assert [b.subtree for b in st2.beams] == [0] and [b.subtree for b in st2.pruned] == [1]


@pytest.fixture(scope="module")
def embedded():
    model, tok = load_model("embedded")
    return model, tok, reasoning_format(tok)


def test_pruned_search_abandons_low_samples_and_spends_less(embedded):
    model, tok, fmt = embedded
    task = TASKS.get("arith")()
    probs = task.sample(6, seed=41, level=4)
    prefixes = [chat_prefix(tok, p.prompt) for p in probs]
    full = step_search(model, tok, fmt, task, probs, prefixes, ExactStepChecker(),
                       SearchConfig(n=4, beam_width=1, seed=2), method="prune")
    # scores that halve at every step: a threshold of 0.3 prunes every sample at its second step
    halving = CallableStepScorer(lambda prompt, steps: 0.5 ** np.arange(1, len(steps) + 1), name="halving")
    pruned = step_search(model, tok, fmt, task, probs, prefixes, halving,
                         SearchConfig(n=4, beam_width=1, seed=2, prune_below=0.3, aggregation="last"),
                         method="prune")
    for r in full:
        event = r.trace[0]
        assert event["pruned"] == 0 and len(event["branches"]) == 4
        assert all(len(b["scores"]) == len(b["lengths"]) and not b["pruned"] for b in event["branches"])
    for r in pruned:
        event = r.trace[0]
        assert len(event["branches"]) == 4 and r.answer != ""  # always an answer
        kept = [b for b in event["branches"] if not b["pruned"]]
        assert len(kept) >= 1 and event["pruned"] == 4 - len(kept)
        for b in event["branches"]:
            if b["pruned"]:
                assert b["answer"] is None and b["scores"][-1] < 0.3 and len(b["scores"]) <= 2
    assert sum(r.tokens for r in pruned) < 0.7 * sum(r.tokens for r in full)


def test_cli_certifies_then_evaluates_prune(tmp_path, capsys):
    rule_path = tmp_path / "rule.json"
    args = ["calibrate-pruning", "--task", "arith", "--seed", "13", "--n", "12", "--level", "2", "--level", "3",
            "--branches", "4", "--epsilon", "0.2", "--token-cap", "160", "--out", str(rule_path), "--no-progress"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "rule.rows.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["level"] for r in rows} == {2, 3}  # one seed, two levels: both kept
    rule = PruneRule.load(rule_path)
    assert rule.n_problems == 24 and rule.scorer == "check" and rule.model["fingerprint"]
    assert main(args) == 0  # resumes: nothing recomputed, the same rule
    assert PruneRule.load(rule_path).ltt == rule.ltt
    assert len((tmp_path / "rule.rows.jsonl").read_text().splitlines()) == 24
    capsys.readouterr()
    assert main(args + ["--branches", "8"]) == 2  # resuming under other settings is refused
    assert "branches" in capsys.readouterr().err

    ev = ["evaluate", "--task", "arith", "--seed", "14", "--n", "4", "--level", "3", "--token-cap", "160",
          "--json", str(tmp_path / "ev.json"), "--no-progress", "--strategies", "prune@4"]
    capsys.readouterr()
    assert main(ev) == 2
    assert "--prune-rule" in capsys.readouterr().err
    assert main(ev + ["--prune-rule", str(rule_path)]) == 0
    summary = json.loads((tmp_path / "ev.json").read_text())["strategies"]["prune@4"]
    assert summary["n"] == 4 and summary["samples_mean"] == 4
    # a rule certified for another scorer, or another model, is refused
    doc = json.loads(rule_path.read_text())
    (tmp_path / "other_scorer.json").write_text(json.dumps({**doc, "scorer": "process-probe"}))
    assert main(ev[:-5] + ["--json", str(tmp_path / "ev2.json"), "--no-progress", "--strategies", "prune@4",
                           "--prune-rule", str(tmp_path / "other_scorer.json")]) == 2
    assert "certified for step scorer 'process-probe'" in capsys.readouterr().err
    (tmp_path / "other_model.json").write_text(json.dumps({**doc, "model": {**doc["model"], "fingerprint": "0" * 16}}))
    assert main(ev[:-5] + ["--json", str(tmp_path / "ev3.json"), "--no-progress", "--strategies", "prune@4",
                           "--prune-rule", str(tmp_path / "other_model.json")]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_cli_refuses_bad_settings_before_work(tmp_path, capsys):
    base = ["calibrate-pruning", "--task", "arith", "--seed", "1", "--out", str(tmp_path / "r.json"), "--no-progress"]
    assert main(base + ["--n", "10"]) == 2  # 10 problems cannot certify epsilon 0.05 at delta 0.1 (needs 45)
    assert "at least 45" in capsys.readouterr().err
    assert main(base + ["--n", "50", "--scorer", "process-probe"]) == 2
    assert "--bundle" in capsys.readouterr().err
    assert main(base + ["--n", "50", "--aggregation", "median"]) == 2
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.rows.jsonl").exists()


def test_a_scorer_that_flags_repaired_slips_certifies_only_never_prune():
    """Right-ending samples with a flagged step (a slip the model repairs): pruning at the flag loses them, so only
    threshold 0 passes, and the rule says how far the next threshold missed."""
    problems = [[_b([1.0, 0.0, 1.0], True), _b([1.0, 1.0], True), _b([0.0], False)] for _ in range(200)]
    rule = certify_pruning(problems, epsilon=0.05, delta=0.1, scorer="check", aggregation="last")
    assert rule.threshold == 0.0 and rule.calibration["samples_pruned"] == 0.0
    assert rule.calibration["first_rejected_threshold"] == 0.01
    assert rule.calibration["first_rejected_risk"] == pytest.approx(0.5)
