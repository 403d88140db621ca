"""Benchmark problem files as tasks: loading, sampling, answer extraction and the math-verify checker."""

from __future__ import annotations

import gc
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import thinkctl.tasks
from thinkctl.tasks.base import Problem
from thinkctl.tasks.benchmarks import (BENCHMARK_TASKS, DATA_ENV_VAR, DEFAULT_INSTRUCTION, PROBLEM_FILES,
                                       DataNotFoundError, JsonlProblemsTask, answers_equivalent, canonical_answer,
                                       extract_final_answer, find_data_dir, gsm8k_task, load_problems, problem_file)
from thinkctl.tasks.verify import _call_with_deadline


@pytest.fixture(scope="module")
def math(data_dir: Path) -> JsonlProblemsTask:
    return BENCHMARK_TASKS["math"]()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def gsm8k(data_dir: Path) -> JsonlProblemsTask:
    return BENCHMARK_TASKS["gsm8k"]()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def aime(data_dir: Path) -> JsonlProblemsTask:
    return BENCHMARK_TASKS["aime"]()  # type: ignore[return-value]


def _rows(data_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (data_dir / PROBLEM_FILES[name]).open(encoding="utf-8")]


def _problem(answer: str, *, numeric: bool = False) -> Problem:
    return Problem(id="t-0", prompt="?", answer=canonical_answer(answer, numeric=numeric) or answer)


def _synthetic(tmp_path: Path, rows: list[dict], name: str = "toy.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(i: int, answer: str = "1", level: int | None = 1, **extra: object) -> dict:
    difficulty = {"kind": "MATH level (1-5)", "value": level} if level is not None else None
    return {"source": "test", "dataset": "Toy", "id": i, "question": f"What is {i}?", "answer": answer,
            "difficulty": difficulty, "meta": {"subject": "Algebra"}, **extra}


# -- loading the real files -------------------------------------------------------------------------------------

def test_math_file_loads(math: JsonlProblemsTask, data_dir: Path) -> None:
    rows = _rows(data_dir, "math")
    assert len(math) == len(rows) == 4500
    assert math.name == "math" and math.levels == (1, 2, 3, 4, 5)
    counts = {lvl: sum(p.level == lvl for p in math.problems) for lvl in math.levels}
    assert counts == {lvl: sum(r["difficulty"]["value"] == lvl for r in rows) for lvl in math.levels}
    assert len({p.id for p in math.problems}) == len(rows)
    first, row = math.problems[0], rows[0]
    assert first.id == "MATH-test-0"
    assert first.prompt == row["question"] + "\n" + DEFAULT_INSTRUCTION
    assert first.answer == "\\frac{1023}{1024}"
    assert first.features["subject"] == "Algebra" and first.features["dataset"] == "MATH-test"
    assert first.features["difficulty_kind"].startswith("MATH level") and first.features["difficulty_value"] == 4.0


FEATURES = {"dataset", "subject", "difficulty_kind", "difficulty_value", "question_chars", "question_words",
            "question_lines", "question_latex_commands", "question_math_spans", "question_numbers"}


def test_features_never_carry_the_answer(math: JsonlProblemsTask, gsm8k: JsonlProblemsTask,
                                         aime: JsonlProblemsTask) -> None:
    for task in (math, gsm8k, aime):
        for p in task.problems:
            assert set(p.features) == FEATURES
            assert p.answer not in {v for v in p.features.values() if isinstance(v, str)}
            assert isinstance(p.features["question_chars"], int) and p.features["question_chars"] > 0


def test_gsm8k_file_loads(gsm8k: JsonlProblemsTask) -> None:
    assert len(gsm8k) == 1319 and gsm8k.levels == ()
    assert all(p.level is None for p in gsm8k.problems)
    p = gsm8k.problems[0]
    assert (p.id, p.answer) == ("GSM8K-test-0", "18")
    assert p.features["difficulty_kind"] == "proxy: #reference solution steps"
    assert all(canonical_answer(q.answer, numeric=True) == q.answer for q in gsm8k.problems)


def test_aime_file_loads_with_canonical_answers(aime: JsonlProblemsTask, data_dir: Path) -> None:
    assert len(aime) == 100 and aime.levels == ()
    by_dataset = {d: [p for p in aime.problems if p.features["dataset"] == d]
                  for d in ("AIME-2024", "AIME-2025", "AMC-2023")}
    assert [len(v) for v in by_dataset.values()] == [30, 30, 40]
    # AMC answers are JSON floats
    raw = {f"{r['dataset']}-{r['id']}": str(r["answer"]) for r in _rows(data_dir, "aime")}
    # "025" (AIME) and "27.0" (AMC) are stored as the numbers they are
    assert {p.answer for p in aime.problems if raw[p.id] in ("025", "27.0")} >= {"25", "27"}
    assert all(p.answer == p.answer.lstrip("0") or p.answer == "0" for p in aime.problems)
    assert aime.is_correct(next(p for p in aime.problems if raw[p.id] == "025"), "so the answer is \\boxed{25}.")


def test_registry_names(data_dir: Path) -> None:
    assert sorted(BENCHMARK_TASKS) == ["aime", "gsm8k", "math"] == sorted(PROBLEM_FILES)
    assert "math" in thinkctl.tasks.TASKS
    assert isinstance(thinkctl.tasks.get("math"), JsonlProblemsTask)


# -- sampling ---------------------------------------------------------------------------------------------------

def test_sampling_is_deterministic(math: JsonlProblemsTask) -> None:
    a = math.sample(50, seed=7)
    b = math.sample(50, seed=7)
    c = math.sample(50, seed=8)
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.id for p in a] != [p.id for p in c]
    assert len({p.id for p in a}) == 50  # without replacement
    # a smaller draw with the same seed is a prefix of a larger one
    assert [p.id for p in math.sample(10, seed=7)] == [p.id for p in a[:10]]
    order = np.random.default_rng(7).permutation(len(math))[:50]
    assert [p.id for p in a] == [math.problems[i].id for i in order]


