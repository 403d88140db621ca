"""Across 10 problem splits of one bundle's traces (split seeds 0..9, the probe refitted on each train split at the
bundle's layer): test ECE of the calibrator chosen by grouped CV Brier, fitted on the calib split alone (the old
`thinkctl calibrate`) vs on calib + the train split's out-of-fold logits (the new default). Usage:
`python study.py BUNDLE_DIR 10` (the bundle of `thinkctl collect --task arith --n 240 --samples 4` + `train`)."""
import json, sys
import numpy as np
from pathlib import Path
from thinkctl.traces.store import TraceStore
from thinkctl.predictors.probe import HiddenStateProbe
from thinkctl.predictors.from_traces import PredictorTrainingConfig, problem_split
from thinkctl.calibration.metrics import expected_calibration_error
from thinkctl.bundle import BundleLayout
from thinkctl.calibration.bundle import choose_calibrator, out_of_fold_logits

b = Path(sys.argv[1]); seeds = range(int(sys.argv[2]))
meta = BundleLayout(b).read_manifest()
store = TraceStore(BundleLayout(b).trace_store_path(meta))
ca = store.checkpoint_arrays(meta["confidence_layer"])
y = ca.y.astype(int)

def choose(x, yy, g):  # the default CalibrationConfig: four calibrators, 5-fold grouped CV Brier, seed 0
    best, _, fitted = choose_calibrator(x, yy, g)
    return best, fitted

rows = []
for s in seeds:
    sp = problem_split(list(ca.groups), PredictorTrainingConfig(seed=s))
    tr, cal, te = (np.isin(ca.groups, sp[k]) for k in ("train", "calib", "test"))
    probe = HiddenStateProbe(random_state=s).fit(ca.X[tr], y[tr], groups=ca.groups[tr])
    z = probe.decision_function(ca.X)
    e = lambda p: expected_calibration_error(y[te], p[te], n_bins=15)
    n1, c1 = choose(z[cal], y[cal], ca.groups[cal])
    oof = out_of_fold_logits(probe, ca.X[tr], y[tr], ca.groups[tr], 5, 0)
    x2 = np.concatenate([oof, z[cal]]); y2 = np.concatenate([y[tr], y[cal]]); g2 = np.concatenate([ca.groups[tr], ca.groups[cal]])
    n2, c2 = choose(x2, y2, g2)
    r = dict(seed=s, rates=[round(float(y[m].mean()), 3) for m in (tr, cal, te)], raw=e(1 / (1 + np.exp(-z))),
             calib_only=(n1, e(c1.predict_proba(z))), cross_fit=(n2, e(c2.predict_proba(z))))
    rows.append(r); print(r, flush=True)
a = np.array([r["calib_only"][1] for r in rows]); c = np.array([r["cross_fit"][1] for r in rows])
print(json.dumps({"bundle": str(b), "n_seeds": len(rows), "calib_only_mean": a.mean(), "cross_fit_mean": c.mean(),
                  "calib_only_le_003": int((a <= 0.03).sum()), "cross_fit_le_003": int((c <= 0.03).sum()),
                  "cross_fit_better": int((c < a).sum())}))
