"""The Bernoulli predictive distribution for binary (and multi-label) classification."""

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..utils.errors import ShapeError
from .base import PredictiveDistribution, _check_probabilities, _non_negative

__all__ = ["Bernoulli"]


class Bernoulli(PredictiveDistribution):
    r"""Bernoulli likelihood of binary targets, element-wise.

    The predictive twin of :class:`torch.nn.BCEWithLogitsLoss` (``input_type="logits"``)
    and :class:`torch.nn.BCELoss` (``input_type="probs"``): every element of the model
    output is the logit (or probability) that the matching target is 1, so it covers
    binary classification and independent multi-label targets.

    **Targets** are 0/1 labels of any real dtype: float, integer or bool. Like the
    PyTorch losses it also accepts soft labels, floats in :math:`[0, 1]` (then the
    "log-likelihood" is the negative binary cross-entropy); values outside
    :math:`[0, 1]` are an error. Their shape is the output's shape without the sample
    dimension, ``output.shape[1:]``; an output with a trailing dimension of 1 (the usual
    ``VILinear(hidden, 1)`` head) also accepts targets without it, so output
    ``(S, B, 1)`` takes targets ``(B,)`` or ``(B, 1)``.

    Parameters
    ----------
    input_type : {"logits", "probs"}, default: "logits"
        Whether the model outputs logits (any real number) or probabilities in
        :math:`[0, 1]`. Logits are numerically safer.
    eps : float, default: 1e-5
        Added to probabilities (and their complements) before taking logarithms of
        ``"probs"`` outputs and of averaged probabilities. Must be non-negative.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import KullbackLeiblerLoss, VILinear
    >>> model = VILinear(4, 1)
    >>> loss_fn = KullbackLeiblerLoss(Bernoulli(), dataset_size=100)
    >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    >>> loss = loss_fn(model(x, samples=3), y)  # output (3, 8, 1), targets (8,)
    >>> (probs,) = Bernoulli().predictive_parameters_from_samples(model(x, samples=3))
    >>> probs.shape
    torch.Size([8, 1])
    """

    distribution_parameters = ("probs",)

    def __init__(self, input_type: str = "logits", eps: float = 1e-5) -> None:
        name = type(self).__name__
        if input_type not in ("logits", "probs"):
            raise ValueError(
                f"{name}: input_type must be 'logits' or 'probs', got {input_type!r}"
            )
        eps = _non_negative(name, "eps", eps)
        self.input_type = input_type
        self.eps = eps

    def _repr_args(self) -> str:
        return f"input_type={self.input_type!r}"

    def _probs(self, samples: Tensor) -> Tensor:
        return torch.sigmoid(samples) if self.input_type == "logits" else samples

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor]:
        """Probabilities of a 1 averaged over the sample dimension, ``output.shape[1:]``."""
        return (self._probs(samples).mean(dim=0),)

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor]) -> Tensor:
        r"""Element-wise :math:`y \log(p + \epsilon) + (1 - y) \log(1 - p + \epsilon)`."""
        (probs,) = parameters
        target = sample.to(probs.dtype) if probs.is_floating_point() else sample
        return target * torch.log(probs + self.eps) + (1 - target) * torch.log1p(
            self.eps - probs
        )

    def log_prob_from_parameters(
        self, reference: Tensor, parameters: tuple[Tensor]
    ) -> Tensor:
        """Log-probability of ``reference`` under averaged probabilities.

        Probabilities of shape ``(*, 1)`` are matched to targets ``(*)`` (see the class
        docstring) rather than broadcast against them.
        """
        (probs,) = parameters
        if probs.dim() == reference.dim() + 1 and probs.shape[-1] == 1:
            probs = probs.squeeze(-1)
        return self.log_prob(reference, (probs,))

    def _check(self, reference: Tensor, samples: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(reference, Tensor):
            raise TypeError(
                f"{name}: the target must be a Tensor, got {type(reference).__name__}"
            )
        if reference.is_complex():
            raise TypeError(
                f"{name}: targets must be 0/1 labels (float, integer or bool), got "
                f"{reference.dtype}"
            )
        expected = tuple(samples.shape[1:])
        if reference.shape != samples.shape[1:] and not (
            samples.dim() >= 2
            and samples.shape[-1] == 1
            and reference.shape == samples.shape[1:-1]
        ):
            raise ShapeError(
                f"{name}: target shape {tuple(reference.shape)} does not match the "
                f"model output {tuple(samples.shape)}; expected {expected} (output "
                "without its sample dimension; a trailing 1 may be left out)"
            )
        if reference.dtype != torch.bool and bool(
            ((reference < 0) | (reference > 1)).any()
        ):
            raise ValueError(
                f"{name}: targets must be 0/1 labels or probabilities in [0, 1], got "
                f"values from {reference.min().item()} to {reference.max().item()}"
            )
        if self.input_type == "probs":
            _check_probabilities(name, samples, sums=False)

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        if samples.dim() == reference.dim() + 2:  # trailing output dim of 1 left out
            samples = samples.squeeze(-1)
        target = reference.to(samples.dtype).unsqueeze(0).expand_as(samples)
        if self.input_type == "logits":
            return -F.binary_cross_entropy_with_logits(samples, target, reduction="none")
        return self.log_prob(target, (samples,))
