r"""Predictive summaries of Monte-Carlo samples and their uncertainty decompositions.

Every function takes samples with a leading sample dimension ``S``: the outputs of
``S`` forward passes with different weight draws, e.g. a
:class:`~torch_blue.vi.VIReturn`, stacked MC-dropout passes or an ensemble. Results
are plain tensors with the sample dimension reduced.

**Classification** inputs have shape ``(S, ..., C)`` with the classes last and are
either logits (``input_type="logits"``, a softmax is applied per sample) or
probabilities (``input_type="probs"``, the default; checked to lie in ``[0, 1]`` and
to sum to one). Entropies are in nats.

**Regression** inputs are samples of the predicted mean, shape ``(S, ...)``, and
optionally the aleatoric standard deviation: ``None`` (no observation noise), a
number (homoscedastic noise) or a tensor broadcastable to the means, e.g. ``(S, ...)``
for a heteroscedastic model that predicts a standard deviation per sample. The
predictive distribution is the equally weighted Gaussian mixture
:math:`\frac1S\sum_s \mathcal N(\mu_s, \sigma_s^2)`.
"""

import math
from fractions import Fraction
from typing import Literal, NamedTuple, Optional

import torch
from torch import Tensor

from ..errors import UncertaintyInputError
from ._docstrings import _shared_doc
from ._validation import (
    InputType,
    StdLike,
    _check_choice,
    _check_level,
    _class_probs,
    _class_samples,
    _regression_inputs,
    _regression_means,
)

__all__ = [
    "UncertaintyInputError",
    "EntropyDecomposition",
    "VarianceDecomposition",
    "CredibleInterval",
    "predictive_probs",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "entropy_decomposition",
    "variation_ratio",
    "classification_variance_decomposition",
    "confidence_score",
    "predictive_mean",
    "predictive_std",
    "regression_variance_decomposition",
    "mixture_quantile",
    "credible_interval",
]


class EntropyDecomposition(NamedTuple):
    """Total, aleatoric and epistemic entropy, each of shape ``(...)``, in nats.

    ``total`` is the predictive entropy, ``aleatoric`` the expected entropy and
    ``epistemic`` the mutual information ``total - aleatoric``.
    """

    #: Predictive entropy :math:`H[\bar p]`.
    total: Tensor
    #: Expected entropy :math:`\frac1S\sum_s H[p_s]`.
    aleatoric: Tensor
    #: Mutual information, ``total - aleatoric``.
    epistemic: Tensor


class VarianceDecomposition(NamedTuple):
    """Aleatoric, epistemic and total variance (law of total variance).

    For regression each field has the shape ``(...)`` of one prediction. For
    classification each field holds the per-class variances ``(..., C)`` or, with
    ``full=True``, the covariance matrices ``(..., C, C)``.
    """

    #: Expected noise variance given the weights.
    aleatoric: Tensor
    #: Variance over the weight samples.
    epistemic: Tensor
    #: Their sum, the variance of the predictive distribution.
    total: Tensor


class CredibleInterval(NamedTuple):
    """Lower and upper end of a central credible interval, each of shape ``(...)``."""

    #: The lower end, the :math:`(1 - \text{level})/2` quantile.
    lower: Tensor
    #: The upper end, the :math:`(1 + \text{level})/2` quantile.
    upper: Tensor


# ------------------------------------------------------------------- classification
def _entropy(p: Tensor) -> Tensor:
    # 0 log 0 = 0; the inner where keeps the gradient finite at p = 0.
    return -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)


@_shared_doc
def predictive_probs(samples: Tensor, input_type: InputType = "probs") -> Tensor:
    r"""Predictive class probabilities: the mean over samples of the per-sample softmax.

    :math:`\bar p = \frac1S \sum_s p_s` with :math:`p_s = \mathrm{softmax}(z_s)` for
    logits and :math:`p_s` as given for probabilities.

    Parameters
    ----------
    {samples, input_type}

    Returns
    -------
    Tensor
        Probabilities of shape ``(..., C)``.

    Examples
    --------
    >>> import torch
    >>> samples = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (S=2, N=1, C=2)
    >>> predictive_probs(samples)
    tensor([[0.5000, 0.5000]])
    >>> predictive_probs(torch.zeros(4, 3), input_type="logits")
    tensor([0.3333, 0.3333, 0.3333])
    """
    return _class_probs(samples, input_type, "predictive_probs").mean(0)


