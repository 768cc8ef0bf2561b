"""Train and predict one model of the evidence suite (``scripts/benchmarks/evidence.py``).

The parent process prepares the data and scores the predictions; this worker only
builds a network, trains it for a fixed budget and writes its sampled test outputs.
It uses nothing beyond upstream torch_blue 1.1's public API (``VILinear``,
``VIConv1d/2d``, ``VISequential``, ``KullbackLeiblerLoss``, ``Categorical``,
``MeanFieldNormal``) unless a job asks for one of our additions (an estimator other
than ``"reparameterization"``, or another data term). So the same file
runs with either library first on ``PYTHONPATH``, and both are trained and scored
identically::

    PYTHONPATH=.bench/peers/torch_blue_1.1 \
        python scripts/benchmarks/_worker.py jobs.json

``jobs.json`` holds a list of job dicts (see :class:`Job`); each job writes its
result, a dict of tensors and lists, with ``torch.save`` to ``job["output"]``.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["Job", "build_network", "run_job", "main"]


@dataclass
class Job:
    """One training run.

    Attributes
    ----------
    data : str
        ``torch.save`` file with ``x_train``, ``y_train``, ``x_test`` and optionally
        ``x_ood`` (inputs already normalised; regression targets standardised).
    output : str
        Where to write the result.
    kind : {"bayesian", "deterministic"}
        A torch_blue network (whichever ``torch_blue`` is imported) or its plain
        ``torch.nn`` twin.
    architecture : {"mlp", "lenet5", "conv1d"}
        The network; ``hidden`` sets the MLP's hidden widths.
    task : {"classification", "regression"}
        Cross-entropy / ``Categorical`` or a Normal likelihood.
    outputs : int
        Number of classes, or 1 for regression.
    hidden : list of int
        Hidden widths of the MLP.
    estimator : str
        Gradient estimator of the Bayesian layers; ``"reparameterization"`` is
        upstream's only one and is not passed on, so upstream runs too.
    noise : {"default", "samples"}
        What the Bayesian network's regression likelihood ``MeanFieldNormal()`` is:
        in torch_blue a fitted noise (the library's default; ``"default"``), reported
        with the predictions; in upstream 1.1 the Gaussian with the samples' mean and
        spread (``"samples"``), which has no noise to report. The twin always learns
        its noise.
    objective : {"elbo", "log_mean_predictive"}
        Data term of torch_blue's loss (upstream 1.1 always uses the second, the log
        of the sample-averaged likelihood); only passed on when not ``"elbo"``.
    epochs, batch_size, lr : int, int, float
        Adam's budget, the same for both kinds.
    train_samples, predict_samples : int
        Weight samples per training step and for prediction.
    init_std, prior_std : float or None
        Initial posterior std (before the Kaiming scaling) and the prior's std;
        ``None`` passes no argument, so the library's own default applies.
    seed : int
        Seeds the initialisation, the batches and the weight samples.
    threads : int
        ``torch.set_num_threads``.
    log_epochs : bool
        Print one line per epoch (loss, seconds) to stderr.
    """

    data: str
    output: str
    kind: str = "bayesian"
    architecture: str = "mlp"
    task: str = "classification"
    outputs: int = 10
    hidden: list[int] = field(default_factory=lambda: [100, 100])
    estimator: str = "reparameterization"
    noise: str = "default"
    objective: str = "elbo"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    train_samples: int = 4
    predict_samples: int = 32
    init_std: Optional[float] = None
    prior_std: Optional[float] = None
    seed: int = 0
    threads: int = 2
    log_epochs: bool = False


# ------------------------------------------------------------------------- networks
def layers(job: Job, in_shape: tuple[int, ...]) -> list[tuple[str, tuple, dict]]:
    """The network as ``(kind, args, kwargs)``: ``"linear"``, ``"conv1d"``, ... ."""
    if job.architecture == "mlp":
        widths = [math.prod(in_shape), *job.hidden, job.outputs]
        spec: list[tuple[str, tuple, dict]] = [("flatten", (), {})]
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            spec.append(("linear", (a, b), {}))
            if i < len(widths) - 2:
                spec.append(("relu", (), {}))
        return spec
    if job.architecture == "lenet5":
        # LeCun et al. 1998 with ReLU and max pooling, for 1x28x28 inputs.
        return [
            ("conv2d", (in_shape[0], 6, 5), {"padding": 2}),
            ("relu", (), {}),
            ("maxpool2d", (2,), {}),
            ("conv2d", (6, 16, 5), {}),
            ("relu", (), {}),
            ("maxpool2d", (2,), {}),
            ("flatten", (), {}),
            ("linear", (16 * 5 * 5, 120), {}),
            ("relu", (), {}),
            ("linear", (120, 84), {}),
            ("relu", (), {}),
            ("linear", (84, job.outputs), {}),
        ]
    if job.architecture == "conv1d":
        # A small strided CNN for MNIST-1D (40 points, one channel).
        length = in_shape[-1]
        for _ in range(3):
            length = (length + 2 - 3) // 2 + 1
        return [
            ("conv1d", (in_shape[0], 32, 3), {"stride": 2, "padding": 1}),
            ("relu", (), {}),
            ("conv1d", (32, 32, 3), {"stride": 2, "padding": 1}),
            ("relu", (), {}),
            ("conv1d", (32, 32, 3), {"stride": 2, "padding": 1}),
            ("relu", (), {}),
            ("flatten", (), {}),
            ("linear", (32 * length, job.outputs), {}),
        ]
    raise ValueError(f"_worker: unknown architecture {job.architecture!r}")


#: The ``torch.nn`` class of each kind of ``layers``.
PLAIN_MODULES = {
    "flatten": nn.Flatten,
    "relu": nn.ReLU,
    "maxpool2d": nn.MaxPool2d,
    "linear": nn.Linear,
    "conv1d": nn.Conv1d,
    "conv2d": nn.Conv2d,
}


def build_network(job: Job, in_shape: tuple[int, ...]) -> nn.Module:
    """The Bayesian network of ``job`` or its deterministic twin.

    Parameters
    ----------
    job : Job
        Architecture, kind, estimator and initial/prior scales.
    in_shape : tuple of int
        Shape of one input without the batch dimension.

    Returns
    -------
    nn.Module
        A ``VISequential`` (Bayesian) or an ``nn.Sequential`` (deterministic).
    """
    plain = PLAIN_MODULES
    if job.kind == "deterministic":
        return nn.Sequential(*(plain[k](*a, **kw) for k, a, kw in layers(job, in_shape)))
    from torch_blue import vi
    from torch_blue.vi.distributions import MeanFieldNormal

    bayesian = {"linear": vi.VILinear, "conv1d": vi.VIConv1d, "conv2d": vi.VIConv2d}
    extra: dict[str, object] = {}
    if job.init_std is not None:
        extra["variational_distribution"] = MeanFieldNormal(std=job.init_std)
    if job.prior_std is not None:
        extra["prior"] = MeanFieldNormal(std=job.prior_std)
    if job.estimator != "reparameterization":
        extra["estimator"] = job.estimator  # a torch_blue addition
    modules = []
    for k, a, kw in layers(job, in_shape):
        if k in bayesian:
            modules.append(bayesian[k](*a, **kw, **extra))
        else:
            modules.append(plain[k](*a, **kw))
    return vi.VISequential(*modules)


# ------------------------------------------------------------------------- training
class GaussianNLL(nn.Module):
    """Normal negative log-likelihood with a learned homoscedastic noise (the twin's)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.zeros(()))

    def forward(self, mean: Tensor, target: Tensor) -> Tensor:
        z = (target - mean) * torch.exp(-self.log_std)
        return (0.5 * z.square() + self.log_std + 0.5 * math.log(2 * math.pi)).mean()


def _loss(job: Job, train_size: int) -> nn.Module:
    if job.kind == "deterministic":
        return nn.CrossEntropyLoss() if job.task == "classification" else GaussianNLL()
    from torch_blue import vi
    from torch_blue.vi.distributions import Categorical, MeanFieldNormal

    likelihood = Categorical() if job.task == "classification" else MeanFieldNormal()
    if job.objective != "elbo":  # a torch_blue option
        return vi.KullbackLeiblerLoss(
            likelihood, dataset_size=train_size, objective=job.objective
        )
    return vi.KullbackLeiblerLoss(likelihood, dataset_size=train_size)


def _noise_std(job: Job, loss_fn: nn.Module) -> Optional[float]:
    """The learned noise std (standardised scale), ``None`` if it is the samples'."""
    if job.task != "regression":
        return None
    if job.kind == "deterministic":
        return float(loss_fn.log_std.detach().exp())
    if job.noise == "samples":
        return None
    return float(torch.as_tensor(loss_fn.predictive_distribution.std).reshape(-1)[0])


def _progress(batches: int, description: str):
    """A tqdm bar on stderr if tqdm is installed and stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=batches, desc=description, leave=False, unit="batch")


def _predict(job: Job, model: nn.Module, x: Tensor, chunk: int = 1000) -> Tensor:
    """Sampled outputs ``(S, N, outputs)`` (``S = 1`` for the twin)."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            batch = x[start : start + chunk]
            if job.kind == "deterministic":
                outputs.append(model(batch).unsqueeze(0))
            else:
                out = model(batch, samples=job.predict_samples)
                outputs.append(out.as_subclass(Tensor))  # VIReturn or plain
    return torch.cat(outputs, dim=1).float()


def run_job(job: Job) -> dict:
    """Train the network of ``job``, predict the test (and OOD) inputs, return all.

    Returns
    -------
    dict
        ``test`` and optionally ``ood``: sampled outputs ``(S, N, outputs)``;
        ``noise_std``: the learned noise (regression) or ``None``;
        ``epoch_seconds`` and ``train_loss``: one entry per epoch;
        ``library``: the imported ``torch_blue``'s location (``None`` for the twin).
    """
    torch.set_num_threads(job.threads)
    data = torch.load(job.data)
    x_train, y_train = data["x_train"], data["y_train"]
    torch.manual_seed(job.seed)
    model = build_network(job, tuple(x_train.shape[1:]))
    loss_fn = _loss(job, len(x_train))
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=job.lr)
    generator = torch.Generator().manual_seed(job.seed)
    epoch_seconds, train_loss = [], []
    for epoch in range(job.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        batches = range(0, len(x_train), job.batch_size)
        bar = _progress(len(batches), f"{job.kind} epoch {epoch + 1}/{job.epochs}")
        total = 0.0
        start = time.perf_counter()
        for i in batches:
            index = order[i : i + job.batch_size]
            x, y = x_train[index], y_train[index]
            if job.kind == "deterministic":
                loss = loss_fn(model(x), y)
            else:
                loss = loss_fn(model(x, samples=job.train_samples), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            if bar is not None:
                bar.update()
        epoch_seconds.append(time.perf_counter() - start)
        train_loss.append(total / len(batches))
        if bar is not None:
            bar.close()
        if job.log_epochs:
            print(
                f"    {job.kind} {job.estimator} seed {job.seed} epoch {epoch + 1}/"
                f"{job.epochs}: loss {train_loss[-1]:.4f}, {epoch_seconds[-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    if job.kind == "bayesian":
        model.return_log_probs = False  # deployment mode: outputs only
    result = {
        "test": _predict(job, model, data["x_test"]),
        "noise_std": _noise_std(job, loss_fn),
        "epoch_seconds": epoch_seconds,
        "train_loss": train_loss,
        "library": None,
    }
    if data.get("x_ood") is not None:
        result["ood"] = _predict(job, model, data["x_ood"])
    if job.kind == "bayesian":
        import torch_blue

        result["library"] = str(torch_blue.__file__)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Run every job in the JSON file given as the only argument."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: _worker.py JOBS.json", file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        jobs = [Job(**spec) for spec in json.load(handle)]
    for job in jobs:
        torch.save(run_job(job), job.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
