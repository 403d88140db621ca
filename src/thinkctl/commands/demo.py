"""``thinkctl demo``: the main job on the embedded model, end to end, in minutes on 2 CPU cores.

1. collect traces on ``--task`` (a greedy generation with hidden states and forced answers every ``--every``
   thinking tokens, plus sampled generations that record only their answer: what the stop rule and the routing
   table need, and no more);
2. train predictors (confidence and outlook probes, difficulty probe, LightGBM) on a train split of the problems;
3. calibrate on the calibration split -- the largest, since every decision is certified or tested there:
   calibrators, the Learn-then-Test stop rule (read every ``--every`` thinking tokens), the difficulty calibrator
   and the routing table;
4. evaluate the adaptive controller, its serial route alone and the baselines on the held-out test split (never
   seen by 2 or 3), with the oracle frontier from those problems' greedy traces;
5. write the reports: ``report.html`` (calibration), ``evaluate.json`` + ``evaluate.png`` (accuracy against tokens),
   ``summary.json``, the bundle in ``OUT/bundle`` (load it with ``AdaptiveController.load``), and print where the
   controller saved or gained, with figures.

Each stage resumes from its outputs in ``--out`` (the trace store resumes shard by shard; the evaluation resumes
from its JSONL rows), so an interrupted demo continues where it stopped; ``--fresh`` starts over (it deletes only
a folder that a demo wrote).
"""

from __future__ import annotations

import argparse

from pathlib import Path

from thinkctl.commands._common import add_model_argument, add_progress_argument, check_output_dir, write_json

NAME = "demo"
HELP = "end to end on the embedded model: collect -> train -> calibrate -> evaluate -> report"
DESCRIPTION = __doc__

#: Generations per problem in the demo's traces (greedy + sampled), and on mix (see ``--samples``).
DEMO_SAMPLES = 4
MIX_SAMPLES = 5
DEMO_STRATEGIES = "fixed@64,fixed@{cap},serial,sc@4,sc@8,sc@16,dynasor,adaptive"
#: What a demo writes into ``--out``; ``--fresh`` deletes a folder only when all it holds is among these.
DEMO_OUTPUTS = ("traces", "bundle", "report", "summary.json", "evaluate.json", "evaluate.png", "reliability.png",
                "evaluate.rows.jsonl", "summary.json.tmp", "evaluate.json.tmp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--task", default="arith", help="task family (arith, modeq, mix, ...)")
    p.add_argument("--out", default="out/demo", help="output folder (the bundle goes to OUT/bundle)")
    p.add_argument("--n", type=int, default=800,
                   help="problems collected, split train/calib/test by --calib-fraction and --test-fraction")
    p.add_argument("--calib-fraction", type=float, default=0.55,
                   help="share of the problems that certify the stop rule and test the routing (at epsilon 0.02 "
                        "Learn-then-Test certifies nothing below 114 problems, and a rule that stops often needs "
                        "several hundred; seeing a 4-point vote gain takes hundreds too)")
    p.add_argument("--test-fraction", type=float, default=0.15, help="share of the problems the demo evaluates on")
    p.add_argument("--samples", type=int, default=None,
                   help="generations per problem in the traces (the first greedy; the others record their answer "
                        f"and estimate votes; default {DEMO_SAMPLES}, and {MIX_SAMPLES} on mix, where escalating "
                        "doubtful answers to a vote is estimated from the recorded samples without replacement: "
                        "N generations estimate votes of up to N - 1 samples)")
    p.add_argument("--every", type=int, default=8,
                   help="thinking tokens between checkpoints, where the stop rule reads its score (reading is free; "
                        "each recorded checkpoint costs one forced answer at collection time)")
    p.add_argument("--epsilon", type=float, default=0.02,
                   help="largest certified share of problems whose right answer early stopping may lose")
    p.add_argument("--seed", type=int, default=2000, help="problem, split and sampling seed")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (traces and controller)")
    p.add_argument("--strategies", default=None,
                   help=f"strategies evaluated (default: {DEMO_STRATEGIES.format(cap='CAP')}, CAP the token cap)")
    p.add_argument("--token-cap", type=int, default=384,
                   help="generated tokens per sample at most (the embedded model's longest arith traces are ~350 at "
                        "T=0.7; the cap sizes the preallocated KV cache, so it sets the cost of every step)")
    p.add_argument("--fresh", action="store_true", help="delete --out first (only a folder a demo wrote)")
    add_progress_argument(p)


