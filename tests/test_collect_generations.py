"""``thinkctl collect --generations``: the texts of a live run, labelled again from a file, give the same store;
bad files are refused with FILE:LINE before anything is written; resuming needs the same file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from thinkctl.cli import main
from thinkctl.tasks import Problem
from thinkctl.traces import TraceStore
from thinkctl.traces.generations import read_generations, task_for_generations

SETTINGS = ["--every", "6", "--shard-problems", "3", "--layers", "0,-1", "--max-answer-tokens", "8",
            "--batch-size", "8", "--forward-batch-size", "4", "--no-progress"]
N, SAMPLES, MAX_NEW = 4, 3, 24


def _collect(*args: str) -> int:
    return main(["collect", "--model", "embedded", *args, *SETTINGS])


def _write_lines(path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "store"
    assert _collect("--task", "mix", "--n", str(N), "--samples", str(SAMPLES), "--seed", "11",
                    "--max-new-tokens", str(MAX_NEW), "--out", str(out)) == 0
    return TraceStore(out)


@pytest.fixture(scope="module")
def gens_file(live, tmp_path_factory):
    """The live store's texts as a generations file, one line per problem, the greedy text first."""
    lines: dict[str, dict] = {}
    for r in live.samples():
        line = lines.setdefault(r["problem_id"], {"id": r["problem_id"], "prompt": r["prompt"], "gold": r["gold"],
                                                  "level": r["level"], "features": r["features"],
                                                  "generations": []})
        assert r["sample"] == len(line["generations"])
        line["generations"].append(r["text"])
    return _write_lines(tmp_path_factory.mktemp("gens") / "gens.jsonl", list(lines.values()))


