"""``thinkctl difficulty-real``: query difficulty from real problem text (MATH levels), against a length baseline.

Trains :class:`~thinkctl.predictors.DifficultyModel` (``target="level"``) on MATH test problems (the 4500 outside
MATH-500; source: github WangXinglin/DSC@4d6b9a1 ``dataset/MATH.jsonl``) and evaluates it on a held-out split of
problems:

* AUROC of P(level >= 4) for hard (level >= 4) against easy (level <= 2) problems, level 3 excluded;
* Spearman correlation of the expected level with the true level (all held-out problems);

each with a percentile-bootstrap 95 % interval, and the paired bootstrap difference against a length-only baseline
(the prompt length in characters: any monotone function of length has the same AUROC and Spearman). Variants are
reported too: text features only (no subject), the subject alone, and the same LightGBM on length features alone.

Hyperparameters of every fitted variant are chosen by stratified k-fold cross-validation on the training split
only (mean Spearman); the held-out split is used once, for the final numbers.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from thinkctl.commands._common import check_output_dir, check_output_file, write_json
from thinkctl.jsonl import iter_jsonl
from thinkctl.tasks.data import DATA_ENV_VAR, DataNotFoundError, find_data_dir

NAME = "difficulty-real"
HELP = "train a DifficultyModel on real MATH problem text (level target) and compare it with a length baseline"
DESCRIPTION = __doc__

logger = logging.getLogger(__name__)

#: The MATH file inside the data directory.
DATA_FILE = Path("problems") / "math_test4500_no_math500.jsonl"
#: Held-out fraction of problems (stratified by level).
DEFAULT_TEST_SIZE = 0.3
#: Cross-validation folds on the training split for hyperparameter selection.
DEFAULT_CV_FOLDS = 5
#: Levels >= this are "hard" (positive class) for the AUROC; the model's ``level_threshold``.
DEFAULT_HARD_LEVEL = 4
#: Levels <= this are "easy" (negative class); levels in between are left out of the AUROC.
DEFAULT_EASY_LEVEL = 2
#: Fewer usable problems than this cannot give a meaningful split.
MIN_PROBLEMS = 20
#: Name of the monotone length baseline every fitted variant is compared with.
BASELINE = "length_chars"
#: The variant that must beat the baseline.
MAIN_VARIANT = "text+subject"

#: Hyperparameter grids searched by cross-validation. "default" spans tree size and the number of rounds around
#: LightGBM's defaults at learning rate 0.05; "quick" is for smoke tests.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "default": [
        {"num_leaves": 7, "n_estimators": 100},
        {"num_leaves": 7, "n_estimators": 300},
        {"num_leaves": 7, "n_estimators": 600},
        {"num_leaves": 15, "n_estimators": 150},
        {"num_leaves": 15, "n_estimators": 400},
        {"num_leaves": 31, "n_estimators": 200},
    ],
    "quick": [
        {"num_leaves": 7, "n_estimators": 30},
        {"num_leaves": 15, "n_estimators": 60},
    ],
}


def _variants() -> dict[str, Callable[[], Any]]:
    from thinkctl.predictors import QueryFeatures

    return {
        MAIN_VARIANT: lambda: QueryFeatures(),
        "text_only": lambda: QueryFeatures(use_problem_features=False),
        "subject_only": lambda: QueryFeatures(feature_sets=(), use_problem_features=True),
        "length_lgbm": lambda: QueryFeatures(feature_sets=("length",), use_problem_features=False),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="PATH",
                   help=f"data directory (holding {DATA_FILE}) or the JSONL file itself; default: the directory named "
                        f"by ${DATA_ENV_VAR}")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split, the CV folds and the models")
    p.add_argument("--test-size", type=float, default=DEFAULT_TEST_SIZE, help="held-out fraction of problems")
    p.add_argument("--cv-folds", type=int, default=DEFAULT_CV_FOLDS,
                   help="CV folds on the training split to choose hyperparameters (0: LightGBM defaults of "
                        "DifficultyModel, no search)")
    p.add_argument("--grid", choices=sorted(GRIDS), default="default", help="hyperparameter grid for the CV")
    p.add_argument("--hard-level", type=int, default=DEFAULT_HARD_LEVEL, help="levels >= this are 'hard'")
    p.add_argument("--easy-level", type=int, default=DEFAULT_EASY_LEVEL, help="levels <= this are 'easy'")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--n-jobs", type=int, default=1, help="LightGBM threads")
    p.add_argument("--save", default=None, metavar="DIR", help="also save the main model (LightGBM text + JSON) here")
    p.add_argument("--json", required=True, metavar="OUT", help="write the results here")


def resolve_data_file(data: str | None) -> Path:
    """The MATH JSONL: ``--data`` (directory or file), else the data directory named by ``$THINKCTL_DATA``."""
    try:
        base = Path(data) if data else find_data_dir()
    except DataNotFoundError as exc:
        raise FileNotFoundError(f"MATH problems not found: {exc}; or pass --data DIR (the data directory holding "
                                f"{DATA_FILE}) or --data FILE.jsonl") from exc
    path = base / DATA_FILE if base.is_dir() else base
    if not path.is_file():
        raise FileNotFoundError(
            f"MATH problems not found at {str(path)!r}; pass --data DIR (the data directory holding "
            f"{DATA_FILE}) or --data FILE.jsonl, or set {DATA_ENV_VAR}")
    return path.resolve()


def load_math_rows(path: Path) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    """Inputs for QueryFeatures (prompt + subject), integer levels, and a description of the file."""
    items: list[dict[str, Any]] = []
    levels: list[int] = []
    skipped = 0
    sources: set[str] = set()
    for _, row in iter_jsonl(path):
        diff = row.get("difficulty") or {}
        level, question = diff.get("value"), row.get("question")
        if not isinstance(question, str) or isinstance(level, bool) or not isinstance(level, (int, float)):
            skipped += 1
            continue
        subject = (row.get("meta") or {}).get("subject")
        items.append({"prompt": question, "features": {"subject": subject} if subject else {}})
        levels.append(int(level))
        if row.get("source"):
            sources.add(str(row["source"]))
    if len(items) < MIN_PROBLEMS:
        raise ValueError(f"{path} holds {len(items)} problems with a question and a difficulty level; need at least "
                         f"{MIN_PROBLEMS}")
    lv = np.asarray(levels, dtype=np.int64)
    info = {"file": str(path), "source": sorted(sources), "n_problems": len(items), "n_skipped": skipped,
            "level_counts": {int(k): int(v) for k, v in zip(*np.unique(lv, return_counts=True))}}
    return items, lv, info


def _cv_select(make_features: Callable[[], Any], X: list[dict[str, Any]], y: np.ndarray, grid: list[dict[str, Any]],
               folds: int, seed: int, hard: int, n_jobs: int) -> dict[str, Any]:
    from scipy.stats import spearmanr
    from sklearn.model_selection import StratifiedKFold

    from thinkctl.predictors import DifficultyModel

    scores: list[dict[str, Any]] = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(y)), y))
    for params in grid:
        fold_scores = []
        for tr, va in splits:
            dm = DifficultyModel(target="level", level_threshold=hard, features=make_features(), n_jobs=n_jobs,
                                 random_state=seed, **params)
            dm.fit([X[i] for i in tr], y[tr])
            fold_scores.append(float(spearmanr(dm.predict_level([X[i] for i in va]), y[va]).statistic))
        scores.append({"params": params, "spearman_mean": float(np.mean(fold_scores)),
                       "spearman_std": float(np.std(fold_scores))})
        logger.info("CV %s: Spearman %.3f +- %.3f", params, scores[-1]["spearman_mean"], scores[-1]["spearman_std"])
    best = max(scores, key=lambda s: s["spearman_mean"])
    return {"selected": best["params"], "scores": scores, "folds": folds, "criterion": "mean CV Spearman"}


def _metrics(level: np.ndarray, hard_score: np.ndarray, difficulty: np.ndarray, hard: int, easy: int,
             n_bootstrap: int, seed: int) -> dict[str, Any]:
    from thinkctl.predictors import auroc_ci, spearman_ci

    mask = (level >= hard) | (level <= easy)
    return {
        "auroc_hard_vs_easy": auroc_ci((level[mask] >= hard).astype(int), hard_score[mask], n_bootstrap=n_bootstrap,
                                       seed=seed),
        "spearman_level": spearman_ci(difficulty, level, n_bootstrap=n_bootstrap, seed=seed),
    }


def _paired_diff(level: np.ndarray, model: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray],
                 hard: int, easy: int, n_bootstrap: int, seed: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score
    from scipy.stats import spearmanr

    from thinkctl.predictors import bootstrap_ci

    def auroc_diff(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        if np.unique(y).size < 2:
            return float("nan")
        return float(roc_auc_score(y, a) - roc_auc_score(y, b))

    def spearman_diff(lv: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        if np.ptp(lv) == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan")
        return float(spearmanr(a, lv).statistic - spearmanr(b, lv).statistic)

    mask = (level >= hard) | (level <= easy)
    y = (level[mask] >= hard).astype(int)
    a_v, a_lo, a_hi, _ = bootstrap_ci(auroc_diff, y, model[0][mask], base[0][mask], n_bootstrap=n_bootstrap, seed=seed)
    s_v, s_lo, s_hi, _ = bootstrap_ci(spearman_diff, level, model[1], base[1], n_bootstrap=n_bootstrap, seed=seed)
    return {"auroc_diff": {"value": a_v, "ci95": [a_lo, a_hi]}, "spearman_diff": {"value": s_v, "ci95": [s_lo, s_hi]}}


def run(args: argparse.Namespace) -> int:
    check_output_file(args.json, "--json")
    if args.save:
        check_output_dir(args.save, "--save")
    from thinkctl.predictors import DifficultyModel, grouped_train_test_split

    t0 = time.time()
    if args.easy_level >= args.hard_level:
        raise ValueError(f"--easy-level {args.easy_level} must be below --hard-level {args.hard_level}")
    if args.cv_folds < 0 or args.cv_folds == 1:
        raise ValueError(f"--cv-folds {args.cv_folds} is invalid; use 0 (no search) or at least 2")
    path = resolve_data_file(args.data)
    X, level, data_info = load_math_rows(path)
    train, test = grouped_train_test_split(len(X), test_size=args.test_size, seed=args.seed, stratify=level)
    X_tr, X_te = [X[i] for i in train], [X[i] for i in test]
    y_tr, y_te = level[train], level[test]
    data_info.update(n_train=int(train.size), n_test=int(test.size),
                     test_level_counts={int(k): int(v) for k, v in zip(*np.unique(y_te, return_counts=True))})
    logger.info("%d problems: %d train, %d held out", len(X), train.size, test.size)

    results: dict[str, Any] = {}
    cv: dict[str, Any] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    length = np.array([len(x["prompt"]) for x in X_te], dtype=float)
    scores[BASELINE] = (length, length)
    main_model = None
    for name, make_features in _variants().items():
        if args.cv_folds:
            cv[name] = _cv_select(make_features, X_tr, y_tr, GRIDS[args.grid], args.cv_folds, args.seed,
                                  args.hard_level, args.n_jobs)
            params = cv[name]["selected"]
        else:
            params = {}
        dm = DifficultyModel(target="level", level_threshold=args.hard_level, features=make_features(),
                             n_jobs=args.n_jobs, random_state=args.seed, **params).fit(X_tr, y_tr)
        scores[name] = (dm.predict_proba(X_te), dm.predict_level(X_te))
        if name == MAIN_VARIANT:
            main_model = dm
    for name, (hard_score, difficulty) in scores.items():
        results[name] = _metrics(y_te, hard_score, difficulty, args.hard_level, args.easy_level, args.n_bootstrap,
                                 args.seed)
    comparison = {name: _paired_diff(y_te, scores[name], scores[BASELINE], args.hard_level, args.easy_level,
                                     args.n_bootstrap, args.seed)
                  for name in scores if name != BASELINE}
    main_cmp = comparison[MAIN_VARIANT]
    beats = bool(main_cmp["auroc_diff"]["ci95"][0] > 0 and main_cmp["spearman_diff"]["ci95"][0] > 0)
    if args.save and main_model is not None:
        main_model.save(args.save, metadata={"dataset": "MATH test minus MATH-500", "data_file": str(path),
                                             "train_size": int(train.size), "seed": args.seed})
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command",)}
    report = {
        "config": {**config, "data_file": str(path), "grid_params": GRIDS[args.grid] if args.cv_folds else None},
        "data": data_info,
        "definitions": {
            "auroc_hard_vs_easy": f"AUROC of P(level >= {args.hard_level}) for level >= {args.hard_level} (positive) "
                                  f"vs level <= {args.easy_level} (negative) on held-out problems",
            "spearman_level": "Spearman correlation of the expected level with the true level, all held-out problems",
            BASELINE: "prompt length in characters (any monotone function of it has the same AUROC and Spearman)",
            "ci95": "percentile bootstrap over held-out problems; *_diff: paired bootstrap, variant minus baseline",
        },
        "cv": cv,
        "test": results,
        "vs_baseline": comparison,
        "baseline": BASELINE,
        "main_variant": MAIN_VARIANT,
        "beats_baseline": beats,
        "wall_seconds": round(time.time() - t0, 1),
    }
    write_json(args.json, report)
    for name, r in results.items():
        a, s = r["auroc_hard_vs_easy"], r["spearman_level"]
        print(f"{name:>14}: AUROC {a['value']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]  "
              f"Spearman {s['value']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
    d = main_cmp
    print(f"{MAIN_VARIANT} - {BASELINE}: AUROC {d['auroc_diff']['value']:+.3f} "
          f"[{d['auroc_diff']['ci95'][0]:+.3f}, {d['auroc_diff']['ci95'][1]:+.3f}], Spearman "
          f"{d['spearman_diff']['value']:+.3f} [{d['spearman_diff']['ci95'][0]:+.3f}, "
          f"{d['spearman_diff']['ci95'][1]:+.3f}] -> {'beats' if beats else 'does NOT beat'} the baseline")
    print(f"wrote {args.json}")
    return 0
