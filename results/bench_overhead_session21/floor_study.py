"""Session 21: how far thinkctl's logits processor is from the least work a processor with the same duties can do.

Times, inside the decoding loop of greedy ``generate`` on the embedded model (batch 8, the bench-overhead prompts,
70 steps), per decoding step: BudgetForcing + ProbeStopping as ``thinkctl bench-overhead`` runs them, with its
parts wrapped in timers (the tracker, the stop rule, the predictor), and a "minimal" processor that does only what
any such processor must (copy the newest tokens to the host, count thinking tokens, run the same linear predictor on
the tap's state, copy its output to the host, log it, ban the pad token). The two alternate in random order over
40 generations each. An experiment record, not library code: it reads private attributes of the objects it times.

    python results/bench_overhead_session21/floor_study.py results/bench_overhead_session21/floor_study.json
"""

import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import LogitsProcessorList

import thinkctl
from thinkctl.stopping import BudgetForcing, HiddenStateTap, ProbeStopping, build_inputs
from thinkctl.stopping.tracking import precomputed_call_signature

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_overhead import benchmark_prompts  # noqa: E402  (a script of the repository, not of the package)

REPEATS = 40
model, tok = thinkctl.load_model("embedded")
model.eval()
inputs = build_inputs(tok, benchmark_prompts(8, 0), style="none")
hidden = model.config.hidden_size
gen = torch.Generator().manual_seed(0)
weight = torch.randn(hidden, generator=gen) / hidden ** 0.5
bias = torch.zeros(())
totals: dict[str, float] = {}
clock = time.perf_counter


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t0 = clock()
        result = fn(*args, **kwargs)
        totals[name] = totals.get(name, 0.0) + clock() - t0
        return result
    return wrapper


predictor = timed("predictor", lambda h: torch.sigmoid(h @ weight + bias))
tap = HiddenStateTap(model, layers=(-1,))
key = tap.layers[0]
probe = ProbeStopping(tap, predictor, threshold=None, every=1)
bf = BudgetForcing(tok, max_tokens=129, stop_rules=[probe], answer_on_eos=False)
tracker = bf._tracker
tracker.tails = timed("tracker.tails", tracker.tails)
tracker.update = timed("tracker.update", tracker.update)
probe.update = timed("probe.update", probe.update)
pad_ban = torch.zeros(model.config.vocab_size)
pad_ban[tok.pad_token_id] = float("-inf")


@precomputed_call_signature
class Minimal:
    def __init__(self) -> None:
        self.n, self.log = [0] * 8, []

    def __call__(self, input_ids, scores):
        input_ids[:, -4:].tolist()
        self.n = [k + 1 for k in self.n]
        self.log.append((self.n, predictor(tap.latest[key]).tolist()))
        return scores + pad_ban


def in_loop(name, processor):
    @precomputed_call_signature
    class Timed:
        def __call__(self, input_ids, scores):
            t0 = clock()
            out = processor(input_ids, scores)
            totals[name] = totals.get(name, 0.0) + clock() - t0
            return out
    return Timed()


minimal = Minimal()
steps = {"budget_forcing": 0, "minimal": 0}
kw = dict(max_new_tokens=128, do_sample=False, pad_token_id=tok.pad_token_id)
rng = random.Random(0)
with torch.inference_mode():
    for r in range(REPEATS + 2):
        if r == 2:
            totals.clear()
            steps = dict.fromkeys(steps, 0)
        for name, proc in rng.sample([("budget_forcing", bf), ("minimal", minimal)], 2):
            bf.reset()
            tap.reset()
            minimal.n, minimal.log = [0] * 8, []
            out = model.generate(**inputs, logits_processor=LogitsProcessorList([in_loop(name, proc)]), **kw)
            steps[name] += out.shape[1] - inputs["input_ids"].shape[1] + 1
# the predictor runs in both variants: split its time by the steps of each (one call per step in either)
us = {k: 1e6 * v for k, v in totals.items()}
per_step = {
    "budget_forcing": us["budget_forcing"] / steps["budget_forcing"],
    "minimal": us["minimal"] / steps["minimal"],
    "tracker.tails": us["tracker.tails"] / steps["budget_forcing"],
    "tracker.update": us["tracker.update"] / steps["budget_forcing"],
    "probe.update (with the predictor)": us["probe.update"] / steps["budget_forcing"],
    "predictor (both variants)": us["predictor"] / (steps["budget_forcing"] + steps["minimal"]),
}
result = {"us_per_step": per_step, "repeats": REPEATS, "processor_calls": steps,
          "note": "times include the timers' own cost (about 1 us per wrapped call)"}
print(json.dumps(result, indent=1))
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=1)