@_shared_doc
def predictive_entropy(samples: Tensor, input_type: InputType = "probs") -> Tensor:
    r"""Total uncertainty: the entropy of the predictive probabilities, in nats.

    :math:`H[\bar p] = -\sum_c \bar p_c \log \bar p_c`; between 0 and :math:`\log C`.

    Parameters
    ----------
    {samples, input_type}

    Returns
    -------
    Tensor
        Entropies of the predictive probabilities, shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> samples = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (S=2, C=2)
    >>> predictive_entropy(samples)  # log 2
    tensor(0.6931)
    """
    p = _class_probs(samples, input_type, "predictive_entropy")
    return _entropy(p.mean(0))


@_shared_doc
def expected_entropy(samples: Tensor, input_type: InputType = "probs") -> Tensor:
    r"""Aleatoric uncertainty: the mean over samples of each sample's entropy, in nats.

    :math:`\frac1S \sum_s H[p_s]`, the noise the model expects in the labels even
    with its weights known.

    Parameters
    ----------
    {samples, input_type}

    Returns
    -------
    Tensor
        Entropies of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> expected_entropy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # confident samples
    tensor(0.)
    >>> expected_entropy(torch.tensor([[0.5, 0.5]]))
    tensor(0.6931)
    """
    p = _class_probs(samples, input_type, "expected_entropy")
    return _entropy(p).mean(0)


@_shared_doc
def mutual_information(samples: Tensor, input_type: InputType = "probs") -> Tensor:
    r"""Epistemic uncertainty: the mutual information between label and weights, in nats.

    :math:`I = H[\bar p] - \frac1S \sum_s H[p_s]` (the BALD score of Houlsby et al.,
    2011), zero when all samples agree. Tiny negative values from rounding are set
    to zero.

    Parameters
    ----------
    {samples, input_type}

    Returns
    -------
    Tensor
        Mutual information of shape ``(...)``, between 0 and :math:`\log C`.

    Examples
    --------
    >>> import torch
    >>> mutual_information(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # disagreement
    tensor(0.6931)
    >>> mutual_information(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))  # agreement
    tensor(0.)
    """
    return _entropy_decomposition(samples, input_type, "mutual_information").epistemic


@_shared_doc
def entropy_decomposition(
    samples: Tensor, input_type: InputType = "probs"
) -> EntropyDecomposition:
    r"""Predictive entropy split into expected entropy and mutual information.

    ``total`` (:func:`predictive_entropy`) = ``aleatoric`` (:func:`expected_entropy`)
    + ``epistemic`` (:func:`mutual_information`), computed from one softmax pass.

    Parameters
    ----------
    {samples, input_type}

    Returns
    -------
    EntropyDecomposition
        Named tuple ``(total, aleatoric, epistemic)`` of tensors of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> logits = torch.randn(16, 8, 3)  # (S, N, C)
    >>> total, aleatoric, epistemic = entropy_decomposition(logits, "logits")
    >>> torch.allclose(total, aleatoric + epistemic)
    True
    """
    return _entropy_decomposition(samples, input_type, "entropy_decomposition")


def _entropy_decomposition(
    samples: object, input_type: str, fn: str
) -> EntropyDecomposition:
    p = _class_probs(samples, input_type, fn)
    total = _entropy(p.mean(0))
    aleatoric = _entropy(p).mean(0)
    # the difference of two entropies can round to a tiny negative number
    return EntropyDecomposition(total, aleatoric, (total - aleatoric).clamp_min(0))


