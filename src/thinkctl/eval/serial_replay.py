"""Serial stopping rules replayed offline on the greedy samples of a trace store.

A trace store (``thinkctl collect``) records, for the greedy sample of every problem, a checkpoint every ``every``
thinking tokens and one at the end of thinking: the hidden states there, the answer the model gives when forced to
answer there (``forced_answer``, ``forced_correct``), what that forced answer cost (``probe_tokens``: the
``</think>`` + answer-prefix marker and the answer tokens), and token-confidence statistics. Each serial rule below
reads only what it would read live, at the checkpoints it would read it, and stops at the first checkpoint where
it would stop; the answer is then the forced answer of that checkpoint, else the sample's own final answer. A
greedy run is deterministic, so the tokens before the stop are the ones the live run generates: the replay costs
seconds where a live evaluation costs a model run per rule.

Rules (registry :data:`SERIAL_RULES`)
-------------------------------------
``full``       greedy thinking to its natural end: the sample's own final answer. Always computed: it is the
               reference of every paired comparison and of the loss rate.
``oracle``     the earliest checkpoint from which every forced answer stays right (the final answer included);
               for a wrong final answer, the first checkpoint. The most a rule can save without losing an answer.
``fixed@B``    budget forcing at ``B`` thinking tokens (s1, Muennighoff et al. 2025): the forced answer at ``B``
               when thinking is longer, else the final answer. ``B`` must lie on the store's checkpoint grid.
``dynasor[@E]`` Dynasor-CoT's probe-in-the-middle (Fu et al. 2024, arXiv:2412.20993): a forced answer every ``E``
               thinking tokens (default 32, the live rule's), stop once the last ``k`` (default 3) agree and are
               not empty. ``E`` must be a multiple of the store's grid. Every probe is paid (see below).
``deepconf``   DeepConf's online stop (Fu et al. 2025, arXiv:2508.15260) on the greedy trace, exactly as
               :class:`~thinkctl.stopping.TokenConfidenceStopping` decides it: the group confidence is the mean
               token confidence (negative mean top-``k`` log-probability) over the last ``window`` thinking tokens;
               the rule fires at the first token where a full window's mean is below the threshold. The store
               records, at each checkpoint, the lowest full-window mean so far (``conf_min_window``), so the rule
               has fired by a checkpoint exactly when that value is below the threshold; the replay stops at that
               checkpoint. ``window`` and ``k`` are the store's (``collect``'s ``confidence_window`` and
               ``confidence_top_k``); the live rule must be built with the same to compare.
``probe``      thinkctl's certified stop rule (``serial`` live): the bundle's stop score (calibrated confidence
               probe, or with the outlook probe ``max(confidence, 1 - kappa * outlook)``, as certified) read on the
               recorded hidden states at the checkpoints of the rule's schedule (``risk_control.json``
               ``check_points``), stop at the first one whose score reaches the certified threshold.

Where the live rule stops between two checkpoints (DeepConf, whose window can dip at any token), the replay stops
at the next checkpoint: at most ``every - 1`` thinking tokens late, with that checkpoint's forced answer.

Token accounting (as :mod:`thinkctl.controller.engine` counts live)
--------------------------------------------------------------------
* ``thinking_tokens``: thinking tokens up to the stop (the checkpoint's position), plus, for ``dynasor``, every
  probe's tokens (the live rule adds them to the thinking tokens);
* ``tokens``: prompt tokens + thinking tokens up to the stop + the forced answer (marker and answer tokens, the
  checkpoint's ``probe_tokens``) -- or prompt + every generated token when the sample ends on its own -- plus the
  probes' tokens;
* a probe's tokens: ``probe_cost="prefill"`` (default) counts what thinkctl's
  :class:`~thinkctl.stopping.ForcedAnswerProber` processes, the prompt and the thinking so far prefilled again
  plus the marker and the answer tokens; ``"answer"`` counts the marker and answer tokens only (a server that
  reuses the prefix's KV cache). Reading hidden states (``probe``) and token confidences (``deepconf``) is free.

A greedy sample that reached the store's ``max_new_tokens`` is answered where its last checkpoint forced the answer:
at the cap, as live budget forcing does there, when its thinking did not close (a live run with a larger cap would
think on); at the end of thinking when only its answer was cut off (the forced ``</think>`` + answer prefix is what
the model writes there itself). ``n_truncated`` counts them; to replay a live run, collect with a
``max_new_tokens`` of at least its thinking cap plus the forced answer. A store written from recorded generations
(``thinkctl collect --generations``) records no cap (its ``max_new_tokens`` is its longest text): there, only a
greedy text whose thinking never closed and that gives no answer of its own counts as cut, and is answered at its
end. A text that ended before any cap with an answer of its own (a model without think markers answering in its own
words) is answered by it, as a live run ends at its end of sequence.

Measures, per rule: accuracy with its Wilson 95 % interval; mean tokens and thinking tokens with percentile-bootstrap
95 % intervals over problems; paired differences against ``full`` (accuracy, thinking tokens and tokens saved, paired
bootstrap over problems, :func:`thinkctl.eval.evaluate.paired_comparison`); the loss rate -- the share of problems
whose right ``full`` answer the rule loses -- with its Wilson interval, set against the certified ``epsilon`` for
``probe``.

Examples
--------
>>> res = replay_serial("traces/", bundle="bundle/", rules="full,oracle,fixed@64,dynasor,probe")  # doctest: +SKIP
>>> res["strategies"]["probe"]["vs_full"]["thinking_saved_fraction"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from thinkctl.registry import Registry, split_name
from thinkctl.stats import wilson_interval

__all__ = ["SerialReplayConfig", "GreedyTrace", "TraceSet", "CertifiedStopRule", "Outcome", "SerialRule", "RuleInputs",
           "SERIAL_RULES", "DEFAULT_RULES", "PROBE_COSTS", "load_traces", "load_certified_rule", "check_same_model",
           "resolve_rules", "replay_rows", "replay_serial", "RouteOutcome", "split_outcomes"]

logger = logging.getLogger(__name__)

#: Rules replayed when none are named: every one the inputs allow (``probe`` needs a bundle, ``deepconf`` a
#: threshold source); the fixed budgets are ``thinkctl evaluate``'s default ones.
DEFAULT_RULES = ("full", "oracle", "fixed@64", "fixed@128", "dynasor", "deepconf", "probe")
#: How a forced-answer probe is paid: ``prefill`` (thinkctl's ForcedAnswerProber re-reads the prefix) or
#: ``answer`` (marker and answer tokens only, a server that keeps the prefix's KV cache).
PROBE_COSTS = ("prefill", "answer")
#: Dynasor's probe interval and agreement count (Fu et al. 2024; :mod:`thinkctl.stopping.rules`).
DYNASOR_EVERY = 32
DYNASOR_K = 3
#: Row ``stop`` of a trace answered at the store's cap (the others: ``stopped`` before the end of thinking, ``end``).
_STOP_ON_CAP = "cap"


class RuleUnavailable(ValueError):
    """A rule that the given inputs cannot replay (the message says why and what to do)."""


@dataclass(frozen=True)
class SerialReplayConfig:
    """Settings of a serial replay.

    Parameters
    ----------
    dynasor_k : int
        Consecutive agreeing forced answers that stop ``dynasor`` (Dynasor-CoT: 3).
    probe_cost : {"prefill", "answer"}
        How each of ``dynasor``'s forced-answer probes is paid (see the module docstring).
    deepconf_threshold : float or None
        Group-confidence threshold of ``deepconf``. None: DeepConf's own rule (:class:`~thinkctl.controller.
        DeepConfOnline`): the ``100 - deepconf_keep_percent`` percentile of the lowest group confidence of warm-up
        traces -- each problem's first ``deepconf_warmup`` sampled traces when the store recorded their
        checkpoints, else the greedy traces of the bundle's own trace store (other problems) when a bundle is
        given; without either, ``deepconf`` is not replayed.
    deepconf_keep_percent : float
        DeepConf-high keeps the top 90 % of warm-up traces.
    deepconf_warmup : int
        Warm-up traces per problem (:class:`~thinkctl.controller.DeepConfOnline`'s default, 4).
    n_bootstrap : int
        Bootstrap resamples of problems for the intervals.
    seed : int
        Seed of the bootstrap.
    """

    dynasor_k: int = DYNASOR_K
    probe_cost: str = "prefill"
    deepconf_threshold: float | None = None
    deepconf_keep_percent: float = 90.0
    deepconf_warmup: int = 4
    n_bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.dynasor_k, int) or isinstance(self.dynasor_k, bool) or self.dynasor_k < 1:
            raise ValueError(f"dynasor_k={self.dynasor_k!r} must be a positive int (Dynasor-CoT uses 3)")
        if self.probe_cost not in PROBE_COSTS:
            raise ValueError(f"probe_cost={self.probe_cost!r} is unknown; use one of {', '.join(PROBE_COSTS)}")
        if self.deepconf_threshold is not None and not (isinstance(self.deepconf_threshold, (int, float))
                                                        and math.isfinite(self.deepconf_threshold)):
            raise ValueError(f"deepconf_threshold={self.deepconf_threshold!r} must be a finite number (a group "
                             "confidence in nats) or None")
        if not 0 < self.deepconf_keep_percent <= 100:
            raise ValueError(f"deepconf_keep_percent={self.deepconf_keep_percent!r} must be in (0, 100]")
        if not isinstance(self.deepconf_warmup, int) or self.deepconf_warmup < 1:
            raise ValueError(f"deepconf_warmup={self.deepconf_warmup!r} must be a positive int")
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 100:
            raise ValueError(f"n_bootstrap={self.n_bootstrap!r} must be an integer >= 100")


# ----------------------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class GreedyTrace:
    """One problem's greedy sample as the rules read it; arrays have one entry per checkpoint, in order."""

    problem_id: str
    level: int | None
    gold: Any
    answer: str | None
    correct: bool
    closed: bool
    truncated: bool  # the generation reached the store's cap: its own ending is cut, its answer is forced there
    n_prompt: int
    n_generated: int
    n_thinking: int
    position: np.ndarray  # (K,) thinking tokens read
    forced_answer: tuple[str | None, ...]
    forced_correct: np.ndarray  # (K,) bool
    probe_tokens: np.ndarray  # (K,) marker + answer tokens of the forced answer
    lowest_group: np.ndarray  # (K,) lowest full-window group confidence so far; NaN before a full window
    score: np.ndarray | None = None  # (K,) the certified stop score, when a bundle is given
    warmup_lowest: tuple[float, ...] = ()  # lowest group confidence of this problem's sampled traces

    @property
    def n_checkpoints(self) -> int:
        return int(len(self.position))


@dataclass(frozen=True)
class TraceSet:
    """The greedy traces of a store and what the store says about how they were collected."""

    path: str
    traces: list[GreedyTrace]
    model: dict[str, Any]
    every: int | None
    max_new_tokens: int | None
    confidence_window: int | None
    confidence_top_k: int | None
    layers: list[int]
    n_samples: int

    @property
    def n_truncated(self) -> int:
        return sum(t.truncated for t in self.traces)

    def grid_reason(self) -> str | None:
        """Why the store has no checkpoint grid (None when it has one)."""
        if self.every is None:
            return (f"trace store {self.path} records no checkpoint interval (collect 'every'); collect it with "
                    "`thinkctl collect --every N`")
        return None


def _model_words(stamp: dict[str, Any]) -> str:
    parts = [repr(stamp.get("name", "?"))]
    for key, word in (("hidden_size", "hidden"), ("num_layers", "layers"), ("fingerprint", "fingerprint")):
        if stamp.get(key) is not None:
            parts.append(f"{word} {stamp[key]}")
    return " ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def check_same_model(bundle_stamp: dict[str, Any], store_stamp: dict[str, Any], bundle: str, store: str) -> None:
    """Raise a ValueError when a bundle's model stamp and a trace store's describe different models.

    The weights fingerprints decide when both are recorded; otherwise the hidden size and layer count, and the
    name when neither records a fingerprint.
    """
    problems = []
    for key in ("hidden_size", "num_layers"):
        a, b = bundle_stamp.get(key), store_stamp.get(key)
        if a is not None and b is not None and int(a) != int(b):
            problems.append(key)
    fa, fb = bundle_stamp.get("fingerprint"), store_stamp.get("fingerprint")
    if fa is not None and fb is not None:
        if fa != fb:
            problems.append("weights fingerprint")
    elif bundle_stamp.get("name") is not None and store_stamp.get("name") is not None \
            and bundle_stamp["name"] != store_stamp["name"]:
        problems.append("name")
    if problems:
        raise ValueError(f"bundle {bundle} was made for model {_model_words(bundle_stamp)}, but trace store {store} "
                         f"was collected with model {_model_words(store_stamp)} ({', '.join(problems)} differ): "
                         "the bundle's probes read another model's hidden states. Replay a store collected with "
                         "the bundle's model, or give the bundle trained on this store's model")


def _lowest_group(ck: dict[str, Any], window: int | None) -> float:
    conf = ck.get("confidence") or {}
    value = conf.get("conf_min_window")
    if value is None or window is None or int(ck["position"]) < window:
        return math.nan  # no full window yet: the live rule cannot fire
    return float(value)


def _trace_lowest(row: dict[str, Any], window: int | None) -> float:
    """A finished trace's lowest full-window group confidence: its last checkpoint's (the end of thinking), +inf
    when the trace is shorter than one window (DeepConf leaves such traces out of the warm-up percentile)."""
    cks = row.get("checkpoints") or []
    if not cks or window is None or (cks[-1].get("confidence") or {}).get("conf_min_window") is None:
        return math.nan
    value = _lowest_group(cks[-1], window)
    return math.inf if math.isnan(value) else value


def load_traces(store_path: str | os.PathLike[str], *,
                score: Callable[[np.ndarray], np.ndarray] | None = None,
                layer: int | None = None) -> TraceSet:
    """The greedy traces of the trace store at ``store_path``.

    Parameters
    ----------
    store_path : path
        A folder written by ``thinkctl collect``.
    score : callable, optional
        Maps hidden states of shape (n_checkpoints, hidden) at ``layer`` to stop scores of shape (n_checkpoints,);
        stored on each trace (``GreedyTrace.score``).
    layer : int, optional
        The recorded layer ``score`` reads (required with ``score``).

    Raises
    ------
    FileNotFoundError
        If the folder is not a trace store.
    ValueError
        If the store holds no samples, no greedy samples, or not the layer ``score`` reads.
    """
    from thinkctl.traces.store import TraceStore

    path = Path(store_path)
    if not path.is_dir():
        raise FileNotFoundError(f"trace store {path} does not exist; create one with `thinkctl collect --out {path}`")
    store = TraceStore(path)
    cfg = store.config
    collect = cfg.get("collect") or {}
    rows = store.samples()
    if not rows:
        raise ValueError(f"trace store {path} holds no samples (no committed shard); finish or rerun `thinkctl "
                         f"collect --out {path}`")
    greedy_idx = [i for i, r in enumerate(rows) if r.get("greedy")]
    if not greedy_idx:
        raise ValueError(f"trace store {path} holds no greedy samples (sample 0, greedy: true) among its "
                         f"{len(rows)}: serial rules replay greedy thinking; collect a store whose first sample per "
                         "problem is greedy (`thinkctl collect`, or `--generations` with the greedy generation first)")
    cap = int(collect["max_new_tokens"]) if collect.get("max_new_tokens") else None
    if "generations" in cfg:
        # written by `collect --generations`: max_new_tokens is the longest text of the file, not a cap that cut
        # any of them (what the generator's own cap was is unknown); only an unclosed thinking shows a cut
        cap = None
    window = collect.get("confidence_window")
    window = int(window) if window is not None else None
    scores: dict[int, np.ndarray] = {}
    if score is not None:
        if layer is None:
            raise ValueError("layer= is required with score=")
        ca = store.checkpoint_arrays(layer)  # ValueError naming the recorded layers when this one is missing
        values = np.asarray(score(ca.X), dtype=float).reshape(-1)
        ids, starts = np.unique(ca.sample, return_index=True)  # checkpoints are stored sample after sample
        for s, part in zip(ids, np.split(values, starts[1:])):
            scores[int(s)] = part
    warm: dict[str, list[float]] = {}
    for r in rows:
        if not r.get("greedy") and r.get("checkpoints"):
            warm.setdefault(str(r["problem_id"]), []).append(_trace_lowest(r, window))
    traces = []
    seen: set[str] = set()
    for i in greedy_idx:
        r = rows[i]
        pid = str(r["problem_id"])
        if pid in seen:
            raise ValueError(f"trace store {path} holds two greedy samples of problem {pid}; a store has one greedy "
                             "sample per problem")
        seen.add(pid)
        cks = r.get("checkpoints") or []
        if not cks:
            raise ValueError(f"the greedy sample of problem {pid} in trace store {path} has no checkpoints; collect "
                             "with checkpoints on the greedy sample (`--checkpoints greedy` or `all`)")
        sc = scores.get(i)
        if score is not None and (sc is None or len(sc) != len(cks)):
            raise ValueError(f"trace store {path}: the hidden states of problem {pid}'s greedy checkpoints do not "
                             "match its rows; the store is damaged, collect it again")
        closed = bool(r.get("thinking_closed", True))
        at_cap = cap is not None and int(r["n_generated"]) >= cap
        # a text that ended before any cap with an answer of its own (a model without think markers that answers
        # in its own words, e.g. "The answer is 11") is answered by it, as a live run ends at its end-of-sequence
        finished = not at_cap and r.get("answer") is not None
        traces.append(GreedyTrace(
            problem_id=pid, level=r.get("level"), gold=r.get("gold"), answer=r.get("answer"),
            correct=bool(r["correct"]), closed=closed,
            truncated=at_cap or (not closed and not finished),
            n_prompt=int(r["n_prompt_tokens"]), n_generated=int(r["n_generated"]), n_thinking=int(r["n_thinking"]),
            position=np.array([int(c["position"]) for c in cks]),
            forced_answer=tuple(c.get("forced_answer") for c in cks),
            forced_correct=np.array([bool(c["forced_correct"]) for c in cks]),
            probe_tokens=np.array([int(c.get("probe_tokens", 0)) for c in cks]),
            lowest_group=np.array([_lowest_group(c, window) for c in cks]),
            score=sc, warmup_lowest=tuple(warm.get(pid, ()))))
    top_k = collect.get("confidence_top_k")
    return TraceSet(path=str(path), traces=traces, model=dict(cfg.get("model") or {}),
                    every=int(collect["every"]) if collect.get("every") else None,
                    max_new_tokens=cap,
                    confidence_window=window, confidence_top_k=int(top_k) if top_k is not None else None,
                    layers=list(cfg.get("layers_resolved") or []), n_samples=len(rows))


