"""Parallel-sampling policies evaluated on recorded samples (replay files).

A replay file holds one problem per line::

    {source, dataset, model, setting, correct_rule, qid, question, gt,
     samples: [{answer, correct, n_chars, n_words, n_tokens_cl100k?, score?, verifications?}, ...]}

Each policy consumes a problem's samples in order, as if they were being drawn live, and returns one answer. The
order matters for the stopping policies, so every figure is averaged over ``permutations`` random orders of the
samples within each problem, drawn from a seeded generator; all policies see the same orders (common random
numbers), so their differences are paired.

Policies (registry :data:`POLICIES`)
------------------------------------
``sc``        self-consistency: majority over all ``N`` samples (ties: first to appear in the order).
``esc``       Early-Stopping Self-Consistency (Li et al., ICLR 2024): windows of ``esc_window`` samples, stop at
              the first unanimous window, majority over all consumed samples.
``asc``       Adaptive-Consistency (Aggarwal et al., EMNLP 2023), Beta criterion at ``asc_threshold``, budget ``N``.
``adaptive``  thinkctl: stop when the posterior-predictive probability that the remaining budget changes the
              majority of the ``N`` falls below ``adaptive_alpha``
              (:class:`~thinkctl.voting.MajorityStabilityStopping`).
``weighted``  score-weighted majority over the samples with a recorded ``score`` (else mean ``verifications``);
              falls back to ``sc`` with a note when the file has neither.
``best_of``   the answer of the highest-scored sample; skipped, with the reason, when no sample has a ``score``.

Measures, per policy
--------------------
* a problem is right when the chosen answer is ``correct``: an answer's correctness is the ``correct`` flag of the
  samples that carry the same answer string (a problem with no vote at all is wrong);
* ``accuracy``, ``samples_mean``, ``tokens_mean``: permutation-averaged per problem, then averaged over problems;
* ``tokens_mean``: the summed length of the consumed samples, from ``n_tokens_cl100k``, else ``n_words * 4/3``,
  else ``n_chars / 4`` (the sources used are listed in the output); ``null`` when a sample has none of them;
* ``ci95``: percentile bootstrap over problems of the permutation-averaged per-problem accuracy (problems are the
  unit of sampling; the permutation noise is already averaged out within each problem).

Examples
--------
>>> import json, tempfile, os
>>> row = {"qid": 0, "samples": [{"answer": "4", "correct": True, "n_chars": 40, "n_words": 9}] * 8}
>>> path = os.path.join(tempfile.mkdtemp(), "toy.jsonl")
>>> _ = open(path, "w").write(json.dumps(row) + "\\n")
>>> res = run_replay(load_replay(path), ["sc", "adaptive"], ReplayConfig(permutations=100))
>>> res["strategies"]["sc"]["samples_mean"], res["strategies"]["adaptive"]["samples_mean"] < 8
(8.0, True)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence, cast

import numpy as np

from thinkctl.voting import (
    ADAPTIVE_ALPHA,
    ADAPTIVE_MIN_SAMPLES,
    ADAPTIVE_PRIOR_COUNT,
    ASC_THRESHOLD,
    ESC_WINDOW,
    BetaStopping,
    MajorityStabilityStopping,
    VoteTally,
    WindowUnanimityStopping,
)
from thinkctl.registry import Registry
from thinkctl.stats import bootstrap_interval
from thinkctl.traces.replay_file import TOKEN_SOURCES, ReplayData, ReplayProblem, load_replay

__all__ = ["ReplayConfig", "ReplayProblem", "ReplayData", "Policy", "POLICIES", "DEFAULT_POLICY_ORDER",
           "load_replay", "run_replay"]

logger = logging.getLogger(__name__)

#: The order in which policies are run and reported when several are requested.
DEFAULT_POLICY_ORDER = ("sc", "esc", "asc", "adaptive", "weighted", "best_of")
SCORE_TRANSFORMS = ("auto", "identity", "sigmoid")


@dataclass(frozen=True)
class ReplayConfig:
    """Settings of a replay run. Every default is the published one or is explained here.

    Parameters
    ----------
    permutations : int
        Random orders of each problem's samples averaged over (100 or more for reported figures).
    seed : int
        Seed of the permutations and of the bootstrap.
    esc_window : int
        ESC window size ``w``; published 5 (Li et al. 2024, Fig. 1; github.com/Yiwei98/ESC ``early_stop_*.py``
        runs ``slice_ = 5`` with a budget of 40).
    asc_threshold : float
        ASC Beta-criterion threshold; published 0.95 (Aggarwal et al. 2023; github.com/Pranjal2041/AdaptiveConsistency
        ``BetaStoppingCriteria(conf_thresh=0.95)``); ASC's budget (``max_gens``, 40 in the paper) is the file's ``N``.
    adaptive_alpha : float
        Level of thinkctl's rule: 0.05, the nominal error level of ASC's 0.95 (see :mod:`thinkctl.voting`).
    adaptive_prior_count : float
        Dirichlet pseudo-count of thinkctl's rule: 1.0, the uniform prior (ASC's Beta(1, 1)).
    adaptive_min_samples : int
        Minimum samples before thinkctl's rule may stop: 1 (the posterior alone decides).
    score_transform : {"auto", "identity", "sigmoid"}
        Map from a recorded ``score`` to a voting weight. ``auto``: identity when every score of the file lies in
        [0, 1] (probability-like verifier scores), else the logistic sigmoid (reward-model logits, which can be
        negative and cannot be summed as votes).
    n_bootstrap : int
        Bootstrap resamples of problems for the intervals.
    """

    permutations: int = 100
    seed: int = 0
    esc_window: int = ESC_WINDOW
    asc_threshold: float = ASC_THRESHOLD
    adaptive_alpha: float = ADAPTIVE_ALPHA
    adaptive_prior_count: float = ADAPTIVE_PRIOR_COUNT
    adaptive_min_samples: int = ADAPTIVE_MIN_SAMPLES
    score_transform: str = "auto"
    n_bootstrap: int = 2000

    def __post_init__(self) -> None:
        if not isinstance(self.permutations, int) or self.permutations < 1:
            raise ValueError(f"permutations={self.permutations!r} must be an integer >= 1 (100 or more for reported "
                             "figures)")
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 100:
            raise ValueError(f"n_bootstrap={self.n_bootstrap!r} must be an integer >= 100")
        if self.score_transform not in SCORE_TRANSFORMS:
            raise ValueError(f"score_transform={self.score_transform!r} is unknown; use one of "
                             f"{', '.join(SCORE_TRANSFORMS)}")
        # the rules validate their own arguments (with the fix in the message)
        self.esc_rule()
        self.asc_rule()
        self.adaptive_rule()

    def esc_rule(self) -> WindowUnanimityStopping:
        return WindowUnanimityStopping(self.esc_window)

    def asc_rule(self) -> BetaStopping:
        return BetaStopping(self.asc_threshold)

    def adaptive_rule(self) -> MajorityStabilityStopping:
        return MajorityStabilityStopping(self.adaptive_alpha, self.adaptive_prior_count, self.adaptive_min_samples)


# ----------------------------------------------------------------------------------------------------------------
# policies: each maps (problem, order of its samples) to (chosen answer id or None, indices of consumed samples)

@dataclass
class _Context:
    cfg: ReplayConfig
    weight_transform: Callable[[np.ndarray], np.ndarray] | None = None
    rules: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rules = {"esc": self.cfg.esc_rule(), "asc": self.cfg.asc_rule(), "adaptive": self.cfg.adaptive_rule()}


@dataclass(frozen=True)
class Policy:
    """A replay policy: ``run(problem, order, ctx) -> (answer_id | None, consumed_indices)``."""

    run: Callable[[ReplayProblem, np.ndarray, _Context], tuple[int | None, np.ndarray]]
    describe: Callable[[ReplayConfig], dict[str, Any]]
    #: returns a reason to skip the policy on this data, or None
    check: Callable[[ReplayData], str | None] = lambda data: None


#: Replay policies by name; an unknown name lists the known ones.
POLICIES: Registry[Policy] = Registry("replay policy")


def _leader(tally: VoteTally) -> int | None:
    """The tally's leader: an answer id, since the policies vote with the ids of :class:`ReplayProblem`."""
    return cast("int | None", tally.leader())


