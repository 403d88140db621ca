"""ThoughtSwitchPenalty (TIP) on hand-made scores."""

from __future__ import annotations

import pytest
import torch

from thinkctl.stopping import ThoughtSwitchPenalty, switch_token_ids


def test_switch_tokens_cover_case_and_space_variants(tok, tok_pieces):
    alt = tok.convert_tokens_to_ids("Alternatively")
    ids = switch_token_ids(tok, ["Alternatively"])
    # "Alternatively" is one added token; " Alternatively" is a space then that token (the space is skipped);
    # lowercase "alternatively" is character pieces: its first piece "a" is penalised
    assert ids == [alt, tok.encode("a")[0]]
    assert tok.encode(" ")[0] not in ids
    # multi-piece words: the first piece of each variant
    assert switch_token_ids(tok_pieces, ["Hmm"]) == [tok_pieces.encode("H")[0], tok_pieces.encode("h")[0]]


def test_penalty_applies_to_thinking_rows_within_beta_only(tok):
    tip = ThoughtSwitchPenalty(tok, alpha=3.0, beta=3)
    p_think = tok.encode("q<think>\n")
    p_answer = tok.encode("q<think></think>\n")
    width = max(len(p_think), len(p_answer))
    x = torch.tensor([[0] * (width - len(p)) + p for p in (p_think, p_answer)])
    scores = torch.randn(2, len(tok))
    before = scores.clone()
    out = tip(x, scores)
    assert torch.equal(scores, before)  # not edited in place
    delta = out - scores
    assert torch.allclose(delta[0, tip.token_ids], torch.tensor(-3.0))
    mask = torch.ones(len(tok), dtype=torch.bool)
    mask[tip.token_ids] = False
    assert (delta[0, mask] == 0).all() and (delta[1] == 0).all()  # other tokens and answering rows untouched
    for step in range(1, 4):
        x = torch.cat([x, torch.tensor([[7], [7]])], dim=1)
        out = tip(x, scores)
        penalised = (out[0, tip.token_ids] < scores[0, tip.token_ids]).all().item()
        assert penalised == (step < 3)  # thinking tokens 1, 2 are inside beta=3; 3 is not


def test_zero_alpha_is_identity(tok):
    tip = ThoughtSwitchPenalty(tok, alpha=0.0)
    x = torch.tensor([tok.encode("q<think>\n")])
    scores = torch.randn(1, len(tok))
    assert torch.equal(tip(x, scores), scores)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=-1.0), "alpha=-1.0 must be a finite non-negative"),
    (dict(alpha=float("inf")), "alpha=inf"),
    (dict(beta=-5), "beta=-5"),
    (dict(words=()), "must be a non-empty sequence"),
    (dict(words="Alternatively"), "must be a non-empty sequence"),
    (dict(words=("Alternativeß",)), "cannot be encoded"),
    (dict(think_end="</thînk>"), "think_end="),
])
def test_bad_arguments(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThoughtSwitchPenalty(tok, **kwargs)