@dataclass(frozen=True)
class CertifiedStopRule:
    """A bundle's certified serial stop rule, loaded without the model: its stop score, threshold and schedule.

    ``stop_score(X)`` computes what the live controller compares with the threshold
    (:meth:`thinkctl.controller.engine.GenerationEngine._stop_score`) from hidden states of shape (n, hidden).
    """

    bundle: str
    layer: int
    confidence: Any  # HiddenStatePredictor
    outlook: Any  # Outlook or None
    threshold: float | None
    check_points: tuple[int, ...] | None
    risk: dict[str, Any]
    model: dict[str, Any]
    trace_store: str | None = None

    def stop_score(self, X: np.ndarray) -> np.ndarray:
        import torch

        from thinkctl.calibration.risk_control import stop_score

        h = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        conf = self.confidence(h)
        if self.outlook is None:
            return conf
        return stop_score(conf, self.outlook(h), self.outlook.score, self.outlook.kappa)

    def schedule(self, limit: int) -> tuple[int, ...]:
        """The thinking budgets at which the live controller reads the score, up to ``limit``: the certified check
        points, else the controller's geometric schedule (``initial_budget * budget_factor**j``)."""
        if self.check_points:
            return tuple(c for c in self.check_points if c <= limit)
        from thinkctl.controller.config import BUDGET_FACTOR, INITIAL_BUDGET

        out, b = [], INITIAL_BUDGET
        while b <= limit:
            out.append(b)
            b *= BUDGET_FACTOR
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        r = self.risk
        return {"bundle": self.bundle, "layer": self.layer, "score": r.get("score", "confidence"),
                "kappa": r.get("kappa"), "threshold": self.threshold, "epsilon": r.get("epsilon"),
                "delta": r.get("delta"), "method": r.get("method"), "n_calib_problems": r.get("n_calib_problems"),
                "check_points": list(self.check_points) if self.check_points else None,
                "model": self.model}


