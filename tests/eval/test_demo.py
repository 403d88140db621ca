"""thinkctl demo end to end on a tiny configuration: every artefact is written and the numbers are consistent."""

from __future__ import annotations

import json

import pytest

from thinkctl.bundle import BundleLayout
from thinkctl.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "24", "--samples", "2", "--token-cap", "160",
            "--strategies", "fixed@32,sc@2,adaptive", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "adaptive" in printed and "routing:" in printed and "held-out AUROC" in printed
    for f in ("summary.json", "evaluate.json", "evaluate.png", "reliability.png", "evaluate.rows.jsonl",
              "report/report.html", "bundle/routing.json", "bundle/calibration/risk_control.json",
              "traces/config.json"):
        assert (out / f).is_file(), f
    ev = json.loads((out / "evaluate.json").read_text())
    test_ids = BundleLayout(out / "bundle").read_manifest()["split"]["test"]
    assert set(ev["strategies"]) == {"fixed@32", "sc@2", "adaptive", "oracle"}
    for name, s in ev["strategies"].items():
        assert s["n"] == len(test_ids) and 0 <= s["accuracy"] <= 1 and s["ci95"][0] <= s["accuracy"] <= s["ci95"][1]
    assert ev["strategies"]["sc@2"]["samples_mean"] == 2.0
    # the oracle (earliest right checkpoint) is at least as accurate as the greedy fixed-budget answer
    assert ev["strategies"]["oracle"]["accuracy"] >= ev["strategies"]["fixed@32"]["accuracy"] - 1e-9 or \
        ev["strategies"]["fixed@32"]["tokens_mean"] > ev["strategies"]["oracle"]["tokens_mean"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings_s"]["done"] > 0 and summary["routing"]
    rows = (out / "evaluate.rows.jsonl").read_text().splitlines()
    assert len(rows) == 3 * len(test_ids)
    # a second run resumes every stage: no row is recomputed
    assert main(args) == 0
    assert (out / "evaluate.rows.jsonl").read_text().splitlines() == rows