@_shared_doc
def variation_ratio(samples: Tensor, input_type: InputType = "probs") -> Tensor:
    r"""One minus the fraction of samples that vote for the modal class.

    Each sample votes for its most probable class (the first one on ties); with
    :math:`f` the largest vote count, the variation ratio is :math:`1 - f/S`. It is 0
    when all samples agree and at most :math:`1 - 1/C`.

    Parameters
    ----------
    {samples, input_type}

    Returns
    -------
    Tensor
        Variation ratios of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> votes = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> variation_ratio(votes)  # 3 of 4 samples vote for class 0
    tensor(0.2500)
    """
    x = _class_samples(samples, input_type, "variation_ratio")
    n_samples, n_classes = x.shape[0], x.shape[-1]
    # argmax of the logits equals argmax of their softmax: no need to normalise.
    votes = torch.nn.functional.one_hot(x.argmax(-1), n_classes).sum(0)
    return 1 - votes.max(-1).values.to(x.dtype) / n_samples


@_shared_doc
def classification_variance_decomposition(
    samples: Tensor, input_type: InputType = "probs", *, full: bool = False
) -> VarianceDecomposition:
    r"""Aleatoric and epistemic variance of the one-hot label (Kwon et al., 2020).

    The variance analogue for classification of Kendall & Gal's (2017) regression
    decomposition, as derived by Kwon et al. (2020): with per-sample probabilities
    :math:`p_s` and their mean :math:`\bar p`,

    .. math::

        \underbrace{\operatorname{diag}(\bar p) - \bar p \bar p^\top}_{\text{total}}
        = \underbrace{\frac1S \sum_s \left(\operatorname{diag}(p_s) - p_s
          p_s^\top\right)}_{\text{aleatoric}}
        + \underbrace{\frac1S \sum_s (p_s - \bar p)(p_s - \bar p)^\top}_{\text{epistemic}}.

    ``total`` is the covariance of the one-hot label under the predictive
    distribution; the identity is the law of total variance and holds exactly
    because the epistemic term divides by :math:`S`, not :math:`S - 1`.

    Parameters
    ----------
    {samples, input_type}
    full : bool, default: False
        Return the full ``(..., C, C)`` covariance matrices instead of their
        diagonals ``(..., C)``, the per-class variances :math:`\frac1S\sum_s
        p_{s,c}(1 - p_{s,c})`, :math:`\frac1S\sum_s (p_{s,c} - \bar p_c)^2` and
        :math:`\bar p_c (1 - \bar p_c)`.

    Returns
    -------
    VarianceDecomposition
        Named tuple ``(aleatoric, epistemic, total)``.

    References
    ----------
    Y. Kwon, J.-H. Won, B. J. Kim and M. C. Paik. Uncertainty quantification using
    Bayesian neural networks in classification: application to biomedical image
    segmentation. *Computational Statistics & Data Analysis* 142, 2020.

    A. Kendall and Y. Gal. What uncertainties do we need in Bayesian deep learning
    for computer vision? *NeurIPS* 2017.

    Examples
    --------
    >>> import torch
    >>> samples = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # (S=2, C=2)
    >>> aleatoric, epistemic, total = classification_variance_decomposition(samples)
    >>> aleatoric, epistemic, total
    (tensor([0.1700, 0.1700]), tensor([0.0400, 0.0400]), tensor([0.2100, 0.2100]))
    >>> classification_variance_decomposition(samples, full=True).total
    tensor([[ 0.2100, -0.2100],
            [-0.2100,  0.2100]])
    """
    p = _class_probs(samples, input_type, "classification_variance_decomposition")
    return _class_variance(p, full)


def _class_variance(p: Tensor, full: bool) -> VarianceDecomposition:
    mean = p.mean(0)
    if not full:
        aleatoric = (p * (1 - p)).mean(0)
        epistemic = (p - mean).square().mean(0)
        return VarianceDecomposition(aleatoric, epistemic, mean * (1 - mean))
    outer = p.unsqueeze(-1) * p.unsqueeze(-2)
    aleatoric = torch.diag_embed(mean) - outer.mean(0)
    deviation = p - mean
    epistemic = (deviation.unsqueeze(-1) * deviation.unsqueeze(-2)).mean(0)
    total = torch.diag_embed(mean) - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    return VarianceDecomposition(aleatoric, epistemic, total)


