"""``AnalyticalKullbackLeiblerLoss``: the negative ELBO with a closed-form KL term."""

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Module

from .base import VIModule
from .distributions import PredictiveDistribution
from .distributions.kl import (
    KullbackLeiblerModule,
    NonBayesianDivergence,
    NormalNormalDivergence,
    UniformNormalDivergence,
    kl_divergence,
)
from .kl_loss import (
    _check_dataset_size,
    _check_heat,
    _check_objective,
    _check_predictive,
    data_fitting,
)
from .utils.errors import NoVariablesError
from .utils.vi_return import VIReturn

__all__ = [
    "AnalyticalKullbackLeiblerLoss",
    "KullbackLeiblerModule",
    "NonBayesianDivergence",
    "NormalNormalDivergence",
    "UniformNormalDivergence",
]


class AnalyticalKullbackLeiblerLoss(Module):
    r"""Negative ELBO whose KL term is computed in closed form from the parameters.

    Same data term as :class:`~torch_blue.vi.KullbackLeiblerLoss`, but the KL term
    :math:`\mathrm{KL}(q\,\|\,p)` is exact (no Monte Carlo noise): it is summed over
    every random variable of ``model``, looked up by ``(prior type, variational
    type)`` in the registry of :mod:`torch_blue.vi.distributions.kl`. The model output
    may be a plain tensor, so the model can run with ``return_log_probs = False``
    (which skips the log-prob computation).

    The loss keeps a reference to ``model`` without registering it as a submodule:
    the model's parameters, flags and state dict are untouched.

    Parameters
    ----------
    model : nn.Module
        The model whose KL term to compute.
    predictive_distribution : PredictiveDistribution
        Likelihood of the targets.
    dataset_size : int, optional
        Number of training examples (required here or in :meth:`forward`).
    divergence_type : KullbackLeiblerModule, optional
        Force one closed form for every variable instead of the registry lookup.
    heat : float, default: 1.0
        Weight of the KL term.
    track : bool, default: False
        Record the loss components in :attr:`log`.
    objective : {"elbo", "log_mean_predictive"}, default: "elbo"
        Data term, as in :class:`~torch_blue.vi.KullbackLeiblerLoss`.

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
        divergence_type: Optional[KullbackLeiblerModule] = None,
        heat: float = 1.0,
        track: bool = False,
        *,
        objective: str = "elbo",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(model, Module):
            raise TypeError(
                f"{name}: model must be an nn.Module, got {type(model).__name__}"
            )
        if divergence_type is not None and not isinstance(
            divergence_type, KullbackLeiblerModule
        ):
            raise TypeError(
                f"{name}: divergence_type must be a KullbackLeiblerModule instance, got "
                f"{divergence_type!r}"
            )
        self.predictive_distribution = _check_predictive(name, predictive_distribution)
        self.dataset_size = _check_dataset_size(name, dataset_size)
        self.heat = _check_heat(name, heat)
        self.objective = _check_objective(name, objective)
        self.divergence_type = divergence_type
        # Stored outside _modules on purpose: see the class docstring.
        self.__dict__["model"] = model
        self._variables = [
            (module, variable)
            for module in model.modules()
            if isinstance(module, VIModule) and module.random_variables is not None
            for variable in module.random_variables
            if module.variational_distribution[variable] is not None
        ]
        if not self._variables:
            raise NoVariablesError(f"{name}: the model has no random variables")
        if divergence_type is None:
            # Fail now, not at the first step, when a pair has no closed form.
            with torch.no_grad():
                for module, variable in self._variables:
                    self._variable_kl(module, variable)
        self._track = False
        self.log: Optional[dict[str, list]] = None
        self.track(track)

    @property
    def kl_module(self) -> Optional[KullbackLeiblerModule]:
        """The forced divergence (``divergence_type``), or ``None`` for the registry."""
        return self.divergence_type

    def track(self, mode: bool = True) -> None:
        """Start (``True``) or pause (``False``) recording the loss components."""
        if mode and self.log is None:
            self.log = {"data_fitting": [], "prior_matching": []}
        self._track = bool(mode)

    def _variable_kl(self, module: VIModule, variable: str) -> Tensor:
        prior = module.prior[variable]
        variational = module.variational_distribution[variable]
        parameters = module.get_variational_parameters(variable)
        if self.divergence_type is not None:
            return self.divergence_type(prior.get_parameters(), parameters)
        return kl_divergence(prior, variational, parameters)

    def prior_matching(self) -> Tensor:
        """The closed-form KL divergence, summed over all random variables."""
        return torch.stack(
            [self._variable_kl(m, v).reshape(()) for m, v in self._variables]
        ).sum()

    def forward(
        self, model_output: Tensor, target: Tensor, dataset_size: Optional[int] = None
    ) -> Tensor:
        """Compute the loss from sampled outputs ``(S, *)`` and targets."""
        name = type(self).__name__
        n_data = _check_dataset_size(
            name, dataset_size if dataset_size is not None else self.dataset_size, False
        )
        samples = (
            model_output.as_plain() if isinstance(model_output, VIReturn) else model_output
        )
        prior_matching = self.heat * self.prior_matching()
        data = data_fitting(
            self.predictive_distribution, samples, target, n_data, self.objective
        )
        if self._track and self.log is not None:
            self.log["data_fitting"].append(data.item())
            self.log["prior_matching"].append(prior_matching.item())
        return data + prior_matching
