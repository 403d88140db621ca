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
    for name in ("01_collect_and_train.ipynb", "02_calibration_report.ipynb"):
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
    assert ltt["n_calib_samples"] >= ltt["min_n"] == 45  # the default split leaves enough samples to certify
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
    calibration = json.loads((Path(res["bundle"]) / "bundle.json").read_text())["calibration"]
    assert calibration == {"confidence_calibrator": res["chosen_calibrator"], "stop_threshold": ltt["threshold"]}
    text, images = _outputs(nb)
    assert images >= 2  # reliability diagrams and the risk curve
    assert "uncalibrated" in text and "report.html" in text
