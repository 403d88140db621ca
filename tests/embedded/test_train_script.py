"""The training script runs end to end on a tiny config, resumes after an interruption, and its output loads."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from thinkctl.embedded import METADATA_FILE, load_embedded
from thinkctl.embedded.tokenizer import render_chat
from thinkctl.embedded.train import (HELD_OUT_LEVELS, ModelShape, TrainConfig, bench_compile, build_examples,
                                     encode_examples, train, trained_levels)
from thinkctl.tasks import get as get_task

from benchmark_loader import load_benchmark

TINY = TrainConfig(compile=False, n_problems=240, steps=4, batch_size=8, warmup_steps=2, vocab_size=300,
                   checkpoint_every=2,
                   shape=ModelShape(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2))


def test_examples_are_deterministic_for_a_seed():
    a = build_examples(TINY)
    b = build_examples(TINY)
    c = build_examples(replace(TINY, seed=1))
    assert [(e.prompt, e.thought, e.answer) for e in a] == [(e.prompt, e.thought, e.answer) for e in b]
    assert [e.prompt for e in a] != [e.prompt for e in c]
    forced = sum(e.forced for e in a) / len(a)
    assert 0.1 < forced < 0.4  # about forced_fraction=0.25


def test_held_out_levels_never_reach_the_training_data():
    assert HELD_OUT_LEVELS == {"modeq": (7,)} and trained_levels("modeq") == [1, 2, 3, 4, 5, 6]
    assert trained_levels("arith") == list(get_task("arith").levels)
    prompts = [e.prompt for e in build_examples(replace(TINY, n_problems=1200))]
    assert not any("(mod 19)" in p for p in prompts)
    assert sum("(mod 17)" in p for p in prompts) == 1200 // 12  # each trained level gets its even share


def test_compiled_training_follows_the_eager_loss_curve(tmp_path):
    eager = train(tmp_path / "eager", TINY, progress=False)
    compiled = train(tmp_path / "compiled", replace(TINY, compile=True), progress=False)
    meta_e, meta_c = (json.loads((d / METADATA_FILE).read_text()) for d in (eager, compiled))
    assert meta_e["compiled"] is False and meta_c["compiled"] is True
    loss_e, loss_c = ([h[1] for h in m["loss_history"]] for m in (meta_e, meta_c))
    assert len(loss_e) == TINY.steps and loss_c == pytest.approx(loss_e, abs=1e-3)


def test_compile_without_a_cxx_compiler_trains_eagerly(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("thinkctl.embedded.train.shutil.which", lambda name: None)
    with caplog.at_level("WARNING", logger="thinkctl.embedded.train"):
        out = train(tmp_path / "m", replace(TINY, compile=True, steps=2), progress=False)
    assert json.loads((out / METADATA_FILE).read_text())["compiled"] is False
    assert "no C++ compiler" in caplog.text


def test_bench_compile_times_both_variants_on_the_same_batches():
    result = bench_compile(TINY, steps=4, block=2, n_problems=240, progress=False)
    assert result["steps"] == 4 and len(result["block_ratios"]) == 2
    assert result["eager_s_per_step"] > 0 and result["compiled_s_per_step"] > 0
    assert set(result["warmup_s"]) == {"eager", "compiled"}
    eager_s, compiled_s = result["eager_s_per_step"], result["compiled_s_per_step"]
    assert result["ratio"] == pytest.approx(compiled_s / eager_s)
    # compile time is the compiled warm-up's excess over the eager one, and it is what break-even is measured by
    warm = result["warmup_s"]
    assert result["compile_s"] == pytest.approx(max(0.0, warm["compiled"] - warm["eager"]))
    if compiled_s < eager_s:
        assert result["break_even_steps"] == pytest.approx(result["compile_s"] / (eager_s - compiled_s))
    else:
        assert result["break_even_steps"] is None
    assert result["max_abs_loss_diff"] < 1e-3  # the same initial weights and batches, so the same losses
    with pytest.raises(ValueError, match="at least 1"):
        bench_compile(TINY, steps=0)


def test_bench_train_script_writes_its_figures_and_refuses_a_gpu(tmp_path, capsys):
    bench_train = load_benchmark("bench_train")
    out = tmp_path / "bench.json"
    assert bench_train.main(["--tiny", "--json", str(out), "--bench-steps", "2", "--block", "1",
                 "--bench-problems", "240", "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["batch_size"] == 8 and len(result["block_ratios"]) == 2
    assert bench_train.main(["--tiny", "--json", str(out), "--device", "cuda"]) == 2
    assert "drop --device" in capsys.readouterr().err


def test_forced_examples_train_only_on_the_answer(tmp_path):
    out = train(tmp_path / "m", TINY, progress=False)
    _, tok = load_embedded(out)
    examples = build_examples(TINY)
    ids, masks = encode_examples(tok, examples)
    for e, x, m in zip(examples, ids, masks):
        n_prompt = len(tok(e.prompt, add_special_tokens=False)["input_ids"])
        assert m[:n_prompt].sum() == 0  # never the prompt
        if e.forced:
            answer_len = len(tok(" " + e.answer, add_special_tokens=False)["input_ids"]) + 1
            assert m.sum() == answer_len and m[-answer_len:].all()  # never the cut thought or the forced "</think>"


def test_tiny_training_writes_a_loadable_checkpoint(tmp_path):
    out = train(tmp_path / "m", TINY, progress=False)
    model, tok = load_embedded(out)
    assert model.config.model_type == "llama"
    assert (out / "model.safetensors").is_file() and not (out / "resume").exists()
    prompt = "Evaluate from left to right: 3 + 4"
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_dict=False)
    assert tok.decode(ids) == render_chat(prompt)  # the template is exactly the training prefix
    gen = model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == len(ids) + 5 or tok.eos_token_id in gen[0].tolist()


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    seen: list[int] = []

    def crash_at_3(step: int, loss: float) -> None:
        seen.append(step)
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "m", TINY, progress=False, on_step=crash_at_3)
    assert (tmp_path / "m" / "resume" / "state.pt").is_file()
    resumed: list[int] = []
    train(tmp_path / "m", TINY, progress=False, on_step=lambda s, _: resumed.append(s))
    assert seen == [1, 2, 3] and resumed == [3, 4]  # continues after the step-2 checkpoint


def test_answer_cuts_change_only_the_cut_of_arith_forced_examples():
    cfg = replace(TINY, n_problems=1200)
    base, cut = build_examples(cfg), build_examples(replace(cfg, answer_cut_share=1.0))
    assert [(e.prompt, e.forced) for e in base] == [(e.prompt, e.forced) for e in cut]  # same problems, same draws
    changed = 0
    for b, c in zip(base, cut):
        if not c.forced or "mod" in c.prompt:  # free examples and modeq: untouched
            assert (b.thought, b.answer) == (c.thought, c.answer)
            continue
        # every arith forced example is cut inside its last forward step, just after the "="
        head, _, partial = c.thought.rpartition("\n")
        assert partial.endswith("=") and partial.count("=") == 1
        changed += (b.thought, b.answer) != (c.thought, c.answer)
    assert changed > 20
    half = build_examples(replace(cfg, answer_cut_share=0.5))
    n_half = sum(h.thought != b.thought for h, b in zip(half, base))
    assert 0.25 * changed < n_half < 0.75 * changed


def test_masked_slips_are_read_but_never_trained_on(tmp_path):
    out = train(tmp_path / "m", TINY, progress=False)
    _, tok = load_embedded(out)
    cfg = replace(TINY, n_problems=600, style=replace(TINY.style, p_slip=0.5))
    plain, masked = build_examples(cfg), build_examples(replace(cfg, mask_slips=True))
    (ids_p, mask_p), (ids_m, mask_m) = encode_examples(tok, plain), encode_examples(tok, masked)
    n_masked = 0
    for e, x, mp, mm in zip(masked, ids_m, mask_p, mask_m):
        assert (mm <= mp).all()  # masking only ever removes loss
        dropped = tok.decode(x[(mp == 1) & (mm == 0)].tolist())
        if e.no_loss:
            assert not e.forced
            n_masked += 1
            assert dropped == "".join(e.thought[a:b] for a, b in e.no_loss)  # exactly the wrong digits
        else:
            assert dropped == ""
    assert n_masked > 20
    assert [x.tolist() for x in ids_p] == [x.tolist() for x in ids_m]  # same tokens, only the mask differs


def test_family_overrides_set_one_familys_style_and_masking():
    cfg = replace(TINY, n_problems=600, mask_slips=True, style=replace(TINY.style, p_slip=0.5),
                  family_overrides={"modeq": {"p_slip": 0.2, "mask_slips": False}})
    mirrored = replace(TINY, n_problems=600, mask_slips=False, style=replace(TINY.style, p_slip=0.2),
                       family_overrides={"arith": {"p_slip": 0.5, "mask_slips": True}})
    assert cfg.family_setup("arith") == (replace(TINY.style, p_slip=0.5), True)
    assert cfg.family_setup("modeq") == (replace(TINY.style, p_slip=0.2), False)
    examples = build_examples(cfg)
    assert examples == build_examples(mirrored)  # the same setup, spelled from the other side
    is_arith = ["Evaluate from left to right" in e.prompt for e in examples]
    masked_is_arith = [a for a, e in zip(is_arith, examples) if e.no_loss]
    assert masked_is_arith and all(masked_is_arith)  # only arith's slips leave the loss
    assert any(not a and not e.forced for a, e in zip(is_arith, examples))  # and modeq's full traces are there


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="forced_fraction"):
        TrainConfig(forced_fraction=1.0)
    with pytest.raises(ValueError, match="answer_cut_share"):
        TrainConfig(answer_cut_share=1.5)
    with pytest.raises(ValueError, match="num_attention_heads"):
        TrainConfig(shape=ModelShape(hidden_size=30, num_attention_heads=4))
    with pytest.raises(ValueError, match="trained families are arith, modeq"):
        TrainConfig(family_overrides={"lists": {"p_slip": 0.1}})
    with pytest.raises(ValueError, match="sets p_slp; known keys"):
        TrainConfig(family_overrides={"modeq": {"p_slp": 0.1}})
    with pytest.raises(ValueError, match="p_slip=2.0 must be a probability"):
        TrainConfig(family_overrides={"modeq": {"p_slip": 2.0}})
    with pytest.raises(ValueError, match="p_slip=True must be a probability"):
        TrainConfig(family_overrides={"modeq": {"p_slip": True}})
    with pytest.raises(ValueError, match="split_checks=1.0 must be True or False"):
        TrainConfig(family_overrides={"arith": {"split_checks": 1.0}})
    with pytest.raises(ValueError, match="mask_slips=0.0; use True or False"):
        TrainConfig(family_overrides={"arith": {"mask_slips": 0.0}})


def test_second_stage_continues_from_a_checkpoint(tmp_path):
    first = train(tmp_path / "a", TINY, progress=False)
    second = train(tmp_path / "b", replace(TINY, seed=1, init_from=str(first)), progress=False)
    m1, t1 = load_embedded(first)
    m2, t2 = load_embedded(second)
    assert t1.get_vocab() == t2.get_vocab()  # same tokenizer, not a retrained one
    assert not torch.equal(m1.model.embed_tokens.weight, m2.model.embed_tokens.weight)  # it did train further


def test_cli_options_reach_the_recorded_config(tmp_path, capsys):
    import json

    from thinkctl.cli import main

    rc = main(["train-embedded", "--tiny", "--out", str(tmp_path / "m"), "--p-check", "0.9", "--steps", "2",
               "--batch-size", "4", "--answer-cut-share", "0.5", "--split-checks", "--mask-slips", "--p-slip", "0.3",
               "--family", "modeq:p_slip=0.1,mask_slips=false", "--device", "cpu", "--no-progress"])
    assert rc == 0
    cfg = json.loads((tmp_path / "m" / "thinkctl_embedded.json").read_text())["config"]
    assert cfg["style"]["p_check"] == 0.9 and cfg["steps"] == 2 and cfg["batch_size"] == 4
    assert cfg["answer_cut_share"] == 0.5 and cfg["mask_slips"] is True
    assert cfg["style"]["split_checks"] is True and cfg["style"]["p_slip"] == 0.3
    assert cfg["family_overrides"] == {"modeq": {"p_slip": 0.1, "mask_slips": False}}
    assert main(["train-embedded", "--tiny", "--out", str(tmp_path / "bad"), "--family", "modeq:p_slip"]) == 2
    assert "'p_slip' is not KEY=VALUE" in capsys.readouterr().err
    assert main(["train-embedded", "--tiny", "--out", str(tmp_path / "bad"), "--p-check", "1.5"]) == 2
    assert "p_check=1.5 must be a probability" in capsys.readouterr().err


def test_epochs_reshuffle_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    # 24 examples at batch 8: three batches per epoch, so 8 steps cross two epoch boundaries
    cfg = replace(TINY, n_problems=24, steps=8, checkpoint_every=4)
    whole: list[float] = []
    train(tmp_path / "a", cfg, progress=False, on_step=lambda s, loss: whole.append(loss))

    def crash_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", cfg, progress=False, on_step=crash_at_5)
    resumed: list[float] = []
    train(tmp_path / "b", cfg, progress=False, on_step=lambda s, loss: resumed.append(loss))
    assert len(whole) == 8 and len(resumed) == 4  # steps 5..8, from the step-4 checkpoint (inside epoch 2)
    assert resumed == pytest.approx(whole[4:], rel=1e-5)