def _sequential(problem: ReplayProblem, order: np.ndarray, rule: Any) -> tuple[int | None, np.ndarray]:
    n = problem.n_samples
    tally = VoteTally()
    ids = problem.answer_ids
    used = n
    for i, j in enumerate(order):
        a = int(ids[j])
        tally.add(None if a < 0 else a)
        if rule is not None and rule.should_stop(tally, n):
            used = i + 1
            break
    return _leader(tally), order[:used]


def _run_sc(problem: ReplayProblem, order: np.ndarray, ctx: _Context) -> tuple[int | None, np.ndarray]:
    return _sequential(problem, order, None)


def _run_esc(problem: ReplayProblem, order: np.ndarray, ctx: _Context) -> tuple[int | None, np.ndarray]:
    return _sequential(problem, order, ctx.rules["esc"])


def _run_asc(problem: ReplayProblem, order: np.ndarray, ctx: _Context) -> tuple[int | None, np.ndarray]:
    return _sequential(problem, order, ctx.rules["asc"])


def _run_adaptive(problem: ReplayProblem, order: np.ndarray, ctx: _Context) -> tuple[int | None, np.ndarray]:
    return _sequential(problem, order, ctx.rules["adaptive"])


def _scored(problem: ReplayProblem, order: np.ndarray, values: np.ndarray) -> np.ndarray:
    return order[~np.isnan(values[order])]


