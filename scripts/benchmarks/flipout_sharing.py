"""What sharing one Flipout perturbation by all samples costs in gradient variance.

``estimator="shared_flipout"`` draws one weight perturbation per forward call for all
S samples and B examples, where ``"flipout"`` draws one per sample. Both give
unbiased gradients; this script measures how much noise the sharing adds, on a wide
and a narrow network with real data:

* ``mlp``: 784-400-400-10 classifier on Fashion-MNIST (Debian package
  ``dataset-fashion-mnist``; scikit-learn's 8x8 digits, 64 inputs, if missing);
* ``regression``: 10-50-1 regression network on scikit-learn's diabetes data
  (standardised features and target, Normal likelihood).

For each estimator, at initialisation (same initial parameters for all), it draws the
gradient of the loss with respect to the top layer's weight means ``--draws`` times
on each of ``--batches`` fixed minibatches, takes the variance across the draws
(the noise of the estimator, without the minibatch's), averages it over the
elements, and reports its ratio to ``"flipout"``'s, batch by batch (mean and standard
error over the batches).

Usage::

    python scripts/benchmarks/flipout_sharing.py          # S = 10, batch 128, 8 x 40 draws
    python scripts/benchmarks/flipout_sharing.py --quick  # seconds (for tests)
"""

import argparse
import itertools
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ESTIMATORS, gradient_variance_data, top_layer_gradients  # noqa: F401
from torch_blue.datasets import load_diabetes


def regression_data() -> tuple[Tensor, Tensor]:
    """scikit-learn's diabetes data, features and target standardised."""
    x, y = (torch.tensor(a, dtype=torch.float32) for a in load_diabetes())
    y = y.unsqueeze(1)
    return (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()


def noise_variances(
    network: str, samples: int, batch: int, batches: int, draws: int, seed: int
) -> dict[str, np.ndarray]:
    """Per-batch noise variance of the top layer's weight-mean gradient per estimator.

    Returns
    -------
    dict
        Estimator -> ``(batches,)`` array: variance across ``draws`` gradients on one
        minibatch, averaged over the elements.
    """
    from torch_blue import vi
    from torch_blue.vi.distributions import Categorical, MeanFieldNormal

    if network == "mlp":
        x_all, y_all, _ = gradient_variance_data()
        widths = [x_all.shape[1], 400, 400, 10]
        predictive = Categorical()
    else:
        x_all, y_all = regression_data()
        widths = [x_all.shape[1], 50, 1]
        # A fixed noise: the measurement compares gradients at fixed parameters, and
        # MeanFieldNormal() would refit its noise on every call.
        predictive = MeanFieldNormal(std=1.0)
    if batch > len(x_all):
        raise ValueError(f"{network}: batch {batch} exceeds the {len(x_all)} examples")
    rng = np.random.default_rng(seed)
    pairs = []  # (fixed minibatches; they may overlap on the small regression data)
    for _ in range(batches):
        index = torch.from_numpy(rng.choice(len(x_all), size=batch, replace=False))
        pairs.append((x_all[index], y_all[index]))
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    # Upstream's start (1 / sqrt(fan_in)), at which the published numbers were measured.
    wide = MeanFieldNormal()
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        layers.append(vi.VILinear(n_in, n_out, variational_distribution=wide))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model = vi.VISequential(*layers)
    loss_fn = vi.KullbackLeiblerLoss(predictive, dataset_size=len(x_all))
    gradients = top_layer_gradients(model, loss_fn, pairs, draws, samples, seed + 1)
    return {
        estimator: grads.var(dim=1).mean(dim=1).numpy()
        for estimator, grads in gradients.items()
    }


def report(network: str, variances: dict[str, np.ndarray], samples: int) -> str:
    """Markdown table: mean noise variance and ratio to flipout (mean +- s.e.)."""
    reference = variances["flipout"]
    lines = [
        f"### {network}, S = {samples}",
        "",
        "| estimator | noise variance | ratio to flipout (mean +- s.e. over batches) |",
        "|---|---|---|",
    ]
    for estimator, values in variances.items():
        ratio = values / reference
        error = ratio.std(ddof=1) / math.sqrt(len(ratio)) if len(ratio) > 1 else math.nan
        lines.append(
            f"| {estimator} | {values.mean():.4g} | {ratio.mean():.3f} +- {error:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the measurement and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", default="mlp,regression")
    parser.add_argument("--samples", type=int, default=10, help="S per forward")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--draws", type=int, default=40, help="gradients per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 batches x 3 draws")
    args = parser.parse_args(argv)
    networks = args.networks.split(",")
    unknown = sorted(set(networks) - {"mlp", "regression"})
    if unknown:
        parser.error(f"--networks: unknown {unknown}; choose from ['mlp', 'regression']")
    if min(args.samples, args.batch, args.batches, args.threads) < 1 or args.draws < 2:
        parser.error("--samples, --batch, --batches, --threads must be >= 1, --draws >= 2")
    if args.quick:
        args.batches, args.draws, args.batch = 2, 3, 16
    torch.set_num_threads(args.threads)
    arguments = " ".join(argv or sys.argv[1:])
    print(f"Command: python scripts/benchmarks/flipout_sharing.py {arguments}")
    print(
        f"Batch {args.batch}, {args.batches} batches x {args.draws} draws, seed "
        f"{args.seed}, torch {torch.__version__}\n"
    )
    for network in networks:
        variances = noise_variances(
            network, args.samples, args.batch, args.batches, args.draws, args.seed
        )
        print(report(network, variances, args.samples) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
