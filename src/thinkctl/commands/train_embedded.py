"""``thinkctl train-embedded``: train the embedded reasoning model from a seed (see :mod:`thinkctl.embedded.train`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from thinkctl.commands._common import add_device_argument, add_progress_argument, check_output_dir

if TYPE_CHECKING:
    from thinkctl.embedded.train import TrainConfig

NAME = "train-embedded"
HELP = "train the small embedded reasoning model on the built-in tasks (CPU, under an hour)"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="checkpoint folder to write (resumes if it holds a partial run)")
    add_recipe_arguments(p)
    add_progress_argument(p)


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The options that make up a training recipe (shared with ``benchmarks/bench_train.py``)."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: TrainConfig.steps)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per optimizer step (default: TrainConfig.batch_size)")
    p.add_argument("--problems", type=int, default=None, help="training problems (default: TrainConfig.n_problems)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap (default: TrainConfig.max_minutes)")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="continue from a finished checkpoint (second stage; use a new --seed for fresh problems)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: TrainConfig.lr)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: TrainConfig.warmup_steps)")
    add_device_argument(p, "; the 60-minute budget and the committed checkpoint are CPU runs (numerics differ "
                           "slightly across devices)")
    p.add_argument("--p-check", type=float, default=None,
                   help="share of clean training traces that re-check their work after \"Wait\" "
                        "(default: TraceStyle.p_check)")
    p.add_argument("--p-slip", type=float, default=None,
                   help="share of training traces with one wrong forward step that the re-check repairs "
                        "(default: TraceStyle.p_slip)")
    p.add_argument("--split-checks", action="store_true",
                   help="re-check arith steps by splitting an operand (the check computes numbers not on the page)")
    p.add_argument("--mask-slips", action="store_true",
                   help="keep the deliberately wrong results of slipped traces out of the loss")
    p.add_argument("--answer-cut-share", type=float, default=None,
                   help="share of arith's forced examples cut just after the '=' of the last forward step, the "
                        "answer one operation away (default: TrainConfig.answer_cut_share)")
    p.add_argument("--family", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                   help="override the trace style or slip masking for one family, e.g. "
                        "'modeq:p_slip=0.15,mask_slips=false' (repeatable; keys: TraceStyle fields, mask_slips)")
    p.add_argument("--no-compile", action="store_true",
                   help="train eagerly instead of through torch.compile (slower steps: a compiled one cost 0.65-0.86 "
                        "of an eager one here; no C++ compiler needed)")
    p.add_argument("--tiny", action="store_true", help="a tiny model and data set, for smoke tests")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from thinkctl.embedded.train import train

    out = train(args.out, config_from_args(args), progress=not args.no_progress, device=args.device)
    print(f"wrote {out}")
    return 0


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the recipe options describe."""
    from thinkctl.embedded.train import ModelShape, TrainConfig

    cfg = TrainConfig(seed=args.seed)
    if args.tiny:
        cfg = replace(cfg, compile=False, n_problems=240, steps=4, batch_size=8, warmup_steps=2, vocab_size=300,
                      shape=ModelShape(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2))
    if args.no_compile:
        cfg = replace(cfg, compile=False)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.batch_size is not None:
        cfg = replace(cfg, batch_size=args.batch_size)
    if args.problems is not None:
        cfg = replace(cfg, n_problems=args.problems)
    if args.init_from is not None:
        cfg = replace(cfg, init_from=args.init_from)
    if args.warmup is not None:
        cfg = replace(cfg, warmup_steps=args.warmup)
    if args.lr is not None:
        cfg = replace(cfg, lr=args.lr)
    if args.minutes is not None:
        cfg = replace(cfg, max_minutes=args.minutes)
    if args.split_checks:
        cfg = replace(cfg, style=replace(cfg.style, split_checks=True))
    if args.mask_slips:
        cfg = replace(cfg, mask_slips=True)
    if args.answer_cut_share is not None:
        cfg = replace(cfg, answer_cut_share=args.answer_cut_share)
    if args.p_check is not None:
        cfg = replace(cfg, style=replace(cfg.style, p_check=args.p_check))
    if args.p_slip is not None:
        cfg = replace(cfg, style=replace(cfg.style, p_slip=args.p_slip))
    if args.family:
        cfg = replace(cfg, family_overrides=parse_family_overrides(args.family))
    return cfg


def parse_family_overrides(specs: list[str]) -> dict[str, dict[str, float | bool]]:
    """``["modeq:p_slip=0.15,mask_slips=false"]`` -> ``{"modeq": {"p_slip": 0.15, "mask_slips": False}}``."""
    out: dict[str, dict[str, float | bool]] = {}
    for spec in specs:
        family, sep, body = spec.partition(":")
        if not sep or not family or not body:
            raise ValueError(f"--family {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE], e.g. modeq:p_slip=0.15")
        changes = out.setdefault(family.strip(), {})
        for item in body.split(","):
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not key:
                raise ValueError(f"--family {spec!r}: {item!r} is not KEY=VALUE")
            if value.lower() in ("true", "false"):
                changes[key] = value.lower() == "true"
            else:
                try:
                    changes[key] = float(value)
                except ValueError:
                    raise ValueError(f"--family {spec!r}: {key}={value!r} is neither a number nor true/false") from None
    return out