def _run_weighted(problem: ReplayProblem, order: np.ndarray, ctx: _Context) -> tuple[int | None, np.ndarray]:
    if ctx.weight_transform is None:  # no scores anywhere in the file: plain self-consistency
        return _run_sc(problem, order, ctx)
    used = _scored(problem, order, problem.weight_source)
    if used.size == 0:  # this problem has no scored sample: fall back to sc for it
        return _run_sc(problem, order, ctx)
    weights = ctx.weight_transform(problem.weight_source[used])
    tally = VoteTally()
    for j, w in zip(used, weights):
        a = int(problem.answer_ids[j])
        tally.add(None if a < 0 else a, float(w))
    return _leader(tally), used


def _run_best_of(problem: ReplayProblem, order: np.ndarray, ctx: _Context) -> tuple[int | None, np.ndarray]:
    used = _scored(problem, order, problem.scores)
    voting = used[problem.answer_ids[used] >= 0]
    if voting.size == 0:
        return None, used
    best = voting[int(np.argmax(problem.scores[voting]))]  # argmax: first maximum, i.e. earliest in the order
    return int(problem.answer_ids[best]), used


def _no_score_reason(data: ReplayData) -> str | None:
    if data.has_scores:
        return None
    return (f"no sample in {data.path} has a 'score' field: best-of-N needs a recorded verifier or reward-model "
            "score per sample; use a file with scores (e.g. qwen25math_math_cot_100x8.jsonl)")


POLICIES.add("sc", Policy(_run_sc, lambda c: {
    "rule": "majority over all N samples; ties to the answer that appears first in the order",
    "source": "Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning (ICLR)"}))
POLICIES.add("esc", Policy(_run_esc, lambda c: {
    "rule": "windows of w samples; stop after the first window whose answers are all identical (an abstention "
            "breaks unanimity); majority over all consumed samples; budget N (a last window shorter than w ends "
            "at N)",
    "window": c.esc_window,
    "source": "Li et al. 2024, Escape Sky-high Cost: Early-stopping Self-Consistency for Multi-step Reasoning "
              "(ICLR), arXiv:2401.10480; w=5 from Fig. 1 and github.com/Yiwei98/ESC early_stop_*.py "
              "(slice_=5, sc_num=40)"}))
POLICIES.add("asc", Policy(_run_asc, lambda c: {
    "rule": "after each sample, stop when P(p1 > 1/2) >= threshold for p1 ~ Beta(v1+1, v2+1), v1/v2 the votes "
            "of the first/second answer; majority over consumed samples; budget N",
    "threshold": c.asc_threshold,
    "source": "Aggarwal et al. 2023, Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and "
              "Coding with LLMs (EMNLP), arXiv:2305.11860; github.com/Pranjal2041/AdaptiveConsistency "
              "BetaStoppingCriteria(conf_thresh=0.95), AC(max_gens=40)"}))
POLICIES.add("adaptive", Policy(_run_adaptive, lambda c: {
    "rule": "after each sample, stop when the posterior-predictive probability that the remaining N-n samples "
            "change the majority winner of all N is below alpha (Dirichlet(prior_count) over seen answers plus a "
            "pooled unseen one; exact Dirichlet-multinomial overtake probability per challenger, union bound); "
            "majority over consumed samples",
    "alpha": c.adaptive_alpha, "prior_count": c.adaptive_prior_count, "min_samples": c.adaptive_min_samples,
    "source": "thinkctl (thinkctl.voting.MajorityStabilityStopping); alpha and prior match ASC's 0.95 / "
              "Beta(1,1)"}))
