"""Shared fixtures. Nothing here downloads: models are built from configs or loaded from the package."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


import numpy as np  # noqa: E402
import pytest  # noqa: E402

SYNTH_HIDDEN, SYNTH_LAYERS = 16, [0, 1, 2]

# -- the recorded data (problems/, replay/, steps/) ----------------------------------------------------------------
#
# thinkctl reads the data directory from data_dir= or $THINKCTL_DATA only. For the tests of this checkout, when
# THINKCTL_DATA is unset, a `shared/data` folder next to the repository is exported as THINKCTL_DATA (this is the
# only place that knows about it). Tests that need the data take the `data_dir` fixture or carry the
# `needs_data(*subfolders)` marker; without the data they are skipped, and the run ends with a banner counting them.

DATA_ENV_VAR = "THINKCTL_DATA"
#: Start of the skip reason of every test skipped for want of the data (counted by pytest_terminal_summary).
MISSING_DATA = "recorded data not available"


def _export_data_dir() -> None:
    if os.environ.get(DATA_ENV_VAR):
        return
    beside_repository = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if beside_repository.is_dir():
        os.environ[DATA_ENV_VAR] = str(beside_repository)


_export_data_dir()


def _missing_data_reason(subfolders: tuple[str, ...] = ()) -> str | None:
    """Why the data directory (with ``subfolders``) cannot be used, or None when it can."""
    from thinkctl.tasks.data import DataNotFoundError, find_data_dir

    try:
        root = find_data_dir()
    except DataNotFoundError as e:
        return f"{MISSING_DATA}: {e}"
    missing = [s for s in subfolders if not (root / s).is_dir()]
    if missing:
        return (f"{MISSING_DATA}: {root} lacks {', '.join(m + '/' for m in missing)}; set {DATA_ENV_VAR} to a data "
                f"directory that has them")
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"needs_data(*subfolders): needs the data directory (${DATA_ENV_VAR}) with "
                                       "these subfolders; skipped without it")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("needs_data")
    if marker is not None:
        reason = _missing_data_reason(tuple(marker.args))
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory ($THINKCTL_DATA); the test is skipped when there is none."""
    reason = _missing_data_reason()
    if reason is not None:
        pytest.skip(reason)
    from thinkctl.tasks.data import find_data_dir

    return find_data_dir()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MISSING_DATA in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} TEST(S) SKIPPED: the recorded data was not found; set {DATA_ENV_VAR} to the data "
                 "directory (the one holding problems/ and replay/) to run them", red=True, bold=True)


def _synthetic_store(path, n_problems=120, samples=3, seed=0, outlook_signal=False):
    """Layer 1 carries the signal (first coordinate = correctness); layers 0 and 2 are noise. With
    ``outlook_signal`` its second coordinate says whether the sample's final answer is right."""
    rng = np.random.default_rng(seed)
    from thinkctl.traces import TraceStore

    store = TraceStore(path)
    store.init({"collect": {"task": "arith", "every": 8, "max_new_tokens": 40}, "layers_resolved": SYNTH_LAYERS,
                "model": {"name": "toy-model", "hidden_size": SYNTH_HIDDEN, "num_layers": 3}})
    for shard in range(n_problems // 20):
        rows, prompt_h, ck_h = [], [], []
        for p in range(shard * 20, shard * 20 + 20):
            hard = rng.random() < 0.5
            for s in range(samples):
                correct = bool(rng.random() < (0.3 if hard else 0.8))
                ph = rng.normal(size=(len(SYNTH_LAYERS), SYNTH_HIDDEN))
                ph[1, 0] += -1.5 if hard else 1.5
                checkpoints = []
                for k in range(4):
                    forced = bool(correct and k >= 2) or bool(rng.random() < 0.1)
                    h = rng.normal(size=(len(SYNTH_LAYERS), SYNTH_HIDDEN))
                    h[1, 0] += 2.0 if forced else -2.0
                    if outlook_signal:
                        h[1, 1] += 3.0 if correct else -3.0
                    checkpoints.append({"position": 8 * (k + 1), "row": len(ck_h), "forced_answer": "1",
                                        "forced_correct": forced, "probe_tokens": 6, "agrees_with_final": forced,
                                        "confidence": {"conf_window": float(rng.normal())}})
                    ck_h.append(h)
                rows.append({"problem_id": f"p{p:04d}", "prompt": f"Evaluate {p} + {'9' * (5 if hard else 1)}",
                             "level": 2 if hard else 1, "features": {"n_ops": 5 if hard else 1}, "sample": s,
                             "greedy": s == 0, "answer": "1" if correct else f"w{rng.integers(3)}",
                             "correct": correct, "n_prompt_tokens": 10, "n_generated": 40, "n_thinking": 32,
                             "prompt_row": len(prompt_h), "checkpoints": checkpoints})
                prompt_h.append(ph)
        store.write_shard(shard, {"prompt_hidden": np.array(prompt_h, dtype=np.float16),
                                  "checkpoint_hidden": np.array(ck_h, dtype=np.float16)}, rows)
    return store


@pytest.fixture(scope="session")
def synthetic_store():
    """Factory of small trace stores whose layer 1 carries the correctness signal."""
    return _synthetic_store
