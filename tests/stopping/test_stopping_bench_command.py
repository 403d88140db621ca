"""benchmarks/bench_overhead.py: its interface and the figures it writes (not its timings)."""

from __future__ import annotations

import json
import statistics

import pytest
from transformers import PreTrainedTokenizerFast

import thinkctl

from benchmark_loader import load_benchmark


bench_overhead = load_benchmark("bench_overhead")


@pytest.fixture()
def pad_is_eos(tok):
    """A tokenizer whose pad is its EOS, so that the hooked run cannot differ from the plain one."""
    t = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<eos>", pad_token="<eos>",
                                unk_token="<unk>", clean_up_tokenization_spaces=False)
    t.chat_template = tok.chat_template
    return t


def test_script_options():
    args = bench_overhead.build_parser().parse_args(["--json", "x.json"])
    assert args.model == "embedded" and args.repeats >= 1


def test_run_writes_json(tmp_path, monkeypatch, pad_is_eos, make, capsys):
    model = make("llama", pad_is_eos, seed=5)
    monkeypatch.setattr(thinkctl, "load_model", lambda spec, device="cpu": (model, pad_is_eos), raising=False)
    out = tmp_path / "bench" / "overhead.json"
    rc = bench_overhead.main(["--model", "tiny", "--json", str(out), "--batch-size", "3",
               "--max-new-tokens", "8", "--repeats", "2"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["ratio"] == pytest.approx(data["hooked_s"] / data["plain_s"])
    assert len(data["plain_runs_s"]) == len(data["hooked_runs_s"]) == len(data["floor_runs_s"]) == 2
    assert data["same_tokens"] is True
    assert data["decoding_steps"] == {"plain": [8], "hooked": [8], "floor": [8]}
    assert data["generated_tokens_per_row"] == 8
    assert data["warmup_runs"] >= 1 and len(data["orders"]) == 2 and all(
        sorted(o) == ["f", "h", "p"] for o in data["orders"])
    lo, hi = data["ratio_ci95"]
    assert lo <= data["ratio"] <= hi
    lo, hi = data["pair_ratio_ci95"]
    assert lo <= data["pair_ratio_median"] <= hi
    assert data["verdict"] == bench_overhead.verdict((lo, hi))
    assert data["floor_pair_ratio_ci95"][0] <= data["floor_pair_ratio_median"] <= data["floor_pair_ratio_ci95"][1]
    assert data["floor_ratio"] == pytest.approx(statistics.median(data["floor_runs_s"]) / data["plain_s"])
    assert data["in_hook_fraction"] == pytest.approx(
        (data["processor_s_per_step"] + data["tap_hook_s_per_step"]) / data["plain_s_per_step"])
    # where the time goes: forward passes and the rest of each step, per variant (both positive: the forward passes
    # are a part of each step's wall time, not all of it)
    for key in ("forward_s_per_step", "outside_forward_s_per_step"):
        assert set(data[key]) == {"plain", "hooked", "floor"} and all(v > 0 for v in data[key].values())
    assert set(data["forward_pair_ratio"]) == {"hooked", "floor"} and all(
        v > 0 for v in data["forward_pair_ratio"].values())
    assert data["probes_per_row"] == [7, 7, 7]  # every token after the first (probing every token)
    assert 0 < data["predictor_s_per_step"]
    assert data["thinkctl_processor_s_per_step"] == pytest.approx(
        data["processor_s_per_step"] - data["predictor_s_per_step"])
    # the tap holds one (B, hidden) float32 tensor whatever the generated length
    assert data["tap_bytes_by_length"] == {"4": 3 * 32 * 4, "8": 3 * 32 * 4}
    assert data["probe_history_pairs_by_length"] == {"4": 3 * 3, "8": 3 * 7}  # one pair per probe
    assert data["config"]["model"] == "tiny" and data["batch_size"] == 3
    assert set(data["signature_lookup_s"]) == {"budget_forcing", "undecorated"}
    assert all(v > 0 for v in data["signature_lookup_s"].values())
    assert "hooked/plain" in capsys.readouterr().out


def test_bad_sizes_raise(pad_is_eos, make):
    with pytest.raises(ValueError, match="repeats=0"):
        bench_overhead.measure_overhead(make("gpt2", pad_is_eos), pad_is_eos, repeats=0)


def test_run_orders_balance_positions():
    orders = bench_overhead.run_orders(["plain", "hooked", "floor"], 12, seed=3)
    assert len(orders) == 12
    for name in ("plain", "hooked", "floor"):
        # 12 repeats = two blocks of the 6 permutations: each variant takes each position 4 times
        assert [sum(o[k] == name for o in orders) for k in range(3)] == [4, 4, 4]
    assert orders != bench_overhead.run_orders(["plain", "hooked", "floor"], 12, seed=4)  # shuffled by the seed


def test_bootstrap_interval_and_verdict():
    plain = [1.0, 1.01, 0.99, 1.02, 0.98] * 8
    ci = bench_overhead.bootstrap_ratio_ci([1.1 * p for p in plain], plain, seed=0)
    assert ci[0] == pytest.approx(1.1, abs=0.02) and ci[1] == pytest.approx(1.1, abs=0.02) and ci[0] <= ci[1]
    assert bench_overhead.verdict(ci) == "above"
    assert bench_overhead.verdict((1.01, 1.04)) == "within"
    assert bench_overhead.verdict((1.04, 1.06)) == "inconclusive"
    # a machine that slows down for a while: the runs of each repeat move together, the paired ratio sees through it
    drift = [1.0] * 10 + [1.4] * 10
    paired = bench_overhead.bootstrap_ratio_ci([1.03 * d for d in drift], drift, seed=0, paired=True)
    assert paired == pytest.approx((1.03, 1.03))
    noisy = bench_overhead.bootstrap_ratio_ci([1.0, 1.3, 0.9, 1.2], [1.0, 0.9, 1.1, 1.2], seed=0)
    assert noisy[1] - noisy[0] > 0.1  # a few noisy runs give a wide interval