@pytest.fixture(scope="module")
def relabelled(gens_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("from-file") / "store"
    assert _collect("--generations", str(gens_file), "--task", "mix", "--out", str(out)) == 0
    return TraceStore(out)


def test_store_from_generations_equals_the_live_store(live, relabelled, gens_file):
    live_rows, rows = live.samples(), relabelled.samples()
    assert len(rows) == N * SAMPLES and sum(r["greedy"] for r in rows) == N
    assert any(len(r["checkpoints"]) > 1 for r in rows) and any(r["correct"] for r in rows)
    assert rows == live_rows  # labels, forced answers, checkpoint positions and rows, token confidence: exactly
    assert relabelled.shard_indices() == live.shard_indices() == [0, 1]
    assert relabelled.layers() == live.layers() == [0, 3]
    for layer in live.layers():
        a, b = live.checkpoint_arrays(layer), relabelled.checkpoint_arrays(layer)
        np.testing.assert_allclose(b.X, a.X, atol=1e-2, rtol=1e-2)  # float16 states
        np.testing.assert_array_equal(b.y, a.y)
        np.testing.assert_array_equal(b.position, a.position)
        np.testing.assert_allclose(relabelled.sample_arrays(layer).X, live.sample_arrays(layer).X, atol=1e-2,
                                   rtol=1e-2)
    cfg_live, cfg = live.config, relabelled.config
    assert cfg["model"] == cfg_live["model"] and cfg["problem_ids"] == cfg_live["problem_ids"]
    assert {k: cfg["collect"][k] for k in ("every", "layers", "shard_problems", "samples", "n_problems", "task")} == \
        {k: cfg_live["collect"][k] for k in ("every", "layers", "shard_problems", "samples", "n_problems", "task")}
    assert cfg["collect"]["max_new_tokens"] == max(r["n_generated"] for r in live_rows)
    assert cfg["generations"]["sha256"] == hashlib.sha256(gens_file.read_bytes()).hexdigest()
    assert "generations" not in cfg_live


def test_a_killed_run_resumes_and_another_file_is_refused(gens_file, relabelled, tmp_path, capsys):
    out = tmp_path / "store"
    assert _collect("--generations", str(gens_file), "--task", "mix", "--out", str(out)) == 0
    (out / "shard-00001.jsonl").unlink()  # as if killed before the last shard's commit
    assert _collect("--generations", str(gens_file), "--task", "mix", "--out", str(out)) == 0
    assert TraceStore(out).samples() == relabelled.samples()

    other = gens_file.read_text().replace('"generations": ["', '"generations": ["<think>', 1)
    other_file = _write_lines(tmp_path / "other.jsonl", [other.rstrip("\n")])
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert _collect("--generations", str(other_file), "--task", "mix", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "another generations file" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_live_store_is_not_resumed_from_a_file(live, gens_file, capsys):
    assert _collect("--generations", str(gens_file), "--task", "mix", "--out", str(live.path)) == 2
    assert "collected live" in capsys.readouterr().err


GOOD = {"id": "a", "prompt": "Compute: 3 + 4", "gold": "7", "generations": ["<think>3+4=7</think>\nFinal Answer: 7"]}


@pytest.mark.parametrize("lines, where, message", [
    ([GOOD, {k: v for k, v in GOOD.items() if k != "gold"} | {"id": "b"}], 2, "missing field gold"),
    ([GOOD, '{"id": "b", "prompt": '], 2, "not valid JSON"),
    ([GOOD, "[1, 2]"], 2, "expected a JSON object"),
    ([GOOD, GOOD], 2, "id 'a' already used on line 1"),
    ([GOOD, GOOD | {"id": "b", "generations": []}], 2, "non-empty list"),
    ([GOOD, GOOD | {"id": "b", "generations": [{"text": "x"}]}], 2, "generations[0] must be a string"),
    ([GOOD | {"level": "hard"}], 1, "level must be an integer"),
    ([GOOD, "", GOOD | {"id": "c", "gold": "seven"}], 3, "not an answer task 'arith' can read"),
])
def test_bad_lines_are_refused_with_file_and_line_before_anything_is_written(tmp_path, capsys, lines, where,
                                                                                 message):
    path = _write_lines(tmp_path / "g.jsonl", lines)
    out = tmp_path / "store"
    assert _collect("--generations", str(path), "--task", "arith", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{path}:{where}:" in err and message in err and "Traceback" not in err
    assert not out.exists()


def test_non_utf8_and_empty_files_are_refused(tmp_path, capsys):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD | {"id": "b"}).replace(
        "Compute", "Calcul\u00e9").encode("latin-1") + b"\n")
    assert _collect("--generations", str(bad), "--task", "arith", "--out", str(tmp_path / "s1")) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: not UTF-8" in err and "0xe9" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    assert _collect("--generations", str(empty), "--task", "arith", "--out", str(tmp_path / "s2")) == 2
    assert "is empty" in capsys.readouterr().err
    assert _collect("--generations", str(tmp_path / "nowhere.jsonl"), "--task", "arith",
                    "--out", str(tmp_path / "s3")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any((tmp_path / s).exists() for s in ("s1", "s2", "s3"))


def test_texts_the_tokenizer_does_not_round_trip(tmp_path, capsys):
    """The embedded tokenizer normalises to NFC: a decomposed accent comes back composed."""
    lossy = GOOD | {"id": "b", "generations": [GOOD["generations"][0], "<think>cafe\u0301</think>\nFinal Answer: 7"]}
    path = _write_lines(tmp_path / "g.jsonl", [GOOD, lossy])
    out = tmp_path / "store"
    assert _collect("--generations", str(path), "--task", "arith", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{path}:2 (generation 1)" in err and "1 of 3 generation texts" in err and "--allow-lossy-texts" in err
    assert not out.exists()
    assert _collect("--generations", str(path), "--task", "arith", "--out", str(out), "--allow-lossy-texts") == 0
    store = TraceStore(out)
    assert store.config["generations"]["lossy_texts"] == 1
    rows = store.samples()
    assert [r["correct"] for r in rows] == [True, True, True]
    assert rows[2]["text"] == "<think>caf\u00e9</think>\nFinal Answer: 7"  # the tokenizer's version


def test_a_generation_longer_than_the_context_is_refused(tmp_path, capsys):
    long_text = "<think>" + "1 " * 600 + "</think>\nFinal Answer: 7"  # one token per digit and per space
    path = _write_lines(tmp_path / "g.jsonl", [GOOD, GOOD | {"id": "b", "generations": [long_text]}])
    out = tmp_path / "store"
    assert _collect("--generations", str(path), "--task", "arith", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{path}:2 (generation 0)" in err and "context is 1024" in err
    assert not out.exists()


def test_options_the_file_decides_are_refused(tmp_path, capsys):
    path = _write_lines(tmp_path / "g.jsonl", [GOOD])
    assert _collect("--generations", str(path), "--n", "5", "--samples", "2", "--out", str(tmp_path / "s")) == 2
    assert "--n, --samples do not apply with --generations" in capsys.readouterr().err
    assert _collect("--allow-lossy-texts", "--n", "1", "--out", str(tmp_path / "s")) == 2
    assert "only with --generations" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_gold_task_checks_any_answer_against_the_lines_gold(tmp_path):
    lines = [{"id": 1, "prompt": "Half of one?", "gold": "\\frac{1}{2}", "level": None,
              "generations": ["<think>one over two</think> The answer is $0.5$.", "So \\boxed{\\frac{2}{3}}"]},
             {"id": 2, "prompt": "Cost?", "gold": 18, "generations": ["It costs \\$18 dollars."]}]
    path = _write_lines(tmp_path / "g.jsonl", lines)
    task = task_for_generations("gold")
    source = read_generations(path, task)
    assert [r.problem.id for r in source.records] == ["1", "2"] and source.n_texts == 3
    p1, p2 = source.problems
    assert [task.is_correct(p1, t) for t in lines[0]["generations"]] == [True, False]
    assert task_for_generations("gold-numeric").is_correct(p2, lines[1]["generations"][0])
    assert not task.is_correct(Problem("x", "?", "18"), "It costs 19.")
    with pytest.raises(ValueError, match="no problems of its own"):
        task.sample(3, seed=0)
    with pytest.raises(ValueError, match="unknown task 'nope'.*gold"):
        task_for_generations("nope")
