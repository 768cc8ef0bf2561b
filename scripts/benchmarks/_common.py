"""Experiment code shared by the benchmarks in this folder (a module, not a script).

What more than one of ``benchmark.py``, ``flipout_sharing.py``, ``evidence.py``,
``out_of_the_box.py`` and ``defaults_sweep.py`` needs: where the peer libraries live,
the estimators, the gradient-variance protocol, the data sets in the form the worker
(``_worker.py``) takes, the scores and summaries of the tables, and the rows of the
out-of-the-box comparison with their networks. The data sets themselves come from
:mod:`torch_blue.datasets`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

import _worker
from torch_blue import vi
from torch_blue.datasets import load_digits, load_fashion_mnist, load_mnist1d, load_ood
from torch_blue.uncertainty import (
    accuracy,
    brier_score,
    expected_calibration_error,
    gaussian_mixture_log_likelihood,
    mutual_information,
    negative_log_likelihood,
    ood_auroc,
    predictive_probs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PEERS_DIR = REPO_ROOT / ".bench" / "peers"
ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout", "shared_flipout")


# ---------------------------------------------------------------------------- gradients
def gradient_variance_data() -> tuple[Tensor, Tensor, str]:
    """Training images (flattened, in [0, 1]) and labels, and a description.

    Fashion-MNIST's training set if its IDX files are installed, else scikit-learn's
    8x8 digits (the training and test parts of :func:`torch_blue.datasets.load_digits`).
    """
    try:
        x, y, _, _ = load_fashion_mnist()
        source = "Fashion-MNIST training set (MLP 784-400-400-10)"
    except FileNotFoundError:
        x_train, y_train, x_test, y_test = load_digits()
        x, y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
        source = (
            "scikit-learn digits (Fashion-MNIST not installed; MLP input width changed "
            "to 64: 64-400-400-10)"
        )
    return x.flatten(1), y, source


def top_layer_gradients(
    model: Any,
    loss_fn: Any,
    batches: Sequence[tuple[Tensor, Tensor]],
    draws: int,
    samples: int,
    seed: int,
) -> dict[str, Tensor]:
    """Gradients of the loss w.r.t. the last layer's weight means, per estimator.

    Every estimator starts from ``model``'s current parameters and from the noise
    seed ``seed``. Returns estimator -> ``(len(batches), draws, elements)``.
    """
    initial = deepcopy(model.state_dict())
    result = {}
    for estimator in ESTIMATORS:
        model.load_state_dict(initial)
        model.estimator = estimator
        torch.manual_seed(seed)
        per_batch = []
        for xb, yb in batches:
            draws_here = []
            for _ in range(draws):
                model.zero_grad(set_to_none=True)
                loss_fn(model(xb, samples=samples), yb).backward()
                draws_here.append(model[-1]._weight_mean.grad.detach().flatten().clone())
            per_batch.append(torch.stack(draws_here))
        result[estimator] = torch.stack(per_batch)
    model.load_state_dict(initial)
    return result


# ---------------------------------------------------------------------------- data
@dataclass
class Dataset:
    """Inputs and targets of one data set, ready for the worker.

    Attributes
    ----------
    name : str
        For tables and file names.
    x_train, y_train, x_test, y_test : Tensor
        Inputs (normalised) and targets (classes, or standardised regression targets;
        ``y_test`` stays on the original scale).
    x_ood : Tensor, optional
        Out-of-distribution inputs in the format of ``x_test``.
    ood_name : str
        What ``x_ood`` is.
    y_mean, y_scale : float
        Regression only: how the training targets were standardised.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_ood: Optional[Tensor] = None
    ood_name: str = ""
    y_mean: float = 0.0
    y_scale: float = 1.0


def take_first(x: Tensor, n: Optional[int]) -> Tensor:
    """The first ``n`` rows of ``x`` (all of them for ``None``)."""
    return x if n is None else x[:n]