@_shared_doc
def confidence_score(
    samples: Tensor,
    input_type: InputType = "probs",
    *,
    variance: Literal["total", "aleatoric", "epistemic"] = "total",
) -> Tensor:
    r"""Confidence score :math:`c = 1 - 2\sqrt{u}` of Deodato et al. (2020).

    :math:`u` is the variance of the predicted class :math:`k = \arg\max_c \bar p_c`
    from :func:`classification_variance_decomposition`: by default the *total*
    variance :math:`u = \bar p_k (1 - \bar p_k)`, the sum of the aleatoric
    :math:`\frac1S\sum_s p_{s,k}(1 - p_{s,k})` and the epistemic
    :math:`\frac1S\sum_s (p_{s,k} - \bar p_k)^2` diagonal entries. Each of the three
    is at most 1/4 (the largest variance of a quantity in ``[0, 1]``), so
    :math:`c \in [0, 1]`, with 1 for a certain prediction. With the total variance
    the score depends on the samples only through :math:`\bar p_k`; choose
    ``variance="epistemic"`` to score model uncertainty alone.

    Parameters
    ----------
    {samples, input_type}
    variance : {"total", "aleatoric", "epistemic"}, default: "total"
        Which variance of the predicted class is :math:`u`.

    Returns
    -------
    Tensor
        Scores of shape ``(...)`` in ``[0, 1]``.

    References
    ----------
    G. Deodato, C. Ball and X. Zhang. Bayesian neural networks for cellular image
    classification and uncertainty analysis. Preprint, 2020.

    Examples
    --------
    >>> import torch
    >>> confidence_score(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # certain
    tensor(1.)
    >>> confidence_score(torch.tensor([[0.5, 0.5]]))  # u = 1/4
    tensor(0.)
    """
    fn = "confidence_score"
    _check_choice(variance, ("total", "aleatoric", "epistemic"), fn, "variance")
    p = _class_probs(samples, input_type, fn)
    decomposition = _class_variance(p, full=False)
    predicted = p.mean(0).argmax(-1, keepdim=True)
    u = getattr(decomposition, variance).gather(-1, predicted).squeeze(-1)
    return (1 - 2 * u.clamp_min(0).sqrt()).clamp(0, 1)


# ----------------------------------------------------------------------- regression
@_shared_doc
def predictive_mean(means: Tensor) -> Tensor:
    r"""Mean of the predictive mixture: the average of the sampled means.

    Parameters
    ----------
    {means}

    Returns
    -------
    Tensor
        Predictive means of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> predictive_mean(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    tensor([2., 4.])
    """
    return _regression_means(means, "predictive_mean").mean(0)


@_shared_doc
def predictive_std(means: Tensor, stds: StdLike = None) -> Tensor:
    r"""Standard deviation of the predictive mixture.

    :math:`\sqrt{\frac1S\sum_s \sigma_s^2 + \frac1S\sum_s (\mu_s - \bar\mu)^2}`, the
    square root of the total variance of :func:`regression_variance_decomposition`.

    Parameters
    ----------
    {means}
    stds : Tensor or float or None, default: None
        Aleatoric standard deviation: ``None`` for none, a number, or a tensor
        broadcastable to ``means`` (``(S, ...)`` for per-sample predictions).

    Returns
    -------
    Tensor
        Standard deviations of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> means = torch.tensor([[0.0], [2.0]])  # (S=2, N=1): epistemic variance 1
    >>> predictive_std(means)
    tensor([1.])
    >>> predictive_std(means, stds=torch.sqrt(torch.tensor(3.0)))  # 1 + 3
    tensor([2.])
    """
    m, s = _regression_inputs(means, stds, "predictive_std")
    return _regression_decomposition(m, s).total.sqrt()


def _regression_decomposition(m: Tensor, s: Optional[Tensor]) -> VarianceDecomposition:
    epistemic = m.var(0, correction=0)
    aleatoric = torch.zeros_like(epistemic) if s is None else s.square().mean(0)
    return VarianceDecomposition(aleatoric, epistemic, aleatoric + epistemic)


