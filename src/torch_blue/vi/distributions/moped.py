r"""Empirical-Bayes priors from a trained deterministic network (MOPED).

MOPED (Krishnan, Subedar & Tickoo, 2020) centres the prior of every weight on the
value a deterministic twin of the network learned, with a standard deviation
proportional to its magnitude, :math:`p(w_i) = \mathcal N(\hat w_i, (\delta
|\hat w_i|)^2)`, and starts the variational distribution at the same place. It turns
a trained network into a Bayesian one that trains quickly and keeps its accuracy.

:class:`EmpiricalNormalPrior` is the per-weight Normal prior, :func:`moped` sets it up
for a whole model.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import Tensor, nn

from ..utils.errors import ShapeError, UnsupportedDistributionError
from ..utils.init import fixed_
from ..utils.use_norm_constants import norm_constants_enabled
from .base import _LOG_2PI, Prior, _non_negative, _positive

if TYPE_CHECKING:  # pragma: no cover
    from ..base import VIModule

__all__ = ["EmpiricalNormalPrior", "moped"]

_SCALE_PARAMETERS = ("log_std", "log_scale")


class EmpiricalNormalPrior(Prior):
    r"""Normal prior with its own mean and standard deviation for every weight.

    .. math::
        p(w_i) = \mathcal N(w_i;\ m_i, s_i^2)

    ``mean`` and ``std`` are tensors broadcastable to the weight's shape, e.g. the
    weights of a trained network and a fraction of their magnitude
    (:func:`moped`). The KL divergence with a
    :class:`~torch_blue.vi.distributions.MeanFieldNormal` or
    :class:`~torch_blue.vi.distributions.RadialNormal` variational distribution has
    a closed form. The hyperparameters are data, not a scale choice, so
    ``rescale_prior`` leaves them unchanged.

    **Devices and checkpoints.** Priors are configuration objects, not modules, so
    ``model.to(device)`` and ``state_dict()`` do not see tensors a prior keeps for
    itself. :meth:`attach` therefore stores ``mean`` and ``log_std`` as buffers of the
    layer (``_{variable}_prior_mean``, ``_{variable}_prior_log_std``) and reads them
    from there: they move with ``.to()``, are saved in and restored from the state
    dict and are copied by ``copy.deepcopy``. (To load such a checkpoint into a
    freshly built model, run :func:`moped` or :meth:`attach` on it first, so that the
    buffers exist.) An unattached prior keeps its tensors and moves them to the
    weights' device at every use.

    Parameters
    ----------
    mean : Tensor
        Prior means :math:`m`. Must be finite.
    std : Tensor
        Prior standard deviations :math:`s`, broadcastable with ``mean``. Must be
        positive and finite.
    eps : float, default: 1e-10
        Added to the variances in :meth:`log_prob` for numerical stability.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2)
    >>> prior = EmpiricalNormalPrior(torch.ones(2, 3), torch.full((2, 3), 0.1))
    >>> prior.attach(layer, "weight")
    >>> layer.prior["weight"]
    EmpiricalNormalPrior(shape=(2, 3), attached)
    >>> sorted(k for k in layer.state_dict() if "prior" in k)
    ['_weight_prior_log_std', '_weight_prior_mean']
    """

    distribution_parameters = ("mean", "log_std")

    def __init__(self, mean: Tensor, std: Tensor, eps: float = 1e-10) -> None:
        name = type(self).__name__
        mean = torch.as_tensor(mean)
        std = torch.as_tensor(std)
        dtype = torch.promote_types(mean.dtype, std.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        mean, std = mean.detach().to(dtype), std.detach().to(dtype)
        try:
            torch.broadcast_shapes(mean.shape, std.shape)
        except RuntimeError:
            raise ShapeError(
                f"{name}: mean of shape {tuple(mean.shape)} and std of shape "
                f"{tuple(std.shape)} do not broadcast"
            ) from None
        if not torch.isfinite(mean).all():
            raise ValueError(f"{name}: mean must be finite everywhere")
        if not (torch.isfinite(std).all() and (std > 0).all()):
            bad = std[~(torch.isfinite(std) & (std > 0))].flatten()[0].item()
            raise ValueError(
                f"{name}: std must be positive and finite everywhere, got {bad!r}"
            )
        self._store: dict[str, Tensor] = {"mean": mean.clone(), "log_std": std.log()}
        self._keys = ("mean", "log_std")
        self._attached = False
        self.eps = _non_negative(name, "eps", eps)

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        return ()

    @property
    def mean(self) -> Tensor:
        """The prior means."""
        return self._store[self._keys[0]]

    @property
    def log_std(self) -> Tensor:
        """The logs of the prior standard deviations."""
        return self._store[self._keys[1]]

    @property
    def std(self) -> Tensor:
        """The prior standard deviations, ``exp(log_std)``."""
        return self.log_std.exp()

    def _repr_args(self) -> str:
        shape = tuple(torch.broadcast_shapes(self.mean.shape, self.log_std.shape))
        return f"shape={shape}" + (", attached" if self._attached else "")

    def attach(self, module: "VIModule", variable: str) -> None:
        """Make this the prior of ``variable`` on ``module``, its tensors buffers there.

        Registers ``_{variable}_prior_mean`` and ``_{variable}_prior_log_std`` (on
        the device and with the dtype of the variable's parameters) and sets
        ``module.prior[variable]`` to this prior.

        Raises
        ------
        ShapeError
            When ``mean`` or ``std`` do not broadcast to the variable's shape.
        """
        from ..base import VIModule
        from ..utils.errors import NoVariablesError

        name = type(self).__name__
        if not isinstance(module, VIModule):
            raise TypeError(
                f"{name}.attach: module must be a VIModule, got {type(module).__name__}"
            )
        dist = module._distribution(variable)
        if dist is None:
            raise NoVariablesError(
                f"{name}.attach: random variable {variable!r} of "
                f"{type(module).__name__} is None"
            )
        reference = getattr(
            module, module.variational_parameter_name(variable, dist.primary_parameter)
        )
        for label, value in (("mean", self.mean), ("std", self.log_std)):
            try:
                fits = torch.broadcast_shapes(value.shape, reference.shape) == (
                    reference.shape
                )
            except RuntimeError:
                fits = False
            if not fits:
                raise ShapeError(
                    f"{name}.attach: {label} of shape {tuple(value.shape)} does not "
                    f"broadcast to the shape {tuple(reference.shape)} of variable "
                    f"{variable!r} of {type(module).__name__}"
                )
        keys = (
            module.variational_parameter_name(variable, "prior_mean"),
            module.variational_parameter_name(variable, "prior_log_std"),
        )
        for key, value in zip(keys, (self.mean, self.log_std)):
            module.register_buffer(
                key, value.to(device=reference.device, dtype=reference.dtype).clone()
            )
        # The module's buffer dict is updated in place by .to(), load_state_dict() and
        # friends, and copy.deepcopy maps it to the copy's: reading through it keeps the
        # prior in step with the module.
        self._store = module._buffers
        self._keys = keys
        self._attached = True
        module.prior[variable] = self

    def get_parameters(self) -> tuple[Tensor, Tensor]:
        """Return ``(mean, log_std)``."""
        return self.mean, self.log_std

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Normal log-density given ``(mean, log_std)``."""
        mean, log_std = (
            torch.as_tensor(p).to(device=sample.device, dtype=sample.dtype)
            for p in parameters
        )
        variance = torch.exp(2 * log_std) + self.eps
        result = -0.5 * ((sample - mean).square() / variance + torch.log(variance))
        if norm_constants_enabled():
            result = result - 0.5 * _LOG_2PI
        return result

    def reset_parameters_to_prior(self, module: "VIModule", variable: str) -> None:
        """Set the variational location and scale of ``variable`` to this prior's."""
        dist = module._distribution(variable)
        primary = getattr(
            module, module.variational_parameter_name(variable, dist.primary_parameter)
        )
        fixed_(primary, self.mean.to(primary).expand_as(primary))
        for scale_name in _SCALE_PARAMETERS:
            if scale_name in dist.distribution_parameters:
                scale = getattr(
                    module, module.variational_parameter_name(variable, scale_name)
                )
                fixed_(scale, self.log_std.to(scale).expand_as(scale))
                return
        if len(dist.distribution_parameters) > 1:
            raise UnsupportedDistributionError(
                f"{type(self).__name__}: cannot initialise the variational distribution "
                f"{type(dist).__name__} of variable {variable!r}: it has no "
                f"{' or '.join(_SCALE_PARAMETERS)} parameter"
            )


def moped(
    model: nn.Module,
    weights: Union[nn.Module, Mapping[str, Tensor], None] = None,
    delta: float = 0.1,
    *,
    min_std: float = 1e-6,
    initialize: bool = True,
) -> nn.Module:
    r"""Give every random variable of ``model`` a MOPED prior from trained weights.

    For each weight tensor :math:`\hat w` of the trained deterministic network, the
    prior becomes :class:`EmpiricalNormalPrior` with mean :math:`\hat w` and standard
    deviation :math:`\max(\delta|\hat w|, \mathrm{min\_std})` (the floor keeps weights
    that are exactly zero valid), attached as buffers of the layer. With
    ``initialize`` the variational distribution starts there too: its location is
    :math:`\hat w`, its ``log_std`` (or ``log_scale``) the log of that standard
    deviation (Krishnan, Subedar & Tickoo, 2020).

    Parameters
    ----------
    model : nn.Module
        The Bayesian model (e.g. from :func:`~torch_blue.vi.convert_to_vimodule`).
        Changed in place.
    weights : nn.Module or mapping, optional
        The trained deterministic network with the same architecture, or its state
        dict: the value of random variable ``v`` of the submodule at path ``p`` is
        entry ``"p.v"`` (the names of the ``torch.nn`` twin, e.g. ``"0.weight"``).
        Other entries (buffers such as running statistics) are ignored. ``None``
        takes the model's current point estimates, e.g. after
        ``convert_to_vimodule(trained, keep_weights=True)``.
    delta : float, default: 0.1
        Ratio :math:`\delta` of prior standard deviation to weight magnitude. Must be
        positive.
    min_std : float, default: 1e-6
        Floor of the standard deviations. Must be positive.
    initialize : bool, default: True
        Also set the variational parameters as described above.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    KeyError
        When ``weights`` lacks a random variable of ``model`` (all are named).
    ShapeError
        When a weight's shape differs from its random variable's.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.vi import convert_to_vimodule
    >>> trained = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> model = convert_to_vimodule(nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
    ...                                           nn.Linear(8, 2)))
    >>> _ = moped(model, trained, delta=0.1)
    >>> torch.equal(model[0]._weight_mean, trained[0].weight)
    True
    >>> model[2].prior["bias"]
    EmpiricalNormalPrior(shape=(2,), attached)
    """
    from ..base import named_random_variables

    delta = _positive("moped", "delta", delta)
    min_std = _positive("moped", "min_std", min_std, squared=True)
    if isinstance(weights, nn.Module):
        source: Optional[Mapping[str, Tensor]] = weights.state_dict()
    elif weights is None or isinstance(weights, Mapping):
        source = weights
    else:
        raise TypeError(
            "moped: weights must be an nn.Module, a state dict or None, got "
            f"{type(weights).__name__}"
        )
    plan = []
    missing = []
    for key, _, module, variable in named_random_variables(model):
        dist = module.variational_distribution[variable]
        parameters = tuple(module.get_variational_parameters(variable))
        if source is None:
            value = dist.point_estimate(parameters)
        elif key in source:
            value = torch.as_tensor(source[key])
        else:
            missing.append(key)
            continue
        reference = parameters[dist.distribution_parameters.index(dist.primary_parameter)]
        if value.shape != reference.shape:
            raise ShapeError(
                f"moped: weights entry {key!r} has shape {tuple(value.shape)}, but the "
                f"random variable has shape {tuple(reference.shape)}"
            )
        plan.append((module, variable, value.detach().to(reference)))
    if missing:
        raise KeyError(f"moped: weights has no entries for the random variables {missing}")
    for module, variable, value in plan:
        std = (delta * value.abs()).clamp_min(min_std)
        prior = EmpiricalNormalPrior(value, std)
        prior.attach(module, variable)
        if initialize:
            prior.reset_parameters_to_prior(module, variable)
    return model