@pytest.mark.parametrize("level", [1, 3, 5])
def test_sampling_by_level(math: JsonlProblemsTask, level: int) -> None:
    problems = math.sample(40, seed=0, level=level)
    assert {p.level for p in problems} == {level}
    assert [p.id for p in problems] == [p.id for p in math.sample(40, seed=0, level=level)]


def test_sampling_errors(math: JsonlProblemsTask, gsm8k: JsonlProblemsTask) -> None:
    n_level1 = sum(p.level == 1 for p in math.problems)
    with pytest.raises(ValueError, match=f"exceeds the {n_level1} problems available at level 1"):
        math.sample(n_level1 + 1, seed=0, level=1)
    assert len(math.sample(n_level1, seed=0, level=1)) == n_level1
    with pytest.raises(ValueError, match="exceeds the 1319 problems"):
        gsm8k.sample(1320, seed=0)
    with pytest.raises(ValueError, match="level=6"):
        math.sample(1, seed=0, level=6)
    with pytest.raises(ValueError, match="no difficulty levels"):
        gsm8k.sample(1, seed=0, level=1)
    with pytest.raises(ValueError, match="n="):
        math.sample(-1, seed=0)
    with pytest.raises(ValueError, match="seed="):
        math.sample(1, seed=-3)
    assert math.sample(0, seed=0) == []


# -- loading any file of the schema -----------------------------------------------------------------------------

def test_generic_file_levels_and_gold_from_solution(tmp_path: Path) -> None:
    rows = [_row(0, "squareinches", 2, solution="area is $\\boxed{8\\sqrt{3} \\text{ square inches}}$."),
            _row(1, "7", 4), _row(2, "3", None)]
    task = JsonlProblemsTask(_synthetic(tmp_path, rows), instruction=None)
    assert task.name == "toy" and task.levels == (2, 4)
    assert [p.level for p in task.problems] == [2, 4, None]
    assert task.problems[0].answer == "8\\sqrt{3} \\text{ square inches}"  # the damaged answer field is not used
    assert task.problems[2].prompt == "What is 2?"
    assert task.is_correct(task.problems[0], "\\boxed{8\\sqrt3}")
    raw = JsonlProblemsTask(task.path, gold_from_solution=False)
    assert raw.problems[0].answer == "squareinches"


