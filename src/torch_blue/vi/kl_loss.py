"""``KullbackLeiblerLoss``: the negative ELBO from sampled outputs and log-probs."""

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor
from torch.nn import Module

from .distributions import PredictiveDistribution
from .utils.checks import check_int, check_weight
from .utils.errors import MissingLogProbsError, UnsupportedDistributionError
from .utils.vi_return import VIReturn

__all__ = ["KullbackLeiblerLoss"]

OBJECTIVES = ("elbo", "log_mean_predictive")
REDUCTIONS = ("mean", "sum")


def _check_predictive(owner: str, distribution: object) -> PredictiveDistribution:
    if not isinstance(distribution, PredictiveDistribution):
        raise UnsupportedDistributionError(
            f"{owner}: {type(distribution).__name__} cannot be used as predictive "
            "distribution"
        )
    return distribution


def _check_dataset_size(
    owner: str, value: Optional[int], allow_none: bool = True
) -> Optional[int]:
    if value is None:
        if allow_none:
            return None
        raise ValueError(
            f"{owner}: dataset_size (the number of training examples) is required; pass "
            "it to the constructor or to forward"
        )
    return check_int(owner, "dataset_size", value)


def _check_heat(owner: str, heat: float) -> float:
    return check_weight(owner, "heat", heat)


