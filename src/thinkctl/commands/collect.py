"""``thinkctl collect``: labelled reasoning traces of a model on a task, into an append-only store.

Killed at any point, the same command resumes where it stopped (whole shards only: nothing lost, nothing twice).
With ``--ray ADDRESS`` the shards run on Ray actors (one model replica each, one per GPU where there are GPUs)
and this process writes them into the same store: the same traces as a one-process run, resumable by either.

With ``--generations FILE.jsonl`` the texts come from another generator (a serving engine such as vLLM, SGLang or
TGI, or files on disk) and this command only labels them: the same store, from one teacher-forced pass per text
and the forced answers at its checkpoints. One JSON object per line: {"id": "q1", "prompt": "...", "gold": "42",
"generations": ["<think>...</think> Final Answer: 42", "..."]}, with optional "level" (integer) and "features"
(object). "prompt" is the user message (the model's chat template is applied to it, with the --instruct suffix
when given); each generation is the text the model wrote after the template's generation prompt, the first one
greedy. "gold" is checked by the task: a built-in one (arith, modeq, mix, math, ...) or 'gold' / 'gold-numeric'
for any data (math-aware comparison with the gold answer). The whole file is checked first (UTF-8, JSON, fields,
unique ids, texts that the model's tokenizer round-trips, the model's context) and nothing is written when it fails.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from thinkctl.commands._common import (add_device_argument, add_model_argument, add_progress_argument,
                                      add_ray_arguments, check_output_dir, int_list, ray_config)

NAME = "collect"
HELP = "collect traces (hidden states, forced answers, token confidence) of a model on a task"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    add_device_argument(p, " (without --ray)")
    p.add_argument("--task", default="arith",
                   help="task family (see thinkctl.tasks.names()); with --generations also 'gold' or 'gold-numeric'")
    p.add_argument("--generations", default=None, metavar="FILE.jsonl",
                   help="label recorded generations instead of generating: one line per problem, "
                        '{"id", "prompt", "gold", "generations": [text, ...], "level"?, "features"?}, the first '
                        "generation greedy (see the description above); --n, --seed, --samples, --level and "
                        "--max-new-tokens then come from the file")
    p.add_argument("--allow-lossy-texts", action="store_true",
                   help="with --generations: keep texts that the model's tokenizer does not decode back to the same "
                        "text (a warning gives their count) instead of refusing the file")
    p.add_argument("--out", required=True, help="trace store folder (created, or resumed if it exists)")
    p.add_argument("--n", type=int, default=240, help="problems")
    p.add_argument("--seed", type=int, default=2000, help="problem and sampling seed")
    p.add_argument("--level", type=int, default=None, help="only this difficulty level")
    p.add_argument("--samples", type=int, default=4, help="generations per problem (the first is greedy)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of the generations after the first (with --generations: recorded as "
                        "the one the file's sampled generations were drawn at)")
    p.add_argument("--every", type=int, default=16, help="a checkpoint every this many thinking tokens")
    p.add_argument("--checkpoints", choices=["all", "greedy"], default="all",
                   help="samples that get checkpoints (states and forced answers): all, or the greedy one only "
                        "(sampled generations then keep their final answer and length: enough for routing, "
                        "about a third of the cost)")
    p.add_argument("--layers", default="all", type=lambda t: t if t == "all" else int_list(t),
                   help="'all' or comma-separated layer indices (negatives from the end)")
    p.add_argument("--max-new-tokens", type=int, default=768)
    p.add_argument("--max-answer-tokens", type=int, default=12,
                   help="most tokens of an answer forced at a checkpoint")
    p.add_argument("--batch-size", type=int, default=64, help="rows per generate call")
    p.add_argument("--forward-batch-size", type=int, default=16, help="rows per teacher-forced forward pass")
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
                  max_answer_tokens=args.max_answer_tokens, batch_size=args.batch_size,
                  forward_batch_size=args.forward_batch_size, shard_problems=args.shard_problems,
                  prompt_suffix=INSTRUCT_SUFFIX if args.instruct else "")
    if args.generations is not None:
        return _summary(_collect_generations(args, cfg), args.out)
    if args.allow_lossy_texts:
        raise ValueError("--allow-lossy-texts applies only with --generations FILE.jsonl")
    ray_cfg = ray_config(args)
    task = thinkctl.tasks.get(args.task)
    problems = task.sample(args.n, seed=args.seed, level=args.level)
    if ray_cfg is not None:
        from thinkctl.distributed import ModelSpec, collect_distributed

        store = collect_distributed(ModelSpec(args.model), task, problems, args.out, cfg, ray_cfg,
                                    progress=not args.no_progress)
    else:
        model, tokenizer = load_model(args.model, device=args.device)
        store = collect(model, tokenizer, task, problems, args.out, cfg, model_name=model_id(model),
                        progress=not args.no_progress)
    return _summary(store, args.out)


def _collect_generations(args: argparse.Namespace, cfg: Any) -> Any:
    """``--generations``: options that the file decides are refused, the file is checked, then labelled."""
    from thinkctl.models import load_model, model_id
    from thinkctl.traces import CollectConfig, collect_generations, read_generations, task_for_generations

    default = CollectConfig()
    fixed = [opt for opt, value, unset in (("--n", args.n, default.n_problems), ("--seed", args.seed, default.seed),
                                           ("--samples", args.samples, default.samples), ("--level", args.level, None),
                                           ("--max-new-tokens", args.max_new_tokens, default.max_new_tokens))
             if value != unset]
    if fixed:
        raise ValueError(f"{', '.join(fixed)} do not apply with --generations: the file's lines are the problems "
                         "and its texts the generations; drop them")
    if args.ray is not None or args.ray_workers is not None:
        raise ValueError("--ray does not apply with --generations: labelling recorded texts runs in this process "
                         "(on a GPU: --device cuda)")
    task = task_for_generations(args.task)
    source = read_generations(args.generations, task)
    model, tokenizer = load_model(args.model, device=args.device)
    return collect_generations(model, tokenizer, task, source, args.out, cfg, model_name=model_id(model),
                               allow_lossy=args.allow_lossy_texts, progress=not args.no_progress)


def _summary(store: Any, out: str) -> int:
    rows = store.samples()
    acc = sum(r["correct"] for r in rows) / max(1, len(rows))
    n_ck = sum(len(r["checkpoints"]) for r in rows)
    print(f"{len(rows)} samples of {len({r['problem_id'] for r in rows})} problems, {n_ck} checkpoints, "
          f"sample accuracy {acc:.3f} -> {out}")
    return 0
