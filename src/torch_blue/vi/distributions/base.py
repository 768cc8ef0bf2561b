"""The three roles a distribution can play: prior, variational and predictive.

A :class:`Distribution` describes its parameters by name (``distribution_parameters``)
and computes element-wise log-densities from explicit parameter tensors, so the same
object can serve many weights. The roles are mix-ins: a class may play several
(:class:`~torch_blue.vi.distributions.MeanFieldNormal` plays all three).
"""

import math
from abc import ABC, abstractmethod
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Optional
from warnings import warn

import torch
from torch import Tensor

from ..utils.errors import ShapeError, UnsupportedDistributionError
from ..utils.vi_return import VIReturn

if TYPE_CHECKING:  # pragma: no cover
    from ..base import VIModule

__all__ = ["Distribution", "Prior", "VariationalDistribution", "PredictiveDistribution"]


class Distribution(ABC):
    """Base of all torch_blue distributions.

    Subclasses set the class attribute ``distribution_parameters`` (names of the
    parameters, in the order :meth:`log_prob` expects them) and implement
    :meth:`log_prob`. A concrete distribution must also derive from at least one role:
    :class:`Prior`, :class:`VariationalDistribution` or :class:`PredictiveDistribution`.
    """

    distribution_parameters: tuple[str, ...] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "Distribution":  # noqa: D102
        if not issubclass(cls, (Prior, VariationalDistribution, PredictiveDistribution)):
            raise TypeError(
                f"{cls.__name__} must derive from at least one of Prior, "
                "VariationalDistribution or PredictiveDistribution"
            )
        return super().__new__(cls)

    @property
    def primary_parameter(self) -> str:
        """The parameter that carries the shape and location (e.g. ``"mean"``)."""
        return self.distribution_parameters[0]

    @abstractmethod
    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, ...]) -> Tensor:
        """Element-wise log-density of ``sample`` given ``parameters``."""

    def match_parameters(
        self, distribution_parameters: tuple[str, ...]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Split this distribution's parameters into shared and own ones.

        Returns two dicts mapping parameter name to its index in
        ``self.distribution_parameters``: those also named in
        ``distribution_parameters``, and the rest.

        Examples
        --------
        >>> from torch_blue.vi.distributions import MeanFieldNormal
        >>> MeanFieldNormal().match_parameters(("mean",))
        ({'mean': 0}, {'log_std': 1})
        """
        shared = {}
        own = {}
        for index, name in enumerate(self.distribution_parameters):
            (shared if name in distribution_parameters else own)[name] = index
        return shared, own

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_args()})"

    def _repr_args(self) -> str:
        return ""


#: log(2 pi) and half of it, the normalisation constants of Normal densities.

#: Distribution arguments are stored as float32 tensors: the range they must fit.
_FLOAT32 = torch.finfo(torch.float32)


def _number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"{owner}: {name} must be a number, got a tensor of shape "
                f"{tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (Integral, Real)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    return float(value)


def _finite(owner: str, name: str, value: float) -> float:
    """``value`` as a float, checked to be finite in float32."""
    value = _number(owner, name, value)
    if not math.isfinite(value) or abs(value) > _FLOAT32.max:
        raise ValueError(
            f"{owner}: {name} must be finite, got {value!r} (within float32: "
            f"|{name}| <= {_FLOAT32.max:.3g})"
        )
    return value


def _positive(owner: str, name: str, value: float, squared: bool = False) -> float:
    """``value`` as a float, checked to be positive and a normal float32.

    With ``squared`` (a standard deviation or scale) its square must be one too, so
    that variances neither overflow nor vanish.
    """
    value = _number(owner, name, value)
    low, high = _FLOAT32.tiny, _FLOAT32.max
    if squared:
        low, high = math.sqrt(low), math.sqrt(high)
    if not math.isfinite(value) or not low <= value <= high:
        what = f"{name}**2" if squared else name
        raise ValueError(
            f"{owner}: {name} must be positive and finite, got {value!r} ({what} "
            f"must be a normal float32: {low:.3g} <= {name} <= {high:.3g})"
        )
    return value


def _non_negative(owner: str, name: str, value: float) -> float:
    """``value`` as a float, checked to be zero or positive and finite in float32."""
    value = _finite(owner, name, value)
    if value < 0:
        raise ValueError(f"{owner}: {name} must be non-negative, got {value!r}")
    return value


class Prior(Distribution):
    """Role: a prior :math:`p(w)` over a weight tensor.

    A prior owns fixed hyperparameters, returned by :meth:`get_parameters` in the
    order of ``distribution_parameters``. A prior may also need variational
    parameters of the weight it scores (``_required_parameters``, e.g. the
    variational mean); they are passed as ``hyperparameters`` to
    :meth:`prior_log_prob`.
    """

    _required_parameters: tuple[str, ...] = ()
    _rescaled: bool = False

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        """Hyperparameters that :meth:`kaiming_rescale` scales."""
        return self.distribution_parameters

    def get_parameters(self) -> tuple[Tensor, ...]:
        """Return the hyperparameters in the order of ``distribution_parameters``."""
        return tuple(getattr(self, name) for name in self.distribution_parameters)

    def prior_log_prob(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = tuple()
    ) -> Tensor:
        r"""Element-wise :math:`\log p(w)` of ``sample``."""
        return self.log_prob(sample, (*self.get_parameters(), *hyperparameters))

    def prior_log_prob_sum(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = tuple()
    ) -> Tensor:
        r"""Total :math:`\log p(w)` of ``sample``, summed over all elements (0-d).

        The hot path of every weight access; subclasses override it when the sum is
        cheaper than summing :meth:`prior_log_prob`.
        """
        return self.prior_log_prob(sample, hyperparameters).sum()

    def kaiming_rescale(self, fan_in: int, eps: float = 1e-5) -> None:
        r"""Scale the prior to the spread of the Kaiming-uniform initialisation.

        Multiplies every scaling hyperparameter by :math:`1/\sqrt{3 \cdot
        \mathrm{fan}_\mathrm{in}}` (the standard deviation of
        :math:`U(-1/\sqrt{\mathrm{fan}_\mathrm{in}}, 1/\sqrt{\mathrm{fan}_\mathrm{in}})`);
        hyperparameters named ``log_*`` are shifted by the log of that factor. A prior
        is rescaled at most once: layers own their copies, so a second call is a
        mistake and only warns.
        """
        if self._rescaled:
            warn(
                f"{type(self).__name__} has been rescaled already; ignoring the second "
                "kaiming_rescale",
                stacklevel=2,
            )
            return
        if isinstance(fan_in, bool) or not isinstance(fan_in, Integral) or fan_in < 0:
            raise ValueError(
                f"{type(self).__name__}.kaiming_rescale: fan_in must be a non-negative "
                f"int, got {fan_in!r}"
            )
        self._rescaled = True
        scale = 1.0 / math.sqrt(3 * fan_in) if fan_in > 0 else 0.0
        for name in self._scaling_parameters:
            value = getattr(self, name)
            if name.startswith("log"):
                setattr(self, name, value + math.log(scale + eps))
            else:
                setattr(self, name, value * scale)

    def variational_values(
        self, variational: "VariationalDistribution", parameters: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """Values that put ``variational`` where this prior is (``prior_initialization``).

        Parameters
        ----------
        variational : VariationalDistribution
            The variational distribution of the weight.
        parameters : tuple of Tensor
            Its current parameters, in the order of its ``distribution_parameters``
            (they give the shapes, devices and dtypes).

        Returns
        -------
        tuple of Tensor
            One new value per parameter; the caller assigns them
            (:meth:`~torch_blue.vi.VIModule.reset_variational_parameters`).

        Raises
        ------
        UnsupportedDistributionError
            When this prior cannot place ``variational`` (the default).
        """
        raise UnsupportedDistributionError(
            f"{type(self).__name__} does not support prior_initialization=True"
        )

    def reset_parameters_to_prior(self, module: "VIModule", variable: str) -> None:
        """Set the variational parameters of ``variable`` on ``module`` to this prior.

        Upstream's entry point, kept for compatibility: the module assigns the
        values of :meth:`variational_values`.
        """
        module._assign_prior_values(variable, self)


class VariationalDistribution(Distribution):
    """Role: a variational distribution :math:`q(w)` with learnable parameters.

    :class:`~torch_blue.vi.VIModule` creates one ``nn.Parameter`` per name in
    ``distribution_parameters`` for every random variable.
    """

    @property
    @abstractmethod
    def _default_variational_parameters(self) -> tuple[Any, ...]:
        """Initial values of the non-location parameters, one per parameter."""

    @abstractmethod
    def sample(self, parameters: tuple[Tensor, ...]) -> Tensor:
        """Draw one reparameterised sample of the parameters' shape."""

    def point_estimate(self, parameters: tuple[Tensor, ...]) -> Tensor:
        """The weight used in mean-weight mode (:func:`~torch_blue.vi.mean_weights`).

        The location parameter (the primary parameter): the mean of a Normal or
        Student-t with more than one degree of freedom.
        """
        return parameters[self.distribution_parameters.index(self.primary_parameter)]

    def variational_log_prob(
        self, sample: Tensor, parameters: tuple[Tensor, ...]
    ) -> Tensor:
        r"""Element-wise :math:`\log q(w)` of ``sample``."""
        return self.log_prob(sample, parameters)

    def sample_and_log_prob(self, parameters: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        r"""Draw a sample and return it with its total :math:`\log q(w)` (a 0-d tensor).

        The log-density is summed over all elements. This is the hot path of every
        weight access; subclasses override it when the density is cheaper from the
        noise that made the sample.
        """
        sample = self.sample(parameters)
        return sample, self.variational_log_prob(sample, parameters).sum()

    def sample_and_log_probs(
        self,
        parameters: tuple[Tensor, ...],
        prior: "Prior",
        hyperparameters: tuple[Tensor, ...] = tuple(),
    ) -> tuple[Tensor, Tensor]:
        r"""Draw a sample and return it with :math:`(\log p(w), \log q(w))`, ``(2,)``.

        What a weight access records: the totals under ``prior`` and this
        distribution. Subclasses override it when a fused computation of the pair is
        cheaper (:class:`MeanFieldNormal` with a Normal prior).
        """
        sample, log_q = self.sample_and_log_prob(parameters)
        log_p = prior.prior_log_prob_sum(sample, hyperparameters)
        return sample, torch.stack([log_p, log_q])

    def stacked_sample(self, parameters: tuple[Tensor, ...], samples: int) -> Tensor:
        """``samples`` independent draws at once, ``(samples, *shape)``.

        What the stacked path of a sampled forward draws for one weight access (see
        :class:`~torch_blue.vi.sampling.Stacked`): the same numbers as the
        ``vmap`` lanes would draw, one :meth:`sample` per lane. Subclasses override it
        with batched formulas.
        """
        return _over_lanes(samples, parameters[0].device, lambda: self.sample(parameters))

    def stacked_sample_and_log_probs(
        self,
        parameters: tuple[Tensor, ...],
        prior: "Prior",
        hyperparameters: tuple[Tensor, ...],
        samples: int,
    ) -> tuple[Tensor, Tensor]:
        r"""``samples`` draws with :math:`(\log p, \log q)`: ``(S, *shape)``, ``(S, 2)``.

        The stacked form of :meth:`sample_and_log_probs` (see
        :meth:`stacked_sample`).
        """
        return _over_lanes(
            samples,
            parameters[0].device,
            lambda: self.sample_and_log_probs(parameters, prior, hyperparameters),
        )

    def initial_values(
        self,
        shape: tuple[int, ...],
        fan_in: int,
        kaiming_scaling: bool = True,
        *,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> tuple[Tensor, ...]:
        r"""Fresh initial values of this distribution's parameters for one weight.

        Location parameters (``mean``, ``mode``, ``loc``) are drawn like the weights
        of ``torch.nn.Linear`` (uniform with bound
        :math:`1/\sqrt{\mathrm{fan}_\mathrm{in}}`). The other parameters start at
        their default value; with ``kaiming_scaling`` scale parameters are multiplied
        by :math:`1/\sqrt{\mathrm{fan}_\mathrm{in}}` (``log_*`` ones shifted by its
        log).

        Returns
        -------
        tuple of Tensor
            One tensor of ``shape`` per name in ``distribution_parameters``; the
            caller (:class:`~torch_blue.vi.VIModule`) assigns them.

        Examples
        --------
        >>> import torch
        >>> from torch_blue.vi.distributions import MeanFieldNormal
        >>> _ = torch.manual_seed(0)
        >>> mean, log_std = MeanFieldNormal().initial_values((2, 4), fan_in=4)
        >>> bool(mean.abs().max() <= 0.5), round(float(log_std[0, 0]), 4)
        (True, -0.6931)
        """
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        values = []
        for name, default in zip(
            self.distribution_parameters, self._default_variational_parameters
        ):
            value = torch.empty(shape, device=device, dtype=dtype)
            if name in ("mean", "mode", "loc"):
                value.uniform_(-bound, bound)
            elif not kaiming_scaling:
                value.fill_(float(default))
            elif name.startswith("log"):
                value.fill_(float(default) + math.log(bound + 1e-5))
            else:
                value.fill_(float(default) * bound)
            values.append(value)
        return tuple(values)

    def reset_variational_parameters(
        self,
        module: "VIModule",
        variable: str,
        fan_in: int,
        kaiming_scaling: bool = True,
    ) -> None:
        """Initialise the variational parameters of ``variable`` on ``module``.

        Upstream's entry point, kept for compatibility: the module assigns the
        values of :meth:`initial_values`.
        """
        reference = module.get_variational_parameters(variable)[0]
        module._assign_variational_values(
            variable,
            self.initial_values(
                tuple(reference.shape),
                fan_in,
                kaiming_scaling,
                device=reference.device,
                dtype=reference.dtype,
            ),
        )


class PredictiveDistribution(Distribution):
    r"""Role: the likelihood :math:`p(y \mid f(x, w))` of targets given model outputs.

    A predictive distribution turns S sampled outputs (leading dimension S) and a
    target into log-likelihoods. Its core is :meth:`sample_log_likelihood`, the
    log-likelihood of each target under each sample (summed over every target
    dimension after the first, the batch dimension). The losses build on it.
    """

    @abstractmethod
    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor, ...]:
        """Parameters of the predictive distribution summarising ``samples``."""

    @abstractmethod
    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        """``(S, *reference.shape)`` log-likelihoods; inputs are validated."""

    #: Whether targets are real numbers (regression): integer targets then raise.
    _real_targets: bool = False

    def _check_target(self, reference: Tensor) -> None:
        """Raise a clear error when ``reference`` is not a target of this likelihood."""
        if not isinstance(reference, Tensor):
            raise TypeError(
                f"{type(self).__name__}: the target must be a Tensor, got "
                f"{type(reference).__name__}"
            )
        if self._real_targets and not reference.is_floating_point():
            raise TypeError(
                f"{type(self).__name__}: regression targets must be floating point, got "
                f"{reference.dtype}"
            )

    def _check(self, reference: Tensor, samples: Tensor) -> None:
        """Raise a clear error when ``reference`` does not fit ``samples``."""
        self._check_target(reference)
        if samples.shape[1:] != reference.shape:
            raise ShapeError(
                f"{type(self).__name__}: target shape {tuple(reference.shape)} does not "
                f"match the model output {tuple(samples.shape)} without its sample "
                f"dimension, {tuple(samples.shape[1:])}"
            )

    def observe(self, reference: Tensor, samples: Tensor, dataset_size: int) -> None:
        """Fit the distribution's own hyperparameters to a training batch.

        The losses call it with the batch's targets, the sampled outputs and the
        number of training examples on every call with gradients enabled, after
        they evaluate the likelihood (so the batch is validated first and is scored
        with the hyperparameters fitted so far). Nothing to fit by default;
        :class:`~torch_blue.vi.distributions.MeanFieldNormal` fits its noise here.
        """

    def sample_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        """Log-likelihood of ``reference`` under each sample, shape ``(S, B)``.

        Parameters
        ----------
        reference : Tensor
            The targets, batch dimension first.
        samples : Tensor
            Sampled model outputs of shape ``(S, ...)``.

        Returns
        -------
        Tensor
            ``(S, B)``: summed over every target dimension after the batch dimension
            (``(S,)`` for a 0-d target).
        """
        samples = _plain(samples)
        if samples.dim() == 0:
            raise ShapeError(
                f"{type(self).__name__}: the model output needs a leading sample "
                "dimension, got a 0-d tensor"
            )
        self._check(reference, samples)
        pointwise = self._pointwise_log_likelihood(reference, samples)
        return pointwise.flatten(start_dim=2).sum(-1) if pointwise.dim() > 2 else pointwise

    def log_prob_from_parameters(
        self, reference: Tensor, parameters: tuple[Tensor, ...]
    ) -> Tensor:
        """Element-wise log-probability of ``reference`` given predictive parameters."""
        return self.log_prob(reference, parameters)

    def log_prob_from_samples(self, reference: Tensor, samples: Tensor) -> Tensor:
        r"""Log of the sample-averaged predictive density, one value per data point.

        Computes :math:`\log \frac{1}{S} \sum_s p(y \mid f(x, w_s))` for each data
        point (batch dimension), the Monte Carlo estimate of the posterior predictive
        log-likelihood.
        """
        per_sample = self.sample_log_likelihood(reference, samples)
        return torch.logsumexp(per_sample, dim=0) - math.log(per_sample.shape[0])


def _check_probabilities(owner: str, samples: Tensor, sums: bool) -> None:
    """Raise unless ``input_type="probs"`` outputs are probabilities.

    Values must lie in [0, 1], or with ``sums`` (class probabilities, renormalised)
    be non-negative with a positive sum over the last dimension. NaN passes, as in
    torch's losses.
    """
    detached = samples.detach()
    low = bool((detached < 0).any())
    high = not sums and bool((detached > 1).any())
    if low or high:
        raise ValueError(
            f"{owner}(input_type='probs'): the model output must be probabilities "
            f"{'(non-negative)' if sums else 'in [0, 1]'}, got values from "
            f"{detached.min().item():g} to {detached.max().item():g}; for unnormalised "
            "scores use input_type='logits'"
        )
    if sums and bool((detached.sum(dim=-1) == 0).any()):
        raise ValueError(
            f"{owner}(input_type='probs'): some outputs are all zero over the "
            f"{samples.shape[-1]} classes, so they are not probabilities"
        )


def _plain(tensor: Tensor) -> Tensor:
    return tensor.as_plain() if isinstance(tensor, VIReturn) else tensor


def _over_lanes(samples: int, device: torch.device, draw: Any) -> Any:
    """``draw()`` once per lane of ``vmap(randomness="different")``, stacked."""
    lanes = torch.empty(samples, 0, device=device)
    return torch.vmap(lambda _: draw(), randomness="different")(lanes)


def is_constant_scalar(value: Any) -> bool:
    """A float or a 0-d tensor without gradient (a fixed hyperparameter shared by all).

    Such priors may be read as Python floats; a learned one must stay a tensor.

    Examples
    --------
    >>> import torch
    >>> is_constant_scalar(1.0), is_constant_scalar(torch.tensor(0.5))
    (True, True)
    >>> is_constant_scalar(torch.tensor(0.5, requires_grad=True))
    False
    """
    return not isinstance(value, Tensor) or (value.dim() == 0 and not value.requires_grad)
