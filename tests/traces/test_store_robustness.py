"""A trace store as users break it: two writers at once, a file where the folder should be, damaged files, stamps
of another thinkctl version, --traces pointing nowhere."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import thinkctl
from thinkctl.cli import main
from thinkctl.traces import TraceStore
from thinkctl.traces.store import LOCK_FILE, DamagedStoreError, StoreInUseError

SRC = Path(__file__).resolve().parents[2] / "src"
#: A small, fast collection on the embedded model: 2 shards of 4 problems.
COLLECT = ["--n", "8", "--samples", "1", "--every", "8", "--max-new-tokens", "48", "--shard-problems", "4",
           "--layers", "-1", "--no-progress"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "traces"
    assert main(["collect", "--out", str(out), *COLLECT]) == 0
    return out


def _copy(store_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(store_dir, dst, ignore=shutil.ignore_patterns(LOCK_FILE))
    return dst


def _holder(path: Path) -> subprocess.Popen:
    """Another process that takes the store's writer lock (as a running `thinkctl collect` does) and keeps it until
    its stdin closes."""
    code = ("import sys; from thinkctl.traces import TraceStore; s = TraceStore(sys.argv[1]); s.lock(); "
            "print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_while_the_first_holds_the_store(tmp_path, capsys):
    out = tmp_path / "traces"
    out.mkdir()
    holder = _holder(out)
    try:
        rc = main(["collect", "--out", str(out), *COLLECT])
        err = capsys.readouterr().err
        assert rc == 2
        assert "being written by another process" in err and "Traceback" not in err
        assert not (out / "config.json").exists() and not list(out.glob("shard-*"))  # nothing touched
        with pytest.raises(StoreInUseError):
            TraceStore(out).init({"thinkctl_version": thinkctl.__version__})
    finally:
        holder.communicate("")
    # the first writer is gone: the same command now collects (a lock never outlives its process)
    assert main(["collect", "--out", str(out), *COLLECT]) == 0
    assert len(TraceStore(out).samples()) == 8


def test_two_collects_with_different_settings_on_one_folder(tmp_path):
    """Two real `thinkctl collect` runs started together on one --out with different --every: one collects, the
    other is refused (exit 2, one line), and config.json describes every shard."""
    out = tmp_path / "traces"
    base = [sys.executable, "-m", "thinkctl.cli", "collect", "--out", str(out), "--n", "4", "--samples", "1",
            "--max-new-tokens", "24", "--shard-problems", "2", "--layers", "-1", "--no-progress"]
    procs = {every: subprocess.Popen(base + ["--every", str(every)], env=_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for every in (4, 6)}
    results = {every: (p.wait(timeout=600), p.stderr.read() if p.stderr else "") for every, p in procs.items()}
    codes = sorted(rc for rc, _ in results.values())
    assert codes == [0, 2], results
    winner = next(every for every, (rc, _) in results.items() if rc == 0)
    loser_err = next(err for rc, err in results.values() if rc == 2)
    assert "Traceback" not in loser_err
    assert "being written by another process" in loser_err or "different config" in loser_err
    store = TraceStore(out)
    assert store.config["collect"]["every"] == winner
    for row in store.samples():
        positions = [c["position"] for c in row["checkpoints"]]
        assert all(p % winner == 0 for p in positions[:-1])  # the last checkpoint is the end of thinking


def test_store_objects_of_one_process_share_the_lock_and_close_releases_it(tmp_path):
    out = tmp_path / "s"
    a, b = TraceStore(out), TraceStore(out)
    a.init({"thinkctl_version": thinkctl.__version__})
    b.lock()  # same process: shared, not refused
    code = ("import sys; from thinkctl.traces import TraceStore\n"
            "try:\n    TraceStore(sys.argv[1]).lock()\nexcept ValueError as e:\n    print('refused:', e)\n"
            "else:\n    print('locked')")

    def other() -> str:
        return subprocess.run([sys.executable, "-c", code, str(out)], env=_env(), capture_output=True, text=True,
                              timeout=120).stdout.strip()

    assert other().startswith("refused:")
    a.close()
    assert other().startswith("refused:")  # b still holds it
    b.close()
    assert other() == "locked"


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert main(["collect", "--out", str(f), *COLLECT]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a file" in err and "Traceback" not in err
    assert f.read_text() == "mine"
    with pytest.raises(ValueError, match="is a file"):
        TraceStore(f).init({})


def test_a_failed_run_before_the_first_shard_does_not_pin_its_settings(tmp_path, capsys):
    out = tmp_path / "traces"
    rc = main(["collect", "--out", str(out), *COLLECT, "--max-new-tokens", "5000"])
    err = capsys.readouterr().err
    assert rc == 2 and "max_new_tokens=5000 is beyond the model's context of 1024" in err
    assert not list(out.glob("shard-*"))
    assert main(["collect", "--out", str(out), *COLLECT]) == 0  # not "collected with a different config"


def test_a_shard_cut_short_names_the_shard_and_what_to_do(store_dir, tmp_path, capsys):
    store = _copy(store_dir, tmp_path)
    st = store / "shard-00001.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    rc = main(["train", "--traces", str(store), "--out", str(tmp_path / "bundle")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "shard-00001.safetensors is damaged" in err and "delete shard-00001.jsonl and shard-00001.safetensors" in err
    assert "thinkctl collect" in err
    # deleting it and resuming collection repairs the store
    for f in store.glob("shard-00001.*"):
        f.unlink()
    assert main(["collect", "--out", str(store), *COLLECT]) == 0
    assert [r["text"] for r in TraceStore(store).samples()] == [r["text"] for r in TraceStore(store_dir).samples()]


def test_a_rows_file_cut_short_is_named(store_dir, tmp_path):
    store = _copy(store_dir, tmp_path)
    rows = store / "shard-00000.jsonl"
    rows.write_text(rows.read_text()[:-40])
    with pytest.raises(DamagedStoreError, match="shard-00000.jsonl is damaged .*line 4"):
        TraceStore(store).samples()


def test_a_config_cut_short_names_the_file(store_dir, tmp_path, capsys):
    store = _copy(store_dir, tmp_path)
    cfg = store / "config.json"
    cfg.write_text(cfg.read_text()[:50])
    rc = main(["train", "--traces", str(store), "--out", str(tmp_path / "bundle")])
    err = capsys.readouterr().err
    assert rc == 2 and "config.json is damaged" in err and "Unterminated" not in err.split("damaged")[0]
    assert "collect again" in err and "Traceback" not in err


def _restamp(store: Path, version: str) -> None:
    cfg = json.loads((store / "config.json").read_text())
    cfg["thinkctl_version"] = version
    (store / "config.json").write_text(json.dumps(cfg))


def test_a_store_from_an_older_version_loads_with_a_warning(store_dir, tmp_path, caplog):
    store = _copy(store_dir, tmp_path)
    _restamp(store, "0.0.9")
    with caplog.at_level(logging.WARNING, logger="thinkctl.persistence"):
        rows = TraceStore(store).samples()
    assert len(rows) == 8
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(store / "config.json") in m and "0.0.9" in m and thinkctl.__version__ in m for m in msgs), msgs


def test_a_store_from_a_newer_series_is_refused(store_dir, tmp_path):
    store = _copy(store_dir, tmp_path)
    _restamp(store, "9.9.9")
    with pytest.raises(ValueError, match=r"config.json was saved by thinkctl 9\.9\.9.*not compatible.*installed"):
        TraceStore(store).samples()


def test_evaluate_traces_pointing_nowhere_is_an_error_before_any_work(tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["evaluate", "--task", "arith", "--seed", "1", "--n", "2", "--json", str(out), "--strategies",
               "fixed@16", "--traces", str(tmp_path / "no-such-store"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no-such-store is not a trace store" in err and "Traceback" not in err
    assert not out.exists() and not out.with_suffix(".rows.jsonl").exists()


def test_evaluate_traces_of_other_problems_is_an_error(store_dir, tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["evaluate", "--task", "arith", "--seed", "77", "--n", "2", "--json", str(out), "--strategies",
               "fixed@16", "--traces", str(store_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds traces of none of the 2 problems" in err
    assert not out.with_suffix(".rows.jsonl").exists()


def test_collect_near_the_context_cuts_generations_so_that_the_forced_answer_fits(tmp_path, caplog):
    """max_new_tokens up to the embedded model's 1024 positions: the generations are cut where the answer forced at
    their end still fits, with a warning; nothing fails half-way through a shard."""
    import logging

    from thinkctl.models import load_model
    from thinkctl.tasks import TASKS
    from thinkctl.traces import CollectConfig, collect

    model, tok = load_model("embedded")
    task = TASKS.get("arith")()
    problems = task.sample(2, seed=3, level=1)
    cfg = CollectConfig(task="arith", n_problems=2, seed=3, level=1, samples=1, max_new_tokens=1024, every=64)
    with caplog.at_level(logging.WARNING, logger="thinkctl.traces.collect"):
        store = collect(model, tok, task, problems, str(tmp_path / "s"), cfg, progress=False)
    assert "are cut at" in caplog.text
    assert len(store.samples()) == 2