def load_certified_rule(bundle_dir: str | os.PathLike[str]) -> CertifiedStopRule:
    """The certified stop rule of the bundle in ``bundle_dir``: its probes, calibrators, score, kappa, threshold and
    check points, read by :meth:`thinkctl.controller.Bundle.read` (the bundle without its model; the trace store's
    model stamp is checked instead, :func:`check_same_model`).

    Raises
    ------
    FileNotFoundError
        If the folder is not a bundle.
    ValueError
        If the bundle is not trained, its calibration is stale, or a certified part is missing.
    """
    from thinkctl.bundle import RISK_CONTROL
    from thinkctl.controller.bundle import Bundle
    from thinkctl.persistence import MissingArtefactError

    bundle = Bundle.read(bundle_dir)
    layout, meta = bundle.layout, bundle.manifest
    if not layout.has(RISK_CONTROL):
        raise ValueError(f"bundle {layout.root} has no {RISK_CONTROL}: its stop rule is not certified; run "
                         f"`thinkctl calibrate {layout.root}`")
    cps = bundle.risk_control.get("check_points")
    store = None
    if "trace_store" in meta:
        try:
            store = str(layout.trace_store_path(meta))
        except MissingArtefactError:
            store = None
    threshold = bundle.confidence.threshold
    return CertifiedStopRule(bundle=str(layout.root), layer=int(meta["confidence_layer"]),
                             confidence=bundle.confidence, outlook=bundle.outlook,
                             threshold=None if threshold is None else float(threshold),
                             check_points=tuple(int(c) for c in cps) if cps else None,
                             risk=dict(bundle.risk_control), model=dict(meta.get("model") or {}), trace_store=store)


