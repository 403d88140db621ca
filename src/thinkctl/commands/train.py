"""``thinkctl train``: predictors (confidence probe, difficulty probe and LightGBM) from a trace store -> bundle."""

from __future__ import annotations

import argparse

from thinkctl.commands._common import check_output_dir

NAME = "train"
HELP = "train predictors from traces into a bundle, with held-out AUROC and 95%% intervals"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--traces", required=True, help="trace store written by `thinkctl collect`")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/calib/test problem split")
    p.add_argument("--probe", choices=["linear", "mlp"], default="linear")
    p.add_argument("--calib-fraction", type=float, default=0.25,
                   help="share of the problems kept for calibration (Learn-then-Test at epsilon 0.02 certifies "
                        "nothing below 114 problems; a rule that stops often needs several hundred)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of the problems kept for measuring")
    p.add_argument("--n-bootstrap", type=int, default=1000)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from thinkctl.predictors.from_traces import PredictorTrainingConfig, train_predictors
    from thinkctl.traces import TraceStore

    cfg = PredictorTrainingConfig(seed=args.seed, probe_kind=args.probe, n_bootstrap=args.n_bootstrap,
                                  calib_fraction=args.calib_fraction, test_fraction=args.test_fraction)
    rep = train_predictors(TraceStore(args.traces), args.out, cfg)
    c = rep["confidence"]
    a = c["test_auroc"]
    print(f"confidence probe (layer {c['layer']}): test AUROC {a['value']:.3f} "
          f"[{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]")
    d = rep["difficulty"]
    for key in ("prompt_probe_test_auroc", "lightgbm_test_auroc"):
        if key in d:
            print(f"difficulty {key.split('_test')[0]}: test AUROC {d[key]['value']:.3f} "
                  f"[{d[key]['ci95'][0]:.3f}, {d[key]['ci95'][1]:.3f}]")
    o = rep.get("outlook", {}).get("test_auroc")
    if o:
        print(f"outlook probe (final answer will be right): test AUROC {o['value']:.3f} "
              f"[{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}]")
    print(f"wrote {args.out}")
    return 0
