r"""Defaults sweep: the evidence behind the library's defaults, on validation data.

``docs/defaults.rst`` gives the reasons for the defaults (posterior start
``0.03 / sqrt(fan_in)``, standard Normal prior, losses per training example); this
script is the measurement behind the choice. It trains the tutorial's digits MLP
(64-100-100-10, ReLU) per configuration and seed and scores it on a VALIDATION split,
never on the test set: a stratified 20 % of the tutorial's training split
(``torch_blue.datasets.load_digits(seed=0)``), cut with the run's seed.

Recipe (``out_of_the_box``'s digits-mlp row): Adam lr 1e-3 (``--lr``), batch 64, 4
weight samples per step, 32 to predict, ``vi.KullbackLeiblerLoss(Categorical(),
dataset_size=N)`` with its default reduction. One run per seed is scored at each epoch
of ``--evals`` (default 100,300: the usual budget and 3x), the random state forked
around each evaluation: accuracy, NLL of the sample-averaged softmax, ECE (15 bins),
conf-acc (mean max probability minus accuracy; negative: underconfident) and the mean
posterior weight std of each layer (``radial``: its scale parameter; ``logit-scale`` adds
the fitted ``tau``). The table shows mean ± standard error over seeds.

Configurations (``--configs``; every other setting is the library's default):

* ``twin``: the deterministic ``nn.Sequential`` with ``nn.CrossEntropyLoss``.
* ``defaults``: the layers get no arguments.
* ``init-1.0``, ``init-0.3``, ``init-0.1``, ``init-0.03``, ``init-0.01``:
  ``variational_distribution=MeanFieldNormal(std=...)``, times ``1 / sqrt(fan_in)``; 1.0
  is upstream 1.1's start, 0.1 the default until December 2026, 0.03 the default.
* ``prior-3``, ``prior-10``, ``prior-0.1``: ``prior=MeanFieldNormal(std=...)``.
* ``prior-he``: ``prior=MeanFieldNormal(std=sqrt(2 / fan_in))`` per layer (He's scale).
* ``prior-3-fanin``: ``prior=MeanFieldNormal(std=3 / sqrt(fan_in))`` per layer: the
  spread of the initial weights, five times wider.
* ``prior-t``: ``prior=StudentTPrior(degrees_of_freedom=3.0)`` (scale 1): heavy tails.
* ``prior-t-fanin``, ``prior-t-he``: the Student-t prior (3 degrees of freedom) with
  scale ``1 / sqrt(fan_in)`` or ``sqrt(2 / fan_in)`` per layer: heavy tails with a
  fan-in scale, so that large weights stay cheap (Fortuin et al. 2022).
* ``prior-mixture``: ``prior=ScaleMixtureNormalPrior()`` (Blundell et al. 2015).
* ``prior-fitted``: a zero-mean Normal prior per weight tensor whose scale is fitted to
  the posterior (empirical Bayes, :class:`FittedScaleNormal`).
* ``radial``: ``variational_distribution=RadialNormal()`` (its default std is 1:
  upstream's start).
* ``sgd`` and ``twin-sgd``: ``torch.optim.SGD(lr=0.01, momentum=0.9)`` for Adam.
* ``sum-loss-sgd``: ``sgd`` with ``reduction="sum"`` (upstream's loss scale); expected
  to diverge: a non-finite loss stops the run, which is reported as diverged (NaN).
* ``heat-0.002``: the loss's ``heat=0.002``, a cold posterior (not an ELBO): about the
  weight that bayesian-torch's README recipe gives the KL of the hidden layers' weights
  (see ``docs/defaults.rst``, "What the peers optimise").
* ``logit-scale``: the defaults with a learned temperature of the Categorical
  likelihood, ``softmax(tau * f(x, w))`` with ``log tau`` a point estimate (started at
  0) trained with the weights on the ELBO: type-II maximum likelihood of a likelihood
  parameter, as the regression noise is fitted, not a cold posterior.

``--start-std X`` starts every config that sets no variational distribution of its own
at ``MeanFieldNormal(std=X)`` instead of the library's default: the tables in
``docs/defaults.rst`` measured before the default became 0.03 come back with
``--start-std 0.1``.

Examples
--------
Everything (2 seeds; hours on one CPU thread)::

    python scripts/benchmarks/defaults_sweep.py --output defaults_sweep.json

The initial std only, at the usual budget, 5 seeds::

    python scripts/benchmarks/defaults_sweep.py --configs twin,defaults,init-1.0,init-0.3 \
        --evals 100 --seeds 5

``--quick`` runs the pipeline in seconds for the tests (1 seed, ``--evals 1,2``, 256
training examples, 4 prediction samples); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _worker
from _common import PLAIN, ROWS, build_network, names_type, print_header
from torch_blue import vi
from torch_blue.datasets import load_digits
from torch_blue.uncertainty import expected_calibration_error
from torch_blue.vi.distributions import (
    Categorical,
    MeanFieldNormal,
    RadialNormal,
    ScaleMixtureNormalPrior,
    StudentTPrior,
)

SPEC = ROWS["digits-mlp"]  # network, batch size, samples per step, Adam's lr
QUICK_LIMIT = 256
LayerArguments = Callable[[int], dict[str, Any]]  # fan_in -> VILinear keyword arguments


def _no_arguments(fan_in: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Config:
    """One configuration: network kind, layer arguments, optimiser and loss scale."""

    bayesian: bool = True
    layer_arguments: LayerArguments = _no_arguments
    sgd: bool = False  # SGD(lr=0.01, momentum=0.9) instead of Adam
    reduction: Optional[str] = None  # None: the loss's default
    heat: float = 1.0  # the loss's heat (1: the ELBO)
    logit_scale: bool = False  # a LogitScale after the last layer


class LogitScale(nn.Module):
    """Multiplies the logits by a learned ``tau = exp(log_tau)`` (a point estimate)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.zeros(()))

    def forward(self, logits: Tensor) -> Tensor:
        """``tau * logits``."""
        return logits * self.log_tau.exp()