# ----------------------------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class Outcome:
    """Where a rule ended one trace: ``stop`` the checkpoint whose forced answer it gives (None: the sample's own
    final answer), ``paid`` the probe tokens it spent, ``probes`` how many probes it ran."""

    stop: int | None
    paid: int = 0
    probes: int = 0


@dataclass
class SerialRule:
    """A replayable serial rule: ``run(trace) -> Outcome`` and its description (definition, accounting, source)."""

    name: str
    run: Callable[[GreedyTrace], Outcome]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleInputs:
    """What a rule factory may read: the traces, the bundle's certified rule (or None), the settings, and the
    warm-up source of ``deepconf`` from the bundle's trace store (or None)."""

    data: TraceSet
    rule: CertifiedStopRule | None
    cfg: SerialReplayConfig
    bundle_traces: Callable[[], list[float]] | None = None  # lowest group confidences of the bundle's greedy traces


#: Serial rules by base name: ``factory(param, name, inputs) -> SerialRule``; raises :class:`RuleUnavailable` when
#: the inputs cannot serve the rule.
SERIAL_RULES: Registry[Callable[[int | None, str, RuleInputs], SerialRule]] = Registry("serial rule")


def _no_param(param: int | None, name: str) -> None:
    if param is not None:
        raise ValueError(f"rule {name!r} takes no parameter; write {name.partition('@')[0]}")


