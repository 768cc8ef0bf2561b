"""Compare priors (and a radial posterior) on scikit-learn's 8x8 digits.

A Bayesian MLP 64-100-100-10 (``VILinear`` layers, ReLU) is trained by variational
inference with each prior in turn, and its test accuracy, negative log-likelihood
(NLL), expected calibration error (ECE, 15 equal-width bins) and sparsity are printed
as one Markdown table, with the training time. The rows:

* ``Normal(0, 1)``: the default prior, ``MeanFieldNormal()``;
* ``Normal, rescale_prior``: the same with ``rescale_prior=True`` (std
  ``1/sqrt(3 fan_in)`` per layer, the spread of ``nn.Linear``'s initialisation);
* ``scale mixture``: ``ScaleMixtureNormalPrior()`` (pi 1/2, sigma_1 1, sigma_2 e^-6);
* ``Laplace``, ``Student-t``, ``Normal-Gamma``, ``horseshoe``: ``LaplacePrior()``,
  ``StudentTPrior()`` (3 degrees of freedom), ``NormalGammaPrior()`` (hierarchical,
  one unknown mean and precision per weight tensor), ``HorseshoePrior()`` (global
  scale 1), all with their default hyperparameters;
* ``log-uniform``: ``LogUniformPrior()`` with the closed-form KL of Molchanov et al.;
* ``MOPED``: ``EmpiricalNormalPrior`` priors centred on the weights of the
  deterministic twin (trained first with the same budget), ``delta = 0.1``; its
  seconds include the twin's training;
* ``radial + Normal(0, 1)``: the ``RadialNormal`` variational distribution;
* ``deterministic``: the plain ``nn.Sequential`` twin, for reference.

Every Bayesian row trains with ``AnalyticalKullbackLeiblerLoss`` (``dataset_size`` =
number of training examples): the KL term is in closed form where one is registered
(column "KL") and a one-draw Monte Carlo estimate otherwise. The model runs with
``return_log_probs = False``, so the mean-field Normal layers sample their
pre-activations (local reparameterisation) for the data term; the radial layers draw
weights. Adam, learning rate ``--lr``, batch ``--batch-size``, ``--samples`` weight
samples per step; the variational distributions start with std ``--init-std /
sqrt(fan_in)`` (a narrower start than torch_blue's default, which the small training
set does not move far enough from in this budget). The KL weight (``heat``) rises
linearly from 0 to 1 over the first ``--warmup-epochs`` epochs
(``torch_blue.vi.schedules.LinearKLWarmup``, stepped per batch: KL warm-up as in
Sønderby et al. 2016, and in Molchanov et al. 2017 for the log-uniform prior); the
remaining epochs optimise the full ELBO. Predictions average the softmax over
``--eval-samples`` samples.

What to expect: 1,347 examples pay for little KL. A network at chance with
``q = p`` has a negative ELBO of about ``N log 10 = 3,100`` nats, and the networks
that fit are no better by that measure (the Normal(0, 1) row, seed 0: 620 nats of
data term plus 3,500 of KL), so where training ends depends on how hard the prior
pulls early on. Without warm-up (``--warmup-epochs 0``) the sparsity priors
(log-uniform, horseshoe) prune every weight and the network stays at chance. With
``rescale_prior`` (std ~0.06) weights large enough to matter are very expensive (the
Normal(0, 1) row's solution would cost 1.5 million nats of KL). The Normal-Gamma
prior's shared scale follows the weights down as they shrink, and training
collapses although better solutions exist (the Normal(0, 1) row's solution: about
3,050 nats in all under this prior).

Sparsity is the fraction of weights and biases whose signal-to-noise ratio
``|mean| / std`` (std of the weight's marginal) is below 1; for the log-uniform prior
it is the fraction with ``log alpha = log(std^2 / mean^2) > 3``, the pruning rule of
Molchanov et al. (2017).

Data: ``sklearn.datasets.load_digits`` (1797 images, pixels scaled to [0, 1]), one
stratified 75/25 split (``random_state=0``) for all seeds. With several ``--seeds``
the table shows mean ± standard deviation over seeds.

Usage::

    python scripts/priors_digits.py                      # all rows, seed 0
    python scripts/priors_digits.py --epochs 50 --seeds 0 1 2 --out priors.md
"""

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from torch_blue import datasets
from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    VILinear,
    VISequential,
    convert_to_vimodule,
    moped,
)
from torch_blue.vi.distributions import (
    Categorical,
    HorseshoePrior,
    LaplacePrior,
    LogUniformPrior,
    MeanFieldNormal,
    NormalGammaPrior,
    Prior,
    RadialNormal,
    ScaleMixtureNormalPrior,
    StudentTPrior,
    VariationalDistribution,
)
from torch_blue.vi.schedules import LinearKLWarmup

