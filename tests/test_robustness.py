"""Bad input and faults as users hit them: every one is a clear error (exit 2, one line naming the option or file and
what to do) found before any work, never a traceback from deep inside a library or a silently wrong result."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest

import thinkctl
from thinkctl.bundle import BundleLayout
from thinkctl.calibration import TemperatureScaler
from thinkctl.cli import main
from thinkctl.commands._common import check_output_dir, check_output_file

# -- outputs: checked writable before the work starts -------------------------------------------------------------

#: (command line with OUT where the output goes, whether OUT must be a file ("file") or a folder ("dir")). The inputs
#: named here need not exist: the output is checked first.
OUTPUT_COMMANDS = [
    (["collect", "--out", "OUT", "--n", "2"], "dir"),
    (["train", "--traces", "no-such-store", "--out", "OUT"], "dir"),
    (["calibrate", "--bundle", "OUT"], "dir"),
    (["report", "--bundle", "no-such-bundle", "--out", "OUT"], "dir"),
    (["demo", "--out", "OUT", "--n", "16"], "dir"),
    (["train-embedded", "--out", "OUT", "--tiny"], "dir"),
    (["evaluate", "--task", "arith", "--seed", "1", "--n", "2", "--strategies", "fixed@16", "--json", "OUT"], "file"),
    (["replay", "--data", "no-such.jsonl", "--json", "OUT"], "file"),
    (["steps-report", "--data", "no-such.jsonl", "--json", "OUT"], "file"),
    (["gym-report", "--n", "2", "--json", "OUT"], "file"),
    (["difficulty-real", "--data", "no-such", "--json", "OUT"], "file"),
]


def _argv(template: list[str], out: Path) -> list[str]:
    return [str(out) if a == "OUT" else a for a in template]


@pytest.mark.parametrize("template,kind", OUTPUT_COMMANDS, ids=[c[0][0] for c in OUTPUT_COMMANDS])
def test_output_of_the_wrong_kind_is_refused_before_any_work(template, kind, tmp_path, capsys):
    if kind == "dir":
        out = tmp_path / "a-file"
        out.write_text("keep me")
    else:
        out = tmp_path / "a-folder"
        out.mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc = main(_argv(template, out))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and str(out) in err
    assert ("is a file, not a folder" if kind == "dir" else "is a directory; name the file") in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    if kind == "dir":
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("template,kind", OUTPUT_COMMANDS, ids=[c[0][0] for c in OUTPUT_COMMANDS])
def test_output_where_nothing_can_be_written_is_refused(template, kind, capsys):
    """/proc takes no new files, whoever runs the test (root included)."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    out = Path("/proc/thinkctl-out") / ("x.json" if kind == "file" else "out")
    rc = main(_argv(template, out))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "cannot write in /proc" in err and "Traceback" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permission bits do not bind root")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="--json .*cannot write in"):
            check_output_file(ro / "x.json", "--json")
        with pytest.raises(ValueError, match="--out .*cannot write in it"):
            check_output_dir(ro, "--out")
    finally:
        ro.chmod(0o755)


def test_output_checks_accept_what_can_be_written(tmp_path):
    assert check_output_file(tmp_path / "new" / "deeper" / "x.json", "--json") == tmp_path / "new" / "deeper" / "x.json"
    assert check_output_dir(tmp_path / "new-folder", "--out") == tmp_path / "new-folder"
    assert check_output_dir(tmp_path, "--out") == tmp_path
    assert not (tmp_path / "new").exists() and not (tmp_path / "new-folder").exists()  # checking creates nothing
    assert list(tmp_path.iterdir()) == []  # and leaves no probe behind
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, so no folder can be made there"):
        check_output_file(tmp_path / "f" / "x.json", "--json")


# -- the model's context --------------------------------------------------------------------------------------------