def _grid(data: TraceSet, name: str) -> int:
    if data.every is None:
        raise RuleUnavailable(f"{name}: {data.grid_reason()}")
    return data.every


@SERIAL_RULES.register("full")
def _full(param: int | None, name: str, inp: RuleInputs) -> SerialRule:
    _no_param(param, name)
    return SerialRule(name, lambda t: Outcome(None), {
        "rule": "greedy thinking to its natural end; the sample's own final answer",
        "tokens": "prompt + every generated token"})


def _oracle_run(t: GreedyTrace) -> Outcome:
    if not _reference_correct(t):
        return Outcome(0)
    wrong = np.flatnonzero(~t.forced_correct)
    first = int(wrong[-1]) + 1 if wrong.size else 0
    if t.truncated:  # the reference answer is forced at the last checkpoint, which is right
        return Outcome(first)
    return Outcome(first if first < t.n_checkpoints else None)


@SERIAL_RULES.register("oracle")
def _oracle(param: int | None, name: str, inp: RuleInputs) -> SerialRule:
    _no_param(param, name)
    return SerialRule(name, _oracle_run, {
        "rule": "the earliest checkpoint from which every forced answer stays right (the final answer included); "
                "for a wrong final answer, the first checkpoint (its forced answer is the answer)",
        "tokens": "prompt + thinking to the checkpoint + the forced answer; no probe is paid (an oracle)"})


@SERIAL_RULES.register("fixed")
def _fixed(param: int | None, name: str, inp: RuleInputs) -> SerialRule:
    if param is None:
        raise ValueError(f"rule {name!r} needs a thinking budget, e.g. fixed@64")
    every = _grid(inp.data, name)
    cap = inp.data.max_new_tokens
    if param % every and (cap is None or param < cap):
        raise RuleUnavailable(f"{name}: trace store {inp.data.path} recorded checkpoints every {every} thinking "
                              f"tokens, so it holds no forced answer at {param}; use a multiple of {every} or "
                              f"collect with --every dividing {param}")

    def run(t: GreedyTrace) -> Outcome:
        at = np.flatnonzero(t.position == param)
        if param < t.n_thinking and at.size:
            return Outcome(int(at[0]))
        return Outcome(None)

    info = {"rule": f"budget forcing: the answer forced at {param} thinking tokens when thinking is longer, else "
                    "the final answer", "budget": param, "source": "s1 (Muennighoff et al. 2025, arXiv:2501.19393)",
            "tokens": "prompt + thinking to the budget + the forced answer"}
    if cap is not None and param >= cap:
        info["note"] = (f"the store's cap ({cap} generated tokens) is below the budget: traces that reached it are "
                        "answered at the cap")
    return SerialRule(name, run, info)


def _probe_cost(t: GreedyTrace, i: int, how: str) -> int:
    return int(t.probe_tokens[i]) + (t.n_prompt + int(t.position[i]) if how == "prefill" else 0)


@SERIAL_RULES.register("dynasor")
def _dynasor(param: int | None, name: str, inp: RuleInputs) -> SerialRule:
    every = _grid(inp.data, name)
    k, how = inp.cfg.dynasor_k, inp.cfg.probe_cost
    note = None
    if param is None:
        probe_every = DYNASOR_EVERY if DYNASOR_EVERY % every == 0 else every * math.ceil(DYNASOR_EVERY / every)
        if probe_every != DYNASOR_EVERY:
            note = (f"the store's grid (every {every}) does not hold the live rule's interval {DYNASOR_EVERY}; probes "
                    f"every {probe_every} instead")
    else:
        probe_every = param
        if probe_every % every:
            raise RuleUnavailable(f"{name}: probes every {probe_every} thinking tokens, but trace store "
                                  f"{inp.data.path} recorded forced answers every {every}; use a multiple of "
                                  f"{every} or collect with --every dividing {probe_every}")

    def run(t: GreedyTrace) -> Outcome:
        paid, last, run_len, probes = 0, None, 0, 0
        for i in np.flatnonzero((t.position % probe_every == 0) & (t.position >= 1)):
            paid += _probe_cost(t, int(i), how)
            probes += 1
            a = t.forced_answer[i]
            a = a.strip() if isinstance(a, str) else None
            a = a or None
            run_len = run_len + 1 if a is not None and a == last else (1 if a is not None else 0)
            last = a
            if run_len >= k:
                return Outcome(int(i), paid, probes)
        return Outcome(None, paid, probes)

    info: dict[str, Any] = {
        "rule": f"a forced answer every {probe_every} thinking tokens; stop when the last {k} agree and are not "
                "empty (the answer forced there)", "every": probe_every, "k": k, "probe_cost": how,
        "source": "Dynasor-CoT probe-in-the-middle (Fu et al. 2024, arXiv:2412.20993); live: strategy "
                  f"'dynasor{'' if param is None else '@' + str(param)}'",
        "tokens": "as full/stopped, plus every probe: " + (
            "prompt + thinking so far + marker + answer tokens (ForcedAnswerProber re-reads the prefix)"
            if how == "prefill" else "marker + answer tokens (prefix KV cache reused)")
        + "; probe tokens count as thinking tokens, as live"}
    if note:
        info["note"] = note
    return SerialRule(name, run, info)


