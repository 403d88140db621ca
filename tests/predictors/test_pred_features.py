"""QueryFeatures: hand-checked text features, Problem.features columns, input forms, contract, JSON state."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from thinkctl.predictors import FEATURE_SETS, QueryFeatures
from thinkctl.registry import UnknownNameError
from thinkctl.tasks import Problem

PROMPT = r"Find all real $x$ with $\frac{x^2+1}{\sqrt{x-3}} \le 12.5$ (mod 7). How many are there? Prove it."


def _row(qf: QueryFeatures, prompt: str) -> dict[str, float]:
    return dict(zip(qf.get_feature_names_out(), qf.transform([prompt])[0].tolist()))


def test_text_features_by_hand() -> None:
    f = _row(QueryFeatures().fit([PROMPT]), PROMPT)
    assert f["n_chars"] == len(PROMPT)
    assert f["n_words"] == len(PROMPT.split())
    assert f["n_numbers"] == 5  # 2, 1, 3, 12.5, 7
    assert f["n_decimal_numbers"] == 1
    assert f["max_number_digits"] == 3
    assert f["log10_max_number"] == pytest.approx(np.log10(13))
    assert f["n_question_marks"] == 1 and f["n_sentences"] == 3
    assert f["n_plus"] == 1 and f["n_minus"] == 1 and f["n_pow"] == 1 and f["n_lt"] == 1 and f["n_eq"] == 0
    assert f["max_bracket_depth"] == 2  # {\\sqrt{x-3}}
    assert f["n_math_segments"] == 2 and f["n_distinct_variables"] == 1
    assert f["latex_frac"] == 1 and f["latex_sqrt"] == 1 and f["latex_le"] == 1 and f["latex_leq"] == 0
    assert f["n_latex_commands"] == 3
    for kw in ("kw_find_all", "kw_real", "kw_mod", "kw_how_many", "kw_prove"):
        assert f[kw] == 1, kw
    assert f["kw_probability"] == 0 and f["kw_remainder"] == 0


def test_bracket_depth_and_hyphens() -> None:
    qf = QueryFeatures(feature_sets=("structure", "operators")).fit(["x"])
    f = _row(qf, "((a+[b-1]) * {d}) and a two-digit number")
    assert f["max_bracket_depth"] == 3 and f["n_brackets"] == 4
    assert f["n_minus"] == 1  # "b-1" is a minus, "two-digit" a hyphen
    assert f["n_times"] == 1


def test_plain_text_without_math_has_no_math_features() -> None:
    f = _row(QueryFeatures().fit(["x"]), "What is 7 plus 5")
    assert f["n_math_segments"] == 0 and f["math_char_fraction"] == 0 and f["n_latex_commands"] == 0
    assert f["n_sentences"] == 1 and f["n_numbers"] == 2


def test_huge_numbers_do_not_overflow() -> None:
    f = _row(QueryFeatures(feature_sets=("numbers",)).fit(["x"]), "9" * 5000)
    assert f["max_number_digits"] == 5000 and np.isfinite(f["log10_max_number"])


def test_names_match_columns_and_output_is_float() -> None:
    qf = QueryFeatures().fit([PROMPT, "b"])
    names = qf.get_feature_names_out()
    X = qf.transform([PROMPT, "b", ""])
    assert X.dtype == np.float64 and X.shape == (3, len(names)) and len(set(names)) == len(names)
    assert np.all(np.isfinite(X))


def test_problem_features_numeric_categorical_and_ignored() -> None:
    problems = [
        Problem("a", "p1", "1", 1, {"subject": "Algebra", "n_terms": 3, "flag": True, "tags": ["x"], "id": "u1"}),
        Problem("b", "p2", "2", 5, {"subject": "Geometry", "n_terms": 2.5}),
        Problem("c", "p3", "3", 3, {"subject": "Algebra"}),
    ]
    qf = QueryFeatures(feature_sets=("length",), max_categories=2).fit(problems)
    names = list(qf.get_feature_names_out())
    # "tags" (a list) is ignored; "id" has one distinct string (<= max_categories), so it is one-hot encoded
    assert names[5:] == ["feature__flag", "feature__n_terms", "feature__id=u1", "feature__subject=Algebra",
                         "feature__subject=Geometry"]
    assert qf.numeric_keys_ == ["flag", "n_terms"]
    assert qf.categories_ == {"id": ["u1"], "subject": ["Algebra", "Geometry"]}
    X = qf.transform(problems)
    np.testing.assert_array_equal(X[:, 5:], [[1, 3, 1, 1, 0], [np.nan, 2.5, np.nan, 0, 1],
                                             [np.nan, np.nan, np.nan, 1, 0]])
    # unseen category -> zeros; missing key -> NaN; a string where a number was seen -> NaN
    new = [{"prompt": "q", "features": {"subject": "Number Theory", "n_terms": "three"}}, {"prompt": "q"}]
    np.testing.assert_array_equal(qf.transform(new)[:, 5:], [[np.nan, np.nan, np.nan, 0, 0], [np.nan] * 5])
    # a key with more distinct strings than max_categories is dropped
    qf1 = QueryFeatures(feature_sets=("length",), max_categories=1).fit(problems)
    assert qf1.categories_ == {"id": ["u1"]}


def test_level_is_never_a_feature() -> None:
    a, b = Problem("a", "same prompt", "1", 1), Problem("b", "same prompt", "1", 5)
    qf = QueryFeatures().fit([a, b])
    X = qf.transform([a, b])
    np.testing.assert_array_equal(X[0], X[1])


def test_input_forms_agree() -> None:
    p = Problem("a", PROMPT, "1", 2, {"k": 1.0})
    qf = QueryFeatures().fit([p])
    from_problem = qf.transform([p])
    from_dict = qf.transform([{"prompt": PROMPT, "features": {"k": 1.0}}])
    from_question = qf.transform([{"question": PROMPT, "features": {"k": 1.0}}])
    from_array = qf.transform(np.array([[p]], dtype=object))
    for other in (from_dict, from_question, from_array):
        np.testing.assert_array_equal(from_problem, other)
    strings = qf.transform([PROMPT])
    assert np.isnan(strings[0, -1]) and np.array_equal(strings[0, :-1], from_problem[0, :-1])


@pytest.mark.parametrize("bad, match", [
    ("a single prompt", "single string"),
    ([], "empty"),
    ([1, 2], "prompt strings"),
    ([{"prompt": 3}], "must be str"),
    ([{"prompt": "x", "features": [1]}], "features must be a dict"),
])
def test_bad_inputs_raise(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        QueryFeatures().fit(bad)


def test_feature_sets_select_columns_and_unknown_lists_known() -> None:
    qf = QueryFeatures(feature_sets=("length",), use_problem_features=False).fit(["a b"])
    assert list(qf.get_feature_names_out()) == ["n_chars", "n_words", "n_lines", "n_sentences", "mean_word_length"]
    with pytest.raises(UnknownNameError, match="known: keywords, latex, length"):
        QueryFeatures(feature_sets=("lenght",)).fit(["a"])
    with pytest.raises(ValueError, match="no features"):
        QueryFeatures(feature_sets=(), use_problem_features=True).fit(["a"])
    with pytest.raises(ValueError, match="leaves no features"):
        QueryFeatures(feature_sets=(), use_problem_features=False).fit(["a"])
    assert set(FEATURE_SETS) == {"length", "numbers", "operators", "structure", "latex", "keywords"}


def test_custom_keywords_and_commands() -> None:
    qf = QueryFeatures(feature_sets=("keywords", "latex"), keywords=("gcd", "lcm of"),
                       latex_commands=("gcd",)).fit(["x"])
    f = _row(qf, r"Find the GCD and the lcm of 4, 6; $\gcd(4,6)$")
    assert f["kw_gcd"] == 1 and f["kw_lcm_of"] == 1 and f["latex_gcd"] == 1
    with pytest.raises(ValueError, match="keywords"):
        QueryFeatures(keywords="prove").fit(["x"])


def test_estimator_contract_and_json_round_trip() -> None:
    qf = QueryFeatures(max_categories=5)
    with pytest.raises(NotFittedError):
        qf.transform(["a"])
    assert clone(qf).get_params() == qf.get_params()
    data = [{"prompt": PROMPT, "features": {"subject": "Algebra", "x": 1}}, {"prompt": "b", "features": {}}]
    qf.fit(data)
    restored = QueryFeatures.from_dict(json.loads(json.dumps(qf.to_dict())))
    np.testing.assert_array_equal(restored.transform(data), qf.transform(data))
    state = qf.to_dict()
    state["feature_names_out"] = state["feature_names_out"][:-1] + ["renamed"]
    with pytest.raises(ValueError, match="refit"):
        QueryFeatures.from_dict(state)