def load_image_data(name: str, data_dir: Path, limit: Optional[int]) -> Dataset:
    """Digits (the tutorial's split, seed 0) or Fashion-MNIST, with their OOD set.

    The OOD sets are :func:`torch_blue.datasets.load_ood`'s: Fashion-MNIST test
    images reduced to 8x8 for the digits, 5,000 MNIST digits for Fashion-MNIST. When
    it cannot be loaded the run goes on without OOD scores, with a note.
    """
    split = load_digits(seed=0) if name == "digits" else load_fashion_mnist(data_dir)
    try:
        x_ood, ood_name = load_ood(name, data_dir, seed=0)
        x_ood = take_first(x_ood, limit)
    except ImportError as error:
        print(f"note: {name} OOD set unavailable ({error})", file=sys.stderr)
        x_ood, ood_name = None, ""
    return Dataset(name, *(take_first(t, limit) for t in split), x_ood, ood_name)


def load_mnist1d_data(limit: Optional[int]) -> Dataset:
    """MNIST-1D generated with its published arguments (4000 train / 1000 test).

    See :func:`torch_blue.datasets.load_mnist1d`; the inputs have one channel,
    ``(N, 1, 40)``.
    """
    return Dataset("mnist1d", *(take_first(t, limit) for t in load_mnist1d()))


