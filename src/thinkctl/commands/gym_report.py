"""``thinkctl gym-report``: check that a model behaves like a reasoning model (see :mod:`thinkctl.embedded.gym`)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from thinkctl.commands._common import (add_device_argument, add_model_argument, add_progress_argument,
                                      check_output_file, write_json)

NAME = "gym-report"
HELP = "measure greedy/vote/forced-budget/'Wait' behaviour of a model on the built-in tasks"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--seed", type=int, default=1000, help="problem seed (never one used in training)")
    p.add_argument("--n", type=int, default=300,
                   help="problems per task family (at least; the same number at every level)")
    p.add_argument("--samples", type=int, default=16, help="samples per problem for the majority vote")
    p.add_argument("--vote-levels", choices=["middle", "all"], default="middle",
                   help="levels on which to sample for the vote (the target reads the middle levels)")
    p.add_argument("--tasks", default="arith,modeq", help="comma-separated task families")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation cap (default 768 for the embedded model or a train-embedded checkpoint, 384 "
                        "otherwise)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--prompt-style", choices=["auto", "native", "instruct"], default="auto",
                   help="'instruct' adds an answer-format instruction for models not trained on the tasks; 'auto': "
                        "'native' for the embedded model or a train-embedded checkpoint folder, else 'instruct'")
    add_device_argument(p)
    p.add_argument("--json", required=True, metavar="OUT", help="write the report here")
    add_progress_argument(p)


def is_embedded_kind(spec: str) -> bool:
    """Whether ``spec`` names a model trained by ``thinkctl train-embedded`` on the tasks' own prompts: the embedded
    model, or a checkpoint folder that train-embedded wrote (it holds ``thinkctl_embedded.json``). Such a model gets
    the tasks' native prompts; any other model gets prompts with an answer-format instruction."""
    from thinkctl.embedded import METADATA_FILE
    from thinkctl.models import EMBEDDED_SPECS

    return spec in EMBEDDED_SPECS or (Path(spec) / METADATA_FILE).is_file()


def run(args: argparse.Namespace) -> int:
    check_output_file(args.json, "--json")
    from thinkctl.embedded.gym import GymConfig, gym_report
    from thinkctl.models import load_model

    trained_here = is_embedded_kind(args.model)
    style = args.prompt_style
    if style == "auto":
        style = "native" if trained_here else "instruct"
    max_new = args.max_new_tokens or (768 if trained_here else 384)
    cfg = replace(GymConfig(), seed=args.seed, n=args.n, samples=args.samples,
                  tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
                  temperature=args.temperature, max_new_tokens=max_new, batch_size=args.batch_size,
                  prompt_style=style, vote_levels=args.vote_levels)
    t0 = time.time()
    model, tokenizer = load_model(args.model, device=args.device)
    report = gym_report(model, tokenizer, cfg, model_name=args.model, progress=not args.no_progress)
    report["wall_seconds"] = round(time.time() - t0, 1)
    write_json(args.json, report)
    for name, fam in report["families"].items():
        lv = fam["by_level"]
        print(f"{name}: greedy by level " + ", ".join(f"L{k}={v['greedy']['accuracy']:.2f}" for k, v in lv.items()))
        print("  greedy traces that re-check by themselves: "
              + ", ".join(f"L{k}={v['self_rechecked']:.2f}" for k, v in lv.items()))
        for tname, t in fam["targets"].items():
            shown = {k: v for k, v in t.items() if k != "met"}
            print(f"  {'MET ' if t['met'] else 'MISS'} {tname}: {shown}")
    print(f"wrote {args.json}")
    return 0
