"""Collect labelled reasoning traces from a model on a task.

For each problem, ``samples`` generations (the first greedy, the rest sampled); then, in one teacher-forced
forward pass over each finished generation, the hidden states of the chosen layers at the prompt's last token
and at every checkpoint (every ``every`` thinking tokens, and the end of thinking), and per-token confidence; then,
at every checkpoint, the answer the model gives when forced to answer there (with the tokens that probe cost) and
whether it is right. Shards of ``shard_problems`` problems are committed atomically to a :class:`TraceStore`.

Recording states after generation, in one forward pass, costs far less than tapping every decoding step, and
gives exactly the same states (the forward pass is causal). It also means that generation and labelling are two
steps (:func:`generate_shard`, :func:`label_shard`): :func:`collect_generations` labels texts that another generator
wrote (a serving engine, files on disk; see :mod:`thinkctl.traces.generations`) with the same code, into the same
store.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from thinkctl import __version__
from thinkctl.generation import (chat_prefix, check_context, generate_from_prefixes, model_context_length,
                                 reasoning_format, thinking_length)
from thinkctl.models import model_num_layers, model_stamp
from thinkctl.seeds import torch_seed
from thinkctl.tasks import Problem, Task
from thinkctl.traces.generations import GenerationsFile, tokenize_generations
from thinkctl.traces.store import TraceStore

__all__ = ["CollectConfig", "collect", "collect_generations", "collect_shard", "generate_shard", "label_shard",
           "checkpoint_positions", "shard_seed", "store_header", "token_confidence"]

logger = logging.getLogger(__name__)


#: ``CollectConfig.checkpoints`` values: checkpoints on every sample, or on the greedy sample only.
CHECKPOINT_SAMPLES = ("all", "greedy")


@dataclass(frozen=True)
class CollectConfig:
    """How traces are collected. The store records it; resuming requires the same config.

    ``every``: a checkpoint every this many thinking tokens (and one at the end of thinking).
    ``confidence_top_k`` / ``confidence_window``: DeepConf token confidence (Fu et al. 2025, "Deep Think with
    Confidence": negative mean log-probability of the top-k tokens) and the window of its running group mean.
    ``checkpoints``: which samples get checkpoints (states and forced answers): ``"all"``, or ``"greedy"`` -- the
    sampled generations then record only their final answer and length, which is all that routing and vote
    estimates read, at about a third of the cost (forcing an answer at every checkpoint is most of a sample's).
    """

    task: str = "arith"
    n_problems: int = 240
    seed: int = 2000
    level: int | None = None
    samples: int = 4
    temperature: float = 1.0
    every: int = 16
    layers: tuple[int, ...] | str = "all"
    max_new_tokens: int = 768
    max_answer_tokens: int = 12
    batch_size: int = 64
    forward_batch_size: int = 16
    shard_problems: int = 24
    prompt_suffix: str = ""
    confidence_top_k: int = 5
    confidence_window: int = 16
    checkpoints: str = "all"

    def __post_init__(self) -> None:
        for name in ("n_problems", "samples", "every", "max_new_tokens", "max_answer_tokens", "batch_size",
                     "forward_batch_size", "shard_problems", "confidence_top_k", "confidence_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if isinstance(self.layers, str) and self.layers != "all":
            raise ValueError(f"layers={self.layers!r}; use 'all' or a tuple of layer indices")
        if self.checkpoints not in CHECKPOINT_SAMPLES:
            raise ValueError(f"checkpoints={self.checkpoints!r} is not one of {CHECKPOINT_SAMPLES}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (sample 0 is always greedy)")


def resolve_layers(layers: tuple[int, ...] | str, n_layers: int) -> list[int]:
    """Non-negative decoder-layer indices for ``layers`` ("all", or indices; negatives count from the end)."""
    if layers == "all":
        return list(range(n_layers))
    out = []
    for layer in layers:
        if not -n_layers <= int(layer) < n_layers:
            raise ValueError(f"layer={layer} is out of range for a model with {n_layers} layers; "
                             f"use 0..{n_layers - 1} or negative indices")
        out.append(int(layer) % n_layers)
    return sorted(set(out))


def token_confidence(logits: torch.Tensor, tokens: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Per-token statistics of generated ``tokens`` (T,) from the logits that produced them (T, V)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    top = logp.topk(min(top_k, logp.shape[-1]), dim=-1).values
    return {
        "conf": -top.mean(-1),                                     # DeepConf token confidence
        "logprob": logp.gather(-1, tokens[:, None]).squeeze(-1),   # chosen token
        "entropy": -(logp.exp() * logp).sum(-1),
    }


def _checkpoint_stats(stats: dict[str, torch.Tensor], k: int, window: int) -> dict[str, float]:
    conf, lp, ent = stats["conf"][:k], stats["logprob"][:k], stats["entropy"][:k]
    if k == 0:
        return {"conf_window": 0.0, "conf_min_window": 0.0, "logprob_mean": 0.0, "logprob_window": 0.0,
                "entropy_window": 0.0}
    w = min(window, k)
    group = conf.unfold(0, w, 1).mean(-1) if k >= w else conf.mean()[None]
    return {
        "conf_window": float(conf[-w:].mean()),
        "conf_min_window": float(group.min()),
        "logprob_mean": float(lp.mean()),
        "logprob_window": float(lp[-w:].mean()),
        "entropy_window": float(ent[-w:].mean()),
    }


def shard_seed(cfg: CollectConfig, shard: int) -> int:
    """The sampling seed of shard ``shard``: distinct per shard, and the same whichever process collects it."""
    return torch_seed(cfg.seed * 100_003 + shard)


def store_header(cfg: CollectConfig, layers: list[int], stamp: dict[str, Any],
                 problems: Sequence[Problem]) -> dict[str, Any]:
    """The config a store records (and checks on resuming): the collection settings, the resolved layers, the
    model's stamp (:func:`thinkctl.models.model_stamp`) and the problem ids, in order."""
    return {"collect": asdict(cfg), "layers_resolved": list(layers), "thinkctl_version": __version__,
            "model": dict(stamp), "problem_ids": [p.id for p in problems]}


@torch.no_grad()
def _forward_states(model: Any, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                    layers: list[int], batch_size: int, pad_id: int) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Hidden states at the given positions (per sequence: (n_pos, n_layers, H) float16) and the logits of every
    position (per sequence: (len, V)), from teacher-forced forward passes (right padding, causal)."""
    states: list[np.ndarray] = [np.empty(0)] * len(seqs)
    logits_out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        width = max(len(seqs[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(seqs[i])] = torch.tensor(list(seqs[i]), dtype=torch.long)
            mask[r, :len(seqs[i])] = 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        hs = out.hidden_states  # embeddings + one per layer, each (B, T, H)
        for r, i in enumerate(rows):
            pos = torch.tensor(list(positions[i]), dtype=torch.long, device=device)
            stacked = torch.stack([hs[layer + 1][r, pos] for layer in layers], dim=1)  # (n_pos, n_layers, H)
            states[i] = stacked.to(torch.float16).cpu().numpy()
            logits_out[i] = out.logits[r, :len(seqs[i])].float().cpu()
    return states, logits_out


def _room(model: Any, fmt: Any, prefix_tokens: int, cfg: CollectConfig) -> int:
    """Tokens a generation after a prefix of ``prefix_tokens`` may take: ``max_new_tokens``, or less where the
    model's context must also hold the answer forced at its end (marker and ``max_answer_tokens``)."""
    ctx = model_context_length(model)
    if ctx is None:
        return cfg.max_new_tokens
    return min(cfg.max_new_tokens, ctx - prefix_tokens - len(fmt.force_answer_ids) - cfg.max_answer_tokens)


def _check_fits_context(model: Any, tokenizer: Any, fmt: Any, problems: Sequence[Problem],
                        cfg: CollectConfig) -> None:
    """Before any work: refuse prompts that leave no room to think and answer within the model's context; warn
    when ``max_new_tokens`` will be cut so that the answer forced at the end of a long generation still fits."""
    ctx = model_context_length(model)
    if not problems or ctx is None:
        return
    longest = max(len(chat_prefix(tokenizer, p.prompt + cfg.prompt_suffix)) for p in problems)
    if cfg.max_new_tokens > ctx:  # a cap beyond the context itself is a mistake, not something to cut silently
        check_context(model, longest, cfg.max_new_tokens, cap_name="max_new_tokens")
    room = _room(model, fmt, longest, cfg)
    if room < 1:
        raise ValueError(f"the longest prompt takes {longest} tokens: with the answer forced at a checkpoint "
                         f"({len(fmt.force_answer_ids)} marker tokens + max_answer_tokens={cfg.max_answer_tokens}) it "
                         f"leaves no room to think within the model's context of {model_context_length(model)}; "
                         "shorten the prompts")
    if room < cfg.max_new_tokens:
        logger.warning("max_new_tokens=%d: generations after the longest prompt are cut at %d tokens, so that the "
                       "answer forced at their end fits the model's context of %d", cfg.max_new_tokens, room,
                       model_context_length(model))


def collect(model: Any, tokenizer: Any, task: Task, problems: Sequence[Problem], out_dir: str,
            cfg: CollectConfig = CollectConfig(), *, model_name: str = "model", progress: bool = True) -> TraceStore:
    """Collect traces of ``problems`` into the store at ``out_dir`` (resuming one that exists)."""

    fmt = reasoning_format(tokenizer)
    n_layers = model_num_layers(model)
    layers = resolve_layers(cfg.layers, n_layers)
    _check_fits_context(model, tokenizer, fmt, problems, cfg)
    store = TraceStore(out_dir)
    store.init(store_header(cfg, layers, model_stamp(model, model_name), problems))

    def shard_of(shard: int, lo: int, hi: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        return collect_shard(model, tokenizer, fmt, task, list(problems[lo:hi]), cfg, layers,
                             seed=shard_seed(cfg, shard))

    return _write_shards(store, len(problems), cfg.shard_problems, shard_of, f"collect {task.name}", progress)


def _write_shards(store: TraceStore, n_problems: int, shard_problems: int,
                  shard_of: Callable[[int, int, int], tuple[dict[str, np.ndarray], list[dict[str, Any]]]],
                  desc: str, progress: bool) -> TraceStore:
    """Compute and commit every shard the store lacks (``shard_of(shard, lo, hi)`` for problems ``lo:hi``), with a
    progress bar; shards already committed are skipped (resumption)."""
    from tqdm.auto import tqdm

    n_shards = math.ceil(n_problems / shard_problems)
    todo = [i for i in range(n_shards) if not store.has_shard(i)]
    if len(todo) < n_shards:
        logger.info("resuming %s: %d of %d shards already collected", store.path, n_shards - len(todo), n_shards)
    bar = tqdm(total=n_problems, initial=(n_shards - len(todo)) * shard_problems, disable=not progress, desc=desc,
               unit="problem")
    for shard in todo:
        lo, hi = shard * shard_problems, min((shard + 1) * shard_problems, n_problems)
        tensors, rows = shard_of(shard, lo, hi)
        store.write_shard(shard, tensors, rows)
        bar.update(hi - lo)
    bar.close()
    return store


def collect_generations(model: Any, tokenizer: Any, task: Task, source: GenerationsFile, out_dir: str,
                        cfg: CollectConfig = CollectConfig(), *, model_name: str = "model", allow_lossy: bool = False,
                        progress: bool = True) -> TraceStore:
    """Collect traces of recorded generations into the store at ``out_dir`` (resuming one that exists).

    The same store as :func:`collect`, from texts some other generator wrote (a serving engine, files on disk):
    each text is tokenized as the continuation of its prompt's chat prefix (:func:`tokenize_generations`) and
    labelled by the same code as live collection (:func:`label_shard`). The whole file is checked -- tokenizer
    round trip, the model's context -- before the store folder is created.

    Parameters
    ----------
    model, tokenizer
        The model whose states and forced answers are recorded (the one that wrote the texts, ideally).
    task : Task
        Extracts and checks answers (:func:`thinkctl.traces.generations.task_for_generations`).
    source : GenerationsFile
        The checked file (:func:`thinkctl.traces.generations.read_generations`); its records are the problems,
        in file order, the first generation of each the greedy one.
    out_dir : str
        The store folder; resuming it needs the same file (its SHA-256 is recorded) and the same settings.
    cfg : CollectConfig
        ``every``, ``layers``, ``checkpoints``, ``max_answer_tokens``, ``prompt_suffix``, the confidence settings,
        the batch sizes and ``shard_problems`` apply as in :func:`collect`; ``task`` is set from ``task``,
        ``n_problems``, ``samples`` (the most generations of a line) and ``max_new_tokens`` (the longest
        generation in tokens) from the file; ``temperature`` is recorded as the one the sampled generations were
        drawn at; ``seed`` and ``level`` are not used.
    allow_lossy : bool, default=False
        Keep texts that do not round-trip through the tokenizer (with a warning); by default they are an error.

    Examples
    --------
    >>> from thinkctl.traces.generations import read_generations, task_for_generations  # doctest: +SKIP
    >>> task = task_for_generations("gold")                                              # doctest: +SKIP
    >>> store = collect_generations(model, tokenizer, task, read_generations("gens.jsonl", task),
    ...                             "traces/", CollectConfig(every=32))                  # doctest: +SKIP
    """

    if cfg.level is not None:
        raise ValueError(f"level={cfg.level} does not apply to recorded generations (their levels come from the file);"
                         " use level=None")
    fmt = reasoning_format(tokenizer)
    layers = resolve_layers(cfg.layers, model_num_layers(model))
    tokenized = tokenize_generations(source, tokenizer, fmt, prompt_suffix=cfg.prompt_suffix,
                                     context_length=model_context_length(model),
                                     forced_tokens=len(fmt.force_answer_ids) + cfg.max_answer_tokens,
                                     checkpoints=cfg.checkpoints, allow_lossy=allow_lossy)
    problems = source.problems
    cfg = replace(cfg, task=task.name, n_problems=len(problems), samples=max(len(r.texts) for r in source.records),
                  max_new_tokens=max(1, tokenized.longest))
    header = store_header(cfg, layers, model_stamp(model, model_name), problems)
    header["generations"] = {"sha256": source.sha256, "problems": len(problems), "texts": source.n_texts,
                             "lossy_texts": len(tokenized.lossy)}
    _check_resumed_source(Path(out_dir), source)
    store = TraceStore(out_dir)
    store.init(header)

    def shard_of(shard: int, lo: int, hi: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        return label_shard(model, tokenizer, fmt, task, problems[lo:hi], tokenized.ids[lo:hi], cfg, layers)

    return _write_shards(store, len(problems), cfg.shard_problems, shard_of, f"label {source.path.name}", progress)


def _check_resumed_source(out: Path, source: GenerationsFile) -> None:
    """Refuse to resume a store with another generations file (or one collected live)."""
    if not (out / "config.json").is_file():
        return
    recorded = TraceStore(out).config.get("generations")
    if recorded is None:
        raise ValueError(f"trace store {out} was collected live (not from a generations file); write the traces of "
                         f"{source.path} to a new folder")
    if recorded.get("sha256") != source.sha256:
        raise ValueError(f"trace store {out} was collected from another generations file (sha256 "
                         f"{str(recorded.get('sha256'))[:12]}..., this one is {source.sha256[:12]}...); resume it "
                         "with the same file, or write to a new folder")


def collect_shard(model: Any, tokenizer: Any, fmt: Any, task: Task, problems: list[Problem], cfg: CollectConfig,
                  layers: list[int], seed: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The tensors and rows of one shard of ``problems`` (``fmt``: the model's reasoning format; ``seed``: the
    shard's sampling seed, :func:`shard_seed`), ready for :meth:`TraceStore.write_shard`: the model's
    generations (:func:`generate_shard`) labelled by :func:`label_shard`."""
    generations = generate_shard(model, tokenizer, fmt, problems, cfg, seed=seed)
    return label_shard(model, tokenizer, fmt, task, problems, generations, cfg, layers)


def generate_shard(model: Any, tokenizer: Any, fmt: Any, problems: Sequence[Problem], cfg: CollectConfig,
                   seed: int) -> list[list[list[int]]]:
    """``cfg.samples`` generations per problem, as new token ids after the prompt's chat prefix: per problem, the
    greedy generation first, then ``cfg.samples - 1`` sampled at ``cfg.temperature`` (reproducible from
    ``seed``). Each is cut after its first end-of-sequence token, which it keeps."""
    gen_kw = dict(pad_id=fmt.pad_id, eos_ids=fmt.eos_ids, batch_size=cfg.batch_size)
    prefixes = [chat_prefix(tokenizer, p.prompt + cfg.prompt_suffix) for p in problems]
    limit = _room(model, fmt, max(len(x) for x in prefixes), cfg)  # max_new_tokens unless the context is short
    greedy = generate_from_prefixes(model, prefixes, max_new_tokens=limit, **gen_kw)
    sampled: list[list[int]] = []
    if cfg.samples > 1:
        rep = [pref for pref in prefixes for _ in range(cfg.samples - 1)]
        sampled = generate_from_prefixes(model, rep, max_new_tokens=limit, do_sample=True,
                                         temperature=cfg.temperature, seed=seed, **gen_kw)
    # sample j of problem i: j == 0 greedy, else sampled[i * (samples - 1) + j - 1]
    return [[greedy[i]] + sampled[i * (cfg.samples - 1):(i + 1) * (cfg.samples - 1)] for i in range(len(problems))]


def checkpoint_positions(fmt: Any, tokenizer: Any, generated: Sequence[int], cfg: CollectConfig,
                         greedy: bool) -> tuple[int, bool, list[int]]:
    """Thinking length of one generation, whether thinking was closed, and its checkpoints (thinking tokens read):
    every ``cfg.every`` thinking tokens and the end of thinking; none on a sampled generation when
    ``cfg.checkpoints == "greedy"``."""
    n_think, closed = thinking_length(fmt, tokenizer, generated)
    ks = list(range(cfg.every, n_think, cfg.every)) + [n_think]
    if not greedy and cfg.checkpoints == "greedy":
        ks = []
    return n_think, closed, ks


def label_shard(model: Any, tokenizer: Any, fmt: Any, task: Task, problems: Sequence[Problem],
                generations: Sequence[Sequence[Sequence[int]]], cfg: CollectConfig,
                layers: list[int]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Label given generations: the tensors and rows of one shard, ready for :meth:`TraceStore.write_shard`.

    ``generations[i]`` are the generations of ``problems[i]`` as token ids that continue the chat prefix of its
    prompt (``chat_prefix(tokenizer, prompt + cfg.prompt_suffix)``), the greedy one first. One teacher-forced pass
    records the hidden states of ``layers`` at the prompt's last token and at every checkpoint
    (:func:`checkpoint_positions`) and per-token confidence; then the answer forced at every checkpoint is
    generated and checked. Whoever produced the generations -- :func:`generate_shard`, or a serving engine whose
    texts were tokenized -- the labels are computed the same way.
    """
    if len(generations) != len(problems):
        raise ValueError(f"got generations for {len(generations)} problems but {len(problems)} problems")
    gen_kw = dict(pad_id=fmt.pad_id, eos_ids=fmt.eos_ids, batch_size=cfg.batch_size)
    prefixes = [chat_prefix(tokenizer, p.prompt + cfg.prompt_suffix) for p in problems]
    items = []
    for i in range(len(problems)):
        for j, generated in enumerate(generations[i]):
            gen = [int(t) for t in generated]
            n_think, closed, ks = checkpoint_positions(fmt, tokenizer, gen, cfg, greedy=j == 0)
            items.append((i, j, gen, n_think, closed, ks))
    seqs = [prefixes[i] + gen for i, _, gen, _, _, _ in items]
    positions = [[len(prefixes[i]) - 1] + [len(prefixes[i]) + k - 1 for k in ks] for i, _, _, _, _, ks in items]
    states, logits = _forward_states(model, seqs, positions, layers, cfg.forward_batch_size, fmt.pad_id)

    # forced answers at every checkpoint
    forced_prefixes = [prefixes[i] + gen[:k] + list(fmt.force_answer_ids)
                       for i, _, gen, _, _, ks in items for k in ks]
    forced = generate_from_prefixes(model, forced_prefixes, max_new_tokens=cfg.max_answer_tokens, **gen_kw)
    force_text = tokenizer.decode(list(fmt.force_answer_ids), skip_special_tokens=False)

    prompt_hidden: list[torch.Tensor] = []
    ckpt_hidden: list[torch.Tensor] = []
    rows: list[dict] = []
    f_iter = iter(forced)
    for (i, j, gen, n_think, closed, ks), st, lg in zip(items, states, logits):
        p = problems[i]
        n_pre = len(prefixes[i])
        gen_t = torch.tensor(gen, dtype=torch.long)
        stats = token_confidence(lg[n_pre - 1:n_pre - 1 + len(gen)], gen_t, cfg.confidence_top_k) if gen else None
        text = tokenizer.decode(gen, skip_special_tokens=False)
        answer = task.extract_answer(text)
        checkpoints = []
        for k, st_row in zip(ks, range(1, len(ks) + 1)):
            out = next(f_iter)
            fa = task.extract_answer(force_text + tokenizer.decode(out, skip_special_tokens=False))
            checkpoints.append({
                "position": k, "row": len(ckpt_hidden),
                "forced_answer": fa, "forced_correct": bool(fa is not None and task.check_answer(p, fa)),
                "probe_tokens": len(fmt.force_answer_ids) + len(out),
                "agrees_with_final": fa is not None and fa == answer,
                "confidence": _checkpoint_stats(stats, k, cfg.confidence_window) if stats is not None
                else _checkpoint_stats({}, 0, cfg.confidence_window),
            })
            ckpt_hidden.append(st[st_row])
        rows.append({
            "problem_id": p.id, "prompt": p.prompt, "level": p.level, "features": p.features, "sample": j,
            "greedy": j == 0,
            "text": text, "generated_ids": list(gen), "answer": answer, "gold": p.answer,
            "correct": bool(answer is not None and task.check_answer(p, answer)),
            "n_prompt_tokens": n_pre, "n_generated": len(gen), "n_thinking": n_think, "thinking_closed": closed,
            "prompt_row": len(prompt_hidden), "checkpoints": checkpoints,
        })
        prompt_hidden.append(st[0])
    tensors = {"prompt_hidden": np.stack(prompt_hidden), "checkpoint_hidden": np.stack(ckpt_hidden)}
    return tensors, rows
