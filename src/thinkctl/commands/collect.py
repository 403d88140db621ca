"""``thinkctl collect``: labelled reasoning traces of a model on a task, into an append-only store.

Killed at any point, the same command resumes where it stopped (whole shards only: nothing lost, nothing twice).
With ``--ray ADDRESS`` the shards run on Ray actors (one model replica each, one per GPU where there are GPUs)
and this process writes them into the same store: the same traces as a one-process run, resumable by either.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from thinkctl.commands._common import (add_model_argument, add_progress_argument, add_ray_arguments,
                                      check_output_dir, int_list, ray_config)

NAME = "collect"
HELP = "collect traces (hidden states, forced answers, token confidence) of a model on a task"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--task", default="arith", help="task family (see thinkctl.tasks.names())")
    p.add_argument("--out", required=True, help="trace store folder (created, or resumed if it exists)")
    p.add_argument("--n", type=int, default=240, help="problems")
    p.add_argument("--seed", type=int, default=2000, help="problem and sampling seed")
    p.add_argument("--level", type=int, default=None, help="only this difficulty level")
    p.add_argument("--samples", type=int, default=4, help="generations per problem (the first is greedy)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--every", type=int, default=16, help="a checkpoint every this many thinking tokens")
    p.add_argument("--checkpoints", choices=["all", "greedy"], default="all",
                   help="samples that get checkpoints (states and forced answers): all, or the greedy one only "
                        "(sampled generations then keep their final answer and length: enough for routing, "
                        "about a third of the cost)")
    p.add_argument("--layers", default="all", type=lambda t: t if t == "all" else int_list(t),
                   help="'all' or comma-separated layer indices (negatives from the end)")
    p.add_argument("--max-new-tokens", type=int, default=768)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-problems", type=int, default=24, help="problems per committed shard")
    p.add_argument("--instruct", action="store_true",
                   help="add an answer-format instruction (for instruct models not trained on the task)")
    add_ray_arguments(p, "the problems")
    add_progress_argument(p)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    import thinkctl
    from thinkctl.embedded.gym import INSTRUCT_SUFFIX
    from thinkctl.models import load_model, model_id
    from thinkctl.traces import CollectConfig, collect

    layers = args.layers
    cfg = replace(CollectConfig(), task=args.task, n_problems=args.n, seed=args.seed, level=args.level,
                  samples=args.samples, temperature=args.temperature, every=args.every,
                  checkpoints=args.checkpoints, layers=layers, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, shard_problems=args.shard_problems,
                  prompt_suffix=INSTRUCT_SUFFIX if args.instruct else "")
    ray_cfg = ray_config(args)
    task = thinkctl.tasks.get(args.task)
    problems = task.sample(args.n, seed=args.seed, level=args.level)
    if ray_cfg is not None:
        from thinkctl.distributed import ModelSpec, collect_distributed

        store = collect_distributed(ModelSpec(args.model), task, problems, args.out, cfg, ray_cfg,
                                    progress=not args.no_progress)
    else:
        model, tokenizer = load_model(args.model)
        store = collect(model, tokenizer, task, problems, args.out, cfg, model_name=model_id(model),
                        progress=not args.no_progress)
    rows = store.samples()
    acc = sum(r["correct"] for r in rows) / max(1, len(rows))
    n_ck = sum(len(r["checkpoints"]) for r in rows)
    print(f"{len(rows)} samples of {len({r['problem_id'] for r in rows})} problems, {n_ck} checkpoints, "
          f"sample accuracy {acc:.3f} -> {args.out}")
    return 0