def test_token_caps_beyond_the_context_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["evaluate", "--task", "arith", "--seed", "1", "--n", "2", "--strategies", "fixed@16", "--token-cap",
               "5000", "--json", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "token_cap=5000 is beyond the model's context of 1024 positions" in err
    assert "Traceback" not in err and not out.exists()
    rows = out.with_suffix(".rows.jsonl")
    assert not rows.exists() or rows.read_text() == ""


def test_a_prompt_longer_than_the_context_is_refused(capsys):
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.generation import chat_prefix, generate_from_prefixes, reasoning_format

    model, tok = thinkctl.load_model("embedded")
    long_prompt = "What is " + " + ".join(["1"] * 700) + "?"
    assert len(chat_prefix(tok, long_prompt)) > 1024
    ctl = AdaptiveController(model, tok, config=ControllerConfig(token_cap=128, easy_cap=128))
    with pytest.raises(ValueError, match=r"prompt 1 of this batch .* tokens long, which fills the model's context "
                                         r"of 1024"):
        ctl.run_serial(["What is 2 + 3?", long_prompt], budgets=[16], use_confidence=False)
    fmt = reasoning_format(tok)
    with pytest.raises(ValueError, match="fills the model's context of 1024"):
        generate_from_prefixes(model, [chat_prefix(tok, long_prompt)], pad_id=fmt.pad_id, eos_ids=fmt.eos_ids,
                               max_new_tokens=8)
    # a prompt and a cap that fit one by one but not together: a warning, once
    from thinkctl.generation import check_context

    logger = logging.getLogger("thinkctl.generation")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        check_context(model, 100, 1000, cap_name="token_cap")
        check_context(model, 100, 1000, cap_name="token_cap")
        check_context(model, 24, 1000, cap_name="token_cap")  # fits: no warning
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1 and "token_cap=924 or less" in records[0].getMessage()


# -- saved artefacts: NaN, versions, damaged JSON ------------------------------------------------------------------

@pytest.fixture
def calibrator_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-2 * x))).astype(int)
    return TemperatureScaler().fit(x, y).save(tmp_path / "cal.json")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_calibrator_with_non_finite_parameters_is_refused_naming_the_file(calibrator_file, bad):
    doc = json.loads(calibrator_file.read_text())
    key = next(k for k, v in doc["state"].items() if isinstance(v, float))
    text = calibrator_file.read_text()
    calibrator_file.write_text(text.replace(json.dumps(doc["state"][key]), bad, 1))
    with pytest.raises(ValueError, match=f"{calibrator_file.name}.*non-finite number"):
        TemperatureScaler.load(calibrator_file)


def test_a_calibrator_dict_with_nan_is_refused(calibrator_file):
    doc = json.loads(calibrator_file.read_text())
    key = next(k for k, v in doc["state"].items() if isinstance(v, float))
    doc["state"][key] = math.nan
    with pytest.raises(ValueError, match=f"non-finite number .* at {key}"):
        TemperatureScaler.from_dict(doc)


def test_a_calibrator_from_an_older_version_loads_with_a_warning(calibrator_file, caplog):
    doc = json.loads(calibrator_file.read_text())
    doc["thinkctl_version"] = "0.0.7"
    calibrator_file.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="thinkctl.persistence"):
        cal = TemperatureScaler.load(calibrator_file)
    assert cal.predict_proba(np.array([0.0]))[0] == pytest.approx(0.5)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(calibrator_file.name in m and "0.0.7" in m and thinkctl.__version__ in m for m in msgs), msgs


def _manifest(tmp_path: Path, version: str | None = None) -> BundleLayout:
    layout = BundleLayout(tmp_path / "bundle")
    layout.write_manifest({"model": {"name": "m", "hidden_size": 8, "num_layers": 2}, "confidence_layer": -1})
    if version is not None:
        doc = json.loads(layout.manifest_path.read_text())
        doc["thinkctl_version"] = version
        layout.manifest_path.write_text(json.dumps(doc))
    return layout


