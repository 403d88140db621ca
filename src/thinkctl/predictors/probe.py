"""Probes on hidden states: a linear or small MLP classifier (torch) from a layer's hidden state to a binary label.

A :class:`HiddenStateProbe` reads the hidden state of one layer of one model (shape ``(n_samples, hidden_size)``)
and predicts a binary outcome: "the answer the model would give now is right" (confidence, mid-generation) or "the
model will solve this query" (difficulty, from the prompt's last token). It is a scikit-learn estimator with
``predict_proba`` of shape ``(n_samples,)`` (positive class) and ``decision_function`` (logits, for temperature
scaling), and it is a plain callable ``probe(h) -> p`` on a torch tensor ``(B, hidden)``, which is how the stopping
hooks (:class:`~thinkctl.stopping.ProbeStopping`) call predictors.

A probe only means something for the model and layer it was trained on. It records ``model_name``, ``hidden_size``
and ``layer``; :meth:`HiddenStateProbe.check_compatible` and ``load(..., expected_model=...)`` refuse another model
with a clear error. Weights persist as safetensors, everything else as JSON (no pickle).

Training follows the linear-probe literature (Alain & Bengio 2016; Azaria & Mitchell 2023, "The internal state of an
LLM knows when it's lying"; Zhang et al. 2025, "Reasoning models know when they're right"): inputs standardised
with statistics of the training split, AdamW with weight decay, binary cross-entropy (optionally class-balanced),
early stopping on a held-out validation split grouped by problem.

Examples
--------
>>> import numpy as np, torch
>>> from thinkctl.predictors import HiddenStateProbe
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 16)).astype("float32"); y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int)
>>> probe = HiddenStateProbe(model_name="toy", layer=-1, random_state=0).fit(X, y)
>>> probe.predict_proba(X[:3]).shape
(3,)
>>> probe(torch.from_numpy(X[:3])).shape           # callable on a (B, hidden) tensor, as stopping hooks do
torch.Size([3])
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union, overload

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from thinkctl.predictors._persistence import envelope, open_envelope, read_json, write_json
from thinkctl.predictors.splits import grouped_train_test_split
from thinkctl.registry import Registry

__all__ = [
    "HiddenStateProbe",
    "PROBE_KINDS",
    "CLASS_WEIGHTS",
    "PROBE_FILE",
    "WEIGHTS_FILE",
]

logger = logging.getLogger(__name__)

#: Name of the JSON file inside a saved probe directory.
PROBE_FILE = "probe.json"
#: Name of the safetensors file inside a saved probe directory.
WEIGHTS_FILE = "probe.safetensors"
#: Allowed ``class_weight`` values: None (every sample weighs 1) or "balanced" (scikit-learn's n / (2 * n_class)).
CLASS_WEIGHTS = (None, "balanced")
#: Width of the MLP's hidden layer.
DEFAULT_HIDDEN_UNITS = 64
#: AdamW learning rate. Inputs are standardised, so a probe tolerates 10x Adam's customary 1e-3; with 1e-3 a linear
#: probe on a few hundred samples is still underfitted after 200 epochs.
DEFAULT_LEARNING_RATE = 1e-2
#: AdamW decoupled weight decay (PyTorch's AdamW default 1e-2).
DEFAULT_WEIGHT_DECAY = 1e-2
#: Minibatch size.
DEFAULT_BATCH_SIZE = 128
#: Upper bound on training epochs.
DEFAULT_MAX_EPOCHS = 200
#: Epochs without a validation-loss improvement of at least ``tol`` before training stops.
DEFAULT_PATIENCE = 10
#: Fraction of groups held out for early stopping (scikit-learn's MLPClassifier default).
DEFAULT_VALIDATION_FRACTION = 0.1
#: Minimum decrease of the validation loss that counts as an improvement (scikit-learn's MLPClassifier default).
DEFAULT_TOL = 1e-4
#: Features whose training standard deviation is below this are only centred (not divided by ~0).
MIN_FEATURE_SCALE = 1e-6
#: ``predict`` returns 1 where ``predict_proba`` is at least this.
DECISION_THRESHOLD = 0.5
#: Rows per forward pass at prediction time (bounds memory on large trace sets).
PREDICT_CHUNK_ROWS = 65536

def _linear(hidden_size: int, hidden_units: int) -> nn.Module:
    return nn.Linear(hidden_size, 1)


def _mlp(hidden_size: int, hidden_units: int) -> nn.Module:
    return nn.Sequential(nn.Linear(hidden_size, hidden_units), nn.GELU(), nn.Linear(hidden_units, 1))


#: Probe architectures by name: ``"linear"`` (logistic regression) and ``"mlp"`` (one hidden layer, GELU).
PROBE_KINDS: Registry[Callable[[int, int], nn.Module]] = Registry("probe kind")
PROBE_KINDS.add("linear", _linear)
PROBE_KINDS.add("mlp", _mlp)


class _ProbeNet(nn.Module):
    """Standardise, then map to one logit: (B, hidden) -> (B,)."""

    standardize_mean: torch.Tensor  # buffers, declared for type checkers
    standardize_scale: torch.Tensor

    def __init__(self, body: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("standardize_mean", torch.zeros(hidden_size))  # (hidden,)
        self.register_buffer("standardize_scale", torch.ones(hidden_size))  # (hidden,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.standardize_mean) / self.standardize_scale  # (B, hidden)
        return self.body(z).squeeze(-1)  # (B,)


def _as_matrix(X: Any, name: str = "X") -> NDArray[np.float32]:
    """Hidden states as a finite float32 array of shape (n_samples, hidden_size); numpy or torch (any float dtype)."""
    if isinstance(X, torch.Tensor):
        if not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{name} is a {X.dtype} tensor; pass float hidden states")
        arr = X.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        try:
            arr = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} could not be read as a float array ({exc}); pass an array of shape "
                             "(n_samples, hidden_size)") from exc
    if arr.ndim != 2:
        hint = " (one hidden state? use X.reshape(1, -1))" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D of shape (n_samples, hidden_size), got shape {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} has shape {arr.shape}; pass at least one sample with at least one feature")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite values (first in row {row}); "
                         "drop or fix those hidden states (float16 overflow? cast to float32 before storing)")
    return arr


def _as_binary(y: ArrayLike, n: int) -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"y has shape {arr.shape} but X has {n} rows; pass one 0/1 label per hidden state")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"y must be binary labels 0/1, got dtype {arr.dtype}")
    values = np.unique(arr)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(f"y must be binary labels in {{0, 1}}, got values {values[:6].tolist()}"
                         f"{'...' if values.size > 6 else ''}; threshold a score or fraction first "
                         "(e.g. y = (fraction_solved > 0.5))")
    if values.size < 2:
        raise ValueError(f"y contains only class {int(values[0])}; a probe needs positive and negative examples")
    return arr.astype(np.int64)


ExpectedModel = Union[str, Mapping[str, Any], None]


class HiddenStateProbe(BaseEstimator):
    """Linear or MLP probe from a hidden state (one layer of one model) to P(positive).

    Parameters
    ----------
    kind : {"linear", "mlp"}, default="linear"
        Architecture (:data:`PROBE_KINDS`): logistic regression, or one GELU hidden layer of ``hidden_units``.
    hidden_units : int, default=64
        Width of the MLP hidden layer (unused by ``"linear"``).
    class_weight : {"balanced", None}, default=None
        ``"balanced"`` weighs each class by ``n_samples / (2 * n_class_samples)`` in the loss (scikit-learn's rule).
    learning_rate : float, default=1e-2
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW decoupled weight decay.
    batch_size : int, default=128
        Minibatch size.
    max_epochs : int, default=200
        Maximum number of passes over the training split.
    patience : int, default=10
        Stop after this many epochs without a validation-loss improvement of at least ``tol``; the weights of the
        best epoch are kept.
    validation_fraction : float, default=0.1
        Fraction of groups (see ``fit(groups=...)``) held out for early stopping; 0 disables early stopping
        (all ``max_epochs`` run on all data).
    tol : float, default=1e-4
        Minimum validation-loss improvement.
    random_state : int, default=0
        Seed of the initialisation, the validation split and the minibatch order (fits are reproducible; the global
        torch random state is left untouched).
    model_name : str, optional
        Name of the model whose hidden states the probe reads (recorded, checked on loading; required by ``save``).
    layer : int, optional
        Index of that layer in the model's ``hidden_states`` (recorded, checked on loading; required by ``save``).

    Attributes
    ----------
    n_features_in_ : int
        The hidden size seen in fit.
    classes_ : ndarray of shape (2,)
        ``[0, 1]``.
    module_ : torch.nn.Module
        The trained network, standardisation included: (B, hidden) -> (B,) logits.
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int
        Epoch (1-based) whose weights were kept.
    train_loss_curve_, validation_loss_curve_ : list of float
        Mean (weighted) cross-entropy per epoch; the validation curve is empty without early stopping.
    """

    def __init__(self, *, kind: Literal["linear", "mlp"] = "linear", hidden_units: int = DEFAULT_HIDDEN_UNITS,
                 class_weight: Literal["balanced"] | None = None, learning_rate: float = DEFAULT_LEARNING_RATE,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_epochs: int = DEFAULT_MAX_EPOCHS, patience: int = DEFAULT_PATIENCE,
                 validation_fraction: float = DEFAULT_VALIDATION_FRACTION, tol: float = DEFAULT_TOL,
                 random_state: int = 0, model_name: str | None = None, layer: int | None = None) -> None:
        self.kind = kind
        self.hidden_units = hidden_units
        self.class_weight = class_weight
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.tol = tol
        self.random_state = random_state
        self.model_name = model_name
        self.layer = layer

    # -- validation -------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        PROBE_KINDS.get(self.kind)  # unknown kinds list the known ones
        for name in ("hidden_units", "batch_size", "max_epochs", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"class_weight={self.class_weight!r} is not known; use 'balanced' or None")
        if not isinstance(self.learning_rate, numbers.Real) or not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be a positive number (e.g. 1e-2)")
        for name in ("weight_decay", "tol"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or v < 0:
                raise ValueError(f"{name}={v!r} must be a non-negative number")
        vf = self.validation_fraction
        if not isinstance(vf, numbers.Real) or not 0.0 <= vf < 1.0:
            raise ValueError(f"validation_fraction={vf!r} must be in [0, 1); 0 disables early stopping")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, numbers.Integral):
            raise ValueError(f"random_state={self.random_state!r} must be an integer seed")
        if self.model_name is not None and not isinstance(self.model_name, str):
            raise ValueError(f"model_name={self.model_name!r} must be a string or None")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, numbers.Integral)):
            raise ValueError(f"layer={self.layer!r} must be an integer index into hidden_states or None")

    def _describe(self) -> str:
        return f"model {self.model_name!r} (hidden {getattr(self, 'n_features_in_', '?')}, layer {self.layer})"

    def _check_input(self, X: Any) -> NDArray[np.float32]:
        check_is_fitted(self, "module_")
        arr = _as_matrix(X)
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(f"X has hidden size {arr.shape[1]} but this probe was trained on {self._describe()}; "
                             "pass hidden states of that model and layer, or train a probe for this one")
        return arr

    # -- fitting ----------------------------------------------------------------------------------------------

    def _sample_weights(self, y: NDArray[np.int64]) -> NDArray[np.float32]:
        if self.class_weight is None:
            return np.ones(y.shape[0], dtype=np.float32)
        counts = np.bincount(y, minlength=2).astype(np.float64)
        per_class = y.shape[0] / (2.0 * counts)
        return per_class[y].astype(np.float32)

    def fit(self, X: Any, y: ArrayLike, *, groups: ArrayLike | None = None) -> "HiddenStateProbe":
        """Train the probe.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, hidden_size)
            Hidden states (float16/bfloat16/float32/float64; converted to float32). Must be finite.
        y : array-like of shape (n_samples,)
            Binary labels in {0, 1}, both present.
        groups : array-like of shape (n_samples,), optional
            Problem id of every sample; the early-stopping validation split never separates one problem's samples.
            ``None``: every sample is its own group.

        Returns
        -------
        self
        """
        self._check_params()
        Xa = _as_matrix(X)
        n, hidden = Xa.shape
        ya = _as_binary(y, n)
        if groups is not None and np.asarray(groups).shape != (n,):
            raise ValueError(f"groups has shape {np.asarray(groups).shape} but X has {n} rows; pass one id per row")
        if self.validation_fraction > 0:
            try:
                tr, va = grouped_train_test_split(n if groups is None else groups,
                                                  test_size=self.validation_fraction, seed=int(self.random_state),
                                                  stratify=ya)
            except ValueError as exc:
                raise ValueError(f"cannot hold out validation_fraction={self.validation_fraction} of the groups for "
                                 f"early stopping ({exc}); pass more samples or validation_fraction=0") from exc
        else:
            tr, va = np.arange(n), np.empty(0, dtype=np.intp)
        if np.unique(ya[tr]).size < 2:
            raise ValueError("the training split holds a single class; pass more samples of the rarer class or "
                             "lower validation_fraction")
        mean = Xa[tr].mean(axis=0)
        scale = Xa[tr].std(axis=0)
        scale = np.where(scale < MIN_FEATURE_SCALE, 1.0, scale).astype(np.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            net = _ProbeNet(PROBE_KINDS.get(self.kind)(hidden, int(self.hidden_units)), hidden)
        net.standardize_mean.copy_(torch.from_numpy(mean))
        net.standardize_scale.copy_(torch.from_numpy(scale))
        weights = self._sample_weights(ya)
        self.train_loss_curve_: list[float] = []
        self.validation_loss_curve_: list[float] = []
        self.n_features_in_ = hidden
        self.classes_ = np.array([0, 1])
        self.module_ = self._train(net, Xa, ya, weights, tr, va)
        self.module_.eval()
        logger.info("fitted %s probe on %s: %d samples, %d epochs (best %d)", self.kind, self._describe(), n,
                    self.n_epochs_, self.best_epoch_)
        return self

    def _train(self, net: _ProbeNet, X: NDArray[np.float32], y: NDArray[np.int64], w: NDArray[np.float32],
               tr: NDArray[np.intp], va: NDArray[np.intp]) -> _ProbeNet:
        gen = torch.Generator().manual_seed(int(self.random_state))
        xt, yt, wt = (torch.from_numpy(X[tr]), torch.from_numpy(y[tr]).float(), torch.from_numpy(w[tr]))
        xv, yv, wv = (torch.from_numpy(X[va]), torch.from_numpy(y[va]).float(), torch.from_numpy(w[va]))
        opt = torch.optim.AdamW(net.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay))
        bce = nn.BCEWithLogitsLoss(reduction="none")
        best_loss, best_state, best_epoch, stale = float("inf"), copy.deepcopy(net.state_dict()), 0, 0
        bs = int(self.batch_size)
        epoch = 0
        for epoch in range(1, int(self.max_epochs) + 1):
            net.train()
            order = torch.randperm(xt.shape[0], generator=gen)
            total, weight_sum = 0.0, 0.0
            for start in range(0, xt.shape[0], bs):
                idx = order[start:start + bs]
                loss_vec = bce(net(xt[idx]), yt[idx]) * wt[idx]  # (b,)
                loss = loss_vec.sum() / wt[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss_vec.sum().detach())
                weight_sum += float(wt[idx].sum())
            self.train_loss_curve_.append(total / weight_sum)
            if va.size == 0:
                best_epoch = epoch
                continue
            net.eval()
            with torch.no_grad():
                val = float((bce(net(xv), yv) * wv).sum() / wv.sum())
            self.validation_loss_curve_.append(val)
            if val < best_loss - float(self.tol):
                best_loss, best_state, best_epoch, stale = val, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= int(self.patience):
                    break
        if va.size:
            net.load_state_dict(best_state)
        self.n_epochs_ = epoch
        self.best_epoch_ = best_epoch
        return net

    # -- prediction -------------------------------------------------------------------------------------------

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.module_.parameters()).device
        outs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], PREDICT_CHUNK_ROWS):
                outs.append(self.module_(x[start:start + PREDICT_CHUNK_ROWS].to(device)))
        return torch.cat(outs)

    def decision_function(self, X: Any) -> NDArray[np.float64]:
        """Logits of the positive class, ndarray of shape (n_samples,) (what temperature scaling takes)."""
        arr = self._check_input(X)
        return self._logits(torch.from_numpy(arr)).cpu().double().numpy()

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Probability of the positive class, ndarray of shape (n_samples,) (not scikit-learn's two columns).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, hidden_size)
        """
        z = self.decision_function(X)
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, X: Any) -> NDArray[np.int64]:
        """Labels ``predict_proba(X) >= 0.5``, ndarray of shape (n_samples,)."""
        return (self.predict_proba(X) >= DECISION_THRESHOLD).astype(np.int64)

    @overload
    def __call__(self, hidden: torch.Tensor) -> torch.Tensor: ...

    @overload
    def __call__(self, hidden: NDArray[Any]) -> NDArray[np.float64]: ...

    def __call__(self, hidden: Any) -> Any:
        """Probabilities for a batch of hidden states: torch (B, hidden) -> torch (B,) float32 on the same device.

        Runs the probe on the input's device (the module moves there once); numpy input returns
        ``predict_proba(hidden)``.
        """
        if not isinstance(hidden, torch.Tensor):
            return self.predict_proba(hidden)
        check_is_fitted(self, "module_")
        if hidden.ndim != 2 or hidden.shape[1] != self.n_features_in_:
            raise ValueError(f"hidden has shape {tuple(hidden.shape)} but this probe was trained on "
                             f"{self._describe()}; pass (B, {self.n_features_in_}) hidden states of that layer")
        x = hidden.detach().float()
        if not torch.isfinite(x).all():
            raise ValueError("hidden contains NaN or infinite values; check the tapped layer (float16 overflow?)")
        if next(self.module_.parameters()).device != x.device:
            self.module_.to(x.device)
        with torch.no_grad():
            return torch.sigmoid(self.module_(x))

    # -- compatibility and persistence --------------------------------------------------------------------------

    def check_compatible(self, model_name: str | None = None, hidden_size: int | None = None,
                         layer: int | None = None) -> None:
        """Raise ValueError unless this probe was trained for the given model, hidden size and layer.

        Arguments left as None are not checked. Layers are compared literally (``-1`` and ``num_layers`` name the
        same layer but compare unequal; record layers one way).

        Raises
        ------
        ValueError
            e.g. "probe was trained for model 'tiny' (hidden 128, layer -1); this is model 'SmolLM2-135M' (hidden
            576, layer -1): the model name and the hidden size differ. ..."
        """
        check_is_fitted(self, "module_")
        problems = []
        if model_name is not None and self.model_name is not None and model_name != self.model_name:
            problems.append("the model name")
        if model_name is not None and self.model_name is None:
            logger.warning("this probe records no model_name, so it cannot be checked against %r", model_name)
        if hidden_size is not None and int(hidden_size) != self.n_features_in_:
            problems.append("the hidden size")
        if layer is not None and self.layer is not None and int(layer) != self.layer:
            problems.append("the layer")
        if problems:
            raise ValueError(
                f"probe was trained for {self._describe()}; this is model {model_name!r} (hidden {hidden_size}, "
                f"layer {layer}): {' and '.join(problems)} differ{'s' if len(problems) == 1 else ''}. A probe reads "
                "one layer of one model; train a probe on this model's hidden states or load the one made for it")

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``probe.safetensors`` (weights and standardisation) and ``probe.json`` to ``directory``.

        The JSON records the parameters, the thinkctl version and the model the probe belongs to (``model_name``,
        ``hidden_size``, ``layer``). Raises ValueError when ``model_name`` or ``layer`` is unset.

        Returns
        -------
        pathlib.Path of the JSON file.
        """
        check_is_fitted(self, "module_")
        if self.model_name is None or self.layer is None:
            raise ValueError(f"set model_name and layer before saving (got model_name={self.model_name!r}, "
                             f"layer={self.layer!r}): a saved probe must say which model's hidden states it reads, "
                             "e.g. probe.set_params(model_name='SmolLM2-135M-Instruct', layer=-1)")
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        save_file(tensors, str(d / WEIGHTS_FILE), metadata={"format": "thinkctl.predictors",
                                                             "kind": type(self).__name__})
        state = {"n_features_in": int(self.n_features_in_), "n_epochs": int(self.n_epochs_),
                 "best_epoch": int(self.best_epoch_), "weights_file": WEIGHTS_FILE,
                 "train_loss_curve": [float(v) for v in self.train_loss_curve_],
                 "validation_loss_curve": [float(v) for v in self.validation_loss_curve_]}
        meta = {"model_name": self.model_name, "hidden_size": int(self.n_features_in_), "layer": int(self.layer)}
        return write_json(d / PROBE_FILE, envelope(type(self).__name__, self.get_params(), state, meta))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], expected_model: ExpectedModel = None) -> "HiddenStateProbe":
        """Load a probe written by :meth:`save`.

        Parameters
        ----------
        directory : path
        expected_model : str or mapping, optional
            The model it will be used with: a model name, or a mapping with any of ``model_name``, ``hidden_size``,
            ``layer`` (passed to :meth:`check_compatible`).

        Raises
        ------
        ValueError
            When the files are not a thinkctl probe, come from an incompatible thinkctl, the weights do not match the
            JSON, or the probe belongs to another model than ``expected_model``.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        source = str(d / PROBE_FILE)
        doc = open_envelope(read_json(d / PROBE_FILE), cls.__name__, source)
        params, state, meta = dict(doc["params"]), dict(doc["state"]), dict(doc["metadata"])
        try:
            probe = cls(**params)
        except TypeError as exc:
            raise ValueError(
                f"{source} has parameters this thinkctl does not know ({exc}); refit and save again") from exc
        probe._check_params()
        hidden = int(state["n_features_in"])
        if meta.get("hidden_size") != hidden or meta.get("model_name") != probe.model_name:
            raise ValueError(f"{source} is inconsistent (metadata {meta} vs parameters); the file is damaged")
        weights_path = d / str(state.get("weights_file", WEIGHTS_FILE))
        if not weights_path.is_file():
            raise FileNotFoundError(f"no weights at {str(weights_path)!r}; a saved probe needs {WEIGHTS_FILE} next "
                                    f"to {PROBE_FILE}")
        try:
            tensors = load_file(str(weights_path))
        except SafetensorError as exc:
            raise ValueError(f"{str(weights_path)!r} is not a readable safetensors file ({exc})") from exc
        net = _ProbeNet(PROBE_KINDS.get(probe.kind)(hidden, int(probe.hidden_units)), hidden)
        try:
            net.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{str(weights_path)!r} does not match the architecture in {source} ({exc}); the two "
                             "files do not belong together") from exc
        net.eval()
        probe.module_ = net
        probe.n_features_in_ = hidden
        probe.classes_ = np.array([0, 1])
        probe.n_epochs_ = int(state["n_epochs"])
        probe.best_epoch_ = int(state["best_epoch"])
        probe.train_loss_curve_ = list(state.get("train_loss_curve", []))
        probe.validation_loss_curve_ = list(state.get("validation_loss_curve", []))
        if expected_model is not None:
            if isinstance(expected_model, str):
                probe.check_compatible(model_name=expected_model)
            elif isinstance(expected_model, Mapping):
                unknown = set(expected_model) - {"model_name", "hidden_size", "layer"}
                if unknown:
                    raise ValueError(f"expected_model has unknown keys {sorted(unknown)}; use model_name, "
                                     "hidden_size and layer")
                probe.check_compatible(**expected_model)
            else:
                raise ValueError(f"expected_model={expected_model!r} must be a model name or a mapping with "
                                 "model_name / hidden_size / layer")
        return probe
