"""The gym report: does a model behave like a reasoning model in the ways thinkctl depends on?

For each task family, on fresh problems (a seed never used in training) spread evenly over the levels:

1. greedy accuracy per level (easiest >= 0.90, hardest <= 0.40 for the embedded model);
2. single-sample accuracy and majority vote over ``samples`` samples per level (parallel scaling);
3. the answer forced after 25 / 50 / 60 / 75 / 100 % of the natural thinking length (serial scaling), with each
   step of the 25 / 50 / 75 / 100 % curve compared on the same problems (answers gained and lost, exact McNemar
   p-value), which says whether a dip or a rise is more than the draw of the problems;
4. overthinking: on correctly solved problems, how often the answer forced at 60 % is already right;
5. "Wait" appended where the model ends its thinking: does it reason further, and what does that do to accuracy;
   and, per level, the share of greedy traces that re-check by themselves (write ``wait_text`` before closing
   their thinking), which is where overthinking comes from.

Every figure is computed from generations in this run; nothing is assumed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from thinkctl.generation import (ReasoningFormat, chat_prefix, generate_from_prefixes, reasoning_format,
                                 thinking_length)
from thinkctl.tasks import Problem, Task
from thinkctl.stats import wilson_interval
from thinkctl.tasks import get as get_task

__all__ = ["GymConfig", "gym_report", "INSTRUCT_SUFFIX"]

logger = logging.getLogger(__name__)

#: Appended to prompts for instruct models that were not trained on the task's format.
INSTRUCT_SUFFIX = "\nWork it out step by step, then finish with a line of the form 'Final Answer: <number>'."


@dataclass(frozen=True)
class GymConfig:
    """What the gym report measures and how.

    ``seed`` must be a seed never used to train the model (the embedded model trains on seeds >= 10,000,000).
    """

    seed: int = 1000
    n: int = 300                                   # problems per family: at least n, the same number per level
    tasks: tuple[str, ...] = ("arith", "modeq")
    samples: int = 16                              # samples per problem for the vote
    temperature: float = 1.0
    top_p: float = 1.0
    fractions: tuple[float, ...] = (0.25, 0.5, 0.6, 0.75, 1.0)
    overthink_fraction: float = 0.6                # item 4 (overthinking) is read at this fraction
    max_new_tokens: int = 768
    max_answer_tokens: int = 12
    batch_size: int = 64
    prompt_style: str = "native"                   # "native" (the task's prompt) or "instruct" (adds INSTRUCT_SUFFIX)
    wait_text: str = "Wait"
    vote_levels: str = "middle"                   # "middle" (the target's levels, cheaper) or "all"

    def __post_init__(self) -> None:
        if self.n < 1 or self.samples < 1:
            raise ValueError(f"n={self.n} and samples={self.samples} must be at least 1")
        if self.vote_levels not in ("middle", "all"):
            raise ValueError(f"vote_levels={self.vote_levels!r}; use 'middle' or 'all'")
        if self.prompt_style not in ("native", "instruct"):
            raise ValueError(f"prompt_style={self.prompt_style!r}; use 'native' or 'instruct'")
        if self.overthink_fraction not in self.fractions:
            raise ValueError(f"overthink_fraction={self.overthink_fraction} must be one of fractions={self.fractions}")
        if any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions={self.fractions} must lie in [0, 1]")


#: The forced-answer fractions of item 3's curve (serial scaling).
CURVE_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def _acc(flags: Sequence[bool]) -> dict[str, Any]:
    k, n = int(sum(flags)), len(flags)
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n if n else None, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def paired_step(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """How right/wrong flags of the same problems change from one measurement to the next.

    Returns the problems ``gained`` (wrong before, right after) and ``lost``, the change in accuracy, and the exact
    two-sided McNemar p-value: a binomial test of gained against lost among the problems that changed (1.0 when
    none did). A small p says the change is more than the draw of the problems.
    """
    if len(before) != len(after):
        raise ValueError(f"paired flags need the same problems: {len(before)} before, {len(after)} after")
    from scipy.stats import binomtest

    gained = sum(1 for a, b in zip(before, after) if b and not a)
    lost = sum(1 for a, b in zip(before, after) if a and not b)
    p = float(binomtest(gained, gained + lost, 0.5).pvalue) if gained + lost else 1.0
    return {"gained": gained, "lost": lost, "delta": (gained - lost) / len(before) if before else 0.0,
            "mcnemar_p": round(p, 4)}


def _majority(answers: Sequence[str | None]) -> str | None:
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == top)  # ties: earliest sample


def _middle(levels: Sequence[Any]) -> list[Any]:
    """The middle levels: the central two of an even count >= 4, the central three of an odd count >= 5, else the
    central one."""
    levels = list(levels)
    n, mid = len(levels), len(levels) // 2
    if n >= 4 and n % 2 == 0:
        return levels[mid - 1: mid + 1]
    if n >= 5:
        return levels[mid - 1: mid + 2]
    return [levels[mid]]


def _per_level(n: int, levels: Sequence[Any]) -> int:
    """Problems per level so that all levels together hold at least ``n``."""
    return max(1, -(-n // max(1, len(levels))))


def self_rechecked(thinking: Sequence[str], wait_text: str) -> list[bool]:
    """Per thinking text (up to its end marker): whether the model wrote ``wait_text`` there by itself, at the start
    of a line (a re-check it chose, not one budget forcing appended)."""
    return [t.startswith(wait_text) or ("\n" + wait_text) in t for t in thinking]


def _right(task: Task, problem: Problem, answer: str | None) -> bool:
    return answer is not None and task.check_answer(problem, answer)


def _problems(task: Task, cfg: GymConfig) -> list[Problem]:
    levels = task.levels or (None,)
    per = _per_level(cfg.n, levels)
    out: list[Problem] = []
    for level in levels:
        out += task.sample(per, seed=cfg.seed, level=level)
    return out


def _family_report(model: Any, tokenizer: Any, fmt: ReasoningFormat, task: Task, cfg: GymConfig,
                   tick: Callable[[int], None]) -> dict[str, Any]:
    problems = _problems(task, cfg)
    suffix = INSTRUCT_SUFFIX if cfg.prompt_style == "instruct" else ""
    prefixes = [chat_prefix(tokenizer, p.prompt + suffix) for p in problems]
    gen_kw: dict[str, Any] = dict(pad_id=fmt.pad_id, eos_ids=fmt.eos_ids, batch_size=cfg.batch_size,
                                  progress=tick)

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=False)

    # 1. greedy
    greedy = generate_from_prefixes(model, prefixes, max_new_tokens=cfg.max_new_tokens, **gen_kw)
    greedy_text = [decode(g) for g in greedy]
    greedy_ok = [task.is_correct(p, t) for p, t in zip(problems, greedy_text)]
    think = [thinking_length(fmt, tokenizer, g) for g in greedy]
    greedy_thinking = [decode(g[:n]) for g, (n, _) in zip(greedy, think)]
    rechecked = self_rechecked(greedy_thinking, cfg.wait_text)

    # 2. sampling and the vote (on the middle levels only unless vote_levels="all")
    all_levels = sorted({p.level for p in problems}, key=lambda v: (v is None, v))
    voted_levels = set(all_levels if cfg.vote_levels == "all" else _middle(all_levels))
    voted = [i for i, p in enumerate(problems) if p.level in voted_levels]
    rep = [prefixes[i] for i in voted for _ in range(cfg.samples)]
    sampled = generate_from_prefixes(model, rep, max_new_tokens=cfg.max_new_tokens, do_sample=True,
                                     temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, **gen_kw)
    sample_answers: dict[int, list[str | None]] = {
        i: [task.extract_answer(decode(s)) for s in sampled[k * cfg.samples:(k + 1) * cfg.samples]]
        for k, i in enumerate(voted)}

    # 3-4. forced answers at fractions of the natural thinking length
    forced_ok: dict[float, list[bool]] = {}
    for f in cfg.fractions:
        fp = [pref + g[: int(f * n_think)] + list(fmt.force_answer_ids)
              for pref, g, (n_think, _) in zip(prefixes, greedy, think)]
        outs = generate_from_prefixes(model, fp, max_new_tokens=cfg.max_answer_tokens, **gen_kw)
        prefix_text = tokenizer.decode(list(fmt.force_answer_ids), skip_special_tokens=False)
        forced_ok[f] = [task.is_correct(p, prefix_text + decode(o)) for p, o in zip(problems, outs)]

    # 5. "Wait" where the model ends its thinking
    wait_ids = tokenizer(("\n" if not fmt.thinks_in_markers else "") + cfg.wait_text,
                         add_special_tokens=False)["input_ids"]
    wp = [pref + g[:n_think] + wait_ids for pref, g, (n_think, _) in zip(prefixes, greedy, think)]
    waited = generate_from_prefixes(model, wp, max_new_tokens=cfg.max_new_tokens, **gen_kw)
    wait_text = tokenizer.decode(wait_ids, skip_special_tokens=False)
    waited_full = [th + wait_text + decode(w) for th, w in zip(greedy_thinking, waited)]
    wait_ok = [task.is_correct(p, t) for p, t in zip(problems, waited_full)]
    wait_extra = [thinking_length(fmt, tokenizer, w)[0] for w in waited]
    wait_changed = [task.extract_answer(a) != task.extract_answer(b) for a, b in zip(greedy_text, waited_full)]
    wait_checks = ["ok" in decode(w[:n]) or "no" in decode(w[:n]) for w, n in zip(waited, wait_extra)]

    levels = all_levels
    by_level: dict[str, Any] = {}
    for lvl in levels:
        idx = [i for i, p in enumerate(problems) if p.level == lvl]
        by_level[str(lvl)] = {"greedy": _acc([greedy_ok[i] for i in idx])}
        if lvl in voted_levels:
            by_level[str(lvl)]["single_sample"] = _acc([_right(task, problems[i], a)
                                                        for i in idx for a in sample_answers[i]])
            by_level[str(lvl)][f"majority@{cfg.samples}"] = _acc(
                [_right(task, problems[i], _majority(sample_answers[i])) for i in idx])
        by_level[str(lvl)].update({
            "forced": {str(f): _acc([forced_ok[f][i] for i in idx]) for f in cfg.fractions},
            "thinking_tokens_mean": float(np.mean([think[i][0] for i in idx])),
            "thinking_closed": float(np.mean([think[i][1] for i in idx])),
            "self_rechecked": float(np.mean([rechecked[i] for i in idx])),
        })
    correct_idx = [i for i, ok in enumerate(greedy_ok) if ok]
    early = [forced_ok[cfg.overthink_fraction][i] for i in correct_idx]
    curve_fractions = [f for f in CURVE_FRACTIONS if f in forced_ok]
    return {
        "n_problems": len(problems),
        "levels": [str(v) for v in levels],
        "greedy": _acc(greedy_ok),
        "by_level": by_level,
        "forced": {str(f): _acc(v) for f, v in forced_ok.items()},
        "forced_steps": {f"{a}->{b}": paired_step(forced_ok[a], forced_ok[b])
                         for a, b in zip(curve_fractions, curve_fractions[1:])},
        "overthinking": {
            "fraction": cfg.overthink_fraction,
            "early_right_among_correct": _acc(early),
        },
        "wait": {
            "accuracy_before": _acc(greedy_ok)["accuracy"],
            "accuracy_after": _acc(wait_ok)["accuracy"],
            "delta": (sum(wait_ok) - sum(greedy_ok)) / len(problems),
            "fixed": sum(1 for a, b in zip(greedy_ok, wait_ok) if b and not a),
            "broken": sum(1 for a, b in zip(greedy_ok, wait_ok) if a and not b),
            "extra_thinking_tokens_mean": float(np.mean(wait_extra)),
            "continued_with_check_lines": float(np.mean(wait_checks)),
            "answer_changed": float(np.mean(wait_changed)),
        },
        "examples": [{"prompt": problems[i].prompt, "answer": problems[i].answer, "greedy": greedy_text[i]}
                     for i in range(0, len(problems), max(1, len(problems) // 4))][:4],
    }


def _targets(fam: dict[str, Any], samples: int) -> dict[str, Any]:
    levels = fam["levels"]
    easiest, hardest = fam["by_level"][levels[0]], fam["by_level"][levels[-1]]
    mid = _middle(levels)
    by = fam["by_level"]
    gains = {lvl: by[lvl][f"majority@{samples}"]["accuracy"] - by[lvl]["single_sample"]["accuracy"] for lvl in mid}
    f = fam["forced"]
    curve = [f[str(k)]["accuracy"] for k in CURVE_FRACTIONS if str(k) in f]
    return {
        "1_easiest_greedy_ge_0.90": {"value": easiest["greedy"]["accuracy"],
                                     "met": easiest["greedy"]["accuracy"] >= 0.90},
        "1_hardest_greedy_le_0.40": {"value": hardest["greedy"]["accuracy"],
                                     "met": hardest["greedy"]["accuracy"] <= 0.40},
        "2_vote_gain_middle_levels_ge_0.05": {"levels": mid, "gains": gains,
                                              "met": all(g >= 0.05 for g in gains.values())},
        "3_forced_accuracy_rises": {"curve_25_50_75_100": curve,
                                    "steps_gained_lost_p": {k: [v["gained"], v["lost"], v["mcnemar_p"]]
                                                            for k, v in fam["forced_steps"].items()},
                                    "met": all(b >= a for a, b in zip(curve, curve[1:])) and curve[-1] > curve[0]},
        "4_overthinking_ge_0.30": {"value": fam["overthinking"]["early_right_among_correct"]["accuracy"],
                                   "met": (fam["overthinking"]["early_right_among_correct"]["accuracy"] or 0) >= 0.30},
        "5_wait_effect": {"delta_accuracy": fam["wait"]["delta"],
                          "extra_thinking_tokens_mean": fam["wait"]["extra_thinking_tokens_mean"],
                          "met": fam["wait"]["extra_thinking_tokens_mean"] > 0},
    }


def gym_report(model: Any, tokenizer: Any, cfg: GymConfig = GymConfig(), *, model_name: str = "embedded",
               progress: bool = True) -> dict[str, Any]:
    """Run the gym on ``model`` and return the report (JSON-ready)."""
    from tqdm.auto import tqdm

    fmt = reasoning_format(tokenizer)
    tasks = [get_task(t) for t in cfg.tasks]
    total = 0
    for t in tasks:
        levels: list[int | None] = list(t.levels) or [None]
        voted = len(levels) if cfg.vote_levels == "all" else len(_middle(levels))
        per = _per_level(cfg.n, levels)
        total += per * (len(levels) * (2 + len(cfg.fractions)) + voted * cfg.samples)
    families: dict[str, Any] = {}
    with tqdm(total=total, disable=not progress, desc="gym-report", unit="gen") as bar:
        for task in tasks:
            fam = _family_report(model, tokenizer, fmt, task, cfg, bar.update)
            fam["targets"] = _targets(fam, cfg.samples)
            families[task.name] = fam
    return {"model": model_name, "config": asdict(cfg), "families": families}