def _with(**kwargs: Any) -> Config:
    """The defaults with the same keyword arguments to every ``VILinear``."""
    return Config(layer_arguments=lambda fan_in: kwargs)


def _he_prior(fan_in: int) -> dict[str, Any]:
    return {"prior": MeanFieldNormal(std=math.sqrt(2 / fan_in))}


def _fan_in_prior(kind: str, c: float) -> LayerArguments:
    """Per-layer prior of scale ``c / sqrt(fan_in)``: Normal or Student-t (3 dof)."""

    def arguments(fan_in: int) -> dict[str, Any]:
        scale = c / math.sqrt(fan_in)
        if kind == "t":
            return {"prior": StudentTPrior(degrees_of_freedom=3.0, scale=scale)}
        return {"prior": MeanFieldNormal(std=scale)}

    return arguments


class FittedScaleNormal(MeanFieldNormal):
    r"""Prior :math:`\mathcal N(0, s^2)` whose scale is fitted to the posterior.

    :math:`s^2 = \mathrm{mean}(\mu^2 + \sigma^2)` over the variable's weights, the
    scale that maximises the ELBO for the current posterior (empirical Bayes), held
    fixed (detached) within a step.
    """

    _required_parameters = ("mean", "log_std")

    def _variance(self, hyperparameters: tuple[Tensor, ...]) -> Tensor:
        mean, log_std = hyperparameters
        with torch.no_grad():
            return (mean.square() + torch.exp(2 * log_std)).mean()

    def prior_log_prob(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = ()
    ) -> Tensor:
        """Element-wise log-density under the fitted scale."""
        zero = torch.zeros((), dtype=sample.dtype, device=sample.device)
        return self.log_prob(sample, (zero, 0.5 * self._variance(hyperparameters).log()))

    def prior_log_prob_sum(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = ()
    ) -> Tensor:
        """Total log-density under the fitted scale."""
        return self.prior_log_prob(sample, hyperparameters).sum()