@_shared_doc
def regression_variance_decomposition(
    means: Tensor, stds: StdLike = None
) -> VarianceDecomposition:
    r"""Aleatoric and epistemic variance of the predictive mixture (Kendall & Gal, 2017).

    aleatoric :math:`= \frac1S\sum_s \sigma_s^2`, epistemic :math:`= \frac1S\sum_s
    (\mu_s - \bar\mu)^2` and total = aleatoric + epistemic, the variance of the
    mixture :math:`\frac1S\sum_s \mathcal N(\mu_s, \sigma_s^2)` (law of total
    variance; the epistemic term divides by :math:`S`, not :math:`S - 1`).

    Parameters
    ----------
    {means}
    stds : Tensor or float or None, default: None
        Aleatoric standard deviation: ``None`` for none (the aleatoric part is
        zero), a number, or a tensor broadcastable to ``means``.

    Returns
    -------
    VarianceDecomposition
        Named tuple ``(aleatoric, epistemic, total)`` of tensors of shape ``(...)``.

    References
    ----------
    A. Kendall and Y. Gal. What uncertainties do we need in Bayesian deep learning
    for computer vision? *NeurIPS* 2017.

    Examples
    --------
    >>> import torch
    >>> means = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # (S=2, N=2)
    >>> stds = torch.tensor([[1.0], [3.0]])  # one noise level per sample
    >>> aleatoric, epistemic, total = regression_variance_decomposition(means, stds)
    >>> aleatoric, epistemic, total
    (tensor([5., 5.]), tensor([1., 0.]), tensor([6., 5.]))
    """
    m, s = _regression_inputs(means, stds, "regression_variance_decomposition")
    return _regression_decomposition(m, s)


_MAX_STEPS = 200
# Solve to this fraction of the mixture's spread (float64 resolves about 2e-16).
_RTOL = 1e-12
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _mixture_quantile(m: Tensor, s: Optional[Tensor], q: float) -> Tensor:
    """The ``q``-quantile of the mixture over dim 0, by safeguarded Newton steps."""
    dtype = m.dtype
    with torch.no_grad():
        m = m.detach().to(torch.float64)
        # A NaN sample makes its prediction's quantile NaN (as in torch.quantile);
        # the others are solved with it replaced.
        undefined = m.isnan().any(dim=0)
        if bool(undefined.any()):
            m = m.nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
        if s is None or not bool((s > 0).any()):
            # point masses only: the ceil(q S)-th smallest mean, with q S computed
            # exactly (0.3 * 10 is 3, not 3.0000000000000004)
            rank = math.ceil(Fraction(q) * m.shape[0])
            result = m.kthvalue(rank, dim=0).values
            return result.masked_fill(undefined, math.nan).to(dtype)
        if bool(m.isinf().any()):
            raise UncertaintyInputError(
                "mixture_quantile: means must be finite where stds are given (a "
                f"Normal component at infinity has no CDF), got {int(m.isinf().sum())} "
                "infinite means"
            )
        s = s.detach().to(torch.float64)
        positive = s > 0
        safe_s = torch.where(positive, s, torch.ones_like(s))
        z_q = torch.special.ndtri(torch.tensor(q, dtype=torch.float64)).item()
        # The quantile lies between the smallest and the largest q-quantile of the
        # components: the mixture CDF is below q left of all, at least q right of all.
        component = m + s * z_q
        low, high = component.min(0).values, component.max(0).values
        atol = _RTOL * (high - low + s.amax(0))
        # start from the Gaussian approximation, inside the bracket
        spread = (s.square().mean(0) + m.var(0, correction=0)).sqrt()
        x = torch.minimum(torch.maximum(m.mean(0) + z_q * spread, low), high)
        newton_done = torch.zeros_like(x, dtype=torch.bool)
        for _ in range(_MAX_STEPS):
            z = (x - m) / safe_s
            step_cdf = (x >= m).to(m.dtype)  # point masses
            cdf = torch.where(positive, torch.special.ndtr(z), step_cdf).mean(0)
            density = torch.exp(-0.5 * z.square()) * _INV_SQRT_2PI / safe_s
            pdf = torch.where(positive, density, torch.zeros_like(density)).mean(0)
            above = cdf >= q
            high = torch.where(above, x, high)
            low = torch.where(above, low, x)
            # Newton where it stays inside the bracket, bisection elsewhere
            step = (cdf - q) / pdf  # inf or NaN where pdf = 0: bisection
            newton = x - step
            use_newton = (pdf > 0) & (newton >= low) & (newton <= high)
            middle = (low + high) / 2
            newton_done = use_newton & (step.abs() <= atol)
            bracket_done = (high - low <= atol) | ~((middle > low) & (middle < high))
            x = torch.where(use_newton, newton, middle)
            if bool((newton_done | bracket_done).all()):
                break
        result = torch.where(newton_done, x, high)
    return result.masked_fill(undefined, math.nan).to(dtype)


