r"""Scores of predictions against targets: accuracy, likelihood, calibration, AUROC.

Classification metrics take the same samples as :mod:`torch_blue.uncertainty.summaries`
(logits or probabilities of shape ``(S, ..., C)``, ``input_type`` as there) and
integer targets of shape ``(...)``; they score the predictive probabilities
:math:`\bar p = \frac1S\sum_s p_s`. For a single, non-Bayesian prediction of shape
``(N, C)`` pass ``probs.unsqueeze(0)``. Regression metrics take sampled means
``(S, ...)``, optional standard deviations and targets ``(...)``. Every metric
averages over all examples (all target elements) and returns a 0-dim tensor.
"""

import math
from typing import NamedTuple, Union

import torch
from torch import Tensor

from ..errors import ShapeError, UncertaintyInputError
from ._docstrings import _shared_doc
from ._validation import (
    InputType,
    _check_binary,
    _check_positive_int,
    _class_samples,
    _class_targets,
    _plain,
    _plain_float,
    _regression_inputs,
    _regression_means,
    _regression_targets,
    _to_probs,
)

__all__ = [
    "CalibrationBins",
    "accuracy",
    "negative_log_likelihood",
    "brier_score",
    "calibration_bins",
    "expected_calibration_error",
    "maximum_calibration_error",
    "rmse",
    "gaussian_mixture_log_likelihood",
    "interval_coverage",
    "auroc",
    "misclassification_auroc",
    "ood_auroc",
]


# ------------------------------------------------------------------- classification
def _predictive_and_targets(
    samples: object, targets: object, input_type: str, fn: str
) -> tuple[Tensor, Tensor]:
    x = _class_samples(samples, input_type, fn)
    t = _class_targets(targets, x.shape, fn)
    return _to_probs(x, input_type).mean(0), t


@_shared_doc
def accuracy(samples: Tensor, targets: Tensor, input_type: InputType = "probs") -> Tensor:
    r"""Fraction of examples whose most probable predictive class is the target.

    Parameters
    ----------
    {samples, targets, input_type}

    Returns
    -------
    Tensor
        The accuracy in ``[0, 1]``, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]])  # (S=1, N=3, C=2)
    >>> accuracy(probs, torch.tensor([0, 1, 1]))
    tensor(0.6667)
    """
    p, t = _predictive_and_targets(samples, targets, input_type, "accuracy")
    return (p.argmax(-1) == t).to(p.dtype).mean()


@_shared_doc
def negative_log_likelihood(
    samples: Tensor, targets: Tensor, input_type: InputType = "probs"
) -> Tensor:
    r"""Mean negative log predictive probability of the targets, in nats.

    :math:`-\frac1N\sum_n \log \bar p_{n, y_n}` with the sample-averaged probabilities
    :math:`\bar p = \frac1S\sum_s p_s` (not the average of per-sample log
    probabilities). For logits it is computed stably as
    :math:`\log \bar p_y = \operatorname{logsumexp}_s \log\operatorname{softmax}
    (z_s)_y - \log S`; a probability of exactly zero for a target gives ``inf``.

    Parameters
    ----------
    {samples, targets, input_type}

    Returns
    -------
    Tensor
        The NLL, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> samples = torch.tensor([[[0.8, 0.2]], [[0.4, 0.6]]])  # (S=2, N=1, C=2)
    >>> negative_log_likelihood(samples, torch.tensor([0]))  # -log 0.6
    tensor(0.5108)
    >>> negative_log_likelihood(torch.zeros(5, 1, 4), torch.tensor([2]), "logits")
    tensor(1.3863)
    """
    fn = "negative_log_likelihood"
    x = _class_samples(samples, input_type, fn)
    t = _class_targets(targets, x.shape, fn)
    index = t.unsqueeze(0).expand(x.shape[:-1]).unsqueeze(-1)
    if input_type == "logits":
        picked = x.log_softmax(-1).gather(-1, index).squeeze(-1)
        log_p = torch.logsumexp(picked, 0) - math.log(x.shape[0])
    else:
        log_p = _to_probs(x, input_type).gather(-1, index).squeeze(-1).mean(0).log()
    return -log_p.mean()


