import numpy as np
import pytest

from thinkctl.generation import chat_prefix, reasoning_format
from thinkctl.models import load_model
from thinkctl.process import CallableStepScorer, ExactStepChecker
from thinkctl.process.search import SearchConfig, step_search
from thinkctl.tasks import TASKS


@pytest.fixture(scope="module")
def embedded():
    model, tok = load_model("embedded")
    return model, tok, reasoning_format(tok)


@pytest.fixture(scope="module")
def arith_problems(embedded):
    _, tok, _ = embedded
    task = TASKS.get("arith")()
    probs = task.sample(4, seed=31, level=3)
    return task, probs, [chat_prefix(tok, p.prompt) for p in probs]


def test_config_is_checked():
    with pytest.raises(ValueError, match="multiple of beam_width"):
        SearchConfig(n=6, beam_width=4)
    with pytest.raises(ValueError, match="median"):
        SearchConfig(n=4, aggregation="median")
    with pytest.raises(ValueError, match="temperature"):
        SearchConfig(n=4, temperature=0.0)


@pytest.mark.parametrize("method", ["beam", "dvts"])
def test_search_answers_every_problem_reproducibly(embedded, arith_problems, method):
    model, tok, fmt = embedded
    task, probs, prefixes = arith_problems
    cfg = SearchConfig(n=4, beam_width=2, max_thinking_tokens=160, seed=3)
    res = step_search(model, tok, fmt, task, probs, prefixes, ExactStepChecker(), cfg, method=method)
    again = step_search(model, tok, fmt, task, probs, prefixes, ExactStepChecker(), cfg, method=method)
    assert [r.answer for r in res] == [r.answer for r in again] and [r.tokens for r in res] == [r.tokens for r in again]
    for r in res:
        search, vote = r.trace
        assert search["method"] == method and search["finished"] >= 1
        assert r.answer in vote["weights"] and 0.0 <= r.confidence <= 1.0
        assert r.thinking_tokens < r.tokens  # the answers' tokens count too
        # every candidate's steps count: at least one full solution's thinking per finished solution
        assert r.tokens >= search["finished"] * 5
        # the winner has the largest summed score; with the exact checker that is a fully verified answer if any
        assert vote["weights"][r.answer] == max(vote["weights"].values())
        if search["method"] == "beam":
            assert r.samples == cfg.n


def test_stop_score_ends_the_search_early(embedded, arith_problems):
    model, tok, fmt = embedded
    task, probs, prefixes = arith_problems
    full = step_search(model, tok, fmt, task, probs, prefixes, ExactStepChecker(), SearchConfig(n=4, beam_width=2))
    early = step_search(model, tok, fmt, task, probs, prefixes, ExactStepChecker(),
                        SearchConfig(n=4, beam_width=2, stop_score=1.0))
    assert sum(r.tokens for r in early) < sum(r.tokens for r in full)


def test_a_constant_scorer_makes_a_majority_vote_and_a_bad_scorer_is_named(embedded, arith_problems):
    model, tok, fmt = embedded
    task, probs, prefixes = arith_problems
    flat = CallableStepScorer(lambda prompt, steps: np.ones(len(steps)), name="flat")
    res = step_search(model, tok, fmt, task, probs[:1], prefixes[:1], flat, SearchConfig(n=4, beam_width=2),
                      method="beam")
    weights = res[0].trace[1]["weights"]
    assert all(float(w).is_integer() for w in weights.values())  # each finished solution weighs 1
    bad = CallableStepScorer(lambda prompt, steps: [0.5], name="broken")
    with pytest.raises(ValueError, match="'broken' returned 1 scores"):
        step_search(model, tok, fmt, task, probs[:1], prefixes[:1], bad, SearchConfig(n=4, beam_width=2))


def test_process_probe_reads_the_hidden_state_at_each_step_end(embedded):
    import torch

    from thinkctl.process.probe import ProcessProbeScorer

    model, tok, _ = embedded
    seen = []

    class Recorder:
        layer = -2

        def __call__(self, hidden):
            seen.append(hidden.clone())
            return torch.sigmoid(hidden[:, 0]).numpy()

    p = TASKS.get("arith")().sample(1, seed=5, level=2)[0]
    steps = ["8+10=18", "18-17=1"]
    scores = ProcessProbeScorer(model, tok, Recorder()).score(p, steps)
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
    ids = chat_prefix(tok, p.prompt) + tok("8+10=18\n18-17=1\n", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    n_layers = len(hs) - 1
    ends = [i for i, t in enumerate(ids) if i >= len(ids) - 16 and "\n" in tok.decode([t])][-2:]
    assert torch.allclose(seen[0], hs[(-2) % n_layers + 1][0, ends], atol=1e-5)

    class WrongLayer(Recorder):
        layer = 99

    with pytest.raises(ValueError, match="out of range"):
        ProcessProbeScorer(model, tok, WrongLayer())
