"""``thinkctl calibrate-pruning``: certify the process-score threshold at which ``prune@N`` abandons a sample.

On calibration problems (``--seed`` draws them: use a seed never used for evaluation), N samples per problem are
generated step by step with nothing pruned, recording each sample's aggregated step score after every step and
whether its answer is right. Learn-then-Test (Hoeffding-Bentkus, fixed sequence from "never prune" upwards) then
picks the highest threshold λ such that, with probability at least 1 - delta, the expected share of a problem's
right-ending samples that pruning below λ abandons is at most epsilon. The records go to ``OUT.rows.jsonl`` as
blocks finish (a killed run resumes; one writer at a time); the rule goes to ``--out`` and is read by ``thinkctl
evaluate --strategies prune@N --prune-rule OUT`` with the same ``--scorer``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from thinkctl.commands._common import add_model_argument, add_progress_argument, check_output_file

NAME = "calibrate-pruning"
HELP = "certify the process-score threshold of prune@N (Learn-then-Test on calibration problems)"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--task", required=True, help="task family (see thinkctl.tasks.names())")
    p.add_argument("--seed", type=int, required=True, help="seed of the calibration problems (not an evaluation seed)")
    p.add_argument("--n", type=int, required=True, help="calibration problems (per --level when levels are given)")
    p.add_argument("--level", type=int, action="append", default=None,
                   help="only this difficulty level; repeat for several (n problems each)")
    p.add_argument("--out", required=True, metavar="JSON", help="the pruning rule to write")
    p.add_argument("--branches", type=int, default=8, help="samples per calibration problem (N of prune@N)")
    p.add_argument("--scorer", default="check", metavar="NAME",
                   help="step scorer: check (exact checker of the built-in tasks) or process-probe (needs --bundle)")
    p.add_argument("--bundle", default=None, help="predictor bundle (for --scorer process-probe)")
    p.add_argument("--aggregation", default="min", help="step-score aggregation: min, last, prod or mean")
    p.add_argument("--epsilon", type=float, default=0.05,
                   help="risk: expected share of right-ending samples pruned")
    p.add_argument("--delta", type=float, default=0.1, help="probability that the certificate fails")
    p.add_argument("--token-cap", type=int, default=1024, help="thinking tokens per sample at most")
    p.add_argument("--instruct", action="store_true", help="phrase prompts for an instruct model (as in collect)")
    p.add_argument("--block", type=int, default=16, help="problems per resumable block")
    add_progress_argument(p)


def _key(problem_id: str, level: int | None) -> str:
    """Problems of different levels drawn with one seed share ids: rows are keyed by id and level."""
    return f"{problem_id}@{level}"


def _records(rows_path: Path) -> dict[str, dict[str, Any]]:
    from thinkctl.eval.rowsfile import load_rows

    return {_key(row["problem_id"], row["level"]): row for row in load_rows(rows_path)}


def _record(task: Any, problem: Any, tokens: int, branches: list[dict[str, Any]]) -> dict[str, Any]:
    """One problem's row: its samples' records, each with whether its answer is right."""
    marked = [{**b, "correct": bool(b["answer"] is not None and task.check_answer(problem, b["answer"]))}
              for b in branches]
    return {"problem_id": problem.id, "level": problem.level, "tokens": tokens, "branches": marked}


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm.auto import tqdm

    import thinkctl
    from thinkctl.calibration.risk_control import min_calibration_size
    from thinkctl.controller import AdaptiveController, ControllerConfig
    from thinkctl.controller.search import make_step_scorer
    from thinkctl.eval.rowsfile import append_rows, guard_rows
    from thinkctl.generation import chat_prefix, reasoning_format
    from thinkctl.models import model_id, model_stamp
    from thinkctl.process.pruning import BranchRecord, branches_of_trace, certify_pruning
    from thinkctl.process.scoring import AGGREGATIONS
    from thinkctl.process.search import SearchConfig, step_search

    for name in ("n", "branches", "block", "token_cap"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least 1")
    AGGREGATIONS.get(args.aggregation)
    if args.scorer == "process-probe" and not args.bundle:
        raise ValueError("--scorer process-probe reads a bundle's outlook probe; give --bundle")
    if args.scorer not in ("check", "process-probe"):
        raise ValueError(f"--scorer {args.scorer!r}: calibrate-pruning takes check or process-probe")
    out = check_output_file(args.out, "--out")
    task = thinkctl.tasks.get(args.task)
    levels = args.level or [None]
    problems = [p for lv in levels for p in task.sample(args.n, seed=args.seed, level=lv)]
    n_min = min_calibration_size(args.epsilon, args.delta)
    if len(problems) < n_min:
        raise ValueError(f"{len(problems)} calibration problems cannot certify epsilon={args.epsilon} at "
                         f"delta={args.delta}: even with no loss that needs at least {n_min}; raise --n")
    if args.instruct:
        from thinkctl.embedded.gym import INSTRUCT_SUFFIX

        problems = [replace(p, prompt=p.prompt + INSTRUCT_SUFFIX) for p in problems]
    model, tokenizer = thinkctl.load_model(args.model)
    cfg = ControllerConfig(seed=args.seed, token_cap=args.token_cap,
                           easy_cap=min(ControllerConfig().easy_cap, args.token_cap))
    controller = (AdaptiveController.load(args.bundle, model, tokenizer, cfg, task=task) if args.bundle
                  else AdaptiveController(model, tokenizer, config=cfg, task=task))
    scorer = make_step_scorer(args.scorer, controller)
    search = SearchConfig(n=args.branches, beam_width=1, max_thinking_tokens=args.token_cap,
                          max_answer_tokens=cfg.max_answer_tokens, seed=args.seed, aggregation=args.aggregation)
    rows_path = out.with_name(out.stem + ".rows.jsonl")
    settings = {"task": args.task, "seed": args.seed, "levels": levels, "model": args.model,
                "scorer": args.scorer, "bundle": str(Path(args.bundle).resolve()) if args.bundle else None,
                "branches": args.branches, "aggregation": args.aggregation, "token_cap": args.token_cap,
                "instruct": args.instruct}
    fmt = reasoning_format(tokenizer)
    with guard_rows(rows_path, settings):
        done = _records(rows_path)
        todo = [p for p in problems if _key(p.id, p.level) not in done]
        bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="calibrate-pruning",
                   unit="problem", disable=args.no_progress)
        for start in range(0, len(todo), args.block):
            chunk = todo[start:start + args.block]
            found = step_search(model, tokenizer, fmt, task, chunk, [chat_prefix(tokenizer, p.prompt) for p in chunk],
                                scorer, search, method="prune")
            new = [_record(task, p, r.tokens, branches_of_trace(r.trace)) for p, r in zip(chunk, found)]
            append_rows(rows_path, new)
            done.update((_key(p.id, p.level), row) for p, row in zip(chunk, new))
            bar.update(len(chunk))
        bar.close()
    records = [[BranchRecord(scores=tuple(b["scores"]), correct=b["correct"], lengths=tuple(b.get("lengths", ())))
                for b in done[_key(p.id, p.level)]["branches"]] for p in problems]
    rule = certify_pruning(records, epsilon=args.epsilon, delta=args.delta, scorer=scorer.name,
                           aggregation=args.aggregation, task=args.task,
                           model=model_stamp(model, model_id(model)))
    rule.save(out)
    c = rule.calibration
    print(f"{rule.n_problems} calibration problems, {c['samples']} samples ({c['right_samples']} right, on "
          f"{c['problems_with_right_sample']} problems); epsilon {rule.epsilon}, delta {rule.delta}")
    if rule.threshold is None:
        print(f"no threshold certified: {rule.reason}")
    elif c["samples_pruned"] == 0:
        print(f"certified only 'never prune': pruning below {c.get('first_rejected_threshold', 'any threshold')} "
              f"would abandon {100 * c.get('first_rejected_risk', 0):.1f} % of the right-ending samples, more than "
              f"epsilon allows; prune@N will prune nothing")
    else:
        line = (f"certified: prune a sample once its {rule.aggregation} {rule.scorer} score < {rule.threshold:g}; "
                f"on the calibration problems: risk {c['risk']:.4f}, samples pruned {100 * c['samples_pruned']:.1f} %")
        if "step_tokens_saved" in c:
            line += f", step tokens saved {100 * c['step_tokens_saved']:.1f} %"
        print(line)
    print(f"wrote {out}, {rows_path}")
    return 0
