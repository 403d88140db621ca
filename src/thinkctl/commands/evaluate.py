"""``thinkctl evaluate``: the adaptive controller against the baselines on a task, at matched compute.

Every strategy answers the same held-out problems (``--seed`` draws them; use a seed never used for traces). One
JSONL row per (problem, strategy) goes to ``--rows`` (default: beside ``--json``) as blocks finish, so a killed
run resumes; the summary JSON gives per strategy accuracy, tokens_mean, thinking_tokens_mean, samples_mean, n and
ci95, plus the matched-compute comparison, and ``--plot`` draws accuracy against tokens (Pareto plot) with the
oracle frontier when ``--traces`` gives greedy traces of the same problems.

With ``--ray ADDRESS`` the blocks (one strategy on up to ``--block`` problems) run on Ray actors, one model replica
and controller each; the driver writes the same rows, resumes the same way, and summarizes them as without Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from thinkctl.commands._common import (add_model_argument, add_progress_argument, add_ray_arguments,
                                      check_output_file, ray_config, write_json)

NAME = "evaluate"
HELP = ("the adaptive controller vs baselines (fixed@B, sc@N, best_of@N, esc, asc, dynasor, beam@N, dvts@N, "
        "prune@N) on a task")
DESCRIPTION = __doc__

DEFAULT_STRATEGIES = "fixed@64,fixed@128,fixed@1024,serial,sc@4,sc@8,sc@16,best_of@8,esc,asc,dynasor,adaptive"
#: Strategies that read a bundle's predictors (the default list drops them when no --bundle is given).
NEEDS_BUNDLE = ("serial", "best_of")
#: Process-guided searches, which read a bundle only with --scorer process-probe.
SEARCHES = ("beam", "dvts", "prune")


def _step_scorer(spec: str) -> object:
    """--scorer: a registered name (checked now, built by the controller), or ``module:function`` imported now."""
    from thinkctl.controller.search import STEP_SCORERS

    if spec in STEP_SCORERS:
        return spec
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--scorer {spec!r} is neither a step scorer ({', '.join(STEP_SCORERS.names())}) nor "
                         "module:function")
    import importlib

    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--scorer {spec!r}: cannot import {attr} from {module} ({exc})") from exc
    if not callable(fn):
        raise ValueError(f"--scorer {spec!r} is not callable; give a function fn(prompt, steps) -> scores")
    return fn


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--task", required=True, help="task family (see thinkctl.tasks.names())")
    p.add_argument("--seed", type=int, required=True, help="seed of the problems (use one unseen in training)")
    p.add_argument("--n", type=int, required=True, help="problems (over all levels unless --level)")
    p.add_argument("--level", type=int, default=None, help="only this difficulty level")
    p.add_argument("--json", required=True, metavar="OUT", help="summary JSON to write")
    p.add_argument("--bundle", default=None, help="predictor bundle (thinkctl train + calibrate); without one the "
                                                  "controller routes everything serially and never stops early")
    p.add_argument("--strategies", default=None,
                   help=f"comma-separated strategy names (default: {DEFAULT_STRATEGIES}; without --bundle, those "
                        f"that need none). 'serial' is the controller's serial route alone (certified early "
                        f"stopping); the summary compares it with greedy to the end (fixed@CAP) paired by problem")
    p.add_argument("--rows", default=None, help="per-problem JSONL (default: OUT with .rows.jsonl); resumed")
    p.add_argument("--plot", default=None, help="PNG of accuracy against tokens (default: OUT with .png)")
    p.add_argument("--traces", default=None, help="greedy traces of the same problems: adds the oracle frontier")
    p.add_argument("--token-cap", type=int, default=None, help="generated tokens per sample at most")
    p.add_argument("--deadline", type=float, default=None, help="seconds per block of prompts (graceful)")
    p.add_argument("--instruct", action="store_true", help="phrase prompts for an instruct model (as in collect)")
    p.add_argument("--scorer", default="check", metavar="NAME",
                   help="step scorer guiding beam@N and dvts@N: 'check' (exact checker of arith, modeq, mix), "
                        "'process-probe' (the bundle's outlook probe read at each step; needs --bundle) or "
                        "'module:function' (any fn(prompt, steps) -> one score per step, e.g. a PRM)")
    p.add_argument("--prune-rule", default=None, metavar="JSON",
                   help="the certified pruning threshold of prune@N (written by thinkctl calibrate-pruning for the "
                        "same --scorer)")
    p.add_argument("--trace-rows", action="store_true", help="keep each decision trace in the JSONL rows")
    p.add_argument("--block", type=int, default=64, help="problems per strategy call (one resumable block; "
                                                          "one Ray shard)")
    add_ray_arguments(p, "blocks")
    add_progress_argument(p)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm.auto import tqdm

    import thinkctl
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.eval.evaluate import evaluate, matched_compute, oracle_rows, paired_comparison, pareto_plot, summarize
    from thinkctl.eval.rowsfile import guard_rows

    out = check_output_file(args.json, "--json")
    rows_path = check_output_file(args.rows if args.rows else out.with_suffix(".rows.jsonl"), "--rows")
    plot = check_output_file(args.plot if args.plot else out.with_suffix(".png"), "--plot")
    traced_ids: set[str] | None = None
    if args.traces:
        from thinkctl.traces.store import TraceStore

        # a folder that is no trace store is an error now, not a silent skip after the work
        traced_ids = {str(i) for i in TraceStore(args.traces).config.get("problem_ids", [])}
    if args.block < 1:
        raise ValueError(f"--block={args.block} must be at least 1")
    ray_cfg = ray_config(args)
    if args.n < 1:
        raise ValueError(f"--n={args.n} must be at least 1")
    if args.strategies is None:
        strategies = [s for s in DEFAULT_STRATEGIES.split(",")
                      if args.bundle or s.partition("@")[0] not in NEEDS_BUNDLE]
    else:
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ValueError("--strategies is empty; give e.g. fixed@256,sc@8,adaptive")
    from thinkctl.controller.strategies import get_strategy

    for name in strategies:
        get_strategy(name)  # an unknown name fails here, before any work
    needs = [s for s in strategies if s.partition("@")[0] in NEEDS_BUNDLE
             or (args.scorer == "process-probe" and s.partition("@")[0] in SEARCHES)]
    if needs and not args.bundle:
        raise ValueError(f"--strategies {','.join(needs)} read a bundle's predictors; give --bundle (thinkctl train + "
                         "calibrate) or drop them")
    step_scorer = _step_scorer(args.scorer)
    prune_rule = None
    if args.prune_rule:
        from thinkctl.process.pruning import PruneRule

        prune_rule = PruneRule.load(args.prune_rule)
    elif any(s.partition("@")[0] == "prune" for s in strategies):
        raise ValueError("prune@N prunes at a certified threshold: give --prune-rule (thinkctl calibrate-pruning)")
    if ray_cfg is not None and prune_rule is not None:
        raise ValueError("--prune-rule is not sent to Ray actors; run prune@N without --ray")
    if ray_cfg is not None and args.scorer != "check" and any(s.partition("@")[0] in SEARCHES for s in strategies):
        raise ValueError(f"--scorer {args.scorer} is not sent to Ray actors, which search with the exact checker; run "
                         "without --ray")
    task = thinkctl.tasks.get(args.task)
    problems = task.sample(args.n, seed=args.seed, level=args.level)
    if traced_ids is not None and not traced_ids & {str(p.id) for p in problems}:
        raise ValueError(f"--traces {args.traces} holds traces of none of the {len(problems)} problems evaluated "
                         f"(task {args.task}, seed {args.seed}); give the traces of these problems (thinkctl collect "
                         "with the same --task, --seed and --n) or drop --traces")
    if args.instruct:
        from thinkctl.embedded.gym import INSTRUCT_SUFFIX

        problems = [replace(p, prompt=p.prompt + INSTRUCT_SUFFIX) for p in problems]
    cfg = ControllerConfig(seed=args.seed, deadline_s=args.deadline)
    if args.token_cap is not None:
        cfg = replace(cfg, token_cap=args.token_cap, easy_cap=min(cfg.easy_cap, args.token_cap))
    with guard_rows(rows_path, _settings(args, cfg)):
        if ray_cfg is not None:
            from thinkctl.distributed import ModelSpec, evaluate_distributed

            info: dict = {}
            rows = evaluate_distributed(ModelSpec(args.model), task, problems, strategies, config=cfg,
                                        bundle=args.bundle, rows_path=rows_path, block=args.block,
                                        record_trace=args.trace_rows, ray=ray_cfg, progress=not args.no_progress,
                                        info=info)
            routing = info.get("routing")
        else:
            model, tokenizer = thinkctl.load_model(args.model)
            if args.bundle:
                controller = AdaptiveController.load(args.bundle, model, tokenizer, cfg, task=task,
                                                     step_scorer=step_scorer, prune_rule=prune_rule)
            else:
                controller = AdaptiveController(model, tokenizer, config=cfg, task=task, step_scorer=step_scorer,
                                                prune_rule=prune_rule)
            bar = tqdm(total=len(problems) * len(strategies), desc="evaluate", unit="answer", disable=args.no_progress)
            rows = evaluate(controller, task, problems, strategies, rows_path=rows_path, block=args.block,
                            progress=bar.update, record_trace=args.trace_rows)
            bar.close()
            routing = None if controller.routing is None else [r.name for r in controller.routing.routes]
    if args.traces:
        from thinkctl.traces.store import TraceStore

        ids = {p.id for p in problems}
        rows += [r for r in oracle_rows(TraceStore(args.traces)) if r["problem_id"] in ids]
    summary = summarize(rows, seed=args.seed)
    full = f"fixed@{cfg.token_cap}"
    pairs = (("serial", full), ("adaptive", full), ("adaptive", "sc@16"))
    paired = {f"{a}_vs_{b}": paired_comparison(rows, a, b, seed=args.seed)
              for a, b in pairs if a in summary and b in summary}
    result = {"strategies": summary, "matched_compute": matched_compute(summary), "paired": paired,
              "config": {"task": args.task, "seed": args.seed, "n": args.n, "level": args.level,
                         "model": args.model, "bundle": args.bundle, "strategies": strategies,
                         "scorer": args.scorer,
                         "controller": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                         "routing": routing, "rows": str(rows_path)}}
    write_json(out, result)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pareto_plot(summary, ax=ax, title=f"{args.task} on {args.model}: {args.n} problems, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    print(format_table(summary))
    for name, pc in paired.items():
        if pc is None:
            continue
        line = f"{pc['target']} vs {pc['baseline']} ({pc['n']} problems): accuracy {pc['accuracy_diff']:+.3f} " \
               f"[{pc['accuracy_diff_ci95'][0]:+.3f}, {pc['accuracy_diff_ci95'][1]:+.3f}], tokens saved " \
               f"{100 * pc['tokens_saved_fraction']:.1f} %"
        if "thinking_saved_fraction" in pc:
            lo, hi = pc["thinking_saved_ci95"]
            line += f", thinking saved {100 * pc['thinking_saved_fraction']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
        print(line)
    mc = result["matched_compute"]
    if mc:
        worse = [f for f, v in mc.items() if not v["target_at_least_as_accurate"]]
        print("adaptive at matched tokens: " + ("at least as accurate as every baseline family" if not worse
                                                else "less accurate than " + ", ".join(worse)))
    print(f"wrote {out}, {rows_path}, {plot}")
    return 0


def _settings(args: argparse.Namespace, cfg: object) -> dict:
    """Everything that changes a row's content, recorded beside the rows so that a resumed run cannot mix settings."""
    bundle = None
    if args.bundle:
        from thinkctl.bundle import BundleLayout

        layout = BundleLayout(args.bundle)
        bundle = {"path": str(Path(args.bundle).resolve()), "probes": layout.probe_fingerprints()}
    settings = {"task": args.task, "level": args.level, "seed": args.seed, "model": args.model, "bundle": bundle,
                "token_cap": getattr(cfg, "token_cap"), "deadline_s": args.deadline, "instruct": args.instruct,
                "scorer": args.scorer}
    if args.prune_rule:  # recorded only when given, so that rows written without one resume as before
        import hashlib

        settings["prune_rule"] = hashlib.sha256(Path(args.prune_rule).read_bytes()).hexdigest()
    return settings


def format_table(summary: dict) -> str:
    """The summary as a fixed-width table, sorted by tokens."""
    lines = [f"{'strategy':<14}{'accuracy':>9}  {'95% CI':<15}{'tokens':>9}{'thinking':>9}{'samples':>9}{'n':>6}"]
    for name, s in sorted(summary.items(), key=lambda kv: kv[1]["tokens_mean"]):
        lo, hi = s["ci95"]
        samples = "-" if s["samples_mean"] is None else f"{s['samples_mean']:.2f}"
        think = "-" if s.get("thinking_tokens_mean") is None else f"{s['thinking_tokens_mean']:.1f}"
        lines.append(f"{name:<14}{s['accuracy']:>9.3f}  [{lo:.3f}, {hi:.3f}]  {s['tokens_mean']:>9.1f}{think:>9}"
                     f"{samples:>9}{s['n']:>6}")
    return "\n".join(lines)