def _deepconf_thresholds(inp: RuleInputs) -> tuple[dict[str, float], str]:
    """Per-problem DeepConf thresholds and where they come from; RuleUnavailable when nothing sets them."""
    from thinkctl.controller.parallel import DeepConfOnline

    cfg, data = inp.cfg, inp.data
    if cfg.deepconf_threshold is not None:
        return {t.problem_id: float(cfg.deepconf_threshold) for t in data.traces}, "given"
    online = DeepConfOnline(warmup=cfg.deepconf_warmup, keep_percent=cfg.deepconf_keep_percent)
    if all(t.warmup_lowest for t in data.traces):
        return ({t.problem_id: online.threshold(list(t.warmup_lowest)[:cfg.deepconf_warmup]) for t in data.traces},
                f"per problem, the {100 - cfg.deepconf_keep_percent:g}th percentile of the lowest group confidence "
                f"of its first {cfg.deepconf_warmup} sampled traces (DeepConf online warm-up)")
    if inp.bundle_traces is not None:
        try:
            lowest = inp.bundle_traces()
        except (ValueError, FileNotFoundError) as exc:
            raise RuleUnavailable(f"deepconf: the bundle's trace store cannot serve as DeepConf's warm-up ({exc}); "
                                  "give --deepconf-threshold") from None
        value = online.threshold(lowest)
        return ({t.problem_id: value for t in data.traces},
                f"the {100 - cfg.deepconf_keep_percent:g}th percentile of the lowest group confidence of the "
                f"{len(lowest)} greedy traces of the bundle's trace store (other problems)")
    raise RuleUnavailable(
        "deepconf: no threshold: give one (--deepconf-threshold), collect the store with sampled traces "
        "(`--samples 5 --checkpoints all`) for DeepConf's per-problem warm-up, or give a bundle trained on another "
        "trace store of this model (its greedy traces are the warm-up)")


@SERIAL_RULES.register("deepconf")
def _deepconf(param: int | None, name: str, inp: RuleInputs) -> SerialRule:
    _no_param(param, name)
    data = inp.data
    if data.confidence_window is None:
        raise RuleUnavailable(f"deepconf: trace store {data.path} records no token-confidence window "
                              "(collect confidence_window); collect it with `thinkctl collect`")
    thresholds, source = _deepconf_thresholds(inp)

    def run(t: GreedyTrace) -> Outcome:
        fired = np.flatnonzero(t.lowest_group < thresholds[t.problem_id])  # NaN (no full window) never fires
        return Outcome(int(fired[0]) if fired.size else None)

    values = np.array([v for v in thresholds.values() if math.isfinite(v)])
    return SerialRule(name, run, {
        "rule": "stop at the first checkpoint by which a full window's mean token confidence fell below the "
                "threshold (TokenConfidenceStopping, min_tokens = window), the answer forced there",
        "window": data.confidence_window, "top_k": data.confidence_top_k, "threshold_source": source,
        "threshold_mean": float(values.mean()) if values.size else None,
        "source": "DeepConf online (Fu et al. 2025, arXiv:2508.15260) on one greedy trace; live: "
                  f"TokenConfidenceStopping(threshold, window={data.confidence_window}, "
                  f"top_k={data.confidence_top_k}) in BudgetForcing",
        "tokens": "prompt + thinking to the checkpoint + the forced answer; reading token confidence is free",
        "note": f"the live rule fires at the token where the window dips, up to {(data.every or 1) - 1} thinking "
                "tokens before the checkpoint the replay stops at"})


@SERIAL_RULES.register("probe")
def _probe(param: int | None, name: str, inp: RuleInputs) -> SerialRule:
    _no_param(param, name)
    rule = inp.rule
    if rule is None:
        raise RuleUnavailable("probe: needs the bundle whose certified stop rule to replay (--bundle)")
    every = _grid(inp.data, name)
    limit = inp.data.max_new_tokens or max(int(t.position.max()) for t in inp.data.traces)
    schedule = rule.schedule(limit)
    off = [c for c in schedule if c % every]
    if off:
        g = math.gcd(*schedule)
        raise ValueError(f"the stop rule of bundle {rule.bundle} reads its score at thinking budgets "
                         f"{_short(schedule)}, but trace store {inp.data.path} recorded checkpoints every {every} "
                         f"thinking tokens, which misses {_short(off)}: collect the store with --every {g} (or a "
                         f"divisor of {g}) to replay this rule")
    on = np.asarray(schedule, dtype=int)
    threshold = rule.threshold

    def run(t: GreedyTrace) -> Outcome:
        if threshold is None or t.score is None:
            return Outcome(None)
        reach = np.isin(t.position, on) & (t.score >= threshold)
        hits = np.flatnonzero(reach)
        return Outcome(int(hits[0]) if hits.size else None)

    info = {"rule": "the bundle's certified stop rule: stop at the first checkpoint of its schedule whose stop "
                    "score reaches the threshold, the answer forced there", **rule.describe(),
            "schedule_read": _short(schedule),
            "tokens": "prompt + thinking to the checkpoint + the forced answer; reading the hidden state is free",
            "source": "thinkctl (Learn-then-Test certified early stopping; live: strategy 'serial')"}
    if threshold is None:
        info["note"] = "the bundle certifies no threshold (none met the risk): the rule never stops"
    if schedule and not rule.check_points:
        info["note"] = "the bundle records no certified check points: the controller's geometric schedule is read"
    return SerialRule(name, run, info)


def _short(values: Sequence[int], n: int = 6) -> str:
    values = list(values)
    return (", ".join(map(str, values)) if len(values) <= n else
            ", ".join(map(str, values[:n - 1])) + f", ..., {values[-1]} ({len(values)} budgets)")


def _parse(name: str) -> tuple[str, int | None]:
    base, param = split_name(name, "rule")
    if base == "serial":  # the live strategy's name for the certified rule
        base = "probe"
    SERIAL_RULES.get(base)  # unknown name: lists the known ones
    return base, param