POLICIES.add("weighted", Policy(_run_weighted, lambda c: {
    "rule": "majority over the samples that carry a score, each vote weighted by the transformed score (mean "
            "'verifications' where 'score' is absent); no early stopping; falls back to sc without scores",
    "score_transform": c.score_transform,
    "source": "weighted majority voting (e.g. Li et al. 2023 DiVeRSe; Uesato et al. 2022)"}))
POLICIES.add("best_of", Policy(_run_best_of, lambda c: {
    "rule": "answer of the highest-scored sample among those with a score (ties: first in the order); "
            "consumes every scored sample",
    "source": "best-of-N with a reward model / verifier (Cobbe et al. 2021)"}, check=_no_score_reason))


def _weight_transform(data: ReplayData, cfg: ReplayConfig) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    if data.score_kind == "none":
        return None, "none"
    vals = np.concatenate([p.weight_source[~np.isnan(p.weight_source)] for p in data.problems])
    kind = cfg.score_transform
    if kind == "auto":
        kind = "identity" if vals.size and vals.min() >= 0 and vals.max() <= 1 else "sigmoid"
    if kind == "identity":
        if vals.size and vals.min() < 0:
            raise ValueError(f"score_transform='identity' but {data.path} has negative scores (min {vals.min():.3g}); "
                             "use 'sigmoid' or 'auto'")
        return (lambda s: s), kind
    from scipy.special import expit

    return expit, kind


# ----------------------------------------------------------------------------------------------------------------


def _permutations(n_samples: int, n_perm: int, seq: np.random.SeedSequence) -> np.ndarray:
    rng = np.random.default_rng(seq)
    return np.argsort(rng.random((n_perm, n_samples)), axis=1, kind="stable")  # (P, N)


def _row_means(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1)


def _bootstrap_ci(values: np.ndarray, seq: np.random.SeedSequence, n_bootstrap: int) -> list[float]:
    """95 % percentile-bootstrap interval of the mean over problems; one ``seq`` resamples the same problems."""
    lo, hi, _ = bootstrap_interval(_row_means, [values], n_resamples=n_bootstrap, rng=seq, vectorized=True)
    return [lo, hi]