def test_question_that_uses_boxed_keeps_the_answer_field(tmp_path: Path) -> None:
    row = _row(0, "6", 1, solution="$\\boxed{12}=6$ so the answer is 6.")
    row["question"] = "Let $\\boxed{N}$ be the number of divisors of N. Find $\\boxed{12}$."
    (p,) = load_problems(_synthetic(tmp_path, [row]))
    assert p.answer == "6"


@pytest.mark.parametrize("content, message", [
    ('{"dataset": "Toy", "id": 1, "question": "q"}\n', "missing field"),
    ("not json\n", "not valid JSON"),
    ("[1, 2]\n", "expected a JSON object"),
])
def test_malformed_files_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_row(0)) + "\n\n" + content, encoding="utf-8")
    with pytest.raises(ValueError, match=f"bad.jsonl:3: {message}"):
        load_problems(path)


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'Toy-3' appears twice"):
        load_problems(_synthetic(tmp_path, [_row(3), _row(3)]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        JsonlProblemsTask(tmp_path / "nope.jsonl").sample(1, seed=0)


def test_find_data_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert find_data_dir() == tmp_path
    with pytest.raises(DataNotFoundError, match="lacks problems/math_test4500_no_math500.jsonl"):
        problem_file("math")
    with pytest.raises(ValueError, match="known: aime, gsm8k, math"):
        problem_file("mmlu")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match=f"\\${DATA_ENV_VAR}=.*is not a directory.*export {DATA_ENV_VAR}="):
        find_data_dir()


def test_data_dir_comes_from_the_argument_or_the_environment_only(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    # a shared/data folder beside the working directory is not looked at: only data_dir= and $THINKCTL_DATA count
    (tmp_path / "shared" / "data" / "problems").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    with pytest.raises(DataNotFoundError) as info:
        find_data_dir()
    message = str(info.value)
    assert f"set {DATA_ENV_VAR}" in message and f"export {DATA_ENV_VAR}=" in message and "data_dir=" in message
    with pytest.raises(DataNotFoundError, match=f"set {DATA_ENV_VAR}"):
        gsm8k_task()

    data = tmp_path / "shared" / "data"
    assert find_data_dir(data) == data
    (data / PROBLEM_FILES["gsm8k"]).write_text(json.dumps(_row(0, "18", None)) + "\n", encoding="utf-8")
    task = gsm8k_task(data_dir=data)
    assert task.path == data / PROBLEM_FILES["gsm8k"] and [p.answer for p in task.problems] == ["18"]
    assert BENCHMARK_TASKS["gsm8k"] is gsm8k_task
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "elsewhere"))  # the argument wins over the environment
    assert problem_file("gsm8k", data_dir=data) == task.path
    with pytest.raises(DataNotFoundError, match="data_dir=.*is not a directory"):
        find_data_dir(tmp_path / "nowhere")


# -- answer extraction ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, numeric, expected", [
    ("<think>maybe 3</think>So \\boxed{\\dfrac{1}{2}}.", False, "\\frac{1}{2}"),
    ("\\boxed{3} no wait \\boxed{5}", False, "5"),
    ("\\boxed{\\boxed{7}}", False, "7"),
    ("\\boxed{\\frac{a}{b+\\{1\\}}}", False, "\\frac{a}{b+\\{1\\}}"),
    ("\\fbox{12}", False, "12"),
    ("\\boxed{\\left( 1, \\rightarrow \\right)}", False, "( 1, \\rightarrow )"),
    ("$\\boxed{1,\\!000}$", False, "1000"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", False, "\\frac{3}{4}"),
    ("**Final Answer:** 42", False, "42"),
    ("So the answer is 18 dollars.\nDone", True, "18"),
    ("The answer is: x = 5.", True, "5"),
    ("She makes 9 * 2 = $18 every day.", True, "18"),
    ("\\boxed{\\$70,000}", True, "70000"),
    ("It is 007.50 metres", True, "7.5"),
    ("<think>\\boxed{1}</think>", False, None),                      # answer section is empty
    ("<think>I think it is \\boxed{4}", False, None),                # thinking unfinished
    ("no numbers here", False, None),
    ("\\boxed{{{", False, None),
    ("\\boxed{{{ 3", False, "3"),                                   # unclosed box: fall back to the last number
    ("", False, None),
])
def test_extract_answer(text: str, numeric: bool, expected: str | None) -> None:
    assert extract_final_answer(text, numeric=numeric) == expected


