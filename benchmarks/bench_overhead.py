"""``python benchmarks/bench_overhead.py``: the wall-time cost of thinkctl's stopping hooks inside ``model.generate``.

Times greedy ``generate`` with :class:`~thinkctl.stopping.BudgetForcing` + :class:`~thinkctl.stopping.HiddenStateTap`
+ :class:`~thinkctl.stopping.ProbeStopping` (a small linear predictor probed at every token) against plain
``generate`` producing the same tokens: same prompts and seed, fixed ``max_new_tokens``, warm-up runs, then timed runs
interleaved in every order of the variants (plain, hooked, and a "floor" of a pass-through processor, its signature
stored as BudgetForcing's, plus an empty hook) with the garbage collector off; the ratio of medians and the median
per-repeat ratio come with bootstrap 95 % intervals, and a verdict against the target (on the per-repeat ratio) says
"inconclusive" when the interval straddles it. All variants must generate identical sequences (so the same number of
decoding steps): ``same_tokens`` and the step counts of each variant are in the result. It also checks that the memory
the hooks hold does not grow with the generated length. A benchmark, not a test: figures go to the JSON file given
with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import itertools
import logging
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Sequence

import numpy as np

from thinkctl.commands._common import add_device_argument, add_model_argument, write_json, run_script, script_parser
from thinkctl.stats import bootstrap_interval
from thinkctl.stopping.tracking import precomputed_call_signature


logger = logging.getLogger(__name__)

#: The overhead the hooks are designed to stay under (hooked / plain median wall time).
TARGET_RATIO = 1.05
#: Calls of the tap's hook timed per block to estimate its cost per decoding step (the median of blocks is kept).
TAP_HOOK_TIMING_CALLS = 200
#: Resamples of the bootstrap interval of the ratio.
BOOTSTRAP_SAMPLES = 2000
#: Runs of each variant before timing starts (first-call allocations, lazy initialisation in transformers).
WARMUP_RUNS = 2
#: Generations run with the logits processor wrapped in a timer; the median time per step is reported.
IN_HOOK_TIMING_RUNS = 5
#: Repeats (every variant once each, in every order) of the runs that time the model's forward passes apart from the
#: rest of each step: where a variant's extra time goes (the tap slows the forward pass, the processor the rest).
SPLIT_TIMING_REPEATS = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--json", required=True, metavar="OUT", help="write the results here")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (left-padded)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated per run at most")
    parser.add_argument("--repeats", type=int, default=60,
                        help="timed runs of each variant, interleaved in every order (a multiple of 6 balances them)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch decides)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts, the probe's weights and torch")
    add_device_argument(parser)


def _noop_hook(module: Any, args: Any, output: Any) -> None:
    return None


class _Undecorated:
    """A logits processor that changes nothing, as a user would write one."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return scores


@precomputed_call_signature
class _PassThrough(_Undecorated):
    """A logits processor that changes nothing at the least cost thinkctl knows (its signature stored as
    BudgetForcing's is): the floor cost of having one."""


def _signature_lookup_s(processor: Any, calls: int = 2000) -> float:
    """Seconds per ``inspect.signature(processor.__call__)``, the lookup LogitsProcessorList makes at every step."""
    t0 = time.perf_counter()
    for _ in range(calls):
        inspect.signature(processor.__call__)
    return (time.perf_counter() - t0) / calls


def benchmark_prompts(n: int, seed: int) -> list[str]:
    """``n`` arithmetic questions, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(10, 100, size=(2, n))
    return [f"What is {x} + {y}?" for x, y in zip(a.tolist(), b.tolist())]


def _held_bytes(tap: Any) -> int:
    return int(sum(t.untyped_storage().nbytes() for t in tap.latest.values()))


def run_orders(names: list[str], repeats: int, seed: int) -> list[list[str]]:
    """The order of the variants in each repeat: every permutation in turn (each shuffled block of ``n!`` repeats
    uses each once), so that each variant runs first, in the middle and last equally often and a drift in machine
    load or a warm-cache advantage of a position weighs on all variants alike."""
    perms = [list(p) for p in itertools.permutations(names)]
    rng = np.random.default_rng([seed, 7])
    orders: list[list[str]] = []
    while len(orders) < repeats:
        orders += [perms[i] for i in rng.permutation(len(perms))]
    return orders[:repeats]


def bootstrap_ratio_ci(hooked: list[float], plain: list[float], *, seed: int = 0, paired: bool = False,
                       n_boot: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of median(hooked) / median(plain), or with ``paired=True`` of the median of
    the per-repeat ratios hooked[i] / plain[i]. Repeats are resampled whole: a repeat's runs ran side by side, under
    the same machine load, which the paired ratio cancels (on a shared machine whose speed drifts by tens of per
    cent from one minute to the next, the paired interval is the informative one)."""
    h, p = np.asarray(hooked, dtype=float), np.asarray(plain, dtype=float)

    def ratio(hb: np.ndarray, pb: np.ndarray) -> np.ndarray:
        if paired:
            return np.median(hb / pb, axis=1)
        return np.median(hb, axis=1) / np.median(pb, axis=1)

    lo, hi, _ = bootstrap_interval(ratio, [h, p], n_resamples=n_boot, rng=[seed, 8], vectorized=True)
    return float(lo), float(hi)