def _check_objective(owner: str, objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(
            f"{owner}: objective must be one of {OBJECTIVES}, got {objective!r}"
        )
    return objective


def _check_reduction(owner: str, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{owner}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
        )
    return reduction


def checked(name: str, check: Callable[[str, Any], Any], doc: str) -> property:
    """A loss setting validated by ``check(owner, value)`` whenever it is set.

    The constructor and later assignments (``loss.heat = 0.5``) go through the same
    check, so a setting can never hold a value the constructor would refuse.
    """
    private = f"_{name}"

    def get(self: Module) -> Any:
        return self.__dict__[private]

    def set_(self: Module, value: Any) -> None:
        self.__dict__[private] = check(type(self).__name__, value)

    return property(get, set_, doc=doc)


#: The settings both losses share, each validated on every assignment.
LOSS_SETTINGS = {
    "dataset_size": checked(
        "dataset_size", _check_dataset_size, "Number of training examples, or None."
    ),
    "heat": checked("heat", _check_heat, "Weight of the KL term (finite, >= 0)."),
    "objective": checked("objective", _check_objective, "The data term."),
    "reduction": checked("reduction", _check_reduction, "Per example or summed."),
}


def data_fitting(
    predictive: PredictiveDistribution,
    samples: Tensor,
    target: Tensor,
    dataset_size: int,
    objective: str,
) -> Tensor:
    r"""The data term of the loss, scaled to the whole training set.

    ``"elbo"``: :math:`-N \cdot \mathrm{mean}_b\, \mathrm{mean}_s \log p(y_b \mid
    f(x_b, w_s))`, the expected log-likelihood of the textbook ELBO.
    ``"log_mean_predictive"``: :math:`-N \cdot \mathrm{mean}_b \log \mathrm{mean}_s\,
    p(y_b \mid f(x_b, w_s))`, the log of the sample-averaged predictive (a tighter
    but biased objective).
    """
    if objective == "elbo":
        log_likelihood = predictive.sample_log_likelihood(target, samples).mean()
    else:
        log_likelihood = predictive.log_prob_from_samples(target, samples).mean()
    if torch.is_grad_enabled():  # a training call: the inputs are validated by now
        predictive.observe(target, samples, dataset_size)
    return -dataset_size * log_likelihood


class _NegativeELBO(Module):
    """What both KL losses share: their settings and how the two terms combine."""

    dataset_size = LOSS_SETTINGS["dataset_size"]
    heat = LOSS_SETTINGS["heat"]
    objective = LOSS_SETTINGS["objective"]
    reduction = LOSS_SETTINGS["reduction"]
    _log_keys: tuple[str, ...] = ("data_fitting", "prior_matching")

    def _configure(
        self,
        predictive_distribution: PredictiveDistribution,
        dataset_size: Optional[int],
        heat: float,
        objective: str,
        reduction: str,
        track: bool,
    ) -> None:
        # (not a checked setting: a learned likelihood is a submodule)
        self.predictive_distribution = _check_predictive(
            type(self).__name__, predictive_distribution
        )
        self.dataset_size = dataset_size
        self.heat = heat
        self.objective = objective
        self.reduction = reduction
        self._track = False
        self.log: Optional[dict[str, list]] = None
        self.track(track)

    def track(self, mode: bool = True) -> None:
        """Start (``True``) or pause (``False``) recording the loss components.

        :attr:`log` maps each component's name to a list with one entry per call;
        history is kept across pauses.
        """
        if mode and self.log is None:
            self.log = {key: [] for key in self._log_keys}
        self._track = bool(mode)

    def _combine(
        self,
        samples: Tensor,
        target: Tensor,
        prior_matching: Tensor,
        dataset_size: Optional[int],
    ) -> tuple[Tensor, Tensor]:
        """Data fitting and weighted prior matching, reduced; logged when tracking."""
        n_data = _check_dataset_size(
            type(self).__name__,
            dataset_size if dataset_size is not None else self.dataset_size,
            False,
        )
        prior_matching = self.heat * prior_matching
        data = data_fitting(
            self.predictive_distribution, samples, target, n_data, self.objective
        )
        if self.reduction == "mean":
            data, prior_matching = data / n_data, prior_matching / n_data
        if self._track and self.log is not None:
            self.log["data_fitting"].append(data.item())
            self.log["prior_matching"].append(prior_matching.item())
        return data, prior_matching

    def _settings_repr(self) -> str:
        return (
            f"predictive_distribution={self.predictive_distribution}, "
            f"dataset_size={self.dataset_size}, heat={self.heat}, "
            f"objective={self.objective!r}"
        )


class KullbackLeiblerLoss(_NegativeELBO):
    r"""Negative evidence lower bound (ELBO), estimated from sampled weights.

    .. math::
        \mathcal L = \frac1N\Big(-N\,\mathrm{mean}_{b}\,\mathrm{mean}_{s}
        \log p(y_b \mid f(x_b, w_s))
        + \mathrm{heat}\cdot\mathrm{mean}_{s}\big[\log q(w_s) - \log p(w_s)\big]\Big)

    :math:`N` is ``dataset_size``, the number of training examples, so that the loss
    of one minibatch is an unbiased estimate of the full-data negative ELBO divided
    by :math:`N`: the negative ELBO per training example, on the scale of
    ``nn.CrossEntropyLoss`` and ``nn.GaussianNLLLoss``, so that the optimiser and
    learning rate of a deterministic recipe carry over (``reduction="sum"`` gives the
    full-data negative ELBO; both have the same minimiser). The second term is the
    Monte Carlo estimate of :math:`\mathrm{KL}(q\,\|\,p)` from the model output's
    ``log_probs``.

    Parameters
    ----------
    predictive_distribution : PredictiveDistribution
        Likelihood of the targets: :class:`~.distributions.Categorical` for
        classification, :class:`~.distributions.MeanFieldNormal` for regression.
    dataset_size : int, optional
        Number of training examples; if ``None`` it must be passed to
        :meth:`forward` (it is never guessed).
    heat : float, default: 1.0
        Weight of the KL term (< 1 gives a "cold" posterior, 0 a plain loss).
    track : bool, default: False
        Record the loss components in :attr:`log`.
    objective : {"elbo", "log_mean_predictive"}, default: "elbo"
        Data term: the expected log-likelihood (textbook ELBO) or the log of the
        sample-averaged predictive (:ref:`upstream's data term <migrating>`).
    reduction : {"mean", "sum"}, default: "mean"
        ``"mean"``: the negative ELBO per training example (divided by
        ``dataset_size``). ``"sum"``: the full-data negative ELBO
        (:ref:`upstream's scale <migrating-defaults>`), which is ``dataset_size``
        times larger: with plain SGD it needs a learning rate that much smaller.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import KullbackLeiblerLoss, VILinear
    >>> from torch_blue.vi.distributions import Categorical
    >>> model = VILinear(4, 3)
    >>> loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=1000)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> loss = loss_fn(model(x, samples=8), y)
    >>> loss.backward()
    """

    _log_keys = ("data_fitting", "prior_matching", "log_probs")

    def __init__(
        self,
        predictive_distribution: PredictiveDistribution,
        dataset_size: Optional[int] = None,
        heat: float = 1.0,
        track: bool = False,
        *,
        objective: str = "elbo",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self._configure(
            predictive_distribution, dataset_size, heat, objective, reduction, track
        )

    def extra_repr(self) -> str:
        """Summarise the configuration for ``print(loss)``."""
        return f"{self._settings_repr()}, reduction={self.reduction!r}"

    def forward(
        self, model_output: VIReturn, target: Tensor, dataset_size: Optional[int] = None
    ) -> Tensor:
        """Compute the loss.

        Parameters
        ----------
        model_output : VIReturn
            Sampled outputs ``(S, *)`` with ``log_probs`` of shape ``(S, 2)``.
        target : Tensor
            Targets, shape ``(*)`` as the predictive distribution expects.
        dataset_size : int, optional
            Overrides the constructor's ``dataset_size`` for this call.
        """
        name = type(self).__name__
        log_probs = getattr(model_output, "log_probs", None)
        if not isinstance(model_output, VIReturn) or log_probs is None:
            got = (
                "a VIReturn without log_probs"
                if isinstance(model_output, VIReturn)
                else f"a plain {type(model_output).__name__}"
            )
            raise MissingLogProbsError(
                f"{name} needs the weights' log-probabilities, but the model output is "
                f"{got}; enable them with model.return_log_probs = True (or use "
                "AnalyticalKullbackLeiblerLoss)"
            )
        log_probs = (
            log_probs.as_subclass(Tensor) if isinstance(log_probs, VIReturn) else log_probs
        )
        data, prior_matching = self._combine(
            model_output.as_plain(),
            target,
            (log_probs[:, 1] - log_probs[:, 0]).mean(),
            dataset_size,
        )
        if self._track and self.log is not None:
            self.log["log_probs"].append(log_probs.detach().mean(0).tolist())
        return data + prior_matching
