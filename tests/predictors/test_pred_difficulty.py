"""DifficultyModel: learns difficulty from text on synthetic prompts, not from shuffled labels; heads; persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from thinkctl.predictors import DifficultyModel, QueryFeatures, grouped_train_test_split

SMALL = dict(n_estimators=60, min_child_samples=10)


@pytest.fixture
def split(prompt_data):
    prompts, levels, solve_prob, tokens = prompt_data
    train, test = grouped_train_test_split(len(prompts), test_size=0.3, seed=0, stratify=levels)
    return prompts, levels, solve_prob, tokens, train, test


def _sub(xs, idx):
    return [xs[i] for i in idx]


def test_solve_head_beats_chance_and_shuffled_labels_do_not(prompt_factory, rng) -> None:
    prompts, levels, p, _ = prompt_factory(rng, n=600)
    train, test = grouped_train_test_split(len(prompts), test_size=0.4, seed=0, stratify=levels)
    solved = (rng.uniform(size=p.size) < p).astype(int)
    X_tr, X_te = _sub(prompts, train), _sub(prompts, test)
    dm = DifficultyModel(target="solve", **SMALL).fit(X_tr, solved[train])
    proba = dm.predict_proba(X_te)
    assert proba.shape == (test.size,) and np.all((proba > 0) & (proba < 1))
    oracle = roc_auc_score(solved[test], p[test])
    assert roc_auc_score(solved[test], proba) > oracle - 0.06 > 0.75
    shuffled = [roc_auc_score(solved[test], DifficultyModel(target="solve", random_state=s, **SMALL)
                              .fit(X_tr, np.random.default_rng(s).permutation(solved[train])).predict_proba(X_te))
                for s in range(5)]
    assert max(shuffled) < 0.72 and abs(np.mean(shuffled) - 0.5) < 0.08, shuffled
    np.testing.assert_array_equal(dm.predict(X_te), (proba >= 0.5).astype(int))
    np.testing.assert_allclose(dm.predict_difficulty(X_te), 1 - proba)


def test_solve_fractions_are_a_valid_target(split) -> None:
    prompts, levels, p, _, train, test = split
    dm = DifficultyModel(target="solve", **SMALL).fit(_sub(prompts, train), p[train],
                                                      sample_weight=np.full(train.size, 8.0))
    pred = dm.predict_proba(_sub(prompts, test))
    assert spearmanr(pred, p[test]).statistic > 0.8
    assert abs(pred.mean() - p[test].mean()) < 0.1  # cross-entropy on fractions is calibrated on average


def test_level_head(split) -> None:
    prompts, levels, _, _, train, test = split
    dm = DifficultyModel(target="level", level_threshold=4, **SMALL).fit(_sub(prompts, train), levels[train])
    X_te = _sub(prompts, test)
    dist = dm.predict_level_proba(X_te)
    assert dist.shape == (test.size, 5)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    np.testing.assert_array_equal(dm.classes_, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(dm.predict_proba(X_te), dist[:, 3:].sum(axis=1))
    np.testing.assert_allclose(dm.predict_level(X_te), dist @ np.arange(1, 6))
    assert spearmanr(dm.predict_level(X_te), levels[test]).statistic > 0.9
    assert set(dm.predict(X_te)) <= {1, 2, 3, 4, 5}
    assert np.mean(dm.predict(X_te) == levels[test]) > 0.7
    # length alone is a weak signal on these prompts (random filler): the text model must do much better
    length = np.array([len(x) for x in X_te])
    assert spearmanr(length, levels[test]).statistic < 0.5


def test_tokens_head(split) -> None:
    prompts, levels, p, tokens, train, test = split
    dm = DifficultyModel(target="solve", **SMALL).fit(_sub(prompts, train), p[train], y_tokens=tokens[train])
    X_te = _sub(prompts, test)
    mean, median = dm.predict_tokens(X_te), dm.predict_tokens(X_te, statistic="median")
    assert spearmanr(mean, tokens[test]).statistic > 0.8
    assert np.all(mean >= median) and dm.tokens_smearing_ >= 1.0
    assert np.median(np.abs(np.log(median / tokens[test]))) < 0.5
    with pytest.raises(ValueError, match="statistic"):
        dm.predict_tokens(X_te, statistic="mode")
    no_tokens = DifficultyModel(target="solve", **SMALL).fit(_sub(prompts, train), p[train])
    with pytest.raises(ValueError, match="y_tokens"):
        no_tokens.predict_tokens(X_te)


def test_unknown_token_counts_are_skipped(split) -> None:
    prompts, _, p, tokens, train, _ = split
    t = tokens[train].copy()
    t[::3] = np.nan  # never solved: no token count
    dm = DifficultyModel(target="solve", **SMALL).fit(_sub(prompts, train), p[train], y_tokens=t)
    assert np.all(np.isfinite(dm.predict_tokens(prompts[:5])))


def test_save_load_round_trip(tmp_path: Path, split) -> None:
    prompts, levels, p, tokens, train, test = split
    X_te = _sub(prompts, test)
    for target, y in (("solve", p[train]), ("level", levels[train])):
        dm = DifficultyModel(target=target, features=QueryFeatures(max_categories=3), **SMALL)
        dm.fit(_sub(prompts, train), y, y_tokens=tokens[train] if target == "solve" else None)
        path = dm.save(tmp_path / target, metadata={"model_name": "toy-lm"})
        loaded = DifficultyModel.load(tmp_path / target, expected_target=target,
                                      expected_metadata={"model_name": "toy-lm"})
        np.testing.assert_array_equal(loaded.predict_proba(X_te), dm.predict_proba(X_te))
        assert loaded.get_params(deep=False).keys() == dm.get_params(deep=False).keys()
        assert loaded.features.max_categories == 3
        doc = json.loads(path.read_text())
        assert doc["thinkctl_version"] and doc["kind"] == "DifficultyModel"
        assert doc["metadata"]["trained_for"]["target"] == target
        assert doc["state"]["feature_names"] == list(dm.feature_names_)
        assert {f.suffix for f in (tmp_path / target).iterdir()} == {".json", ".txt"}  # no pickle
    np.testing.assert_array_equal(loaded.predict_level(X_te), dm.predict_level(X_te))
    solve = DifficultyModel.load(tmp_path / "solve")
    assert solve.tokens_booster_ is not None and solve.predict_tokens(X_te[:3]).shape == (3,)


def test_load_refuses_mismatches(tmp_path: Path, split, hidden_data) -> None:
    prompts, levels, p, _, train, _ = split
    DifficultyModel(target="solve", **SMALL).fit(_sub(prompts, train), p[train]).save(tmp_path / "m",
                                                                                         metadata={"model_name": "a"})
    with pytest.raises(ValueError, match="target='solve', expected 'level'"):
        DifficultyModel.load(tmp_path / "m", expected_target="level")
    with pytest.raises(ValueError, match="model_name: saved 'a', expected 'b'"):
        DifficultyModel.load(tmp_path / "m", expected_metadata={"model_name": "b"})
    doc_path = tmp_path / "m" / "difficulty_model.json"
    good = doc_path.read_text()
    doc = json.loads(good)
    doc["thinkctl_version"] = "9.0.0"
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not compatible with the installed thinkctl"):
        DifficultyModel.load(tmp_path / "m")
    doc = json.loads(good)
    doc["state"]["features"]["params"]["feature_sets"] = ["length"]
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="feature"):
        DifficultyModel.load(tmp_path / "m")
    doc = json.loads(good)
    doc["kind"] = "HiddenStateProbe"
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="holds a 'HiddenStateProbe', expected 'DifficultyModel'"):
        DifficultyModel.load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="save"):
        DifficultyModel.load(tmp_path / "nothing-here")
    # a booster trained on other features does not load with this JSON
    doc_path.write_text(good)
    other = DifficultyModel(target="solve", features=QueryFeatures(feature_sets=("length",)), **SMALL)
    other.fit(_sub(prompts, train), p[train]).save(tmp_path / "other")
    (tmp_path / "m" / "booster.txt").write_text((tmp_path / "other" / "booster.txt").read_text())
    with pytest.raises(ValueError, match="do not belong together"):
        DifficultyModel.load(tmp_path / "m")


@pytest.mark.parametrize("target, y, match", [
    ("solve", [0, 2] * 10, r"y in \[0, 1\]"),
    ("solve", [1] * 20, "both solved and unsolved"),
    ("solve", [0, 1] * 9 + [np.nan, 1], "NaN"),
    ("solve", [0, 1] * 5, "one value per sample"),
    ("level", [1.5, 2] * 10, "integer levels"),
    ("level", [3] * 20, "single level"),
    ("level", [1, 2, 3] * 6 + [1, 2], "level_threshold=4"),
])
def test_bad_targets_raise(target, y, match) -> None:
    prompts = [f"What is {i} + {i}?" for i in range(20)]
    with pytest.raises(ValueError, match=match):
        DifficultyModel(target=target, **SMALL).fit(prompts, y)


def test_bad_params_and_misuse_raise(split) -> None:
    prompts, levels, p, _, train, _ = split
    with pytest.raises(ValueError, match="target='difficulty' is not known; use one of 'solve', 'level'"):
        DifficultyModel(target="difficulty").fit(prompts[:10], [0, 1] * 5)
    with pytest.raises(ValueError, match="num_leaves"):
        DifficultyModel(num_leaves=1).fit(prompts[:10], [0, 1] * 5)
    with pytest.raises(ValueError, match="subsample"):
        DifficultyModel(subsample=0.0).fit(prompts[:10], [0, 1] * 5)
    with pytest.raises(ValueError, match="sample_weight"):
        DifficultyModel(**SMALL).fit(prompts[:10], [0, 1] * 5, sample_weight=[-1.0] * 10)
    with pytest.raises(ValueError, match="y_tokens must be positive"):
        DifficultyModel(**SMALL).fit(prompts[:10], [0, 1] * 5, y_tokens=[0.0] * 10)
    solve = DifficultyModel(target="solve", **SMALL).fit(_sub(prompts, train), p[train])
    with pytest.raises(ValueError, match="target='level'"):
        solve.predict_level(prompts[:2])


def test_estimator_contract(split) -> None:
    prompts, _, p, _, train, _ = split
    dm = DifficultyModel(target="solve", level_threshold=3, **SMALL)
    with pytest.raises(NotFittedError):
        dm.predict_proba(prompts[:2])
    with pytest.raises(NotFittedError):
        check_is_fitted(dm)
    with pytest.raises(NotFittedError):
        dm.save("unused")
    twin = clone(dm)
    assert twin.get_params() == dm.get_params() and twin is not dm
    assert dm.fit(_sub(prompts, train), p[train]) is dm
    check_is_fitted(dm)
    again = clone(dm).fit(_sub(prompts, train), p[train])
    np.testing.assert_array_equal(again.predict_proba(prompts[:50]), dm.predict_proba(prompts[:50]))  # deterministic
    with pytest.raises(TypeError):
        DifficultyModel("solve")  # keyword-only


def test_problem_objects_and_features_flow_through(split) -> None:
    from thinkctl.tasks import Problem

    prompts, levels, _, _, train, test = split
    problems = [Problem(str(i), prompts[i], "0", int(levels[i]), {"family": "arith" if i % 2 else "other"})
                for i in range(len(prompts))]
    dm = DifficultyModel(target="level", **SMALL).fit(_sub(problems, train), levels[train])
    assert "feature__family=arith" in dm.feature_names_
    assert dm.predict_level(_sub(problems, test)).shape == (test.size,)