HOSTILE_EXTRACTION = [  # text, the answer it holds; each is a worst case of one of the extraction regexes
    ("\\boxed{" * 200_000, None), ("{" * 500_000 + "\\boxed{1}", "1"), ("9" * 1_000_000, "9" * 1_000_000),
    ("1," * 300_000, "1"), ("The answer is " * 50_000, None), ("\\text{" * 100_000 + "5", "5"),
    ("\\boxed{" + "$" * 1_000_000 + "}", None), ("\\boxed{$" + "1" * 1_000_000 + "$}", "1" * 1_000_000),
]


@pytest.mark.parametrize("text, expected", HOSTILE_EXTRACTION, ids=range(len(HOSTILE_EXTRACTION)))
def test_extract_answer_on_hostile_text(text: str, expected: str | None) -> None:
    """Megabyte inputs built to make a backtracking regex explode give the answer they hold (or None).

    The extraction runs under a SIGALRM deadline so that a regression to super-linear matching fails here (the
    deadline returns None instead of the pair) rather than hanging the test run.
    """
    got = _call_with_deadline(lambda: (extract_final_answer(text), extract_final_answer(text, numeric=True)), 120.0)
    assert got == (expected, expected)


# -- the checker: equivalent answers accepted, wrong ones rejected ----------------------------------------------