def _demo_output(name: str) -> bool:
    """Whether a file name in --out is one a demo writes: an output, or the temporary file of an atomic write of one
    (``.NAME.PID.tmp``) that a killed run left behind."""
    import re

    m = re.fullmatch(r"\.(.+)\.\d+\.tmp", name)
    return name in DEMO_OUTPUTS or (m is not None and m.group(1) in DEMO_OUTPUTS)


def _check_fresh(out: Path) -> None:
    """Refuse to delete a folder that holds anything a demo does not write."""
    if not out.is_dir():
        raise ValueError(f"--out {out} is not a folder; give a folder for the demo's outputs")
    foreign = sorted(p.name for p in out.iterdir() if not _demo_output(p.name))
    if foreign:
        raise ValueError(f"--fresh would delete {out}, which holds files a demo did not write ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}); choose another --out or remove them yourself")


def run(args: argparse.Namespace) -> int:
    import shutil
    import time
    from dataclasses import replace

    import thinkctl
    from thinkctl.bundle import BundleLayout
    from thinkctl.calibration.bundle import CalibrationConfig, bundle_report_entries, calibrate_bundle
    from thinkctl.calibration.report import calibration_report
    from thinkctl.commands.evaluate import format_table
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.controller.routing import decision_line, fit_bundle_routing, routing_summary
    from thinkctl.eval.serial_decisions import fit_bundle_serial_decisions
    from thinkctl.eval.evaluate import (evaluate, matched_compute, oracle_rows, paired_comparison, pareto_plot,
                                        summarize)
    from thinkctl.models import load_model, model_id
    from thinkctl.persistence import read_json
    from thinkctl.predictors.from_traces import PredictorTrainingConfig, train_predictors
    from thinkctl.traces import CollectConfig, collect

    samples = args.samples if args.samples is not None else (MIX_SAMPLES if args.task == "mix" else DEMO_SAMPLES)
    if args.n < 16:
        raise ValueError(f"--n={args.n} is too small for a train/calib/test split; use at least 16 (default 800)")
    split_cfg = PredictorTrainingConfig(seed=args.seed, calib_fraction=args.calib_fraction,
                                        test_fraction=args.test_fraction)
    cal_cfg = CalibrationConfig(epsilon=args.epsilon)
    strategies = [s.strip() for s in (args.strategies or DEMO_STRATEGIES.format(cap=args.token_cap)).split(",")
                  if s.strip()]
    out = check_output_dir(args.out, "--out")
    if args.fresh and out.exists():
        _check_fresh(out)
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
    ccfg = replace(CollectConfig(), task=args.task, n_problems=args.n, seed=args.seed, samples=samples,
                   temperature=args.temperature, every=args.every, checkpoints="greedy",
                   max_new_tokens=args.token_cap)  # the controller never generates past the cap either
    store = collect(model, tokenizer, task, problems, str(out / "traces"), ccfg, model_name=model_id(model),
                    progress=not args.no_progress)

    bundle = out / "bundle"
    stage("train predictors")
    if not BundleLayout(bundle).is_bundle():
        train_predictors(store, bundle, split_cfg)
    train = read_json(bundle / "train_report.json", f"delete {bundle} and run the demo again", allow_nan=True)
    stage("calibrate (calibrators, Learn-then-Test stop rule, routing table)")
    cal = calibrate_bundle(bundle, cal_cfg)
    ctl_cfg = ControllerConfig(seed=args.seed, temperature=args.temperature, token_cap=args.token_cap,
                               easy_cap=min(ControllerConfig().easy_cap, args.token_cap))
    table = fit_bundle_routing(bundle, config=ctl_cfg, tokenizer=tokenizer)
    table = fit_bundle_serial_decisions(bundle, table, model=model, tokenizer=tokenizer, config=ctl_cfg)
    stage("calibration report")
    entries = bundle_report_entries(bundle)
    calibration_report(entries, out / "report", title=f"thinkctl demo: {args.task} on {model_id(model)}")

    stage("evaluate the controller against the baselines on the held-out test problems")
    test_ids = set(BundleLayout(bundle).read_manifest()["split"]["test"])
    held_out = [p for p in problems if p.id in test_ids]
    controller = AdaptiveController.load(bundle, model, tokenizer, ctl_cfg, task=task)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(held_out) * len(strategies), desc="evaluate", unit="answer", disable=args.no_progress)
    rows = evaluate(controller, task, held_out, strategies, rows_path=out / "evaluate.rows.jsonl",
                    progress=bar.update)
    bar.close()
    rows += [r for r in oracle_rows(store) if r["problem_id"] in test_ids]
    summary = summarize(rows, seed=args.seed)
    mc = matched_compute(summary)
    full = f"fixed@{args.token_cap}"
    savings = {"serial_vs_greedy": paired_comparison(rows, "serial", full, seed=args.seed),
               "adaptive_vs_greedy": paired_comparison(rows, "adaptive", full, seed=args.seed),
               "adaptive_vs_sc16": paired_comparison(rows, "adaptive", "sc@16", seed=args.seed)}
    voted = sorted(r["problem_id"] for r in rows
                   if r["strategy"] == "adaptive" and r["route"] in ("parallel", "serial+parallel"))
    savings["votes_vs_serial_on_routed"] = paired_comparison(rows, "adaptive", "serial", seed=args.seed,
                                                             problems=voted) if voted else None
    doubled = sorted(r["problem_id"] for r in rows if r["strategy"] == "serial" and r.get("doubled"))
    savings["doubled_vs_serial"] = paired_comparison(rows, "serial", full, seed=args.seed,
                                                     problems=doubled) if doubled and full in strategies else None
    write_json(out / "evaluate.json", {"strategies": summary, "matched_compute": mc, "paired": savings,
                                       "config": {"task": args.task, "seed": args.seed, "n": len(held_out),
                                                  "problems": "test split of the demo's traces",
                                                  "model": args.model, "strategies": strategies,
                                                  "token_cap": args.token_cap,
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
        "routing": routing_summary(table), "routing_meta": table.meta, "evaluate": summary, "matched_compute": mc,
        "paired": savings}
    write_json(out / "summary.json", result)
    print()
    print(format_table(summary))
    print()
    if conf:
        diff = train.get("difficulty", {})
        print(f"held-out AUROC: confidence probe (layer {conf.get('layer')}) {_fmt_auc(conf.get('test_auroc'))}, "
              f"outlook probe {_fmt_auc(train.get('outlook', {}).get('test_auroc'))}, difficulty prompt probe "
              f"{_fmt_auc(diff.get('prompt_probe_test_auroc'))}, LightGBM {_fmt_auc(diff.get('lightgbm_test_auroc'))}")
    rc = cal["risk_control"]
    print(f"calibration ({cal['calibrator']}): test ECE {ece_u['value']:.3f} -> {ece_c['value']:.3f} "
          f"[{ece_c['ci95'][0]:.3f}, {ece_c['ci95'][1]:.3f}]; stop rule {rc['score']!r} >= {rc['threshold']} "
          f"certified at epsilon={rc['epsilon']} on {rc['n_calib_problems']} calib problems")
    print("routing: " + ", ".join(f"P(solve) in [{a:.2f}, {b:.2f}) -> {r}"
                                  for (a, b), r in ((x["p_solve"], x["route"]) for x in routing_summary(table)))
          + f" (fitted on {table.meta.get('n_problems')} calib problems)")
    for name, label in (("doubling", "budget doubling"), ("escalation", "escalation")):
        if name in table.meta:
            print("  " + decision_line(label, table.meta[name]))
    for line in summary_lines(savings, summary, mc, full):
        print(line)
    print(f"total {stamps['done']:.0f} s; wrote {out}/summary.json, {out}/evaluate.json, {out}/evaluate.png, "
          f"{out}/reliability.png, {out}/report/report.html, bundle {out}/bundle")
    return 0


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def summary_lines(savings: dict, summary: dict, mc: dict, full: str) -> list[str]:
    """Where adaptive saved or gained, with figures and 95 % intervals (paired over the same problems)."""
    lines = []
    s = savings.get("serial_vs_greedy")
    if s and "thinking_saved_fraction" in s:
        lo, hi = s["thinking_saved_ci95"]
        dlo, dhi = s["accuracy_diff_ci95"]
        lines.append(f"early stopping (serial vs {full}, greedy to the end): {_pct(s['thinking_saved_fraction'])} "
                     f"[{_pct(lo)}, {_pct(hi)}] fewer thinking tokens ({s['thinking_tokens_baseline']:.1f} -> "
                     f"{s['thinking_tokens_target']:.1f}), accuracy {s['accuracy_baseline']:.3f} -> "
                     f"{s['accuracy_target']:.3f} (difference {s['accuracy_diff']:+.3f} [{dlo:+.3f}, {dhi:+.3f}], "
                     f"{s['n']} problems)")
    if "adaptive" in summary:
        routes = summary["adaptive"].get("routes", {})
        n = summary["adaptive"]["n"]
        v = savings.get("votes_vs_serial_on_routed")
        voted = routes.get("parallel", 0) + routes.get("serial+parallel", 0)
        doubled = summary["adaptive"].get("doubled", 0)
        if doubled:
            d = savings.get("doubled_vs_serial")
            lines.append(f"budget doubling: {doubled} of {n} queries thought again after 'Wait'"
                         + (f"; on them {d['accuracy_target']:.3f} against {d['accuracy_baseline']:.3f} without"
                            if d else ""))
        if v:
            lo, hi = v["accuracy_diff_ci95"]
            escalated = routes.get("serial+parallel", 0)
            lines.append(f"routing: {voted} of {n} queries sent to votes ({escalated} of them escalated from a "
                         f"doubtful serial answer); on them votes scored "
                         f"{v['accuracy_target']:.3f} against the serial route's {v['accuracy_baseline']:.3f} "
                         f"({v['accuracy_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]) for "
                         f"{-100 * v['tokens_saved_fraction']:.0f} % more tokens")
        else:
            lines.append(f"routing: no query sent to votes ({', '.join(f'{k} {c}' for k, c in routes.items())})")
        a = savings.get("adaptive_vs_sc16")
        if a:
            lo, hi = a["accuracy_diff_ci95"]
            lines.append(f"adaptive against sc@16: accuracy {a['accuracy_target']:.3f} vs {a['accuracy_baseline']:.3f}"
                         f" ({a['accuracy_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]) at "
                         f"{_pct(1 - a['tokens_saved_fraction'])} of its tokens")
        if mc:
            worse = [f for f, x in mc.items() if not x["target_at_least_as_accurate"]]
            lines.append("adaptive at matched tokens: " + ("at least as accurate as every baseline family"
                                                            if not worse else "less accurate than " + ", ".join(worse)))
    return lines


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

    from thinkctl.bundle import CONFIDENCE_CALIBRATOR, BundleLayout
    from thinkctl.calibration.calibrators import load_calibrator
    from thinkctl.calibration.plotting import reliability_diagram

    entry = next(iter(entries.values()))
    y, logits = entry["y_true_test"], entry["scores_test"]
    calibrator = load_calibrator(BundleLayout(bundle).path(CONFIDENCE_CALIBRATOR))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    reliability_diagram(y, 1.0 / (1.0 + np.exp(-logits)), ax=axes[0], label="probe (sigmoid)")
    axes[0].set_title("confidence probe, uncalibrated")
    reliability_diagram(y, calibrator.predict_proba(logits), ax=axes[1], label="calibrated")
    axes[1].set_title("after the bundle's calibrator (test problems)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
