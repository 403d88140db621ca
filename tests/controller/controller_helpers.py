"""Helpers for thinkctl.controller tests (a uniquely named module, so that imports never pick up another
directory's conftest): a character-level tokenizer with ``<think>``/``</think>`` special tokens,
tiny random Llama models (optionally scripted: token ``g`` of every generated row forced), a forward-token counter,
scripted "probes" that drive decisions deterministically, and reference computations of hidden states."""

from __future__ import annotations

import inspect
import string
from typing import Any, Sequence

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from thinkctl.generation import chat_prefix

CHARS = string.ascii_letters + string.digits + " \n.,:;!?+-*/=()<>'\"_#|"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|><think>\\n' }}{% endif %}"
)
HIDDEN = 32
#: "</think>\nFinal Answer:" in the character tokenizer: the marker token, "\n", then 13 characters.
FORCE = 15
#: The same without think markers: "\nFinal Answer:".
FORCE_PLAIN = 14


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
    """A Llama whose output logits get a fixed per-token bias, plus an optional script.

    ``script`` maps a generated-token number ``g`` (1-based, the same for every row of a left-padded batch since
    rows advance in lockstep) to a token id that then wins. The number is read off the KV cache: the padded width
    ``W`` of the prompt is taken from the forward pass that starts from an empty cache, and the logits of a pass
    over positions ``..p`` predict generated token ``p + 2 - W``.
    """

    logit_bias: dict[int, float] = {}
    script: dict[int, int] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        if past == 0:
            self._width = ids.shape[1]
        out = super().forward(*args, **kwargs)
        for t, b in self.logit_bias.items():
            out.logits[..., t] += b
        if self.script:
            g = past + ids.shape[1] + 1 - self._width  # generated-token number the last logits predict
            if g in self.script:
                out.logits[:, -1, self.script[g]] += 1e5
        return out


# generate creates position_ids from the attention mask (left padding) only for a forward that declares them
BiasedLlama.forward.__signature__ = inspect.signature(LlamaForCausalLM.forward)  # type: ignore[attr-defined]


def build_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, never_stop: bool = True,
                close_first: bool = False, script: dict[int, int] | None = None) -> BiasedLlama:
    """Tiny random Llama (2 layers, hidden 32). ``never_stop``: EOS, ``</think>`` and pad never win, so thinking
    runs to its budget and answers to ``max_answer_tokens``. ``close_first``: ``</think>`` always wins.
    ``script``: generated token number -> token id forced there (see :class:`BiasedLlama`)."""
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
    model.script = dict(script or {})
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def script_text(tokenizer: PreTrainedTokenizerFast, text: str, *, start: int) -> dict[int, int]:
    """A script writing ``text`` (special tokens allowed) as generated tokens ``start, start + 1, ...``."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return {start + i: t for i, t in enumerate(ids)}


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

    def multi(self) -> list[tuple[int, int]]:
        """Passes over more than one position (prefills)."""
        return [c for c in self.calls if c[1] > 1]

    def clear(self) -> None:
        self.calls.clear()

    def remove(self) -> None:
        self._h.remove()


class ScriptedProbe:
    """A stand-in confidence probe: returns the next value of a script for each call (then repeats the last).

    It is called with a batch of hidden states ``(B, hidden)`` and returns ``(B,)``: one read per call, the same
    value for every row (``HiddenStatePredictor`` passes the batch through unchanged when it has no calibrator)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.reads = 0
        self.inputs: list[torch.Tensor] = []

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        self.inputs.append(hidden.detach().clone())
        v = self.values[min(self.reads, len(self.values) - 1)]
        self.reads += 1
        return torch.full((hidden.shape[0],), float(v))


class RowScript:
    """A stand-in probe returning the next ``B`` values of a script for a batch of ``B`` states."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values, self.pos, self.inputs = list(values), 0, []

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        self.inputs.append(hidden.detach().clone())
        out = self.values[self.pos:self.pos + hidden.shape[0]]
        self.pos += hidden.shape[0]
        return torch.tensor(out, dtype=torch.float32)


class StateProbe:
    """A deterministic probe of the hidden state itself: ``sigmoid(scale * h[:, 0])`` (rows differ)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.inputs: list[torch.Tensor] = []

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        self.inputs.append(hidden.detach().clone())
        return torch.sigmoid(self.scale * hidden[:, 0])


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
    """Tokens generated for the result's text (thinking, marker, answer, EOS), as its answer event records."""
    return events(result, "answer")[-1]["generated_tokens"]


@torch.no_grad()
def hidden_states_along(model: torch.nn.Module, tokenizer: Any, prompt: str, text: str) -> tuple[torch.Tensor, ...]:
    """``output_hidden_states`` of one unpadded forward pass over the prompt's chat prefix followed by ``text``."""
    ids = chat_prefix(tokenizer, prompt) + tokenizer.encode(text, add_special_tokens=False)
    return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