def uci_split(
    name: str, x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> Dataset:
    """Normalise inputs and targets with the training split's mean and std."""
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    x_std[x_std == 0] = 1.0
    y_mean, y_std = float(y[train].mean()), float(y[train].std())

    def inputs(rows: np.ndarray) -> Tensor:
        return torch.as_tensor((x[rows] - x_mean) / x_std, dtype=torch.float32)

    return Dataset(
        name,
        inputs(train),
        torch.as_tensor((y[train] - y_mean) / y_std, dtype=torch.float32).unsqueeze(-1),
        inputs(test),
        torch.as_tensor(y[test], dtype=torch.float32).unsqueeze(-1),
        y_mean=y_mean,
        y_scale=y_std,
    )


# ---------------------------------------------------------------------------- scores
def classification_scores(result: dict, data: Dataset, bayesian: bool) -> dict[str, float]:
    """Accuracy, NLL, ECE, Brier and OOD AUROC of sampled logits ``(S, N, C)``."""
    logits, y = result["test"], data.y_test
    scores = {
        "accuracy": float(accuracy(logits, y, "logits")),
        "nll": float(negative_log_likelihood(logits, y, "logits")),
        "ece": float(expected_calibration_error(logits, y, input_type="logits")),
        "brier": float(brier_score(logits, y, "logits")),
    }
    if "ood" in result:
        score_in, score_out = (
            ood_score(logits, bayesian),
            ood_score(result["ood"], bayesian),
        )
        scores["ood_auroc"] = float(ood_auroc(score_in, score_out))
    return scores


def ood_score(logits: Tensor, bayesian: bool) -> Tensor:
    """Mutual information for a Bayesian network, 1 - max softmax for the twin."""
    if bayesian:
        return mutual_information(logits, "logits")
    return 1 - predictive_probs(logits, "logits").amax(-1)


def regression_scores(result: dict, data: Dataset) -> dict[str, float]:
    """RMSE and test log-likelihood on the original scale of the targets.

    With a learned noise the predictive is the mixture of ``N(mu_s, sigma^2)`` over
    the samples; without (upstream's ``MeanFieldNormal``) it is the Gaussian with the
    samples' mean and standard deviation, which is what that likelihood trains.
    """
    means = result["test"] * data.y_scale + data.y_mean  # (S, N, 1)
    y = data.y_test
    rmse = float((means.mean(0) - y).square().mean().sqrt())
    if result["noise_std"] is not None:
        ll = gaussian_mixture_log_likelihood(means, result["noise_std"] * data.y_scale, y)
    else:
        std = means.std(0).clamp_min(1e-6 * data.y_scale)
        ll = gaussian_mixture_log_likelihood(means.mean(0, keepdim=True), std, y)
    return {"rmse": rmse, "log_likelihood": float(ll)}


def summary(values: Sequence[float], standard_error: bool) -> Optional[tuple[float, float]]:
    """Mean and spread (std over seeds, or standard error of the mean)."""
    if not values:
        return None
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    if standard_error:
        spread /= math.sqrt(len(values))
    return mean, spread


@dataclass
class Check:
    """One of the issue's targets: measured against a bound."""

    description: str
    value: Optional[float]
    bound: float
    at_most: bool

    @property
    def met(self) -> Optional[bool]:
        """Whether the target is met (``None`` if it was not measured)."""
        if self.value is None:
            return None
        return self.value <= self.bound if self.at_most else self.value >= self.bound

    def line(self) -> str:
        """A Markdown list item: description, value, target and verdict."""
        if self.met is None:
            return f"- {self.description}: not measured"
        relation = "<=" if self.at_most else ">="
        verdict = "met" if self.met else "MISSED"
        target = f"target {relation} {self.bound:.4g}"
        return f"- {self.description}: {self.value:.4g} ({target}) {verdict}"


# ---------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class RowSpec:
    """One row: data, network and the twin's recipe.

    Attributes
    ----------
    name : str
        Row name on the command line.
    task : {"classification", "regression"}
        Loss and scores.
    source : str
        Data: ``"digits"``, ``"mnist1d"``, ``"fashion"``, ``"sine"`` or a regression
        set with splits (``"boston"``, ``"concrete"``, ``"diabetes"``, ``"auto-mpg"``).
    architecture : {"mlp", "lenet5", "conv1d"}
        Network of ``_worker.layers``; ``hidden`` its MLP widths.
    epochs : int
        The usual budget (full batch: steps); ``quick_epochs`` under ``--quick``.
    lr, batch_size, train_samples : float, int or None, int
        Adam's learning rate, the batch size (``None``: full batch), weight samples
        per step for torch_blue and bayesian-torch.
    """

    name: str
    task: str
    source: str
    architecture: str
    hidden: tuple[int, ...]
    epochs: int
    lr: float = 1e-3
    batch_size: Optional[int] = 64
    train_samples: int = 4
    quick_epochs: int = 1

    @property
    def has_splits(self) -> bool:
        """Whether the seeds are the splits of a regression set."""
        return self.task == "regression" and self.source != "sine"

    @property
    def outputs(self) -> int:
        """Classes, or 1 for regression."""
        return 10 if self.task == "classification" else 1


ROWS = {
    spec.name: spec
    for spec in (
        RowSpec("digits-mlp", "classification", "digits", "mlp", (100, 100), 100),
        RowSpec("mnist1d-mlp", "classification", "mnist1d", "mlp", (100, 100), 50),
        RowSpec("mnist1d-cnn", "classification", "mnist1d", "conv1d", (), 50),
        RowSpec("fashion-mlp", "classification", "fashion", "mlp", (512, 512), 5),
        RowSpec("fashion-lenet5", "classification", "fashion", "lenet5", (), 5),
        *(
            RowSpec(name, "regression", name, "mlp", (50,), 40, batch_size=32)
            for name in ("boston", "concrete", "diabetes", "auto-mpg")
        ),
        RowSpec(
            "sine-1d",
            "regression",
            "sine",
            "mlp",
            (50, 50),
            300,
            lr=1e-2,
            batch_size=None,
            train_samples=8,
            quick_epochs=10,
        ),
    )
}


PLAIN = _worker.PLAIN_MODULES


SWAPPED = {"linear": vi.VILinear, "conv1d": vi.VIConv1d, "conv2d": vi.VIConv2d}


def build_network(
    spec: RowSpec, in_shape: tuple[int, ...], bayesian: bool, **layer_kwargs: Any
) -> nn.Module:
    """The twin (``nn.Sequential``) or its class-swapped torch_blue version.

    The Bayesian layers get exactly the twin's arguments and no distribution
    arguments, unless ``layer_kwargs`` (given to every Bayesian layer) says otherwise.
    """
    job = _worker.Job(
        data="",
        output="",
        architecture=spec.architecture,
        hidden=list(spec.hidden),
        outputs=spec.outputs,
    )
    layers = _worker.layers(job, in_shape)
    if not bayesian:
        return nn.Sequential(*(PLAIN[k](*a, **kw) for k, a, kw in layers))
    return vi.VISequential(
        *(
            SWAPPED[k](*a, **kw, **layer_kwargs) if k in SWAPPED else PLAIN[k](*a, **kw)
            for k, a, kw in layers
        )
    )


def names_type(choices: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown))}; choose from "
                + ", ".join(choices)
            )
        return names

    return parse


def print_header(script: str, argv: Sequence[str], threads: int) -> None:
    """Print the command that reproduces the run and the machine it ran on."""
    print(f"command: {shlex.join(['python', f'scripts/benchmarks/{script}', *argv])}")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {threads} thread(s)"
    )
