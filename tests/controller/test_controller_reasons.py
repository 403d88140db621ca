"""The controller's stop-reason vocabulary and its sampling seeds."""

from __future__ import annotations

import pytest

from thinkctl.controller import STOP_REASONS, StopReason, sample_seed
from thinkctl.controller.reasons import thinking_stop_reason
from thinkctl.controller.seeding import batch_index, wave_index
from thinkctl.stopping import DeadlineStopping
from thinkctl.stopping.rules import StopRule


class _Custom(StopRule):
    def _decide(self, input_ids, scores, thinking, n_tokens):
        return [False] * input_ids.shape[0]


@pytest.mark.parametrize("reported, kw, expected", [
    (None, {}, StopReason.CLOSED),
    (None, {"has_think_end": False}, StopReason.EOS),
    ("eos", {}, StopReason.EOS),
    ("max_tokens", {}, StopReason.CAP),
    ("max_tokens", {"no_thinking": True}, StopReason.DEADLINE),
    ("DeadlineStopping", {}, StopReason.DEADLINE),
    ("_Custom", {}, StopReason.RULE),
    ("max_tokens", {"dropped": True}, StopReason.LOW_CONFIDENCE),
])
def test_thinking_stop_reason_maps_every_case_to_a_declared_reason(reported, kw, expected):
    rules = [DeadlineStopping(10.0), _Custom()]
    args = {"no_thinking": False, "has_think_end": True, "dropped": False, **kw}
    reason = thinking_stop_reason(reported, rules, **args)
    assert reason is expected and reason.value in STOP_REASONS


def test_the_vocabulary_is_plain_strings_and_documented():
    assert STOP_REASONS == {"closed", "eos", "cap", "deadline", "confident", "consistent", "low_confidence", "rule",
                            "no_votes", "settled", "budget"}
    for r in StopReason:
        assert r == r.value and f"``{r.name}``" in StopReason.__doc__


def test_sample_seeds_are_the_controllers_published_ones():
    # chunk 0, wave 0, sub-batch 0 under seed 0; and the general formula
    assert sample_seed(0, batch_index(wave_index(0, 0), 0)) == 7919
    for base, chunk, wave, sub in [(0, 0, 1, 0), (3, 2, 5, 1), (2000, 1, 0, 3)]:
        assert sample_seed(base, batch_index(wave_index(chunk, wave), sub)) == \
            base * 1_000_003 + ((chunk * 10_007 + wave) * 3 + 1) * 7919 + sub
