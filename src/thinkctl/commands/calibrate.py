"""``thinkctl calibrate``: calibrators + a Learn-then-Test early-stopping threshold for a bundle (in place)."""

from __future__ import annotations

import argparse

from thinkctl.commands._common import check_output_dir

NAME = "calibrate"
HELP = "calibrate a bundle's confidence probe and certify its early-stopping threshold (Learn-then-Test)"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder written by `thinkctl train`")
    p.add_argument("--epsilon", type=float, default=0.02,
                   help="largest tolerated share of problems whose right answer early stopping loses (0.02 needs "
                        "at least 114 calib problems to certify anything, several hundred to stop often)")
    p.add_argument("--delta", type=float, default=0.1, help="allowed probability that the guarantee fails")
    p.add_argument("--method", choices=["binomial", "hoeffding-bentkus"], default="binomial")
    p.add_argument("--check-points", default=None, metavar="B1,B2,...", type=lambda t: _check_points(t),
                   help="thinking budgets at which the certified stop rule reads its score (default: the trace "
                        "store's checkpoint grid, every --every tokens of `thinkctl collect`, which the controller "
                        "then reads; give a custom ControllerConfig's check_points here; 'all': every recorded "
                        "checkpoint)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--train-folds", type=int, default=5,
                   help="fit the calibrators on the calib split plus the train split's out-of-fold probe logits, "
                        "cross-fitted in this many folds by problem (0: the calib split alone)")
    p.add_argument("--route-budget", type=float, default=3.0,
                   help="routing table: mean tokens per query at most this many times one greedy answer's")
    p.add_argument("--no-routing", action="store_true", help="do not fit the routing table (routing.json)")
    p.add_argument("--model", default=None, metavar="SPEC",
                   help="the model the bundle was trained on ('embedded', 'smollm2', a folder or .gguf), loaded to "
                        "fit the serial route's budget doubling on the calib problems (default: the embedded model "
                        "for a bundle trained on it; for another bundle without --model, doubling is not fitted)")


def _check_points(text: str) -> tuple[int, ...]:
    """argparse type of --check-points: () for 'all', else strictly increasing positive budgets (a usage error,
    exit status 2, otherwise)."""
    if text.strip().lower() == "all":
        return ()
    try:
        points = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give thinking budgets as integers separated by commas, e.g. "
                                         "64,128,256, or 'all'") from None
    if not points or any(b <= a for a, b in zip(points, points[1:])) or points[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give strictly increasing positive budgets, e.g. 64,128,256")
    return points


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from thinkctl.calibration.bundle import CalibrationConfig, calibrate_bundle

    check_output_dir(args.bundle, "--bundle")  # calibrate writes into the bundle
    cfg = replace(CalibrationConfig(), epsilon=args.epsilon, delta=args.delta, method=args.method,
                  n_boot=args.n_bootstrap, train_folds=args.train_folds)
    if args.check_points is not None:
        cfg = replace(cfg, check_points=args.check_points)
    rep = calibrate_bundle(args.bundle, cfg)
    u, c = rep["test_uncalibrated"]["ece"], rep["test_calibrated"]["ece"]
    data = rep["calibration_data"]
    print(f"calibrator: {rep['calibrator']} (grouped CV Brier on {data['calib_checkpoints']} calib + "
          f"{data['train_out_of_fold_checkpoints']} out-of-fold train checkpoints: "
          + ", ".join(f"{k}={v:.4f}" for k, v in rep["cv_brier"].items()) + ")")
    print(f"test ECE (15 bins): uncalibrated {u['value']:.4f} [{u['ci95'][0]:.4f}, {u['ci95'][1]:.4f}] -> "
          f"calibrated {c['value']:.4f} [{c['ci95'][0]:.4f}, {c['ci95'][1]:.4f}]")
    rc = rep["risk_control"]
    if rc["threshold"] is None:
        print(f"no early-stopping threshold certified on {rc['n_calib_problems']} calib problems: {rc['reason']}")
    else:
        es = rep["test_early_stopping"]
        print(f"stop rule: score {rc['score']!r} >= {rc['threshold']:.4f}, read every "
              f"{_spacing(rc['check_points'])} thinking tokens (epsilon={rc['epsilon']}, delta={rc['delta']}, "
              f"certified on {rc['n_calib_problems']} calib problems; at most {rc['most_losses_certifiable']} "
              f"losses among them could pass); on test: realised risk {es['realised_risk']:.3f}, thinking "
              f"{es['thinking_tokens_full_mean']:.1f} -> {es['thinking_tokens_stopped_mean']:.1f} tokens "
              f"({100 * es['thinking_saved_fraction']:.1f} % saved), accuracy {es['accuracy_full']:.3f} -> "
              f"{es['accuracy_stopped']:.3f} ({es['n_problems']} problems)")
    from thinkctl.bundle import DIFFICULTY_PROBE, BundleLayout

    if not args.no_routing and BundleLayout(args.bundle).path(DIFFICULTY_PROBE).is_dir():
        from thinkctl.controller.routing import decision_line, fit_bundle_routing, routing_summary

        spec = args.model
        if spec is None and BundleLayout(args.bundle).read_manifest()["model"].get("name") == "thinkctl-embedded":
            spec = "embedded"
        model = tokenizer = None
        if spec is not None:
            from thinkctl.models import load_model

            model, tokenizer = load_model(spec)
        from thinkctl.eval.serial_decisions import fit_bundle_serial_decisions

        table = fit_bundle_routing(args.bundle, token_budget_multiple=args.route_budget, tokenizer=tokenizer)
        table = fit_bundle_serial_decisions(args.bundle, table, model=model, tokenizer=tokenizer,
                                            token_budget_multiple=args.route_budget)
        print("routing table (fitted on the calib split): " + ", ".join(
            f"P(solve) in [{a:.2f}, {b:.2f}) -> {r}" for (a, b), r in
            ((x["p_solve"], x["route"]) for x in routing_summary(table)))
              + f"; expected accuracy {table.meta['expected_accuracy']:.3f} at {table.meta['expected_tokens']:.0f} "
                f"tokens (budget {table.meta['token_budget']:.0f})")
        for name in ("doubling", "escalation"):
            print("  " + decision_line("budget doubling" if name == "doubling" else "escalation",
                                       table.meta.get(name) or {}))
        for b, (n, bounds) in enumerate(zip(table.meta["bin_sizes"], table.meta["gain_lower_bounds"])):
            best = max(bounds.items(), key=lambda kv: kv[1], default=None)
            if best is not None:
                print(f"  bin {b}: {n} calib problems; best lower 95 % bound on a dearer route's accuracy gain: "
                      f"{best[0]} {best[1]:+.3f} (a gain is acted on only when this is above 0)")
    return 0


def _spacing(points: list[int]) -> str:
    """``"8"`` for an evenly spaced schedule 8, 16, 24, ...; otherwise the first few budgets."""
    gaps = {b - a for a, b in zip(points, points[1:])}
    if len(gaps) == 1 and points[0] == next(iter(gaps)):
        return str(points[0])
    return "/".join(map(str, points[:4])) + ("/..." if len(points) > 4 else "")