@pytest.mark.parametrize("gold, pred", [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\frac12", "\\tfrac{1}{2}"),
    ("0.5", "\\frac{1}{2}"), ("1000", "1,000"), ("1000", "1{,}000"), ("1000", "1,\\!000"), ("1000", "1000.0"),
    ("\\text{(C)}", "C"), ("x+1", "1+x"), ("\\sqrt{2}", "2^{1/2}"), ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("(1,2)", "(1, 2)"), ("[-2,7]", "x \\in [-2,7]"), ("45^\\circ", "45"), ("7.2", "7.2\\%"), ("3", "x=3"),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"), ("y=2x+3", "y = 3 + 2x"), ("0.25", "\\frac14"),
    ("\\begin{pmatrix}1\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),  # MATH's damaged matrices
    ("8\\sqrt{3} \\text{ square inches}", "8\\sqrt{3}"),
])
def test_equivalent_answers_are_accepted(gold: str, pred: str) -> None:
    assert answers_equivalent(gold, pred)
    assert JsonlProblemsTask("unused.jsonl").is_correct(_problem(gold), f"<think>...</think> \\boxed{{{pred}}}")


@pytest.mark.parametrize("gold, text", [
    ("18", "18 dollars"), ("18", "The answer is $18."), ("18", "\\boxed{\\$18}"), ("18", "\\boxed{18\\text{ dollars}}"),
    ("25", "\\boxed{025}"), ("27.0", "\\boxed{27}"), ("70000", "He made $70,000 in profit."), ("18", "\\boxed{18.00}"),
    ("0.5", "\\boxed{\\frac{1}{2}}"),
])
def test_numeric_answers_with_units_are_accepted(gold: str, text: str) -> None:
    task = JsonlProblemsTask("unused.jsonl", numeric=True)
    assert task.is_correct(_problem(gold, numeric=True), text)


@pytest.mark.parametrize("gold, pred", [
    ("\\frac{1}{2}", "0.6"), ("18", "19"), ("1000", "100"), ("x+1", "x-1"), ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("18", "18.5"), ("2", "-2"), ("\\sqrt{2}", "2"), ("(1,2)", "(2,1)"), ("[-2,7]", "(-2,7)"), ("1000", "10,00"),
    ("\\text{(C)}", "D"), ("3", "33"), ("12", "1/2"), ("1/3", "0.33"), ("5", ""), ("", "5"), ("5", "   "),
])
def test_wrong_answers_are_rejected(gold: str, pred: str) -> None:
    assert answers_equivalent(gold, pred) is False
    assert answers_equivalent(gold, pred, numeric=True) is False


def test_math_gold_solutions_are_judged_correct(math: JsonlProblemsTask, data_dir: Path) -> None:
    """The reference solution's boxed answer against the file's own ``answer`` field, for 200 random rows.

    The ``answer`` field was whitespace- and unit-stripped by its source and is damaged in a few rows (e.g.
    ``"squareinches"``, ``"19"`` for ``"19 and 43"``), so the agreement is high but not 1; over all 4500 rows it is
    4488/4500 (99.7 %; math-verify alone, without the string fast path, 4480/4500), and every disagreement is such
    a damaged field. With the default gold (the solution's boxed answer) only MATH-test-4371, whose solution
    deliberately boxes something else, disagrees.
    """
    raw_gold = JsonlProblemsTask(math.path, name="math", gold_from_solution=False)
    rows = {f"{r['dataset']}-{r['id']}": r for r in _rows(data_dir, "math")}
    problems = raw_gold.sample(200, seed=2024)
    verdicts = [raw_gold.is_correct(p, rows[p.id]["solution"]) for p in problems]
    rate = float(np.mean(verdicts))
    misses = [(p.id, p.answer, raw_gold.extract_answer(rows[p.id]["solution"]))
              for p, ok in zip(problems, verdicts) if not ok]
    assert rate >= 0.97, f"gold agreement {rate:.3f} on 200 MATH rows; misses: {misses}"

    misses_default = [p.id for p in math.problems if not math.is_correct(p, rows[p.id]["solution"])]
    assert misses_default == ["MATH-test-4371"]


def test_gsm8k_reference_solutions_by_last_number(gsm8k: JsonlProblemsTask, data_dir: Path) -> None:
    """GSM8K solutions in this file have no '#### N' line: the last-number fallback finds the answer in most."""
    rows = _rows(data_dir, "gsm8k")
    rate = float(np.mean([gsm8k.is_correct(p, r["solution"]) for p, r in zip(gsm8k.problems, rows)]))
    assert 0.95 <= rate < 1.0, rate  # misses: the last sentence ends on another number ("... in 40 minutes")


# -- the checker never raises and stays bounded -----------------------------------------------------------------

HOSTILE = [
    "", " ", "\x00", "\\boxed{\x00}", "\\boxed{{{", "\\boxed{}}}}", "}}}{{{", "\\boxed{\\boxed{\\boxed{1}}}",
    "<think>", "<think><think></think>", "</think>", "\\boxed{" + "9" * 20_000 + "}", "9" * 100_000,
    "\\boxed{10^{10^{10}}}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{(10^{100})!}", "\\boxed{\\frac{1}{0}}",
    "\\boxed{\\sqrt{-1}}", "\\boxed{\\ud800}", "\\boxed{数学}", "١٢٣", "\\boxed{\\begin{pmatrix}}",
    "\\boxed{x^{x^{x^{x^{x^{x}}}}}}", "\\boxed{" + "(" * 500 + "}", "\\boxed{\\left(}", "$" * 1000,
    "\\boxed{" + "\\frac{1}{" * 300 + "}" * 300 + "}", "The answer is " + "\\" * 10_000, "\\boxed{\\}",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_never_raises(text: str) -> None:
    for task in (JsonlProblemsTask("unused.jsonl", verify_timeout_s=1.0),
                 JsonlProblemsTask("unused.jsonl", numeric=True, verify_timeout_s=1.0)):
        assert task.is_correct(_problem("5"), text) is False
        assert task.is_correct(_problem("\\frac{1}{2}"), text) is False


def _timed_out(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "thinkctl.tasks.verify" and "timed out" in r.msg]


def test_a_comparison_past_its_deadline_is_cut_and_judged_wrong(caplog: pytest.LogCaptureFixture) -> None:
    """``10^{10^{10}}`` makes sympy compute for ever: the deadline cuts it, in the main thread and in a worker."""
    with caplog.at_level("WARNING", logger="thinkctl.tasks.verify"):
        assert answers_equivalent("x+1", "1+x", timeout_s=1.0) is True
        assert _timed_out(caplog) == []
        assert answers_equivalent("5", "10^{10^{10}}", timeout_s=0.5) is False
        assert _timed_out(caplog) == ["answer comparison timed out after 0.5 s (gold='5', pred='10^{10^{10}}'); "
                                      "counting it as wrong"]
        caplog.clear()
        with ThreadPoolExecutor(max_workers=1) as pool:  # no SIGALRM here: the helper process enforces it
            assert pool.submit(answers_equivalent, "5", "10^{10^{10}}", timeout_s=0.5).result() is False
        assert len(_timed_out(caplog)) == 1


def test_non_string_input_is_wrong_not_an_error() -> None:
    task = JsonlProblemsTask("unused.jsonl")
    for junk in (None, 5, b"\\boxed{5}", ["5"]):
        assert task.is_correct(_problem("5"), junk) is False  # type: ignore[arg-type]
        assert task.extract_answer(junk) is None  # type: ignore[arg-type]
        assert answers_equivalent("5", junk) is False  # type: ignore[arg-type]


def test_bad_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match="verify_timeout_s=0"):
        JsonlProblemsTask("unused.jsonl", verify_timeout_s=0)


FRAGMENTS = st.sampled_from(["\\boxed{", "{", "}", "\\frac", "^", "_", "\\sqrt", "</think>", "<think>", "$", "\\",
                             "Final Answer:", "the answer is", "1", "0.5", "1,000", "-", "/", "x", "=", " ", "\\text{",
                             "\\begin{pmatrix}", "&", "\\\\", "%", "!", "(", ")", "[", "]", "\\infty", "\x00", "π"])
TEXTS = st.one_of(st.text(max_size=300), st.lists(FRAGMENTS, max_size=40).map("".join))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, gold=st.sampled_from(["5", "\\frac{1}{2}", "x+1", "(1,2)"]), numeric=st.booleans())
def test_is_correct_never_raises_on_arbitrary_text(text: str, gold: str, numeric: bool) -> None:
    task = JsonlProblemsTask("unused.jsonl", numeric=numeric, verify_timeout_s=1.0)
    assert isinstance(task.is_correct(_problem(gold, numeric=numeric), text), bool)
    answer = task.extract_answer(text)
    assert answer is None or isinstance(answer, str)


