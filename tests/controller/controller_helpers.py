"""Helpers for thinkctl.controller tests (a uniquely named module, so that imports never pick up another
directory's conftest): a character-level tokenizer with ``<think>``/``</think>`` special tokens,
tiny random Llama models, a forward-token counter and scripted "probes" that drive decisions deterministically."""

from __future__ import annotations

import string
from typing import Any, Sequence

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHARS = string.ascii_letters + string.digits + " \n.,:;!?+-*/=()<>'\"_#|"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|><think>\\n' }}{% endif %}"
)
HIDDEN = 32


def build_tokenizer(think_tokens: bool = True) -> PreTrainedTokenizerFast:
    """Character-level; ``think_tokens=False`` is a plain instruct model (no markers, the template opens none)."""
    specials = ["<pad>", "<eos>", "<unk>"] + (["<think>", "</think>"] if think_tokens else [])
    vocab = {t: i for i, t in enumerate(specials + list(CHARS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE if think_tokens else CHAT_TEMPLATE.replace("<think>\\n", "")
    return fast


class BiasedLlama(LlamaForCausalLM):
    """A Llama whose output logits get a fixed per-token bias (to script when it stops thinking)."""

    logit_bias: dict[int, float] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = super().forward(*args, **kwargs)
        for t, b in self.logit_bias.items():
            out.logits[..., t] += b
        return out


def build_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, never_stop: bool = True,
                close_first: bool = False) -> LlamaForCausalLM:
    """Tiny random Llama (2 layers, hidden 32). ``never_stop``: EOS, ``</think>`` and pad never win, so thinking
    runs to its budget and answers to ``max_answer_tokens``. ``close_first``: ``</think>`` always wins."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=len(tokenizer), max_position_embeddings=1024,
                      initializer_range=0.2, bos_token_id=tokenizer.eos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = BiasedLlama(cfg)
    close = tokenizer.convert_tokens_to_ids("</think>") if "</think>" in tokenizer.get_vocab() else None
    bias: dict[int, float] = {}
    if never_stop:
        bias = {tokenizer.eos_token_id: -1e4, tokenizer.pad_token_id: -1e4}
        if close is not None:
            bias[close] = -1e4
    if close_first:
        bias = {close: 1e4, tokenizer.pad_token_id: -1e4}
    model.logit_bias = bias
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


class ForwardCounter:
    """Counts forward passes and the token positions they process (batch * length)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[int, int]] = []
        self._h = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append(tuple(ids.shape))

    @property
    def tokens(self) -> int:
        return sum(b * t for b, t in self.calls)

    def remove(self) -> None:
        self._h.remove()


class ScriptedProbe:
    """A stand-in confidence probe: returns the next value of a script for each read (then repeats the last)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.reads = 0
        self.inputs: list[torch.Tensor] = []

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        self.inputs.append(hidden.detach().clone())
        v = self.values[min(self.reads, len(self.values) - 1)]
        self.reads += 1
        return torch.full((hidden.shape[0],), float(v))


class FirstCharTask:
    """Answers are the first character of the generated text (so that random models cast votes)."""

    def extract_answer(self, text: str) -> str | None:
        body = text.replace("<think>", "").replace("</think>", "").strip()
        return body[:1] or None


class ConstantLike:
    """A task whose extractor always reads the same answer (a settled vote)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def extract_answer(self, text: str) -> str | None:
        return self.answer


def events(result: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in result.trace if e["event"] == kind]


def generated_tokens(result: Any) -> int:
    """Generated tokens of a serial result: thinking + forced marker + answer."""
    stop, ans = events(result, "stop")[-1], events(result, "answer")[-1]
    return stop["thinking_tokens"] + ans["forced_tokens"] + ans["answer_tokens"]