@_shared_doc
def brier_score(
    samples: Tensor, targets: Tensor, input_type: InputType = "probs"
) -> Tensor:
    r"""Multi-class Brier score of the predictive probabilities.

    :math:`\frac1N\sum_n \sum_c (\bar p_{n,c} - \mathbb 1[y_n = c])^2`: the squared
    error summed over classes and averaged over examples (Brier's original
    definition), between 0 and 2. Some libraries also divide by :math:`C`.

    Parameters
    ----------
    {samples, targets, input_type}

    Returns
    -------
    Tensor
        The Brier score, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[[0.7, 0.2, 0.1]]])  # (S=1, N=1, C=3)
    >>> brier_score(probs, torch.tensor([0]))  # 0.3² + 0.2² + 0.1²
    tensor(0.1400)
    """
    p, t = _predictive_and_targets(samples, targets, input_type, "brier_score")
    one_hot = torch.nn.functional.one_hot(t, p.shape[-1]).to(p.dtype)
    return (p - one_hot).square().sum(-1).mean()


class CalibrationBins(NamedTuple):
    """Per-bin statistics of equal-width confidence bins, from :func:`calibration_bins`.

    Bin ``b`` holds the confidences in ``(edges[b], edges[b + 1]]``; the first bin
    also holds 0.
    """

    #: Bin edges ``(n_bins + 1,)`` from 0 to 1.
    edges: Tensor
    #: Mean confidence per bin ``(n_bins,)``, NaN for an empty bin.
    confidence: Tensor
    #: Accuracy per bin ``(n_bins,)``, NaN for an empty bin.
    accuracy: Tensor
    #: Number of examples per bin ``(n_bins,)``, an integer tensor.
    counts: Tensor


