"""Trace collection: labels are right, states match a direct forward pass, a SIGKILLed run resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

import thinkctl
from thinkctl.embedded import load_embedded
from thinkctl.embedded.train import ModelShape, TrainConfig, train
from thinkctl.generation import chat_prefix
from thinkctl.traces import CollectConfig, TraceStore, collect

TINY = TrainConfig(compile=False, n_problems=240, steps=3, batch_size=8, warmup_steps=1, vocab_size=300,
                   shape=ModelShape(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2))
CFG = CollectConfig(task="arith", n_problems=6, samples=2, max_new_tokens=20, every=4, shard_problems=2,
                    batch_size=8, forward_batch_size=4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return train(tmp_path_factory.mktemp("tiny") / "m", TINY, progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_embedded(tiny_dir)


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    return _collect(tiny, tmp_path_factory.mktemp("store") / "s")


def _collect(tiny, out, cfg=CFG):
    model, tok = tiny
    task = thinkctl.tasks.get(cfg.task)
    return collect(model, tok, task, task.sample(cfg.n_problems, seed=cfg.seed), str(out), cfg, progress=False)


def test_store_shapes_and_labels(store):
    rows = store.samples()
    assert len(rows) == CFG.n_problems * CFG.samples
    assert sum(r["greedy"] for r in rows) == CFG.n_problems
    task = thinkctl.tasks.get("arith")
    for r in rows:
        assert r["correct"] == task.is_correct(thinkctl.tasks.Problem(r["problem_id"], "", r["gold"]), r["text"])
        positions = [c["position"] for c in r["checkpoints"]]
        assert positions == sorted(positions) and positions[-1] == r["n_thinking"]
        assert all(c["probe_tokens"] > 0 for c in r["checkpoints"])
    ca = store.checkpoint_arrays(-1)
    assert ca.X.shape == (sum(len(r["checkpoints"]) for r in rows), 32)
    assert set(np.unique(ca.groups)) == {r["problem_id"] for r in rows}
    sa = store.sample_arrays(0)
    assert sa.X.shape == (len(rows), 32)


def test_recorded_state_equals_a_direct_forward_pass(tiny, store):
    model, tok = tiny
    row = store.samples()[0]
    task = thinkctl.tasks.get("arith")
    p = task.sample(CFG.n_problems, seed=CFG.seed)[0]
    ids = chat_prefix(tok, p.prompt) + row["generated_ids"]
    ck = row["checkpoints"][0]
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    n_pre = row["n_prompt_tokens"]
    want = hs[-1][0, n_pre + ck["position"] - 1].numpy()
    got = store.checkpoint_arrays(-1).X[ck["row"]]
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)  # stored as float16


def test_resuming_with_another_config_is_refused(tiny, store):
    with pytest.raises(ValueError, match="different config"):
        _collect(tiny, store.path, replace(CFG, every=5))


def test_unknown_layer_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        _collect(tiny, tmp_path / "s", replace(CFG, layers=(7,)))


def test_sigkill_mid_run_resumes_with_nothing_lost_or_duplicated(tiny_dir, store, tmp_path):
    reference = store.samples()
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "thinkctl.cli", "collect", "--model", str(tiny_dir), "--task", "arith",
           "--out", str(out), "--n", str(CFG.n_problems), "--seed", str(CFG.seed), "--samples", str(CFG.samples),
           "--every", str(CFG.every), "--max-new-tokens", str(CFG.max_new_tokens), "--batch-size", "8",
           "--shard-problems", str(CFG.shard_problems), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "shard-00000.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(TraceStore(out).shard_indices())
    assert 1 <= n_before < 3, "the kill should land mid-run"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    resumed = TraceStore(out).samples()
    assert [(r["problem_id"], r["sample"]) for r in resumed] == [(r["problem_id"], r["sample"]) for r in reference]
    assert [r["text"] for r in resumed] == [r["text"] for r in reference]  # same seeds per shard: same generations
    assert not list(out.glob("*.tmp"))


def test_checkpoints_on_the_greedy_sample_only(tiny, store, tmp_path):
    """``checkpoints="greedy"``: the greedy sample is recorded exactly as with "all"; sampled generations keep their
    text, answer and length but no checkpoint (what routing reads, without the forced answers' cost)."""
    lean = _collect(tiny, tmp_path / "lean", replace(CFG, checkpoints="greedy"))
    full_rows, lean_rows = store.samples(), lean.samples()
    assert len(lean_rows) == len(full_rows)
    for a, b in zip(full_rows, lean_rows):
        assert (a["problem_id"], a["text"], a["correct"], a["n_generated"]) == \
            (b["problem_id"], b["text"], b["correct"], b["n_generated"])
        if b["greedy"]:
            assert [c["forced_answer"] for c in a["checkpoints"]] == [c["forced_answer"] for c in b["checkpoints"]]
        else:
            assert b["checkpoints"] == []
    ca = lean.checkpoint_arrays(-1)
    assert ca.greedy.all() and len(ca.y) == sum(len(r["checkpoints"]) for r in full_rows if r["greedy"])
    with pytest.raises(ValueError, match="checkpoints='some'"):
        replace(CFG, checkpoints="some")