try:
    from torch_blue.uncertainty.metrics import (
        accuracy,
        expected_calibration_error,
        negative_log_likelihood,
    )
except ImportError:  # pragma: no cover - the metrics live in another part of the library
    accuracy = expected_calibration_error = negative_log_likelihood = None

HIDDEN = 100
ECE_BINS = 15
LOG_ALPHA_THRESHOLD = 3.0


@dataclass(frozen=True)
class Config:
    """One row of the table."""

    name: str
    label: str
    prior: Callable[[], Prior] = MeanFieldNormal
    variational: Optional[Callable[[float], VariationalDistribution]] = None
    rescale_prior: bool = False
    kind: str = "vi"  # "vi", "moped" or "deterministic"
    log_alpha_sparsity: bool = False


CONFIGS = [
    Config("normal", "Normal(0, 1)"),
    Config("normal-rescaled", "Normal, rescale_prior", rescale_prior=True),
    Config("scale-mixture", "scale mixture", ScaleMixtureNormalPrior),
    Config("laplace", "Laplace", LaplacePrior),
    Config("student-t", "Student-t", StudentTPrior),
    Config("normal-gamma", "Normal-Gamma", NormalGammaPrior),
    Config("log-uniform", "log-uniform", LogUniformPrior, log_alpha_sparsity=True),
    Config("horseshoe", "horseshoe", HorseshoePrior),
    Config("moped", "MOPED", kind="moped"),
    Config(
        "radial",
        "radial + Normal(0, 1)",
        variational=lambda std: RadialNormal(std=std),
    ),
    Config("deterministic", "deterministic", kind="deterministic"),
]
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}


@dataclass
class Data:
    """The digits, split."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits() -> Data:
    """scikit-learn's digits, pixels in [0, 1], stratified 75/25 split, flattened.

    :func:`torch_blue.datasets.load_digits` with seed 0, images as rows of 64.
    """
    x_train, y_train, x_test, y_test = datasets.load_digits(seed=0)
    return Data(x_train.flatten(1), y_train, x_test.flatten(1), y_test)


# ------------------------------------------------------------------------ metrics
def ece(logits: Tensor, targets: Tensor) -> Tensor:
    """ECE with 15 equal-width bins of the top predictive probability."""
    if expected_calibration_error is not None:
        return expected_calibration_error(logits, targets, ECE_BINS, "logits")
    probs = logits.softmax(-1).mean(0)  # pragma: no cover - fallback
    confidence, predicted = probs.max(-1)
    bins = torch.clamp((confidence * ECE_BINS).long(), max=ECE_BINS - 1)
    correct = (predicted == targets).float()
    gaps = torch.zeros(ECE_BINS).index_add_(0, bins, confidence - correct)
    return gaps.abs().sum() / len(targets)


def scores(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Accuracy, NLL and ECE of sampled logits ``(S, N, C)``."""
    if accuracy is not None:
        acc = accuracy(logits, targets, "logits")
        nll = negative_log_likelihood(logits, targets, "logits")
    else:  # pragma: no cover - fallback
        probs = logits.softmax(-1).mean(0)
        acc = (probs.argmax(-1) == targets).float().mean()
        log_p = torch.logsumexp(logits.log_softmax(-1), 0) - math.log(logits.shape[0])
        nll = -log_p.gather(-1, targets[:, None]).mean()
    return {"accuracy": acc.item(), "nll": nll.item(), "ece": ece(logits, targets).item()}