def _bin_sums(
    samples: object, targets: object, n_bins: int, input_type: str, fn: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Edges and per-bin sums of confidence and correctness, counts, example count."""
    n_bins = _check_positive_int(n_bins, fn, "n_bins")
    p, t = _predictive_and_targets(samples, targets, input_type, fn)
    confidence, predicted = p.max(-1)
    confidence, correct = confidence.reshape(-1), (predicted == t).reshape(-1)
    # k / n_bins is correctly rounded, so a confidence written as the same decimal
    # (0.6 with 5 bins) falls on the edge exactly and goes to the lower bin.
    edges = torch.arange(n_bins + 1, dtype=p.dtype, device=p.device) / n_bins
    index = torch.bucketize(confidence.detach(), edges[1:-1], right=False)
    zeros = confidence.new_zeros(n_bins)
    confidence_sum = zeros.index_add(0, index, confidence)
    correct_sum = zeros.index_add(0, index, correct.to(p.dtype))
    counts = torch.bincount(index, minlength=n_bins)
    return edges, confidence_sum, correct_sum, counts, confidence.numel()


@_shared_doc
def calibration_bins(
    samples: Tensor, targets: Tensor, n_bins: int = 15, input_type: InputType = "probs"
) -> CalibrationBins:
    r"""Mean confidence, accuracy and count per equal-width confidence bin.

    The confidence of a prediction is its largest predictive probability
    :math:`\max_c \bar p_c`; it is correct when that class is the target. Used by
    :func:`expected_calibration_error`, :func:`maximum_calibration_error` and
    :func:`~torch_blue.uncertainty.plots.reliability_diagram`.

    Parameters
    ----------
    {samples, targets, n_bins, input_type}

    Returns
    -------
    CalibrationBins
        Named tuple ``(edges, confidence, accuracy, counts)``.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]]])
    >>> bins = calibration_bins(probs, torch.tensor([0, 1, 0]), n_bins=2)
    >>> bins.counts, bins.accuracy
    (tensor([0, 3]), tensor([   nan, 0.6667]))
    """
    return _calibration(samples, targets, n_bins, input_type, "calibration_bins")[0]


def _calibration(
    samples: object, targets: object, n_bins: int, input_type: str, fn: str
) -> tuple[CalibrationBins, Tensor]:
    """The bins of :func:`calibration_bins` and the ECE, errors naming ``fn``."""
    edges, confidence_sum, correct_sum, counts, n = _bin_sums(
        samples, targets, n_bins, input_type, fn
    )
    filled = counts.to(confidence_sum.dtype)
    nan = torch.full_like(confidence_sum, math.nan)
    confidence = torch.where(counts > 0, confidence_sum / filled.clamp_min(1), nan)
    accuracy_ = torch.where(counts > 0, correct_sum / filled.clamp_min(1), nan)
    ece = (confidence_sum - correct_sum).abs().sum() / n
    return CalibrationBins(edges, confidence, accuracy_, counts), ece


@_shared_doc
def expected_calibration_error(
    samples: Tensor, targets: Tensor, n_bins: int = 15, input_type: InputType = "probs"
) -> Tensor:
    r"""Expected calibration error with equal-width confidence bins (Guo et al., 2017).

    :math:`\mathrm{ECE} = \sum_b \frac{|B_b|}{N}\,\lvert\mathrm{acc}(B_b) -
    \mathrm{conf}(B_b)\rvert` over the bins of :func:`calibration_bins`. Note that
    even a perfectly calibrated predictor has an ECE above 0 on a finite test set.

    Parameters
    ----------
    {samples, targets, n_bins, input_type}

    Returns
    -------
    Tensor
        The ECE in ``[0, 1]``, a 0-dim tensor.

    References
    ----------
    C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger. On calibration of modern neural
    networks. *ICML* 2017.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[[0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.6, 0.4]]])
    >>> expected_calibration_error(probs, torch.tensor([0, 0, 0, 1]))
    tensor(0.1500)
    """
    fn = "expected_calibration_error"
    return _calibration(samples, targets, n_bins, input_type, fn)[1]


@_shared_doc
def maximum_calibration_error(
    samples: Tensor, targets: Tensor, n_bins: int = 15, input_type: InputType = "probs"
) -> Tensor:
    r"""Largest gap between accuracy and confidence over the non-empty bins.

    :math:`\mathrm{MCE} = \max_{b : |B_b| > 0} \lvert\mathrm{acc}(B_b) -
    \mathrm{conf}(B_b)\rvert` (Guo et al., 2017), with the bins of
    :func:`calibration_bins`.

    Parameters
    ----------
    {samples, targets, n_bins, input_type}

    Returns
    -------
    Tensor
        The MCE in ``[0, 1]``, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[[0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.6, 0.4]]])
    >>> maximum_calibration_error(probs, torch.tensor([0, 0, 0, 1]))
    tensor(0.2000)
    """
    fn = "maximum_calibration_error"
    _, confidence_sum, correct_sum, counts, _ = _bin_sums(
        samples, targets, n_bins, input_type, fn
    )
    gaps = (confidence_sum - correct_sum).abs() / counts.clamp_min(1)
    return gaps[counts > 0].max()


# ----------------------------------------------------------------------- regression
def _log_y_scale(y_scale: Union[Tensor, float, None], t: Tensor, fn: str) -> Tensor:
    """``log(y_scale)`` broadcast to the targets (zero without a scale)."""
    if y_scale is None:
        return torch.zeros_like(t)
    scale = torch.as_tensor(y_scale, dtype=t.dtype, device=t.device)
    try:
        torch.broadcast_to(scale, t.shape)
    except RuntimeError as err:
        raise ShapeError(
            f"{fn}: y_scale of shape {tuple(scale.shape)} cannot be broadcast to "
            f"targets of shape {tuple(t.shape)}"
        ) from err
    if scale.numel() > 0 and not scale.min().item() > 0:
        raise UncertaintyInputError(
            f"{fn}: y_scale must be positive, found minimum {scale.min().item():.4g}"
        )
    return torch.broadcast_to(scale.log(), t.shape)


@_shared_doc
def rmse(
    means: Tensor, targets: Tensor, *, y_scale: Union[Tensor, float, None] = None
) -> Tensor:
    r"""Root mean squared error of the predictive mean.

    :math:`\sqrt{\frac1N\sum_n (\bar\mu_n - y_n)^2}` with :math:`\bar\mu` the mean
    over samples. With ``y_scale`` (the standard deviation used to standardise the
    targets) the errors are reported on the original scale: each error is multiplied
    by its scale.

    Parameters
    ----------
    {means}
    targets : Tensor
        Targets of shape ``(...)``, on the same (e.g. standardised) scale.
    y_scale : Tensor or float, optional
        Positive scale, a number or a tensor broadcastable to the targets (e.g. one
        per output dimension).

    Returns
    -------
    Tensor
        The RMSE, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> means = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # (S=2, N=2): mean [2, 2]
    >>> rmse(means, torch.tensor([2.0, 4.0]))  # sqrt((0 + 4) / 2)
    tensor(1.4142)
    >>> rmse(means, torch.tensor([2.0, 4.0]), y_scale=10.0)
    tensor(14.1421)
    """
    fn = "rmse"
    m = _regression_means(means, fn)
    t = _regression_targets(targets, m.shape, fn)
    error = m.mean(0) - t
    if y_scale is not None:
        error = error * _log_y_scale(y_scale, t, fn).exp()
    return error.square().mean().sqrt()


@_shared_doc
def gaussian_mixture_log_likelihood(
    means: Tensor,
    stds: Union[Tensor, float],
    targets: Tensor,
    *,
    y_scale: Union[Tensor, float, None] = None,
) -> Tensor:
    r"""Mean test log-likelihood under the predictive Gaussian mixture, in nats.

    :math:`\frac1N\sum_n \log \frac1S\sum_s \mathcal N(y_n \mid \mu_{s,n},
    \sigma_{s,n}^2)`, computed stably with logsumexp. Each target element is scored
    separately (for multi-output targets this is the sum of marginal, not joint,
    log-likelihoods divided by the number of elements). With ``y_scale`` (the
    standard deviation used to standardise the targets) the density is reported on
    the original scale, i.e. :math:`\log \mathtt{y\_scale}` is subtracted, as is usual
    for UCI regression benchmarks.

    Parameters
    ----------
    {means}
    stds : Tensor or float
        Positive aleatoric standard deviation: a number or a tensor broadcastable to
        ``means``.
    targets : Tensor
        Targets of shape ``(...)``.
    y_scale : Tensor or float, optional
        Positive scale, a number or a tensor broadcastable to the targets.

    Returns
    -------
    Tensor
        The mean log-likelihood, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> gaussian_mixture_log_likelihood(torch.zeros(3, 1), 1.0, torch.zeros(1))
    tensor(-0.9189)
    """
    fn = "gaussian_mixture_log_likelihood"
    if stds is None:
        raise UncertaintyInputError(
            f"{fn}: stds is required (a positive number or tensor), got None"
        )
    m, s = _regression_inputs(means, stds, fn, positive=True)
    t = _regression_targets(targets, m.shape, fn)
    log_density = torch.distributions.Normal(m, s, validate_args=False).log_prob(t)
    log_mixture = torch.logsumexp(log_density, 0) - math.log(m.shape[0])
    return (log_mixture - _log_y_scale(y_scale, t, fn)).mean()


def interval_coverage(lower: Tensor, upper: Tensor, targets: Tensor) -> Tensor:
    r"""Fraction of targets inside their interval ``[lower, upper]``.

    Compare it with the nominal level of
    :func:`~torch_blue.uncertainty.summaries.credible_interval`: for :math:`N`
    examples its binomial standard error is :math:`\sqrt{\text{level}(1 -
    \text{level})/N}`.

    Parameters
    ----------
    lower, upper : Tensor
        Interval ends, shape ``(...)``.
    targets : Tensor
        Targets of the same shape.

    Returns
    -------
    Tensor
        The empirical coverage in ``[0, 1]``, a 0-dim tensor; NaN if any bound or
        target is NaN.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.uncertainty import credible_interval
    >>> lower, upper = credible_interval(torch.zeros(1, 4), stds=1.0, level=0.9)
    >>> interval_coverage(lower, upper, torch.tensor([0.0, 1.0, -3.0, 1.5]))
    tensor(0.7500)
    """
    fn = "interval_coverage"
    low = _plain_float(lower, fn, "lower")
    high = _plain_float(upper, fn, "upper")
    t = _plain_float(targets, fn, "targets")
    if not low.shape == high.shape == t.shape:
        raise ShapeError(
            f"{fn}: lower, upper and targets must have the same shape, got "
            f"{tuple(low.shape)}, {tuple(high.shape)} and {tuple(t.shape)}"
        )
    if (low > high).any():
        raise UncertaintyInputError(f"{fn}: lower must not exceed upper")
    inside = ((low <= t) & (t <= high)).to(t.dtype)
    # NaN anywhere makes the coverage NaN (as torch's reductions do), not a miss.
    undefined = low.isnan() | high.isnan() | t.isnan()
    return inside.masked_fill(undefined, math.nan).mean()


# -------------------------------------------------------------------------- ranking
def auroc(scores: Tensor, labels: Tensor) -> Tensor:
    r"""Area under the ROC curve of ``scores`` for detecting ``labels == 1``.

    Computed exactly as the Mann-Whitney statistic
    :math:`\frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-}`, where :math:`R_+` is the sum of the
    ranks of the positives among all scores and tied scores share their average
    rank. It equals the probability that a random positive scores higher than a
    random negative, ties counting one half: 1 for perfect separation, 0.5 for
    uninformative scores.

    Parameters
    ----------
    scores : Tensor
        Real scores, any shape; higher means "more likely positive".
    labels : Tensor
        Labels of the same shape: booleans or the numbers 0 and 1.

    Returns
    -------
    Tensor
        The AUROC in ``[0, 1]``, a 0-dim float tensor.

    Examples
    --------
    >>> import torch
    >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    tensor(0.7500)
    >>> auroc(torch.tensor([1.0, 1.0]), torch.tensor([0, 1]))  # a tie
    tensor(0.5000)
    """
    return _auroc(scores, labels, "auroc", "scores", "labels")


def _auroc(
    scores: object, labels: object, fn: str, score_name: str, label_name: str
) -> Tensor:
    s = _plain_float(scores, fn, score_name).detach()
    y = _plain(labels, fn, label_name)
    if s.shape != y.shape:
        raise ShapeError(
            f"{fn}: {score_name} of shape {tuple(s.shape)} and {label_name} of shape "
            f"{tuple(y.shape)} must have the same shape"
        )
    s, y = s.reshape(-1), y.reshape(-1)
    if torch.isnan(s).any():
        raise UncertaintyInputError(f"{fn}: {score_name} contain NaN")
    _check_binary(y, fn, label_name)
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise UncertaintyInputError(
            f"{fn}: needs at least one positive and one negative example, got "
            f"{n_pos} positive and {n_neg} negative"
        )
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    # tied scores occupy the 1-based ranks end - count + 1 .. end: average rank
    end = torch.cumsum(counts, 0).to(torch.float64)
    ranks = (end - (counts - 1).to(torch.float64) / 2)[inverse]
    u_statistic = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return (u_statistic / (n_pos * n_neg)).to(s.dtype)


def misclassification_auroc(score: Tensor, correct: Tensor) -> Tensor:
    r"""AUROC of an uncertainty score for detecting wrong predictions.

    Higher ``score`` means more uncertain, i.e. more likely misclassified: the
    positives are the examples with ``correct == False``. 1 means every error is
    more uncertain than every correct prediction.

    Parameters
    ----------
    score : Tensor
        Uncertainty scores, e.g.
        :func:`~torch_blue.uncertainty.summaries.predictive_entropy`, any shape.
    correct : Tensor
        Whether each prediction was right: booleans or 0/1, same shape.

    Returns
    -------
    Tensor
        The AUROC in ``[0, 1]``, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> entropy = torch.tensor([0.1, 0.2, 0.9, 0.7])
    >>> misclassification_auroc(entropy, torch.tensor([True, True, False, False]))
    tensor(1.)
    """
    fn = "misclassification_auroc"
    c = _plain(correct, fn, "correct")
    _check_binary(c, fn, "correct")
    return _auroc(score, c == 0, fn, "score", "correct")


def ood_auroc(score_in: Tensor, score_out: Tensor) -> Tensor:
    r"""AUROC of an uncertainty score for telling out-of-distribution inputs apart.

    Higher score means more uncertain, i.e. predicted out-of-distribution: the
    positives are the ``score_out`` examples. 1 means every out-of-distribution
    input is more uncertain than every in-distribution one.

    Parameters
    ----------
    score_in : Tensor
        Scores on in-distribution data, any shape (flattened).
    score_out : Tensor
        Scores on out-of-distribution data, any shape (flattened).

    Returns
    -------
    Tensor
        The AUROC in ``[0, 1]``, a 0-dim tensor.

    Examples
    --------
    >>> import torch
    >>> ood_auroc(torch.tensor([0.1, 0.3, 0.2]), torch.tensor([0.25, 0.9]))
    tensor(0.8333)
    """
    return _ood_auroc(score_in, score_out, "ood_auroc")


def _ood_auroc(score_in: object, score_out: object, fn: str) -> Tensor:
    s_in = _plain_float(score_in, fn, "score_in").reshape(-1)
    s_out = _plain_float(score_out, fn, "score_out").reshape(-1)
    if s_in.numel() == 0 or s_out.numel() == 0:
        raise UncertaintyInputError(
            f"{fn}: score_in and score_out must not be empty, got {s_in.numel()} and "
            f"{s_out.numel()} elements"
        )
    dtype = torch.promote_types(s_in.dtype, s_out.dtype)
    scores = torch.cat([s_in.to(dtype), s_out.to(dtype=dtype, device=s_in.device)])
    labels = torch.cat(
        [
            torch.zeros(s_in.numel(), dtype=torch.bool, device=scores.device),
            torch.ones(s_out.numel(), dtype=torch.bool, device=scores.device),
        ]
    )
    return _auroc(scores, labels, fn, "scores", "labels")
