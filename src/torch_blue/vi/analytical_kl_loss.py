"""``AnalyticalKullbackLeiblerLoss``: the negative ELBO, its KL term from the parameters."""

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Module

from .base import VIModule, named_random_variables
from .distributions import PredictiveDistribution
from .distributions.kl import (
    ClosedFormKL,
    KullbackLeiblerModule,
    NonBayesianDivergence,
    NormalNormalDivergence,
    UniformNormalDivergence,
    has_closed_form_kl,
    kl_divergence,
    monte_carlo_kl_divergence,
)
from .kl_loss import _NegativeELBO
from .utils.checks import check_int
from .utils.errors import NoVariablesError
from .utils.vi_return import VIReturn

__all__ = [
    "AnalyticalKullbackLeiblerLoss",
    "ClosedFormKL",
    "KullbackLeiblerModule",
    "NonBayesianDivergence",
    "NormalNormalDivergence",
    "UniformNormalDivergence",
]


class AnalyticalKullbackLeiblerLoss(_NegativeELBO):
    r"""Negative ELBO whose KL term is computed from the variational parameters.

    Same data term as :class:`~torch_blue.vi.KullbackLeiblerLoss`, but the KL term
    :math:`\mathrm{KL}(q\,\|\,p)` is computed per random variable of ``model`` from
    its variational parameters: exactly (no Monte Carlo noise) where a closed form is
    registered for the pair ``(prior type, variational type)`` (see
    :mod:`torch_blue.vi.distributions.kl`; add your own with
    :func:`~torch_blue.vi.distributions.register_kl`), and otherwise by an unbiased
    Monte Carlo estimate from ``kl_samples`` fresh draws of that variable
    (:func:`~torch_blue.vi.distributions.monte_carlo_kl_divergence`; one draw by
    default, which costs one weight draw per variable and step).
    :attr:`monte_carlo_variables` lists the variables estimated that way. The lookup
    happens at every call, so pairs registered later are picked up. The model output
    may be a plain tensor, so the model can run with ``return_log_probs = False``
    (which skips the log-prob computation).

    The loss keeps a reference to ``model`` without registering it as a submodule:
    the model's parameters, flags and state dict are untouched. Its random variables
    are looked up at every call, so layers added or replaced later (a new head for
    fine-tuning) count.

    Parameters
    ----------
    model : nn.Module
        The model whose KL term to compute.
    predictive_distribution : PredictiveDistribution
        Likelihood of the targets.
    dataset_size : int, optional
        Number of training examples (required here or in :meth:`forward`).
    divergence_type : ClosedFormKL, optional
        Force one closed form for every variable instead of the registry lookup.
    heat : float, default: 1.0
        Weight of the KL term.
    track : bool, default: False
        Record the loss components in :attr:`log`.
    objective : {"elbo", "log_mean_predictive"}, default: "elbo"
        Data term, as in :class:`~torch_blue.vi.KullbackLeiblerLoss`.
    kl_samples : int, default: 1
        Number of draws for the Monte Carlo estimate of pairs without a closed form.
    reduction : {"mean", "sum"}, default: "mean"
        The negative ELBO per training example or for the whole training set, as in
        :class:`~torch_blue.vi.KullbackLeiblerLoss`.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import AnalyticalKullbackLeiblerLoss, VILinear
    >>> from torch_blue.vi.distributions import MeanFieldNormal
    >>> model = VILinear(3, 1, return_log_probs=False)
    >>> loss_fn = AnalyticalKullbackLeiblerLoss(model, MeanFieldNormal(), dataset_size=50)
    >>> loss = loss_fn(model(torch.randn(8, 3), samples=4), torch.randn(8, 1))
    >>> loss.backward()
    """

    def __init__(
        self,
        model: Module,
        predictive_distribution: PredictiveDistribution,
        dataset_size: Optional[int] = None,
        divergence_type: Optional[ClosedFormKL] = None,
        heat: float = 1.0,
        track: bool = False,
        *,
        objective: str = "elbo",
        kl_samples: int = 1,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(model, Module):
            raise TypeError(
                f"{name}: model must be an nn.Module, got {type(model).__name__}"
            )
        if divergence_type is not None and not isinstance(divergence_type, ClosedFormKL):
            raise TypeError(
                f"{name}: divergence_type must be a ClosedFormKL (KullbackLeiblerModule) "
                f"instance, got {divergence_type!r}"
            )
        self.kl_samples = check_int(name, "kl_samples", kl_samples)
        self._configure(
            predictive_distribution, dataset_size, heat, objective, reduction, track
        )
        self.divergence_type = divergence_type
        # Stored outside _modules on purpose: see the class docstring.
        self.__dict__["model"] = model
        if divergence_type is None:
            # Fail now, not at the first step, when a closed form does not fit its
            # variable. (Monte Carlo pairs are not tried: that would draw random
            # numbers and shift the user's random stream.)
            with torch.no_grad():
                for _, module, variable in self._variables():
                    if self._closed_form(module, variable):
                        self._variable_kl(module, variable)

    def _variables(self) -> list[tuple[str, VIModule, str]]:
        """``(name, module, variable)`` of every random variable in the model now.

        Looked up at every call, so that a layer added or replaced after the loss was
        built (a new head for fine-tuning) gets its KL term.
        """
        found = [(v.name, v.module, v.variable) for v in named_random_variables(self.model)]
        if not found:
            raise NoVariablesError(
                f"{type(self).__name__}: the model has no random variables"
            )
        return found

    @property
    def kl_module(self) -> Optional[ClosedFormKL]:
        """The forced divergence (``divergence_type``), or ``None`` for the registry."""
        return self.divergence_type

    @property
    def monte_carlo_variables(self) -> list[str]:
        """Names (``"path.variable"``) of the variables with a Monte Carlo KL."""
        if self.divergence_type is not None:
            return []
        return [
            name
            for name, module, variable in self._variables()
            if not self._closed_form(module, variable)
        ]

    def extra_repr(self) -> str:
        """Summarise the configuration for ``print(loss)``."""
        return (
            f"{self._settings_repr()}, kl_samples={self.kl_samples}, "
            f"reduction={self.reduction!r}"
        )

    @staticmethod
    def _closed_form(module: VIModule, variable: str) -> bool:
        return has_closed_form_kl(
            module.prior[variable], module.variational_distribution[variable]
        )

    def _variable_kl(self, module: VIModule, variable: str) -> Tensor:
        prior = module.prior[variable]
        variational = module.variational_distribution[variable]
        parameters = module.get_variational_parameters(variable)
        if self.divergence_type is not None:
            return self.divergence_type(prior.get_parameters(), parameters)
        if has_closed_form_kl(prior, variational):
            return kl_divergence(prior, variational, parameters)
        return monte_carlo_kl_divergence(
            prior,
            variational,
            parameters,
            self.kl_samples,
            module._prior_hyperparameters(variable),
        )

    def prior_matching(self) -> Tensor:
        """The KL divergence, summed over all random variables.

        Exact for pairs with a closed form, an unbiased estimate for the others.
        """
        return torch.stack(
            [self._variable_kl(m, v).reshape(()) for _, m, v in self._variables()]
        ).sum()

    def forward(
        self, model_output: Tensor, target: Tensor, dataset_size: Optional[int] = None
    ) -> Tensor:
        """Compute the loss from sampled outputs ``(S, *)`` and targets."""
        samples = (
            model_output.as_plain() if isinstance(model_output, VIReturn) else model_output
        )
        data, prior_matching = self._combine(
            samples, target, self.prior_matching(), dataset_size
        )
        return data + prior_matching