def test_checks_from_worker_threads_agree_with_the_main_thread() -> None:
    """math-verify's own timeouts use signal.alarm (main thread only); from threads a helper process checks."""
    task = JsonlProblemsTask("unused.jsonl", verify_timeout_s=2.0)
    cases = [("\\frac{1}{2}", "\\boxed{0.5}"), ("x+1", "\\boxed{1+x}"), ("\\sqrt{2}", "\\boxed{2^{1/2}}"),
             ("5", "\\boxed{6}"), ("5", "\\boxed{10^{10^{10}}}"), ("(1,2)", "\\boxed{(2,1)}")]
    expected = [task.is_correct(_problem(g), t) for g, t in cases]
    assert expected == [True, True, True, False, False, False]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda c: task.is_correct(_problem(c[0]), c[1]), cases * 2))
    assert got == expected * 2


def test_main_thread_alarm_state_is_restored() -> None:
    assert threading.current_thread() is threading.main_thread()  # pytest runs tests in the main thread
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert answers_equivalent("x+1", "1+x")  # goes through math-verify under our own deadline
        assert answers_equivalent("5", "10^{10^{10}}", timeout_s=1.0) is False
        assert signal.getsignal(signal.SIGALRM) is handler
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20.0 < remaining <= 30.0
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_deadline_pauses_automatic_gc_and_restores_it() -> None:
    """A deadline raised inside a gc callback would be unraisable; automatic gc is off while the deadline is armed."""
    seen: list[bool] = []

    def fn() -> bool:
        seen.append(gc.isenabled())
        return True

    assert gc.isenabled()
    assert _call_with_deadline(fn, 5.0) is True
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:  # a caller that had gc off keeps it off
        assert _call_with_deadline(fn, 5.0) is True
        assert not gc.isenabled()
    finally:
        gc.enable()
