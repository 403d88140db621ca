"""The notebooks run top to bottom on a fresh kernel and produce what they claim (read back from their results.json).

Both run in CI (``slow`` tests are not deselected there). The kernel is this interpreter (``sys.executable``), through
a kernelspec written to a temporary folder: a ``python3`` kernelspec found on the machine may point at another Python
that lacks thinkctl (the one pip installs into the venv runs plain ``python`` from PATH). Each notebook runs in its own
temporary working directory, with ``TMPDIR`` there too, so nothing is left behind.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import nbclient  # the dev extra installs nbclient, nbformat and ipykernel: CI must run these, never skip them
import nbformat
import pytest

from thinkctl.bundle import BundleLayout

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "thinkctl-test-python"
#: Per-cell limit, far above need: each notebook takes one to two minutes on two cores (its collection cell most of it).
CELL_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec folder whose only kernel runs ipykernel in this very interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "thinkctl tests", "language": "python"}))
    return root


def _execute(name: str, workdir: Path, kernel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("TMPDIR", str(workdir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(workdir / ".jupyter-runtime"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    runtime = workdir / ".jupyter-runtime"
    runtime.mkdir()
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]),
                       connection_file=str(runtime / "kernel.json"))  # else a /tmp/tmp*.json outlives the test
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    nbformat.write(nb, workdir / name)  # the executed copy, for a look when a check below fails
    return nb


def _outputs(nb: Any) -> tuple[str, int]:
    """All text a notebook printed, and how many images it displayed."""
    text, images = [], 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                text.append(o["text"])
            elif o.get("output_type") in ("display_data", "execute_result"):
                images += "image/png" in o.get("data", {})
                text.append(o.get("data", {}).get("text/plain", ""))
            elif o.get("output_type") == "error":
                raise AssertionError(f"cell raised {o['ename']}: {o['evalue']}")
    return "".join(text), images


def _is_probability(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_parameters_come_first():
    """Size knobs live in one cell, the first code cell, tagged for papermill."""
    for name in ("01_collect_and_train.ipynb", "02_calibration_report.ipynb", "03_controller.ipynb",
                 "04_any_engine.ipynb"):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), name
        assert "N_PROBLEMS" in first.source and "OUT_DIR" in first.source and "import" not in first.source
        later = "".join(c.source for c in nb.cells if c.cell_type == "code" and c is not first)
        assert "N_PROBLEMS =" not in later and "OUT_DIR =" not in later
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is committed with outputs"


@pytest.mark.slow
def test_collect_and_train_notebook(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("01_collect_and_train.ipynb", tmp_path, kernel_dir, monkeypatch)
    res = json.loads((tmp_path / "runs" / "notebook01" / "results.json").read_text())
    assert res["python"] == sys.executable
    params = res["params"]
    assert res["n_samples"] == params["n_problems"] * params["samples"]
    assert res["n_checkpoints"] >= res["n_samples"]
    assert sum(res["n_problems_per_split"].values()) == params["n_problems"]

    auc, (lo, hi) = res["confidence_auroc"], res["confidence_auroc_ci95"]
    assert _is_probability(auc) and _is_probability(lo) and _is_probability(hi) and lo <= auc <= hi
    assert auc > 0.6  # the README measures 0.94 at scale; even a few dozen problems sit far above chance
    assert res["reloaded_probe_auroc"] == pytest.approx(auc, abs=1e-12)
    assert 0 <= res["confidence_layer"] < res["model"]["num_layers"]
    assert sorted(int(k) for k in res["layer_sweep"]) == list(range(res["model"]["num_layers"]))
    assert all(_is_probability(v) for v in res["layer_sweep"].values())
    for key in ("baseline_position_auroc", "difficulty_prompt_probe_auroc", "difficulty_lightgbm_auroc"):
        assert _is_probability(res[key]), key

    assert "hidden size" in res["mismatch_errors"]["load"] and "tiny-random-llama-48" in res["mismatch_errors"]["load"]
    assert "(32, 48)" in res["mismatch_errors"]["call"]

    bundle = Path(res["paths"]["bundle"])
    for f in ("bundle.json", "train_report.json", "layer_sweep.png", "confidence_probe/probe.json",
              "confidence_probe/probe.safetensors", "difficulty_lgbm"):
        assert (bundle / f).exists(), f
    assert json.loads((bundle / "train_report.json").read_text())["confidence"]["test_auroc"]["value"] == auc
    text, images = _outputs(nb)
    assert images >= 1  # the layer sweep
    assert f"{auc:.3f}" in text and "raised ValueError" in text


@pytest.mark.slow
def test_calibration_report_notebook(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("02_calibration_report.ipynb", tmp_path, kernel_dir, monkeypatch)
    out = tmp_path / "runs" / "notebook02"
    res = json.loads((out / "results.json").read_text())
    assert res["python"] == sys.executable
    metrics = res["metrics"]
    assert set(metrics) == {"uncalibrated", "temperature", "platt", "isotonic", "histogram"}
    for variant, vals in metrics.items():
        for m in ("ECE", "MCE", "Brier", "AUROC"):
            v, (lo, hi) = vals[m]["value"], vals[m]["ci95"]
            assert _is_probability(v) and lo <= v + 1e-12 and v <= hi + 1e-12, (variant, m)
    # temperature and Platt scaling are monotone maps of the logit: ranking (AUROC) cannot change
    assert metrics["temperature"]["AUROC"]["value"] == pytest.approx(metrics["uncalibrated"]["AUROC"]["value"])
    assert metrics["platt"]["AUROC"]["value"] == pytest.approx(metrics["uncalibrated"]["AUROC"]["value"])
    assert res["chosen_calibrator"] in metrics and _is_probability(res["auroc"])

    ltt = res["ltt"]
    assert ltt["n_calib_problems"] >= ltt["min_n"] == 45  # the default split leaves enough problems to certify
    if ltt["threshold"] is None:
        assert ltt["reason"] and ltt["guarantee"] is None
    else:
        assert _is_probability(ltt["threshold"]) and ltt["n_valid"] >= 1
        assert "at most 5%" in ltt["guarantee"] and "90%" in ltt["guarantee"]
        es = res["test_early_stopping"]
        assert _is_probability(es["realised_risk"]) and _is_probability(es["thinking_fraction_used_mean"])

    html = Path(res["report_html"])
    assert html.is_file() and html.resolve().is_relative_to(tmp_path.resolve())  # a temporary folder under TMPDIR
    page = html.read_text()
    assert "<img" in page and "data:image/png;base64," in page and "confidence probe" in page
    report = json.loads(Path(res["report_json"]).read_text())
    assert "confidence probe (forced answer right)" in report["predictors"]
    assert all(Path(f).is_file() for f in res["figures"])
    calibration = BundleLayout(res["bundle"]).read_manifest()["calibration"]
    assert {k: calibration[k] for k in ("confidence_calibrator", "stop_threshold")} == \
        {"confidence_calibrator": res["chosen_calibrator"], "stop_threshold": ltt["threshold"]}
    assert calibration["stop_score"] in ("confidence", "1 - outlook", "max(confidence, 1 - kappa * outlook)")
    text, images = _outputs(nb)
    assert images >= 2  # reliability diagrams and the risk curve
    assert "uncalibrated" in text and "report.html" in text


ROUTES = {"easy", "serial", "parallel"}
#: Why a row's thinking or sampling ended (see thinkctl.controller.reasons and thinkctl.eval.evaluate).
STOP_REASONS = {"closed", "confident", "cap", "deadline", "eos", "settled", "budget"}


def _check_controller_row(d: dict, route: str | None = None) -> None:
    """One per-prompt row of notebook 03: answered, costed, and consistent with the controller's decision rules."""
    assert d["answer"] and d["tokens"] > 0 and d["samples"] >= 1, d
    assert d["correct"] == (d["answer"] == d["gold"]), d  # arith answers and gold are canonical integers
    assert d["route"] in ROUTES and (route is None or d["route"] == route), d
    assert _is_probability(d["p_solve"]) and _is_probability(d["confidence"]), d
    assert d["stop"] in STOP_REASONS, d
    if d["route"] == "parallel":
        assert not d["probes"], d  # the parallel route samples; it never probes
        return
    assert d["samples"] == 1 and d["thinking_tokens"] <= d["budgets"][-1], d  # the route's thinking cap holds
    thr = d["threshold"]
    for k, (t, c) in enumerate(d["probes"]):
        assert t in d["budgets"] and _is_probability(c), d  # probes only at the doubling schedule
        last = k == len(d["probes"]) - 1
        if not (last and d["stop"] == "confident"):
            assert thr is None or c < thr, d  # a probe at or above the threshold stops the row
    if d["stop"] == "confident":
        assert thr is not None and d["probes"] and d["probes"][-1][1] >= thr, d
        assert d["thinking_tokens"] == d["probes"][-1][0], d