def sparsity(model: nn.Module, log_alpha: bool) -> float:
    """Fraction of weights with |mean|/std < 1 (or log alpha > 3)."""
    small = 0
    total = 0
    for module in model.modules():
        if not isinstance(module, VILinear):
            continue
        for variable, dist in module.variational_distribution.items():
            if dist is None:
                continue
            mean, log_std = (
                p.detach() for p in module.get_variational_parameters(variable)
            )
            if isinstance(dist, RadialNormal):
                std = dist.marginal_std((mean, log_std))
            else:
                std = log_std.exp()
            if log_alpha:
                pruned = 2 * torch.log(std) - torch.log(mean.square()) > LOG_ALPHA_THRESHOLD
            else:
                pruned = mean.abs() < std
            small += int(pruned.sum())
            total += mean.numel()
    return small / total


# ------------------------------------------------------------------------ training
def deterministic_model() -> nn.Sequential:
    """The plain twin 64-100-100-10."""
    return nn.Sequential(
        nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, 10),
    )  # fmt: skip


def bayesian_model(config: Config, init_std: float) -> VISequential:
    """The Bayesian MLP of ``config``."""
    variational = (config.variational or (lambda std: MeanFieldNormal(std=std)))(init_std)
    kwargs = dict(
        variational_distribution=variational,
        prior=config.prior(),
        rescale_prior=config.rescale_prior,
    )
    return VISequential(
        VILinear(64, HIDDEN, **kwargs), nn.ReLU(), VILinear(HIDDEN, HIDDEN, **kwargs),
        nn.ReLU(), VILinear(HIDDEN, 10, **kwargs),
    )  # fmt: skip


def batches(n: int, batch_size: int) -> list[Tensor]:
    """A random partition of ``range(n)`` into batches."""
    return list(torch.randperm(n).split(batch_size))


def train_deterministic(model: nn.Module, data: Data, args: argparse.Namespace) -> None:
    """Cross-entropy training of the plain twin."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(args.epochs):
        for index in batches(len(data.y_train), args.batch_size):
            optimizer.zero_grad()
            loss_fn(model(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()


def train_bayesian(
    model: VISequential, data: Data, args: argparse.Namespace
) -> AnalyticalKullbackLeiblerLoss:
    """Negative-ELBO training; returns the loss (it knows which KL terms are MC)."""
    model.return_log_probs = False
    loss_fn = AnalyticalKullbackLeiblerLoss(
        model, Categorical(), dataset_size=len(data.y_train)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = math.ceil(len(data.y_train) / args.batch_size)
    schedule = None
    if args.warmup_epochs:
        schedule = LinearKLWarmup(loss_fn, args.warmup_epochs * steps_per_epoch)
    for _ in range(args.epochs):
        for index in batches(len(data.y_train), args.batch_size):
            optimizer.zero_grad()
            output = model(data.x_train[index], samples=args.samples)
            loss = loss_fn(output, data.y_train[index])
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    if not math.isfinite(loss.item()):
        raise FloatingPointError("the loss is not finite")
    return loss_fn


def run(config: Config, seed: int, data: Data, args: argparse.Namespace) -> dict:
    """Train and evaluate one row for one seed."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    if config.kind == "deterministic":
        model = deterministic_model()
        train_deterministic(model, data, args)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            logits = model(data.x_test).unsqueeze(0)
        return {
            **scores(logits, data.y_test),
            "seconds": seconds,
            "kl": "-",
            "sparsity": None,
        }
    if config.kind == "moped":
        twin = deterministic_model()
        train_deterministic(twin, data, args)
        model = convert_to_vimodule(
            twin, keep_weights=True, variational_distribution=MeanFieldNormal()
        )
        moped(model, delta=args.delta)
    else:
        model = bayesian_model(config, args.init_std)
    loss_fn = train_bayesian(model, data, args)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = model(data.x_test, samples=args.eval_samples).as_plain()
    monte_carlo = loss_fn.monte_carlo_variables
    kl = "Monte Carlo" if monte_carlo else "closed form"
    return {
        **scores(logits, data.y_test),
        "seconds": seconds,
        "kl": kl,
        "sparsity": sparsity(model, config.log_alpha_sparsity),
    }