@_shared_doc
def mixture_quantile(means: Tensor, stds: StdLike = None, q: float = 0.5) -> Tensor:
    r"""The ``q``-quantile of the predictive mixture, solved on its CDF.

    Solves :math:`F(x) = \frac1S\sum_s \Phi\big((x - \mu_s)/\sigma_s\big) = q`
    for :math:`x` in float64, with Newton steps safeguarded by bisection inside the
    bracket spanned by the components' own ``q``-quantiles, to :math:`10^{-12}`
    times the mixture's spread. Components with :math:`\sigma_s = 0` are point
    masses; without ``stds`` the result is exactly the empirical quantile
    :math:`\min\{x : F(x) \ge q\}` of the sampled means, the
    :math:`\lceil qS \rceil`-th smallest (infinite means included). The result is
    not differentiable (it is computed without autograd). A prediction with a NaN
    sample gets a NaN quantile, as in :func:`torch.quantile`; infinite means with
    ``stds`` raise :class:`UncertaintyInputError`.

    Parameters
    ----------
    {means, stds}
    q : float, default: 0.5
        The probability, strictly between 0 and 1.

    Returns
    -------
    Tensor
        Quantiles of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> mixture_quantile(torch.zeros(1, 1), 1.0, q=0.975)  # standard normal
    tensor([1.9600])
    >>> means = torch.tensor([0.0, 4.0])  # two samples of one prediction
    >>> mixture_quantile(means, 1.0, q=0.5), mixture_quantile(means, 1.0, q=0.9)
    (tensor(2.), tensor(4.8416))
    """
    fn = "mixture_quantile"
    q = _check_level(q, fn, "q")
    m, s = _regression_inputs(means, stds, fn)
    return _mixture_quantile(m, s, q)


@_shared_doc
def credible_interval(
    means: Tensor,
    stds: StdLike = None,
    level: float = 0.95,
    *,
    method: Literal["mixture", "gaussian"] = "mixture",
) -> CredibleInterval:
    r"""Central credible interval of the predictive distribution.

    The interval between the :math:`(1 - \text{level})/2` and :math:`(1 +
    \text{level})/2` quantiles. ``method="mixture"`` (default) takes the quantiles of
    the Gaussian mixture itself (:func:`mixture_quantile`); ``method="gaussian"`` is
    the moment-matched approximation :math:`\bar\mu \pm z\,\sigma_{\text{total}}` with
    :math:`z = \Phi^{-1}((1 + \text{level})/2)`, which is exact only when the mixture
    is Gaussian (e.g. all means equal) and is differentiable.

    Parameters
    ----------
    {means, stds}
    level : float, default: 0.95
        Probability mass inside the interval, strictly between 0 and 1.
    method : {"mixture", "gaussian"}, default: "mixture"
        Exact mixture quantiles or the Gaussian approximation.

    Returns
    -------
    CredibleInterval
        Named tuple ``(lower, upper)`` of tensors of shape ``(...)``.

    Examples
    --------
    >>> import torch
    >>> lower, upper = credible_interval(torch.zeros(3, 2), stds=1.0, level=0.95)
    >>> lower, upper
    (tensor([-1.9600, -1.9600]), tensor([1.9600, 1.9600]))
    """
    fn = "credible_interval"
    level = _check_level(level, fn)
    _check_choice(method, ("mixture", "gaussian"), fn, "method")
    m, s = _regression_inputs(means, stds, fn)
    if method == "gaussian":
        z = torch.special.ndtri(torch.tensor((1 + level) / 2, dtype=torch.float64))
        half = z.item() * _regression_decomposition(m, s).total.sqrt()
        centre = m.mean(0)
        return CredibleInterval(centre - half, centre + half)
    lower = _mixture_quantile(m, s, (1 - level) / 2)
    upper = _mixture_quantile(m, s, (1 + level) / 2)
    return CredibleInterval(lower, upper)