CONFIGS = {
    "twin": Config(bayesian=False),
    "defaults": Config(),
    "init-1.0": _with(variational_distribution=MeanFieldNormal(std=1.0)),
    "init-0.3": _with(variational_distribution=MeanFieldNormal(std=0.3)),
    "init-0.1": _with(variational_distribution=MeanFieldNormal(std=0.1)),
    "init-0.03": _with(variational_distribution=MeanFieldNormal(std=0.03)),
    "init-0.01": _with(variational_distribution=MeanFieldNormal(std=0.01)),
    "prior-3": _with(prior=MeanFieldNormal(std=3.0)),
    "prior-10": _with(prior=MeanFieldNormal(std=10.0)),
    "prior-0.1": _with(prior=MeanFieldNormal(std=0.1)),
    "prior-he": Config(layer_arguments=_he_prior),
    "prior-3-fanin": Config(layer_arguments=_fan_in_prior("normal", 3.0)),
    "prior-t": _with(prior=StudentTPrior(degrees_of_freedom=3.0)),
    "prior-t-fanin": Config(layer_arguments=_fan_in_prior("t", 1.0)),
    "prior-t-he": Config(layer_arguments=_fan_in_prior("t", math.sqrt(2))),
    "prior-mixture": _with(prior=ScaleMixtureNormalPrior()),
    "prior-fitted": _with(prior=FittedScaleNormal()),
    "radial": _with(variational_distribution=RadialNormal()),
    "sgd": Config(sgd=True),
    "twin-sgd": Config(bayesian=False, sgd=True),
    "sum-loss-sgd": Config(sgd=True, reduction="sum"),
    "heat-0.002": Config(heat=0.002),
    "logit-scale": Config(logit_scale=True),
}


class Split(NamedTuple):
    """Training and validation tensors cut from the tutorial's training split."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor


class Digits(NamedTuple):
    """The tutorial's digits: ``torch_blue.datasets.load_digits(seed=0)``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@functools.cache
def _tutorial_digits() -> Digits:
    return Digits(*load_digits(seed=0))


def validation_split(seed: int, limit: Optional[int] = None) -> Split:
    """A stratified 80/20 split of the tutorial's digits training part (no test data).

    ``limit`` cuts the training part (not the validation part) to its first examples.
    """
    from sklearn.model_selection import train_test_split

    x, y, _, _ = _tutorial_digits()
    train, val = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=y.numpy(), random_state=seed
    )
    train = train[:limit]
    return Split(x[train], y[train], x[val], y[val])


def build_model(
    config: Config, in_shape: tuple[int, ...], start_std: Optional[float] = None
) -> nn.Module:
    """The twin or the torch_blue MLP with the config's arguments to each ``VILinear``.

    ``start_std`` (``--start-std``) gives the layers ``MeanFieldNormal(std=start_std)``
    where the config sets no variational distribution of its own.
    """
    if not config.bayesian:
        return build_network(SPEC, in_shape, bayesian=False)
    job = _worker.Job(
        data="", output="", architecture="mlp", hidden=list(SPEC.hidden), outputs=10
    )
    layers = []
    for kind, args, kwargs in _worker.layers(job, in_shape):
        if kind == "linear":
            arguments = {}
            if start_std is not None:
                arguments["variational_distribution"] = MeanFieldNormal(std=start_std)
            arguments.update(config.layer_arguments(args[0]))
            layers.append(vi.VILinear(*args, **kwargs, **arguments))
        else:
            layers.append(PLAIN[kind](*args, **kwargs))
    if config.logit_scale:
        layers.append(LogitScale())
    return vi.VISequential(*layers)


def make_optimizer(
    config: Config, params: Iterable[Tensor], lr: float
) -> torch.optim.Optimizer:
    """Adam with ``lr``, or SGD(lr=0.01, momentum=0.9) for the SGD configs."""
    if config.sgd:
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def posterior_stds(model: nn.Module) -> list[float]:
    """Mean posterior std of the weights of each ``VILinear`` (empty for the twin)."""
    return [
        m._weight_log_std.detach().exp().mean().item()
        for m in model.modules()
        if isinstance(m, vi.VILinear)
    ]


def score(model: nn.Module, split: Split, bayesian: bool, samples: int) -> dict[str, Any]:
    """Validation accuracy, NLL, ECE (15 bins) and conf - acc; posterior stds."""
    with torch.no_grad():
        if bayesian:
            logits = model(split.x_val, samples=samples).as_subclass(Tensor)
        else:
            logits = model(split.x_val).unsqueeze(0)
    probs = logits.softmax(-1)  # (S, N, C)
    mean = probs.mean(0)
    if not torch.isfinite(mean).all():
        return {"diverged": True}
    accuracy = (mean.argmax(-1) == split.y_val).double().mean().item()
    picked = mean[torch.arange(len(split.y_val)), split.y_val]
    return {
        "diverged": False,
        "accuracy": accuracy,
        "nll": -picked.clamp_min(1e-12).log().mean().item(),
        "ece": expected_calibration_error(probs, split.y_val, n_bins=15).item(),
        "conf_minus_acc": mean.max(-1).values.mean().item() - accuracy,
        "posterior_std": posterior_stds(model),
        "logit_scale": [
            m.log_tau.exp().item() for m in model.modules() if isinstance(m, LogitScale)
        ],
    }


