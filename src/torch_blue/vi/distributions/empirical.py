r"""Empirical-Bayes priors from a trained deterministic network (MOPED).

MOPED (Krishnan, Subedar & Tickoo, 2020) centres the prior of every weight on the
value a deterministic twin of the network learned, with a standard deviation
proportional to its magnitude, :math:`p(w_i) = \mathcal N(\hat w_i, (\delta
|\hat w_i|)^2)`, and starts the variational distribution at the same place. It turns
a trained network into a Bayesian one that trains quickly and keeps its accuracy.

:class:`EmpiricalNormalPrior` is the per-weight Normal prior;
:func:`torch_blue.vi.moped` sets it up for a whole model.
"""

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI
from ..utils.errors import NoVariablesError, ShapeError, UnsupportedDistributionError
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, VariationalDistribution, _non_negative

if TYPE_CHECKING:  # pragma: no cover
    from ..base import VIModule

__all__ = ["EmpiricalNormalPrior"]

_SCALE_PARAMETERS = ("log_std", "log_scale")


class EmpiricalNormalPrior(Prior):
    r"""Normal prior with its own mean and standard deviation for every weight.

    .. math::
        p(w_i) = \mathcal N(w_i;\ m_i, s_i^2)

    ``mean`` and ``std`` are tensors broadcastable to the weight's shape, e.g. the
    weights of a trained network and a fraction of their magnitude
    (:func:`~torch_blue.vi.moped`). The KL divergence with a
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
    freshly built model, run :func:`~torch_blue.vi.moped` or :meth:`attach` on it
    first, so that the buffers exist.) An unattached prior keeps its tensors and
    moves them to the weights' device at every use.

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
        name = type(self).__name__
        if not callable(getattr(module, "_distribution", None)):
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
            result = result - 0.5 * LOG_2PI
        return result

    def variational_values(
        self, variational: VariationalDistribution, parameters: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """The variational location and scale of this prior (other parameters kept)."""
        names = variational.distribution_parameters
        scale = next((n for n in _SCALE_PARAMETERS if n in names), None)
        if scale is None and len(names) > 1:
            raise UnsupportedDistributionError(
                f"{type(self).__name__}: cannot initialise the variational distribution "
                f"{type(variational).__name__}: it has no "
                f"{' or '.join(_SCALE_PARAMETERS)} parameter"
            )
        values = []
        for name, parameter in zip(names, parameters):
            if name == variational.primary_parameter:
                values.append(self.mean.to(parameter).expand_as(parameter).clone())
            elif name == scale:
                values.append(self.log_std.to(parameter).expand_as(parameter).clone())
            else:
                values.append(parameter.detach().clone())
        return tuple(values)