def test_a_bundle_from_another_version(tmp_path, caplog):
    layout = _manifest(tmp_path, "0.0.3")
    with caplog.at_level(logging.WARNING, logger="thinkctl.persistence"):
        assert layout.read_manifest()["confidence_layer"] == -1
    msgs = [r.getMessage() for r in caplog.records]
    assert any(str(layout.manifest_path) in m and "0.0.3" in m and thinkctl.__version__ in m for m in msgs), msgs
    newer = _manifest(tmp_path / "n", "9.9.9")
    with pytest.raises(ValueError, match=r"bundle.json was saved by thinkctl 9\.9\.9.*newer series"):
        newer.read_manifest()


def test_a_bundle_manifest_cut_short(tmp_path, capsys):
    layout = _manifest(tmp_path)
    text = layout.manifest_path.read_text()
    layout.manifest_path.write_text(text[: len(text) // 2])
    rc = main(["calibrate", "--bundle", str(layout.root)])
    err = capsys.readouterr().err
    assert rc == 2 and "bundle.json" in err and "cut short" in err and "thinkctl train" in err
    assert "Traceback" not in err


def test_saving_is_atomic(tmp_path, monkeypatch, calibrator_file):
    """A save that fails half-way leaves the previous file whole (temporary file + rename)."""
    before = calibrator_file.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        TemperatureScaler().fit(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 1])).save(calibrator_file)
    assert calibrator_file.read_text() == before
    assert [p.name for p in calibrator_file.parent.iterdir()] == [calibrator_file.name]  # no temporary left


# -- models ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ['{"model_type": "llama", "hidden_si', "[1, 2]", '{"hidden_size": 8}'])
def test_a_model_folder_with_an_invalid_config(tmp_path, capsys, content):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    with pytest.raises(thinkctl.models.ModelSpecError, match="config.json is not a valid transformers model config"):
        thinkctl.load_model(folder)
    rc = main(["collect", "--model", str(folder), "--out", str(tmp_path / "t"), "--n", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(folder / "config.json") in err and "save_pretrained" in err and "Traceback" not in err


# -- input files and options -----------------------------------------------------------------------------------------

def test_a_non_utf8_input_file_is_named(tmp_path, capsys):
    data = tmp_path / "latin1.jsonl"
    row = {"qid": 0, "question": "café", "gt": "1", "samples": [{"answer": "1", "correct": True}]}
    data.write_bytes((json.dumps(row, ensure_ascii=False) + "\n").encode("latin-1"))
    rc = main(["replay", "--data", str(data), "--json", str(tmp_path / "r.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{data}:1: not UTF-8 text" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,option", [
    (["collect", "--out", "x", "--layers", "a,b"], "--layers"),
    (["calibrate", "--bundle", "x", "--check-points", "a,b"], "--check-points"),
    (["calibrate", "--bundle", "x", "--check-points", "64,32"], "--check-points"),
])
def test_malformed_lists_are_usage_errors(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "invalid literal" not in err and "Traceback" not in err


def test_a_rows_file_cut_short_by_a_kill_resumes(tmp_path, capsys, caplog):
    out = tmp_path / "e.json"
    argv = ["evaluate", "--task", "arith", "--seed", "3", "--n", "2", "--strategies", "fixed@16", "--token-cap", "128",
            "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    rows_path = out.with_suffix(".rows.jsonl")
    lines = rows_path.read_text().splitlines(keepends=True)
    assert len(lines) == 2
    rows_path.write_text(lines[0] + lines[1][:30])  # killed while appending the second row
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="thinkctl.eval.evaluate"):
        assert main(argv) == 0
    assert any("incomplete row" in r.getMessage() for r in caplog.records)
    again = [json.loads(x) for x in rows_path.read_text().splitlines()]
    assert [r["problem_id"] for r in again] == [json.loads(x)["problem_id"] for x in lines]
    assert json.loads(out.read_text())["strategies"]["fixed@16"]["n"] == 2