@pytest.mark.slow
def test_controller_notebook(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("03_controller.ipynb", tmp_path, kernel_dir, monkeypatch)
    res = json.loads((tmp_path / "runs" / "notebook03" / "results.json").read_text())
    assert res["python"] == sys.executable
    params, n = res["params"], res["n_held_out"]
    assert n == res["bundle"]["split"]["test"] > 0
    assert sum(res["bundle"]["split"].values()) == params["n_problems"]
    thr = res["bundle"]["stop_threshold"]
    assert thr is None or _is_probability(thr)

    # the routing table tiles [0, 1] in P(solve) and picks one of its candidates per bin
    table, cands = res["routing"]["table"], res["routing"]["meta"]["candidates"]
    assert table[0]["p_solve"][0] == 0.0 and table[-1]["p_solve"][1] == 1.0
    assert all(a["p_solve"][1] == b["p_solve"][0] for a, b in zip(table, table[1:]))
    assert len(res["routing"]["estimates"]) == len(table)
    for row, est in zip(table, res["routing"]["estimates"]):
        assert row["route"] in cands and row["route"].partition("@")[0] in ROUTES
        assert set(est) == set(cands)
        assert all(_is_probability(v["accuracy"]) and v["tokens"] > 0 for v in est.values())

    # generate() on one problem per level, and the same prompts forced down each route
    assert [d["level"] for d in res["demo"]] == sorted({d["level"] for d in res["demo"]}) and len(res["demo"]) >= 3
    for d in res["demo"]:
        _check_controller_row(d)
    assert set(res["forced_routes"]) == ROUTES
    for route, rows in res["forced_routes"].items():
        assert [d["problem_id"] for d in rows] == [d["problem_id"] for d in res["demo"]]
        for d in rows:
            _check_controller_row(d, route)
            if route == "parallel":
                assert d["samples"] <= params["forced_samples"] + 1  # + 1: the forced answer when nobody voted
    caps = {route: max(d["budgets"][-1] for d in rows) for route, rows in res["forced_routes"].items()
            if route != "parallel"}
    assert caps["easy"] < caps["serial"] < res["controller"]["token_cap"]

    # strategies on the held-out problems
    summary = res["strategies"]
    assert set(params["strategies"]) | {"oracle"} == set(summary)
    for name, s in summary.items():
        lo, hi = s["ci95"]
        assert s["n"] == n and _is_probability(s["accuracy"]) and lo <= s["accuracy"] <= hi, name
        assert s["tokens_mean"] > 0, name
    assert summary["fixed@1024"]["samples_mean"] == 1.0 and 8 <= summary["sc@8"]["samples_mean"] <= 9
    assert 5 <= summary["esc@16"]["samples_mean"] <= 17  # ESC draws windows of 5
    assert summary["sc@8"]["tokens_mean"] > summary["fixed@1024"]["tokens_mean"]
    assert set(summary["adaptive"]["routes"]) <= ROUTES and set(res["routes_chosen"]) <= ROUTES
    assert sum(res["routes_chosen"].values()) == n
    assert set(res["adaptive_stop_reasons"]) <= STOP_REASONS

    # the deadline: every prompt answered, thinking cut short
    dl = res["deadline"]
    assert dl["n_prompts"] == n == len(dl["rows"]) == dl["n_answered"]
    assert all(d["answer"] and d["tokens"] > 0 for d in dl["rows"])
    assert set(dl["reasons"]) <= {"deadline", "closed", "confident"} and "deadline" in dl["reasons"]
    for d in dl["rows"]:
        if d["stop"] == "deadline" and d["thinking_tokens"] is not None and d["free_thinking_tokens"] is not None:
            assert d["thinking_tokens"] <= d["free_thinking_tokens"], d
    assert _is_probability(dl["accuracy"])

    # a custom scorer for best-of-N, on the same samples as the vote
    sc = res["scorer"]
    assert sc["strategy"] == params["best_of"] and sc["n"] == n and 8 <= sc["samples_mean"] <= 9
    assert _is_probability(sc["accuracy"]) and _is_probability(sc["pass_at_n"])
    assert sc["same_samples"] is True and sc["vote_strategy"] == "sc@8"
    assert sc["pass_at_n"] >= max(sc["accuracy"], sc["vote_accuracy"]) - 1e-12  # a selector cannot beat pass@N

    text, images = _outputs(nb)
    assert images >= 3  # routing table, confidence probes, accuracy against tokens
    assert "Learn-then-Test" in text and f"{n}/{n} prompts answered" in text



@pytest.mark.slow
def test_any_engine_notebook(tmp_path, kernel_dir, monkeypatch):
    import hashlib

    import thinkctl
    from thinkctl.tasks import Problem
    from thinkctl.traces import TraceStore

    nb = _execute("04_any_engine.ipynb", tmp_path, kernel_dir, monkeypatch)
    res = json.loads((tmp_path / "runs" / "notebook04" / "results.json").read_text())
    assert res["python"] == sys.executable
    params, gens = res["params"], res["generations"]
    task = thinkctl.tasks.get(params["task"])

    # 1. the generations files, in the documented schema, greedy text first; the held-out problems are new
    gens_path, held_path = Path(gens["path"]), Path(gens["held_out_path"])
    lines = [json.loads(x) for x in gens_path.read_text(encoding="utf-8").splitlines()]
    held = [json.loads(x) for x in held_path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == gens["lines"] == params["n_problems"] and 0 < len(held) == gens["held_out_lines"]
    assert len(held) <= params["n_held_out"] and not {h["prompt"] for h in held} & {ln["prompt"] for ln in lines}
    for ln in lines + held:
        assert set(ln) == {"id", "prompt", "gold", "level", "features", "generations"}, ln
        assert all(isinstance(t, str) and t for t in ln["generations"]), ln
    assert all(len(ln["generations"]) == params["samples"] for ln in lines)
    assert all(len(h["generations"]) == 1 for h in held)

    def greedy_accuracy(rows: list[dict]) -> float:
        problems = [Problem(r["id"], r["prompt"], r["gold"]) for r in rows]
        return sum(task.is_correct(p, r["generations"][0]) for p, r in zip(problems, rows)) / len(rows)

    assert gens["greedy_accuracy"] == pytest.approx(greedy_accuracy(lines))

    # 2. collect --generations labelled exactly these texts, the greedy one as the greedy sample
    store = TraceStore(res["store"]["path"])
    assert store.config["generations"]["sha256"] == hashlib.sha256(gens_path.read_bytes()).hexdigest()
    assert store.config["generations"]["lossy_texts"] == 0
    rows = store.samples()
    assert len(rows) == res["store"]["n_samples"] == params["n_problems"] * params["samples"]
    texts = {ln["id"]: ln["generations"] for ln in lines}
    assert all(r["text"] == texts[r["problem_id"]][r["sample"]] for r in rows)
    assert all(r["greedy"] == (r["sample"] == 0) for r in rows)
    assert all(bool(r["checkpoints"]) == r["greedy"] for r in rows)  # --checkpoints greedy
    assert TraceStore(res["store"]["held_out_path"]).config["generations"]["sha256"] == \
        hashlib.sha256(held_path.read_bytes()).hexdigest()

    # 3. train, 4. calibrate: a bundle with a stop rule certified, or the reason none was
    split = res["train"]["split"]
    assert sum(split.values()) == params["n_problems"]
    auc, (lo, hi) = res["train"]["confidence_auroc"], res["train"]["confidence_auroc_ci95"]
    assert _is_probability(auc) and lo <= auc <= hi
    ltt = res["ltt"]
    assert ltt["n_calib_problems"] == split["calib"] >= ltt["min_problems_for_epsilon"] == 45  # enough to certify
    if ltt["threshold"] is None:
        assert ltt["reason"] and ltt["guarantee"] is None and "probe" in res["replay"]["skipped"]
    else:
        assert _is_probability(ltt["threshold"]) and "at most 5%" in ltt["guarantee"] and "90%" in ltt["guarantee"]
    assert BundleLayout(res["bundle"]).read_manifest()["calibration"]["stop_threshold"] == ltt["threshold"]

    # 5. the offline replay on the held-out store: `full` is the held-out greedy texts' own accuracy
    strategies = res["replay"]["strategies"]
    assert {"full", "oracle"} <= set(strategies) and ("probe" in strategies) == (ltt["threshold"] is not None)
    full, oracle = strategies["full"], strategies["oracle"]
    assert full["n"] == len(held) and full["accuracy"] == pytest.approx(greedy_accuracy(held))
    assert full["accuracy"] == pytest.approx(gens["held_out_greedy_accuracy"])
    assert oracle["accuracy"] >= full["accuracy"] and oracle["thinking_tokens_mean"] <= full["thinking_tokens_mean"]
    for name, s in strategies.items():
        lo, hi = s["ci95"]
        assert s["n"] == len(held) and _is_probability(s["accuracy"]) and lo <= s["accuracy"] <= hi, name
        assert s["tokens_mean"] > s["thinking_tokens_mean"] >= 0, name
    assert json.loads(Path(res["replay"]["json"]).read_text())["strategies"] == strategies

    # 6. the controller answered every prompt, with a confidence and its cost
    ctl = res["controller"]
    assert [d["problem_id"] for d in ctl] == [h["id"] for h in held[:params["n_prompts"]]]
    for d in ctl:
        assert d["answer"] and _is_probability(d["confidence"]) and d["samples"] >= 1, d
        assert d["tokens"] > d["thinking_tokens"] >= 0, d
        assert d["correct"] == (d["answer"] == d["gold"]), d  # arith answers and gold are canonical integers
        assert d["strategy"] and (d["stop"] is None or d["stop"] in STOP_REASONS), d

    text, _ = _outputs(nb)
    for command in ("collect --generations", "train --traces", "calibrate --bundle", "replay --traces"):
        assert f"$ thinkctl {command}" in text, command
    assert "Learn-then-Test" in text