def verdict(ci: tuple[float, float], target: float = TARGET_RATIO) -> str:
    """``"within"`` the target when the whole interval is at or under it, ``"above"`` when it is all over it,
    otherwise ``"inconclusive"`` (more repeats or a quieter machine narrow the interval)."""
    if ci[1] <= target:
        return "within"
    if ci[0] > target:
        return "above"
    return "inconclusive"


def measure_overhead(model: Any, tokenizer: Any, *, batch_size: int = 8, max_new_tokens: int = 128,
                     repeats: int = 60, seed: int = 0) -> dict[str, Any]:
    """Time hooked against plain greedy ``generate`` on the same prompts.

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : PreTrainedTokenizerBase
    batch_size : int, default=8
    max_new_tokens : int, default=128
        Upper bound of the generated length (rows end earlier at EOS; both variants take the same steps).
    repeats : int, default=60
        Timed runs per variant (after :data:`WARMUP_RUNS` warm-up runs each), interleaved in every order of the
        three variants (:func:`run_orders`) so that a drift in machine load weighs on all of them alike.
    seed : int, default=0
        Seeds the prompts, the probe's weights and torch before every run.

    Returns
    -------
    dict
        ``ratio`` (median hooked / median plain wall time), ``ratio_ci95`` (:func:`bootstrap_ratio_ci`),
        ``pair_ratio_ci95`` and ``floor_pair_ratio_ci95`` (the same for the median per-repeat ratio),
        ``verdict`` (:func:`verdict` on ``pair_ratio_ci95``: within / above / inconclusive against
        :data:`TARGET_RATIO`), ``orders`` (the variants' order in each repeat, by initial), ``plain_s``,
        ``hooked_s`` (medians), the individual
        runs (``plain_runs_s[i]`` and ``hooked_runs_s[i]`` are neighbours), ``pair_ratio_median`` (median of the
        ratios of neighbouring runs), ``cpu_ratio`` (the same with process CPU time, less sensitive to other load on
        the machine), ``processor_s_per_step`` (time inside the logits processor per decoding step, median of
        :data:`IN_HOOK_TIMING_RUNS` runs), ``predictor_s_per_step`` (of which the benchmark's predictor, the user's
        model, timed in runs of its own) and ``thinkctl_processor_s_per_step`` (the difference: thinkctl's own work in
        the processor), ``tap_hook_s_per_step``, ``in_hook_fraction`` (time inside all hooks per
        step over the plain time per step: the overhead free of the run-to-run noise of wall-clock ratios on a
        shared machine), ``forward_s_per_step`` and ``outside_forward_s_per_step`` (per variant: the model's forward
        passes, which the tap's hook runs inside, and the rest of each step, which holds the logits processor; timed in
        :data:`SPLIT_TIMING_REPEATS` repeats of their own with hooks on the whole model) and ``forward_pair_ratio``
        (per variant, the median ratio of its forward time to plain's in the same repeat: how much the hooks slow
        the model itself, e.g. through the caches), ``same_tokens`` (both variants generated identical sequences in
        every run),
        ``decoding_steps`` (per variant; equal when ``same_tokens``), token counts and memory figures:
        ``tap_bytes_by_length`` (what the tap holds after generating that many tokens, at half and all of the
        length the runs reach; constant when the tap keeps only the newest position),
        ``signature_lookup_s`` (seconds per ``inspect.signature`` of BudgetForcing's ``__call__``, which
        transformers' ``LogitsProcessorList`` repeats at every step, and of an undecorated processor's),
        ``python_peak_bytes_by_length`` (tracemalloc peak of Python allocations during a hooked run, which covers
        the hooks' per-row state) and ``probe_history_pairs_by_length`` (the ``(thinking_tokens, confidence)``
        pairs ProbeStopping keeps, one per probe: the only per-row state that grows, here with a probe every
        token).
    """
    import torch
    from transformers import LogitsProcessorList

    from thinkctl import __version__
    from thinkctl.stopping import BudgetForcing, HiddenStateTap, ProbeStopping, build_inputs
    from thinkctl.stopping.tap import find_decoder_layers

    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
    inputs = build_inputs(tokenizer, benchmark_prompts(batch_size, seed), style="none")
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    prompt_len = inputs["input_ids"].shape[1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)

    hidden = int(model.config.hidden_size)
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(hidden, generator=gen) / hidden ** 0.5).to(device)
    bias = torch.zeros((), device=device)

    def predictor(h: torch.Tensor) -> torch.Tensor:  # a linear probe: sigmoid(h @ w + b), (B, hidden) -> (B,)
        return torch.sigmoid(h @ weight + bias)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    tap = HiddenStateTap(model, layers=(-1,))
    gc_was_enabled = gc.isenabled()
    try:
        # threshold=None: probes every token but never stops, so both variants generate the same tokens;
        # max_tokens above max_new_tokens and answer_on_eos=False: nothing is forced
        probe = ProbeStopping(tap, predictor, threshold=None, every=1)
        bf = BudgetForcing(tokenizer, max_tokens=max_new_tokens + 1, stop_rules=[probe], answer_on_eos=False)

        def plain() -> torch.Tensor:
            return model.generate(**inputs, **gen_kwargs)

        def hooked() -> torch.Tensor:
            return model.generate(**inputs, logits_processor=LogitsProcessorList([bf]), **gen_kwargs)

        # the floor: what any logits processor and any forward hook cost inside transformers' generate loop (a
        # pass-through processor and a hook that does nothing, on the module the tap hooks)
        floor_module = find_decoder_layers(model)[1][-1]  # the tap's layer=-1

        def floor() -> torch.Tensor:
            handle = floor_module.register_forward_hook(_noop_hook)
            try:
                return model.generate(**inputs, logits_processor=LogitsProcessorList([_PassThrough()]), **gen_kwargs)
            finally:
                handle.remove()

        def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, float, torch.Tensor]:
            if fn is not hooked:
                tap.remove()  # no thinkctl hooks on the model
            else:
                tap.attach()
                bf.reset()
                tap.reset()
            torch.manual_seed(seed)
            gc.collect()
            gc.disable()
            sync()
            w0, c0 = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                out = fn()
            sync()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if gc_was_enabled:
                gc.enable()
            return wall, cpu, out

        for _ in range(WARMUP_RUNS):
            _, _, reference = timed(plain)
            timed(hooked)
            timed(floor)
        variants = {"plain": plain, "hooked": hooked, "floor": floor}
        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        same = True
        steps: dict[str, set[int]] = {name: set() for name in variants}
        orders = run_orders(list(variants), repeats, seed)
        for names in orders:
            for name in names:
                wall, cpu, out = timed(variants[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
                steps[name].add(int(out.shape[1] - prompt_len))
                same = same and out.shape == reference.shape and bool(torch.equal(out, reference))
        plain_runs, hooked_runs, floor_runs = walls["plain"], walls["hooked"], walls["floor"]
        probes = probe.probes.tolist()
        # decoding steps the generation really takes (rows may all end at EOS before max_new_tokens)
        generated = int(reference.shape[1] - prompt_len)

        # time spent inside the logits processor (BudgetForcing driving ProbeStopping), per decoding step
        in_hook: list[float] = [0.0, 0]

        @precomputed_call_signature  # a plain function's signature would cost transformers ~100 us per step
        class TimedBudgetForcing:
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                t0 = time.perf_counter()
                result = bf(input_ids, scores)
                sync()
                in_hook[0] += time.perf_counter() - t0
                in_hook[1] += 1
                return result

        timed_bf = TimedBudgetForcing()
        processor_per_step = []
        for _ in range(IN_HOOK_TIMING_RUNS):
            in_hook[:] = [0.0, 0]
            tap.attach()
            bf.reset()
            tap.reset()
            with torch.inference_mode():
                model.generate(**inputs, logits_processor=LogitsProcessorList([timed_bf]), **gen_kwargs)
            processor_per_step.append(in_hook[0] / max(1, in_hook[1]))

        # of that, the benchmark's predictor: the user's model, not thinkctl's work (timed in runs of its own, so
        # that its timer does not weigh on the processor's figure)
        in_predictor: list[float] = [0.0]

        def timed_predictor(h: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            result = predictor(h)
            sync()
            in_predictor[0] += time.perf_counter() - t0
            return result

        predictor_per_step = []
        probe.predictor = timed_predictor
        try:
            for _ in range(IN_HOOK_TIMING_RUNS):
                in_predictor[0] = 0.0
                tap.attach()
                bf.reset()
                tap.reset()
                with torch.inference_mode():
                    model.generate(**inputs, logits_processor=LogitsProcessorList([bf]), **gen_kwargs)
                # per decoding step, as the processor's time (the first step, the prompt's, probes nothing)
                predictor_per_step.append(in_predictor[0] / max(1, generated))
        finally:
            probe.predictor = predictor

        # where the time goes: the model's forward passes (which the tap's hook runs inside) against the rest of each
        # step (the logits processor, transformers' own work), timed by hooks on the whole model in runs of their own
        in_forward = [0.0, 0.0]

        def forward_started(module: Any, args: Any) -> None:
            in_forward[1] = time.perf_counter()

        def forward_ended(module: Any, args: Any, output: Any) -> None:
            in_forward[0] += time.perf_counter() - in_forward[1]

        split_walls: dict[str, list[float]] = {name: [] for name in variants}
        split_forward: dict[str, list[float]] = {name: [] for name in variants}
        handles = [model.register_forward_pre_hook(forward_started), model.register_forward_hook(forward_ended)]
        try:
            for names in run_orders(list(variants), min(repeats, SPLIT_TIMING_REPEATS), seed + 1):
                for name in names:
                    in_forward[0] = 0.0
                    wall, _, _ = timed(variants[name])
                    split_walls[name].append(wall)
                    split_forward[name].append(in_forward[0])
        finally:
            for handle in handles:
                handle.remove()
        forward_split = {
            "forward_s_per_step": {k: statistics.median(v) / max(1, generated) for k, v in split_forward.items()},
            "outside_forward_s_per_step": {
                k: statistics.median(w - f for w, f in zip(split_walls[k], split_forward[k])) / max(1, generated)
                for k in variants},
            "forward_pair_ratio": {
                k: statistics.median(f / p for f, p in zip(split_forward[k], split_forward["plain"]))
                for k in variants if k != "plain"},
        }

        # transformers' LogitsProcessorList parses each processor's call signature at every step; BudgetForcing
        # stores its signature once (precomputed_call_signature), an undecorated processor does not
        signature_s = {name: _signature_lookup_s(proc) for name, proc in (("budget_forcing", bf),
                                                                           ("undecorated", _Undecorated()))}

        tap_bytes: dict[str, int] = {}
        py_peak: dict[str, int] = {}
        history_pairs: dict[str, int] = {}
        # time inside the tap's forward hook, on a decoding-step-shaped output (B, 1, hidden)
        hook = tap._layer_hook(tap.layers[0])
        step_out = torch.zeros(batch_size, 1, hidden, device=device)
        blocks = []
        for _ in range(IN_HOOK_TIMING_RUNS):
            sync()
            t0 = time.perf_counter()
            for _ in range(TAP_HOOK_TIMING_CALLS):
                hook(model, (), step_out)
            sync()
            blocks.append((time.perf_counter() - t0) / TAP_HOOK_TIMING_CALLS * len(tap.layers))
        tap_hook_s = statistics.median(blocks)

        tap.attach()
        for length in sorted({max(1, generated // 2), max(1, generated)}):
            bf.reset()
            tap.reset()
            tracemalloc.start()
            with torch.inference_mode():
                model.generate(**inputs, logits_processor=LogitsProcessorList([bf]),
                               **{**gen_kwargs, "max_new_tokens": length})
            py_peak[str(length)] = int(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            tap_bytes[str(length)] = _held_bytes(tap)
            history_pairs[str(length)] = sum(len(h) for h in probe.history)
    finally:
        tap.remove()
        if gc_was_enabled:
            gc.enable()

    plain_s, hooked_s = statistics.median(plain_runs), statistics.median(hooked_runs)
    processor_s = statistics.median(processor_per_step)
    predictor_s = statistics.median(predictor_per_step)
    plain_step = plain_s / max(1, generated)
    if not same:
        logger.warning("the hooked runs generated other tokens than the plain ones (steps %s); the ratio compares "
                       "unequal work", steps)

    ratio = hooked_s / plain_s
    pair_ci = bootstrap_ratio_ci(hooked_runs, plain_runs, seed=seed, paired=True)
    return {
        "ratio": ratio,
        "ratio_ci95": list(bootstrap_ratio_ci(hooked_runs, plain_runs, seed=seed)),
        "pair_ratio_ci95": list(pair_ci),
        "floor_pair_ratio_ci95": list(bootstrap_ratio_ci(floor_runs, plain_runs, seed=seed, paired=True)),
        "verdict": verdict(pair_ci),
        "plain_s": plain_s,
        "hooked_s": hooked_s,
        "target_ratio": TARGET_RATIO,
        "pair_ratio_median": statistics.median(h / p for h, p in zip(hooked_runs, plain_runs)),
        "cpu_ratio": statistics.median(cpus["hooked"]) / statistics.median(cpus["plain"]),
        "floor_ratio": statistics.median(floor_runs) / plain_s,
        "floor_pair_ratio_median": statistics.median(f / p for f, p in zip(floor_runs, plain_runs)),
        "processor_s_per_step": processor_s,
        "predictor_s_per_step": predictor_s,
        "thinkctl_processor_s_per_step": processor_s - predictor_s,
        "tap_hook_s_per_step": tap_hook_s,
        "plain_s_per_step": plain_step,
        "hooked_s_per_step": hooked_s / max(1, generated),
        "in_hook_fraction": (processor_s + tap_hook_s) / plain_step,
        **forward_split,
        "plain_runs_s": plain_runs,
        "hooked_runs_s": hooked_runs,
        "floor_runs_s": floor_runs,
        "plain_cpu_s": cpus["plain"],
        "hooked_cpu_s": cpus["hooked"],
        "same_tokens": same,
        "decoding_steps": {name: sorted(v) for name, v in steps.items()},
        "warmup_runs": WARMUP_RUNS,
        "order": "every order of (plain, hooked, floor) in turn, shuffled by the seed",
        "orders": ["".join(name[0] for name in names) for names in orders],
        "batch_size": batch_size,
        "prompt_tokens": int(prompt_len),
        "generated_tokens_per_row": generated,
        "plain_tokens_per_s": batch_size * generated / plain_s,
        "probes_per_row": probes,
        "hooks": ["BudgetForcing", "HiddenStateTap(layers=(-1,))", "ProbeStopping(every=1, linear predictor)"],
        "signature_lookup_s": signature_s,
        "tap_bytes_by_length": tap_bytes,
        "python_peak_bytes_by_length": py_peak,
        "probe_history_pairs_by_length": history_pairs,
        "hidden_size": hidden,
        "vocab_size": int(model.config.vocab_size),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "thinkctl_version": __version__,
    }


def run(args: argparse.Namespace) -> int:
    import torch

    import thinkctl

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    model, tokenizer = thinkctl.load_model(args.model, device=args.device)
    model.eval()
    result = measure_overhead(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                              repeats=args.repeats, seed=args.seed)
    result["config"] = {"model": args.model, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                        "repeats": args.repeats, "threads": args.threads, "seed": args.seed, "device": args.device}
    path = write_json(args.json, result)
    lo, hi = result["pair_ratio_ci95"]
    rest = result["outside_forward_s_per_step"]
    rest_extra = rest["hooked"] - rest["plain"]
    print(f"hooked/plain = {result['ratio']:.3f}; per repeat {result['pair_ratio_median']:.3f} [95% CI {lo:.3f}, "
          f"{hi:.3f}]: {result['verdict']} (target {TARGET_RATIO}); "
          f"time inside hooks = {100 * result['in_hook_fraction']:.1f}% of a plain step "
          f"({1e6 * result['processor_s_per_step']:.1f} us in the processor, of which the predictor "
          f"{1e6 * result['predictor_s_per_step']:.1f} us); "
          f"a pass-through processor and an empty hook alone (the floor) = {result['floor_pair_ratio_median']:.3f}; "
          f"forward passes hooked/plain = {result['forward_pair_ratio']['hooked']:.3f} (floor "
          f"{result['forward_pair_ratio']['floor']:.3f}), rest of a step +{1e6 * rest_extra:.1f} us; "
          f"plain {result['plain_s']:.3f}s, hooked {result['hooked_s']:.3f}s; "
          f"same tokens: {result['same_tokens']} ({result['generated_tokens_per_row']} steps); wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The script's options (``--help`` lists them with their defaults)."""
    return script_parser("bench_overhead.py", __doc__, add_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 (with the advice on stderr) on a user error."""
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