def _resolve_policies(names: Sequence[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no policy given; choose from {', '.join(DEFAULT_POLICY_ORDER)} or 'all'")
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(x for x in DEFAULT_POLICY_ORDER if x not in out)
            continue
        POLICIES.get(n)  # raises UnknownNameError listing the known names
        if n not in out:
            out.append(n)
    return out


def run_replay(data: ReplayData, policies: Sequence[str] | str, config: ReplayConfig | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Evaluate policies on recorded samples; return the results dictionary (the layout of every thinkctl results file).

    Parameters
    ----------
    data : ReplayData
        From :func:`load_replay`.
    policies : sequence of str or str
        Registry names (or a comma-separated string); ``"all"`` expands to every policy.
    config : ReplayConfig, optional
    progress : bool
        Show a progress bar over problems.

    Returns
    -------
    dict
        ``{"strategies": {name: {"accuracy", "tokens_mean", "samples_mean", "n", "ci95", ...}}, "config": {...}}``.
        Policies that cannot run on this file (``best_of`` without scores) are left out of ``strategies`` and listed
        with the reason in ``config["skipped"]``; asking only for such a policy is an error.
    """
    cfg = config or ReplayConfig()
    names = _resolve_policies(policies)
    skipped: dict[str, str] = {}
    for n in list(names):
        reason = POLICIES.get(n).check(data)
        if reason is not None:
            skipped[n] = reason
            names.remove(n)
    if not names:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in skipped.items()))
    transform, transform_kind = _weight_transform(data, cfg)
    ctx = _Context(cfg=cfg, weight_transform=transform)
    if cfg.permutations < 100:
        logger.warning("permutations=%d: reported figures should average over at least 100", cfg.permutations)

    n_prob, n_perm = len(data.problems), cfg.permutations
    acc = {k: np.zeros((n_prob, n_perm)) for k in names}
    used = {k: np.zeros((n_prob, n_perm)) for k in names}
    toks = {k: np.zeros((n_prob, n_perm)) for k in names}
    seqs = np.random.SeedSequence(cfg.seed).spawn(n_prob + 1)

    from tqdm.auto import tqdm

    for i, prob in enumerate(tqdm(data.problems, disable=not progress, desc="replay", unit="problem")):
        perms = _permutations(prob.n_samples, n_perm, seqs[i])
        for k in names:
            run = POLICIES.get(k).run
            for r in range(n_perm):
                choice, consumed = run(prob, perms[r], ctx)
                acc[k][i, r] = prob.is_correct(choice)
                used[k][i, r] = consumed.size
                if prob.tokens is not None:
                    toks[k][i, r] = prob.tokens[consumed].sum()

    tokens_available = data.n_tokens_missing == 0
    per_problem_acc = {k: acc[k].mean(axis=1) for k in names}
    strategies: dict[str, dict[str, Any]] = {}
    for k in names:
        pa = per_problem_acc[k]
        entry: dict[str, Any] = {
            "accuracy": float(pa.mean()),
            "tokens_mean": float(toks[k].mean()) if tokens_available else None,
            "samples_mean": float(used[k].mean()),
            "n": n_prob,
            "ci95": _bootstrap_ci(pa, seqs[n_prob], cfg.n_bootstrap),
            "accuracy_sd_over_permutations": float(acc[k].mean(axis=0).std(ddof=1)) if n_perm > 1 else 0.0,
            "samples_max": int(used[k].max()),
        }
        if "sc" in names:
            d = pa - per_problem_acc["sc"]
            entry["accuracy_delta_vs_sc"] = float(d.mean())
            entry["accuracy_delta_vs_sc_ci95"] = _bootstrap_ci(d, seqs[n_prob], cfg.n_bootstrap)
            entry["samples_ratio_vs_sc"] = float(used[k].mean() / used["sc"].mean())
            if tokens_available:
                entry["tokens_ratio_vs_sc"] = float(toks[k].mean() / toks["sc"].mean())
        notes = []
        if k == "weighted":
            if transform is None:
                notes.append("no sample has a 'score' or 'verifications': weighted voting falls back to sc")
            else:
                total = sum(p.n_samples for p in data.problems)
                notes.append(f"weights = {transform_kind}({data.score_kind}); only samples with a {data.score_kind} "
                             f"vote and count as consumed ({data.n_samples_scored} of {total} in this file)")
        if k in ("weighted", "best_of") and transform is not None:
            notes.append("tokens count the solutions only, not the verifier/reward-model calls that produced the "
                         "scores")
        if notes:
            entry["notes"] = notes
        strategies[k] = entry

    n_samples = [p.n_samples for p in data.problems]
    from thinkctl import __version__

    config_out: dict[str, Any] = {
        "command": "replay",
        "thinkctl_version": __version__,
        "data": {"path": data.path, "sha256": data.sha256, **data.meta, "n_problems": n_prob,
                 "samples_per_problem": {"min": int(min(n_samples)), "max": int(max(n_samples))},
                 "answers_with_inconsistent_flags": int(sum(p.inconsistent_answers for p in data.problems)),
                 "scores": data.score_kind, "samples_with_scores": data.n_samples_scored},
        "policies": {k: POLICIES.get(k).describe(cfg) for k in names},
        "skipped": skipped,
        "replay": asdict(cfg),
        "permutation_scheme": "per problem, `permutations` uniformly random orders of its samples from "
                              "numpy SeedSequence(seed).spawn(n_problems + 1)[problem index]; shared by all "
                              "policies (paired comparison)",
        "ci95_method": f"percentile bootstrap over problems ({cfg.n_bootstrap} resamples) of the "
                       "permutation-averaged per-problem accuracy; same resamples for every policy and for the "
                       "paired differences vs sc",
        "answers": "a problem is right when the chosen answer string carries correct=true in the file; null answers "
                   "abstain (consume budget, cast no vote); ties go to the answer seen first in the order",
        "tokens": {
            "sources": {k: v for k, v in data.token_sources.items() if v},
            "fallback_order": list(TOKEN_SOURCES),
            "missing_samples": data.n_tokens_missing,
            "note": ("tokens_mean = mean over problems and permutations of the summed completion length of the "
                     "consumed samples; replay files do not record prompt (prefill) tokens, so they are not counted"
                     if tokens_available else
                     f"{data.n_tokens_missing} samples have no n_tokens_cl100k, n_words or n_chars: tokens_mean "
                     "is null; compare samples_mean instead"),
        },
    }
    return {"strategies": strategies, "config": config_out}
