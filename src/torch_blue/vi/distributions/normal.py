"""The mean-field Normal distribution: prior, variational and predictive."""

import math
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI
from ..sampling import fused_pays_off
from ..utils.checks import check_bool
from ..utils.use_norm_constants import norm_constants_enabled
from ._fused_normal import NormalDraw, normal_draw
from .base import (
    PredictiveDistribution,
    Prior,
    VariationalDistribution,
    _finite,
    _non_negative,
    _plain,
    _positive,
    is_constant_scalar,
)

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["MeanFieldNormal", "Normal"]


class _DefaultStd(float):
    """The default ``std`` (1.0), recognisable as "not given" by identity."""

    def __repr__(self) -> str:
        return "1.0"


_DEFAULT_STD = _DefaultStd(1.0)


class MeanFieldNormal(Prior, VariationalDistribution, PredictiveDistribution):
    r"""Independent Normal distribution per element, in all three roles.

    Parameters are ``("mean", "log_std")``.

    * **Prior** :math:`\mathcal N(\text{mean}, \text{std}^2)` per weight; its KL term
      acts like L2 weight decay towards ``mean``.
    * **Variational distribution**: learnable ``mean`` and ``log_std`` per weight.
      ``mean`` initialises like ``torch.nn.Linear``; ``log_std`` starts at
      ``log(std)``, scaled by :math:`1/\sqrt{\mathrm{fan}_\mathrm{in}}` when the layer uses
      Kaiming initialisation.
    * **Predictive distribution** for regression: each sampled output is the mean of a
      Normal with observation noise :math:`\sigma` (so it works with one sample).
      Given ``std``, the noise is fixed at it and the loss is a scaled squared error.
      Without ``std`` (``MeanFieldNormal()``, the swap for ``nn.MSELoss``) the noise
      is a hyperparameter fitted during training (``learn_noise``): every training
      call of the loss sets :math:`\sigma^2` to a running mean of the squared
      residuals :math:`\mathbb E_q[(y - f(x, w))^2]`, the value that maximises the
      ELBO for the current posterior (empirical Bayes, the M-step of variational
      EM), from the first batch on (which is scored with ``std``). The running
      mean covers about one epoch: each batch of :math:`B` examples gets the weight
      :math:`\min(1, \max(B/N, 0.01))`, :math:`N` the loss's ``dataset_size``.
      Calls with gradients disabled (evaluation) leave it unchanged; :attr:`std` is
      the fitted noise.

    Parameters
    ----------
    mean : float, default: 0.0
        Mean (prior and initial variational mean; unused as predictive).
    std : float, default: 1.0
        Standard deviation (prior scale, initial variational scale before Kaiming
        scaling, observation noise as predictive). Must be positive.
    eps : float, default: 1e-10
        Added to variances in :meth:`log_prob` for numerical stability.
    learn_noise : bool, optional
        As predictive distribution, fit the observation noise during training (see
        above) instead of keeping it at ``std``. Default: fit it when ``std`` is not
        given. ``MeanFieldNormal(std=1.0)`` or ``learn_noise=False`` keeps the noise
        fixed at 1 (:ref:`upstream's default <migrating-defaults>`).

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> from torch_blue.vi.distributions import MeanFieldNormal
    >>> layer = VILinear(3, 2, prior=MeanFieldNormal(std=0.5))
    >>> layer(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])

    As regression likelihood, ``MeanFieldNormal()`` fits the noise (here 0.3):

    >>> from torch_blue.vi import KullbackLeiblerLoss
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(256, 1)
    >>> y = 2 * x + 0.3 * torch.randn(256, 1)
    >>> model, likelihood = VILinear(1, 1), MeanFieldNormal()
    >>> loss_fn = KullbackLeiblerLoss(likelihood, dataset_size=256)
    >>> optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    >>> for _ in range(200):
    ...     optimizer.zero_grad()
    ...     loss_fn(model(x, samples=4), y).backward()
    ...     optimizer.step()
    >>> round(likelihood.std.item(), 1)
    0.3
    """

    _real_targets = True
    distribution_parameters = ("mean", "log_std")

    def __init__(
        self,
        mean: float = 0.0,
        std: float = _DEFAULT_STD,
        eps: float = 1e-10,
        *,
        learn_noise: Optional[bool] = None,
    ) -> None:
        name = type(self).__name__
        self.mean = torch.tensor(_finite(name, "mean", mean))
        self.log_std = torch.tensor(_positive(name, "std", std, squared=True)).log()
        self.eps = _non_negative(name, "eps", eps)
        if learn_noise is not None:
            check_bool(name, "learn_noise", learn_noise)
        self.learn_noise = std is _DEFAULT_STD if learn_noise is None else learn_noise
        self._noise_fitted = False

    def _repr_args(self) -> str:
        return f"mean={float(self.mean):g}, std={float(self.std):g}"

    @property
    def _default_variational_parameters(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.log_std

    @property
    def std(self) -> Tensor:
        """Standard deviation, ``exp(log_std)``."""
        return self.log_std.exp()

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Normal log-density of ``sample`` given ``(mean, log_std)``."""
        mean, log_std = parameters
        variance = torch.exp(2 * log_std) + self.eps
        result = -0.5 * ((sample - mean) ** 2 / variance + torch.log(variance))
        if norm_constants_enabled():
            result = result - 0.5 * LOG_2PI
        return result

    def sample(self, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Reparameterised sample ``mean + exp(log_std) * noise``."""
        mean, log_std = parameters
        return torch.addcmul(mean, torch.exp(log_std), torch.randn_like(mean))

    def sample_and_log_prob(
        self, parameters: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        r"""Sample and its total log-density, the latter from the standard-normal noise.

        :math:`(w - \mu)/\sigma` is the noise itself, so no division is needed, and
        :math:`\sum \log\sigma` does not depend on the draw: under autosampling it is
        computed once for all samples.
        """
        mean, log_std = parameters
        noise = torch.randn_like(mean)
        sample = torch.addcmul(mean, torch.exp(log_std), noise)
        log_prob = -0.5 * torch.linalg.vector_norm(noise).square() - log_std.sum()
        if norm_constants_enabled():
            log_prob = log_prob - 0.5 * LOG_2PI * mean.numel()
        return sample, log_prob

    def sample_and_log_probs(
        self,
        parameters: tuple[Tensor, Tensor],
        prior: Prior,
        hyperparameters: tuple[Tensor, ...] = tuple(),
    ) -> tuple[Tensor, Tensor]:
        r"""Sample with :math:`(\log p, \log q)`, fused when the prior is Normal too.

        With a :class:`MeanFieldNormal` prior of scalar mean and standard deviation
        (the default), the draw and both log-densities come from
        :class:`~torch_blue.vi.distributions._fused_normal.NormalDraw`, whose
        backward pass makes four passes over the draws instead of about nine, when
        the draws are large enough for that to pay off
        (:func:`~torch_blue.vi.sampling.fused_pays_off`); the values and gradients
        are those of the unfused formulas.
        """
        if not _fusable_prior(prior, hyperparameters) or not fused_pays_off(
            parameters[0].numel()
        ):
            return super().sample_and_log_probs(parameters, prior, hyperparameters)
        mean, log_std = parameters
        sample, log_p, log_q = NormalDraw.apply(
            mean, log_std, torch.randn_like(mean), False, *_draw_settings(prior)
        )
        return sample, torch.stack([log_p, log_q])

    def stacked_sample(self, parameters: tuple[Tensor, Tensor], samples: int) -> Tensor:
        """``samples`` reparameterised draws at once, ``(samples, *shape)``."""
        mean, log_std = parameters
        noise = torch.randn((samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        return torch.addcmul(mean, torch.exp(log_std), noise)

    def stacked_sample_and_log_probs(
        self,
        parameters: tuple[Tensor, Tensor],
        prior: Prior,
        hyperparameters: tuple[Tensor, ...],
        samples: int,
    ) -> tuple[Tensor, Tensor]:
        """``samples`` draws with their log-densities, batched for a Normal prior.

        Large draws go through the fused :class:`NormalDraw`, small ones through its
        formulas in plain autograd (fewer Python calls).
        """
        if not _fusable_prior(prior, hyperparameters):
            return super().stacked_sample_and_log_probs(
                parameters, prior, hyperparameters, samples
            )
        mean, log_std = parameters
        noise = torch.randn((samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        settings = _draw_settings(prior)
        if fused_pays_off(mean.numel()):
            sample, log_p, log_q = NormalDraw.apply(mean, log_std, noise, True, *settings)
        else:
            sample, log_p, log_q = normal_draw(mean, log_std, noise, True, *settings)
        return sample, torch.stack([log_p, log_q], dim=-1)

    def prior_log_prob_sum(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = tuple()
    ) -> Tensor:
        """Total prior log-density; one fused pass when mean and std are scalars."""
        if self.mean.dim() or self.log_std.dim() or hyperparameters:
            return super().prior_log_prob_sum(sample, hyperparameters)
        variance = torch.exp(2 * self.log_std.to(sample)) + self.eps
        log_norm = torch.log(variance)
        if norm_constants_enabled():
            log_norm = log_norm + LOG_2PI
        # A zero-mean prior (the usual case) saves a full pass over the S weight draws.
        # (The autosampled forward runs outside torch.compile, so float() is fine.)
        centred = sample if float(self.mean) == 0.0 else sample - self.mean.to(sample)
        squares = torch.linalg.vector_norm(centred).square()  # no S x P temporary
        return -0.5 * (squares / variance + sample.numel() * log_norm)

    def variational_values(
        self, variational: VariationalDistribution, parameters: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """A variational mean and log-std equal to this prior's."""
        if tuple(variational.distribution_parameters) != ("mean", "log_std"):
            return super().variational_values(variational, parameters)
        mean, log_std = parameters
        return (
            torch.full_like(mean, float(self.mean)),
            torch.full_like(log_std, float(self.log_std)),
        )

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        r"""Moment-matched predictive mean and standard deviation.

        The standard deviation combines the spread of the samples (epistemic) with the
        observation noise ``std`` (aleatoric): :math:`\sqrt{\mathrm{Var}_s[f_s] +
        \text{std}^2}`. It is finite for a single sample.
        """
        mean = samples.mean(dim=0)
        spread = samples.var(dim=0, unbiased=False)
        std = torch.sqrt(spread + self.std.to(samples) ** 2)
        return mean, std

    def log_prob_from_parameters(
        self, reference: Tensor, parameters: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Log-density of ``reference`` given predictive ``(mean, std)``."""
        mean, std = parameters
        return self.log_prob(reference, (mean, torch.log(std)))

    def observe(self, reference: Tensor, samples: Tensor, dataset_size: int) -> None:
        """Update the fitted noise from a training batch (when ``learn_noise``).

        Called by the losses on every call with gradients enabled; see the class
        docstring.
        """
        if not self.learn_noise:
            return
        with torch.no_grad():
            residual = _plain(samples).detach() - reference.detach().unsqueeze(0)
            variance = residual.square().mean()
            # At least float32, so that half-precision outputs do not round the noise.
            variance = variance.to(torch.promote_types(variance.dtype, torch.float32))
            previous = torch.exp(2 * self.log_std.to(variance))
            if self._noise_fitted:
                batch = reference.shape[0] if reference.dim() else 1
                weight = min(1.0, max(batch / dataset_size, 0.01))
                variance = (1 - weight) * previous + weight * variance
            # A batch of non-finite outputs (a diverged step) keeps the noise so far.
            variance = torch.where(torch.isfinite(variance), variance, previous)
            self.log_std = 0.5 * torch.log(variance.clamp_min(self.eps))
            self._noise_fitted = True

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        log_std = self.log_std.to(samples)
        return self.log_prob(reference.unsqueeze(0), (samples, log_std))


Normal = MeanFieldNormal


def _fusable_prior(prior: Prior, hyperparameters: tuple[Tensor, ...]) -> bool:
    """Whether a Normal draw can be scored under ``prior`` by :class:`NormalDraw`.

    A :class:`MeanFieldNormal` prior with constant scalar mean and standard deviation
    (read as floats), and no learned hyperparameters.
    """
    return (
        type(prior) is MeanFieldNormal
        and not hyperparameters
        and is_constant_scalar(prior.mean)
        and is_constant_scalar(prior.log_std)
    )


def _draw_settings(prior: "MeanFieldNormal") -> tuple[float, float, bool]:
    """:class:`NormalDraw`'s prior mean, prior variance (with ``eps``) and constants.

    (The autosampled forward runs outside torch.compile, so float() is fine.)
    """
    variance = math.exp(2 * float(prior.log_std)) + prior.eps
    return float(prior.mean), variance, norm_constants_enabled()
