"""The gym report pipeline, on a tiny model trained for a few steps (fast; the real figures come from the CLI)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from thinkctl.cli import main
from thinkctl.embedded import load_embedded
from thinkctl.embedded.gym import (GymConfig, _majority, _middle, _per_level, gym_report, paired_step,
                                   self_rechecked)
from thinkctl.embedded.train import ModelShape, TrainConfig, train

TINY = TrainConfig(compile=False, n_problems=240, steps=3, batch_size=8, warmup_steps=1, vocab_size=300,
                   shape=ModelShape(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = train(tmp_path_factory.mktemp("tiny") / "m", TINY, progress=False)
    return load_embedded(out)


def test_majority_vote_breaks_ties_by_first_seen():
    assert _majority(["3", "4", "4", "3"]) == "3"
    assert _majority([None, "7", None]) == "7"
    assert _majority([None, None]) is None


@pytest.mark.parametrize("n_levels, middle", [(1, [1]), (3, [2]), (4, [2, 3]), (5, [2, 3, 4]), (6, [3, 4]),
                                               (7, [3, 4, 5])])
def test_middle_levels(n_levels, middle):
    assert _middle(list(range(1, n_levels + 1))) == middle


def test_every_level_gets_the_same_count_and_all_together_at_least_n():
    assert _per_level(300, range(6)) == 50 and _per_level(300, range(7)) == 43  # 301 >= 300
    assert _per_level(5, range(7)) == 1 and _per_level(10, ()) == 10


def test_report_has_every_measure_for_every_family(tiny_model):
    model, tok = tiny_model
    cfg = replace(GymConfig(), n=12, samples=2, max_new_tokens=24, batch_size=16)
    rep = gym_report(model, tok, cfg, progress=False)
    for name in cfg.tasks:
        fam = rep["families"][name]
        n_levels = len(fam["levels"])
        assert fam["n_problems"] == n_levels * -(-12 // n_levels)  # at least n, the same number per level
        assert set(fam["forced"]) == {str(f) for f in cfg.fractions}
        voted = fam["targets"]["2_vote_gain_middle_levels_ge_0.05"]["levels"]
        assert voted == (["3", "4"] if n_levels == 6 else ["3", "4", "5"])
        for lvl in fam["levels"]:
            row = fam["by_level"][lvl]
            assert {"greedy", "forced"} <= set(row)
            assert 0.0 <= row["self_rechecked"] <= 1.0
            if lvl in voted:
                assert row["single_sample"]["n"] == 2 * row["greedy"]["n"] and "majority@2" in row
            else:
                assert "single_sample" not in row
        assert list(fam["forced_steps"]) == ["0.25->0.5", "0.5->0.75", "0.75->1.0"]
        for key, step in fam["forced_steps"].items():
            a, b = key.split("->")
            assert step["gained"] + step["lost"] <= fam["n_problems"] and 0.0 <= step["mcnemar_p"] <= 1.0
            # the paired change is the change of the two accuracies on the same problems
            assert step["delta"] == pytest.approx(fam["forced"][b]["accuracy"] - fam["forced"][a]["accuracy"])
        t = fam["targets"]
        assert {"1_easiest_greedy_ge_0.90", "2_vote_gain_middle_levels_ge_0.05", "3_forced_accuracy_rises",
                "4_overthinking_ge_0.30", "5_wait_effect"} <= set(t)
        # an untrained model solves nothing: targets that need skill must read as missed, not met
        assert t["1_easiest_greedy_ge_0.90"]["met"] is False


def test_bad_gym_config():
    with pytest.raises(ValueError, match="prompt_style"):
        GymConfig(prompt_style="chatty")
    with pytest.raises(ValueError, match="vote_levels"):
        GymConfig(vote_levels="some")
    with pytest.raises(ValueError, match="overthink_fraction"):
        GymConfig(overthink_fraction=0.3)


def test_cli_writes_json(tiny_model, tmp_path, monkeypatch, capsys):
    model, tok = tiny_model
    monkeypatch.setattr("thinkctl.models.load_model", lambda spec, **kw: (model, tok))
    out = tmp_path / "gym.json"
    rc = main(["gym-report", "--n", "6", "--samples", "2", "--max-new-tokens", "16", "--tasks", "arith",
               "--json", str(out), "--no-progress"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["config"]["n"] == 6 and "arith" in rep["families"]
    assert "greedy by level" in capsys.readouterr().out


def test_auto_prompt_style_knows_train_embedded_checkpoints(tmp_path):
    from thinkctl.commands.gym_report import is_embedded_kind
    from thinkctl.embedded import METADATA_FILE

    assert is_embedded_kind("embedded") and not is_embedded_kind("smollm2")
    assert not is_embedded_kind(str(tmp_path))  # any other local model folder: instruct prompts
    (tmp_path / METADATA_FILE).write_text("{}")  # what train-embedded writes beside its weights
    assert is_embedded_kind(str(tmp_path))


def test_self_rechecked_counts_wait_lines_the_model_wrote():
    thinking = ["4-3=1\nWait, let me check.\n1+3=4 ok\n", "4-3=1\n", "Wait, 4-3=1\n", "it said Wait\n", ""]
    assert self_rechecked(thinking, "Wait") == [True, False, True, False, False]


def test_paired_step_counts_changed_problems_and_tests_them_exactly():
    before = [True] * 6 + [False] * 4
    after = [False] * 6 + [False] * 4  # six lost, none gained: two-sided binomial p = 2 / 2**6
    assert paired_step(before, after) == {"gained": 0, "lost": 6, "delta": -0.6, "mcnemar_p": 0.0312}
    mixed = paired_step([True, False, True, False], [False, True, True, False])  # one each way: no evidence
    assert (mixed["gained"], mixed["lost"], mixed["delta"], mixed["mcnemar_p"]) == (1, 1, 0.0, 1.0)
    assert paired_step([True, False], [True, False])["mcnemar_p"] == 1.0  # nothing changed
    with pytest.raises(ValueError, match="same problems"):
        paired_step([True], [True, False])