def train_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    order: Tensor,
    bayesian: bool,
) -> bool:
    """One epoch in batches of ``order``; ``False`` (and stop) on a non-finite loss."""
    for i in range(0, len(order), SPEC.batch_size):
        index = order[i : i + SPEC.batch_size]
        x = split.x_train[index]
        output = model(x, samples=SPEC.train_samples) if bayesian else model(x)
        loss = loss_fn(output, split.y_train[index])
        if not torch.isfinite(loss):
            return False
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return True


def run_config(
    name: str,
    seed: int,
    split: Split,
    evals: Sequence[int],
    samples: int,
    lr: float,
    start_std: Optional[float] = None,
) -> list[dict[str, Any]]:
    """Train config ``name`` once and score it at each epoch of ``evals``.

    Parameters
    ----------
    name : str
        Key of ``CONFIGS``.
    seed : int
        Seed of the initialisation, the batch order and the weight samples.
    split : Split
        Training and validation data.
    evals : sequence of int
        Epochs after which the model is scored (the RNG is forked around scoring).
    samples : int
        Weight samples to predict (the twin predicts once).
    lr : float
        Adam's learning rate (the SGD configs use 0.01).
    start_std : float, optional
        Initial posterior scale of the configs that set none (see :func:`build_model`).

    Returns
    -------
    list of dict
        One result per epoch of ``evals``. After a non-finite loss or prediction the
        remaining ones have ``diverged=True``, ``diverged_epoch`` and no scores.
    """
    config = CONFIGS[name]
    torch.manual_seed(seed)
    model = build_model(config, tuple(split.x_train.shape[1:]), start_std)
    n = len(split.x_train)
    if config.bayesian:
        reduction = {} if config.reduction is None else {"reduction": config.reduction}
        loss_fn = vi.KullbackLeiblerLoss(
            Categorical(), dataset_size=n, heat=config.heat, **reduction
        )
    else:
        loss_fn = nn.CrossEntropyLoss()
    optimizer = make_optimizer(config, model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)  # the same batches for every config
    results: list[dict[str, Any]] = []
    for epoch in range(1, max(evals) + 1):
        order = torch.randperm(n, generator=generator)
        scores = None
        if train_epoch(model, loss_fn, optimizer, split, order, config.bayesian):
            if epoch not in evals:
                continue
            with torch.random.fork_rng(devices=[]):  # training goes on as if unscored
                scores = score(model, split, config.bayesian, samples)
        if scores is None or scores["diverged"]:
            gone = {"diverged": True, "diverged_epoch": epoch}
            rest = [e for e in evals if e >= epoch]
            return results + [
                {"config": name, "seed": seed, "epochs": e, **gone} for e in rest
            ]
        results.append({"config": name, "seed": seed, "epochs": epoch, **scores})
    return results


