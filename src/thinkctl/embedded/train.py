"""Train the embedded reasoning model, top to bottom in one file.

    thinkctl train-embedded --out DIR [--seed 0] [--steps N] [--minutes M]

1. Problems of the built-in families (``arith``, ``modeq``) at every level but the held-out ones, from the training
   seed only.
2. A synthetic reasoning trace for each (:mod:`thinkctl.embedded.traces`): forward computation, re-checks
   introduced by "Wait" that repair slips, then ``</think>`` and ``Final Answer: X``.
   A share of examples is cut short and forced to answer, as budget forcing will do at run time.
3. A byte-level BPE tokenizer trained on that text, with a chat template whose generation prompt is the prefix
   the model is trained on.
4. A small Llama (transformers ``LlamaForCausalLM``), trained with AdamW and a cosine schedule, its forward and
   backward passes through ``torch.compile`` (eager with ``compile=False``); the loss covers
   the assistant's part only (and only the answer in forced examples, so the model never learns to stop
   thinking on its own at random points).
5. ``save_pretrained`` (safetensors) + tokenizer files + ``thinkctl_embedded.json`` (config, seed, data
   statistics, loss curve). A run that is interrupted resumes from its last checkpoint in ``DIR/resume``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from thinkctl.embedded import METADATA_FILE
from thinkctl.embedded.tokenizer import END, THINK_CLOSE, build_tokenizer, render_chat
from thinkctl.embedded.traces import TraceStyle, thought_for
from thinkctl.devices import resolve_device
from thinkctl.tasks import ANSWER_PREFIX, get as get_task

__all__ = ["TrainConfig", "ModelShape", "build_examples", "encode_examples", "make_model", "make_batch", "train",
           "trained_levels", "HELD_OUT_LEVELS", "bench_compile"]

logger = logging.getLogger(__name__)

TASKS = ("arith", "modeq")
#: Levels the model never trains on: the hardest modeq level (p = 19) measures how it does beyond what it was taught.
#: Three retrains that made modeq's trained top level harder each cost arith its middle levels (README).
HELD_OUT_LEVELS: dict[str, tuple[int, ...]] = {"modeq": (7,)}
#: Seeds for problems are drawn from this offset upward; evaluation seeds (gym-report default 1000+) never reach it.
TRAIN_SEED_OFFSET = 10_000_000


@dataclass(frozen=True)
class ModelShape:
    """Llama shape of the embedded model (about 0.85M parameters by default)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the embedded model. Same config and seed -> same data and initial weights."""

    seed: int = 0
    n_problems: int = 120_000          # training problems, split evenly over tasks and levels
    forced_fraction: float = 0.25      # share of examples cut short and forced to answer
    #: Share of the forced examples of a family with an answer cut (:attr:`Thought.answer_cut`: arith's last forward
    #: step) that are cut there, just after the "=", instead of at a uniform point; drawn from a random stream of
    #: its own, so the problems, traces and other cuts are those of the same config with 0.
    answer_cut_share: float = 0.0
    #: Keep the deliberately wrong results of slipped traces (:attr:`Thought.slips`) out of the loss: the model reads
    #: slips and learns to catch and repair them, but is never trained to make them.
    mask_slips: bool = False
    #: Per-family changes to ``style`` and ``mask_slips``, e.g. ``{"modeq": {"p_slip": 0.15, "mask_slips": False}}``:
    #: each family can sit at its own point of the trade-off between the vote gain (slips in the loss) and the
    #: serial curve (slips masked). Keys are :class:`TraceStyle` fields and ``mask_slips``.
    family_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    vocab_size: int = 384
    batch_size: int = 32               # the committed model: two stages of 3300 steps at batch 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    steps: int = 3300
    max_minutes: float = 55.0          # hard wall-clock cap; the schedule is by steps
    checkpoint_every: int = 250
    threads: int = 2
    #: Run the forward and backward passes through ``torch.compile``: a step cost 0.65-0.86 of an eager one on 2 CPU
    #: cores (``python benchmarks/bench_train.py``), after about 70 s of compiling (about 20 s from the cache);
    #: numerics agree with eager to float rounding. Falls back to eager, with a warning, when no C++ compiler is found
    #: or compiling fails. Tiny smoke runs are faster without it.
    compile: bool = True
    shape: ModelShape = field(default_factory=ModelShape)
    style: TraceStyle = field(default_factory=TraceStyle)
    #: Continue from this finished checkpoint (its weights and tokenizer) instead of a random init: a second
    #: training stage on fresh problems (the data seed is ``seed``), e.g. ``seed=1`` after a ``seed=0`` stage.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.forced_fraction < 1.0:
            raise ValueError(f"forced_fraction={self.forced_fraction} must be in [0, 1)")
        if not 0.0 <= self.answer_cut_share <= 1.0:
            raise ValueError(f"answer_cut_share={self.answer_cut_share} must be in [0, 1]")
        for name in ("n_problems", "batch_size", "steps", "vocab_size", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.shape.hidden_size % self.shape.num_attention_heads:
            raise ValueError(f"hidden_size={self.shape.hidden_size} must be divisible by "
                             f"num_attention_heads={self.shape.num_attention_heads}")
        allowed = {f.name for f in fields(TraceStyle)} | {"mask_slips"}
        for family, changes in self.family_overrides.items():
            if family not in TASKS:
                raise ValueError(f"family_overrides names {family!r}; the trained families are {', '.join(TASKS)}")
            unknown = sorted(set(changes) - allowed)
            if unknown:
                raise ValueError(f"family_overrides[{family!r}] sets {', '.join(unknown)}; "
                                 f"known keys: {', '.join(sorted(allowed))}")
            if not isinstance(changes.get("mask_slips", False), bool):
                raise ValueError(f"family_overrides[{family!r}] sets mask_slips={changes['mask_slips']!r}; "
                                 "use True or False")
            self.family_setup(family)  # a bad value fails here, through TraceStyle's own checks

    def family_setup(self, family: str) -> tuple[TraceStyle, bool]:
        """The trace style and slip masking of ``family``: ``style`` and ``mask_slips`` with its overrides."""
        changes = dict(self.family_overrides.get(family, {}))
        mask = bool(changes.pop("mask_slips", self.mask_slips))
        return (replace(self.style, **changes) if changes else self.style), mask


# -- 1-2. problems and traces ----------------------------------------------------------------------------

@dataclass
class Example:
    prompt: str        # rendered generation prompt (ends with "<think>\n")
    thought: str       # thinking text (full, or the cut prefix for forced examples)
    answer: str        # what follows "Final Answer: "
    forced: bool       # cut short and forced to answer
    no_loss: tuple[tuple[int, int], ...] = ()  # character spans of ``thought`` kept out of the loss


def build_examples(cfg: TrainConfig) -> list[Example]:
    """The training examples for ``cfg`` (deterministic in ``cfg.seed``)."""
    rng = np.random.default_rng([cfg.seed, 1])
    cut_rng = np.random.default_rng([cfg.seed, 2])  # answer cuts only: the main stream stays as with share 0
    examples: list[Example] = []
    for t_i, name in enumerate(TASKS):
        task = get_task(name)
        style, mask_slips = cfg.family_setup(name)
        levels = trained_levels(name)
        per_level = cfg.n_problems // (len(TASKS) * len(levels))
        for level in levels:
            for p in task.sample(per_level, seed=TRAIN_SEED_OFFSET + cfg.seed * 100 + t_i * 10 + level,
                                 level=level):
                th = thought_for(name, p, rng, style)
                prompt = render_chat(p.prompt)
                if rng.random() < cfg.forced_fraction:
                    # cut after a random number of characters; the answer is what the solver believed there,
                    # or the gold answer while its forward pass was unfinished (a guess it must learn to make).
                    text = th.text
                    cut = int(rng.integers(0, len(text) + 1))
                    done_lines = text[:cut].count("\n")
                    belief = th.beliefs[done_lines - 1] if done_lines else None
                    if (th.answer_cut is not None and cfg.answer_cut_share > 0
                            and cut_rng.random() < cfg.answer_cut_share):
                        # the answer one operation away: the model must carry out the step it was cut inside
                        cut, belief = th.answer_cut, th.answer_cut_belief
                    examples.append(Example(prompt, text[:cut], belief if belief is not None else p.answer, True))
                else:
                    examples.append(Example(prompt, th.text, th.answer, False, th.slips if mask_slips else ()))
    order = rng.permutation(len(examples))
    return [examples[i] for i in order]


def trained_levels(task_name: str) -> list[int]:
    """The levels of a built-in family that the embedded model trains on."""
    held_out = HELD_OUT_LEVELS.get(task_name, ())
    return [lvl for lvl in get_task(task_name).levels if lvl not in held_out]


def encode_examples(tokenizer: Any, examples: list[Example]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids and loss masks (1 where the loss applies) of each example."""
    end_id = tokenizer.convert_tokens_to_ids(END)
    close_ids = tokenizer(f"{THINK_CLOSE}\n{ANSWER_PREFIX}", add_special_tokens=False)["input_ids"]
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    masked = any(e.no_loss for e in examples)  # offsets only when some spans stay out of the loss
    encoded = tokenizer([e.thought for e in examples], add_special_tokens=False, return_offsets_mapping=masked)
    thoughts = encoded["input_ids"]
    answers = tokenizer([" " + e.answer for e in examples], add_special_tokens=False)["input_ids"]
    ids_out, mask_out = [], []
    for i, (e, p, t, a) in enumerate(zip(examples, prompts, thoughts, answers)):
        # a forced example learns only its answer: budget forcing appends "</think>\nFinal Answer:" where it cuts
        # (a newline may or may not precede it); a full one learns its thinking too, but for its no-loss spans
        body = t + close_ids
        body_mask = [0 if e.forced else 1] * len(body)
        if e.no_loss and not e.forced:
            for k, (start, end) in enumerate(encoded["offset_mapping"][i]):
                if any(start < hi and lo < end for lo, hi in e.no_loss):
                    body_mask[k] = 0
        ids = p + body + a + [end_id]
        mask = [0] * len(p) + body_mask + [1] * (len(a) + 1)
        ids_out.append(np.asarray(ids, dtype=np.int64))
        mask_out.append(np.asarray(mask, dtype=np.int8))
    return ids_out, mask_out


