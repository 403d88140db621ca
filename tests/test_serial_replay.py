"""thinkctl replay --traces: serial stopping rules replayed on a trace store's greedy samples.

Hand-made stores check each rule's definition and token accounting against numbers worked out by hand; a store
collected from the embedded model checks that the replay gives what the live controller does on the same problems.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from thinkctl.bundle import BundleLayout
from thinkctl.calibration.calibrators import TemperatureScaler
from thinkctl.cli import main
from thinkctl.eval.serial_replay import SerialReplayConfig, load_traces, replay_serial
from thinkctl.predictors.probe import HiddenStateProbe
from thinkctl.traces.store import TraceStore

HIDDEN, LAYERS = 4, [0, 1]
STAMP = {"name": "toy", "hidden_size": HIDDEN, "num_layers": len(LAYERS), "fingerprint": "00aa"}
PROMPT, ANSWER = 10, 15  # prompt tokens; marker + answer tokens of every forced answer


def trace(pid, forced, *, final, gold="4", every=8, n_thinking=None, closed=True, conf=None, hidden=None,
          greedy=True, n_generated=None):
    """A sample row: checkpoints every ``every`` tokens and one at the end of thinking, with these forced answers."""
    n_think = n_thinking if n_thinking is not None else every * len(forced)
    positions = list(range(every, n_think, every)) + [n_think]
    assert len(positions) == len(forced), (positions, forced)
    cks = [{"position": p, "forced_answer": a, "forced_correct": a == gold, "probe_tokens": ANSWER,
            "agrees_with_final": a == final,
            "confidence": {"conf_window": 0.0, "conf_min_window": (conf[i] if conf is not None else 9.0)}}
           for i, (p, a) in enumerate(zip(positions, forced))]
    return {"problem_id": pid, "prompt": pid, "level": 1, "features": {}, "sample": 0 if greedy else 1,
            "greedy": greedy, "text": "", "answer": final, "gold": gold, "correct": final == gold,
            "n_prompt_tokens": PROMPT, "n_generated": n_generated if n_generated is not None else n_think + ANSWER,
            "n_thinking": n_think, "thinking_closed": closed, "checkpoints": cks, "_hidden": hidden}


def write_store(path, rows, *, every=8, cap=64, window=16, stamp=STAMP, seed=0, extra=None):
    rng = np.random.default_rng(seed)
    store = TraceStore(path)
    store.init({"collect": {"task": "arith", "every": every, "max_new_tokens": cap, "confidence_window": window,
                            "confidence_top_k": 5}, "layers_resolved": LAYERS, "model": dict(stamp), **(extra or {})})
    if not rows:
        return store
    ck_h, prompt_h, out = [], [], []
    for r in rows:
        r = dict(r)
        hidden = r.pop("_hidden")
        for i, ck in enumerate(r["checkpoints"]):
            ck["row"] = len(ck_h)
            h = rng.normal(size=(len(LAYERS), HIDDEN))
            if hidden is not None:
                h[1] = hidden[i]
            ck_h.append(h)
        r["prompt_row"] = len(prompt_h)
        prompt_h.append(rng.normal(size=(len(LAYERS), HIDDEN)))
        out.append(r)
    store.write_shard(0, {"prompt_hidden": np.array(prompt_h, dtype=np.float16),
                          "checkpoint_hidden": np.array(ck_h, dtype=np.float16)}, out)
    return store


def three_problems():
    return [
        trace("p0", ["1", "4", "4", "4"], final="4", conf=[9.0, 5.0, 2.0, 2.0]),   # ends at 32
        trace("p1", ["4", "2", "4"], final="4", n_thinking=20, conf=[1.0, 4.0, 4.0]),  # ends at 20 (off the grid)
        trace("p2", ["3", "3", "3"], final="3", conf=[5.0, 5.0, 5.0]),              # wrong, ends at 24
    ]


def by_problem(res, rule):
    return {r["problem_id"]: r for r in res["rows"] if r["strategy"] == rule}


def test_each_rule_stops_where_its_definition_says_and_pays_as_live(tmp_path):
    write_store(tmp_path / "s", three_problems())
    res = replay_serial(tmp_path / "s", rules="oracle,fixed@16,dynasor@8,deepconf",
                        config=SerialReplayConfig(deepconf_threshold=3.0))
    st = res["strategies"]
    assert list(st) == ["full", "oracle", "fixed@16", "dynasor@8", "deepconf"]  # full always first

    full = by_problem(res, "full")
    assert [full[p]["correct"] for p in ("p0", "p1", "p2")] == [True, True, False]
    assert [full[p]["thinking_tokens"] for p in ("p0", "p1", "p2")] == [32, 20, 24]
    assert [full[p]["tokens"] for p in ("p0", "p1", "p2")] == [PROMPT + 32 + ANSWER, PROMPT + 20 + ANSWER,
                                                              PROMPT + 24 + ANSWER]

    # oracle: after the last wrong forced answer (p0: 16; p1: its end, 20); a wrong final: the first checkpoint
    oracle = by_problem(res, "oracle")
    assert [oracle[p]["thinking_tokens"] for p in ("p0", "p1", "p2")] == [16, 20, 8]
    assert [oracle[p]["correct"] for p in ("p0", "p1", "p2")] == [True, True, False]
    assert st["oracle"]["loss_rate"] == 0.0

    # fixed@16: the forced answer at 16 on every trace longer than 16; p1's "2" loses its right final answer
    fixed = by_problem(res, "fixed@16")
    assert [fixed[p]["answer"] for p in ("p0", "p1", "p2")] == ["4", "2", "3"]
    assert st["fixed@16"]["accuracy"] == pytest.approx(1 / 3)
    assert st["fixed@16"]["loss_rate"] == pytest.approx(1 / 3) and st["fixed@16"]["lost"] == 1
    assert st["fixed@16"]["vs_full"]["accuracy_diff"] == pytest.approx(-1 / 3)

    # dynasor@8, k=3, prefill cost: every probe re-reads prompt + thinking so far, then marker + answer
    dyn = by_problem(res, "dynasor@8")
    paid_p0 = sum(PROMPT + pos + ANSWER for pos in (8, 16, 24, 32))  # 1, 4, 4, 4: fires at 32
    paid_p1 = sum(PROMPT + pos + ANSWER for pos in (8, 16))  # 20 is not a multiple of 8: never probed
    paid_p2 = sum(PROMPT + pos + ANSWER for pos in (8, 16, 24))  # 3, 3, 3: fires at 24
    assert [dyn[p]["probe_tokens"] for p in ("p0", "p1", "p2")] == [paid_p0, paid_p1, paid_p2]
    assert dyn["p0"]["thinking_tokens"] == 32 + paid_p0 and dyn["p0"]["tokens"] == PROMPT + 32 + ANSWER + paid_p0
    assert dyn["p1"]["stop"] == "end" and dyn["p1"]["thinking_tokens"] == 20 + paid_p1
    assert st["dynasor@8"]["probes_mean"] == pytest.approx((4 + 2 + 3) / 3)

    # deepconf at 3.0: p0's lowest full-window mean drops to 2 at 24; p1's 1.0 at 8 is before a full window (16)
    dc = by_problem(res, "deepconf")
    assert dc["p0"]["stop"] == "stopped" and dc["p0"]["thinking_tokens"] == 24
    assert dc["p1"]["stop"] == "end" and dc["p2"]["stop"] == "end"

    # Wilson interval on accuracy, bootstrap on tokens
    assert st["full"]["ci95"][0] < st["full"]["accuracy"] < st["full"]["ci95"][1]
    assert st["full"]["tokens_ci95"][0] <= st["full"]["tokens_mean"] <= st["full"]["tokens_ci95"][1]


def test_dynasor_options_change_agreement_count_and_probe_cost(tmp_path):
    write_store(tmp_path / "s", three_problems())
    res = replay_serial(tmp_path / "s", rules="dynasor@8", config=SerialReplayConfig(dynasor_k=2,
                                                                                    probe_cost="answer"))
    dyn = by_problem(res, "dynasor@8")
    assert dyn["p0"]["stop"] == "stopped" and dyn["p0"]["probe_tokens"] == 3 * ANSWER  # 1, 4, 4: fires at 24
    assert dyn["p0"]["thinking_tokens"] == 24 + 3 * ANSWER
    # the default interval is the live rule's 32 when the grid holds it: only p0 reaches a probe (at 32)
    res = replay_serial(tmp_path / "s", rules="dynasor")
    assert res["config"]["rules"]["dynasor"]["every"] == 32
    assert [r["probes"] for r in res["rows"] if r["strategy"] == "dynasor"] == [1, 0, 0]


def test_deepconf_threshold_comes_from_each_problems_warmup_traces(tmp_path):
    # p0's sampled traces end with lowest group confidences 3, 5, 7, 9 (a fifth, 1, is past the warm-up of 4)
    lows = [3.0, 5.0, 7.0, 9.0, 1.0]
    rows = [trace("p0", ["4", "4", "4", "4"], final="4", conf=[9.0, 9.0, 3.5, 3.5])]
    rows += [trace("p0", ["4", "4"], final="4", conf=[9.0, low], greedy=False) for low in lows]
    rows += [trace("p1", ["4", "4", "4", "4"], final="4", conf=[9.0, 9.0, 3.5, 3.5])]
    rows += [trace("p1", ["4", "4"], final="4", conf=[9.0, 2.0], greedy=False) for _ in range(4)]
    write_store(tmp_path / "s", rows)
    res = replay_serial(tmp_path / "s", rules="deepconf")
    dc = by_problem(res, "deepconf")
    # p0: threshold = 10th percentile of (3, 5, 7, 9) = 3.6 > 3.5: fires at 24; p1: threshold 2.0 < 3.5: never
    assert dc["p0"]["stop"] == "stopped" and dc["p0"]["thinking_tokens"] == 24
    assert dc["p1"]["stop"] == "end"
    assert res["config"]["rules"]["deepconf"]["threshold_mean"] == pytest.approx((np.percentile(lows[:4], 10) + 2) / 2)
    assert "warm-up" in res["config"]["rules"]["deepconf"]["threshold_source"]


def test_a_trace_cut_by_the_store_cap_is_answered_where_the_answer_was_forced(tmp_path):
    rows = [trace("p0", ["1", "1", "4", "4"], final=None, closed=False, n_generated=32),  # thinking never closed
            trace("p1", ["4", "4"], final="4")]
    write_store(tmp_path / "s", rows, cap=32)
    res = replay_serial(tmp_path / "s", rules="full,oracle")
    full = by_problem(res, "full")
    assert full["p0"]["stop"] == "cap" and full["p0"]["correct"] is True  # forced at the cap: "4"
    assert full["p0"]["tokens"] == PROMPT + 32 + ANSWER
    assert res["config"]["traces"]["n_truncated"] == 1
    assert by_problem(res, "oracle")["p0"]["thinking_tokens"] == 24


def test_a_store_from_recorded_generations_has_no_cap_its_longest_text_reached(tmp_path, capsys):
    """`collect --generations` records the longest text as max_new_tokens; that text ended on its own."""
    rows = [trace("p0", ["1", "4", "4"], final="4"),                                     # the longest: 24 + 15
            trace("p1", ["4", "2"], final=None, n_thinking=15, closed=False, n_generated=15),  # never closed, no answer
            trace("p2", ["4", "4"], final="4"),
            # never closed, but it answered in its own words before any cap (a model without think markers)
            trace("p3", ["2", "4"], final="4", n_thinking=15, closed=False, n_generated=15)]
    gens = {"generations": {"sha256": "0" * 64, "problems": 4, "texts": 4, "lossy_texts": 0}}
    for name, extra in (("live", None), ("file", gens)):
        write_store(tmp_path / name, rows, cap=24 + ANSWER, extra=extra)
    live, file = (replay_serial(tmp_path / name, rules="full,fixed@64") for name in ("live", "file"))
    assert by_problem(live, "full")["p0"]["stop"] == "cap" and live["config"]["traces"]["n_truncated"] == 2
    full = by_problem(file, "full")
    assert full["p0"]["stop"] == "end" and full["p0"]["tokens"] == PROMPT + 24 + ANSWER and full["p0"]["correct"]
    assert full["p1"]["stop"] == "cap" and full["p1"]["correct"] is False  # forced at its end: "2"
    assert full["p3"]["stop"] == "end" and full["p3"]["correct"]  # its own answer, not the forced one
    assert by_problem(live, "full")["p3"]["stop"] == "end"  # below the live cap too
    assert file["config"]["traces"]["n_truncated"] == 1 and file["config"]["traces"]["max_new_tokens"] is None
    assert "note" in live["config"]["rules"]["fixed@64"] and "note" not in file["config"]["rules"]["fixed@64"]
    assert main(["replay", "--traces", str(tmp_path / "file"), "--json", str(tmp_path / "r.json"),
                 "--no-progress"]) == 0
    assert "1 whose thinking never closed" in capsys.readouterr().out


def write_bundle(path, store_path, *, check_points, threshold, stamp=STAMP, outlook=False, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, HIDDEN)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    layout = BundleLayout(path)
    layout.root.mkdir(parents=True)
    probe = HiddenStateProbe(model_name="toy", layer=1, max_epochs=5, random_state=0).fit(X, y)
    probe.save(layout.path("confidence_probe"))
    cal = TemperatureScaler().fit(probe.decision_function(X), y)
    cal.save(layout.path("calibration/confidence.json"))
    risk = {"score": "confidence", "threshold": threshold, "check_points": list(check_points), "epsilon": 0.05,
            "delta": 0.1}
    parts = [(probe, cal)]
    if outlook:
        y2 = (X[:, 1] > 0).astype(int)
        oprobe = HiddenStateProbe(model_name="toy", layer=1, max_epochs=5, random_state=0).fit(X, y2)
        oprobe.save(layout.path("outlook_probe"))
        ocal = TemperatureScaler().fit(oprobe.decision_function(X), y2)
        ocal.save(layout.path("calibration/outlook.json"))
        risk.update(score="max(confidence, 1 - kappa * outlook)", kappa=2.0)
        parts.append((oprobe, ocal))
    layout.write_document("calibration/risk_control.json", "risk_control", risk)
    layout.write_manifest({"model": dict(stamp), "confidence_layer": 1, **layout.store_reference(store_path),
                           "calibration": {"stop_threshold": threshold}})
    return parts


@pytest.mark.parametrize("outlook", [False, True])
def test_probe_rule_reads_the_certified_score_at_its_schedule(tmp_path, outlook):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        h = rng.normal(size=(4, HIDDEN))
        rows.append(trace(f"p{i}", ["4", "5", "4", "4"], final="4", hidden=h))
    write_store(tmp_path / "s", rows)
    parts = write_bundle(tmp_path / "b", tmp_path / "s", check_points=(16, 32), threshold=0.5, outlook=outlook)
    res = replay_serial(tmp_path / "s", bundle=tmp_path / "b", rules="probe")
    probe = by_problem(res, "probe")
    store = TraceStore(tmp_path / "s")
    X = store.checkpoint_arrays(1).X.reshape(12, 4, HIDDEN)
    stops = 0
    for i in range(12):
        (cp, cc), *rest = parts
        s = cc.predict_proba(cp.decision_function(X[i]))
        if rest:
            (op, oc), = rest
            s = np.maximum(s, 1 - 2.0 * oc.predict_proba(op.decision_function(X[i])))
        on = [1, 3]  # positions 16 and 32 (the end): the certified schedule
        hit = next((k for k in on if s[k] >= 0.5), None)
        r = probe[f"p{i}"]
        if hit is None:
            assert r["stop"] == "end" and r["thinking_tokens"] == 32
        else:
            stops += hit == 1
            assert r["thinking_tokens"] == 8 * (hit + 1) and r["answer"] == ["4", "5", "4", "4"][hit]
    assert 0 < stops < 12  # the threshold splits the problems: both branches are checked
    cert = res["strategies"]["probe"]["certified"]
    assert cert["epsilon"] == 0.05 and cert["loss_rate_within_epsilon"] == (res["strategies"]["probe"]["loss_rate"]
                                                                           <= 0.05)


# -- bad input ------------------------------------------------------------------------------------------------------


def test_empty_store_and_store_without_greedy_samples_are_refused(tmp_path):
    write_store(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="holds no samples"):
        replay_serial(tmp_path / "empty")
    write_store(tmp_path / "sampled", [trace("p0", ["4"], final="4", greedy=False)])
    with pytest.raises(ValueError, match="no greedy samples"):
        replay_serial(tmp_path / "sampled")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        replay_serial(tmp_path / "nowhere")


def test_bundle_of_another_model_is_refused(tmp_path):
    write_store(tmp_path / "s", three_problems())
    write_bundle(tmp_path / "b", tmp_path / "s", check_points=(8, 16), threshold=0.5,
                 stamp={**STAMP, "fingerprint": "ffff"})
    with pytest.raises(ValueError, match="another model's hidden states") as err:
        replay_serial(tmp_path / "s", bundle=tmp_path / "b")
    assert "weights fingerprint" in str(err.value)


def test_grid_that_cannot_serve_a_rule_says_what_to_collect(tmp_path):
    rows = [trace("p0", ["4", "4"], final="4", every=16)]
    write_store(tmp_path / "s", rows, every=16)
    write_bundle(tmp_path / "b", tmp_path / "s", check_points=(8, 16, 24), threshold=0.5)
    with pytest.raises(ValueError, match=r"every 16 .*misses 8, 24.*--every 8"):
        replay_serial(tmp_path / "s", bundle=tmp_path / "b")
    with pytest.raises(ValueError, match="no forced answer at 24"):
        replay_serial(tmp_path / "s", rules="fixed@24")
    with pytest.raises(ValueError, match="multiple of 16"):
        replay_serial(tmp_path / "s", rules="dynasor@8")
    # by default, rules the inputs cannot serve are skipped with the reason
    res = replay_serial(tmp_path / "s")
    assert {"probe", "deepconf"} <= set(res["config"]["skipped"]) and "fixed@64" in res["strategies"]
    with pytest.raises(ValueError, match="unknown serial rule 'greedy'; known: .*dynasor"):
        replay_serial(tmp_path / "s", rules="greedy")


def test_cli_writes_json_and_table_and_refuses_bad_input_without_writing(tmp_path, capsys):
    write_store(tmp_path / "s", three_problems())
    out = tmp_path / "out" / "r.json"
    assert main(["replay", "--traces", str(tmp_path / "s"), "--rules", "fixed@16,oracle", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fixed@16" in printed and "oracle" in printed and "wrote" in printed
    doc = json.loads(out.read_text())
    assert set(doc["strategies"]) == {"full", "oracle", "fixed@16"} and doc["config"]["mode"] == "serial"
    assert "rows" not in doc and not list(out.parent.glob("*.tmp"))

    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["replay", "--traces", str(tmp_path / "s"), "--json", str(folder)]) == 2
    assert "is a directory" in capsys.readouterr().err and not any(folder.iterdir())

    bad = tmp_path / "bad.json"
    assert main(["replay", "--traces", str(tmp_path / "s"), "--rules", "fixed@12", "--json", str(bad)]) == 2
    assert "fixed@12" in capsys.readouterr().err and not bad.exists()
    assert main(["replay", "--data", str(tmp_path / "x.jsonl"), "--rules", "full", "--json", str(bad)]) == 2
    assert "--rules applies to --traces" in capsys.readouterr().err
    assert main(["replay", "--traces", str(tmp_path / "s"), "--policy", "sc", "--json", str(bad)]) == 2
    assert "--policy applies to --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["replay", "--json", str(bad)])
    assert e.value.code == 2 and not bad.exists()


# -- agreement with the live controller (embedded model) ------------------------------------------------------------

CAP = 64  # thinking tokens: the store's generation cap and the live controller's thinking cap


@pytest.fixture(scope="module")
def embedded_setup(tmp_path_factory):
    """A store of the embedded model's greedy traces on 6 arith problems, and a bundle whose probe and threshold
    (between two well-separated scores) are made from it, so that some problems stop early and some do not."""
    import thinkctl
    from thinkctl.models import model_id, model_stamp
    from thinkctl.traces import CollectConfig, collect

    root = tmp_path_factory.mktemp("agree")
    model, tok = thinkctl.load_model("embedded")
    task = thinkctl.tasks.get("arith")
    problems = task.sample(6, seed=99)
    cfg = replace(CollectConfig(), task="arith", n_problems=6, seed=99, samples=1, every=8, max_new_tokens=CAP,
                  max_answer_tokens=16, checkpoints="greedy", shard_problems=6)
    store = collect(model, tok, task, problems, str(root / "store"), cfg, model_name=model_id(model), progress=False)
    ca = store.checkpoint_arrays(1)
    probe = HiddenStateProbe(model_name=model_id(model), layer=1, max_epochs=20, random_state=0)
    probe.fit(ca.X, ca.y.astype(int))
    cal = TemperatureScaler().fit(probe.decision_function(ca.X), ca.y.astype(int))
    p = np.sort(cal.predict_proba(probe.decision_function(ca.X)))
    lo, hi = len(p) // 4, 3 * len(p) // 4
    j = lo + int(np.argmax(np.diff(p)[lo:hi]))  # the widest gap in the middle half: float16 states cannot cross it
    threshold = float((p[j] + p[j + 1]) / 2)
    layout = BundleLayout(root / "bundle")
    layout.root.mkdir()
    probe.save(layout.path("confidence_probe"))
    cal.save(layout.path("calibration/confidence.json"))
    layout.write_document("calibration/risk_control.json", "risk_control", {
        "score": "confidence", "threshold": threshold, "check_points": list(range(8, CAP + 1, 8)),
        "epsilon": 0.1, "delta": 0.1})
    layout.write_manifest({"model": model_stamp(model, model_id(model)), "confidence_layer": 1, "task": "arith",
                           **layout.store_reference(root / "store"), "calibration": {"stop_threshold": threshold}})
    return model, tok, task, problems, root


@pytest.mark.slow
def test_replay_agrees_with_the_live_controller_on_the_embedded_model(embedded_setup):
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.eval.evaluate import evaluate
    from thinkctl.generation import reasoning_format

    model, tok, task, problems, root = embedded_setup
    marker = len(reasoning_format(tok).force_answer_ids)
    # the live thinking cap equals the store's cap: token_cap = thinking + marker + answer tokens + EOS
    cfg = ControllerConfig(token_cap=CAP + marker + 16 + 1, max_answer_tokens=16, easy_cap=CAP + marker + 17)
    controller = AdaptiveController.load(root / "bundle", model, tok, cfg, task=task)
    live = evaluate(controller, task, problems, ["serial", "fixed@32", "dynasor@8"])
    res = replay_serial(root / "store", bundle=root / "bundle", rules="probe,fixed@32,dynasor@8")
    replayed = {(r["problem_id"], r["strategy"]): r for r in res["rows"]}
    names = {"serial": "probe", "fixed@32": "fixed@32", "dynasor@8": "dynasor@8"}
    stopped = 0
    for r in live:
        q = replayed[(r["problem_id"], names[r["strategy"]])]
        assert (r["correct"], r["thinking_tokens"], r["tokens"]) == (q["correct"], q["thinking_tokens"],
                                                                     q["tokens"]), (r, q)
        stopped += q["stop"] == "stopped" and r["strategy"] == "serial"
    assert 0 < stopped < len(problems)  # the probe rule both stops and runs on in this comparison


@pytest.mark.slow
def test_deepconf_replay_stops_at_the_checkpoint_after_the_live_rule(embedded_setup):
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.generation import reasoning_format
    from thinkctl.stopping import TokenConfidenceStopping

    model, tok, task, problems, root = embedded_setup
    data = load_traces(root / "store")
    lowest = [t.lowest_group[~np.isnan(t.lowest_group)][-1] for t in data.traces if (~np.isnan(t.lowest_group)).any()]
    threshold = float(np.median(lowest))
    marker = len(reasoning_format(tok).force_answer_ids)
    cfg = ControllerConfig(token_cap=CAP + marker + 16 + 1, max_answer_tokens=16, easy_cap=CAP + marker + 17)
    controller = AdaptiveController(model, tok, config=cfg, task=task)
    window, top_k = data.confidence_window, data.confidence_top_k
    live = controller.run_serial([p.prompt for p in problems], use_confidence=False, name="deepconf",
                                 stop_rules=lambda: [TokenConfidenceStopping(threshold, window=window, top_k=top_k)])
    res = replay_serial(root / "store", rules="deepconf", config=SerialReplayConfig(deepconf_threshold=threshold))
    replayed = by_problem(res, "deepconf")
    fired = 0
    for p, r in zip(problems, live):
        q = replayed[p.id]
        fired += q["stop"] == "stopped"
        # the live rule fires at the token where the window dips; the replay at the checkpoint after it
        assert 0 <= q["thinking_tokens"] - r.thinking_tokens < data.every, (p.id, r.thinking_tokens, q)
        if q["stop"] != "stopped":
            assert q["thinking_tokens"] == r.thinking_tokens and q["correct"] == task.is_correct(p, r.text)
    assert fired > 0


@pytest.mark.slow
def test_calibration_doubling_is_the_live_serial_routes_doubling(embedded_setup):
    """Budget doubling measured on a bundle's calibration problems (the recorded thinking continued after "Wait")
    gives, problem by problem, what the live serial route gives when it doubles."""
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.controller.doubling import Doubling
    from thinkctl.eval.serial_decisions import doubling_data
    from thinkctl.eval.serial_replay import split_outcomes
    from thinkctl.generation import reasoning_format

    model, tok, task, problems, root = embedded_setup
    bundle = _calib_bundle(root, problems)
    marker = len(reasoning_format(tok).force_answer_ids)
    # the store's cap: the replayed rows are the live ones (doubling stays within the same thinking cap)
    cfg = ControllerConfig(token_cap=CAP + marker + 16 + 1, max_answer_tokens=16, easy_cap=CAP + marker + 17)
    controller = AdaptiveController.load(bundle, model, tok, cfg, task=task)
    data = doubling_data(bundle, controller)
    _, outcomes = split_outcomes(bundle)
    assert data.problem_ids == [o.trace.problem_id for o in outcomes]
    assert 0 < data.eligible.sum() < len(problems)  # some end by themselves, the cap cuts the others
    controller.doubling = Doubling(1.0 + 1e-9)  # double every answer whose model ended its thinking itself
    live = {p.id: r for p, r in zip(problems, controller.run_serial([p.prompt for p in problems]))}
    by_id = {p.id: p for p in problems}
    for j, pid in enumerate(data.problem_ids):
        r = live[pid]
        doubled = [e for e in r.trace if e["event"] == "double"]
        assert bool(doubled) == bool(data.eligible[j]), pid
        assert task.is_correct(by_id[pid], r.text) == bool(data.doubled_correct[j]), pid
        if doubled:
            assert "Wait" in r.text
            assert doubled[0]["confidence"] == pytest.approx(data.confidence[j], abs=0.02)
            assert r.tokens == outcomes[j].row["tokens"] + data.extra_tokens[j]


@pytest.mark.slow
def test_routing_of_a_bundle_without_sampled_answers_says_why_it_does_not_escalate(embedded_setup):
    from thinkctl.eval.serial_decisions import fit_bundle_escalation

    _, _, _, problems, root = embedded_setup
    esc, evidence = fit_bundle_escalation(_calib_bundle(root, problems), token_budget_multiple=3.0)
    assert esc is None and evidence["kept"] is False and "--samples >= 3" in evidence["reason"]


def _calib_bundle(root, problems):
    """A copy of the fixture's bundle beside its store (the shared bundle stays as it is) whose calib split is every
    problem, with a threshold no score reaches: every thinking that fits the cap ends by itself, and can double."""
    import shutil

    bundle = root / "bundle_calib"
    if bundle.exists():
        return bundle
    shutil.copytree(root / "bundle", bundle)
    layout = BundleLayout(bundle)
    manifest = layout.read_manifest()
    manifest["split"] = {"train": [], "calib": [p.id for p in problems], "test": []}
    manifest["calibration"]["stop_threshold"] = 1.0
    layout.write_manifest(manifest)
    risk = layout.read_document("calibration/risk_control.json", "risk_control")
    layout.write_document("calibration/risk_control.json", "risk_control", {**risk, "threshold": 1.0})
    return bundle