# ---------------------------------------------------------------------------- report
COLUMNS = {  # key -> (header, scale, format)
    "accuracy": ("accuracy %", 100.0, ".2f"),
    "nll": ("NLL", 1.0, ".4f"),
    "ece": ("ECE", 1.0, ".4f"),
    "conf_minus_acc": ("conf-acc", 1.0, "+.4f"),
}


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error over the seeds that did not diverge, per config and epoch."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["config"], r["epochs"]), []).append(r)
    summary = []
    for (name, epochs), group in groups.items():
        kept = [r for r in group if not r["diverged"]]
        entry = {"config": name, "epochs": epochs, "seeds": len(group)}
        entry["diverged"] = len(group) - len(kept)
        for key in COLUMNS:
            stats = _common.summary([r[key] for r in kept], True)
            entry[key], entry[f"{key}_se"] = stats or (None, None)  # all diverged
        stds = [r["posterior_std"] for r in kept if r["posterior_std"]]
        entry["posterior_std"] = np.mean(stds, axis=0).tolist() if stds else []
        taus = [r["logit_scale"] for r in kept if r.get("logit_scale")]
        entry["logit_scale"] = np.mean(taus, axis=0).tolist() if taus else []
        summary.append(entry)
    return summary


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    """One row per config and eval epoch: mean ± standard error over seeds."""
    header = ["config", "epochs", *(c[0] for c in COLUMNS.values())]
    header += ["posterior weight std per layer", "diverged"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for e in summary:
        cells = [e["config"], str(e["epochs"])]
        for key, (_, scale, fmt) in COLUMNS.items():
            cells.append("NaN" if e[key] is None else format(e[key] * scale, fmt))
            if e["seeds"] - e["diverged"] > 1:  # (no standard error from one seed)
                cells[-1] += f" ± {e[key + '_se'] * scale:.{fmt[-2]}f}"
        cells.append(" / ".join(f"{s:.3g}" for s in e["posterior_std"]) or "n/a")
        if e.get("logit_scale"):
            cells[-1] += "; tau " + " / ".join(f"{t:.3g}" for t in e["logit_scale"])
        cells.append(f"{e['diverged']}/{e['seeds']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line; ``--quick`` fills in the seeds and epochs not given."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=f"configs: {', '.join(CONFIGS)}"
    )
    add = parser.add_argument
    names = names_type(list(CONFIGS), "config")
    add(
        "--configs", type=names, default=list(CONFIGS), help="comma-separated; default: all"
    )
    add("--seeds", type=int, help="default 2 (--quick: 1)")
    add("--evals", help="epochs to score at along one run (default 100,300; --quick: 1,2)")
    add("--lr", type=float, default=SPEC.lr, help="Adam's learning rate (default 1e-3)")
    add(
        "--start-std",
        type=float,
        help="start the layers at MeanFieldNormal(std=X) where a config sets no "
        "variational distribution (default: the library's; 0.1 reproduces the tables "
        "measured before the default became 0.03)",
    )
    add("--threads", type=int, default=1, help="torch threads (default 1)")
    add("--quick", action="store_true", help="seconds, for tests; numbers meaningless")
    add("--output", type=Path, help="JSON file with every per-seed result")
    add("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 2)
    text = args.evals or ("1,2" if args.quick else "100,300")
    try:
        args.evals = sorted({int(e) for e in text.split(",")})
    except ValueError:
        parser.error(f"--evals: integers expected, got {text!r}")
    if min(args.evals) < 1 or args.seeds < 1:
        parser.error("--evals and --seeds must be positive")
    if args.start_std is not None and not (
        math.isfinite(args.start_std) and args.start_std > 0
    ):
        parser.error(f"--start-std must be positive, got {args.start_std}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run every config and seed, print the table, write the JSON if asked."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print_header("defaults_sweep.py", argv, args.threads)
    print("scored on a validation split of the tutorial's digits training part")
    if args.start_std is not None:
        print(
            f"--start-std {args.start_std:g}: configs without a variational "
            "distribution of their own start at this std, not the library's default"
        )
    if args.quick:
        print("--quick: tiny budgets for testing the pipeline; the numbers mean nothing")
    from tqdm.auto import tqdm

    limit, samples = (QUICK_LIMIT, 4) if args.quick else (None, 32)
    runs = [(name, seed) for name in args.configs for seed in range(args.seeds)]
    results, notes = [], []
    for name, seed in tqdm(runs, disable=args.no_progress, unit="run", file=sys.stderr):
        split = validation_split(seed, limit)
        run = run_config(name, seed, split, args.evals, samples, args.lr, args.start_std)
        if run[-1]["diverged"]:
            notes.append(
                f"{name} seed {seed}: diverged in epoch {run[-1]['diverged_epoch']}"
            )
        results += run
    if notes:
        print("\n".join(notes))
    summary = summarise(results)
    print(f"\n{markdown_table(summary)}")
    if args.output is not None:
        report = {
            "command": argv,
            "machine": platform.platform(),
            "torch": torch.__version__,
            "quick": args.quick,
            "start_std": args.start_std,
            "results": results,
            "summary": summary,
        }
        args.output.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