def resolve_rules(names: Sequence[str] | str | None, inputs: RuleInputs) -> tuple[list[SerialRule], dict[str, str]]:
    """The rules to replay and those skipped (name -> reason). Named rules that the inputs cannot serve are an
    error; with ``names=None`` (every rule the inputs allow) they are skipped with the reason. ``full`` is always
    included (first): it is the reference of the comparisons."""
    explicit = names is not None
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
        if not names:
            raise ValueError(f"no rule given; choose from {', '.join(DEFAULT_RULES)} (fixed@B, dynasor@E)")
    wanted = list(names) if names is not None else list(DEFAULT_RULES)
    parsed = [(n.strip(), *_parse(n)) for n in wanted]  # name errors before any replay
    rules: list[SerialRule] = []
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for raw, base, param in [("full", "full", None)] + parsed:
        key = base if param is None else f"{base}@{param}"
        if key in seen:
            continue
        seen.add(key)
        try:
            rules.append(SERIAL_RULES.get(base)(param, key, inputs))
        except RuleUnavailable as exc:
            if explicit:
                raise ValueError(str(exc)) from None
            skipped[key] = str(exc)
    return rules, skipped


# ----------------------------------------------------------------------------------------------------------------
# replay and summary


def _reference_correct(t: GreedyTrace) -> bool:
    """Whether ``full`` is right: the final answer, or the answer forced at the cap for a truncated trace."""
    return bool(t.forced_correct[-1]) if t.truncated else bool(t.correct)


def _row(t: GreedyTrace, name: str, out: Outcome) -> dict[str, Any]:
    stop, reason = out.stop, "end"
    if stop is None and t.truncated:
        stop, reason = t.n_checkpoints - 1, _STOP_ON_CAP
    if stop is None:
        answer, correct = t.answer, bool(t.correct)
        thinking, tokens = t.n_thinking, t.n_prompt + t.n_generated
    else:
        pos = int(t.position[stop])
        answer, correct = t.forced_answer[stop], bool(t.forced_correct[stop])
        thinking, tokens = pos, t.n_prompt + pos + int(t.probe_tokens[stop])
        if reason != _STOP_ON_CAP:
            reason = "stopped" if pos < t.n_thinking else "end"
    _, _, b = name.partition("@")
    return {"problem_id": t.problem_id, "level": t.level, "strategy": name, "budget": int(b) if b else None,
            "answer": answer, "gold": t.gold, "correct": correct, "tokens": int(tokens + out.paid),
            "thinking_tokens": int(thinking + out.paid), "probe_tokens": int(out.paid), "probes": int(out.probes),
            "samples": 1, "confidence": None, "route": name, "stop": reason,
            "reference_correct": _reference_correct(t)}


def replay_rows(data: TraceSet, rules: Sequence[SerialRule]) -> list[dict[str, Any]]:
    """One row per (greedy trace, rule), in the layout of :func:`thinkctl.eval.evaluate.evaluate`'s rows, plus
    ``probe_tokens``, ``probes`` and ``reference_correct`` (whether ``full`` is right on that problem)."""
    return [_row(t, r.name, r.run(t)) for r in rules for t in data.traces]


@dataclass(frozen=True)
class RouteOutcome:
    """What the certified serial route does on one recorded problem: its greedy ``trace``, the replayed ``row``
    (answer, correctness, tokens as :func:`replay_rows` gives them), the calibrated confidence at the state it
    answers from (``end_confidence``: the checkpoint where the rule stopped, else the end of thinking), and whether
    the model ended its thinking itself (``own_end``: not stopped by the rule, not cut by a cap)."""

    trace: GreedyTrace
    row: dict[str, Any]
    end_confidence: float
    own_end: bool


def split_outcomes(bundle_dir: str | os.PathLike[str], split: str = "calib"
                   ) -> tuple[CertifiedStopRule, list[RouteOutcome]]:
    """The bundle's certified serial route replayed on the greedy traces of one of its splits (the problems of
    ``bundle.json``'s ``split[split]``), read from the bundle's own trace store: what the routing decisions that
    follow the serial route (escalation, budget doubling) are fitted on.

    Raises
    ------
    ValueError
        If the bundle certifies no stop rule or no longer finds its trace store."""
    import torch

    from thinkctl.bundle import BundleLayout

    rule = load_certified_rule(bundle_dir)
    if rule.threshold is None or rule.trace_store is None:
        raise ValueError(f"bundle {bundle_dir} certifies no stop rule or has lost its trace store; its serial route "
                         "cannot be replayed (run `thinkctl calibrate` on a bundle whose traces are in place)")
    wanted = set(BundleLayout(bundle_dir).read_manifest()["split"][split])
    data = load_traces(rule.trace_store, score=rule.stop_score, layer=rule.layer)

    def confidence(X: np.ndarray) -> np.ndarray:
        return np.asarray(rule.confidence(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))))

    conf = {t.problem_id: t.score for t in load_traces(rule.trace_store, score=confidence, layer=rule.layer).traces}
    (_, probe), _ = resolve_rules(["probe"], RuleInputs(data, rule, SerialReplayConfig()))  # "full" comes first
    out = []
    for t in data.traces:
        if t.problem_id not in wanted:
            continue
        stop = probe.run(t)
        score = conf[t.problem_id]
        assert score is not None
        end = float(score[stop.stop] if stop.stop is not None else score[-1])
        out.append(RouteOutcome(t, _row(t, "serial", stop), end, stop.stop is None and not t.truncated))
    return rule, out


