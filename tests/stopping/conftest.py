"""Fixtures for thinkctl.stopping tests: tiny character-level tokenizers and tiny random models, all offline."""

from __future__ import annotations

import string
from typing import Any, Callable, Sequence

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from thinkctl.stopping.budget import MAX_LEADING_BLANKS

CHARS = string.ascii_letters + string.digits + " \n.,:;!?+-*/=()<>'\"_#|"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' + think_prefix }}{% endif %}"
)
ARCHS = ("gpt2", "llama", "qwen2", "qwen3")


def build_char_tokenizer(*, think_tokens: bool, think_prefix: str = "<think>\n",
                         extra_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """A character-level tokenizer; ``<think>``/``</think>`` are single special tokens when ``think_tokens``."""
    specials = ["<pad>", "<eos>", "<unk>"] + (["<think>", "</think>"] if think_tokens else [])
    vocab = {t: i for i, t in enumerate(specials + list(CHARS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if extra_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE.replace("think_prefix", repr(think_prefix))
    return fast


@pytest.fixture(scope="session")
def tok() -> PreTrainedTokenizerFast:
    """Think markers are single special tokens; "Alternatively" is one added token."""
    return build_char_tokenizer(think_tokens=True, extra_tokens=("Alternatively",))


@pytest.fixture(scope="session")
def tok_pieces() -> PreTrainedTokenizerFast:
    """Think markers are multi-piece strings (one token per character)."""
    return build_char_tokenizer(think_tokens=False)


@pytest.fixture(scope="session")
def tok_plain() -> PreTrainedTokenizerFast:
    """A plain instruct model: the chat template opens no thinking section."""
    return build_char_tokenizer(think_tokens=False, think_prefix="")


def make_model(arch: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> torch.nn.Module:
    """A tiny random causal LM for ``tokenizer`` (2 layers, hidden 32), in eval mode."""
    torch.manual_seed(seed)
    v = len(tokenizer)
    ids = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=v, max_position_embeddings=512, initializer_range=0.2, **ids)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=v, n_positions=512,
                                           initializer_range=0.2, **ids))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    else:  # pragma: no cover - test misuse
        raise ValueError(arch)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


@pytest.fixture(scope="session")
def models_for(tok: PreTrainedTokenizerFast) -> dict[str, torch.nn.Module]:
    return {arch: make_model(arch, tok, seed=i) for i, arch in enumerate(ARCHS)}


@pytest.fixture(scope="session")
def gpt2(tok: PreTrainedTokenizerFast) -> torch.nn.Module:
    return make_model("gpt2", tok, seed=11)


@pytest.fixture(scope="session")
def gpt2_pieces(tok_pieces: PreTrainedTokenizerFast) -> torch.nn.Module:
    return make_model("gpt2", tok_pieces, seed=12)


def simulate(processors: Sequence[Callable[..., torch.Tensor]], prompt: torch.Tensor,
             score_fn: Callable[[torch.Tensor], torch.Tensor], steps: int, *, eos: int, pad: int,
             criteria: Sequence[Callable[..., torch.Tensor]] = (), sample: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """A model-free copy of ``generate``'s decoding loop (processors, pad after EOS, stopping criteria)."""
    ids = prompt.clone()
    unfinished = torch.ones(ids.shape[0], dtype=torch.long)
    for _ in range(steps):
        scores = score_fn(ids)
        for p in processors:
            scores = p(ids, scores)
        if sample:
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = nxt * unfinished + pad * (1 - unfinished)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done = nxt == eos
        for c in criteria:
            done = done | c(ids, None)
        unfinished = unfinished & ~done.long()
        if unfinished.max() == 0:
            break
    return ids


@pytest.fixture(scope="session")
def sim() -> Callable[..., torch.Tensor]:
    return simulate


@pytest.fixture(scope="session")
def make() -> Callable[..., torch.nn.Module]:
    return make_model


def chat_ids(tokenizer: Any, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    from thinkctl.stopping import build_inputs

    return dict(build_inputs(tokenizer, list(prompts), style="none"))


@pytest.fixture(scope="session")
def chat() -> Callable[..., dict[str, torch.Tensor]]:
    return chat_ids


def strip_pad(row: list[int], pad: int) -> list[int]:
    row = list(row)
    while row and row[-1] == pad:
        row.pop()
    return row


def enc(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def first_index(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    return -1


def check_budget_properties(tokenizer, bf, gen_rows, min_tokens, max_tokens, max_answer_tokens, opened):
    """Thinking never exceeds max_tokens (nor ends before min_tokens); a forced stop always yields an answer.

    Thinking tokens: generated tokens (after a ``<think>`` the model writes itself when its prompt did not open
    thinking, ``opened[r]``) up to ``</think>``.
    """
    start, end = enc(tokenizer, "<think>"), enc(tokenizer, "</think>")
    prefix = enc(tokenizer, "\nFinal Answer:")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for r, gen in enumerate(gen_rows):
        gen = strip_pad(gen, pad)
        i = first_index(gen, end)
        thinking = gen if i < 0 else gen[:i]
        j = first_index(thinking, start)
        if not opened[r] and j >= 0:
            thinking = thinking[j + len(start):]
        assert len(thinking) <= max_tokens
        assert eos not in thinking  # thinking never ends without an answer (answer_on_eos)
        if i >= 0:
            assert len(thinking) >= min_tokens
        if bf.forced_stop[r]:
            assert i >= 0
            answer = gen[i + len(end):]
            assert answer[:len(prefix)] == prefix
            rest = answer[len(prefix):]
            assert len(rest) >= 2 and rest[-1] == eos, tokenizer.decode(gen)  # >= 1 answer token, then EOS
            # content within the first MAX_LEADING_BLANKS + 1 answer tokens (blanks may come first)
            content = [k for k, t in enumerate(rest[:-1])
                       if tokenizer.decode([t]).strip() not in ("", "<eos>", "<pad>")]
            assert content and content[0] <= MAX_LEADING_BLANKS, tokenizer.decode(gen)
            assert all(not tokenizer.decode([t]).strip() for t in rest[:content[0]])
            assert len(rest) - 1 <= max_answer_tokens
            assert "Final Answer:" in tokenizer.decode(answer)




@pytest.fixture(scope="session")
def check_budget() -> Callable[..., None]:
    return check_budget_properties