# -- 3-4. tokenizer and model --------------------------------------------------------------------------------

def make_model(cfg: TrainConfig, tokenizer: Any) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.shape.hidden_size,
        intermediate_size=cfg.shape.intermediate_size,
        num_hidden_layers=cfg.shape.num_hidden_layers,
        num_attention_heads=cfg.shape.num_attention_heads,
        num_key_value_heads=cfg.shape.num_attention_heads,
        max_position_embeddings=cfg.shape.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_batch(ids: list[np.ndarray], masks: list[np.ndarray], index: np.ndarray,
               pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids[i]) for i in index)
    x = np.full((len(index), width), pad_id, dtype=np.int64)
    m = np.zeros((len(index), width), dtype=np.int64)
    lab = np.full((len(index), width), -100, dtype=np.int64)
    for row, i in enumerate(index):
        n = len(ids[i])
        x[row, :n] = ids[i]
        m[row, :n] = 1
        lab[row, :n] = np.where(masks[i] == 1, ids[i], -100)
    return torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(lab)


def prepare_data(cfg: TrainConfig) -> tuple[Any, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The tokenizer (trained here, or ``cfg.init_from``'s) and the encoded examples: token ids, loss masks and
    lengths."""
    examples = build_examples(cfg)
    if cfg.init_from is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.init_from, local_files_only=True)
    else:
        tokenizer = build_tokenizer((e.prompt + e.thought + e.answer for e in examples[:20_000]),
                                    vocab_size=cfg.vocab_size)
    ids, masks = encode_examples(tokenizer, examples)
    lengths = np.array([len(x) for x in ids])
    logger.info("%d examples, mean length %.0f tokens, max %d", len(ids), lengths.mean(), lengths.max())
    if lengths.max() > cfg.shape.max_position_embeddings:
        raise ValueError(f"longest example has {lengths.max()} tokens, over max_position_embeddings="
                         f"{cfg.shape.max_position_embeddings}; raise it in ModelShape")
    return tokenizer, ids, masks, lengths


def prepare_model(cfg: TrainConfig, tokenizer: Any, dev: torch.device) -> tuple[torch.nn.Module, torch.optim.AdamW]:
    """The model (fresh from ``cfg.seed``, or ``cfg.init_from``'s weights) in training mode, and its optimizer."""
    model: torch.nn.Module
    if cfg.init_from is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, local_files_only=True)
    else:
        model = make_model(cfg, tokenizer)
    model.to(dev)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    return model, opt


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's batches (example indices), shuffled. Batches of similar lengths waste less compute on padding:
    each chunk of 64 batches is sorted by length before it is cut into batches."""
    perm = np.random.default_rng([seed, 3, epoch]).permutation(len(lengths))
    chunk = batch_size * 64
    batches = []
    for s in range(0, len(perm), chunk):
        part = perm[s:s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    return [batches[k] for k in np.random.default_rng([seed, 4, epoch]).permutation(len(batches))]


def train_step(forward: Callable[..., Any], model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               labels: torch.Tensor, grad_clip: float) -> float:
    """One AdamW update of ``model`` through ``forward`` (the model or its compiled form); returns the loss."""
    # Right padding under a causal mask never influences the real tokens, so no attention mask is passed:
    # that keeps attention on the fast fused path (several times faster on CPU than a padded mask).
    loss = forward(input_ids=x, labels=labels).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.item())


def compiled_forward(model: torch.nn.Module, want: bool, dev: torch.device) -> tuple[Callable[..., Any], bool]:
    """``torch.compile(model)`` when ``want`` and a compiler is available, else ``model``; and which it is."""
    if not want:
        return model, False
    if dev.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        logger.warning("no C++ compiler on PATH, which torch.compile needs on the CPU; training eagerly "
                       "(install g++ for faster steps)")
        return model, False
    # dynamic shapes: batch widths vary from step to step, and one graph serves them all
    return torch.compile(model, dynamic=True), True


# -- 5. training loop ------------------------------------------------------------------------------------

def train(out_dir: str | os.PathLike[str], cfg: TrainConfig = TrainConfig(), *,
          progress: bool = True, on_step: Callable[[int, float], None] | None = None,
          device: str | torch.device = "cpu") -> Path:
    """Train the embedded model into ``out_dir`` and return it. Resumes from ``out_dir/resume`` if present.

    ``device``: where to train (the data is built on the CPU either way). The reference checkpoint and the
    time budget are CPU runs; another device gives a statistically similar but not bit-identical model.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume = out / "resume"
    torch.set_num_threads(cfg.threads)
    t_start = time.time()

    tokenizer, ids, masks, lengths = prepare_data(cfg)
    model, opt = prepare_model(cfg, tokenizer, dev)
    step, history = 0, []
    if (resume / "state.pt").exists():
        state = torch.load(resume / "state.pt", weights_only=True, map_location=dev)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        history = json.loads((resume / "history.json").read_text())
        logger.info("resumed at step %d", step)

    forward, compiled = compiled_forward(model, cfg.compile, dev)
    per_epoch = math.ceil(len(ids) / cfg.batch_size)
    order_epoch, order = -1, []  # the current epoch's batches (computing them takes ~15 ms: once per epoch)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-embedded")
    while step < cfg.steps:
        if (time.time() - t_start) / 60 > cfg.max_minutes:
            logger.warning("stopping at step %d: max_minutes=%s reached", step, cfg.max_minutes)
            break
        epoch, k = divmod(step, per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, batch_order(lengths, cfg.batch_size, cfg.seed, epoch)
        index = order[k]
        x, _, lab = make_batch(ids, masks, index, tokenizer.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        try:
            loss_value = train_step(forward, model, opt, x.to(dev), lab.to(dev), cfg.grad_clip)
        except Exception as exc:  # a compiler failure shows on the first call; eager then raises any real error
            if forward is model:
                raise
            logger.warning("torch.compile failed (%s: %s); training eagerly", type(exc).__name__, exc)
            forward, compiled = model, False
            loss_value = train_step(forward, model, opt, x.to(dev), lab.to(dev), cfg.grad_clip)
        step += 1
        history.append([step, round(loss_value, 5)])
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if on_step is not None:
            on_step(step, loss_value)
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            resume.mkdir(exist_ok=True)
            tokenizer.save_pretrained(resume)  # so that a partial run can be loaded and inspected
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, resume / "state.tmp")
            os.replace(resume / "state.tmp", resume / "state.pt")
            (resume / "history.json").write_text(json.dumps(history))
    bar.close()

    model.eval()
    model.to("cpu")  # saved weights are device-free
    pretrained: Any = model  # a transformers PreTrainedModel (torch.nn.Module's typing does not know its attributes)
    pretrained.generation_config.pad_token_id = tokenizer.pad_token_id
    pretrained.generation_config.eos_token_id = tokenizer.eos_token_id
    pretrained.generation_config.bos_token_id = tokenizer.bos_token_id
    pretrained.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {
        "name": "thinkctl-embedded",
        "config": asdict(cfg),
        "steps_done": step,
        "minutes": round((time.time() - t_start) / 60, 2),
        "n_examples": len(ids),
        "trained_levels": {name: trained_levels(name) for name in TASKS},
        "mean_tokens": float(lengths.mean()),
        "compiled": compiled,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": float(np.mean([h[1] for h in history[-50:]])) if history else None,
        "loss_history": history[:: max(1, len(history) // 200)],
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    if (resume / "state.pt").exists():
        for f in resume.iterdir():
            f.unlink()
        resume.rmdir()
    return out


# -- benchmark: eager against compiled steps -------------------------------------------------------------------

def bench_compile(cfg: TrainConfig, *, steps: int = 60, block: int = 10, warmup: int = 4, n_problems: int = 20_000,
                  progress: bool = True) -> dict[str, Any]:
    """Time ``cfg``'s training step eager and through ``torch.compile`` in one run, on the same batches.

    Two copies of the same initial model train side by side on the first ``steps`` batches of ``cfg``'s data (built
    from ``n_problems`` problems, so the lengths are the recipe's): blocks of ``block`` steps alternate between them,
    so a drift in the machine's speed hits both. Each copy first takes ``warmup`` untimed steps (the compiled one
    compiles at its first call and again at the first change of batch width, when it turns dynamic); the compiled
    warm-up's excess over the eager one is reported as ``compile_s``. Returns seconds per step of each, their ratio
    (mean times, and the median of the per-block ratios), and the largest loss difference between the copies.
    """
    from tqdm.auto import tqdm

    if min(steps, block, warmup, n_problems) < 1:
        raise ValueError(f"steps={steps}, block={block}, warmup={warmup} and n_problems={n_problems} must all be at "
                         "least 1")
    torch.set_num_threads(cfg.threads)
    cfg = replace(cfg, n_problems=min(cfg.n_problems, n_problems))
    dev = torch.device("cpu")
    tokenizer, ids, masks, lengths = prepare_data(cfg)
    eager, opt_e = prepare_model(cfg, tokenizer, dev)
    twin, opt_c = prepare_model(cfg, tokenizer, dev)  # the same initial weights: same seed, or the same init_from
    compiled, ok = compiled_forward(twin, True, dev)
    if not ok:
        raise RuntimeError("torch.compile is unavailable here (no C++ compiler on PATH); install g++ to benchmark it")
    n_batches = warmup + steps
    batches = [b for epoch in range(math.ceil(n_batches * cfg.batch_size / len(ids)) + 1)
               for b in batch_order(lengths, cfg.batch_size, cfg.seed, epoch)][:n_batches]
    tensors = [make_batch(ids, masks, b, tokenizer.pad_token_id) for b in batches]
    for g in opt_e.param_groups + opt_c.param_groups:
        g["lr"] = cfg.lr * 0.1  # a fixed small rate: the benchmark measures time, not a schedule

    variants = (("eager", eager, eager, opt_e), ("compiled", compiled, twin, opt_c))
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    warm_s = {}
    for name, fwd, model, opt in variants:
        t0 = time.perf_counter()
        losses[name] += [train_step(fwd, model, opt, x, lab, cfg.grad_clip) for x, _, lab in tensors[:warmup]]
        warm_s[name] = time.perf_counter() - t0
    bar = tqdm(total=2 * steps, disable=not progress, desc="bench-compile")
    for start in range(warmup, warmup + steps, block):
        for name, fwd, model, opt in variants:
            for x, _, lab in tensors[start:min(start + block, warmup + steps)]:
                t0 = time.perf_counter()
                losses[name].append(train_step(fwd, model, opt, x, lab, cfg.grad_clip))
                times[name].append(time.perf_counter() - t0)
                bar.update(1)
    bar.close()
    block_ratios = [sum(times["compiled"][i:i + block]) / sum(times["eager"][i:i + block])
                    for i in range(0, steps, block)]
    eager_s, compiled_s = (float(np.mean(times[k])) for k in ("eager", "compiled"))
    compile_s = max(0.0, warm_s["compiled"] - warm_s["eager"])  # 0 when the compiled code came from the cache
    return {
        "steps": steps, "block": block, "warmup": warmup, "batch_size": cfg.batch_size, "threads": cfg.threads,
        "mean_tokens": float(lengths.mean()),
        "mean_batch_width": float(np.mean([t[0].shape[1] for t in tensors[warmup:]])),
        "eager_s_per_step": eager_s, "compiled_s_per_step": compiled_s,
        "ratio": compiled_s / eager_s,
        "median_block_ratio": float(np.median(block_ratios)),
        "block_ratios": block_ratios,
        "warmup_s": warm_s,
        "compile_s": compile_s,
        # steps after which compiling has paid for itself (None when the compiled step is not faster)
        "break_even_steps": compile_s / (eager_s - compiled_s) if compiled_s < eager_s else None,
        "max_abs_loss_diff": float(max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"]))),
        "torch": torch.__version__,
    }