def _summary(rows: list[dict[str, Any]], rules: Sequence[SerialRule], cfg: SerialReplayConfig,
             rule: CertifiedStopRule | None) -> dict[str, dict[str, Any]]:
    from thinkctl.eval.evaluate import paired_comparison, summarize

    base = summarize(rows, n_boot=cfg.n_bootstrap, seed=cfg.seed)
    out: dict[str, dict[str, Any]] = {}
    for r in rules:
        rs = [x for x in rows if x["strategy"] == r.name]
        e = dict(base[r.name])
        e.pop("routes", None)
        n_ok = sum(bool(x["correct"]) for x in rs)
        e["ci95"] = list(wilson_interval(n_ok, len(rs)))
        stops: dict[str, int] = {}
        for x in rs:
            stops[x["stop"]] = stops.get(x["stop"], 0) + 1
        e["stops"] = stops
        e["stopped_fraction"] = stops.get("stopped", 0) / max(1, len(rs))
        e["probe_tokens_mean"] = float(np.mean([x["probe_tokens"] for x in rs])) if rs else 0.0
        e["probes_mean"] = float(np.mean([x["probes"] for x in rs])) if rs else 0.0
        lost = sum(bool(x["reference_correct"]) and not x["correct"] for x in rs)
        gained = sum(not x["reference_correct"] and bool(x["correct"]) for x in rs)
        e["loss_rate"] = lost / max(1, len(rs))
        e["loss_rate_ci95"] = list(wilson_interval(lost, len(rs)))
        e["lost"], e["gained"] = lost, gained
        if r.name != "full":
            e["vs_full"] = paired_comparison(rows, r.name, "full", n_boot=cfg.n_bootstrap, seed=cfg.seed)
        if r.name == "probe" and rule is not None:
            eps = rule.risk.get("epsilon")
            e["certified"] = {"epsilon": eps, "delta": rule.risk.get("delta"), "threshold": rule.threshold,
                              "loss_rate_within_epsilon": None if eps is None else bool(e["loss_rate"] <= eps)}
        out[r.name] = e
    return out


def _bundle_lowest(rule: CertifiedStopRule, data: TraceSet) -> Callable[[], list[float]] | None:
    """The warm-up source of ``deepconf`` from the bundle's trace store, when it records the same confidence."""
    if rule.trace_store is None or Path(rule.trace_store).resolve() == Path(data.path).resolve():
        return None

    def read() -> list[float]:
        other = load_traces(rule.trace_store)  # type: ignore[arg-type]
        if (other.confidence_window, other.confidence_top_k) != (data.confidence_window, data.confidence_top_k):
            raise ValueError(f"{other.path} records token confidence with window {other.confidence_window} and "
                             f"top-k {other.confidence_top_k}, the replayed store with {data.confidence_window} and "
                             f"{data.confidence_top_k}")
        values = []
        for t in other.traces:
            valid = t.lowest_group[~np.isnan(t.lowest_group)]
            values.append(float(valid[-1]) if valid.size else math.inf)
        return values

    return read


def replay_serial(store: str | os.PathLike[str], *, bundle: str | os.PathLike[str] | None = None,
                  rules: Sequence[str] | str | None = None,
                  config: SerialReplayConfig | None = None) -> dict[str, Any]:
    """Replay serial stopping rules on the greedy samples of the trace store ``store``.

    Parameters
    ----------
    store : path
        A trace store (``thinkctl collect``) with a greedy sample per problem and checkpoints on it.
    bundle : path, optional
        A calibrated bundle (``thinkctl train`` + ``thinkctl calibrate``) of the same model: enables ``probe``.
    rules : sequence of str or str, optional
        Rule names (or a comma-separated string): ``full``, ``oracle``, ``fixed@B``, ``dynasor`` / ``dynasor@E``,
        ``deepconf``, ``probe`` (alias ``serial``). None: every rule the inputs allow (:data:`DEFAULT_RULES`),
        skipping the others with the reason.
    config : SerialReplayConfig, optional

    Returns
    -------
    dict
        ``{"strategies": {rule: {"accuracy", "ci95", "tokens_mean", "tokens_ci95", "thinking_tokens_mean",
        "thinking_tokens_ci95", "samples_mean", "n", "loss_rate", "vs_full", ...}}, "config": {...}, "rows": [...]}``
        where ``rows`` holds one row per (problem, rule) (:func:`replay_rows`; ``thinkctl replay`` does not write
        them).

    Raises
    ------
    FileNotFoundError
        If the store or bundle folder does not exist.
    ValueError
        On a store without greedy samples or without samples, a bundle of another model, a store whose checkpoint
        grid cannot serve a named rule, or an unknown rule name.
    """
    cfg = config or SerialReplayConfig()
    certified = load_certified_rule(bundle) if bundle is not None else None
    if certified is not None:
        from thinkctl.traces.store import TraceStore

        if not Path(store).is_dir():
            raise FileNotFoundError(f"trace store {store} does not exist; create one with `thinkctl collect`")
        check_same_model(certified.model, dict(TraceStore(store).config.get("model") or {}), certified.bundle,
                         str(store))
        data = load_traces(store, score=certified.stop_score, layer=certified.layer)
    else:
        data = load_traces(store)
    inputs = RuleInputs(data, certified, cfg, _bundle_lowest(certified, data) if certified is not None else None)
    chosen, skipped = resolve_rules(rules, inputs)
    rows = replay_rows(data, chosen)
    strategies = _summary(rows, chosen, cfg, certified)
    from thinkctl import __version__

    config_out: dict[str, Any] = {
        "command": "replay", "mode": "serial", "thinkctl_version": __version__,
        "traces": {"path": data.path, "n_problems": len(data.traces), "n_samples": data.n_samples,
                   "model": data.model, "every": data.every, "max_new_tokens": data.max_new_tokens,
                   "confidence_window": data.confidence_window, "confidence_top_k": data.confidence_top_k,
                   "n_truncated": data.n_truncated},
        "bundle": None if certified is None else certified.describe(),
        "rules": {r.name: r.info for r in chosen},
        "skipped": skipped,
        "replay": asdict(cfg),
        "ci95_method": "accuracy and loss rate: Wilson score interval; tokens, thinking tokens and the paired "
                       f"differences vs full: percentile bootstrap over problems ({cfg.n_bootstrap} resamples, "
                       f"seed {cfg.seed})",
        "answers": "the forced answer at the checkpoint where the rule stops (recorded forced_correct), else the "
                   "sample's final answer; a trace that reached the store's max_new_tokens is answered by its last "
                   "checkpoint's forced answer (at the cap, or at the end of thinking when only the answer was cut)",
        "loss": "loss_rate = share of problems whose full answer is right and whose answer under the rule is wrong",
    }
    return {"strategies": strategies, "config": config_out, "rows": rows}
