"""``thinkctl demo``: the main job on the embedded model, end to end, in minutes on 2 CPU cores.

1. collect traces on ``arith`` (greedy + sampled generations, hidden states and forced answers at checkpoints);
2. train predictors (confidence probe, difficulty probe, LightGBM) on a train split of the problems;
3. calibrate on the calibration split: calibrators, the Learn-then-Test stop threshold, the difficulty calibrator
   and the routing table;
4. evaluate the adaptive controller against the baselines on the held-out test split (never seen by 2 or 3), with
   the oracle frontier from those problems' greedy traces;
5. write the reports: ``report.html`` (calibration), ``evaluate.json`` + ``evaluate.png`` (accuracy against tokens),
   ``summary.json``, and print a short table.

Each stage resumes from its outputs in ``--out`` (the trace store resumes shard by shard; the evaluation resumes
from its JSONL rows), so an interrupted demo continues where it stopped; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse

from pathlib import Path

from thinkctl.commands._common import add_model_argument, add_progress_argument, write_json

NAME = "demo"
HELP = "end to end on the embedded model: collect -> train -> calibrate -> evaluate -> report"
DESCRIPTION = __doc__

DEMO_STRATEGIES = "fixed@64,fixed@384,sc@4,sc@8,sc@16,best_of@8,esc@16,asc@16,deepconf@16,dynasor,adaptive"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--task", default="arith", help="task family")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--n", type=int, default=200,
                   help="problems collected (split 50/25/25 train/calib/test; 45 calib problems are the fewest "
                        "that can certify the default epsilon of 0.05)")
    p.add_argument("--samples", type=int, default=4, help="generations per problem in the traces (first greedy)")
    p.add_argument("--seed", type=int, default=2000, help="problem, split and sampling seed")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (traces and controller)")
    p.add_argument("--strategies", default=DEMO_STRATEGIES, help="strategies evaluated")
    p.add_argument("--token-cap", type=int, default=384,
                   help="generated tokens per sample at most (the embedded model's longest arith traces are ~350 at "
                        "T=0.7; the cap sizes the preallocated KV cache, so it sets the cost of every step)")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    add_progress_argument(p)


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import time
    from dataclasses import replace

    import thinkctl
    from thinkctl.calibration.bundle import CalibrationConfig, bundle_report_entries, calibrate_bundle
    from thinkctl.calibration.report import calibration_report
    from thinkctl.commands.evaluate import format_table
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.controller.routing import fit_bundle_routing, routing_summary
    from thinkctl.eval.evaluate import evaluate, matched_compute, oracle_rows, pareto_plot, summarize
    from thinkctl.models import load_model, model_id
    from thinkctl.predictors.from_traces import PredictorTrainingConfig, train_predictors
    from thinkctl.traces import CollectConfig, collect

    if args.n < 16:
        raise ValueError(f"--n={args.n} is too small for a train/calib/test split; use at least 16 (default 200)")
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stamps: dict[str, float] = {}

    def stage(name: str) -> None:
        stamps[name] = round(time.monotonic() - t0, 1)
        print(f"[{stamps[name]:7.1f}s] {name}", flush=True)

    task = thinkctl.tasks.get(args.task)
    problems = task.sample(args.n, seed=args.seed)
    model, tokenizer = load_model(args.model)
    stage("collect traces")
    ccfg = replace(CollectConfig(), task=args.task, n_problems=args.n, seed=args.seed, samples=args.samples,
                   temperature=args.temperature)
    store = collect(model, tokenizer, task, problems, str(out / "traces"), ccfg, model_name=model_id(model),
                    progress=not args.no_progress)

    bundle = out / "bundle"
    stage("train predictors")
    if not (bundle / "bundle.json").is_file():
        train_predictors(store, bundle, PredictorTrainingConfig(seed=args.seed))
    train = json.loads((bundle / "train_report.json").read_text())
    stage("calibrate (calibrators, Learn-then-Test threshold, routing table)")
    cal = calibrate_bundle(bundle, CalibrationConfig())
    ctl_cfg = ControllerConfig(seed=args.seed, temperature=args.temperature, token_cap=args.token_cap,
                               easy_cap=min(ControllerConfig().easy_cap, args.token_cap))
    table = fit_bundle_routing(bundle, config=ctl_cfg, tokenizer=tokenizer)
    stage("calibration report")
    entries = bundle_report_entries(bundle)
    calibration_report(entries, out / "report", title=f"thinkctl demo: {args.task} on {model_id(model)}")

    stage("evaluate the controller against the baselines on the held-out test problems")
    test_ids = set(json.loads((bundle / "bundle.json").read_text())["split"]["test"])
    held_out = [p for p in problems if p.id in test_ids]
    controller = AdaptiveController.load(bundle, model, tokenizer, ctl_cfg, task=task)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(held_out) * len(strategies), desc="evaluate", unit="answer", disable=args.no_progress)
    rows = evaluate(controller, task, held_out, strategies, rows_path=out / "evaluate.rows.jsonl",
                    progress=bar.update)
    bar.close()
    rows += [r for r in oracle_rows(store) if r["problem_id"] in test_ids]
    summary = summarize(rows, seed=args.seed)
    mc = matched_compute(summary)
    write_json(out / "evaluate.json", {"strategies": summary, "matched_compute": mc,
                                       "config": {"task": args.task, "seed": args.seed, "n": len(held_out),
                                                  "problems": "test split of the demo's traces",
                                                  "model": args.model, "strategies": strategies,
                                                  "routing": routing_summary(table)}})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pareto_plot(summary, ax=ax, title=f"{args.task}, embedded model: {len(held_out)} held-out problems")
    fig.tight_layout()
    fig.savefig(out / "evaluate.png", dpi=120)
    plt.close(fig)
    _reliability_png(bundle, entries, out / "reliability.png")
    stage("done")

    conf = train["confidence"] if "confidence" in train else {}
    ece_u, ece_c = cal["test_uncalibrated"]["ece"], cal["test_calibrated"]["ece"]
    result = {"timings_s": stamps, "train_report": train, "calibration": {
        "calibrator": cal["calibrator"], "ece_uncalibrated": ece_u, "ece_calibrated": ece_c,
        "risk_control": cal["risk_control"], "test_early_stopping": cal.get("test_early_stopping")},
        "routing": routing_summary(table), "evaluate": summary, "matched_compute": mc}
    write_json(out / "summary.json", result)
    print()
    print(format_table(summary))
    print()
    if conf:
        diff = train.get("difficulty", {})
        print(f"held-out AUROC: confidence probe (layer {conf.get('layer')}) {_fmt_auc(conf.get('test_auroc'))}, "
              f"token-confidence baseline {_fmt_auc(conf.get('baseline_token_confidence_auroc'))}; difficulty "
              f"prompt probe {_fmt_auc(diff.get('prompt_probe_test_auroc'))}, LightGBM "
              f"{_fmt_auc(diff.get('lightgbm_test_auroc'))}")
    print(f"calibration ({cal['calibrator']}): test ECE {ece_u['value']:.3f} -> {ece_c['value']:.3f} "
          f"[{ece_c['ci95'][0]:.3f}, {ece_c['ci95'][1]:.3f}]; stop threshold {cal['risk_control']['threshold']}")
    print("routing: " + ", ".join(f"P(solve) in [{a:.2f}, {b:.2f}) -> {r}"
                                  for (a, b), r in ((x["p_solve"], x["route"]) for x in routing_summary(table))))
    if "adaptive" in summary and mc:
        worse = [f for f, v in mc.items() if not v["target_at_least_as_accurate"]]
        print("adaptive at matched tokens: " + ("at least as accurate as every baseline family" if not worse
                                                else "less accurate than " + ", ".join(worse)))
    print(f"total {stamps['done']:.0f} s; wrote {out}/summary.json, {out}/evaluate.json, {out}/evaluate.png, "
          f"{out}/reliability.png, {out}/report/report.html")
    return 0


def _fmt_auc(v: object) -> str:
    """An AUROC entry of the train report (a number or ``{"value", "ci95"}``) as text."""
    if isinstance(v, dict) and "value" in v:
        lo, hi = v.get("ci95", [None, None])
        return f"{v['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
    return "n/a" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]


def _reliability_png(bundle: Path, entries: dict, path: Path) -> None:
    """Reliability diagram of the confidence probe on the test problems: raw sigmoid against the bundle's calibrator."""
    import matplotlib.pyplot as plt
    import numpy as np

    from thinkctl.calibration.calibrators import load_calibrator
    from thinkctl.calibration.plotting import reliability_diagram

    entry = next(iter(entries.values()))
    y, logits = entry["y_true_test"], entry["scores_test"]
    calibrator = load_calibrator(bundle / "calibration" / "confidence.json")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    reliability_diagram(y, 1.0 / (1.0 + np.exp(-logits)), ax=axes[0], label="probe (sigmoid)")
    axes[0].set_title("confidence probe, uncalibrated")
    reliability_diagram(y, calibrator.predict_proba(logits), ax=axes[1], label="calibrated")
    axes[1].set_title("after the bundle's calibrator (test problems)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