# ------------------------------------------------------------------------ report
def summary(values: list[float], digits: int, percent: bool = False) -> str:
    """Mean, with ± std over seeds when there are several."""
    scale = 100.0 if percent else 1.0
    mean = scale * statistics.fmean(values)
    text = f"{mean:.{digits}f}"
    if len(values) > 1:
        text += f" ± {scale * statistics.stdev(values):.{digits}f}"
    return text + (" %" if percent else "")


def table(rows: list[tuple[Config, list[dict]]]) -> str:
    """The Markdown table."""
    lines = [
        "| model | KL | test accuracy | NLL | ECE | sparsity | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for config, results in rows:

        def column(key: str, results: list[dict] = results) -> list:
            return [r[key] for r in results]

        sparse = column("sparsity")
        sparse_text = "-" if sparse[0] is None else summary(sparse, 1, percent=True)
        if config.log_alpha_sparsity and sparse[0] is not None:
            sparse_text += " (log alpha > 3)"
        lines.append(
            f"| {config.label} | {results[0]['kl']} | "
            f"{summary(column('accuracy'), 2, percent=True)} | "
            f"{summary(column('nll'), 3)} | {summary(column('ece'), 3)} | "
            f"{sparse_text} | {summary(column('seconds'), 1)} |"
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, argv: Sequence[str], data: Data) -> str:
    """Machine, command and settings."""
    return "\n".join(
        [
            "# Priors on the digits (Bayesian MLP 64-100-100-10)",
            "",
            f"Machine: {platform.platform()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
            f"Command: python scripts/priors_digits.py {shlex.join(argv)}",
            f"Settings: {len(data.y_train)} training / {len(data.y_test)} test digits, "
            f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, "
            f"S = {args.samples} samples per step, S = {args.eval_samples} for "
            f"prediction, initial std {args.init_std}/sqrt(fan_in), KL warm-up over "
            f"{args.warmup_epochs} epochs, seeds {' '.join(map(str, args.seeds))}",
        ]
    )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=60, help="epochs per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds")
    parser.add_argument("--out", help="also write the report to this Markdown file")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS_BY_NAME),
        help="comma-separated rows to run (default: all): " + ", ".join(CONFIGS_BY_NAME),
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--samples", type=int, default=4, help="samples per step")
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--init-std", type=float, default=0.1)
    parser.add_argument("--delta", type=float, default=0.1, help="MOPED delta")
    parser.add_argument(
        "--warmup-epochs", type=int, default=20, help="epochs of KL warm-up (0: none)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the matrices are too small to share)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS_BY_NAME]
    if unknown or not names:
        parser.error(f"unknown --configs {unknown}; choose from {list(CONFIGS_BY_NAME)}")
    args.configs = [CONFIGS_BY_NAME[n] for n in names]
    for name in ("epochs", "batch_size", "samples", "eval_samples", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup_epochs < 0:
        parser.error("--warmup-epochs must not be negative")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the comparison and print the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _main(args, argv)
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    data = load_digits()
    jobs = [(config, seed) for config in args.configs for seed in args.seeds]
    progress = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            progress = tqdm(total=len(jobs), unit="run", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is optional
            progress = None
    results: dict[str, list[dict]] = {}
    for config, seed in jobs:
        if progress is not None:
            progress.set_description(f"{config.name} seed {seed}")
        results.setdefault(config.name, []).append(run(config, seed, data, args))
        if progress is not None:
            progress.update()
    if progress is not None:
        progress.close()
    report = "\n".join(
        [
            header(args, argv, data),
            "",
            table([(c, results[c.name]) for c in args.configs]),
            "",
            "KL: closed form where one is registered for (prior, variational), else a "
            "one-draw Monte Carlo estimate (AnalyticalKullbackLeiblerLoss). Sparsity: "
            "fraction of weights with |mean|/std < 1. MOPED seconds include training "
            "its deterministic twin. Seconds are wall-clock training time (they depend on "
            "the load of the machine).",
            "",
        ]
    )
    print(report, end="")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
