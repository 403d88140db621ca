"""The hooks on thinkctl's embedded model (skipped while no checkpoint is shipped)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

from thinkctl.stopping import BudgetForcing, HiddenStateTap, ProbeStopping, ThoughtSwitchPenalty, build_inputs


@pytest.fixture(scope="module")
def embedded():
    embedded_mod = pytest.importorskip("thinkctl.embedded")
    try:
        return embedded_mod.load_embedded()
    except FileNotFoundError as exc:
        pytest.skip(f"no embedded checkpoint: {exc}")


def test_forced_stops_give_extractable_answers(embedded):
    import thinkctl

    model, tokenizer = embedded
    task = thinkctl.tasks.get("arith")
    problems = task.sample(4, seed=3)
    batch = build_inputs(tokenizer, [p.prompt for p in problems], style="none")
    with HiddenStateTap(model, layers=(-1,)) as tap:
        probe = ProbeStopping(tap, lambda h: torch.zeros(h.shape[0]), threshold=0.5, every=4)
        bf = BudgetForcing(tokenizer, max_tokens=6, stop_rules=[probe])
        out = model.generate(**batch, max_new_tokens=40, do_sample=False,
                             logits_processor=LogitsProcessorList([ThoughtSwitchPenalty(tokenizer), bf]))
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=False)
    assert (bf.think_tokens <= 6).all()
    for text, forced in zip(texts, bf.forced_stop.tolist()):
        if forced:
            assert task.extract_answer(text) is not None, text
    assert (probe.probes[bf.think_tokens >= 4] >= 1).all()  # probed every 4 thinking tokens
