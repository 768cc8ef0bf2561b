"""Plots of calibration and uncertainty, drawn with matplotlib.

matplotlib is an optional dependency (``pip install matplotlib``); it is imported
only when a plot is drawn. Every function draws into ``ax`` (a new figure when
``ax`` is ``None``), returns the :class:`matplotlib.axes.Axes` and never calls
``plt.show()``, so it works in scripts, notebooks and headless tests alike.
"""

from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import ShapeError, UncertaintyInputError
from ._docstrings import _shared_doc
from ._validation import InputType, _check_positive_int, _plain_float
from .metrics import _calibration, _ood_auroc

__all__ = ["reliability_diagram", "regression_band_plot", "uncertainty_histogram"]


def _pyplot(fn: str) -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            f"{fn} needs matplotlib, an optional dependency of torch_blue: "
            f"pip install matplotlib"
        ) from err
    return plt


def _axes(ax: Any, fn: str) -> Any:
    plt = _pyplot(fn)
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _numpy(x: object, fn: str, name: str) -> Any:
    return _plain_float(x, fn, name).detach().cpu().reshape(-1).numpy()


@_shared_doc
def reliability_diagram(
    samples: Tensor,
    targets: Tensor,
    n_bins: int = 15,
    *,
    input_type: InputType = "probs",
    ax: Optional[Any] = None,
) -> Any:
    """Accuracy against confidence in equal-width bins, with the calibration gap.

    Draws one bar per bin at the bin's accuracy, the gap to the bin's mean
    confidence as a hatched red bar on top (or below) and the diagonal of perfect
    calibration; the legend title gives the ECE. Empty bins have no bars. Bins and
    ECE come from :func:`~torch_blue.uncertainty.metrics.calibration_bins` and
    :func:`~torch_blue.uncertainty.metrics.expected_calibration_error`.

    Parameters
    ----------
    samples : Tensor
        Logits or probabilities of shape ``(S, ..., C)``; for a single prediction
        ``(N, C)`` pass ``probs.unsqueeze(0)``.
    {targets}
    n_bins : int, default: 15
        Number of confidence bins.
    {input_type, ax}

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into. ``ax.containers[0]`` holds the ``n_bins`` accuracy
        bars, ``ax.containers[1]`` the gap bars.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import torch
    >>> logits = torch.randn(8, 200, 3)  # (S, N, C)
    >>> ax = reliability_diagram(logits, torch.randint(0, 3, (200,)),
    ...                          input_type="logits")
    >>> len(ax.containers[0])
    15
    """
    fn = "reliability_diagram"
    bins, ece_tensor = _calibration(samples, targets, n_bins, input_type, fn)
    ece = ece_tensor.item()
    ax = _axes(ax, fn)
    left = bins.edges[:-1].detach().cpu().numpy()
    width = 1.0 / n_bins
    filled = bins.counts > 0
    accuracy = torch.where(filled, bins.accuracy, 0).detach().cpu().numpy()
    confidence = torch.where(filled, bins.confidence, 0).detach().cpu().numpy()
    ax.bar(
        left,
        accuracy,
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.8,
        label="accuracy",
    )
    ax.bar(
        left,
        confidence - accuracy,
        bottom=accuracy,
        width=width,
        align="edge",
        facecolor=(1.0, 0.0, 0.0, 0.2),
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.5,
        label="gap to confidence",
    )
    ax.plot(
        [0, 1],
        [0, 1],
        linestyle="--",
        color="black",
        linewidth=1,
        zorder=3,
        label="perfect calibration",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", title=f"ECE = {ece:.3f} ({n_bins} bins)")
    return ax


@_shared_doc
def regression_band_plot(
    x: Tensor,
    mean: Tensor,
    total_std: Tensor,
    epistemic_std: Optional[Tensor] = None,
    *,
    x_data: Optional[Tensor] = None,
    y_data: Optional[Tensor] = None,
    ax: Optional[Any] = None,
) -> Any:
    r"""A 1-D regression fit with its total and epistemic uncertainty bands.

    Draws the predictive mean as a line, the :math:`\pm 1\sigma` and
    :math:`\pm 2\sigma` bands of the total standard deviation in two shades of
    blue, the :math:`\pm 2\sigma` band of the epistemic standard deviation in
    hatched orange and, if given, the data as points. The inputs come from
    :func:`~torch_blue.uncertainty.summaries.predictive_mean` and the square roots of
    :func:`~torch_blue.uncertainty.summaries.regression_variance_decomposition`.

    Parameters
    ----------
    x : Tensor
        Inputs of shape ``(N,)`` (or ``(N, 1)``); need not be sorted.
    mean : Tensor
        Predictive means at ``x``, ``N`` elements.
    total_std : Tensor
        Total predictive standard deviations, ``N`` elements.
    epistemic_std : Tensor, optional
        Epistemic standard deviations, ``N`` elements.
    x_data, y_data : Tensor, optional
        Observed points (e.g. the training set) to scatter, the same length.
    {ax}

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into; ``ax.collections`` holds the bands and the data points.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import torch
    >>> x = torch.linspace(-3, 3, 50)
    >>> ax = regression_band_plot(x, x.sin(), torch.full((50,), 0.3),
    ...                           0.1 + 0.05 * x.abs())
    >>> [line.get_label() for line in ax.get_lines()]
    ['predictive mean']
    """
    fn = "regression_band_plot"
    arrays, data = _band_arrays(fn, x, mean, total_std, epistemic_std, x_data, y_data)
    ax = _axes(ax, fn)
    order = arrays["x"].argsort()
    xs, mu = arrays["x"][order], arrays["mean"][order]
    total = arrays["total_std"][order]
    for k, alpha in ((2, 0.15), (1, 0.3)):
        ax.fill_between(
            xs,
            mu - k * total,
            mu + k * total,
            color="tab:blue",
            alpha=alpha,
            linewidth=0,
            label=rf"$\pm {k}\sigma$ total",
        )
    if epistemic_std is not None:
        epistemic = arrays["epistemic_std"][order]
        ax.fill_between(
            xs,
            mu - 2 * epistemic,
            mu + 2 * epistemic,
            facecolor="none",
            edgecolor="tab:orange",
            hatch="////",
            linewidth=1,
            label=r"$\pm 2\sigma$ epistemic",
        )
    ax.plot(xs, mu, color="tab:blue", linewidth=2, label="predictive mean")
    if data is not None:
        ax.scatter(*data, s=12, color="black", alpha=0.7, zorder=3, label="data")
    ax.set(xlabel="x", ylabel="y")
    ax.legend(loc="best")
    return ax


def _band_arrays(
    fn: str,
    x: object,
    mean: object,
    total_std: object,
    epistemic_std: object,
    x_data: object,
    y_data: object,
) -> tuple[dict[str, Any], Optional[tuple[Any, Any]]]:
    """The curves as flat numpy arrays by name, and the data points, checked."""
    named = {"x": x, "mean": mean, "total_std": total_std}
    if epistemic_std is not None:
        named["epistemic_std"] = epistemic_std
    arrays = {name: _numpy(value, fn, name) for name, value in named.items()}
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ShapeError(
            f"{fn}: x, mean and the standard deviations need the same number of "
            f"elements, got {lengths}"
        )
    if (x_data is None) != (y_data is None):
        raise UncertaintyInputError(f"{fn}: pass both x_data and y_data, or neither")
    if x_data is None:
        return arrays, None
    xd, yd = _numpy(x_data, fn, "x_data"), _numpy(y_data, fn, "y_data")
    if len(xd) != len(yd):
        raise ShapeError(
            f"{fn}: x_data and y_data need the same number of elements, got "
            f"{len(xd)} and {len(yd)}"
        )
    return arrays, (xd, yd)


@_shared_doc
def uncertainty_histogram(
    score_in: Tensor,
    score_out: Tensor,
    *,
    bins: int = 30,
    labels: tuple[str, str] = ("in-distribution", "out-of-distribution"),
    ax: Optional[Any] = None,
) -> Any:
    """Overlaid histograms of an uncertainty score on two data sets.

    Both histograms share their bin edges and are normalised to unit area, so data
    sets of different size compare. The title gives
    :func:`~torch_blue.uncertainty.metrics.ood_auroc` (higher score = predicted
    out-of-distribution).

    Parameters
    ----------
    score_in : Tensor
        Scores on in-distribution data (e.g. predictive entropy), any shape.
    score_out : Tensor
        Scores on out-of-distribution data, any shape.
    bins : int, default: 30
        Number of shared bins.
    labels : tuple of str, default: ("in-distribution", "out-of-distribution")
        Legend labels of the two histograms.
    {ax}

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into, titled with the AUROC.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import torch
    >>> score_in = torch.linspace(0.0, 0.5, 100)  # e.g. predictive entropy
    >>> score_out = torch.linspace(0.3, 1.0, 80)
    >>> uncertainty_histogram(score_in, score_out).get_title()
    'AUROC = 0.940'
    """
    fn = "uncertainty_histogram"
    bins = _check_positive_int(bins, fn, "bins")
    auc = _ood_auroc(score_in, score_out, fn).item()
    s_in, s_out = _numpy(score_in, fn, "score_in"), _numpy(score_out, fn, "score_out")
    ax = _axes(ax, fn)
    low = float(min(s_in.min(), s_out.min()))
    high = float(max(s_in.max(), s_out.max()))
    if low == high:  # all scores equal: one bin around them
        low, high = low - 0.5, high + 0.5
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64).numpy()
    label_in, label_out = labels
    ax.hist(s_in, bins=edges, density=True, alpha=0.5, color="tab:blue", label=label_in)
    ax.hist(s_out, bins=edges, density=True, alpha=0.5, color="tab:red", label=label_out)
    ax.set(xlabel="uncertainty score", ylabel="density", title=f"AUROC = {auc:.3f}")
    ax.legend()
    return ax
